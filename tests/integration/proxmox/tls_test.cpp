// The Proxmox client over https with the endpoint's certificate pinned, as the CLI wires it.
#include <gtest/gtest.h>

#include <atomic>

#include "harness.hpp"
#include "nodeform/atomic_file.hpp"
#include "nodeform/http.hpp"
#include "nodeform/tls.hpp"

namespace nodeform::test {
namespace {

struct TlsStandin {
    TempDir dir;
    tls::Pki pki;
    std::unique_ptr<PveStandin> pve;
    std::string leaf_fingerprint;

    TlsStandin() {
        tls::PkiOptions o;
        o.site_name = "pve-standin";
        auto generated = tls::generate_pki(o);
        if (!generated) throw std::runtime_error(generated.message());
        pki = *generated;
        auto fp = tls::pem_fingerprint(pki.server_cert_pem);
        if (!fp) throw std::runtime_error(fp.message());
        leaf_fingerprint = *fp;
        if (!write_file_atomic(dir.path() + "/cert.pem", pki.server_cert_pem)) throw std::runtime_error("cert");
        if (!write_file_atomic(dir.path() + "/key.pem", pki.server_key_pem, {0600, false}))
            throw std::runtime_error("key");
        PveStandinOptions opt = fast_standin();
        opt.tls_cert_file = dir.path() + "/cert.pem";
        opt.tls_key_file = dir.path() + "/key.pem";
        pve = std::make_unique<PveStandin>(opt);
        pve->add_template("pve1", 9000, "debian12-tmpl");
    }

    // sends: counts the transport's send() calls; max_attempts as the CLI's default when 0.
    Result<std::unique_ptr<pv::Provider>> provider(const std::string& pin, std::atomic<int>* sends = nullptr,
                                                   int max_attempts = 2) {
        HttpClientOptions http;
        http.base_url = pve->base_url();
        http.tls.pin_sha256 = pin;
        auto t = make_http_transport(http);
        if (!t) return t.error();
        pv::ProxmoxOptions o;
        o.token_id = pve->options().token_id;
        o.token_secret = pve->options().token_secret;
        o.poll_min = std::chrono::milliseconds(5);
        if (max_attempts > 0) o.max_attempts = max_attempts;
        o.retry_backoff = std::chrono::milliseconds(5);
        if (sends == nullptr) return pv::make_proxmox_provider(std::move(*t), o);
        return pv::make_proxmox_provider(std::make_unique<CountingTransport>(std::move(*t), *sends), o);
    }

