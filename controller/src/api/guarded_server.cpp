// The connection loop behind guarded_server.hpp: cpp-httplib parses and routes (Server::process_request), but
// accepting, TLS, socket I/O, deadlines and the connection cap are ours.
#include "guarded_server.hpp"

#include <fcntl.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <optional>
#include <string_view>
#include <thread>
#include <type_traits>
#include <unordered_set>
#include <vector>

namespace nodeform::controller {
namespace {

using Clock = std::chrono::steady_clock;

thread_local bool t_reject = false;          // set by CappedQueue around a connection it refuses
thread_local bool t_body_too_large = false;  // set by BodyReader for the request this worker is serving

bool iequals(std::string_view a, std::string_view b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
               return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
           });
}

std::string_view trim(std::string_view v) {
    while (!v.empty() && (v.front() == ' ' || v.front() == '\t'))
        v.remove_prefix(1);
    while (!v.empty() && (v.back() == ' ' || v.back() == '\t'))
        v.remove_suffix(1);
    return v;
}

// How a request's body is delimited (RFC 9112 §6), from its head.
struct Framing {
    enum class Kind { none, length, chunked, invalid } kind = Kind::none;
    std::uint64_t length = 0;
};

Framing framing_of(const httplib::Headers& headers) {
    auto te = headers.equal_range("Transfer-Encoding");
    auto cl = headers.equal_range("Content-Length");
    if (te.first != te.second) {  // only "chunked" alone; with a Content-Length it is a smuggling attempt
        if (cl.first != cl.second || std::next(te.first) != te.second || !iequals(trim(te.first->second), "chunked"))
            return {Framing::Kind::invalid};
        return {Framing::Kind::chunked};
    }
    if (cl.first == cl.second) return {};
    std::optional<std::uint64_t> length;
    for (auto it = cl.first; it != cl.second; ++it) {
        std::string_view v = trim(it->second);
        if (v.empty() || v.size() > 18 || !std::all_of(v.begin(), v.end(), [](char c) { return c >= '0' && c <= '9'; }))
            return {Framing::Kind::invalid};
        std::uint64_t n = std::stoull(std::string(v));
        if (length && *length != n) return {Framing::Kind::invalid};
        length = n;
    }
    return {Framing::Kind::length, *length};
}

// Meters the body of one request as cpp-httplib reads it: never hands out a byte beyond the body's end, and
// fails the read (-1) on a malformed chunk or once the decoded size would pass the limit.
class BodyReader {
  public:
    void start(Framing framing, std::size_t limit) {
        framing_ = framing;
        limit_ = limit;
        total_ = 0;
        state_ = State::size;
        digits_ = 0;
        chunk_left_ = 0;
        trailer_bytes_ = 0;
        started_ = true;
        if (framing.kind == Framing::Kind::length && framing.length > limit) too_large();
    }
    void reset() {
        started_ = false;
        failed_ = false;
        framing_ = {};
    }
    bool started() const { return started_; }
    // No more bytes belong to the body: 0 (its end) or -1 (it must not be read on) for every further read.
    std::optional<ssize_t> ended() const {
        if (failed_ || framing_.kind == Framing::Kind::invalid) return -1;
        if (framing_.kind == Framing::Kind::none || complete()) return 0;
        return std::nullopt;
    }
    // Every byte of the body was read (true when there is none).
    bool complete() const {
        if (!started_ || failed_) return false;
        switch (framing_.kind) {
            case Framing::Kind::none:
                return true;
            case Framing::Kind::length:
                return total_ == framing_.length;
            case Framing::Kind::chunked:
                return state_ == State::done;
            case Framing::Kind::invalid:
                return false;
        }
        return false;
    }
    // How many of the n buffered bytes at p belong to the body: 0 at its end, -1 when it must not be read on.
    ssize_t admit(const char* p, std::size_t n) {
        if (failed_) return -1;
        switch (framing_.kind) {
            case Framing::Kind::none:
                return 0;  // no framing header: no body
            case Framing::Kind::invalid:
                return fail();
            case Framing::Kind::length: {
                std::size_t take = static_cast<std::size_t>(std::min<std::uint64_t>(n, framing_.length - total_));
                total_ += take;
                return static_cast<ssize_t>(take);
            }
            case Framing::Kind::chunked:
                return admit_chunked(p, n);
        }
        return fail();
    }

  private:
    enum class State { size, extension, size_lf, data, data_cr, data_lf, line_start, trailer, trailer_lf, done };

    ssize_t fail() {
        failed_ = true;
        return -1;
    }
    ssize_t too_large() {
        t_body_too_large = true;
        return fail();
    }

