#pragma once
// The e2e tests' shared fixture (label e2e): a copy of tests/e2e/site with nodes/vm-01.yaml (provider qemu,
// the baked template NODEFORM_E2E_TEMPLATE), the controller's CLI, the guest agent, and the checks that a
// destroyed VM left nothing behind. One VM per test; TearDown destroys it whatever happened.
//
// Inputs: qemu-system-x86_64, qemu-img and cloud-localds in PATH and NODEFORM_E2E_TEMPLATE naming a baked
// template (packaging/bake-template.sh; scripts/test.sh bakes it, cached); QemuDockerE2e instead needs
// NODEFORM_E2E_DOCKER_TEMPLATE, baked with --with-docker (docker, docker-compose, the local image
// nodeform/busybox:local). Without them the tests skip.
// NODEFORM_E2E_ARTIFACTS (optional): a directory that receives each test's console log, the guest's boot
// timings and the lifecycle receipts (the inputs of docs/benchmarks.md's breakdown).
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fcntl.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <thread>

#include <gtest/gtest.h>

#include "controller_process.hpp"
#include "nodeform/controller/providers/qemu.hpp"
#include "nodeform/posix_process_runner.hpp"
#include "test_paths.hpp"

namespace nodeform::test {

namespace fs = std::filesystem;
namespace pv = nodeform::controller::providers;
using json = nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::minutes;
using std::chrono::seconds;

inline bool in_path(const std::string& program) {
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

inline ProcessResult run(std::vector<std::string> argv, milliseconds timeout) {
    PosixProcessRunner runner;
    ProcessRequest request;
    request.argv = std::move(argv);
    request.timeout = timeout;
    request.output_limit = 1024 * 1024;
    auto r = runner.run(request);
    if (!r) return ProcessResult{-1, false, "", r.message()};
    return *r;
}

inline std::string controller_binary() {
    return binary_dir() + "/controller/nodeform-controller";
}

inline std::string tail(const std::string& path, std::size_t lines) {
    std::string text = slurp(path);
    std::size_t pos = text.size();
    for (std::size_t n = 0; n <= lines && pos != std::string::npos && pos > 0; ++n)
        pos = text.rfind('\n', pos - 1);
    return pos == std::string::npos ? text : text.substr(pos + 1);
}

// PIDs of processes whose command line mentions `needle` (a QEMU left behind names its overlay).
inline std::vector<int> processes_mentioning(const std::string& needle) {
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

// Polls `done` every `every` until it holds or `limit` passes; true when it held.
inline bool wait_until(const std::function<bool()>& done, milliseconds limit, milliseconds every = seconds(5)) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (true) {
        if (done()) return true;
        if (std::chrono::steady_clock::now() >= deadline) return false;
        std::this_thread::sleep_for(every);
    }
}

// A loopback TCP port that was free a moment ago (the controller is started on it later).
inline int free_loopback_port() {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    socklen_t len = sizeof(addr);
    int port = 0;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0)
        port = ntohs(addr.sin_port);
    ::close(fd);
    return port;
}

// `nodeform-controller serve` over HTTPS on a fixed loopback port, stdout and stderr (with the access log) in a
// file the test reads. Killed (SIGKILL) when the object dies.
class ServeOnPort {
  public:
    ServeOnPort(const std::string& site, const std::string& state, int port, const std::string& log) : log_(log) {
        std::vector<std::string> args = {
            controller_binary(), "serve",    "--site",   site,
            "--state",           state,      "--listen", "127.0.0.1:" + std::to_string(port),
            "--tls-hosts",       "10.0.2.2", "--config", "/dev/null",
            "--reload-interval", "200ms"};
        pid_ = ::fork();
        if (pid_ == 0) {
            int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
            ::dup2(fd, STDOUT_FILENO);
            ::dup2(fd, STDERR_FILENO);
            exec_argv(std::move(args));
        }
        up_ = wait_until([&] { return slurp(log_).find("listening on https://127.0.0.1:") != std::string::npos; },
                         seconds(30), milliseconds(100));
    }
    ~ServeOnPort() { stop(); }
    ServeOnPort(const ServeOnPort&) = delete;
    ServeOnPort& operator=(const ServeOnPort&) = delete;
    bool up() const { return up_; }
    void stop() {
        if (pid_ <= 0) return;
        ::kill(pid_, SIGTERM);
        if (!wait_until([&] { return ::waitpid(pid_, nullptr, WNOHANG) == pid_; }, seconds(10), milliseconds(100))) {
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, nullptr, 0);
        }
        pid_ = -1;
    }

