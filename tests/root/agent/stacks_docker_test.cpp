// Stacks against a real dockerd and the real docker-compose: the test starts its own dockerd in
// private mount, network and PID namespaces (its own /run with the default socket, its own data root,
// /opt bound to a scratch directory), imports an image made from the cached Debian root, and runs the
// real nodeform-agent inside those namespaces as on a live machine. Killing dockerd ends the PID
// namespace, so no container, shim or mount outlives the test.
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <set>

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

const std::string kImage = "nodeform-test/base:1";
const std::string kSecret = "Tops3cretDbPassw0rd";

class StacksDockerTest : public ::testing::Test {
  protected:
    void SetUp() override {
        if (::geteuid() != 0) GTEST_SKIP() << "needs root (dockerd)";
        for (const char* program : {"dockerd", "docker", "docker-compose", "nsenter", "unshare"}) {
            if (!test::real::have_program(program))
                GTEST_SKIP() << program << " missing: scripts/install-deps.sh test (docker.io, docker-compose)";
        }
        rootfs_ = test::real::cached_rootfs();
        if (rootfs_.empty())
            GTEST_SKIP() << "no cached Debian root: run scripts/test-setup.sh first (or set NODEFORM_TEST_ROOTFS)";
        const std::string dir = tmp_.path();
        fs::create_directories(dir + "/opt");
        fs::create_directories(dir + "/docker");
        dockerd_ = std::make_unique<test::real::BackgroundProcess>(
            std::vector<std::string>{
                "unshare", "--mount", "--net", "--pid", "--fork", "--mount-proc", "--propagation", "private", "--",
                "sh", "-c",
                "set -e; mount -t tmpfs -o mode=0755 tmpfs /run; mount --bind \"$0/opt\" /opt; "
                "ip link set lo up 2>/dev/null || true; "
                "exec dockerd --data-root \"$0/docker\" --iptables=false --ip6tables=false --bridge=none",
                dir},
            dir + "/dockerd.log");
        ASSERT_NE(dockerd_->pid(), 0) << "cannot start unshare";
        auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
        bool ready = false;
        while (!ready && dockerd_->running() && std::chrono::steady_clock::now() < deadline) {
            if (daemon_ == 0) daemon_ = test::real::child_of(dockerd_->pid());
            if (daemon_ != 0 && docker({"info", "-f", "{{.ServerVersion}}"}).exit_code == 0)
                ready = true;
            else
                std::this_thread::sleep_for(std::chrono::milliseconds(200));
        }
        ASSERT_TRUE(ready) << "dockerd did not come up:\n" << dockerd_->log();
        // A small image from the cached root: dash, sleep and the C library are all a stack needs.
        auto import =
            test::real::run({"sh", "-c",
                             "tar -C \"$0\" -c bin lib lib64 sbin usr/bin/sleep usr/bin/dash usr/lib64 "
                             "usr/lib/x86_64-linux-gnu/libc.so.6 usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 | "
                             "nsenter -t \"$1\" -m -n -p docker import - \"$2\"",
                             rootfs_, std::to_string(daemon_), kImage});
        ASSERT_EQ(import.exit_code, 0) << import.err;
    }

    void TearDown() override {
        if (daemon_ != 0) {
            auto ids = docker({"ps", "-aq"});
            std::vector<std::string> rm = {"rm", "-f"};
            std::size_t pos = 0;
            while (pos < ids.out.size()) {
                auto end = ids.out.find('\n', pos);
                if (end == std::string::npos) end = ids.out.size();
                if (end > pos) rm.push_back(ids.out.substr(pos, end - pos));
                pos = end + 1;
            }
            if (rm.size() > 2) docker(rm);
        }
        // dockerd is PID 1 of its namespace: when it exits, everything in it goes.
        if (dockerd_) dockerd_->stop(daemon_, std::chrono::seconds(30));
        dockerd_.reset();
    }

    CommandRun docker(std::vector<std::string> args) {
        std::vector<std::string> argv = {"nsenter", "-t", std::to_string(daemon_), "-m", "-n", "-p", "docker"};
        argv.insert(argv.end(), args.begin(), args.end());
        return test::real::run(argv, std::chrono::minutes(2));
    }

    // nodeform-agent converging the live system (no --root) as seen from dockerd's namespaces.
    CommandRun agent(std::vector<std::string> args) {
        // -p: the mount namespace has the PID namespace's /proc (LeakSanitizer reads /proc/self).
        std::vector<std::string> argv = {
            "nsenter", "-t", std::to_string(daemon_), "-m", "-n", "-p", test::binary_dir() + "/agent/nodeform-agent"};
        argv.insert(argv.end(), args.begin(), args.end());
        argv.insert(argv.end(), {"--state-dir", tmp_.path() + "/state"});
        return test::real::run(argv, std::chrono::minutes(5));
    }