    ssize_t admit_chunked(const char* p, std::size_t n) {
        std::size_t i = 0;
        while (i < n && state_ != State::done) {
            char c = p[i];
            switch (state_) {
                case State::size:
                    if (std::isxdigit(static_cast<unsigned char>(c))) {
                        if (++digits_ > 15) return fail();  // < 2^60: no overflow below
                        int digit = c <= '9' ? c - '0' : std::tolower(static_cast<unsigned char>(c)) - 'a' + 10;
                        chunk_left_ = chunk_left_ * 16 + static_cast<std::uint64_t>(digit);
                    } else if (digits_ == 0) {
                        return fail();
                    } else if (c == ';') {
                        state_ = State::extension;
                    } else if (c == '\r') {
                        state_ = State::size_lf;
                    } else {
                        return fail();
                    }
                    break;
                case State::extension:
                    if (++trailer_bytes_ > kMaxLineBytes) return fail();
                    if (c == '\r') state_ = State::size_lf;
                    break;
                case State::size_lf:
                    if (c != '\n') return fail();
                    digits_ = 0;
                    trailer_bytes_ = 0;
                    if (chunk_left_ == 0) {
                        state_ = State::line_start;
                    } else if (chunk_left_ > limit_ - total_) {
                        return too_large();  // before its data arrives: nothing of it is buffered
                    } else {
                        total_ += chunk_left_;
                        state_ = State::data;
                    }
                    break;
                case State::data: {
                    std::size_t take = static_cast<std::size_t>(std::min<std::uint64_t>(n - i, chunk_left_));
                    chunk_left_ -= take;
                    i += take;
                    if (chunk_left_ == 0) state_ = State::data_cr;
                    continue;
                }
                case State::data_cr:
                    if (c != '\r') return fail();
                    state_ = State::data_lf;
                    break;
                case State::data_lf:
                    if (c != '\n') return fail();
                    state_ = State::size;
                    break;
                case State::line_start:  // after the last chunk: trailer fields, then an empty line
                    state_ = c == '\r' ? State::trailer_lf : State::trailer;
                    if (state_ == State::trailer && ++trailer_bytes_ > kMaxLineBytes) return fail();
                    break;
                case State::trailer:
                    if (++trailer_bytes_ > kMaxLineBytes) return fail();
                    if (c == '\n') state_ = State::line_start;
                    break;
                case State::trailer_lf:
                    if (c != '\n') return fail();
                    state_ = State::done;
                    break;
                case State::done:
                    break;
            }
            ++i;
        }
        return static_cast<ssize_t>(i);
    }

    static constexpr std::size_t kMaxLineBytes = 8192;  // chunk extensions, and all trailer fields together
    Framing framing_;
    std::size_t limit_ = 0;
    std::uint64_t total_ = 0;  // body bytes admitted (decoded, for chunked)
    State state_ = State::size;
    int digits_ = 0;
    std::uint64_t chunk_left_ = 0;
    std::size_t trailer_bytes_ = 0;
    bool started_ = false;
    bool failed_ = false;
};

// Follows a response head as it is written; closes() once it says "Connection: close".
class ResponseHead {
  public:
    void start() {
        head_.clear();
        scanning_ = true;
    }
    void reset() { closes_ = false; }
    bool closes() const { return closes_; }
    void feed(const char* p, std::size_t n) {
        if (!scanning_) return;
        head_.append(p, std::min(n, kMaxHead - std::min(kMaxHead, head_.size())));
        auto end = head_.find("\r\n\r\n");
        if (end == std::string::npos && head_.size() < kMaxHead) return;
        scanning_ = false;
        std::string_view head(head_.data(), end == std::string::npos ? head_.size() : end);
        for (std::size_t pos = head.find("\r\n"); pos != std::string_view::npos;) {
            std::size_t next = head.find("\r\n", pos + 2);
            std::string_view line = head.substr(pos + 2, next == std::string_view::npos ? next : next - pos - 2);
            auto colon = line.find(':');
            if (colon != std::string_view::npos && iequals(trim(line.substr(0, colon)), "Connection") &&
                iequals(trim(line.substr(colon + 1)), "close"))
                closes_ = true;
            pos = next;
        }
    }

