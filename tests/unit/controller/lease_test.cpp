// Lifecycle leases on both lifecycle stores (SQLite in a temp dir, a real PostgreSQL 15): one holder at a time,
// heartbeat, takeover after expiry (the old holder's heartbeat then fails), release; and on PostgreSQL two
// controllers racing for the same leases.
#include <gtest/gtest.h>

#include <barrier>
#include <thread>

#include "nodeform/controller/lifecycle/lifecycle.hpp"
#include "postgres_cluster.hpp"
#include "test_paths.hpp"

namespace nodeform::controller::lifecycle {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

TimePoint at(int s) {
    return TimePoint(seconds(1'800'000'000 + s));
}

class LeaseTest : public ::testing::TestWithParam<bool> {  // true: PostgreSQL
  protected:
    void SetUp() override {
        if (GetParam()) {
            url_ = test::PostgresCluster::shared().create_database();
            ASSERT_FALSE(url_.empty()) << test::PostgresCluster::shared().error();
        }
    }
    // Another controller's lifecycle store on the same database.
    std::unique_ptr<LifecycleStore> open() {
        auto s = GetParam() ? open_postgres_lifecycle_store(url_, "") : LifecycleStore::open(dir_.path() + "/n.db");
        EXPECT_TRUE(s.ok()) << (s.ok() ? "" : s.message());
        return s.ok() ? std::move(*s) : nullptr;
    }
    test::TempDir dir_;
    std::string url_;
};
INSTANTIATE_TEST_SUITE_P(Stores, LeaseTest, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& info) { return info.param ? "postgres" : "sqlite"; });

TEST_P(LeaseTest, OneHolderAtATimeWithHeartbeatTakeoverAndRelease) {
    auto a = open(), b = open();
    ASSERT_TRUE(a && b);
    const milliseconds ttl = seconds(30);
    EXPECT_FALSE(*a->lease("web-01"));
    ASSERT_TRUE(*a->acquire_lease("web-01", "ctl-a", at(0), ttl));
    EXPECT_FALSE(*b->acquire_lease("web-01", "ctl-b", at(10), ttl));  // live: a holds it
    EXPECT_TRUE(*a->acquire_lease("web-01", "ctl-a", at(10), ttl));   // a again: extended
    EXPECT_TRUE(*a->renew_lease("web-01", "ctl-a", at(20), ttl));     // heartbeat: until at(50)
    EXPECT_FALSE(*b->acquire_lease("web-01", "ctl-b", at(49), ttl));
    EXPECT_FALSE(*b->renew_lease("web-01", "ctl-b", at(49), ttl));  // b never held it
    auto held = *b->lease("web-01");
    ASSERT_TRUE(held);
    EXPECT_EQ(held->holder, "ctl-a");
    EXPECT_EQ(held->expires_at, at(50));

    // a stopped heartbeating (died): after expiry b takes over, and a's late heartbeat tells it to stop.
    EXPECT_TRUE(*b->acquire_lease("web-01", "ctl-b", at(50), ttl));
    EXPECT_FALSE(*a->renew_lease("web-01", "ctl-a", at(51), ttl));
    EXPECT_FALSE(*a->acquire_lease("web-01", "ctl-a", at(52), ttl));
    EXPECT_EQ((*a->lease("web-01"))->holder, "ctl-b");
    EXPECT_TRUE(*a->acquire_lease("web-02", "ctl-a", at(52), ttl));  // leases are per node

    // Release: only by the holder; then anyone may take it at once.
    ASSERT_TRUE(a->release_lease("web-01", "ctl-a").ok());
    EXPECT_EQ((*b->lease("web-01"))->holder, "ctl-b");
    ASSERT_TRUE(b->release_lease("web-01", "ctl-b").ok());
    EXPECT_FALSE(*a->lease("web-01"));
    EXPECT_TRUE(*a->acquire_lease("web-01", "ctl-a", at(53), ttl));
}

// Retry counts of failed nodes: one controller writes, another reads the same count; cleared, there is none.
TEST_P(LeaseTest, RetryCountsAreSharedBetweenControllers) {
    auto a = open(), b = open();
    ASSERT_TRUE(a && b);
    auto none = b->retry("web-01");
    ASSERT_TRUE(none.ok()) << none.message();
    EXPECT_FALSE(*none);
    ASSERT_TRUE(a->put_retry("web-01", RetryState{1, at(30)}).ok());
    ASSERT_TRUE(a->put_retry("web-01", RetryState{2, at(90)}).ok());  // the next failure replaces it
    ASSERT_TRUE(a->put_retry("web-02", RetryState{1, at(5)}).ok());
    auto seen = b->retry("web-01");
    ASSERT_TRUE(seen.ok() && *seen) << (seen.ok() ? "none" : seen.message());
    EXPECT_EQ((*seen)->failures, 2);
    EXPECT_EQ((*seen)->next_at, at(90));
    ASSERT_TRUE(b->clear_retry("web-01").ok());
    EXPECT_FALSE(*a->retry("web-01"));
    EXPECT_EQ((*a->retry("web-02"))->failures, 1);
}

// Two controllers (own connections) ask for the same free lease at the same moment, 50 times: one gets it.
TEST_P(LeaseTest, RacingControllersGetALeaseOnce) {
    auto a = open(), b = open();
    ASSERT_TRUE(a && b);
    for (int round = 0; round < 50; ++round) {
        const std::string identity = "node-" + std::to_string(round);
        std::barrier start(2);
        Result<bool> ra = make_error("not run"), rb = make_error("not run");
        std::thread ta([&] {
            start.arrive_and_wait();
            ra = a->acquire_lease(identity, "ctl-a", at(0), seconds(30));
        });
        std::thread tb([&] {
            start.arrive_and_wait();
            rb = b->acquire_lease(identity, "ctl-b", at(0), seconds(30));
        });
        ta.join();
        tb.join();
        ASSERT_TRUE(ra.ok()) << ra.message();
        ASSERT_TRUE(rb.ok()) << rb.message();
        ASSERT_NE(*ra, *rb) << identity;
        EXPECT_EQ((*a->lease(identity))->holder, *ra ? "ctl-a" : "ctl-b");
    }
}

}  // namespace
}  // namespace nodeform::controller::lifecycle