    std::string write_spec(const nlohmann::json& spec) {
        std::string path = tmp_.path() + "/spec-" + std::to_string(++specs_) + ".json";
        EXPECT_TRUE(write_file_atomic(path, spec.dump(), {0600, false}).ok());
        return path;
    }

    // Container IDs of the stack's service, running or not.
    std::string container_of(const std::string& service) {
        auto ps = docker({"ps", "-aq", "--no-trunc", "--filter", "label=com.docker.compose.project=web", "--filter",
                          "label=com.docker.compose.service=" + service});
        return ps.out;
    }

    std::string inspect(const std::string& id, const std::string& format) {
        std::string one = id.substr(0, id.find('\n'));
        return docker({"inspect", "-f", format, one}).out;
    }

    static std::string status_of(const nlohmann::json& report, const std::string& id) {
        for (const auto& r : report["resources"]) {
            if (r["id"] == id) return r["status"].get<std::string>();
        }
        return "<no result>";
    }

    std::string host(const std::string& path) { return tmp_.path() + path; }

    test::TempDir tmp_;
    std::string rootfs_;
    std::unique_ptr<test::real::BackgroundProcess> dockerd_;
    pid_t daemon_ = 0;
    int specs_ = 0;
};

nlohmann::json stack_spec(const std::string& greeting) {
    auto spec = nlohmann::json::parse(R"({
      "schema_version": 1, "identity": "docker-01",
      "stacks": [{"name": "web",
                  "compose": "services:\n  app:\n    image: nodeform-test/base:1\n    command: [\"sleep\", \"infinity\"]\n    environment:\n      GREETING: ${GREETING}\n      DB_PASSWORD: ${DB_PASSWORD}\n  worker:\n    image: nodeform-test/base:1\n    command: [\"sleep\", \"infinity\"]\n"}],
      "secret_paths": ["/stacks/0/env/DB_PASSWORD"]
    })");
    spec["stacks"][0]["env"] = {{"GREETING", greeting}, {"DB_PASSWORD", kSecret}};
    return spec;
}