  private:
    static constexpr std::size_t kMaxHead = 64 * 1024;
    std::string head_;
    bool scanning_ = false;
    bool closes_ = false;
};

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
        body_.reset();
        response_.reset();
        t_body_too_large = false;
    }
    // The head has been parsed: read the body as framed by its headers.
    void expect_body(const httplib::Headers& headers) { body_.start(framing_of(headers), limits_.max_body_bytes); }
    // The request was read to its end and the response leaves the connection open: the next request may follow.
    bool reusable() const { return body_.complete() && !response_.closes(); }
    void set_ssl(SSL* ssl) { ssl_ = ssl; }
    // Bytes wait here or in OpenSSL (decrypted, or read ahead and not yet decrypted): epoll would not tell.
    bool buffered() const { return pos_ < len_ || (ssl_ && SSL_has_pending(ssl_) == 1); }

    // Loop threads: reads and writes return instead of waiting (would_block() tells it was that).
    void set_nonblocking(bool on) {
        nonblocking_ = on;
        would_block_ = false;
    }
    bool would_block() const { return would_block_; }
    // Part of a response is still to be sent (a loop could not send all of it without waiting).
    bool output_pending() const { return sent_ < out_.size(); }

    enum class Arrival { data, none, closed };
    // Loop threads: reads what the socket has if nothing is buffered; never waits.
    Arrival take_available() {
        if (pos_ < len_) return Arrival::data;
        set_nonblocking(true);
        ssize_t n = fill();
        bool blocked = would_block_;
        set_nonblocking(false);
        if (n > 0) return Arrival::data;
        return n < 0 && blocked ? Arrival::none : Arrival::closed;
    }
    // The buffered bytes start with a whole request head ending in CRLF CRLF: its lines (each with its CRLF).
    std::optional<std::string_view> complete_head() const {
        if (pos_ >= len_) return std::nullopt;
        std::string_view bytes(buf_.get() + pos_, len_ - pos_);
        auto end = bytes.find("\r\n\r\n");
        if (end == std::string_view::npos) return std::nullopt;
        return bytes.substr(0, end + 2);
    }
    bool missed_deadline() const { return missed_; }
    // Frees the read buffer while nothing is buffered (an idle keep-alive connection costs no buffer).
    void release_buffer() {
        if (!buffered()) buf_.reset();
    }
    bool head_too_large() const { return head_too_large_; }

    bool is_readable() const override {
        // Whatever was written goes out before waiting for the peer (cpp-httplib's interface is const here).
        if (!out_.empty() && !const_cast<DeadlineStream*>(this)->flush()) return false;
        return buffered() ||
               wait_for(fd_, POLLIN, phase_ == Phase::reading ? deadline_ : Clock::now() + limits_.read_timeout);
    }
    bool is_writable() const override {
        return wait_for(fd_, POLLOUT, phase_ == Phase::writing ? deadline_ : Clock::now() + limits_.write_timeout);
    }

    ssize_t read(char* ptr, std::size_t size) override {
        if (!out_.empty() && !flush()) return -1;  // "100 Continue" goes out before the body is awaited
        if (phase_ != Phase::reading) {
            phase_ = Phase::reading;
            deadline_ = Clock::now() + limits_.read_timeout;
        }
        if (!in_head_) {                      // never wait for bytes that are not the body's
            if (!body_.started()) return -1;  // cpp-httplib reads a body only after setup_request has framed it
            if (auto end = body_.ended()) return *end;
        }
        if (pos_ >= len_) {
            ssize_t n = fill();
            if (n <= 0) return n;
        }
        std::size_t take = std::min(size, len_ - pos_);
        if (in_head_) {
            auto head = scan_head(buf_.get() + pos_, take);  // bytes up to the end of the head, no further
            if (!head) {
                head_too_large_ = true;
                return -1;
            }
            take = *head;
        } else {
            ssize_t admitted = body_.admit(buf_.get() + pos_, take);
            if (admitted <= 0) return admitted;
            take = static_cast<std::size_t>(admitted);
        }
        std::memcpy(ptr, buf_.get() + pos_, take);
        pos_ += take;
        return static_cast<ssize_t>(take);
    }

    // Collects the response (cpp-httplib writes its head and its body separately) so that it leaves in one send
    // (one TLS record) at flush(); beyond kOutputBytes it is sent as it comes.
    ssize_t write(const char* ptr, std::size_t size) override {
        if (phase_ != Phase::writing) {
            phase_ = Phase::writing;
            deadline_ = Clock::now() + limits_.write_timeout;
            response_.start();
        }
        response_.feed(ptr, size);
        out_.append(ptr, size);
        if (!nonblocking_ && out_.size() >= kOutputBytes && !flush()) return -1;
        return static_cast<ssize_t>(size);
    }

    // Sends what write() collected, within the response's write deadline; false when it could not. Non-blocking:
    // false with would_block() when the socket is full; the rest stays for a later flush (the same bytes at the
    // same address, as a TLS retry needs).
    bool flush() {
        while (sent_ < out_.size()) {
            ssize_t n = write_some(out_.data() + sent_, out_.size() - sent_);
            if (n < 0) {
                if (would_block_) return false;
                out_.clear();
                sent_ = 0;
                return false;
            }
            sent_ += static_cast<std::size_t>(n);
        }
        out_.clear();
        sent_ = 0;
        if (out_.capacity() > kOutputBytes) out_.shrink_to_fit();
        return true;
    }

    // Both addresses are the connection's: asked of the kernel once, not per request.
    void get_remote_ip_and_port(std::string& ip, int& port) const override {
        if (peer_port_ < 0) address_of(fd_, true, peer_ip_, peer_port_);
        ip = peer_ip_;
        port = peer_port_;
    }
    void get_local_ip_and_port(std::string& ip, int& port) const override {
        if (local_port_ < 0) address_of(fd_, false, local_ip_, local_port_);
        ip = local_ip_;
        port = local_port_;
    }
    socket_t socket() const override { return fd_; }

  private:
    enum class Phase { idle, reading, writing };

    // Follows the request head up to its empty line: how many of the n bytes belong to it, nullopt once it
    // exceeds max_head_bytes.
    std::optional<std::size_t> scan_head(const char* p, std::size_t n) {
        std::size_t i = 0;
        for (; i < n && in_head_; ++i) {
            if (++head_bytes_ > limits_.max_head_bytes) return std::nullopt;
            if (p[i] == '\n') {
                if (line_length_ == 0) in_head_ = false;
                line_length_ = 0;
            } else if (p[i] != '\r') {
                ++line_length_;
            }
        }
        return i;
    }

    // Reads what is available into buf_, waiting until the deadline; bytes, 0 at end of stream, -1 on error/deadline.
    ssize_t fill() {
        pos_ = len_ = 0;
        if (!buf_) buf_.reset(new char[kBufferBytes]);  // not zeroed: only bytes read into it are looked at
        while (true) {
            ssize_t n;
            short want = POLLIN;
            if (ssl_) {
                int r = SSL_read(ssl_, buf_.get(), static_cast<int>(kBufferBytes));
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
                n = ::recv(fd_, buf_.get(), kBufferBytes, MSG_DONTWAIT);
                if (n > 0) {
                    len_ = static_cast<std::size_t>(n);
                    return n;
                }
                if (n == 0) return 0;
                if (errno == EINTR) continue;
                if (errno != EAGAIN && errno != EWOULDBLOCK) return -1;
            }
            if (nonblocking_) {
                would_block_ = true;
                return -1;
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
            if (nonblocking_) {
                would_block_ = true;
                return -1;
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
    bool nonblocking_ = false;
    bool would_block_ = false;
    bool head_too_large_ = false;
    bool in_head_ = true;
    std::size_t head_bytes_ = 0, line_length_ = 0;
    BodyReader body_;
    ResponseHead response_;
    static constexpr std::size_t kBufferBytes = 16384;
    std::unique_ptr<char[]> buf_;
    std::size_t pos_ = 0, len_ = 0;
    static constexpr std::size_t kOutputBytes = 64 * 1024;
    std::string out_;       // the response written but not yet sent
    std::size_t sent_ = 0;  // of out_, sent already
    mutable std::string peer_ip_, local_ip_;
    mutable int peer_port_ = -1, local_port_ = -1;
};

// An open connection between requests: socket, TLS session and stream survive while it waits parked.
struct Connection {
    Connection(int fd, const ConnectionLimits& limits, Clock::time_point start)
        : fd(fd), stream(fd, nullptr, limits), start(start), left(limits.keep_alive_max_requests) {}
    int fd;
    SSL* ssl = nullptr;    // HTTPS: set once the handshake starts
    bool secured = false;  // HTTPS: the handshake completed
    DeadlineStream stream;
    Clock::time_point start;         // accepted
    std::size_t left;                // requests it may still make
    Clock::time_point deadline{};    // while parked: closed unless its next request starts by then
    bool awaiting_first = true;      // no request served yet
    int loop = -1;                   // the event loop it parks on (fixed once chosen)
    bool registered = false;         // its socket is in that loop's epoll set (one-shot: re-armed at each park)
    bool close_after_flush = false;  // a worker finishing a loop's response closes it afterwards
    bool secured_or_plain(bool tls) const { return !tls || secured; }
};

// What the queue needs from the server: serve a connection on a worker, answer what arrived on a loop, close one.
class ConnectionHandler {
  public:
    virtual ~ConnectionHandler() = default;
    virtual void serve(Connection* c) = 0;
    virtual void ready(Connection* c) = 0;
    virtual void close(Connection* c) = 0;
};

// httplib's thread pool behind a cap on open connections (in service, waiting for a worker, or parked idle);
// beyond it the connection is handed to the server on the accepting thread with t_reject set (answered 503 and
// closed without blocking). A new connection, and one waiting for its next request, is parked on one of the
// event loops (its own, chosen round-robin once): the loop watches its parked sockets with epoll, hands a readable one
// to the server's ready() on the loop thread (which answers it there or hands it to a worker), and closes one at its
// deadline. An idle keep-alive connection costs a socket and a small struct, not a thread.
class CappedQueue final : public httplib::TaskQueue {
  public:
    CappedQueue(const ConnectionLimits& limits, ConnectionCounters& counters, ConnectionHandler& handler)
        : pool_(limits.workers),
          cap_(static_cast<std::int64_t>(std::max(limits.max_connections, limits.workers))),
          counters_(counters),
          handler_(handler) {
        std::size_t n = limits.event_loops;
        if (n == 0) n = std::clamp<std::size_t>(std::thread::hardware_concurrency(), 1, 16);
        for (std::size_t i = 0; i < n; ++i) {
            loops_.push_back(std::make_unique<Loop>());
            loops_.back()->epoll = ::epoll_create1(EPOLL_CLOEXEC);
        }
        for (auto& loop : loops_)
            loop->thread = std::thread([this, l = loop.get()] { watch(*l); });
    }
    ~CappedQueue() override {
        shutdown();
        for (auto& loop : loops_)
            if (loop->epoll >= 0) ::close(loop->epoll);
    }
    void enqueue(std::function<void()> fn) override {
        if (counters_.open.load() >= cap_) {
            counters_.rejected++;
            t_reject = true;
            fn();
            t_reject = false;
            return;
        }
        counters_.open++;  // decremented when the connection closes (ConnectionHandler::close)
        fn();              // parks the new connection (Guarded::process_and_close_socket): its loop takes it up
    }
    void shutdown() override {
        if (shut_.exchange(true)) return;
        for (auto& loop : loops_) {
            { std::lock_guard<std::mutex> lock(loop->mutex); }  // a park() in progress has finished or sees shut_
            if (loop->thread.joinable()) loop->thread.join();
        }
        for (auto& loop : loops_) {
            std::vector<Connection*> parked;
            {
                std::lock_guard<std::mutex> lock(loop->mutex);
                parked.assign(loop->parked.begin(), loop->parked.end());
                loop->parked.clear();
            }
            for (Connection* c : parked)
                handler_.close(c);
        }
        pool_.shutdown();
    }
    // Waits without a worker until c's socket is readable (then ready() on its loop) or c->deadline (closes it).
    void park(Connection* c) {
        if (c->loop < 0) c->loop = static_cast<int>(next_loop_++ % loops_.size());
        Loop& loop = *loops_[static_cast<std::size_t>(c->loop)];
        {
            std::lock_guard<std::mutex> lock(loop.mutex);
            if (!shut_ && loop.epoll >= 0) {
                epoll_event ev{};
                ev.events = EPOLLIN | EPOLLRDHUP | EPOLLONESHOT;
                ev.data.ptr = c;
                loop.parked.insert(c);
                if (::epoll_ctl(loop.epoll, c->registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->fd, &ev) == 0) {
                    c->registered = true;
                    return;
                }
                loop.parked.erase(c);
            }
        }
        handler_.close(c);
    }
    // No connection waits for a worker: a worker may linger briefly for its connection's next request.
    bool workers_idle() const { return waiting_.load() == 0; }
    // Serves c on a worker (from a loop: what it cannot answer without waiting).
    void hand_off(Connection* c) {
        if (shut_) return handler_.close(c);
        submit([this, c] { handler_.serve(c); });
    }

  private:
    struct Loop {
        int epoll = -1;
        std::mutex mutex;  // parked, and epoll registration against shutdown
        std::unordered_set<Connection*> parked;
        std::thread thread;
    };

    void submit(std::function<void()> fn) {
        waiting_++;
        pool_.enqueue([this, fn = std::move(fn)] {
            waiting_--;
            fn();
        });
    }

    void watch(Loop& loop) {
        constexpr int kBatch = 256;
        epoll_event events[kBatch];
        auto next_sweep = Clock::now();
        while (!shut_) {
            int n = loop.epoll >= 0 ? ::epoll_wait(loop.epoll, events, kBatch, 50) : 0;
            if (loop.epoll < 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
            for (int i = 0; i < n && !shut_; ++i) {
                auto* c = static_cast<Connection*>(events[i].data.ptr);
                {
                    std::lock_guard<std::mutex> lock(loop.mutex);
                    if (loop.parked.erase(c) == 0) continue;  // not parked (closed at shutdown)
                }
                handler_.ready(c);
            }
            auto now = Clock::now();
            if (now < next_sweep) continue;
            next_sweep = now + std::chrono::milliseconds(50);
            std::vector<Connection*> expired;
            {
                std::lock_guard<std::mutex> lock(loop.mutex);
                for (auto it = loop.parked.begin(); it != loop.parked.end();) {
                    if ((*it)->deadline <= now) {
                        expired.push_back(*it);
                        it = loop.parked.erase(it);
                    } else {
                        ++it;
                    }
                }
            }
            for (Connection* c : expired) {
                if (c->awaiting_first) counters_.deadline_closed++;  // a new connection that never sent a request
                handler_.close(c);
            }
        }
    }

    httplib::ThreadPool pool_;
    std::int64_t cap_;
    ConnectionCounters& counters_;
    ConnectionHandler& handler_;
    std::vector<std::unique_ptr<Loop>> loops_;
    std::atomic<std::size_t> next_loop_{0};
    std::atomic<bool> shut_{false};
    std::atomic<std::int64_t> waiting_{0};  // connections handed off and not yet taken by a worker
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

class CertificateReloader {
  public:
    virtual ~CertificateReloader() = default;
    virtual Status reload(const std::string& cert, const std::string& key) = 0;
};

template <typename Base>
class Guarded final : public Base, public BacklogRaiser, public CertificateReloader, public ConnectionHandler {
  public:
    template <typename... Args>
    Guarded(const ConnectionLimits& limits, ConnectionCounters& counters, LoopRoute loop_route, Args&&... args)
        : Base(std::forward<Args>(args)...), limits_(limits), counters_(counters), loop_route_(std::move(loop_route)) {
        this->new_task_queue = [this] {
            queue_ = new CappedQueue(limits_, counters_, *this);  // owned by listen(), which shuts it down
            return queue_;
        };
        // What "Keep-Alive: timeout=…, max=…" announces is what the loop below enforces.
        this->keep_alive_max_count_ = limits.keep_alive_max_requests;
        this->keep_alive_timeout_sec_ =
            static_cast<time_t>(std::chrono::duration_cast<std::chrono::seconds>(limits.keep_alive_timeout).count());
        this->payload_max_length_ = limits.max_body_bytes;
        // cpp-httplib's default options add SO_REUSEPORT, with which a second server binds the same address and
        // the kernel splits connections between them: SO_REUSEADDR only (restart over TIME_WAIT), so it fails.
        this->set_socket_options([](socket_t sock) {
            int yes = 1;
            ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
        });
    }
    void raise(int backlog) override { ::listen(this->svr_sock_, backlog); }

    // New connections get the new pair (SSL_new copies the context's certificate under the same lock); connections
    // already open keep theirs.
    Status reload(const std::string& cert, const std::string& key) override {
        if constexpr (!kTls) {
            return make_error("plain HTTP has no certificate to reload");
        } else {
            std::lock_guard<std::mutex> lock(ctx_mutex_);
            SSL_CTX* ctx = this->ssl_context();
            if (SSL_CTX_use_certificate_chain_file(ctx, cert.c_str()) != 1 ||
                SSL_CTX_use_PrivateKey_file(ctx, key.c_str(), SSL_FILETYPE_PEM) != 1 ||
                SSL_CTX_check_private_key(ctx) != 1) {
                ERR_clear_error();
                return make_error("cannot load the certificate " + cert + " with key " + key);
            }
            return Ok{};
        }
    }

  private:
    static constexpr bool kTls = std::is_same_v<Base, httplib::SSLServer>;
    std::mutex ctx_mutex_;  // SSL_new against a certificate reload

    bool process_and_close_socket(socket_t sock) override {
        if (t_reject) {
            if constexpr (!kTls) (void)!::send(sock, kBusy, sizeof(kBusy) - 1, MSG_DONTWAIT | MSG_NOSIGNAL);
            close_socket(sock);
            return false;
        }
        int flags = ::fcntl(sock, F_GETFL, 0);
        if (flags >= 0) ::fcntl(sock, F_SETFL, flags | O_NONBLOCK);
        park(new Connection(sock, limits_, Clock::now()));  // on the accepting thread: never waits
        return true;
    }

    // Serves c's requests on this worker while they come back to back; parks it when it waits for the next one.
    void serve(Connection* c) override {
        if (c->stream.output_pending()) {  // a loop's response that could not leave without waiting
            bool sent = c->stream.flush();
            if (c->stream.missed_deadline()) counters_.deadline_closed++;
            if (!sent || c->close_after_flush) return close(c);
        }
        if constexpr (kTls) {
            if (!c->secured) {
                // Until the handshake completes, every wait for the client's next flight is parked, not on a
                // worker: a worker only runs the handshake's computations.
                if (!c->ssl && !readable_now(c->fd)) {
                    c->deadline = c->start + limits_.read_timeout;
                    return queue_->park(c);
                }
                switch (handshake(c)) {
                    case Handshake::done:
                        c->secured = true;
                        break;
                    case Handshake::waiting:
                        c->deadline = c->start + limits_.read_timeout;
                        return queue_->park(c);
                    case Handshake::failed:
                        return close(c);
                }
            }
        }
        while (c->left > 0 && listening()) {
            if (!c->stream.buffered() && !readable_soon(c->fd, c->awaiting_first)) return park(c);
            if (serve_one(c) != Next::request) break;  // (Next::flush only on a loop: a worker's send waits)
        }
        close(c);
    }

    // On c's loop thread, bytes arrived: answers requests here while each is whole in the buffer, has no body and
    // a handler the LoopRoute says never blocks; anything else goes to a worker. Never waits for the client.
    void ready(Connection* c) override {
        if (!loop_route_ || !c->secured_or_plain(kTls)) return queue_->hand_off(c);
        for (int turn = 0; turn < kLoopTurns; ++turn) {
            if (c->left == 0 || !listening()) return close(c);
            switch (c->stream.take_available()) {
                case DeadlineStream::Arrival::closed:
                    return close(c);
                case DeadlineStream::Arrival::none:
                    if (turn > 0) return park(c);
                    c->stream.release_buffer();  // woken without a byte to read (a partial TLS record): same deadline
                    return queue_->park(c);
                case DeadlineStream::Arrival::data:
                    break;
            }
            auto head = c->stream.complete_head();
            if (!head || !loop_may_answer(*head)) return queue_->hand_off(c);
            c->stream.set_nonblocking(true);
            Next next = serve_one(c);
            c->stream.set_nonblocking(false);
            counters_.served_on_loop++;
            if (next == Next::flush) return queue_->hand_off(c);
            if (next == Next::close) return close(c);
        }
        if (c->stream.buffered()) return queue_->hand_off(c);  // more to answer: not this loop's turn
        park(c);
    }

    void close(Connection* c) override {
        if (c->ssl) {
            SSL_shutdown(c->ssl);  // best effort close_notify; never waits (non-blocking socket)
            ERR_clear_error();
            SSL_free(c->ssl);
        }
        close_socket(c->fd);
        delete c;
        counters_.open--;
    }

    static void close_socket(int sock) {
        ::shutdown(sock, SHUT_WR);
        char drain[4096];  // unread request bytes would turn close() into a reset that can discard the 503
        while (::recv(sock, drain, sizeof(drain), MSG_DONTWAIT) > 0) {
        }
        ::close(sock);
    }

    enum class Next { request, flush, close };

    // Reads, answers and sends one request (the first byte is buffered or readable). request: the connection may
    // carry the next; flush: a non-blocking send stopped with the response partly sent (c->close_after_flush
    // says what follows it); close: it ends.
    Next serve_one(Connection* c) {
        bool first = c->awaiting_first;
        c->awaiting_first = false;
        // The first request (and the TLS handshake) must be read within read_timeout of the connection being
        // taken up, a later one within read_timeout of its first byte.
        c->stream.next_request(first ? c->start + limits_.read_timeout : Clock::now() + limits_.read_timeout);
        bool closed = false;
        bool ok = this->process_request(c->stream, c->left == 1, closed,
                                        [c](httplib::Request& req) { c->stream.expect_body(req.headers); });
        --c->left;
        if (c->stream.missed_deadline()) {  // cpp-httplib may have answered 400; either way the connection ends
            counters_.deadline_closed++;
            return Next::close;
        }
        // A refused head (answered 400 by cpp-httplib, its rest unread), an unread or cut body, or a response that
        // says close: nothing more is parsed.
        bool reusable = ok && !closed && !c->stream.head_too_large() && c->stream.reusable() && c->left > 0;
        if (!c->stream.flush()) {
            if (!c->stream.would_block()) return Next::close;
            c->close_after_flush = !reusable;
            return Next::flush;
        }
        return reusable ? Next::request : Next::close;
    }

    // Parks c until its next request: the first must start within read_timeout of the connection, later ones
    // within the keep-alive timeout of the previous response.
    void park(Connection* c) {
        c->deadline = c->awaiting_first ? c->start + limits_.read_timeout : Clock::now() + limits_.keep_alive_timeout;
        c->stream.release_buffer();
        queue_->park(c);
    }

    // Readable within a short grace (a keep-alive client's next request is usually one round trip away) while no
    // connection waits for a worker; at once otherwise. Saves a park, a loop wake-up and a hand-off for clients
    // whose requests a loop does not answer (reports).
    bool readable_soon(int sock, bool first) const {
        pollfd p{sock, POLLIN, 0};
        return ::poll(&p, 1, !first && queue_->workers_idle() ? 2 : 0) > 0;
    }

    // The head (request line and header lines) asks for nothing a loop would wait for: no body, no interim answer.
    bool loop_may_answer(std::string_view head) const {
        auto line_end = head.find("\r\n");
        std::string_view line = head.substr(0, line_end);
        auto sp1 = line.find(' ');
        if (sp1 == std::string_view::npos) return false;
        auto sp2 = line.find(' ', sp1 + 1);
        if (sp2 == std::string_view::npos) return false;
        for (std::size_t pos = line_end + 2; pos < head.size();) {
            auto next = head.find("\r\n", pos);
            std::string_view field = head.substr(pos, next - pos);
            auto name = trim(field.substr(0, field.find(':')));
            if (iequals(name, "Content-Length") || iequals(name, "Transfer-Encoding") || iequals(name, "Expect"))
                return false;
            pos = next + 2;
        }
        return loop_route_(line.substr(0, sp1), line.substr(sp1 + 1, sp2 - sp1 - 1));
    }

    static bool readable_now(int sock) {
        pollfd p{sock, POLLIN, 0};
        return ::poll(&p, 1, 0) > 0;
    }

    enum class Handshake { done, waiting, failed };

    // Advances the TLS handshake as far as the bytes already received allow; it must complete within read_timeout
    // of the connection (it counts as reading the first request). waiting: the client's next flight is awaited.
    Handshake handshake(Connection* c) {
        if (!c->ssl) {
            {
                std::lock_guard<std::mutex> lock(ctx_mutex_);
                c->ssl = SSL_new(this->ssl_context());
            }
            if (!c->ssl) return Handshake::failed;
            SSL_set_fd(c->ssl, c->fd);
            c->stream.set_ssl(c->ssl);
        }
        auto deadline = c->start + limits_.read_timeout;
        while (true) {
            int r = SSL_accept(c->ssl);
            if (r == 1) return Handshake::done;
            int err = SSL_get_error(c->ssl, r);
            if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
                if (Clock::now() < deadline) {
                    if (err == SSL_ERROR_WANT_READ) return Handshake::waiting;
                    if (wait_for(c->fd, POLLOUT, deadline)) continue;
                }
                counters_.deadline_closed++;
            }
            ERR_clear_error();
            return Handshake::failed;
        }
    }

    // False once stop() has closed the listening socket (is_running() stays true until the workers are joined).
    bool listening() const { return this->svr_sock_ != INVALID_SOCKET; }

    static constexpr int kLoopTurns = 16;  // requests a loop answers on one connection before the others' turn

    ConnectionLimits limits_;
    ConnectionCounters& counters_;
    LoopRoute loop_route_;
    CappedQueue* queue_ = nullptr;  // the running listen()'s
};

}  // namespace

std::unique_ptr<httplib::Server> make_guarded_server(const ConnectionLimits& limits, ConnectionCounters& counters,
                                                     LoopRoute loop_route) {
    return std::make_unique<Guarded<httplib::Server>>(limits, counters, std::move(loop_route));
}

std::unique_ptr<httplib::SSLServer> make_guarded_ssl_server(const ConnectionLimits& limits,
                                                            ConnectionCounters& counters, const std::string& cert,
                                                            const std::string& key, LoopRoute loop_route) {
    auto server = std::make_unique<Guarded<httplib::SSLServer>>(limits, counters, std::move(loop_route), cert.c_str(),
                                                                key.c_str());
    // Read whole socket buffers, not a record header and then its body: half the reads (buffered() asks
    // SSL_has_pending, which sees bytes read ahead).
    if (server->is_valid()) SSL_CTX_set_read_ahead(server->ssl_context(), 1);
    return server;
}

bool request_body_too_large() {
    return t_body_too_large;
}

Status reload_certificate(httplib::Server& server, const std::string& cert, const std::string& key) {
    if (auto* r = dynamic_cast<CertificateReloader*>(&server)) return r->reload(cert, key);
    return make_error("not a guarded server");
}

void raise_backlog(httplib::Server& server, int backlog) {
    if (auto* r = dynamic_cast<BacklogRaiser*>(&server)) r->raise(backlog);
}

}  // namespace nodeform::controller
