// The whole story on a real VM (label e2e): `node create` of a provider-qemu node against the real controller on
// loopback → the VM boots from an overlay of the baked template (QEMU, software emulation unless KVM boots) →
// the agent reads its seed from SMBIOS, enrolls, pulls its spec, converges and reports platform-ready →
// `ready` in `node list`; checked inside the guest through the guest agent; drift made inside the VM is
// repaired by the next turn; `node destroy` leaves no QEMU process, overlay, socket or node credential.
//
// Inputs: qemu-system-x86_64, qemu-img and cloud-localds in PATH and NODEFORM_E2E_TEMPLATE naming a baked
// template (packaging/bake-template.sh; scripts/test.sh bakes it, cached). Without them the test skips.
// Timeouts (documented in docs/testing.md): under TCG on 2 busy cores a first boot reaches platform-ready in
// 3.5-8 min; the guest agent gets 12 min, the report 12 min, the whole `node create` 25 min.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>

#include <gtest/gtest.h>

#include "controller_process.hpp"
#include "nodeform/controller/providers/qemu.hpp"
#include "nodeform/posix_process_runner.hpp"
#include "test_paths.hpp"

namespace nodeform::test {
namespace {

namespace fs = std::filesystem;
namespace pv = nodeform::controller::providers;
using json = nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::minutes;
using std::chrono::seconds;

bool in_path(const std::string& program) {
    const char* path = std::getenv("PATH");
    std::string dirs = path ? path : "/usr/bin:/bin";
    std::size_t start = 0;
    while (start <= dirs.size()) {
        auto colon = dirs.find(':', start);
        std::string dir = dirs.substr(start, colon == std::string::npos ? std::string::npos : colon - start);
        if (!dir.empty() && ::access((dir + "/" + program).c_str(), X_OK) == 0) return true;
        if (colon == std::string::npos) break;
        start = colon + 1;
    }
    return false;
}

ProcessResult run(std::vector<std::string> argv, milliseconds timeout) {
    PosixProcessRunner runner;
    ProcessRequest request;
    request.argv = std::move(argv);
    request.timeout = timeout;
    request.output_limit = 1024 * 1024;
    auto r = runner.run(request);
    if (!r) return ProcessResult{-1, false, "", r.message()};
    return *r;
}

std::string controller_binary() {
    return binary_dir() + "/controller/nodeform-controller";
}

std::string tail(const std::string& path, std::size_t lines) {
    std::string text = slurp(path);
    std::size_t pos = text.size();
    for (std::size_t n = 0; n <= lines && pos != std::string::npos && pos > 0; ++n)
        pos = text.rfind('\n', pos - 1);
    return pos == std::string::npos ? text : text.substr(pos + 1);
}

// PIDs of processes whose command line mentions `needle` (a QEMU left behind names its overlay).
std::vector<int> processes_mentioning(const std::string& needle) {
    std::vector<int> pids;
    std::error_code ec;
    for (fs::directory_iterator it("/proc", ec), end; !ec && it != end; it.increment(ec)) {
        const std::string name = it->path().filename().string();
        if (name.find_first_not_of("0123456789") != std::string::npos) continue;
        std::string cmd = slurp(it->path().string() + "/cmdline");
        if (cmd.find(needle) != std::string::npos && cmd.rfind(controller_binary(), 0) != 0)
            pids.push_back(std::stoi(name));
    }
    return pids;
}

class QemuE2e : public ::testing::Test {
  protected:
    void SetUp() override {
        for (const char* tool : {"qemu-system-x86_64", "qemu-img", "cloud-localds"}) {
            if (!in_path(tool)) GTEST_SKIP() << tool << " is not installed: scripts/install-deps.sh test";
        }
        const char* t = std::getenv("NODEFORM_E2E_TEMPLATE");
        if (t == nullptr || *t == '\0') {
            GTEST_SKIP() << "NODEFORM_E2E_TEMPLATE is not set: bake a template with packaging/bake-template.sh "
                            "(scripts/test.sh does, cached) and name its nodeform-template.qcow2";
        }
        template_ = t;
        if (!fs::exists(template_) || !fs::exists(fs::path(template_).parent_path() / "vmlinuz")) {
            GTEST_SKIP() << "NODEFORM_E2E_TEMPLATE=" << template_ << " is not a baked template (no image or vmlinuz)";
        }
        site_ = temp_.path() + "/site";
        state_ = temp_.path() + "/state";
        vms_ = temp_.path() + "/vms";
        fs::copy(source_dir() + "/tests/e2e/site", site_, fs::copy_options::recursive);
        write_text(site_ + "/nodes/vm-01.yaml",
                   "type: vm\nspec: e2e\npreset: small\noverrides:\n  cores: 2\n  memory_mb: 1536\n  disk_gb: 4\n"
                   "provider: qemu\nqemu:\n"
                   "  template: " +
                       template_ + "\n  state_dir: " + vms_ + "\ndecommission: allow_immediate_destroy\n");
    }

