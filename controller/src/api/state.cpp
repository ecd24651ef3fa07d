#include "nodeform/controller/api/state.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "nodeform/atomic_file.hpp"
#include "nodeform/tls.hpp"

namespace nodeform::controller {

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
        tls::PkiOptions opts;
        opts.site_name = site_name.empty() ? "nodeform" : site_name;
        opts.hosts = config.tls_hosts;
        if (config.listen_host != "0.0.0.0" && config.listen_host != "::") opts.hosts.push_back(config.listen_host);
        char host[256] = {};
        if (::gethostname(host, sizeof(host) - 1) == 0 && host[0] != '\0') opts.hosts.push_back(host);
        auto pki = tls::generate_pki(opts);
        if (!pki) return pki.error();
        if (auto st = tls::write_pki(dir, *pki); !st) return st.error();
        out.generated_tls = true;
    }
    config.tls_cert = paths.server_cert;
    config.tls_key = paths.server_key;
    auto fp = tls::certificate_file_fingerprint(paths.ca_cert);
    if (fp) out.ca_fingerprint = *fp;
    return out;
}

}  // namespace nodeform::controller
