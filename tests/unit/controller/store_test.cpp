// Both stores (real SQLite in a temp dir; a real PostgreSQL 15 in a throwaway cluster): every guarantee is proven
// on each; node status derivation and the controller config.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <condition_variable>
#include <filesystem>
#include <set>
#include <sstream>
#include <thread>

#include "nodeform/atomic_file.hpp"
#include "nodeform/canonical_json.hpp"
#include "nodeform/controller/api/node_status.hpp"
#include "nodeform/controller/cli.hpp"
#include "nodeform/controller/config.hpp"
#include "nodeform/controller/store/report_batcher.hpp"
#include "nodeform/controller/store/sqlite.hpp"
#include "nodeform/controller/store/store.hpp"
#include "postgres_cluster.hpp"
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

enum class Backend { sqlite, postgres };

// A fresh store of either kind: SQLite in a temp dir, or a new database in this binary's PostgreSQL cluster.
struct StoreFixture {
    Backend backend;
    test::TempDir dir;
    std::string pg_url;
    std::unique_ptr<Store> store;
    explicit StoreFixture(Backend b = Backend::sqlite) : backend(b) {
        if (backend == Backend::postgres) {
            auto& cluster = test::PostgresCluster::shared();
            pg_url = cluster.create_database();
            EXPECT_FALSE(pg_url.empty()) << cluster.error();
        }
        auto s = open();
        EXPECT_TRUE(s.ok()) << (s.ok() ? "" : s.message());
        if (s.ok()) store = std::move(*s);
    }
    // Another store on the same database (its own connection: what another controller or process sees).
    Result<std::unique_ptr<Store>> open() const {
        if (backend == Backend::postgres) return open_postgres_store(pg_url, "");
        return open_sqlite_store(sqlite::database_path(dir.path()));
    }
    // A real trigger that makes the report id "poison" fail to insert (a report the store cannot take).
    void add_poison_trigger() const {
        if (backend == Backend::postgres) {
            auto db = pg_url.substr(std::string("postgresql:///").size());
            db = db.substr(0, db.find('?'));
            auto e = test::PostgresCluster::shared().exec(
                db,
                "CREATE FUNCTION poison() RETURNS trigger AS $$ BEGIN IF NEW.report_id = 'poison' THEN RAISE "
                "EXCEPTION 'poisoned report'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql; CREATE TRIGGER poison "
                "BEFORE INSERT ON reports FOR EACH ROW EXECUTE FUNCTION poison();");
            ASSERT_EQ(e, "");
            return;
        }
        auto db = sqlite::open_database(sqlite::database_path(dir.path()));
        ASSERT_TRUE(db.ok()) << db.message();
        ASSERT_TRUE(db->exec("CREATE TRIGGER poison BEFORE INSERT ON reports WHEN NEW.report_id = 'poison' "
                             "BEGIN SELECT RAISE(ABORT, 'poisoned report'); END;")
                        .ok());
    }
};

// The guarantees of the Store interface, on both implementations.
class StoreTest : public ::testing::TestWithParam<Backend> {};
INSTANTIATE_TEST_SUITE_P(Stores, StoreTest, ::testing::Values(Backend::sqlite, Backend::postgres),
                         [](const ::testing::TestParamInfo<Backend>& info) {
                             return info.param == Backend::sqlite ? "sqlite" : "postgres";
                         });

