// The QEMU guest agent protocol over a unix socket: one connection per call, guest-sync first.
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <random>

#include "nodeform/base64.hpp"
#include "nodeform/controller/providers/qemu.hpp"

namespace nodeform::controller::providers {

using json = nlohmann::json;
using std::chrono::milliseconds;

namespace {

constexpr std::size_t kMaxLine = 4 * 1024 * 1024;  // a reply longer than this is refused

struct Fd {
    int fd = -1;
    ~Fd() {
        if (fd >= 0) ::close(fd);
    }
};

// Reads one '\n'-terminated line before the deadline; `buffer` keeps what follows it.
Result<std::string> read_line(int fd, std::string& buffer, std::chrono::steady_clock::time_point deadline) {
    for (;;) {
        auto nl = buffer.find('\n');
        if (nl != std::string::npos) {
            std::string line = buffer.substr(0, nl);
            buffer.erase(0, nl + 1);
            return line;
        }
        if (buffer.size() > kMaxLine) return make_error("the guest agent's reply is over 4 MiB");
        auto left = std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now()).count();
        if (left <= 0) return make_error("the guest agent did not answer in time");
        pollfd p{fd, POLLIN, 0};
        int n = ::poll(&p, 1, static_cast<int>(left));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return make_error("the guest agent did not answer in time");
        char chunk[65536];
        ssize_t got = ::read(fd, chunk, sizeof chunk);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) return make_error("the guest agent's socket closed");
        buffer.append(chunk, static_cast<std::size_t>(got));
    }
}

Status write_all(int fd, const std::string& data) {
    std::size_t done = 0;
    while (done < data.size()) {
        ssize_t n = ::send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return make_error(std::string("writing to the guest agent's socket: ") + std::strerror(errno));
        done += static_cast<std::size_t>(n);
    }
    return Ok{};
}

}  // namespace

QgaClient::QgaClient(std::string socket_path, milliseconds timeout)
    : path_(std::move(socket_path)), timeout_(timeout) {}

Result<json> QgaClient::call(const std::string& command, const json& arguments) {
    sockaddr_un addr{};
    if (path_.size() >= sizeof addr.sun_path) return make_error("the guest agent's socket path is too long: " + path_);
    Fd s;
    s.fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s.fd < 0) return make_error(std::string("socket: ") + std::strerror(errno));
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path_.c_str(), path_.size() + 1);
    if (::connect(s.fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        return make_error("connecting to the guest agent's socket " + path_ + ": " + std::strerror(errno));
    }
    const auto deadline = std::chrono::steady_clock::now() + timeout_;
    std::mt19937_64 rng(std::random_device{}());
    const std::int64_t id = static_cast<std::int64_t>(rng() >> 2);
    std::string buffer;
    if (auto st = write_all(s.fd, json({{"execute", "guest-sync"}, {"arguments", {{"id", id}}}}).dump() + "\n"); !st)
        return st.error();
    for (;;) {  // replies to earlier, abandoned commands may come first
        auto line = read_line(s.fd, buffer, deadline);
        if (!line) return line.error();
        json reply = json::parse(*line, nullptr, false);
        if (reply.is_object() && reply.contains("return") && reply["return"] == id) break;
    }
    json request = {{"execute", command}};
    if (!arguments.is_null()) request["arguments"] = arguments;
    if (auto st = write_all(s.fd, request.dump() + "\n"); !st) return st.error();
    if (command == "guest-shutdown") return json(nullptr);  // it answers nothing when it succeeds
    auto line = read_line(s.fd, buffer, deadline);
    if (!line) return line.error();
    json reply = json::parse(*line, nullptr, false);
    if (!reply.is_object()) return make_error("the guest agent answered something that is not a JSON object");
    if (reply.contains("error")) {
        const json& e = reply["error"];
        return make_error(command + ": " + (e.is_object() ? e.value("desc", e.dump()) : e.dump()));
    }
    if (!reply.contains("return")) return make_error(command + ": the guest agent's reply has no 'return'");
    return reply["return"];
}

Result<QgaClient::ExecResult> QgaClient::exec(const std::vector<std::string>& argv, const Clock& clock,
                                              milliseconds limit) {
    if (argv.empty()) return make_error("guest-exec: no command");
    json args = {{"path", argv[0]},
                 {"arg", json(std::vector<std::string>(argv.begin() + 1, argv.end()))},
                 {"capture-output", true}};
    auto started = call("guest-exec", args);
    if (!started) return started.error();
    if (!started->is_object() || !started->contains("pid")) return make_error("guest-exec: no pid in the reply");
    const json pid = (*started)["pid"];
    const auto deadline = clock.steady_now() + limit;
    for (;;) {
        auto status = call("guest-exec-status", {{"pid", pid}});
        if (!status) return status.error();
        if (status->is_object() && status->value("exited", false)) {
            ExecResult r;
            r.exit_code = status->value("exitcode", -1);
            auto decode = [&](const char* key) {
                if (!status->contains(key) || !(*status)[key].is_string()) return std::string();
                return base64_decode((*status)[key].get<std::string>()).value_or("");
            };
            r.out = decode("out-data");
            r.err = decode("err-data");
            return r;
        }
        if (clock.steady_now() > deadline) return make_error("guest-exec: " + argv[0] + " did not exit in time");
        clock.sleep_for(milliseconds(200));
    }
}

}  // namespace nodeform::controller::providers
