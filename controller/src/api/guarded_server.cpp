// The connection loop behind guarded_server.hpp: cpp-httplib parses and routes (Server::process_request), but
// accepting, TLS, socket I/O, deadlines and the connection cap are ours.
#include "guarded_server.hpp"

#include <fcntl.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <type_traits>

namespace nodeform::controller {
namespace {

using Clock = std::chrono::steady_clock;

thread_local bool t_reject = false;  // set by CappedQueue around a connection it refuses

// Waits for events on fd until deadline; true when they came, false when the deadline passed (or poll failed).
bool wait_for(int fd, short events, Clock::time_point deadline) {
    while (true) {
        auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
        if (left <= 0) return false;
        pollfd p{fd, events, 0};
        int r = ::poll(&p, 1, static_cast<int>(std::min<long long>(left, 1000)));
        if (r > 0) return true;
        if (r < 0 && errno != EINTR) return false;
    }
}

void address_of(int fd, bool peer, std::string& ip, int& port) {
    sockaddr_storage addr{};
    socklen_t len = sizeof(addr);
    int r = peer ? ::getpeername(fd, reinterpret_cast<sockaddr*>(&addr), &len)
                 : ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    if (r != 0) return;
    char host[NI_MAXHOST] = {};
    if (::getnameinfo(reinterpret_cast<sockaddr*>(&addr), len, host, sizeof(host), nullptr, 0, NI_NUMERICHOST) == 0)
        ip = host;
    if (addr.ss_family == AF_INET) port = ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
    if (addr.ss_family == AF_INET6) port = ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port);
}

// A connection's byte stream (plain or TLS) with per-request deadlines: next_request() sets the deadline for
// reading the whole request (a read after a write, as after "100 Continue", starts read_timeout anew), the
// first write of the response starts write_timeout for all of it.
class DeadlineStream final : public httplib::Stream {
  public:
    DeadlineStream(int fd, SSL* ssl, const ConnectionLimits& limits) : fd_(fd), ssl_(ssl), limits_(limits) {}

    // The next request (line, headers, body) must be read by deadline.
    void next_request(Clock::time_point deadline) {
        phase_ = Phase::reading;
        deadline_ = deadline;
        in_head_ = true;
        head_bytes_ = 0;
        line_length_ = 0;
    }
    bool buffered() const { return pos_ < len_ || (ssl_ && SSL_pending(ssl_) > 0); }
    bool missed_deadline() const { return missed_; }
    bool head_too_large() const { return head_too_large_; }

    bool is_readable() const override {
        return buffered() ||
               wait_for(fd_, POLLIN, phase_ == Phase::reading ? deadline_ : Clock::now() + limits_.read_timeout);
    }
    bool is_writable() const override {
        return wait_for(fd_, POLLOUT, phase_ == Phase::writing ? deadline_ : Clock::now() + limits_.write_timeout);
    }

    ssize_t read(char* ptr, std::size_t size) override {
        if (phase_ != Phase::reading) {
            phase_ = Phase::reading;
            deadline_ = Clock::now() + limits_.read_timeout;
        }
        if (pos_ >= len_) {
            ssize_t n = fill();
            if (n <= 0) return n;
        }
        std::size_t take = std::min(size, len_ - pos_);
        if (in_head_ && !scan_head(buf_ + pos_, take)) {
            head_too_large_ = true;
            return -1;
        }
        std::memcpy(ptr, buf_ + pos_, take);
        pos_ += take;
        return static_cast<ssize_t>(take);
    }

    ssize_t write(const char* ptr, std::size_t size) override {
        if (phase_ != Phase::writing) {
            phase_ = Phase::writing;
            deadline_ = Clock::now() + limits_.write_timeout;
        }
        std::size_t done = 0;
        while (done < size) {
            ssize_t n = write_some(ptr + done, size - done);
            if (n < 0) return done > 0 ? static_cast<ssize_t>(done) : -1;
            done += static_cast<std::size_t>(n);
        }
        return static_cast<ssize_t>(done);
    }

    void get_remote_ip_and_port(std::string& ip, int& port) const override { address_of(fd_, true, ip, port); }
    void get_local_ip_and_port(std::string& ip, int& port) const override { address_of(fd_, false, ip, port); }
    socket_t socket() const override { return fd_; }

  private:
    enum class Phase { idle, reading, writing };

    // Follows the request head up to its empty line; false once it exceeds max_head_bytes.
    bool scan_head(const char* p, std::size_t n) {
        for (std::size_t i = 0; i < n && in_head_; ++i) {
            if (++head_bytes_ > limits_.max_head_bytes) return false;
            if (p[i] == '\n') {
                if (line_length_ == 0) in_head_ = false;
                line_length_ = 0;
            } else if (p[i] != '\r') {
                ++line_length_;
            }
        }
        return true;
    }