TEST_P(StoreTest, ReportsAreIdempotentById) {
    StoreFixture f(GetParam());
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

TEST_P(StoreTest, InsertReportsIsOneAllOrNothingTransaction) {
    StoreFixture f(GetParam());
    auto out = f.store->insert_reports({report("a", "web-01", at(0)), report("a", "web-01", at(1)),
                                        report("a", "web-02", at(2)), report("b", "web-01", at(3))});
    ASSERT_TRUE(out.ok()) << out.message();
    EXPECT_EQ(*out, (std::vector<InsertOutcome>{InsertOutcome::inserted, InsertOutcome::duplicate,
                                                InsertOutcome::conflict, InsertOutcome::inserted}));
    EXPECT_EQ(*f.store->report_count(), 2);
    EXPECT_EQ((*f.store->node("web-01"))->report_count, 2);
    EXPECT_EQ((*f.store->node("web-01"))->last_report->report_id, "b");
    EXPECT_FALSE(f.store->node("web-02")->has_value());  // the conflicting copy touched nothing
    EXPECT_TRUE(f.store->insert_reports({})->empty());

    f.add_poison_trigger();
    auto failed = f.store->insert_reports(
        {report("c", "web-01", at(4)), report("poison", "web-01", at(5)), report("d", "web-03", at(6))});
    ASSERT_FALSE(failed.ok());
    EXPECT_NE(failed.message().find("poisoned report"), std::string::npos) << failed.message();
    EXPECT_FALSE(f.store->find_report("c")->has_value());  // rolled back with the failing report
    EXPECT_FALSE(f.store->find_report("d")->has_value());
    EXPECT_FALSE(f.store->node("web-03")->has_value());
    EXPECT_EQ((*f.store->node("web-01"))->report_count, 2);
    EXPECT_EQ(*f.store->insert_report(report("c", "web-01", at(4))), InsertOutcome::inserted);  // a retry works
}

// The real SQLite store with a gate on insert_reports, so a test can hold one commit while others queue up.
class GatedStore final : public Store {
  public:
    explicit GatedStore(Store& inner) : inner_(inner) {}
    Result<std::vector<InsertOutcome>> insert_reports(const std::vector<ReportRecord>& reports) override {
        std::unique_lock<std::mutex> lock(mutex_);
        sizes_.push_back(reports.size());
        cv_.notify_all();
        cv_.wait(lock, [this] { return !held_; });
        lock.unlock();
        return inner_.insert_reports(reports);
    }
    void hold() {
        std::lock_guard<std::mutex> lock(mutex_);
        held_ = true;
    }
    void release() {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            held_ = false;
        }
        cv_.notify_all();
    }
    // Waits (bounded, against a hang) until insert_reports has been entered n times.
    bool wait_calls(std::size_t n) {
        std::unique_lock<std::mutex> lock(mutex_);
        return cv_.wait_for(lock, std::chrono::seconds(30), [&] { return sizes_.size() >= n; });
    }
    std::vector<std::size_t> sizes() {
        std::lock_guard<std::mutex> lock(mutex_);
        return sizes_;
    }

    Status add_enrollment_token(const std::string& i, const std::string& h, TimePoint e, TimePoint n) override {
        return inner_.add_enrollment_token(i, h, e, n);
    }
    Result<EnrollOutcome> enroll(const std::string& i, const std::string& t, const std::string& c,
                                 TimePoint n) override {
        return inner_.enroll(i, t, c, n);
    }
    Result<std::optional<std::string>> credential_owner(const std::string& h) override {
        return inner_.credential_owner(h);
    }
    Result<std::optional<CredentialMatch>> find_credential(const std::string& h, TimePoint n) override {
        return inner_.find_credential(h, n);
    }
    Result<bool> request_rotation(const std::string& i, TimePoint n) override { return inner_.request_rotation(i, n); }
    Result<bool> rotate_credential(const std::string& i, const std::string& p, const std::string& c, TimePoint n,
                                   TimePoint u) override {
        return inner_.rotate_credential(i, p, c, n, u);
    }
    Result<bool> revoke(const std::string& i, TimePoint n) override { return inner_.revoke(i, n); }
    Status request_apply(const std::string& i, const std::string& r, TimePoint n) override {
        return inner_.request_apply(i, r, n);
    }
    Result<std::map<std::string, std::string>> pending_applies() override { return inner_.pending_applies(); }
    Result<bool> acknowledge_apply(const std::string& i, const std::string& r) override {
        return inner_.acknowledge_apply(i, r);
    }
    Result<InsertOutcome> insert_report(const ReportRecord& r) override { return inner_.insert_report(r); }
    Result<std::optional<ReportRecord>> find_report(const std::string& id) override { return inner_.find_report(id); }
    Result<std::vector<ReportRecord>> recent_reports(const std::string& i, int l) override {
        return inner_.recent_reports(i, l);
    }
    Result<std::vector<NodeRecord>> nodes() override { return inner_.nodes(); }
    Result<std::vector<NodeRecord>> node_summaries() override { return inner_.node_summaries(); }
    Result<std::optional<NodeRecord>> node(const std::string& i) override { return inner_.node(i); }
    Result<std::int64_t> report_count() override { return inner_.report_count(); }
    Result<std::int64_t> apply_retention(const RetentionPolicy& p, TimePoint n) override {
        return inner_.apply_retention(p, n);
    }
    Status ping() override { return inner_.ping(); }
    Status publish_site_digest(const SiteBeat& b) override { return inner_.publish_site_digest(b); }
    Result<std::vector<SiteBeat>> site_digests() override { return inner_.site_digests(); }
    Status withdraw_site_digest(const std::string& c) override { return inner_.withdraw_site_digest(c); }

  private:
    Store& inner_;
    std::mutex mutex_;
    std::condition_variable cv_;
    bool held_ = false;
    std::vector<std::size_t> sizes_;
};

