#include "nodeform/agent/validate.hpp"

#include <algorithm>
#include <cstdio>

#include "nodeform/site/site.hpp"

namespace nodeform::agent {
namespace {

bool lower(char c) {
    return c >= 'a' && c <= 'z';
}
bool digit(char c) {
    return c >= '0' && c <= '9';
}
bool alpha(char c) {
    return lower(c) || (c >= 'A' && c <= 'Z');
}

Error bad(const std::string& what, const std::string& value, const std::string& rule) {
    return make_error("invalid " + what + " " + quote_for_message(value) + ": " + rule);
}

}  // namespace

std::string quote_for_message(const std::string& value) {
    std::string out = "\"";
    std::size_t n = 0;
    for (unsigned char c : value) {
        if (++n > 80) {
            out += "…";
            break;
        }
        if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\') {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\x%02x", c);
            out += buf;
        } else {
            out.push_back(static_cast<char>(c));
        }
    }
    return out + "\"";
}

Status validate_account_name(const std::string& name, const std::string& what) {
    const std::string rule =
        "use 1-32 characters: a lower-case letter or '_' first, then lower-case letters, "
        "digits, '_' or '-' (optionally ending in '$')";
    if (name.empty() || name.size() > 32) return bad(what, name, rule);
    if (!(lower(name[0]) || name[0] == '_')) return bad(what, name, rule);
    for (std::size_t i = 1; i < name.size(); ++i) {
        char c = name[i];
        bool ok = lower(c) || digit(c) || c == '_' || c == '-' || (c == '$' && i + 1 == name.size());
        if (!ok) return bad(what, name, rule);
    }
    return Ok{};
}

std::optional<unsigned> numeric_account_id(const std::string& value) {
    if (value.empty() || value.size() > 10 || !std::all_of(value.begin(), value.end(), digit)) return std::nullopt;
    unsigned long long id = std::stoull(value);  // ≤ 10 digits: no overflow
    if (id > kMaxAccountId) return std::nullopt;
    return static_cast<unsigned>(id);
}

Status validate_owner(const std::string& value, const std::string& what) {
    if (!value.empty() && std::all_of(value.begin(), value.end(), digit)) {
        if (numeric_account_id(value)) return Ok{};
        return bad(what, value, "a numeric id must be 0 to " + std::to_string(kMaxAccountId));
    }
    return validate_account_name(value, what);
}

Status check_spec_schema(const nlohmann::json& spec, const std::string& source) {
    auto problems = site::validate_resolved_spec(spec, source);
    if (problems.empty()) return Ok{};
    std::string message;
    std::size_t shown = 0;
    for (const auto& p : problems) {
        if (++shown > 20) {
            message += "\n(" + std::to_string(problems.size() - 20) + " more)";
            break;
        }
        message += (message.empty() ? "" : "\n") + source + ": " + (p.field.empty() ? "-" : p.field) + ": " + p.message;
    }
    return make_error("not a resolved spec this agent understands (docs/resolved-spec.md):\n" + message);
}

Status validate_package_name(const std::string& name) {
    const std::string rule =
        "a Debian package name is lower-case letters, digits, '+', '-' and '.', at least 2 "
        "characters, starting with a letter or digit, optionally followed by :ARCH";
    std::size_t colon = name.find(':');
    std::string base = name.substr(0, colon);
    if (base.size() < 2 || base.size() > 128 || !(lower(base[0]) || digit(base[0])))
        return bad("package name", name, rule);
    for (char c : base) {
        if (!(lower(c) || digit(c) || c == '+' || c == '-' || c == '.')) return bad("package name", name, rule);
    }
    if (colon != std::string::npos) {
        std::string arch = name.substr(colon + 1);
        if (arch.empty() || arch.size() > 32) return bad("package name", name, rule);
        for (char c : arch) {
            if (!(lower(c) || digit(c) || c == '-')) return bad("package name", name, rule);
        }
    }
    return Ok{};
}

