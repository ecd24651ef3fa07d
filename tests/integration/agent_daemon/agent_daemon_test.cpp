// nodeform-agent run against a controller on loopback: an in-test httplib server that implements the
// protocol's endpoints (docs/protocol.md) and dedups reports by report_id, like the real controller; and
// (RealControllerTest) the real nodeform-controller binary for credential rotation and re-enrollment.
// The agent converges a files-only spec under --root (no root privileges or apt needed).
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <thread>

#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "controller_process.hpp"
#include "eventually.hpp"
#include "nodeform/atomic_file.hpp"
#include "nodeform/canonical_json.hpp"
#include "nodeform/controller/store/sqlite.hpp"
#include "nodeform/controller/store/store.hpp"
#include "test_paths.hpp"

namespace {

using Json = nlohmann::json;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

int free_port() {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    socklen_t len = sizeof addr;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    ::close(fd);
    return ntohs(addr.sin_port);
}

// Real processes under load: a longer default wait than the unit tests'.
bool eventually(const std::function<bool()>& condition, std::chrono::milliseconds limit = 30s) {
    return nodeform::test::eventually(condition, limit, 20ms);
}

// The controller's side of the protocol, in memory. Survives stop()/start() (the "store" is durable).
class FakeController {
  public:
    explicit FakeController(int port) : port_(port) {}
    ~FakeController() { stop(); }

    void set_spec(const Json& spec) {
        std::lock_guard<std::mutex> lock(mutex_);
        spec_ = spec;
    }
    void start() {
        server_ = std::make_unique<httplib::Server>();
        server_->Post("/v1/enroll", [this](const httplib::Request& req, httplib::Response& res) {
            std::lock_guard<std::mutex> lock(mutex_);
            auto j = Json::parse(req.body, nullptr, false);
            if (j.is_discarded() || j.value("token", "") != "enroll-token-0123456789" || enrolled_) {
                res.status = 401;
                res.set_content(R"({"error":{"code":"invalid_token","message":"no"}})", "application/json");
                return;
            }
            enrolled_ = true;
            ++enrollments;
            res.set_content(Json{{"identity", "web-01"}, {"credential", "node-credential-1"}}.dump(),
                            "application/json");
        });
        server_->Get("/v1/spec/web-01", [this](const httplib::Request& req, httplib::Response& res) {
            std::lock_guard<std::mutex> lock(mutex_);
            if (req.get_header_value("Authorization") != "Bearer node-credential-1") {
                res.status = 401;
                return;
            }
            ++spec_requests;
            std::string etag = "\"" + nodeform::canonical_digest(spec_) + "\"";
            res.set_header("ETag", etag);
            if (req.get_header_value("If-None-Match") == etag) {
                ++not_modified;
                res.status = 304;
                return;
            }
            res.set_content(nodeform::canonical_dump(spec_), "application/json");
        });
        server_->Post("/v1/nodes/web-01/reports", [this](const httplib::Request& req, httplib::Response& res) {
            std::lock_guard<std::mutex> lock(mutex_);
            if (req.get_header_value("Authorization") != "Bearer node-credential-1") {
                res.status = 401;
                return;
            }
            auto j = Json::parse(req.body, nullptr, false);
            if (j.is_discarded() || !j.contains("report_id")) {
                res.status = 400;
                return;
            }
            std::string id = j["report_id"];
            if (reports_.count(id)) {
                ++duplicate_posts;
                res.status = 200;
            } else {
                reports_[id] = j;
                order_.push_back(id);
                arrival_[id] = std::chrono::steady_clock::now();
                res.status = 201;
            }
            res.set_content(R"({"stored":true})", "application/json");
        });
        ASSERT_TRUE(server_->bind_to_port("127.0.0.1", port_));
        thread_ = std::thread([this] { server_->listen_after_bind(); });
        while (!server_->is_running())
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    void stop() {
        if (!server_) return;
        server_->stop();
        if (thread_.joinable()) thread_.join();
        server_.reset();
    }

    std::vector<Json> reports() {
        std::lock_guard<std::mutex> lock(mutex_);
        std::vector<Json> out;
        for (const auto& id : order_)
            out.push_back(reports_[id]);
        return out;
    }
    std::vector<Json> reports_where(const std::function<bool(const Json&)>& pred) {
        std::vector<Json> out;
        for (const auto& r : reports())
            if (pred(r)) out.push_back(r);
        return out;
    }
    bool has(const std::string& id) {
        std::lock_guard<std::mutex> lock(mutex_);
        return reports_.count(id) > 0;
    }
    std::chrono::steady_clock::time_point arrival(const std::string& id) {
        std::lock_guard<std::mutex> lock(mutex_);
        return arrival_.at(id);
    }

    std::atomic<int> enrollments{0};
    std::atomic<int> spec_requests{0};
    std::atomic<int> not_modified{0};
    std::atomic<int> duplicate_posts{0};

  private:
    int port_;
    std::mutex mutex_;
    Json spec_;
    bool enrolled_ = false;
    std::map<std::string, Json> reports_;
    std::vector<std::string> order_;
    std::map<std::string, std::chrono::steady_clock::time_point> arrival_;
    std::unique_ptr<httplib::Server> server_;
    std::thread thread_;
};

// One `nodeform-agent run` child process.
class Agent {
  public:
    Agent(std::vector<std::string> args, std::string log_path) : log_(std::move(log_path)) {
        std::string binary = nodeform::test::binary_dir() + "/agent/nodeform-agent";
        std::vector<std::string> argv = {binary, "run"};
        argv.insert(argv.end(), args.begin(), args.end());
        pid_ = ::fork();
        if (pid_ == 0) {
            int fd = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
            ::dup2(fd, 1);
            ::dup2(fd, 2);
            ::unsetenv("NOTIFY_SOCKET");
            ::unsetenv("JOURNAL_STREAM");
            ::unsetenv("WATCHDOG_USEC");
            std::vector<char*> cargv;
            for (auto& a : argv)
                cargv.push_back(a.data());
            cargv.push_back(nullptr);
            ::execv(cargv[0], cargv.data());
            ::_exit(127);
        }
    }
    ~Agent() {
        if (pid_ > 0 && !reaped_) {
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, nullptr, 0);
        }
    }
    void signal(int signo) { ::kill(pid_, signo); }
    // Exit status, or -1 when it did not exit within limit.
    int wait_exit(std::chrono::milliseconds limit) {
        auto end = std::chrono::steady_clock::now() + limit;
        while (std::chrono::steady_clock::now() < end) {
            int status = 0;
            if (::waitpid(pid_, &status, WNOHANG) == pid_) {
                reaped_ = true;
                return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
            }
            std::this_thread::sleep_for(10ms);
        }
        return -1;
    }
    std::string log() const {
        auto text = nodeform::read_file(log_);
        return text ? *text : "";
    }