    void TearDown() override {
        // Whatever happened, no VM outlives the test: the lifecycle's own destroy first, then by PID.
        if (site_.empty()) return;
        if (fs::exists(vms_))
            (void)run({controller_binary(), "node", "destroy", "vm-01", "--site", site_, "--state", state_},
                      minutes(3));
        for (int pid : processes_mentioning(vms_))
            ::kill(pid, SIGKILL);
    }

    std::string cli(const std::vector<std::string>& args, int& exit_code, milliseconds timeout = minutes(2)) {
        std::vector<std::string> argv = {controller_binary()};
        argv.insert(argv.end(), args.begin(), args.end());
        auto r = run(argv, timeout);
        exit_code = r.exit_code;
        return r.out + r.err;
    }

    // One command in the guest through the QEMU guest agent.
    pv::QgaClient::ExecResult guest(const std::vector<std::string>& argv) {
        pv::QgaClient qga(pv::qemu_paths(vms_, vmid_).qga, seconds(15));
        SystemClock clock;
        auto r = qga.exec(argv, clock, minutes(1));
        EXPECT_TRUE(r) << argv[0] << ": " << r.message();
        return r ? *r : pv::QgaClient::ExecResult{};
    }

    std::string console_tail() { return tail(pv::qemu_paths(vms_, vmid_).console, 60); }

