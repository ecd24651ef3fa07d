// The SQLite store (real SQLite in a temp dir), node status derivation and the controller config.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <sstream>

#include "nodeform/atomic_file.hpp"
#include "nodeform/canonical_json.hpp"
#include "nodeform/controller/api/node_status.hpp"
#include "nodeform/controller/cli.hpp"
#include "nodeform/controller/config.hpp"
#include "nodeform/controller/store/sqlite.hpp"
#include "nodeform/controller/store/store.hpp"
#include "test_paths.hpp"

namespace nodeform::controller {
namespace {

using namespace std::chrono_literals;

TimePoint at(int seconds) {
    return TimePoint(std::chrono::seconds(1'800'000'000 + seconds));
}

ReportRecord report(const std::string& id, const std::string& identity, TimePoint when, std::string trigger = "run") {
    ReportRecord r;
    r.report_id = id;
    r.identity = identity;
    r.received_at = when;
    r.spec_digest = "sha256:x";
    r.phase = "converging";
    r.trigger = std::move(trigger);
    r.mode = "apply";
    r.finished_at = "2026-11-23T19:40:01.456Z";
    r.body = "{\"report_id\":\"" + id + "\"}";
    return r;
}

struct StoreFixture {
    test::TempDir dir;
    std::unique_ptr<Store> store;
    StoreFixture() {
        auto s = open_sqlite_store(sqlite::database_path(dir.path()));
        EXPECT_TRUE(s.ok()) << (s.ok() ? "" : s.message());
        store = std::move(*s);
    }
};

TEST(SqliteStore, ReportsAreIdempotentById) {
    StoreFixture f;
    EXPECT_EQ(*f.store->insert_report(report("a", "web-01", at(0))), InsertOutcome::inserted);
    EXPECT_EQ(*f.store->insert_report(report("a", "web-01", at(5))), InsertOutcome::duplicate);
    auto other = report("a", "web-02", at(0));
    EXPECT_EQ(*f.store->insert_report(other), InsertOutcome::conflict);
    EXPECT_EQ(*f.store->report_count(), 1);
    auto node = f.store->node("web-01");
    ASSERT_TRUE(node.ok() && node->has_value());
    EXPECT_EQ((*node)->report_count, 1);
    EXPECT_EQ((*node)->last_report->report_id, "a");
}

TEST(SqliteStore, TracksLastReportAndLastRunReport) {
    StoreFixture f;
    ASSERT_EQ(*f.store->insert_report(report("r1", "web-01", at(0), "run")), InsertOutcome::inserted);
    ASSERT_EQ(*f.store->insert_report(report("h1", "web-01", at(10), "health")), InsertOutcome::inserted);
    auto node = *f.store->node("web-01");
    ASSERT_TRUE(node.has_value());
    EXPECT_EQ(node->last_report->report_id, "h1");
    EXPECT_EQ(node->last_run_report->report_id, "r1");
    EXPECT_EQ(node->report_count, 2);
    auto all = f.store->nodes();
    ASSERT_TRUE(all.ok());
    EXPECT_EQ(all->size(), 1u);
}

TEST(SqliteStore, RetentionKeepsLastNAndRecent) {
    StoreFixture f;
    for (int i = 0; i < 10; ++i)
        ASSERT_TRUE(f.store->insert_report(report("old-" + std::to_string(i), "web-01", at(i))).ok());
    ASSERT_TRUE(f.store->insert_report(report("old-other", "web-02", at(0))).ok());
    // now = at(0) + 40 days: everything is older than 30 days; keep the last 3 of web-01 and the only one of web-02.
    auto removed = f.store->apply_retention(RetentionPolicy{3, std::chrono::hours(24 * 30)}, at(40 * 86400));
    ASSERT_TRUE(removed.ok()) << removed.message();
    EXPECT_EQ(*removed, 7);
    auto kept = *f.store->recent_reports("web-01", 100);
    ASSERT_EQ(kept.size(), 3u);
    EXPECT_EQ(kept[0].report_id, "old-9");
    EXPECT_EQ(kept[2].report_id, "old-7");
    EXPECT_EQ(f.store->recent_reports("web-02", 100)->size(), 1u);
    EXPECT_EQ((*f.store->node("web-01"))->report_count, 3);
    // Recent reports are kept beyond N.
    for (int i = 0; i < 5; ++i)
        ASSERT_TRUE(f.store->insert_report(report("new-" + std::to_string(i), "web-01", at(40 * 86400 + i))).ok());
    EXPECT_EQ(*f.store->apply_retention(RetentionPolicy{1, std::chrono::hours(24)}, at(40 * 86400 + 10)), 3);
    EXPECT_EQ(f.store->recent_reports("web-01", 100)->size(), 5u);
}

TEST(SqliteStore, EnrollmentTokenIsSingleUseAndExpires) {
    StoreFixture f;
    ASSERT_TRUE(f.store->add_enrollment_token("web-01", hash_secret("t1"), at(3600), at(0)).ok());
    EXPECT_EQ(*f.store->enroll("web-02", hash_secret("t1"), hash_secret("c"), at(1)), EnrollOutcome::invalid_token);
    EXPECT_EQ(*f.store->enroll("web-01", hash_secret("t1"), hash_secret("c1"), at(3601)),
              EnrollOutcome::invalid_token);  // expired
    ASSERT_TRUE(f.store->add_enrollment_token("web-01", hash_secret("t2"), at(3600), at(0)).ok());
    EXPECT_EQ(*f.store->enroll("web-01", hash_secret("t2"), hash_secret("c2"), at(10)), EnrollOutcome::enrolled);
    EXPECT_EQ(*f.store->enroll("web-01", hash_secret("t2"), hash_secret("c3"), at(11)), EnrollOutcome::invalid_token);
    EXPECT_EQ(f.store->credential_owner(hash_secret("c2"))->value_or(""), "web-01");
    EXPECT_FALSE(f.store->credential_owner(hash_secret("c3"))->has_value());
    // Revocation removes the credential and unused tokens.
    ASSERT_TRUE(f.store->add_enrollment_token("web-01", hash_secret("t3"), at(3600), at(0)).ok());
    EXPECT_TRUE(*f.store->revoke("web-01", at(20)));
    EXPECT_FALSE(f.store->credential_owner(hash_secret("c2"))->has_value());
    EXPECT_EQ(*f.store->enroll("web-01", hash_secret("t3"), hash_secret("c4"), at(21)), EnrollOutcome::invalid_token);
    EXPECT_FALSE(*f.store->revoke("web-01", at(22)));
}

TEST(SqliteStore, DatabaseIsPrivateWalAndMigrationsAreVersioned) {
    StoreFixture f;
    std::string path = sqlite::database_path(f.dir.path());
    struct stat st {};
    ASSERT_EQ(::stat(path.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u);
    auto db = sqlite::open_database(path);
    ASSERT_TRUE(db.ok());
    {  // statements finalized before the migrations below
        auto mode = db->prepare("PRAGMA journal_mode");
        ASSERT_TRUE(mode.ok() && *mode->step());
        EXPECT_EQ(mode->text(0), "wal");
        auto sync = db->prepare("PRAGMA synchronous");
        ASSERT_TRUE(sync.ok() && *sync->step());
        EXPECT_EQ(sync->integer(0), 2);  // FULL
    }
    // A second component adds its own tables to the same file, idempotently.
    std::vector<std::string> steps = {"CREATE TABLE lifecycle_x (id INTEGER PRIMARY KEY)"};
    auto first = sqlite::apply_migrations(*db, "lifecycle-test", steps);
    ASSERT_TRUE(first.ok()) << first.message();
    auto again = sqlite::apply_migrations(*db, "lifecycle-test", steps);
    ASSERT_TRUE(again.ok()) << again.message();
    auto v = db->prepare("SELECT component, version FROM schema_migrations ORDER BY component");
    ASSERT_TRUE(v.ok());
    std::vector<std::string> rows;
    while (*v->step())
        rows.push_back(v->text(0) + "=" + std::to_string(v->integer(1)));
    EXPECT_EQ(rows, (std::vector<std::string>{"controller=1", "lifecycle-test=1"}));
    // Reopening the store does not re-run migrations; a newer schema is refused.
    EXPECT_TRUE(open_sqlite_store(path).ok());
    ASSERT_TRUE(db->exec("INSERT INTO schema_migrations VALUES ('controller', 99, 'x')").ok());
    auto newer = open_sqlite_store(path);
    ASSERT_FALSE(newer.ok());
    EXPECT_NE(newer.message().find("newer"), std::string::npos);
}

TEST(Secrets, GeneratedAndHashedAndComparedInConstantTime) {
    auto a = generate_secret("nfc_");
    auto b = generate_secret("nfc_");
    EXPECT_NE(a, b);
    EXPECT_EQ(a.size(), 4u + 64u);
    EXPECT_EQ(hash_secret("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    EXPECT_TRUE(constant_time_equal("abc", "abc"));
    EXPECT_FALSE(constant_time_equal("abc", "abd"));
    EXPECT_FALSE(constant_time_equal("abc", "abcd"));
}

site::Node site_node(int interval_s) {
    site::Node n;
    n.name = "web-01";
    n.resolved = {{"apply", {{"interval_s", interval_s}}}};
    n.digest = "sha256:current";
    return n;
}

NodeRecord with_report(ReportRecord r) {
    NodeRecord rec;
    rec.identity = r.identity;
    rec.last_report = r;
    rec.last_run_report = r;
    rec.report_count = 1;
    return rec;
}

TEST(NodeStatus, DerivedFromReports) {
    auto node = site_node(100);
    auto now = at(1000);
    NodeRecord none{"web-01", {}, {}, 0, false};
    EXPECT_EQ(derive_status(none, &node, now), NodeStatus::pending);
    auto r = report("r", "web-01", at(990));
    r.spec_digest = "sha256:current";
    EXPECT_EQ(derive_status(with_report(r), &node, now), NodeStatus::converging);
    r.platform_ready = true;
    r.phase = "platform-ready";
    EXPECT_EQ(derive_status(with_report(r), &node, now), NodeStatus::ready);
    auto old_spec = r;
    old_spec.spec_digest = "sha256:previous";
    EXPECT_EQ(derive_status(with_report(old_spec), &node, now), NodeStatus::converging);
    auto drifted = r;
    drifted.drifted = 2;
    EXPECT_EQ(derive_status(with_report(drifted), &node, now), NodeStatus::drifted);
    auto failed = r;
    failed.failed = 1;
    EXPECT_EQ(derive_status(with_report(failed), &node, now), NodeStatus::failed);
    auto sick = r;
    sick.health_failed = 1;
    EXPECT_EQ(derive_status(with_report(sick), &node, now), NodeStatus::unhealthy);
    // stale: no report within 2 × 100 s + 60 s grace.
    auto old = r;
    old.received_at = at(1000 - 261);
    EXPECT_EQ(derive_status(with_report(old), &node, now), NodeStatus::stale);
    old.received_at = at(1000 - 259);
    EXPECT_EQ(derive_status(with_report(old), &node, now), NodeStatus::ready);
    // A health report after a failed run: health from the newest, the rest from the last run.
    auto rec = with_report(failed);
    auto health = report("h", "web-01", at(995), "health");
    rec.last_report = health;
    EXPECT_EQ(derive_status(rec, &node, now), NodeStatus::failed);
    auto j = node_summary_json(rec, &node, now);
    EXPECT_EQ(j["status"], "failed");
    EXPECT_EQ(j["last_report_age_s"], 5);
    EXPECT_EQ(j["failed"], 1);
}

TEST(ControllerConfig, DefaultsThenFileThenFlags) {
    test::TempDir dir;
    std::string file = dir.path() + "/controller.yaml";
    ASSERT_TRUE(write_file_atomic(file,
                                  "site: /srv/site\nstate: /var/lib/x\nlisten: 127.0.0.1:9443\nthreads: 8\n"
                                  "read-timeout: 2m\ntls-hosts: [ctl.example.net, 10.0.0.5]\n")
                    .ok());
    auto args = parse_args({"--config", file, "--threads", "16", "--state", "/tmp/s"}, serve_arg_spec());
    ASSERT_TRUE(args.ok());
    auto c = load_controller_config(*args, "/nonexistent");
    ASSERT_TRUE(c.ok()) << c.message();
    EXPECT_EQ(c->site, "/srv/site");
    EXPECT_EQ(c->state, "/tmp/s");
    EXPECT_EQ(c->listen_host, "127.0.0.1");
    EXPECT_EQ(c->listen_port, 9443);
    EXPECT_EQ(c->threads, 16);
    EXPECT_EQ(c->read_timeout, std::chrono::seconds(120));
    EXPECT_EQ(c->tls_hosts, (std::vector<std::string>{"ctl.example.net", "10.0.0.5"}));
    EXPECT_EQ(c->max_body_bytes, 1024u * 1024u);  // default

    auto plain = parse_args({"--plain-http", "--state", "/s"}, serve_arg_spec());
    auto p = load_controller_config(*plain, "/nonexistent");
    ASSERT_TRUE(p.ok());
    EXPECT_EQ(p->listen_host, "127.0.0.1");
    EXPECT_EQ(p->listen_port, 8080);

    ASSERT_TRUE(write_file_atomic(file, "thread: 8\n").ok());
    auto bad = load_controller_config(*parse_args({"--config", file}, serve_arg_spec()), "/nonexistent");
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.message().find("thread"), std::string::npos);
    auto bad_flag = load_controller_config(*parse_args({"--threads", "many"}, serve_arg_spec()), "/nonexistent");
    EXPECT_FALSE(bad_flag.ok());
    EXPECT_FALSE(parse_duration("5x").has_value());
    EXPECT_EQ(parse_duration("250ms")->count(), 250);
    EXPECT_EQ(parse_duration("7d")->count(), 7LL * 86400 * 1000);
}

TEST(ControllerCli, TokenRevokeAndNodeListReadTheStore) {
    test::TempDir dir;
    {
        auto s = open_sqlite_store(sqlite::database_path(dir.path()));
        ASSERT_TRUE(s.ok());
        ASSERT_TRUE((*s)->insert_report(report("r1", "web-01", std::chrono::system_clock::now())).ok());
    }
    std::ostringstream out, err;
    int rc = run_cli({"node", "list", "--state", dir.path(), "--json", "--config", "/dev/null"}, {out, err});
    ASSERT_EQ(rc, 0) << err.str();
    auto j = nlohmann::json::parse(out.str());
    ASSERT_EQ(j["nodes"].size(), 1u);
    EXPECT_EQ(j["nodes"][0]["identity"], "web-01");
    EXPECT_EQ(j["nodes"][0]["status"], "converging");
    std::ostringstream table, err2;
    ASSERT_EQ(run_cli({"node", "list", "--state", dir.path(), "--config", "/dev/null"}, {table, err2}), 0);
    EXPECT_NE(table.str().find("web-01"), std::string::npos);
    EXPECT_NE(table.str().find("converging"), std::string::npos);
    std::ostringstream show, err3;
    ASSERT_EQ(run_cli({"node", "show", "web-01", "--state", dir.path(), "--config", "/dev/null"}, {show, err3}), 0)
        << err3.str();
    EXPECT_NE(show.str().find("r1"), std::string::npos);
    std::ostringstream o4, e4;
    EXPECT_EQ(run_cli({"node", "show", "ghost", "--state", dir.path(), "--config", "/dev/null"}, {o4, e4}), 1);
    std::ostringstream o5, e5;
    EXPECT_EQ(run_cli({"token", "revoke", "web-01", "--state", dir.path(), "--config", "/dev/null"}, {o5, e5}), 0);
    EXPECT_NE(o5.str().find("nothing to revoke"), std::string::npos);
    std::ostringstream o6, e6;
    EXPECT_EQ(run_cli({"token", "issue", "../x", "--state", dir.path()}, {o6, e6}), 2);
}

}  // namespace
}  // namespace nodeform::controller
