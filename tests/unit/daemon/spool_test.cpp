#include <filesystem>
#include <fstream>
#include <set>

#include <gtest/gtest.h>

#include "nodeform/agent/daemon/spool.hpp"
#include "test_paths.hpp"

namespace nodeform::agent::daemon {
namespace {

const std::unique_ptr<Random> kRandom = make_system_random();  // the real one: ids from RAND_bytes

nlohmann::json report(const std::string& id, int n) {
    return {{"report_id", id}, {"n", n}};
}

TEST(Uuid, Version4FromTheCsprng) {
    std::set<std::string> seen;
    for (int i = 0; i < 200; ++i) {
        std::string id = make_uuid_v4(*kRandom);
        ASSERT_TRUE(looks_like_uuid(id)) << id;
        EXPECT_EQ(id[14], '4');
        EXPECT_TRUE(id[19] == '8' || id[19] == '9' || id[19] == 'a' || id[19] == 'b') << id;
        seen.insert(id);
    }
    EXPECT_EQ(seen.size(), 200u);
    EXPECT_FALSE(looks_like_uuid("not-a-uuid"));
    EXPECT_FALSE(looks_like_uuid("6F1C2C1E-3A4B-4C5D-8E9F-0A1B2C3D4E5F"));
}

TEST(Spool, KeepsReportsInOrderAcrossReopen) {
    test::TempDir dir;
    std::vector<std::string> ids;
    {
        auto spool = Spool::open(dir.path() + "/spool", 10);
        ASSERT_TRUE(spool) << spool.message();
        for (int i = 0; i < 3; ++i) {
            ids.push_back(make_uuid_v4(*kRandom));
            ASSERT_TRUE((*spool)->put(report(ids.back(), i)));
        }
    }
    auto spool = Spool::open(dir.path() + "/spool", 10);
    ASSERT_TRUE(spool);
    auto entries = (*spool)->list();
    ASSERT_EQ(entries.size(), 3u);
    for (int i = 0; i < 3; ++i) {
        EXPECT_EQ(entries[i].report_id, ids[i]);
        auto body = (*spool)->read(entries[i]);
        ASSERT_TRUE(body);
        auto j = nlohmann::json::parse(*body);
        EXPECT_EQ(j["n"], i);
        EXPECT_EQ(j["spool_dropped"], 0);
    }
    ASSERT_TRUE((*spool)->remove(entries[1]));
    EXPECT_EQ((*spool)->size(), 2u);
    EXPECT_FALSE(std::filesystem::exists(entries[1].path));
    // a new report sorts after the survivors, even after reopening
    ASSERT_TRUE((*spool)->put(report(make_uuid_v4(*kRandom), 9)));
    auto after = Spool::open(dir.path() + "/spool", 10);
    auto list = (*after)->list();
    ASSERT_EQ(list.size(), 3u);
    EXPECT_EQ(list[0].report_id, ids[0]);
    EXPECT_EQ(list[1].report_id, ids[2]);
    EXPECT_GT(list[2].seq, list[1].seq);
}

TEST(Spool, KeepsTheNewestNAndCountsWhatItDropped) {
    test::TempDir dir;
    std::vector<std::string> ids;
    {
        auto spool = Spool::open(dir.path(), 3);
        ASSERT_TRUE(spool);
        for (int i = 0; i < 5; ++i) {
            ids.push_back(make_uuid_v4(*kRandom));
            ASSERT_TRUE((*spool)->put(report(ids.back(), i)));
        }
        EXPECT_EQ((*spool)->size(), 3u);
        EXPECT_EQ((*spool)->dropped(), 2u);
        auto entries = (*spool)->list();
        EXPECT_EQ(entries.front().report_id, ids[2]);
        EXPECT_EQ(entries.back().report_id, ids[4]);
        // the newest report carries the cumulative count
        auto last = nlohmann::json::parse(*(*spool)->read(entries.back()));
        EXPECT_EQ(last["spool_dropped"], 2);
    }
    // the count survives a restart and keeps growing
    auto spool = Spool::open(dir.path(), 3);
    EXPECT_EQ((*spool)->dropped(), 2u);
    ASSERT_TRUE((*spool)->put(report(make_uuid_v4(*kRandom), 5)));
    EXPECT_EQ((*spool)->dropped(), 3u);
    std::size_t files = 0;
    for (const auto& e : std::filesystem::directory_iterator(dir.path()))
        files += e.path().extension() == ".json" ? 1 : 0;
    EXPECT_EQ(files, 3u);
}

TEST(Spool, AShrunkLimitDropsTheExcessOnTheNextPut) {
    test::TempDir dir;
    {
        auto spool = Spool::open(dir.path(), 10);
        for (int i = 0; i < 6; ++i)
            ASSERT_TRUE((*spool)->put(report(make_uuid_v4(*kRandom), i)));
    }
    auto spool = Spool::open(dir.path(), 2);
    ASSERT_TRUE((*spool)->put(report(make_uuid_v4(*kRandom), 6)));
    EXPECT_EQ((*spool)->size(), 2u);
    EXPECT_EQ((*spool)->dropped(), 5u);
}

TEST(Spool, IgnoresStrangersAndRemovesInterruptedWrites) {
    test::TempDir dir;
    std::ofstream(dir.path() + "/README") << "not a report";
    std::ofstream(dir.path() + "/.0000000000000001-x.json.nodeform-tmp-123") << "{";
    std::ofstream(dir.path() + "/0000000000000001-not-a-uuid-at-all-really-no-no-no.json") << "{}";
    auto spool = Spool::open(dir.path(), 3);
    ASSERT_TRUE(spool);
    EXPECT_EQ((*spool)->size(), 0u);
    EXPECT_TRUE(std::filesystem::exists(dir.path() + "/README"));
    EXPECT_FALSE(std::filesystem::exists(dir.path() + "/.0000000000000001-x.json.nodeform-tmp-123"));
}

TEST(Spool, ReportsAreOwnerOnly) {
    test::TempDir dir;
    auto spool = Spool::open(dir.path() + "/s", 3);
    ASSERT_TRUE((*spool)->put(report(make_uuid_v4(*kRandom), 1)));
    auto perms = std::filesystem::status((*spool)->list()[0].path).permissions();
    EXPECT_EQ(perms & std::filesystem::perms::all,
              std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
    auto dperms = std::filesystem::status(dir.path() + "/s").permissions();
    EXPECT_EQ(dperms & std::filesystem::perms::all, std::filesystem::perms::owner_all);
}

TEST(Spool, RefusesAZeroLimitAndAnUnwritableDirectory) {
    test::TempDir dir;
    EXPECT_FALSE(Spool::open(dir.path(), 0));
    std::ofstream(dir.path() + "/file") << "x";
    EXPECT_FALSE(Spool::open(dir.path() + "/file/spool", 3));
}

}  // namespace
}  // namespace nodeform::agent::daemon
