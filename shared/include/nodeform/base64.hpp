#pragma once
// Base64 (RFC 4648): standard alphabet with padding, and the URL-safe alphabet without padding.
#include <optional>
#include <string>
#include <string_view>

namespace nodeform {

std::string base64_encode(std::string_view data);
std::string base64url_encode(std::string_view data);
// Accepts either alphabet, with or without padding; nullopt on any other character.
std::optional<std::string> base64_decode(std::string_view text);

}  // namespace nodeform