  private:
    std::string log_;
    pid_t pid_ = -1;
    bool reaped_ = false;
};

// `nodeform-agent run` with the seed and root of a test, fast retries, debug logs and no start splay.
std::unique_ptr<Agent> start_test_agent(const std::string& seed, const std::string& root, const std::string& log,
                                        std::vector<std::string> extra) {
    std::vector<std::string> args = {"--seed",   seed,          "--root",  root,          "--retry-base",
                                     "100ms",    "--retry-cap", "400ms",   "--log-level", "debug",
                                     "--config", "/dev/null",   "--splay", "0ms"};
    args.insert(args.end(), extra.begin(), extra.end());
    return std::make_unique<Agent>(args, log);
}

class AgentDaemonTest : public ::testing::Test {
  protected:
    void SetUp() override {
        if (!fs::exists(nodeform::test::binary_dir() + "/agent/nodeform-agent")) GTEST_SKIP() << "agent not built";
        root = dir.path() + "/root";
        fs::create_directories(root + "/etc");
        std::ofstream(root + "/etc/passwd") << "root:x:0:0:root:/root:/bin/bash\n";
        std::ofstream(root + "/etc/group") << "root:x:0:\n";
        port = free_port();
        controller = std::make_unique<FakeController>(port);
        seed = dir.path() + "/seed.yaml";
        std::ofstream(seed) << "identity: web-01\ncontroller_url: http://127.0.0.1:" << port
                            << "\ntoken: enroll-token-0123456789\n"
                               "ca_fingerprint: 5d41402abc4b2a76b9719d911017c592ae2f5d6d0d1f8b2f8c7b7a1f0e9d8c7b\n";
        controller->set_spec(spec("remediate"));
    }

    Json spec(const std::string& drift, Json health = Json::array()) {
        return {{"schema_version", 1},
                {"identity", "web-01"},
                {"files", {{{"path", "/etc/motd"}, {"content", "managed by nodeform\n"}, {"mode", "0644"}}}},
                {"health", health},
                {"apply", {{"trigger", "schedule"}, {"interval_s", 300}, {"splay_s", 0}, {"drift", drift}}}};
    }

    std::unique_ptr<Agent> start_agent(std::vector<std::string> extra = {}) {
        return start_test_agent(seed, root, dir.path() + "/agent.log", std::move(extra));
    }

