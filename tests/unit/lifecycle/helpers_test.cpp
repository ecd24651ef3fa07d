// Pure parts of the Proxmox client and lifecycle: encodings, UPIDs, smbios1, config inputs, the store.
#include <gtest/gtest.h>

#include "nodeform/base64.hpp"
#include "nodeform/controller/lifecycle/lifecycle.hpp"
#include "nodeform/controller/providers/proxmox.hpp"
#include "nodeform/seed.hpp"
#include "test_paths.hpp"

namespace nodeform::controller {
namespace {

namespace pv = providers;
namespace lc = lifecycle;

TEST(ProxmoxHelpers, FormEncodingKeepsUnreservedAndEscapesTheRest) {
    EXPECT_EQ(pv::form_encode({{"name", "web-01"}, {"ipconfig0", "ip=10.0.0.5/24,gw=10.0.0.1"}}),
              "name=web-01&ipconfig0=ip%3D10.0.0.5%2F24%2Cgw%3D10.0.0.1");
    EXPECT_EQ(pv::form_encode({{"a b", "c+d&e"}}), "a%20b=c%2Bd%26e");
}

TEST(ProxmoxHelpers, SshKeysAreEncodedTwiceOnTheWire) {
    std::vector<std::string> keys = {"ssh-ed25519 AAAAC3Nza alice@laptop", "ssh-rsa AAAAB3Nza+/= bob"};
    std::string once = pv::encode_sshkeys(keys);
    EXPECT_EQ(once, "ssh-ed25519%20AAAAC3Nza%20alice%40laptop%0Assh-rsa%20AAAAB3Nza%2B%2F%3D%20bob");
    std::string wire = pv::form_encode({{"sshkeys", once}});
    EXPECT_EQ(wire.find("%2520"), std::string("sshkeys=ssh-ed25519").size());  // '%' itself escaped: double
    auto first = pv::percent_decode(wire.substr(8), true);
    ASSERT_TRUE(first);
    EXPECT_EQ(*first, once);
    auto second = pv::percent_decode(*first, false);
    ASSERT_TRUE(second);
    EXPECT_EQ(*second, "ssh-ed25519 AAAAC3Nza alice@laptop\nssh-rsa AAAAB3Nza+/= bob");
    EXPECT_FALSE(pv::percent_decode("bad%2", false));
    EXPECT_FALSE(pv::percent_decode("bad%zz", false));
}

TEST(ProxmoxHelpers, UpidRoundTripsAndRejectsMalformed) {
    const std::string text = "UPID:pve1:00001A2B:00C0FFEE:6560F0A0:qmclone:9000:root@pam!nodeform:";
    auto u = pv::parse_upid(text);
    ASSERT_TRUE(u);
    EXPECT_EQ(u->node, "pve1");
    EXPECT_EQ(u->pid, 0x1a2bu);
    EXPECT_EQ(u->pstart, 0xc0ffeeu);
    EXPECT_EQ(u->starttime, 0x6560f0a0);
    EXPECT_EQ(u->type, "qmclone");
    EXPECT_EQ(u->id, "9000");
    EXPECT_EQ(u->user, "root@pam!nodeform");
    EXPECT_EQ(pv::format_upid(*u), text);
    EXPECT_FALSE(pv::parse_upid("UPID:pve1:zz:00C0FFEE:6560F0A0:qmclone:9000:root@pam:"));
    EXPECT_FALSE(pv::parse_upid("UPID:pve1:1:2:3:qmclone:9000:root@pam"));   // no trailing colon
    EXPECT_FALSE(pv::parse_upid("UPID:../x:1:2:3:qmclone:9000:root@pam:"));  // node is not a name
    EXPECT_FALSE(pv::parse_upid("TASK:pve1:1:2:3:qmclone:9000:root@pam:"));
}

TEST(ProxmoxHelpers, Smbios1KeepsTheUuidAndStaysWithin512) {
    auto s = pv::build_smbios1("uuid=3f0c2a8e-1111-4222-8333-444455556666", "nf1:abc");
    ASSERT_TRUE(s) << s.message();
    EXPECT_EQ(*s, "uuid=3f0c2a8e-1111-4222-8333-444455556666,serial=" + base64_encode("nf1:abc") + ",base64=1");
    // Other fields survive, re-encoded, whether or not they were base64 before.
    auto t = pv::build_smbios1("uuid=u1,manufacturer=QUNNRQ==,base64=1", "x");
    ASSERT_TRUE(t);
    EXPECT_NE(t->find("manufacturer=QUNNRQ=="), std::string::npos) << *t;
    auto too_long = pv::build_smbios1("uuid=u", std::string(400, 'a'));
    ASSERT_FALSE(too_long);
    EXPECT_NE(too_long.message().find("512"), std::string::npos);
    EXPECT_EQ(too_long.message().find("template"), std::string::npos) << too_long.message();
    // Fields kept from the template count, and the refusal names them.
    auto crowded =
        pv::build_smbios1("uuid=u,manufacturer=" + std::string(200, 'm') + ",product=p", std::string(200, 'a'));
    ASSERT_FALSE(crowded);
    EXPECT_NE(crowded.message().find("kept from the template (manufacturer, product)"), std::string::npos)
        << crowded.message();
}

// What gates and plan size smbios1 with: the template's fields, a uuid of the clone's length, no template flag.
TEST(LifecycleConfig, ProjectedCloneKeepsTheTemplatesSmbiosFields) {
    pv::VmState tmpl;
    tmpl.exists = true;
    tmpl.is_template = true;
    tmpl.config = {{"template", "1"}, {"smbios1", "uuid=3f0c2a8e-1111-4222-8333-444455556666,product=UTE=,base64=1"}};
    auto clone = lc::projected_clone(tmpl);
    EXPECT_FALSE(clone.is_template);
    EXPECT_EQ(clone.config.count("template"), 0u);
    EXPECT_EQ(clone.config["smbios1"].size(), tmpl.config["smbios1"].size());
    EXPECT_NE(clone.config["smbios1"].find(",product=UTE=,base64=1"), std::string::npos);
    tmpl.config.erase("smbios1");  // Proxmox gives every clone a uuid
    EXPECT_EQ(lc::projected_clone(tmpl).config["smbios1"].size(), std::string("uuid=").size() + 36);
}

TEST(ProxmoxHelpers, SizesParse) {
    EXPECT_EQ(pv::parse_size("20G"), 20ULL << 30);
    EXPECT_EQ(pv::parse_size("512M"), 512ULL << 20);
    EXPECT_EQ(pv::parse_size("1.5G"), 3ULL << 29);
    EXPECT_FALSE(pv::parse_size("G"));
    EXPECT_FALSE(pv::parse_size("10Q"));
}

site::Node sample_node() {
    site::Node n;
    n.name = "web-01";
    n.sizing = {4, 4096, 32, 0};
    n.placement.bridge = "vmbr1";
    n.resolved = nlohmann::json::parse(R"({
      "hostname": {"hostname": "web-01", "domain": "lab.example.net"},
      "network": {"mode": "dhcp"},
      "users": [{"name": "ops", "sudo": true, "state": "present",
                 "ssh_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 ops@x", "ssh-rsa AAAAB3NzaC1yc2E ops@y"]}]
    })");
    return n;
}

