#include "nodeform/posix_process_runner.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <pthread.h>
#include <cerrno>
#include <cstring>
#include <map>
#include <utility>

namespace nodeform {
namespace {

using SteadyClock = std::chrono::steady_clock;

// Closes a file descriptor once.
struct Fd {
    int fd = -1;
    Fd() = default;
    explicit Fd(int f) : fd(f) {}
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    ~Fd() { reset(); }
    void reset() {
        if (fd >= 0) ::close(fd);
        fd = -1;
    }
};

// Keeps the first and the last half of a stream, counting what was dropped in between.
class Capture {
  public:
    explicit Capture(std::size_t limit) : head_limit_(limit / 2), tail_limit_(limit - limit / 2) {}
    void append(const char* data, std::size_t n) {
        if (head_.size() < head_limit_) {
            std::size_t take = std::min(n, head_limit_ - head_.size());
            head_.append(data, take);
            data += take;
            n -= take;
        }
        if (n == 0) return;
        tail_.append(data, n);
        if (tail_.size() > 2 * tail_limit_ + 4096) trim();
    }
    std::string finish(const std::vector<std::string>& secrets) {
        trim();
        std::string text = redact_secrets(head_, secrets);
        if (dropped_ > 0) text += "\n[... " + std::to_string(dropped_) + " bytes of output truncated ...]\n";
        return text + redact_secrets(tail_, secrets);
    }

