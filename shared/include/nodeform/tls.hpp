#pragma once
// TLS helpers: a site CA + server certificate (ECDSA P-256) for the controller, and SHA-256 certificate
// fingerprints (of the DER encoding) as used for pinning.
#include <chrono>
#include <string>
#include <vector>

#include "nodeform/result.hpp"

typedef struct x509_st X509;

namespace nodeform::tls {

struct Pki {
    std::string ca_cert_pem;
    std::string ca_key_pem;
    std::string server_cert_pem;  // the server certificate followed by the CA certificate (full chain)
    std::string server_key_pem;
    std::string ca_fingerprint;  // 64 lower-case hex digits
};

struct PkiOptions {
    std::string site_name = "nodeform";  // goes into the subjects' CN/O
    std::vector<std::string> hosts;      // extra SANs: DNS names or IP literals (localhost, 127.0.0.1 always)
    int ca_days = 3650;
    int server_days = 825;
};

// Generates a fresh CA key + self-signed CA certificate and a server key + certificate signed by it.
Result<Pki> generate_pki(const PkiOptions& options);

// A new server key + certificate (PkiOptions: hosts, server_days) signed by an existing CA (PEM texts); the
// returned Pki carries the CA unchanged. Renewal: agents pin the CA, so they accept the new certificate.
Result<Pki> issue_server_certificate(const std::string& ca_cert_pem, const std::string& ca_key_pem,
                                     const PkiOptions& options);
// Time from now until the first certificate of pem expires (negative once it has).
Result<std::chrono::seconds> certificate_lifetime_left(const std::string& pem);
// True when key_pem is the private key of the first certificate of cert_pem.
bool certificate_matches_key(const std::string& cert_pem, const std::string& key_pem);

// Files written by write_pki / read by the controller, all under one directory.
struct PkiPaths {
    std::string ca_cert;      // DIR/ca.pem
    std::string ca_key;       // DIR/ca.key
    std::string server_cert;  // DIR/server.pem (chain: server then CA)
    std::string server_key;   // DIR/server.key
};
PkiPaths pki_paths(const std::string& dir);

// Writes the four files 0600 (write_file_atomic), creating dir (0700) when missing.
Status write_pki(const std::string& dir, const Pki& pki);

// Lower-case hex SHA-256 of the certificate's DER encoding; "" when cert is null.
std::string certificate_fingerprint(X509* cert);
// Fingerprint of the first certificate in a PEM text / file.
Result<std::string> pem_fingerprint(const std::string& pem);
Result<std::string> certificate_file_fingerprint(const std::string& path);

// "AB:cd:..." or "abcd..." → 64 lower-case hex digits; "" when it is not a SHA-256 fingerprint.
std::string normalize_fingerprint(const std::string& text);
// 64 hex digits → "AB:CD:..." (the form `openssl x509 -fingerprint -sha256` and Proxmox print).
std::string colon_fingerprint(const std::string& hex);

}  // namespace nodeform::tls
