// SQLite persistence of lifecycle records and receipts (own tables in the controller's state database).
#include <sqlite3.h>

#include <mutex>

#include "nodeform/controller/lifecycle/lifecycle.hpp"

namespace nodeform::controller::lifecycle {
namespace {

using json = nlohmann::json;

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
};

class SqliteLifecycleStore final : public LifecycleStore {
  public:
    explicit SqliteLifecycleStore(sqlite3* db) : db_(db) {}
    ~SqliteLifecycleStore() override { sqlite3_close(db_); }

    Status migrate() {
        if (auto st = exec("CREATE TABLE IF NOT EXISTS lifecycle_schema_migrations (version INTEGER PRIMARY KEY, "
                           "applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')))");
            !st) {
            return st;
        }
        int current = 0;
        {
            sqlite3_stmt* s = nullptr;
            if (sqlite3_prepare_v2(db_, "SELECT COALESCE(MAX(version),0) FROM lifecycle_schema_migrations", -1, &s,
                                   nullptr) != SQLITE_OK) {
                return error("reading the lifecycle schema version");
            }
            if (sqlite3_step(s) == SQLITE_ROW) current = sqlite3_column_int(s, 0);
            sqlite3_finalize(s);
        }
        const int total = static_cast<int>(sizeof(kMigrations) / sizeof(kMigrations[0]));
        if (current > total) {
            return make_error("state database has lifecycle schema version " + std::to_string(current) +
                              ", newer than this controller knows (" + std::to_string(total) +
                              "): upgrade nodeform-controller");
        }
        for (int v = current + 1; v <= total; ++v) {
            if (auto st = exec("BEGIN IMMEDIATE"); !st) return st;
            auto st = exec(kMigrations[v - 1]);
            if (st) st = exec("INSERT INTO lifecycle_schema_migrations(version) VALUES (" + std::to_string(v) + ")");
            if (!st) {
                (void)exec("ROLLBACK");
                return st;
            }
            if (auto c = exec("COMMIT"); !c) return c;
        }
        return Ok{};
    }

    Result<std::optional<NodeRecord>> get(const std::string& identity) override {
        std::lock_guard<std::mutex> lock(mutex_);
        sqlite3_stmt* s = nullptr;
        if (sqlite3_prepare_v2(db_,
                               "SELECT identity,state,step,endpoint,pve_node,vmid,pending_upid,failed_step,reason,ips,"
                               "token_expires_at,updated_at FROM lifecycle_nodes WHERE identity=?",
                               -1, &s, nullptr) != SQLITE_OK) {
            return error("reading a lifecycle record");
        }
        sqlite3_bind_text(s, 1, identity.c_str(), -1, SQLITE_TRANSIENT);
        std::optional<NodeRecord> out;
        int rc = sqlite3_step(s);
        if (rc == SQLITE_ROW) out = row(s);
        sqlite3_finalize(s);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE) return error("reading a lifecycle record");
        return out;
    }

    Result<std::vector<NodeRecord>> all() override {
        std::lock_guard<std::mutex> lock(mutex_);
        sqlite3_stmt* s = nullptr;
        if (sqlite3_prepare_v2(db_,
                               "SELECT identity,state,step,endpoint,pve_node,vmid,pending_upid,failed_step,reason,ips,"
                               "token_expires_at,updated_at FROM lifecycle_nodes ORDER BY identity",
                               -1, &s, nullptr) != SQLITE_OK) {
            return error("listing lifecycle records");
        }
        std::vector<NodeRecord> out;
        int rc;
        while ((rc = sqlite3_step(s)) == SQLITE_ROW)
            out.push_back(row(s));
        sqlite3_finalize(s);
        if (rc != SQLITE_DONE) return error("listing lifecycle records");
        return out;
    }

    Status put(const NodeRecord& r) override {
        std::lock_guard<std::mutex> lock(mutex_);
        return put_locked(r);
    }

    Status put_many(const std::vector<NodeRecord>& records) override {
        std::lock_guard<std::mutex> lock(mutex_);
        if (auto st = exec("BEGIN IMMEDIATE"); !st) return st;
        for (const auto& r : records) {
            if (auto st = put_locked(r); !st) {
                (void)exec("ROLLBACK");
                return st;
            }
        }
        if (auto st = exec("COMMIT"); !st) {
            (void)exec("ROLLBACK");
            return st;
        }
        return Ok{};
    }

