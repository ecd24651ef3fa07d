// The real nodeform-controller binary, killed with SIGKILL while 8 clients post reports: after a restart every
// report that was answered 2xx is stored, exactly once. Also: a broken site edit on disk is refused by the
// running binary, which keeps serving the last good site.
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <thread>

#include "controller_process.hpp"
#include "nodeform/controller/store/sqlite.hpp"
#include "nodeform/controller/store/store.hpp"
#include "nodeform/site/site.hpp"
#include "postgres_cluster.hpp"
#include "test_paths.hpp"

namespace nodeform::controller {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

// In a forked child: the write end of fds (a pipe) becomes target_fd, then args[0] runs with args; never returns.
[[noreturn]] void exec_with_pipe(const int (&fds)[2], int target_fd, std::vector<std::string> args) {
    ::dup2(fds[1], target_fd);
    ::close(fds[0]);
    ::close(fds[1]);
    test::exec_argv(std::move(args));
}

using test::ControllerProcess;  // tests/support/controller_process.hpp

std::string copy_example_site(const std::string& dir) {
    std::string site = dir + "/site";
    fs::copy(test::source_dir() + "/examples/site", site, fs::copy_options::recursive);
    return site;
}

// A node of the example site that authenticates by address and admits loopback.
std::string loopback_node(const std::string& site_dir) {
    auto loaded = site::load_site(site_dir);
    if (!loaded.ok()) return "";
    for (const auto& [id, node] : loaded.site->nodes) {
        if (node.auth.method != site::AuthMethod::network) continue;
        for (const auto& cidr : node.auth.allowed_cidrs)
            if (cidr == "127.0.0.0/8" || cidr == "127.0.0.1/32") return id;
    }
    return "";
}

// On either store: SQLite in STATE, or a fresh PostgreSQL database (the controller given --store URL).
class Kill9Test : public ::testing::TestWithParam<bool> {};
INSTANTIATE_TEST_SUITE_P(Stores, Kill9Test, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& info) { return info.param ? "postgres" : "sqlite"; });

