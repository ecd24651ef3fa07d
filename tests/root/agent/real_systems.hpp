#pragma once
// Helpers for the root tests that drive real systems (systemd-nspawn --boot, dockerd): running a
// command to completion, a background process the test owns by PID, and the cached Debian root.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "nodeform/atomic_file.hpp"
#include "nodeform/posix_process_runner.hpp"
#include "test_paths.hpp"

namespace nodeform::test::real {

using nodeform::test::cached_rootfs;  // tests/support/test_paths.hpp
using nodeform::test::slurp;

struct CommandRun {
    int exit_code = -1;
    std::string out;
    std::string err;
    nlohmann::json json() const { return nlohmann::json::parse(out, nullptr, false); }
};

// Runs argv to completion (no shell) and captures its output.
inline CommandRun run(const std::vector<std::string>& argv, std::chrono::seconds timeout = std::chrono::minutes(5),
                      const std::string& stdin_data = {}) {
    PosixProcessRunner runner;
    ProcessRequest request;
    request.argv = argv;
    request.timeout = timeout;
    request.output_limit = 4 * 1024 * 1024;
    request.stdin_data = stdin_data;
    auto result = runner.run(request);
    if (!result) return CommandRun{-1, "", result.message()};
    return CommandRun{result->exit_code, result->out, result->err};
}

// True when name is found in the runner's PATH.
inline bool have_program(const std::string& name) {
    return run({"sh", "-c", "command -v \"$0\" >/dev/null", name}, std::chrono::seconds(10)).exit_code == 0;
}

// The first child of pid (scanning /proc), 0 when none.
inline pid_t child_of(pid_t pid) {
    for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
        const std::string name = entry.path().filename();
        if (name.find_first_not_of("0123456789") != std::string::npos) continue;
        std::ifstream status(entry.path() / "status");
        std::string line;
        while (std::getline(status, line)) {
            if (line.rfind("PPid:", 0) == 0) {
                if (std::stol(line.substr(5)) == pid) return static_cast<pid_t>(std::stol(name));
                break;
            }
        }
    }
    return 0;
}

// A program started in the background with stdout and stderr going to log_path. The destructor
// stops it (SIGTERM to the PID given by stop_target(), then SIGKILL) and reaps it.
class BackgroundProcess {
  public:
    BackgroundProcess(const std::vector<std::string>& argv, const std::string& log_path) : log_(log_path) {
        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_addopen(&actions, 1, log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
        posix_spawn_file_actions_adddup2(&actions, 1, 2);
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
        std::vector<char*> args;
        for (const auto& a : argv)
            args.push_back(const_cast<char*>(a.c_str()));
        args.push_back(nullptr);
        std::string path_env = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
        char* env[] = {path_env.data(), nullptr};
        if (posix_spawnp(&pid_, args[0], &actions, nullptr, args.data(), env) != 0) pid_ = 0;
        posix_spawn_file_actions_destroy(&actions);
    }
    BackgroundProcess(const BackgroundProcess&) = delete;
    BackgroundProcess& operator=(const BackgroundProcess&) = delete;
    ~BackgroundProcess() { stop(); }

    pid_t pid() const { return pid_; }
    bool running() {
        if (pid_ == 0) return false;
        int status = 0;
        if (::waitpid(pid_, &status, WNOHANG) == pid_) {
            pid_ = 0;
            return false;
        }
        return true;
    }
    std::string log() const {
        auto text = read_file(log_);
        return text ? *text : std::string();
    }

    // Sends SIGTERM to target (default: the process itself), waits up to grace, then SIGKILLs
    // target and the process; always reaps the process.
    void stop(pid_t target = 0, std::chrono::seconds grace = std::chrono::seconds(20)) {
        if (pid_ == 0) return;
        if (target == 0) target = pid_;
        ::kill(target, SIGTERM);
        auto deadline = std::chrono::steady_clock::now() + grace;
        while (running() && std::chrono::steady_clock::now() < deadline)
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
        if (pid_ != 0) {
            ::kill(target, SIGKILL);
            ::kill(pid_, SIGKILL);
            int status = 0;
            ::waitpid(pid_, &status, 0);
            pid_ = 0;
        }
    }

  private:
    pid_t pid_ = 0;
    std::string log_;
};

}  // namespace nodeform::test::real