Status validate_unit_name(const std::string& name) {
    const std::string rule = "a systemd unit name is letters, digits and ':_.@-', not starting with '-'";
    if (name.empty() || name.size() > 255 || name[0] == '-' || name[0] == '.') return bad("unit name", name, rule);
    for (char c : name) {
        if (!(alpha(c) || digit(c) || c == ':' || c == '_' || c == '.' || c == '@' || c == '-' || c == '\\')) {
            return bad("unit name", name, rule);
        }
    }
    return Ok{};
}

Status validate_stack_name(const std::string& name) {
    const std::string rule = "use 1-63 lower-case letters, digits, '_' or '-', starting with a letter or digit";
    if (name.empty() || name.size() > 63 || !(lower(name[0]) || digit(name[0]))) return bad("stack name", name, rule);
    for (char c : name) {
        if (!(lower(c) || digit(c) || c == '_' || c == '-')) return bad("stack name", name, rule);
    }
    return Ok{};
}

Status validate_hostname(const std::string& name) {
    const std::string rule = "use 1-63 lower-case letters, digits and '-', not starting or ending with '-'";
    if (name.empty() || name.size() > 63 || name.front() == '-' || name.back() == '-')
        return bad("hostname", name, rule);
    for (char c : name) {
        if (!(lower(c) || digit(c) || c == '-')) return bad("hostname", name, rule);
    }
    return Ok{};
}

Status validate_domain(const std::string& name) {
    if (name.empty()) return Ok{};
    if (name.size() > 253) return bad("domain", name, "longer than 253 characters");
    std::size_t start = 0;
    while (start <= name.size()) {
        std::size_t dot = name.find('.', start);
        if (dot == std::string::npos) dot = name.size();
        std::string label = name.substr(start, dot - start);
        if (auto st = validate_hostname(label); !st) {
            return bad("domain", name, "each dot-separated label must be 1-63 lower-case letters, digits and '-'");
        }
        start = dot + 1;
    }
    return Ok{};
}

Status validate_abs_path(const std::string& path, const std::string& what) {
    if (path.empty() || path[0] != '/') return bad(what, path, "must be an absolute path");
    if (path.size() > 4096) return bad(what, path, "longer than 4096 characters");
    for (unsigned char c : path) {
        if (c < 0x20 || c == 0x7f) return bad(what, path, "contains a control character");
    }
    if (path.size() > 1 && path.back() == '/') return bad(what, path, "must not end with '/'");
    std::size_t i = 1;
    while (i <= path.size()) {
        std::size_t j = path.find('/', i);
        if (j == std::string::npos) j = path.size();
        std::string part = path.substr(i, j - i);
        if (path.size() > 1 && (part.empty() || part == "." || part == "..")) {
            return bad(what, path, "must not contain empty, '.' or '..' components");
        }
        i = j + 1;
    }
    return Ok{};
}

Status validate_passwd_path(const std::string& path, const std::string& what) {
    if (auto st = validate_abs_path(path, what); !st) return st;
    if (path.find(':') != std::string::npos) return bad(what, path, "must not contain ':'");
    return Ok{};
}

Status validate_env_name(const std::string& name) {
    const std::string rule = "use letters, digits and '_', not starting with a digit";
    if (name.empty() || name.size() > 255 || digit(name[0])) return bad("environment variable name", name, rule);
    for (char c : name) {
        if (!(alpha(c) || digit(c) || c == '_')) return bad("environment variable name", name, rule);
    }
    return Ok{};
}

Status parse_mode(const std::string& text, unsigned& out) {
    if (text.size() < 3 || text.size() > 4)
        return bad("mode", text, "use a 3- or 4-digit octal string such as \"0644\"");
    unsigned v = 0;
    for (char c : text) {
        if (c < '0' || c > '7') return bad("mode", text, "use a 3- or 4-digit octal string such as \"0644\"");
        v = v * 8 + static_cast<unsigned>(c - '0');
    }
    out = v;
    return Ok{};
}

}  // namespace nodeform::agent
