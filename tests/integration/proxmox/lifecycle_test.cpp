// The provisioning lifecycle against the Proxmox VE stand-in over loopback HTTP.
#include <gtest/gtest.h>

#include "harness.hpp"
#include "nodeform/base64.hpp"
#include "nodeform/seed.hpp"

namespace nodeform::test {
namespace {

using nlohmann::json;

std::string db_path(const TempDir& dir) {
    return dir.path() + "/nodeform.db";
}

// The usual stage: the stand-in with the template, a fresh state database, a controller with one node.
struct Stage {
    Stage() { pve.add_template("pve1", 9000, "debian12-tmpl"); }
    PveStandin pve{fast_standin()};
    TempDir dir;
    Harness h{pve, db_path(dir)};
};

void expect_no_secrets(Harness& h, const std::string& extra = "") {
    std::string all = h.everything_written() + extra;
    EXPECT_EQ(all.find(h.standin.options().token_secret), std::string::npos) << "API token secret leaked";
    for (const auto& t : h.issuer.issued)
        EXPECT_EQ(all.find(t), std::string::npos) << "enrollment token leaked";
}

TEST(ProxmoxLifecycle, OneNodeHappyPath) {
    Stage stage;
    auto& [pve, dir, h] = stage;
    auto lifecycle = h.make();
    auto r = lifecycle->create(h.site, "web-01");
    ASSERT_TRUE(r.ok) << r.message;
    EXPECT_EQ(r.state, lc::State::active);

    auto rec = h.store->get("web-01");
    ASSERT_TRUE(rec && *rec);
    const auto vmid = (*rec)->vmid;
    EXPECT_EQ(vmid, 100);
    EXPECT_EQ(pve.vm_status(vmid), "running");
    EXPECT_EQ(pve.clone_requests(vmid), 1);
    json cfg = pve.vm_config(vmid);
    EXPECT_EQ(cfg["name"], "web-01");
    EXPECT_EQ(cfg["cores"], "2");
    EXPECT_EQ(cfg["memory"], "2048");
    EXPECT_EQ(cfg["balloon"], "1024");
    EXPECT_EQ(cfg["agent"], "1");
    EXPECT_EQ(cfg["onboot"], "1");
    EXPECT_EQ(cfg["ciuser"], "alice");
    EXPECT_EQ(cfg["ipconfig0"], "ip=10.20.0.11/24,gw=10.20.0.1");
    EXPECT_EQ(cfg["nameserver"], "10.20.0.1");
    EXPECT_EQ(cfg["searchdomain"], "lab.example.net");
    EXPECT_EQ(cfg["tags"], "nodeform;web");
    EXPECT_NE(cfg["scsi0"].get<std::string>().find("size=20G"), std::string::npos);
    // Stored once-encoded: the form layer removed the outer encoding.
    EXPECT_EQ(cfg["sshkeys"].get<std::string>().rfind("ssh-ed25519%20AAAA", 0), 0u) << cfg["sshkeys"];

    // smbios1 keeps the clone's uuid and carries the seed with the issued token.
    std::string smbios = cfg["smbios1"];
    EXPECT_LE(smbios.size(), 512u);
    EXPECT_EQ(smbios.rfind("uuid=", 0), 0u);
    EXPECT_NE(smbios.find(",base64=1"), std::string::npos);
    auto serial_at = smbios.find("serial=");
    ASSERT_NE(serial_at, std::string::npos);
    std::string serial = smbios.substr(serial_at + 7);
    serial = serial.substr(0, serial.find(','));
    auto decoded = base64_decode(serial);
    ASSERT_TRUE(decoded);
    auto seed = decode_seed_compact(*decoded);
    ASSERT_TRUE(seed) << seed.message();
    EXPECT_EQ(seed->identity, "web-01");
    EXPECT_EQ(seed->token, h.issuer.current["web-01"]);
    EXPECT_EQ(seed->controller_url, "https://10.20.0.2:8443");

    auto receipts = h.store->receipts("web-01");
    ASSERT_TRUE(receipts);
    std::vector<std::string> steps;
    for (const auto& x : *receipts)
        steps.push_back(x.step);
    EXPECT_EQ(steps, (std::vector<std::string>{"vmid_reserved", "cloned", "configured", "resized", "started",
                                               "registered", "agent_ready", "active"}));
    const auto& clone = (*receipts)[1];
    bool saw_upid = false;
    for (const auto& c : clone.calls) {
        if (c.contains("upid") && c.contains("exitstatus") && c["exitstatus"] == "OK") saw_upid = true;
    }
    EXPECT_TRUE(saw_upid) << clone.calls.dump();
    EXPECT_EQ((*rec)->ips.size(), 1u);
    expect_no_secrets(h);

    // Running create again is a no-op.
    auto again = lifecycle->create(h.site, "web-01");
    EXPECT_TRUE(again.ok);
    EXPECT_EQ(pve.clone_requests(vmid), 1);
}

TEST(ProxmoxLifecycle, TwentyNodesInParallel) {
    PveStandin pve(fast_standin());
    pve.add_template("pve1", 9000, "debian12-tmpl");
    TempDir dir;
    Harness h(pve, db_path(dir), 20);
    auto lifecycle = h.make();
    std::vector<std::string> names;
    for (const auto& [name, node] : h.site.nodes)
        names.push_back(name);
    auto results = lifecycle->create_many(h.site, names, 20);
    std::set<std::int64_t> vmids;
    for (const auto& r : results) {
        EXPECT_TRUE(r.ok) << r.message;
        auto rec = h.store->get(r.identity);
        ASSERT_TRUE(rec && *rec);
        vmids.insert((*rec)->vmid);
        EXPECT_EQ(pve.clone_requests((*rec)->vmid), 1);
    }
    EXPECT_EQ(vmids.size(), 20u);
    EXPECT_EQ(pve.vm_count(), 20);
    expect_no_secrets(h);
}

TEST(ProxmoxLifecycle, CrashAtEveryStepResumesWithoutASecondClone) {
    std::vector<std::string> points;
    for (const char* step :
         {"vmid_reserved", "cloned", "configured", "resized", "started", "registered", "agent_ready", "active"}) {
        points.push_back(std::string("before:") + step);
        points.push_back(std::string("after:") + step);
    }
    for (const char* step : {"cloned", "configured", "resized", "started"})
        points.push_back(std::string("called:") + step);

    for (const auto& point : points) {
        SCOPED_TRACE(point);
        PveStandinOptions o = fast_standin();
        o.task_ms["qmclone"] = std::chrono::milliseconds(150);  // a crash lands while the clone still runs
        PveStandin pve(o);
        pve.add_template("pve1", 9000, "debian12-tmpl");
        TempDir dir;
        {
            Harness h(pve, db_path(dir));
            h.reports.all_ready = false;  // the crash may land in validating: report arrives after the restart
            auto lifecycle = h.make([&](const std::string& p) {
                if (p == point) throw SimulatedCrash{p};
            });
            bool crashed = false;
            try {
                (void)lifecycle->create(h.site, "web-01");
            } catch (const SimulatedCrash&) {
                crashed = true;
            }
            if (point != "before:active" && point != "after:active") {
                EXPECT_TRUE(crashed);
            }
        }
        Harness h2(pve, db_path(dir));  // the restarted controller
        auto lifecycle = h2.make();
        auto r = lifecycle->create(h2.site, "web-01");
        EXPECT_TRUE(r.ok) << r.message;
        EXPECT_EQ(r.state, lc::State::active);
        EXPECT_EQ(pve.vm_count(), 1);
        EXPECT_EQ(pve.clone_requests(100), 1);
        EXPECT_EQ(pve.vm_status(100), "running");
        expect_no_secrets(h2);
    }
}

struct GateCase {
    std::string name;
    std::function<void(site::Site&, PveStandin&)> setup;
    std::string gate;
};

TEST(ProxmoxLifecycle, EachGateRefusesBeforeAnyMutation) {
    std::vector<GateCase> cases = {
        {"hostname",
         [](site::Site& s, PveStandin&) {
             auto n = s.nodes["web-01"];
             n.name = "Web_01";
             s.nodes.erase("web-01");
             s.nodes["web-01"] = n;
         },
         "hostname"},
        {"vmid out of range", [](site::Site& s, PveStandin&) { s.nodes["web-01"].placement.vmid = 500; }, "vmid"},
        {"vmid in use",
         [](site::Site& s, PveStandin& p) {
             p.add_vm("pve1", 150, "someone-else", false);
             s.nodes["web-01"].placement.vmid = 150;
         },
         "vmid"},
        {"template missing", [](site::Site& s, PveStandin&) { s.nodes["web-01"].placement.template_vmid = 9999; },
         "template"},
        {"not a template",
         [](site::Site& s, PveStandin& p) {
             p.add_vm("pve1", 9100, "plain-vm", false);
             s.nodes["web-01"].placement.template_vmid = 9100;
         },
         "template"},
        {"storage", [](site::Site& s, PveStandin&) { s.nodes["web-01"].placement.storage = "nope"; }, "storage"},
        {"bridge", [](site::Site& s, PveStandin&) { s.nodes["web-01"].placement.bridge = "vmbr9"; }, "bridge"},
        {"host of another site", [](site::Site& s, PveStandin&) { s.nodes["web-01"].placement.pve_node = "pve7"; },
         "site_host"},
        {"host offline",
         [](site::Site& s, PveStandin&) {
             s.info.placements[0].hosts.push_back("pve3");
             s.nodes["web-01"].placement.pve_node = "pve3";
         },
         "site_host"},
        {"seed too long",
         [](site::Site& s, PveStandin&) {
             s.info.controller_url = "https://" + std::string(280, 'c') + ".example.net:8443";
         },
         "seed"},
        // The seed alone fits; with the SMBIOS fields the clone keeps from the template it does not.
        {"template SMBIOS fields (base64)",
         [](site::Site&, PveStandin& p) {
             p.set_config(
                 9000, "smbios1",
                 "uuid=7d3c1a52-4c0e-4f7e-9a59-1f0c1e2d3b4a,manufacturer=" + base64_encode(std::string(100, 'M')) +
                     ",product=" + base64_encode(std::string(60, 'P')) + ",base64=1");
         },
         "seed"},
        {"template SMBIOS fields (plain)",
         [](site::Site&, PveStandin& p) {
             p.set_config(9000, "smbios1",
                          "uuid=7d3c1a52-4c0e-4f7e-9a59-1f0c1e2d3b4a,manufacturer=" + std::string(100, 'M') +
                              ",product=" + std::string(60, 'P') + ",family=" + std::string(30, 'F'));
         },
         "seed"},
    };
    for (const auto& c : cases) {
        SCOPED_TRACE(c.name);
        PveStandin pve(fast_standin());
        pve.add_template("pve1", 9000, "debian12-tmpl");
        TempDir dir;
        Harness h(pve, db_path(dir));
        c.setup(h.site, pve);
        int vms_before = pve.vm_count();
        auto lifecycle = h.make();
        auto plan = lifecycle->plan(h.site, "web-01");
        ASSERT_TRUE(plan) << plan.message();
        EXPECT_FALSE(plan->ok());
        pve.reset_request_log();
        auto r = lifecycle->create(h.site, "web-01");
        EXPECT_FALSE(r.ok);
        EXPECT_NE(r.message.find(c.gate + ":"), std::string::npos) << r.message;
        if (c.name.rfind("template SMBIOS", 0) == 0) {  // the hint names what takes the room
            EXPECT_NE(r.message.find("kept from the template (manufacturer, product"), std::string::npos) << r.message;
        }
        EXPECT_EQ(pve.clone_requests(100), 0);
        EXPECT_EQ(pve.vm_count(), vms_before);
        for (const auto& line : pve.request_log()) {
            EXPECT_EQ(line.rfind("GET ", 0), 0u) << "mutation despite a refusing gate: " << line;
        }
        auto rec = h.store->get("web-01");
        ASSERT_TRUE(rec && *rec);
        EXPECT_EQ((*rec)->state, lc::State::failed);
        EXPECT_EQ((*rec)->failed_step, "gates");
    }
}

TEST(ProxmoxLifecycle, PlanChangesNothingAndListsTheCalls) {
    Stage stage;
    auto& [pve, dir, h] = stage;
    auto lifecycle = h.make();
    pve.reset_request_log();
    auto plan = lifecycle->plan(h.site, "web-01");
    ASSERT_TRUE(plan) << plan.message();
    EXPECT_TRUE(plan->ok());
    EXPECT_EQ(plan->vmid, 100);
    ASSERT_GE(plan->calls.size(), 5u);
    EXPECT_EQ(plan->calls[0].path, "/nodes/pve1/qemu/9000/clone");
    for (const auto& line : pve.request_log())
        EXPECT_EQ(line.rfind("GET ", 0), 0u) << line;
    auto rec = h.store->get("web-01");
    ASSERT_TRUE(rec);
    EXPECT_FALSE(rec->has_value());
    EXPECT_EQ(pve.vm_count(), 0);
    EXPECT_EQ(lc::to_json(*plan).dump().find(pve.options().token_secret), std::string::npos);
}

TEST(ProxmoxLifecycle, FailingCloneIsRolledBackAndRetriedCleanly) {
    Stage stage;
    auto& [pve, dir, h] = stage;
    pve.inject_task_failures(
        "qmclone", 1,
        "clone failed: lvcreate 'pve/vm-100-disk-0' error: Volume group \"pve\" has insufficient free space");
    auto lifecycle = h.make();
    auto r = lifecycle->create(h.site, "web-01");
    EXPECT_FALSE(r.ok);
    EXPECT_NE(r.message.find("insufficient free space"), std::string::npos) << r.message;  // Proxmox's own words
    EXPECT_EQ(pve.vm_count(), 0);
    auto rec = h.store->get("web-01");
    ASSERT_TRUE(rec && *rec);
    EXPECT_EQ((*rec)->state, lc::State::failed);
    EXPECT_EQ((*rec)->failed_step, "cloned");
    auto receipts = h.store->receipts("web-01");
    ASSERT_TRUE(receipts);
    EXPECT_EQ(receipts->back().step, "rollback");

    auto again = lifecycle->create(h.site, "web-01");
    EXPECT_TRUE(again.ok) << again.message;
    EXPECT_EQ(pve.vm_count(), 1);
    expect_no_secrets(h, r.message);
}

TEST(ProxmoxLifecycle, FailureAfterCloneDestroysTheUnbootedVm) {
    Stage stage;
    auto& [pve, dir, h] = stage;
    pve.inject_task_failures("resize", 1, "command 'lvextend' failed: exit code 5");
    auto lifecycle = h.make();
    auto r = lifecycle->create(h.site, "web-01");
    EXPECT_FALSE(r.ok);
    EXPECT_NE(r.message.find("lvextend"), std::string::npos) << r.message;
    EXPECT_NE(r.message.find("rolled back"), std::string::npos) << r.message;
    EXPECT_EQ(pve.vm_count(), 0);
    auto again = lifecycle->create(h.site, "web-01");
    EXPECT_TRUE(again.ok) << again.message;
    EXPECT_EQ(pve.vm_count(), 1);
}

TEST(ProxmoxLifecycle, SurvivesLockTimeoutsNoWorkerAnd5xxBursts) {
    Stage stage;
    auto& [pve, dir, h] = stage;
    auto lifecycle = h.make();
    pve.inject_lock_timeouts(2);
    pve.inject_no_worker(1);
    pve.inject_get_errors(3, 503);
    auto r = lifecycle->create(h.site, "web-01");
    ASSERT_TRUE(r.ok) << r.message;
    EXPECT_EQ(pve.vm_count(), 1);
    EXPECT_EQ(pve.clone_requests(100), 1);
    auto receipts = h.store->receipts("web-01");
    ASSERT_TRUE(receipts);
    bool retried = false;
    for (const auto& x : *receipts) {
        for (const auto& c : x.calls) {
            if (c.value("attempt", 1) > 1) retried = true;
        }
    }
    EXPECT_TRUE(retried);
}

TEST(ProxmoxLifecycle, WrongTokenIsRefusedWithoutEchoingTheSecret) {
    Stage stage;
    auto& [pve, dir, h] = stage;
    h.site.info.proxmox[0].token_secret = "wrong-secret-1234567890";
    auto lifecycle = h.make();
    auto r = lifecycle->create(h.site, "web-01");
    EXPECT_FALSE(r.ok);
    EXPECT_NE(r.message.find("authentication failure"), std::string::npos) << r.message;
    EXPECT_EQ(r.message.find("wrong-secret-1234567890"), std::string::npos);
    EXPECT_EQ(h.everything_written().find("wrong-secret-1234567890"), std::string::npos);
}

TEST(ProxmoxLifecycle, MalformedSshKeyIsReportedWithProxmoxsMessage) {
    Stage stage;
    auto& [pve, dir, h] = stage;
    h.site.nodes["web-01"].resolved["users"][1]["ssh_keys"] = json::array({"not a key"});
    auto lifecycle = h.make();
    auto r = lifecycle->create(h.site, "web-01");
    EXPECT_FALSE(r.ok);
    EXPECT_NE(r.message.find("sshkeys: SSH public key validation error"), std::string::npos) << r.message;
    EXPECT_NE(r.message.find("HTTP 400"), std::string::npos) << r.message;
    EXPECT_EQ(pve.vm_count(), 0);  // rolled back: never booted
    expect_no_secrets(h, r.message);
}

void provision(Harness& h, lc::Lifecycle& lifecycle) {
    auto r = lifecycle.create(h.site, "web-01");
    ASSERT_TRUE(r.ok) << r.message;
}

TEST(ProxmoxLifecycle, DestroyAllowImmediate) {
    Stage stage;
    auto& [pve, dir, h] = stage;
    auto lifecycle = h.make();
    provision(h, *lifecycle);
    auto d = lifecycle->destroy(h.site, "web-01");
    ASSERT_TRUE(d.ok) << d.message;
    EXPECT_EQ(d.state, lc::State::decommissioned);
    EXPECT_FALSE(pve.vm_exists(100));
    EXPECT_TRUE(pve.backups().empty());
    EXPECT_TRUE(h.issuer.revoked.count("web-01"));
    auto again = lifecycle->destroy(h.site, "web-01");
    EXPECT_TRUE(again.ok);
    expect_no_secrets(h);
}

TEST(ProxmoxLifecycle, DestroyRequiresFinalBackup) {
    Stage stage;
    auto& [pve, dir, h] = stage;
    h.site.nodes["web-01"].decommission = site::DecommissionPolicy::requires_final_backup;
    auto lifecycle = h.make();
    provision(h, *lifecycle);
    auto d = lifecycle->destroy(h.site, "web-01");
    ASSERT_TRUE(d.ok) << d.message;
    EXPECT_EQ(pve.backups(), std::vector<std::int64_t>{100});
    EXPECT_FALSE(pve.vm_exists(100));
}

TEST(ProxmoxLifecycle, FailedBackupKeepsTheVm) {
    Stage stage;
    auto& [pve, dir, h] = stage;
    h.site.nodes["web-01"].decommission = site::DecommissionPolicy::requires_final_backup;
    auto lifecycle = h.make();
    provision(h, *lifecycle);
    pve.inject_task_failures("vzdump", 1, "job errors");
    auto d = lifecycle->destroy(h.site, "web-01");
    EXPECT_FALSE(d.ok);
    EXPECT_NE(d.message.find("job errors"), std::string::npos) << d.message;
    EXPECT_TRUE(pve.vm_exists(100));
    auto retry = lifecycle->destroy(h.site, "web-01");
    EXPECT_TRUE(retry.ok) << retry.message;
    EXPECT_FALSE(pve.vm_exists(100));
}

TEST(ProxmoxLifecycle, DestroyRequiresMigrationFirst) {
    Stage stage;
    auto& [pve, dir, h] = stage;
    auto& node = h.site.nodes["web-01"];
    node.decommission = site::DecommissionPolicy::requires_migration_first;
    node.resolved["stacks"] = json::array({{{"name", "metrics"}, {"compose", "x"}, {"env", json::object()}}});
    auto lifecycle = h.make();
    provision(h, *lifecycle);
    auto refused = lifecycle->destroy(h.site, "web-01");
    EXPECT_FALSE(refused.ok);
    EXPECT_NE(refused.message.find("metrics"), std::string::npos) << refused.message;
    EXPECT_TRUE(pve.vm_exists(100));
    EXPECT_EQ((*h.store->get("web-01"))->state, lc::State::active);
    node.resolved["stacks"] = json::array();
    auto d = lifecycle->destroy(h.site, "web-01");
    EXPECT_TRUE(d.ok) << d.message;
    EXPECT_FALSE(pve.vm_exists(100));
}

TEST(ProxmoxLifecycle, ValidatingWaitsForThePlatformReadyReport) {
    Stage stage;
    auto& [pve, dir, h] = stage;
    h.reports.all_ready = false;
    auto lifecycle = h.make();
    auto r = lifecycle->create(h.site, "web-01");
    EXPECT_FALSE(r.ok);
    EXPECT_EQ(r.state, lc::State::validating);
    EXPECT_NE(r.message.find("still validating"), std::string::npos);
    h.reports.ready.insert("web-01");
    auto again = lifecycle->create(h.site, "web-01");
    EXPECT_TRUE(again.ok) << again.message;
    EXPECT_EQ(pve.clone_requests(100), 1);
}

}  // namespace
}  // namespace nodeform::test

