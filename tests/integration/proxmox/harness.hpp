#pragma once
// Shared setup for the Proxmox lifecycle tests: a site built in code, the stand-in, fake issuer/reports.
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <sstream>
#include <string>

#include "fakes/memory_logger.hpp"
#include "nodeform/controller/lifecycle/lifecycle.hpp"
#include "nodeform/controller/providers/proxmox.hpp"
#include "pve_standin.hpp"
#include "test_paths.hpp"

namespace nodeform::test {

namespace lc = nodeform::controller::lifecycle;
namespace pv = nodeform::controller::providers;

inline site::Node make_node(const std::string& name, std::optional<std::int64_t> vmid = std::nullopt) {
    site::Node n;
    n.name = name;
    n.type = "vm";
    n.spec_name = "web";
    n.posture_name = "prod";
    n.preset_name = "small";
    n.sizing = {2, 2048, 20, 1024};
    n.placement.site = "lab";
    n.placement.endpoint = "pve";
    n.placement.pve_node = "pve1";
    n.placement.template_vmid = 9000;
    n.placement.storage = "local-lvm";
    n.placement.bridge = "vmbr0";
    n.placement.tags = {"nodeform", "web"};
    n.placement.vmid = vmid;
    n.decommission = site::DecommissionPolicy::allow_immediate_destroy;
    n.resolved = nlohmann::json::parse(R"({
      "identity": ")" + name + R"(",
      "hostname": {"hostname": ")" + name +
                                       R"(", "domain": "lab.example.net", "fqdn": "x"},
      "network": {"mode": "static", "address": "10.20.0.11/24", "gateway": "10.20.0.1", "dns": ["10.20.0.1"],
                  "search": ["lab.example.net"]},
      "users": [{"name": "bob", "sudo": false, "ssh_keys": [], "state": "present"},
                {"name": "alice", "sudo": true, "state": "present",
                 "ssh_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHfakefakefakefakefakefakefakefakefakefake alice@laptop"]}],
      "stacks": []
    })");
    return n;
}

inline site::Site make_site(const std::string& url, const std::string& token_id, const std::string& secret,
                            int nodes = 1) {
    site::Site s;
    s.dir = "/nonexistent-site";
    s.info.name = "lab";
    s.info.domain = "lab.example.net";
    s.info.controller_url = "https://10.20.0.2:8443";
    s.info.placements.push_back({"lab", 100, 199, {"pve1"}});
    s.info.proxmox.push_back({"pve", url, token_id, secret, ""});
    for (int i = 1; i <= nodes; ++i) {
        char name[32];
        std::snprintf(name, sizeof name, "web-%02d", i);
        s.nodes[name] = make_node(name);
    }
    return s;
}

class FakeIssuer final : public lc::EnrollmentIssuer {
  public:
    Result<lc::IssuedToken> issue(const std::string& identity, std::chrono::seconds ttl) override {
        std::lock_guard<std::mutex> l(mu);
        std::string token = "ENROLLTOKEN" + std::to_string(++counter) + "x" + identity;
        token.resize(43, 'Q');
        issued.push_back(token);
        current[identity] = token;
        return lc::IssuedToken{token, std::chrono::system_clock::now() + ttl};
    }
    Status revoke(const std::string& identity) override {
        std::lock_guard<std::mutex> l(mu);
        revoked.insert(identity);
        current.erase(identity);
        return Ok{};
    }
    std::mutex mu;
    int counter = 0;
    std::vector<std::string> issued;
    std::map<std::string, std::string> current;
    std::set<std::string> revoked;
};

class FakeReports final : public lc::NodeReportSource {
  public:
    std::optional<lc::NodeReport> latest(const std::string& identity) override {
        std::lock_guard<std::mutex> l(mu);
        if (all_ready || ready.count(identity)) return lc::NodeReport{true, true, "2026-11-23T20:00:00.000Z"};
        return std::nullopt;
    }
    std::mutex mu;
    bool all_ready = true;
    std::set<std::string> ready;
};

struct SimulatedCrash {
    std::string point;
};

// One controller "process": store + lifecycle over the stand-in. Destroy and re-create it to simulate a restart.
struct Harness {
    explicit Harness(PveStandin& pve, const std::string& db, int nodes = 1)
        : standin(pve), site(make_site(pve.base_url(), pve.options().token_id, pve.options().token_secret, nodes)) {
        auto s = lc::LifecycleStore::open(db);
        if (!s) throw std::runtime_error(s.message());
        store = std::move(*s);
    }

    std::unique_ptr<lc::Lifecycle> make(std::function<void(const std::string&)> crash = {}) {
        lc::LifecycleDeps deps;
        deps.store = store.get();
        std::string base = standin.base_url();
        deps.providers = [base](const site::ProxmoxEndpoint& e) -> Result<std::unique_ptr<pv::Provider>> {
            pv::ProxmoxOptions o;
            o.token_id = e.token_id;
            o.token_secret = e.token_secret;
            o.poll_min = std::chrono::milliseconds(5);
            o.poll_max = std::chrono::milliseconds(20);
            o.retry_backoff = std::chrono::milliseconds(5);
            return pv::make_proxmox_provider(make_loopback_transport(base), o);
        };
        deps.issuer = &issuer;
        deps.reports = &reports;
        deps.clock = &clock;
        deps.logger = &logger;
        deps.progress = [this](const lc::ProgressEvent& e) {
            std::lock_guard<std::mutex> l(mu);
            progress << e.identity << " " << e.step << " " << e.detail << "\n";
        };
        deps.crash_point = std::move(crash);
        lc::LifecycleOptions opt;
        opt.ca_fingerprint = std::string(64, 'a');
        opt.wait_poll = std::chrono::milliseconds(10);
        opt.agent_poll = std::chrono::milliseconds(10);
        opt.agent_timeout = std::chrono::seconds(10);
        opt.report_timeout = std::chrono::seconds(2);
        return std::make_unique<lc::Lifecycle>(deps, opt);
    }

    // Everything a secret could leak into: receipts, logs, progress lines.
    std::string everything_written() {
        std::string all = progress.str();
        for (const auto& l : logger.lines) {
            all += l.message + "\n";
            for (const auto& [k, v] : l.fields)
                all += k + "=" + v + "\n";
        }
        auto records = store->all();
        if (records) {
            for (const auto& r : *records) {
                all += lc::to_json(r).dump() + "\n";
                auto rs = store->receipts(r.identity);
                if (rs) {
                    for (const auto& x : *rs)
                        all += lc::to_json(x).dump() + "\n";
                }
            }
        }
        return all;
    }

    PveStandin& standin;
    site::Site site;
    std::unique_ptr<lc::LifecycleStore> store;
    FakeIssuer issuer;
    FakeReports reports;
    SystemClock clock;
    MemoryLogger logger;
    std::mutex mu;
    std::ostringstream progress;
};

inline PveStandinOptions fast_standin() {
    PveStandinOptions o;
    o.default_task_ms = std::chrono::milliseconds(20);
    o.boot_ms = std::chrono::milliseconds(40);
    return o;
}

}  // namespace nodeform::test
