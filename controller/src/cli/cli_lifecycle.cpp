// node plan / create / destroy / receipts: the Proxmox VE lifecycle from the command line.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <iomanip>
#include <map>
#include <mutex>
#include <ostream>
#include <sstream>

#include "lifecycle_wiring.hpp"
#include "nodeform/args.hpp"
#include "nodeform/controller/cli.hpp"
#include "nodeform/controller/config.hpp"
#include "nodeform/controller/lifecycle/lifecycle.hpp"
#include "nodeform/controller/lifecycle/reconciler.hpp"
#include "nodeform/controller/store/store.hpp"
#include "nodeform/controller/store/store_location.hpp"
#include "nodeform/duration.hpp"
#include "nodeform/site/site.hpp"
#include "nodeform/tls.hpp"

namespace nodeform::controller {
namespace {

namespace lc = lifecycle;
using json = nlohmann::json;

constexpr const char* kCommon = R"(
Common options:
  --site DIR                 the site configuration directory (required)
  --state DIR                the controller state directory with nodeform.db (required)
  --store URL                the controllers' PostgreSQL (postgresql://USER@HOST/DB) instead of STATE/nodeform.db
  --store-password-file FILE its password (or PGPASSWORD, ~/.pgpass; never in the URL here)
  --endpoint NAME=URL        use URL for the site's Proxmox endpoint NAME (e.g. a test stand-in on http://127.0.0.1)
  --controller-url URL       controller URL put into the seed (default: site.yaml controller_url)
  --ca-fingerprint HEX       controller CA SHA-256 for the seed (default: from STATE/tls/ca.pem)
  --json                     machine-readable output
  --help                     this text
)";

constexpr const char* kPlanUsage = R"(usage: nodeform-controller node plan NAME --site DIR --state DIR [--json]

Dry run: the gates' verdicts (hostname policy, host of the node's site, template, storage, bridge, VMID range
and availability, seed size) and the exact Proxmox API calls 'node create' would make. Changes nothing.
Exit 0 when every gate passes, 1 when one refuses.
)";

constexpr const char* kCreateUsage = R"(usage: nodeform-controller node create NAME... --site DIR --state DIR [OPTIONS]

Provisions nodes on Proxmox VE (or as local QEMU VMs: provider qemu): gates, clone, configure (sizing, cloud-init, seed in smbios1), resize, start,
then waits for the guest agent and the node's platform-ready report. Re-running resumes where it stopped,
reading Proxmox's real state (never a second clone).

While a 'nodeform-controller serve' runs on the same state (its lifecycle reconciler is live), the work is
queued for it and the command returns at once (exit 0); --wait follows it until the node is active or failed.
With no controller serving, or with --here, this process does the work itself (the node's lease held).

Options:
  --wait                     queued: follow the controller's progress until active or failed
  --here                     do the work in this process even when a controller serves
  --parallel N               nodes provisioned at the same time (default 4)
  --agent-timeout DURATION   wait for the QEMU guest agent (default 10m)
  --report-timeout DURATION  wait for the platform-ready report (default 30m; 0 = don't wait)
  --token-ttl DURATION       enrollment token lifetime (default 24h)
  --keep-failed              do not roll back a VM that failed before it booted
)";

constexpr const char* kDestroyUsage = R"(usage: nodeform-controller node destroy NAME --site DIR --state DIR [OPTIONS]

Decommissions a node by its decommission policy: requires_final_backup runs vzdump and waits for it;
requires_migration_first refuses while stacks are assigned; allow_immediate_destroy stops and destroys
with purge. Then revokes the node's credential.

Queued for a serving controller like 'node create' (--wait, --here the same); --abandon always runs here.

Options:
  --wait                     queued: follow the controller's progress until decommissioned or failed
  --here                     do the work in this process even when a controller serves
  --backup-storage NAME      vzdump target storage (default: local)
  --abandon                  forget the node without touching Proxmox (state: abandoned)
)";

constexpr const char* kReceiptsUsage = R"(usage: nodeform-controller node receipts NAME --state DIR [--json]

Every lifecycle step's receipt: inputs, API calls with UPIDs and exit statuses, outputs, timestamps.
)";

ArgSpec common_spec() {
    ArgSpec s;
    s.valued = {"site",           "state",          "endpoint",      "controller-url",
                "ca-fingerprint", "parallel",       "agent-timeout", "report-timeout",
                "token-ttl",      "backup-storage", "store",         "store-password-file"};
    s.flags = {"json", "help", "keep-failed", "abandon", "wait", "here"};
    return s;
}

