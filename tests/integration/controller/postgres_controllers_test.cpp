// Two real nodeform-controller processes on one PostgreSQL (tests/support/postgres_cluster): a token issued
// through one enrolls through either, exactly once when both are asked at once; a spec fetched and reports sent
// through both are stored once; a revocation through one is enforced by the other at once; `node list` sees it all.
#include <gtest/gtest.h>
#include <httplib.h>

#include <atomic>
#include <barrier>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "controller_process.hpp"
#include "eventually.hpp"
#include "nodeform/controller/lifecycle/lifecycle.hpp"
#include "nodeform/controller/store/store.hpp"
#include "nodeform/site/site.hpp"
#include "postgres_cluster.hpp"
#include "test_paths.hpp"

namespace nodeform::controller {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

// A node of the example site that authenticates with an enrolled credential.
std::string credential_node(const std::string& site_dir) {
    auto loaded = site::load_site(site_dir);
    if (!loaded.ok()) return "";
    for (const auto& [id, node] : loaded.site->nodes)
        if (node.auth.method == site::AuthMethod::node_token) return id;
    return "";
}

class PostgresControllers : public ::testing::Test {
  protected:
    void SetUp() override {
        site_ = dir_.path() + "/site";
        fs::copy(test::source_dir() + "/examples/site", site_, fs::copy_options::recursive);
        identity_ = credential_node(site_);
        ASSERT_FALSE(identity_.empty()) << "examples/site has no node_token node";
        url_ = test::PostgresCluster::shared().create_database();
        ASSERT_FALSE(url_.empty()) << test::PostgresCluster::shared().error();
    }
    // nodeform-controller SUB… with this test's site and store (state: the first controller's).
    test::CliResult cli(std::vector<std::string> args) {
        args.insert(args.end(),
                    {"--state", dir_.path() + "/state-a", "--site", site_, "--store", url_, "--config", "/dev/null"});
        return test::run_controller_cli(args);
    }
    std::string issue_token() {
        auto r = cli({"token", "issue", identity_});
        EXPECT_EQ(r.exit_code, 0) << r.err;
        auto t = r.out;
        while (!t.empty() && (t.back() == '\n' || t.back() == ' '))
            t.pop_back();
        return t;
    }

