// The SQLite Store: one connection guarded by a mutex (writes are serialized by SQLite anyway), WAL,
// synchronous=FULL so that a returned insert is on disk.
#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <algorithm>
#include <mutex>

#include "nodeform/canonical_json.hpp"
#include "nodeform/controller/store/sqlite.hpp"
#include "nodeform/controller/store/store.hpp"

namespace nodeform::controller {
namespace {

const std::vector<std::string> kMigrations = {
    // v1
    "CREATE TABLE nodes ("
    "  identity TEXT PRIMARY KEY,"
    "  first_report_at INTEGER,"
    "  last_report_id TEXT,"
    "  last_run_report_id TEXT,"
    "  report_count INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE credentials ("
    "  identity TEXT PRIMARY KEY,"
    "  credential_hash TEXT NOT NULL UNIQUE,"
    "  created_at INTEGER NOT NULL);"
    "CREATE TABLE enrollment_tokens ("
    "  token_hash TEXT PRIMARY KEY,"
    "  identity TEXT NOT NULL,"
    "  created_at INTEGER NOT NULL,"
    "  expires_at INTEGER NOT NULL,"
    "  consumed_at INTEGER,"
    "  revoked_at INTEGER);"
    "CREATE INDEX enrollment_tokens_identity ON enrollment_tokens (identity);"
    "CREATE TABLE reports ("
    "  report_id TEXT PRIMARY KEY,"
    "  identity TEXT NOT NULL,"
    "  received_at INTEGER NOT NULL,"
    "  spec_digest TEXT NOT NULL,"
    "  phase TEXT NOT NULL,"
    "  trigger TEXT NOT NULL,"
    "  mode TEXT NOT NULL,"
    "  finished_at TEXT NOT NULL,"
    "  platform_ready INTEGER NOT NULL,"
    "  changed INTEGER NOT NULL,"
    "  failed INTEGER NOT NULL,"
    "  drifted INTEGER NOT NULL,"
    "  health_failed INTEGER NOT NULL,"
    "  body TEXT NOT NULL);"
    "CREATE INDEX reports_identity_received ON reports (identity, received_at);",
    // v2: credential rotation (docs/protocol.md "Credential rotation"): a pending request and the previous
    // credential, still accepted until previous_until.
    "ALTER TABLE credentials ADD COLUMN rotate_requested_at INTEGER;"
    "ALTER TABLE credentials ADD COLUMN previous_hash TEXT;"
    "ALTER TABLE credentials ADD COLUMN previous_until INTEGER;"
    "CREATE INDEX credentials_previous ON credentials (previous_hash);",
    // v3: converge requests (`node apply`, docs/protocol.md "Nodeform-Apply-Request"): one pending per node.
    "CREATE TABLE apply_requests ("
    "  identity TEXT PRIMARY KEY,"
    "  request_id TEXT NOT NULL,"
    "  requested_at INTEGER NOT NULL);",
    // v4: each controller's loaded site digest and heartbeat (docs/controller.md "one site digest at a time").
    "CREATE TABLE controller_sites ("
    "  controller TEXT PRIMARY KEY,"
    "  digest TEXT NOT NULL,"
    "  heartbeat_at INTEGER NOT NULL);",
};

std::int64_t to_ms(TimePoint t) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}
TimePoint from_ms(std::int64_t ms) {
    return TimePoint(std::chrono::milliseconds(ms));
}

constexpr const char* kReportColumns =
    "report_id, identity, received_at, spec_digest, phase, trigger, mode, finished_at, platform_ready, changed, "
    "failed, drifted, health_failed, body";

ReportRecord read_report(const sqlite::Statement& s, int offset = 0) {
    ReportRecord r;
    r.report_id = s.text(offset + 0);
    r.identity = s.text(offset + 1);
    r.received_at = from_ms(s.integer(offset + 2));
    r.spec_digest = s.text(offset + 3);
    r.phase = s.text(offset + 4);
    r.trigger = s.text(offset + 5);
    r.mode = s.text(offset + 6);
    r.finished_at = s.text(offset + 7);
    r.platform_ready = s.integer(offset + 8) != 0;
    r.changed = s.integer(offset + 9);
    r.failed = s.integer(offset + 10);
    r.drifted = s.integer(offset + 11);
    r.health_failed = s.integer(offset + 12);
    r.body = s.text(offset + 13);
    return r;
}

class SqliteStore final : public Store {
  public:
    explicit SqliteStore(sqlite::Database db) : db_(std::move(db)) {}

