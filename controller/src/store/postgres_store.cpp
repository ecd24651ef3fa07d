// The PostgreSQL Store: several controllers share one database. One connection per Store guarded by a mutex;
// guarantees across controllers come from the database, not from this process: report ids are unique
// (INSERT … ON CONFLICT DO NOTHING), an enrollment token is consumed by one conditional UPDATE (the row lock makes
// a racing controller's UPDATE see it consumed), credentials are read on every request (no cache: a revocation is
// seen by every controller at once), and synchronous_commit=on makes a returned insert durable.
#include <algorithm>
#include <map>
#include <mutex>

#include "nodeform/controller/store/postgres.hpp"
#include "nodeform/controller/store/store.hpp"

namespace nodeform::controller {
namespace {

using pg::param;

// The same versions as the SQLite store's (sqlite_store.cpp), in PostgreSQL's dialect; reports.seq stands in for
// SQLite's rowid (the tie-break among reports received in the same millisecond).
const std::vector<std::string> kMigrations = {
    // v1
    "CREATE TABLE nodes ("
    "  identity TEXT PRIMARY KEY,"
    "  first_report_at BIGINT,"
    "  last_report_id TEXT,"
    "  last_run_report_id TEXT,"
    "  report_count BIGINT NOT NULL DEFAULT 0);"
    "CREATE TABLE credentials ("
    "  identity TEXT PRIMARY KEY,"
    "  credential_hash TEXT NOT NULL UNIQUE,"
    "  created_at BIGINT NOT NULL);"
    "CREATE TABLE enrollment_tokens ("
    "  token_hash TEXT PRIMARY KEY,"
    "  identity TEXT NOT NULL,"
    "  created_at BIGINT NOT NULL,"
    "  expires_at BIGINT NOT NULL,"
    "  consumed_at BIGINT,"
    "  revoked_at BIGINT);"
    "CREATE INDEX enrollment_tokens_identity ON enrollment_tokens (identity);"
    "CREATE TABLE reports ("
    "  seq BIGSERIAL NOT NULL,"
    "  report_id TEXT PRIMARY KEY,"
    "  identity TEXT NOT NULL,"
    "  received_at BIGINT NOT NULL,"
    "  spec_digest TEXT NOT NULL,"
    "  phase TEXT NOT NULL,"
    "  trigger TEXT NOT NULL,"
    "  mode TEXT NOT NULL,"
    "  finished_at TEXT NOT NULL,"
    "  platform_ready INTEGER NOT NULL,"
    "  changed BIGINT NOT NULL,"
    "  failed BIGINT NOT NULL,"
    "  drifted BIGINT NOT NULL,"
    "  health_failed BIGINT NOT NULL,"
    "  body TEXT NOT NULL);"
    "CREATE INDEX reports_identity_received ON reports (identity, received_at);",
    // v2: credential rotation
    "ALTER TABLE credentials ADD COLUMN rotate_requested_at BIGINT;"
    "ALTER TABLE credentials ADD COLUMN previous_hash TEXT;"
    "ALTER TABLE credentials ADD COLUMN previous_until BIGINT;"
    "CREATE INDEX credentials_previous ON credentials (previous_hash);",
    // v3: converge requests
    "CREATE TABLE apply_requests ("
    "  identity TEXT PRIMARY KEY,"
    "  request_id TEXT NOT NULL,"
    "  requested_at BIGINT NOT NULL);",
    // v4: each controller's loaded site digest and heartbeat (docs/controller.md "one site digest at a time").
    "CREATE TABLE controller_sites ("
    "  controller TEXT PRIMARY KEY,"
    "  digest TEXT NOT NULL,"
    "  heartbeat_at BIGINT NOT NULL);",
};

std::int64_t to_ms(TimePoint t) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}
TimePoint from_ms(std::int64_t ms) {
    return TimePoint(std::chrono::milliseconds(ms));
}

const char* const kReportFields[] = {
    "report_id",   "identity",       "received_at", "spec_digest", "phase",   "trigger",       "mode",
    "finished_at", "platform_ready", "changed",     "failed",      "drifted", "health_failed", "body"};

// "t.report_id, t.identity, …" (with_body false: '' in place of the body).
std::string report_columns(const std::string& table, bool with_body = true) {
    std::string out;
    for (const char* c : kReportFields) {
        if (!out.empty()) out += ", ";
        out += (!with_body && std::string(c) == "body") ? std::string("''") : table + "." + c;
    }
    return out;
}

ReportRecord read_report(const pg::Rows& s, int row, int offset = 0) {
    ReportRecord r;
    r.report_id = s.text(row, offset + 0);
    r.identity = s.text(row, offset + 1);
    r.received_at = from_ms(s.integer(row, offset + 2));
    r.spec_digest = s.text(row, offset + 3);
    r.phase = s.text(row, offset + 4);
    r.trigger = s.text(row, offset + 5);
    r.mode = s.text(row, offset + 6);
    r.finished_at = s.text(row, offset + 7);
    r.platform_ready = s.integer(row, offset + 8) != 0;
    r.changed = s.integer(row, offset + 9);
    r.failed = s.integer(row, offset + 10);
    r.drifted = s.integer(row, offset + 11);
    r.health_failed = s.integer(row, offset + 12);
    r.body = s.text(row, offset + 13);
    return r;
}

// What one batch changes in a node's bookkeeping row.
struct NodeDelta {
    std::int64_t first_received = 0;
    std::string last_id;
    std::optional<std::string> last_run_id;
    std::int64_t count = 0;
};

class PostgresStore final : public Store {
  public:
    explicit PostgresStore(pg::Connection c) : c_(std::move(c)) {}