    std::string spool_dir() const { return root + "/var/lib/nodeform/spool"; }
    std::set<std::string> spooled_ids() const {
        std::set<std::string> ids;
        if (!fs::exists(spool_dir())) return ids;
        for (const auto& e : fs::directory_iterator(spool_dir())) {
            std::string name = e.path().filename().string();
            if (name.size() == 16 + 1 + 36 + 5 && e.path().extension() == ".json") ids.insert(name.substr(17, 36));
        }
        return ids;
    }
    std::string motd() const {
        auto t = nodeform::read_file(root + "/etc/motd");
        return t ? *t : "";
    }
    std::vector<Json> run_reports() {
        return controller->reports_where([](const Json& r) { return r.value("trigger", "") == "run"; });
    }
    // A first life with the controller up (enrolled, spec cached, platform-ready), then the controller stops.
    void first_life_then_controller_down() {
        controller->start();
        auto agent = start_agent({"--interval", "1h"});
        ASSERT_TRUE(eventually([&] { return run_reports().size() >= 1; })) << agent->log();
        agent->signal(SIGTERM);
        ASSERT_EQ(agent->wait_exit(20s), 0);
        controller->stop();
    }

    nodeform::test::TempDir dir;
    std::string root;
    std::string seed;
    int port = 0;
    std::unique_ptr<FakeController> controller;
};

TEST_F(AgentDaemonTest, ConvergesToPlatformReadyThenSustainsAndStopsOnSigterm) {
    controller->start();
    auto agent = start_agent({"--interval", "300ms"});
    ASSERT_TRUE(eventually([&] { return run_reports().size() >= 3; })) << agent->log();
    auto reports = run_reports();
    EXPECT_EQ(reports[0]["phase"], "platform-ready");
    EXPECT_EQ(reports[0]["counts"]["changed"].get<int>(),
              reports[0]["counts"]["total"].get<int>() - reports[0]["counts"]["unchanged"].get<int>());
    EXPECT_EQ(reports[1]["phase"], "sustain");
    EXPECT_EQ(reports[1]["counts"]["changed"], 0);
    EXPECT_EQ(motd(), "managed by nodeform\n");
    EXPECT_TRUE(fs::exists(root + "/var/lib/nodeform/platform-ready"));
    EXPECT_EQ(controller->enrollments.load(), 1);
    EXPECT_GE(controller->not_modified.load(), 1) << "refetches answered 304";
    agent->signal(SIGTERM);
    EXPECT_EQ(agent->wait_exit(20s), 0) << agent->log();
    auto state = Json::parse(*nodeform::read_file(root + "/var/lib/nodeform/daemon.json"));
    EXPECT_EQ(state["ready"], true);
    EXPECT_GE(state["turns"].get<int>(), 3);
    EXPECT_EQ(controller->duplicate_posts.load(), 0);
    EXPECT_NE(agent->log().find("SIGTERM"), std::string::npos);
}

// A first boot (no spec cached) runs at once without --splay; a restart with a spec waits within its splay_s.
TEST_F(AgentDaemonTest, FirstBootStartsAtOnceARestartWaitsWithinTheSplay) {
    Json with_splay = spec("remediate");
    with_splay["apply"]["splay_s"] = 3600;
    controller->set_spec(with_splay);
    controller->start();
    const std::string log = dir.path() + "/agent.log";
    std::vector<std::string> args = {"--seed",      seed,    "--root",      root,    "--retry-base", "100ms",
                                     "--retry-cap", "400ms", "--log-level", "debug", "--config",     "/dev/null"};
    {
        Agent first(args, log);
        ASSERT_TRUE(eventually([&] { return run_reports().size() >= 1; })) << first.log();
        EXPECT_EQ(first.log().find("(splay)"), std::string::npos) << first.log();
        first.signal(SIGTERM);
        ASSERT_EQ(first.wait_exit(20s), 0) << first.log();
    }
    Agent restarted(args, log);
    ASSERT_TRUE(eventually([&] { return restarted.log().find("(splay)") != std::string::npos; })) << restarted.log();
    EXPECT_EQ(run_reports().size(), 1u) << "the restart's first run waits within the splay";
    restarted.signal(SIGTERM);
    EXPECT_EQ(restarted.wait_exit(20s), 0) << restarted.log();
}

TEST_F(AgentDaemonTest, ControllerDownAtStartConvergesFromCacheSpoolsAndDrainsOnce) {
    ASSERT_NO_FATAL_FAILURE(first_life_then_controller_down());
    std::size_t before = controller->reports().size();
    fs::remove(root + "/etc/motd");  // something to converge while the controller is away
    auto agent = start_agent({"--interval", "200ms"});
    ASSERT_TRUE(eventually([&] { return spooled_ids().size() >= 3; })) << agent->log();
    EXPECT_EQ(motd(), "managed by nodeform\n") << "converged from the cached spec";
    std::set<std::string> waiting = spooled_ids();
    controller->start();
    ASSERT_TRUE(eventually([&] {
        for (const auto& id : waiting)
            if (!controller->has(id)) return false;
        return true;
    })) << agent->log();
    EXPECT_TRUE(eventually([&] { return spooled_ids().size() <= 1; }));
    agent->signal(SIGTERM);
    EXPECT_EQ(agent->wait_exit(20s), 0);
    EXPECT_EQ(controller->duplicate_posts.load(), 0);
    EXPECT_GT(controller->reports().size(), before + waiting.size() - 1);
    std::set<std::string> ids;
    for (const auto& r : controller->reports())
        EXPECT_TRUE(ids.insert(r["report_id"]).second);
}

TEST_F(AgentDaemonTest, DriftIsReportedInReportModeAndRepairedInRemediateMode) {
    controller->set_spec(spec("report"));
    controller->start();
    auto agent = start_agent({"--interval", "300ms"});
    ASSERT_TRUE(eventually([&] { return run_reports().size() >= 2; })) << agent->log();
    std::ofstream(root + "/etc/motd") << "hand edit\n";
    ASSERT_TRUE(eventually([&] {
        for (const auto& r : run_reports())
            if (r["mode"] == "check" && r["counts"]["drifted"].get<int>() > 0) return true;
        return false;
    })) << agent->log();
    EXPECT_EQ(motd(), "hand edit\n") << "report mode changes nothing";
    Json drifted;
    for (const auto& r : run_reports())
        if (r["counts"]["drifted"].get<int>() > 0) drifted = r;
    bool named = false;
    for (const auto& res : drifted["resources"])
        named = named || (res["id"] == "file:/etc/motd" && res["status"] == "drifted");
    EXPECT_TRUE(named) << drifted.dump();

    // The operator switches the node to remediate: the next turns repair it.
    controller->set_spec(spec("remediate"));
    ASSERT_TRUE(eventually([&] { return motd() == "managed by nodeform\n"; })) << agent->log();
    ASSERT_TRUE(eventually([&] {
        for (const auto& r : run_reports())
            if (r["mode"] == "apply" && r["counts"]["changed"].get<int>() > 0 && r["phase"] == "sustain") return true;
        return false;
    }));
    agent->signal(SIGTERM);
    EXPECT_EQ(agent->wait_exit(20s), 0);
    EXPECT_NE(agent->log().find("file:/etc/motd drifted"), std::string::npos) << agent->log();
}

TEST_F(AgentDaemonTest, AHealthFlipIsReportedWithinASecond) {
    std::string flag = dir.path() + "/healthy";
    std::ofstream(flag) << "";
    controller->set_spec(spec("remediate", Json::array({{{"name", "flag"},
                                                         {"type", "command"},
                                                         {"argv", {"/usr/bin/test", "-e", flag}},
                                                         {"interval_s", 0.2},
                                                         {"timeout_s", 2}}})));
    controller->start();
    auto agent = start_agent({"--interval", "1h"});
    ASSERT_TRUE(eventually([&] { return run_reports().size() >= 1; })) << agent->log();
    std::this_thread::sleep_for(500ms);
    EXPECT_TRUE(controller->reports_where([](const Json& r) { return r["trigger"] == "health"; }).empty());
    auto flipped = std::chrono::steady_clock::now();
    fs::remove(flag);
    ASSERT_TRUE(eventually([&] {
        return !controller->reports_where([](const Json& r) { return r["trigger"] == "health"; }).empty();
    })) << agent->log();
    Json health = controller->reports_where([](const Json& r) { return r["trigger"] == "health"; })[0];
    auto latency =
        std::chrono::duration_cast<std::chrono::milliseconds>(controller->arrival(health["report_id"]) - flipped);
    std::cout << "health flip -> report at the controller: " << latency.count() << " ms\n";
    // A second, plus slack for a loaded CI machine (probe interval 200 ms).
    EXPECT_LT(latency.count(), 3000);
    EXPECT_EQ(health["health"][0]["status"], "fail");
    EXPECT_EQ(health["health"][0]["name"], "flag");
    std::ofstream(flag) << "";
    EXPECT_TRUE(eventually(
        [&] { return controller->reports_where([](const Json& r) { return r["trigger"] == "health"; }).size() >= 2; }));
    EXPECT_EQ(run_reports().size(), 1u) << "health changes report; they do not converge";
    agent->signal(SIGTERM);
    EXPECT_EQ(agent->wait_exit(20s), 0);
}

TEST_F(AgentDaemonTest, SighupRunsNow) {
    controller->start();
    auto agent = start_agent({"--interval", "1h"});
    ASSERT_TRUE(eventually([&] { return run_reports().size() == 1; })) << agent->log();
    std::this_thread::sleep_for(300ms);
    EXPECT_EQ(run_reports().size(), 1u);
    agent->signal(SIGHUP);
    ASSERT_TRUE(eventually([&] { return run_reports().size() == 2; }, 10s)) << agent->log();
    agent->signal(SIGHUP);
    ASSERT_TRUE(eventually([&] { return run_reports().size() == 3; }, 10s)) << agent->log();
    agent->signal(SIGINT);
    EXPECT_EQ(agent->wait_exit(20s), 0);
}

TEST_F(AgentDaemonTest, KillNineLosesNoSpooledReportAndTheNextStartCompletesTheConverge) {
    ASSERT_NO_FATAL_FAILURE(first_life_then_controller_down());
    std::set<std::string> ever_spooled;
    for (int round = 0; round < 4; ++round) {
        fs::remove(root + "/etc/motd");
        auto agent = start_agent({"--interval", "100ms"});
        // kill it at some moment while it converges and spools
        ASSERT_TRUE(eventually([&] { return spooled_ids().size() >= ever_spooled.size() + 1 + round; }))
            << agent->log();
        std::this_thread::sleep_for(std::chrono::milliseconds(37 * round));
        agent->signal(SIGKILL);
        agent->wait_exit(5s);
        for (const auto& id : spooled_ids())
            ever_spooled.insert(id);
    }
    // No leftover temp files count as reports; every spooled file is a whole report.
    for (const auto& e : fs::directory_iterator(spool_dir())) {
        if (e.path().extension() != ".json") continue;
        auto j = Json::parse(*nodeform::read_file(e.path().string()), nullptr, false);
        EXPECT_FALSE(j.is_discarded()) << e.path();
    }
    fs::remove(root + "/etc/motd");
    controller->start();
    auto agent = start_agent({"--interval", "1h"});
    ASSERT_TRUE(eventually([&] {
        for (const auto& id : ever_spooled)
            if (!controller->has(id)) return false;
        return spooled_ids().empty();
    })) << agent->log();
    EXPECT_EQ(motd(), "managed by nodeform\n");
    agent->signal(SIGTERM);
    EXPECT_EQ(agent->wait_exit(20s), 0);
    EXPECT_EQ(controller->duplicate_posts.load(), 0);
    std::cout << "reports spooled across 4 kill -9 rounds and delivered after restart: " << ever_spooled.size() << "\n";
}

// The real controller: a copy of the example site with one node_token node whose spec is a single file.
// Drift in a second (docs/daemon.md): the real inotify watcher sees a managed file and /etc/group change
// between turns (the next turn is an hour away) and the daemon reports each, repairing in remediate mode.
class AgentDriftWatchTest : public AgentDaemonTest {
  protected:
    void SetUp() override {
        AgentDaemonTest::SetUp();
        if (IsSkipped()) return;
        if (::geteuid() != 0) GTEST_SKIP() << "usermod --root needs root";
        std::ofstream(root + "/etc/passwd") << "root:x:0:0:root:/root:/bin/bash\n"
                                               "alice:x:1100:1100::/home/alice:/bin/bash\n";
        std::ofstream(root + "/etc/group") << "root:x:0:\nalice:x:1100:\nops:x:2000:alice\n";
        std::ofstream(root + "/etc/shadow") << "root:*:19000:0:99999:7:::\nalice:!:19000:0:99999:7:::\n";
        std::ofstream(root + "/etc/gshadow") << "root:*::\nalice:!::\nops:!::alice\n";
        fs::create_directories(root + "/home/alice");
    }
    Json accounts_spec(const std::string& drift) {
        Json s = spec(drift);
        s["groups"] = {{{"name", "ops"}, {"gid", 2000}, {"state", "present"}}};
        s["users"] = {{{"name", "alice"},
                       {"uid", 1100},
                       {"shell", "/bin/bash"},
                       {"home", "/home/alice"},
                       {"groups", {"ops"}},
                       {"sudo", false},
                       {"sudo_nopasswd", false},
                       {"ssh_keys", Json::array()},
                       {"state", "present"}}};
        return s;
    }
    std::string group() const { return *nodeform::read_file(root + "/etc/group"); }
    // Like an editor: a new file renamed over the old one.
    void edit(const std::string& path, const std::string& text) {
        ASSERT_TRUE(nodeform::write_file_atomic(root + path, text, nodeform::WriteOptions{0644, false}));
    }
    // The first run report after `after` reports that names `id` with `status`; null until then.
    Json report_naming(std::size_t after, const std::string& id, const std::string& status) {
        auto reports = run_reports();
        for (std::size_t i = after; i < reports.size(); ++i)
            for (const auto& res : reports[i]["resources"])
                if (res["id"] == id && res["status"] == status) return reports[i];
        return nullptr;
    }
    // Waits (generously: no timing target here, bench/agent/watch_latency.sh measures it) for such a report.
    void expect_report(std::size_t after, const std::string& id, const std::string& status, Agent& agent) {
        auto t0 = std::chrono::steady_clock::now();
        ASSERT_TRUE(eventually([&] { return !report_naming(after, id, status).is_null(); }, 5s))
            << id << " " << status << "\n"
            << agent.log();
        std::cout
            << id << " " << status << " reported after "
            << std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count()
            << " ms\n";
    }
};

TEST_F(AgentDriftWatchTest, RemediateRepairsAManagedFileAndAGroupMembershipWithinSeconds) {
    controller->set_spec(accounts_spec("remediate"));
    controller->start();
    auto agent = start_agent({"--interval", "1h"});
    ASSERT_TRUE(eventually([&] { return run_reports().size() == 1; })) << agent->log();
    EXPECT_EQ(run_reports()[0]["counts"]["failed"], 0) << run_reports()[0].dump();

    std::size_t before = run_reports().size();
    std::ofstream(root + "/etc/motd") << "hand edit\n";
    ASSERT_NO_FATAL_FAILURE(expect_report(before, "file:/etc/motd", "changed", *agent));
    EXPECT_EQ(motd(), "managed by nodeform\n");

    before = run_reports().size();
    edit("/etc/group", "root:x:0:\nalice:x:1100:\nops:x:2000:\n");  // alice leaves ops
    ASSERT_NO_FATAL_FAILURE(expect_report(before, "user:alice", "changed", *agent));
    EXPECT_NE(group().find("ops:x:2000:alice"), std::string::npos) << group();

    // The repairs' own writes are no new drift: no further runs.
    std::size_t settled = run_reports().size();
    std::this_thread::sleep_for(1500ms);
    EXPECT_EQ(run_reports().size(), settled) << agent->log();
    EXPECT_EQ(controller->spec_requests.load(), 1) << "changes are examined against the last spec";
    agent->signal(SIGTERM);
    EXPECT_EQ(agent->wait_exit(20s), 0);
    EXPECT_NE(agent->log().find("change seen: /etc/group"), std::string::npos) << agent->log();
}

TEST_F(AgentDriftWatchTest, ReportModeReportsEachChangeAndRepairsNothing) {
    controller->set_spec(accounts_spec("report"));
    controller->start();
    auto agent = start_agent({"--interval", "1h"});
    ASSERT_TRUE(eventually([&] { return run_reports().size() == 1; })) << agent->log();

    std::size_t before = run_reports().size();
    std::ofstream(root + "/etc/motd") << "hand edit\n";
    ASSERT_NO_FATAL_FAILURE(expect_report(before, "file:/etc/motd", "drifted", *agent));
    before = run_reports().size();
    edit("/etc/group", "root:x:0:\nalice:x:1100:\nops:x:2000:\n");
    ASSERT_NO_FATAL_FAILURE(expect_report(before, "user:alice", "drifted", *agent));
    EXPECT_EQ(motd(), "hand edit\n");
    EXPECT_EQ(group(), "root:x:0:\nalice:x:1100:\nops:x:2000:\n");
    agent->signal(SIGTERM);
    EXPECT_EQ(agent->wait_exit(20s), 0);
}

class RealControllerTest : public ::testing::Test {
  protected:
    void SetUp() override {
        for (const char* b : {"/agent/nodeform-agent", "/controller/nodeform-controller"})
            if (!fs::exists(nodeform::test::binary_dir() + b)) GTEST_SKIP() << b << " not built";
        root = dir.path() + "/root";
        fs::create_directories(root + "/etc");
        std::ofstream(root + "/etc/passwd") << "root:x:0:0:root:/root:/bin/bash\n";
        std::ofstream(root + "/etc/group") << "root:x:0:\n";
        site = dir.path() + "/site";
        state = dir.path() + "/state";
        seed = dir.path() + "/seed.yaml";
        fs::copy(nodeform::test::source_dir() + "/examples/site", site, fs::copy_options::recursive);
        std::ofstream(site + "/postures/token.yaml")
            << "description: enrolled test nodes\nauth:\n  method: node_token\n";
        std::ofstream(site + "/specs/tiny.yaml")
            << "schema_version: 1\naccess:\n  posture: token\nplatform:\n  files:\n    - path: /etc/motd\n"
               "      content: \"managed by nodeform\\n\"\napply:\n  interval: 2m\n  splay: 0s\n";
        std::ofstream(site + "/nodes/cred-01.yaml")
            << "type: vm\nspec: tiny\npreset: tiny\nproxmox:\n  endpoint: pve-lab\n  node: pve1\n  template_vmid: "
               "9000\n"
               "  storage: local-lvm\n  bridge: vmbr0\ndecommission: allow_immediate_destroy\n";
    }

