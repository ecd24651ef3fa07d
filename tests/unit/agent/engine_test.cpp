// The converge engine against a simulated system: order, dependencies, check mode, state files, redaction.
#include <gtest/gtest.h>

#include "fake_system.hpp"
#include "nodeform/canonical_json.hpp"

namespace nodeform::agent {
namespace {

using test::FakeSystem;
using test::find_result;

// A present file resource owned by root, restarting nothing.
nlohmann::json file_resource(const std::string& path, const std::string& content, const std::string& mode) {
    return {{"path", path},
            {"content", content},
            {"mode", mode},
            {"owner", "root"},
            {"group", "root"},
            {"state", "present"},
            {"restart", nlohmann::json::array()}};
}

nlohmann::json base_spec() {
    return nlohmann::json::parse(R"({
      "schema_version": 1, "identity": "web-01",
      "hostname": {"hostname": "web-01", "domain": "lab.example.net", "fqdn": "web-01.lab.example.net"},
      "packages": [{"name": "hello", "state": "present"}],
      "groups": [{"name": "ops", "gid": 2000, "state": "present"}],
      "users": [{"name": "alice", "uid": 1100, "shell": "/bin/bash", "home": "/home/alice", "groups": ["ops"],
                 "sudo": true, "sudo_nopasswd": false, "ssh_keys": ["ssh-ed25519 AAAAsecretkey alice@laptop"],
                 "state": "present"}],
      "files": [{"path": "/etc/app/app.conf", "content": "port=80\n", "mode": "0640", "owner": "alice",
                 "group": "ops", "state": "present", "restart": ["nginx.service"]}],
      "services": [{"name": "nginx.service", "enabled": true, "running": true}],
      "stacks": [],
      "secret_paths": ["/users/0/ssh_keys/0"]
    })");
}

ConvergeOptions options() {
    ConvergeOptions o;
    o.root = "/srv/root";  // offline: no running hostname, enablement only
    return o;
}

TEST(Engine, ConvergesInDependencyOrderAndIsIdempotent) {
    FakeSystem sys;
    std::vector<std::string> order;
    auto opts = options();
    opts.on_result = [&](const ResourceResult& r) { order.push_back(r.id); };
    ConvergeEngine engine(sys.runner, sys.fs, sys.clock, sys.logger, *sys.random, opts);
    auto report = engine.run(base_spec(), RunMode::apply);
    ASSERT_TRUE(report.ok()) << to_report_json(report).dump(2);
    EXPECT_EQ(order, (std::vector<std::string>{"hostname:web-01", "package:hello", "group:ops", "user:alice",
                                               "file:/etc/app/app.conf", "service:nginx.service"}));
    EXPECT_EQ(report.counts().changed, 6);
    // Commands ran in the same order: install before groupadd before useradd before systemctl enable.
    EXPECT_LT(sys.position("apt-get install"), sys.position("groupadd"));
    EXPECT_LT(sys.position("groupadd"), sys.position("useradd"));
    EXPECT_LT(sys.position("useradd"), sys.position("systemctl --root=/ enable"));
    // Offline root: accounts through --root, apt through chroot.
    EXPECT_NE(sys.position("groupadd --root / -g 2000 ops"), -1);
    EXPECT_NE(sys.position("chroot / apt-get install -y -q --no-install-recommends"), -1);

    EXPECT_EQ(sys.fs.read("/etc/hostname", 1024).value(), "web-01\n");
    EXPECT_NE(sys.fs.read("/etc/hosts", 1024).value().find("127.0.1.1\tweb-01.lab.example.net web-01\n"),
              std::string::npos);
    auto keys = sys.fs.stat("/home/alice/.ssh/authorized_keys").value();
    ASSERT_TRUE(keys.has_value());
    EXPECT_EQ(keys->mode, 0600u);
    EXPECT_EQ(keys->uid, 1100u);
    EXPECT_EQ(sys.fs.stat("/home/alice/.ssh").value()->mode, 0700u);
    EXPECT_EQ(sys.fs.read("/etc/sudoers.d/nodeform-alice", 1024).value(),
              "# Managed by nodeform: changes here are overwritten.\nalice ALL=(ALL:ALL) ALL\n");
    EXPECT_NE(sys.position("visudo -cf /etc/sudoers.d/.nodeform-alice.check"), -1);
    auto conf = sys.fs.stat("/etc/app/app.conf").value();
    EXPECT_EQ(conf->mode, 0640u);
    EXPECT_EQ(conf->uid, 1100u);
    EXPECT_EQ(conf->gid, 2000u);

    // Second run: nothing to do, and no command that changes anything.
    sys.runner.requests.clear();
    auto again = engine.run(base_spec(), RunMode::apply);
    EXPECT_TRUE(again.ok());
    EXPECT_EQ(again.counts().changed, 0) << to_report_json(again).dump(2);
    EXPECT_EQ(again.counts().unchanged, 6);
    for (const auto& c : sys.runner.commands()) {
        EXPECT_EQ(c.find("install"), std::string::npos) << c;
        EXPECT_EQ(c.find("useradd"), std::string::npos) << c;
    }
}

TEST(Engine, FailedDependencySkipsDependentsButNotIndependentResources) {
    FakeSystem sys;
    sys.runner.handler = [&sys](const ProcessRequest& r) -> Result<ProcessResult> {
        if (r.argv[0] == "groupadd") return ProcessResult{10, false, "", "groupadd: cannot lock /etc/group"};
        return sys.handle(r);
    };
    ConvergeEngine engine(sys.runner, sys.fs, sys.clock, sys.logger, *sys.random, options());
    auto spec = base_spec();
    spec["files"].push_back(file_resource("/etc/motd", "hello\n", "0644"));
    auto report = engine.run(spec, RunMode::apply);
    EXPECT_FALSE(report.ok());
    EXPECT_EQ(find_result(report, "group:ops")->status, ResourceStatus::failed);
    EXPECT_NE(find_result(report, "group:ops")->message.find("cannot lock /etc/group"), std::string::npos);
    EXPECT_EQ(find_result(report, "user:alice")->status, ResourceStatus::skipped);
    EXPECT_EQ(find_result(report, "user:alice")->message, "skipped: group:ops failed");
    // The file owned by alice is skipped (its owner was), and so is the service it restarts.
    EXPECT_EQ(find_result(report, "file:/etc/app/app.conf")->status, ResourceStatus::skipped);
    EXPECT_EQ(find_result(report, "service:nginx.service")->status, ResourceStatus::skipped);
    // Independent resources still converged.
    EXPECT_EQ(find_result(report, "package:hello")->status, ResourceStatus::changed);
    EXPECT_EQ(find_result(report, "file:/etc/motd")->status, ResourceStatus::changed);
    EXPECT_EQ(find_result(report, "hostname:web-01")->status, ResourceStatus::changed);
    EXPECT_EQ(sys.position("useradd"), -1);
    // No platform-ready marker after a failed run.
    EXPECT_FALSE(sys.fs.exists("/var/lib/nodeform/platform-ready"));
    EXPECT_TRUE(sys.fs.exists("/var/lib/nodeform/last-run.json"));
}

TEST(Engine, MaliciousUserNameIsAPerResourceFailureAndNeverReachesACommand) {
    FakeSystem sys;
    ConvergeEngine engine(sys.runner, sys.fs, sys.clock, sys.logger, *sys.random, options());
    auto spec = base_spec();
    spec["users"].push_back({{"name", "root;rm -rf /"},
                             {"state", "present"},
                             {"groups", nlohmann::json::array()},
                             {"ssh_keys", nlohmann::json::array()}});
    auto report = engine.run(spec, RunMode::apply);
    auto* bad = find_result(report, "user:root;rm -rf /");
    ASSERT_NE(bad, nullptr);
    EXPECT_EQ(bad->status, ResourceStatus::failed);
    EXPECT_NE(bad->message.find("invalid user name \"root;rm -rf /\""), std::string::npos);
    for (const auto& c : sys.runner.commands())
        EXPECT_EQ(c.find("rm -rf"), std::string::npos) << c;
    EXPECT_EQ(find_result(report, "user:alice")->status, ResourceStatus::changed);
    EXPECT_EQ(report.counts().failed, 1);
}

TEST(Engine, CheckModeChangesNothingAndReportsDrift) {
    FakeSystem sys;
    auto before = sys.fs.nodes.size();
    ConvergeEngine engine(sys.runner, sys.fs, sys.clock, sys.logger, *sys.random, options());
    auto report = engine.run(base_spec(), RunMode::check);
    EXPECT_EQ(report.counts().drifted, 6) << to_report_json(report).dump(2);
    EXPECT_TRUE(report.changes_pending());
    EXPECT_EQ(sys.fs.nodes.size(), before);
    EXPECT_EQ(sys.fs.read("/etc/hostname", 100).value(), "localhost\n");
    for (const auto& c : sys.runner.commands()) {
        EXPECT_TRUE(c.find("is-enabled") != std::string::npos || c.find("is-active") != std::string::npos) << c;
    }
    auto json = to_report_json(report);
    EXPECT_EQ(json["mode"], "check");
    EXPECT_EQ(json["drift"].size(), 6u);
    EXPECT_EQ(json["counts"]["drifted"], 6);
    // What the agent builds is what the controller accepts, and it round-trips through the typed report.
    auto parsed = protocol::ReportParser().parse(json);
    ASSERT_TRUE(parsed.ok()) << parsed.message();
    EXPECT_EQ(protocol::to_json(*parsed), json);
    EXPECT_EQ(parsed->drift.size(), 6u);
    EXPECT_EQ(parsed->mode, protocol::Mode::check);
}

TEST(Engine, DriftIsNamedExactly) {
    FakeSystem sys;
    ConvergeEngine engine(sys.runner, sys.fs, sys.clock, sys.logger, *sys.random, options());
    ASSERT_TRUE(engine.run(base_spec(), RunMode::apply).ok());
    // Damage: a file's mode, a group membership.
    ASSERT_TRUE(sys.fs.chmod("/etc/app/app.conf", 0666).ok());
    sys.set_groups("alice", "");
    auto plan = engine.run(base_spec(), RunMode::check);
    std::vector<std::string> drifted;
    for (const auto& r : plan.resources) {
        if (r.status == ResourceStatus::drifted) drifted.push_back(r.id);
    }
    EXPECT_EQ(drifted, (std::vector<std::string>{"user:alice", "file:/etc/app/app.conf"}));
    auto* file = find_result(plan, "file:/etc/app/app.conf");
    ASSERT_EQ(file->changes.size(), 1u);
    EXPECT_EQ(file->changes[0].field, "mode");
    EXPECT_EQ(file->changes[0].old_value, "0666");
    EXPECT_EQ(file->changes[0].new_value, "0640");
    auto repair = engine.run(base_spec(), RunMode::apply);
    EXPECT_EQ(repair.counts().changed, 2);
    EXPECT_NE(sys.position("usermod --root / -G ops alice"), -1);
    EXPECT_EQ(engine.run(base_spec(), RunMode::check).counts().drifted, 0);
}

TEST(Engine, SecretsNeverAppearInTheReport) {
    FakeSystem sys;
    ConvergeEngine engine(sys.runner, sys.fs, sys.clock, sys.logger, *sys.random, options());
    auto spec = base_spec();
    spec["files"].push_back(file_resource("/etc/app/token", "tok-SECRETVALUE-123", "0600"));
    spec["secret_paths"].push_back("/files/1/content");
    sys.runner.handler = [&sys](const ProcessRequest& r) -> Result<ProcessResult> {
        if (r.argv[0] == "visudo" || (r.argv.size() > 2 && r.argv[0] == "chroot" && r.argv[2] == "visudo")) {
            // A tool that echoes a secret: the engine must still keep it out of the message.
            return ProcessResult{1, false, "", "parse error near ssh-ed25519 AAAAsecretkey alice@laptop"};
        }
        return sys.handle(r);
    };
    auto report = engine.run(spec, RunMode::apply);
    std::string text = to_report_json(report).dump() + to_last_run_json(report).dump();
    EXPECT_EQ(text.find("AAAAsecretkey"), std::string::npos) << text;
    EXPECT_EQ(text.find("SECRETVALUE"), std::string::npos) << text;
    EXPECT_NE(text.find("[REDACTED]"), std::string::npos);
    auto* user = find_result(report, "user:alice");
    EXPECT_EQ(user->status, ResourceStatus::failed);
    EXPECT_NE(user->message.find("visudo rejected"), std::string::npos);
    EXPECT_FALSE(sys.fs.exists("/etc/sudoers.d/nodeform-alice"));  // nothing installed
    EXPECT_FALSE(sys.fs.exists("/etc/sudoers.d/.nodeform-alice.check"));
}

TEST(Engine, PlatformReadyOnceAfterTheFirstSuccessfulRun) {
    FakeSystem sys;
    auto opts = options();
    opts.root = "";  // the live system
    ConvergeEngine engine(sys.runner, sys.fs, sys.clock, sys.logger, *sys.random, opts);
    auto first = engine.run(base_spec(), RunMode::apply);
    ASSERT_TRUE(first.ok());
    EXPECT_TRUE(first.reached_platform_ready);
    EXPECT_EQ(to_report_json(first)["phase"], "platform-ready");
    auto marker = read_platform_ready(sys.fs);
    ASSERT_TRUE(marker.has_value());
    EXPECT_EQ(marker->spec_digest, canonical_digest(base_spec()));
    auto second = engine.run(base_spec(), RunMode::apply);
    EXPECT_FALSE(second.reached_platform_ready);
    EXPECT_TRUE(second.platform_ready);
    EXPECT_EQ(to_report_json(second)["phase"], "sustain");
    auto last = nlohmann::json::parse(sys.fs.read("/var/lib/nodeform/last-run.json", 1 << 20).value());
    EXPECT_EQ(last["counts"]["total"], 6);
    EXPECT_EQ(last["success"], true);
    EXPECT_TRUE(last["timings"].contains("total"));
}

TEST(Engine, OfflineRootNeverWritesPlatformReady) {
    FakeSystem sys;
    auto opts = options();
    opts.allow_platform_ready = false;
    ConvergeEngine engine(sys.runner, sys.fs, sys.clock, sys.logger, *sys.random, opts);
    EXPECT_TRUE(engine.run(base_spec(), RunMode::apply).ok());
    EXPECT_FALSE(sys.fs.exists("/var/lib/nodeform/platform-ready"));
}

TEST(Engine, UnusableSpecIsARunError) {
    FakeSystem sys;
    ConvergeEngine engine(sys.runner, sys.fs, sys.clock, sys.logger, *sys.random, options());
    EXPECT_FALSE(engine.run(nlohmann::json::array(), RunMode::apply).error.empty());
    auto spec = base_spec();
    spec["schema_version"] = 2;
    auto report = engine.run(spec, RunMode::apply);
    EXPECT_NE(report.error.find("schema_version"), std::string::npos);
    EXPECT_TRUE(report.resources.empty());
    EXPECT_TRUE(sys.runner.requests.empty());
}

TEST(Engine, UnknownPackageFailsAloneAfterOneUpdate) {
    FakeSystem sys;
    ConvergeEngine engine(sys.runner, sys.fs, sys.clock, sys.logger, *sys.random, options());
    auto spec = base_spec();
    spec["packages"].push_back({{"name", "no-such-package-xyz"}, {"state", "present"}});
    auto report = engine.run(spec, RunMode::apply);
    auto* bad = find_result(report, "package:no-such-package-xyz");
    EXPECT_EQ(bad->status, ResourceStatus::failed);
    EXPECT_NE(bad->message.find("not available from the configured apt sources"), std::string::npos);
    EXPECT_EQ(find_result(report, "package:hello")->status, ResourceStatus::changed);
    int updates = 0, installs = 0;
    for (const auto& c : sys.runner.commands()) {
        updates += c.find("apt-get update") != std::string::npos;
        installs += c.find("apt-get install") != std::string::npos;
        if (c.find("apt-get install") != std::string::npos) {
            EXPECT_EQ(c.find("no-such-package-xyz"), std::string::npos) << c;
            EXPECT_NE(c.find("DPkg::Lock::Timeout=300"), std::string::npos) << c;
        }
    }
    EXPECT_EQ(updates, 1);
    EXPECT_EQ(installs, 1);
    for (const auto& r : sys.runner.requests) {
        if (r.argv.size() > 2 && r.argv[2] == "apt-get") {
            EXPECT_EQ(r.env.at("DEBIAN_FRONTEND"), "noninteractive");
        }
    }
}

TEST(Engine, AptRunsOnceForAllMissingPackagesAndNotAtAllWhenInstalled) {
    FakeSystem sys;
    ConvergeEngine engine(sys.runner, sys.fs, sys.clock, sys.logger, *sys.random, options());
    nlohmann::json spec = {{"schema_version", 1},
                           {"identity", "n"},
                           {"packages", {{{"name", "hello"}}, {{"name", "curl"}}, {{"name", "sudo"}}}}};
    auto report = engine.run(spec, RunMode::apply);
    EXPECT_EQ(find_result(report, "package:sudo")->status, ResourceStatus::unchanged);
    int installs = 0;
    for (const auto& c : sys.runner.commands()) {
        if (c.find("apt-get install") != std::string::npos) {
            ++installs;
            EXPECT_NE(c.find(" hello curl"), std::string::npos) << c;
        }
    }
    EXPECT_EQ(installs, 1);
    sys.runner.requests.clear();
    EXPECT_EQ(engine.run(spec, RunMode::apply).counts().unchanged, 3);
    EXPECT_TRUE(sys.runner.requests.empty());  // no process at all when everything is installed
}

TEST(Engine, AbsentUserIsRemovedButUnnamedUsersAreNeverTouched) {
    FakeSystem sys;
    sys.append("/etc/passwd", "bob:x:1200:1200::/home/bob:/bin/sh\ncarol:x:1201:1201::/home/carol:/bin/sh\n");
    ConvergeEngine engine(sys.runner, sys.fs, sys.clock, sys.logger, *sys.random, options());
    nlohmann::json spec = {
        {"schema_version", 1},
        {"identity", "n"},
        {"users", {{{"name", "bob"}, {"state", "absent"}}, {{"name", "root"}, {"state", "absent"}}}}};
    auto report = engine.run(spec, RunMode::apply);
    EXPECT_EQ(find_result(report, "user:bob")->status, ResourceStatus::changed);
    EXPECT_EQ(find_result(report, "user:root")->status, ResourceStatus::failed);
    auto cmds = sys.runner.commands();
    ASSERT_EQ(cmds.size(), 1u);
    EXPECT_EQ(cmds[0], "userdel --root / bob");  // the memory filesystem's root is "/"
}

TEST(Engine, FileBackupKeepsThePreviousContent) {
    FakeSystem sys;
    sys.fs.put_file("/etc/motd", "old motd\n");
    ConvergeEngine engine(sys.runner, sys.fs, sys.clock, sys.logger, *sys.random, options());
    nlohmann::json spec = {{"schema_version", 1},
                           {"identity", "n"},
                           {"files", {{{"path", "/etc/motd"}, {"content", "new\n"}, {"mode", "0644"}}}}};
    auto report = engine.run(spec, RunMode::apply);
    ASSERT_TRUE(report.ok());
    auto backups = sys.fs.list("/var/lib/nodeform/backup/etc").value();
    ASSERT_EQ(backups.size(), 1u);
    EXPECT_EQ(backups[0].rfind("motd.", 0), 0u);
    EXPECT_EQ(sys.fs.read("/var/lib/nodeform/backup/etc/" + backups[0], 100).value(), "old motd\n");
    auto* r = find_result(report, "file:/etc/motd");
    EXPECT_EQ(r->changes[0].field, "content");
    EXPECT_EQ(r->changes[0].old_value.get<std::string>().rfind("sha256:", 0), 0u);
}

TEST(Engine, FullDiskIsAClearFileFailure) {
    FakeSystem sys;
    ConvergeEngine engine(sys.runner, sys.fs, sys.clock, sys.logger, *sys.random, options());
    sys.fs.fail_writes = "No space left on device";
    nlohmann::json spec = {{"schema_version", 1},
                           {"identity", "n"},
                           {"files", {{{"path", "/etc/motd"}, {"content", "new\n"}, {"mode", "0644"}}}}};
    auto report = engine.run(spec, RunMode::apply);
    auto* r = find_result(report, "file:/etc/motd");
    EXPECT_EQ(r->status, ResourceStatus::failed);
    EXPECT_NE(r->message.find("No space left on device"), std::string::npos);
}

// Every owner and group of a file is a name or an id in 0..4294967294; a bad one fails its own file only.
TEST(Engine, OwnerAndGroupIdsAreValidatedPerFile) {
    FakeSystem sys;
    ConvergeEngine engine(sys.runner, sys.fs, sys.clock, sys.logger, *sys.random, options());
    nlohmann::json spec = {{"schema_version", 1}, {"identity", "n"}, {"files", nlohmann::json::array()}};
    const std::vector<std::string> bad = {"4294967296",           "4294967295", "18446744073709551616",
                                          "99999999999999999999", "Root",       ""};
    int i = 0;
    for (const auto& field : {"owner", "group"}) {
        for (const auto& value : bad) {
            spec["files"].push_back(
                {{"path", "/etc/bad-" + std::to_string(i++)}, {"content", "x\n"}, {"mode", "0644"}, {field, value}});
        }
    }
    spec["files"].push_back(
        {{"path", "/etc/good"}, {"content", "y\n"}, {"mode", "0644"}, {"owner", "4294967294"}, {"group", "0"}});
    auto report = engine.run(spec, RunMode::apply);
    for (int k = 0; k < i; ++k) {
        auto* r = find_result(report, "file:/etc/bad-" + std::to_string(k));
        ASSERT_NE(r, nullptr);
        EXPECT_EQ(r->status, ResourceStatus::failed) << k;
        EXPECT_TRUE(r->message.find("owner") != std::string::npos || r->message.find("group") != std::string::npos)
            << r->message;
        EXPECT_FALSE(sys.fs.stat("/etc/bad-" + std::to_string(k)).value().has_value());
    }
    auto* good = find_result(report, "file:/etc/good");
    ASSERT_NE(good, nullptr);
    EXPECT_EQ(good->status, ResourceStatus::changed) << good->message;
    EXPECT_EQ(sys.fs.stat("/etc/good").value()->uid, 4294967294u);
}

// One size limit for managed files: what the agent writes it can read back, so a second run changes nothing;
// beyond it the file fails alone, with the limit in the message.
TEST(Engine, ManagedFilesUpToTheLimitAreIdempotentAndLargerOnesFailAlone) {
    FakeSystem sys;
    ConvergeEngine engine(sys.runner, sys.fs, sys.clock, sys.logger, *sys.random, options());
    nlohmann::json spec = {
        {"schema_version", 1},
        {"identity", "n"},
        {"files",
         {{{"path", "/etc/at-limit"}, {"content", std::string(kMaxFileBytes, 'a')}, {"mode", "0644"}},
          {{"path", "/etc/over-limit"}, {"content", std::string(kMaxFileBytes + 1, 'b')}, {"mode", "0644"}}}}};
    auto first = engine.run(spec, RunMode::apply);
    EXPECT_EQ(find_result(first, "file:/etc/at-limit")->status, ResourceStatus::changed);
    auto* over = find_result(first, "file:/etc/over-limit");
    EXPECT_EQ(over->status, ResourceStatus::failed);
    EXPECT_NE(over->message.find("at most 16777216 bytes"), std::string::npos) << over->message;
    auto second = engine.run(spec, RunMode::apply);
    auto* again = find_result(second, "file:/etc/at-limit");
    EXPECT_EQ(again->status, ResourceStatus::unchanged) << again->message;
}

TEST(Engine, StopRequestFinishesTheStageInHandAndSkipsTheRest) {
    FakeSystem sys;
    auto opts = options();
    ConvergeEngine* self = nullptr;
    opts.on_result = [&](const ResourceResult& r) {
        if (r.id == "package:hello") self->request_stop();  // SIGTERM arrives while apt runs
    };
    ConvergeEngine engine(sys.runner, sys.fs, sys.clock, sys.logger, *sys.random, opts);
    self = &engine;
    auto report = engine.run(base_spec(), RunMode::apply);
    EXPECT_FALSE(report.ok());
    ASSERT_NE(find_result(report, "package:hello"), nullptr);
    EXPECT_EQ(find_result(report, "package:hello")->status, ResourceStatus::changed);
    for (const char* id : {"group:ops", "user:alice", "file:/etc/app/app.conf", "service:nginx.service"}) {
        const auto* r = find_result(report, id);
        ASSERT_NE(r, nullptr) << id;
        EXPECT_EQ(r->status, ResourceStatus::skipped) << id;
        EXPECT_NE(r->message.find("the agent is stopping"), std::string::npos) << r->message;
    }
    EXPECT_EQ(sys.position("groupadd"), -1);  // nothing after the stage in hand ran
    EXPECT_EQ(sys.position("useradd"), -1);
    EXPECT_FALSE(report.platform_ready);
}

}  // namespace
}  // namespace nodeform::agent
