// The real HttpTransport: cpp-httplib over OpenSSL. https:// always verifies the server, against a CA file
// (chain + host name) and/or a SHA-256 pin of a certificate in the presented chain; there is no insecure mode.
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include <httplib.h>

#include <algorithm>
#include <cctype>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "nodeform/http.hpp"
#include "nodeform/tls.hpp"

namespace nodeform {
namespace {

struct ParsedUrl {
    bool https = false;
    std::string host;  // without brackets
    int port = 0;
    std::string prefix;  // path prefix without trailing slash ("" or "/api")
};

Result<ParsedUrl> parse_base_url(const std::string& url) {
    ParsedUrl out;
    std::string rest;
    if (url.rfind("https://", 0) == 0) {
        out.https = true;
        rest = url.substr(8);
    } else if (url.rfind("http://", 0) == 0) {
        rest = url.substr(7);
    } else {
        return make_error("base URL '" + url + "' must start with https:// or http://");
    }
    std::string authority = rest;
    auto slash = rest.find('/');
    if (slash != std::string::npos) {
        authority = rest.substr(0, slash);
        out.prefix = rest.substr(slash);
        while (!out.prefix.empty() && out.prefix.back() == '/')
            out.prefix.pop_back();
    }
    if (authority.empty()) return make_error("base URL '" + url + "' has no host");
    std::string port_text;
    if (authority.front() == '[') {
        auto close = authority.find(']');
        if (close == std::string::npos) return make_error("base URL '" + url + "': unterminated IPv6 address");
        out.host = authority.substr(1, close - 1);
        std::string after = authority.substr(close + 1);
        if (!after.empty()) {
            if (after.front() != ':') return make_error("base URL '" + url + "': junk after the IPv6 address");
            port_text = after.substr(1);
        }
    } else {
        auto colon = authority.rfind(':');
        if (colon != std::string::npos) {
            out.host = authority.substr(0, colon);
            port_text = authority.substr(colon + 1);
        } else {
            out.host = authority;
        }
    }
    if (out.host.empty()) return make_error("base URL '" + url + "' has no host");
    for (char c : out.host) {
        if (std::isalnum(static_cast<unsigned char>(c)) == 0 && c != '.' && c != '-' && c != ':' && c != '_')
            return make_error("base URL '" + url + "': invalid character in host");
    }
    if (port_text.empty()) {
        out.port = out.https ? 443 : 80;
    } else {
        if (port_text.size() > 5 || !std::all_of(port_text.begin(), port_text.end(),
                                                 [](char c) { return std::isdigit(static_cast<unsigned char>(c)); }))
            return make_error("base URL '" + url + "': invalid port '" + port_text + "'");
        out.port = std::stoi(port_text);
        if (out.port < 1 || out.port > 65535) return make_error("base URL '" + url + "': port out of range");
    }
    return out;
}

bool is_ip_literal(const std::string& host) {
    unsigned char buf[16];
    return inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

std::string openssl_error_text() {
    unsigned long code = ERR_get_error();
    if (code == 0) return "unknown OpenSSL error";
    char buf[256];
    ERR_error_string_n(code, buf, sizeof(buf));
    ERR_clear_error();
    return buf;
}

// What the verify callback needs; lives as long as the client, used under the transport's mutex.
struct VerifyState {
    std::string host;
    std::string ca_file;
    X509_STORE* ca_store = nullptr;  // owned
    std::string pin;                 // normalized lower-case hex, or empty
    std::string failure;             // set by the callback when it refuses the server

    ~VerifyState() {
        if (ca_store != nullptr) X509_STORE_free(ca_store);
    }
};

// Verifies leaf + untrusted chain against store; with host set, the leaf must name it. "" on success.
std::string verify_chain(X509* leaf, STACK_OF(X509) * untrusted, X509_STORE* store, const std::string& host,
                         bool partial_chain) {
    std::unique_ptr<X509_STORE_CTX, decltype(&X509_STORE_CTX_free)> ctx(X509_STORE_CTX_new(), X509_STORE_CTX_free);
    if (!ctx) return "out of memory";
    if (X509_STORE_CTX_init(ctx.get(), store, leaf, untrusted) != 1) return openssl_error_text();
    X509_VERIFY_PARAM* param = X509_STORE_CTX_get0_param(ctx.get());
    X509_VERIFY_PARAM_set_purpose(param, X509_PURPOSE_SSL_SERVER);
    if (partial_chain) X509_VERIFY_PARAM_set_flags(param, X509_V_FLAG_PARTIAL_CHAIN);
    if (!host.empty()) {
        if (is_ip_literal(host)) {
            X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str());
        } else {
            X509_VERIFY_PARAM_set1_host(param, host.c_str(), host.size());
        }
    }
    if (X509_verify_cert(ctx.get()) == 1) return "";
    return X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx.get()));
}