TEST(LifecycleConfig, BuildsCloudInitAndSeedWithoutShowingSecrets) {
    pv::VmState vm;
    vm.config["net0"] = "virtio=BC:24:11:AA:BB:CC,bridge=vmbr0,firewall=1";
    vm.config["smbios1"] = "uuid=3f0c2a8e-1111-4222-8333-444455556666";
    auto cfg = lc::build_config(sample_node(), vm, "nf1:SECRETSEED");
    ASSERT_TRUE(cfg) << cfg.message();
    const auto& p = cfg->params;
    EXPECT_EQ(p.at("cores"), "4");
    EXPECT_EQ(p.at("memory"), "4096");
    EXPECT_EQ(p.at("balloon"), "0");
    EXPECT_EQ(p.at("agent"), "1");
    EXPECT_EQ(p.at("ipconfig0"), "ip=dhcp");
    EXPECT_EQ(p.at("searchdomain"), "lab.example.net");
    EXPECT_EQ(p.at("ciuser"), "ops");
    EXPECT_EQ(p.at("net0"), "virtio=BC:24:11:AA:BB:CC,bridge=vmbr1,firewall=1");
    EXPECT_EQ(p.at("smbios1").rfind("uuid=3f0c2a8e-1111-4222-8333-444455556666,serial=", 0), 0u);
    EXPECT_EQ(cfg->shown.at("sshkeys"), "[2 key(s)]");
    for (const auto& [k, v] : cfg->shown) {
        EXPECT_EQ(v.find(base64_encode("nf1:SECRETSEED")), std::string::npos) << k;
        EXPECT_EQ(v.find("SECRETSEED"), std::string::npos) << k;
    }
}