    test::TempDir dir_;
    std::string site_, identity_, url_;
};

TEST_F(PostgresControllers, TwoControllersServeOneFleet) {
    test::ControllerProcess a(site_, dir_.path() + "/state-a", {"--store", url_});
    test::ControllerProcess b(site_, dir_.path() + "/state-b", {"--store", url_});
    ASSERT_GT(a.port(), 0) << "controller a did not start";
    ASSERT_GT(b.port(), 0) << "controller b did not start";
    httplib::Client ca("127.0.0.1", a.port()), cb("127.0.0.1", b.port());

    // The same token sent to both controllers at once, 5 times: one credential each time.
    std::string credential;
    for (int round = 0; round < 5; ++round) {
        const auto body = json{{"identity", identity_}, {"token", issue_token()}}.dump();
        std::barrier start(2);
        std::pair<int, std::string> ra{-1, ""}, rb{-1, ""};  // status, body
        auto post = [&](httplib::Client& c, std::pair<int, std::string>& out) {
            start.arrive_and_wait();
            if (auto res = c.Post("/v1/enroll", body, "application/json")) out = {res->status, res->body};
        };
        std::thread ta([&] { post(ca, ra); });
        std::thread tb([&] { post(cb, rb); });
        ta.join();
        tb.join();
        ASSERT_NE(ra.first == 200, rb.first == 200) << ra.first << " " << rb.first;
        EXPECT_EQ((ra.first == 200 ? rb : ra).first, 401);
        credential = json::parse((ra.first == 200 ? ra : rb).second).value("credential", "");
    }
    ASSERT_FALSE(credential.empty());
    const httplib::Headers bearer = {{"Authorization", "Bearer " + credential}};

    // The last credential works on both; the earlier ones were replaced.
    auto spec = cb.Get("/v1/spec/" + identity_, bearer);
    ASSERT_TRUE(spec);
    EXPECT_EQ(spec->status, 200) << spec->body;
    EXPECT_EQ(ca.Get("/v1/spec/" + identity_, bearer)->status, 200);

    // A report retried against the other controller is stored once.
    const auto r1 = test::minimal_report(identity_, "r-1").dump();
    EXPECT_EQ(ca.Post("/v1/nodes/" + identity_ + "/reports", bearer, r1, "application/json")->status, 201);
    EXPECT_EQ(cb.Post("/v1/nodes/" + identity_ + "/reports", bearer, r1, "application/json")->status, 200);
    EXPECT_EQ(cb.Post("/v1/nodes/" + identity_ + "/reports", bearer, test::minimal_report(identity_, "r-2").dump(),
                      "application/json")
                  ->status,
              201);

    auto list = cli({"node", "list", "--json"});
    ASSERT_EQ(list.exit_code, 0) << list.err;
    auto nodes = json::parse(list.out, nullptr, false);
    ASSERT_TRUE(nodes.is_object()) << list.out;
    bool found = false;
    for (const auto& n : nodes["nodes"]) {
        if (n.value("identity", "") != identity_) continue;
        found = true;
        EXPECT_EQ(n.value("status", ""), "converging") << n.dump();
    }
    EXPECT_TRUE(found) << list.out;
    auto show = cli({"node", "show", identity_});
    ASSERT_EQ(show.exit_code, 0) << show.err;
    EXPECT_NE(show.out.find("r-2"), std::string::npos) << show.out;

    // The lifecycle commands read the shared database too: a receipt another controller wrote there.
    {
        auto lifecycle = lifecycle::open_postgres_lifecycle_store(url_, "");
        ASSERT_TRUE(lifecycle.ok()) << lifecycle.message();
        lifecycle::Receipt receipt;
        receipt.identity = identity_;
        receipt.step = "vmid_reserved";
        receipt.outcome = "ok";
        receipt.state_after = "provisioning";
        ASSERT_TRUE((*lifecycle)->add_receipt(receipt).ok());
    }
    auto receipts =
        test::run_controller_cli({"node", "receipts", identity_, "--state", dir_.path() + "/state-a", "--store", url_});
    EXPECT_EQ(receipts.exit_code, 0) << receipts.err;
    EXPECT_NE(receipts.out.find("vmid_reserved"), std::string::npos) << receipts.out;

    // Revoked through the CLI (the shared database): neither controller accepts the credential any more.
    auto revoked = cli({"token", "revoke", identity_});
    ASSERT_EQ(revoked.exit_code, 0) << revoked.err;
    EXPECT_EQ(ca.Get("/v1/spec/" + identity_, bearer)->status, 401);
    EXPECT_EQ(cb.Get("/v1/spec/" + identity_, bearer)->status, 401);
    EXPECT_EQ(a.terminate(), 0);
    EXPECT_EQ(b.terminate(), 0);
}

// Rewrites the prod posture's SSH port (every node_token node of examples/site has it): a new spec digest.
void edit_site(const std::string& site_dir) {
    const auto path = site_dir + "/postures/prod.yaml";
    std::ifstream in(path);
    std::stringstream text;
    text << in.rdbuf();
    auto yaml = text.str();
    auto at = yaml.find("port: 22\n");
    ASSERT_NE(at, std::string::npos) << path;
    yaml.replace(at, 9, "port: 2222\n");
    std::ofstream(path, std::ios::trunc) << yaml;
}

// Three controllers, each with its own copy of the site (as with a git checkout per machine). The site is edited
// and reloaded (SIGHUP) on one controller after another while a client fetches the node's spec from all three
// in turn: the new digest is served by none before the third has loaded it, and never new-then-old.
TEST_F(PostgresControllers, AReloadIsServedOnlyOnceEveryControllerHasTheSite) {
    std::vector<std::string> sites;
    for (const char* name : {"a", "b", "c"}) {
        sites.push_back(dir_.path() + "/site-" + name);
        fs::copy(site_, sites.back(), fs::copy_options::recursive);
    }
    std::vector<std::unique_ptr<test::ControllerProcess>> ctl;
    for (std::size_t i = 0; i < 3; ++i) {
        ctl.push_back(std::make_unique<test::ControllerProcess>(sites[i], dir_.path() + "/state-" + std::to_string(i),
                                                                std::vector<std::string>{"--store", url_}));
        ASSERT_GT(ctl.back()->port(), 0) << "controller " << i << " did not start";
    }
    httplib::Client enroll("127.0.0.1", ctl[0]->port());
    auto enrolled =
        enroll.Post("/v1/enroll", json{{"identity", identity_}, {"token", issue_token()}}.dump(), "application/json");
    ASSERT_TRUE(enrolled);
    ASSERT_EQ(enrolled->status, 200) << enrolled->body;
    const httplib::Headers bearer = {
        {"Authorization", "Bearer " + json::parse(enrolled->body).value("credential", "")}};
    auto etag_of = [&](int port) {
        httplib::Client c("127.0.0.1", port);
        auto res = c.Get("/v1/spec/" + identity_, bearer);
        return res && res->status == 200 ? res->get_header_value("ETag") : std::string("error");
    };
    const std::string old_etag = etag_of(ctl[0]->port());
    ASSERT_NE(old_etag, "error");
    std::string new_etag;
    {
        auto edited = dir_.path() + "/site-edited";
        fs::copy(site_, edited, fs::copy_options::recursive);
        edit_site(edited);
        auto loaded = site::load_site(edited);
        ASSERT_TRUE(loaded.ok());
        new_etag = "\"" + loaded.site->nodes.at(identity_).digest + "\"";
        ASSERT_NE(new_etag, old_etag) << "the edit does not change the node's spec";
    }
    auto pending = [&](int port) {
        httplib::Client c("127.0.0.1", port);
        auto res = c.Get("/readyz");
        return res && json::parse(res->body, nullptr, false).contains("site_pending");
    };

    // The client: round robin over the three, recording (all three reloaded yet?, ETag).
    std::atomic<bool> all_reloaded{false}, stop{false};
    std::mutex seen_mutex;
    std::vector<std::pair<bool, std::string>> seen;
    std::thread client([&] {
        for (std::size_t i = 0; !stop; i = (i + 1) % 3) {
            bool after = all_reloaded;  // read before the request: the request is certainly later
            auto etag = etag_of(ctl[i]->port());
            std::lock_guard<std::mutex> lock(seen_mutex);
            seen.emplace_back(after, etag);
        }
    });
    auto seen_count = [&] {
        std::lock_guard<std::mutex> lock(seen_mutex);
        return seen.size();
    };
    for (std::size_t i = 0; i < 2; ++i) {
        edit_site(sites[i]);
        ctl[i]->reload();
        EXPECT_TRUE(test::eventually([&] { return pending(ctl[i]->port()); })) << "controller " << i;
        auto before = seen_count();  // a few rounds of fetches while it pends
        EXPECT_TRUE(test::eventually([&] { return seen_count() >= before + 30; }));
    }
    all_reloaded = true;
    edit_site(sites[2]);
    ctl[2]->reload();
    for (auto& c : ctl)
        EXPECT_TRUE(test::eventually([&] { return etag_of(c->port()) == new_etag; })) << "port " << c->port();
    auto before = seen_count();
    EXPECT_TRUE(test::eventually([&] { return seen_count() >= before + 30; }));
    stop = true;
    client.join();

    bool served_new = false;
    std::size_t old_before = 0;
    for (const auto& [after, etag] : seen) {
        ASSERT_TRUE(etag == old_etag || etag == new_etag) << etag;
        if (!after) {
            EXPECT_EQ(etag, old_etag) << "the new site was served before every controller had loaded it";
            ++old_before;
        }
        if (served_new) {
            EXPECT_EQ(etag, new_etag) << "new, then old again";
        }
        served_new = served_new || etag == new_etag;
    }
    EXPECT_GE(old_before, 60u);
    EXPECT_EQ(seen.back().second, new_etag);
    for (std::size_t i = 0; i < 3; ++i)
        EXPECT_FALSE(pending(ctl[i]->port())) << "controller " << i;
    for (auto& c : ctl)
        EXPECT_EQ(c->terminate(), 0);
}

// A controller that checks its files seldom (--reload-interval 60s) still beats often enough to count as live for
// one checking every second (beat lifetime 15 s): a site only that one has loaded pends past those 15 s instead
// of being served early, and is served once the other has it too.
TEST_F(PostgresControllers, ASeldomReloadingControllerStillHoldsANewSiteBack) {
    std::vector<std::string> sites;
    for (const char* name : {"a", "b"}) {
        sites.push_back(dir_.path() + "/site-" + name);
        fs::copy(site_, sites.back(), fs::copy_options::recursive);
    }
    test::ControllerProcess quick(sites[0], dir_.path() + "/state-a", {"--store", url_, "--reload-interval", "1s"});
    ASSERT_GT(quick.port(), 0);
    test::ControllerProcess seldom(sites[1], dir_.path() + "/state-b", {"--store", url_, "--reload-interval", "60s"});
    ASSERT_GT(seldom.port(), 0);
    const auto started = std::chrono::steady_clock::now();
    auto pending = [](int port) {
        httplib::Client c("127.0.0.1", port);
        auto res = c.Get("/readyz");
        return res && json::parse(res->body, nullptr, false).contains("site_pending");
    };
    edit_site(sites[0]);  // picked up by quick's next check, within a second
    ASSERT_TRUE(test::eventually([&] { return pending(quick.port()); }));
    std::this_thread::sleep_until(started + std::chrono::seconds(18));  // past seldom's first beat's lifetime
    EXPECT_TRUE(pending(quick.port())) << "served before the live seldom-reloading controller had the site";
    edit_site(sites[1]);
    seldom.reload();
    EXPECT_TRUE(test::eventually([&] { return !pending(quick.port()) && !pending(seldom.port()); }));
    EXPECT_EQ(quick.terminate(), 0);
    EXPECT_EQ(seldom.terminate(), 0);
}

// 500 agents, each with its own credential enrolled through the API, report through three controllers on one
// PostgreSQL: every report is sent to one controller and retried (same report id) against another; every
// acknowledged report is in the database exactly once, and nothing unacknowledged is.
TEST_F(PostgresControllers, FiveHundredAgentsReportThroughThreeControllersWithNoneLostOrDoubled) {
    constexpr int kAgents = 500, kWorkers = 10;
    // A site of 500 nodes enrolling by token: examples/site's with db-01 cloned (no fixed VMID, own address).
    const auto fleet = dir_.path() + "/fleet-site";
    fs::copy(site_, fleet, fs::copy_options::recursive);
    std::string node_yaml;
    {
        std::ifstream in(fleet + "/nodes/db-01.yaml");
        for (std::string line; std::getline(in, line);)
            if (line.find("vmid: ") == std::string::npos || line.find("template_vmid") != std::string::npos)
                node_yaml += line + "\n";
    }
    auto agent = [](int i) {
        std::string n = std::to_string(i);
        return "agent-" + std::string(n.size() < 3 ? 3 - n.size() : 0, '0') + n;
    };
    for (int i = 0; i < kAgents; ++i)  // each its own address (the spec's is one node's)
        std::ofstream(fleet + "/nodes/" + agent(i) + ".yaml")
            << node_yaml << "network:\n  address: 10.30." << i / 250 << "." << i % 250 + 1
            << "/16\n  gateway: 10.30.255.254\n";

    // Tokens straight into the shared database (the CLI would be 500 processes); enrollment goes through the API.
    std::vector<std::string> tokens;
    {
        auto store = open_postgres_store(url_, "");
        ASSERT_TRUE(store.ok()) << store.message();
        auto now = std::chrono::system_clock::now();
        for (int i = 0; i < kAgents; ++i) {
            tokens.push_back("nft_test_token_" + std::to_string(i) + "_0123456789abcdef");
            ASSERT_TRUE(
                (*store)
                    ->add_enrollment_token(agent(i), hash_secret(tokens.back()), now + std::chrono::hours(1), now)
                    .ok());
        }
    }
    std::vector<std::unique_ptr<test::ControllerProcess>> ctl(3);
    {
        std::vector<std::thread> starting;  // at once: each loads the 500-node site
        for (int i = 0; i < 3; ++i)
            starting.emplace_back([&, i] {
                ctl[i] = std::make_unique<test::ControllerProcess>(
                    fleet, dir_.path() + "/fleet-state-" + std::to_string(i),
                    std::vector<std::string>{"--store", url_, "--access-log", "false"});
            });
        for (auto& t : starting)
            t.join();
    }
    for (int i = 0; i < 3; ++i)
        ASSERT_GT(ctl[i]->port(), 0) << "controller " << i << " did not start";

    // Each worker drives every kWorkers-th agent over its own keep-alive connection to each controller.
    std::mutex acked_mutex;
    std::set<std::string> acked;  // report ids some controller answered 2xx for
    std::atomic<int> enrolled{0}, unexpected{0};
    std::vector<std::thread> workers;
    for (int w = 0; w < kWorkers; ++w) {
        workers.emplace_back([&, w] {
            std::vector<std::unique_ptr<httplib::Client>> clients;
            for (auto& c : ctl)
                clients.push_back(std::make_unique<httplib::Client>("127.0.0.1", c->port()));
            for (int i = w; i < kAgents; i += kWorkers) {
                auto& first = *clients[i % 3];
                auto& other = *clients[(i + 1) % 3];
                auto res = first.Post("/v1/enroll", json{{"identity", agent(i)}, {"token", tokens[i]}}.dump(),
                                      "application/json");
                if (!res || res->status != 200) {
                    ++unexpected;
                    continue;
                }
                ++enrolled;
                const httplib::Headers bearer = {
                    {"Authorization", "Bearer " + json::parse(res->body).value("credential", "")}};
                const auto path = "/v1/nodes/" + agent(i) + "/reports";
                for (int n = 0; n < 2; ++n) {
                    const auto id = agent(i) + "-r" + std::to_string(n);
                    const auto body = test::minimal_report(agent(i), id).dump();
                    auto sent = (n == 0 ? first : other).Post(path, bearer, body, "application/json");
                    auto retried = (n == 0 ? other : first).Post(path, bearer, body, "application/json");
                    bool sent_ok = sent && sent->status == 201;
                    bool retried_ok = retried && retried->status == (sent_ok ? 200 : 201);
                    if (!sent_ok || !retried_ok) ++unexpected;
                    if (sent_ok || (retried && retried->status / 100 == 2)) {
                        std::lock_guard<std::mutex> lock(acked_mutex);
                        acked.insert(id);
                    }
                }
            }
        });
    }
    for (auto& t : workers)
        t.join();
    EXPECT_EQ(enrolled, kAgents);
    EXPECT_EQ(unexpected, 0);
    EXPECT_EQ(acked.size(), static_cast<std::size_t>(2 * kAgents));

    // Counted in PostgreSQL: one row per acknowledged report id, none other.
    auto store = open_postgres_store(url_, "");
    ASSERT_TRUE(store.ok()) << store.message();
    auto count = (*store)->report_count();
    ASSERT_TRUE(count.ok()) << count.message();
    EXPECT_EQ(*count, static_cast<std::int64_t>(acked.size()));
    auto nodes = (*store)->node_summaries();
    ASSERT_TRUE(nodes.ok()) << nodes.message();
    std::size_t agents_seen = 0;
    for (const auto& n : *nodes) {
        if (n.identity.rfind("agent-", 0) != 0) continue;
        ++agents_seen;
        EXPECT_EQ(n.report_count, 2) << n.identity;
        EXPECT_TRUE(n.has_credential) << n.identity;
    }
    EXPECT_EQ(agents_seen, static_cast<std::size_t>(kAgents));
    for (const auto& id : acked) {
        auto found = (*store)->find_report(id);
        ASSERT_TRUE(found.ok()) << found.message();
        EXPECT_TRUE(found->has_value()) << id;
    }
    for (auto& c : ctl)
        EXPECT_EQ(c->terminate(), 0);
}

// `serve` with a password in --store is refused before anything starts, without echoing the password.
TEST_F(PostgresControllers, APasswordOnTheCommandLineIsRefused) {
    auto r =
        test::run_controller_cli({"serve", "--site", site_, "--state", dir_.path() + "/state", "--plain-http",
                                  "--store", "postgresql://ctl:Hunter2x@localhost/nodeform", "--config", "/dev/null"});
    EXPECT_NE(r.exit_code, 0);
    EXPECT_NE(r.err.find("store-password-file"), std::string::npos) << r.err;
    EXPECT_EQ(r.err.find("Hunter2x"), std::string::npos) << r.err;
    EXPECT_EQ(r.out.find("Hunter2x"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace nodeform::controller
