// nodeform-agent apply | plan | wait-ready | seed: one converge run from a spec file or the seed.
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <ostream>
#include <sstream>
#include <thread>

#include "nodeform/agent/cli.hpp"
#include "nodeform/agent/controller_client.hpp"
#include "nodeform/agent/converge.hpp"
#include "nodeform/agent/system/run_lock.hpp"
#include "nodeform/agent/validate.hpp"
#include "nodeform/args.hpp"
#include "nodeform/canonical_json.hpp"
#include "nodeform/duration.hpp"
#include "nodeform/json_limits.hpp"
#include "nodeform/posix_process_runner.hpp"

namespace nodeform::agent {
namespace {

constexpr const char* kConvergeHelp =
    R"(usage: nodeform-agent %s [--spec FILE | --seed FILE] [--root DIR] [--state-dir DIR] [--json]

%s

Where the spec comes from:
  --spec FILE            a resolved spec (nodeform-controller render); no controller is contacted
  --seed FILE            the identity seed (YAML or nf1:...); default /etc/nodeform/seed.yaml, then the
                         SMBIOS serial. The spec is fetched from the seed's controller (last good spec
                         from STATE_DIR/spec.json when it cannot be reached).
Options:
  --root DIR             converge an offline root filesystem (template baking, tests): apt/dpkg run in
                         chroot DIR, accounts via --root, services are only (dis)enabled, no running
                         hostname, and no platform-ready marker is written
  --state-dir DIR        state inside the root (default /var/lib/nodeform): last-run.json,
                         platform-ready, backup/, credential, spec.json, lock
  --json                 print the run report (docs/protocol.md) as JSON instead of progress lines
  --dpkg-lock-timeout D  how long apt waits for the dpkg lock (default 5m)
  --lock-timeout D       how long to wait for another nodeform-agent run (default 10m; 0 = do not wait)
  --no-report            (apply with a controller) do not send the report
  --node-root            with --root: the root is a node's own (a container, a demo), not a template
                         being baked, so the platform-ready marker is written
  --verbose | --debug    more log lines on stderr
Durations: 90s, 5m, 1h, 500ms or plain seconds.
Exit codes: %s
)";

struct Common {
    ParsedArgs args;
    std::string root;
    std::string state_dir;
    std::unique_ptr<Filesystem> root_fs;
    std::unique_ptr<Filesystem> host_fs;
    std::unique_ptr<Logger> logger;
};

std::string seconds_text(std::chrono::milliseconds d) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f s", static_cast<double>(d.count()) / 1000.0);
    return buf;
}

std::string seconds_text(double s) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.2f s", s);
    return buf;
}

// Loads the resolved spec from --spec FILE (host path).
Result<nlohmann::json> read_spec_file(Filesystem& host, const std::string& path) {
    auto text = host.read(path, 64 * 1024 * 1024);
    if (!text) return make_error("cannot read the spec: " + text.message());
    auto parsed = parse_json_bounded(*text, {text->size()});
    if (!parsed) return make_error(path + ": " + parsed.message());
    nlohmann::json j = std::move(*parsed);
    if (!j.is_object()) {
        return make_error(path + ": not a JSON object (expected the output of nodeform-controller render)");
    }
    if (auto st = check_spec_schema(j, path); !st) return st.error();
    // A spec rendered for reading has its secrets replaced: converging it would install "[REDACTED]".
    for (const auto& p : j.value("secret_paths", nlohmann::json::array())) {
        if (!p.is_string()) continue;
        try {
            nlohmann::json::json_pointer ptr(p.get<std::string>());
            if (j.contains(ptr) && j[ptr] == "[REDACTED]") {
                return make_error(path + ": the secret at " + p.get<std::string>() +
                                  " is redacted; render the spec with its secrets for converging");
            }
        } catch (const nlohmann::json::exception&) {
        }
    }
    return j;
}

std::string absolute(const std::string& path) {
    if (path.empty() || path[0] == '/') return path;
    char cwd[4096];
    if (::getcwd(cwd, sizeof cwd) == nullptr) return path;
    return std::string(cwd) + "/" + path;
}

