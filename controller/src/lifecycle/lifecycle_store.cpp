// SQLite persistence of lifecycle records and receipts (own tables in the controller's state database).
#include <iterator>
#include <mutex>

#include "lifecycle_rows.hpp"
#include "nodeform/controller/lifecycle/lifecycle.hpp"
#include "nodeform/controller/store/sqlite.hpp"

namespace nodeform::controller::lifecycle {
namespace {

using json = nlohmann::json;
using rows::kNodeColumns;
using rows::to_ms;

// Every row s yields, each read by read; a step's error as it came.
template <typename T, typename Read>
Result<std::vector<T>> read_rows(sqlite::Statement& s, Read read) {
    std::vector<T> out;
    for (;;) {
        auto row = s.step();
        if (!row) return row.error();
        if (!*row) return out;
        out.push_back(read(s));
    }
}

// Each entry is one schema version; applied in order inside a transaction, recorded in
// lifecycle_schema_migrations (the controller store keeps its own bookkeeping table).
const char* const kMigrations[] = {
    R"(CREATE TABLE lifecycle_nodes (
         identity TEXT PRIMARY KEY,
         state TEXT NOT NULL,
         step TEXT NOT NULL DEFAULT '',
         endpoint TEXT NOT NULL DEFAULT '',
         pve_node TEXT NOT NULL DEFAULT '',
         vmid INTEGER NOT NULL DEFAULT 0,
         pending_upid TEXT NOT NULL DEFAULT '',
         failed_step TEXT NOT NULL DEFAULT '',
         reason TEXT NOT NULL DEFAULT '',
         ips TEXT NOT NULL DEFAULT '[]',
         token_expires_at TEXT NOT NULL DEFAULT '',
         updated_at TEXT NOT NULL DEFAULT '');
       CREATE TABLE lifecycle_receipts (
         id INTEGER PRIMARY KEY AUTOINCREMENT,
         identity TEXT NOT NULL,
         step TEXT NOT NULL,
         outcome TEXT NOT NULL,
         state_after TEXT NOT NULL,
         started_at TEXT NOT NULL,
         finished_at TEXT NOT NULL,
         body TEXT NOT NULL);
       CREATE INDEX lifecycle_receipts_identity ON lifecycle_receipts(identity, id);)",
    // v2: leases (one controller works on a node at a time)
    R"(CREATE TABLE lifecycle_leases (
         identity TEXT PRIMARY KEY,
         holder TEXT NOT NULL,
         expires_at INTEGER NOT NULL);)",
    // v3: retry counts of failed nodes, so that another or a restarted controller continues the backoff
    R"(CREATE TABLE lifecycle_retries (
         identity TEXT PRIMARY KEY,
         failures INTEGER NOT NULL,
         next_at INTEGER NOT NULL);)",
};

class SqliteLifecycleStore final : public LifecycleStore {
  public:
    explicit SqliteLifecycleStore(sqlite::Database db) : db_(std::move(db)) {}

    // Own bookkeeping table (lifecycle_schema_migrations), kept for databases written by earlier controllers.
    Status migrate() {
        if (auto st = db_.exec("CREATE TABLE IF NOT EXISTS lifecycle_schema_migrations (version INTEGER PRIMARY KEY, "
                               "applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')))");
            !st) {
            return st;
        }
        auto version = db_.prepare("SELECT COALESCE(MAX(version),0) FROM lifecycle_schema_migrations");
        if (!version) return failed("reading the lifecycle schema version", version.error());
        if (auto row = version->step(); !row) return failed("reading the lifecycle schema version", row.error());
        const auto current = version->integer(0);
        const auto total = static_cast<std::int64_t>(std::size(kMigrations));
        if (current > total) {
            return make_error("state database has lifecycle schema version " + std::to_string(current) +
                              ", newer than this controller knows (" + std::to_string(total) +
                              "): upgrade nodeform-controller");
        }
        for (auto v = current + 1; v <= total; ++v) {
            sqlite::Transaction tx(db_);
            if (auto st = tx.begin(); !st) return st;
            if (auto st = db_.exec(kMigrations[v - 1]); !st) return st;
            if (auto st =
                    db_.exec("INSERT INTO lifecycle_schema_migrations(version) VALUES (" + std::to_string(v) + ")");
                !st) {
                return st;
            }
            if (auto st = tx.commit(); !st) return st;
        }
        return Ok{};
    }

    Result<std::optional<NodeRecord>> get(const std::string& identity) override {
        auto rows = nodes(" WHERE identity=?1", &identity);
        if (!rows) return failed("reading a lifecycle record", rows.error());
        if (rows->empty()) return std::optional<NodeRecord>{};
        return std::optional<NodeRecord>{std::move(rows->front())};
    }

    Result<std::vector<NodeRecord>> all() override {
        auto rows = nodes(" ORDER BY identity", nullptr);
        if (!rows) return failed("listing lifecycle records", rows.error());
        return rows;
    }

    Status put(const NodeRecord& r) override {
        std::lock_guard<std::mutex> lock(mutex_);
        return put_locked(r);
    }

