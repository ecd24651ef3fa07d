// The lifecycle driver against a Proxmox cluster in memory (no HTTP) and a fake clock (no waiting): resume after
// a crash at every point, a failing step, retries, store errors, and time only through the clock.
#include <gtest/gtest.h>

#include <thread>

#include "fake_provider.hpp"
#include "fakes/memory_logger.hpp"
#include "lifecycle_fakes.hpp"
#include "nodeform/controller/lifecycle/reconciler.hpp"
#include "test_paths.hpp"

namespace nodeform::test {
namespace {

using std::chrono::milliseconds;
using std::chrono::minutes;
using std::chrono::seconds;

// The real SQLite store, whose puts a test can make fail.
class FlakyStore final : public lc::LifecycleStore {
  public:
    explicit FlakyStore(lc::LifecycleStore& real) : real_(real) {}
    Result<std::optional<lc::NodeRecord>> get(const std::string& identity) override { return real_.get(identity); }
    Status put(const lc::NodeRecord& record) override {
        if (fail_put && fail_put(record)) return make_error("state database: disk I/O error (disk full)");
        return real_.put(record);
    }
    Status put_many(const std::vector<lc::NodeRecord>& records) override { return real_.put_many(records); }
    Result<std::vector<lc::NodeRecord>> all() override { return real_.all(); }
    Status add_receipt(const lc::Receipt& receipt) override { return real_.add_receipt(receipt); }
    Result<std::vector<lc::Receipt>> receipts(const std::string& identity) override { return real_.receipts(identity); }
    Result<std::vector<lc::StepDurations>> step_durations(const std::vector<double>& bounds) override {
        return real_.step_durations(bounds);
    }
    Result<bool> acquire_lease(const std::string& i, const std::string& h, lc::TimePoint n,
                               std::chrono::milliseconds t) override {
        return real_.acquire_lease(i, h, n, t);
    }
    Result<bool> renew_lease(const std::string& i, const std::string& h, lc::TimePoint n,
                             std::chrono::milliseconds t) override {
        return real_.renew_lease(i, h, n, t);
    }
    Status release_lease(const std::string& i, const std::string& h) override { return real_.release_lease(i, h); }
    Result<std::optional<lc::Lease>> lease(const std::string& i) override { return real_.lease(i); }
    Result<std::optional<lc::RetryState>> retry(const std::string& i) override { return real_.retry(i); }
    Status put_retry(const std::string& i, const lc::RetryState& r) override { return real_.put_retry(i, r); }
    Status clear_retry(const std::string& i) override { return real_.clear_retry(i); }
    std::function<bool(const lc::NodeRecord&)> fail_put;

  private:
    lc::LifecycleStore& real_;
};

// One controller over the fake cloud; make() again to simulate a restart on the same database.
struct Driver {
    Driver() : site(make_site("https://pve.invalid:8006", "root@pam!nodeform", "api-secret")) {
        auto s = lc::LifecycleStore::open(dir.path() + "/nodeform.db");
        if (!s) throw std::runtime_error(s.message());
        real = std::move(*s);
        store = std::make_unique<FlakyStore>(*real);
    }

    std::unique_ptr<lc::Lifecycle> make(std::function<void(const std::string&)> crash = {},
                                        std::function<bool(const std::string&)> may_continue = {}) {
        lc::LifecycleDeps deps;
        deps.store = store.get();
        deps.providers = [this](const site::ProxmoxEndpoint&) -> Result<std::unique_ptr<pv::Provider>> {
            return std::unique_ptr<pv::Provider>(std::make_unique<FakeProvider>(cloud));
        };
        deps.issuer = &issuer;
        deps.reports = &reports;
        deps.clock = &clock;
        deps.logger = &logger;
        deps.crash_point = std::move(crash);
        deps.may_continue = std::move(may_continue);
        return std::make_unique<lc::Lifecycle>(deps, options);
    }