    TempDir temp_;
    std::string template_, site_, state_, vms_;
    std::int64_t vmid_ = 100;
};

TEST_F(QemuE2e, ACreatedVmBootsEnrollsConvergesIsReadyRepairsDriftAndDestroyLeavesNothing) {
    ControllerProcess controller(site_, state_, {"--tls-hosts", "10.0.2.2"}, /*tls=*/true);
    ASSERT_GT(controller.port(), 0) << "the controller did not start";
    const std::string url =
        "https://10.0.2.2:" + std::to_string(controller.port());  // the host's loopback, seen from the guest

    // 1. node create: gates, overlay, seed in smbios1, boot; waits for the guest agent and platform-ready.
    const auto t0 = std::chrono::steady_clock::now();
    int code = -1;
    std::string out = cli({"node", "create", "vm-01", "--here", "--site", site_, "--state", state_, "--controller-url",
                           url, "--agent-timeout", "12m", "--report-timeout", "12m"},
                          code, minutes(25));
    const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::cout << out << "node create took " << took << " s\n";
    ASSERT_EQ(code, 0) << out << "\n--- console tail ---\n" << console_tail();
    EXPECT_NE(out.find("agent_ready"), std::string::npos) << out;

    // 2. The controller shows the node ready.
    std::string list = cli({"node", "list", "--site", site_, "--state", state_, "--json"}, code);
    ASSERT_EQ(code, 0) << list;
    json nodes = json::parse(list, nullptr, false);
    ASSERT_TRUE(nodes.is_array() || nodes.is_object()) << list;
    if (nodes.is_object() && nodes.contains("nodes")) nodes = nodes["nodes"];
    bool ready = false;
    for (const auto& n : nodes)
        ready = ready || (n.value("identity", "") == "vm-01" && n.value("status", "") == "ready");
    EXPECT_TRUE(ready) << list;

    // 3. Inside the guest: platform-ready, the managed user with its key and sudo, the managed file, the service.
    EXPECT_EQ(guest({"/usr/bin/test", "-f", "/var/lib/nodeform/platform-ready"}).exit_code, 0);
    auto id = guest({"/usr/bin/id", "alice"});
    EXPECT_NE(id.out.find("uid=2001(alice)"), std::string::npos) << id.out << id.err;
    EXPECT_NE(guest({"/usr/bin/cat", "/home/alice/.ssh/authorized_keys"}).out.find("alice@laptop"), std::string::npos);
    EXPECT_EQ(guest({"/usr/bin/sudo", "-n", "-l", "-U", "alice"}).exit_code, 0);
    EXPECT_EQ(guest({"/usr/bin/cat", "/etc/nodeform-e2e/app.conf"}).out, "greeting = hello from the e2e spec\n");
    EXPECT_EQ(guest({"/usr/bin/systemctl", "is-active", "ssh"}).out, "active\n");
    // The seed came from SMBIOS: the agent enrolled with it and holds a node credential.
    json credential = json::parse(guest({"/usr/bin/cat", "/var/lib/nodeform/credential"}).out, nullptr, false);
    ASSERT_TRUE(credential.is_object() && credential.contains("credential")) << "no node credential in the guest";
    const std::string bearer = "Authorization: Bearer " + credential["credential"].get<std::string>();
    const std::string spec_url = "https://127.0.0.1:" + std::to_string(controller.port()) + "/v1/spec/vm-01";
    auto status_with_credential = [&] {
        return run({"curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", state_ + "/tls/ca.pem", "-H",
                    bearer, spec_url},
                   seconds(30))
            .out;
    };
    EXPECT_EQ(status_with_credential(), "200");

    // 4. Drift: a managed file changed inside the VM is repaired by the agent's next turn (apply.interval 1m).
    ASSERT_EQ(guest({"/usr/bin/truncate", "-s", "0", "/etc/nodeform-e2e/app.conf"}).exit_code, 0);
    ASSERT_EQ(guest({"/usr/bin/cat", "/etc/nodeform-e2e/app.conf"}).out, "");
    const auto drift_deadline = std::chrono::steady_clock::now() + minutes(5);
    std::string content;
    while (std::chrono::steady_clock::now() < drift_deadline) {
        content = guest({"/usr/bin/cat", "/etc/nodeform-e2e/app.conf"}).out;
        if (!content.empty()) break;
        std::this_thread::sleep_for(seconds(5));
    }
    EXPECT_EQ(content, "greeting = hello from the e2e spec\n") << "drift not repaired\n" << console_tail();

    // 5. node destroy: no QEMU process, overlay, seed, socket or node credential left.
    const auto paths = pv::qemu_paths(vms_, vmid_);
    ASSERT_TRUE(fs::exists(paths.overlay));
    out = cli({"node", "destroy", "vm-01", "--site", site_, "--state", state_}, code, minutes(3));
    ASSERT_EQ(code, 0) << out;
    const auto gone_deadline = std::chrono::steady_clock::now() + seconds(30);  // QEMU exits after its pidfile goes
    while (!processes_mentioning(vms_).empty() && std::chrono::steady_clock::now() < gone_deadline)
        std::this_thread::sleep_for(milliseconds(200));
    EXPECT_TRUE(processes_mentioning(vms_).empty()) << "a QEMU process is left";
    for (const auto& f : {paths.overlay, paths.seed, paths.qga, paths.pidfile, paths.dir})
        EXPECT_FALSE(fs::exists(f)) << f << " is left";
    EXPECT_EQ(status_with_credential(), "401") << "the node credential still works";
}

}  // namespace
}  // namespace nodeform::test