    Status add_enrollment_token(const std::string& identity, const std::string& token_hash, TimePoint expires_at,
                                TimePoint now) override {
        std::lock_guard<std::mutex> lock(mutex_);
        return c_.exec(
            "INSERT INTO enrollment_tokens (token_hash, identity, created_at, expires_at) VALUES ($1, $2, $3, $4)",
            {token_hash, identity, param(to_ms(now)), param(to_ms(expires_at))});
    }

    Result<EnrollOutcome> enroll(const std::string& identity, const std::string& token_hash,
                                 const std::string& credential_hash, TimePoint now) override {
        std::lock_guard<std::mutex> lock(mutex_);
        EnrollOutcome outcome = EnrollOutcome::invalid_token;
        auto st = pg::in_transaction(c_, [&]() -> Status {
            outcome = EnrollOutcome::invalid_token;
            // One statement decides: a controller racing for the same token waits on the row lock and then finds
            // it consumed, so exactly one of them goes on to store a credential.
            auto consumed = c_.query(
                "UPDATE enrollment_tokens SET consumed_at = $3 WHERE token_hash = $1 AND identity = $2 AND "
                "expires_at > $3 AND consumed_at IS NULL AND revoked_at IS NULL RETURNING token_hash",
                {token_hash, identity, param(to_ms(now))});
            if (!consumed) return consumed.error();
            if (consumed->empty()) return Ok{};  // the transaction commits nothing
            if (auto s = c_.exec("INSERT INTO credentials (identity, credential_hash, created_at) VALUES ($1, $2, $3) "
                                 "ON CONFLICT (identity) DO UPDATE SET credential_hash = excluded.credential_hash, "
                                 "created_at = excluded.created_at, rotate_requested_at = NULL, previous_hash = NULL, "
                                 "previous_until = NULL",
                                 {identity, credential_hash, param(to_ms(now))});
                !s)
                return s;
            outcome = EnrollOutcome::enrolled;
            return Ok{};
        });
        if (!st) return st.error();
        return outcome;
    }

    Result<std::optional<std::string>> credential_owner(const std::string& credential_hash) override {
        std::lock_guard<std::mutex> lock(mutex_);
        auto s =
            c_.query("SELECT identity, credential_hash FROM credentials WHERE credential_hash = $1", {credential_hash});
        if (!s) return s.error();
        if (s->empty() || !constant_time_equal(s->text(0, 1), credential_hash)) return std::optional<std::string>();
        return std::optional<std::string>(s->text(0, 0));
    }

