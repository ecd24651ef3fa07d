#pragma once
// The provisioning lifecycle of a node (docs/provisioning.md): gates, resumable idempotent steps,
// receipts, persisted in the controller's state database.
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "nodeform/clock.hpp"
#include "nodeform/controller/providers/provider.hpp"
#include "nodeform/log.hpp"
#include "nodeform/result.hpp"
#include "nodeform/site/site.hpp"

namespace nodeform::controller::lifecycle {

enum class State {
    planned,
    provisioning,
    registered,
    validating,
    active,
    decommissioning,
    decommissioned,
    failed,
    abandoned
};
const char* to_string(State state);
std::optional<State> parse_state(const std::string& text);

// Step names, in order. Provisioning: vmid_reserved cloned configured resized started; then registered,
// agent_ready, active. Decommissioning: backed_up stopped destroyed revoked.
struct NodeRecord {
    std::string identity;
    State state = State::planned;
    std::string step;  // the last step completed
    std::string endpoint;
    std::string pve_node;
    std::int64_t vmid = 0;
    std::string pending_upid;  // a task started and not yet seen finished (re-attached after a crash)
    std::string failed_step;
    std::string reason;
    std::vector<std::string> ips;
    std::string token_expires_at;
    std::string updated_at;
};

struct Receipt {
    std::int64_t id = 0;
    std::string identity;
    std::string step;
    std::string outcome;  // ok | skipped | failed
    std::string state_after;
    std::string started_at;
    std::string finished_at;
    nlohmann::json inputs = nlohmann::json::object();
    nlohmann::json calls = nlohmann::json::array();
    nlohmann::json outputs = nlohmann::json::object();
    std::string error;
};
nlohmann::json to_json(const Receipt& receipt);
nlohmann::json to_json(const NodeRecord& record);

// Receipts of one (step, outcome) aggregated as a histogram of finished_at - started_at (for /metrics).
struct StepDurations {
    std::string step;
    std::string outcome;
    std::vector<std::uint64_t> le;  // cumulative count per bound, in the bounds' order
    std::uint64_t count = 0;
    double sum_s = 0;
};

using TimePoint = std::chrono::system_clock::time_point;

// Who works on a node's lifecycle, until when.
struct Lease {
    std::string holder;
    TimePoint expires_at{};
};

// A failed node's retries, shared by every controller (docs/controller.md "Lifecycle reconciler").
struct RetryState {
    int failures = 0;     // failed attempts since the node was last queued or advanced without failing
    TimePoint next_at{};  // no retry before this (the writer's clock)
};

// Own tables (lifecycle_nodes, lifecycle_receipts, lifecycle_schema_migrations) in STATE/nodeform.db,
// own connection (WAL, busy_timeout). Thread-safe.
class LifecycleStore {
  public:
    static Result<std::unique_ptr<LifecycleStore>> open(const std::string& db_path);
    virtual ~LifecycleStore() = default;
    virtual Result<std::optional<NodeRecord>> get(const std::string& identity) = 0;
    virtual Status put(const NodeRecord& record) = 0;
    // All records or none, in one transaction (a batch's VMID reservations).
    virtual Status put_many(const std::vector<NodeRecord>& records) = 0;
    virtual Result<std::vector<NodeRecord>> all() = 0;
    virtual Status add_receipt(const Receipt& receipt) = 0;
    virtual Result<std::vector<Receipt>> receipts(const std::string& identity) = 0;
    // Every receipt aggregated in the database (one row per step and outcome); bounds ascending, in seconds.
    virtual Result<std::vector<StepDurations>> step_durations(const std::vector<double>& bounds) = 0;

    // Leases: a node's lifecycle work runs on one controller at a time. A lease is a row (identity, holder,
    // expires_at); times are the caller's clock, so ttl must dwarf the controllers' clock skew.
    // Takes the lease for holder until now + ttl when there is none, it has expired, or holder holds it already;
    // Ok(false) while another holder's lease is live. One statement: of controllers racing, one gets it.
    virtual Result<bool> acquire_lease(const std::string& identity, const std::string& holder, TimePoint now,
                                       std::chrono::milliseconds ttl) = 0;
    // The heartbeat: extends holder's lease to now + ttl; Ok(false) when holder no longer holds it (another
    // controller took it over after it expired) — the old holder must stop working on the node.
    virtual Result<bool> renew_lease(const std::string& identity, const std::string& holder, TimePoint now,
                                     std::chrono::milliseconds ttl) = 0;
    // Gives the lease up (nothing when holder does not hold it).
    virtual Status release_lease(const std::string& identity, const std::string& holder) = 0;
    virtual Result<std::optional<Lease>> lease(const std::string& identity) = 0;