TEST(LifecycleConfig, RefusesValuesThatWouldBreakProxmoxFormats) {
    auto n = sample_node();
    n.resolved["network"] = {{"mode", "static"}, {"address", "10.0.0.5/24,gw=evil"}};
    EXPECT_FALSE(lc::build_config(n, {}, "nf1:x"));
    n = sample_node();
    n.resolved["users"][0]["name"] = "bad\nname";
    EXPECT_FALSE(lc::build_config(n, {}, "nf1:x"));
}

TEST(LifecycleStore, MigratesOnceAndRoundTrips) {
    test::TempDir dir;
    const std::string db = dir.path() + "/nodeform.db";
    {
        auto s = lc::LifecycleStore::open(db);
        ASSERT_TRUE(s) << s.message();
        lc::NodeRecord r;
        r.identity = "web-01";
        r.state = lc::State::validating;
        r.step = "agent_ready";
        r.vmid = 105;
        r.ips = {"10.0.0.5/24"};
        ASSERT_TRUE((*s)->put(r));
        lc::Receipt x;
        x.identity = "web-01";
        x.step = "cloned";
        x.outcome = "ok";
        x.state_after = "provisioning";
        x.calls.push_back({{"method", "POST"}, {"upid", "UPID:pve1:1:2:3:qmclone:9000:u:"}});
        ASSERT_TRUE((*s)->add_receipt(x));
    }
    auto s = lc::LifecycleStore::open(db);  // second open: no migration re-applied
    ASSERT_TRUE(s) << s.message();
    auto r = (*s)->get("web-01");
    ASSERT_TRUE(r && *r);
    EXPECT_EQ((*r)->state, lc::State::validating);
    EXPECT_EQ((*r)->vmid, 105);
    EXPECT_EQ((*r)->ips, std::vector<std::string>{"10.0.0.5/24"});
    auto receipts = (*s)->receipts("web-01");
    ASSERT_TRUE(receipts);
    ASSERT_EQ(receipts->size(), 1u);
    EXPECT_EQ((*receipts)[0].calls[0]["upid"], "UPID:pve1:1:2:3:qmclone:9000:u:");
    EXPECT_FALSE(*(*s)->get("nobody"));
}

TEST(LifecycleState, NamesRoundTrip) {
    for (auto st :
         {lc::State::planned, lc::State::provisioning, lc::State::registered, lc::State::validating, lc::State::active,
          lc::State::decommissioning, lc::State::decommissioned, lc::State::failed, lc::State::abandoned}) {
        EXPECT_EQ(lc::parse_state(lc::to_string(st)), st);
    }
    EXPECT_FALSE(lc::parse_state("bogus"));
}

TEST(LifecycleHelpers, ReportableAddressesSkipLoopbackAndLinkLocal) {
    std::vector<pv::NetInterface> nics = {
        {"lo", "00:00:00:00:00:00", {"127.0.0.1/8", "::1/128"}},
        {"eth0",
         "bc:24:11:00:00:01",
         {"10.20.0.11/24", "169.254.3.4/16", "fe80::be24:11ff:fe00:1/64", "FE80::1/64", "febf::1/64",
          "2001:db8::11/64"}},
        {"eth1", "bc:24:11:00:00:02", {"fec0::1/10", "192.168.7.2/24", "10.20.0.11/24"}},
    };
    EXPECT_EQ(lc::reportable_addresses(nics),
              (std::vector<std::string>{"10.20.0.11/24", "2001:db8::11/64", "fec0::1/10", "192.168.7.2/24"}));
    EXPECT_TRUE(lc::reportable_addresses({}).empty());
}

}  // namespace
}  // namespace nodeform::controller
