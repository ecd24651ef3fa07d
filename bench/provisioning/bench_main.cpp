// Provisioning overhead: N nodes created in parallel against the Proxmox stand-in with fixed task
// durations. Reports wall time / critical path (the per-node chain of task durations + boot) and API
// calls per node. Uses the production client settings (poll intervals, retries) — only the API is fake.
#include <cstdio>
#include <cstdlib>
#include <iostream>

#include "nodeform/args.hpp"
#include "nodeform/controller/lifecycle/lifecycle.hpp"
#include "nodeform/controller/providers/proxmox.hpp"
#include "pve_standin.hpp"
#include "test_paths.hpp"

namespace lc = nodeform::controller::lifecycle;
namespace pv = nodeform::controller::providers;
using namespace std::chrono;

namespace {

class Issuer final : public lc::EnrollmentIssuer {
  public:
    nodeform::Result<lc::IssuedToken> issue(const std::string&, seconds ttl) override {
        return lc::IssuedToken{std::string(68, 't'), system_clock::now() + ttl};
    }
    nodeform::Status revoke(const std::string&) override { return nodeform::Ok{}; }
};

class Reports final : public lc::NodeReportSource {
  public:
    std::optional<lc::NodeReport> latest(const std::string&) override { return lc::NodeReport{true, true, ""}; }
};

nodeform::site::Site make_site(const nodeform::test::PveStandin& pve, int count) {
    nodeform::site::Site s;
    s.dir = "bench";
    s.info.name = "lab";
    s.info.controller_url = "https://10.20.0.2:8443";
    s.info.placements.push_back({"lab", 100, 999, {"pve1"}});
    s.info.proxmox.push_back({"pve", pve.base_url(), pve.options().token_id, pve.options().token_secret, ""});
    for (int i = 1; i <= count; ++i) {
        char name[32];
        std::snprintf(name, sizeof name, "node-%03d", i);
        nodeform::site::Node n;
        n.name = name;
        n.sizing = {2, 2048, 20, 0};
        n.placement = {"lab", "pve", "pve1", 9000, "local-lvm", "vmbr0", "", {}, std::nullopt, "proxmox", {}};
        n.decommission = nodeform::site::DecommissionPolicy::allow_immediate_destroy;
        n.resolved = {{"network", {{"mode", "dhcp"}}},
                      {"users",
                       {{{"name", "ops"},
                         {"sudo", true},
                         {"state", "present"},
                         {"ssh_keys", {"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIbenchbenchbenchbench ops@b"}}}}}};
        s.nodes[name] = n;
    }
    return s;
}

}  // namespace

int main(int argc, char** argv) {
    nodeform::ArgSpec spec;
    spec.valued = {"nodes", "parallel", "clone-ms", "resize-ms", "start-ms", "boot-ms", "poll-max-ms", "agent-poll-ms"};
    spec.flags = {"help", "steps"};
    auto args = nodeform::parse_args(std::vector<std::string>(argv + 1, argv + argc), spec);
    if (!args || args->has("help")) {
        std::cerr << "usage: provisioning-bench [--nodes 20] [--parallel 20] [--clone-ms 8000] [--resize-ms 1000]"
                     " [--start-ms 1000] [--boot-ms 10000] [--poll-max-ms N] [--agent-poll-ms N] [--steps]\n"
                     "  (the last two override the production task-poll cap and guest-agent ping interval)\n";
        return args ? 0 : 2;
    }
    const int count = std::atoi(args->get_or("nodes", "20").c_str());
    const int parallel = std::atoi(args->get_or("parallel", "20").c_str());
    const milliseconds clone{std::atoi(args->get_or("clone-ms", "8000").c_str())};
    const milliseconds resize{std::atoi(args->get_or("resize-ms", "1000").c_str())};
    const milliseconds start{std::atoi(args->get_or("start-ms", "1000").c_str())};
    const milliseconds boot{std::atoi(args->get_or("boot-ms", "10000").c_str())};
    pv::ProxmoxOptions defaults;
    lc::LifecycleOptions lc_defaults;
    const milliseconds poll_max{
        std::atoi(args->get_or("poll-max-ms", std::to_string(defaults.poll_max.count())).c_str())};
    const milliseconds agent_poll{
        std::atoi(args->get_or("agent-poll-ms", std::to_string(lc_defaults.agent_poll.count())).c_str())};

    nodeform::test::PveStandinOptions o;
    o.task_ms = {{"qmclone", clone}, {"resize", resize}, {"qmstart", start}};
    o.boot_ms = boot;
    nodeform::test::PveStandin pve(o);
    pve.add_template("pve1", 9000, "debian12-tmpl");
    auto site = make_site(pve, count);

    nodeform::test::TempDir dir;
    auto store = lc::LifecycleStore::open(dir.path() + "/nodeform.db");
    if (!store) {
        std::cerr << store.message() << "\n";
        return 4;
    }
    Issuer issuer;
    Reports reports;
    nodeform::SystemClock clock;
    lc::LifecycleDeps deps;
    deps.store = store->get();
    deps.issuer = &issuer;
    deps.reports = &reports;
    deps.clock = &clock;
    const std::string base = pve.base_url();
    deps.providers =
        [base, poll_max](const nodeform::site::ProxmoxEndpoint& e) -> nodeform::Result<std::unique_ptr<pv::Provider>> {
        auto t = nodeform::make_http_transport({base, {}, seconds(5), seconds(30)});
        if (!t) return t.error();
        pv::ProxmoxOptions opt;  // production defaults
        opt.token_id = e.token_id;
        opt.token_secret = e.token_secret;
        opt.poll_max = poll_max;
        return pv::make_proxmox_provider(std::move(*t), opt);
    };
    if (args->has("steps")) {  // each step's finish time on stderr, to see where the time goes
        deps.progress = [](const lc::ProgressEvent& e) {
            std::fprintf(stderr, "%8.3f %s %s\n", e.elapsed_s, e.identity.c_str(), e.step.c_str());
        };
    }
    lc::LifecycleOptions opt;  // production defaults (agent ping interval etc.)
    opt.ca_fingerprint = std::string(64, 'a');
    opt.agent_poll = agent_poll;
    lc::Lifecycle lifecycle(deps, opt);

    std::vector<std::string> names;
    for (const auto& [name, node] : site.nodes)
        names.push_back(name);
    pve.reset_request_log();
    auto t0 = steady_clock::now();
    auto results = lifecycle.create_many(site, names, parallel);
    double wall = duration<double>(steady_clock::now() - t0).count();
    int ok = 0;
    for (const auto& r : results) {
        if (r.ok)
            ++ok;
        else
            std::cerr << r.message << "\n";
    }
    // Critical path: one node's chain of task durations plus boot (config PUT is synchronous).
    const double critical = duration<double>(clone + resize + start + boot).count();
    const double calls = static_cast<double>(pve.request_count()) / count;
    std::printf(
        "nodes=%d parallel=%d poll_max_ms=%lld agent_poll_ms=%lld ok=%d wall_s=%.2f critical_path_s=%.2f "
        "ratio=%.3f api_calls_per_node=%.1f\n",
        count, parallel, static_cast<long long>(poll_max.count()), static_cast<long long>(agent_poll.count()), ok, wall,
        critical, wall / critical, calls);
    return ok == count ? 0 : 1;
}
