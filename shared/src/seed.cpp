#include "nodeform/seed.hpp"

#include <yaml-cpp/yaml.h>

#include <cctype>
#include <nlohmann/json.hpp>
#include <regex>

#include "nodeform/base64.hpp"
#include "nodeform/json_limits.hpp"

namespace nodeform {
namespace {

constexpr std::string_view kPrefix = "nf1:";
constexpr std::size_t kMaxSeedText = 4096;

// http://HOST[:PORT][/] whose HOST is localhost, an IPv4 address in 127.0.0.0/8 or [::1].
bool is_loopback_url(const std::string& url) {
    static const std::regex loopback_re(
        "^http://(localhost|127\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}|\\[(0{0,4}:){2,7}0{0,3}1\\])(:[0-9]{1,5})?/?$",
        std::regex::icase);
    return std::regex_match(url, loopback_re);
}

// Beyond the form url_re checks: a DNS name of at most 253 characters in labels of at most 63, a port in
// 1-65535. With these bounds every valid seed's compact form stays far below kMaxSeedText (it always decodes).
Status check_url_host_and_port(const std::string& url) {
    std::string rest = url.substr(url.find("://") + 3);
    if (!rest.empty() && rest.back() == '/') rest.pop_back();
    std::string host = rest, port;
    if (auto bracket = rest.find(']'); rest[0] == '[') {
        host = rest.substr(0, bracket + 1);
        if (bracket + 1 < rest.size()) port = rest.substr(bracket + 2);
    } else if (auto colon = rest.find(':'); colon != std::string::npos) {
        host = rest.substr(0, colon);
        port = rest.substr(colon + 1);
    }
    if (host.size() > 253) return make_error("controller_url: the host name is longer than 253 characters");
    if (host[0] != '[') {
        std::size_t label = 0;
        for (char c : host) {
            label = c == '.' ? 0 : label + 1;
            if (label > 63) return make_error("controller_url: a host name label is longer than 63 characters");
        }
    }
    if (!port.empty()) {
        long value = std::stol(port);  // 1-5 digits (url_re)
        if (value < 1 || value > 65535) return make_error("controller_url: the port must be 1-65535");
    }
    return Ok{};
}

}  // namespace

std::string encode_seed_compact(const Seed& seed) {
    nlohmann::json j = {
        {"i", seed.identity}, {"u", seed.controller_url}, {"t", seed.token}, {"f", seed.ca_fingerprint}};
    return std::string(kPrefix) + base64url_encode(j.dump());
}

Result<Seed> decode_seed_compact(std::string_view text) {
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ' || text.back() == '\0'))
        text.remove_suffix(1);
    if (text.size() > kMaxSeedText) return make_error("seed: longer than " + std::to_string(kMaxSeedText) + " bytes");
    if (text.substr(0, kPrefix.size()) != kPrefix) {
        return make_error("seed: does not start with \"nf1:\" (not a nodeform seed)");
    }
    auto raw = base64_decode(text.substr(kPrefix.size()));
    if (!raw) return make_error("seed: payload is not base64url");
    auto parsed = parse_json_bounded(*raw, {kMaxSeedText});
    if (!parsed) return make_error("seed: payload: " + parsed.message());
    const nlohmann::json& j = *parsed;
    if (!j.is_object()) return make_error("seed: payload is not a JSON object");
    Seed seed;
    for (auto [key, field] : {std::pair{"i", &seed.identity}, std::pair{"u", &seed.controller_url},
                              std::pair{"t", &seed.token}, std::pair{"f", &seed.ca_fingerprint}}) {
        auto it = j.find(key);
        if (it == j.end() || !it->is_string()) return make_error(std::string("seed: field \"") + key + "\" missing");
        *field = it->get<std::string>();
    }
    if (auto st = validate_seed(seed); !st) return st.error();
    return seed;
}

Result<Seed> parse_seed_yaml(const std::string& text, const std::string& source_name) {
    if (text.size() > kMaxSeedText)
        return make_error(source_name + ": larger than " + std::to_string(kMaxSeedText) + " bytes");
    auto loaded = load_yaml_bounded(text, {kMaxSeedText});
    if (!loaded) {  // the message starts with LINE:COLUMN when it has one
        bool at_line = !loaded.message().empty() && std::isdigit(static_cast<unsigned char>(loaded.message()[0]));
        return make_error(source_name + (at_line ? ":" : ": ") + loaded.message());
    }
    const YAML::Node& root = *loaded;
    if (!root.IsMap())
        return make_error(source_name + ": expected a mapping with identity, controller_url, token, ca_fingerprint");
    Seed seed;
    const std::pair<const char*, std::string*> fields[] = {{"identity", &seed.identity},
                                                           {"controller_url", &seed.controller_url},
                                                           {"token", &seed.token},
                                                           {"ca_fingerprint", &seed.ca_fingerprint}};
    for (const auto& item : root) {
        std::string key = item.first.Scalar();
        bool known = false;
        for (const auto& [name, field] : fields) {
            if (key != name) continue;
            known = true;
            if (!item.second.IsScalar()) {
                return make_error(source_name + ":" + std::to_string(item.second.Mark().line + 1) + ": " + key +
                                  ": must be a string");
            }
            *field = item.second.Scalar();
        }
        if (!known) {
            return make_error(source_name + ":" + std::to_string(item.first.Mark().line + 1) + ": " + key +
                              ": unknown key (expected identity, controller_url, token, ca_fingerprint)");
        }
    }
    if (auto st = validate_seed(seed); !st) return make_error(source_name + ": " + st.message());
    return seed;
}

Status validate_seed(const Seed& seed) {
    static const std::regex identity_re("^[a-z][a-z0-9-]{0,62}$");
    static const std::regex url_re(
        "^https?://[A-Za-z0-9.\\-]+(:[0-9]{1,5})?/?$|^https?://\\[[0-9A-Fa-f:]+\\](:[0-9]{1,5})?/?$");
    static const std::regex token_re("^[A-Za-z0-9._~+/=-]{16,256}$");
    // One pin, or two separated by a comma while the site CA is being rotated (docs/seed.md).
    static const std::regex fp_re("^[0-9a-f]{64}(,[0-9a-f]{64})?$");
    if (!std::regex_match(seed.identity, identity_re)) {
        return make_error(
            "identity: must be lowercase letters, digits and hyphens, start with a letter, at most 63 characters");
    }
    if (!std::regex_match(seed.controller_url, url_re)) {
        return make_error("controller_url: must be http(s)://HOST[:PORT]");
    }
    if (auto st = check_url_host_and_port(seed.controller_url); !st) return st;
    if (seed.controller_url.rfind("http://", 0) == 0 && !is_loopback_url(seed.controller_url)) {
        return make_error(
            "controller_url: plain http:// is allowed only to a loopback address (127.0.0.0/8, [::1], localhost), "
            "the dev posture on one machine; use https:// with the CA fingerprint");
    }
    if (!std::regex_match(seed.token, token_re)) {
        return make_error("token: must be 16-256 characters of [A-Za-z0-9._~+/=-]");
    }
    if (seed.controller_url.rfind("https://", 0) == 0 && !std::regex_match(seed.ca_fingerprint, fp_re)) {
        return make_error(
            "ca_fingerprint: must be 64 lower-case hex characters (SHA-256 of the controller CA), or two of them "
            "separated by a comma during a CA rotation");
    }
    if (!seed.ca_fingerprint.empty() && !std::regex_match(seed.ca_fingerprint, fp_re)) {
        return make_error(
            "ca_fingerprint: must be 64 lower-case hex characters (SHA-256 of the controller CA), or two of them "
            "separated by a comma during a CA rotation");
    }
    return Ok{};
}

}  // namespace nodeform
