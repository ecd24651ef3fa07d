// secrets.yaml values: literal text, env:NAME or file:PATH, resolved on first use. Messages never hold values.
#include <cstdlib>

#include "context.hpp"
#include "names.hpp"

namespace nodeform::site::detail {
namespace {

constexpr std::size_t kMaxSecretFile = 64 * 1024;

std::string strip_trailing_newlines(std::string value) {
    while (!value.empty() && (value.back() == '\n' || value.back() == '\r'))
        value.pop_back();
    return value;
}

// authorized_keys line: "TYPE BASE64 [COMMENT]" on one line.
std::string check_ssh_key(const std::string& key) {
    if (key.find_first_of("\r\n") != std::string::npos) return "must be a single line";
    static const char* kTypes[] = {"ssh-ed25519 ",
                                   "ssh-rsa ",
                                   "ecdsa-sha2-nistp256 ",
                                   "ecdsa-sha2-nistp384 ",
                                   "ecdsa-sha2-nistp521 ",
                                   "sk-ssh-ed25519@openssh.com ",
                                   "sk-ecdsa-sha2-nistp256@openssh.com "};
    bool known = false;
    std::size_t type_length = 0;
    for (const char* type : kTypes) {
        std::string t(type);
        if (key.rfind(t, 0) == 0) known = true, type_length = t.size();
    }
    if (!known) return "is not an SSH public key (expected 'ssh-ed25519 AAAA...', 'ssh-rsa ...' or 'ecdsa-...')";
    std::size_t end = key.find(' ', type_length);
    std::string body = key.substr(type_length, end == std::string::npos ? std::string::npos : end - type_length);
    if (body.size() < 16) return "is not an SSH public key (the key data is missing or too short)";
    for (char c : body) {
        bool b64 = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/' ||
                   c == '=';
        if (!b64) return "is not an SSH public key (the key data is not base64)";
    }
    for (char c : key) {
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return "contains a control character";
    }
    return {};
}

std::string check_plain_secret(const std::string& value) {
    for (char c : value) {
        if (static_cast<unsigned char>(c) < 0x20 && c != '\t') return "contains a control character or line break";
    }
    return {};
}

}  // namespace

std::optional<std::string> lookup_secret(Context& c, const std::string& section, const std::string& key,
                                         bool* missing) {
    if (missing != nullptr) *missing = false;
    if (!c.secrets) {
        if (missing != nullptr) *missing = true;
        return std::nullopt;
    }
    const Document& doc = *c.secrets;
    const Json* value = nullptr;
    std::string pointer;
    if (section.empty()) {
        value = member(doc.json, key.c_str());
        pointer = pointer_join("", key);
    } else {
        const Json* group = member(doc.json, section.c_str());
        if (group != nullptr && group->is_object()) value = member(*group, key.c_str());
        pointer = pointer_join(pointer_join("", section), key);
    }
    if (value == nullptr) {
        if (missing != nullptr) *missing = true;
        return std::nullopt;
    }
    auto& entry = c.secret_cache[pointer];
    if (entry.resolved) return entry.ok ? std::optional<std::string>(entry.value) : std::nullopt;
    entry.resolved = true;
    entry.pointer = pointer;
    if (!value->is_string()) return std::nullopt;  // the schema reported it
    std::string text = value->get<std::string>();
    std::string resolved;
    if (text.rfind("env:", 0) == 0) {
        std::string name = text.substr(4);
        std::string why = check_env_name(name);
        if (!why.empty()) {
            c.add(doc.diag(pointer, "env: source: variable name " + why));
            return std::nullopt;
        }
        std::optional<std::string> got;
        if (c.options.getenv) {
            got = c.options.getenv(name);
        } else if (const char* raw = std::getenv(name.c_str())) {  // NOLINT(concurrency-mt-unsafe)
            got = std::string(raw);
        }
        if (!got) {
            c.add(doc.diag(pointer, "environment variable " + name + " is not set (export it before running)"));
            return std::nullopt;
        }
        resolved = *got;
    } else if (text.rfind("file:", 0) == 0) {
        std::string path = text.substr(5);
        if (path.empty()) {
            c.add(doc.diag(pointer, "file: source needs a path"));
            return std::nullopt;
        }
        std::string reason;
        auto content = c.source->read(path, kMaxSecretFile, reason);
        if (!content) {
            c.add(doc.diag(pointer, "cannot read secret file " + quote_for_message(path) + ": " + reason));
            return std::nullopt;
        }
        resolved = strip_trailing_newlines(*content);
    } else {
        resolved = text;
    }
    if (invalid_utf8_at(resolved) != std::string_view::npos) {
        c.add(doc.diag(pointer, "the secret value is not valid UTF-8"));
        return std::nullopt;
    }
    if (resolved.empty()) {
        c.add(doc.diag(pointer, "the secret is empty"));
        return std::nullopt;
    }
    std::string why = section == "ssh_keys" ? check_ssh_key(resolved) : check_plain_secret(resolved);
    if (!why.empty()) {
        c.add(doc.diag(pointer, "the secret value " + why));
        return std::nullopt;
    }
    if (section.empty() && key == "site_token" && resolved.size() < 16) {
        c.add(doc.diag(pointer, "site_token is shorter than 16 characters; use a long random value"));
        return std::nullopt;
    }
    entry.ok = true;
    entry.value = resolved;
    return resolved;
}

}  // namespace nodeform::site::detail