    // Reads what is available into buf_, waiting until the deadline; bytes, 0 at end of stream, -1 on error/deadline.
    ssize_t fill() {
        pos_ = len_ = 0;
        while (true) {
            ssize_t n;
            short want = POLLIN;
            if (ssl_) {
                int r = SSL_read(ssl_, buf_, sizeof(buf_));
                if (r > 0) {
                    len_ = static_cast<std::size_t>(r);
                    return r;
                }
                int err = SSL_get_error(ssl_, r);
                if (err == SSL_ERROR_ZERO_RETURN) return 0;
                if (err == SSL_ERROR_WANT_WRITE) {
                    want = POLLOUT;
                } else if (err != SSL_ERROR_WANT_READ) {
                    ERR_clear_error();
                    return -1;
                }
            } else {
                n = ::recv(fd_, buf_, sizeof(buf_), MSG_DONTWAIT);
                if (n > 0) {
                    len_ = static_cast<std::size_t>(n);
                    return n;
                }
                if (n == 0) return 0;
                if (errno == EINTR) continue;
                if (errno != EAGAIN && errno != EWOULDBLOCK) return -1;
            }
            if (!wait_for(fd_, want, deadline_)) {
                missed_ = true;
                return -1;
            }
        }
    }

    ssize_t write_some(const char* ptr, std::size_t size) {
        while (true) {
            short want = POLLOUT;
            if (ssl_) {
                int r = SSL_write(ssl_, ptr, static_cast<int>(std::min<std::size_t>(size, 1 << 30)));
                if (r > 0) return r;
                int err = SSL_get_error(ssl_, r);
                if (err == SSL_ERROR_WANT_READ) {
                    want = POLLIN;
                } else if (err != SSL_ERROR_WANT_WRITE) {
                    ERR_clear_error();
                    return -1;
                }
            } else {
                ssize_t n = ::send(fd_, ptr, size, MSG_DONTWAIT | MSG_NOSIGNAL);
                if (n >= 0) return n;
                if (errno == EINTR) continue;
                if (errno != EAGAIN && errno != EWOULDBLOCK) return -1;
            }
            if (!wait_for(fd_, want, deadline_)) {
                missed_ = true;
                return -1;
            }
        }
    }

    int fd_;
    SSL* ssl_;
    const ConnectionLimits& limits_;
    Phase phase_ = Phase::idle;
    Clock::time_point deadline_{};
    bool missed_ = false;
    bool head_too_large_ = false;
    bool in_head_ = true;
    std::size_t head_bytes_ = 0, line_length_ = 0;
    char buf_[16384];
    std::size_t pos_ = 0, len_ = 0;
};

// httplib's thread pool behind a cap on connections in service or queued; beyond it the connection is handed
// to the server on the accepting thread with t_reject set (answered 503 and closed without blocking).
class CappedQueue final : public httplib::TaskQueue {
  public:
    CappedQueue(const ConnectionLimits& limits, ConnectionCounters& counters)
        : pool_(limits.workers),
          cap_(static_cast<std::int64_t>(std::max(limits.max_connections, limits.workers))),
          counters_(counters) {}
    void enqueue(std::function<void()> fn) override {
        if (counters_.open.load() >= cap_) {
            counters_.rejected++;
            t_reject = true;
            fn();
            t_reject = false;
            return;
        }
        counters_.open++;
        pool_.enqueue([this, fn = std::move(fn)] {
            fn();
            counters_.open--;
        });
    }
    void shutdown() override { pool_.shutdown(); }

  private:
    httplib::ThreadPool pool_;
    std::int64_t cap_;
    ConnectionCounters& counters_;
};

class BacklogRaiser {
  public:
    virtual ~BacklogRaiser() = default;
    virtual void raise(int backlog) = 0;
};

constexpr char kBusy[] =
    "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\n"
    "Content-Length: 93\r\n\r\n"
    "{\"error\":{\"code\":\"too_many_connections\",\"message\":\"the controller is at its connection cap\"}}";
static_assert(sizeof("{\"error\":{\"code\":\"too_many_connections\",\"message\":\"the controller is at its "
                     "connection cap\"}}") -
                      1 ==
                  93,
              "Content-Length of kBusy");

template <typename Base>
class Guarded final : public Base, public BacklogRaiser {
  public:
    template <typename... Args>
    Guarded(const ConnectionLimits& limits, ConnectionCounters& counters, Args&&... args)
        : Base(std::forward<Args>(args)...), limits_(limits), counters_(counters) {
        this->new_task_queue = [this] { return new CappedQueue(limits_, counters_); };
    }
    void raise(int backlog) override { ::listen(this->svr_sock_, backlog); }

