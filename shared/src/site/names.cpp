#include "names.hpp"

#include <arpa/inet.h>

#include <array>
#include <cstdint>

namespace nodeform::site::detail {
namespace {

bool is_lower(char c) {
    return c >= 'a' && c <= 'z';
}
bool is_upper(char c) {
    return c >= 'A' && c <= 'Z';
}
bool is_digit(char c) {
    return c >= '0' && c <= '9';
}

constexpr std::array<std::string_view, 11> kUnitSuffixes = {".service", ".socket", ".timer",    ".target",
                                                            ".mount",   ".path",   ".slice",    ".scope",
                                                            ".device",  ".swap",   ".automount"};

bool has_unit_suffix(std::string_view name) {
    for (auto suffix : kUnitSuffixes) {
        if (name.size() > suffix.size() && name.substr(name.size() - suffix.size()) == suffix) return true;
    }
    return false;
}

}  // namespace

std::string quote_for_message(std::string_view text) {
    std::string out = "'";
    std::size_t n = 0;
    for (char c : text) {
        if (++n > 64) {
            out += "...";
            break;
        }
        unsigned char u = static_cast<unsigned char>(c);
        out += (u >= 0x20 && u < 0x7f) ? c : '?';
    }
    return out + "'";
}

std::string check_object_name(std::string_view name) {
    if (name.empty()) return "must not be empty";
    if (name.size() > 63) return "is longer than 63 characters";
    if (!is_lower(name[0]) && !is_digit(name[0])) return "must start with a lowercase letter or digit";
    for (char c : name) {
        if (!is_lower(c) && !is_digit(c) && c != '-' && c != '_' && c != '.') {
            return "may contain only lowercase letters, digits, '-', '_' and '.'";
        }
    }
    return {};
}

std::string check_domain(std::string_view domain) {
    if (domain.empty()) return "must not be empty";
    if (domain.size() > 253) return "is longer than 253 characters";
    std::size_t start = 0;
    while (start <= domain.size()) {
        std::size_t dot = domain.find('.', start);
        std::string_view label =
            domain.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
        if (label.empty()) return "has an empty label (check the dots)";
        if (label.size() > 63) return "has a label longer than 63 characters";
        if (label.front() == '-' || label.back() == '-') return "has a label starting or ending with '-'";
        for (char c : label) {
            if (!is_lower(c) && !is_digit(c) && c != '-')
                return "may contain only lowercase letters, digits, '-' and '.'";
        }
        if (dot == std::string_view::npos) break;
        start = dot + 1;
    }
    return {};
}

std::string check_package_name(std::string_view name) {
    if (name.size() < 2) return "is not a Debian package name (at least 2 characters)";
    if (!is_lower(name[0]) && !is_digit(name[0])) return "is not a Debian package name (must start with a-z or 0-9)";
    for (char c : name) {
        if (!is_lower(c) && !is_digit(c) && c != '+' && c != '-' && c != '.') {
            return "is not a Debian package name (only a-z, 0-9, '+', '-', '.')";
        }
    }
    return {};
}

std::string check_unix_name(std::string_view name) {
    if (name.empty()) return "must not be empty";
    if (name.size() > 32) return "is longer than 32 characters";
    if (!is_lower(name[0]) && name[0] != '_') return "must start with a lowercase letter or '_'";
    for (char c : name) {
        if (!is_lower(c) && !is_digit(c) && c != '_' && c != '-') {
            return "may contain only lowercase letters, digits, '_' and '-'";
        }
    }
    return {};
}

std::string check_unit_name(std::string_view name) {
    if (name.empty()) return "must not be empty";
    if (name.size() > 255) return "is longer than 255 characters";
    if (name[0] == '-' || name[0] == '.') return "must not start with '-' or '.'";
    std::size_t at = name.find('@');
    for (char c : name) {
        bool ok = is_lower(c) || is_upper(c) || is_digit(c) || c == ':' || c == '-' || c == '_' || c == '.' ||
                  c == '\\' || c == '@';
        if (!ok) return "is not a systemd unit name (letters, digits, ':', '-', '_', '.', '\\', '@')";
    }
    if (at != std::string_view::npos && name.find('@', at + 1) != std::string_view::npos) {
        return "is not a systemd unit name (more than one '@')";
    }
    std::size_t dot = name.rfind('.');
    if (dot != std::string_view::npos && dot + 1 < name.size() && !has_unit_suffix(name)) {
        std::string_view suffix = name.substr(dot);
        bool known = false;
        for (auto s : kUnitSuffixes)
            known = known || s == suffix;
        if (!known) return "has an unknown unit type '" + std::string(suffix) + "'";
    }
    if (dot != std::string_view::npos && dot + 1 == name.size()) return "must not end with '.'";
    return {};
}

std::string normalize_unit(std::string_view name) {
    if (has_unit_suffix(name)) return std::string(name);
    return std::string(name) + ".service";
}

std::string check_absolute_path(std::string_view path) {
    if (path.empty()) return "must not be empty";
    if (path.find('\0') != std::string_view::npos) return "contains a NUL byte";
    if (path.size() > 4096) return "is longer than 4096 characters";
    if (path[0] != '/') return "must be an absolute path (start with '/')";
    if (path.size() > 1 && path.back() == '/') return "must not end with '/'";
    std::size_t start = 1;
    while (start < path.size()) {
        std::size_t slash = path.find('/', start);
        std::string_view part =
            path.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
        if (part.empty()) return "must be normalized (no '//')";
        if (part == ".") return "must be normalized (no '.' component)";
        if (part == "..") return "must be normalized (no '..' component)";
        if (part.size() > 255) return "has a component longer than 255 characters";
        for (char c : part) {
            if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return "contains a control character";
        }
        if (slash == std::string_view::npos) break;
        start = slash + 1;
    }
    return {};
}

std::string check_ip(std::string_view text) {
    if (text.empty() || text.size() > 45) return "is not an IP address";
    std::string s(text);
    std::array<unsigned char, 16> buffer{};
    if (s.find(':') != std::string::npos) {
        if (inet_pton(AF_INET6, s.c_str(), buffer.data()) == 1) return {};
        return "is not an IPv6 address";
    }
    // inet_pton accepts only dotted-quad decimal for AF_INET; reject leading zeros explicitly (ambiguous octal).
    std::size_t start = 0;
    int parts = 0;
    while (start <= s.size()) {
        std::size_t dot = s.find('.', start);
        std::string part = s.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
        ++parts;
        if (part.empty() || part.size() > 3) return "is not an IPv4 address";
        for (char c : part) {
            if (!is_digit(c)) return "is not an IPv4 address";
        }
        if (part.size() > 1 && part[0] == '0') return "is not an IPv4 address (leading zero)";
        if (std::stoi(part) > 255) return "is not an IPv4 address (octet above 255)";
        if (dot == std::string::npos) break;
        start = dot + 1;
    }
    if (parts != 4) return "is not an IPv4 address (expected four octets)";
    return {};
}

std::string check_cidr(std::string_view text, bool host_bits_allowed) {
    std::size_t slash = text.find('/');
    if (slash == std::string_view::npos) return "must be ADDRESS/PREFIX, e.g. 10.0.0.0/24";
    std::string_view address = text.substr(0, slash);
    std::string_view prefix = text.substr(slash + 1);
    if (auto why = check_ip(address); !why.empty()) return why;
    bool v6 = address.find(':') != std::string_view::npos;
    int max = v6 ? 128 : 32;
    if (prefix.empty() || prefix.size() > 3) return "has an invalid prefix length";
    for (char c : prefix) {
        if (!is_digit(c)) return "has an invalid prefix length";
    }
    if (prefix.size() > 1 && prefix[0] == '0') return "has an invalid prefix length (leading zero)";
    int length = std::stoi(std::string(prefix));
    if (length > max) return "has a prefix length above " + std::to_string(max);
    if (!host_bits_allowed) {
        std::array<unsigned char, 16> bytes{};
        inet_pton(v6 ? AF_INET6 : AF_INET, std::string(address).c_str(), bytes.data());
        int total = v6 ? 16 : 4;
        for (int bit = length; bit < total * 8; ++bit) {
            if (bytes[bit / 8] & (0x80 >> (bit % 8))) return "has host bits set (use the network address)";
        }
    }
    return {};
}

std::string check_env_name(std::string_view name) {
    if (name.empty()) return "must not be empty";
    if (name.size() > 128) return "is longer than 128 characters";
    if (is_digit(name[0])) return "must not start with a digit";
    for (char c : name) {
        if (!is_lower(c) && !is_upper(c) && !is_digit(c) && c != '_') {
            return "may contain only letters, digits and '_'";
        }
    }
    return {};
}

std::string check_url(std::string_view url, bool https_only) {
    std::string_view rest;
    if (url.substr(0, 8) == "https://") {
        rest = url.substr(8);
    } else if (url.substr(0, 7) == "http://") {
        if (https_only) return "must start with https://";
        rest = url.substr(7);
    } else {
        return https_only ? "must start with https://" : "must start with http:// or https://";
    }
    std::size_t end = rest.find_first_of("/?#");
    std::string_view authority = rest.substr(0, end);
    if (authority.empty()) return "has no host";
    for (char c : url) {
        unsigned char u = static_cast<unsigned char>(c);
        if (u <= 0x20 || u == 0x7f) return "contains whitespace or a control character";
    }
    if (authority.find('@') != std::string_view::npos) return "must not contain credentials";
    return {};
}

std::string check_fingerprint(std::string_view text) {
    std::size_t hex = 0;
    for (std::size_t i = 0; i < text.size(); ++i) {
        char c = text[i];
        bool is_hex = is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
        if (is_hex) {
            ++hex;
        } else if (c != ':') {
            return "must be a SHA-256 fingerprint: 64 hex digits, optionally separated by ':'";
        }
    }
    if (hex != 64) return "must be a SHA-256 fingerprint: 64 hex digits (got " + std::to_string(hex) + ")";
    return {};
}

std::string check_timezone(std::string_view tz) {
    if (tz.empty()) return "must not be empty";
    if (tz.front() == '/' || tz.back() == '/') return "is not a time zone name like Europe/Berlin or Etc/UTC";
    for (char c : tz) {
        if (!is_lower(c) && !is_upper(c) && !is_digit(c) && c != '/' && c != '_' && c != '-' && c != '+') {
            return "is not a time zone name like Europe/Berlin or Etc/UTC";
        }
    }
    if (tz.find("..") != std::string_view::npos || tz.find("//") != std::string_view::npos) {
        return "is not a time zone name like Europe/Berlin or Etc/UTC";
    }
    return {};
}

std::string check_locale(std::string_view locale) {
    // LANGUAGE[_TERRITORY][.CODESET][@MODIFIER], or C / C.UTF-8 / POSIX.
    const std::string rule = "is not a locale name like en_US.UTF-8, de_DE.UTF-8 or C.UTF-8";
    if (locale.empty() || locale.size() > 64) return rule;
    for (char c : locale) {
        if (!is_lower(c) && !is_upper(c) && !is_digit(c) && c != '_' && c != '.' && c != '-' && c != '@') return rule;
    }
    if (!is_lower(locale.front()) && locale.front() != 'C' && locale != "POSIX") return rule;
    return {};
}

std::string check_mode(std::string_view mode) {
    if (mode.size() < 3 || mode.size() > 4) return "must be 3 or 4 octal digits, e.g. '0644'";
    for (char c : mode) {
        if (c < '0' || c > '7') return "must be 3 or 4 octal digits, e.g. '0644'";
    }
    return {};
}

std::string check_package_version(std::string_view v) {
    const char* rule =
        "is not a Debian version: letters, digits and '.+~:-', starting with a digit, optionally "
        "ending in '*' for a prefix ('2.10*')";
    std::string_view body = !v.empty() && v.back() == '*' ? v.substr(0, v.size() - 1) : v;
    if (body.empty() || body.size() > 127 || !is_digit(body.front())) return rule;
    for (char c : body) {
        if (!is_lower(c) && !is_upper(c) && !is_digit(c) && std::string_view(".+~:-").find(c) == std::string_view::npos)
            return rule;
    }
    return {};
}

std::string check_sysctl_name(std::string_view name) {
    const char* rule =
        "is not a kernel parameter: dot-separated parts of letters, digits, '_' and '-' "
        "(e.g. net.ipv4.ip_forward)";
    if (name.empty() || name.size() > 255 || name.front() == '.' || name.back() == '.' ||
        name.find("..") != std::string_view::npos)
        return rule;
    for (char c : name) {
        if (!is_lower(c) && !is_upper(c) && !is_digit(c) && c != '_' && c != '-' && c != '.') return rule;
    }
    return {};
}

std::string check_module_name(std::string_view name) {
    const char* rule = "is not a kernel module name: 1-64 letters, digits, '_' and '-', not starting with '-'";
    if (name.empty() || name.size() > 64 || name.front() == '-') return rule;
    for (char c : name) {
        if (!is_lower(c) && !is_upper(c) && !is_digit(c) && c != '_' && c != '-') return rule;
    }
    return {};
}

std::string check_password_hash(std::string_view hash) {
    const char* rule =
        "is not a crypt(3) hash such as $y$… or $6$… (make one with mkpasswd or openssl passwd -6; "
        "the value is not shown)";
    if (hash.size() < 3 || hash.size() > 1024 || hash.front() != '$') return rule;
    for (char c : hash) {
        if (!is_lower(c) && !is_upper(c) && !is_digit(c) &&
            std::string_view("./$=,+-").find(c) == std::string_view::npos)
            return rule;
    }
    return {};
}

}  // namespace nodeform::site::detail

namespace nodeform::site {

std::string check_hostname(std::string_view name, int max_length) {
    if (name.empty()) return "must not be empty";
    if (name.size() > static_cast<std::size_t>(max_length)) {
        return "is longer than " + std::to_string(max_length) + " characters (naming.max_length)";
    }
    if (!detail::is_lower(name[0])) return "must start with a lowercase letter";
    for (char c : name) {
        if (!detail::is_lower(c) && !detail::is_digit(c) && c != '-')
            return "may contain only lowercase letters, digits and '-'";
    }
    if (name.back() == '-') return "must not end with '-'";
    return {};
}

}  // namespace nodeform::site
