// The real inotify watcher in a temporary root (no timing targets: each wait is for readiness, generously
// bounded), and what a spec makes the daemon watch.
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include <gtest/gtest.h>

#include "nodeform/agent/daemon/watcher.hpp"
#include "nodeform/atomic_file.hpp"
#include "test_paths.hpp"

namespace nodeform::agent::daemon {
namespace {

using Json = nlohmann::json;
namespace fs = std::filesystem;

// Waits (at most 10 s) until the watcher has something, then takes what accumulated.
std::vector<std::string> next_changes(ChangeWatcher& w) {
    pollfd p{w.fd(), POLLIN, 0};
    if (::poll(&p, 1, 10000) != 1) return {};
    return w.take_changes();
}

// inotify queues an event during the system call that causes it: nothing watched changed if nothing is taken now.
bool quiet(ChangeWatcher& w) {
    return w.take_changes().empty();
}

void put(const std::string& path, const std::string& text) {
    ASSERT_TRUE(write_file_atomic(path, text, WriteOptions{0644, false}));
}

class InotifyWatcherTest : public ::testing::Test {
  protected:
    void SetUp() override {
        root = dir.path();
        fs::create_directories(root + "/etc/sudoers.d");
        put(root + "/etc/group", "root:x:0:\n");
        put(root + "/etc/motd", "hi\n");
        put(root + "/etc/unrelated", "x\n");
        auto made = make_inotify_watcher(root);
        ASSERT_TRUE(made) << made.message();
        w = std::move(*made);
        w->watch({"/etc/group", "/etc/motd", "/etc/sudoers.d", "/etc/nginx/conf.d/site.conf"});
        ASSERT_TRUE(quiet(*w));
    }
    test::TempDir dir;
    std::string root;
    std::unique_ptr<ChangeWatcher> w;
};

TEST_F(InotifyWatcherTest, AFileReplacedByRenameStaysWatched) {
    put(root + "/etc/group", "root:x:0:\nops:x:2000:\n");  // temp + rename, as editors and the agent write
    EXPECT_EQ(next_changes(*w), std::vector<std::string>{"/etc/group"});
    put(root + "/etc/group", "root:x:0:\n");  // the second replacement is seen too (nothing to re-arm)
    EXPECT_EQ(next_changes(*w), std::vector<std::string>{"/etc/group"});
    fs::remove(root + "/etc/motd");
    EXPECT_EQ(next_changes(*w), std::vector<std::string>{"/etc/motd"});
    ::chmod((root + "/etc/group").c_str(), 0600);
    EXPECT_EQ(next_changes(*w), std::vector<std::string>{"/etc/group"});
}

TEST_F(InotifyWatcherTest, OtherFilesInTheSameDirectoryAreNoChange) {
    put(root + "/etc/unrelated", "y\n");
    put(root + "/etc/motd", "changed\n");
    EXPECT_EQ(next_changes(*w), std::vector<std::string>{"/etc/motd"}) << "only the watched name";
    EXPECT_TRUE(quiet(*w));
}

TEST_F(InotifyWatcherTest, AManagedDirectoryIsWatchedThroughItsEntriesAndReArmedWhenRecreated) {
    put(root + "/etc/sudoers.d/alice", "alice ALL=(ALL) ALL\n");
    EXPECT_EQ(next_changes(*w), std::vector<std::string>{"/etc/sudoers.d"});
    fs::remove_all(root + "/etc/sudoers.d");
    EXPECT_EQ(next_changes(*w), std::vector<std::string>{"/etc/sudoers.d"});
    fs::create_directories(root + "/etc/sudoers.d");
    EXPECT_EQ(next_changes(*w), std::vector<std::string>{"/etc/sudoers.d"});
    put(root + "/etc/sudoers.d/bob", "bob ALL=(ALL) ALL\n");
    EXPECT_EQ(next_changes(*w), std::vector<std::string>{"/etc/sudoers.d"}) << "the new directory is watched";
}

TEST_F(InotifyWatcherTest, AFileWhoseDirectoryAppearsLaterIsWatchedAfterTheNextWatchCall) {
    fs::create_directories(root + "/etc/nginx/conf.d");
    put(root + "/etc/nginx/conf.d/site.conf", "server {}\n");
    EXPECT_TRUE(quiet(*w)) << "its directory did not exist when watched";
    w->watch({"/etc/group", "/etc/motd", "/etc/sudoers.d", "/etc/nginx/conf.d/site.conf"});  // after each run
    put(root + "/etc/nginx/conf.d/site.conf", "server { listen 80; }\n");
    EXPECT_EQ(next_changes(*w), std::vector<std::string>{"/etc/nginx/conf.d/site.conf"});
}

TEST_F(InotifyWatcherTest, ASymlinkOutOfTheRootIsNotFollowed) {
    test::TempDir outside;
    fs::create_directories(outside.path() + "/sub");
    put(outside.path() + "/sub/secret", "x\n");
    fs::create_directory_symlink(outside.path(), root + "/srv");
    w->watch({"/srv/sub/secret", "/etc/motd"});
    put(outside.path() + "/sub/secret", "y\n");
    put(root + "/etc/motd", "y\n");
    EXPECT_EQ(next_changes(*w), std::vector<std::string>{"/etc/motd"});
}

TEST(WatchedPaths, NameWhatTheSpecManages) {
    Json spec = {{"files", {{{"path", "/etc/motd"}}, {{"path", "/etc/nginx/conf.d/site.conf"}}}},
                 {"users", {{{"name", "alice"}, {"home", "/home/alice"}}}},
                 {"packages", {{{"name", "nginx"}}}},
                 {"stacks", {{{"name", "metrics"}}, {{"name", "../x"}}}}};
    EXPECT_EQ(
        watched_paths(spec),
        (std::vector<std::string>{"/etc/group", "/etc/gshadow", "/etc/motd", "/etc/nginx/conf.d/site.conf",
                                  "/etc/passwd", "/etc/shadow", "/etc/sudoers.d", "/home/alice/.ssh/authorized_keys",
                                  "/opt/nodeform/stacks/metrics", "/var/lib/dpkg/status"}));
    EXPECT_TRUE(watched_paths(Json::object()).empty());
    EXPECT_TRUE(watched_paths(Json{{"files", "nonsense"}}).empty());
}

// The kinds of issue 16 that write outside files[]: their files, or the drop-in directory they write into.
TEST(WatchedPaths, TheSystemKindsAreWatchedAndTheirOwnWritesRecognized) {
    Json spec = {{"timezone", "Europe/Berlin"},
                 {"sysctl", {{{"name", "vm.swappiness"}}}},
                 {"kernel_modules", {{{"name", "br_netfilter"}}}},
                 {"apt_sources", {{{"name", "docker"}}}},
                 {"mounts", {{{"path", "/srv/data"}, {"device", "/dev/vdb"}}}},
                 {"timers", {{{"name", "backup"}}, {{"name", "../x"}}}}};
    EXPECT_EQ(watched_paths(spec),
              (std::vector<std::string>{"/etc/apt/keyrings", "/etc/apt/sources.list.d", "/etc/fstab", "/etc/localtime",
                                        "/etc/modules-load.d", "/etc/sysctl.d", "/etc/systemd/system/backup.service",
                                        "/etc/systemd/system/backup.timer", "/etc/timezone"}));
    EXPECT_TRUE(written_by("timezone:Europe/Berlin", "/etc/localtime"));
    EXPECT_TRUE(written_by("sysctl:vm.swappiness", "/etc/sysctl.d"));
    EXPECT_TRUE(written_by("kernel_module:br_netfilter", "/etc/modules-load.d"));
    EXPECT_TRUE(written_by("apt_source:docker", "/etc/apt/keyrings"));
    EXPECT_TRUE(written_by("mount:/srv/data", "/etc/fstab"));
    EXPECT_TRUE(written_by("timer:backup", "/etc/systemd/system/backup.timer"));
    EXPECT_FALSE(written_by("timer:backup", "/etc/systemd/system/other.timer"));
    EXPECT_FALSE(written_by("sysctl:vm.swappiness", "/etc/fstab"));
}

TEST(WatchedPaths, WhatARunThatChangedAResourceWroteItself) {
    EXPECT_TRUE(written_by("file:/etc/motd", "/etc/motd"));
    EXPECT_FALSE(written_by("file:/etc/motd", "/etc/group"));
    EXPECT_TRUE(written_by("user:alice", "/etc/group"));
    EXPECT_TRUE(written_by("group:ops", "/etc/gshadow"));
    EXPECT_TRUE(written_by("user:alice", "/etc/sudoers.d"));
    EXPECT_TRUE(written_by("user:alice", "/home/alice/.ssh/authorized_keys"));
    EXPECT_FALSE(written_by("user:alice", "/etc/motd"));
    EXPECT_TRUE(written_by("package:nginx", "/var/lib/dpkg/status"));
    EXPECT_TRUE(written_by("stack:metrics", "/opt/nodeform/stacks/metrics"));
    EXPECT_FALSE(written_by("stack:metrics", "/opt/nodeform/stacks/metrics2"));
    EXPECT_FALSE(written_by("service:nginx.service", "/etc/motd"));
    EXPECT_FALSE(written_by("nonsense", "/etc/motd"));
}

TEST(WatchedPaths, UnitExpectations) {
    Json spec = {{"services",
                  {{{"name", "nginx.service"}, {"enabled", true}, {"running", true}},
                   {{"name", "telnet.socket"}, {"enabled", false}, {"running", false}},
                   {{"name", "odd.service"}}}}};
    auto units = unit_expectations(spec);
    ASSERT_EQ(units.size(), 2u);
    EXPECT_FALSE(unit_differs(units[0], "active"));
    EXPECT_FALSE(unit_differs(units[0], "reloading"));
    EXPECT_TRUE(unit_differs(units[0], "inactive"));
    EXPECT_TRUE(unit_differs(units[0], "failed"));
    EXPECT_FALSE(unit_differs(units[1], "inactive"));
    EXPECT_TRUE(unit_differs(units[1], "active"));
}

// A managed service's cgroup directory: its creation and removal (systemd starting or stopping the unit) are
// changes; what happens inside it (cgroup.events, memory.events) is not watched.
TEST(WatchedPaths, EachManagedServicesCgroupIsWatchedForItsComingAndGoing) {
    Json spec = {{"services",
                  {{{"name", "nginx.service"}, {"running", true}},
                   {{"name", "ssh"}, {"running", true}},
                   {{"name", "../escape.service"}, {"running", true}},
                   {{"name", "odd.service"}}}}};
    EXPECT_EQ(
        watched_paths(spec),
        (std::vector<std::string>{
            "/sys/fs/cgroup/system.slice/nginx.service", "/sys/fs/cgroup/system.slice/ssh.service",
            "/sys/fs/cgroup/systemd/system.slice/nginx.service", "/sys/fs/cgroup/systemd/system.slice/ssh.service",
            "/sys/fs/cgroup/unified/system.slice/nginx.service", "/sys/fs/cgroup/unified/system.slice/ssh.service"}));
    EXPECT_EQ(unit_of_cgroup("/sys/fs/cgroup/unified/system.slice/ssh.service"), "ssh.service");
    EXPECT_EQ(unit_of_cgroup("/sys/fs/cgroup/system.slice/nginx.service"), "nginx.service");
    EXPECT_EQ(unit_of_cgroup("/sys/fs/cgroup/system.slice/nginx.service/cgroup.events"), "");
    EXPECT_EQ(unit_of_cgroup("/etc/motd"), "");

    test::TempDir dir;
    const std::string slice = dir.path() + "/sys/fs/cgroup/system.slice";
    fs::create_directories(slice + "/nginx.service");
    auto made = make_inotify_watcher(dir.path());
    ASSERT_TRUE(made) << made.message();
    auto& w = **made;
    w.watch(watched_paths(spec));
    put(slice + "/nginx.service/cgroup.events", "populated 0\n");  // inside the cgroup: not watched
    fs::create_directory(slice + "/other.service");                // another unit: not ours
    EXPECT_TRUE(quiet(w));
    fs::remove_all(slice + "/nginx.service");  // the unit stopped
    EXPECT_EQ(next_changes(w), std::vector<std::string>{"/sys/fs/cgroup/system.slice/nginx.service"});
    fs::create_directory(slice + "/ssh.service");  // the unit started
    EXPECT_EQ(next_changes(w), std::vector<std::string>{"/sys/fs/cgroup/system.slice/ssh.service"});
}

}  // namespace
}  // namespace nodeform::agent::daemon