    Status put_many(const std::vector<NodeRecord>& records) override {
        std::lock_guard<std::mutex> lock(mutex_);
        sqlite::Transaction tx(db_);
        if (auto st = tx.begin(); !st) return st;
        for (const auto& r : records) {
            if (auto st = put_locked(r); !st) return st;
        }
        return tx.commit();
    }

    Status add_receipt(const Receipt& r) override {
        std::lock_guard<std::mutex> lock(mutex_);
        auto s = db_.prepare(
            "INSERT INTO lifecycle_receipts(identity,step,outcome,state_after,started_at,finished_at,body) "
            "VALUES(?1,?2,?3,?4,?5,?6,?7)");
        if (!s) return failed("saving a receipt", s.error());
        s->bind(1, r.identity).bind(2, r.step).bind(3, r.outcome).bind(4, r.state_after);
        s->bind(5, r.started_at).bind(6, r.finished_at).bind(7, rows::receipt_body(r));
        if (auto st = s->run(); !st) return failed("saving a receipt of " + r.identity, st.error());
        return Ok{};
    }

    Result<std::vector<Receipt>> receipts(const std::string& identity) override {
        std::lock_guard<std::mutex> lock(mutex_);
        auto s = db_.prepare(std::string("SELECT ") + rows::kReceiptColumns +
                             " FROM lifecycle_receipts WHERE identity=?1 ORDER BY id");
        if (!s) return failed("reading receipts", s.error());
        s->bind(1, identity);
        auto read = read_rows<Receipt>(*s, [](sqlite::Statement& row) {
            return rows::receipt_from([&row](int i) { return row.text(i); }, [&row](int i) { return row.integer(i); });
        });
        if (!read) return failed("reading receipts", read.error());
        return read;
    }

    Result<std::vector<StepDurations>> step_durations(const std::vector<double>& bounds) override {
        std::string sql = "SELECT step, outcome, COUNT(*), TOTAL(d)";
        for (std::size_t i = 0; i < bounds.size(); ++i)
            sql += ", TOTAL(d <= ?" + std::to_string(i + 1) + ")";
        sql +=
            " FROM (SELECT step, outcome, MAX(0.0, COALESCE((julianday(finished_at) - julianday(started_at)) * "
            "86400.0, 0.0)) AS d FROM lifecycle_receipts) GROUP BY step, outcome ORDER BY step, outcome";
        std::lock_guard<std::mutex> lock(mutex_);
        auto s = db_.prepare(sql);
        if (!s) return failed("reading step durations", s.error());
        for (std::size_t i = 0; i < bounds.size(); ++i)
            s->bind(static_cast<int>(i + 1), bounds[i]);
        auto rows = read_rows<StepDurations>(*s, [&bounds](sqlite::Statement& row) {
            StepDurations d;
            d.step = row.text(0);
            d.outcome = row.text(1);
            d.count = static_cast<std::uint64_t>(row.integer(2));
            d.sum_s = row.real(3);
            for (std::size_t i = 0; i < bounds.size(); ++i)
                d.le.push_back(static_cast<std::uint64_t>(row.real(static_cast<int>(i + 4))));
            return d;
        });
        if (!rows) return failed("reading step durations", rows.error());
        return rows;
    }

    Result<bool> acquire_lease(const std::string& identity, const std::string& holder, TimePoint now,
                               std::chrono::milliseconds ttl) override {
        std::lock_guard<std::mutex> lock(mutex_);
        auto s = db_.prepare(
            "INSERT INTO lifecycle_leases(identity,holder,expires_at) VALUES(?1,?2,?3) ON CONFLICT(identity) DO "
            "UPDATE SET holder=excluded.holder,expires_at=excluded.expires_at WHERE lifecycle_leases.holder="
            "excluded.holder OR lifecycle_leases.expires_at<=?4 RETURNING holder");
        if (!s) return failed("taking a lease", s.error());
        s->bind(1, identity).bind(2, holder).bind(3, to_ms(now + ttl)).bind(4, to_ms(now));
        auto row = s->step();
        if (!row) return failed("taking the lease of " + identity, row.error());
        return *row;
    }

    Result<bool> renew_lease(const std::string& identity, const std::string& holder, TimePoint now,
                             std::chrono::milliseconds ttl) override {
        std::lock_guard<std::mutex> lock(mutex_);
        auto s = db_.prepare("UPDATE lifecycle_leases SET expires_at=?3 WHERE identity=?1 AND holder=?2");
        if (!s) return failed("renewing a lease", s.error());
        s->bind(1, identity).bind(2, holder).bind(3, to_ms(now + ttl));
        if (auto st = s->run(); !st) return failed("renewing the lease of " + identity, st.error());
        return db_.changes() > 0;
    }

    Status release_lease(const std::string& identity, const std::string& holder) override {
        std::lock_guard<std::mutex> lock(mutex_);
        auto s = db_.prepare("DELETE FROM lifecycle_leases WHERE identity=?1 AND holder=?2");
        if (!s) return failed("releasing a lease", s.error());
        s->bind(1, identity).bind(2, holder);
        if (auto st = s->run(); !st) return failed("releasing the lease of " + identity, st.error());
        return Ok{};
    }

