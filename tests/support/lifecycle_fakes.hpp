#pragma once
// For lifecycle tests: a site with VM nodes built in code, and the issuer and report source the lifecycle asks.
#include <chrono>
#include <cstdio>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "nodeform/controller/lifecycle/lifecycle.hpp"

namespace nodeform::test {

namespace lc = nodeform::controller::lifecycle;

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

// What a test's crash_point hook throws: the "process" dies at that point.
struct SimulatedCrash {
    std::string point;
};

}  // namespace nodeform::test
