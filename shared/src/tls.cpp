#include "nodeform/tls.hpp"

#include <arpa/inet.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <cctype>
#include <filesystem>
#include <memory>

#include "nodeform/atomic_file.hpp"

namespace nodeform::tls {
namespace {

template <typename T, void (*F)(T*)>
struct Deleter {
    void operator()(T* p) const { F(p); }
};
using PKeyPtr = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY, EVP_PKEY_free>>;
using X509Ptr = std::unique_ptr<X509, Deleter<X509, X509_free>>;
using BioPtr = std::unique_ptr<BIO, Deleter<BIO, BIO_free_all>>;

std::string ssl_error(const std::string& what) {
    unsigned long code = ERR_get_error();
    std::string text = what;
    if (code != 0) {
        char buf[256];
        ERR_error_string_n(code, buf, sizeof(buf));
        text += ": ";
        text += buf;
    }
    ERR_clear_error();
    return text;
}

Result<PKeyPtr> new_p256_key() {
    PKeyPtr key(EVP_EC_gen("P-256"));
    if (!key) return make_error(ssl_error("cannot generate an ECDSA P-256 key"));
    return key;
}

std::string bio_string(BIO* bio) {
    char* data = nullptr;
    long len = BIO_get_mem_data(bio, &data);
    return std::string(data, static_cast<std::size_t>(len));
}

Result<std::string> key_pem(EVP_PKEY* key) {
    BioPtr bio(BIO_new(BIO_s_mem()));
    if (!bio || PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1)
        return make_error(ssl_error("cannot encode a private key"));
    return bio_string(bio.get());
}

Result<std::string> cert_pem(X509* cert) {
    BioPtr bio(BIO_new(BIO_s_mem()));
    if (!bio || PEM_write_bio_X509(bio.get(), cert) != 1) return make_error(ssl_error("cannot encode a certificate"));
    return bio_string(bio.get());
}

bool add_ext(X509* cert, X509* issuer, int nid, const std::string& value) {
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
    if (ext == nullptr) return false;
    bool ok = X509_add_ext(cert, ext, -1) == 1;
    X509_EXTENSION_free(ext);
    return ok;
}

bool is_ip(const std::string& host) {
    unsigned char buf[16];
    return inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

// Hosts are DNS names or IP literals; anything else would be an injection into the SAN config string.
bool valid_san_host(const std::string& host) {
    if (host.empty() || host.size() > 253) return false;
    if (is_ip(host)) return true;
    for (char c : host) {
        if (std::isalnum(static_cast<unsigned char>(c)) == 0 && c != '.' && c != '-' && c != '*') return false;
    }
    return true;
}

Result<X509Ptr> make_cert(EVP_PKEY* subject_key, const std::string& cn, const std::string& org, X509* issuer,
                          EVP_PKEY* issuer_key, int days, bool is_ca, const std::vector<std::string>& sans) {
    X509Ptr cert(X509_new());
    if (!cert) return make_error(ssl_error("cannot allocate a certificate"));
    X509_set_version(cert.get(), 2);
    unsigned char serial_bytes[16];
    if (RAND_bytes(serial_bytes, sizeof(serial_bytes)) != 1) return make_error(ssl_error("no randomness for serial"));
    serial_bytes[0] &= 0x7f;
    BIGNUM* bn = BN_bin2bn(serial_bytes, sizeof(serial_bytes), nullptr);
    if (bn == nullptr || BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert.get())) == nullptr) {
        BN_free(bn);
        return make_error(ssl_error("cannot set the certificate serial"));
    }
    BN_free(bn);
    X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);  // tolerate a little clock skew
    X509_time_adj_ex(X509_getm_notAfter(cert.get()), days, 0, nullptr);
    if (X509_set_pubkey(cert.get(), subject_key) != 1) return make_error(ssl_error("cannot set the public key"));
    X509_NAME* name = X509_get_subject_name(cert.get());
    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(org.c_str()), -1, -1,
                               0);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1,
                               0);
    X509* signer = issuer != nullptr ? issuer : cert.get();
    X509_set_issuer_name(cert.get(), X509_get_subject_name(signer));
    bool ok = true;
    if (is_ca) {
        ok = ok && add_ext(cert.get(), signer, NID_basic_constraints, "critical,CA:TRUE,pathlen:0");
        ok = ok && add_ext(cert.get(), signer, NID_key_usage, "critical,keyCertSign,cRLSign");
        ok = ok && add_ext(cert.get(), signer, NID_subject_key_identifier, "hash");
    } else {
        ok = ok && add_ext(cert.get(), signer, NID_basic_constraints, "critical,CA:FALSE");
        ok = ok && add_ext(cert.get(), signer, NID_key_usage, "critical,digitalSignature");
        ok = ok && add_ext(cert.get(), signer, NID_ext_key_usage, "serverAuth");
        ok = ok && add_ext(cert.get(), signer, NID_subject_key_identifier, "hash");
        ok = ok && add_ext(cert.get(), signer, NID_authority_key_identifier, "keyid:always");
        std::string san;
        for (const auto& host : sans) {
            if (!san.empty()) san += ",";
            san += (is_ip(host) ? "IP:" : "DNS:") + host;
        }
        if (!san.empty()) ok = ok && add_ext(cert.get(), signer, NID_subject_alt_name, san);
    }
    if (!ok) return make_error(ssl_error("cannot add certificate extensions"));
    if (X509_sign(cert.get(), issuer_key, EVP_sha256()) == 0) return make_error(ssl_error("cannot sign a certificate"));
    return cert;
}

