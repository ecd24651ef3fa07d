// nodeform-agent apply/plan against a real debootstrapped Debian root (scripts/test-setup.sh builds and
// caches it): real apt/dpkg, useradd, visudo and systemctl --root. Each test converges its own copy,
// inside a private mount namespace with /proc and /dev mounted, so nothing leaks onto the host.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "nodeform/atomic_file.hpp"
#include "nodeform/clock.hpp"
#include "nodeform/posix_process_runner.hpp"
#include "real_systems.hpp"
#include "test_paths.hpp"

namespace nodeform::agent {
namespace {

namespace fs = std::filesystem;

struct CommandRun {
    int exit_code = -1;
    std::string out;
    std::string err;
    nlohmann::json json() const { return nlohmann::json::parse(out, nullptr, false); }
};

class RootTest : public ::testing::Test {
  protected:
    void SetUp() override {
        if (::geteuid() != 0) GTEST_SKIP() << "needs root (chroot, mount namespaces, useradd --root)";
        source_ = test::cached_rootfs();
        if (source_.empty() || !fs::exists(source_ + "/.nodeform-complete")) {
            GTEST_SKIP() << "no cached Debian root: run scripts/test-setup.sh first (or set NODEFORM_TEST_ROOTFS)";
        }
        root_ = tmp_.path() + "/root";
        auto copy = sh({"cp", "-a", "--reflink=auto", source_ + "/.", root_ + "/"}, "mkdir -p \"$0\" && exec \"$@\"");
        ASSERT_EQ(copy.exit_code, 0) << copy.err;
        // The agent must put its own policy-rc.d in place for apt in an offline root (and remove it).
        fs::remove(root_ + "/usr/sbin/policy-rc.d");
    }

    void TearDown() override {
        if (!root_.empty()) {
            std::error_code ec;
            fs::remove_all(root_, ec);
        }
    }

    // Runs argv through sh -c script (script sees the argv as "$@"; $0 is the root).
    CommandRun sh(const std::vector<std::string>& argv, const std::string& script,
                  std::chrono::seconds timeout = std::chrono::minutes(5)) {
        PosixProcessRunner runner;
        ProcessRequest request;
        request.argv = {"sh", "-c", script, root_};
        request.argv.insert(request.argv.end(), argv.begin(), argv.end());
        request.timeout = timeout;
        request.output_limit = 4 * 1024 * 1024;
        auto result = runner.run(request);
        if (!result) return CommandRun{-1, "", result.message()};
        return CommandRun{result->exit_code, result->out, result->err};
    }

    // nodeform-agent ARGS in a private mount namespace with the root's /proc and /dev mounted.
    // extra_mounts runs first inside the namespace (e.g. a small filesystem for the full-disk test).
    // after runs in the namespace once the agent has finished (its exit code is kept).
    CommandRun agent(std::vector<std::string> args, const std::string& extra_mounts = "",
                     const std::string& after = "") {
        std::string run = after.empty() ? " exec \"$@\"" : " set +e; \"$@\"; rc=$?; " + after + " exit $rc";
        std::vector<std::string> argv = {
            "unshare",
            "--mount",
            "--fork",
            "--",
            "sh",
            "-c",
            "set -e; mount -t proc proc \"$0/proc\"; mount --bind /dev \"$0/dev\"; " + extra_mounts + run,
            root_,
            test::binary_dir() + "/agent/nodeform-agent"};
        argv.insert(argv.end(), args.begin(), args.end());
        PosixProcessRunner runner;
        ProcessRequest request;
        request.argv = argv;
        request.timeout = std::chrono::minutes(10);
        request.output_limit = 4 * 1024 * 1024;
        auto result = runner.run(request);
        if (!result) return CommandRun{-1, "", result.message()};
        return CommandRun{result->exit_code, result->out, result->err};
    }

    // Runs a command inside the root (chroot, private namespace with /proc).
    CommandRun in_root(std::vector<std::string> args) {
        std::vector<std::string> argv = {"unshare",
                                         "--mount",
                                         "--fork",
                                         "--",
                                         "sh",
                                         "-c",
                                         "mount -t proc proc \"$0/proc\" && exec chroot \"$0\" \"$@\"",
                                         root_};
        argv.insert(argv.end(), args.begin(), args.end());
        PosixProcessRunner runner;
        ProcessRequest request;
        request.argv = argv;
        request.timeout = std::chrono::minutes(5);
        auto result = runner.run(request);
        if (!result) return CommandRun{-1, "", result.message()};
        return CommandRun{result->exit_code, result->out, result->err};
    }

    std::string write_spec(const nlohmann::json& spec) {
        std::string path = tmp_.path() + "/spec-" + std::to_string(++specs_) + ".json";
        EXPECT_TRUE(write_file_atomic(path, spec.dump(), {0600, false}).ok());
        return path;
    }

    std::string file(const std::string& in_root_path) {
        auto text = read_file(root_ + in_root_path);
        return text ? *text : std::string("<missing>");
    }

    static std::set<std::string> ids_with(const nlohmann::json& report, const std::string& status) {
        std::set<std::string> ids;
        for (const auto& r : report["resources"]) {
            if (r["status"] == status) ids.insert(r["id"].get<std::string>());
        }
        return ids;
    }

    static std::string status_of(const nlohmann::json& report, const std::string& id) {
        for (const auto& r : report["resources"]) {
            if (r["id"] == id) return r["status"].get<std::string>() + ": " + r["message"].get<std::string>();
        }
        return "<no result>";
    }

    test::TempDir tmp_;
    std::string source_;
    std::string root_;
    int specs_ = 0;
};

nlohmann::json full_spec() {
    return nlohmann::json::parse(R"({
      "schema_version": 1, "identity": "web-01", "spec": "web", "posture": "prod", "site": "lab",
      "hostname": {"hostname": "web-01", "domain": "lab.example.net", "fqdn": "web-01.lab.example.net"},
      "packages": [{"name": "hello", "state": "present"}],
      "groups": [{"name": "ops", "gid": 2000, "state": "present"}, {"name": "devs", "state": "present"}],
      "users": [
        {"name": "alice", "uid": 1100, "shell": "/bin/bash", "home": "/home/alice", "groups": ["ops"],
         "sudo": true, "sudo_nopasswd": false,
         "ssh_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAliceKeyForTestsOnly alice@laptop"], "state": "present"},
        {"name": "bob", "shell": "/bin/sh", "home": "/home/bob", "groups": ["devs", "ops"],
         "sudo": true, "sudo_nopasswd": true, "ssh_keys": [], "state": "present"}],
      "files": [
        {"path": "/etc/motd", "content": "Managed by nodeform\n", "mode": "0644", "owner": "root", "group": "root",
         "state": "present", "restart": []},
        {"path": "/etc/app/app.conf", "content": "listen=8080\n", "mode": "0640", "owner": "alice", "group": "ops",
         "state": "present", "restart": ["systemd-networkd.service"]}],
      "services": [{"name": "systemd-networkd.service", "enabled": true, "running": true}],
      "stacks": [],
      "secret_paths": ["/users/0/ssh_keys/0"]
    })");
}