    std::vector<std::string> receipt_steps() {
        std::vector<std::string> steps;
        for (const auto& r : receipts())
            steps.push_back(r.step + ":" + r.outcome);
        return steps;
    }
    std::vector<lc::Receipt> receipts() {
        auto r = store->receipts("web-01");
        return r ? *r : std::vector<lc::Receipt>{};
    }
    lc::NodeRecord record() {
        auto r = store->get("web-01");
        return r && *r ? **r : lc::NodeRecord{};
    }

    TempDir dir;
    site::Site site;
    std::unique_ptr<lc::LifecycleStore> real;
    std::unique_ptr<FlakyStore> store;
    FakeCloud cloud;
    FakeIssuer issuer;
    FakeReports reports;
    FakeClock clock;
    MemoryLogger logger;
    lc::LifecycleOptions options = [] {
        lc::LifecycleOptions o;
        o.ca_fingerprint = std::string(64, 'a');
        return o;
    }();
};

const std::vector<std::string> kProvisionSteps = {"vmid_reserved", "cloned",     "configured",  "resized",
                                                  "started",       "registered", "agent_ready", "active"};

TEST(LifecycleDriver, ProvisionRunsTheTableInOrderAndWaitsOnlyOnTheClock) {
    Driver d;
    d.cloud.agent_silent_pings = 3;
    d.options.agent_poll = seconds(5);
    auto r = d.make()->create(d.site, "web-01");
    ASSERT_TRUE(r.ok) << r.message;
    EXPECT_EQ(r.state, lc::State::active);
    std::vector<std::string> want;
    for (const auto& s : kProvisionSteps)
        want.push_back(s + ":ok");
    EXPECT_EQ(d.receipt_steps(), want);
    EXPECT_EQ(d.cloud.calls["clone"], 1);
    EXPECT_EQ(d.cloud.vms.at(100).status, "running");
    EXPECT_EQ(d.cloud.vms.at(100).config.at("scsi0").find("size=20G") != std::string::npos, true);
    EXPECT_EQ(d.record().ips, std::vector<std::string>{"10.20.0.11/24"});
    EXPECT_EQ(d.receipts()[6].outputs["agent_pings"], 4);
    EXPECT_EQ(d.clock.slept(), seconds(15));  // three unanswered pings, five seconds apart, on the fake clock
    // Running it again is a no-op.
    auto again = d.make()->create(d.site, "web-01");
    EXPECT_TRUE(again.ok);
    EXPECT_EQ(d.receipts().size(), kProvisionSteps.size());
}

TEST(LifecycleDriver, ACrashAtEveryPointResumesWhereItStoppedWithOneClone) {
    std::vector<std::string> points;
    for (const auto& step : kProvisionSteps) {
        points.push_back("before:" + step);
        points.push_back("after:" + step);
    }
    for (const char* step : {"cloned", "configured", "resized", "started"})
        points.push_back(std::string("called:") + step);
    for (const auto& point : points) {
        SCOPED_TRACE(point);
        Driver d;
        EXPECT_THROW((void)
                         d.make([&](const std::string& p) {
                              if (p == point) throw SimulatedCrash{p};
                          })->create(d.site, "web-01"),
                     SimulatedCrash);
        auto done_before = d.receipts().size();
        auto r = d.make()->create(d.site, "web-01");  // the restarted controller
        ASSERT_TRUE(r.ok) << r.message;
        EXPECT_EQ(d.cloud.calls["clone"], 1);
        EXPECT_EQ(d.cloud.vm_count(), 1);
        EXPECT_EQ(d.cloud.vms.at(100).status, "running");
        // Every step has an ok or skipped receipt, and the resumed run did not redo a recorded step.
        auto receipts = d.receipts();
        for (std::size_t i = done_before; i < receipts.size(); ++i) {
            for (std::size_t j = 0; j < done_before; ++j)
                EXPECT_NE(receipts[i].step, receipts[j].step) << "step run twice";
        }
        std::set<std::string> steps;
        for (const auto& x : receipts) {
            EXPECT_NE(x.outcome, "failed") << x.step;
            steps.insert(x.step);
        }
        EXPECT_EQ(steps.size(), kProvisionSteps.size());
    }
}

TEST(LifecycleDriver, ACrashAtEveryDecommissionPointResumes) {
    for (const char* step : {"backed_up", "stopped", "destroyed", "revoked"}) {
        for (const char* when : {"before:", "after:"}) {
            const std::string point = std::string(when) + step;
            SCOPED_TRACE(point);
            Driver d;
            d.site.nodes["web-01"].decommission = site::DecommissionPolicy::requires_final_backup;
            ASSERT_TRUE(d.make()->create(d.site, "web-01").ok);
            EXPECT_THROW((void)
                             d.make([&](const std::string& p) {
                                  if (p == point) throw SimulatedCrash{p};
                              })->destroy(d.site, "web-01"),
                         SimulatedCrash);
            auto r = d.make()->destroy(d.site, "web-01");
            ASSERT_TRUE(r.ok) << r.message;
            EXPECT_EQ(r.state, lc::State::decommissioned);
            EXPECT_EQ(d.cloud.vm_count(), 0);
            EXPECT_EQ(d.cloud.calls["backup"], 1);
            EXPECT_TRUE(d.issuer.revoked.count("web-01"));
            EXPECT_EQ(d.record().state, lc::State::decommissioned);
        }
    }
}

TEST(LifecycleDriver, AFailingStepRecordsAFailedReceiptAndStops) {
    Driver d;
    d.cloud.task_failures["start"] = 1;
    auto r = d.make()->create(d.site, "web-01");
    EXPECT_FALSE(r.ok);
    EXPECT_EQ(r.message, "web-01: started failed: start task ended: start failed: no space left on device");
    auto receipts = d.receipts();
    ASSERT_EQ(receipts.size(), 5u);  // nothing after the failed step
    EXPECT_EQ(receipts.back().step, "started");
    EXPECT_EQ(receipts.back().outcome, "failed");
    EXPECT_EQ(receipts.back().state_after, "failed");
    EXPECT_EQ(receipts.back().outputs["task_log"][0], "start failed: no space left on device");
    EXPECT_EQ(d.cloud.calls["agent_ping"], 0);
    auto rec = d.record();
    EXPECT_EQ(rec.state, lc::State::failed);
    EXPECT_EQ(rec.failed_step, "started");
    EXPECT_EQ(rec.step, "resized");
    EXPECT_EQ(d.cloud.vm_count(), 1);  // it may have booted: no rollback after resize

    auto again = d.make()->create(d.site, "web-01");  // resumes at the failed step
    ASSERT_TRUE(again.ok) << again.message;
    EXPECT_EQ(d.receipts()[5].step, "started");
    EXPECT_EQ(d.cloud.calls["clone"], 1);
}

TEST(LifecycleDriver, AFailedCloneIsRolledBack) {
    Driver d;
    d.cloud.task_failures["clone"] = 1;
    auto r = d.make()->create(d.site, "web-01");
    EXPECT_FALSE(r.ok);
    EXPECT_NE(r.message.find("clone task ended: clone failed"), std::string::npos) << r.message;
    EXPECT_NE(r.message.find("(rolled back: no VM left)"), std::string::npos) << r.message;
    EXPECT_EQ(d.cloud.vm_count(), 0);
    EXPECT_EQ(d.receipts().back().step, "rollback");
    EXPECT_EQ(d.record().failed_step, "cloned");
    EXPECT_TRUE(d.make()->create(d.site, "web-01").ok);
}

TEST(LifecycleDriver, RetriesALockedCloneAfterWaitingOnTheClock) {
    Driver d;
    d.options.wait_poll = seconds(7);
    d.cloud.errors["clone"] = {pv::FailureKind::locked, pv::FailureKind::locked};
    auto r = d.make()->create(d.site, "web-01");
    ASSERT_TRUE(r.ok) << r.message;
    EXPECT_EQ(d.cloud.calls["clone"], 3);
    EXPECT_EQ(d.cloud.vm_count(), 1);
    EXPECT_EQ(d.clock.slept(), seconds(14));
    auto cloned = d.receipts()[1];
    ASSERT_EQ(cloned.step, "cloned");  // one receipt holds every attempt
    EXPECT_EQ(cloned.outcome, "ok");
    int clone_calls = 0;
    for (const auto& c : cloned.calls)
        clone_calls += c["path"].get<std::string>().find("/clone") != std::string::npos ? 1 : 0;
    EXPECT_EQ(clone_calls, 3);
}

// qemu-server forks the clone worker before taking the locks: the lock timeout is the task's exit status.
TEST(LifecycleDriver, RetriesACloneTaskThatEndedInALockTimeout) {
    Driver d;
    d.options.wait_poll = seconds(7);
    d.cloud.clone_task_lock_timeouts = 2;
    auto r = d.make()->create(d.site, "web-01");
    ASSERT_TRUE(r.ok) << r.message;
    EXPECT_EQ(d.cloud.calls["clone"], 3);
    EXPECT_EQ(d.cloud.vm_count(), 1);
    EXPECT_EQ(d.clock.slept(), seconds(14));
}

TEST(LifecycleDriver, AStoppedVmEndsTheAgentWaitAtOnce) {
    Driver d;
    d.cloud.agent_silent_pings = -1;
    d.cloud.errors["agent_ping"] = {pv::FailureKind::agent_not_running, pv::FailureKind::vm_not_running};
    d.options.agent_timeout = minutes(10);
    d.options.agent_poll = seconds(1);
    auto r = d.make()->create(d.site, "web-01");
    EXPECT_FALSE(r.ok);
    EXPECT_NE(r.message.find("agent_ready failed: VM 100 stopped while waiting for its guest agent"), std::string::npos)
        << r.message;
    EXPECT_EQ(d.cloud.calls["agent_ping"], 2);
    EXPECT_EQ(d.clock.slept(), seconds(1));  // one poll interval, not the agent timeout
}

TEST(LifecycleDriver, GivesUpAfterTheStepsAttempts) {
    Driver d;
    d.cloud.errors["clone"] = {4, pv::FailureKind::locked};
    auto r = d.make()->create(d.site, "web-01");
    EXPECT_FALSE(r.ok);
    EXPECT_NE(r.message.find("web-01: cloned failed: clone refused by the fake cloud"), std::string::npos) << r.message;
    EXPECT_EQ(d.cloud.calls["clone"], 4);
    EXPECT_EQ(d.cloud.vm_count(), 0);
}

TEST(LifecycleDriver, AConfigurationConflictIsRetriedWithAFreshToken) {
    Driver d;
    d.cloud.errors["configure"] = {pv::FailureKind::conflict};
    auto r = d.make()->create(d.site, "web-01");
    ASSERT_TRUE(r.ok) << r.message;
    EXPECT_EQ(d.cloud.calls["configure"], 2);
    EXPECT_EQ(d.issuer.issued.size(), 2u);
    EXPECT_EQ(d.clock.slept(), milliseconds(0));  // a conflict is retried at once
}

TEST(LifecycleDriver, AStoreErrorFailsTheRunAndNamesTheNode) {
    Driver d;
    d.store->fail_put = [](const lc::NodeRecord& r) { return r.step == "resized"; };
    auto r = d.make()->create(d.site, "web-01");
    EXPECT_FALSE(r.ok);
    EXPECT_EQ(r.message.rfind("web-01: resized failed: ", 0), 0u) << r.message;
    EXPECT_NE(r.message.find("the lifecycle record was not saved: state database: disk I/O error (disk full)"),
              std::string::npos)
        << r.message;
    EXPECT_EQ(d.cloud.calls["start"], 0);  // the run stopped there
}

TEST(LifecycleDriver, AnUnsavedCloneTaskIdFailsTheClone) {
    Driver d;
    d.store->fail_put = [](const lc::NodeRecord& r) { return !r.pending_upid.empty(); };
    auto r = d.make()->create(d.site, "web-01");
    EXPECT_FALSE(r.ok);
    EXPECT_EQ(r.message.rfind("web-01: cloned failed: ", 0), 0u) << r.message;
    EXPECT_NE(r.message.find("disk full"), std::string::npos) << r.message;
    EXPECT_EQ(d.cloud.calls["configure"], 0);
    EXPECT_EQ(d.cloud.vm_count(), 0);  // never booted: rolled back
}

TEST(LifecycleDriver, AStoreErrorAfterDecommissionIsReported) {
    Driver d;
    ASSERT_TRUE(d.make()->create(d.site, "web-01").ok);
    d.store->fail_put = [](const lc::NodeRecord& r) { return r.state == lc::State::decommissioned && r.ips.empty(); };
    auto r = d.make()->destroy(d.site, "web-01");
    EXPECT_FALSE(r.ok);
    EXPECT_NE(r.message.find("web-01: decommissioned, but the lifecycle record was not saved"), std::string::npos)
        << r.message;
}

TEST(LifecycleDriver, TheAgentTimeoutPassesOnTheClockNotTheWall) {
    Driver d;
    d.cloud.agent_silent_pings = -1;
    d.options.agent_timeout = minutes(10);
    d.options.agent_poll = seconds(1);
    auto r = d.make()->create(d.site, "web-01");
    EXPECT_FALSE(r.ok);
    EXPECT_NE(r.message.find("agent_ready failed: the QEMU guest agent did not answer within 600 s"), std::string::npos)
        << r.message;
    EXPECT_GE(d.clock.slept(), minutes(10));
    EXPECT_LE(d.clock.slept(), minutes(10) + seconds(1));
}

TEST(LifecycleDriver, ValidatingEndsTheRunWithoutAReceiptUntilTheReportArrives) {
    Driver d;
    d.reports.all_ready = false;
    d.options.report_timeout = minutes(30);
    auto r = d.make()->create(d.site, "web-01");
    EXPECT_FALSE(r.ok);
    EXPECT_EQ(r.state, lc::State::validating);
    EXPECT_EQ(r.message,
              "web-01: still validating (no report from the node yet); re-run 'node create web-01' to keep waiting");
    EXPECT_GE(d.clock.slept(), minutes(30));
    EXPECT_EQ(d.receipts().back().step, "agent_ready");
    EXPECT_EQ(d.record().state, lc::State::validating);
    d.reports.ready.insert("web-01");
    auto again = d.make()->create(d.site, "web-01");
    ASSERT_TRUE(again.ok) << again.message;
    EXPECT_EQ(d.receipts().back().step, "active");
}

// The reconciler's unit of work: a queued create advances from the record; a lost lease stops the run before
// the next step with nothing written; a queued destroy decommissions.
TEST(LifecycleDriver, QueuedWorkAdvancesAndALostLeaseStopsBeforeTheNextStep) {
    Driver d;
    ASSERT_TRUE(d.make()->queue_create("web-01").ok());
    EXPECT_EQ(d.record().state, lc::State::planned);
    EXPECT_FALSE(d.make()->queue_destroy("web-01").ok());  // never provisioned: nothing to destroy
    int asked = 0;
    auto stopped = d.make({}, [&](const std::string&) { return ++asked <= 2; })->advance(d.site, "web-01");
    EXPECT_FALSE(stopped.ok);
    EXPECT_EQ(stopped.message, "web-01: stopped before configured: another controller took the lease over");
    EXPECT_EQ(d.receipt_steps(), (std::vector<std::string>{"vmid_reserved:ok", "cloned:ok"}));
    EXPECT_EQ(d.record().step, "cloned");
    auto resumed = d.make()->advance(d.site, "web-01");
    ASSERT_TRUE(resumed.ok) << resumed.message;
    EXPECT_EQ(d.record().state, lc::State::active);
    EXPECT_EQ(d.cloud.calls["clone"], 1);

    ASSERT_TRUE(d.make()->queue_destroy("web-01").ok());
    EXPECT_EQ(d.record().state, lc::State::decommissioning);
    EXPECT_FALSE(d.make()->queue_create("web-01").ok());  // being decommissioned
    auto destroyed = d.make()->advance(d.site, "web-01");
    ASSERT_TRUE(destroyed.ok) << destroyed.message;
    EXPECT_EQ(d.record().state, lc::State::decommissioned);
    ASSERT_TRUE(d.make()->queue_create("web-01").ok());  // provisioned again from scratch
    EXPECT_EQ(d.record().state, lc::State::planned);
    EXPECT_EQ(d.record().step, "");
}

// A clock the test moves by hand; sleeps (the reconciler's lease heartbeats) pass in real time without moving it.
class HandClock final : public Clock {
  public:
    std::chrono::system_clock::time_point now() const override {
        return std::chrono::system_clock::time_point(std::chrono::seconds(1795000000)) + moved();
    }
    std::chrono::steady_clock::time_point steady_now() const override {
        return std::chrono::steady_clock::time_point(std::chrono::hours(1)) + moved();
    }
    void sleep_for(milliseconds d) const override { std::this_thread::sleep_for(std::min(d, milliseconds(1))); }
    void advance(milliseconds d) { moved_ms_ += d.count(); }
    milliseconds moved() const { return milliseconds(moved_ms_.load()); }