Result<std::vector<std::string>> san_list(const PkiOptions& options) {
    std::vector<std::string> sans{"localhost", "127.0.0.1", "::1"};
    for (const auto& host : options.hosts) {
        if (!valid_san_host(host))
            return make_error("cannot put '" + host + "' into a certificate: not a DNS name or IP address");
        if (host == "0.0.0.0" || host == "::") continue;  // wildcard listen addresses are not names
        bool seen = false;
        for (const auto& s : sans)
            seen = seen || s == host;
        if (!seen) sans.push_back(host);
    }
    return sans;
}

Result<X509Ptr> read_pem_cert(const std::string& pem) {
    BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
    if (!bio) return make_error("out of memory");
    X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
    if (!cert) return make_error(ssl_error("no PEM certificate found"));
    return cert;
}

Result<PKeyPtr> read_pem_key(const std::string& pem) {
    BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
    if (!bio) return make_error("out of memory");
    PKeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
    if (!key) return make_error(ssl_error("no PEM private key found"));
    return key;
}

}  // namespace

Result<Pki> generate_pki(const PkiOptions& options) {
    auto sans = san_list(options);
    if (!sans) return sans.error();
    auto ca_key = new_p256_key();
    if (!ca_key) return ca_key.error();
    auto server_key = new_p256_key();
    if (!server_key) return server_key.error();
    std::string org = options.site_name.empty() ? "nodeform" : options.site_name;
    auto ca =
        make_cert(ca_key->get(), "nodeform site CA " + org, org, nullptr, ca_key->get(), options.ca_days, true, {});
    if (!ca) return ca.error();
    auto server = make_cert(server_key->get(), "nodeform-controller", org, ca->get(), ca_key->get(),
                            options.server_days, false, *sans);
    if (!server) return server.error();
    Pki pki;
    auto ca_pem = cert_pem(ca->get());
    auto server_pem = cert_pem(server->get());
    auto ca_key_text = key_pem(ca_key->get());
    auto server_key_text = key_pem(server_key->get());
    if (!ca_pem) return ca_pem.error();
    if (!server_pem) return server_pem.error();
    if (!ca_key_text) return ca_key_text.error();
    if (!server_key_text) return server_key_text.error();
    pki.ca_cert_pem = *ca_pem;
    pki.ca_key_pem = *ca_key_text;
    pki.server_cert_pem = *server_pem + *ca_pem;
    pki.server_key_pem = *server_key_text;
    pki.ca_fingerprint = certificate_fingerprint(ca->get());
    return pki;
}

