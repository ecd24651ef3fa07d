// nodeform-agent run: the sustain loop under systemd (Type=notify). Wiring only; the loop is daemon/daemon.cpp.
#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <ostream>

#include "nodeform/agent/cli.hpp"
#include "nodeform/agent/controller_client.hpp"
#include "nodeform/agent/converge.hpp"
#include "nodeform/agent/daemon/adapters.hpp"
#include "nodeform/agent/daemon/config.hpp"
#include "nodeform/agent/daemon/daemon.hpp"
#include "nodeform/agent/daemon/watcher.hpp"
#include "nodeform/agent/system/filesystem.hpp"
#include "nodeform/args.hpp"
#include "nodeform/clock.hpp"
#include "nodeform/http.hpp"
#include "nodeform/log.hpp"
#include "nodeform/posix_process_runner.hpp"

namespace nodeform::agent {
namespace {

constexpr const char* kRunUsage = R"(usage: nodeform-agent run [OPTIONS]

The agent daemon (systemd Type=notify): enroll, fetch the spec, converge until platform-ready
(READY=1), then every apply.interval_s (+ splay) refetch and converge (drift: remediate) or check
(drift: report); run the spec's health checks; report to the controller through an on-disk spool.
SIGHUP runs now; SIGTERM/SIGINT finish the resource in hand, write state and exit 0.
Between turns it watches what the spec manages (inotify; managed units every 5 s on a live system) and
examines a change at once: repaired with drift: remediate, reported with drift: report. With
apply.trigger: manual a platform-ready node only checks; it converges on `nodeform-agent apply` or when
the controller asks (Nodeform-Apply-Request).

Options (each can also be set in /etc/nodeform/agent.yaml under the same name, without "--";
the command line wins):
  --config FILE          settings file (default /etc/nodeform/agent.yaml; ignored when absent)
  --seed FILE            identity seed (default: /etc/nodeform/seed.yaml, then the SMBIOS serial)
  --spec FILE            converge this resolved spec instead of asking a controller (reports stay spooled)
  --root DIR             converge an offline root filesystem (tests); paths below are inside it
  --state-dir DIR        state inside the root (default /var/lib/nodeform)
  --spool-dir DIR        report spool, a host path (default ROOT/STATE_DIR/spool)
  --spool-max N          reports kept while the controller is away; older ones are dropped and counted (1000)
  --controller-url URL   override the seed's controller URL
  --interval DURATION    override the spec's apply.interval_s (e.g. 1s, 5m)
  --splay DURATION       override the spec's apply.splay_s
  --stop-timeout DURATION  longest wait for the run in hand on SIGTERM (80s; keep below TimeoutStopSec)
  --retry-base DURATION  first retry delay for failed runs and report delivery (5s)
  --retry-cap DURATION   longest retry delay (5m)
  --max-turns N          stop after N runs (benchmarks, tests; 0 = never)
  --log-level LEVEL      debug, info (default), notice, warning, error

Logs go to journald with NODEFORM_RUN_ID, NODEFORM_RESOURCE and NODEFORM_STATUS fields when run by
systemd (journalctl -u nodeform-agent NODEFORM_STATUS=failed), to stderr otherwise. See docs/daemon.md.
Exit codes: 0 stopped in order, 2 usage, 3 configuration (settings, seed, spec), 4 runtime.
)";

std::string absolute_path(const std::string& path) {
    if (path.empty() || path[0] == '/') return path;
    char* cwd = ::getcwd(nullptr, 0);
    std::string base = cwd != nullptr ? cwd : ".";
    std::free(cwd);
    return base + "/" + path;
}

}  // namespace

