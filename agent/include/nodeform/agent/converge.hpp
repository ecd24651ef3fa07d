#pragma once
// The converge engine: one run from a resolved spec (docs/resolved-spec.md) to a RunReport, which
// to_report() turns into the report body (nodeform/report.hpp) of docs/protocol.md. The CLI (apply/plan) and the
// daemon both call ConvergeEngine::run; everything it touches goes through the injected interfaces.
#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "nodeform/agent/system/filesystem.hpp"
#include "nodeform/clock.hpp"
#include "nodeform/log.hpp"
#include "nodeform/process.hpp"
#include "nodeform/random.hpp"
#include "nodeform/report.hpp"
#include "nodeform/result.hpp"

namespace nodeform::agent {

// apply: make changes. check: change nothing, report what differs ("drifted").
enum class RunMode { apply, check };
enum class ResourceStatus { unchanged, changed, failed, skipped, drifted };

const char* to_string(RunMode mode);
const char* to_string(ResourceStatus status);

struct FieldChange {
    std::string field;         // e.g. "state", "mode", "content", "groups"
    nlohmann::json old_value;  // already redacted ("[REDACTED]") for secret fields
    nlohmann::json new_value;
};

struct ResourceResult {
    std::string id;    // TYPE:NAME, e.g. "user:alice", "file:/etc/motd"
    std::string type;  // hostname, timezone, package, group, user, directory, file, symlink, kernel_module, sysctl,
                       // service, timer, stack
    std::string name;
    ResourceStatus status = ResourceStatus::unchanged;
    std::string message;  // one line for a person; never contains a secret
    std::vector<FieldChange> changes;
    std::chrono::milliseconds duration{0};
};

struct RunCounts {
    int total = 0;
    int unchanged = 0;
    int changed = 0;
    int failed = 0;
    int skipped = 0;
    int drifted = 0;
};

struct RunReport {
    std::string report_id;  // random UUID (v4), fresh per run
    std::string identity;
    std::string spec_digest;  // canonical_digest of the resolved spec
    RunMode mode = RunMode::apply;
    std::chrono::system_clock::time_point started_at{};
    std::chrono::system_clock::time_point finished_at{};
    std::vector<ResourceResult> resources;  // in the order they were converged
    std::map<std::string, double> timings;  // seconds per resource type, plus "total" (last_run_summary style)
    std::string error;                      // run-level failure (spec unusable, state not writable); empty otherwise
    bool platform_ready = false;            // the platform-ready marker exists after this run
    bool reached_platform_ready = false;    // this run wrote the marker (the first fully successful apply)

    RunCounts counts() const;
    bool ok() const;               // no run-level error and no failed resource (skipped counts as failed work)
    bool changes_pending() const;  // check mode: something drifted
};

// The report of a run (docs/protocol.md) through the shared type: phase platform-ready / converging / sustain
// from the run, trigger "run", no health; the daemon stamps trigger, phase and health (protocol::stamp).
protocol::Report to_report(const RunReport& report);
// protocol::to_json(to_report(report)): the body a one-shot `apply` posts.
nlohmann::json to_report_json(const RunReport& report);
// The content of STATE_DIR/last-run.json: counts, timings, per-resource results (Puppet's last_run_summary).
nlohmann::json to_last_run_json(const RunReport& report);

struct ConvergeOptions {
    // The root being converged, as a host path; "" or "/" = the live system. Must match the Filesystem's root.
    // With an offline root: no running hostname, services only (dis)enabled, apt/dpkg via chroot.
    std::string root;
    // Inside the Filesystem (so under --root when given): last-run.json, platform-ready, backup/.
    std::string state_dir = "/var/lib/nodeform";
    bool write_state = true;           // write last-run.json after every run
    bool allow_platform_ready = true;  // false: never write the marker (e.g. baking an offline template root)
    std::chrono::seconds dpkg_lock_timeout{std::chrono::minutes(5)};
    std::chrono::seconds apt_lists_max_age{std::chrono::hours(24)};
    std::chrono::seconds command_timeout{std::chrono::minutes(30)};  // apt, docker; shorter tools use 2 min
    // Called once per resource as soon as its result is known (CLI progress lines, daemon logging).
    std::function<void(const ResourceResult&)> on_result;
};

// Contents of STATE_DIR/platform-ready.
struct PlatformReady {
    std::string reached_at;  // RFC 3339
    std::string spec_digest;
};

class ConvergeEngine {
  public:
    // random: the run's report_id.
    ConvergeEngine(ProcessRunner& runner, Filesystem& fs, Clock& clock, Logger& logger, Random& random,
                   ConvergeOptions options);
    // One run in resource order hostname → timezone → apt_sources → packages → groups → users → mounts →
    // directories → files → symlinks → kernel_modules → sysctl → services → timers → stacks. Never throws for bad
    // input: an unusable spec gives a report with error set and no resources. In apply mode with write_state, writes
    // last-run.json and (first fully successful run) platform-ready.
    RunReport run(const nlohmann::json& resolved_spec, RunMode mode);
    // Thread-safe and permanent: the run in progress finishes the stage in hand (one apt transaction, the users,
    // the files...) and reports every later resource `skipped` ("the agent is stopping"); later runs do the same.
    void request_stop() { stop_requested_.store(true); }

  private:
    ProcessRunner& runner_;
    Filesystem& fs_;
    Clock& clock_;
    Logger& logger_;
    Random& random_;
    ConvergeOptions options_;
    std::atomic<bool> stop_requested_{false};
};

// nullopt when the marker is absent or unreadable.
std::optional<PlatformReady> read_platform_ready(Filesystem& fs, const std::string& state_dir = "/var/lib/nodeform");

// Replaces the value at each JSON Pointer in secret_paths with "[REDACTED]" (paths that do not exist are ignored).
nlohmann::json redact_paths(const nlohmann::json& document, const std::vector<std::string>& secret_paths);
// Every string value found at the spec's secret_paths (for redacting command output and messages).
std::vector<std::string> collect_secrets(const nlohmann::json& resolved_spec);

}  // namespace nodeform::agent
