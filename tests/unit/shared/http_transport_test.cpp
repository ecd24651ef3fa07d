// make_http_transport and the TLS helpers against a real httplib::SSLServer on 127.0.0.1.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <thread>

#include "nodeform/atomic_file.hpp"
#include "nodeform/http.hpp"
#include "nodeform/tls.hpp"
#include "test_paths.hpp"

namespace nodeform {
namespace {

// One HTTPS (or HTTP) server on an ephemeral loopback port, answering GET /hello.
class LoopbackServer {
  public:
    LoopbackServer(const std::string& cert, const std::string& key) {
        server_ = cert.empty() ? std::make_unique<httplib::Server>()
                               : std::make_unique<httplib::SSLServer>(cert.c_str(), key.c_str());
        server_->Get("/hello", [](const httplib::Request&, httplib::Response& res) {
            res.set_header("X-Test-Header", "yes");
            res.set_content("hi", "text/plain");
        });
        server_->Get("/port", [](const httplib::Request& req, httplib::Response& res) {
            res.set_content(std::to_string(req.remote_port), "text/plain");  // the client's end of the connection
        });
        server_->Post("/echo", [](const httplib::Request& req, httplib::Response& res) {
            res.status = 201;
            res.set_content(
                req.body + "|" + req.get_header_value("Content-Type") + "|" + req.get_header_value("Authorization"),
                "text/plain");
        });
        port_ = server_->bind_to_any_port("127.0.0.1");
        thread_ = std::thread([this] { server_->listen_after_bind(); });
        while (port_ > 0 && !server_->is_running())
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    ~LoopbackServer() {
        server_->stop();
        thread_.join();
    }
    bool valid() const { return server_->is_valid() && port_ > 0; }
    std::string url(const std::string& scheme = "https") const {
        return scheme + "://127.0.0.1:" + std::to_string(port_);
    }

  private:
    std::unique_ptr<httplib::Server> server_;
    int port_ = 0;
    std::thread thread_;
};

// A raw HTTP/1.1 server on 127.0.0.1 that counts the connections it accepts; each connection follows `mode`.
class RawServer {
  public:
    enum class Mode {
        KeepAlive,           // answers every request on the connection
        CloseAfterResponse,  // answers one request (without "Connection: close"), then closes: an idle close
        Silent,              // accepts and never answers
        Oversize,            // announces a 100 MB body
    };
    explicit RawServer(Mode mode) : mode_(mode) {
        fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof addr;
        if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), len) == 0 && ::listen(fd_, 8) == 0 &&
            ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) == 0)
            port_ = ntohs(addr.sin_port);
        thread_ = std::thread([this] { serve(); });
    }
    ~RawServer() {
        stop_ = true;
        thread_.join();
        ::close(fd_);
    }
    std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
    int accepted() const { return accepted_; }
    int closed() const { return closed_; }
    // Waits (bounded) until the server has closed n connections.
    bool wait_closed(int n) const {
        for (int i = 0; i < 500 && closed_ < n; ++i)
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        return closed_ >= n;
    }

  private:
    bool readable(int fd) const {
        while (!stop_) {
            pollfd p{fd, POLLIN, 0};
            if (::poll(&p, 1, 20) > 0) return true;
        }
        return false;
    }
    // Reads one request head (the client sends GETs without bodies); false on EOF or stop.
    bool read_request(int fd, std::string& buffer) const {
        while (buffer.find("\r\n\r\n") == std::string::npos) {
            if (!readable(fd)) return false;
            char chunk[4096];
            ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
            if (n <= 0) return false;
            buffer.append(chunk, static_cast<std::size_t>(n));
        }
        buffer.erase(0, buffer.find("\r\n\r\n") + 4);
        return true;
    }
    void reply(int fd, const std::string& text) const { (void)!::send(fd, text.data(), text.size(), MSG_NOSIGNAL); }
    void serve() {
        while (!stop_) {
            if (!readable(fd_)) break;
            int conn = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
            if (conn < 0) continue;
            ++accepted_;
            std::string buffer;
            const std::string ok = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
            switch (mode_) {
                case Mode::KeepAlive:
                    while (read_request(conn, buffer))
                        reply(conn, ok);
                    break;
                case Mode::CloseAfterResponse:
                    if (read_request(conn, buffer)) reply(conn, ok);
                    break;
                case Mode::Silent:
                    while (readable(conn)) {
                        char chunk[4096];
                        if (::recv(conn, chunk, sizeof chunk, 0) <= 0) break;
                    }
                    break;
                case Mode::Oversize:
                    if (read_request(conn, buffer))
                        reply(conn, "HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\nxxxx");
                    while (readable(conn)) {
                        char chunk[4096];
                        if (::recv(conn, chunk, sizeof chunk, 0) <= 0) break;
                    }
                    break;
            }
            ::close(conn);
            ++closed_;
        }
    }

    Mode mode_;
    int fd_ = -1;
    int port_ = 0;
    std::atomic<bool> stop_{false};
    std::atomic<int> accepted_{0};
    std::atomic<int> closed_{0};
    std::thread thread_;
};

