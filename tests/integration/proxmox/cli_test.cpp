// The real nodeform-controller binary against the stand-in: plan/create/receipts/destroy on the example site,
// killed mid-clone (NODEFORM_TEST_CRASH_AT) and resumed, and no secret in anything it prints or stores.
#include <gtest/gtest.h>

#include "nodeform/atomic_file.hpp"
#include "nodeform/controller/lifecycle/lifecycle.hpp"
#include "nodeform/posix_process_runner.hpp"
#include "pve_standin.hpp"
#include "test_paths.hpp"

namespace nodeform::test {
namespace {

using nlohmann::json;

constexpr const char* kSecret = "00000000-fake-4000-8000-000000000000";  // examples/site/secrets.yaml

PveStandinOptions example_standin() {
    PveStandinOptions o;
    o.token_id = "nodeform@pve!controller";
    o.token_secret = kSecret;
    o.nodes = {"pve1", "pve2", "pve3"};
    o.storages = {"local", "local-lvm", "ceph-vm"};
    o.bridges = {"vmbr0", "vmbr1"};
    o.default_task_ms = std::chrono::milliseconds(20);
    o.task_ms["qmclone"] = std::chrono::milliseconds(300);
    o.boot_ms = std::chrono::milliseconds(50);
    return o;
}

struct Cli {
    PveStandin& pve;
    std::string state;
    std::string all_output;

    ProcessResult run(std::vector<std::string> args, std::map<std::string, std::string> env = {}) {
        ProcessRequest req;
        req.argv = {binary_dir() + "/controller/nodeform-controller", "node"};
        req.argv.insert(req.argv.end(), args.begin(), args.end());
        for (const char* extra : {"--site", "--state", "--endpoint", "--ca-fingerprint"}) {
            req.argv.push_back(extra);
            std::string e = extra;
            req.argv.push_back(e == "--site"       ? source_dir() + "/examples/site"
                               : e == "--state"    ? state
                               : e == "--endpoint" ? "pve-lab=" + pve.base_url()
                                                   : std::string(64, 'a'));
        }
        req.env = std::move(env);
        return exec(req);
    }

    // `node list` / `node show`: only --site and --state (they never speak to Proxmox).
    ProcessResult status(std::vector<std::string> args) {
        ProcessRequest req;
        req.argv = {binary_dir() + "/controller/nodeform-controller", "node"};
        req.argv.insert(req.argv.end(), args.begin(), args.end());
        req.argv.insert(req.argv.end(), {"--site", source_dir() + "/examples/site", "--state", state});
        return exec(req);
    }