// Parses the options shared by apply and plan; returns an exit code when the command should stop.
std::optional<int> setup(const std::vector<std::string>& argv, CliIo io, const char* name, const char* what,
                         const char* codes, Common& c) {
    ArgSpec spec{{"spec", "seed", "root", "state-dir", "dpkg-lock-timeout", "lock-timeout"},
                 {"json", "no-report", "verbose", "debug", "node-root"}};
    auto parsed = parse_args(argv, spec);
    if (!parsed) {
        io.err << "nodeform-agent " << name << ": " << parsed.message() << "\n";
        return exit_code::usage;
    }
    c.args = *parsed;
    if (c.args.has("help")) {
        char buf[4096];
        std::snprintf(buf, sizeof buf, kConvergeHelp, name, what, codes);
        io.out << buf;
        return exit_code::ok;
    }
    if (!c.args.positionals.empty()) {
        io.err << "nodeform-agent " << name << ": unexpected argument '" << c.args.positionals[0] << "'\n";
        return exit_code::usage;
    }
    if (c.args.get("spec") && c.args.get("seed")) {
        io.err << "nodeform-agent " << name << ": give --spec or --seed, not both\n";
        return exit_code::usage;
    }
    for (const char* key : {"dpkg-lock-timeout", "lock-timeout"}) {
        if (auto v = c.args.get(key); v && !parse_duration(*v)) {
            io.err << "nodeform-agent " << name << ": --" << key << ": '" << *v
                   << "' is not a duration (e.g. 90s, 5m)\n";
            return exit_code::usage;
        }
    }
    c.root = absolute(c.args.get_or("root", ""));
    c.state_dir = c.args.get_or("state-dir", "/var/lib/nodeform");
    if (c.state_dir.empty() || c.state_dir[0] != '/') {
        io.err << "nodeform-agent " << name << ": --state-dir must be an absolute path (inside the root)\n";
        return exit_code::usage;
    }
    c.logger = make_default_logger("nodeform-agent", c.args.has("debug")     ? LogLevel::debug
                                                     : c.args.has("verbose") ? LogLevel::info
                                                                             : LogLevel::warning);
    auto root_fs = make_root_filesystem(c.root);
    if (!root_fs) {
        io.err << "nodeform-agent " << name << ": --root: " << root_fs.message() << "\n";
        return exit_code::config;
    }
    c.root_fs = std::move(*root_fs);
    auto host_fs = make_root_filesystem("/");
    if (!host_fs) {
        io.err << "nodeform-agent " << name << ": " << host_fs.message() << "\n";
        return exit_code::runtime;
    }
    c.host_fs = std::move(*host_fs);
    return std::nullopt;
}

struct Obtained {
    std::unique_ptr<Random> random = make_system_random();  // the client's jitter and the run's report id
    nlohmann::json spec;
    std::optional<LoadedSeed> seed;
    std::unique_ptr<HttpTransport> http;
    std::unique_ptr<ControllerClient> client;
};

// The spec from --spec, or from the controller named by the seed; prints the error and returns an exit code.
std::variant<Obtained, int> obtain_spec(Common& c, CliIo io, const char* name) {
    Obtained o;
    if (auto file = c.args.get("spec")) {
        auto spec = read_spec_file(*c.host_fs, absolute(*file));
        if (!spec) {
            io.err << "nodeform-agent " << name << ": " << spec.message() << "\n";
            return exit_code::config;
        }
        o.spec = std::move(*spec);
        return o;
    }
    std::optional<std::string> seed_file = c.args.get("seed");
    auto seed = seed_file ? load_seed(*c.host_fs, absolute(*seed_file)) : load_seed(*c.root_fs, std::nullopt);
    if (!seed) {
        io.err << "nodeform-agent " << name << ": " << seed.message() << "\n";
        return exit_code::config;
    }
    o.seed = *seed;
    auto http = make_http_transport(controller_http_options(seed->seed));
    if (!http) {
        io.err << "nodeform-agent " << name << ": cannot set up HTTPS to " << seed->seed.controller_url << ": "
               << http.message() << "\n";
        return exit_code::config;
    }
    o.http = std::move(*http);
    ClientOptions options;
    options.state_dir = c.state_dir;
    options.backoff.attempts = 4;
    options.backoff.max = std::chrono::seconds(15);
    options.random = o.random.get();
    o.client = std::make_unique<ControllerClient>(*o.http, *c.root_fs, *c.logger, seed->seed, options);
    auto fetched = o.client->fetch_spec();
    if (!fetched) {
        io.err << "nodeform-agent " << name << ": " << fetched.message() << "\n";
        return exit_code::runtime;
    }
    if (!fetched->warning.empty()) io.err << "nodeform-agent " << name << ": warning: " << fetched->warning << "\n";
    if (fetched->spec.value("identity", "") != seed->seed.identity) {
        io.err << "nodeform-agent " << name << ": the controller sent the spec of '"
               << fetched->spec.value("identity", "") << "' to " << seed->seed.identity
               << "; refusing to converge it\n";
        return exit_code::runtime;
    }
    o.spec = std::move(fetched->spec);
    return o;
}