TEST_F(RootTest, ConvergesIsIdempotentDetectsDamageAndRepairsIt) {
    const std::string spec = write_spec(full_spec());
    auto first = agent({"apply", "--spec", spec, "--root", root_, "--json"});
    auto report = first.json();
    ASSERT_EQ(first.exit_code, 0) << first.err << report.dump(2);
    EXPECT_EQ(report["counts"]["changed"], 9) << report.dump(2);
    EXPECT_EQ(report["counts"]["failed"], 0);

    // What the machine looks like now, read with the system's own tools and files.
    EXPECT_EQ(in_root({"dpkg-query", "-W", "-f=${Status}", "hello"}).out, "install ok installed");
    EXPECT_EQ(in_root({"hello"}).out, "Hello, world!\n");
    EXPECT_EQ(in_root({"id", "-nG", "alice"}).out, "alice ops\n");
    EXPECT_EQ(in_root({"id", "-nG", "bob"}).out, "bob ops devs\n");
    EXPECT_EQ(in_root({"id", "-u", "alice"}).out, "1100\n");
    EXPECT_EQ(in_root({"getent", "group", "ops"}).out.substr(0, 12), "ops:x:2000:a");
    EXPECT_EQ(file("/home/alice/.ssh/authorized_keys"),
              "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAliceKeyForTestsOnly alice@laptop\n");
    struct stat st {};
    ASSERT_EQ(::stat((root_ + "/home/alice/.ssh/authorized_keys").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0600u);
    EXPECT_EQ(st.st_uid, 1100u);
    ASSERT_EQ(::stat((root_ + "/home/alice/.ssh").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0700u);
    EXPECT_FALSE(fs::exists(root_ + "/home/bob/.ssh/authorized_keys"));
    EXPECT_EQ(file("/etc/sudoers.d/nodeform-bob"),
              "# Managed by nodeform: changes here are overwritten.\nbob ALL=(ALL:ALL) NOPASSWD: ALL\n");
    EXPECT_EQ(in_root({"visudo", "-c"}).exit_code, 0);
    EXPECT_EQ(file("/etc/motd"), "Managed by nodeform\n");
    ASSERT_EQ(::stat((root_ + "/etc/app/app.conf").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0640u);
    EXPECT_EQ(st.st_uid, 1100u);
    EXPECT_EQ(st.st_gid, 2000u);
    EXPECT_EQ(file("/etc/hostname"), "web-01\n");
    EXPECT_NE(file("/etc/hosts").find("127.0.1.1\tweb-01.lab.example.net web-01\n"), std::string::npos);
    EXPECT_TRUE(fs::is_symlink(root_ + "/etc/systemd/system/multi-user.target.wants/systemd-networkd.service"));
    EXPECT_FALSE(fs::exists(root_ + "/usr/sbin/policy-rc.d"));             // put in place for apt, then removed
    EXPECT_FALSE(fs::exists(root_ + "/var/lib/nodeform/platform-ready"));  // an offline root is never "ready"
    auto last = nlohmann::json::parse(file("/var/lib/nodeform/last-run.json"), nullptr, false);
    ASSERT_FALSE(last.is_discarded());
    EXPECT_EQ(last["counts"]["total"], 9);
    EXPECT_EQ(last["success"], true);
    // The SSH key is a secret in this spec: it appears neither in the report nor in last-run.json.
    EXPECT_EQ(first.out.find("AliceKeyForTestsOnly"), std::string::npos);
    EXPECT_EQ(file("/var/lib/nodeform/last-run.json").find("AliceKeyForTestsOnly"), std::string::npos);

    // Second run: nothing changes.
    auto second = agent({"apply", "--spec", spec, "--root", root_, "--json"});
    ASSERT_EQ(second.exit_code, 0) << second.err;
    EXPECT_EQ(second.json()["counts"]["changed"], 0) << second.out;
    EXPECT_EQ(second.json()["counts"]["unchanged"], 9);
    auto plan = agent({"plan", "--spec", spec, "--root", root_});
    EXPECT_EQ(plan.exit_code, 0) << plan.out << plan.err;

    // Damage: delete a file, change a mode, take a user out of a group, purge a package.
    fs::remove(root_ + "/etc/motd");
    fs::permissions(root_ + "/etc/app/app.conf", fs::perms(0666));
    ASSERT_EQ(in_root({"gpasswd", "-d", "alice", "ops"}).exit_code, 0);
    ASSERT_EQ(in_root({"dpkg", "--purge", "hello"}).exit_code, 0);

    auto damaged = agent({"plan", "--spec", spec, "--root", root_, "--json"});
    EXPECT_EQ(damaged.exit_code, 2) << damaged.err;
    EXPECT_EQ(ids_with(damaged.json(), "drifted"),
              (std::set<std::string>{"package:hello", "user:alice", "file:/etc/motd", "file:/etc/app/app.conf"}))
        << damaged.out;
    auto text_plan = agent({"plan", "--spec", spec, "--root", root_});
    EXPECT_EQ(text_plan.exit_code, 2);
    EXPECT_NE(text_plan.out.find("file:/etc/app/app.conf: would update mode"), std::string::npos) << text_plan.out;

    auto repair = agent({"apply", "--spec", spec, "--root", root_, "--json"});
    EXPECT_EQ(repair.exit_code, 0) << repair.err;
    EXPECT_EQ(ids_with(repair.json(), "changed"),
              (std::set<std::string>{"package:hello", "user:alice", "file:/etc/motd", "file:/etc/app/app.conf"}))
        << repair.out;
    EXPECT_EQ(in_root({"id", "-nG", "alice"}).out, "alice ops\n");
    EXPECT_EQ(agent({"plan", "--spec", spec, "--root", root_}).exit_code, 0);
}

TEST_F(RootTest, MissingPackageAndMaliciousUserFailAloneNothingElseHarmed) {
    auto spec = nlohmann::json::parse(R"({
      "schema_version": 1, "identity": "web-02",
      "packages": [{"name": "hello", "state": "present"}, {"name": "nodeform-no-such-package", "state": "present"}],
      "groups": [],
      "users": [{"name": "root;rm -rf /", "state": "present", "groups": [], "ssh_keys": []},
                {"name": "carol", "shell": "/bin/bash", "home": "/home/carol", "groups": [], "ssh_keys": [],
                 "state": "present"}],
      "files": [{"path": "/etc/motd", "content": "still converged\n", "mode": "0644", "owner": "root",
                 "group": "root", "state": "present", "restart": []}],
      "services": [], "stacks": [], "secret_paths": []
    })");
    const std::string passwd_before = file("/etc/passwd");
    auto run = agent({"apply", "--spec", write_spec(spec), "--root", root_, "--json"});
    EXPECT_EQ(run.exit_code, 1);
    auto report = run.json();
    EXPECT_EQ(status_of(report, "package:nodeform-no-such-package")
                  .rfind("failed: package nodeform-no-such-package is "
                         "not available",
                         0),
              0u)
        << report.dump(2);
    EXPECT_EQ(status_of(report, "user:root;rm -rf /").rfind("failed: invalid user name", 0), 0u);
    EXPECT_EQ(ids_with(report, "changed"), (std::set<std::string>{"package:hello", "user:carol", "file:/etc/motd"}));
    EXPECT_EQ(in_root({"dpkg-query", "-W", "-f=${Status}", "hello"}).out, "install ok installed");
    // Everything that was there is still there.
    EXPECT_EQ(file("/etc/passwd").rfind(passwd_before, 0), 0u);
    EXPECT_TRUE(fs::exists(root_ + "/usr/bin/apt-get"));
    EXPECT_TRUE(fs::exists(root_ + "/etc/shadow"));
}

TEST_F(RootTest, HeldDpkgLockIsAPackageFailureWithAClearMessage) {
    // dpkg and apt lock with fcntl: hold lock-frontend the same way from this process.
    int fd = ::open((root_ + "/var/lib/dpkg/lock-frontend").c_str(), O_RDWR | O_CREAT, 0640);
    ASSERT_GE(fd, 0);
    struct flock lk {};
    lk.l_type = F_WRLCK;
    lk.l_whence = SEEK_SET;
    ASSERT_EQ(::fcntl(fd, F_SETLK, &lk), 0);
    auto spec = nlohmann::json::parse(R"({
      "schema_version": 1, "identity": "web-03",
      "packages": [{"name": "hello", "state": "present"}],
      "files": [{"path": "/etc/motd", "content": "x\n", "mode": "0644", "owner": "root", "group": "root",
                 "state": "present", "restart": []}],
      "secret_paths": []
    })");
    auto run = agent({"apply", "--spec", write_spec(spec), "--root", root_, "--json", "--dpkg-lock-timeout", "2s"});
    ::close(fd);
    EXPECT_EQ(run.exit_code, 1);
    auto report = run.json();
    EXPECT_NE(status_of(report, "package:hello").find("the dpkg lock is held by another process"), std::string::npos)
        << report.dump(2);
    EXPECT_EQ(status_of(report, "file:/etc/motd").rfind("changed", 0), 0u);
    EXPECT_NE(in_root({"dpkg-query", "-W", "-f=${Status}", "hello"}).out, "install ok installed");
}

TEST_F(RootTest, FullDiskIsAFileFailureAndLeavesNoDebris) {
    // A small filesystem at /srv/data in the agent's mount namespace: loop-mounted ext4, tmpfs if loop fails.
    const std::string image = tmp_.path() + "/small.img";
    auto mk = sh({image}, "truncate -s 4M \"$1\" && mkfs.ext4 -q -F \"$1\"");
    std::string mounts = "mkdir -p \"$0/srv/data\"; (mount -o loop " + image +
                         " \"$0/srv/data\" 2>/dev/null || mount -t tmpfs -o size=1m tmpfs \"$0/srv/data\");";
    if (mk.exit_code != 0) mounts = "mkdir -p \"$0/srv/data\"; mount -t tmpfs -o size=1m tmpfs \"$0/srv/data\";";
    auto spec = nlohmann::json::parse(R"({
      "schema_version": 1, "identity": "web-04",
      "files": [{"path": "/etc/motd", "content": "ok\n", "mode": "0644", "owner": "root", "group": "root",
                 "state": "present", "restart": []}],
      "secret_paths": []
    })");
    spec["files"].push_back({{"path", "/srv/data/big.bin"},
                             {"content", std::string(8 * 1024 * 1024, 'x')},
                             {"mode", "0644"},
                             {"owner", "root"},
                             {"group", "root"},
                             {"state", "present"},
                             {"restart", nlohmann::json::array()}});
    auto run = agent({"apply", "--spec", write_spec(spec), "--root", root_, "--json"}, mounts,
                     "ls -A \"$0/srv/data\" > \"$0/srv/listing\";");
    EXPECT_EQ(run.exit_code, 1) << run.err;
    auto report = run.json();
    EXPECT_NE(status_of(report, "file:/srv/data/big.bin").find("No space left on device"), std::string::npos)
        << report.dump(2);
    EXPECT_EQ(status_of(report, "file:/etc/motd").rfind("changed", 0), 0u);
    // No temporary file left behind on the full filesystem (lost+found is ext4's own).
    std::string listing = file("/srv/listing");
    EXPECT_EQ(listing.find("nodeform"), std::string::npos) << listing;
    EXPECT_EQ(listing.find("big.bin"), std::string::npos) << listing;
}

