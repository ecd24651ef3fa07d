// The real system layer: PosixProcessRunner and the root-confined Filesystem, on scratch directories.
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "nodeform/agent/daemon/spool.hpp"
#include "nodeform/agent/system/filesystem.hpp"
#include "nodeform/agent/system/run_lock.hpp"
#include "nodeform/atomic_file.hpp"
#include "nodeform/posix_process_runner.hpp"
#include "test_paths.hpp"

namespace nodeform::agent {
namespace {

namespace fs = std::filesystem;

ProcessResult run(std::vector<std::string> argv, std::string stdin_data = {},
                  std::chrono::milliseconds timeout = std::chrono::seconds(30), std::size_t limit = 64 * 1024,
                  std::vector<std::string> redact = {}) {
    PosixProcessRunnerOptions options;
    options.kill_grace = std::chrono::milliseconds(200);
    PosixProcessRunner runner(options);
    ProcessRequest r;
    r.argv = std::move(argv);
    r.stdin_data = std::move(stdin_data);
    r.timeout = timeout;
    r.output_limit = limit;
    r.redact = std::move(redact);
    auto result = runner.run(r);
    EXPECT_TRUE(result.ok()) << (result.ok() ? "" : result.message());
    return result.ok() ? *result : ProcessResult{};
}

TEST(PosixProcessRunner, CapturesOutputAndExitCodeWithoutAShell) {
    auto r = run({"sh", "-c", "echo out; echo err >&2; exit 7"});
    EXPECT_EQ(r.exit_code, 7);
    EXPECT_EQ(r.out, "out\n");
    EXPECT_EQ(r.err, "err\n");
    // Shell metacharacters in an argument are just bytes.
    auto echo = run({"echo", "a; rm -rf / $(id) `id` | cat"});
    EXPECT_EQ(echo.out, "a; rm -rf / $(id) `id` | cat\n");
}

TEST(PosixProcessRunner, FeedsStdinAndUsesACleanEnvironment) {
    EXPECT_EQ(run({"cat"}, "hello stdin").out, "hello stdin");
    std::string big(1 << 20, 'z');
    EXPECT_EQ(run({"wc", "-c"}, big).out, "1048576\n");
    ::setenv("NODEFORM_LEAK_TEST", "leaked", 1);
    auto env = run({"env"});
    EXPECT_EQ(env.out.find("NODEFORM_LEAK_TEST"), std::string::npos);
    EXPECT_NE(env.out.find("LANG=C\n"), std::string::npos);
    // A child that ignores stdin does not hang or kill us with SIGPIPE.
    EXPECT_EQ(run({"true"}, big).exit_code, 0);
}

TEST(PosixProcessRunner, TimesOutWithSigtermThenSigkill) {
    auto r = run({"sh", "-c", "trap '' TERM; sleep 30"}, {}, std::chrono::milliseconds(300));
    EXPECT_TRUE(r.timed_out);
    EXPECT_EQ(r.exit_code, -1);
}

TEST(PosixProcessRunner, TruncatesKeepingHeadAndTailAndRedacts) {
    auto r = run({"sh", "-c", "echo START; head -c 100000 /dev/zero | tr '\\0' x; echo; echo the token is s3cr3t END"},
                 {}, std::chrono::seconds(30), 1000, {"s3cr3t"});
    EXPECT_LT(r.out.size(), 1100u);
    EXPECT_EQ(r.out.rfind("START", 0), 0u);
    EXPECT_NE(r.out.find("bytes of output truncated"), std::string::npos);
    EXPECT_NE(r.out.find("the token is [REDACTED] END"), std::string::npos) << r.out;
    EXPECT_EQ(r.out.find("s3cr3t"), std::string::npos);
}

TEST(PosixProcessRunner, MissingProgramIsAnError) {
    PosixProcessRunner runner;
    ProcessRequest r;
    r.argv = {"nodeform-no-such-program"};
    auto result = runner.run(r);
    ASSERT_FALSE(result.ok());
    EXPECT_NE(result.message().find("not found in PATH"), std::string::npos);
    r.argv = {};
    EXPECT_FALSE(runner.run(r).ok());
}

TEST(PosixProcessRunner, DoesNotWaitForGrandchildrenHoldingThePipes) {
    auto r = run({"sh", "-c", "sleep 20 & echo started"}, {}, std::chrono::seconds(10));
    EXPECT_FALSE(r.timed_out);
    EXPECT_EQ(r.exit_code, 0);
    EXPECT_EQ(r.out, "started\n");
}

TEST(RootFilesystem, StaysInsideTheRoot) {
    test::TempDir tmp;
    const std::string root = tmp.path() + "/root";
    fs::create_directories(root + "/etc");
    fs::create_directories(tmp.path() + "/outside");
    std::ofstream(tmp.path() + "/outside/secret") << "host secret";
    std::ofstream(root + "/etc/hostname") << "inside\n";
    // Absolute and relative symlinks that point out of the root resolve inside it instead.
    fs::create_symlink("/etc/hostname", root + "/abs-link");
    fs::create_symlink("../outside/secret", root + "/rel-link");
    fs::create_directory_symlink(tmp.path() + "/outside", root + "/dir-link");
    auto made = make_root_filesystem(root);
    ASSERT_TRUE(made.ok());
    Filesystem& f = **made;
    EXPECT_EQ(f.read("/abs-link").value(), "inside\n");
    EXPECT_FALSE(f.read("/rel-link").ok());
    EXPECT_FALSE(f.read("/../outside/secret").ok());
    EXPECT_FALSE(f.read("/dir-link/secret").ok());
    // Writing through a symlinked directory lands inside the root (or fails), never outside.
    (void)f.write_atomic("/dir-link/planted", "x", {0644, 0, 0});
    EXPECT_FALSE(fs::exists(tmp.path() + "/outside/planted"));
    // A symlink at the target is replaced, not followed.
    fs::create_symlink(tmp.path() + "/outside/secret", root + "/etc/motd");
    ASSERT_TRUE(f.write_atomic("/etc/motd", "new", {0640, ::getuid(), ::getgid()}).ok());
    EXPECT_FALSE(fs::is_symlink(root + "/etc/motd"));
    std::ifstream host(tmp.path() + "/outside/secret");
    std::string content((std::istreambuf_iterator<char>(host)), {});
    EXPECT_EQ(content, "host secret");
    auto info = f.stat("/etc/motd").value();
    ASSERT_TRUE(info.has_value());
    EXPECT_EQ(info->mode, 0640u);
    EXPECT_EQ(info->type, FileType::regular);
    EXPECT_EQ(f.stat("/abs-link").value()->type, FileType::symlink);
    EXPECT_FALSE(f.stat("/nope/nope").value().has_value());
    EXPECT_EQ(f.host_path("/etc/motd"), fs::canonical(root).string() + "/etc/motd");
}

// Everything the agent keeps under --root (state directory, run lock, spool, state file) stays in the root when a
// directory on the way is a symlink out of it: absolute, relative, or the state directory itself.
TEST(RootFilesystem, PinnedStateDirectoryStaysInsideTheRoot) {
    struct Case {
        std::string link;    // inside the root
        std::string target;  // where it points
    };
    test::TempDir tmp;
    const std::string outside = tmp.path() + "/outside";
    int n = 0;
    int pinned_inside = 0;
    for (const Case& c : {Case{"/var", outside}, Case{"/var/lib", "../../../outside"},
                          Case{"/var/lib/nodeform", outside}, Case{"/var/lib", outside + "/lib"}}) {
        const std::string root = tmp.path() + "/root-" + std::to_string(n++);
        fs::create_directories(outside + "/lib");
        std::string parent = root + c.link.substr(0, c.link.rfind('/'));
        fs::create_directories(parent);
        fs::create_directory_symlink(c.target, root + c.link);
        fs::create_directories(root + "/outside");  // where "../../../outside" lands, resolved in the root
        auto made = make_root_filesystem(root);
        ASSERT_TRUE(made.ok());
        auto outside_files = [&] {
            std::size_t count = 0;
            for (auto it = fs::recursive_directory_iterator(outside); it != fs::recursive_directory_iterator(); ++it)
                if (!it->is_directory()) ++count;
            return count;
        };
        // A link to a directory the root does not have: the state directory cannot be made (a clear error).
        auto pinned = (*made)->pin_directory("/var/lib/nodeform");
        if (!pinned.ok()) {
            EXPECT_NE(pinned.message().find(root), std::string::npos) << pinned.message();
            EXPECT_EQ(outside_files(), 0u);
            EXPECT_TRUE(fs::is_empty(outside + "/lib")) << c.link;
            continue;
        }
        auto lock = RunLock::acquire(*pinned + "/lock", std::chrono::milliseconds(0));
        ASSERT_TRUE(lock.ok()) << lock.message();
        auto spool = daemon::Spool::open(*pinned + "/spool", 10);
        ASSERT_TRUE(spool.ok()) << spool.message();
        ASSERT_TRUE((*spool)->put({{"report_id", "11111111-2222-3333-4444-555555555555"}}).ok());
        ASSERT_TRUE(write_file_atomic(*pinned + "/daemon.json", "{}", {.mode = 0644}).ok());
        EXPECT_EQ(fs::canonical(*pinned).string().rfind(fs::canonical(root).string() + "/", 0), 0u)
            << c.link << " -> " << c.target << " pinned " << fs::canonical(*pinned);
        EXPECT_EQ(outside_files(), 0u) << c.link << ": something was written outside the root";
        EXPECT_TRUE(fs::is_empty(outside + "/lib")) << c.link;
        ++pinned_inside;
    }
    EXPECT_GE(pinned_inside, 1);  // the relative link resolves to a directory the root has: made inside it
}

TEST(RootFilesystem, DirectoriesListRemoveRename) {
    test::TempDir tmp;
    auto made = make_root_filesystem(tmp.path());
    ASSERT_TRUE(made.ok());
    Filesystem& f = **made;
    ASSERT_TRUE(make_directories(f, "/a/b/c", 0750).ok());
    EXPECT_EQ(f.stat("/a/b").value()->mode, 0750u);
    ASSERT_TRUE(f.write_atomic("/a/b/c/file", "1", {0600, ::getuid(), ::getgid()}).ok());
    ASSERT_TRUE(f.write_atomic("/a/b/c/.hidden", "2", {0600, ::getuid(), ::getgid()}).ok());
    EXPECT_EQ(f.list("/a/b/c").value(), (std::vector<std::string>{".hidden", "file"}));
    ASSERT_TRUE(f.rename("/a/b/c/file", "/a/moved").ok());
    EXPECT_EQ(f.read("/a/moved").value(), "1");
    EXPECT_TRUE(f.remove("/a/moved").ok());
    EXPECT_TRUE(f.remove("/a/moved").ok());  // already absent
    EXPECT_FALSE(f.remove("/a/b").ok());     // not empty
    EXPECT_FALSE(f.write_atomic("/missing/dir/file", "x", {}).ok());
    EXPECT_FALSE(make_root_filesystem(tmp.path() + "/does-not-exist").ok());
}

TEST(RunLock, SecondHolderWaitsThenGivesUpWithAClearMessage) {
    test::TempDir tmp;
    auto first = RunLock::acquire(tmp.path() + "/state/lock", std::chrono::milliseconds(0));
    ASSERT_TRUE(first.ok());
    // flock locks belong to the open file description: a second open in this process conflicts too.
    auto second = RunLock::acquire(tmp.path() + "/state/lock", std::chrono::milliseconds(200));
    ASSERT_FALSE(second.ok());
    EXPECT_NE(second.message().find("another nodeform-agent run holds"), std::string::npos);
    { RunLock released = std::move(*first); }
    EXPECT_TRUE(RunLock::acquire(tmp.path() + "/state/lock", std::chrono::milliseconds(0)).ok());
}

}  // namespace
}  // namespace nodeform::agent
