#pragma once
// The controller's state directory at startup: the operator token and, unless the config names a certificate,
// a generated site CA and server certificate (STATE/tls). Secrets are written 0600 with temp + fsync + rename.
#include <string>

#include "nodeform/controller/config.hpp"
#include "nodeform/random.hpp"
#include "nodeform/result.hpp"

namespace nodeform::controller {

// What `serve` does at startup in STATE: creates STATE/tls (CA + server certificate, unless the config names
// a certificate) and STATE/operator-token (0600). Returns the operator token and, for generated TLS, the CA
// fingerprint; fills config.tls_cert/tls_key with the paths to use.
struct PreparedState {
    std::string operator_token;
    std::string ca_fingerprint;  // empty when plain HTTP or an operator-provided certificate
    bool generated_tls = false;
    bool renewed_tls = false;  // the server certificate was due (cert_renew_before) and was issued anew
    bool generated_operator_token = false;
};
// random: the operator token when one is created.
Result<PreparedState> prepare_state(ControllerConfig& config, const std::string& site_name, Random& random);

// The generated server certificate (STATE/tls/server.pem) is issued anew from the site CA in STATE/tls when it
// expires within config.cert_renew_before, or does not match its key. Ok(true) when renewed; Ok(false) when not
// due, plain HTTP, or the certificate is the operator's own (--tls-cert: never touched).
Result<bool> renew_server_certificate_if_due(const ControllerConfig& config, const std::string& site_name = "");

}  // namespace nodeform::controller