    Result<std::optional<CredentialMatch>> find_credential(const std::string& credential_hash, TimePoint now) override {
        std::lock_guard<std::mutex> lock(mutex_);
        auto s = c_.query(
            "SELECT identity, credential_hash, created_at, rotate_requested_at IS NOT NULL, previous_hash, "
            "previous_until FROM credentials WHERE credential_hash = $1 OR (previous_hash = $1 AND previous_until > "
            "$2)",
            {credential_hash, param(to_ms(now))});
        if (!s) return s.error();
        if (s->empty()) return std::optional<CredentialMatch>();
        CredentialMatch m;
        m.identity = s->text(0, 0);
        m.created_at = from_ms(s->integer(0, 2));
        m.rotate_requested = s->integer(0, 3) != 0;
        if (constant_time_equal(s->text(0, 1), credential_hash)) return std::optional<CredentialMatch>(m);
        if (!constant_time_equal(s->text(0, 4), credential_hash)) return std::optional<CredentialMatch>();
        m.previous = true;
        m.previous_until = from_ms(s->integer(0, 5));
        return std::optional<CredentialMatch>(m);
    }

    Result<bool> request_rotation(const std::string& identity, TimePoint now) override {
        std::lock_guard<std::mutex> lock(mutex_);
        auto s = c_.query(
            "UPDATE credentials SET rotate_requested_at = COALESCE(rotate_requested_at, $2) WHERE identity = $1",
            {identity, param(to_ms(now))});
        if (!s) return s.error();
        return s->affected() > 0;
    }

    Result<bool> rotate_credential(const std::string& identity, const std::string& presented_hash,
                                   const std::string& new_hash, TimePoint now, TimePoint previous_until) override {
        std::lock_guard<std::mutex> lock(mutex_);
        // One statement (atomic on the row): see the SQLite store for the retry semantics.
        auto s = c_.query(
            "UPDATE credentials SET "
            "previous_hash = CASE WHEN credential_hash = $2 THEN credential_hash ELSE previous_hash END, "
            "previous_until = CASE WHEN credential_hash = $2 THEN $5::bigint ELSE previous_until END, "
            "credential_hash = $3, created_at = $4, rotate_requested_at = NULL "
            "WHERE identity = $1 AND (credential_hash = $2 OR (previous_hash = $2 AND previous_until > $4))",
            {identity, presented_hash, new_hash, param(to_ms(now)), param(to_ms(previous_until))});
        if (!s) return s.error();
        return s->affected() > 0;
    }

    Result<bool> revoke(const std::string& identity, TimePoint now) override {
        std::lock_guard<std::mutex> lock(mutex_);
        std::int64_t changed = 0;
        auto st = pg::in_transaction(c_, [&]() -> Status {
            auto del = c_.query("DELETE FROM credentials WHERE identity = $1", {identity});
            if (!del) return del.error();
            auto tokens = c_.query(
                "UPDATE enrollment_tokens SET revoked_at = $2 WHERE identity = $1 AND consumed_at IS NULL AND "
                "revoked_at IS NULL",
                {identity, param(to_ms(now))});
            if (!tokens) return tokens.error();
            changed = del->affected() + tokens->affected();
            return Ok{};
        });
        if (!st) return st.error();
        return changed > 0;
    }

    Result<InsertOutcome> insert_report(const ReportRecord& r) override {
        auto out = insert_reports({r});
        if (!out) return out.error();
        return out->front();
    }