    Result<std::optional<Lease>> lease(const std::string& identity) override {
        std::lock_guard<std::mutex> lock(mutex_);
        auto s = db_.prepare("SELECT holder,expires_at FROM lifecycle_leases WHERE identity=?1");
        if (!s) return failed("reading a lease", s.error());
        s->bind(1, identity);
        auto row = s->step();
        if (!row) return failed("reading the lease of " + identity, row.error());
        if (!*row) return std::optional<Lease>{};
        return std::optional<Lease>{Lease{s->text(0), TimePoint(std::chrono::milliseconds(s->integer(1)))}};
    }

    Result<std::optional<RetryState>> retry(const std::string& identity) override {
        std::lock_guard<std::mutex> lock(mutex_);
        auto s = db_.prepare("SELECT failures,next_at FROM lifecycle_retries WHERE identity=?1");
        if (!s) return failed("reading a retry count", s.error());
        s->bind(1, identity);
        auto row = s->step();
        if (!row) return failed("reading the retry count of " + identity, row.error());
        if (!*row) return std::optional<RetryState>{};
        return std::optional<RetryState>{rows::retry_from(s->integer(0), s->integer(1))};
    }

    Status put_retry(const std::string& identity, const RetryState& r) override {
        std::lock_guard<std::mutex> lock(mutex_);
        auto s = db_.prepare(
            "INSERT INTO lifecycle_retries(identity,failures,next_at) VALUES(?1,?2,?3) ON CONFLICT(identity) DO "
            "UPDATE SET failures=excluded.failures,next_at=excluded.next_at");
        if (!s) return failed("saving a retry count", s.error());
        s->bind(1, identity).bind(2, static_cast<std::int64_t>(r.failures)).bind(3, to_ms(r.next_at));
        if (auto st = s->run(); !st) return failed("saving the retry count of " + identity, st.error());
        return Ok{};
    }

    Status clear_retry(const std::string& identity) override {
        std::lock_guard<std::mutex> lock(mutex_);
        auto s = db_.prepare("DELETE FROM lifecycle_retries WHERE identity=?1");
        if (!s) return failed("clearing a retry count", s.error());
        s->bind(1, identity);
        if (auto st = s->run(); !st) return failed("clearing the retry count of " + identity, st.error());
        return Ok{};
    }

  private:
    static Error failed(const std::string& what, const Error& error) {
        return make_error("state database: " + what + ": " + error.message);
    }

    Status put_locked(const NodeRecord& r) {
        auto s = db_.prepare(std::string("INSERT INTO lifecycle_nodes(") + kNodeColumns +
                             ") VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12) ON CONFLICT(identity) DO UPDATE SET "
                             "state=excluded.state,step=excluded.step,endpoint=excluded.endpoint,"
                             "pve_node=excluded.pve_node,vmid=excluded.vmid,pending_upid=excluded.pending_upid,"
                             "failed_step=excluded.failed_step,reason=excluded.reason,ips=excluded.ips,"
                             "token_expires_at=excluded.token_expires_at,updated_at=excluded.updated_at");
        if (!s) return failed("saving a lifecycle record", s.error());
        s->bind(1, r.identity).bind(2, std::string(to_string(r.state))).bind(3, r.step).bind(4, r.endpoint);
        s->bind(5, r.pve_node).bind(6, r.vmid).bind(7, r.pending_upid).bind(8, r.failed_step).bind(9, r.reason);
        s->bind(10, rows::ips_text(r)).bind(11, r.token_expires_at).bind(12, r.updated_at);
        if (auto st = s->run(); !st) return failed("saving the lifecycle record of " + r.identity, st.error());
        return Ok{};
    }

    // The records matching `where` (with ?1 bound to *identity when given).
    Result<std::vector<NodeRecord>> nodes(const std::string& where, const std::string* identity) {
        std::lock_guard<std::mutex> lock(mutex_);
        auto s = db_.prepare(std::string("SELECT ") + kNodeColumns + " FROM lifecycle_nodes" + where);
        if (!s) return s.error();
        if (identity != nullptr) s->bind(1, *identity);
        return read_rows<NodeRecord>(*s, [](sqlite::Statement& row) {
            return rows::node_from([&row](int i) { return row.text(i); }, [&row](int i) { return row.integer(i); });
        });
    }

    sqlite::Database db_;
    std::mutex mutex_;
};

}  // namespace

Result<std::unique_ptr<LifecycleStore>> LifecycleStore::open(const std::string& db_path) {
    auto db = sqlite::open_database(db_path, 10000);
    if (!db) return db.error();
    auto store = std::make_unique<SqliteLifecycleStore>(std::move(*db));
    if (auto st = store->migrate(); !st) return make_error(db_path + ": " + st.message());
    return std::unique_ptr<LifecycleStore>(std::move(store));
}

}  // namespace nodeform::controller::lifecycle