// The kinds of issue 16 in a real root: timezone against the root's zoneinfo, directories, symlinks, a password
// hash set with the root's chpasswd and an account locked with its usermod, a template, sysctl and modules-load.d
// drop-ins and a timer enabled with systemctl --root. Converge, second run 0 changed, damage, plan names it, repair.
constexpr const char* kHash =
    "$6$rootTestSalt$CJ1O5SPPaxy8/mMrj5nYCj/akDj5aOeMBBaMI045gfJVoINjk.ABjIO00F/2ngScIj5LzKEVD3uAxk6bxTRmA.";

nlohmann::json kinds_spec() {
    auto spec = nlohmann::json::parse(R"({
      "schema_version": 1, "identity": "app-01", "site": "lab",
      "hostname": {"hostname": "app-01", "domain": "lab.example.net", "fqdn": "app-01.lab.example.net"},
      "network": {"mode": "static", "address": "10.20.0.41/24"},
      "timezone": "Europe/Berlin",
      "groups": [{"name": "ops", "gid": 2100, "state": "present"}],
      "users": [
        {"name": "alice", "uid": 1200, "shell": "/bin/bash", "home": "/home/alice", "groups": ["ops"], "sudo": false,
         "ssh_keys": [], "locked": false, "state": "present"},
        {"name": "bob", "uid": 1201, "shell": "/bin/bash", "home": "/home/bob", "groups": [], "sudo": false,
         "ssh_keys": [], "locked": true, "state": "present"}],
      "directories": [
        {"path": "/srv/app", "mode": "0750", "owner": "alice", "group": "ops", "recursive": false},
        {"path": "/srv/app/cache", "mode": "0770", "owner": "alice", "group": "ops", "recursive": true}],
      "files": [
        {"path": "/etc/app/node.conf", "template": true, "mode": "0644", "owner": "root", "group": "root",
         "state": "present", "restart": [],
         "content": "node={{ node }} fqdn={{ fqdn }} ip={{ primary_ip }} site={{ site }} \\{{ literal }}\n"}],
      "symlinks": [{"path": "/etc/app/current.conf", "target": "node.conf", "state": "present"}],
      "kernel_modules": [{"name": "overlay"}],
      "sysctl": [{"name": "vm.swappiness", "value": "10"}],
      "timers": [{"name": "app-cleanup", "on_calendar": "daily", "command": ["/usr/bin/find", "/srv/app/cache",
                  "-type", "f", "-mtime", "+7", "-delete"], "user": "alice", "description": "Cleanup 100%",
                  "persistent": true, "state": "present"}],
      "secret_paths": ["/users/0/password"]
    })");
    spec["users"][0]["password"] = kHash;
    return spec;
}