    Result<std::vector<InsertOutcome>> insert_reports(const std::vector<ReportRecord>& reports) override {
        std::lock_guard<std::mutex> lock(mutex_);
        std::vector<InsertOutcome> out;
        if (reports.empty()) return out;
        // Rows are locked in one order by every controller (report ids, then node identities, each sorted), so two
        // batches sharing reports or nodes wait for each other instead of deadlocking. A report id repeated within
        // the batch keeps its order (stable sort): its first occurrence is the one inserted.
        std::vector<std::size_t> order(reports.size());
        for (std::size_t i = 0; i < order.size(); ++i)
            order[i] = i;
        std::stable_sort(order.begin(), order.end(),
                         [&](std::size_t a, std::size_t b) { return reports[a].report_id < reports[b].report_id; });
        auto st = pg::in_transaction(c_, [&]() -> Status {
            out.assign(reports.size(), InsertOutcome::duplicate);
            for (auto i : order) {
                auto one = insert_one(reports[i]);
                if (!one) return one.error();  // the transaction rolls back: nothing of the batch is stored
                out[i] = *one;
            }
            std::map<std::string, NodeDelta> nodes;  // in batch order: the last report is the batch's last
            for (std::size_t i = 0; i < reports.size(); ++i) {
                const auto& r = reports[i];
                if (out[i] != InsertOutcome::inserted) continue;
                auto [it, fresh] = nodes.try_emplace(r.identity);
                auto& d = it->second;
                d.first_received = fresh ? to_ms(r.received_at) : std::min(d.first_received, to_ms(r.received_at));
                d.last_id = r.report_id;
                if (r.trigger == "run") d.last_run_id = r.report_id;
                ++d.count;
            }
            for (const auto& [identity, d] : nodes) {
                if (auto s =
                        c_.exec("INSERT INTO nodes (identity, first_report_at, last_report_id, last_run_report_id, "
                                "report_count) VALUES ($1, $2::bigint, $3, $4::text, $5::bigint) ON CONFLICT "
                                "(identity) DO UPDATE SET "
                                "last_report_id = $3, last_run_report_id = COALESCE($4, nodes.last_run_report_id), "
                                "first_report_at = COALESCE(nodes.first_report_at, $2), "
                                "report_count = nodes.report_count + $5",
                                {identity, param(d.first_received), d.last_id, d.last_run_id, param(d.count)});
                    !s)
                    return s;
            }
            return Ok{};
        });
        if (!st) return st.error();
        return out;
    }

    Result<std::optional<ReportRecord>> find_report(const std::string& report_id) override {
        std::lock_guard<std::mutex> lock(mutex_);
        if (report_id.empty()) return std::optional<ReportRecord>();
        auto s = c_.query("SELECT " + report_columns("r") + " FROM reports r WHERE r.report_id = $1", {report_id});
        if (!s) return s.error();
        if (s->empty()) return std::optional<ReportRecord>();
        return std::optional<ReportRecord>(read_report(*s, 0));
    }

    Result<std::vector<ReportRecord>> recent_reports(const std::string& identity, int limit) override {
        std::lock_guard<std::mutex> lock(mutex_);
        auto s = c_.query("SELECT " + report_columns("r") +
                              " FROM reports r WHERE r.identity = $1 ORDER BY r.received_at DESC, r.seq DESC LIMIT $2",
                          {identity, param(std::int64_t{limit})});
        if (!s) return s.error();
        std::vector<ReportRecord> out;
        for (int i = 0; i < s->size(); ++i)
            out.push_back(read_report(*s, i));
        return out;
    }

    Result<std::vector<NodeRecord>> nodes() override {
        std::lock_guard<std::mutex> lock(mutex_);
        return nodes_locked("", true);
    }

    Result<std::vector<NodeRecord>> node_summaries() override {
        std::lock_guard<std::mutex> lock(mutex_);
        return nodes_locked("", false);
    }

    Result<std::optional<NodeRecord>> node(const std::string& identity) override {
        std::lock_guard<std::mutex> lock(mutex_);
        auto all = nodes_locked(identity, true);
        if (!all) return all.error();
        if (all->empty()) return std::optional<NodeRecord>();
        return std::optional<NodeRecord>(all->front());
    }

    Result<std::int64_t> report_count() override {
        std::lock_guard<std::mutex> lock(mutex_);
        auto s = c_.query("SELECT COUNT(*) FROM reports");
        if (!s) return s.error();
        return s->integer(0, 0);
    }