    struct CountingTransport final : HttpTransport {
        CountingTransport(std::unique_ptr<HttpTransport> inner, std::atomic<int>& count)
            : inner_(std::move(inner)), count_(count) {}
        Result<HttpResponse> send(const HttpRequest& request) override {
            ++count_;
            return inner_->send(request);
        }
        std::unique_ptr<HttpTransport> inner_;
        std::atomic<int>& count_;
    };
};

TEST(ProxmoxTls, PinnedLeafFingerprintIsAccepted) {
    TlsStandin s;
    ASSERT_EQ(s.pve->base_url().rfind("https://", 0), 0u);
    auto p = s.provider(tls::colon_fingerprint(s.leaf_fingerprint));  // as `pvenode cert info` prints it
    ASSERT_TRUE(p) << p.message();
    auto hosts = (*p)->online_hosts();
    ASSERT_TRUE(hosts.ok()) << hosts.error.message;
    EXPECT_EQ(*hosts.value, std::vector<std::string>{"pve1"});
}

TEST(ProxmoxTls, WrongPinIsRefusedBeforeTheTokenIsSent) {
    TlsStandin s;
    auto p = s.provider(std::string(64, 'b'));
    ASSERT_TRUE(p) << p.message();
    s.pve->reset_request_log();
    auto hosts = (*p)->online_hosts();
    ASSERT_FALSE(hosts.ok());
    EXPECT_NE(hosts.error.message.find("pin"), std::string::npos) << hosts.error.message;
    EXPECT_EQ(hosts.error.message.find(s.pve->options().token_secret), std::string::npos);
    EXPECT_TRUE(s.pve->request_log().empty());  // the handshake failed: no request (and no token) reached it
}

// The transport says which failures are a refused certificate: a wrong pin is; a closed port is not.
TEST(ProxmoxTls, ARefusedCertificateIsADistinctTransportError) {
    TlsStandin s;
    HttpClientOptions http;
    http.base_url = s.pve->base_url();
    http.tls.pin_sha256 = std::string(64, 'b');
    auto wrong = make_http_transport(http);
    ASSERT_TRUE(wrong) << wrong.message();
    auto refused = (*wrong)->send(HttpRequest{"GET", "/api2/json/version", {}, "", ""});
    ASSERT_FALSE(refused);
    EXPECT_TRUE(is_certificate_refused(refused.error())) << refused.message();

    TempDir other;  // an https CA file that did not sign the stand-in's certificate
    auto foreign = tls::generate_pki({});
    ASSERT_TRUE(foreign) << foreign.message();
    ASSERT_TRUE(write_file_atomic(other.path() + "/ca.pem", foreign->ca_cert_pem));
    http.tls.pin_sha256.clear();
    http.tls.ca_file = other.path() + "/ca.pem";
    auto untrusted = make_http_transport(http);
    ASSERT_TRUE(untrusted) << untrusted.message();
    auto not_trusted = (*untrusted)->send(HttpRequest{"GET", "/api2/json/version", {}, "", ""});
    ASSERT_FALSE(not_trusted);
    EXPECT_TRUE(is_certificate_refused(not_trusted.error())) << not_trusted.message();

    http.tls.ca_file.clear();
    http.tls.pin_sha256 = s.leaf_fingerprint;
    http.base_url = "https://127.0.0.1:1";  // nothing listens there
    auto closed = make_http_transport(http);
    ASSERT_TRUE(closed) << closed.message();
    auto unreachable = (*closed)->send(HttpRequest{"GET", "/api2/json/version", {}, "", ""});
    ASSERT_FALSE(unreachable);
    EXPECT_FALSE(is_certificate_refused(unreachable.error())) << unreachable.message();
}

// A wrong pin is final at once: one handshake for the whole plan (no retries, no further requests), and the
// refusal is reported by the first gate that met it, not by every gate.
TEST(ProxmoxTls, AWrongPinIsFinalAtOnceAndReportedOnce) {
    TlsStandin s;
    TempDir dir;
    Harness h(*s.pve, dir.path() + "/nodeform.db");
    std::atomic<int> sends{0};
    lc::LifecycleDeps deps = h.deps();
    deps.providers = [&](const site::ProxmoxEndpoint&) { return s.provider(std::string(64, 'b'), &sends, 0); };
    lc::Lifecycle lifecycle(deps, lc::LifecycleOptions{});
    auto plan = lifecycle.plan(h.site, "web-01");
    ASSERT_TRUE(plan) << plan.message();
    EXPECT_FALSE(plan->ok());
    EXPECT_EQ(sends.load(), 1);
    int reported = 0;
    for (const auto& g : plan->gates) {
        if (g.detail.find("pin mismatch") != std::string::npos) ++reported;
    }
    EXPECT_EQ(reported, 1) << lc::to_json(*plan).dump(2);

    sends = 0;
    auto r = lifecycle.create(h.site, "web-01");
    EXPECT_FALSE(r.ok);
    EXPECT_EQ(sends.load(), 2);  // one handshake per provider: the batch reservation's and the node's run
    std::size_t at = r.message.find("pin mismatch");
    ASSERT_NE(at, std::string::npos) << r.message;
    EXPECT_EQ(r.message.find("pin mismatch", at + 1), std::string::npos) << r.message;
}

TEST(ProxmoxTls, WholeLifecycleOverHttps) {
    TlsStandin s;
    TempDir dir;
    Harness h(*s.pve, dir.path() + "/nodeform.db");
    // Swap in the https+pin providers the CLI uses.
    lc::LifecycleDeps deps = h.deps();
    deps.providers = [&s](const site::ProxmoxEndpoint&) { return s.provider(s.leaf_fingerprint); };
    lc::LifecycleOptions opt;
    opt.ca_fingerprint = std::string(64, 'a');
    opt.wait_poll = std::chrono::milliseconds(10);
    opt.agent_poll = std::chrono::milliseconds(10);
    lc::Lifecycle https_lifecycle(deps, opt);
    auto r = https_lifecycle.create(h.site, "web-01");
    EXPECT_TRUE(r.ok) << r.message;
    EXPECT_EQ(s.pve->vm_status(100), "running");
}

}  // namespace
}  // namespace nodeform::test
