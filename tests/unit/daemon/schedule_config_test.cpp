#include <fstream>
#include <set>

#include <gtest/gtest.h>

#include "fakes/recording_notifier.hpp"
#include "nodeform/agent/daemon/config.hpp"
#include "nodeform/agent/daemon/notifier.hpp"
#include "nodeform/agent/daemon/schedule.hpp"
#include "test_paths.hpp"

namespace nodeform::agent::daemon {
namespace {

using std::chrono::milliseconds;

class SequenceRandom final : public Random {
  public:
    explicit SequenceRandom(std::vector<std::uint64_t> values) : values_(std::move(values)) {}
    std::uint64_t next() override { return values_[i_++ % values_.size()]; }

  private:
    std::vector<std::uint64_t> values_;
    std::size_t i_ = 0;
};

TEST(Splay, OffsetIsStablePerIdentityAndInRange) {
    milliseconds splay(60000);
    auto a = splay_offset("web-01", splay);
    EXPECT_EQ(a, splay_offset("web-01", splay));
    std::set<long long> seen;
    for (int i = 0; i < 50; ++i) {
        auto o = splay_offset("node-" + std::to_string(i), splay);
        EXPECT_GE(o.count(), 0);
        EXPECT_LT(o.count(), splay.count());
        seen.insert(o.count());
    }
    EXPECT_GT(seen.size(), 40u) << "offsets of a fleet should spread over the splay";
    EXPECT_EQ(splay_offset("web-01", milliseconds(0)).count(), 0);
}

// A (re)start waits uniform [0, splay] before its first run: a fleet booted together spreads over the splay.
TEST(Splay, StartDelayIsDrawnWithinTheSplay) {
    SequenceRandom random({0, 59999, 60000, 60001, 123456789});
    const milliseconds splay(60000);
    EXPECT_EQ(start_delay(splay, random), milliseconds(0));
    EXPECT_EQ(start_delay(splay, random), milliseconds(59999));
    EXPECT_EQ(start_delay(splay, random), milliseconds(60000));  // the bound itself is included
    EXPECT_EQ(start_delay(splay, random), milliseconds(0));      // 60001 mod 60001
    EXPECT_EQ(start_delay(splay, random), milliseconds(123456789 % 60001));
    EXPECT_EQ(start_delay(milliseconds(0), random), milliseconds(0)) << "no splay: at once";
    std::set<long long> seen;
    auto real = make_system_random();
    for (int i = 0; i < 1000; ++i) {
        auto d = start_delay(splay, *real);
        EXPECT_GE(d.count(), 0);
        EXPECT_LE(d.count(), splay.count());
        seen.insert(d.count() / 1000);
    }
    EXPECT_GT(seen.size(), 50u) << "a thousand nodes spread over the seconds of the splay";
}

TEST(Splay, JitterIsSmallAndBounded) {
    EXPECT_EQ(max_jitter(milliseconds(0)).count(), 0);
    EXPECT_EQ(max_jitter(milliseconds(10000)).count(), 1000);
    EXPECT_EQ(max_jitter(milliseconds(3600000)).count(), 5000);
}

TEST(Splay, NextTurnLandsOnTheIdentityGrid) {
    using namespace std::chrono;
    system_clock::time_point now(milliseconds(1'000'000'123));
    // interval 300 s, offset 17 s: grid points are k*300000 + 17000.
    auto d = next_turn_delay(now, milliseconds(300000), milliseconds(17000), milliseconds(0));
    auto at = duration_cast<milliseconds>(now.time_since_epoch()).count() + d.count();
    EXPECT_EQ((at - 17000) % 300000, 0);
    EXPECT_GT(d.count(), 0);
    EXPECT_LE(d.count(), 300000);
    // exactly on a grid point: the next one, a full interval later
    system_clock::time_point on(milliseconds(300000 * 5 + 17000));
    EXPECT_EQ(next_turn_delay(on, milliseconds(300000), milliseconds(17000), milliseconds(0)).count(), 300000);
    // jitter is added on top
    EXPECT_EQ(next_turn_delay(on, milliseconds(300000), milliseconds(17000), milliseconds(250)).count(), 300250);
}

TEST(Backoff, DoublesUpToTheCapWithFullJitter) {
    Backoff b(milliseconds(100), milliseconds(1000));
    SequenceRandom top({~0ull});  // always the largest value below the bound + 1
    std::vector<long long> ceilings;
    for (int i = 0; i < 6; ++i) {
        ceilings.push_back(b.ceiling().count());
        auto d = b.next(top);
        EXPECT_LE(d.count(), ceilings.back());
        EXPECT_GE(d.count(), 0);
    }
    EXPECT_EQ(ceilings, (std::vector<long long>{100, 200, 400, 800, 1000, 1000}));
    b.reset();
    EXPECT_EQ(b.ceiling().count(), 100);
    SequenceRandom zero({0});
    EXPECT_EQ(b.next(zero).count(), 0);  // full jitter reaches zero
    SequenceRandom exact({200});
    EXPECT_EQ(b.next(exact).count(), 200);  // ceiling 200 reachable: uniform over [0, 200]
}

TEST(Config, DefaultsThenFileThenCommandLine) {
    test::TempDir dir;
    std::string file = dir.path() + "/agent.yaml";
    std::ofstream(file) << "state-dir: /srv/state\nspool-max: 7\ninterval: 30s\nlog-level: debug\n";
    auto loaded = load_agent_config({"--config", file, "--spool-max", "9", "--splay=250ms"});
    ASSERT_TRUE(loaded) << loaded.message();
    const AgentConfig& c = loaded->config;
    EXPECT_EQ(c.state_dir, "/srv/state");  // file over default
    EXPECT_EQ(c.spool_max, 9u);            // command line over file
    EXPECT_EQ(c.interval, milliseconds(30000));
    EXPECT_EQ(c.splay, milliseconds(250));
    EXPECT_EQ(c.log_level, LogLevel::debug);
    EXPECT_EQ(c.effective_spool_dir(), "/srv/state/spool");
    EXPECT_EQ(c.stop_timeout, milliseconds(80000));  // default kept
}

TEST(Config, MissingDefaultFileIsFineButExplicitOneIsNot) {
    auto loaded = load_agent_config({"--state-dir", "/tmp/x"});
    ASSERT_TRUE(loaded) << loaded.message();
    auto missing = load_agent_config({"--config", "/nonexistent/agent.yaml"});
    ASSERT_FALSE(missing);
    EXPECT_NE(missing.message().find("/nonexistent/agent.yaml"), std::string::npos);
}

TEST(Config, RejectsUnknownKeysAndBadValuesNamingThem) {
    AgentConfig c;
    auto st = apply_config_yaml(c, "spool-max: 5\nfrobnicate: yes\n", "agent.yaml");
    ASSERT_FALSE(st);
    EXPECT_NE(st.message().find("frobnicate"), std::string::npos);
    EXPECT_FALSE(apply_config_value(c, "spool-max", "0"));
    EXPECT_FALSE(apply_config_value(c, "spool-max", "-3"));
    EXPECT_FALSE(apply_config_value(c, "interval", "soon"));
    EXPECT_FALSE(apply_config_value(c, "interval", "0s"));
    EXPECT_FALSE(apply_config_value(c, "controller-url", "ftp://x"));
    EXPECT_FALSE(apply_config_yaml(c, "- a\n- b\n", "agent.yaml"));
    EXPECT_FALSE(apply_config_yaml(c, "seed: [a, b]\n", "agent.yaml"));
    auto bad_flag = load_agent_config({"--no-such-flag"});
    EXPECT_FALSE(bad_flag);
    EXPECT_TRUE(load_agent_config({"--help"})->help);
}

TEST(Config, DurationKeysUseTheSharedGrammar) {
    AgentConfig c;
    ASSERT_TRUE(apply_config_value(c, "interval", "5min"));
    EXPECT_EQ(c.interval, milliseconds(300000));
    ASSERT_TRUE(apply_config_value(c, "retry-cap", "1d"));
    EXPECT_EQ(c.retry_cap, milliseconds(86400000));
    auto bad = apply_config_value(c, "stop-timeout", "1.5s");
    ASSERT_FALSE(bad);
    EXPECT_NE(bad.message().find("stop-timeout: invalid duration '1.5s'"), std::string::npos) << bad.message();
}

TEST(Notifier, StatusLineSummarisesState) {
    StatusSummary s;
    s.ready = true;
    s.health_pass = 5;
    s.health_total = 5;
    EXPECT_EQ(format_status(s), "ready, 0 drift, 5/5 health");
    s.drifted = 2;
    s.health_pass = 4;
    s.spooled = 3;
    s.note = "controller unreachable";
    EXPECT_EQ(format_status(s), "ready, 2 drift, 4/5 health, 3 reports spooled, controller unreachable");
    StatusSummary c;
    c.attempt = 2;
    c.failed = 1;
    EXPECT_EQ(format_status(c), "converging (attempt 2), 1 failed, 0/0 health");
}

TEST(Notifier, RecordingNotifierKeepsMessagesInOrder) {
    RecordingNotifier n(std::chrono::microseconds(2000000));
    n.notify("READY=1");
    n.notify("STATUS=x");
    EXPECT_EQ(n.messages(), (std::vector<std::string>{"READY=1", "STATUS=x"}));
    EXPECT_EQ(n.watchdog_timeout().count(), 2000000);
}

}  // namespace
}  // namespace nodeform::agent::daemon
