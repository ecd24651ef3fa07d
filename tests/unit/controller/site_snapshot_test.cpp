// The served site without a server: a reload swaps the snapshot whole, a broken one keeps the last good site
// and says why, and the change stamp tells when to reload.
#include <gtest/gtest.h>

#include "fakes/memory_logger.hpp"
#include "nodeform/controller/api/site_snapshot.hpp"

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

}  // namespace
}  // namespace nodeform::controller
