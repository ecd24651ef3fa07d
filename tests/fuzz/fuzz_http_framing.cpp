// libFuzzer: arbitrary bytes → one loopback connection to the controller's guarded server (request heads, body
// framing: Content-Length, chunked, none; pipelining; refusals). Must never crash, hang or leak; no handler ever
// sees a body over max_body_bytes; every answer is an HTTP/1.1 response; the server closes every connection once
// the client has stopped sending. One server for the whole run: a fixed pool of workers, no thread per input.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "guarded_server.hpp"

using namespace nodeform::controller;

namespace {

constexpr std::size_t kMaxBody = 4096;

struct Harness {
    ConnectionCounters counters;
    std::unique_ptr<httplib::Server> server;
    int port = 0;

    Harness() {
        ConnectionLimits limits;
        limits.read_timeout = std::chrono::milliseconds(300);
        limits.write_timeout = std::chrono::milliseconds(300);
        limits.keep_alive_timeout = std::chrono::milliseconds(300);
        limits.max_head_bytes = 8192;
        limits.max_body_bytes = kMaxBody;
        limits.workers = 2;
        limits.max_connections = 8;
        // GETs may be answered on an event loop: both paths see the same hostile bytes.
        server = make_guarded_server(limits, counters,
                                     [](std::string_view method, std::string_view) { return method == "GET"; });
        auto check = [](const httplib::Request& req, httplib::Response& res) {
            if (req.body.size() > kMaxBody) std::abort();  // the limit did not hold
            res.set_content(std::to_string(req.body.size()), "text/plain");
        };
        server->Get(".*", check);
        server->Post(".*", check);
        server->Put(".*", check);
        port = server->bind_to_any_port("127.0.0.1");
        if (port <= 0) std::abort();
        std::thread([s = server.get()] { s->listen_after_bind(); }).detach();
    }
};

Harness& harness() {
    static Harness* h = new Harness();  // harness-only; lives until the process exits
    return *h;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size > 64 * 1024) return 0;
    Harness& h = harness();
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<std::uint16_t>(h.port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = -1;
    // Thousands of connections a second can exhaust the ephemeral ports (the server closes first, so its side
    // keeps TIME_WAIT): the harness waits for one rather than reporting a crash of the server.
    for (int attempt = 0; fd < 0; ++attempt) {
        fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) std::abort();
        int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
        if (rc != 0 && errno == EINTR) {  // libFuzzer's timer signal: the connection goes on; wait for its outcome
            pollfd writable{fd, POLLOUT, 0};
            while (::poll(&writable, 1, 1000) < 0 && errno == EINTR) {
            }
            int error = 0;
            socklen_t length = sizeof(error);
            ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length);
            rc = error == 0 ? 0 : -1;
            errno = error;
        }
        if (rc == 0) break;
        if (errno != EADDRNOTAVAIL || attempt == 200) {  // refused: the server is gone
            std::fprintf(stderr, "fuzz_http_framing: connect: %s (attempt %d)\n", std::strerror(errno), attempt);
            std::abort();
        }
        ::close(fd);
        fd = -1;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    std::string answer;
    char buf[16384];
    std::size_t sent = 0;
    bool open_for_write = true;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (true) {
        if (open_for_write && sent == size) {
            ::shutdown(fd, SHUT_WR);
            open_for_write = false;
        }
        pollfd p{fd, static_cast<short>(POLLIN | (open_for_write ? POLLOUT : 0)), 0};
        if (::poll(&p, 1, 100) < 0) continue;
        if (std::chrono::steady_clock::now() > deadline) std::abort();  // the server kept a finished client waiting
        if (p.revents & POLLOUT) {
            ssize_t n = ::send(fd, data + sent, size - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n > 0) sent += static_cast<std::size_t>(n);
            if (n < 0 && errno != EAGAIN) open_for_write = false;  // the server closed: it read all it wanted
        }
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = ::recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
            if (n > 0) {
                answer.append(buf, static_cast<std::size_t>(n));
            } else if (n == 0 || errno != EAGAIN) {
                break;
            }
        }
    }
    linger reset{1, 0};  // the server has closed (or refused): a reset leaves no TIME_WAIT behind on either side
    ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset));
    ::close(fd);
    if (!answer.empty() && answer.rfind("HTTP/1.1 ", 0) != 0) std::abort();
    return 0;
}
