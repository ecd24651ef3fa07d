// PostgreSQL persistence of lifecycle records and receipts (the SQLite store's tables in PostgreSQL's dialect).
#include <iterator>
#include <mutex>

#include "lifecycle_rows.hpp"
#include "nodeform/controller/lifecycle/lifecycle.hpp"
#include "nodeform/controller/store/postgres.hpp"

namespace nodeform::controller::lifecycle {
namespace {

using json = nlohmann::json;
using pg::param;
using rows::kNodeColumns;
using rows::to_ms;

const std::vector<std::string> kMigrations = {
    R"(CREATE TABLE lifecycle_nodes (
         identity TEXT PRIMARY KEY,
         state TEXT NOT NULL,
         step TEXT NOT NULL DEFAULT '',
         endpoint TEXT NOT NULL DEFAULT '',
         pve_node TEXT NOT NULL DEFAULT '',
         vmid BIGINT NOT NULL DEFAULT 0,
         pending_upid TEXT NOT NULL DEFAULT '',
         failed_step TEXT NOT NULL DEFAULT '',
         reason TEXT NOT NULL DEFAULT '',
         ips TEXT NOT NULL DEFAULT '[]',
         token_expires_at TEXT NOT NULL DEFAULT '',
         updated_at TEXT NOT NULL DEFAULT '');
       CREATE TABLE lifecycle_receipts (
         id BIGSERIAL PRIMARY KEY,
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
         expires_at BIGINT NOT NULL);)",
    // v3: retry counts of failed nodes, so that another or a restarted controller continues the backoff
    R"(CREATE TABLE lifecycle_retries (
         identity TEXT PRIMARY KEY,
         failures INTEGER NOT NULL,
         next_at BIGINT NOT NULL);)",
};

// An RFC 3339 text column as a timestamp, NULL when it is not one (as SQLite's julianday gives NULL).
std::string timestamp_of(const std::string& column) {
    return "(CASE WHEN " + column +
           " ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]+)?(Z|[+-][0-9]{2}:?[0-9]{2})?$' "
           "THEN " +
           column + "::timestamptz END)";
}

class PostgresLifecycleStore final : public LifecycleStore {
  public:
    explicit PostgresLifecycleStore(pg::Connection c) : c_(std::move(c)) {}

    Result<std::optional<NodeRecord>> get(const std::string& identity) override {
        std::lock_guard<std::mutex> lock(mutex_);
        auto rows = nodes(" WHERE identity = $1", {identity});
        if (!rows) return failed("reading a lifecycle record", rows.error());
        if (rows->empty()) return std::optional<NodeRecord>{};
        return std::optional<NodeRecord>{std::move(rows->front())};
    }

    Result<std::vector<NodeRecord>> all() override {
        std::lock_guard<std::mutex> lock(mutex_);
        auto rows = nodes(" ORDER BY identity COLLATE \"C\"", {});
        if (!rows) return failed("listing lifecycle records", rows.error());
        return rows;
    }

    Status put(const NodeRecord& r) override {
        std::lock_guard<std::mutex> lock(mutex_);
        return put_locked(r);
    }

    Status put_many(const std::vector<NodeRecord>& records) override {
        std::lock_guard<std::mutex> lock(mutex_);
        return pg::in_transaction(c_, [&]() -> Status {
            for (const auto& r : records)
                if (auto st = put_locked(r); !st) return st;
            return Ok{};
        });
    }

    Status add_receipt(const Receipt& r) override {
        std::lock_guard<std::mutex> lock(mutex_);
        if (auto st = c_.exec(
                "INSERT INTO lifecycle_receipts(identity,step,outcome,state_after,started_at,finished_at,body) "
                "VALUES($1,$2,$3,$4,$5,$6,$7)",
                {r.identity, r.step, r.outcome, r.state_after, r.started_at, r.finished_at, rows::receipt_body(r)});
            !st)
            return failed("saving a receipt of " + r.identity, st.error());
        return Ok{};
    }