    ProcessResult exec(ProcessRequest& req) {
        PosixProcessRunner runner;
        req.timeout = std::chrono::seconds(120);
        auto r = runner.run(req);
        EXPECT_TRUE(r) << r.message();
        if (!r) return {};
        all_output += r->out + r->err;
        return *r;
    }
};

TEST(ProxmoxCli, PlanCreateCrashResumeReceiptsDestroy) {
    PveStandin pve(example_standin());
    pve.add_template("pve1", 9000, "debian12-tmpl");
    TempDir state;
    Cli cli{pve, state.path(), ""};

    auto plan = cli.run({"plan", "web-01"});
    EXPECT_EQ(plan.exit_code, 0) << plan.out << plan.err;
    EXPECT_NE(plan.out.find("/nodes/pve1/qemu/9000/clone"), std::string::npos) << plan.out;
    EXPECT_EQ(pve.vm_count(), 0);
    auto refused = cli.run({"plan", "web-02"});  // template 9000 lives on pve1, web-02 is placed on pve2
    EXPECT_EQ(refused.exit_code, 1) << refused.out;
    EXPECT_NE(refused.out.find("REFUSE template"), std::string::npos) << refused.out;

    // Killed right after Proxmox accepted the clone, before the step was recorded.
    auto crashed =
        cli.run({"create", "web-01", "--report-timeout", "0s"}, {{"NODEFORM_TEST_CRASH_AT", "called:cloned"}});
    EXPECT_EQ(crashed.exit_code, 137) << crashed.out << crashed.err;
    EXPECT_EQ(pve.clone_requests(1011), 1);

    auto resumed = cli.run({"create", "web-01", "demo-01", "--parallel", "2", "--report-timeout", "0s"});
    // No agent reports here, so both stop in validating (exit 1) with the VMs built and running.
    EXPECT_EQ(resumed.exit_code, 1) << resumed.out << resumed.err;
    EXPECT_NE(resumed.out.find("still validating"), std::string::npos) << resumed.out;
    EXPECT_NE(resumed.out.find("agent_ready"), std::string::npos) << resumed.out;
    EXPECT_EQ(pve.clone_requests(1011), 1);
    EXPECT_EQ(pve.vm_count(), 2);
    EXPECT_EQ(pve.vm_status(1011), "running");
    json cfg = pve.vm_config(1011);
    const std::string token = seed_token_in_smbios1(cfg);
    EXPECT_EQ(token.rfind("nfe_", 0), 0u) << cfg.dump();

    auto receipts = cli.run({"receipts", "web-01", "--json"});
    EXPECT_EQ(receipts.exit_code, 0);
    json r = json::parse(receipts.out, nullptr, false);
    ASSERT_TRUE(r.is_array()) << receipts.out;
    std::vector<std::string> steps;
    for (const auto& x : r)
        steps.push_back(x["step"]);
    EXPECT_EQ(steps, (std::vector<std::string>{"vmid_reserved", "cloned", "configured", "resized", "started",
                                               "registered", "agent_ready"}));

    // node list / show: lifecycle state, VMID, PVE node and the guest's addresses from the store, with
    // Proxmox not asked (the request count stays put) and loopback left out.
    const int requests = pve.request_count();
    auto list = cli.status({"list", "--json"});
    EXPECT_EQ(list.exit_code, 0) << list.out << list.err;
    json nodes = json::parse(list.out, nullptr, false);
    ASSERT_TRUE(nodes.is_object()) << list.out;
    std::map<std::string, json> by_id;
    for (const auto& n : nodes["nodes"])
        by_id[n["identity"].get<std::string>()] = n["lifecycle"];
    ASSERT_TRUE(by_id["web-01"].is_object()) << list.out;
    EXPECT_EQ(by_id["web-01"]["state"], "validating");
    EXPECT_EQ(by_id["web-01"]["vmid"], 1011);
    EXPECT_EQ(by_id["web-01"]["pve_node"], "pve1");
    EXPECT_EQ(by_id["web-01"]["ips"], json::array({"10.20.4.13/24"}));  // the stand-in's eth0; lo left out
    EXPECT_TRUE(by_id["web-02"].is_null()) << list.out;                 // in the site, never provisioned
    auto table = cli.status({"list"});
    EXPECT_EQ(table.exit_code, 0);
    EXPECT_NE(table.out.find("LIFECYCLE"), std::string::npos) << table.out;
    std::string web01_line = table.out.substr(table.out.find("web-01"));
    web01_line = web01_line.substr(0, web01_line.find('\n'));
    EXPECT_NE(web01_line.find("validating"), std::string::npos) << table.out;
    EXPECT_NE(web01_line.find("10.20.4.13/24"), std::string::npos) << table.out;
    EXPECT_EQ(web01_line.find("127.0.0.1"), std::string::npos) << table.out;
    auto show = cli.status({"show", "web-01"});
    EXPECT_EQ(show.exit_code, 0) << show.out << show.err;
    EXPECT_NE(show.out.find("lifecycle:     validating"), std::string::npos) << show.out;
    EXPECT_NE(show.out.find("vmid:          1011"), std::string::npos) << show.out;
    EXPECT_NE(show.out.find("pve node:      pve1"), std::string::npos) << show.out;
    EXPECT_NE(show.out.find("ips:           10.20.4.13/24"), std::string::npos) << show.out;
    auto show_json = cli.status({"show", "web-01", "--json"});
    json shown = json::parse(show_json.out, nullptr, false);
    ASSERT_TRUE(shown.is_object()) << show_json.out;
    EXPECT_EQ(shown["lifecycle"]["vmid"], 1011);
    EXPECT_EQ(shown["lifecycle"]["ips"], json::array({"10.20.4.13/24"}));
    EXPECT_EQ(pve.request_count(), requests);

    auto keep = cli.run({"destroy", "web-02"});  // never provisioned
    EXPECT_EQ(keep.exit_code, 1);
    auto destroy_demo = cli.run({"destroy", "demo-01"});
    EXPECT_EQ(destroy_demo.exit_code, 0) << destroy_demo.out << destroy_demo.err;
    auto destroy_web = cli.run({"destroy", "web-01"});  // requires_migration_first, and web has no stacks
    EXPECT_EQ(destroy_web.exit_code, 0) << destroy_web.out << destroy_web.err;
    EXPECT_TRUE(pve.backups().empty());
    EXPECT_EQ(pve.vm_count(), 0);
    auto after = cli.status({"list", "--json"});
    json gone = json::parse(after.out, nullptr, false);
    ASSERT_TRUE(gone.is_object()) << after.out;
    for (const auto& n : gone["nodes"]) {
        if (n["identity"] != "web-01") continue;
        EXPECT_EQ(n["lifecycle"]["state"], "decommissioned");
        EXPECT_EQ(n["lifecycle"]["ips"], json::array());
    }

    // Nothing printed or stored holds the API token secret or the enrollment token.
    auto dump = cli.run({"receipts", "web-01", "--json"});
    EXPECT_EQ(cli.all_output.find(kSecret), std::string::npos);
    ASSERT_FALSE(token.empty());
    EXPECT_EQ(cli.all_output.find(token), std::string::npos);
    for (const char* file : {"/nodeform.db", "/nodeform.db-wal"}) {
        auto db = read_file(state.path() + file);
        if (!db) continue;
        EXPECT_EQ(db->find(token), std::string::npos) << file;
        EXPECT_EQ(db->find(kSecret), std::string::npos) << file;
    }
}

}  // namespace
}  // namespace nodeform::test
