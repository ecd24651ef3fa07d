#pragma once
// Provider: what the provisioning lifecycle asks of a virtualization platform. The lifecycle never
// speaks HTTP itself; the Proxmox VE client (proxmox.hpp) is one implementation.
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "nodeform/result.hpp"

namespace nodeform::controller::providers {

// One API request as a receipt shows it: no bodies, no headers, no secrets.
struct ApiCall {
    std::string method;
    std::string path;        // path and query, secrets never part of it
    int status = 0;          // HTTP status; 0 when the transport failed
    int attempt = 1;         // 1 for the first try, 2.. for safe retries
    std::string upid;        // for calls that started a task
    std::string exitstatus;  // the task's exit status once it stopped
    std::string error;       // Proxmox's message when the call failed (secrets redacted)
    std::int64_t duration_ms = 0;
    int polls = 0;  // task status polls folded into this call
};

// Which provider failure happened, so the lifecycle can read real state instead of guessing.
enum class FailureKind {
    other,
    not_found,
    already_exists,
    already_running,
    locked,
    agent_not_running,  // "QEMU guest agent is not running": the guest has not started it (yet)
    vm_not_running,     // "VM N is not running": the VM itself is stopped
    timeout,
    conflict,
    untrusted  // the endpoint's TLS certificate was refused: final, nothing was sent
};

// A finished Proxmox task.
struct TaskOutcome {
    std::string upid;
    std::string exitstatus;             // "OK", "WARNINGS: N", or the error
    std::vector<std::string> log_tail;  // last log lines, fetched when the task failed
    FailureKind failure{};              // what the exit status means when the task failed (e.g. locked)
    bool ok() const { return exitstatus == "OK" || exitstatus.rfind("WARNINGS", 0) == 0; }
};

// What Proxmox says about one VM right now.
struct VmState {
    bool exists = false;
    std::string name;
    std::string lock;    // "" or clone, backup, migrate, ...
    std::string status;  // running | stopped | "" when unknown
    bool is_template = false;
    std::map<std::string, std::string> config;  // raw config values (digest removed)
    std::string digest;                         // SHA-1 of the config file, for optimistic updates
};

struct NetInterface {
    std::string name;
    std::string mac;
    std::vector<std::string> addresses;  // "10.0.0.5/24"
};

struct ProviderError {
    FailureKind kind = FailureKind::other;
    std::string message;  // includes Proxmox's own message; never a secret
};

template <typename T>
struct Outcome {  // Result with a failure kind attached
    std::optional<T> value;
    ProviderError error;
    bool ok() const { return value.has_value(); }
    static Outcome success(T v) { return Outcome{std::move(v), {}}; }
    static Outcome failure(FailureKind kind, std::string message) {
        return Outcome{std::nullopt, {kind, std::move(message)}};
    }
};

struct CloneRequest {
    std::string node;
    std::int64_t template_vmid = 0;
    std::int64_t newid = 0;
    std::string name;
    std::string storage;      // target storage (full clone)
    std::string pool;         // may be empty
    std::string description;  // may be empty
    bool full = true;
};

class Provider {
  public:
    virtual ~Provider() = default;

    // Cluster and host facts (reads).
    virtual Outcome<std::vector<std::string>> online_hosts() = 0;
    virtual Outcome<bool> vmid_free(std::int64_t vmid) = 0;       // cluster/nextid?vmid=
    virtual Outcome<std::vector<std::int64_t>> used_vmids() = 0;  // cluster/resources
    virtual Outcome<bool> storage_exists(const std::string& node, const std::string& storage) = 0;
    virtual Outcome<bool> bridge_exists(const std::string& node, const std::string& bridge) = 0;
    virtual Outcome<VmState> vm_state(const std::string& node, std::int64_t vmid) = 0;

    // Mutations. Each returns once Proxmox finished (tasks are waited for, within the time limit).
    // on_upid is called with the task id as soon as Proxmox accepted the clone (to persist it).
    virtual Outcome<TaskOutcome> clone(const CloneRequest& request,
                                       const std::function<void(const std::string&)>& on_upid) = 0;
    // Re-attaches to a task started earlier (after a controller restart).
    virtual Outcome<TaskOutcome> wait_task(const std::string& upid, std::chrono::milliseconds limit) = 0;
    virtual Outcome<bool> configure(const std::string& node, std::int64_t vmid,
                                    const std::map<std::string, std::string>& params, const std::string& digest) = 0;
    virtual Outcome<TaskOutcome> resize(const std::string& node, std::int64_t vmid, const std::string& disk,
                                        const std::string& size) = 0;
    virtual Outcome<TaskOutcome> start(const std::string& node, std::int64_t vmid) = 0;
    virtual Outcome<TaskOutcome> shutdown(const std::string& node, std::int64_t vmid, int timeout_s) = 0;
    virtual Outcome<TaskOutcome> stop(const std::string& node, std::int64_t vmid) = 0;
    virtual Outcome<TaskOutcome> backup(const std::string& node, std::int64_t vmid, const std::string& storage) = 0;
    virtual Outcome<TaskOutcome> destroy(const std::string& node, std::int64_t vmid) = 0;  // purge + unreferenced disks

    // Guest agent.
    virtual Outcome<bool> agent_ping(const std::string& node, std::int64_t vmid) = 0;
    virtual Outcome<std::vector<NetInterface>> agent_interfaces(const std::string& node, std::int64_t vmid) = 0;

    // API calls made since the last take_calls(), oldest first.
    virtual std::vector<ApiCall> take_calls() = 0;
    // Values that must never appear in calls, errors or logs (added per operation, e.g. a fresh token).
    virtual void add_secret(const std::string& secret) = 0;
};

nlohmann::json to_json(const ApiCall& call);

}  // namespace nodeform::controller::providers
