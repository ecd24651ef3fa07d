// Services against a real systemd: a copy of the cached Debian root booted with systemd-nspawn --boot,
// the real nodeform-agent run inside the container's namespaces (nsenter -a; the host's build and
// libraries bind-mounted read-only), every state asserted with the container's own systemctl.
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <set>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "nodeform/atomic_file.hpp"
#include "real_systems.hpp"
#include "test_paths.hpp"

namespace nodeform::agent {
namespace {

namespace fs = std::filesystem;
using test::real::CommandRun;

// Where the container sees the host's libraries and the agent binary (nspawn --bind-ro).
const std::string kHostLib = "/opt/nodeform-host/lib";
const std::string kHostAgent = "/opt/nodeform-host/nodeform-agent";

class ServicesNspawnTest : public ::testing::Test {
  protected:
    void SetUp() override {
        if (::geteuid() != 0) GTEST_SKIP() << "needs root (systemd-nspawn)";
        if (!test::real::have_program("systemd-nspawn") || !test::real::have_program("nsenter"))
            GTEST_SKIP() << "systemd-nspawn or nsenter missing: scripts/install-deps.sh test";
        if (!fs::exists("/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"))
            GTEST_SKIP() << "the agent is run with the host's x86_64 loader and libraries; not found here";
        const std::string source = test::real::cached_rootfs();
        if (source.empty())
            GTEST_SKIP() << "no cached Debian root: run scripts/test-setup.sh first (or set NODEFORM_TEST_ROOTFS)";
        root_ = tmp_.path() + "/root";
        auto copy = test::real::run({"cp", "-a", "--reflink=auto", source, root_});
        ASSERT_EQ(copy.exit_code, 0) << copy.err;
        // A service the spec wants disabled and stopped: enabled (and so running after boot) beforehand.
        ASSERT_TRUE(write_file_atomic(root_ + "/etc/systemd/system/nf-legacy.service",
                                      "[Unit]\nDescription=nodeform test: legacy\n[Service]\nExecStart=/bin/sleep "
                                      "infinity\n[Install]\nWantedBy=multi-user.target\n",
                                      {0644, false})
                        .ok());
        fs::create_directories(root_ + "/etc/systemd/system/multi-user.target.wants");
        fs::create_symlink("/etc/systemd/system/nf-legacy.service",
                           root_ + "/etc/systemd/system/multi-user.target.wants/nf-legacy.service");

        prepare_root();
        if (HasFatalFailure() || IsSkipped()) return;
        // No systemd and no D-Bus on the host: --register=no --keep-unit (docs/testing.md).
        std::vector<std::string> nspawn = {"systemd-nspawn",
                                           "-D",
                                           root_,
                                           "--boot",
                                           "--console=passive",
                                           "--register=no",
                                           "--keep-unit",
                                           "--machine=nf-svc-" + std::to_string(::getpid()),
                                           "--bind-ro=/usr/lib/x86_64-linux-gnu:" + kHostLib,
                                           "--bind-ro=" + test::binary_dir() + "/agent/nodeform-agent:" + kHostAgent};
        if (private_network_) nspawn.push_back("--private-network");
        nspawn.insert(nspawn.end(), extra_nspawn_.begin(), extra_nspawn_.end());
        nspawn_ = std::make_unique<test::real::BackgroundProcess>(nspawn, tmp_.path() + "/nspawn.log");
        ASSERT_NE(nspawn_->pid(), 0) << "cannot start systemd-nspawn";
        auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
        while (init_ == 0 && nspawn_->running() && std::chrono::steady_clock::now() < deadline) {
            pid_t child = test::real::child_of(nspawn_->pid());
            if (child != 0 && test::real::run({"cat", "/proc/" + std::to_string(child) + "/comm"}).out == "systemd\n")
                init_ = child;
            else
                std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
        ASSERT_NE(init_, 0) << "the container's systemd did not start:\n" << nspawn_->log();
        // "running" or "degraded" once the boot finished (a minimal root may have a failed unit).
        // systemctl fails with "Failed to connect to bus" until systemd listens on /run/systemd/private.
        CommandRun booted;
        for (int i = 0; i < 300; ++i) {
            booted = in_container({"systemctl", "is-system-running", "--wait"}, std::chrono::seconds(90));
            if (booted.err.find("Failed to connect to bus") == std::string::npos) break;
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
        ASSERT_TRUE(booted.out == "running\n" || booted.out == "degraded\n") << booted.out << booted.err;
    }

    // Runs on the copied root before the container boots (a fixture may install what it needs there).
    virtual void prepare_root() {}

    void TearDown() override {
        // SIGTERM to systemd-nspawn is an orderly poweroff of the container; SIGKILL after the grace.
        if (nspawn_) nspawn_->stop(0, std::chrono::seconds(30));
        nspawn_.reset();
        if (init_ != 0 && ::kill(init_, 0) == 0) ::kill(init_, SIGKILL);
    }

    CommandRun in_container(std::vector<std::string> argv, std::chrono::seconds timeout = std::chrono::minutes(2)) {
        std::vector<std::string> full = {"nsenter", "-t", std::to_string(init_), "-a"};
        full.insert(full.end(), argv.begin(), argv.end());
        return test::real::run(full, timeout);
    }

    // nodeform-agent on the live container (no --root): the host's loader and libraries run the
    // host-built binary; everything it starts (systemctl) is the container's own.
    CommandRun agent(std::vector<std::string> args) {
        std::vector<std::string> argv = {kHostLib + "/ld-linux-x86-64.so.2", "--library-path", kHostLib, kHostAgent};
        argv.insert(argv.end(), args.begin(), args.end());
        return in_container(argv, std::chrono::minutes(5));
    }

    // Writes spec into the container's /root; returns its path inside the container.
    std::string write_spec(const nlohmann::json& spec) {
        std::string path = "/root/nf-spec-" + std::to_string(++specs_) + ".json";
        EXPECT_TRUE(write_file_atomic(root_ + path, spec.dump(), {0600, false}).ok());
        return path;
    }

    std::string systemctl(const std::string& verb, const std::string& unit) {
        return in_container({"systemctl", verb, unit}).out;
    }

    static std::set<std::string> ids_with(const nlohmann::json& report, const std::string& status) {
        std::set<std::string> ids;
        for (const auto& r : report["resources"]) {
            if (r["status"] == status) ids.insert(r["id"].get<std::string>());
        }
        return ids;
    }

    test::TempDir tmp_;
    std::string root_;
    bool private_network_ = false;  // --private-network: the container's own network namespace (its own net.*)
    std::vector<std::string> extra_nspawn_;
    std::unique_ptr<test::real::BackgroundProcess> nspawn_;
    pid_t init_ = 0;
    int specs_ = 0;
};

nlohmann::json services_spec(const std::string& sleeper_seconds) {
    auto spec = nlohmann::json::parse(R"({
      "schema_version": 1, "identity": "svc-01",
      "files": [{"path": "/etc/systemd/system/nf-sleeper.service", "mode": "0644", "owner": "root",
                 "group": "root", "state": "present", "restart": ["nf-sleeper.service"]}],
      "services": [{"name": "nf-sleeper.service", "enabled": true, "running": true},
                   {"name": "nf-legacy.service", "enabled": false, "running": false}],
      "secret_paths": []
    })");
    spec["files"][0]["content"] = "[Unit]\nDescription=nodeform test: sleeper\n[Service]\nExecStart=/bin/sleep " +
                                  sleeper_seconds + "\n[Install]\nWantedBy=multi-user.target\n";
    return spec;
}

TEST_F(ServicesNspawnTest, EnablesStartsDisablesStopsIsIdempotentAndRepairs) {
    ASSERT_EQ(systemctl("is-active", "nf-legacy.service"), "active\n");
    ASSERT_EQ(systemctl("is-enabled", "nf-legacy.service"), "enabled\n");
    const std::string spec = write_spec(services_spec("100001"));

    auto first = agent({"apply", "--spec", spec, "--json"});
    ASSERT_EQ(first.exit_code, 0) << first.err << first.out;
    EXPECT_EQ(ids_with(first.json(), "changed"),
              (std::set<std::string>{"file:/etc/systemd/system/nf-sleeper.service", "service:nf-sleeper.service",
                                     "service:nf-legacy.service"}))
        << first.out;
    EXPECT_EQ(systemctl("is-enabled", "nf-sleeper.service"), "enabled\n");
    EXPECT_EQ(systemctl("is-active", "nf-sleeper.service"), "active\n");
    EXPECT_EQ(systemctl("is-enabled", "nf-legacy.service"), "disabled\n");
    EXPECT_EQ(systemctl("is-active", "nf-legacy.service"), "inactive\n");
    EXPECT_FALSE(fs::exists(root_ + "/etc/systemd/system/multi-user.target.wants/nf-legacy.service"));
    EXPECT_TRUE(fs::is_symlink(root_ + "/etc/systemd/system/multi-user.target.wants/nf-sleeper.service"));

    // Second run: nothing to do; plan agrees.
    auto second = agent({"apply", "--spec", spec, "--json"});
    ASSERT_EQ(second.exit_code, 0) << second.err;
    EXPECT_EQ(second.json()["counts"]["changed"], 0) << second.out;
    EXPECT_EQ(second.json()["counts"]["unchanged"], 3) << second.out;
    auto clean_plan = agent({"plan", "--spec", spec});
    EXPECT_EQ(clean_plan.exit_code, 0) << clean_plan.out << clean_plan.err;

    // Stopped by hand: plan names it (exit 2), apply starts it again and changes nothing else.
    ASSERT_EQ(in_container({"systemctl", "stop", "nf-sleeper.service"}).exit_code, 0);
    ASSERT_EQ(systemctl("is-active", "nf-sleeper.service"), "inactive\n");
    auto plan = agent({"plan", "--spec", spec, "--json"});
    EXPECT_EQ(plan.exit_code, 2) << plan.err;
    EXPECT_EQ(ids_with(plan.json(), "drifted"), (std::set<std::string>{"service:nf-sleeper.service"})) << plan.out;
    auto text_plan = agent({"plan", "--spec", spec});
    EXPECT_EQ(text_plan.exit_code, 2);
    EXPECT_NE(text_plan.out.find("service:nf-sleeper.service"), std::string::npos) << text_plan.out;
    auto repair = agent({"apply", "--spec", spec, "--json"});
    EXPECT_EQ(repair.exit_code, 0) << repair.err;
    EXPECT_EQ(ids_with(repair.json(), "changed"), (std::set<std::string>{"service:nf-sleeper.service"})) << repair.out;
    EXPECT_EQ(systemctl("is-active", "nf-sleeper.service"), "active\n");

    // Disabled and started by hand: both come back to the spec.
    ASSERT_EQ(in_container({"systemctl", "disable", "nf-sleeper.service"}).exit_code, 0);
    ASSERT_EQ(in_container({"systemctl", "start", "nf-legacy.service"}).exit_code, 0);
    auto again = agent({"apply", "--spec", spec, "--json"});
    EXPECT_EQ(again.exit_code, 0) << again.err;
    EXPECT_EQ(ids_with(again.json(), "changed"),
              (std::set<std::string>{"service:nf-sleeper.service", "service:nf-legacy.service"}))
        << again.out;
    EXPECT_EQ(systemctl("is-enabled", "nf-sleeper.service"), "enabled\n");
    EXPECT_EQ(systemctl("is-active", "nf-legacy.service"), "inactive\n");
    EXPECT_EQ(agent({"plan", "--spec", spec}).exit_code, 0);

    auto last = nlohmann::json::parse(test::real::slurp(root_ + "/var/lib/nodeform/last-run.json"), nullptr, false);
    ASSERT_FALSE(last.is_discarded());
    EXPECT_EQ(last["success"], true);
    EXPECT_TRUE(fs::exists(root_ + "/var/lib/nodeform/platform-ready"));  // a live system reaches ready
}

TEST_F(ServicesNspawnTest, ChangedUnitFileIsReloadedAndTheServiceRestarted) {
    const std::string spec = write_spec(services_spec("100001"));
    auto first = agent({"apply", "--spec", spec, "--json"});
    ASSERT_EQ(first.exit_code, 0) << first.err << first.out;
    const std::string pid_before = in_container({"systemctl", "show", "-P", "MainPID", "nf-sleeper.service"}).out;
    ASSERT_NE(pid_before, "0\n");

    // The file that names the service changes: the unit is reloaded and the running service restarted.
    const std::string changed = write_spec(services_spec("100002"));
    auto second = agent({"apply", "--spec", changed, "--json"});
    ASSERT_EQ(second.exit_code, 0) << second.err << second.out;
    EXPECT_EQ(ids_with(second.json(), "changed"),
              (std::set<std::string>{"file:/etc/systemd/system/nf-sleeper.service"}))
        << second.out;
    const std::string pid_after = in_container({"systemctl", "show", "-P", "MainPID", "nf-sleeper.service"}).out;
    EXPECT_NE(pid_after, pid_before);
    EXPECT_EQ(in_container({"systemctl", "show", "-P", "NeedDaemonReload", "nf-sleeper.service"}).out, "no\n");
    auto pid = pid_after.substr(0, pid_after.find('\n'));
    EXPECT_EQ(in_container({"cat", "/proc/" + pid + "/cmdline"}).out,
              std::string("/bin/sleep") + '\0' + "100002" + '\0');
    EXPECT_EQ(agent({"plan", "--spec", changed}).exit_code, 0);
}

// The agent as a Type=notify unit under the container's systemd and journald: READY=1 and STATUS= reach
// systemd over NOTIFY_SOCKET, and the structured log lines reach journald over its native protocol
// (_TRANSPORT=journal, not the stderr stream), both spoken without libsystemd (nodeform/systemd.hpp).
TEST_F(ServicesNspawnTest, AgentDaemonNotifiesSystemdAndLogsStructuredFieldsToJournald) {
    const std::string spec = write_spec(nlohmann::json::parse(R"({
      "schema_version": 1, "identity": "sd-01",
      "files": [{"path": "/etc/nf-sd-test", "mode": "0644", "owner": "root", "group": "root",
                 "state": "present", "content": "hello\n"}],
      "secret_paths": []
    })"));
    // Without --no-block, systemd-run waits for the start job: for Type=notify it ends at READY=1 (the loop runs).
    auto started =
        in_container({"systemd-run", "--unit=nf-sd-agent", "-p", "Type=notify", "-p", "NotifyAccess=main", "-p",
                      "TimeoutStartSec=120", "-p", "WatchdogSec=120", "--", kHostLib + "/ld-linux-x86-64.so.2",
                      "--library-path", kHostLib, kHostAgent, "run", "--spec", spec},
                     std::chrono::minutes(3));
    ASSERT_EQ(started.exit_code, 0) << started.out << started.err
                                    << in_container({"journalctl", "--no-pager", "-u", "nf-sd-agent"}).out;
    EXPECT_EQ(systemctl("is-active", "nf-sd-agent.service"), "active\n");
    // READY=1 comes when the loop runs; platform-ready is STATUS=ready... once the first converge succeeded.
    std::string status;
    for (int i = 0; i < 600 && status.rfind("ready", 0) != 0; ++i) {
        if (i > 0) std::this_thread::sleep_for(std::chrono::milliseconds(100));
        status = in_container({"systemctl", "show", "-P", "StatusText", "nf-sd-agent.service"}).out;
    }
    EXPECT_EQ(status.rfind("ready", 0), 0u) << "STATUS= did not arrive: " << status;
    EXPECT_EQ(test::real::slurp(root_ + "/etc/nf-sd-test"), "hello\n");

    // journalctl -o json for the unit's entries matching field=value; retried while journald catches up.
    auto entries = [&](const std::string& match) {
        std::vector<nlohmann::json> found;
        for (int i = 0; i < 100 && found.empty(); ++i) {
            auto out =
                in_container({"journalctl", "--no-pager", "-o", "json", "_SYSTEMD_UNIT=nf-sd-agent.service", match});
            std::istringstream in(out.out);
            for (std::string line; std::getline(in, line);) {
                auto parsed = nlohmann::json::parse(line, nullptr, false);
                if (parsed.is_object()) found.push_back(parsed);
            }
            if (found.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
        return found;
    };
    auto ready = entries("NODEFORM_STATUS=platform-ready");
    ASSERT_EQ(ready.size(), 1u) << in_container({"journalctl", "--no-pager", "-o", "verbose", "-u", "nf-sd-agent"}).out;
    const auto& entry = ready.front();
    EXPECT_EQ(entry.value("_TRANSPORT", ""), "journal") << entry.dump();
    EXPECT_EQ(entry.value("SYSLOG_IDENTIFIER", ""), "nodeform-agent");
    EXPECT_EQ(entry.value("PRIORITY", ""), "5") << entry.dump();
    EXPECT_FALSE(entry.value("NODEFORM_RUN_ID", "").empty()) << entry.dump();
    EXPECT_NE(entry.value("MESSAGE", "").find("platform ready"), std::string::npos) << entry.dump();
    auto start = entries("NODEFORM_IDENTITY=sd-01");
    ASSERT_FALSE(start.empty());
    EXPECT_EQ(start.front().value("NODEFORM_IDENTITY", ""), "sd-01");
    EXPECT_EQ(start.front().value("_TRANSPORT", ""), "journal");

    // SIGTERM: an orderly stop (a non-zero exit or a watchdog kill would leave the unit "failed").
    EXPECT_EQ(in_container({"systemctl", "stop", "nf-sd-agent.service"}).exit_code, 0);
    EXPECT_NE(systemctl("is-failed", "nf-sd-agent.service"), "failed\n");
}

// Drift in a second under a real systemd: the removal of a managed service's cgroup (the unit stopped by hand)
// makes the daemon check the unit states at once, and it starts the service again, and its inotify watch sees a managed
// file edited, long before the next turn (an hour away).
TEST_F(ServicesNspawnTest, AgentDaemonRepairsAStoppedServiceAndAnEditedFileBetweenTurns) {
    auto spec_json = services_spec("100003");
    spec_json["files"].push_back({{"path", "/etc/nf-watched"},
                                  {"mode", "0644"},
                                  {"owner", "root"},
                                  {"group", "root"},
                                  {"state", "present"},
                                  {"content", "managed\n"}});
    spec_json["apply"] = {{"trigger", "schedule"}, {"interval_s", 3600}, {"splay_s", 0}, {"drift", "remediate"}};
    const std::string spec = write_spec(spec_json);
    auto started = in_container({"systemd-run", "--unit=nf-watch-agent", "-p", "Type=notify", "-p", "NotifyAccess=main",
                                 "-p", "TimeoutStartSec=120", "--", kHostLib + "/ld-linux-x86-64.so.2",
                                 "--library-path", kHostLib, kHostAgent, "run", "--spec", spec},
                                std::chrono::minutes(3));
    ASSERT_EQ(started.exit_code, 0) << started.out << started.err;
    auto journal = [&] { return in_container({"journalctl", "--no-pager", "-u", "nf-watch-agent"}).out; };
    auto ready = [&] { return fs::exists(root_ + "/var/lib/nodeform/platform-ready"); };
    for (int i = 0; i < 600 && !ready(); ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    ASSERT_TRUE(ready()) << journal();
    ASSERT_EQ(systemctl("is-active", "nf-sleeper.service"), "active\n") << journal();

    // Spooled reports (no controller) naming `id` with status `changed`.
    auto repaired = [&](const std::string& id) {
        std::error_code ec;
        for (const auto& e : fs::directory_iterator(root_ + "/var/lib/nodeform/spool", ec)) {
            auto report = nlohmann::json::parse(test::real::slurp(e.path().string()), nullptr, false);
            if (report.is_object() && ids_with(report, "changed").count(id) && report["phase"] == "sustain")
                return true;
        }
        return false;
    };
    EXPECT_EQ(in_container({"systemctl", "stop", "nf-sleeper.service"}).exit_code, 0);
    bool back = false;
    for (int i = 0; i < 300 && !back; ++i) {  // a generous bound, no timing target
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        back = repaired("service:nf-sleeper.service");
    }
    EXPECT_TRUE(back) << journal();
    EXPECT_EQ(systemctl("is-active", "nf-sleeper.service"), "active\n");
    // Seen through the unit's cgroup going away (inotify), not by the 5 s state poll.
    EXPECT_NE(journal().find("unit state changed: unit:nf-sleeper.service (seen through its cgroup)"),
              std::string::npos)
        << journal();

    ASSERT_TRUE(write_file_atomic(root_ + "/etc/nf-watched", "hand edit\n", {0644, false}).ok());
    bool restored = false;
    for (int i = 0; i < 300 && !restored; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        restored = repaired("file:/etc/nf-watched") && test::real::slurp(root_ + "/etc/nf-watched") == "managed\n";
    }
    EXPECT_TRUE(restored) << journal();
    EXPECT_EQ(in_container({"systemctl", "stop", "nf-watch-agent.service"}).exit_code, 0);
}

// A timer against the container's systemd: written, enabled and started; its service runs the argv exactly (a '%'
// and a '$' reach the shell unexpanded); a changed command is reloaded; a stopped timer is drift; absent removes it.
TEST_F(ServicesNspawnTest, TimerIsEnabledStartedRunsItsCommandVerbatimAndIsRepaired) {
    auto timer_spec = [](const std::string& word) {
        nlohmann::json spec = {
            {"schema_version", 1}, {"identity", "svc-02"}, {"secret_paths", nlohmann::json::array()}};
        spec["timers"] = {{{"name", "nf-tick"},
                           {"on_calendar", "*-*-* 04:00:00"},
                           {"command", {"/bin/sh", "-c", "echo \"100% " + word + " $0\" > /run/nf-tick"}},
                           {"user", "root"},
                           {"description", "nodeform test: tick"},
                           {"persistent", false},
                           {"state", "present"}}};
        return spec;
    };
    const std::string spec = write_spec(timer_spec("first"));
    auto first = agent({"apply", "--spec", spec, "--json"});
    ASSERT_EQ(first.exit_code, 0) << first.out << first.err;
    EXPECT_EQ(ids_with(first.json(), "changed"), (std::set<std::string>{"timer:nf-tick"}));
    EXPECT_EQ(systemctl("is-enabled", "nf-tick.timer"), "enabled\n");
    EXPECT_EQ(systemctl("is-active", "nf-tick.timer"), "active\n");
    ASSERT_EQ(in_container({"systemctl", "start", "nf-tick.service"}).exit_code, 0);
    EXPECT_EQ(in_container({"cat", "/run/nf-tick"}).out, "100% first /bin/sh\n");
    auto second = agent({"apply", "--spec", spec, "--json"});
    EXPECT_EQ(second.json()["counts"]["changed"], 0) << second.out;

    // A new command: one daemon-reload, so the service runs the new one.
    auto changed = agent({"apply", "--spec", write_spec(timer_spec("second")), "--json"});
    ASSERT_EQ(changed.exit_code, 0) << changed.out;
    EXPECT_EQ(ids_with(changed.json(), "changed"), (std::set<std::string>{"timer:nf-tick"}));
    EXPECT_EQ(in_container({"systemctl", "show", "-P", "NeedDaemonReload", "nf-tick.service"}).out, "no\n");
    ASSERT_EQ(in_container({"systemctl", "start", "nf-tick.service"}).exit_code, 0);
    EXPECT_EQ(in_container({"cat", "/run/nf-tick"}).out, "100% second /bin/sh\n");

    // Damage: the timer stopped by hand.
    ASSERT_EQ(in_container({"systemctl", "stop", "nf-tick.timer"}).exit_code, 0);
    const std::string latest = write_spec(timer_spec("second"));
    auto plan = agent({"plan", "--spec", latest, "--json"});
    EXPECT_EQ(plan.exit_code, 2) << plan.out;
    EXPECT_EQ(ids_with(plan.json(), "drifted"), (std::set<std::string>{"timer:nf-tick"}));
    auto repair = agent({"apply", "--spec", latest, "--json"});
    EXPECT_EQ(ids_with(repair.json(), "changed"), (std::set<std::string>{"timer:nf-tick"})) << repair.out;
    EXPECT_EQ(systemctl("is-active", "nf-tick.timer"), "active\n");

    nlohmann::json absent = {{"schema_version", 1}, {"identity", "svc-02"}, {"secret_paths", nlohmann::json::array()}};
    absent["timers"] = {{{"name", "nf-tick"}, {"state", "absent"}}};
    auto removed = agent({"apply", "--spec", write_spec(absent), "--json"});
    ASSERT_EQ(removed.exit_code, 0) << removed.out;
    EXPECT_EQ(systemctl("is-active", "nf-tick.timer"), "inactive\n");
    EXPECT_FALSE(fs::exists(root_ + "/etc/systemd/system/nf-tick.timer"));
    EXPECT_FALSE(fs::exists(root_ + "/etc/systemd/system/nf-tick.service"));
}

// sysctl and kernel modules on a live machine: the container has its own network namespace (--private-network), so
// net.* parameters are its own and writable. procps (sysctl) and kmod (modprobe) are installed into the copy before
// it boots (the cached root is minbase), from the root's own apt. A net.* key is set live and in its drop-in, a second
// run changes nothing, the running value damaged with sysctl -w is drift naming "running" and is repaired. Kernel
// modules cannot be loaded from a container (no CAP_SYS_MODULE; the host's modules are not in its /lib/modules): an
// already-loaded module (loop, from the host's /sys/module) gets its modules-load.d file and no modprobe; one that
// is not loaded makes the agent run modprobe, whose failure is that resource's clear error, and nothing else fails.
class KernelNspawnTest : public ServicesNspawnTest {
  protected:
    void SetUp() override {
        private_network_ = true;
        // With a private network nspawn's /sys has no module/: the host's, read-only, shows what is loaded.
        extra_nspawn_ = {"--bind-ro=/sys/module:/sys/module"};
        ServicesNspawnTest::SetUp();
    }
    void prepare_root() override {
        auto installed = test::real::run({"unshare", "--mount", "--fork", "--", "sh", "-c",
                                          "mount -t proc proc \"$0/proc\" && chroot \"$0\" apt-get install -y -q "
                                          "--no-install-recommends procps kmod",
                                          root_},
                                         std::chrono::minutes(5));
        if (installed.exit_code != 0) GTEST_SKIP() << "cannot install procps and kmod into the root: " << installed.err;
    }
};

TEST_F(KernelNspawnTest, SysctlIsAppliedLiveInTheContainersNetworkNamespaceAndRepaired) {
    if (!fs::exists("/sys/module/loop")) GTEST_SKIP() << "the host has no loop module loaded";
    auto spec_json = nlohmann::json::parse(R"({"schema_version": 1, "identity": "svc-03", "secret_paths": [],
      "sysctl": [{"name": "net.ipv4.ip_forward", "value": "1"}, {"name": "net.ipv4.tcp_keepalive_time", "value": "600"}],
      "kernel_modules": [{"name": "loop"}]})");
    auto running = [&](const std::string& key) { return in_container({"sysctl", "-n", key}).out; };
    ASSERT_EQ(running("net.ipv4.ip_forward"), "0\n") << "a fresh network namespace forwards nothing";
    const std::string spec = write_spec(spec_json);
    auto first = agent({"apply", "--spec", spec, "--json"});
    ASSERT_EQ(first.exit_code, 0) << first.out << first.err;
    EXPECT_EQ(ids_with(first.json(), "changed"),
              (std::set<std::string>{"sysctl:net.ipv4.ip_forward", "sysctl:net.ipv4.tcp_keepalive_time",
                                     "kernel_module:loop"}));
    EXPECT_EQ(running("net.ipv4.ip_forward"), "1\n");
    EXPECT_EQ(running("net.ipv4.tcp_keepalive_time"), "600\n");
    EXPECT_EQ(test::real::slurp(root_ + "/etc/sysctl.d/90-nodeform-net.ipv4.ip_forward.conf"),
              "# Managed by nodeform: changes here are overwritten.\nnet.ipv4.ip_forward = 1\n");
    EXPECT_EQ(test::real::slurp(root_ + "/etc/modules-load.d/nodeform-loop.conf"),
              "# Managed by nodeform: changes here are overwritten.\nloop\n");
    auto again = agent({"apply", "--spec", spec, "--json"});
    EXPECT_EQ(again.json()["counts"]["changed"], 0) << again.out;

    ASSERT_EQ(in_container({"sysctl", "-q", "-w", "net.ipv4.ip_forward=0"}).exit_code, 0);
    auto plan = agent({"plan", "--spec", spec, "--json"});
    EXPECT_EQ(ids_with(plan.json(), "drifted"), (std::set<std::string>{"sysctl:net.ipv4.ip_forward"})) << plan.out;
    EXPECT_NE(plan.out.find("\"running\""), std::string::npos) << plan.out;
    auto repair = agent({"apply", "--spec", spec, "--json"});
    EXPECT_EQ(ids_with(repair.json(), "changed"), (std::set<std::string>{"sysctl:net.ipv4.ip_forward"})) << repair.out;
    EXPECT_EQ(running("net.ipv4.ip_forward"), "1\n");

    spec_json["kernel_modules"].push_back({{"name", "nf-no-such-module"}});
    auto missing = agent({"apply", "--spec", write_spec(spec_json), "--json"});
    EXPECT_EQ(missing.exit_code, 1) << missing.out;
    EXPECT_EQ(ids_with(missing.json(), "failed"), (std::set<std::string>{"kernel_module:nf-no-such-module"}))
        << missing.out;
    EXPECT_NE(missing.out.find("cannot load kernel module nf-no-such-module"), std::string::npos) << missing.out;
}

}  // namespace
}  // namespace nodeform::agent
