// make_http_transport and the TLS helpers against a real httplib::SSLServer on 127.0.0.1.
#include <gtest/gtest.h>
#include <httplib.h>
#include <sys/stat.h>

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
        server_->Post("/echo", [](const httplib::Request& req, httplib::Response& res) {
            res.status = 201;
            res.set_content(
                req.body + "|" + req.get_header_value("Content-Type") + "|" + req.get_header_value("Authorization"),
                "text/plain");
        });
        port_ = server_->bind_to_any_port("127.0.0.1");
        thread_ = std::thread([this] { server_->listen_after_bind(); });
        while (port_ > 0 && !server_->is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
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

}  // namespace
}  // namespace nodeform