TEST_P(Kill9Test, Kill9WhilePostingLosesNoAcknowledgedReport) {
    test::TempDir dir;
    std::string site = copy_example_site(dir.path());
    std::string identity = loopback_node(site);
    if (identity.empty()) GTEST_SKIP() << "examples/site has no node with network auth for 127.0.0.0/8";
    std::string state = dir.path() + "/state";
    std::vector<std::string> store_args;
    std::string url;
    if (GetParam()) {
        url = test::PostgresCluster::shared().create_database();
        ASSERT_FALSE(url.empty()) << test::PostgresCluster::shared().error();
        store_args = {"--store", url};
    }
    std::mutex mutex;
    std::set<std::string> acknowledged;
    {
        ControllerProcess controller(site, state, store_args);
        ASSERT_GT(controller.port(), 0) << "the controller did not start";
        std::atomic<bool> stop{false};
        std::vector<std::thread> clients;
        for (int t = 0; t < 8; ++t) {
            clients.emplace_back([&, t] {
                httplib::Client c("127.0.0.1", controller.port());
                c.set_read_timeout(std::chrono::seconds(5));
                for (int i = 0; !stop; ++i) {
                    std::string id = "t" + std::to_string(t) + "-" + std::to_string(i);
                    auto res = c.Post("/v1/nodes/" + identity + "/reports", test::minimal_report(identity, id).dump(),
                                      "application/json");
                    if (!res) {
                        if (stop) break;
                        std::this_thread::sleep_for(std::chrono::milliseconds(5));
                        continue;
                    }
                    if (res->status == 201 || res->status == 200) {
                        std::lock_guard<std::mutex> lock(mutex);
                        acknowledged.insert(id);
                    }
                }
            });
        }
        // Let some reports through, then kill the controller mid-stream.
        for (int i = 0; i < 200; ++i) {
            {
                std::lock_guard<std::mutex> lock(mutex);
                if (acknowledged.size() >= 300) break;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        controller.kill9();
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        stop = true;
        for (auto& c : clients)
            c.join();
    }
    ASSERT_GT(acknowledged.size(), 10u);
    {
        ControllerProcess again(site, state, store_args);
        ASSERT_GT(again.port(), 0) << "the controller did not restart on the crashed state";
        httplib::Client c("127.0.0.1", again.port());
        // A retried, already acknowledged report is recognized as stored (200), not stored twice.
        std::string sample = *acknowledged.begin();
        auto res = c.Post("/v1/nodes/" + identity + "/reports", test::minimal_report(identity, sample).dump(),
                          "application/json");
        ASSERT_TRUE(res);
        EXPECT_EQ(res->status, 200);
        EXPECT_EQ(again.terminate(), 0);
    }
    auto store = GetParam() ? open_postgres_store(url, "") : open_sqlite_store(sqlite::database_path(state));
    ASSERT_TRUE(store.ok()) << store.message();
    for (const auto& id : acknowledged) {
        auto found = (*store)->find_report(id);
        ASSERT_TRUE(found.ok());
        EXPECT_TRUE(found->has_value()) << "acknowledged report " << id << " is missing after kill -9";
    }
    auto stored = (*store)->report_count();
    ASSERT_TRUE(stored.ok()) << stored.message();
    EXPECT_GE(static_cast<std::size_t>(*stored), acknowledged.size());
    auto node = (*store)->node(identity);
    ASSERT_TRUE(node.ok() && node->has_value());
    EXPECT_EQ((*node)->report_count, *stored);  // per-node bookkeeping committed with each report
}

TEST(ControllerProcess, BrokenSiteEditIsRefusedAndOldSiteKeepsServing) {
    test::TempDir dir;
    std::string site = copy_example_site(dir.path());
    std::string identity = loopback_node(site);
    if (identity.empty()) GTEST_SKIP() << "examples/site has no node with network auth for 127.0.0.0/8";
    ControllerProcess controller(site, dir.path() + "/state");
    ASSERT_GT(controller.port(), 0);
    httplib::Client c("127.0.0.1", controller.port());
    auto before = c.Get("/v1/spec/" + identity);
    ASSERT_TRUE(before);
    ASSERT_EQ(before->status, 200);
    {
        std::ofstream broken(site + "/site.yaml", std::ios::app);
        broken << "\n  this: is: not: [valid yaml\n";
    }
    bool refused = false;
    for (int i = 0; i < 50 && !refused; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        auto r = c.Get("/readyz");
        refused = r && json::parse(r->body, nullptr, false).value("/last_reload/ok"_json_pointer, true) == false;
    }
    EXPECT_TRUE(refused) << "the broken site was not noticed";
    auto after = c.Get("/v1/spec/" + identity);
    ASSERT_TRUE(after);
    EXPECT_EQ(after->status, 200);
    EXPECT_EQ(after->body, before->body);
    auto metrics = c.Get("/metrics");
    ASSERT_TRUE(metrics);
    EXPECT_NE(metrics->body.find("nodeform_site_reloads_total{result=\"failed\"} 1"), std::string::npos);
}

// The controller started a second time on an address in use exits with the runtime code, naming the address
// (cpp-httplib's SO_REUSEPORT would have let both bind it and split the connections between them).
TEST(ControllerProcess, SecondControllerOnTheSameAddressExitsWithAddressInUse) {
    test::TempDir dir;
    std::string site = copy_example_site(dir.path());
    ControllerProcess first(site, dir.path() + "/state");
    ASSERT_GT(first.port(), 0);
    std::string address = "127.0.0.1:" + std::to_string(first.port());
    std::string binary = test::binary_dir() + "/controller/nodeform-controller";
    std::string state2 = dir.path() + "/state2";
    int err[2];
    ASSERT_EQ(::pipe(err), 0);
    pid_t pid = ::fork();
    if (pid == 0) {
        exec_with_pipe(err, STDERR_FILENO,
                       {binary, "serve", "--site", site, "--state", state2, "--listen", address, "--plain-http",
                        "--config", "/dev/null"});
    }
    ::close(err[1]);
    int status = 0;
    pid_t done = 0;
    for (int i = 0; i < 300 && done == 0; ++i) {  // it must exit at once; a second server would serve on
        done = ::waitpid(pid, &status, WNOHANG);
        if (done == 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    if (done == 0) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, &status, 0);
    }
    std::string text;
    char buf[512];
    ssize_t n;
    while ((n = ::read(err[0], buf, sizeof(buf))) > 0)
        text.append(buf, static_cast<std::size_t>(n));
    ::close(err[0]);
    ASSERT_NE(done, 0) << "the second controller started serving on " << address;
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 4) << text;
    EXPECT_NE(text.find(address + ": address in use"), std::string::npos) << text;
}

}  // namespace
}  // namespace nodeform::controller