  private:
    std::string log_;
    pid_t pid_ = -1;
    bool up_ = false;
};

class QemuE2e : public ::testing::Test {
  protected:
    void SetUp() override {
        for (const char* tool : {"qemu-system-x86_64", "qemu-img", "cloud-localds"}) {
            if (!in_path(tool)) GTEST_SKIP() << tool << " is not installed: scripts/install-deps.sh test";
        }
        const char* t = std::getenv(template_variable_);
        if (t == nullptr || *t == '\0') {
            GTEST_SKIP() << template_variable_ << " is not set: bake a template with packaging/bake-template.sh"
                         << bake_options_ << " (scripts/test.sh does, cached) and name its nodeform-template.qcow2";
        }
        template_ = t;
        if (!fs::exists(template_) || !fs::exists(fs::path(template_).parent_path() / "vmlinuz")) {
            GTEST_SKIP() << template_variable_ << "=" << template_ << " is not a baked template (no image or vmlinuz)";
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
        if (fs::exists(pv::qemu_paths(vms_, vmid_).console)) save_artifacts();
        if (fs::exists(vms_))
            (void)run({controller_binary(), "node", "destroy", "vm-01", "--here", "--site", site_, "--state", state_},
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

    // `node create vm-01` with the controller at https://10.0.2.2:PORT (the host's loopback seen from the guest).
    std::string create(int port, const std::string& report_timeout, int& code) {
        const auto t0 = std::chrono::steady_clock::now();
        std::vector<std::string> args = {"node",
                                         "create",
                                         "--here",
                                         "vm-01",
                                         "--site",
                                         site_,
                                         "--state",
                                         state_,
                                         "--controller-url",
                                         "https://10.0.2.2:" + std::to_string(port),
                                         "--agent-timeout",
                                         "12m",
                                         "--report-timeout",
                                         report_timeout};
        args.insert(args.end(), provider_args_.begin(), provider_args_.end());
        std::string out = cli(args, code, minutes(25));
        const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        std::cout << out << "node create took " << took << " s\n";
        return out;
    }

    // vm-01's entry in `node list --json` (an empty object when it is missing).
    json node_entry() {
        int code = -1;
        std::string list = cli({"node", "list", "--site", site_, "--state", state_, "--json"}, code);
        json nodes = json::parse(list, nullptr, false);
        if (nodes.is_object() && nodes.contains("nodes")) nodes = nodes["nodes"];
        if (!nodes.is_array()) return json::object();
        for (const auto& n : nodes)
            if (n.value("identity", "") == "vm-01") return n;
        return json::object();
    }
    std::string node_status() { return node_entry().value("status", ""); }

    // One command in the guest through the QEMU guest agent.
    pv::QgaClient::ExecResult guest(const std::vector<std::string>& argv, bool expect_ok = true) {
        pv::QgaClient qga(pv::qemu_paths(vms_, vmid_).qga, seconds(15));
        SystemClock clock;
        auto r = qga.exec(argv, clock, minutes(1));
        if (expect_ok) {
            EXPECT_TRUE(r) << argv[0] << ": " << r.message();
        }
        return r ? *r : pv::QgaClient::ExecResult{};
    }

    std::string console_tail() { return tail(pv::qemu_paths(vms_, vmid_).console, 60); }

    // The agent's journal entries (journalctl -o json, one object a line) that carry `field`.
    std::vector<json> agent_journal(const std::string& match = "") {
        std::vector<std::string> argv = {"/usr/bin/journalctl", "-o", "json", "--no-pager", "-u", "nodeform-agent"};
        if (!match.empty()) argv.push_back(match);
        std::string out = guest(argv, false).out;
        std::vector<json> entries;
        std::size_t start = 0;
        while (start < out.size()) {
            auto nl = out.find('\n', start);
            json e = json::parse(out.substr(start, nl == std::string::npos ? std::string::npos : nl - start), nullptr,
                                 false);
            if (e.is_object()) entries.push_back(std::move(e));
            if (nl == std::string::npos) break;
            start = nl + 1;
        }
        return entries;
    }

    // NODEFORM_E2E_ARTIFACTS/TEST/: the console log, the guest's boot timings, the lifecycle receipts.
    void save_artifacts() {
        const char* dir = std::getenv("NODEFORM_E2E_ARTIFACTS");
        if (dir == nullptr || *dir == '\0') return;
        const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
        const std::string out = std::string(dir) + "/" + (info ? info->name() : "test");
        std::error_code ec;
        fs::create_directories(out, ec);
        fs::copy_file(pv::qemu_paths(vms_, vmid_).console, out + "/console.log", fs::copy_options::overwrite_existing,
                      ec);
        for (const char* db : {"nodeform.db", "nodeform.db-wal"})  // the reports, with per-resource durations
            fs::copy_file(state_ + "/" + db, out + "/" + db, fs::copy_options::overwrite_existing, ec);
        int code = -1;
        write_text(out + "/node-show.json",
                   cli({"node", "show", "vm-01", "--site", site_, "--state", state_, "--json"}, code));
        if (processes_mentioning(vms_).empty()) return;
        for (const auto& [name, argv] : std::vector<std::pair<std::string, std::vector<std::string>>>{
                 {"systemd-analyze.txt", {"/usr/bin/systemd-analyze"}},
                 {"critical-chain.txt", {"/usr/bin/systemd-analyze", "critical-chain", "nodeform-agent.service"}},
                 {"blame.txt", {"/usr/bin/systemd-analyze", "blame"}},
                 {"journal-boot.txt", {"/usr/bin/journalctl", "-b", "-o", "short-monotonic", "--no-pager"}},
                 {"agent-journal.json",
                  {"/usr/bin/journalctl", "-b", "-o", "json", "--no-pager", "-u", "nodeform-agent"}},
             }) {
            auto r = guest(argv, false);
            write_text(out + "/" + name, r.out + r.err);
        }
    }

    // `node destroy`, then: no QEMU process, overlay, seed, socket, pidfile or VM directory, and the node
    // credential read from the guest before is refused (401).
    void destroy_and_expect_nothing_left(const std::function<std::string()>& status_with_credential) {
        const auto paths = pv::qemu_paths(vms_, vmid_);
        ASSERT_TRUE(fs::exists(paths.overlay));
        save_artifacts();
        int code = -1;
        std::vector<std::string> args = {"node", "destroy", "vm-01", "--here", "--site", site_, "--state", state_};
        args.insert(args.end(), provider_args_.begin(), provider_args_.end());
        std::string out = cli(args, code, minutes(3));
        ASSERT_EQ(code, 0) << out;
        // QEMU exits after its pidfile goes.
        wait_until([&] { return processes_mentioning(vms_).empty(); }, seconds(30), milliseconds(200));
        EXPECT_TRUE(processes_mentioning(vms_).empty()) << "a QEMU process is left";
        for (const auto& f : {paths.overlay, paths.seed, paths.qga, paths.pidfile, paths.console, paths.dir})
            EXPECT_FALSE(fs::exists(f)) << f << " is left";
        if (status_with_credential) {
            EXPECT_EQ(status_with_credential(), "401") << "the node credential still works";
        }
        EXPECT_EQ(node_entry().value("lifecycle", json::object()).value("state", ""), "decommissioned") << node_entry();
    }

    // A function that GETs vm-01's spec with the node credential held in the guest and returns the HTTP status.
    std::function<std::string()> credential_probe(int port) {
        json credential = json::parse(guest({"/usr/bin/cat", "/var/lib/nodeform/credential"}).out, nullptr, false);
        EXPECT_TRUE(credential.is_object() && credential.contains("credential")) << "no node credential in the guest";
        if (!credential.is_object() || !credential.contains("credential")) return {};
        const std::string bearer = "Authorization: Bearer " + credential["credential"].get<std::string>();
        const std::string url = "https://127.0.0.1:" + std::to_string(port) + "/v1/spec/vm-01";
        const std::string ca = state_ + "/tls/ca.pem";
        return [bearer, url, ca] {
            return run({"curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", ca, "-H", bearer, url},
                       seconds(30))
                .out;
        };
    }

    // The environment variable naming the template (a fixture for another bake sets it in its constructor).
    const char* template_variable_ = "NODEFORM_E2E_TEMPLATE";
    const char* bake_options_ = "";
    TempDir temp_;
    std::string template_, site_, state_, vms_;
    std::int64_t vmid_ = 100;
    std::vector<std::string> provider_args_;  // added to node create/destroy (e.g. --endpoint NAME=URL)
};

// The e2e fixture on the template baked --with-docker (NODEFORM_E2E_DOCKER_TEMPLATE): stacks run in the guest
// from the baked local image nodeform/busybox:local, no registry.
class QemuDockerE2e : public QemuE2e {
  protected:
    QemuDockerE2e() {
        template_variable_ = "NODEFORM_E2E_DOCKER_TEMPLATE";
        bake_options_ = " --with-docker";
    }
};

}  // namespace nodeform::test
