#pragma once
// One converge at a time: an exclusive flock(2) on a lock file, held until the RunLock dies.
#include <chrono>
#include <string>

#include "nodeform/result.hpp"

namespace nodeform::agent {

class RunLock {
  public:
    RunLock() = default;
    RunLock(RunLock&& other) noexcept;
    RunLock& operator=(RunLock&& other) noexcept;
    RunLock(const RunLock&) = delete;
    RunLock& operator=(const RunLock&) = delete;
    ~RunLock();

    // Creates the file (0600) and its parent directory when missing; waits up to timeout (0 = don't wait).
    // Err says who to wait for ("another nodeform-agent run holds PATH").
    static Result<RunLock> acquire(const std::string& host_path, std::chrono::milliseconds timeout);

  private:
    int fd_ = -1;
};

}  // namespace nodeform::agent