    Status add_enrollment_token(const std::string& identity, const std::string& token_hash, TimePoint expires_at,
                                TimePoint now) override {
        std::lock_guard<std::mutex> lock(mutex_);
        auto s = db_.prepare(
            "INSERT INTO enrollment_tokens (token_hash, identity, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)");
        if (!s) return s.error();
        s->bind(1, token_hash).bind(2, identity).bind(3, to_ms(now)).bind(4, to_ms(expires_at));
        return s->run();
    }

    Result<EnrollOutcome> enroll(const std::string& identity, const std::string& token_hash,
                                 const std::string& credential_hash, TimePoint now) override {
        std::lock_guard<std::mutex> lock(mutex_);
        sqlite::Transaction tx(db_);
        if (auto st = tx.begin(); !st) return st.error();
        auto find = db_.prepare(
            "SELECT identity, expires_at, consumed_at IS NOT NULL OR revoked_at IS NOT NULL FROM enrollment_tokens "
            "WHERE token_hash = ?1");
        if (!find) return find.error();
        find->bind(1, token_hash);
        auto row = find->step();
        if (!row) return row.error();
        if (!*row) return EnrollOutcome::invalid_token;
        bool same_identity = constant_time_equal(find->text(0), identity);
        bool expired = find->integer(1) <= to_ms(now);
        bool used = find->integer(2) != 0;
        if (!same_identity || expired || used) return EnrollOutcome::invalid_token;
        auto consume = db_.prepare("UPDATE enrollment_tokens SET consumed_at = ?2 WHERE token_hash = ?1");
        if (!consume) return consume.error();
        consume->bind(1, token_hash).bind(2, to_ms(now));
        if (auto st = consume->run(); !st) return st.error();
        auto cred = db_.prepare(
            "INSERT INTO credentials (identity, credential_hash, created_at) VALUES (?1, ?2, ?3) "
            "ON CONFLICT(identity) DO UPDATE SET credential_hash = excluded.credential_hash, "
            "created_at = excluded.created_at, rotate_requested_at = NULL, previous_hash = NULL, "
            "previous_until = NULL");
        if (!cred) return cred.error();
        cred->bind(1, identity).bind(2, credential_hash).bind(3, to_ms(now));
        if (auto st = cred->run(); !st) return st.error();
        if (auto st = tx.commit(); !st) return st.error();
        return EnrollOutcome::enrolled;
    }

    Result<std::optional<std::string>> credential_owner(const std::string& credential_hash) override {
        std::lock_guard<std::mutex> lock(mutex_);
        auto s = db_.prepare("SELECT identity, credential_hash FROM credentials WHERE credential_hash = ?1");
        if (!s) return s.error();
        s->bind(1, credential_hash);
        auto row = s->step();
        if (!row) return row.error();
        if (!*row || !constant_time_equal(s->text(1), credential_hash)) return std::optional<std::string>();
        return std::optional<std::string>(s->text(0));
    }

    Result<std::optional<CredentialMatch>> find_credential(const std::string& credential_hash, TimePoint now) override {
        std::lock_guard<std::mutex> lock(mutex_);
        auto s = db_.prepare(
            "SELECT identity, credential_hash, created_at, rotate_requested_at IS NOT NULL, previous_hash, "
            "previous_until FROM credentials WHERE credential_hash = ?1 OR (previous_hash = ?1 AND previous_until > "
            "?2)");
        if (!s) return s.error();
        s->bind(1, credential_hash).bind(2, to_ms(now));
        auto row = s->step();
        if (!row) return row.error();
        if (!*row) return std::optional<CredentialMatch>();
        CredentialMatch m;
        m.identity = s->text(0);
        m.created_at = from_ms(s->integer(2));
        m.rotate_requested = s->integer(3) != 0;
        if (constant_time_equal(s->text(1), credential_hash)) return std::optional<CredentialMatch>(m);
        if (!constant_time_equal(s->text(4), credential_hash)) return std::optional<CredentialMatch>();
        m.previous = true;
        m.previous_until = from_ms(s->integer(5));
        return std::optional<CredentialMatch>(m);
    }