struct Env {
    site::Site site;
    std::unique_ptr<Store> store;
    std::unique_ptr<lc::LifecycleStore> lifecycle_store;
    SystemClock clock;
    LifecycleWiring wiring;
    std::unique_ptr<Logger> logger;
    std::mutex out_mutex;
    std::unique_ptr<lc::Lifecycle> lifecycle;
};

// Where --state / --store keep the stores, by serve's rules (a password in --store is refused).
Result<StoreLocation> location_of(const ParsedArgs& args) {
    auto config = load_controller_config(args, "");
    if (!config) return config.error();
    return store_location(*config);
}

bool wants_help(const std::vector<std::string>& args) {
    for (const auto& a : args) {
        if (a == "--help" || a == "-h") return true;
    }
    return false;
}

// Loads site + state and wires the lifecycle. Returns an exit code != 0 on failure (message printed).
int setup(const ParsedArgs& args, CliIo io, const char* usage, Env& env, bool need_site = true) {
    auto state = args.get("state");
    if (!state || (need_site && !args.get("site"))) {
        io.err << "nodeform-controller: --site DIR and --state DIR are required\n\n" << usage << kCommon;
        return exit_code::usage;
    }
    if (need_site) {
        auto loaded = site::load_site(*args.get("site"));
        if (!loaded.ok()) {
            for (const auto& d : loaded.diagnostics)
                io.err << d.to_string() << "\n";
            io.err << "nodeform-controller: the site does not load; fix it (see 'nodeform-controller validate')\n";
            return exit_code::config;
        }
        env.site = std::move(*loaded.site);
        if (auto ep = args.get("endpoint")) {
            if (auto st = override_endpoints(env.site, {*ep}); !st) {
                io.err << "nodeform-controller: " << st.message() << "\n";
                return exit_code::usage;
            }
        }
    }
    auto where = location_of(args);
    if (!where) {
        io.err << "nodeform-controller: " << where.message() << "\n";
        return exit_code::config;
    }
    auto store = open_store(*where);
    if (!store) {
        io.err << "nodeform-controller: " << store.message() << "\n";
        return exit_code::runtime;
    }
    env.store = std::move(*store);
    auto ls = open_lifecycle_store(*where);
    if (!ls) {
        io.err << "nodeform-controller: " << ls.message() << "\n";
        return exit_code::runtime;
    }
    env.lifecycle_store = std::move(*ls);
    env.logger = make_default_logger("nodeform-controller", LogLevel::warning);

    lc::LifecycleOptions opt;
    opt.controller_url = args.get_or("controller-url", "");
    if (auto fp = args.get("ca-fingerprint")) {
        opt.ca_fingerprint = tls::normalize_fingerprint(*fp);
        if (opt.ca_fingerprint.empty()) {
            io.err << "nodeform-controller: --ca-fingerprint is not a SHA-256 fingerprint (64 hex digits)\n";
            return exit_code::usage;
        }
    } else if (need_site) {
        auto fp2 = tls::certificate_file_fingerprint(tls::pki_paths(*state + "/tls").ca_cert);
        if (!fp2) {
            io.err << "nodeform-controller: no controller CA in " << *state
                   << "/tls (start 'nodeform-controller serve' once, or pass --ca-fingerprint)\n";
            return exit_code::config;
        }
        opt.ca_fingerprint = *fp2;
    }
    for (auto [key, field] :
         {std::pair{"agent-timeout", &opt.agent_timeout}, std::pair{"report-timeout", &opt.report_timeout}}) {
        if (auto v = args.get(key)) {
            auto d = parse_duration(*v);
            if (!d) {
                io.err << "nodeform-controller: --" << key << ": '" << *v << "' is not a duration (30s, 5m, 2h)\n";
                return exit_code::usage;
            }
            *field = *d;
        }
    }
    if (auto v = args.get("token-ttl")) {
        auto d = parse_duration(*v);
        if (!d || d->count() < 1000) {
            io.err << "nodeform-controller: --token-ttl: '" << *v << "' is not a duration of at least 1s\n";
            return exit_code::usage;
        }
        opt.token_ttl = std::chrono::duration_cast<std::chrono::seconds>(*d);
    }
    opt.backup_storage = args.get_or("backup-storage", "local");
    opt.rollback_on_failure = !args.has("keep-failed");

    lc::LifecycleDeps deps = lifecycle_deps(*env.store, *env.lifecycle_store, env.clock, env.logger.get(), env.wiring);
    deps.progress = [&env, io](const lc::ProgressEvent& e) {
        std::lock_guard<std::mutex> lock(env.out_mutex);
        char elapsed[32];
        std::snprintf(elapsed, sizeof elapsed, "[%7.1fs]", e.elapsed_s);
        io.out << elapsed << " " << std::left << std::setw(16) << e.identity << " " << std::setw(14) << e.step
               << (e.failed ? "FAILED " : "") << e.detail << "\n";
        io.out.flush();
    };
    env.lifecycle = std::make_unique<lc::Lifecycle>(deps, opt);
    return exit_code::ok;
}

