#include "nodeform/controller/api/state.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "nodeform/atomic_file.hpp"
#include "nodeform/tls.hpp"

namespace nodeform::controller {
namespace {

tls::PkiOptions pki_options(const ControllerConfig& config, const std::string& site_name) {
    tls::PkiOptions opts;
    opts.site_name = site_name.empty() ? "nodeform" : site_name;
    opts.hosts = config.tls_hosts;
    if (config.listen_host != "0.0.0.0" && config.listen_host != "::") opts.hosts.push_back(config.listen_host);
    char host[256] = {};
    if (::gethostname(host, sizeof(host) - 1) == 0 && host[0] != '\0') opts.hosts.push_back(host);
    return opts;
}

}  // namespace

Result<bool> renew_server_certificate_if_due(const ControllerConfig& config, const std::string& site_name) {
    if (config.plain_http || config.state.empty()) return false;
    const auto paths = tls::pki_paths(config.state + "/tls");
    if (config.tls_cert != paths.server_cert || config.tls_key != paths.server_key) return false;  // operator's own
    auto cert = read_file(paths.server_cert, 1024 * 1024);
    auto key = read_file(paths.server_key, 1024 * 1024);
    if (cert && key && tls::certificate_matches_key(*cert, *key)) {
        auto left = tls::certificate_lifetime_left(*cert);
        if (left && *left > config.cert_renew_before) return false;
    }  // else unreadable, or a crash between writing the key and the certificate: issue a matching pair
    auto ca_cert = read_file(paths.ca_cert, 1024 * 1024);
    if (!ca_cert) return make_error("cannot renew the server certificate: " + ca_cert.message());
    auto ca_key = read_file(paths.ca_key, 1024 * 1024);
    if (!ca_key) return make_error("cannot renew the server certificate: " + ca_key.message());
    auto pki = tls::issue_server_certificate(*ca_cert, *ca_key, pki_options(config, site_name));
    if (!pki) return make_error("cannot renew the server certificate: " + pki.message());
    WriteOptions opts;
    opts.mode = 0600;
    // Key first; a crash before the certificate is written leaves a mismatched pair that the next start renews.
    if (auto st = write_file_atomic(paths.server_key, pki->server_key_pem, opts); !st) return st.error();
    if (auto st = write_file_atomic(paths.server_cert, pki->server_cert_pem, opts); !st) return st.error();
    return true;
}

Result<PreparedState> prepare_state(ControllerConfig& config, const std::string& site_name, Random& random) {
    namespace fs = std::filesystem;
    PreparedState out;
    if (config.state.empty()) return make_error("no state directory: pass --state DIR (or state: in the config file)");
    std::error_code ec;
    fs::create_directories(config.state, ec);
    if (ec) return make_error("cannot create the state directory " + config.state + ": " + ec.message());
    ::chmod(config.state.c_str(), 0700);
    std::string token_path = config.state + "/operator-token";
    if (fs::exists(token_path)) {
        auto text = read_file(token_path, 4096);
        if (!text) return text.error();
        std::string t = *text;
        while (!t.empty() && (t.back() == '\n' || t.back() == ' '))
            t.pop_back();
        if (t.size() < 16)
            return make_error(token_path + " is too short to be an operator token; delete it to regenerate");
        out.operator_token = t;
    } else {
        out.operator_token = generate_secret(random, "nfo_");
        WriteOptions opts;
        opts.mode = 0600;
        if (auto st = write_file_atomic(token_path, out.operator_token + "\n", opts); !st) return st.error();
        out.generated_operator_token = true;
    }
    if (config.plain_http) return out;
    if (!config.tls_cert.empty() || !config.tls_key.empty()) {
        if (config.tls_cert.empty() || config.tls_key.empty())
            return make_error("--tls-cert and --tls-key go together");
        for (const auto& f : {config.tls_cert, config.tls_key})
            if (!fs::exists(f)) return make_error("TLS file " + f + " does not exist");
        return out;
    }
    std::string dir = config.state + "/tls";
    auto paths = tls::pki_paths(dir);
    if (!fs::exists(paths.server_cert) || !fs::exists(paths.server_key)) {
        auto pki = tls::generate_pki(pki_options(config, site_name));
        if (!pki) return pki.error();
        if (auto st = tls::write_pki(dir, *pki); !st) return st.error();
        out.generated_tls = true;
    }
    config.tls_cert = paths.server_cert;
    config.tls_key = paths.server_key;
    auto renewed = renew_server_certificate_if_due(config, site_name);
    if (!renewed) return renewed.error();
    out.renewed_tls = *renewed;
    auto fp = tls::certificate_file_fingerprint(paths.ca_cert);
    if (fp) out.ca_fingerprint = *fp;
    return out;
}

}  // namespace nodeform::controller
