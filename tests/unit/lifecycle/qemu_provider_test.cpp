// The qemu provider without QEMU: the -smbios argument against what the Proxmox path writes, the argv, the
// NoCloud seed, the accelerator probe, and the VM's state in its directory (a fake process runner answers
// qemu-img, cloud-localds and qemu-system-x86_64; a fake process table stands for /proc).
#include <signal.h>

#include <filesystem>

#include <gtest/gtest.h>

#include "fake_provider.hpp"
#include "fakes/fake_process_runner.hpp"
#include "fakes/memory_logger.hpp"
#include "lifecycle_fakes.hpp"
#include "nodeform/base64.hpp"
#include "nodeform/controller/providers/proxmox.hpp"
#include "nodeform/controller/providers/qemu.hpp"
#include "nodeform/seed.hpp"
#include "test_paths.hpp"

namespace nodeform::test {
namespace {

using agent::FakeProcessRunner;
using std::chrono::milliseconds;

std::vector<std::string> after(const std::vector<std::string>& argv, const std::string& flag) {
    std::vector<std::string> values;
    for (std::size_t i = 0; i + 1 < argv.size(); ++i) {
        if (argv[i] == flag) values.push_back(argv[i + 1]);
    }
    return values;
}

TEST(QemuSmbios, DecodesWhatTheProxmoxPathWritesWithCommasDoubled) {
    Seed seed{"web-01", "https://10.0.2.2:8443", std::string(43, 't'), std::string(64, 'a')};
    const std::string compact = encode_seed_compact(seed);
    auto smbios1 = pv::build_smbios1(
        "uuid=11111111-2222-4333-8444-555555555555,manufacturer=" + base64_encode("ACME, Inc.") + ",base64=1", compact);
    ASSERT_TRUE(smbios1) << smbios1.message();
    auto arg = pv::smbios_argument(*smbios1);
    ASSERT_TRUE(arg) << arg.message();
    EXPECT_EQ(*arg, "type=1,uuid=11111111-2222-4333-8444-555555555555,manufacturer=ACME,, Inc.,serial=" + compact);
    // What the guest reads back is the seed the lifecycle encoded.
    auto serial = arg->substr(arg->find("serial=") + 7);
    auto decoded = decode_seed_compact(serial);
    ASSERT_TRUE(decoded) << decoded.message();
    EXPECT_EQ(decoded->controller_url, "https://10.0.2.2:8443");
}

TEST(QemuSmbios, RefusesAFieldThatIsNotBase64) {
    auto arg = pv::smbios_argument("uuid=1,serial=@@not-base64@@,base64=1");
    ASSERT_FALSE(arg);
    EXPECT_NE(arg.message().find("serial"), std::string::npos);
}

TEST(QemuSmbios, PlainFieldsWithoutBase64AreKeptAsGiven) {
    auto arg = pv::smbios_argument("uuid=u-1,serial=abc");
    ASSERT_TRUE(arg);
    EXPECT_EQ(*arg, "type=1,uuid=u-1,serial=abc");
}

pv::QemuOptions options(const std::string& state) {
    pv::QemuOptions o;
    o.template_image = "/images/t/nodeform-template.qcow2";
    o.state_dir = state;
    return o;
}

pv::QemuVm sample_vm() {
    pv::QemuVm vm;
    vm.vmid = 101;
    vm.name = "vm-01";
    vm.config = {{"cores", "2"},
                 {"memory", "1536"},
                 {"smbios1", "uuid=u-1,serial=" + base64_encode("nf1:xyz") + ",base64=1"},
                 {"ciuser", "alice"},
                 {"sshkeys", pv::encode_sshkeys({"ssh-ed25519 AAAA alice@laptop", "ssh-rsa BBBB a b"})},
                 {"ipconfig0", "ip=dhcp"}};
    return vm;
}

TEST(QemuArgv, BootsTheTemplateKernelWithTheOverlaySeedAgentAndConsole) {
    auto argv = pv::qemu_argv(options("/var/lib/q,x"), sample_vm(), "tcg");
    ASSERT_TRUE(argv) << argv.message();
    const auto& a = *argv;
    EXPECT_EQ(a.front(), "qemu-system-x86_64");
    EXPECT_EQ(after(a, "-accel"), std::vector<std::string>{"tcg"});
    EXPECT_EQ(after(a, "-smp"), std::vector<std::string>{"2"});
    EXPECT_EQ(after(a, "-m"), std::vector<std::string>{"1536"});
    EXPECT_EQ(after(a, "-kernel"), std::vector<std::string>{"/images/t/vmlinuz"});
    EXPECT_EQ(after(a, "-initrd"), std::vector<std::string>{"/images/t/initrd.img"});
    EXPECT_EQ(after(a, "-append"), std::vector<std::string>{"root=/dev/vda net.ifnames=0 console=ttyS0"});
    // QEMU's option syntax: the comma in the state directory doubled.
    EXPECT_EQ(after(a, "-drive"),
              (std::vector<std::string>{"file=/var/lib/q,,x/vm-101/overlay.qcow2,format=qcow2,if=virtio",
                                        "file=/var/lib/q,,x/vm-101/seed.img,format=raw,if=virtio,readonly=on"}));
    EXPECT_EQ(after(a, "-netdev"), std::vector<std::string>{"user,id=net0"});
    EXPECT_EQ(after(a, "-smbios"), std::vector<std::string>{"type=1,uuid=u-1,serial=nf1:xyz"});
    auto chardevs = after(a, "-chardev");
    ASSERT_EQ(chardevs.size(), 2u);
    EXPECT_EQ(chardevs[0], "socket,path=/var/lib/q,,x/vm-101/qga.sock,server=on,wait=off,id=qga0");
    EXPECT_EQ(chardevs[1], "file,id=console0,path=/var/lib/q,,x/vm-101/console.log");
    auto devices = after(a, "-device");
    EXPECT_NE(std::find(devices.begin(), devices.end(), "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0"),
              devices.end());
    EXPECT_EQ(after(a, "-pidfile"), std::vector<std::string>{"/var/lib/q,x/vm-101/qemu.pid"});
    EXPECT_EQ(a.back(), "-daemonize");
}

TEST(QemuArgv, RefusesBadSizingAndAnUnknownAccelerator) {
    auto vm = sample_vm();
    EXPECT_FALSE(pv::qemu_argv(options("/s"), vm, "hvf"));
    vm.config["cores"] = "2 -hda /etc/shadow";
    auto r = pv::qemu_argv(options("/s"), vm, "tcg");
    ASSERT_FALSE(r);
    EXPECT_NE(r.message().find("cores"), std::string::npos);
}

TEST(QemuNoCloud, UserDataCarriesTheCloudInitUserAndDecodedKeys) {
    auto f = pv::nocloud_files(sample_vm(), pv::qemu_mac(101));
    ASSERT_TRUE(f) << f.message();
    EXPECT_EQ(f->user_data.rfind("#cloud-config\n", 0), 0u);
    EXPECT_NE(f->user_data.find("user: \"alice\"\n"), std::string::npos);
    EXPECT_NE(f->user_data.find("  - \"ssh-ed25519 AAAA alice@laptop\"\n"), std::string::npos);
    EXPECT_NE(f->user_data.find("  - \"ssh-rsa BBBB a b\"\n"), std::string::npos);
    EXPECT_NE(f->meta_data.find("instance-id: \"u-1\""), std::string::npos);
    auto net = nlohmann::json::parse(f->network_config);
    EXPECT_EQ(net["config"][0]["mac_address"], "52:54:00:00:00:65");
    EXPECT_EQ(net["config"][0]["subnets"][0]["type"], "dhcp");
}

TEST(QemuNoCloud, StaticAddressFromIpconfig0) {
    auto vm = sample_vm();
    vm.config["ipconfig0"] = "ip=10.0.2.50/24,gw=10.0.2.2";
    vm.config["nameserver"] = "10.0.2.3";
    auto f = pv::nocloud_files(vm, pv::qemu_mac(vm.vmid));
    ASSERT_TRUE(f);
    auto net = nlohmann::json::parse(f->network_config);
    EXPECT_EQ(net["config"][0]["subnets"][0],
              (nlohmann::json{{"type", "static"}, {"address", "10.0.2.50/24"}, {"gateway", "10.0.2.2"}}));
    EXPECT_EQ(net["config"][1]["address"], nlohmann::json::array({"10.0.2.3"}));
}

TEST(QemuAccel, AnExplicitSettingRunsNoProbe) {
    FakeProcessRunner runner;
    auto o = options("/s");
    o.accel = "tcg";
    EXPECT_EQ(pv::choose_accel(o, runner, true), "tcg");
    o.accel = "kvm";
    EXPECT_EQ(pv::choose_accel(o, runner, false), "kvm");
    EXPECT_TRUE(runner.requests.empty());
}

TEST(QemuAccel, WithoutKvmDeviceItIsTcgWithoutAProbe) {
    FakeProcessRunner runner;
    EXPECT_EQ(pv::choose_accel(options("/s"), runner, false), "tcg");
    EXPECT_TRUE(runner.requests.empty());
}

TEST(QemuAccel, TheProbeIsBoundedAndOnlyAKernelThatReachedItsPanicMeansKvm) {
    FakeProcessRunner runner;
    auto o = options("/s");
    o.kvm_probe_timeout = milliseconds(1234);
    runner.handler = [](const ProcessRequest&) -> Result<ProcessResult> {
        return ProcessResult{-1, true, "[    0.000000] Linux version 6.1", ""};  // hung: killed at the deadline
    };
    EXPECT_EQ(pv::choose_accel(o, runner, true), "tcg");
    ASSERT_EQ(runner.requests.size(), 1u);
    EXPECT_EQ(runner.requests[0].timeout, milliseconds(1234));
    EXPECT_EQ(after(runner.requests[0].argv, "-accel"), std::vector<std::string>{"kvm"});
    EXPECT_NE(std::find(runner.requests[0].argv.begin(), runner.requests[0].argv.end(), "-no-reboot"),
              runner.requests[0].argv.end());

    runner.handler = [](const ProcessRequest&) -> Result<ProcessResult> {
        return ProcessResult{134, false, "", "qemu: kvm run failed"};  // aborted at once
    };
    EXPECT_EQ(pv::choose_accel(o, runner, true), "tcg");
    runner.handler = [](const ProcessRequest&) -> Result<ProcessResult> {
        return ProcessResult{0, false, "...\n[    1.2] Kernel panic - not syncing: VFS: Unable to mount root fs\n", ""};
    };
    EXPECT_EQ(pv::choose_accel(o, runner, true), "kvm");
}

// /proc as a map: PID → command line; signals end the process.
class FakeProcesses final : public pv::HostProcesses {
  public:
    explicit FakeProcesses(std::map<int, std::string>& table, std::vector<std::pair<int, int>>& signals)
        : table_(table), signals_(signals) {}
    std::optional<std::string> cmdline(int pid) override {
        auto it = table_.find(pid);
        if (it == table_.end()) return std::nullopt;
        return it->second;
    }
    bool signal(int pid, int sig) override {
        signals_.emplace_back(pid, sig);
        return table_.erase(pid) > 0;
    }

