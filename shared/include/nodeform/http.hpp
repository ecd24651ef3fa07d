#pragma once
// HttpTransport: how nodeform speaks HTTP(S) as a client. The real one is Boost.Beast over Boost.Asio
// and OpenSSL with certificate pinning; tests may substitute their own.
#include <chrono>
#include <map>
#include <memory>
#include <string>

#include "nodeform/result.hpp"

namespace nodeform {

struct HttpRequest {
    std::string method = "GET";
    std::string path;  // path + query, already encoded
    std::map<std::string, std::string> headers;
    std::string body;
    std::string content_type;
};

struct HttpResponse {
    int status = 0;
    std::map<std::string, std::string> headers;  // names lower-cased
    std::string body;
};

struct TlsOptions {
    std::string ca_file;        // PEM bundle to verify the server against (may be empty)
    std::string pin_sha256;     // hex SHA-256 (colons allowed) of a certificate in the server's chain; "A,B": either
                                // (the CA's, or the leaf's as `pvenode cert info` shows it)
    bool system_trust = false;  // verify against the system CA store (default verify paths) + host name
};

struct HttpClientOptions {
    std::string base_url;  // scheme://host[:port]
    TlsOptions tls;
    std::chrono::milliseconds connect_timeout{std::chrono::seconds(5)};  // TCP connect, then the TLS handshake
    std::chrono::milliseconds read_timeout{std::chrono::seconds(30)};    // writing the request + reading the response
};

// Error::kind of a transport failure where the server's certificate was refused (pin mismatch, untrusted
// chain, wrong host name): final, retrying the same endpoint cannot succeed.
inline constexpr const char* kCertificateRefused = "certificate_refused";
inline bool is_certificate_refused(const Error& error) {
    return error.kind == kCertificateRefused;
}

class HttpTransport {
  public:
    virtual ~HttpTransport() = default;
    // Err for transport failures (connect, TLS, pin mismatch, timeout); any HTTP status is Ok. A refused
    // certificate has kind kCertificateRefused.
    virtual Result<HttpResponse> send(const HttpRequest& request) = 0;
};

// https:// verifies against ca_file, system_trust and/or pin_sha256 (every one given must hold) — never without
// one of them; http:// is plain. Kept-alive connections are reused; a response body over 64 MiB is an Err.
Result<std::unique_ptr<HttpTransport>> make_http_transport(const HttpClientOptions& options);

}  // namespace nodeform