  private:
    std::atomic<long long> moved_ms_{0};
};

// A failed node's retry count lives in the store: each pass below is a fresh reconciler (a restarted controller,
// or another one), and still the retries follow one backoff (1, then 2 minutes) and stop after `retries`;
// queueing the node again starts them over.
TEST(LifecycleDriver, RestartedReconcilersContinueOneRetryBackoffFromTheStore) {
    Driver d;
    d.cloud.task_failures["start"] = 100;
    HandClock clock;
    auto site = std::make_shared<const site::Site>(d.site);
    auto lifecycle = d.make();
    lc::ReconcilerOptions o;
    o.retries = 3;
    o.retry_backoff = minutes(1);
    int controller = 0;
    auto pass = [&] {  // one scan by a new reconciler, its work waited for
        o.holder = "ctl-" + std::to_string(++controller) + ":1:aa";
        lc::Reconciler r(
            *lifecycle, *d.store, clock, d.logger, [&] { return site; }, o);
        r.tick();
        r.stop();
    };
    auto failures = [&] {
        auto retry = d.store->retry("web-01");
        EXPECT_TRUE(retry.ok());
        return retry.ok() && *retry ? (*retry)->failures : 0;
    };
    ASSERT_TRUE(lifecycle->queue_create("web-01").ok());
    pass();
    EXPECT_EQ(d.record().state, lc::State::failed);
    EXPECT_EQ(d.cloud.calls["start"], 1);
    EXPECT_EQ(failures(), 1);
    EXPECT_EQ((*d.store->retry("web-01"))->next_at, clock.now() + minutes(1));

    pass();  // restarted before the backoff passed: no retry yet (an in-memory count would retry at once)
    EXPECT_EQ(d.cloud.calls["start"], 1);
    clock.advance(minutes(1));
    pass();
    EXPECT_EQ(d.cloud.calls["start"], 2);
    EXPECT_EQ(failures(), 2);
    clock.advance(minutes(1));
    pass();  // the second delay is twice the first
    EXPECT_EQ(d.cloud.calls["start"], 2);
    clock.advance(minutes(1));
    pass();
    EXPECT_EQ(d.cloud.calls["start"], 3);
    EXPECT_EQ(failures(), 3);
    clock.advance(std::chrono::hours(1));
    pass();  // retries exhausted
    EXPECT_EQ(d.cloud.calls["start"], 3);

    ASSERT_TRUE(lifecycle->queue_create("web-01").ok());  // queued again: the count starts over
    EXPECT_EQ(failures(), 0);
    d.cloud.task_failures["start"] = 0;
    pass();
    EXPECT_EQ(d.cloud.calls["start"], 4);
    EXPECT_NE(d.record().state, lc::State::failed);
}

TEST(LifecycleDriver, TheHostnameGateUsesTheSitesNamingPolicy) {
    Driver d;
    d.site.info.naming.max_length = 5;
    auto r = d.make()->create(d.site, "web-01");
    EXPECT_FALSE(r.ok);
    EXPECT_NE(r.message.find("hostname: 'web-01' is longer than 5 characters (naming.max_length)"), std::string::npos)
        << r.message;
    EXPECT_EQ(d.record().failed_step, "gates");
    EXPECT_EQ(d.record().vmid, 0);
    EXPECT_EQ(d.cloud.calls["clone"], 0);
}

}  // namespace
}  // namespace nodeform::test
