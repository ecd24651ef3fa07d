#pragma once
// The sustain loop of `nodeform-agent run`: one Boost.Asio io_context with timers and signals; blocking work
// (fetch + converge, health probes, report upload) runs on worker threads and posts its result back.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "nodeform/agent/daemon/health.hpp"
#include "nodeform/agent/daemon/notifier.hpp"
#include "nodeform/agent/daemon/schedule.hpp"
#include "nodeform/agent/daemon/spool.hpp"
#include "nodeform/agent/daemon/watcher.hpp"
#include "nodeform/agent/report_delivery.hpp"
#include "nodeform/clock.hpp"
#include "nodeform/log.hpp"
#include "nodeform/report.hpp"
#include "nodeform/result.hpp"

namespace nodeform::agent::daemon {

enum class TurnMode { apply, check };

struct SpecFetch {
    nlohmann::json spec;
    std::string digest;         // "sha256:<hex>"
    bool from_cache = false;    // controller unreachable: the last good spec is used
    bool not_modified = false;  // 304
    std::string warning;
    bool credential_refused = false;  // from_cache because the controller refused the node credential
    // The controller asks for a converge (Nodeform-Apply-Request, docs/protocol.md); empty: none.
    std::string apply_request;
};

// Where the spec comes from: the controller (enroll once, then fetch with ETag and cache) or a file.
class SpecSource {
  public:
    virtual ~SpecSource() = default;
    // Enrollment (or nothing, for postures and sources without it); retried by the daemon on Err.
    virtual Status enroll() = 0;
    virtual Result<SpecFetch> fetch() = 0;
};

struct RunOutcome {
    protocol::Report report;      // docs/protocol.md; the daemon stamps it (protocol::stamp) before spooling
    bool ok = false;              // no run error, no failed or skipped resource
    bool platform_ready = false;  // the platform-ready marker exists after this run
    bool reached_platform_ready = false;
};

// One converge (apply) or drift check of a resolved spec.
class RunEngine {
  public:
    virtual ~RunEngine() = default;
    // Blocking. The daemon stamps the report afterwards (report id, trigger, phase, the health results then).
    virtual RunOutcome run(const nlohmann::json& spec, TurnMode mode) = 0;
    // Asks a run in progress to stop after the resource in hand (best effort; called from another thread).
    virtual void cancel() {}
};

// Delivers one report to the controller: stored (2xx, or already stored), rejected for good, or retry later.
class ReportPoster {
  public:
    virtual ~ReportPoster() = default;
    virtual ReportPostResult post(const nlohmann::json& report) = 0;
};

struct DaemonOptions {
    std::string identity;
    std::string agent_version = NODEFORM_VERSION;
    std::string state_file;                             // host path of the daemon's own state (JSON); empty = none
    std::optional<std::chrono::milliseconds> interval;  // overrides the spec's apply.interval_s
    std::optional<std::chrono::milliseconds> splay;     // overrides the spec's apply.splay_s
    // The splay the first turn after a start waits within (start_delay); unset: `splay`, else 60 s.
    std::optional<std::chrono::milliseconds> start_splay;
    std::chrono::milliseconds stop_timeout{std::chrono::seconds(80)};
    std::chrono::milliseconds retry_base{std::chrono::seconds(5)};
    std::chrono::milliseconds retry_cap{std::chrono::minutes(5)};
    std::uint64_t max_turns = 0;  // stop after this many completed turns; 0 = never
    bool already_ready = false;   // the platform-ready marker existed at start
    bool handle_signals = true;   // SIGHUP/SIGTERM/SIGINT through an asio signal_set
    // A change the watcher saw is examined this long after the first event (edits come in bursts).
    std::chrono::milliseconds watch_debounce{150};
    // How often the managed units' states are asked for (DaemonDeps::unit_runner); 0 = never.
    std::chrono::milliseconds unit_poll{std::chrono::seconds(5)};
};

struct DaemonDeps {
    const Clock& clock;
    Logger& logger;
    Notifier& notifier;
    SpecSource& spec_source;
    RunEngine& engine;
    HealthProber& prober;
    ReportPoster* poster;  // nullptr: keep reports in the spool (no controller)
    Spool& spool;
    Random& random;
    ChangeWatcher* watcher = nullptr;      // nullptr: no drift watching between turns
    ProcessRunner* unit_runner = nullptr;  // `systemctl is-active` for the unit check; nullptr: no unit check
};

// What the loop did, for tests and the final log line.
struct DaemonStats {
    std::uint64_t turns = 0;  // completed runs (converge or check)
    std::uint64_t reports_spooled = 0;
    std::uint64_t reports_sent = 0;
    std::uint64_t reports_rejected = 0;  // refused for good by the controller (400/413/422): dropped from the spool
    std::uint64_t health_reports = 0;
    std::uint64_t change_turns = 0;  // runs started by a change the watcher or the unit check saw
    bool ready = false;
    bool abandoned_work = false;  // stop timeout hit with a worker still busy: exit without joining
};

class Daemon {
  public:
    Daemon(DaemonOptions options, DaemonDeps deps);
    ~Daemon();
    Daemon(const Daemon&) = delete;
    Daemon& operator=(const Daemon&) = delete;

    // Runs until stopped (signal, request_stop, max_turns). Returns the exit code (0 on an orderly stop).
    int run();
    // Thread-safe: same as SIGHUP / SIGTERM.
    void request_run_now();
    void request_stop();
    DaemonStats stats() const;

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

// The summary line of a report for the log: "3 resources: 1 changed, 0 failed, 0 drifted".
std::string describe_counts(const protocol::Report& report);

}  // namespace nodeform::agent::daemon
