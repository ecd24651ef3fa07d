// The served site without a server: a reload swaps the snapshot whole, a broken one keeps the last good site
// and says why, and the change stamp tells when to reload.
#include <gtest/gtest.h>

#include "fakes/memory_logger.hpp"
#include "nodeform/controller/api/site_snapshot.hpp"
#include "nodeform/controller/store/sqlite.hpp"
#include "test_paths.hpp"

namespace nodeform::controller {
namespace {

class FakeSource final : public SiteSource {
  public:
    site::LoadResult load() override { return next; }
    std::string stamp() override { return stamp_value; }
    site::LoadResult next;
    std::string stamp_value = "1";
};

site::LoadResult good(const std::string& digest) {
    site::Site s;
    s.digest = digest;
    site::Node n;
    n.name = "web-01";
    n.resolved = {{"identity", "web-01"}, {"b", 1}, {"a", 2}};
    s.nodes["web-01"] = n;
    return {s, {}};
}

site::LoadResult broken() {
    return {std::nullopt, {{"site.yaml", 3, 1, "name", "missing required key 'name'"}}};
}

TEST(SiteSnapshots, AReloadSwapsTheSiteAndABrokenOneKeepsTheLastGood) {
    FakeSource source;
    SystemClock clock;
    MemoryLogger logger;
    SiteSnapshots snapshots(source, clock, logger);
    EXPECT_EQ(snapshots.current(), nullptr);

    source.next = good("sha256:one");
    ASSERT_TRUE(snapshots.reload(true).ok());
    auto first = snapshots.current();
    ASSERT_NE(first, nullptr);
    EXPECT_EQ(first->site.digest, "sha256:one");
    EXPECT_EQ(first->bodies.at("web-01"), R"({"a":2,"b":1,"identity":"web-01"})");  // canonical JSON, rendered once
    EXPECT_EQ(snapshots.status().reloads_ok, 0u);                                   // the initial load is not a reload
    EXPECT_FALSE(snapshots.changed());

    source.stamp_value = "2";
    source.next = broken();
    EXPECT_TRUE(snapshots.changed());
    auto refused = snapshots.reload(false);
    ASSERT_FALSE(refused.ok());
    EXPECT_NE(refused.message().find("missing required key 'name'"), std::string::npos);
    EXPECT_EQ(snapshots.current(), first);  // still serving the last good site
    EXPECT_FALSE(snapshots.status().last_ok);
    EXPECT_EQ(snapshots.status().reloads_failed, 1u);
    EXPECT_FALSE(snapshots.changed());  // the broken stamp is remembered: no reload loop

    source.stamp_value = "3";
    source.next = good("sha256:two");
    ASSERT_TRUE(snapshots.reload(false).ok());
    EXPECT_EQ(snapshots.current()->site.digest, "sha256:two");
    EXPECT_EQ(first->site.digest, "sha256:one");  // a reader's snapshot outlives the swap
    EXPECT_TRUE(snapshots.status().last_ok);
    EXPECT_EQ(snapshots.status().reloads_ok, 1u);
}

// ---- several controllers: one site digest at a time (docs/controller.md) ---------------------------------------

TimePoint at(int seconds) {
    return TimePoint(std::chrono::seconds(1'800'000'000 + seconds));
}

TEST(DecideSite, TheLoadedSiteIsServedOnlyWhenEveryLiveControllerHasIt) {
    using std::chrono::seconds;
    const std::chrono::milliseconds ttl(15000);
    // Alone (only this controller's beat, or none yet): served.
    EXPECT_TRUE(decide_site("d2", {}, at(0), ttl).serve_loaded);
    EXPECT_TRUE(decide_site("d2", {{"a", "d2", at(0)}}, at(0), ttl).serve_loaded);
    // Another live controller still on d1: not served, and it is named.
    auto waiting = decide_site("d2", {{"a", "d2", at(0)}, {"b", "d1", at(-3)}, {"c", "d2", at(-1)}}, at(0), ttl);
    EXPECT_FALSE(waiting.serve_loaded);
    EXPECT_EQ(waiting.waiting_for, std::vector<std::string>{"b (d1)"});
    // Its heartbeat expired (older than ttl): it is not counted.
    EXPECT_TRUE(decide_site("d2", {{"a", "d2", at(0)}, {"b", "d1", at(-16)}}, at(0), ttl).serve_loaded);
    // Exactly ttl old still counts; a beat from a clock ahead of ours counts.
    EXPECT_FALSE(decide_site("d2", {{"b", "d1", at(-15)}}, at(0), ttl).serve_loaded);
    EXPECT_FALSE(decide_site("d2", {{"b", "d1", at(5)}}, at(0), ttl).serve_loaded);
}

class ManualClock final : public Clock {
  public:
    TimePoint now() const override { return now_; }
    std::chrono::steady_clock::time_point steady_now() const override { return {}; }
    void sleep_for(std::chrono::milliseconds d) const override { now_ += d; }
    mutable TimePoint now_ = at(0);
};

class SharedSite : public ::testing::Test {
  protected:
    void SetUp() override {
        auto opened = open_sqlite_store(sqlite::database_path(dir_.path()));
        ASSERT_TRUE(opened.ok()) << opened.message();
        store_ = std::move(*opened);
    }
    SiteBoard board(const std::string& id) { return SiteBoard{store_.get(), id, std::chrono::milliseconds(15000)}; }

    test::TempDir dir_;
    std::unique_ptr<Store> store_;
    ManualClock clock_;
    MemoryLogger logger_;
};

TEST_F(SharedSite, ANewSiteIsServedOnceEveryLiveControllerHasLoadedIt) {
    FakeSource sa, sb;
    sa.next = sb.next = good("sha256:one");
    SiteSnapshots a(sa, clock_, logger_, board("a")), b(sb, clock_, logger_, board("b"));
    ASSERT_TRUE(a.reload(true).ok());
    ASSERT_TRUE(b.reload(true).ok());

    // a loads two while b still has one: a keeps serving one and says whom it waits for.
    sa.next = good("sha256:two");
    ASSERT_TRUE(a.reload(false).ok());
    EXPECT_EQ(a.current()->site.digest, "sha256:one");
    EXPECT_TRUE(a.status().pending);
    EXPECT_EQ(a.status().waiting_for, std::vector<std::string>{"b (sha256:one)"});
    clock_.sleep_for(std::chrono::seconds(1));
    a.heartbeat();
    b.heartbeat();
    EXPECT_EQ(a.current()->site.digest, "sha256:one");

    // b loads two: it is the last, serves two at once, and a serves two on its next request.
    sb.next = good("sha256:two");
    ASSERT_TRUE(b.reload(false).ok());
    EXPECT_EQ(b.current()->site.digest, "sha256:two");
    EXPECT_FALSE(b.status().pending);
    EXPECT_EQ(a.current()->site.digest, "sha256:two");
    EXPECT_FALSE(a.status().pending);
    EXPECT_TRUE(a.status().waiting_for.empty());
}

TEST_F(SharedSite, AControllerWhoseHeartbeatExpiredOrThatWithdrewHoldsNothingBack) {
    FakeSource sa, sb, sc;
    sa.next = sb.next = sc.next = good("sha256:one");
    SiteSnapshots a(sa, clock_, logger_, board("a")), b(sb, clock_, logger_, board("b")),
        c(sc, clock_, logger_, board("c"));
    ASSERT_TRUE(a.reload(true).ok());
    ASSERT_TRUE(b.reload(true).ok());
    ASSERT_TRUE(c.reload(true).ok());

    sa.next = good("sha256:two");
    ASSERT_TRUE(a.reload(false).ok());
    EXPECT_EQ(a.current()->site.digest, "sha256:one");
    EXPECT_EQ(a.status().waiting_for.size(), 2u);

    c.withdraw();  // c stopped
    EXPECT_EQ(a.current()->site.digest, "sha256:one");
    EXPECT_EQ(a.status().waiting_for, std::vector<std::string>{"b (sha256:one)"});

    clock_.sleep_for(std::chrono::seconds(14));
    a.heartbeat();  // b died 14 s ago: still counted
    EXPECT_EQ(a.current()->site.digest, "sha256:one");
    clock_.sleep_for(std::chrono::seconds(2));
    a.heartbeat();  // 16 s: expired
    EXPECT_EQ(a.current()->site.digest, "sha256:two");
}

TEST_F(SharedSite, ASiteRevertedWhileItPendsIsDropped) {
    FakeSource sa, sb;
    sa.next = sb.next = good("sha256:one");
    SiteSnapshots a(sa, clock_, logger_, board("a")), b(sb, clock_, logger_, board("b"));
    ASSERT_TRUE(a.reload(true).ok());
    ASSERT_TRUE(b.reload(true).ok());
    sa.next = good("sha256:two");
    ASSERT_TRUE(a.reload(false).ok());
    EXPECT_TRUE(a.status().pending);
    sa.next = good("sha256:one");  // the change is rolled back on a's copy
    ASSERT_TRUE(a.reload(false).ok());
    EXPECT_FALSE(a.status().pending);
    EXPECT_EQ(a.current()->site.digest, "sha256:one");
    // b now loads two: a published one again, so b waits for a.
    sb.next = good("sha256:two");
    ASSERT_TRUE(b.reload(false).ok());
    EXPECT_EQ(b.current()->site.digest, "sha256:one");
    EXPECT_EQ(b.status().waiting_for, std::vector<std::string>{"a (sha256:one)"});
}

TEST_F(SharedSite, ALoneControllerServesANewSiteAtOnce) {
    FakeSource sa;
    sa.next = good("sha256:one");
    SiteSnapshots a(sa, clock_, logger_, board("a"));
    ASSERT_TRUE(a.reload(true).ok());
    sa.next = good("sha256:two");
    ASSERT_TRUE(a.reload(false).ok());
    EXPECT_EQ(a.current()->site.digest, "sha256:two");
    EXPECT_FALSE(a.status().pending);
    auto beats = store_->site_digests();
    ASSERT_TRUE(beats.ok()) << beats.message();
    ASSERT_EQ(beats->size(), 1u);
    EXPECT_EQ((*beats)[0].controller, "a");
    EXPECT_EQ((*beats)[0].digest, "sha256:two");
    EXPECT_EQ((*beats)[0].heartbeat, clock_.now_);
}

}  // namespace
}  // namespace nodeform::controller
