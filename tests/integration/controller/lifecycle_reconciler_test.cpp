// `serve` runs the lifecycle reconciler (docs/controller.md): real nodeform-controller processes against the
// Proxmox stand-in. A queued create reaches active after the platform-ready report with only `serve` running
// (SQLite); on one PostgreSQL, the lease holder is kill -9-ed mid-clone and another controller takes the lease
// over after its expiry and finishes with exactly one VM; and several controllers never run a node's step twice.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>

#include "controller_process.hpp"
#include "eventually.hpp"
#include "nodeform/controller/lifecycle/lifecycle.hpp"
#include "nodeform/controller/lifecycle/reconciler.hpp"
#include "postgres_cluster.hpp"
#include "pve_standin.hpp"
#include "test_paths.hpp"

namespace nodeform::controller {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr std::int64_t kVmid = 1011;  // web-01's VMID in examples/site

test::PveStandinOptions example_standin(milliseconds clone_ms) {
    test::PveStandinOptions o;
    o.token_id = "nodeform@pve!controller";
    o.token_secret = "00000000-fake-4000-8000-000000000000";  // examples/site/secrets.yaml
    o.nodes = {"pve1", "pve2", "pve3"};
    o.storages = {"local", "local-lvm", "ceph-vm"};
    o.bridges = {"vmbr0", "vmbr1"};
    o.default_task_ms = milliseconds(20);
    o.task_ms["qmclone"] = clone_ms;
    o.boot_ms = milliseconds(50);
    return o;
}

class Reconciler : public ::testing::Test {
  protected:
    void SetUp() override {
        site_ = dir_.path() + "/site";
        fs::copy(test::source_dir() + "/examples/site", site_, fs::copy_options::recursive);
    }
    void start_standin(milliseconds clone_ms) {
        pve_ = std::make_unique<test::PveStandin>(example_standin(clone_ms));
        pve_->add_template("pve1", 9000, "debian12-tmpl");
    }
    // serve with a short scan interval and lease; `store` empty: SQLite in STATE.
    std::unique_ptr<test::ControllerProcess> serve(const std::string& state, const std::string& store = "") {
        std::vector<std::string> extra = {"--endpoint",
                                          "pve-lab=" + pve_->base_url(),
                                          "--lifecycle-interval",
                                          "200ms",
                                          "--lease-ttl",
                                          "2s",
                                          "--lifecycle-retry-backoff",
                                          "200ms",
                                          "--ca-fingerprint",
                                          std::string(64, 'a')};
        if (!store.empty()) extra.insert(extra.end(), {"--store", store});
        return std::make_unique<test::ControllerProcess>(site_, state, extra);
    }
    // One controller per state directory on the database `url`, started, then waited for until one serves.
    void serve_all(const std::string& url, std::initializer_list<const char*> states,
                   std::vector<std::unique_ptr<test::ControllerProcess>>& controllers) {
        for (const char* name : states) {
            controllers.push_back(serve(dir_.path() + name, url));
            ASSERT_GT(controllers.back()->port(), 0);
        }
        auto store = lifecycle::open_postgres_lifecycle_store(url, "");
        ASSERT_TRUE(store.ok()) << store.message();
        SystemClock clock;
        ASSERT_TRUE(test::eventually([&] {
            auto serving = lifecycle::reconciler_serving(**store, clock);
            return serving && *serving;
        }));
    }
    // `node ARGS… --site --state --ca-fingerprint --endpoint [--store]` as run_controller_cli takes it.
    std::vector<std::string> node_args(std::vector<std::string> args, const std::string& state,
                                       const std::string& store = "") {
        args.insert(args.begin(), "node");
        args.insert(args.end(), {"--site", site_, "--state", state, "--ca-fingerprint", std::string(64, 'a'),
                                 "--endpoint", "pve-lab=" + pve_->base_url()});
        if (!store.empty()) args.insert(args.end(), {"--store", store});
        return args;
    }
    test::CliResult node(std::vector<std::string> args, const std::string& state, const std::string& store = "") {
        return test::run_controller_cli(node_args(std::move(args), state, store));
    }
    // Waits until a reconciler announces itself on the SQLite state (until then the CLI does the work itself).
    bool reconciler_live(const std::string& state) {
        return test::eventually([&] {
            auto store = lifecycle::LifecycleStore::open(state + "/nodeform.db");
            if (!store) return false;
            SystemClock clock;
            auto serving = lifecycle::reconciler_serving(**store, clock);
            return serving && *serving;
        });
    }
    // The node's lifecycle record as `node show --json` prints it.
    json lifecycle(const std::string& identity, const std::string& state, const std::string& store = "") {
        std::vector<std::string> args = {"node", "show", identity, "--json", "--site", site_, "--state", state};
        if (!store.empty()) args.insert(args.end(), {"--store", store});
        auto r = test::run_controller_cli(args);
        json shown = json::parse(r.out, nullptr, false);
        json record = shown.is_object() ? shown.value("lifecycle", json()) : json();
        return record.is_object() ? record : json::object();  // none yet: no state
    }
    // Enrolls with the seed's token through `port` and sends a platform-ready report.
    void report_ready(int port, const std::string& identity) {
        httplib::Client c("127.0.0.1", port);
        const std::string token = test::seed_token_in_smbios1(pve_->vm_config(kVmid));
        ASSERT_FALSE(token.empty()) << pve_->vm_config(kVmid).dump();
        auto enrolled = c.Post("/v1/enroll", json{{"identity", identity}, {"token", token}}.dump(), "application/json");
        ASSERT_TRUE(enrolled);
        ASSERT_EQ(enrolled->status, 200) << enrolled->body;
        const std::string credential = json::parse(enrolled->body).value("credential", "");
        json report = test::minimal_report(identity, "r-ready");
        report["platform_ready"] = true;
        report["phase"] = "platform-ready";
        auto posted = c.Post("/v1/nodes/" + identity + "/reports", {{"Authorization", "Bearer " + credential}},
                             report.dump(), "application/json");
        ASSERT_TRUE(posted);
        ASSERT_EQ(posted->status, 201) << posted->body;
    }
    // How often the log holds a request line starting with `prefix`.
    int requests(const std::string& prefix) const {
        auto log = pve_->request_log();
        return static_cast<int>(
            std::count_if(log.begin(), log.end(), [&](const std::string& l) { return l.rfind(prefix, 0) == 0; }));
    }

