// The Proxmox path on a real VM (label e2e): `node create` of a provider-proxmox node through the real Proxmox
// client, against the Proxmox VE stand-in in its QEMU-backed mode (tests/support/pve_standin.hpp): the clone,
// the configuration (sizing, cloud-init, the seed in smbios1), the resize and the start the lifecycle sends
// become a real guest, launched by the qemu provider's launcher from exactly those settings; the guest finds
// its seed in SMBIOS, enrolls, converges and reports platform-ready; `node destroy` leaves nothing.
#include "pve_standin.hpp"
#include "qemu_e2e.hpp"

namespace nodeform::test {
namespace {

constexpr const char* kTokenSecret = "7c1e2f9a-fake-4000-8000-00000000e2e1";  // FAKE, the stand-in's

TEST_F(QemuE2e, ANodeCreatedThroughTheProxmoxClientBootsARealGuestThatReachesReady) {
    PveStandinOptions options;
    options.token_id = "nodeform@pve!e2e";
    options.token_secret = kTokenSecret;
    options.qemu_template = template_;
    options.qemu_state_dir = vms_;
    PveStandin pve(options);
    ASSERT_GT(pve.port(), 0);
    pve.add_template("pve1", 9000, "debian12-tmpl", 3);

    // The site: one Proxmox endpoint (the stand-in, by --endpoint) and vm-01 on it with VMID 100.
    std::ofstream(site_ + "/site.yaml", std::ios::app)
        << "placement:\n  sites:\n    - name: lab\n      vmid_min: 100\n      vmid_max: 199\n      hosts: [pve1]\n"
           "proxmox:\n  endpoints:\n    - name: pve-e2e\n      url: https://pve1.e2e.nodeform.test:8006\n"
           "      token_id: nodeform@pve!e2e\n      token_secret: pve-e2e\n      fingerprint: "
           "\"3A:7F:19:C2:55:0B:8E:41:D6:92:AF:07:6C:E3:1B:88:04:5D:F2:A9:60:3E:C7:18:B4:29:91:0F:DA:6E:73:C5\"\n";
    write_text(site_ + "/nodes/vm-01.yaml",
               "type: vm\nspec: e2e\npreset: small\noverrides:\n  cores: 2\n  memory_mb: 1536\n  disk_gb: 4\n"
               "proxmox:\n  endpoint: pve-e2e\n  site: lab\n  node: pve1\n  template_vmid: 9000\n"
               "  storage: local-lvm\n  bridge: vmbr0\n  vmid: 100\ndecommission: allow_immediate_destroy\n");
    std::ofstream(site_ + "/secrets.yaml", std::ios::app) << "proxmox:\n  pve-e2e: \"" << kTokenSecret << "\"\n";
    provider_args_ = {"--endpoint", "pve-e2e=" + pve.base_url()};

    ControllerProcess controller(site_, state_, {"--tls-hosts", "10.0.2.2"}, /*tls=*/true);
    ASSERT_GT(controller.port(), 0) << "the controller did not start";

    int code = -1;
    std::string out = create(controller.port(), "12m", code);
    ASSERT_EQ(code, 0) << out << "\n--- console tail ---\n" << console_tail();
    EXPECT_EQ(node_status(), "ready") << node_entry();

    // The guest was built from what Proxmox received: its sizing, its smbios1 (uuid kept, seed as the serial).
    const json config = pve.vm_config(100);
    ASSERT_TRUE(config.is_object());
    EXPECT_EQ(config.value("cores", ""), "2");
    EXPECT_EQ(config.value("memory", ""), "1536");
    EXPECT_EQ(guest({"/usr/bin/nproc"}).out, "2\n");
    const std::string smbios1 = config.value("smbios1", "");
    const auto uuid_at = smbios1.find("uuid=");
    ASSERT_NE(uuid_at, std::string::npos) << smbios1;
    const std::string uuid = smbios1.substr(uuid_at + 5, 36);
    EXPECT_EQ(guest({"/usr/bin/cat", "/sys/class/dmi/id/product_uuid"}).out, uuid + "\n");
    EXPECT_EQ(guest({"/usr/bin/test", "-f", "/var/lib/nodeform/platform-ready"}).exit_code, 0);
    EXPECT_NE(guest({"/usr/bin/id", "alice"}).out.find("uid=2001(alice)"), std::string::npos);
    EXPECT_EQ(guest({"/usr/bin/cat", "/etc/nodeform-e2e/app.conf"}).out, "greeting = hello from the e2e spec\n");
    // The disk was resized to the node's 4 GB (the template is smaller).
    auto size = guest({"/usr/bin/cat", "/sys/block/vda/size"}).out;
    EXPECT_EQ(size, std::to_string(4ull * 1024 * 1024 * 1024 / 512) + "\n");

    destroy_and_expect_nothing_left(credential_probe(controller.port()));
    EXPECT_FALSE(pve.vm_exists(100));
}

}  // namespace
}  // namespace nodeform::test