    void start_controller(std::vector<std::string> extra = {}) {
        // A refused node retries every few hundred ms here: keep the per-address failure limit out of the way.
        extra.insert(extra.end(), {"--auth-failure-limit", "100000"});
        controller = std::make_unique<nodeform::test::ControllerProcess>(site, state, std::move(extra));
        ASSERT_GT(controller->port(), 0) << "the controller did not start";
    }
    nodeform::test::CliResult cli(const std::string& sub) {
        return nodeform::test::run_controller_cli(
            {"token", sub, "cred-01", "--state", state, "--site", site, "--config", "/dev/null"});
    }
    std::string issue_token() {
        auto r = cli("issue");
        EXPECT_EQ(r.exit_code, 0) << r.err;
        std::string t = r.out;
        while (!t.empty() && (t.back() == '\n' || t.back() == ' '))
            t.pop_back();
        return t;
    }
    // A new seed file, written the way an operator (or cloud-init) would replace it: atomically.
    void write_seed(const std::string& token) {
        std::string text = "identity: cred-01\ncontroller_url: http://127.0.0.1:" + std::to_string(controller->port()) +
                           "\ntoken: " + token +
                           "\nca_fingerprint: 5d41402abc4b2a76b9719d911017c592ae2f5d6d0d1f8b2f8c7b7a1f0e9d8c7b\n";
        ASSERT_TRUE(nodeform::write_file_atomic(seed, text, nodeform::WriteOptions{0600, true}).ok());
    }
    std::unique_ptr<Agent> start_agent(std::vector<std::string> extra = {}) {
        return start_test_agent(seed, root, dir.path() + "/agent.log", std::move(extra));
    }
    std::string credential() const {
        auto text = nodeform::read_file(root + "/var/lib/nodeform/credential");
        if (!text) return "";
        auto j = Json::parse(*text, nullptr, false);
        return j.is_object() ? j.value("credential", "") : "";
    }
    // Reports the controller has stored for the node (read from its database, as a second reader).
    std::int64_t stored_reports() const {
        auto store = nodeform::controller::open_sqlite_store(nodeform::controller::sqlite::database_path(state));
        if (!store) return -1;
        auto node = (*store)->node("cred-01");
        return node && node->has_value() ? (**node).report_count : 0;
    }
    int spec_status(const std::string& credential) const {
        httplib::Client client("127.0.0.1", controller->port());
        auto res = client.Get("/v1/spec/cred-01", {{"Authorization", "Bearer " + credential}});
        return res ? res->status : -1;
    }
    std::string motd() const {
        auto t = nodeform::read_file(root + "/etc/motd");
        return t ? *t : "";
    }
    bool spool_empty() const {
        const std::string spool = root + "/var/lib/nodeform/spool";
        if (!fs::exists(spool)) return true;
        for (const auto& e : fs::directory_iterator(spool))
            if (e.path().extension() == ".json") return false;
        return true;
    }

