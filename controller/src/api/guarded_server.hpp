#pragma once
// cpp-httplib 0.11.4 servers whose connections run through the controller's own loops, so that limits hold per
// request instead of per recv(): a request's line, headers and body must all arrive within read_timeout of its
// first byte (a client dribbling bytes cannot hold a worker longer), a new connection must start its first
// request within read_timeout, a response must be written within write_timeout, an idle keep-alive connection
// closes after keep_alive_timeout, and beyond max_connections (open: in service, waiting for a worker, or parked)
// a new connection is answered 503 at once over HTTP (closed over HTTPS) without taking a worker. A connection
// waiting for a request (before its first byte or TLS handshake, or idle between requests) holds no worker: it
// is parked on one of event_loops epoll threads. When bytes arrive, the loop answers the request itself if its whole
// head is already received, it has no body, and the server's LoopRoute says its handler never blocks (nginx's way:
// no thread hand-off per request); otherwise, and whenever the response cannot leave without waiting, the
// connection goes to a worker. A loop never waits for a client. The request
// line and headers together are capped at max_head_bytes (cpp-httplib caps each line at 8 KiB, not their number). The
// body is framed by the loop, not trusted to cpp-httplib: Content-Length or Transfer-Encoding: chunked (both, or any
// other coding, is refused), at most max_body_bytes decoded on every framing (a chunked body is cut at the first chunk
// that would pass it, so memory never grows beyond the limit), none at all without either header. A connection closes
// after any response that says Connection: close, after a request whose head was refused, and after a request whose
// body was not read to its end: bytes the server did not read are never parsed as a request. The listening socket is
// bound without SO_REUSEPORT, so a second server on the same address fails to bind.
#include <httplib.h>

#include "nodeform/result.hpp"

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace nodeform::controller {

struct ConnectionLimits {
    std::chrono::milliseconds read_timeout{5000};
    std::chrono::milliseconds write_timeout{5000};
    std::chrono::milliseconds keep_alive_timeout{5000};
    std::size_t keep_alive_max_requests = 1000;
    std::size_t max_head_bytes = 64 * 1024;    // request line + headers; beyond → 400 and close
    std::size_t max_body_bytes = 1024 * 1024;  // decoded request body on any framing; beyond → 413 and close
    std::size_t workers = 32;                  // requests handled at once
    std::size_t max_connections = 8192;        // open connections, parked ones included; ≥ workers
    std::size_t event_loops = 0;               // epoll threads for parked connections; 0: one per CPU (at most 16)
};

// True when a request with this method and target (as sent, not decoded) has a handler that never blocks: no
// store, file or network I/O, no lock held across I/O. A loop thread then answers it. Called on a loop thread.
using LoopRoute = std::function<bool(std::string_view method, std::string_view target)>;

// Shared by the server and /metrics.
struct ConnectionCounters {
    std::atomic<std::int64_t> open{0};              // in service, waiting for a worker, or parked
    std::atomic<std::uint64_t> rejected{0};         // refused beyond max_connections
    std::atomic<std::uint64_t> deadline_closed{0};  // cut because a request missed its read/write deadline
    std::atomic<std::uint64_t> served_on_loop{0};   // requests an event loop answered without a worker
};

// Plain HTTP. counters must outlive the server.
std::unique_ptr<httplib::Server> make_guarded_server(const ConnectionLimits& limits, ConnectionCounters& counters,
                                                     LoopRoute loop_route = {});
// HTTPS with the certificate chain and key files (check is_valid()).
std::unique_ptr<httplib::SSLServer> make_guarded_ssl_server(const ConnectionLimits& limits,
                                                            ConnectionCounters& counters, const std::string& cert,
                                                            const std::string& key, LoopRoute loop_route = {});
// True on a worker while the request it is serving had its body cut at max_body_bytes (the error handler's 413).
bool request_body_too_large();
// HTTPS: new connections use this certificate chain and key from now on (a renewal without a restart).
Status reload_certificate(httplib::Server& server, const std::string& cert, const std::string& key);
// listen(2) again on the bound socket with a larger backlog (cpp-httplib listens with 5). Call after bind.
void raise_backlog(httplib::Server& server, int backlog);

}  // namespace nodeform::controller