  private:
    static constexpr bool kTls = std::is_same_v<Base, httplib::SSLServer>;

    bool process_and_close_socket(socket_t sock) override {
        bool ok = false;
        if (t_reject) {
            if constexpr (!kTls) (void)!::send(sock, kBusy, sizeof(kBusy) - 1, MSG_DONTWAIT | MSG_NOSIGNAL);
        } else {
            ok = serve(sock);
        }
        ::shutdown(sock, SHUT_WR);
        char drain[4096];  // unread request bytes would turn close() into a reset that can discard the 503
        while (::recv(sock, drain, sizeof(drain), MSG_DONTWAIT) > 0) {
        }
        ::close(sock);
        return ok;
    }

    bool serve(int sock) {
        int flags = ::fcntl(sock, F_GETFL, 0);
        if (flags >= 0) ::fcntl(sock, F_SETFL, flags | O_NONBLOCK);
        SSL* ssl = nullptr;
        auto start = Clock::now();
        if constexpr (kTls) {
            ssl = SSL_new(this->ssl_context());
            if (!ssl) return false;
            SSL_set_fd(ssl, sock);
            auto deadline = start + limits_.read_timeout;  // the handshake counts as reading the first request
            while (true) {
                int r = SSL_accept(ssl);
                if (r == 1) break;
                int err = SSL_get_error(ssl, r);
                short want = err == SSL_ERROR_WANT_READ ? POLLIN : err == SSL_ERROR_WANT_WRITE ? POLLOUT : 0;
                if (want == 0 || !wait_for(sock, want, deadline)) {
                    if (want != 0) counters_.deadline_closed++;
                    ERR_clear_error();
                    SSL_free(ssl);
                    return false;
                }
            }
        }
        DeadlineStream stream(sock, ssl, limits_);
        bool ok = false;
        for (std::size_t count = limits_.keep_alive_max_requests; count > 0 && listening(); --count) {
            bool first = count == limits_.keep_alive_max_requests;
            if (!stream.buffered()) {
                // The first request must start within read_timeout of the connection; later ones within the
                // keep-alive timeout of the previous response.
                auto wait = first ? start + limits_.read_timeout : Clock::now() + limits_.keep_alive_timeout;
                if (!wait_for_request(sock, wait)) {
                    if (first && listening()) counters_.deadline_closed++;
                    break;
                }
            }
            // The first request (and the TLS handshake) must be read within read_timeout of the connection being
            // taken up, a later one within read_timeout of its first byte.
            stream.next_request(first ? start + limits_.read_timeout : Clock::now() + limits_.read_timeout);
            bool closed = false;
            ok = this->process_request(stream, count == 1, closed, [](httplib::Request&) {});
            if (stream.missed_deadline()) {  // cpp-httplib may have answered 400; either way the connection ends
                counters_.deadline_closed++;
                break;
            }
            if (stream.head_too_large()) break;  // answered 400 by cpp-httplib; the rest of the head is unread
            if (!ok || closed) break;
        }
        if (ssl) {
            SSL_shutdown(ssl);  // best effort close_notify; never waits (non-blocking socket)
            ERR_clear_error();
            SSL_free(ssl);
        }
        return ok;
    }

    // False once stop() has closed the listening socket (is_running() stays true until the workers are joined).
    bool listening() const { return this->svr_sock_ != INVALID_SOCKET; }

    // Waits for the first byte of the next request until deadline, returning early (false) on stop().
    bool wait_for_request(int sock, Clock::time_point deadline) const {
        while (listening()) {
            if (wait_for(sock, POLLIN, std::min(deadline, Clock::now() + std::chrono::milliseconds(100)))) return true;
            if (Clock::now() >= deadline) return false;
        }
        return false;
    }

    ConnectionLimits limits_;
    ConnectionCounters& counters_;
};

}  // namespace

std::unique_ptr<httplib::Server> make_guarded_server(const ConnectionLimits& limits, ConnectionCounters& counters) {
    return std::make_unique<Guarded<httplib::Server>>(limits, counters);
}

std::unique_ptr<httplib::SSLServer> make_guarded_ssl_server(const ConnectionLimits& limits,
                                                            ConnectionCounters& counters, const std::string& cert,
                                                            const std::string& key) {
    return std::make_unique<Guarded<httplib::SSLServer>>(limits, counters, cert.c_str(), key.c_str());
}

void raise_backlog(httplib::Server& server, int backlog) {
    if (auto* r = dynamic_cast<BacklogRaiser*>(&server)) r->raise(backlog);
}

}  // namespace nodeform::controller