struct Fixture {
    test::TempDir dir;
    tls::Pki pki;
    tls::PkiPaths paths;
    Fixture(const std::string& sub = "tls") {
        tls::PkiOptions opts;
        opts.site_name = "lab";
        auto generated = tls::generate_pki(opts);
        EXPECT_TRUE(generated.ok()) << (generated.ok() ? "" : generated.message());
        pki = *generated;
        EXPECT_TRUE(tls::write_pki(dir.path() + "/" + sub, pki).ok());
        paths = tls::pki_paths(dir.path() + "/" + sub);
    }
};

Result<HttpResponse> get(const std::string& url, const TlsOptions& tls_options, const std::string& path = "/hello") {
    HttpClientOptions opts;
    opts.base_url = url;
    opts.tls = tls_options;
    opts.connect_timeout = std::chrono::seconds(5);
    auto transport = make_http_transport(opts);
    if (!transport) return transport.error();
    HttpRequest req;
    req.path = path;
    return (*transport)->send(req);
}

TEST(Tls, GeneratesPkiWithPrivateFilesAndMatchingFingerprint) {
    Fixture f;
    EXPECT_EQ(f.pki.ca_fingerprint.size(), 64u);
    for (const auto& path : {f.paths.ca_cert, f.paths.ca_key, f.paths.server_cert, f.paths.server_key}) {
        struct stat st {};
        ASSERT_EQ(::stat(path.c_str(), &st), 0) << path;
        EXPECT_EQ(st.st_mode & 0777, 0600u) << path;
    }
    auto fp = tls::certificate_file_fingerprint(f.paths.ca_cert);
    ASSERT_TRUE(fp.ok()) << fp.message();
    EXPECT_EQ(*fp, f.pki.ca_fingerprint);
    auto leaf_fp = tls::certificate_file_fingerprint(f.paths.server_cert);
    ASSERT_TRUE(leaf_fp.ok());
    EXPECT_NE(*leaf_fp, f.pki.ca_fingerprint);
    EXPECT_EQ(f.pki.server_key_pem.rfind("-----BEGIN PRIVATE KEY-----", 0), 0u);
}

TEST(Tls, NormalizesFingerprints) {
    std::string hex(64, 'a');
    EXPECT_EQ(tls::normalize_fingerprint(tls::colon_fingerprint(hex)), hex);
    EXPECT_EQ(tls::normalize_fingerprint("sha256:" + std::string(64, 'F')), std::string(64, 'f'));
    EXPECT_EQ(tls::normalize_fingerprint(std::string(63, 'a')), "");
    EXPECT_EQ(tls::normalize_fingerprint(std::string(64, 'g')), "");
    EXPECT_EQ(tls::colon_fingerprint("abcd"), "AB:CD");
}

TEST(Tls, RefusesHostsThatAreNotNames) {
    tls::PkiOptions opts;
    opts.hosts = {"evil,DNS:example.com"};
    EXPECT_FALSE(tls::generate_pki(opts).ok());
}