TEST_F(StacksDockerTest, BringsUpOnlyWhenNeededRecreatesOnChangeAndRestartsKilledContainers) {
    const std::string spec = write_spec(stack_spec("hello"));
    auto first = agent({"apply", "--spec", spec, "--json"});
    ASSERT_EQ(first.exit_code, 0) << first.err << first.out;
    EXPECT_EQ(status_of(first.json(), "stack:web"), "changed") << first.out;
    const std::string app = container_of("app");
    const std::string worker = container_of("worker");
    ASSERT_FALSE(app.empty()) << docker({"ps", "-a"}).out;
    ASSERT_FALSE(worker.empty());
    EXPECT_EQ(inspect(app, "{{.State.Running}}"), "true\n");
    EXPECT_EQ(inspect(worker, "{{.State.Running}}"), "true\n");
    EXPECT_NE(inspect(app, "{{json .Config.Env}}").find("\"GREETING=hello\""), std::string::npos);

    // The files: compose 0644, .env 0600 (it holds the secret), both root's.
    struct stat st {};
    ASSERT_EQ(::stat(host("/opt/nodeform/stacks/web/.env").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0600u);
    EXPECT_EQ(st.st_uid, 0u);
    EXPECT_EQ(test::real::slurp(host("/opt/nodeform/stacks/web/.env")),
              "DB_PASSWORD=" + kSecret + "\nGREETING=hello\n");
    ASSERT_EQ(::stat(host("/opt/nodeform/stacks/web/docker-compose.yml").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0644u);
    // The secret reaches the container but never the agent's output or last-run.json.
    EXPECT_EQ(first.out.find(kSecret), std::string::npos);
    EXPECT_EQ(first.err.find(kSecret), std::string::npos);
    const std::string last_run = test::real::slurp(host("/state/last-run.json"));
    ASSERT_FALSE(last_run.empty());
    EXPECT_EQ(last_run.find(kSecret), std::string::npos);

    // Second run: unchanged, and the same containers (no recreate).
    auto second = agent({"apply", "--spec", spec, "--json"});
    ASSERT_EQ(second.exit_code, 0) << second.err;
    EXPECT_EQ(status_of(second.json(), "stack:web"), "unchanged") << second.out;
    EXPECT_EQ(container_of("app"), app);
    EXPECT_EQ(container_of("worker"), worker);
    EXPECT_EQ(agent({"plan", "--spec", spec}).exit_code, 0);

    // An env value changes: changed, the container using it is recreated with the new value.
    const std::string changed = write_spec(stack_spec("bonjour"));
    auto plan_change = agent({"plan", "--spec", changed, "--json"});
    EXPECT_EQ(plan_change.exit_code, 2);
    EXPECT_EQ(status_of(plan_change.json(), "stack:web"), "drifted");
    EXPECT_EQ(plan_change.out.find(kSecret), std::string::npos);
    auto third = agent({"apply", "--spec", changed, "--json"});
    ASSERT_EQ(third.exit_code, 0) << third.err;
    EXPECT_EQ(status_of(third.json(), "stack:web"), "changed") << third.out;
    const std::string app2 = container_of("app");
    EXPECT_NE(app2, app);
    EXPECT_EQ(inspect(app2, "{{.State.Running}}"), "true\n");
    EXPECT_NE(inspect(app2, "{{json .Config.Env}}").find("\"GREETING=bonjour\""), std::string::npos);
    EXPECT_EQ(test::real::slurp(host("/opt/nodeform/stacks/web/.env")),
              "DB_PASSWORD=" + kSecret + "\nGREETING=bonjour\n");
    EXPECT_EQ(third.out.find(kSecret), std::string::npos);

    // A container killed by hand: plan names the stack, apply runs it again.
    ASSERT_EQ(docker({"kill", app2.substr(0, app2.find('\n'))}).exit_code, 0);
    ASSERT_EQ(inspect(app2, "{{.State.Running}}"), "false\n");
    auto plan_killed = agent({"plan", "--spec", changed, "--json"});
    EXPECT_EQ(plan_killed.exit_code, 2) << plan_killed.out;
    EXPECT_EQ(status_of(plan_killed.json(), "stack:web"), "drifted");
    auto fourth = agent({"apply", "--spec", changed, "--json"});
    ASSERT_EQ(fourth.exit_code, 0) << fourth.err;
    EXPECT_EQ(status_of(fourth.json(), "stack:web"), "changed") << fourth.out;
    EXPECT_EQ(inspect(container_of("app"), "{{.State.Running}}"), "true\n");

    // A container removed by hand: brought back.
    ASSERT_EQ(docker({"rm", "-f", worker.substr(0, worker.find('\n'))}).exit_code, 0);
    ASSERT_TRUE(container_of("worker").empty());
    auto fifth = agent({"apply", "--spec", changed, "--json"});
    ASSERT_EQ(fifth.exit_code, 0) << fifth.err;
    EXPECT_EQ(status_of(fifth.json(), "stack:web"), "changed") << fifth.out;
    ASSERT_FALSE(container_of("worker").empty());
    EXPECT_EQ(inspect(container_of("worker"), "{{.State.Running}}"), "true\n");

    // And then it is settled again.
    auto sixth = agent({"apply", "--spec", changed, "--json"});
    EXPECT_EQ(status_of(sixth.json(), "stack:web"), "unchanged") << sixth.out;
    EXPECT_EQ(agent({"plan", "--spec", changed}).exit_code, 0);
    EXPECT_EQ(test::real::slurp(host("/state/last-run.json")).find(kSecret), std::string::npos);
}

TEST_F(StacksDockerTest, AFailedUpIsRetriedAndAMissingHashIsNoFalseChange) {
    // The image does not exist yet (and no registry is reachable): up fails, the stack fails alone.
    auto spec = nlohmann::json::parse(R"({
      "schema_version": 1, "identity": "docker-02",
      "stacks": [{"name": "web", "env": {},
                  "compose": "services:\n  app:\n    image: nodeform-test/later:1\n    command: [\"sleep\", \"infinity\"]\n"}],
      "secret_paths": []
    })");
    const std::string path = write_spec(spec);
    auto failed = agent({"apply", "--spec", path, "--json"});
    EXPECT_EQ(failed.exit_code, 1) << failed.out;
    EXPECT_EQ(status_of(failed.json(), "stack:web"), "failed") << failed.out;
    EXPECT_TRUE(container_of("app").empty());
    EXPECT_FALSE(fs::exists(host("/opt/nodeform/stacks/web/.nodeform-config-hash")));

    // Same spec, same files, and now the image exists: the retry brings the stack up and says so.
    ASSERT_EQ(docker({"tag", kImage, "nodeform-test/later:1"}).exit_code, 0);
    auto plan = agent({"plan", "--spec", path, "--json"});
    EXPECT_EQ(plan.exit_code, 2) << plan.out;
    EXPECT_EQ(status_of(plan.json(), "stack:web"), "drifted");
    auto retry = agent({"apply", "--spec", path, "--json"});
    ASSERT_EQ(retry.exit_code, 0) << retry.out << retry.err;
    EXPECT_EQ(status_of(retry.json(), "stack:web"), "changed") << retry.out;
    const std::string app = container_of("app");
    ASSERT_FALSE(app.empty());
    EXPECT_EQ(inspect(app, "{{.State.Running}}"), "true\n");
    EXPECT_TRUE(fs::exists(host("/opt/nodeform/stacks/web/.nodeform-config-hash")));

    // The hash file lost while everything runs: up finds nothing to do, so the stack is unchanged.
    fs::remove(host("/opt/nodeform/stacks/web/.nodeform-config-hash"));
    auto lost = agent({"apply", "--spec", path, "--json"});
    ASSERT_EQ(lost.exit_code, 0) << lost.out << lost.err;
    EXPECT_EQ(status_of(lost.json(), "stack:web"), "unchanged") << lost.out;
    EXPECT_EQ(container_of("app"), app);
    EXPECT_TRUE(fs::exists(host("/opt/nodeform/stacks/web/.nodeform-config-hash")));
    EXPECT_EQ(agent({"plan", "--spec", path}).exit_code, 0);
}

TEST_F(StacksDockerTest, AOneShotThatExitedZeroIsConvergedAndAbsentTakesTheStackDown) {
    auto spec = nlohmann::json::parse(R"({
      "schema_version": 1, "identity": "docker-03",
      "stacks": [{"name": "web", "env": {}, "state": "present",
                  "compose": "services:\n  app:\n    image: nodeform-test/base:1\n    command: [\"sleep\", \"infinity\"]\n  migrate:\n    image: nodeform-test/base:1\n    command: [\"sleep\", \"0\"]\n    restart: \"no\"\n"}],
      "secret_paths": []
    })");
    const std::string path = write_spec(spec);
    auto first = agent({"apply", "--spec", path, "--json"});
    ASSERT_EQ(first.exit_code, 0) << first.out << first.err;
    EXPECT_EQ(status_of(first.json(), "stack:web"), "changed") << first.out;
    const std::string migrate = container_of("migrate");
    ASSERT_FALSE(migrate.empty());
    bool exited = false;
    for (int i = 0; i < 100 && !exited; ++i) {
        exited = inspect(migrate, "{{.State.Status}} {{.State.ExitCode}}") == "exited 0\n";
        if (!exited) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ASSERT_TRUE(exited) << inspect(migrate, "{{.State.Status}}");
    // The one-shot finished with 0: nothing to bring up, nothing drifted, the container is not re-run.
    auto second = agent({"apply", "--spec", path, "--json"});
    ASSERT_EQ(second.exit_code, 0) << second.out;
    EXPECT_EQ(status_of(second.json(), "stack:web"), "unchanged") << second.out;
    EXPECT_EQ(inspect(migrate, "{{.State.Status}} {{.State.StartedAt}}"),
              inspect(container_of("migrate"), "{{.State.Status}} {{.State.StartedAt}}"));
    EXPECT_EQ(agent({"plan", "--spec", path}).exit_code, 0);

    // Retired: state absent takes it down and keeps the files; once down it stays quiet.
    auto absent = nlohmann::json::parse(R"({
      "schema_version": 1, "identity": "docker-03",
      "stacks": [{"name": "web", "state": "absent", "remove_files": false}], "secret_paths": []
    })");
    const std::string down_path = write_spec(absent);
    auto plan = agent({"plan", "--spec", down_path, "--json"});
    EXPECT_EQ(plan.exit_code, 2) << plan.out;
    EXPECT_EQ(status_of(plan.json(), "stack:web"), "drifted");
    EXPECT_FALSE(container_of("app").empty());  // plan changed nothing
    auto down = agent({"apply", "--spec", down_path, "--json"});
    ASSERT_EQ(down.exit_code, 0) << down.out << down.err;
    EXPECT_EQ(status_of(down.json(), "stack:web"), "changed") << down.out;
    EXPECT_TRUE(container_of("app").empty()) << docker({"ps", "-a"}).out;
    EXPECT_TRUE(container_of("migrate").empty());
    EXPECT_TRUE(fs::exists(host("/opt/nodeform/stacks/web/docker-compose.yml")));
    auto again = agent({"apply", "--spec", down_path, "--json"});
    EXPECT_EQ(status_of(again.json(), "stack:web"), "unchanged") << again.out;

    absent["stacks"][0]["remove_files"] = true;
    auto removed = agent({"apply", "--spec", write_spec(absent), "--json"});
    EXPECT_EQ(status_of(removed.json(), "stack:web"), "changed") << removed.out;
    EXPECT_FALSE(fs::exists(host("/opt/nodeform/stacks/web")));
}

}  // namespace
}  // namespace nodeform::agent