Result<ParsedArgs> parse(const std::vector<std::string>& args, CliIo io, const char* usage) {
    auto parsed = parse_args(args, common_spec());
    if (!parsed) io.err << "nodeform-controller: " << parsed.message() << "\n\n" << usage << kCommon;
    return parsed;
}

json result_json(const lc::RunResult& r) {
    return {{"identity", r.identity}, {"state", lc::to_string(r.state)}, {"ok", r.ok}, {"message", r.message}};
}

// The start of node plan / create / destroy: --help, the options, how many NAMEs (exactly one, or at least
// one). An exit code when the command ends here.
std::optional<int> start(const std::vector<std::string>& args, CliIo io, const char* usage,
                         const std::string& names_rule, bool exactly_one, ParsedArgs& out) {
    if (wants_help(args)) {
        io.out << usage << kCommon;
        return exit_code::ok;
    }
    auto parsed = parse(args, io, usage);
    if (!parsed) return exit_code::usage;
    if (exactly_one ? parsed->positionals.size() != 1 : parsed->positionals.empty()) {
        io.err << "nodeform-controller: " << names_rule << "\n\n" << usage;
        return exit_code::usage;
    }
    out = std::move(*parsed);
    return std::nullopt;
}

// A serving controller's reconciler (its holder in `holder`), unless --here.
bool queue_for_controller(const ParsedArgs& args, Env& env, std::string& holder) {
    if (args.has("here")) return false;
    auto serving = lc::reconciler_serving(*env.lifecycle_store, env.clock, &holder);
    return serving && *serving;
}

// Queues create (or destroy) of `names` for the serving controller; with --wait follows the records until each
// is done (active / decommissioned) or failed, printing every state or step change.
int queue_and_follow(const ParsedArgs& args, CliIo io, Env& env, const std::vector<std::string>& names, bool destroy,
                     const std::string& holder) {
    for (const auto& name : names) {
        auto st = destroy ? env.lifecycle->queue_destroy(name) : env.lifecycle->queue_create(name);
        if (!st) {
            io.err << "nodeform-controller: " << st.message() << "\n";
            return exit_code::failure;
        }
        if (!args.has("json")) {
            io.out << "queued  " << name << ": the serving controller (" << holder << ") "
                   << (destroy ? "decommissions" : "provisions") << " it; follow with 'nodeform-controller node show "
                   << name << "' or --wait\n";
        }
    }
    io.out.flush();
    const lc::State goal = destroy ? lc::State::decommissioned : lc::State::active;
    std::map<std::string, lc::NodeRecord> last;
    const auto t0 = env.clock.steady_now();
    for (;;) {
        bool all_done = true;
        for (const auto& name : names) {
            auto rec = env.lifecycle_store->get(name);
            if (!rec || !*rec) {
                all_done = false;
                continue;
            }
            const auto& r = **rec;
            auto& seen = last[name];
            if (args.has("wait") && !args.has("json") && (seen.state != r.state || seen.step != r.step)) {
                char elapsed[32];
                std::snprintf(elapsed, sizeof elapsed, "[%7.1fs]",
                              std::chrono::duration<double>(env.clock.steady_now() - t0).count());
                io.out << elapsed << " " << std::left << std::setw(16) << name << " " << std::setw(14)
                       << (r.step.empty() ? "-" : r.step) << lc::to_string(r.state)
                       << (r.state == lc::State::failed ? ": " + r.failed_step + ": " + r.reason : "") << "\n";
                io.out.flush();
            }
            seen = r;
            if (r.state != goal && r.state != lc::State::failed) all_done = false;
        }
        if (!args.has("wait") || all_done) break;
        env.clock.sleep_for(std::chrono::milliseconds(500));
    }
    bool all_ok = true;
    json out = json::array();
    for (const auto& name : names) {
        const auto& r = last[name];
        bool ok = !args.has("wait") || r.state == goal;
        all_ok = all_ok && ok;
        out.push_back({{"identity", name},
                       {"queued", true},
                       {"state", lc::to_string(r.state)},
                       {"ok", ok},
                       {"controller", holder}});
        if (args.has("wait") && !args.has("json")) {
            io.out << (ok ? "ok      " : "NOT OK  ") << name << ": " << lc::to_string(r.state)
                   << (ok ? "" : " (the controller retries failed steps; 'node show " + name + "')") << "\n";
        }
    }
    if (args.has("json")) io.out << out.dump(2) << "\n";
    return all_ok ? exit_code::ok : exit_code::failure;
}