    // Retry counts (table lifecycle_retries), written by the lease holder: none when the node has no failures.
    virtual Result<std::optional<RetryState>> retry(const std::string& identity) = 0;
    virtual Status put_retry(const std::string& identity, const RetryState& retry) = 0;
    virtual Status clear_retry(const std::string& identity) = 0;
};

// The same tables in PostgreSQL (migrations as component "lifecycle" in schema_migrations, under the advisory
// lock); password as for open_postgres_store.
Result<std::unique_ptr<LifecycleStore>> open_postgres_lifecycle_store(const std::string& url,
                                                                      const std::string& password);

struct IssuedToken {
    std::string token;  // secret: goes only into the seed
    std::chrono::system_clock::time_point expires_at;
};

// One-time enrollment tokens and node credentials (the controller's Store implements this).
class EnrollmentIssuer {
  public:
    virtual ~EnrollmentIssuer() = default;
    // A fresh one-time token for the identity; any earlier unused token of the identity stops working.
    virtual Result<IssuedToken> issue(const std::string& identity, std::chrono::seconds ttl) = 0;
    // Revokes the node's credential and any unused token.
    virtual Status revoke(const std::string& identity) = 0;
    virtual std::size_t token_length() const { return 43; }
};

struct NodeReport {
    bool platform_ready = false;
    bool health_passing = false;
    std::string received_at;
};

// The node's latest report as the controller stored it.
class NodeReportSource {
  public:
    virtual ~NodeReportSource() = default;
    virtual std::optional<NodeReport> latest(const std::string& identity) = 0;
};

using ProviderFactory =
    std::function<Result<std::unique_ptr<providers::Provider>>(const site::ProxmoxEndpoint& endpoint)>;
// The provider of a node whose placement says provider: qemu (site::NodePlacement::qemu).
using LocalProviderFactory = std::function<Result<std::unique_ptr<providers::Provider>>(const site::Node& node)>;

struct ProgressEvent {
    std::string identity;
    std::string step;
    std::string detail;
    double elapsed_s = 0;
    bool failed = false;
};

struct LifecycleOptions {
    std::string controller_url;  // for the seed; default: the site's controller_url
    std::string ca_fingerprint;  // 64 hex: the controller CA
    std::chrono::seconds token_ttl{std::chrono::hours(24)};
    std::chrono::milliseconds agent_timeout{std::chrono::minutes(10)};
    std::chrono::milliseconds report_timeout{std::chrono::minutes(30)};
    std::chrono::milliseconds wait_poll{std::chrono::seconds(1)};   // locks, reports
    std::chrono::milliseconds agent_poll{std::chrono::seconds(1)};  // guest-agent ping while the VM boots
    std::chrono::milliseconds lock_wait{std::chrono::minutes(20)};  // waiting for a clone lock to clear
    std::string backup_storage = "local";
    bool rollback_on_failure = true;
    int shutdown_timeout_s = 60;
};

struct LifecycleDeps {
    LifecycleStore* store = nullptr;
    ProviderFactory providers;
    LocalProviderFactory qemu_providers;  // optional: without it, qemu nodes are refused
    EnrollmentIssuer* issuer = nullptr;
    NodeReportSource* reports = nullptr;
    const Clock* clock = nullptr;  // every timestamp, deadline and wait (sleep_for) goes through it
    Logger* logger = nullptr;
    std::function<void(const ProgressEvent&)> progress;  // optional
    // Test hook: called at "before:STEP", "called:STEP" and "after:STEP" points; a test makes it throw or _exit.
    std::function<void(const std::string& point)> crash_point;  // optional
    // Asked before each step: false stops the run there, nothing written (the node's lease was taken over by
    // another controller, which carries on). Optional.
    std::function<bool(const std::string& identity)> may_continue;
};

struct GateVerdict {
    std::string name;
    bool pass = false;
    std::string detail;
};
nlohmann::json to_json(const GateVerdict& gate);

struct PlannedCall {
    std::string method;
    std::string path;
    std::string params;  // what is sent, secrets shown as placeholders
};

struct Plan {
    std::string identity;
    std::string current_state;  // "none" when never provisioned
    std::int64_t vmid = 0;
    std::vector<GateVerdict> gates;
    std::vector<PlannedCall> calls;  // Proxmox API calls; for provider qemu, the commands and files instead
    std::string provider = "proxmox";
    bool ok() const;
};
nlohmann::json to_json(const Plan& plan);

struct RunResult {
    std::string identity;
    State state = State::planned;
    bool ok = false;
    std::string message;
};

class Lifecycle {
  public:
    Lifecycle(LifecycleDeps deps, LifecycleOptions options);
    // Dry run: reads only, writes nothing.
    Result<Plan> plan(const site::Site& site, const std::string& identity);
    // Runs (or resumes) provisioning until active, failed, or still validating at the time limit.
    RunResult create(const site::Site& site, const std::string& identity);
    // create() for several nodes, at most `parallel` at a time; results in input order. The VMIDs of the
    // batch are reserved first in one pass (one cluster/resources read per endpoint, one store transaction);
    // each node's vmid gate then verifies its own VMID (range, cluster/nextid, store) in parallel.
    std::vector<RunResult> create_many(const site::Site& site, const std::vector<std::string>& identities,
                                       int parallel);
    // Decommissions by the node's policy; abandon = forget the node without touching Proxmox.
    RunResult destroy(const site::Site& site, const std::string& identity, bool abandon = false);
    // One pass of whatever the node's record asks for (the reconciler's unit of work): decommissioning, or a
    // failure while decommissioning, resumes the decommission; anything else resumes provisioning.
    RunResult advance(const site::Site& site, const std::string& identity);
    // Queues work for a serving controller's reconciler (docs/controller.md): create stores a planned record
    // (a decommissioned/abandoned node starts afresh, a failed one is stamped so its retries start again);
    // destroy marks the record decommissioning. Both clear the node's retry count. Nothing is done on Proxmox.
    Status queue_create(const std::string& identity);
    Status queue_destroy(const std::string& identity);

