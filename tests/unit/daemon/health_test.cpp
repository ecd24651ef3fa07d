#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>

#include <gtest/gtest.h>
#include <httplib.h>

#include "fakes/fake_process_runner.hpp"
#include "fakes/memory_filesystem.hpp"
#include "nodeform/agent/daemon/health.hpp"
#include "nodeform/posix_process_runner.hpp"
#include "nodeform/tls.hpp"
#include "test_paths.hpp"

namespace nodeform::agent::daemon {
namespace {

using Json = nlohmann::json;

HealthCheckSpec one(const Json& j) {
    auto parsed = parse_health_checks(Json::array({j}));
    EXPECT_TRUE(parsed) << (parsed ? "" : parsed.message());
    return parsed ? parsed->at(0) : HealthCheckSpec{};
}

TEST(HealthParse, ReadsEveryTypeOfTheResolvedSpec) {
    Json health = Json::parse(R"([
      {"name": "nginx", "type": "systemd_unit", "unit": "nginx.service", "interval_s": 30, "timeout_s": 5},
      {"name": "http", "type": "http", "url": "http://127.0.0.1/", "expect_status": 200, "interval_s": 30, "timeout_s": 5},
      {"name": "ssh", "type": "tcp", "host": "127.0.0.1", "port": 22, "interval_s": 30, "timeout_s": 5},
      {"name": "root-disk", "type": "disk_free", "path": "/", "min_free_percent": 10, "interval_s": 60, "timeout_s": 5},
      {"name": "ok", "type": "command", "argv": ["/usr/bin/true"], "interval_s": 0.5, "timeout_s": 5}
    ])");
    auto checks = parse_health_checks(health);
    ASSERT_TRUE(checks) << checks.message();
    ASSERT_EQ(checks->size(), 5u);
    EXPECT_EQ((*checks)[0].unit, "nginx.service");
    EXPECT_EQ((*checks)[1].expect_status, 200);
    EXPECT_EQ((*checks)[2].port, 22);
    EXPECT_EQ(*(*checks)[3].min_free_percent, 10.0);
    EXPECT_EQ((*checks)[4].interval.count(), 500);
    EXPECT_EQ((*checks)[4].timeout.count(), 5000);
    EXPECT_TRUE(parse_health_checks(Json())->empty());
}

TEST(HealthParse, RejectsBadChecksNamingThem) {
    auto bad = [](const std::string& text, const std::string& expect) {
        auto r = parse_health_checks(Json::parse(text));
        ASSERT_FALSE(r) << text;
        EXPECT_NE(r.message().find(expect), std::string::npos) << r.message();
    };
    bad(R"([{"name":"u","type":"systemd_unit","unit":"nginx;rm -rf /"}])", "'u'");
    bad(R"([{"name":"u","type":"systemd_unit","unit":"--root=/x"}])", "unit");
    bad(R"([{"name":"t","type":"tcp","host":"localhost","port":70000}])", "port");
    bad(R"([{"name":"t","type":"tcp","host":"-oProxy","port":22}])", "host");
    bad(R"([{"name":"h","type":"http","url":"ftp://x/"}])", "url");
    bad(R"([{"name":"h","type":"http","url":"http://a b/"}])", "url");
    bad(R"([{"name":"d","type":"disk_free","path":"/"}])", "min_free");
    bad(R"([{"name":"c","type":"command","argv":["true"]}])", "absolute");
    bad(R"([{"name":"c","type":"command","argv":[]}])", "argv");
    bad(R"([{"name":"x","type":"ping"}])", "unknown type");
    bad(R"([{"name":"x","type":"tcp","host":"h","port":1,"interval_s":-1}])", "interval_s");
    bad(R"([{"name":"a","type":"command","argv":["/bin/true"]},{"name":"a","type":"command","argv":["/bin/true"]}])",
        "twice");
    bad(R"({"name":"a"})", "list");
}

TEST(HealthProbe, SystemdUnitAsksSystemctlWithArgv) {
    FakeProcessRunner runner;
    runner.on({"systemctl", "is-active", "nginx.service"}, 0, "active\n");
    runner.on({"systemctl", "is-active", "dead.service"}, 3, "inactive\n");
    SystemClock clock;
    MemoryFilesystem mfs;
    SystemHealthProber prober(runner, clock, mfs);
    auto ok = prober.probe(one({{"name", "n"}, {"type", "systemd_unit"}, {"unit", "nginx.service"}, {"timeout_s", 2}}));
    EXPECT_TRUE(ok.pass);
    EXPECT_EQ(ok.message, "active");
    auto dead = prober.probe(one({{"name", "d"}, {"type", "systemd_unit"}, {"unit", "dead.service"}}));
    EXPECT_FALSE(dead.pass);
    EXPECT_EQ(dead.message, "inactive");
    ASSERT_EQ(runner.requests.size(), 2u);
    EXPECT_EQ(runner.requests[0].timeout.count(), 2000);
}

TEST(HealthProbe, CommandPassesOnExitZeroAndFailsOnTimeout) {
    PosixProcessRunner runner(
        PosixProcessRunnerOptions{.path = "/usr/bin:/bin", .kill_grace = std::chrono::milliseconds(100)});
    SystemClock clock;
    MemoryFilesystem mfs;
    SystemHealthProber prober(runner, clock, mfs);
    EXPECT_TRUE(prober.probe(one({{"name", "t"}, {"type", "command"}, {"argv", {"/bin/true"}}})).pass);
    auto f = prober.probe(one({{"name", "f"}, {"type", "command"}, {"argv", {"/bin/false"}}}));
    EXPECT_FALSE(f.pass);
    EXPECT_EQ(f.message, "exit 1");
    auto slow =
        prober.probe(one({{"name", "s"}, {"type", "command"}, {"argv", {"/bin/sleep", "5"}}, {"timeout_s", 0.2}}));
    EXPECT_FALSE(slow.pass);
    EXPECT_NE(slow.message.find("timed out"), std::string::npos);
    auto missing = prober.probe(one({{"name", "m"}, {"type", "command"}, {"argv", {"/nonexistent/x"}}}));
    EXPECT_FALSE(missing.pass);
}

TEST(HealthProbe, TcpConnectsToAListenerAndFailsOnAClosedPort) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    ASSERT_EQ(::listen(fd, 4), 0);
    socklen_t len = sizeof addr;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    int port = ntohs(addr.sin_port);
    FakeProcessRunner runner;
    SystemClock clock;
    MemoryFilesystem mfs;
    SystemHealthProber prober(runner, clock, mfs);
    auto up = prober.probe(one({{"name", "t"}, {"type", "tcp"}, {"host", "127.0.0.1"}, {"port", port}}));
    EXPECT_TRUE(up.pass) << up.message;
    ::close(fd);
    auto down = prober.probe(one({{"name", "t"}, {"type", "tcp"}, {"host", "127.0.0.1"}, {"port", port}}));
    EXPECT_FALSE(down.pass);
    EXPECT_NE(down.message.find("refused"), std::string::npos) << down.message;
}

// Binds server to an ephemeral loopback port and serves it on a thread until server.stop().
std::thread serve_in_background(httplib::Server& server, int& port) {
    port = server.bind_to_any_port("127.0.0.1");
    std::thread t([&server] { server.listen_after_bind(); });
    while (!server.is_running())
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    return t;
}

TEST(HealthProbe, HttpExpectsTheStatus) {
    httplib::Server server;
    server.Get("/ok", [](const httplib::Request&, httplib::Response& res) { res.set_content("ok", "text/plain"); });
    server.Get("/teapot", [](const httplib::Request&, httplib::Response& res) { res.status = 418; });
    int port = 0;
    std::thread t = serve_in_background(server, port);
    FakeProcessRunner runner;
    SystemClock clock;
    MemoryFilesystem mfs;
    SystemHealthProber prober(runner, clock, mfs);
    std::string base = "http://127.0.0.1:" + std::to_string(port);
    auto ok = prober.probe(one({{"name", "h"}, {"type", "http"}, {"url", base + "/ok"}}));
    EXPECT_TRUE(ok.pass) << ok.message;
    EXPECT_EQ(ok.message, "HTTP 200");
    auto tea = prober.probe(one({{"name", "h"}, {"type", "http"}, {"url", base + "/teapot"}}));
    EXPECT_FALSE(tea.pass);
    EXPECT_EQ(tea.message, "HTTP 418 (expected 200)");
    auto tea2 = prober.probe(one({{"name", "h"}, {"type", "http"}, {"url", base + "/teapot"}, {"expect_status", 418}}));
    EXPECT_TRUE(tea2.pass);
    server.stop();
    t.join();
    auto gone = prober.probe(one({{"name", "h"}, {"type", "http"}, {"url", base + "/ok"}, {"timeout_s", 1}}));
    EXPECT_FALSE(gone.pass);
    EXPECT_NE(gone.message.find("Connection refused"), std::string::npos) << gone.message;
}

TEST(HealthProbe, HttpsVerifiesAgainstTheSystemStore) {
    test::TempDir dir;
    auto pki = tls::generate_pki(tls::PkiOptions{});
    ASSERT_TRUE(pki.ok()) << pki.message();
    ASSERT_TRUE(tls::write_pki(dir.path() + "/tls", *pki).ok());
    auto paths = tls::pki_paths(dir.path() + "/tls");
    httplib::SSLServer server(paths.server_cert.c_str(), paths.server_key.c_str());
    ASSERT_TRUE(server.is_valid());
    server.Get("/ok", [](const httplib::Request&, httplib::Response& res) { res.set_content("ok", "text/plain"); });
    int port = 0;
    std::thread t = serve_in_background(server, port);
    FakeProcessRunner runner;
    SystemClock clock;
    MemoryFilesystem mfs;
    SystemHealthProber prober(runner, clock, mfs);
    // The site CA is not in the system store: a self-signed server is not healthy, and the message says why.
    auto r = prober.probe(
        one({{"name", "h"}, {"type", "http"}, {"url", "https://127.0.0.1:" + std::to_string(port) + "/ok"}}));
    EXPECT_FALSE(r.pass);
    EXPECT_NE(r.message.find("system CA store"), std::string::npos) << r.message;
    server.stop();
    t.join();
}

TEST(HealthProbe, DiskFreeComparesWithTheThresholds) {
    test::TempDir dir;
    FakeProcessRunner runner;
    SystemClock clock;
    auto root = make_root_filesystem(dir.path());
    ASSERT_TRUE(root) << root.message();
    SystemHealthProber prober(runner, clock, **root);
    EXPECT_TRUE(prober.probe(one({{"name", "d"}, {"type", "disk_free"}, {"path", "/"}, {"min_free_percent", 0}})).pass);
    auto full = prober.probe(one({{"name", "d"}, {"type", "disk_free"}, {"path", "/"}, {"min_free_percent", 100}}));
    EXPECT_FALSE(full.pass);
    EXPECT_NE(full.message.find("% free"), std::string::npos);
    EXPECT_FALSE(prober.probe(one({{"name", "d"}, {"type", "disk_free"}, {"path", "/"}, {"min_free_mb", 1e15}})).pass);
    auto missing = prober.probe(one({{"name", "d"}, {"type", "disk_free"}, {"path", "/nope"}, {"min_free_mb", 1}}));
    EXPECT_FALSE(missing.pass);
    EXPECT_NE(missing.message.find(dir.path() + "/nope"), std::string::npos);
}

TEST(HealthProbe, DiskFreeMinFreeMbAloneAndTogetherWithPercent) {
    FakeProcessRunner runner;
    SystemClock clock;
    MemoryFilesystem mfs;
    mfs.put_dir("/srv");
    mfs.space_info = {1000ull * 1024 * 1024, 100ull * 1024 * 1024};  // 100 MiB of 1000 free: 10%
    SystemHealthProber prober(runner, clock, mfs);
    auto disk = [&](Json extra) {
        Json c = {{"name", "d"}, {"type", "disk_free"}, {"path", "/srv"}};
        c.update(extra);
        return prober.probe(one(c));
    };
    EXPECT_TRUE(disk({{"min_free_mb", 100}}).pass);
    auto low = disk({{"min_free_mb", 101}});
    EXPECT_FALSE(low.pass);
    EXPECT_NE(low.message.find("10.0% free (100 MiB); needs 101 MiB"), std::string::npos) << low.message;
    EXPECT_TRUE(disk({{"min_free_mb", 50}, {"min_free_percent", 10}}).pass);
    auto both = disk({{"min_free_mb", 50}, {"min_free_percent", 11}});
    EXPECT_FALSE(both.pass) << "either threshold failing fails the check";
    EXPECT_NE(both.message.find("needs 11% and 50 MiB"), std::string::npos) << both.message;
    auto parsed = parse_health_checks(Json::parse(R"([{"name":"d","type":"disk_free","path":"/","min_free_mb":512}])"));
    ASSERT_TRUE(parsed) << parsed.message();
    EXPECT_EQ(*(*parsed)[0].min_free_mb, 512u);
    EXPECT_FALSE((*parsed)[0].min_free_percent);
}

TEST(HealthTracker, ReportsOnlyStateChanges) {
    HealthTracker t;
    HealthResult pass{"a", "tcp", true, "connected", {}};
    HealthResult fail{"a", "tcp", false, "refused", {}};
    EXPECT_FALSE(t.update(pass));  // first result, passing: nothing to tell
    EXPECT_FALSE(t.update(pass));
    EXPECT_TRUE(t.update(fail));  // pass -> fail
    EXPECT_FALSE(t.update(fail));
    EXPECT_TRUE(t.update(pass));  // fail -> pass
    HealthResult b{"b", "command", false, "exit 1", {}};
    EXPECT_TRUE(t.update(b));  // first result, failing: tell at once
    EXPECT_EQ(t.passing(), 1u);
    EXPECT_EQ(t.results().size(), 2u);
    t.retain({one({{"name", "a"}, {"type", "tcp"}, {"host", "h"}, {"port", 1}})});
    EXPECT_EQ(t.size(), 1u);
    auto j = protocol::to_json(to_entry(t.results()[0]));
    EXPECT_EQ(j["status"], "pass");
    EXPECT_EQ(j["name"], "a");
    EXPECT_TRUE(j.contains("checked_at"));
}

}  // namespace
}  // namespace nodeform::agent::daemon