    Result<bool> request_rotation(const std::string& identity, TimePoint now) override {
        std::lock_guard<std::mutex> lock(mutex_);
        auto s = db_.prepare(
            "UPDATE credentials SET rotate_requested_at = COALESCE(rotate_requested_at, ?2) WHERE identity = ?1");
        if (!s) return s.error();
        s->bind(1, identity).bind(2, to_ms(now));
        if (auto st = s->run(); !st) return st.error();
        return db_.changes() > 0;
    }

    Result<bool> rotate_credential(const std::string& identity, const std::string& presented_hash,
                                   const std::string& new_hash, TimePoint now, TimePoint previous_until) override {
        std::lock_guard<std::mutex> lock(mutex_);
        sqlite::Transaction tx(db_);
        if (auto st = tx.begin(); !st) return st.error();
        // The current credential becomes the previous one; a retry with the previous one (the answer to the
        // first rotation was lost) only replaces the current one, keeping the previous one's grace.
        auto s = db_.prepare(
            "UPDATE credentials SET "
            "previous_hash = CASE WHEN credential_hash = ?2 THEN credential_hash ELSE previous_hash END, "
            "previous_until = CASE WHEN credential_hash = ?2 THEN ?5 ELSE previous_until END, "
            "credential_hash = ?3, created_at = ?4, rotate_requested_at = NULL "
            "WHERE identity = ?1 AND (credential_hash = ?2 OR (previous_hash = ?2 AND previous_until > ?4))");
        if (!s) return s.error();
        s->bind(1, identity)
            .bind(2, presented_hash)
            .bind(3, new_hash)
            .bind(4, to_ms(now))
            .bind(5, to_ms(previous_until));
        if (auto st = s->run(); !st) return st.error();
        bool changed = db_.changes() > 0;
        if (auto st = tx.commit(); !st) return st.error();
        return changed;
    }

    Result<bool> revoke(const std::string& identity, TimePoint now) override {
        std::lock_guard<std::mutex> lock(mutex_);
        sqlite::Transaction tx(db_);
        if (auto st = tx.begin(); !st) return st.error();
        auto del = db_.prepare("DELETE FROM credentials WHERE identity = ?1");
        if (!del) return del.error();
        del->bind(1, identity);
        if (auto st = del->run(); !st) return st.error();
        std::int64_t changed = db_.changes();
        auto tokens = db_.prepare(
            "UPDATE enrollment_tokens SET revoked_at = ?2 WHERE identity = ?1 AND consumed_at IS NULL AND "
            "revoked_at IS NULL");
        if (!tokens) return tokens.error();
        tokens->bind(1, identity).bind(2, to_ms(now));
        if (auto st = tokens->run(); !st) return st.error();
        changed += db_.changes();
        if (auto st = tx.commit(); !st) return st.error();
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
        sqlite::Transaction tx(db_);
        if (auto st = tx.begin(); !st) return st.error();
        for (const auto& r : reports) {
            auto one = insert_report_locked(r);
            if (!one) return one.error();  // tx rolls back: nothing of the batch is stored
            out.push_back(*one);
        }
        if (auto st = tx.commit(); !st) return st.error();
        return out;
    }

    Result<std::optional<ReportRecord>> find_report(const std::string& report_id) override {
        std::lock_guard<std::mutex> lock(mutex_);
        return find_report_locked(report_id);
    }