    struct Run;  // one node's run (defined in controller/src/lifecycle/run.hpp)

  private:
    Status queue(const NodeRecord& record);  // stores the queued record, clears its retry count
    Result<std::unique_ptr<Run>> prepare(const site::Site& site, const std::string& identity);
    Result<std::unique_ptr<Run>> prepare_local(std::unique_ptr<Run> run, const std::string& identity);
    Result<std::unique_ptr<Run>> finish_prepare(std::unique_ptr<Run> run, const std::string& identity);
    RunResult create_reserved(const site::Site& site, const std::string& identity);
    void reserve_batch(const site::Site& site, const std::vector<std::string>& identities);

    LifecycleDeps deps_;
    LifecycleOptions options_;
    std::mutex vmid_mutex_;  // choosing a VMID not yet reserved (batch pass, fallback allocation) is one at a time
};

// The guest's addresses worth showing ("10.0.0.5/24"): loopback (127/8, ::1) and link-local
// (169.254/16, fe80::/10) are left out.
std::vector<std::string> reportable_addresses(const std::vector<providers::NetInterface>& interfaces);

// The cloud-init/identity config the configure step PUTs (values for receipts are redacted separately).
struct ConfigInputs {
    std::map<std::string, std::string> params;
    std::map<std::string, std::string> shown;  // same keys, secrets replaced
};
Result<ConfigInputs> build_config(const site::Node& node, const providers::VmState& vm,
                                  const std::string& seed_compact);
// The template's config as its clone will have it, for gates and plan before any clone exists: Proxmox's
// clone keeps every smbios1 field and gives it a new uuid (here a placeholder of the same length).
providers::VmState projected_clone(const providers::VmState& tmpl);

}  // namespace nodeform::controller::lifecycle
