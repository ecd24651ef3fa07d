#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <thread>

#include <gtest/gtest.h>

#include "eventually.hpp"
#include "fakes/fake_process_runner.hpp"
#include "fakes/fake_watcher.hpp"
#include "fakes/memory_logger.hpp"
#include "fakes/recording_notifier.hpp"
#include "nodeform/agent/daemon/daemon.hpp"
#include "nodeform/atomic_file.hpp"
#include "test_paths.hpp"

namespace nodeform::agent::daemon {
namespace {

using Json = nlohmann::json;
using namespace std::chrono_literals;

Json spec_with(double interval_s, const std::string& drift, Json health = Json::array()) {
    return {{"identity", "web-01"},
            {"apply", {{"interval_s", interval_s}, {"splay_s", 0}, {"drift", drift}, {"trigger", "schedule"}}},
            {"health", health}};
}

class FakeSource final : public SpecSource {
  public:
    Status enroll() override {
        ++enrolls;
        return Ok{};
    }
    Result<SpecFetch> fetch() override {
        std::lock_guard<std::mutex> lock(mutex);
        ++fetches;
        SpecFetch f;
        f.spec = spec;
        f.digest = "sha256:" + std::to_string(spec.dump().size());
        f.apply_request = apply_request;
        if (refused) {
            f.from_cache = true;
            f.credential_refused = true;
            f.warning = "cannot fetch the spec: HTTP 401 invalid_credential (the node credential was refused)";
        }
        return f;
    }
    std::atomic<bool> refused{false};
    std::mutex mutex;
    std::string apply_request;  // guarded by mutex
    Json spec = spec_with(0.05, "remediate");
    std::atomic<int> enrolls{0};
    std::atomic<int> fetches{0};
};

class FakeEngine final : public RunEngine {
  public:
    RunOutcome run(const Json& /*spec*/, TurnMode mode) override {
        int n = ++runs;
        {
            std::lock_guard<std::mutex> lock(mutex);
            modes.push_back(mode);
        }
        if (block) {
            std::unique_lock<std::mutex> lock(mutex);
            entered = true;
            cv.notify_all();
            cv.wait(lock, [&] { return !block; });
        }
        bool fail = n <= fail_first;
        RunOutcome o;
        o.ok = !fail;
        o.platform_ready = !fail;
        o.reached_platform_ready = !fail && !ready_before;
        ready_before = ready_before || !fail;
        o.report.identity = "web-01";
        o.report.mode = mode == TurnMode::apply ? protocol::Mode::apply : protocol::Mode::check;
        o.report.counts = {1, fail ? 0 : 1, 0, fail ? 1 : 0, 0, 0};
        o.report.resources = {{"file:/etc/motd",
                               "file",
                               fail ? protocol::ResourceStatus::failed : protocol::ResourceStatus::unchanged,
                               0,
                               "x",
                               {}}};
        if (after) after(mode, o);
        return o;
    }
    void release() {
        std::lock_guard<std::mutex> lock(mutex);
        block = false;
        cv.notify_all();
    }
    void wait_entered() {
        std::unique_lock<std::mutex> lock(mutex);
        cv.wait(lock, [&] { return entered; });
    }
    std::vector<TurnMode> modes_seen() {
        std::lock_guard<std::mutex> lock(mutex);
        return modes;
    }
    void cancel() override { ++cancels; }
    std::function<void(TurnMode, RunOutcome&)> after;  // set before the daemon starts
    std::atomic<int> runs{0};
    std::atomic<int> cancels{0};
    int fail_first = 0;
    bool ready_before = false;
    bool block = false;
    bool entered = false;
    std::mutex mutex;
    std::condition_variable cv;
    std::vector<TurnMode> modes;
};

class FakeProber final : public HealthProber {
  public:
    HealthResult probe(const HealthCheckSpec& c) override {
        ++probes;
        HealthResult r;
        r.name = c.name;
        r.type = c.type;
        r.pass = pass.load();
        r.message = r.pass ? "ok" : "down";
        r.checked_at = std::chrono::system_clock::now();
        return r;
    }
    std::atomic<bool> pass{true};
    std::atomic<int> probes{0};
};

// A controller that dedups by report_id, like the real one; can be "down".
class FakePoster final : public ReportPoster {
  public:
    ReportPostResult post(const Json& report) override {
        std::lock_guard<std::mutex> lock(mutex);
        ++attempts;
        if (down) return {ReportDelivery::unavailable, "connection refused"};
        std::string id = report["report_id"];
        if (reject_next > 0) {
            --reject_next;
            rejected.push_back(id);
            return {ReportDelivery::rejected, "the controller refused the report: 422 invalid_report"};
        }
        if (stored.count(id)) ++duplicates;
        stored[id] = report;
        order.push_back(id);
        return {ReportDelivery::stored, ""};
    }
    std::vector<Json> reports() {
        std::lock_guard<std::mutex> lock(mutex);
        std::vector<Json> out;
        for (const auto& id : order)
            out.push_back(stored[id]);
        return out;
    }
    std::mutex mutex;
    bool down = false;
    int reject_next = 0;  // answer "rejected for good" to this many reports
    std::vector<std::string> rejected;
    int attempts = 0;
    int duplicates = 0;
    std::map<std::string, Json> stored;
    std::vector<std::string> order;
};

// No jitter; ids (report_id) still unique, from a counter.
class ZeroRandom final : public Random {
  public:
    std::uint64_t next() override { return 0; }
    void fill(unsigned char* out, std::size_t size) override {
        ++drawn_;
        for (std::size_t i = 0; i < size; ++i)
            out[i] = static_cast<unsigned char>(i < 8 ? drawn_ >> (8 * i) : 0);
    }