  private:
    std::map<int, std::string>& table_;
    std::vector<std::pair<int, int>>& signals_;
};

struct ProviderRig {
    TempDir temp;
    FakeClock clock;
    FakeProcessRunner runner;
    std::map<int, std::string> table;
    std::vector<std::pair<int, int>> signals;
    pv::QemuOptions o;

    ProviderRig() {
        o = options(temp.path() + "/vms");
        o.accel = "tcg";
        std::filesystem::create_directories(o.state_dir);
        runner.handler = [this](const ProcessRequest& r) -> Result<ProcessResult> {
            if (r.argv.size() > 1 && r.argv[0] == "qemu-img" && r.argv[1] == "info") {
                return ProcessResult{0, false, R"({"virtual-size": 3221225472, "format": "qcow2"})", ""};
            }
            if (r.argv[0] == "qemu-system-x86_64") {  // daemonized: writes its pidfile, then the parent exits
                auto pidfile = after(r.argv, "-pidfile").at(0);
                write_text(pidfile, "4242\n");
                std::string cmd;
                for (const auto& a : r.argv)
                    cmd += a + '\0';
                table[4242] = cmd;
            }
            return ProcessResult{0, false, "", ""};
        };
    }
    std::unique_ptr<pv::Provider> provider() {
        return pv::make_qemu_provider(o, runner, clock, std::make_unique<FakeProcesses>(table, signals));
    }
};

// VM 100 ('vm-01') cloned, configured with sample_vm()'s settings and started.
bool started(pv::Provider& p) {
    pv::CloneRequest req;
    req.newid = 100;
    req.name = "vm-01";
    return p.clone(req, {}).ok() && p.configure("local", 100, sample_vm().config, "").ok() &&
           p.start("local", 100).ok();
}

TEST(QemuProvider, CloneMakesAnOverlayOnTheTemplateAndStartTracksQemuByPid) {
    ProviderRig rig;
    auto p = rig.provider();
    pv::CloneRequest req;
    req.newid = 100;
    req.name = "vm-01";
    auto cloned = p->clone(req, {});
    ASSERT_TRUE(cloned.ok()) << cloned.error.message;
    EXPECT_EQ(cloned.value->exitstatus, "OK");
    const auto paths = pv::qemu_paths(rig.o.state_dir, 100);
    EXPECT_NE(std::find(rig.runner.commands().begin(), rig.runner.commands().end(),
                        "qemu-img create -f qcow2 -b /images/t/nodeform-template.qcow2 -F qcow2 " + paths.overlay),
              rig.runner.commands().end());
    auto state = p->vm_state("local", 100);
    ASSERT_TRUE(state.ok());
    EXPECT_TRUE(state.value->exists);
    EXPECT_EQ(state.value->name, "vm-01");
    EXPECT_EQ(state.value->status, "stopped");
    EXPECT_EQ(state.value->config.at("virtio0"), "local:vm-100-disk-0,size=3221225472");
    EXPECT_FALSE(p->vmid_free(100).value.value());
    EXPECT_EQ(p->used_vmids().value.value(), std::vector<std::int64_t>{100});

    ASSERT_TRUE(p->configure("local", 100, sample_vm().config, state.value->digest).ok());
    // A digest from before a change is refused, like Proxmox's.
    EXPECT_EQ(p->configure("local", 100, {{"cores", "4"}}, state.value->digest).error.kind, pv::FailureKind::conflict);
    auto started = p->start("local", 100);
    ASSERT_TRUE(started.ok()) << started.error.message;
    EXPECT_EQ(started.value->exitstatus, "OK");
    EXPECT_TRUE(std::filesystem::exists(paths.dir + "/nocloud/user-data"));
    EXPECT_EQ(p->vm_state("local", 100).value->status, "running");
    auto calls = p->take_calls();
    ASSERT_FALSE(calls.empty());
    for (const auto& c : calls)
        EXPECT_EQ(c.path.find("nf1:"), std::string::npos) << c.path;  // never the seed

    // A restarted controller (a new provider) finds the running VM again by its pidfile and command line.
    auto again = rig.provider();
    EXPECT_EQ(again->vm_state("local", 100).value->status, "running");
    EXPECT_EQ(again->start("local", 100).error.kind, pv::FailureKind::already_running);
}

TEST(QemuProvider, APidThatIsNoLongerOurQemuIsReportedStopped) {
    ProviderRig rig;
    auto p = rig.provider();
    ASSERT_TRUE(started(*p));
    rig.table[4242] = std::string("/usr/sbin/sshd\0-D", 17);  // the PID was reused by another program
    EXPECT_EQ(p->vm_state("local", 100).value->status, "stopped");
    EXPECT_EQ(p->agent_ping("local", 100).error.kind, pv::FailureKind::vm_not_running);
    // Destroy then touches no process it does not own.
    auto d = p->destroy("local", 100);
    ASSERT_TRUE(d.ok());
    EXPECT_TRUE(rig.signals.empty());
}

TEST(QemuProvider, AnExitingQemuThatRemovedItsPidfileIsStillFoundByThePidInVmJson) {
    ProviderRig rig;
    auto p = rig.provider();
    ASSERT_TRUE(started(*p));
    std::filesystem::remove(pv::qemu_paths(rig.o.state_dir, 100).pidfile);
    EXPECT_EQ(rig.provider()->vm_state("local", 100).value->status, "running");
    rig.table.erase(4242);
    EXPECT_EQ(rig.provider()->vm_state("local", 100).value->status, "stopped");
}

TEST(QemuProvider, DestroyStopsQemuAndRemovesEveryFile) {
    ProviderRig rig;
    auto p = rig.provider();
    ASSERT_TRUE(started(*p));
    auto d = p->destroy("local", 100);
    ASSERT_TRUE(d.ok()) << d.error.message;
    EXPECT_EQ(d.value->exitstatus, "OK");
    EXPECT_EQ(rig.signals, (std::vector<std::pair<int, int>>{{4242, SIGTERM}}));
    EXPECT_FALSE(std::filesystem::exists(pv::qemu_paths(rig.o.state_dir, 100).dir));
    EXPECT_FALSE(p->vm_state("local", 100).value->exists);
    EXPECT_TRUE(p->vmid_free(100).value.value());
}

TEST(QemuProvider, TheTemplateIsVmZeroAndMissingFilesAreNamed) {
    ProviderRig rig;
    auto p = rig.provider();
    auto t = p->vm_state("local", 0);
    ASSERT_FALSE(t.ok());
    EXPECT_NE(t.error.message.find("/images/t/nodeform-template.qcow2 does not exist"), std::string::npos);
    write_text(rig.temp.path() + "/img/nodeform-template.qcow2", "x");
    write_text(rig.temp.path() + "/img/vmlinuz", "x");
    rig.o.template_image = rig.temp.path() + "/img/nodeform-template.qcow2";
    t = rig.provider()->vm_state("local", 0);
    ASSERT_FALSE(t.ok());
    EXPECT_NE(t.error.message.find("no initrd.img beside it"), std::string::npos);
    write_text(rig.temp.path() + "/img/initrd.img", "x");
    t = rig.provider()->vm_state("local", 0);
    ASSERT_TRUE(t.ok());
    EXPECT_TRUE(t.value->is_template);
}

TEST(QemuProvider, AWaitedCloneIsDoneOnlyWhenItsVmIsComplete) {
    ProviderRig rig;
    auto p = rig.provider();
    EXPECT_EQ(p->wait_task("qemu:100:clone", milliseconds(1)).value->exitstatus,
              "interrupted before the VM was complete");
    pv::CloneRequest req;
    req.newid = 100;
    req.name = "vm-01";
    std::string upid;
    ASSERT_TRUE(p->clone(req, [&](const std::string& u) { upid = u; }).ok());
    EXPECT_EQ(p->wait_task(upid, milliseconds(1)).value->exitstatus, "OK");
    EXPECT_FALSE(p->wait_task("UPID:pve1:0", milliseconds(1)).ok());
}

// The lifecycle's one code path over the qemu provider: a provider-qemu node's plan shows the commands, create
// runs the same steps as on Proxmox, and a guest agent that never answers fails agent_ready on the clock.
TEST(QemuLifecycle, CreateRunsTheProxmoxStepsThroughTheQemuProvider) {
    ProviderRig rig;
    site::Site site = make_site("https://pve.invalid:8006", "root@pam!nodeform", "secret", 0);
    site::Node node = make_node("vm-01");
    node.placement = {};
    node.placement.provider = "qemu";
    node.placement.qemu = {rig.temp.path() + "/img/nodeform-template.qcow2", rig.o.state_dir, "tcg"};
    node.placement.pve_node = "local";
    node.placement.site = "local";
    node.placement.storage = rig.o.state_dir;
    node.placement.bridge = "user";
    site.nodes["vm-01"] = node;
    for (const char* f : {"nodeform-template.qcow2", "vmlinuz", "initrd.img"})
        write_text(rig.temp.path() + "/img/" + f, "x");
    auto store = lc::LifecycleStore::open(rig.temp.path() + "/nodeform.db");
    ASSERT_TRUE(store) << store.message();
    FakeIssuer issuer;
    FakeReports reports;
    MemoryLogger logger;
    lc::LifecycleDeps deps;
    deps.store = store->get();
    deps.issuer = &issuer;
    deps.reports = &reports;
    deps.clock = &rig.clock;
    deps.logger = &logger;
    deps.qemu_providers = [&](const site::Node& n) -> Result<std::unique_ptr<pv::Provider>> {
        pv::QemuOptions o = rig.o;
        o.template_image = n.placement.qemu.template_image;
        return pv::make_qemu_provider(o, rig.runner, rig.clock,
                                      std::make_unique<FakeProcesses>(rig.table, rig.signals));
    };
    lc::LifecycleOptions options;
    options.agent_timeout = std::chrono::minutes(2);
    options.ca_fingerprint = std::string(64, 'a');
    lc::Lifecycle lifecycle(deps, options);

    auto plan = lifecycle.plan(site, "vm-01");
    ASSERT_TRUE(plan) << plan.message();
    EXPECT_TRUE(plan->ok()) << lc::to_json(*plan).dump();
    EXPECT_EQ(plan->provider, "qemu");
    EXPECT_EQ(plan->vmid, 100);
    ASSERT_FALSE(plan->calls.empty());
    EXPECT_EQ(plan->calls[0].path, "qemu-img create -f qcow2 -b " + node.placement.qemu.template_image + " -F qcow2 " +
                                       rig.o.state_dir + "/vm-100/overlay.qcow2");
    EXPECT_TRUE(rig.runner.requests.size() <= 1u) << "plan must not change anything";  // qemu-img info at most

    auto r = lifecycle.create(site, "vm-01");
    EXPECT_FALSE(r.ok);
    ASSERT_NE(r.message.find("agent_ready failed"), std::string::npos) << r.message;
    auto rec = (*store)->get("vm-01");
    ASSERT_TRUE(rec && *rec);
    EXPECT_EQ((*rec)->vmid, 100);
    EXPECT_EQ((*rec)->step, "registered");
    EXPECT_EQ(rig.provider()->vm_state("local", 100).value->status, "running");
    // The seed reached QEMU's -smbios decoded, and nothing of it is in a receipt.
    std::string smbios;
    for (const auto& req : rig.runner.requests)
        if (req.argv[0] == "qemu-system-x86_64") smbios = after(req.argv, "-smbios").at(0);
    EXPECT_NE(smbios.find(",serial=nf1:"), std::string::npos) << smbios;
    auto receipts = (*store)->receipts("vm-01");
    ASSERT_TRUE(receipts);
    for (const auto& rc : *receipts)
        EXPECT_EQ(lc::to_json(rc).dump().find("nf1:"), std::string::npos) << rc.step;
}

}  // namespace
}  // namespace nodeform::test
