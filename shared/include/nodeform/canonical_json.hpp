#pragma once
// Canonical JSON: object keys sorted, no insignificant whitespace, UTF-8; the digest of a
// resolved spec is the SHA-256 of this text. Same document in, same bytes out.
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace nodeform {

std::string canonical_dump(const nlohmann::json& document);
// Lower-case hex SHA-256 of data.
std::string sha256_hex(std::string_view data);
// "sha256:" + sha256_hex(canonical_dump(document)).
std::string canonical_digest(const nlohmann::json& document);

}  // namespace nodeform