TEST_F(RootTest, NewKindsConvergeAreIdempotentAndDamageIsNamedAndRepaired) {
    const std::string spec = write_spec(kinds_spec());
    ASSERT_TRUE(fs::create_directories(root_ + "/srv/app/cache/old"));
    std::ofstream(root_ + "/srv/app/cache/old/entry") << "x";
    auto first = agent({"apply", "--spec", spec, "--root", root_, "--json"});
    auto report = first.json();
    ASSERT_EQ(first.exit_code, 0) << first.err << report.dump(2);
    EXPECT_EQ(report["counts"]["failed"], 0);
    EXPECT_EQ(first.out.find("rootTestSalt"), std::string::npos);  // the hash is a secret
    EXPECT_EQ(file("/var/lib/nodeform/last-run.json").find("rootTestSalt"), std::string::npos);

    EXPECT_EQ(fs::read_symlink(root_ + "/etc/localtime"), "/usr/share/zoneinfo/Europe/Berlin");
    EXPECT_EQ(file("/etc/timezone"), "Europe/Berlin\n");
    EXPECT_EQ(in_root({"date", "+%Z"}).out.substr(0, 2) == "CE", true);  // CET or CEST, read by glibc in the root
    EXPECT_EQ(in_root({"getent", "shadow", "alice"}).out.substr(0, 6 + std::string(kHash).size() + 1),
              std::string("alice:") + kHash + ":");
    auto bob = in_root({"passwd", "-S", "bob"}).out;
    EXPECT_EQ(bob.substr(0, 6), "bob L ") << bob;
    EXPECT_NE(in_root({"chage", "-l", "bob"}).out.find("Jan 02, 1970"), std::string::npos);
    struct stat st {};
    ASSERT_EQ(::stat((root_ + "/srv/app").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0750u);
    EXPECT_EQ(st.st_uid, 1200u);
    EXPECT_EQ(st.st_gid, 2100u);
    ASSERT_EQ(::stat((root_ + "/srv/app/cache/old/entry").c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 1200u);  // recursive
    EXPECT_EQ(file("/etc/app/node.conf"),
              "node=app-01 fqdn=app-01.lab.example.net ip=10.20.0.41 site=lab {{ literal }}\n");
    EXPECT_EQ(fs::read_symlink(root_ + "/etc/app/current.conf"), "node.conf");
    EXPECT_EQ(file("/etc/modules-load.d/nodeform-overlay.conf"),
              "# Managed by nodeform: changes here are overwritten.\noverlay\n");
    EXPECT_EQ(file("/etc/sysctl.d/90-nodeform-vm.swappiness.conf"),
              "# Managed by nodeform: changes here are overwritten.\nvm.swappiness = 10\n");
    EXPECT_NE(file("/etc/systemd/system/app-cleanup.service")
                  .find("User=alice\nExecStart=/usr/bin/find /srv/app/cache -type f -mtime +7 -delete\n"),
              std::string::npos);
    EXPECT_NE(file("/etc/systemd/system/app-cleanup.service").find("Description=Cleanup 100%%\n"), std::string::npos);
    EXPECT_EQ(in_root({"systemctl", "is-enabled", "app-cleanup.timer"}).out, "enabled\n");
    // systemd's own parser accepts both units.
    auto verify = in_root({"systemd-analyze", "verify", "--man=no", "/etc/systemd/system/app-cleanup.timer"});
    EXPECT_EQ(verify.exit_code, 0) << verify.out << verify.err;

    auto second = agent({"apply", "--spec", spec, "--root", root_, "--json"});
    ASSERT_EQ(second.exit_code, 0) << second.err;
    EXPECT_EQ(second.json()["counts"]["changed"], 0) << second.out;
    EXPECT_EQ(agent({"plan", "--spec", spec, "--root", root_}).exit_code, 0);

    // Damage every kind by hand, with the root's own tools where there is one.
    fs::remove(root_ + "/etc/localtime");
    fs::create_symlink("/usr/share/zoneinfo/Etc/UTC", root_ + "/etc/localtime");
    fs::permissions(root_ + "/srv/app", fs::perms(0777));
    fs::remove(root_ + "/etc/app/current.conf");
    ASSERT_EQ(in_root({"usermod", "-e", "", "bob"}).exit_code, 0);
    auto chpasswd = sh({"alice:$6$otherSalt$x"}, "echo \"$1\" | chroot \"$0\" chpasswd -e");
    ASSERT_EQ(chpasswd.exit_code, 0) << chpasswd.err;
    fs::remove(root_ + "/etc/sysctl.d/90-nodeform-vm.swappiness.conf");
    fs::remove(root_ + "/etc/systemd/system/timers.target.wants/app-cleanup.timer");
    std::ofstream(root_ + "/etc/app/node.conf") << "edited\n";

    auto damaged = agent({"plan", "--spec", spec, "--root", root_, "--json"});
    EXPECT_EQ(damaged.exit_code, 2) << damaged.err;
    const std::set<std::string> expected = {
        "timezone:Europe/Berlin", "directory:/srv/app", "symlink:/etc/app/current.conf", "user:alice", "user:bob",
        "sysctl:vm.swappiness",   "timer:app-cleanup",  "file:/etc/app/node.conf"};
    EXPECT_EQ(ids_with(damaged.json(), "drifted"), expected) << damaged.out;
    EXPECT_EQ(damaged.out.find("otherSalt"), std::string::npos);
    auto repair = agent({"apply", "--spec", spec, "--root", root_, "--json"});
    EXPECT_EQ(repair.exit_code, 0) << repair.err << repair.out;
    EXPECT_EQ(ids_with(repair.json(), "changed"), expected) << repair.out;
    EXPECT_EQ(in_root({"passwd", "-S", "bob"}).out.substr(0, 6), "bob L ");
    EXPECT_NE(in_root({"chage", "-l", "bob"}).out.find("Jan 02, 1970"), std::string::npos);
    EXPECT_EQ(agent({"plan", "--spec", spec, "--root", root_}).exit_code, 0);
}

TEST_F(RootTest, AZoneTheRootDoesNotHaveFailsAloneAndTouchesNothing) {
    auto spec = nlohmann::json::parse(R"({
      "schema_version": 1, "identity": "app-02", "timezone": "Europe/Atlantis",
      "files": [{"path": "/etc/motd", "content": "ok\n", "mode": "0644", "owner": "root", "group": "root",
                 "state": "present", "restart": []}],
      "secret_paths": []
    })");
    const auto before = fs::read_symlink(root_ + "/etc/localtime");
    auto run = agent({"apply", "--spec", write_spec(spec), "--root", root_, "--json"});
    EXPECT_EQ(run.exit_code, 1);
    EXPECT_NE(status_of(run.json(), "timezone:Europe/Atlantis").find("is not in /usr/share/zoneinfo"),
              std::string::npos)
        << run.out;
    EXPECT_EQ(status_of(run.json(), "file:/etc/motd").rfind("changed", 0), 0u);
    EXPECT_EQ(fs::read_symlink(root_ + "/etc/localtime"), before);
}

TEST_F(RootTest, PackageVersionPrefixAndHoldWithTheRootsOwnApt) {
    auto spec = nlohmann::json::parse(R"({
      "schema_version": 1, "identity": "app-03",
      "packages": [{"name": "hello", "state": "present", "version": "2.10*", "hold": true},
                   {"name": "less", "state": "present", "version": "9.9*"}],
      "secret_paths": []
    })");
    const std::string path = write_spec(spec);
    auto first = agent({"apply", "--spec", path, "--root", root_, "--json"});
    EXPECT_EQ(first.exit_code, 1) << first.out << first.err;  // less 9.9* does not exist
    EXPECT_NE(status_of(first.json(), "package:less").find("no version of less matching 9.9*"), std::string::npos)
        << first.out;
    EXPECT_EQ(status_of(first.json(), "package:hello").rfind("changed", 0), 0u) << first.out;
    EXPECT_EQ(in_root({"dpkg-query", "-W", "-f=${Version}", "hello"}).out.rfind("2.10", 0), 0u);
    EXPECT_EQ(in_root({"apt-mark", "showhold"}).out, "hello\n");

    spec["packages"].erase(1);
    const std::string good = write_spec(spec);
    auto second = agent({"apply", "--spec", good, "--root", root_, "--json"});
    ASSERT_EQ(second.exit_code, 0) << second.out;
    EXPECT_EQ(second.json()["counts"]["changed"], 0) << second.out;

    ASSERT_EQ(in_root({"apt-mark", "unhold", "hello"}).exit_code, 0);
    auto plan = agent({"plan", "--spec", good, "--root", root_, "--json"});
    EXPECT_EQ(plan.exit_code, 2);
    EXPECT_EQ(ids_with(plan.json(), "drifted"), (std::set<std::string>{"package:hello"})) << plan.out;
    auto repair = agent({"apply", "--spec", good, "--root", root_, "--json"});
    EXPECT_EQ(ids_with(repair.json(), "changed"), (std::set<std::string>{"package:hello"})) << repair.out;
    EXPECT_EQ(in_root({"apt-mark", "showhold"}).out, "hello\n");
}

