#pragma once
// Store: everything the controller keeps — enrollment tokens and node credentials (hashed), run reports
// (idempotent by report_id, with retention) and per-node last-report bookkeeping. Implementations: SQLite in
// STATE/nodeform.db (the default) and PostgreSQL shared by several controllers (store/postgres.hpp); either way a
// successful write has been committed (fsynced) before the call returns.
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "nodeform/random.hpp"
#include "nodeform/result.hpp"

namespace nodeform::controller {

using TimePoint = std::chrono::system_clock::time_point;

// A validated run report plus the fields the controller indexes.
struct ReportRecord {
    std::string report_id;
    std::string identity;
    TimePoint received_at{};
    std::string spec_digest;
    std::string phase;
    std::string trigger;
    std::string mode;
    std::string finished_at;  // as the agent wrote it
    bool platform_ready = false;
    std::int64_t changed = 0;
    std::int64_t failed = 0;
    std::int64_t drifted = 0;
    std::int64_t health_failed = 0;
    std::string body;           // the report as received (canonical JSON)
    std::string apply_request;  // the converge request the run took (in body; not a column); empty: none
};

enum class InsertOutcome { inserted, duplicate, conflict };  // conflict: same report_id, different content

// What status derivation needs about one node.
struct NodeRecord {
    std::string identity;
    std::optional<ReportRecord> last_report;      // newest report of any trigger
    std::optional<ReportRecord> last_run_report;  // newest report with trigger "run"
    std::int64_t report_count = 0;
    bool has_credential = false;
};

struct RetentionPolicy {
    int keep_last = 100;                          // per node, always kept
    std::chrono::hours keep_newer_than{24 * 30};  // everything received within this is kept
};

// A node credential found by its hash.
struct CredentialMatch {
    std::string identity;
    TimePoint created_at{};         // when it was issued (enrollment or rotation)
    bool rotate_requested = false;  // `token rotate` asked for a new one
    bool previous = false;          // it is the previous credential, accepted until previous_until
    TimePoint previous_until{};
};

enum class EnrollOutcome { enrolled, invalid_token };

// One controller's heartbeat in the shared store: the digest of the site it has loaded (docs/controller.md
// "Several controllers: one site digest at a time").
struct SiteBeat {
    std::string controller;  // the publishing controller's id (unique per process)
    std::string digest;      // the digest of the site it has loaded (not necessarily the one it serves)
    TimePoint heartbeat{};   // when it last published, by its clock
};

class Store {
  public:
    virtual ~Store() = default;

    // Enrollment tokens: only hashes are stored. Issuing replaces no earlier token (each expires on its own).
    virtual Status add_enrollment_token(const std::string& identity, const std::string& token_hash,
                                        TimePoint expires_at, TimePoint now) = 0;
    // In one transaction: the token must exist for identity, be unexpired and unused; it is marked consumed and
    // credential_hash becomes the node's credential (replacing an earlier one).
    virtual Result<EnrollOutcome> enroll(const std::string& identity, const std::string& token_hash,
                                         const std::string& credential_hash, TimePoint now) = 0;
    // The identity whose credential hashes to credential_hash, if any.
    virtual Result<std::optional<std::string>> credential_owner(const std::string& credential_hash) = 0;
    // The credential hashing to credential_hash: the current one, or the previous one while its grace lasts.
    virtual Result<std::optional<CredentialMatch>> find_credential(const std::string& credential_hash,
                                                                   TimePoint now) = 0;
    // Marks the node's credential for rotation (the agent is told on its next request); Ok(false): no credential.
    virtual Result<bool> request_rotation(const std::string& identity, TimePoint now) = 0;
    // presented_hash (the current credential, or the previous one in its grace) is replaced by new_hash; the
    // current one stays accepted until previous_until. Ok(false): presented_hash is neither.
    virtual Result<bool> rotate_credential(const std::string& identity, const std::string& presented_hash,
                                           const std::string& new_hash, TimePoint now, TimePoint previous_until) = 0;
    // Deletes the node's credential and every unused enrollment token for it; Ok(false) when there was nothing.
    virtual Result<bool> revoke(const std::string& identity, TimePoint now) = 0;

    virtual Result<InsertOutcome> insert_report(const ReportRecord& report) = 0;
    // All of reports in one transaction (one fsync), all or nothing: Ok holds one outcome per report, in order
    // (a report_id repeated within the batch is a duplicate or conflict of its first occurrence); Err stores none.
    virtual Result<std::vector<InsertOutcome>> insert_reports(const std::vector<ReportRecord>& reports) = 0;
    virtual Result<std::optional<ReportRecord>> find_report(const std::string& report_id) = 0;
    virtual Result<std::vector<ReportRecord>> recent_reports(const std::string& identity, int limit) = 0;
    // Every node that has reported or holds a credential.
    virtual Result<std::vector<NodeRecord>> nodes() = 0;
    // nodes() with every report's body left empty (what status derivation needs; the fleet page, /metrics).
    virtual Result<std::vector<NodeRecord>> node_summaries() = 0;
    virtual Result<std::optional<NodeRecord>> node(const std::string& identity) = 0;
    virtual Result<std::int64_t> report_count() = 0;
    // Deletes reports older than policy.keep_newer_than that are not among a node's newest keep_last; returns how many.
    virtual Result<std::int64_t> apply_retention(const RetentionPolicy& policy, TimePoint now) = 0;
    // Converge requests (`node apply`, sent as Nodeform-Apply-Request): at most one pending per node; a new one
    // replaces it. Cleared only by acknowledge_apply with the same id (the agent's report of the run that took it).
    virtual Status request_apply(const std::string& identity, const std::string& request_id, TimePoint now) = 0;
    // Every pending converge request: identity → request id (the server's cache of what rides on spec answers).
    virtual Result<std::map<std::string, std::string>> pending_applies() = 0;
    // One node's pending request, from pending_applies().
    Result<std::optional<std::string>> pending_apply(const std::string& identity) {
        auto all = pending_applies();
        if (!all) return all.error();
        auto it = all->find(identity);
        if (it == all->end()) return std::optional<std::string>();
        return std::optional<std::string>(it->second);
    }
    // Ok(true) when identity's pending request was request_id and is now cleared; Ok(false) otherwise.
    virtual Result<bool> acknowledge_apply(const std::string& identity, const std::string& request_id) = 0;
    // A cheap round trip to the database (for /readyz and the watchdog).
    virtual Status ping() = 0;

    // Site digests of the controllers sharing the store: publish (insert or replace controller's row), every
    // row (expired ones too: the reader decides), withdraw (a controller that stops deletes its row).
    virtual Status publish_site_digest(const SiteBeat& beat) = 0;
    virtual Result<std::vector<SiteBeat>> site_digests() = 0;
    virtual Status withdraw_site_digest(const std::string& controller) = 0;
};

// Opens STATE/nodeform.db (see sqlite::database_path) and applies the "controller" migrations.
Result<std::unique_ptr<Store>> open_sqlite_store(const std::string& db_path);
// Connects to PostgreSQL at url (password: when empty, libpq's PGPASSWORD or ~/.pgpass) and applies the same
// "controller" migrations under an advisory lock. Several controllers may share the database.
Result<std::unique_ptr<Store>> open_postgres_store(const std::string& url, const std::string& password);

// Tokens and credentials are drawn with nodeform::generate_secret (nodeform/random.hpp) and stored only hashed.
// Lower-case hex SHA-256 of a token: what the store keeps.
std::string hash_secret(const std::string& secret);
// Constant-time equality of two strings (length is not secret).
bool constant_time_equal(const std::string& a, const std::string& b);

}  // namespace nodeform::controller