Result<Pki> issue_server_certificate(const std::string& ca_cert_pem, const std::string& ca_key_pem,
                                     const PkiOptions& options) {
    auto sans = san_list(options);
    if (!sans) return sans.error();
    auto ca = read_pem_cert(ca_cert_pem);
    if (!ca) return make_error("the CA certificate: " + ca.message());
    auto ca_key = read_pem_key(ca_key_pem);
    if (!ca_key) return make_error("the CA key: " + ca_key.message());
    if (X509_check_private_key(ca->get(), ca_key->get()) != 1) return make_error("the CA key does not match the CA");
    auto server_key = new_p256_key();
    if (!server_key) return server_key.error();
    std::string org = options.site_name.empty() ? "nodeform" : options.site_name;
    auto server = make_cert(server_key->get(), "nodeform-controller", org, ca->get(), ca_key->get(),
                            options.server_days, false, *sans);
    if (!server) return server.error();
    auto server_pem = cert_pem(server->get());
    auto server_key_text = key_pem(server_key->get());
    if (!server_pem) return server_pem.error();
    if (!server_key_text) return server_key_text.error();
    Pki pki;
    pki.ca_cert_pem = ca_cert_pem;
    pki.ca_key_pem = ca_key_pem;
    pki.server_cert_pem = *server_pem + ca_cert_pem;
    pki.server_key_pem = *server_key_text;
    pki.ca_fingerprint = certificate_fingerprint(ca->get());
    return pki;
}

Result<std::chrono::seconds> certificate_lifetime_left(const std::string& pem) {
    auto cert = read_pem_cert(pem);
    if (!cert) return cert.error();
    int days = 0, seconds = 0;
    if (ASN1_TIME_diff(&days, &seconds, nullptr, X509_get0_notAfter(cert->get())) != 1)
        return make_error(ssl_error("cannot read the certificate's expiry"));
    return std::chrono::seconds(static_cast<std::int64_t>(days) * 86400 + seconds);
}

bool certificate_matches_key(const std::string& cert_pem, const std::string& key_pem) {
    auto cert = read_pem_cert(cert_pem);
    auto key = read_pem_key(key_pem);
    return cert && key && X509_check_private_key(cert->get(), key->get()) == 1;
}

PkiPaths pki_paths(const std::string& dir) {
    return PkiPaths{dir + "/ca.pem", dir + "/ca.key", dir + "/server.pem", dir + "/server.key"};
}

Status write_pki(const std::string& dir, const Pki& pki) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) return make_error("cannot create directory " + dir + ": " + ec.message());
    ::chmod(dir.c_str(), 0700);
    PkiPaths paths = pki_paths(dir);
    WriteOptions opts;
    opts.mode = 0600;
    // Keys first: a crash in between leaves no certificate without its key.
    for (const auto& [path, content] :
         {std::pair{paths.ca_key, pki.ca_key_pem}, std::pair{paths.server_key, pki.server_key_pem},
          std::pair{paths.ca_cert, pki.ca_cert_pem}, std::pair{paths.server_cert, pki.server_cert_pem}}) {
        if (auto st = write_file_atomic(path, content, opts); !st) return st;
    }
    return Ok{};
}

std::string certificate_fingerprint(X509* cert) {
    if (cert == nullptr) return "";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (X509_digest(cert, EVP_sha256(), md, &len) != 1) return "";
    static const char* hex = "0123456789abcdef";
    std::string out;
    out.reserve(len * 2);
    for (unsigned int i = 0; i < len; ++i) {
        out.push_back(hex[md[i] >> 4]);
        out.push_back(hex[md[i] & 0xf]);
    }
    return out;
}

Result<std::string> pem_fingerprint(const std::string& pem) {
    BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
    if (!bio) return make_error("out of memory");
    X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
    if (!cert) return make_error(ssl_error("no PEM certificate found"));
    return certificate_fingerprint(cert.get());
}

Result<std::string> certificate_file_fingerprint(const std::string& path) {
    auto text = read_file(path, 1024 * 1024);
    if (!text) return text.error();
    auto fp = pem_fingerprint(*text);
    if (!fp) return make_error(path + ": " + fp.message());
    return fp;
}

std::string normalize_fingerprint(const std::string& text) {
    std::string out;
    std::string body = text;
    if (body.rfind("sha256:", 0) == 0 || body.rfind("SHA256:", 0) == 0) body = body.substr(7);
    for (char c : body) {
        if (c == ':') continue;
        if (std::isxdigit(static_cast<unsigned char>(c)) == 0) return "";
        out.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
    }
    return out.size() == 64 ? out : "";
}

std::string colon_fingerprint(const std::string& hex) {
    std::string out;
    for (std::size_t i = 0; i < hex.size(); ++i) {
        if (i > 0 && i % 2 == 0) out.push_back(':');
        out.push_back(static_cast<char>(std::toupper(static_cast<unsigned char>(hex[i]))));
    }
    return out;
}

}  // namespace nodeform::tls