    test::TempDir dir_;
    std::string site_;
    std::unique_ptr<test::PveStandin> pve_;
};

// (a) With only `serve` running (SQLite): create is queued (exit 0), the node is built, waits in validating,
// and turns active once its platform-ready report arrives; destroy is queued and done the same way.
TEST_F(Reconciler, AQueuedCreateReachesActiveWithOnlyServeRunning) {
    start_standin(milliseconds(100));
    const std::string state = dir_.path() + "/state";
    auto controller = serve(state);
    ASSERT_GT(controller->port(), 0);
    ASSERT_TRUE(reconciler_live(state));
    auto queued = node({"create", "web-01"}, state);
    EXPECT_EQ(queued.exit_code, 0) << queued.out << queued.err;
    EXPECT_NE(queued.out.find("queued  web-01"), std::string::npos) << queued.out;
    EXPECT_NE(queued.out.find("--wait"), std::string::npos) << queued.out;

    ASSERT_TRUE(test::eventually([&] { return lifecycle("web-01", state).value("state", "") == "validating"; },
                                 seconds(30), milliseconds(100)))
        << lifecycle("web-01", state).dump();
    EXPECT_EQ(pve_->clone_requests(kVmid), 1);
    report_ready(controller->port(), "web-01");
    auto waited = node({"create", "web-01", "--wait"}, state);  // re-queueing a validating node follows it
    EXPECT_EQ(waited.exit_code, 0) << waited.out << waited.err;
    EXPECT_NE(waited.out.find("ok      web-01: active"), std::string::npos) << waited.out;
    EXPECT_EQ(lifecycle("web-01", state).value("state", ""), "active");
    EXPECT_EQ(pve_->clone_requests(kVmid), 1);

    auto destroyed = node({"destroy", "web-01", "--wait"}, state);
    EXPECT_EQ(destroyed.exit_code, 0) << destroyed.out << destroyed.err;
    EXPECT_NE(destroyed.out.find("decommissioned"), std::string::npos) << destroyed.out;
    EXPECT_EQ(pve_->vm_count(), 0);
    EXPECT_EQ(controller->terminate(), 0);
}

// Without a serving controller (or with --here) create runs in this process, as before.
TEST_F(Reconciler, WithNoControllerServingCreateRunsHere) {
    start_standin(milliseconds(50));
    const std::string state = dir_.path() + "/state";
    auto here = node({"create", "web-01", "--report-timeout", "0s"}, state);
    EXPECT_EQ(here.exit_code, 1) << here.out << here.err;  // no agent: still validating
    EXPECT_NE(here.out.find("agent_ready"), std::string::npos) << here.out;
    EXPECT_EQ(here.out.find("queued"), std::string::npos) << here.out;
    EXPECT_EQ(pve_->vm_count(), 1);
}

// The example: a `node create` running the work itself (--here) is killed -9 while the node waits in
// validating. The serving controller on the same host releases the dead process's lease at once (not after its
// 60 s expiry) and turns the node active when the platform-ready report arrives.
TEST_F(Reconciler, ANodeLeftValidatingByAKilledCreateTurnsActiveUnderServe) {
    start_standin(milliseconds(50));
    const std::string state = dir_.path() + "/state";
    auto controller = serve(state);
    ASSERT_GT(controller->port(), 0);
    ASSERT_TRUE(reconciler_live(state));
    auto args = node_args({"create", "web-01", "--here"}, state);
    args.insert(args.begin(), test::binary_dir() + "/controller/nodeform-controller");
    pid_t create = ::fork();
    if (create == 0) {
        int null = ::open("/dev/null", O_WRONLY);
        ::dup2(null, STDOUT_FILENO);
        ::dup2(null, STDERR_FILENO);
        test::exec_argv(args);
    }
    ASSERT_GT(create, 0);
    bool validating = test::eventually([&] { return lifecycle("web-01", state).value("state", "") == "validating"; },
                                       seconds(30), milliseconds(100));
    auto store = lifecycle::LifecycleStore::open(state + "/nodeform.db");
    ASSERT_TRUE(store.ok()) << store.message();
    auto lease = (*store)->lease("web-01");
    ::kill(create, SIGKILL);
    ::waitpid(create, nullptr, 0);
    ASSERT_TRUE(validating) << lifecycle("web-01", state).dump();
    ASSERT_TRUE(lease.ok() && *lease) << "no lease held by the create process";
    EXPECT_EQ((*lease)->holder, lifecycle::lease_holder_name("cli").substr(0, (*lease)->holder.find(':') + 1) +
                                    std::to_string(create) + ":cli");

    report_ready(controller->port(), "web-01");
    EXPECT_TRUE(test::eventually([&] { return lifecycle("web-01", state).value("state", "") == "active"; }, seconds(20),
                                 milliseconds(200)))
        << lifecycle("web-01", state).dump();
    EXPECT_EQ(pve_->clone_requests(kVmid), 1);
    auto receipts = (*store)->receipts("web-01");
    ASSERT_TRUE(receipts.ok());
    ASSERT_FALSE(receipts->empty());
    EXPECT_EQ(receipts->back().step, "active");
    EXPECT_EQ(controller->terminate(), 0);
}

// The reconciler works on the site the server serves, not on the files: an edit that breaks the site on disk (refused,
// the last good site kept serving) does not stop a validating node from turning active.
TEST_F(Reconciler, ABrokenSiteOnDiskDoesNotStopAValidatingNode) {
    start_standin(milliseconds(50));
    const std::string state = dir_.path() + "/state";
    auto controller = serve(state);
    ASSERT_GT(controller->port(), 0);
    ASSERT_TRUE(reconciler_live(state));
    auto queued = node({"create", "web-01"}, state);
    ASSERT_EQ(queued.exit_code, 0) << queued.out << queued.err;
    ASSERT_TRUE(test::eventually([&] { return lifecycle("web-01", state).value("state", "") == "validating"; },
                                 seconds(30), milliseconds(100)));
    std::ofstream(site_ + "/site.yaml", std::ios::app) << "\n: not yaml [\n";
    report_ready(controller->port(), "web-01");
    auto store = lifecycle::LifecycleStore::open(state + "/nodeform.db");  // (node show reads the broken site)
    ASSERT_TRUE(store.ok()) << store.message();
    auto active = [&] {
        auto rec = (*store)->get("web-01");
        return rec.ok() && *rec && (*rec)->state == lifecycle::State::active;
    };
    EXPECT_TRUE(test::eventually(active, seconds(20), milliseconds(200)));
    EXPECT_EQ(controller->terminate(), 0);
}

// (b) Two controllers on one PostgreSQL: the one holding web-01's lease is kill -9-ed while the stand-in's
// clone task runs; the other takes the lease over once it expired, re-attaches to the clone and finishes.
TEST_F(Reconciler, BTheLeaseOfAKilledControllerIsTakenOverAndExactlyOneVmExists) {
    const std::string url = test::PostgresCluster::shared().create_database();
    ASSERT_FALSE(url.empty()) << test::PostgresCluster::shared().error();
    start_standin(milliseconds(3000));
    std::vector<std::unique_ptr<test::ControllerProcess>> controllers;
    ASSERT_NO_FATAL_FAILURE(serve_all(url, {"/state-a", "/state-b"}, controllers));
    auto store = lifecycle::open_postgres_lifecycle_store(url, "");
    ASSERT_TRUE(store.ok()) << store.message();
    auto queued = node({"create", "web-01"}, dir_.path() + "/state-a", url);
    ASSERT_EQ(queued.exit_code, 0) << queued.out << queued.err;

    // The clone is running on Proxmox: find the holder by its pid and kill it.
    ASSERT_TRUE(test::eventually([&] { return pve_->clone_requests(kVmid) == 1; }, seconds(20)));
    auto lease = (*store)->lease("web-01");
    ASSERT_TRUE(lease.ok() && *lease) << "no lease on web-01 while its clone runs";
    const std::string holder = (**lease).holder;
    std::size_t victim = controllers.size();
    for (std::size_t i = 0; i < controllers.size(); ++i) {
        if (holder.find(":" + std::to_string(controllers[i]->pid()) + ":") != std::string::npos) victim = i;
    }
    ASSERT_LT(victim, controllers.size()) << holder;
    controllers[victim]->kill9();

    ASSERT_TRUE(test::eventually(
        [&] { return lifecycle("web-01", dir_.path() + "/state-a", url).value("state", "") == "validating"; },
        seconds(40), milliseconds(200)))
        << lifecycle("web-01", dir_.path() + "/state-a", url).dump();
    auto after = (*store)->lease("web-01");
    EXPECT_TRUE(after.ok());
    EXPECT_EQ(pve_->clone_requests(kVmid), 1);
    EXPECT_EQ(pve_->vm_count(), 1);
    EXPECT_TRUE(pve_->vm_exists(kVmid));
    EXPECT_EQ(pve_->vm_status(kVmid), "running");
    auto receipts = (*store)->receipts("web-01");
    ASSERT_TRUE(receipts.ok());
    int cloned = 0;
    for (const auto& r : *receipts)
        cloned += r.step == "cloned";
    EXPECT_EQ(cloned, 1);  // the taker-over's: "already exists (cloned)", re-attached to the first one's clone
}

// (c) Three controllers on one PostgreSQL and two queued nodes: every step's Proxmox call is made once and every
// step has one receipt — no node's step ran on two controllers.
TEST_F(Reconciler, CThreeControllersNeverRunANodesStepTwice) {
    const std::string url = test::PostgresCluster::shared().create_database();
    ASSERT_FALSE(url.empty()) << test::PostgresCluster::shared().error();
    start_standin(milliseconds(500));
    std::vector<std::unique_ptr<test::ControllerProcess>> controllers;
    ASSERT_NO_FATAL_FAILURE(serve_all(url, {"/state-a", "/state-b", "/state-c"}, controllers));
    auto store = lifecycle::open_postgres_lifecycle_store(url, "");
    ASSERT_TRUE(store.ok()) << store.message();
    auto queued = node({"create", "web-01", "demo-01"}, dir_.path() + "/state-b", url);
    ASSERT_EQ(queued.exit_code, 0) << queued.out << queued.err;
    const std::string state = dir_.path() + "/state-c";
    ASSERT_TRUE(test::eventually(
        [&] {
            return lifecycle("web-01", state, url).value("state", "") == "validating" &&
                   lifecycle("demo-01", state, url).value("state", "") == "validating";
        },
        seconds(40), milliseconds(200)));
    EXPECT_EQ(pve_->vm_count(), 2);
    int clones = 0, starts = 0;
    for (const auto& line : pve_->request_log()) {
        clones += line.rfind("POST", 0) == 0 && line.find("/clone") != std::string::npos;
        starts += line.rfind("POST", 0) == 0 && line.find("/status/start") != std::string::npos;
    }
    EXPECT_EQ(clones, 2);
    EXPECT_EQ(starts, 2);
    for (const char* identity : {"web-01", "demo-01"}) {
        auto receipts = (*store)->receipts(identity);
        ASSERT_TRUE(receipts.ok());
        std::map<std::string, int> per_step;
        for (const auto& r : *receipts)
            ++per_step[r.step];
        for (const auto& [step, n] : per_step)
            EXPECT_EQ(n, 1) << identity << " " << step;
        EXPECT_EQ(per_step.count("agent_ready"), 1u) << identity;
    }
}

}  // namespace
}  // namespace nodeform::controller