    Result<std::vector<Receipt>> receipts(const std::string& identity) override {
        std::lock_guard<std::mutex> lock(mutex_);
        auto s = c_.query(
            std::string("SELECT ") + rows::kReceiptColumns + " FROM lifecycle_receipts WHERE identity = $1 ORDER BY id",
            {identity});
        if (!s) return failed("reading receipts", s.error());
        std::vector<Receipt> out;
        for (int i = 0; i < s->size(); ++i)
            out.push_back(
                rows::receipt_from([&](int c) { return s->text(i, c); }, [&](int c) { return s->integer(i, c); }));
        return out;
    }

    Result<std::vector<StepDurations>> step_durations(const std::vector<double>& bounds) override {
        std::string sql = "SELECT step, outcome, COUNT(*), COALESCE(SUM(d), 0)";
        pg::Params params;
        for (std::size_t i = 0; i < bounds.size(); ++i) {
            sql += ", SUM(CASE WHEN d <= $" + std::to_string(i + 1) + "::float8 THEN 1 ELSE 0 END)";
            params.push_back(std::to_string(bounds[i]));
        }
        sql += " FROM (SELECT step, outcome, GREATEST(0.0, COALESCE(EXTRACT(EPOCH FROM (" +
               timestamp_of("finished_at") + " - " + timestamp_of("started_at") +
               "))::float8, 0.0)) AS d FROM lifecycle_receipts) x GROUP BY step, outcome "
               "ORDER BY step COLLATE \"C\", outcome COLLATE \"C\"";
        std::lock_guard<std::mutex> lock(mutex_);
        auto s = c_.query(sql, params);
        if (!s) return failed("reading step durations", s.error());
        std::vector<StepDurations> out;
        for (int i = 0; i < s->size(); ++i) {
            StepDurations d;
            d.step = s->text(i, 0);
            d.outcome = s->text(i, 1);
            d.count = static_cast<std::uint64_t>(s->integer(i, 2));
            d.sum_s = s->real(i, 3);
            for (std::size_t b = 0; b < bounds.size(); ++b)
                d.le.push_back(static_cast<std::uint64_t>(s->integer(i, static_cast<int>(b + 4))));
            out.push_back(std::move(d));
        }
        return out;
    }

    Result<bool> acquire_lease(const std::string& identity, const std::string& holder, TimePoint now,
                               std::chrono::milliseconds ttl) override {
        std::lock_guard<std::mutex> lock(mutex_);
        // A racing controller's INSERT waits on the row and then re-checks the WHERE on the winner's row.
        auto s = c_.query(
            "INSERT INTO lifecycle_leases(identity,holder,expires_at) VALUES($1,$2,$3) ON CONFLICT(identity) DO "
            "UPDATE SET holder=excluded.holder,expires_at=excluded.expires_at WHERE lifecycle_leases.holder="
            "excluded.holder OR lifecycle_leases.expires_at<=$4 RETURNING holder",
            {identity, holder, param(to_ms(now + ttl)), param(to_ms(now))});
        if (!s) return failed("taking the lease of " + identity, s.error());
        return !s->empty();
    }

    Result<bool> renew_lease(const std::string& identity, const std::string& holder, TimePoint now,
                             std::chrono::milliseconds ttl) override {
        std::lock_guard<std::mutex> lock(mutex_);
        auto s = c_.query("UPDATE lifecycle_leases SET expires_at=$3 WHERE identity=$1 AND holder=$2",
                          {identity, holder, param(to_ms(now + ttl))});
        if (!s) return failed("renewing the lease of " + identity, s.error());
        return s->affected() > 0;
    }

    Status release_lease(const std::string& identity, const std::string& holder) override {
        std::lock_guard<std::mutex> lock(mutex_);
        if (auto st = c_.exec("DELETE FROM lifecycle_leases WHERE identity=$1 AND holder=$2", {identity, holder}); !st)
            return failed("releasing the lease of " + identity, st.error());
        return Ok{};
    }