    Status put_locked(const NodeRecord& r) {
        sqlite3_stmt* s = nullptr;
        if (sqlite3_prepare_v2(
                db_,
                "INSERT INTO "
                "lifecycle_nodes(identity,state,step,endpoint,pve_node,vmid,pending_upid,failed_step,reason,"
                "ips,token_expires_at,updated_at) VALUES(?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(identity) DO UPDATE SET "
                "state=excluded.state,step=excluded.step,endpoint=excluded.endpoint,pve_node=excluded.pve_node,"
                "vmid=excluded.vmid,pending_upid=excluded.pending_upid,failed_step=excluded.failed_step,"
                "reason=excluded.reason,ips=excluded.ips,token_expires_at=excluded.token_expires_at,"
                "updated_at=excluded.updated_at",
                -1, &s, nullptr) != SQLITE_OK) {
            return error("saving a lifecycle record");
        }
        json ips = r.ips;
        const std::string texts[] = {
            r.identity,     to_string(r.state), r.step,   r.endpoint, r.pve_node,         "",
            r.pending_upid, r.failed_step,      r.reason, ips.dump(), r.token_expires_at, r.updated_at};
        for (int i = 0; i < 12; ++i) {
            if (i == 5) {
                sqlite3_bind_int64(s, 6, r.vmid);
            } else {
                sqlite3_bind_text(s, i + 1, texts[i].c_str(), -1, SQLITE_TRANSIENT);
            }
        }
        int rc = sqlite3_step(s);
        sqlite3_finalize(s);
        if (rc != SQLITE_DONE) return error("saving the lifecycle record of " + r.identity);
        return Ok{};
    }

    Status add_receipt(const Receipt& r) override {
        std::lock_guard<std::mutex> lock(mutex_);
        sqlite3_stmt* s = nullptr;
        if (sqlite3_prepare_v2(db_,
                               "INSERT INTO lifecycle_receipts(identity,step,outcome,state_after,started_at,"
                               "finished_at,body) VALUES(?,?,?,?,?,?,?)",
                               -1, &s, nullptr) != SQLITE_OK) {
            return error("saving a receipt");
        }
        json body = {{"inputs", r.inputs}, {"calls", r.calls}, {"outputs", r.outputs}, {"error", r.error}};
        const std::string texts[] = {r.identity,   r.step,        r.outcome,  r.state_after,
                                     r.started_at, r.finished_at, body.dump()};
        for (int i = 0; i < 7; ++i)
            sqlite3_bind_text(s, i + 1, texts[i].c_str(), -1, SQLITE_TRANSIENT);
        int rc = sqlite3_step(s);
        sqlite3_finalize(s);
        if (rc != SQLITE_DONE) return error("saving a receipt of " + r.identity);
        return Ok{};
    }