TEST(HttpTransport, PinOfTheCaMatches) {
    Fixture f;
    LoopbackServer server(f.paths.server_cert, f.paths.server_key);
    ASSERT_TRUE(server.valid());
    auto res = get(server.url(), {"", f.pki.ca_fingerprint});
    ASSERT_TRUE(res.ok()) << res.message();
    EXPECT_EQ(res->status, 200);
    EXPECT_EQ(res->body, "hi");
    EXPECT_EQ(res->headers["x-test-header"], "yes");
}

TEST(HttpTransport, PinAcceptsColonsAndUpperCaseAndTheLeaf) {
    Fixture f;
    LoopbackServer server(f.paths.server_cert, f.paths.server_key);
    auto res = get(server.url(), {"", tls::colon_fingerprint(f.pki.ca_fingerprint)});
    ASSERT_TRUE(res.ok()) << res.message();
    auto leaf = tls::certificate_file_fingerprint(f.paths.server_cert);
    ASSERT_TRUE(leaf.ok());
    auto res2 = get(server.url(), {"", *leaf});
    ASSERT_TRUE(res2.ok()) << res2.message();
    EXPECT_EQ(res2->status, 200);
}

// CA rotation: two pins (old and new CA) accept a server under either; neither still refuses; three are too many.
TEST(HttpTransport, TwoPinsAcceptEitherCaDuringARotation) {
    Fixture old_ca;
    Fixture new_ca;
    Fixture stranger;
    const std::string both = old_ca.pki.ca_fingerprint + "," + new_ca.pki.ca_fingerprint;
    for (Fixture* f : {&old_ca, &new_ca}) {
        LoopbackServer server(f->paths.server_cert, f->paths.server_key);
        auto res = get(server.url(), {"", both});
        ASSERT_TRUE(res.ok()) << res.message();
        EXPECT_EQ(res->status, 200);
    }
    LoopbackServer server(stranger.paths.server_cert, stranger.paths.server_key);
    auto refused = get(server.url(), {"", both});
    ASSERT_FALSE(refused.ok());
    EXPECT_NE(refused.message().find("pin mismatch"), std::string::npos) << refused.message();
    HttpClientOptions three;
    three.base_url = server.url();
    three.tls.pin_sha256 = both + "," + stranger.pki.ca_fingerprint;
    EXPECT_FALSE(make_http_transport(three).ok());
}

TEST(HttpTransport, PinMismatchIsRefusedAndNamed) {
    Fixture f;
    Fixture other;
    LoopbackServer server(f.paths.server_cert, f.paths.server_key);
    auto res = get(server.url(), {"", other.pki.ca_fingerprint});
    ASSERT_FALSE(res.ok());
    EXPECT_NE(res.message().find("pin mismatch"), std::string::npos) << res.message();
    EXPECT_NE(res.message().find(other.pki.ca_fingerprint), std::string::npos) << res.message();
    EXPECT_NE(res.message().find(f.pki.ca_fingerprint), std::string::npos) << res.message();
}

TEST(HttpTransport, CopiedCaCertificateInChainDoesNotSatisfyPin) {
    // An impostor presents its own leaf followed by the real (public) CA certificate.
    Fixture real;
    Fixture impostor;
    auto impostor_leaf_end = impostor.pki.server_cert_pem.find("-----END CERTIFICATE-----");
    std::string impostor_leaf = impostor.pki.server_cert_pem.substr(0, impostor_leaf_end + 26);
    std::string forged_chain = impostor.dir.path() + "/forged.pem";
    ASSERT_TRUE(write_file_atomic(forged_chain, impostor_leaf + real.pki.ca_cert_pem).ok());
    LoopbackServer server(forged_chain, impostor.paths.server_key);
    ASSERT_TRUE(server.valid());
    auto res = get(server.url(), {"", real.pki.ca_fingerprint});
    ASSERT_FALSE(res.ok());
    EXPECT_NE(res.message().find("does not chain to the pinned"), std::string::npos) << res.message();
}