int cmd_run(const std::vector<std::string>& args, CliIo io) {
    // The daemon's few worker threads idle between turns: one malloc arena rather than one per thread.
    ::mallopt(M_ARENA_MAX, 1);
    using namespace daemon;
    auto loaded = load_agent_config(args);
    if (!loaded) {
        io.err << "nodeform-agent run: " << loaded.message() << "\n"
               << "Run 'nodeform-agent run --help' for the options.\n";
        return loaded.message().rfind("--", 0) == 0 || loaded.message().find("option") != std::string::npos
                   ? exit_code::usage
                   : exit_code::config;
    }
    if (loaded->help) {
        io.out << kRunUsage;
        return exit_code::ok;
    }
    AgentConfig config = loaded->config;
    config.root = absolute_path(config.root);
    if (config.state_dir.empty() || config.state_dir[0] != '/') {
        io.err << "nodeform-agent run: --state-dir must be an absolute path (inside the root)\n";
        return exit_code::usage;
    }
    auto logger = make_default_logger("nodeform-agent", config.log_level);

    auto root_fs = make_root_filesystem(config.root);
    if (!root_fs) {
        io.err << "nodeform-agent run: --root: " << root_fs.message() << "\n";
        return exit_code::config;
    }
    auto host_fs = make_root_filesystem("/");
    if (!host_fs) {
        io.err << "nodeform-agent run: " << host_fs.message() << "\n";
        return exit_code::runtime;
    }
    auto pinned = (*root_fs)->pin_directory(config.state_dir);  // resolved in the root, whatever the symlinks
    if (!pinned) {
        io.err << "nodeform-agent run: cannot create the state directory: " << pinned.message() << "\n";
        return exit_code::runtime;
    }
    const std::string state_host = *pinned;
    const std::string spool_dir = config.spool_dir.empty() ? state_host + "/spool" : absolute_path(config.spool_dir);
    auto spool = Spool::open(spool_dir, config.spool_max);
    if (!spool) {
        io.err << "nodeform-agent run: " << spool.message() << "\n";
        return exit_code::runtime;
    }

    // Where the spec comes from.
    std::string identity;
    std::unique_ptr<SpecSource> source;
    std::unique_ptr<HttpTransport> fetch_http, report_http;
    auto random = make_system_random();  // jitter, report ids
    std::unique_ptr<ControllerClient> fetch_client, report_client;
    std::unique_ptr<ReportPoster> poster;
    std::optional<std::chrono::milliseconds> start_splay;
    if (!config.spec.empty()) {
        start_splay = std::chrono::milliseconds(0);  // no controller to spare
        FileSpecSource file(absolute_path(config.spec));
        auto first = file.fetch();
        if (!first) {
            io.err << "nodeform-agent run: " << first.message() << "\n";
            return exit_code::config;
        }
        identity = first->spec.value("identity", "");
        source = std::make_unique<FileSpecSource>(std::move(file));
    } else {
        auto seed =
            config.seed.empty() ? load_seed(**root_fs, std::nullopt) : load_seed(**host_fs, absolute_path(config.seed));
        if (!seed) {
            io.err << "nodeform-agent run: " << seed.message() << "\n";
            return exit_code::config;
        }
        Seed s = seed->seed;
        if (!config.controller_url.empty()) s.controller_url = config.controller_url;
        identity = s.identity;
        for (auto* http : {&fetch_http, &report_http}) {
            auto made = make_http_transport(controller_http_options(s));
            if (!made) {
                io.err << "nodeform-agent run: cannot set up HTTPS to " << s.controller_url << ": " << made.message()
                       << "\n";
                return exit_code::config;
            }
            *http = std::move(*made);
        }
        ClientOptions fetch_options;
        // Re-enrollment reads the seed again from where it came from (a new seed file, a re-provisioned SMBIOS).
        fetch_options.reload_seed = [&config, root = root_fs->get(), host = host_fs->get()]() -> Result<Seed> {
            auto again =
                config.seed.empty() ? load_seed(*root, std::nullopt) : load_seed(*host, absolute_path(config.seed));
            if (!again) return again.error();
            return again->seed;
        };
        fetch_options.state_dir = config.state_dir;
        fetch_options.random = random.get();
        fetch_options.backoff.attempts = 3;
        fetch_options.backoff.initial = std::min<std::chrono::milliseconds>(config.retry_base, std::chrono::seconds(1));
        fetch_options.backoff.max = std::min<std::chrono::milliseconds>(config.retry_cap, std::chrono::seconds(10));
        fetch_client = std::make_unique<ControllerClient>(*fetch_http, **root_fs, *logger, s, fetch_options);
        ClientOptions report_options;
        report_options.state_dir = config.state_dir;
        report_options.random = random.get();
        report_options.backoff.attempts = 1;
        report_options.may_rotate = false;  // the fetch client rotates; this one re-reads the stored credential
        report_client = std::make_unique<ControllerClient>(*report_http, **root_fs, *logger, s, report_options);
        // The first turn after a restart waits within the splay of the last good spec (docs/daemon.md); a first
        // boot (no spec yet) starts at once: provisioning paces first boots, and boot-to-ready is the goal.
        start_splay = std::chrono::milliseconds(0);
        if (auto cached = fetch_client->cached_spec(); cached && cached->has_value()) {
            start_splay.reset();
            const auto& apply = (*cached)->spec.value("apply", nlohmann::json::object());
            if (apply.is_object() && apply.contains("splay_s") && apply["splay_s"].is_number() &&
                apply["splay_s"].get<double>() >= 0)
                start_splay =
                    std::chrono::milliseconds(static_cast<std::int64_t>(apply["splay_s"].get<double>() * 1000));
        }
        auto controller_source = std::make_unique<ControllerSpecSource>(*fetch_client, identity);
        poster = std::make_unique<ClientReportPoster>(*report_client, *controller_source);
        source = std::move(controller_source);
    }

    PosixProcessRunner runner;
    PosixProcessRunner health_runner(PosixProcessRunnerOptions{.kill_grace = std::chrono::seconds(1)});
    SystemClock clock;
    ConvergeOptions converge_options;
    converge_options.root = config.root;
    converge_options.state_dir = config.state_dir;
    converge_options.allow_platform_ready = true;  // the daemon runs a node, never a template being baked
    ConvergeEngine converge_engine(runner, **root_fs, clock, *logger, *random, converge_options);
    ConvergeRunEngine engine(converge_engine, state_host + "/lock");
    SystemHealthProber prober(health_runner, clock, **root_fs);
    auto notifier = make_systemd_notifier();
    // Drift in a second: inotify on what the spec manages; unit states asked for only on a live system
    // (an offline root's units are not the running manager's).
    std::unique_ptr<ChangeWatcher> watcher;
    if (auto made = make_inotify_watcher((*root_fs)->root()); made) {
        watcher = std::move(*made);
    } else {
        logger->warning("drift is seen at the next run only: " + made.message());
    }
    PosixProcessRunner unit_runner(PosixProcessRunnerOptions{.kill_grace = std::chrono::seconds(1)});
    const bool live = (*root_fs)->root() == "/";

    DaemonOptions options;
    options.identity = identity;
    options.state_file = state_host + "/daemon.json";
    options.interval = config.interval;
    options.splay = config.splay;
    options.start_splay = config.splay ? config.splay : start_splay;
    options.stop_timeout = config.stop_timeout;
    options.retry_base = config.retry_base;
    options.retry_cap = config.retry_cap;
    options.max_turns = config.max_turns;
    options.already_ready = read_platform_ready(**root_fs, config.state_dir).has_value();

    logger->info("nodeform-agent " + std::string(NODEFORM_VERSION) + " starting for " + identity +
                     (options.already_ready ? " (platform-ready)" : " (converging)"),
                 {{"NODEFORM_IDENTITY", identity}});
    DaemonStats stats;
    int code = 0;
    {
        Daemon d(options, DaemonDeps{clock, *logger, *notifier, *source, engine, prober, poster.get(), **spool, *random,
                                     watcher.get(), live ? &unit_runner : nullptr});
        code = d.run();
        stats = d.stats();
        if (stats.abandoned_work) {
            // A worker is still inside a run past the stop timeout: leave now, state and spool are on disk.
            std::fflush(nullptr);
            std::_Exit(code);
        }
    }
    return code;
}

}  // namespace nodeform::agent
