// The PostgreSQL store across controllers (several Store instances, each on its own connection, as several
// controllers are): the enrollment race, report dedup, concurrent migrations, revocation, and the password's
// paths (file, never on the command line, never in a message). Real PostgreSQL 15 (tests/support/postgres_cluster).
#include <gtest/gtest.h>

#include <atomic>
#include <barrier>
#include <thread>

#include "nodeform/atomic_file.hpp"
#include "nodeform/controller/config.hpp"
#include "nodeform/controller/lifecycle/lifecycle.hpp"
#include "nodeform/controller/store/postgres.hpp"
#include "nodeform/controller/store/store.hpp"
#include "nodeform/controller/store/store_location.hpp"
#include "postgres_cluster.hpp"
#include "test_paths.hpp"

namespace nodeform::controller {
namespace {

TimePoint at(int seconds) {
    return TimePoint(std::chrono::seconds(1'800'000'000 + seconds));
}

ReportRecord report(const std::string& id, const std::string& identity) {
    ReportRecord r;
    r.report_id = id;
    r.identity = identity;
    r.received_at = at(0);
    r.spec_digest = "sha256:x";
    r.phase = "converging";
    r.trigger = "run";
    r.mode = "apply";
    r.finished_at = "2026-11-23T19:40:01.456Z";
    r.body = "{\"report_id\":\"" + id + "\"}";
    return r;
}

// The database name in a cluster URL (postgresql:///NAME?host=…).
std::string database_of(const std::string& url) {
    auto name = url.substr(std::string("postgresql:///").size());
    return name.substr(0, name.find('?'));
}

class PostgresStoreTest : public ::testing::Test {
  protected:
    void SetUp() override {
        url_ = cluster().create_database();
        ASSERT_FALSE(url_.empty()) << cluster().error();
    }
    static test::PostgresCluster& cluster() { return test::PostgresCluster::shared(); }
    std::unique_ptr<Store> open() {
        auto s = open_postgres_store(url_, "");
        EXPECT_TRUE(s.ok()) << (s.ok() ? "" : s.message());
        return s.ok() ? std::move(*s) : nullptr;
    }
    std::string url_;
};

// Two controllers race for one enrollment token, 50 times: exactly one gets a credential each time.
TEST_F(PostgresStoreTest, AnEnrollmentTokenGivesExactlyOneCredentialWhenTwoControllersRace) {
    auto a = open(), b = open();
    ASSERT_TRUE(a && b);
    for (int round = 0; round < 50; ++round) {
        const std::string identity = "web-" + std::to_string(round);
        const std::string token = hash_secret("token-" + std::to_string(round));
        ASSERT_TRUE(a->add_enrollment_token(identity, token, at(3600), at(0)).ok());
        std::barrier start(2);
        Result<EnrollOutcome> ra = make_error("not run"), rb = make_error("not run");
        std::thread ta([&] {
            start.arrive_and_wait();
            ra = a->enroll(identity, token, hash_secret("cred-a-" + identity), at(1));
        });
        std::thread tb([&] {
            start.arrive_and_wait();
            rb = b->enroll(identity, token, hash_secret("cred-b-" + identity), at(1));
        });
        ta.join();
        tb.join();
        ASSERT_TRUE(ra.ok()) << ra.message();
        ASSERT_TRUE(rb.ok()) << rb.message();
        ASSERT_NE(*ra == EnrollOutcome::enrolled, *rb == EnrollOutcome::enrolled) << "round " << round;
        const std::string winner = *ra == EnrollOutcome::enrolled ? "a" : "b";
        const std::string loser = winner == "a" ? "b" : "a";
        EXPECT_EQ(b->credential_owner(hash_secret("cred-" + winner + "-" + identity))->value_or(""), identity);
        EXPECT_FALSE(a->credential_owner(hash_secret("cred-" + loser + "-" + identity))->has_value());
    }
}

// The same reports sent through two controllers at once (an agent retrying against the other one): each is
// stored once, one controller answers inserted and the other duplicate, and the node counts each once.
TEST_F(PostgresStoreTest, ReportsWithTheSameIdThroughTwoControllersAreStoredOnce) {
    auto a = open(), b = open();
    ASSERT_TRUE(a && b);
    std::vector<ReportRecord> forward, backward;
    for (int i = 0; i < 200; ++i)
        forward.push_back(report("r" + std::to_string(i), "web-0" + std::to_string(i % 3)));
    backward.assign(forward.rbegin(), forward.rend());  // opposite order: the row locks cross (deadlock retried)
    for (int round = 0; round < 4; ++round) {
        std::barrier start(2);
        Result<std::vector<InsertOutcome>> ra = make_error("not run"), rb = make_error("not run");
        std::thread ta([&] {
            start.arrive_and_wait();
            ra = a->insert_reports(round % 2 == 0 ? forward : backward);
        });
        std::thread tb([&] {
            start.arrive_and_wait();
            rb = b->insert_reports(backward);
        });
        ta.join();
        tb.join();
        ASSERT_TRUE(ra.ok()) << ra.message();
        ASSERT_TRUE(rb.ok()) << rb.message();
        if (round == 0) {
            // Every id: inserted through exactly one of them.
            std::size_t inserted = 0;
            for (auto o : *ra)
                inserted += o == InsertOutcome::inserted ? 1 : 0;
            for (auto o : *rb)
                inserted += o == InsertOutcome::inserted ? 1 : 0;
            EXPECT_EQ(inserted, forward.size());
        } else {
            for (auto o : *ra)
                EXPECT_EQ(o, InsertOutcome::duplicate);
        }
    }
    EXPECT_EQ(*a->report_count(), 200);
    std::int64_t counted = 0;
    auto listed = b->nodes();  // kept: a range-for over *b->nodes() would read a destroyed temporary
    ASSERT_TRUE(listed.ok()) << listed.message();
    for (const auto& n : *listed)
        counted += n.report_count;
    EXPECT_EQ(counted, 200);
    auto conflicting = report("r7", "web-99");
    EXPECT_EQ(*b->insert_report(conflicting), InsertOutcome::conflict);
}

// Three controllers start at once on an empty database: each migration step is applied once, all three work.
TEST_F(PostgresStoreTest, MigrationsRunConcurrentlyByThreeStoresApplyTheSchemaOnce) {
    std::barrier start(3);
    std::vector<Result<std::unique_ptr<Store>>> stores;
    std::vector<Result<std::unique_ptr<lifecycle::LifecycleStore>>> lifecycles;
    for (int i = 0; i < 3; ++i) {
        stores.emplace_back(make_error("not run"));
        lifecycles.emplace_back(make_error("not run"));
    }
    std::vector<std::thread> threads;
    for (int i = 0; i < 3; ++i)
        threads.emplace_back([&, i] {
            start.arrive_and_wait();
            stores[i] = open_postgres_store(url_, "");
            lifecycles[i] = lifecycle::open_postgres_lifecycle_store(url_, "");
        });
    for (auto& t : threads)
        t.join();
    for (int i = 0; i < 3; ++i) {
        ASSERT_TRUE(stores[i].ok()) << stores[i].message();
        ASSERT_TRUE(lifecycles[i].ok()) << lifecycles[i].message();
    }
    auto c = pg::connect(url_, "");
    ASSERT_TRUE(c.ok()) << c.message();
    auto rows = c->query(
        "SELECT component, version, COUNT(*) FROM schema_migrations GROUP BY component, version "
        "ORDER BY component, version");
    ASSERT_TRUE(rows.ok()) << rows.message();
    std::vector<std::string> seen;
    for (int i = 0; i < rows->size(); ++i)
        seen.push_back(rows->text(i, 0) + "=" + rows->text(i, 1) + "x" + rows->text(i, 2));
    EXPECT_EQ(seen, (std::vector<std::string>{"controller=1x1", "controller=2x1", "controller=3x1", "controller=4x1",
                                              "lifecycle=1x1", "lifecycle=2x1", "lifecycle=3x1"}));
    ASSERT_EQ(*(*stores[0])->insert_report(report("x", "web-01")), InsertOutcome::inserted);
    EXPECT_EQ(*(*stores[2])->insert_report(report("x", "web-01")), InsertOutcome::duplicate);
    // A schema newer than this controller is refused, with what to do.
    ASSERT_TRUE(c->exec("INSERT INTO schema_migrations VALUES ('controller', 99, 'x')").ok());
    auto newer = open_postgres_store(url_, "");
    ASSERT_FALSE(newer.ok());
    EXPECT_NE(newer.message().find("upgrade nodeform-controller"), std::string::npos) << newer.message();
}

// A revocation on one controller is seen by the others at their next request (nothing cached).
TEST_F(PostgresStoreTest, RevocationIsSeenByEveryControllerAtOnce) {
    auto a = open(), b = open();
    ASSERT_TRUE(a && b);
    ASSERT_TRUE(a->add_enrollment_token("web-01", hash_secret("t"), at(3600), at(0)).ok());
    ASSERT_EQ(*a->enroll("web-01", hash_secret("t"), hash_secret("c"), at(1)), EnrollOutcome::enrolled);
    ASSERT_TRUE((*b->find_credential(hash_secret("c"), at(2))).has_value());
    ASSERT_TRUE(*a->revoke("web-01", at(3)));
    EXPECT_FALSE((*b->find_credential(hash_secret("c"), at(4))).has_value());
    EXPECT_FALSE(b->credential_owner(hash_secret("c"))->has_value());
}

// The password comes from store-password-file; a wrong one fails with a message that holds neither it nor the
// right one; the URL shown in messages has no password.
TEST_F(PostgresStoreTest, PasswordFromAFileAndNeverInAMessage) {
    const auto db = database_of(url_);
    ASSERT_TRUE(cluster().create_password_role("ctl_pw", "S3cretPw", db));
    const auto url = cluster().url(db, "ctl_pw");
    test::TempDir dir;
    const std::string file = dir.path() + "/pgpass";
    ASSERT_TRUE(write_file_atomic(file, "S3cretPw\n").ok());

    auto without = open_postgres_store(url, "");
    ASSERT_FALSE(without.ok());  // scram required: libpq has no password (no PGPASSWORD in the test env)
    auto wrong = open_postgres_store(url, "WrongPw9");
    ASSERT_FALSE(wrong.ok());
    EXPECT_EQ(wrong.message().find("WrongPw9"), std::string::npos) << wrong.message();
    EXPECT_NE(wrong.message().find("password"), std::string::npos) << wrong.message();

    ControllerConfig config;
    config.store = url;
    config.store_password_file = file;
    ::chmod(file.c_str(), 0644);
    auto readable = store_location(config);
    ASSERT_FALSE(readable.ok());
    EXPECT_NE(readable.message().find("chmod 600"), std::string::npos) << readable.message();
    ::chmod(file.c_str(), 0600);
    auto where = store_location(config);
    ASSERT_TRUE(where.ok()) << where.message();
    EXPECT_EQ(where->describe().find("S3cretPw"), std::string::npos);
    auto store = open_store(*where);
    ASSERT_TRUE(store.ok()) << store.message();
    EXPECT_TRUE((*store)->ping().ok());
    auto lifecycle = open_lifecycle_store(*where);
    ASSERT_TRUE(lifecycle.ok()) << lifecycle.message();

    // A password in the URL: accepted from a config file, never shown.
    const std::string with_password =
        "postgresql://ctl_pw:S3cretPw@localhost/" + db + "?host=" + cluster().socket_dir();
    EXPECT_EQ(pg::redact_url(with_password).find("S3cretPw"), std::string::npos) << pg::redact_url(with_password);
    auto direct = open_postgres_store(with_password, "");
    ASSERT_TRUE(direct.ok()) << direct.message();
}

TEST(PostgresConfig, StoreUrlWithAPasswordIsRefusedOnTheCommandLine) {
    auto args = parse_args({"--store", "postgresql://ctl:Hunter2x@db.example.net/nodeform"}, serve_arg_spec());
    ASSERT_TRUE(args.ok());
    auto config = load_controller_config(*args, "/nonexistent");
    ASSERT_FALSE(config.ok());
    EXPECT_NE(config.message().find("--store"), std::string::npos) << config.message();
    EXPECT_NE(config.message().find("store-password-file"), std::string::npos) << config.message();
    EXPECT_EQ(config.message().find("Hunter2x"), std::string::npos) << config.message();

    auto fine = load_controller_config(*parse_args({"--store", "postgresql://ctl@db.example.net/nodeform",
                                                    "--store-password-file", "/etc/nodeform/pg"},
                                                   serve_arg_spec()),
                                       "/nonexistent");
    ASSERT_TRUE(fine.ok()) << fine.message();
    EXPECT_EQ(fine->store, "postgresql://ctl@db.example.net/nodeform");
    EXPECT_EQ(fine->store_password_file, "/etc/nodeform/pg");
    EXPECT_EQ(pg::redact_url(fine->store), "postgresql://ctl@db.example.net/nodeform");

    auto bad =
        load_controller_config(*parse_args({"--store", "mysql://x:Hunter2x@y/z"}, serve_arg_spec()), "/nonexistent");
    ASSERT_FALSE(bad.ok());
    EXPECT_EQ(bad.message().find("Hunter2x"), std::string::npos) << bad.message();

    // In a config file (not shown by ps) the password is accepted.
    test::TempDir dir;
    ASSERT_TRUE(write_file_atomic(dir.path() + "/c.yaml", "store: postgresql://ctl:Hunter2x@db/nodeform\n").ok());
    auto from_file =
        load_controller_config(*parse_args({"--config", dir.path() + "/c.yaml"}, serve_arg_spec()), "/nonexistent");
    ASSERT_TRUE(from_file.ok()) << from_file.message();
    EXPECT_EQ(from_file->store, "postgresql://ctl:Hunter2x@db/nodeform");

    ControllerConfig sqlite_config;
    sqlite_config.state = "/var/lib/nodeform";
    sqlite_config.store_password_file = "/x";
    EXPECT_FALSE(store_location(sqlite_config).ok());  // a password file without a PostgreSQL store
    sqlite_config.store_password_file.clear();
    EXPECT_EQ(store_location(sqlite_config)->sqlite_path, "/var/lib/nodeform/nodeform.db");
}

// Lifecycle records and receipts round-trip; step durations aggregate in the database as SQLite's do.
TEST_F(PostgresStoreTest, LifecycleStoreRoundTripsAndAggregatesStepDurations) {
    auto s = lifecycle::open_postgres_lifecycle_store(url_, "");
    ASSERT_TRUE(s) << s.message();
    lifecycle::NodeRecord r;
    r.identity = "web-01";
    r.state = lifecycle::State::validating;
    r.step = "agent_ready";
    r.vmid = 105;
    r.ips = {"10.0.0.5/24"};
    ASSERT_TRUE((*s)->put(r));
    r.identity = "web-00";
    r.vmid = 104;
    ASSERT_TRUE((*s)->put_many({r}));
    lifecycle::Receipt x;
    x.identity = "web-01";
    x.step = "cloned";
    x.outcome = "ok";
    x.state_after = "provisioning";
    x.started_at = "2026-11-23T19:40:00Z";
    x.finished_at = "2026-11-23T19:40:03.500Z";
    x.calls.push_back({{"method", "POST"}, {"upid", "UPID:pve1:1:2:3:qmclone:9000:u:"}});
    ASSERT_TRUE((*s)->add_receipt(x));
    x.started_at = "not a time";
    ASSERT_TRUE((*s)->add_receipt(x));
    auto again = lifecycle::open_postgres_lifecycle_store(url_, "");  // a second controller
    ASSERT_TRUE(again) << again.message();
    auto got = (*again)->get("web-01");
    ASSERT_TRUE(got && *got);
    EXPECT_EQ((*got)->state, lifecycle::State::validating);
    EXPECT_EQ((*got)->vmid, 105);
    EXPECT_EQ((*got)->ips, std::vector<std::string>{"10.0.0.5/24"});
    auto all = (*again)->all();
    ASSERT_TRUE(all);
    ASSERT_EQ(all->size(), 2u);
    EXPECT_EQ((*all)[0].identity, "web-00");
    auto receipts = (*again)->receipts("web-01");
    ASSERT_TRUE(receipts);
    ASSERT_EQ(receipts->size(), 2u);
    EXPECT_EQ((*receipts)[0].calls[0]["upid"], "UPID:pve1:1:2:3:qmclone:9000:u:");
    EXPECT_LT((*receipts)[0].id, (*receipts)[1].id);
    auto durations = (*again)->step_durations({1.0, 5.0});
    ASSERT_TRUE(durations) << durations.message();
    ASSERT_EQ(durations->size(), 1u);
    EXPECT_EQ((*durations)[0].count, 2u);
    EXPECT_DOUBLE_EQ((*durations)[0].sum_s, 3.5);  // the unreadable start counts as 0 s
    EXPECT_EQ((*durations)[0].le, (std::vector<std::uint64_t>{1, 2}));
}

}  // namespace
}  // namespace nodeform::controller
