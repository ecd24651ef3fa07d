// Two real nodeform-controller processes on one PostgreSQL (tests/support/postgres_cluster): a token issued
// through one enrolls through either, exactly once when both are asked at once; a spec fetched and reports sent
// through both are stored once; a revocation through one is enforced by the other at once; `node list` sees it all.
#include <gtest/gtest.h>
#include <httplib.h>

#include <barrier>
#include <filesystem>
#include <thread>

#include "controller_process.hpp"
#include "nodeform/controller/lifecycle/lifecycle.hpp"
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