// Waits (bounded) until the batcher holds n queued reports.
bool wait_queued(const ReportBatcher& b, std::size_t n) {
    for (int i = 0; i < 3000 && b.queued() < n; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    return b.queued() == n;
}

TEST_P(StoreTest, BatcherConcurrentReportsShareOneCommit) {
    StoreFixture f(GetParam());
    GatedStore gated(*f.store);
    ReportBatcher batcher(gated);
    gated.hold();
    std::thread first([&] { EXPECT_EQ(*batcher.submit(report("first", "web-01", at(0))), InsertOutcome::inserted); });
    ASSERT_TRUE(gated.wait_calls(1));  // "first" is being committed; the next reports queue behind it
    std::vector<std::thread> posters;
    for (int i = 0; i < 8; ++i)
        posters.emplace_back([&, i] {
            auto r = batcher.submit(report("r" + std::to_string(i), "web-0" + std::to_string(i % 2), at(i)));
            ASSERT_TRUE(r.ok()) << r.message();
            EXPECT_EQ(*r, InsertOutcome::inserted);
            // A 2xx follows only a commit: the report is visible to another connection when submit returns.
            auto other = f.open();
            ASSERT_TRUE(other.ok()) << other.message();
            auto found = (*other)->find_report("r" + std::to_string(i));
            ASSERT_TRUE(found.ok()) << found.message();
            EXPECT_TRUE(found->has_value());
        });
    ASSERT_TRUE(wait_queued(batcher, 8));
    gated.release();
    first.join();
    for (auto& t : posters)
        t.join();
    EXPECT_EQ(gated.sizes(), (std::vector<std::size_t>{1, 8}));
    EXPECT_EQ(batcher.stats().batches, 2u);
    EXPECT_EQ(batcher.stats().reports, 9u);
    EXPECT_EQ(*f.store->report_count(), 9);
    EXPECT_EQ((*f.store->node("web-00"))->report_count + (*f.store->node("web-01"))->report_count, 9);
}

TEST_P(StoreTest, BatcherDuplicatesInOneBatchStoreOnceAndAFailingReportFailsAlone) {
    StoreFixture f(GetParam());
    ASSERT_EQ(*f.store->insert_report(report("old", "web-01", at(0))), InsertOutcome::inserted);
    f.add_poison_trigger();
    GatedStore gated(*f.store);
    ReportBatcher batcher(gated);
    gated.hold();
    std::thread first([&] { EXPECT_EQ(*batcher.submit(report("first", "web-01", at(0))), InsertOutcome::inserted); });
    ASSERT_TRUE(gated.wait_calls(1));
    // One batch: x twice (a retry racing its original), y, a replay of an earlier batch's report, a report the
    // store refuses, z.
    std::vector<std::string> ids = {"x", "x", "y", "old", "poison", "z"};
    std::vector<std::optional<Result<InsertOutcome>>> results(ids.size());
    std::vector<std::thread> posters;
    for (std::size_t i = 0; i < ids.size(); ++i)
        posters.emplace_back([&, i] { results[i] = batcher.submit(report(ids[i], "web-01", at(0))); });
    ASSERT_TRUE(wait_queued(batcher, ids.size()));
    gated.release();
    first.join();
    for (auto& t : posters)
        t.join();
    // The batch of 6 failed as a whole and was retried one report per transaction.
    EXPECT_EQ(gated.sizes(), (std::vector<std::size_t>{1, 6, 1, 1, 1, 1, 1, 1}));
    ASSERT_TRUE(results[0]->ok() && results[1]->ok());
    std::multiset<InsertOutcome> xs = {**results[0], **results[1]};
    EXPECT_EQ(xs, (std::multiset<InsertOutcome>{InsertOutcome::inserted, InsertOutcome::duplicate}));
    auto outcome = [&](std::size_t i) {
        EXPECT_TRUE(results[i]->ok()) << ids[i] << ": " << results[i]->message();
        return results[i]->ok() ? std::optional<InsertOutcome>(**results[i]) : std::nullopt;
    };
    EXPECT_EQ(outcome(2), InsertOutcome::inserted);
    EXPECT_EQ(outcome(3), InsertOutcome::duplicate);
    EXPECT_EQ(outcome(5), InsertOutcome::inserted);
    ASSERT_FALSE(results[4]->ok());
    EXPECT_NE(results[4]->message().find("poisoned report"), std::string::npos);
    EXPECT_EQ(*f.store->report_count(), 5);  // old, first, x, y, z: each once
    EXPECT_FALSE(f.store->find_report("poison")->has_value());
    EXPECT_EQ(batcher.stats().batches, 6u);  // first + five single commits (the poisoned one rolled back)
}

// A converge request stays pending until a report acknowledges that very id; a newer request replaces it, and an
// acknowledgement of the older id then clears nothing (the newer one is still to be taken).
TEST_P(StoreTest, ApplyRequestIsPendingUntilItsOwnIdIsAcknowledged) {
    StoreFixture f(GetParam());
    EXPECT_FALSE(f.store->pending_apply("web-01")->has_value());
    ASSERT_TRUE(f.store->request_apply("web-01", "req-1", at(1)).ok());
    EXPECT_EQ(f.store->pending_apply("web-01")->value_or(""), "req-1");
    EXPECT_FALSE(f.store->pending_apply("web-02")->has_value());
    ASSERT_TRUE(f.store->request_apply("web-01", "req-2", at(2)).ok());
    EXPECT_FALSE(*f.store->acknowledge_apply("web-01", "req-1"));
    EXPECT_FALSE(*f.store->acknowledge_apply("web-02", "req-2"));
    EXPECT_EQ(f.store->pending_apply("web-01")->value_or(""), "req-2");
    EXPECT_TRUE(*f.store->acknowledge_apply("web-01", "req-2"));
    EXPECT_FALSE(f.store->pending_apply("web-01")->has_value());
    EXPECT_FALSE(*f.store->acknowledge_apply("web-01", "req-2"));  // a retried report: nothing left
}

TEST_P(StoreTest, TracksLastReportAndLastRunReport) {
    StoreFixture f(GetParam());
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

TEST_P(StoreTest, SiteDigestsAreOneRowPerControllerSeenByEveryConnection) {
    StoreFixture f(GetParam());
    auto other = f.open();  // another controller's connection
    ASSERT_TRUE(other.ok()) << other.message();
    ASSERT_TRUE(f.store->publish_site_digest({"a", "sha256:one", at(0)}).ok());
    ASSERT_TRUE((*other)->publish_site_digest({"b", "sha256:one", at(1)}).ok());
    ASSERT_TRUE(f.store->publish_site_digest({"a", "sha256:two", at(2)}).ok());  // replaces a's row
    auto beats = (*other)->site_digests();
    ASSERT_TRUE(beats.ok()) << beats.message();
    ASSERT_EQ(beats->size(), 2u);
    EXPECT_EQ((*beats)[0].controller, "a");
    EXPECT_EQ((*beats)[0].digest, "sha256:two");
    EXPECT_EQ((*beats)[0].heartbeat, at(2));
    EXPECT_EQ((*beats)[1].controller, "b");
    ASSERT_TRUE((*other)->withdraw_site_digest("b").ok());
    beats = f.store->site_digests();
    ASSERT_TRUE(beats.ok()) << beats.message();
    ASSERT_EQ(beats->size(), 1u);
    EXPECT_EQ((*beats)[0].controller, "a");
}

TEST_P(StoreTest, RetentionKeepsLastNAndRecent) {
    StoreFixture f(GetParam());
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

TEST_P(StoreTest, EnrollmentTokenIsSingleUseAndExpires) {
    StoreFixture f(GetParam());
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

// Rotation: the new credential works at once, the old one until its grace ends; a retry with the old one in its
// grace (the first answer was lost) issues yet another; nothing else rotates.
TEST_P(StoreTest, RotationKeepsThePreviousCredentialForItsGraceOnly) {
    StoreFixture f(GetParam());
    ASSERT_TRUE(f.store->add_enrollment_token("web-01", hash_secret("t1"), at(3600), at(0)).ok());
    ASSERT_EQ(*f.store->enroll("web-01", hash_secret("t1"), hash_secret("c1"), at(1)), EnrollOutcome::enrolled);
    EXPECT_FALSE((*f.store->find_credential(hash_secret("c1"), at(2)))->rotate_requested);
    EXPECT_TRUE(*f.store->request_rotation("web-01", at(2)));
    EXPECT_FALSE(*f.store->request_rotation("web-02", at(2)));  // no credential
    EXPECT_TRUE((*f.store->find_credential(hash_secret("c1"), at(3)))->rotate_requested);

    EXPECT_FALSE(*f.store->rotate_credential("web-01", hash_secret("nope"), hash_secret("c2"), at(10), at(100)));
    EXPECT_TRUE(*f.store->rotate_credential("web-01", hash_secret("c1"), hash_secret("c2"), at(10), at(100)));
    auto current = *f.store->find_credential(hash_secret("c2"), at(11));
    ASSERT_TRUE(current.has_value());
    EXPECT_FALSE(current->previous);
    EXPECT_FALSE(current->rotate_requested);  // the request is answered
    EXPECT_EQ(current->created_at, at(10));
    auto old = *f.store->find_credential(hash_secret("c1"), at(99));
    ASSERT_TRUE(old.has_value());
    EXPECT_TRUE(old->previous);
    EXPECT_EQ(old->identity, "web-01");
    EXPECT_FALSE(f.store->find_credential(hash_secret("c1"), at(100))->has_value());  // grace over

    // The answer was lost: the node asks again with c1 (still in grace); c2 is dropped, c1 keeps its grace.
    EXPECT_TRUE(*f.store->rotate_credential("web-01", hash_secret("c1"), hash_secret("c3"), at(20), at(200)));
    EXPECT_FALSE(f.store->find_credential(hash_secret("c2"), at(21))->has_value());
    EXPECT_TRUE(f.store->find_credential(hash_secret("c3"), at(21))->has_value());
    EXPECT_FALSE(f.store->find_credential(hash_secret("c1"), at(100))->has_value());
    EXPECT_FALSE(*f.store->rotate_credential("web-01", hash_secret("c1"), hash_secret("c4"), at(150), at(300)));
    // Revocation ends both.
    EXPECT_TRUE(*f.store->revoke("web-01", at(160)));
    EXPECT_FALSE(f.store->find_credential(hash_secret("c3"), at(161))->has_value());
}

// `serve` opens the database twice (store + lifecycle store). Opening the second must not drop the first one's
// POSIX locks: a CLI run beside it (token issue, node list) would then find no reader, checkpoint and delete the
// WAL under the running controller, whose later commits were lost for every other process.
TEST(SqliteStore, ASecondConnectionKeepsTheWalForOtherProcesses) {
    StoreFixture f;
    const std::string path = sqlite::database_path(f.dir.path());
    auto second = sqlite::open_database(path);
    ASSERT_TRUE(second.ok()) << second.message();
    ASSERT_EQ(*f.store->insert_report(report("before", "web-01", at(1))), InsertOutcome::inserted);
    // Another process (no SQLite in it: a fork shares SQLite's in-process lock table) asks whether a writer
    // could lock the database's shared range: the serving connections' SHARED lock must still be held.
    pid_t child = ::fork();
    if (child == 0) {
        int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        struct flock probe {};
        probe.l_type = F_WRLCK;
        probe.l_whence = SEEK_SET;
        probe.l_start = 0x40000000 + 2;  // SQLite's SHARED_FIRST (PENDING_BYTE + 2), SHARED_SIZE 510
        probe.l_len = 510;
        bool held = fd >= 0 && ::fcntl(fd, F_GETLK, &probe) == 0 && probe.l_type != F_UNLCK;
        ::_exit(held ? 0 : 1);
    }
    int status = -1;
    ::waitpid(child, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    ASSERT_EQ(*f.store->insert_report(report("after", "web-01", at(2))), InsertOutcome::inserted);
    auto reader = open_sqlite_store(path);  // what another process sees now
    ASSERT_TRUE(reader.ok());
    EXPECT_EQ(*(*reader)->report_count(), 2);
    EXPECT_TRUE(std::filesystem::exists(path + "-wal"));
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
    EXPECT_EQ(rows, (std::vector<std::string>{"controller=1", "controller=2", "controller=3", "controller=4",
                                              "lifecycle-test=1"}));
    // Reopening the store does not re-run migrations; a newer schema is refused.
    EXPECT_TRUE(open_sqlite_store(path).ok());
    ASSERT_TRUE(db->exec("INSERT INTO schema_migrations VALUES ('controller', 99, 'x')").ok());
    auto newer = open_sqlite_store(path);
    ASSERT_FALSE(newer.ok());
    EXPECT_NE(newer.message().find("newer"), std::string::npos);
}

TEST(Secrets, GeneratedAndHashedAndComparedInConstantTime) {
    auto a = generate_secret(*make_system_random(), "nfc_");
    auto b = generate_secret(*make_system_random(), "nfc_");
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

// `token issue` takes several identities (a fleet's seeds in one call): all are checked before any token is made.
TEST(ControllerCli, TokenIssueForSeveralNodesChecksAllFirst) {
    test::TempDir dir;
    const std::string site = test::source_dir() + "/examples/site";
    std::ostringstream out, err;
    ASSERT_EQ(run_cli({"token", "issue", "web-01", "db-01", "--json", "--site", site, "--state", dir.path(), "--config",
                       "/dev/null"},
                      {out, err}),
              0)
        << err.str();
    std::istringstream lines(out.str());
    std::vector<nlohmann::json> issued;
    for (std::string line; std::getline(lines, line);)
        issued.push_back(nlohmann::json::parse(line));
    ASSERT_EQ(issued.size(), 2u);
    EXPECT_EQ(issued[0]["identity"], "web-01");
    EXPECT_EQ(issued[1]["identity"], "db-01");
    EXPECT_NE(issued[0]["token"], issued[1]["token"]);
    auto store = open_sqlite_store(sqlite::database_path(dir.path()));
    ASSERT_TRUE(store.ok());
    auto now = std::chrono::system_clock::now();
    for (const auto& i : issued) {  // each token enrolls its own node
        auto enrolled =
            (*store)->enroll(i["identity"], hash_secret(i["token"]), "c-" + i["identity"].get<std::string>(), now);
        ASSERT_TRUE(enrolled.ok()) << enrolled.message();
        EXPECT_EQ(*enrolled, EnrollOutcome::enrolled);
    }
    // demo-01 authenticates by network: refused, and no token is printed for web-02 before it.
    std::ostringstream out2, err2;
    EXPECT_EQ(
        run_cli({"token", "issue", "web-02", "demo-01", "--site", site, "--state", dir.path(), "--config", "/dev/null"},
                {out2, err2}),
        1);
    EXPECT_EQ(out2.str(), "");
    EXPECT_NE(err2.str().find("demo-01"), std::string::npos) << err2.str();
}

}  // namespace
}  // namespace nodeform::controller
