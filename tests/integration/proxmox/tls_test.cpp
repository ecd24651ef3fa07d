// The Proxmox client over https with the endpoint's certificate pinned, as the CLI wires it.
#include <gtest/gtest.h>

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

    Result<std::unique_ptr<pv::Provider>> provider(const std::string& pin) {
        HttpClientOptions http;
        http.base_url = pve->base_url();
        http.tls.pin_sha256 = pin;
        auto t = make_http_transport(http);
        if (!t) return t.error();
        pv::ProxmoxOptions o;
        o.token_id = pve->options().token_id;
        o.token_secret = pve->options().token_secret;
        o.poll_min = std::chrono::milliseconds(5);
        o.max_attempts = 2;
        o.retry_backoff = std::chrono::milliseconds(5);
        return pv::make_proxmox_provider(std::move(*t), o);
    }
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

TEST(ProxmoxTls, WholeLifecycleOverHttps) {
    TlsStandin s;
    TempDir dir;
    Harness h(*s.pve, dir.path() + "/nodeform.db");
    // Swap in the https+pin providers the CLI uses.
    lc::LifecycleDeps deps;
    deps.store = h.store.get();
    deps.issuer = &h.issuer;
    deps.reports = &h.reports;
    deps.clock = &h.clock;
    deps.logger = &h.logger;
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
