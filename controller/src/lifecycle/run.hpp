#pragma once
// Private to controller/src/lifecycle/: one node's run, a step's outcome, the step tables and the driver.
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "nodeform/controller/lifecycle/lifecycle.hpp"
#include "nodeform/seed.hpp"

namespace nodeform::controller::lifecycle {

using json = nlohmann::json;
using providers::Outcome;
using providers::VmState;

// Everything one node's run needs; one provider (and so one transport) per run.
struct Lifecycle::Run {
    Run(const LifecycleDeps& d, const LifecycleOptions& o, std::mutex& m) : deps(d), options(o), vmid_mutex(m) {}

    const LifecycleDeps& deps;
    const LifecycleOptions& options;
    std::mutex& vmid_mutex;  // choosing a VMID not yet reserved is one at a time
    const site::Site* site = nullptr;
    const site::Node* node = nullptr;
    const site::ProxmoxEndpoint* endpoint = nullptr;
    const site::Placement* placement = nullptr;
    site::Placement local_placement;  // provider qemu: the one host "local", VMIDs 100-999999
    std::unique_ptr<providers::Provider> provider;
    NodeRecord rec;
    std::chrono::steady_clock::time_point t0;
    std::vector<std::string> secrets;  // never in errors, receipts or logs

    const std::string& id() const { return node->name; }
    std::string redact(const std::string& text) const;
    std::string now() const;  // RFC 3339, from the clock seam
    void hook(const std::string& point) const;
    // Asks `done` every `interval` until it says yes or `limit` has passed on the clock; false at the deadline.
    bool poll(std::chrono::milliseconds limit, std::chrono::milliseconds interval,
              const std::function<bool()>& done) const;
    // Stamps and saves the record; the error gives the store's reason (callers prefix the node).
    Status persist();
    // The seed the node gets, carrying `token`.
    Seed seed(const std::string& token) const;
    // The credential the node's posture takes from its seed: the site token (site_token posture), else ""
    // (a one-time enrollment token is issued when the VM is configured).
    std::string posture_token() const;
    // The seed as gates and plan size it: the site token, or a placeholder as long as an enrollment token.
    Seed planned_seed() const;
};
using Run = Lifecycle::Run;

// A node never provisioned (or provisioned again from scratch).
inline NodeRecord fresh_record(const std::string& identity) {
    NodeRecord rec;
    rec.identity = identity;
    return rec;
}

// What a step's body says. A retry is run again by the driver (as often as the step allows); waiting ends
// the run without a receipt, the state unchanged (the node is not there yet).
struct StepOut {
    enum class Kind { ok, skipped, failed, retry, waiting };
    Kind kind = Kind::ok;
    json inputs = json::object();
    json outputs = json::object();
    std::string error;                   // failed, retry, waiting: for a person
    std::chrono::milliseconds delay{0};  // retry: wait this long first

    bool ok() const { return kind == Kind::ok || kind == Kind::skipped; }
    static StepOut done(json outputs, json inputs = json::object());
    static StepOut skip(json outputs);
    static StepOut fail(std::string error);
    static StepOut retry(std::string error, std::chrono::milliseconds delay = std::chrono::milliseconds(0));
    static StepOut wait(std::string message);
};

// One row of an operation's table: the step's name, the node's state once it is done, what it does.
struct Step {
    const char* name;
    State state_after;
    StepOut (*body)(Run& run);
    int attempts = 1;  // how often the driver runs a body that asks for a retry
};

struct Operation {
    std::vector<Step> steps;  // in order; the record's `step` is the last one done
    // What a failed step leaves behind and says (provisioning rolls an unbooted VM back).
    RunResult (*on_failure)(Run& run, const std::string& step, const std::string& error);
    // Once every step is done.
    RunResult (*on_done)(Run& run);
};

const Operation& provision_operation();
const Operation& decommission_operation();
int step_index(const Operation& op, const std::string& step);  // -1 when not a step of op

// The driver: runs every step of `op` after the record's last one, each through run_step.
RunResult drive(Run& run, const Operation& op);
// Runs one step: hook before, body (retried as the step allows), receipt, persisted record, progress, hook
// after. False with `error` set when the body failed or the record or receipt could not be saved.
bool run_step(Run& run, const Step& step, std::string& error, std::string* waiting = nullptr);

RunResult provision(Run& run);
RunResult decommission(Run& run, bool abandon);

// The clone request 'node create' sends and 'node plan' shows (provision_steps.cpp).
providers::CloneRequest clone_request(const Run& run);
std::string describe(const providers::CloneRequest& request);  // "newid=.. name=.. full=1 storage=.. ..."

// Gates (gates.cpp). With reserve, a passing run's VMID is saved as the node's reservation.
std::vector<GateVerdict> gates(Run& run, bool reserve);

// A finished Proxmox task as a step's outcome: done with upid, exitstatus and the summary, or failed with
// "WHAT ended: EXITSTATUS" (the task's log tail in the outputs).
StepOut task_step(const Outcome<providers::TaskOutcome>& task, const std::string& what, std::string summary);
// The VM is this node's: named after it, or a clone in progress that has no name yet.
bool is_ours(const VmState& vm, const std::string& identity);
// VMIDs that nodes other than `except` hold (decommissioned and abandoned nodes hold none).
std::set<std::int64_t> vmids_held_by_others(const std::vector<NodeRecord>& records,
                                            const std::set<std::string>& except);

}  // namespace nodeform::controller::lifecycle
