#pragma once
// The identity seed: what a freshly cloned VM knows about itself. Format: docs/seed.md.
#include <string>
#include <string_view>

#include "nodeform/result.hpp"

namespace nodeform {

struct Seed {
    std::string identity;        // node name, as in the site's nodes/NAME.yaml
    std::string controller_url;  // https://host:port (http:// only for the dev posture on loopback)
    std::string token;           // one-time enrollment token, or the site token (secret)
    std::string ca_fingerprint;  // SHA-256 of the controller CA certificate (DER), 64 hex chars
};

// Compact single-line encoding for the SMBIOS serial: "nf1:" + base64url(compact JSON).
std::string encode_seed_compact(const Seed& seed);
Result<Seed> decode_seed_compact(std::string_view text);
// seed.yaml: keys identity, controller_url, token, ca_fingerprint. The source name is used in errors.
Result<Seed> parse_seed_yaml(const std::string& text, const std::string& source_name);
// Checks each field's form; the error names the field.
Status validate_seed(const Seed& seed);

}  // namespace nodeform
