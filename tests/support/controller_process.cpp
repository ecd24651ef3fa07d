#include "controller_process.hpp"

#include <algorithm>

#include <signal.h>

#include <sys/wait.h>
#include <unistd.h>

#include "nodeform/posix_process_runner.hpp"
#include "test_paths.hpp"

namespace nodeform::test {

ControllerProcess::ControllerProcess(const std::string& site, const std::string& state, std::vector<std::string> extra,
                                     bool tls) {
    std::string binary = binary_dir() + "/controller/nodeform-controller";
    int out[2];
    if (::pipe(out) != 0) return;
    std::vector<std::string> args = {
        binary,        "serve",        "--site",   site,        "--state",      state,   "--listen",
        "127.0.0.1:0", "--plain-http", "--config", "/dev/null", "--access-log", "false", "--reload-interval",
        "200ms"};
    if (tls) args.erase(std::find(args.begin(), args.end(), "--plain-http"));
    args.insert(args.end(), extra.begin(), extra.end());
    pid_ = ::fork();
    if (pid_ == 0) {
        ::dup2(out[1], STDOUT_FILENO);
        ::close(out[0]);
        ::close(out[1]);
        exec_argv(std::move(args));
    }
    ::close(out[1]);
    // Read stdout until "listening on http(s)://127.0.0.1:PORT".
    const std::string listening = tls ? "listening on https://127.0.0.1:" : "listening on http://127.0.0.1:";
    std::string text;
    char buf[256];
    ssize_t n;
    while ((n = ::read(out[0], buf, sizeof(buf))) > 0) {
        text.append(buf, static_cast<std::size_t>(n));
        auto pos = text.find(listening);
        if (pos != std::string::npos && text.find('\n', pos) != std::string::npos) {
            port_ = std::stoi(text.substr(pos + listening.size()));
            break;
        }
    }
    fd_ = out[0];
}

void exec_argv(std::vector<std::string> args) {
    std::vector<char*> argv;
    for (auto& a : args)
        argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(args[0].c_str(), argv.data());
    ::_exit(127);
}

ControllerProcess::~ControllerProcess() {
    if (pid_ > 0) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
    }
    if (fd_ >= 0) ::close(fd_);
}

void ControllerProcess::kill9() {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
}

void ControllerProcess::reload() {
    if (pid_ > 0) ::kill(pid_, SIGHUP);
}

int ControllerProcess::terminate() {
    ::kill(pid_, SIGTERM);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

CliResult run_controller_cli(const std::vector<std::string>& args) {
    PosixProcessRunner runner;
    ProcessRequest request;
    request.argv = {binary_dir() + "/controller/nodeform-controller"};
    request.argv.insert(request.argv.end(), args.begin(), args.end());
    request.timeout = std::chrono::seconds(60);
    auto result = runner.run(request);
    if (!result) return {-1, "", result.message()};
    return {result->exit_code, result->out, result->err};
}

}  // namespace nodeform::test