    Result<std::int64_t> apply_retention(const RetentionPolicy& policy, TimePoint now) override {
        std::lock_guard<std::mutex> lock(mutex_);
        std::int64_t removed = 0;
        auto st = pg::in_transaction(c_, [&]() -> Status {
            auto del = c_.query(
                "DELETE FROM reports WHERE received_at < $1 AND report_id NOT IN ("
                "  SELECT report_id FROM (SELECT report_id, ROW_NUMBER() OVER (PARTITION BY identity "
                "  ORDER BY received_at DESC, seq DESC) AS n FROM reports) ranked WHERE n <= $2)",
                {param(to_ms(now - policy.keep_newer_than)), param(std::int64_t{std::max(policy.keep_last, 1)})});
            if (!del) return del.error();
            removed = del->affected();
            return c_.exec(
                "UPDATE nodes SET report_count = (SELECT COUNT(*) FROM reports r WHERE r.identity = nodes.identity)");
        });
        if (!st) return st.error();
        return removed;
    }

    Status request_apply(const std::string& identity, const std::string& request_id, TimePoint now) override {
        std::lock_guard<std::mutex> lock(mutex_);
        auto s = c_.query(
            "INSERT INTO apply_requests (identity, request_id, requested_at) VALUES ($1, $2, $3) "
            "ON CONFLICT (identity) DO UPDATE SET request_id = excluded.request_id, requested_at = "
            "excluded.requested_at",
            {identity, request_id, param(to_ms(now))});
        if (!s) return s.error();
        return Ok{};
    }

    Result<std::map<std::string, std::string>> pending_applies() override {
        std::lock_guard<std::mutex> lock(mutex_);
        auto s = c_.query("SELECT identity, request_id FROM apply_requests");
        if (!s) return s.error();
        std::map<std::string, std::string> out;
        for (int row = 0; row < s->size(); ++row)
            out.emplace(s->text(row, 0), s->text(row, 1));
        return out;
    }

    Result<bool> acknowledge_apply(const std::string& identity, const std::string& request_id) override {
        std::lock_guard<std::mutex> lock(mutex_);
        auto s = c_.query("DELETE FROM apply_requests WHERE identity = $1 AND request_id = $2", {identity, request_id});
        if (!s) return s.error();
        return s->affected() > 0;
    }

    Status ping() override {
        std::lock_guard<std::mutex> lock(mutex_);
        return c_.exec("SELECT 1");
    }

    Status publish_site_digest(const SiteBeat& beat) override {
        std::lock_guard<std::mutex> lock(mutex_);
        return c_.exec(
            "INSERT INTO controller_sites (controller, digest, heartbeat_at) VALUES ($1, $2, $3) "
            "ON CONFLICT (controller) DO UPDATE SET digest = EXCLUDED.digest, heartbeat_at = EXCLUDED.heartbeat_at",
            {param(beat.controller), param(beat.digest), param(to_ms(beat.heartbeat))});
    }

    Result<std::vector<SiteBeat>> site_digests() override {
        std::lock_guard<std::mutex> lock(mutex_);
        auto rows = c_.query("SELECT controller, digest, heartbeat_at FROM controller_sites ORDER BY controller");
        if (!rows) return rows.error();
        std::vector<SiteBeat> out;
        for (int i = 0; i < rows->size(); ++i)
            out.push_back({rows->text(i, 0), rows->text(i, 1), from_ms(rows->integer(i, 2))});
        return out;
    }

    Status withdraw_site_digest(const std::string& controller) override {
        std::lock_guard<std::mutex> lock(mutex_);
        return c_.exec("DELETE FROM controller_sites WHERE controller = $1", {param(controller)});
    }