namespace nodeform::test {
namespace {

int requests_to(const PveStandin& pve, const std::string& needle) {
    int n = 0;
    for (const auto& line : pve.request_log())
        n += line.find(needle) != std::string::npos ? 1 : 0;
    return n;
}

TEST(ProxmoxLifecycle, BatchReservesDistinctFreeVmidsInOnePass) {
    PveStandin pve(fast_standin());
    pve.add_template("pve1", 9000, "debian12-tmpl");
    pve.add_vm("pve1", 102, "someone-else", false);  // taken in Proxmox before the batch
    TempDir dir;
    Harness h(pve, db_path(dir), 20);
    h.site.nodes["web-20"].placement.vmid = 106;  // fixed by the site: never handed to another node
    std::vector<std::string> names;
    for (const auto& [name, node] : h.site.nodes)
        names.push_back(name);
    std::map<std::string, std::int64_t> reserved;
    std::int64_t intruder = 0;
    auto lifecycle = h.make([&](const std::string& point) {
        if (point != "after:vmids_reserved") return;
        auto all = h.store->all();
        ASSERT_TRUE(all);
        for (const auto& r : *all)
            reserved[r.identity] = r.vmid;
        // The batch read cluster/resources once, and no node cloned or ran its gates yet.
        EXPECT_EQ(requests_to(pve, "/cluster/resources"), 1);
        EXPECT_EQ(requests_to(pve, "/clone"), 0);
        // Someone else takes web-05's reserved VMID in Proxmox before web-05's gate runs.
        intruder = reserved["web-05"];
        pve.add_vm("pve1", intruder, "intruder", false);
    });
    pve.reset_request_log();
    auto results = lifecycle->create_many(h.site, names, 20);

    ASSERT_EQ(reserved.size(), 19u);  // web-20's VMID is the site's, checked by its own gate
    EXPECT_EQ(reserved.count("web-20"), 0u);
    std::set<std::int64_t> distinct;
    for (const auto& [id, v] : reserved) {
        EXPECT_GE(v, 100);
        EXPECT_LE(v, 199);
        EXPECT_NE(v, 102) << id;
        EXPECT_NE(v, 106) << id;
        distinct.insert(v);
    }
    EXPECT_EQ(distinct.size(), 19u);

    std::set<std::int64_t> vmids;
    for (const auto& r : results) {
        EXPECT_TRUE(r.ok) << r.message;
        auto rec = h.store->get(r.identity);
        ASSERT_TRUE(rec && *rec);
        const auto v = (*rec)->vmid;
        vmids.insert(v);
        EXPECT_EQ(pve.clone_requests(v), 1) << r.identity;
        if (r.identity == "web-20") {
            EXPECT_EQ(v, 106);
        } else if (r.identity != "web-05") {
            EXPECT_EQ(v, reserved[r.identity]) << r.identity;  // the gate kept it
        }
    }
    EXPECT_EQ(vmids.size(), 20u);
    EXPECT_EQ(vmids.count(102), 0u);
    EXPECT_EQ(vmids.count(intruder), 0u);  // web-05 was given another VMID by its gate
    EXPECT_EQ(pve.vm_config(102)["name"], "someone-else");
    EXPECT_EQ(pve.vm_config(intruder)["name"], "intruder");
    EXPECT_EQ(pve.clone_requests(intruder), 0);
    EXPECT_EQ(pve.vm_count(), 22);
    expect_no_secrets(h);
}

TEST(ProxmoxLifecycle, CrashAfterBatchReservationResumesWithTheSameVmid) {
    PveStandin pve(fast_standin());
    pve.add_template("pve1", 9000, "debian12-tmpl");
    pve.add_vm("pve1", 100, "someone-else", false);
    TempDir dir;
    std::map<std::string, std::int64_t> reserved;
    {
        Harness h(pve, db_path(dir), 3);
        auto lifecycle = h.make([](const std::string& p) {
            if (p == "after:vmids_reserved") throw SimulatedCrash{p};
        });
        EXPECT_THROW((void)lifecycle->create_many(h.site, {"web-01", "web-02", "web-03"}, 3), SimulatedCrash);
        auto all = h.store->all();
        ASSERT_TRUE(all);
        for (const auto& r : *all) {
            reserved[r.identity] = r.vmid;
            EXPECT_EQ(r.state, lc::State::planned);
            EXPECT_TRUE(r.step.empty());
        }
    }
    EXPECT_EQ(reserved, (std::map<std::string, std::int64_t>{{"web-01", 101}, {"web-02", 102}, {"web-03", 103}}));
    EXPECT_EQ(pve.vm_count(), 1);  // persisted before any clone

    Harness h2(pve, db_path(dir), 3);  // the restarted controller
    // web-01 is abandoned meanwhile: its VMID 101 is free again, yet web-03 keeps its own reservation.
    auto w1 = h2.store->get("web-01");
    ASSERT_TRUE(w1 && *w1);
    lc::NodeRecord abandoned = **w1;
    abandoned.state = lc::State::abandoned;
    ASSERT_TRUE(h2.store->put(abandoned));
    auto lifecycle = h2.make();
    auto r3 = lifecycle->create(h2.site, "web-03");
    ASSERT_TRUE(r3.ok) << r3.message;
    auto rec3 = h2.store->get("web-03");
    ASSERT_TRUE(rec3 && *rec3);
    EXPECT_EQ((*rec3)->vmid, 103);
    EXPECT_EQ(pve.clone_requests(103), 1);

    auto rest = lifecycle->create_many(h2.site, {"web-01", "web-02"}, 2);
    for (const auto& r : rest)
        EXPECT_TRUE(r.ok) << r.message;
    auto rec2 = h2.store->get("web-02");
    ASSERT_TRUE(rec2 && *rec2);
    EXPECT_EQ((*rec2)->vmid, 102);
    auto rec1 = h2.store->get("web-01");
    ASSERT_TRUE(rec1 && *rec1);
    EXPECT_EQ((*rec1)->vmid, 101);
    for (std::int64_t v : {101, 102, 103})
        EXPECT_EQ(pve.clone_requests(v), 1) << v;
    EXPECT_EQ(pve.vm_count(), 4);
    expect_no_secrets(h2);
}

// Plan's clone and configuration calls are what create sends: the same request, the same smbios1 size
// (with the template's own SMBIOS fields, which the clone keeps).
TEST(ProxmoxLifecycle, PlanShowsWhatCreateSends) {
    for (const std::string& template_smbios :
         {std::string("uuid=7d3c1a52-4c0e-4f7e-9a59-1f0c1e2d3b4a"),
          "uuid=7d3c1a52-4c0e-4f7e-9a59-1f0c1e2d3b4a,manufacturer=" + base64_encode("QEMU") +
              ",product=" + base64_encode("Standard PC (Q35 + ICH9, 2009)") + ",base64=1",
          std::string("uuid=7d3c1a52-4c0e-4f7e-9a59-1f0c1e2d3b4a,manufacturer=Acme,family=lab")}) {
        SCOPED_TRACE(template_smbios);
        Stage stage;
        auto& [pve, dir, h] = stage;
        pve.set_config(9000, "smbios1", template_smbios);
        auto lifecycle = h.make();
        auto plan = lifecycle->plan(h.site, "web-01");
        ASSERT_TRUE(plan) << plan.message();
        ASSERT_TRUE(plan->ok());
        std::string seed_gate, clone_params, config_params;
        for (const auto& g : plan->gates) {
            if (g.name == "seed") seed_gate = g.detail;
        }
        for (const auto& c : plan->calls) {
            if (c.path == "/nodes/pve1/qemu/9000/clone") clone_params = c.params;
            if (c.method == "PUT" && c.path == "/nodes/pve1/qemu/100/config") config_params = c.params;
        }
        auto r = lifecycle->create(h.site, "web-01");
        ASSERT_TRUE(r.ok) << r.message;
        json cfg = pve.vm_config(100);
        const std::string smbios = cfg["smbios1"];
        const std::string size = std::to_string(smbios.size());
        EXPECT_NE(seed_gate.find("smbios1 will be " + size + " of 512"), std::string::npos) << seed_gate;
        EXPECT_NE(config_params.find("(smbios1: " + size + " of 512"), std::string::npos) << config_params;
        for (const char* field : {"manufacturer", "product", "family"}) {  // kept from the template
            EXPECT_EQ(smbios.find(std::string(field) + "=") != std::string::npos,
                      template_smbios.find(std::string(field) + "=") != std::string::npos)
                << field << " in " << smbios;
        }
        EXPECT_NE(clone_params.find("name=" + cfg["name"].get<std::string>()), std::string::npos) << clone_params;
        EXPECT_NE(clone_params.find("description='" + cfg["description"].get<std::string>() + "'"), std::string::npos)
            << clone_params;
        // Every plain value the plan shows for the configuration is the value Proxmox holds afterwards.
        for (const char* key : {"cores", "memory", "balloon", "agent", "onboot", "ciuser", "ipconfig0", "tags",
                                "nameserver", "searchdomain"}) {
            EXPECT_NE(config_params.find(std::string(key) + "=" + cfg[key].get<std::string>()), std::string::npos)
                << key << " in " << config_params;
        }
    }
}

// "VM N is not running" is a stopped VM, not a guest agent still starting: the wait ends at once.
TEST(ProxmoxLifecycle, AVmThatStopsDuringTheAgentWaitFailsAtOnce) {
    Stage stage;
    auto& [pve, dir, h] = stage;
    pve.set_boot_ms(std::chrono::milliseconds(400));  // the guest powers off 200 ms into its boot
    pve.inject_guest_stops(1);
    auto lifecycle = h.make();  // agent timeout 10 s
    auto r = lifecycle->create(h.site, "web-01");
    EXPECT_FALSE(r.ok);
    EXPECT_NE(r.message.find("agent_ready failed: VM 100 stopped while waiting for its guest agent"), std::string::npos)
        << r.message;
    EXPECT_NE(r.message.find("console"), std::string::npos) << r.message;
    EXPECT_EQ(r.message.find("qemu-guest-agent installed"), std::string::npos) << r.message;
    EXPECT_EQ(pve.vm_status(100), "stopped");
    auto receipts = h.store->receipts("web-01");
    ASSERT_TRUE(receipts);
    ASSERT_EQ(receipts->back().step, "agent_ready");
    int pings = 0;
    for (const auto& c : receipts->back().calls) {
        if (c.value("path", "").find("/agent/ping") != std::string::npos) ++pings;
    }
    EXPECT_GT(pings, 0);
    // Still "QEMU guest agent is not running" pings before the stop; none long after: the step failed on the
    // first "VM 100 is not running". 400 ms of boot at 10 ms per ping is under 40 pings; a 10 s wait is ~1000.
    EXPECT_LT(pings, 100);
}

// qemu-server forks the clone worker before it takes the locks: the lock timeout arrives as the task's exit
// status and is retried like the HTTP-level one, after reading the VM's real state (no second VM).
TEST(ProxmoxLifecycle, ACloneLockTimeoutInTheTaskIsRetried) {
    Stage stage;
    auto& [pve, dir, h] = stage;
    pve.inject_task_lock_timeouts(2);
    auto lifecycle = h.make();
    auto r = lifecycle->create(h.site, "web-01");
    ASSERT_TRUE(r.ok) << r.message;
    EXPECT_EQ(pve.clone_requests(100), 3);  // two task-level lock timeouts, then the clone
    EXPECT_EQ(pve.vm_count(), 1);
    auto receipts = h.store->receipts("web-01");
    ASSERT_TRUE(receipts);
    bool saw_lock_exit = false;
    for (const auto& x : *receipts) {
        for (const auto& c : x.calls) {
            if (c.value("exitstatus", "").find("can't lock file") != std::string::npos) saw_lock_exit = true;
        }
    }
    EXPECT_TRUE(saw_lock_exit);
}

// More task-level lock timeouts than the step's attempts: the clone fails with Proxmox's words, no VM left.
TEST(ProxmoxLifecycle, PersistentCloneLockTimeoutsFailAfterTheAttempts) {
    Stage stage;
    auto& [pve, dir, h] = stage;
    pve.inject_task_lock_timeouts(10);
    auto lifecycle = h.make();
    auto r = lifecycle->create(h.site, "web-01");
    EXPECT_FALSE(r.ok);
    EXPECT_NE(r.message.find("got timeout"), std::string::npos) << r.message;
    EXPECT_EQ(pve.clone_requests(100), 4);
    EXPECT_EQ(pve.vm_count(), 0);
}

}  // namespace
}  // namespace nodeform::test