// python3 -m http.server serving dir on 127.0.0.1 (a free port), for the apt repositories the tests build.
class LoopbackHttp {
  public:
    LoopbackHttp(const std::string& dir, const std::string& log)
        : server_({"python3", "-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory", dir}, log) {
        for (int i = 0; i < 100 && port_.empty(); ++i) {
            std::string text = test::real::slurp(log);
            auto at = text.find(" port ");
            if (at != std::string::npos) port_ = text.substr(at + 6, text.find(' ', at + 6) - at - 6);
            if (port_.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
    }
    // The port it listens on; empty when it did not start.
    const std::string& port() const { return port_; }

  private:
    test::real::BackgroundProcess server_;
    std::string port_;
};

// The repository the apt sources test serves: a package, a Packages index and a Release signed (InRelease) with a
// key made here; wrong.asc is another key, which must not verify it. $1 is the work directory.
// clang-format off
constexpr const char* kBuildRepository = R"SH(set -e; w="$1"; mkdir -p "$w/gnupg" "$w/repo" "$w/pkg/DEBIAN" "$w/pkg/usr/share/nodeform-test"
chmod 700 "$w/gnupg"; export GNUPGHOME="$w/gnupg"
gpg -q --batch --passphrase '' --quick-gen-key 'nodeform test repo <repo@example.invalid>' ed25519 sign never
gpg -q --batch --passphrase '' --quick-gen-key 'someone else <else@example.invalid>' ed25519 sign never
gpg -q --armor --export repo@example.invalid > "$w/key.asc"
gpg -q --armor --export else@example.invalid > "$w/wrong.asc"
printf 'Package: nodeform-test-hello\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@example.invalid>\nDescription: test\n' > "$w/pkg/DEBIAN/control"
echo hello from the loopback repository > "$w/pkg/usr/share/nodeform-test/hello.txt"
dpkg-deb --root-owner-group -Zgzip --build "$w/pkg" "$w/repo/nodeform-test-hello_1.0_all.deb" >/dev/null
cd "$w/repo"; dpkg-scanpackages -m . /dev/null > Packages 2>/dev/null
sum=$(sha256sum Packages | cut -d' ' -f1); size=$(stat -c%s Packages)
printf 'Origin: nodeform-test\nLabel: nodeform-test\nSuite: ./\nDate: %s\nSHA256:\n %s %s Packages\n' "$(date -Ru)" "$sum" "$size" > Release
gpg -q --batch --local-user repo@example.invalid --clearsign -o InRelease Release
)SH";
// clang-format on

// apt sources against a repository the test builds, signs (gpg, a key made here) and serves on loopback: deb822 with
// Signed-By, one apt-get update, the package installed from it; a wrong key fails the source with apt's reason.
TEST_F(RootTest, AptSourceWithSignedByFromTheSiteInstallsFromALoopbackRepository) {
    for (const char* tool : {"gpg", "dpkg-scanpackages", "dpkg-deb", "python3"}) {
        if (sh({tool}, "command -v \"$1\" >/dev/null").exit_code != 0)
            GTEST_SKIP() << tool << " missing: scripts/install-deps.sh test (gnupg, dpkg-dev)";
    }
    const std::string work = tmp_.path() + "/repo-work";
    auto built = sh({work}, kBuildRepository);
    ASSERT_EQ(built.exit_code, 0) << built.err;
    LoopbackHttp server(work + "/repo", work + "/http.log");
    const std::string port = server.port();
    ASSERT_FALSE(port.empty()) << test::real::slurp(work + "/http.log");
    auto spec = nlohmann::json::parse(R"({
      "schema_version": 1, "identity": "app-04",
      "apt_sources": [{"name": "nftest", "suites": ["./"], "components": [], "architectures": [], "state": "present"}],
      "packages": [{"name": "nodeform-test-hello", "state": "present"}],
      "secret_paths": []
    })");
    spec["apt_sources"][0]["uris"] = {"http://127.0.0.1:" + port + "/"};
    spec["apt_sources"][0]["key"] = test::real::slurp(work + "/wrong.asc");
    auto wrong = agent({"apply", "--spec", write_spec(spec), "--root", root_, "--json"});
    EXPECT_EQ(wrong.exit_code, 1) << wrong.out;
    EXPECT_NE(status_of(wrong.json(), "apt_source:nftest").find("apt-get update failed"), std::string::npos)
        << wrong.out;
    EXPECT_EQ(status_of(wrong.json(), "package:nodeform-test-hello").rfind("failed", 0), 0u);

