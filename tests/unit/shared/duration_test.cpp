// The one duration grammar (nodeform/duration.hpp): everything the four former parsers accepted still parses.
#include "nodeform/duration.hpp"

#include <gtest/gtest.h>

namespace nodeform {
namespace {

using std::chrono::milliseconds;

TEST(Duration, AcceptsEveryUnit) {
    EXPECT_EQ(parse_duration("250ms"), milliseconds(250));
    EXPECT_EQ(parse_duration("30"), milliseconds(30'000));
    EXPECT_EQ(parse_duration("30s"), milliseconds(30'000));
    EXPECT_EQ(parse_duration("5m"), milliseconds(300'000));
    EXPECT_EQ(parse_duration("5min"), milliseconds(300'000));
    EXPECT_EQ(parse_duration("2h"), milliseconds(7'200'000));
    EXPECT_EQ(parse_duration("7d"), milliseconds(7LL * 86'400'000));
    EXPECT_EQ(parse_duration("0"), milliseconds(0));
    EXPECT_EQ(parse_duration(" 45s\n"), milliseconds(45'000));
}

TEST(Duration, RejectsWhatIsNotOneWholeNumberAndAUnit) {
    for (const char* bad :
         {"", " ", "ms", "s30", "1.5s", "-5s", "+5s", "5 m", "5 minutes", "5x", "5sec", "5M", "1w", "5s5", "0x10"}) {
        EXPECT_FALSE(parse_duration(bad)) << bad;
    }
}

TEST(Duration, RejectsWhatWouldOverflow) {
    EXPECT_FALSE(parse_duration("1234567890123"));  // 13 digits
    EXPECT_FALSE(parse_duration("999999999999d"));
    EXPECT_EQ(parse_duration("999999999999ms"), milliseconds(999'999'999'999));
}

}  // namespace
}  // namespace nodeform