    Result<std::vector<ReportRecord>> recent_reports(const std::string& identity, int limit) override {
        std::lock_guard<std::mutex> lock(mutex_);
        auto s = db_.prepare(std::string("SELECT ") + kReportColumns +
                             " FROM reports WHERE identity = ?1 ORDER BY received_at DESC, rowid DESC LIMIT ?2");
        if (!s) return s.error();
        s->bind(1, identity).bind(2, std::int64_t{limit});
        std::vector<ReportRecord> out;
        while (true) {
            auto row = s->step();
            if (!row) return row.error();
            if (!*row) break;
            out.push_back(read_report(*s));
        }
        return out;
    }

    Result<std::vector<NodeRecord>> nodes() override {
        std::lock_guard<std::mutex> lock(mutex_);
        return nodes_locked("");
    }

    Result<std::vector<NodeRecord>> node_summaries() override {
        std::lock_guard<std::mutex> lock(mutex_);
        return nodes_locked("", false);
    }

    Result<std::optional<NodeRecord>> node(const std::string& identity) override {
        std::lock_guard<std::mutex> lock(mutex_);
        auto all = nodes_locked(identity);
        if (!all) return all.error();
        if (all->empty()) return std::optional<NodeRecord>();
        return std::optional<NodeRecord>(all->front());
    }

    Result<std::int64_t> report_count() override {
        std::lock_guard<std::mutex> lock(mutex_);
        auto s = db_.prepare("SELECT COUNT(*) FROM reports");
        if (!s) return s.error();
        auto row = s->step();
        if (!row) return row.error();
        return s->integer(0);
    }

    Result<std::int64_t> apply_retention(const RetentionPolicy& policy, TimePoint now) override {
        std::lock_guard<std::mutex> lock(mutex_);
        sqlite::Transaction tx(db_);
        if (auto st = tx.begin(); !st) return st.error();
        auto s = db_.prepare(
            "DELETE FROM reports WHERE received_at < ?1 AND report_id NOT IN ("
            "  SELECT report_id FROM (SELECT report_id, ROW_NUMBER() OVER (PARTITION BY identity "
            "  ORDER BY received_at DESC, rowid DESC) AS n FROM reports) WHERE n <= ?2)");
        if (!s) return s.error();
        s->bind(1, to_ms(now - policy.keep_newer_than)).bind(2, std::int64_t{std::max(policy.keep_last, 1)});
        if (auto st = s->run(); !st) return st.error();
        std::int64_t removed = db_.changes();
        auto fix = db_.prepare(
            "UPDATE nodes SET report_count = (SELECT COUNT(*) FROM reports r WHERE r.identity = nodes.identity)");
        if (!fix) return fix.error();
        if (auto st = fix->run(); !st) return st.error();
        if (auto st = tx.commit(); !st) return st.error();
        return removed;
    }

    Status request_apply(const std::string& identity, const std::string& request_id, TimePoint now) override {
        std::lock_guard<std::mutex> lock(mutex_);
        auto s = db_.prepare(
            "INSERT INTO apply_requests (identity, request_id, requested_at) VALUES (?1, ?2, ?3) "
            "ON CONFLICT (identity) DO UPDATE SET request_id = excluded.request_id, requested_at = "
            "excluded.requested_at");
        if (!s) return s.error();
        s->bind(1, identity).bind(2, request_id).bind(3, to_ms(now));
        return s->run();
    }

    Result<std::map<std::string, std::string>> pending_applies() override {
        std::lock_guard<std::mutex> lock(mutex_);
        auto s = db_.prepare("SELECT identity, request_id FROM apply_requests");
        if (!s) return s.error();
        std::map<std::string, std::string> out;
        while (true) {
            auto row = s->step();
            if (!row) return row.error();
            if (!*row) return out;
            out.emplace(s->text(0), s->text(1));
        }
    }

    Result<bool> acknowledge_apply(const std::string& identity, const std::string& request_id) override {
        std::lock_guard<std::mutex> lock(mutex_);
        auto s = db_.prepare("DELETE FROM apply_requests WHERE identity = ?1 AND request_id = ?2");
        if (!s) return s.error();
        s->bind(1, identity).bind(2, request_id);
        if (auto st = s->run(); !st) return st.error();
        return db_.changes() > 0;
    }