  private:
    void trim() {
        if (tail_.size() <= tail_limit_) return;
        std::size_t drop = tail_.size() - tail_limit_;
        dropped_ += drop;
        tail_.erase(0, drop);
    }
    std::size_t head_limit_;
    std::size_t tail_limit_;
    std::string head_;
    std::string tail_;
    std::size_t dropped_ = 0;
};

bool is_executable_file(const std::string& path) {
    return ::access(path.c_str(), X_OK) == 0;
}

Result<std::string> resolve_program(const std::string& name, const std::string& search_path) {
    if (name.empty()) return make_error("cannot run a command with an empty program name");
    if (name.find('/') != std::string::npos) {
        if (!is_executable_file(name)) return make_error("cannot run " + name + ": " + std::strerror(errno));
        return name;
    }
    std::size_t start = 0;
    while (start <= search_path.size()) {
        std::size_t end = search_path.find(':', start);
        if (end == std::string::npos) end = search_path.size();
        std::string dir = search_path.substr(start, end - start);
        if (!dir.empty()) {
            std::string candidate = dir + "/" + name;
            if (is_executable_file(candidate)) return candidate;
        }
        start = end + 1;
    }
    return make_error("cannot run " + name + ": not found in PATH (" + search_path + "); is its package installed?");
}

// Writes to a pipe without letting SIGPIPE kill the process: block it for this thread, then discard it.
ssize_t write_no_sigpipe(int fd, const char* data, std::size_t n) {
    sigset_t pipe_set, old_set;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old_set);
    ssize_t written = ::write(fd, data, n);
    int saved = errno;
    if (written < 0 && saved == EPIPE) {
        struct timespec zero = {0, 0};
        while (sigtimedwait(&pipe_set, nullptr, &zero) > 0) {
        }
    }
    pthread_sigmask(SIG_SETMASK, &old_set, nullptr);
    errno = saved;
    return written;
}

void set_nonblocking(int fd) {
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
}

// Reads what is available now; false at EOF or on a hard error.
bool drain(int fd, Capture& capture) {
    char buffer[16384];
    while (true) {
        ssize_t n = ::read(fd, buffer, sizeof buffer);
        if (n > 0) {
            capture.append(buffer, static_cast<std::size_t>(n));
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
        return false;
    }
}

}  // namespace

PosixProcessRunner::PosixProcessRunner(PosixProcessRunnerOptions options) : options_(std::move(options)) {}

Result<ProcessResult> PosixProcessRunner::run(const ProcessRequest& request) {
    if (request.argv.empty()) return make_error("cannot run a command with an empty argv");
    auto program = resolve_program(request.argv[0], options_.path);
    if (!program) return program.error();

    std::map<std::string, std::string> env_map = {{"PATH", options_.path}, {"LANG", "C"}, {"LC_ALL", "C"}};
    for (const auto& [k, v] : request.env)
        env_map[k] = v;
    std::vector<std::string> env_strings;
    for (const auto& [k, v] : env_map)
        env_strings.push_back(k + "=" + v);
    std::vector<char*> envp;
    for (auto& s : env_strings)
        envp.push_back(s.data());
    envp.push_back(nullptr);
    std::vector<std::string> argv_copy = request.argv;
    std::vector<char*> argv;
    for (auto& s : argv_copy)
        argv.push_back(s.data());
    argv.push_back(nullptr);

    Fd in_r, in_w, out_r, out_w, err_r, err_w, exec_r, exec_w;
    const std::pair<Fd*, Fd*> pipes[] = {{&in_r, &in_w}, {&out_r, &out_w}, {&err_r, &err_w}, {&exec_r, &exec_w}};
    for (auto [r, w] : pipes) {
        int ends[2];
        if (::pipe2(ends, O_CLOEXEC) != 0)
            return make_error(std::string("cannot create a pipe: ") + std::strerror(errno));
        r->fd = ends[0];
        w->fd = ends[1];
    }

    const std::string& working_dir = request.working_dir;
    const char* program_path = program->c_str();
    pid_t pid = ::fork();
    if (pid < 0) return make_error(std::string("cannot fork: ") + std::strerror(errno));
    if (pid == 0) {
        // Child: only async-signal-safe calls from here on.
        ::setpgid(0, 0);
        sigset_t empty;
        sigemptyset(&empty);
        ::sigprocmask(SIG_SETMASK, &empty, nullptr);
        ::signal(SIGPIPE, SIG_DFL);
        ::dup2(in_r.fd, 0);
        ::dup2(out_w.fd, 1);
        ::dup2(err_w.fd, 2);
        ::syscall(SYS_close_range, 3U, ~0U, 4U /* CLOSE_RANGE_CLOEXEC */);
        int err = 0;
        if (!working_dir.empty() && ::chdir(working_dir.c_str()) != 0) {
            err = errno;
        } else {
            ::execve(program_path, argv.data(), envp.data());
            err = errno;
        }
        ssize_t ignored = ::write(exec_w.fd, &err, sizeof err);
        (void)ignored;
        ::_exit(127);
    }
    ::setpgid(pid, pid);  // both sides set it: no race with the kill below
    in_r.reset();
    out_w.reset();
    err_w.reset();
    exec_w.reset();

    int child_errno = 0;
    ssize_t got;
    do {
        got = ::read(exec_r.fd, &child_errno, sizeof child_errno);
    } while (got < 0 && errno == EINTR);
    if (got == static_cast<ssize_t>(sizeof child_errno)) {
        int status = 0;
        ::waitpid(pid, &status, 0);
        return make_error("cannot run " + describe_command(request.argv, request.redact) + ": " +
                          std::strerror(child_errno));
    }

    int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    Fd pid_fd(pidfd);

    std::size_t stdin_written = 0;
    if (request.stdin_data.empty()) {
        in_w.reset();
    } else {
        set_nonblocking(in_w.fd);
    }
    set_nonblocking(out_r.fd);
    set_nonblocking(err_r.fd);

    Capture out_capture(request.output_limit), err_capture(request.output_limit);
    const auto started = SteadyClock::now();
    const auto deadline = started + request.timeout;
    bool timed_out = false;
    bool exited = false;
    SteadyClock::time_point kill_at{};
    int status = 0;

    while (!exited) {
        std::vector<pollfd> fds;
        if (out_r.fd >= 0) fds.push_back({out_r.fd, POLLIN, 0});
        if (err_r.fd >= 0) fds.push_back({err_r.fd, POLLIN, 0});
        if (in_w.fd >= 0) fds.push_back({in_w.fd, POLLOUT, 0});
        if (pid_fd.fd >= 0) fds.push_back({pid_fd.fd, POLLIN, 0});

        auto now = SteadyClock::now();
        auto wake = timed_out ? kill_at : deadline;
        int wait_ms = static_cast<int>(
            std::max<long long>(0, std::chrono::duration_cast<std::chrono::milliseconds>(wake - now).count()));
        if (pid_fd.fd < 0) wait_ms = std::min(wait_ms, 50);  // no pidfd: poll for the exit
        int rc = ::poll(fds.data(), fds.size(), wait_ms);
        if (rc < 0 && errno != EINTR) break;

        for (const auto& p : fds) {
            if (p.revents == 0) continue;
            if (p.fd == out_r.fd) {
                if (!drain(out_r.fd, out_capture)) out_r.reset();
            } else if (p.fd == err_r.fd) {
                if (!drain(err_r.fd, err_capture)) err_r.reset();
            } else if (p.fd == in_w.fd) {
                if (p.revents & (POLLERR | POLLHUP)) {
                    in_w.reset();
                    continue;
                }
                ssize_t n = write_no_sigpipe(in_w.fd, request.stdin_data.data() + stdin_written,
                                             request.stdin_data.size() - stdin_written);
                if (n > 0) stdin_written += static_cast<std::size_t>(n);
                if ((n < 0 && errno != EAGAIN && errno != EINTR) || stdin_written >= request.stdin_data.size()) {
                    in_w.reset();
                }
            }
        }

        pid_t w = ::waitpid(pid, &status, WNOHANG);
        if (w == pid) {
            exited = true;
            break;
        }
        now = SteadyClock::now();
        if (!timed_out && now >= deadline) {
            timed_out = true;
            ::kill(-pid, SIGTERM);
            kill_at = now + options_.kill_grace;
        } else if (timed_out && now >= kill_at) {
            ::kill(-pid, SIGKILL);
            kill_at = now + std::chrono::hours(1);
        }
    }
    // Whatever is buffered now; a grandchild that keeps the pipes open does not hold us.
    if (out_r.fd >= 0) drain(out_r.fd, out_capture);
    if (err_r.fd >= 0) drain(err_r.fd, err_capture);
    if (!exited) ::waitpid(pid, &status, 0);

    ProcessResult result;
    result.timed_out = timed_out;
    result.exit_code = (!timed_out && WIFEXITED(status)) ? WEXITSTATUS(status) : -1;
    result.out = out_capture.finish(request.redact);
    result.err = err_capture.finish(request.redact);
    return result;
}

}  // namespace nodeform