  private:
    // One report inside the caller's transaction. ON CONFLICT DO NOTHING waits for a racing controller's
    // uncommitted insert of the same id and then sees it: the report is stored once.
    Result<InsertOutcome> insert_one(const ReportRecord& r) {
        std::string values;
        for (int i = 1; i <= 14; ++i)
            values += (i > 1 ? ", $" : "$") + std::to_string(i);
        std::string columns;
        for (const char* c : kReportFields)
            columns += (columns.empty() ? "" : ", ") + std::string(c);
        auto ins = c_.query("INSERT INTO reports (" + columns + ") VALUES (" + values +
                                ") ON CONFLICT (report_id) DO NOTHING RETURNING seq",
                            {r.report_id, r.identity, param(to_ms(r.received_at)), r.spec_digest, r.phase, r.trigger,
                             r.mode, r.finished_at, param(std::int64_t{r.platform_ready ? 1 : 0}), param(r.changed),
                             param(r.failed), param(r.drifted), param(r.health_failed), r.body});
        if (!ins) return ins.error();
        if (!ins->empty()) return InsertOutcome::inserted;
        auto existing = c_.query("SELECT identity, body FROM reports WHERE report_id = $1", {r.report_id});
        if (!existing) return existing.error();
        if (existing->empty())
            return make_error("report " + r.report_id + " was deleted while it was being stored; send it again");
        bool same = existing->text(0, 0) == r.identity && existing->text(0, 1) == r.body;
        return same ? InsertOutcome::duplicate : InsertOutcome::conflict;
    }

    // identity "" = every node; see the SQLite store for the shape (bytewise identity order, "C" collation).
    Result<std::vector<NodeRecord>> nodes_locked(const std::string& identity, bool bodies) {
        pg::Params params;
        std::string where;
        if (!identity.empty()) {
            where = " WHERE n.identity = $1";
            params.push_back(identity);
        }
        auto s = c_.query(
            "SELECT n.identity, n.report_count, c.identity IS NOT NULL, "
            "COALESCE(n.last_report_id = n.last_run_report_id, false), " +
                report_columns("l", bodies) + ", " + report_columns("r", bodies) +
                " FROM nodes n LEFT JOIN credentials c ON c.identity = n.identity"
                " LEFT JOIN reports l ON l.report_id = n.last_report_id"
                " LEFT JOIN reports r ON r.report_id = n.last_run_report_id AND n.last_run_report_id IS DISTINCT FROM "
                "n.last_report_id" +
                where + " ORDER BY n.identity COLLATE \"C\"",
            params);
        if (!s) return s.error();
        std::vector<NodeRecord> out;
        for (int i = 0; i < s->size(); ++i) {
            NodeRecord node;
            node.identity = s->text(i, 0);
            node.report_count = s->integer(i, 1);
            node.has_credential = s->integer(i, 2) != 0;
            if (!s->is_null(i, 4)) node.last_report = read_report(*s, i, 4);
            if (!s->is_null(i, 4 + 14)) {
                node.last_run_report = read_report(*s, i, 4 + 14);
            } else if (s->integer(i, 3) != 0) {
                node.last_run_report = node.last_report;  // the last report is the last run report
            }
            out.push_back(std::move(node));
        }
        auto c = c_.query(
            "SELECT identity FROM credentials c WHERE NOT EXISTS (SELECT 1 FROM nodes n WHERE n.identity = "
            "c.identity)" +
                std::string(identity.empty() ? "" : " AND c.identity = $1") + " ORDER BY identity COLLATE \"C\"",
            params);
        if (!c) return c.error();
        if (!c->empty()) {
            std::size_t middle = out.size();
            for (int i = 0; i < c->size(); ++i)
                out.push_back(NodeRecord{c->text(i, 0), std::nullopt, std::nullopt, 0, true});
            std::inplace_merge(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(middle), out.end(),
                               [](const NodeRecord& a, const NodeRecord& b) { return a.identity < b.identity; });
        }
        return out;
    }

    std::mutex mutex_;
    pg::Connection c_;
};

}  // namespace

Result<std::unique_ptr<Store>> open_postgres_store(const std::string& url, const std::string& password) {
    auto c = pg::connect(url, password);
    if (!c) return c.error();
    if (auto st = pg::apply_migrations(*c, "controller", kMigrations); !st) return make_error(st.message());
    return std::unique_ptr<Store>(std::make_unique<PostgresStore>(std::move(*c)));
}

}  // namespace nodeform::controller