// Replaces OpenSSL's chain verification for the client's SSL_CTX (SSL_CTX_set_cert_verify_callback).
int verify_server(X509_STORE_CTX* store_ctx, void* arg) {
    auto* state = static_cast<VerifyState*>(arg);
    X509* leaf = X509_STORE_CTX_get0_cert(store_ctx);
    STACK_OF(X509)* chain = X509_STORE_CTX_get0_untrusted(store_ctx);
    if (leaf == nullptr) {
        state->failure = "the server presented no certificate";
        X509_STORE_CTX_set_error(store_ctx, X509_V_ERR_UNSPECIFIED);
        return 0;
    }
    if (state->ca_store != nullptr) {
        std::string why = verify_chain(leaf, chain, state->ca_store, state->host, false);
        if (!why.empty()) {
            state->failure = "server certificate for '" + state->host + "' is not trusted by CA file '" +
                             state->ca_file + "': " + why;
            X509_STORE_CTX_set_error(store_ctx, X509_V_ERR_CERT_UNTRUSTED);
            return 0;
        }
    }
    if (!state->pin.empty()) {
        std::vector<X509*> presented{leaf};
        for (int i = 0; chain != nullptr && i < sk_X509_num(chain); ++i)
            presented.push_back(sk_X509_value(chain, i));
        std::vector<std::string> seen;
        for (X509* cert : presented) {
            std::string fp = tls::certificate_fingerprint(cert);
            if (std::find(seen.begin(), seen.end(), fp) == seen.end()) seen.push_back(fp);
            if (fp != state->pin) continue;
            if (cert == leaf || X509_cmp(cert, leaf) == 0) return 1;  // the handshake proved the leaf's key
            // A pinned issuer: the leaf must chain to it (anyone can copy a public CA certificate into a chain).
            std::unique_ptr<X509_STORE, decltype(&X509_STORE_free)> store(X509_STORE_new(), X509_STORE_free);
            if (!store || X509_STORE_add_cert(store.get(), cert) != 1) {
                state->failure = "cannot build a trust store from the pinned certificate: " + openssl_error_text();
                X509_STORE_CTX_set_error(store_ctx, X509_V_ERR_UNSPECIFIED);
                return 0;
            }
            std::string why = verify_chain(leaf, chain, store.get(), "", true);
            if (why.empty()) return 1;
            state->failure =
                "the server's certificate does not chain to the pinned certificate sha256:" + state->pin + ": " + why;
            X509_STORE_CTX_set_error(store_ctx, X509_V_ERR_CERT_UNTRUSTED);
            return 0;
        }
        std::string list;
        for (const auto& fp : seen)
            list += (list.empty() ? "" : ", ") + fp;
        state->failure =
            "certificate pin mismatch: expected SHA-256 " + state->pin + " but the server presented " + list;
        X509_STORE_CTX_set_error(store_ctx, X509_V_ERR_CERT_REJECTED);
        return 0;
    }
    return 1;
}

class HttplibTransport final : public HttpTransport {
  public:
    HttplibTransport(ParsedUrl url, std::unique_ptr<httplib::ClientImpl> client, std::unique_ptr<VerifyState> verify,
                     std::string base_url)
        : url_(std::move(url)),
          client_(std::move(client)),
          verify_(std::move(verify)),
          base_url_(std::move(base_url)) {}