    spec["apt_sources"][0]["key"] = test::real::slurp(work + "/key.asc");
    const std::string path = write_spec(spec);
    auto first = agent({"apply", "--spec", path, "--root", root_, "--json"});
    ASSERT_EQ(first.exit_code, 0) << first.out << first.err;
    EXPECT_EQ(ids_with(first.json(), "changed"),
              (std::set<std::string>{"apt_source:nftest", "package:nodeform-test-hello"}));
    EXPECT_EQ(file("/usr/share/nodeform-test/hello.txt"), "hello from the loopback repository\n");
    EXPECT_EQ(file("/etc/apt/sources.list.d/nodeform-nftest.sources"),
              "# Managed by nodeform: changes here are overwritten.\nTypes: deb\nURIs: http://127.0.0.1:" + port +
                  "/\nSuites: ./\nSigned-By: /etc/apt/keyrings/nodeform-nftest.asc\n");
    auto second = agent({"apply", "--spec", path, "--root", root_, "--json"});
    EXPECT_EQ(second.json()["counts"]["changed"], 0) << second.out;

    fs::remove(root_ + "/etc/apt/sources.list.d/nodeform-nftest.sources");
    auto plan = agent({"plan", "--spec", path, "--root", root_, "--json"});
    EXPECT_EQ(ids_with(plan.json(), "drifted"), (std::set<std::string>{"apt_source:nftest"})) << plan.out;
    auto repair = agent({"apply", "--spec", path, "--root", root_, "--json"});
    EXPECT_EQ(ids_with(repair.json(), "changed"), (std::set<std::string>{"apt_source:nftest"})) << repair.out;
    EXPECT_NE(status_of(repair.json(), "apt_source:nftest").find("apt-get update done"), std::string::npos);
}

// locale with the root's own apt and glibc: the package locales installed in the same run, de_DE.UTF-8 enabled in
// /etc/locale.gen and generated (localedef lists it), LANG in /etc/default/locale; the second run generates nothing;
// a removed /etc/default/locale is drift naming the locale and repaired.
TEST_F(RootTest, LocaleIsGeneratedOnceAndLangSet) {
    auto spec = nlohmann::json::parse(R"({"schema_version": 1, "identity": "app-07", "secret_paths": [],
      "packages": [{"name": "locales", "state": "present"}], "locale": "de_DE.UTF-8"})");
    const std::string path = write_spec(spec);
    auto first = agent({"apply", "--spec", path, "--root", root_, "--json"});
    ASSERT_EQ(first.exit_code, 0) << first.out << first.err;
    EXPECT_EQ(ids_with(first.json(), "changed"), (std::set<std::string>{"package:locales", "locale:de_DE.UTF-8"}));
    EXPECT_EQ(file("/etc/default/locale"), "LANG=de_DE.UTF-8\n");
    EXPECT_NE(file("/etc/locale.gen").find("\nde_DE.UTF-8 UTF-8\n"), std::string::npos);
    EXPECT_NE(in_root({"localedef", "--list-archive"}).out.find("de_DE.utf8"), std::string::npos);
    auto second = agent({"apply", "--spec", path, "--root", root_, "--json"});
    EXPECT_EQ(second.json()["counts"]["changed"], 0) << second.out;
    EXPECT_EQ(status_of(second.json(), "locale:de_DE.UTF-8"), "unchanged: LANG is de_DE.UTF-8");

    fs::remove(root_ + "/etc/default/locale");
    auto plan = agent({"plan", "--spec", path, "--root", root_, "--json"});
    EXPECT_EQ(ids_with(plan.json(), "drifted"), (std::set<std::string>{"locale:de_DE.UTF-8"})) << plan.out;
    auto repair = agent({"apply", "--spec", path, "--root", root_, "--json"});
    EXPECT_EQ(ids_with(repair.json(), "changed"), (std::set<std::string>{"locale:de_DE.UTF-8"})) << repair.out;
    EXPECT_EQ(file("/etc/default/locale"), "LANG=de_DE.UTF-8\n");
}

// Two flat repositories for the upgrade test under $1/repos: main (Label nodeform-test) with nftest-app and sec (Label
// Debian-Security, as Debian's security archive is labelled) with nftest-lib, both at version $2 only, signed with
// one key made on the first call.
// clang-format off
constexpr const char* kPublishUpgradeRepositories = R"SH(set -e; w="$1"; v="$2"; export GNUPGHOME="$w/gnupg"
if [ ! -d "$GNUPGHOME" ]; then mkdir -p "$GNUPGHOME"; chmod 700 "$GNUPGHOME"
  gpg -q --batch --passphrase '' --quick-gen-key 'nodeform upgrade repo <up@example.invalid>' ed25519 sign never
  gpg -q --armor --export up@example.invalid > "$w/key.asc"; fi