// In-process work holds each node's lease; the names another holder works on are left out (and reported).
std::vector<std::unique_ptr<lc::LeaseGuard>> take_leases(Env& env, CliIo io, std::vector<std::string>& names) {
    std::vector<std::unique_ptr<lc::LeaseGuard>> held;
    std::vector<std::string> kept;
    const std::string holder = lc::lease_holder_name("cli");
    for (const auto& name : names) {
        auto guard = std::make_unique<lc::LeaseGuard>(*env.lifecycle_store, env.clock, holder, name,
                                                      std::chrono::seconds(60), env.logger.get());
        auto got = guard->acquire();
        if (got && !*got && lc::release_dead_local_lease(*env.lifecycle_store, name)) got = guard->acquire();
        if (got && *got) {
            held.push_back(std::move(guard));
            kept.push_back(name);
        } else {
            io.err << "nodeform-controller: " << name << ": "
                   << (got ? "another controller is working on it right now; follow with 'node show " + name + "'"
                           : "taking its lease failed: " + got.message())
                   << "\n";
        }
    }
    names = std::move(kept);
    return held;
}

}  // namespace

int cmd_node_plan(const std::vector<std::string>& args, CliIo io) {
    ParsedArgs parsed;
    if (auto rc = start(args, io, kPlanUsage, "node plan takes exactly one NAME", true, parsed)) return *rc;
    Env env;
    if (int rc = setup(parsed, io, kPlanUsage, env); rc != exit_code::ok) return rc;
    const std::string& name = parsed.positionals[0];
    auto plan = env.lifecycle->plan(env.site, name);
    if (!plan) {
        io.err << "nodeform-controller: " << plan.message() << "\n";
        return exit_code::config;
    }
    if (parsed.has("json")) {
        io.out << lc::to_json(*plan).dump(2) << "\n";
        return plan->ok() ? exit_code::ok : exit_code::failure;
    }
    io.out << "plan for " << name << " (lifecycle state: " << plan->current_state << ")\n";
    if (plan->current_state == "active") {
        io.out << "  already active on VM " << plan->vmid << ": nothing to do\n";
        return exit_code::ok;
    }
    io.out << "gates:\n";
    for (const auto& g : plan->gates) {
        io.out << "  " << (g.pass ? "pass  " : "REFUSE") << " " << std::left << std::setw(10) << g.name << " "
               << g.detail << "\n";
    }
    if (plan->provider == "qemu") {
        io.out << "what 'node create " << name << "' would do (provider qemu, on this host):\n";
    } else {
        io.out << "API calls 'node create " << name << "' would make (under /api2/json):\n";
    }
    for (const auto& c : plan->calls) {
        io.out << "  " << std::left << std::setw(6) << c.method << " " << c.path
               << (c.params.empty() ? "" : "\n         ") << c.params << "\n";
    }
    if (!plan->ok()) io.out << "refused: fix the gates above, then run 'node plan " << name << "' again\n";
    return plan->ok() ? exit_code::ok : exit_code::failure;
}