    Result<std::vector<Receipt>> receipts(const std::string& identity) override {
        std::lock_guard<std::mutex> lock(mutex_);
        sqlite3_stmt* s = nullptr;
        if (sqlite3_prepare_v2(db_,
                               "SELECT id,identity,step,outcome,state_after,started_at,finished_at,body FROM "
                               "lifecycle_receipts WHERE identity=? ORDER BY id",
                               -1, &s, nullptr) != SQLITE_OK) {
            return error("reading receipts");
        }
        sqlite3_bind_text(s, 1, identity.c_str(), -1, SQLITE_TRANSIENT);
        std::vector<Receipt> out;
        int rc;
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
            Receipt r;
            r.id = sqlite3_column_int64(s, 0);
            r.identity = text(s, 1);
            r.step = text(s, 2);
            r.outcome = text(s, 3);
            r.state_after = text(s, 4);
            r.started_at = text(s, 5);
            r.finished_at = text(s, 6);
            json body = json::parse(text(s, 7), nullptr, false);
            if (body.is_object()) {
                r.inputs = body.value("inputs", json::object());
                r.calls = body.value("calls", json::array());
                r.outputs = body.value("outputs", json::object());
                r.error = body.value("error", "");
            }
            out.push_back(std::move(r));
        }
        sqlite3_finalize(s);
        if (rc != SQLITE_DONE) return error("reading receipts");
        return out;
    }

    Result<std::vector<StepDurations>> step_durations(const std::vector<double>& bounds) override {
        std::string sql = "SELECT step, outcome, COUNT(*), TOTAL(d)";
        for (std::size_t i = 0; i < bounds.size(); ++i)
            sql += ", TOTAL(d <= ?" + std::to_string(i + 1) + ")";
        sql +=
            " FROM (SELECT step, outcome, MAX(0.0, COALESCE((julianday(finished_at) - julianday(started_at)) * "
            "86400.0, 0.0)) AS d FROM lifecycle_receipts) GROUP BY step, outcome ORDER BY step, outcome";
        std::lock_guard<std::mutex> lock(mutex_);
        sqlite3_stmt* s = nullptr;
        if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &s, nullptr) != SQLITE_OK) return error("reading step durations");
        for (std::size_t i = 0; i < bounds.size(); ++i)
            sqlite3_bind_double(s, static_cast<int>(i + 1), bounds[i]);
        std::vector<StepDurations> out;
        int rc;
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
            StepDurations d;
            d.step = text(s, 0);
            d.outcome = text(s, 1);
            d.count = static_cast<std::uint64_t>(sqlite3_column_int64(s, 2));
            d.sum_s = sqlite3_column_double(s, 3);
            for (std::size_t i = 0; i < bounds.size(); ++i)
                d.le.push_back(static_cast<std::uint64_t>(sqlite3_column_double(s, static_cast<int>(i + 4))));
            out.push_back(std::move(d));
        }
        sqlite3_finalize(s);
        if (rc != SQLITE_DONE) return error("reading step durations");
        return out;
    }

    Status exec(const std::string& sql) {
        char* msg = nullptr;
        if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &msg) != SQLITE_OK) {
            std::string m = msg ? msg : "unknown error";
            sqlite3_free(msg);
            return make_error("state database: " + m);
        }
        return Ok{};
    }

  private:
    static std::string text(sqlite3_stmt* s, int col) {
        const unsigned char* t = sqlite3_column_text(s, col);
        return t ? reinterpret_cast<const char*>(t) : "";
    }

    static NodeRecord row(sqlite3_stmt* s) {
        NodeRecord r;
        r.identity = text(s, 0);
        r.state = parse_state(text(s, 1)).value_or(State::failed);
        r.step = text(s, 2);
        r.endpoint = text(s, 3);
        r.pve_node = text(s, 4);
        r.vmid = sqlite3_column_int64(s, 5);
        r.pending_upid = text(s, 6);
        r.failed_step = text(s, 7);
        r.reason = text(s, 8);
        json ips = json::parse(text(s, 9), nullptr, false);
        if (ips.is_array()) {
            for (const auto& ip : ips) {
                if (ip.is_string()) r.ips.push_back(ip.get<std::string>());
            }
        }
        r.token_expires_at = text(s, 10);
        r.updated_at = text(s, 11);
        return r;
    }

    Error error(const std::string& what) { return make_error("state database: " + what + ": " + sqlite3_errmsg(db_)); }

    sqlite3* db_;
    std::mutex mutex_;
};

}  // namespace

Result<std::unique_ptr<LifecycleStore>> LifecycleStore::open(const std::string& db_path) {
    sqlite3* db = nullptr;
    int rc = sqlite3_open_v2(db_path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                             nullptr);
    if (rc != SQLITE_OK) {
        std::string m = db ? sqlite3_errmsg(db) : "out of memory";
        sqlite3_close(db);
        return make_error("cannot open the state database " + db_path + ": " + m +
                          " (check that --state points to a writable directory)");
    }
    auto store = std::make_unique<SqliteLifecycleStore>(db);
    sqlite3_busy_timeout(db, 10000);
    for (const char* pragma : {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL", "PRAGMA foreign_keys=ON"}) {
        if (auto st = store->exec(pragma); !st) return st.error();
    }
    if (auto st = store->migrate(); !st) return make_error(db_path + ": " + st.message());
    return std::unique_ptr<LifecycleStore>(std::move(store));
}

}  // namespace nodeform::controller::lifecycle
