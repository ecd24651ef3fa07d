// The real HttpTransport: Boost.Beast over Boost.Asio (OpenSSL for https), synchronous on a private io_context.
// https:// always verifies the server, against a CA file and/or the system CA store (chain + host name) and/or a
// SHA-256 pin of a certificate in the presented chain; there is no insecure mode.
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>
#include <poll.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include <algorithm>
#include <cctype>
#include <memory>
#include <mutex>
#include <optional>
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

    // The host as it stands in an authority: IPv6 literals in brackets.
    std::string bracketed_host() const { return host.find(':') != std::string::npos ? "[" + host + "]" : host; }
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
    X509_STORE* ca_store = nullptr;      // owned
    X509_STORE* system_store = nullptr;  // the SSL_CTX's default paths (not owned), with system_trust
    std::string pin;                     // normalized lower-case hex ("a,b": either), or empty
    std::vector<std::string> pins;       // pin split at commas
    std::string failure;                 // set by the callback when it refuses the server

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
    if (state->system_store != nullptr) {
        std::string why = verify_chain(leaf, chain, state->system_store, state->host, false);
        if (!why.empty()) {
            state->failure =
                "server certificate for '" + state->host + "' is not trusted by the system CA store: " + why;
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
            if (std::find(state->pins.begin(), state->pins.end(), fp) == state->pins.end()) continue;
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
                "the server's certificate does not chain to the pinned certificate sha256:" + fp + ": " + why;
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

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using boost::system::error_code;
using tcp = asio::ip::tcp;

constexpr std::uint64_t kMaxResponseBody = 64ULL << 20;  // a larger body is refused, not truncated
constexpr std::uint32_t kMaxResponseHeader = 64U << 10;

std::string ms_text(std::chrono::milliseconds d) {
    return std::to_string(d.count()) + " ms";
}

bool is_token(const std::string& text) {
    if (text.empty()) return false;
    return std::all_of(text.begin(), text.end(), [](unsigned char c) {
        return std::isalnum(c) != 0 ||
               std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) != std::string_view::npos;
    });
}

bool is_field_value(const std::string& text) {
    return std::none_of(text.begin(), text.end(), [](char c) { return c == '\r' || c == '\n' || c == '\0'; });
}

bool is_request_target(const std::string& text) {
    return std::none_of(text.begin(), text.end(), [](unsigned char c) { return c <= 0x20 || c == 0x7f; });
}

// One connection (plain or TLS) kept alive between requests; all I/O is async on the transport's io_context,
// run to completion by the caller, because tcp_stream's deadlines apply only to async operations.
class BeastTransport final : public HttpTransport {
  public:
    BeastTransport(ParsedUrl url, const HttpClientOptions& options, std::unique_ptr<asio::ssl::context> ssl,
                   std::unique_ptr<VerifyState> verify, std::string base_url)
        : url_(std::move(url)),
          connect_timeout_(options.connect_timeout),
          read_timeout_(options.read_timeout),
          ssl_(std::move(ssl)),
          verify_(std::move(verify)),
          base_url_(std::move(base_url)) {
        host_header_ = url_.bracketed_host();
        if (url_.port != (url_.https ? 443 : 80)) host_header_ += ":" + std::to_string(url_.port);
    }

    Result<HttpResponse> send(const HttpRequest& request) override {
        std::lock_guard<std::mutex> lock(mutex_);
        std::string target = url_.prefix + request.path;
        if (target.empty() || target.front() != '/') target.insert(target.begin(), '/');
        std::string what = request.method + " " + base_url_ + target + " failed: ";
        auto built = build_request(request, target);
        if (!built) return make_error(what + built.message());
        // A kept-alive connection the server has closed (or written to) while idle is replaced before sending.
        bool reused = connected() && idle_connection_usable();
        if (!reused) close();
        for (int attempt = 0;; ++attempt) {
            if (!connected()) {
                if (auto st = connect(); !st) {
                    close();
                    return make_error(what + st.message(), st.error().kind);
                }
            }
            bool sent = false;
            auto response = exchange(*built, sent);
            if (response) return response;
            close();
            // Only a request that never left on a reused connection is retried, once, on a fresh one.
            if (reused && !sent && attempt == 0) {
                reused = false;
                continue;
            }
            return make_error(what + response.message());
        }
    }

  private:
    bool connected() const { return plain_.has_value() || tls_.has_value(); }

    beast::tcp_stream& lowest() { return tls_ ? tls_->next_layer() : *plain_; }

    void close() {
        tls_.reset();
        plain_.reset();
        buffer_.clear();
    }

    // Readable (EOF, a TLS close_notify, stray bytes) or in error: the server is done with this connection.
    bool idle_connection_usable() {
        if (buffer_.size() != 0) return false;
        pollfd p{lowest().socket().native_handle(), POLLIN, 0};
        return ::poll(&p, 1, 0) == 0;
    }

    // Runs the io_context until the operation started by `start` completes; returns its error.
    template <class Start>
    error_code run(Start&& start) {
        error_code result = asio::error::would_block;
        start([&result](error_code ec, auto&&...) { result = ec; });
        ioc_.restart();
        ioc_.run();
        return result;
    }

    Status connect() {
        std::string where = url_.bracketed_host() + ":" + std::to_string(url_.port);
        error_code ec;
        tcp::resolver resolver(ioc_);
        auto endpoints = resolver.resolve(url_.host, std::to_string(url_.port), tcp::resolver::numeric_service, ec);
        if (ec) return make_error("cannot resolve " + url_.host + ": " + ec.message());
        if (ssl_) {
            tls_.emplace(ioc_, *ssl_);
        } else {
            plain_.emplace(ioc_);
        }
        beast::tcp_stream& stream = lowest();
        stream.expires_after(connect_timeout_);
        ec = run([&](auto handler) { stream.async_connect(endpoints, std::move(handler)); });
        if (ec == beast::error::timeout)
            return make_error("connect to " + where + " timed out after " + ms_text(connect_timeout_));
        if (ec) return make_error("connect to " + where + ": " + ec.message());
        stream.socket().set_option(tcp::no_delay(true), ec);
        if (!tls_) return Ok{};
        if (!is_ip_literal(url_.host) && SSL_set_tlsext_host_name(tls_->native_handle(), url_.host.c_str()) != 1)
            return make_error("cannot set the TLS server name: " + openssl_error_text());
        verify_->failure.clear();
        stream.expires_after(connect_timeout_);
        ec = run([&](auto handler) { tls_->async_handshake(asio::ssl::stream_base::client, std::move(handler)); });
        if (!verify_->failure.empty()) return make_error(verify_->failure, kCertificateRefused);
        if (ec == beast::error::timeout)
            return make_error("TLS handshake with " + where + " timed out after " + ms_text(connect_timeout_));
        if (ec) return make_error("TLS handshake with " + where + ": " + ec.message());
        return Ok{};
    }

    Result<http::request<http::string_body>> build_request(const HttpRequest& request, const std::string& target) {
        if (!is_token(request.method)) return make_error("invalid method");
        if (!is_request_target(target)) return make_error("the path contains a space or a control character");
        http::request<http::string_body> req;
        req.method_string(request.method);
        req.target(target);
        req.version(11);
        for (const auto& [name, value] : request.headers) {
            // Names only: header values may be credentials.
            if (!is_token(name)) return make_error("invalid header name");
            if (!is_field_value(value)) return make_error("the value of header '" + name + "' contains CR, LF or NUL");
            req.set(name, value);
        }
        if (!is_field_value(request.content_type)) return make_error("the content type contains CR, LF or NUL");
        req.set(http::field::host, host_header_);
        if (req.find(http::field::user_agent) == req.end()) req.set(http::field::user_agent, "nodeform");
        if (req.find(http::field::accept) == req.end()) req.set(http::field::accept, "*/*");
        if (!request.content_type.empty()) req.set(http::field::content_type, request.content_type);
        req.erase(http::field::transfer_encoding);
        req.body() = request.body;
        req.prepare_payload();
        return req;
    }

    // One request/response on the open connection, all within read_timeout; `sent` once any byte left.
    Result<HttpResponse> exchange(http::request<http::string_body>& req, bool& sent) {
        beast::tcp_stream& stream = lowest();
        stream.expires_after(read_timeout_);
        std::size_t written = 0;
        error_code ec = asio::error::would_block;
        auto on_write = [&](error_code e, std::size_t n) {
            ec = e;
            written = n;
        };
        if (tls_) {
            http::async_write(*tls_, req, on_write);
        } else {
            http::async_write(*plain_, req, on_write);
        }
        ioc_.restart();
        ioc_.run();
        sent = written > 0 || !ec;
        if (ec == beast::error::timeout)
            return make_error("timed out after " + ms_text(read_timeout_) + " sending the request");
        if (ec) return make_error("sending the request: " + ec.message());

        http::response_parser<http::string_body> parser;
        parser.body_limit(kMaxResponseBody);
        parser.header_limit(kMaxResponseHeader);
        if (req.method() == http::verb::head) parser.skip(true);
        // The header first: Beast 1.74 can lose its early Content-Length > body_limit error when body bytes
        // arrive in the same read, so the announced length is checked here; the body is bounded by the parser.
        auto read = [&](auto& s) {
            error_code e = run([&](auto handler) { http::async_read_header(s, buffer_, parser, std::move(handler)); });
            if (!e && parser.content_length() && *parser.content_length() > kMaxResponseBody)
                e = http::error::body_limit;
            if (!e && !parser.is_done())
                e = run([&](auto handler) { http::async_read(s, buffer_, parser, std::move(handler)); });
            return e;
        };
        ec = tls_ ? read(*tls_) : read(*plain_);
        if (ec == beast::error::timeout)
            return make_error("timed out after " + ms_text(read_timeout_) + " waiting for the response");
        if (ec == http::error::body_limit)
            return make_error("the response body exceeds " + std::to_string(kMaxResponseBody >> 20) + " MiB");
        if (ec == http::error::header_limit)
            return make_error("the response header exceeds " + std::to_string(kMaxResponseHeader >> 10) + " KiB");
        if (ec == http::error::end_of_stream || ec == asio::error::eof)
            return make_error("the server closed the connection without a complete response");
        if (ec) return make_error("reading the response: " + ec.message());
        auto message = parser.release();
        HttpResponse out;
        out.status = static_cast<int>(message.result_int());
        for (const auto& field : message) {
            std::string lower(field.name_string());
            std::transform(lower.begin(), lower.end(), lower.begin(),
                           [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
            out.headers[lower] = std::string(field.value());
        }
        out.body = std::move(message.body());
        if (!message.keep_alive()) close();
        return out;
    }

    std::mutex mutex_;
    ParsedUrl url_;
    std::chrono::milliseconds connect_timeout_;
    std::chrono::milliseconds read_timeout_;
    std::string host_header_;
    // Declaration order is destruction order in reverse: streams go before the context and io_context they use.
    std::unique_ptr<asio::ssl::context> ssl_;
    std::unique_ptr<VerifyState> verify_;
    asio::io_context ioc_{1};
    std::optional<beast::tcp_stream> plain_;
    std::optional<asio::ssl::stream<beast::tcp_stream>> tls_;
    beast::flat_buffer buffer_;
    std::string base_url_;
};

}  // namespace

Result<std::unique_ptr<HttpTransport>> make_http_transport(const HttpClientOptions& options) {
    auto parsed = parse_base_url(options.base_url);
    if (!parsed) return parsed.error();
    ParsedUrl url = *parsed;
    std::unique_ptr<asio::ssl::context> ssl;
    std::unique_ptr<VerifyState> verify;
    if (url.https) {
        verify = std::make_unique<VerifyState>();
        verify->host = url.host;
        if (!options.tls.pin_sha256.empty()) {
            // "FP" or "FP1,FP2" (two CAs pinned while the site CA is rotated; docs/seed.md).
            const std::string& text = options.tls.pin_sha256;
            for (std::size_t start = 0; start <= text.size();) {
                auto comma = text.find(',', start);
                std::string one = tls::normalize_fingerprint(
                    text.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
                if (one.empty())
                    return make_error("certificate pin '" + text +
                                      "' is not a SHA-256 fingerprint (64 hex digits, colons allowed; two separated "
                                      "by a comma)");
                verify->pins.push_back(one);
                if (comma == std::string::npos) break;
                start = comma + 1;
            }
            if (verify->pins.size() > 2) return make_error("at most two certificate pins (the old and the new CA)");
            verify->pin = verify->pins[0] + (verify->pins.size() > 1 ? "," + verify->pins[1] : "");
        }
        if (!options.tls.ca_file.empty()) {
            verify->ca_file = options.tls.ca_file;
            verify->ca_store = X509_STORE_new();
            if (verify->ca_store == nullptr) return make_error("out of memory creating a certificate store");
            if (X509_STORE_load_file(verify->ca_store, options.tls.ca_file.c_str()) != 1)
                return make_error("cannot load CA file '" + options.tls.ca_file + "': " + openssl_error_text() +
                                  " (a PEM file with one or more certificates)");
        }
        if (verify->ca_store == nullptr && verify->pin.empty() && !options.tls.system_trust)
            return make_error("refusing https to " + options.base_url +
                              " without a way to verify the server: give a CA file or a SHA-256 certificate pin");
        try {
            ssl = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_client);
        } catch (const boost::system::system_error& e) {
            return make_error(std::string("cannot create a TLS client context: ") + e.what());
        }
        SSL_CTX* ctx = ssl->native_handle();
        if (options.tls.system_trust) {
            if (SSL_CTX_set_default_verify_paths(ctx) != 1)
                return make_error("cannot load the system CA store: " + openssl_error_text());
            verify->system_store = SSL_CTX_get_cert_store(ctx);
        }
        // OpenSSL's chain verification is replaced by ours (verify_server); a refusal fails the handshake.
        SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
        SSL_CTX_set_cert_verify_callback(ctx, verify_server, verify.get());
    }
    std::string base = options.base_url;
    while (!base.empty() && base.back() == '/')
        base.pop_back();
    return std::unique_ptr<HttpTransport>(
        std::make_unique<BeastTransport>(std::move(url), options, std::move(ssl), std::move(verify), base));
}

}  // namespace nodeform