    Result<std::optional<Lease>> lease(const std::string& identity) override {
        std::lock_guard<std::mutex> lock(mutex_);
        auto s = c_.query("SELECT holder,expires_at FROM lifecycle_leases WHERE identity=$1", {identity});
        if (!s) return failed("reading the lease of " + identity, s.error());
        if (s->empty()) return std::optional<Lease>{};
        return std::optional<Lease>{Lease{s->text(0, 0), TimePoint(std::chrono::milliseconds(s->integer(0, 1)))}};
    }

    Result<std::optional<RetryState>> retry(const std::string& identity) override {
        std::lock_guard<std::mutex> lock(mutex_);
        auto s = c_.query("SELECT failures,next_at FROM lifecycle_retries WHERE identity=$1", {identity});
        if (!s) return failed("reading the retry count of " + identity, s.error());
        if (s->empty()) return std::optional<RetryState>{};
        return std::optional<RetryState>{rows::retry_from(s->integer(0, 0), s->integer(0, 1))};
    }

    Status put_retry(const std::string& identity, const RetryState& r) override {
        std::lock_guard<std::mutex> lock(mutex_);
        if (auto st = c_.exec("INSERT INTO lifecycle_retries(identity,failures,next_at) VALUES($1,$2,$3) "
                              "ON CONFLICT(identity) DO UPDATE SET failures=excluded.failures,next_at=excluded.next_at",
                              {identity, param(static_cast<std::int64_t>(r.failures)), param(to_ms(r.next_at))});
            !st)
            return failed("saving the retry count of " + identity, st.error());
        return Ok{};
    }

    Status clear_retry(const std::string& identity) override {
        std::lock_guard<std::mutex> lock(mutex_);
        if (auto st = c_.exec("DELETE FROM lifecycle_retries WHERE identity=$1", {identity}); !st)
            return failed("clearing the retry count of " + identity, st.error());
        return Ok{};
    }

  private:
    static Error failed(const std::string& what, const Error& error) {
        return make_error("state database: " + what + ": " + error.message);
    }

    Status put_locked(const NodeRecord& r) {
        if (auto st =
                c_.exec(std::string("INSERT INTO lifecycle_nodes(") + kNodeColumns +
                            ") VALUES($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12) ON CONFLICT(identity) DO UPDATE "
                            "SET state=excluded.state,step=excluded.step,endpoint=excluded.endpoint,"
                            "pve_node=excluded.pve_node,vmid=excluded.vmid,pending_upid=excluded.pending_upid,"
                            "failed_step=excluded.failed_step,reason=excluded.reason,ips=excluded.ips,"
                            "token_expires_at=excluded.token_expires_at,updated_at=excluded.updated_at",
                        {r.identity, std::string(to_string(r.state)), r.step, r.endpoint, r.pve_node, param(r.vmid),
                         r.pending_upid, r.failed_step, r.reason, rows::ips_text(r), r.token_expires_at, r.updated_at});
            !st)
            return failed("saving the lifecycle record of " + r.identity, st.error());
        return Ok{};
    }

    Result<std::vector<NodeRecord>> nodes(const std::string& where, const pg::Params& params) {
        auto s = c_.query(std::string("SELECT ") + kNodeColumns + " FROM lifecycle_nodes" + where, params);
        if (!s) return s.error();
        std::vector<NodeRecord> out;
        for (int i = 0; i < s->size(); ++i)
            out.push_back(
                rows::node_from([&](int c) { return s->text(i, c); }, [&](int c) { return s->integer(i, c); }));
        return out;
    }

    pg::Connection c_;
    std::mutex mutex_;
};

}  // namespace

Result<std::unique_ptr<LifecycleStore>> open_postgres_lifecycle_store(const std::string& url,
                                                                      const std::string& password) {
    auto c = pg::connect(url, password);
    if (!c) return c.error();
    if (auto st = pg::apply_migrations(*c, "lifecycle", kMigrations); !st) return make_error(st.message());
    return std::unique_ptr<LifecycleStore>(std::make_unique<PostgresLifecycleStore>(std::move(*c)));
}

}  // namespace nodeform::controller::lifecycle
