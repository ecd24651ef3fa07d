#include "nodeform/agent/system/run_lock.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <thread>

namespace nodeform::agent {

RunLock::RunLock(RunLock&& other) noexcept : fd_(other.fd_) {
    other.fd_ = -1;
}

RunLock& RunLock::operator=(RunLock&& other) noexcept {
    if (this != &other) {
        if (fd_ >= 0) ::close(fd_);
        fd_ = other.fd_;
        other.fd_ = -1;
    }
    return *this;
}

RunLock::~RunLock() {
    if (fd_ >= 0) ::close(fd_);
}

Result<RunLock> RunLock::acquire(const std::string& host_path, std::chrono::milliseconds timeout) {
    std::error_code ec;
    std::filesystem::path p(host_path);
    if (p.has_parent_path()) std::filesystem::create_directories(p.parent_path(), ec);
    int fd = ::open(host_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) return make_error("cannot open lock file " + host_path + ": " + std::strerror(errno));
    RunLock lock;
    lock.fd_ = fd;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno != EWOULDBLOCK && errno != EINTR) {
            return make_error("cannot lock " + host_path + ": " + std::strerror(errno));
        }
        if (std::chrono::steady_clock::now() >= deadline) {
            return make_error("another nodeform-agent run holds " + host_path +
                              "; wait for it to finish (or pass a longer --lock-timeout)");
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return lock;
}

}  // namespace nodeform::agent