# Each publication's index dated 10 s after the last: the test runs within a second, and apt's If-Modified-Since
# (whole seconds) would otherwise get 304 for the new index.
n=$(cat "$w/count" 2>/dev/null || echo 0); n=$((n + 1)); echo $n > "$w/count"
for r in main:nftest-app:nodeform-test sec:nftest-lib:Debian-Security; do
  repo=${r%%:*}; rest=${r#*:}; pkg=${rest%%:*}; label=${rest#*:}
  rm -rf "$w/repos/$repo" "$w/pkg"; mkdir -p "$w/repos/$repo" "$w/pkg/DEBIAN" "$w/pkg/usr/share/$pkg"
  printf 'Package: %s\nVersion: %s\nArchitecture: all\nMaintainer: t <t@example.invalid>\nDescription: test\n' "$pkg" "$v" > "$w/pkg/DEBIAN/control"
  echo "$v" > "$w/pkg/usr/share/$pkg/version"
  dpkg-deb --root-owner-group -Zgzip --build "$w/pkg" "$w/repos/$repo/${pkg}_${v}_all.deb" >/dev/null
  cd "$w/repos/$repo"; dpkg-scanpackages -m . /dev/null > Packages 2>/dev/null
  sum=$(sha256sum Packages | cut -d' ' -f1); size=$(stat -c%s Packages)
  printf 'Origin: nodeform-test\nLabel: %s\nSuite: ./\nDate: %s\nSHA256:\n %s %s Packages\n' "$label" "$(date -Ru)" "$sum" "$size" > Release
  gpg -q --batch --local-user up@example.invalid --clearsign -o InRelease Release
  touch -d "@$(( $(date +%s) + 10 * n ))" InRelease Release Packages; cd - >/dev/null
done
)SH";
// clang-format on

// The upgrade policy against two loopback repositories (the root's own Debian sources removed, so apt sees only
// them): none leaves a newer version alone, security upgrades only the package of the Debian-Security repository,
// all the rest; within the interval apt does not run at all (not even apt-get update: the lists keep the old index);
// once the recorded run is older than the interval, the next run upgrades again.
TEST_F(RootTest, UpgradePolicyUpgradesFromALoopbackRepositoryAtMostOncePerInterval) {
    for (const char* tool : {"gpg", "dpkg-scanpackages", "dpkg-deb", "python3"}) {
        if (sh({tool}, "command -v \"$1\" >/dev/null").exit_code != 0)
            GTEST_SKIP() << tool << " missing: scripts/install-deps.sh test (gnupg, dpkg-dev)";
    }
    const std::string work = tmp_.path() + "/upgrade-work";
    auto publish = [&](const std::string& version) {
        auto built = sh({work, version}, kPublishUpgradeRepositories);
        ASSERT_EQ(built.exit_code, 0) << built.err;
    };
    publish("1.0");
    LoopbackHttp server(work + "/repos", work + "/http.log");
    const std::string port = server.port();
    ASSERT_FALSE(port.empty()) << test::real::slurp(work + "/http.log");
    ASSERT_EQ(sh({}, "rm -f \"$0/etc/apt/sources.list\" \"$0\"/etc/apt/sources.list.d/*").exit_code, 0);

    auto spec = nlohmann::json::parse(R"({"schema_version": 1, "identity": "app-06", "secret_paths": [],
      "packages": [{"name": "nftest-app", "state": "present"}, {"name": "nftest-lib", "state": "present"}]})");
    for (const char* repo : {"main", "sec"}) {
        spec["apt_sources"].push_back({{"name", std::string("nf") + repo},
                                       {"uris", {"http://127.0.0.1:" + port + "/" + repo + "/"}},
                                       {"suites", {"./"}},
                                       {"components", nlohmann::json::array()},
                                       {"architectures", nlohmann::json::array()},
                                       {"key", test::real::slurp(work + "/key.asc")},
                                       {"state", "present"}});
    }
    auto with_policy = [&](const std::string& policy) {
        auto s = spec;
        s["upgrade"] = {{"policy", policy}, {"interval_s", 3600}};
        return write_spec(s);
    };
    auto versions = [&] { return file("/usr/share/nftest-app/version") + file("/usr/share/nftest-lib/version"); };
    auto installed = agent({"apply", "--spec", with_policy("none"), "--root", root_, "--json"});
    ASSERT_EQ(installed.exit_code, 0) << installed.out << installed.err;
    EXPECT_EQ(versions(), "1.0\n1.0\n");

    publish("1.1");
    auto none = agent({"apply", "--spec", with_policy("none"), "--root", root_, "--json"});
    EXPECT_EQ(none.exit_code, 0) << none.out;
    EXPECT_EQ(status_of(none.json(), "upgrade:none"), "<no result>");
    EXPECT_EQ(versions(), "1.0\n1.0\n");  // a newer version is there; none leaves it

    auto security = agent({"apply", "--spec", with_policy("security"), "--root", root_, "--json"});
    ASSERT_EQ(security.exit_code, 0) << security.out << security.err;
    EXPECT_EQ(status_of(security.json(), "upgrade:security"), "changed: upgraded 1 package(s) (security)")
        << security.out;
    EXPECT_EQ(versions(), "1.0\n1.1\n");  // only the package of the Debian-Security repository

    auto all = agent({"apply", "--spec", with_policy("all"), "--root", root_, "--json"});
    ASSERT_EQ(all.exit_code, 0) << all.out << all.err;
    EXPECT_EQ(status_of(all.json(), "upgrade:all"), "changed: upgraded 1 package(s) (all)") << all.out;
    EXPECT_EQ(versions(), "1.1\n1.1\n");
    auto record = nlohmann::json::parse(file("/var/lib/nodeform/upgrade.json"), nullptr, false);
    ASSERT_FALSE(record.is_discarded()) << file("/var/lib/nodeform/upgrade.json");
    EXPECT_EQ(record["policy"], "all");

    publish("1.2");
    auto within = agent({"apply", "--spec", with_policy("all"), "--root", root_, "--json"});
    EXPECT_EQ(within.exit_code, 0) << within.out;
    EXPECT_EQ(status_of(within.json(), "upgrade:all").rfind("unchanged: last run ", 0), 0u) << within.out;
    EXPECT_EQ(versions(), "1.1\n1.1\n");
    auto lists = sh({}, "cat \"$0\"/var/lib/apt/lists/*_Packages");
    EXPECT_EQ(lists.out.find("Version: 1.2"), std::string::npos) << "apt-get update ran within the interval";
    EXPECT_NE(lists.out.find("Version: 1.1"), std::string::npos) << lists.out;

    // The recorded run two hours back: the interval has passed, the next run upgrades.
    record["last_run"] = format_rfc3339(std::chrono::system_clock::now() - std::chrono::hours(2));
    ASSERT_TRUE(write_file_atomic(root_ + "/var/lib/nodeform/upgrade.json", record.dump(), {0644, false}).ok());
    auto later = agent({"apply", "--spec", with_policy("all"), "--root", root_, "--json"});
    EXPECT_EQ(status_of(later.json(), "upgrade:all"), "changed: upgraded 2 package(s) (all)") << later.out;
    EXPECT_EQ(versions(), "1.2\n1.2\n");
}