TEST(HttpTransport, CaFileVerifiesChainAndHost) {
    Fixture f;
    Fixture other;
    LoopbackServer server(f.paths.server_cert, f.paths.server_key);
    auto ok = get(server.url(), {f.paths.ca_cert, ""});
    ASSERT_TRUE(ok.ok()) << ok.message();
    EXPECT_EQ(ok->status, 200);
    auto bad = get(server.url(), {other.paths.ca_cert, ""});
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.message().find("not trusted by CA file"), std::string::npos) << bad.message();
    // CA and pin together: both must hold.
    auto both_bad = get(server.url(), {f.paths.ca_cert, other.pki.ca_fingerprint});
    EXPECT_FALSE(both_bad.ok());
    auto both_ok = get(server.url(), {f.paths.ca_cert, f.pki.ca_fingerprint});
    EXPECT_TRUE(both_ok.ok()) << both_ok.message();
}

TEST(HttpTransport, HttpsWithoutCaOrPinIsRefused) {
    HttpClientOptions opts;
    opts.base_url = "https://127.0.0.1:1";
    auto transport = make_http_transport(opts);
    ASSERT_FALSE(transport.ok());
    EXPECT_NE(transport.message().find("CA file or a SHA-256 certificate pin"), std::string::npos);
    opts.tls.pin_sha256 = "not-a-pin";
    EXPECT_FALSE(make_http_transport(opts).ok());
    opts.tls.pin_sha256.clear();
    opts.tls.ca_file = "/nonexistent/ca.pem";
    EXPECT_FALSE(make_http_transport(opts).ok());
}

TEST(HttpTransport, PlainHttpPostsBodyAndHeaders) {
    LoopbackServer server("", "");
    HttpClientOptions opts;
    opts.base_url = server.url("http");
    auto transport = make_http_transport(opts);
    ASSERT_TRUE(transport.ok()) << transport.message();
    HttpRequest req;
    req.method = "POST";
    req.path = "/echo";
    req.body = "{}";
    req.content_type = "application/json";
    req.headers["Authorization"] = "Bearer x";
    auto res = (*transport)->send(req);
    ASSERT_TRUE(res.ok()) << res.message();
    EXPECT_EQ(res->status, 201);
    EXPECT_EQ(res->body, "{}|application/json|Bearer x");
    auto res404 = (*transport)->send(HttpRequest{"GET", "/missing", {}, "", ""});
    ASSERT_TRUE(res404.ok());
    EXPECT_EQ(res404->status, 404);
}

TEST(HttpTransport, ConnectionRefusedIsAnError) {
    HttpClientOptions opts;
    opts.base_url = "http://127.0.0.1:1";
    auto transport = make_http_transport(opts);
    ASSERT_TRUE(transport.ok());
    auto res = (*transport)->send(HttpRequest{});
    EXPECT_FALSE(res.ok());
}

TEST(HttpTransport, RejectsMalformedBaseUrls) {
    for (const char* url : {"ftp://x", "http://", "http://host:99999", "http://ho st", "https://[::1"}) {
        HttpClientOptions opts;
        opts.base_url = url;
        opts.tls.pin_sha256 = std::string(64, 'a');
        EXPECT_FALSE(make_http_transport(opts).ok()) << url;
    }
}

// A transport to url (https verified by tls when given); nullptr, with a test failure, when it cannot be made.
std::unique_ptr<HttpTransport> transport_to(const std::string& url,
                                            std::chrono::milliseconds read_timeout = std::chrono::seconds(30),
                                            const TlsOptions& tls = {}) {
    HttpClientOptions opts;
    opts.base_url = url;
    opts.read_timeout = read_timeout;
    opts.tls = tls;
    auto transport = make_http_transport(opts);
    EXPECT_TRUE(transport.ok()) << (transport.ok() ? "" : transport.message());
    return transport.ok() ? std::move(*transport) : nullptr;
}

TEST(HttpTransport, ReusesTheKeptAliveConnection) {
    RawServer server(RawServer::Mode::KeepAlive);
    auto transport = transport_to(server.url());
    ASSERT_TRUE(transport);
    for (int i = 0; i < 3; ++i) {
        auto res = transport->send(HttpRequest{"GET", "/x", {}, "", ""});
        ASSERT_TRUE(res.ok()) << res.message();
        EXPECT_EQ(res->body, "ok");
    }
    EXPECT_EQ(server.accepted(), 1);
}