void print_line(std::ostream& out, const ResourceResult& r) {
    if (r.status == ResourceStatus::unchanged) return;
    const char* label = to_string(r.status);
    char head[64];
    std::snprintf(head, sizeof head, "%-9s ", label);
    out << head << r.id;
    if (!r.message.empty()) out << ": " << r.message;
    if (r.duration.count() >= 100) out << " (" << seconds_text(r.duration) << ")";
    out << "\n";
    out.flush();
}

std::string summary(const RunReport& report, const char* verb) {
    auto c = report.counts();
    std::ostringstream s;
    s << verb << ": " << c.total << " resources";
    if (c.changed) s << ", " << c.changed << " changed";
    if (c.drifted) s << ", " << c.drifted << " to change";
    if (c.failed) s << ", " << c.failed << " failed";
    if (c.skipped) s << ", " << c.skipped << " skipped";
    s << ", " << c.unchanged << " unchanged in "
      << seconds_text(report.timings.count("total") ? report.timings.at("total") : 0.0);
    return s.str();
}

// converge() returns this for a plan with changes pending; cmd_plan maps it to 2 (not to be confused with usage).
constexpr int kChangesPending = 100;

int converge(const std::vector<std::string>& argv, CliIo io, RunMode mode) {
    const char* name = mode == RunMode::apply ? "apply" : "plan";
    Common c;
    const char* what = mode == RunMode::apply ? "Converge the machine (or --root DIR) to its spec once."
                                              : "Show what apply would change; change nothing.";
    const char* codes = mode == RunMode::apply
                            ? "0 every resource converged, 1 a resource failed, 2 usage, 3 spec/seed "
                              "unusable, 4 runtime (controller unreachable without a cached spec, lock)"
                            : "0 nothing to change, 2 changes pending, 1 a resource cannot be checked "
                              "or the spec is unusable";
    if (auto stop = setup(argv, io, name, what, codes, c)) return *stop;
    const bool json = c.args.has("json");

    // One run at a time (plan too: it must not read a half-applied state).
    std::optional<RunLock> lock;
    {
        auto timeout = parse_duration(c.args.get_or("lock-timeout", "10m")).value();
        auto lock_dir = c.root_fs->pin_directory(c.state_dir);
        auto acquired = lock_dir ? RunLock::acquire(*lock_dir + "/lock", timeout) : Result<RunLock>(lock_dir.error());
        if (acquired) {
            lock = std::move(*acquired);
        } else if (mode == RunMode::apply || acquired.message().rfind("another", 0) == 0) {
            io.err << "nodeform-agent " << name << ": " << acquired.message() << "\n";
            return mode == RunMode::apply ? exit_code::runtime : exit_code::failure;
        }
    }

    auto obtained = obtain_spec(c, io, name);
    if (std::holds_alternative<int>(obtained)) return std::get<int>(obtained);
    Obtained& o = std::get<Obtained>(obtained);

    PosixProcessRunner runner;
    SystemClock clock;
    ConvergeOptions options;
    options.root = c.root;
    options.state_dir = c.state_dir;
    options.allow_platform_ready = c.root.empty() || c.root == "/" || c.args.has("node-root");
    if (auto d = c.args.get("dpkg-lock-timeout")) {
        options.dpkg_lock_timeout = std::chrono::duration_cast<std::chrono::seconds>(*parse_duration(*d));
    }
    if (!json) options.on_result = [&](const ResourceResult& r) { print_line(io.out, r); };
    ConvergeEngine engine(runner, *c.root_fs, clock, *c.logger, *o.random, options);
    RunReport report = engine.run(o.spec, mode);
    auto body = to_report_json(report);

    if (mode == RunMode::apply && o.client && !c.args.has("no-report")) {
        if (auto sent = o.client->post_report(body); !sent.ok()) {
            io.err << "nodeform-agent apply: warning: the report was not delivered: " << sent.message << "\n";
        }
    }
    if (json) {
        io.out << body.dump(2) << "\n";
    } else {
        if (!report.error.empty()) io.err << "nodeform-agent " << name << ": " << report.error << "\n";
        io.out << summary(report, mode == RunMode::apply ? "apply" : "plan") << "\n";
        if (report.reached_platform_ready) io.out << "platform ready (" << report.spec_digest << ")\n";
    }
    if (mode == RunMode::apply) return report.ok() ? exit_code::ok : exit_code::failure;
    if (!report.error.empty() || report.counts().failed > 0 || report.counts().skipped > 0) return exit_code::failure;
    return report.changes_pending() ? kChangesPending : exit_code::ok;
}

}  // namespace