    Status ping() override {
        std::lock_guard<std::mutex> lock(mutex_);
        auto s = db_.prepare("SELECT 1");
        if (!s) return s.error();
        auto row = s->step();
        if (!row) return row.error();
        return Ok{};
    }

    Status publish_site_digest(const SiteBeat& beat) override {
        std::lock_guard<std::mutex> lock(mutex_);
        auto s = db_.prepare(
            "INSERT INTO controller_sites (controller, digest, heartbeat_at) VALUES (?1, ?2, ?3) "
            "ON CONFLICT (controller) DO UPDATE SET digest = excluded.digest, heartbeat_at = excluded.heartbeat_at");
        if (!s) return s.error();
        s->bind(1, beat.controller).bind(2, beat.digest).bind(3, to_ms(beat.heartbeat));
        return s->run();
    }

    Result<std::vector<SiteBeat>> site_digests() override {
        std::lock_guard<std::mutex> lock(mutex_);
        auto s = db_.prepare("SELECT controller, digest, heartbeat_at FROM controller_sites ORDER BY controller");
        if (!s) return s.error();
        std::vector<SiteBeat> out;
        for (;;) {
            auto row = s->step();
            if (!row) return row.error();
            if (!*row) break;
            out.push_back({s->text(0), s->text(1), from_ms(s->integer(2))});
        }
        return out;
    }

    Status withdraw_site_digest(const std::string& controller) override {
        std::lock_guard<std::mutex> lock(mutex_);
        auto s = db_.prepare("DELETE FROM controller_sites WHERE controller = ?1");
        if (!s) return s.error();
        s->bind(1, controller);
        return s->run();
    }

  private:
    // One report inside the caller's transaction.
    Result<InsertOutcome> insert_report_locked(const ReportRecord& r) {
        auto existing = db_.prepare("SELECT identity, body FROM reports WHERE report_id = ?1");
        if (!existing) return existing.error();
        existing->bind(1, r.report_id);
        auto row = existing->step();
        if (!row) return row.error();
        if (*row) {
            bool same = existing->text(0) == r.identity && existing->text(1) == r.body;
            return same ? InsertOutcome::duplicate : InsertOutcome::conflict;
        }
        auto ins = db_.prepare(std::string("INSERT INTO reports (") + kReportColumns +
                               ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)");
        if (!ins) return ins.error();
        ins->bind(1, r.report_id)
            .bind(2, r.identity)
            .bind(3, to_ms(r.received_at))
            .bind(4, r.spec_digest)
            .bind(5, r.phase)
            .bind(6, r.trigger)
            .bind(7, r.mode)
            .bind(8, r.finished_at)
            .bind(9, std::int64_t{r.platform_ready ? 1 : 0})
            .bind(10, r.changed)
            .bind(11, r.failed)
            .bind(12, r.drifted)
            .bind(13, r.health_failed)
            .bind(14, r.body);
        if (auto st = ins->run(); !st) return st.error();
        auto node = db_.prepare(
            "INSERT INTO nodes (identity, first_report_at, last_report_id, last_run_report_id, report_count) "
            "VALUES (?1, ?2, ?3, CASE WHEN ?4 = 'run' THEN ?3 END, 1) "
            "ON CONFLICT(identity) DO UPDATE SET last_report_id = ?3, "
            "last_run_report_id = CASE WHEN ?4 = 'run' THEN ?3 ELSE last_run_report_id END, "
            "first_report_at = COALESCE(first_report_at, ?2), report_count = report_count + 1");
        if (!node) return node.error();
        node->bind(1, r.identity).bind(2, to_ms(r.received_at)).bind(3, r.report_id).bind(4, r.trigger);
        if (auto st = node->run(); !st) return st.error();
        return InsertOutcome::inserted;
    }

    Result<std::optional<ReportRecord>> find_report_locked(const std::string& report_id) {
        if (report_id.empty()) return std::optional<ReportRecord>();
        auto s = db_.prepare(std::string("SELECT ") + kReportColumns + " FROM reports WHERE report_id = ?1");
        if (!s) return s.error();
        s->bind(1, report_id);
        auto row = s->step();
        if (!row) return row.error();
        if (!*row) return std::optional<ReportRecord>();
        return std::optional<ReportRecord>(read_report(*s));
    }