TEST(HttpTransport, ReusesTheKeptAliveTlsConnection) {
    Fixture f;
    LoopbackServer server(f.paths.server_cert, f.paths.server_key);
    ASSERT_TRUE(server.valid());
    auto transport = transport_to(server.url(), std::chrono::seconds(30), {"", f.pki.ca_fingerprint});
    ASSERT_TRUE(transport);
    auto first = transport->send(HttpRequest{"GET", "/port", {}, "", ""});
    ASSERT_TRUE(first.ok()) << first.message();
    auto second = transport->send(HttpRequest{"GET", "/port", {}, "", ""});
    ASSERT_TRUE(second.ok()) << second.message();
    EXPECT_EQ(first->body, second->body);  // the same client port: the same connection
}

TEST(HttpTransport, ReconnectsWhenTheServerClosedTheIdleConnection) {
    RawServer server(RawServer::Mode::CloseAfterResponse);
    auto transport = transport_to(server.url());
    ASSERT_TRUE(transport);
    auto first = transport->send(HttpRequest{"GET", "/x", {}, "", ""});
    ASSERT_TRUE(first.ok()) << first.message();
    ASSERT_TRUE(server.wait_closed(1));
    auto second = transport->send(HttpRequest{"GET", "/x", {}, "", ""});
    ASSERT_TRUE(second.ok()) << second.message();
    EXPECT_EQ(second->body, "ok");
    EXPECT_EQ(server.accepted(), 2);
}

TEST(HttpTransport, ReadDeadlineFiresAgainstASilentServer) {
    RawServer server(RawServer::Mode::Silent);
    auto transport = transport_to(server.url(), std::chrono::milliseconds(300));
    ASSERT_TRUE(transport);
    HttpRequest req{"GET", "/x", {{"Authorization", "Bearer SECRET-TOKEN"}}, "", ""};
    auto res = transport->send(req);
    ASSERT_FALSE(res.ok());
    EXPECT_NE(res.message().find("GET " + server.url() + "/x failed: "), std::string::npos) << res.message();
    EXPECT_NE(res.message().find("timed out"), std::string::npos) << res.message();
    EXPECT_EQ(res.message().find("SECRET"), std::string::npos) << res.message();
    EXPECT_EQ(server.accepted(), 1);  // a request that was sent is not retried
}

TEST(HttpTransport, RefusesAnOversizeResponse) {
    RawServer server(RawServer::Mode::Oversize);
    auto transport = transport_to(server.url());
    ASSERT_TRUE(transport);
    auto res = transport->send(HttpRequest{"GET", "/x", {}, "", ""});
    ASSERT_FALSE(res.ok());
    EXPECT_NE(res.message().find("exceeds 64 MiB"), std::string::npos) << res.message();
}

TEST(HttpTransport, RefusesHeaderInjectionWithoutEchoingTheValue) {
    RawServer server(RawServer::Mode::KeepAlive);
    auto transport = transport_to(server.url());
    ASSERT_TRUE(transport);
    auto res = transport->send(HttpRequest{"GET", "/x", {{"Authorization", "SECRET\r\nX-Evil: 1"}}, "", ""});
    ASSERT_FALSE(res.ok());
    EXPECT_NE(res.message().find("Authorization"), std::string::npos) << res.message();
    EXPECT_EQ(res.message().find("SECRET"), std::string::npos) << res.message();
    EXPECT_EQ(server.accepted(), 0);
}

TEST(HttpTransport, SystemTrustRefusesASelfSignedServer) {
    Fixture f;
    LoopbackServer server(f.paths.server_cert, f.paths.server_key);
    ASSERT_TRUE(server.valid());
    TlsOptions system;
    system.system_trust = true;
    auto res = get(server.url(), system);  // system_trust alone is a way to verify: the transport is made
    ASSERT_FALSE(res.ok());
    EXPECT_NE(res.message().find("not trusted by the system CA store"), std::string::npos) << res.message();
    // Together with a matching pin, the system store must still hold.
    system.pin_sha256 = f.pki.ca_fingerprint;
    EXPECT_FALSE(get(server.url(), system).ok());
}

}  // namespace
}  // namespace nodeform
