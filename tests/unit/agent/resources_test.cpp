// The resource kinds of issue 16 against the simulated system: timezone, directories, symlinks, user passwords and
// locks, sysctl, kernel modules, timers, file templates and stacks (absent, one-shot services).
#include <gtest/gtest.h>

#include "../../../agent/src/engine/context.hpp"
#include "fake_system.hpp"
#include "nodeform/agent/resources/upgrade.hpp"

namespace nodeform::agent {
namespace {

using test::FakeSystem;
using test::find_result;

nlohmann::json spec_with(const nlohmann::json& extra) {
    nlohmann::json spec = {{"schema_version", 1}, {"identity", "web-01"}, {"secret_paths", nlohmann::json::array()}};
    for (const auto& [k, v] : extra.items())
        spec[k] = v;
    return spec;
}

ConvergeOptions offline() {
    ConvergeOptions o;
    o.root = "/srv/root";
    return o;
}

RunReport run(FakeSystem& sys, const nlohmann::json& spec, RunMode mode = RunMode::apply,
              ConvergeOptions opts = offline()) {
    ConvergeEngine engine(sys.runner, sys.fs, sys.clock, sys.logger, *sys.random, opts);
    return engine.run(spec, mode);
}

std::string status(const RunReport& report, const std::string& id) {
    const auto* r = find_result(report, id);
    return r == nullptr ? "<none>" : std::string(to_string(r->status)) + ": " + r->message;
}

TEST(Timezone, LinksLocaltimeWritesEtcTimezoneAndRepairsDrift) {
    FakeSystem sys;
    sys.fs.put_file("/usr/share/zoneinfo/Europe/Berlin", "TZif2...");
    sys.fs.put_file("/usr/share/zoneinfo/Etc/UTC", "TZif2...");
    ASSERT_TRUE(sys.fs.symlink("/usr/share/zoneinfo/Etc/UTC", "/etc/localtime").ok());
    auto spec = spec_with({{"timezone", "Europe/Berlin"}});
    auto first = run(sys, spec);
    EXPECT_EQ(status(first, "timezone:Europe/Berlin"), "changed: time zone set to Europe/Berlin");
    EXPECT_EQ(sys.fs.read_link("/etc/localtime").value(), "/usr/share/zoneinfo/Europe/Berlin");
    EXPECT_EQ(sys.fs.read("/etc/timezone", 100).value(), "Europe/Berlin\n");
    EXPECT_EQ(status(run(sys, spec), "timezone:Europe/Berlin"), "unchanged: time zone is Europe/Berlin");
    ASSERT_TRUE(sys.fs.symlink("/usr/share/zoneinfo/Etc/UTC", "/etc/localtime").ok());
    auto plan = run(sys, spec, RunMode::check);
    const auto* r = find_result(plan, "timezone:Europe/Berlin");
    ASSERT_NE(r, nullptr);
    EXPECT_EQ(r->status, ResourceStatus::drifted);
    EXPECT_EQ(r->changes.at(0).old_value, "/usr/share/zoneinfo/Etc/UTC");
}

TEST(Timezone, AZoneNotInZoneinfoOrNotAZoneFailsAndChangesNothing) {
    FakeSystem sys;
    sys.fs.put_file("/usr/share/zoneinfo/Etc/UTC", "TZif2...");
    sys.fs.put_file("/usr/share/zoneinfo/zone.tab", "# not a zone\n");
    for (const char* zone : {"Mars/Olympus", "zone.tab", "../../../etc/shadow", "Europe//Berlin"}) {
        auto report = run(sys, spec_with({{"timezone", zone}}));
        EXPECT_EQ(status(report, std::string("timezone:") + zone).rfind("failed: ", 0), 0u) << zone;
    }
    EXPECT_FALSE(sys.fs.exists("/etc/localtime"));
    EXPECT_FALSE(sys.fs.exists("/etc/timezone"));
    FakeSystem bare;
    auto report = run(bare, spec_with({{"timezone", "Etc/UTC"}}));
    EXPECT_NE(status(report, "timezone:Etc/UTC").find("add the package tzdata"), std::string::npos);
}

TEST(Directories, CreatesWithOwnerAndModeRepairsModeAndChownsRecursivelyOnlyWhenAsked) {
    FakeSystem sys;
    sys.fs.put_file("/etc/group", "root:x:0:\nops:x:2000:\n");
    sys.fs.put_file("/etc/passwd", "root:x:0:0:root:/root:/bin/bash\napp:x:1500:2000::/srv/app:/bin/sh\n");
    auto spec = spec_with({{"directories",
                            {{{"path", "/srv/app/data"}, {"mode", "0750"}, {"owner", "app"}, {"group", "ops"}},
                             {{"path", "/srv/shared"}, {"owner", "app"}, {"group", "ops"}, {"recursive", true}}}}});
    sys.fs.put_dir("/srv/shared");
    sys.fs.put_file("/srv/shared/sub/file", "x");
    auto first = run(sys, spec);
    ASSERT_TRUE(first.ok()) << to_report_json(first).dump(2);
    auto data = sys.fs.stat("/srv/app/data").value();
    ASSERT_TRUE(data.has_value());
    EXPECT_EQ(data->type, FileType::directory);
    EXPECT_EQ(data->mode, 0750u);
    EXPECT_EQ(data->uid, 1500u);
    EXPECT_EQ(data->gid, 2000u);
    EXPECT_EQ(sys.fs.stat("/srv/shared/sub/file").value()->uid, 1500u);  // recursive: true
    EXPECT_EQ(sys.fs.stat("/srv/shared/sub").value()->gid, 2000u);
    EXPECT_EQ(run(sys, spec).counts().changed, 0);

    ASSERT_TRUE(sys.fs.chmod("/srv/app/data", 0777).ok());
    sys.fs.put_file("/srv/app/data/own", "x");  // not recursive: its owner is left alone
    sys.fs.put_file("/srv/shared/new", "x");
    auto plan = run(sys, spec, RunMode::check);
    EXPECT_EQ(status(plan, "directory:/srv/app/data"), "drifted: would update mode");
    EXPECT_EQ(status(plan, "directory:/srv/shared"), "drifted: would update owner (recursive)");
    auto repair = run(sys, spec);
    EXPECT_EQ(repair.counts().changed, 2);
    EXPECT_EQ(sys.fs.stat("/srv/app/data").value()->mode, 0750u);
    EXPECT_EQ(sys.fs.stat("/srv/app/data/own").value()->uid, 0u);
    EXPECT_EQ(sys.fs.stat("/srv/shared/new").value()->uid, 1500u);
}

TEST(Directories, AFileInTheWayAndTheStateDirAreRefused) {
    FakeSystem sys;
    sys.fs.put_file("/srv/data", "a file");
    auto report = run(sys, spec_with({{"directories", {{{"path", "/srv/data"}}, {{"path", "/var/lib/nodeform/x"}}}}}));
    EXPECT_NE(status(report, "directory:/srv/data").find("exists and is not a directory"), std::string::npos);
    EXPECT_NE(status(report, "directory:/var/lib/nodeform/x").find("state directory"), std::string::npos);
    EXPECT_EQ(sys.fs.read("/srv/data", 100).value(), "a file");
}

TEST(Symlinks, CreatesRepointsRemovesAndNeverReplacesAFile) {
    FakeSystem sys;
    sys.fs.put_file("/etc/app/real.conf", "x");
    auto spec = spec_with({{"symlinks",
                            {{{"path", "/etc/app/current.conf"}, {"target", "real.conf"}, {"state", "present"}},
                             {{"path", "/usr/local/bin/tool"}, {"target", "/opt/tool/bin/tool"}, {"state", "present"}},
                             {{"path", "/etc/app/old"}, {"state", "absent"}}}}});
    sys.fs.put_file("/etc/app/x", "x");
    ASSERT_TRUE(sys.fs.symlink("x", "/etc/app/old").ok());
    auto first = run(sys, spec);
    ASSERT_TRUE(first.ok()) << to_report_json(first).dump(2);
    EXPECT_EQ(first.counts().changed, 3);
    EXPECT_EQ(sys.fs.read_link("/etc/app/current.conf").value(), "real.conf");
    EXPECT_EQ(sys.fs.read_link("/usr/local/bin/tool").value(), "/opt/tool/bin/tool");
    EXPECT_FALSE(sys.fs.exists("/etc/app/old"));
    EXPECT_EQ(run(sys, spec).counts().changed, 0);

    ASSERT_TRUE(sys.fs.symlink("elsewhere", "/usr/local/bin/tool").ok());
    auto plan = run(sys, spec, RunMode::check);
    EXPECT_EQ(status(plan, "symlink:/usr/local/bin/tool"), "drifted: would point to /opt/tool/bin/tool");
    EXPECT_EQ(run(sys, spec).counts().changed, 1);
    EXPECT_EQ(sys.fs.read_link("/usr/local/bin/tool").value(), "/opt/tool/bin/tool");

    sys.fs.put_file("/etc/app/current.conf", "a real file");
    auto refused = run(sys, spec);
    EXPECT_NE(status(refused, "symlink:/etc/app/current.conf").find("exists and is not a symlink"), std::string::npos);
    EXPECT_EQ(sys.fs.read("/etc/app/current.conf", 100).value(), "a real file");
}

nlohmann::json user_spec(const nlohmann::json& extra, const std::string& password = {}) {
    nlohmann::json user = {{"name", "alice"},       {"shell", "/bin/bash"},
                           {"home", "/home/alice"}, {"groups", nlohmann::json::array()},
                           {"sudo", false},         {"ssh_keys", nlohmann::json::array()},
                           {"state", "present"}};
    for (const auto& [k, v] : extra.items())
        user[k] = v;
    auto spec = spec_with({{"users", {user}}});
    if (!password.empty()) {
        spec["users"][0]["password"] = password;
        spec["secret_paths"] = {"/users/0/password"};
    }
    return spec;
}

TEST(UserPassword, SetsTheHashThroughStdinNeverInArgvOrReportAndRepairsIt) {
    FakeSystem sys;
    sys.fs.put_file("/etc/shadow", "root:*:20000:0:99999:7:::\n", {0640, 0, 42});
    const std::string hash = "$6$saltsalt$Q2Zk1S8Fhb7B9lCq1hnm5yq0zT3A5pR2uJ6hGZ0";
    auto spec = user_spec({}, hash);
    auto first = run(sys, spec);
    ASSERT_TRUE(first.ok()) << to_report_json(first).dump(2);
    EXPECT_NE(sys.fs.read("/etc/shadow", 4096).value().find("alice:" + hash + ":"), std::string::npos);
    for (const auto& req : sys.runner.requests) {
        for (const auto& a : req.argv)
            EXPECT_EQ(a.find("saltsalt"), std::string::npos) << a;
    }
    EXPECT_EQ(to_report_json(first).dump().find("saltsalt"), std::string::npos);
    EXPECT_EQ(to_last_run_json(first).dump().find("saltsalt"), std::string::npos);
    EXPECT_EQ(run(sys, spec).counts().changed, 0);

    sys.set_shadow("alice", 1, "$6$other$abc");
    auto plan = run(sys, spec, RunMode::check);
    const auto* r = find_result(plan, "user:alice");
    ASSERT_NE(r, nullptr);
    EXPECT_EQ(r->status, ResourceStatus::drifted);
    EXPECT_EQ(to_report_json(plan).dump().find("$6$other"), std::string::npos);
    EXPECT_EQ(run(sys, spec).counts().changed, 1);
    EXPECT_NE(sys.fs.read("/etc/shadow", 4096).value().find("alice:" + hash + ":"), std::string::npos);
}

TEST(UserPassword, LockedLocksThePasswordAndExpiresTheAccountUnlockingReversesIt) {
    FakeSystem sys;
    sys.fs.put_file("/etc/shadow", "root:*:20000:0:99999:7:::\n", {0640, 0, 42});
    const std::string hash = "$y$j9T$abcdefgh$ijklmnop";
    auto locked = user_spec({{"locked", true}}, hash);
    ASSERT_TRUE(run(sys, locked).ok());
    auto shadow = sys.fs.read("/etc/shadow", 4096).value();
    EXPECT_NE(shadow.find("alice:!" + hash + ":20000:0:99999:7::1:"), std::string::npos) << shadow;
    EXPECT_EQ(run(sys, locked).counts().changed, 0);
    auto unlocked = user_spec({{"locked", false}}, hash);
    auto report = run(sys, unlocked);
    EXPECT_EQ(report.counts().changed, 1);
    shadow = sys.fs.read("/etc/shadow", 4096).value();
    EXPECT_NE(shadow.find("alice:" + hash + ":20000:0:99999:7:::"), std::string::npos) << shadow;
    // No hash and not locked: "!" (no password) stays; nothing is made passwordless.
    auto bare = user_spec({{"locked", false}});
    sys.set_shadow("alice", 1, "!");
    EXPECT_EQ(run(sys, bare).counts().changed, 0);
    EXPECT_NE(sys.fs.read("/etc/shadow", 4096).value().find("alice:!:"), std::string::npos);
}

TEST(UserPassword, ANonHashIsRefusedWithoutShowingIt) {
    FakeSystem sys;
    sys.fs.put_file("/etc/shadow", "root:*:20000:0:99999:7:::\n");
    auto report = run(sys, user_spec({}, "plain:text\npassword"));
    const auto* r = find_result(report, "user:alice");
    ASSERT_NE(r, nullptr);
    EXPECT_EQ(r->status, ResourceStatus::failed);
    EXPECT_NE(r->message.find("crypt(3) hash"), std::string::npos);
    EXPECT_EQ(r->message.find("plain"), std::string::npos);
}

TEST(Sysctl, OfflineWritesTheDropInOnlyLiveLoadsItWhenTheRunningValueDiffers) {
    FakeSystem sys;
    auto spec = spec_with({{"sysctl",
                            {{{"name", "net.ipv4.ip_forward"}, {"value", "1"}},
                             {{"name", "net.ipv4.ip_local_port_range"}, {"value", "10000 60000"}}}}});
    auto first = run(sys, spec);
    ASSERT_TRUE(first.ok()) << to_report_json(first).dump(2);
    EXPECT_EQ(sys.fs.read("/etc/sysctl.d/90-nodeform-net.ipv4.ip_forward.conf", 1000).value(),
              "# Managed by nodeform: changes here are overwritten.\nnet.ipv4.ip_forward = 1\n");
    EXPECT_EQ(sys.position("sysctl"), -1);  // offline: nothing loaded

    ConvergeOptions live;
    live.root = "/";
    sys.fs.put_file("/proc/sys/net/ipv4/ip_forward", "0\n");
    sys.fs.put_file("/proc/sys/net/ipv4/ip_local_port_range", "10000\t60000\n");
    auto plan = run(sys, spec, RunMode::check, live);
    EXPECT_EQ(status(plan, "sysctl:net.ipv4.ip_forward"), "drifted: would set net.ipv4.ip_forward = 1");
    EXPECT_EQ(find_result(plan, "sysctl:net.ipv4.ip_local_port_range")->status, ResourceStatus::unchanged);
    auto apply = run(sys, spec, RunMode::apply, live);
    EXPECT_EQ(apply.counts().changed, 1);
    EXPECT_NE(sys.position("sysctl -q -p /etc/sysctl.d/90-nodeform-net.ipv4.ip_forward.conf"), -1);
    EXPECT_EQ(sys.position("sysctl -q -p /etc/sysctl.d/90-nodeform-net.ipv4.ip_local_port_range.conf"), -1);
}

TEST(Sysctl, BadNamesAndValuesFail) {
    FakeSystem sys;
    auto report = run(sys, spec_with({{"sysctl",
                                       {{{"name", "../../etc/passwd"}, {"value", "1"}},
                                        {{"name", "kernel.x"}, {"value", "1\nkernel.y = 2"}}}}}));
    EXPECT_EQ(report.counts().failed, 2);
    EXPECT_TRUE(sys.fs.list("/etc/sysctl.d").ok() == false || sys.fs.list("/etc/sysctl.d")->empty());
}

TEST(KernelModules, WritesModulesLoadDAndModprobesOnlyWhatIsNotLoaded) {
    FakeSystem sys;
    ConvergeOptions live;
    live.root = "/";
    sys.fs.put_dir("/sys/module/overlay");
    auto spec = spec_with({{"kernel_modules", {{{"name", "overlay"}}, {{"name", "br_netfilter"}}}}});
    auto report = run(sys, spec, RunMode::apply, live);
    ASSERT_TRUE(report.ok()) << to_report_json(report).dump(2);
    EXPECT_EQ(sys.fs.read("/etc/modules-load.d/nodeform-br_netfilter.conf", 100).value(),
              "# Managed by nodeform: changes here are overwritten.\nbr_netfilter\n");
    EXPECT_NE(sys.position("modprobe -- br_netfilter"), -1);
    EXPECT_EQ(sys.position("modprobe -- overlay"), -1);
    EXPECT_EQ(run(sys, spec, RunMode::apply).counts().changed, 0);  // offline: files already right
    auto bad = run(sys, spec_with({{"kernel_modules", {{{"name", "-r"}}}}}));
    EXPECT_EQ(bad.counts().failed, 1);
}

TEST(Timers, WritesTheUnitPairEnablesTheTimerAndEscapesTheCommand) {
    FakeSystem sys;
    sys.units.insert("backup.timer");
    auto spec =
        spec_with({{"timers",
                    {{{"name", "backup"},
                      {"on_calendar", "*-*-* 03:00"},
                      {"command", {"/usr/local/bin/backup", "--to", "/srv/backup dir", "100%", "$HOME", "a\"b"}},
                      {"user", "root"},
                      {"description", "Nightly backup"},
                      {"persistent", true},
                      {"state", "present"}}}}});
    auto first = run(sys, spec);
    ASSERT_TRUE(first.ok()) << to_report_json(first).dump(2);
    EXPECT_EQ(sys.fs.read("/etc/systemd/system/backup.service", 4096).value(),
              "# Managed by nodeform: changes here are overwritten.\n[Unit]\nDescription=Nightly backup\n\n"
              "[Service]\nType=oneshot\nUser=root\n"
              "ExecStart=/usr/local/bin/backup --to \"/srv/backup dir\" \"100%%\" \"$$HOME\" \"a\\\"b\"\n");
    EXPECT_NE(sys.fs.read("/etc/systemd/system/backup.timer", 4096)
                  .value()
                  .find("[Timer]\nOnCalendar=*-*-* 03:00\nPersistent=true\n\n[Install]\nWantedBy=timers.target\n"),
              std::string::npos);
    EXPECT_TRUE(sys.enabled_units.count("backup.timer"));
    EXPECT_EQ(run(sys, spec).counts().changed, 0);

    sys.enabled_units.erase("backup.timer");
    auto plan = run(sys, spec, RunMode::check);
    EXPECT_EQ(status(plan, "timer:backup"), "drifted: would update enabled");

    auto absent = spec_with({{"timers", {{{"name", "backup"}, {"state", "absent"}}}}});
    ASSERT_TRUE(run(sys, absent).ok());
    EXPECT_FALSE(sys.fs.exists("/etc/systemd/system/backup.service"));
    EXPECT_FALSE(sys.fs.exists("/etc/systemd/system/backup.timer"));
    EXPECT_FALSE(sys.enabled_units.count("backup.timer"));
}

TEST(Timers, ARelativeCommandOrAControlCharacterIsRefused) {
    FakeSystem sys;
    auto report = run(
        sys, spec_with({{"timers",
                         {{{"name", "a"}, {"on_calendar", "daily"}, {"command", {"backup"}}},
                          {{"name", "b"}, {"on_calendar", "daily\nExecStart=/bin/sh"}, {"command", {"/bin/true"}}}}}}));
    EXPECT_NE(status(report, "timer:a").find("full path"), std::string::npos);
    EXPECT_EQ(find_result(report, "timer:b")->status, ResourceStatus::failed);
    EXPECT_FALSE(sys.fs.exists("/etc/systemd/system/a.service"));
}

TEST(FileTemplates, RenderNodeFactsAndFailOnAFactThisNodeLacks) {
    FakeSystem sys;
    auto spec = spec_with(
        {{"site", "lab"},
         {"hostname", {{"hostname", "web-01"}, {"domain", "lab.example.net"}, {"fqdn", "web-01.lab.example.net"}}},
         {"network", {{"mode", "static"}, {"address", "10.20.0.11/24"}}},
         {"files",
          {{{"path", "/etc/app/node.conf"},
            {"content", "name={{ node }} fqdn={{fqdn}} ip={{ primary_ip }} site={{site}} \\{{x}}\n"},
            {"mode", "0644"},
            {"owner", "root"},
            {"group", "root"},
            {"state", "present"},
            {"restart", nlohmann::json::array()},
            {"template", true}},
           {{"path", "/etc/app/plain.conf"},
            {"content", "{{ node }}\n"},
            {"mode", "0644"},
            {"owner", "root"},
            {"group", "root"},
            {"state", "present"},
            {"restart", nlohmann::json::array()}}}}});
    auto report = run(sys, spec);
    ASSERT_TRUE(report.ok()) << to_report_json(report).dump(2);
    EXPECT_EQ(sys.fs.read("/etc/app/node.conf", 1000).value(),
              "name=web-01 fqdn=web-01.lab.example.net ip=10.20.0.11 site=lab {{x}}\n");
    EXPECT_EQ(sys.fs.read("/etc/app/plain.conf", 1000).value(), "{{ node }}\n");  // not a template
    EXPECT_EQ(run(sys, spec).counts().changed, 0);

    spec.erase("network");  // DHCP and no /proc/net/route in this root: primary_ip is unknown
    auto unknown = run(sys, spec);
    EXPECT_NE(status(unknown, "file:/etc/app/node.conf").find("primary_ip is not known on this node"),
              std::string::npos);
}

TEST(FileTemplates, PrimaryIpIsTheDefaultRouteInterfacesAddress) {
    const std::string route =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
        "eth1\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
        "eth0\t00000000\t0102000A\t0003\t0\t0\t100\t00000000\t0\t0\t0\n"
        "eth0\t0002000A\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n";
    const std::string trie =
        "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n"
        "     +-- 10.0.2.0/24 2 0 2\n        |-- 10.0.2.0\n           /24 link UNICAST\n"
        "        |-- 10.0.2.15\n           /32 host LOCAL\n"
        "     +-- 192.168.0.0/24 2 0 2\n        |-- 192.168.0.7\n           /32 host LOCAL\n"
        "  |-- 127.0.0.1\n     /32 host LOCAL\n";
    EXPECT_EQ(primary_ipv4(route, trie), "10.0.2.15");
    EXPECT_EQ(primary_ipv4("Iface\tDestination\n", trie), std::nullopt);
}

TEST(Stacks, AbsentTakesTheStackDownKeepsFilesUnlessToldAndIsQuietOnceDown) {
    FakeSystem sys;
    ConvergeOptions live;
    live.root = "/";
    sys.fs.put_file("/opt/nodeform/stacks/web/docker-compose.yml", "services: {web: {image: x}}\n");
    sys.fs.put_file("/opt/nodeform/stacks/web/.env", "");
    bool up = true;
    sys.runner.handler = [&](const ProcessRequest& r) -> Result<ProcessResult> {
        std::string line;
        for (const auto& a : r.argv)
            line += (line.empty() ? "" : " ") + a;
        if (line.rfind("docker ps -aq --filter label=com.docker.compose.project=web", 0) == 0)
            return ProcessResult{0, false, up ? "abc123\n" : "", ""};
        if (line.find(" down ") != std::string::npos || line.ends_with(" down --remove-orphans")) up = false;
        return ProcessResult{0, false, "", ""};
    };
    auto keep = spec_with({{"stacks", {{{"name", "web"}, {"state", "absent"}, {"remove_files", false}}}}});
    auto plan = run(sys, keep, RunMode::check, live);
    EXPECT_EQ(status(plan, "stack:web"), "drifted: would take down, files kept");
    auto first = run(sys, keep, RunMode::apply, live);
    EXPECT_EQ(status(first, "stack:web"), "changed: taken down, files kept");
    EXPECT_NE(sys.position("docker compose -p web -f /opt/nodeform/stacks/web/docker-compose.yml --env-file "
                           "/opt/nodeform/stacks/web/.env down --remove-orphans"),
              -1);
    EXPECT_TRUE(sys.fs.exists("/opt/nodeform/stacks/web/docker-compose.yml"));
    EXPECT_EQ(status(run(sys, keep, RunMode::apply, live), "stack:web"), "unchanged: down (files kept)");

    auto remove = spec_with({{"stacks", {{{"name", "web"}, {"state", "absent"}, {"remove_files", true}}}}});
    EXPECT_EQ(status(run(sys, remove, RunMode::apply, live), "stack:web"), "changed: taken down, files removed");
    EXPECT_FALSE(sys.fs.exists("/opt/nodeform/stacks/web"));
    EXPECT_EQ(status(run(sys, remove, RunMode::apply, live), "stack:web"), "unchanged: absent");
}

TEST(Stacks, AOneShotServiceThatExitedZeroCountsAsConverged) {
    FakeSystem sys;
    ConvergeOptions live;
    live.root = "/";
    const std::string compose =
        "services:\n  web:\n    image: x\n  migrate:\n    image: x\n    restart: \"no\"\n  worker:\n    image: x\n";
    int exit_code = 0;
    sys.runner.handler = [&](const ProcessRequest& r) -> Result<ProcessResult> {
        if (r.argv.size() > 1 && r.argv[0] == "docker" && r.argv[1] == "inspect") {
            return ProcessResult{0, false,
                                 "true 0 web\nfalse " + std::to_string(exit_code) + " migrate\nfalse 0 worker\n", ""};
        }
        if (r.argv.back() == "-q") return ProcessResult{0, false, "c1\nc2\nc3\n", ""};
        return ProcessResult{0, false, "", ""};
    };
    auto spec = spec_with(
        {{"stacks",
          {{{"name", "app"}, {"compose", compose}, {"env", nlohmann::json::object()}, {"state", "present"}}}}});
    ASSERT_TRUE(run(sys, spec, RunMode::apply, live).ok());
    // web runs, migrate finished with 0 (restart: "no"), worker stopped with 0 but is not a one-shot.
    auto plan = run(sys, spec, RunMode::check, live);
    const auto* r = find_result(plan, "stack:app");
    ASSERT_NE(r, nullptr);
    EXPECT_EQ(r->status, ResourceStatus::drifted);
    EXPECT_EQ(r->changes.at(0).old_value, "2/3 running or completed");
    // The same with worker removed from the file: converged.
    auto one_shot_only = spec;
    one_shot_only["stacks"][0]["compose"] =
        "services:\n  web:\n    image: x\n  migrate:\n    image: x\n    restart: \"no\"\n";
    sys.runner.handler = [&](const ProcessRequest& q) -> Result<ProcessResult> {
        if (q.argv.size() > 1 && q.argv[0] == "docker" && q.argv[1] == "inspect")
            return ProcessResult{0, false, "true 0 web\nfalse " + std::to_string(exit_code) + " migrate\n", ""};
        if (q.argv.back() == "-q") return ProcessResult{0, false, "c1\nc2\n", ""};
        return ProcessResult{0, false, "", ""};
    };
    ASSERT_TRUE(run(sys, one_shot_only, RunMode::apply, live).ok());
    EXPECT_EQ(status(run(sys, one_shot_only, RunMode::check, live), "stack:app"),
              "unchanged: 2/2 running or completed");
    exit_code = 1;  // a one-shot that failed is not converged
    EXPECT_EQ(find_result(run(sys, one_shot_only, RunMode::check, live), "stack:app")->status, ResourceStatus::drifted);
}

TEST(Packages, APinnedVersionIsInstalledExactlyAPrefixIsResolvedAndHoldIsKept) {
    FakeSystem sys;
    sys.fs.put_file("/var/lib/dpkg/status",
                    test::dpkg_stanza("base-files") + test::dpkg_stanza("hello", "installed", "2.9-1"));
    sys.runner.on({"chroot", "/", "apt-cache", "madison", "curl"}, 0,
                  " curl | 7.88.1-10+deb12u5 | http://deb.debian.org/debian bookworm/main amd64 Packages\n"
                  " curl | 7.74.0-1.3 | http://deb.debian.org/debian bullseye/main amd64 Packages\n");
    auto handler = sys.runner.handler;
    sys.runner.handler = nullptr;
    sys.runner.handler = [&sys, handler](const ProcessRequest& r) -> Result<ProcessResult> {
        if (r.argv.size() > 3 && r.argv[2] == "apt-cache" && r.argv[3] == "madison") {
            for (const auto& rule : sys.runner.rules)
                if (rule.argv_prefix == std::vector<std::string>(r.argv.begin(), r.argv.begin() + 5))
                    return rule.result;
        }
        return handler(r);
    };
    auto spec = spec_with({{"packages",
                            {{{"name", "hello"}, {"state", "present"}, {"version", "2.10-3"}, {"hold", true}},
                             {{"name", "curl"}, {"state", "present"}, {"version", "7.88*"}}}}});
    auto plan = run(sys, spec, RunMode::check);
    EXPECT_EQ(find_result(plan, "package:hello")->changes.at(0).field, "version");
    EXPECT_EQ(find_result(plan, "package:hello")->changes.at(0).old_value, "2.9-1");
    auto first = run(sys, spec);
    ASSERT_TRUE(first.ok()) << to_report_json(first).dump(2);
    EXPECT_NE(sys.position("--allow-downgrades --allow-change-held-packages"), -1);
    EXPECT_NE(sys.position("hello=2.10-3 curl=7.88.1-10+deb12u5"), -1);
    EXPECT_NE(sys.position("chroot / apt-mark hold hello"), -1);
    auto again = run(sys, spec);
    EXPECT_EQ(again.counts().changed, 0) << to_report_json(again).dump(2);
    EXPECT_NE(find_result(again, "package:hello")->message.find("held"), std::string::npos);

    auto bad = run(sys, spec_with({{"packages", {{{"name", "hello"}, {"version", "2.10; rm -rf /"}}}}}));
    EXPECT_NE(status(bad, "package:hello").find("invalid version"), std::string::npos);
}

const char* kArmored = "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmDMEZfake\n-----END PGP PUBLIC KEY BLOCK-----\n";

TEST(AptSources, Deb822WithSignedByAndOneUpdateForAllChangedSources) {
    FakeSystem sys;
    auto source = [](const std::string& name, const std::string& uri) {
        return nlohmann::json{{"name", name},
                              {"uris", {uri}},
                              {"suites", {"bookworm"}},
                              {"components", {"main"}},
                              {"architectures", {"amd64"}},
                              {"key", kArmored},
                              {"state", "present"}};
    };
    auto spec = spec_with({{"apt_sources",
                            {source("pg", "https://apt.postgresql.org/pub/repos/apt"),
                             source("docker", "https://download.docker.com/linux/debian")}}});
    auto first = run(sys, spec);
    ASSERT_TRUE(first.ok()) << to_report_json(first).dump(2);
    EXPECT_EQ(sys.fs.read("/etc/apt/sources.list.d/nodeform-pg.sources", 4096).value(),
              "# Managed by nodeform: changes here are overwritten.\nTypes: deb\n"
              "URIs: https://apt.postgresql.org/pub/repos/apt\nSuites: bookworm\nComponents: main\n"
              "Architectures: amd64\nSigned-By: /etc/apt/keyrings/nodeform-pg.asc\n");
    EXPECT_EQ(sys.fs.read("/etc/apt/keyrings/nodeform-pg.asc", 4096).value(), kArmored);
    int updates = 0;
    for (const auto& c : sys.runner.commands())
        updates += c.find("apt-get update") != std::string::npos;
    EXPECT_EQ(updates, 1);
    EXPECT_EQ(sys.position("apt-key"), -1);
    EXPECT_EQ(run(sys, spec).counts().changed, 0);
    updates = 0;
    for (const auto& c : sys.runner.commands())
        updates += c.find("apt-get update") != std::string::npos;
    EXPECT_EQ(updates, 1);  // nothing changed: no update

    auto bad = spec_with({{"apt_sources", {source("x", "ftp://example.net/debian"), source("y", "https://e.net/d")}}});
    bad["apt_sources"][1]["key"] = "not a key";
    auto report = run(sys, bad);
    EXPECT_NE(status(report, "apt_source:x").find("invalid URI"), std::string::npos);
    EXPECT_NE(status(report, "apt_source:y").find("ASCII-armored"), std::string::npos);
    EXPECT_FALSE(sys.fs.exists("/etc/apt/sources.list.d/nodeform-x.sources"));

    sys.runner.handler = [](const ProcessRequest& r) -> Result<ProcessResult> {
        for (const auto& a : r.argv)
            if (a == "update") return ProcessResult{100, false, "", "E: The repository is not signed."};
        return ProcessResult{0, false, "", ""};
    };
    auto failing = run(sys, spec_with({{"apt_sources", {source("z", "https://e.net/z")}}}));
    EXPECT_NE(status(failing, "apt_source:z").find("apt-get update failed"), std::string::npos);
    EXPECT_NE(status(failing, "apt_source:z").find("not signed"), std::string::npos);
}

TEST(Mounts, FormatsOnlyADeviceWithoutSignatureWritesFstabByUuidAndMounts) {
    FakeSystem sys;
    sys.fs.put_file("/etc/fstab",
                    "# static\nUUID=root-uuid / ext4 errors=remount-ro 0 1\n/dev/old /srv/data ext3 defaults 0 2\n");
    sys.fs.put_file("/proc/self/mountinfo", "22 1 8:1 / / rw - ext4 /dev/vda1 rw\n");
    bool formatted = false;
    sys.runner.handler = [&](const ProcessRequest& r) -> Result<ProcessResult> {
        if (r.argv[0] == "blkid") {
            if (r.argv.back() == "/dev/vdc") return ProcessResult{0, false, "DEVNAME=/dev/vdc\nTYPE=LVM2_member\n", ""};
            return formatted ? ProcessResult{0, false, "DEVNAME=/dev/vdb\nUUID=1111-2222\nTYPE=ext4\n", ""}
                             : ProcessResult{2, false, "", ""};
        }
        if (r.argv[0] == "mkfs.ext4") formatted = true;
        if (r.argv[0] == "mount") {
            auto info = sys.fs.read("/proc/self/mountinfo", 4096).value();
            sys.fs.put_file("/proc/self/mountinfo",
                            info + "40 22 254:16 / " + r.argv.back() + " rw - ext4 /dev/vdb rw\n");
        }
        return ProcessResult{0, false, "", ""};
    };
    auto mount = [](const std::string& path, const std::string& device) {
        return nlohmann::json{
            {"path", path}, {"device", device}, {"fstype", "ext4"}, {"options", "defaults,noatime"}, {"format", true}};
    };
    auto spec = spec_with({{"mounts", {mount("/srv/data", "/dev/vdb"), mount("/srv/lvm", "/dev/vdc")}}});
    auto plan = run(sys, spec, RunMode::check);
    EXPECT_EQ(status(plan, "mount:/srv/data"),
              "drifted: would make ext4 on /dev/vdb (it has no signature) and mount it");
    EXPECT_FALSE(formatted);
    auto first = run(sys, spec);
    EXPECT_EQ(status(first, "mount:/srv/data"), "changed: mounted ext4 1111-2222 at /srv/data");
    EXPECT_NE(status(first, "mount:/srv/lvm").find("holds LVM2_member"), std::string::npos);
    EXPECT_NE(status(first, "mount:/srv/lvm").find("never reformats"), std::string::npos);
    EXPECT_EQ(
        sys.fs.read("/etc/fstab", 4096).value(),
        "# static\nUUID=root-uuid / ext4 errors=remount-ro 0 1\nUUID=1111-2222 /srv/data ext4 defaults,noatime 0 2\n");
    EXPECT_NE(sys.position("mkfs.ext4 -q /dev/vdb"), -1);
    EXPECT_EQ(sys.position("mkfs.ext4 -q /dev/vdc"), -1);
    EXPECT_NE(sys.position("mount -t ext4 -o defaults,noatime /dev/vdb /srv/data"), -1);
    auto again = run(sys, spec);
    EXPECT_EQ(status(again, "mount:/srv/data"), "unchanged: ext4 1111-2222 mounted at /srv/data");
    int mkfs = 0;
    for (const auto& c : sys.runner.commands())
        mkfs += c.rfind("mkfs", 0) == 0;
    EXPECT_EQ(mkfs, 1);
}

TEST(Upgrade, ReadsApsSimulationAndTellsSecurityReleasesApart) {
    auto pending = parse_simulated_upgrade(
        "NOTE: This is only a simulation!\n"
        "Inst base-files [12.4+deb12u11] (12.4+deb12u15 Debian:12.15/oldstable [amd64])\n"
        "Inst libgcrypt20 [1.10.1-3] (1.10.1-3+deb12u1 Debian:12.15/oldstable, Debian-Security:12/oldstable-security "
        "[amd64]) []\n"
        "Inst linux-image-6.1.0-40-amd64 (6.1.153-1 Debian-Security:12/oldstable-security [amd64])\n"
        "Inst tool [1.0] (1.1 nodeform-test:/bookworm-security [all])\n"
        "Conf base-files (12.4+deb12u15 Debian:12.15/oldstable [amd64])\n"
        "Inst broken\n");
    ASSERT_EQ(pending.size(), 4u);
    EXPECT_EQ(pending[0].name, "base-files");
    EXPECT_EQ(pending[0].installed, "12.4+deb12u11");
    EXPECT_EQ(pending[0].version, "12.4+deb12u15");
    EXPECT_FALSE(pending[0].security);
    EXPECT_TRUE(pending[1].security);
    EXPECT_EQ(pending[2].installed, "");  // a new package an upgrade pulls in
    EXPECT_TRUE(pending[2].security);
    EXPECT_TRUE(pending[3].security);  // an archive ending in -security, whatever its label
}

// A FakeSystem whose apt-get upgrade -s offers base-files (point release) and libgcrypt20 (security), and whose
// apt-get upgrade / install --only-upgrade move dpkg's versions as apt would.
struct UpgradeSystem : test::FakeSystem {
    UpgradeSystem() {
        fs.put_file("/var/lib/dpkg/status", test::dpkg_stanza("base-files", "installed", "12.4") +
                                                test::dpkg_stanza("libgcrypt20", "installed", "1.10.1-3") +
                                                test::dpkg_stanza("sudo"));
        auto base = runner.handler;
        runner.handler = [this, base](const ProcessRequest& r) -> Result<ProcessResult> {
            std::vector<std::string> a(r.argv.begin() + 2, r.argv.end());  // without "chroot ROOT"
            if (a.size() > 2 && a[0] == "apt-get" && a[1] == "upgrade" && a[2] == "-s") {
                std::string out;
                auto db = parse_dpkg_status(fs.read("/var/lib/dpkg/status", 1 << 20).value());
                if (db["base-files"].version == "12.4")
                    out += "Inst base-files [12.4] (12.4+deb12u1 Debian:12.15/oldstable [amd64])\n";
                if (db["libgcrypt20"].version == "1.10.1-3")
                    out +=
                        "Inst libgcrypt20 [1.10.1-3] (1.10.1-3+deb12u1 Debian-Security:12/oldstable-security "
                        "[amd64])\n";
                return ProcessResult{0, false, out, ""};
            }
            bool all = a.size() > 1 && a[0] == "apt-get" && a[1] == "upgrade";
            bool only = std::find(a.begin(), a.end(), "--only-upgrade") != a.end();
            if (all || only) {
                for (const auto& [name, version] : std::map<std::string, std::string>{
                         {"base-files", "12.4+deb12u1"}, {"libgcrypt20", "1.10.1-3+deb12u1"}}) {
                    if (all || std::find(a.begin(), a.end(), name) != a.end()) set_package(name, "install", version);
                }
                return ProcessResult{0, false, "", ""};
            }
            return base(r);
        };
    }
    std::string version(const std::string& name) {
        return parse_dpkg_status(fs.read("/var/lib/dpkg/status", 1 << 20).value())[name].version;
    }
    int count(const std::string& prefix) const {
        int n = 0;
        for (const auto& c : runner.commands())
            n += c.find(prefix) != std::string::npos;
        return n;
    }
};

TEST(Upgrade, SecurityUpgradesOnlySecurityPackagesOncePerIntervalRememberedInTheStateDir) {
    UpgradeSystem sys;
    auto spec = spec_with({{"upgrade", {{"policy", "security"}, {"interval_s", 86400}}}});
    auto plan = run(sys, spec, RunMode::check);
    EXPECT_EQ(status(plan, "upgrade:security"), "drifted: would upgrade 1 package(s) (security)");
    EXPECT_EQ(find_result(plan, "upgrade:security")->changes.at(0).field, "libgcrypt20");
    EXPECT_EQ(sys.count("apt-get update"), 0);  // a plan changes nothing, apt's lists included

    const auto planned = sys.runner.requests.size();
    auto first = run(sys, spec);
    EXPECT_EQ(status(first, "upgrade:security"), "changed: upgraded 1 package(s) (security)")
        << to_report_json(first).dump(2);
    EXPECT_NE(sys.position("apt-get install -y -q --only-upgrade --no-install-recommends libgcrypt20 -o"), -1);
    EXPECT_EQ(sys.version("libgcrypt20"), "1.10.1-3+deb12u1");
    EXPECT_EQ(sys.version("base-files"), "12.4");
    EXPECT_NE(sys.runner.commands().at(planned).find("apt-get update"), std::string::npos);
    auto record = nlohmann::json::parse(sys.fs.read("/var/lib/nodeform/upgrade.json", 4096).value());
    EXPECT_EQ(record["policy"], "security");

    // Within the interval: no apt at all.
    const auto before = sys.runner.requests.size();
    auto again = run(sys, spec);
    EXPECT_EQ(sys.runner.requests.size(), before);
    EXPECT_EQ(status(again, "upgrade:security").rfind("unchanged: last run ", 0), 0u)
        << status(again, "upgrade:security");

    // Another policy is due at once: all upgrades what security left.
    auto all = run(sys, spec_with({{"upgrade", {{"policy", "all"}, {"interval_s", 86400}}}}));
    EXPECT_EQ(status(all, "upgrade:all"), "changed: upgraded 1 package(s) (all)");
    EXPECT_NE(sys.position("apt-get upgrade -y -q --with-new-pkgs -o"), -1);
    EXPECT_EQ(sys.version("base-files"), "12.4+deb12u1");

    // The interval passed (the record is a day old): due again, nothing left to upgrade, recorded again.
    sys.fs.put_file(
        "/var/lib/nodeform/upgrade.json",
        R"({"policy":"all","last_run":")" + format_rfc3339(sys.clock.now() - std::chrono::hours(25)) + "\"}\n");
    auto later = run(sys, spec_with({{"upgrade", {{"policy", "all"}, {"interval_s", 86400}}}}));
    EXPECT_EQ(status(later, "upgrade:all"), "unchanged: nothing to upgrade (all)");
    EXPECT_EQ(sys.count("apt-get update"), 3);
    EXPECT_NE(sys.fs.read("/var/lib/nodeform/upgrade.json", 4096).value().find(format_rfc3339(sys.clock.now())),
              std::string::npos);
}

TEST(Upgrade, NoneRunsNothingAndAFailedUpgradeIsNotRecorded) {
    UpgradeSystem sys;
    auto none = run(sys, spec_with({{"upgrade", {{"policy", "none"}, {"interval_s", 86400}}}}));
    EXPECT_EQ(find_result(none, "upgrade:none"), nullptr);
    EXPECT_EQ(sys.count("apt-get"), 0);

    sys.runner.handler = [](const ProcessRequest& r) -> Result<ProcessResult> {
        if (std::find(r.argv.begin(), r.argv.end(), "update") != r.argv.end())
            return ProcessResult{100, false, "", "E: Could not get lock /var/lib/dpkg/lock-frontend"};
        return ProcessResult{0, false, "", ""};
    };
    auto failed = run(sys, spec_with({{"upgrade", {{"policy", "all"}, {"interval_s", 86400}}}}));
    EXPECT_EQ(status(failed, "upgrade:all").rfind("failed: apt-get update failed: the dpkg lock is held", 0), 0u)
        << status(failed, "upgrade:all");
    EXPECT_FALSE(sys.fs.exists("/var/lib/nodeform/upgrade.json"));  // the next run tries again
}

TEST(Locale, GeneratesOnlyAMissingLocaleEnablingItsLineAndSetsLang) {
    FakeSystem sys;
    auto spec = spec_with({{"locale", "en_US.UTF-8"}});
    auto none = run(sys, spec);
    EXPECT_NE(status(none, "locale:en_US.UTF-8").find("add the package locales"), std::string::npos)
        << status(none, "locale:en_US.UTF-8");

    sys.fs.put_file("/usr/share/i18n/SUPPORTED", "de_DE.UTF-8 UTF-8\nen_US.UTF-8 UTF-8\nen_US ISO-8859-1\n");
    sys.fs.put_file("/etc/locale.gen", "# a comment\n# de_DE.UTF-8 UTF-8\n# en_US.UTF-8 UTF-8\n");
    auto first = run(sys, spec);
    EXPECT_EQ(status(first, "locale:en_US.UTF-8"), "changed: LANG set to en_US.UTF-8");
    EXPECT_EQ(sys.fs.read("/etc/locale.gen", 4096).value(), "# a comment\n# de_DE.UTF-8 UTF-8\nen_US.UTF-8 UTF-8\n");
    EXPECT_EQ(sys.fs.read("/etc/default/locale", 4096).value(), "LANG=en_US.UTF-8\n");
    EXPECT_NE(sys.position("locale-gen"), -1);

    sys.fs.put_dir("/usr/lib/locale/en_US.utf8");  // what locale-gen made
    const auto before = sys.runner.requests.size();
    auto again = run(sys, spec);
    EXPECT_EQ(status(again, "locale:en_US.UTF-8"), "unchanged: LANG is en_US.UTF-8");
    EXPECT_EQ(sys.runner.requests.size(), before) << "generated: no localedef, no locale-gen";

    auto typo = run(sys, spec_with({{"locale", "en_XX.UTF-8"}}));
    EXPECT_NE(status(typo, "locale:en_XX.UTF-8").find("not in /usr/share/i18n/SUPPORTED"), std::string::npos);
    auto c = run(sys, spec_with({{"locale", "C.UTF-8"}}));
    EXPECT_EQ(status(c, "locale:C.UTF-8"), "changed: LANG set to C.UTF-8");
    auto bad = run(sys, spec_with({{"locale", "en_US.UTF-8;reboot"}}));
    EXPECT_NE(status(bad, "locale:en_US.UTF-8;reboot").find("invalid locale"), std::string::npos);
}

}  // namespace
}  // namespace nodeform::agent