  private:
    std::atomic<std::uint64_t> drawn_{0};
};

struct Harness {
    test::TempDir dir;
    SystemClock clock;
    MemoryLogger logger;
    RecordingNotifier notifier{std::chrono::microseconds(0)};
    FakeSource source;
    FakeEngine engine;
    FakeProber prober;
    FakePoster poster;
    ZeroRandom random;
    std::unique_ptr<Spool> spool;
    DaemonOptions options;

    Harness() {
        spool = Spool::open(dir.path() + "/spool", 100).value();
        options.identity = "web-01";
        options.state_file = dir.path() + "/daemon.json";
        options.handle_signals = false;
        options.retry_base = 10ms;
        options.retry_cap = 50ms;
        options.stop_timeout = 10s;
    }
    std::unique_ptr<Daemon> make(bool with_poster = true, ChangeWatcher* watcher = nullptr,
                                 ProcessRunner* units = nullptr) {
        return std::make_unique<Daemon>(
            options, DaemonDeps{clock, logger, notifier, source, engine, prober, with_poster ? &poster : nullptr,
                                *spool, random, watcher, units});
    }
};

// Runs the daemon on a thread; stops it (and joins) when destroyed.
struct Running {
    explicit Running(Daemon& d) : daemon(d), thread([this] { code = daemon.run(); }) {}
    ~Running() { stop(); }
    void stop() {
        if (thread.joinable()) {
            daemon.request_stop();
            thread.join();
        }
    }
    Daemon& daemon;
    int code = -1;
    std::thread thread;
};

using nodeform::test::eventually;

int count(const std::vector<std::string>& messages, const std::string& m) {
    return static_cast<int>(std::count(messages.begin(), messages.end(), m));
}

TEST(Daemon, RetriesUntilPlatformReadyThenNotifiesReadyOnce) {
    Harness h;
    h.engine.fail_first = 2;
    h.options.max_turns = 5;
    auto daemon = h.make();
    EXPECT_EQ(daemon->run(), 0);
    auto messages = h.notifier.messages();
    EXPECT_EQ(count(messages, "READY=1"), 1);
    EXPECT_EQ(messages.back(), "STOPPING=1");
    EXPECT_EQ(h.source.enrolls.load(), 1);
    EXPECT_EQ(h.engine.runs.load(), 5);
    auto reports = h.poster.reports();
    ASSERT_EQ(reports.size(), 5u);
    EXPECT_EQ(reports[0]["phase"], "converging");
    EXPECT_EQ(reports[1]["phase"], "converging");
    EXPECT_EQ(reports[2]["phase"], "platform-ready");
    EXPECT_EQ(reports[3]["phase"], "sustain");
    for (const auto& r : reports) {
        EXPECT_EQ(r["trigger"], "run");
        EXPECT_TRUE(looks_like_uuid(r["report_id"]));
        EXPECT_EQ(r["spool_dropped"], 0);
        EXPECT_EQ(r["agent_version"], NODEFORM_VERSION);
    }
    EXPECT_EQ(h.spool->size(), 0u);
    EXPECT_TRUE(daemon->stats().ready);
    // READY=1 comes first (the loop runs); platform-ready is the STATUS=ready line after the converging ones
    EXPECT_EQ(messages.front(), "READY=1");
    auto converging =
        std::find(messages.begin(), messages.end(), "STATUS=converging (attempt 2), 1 failed, 0/0 health");
    EXPECT_NE(converging, messages.end());
    EXPECT_NE(std::find(converging, messages.end(), "STATUS=ready, 0 drift, 0/0 health"), messages.end());
    // one readable log line per failed resource, with the structured fields
    int failed_lines = 0;
    for (const auto& line : h.logger.lines) {
        if (line.fields.count("NODEFORM_RESOURCE") && line.fields.at("NODEFORM_STATUS") == "failed") {
            ++failed_lines;
            EXPECT_EQ(line.fields.at("NODEFORM_RESOURCE"), "file:/etc/motd");
            EXPECT_TRUE(looks_like_uuid(line.fields.at("NODEFORM_RUN_ID")));
            EXPECT_EQ(line.level, LogLevel::error);
        }
    }
    EXPECT_EQ(failed_lines, 2);
    auto state = nlohmann::json::parse(*read_file(h.options.state_file));
    EXPECT_EQ(state["ready"], true);
    EXPECT_EQ(state["turns"], 5);
}

TEST(Daemon, AlreadyReadyNodeNotifiesAtOnceAndChecksOnlyInReportMode) {
    Harness h;
    h.source.spec = spec_with(0.02, "report");
    h.engine.ready_before = true;
    h.options.already_ready = true;
    h.options.max_turns = 3;
    auto daemon = h.make();
    EXPECT_EQ(daemon->run(), 0);
    EXPECT_EQ(h.notifier.messages().front(), "READY=1");
    EXPECT_EQ(h.engine.modes_seen(), (std::vector<TurnMode>{TurnMode::check, TurnMode::check, TurnMode::check}));
    for (const auto& r : h.poster.reports())
        EXPECT_EQ(r["phase"], "sustain");
}

// Every start waits within the splay before its first run (the draw comes from the Random seam).
TEST(Daemon, FirstRunAfterAStartWaitsWithinTheSplay) {
    Harness h;
    class Fixed final : public Random {
      public:
        std::uint64_t next() override { return 250 + 1001 * n++; }  // below(1001) = 250
        std::uint64_t n = 0;
    } fixed;
    h.options.start_splay = std::chrono::milliseconds(1000);
    h.options.max_turns = 1;
    Daemon daemon(h.options,
                  DaemonDeps{h.clock, h.logger, h.notifier, h.source, h.engine, h.prober, &h.poster, *h.spool, fixed});
    EXPECT_EQ(daemon.run(), 0);
    EXPECT_EQ(h.engine.runs.load(), 1);
    bool announced = false;
    for (const auto& line : h.logger.lines)
        announced = announced || line.message == "first run in 250 ms (splay)";
    EXPECT_TRUE(announced);
}

// A refused credential: the node keeps converging the cached spec and says why in STATUS= and the journal.
TEST(Daemon, RefusedCredentialConvergesTheCachedSpecAndSaysSo) {
    Harness h;
    h.source.refused = true;
    h.options.max_turns = 2;
    auto daemon = h.make();
    EXPECT_EQ(daemon->run(), 0);
    EXPECT_EQ(h.engine.runs.load(), 2);
    auto messages = h.notifier.messages();
    EXPECT_NE(std::find(messages.begin(), messages.end(),
                        "STATUS=ready, 0 drift, 0/0 health, credential refused, waiting for a new enrollment token, "
                        "cached spec"),
              messages.end());
    bool logged = false;
    for (const auto& line : h.logger.lines)
        logged = logged || (line.level == LogLevel::error && line.fields.count("NODEFORM_STATUS") &&
                            line.fields.at("NODEFORM_STATUS") == "credential-refused");
    EXPECT_TRUE(logged);
}

TEST(Daemon, FirstConvergeAppliesEvenInReportModeThenChecks) {
    Harness h;
    h.source.spec = spec_with(0.02, "report");
    h.options.max_turns = 2;
    auto daemon = h.make();
    EXPECT_EQ(daemon->run(), 0);
    EXPECT_EQ(h.engine.modes_seen(), (std::vector<TurnMode>{TurnMode::apply, TurnMode::check}));
}

TEST(Daemon, SpoolsWhileTheControllerIsDownAndDrainsOnceWhenItReturns) {
    Harness h;
    h.poster.down = true;
    h.options.max_turns = 4;
    auto daemon = h.make();
    EXPECT_EQ(daemon->run(), 0);
    EXPECT_EQ(h.spool->size(), 4u);
    EXPECT_TRUE(h.poster.stored.empty());
    EXPECT_GT(h.poster.attempts, 0);
    // next start: the controller is back; the old reports drain before/alongside the new ones, each once
    h.poster.down = false;
    h.options.already_ready = true;
    h.options.max_turns = 2;
    auto again = h.make();
    EXPECT_EQ(again->run(), 0);
    EXPECT_TRUE(eventually([&] { return h.spool->size() == 0; }, 1s)) << "drained during the run";
    EXPECT_EQ(h.poster.stored.size(), 6u);
    EXPECT_EQ(h.poster.duplicates, 0);
}

TEST(Daemon, ABoundedSpoolDropsTheOldestAndSaysSo) {
    Harness h;
    h.spool = Spool::open(h.dir.path() + "/small", 2).value();
    h.poster.down = true;
    h.options.max_turns = 5;
    auto daemon = h.make();
    EXPECT_EQ(daemon->run(), 0);
    EXPECT_EQ(h.spool->size(), 2u);
    EXPECT_EQ(h.spool->dropped(), 3u);
    h.poster.down = false;
    h.options.max_turns = 1;
    h.options.already_ready = true;
    // Hold the run until the two old reports are delivered, so the new one finds room (no race with the sender).
    h.engine.block = true;
    auto again = h.make();
    std::thread t([&] { EXPECT_EQ(again->run(), 0); });
    h.engine.wait_entered();
    EXPECT_TRUE(eventually([&] { return h.spool->size() == 0; }));
    h.engine.release();
    t.join();
    EXPECT_EQ(h.spool->size(), 0u);
    EXPECT_EQ(h.spool->dropped(), 3u);
    auto reports = h.poster.reports();
    ASSERT_EQ(reports.size(), 3u);
    EXPECT_EQ(reports.back()["spool_dropped"], 3);
}

TEST(Daemon, AHealthFlipSendsAHealthReportAtOnce) {
    Harness h;
    Json health = Json::array({{{"name", "web"},
                                {"type", "tcp"},
                                {"host", "127.0.0.1"},
                                {"port", 1},
                                {"interval_s", 0.02},
                                {"timeout_s", 1}}});
    h.source.spec = spec_with(3600, "remediate", health);
    auto daemon = h.make();
    Running running(*daemon);
    ASSERT_TRUE(eventually([&] { return h.prober.probes.load() >= 2 && h.poster.reports().size() >= 1; }));
    EXPECT_EQ(daemon->stats().health_reports, 0u);  // passing from the start: nothing to tell
    h.prober.pass = false;
    ASSERT_TRUE(eventually([&] { return daemon->stats().health_reports >= 1; }));
    ASSERT_TRUE(eventually([&] {
        for (const auto& r : h.poster.reports())
            if (r["trigger"] == "health") return true;
        return false;
    }));
    Json hr;
    for (const auto& r : h.poster.reports())
        if (r["trigger"] == "health") hr = r;
    EXPECT_EQ(hr["health"][0]["status"], "fail");
    EXPECT_EQ(hr["health"][0]["name"], "web");
    EXPECT_EQ(hr["phase"], "sustain");
    EXPECT_EQ(hr["counts"]["total"], 1);  // repeats the last run's results
    h.prober.pass = true;
    ASSERT_TRUE(eventually([&] { return daemon->stats().health_reports >= 2; }));
    EXPECT_EQ(h.engine.runs.load(), 1) << "health changes do not trigger converge runs";
    auto messages = h.notifier.messages();
    EXPECT_NE(std::find(messages.begin(), messages.end(), "STATUS=ready, 0 drift, 0/1 health"), messages.end());
    running.stop();
    EXPECT_EQ(running.code, 0);
}

TEST(Daemon, RunNowStartsATurnWithoutWaitingForTheInterval) {
    Harness h;
    h.source.spec = spec_with(3600, "remediate");
    auto daemon = h.make();
    Running running(*daemon);
    ASSERT_TRUE(eventually([&] { return daemon->stats().turns == 1; }));
    std::this_thread::sleep_for(50ms);
    EXPECT_EQ(daemon->stats().turns, 1u);
    daemon->request_run_now();
    ASSERT_TRUE(eventually([&] { return daemon->stats().turns == 2; }));
    EXPECT_EQ(h.source.fetches.load(), 2);
}

TEST(Daemon, AReportRejectedForGoodIsDroppedAndDoesNotBlockTheOthers) {
    Harness h;
    h.poster.down = true;
    h.options.max_turns = 3;
    EXPECT_EQ(h.make()->run(), 0);
    ASSERT_EQ(h.spool->size(), 3u);
    // The controller is back but refuses the oldest spooled report for good (422): the two behind it still go.
    h.poster.down = false;
    h.poster.reject_next = 1;
    h.options.already_ready = true;
    h.options.max_turns = 1;
    auto again = h.make();
    EXPECT_EQ(again->run(), 0);
    EXPECT_EQ(h.spool->size(), 0u);
    EXPECT_EQ(h.poster.rejected.size(), 1u);
    EXPECT_EQ(h.poster.stored.size(), 3u);  // two old ones and this start's report
    EXPECT_EQ(h.poster.stored.count(h.poster.rejected[0]), 0u);
    EXPECT_EQ(again->stats().reports_rejected, 1u);
    bool logged = false;
    for (const auto& line : h.logger.lines)
        logged = logged || line.message.find("rejected report " + h.poster.rejected[0]) != std::string::npos;
    EXPECT_TRUE(logged);
}

TEST(Daemon, StopWaitsForTheRunInHandAndSpoolsItsReport) {
    Harness h;
    h.engine.block = true;
    auto daemon = h.make(false);
    std::thread t([&] { EXPECT_EQ(daemon->run(), 0); });
    h.engine.wait_entered();
    daemon->request_stop();
    EXPECT_TRUE(eventually([&] { return h.engine.cancels.load() == 1; }, 1s)) << "the run in hand is asked to stop";
    std::this_thread::sleep_for(50ms);
    EXPECT_EQ(h.spool->size(), 0u) << "still running the resource in hand";
    h.engine.release();
    t.join();
    EXPECT_EQ(h.spool->size(), 1u);
    EXPECT_FALSE(daemon->stats().abandoned_work);
    auto messages = h.notifier.messages();
    EXPECT_EQ(count(messages, "STOPPING=1"), 1);
    auto state = nlohmann::json::parse(*read_file(h.options.state_file));
    EXPECT_EQ(state["turns"], 1);
}

TEST(Daemon, SendsWatchdogKeepalivesAtHalfTheTimeout) {
    Harness h;
    RecordingNotifier watched(std::chrono::microseconds(40000));
    h.source.spec = spec_with(3600, "remediate");
    auto daemon = std::make_unique<Daemon>(
        h.options, DaemonDeps{h.clock, h.logger, watched, h.source, h.engine, h.prober, &h.poster, *h.spool, h.random});
    Running running(*daemon);
    ASSERT_TRUE(eventually([&] { return count(watched.messages(), "WATCHDOG=1") >= 4; }));
    running.stop();
    EXPECT_EQ(running.code, 0);
}

// ---- drift in a second: the watcher, the unit check, apply.trigger: manual ---------------------------------

Json watched_spec(const std::string& drift, const std::string& trigger = "schedule") {
    Json spec = spec_with(3600, drift);
    spec["apply"]["trigger"] = trigger;
    spec["files"] = {{{"path", "/etc/motd"}, {"content", "hi\n"}}};
    spec["users"] = {{{"name", "alice"}, {"home", "/home/alice"}}};
    spec["services"] = {{{"name", "nginx.service"}, {"enabled", true}, {"running", true}}};
    return spec;
}

// A platform-ready node whose first (scheduled) turn has run; the next one is an hour away.
struct Watching {
    Harness h;
    FakeWatcher watcher;
    std::unique_ptr<Daemon> daemon;
    std::unique_ptr<Running> running;
    void start(const std::string& drift, const std::string& trigger = "schedule", ProcessRunner* units = nullptr) {
        h.source.spec = watched_spec(drift, trigger);
        h.engine.ready_before = true;
        h.options.already_ready = true;
        daemon = h.make(true, &watcher, units);
        running = std::make_unique<Running>(*daemon);
        ASSERT_TRUE(eventually([&] { return daemon->stats().turns == 1; }));
    }
};

TEST(DaemonWatch, ABurstOfChangesIsExaminedOnceAgainstTheLastSpecWithoutAFetch) {
    Watching w;
    w.h.options.watch_debounce = 300ms;
    ASSERT_NO_FATAL_FAILURE(w.start("remediate"));
    ASSERT_FALSE(w.watcher.calls().empty());
    auto paths = w.watcher.calls().back();
    for (const char* p : {"/etc/motd", "/etc/group", "/etc/passwd", "/etc/shadow", "/etc/sudoers.d",
                          "/home/alice/.ssh/authorized_keys"})
        EXPECT_NE(std::find(paths.begin(), paths.end(), p), paths.end()) << p;
    w.watcher.change("/etc/motd");
    w.watcher.change("/etc/group");
    w.watcher.change("/etc/motd");
    ASSERT_TRUE(eventually([&] { return w.daemon->stats().turns == 2; }));
    std::this_thread::sleep_for(600ms);  // longer than the debounce: a second examination would have started
    EXPECT_EQ(w.h.engine.runs.load(), 2) << "one examination for the burst";
    EXPECT_EQ(w.daemon->stats().change_turns, 1u);
    EXPECT_EQ(w.h.source.fetches.load(), 1) << "a change is examined against the last spec, not refetched";
    EXPECT_EQ(w.h.engine.modes_seen().back(), TurnMode::apply);
    EXPECT_TRUE(eventually([&] { return w.h.poster.reports().size() == 2; }));
    EXPECT_EQ(w.h.poster.reports().back()["trigger"], "run");
    bool logged = false;
    for (const auto& line : w.h.logger.lines)
        logged = logged || line.message == "change seen: /etc/group, /etc/motd; examining it now";
    EXPECT_TRUE(logged);
}

TEST(DaemonWatch, ReportModeOnlyChecksAChange) {
    Watching w;
    ASSERT_NO_FATAL_FAILURE(w.start("report"));
    w.watcher.change("/etc/motd");
    ASSERT_TRUE(eventually([&] { return w.daemon->stats().turns == 2; }));
    EXPECT_EQ(w.h.engine.modes_seen(), (std::vector<TurnMode>{TurnMode::check, TurnMode::check}));
}

// The run that repairs /etc/motd writes it: that write is the agent's own, not a new change. A change to a
// path the run did not write (here /etc/group, during the run) is still examined.
TEST(DaemonWatch, TheAgentsOwnWritesAreNotDriftButOtherChangesDuringARunAre) {
    std::atomic<bool> touch_group{false};  // outlives the daemon (declared before it)
    Watching w;
    w.h.engine.after = [&](TurnMode mode, RunOutcome& o) {
        if (mode != TurnMode::apply || w.h.engine.runs.load() < 2) return;
        o.report.resources[0].status = protocol::ResourceStatus::changed;
        o.report.counts = {1, 0, 1, 0, 0, 0};
        w.watcher.change("/etc/motd");  // what inotify would say about the repair
        if (touch_group.exchange(false)) w.watcher.change("/etc/group");
    };
    ASSERT_NO_FATAL_FAILURE(w.start("remediate"));
    w.watcher.change("/etc/motd");
    ASSERT_TRUE(eventually([&] { return w.daemon->stats().turns == 2; }));
    std::this_thread::sleep_for(500ms);
    EXPECT_EQ(w.h.engine.runs.load(), 2) << "no repair loop on the agent's own write";

    touch_group = true;
    w.watcher.change("/etc/motd");
    ASSERT_TRUE(eventually([&] { return w.daemon->stats().turns == 4; })) << "/etc/group changed during run 3";
    std::this_thread::sleep_for(500ms);
    EXPECT_EQ(w.h.engine.runs.load(), 4);
    EXPECT_EQ(w.daemon->stats().change_turns, 3u);
}

TEST(DaemonWatch, WatchesFollowTheSpecAfterEveryRun) {
    Watching w;
    ASSERT_NO_FATAL_FAILURE(w.start("remediate"));
    auto first = w.watcher.calls().size();
    {
        std::lock_guard<std::mutex> lock(w.h.source.mutex);
        w.h.source.spec["files"].push_back({{"path", "/etc/issue"}, {"content", "x\n"}});
    }
    w.daemon->request_run_now();
    ASSERT_TRUE(eventually([&] { return w.daemon->stats().turns == 2; }));
    ASSERT_TRUE(eventually([&] { return w.watcher.calls().size() > first; }));
    auto paths = w.watcher.calls().back();
    EXPECT_NE(std::find(paths.begin(), paths.end(), "/etc/issue"), paths.end());
    // A change turn re-arms too (a file the run recreated is watched again).
    auto before = w.watcher.calls().size();
    w.watcher.change("/etc/issue");
    ASSERT_TRUE(eventually([&] { return w.daemon->stats().turns == 3; }));
    EXPECT_TRUE(eventually([&] { return w.watcher.calls().size() > before; }));
}

TEST(DaemonWatch, AManagedUnitLeavingItsStateIsExamined) {
    FakeProcessRunner units;  // outlives the daemon (declared before it)
    std::atomic<int> asked{0};
    std::atomic<bool> up{true};
    Watching w;
    units.handler = [&](const ProcessRequest& r) -> Result<ProcessResult> {
        ++asked;
        EXPECT_EQ(r.argv, (std::vector<std::string>{"systemctl", "is-active", "--", "nginx.service"}));
        return ProcessResult{up ? 0 : 3, false, up ? "active\n" : "inactive\n", ""};
    };
    w.h.options.unit_poll = 20ms;
    ASSERT_NO_FATAL_FAILURE(w.start("remediate", "schedule", &units));
    ASSERT_TRUE(eventually([&] { return asked.load() >= 3; }));
    EXPECT_EQ(w.h.engine.runs.load(), 1) << "an active unit the spec wants running is no change";
    up = false;
    ASSERT_TRUE(eventually([&] { return w.daemon->stats().turns == 2; }));
    EXPECT_EQ(w.daemon->stats().change_turns, 1u);
    int seen = asked.load();
    ASSERT_TRUE(eventually([&] { return asked.load() >= seen + 3; }));
    std::this_thread::sleep_for(500ms);  // longer than the debounce: another examination would have started
    EXPECT_EQ(w.h.engine.runs.load(), 2) << "still inactive (the repair failed): examined once, not every poll";
    up = true;  // someone starts it: as the spec wants, nothing to examine
    seen = asked.load();
    ASSERT_TRUE(eventually([&] { return asked.load() >= seen + 3; }));
    std::this_thread::sleep_for(500ms);
    EXPECT_EQ(w.h.engine.runs.load(), 2);
    w.running->stop();
}

TEST(DaemonManual, SustainOnlyChecksUntilTheControllerAsksForAConverge) {
    Watching w;
    ASSERT_NO_FATAL_FAILURE(w.start("remediate", "manual"));
    w.watcher.change("/etc/motd");
    ASSERT_TRUE(eventually([&] { return w.daemon->stats().turns == 2; }));
    w.daemon->request_run_now();  // SIGHUP: runs now, still a check
    ASSERT_TRUE(eventually([&] { return w.daemon->stats().turns == 3; }));
    {
        std::lock_guard<std::mutex> lock(w.h.source.mutex);
        w.h.source.apply_request = "req-1";
    }
    w.daemon->request_run_now();
    ASSERT_TRUE(eventually([&] { return w.daemon->stats().turns == 4; }));
    w.daemon->request_run_now();  // the same request is taken once
    ASSERT_TRUE(eventually([&] { return w.daemon->stats().turns == 5; }));
    EXPECT_EQ(w.h.engine.modes_seen(), (std::vector<TurnMode>{TurnMode::check, TurnMode::check, TurnMode::check,
                                                              TurnMode::apply, TurnMode::check}));
    ASSERT_TRUE(eventually([&] { return w.h.poster.reports().size() == 5; })) << "reports keep going";
    EXPECT_EQ(w.h.poster.reports()[3]["mode"], "apply");
    w.running->stop();
    auto state = nlohmann::json::parse(*read_file(w.h.options.state_file));
    EXPECT_EQ(state["apply_request"], "req-1");

    // A restart remembers the request it took.
    w.h.options.max_turns = 1;
    auto again = w.h.make();
    EXPECT_EQ(again->run(), 0);
    EXPECT_EQ(w.h.engine.modes_seen().back(), TurnMode::check);
}

TEST(DaemonManual, ANodeNotYetPlatformReadyConvergesAnyway) {
    Harness h;
    h.source.spec = watched_spec("remediate", "manual");
    h.source.spec["apply"]["interval_s"] = 0.02;
    h.options.max_turns = 2;
    auto daemon = h.make();
    EXPECT_EQ(daemon->run(), 0);
    EXPECT_EQ(h.engine.modes_seen(), (std::vector<TurnMode>{TurnMode::apply, TurnMode::check}));
}

}  // namespace
}  // namespace nodeform::agent::daemon
