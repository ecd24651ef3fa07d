#include "nodeform/canonical_json.hpp"

#include <openssl/evp.h>

#include <array>
#include <stdexcept>

namespace nodeform {

std::string canonical_dump(const nlohmann::json& document) {
    // nlohmann::json objects are std::map-backed: keys come out sorted; dump() adds no whitespace.
    return document.dump(-1, ' ', false, nlohmann::json::error_handler_t::strict);
}

std::string sha256_hex(std::string_view data) {
    std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
    unsigned int length = 0;
    if (EVP_Digest(data.data(), data.size(), digest.data(), &length, EVP_sha256(), nullptr) != 1) {
        throw std::runtime_error("EVP_Digest(sha256) failed");
    }
    static constexpr char kHex[] = "0123456789abcdef";
    std::string out;
    out.reserve(length * 2);
    for (unsigned int i = 0; i < length; ++i) {
        out.push_back(kHex[digest[i] >> 4]);
        out.push_back(kHex[digest[i] & 0x0f]);
    }
    return out;
}

std::string canonical_digest(const nlohmann::json& document) {
    return "sha256:" + sha256_hex(canonical_dump(document));
}

}  // namespace nodeform