// mounts against loop devices the test creates: formatted once (the second run keeps the UUID), fstab by UUID,
// mounted; unmounted by hand → drift → mounted again; a device with another signature (swap) is refused untouched.
// All runs share one private mount namespace (the agent's mounts must outlive each run).
TEST_F(RootTest, MountFormatsOnlyAnEmptyDeviceWritesFstabByUuidAndNeverReformats) {
    const std::string work = tmp_.path() + "/mounts";
    fs::create_directories(work);
    auto loops = sh({work},
                    "truncate -s 64M \"$1/a.img\" \"$1/b.img\" && losetup -f --show \"$1/a.img\" > \"$1/a\" && "
                    "losetup -f --show \"$1/b.img\" > \"$1/b\" && mkswap -q \"$(cat \"$1/b\")\"");
    const std::string a = test::real::slurp(work + "/a").substr(0, test::real::slurp(work + "/a").find('\n'));
    const std::string b = test::real::slurp(work + "/b").substr(0, test::real::slurp(work + "/b").find('\n'));
    struct Detach {
        std::vector<std::string> devices;
        ~Detach() {
            for (const auto& d : devices)
                if (!d.empty()) test::real::run({"losetup", "-d", d});
        }
    } detach{{a, b}};
    if (loops.exit_code != 0 || a.empty() || b.empty()) GTEST_SKIP() << "no loop devices here: " << loops.err;
    auto spec = nlohmann::json::parse(R"({"schema_version": 1, "identity": "app-05", "secret_paths": [],
      "directories": [{"path": "/srv/data/app", "mode": "0750", "owner": "root", "group": "root", "recursive": false}]})");
    spec["mounts"] = {
        {{"path", "/srv/data"}, {"device", a}, {"fstype", "ext4"}, {"options", "defaults"}, {"format", true}},
        {{"path", "/srv/swapdisk"}, {"device", b}, {"fstype", "ext4"}, {"options", "defaults"}, {"format", true}}};
    const std::string path = write_spec(spec);
    auto session = sh(
        {test::binary_dir() + "/agent/nodeform-agent", path, work},
        "unshare --mount --fork -- sh -c '"
        "set +e; R=\"$0\"; A=\"$1\"; S=\"$2\"; O=\"$3\"; mount -t proc proc \"$R/proc\"; mount --bind /dev \"$R/dev\"; "
        "\"$A\" apply --spec \"$S\" --root \"$R\" --json > \"$O/1.json\"; echo $? > \"$O/1.rc\"; "
        "\"$A\" apply --spec \"$S\" --root \"$R\" --json > \"$O/2.json\"; "
        "findmnt -n -o FSTYPE \"$R/srv/data\" > \"$O/findmnt\"; "
        "umount \"$R/srv/data\"; "
        "\"$A\" plan --spec \"$S\" --root \"$R\" --json > \"$O/3.json\"; "
        "\"$A\" apply --spec \"$S\" --root \"$R\" --json > \"$O/4.json\"; "
        "findmnt -n -o FSTYPE \"$R/srv/data\" > \"$O/findmnt2\"; umount \"$R/srv/data\"; exit 0' "
        "\"$0\" \"$@\"");
    ASSERT_EQ(session.exit_code, 0) << session.err;
    auto report = [&](int n) {
        return nlohmann::json::parse(test::real::slurp(work + "/" + std::to_string(n) + ".json"), nullptr, false);
    };
    auto first = report(1);
    ASSERT_FALSE(first.is_discarded()) << session.err;
    EXPECT_EQ(test::real::slurp(work + "/1.rc"), "1\n");  // the swap device fails
    EXPECT_EQ(status_of(first, "mount:/srv/data").rfind("changed", 0), 0u) << first.dump(2);
    EXPECT_EQ(status_of(first, "directory:/srv/data/app").rfind("changed", 0), 0u);
    EXPECT_NE(status_of(first, "mount:/srv/swapdisk").find("holds swap"), std::string::npos) << first.dump(2);
    EXPECT_NE(status_of(first, "mount:/srv/swapdisk").find("never reformats"), std::string::npos);
    EXPECT_EQ(test::real::run({"blkid", "-p", "-o", "value", "-s", "TYPE", b}).out, "swap\n");  // untouched
    EXPECT_EQ(test::real::slurp(work + "/findmnt"), "ext4\n");
    const std::string uuid = test::real::run({"blkid", "-p", "-o", "value", "-s", "UUID", a}).out;
    ASSERT_FALSE(uuid.empty());
    EXPECT_NE(file("/etc/fstab").find("UUID=" + uuid.substr(0, uuid.size() - 1) + " /srv/data ext4 defaults 0 2\n"),
              std::string::npos)
        << file("/etc/fstab");
    // Second run: formatted once only (same UUID), nothing changed but the refused device.
    auto second = report(2);
    EXPECT_EQ(status_of(second, "mount:/srv/data").rfind("unchanged", 0), 0u) << second.dump(2);
    EXPECT_EQ(second["counts"]["changed"], 0);
    // Unmounted by hand: plan names it, apply mounts it again, still without formatting.
    auto plan = report(3);
    // (the directory on it is hidden while it is unmounted: drift too, and back once mounted)
    EXPECT_EQ(ids_with(plan, "drifted"), (std::set<std::string>{"mount:/srv/data", "directory:/srv/data/app"}))
        << plan.dump(2);
    auto repair = report(4);
    EXPECT_EQ(ids_with(repair, "changed"), (std::set<std::string>{"mount:/srv/data"})) << repair.dump(2);
    EXPECT_EQ(test::real::slurp(work + "/findmnt2"), "ext4\n");
    EXPECT_EQ(test::real::run({"blkid", "-p", "-o", "value", "-s", "UUID", a}).out, uuid);
}

}  // namespace
}  // namespace nodeform::agent