    Result<HttpResponse> send(const HttpRequest& request) override {
        std::lock_guard<std::mutex> lock(mutex_);
        if (verify_) verify_->failure.clear();
        httplib::Request req;
        req.method = request.method;
        req.path = url_.prefix + request.path;
        if (req.path.empty() || req.path.front() != '/') req.path.insert(req.path.begin(), '/');
        for (const auto& [name, value] : request.headers)
            req.headers.emplace(name, value);
        if (!request.content_type.empty()) {
            req.headers.erase("Content-Type");
            req.headers.emplace("Content-Type", request.content_type);
        }
        req.body = request.body;
        auto result = client_->send(req);
        if (!result) {
            std::string what = request.method + " " + base_url_ + req.path + " failed: ";
            if (verify_ && !verify_->failure.empty()) {
                what += verify_->failure;
            } else {
                what += httplib::to_string(result.error());
            }
            return make_error(what);
        }
        HttpResponse out;
        out.status = result->status;
        for (const auto& [name, value] : result->headers) {
            std::string lower = name;
            std::transform(lower.begin(), lower.end(), lower.begin(),
                           [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
            out.headers[lower] = value;
        }
        out.body = std::move(result->body);
        return out;
    }

  private:
    std::mutex mutex_;
    ParsedUrl url_;
    std::unique_ptr<httplib::ClientImpl> client_;
    std::unique_ptr<VerifyState> verify_;
    std::string base_url_;
};

}  // namespace

Result<std::unique_ptr<HttpTransport>> make_http_transport(const HttpClientOptions& options) {
    auto parsed = parse_base_url(options.base_url);
    if (!parsed) return parsed.error();
    ParsedUrl url = *parsed;
    std::unique_ptr<httplib::ClientImpl> client;
    std::unique_ptr<VerifyState> verify;
    if (url.https) {
        verify = std::make_unique<VerifyState>();
        verify->host = url.host;
        if (!options.tls.pin_sha256.empty()) {
            verify->pin = tls::normalize_fingerprint(options.tls.pin_sha256);
            if (verify->pin.empty())
                return make_error("certificate pin '" + options.tls.pin_sha256 +
                                  "' is not a SHA-256 fingerprint (64 hex digits, colons allowed)");
        }
        if (!options.tls.ca_file.empty()) {
            verify->ca_file = options.tls.ca_file;
            verify->ca_store = X509_STORE_new();
            if (verify->ca_store == nullptr) return make_error("out of memory creating a certificate store");
            if (X509_STORE_load_file(verify->ca_store, options.tls.ca_file.c_str()) != 1)
                return make_error("cannot load CA file '" + options.tls.ca_file + "': " + openssl_error_text() +
                                  " (a PEM file with one or more certificates)");
        }
        if (verify->ca_store == nullptr && verify->pin.empty())
            return make_error("refusing https to " + options.base_url +
                              " without a way to verify the server: give a CA file or a SHA-256 certificate pin");
        auto ssl = std::make_unique<httplib::SSLClient>(url.host, url.port);
        if (!ssl->is_valid()) return make_error("cannot create a TLS client context: " + openssl_error_text());
        // httplib's own verification is off; ours runs as the SSL_CTX's certificate verifier and fails the handshake.
        ssl->enable_server_certificate_verification(false);
        SSL_CTX* ctx = ssl->ssl_context();
        SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
        SSL_CTX_set_cert_verify_callback(ctx, verify_server, verify.get());
        client = std::move(ssl);
    } else {
        client = std::make_unique<httplib::ClientImpl>(url.host, url.port);
    }
    client->set_connection_timeout(options.connect_timeout);
    client->set_read_timeout(options.read_timeout);
    client->set_write_timeout(options.read_timeout);
    client->set_keep_alive(true);
    std::string base = options.base_url;
    while (!base.empty() && base.back() == '/')
        base.pop_back();
    return std::unique_ptr<HttpTransport>(
        std::make_unique<HttplibTransport>(std::move(url), std::move(client), std::move(verify), base));
}

}  // namespace nodeform