int cmd_apply(const std::vector<std::string>& args, CliIo io) {
    return converge(args, io, RunMode::apply);
}

int cmd_plan(const std::vector<std::string>& args, CliIo io) {
    int code = converge(args, io, RunMode::check);
    // plan reserves 2 for "changes pending": every other problem is 1.
    if (code == exit_code::usage) {
        bool help = false;
        for (const auto& a : args)
            help = help || a == "--help" || a == "-h";
        if (!help) return exit_code::failure;
    }
    if (code == exit_code::config || code == exit_code::runtime) return exit_code::failure;
    if (code == kChangesPending) return 2;
    return code;
}

int cmd_wait_ready(const std::vector<std::string>& argv, CliIo io) {
    ArgSpec spec{{"timeout", "root", "state-dir"}, {"json"}};
    auto parsed = parse_args(argv, spec);
    if (!parsed) {
        io.err << "nodeform-agent wait-ready: " << parsed.message() << "\n";
        return exit_code::usage;
    }
    if (parsed->has("help")) {
        io.out << "usage: nodeform-agent wait-ready [--timeout DURATION] [--root DIR] [--state-dir DIR] [--json]\n\n"
                  "Wait until the first fully successful converge has written STATE_DIR/platform-ready\n"
                  "(default timeout 15m; 0 checks once). For cloud-init runcmd and scripts.\n"
                  "Exit codes: 0 platform ready, 1 not ready when the timeout expired, 2 usage.\n";
        return exit_code::ok;
    }
    auto timeout = parse_duration(parsed->get_or("timeout", "15m"));
    if (!timeout) {
        io.err << "nodeform-agent wait-ready: --timeout: not a duration (e.g. 90s, 15m)\n";
        return exit_code::usage;
    }
    auto fs = make_root_filesystem(absolute(parsed->get_or("root", "")));
    if (!fs) {
        io.err << "nodeform-agent wait-ready: " << fs.message() << "\n";
        return exit_code::usage;
    }
    const std::string state_dir = parsed->get_or("state-dir", "/var/lib/nodeform");
    const auto deadline = std::chrono::steady_clock::now() + *timeout;
    while (true) {
        if (auto ready = read_platform_ready(**fs, state_dir)) {
            if (parsed->has("json")) {
                io.out << nlohmann::json({{"platform_ready", true},
                                          {"reached_at", ready->reached_at},
                                          {"spec_digest", ready->spec_digest}})
                              .dump()
                       << "\n";
            } else {
                io.out << "platform ready since " << ready->reached_at << " (spec " << ready->spec_digest << ")\n";
            }
            return exit_code::ok;
        }
        if (std::chrono::steady_clock::now() >= deadline) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
    if (parsed->has("json")) io.out << nlohmann::json({{"platform_ready", false}}).dump() << "\n";
    io.err << "nodeform-agent wait-ready: not platform-ready after " << parsed->get_or("timeout", "15m") << " ("
           << (*fs)->host_path(state_dir + "/platform-ready") << " is missing); see the last run in "
           << (*fs)->host_path(state_dir + "/last-run.json") << " or journalctl -u nodeform-agent\n";
    return exit_code::failure;
}

int cmd_seed(const std::vector<std::string>& argv, CliIo io) {
    const char* usage =
        "usage: nodeform-agent seed show [--seed FILE] [--json]\n"
        "       nodeform-agent seed encode --identity NAME --controller-url URL --token-file FILE\n"
        "                                  --ca-fingerprint HEX [--format compact|yaml]\n\n"
        "show    prints the seed the agent would use (the token is never shown)\n"
        "encode  prints a seed: the compact nf1: form for the SMBIOS serial (default) or seed.yaml\n";
    if (argv.empty()) {
        io.err << usage;
        return exit_code::usage;
    }
    if (argv[0] == "--help" || argv[0] == "-h") {
        io.out << usage;
        return exit_code::ok;
    }
    std::vector<std::string> rest(argv.begin() + 1, argv.end());
    if (argv[0] == "show") {
        int code = 0;
        auto parsed = parse_command_args(rest, ArgSpec{{"seed", "root"}, {"json"}}, "nodeform-agent seed show", usage,
                                         io.out, io.err, code);
        if (!parsed) return code;
        auto host = make_root_filesystem("/");
        auto root = make_root_filesystem(absolute(parsed->get_or("root", "")));
        if (!host || !root) {
            io.err << "nodeform-agent seed show: " << (!host ? host.message() : root.message()) << "\n";
            return exit_code::usage;
        }
        auto file = parsed->get("seed");
        auto seed = file ? load_seed(**host, absolute(*file)) : load_seed(**root, std::nullopt);
        if (!seed) {
            io.err << "nodeform-agent seed show: " << seed.message() << "\n";
            return exit_code::config;
        }
        if (parsed->has("json")) {
            io.out << nlohmann::json({{"identity", seed->seed.identity},
                                      {"controller_url", seed->seed.controller_url},
                                      {"token", "[REDACTED]"},
                                      {"ca_fingerprint", seed->seed.ca_fingerprint},
                                      {"source", seed->source}})
                          .dump(2)
                   << "\n";
        } else {
            io.out << "identity:       " << seed->seed.identity << "\n"
                   << "controller_url: " << seed->seed.controller_url << "\n"
                   << "token:          [REDACTED] (" << seed->seed.token.size() << " characters)\n"
                   << "ca_fingerprint: " << seed->seed.ca_fingerprint << "\n"
                   << "source:         " << seed->source << "\n";
        }
        return exit_code::ok;
    }
    if (argv[0] == "encode") {
        int code = 0;
        auto parsed = parse_command_args(
            rest, ArgSpec{{"identity", "controller-url", "token-file", "ca-fingerprint", "format"}, {}},
            "nodeform-agent seed encode", usage, io.out, io.err, code);
        if (!parsed) return code;
        for (const char* key : {"identity", "controller-url", "token-file", "ca-fingerprint"}) {
            if (!parsed->get(key)) {
                io.err << "nodeform-agent seed encode: --" << key << " is required\n";
                return exit_code::usage;
            }
        }
        std::string format = parsed->get_or("format", "compact");
        if (format != "compact" && format != "yaml") {
            io.err << "nodeform-agent seed encode: --format must be compact or yaml\n";
            return exit_code::usage;
        }
        auto host = make_root_filesystem("/");
        if (!host) {
            io.err << "nodeform-agent seed encode: " << host.message() << "\n";
            return exit_code::runtime;
        }
        auto token = (*host)->read(absolute(*parsed->get("token-file")), 4096);
        if (!token) {
            io.err << "nodeform-agent seed encode: --token-file: " << token.message() << "\n";
            return exit_code::config;
        }
        std::string t = *token;
        while (!t.empty() && (t.back() == '\n' || t.back() == '\r' || t.back() == ' '))
            t.pop_back();
        Seed seed{*parsed->get("identity"), *parsed->get("controller-url"), t, *parsed->get("ca-fingerprint")};
        if (auto st = validate_seed(seed); !st) {
            io.err << "nodeform-agent seed encode: " << st.message() << "\n";
            return exit_code::config;
        }
        if (format == "compact") {
            io.out << encode_seed_compact(seed) << "\n";
        } else {
            io.out << "identity: " << seed.identity << "\ncontroller_url: " << seed.controller_url
                   << "\ntoken: " << seed.token << "\nca_fingerprint: " << seed.ca_fingerprint << "\n";
        }
        return exit_code::ok;
    }
    io.err << "nodeform-agent seed: unknown subcommand '" << argv[0] << "'\n\n" << usage;
    return exit_code::usage;
}

}  // namespace nodeform::agent