    // identity "" = every node.
    // One query: each node's bookkeeping joined with its last and last-run reports (bodies left empty unless asked).
    Result<std::vector<NodeRecord>> nodes_locked(const std::string& identity, bool bodies = true) {
        auto columns = [&](const char* t) {
            std::string out;
            for (const char* c : {"report_id", "identity", "received_at", "spec_digest", "phase", "trigger", "mode",
                                  "finished_at", "platform_ready", "changed", "failed", "drifted", "health_failed"})
                out += std::string(", ") + t + "." + c;
            return out + (bodies ? std::string(", ") + t + ".body" : std::string(", ''"));
        };
        // Nodes that reported (in the nodes table's identity order, joined with their credential), then merged in:
        // the nodes that hold a credential and never reported.
        std::string where = identity.empty() ? "" : " WHERE n.identity = ?1";
        auto s = db_.prepare(
            "SELECT n.identity, n.report_count, c.identity IS NOT NULL, n.last_report_id = n.last_run_report_id" +
            columns("l") + columns("r") +
            " FROM nodes n LEFT JOIN credentials c ON c.identity = n.identity"
            " LEFT JOIN reports l ON l.report_id = n.last_report_id"
            " LEFT JOIN reports r ON r.report_id = n.last_run_report_id AND n.last_run_report_id IS NOT "
            "n.last_report_id" +
            where + " ORDER BY n.identity");
        if (!s) return s.error();
        if (!identity.empty()) s->bind(1, identity);
        std::vector<NodeRecord> out;
        while (true) {
            auto row = s->step();
            if (!row) return row.error();
            if (!*row) break;
            NodeRecord node;
            node.identity = s->text(0);
            node.report_count = s->integer(1);
            node.has_credential = s->integer(2) != 0;
            if (!s->is_null(4)) node.last_report = read_report(*s, 4);
            if (!s->is_null(4 + 14)) {
                node.last_run_report = read_report(*s, 4 + 14);
            } else if (!s->is_null(3) && s->integer(3) != 0) {
                node.last_run_report = node.last_report;  // the last report is the last run report
            }
            out.push_back(std::move(node));
        }
        auto c = db_.prepare(
            "SELECT identity FROM credentials c WHERE NOT EXISTS (SELECT 1 FROM nodes n WHERE n.identity = "
            "c.identity)" +
            std::string(identity.empty() ? "" : " AND c.identity = ?1") + " ORDER BY identity");
        if (!c) return c.error();
        if (!identity.empty()) c->bind(1, identity);
        std::vector<NodeRecord> enrolled_only;
        while (true) {
            auto row = c->step();
            if (!row) return row.error();
            if (!*row) break;
            enrolled_only.push_back(NodeRecord{c->text(0), std::nullopt, std::nullopt, 0, true});
        }
        if (!enrolled_only.empty()) {
            std::size_t middle = out.size();
            out.insert(out.end(), std::make_move_iterator(enrolled_only.begin()),
                       std::make_move_iterator(enrolled_only.end()));
            std::inplace_merge(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(middle), out.end(),
                               [](const NodeRecord& a, const NodeRecord& b) { return a.identity < b.identity; });
        }
        return out;
    }

    std::mutex mutex_;
    sqlite::Database db_;
};

}  // namespace

Result<std::unique_ptr<Store>> open_sqlite_store(const std::string& db_path) {
    auto db = sqlite::open_database(db_path);
    if (!db) return db.error();
    if (auto st = sqlite::apply_migrations(*db, "controller", kMigrations); !st)
        return make_error(db_path + ": " + st.message());
    return std::unique_ptr<Store>(std::make_unique<SqliteStore>(std::move(*db)));
}

std::string hash_secret(const std::string& secret) {
    return sha256_hex(secret);
}

bool constant_time_equal(const std::string& a, const std::string& b) {
    if (a.size() != b.size()) return false;
    return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace nodeform::controller
