#pragma once
// PosixProcessRunner: the real ProcessRunner. fork + execve of argv (never a shell) with a clean
// environment, stdin fed from the request, stdout/stderr captured with poll(), truncated and
// redacted; on timeout SIGTERM to the child's process group, then SIGKILL after a grace period.
#include <chrono>
#include <string>

#include "nodeform/process.hpp"

namespace nodeform {

struct PosixProcessRunnerOptions {
    // PATH of the child's environment and the search path for a bare argv[0].
    std::string path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    // Time between SIGTERM and SIGKILL when a command times out.
    std::chrono::milliseconds kill_grace{std::chrono::seconds(5)};
};

class PosixProcessRunner final : public ProcessRunner {
  public:
    explicit PosixProcessRunner(PosixProcessRunnerOptions options = {});
    // The child gets PATH, LANG=C, LC_ALL=C plus request.env; its own process group; stdin from
    // request.stdin_data (or /dev/null). Err when argv is empty, argv[0] is not found or fork fails.
    Result<ProcessResult> run(const ProcessRequest& request) override;

  private:
    PosixProcessRunnerOptions options_;
};

}  // namespace nodeform