    nodeform::test::TempDir dir;
    std::string root, site, state, seed;
    std::unique_ptr<nodeform::test::ControllerProcess> controller;
};

// `token rotate`: the agent fetches a new credential over its authenticated channel and stores it; the old one
// works through the grace period and is refused after it; reports keep arriving and none is left behind.
TEST_F(RealControllerTest, RotationReplacesTheCredentialWithoutLosingAReport) {
    start_controller({"--credential-grace", "4s"});
    write_seed(issue_token());
    auto agent = start_agent({"--interval", "300ms"});
    ASSERT_TRUE(eventually([&] { return stored_reports() >= 2; })) << stored_reports() << agent->log().substr(0, 3000);
    const std::string first = credential();
    ASSERT_FALSE(first.empty());
    EXPECT_EQ(spec_status(first), 200);

    auto rotate = cli("rotate");
    ASSERT_EQ(rotate.exit_code, 0) << rotate.err;
    ASSERT_TRUE(eventually([&] { return !credential().empty() && credential() != first; })) << agent->log();
    const std::string second = credential();
    EXPECT_EQ(spec_status(second), 200);
    EXPECT_EQ(spec_status(first), 200) << "the old credential works during the grace period";
    const auto before = stored_reports();
    ASSERT_TRUE(eventually([&] { return stored_reports() >= before + 3; })) << agent->log();
    EXPECT_TRUE(eventually([&] { return spec_status(first) == 401; })) << "the grace period ends";
    EXPECT_EQ(spec_status(second), 200);
    EXPECT_EQ(credential(), second) << "one rotation per request";
    agent->signal(SIGTERM);
    EXPECT_EQ(agent->wait_exit(20s), 0) << agent->log();
    EXPECT_TRUE(spool_empty()) << "every report was delivered";
    EXPECT_NE(agent->log().find("node credential rotated"), std::string::npos);
    EXPECT_EQ(agent->log().find(second), std::string::npos) << "the credential is never logged";

    auto none =
        nodeform::test::run_controller_cli({"token", "rotate", "web-02", "--state", state, "--config", "/dev/null"});
    EXPECT_NE(none.exit_code, 0) << "a node without a credential cannot be rotated";
}

// apply.trigger: manual with the real controller: after platform-ready the node only checks (a damaged file stays
// damaged over many turns); `node apply` stores a request that rides on the spec answers until the report of the run
// that took it arrives; the node converges once, the request is cleared, and later damage stays again.
TEST_F(RealControllerTest, ManualNodeConvergesOnlyWhenTheOperatorAsksThroughTheController) {
    std::ofstream(site + "/specs/tiny.yaml")
        << "schema_version: 1\naccess:\n  posture: token\nplatform:\n  files:\n    - path: /etc/motd\n"
           "      content: \"managed by nodeform\\n\"\napply:\n  trigger: manual\n  interval: 2m\n  splay: 0s\n";
    // The site's time zone (Europe/Berlin) must exist for the first run to succeed and reach platform-ready.
    fs::create_directories(root + "/usr/share/zoneinfo/Europe");
    std::ofstream(root + "/usr/share/zoneinfo/Europe/Berlin") << "TZif2 test zone\n";
    start_controller();
    write_seed(issue_token());
    auto agent = start_agent({"--interval", "300ms"});
    ASSERT_TRUE(eventually([&] {
        return stored_reports() >= 1 && fs::exists(root + "/var/lib/nodeform/platform-ready");
    })) << agent->log();
    ASSERT_EQ(motd(), "managed by nodeform\n");
    auto pending = [&]() -> std::string {
        auto store = nodeform::controller::open_sqlite_store(nodeform::controller::sqlite::database_path(state));
        if (!store) return "<store error>";
        auto p = (*store)->pending_apply("cred-01");
        return p && p->has_value() ? **p : "";
    };
    auto apply_header = [&]() -> std::string {
        httplib::Client client("127.0.0.1", controller->port());
        auto res = client.Get("/v1/spec/cred-01", {{"Authorization", "Bearer " + credential()}});
        return res ? res->get_header_value("Nodeform-Apply-Request") : "<no answer>";
    };
    EXPECT_EQ(apply_header(), "");

    std::ofstream(root + "/etc/motd") << "tampered\n";
    auto before = stored_reports();
    ASSERT_TRUE(eventually([&] { return stored_reports() >= before + 4; })) << agent->log();
    EXPECT_EQ(motd(), "tampered\n") << "manual: turns only check";

    auto requested = nodeform::test::run_controller_cli(
        {"node", "apply", "cred-01", "--json", "--state", state, "--site", site, "--config", "/dev/null"});
    ASSERT_EQ(requested.exit_code, 0) << requested.err;
    const std::string id = Json::parse(requested.out).value("apply_request", "");
    ASSERT_FALSE(id.empty()) << requested.out;
    EXPECT_EQ(pending(), id);
    ASSERT_TRUE(eventually([&] { return motd() == "managed by nodeform\n"; })) << agent->log();
    EXPECT_TRUE(eventually([&] { return pending().empty(); })) << "the report acknowledged the request";
    EXPECT_EQ(apply_header(), "") << "a taken request is not sent again";
    EXPECT_NE(agent->log().find("the controller asked for a converge (request " + id + ")"), std::string::npos);

    std::ofstream(root + "/etc/motd") << "tampered again\n";
    before = stored_reports();
    ASSERT_TRUE(eventually([&] { return stored_reports() >= before + 4; })) << agent->log();
    EXPECT_EQ(motd(), "tampered again\n") << "one request, one converge";

    auto unknown = nodeform::test::run_controller_cli(
        {"node", "apply", "nope-01", "--state", state, "--site", site, "--config", "/dev/null"});
    EXPECT_EQ(unknown.exit_code, 1) << unknown.out;
    EXPECT_NE(unknown.err.find("no node 'nope-01'"), std::string::npos) << unknown.err;
    agent->signal(SIGTERM);
    EXPECT_EQ(agent->wait_exit(20s), 0) << agent->log();
}

// Revoked: the agent says so, keeps converging the cached spec, keeps its reports, and enrolls again when a
// new enrollment token arrives in a new seed (never retrying the used one) — without a restart.
TEST_F(RealControllerTest, RevokedNodeConvergesFromCacheAndReEnrollsWithANewSeedToken) {
    start_controller();
    write_seed(issue_token());
    auto agent = start_agent({"--interval", "300ms"});
    ASSERT_TRUE(eventually([&] { return stored_reports() >= 1; })) << agent->log();
    const std::string first = credential();
    ASSERT_FALSE(first.empty());

    auto revoke = cli("revoke");
    ASSERT_EQ(revoke.exit_code, 0) << revoke.err;
    ASSERT_TRUE(eventually([&] { return agent->log().find("node credential was refused") != std::string::npos; }))
        << agent->log();
    fs::remove(root + "/etc/motd");
    ASSERT_TRUE(eventually([&] { return motd() == "managed by nodeform\n"; }))
        << "converged from the cached spec while refused\n"
        << agent->log();
    EXPECT_FALSE(spool_empty()) << "reports wait in the spool";
    const auto before = stored_reports();

    write_seed(issue_token());
    ASSERT_TRUE(eventually([&] { return !credential().empty() && credential() != first; })) << agent->log();
    EXPECT_TRUE(eventually([&] { return stored_reports() > before + 1; })) << agent->log();
    EXPECT_TRUE(eventually([&] { return spool_empty(); })) << "the waiting reports are delivered";
    EXPECT_NE(agent->log().find("enrolling again"), std::string::npos);
    agent->signal(SIGTERM);
    EXPECT_EQ(agent->wait_exit(20s), 0) << agent->log();
}

}  // namespace