int cmd_node_create(const std::vector<std::string>& args, CliIo io) {
    ParsedArgs parsed;
    if (auto rc = start(args, io, kCreateUsage, "node create needs at least one NAME", false, parsed)) return *rc;
    int parallel = 4;
    if (auto p = parsed.get("parallel")) {
        char* end = nullptr;
        long v = std::strtol(p->c_str(), &end, 10);
        if (end == p->c_str() || *end != '\0' || v < 1 || v > 256) {
            io.err << "nodeform-controller: --parallel must be a number from 1 to 256\n";
            return exit_code::usage;
        }
        parallel = static_cast<int>(v);
    }
    Env env;
    if (int rc = setup(parsed, io, kCreateUsage, env); rc != exit_code::ok) return rc;
    for (const auto& name : parsed.positionals) {
        if (!env.site.nodes.count(name)) {
            io.err << "nodeform-controller: node '" << name << "' is not in the site\n";
            return exit_code::config;
        }
    }
    if (std::string holder; queue_for_controller(parsed, env, holder)) {
        return queue_and_follow(parsed, io, env, parsed.positionals, false, holder);
    }
    std::vector<std::string> names = parsed.positionals;
    auto leases = take_leases(env, io, names);
    auto results = env.lifecycle->create_many(env.site, names, parallel);
    bool all_ok = names.size() == parsed.positionals.size();
    json out = json::array();
    for (const auto& r : results) {
        all_ok = all_ok && r.ok;
        out.push_back(result_json(r));
    }
    if (parsed.has("json")) {
        io.out << out.dump(2) << "\n";
    } else {
        for (const auto& r : results)
            io.out << (r.ok ? "ok      " : "NOT OK  ") << r.message << "\n";
    }
    return all_ok ? exit_code::ok : exit_code::failure;
}

int cmd_node_destroy(const std::vector<std::string>& args, CliIo io) {
    ParsedArgs parsed;
    if (auto rc = start(args, io, kDestroyUsage, "node destroy takes exactly one NAME", true, parsed)) return *rc;
    Env env;
    if (int rc = setup(parsed, io, kDestroyUsage, env); rc != exit_code::ok) return rc;
    std::string holder;
    if (!parsed.has("abandon") && queue_for_controller(parsed, env, holder)) {
        return queue_and_follow(parsed, io, env, parsed.positionals, true, holder);
    }
    std::vector<std::string> names = parsed.positionals;
    auto leases = take_leases(env, io, names);
    if (names.empty()) return exit_code::failure;
    auto r = env.lifecycle->destroy(env.site, parsed.positionals[0], parsed.has("abandon"));
    if (parsed.has("json")) {
        io.out << result_json(r).dump(2) << "\n";
    } else {
        (r.ok ? io.out : io.err) << (r.ok ? "ok      " : "NOT OK  ") << r.message << "\n";
    }
    return r.ok ? exit_code::ok : exit_code::failure;
}

int cmd_node_receipts(const std::vector<std::string>& args, CliIo io) {
    if (wants_help(args)) {
        io.out << kReceiptsUsage;
        return exit_code::ok;
    }
    auto parsed = parse(args, io, kReceiptsUsage);
    if (!parsed) return exit_code::usage;
    if (parsed->positionals.size() != 1 || !parsed->get("state")) {
        io.err << "nodeform-controller: node receipts takes one NAME and --state DIR\n\n" << kReceiptsUsage;
        return exit_code::usage;
    }
    auto where = location_of(*parsed);
    if (!where) {
        io.err << "nodeform-controller: " << where.message() << "\n";
        return exit_code::config;
    }
    auto store = open_lifecycle_store(*where);
    if (!store) {
        io.err << "nodeform-controller: " << store.message() << "\n";
        return exit_code::runtime;
    }
    const std::string& name = parsed->positionals[0];
    auto receipts = (*store)->receipts(name);
    if (!receipts) {
        io.err << "nodeform-controller: " << receipts.message() << "\n";
        return exit_code::runtime;
    }
    if (parsed->has("json")) {
        json out = json::array();
        for (const auto& r : *receipts)
            out.push_back(lc::to_json(r));
        io.out << out.dump(2) << "\n";
        return exit_code::ok;
    }
    if (receipts->empty()) {
        io.out << "no receipts for " << name << " (never provisioned by this controller)\n";
        return exit_code::ok;
    }
    for (const auto& r : *receipts) {
        std::string summary = r.outputs.is_object() ? r.outputs.value("summary", "") : "";
        if (!r.error.empty()) summary = r.error;
        std::string upids;
        for (const auto& c : r.calls) {
            if (c.contains("upid") && c.contains("exitstatus")) {
                upids += " " + c["upid"].get<std::string>() + " " + c["exitstatus"].get<std::string>();
            }
        }
        io.out << std::left << std::setw(4) << r.id << " " << r.finished_at << " " << std::setw(14) << r.step << " "
               << std::setw(8) << r.outcome << " " << std::setw(5) << r.calls.size() << "calls  " << summary << "\n";
        if (!upids.empty()) io.out << "     tasks:" << upids << "\n";
    }
    return exit_code::ok;
}

}  // namespace nodeform::controller
