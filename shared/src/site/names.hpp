#pragma once
// Well-formedness of the names and addresses a site uses. Hand-written character checks (no std::regex).
// Each returns an empty string when valid, else a reason for a person.
#include <string>
#include <string_view>

#include "nodeform/site/naming.hpp"

namespace nodeform::site::detail {

std::string check_object_name(std::string_view name);  // spec/posture/preset/stack/check names
using site::check_hostname;                            // naming policy (public: nodeform/site/naming.hpp)
std::string check_domain(std::string_view domain);
std::string check_package_name(std::string_view name);                  // Debian policy: [a-z0-9][a-z0-9+.-]+
std::string check_unix_name(std::string_view name);                     // [a-z_][a-z0-9_-]{0,31}
std::string check_unit_name(std::string_view name);                     // systemd unit (suffix optional)
std::string check_absolute_path(std::string_view path);                 // absolute, normalized, no NUL
std::string check_ip(std::string_view text);                            // IPv4 or IPv6 literal
std::string check_cidr(std::string_view text, bool host_bits_allowed);  // ADDRESS/PREFIX
std::string check_env_name(std::string_view name);                      // [A-Za-z_][A-Za-z0-9_]*
std::string check_url(std::string_view url, bool https_only);
std::string check_fingerprint(std::string_view text);  // 32 hex bytes, colons optional
std::string check_timezone(std::string_view tz);
std::string check_locale(std::string_view locale);
std::string check_mode(std::string_view mode);           // 3-4 octal digits
std::string check_package_version(std::string_view v);   // Debian version chars, optional trailing '*'
std::string check_sysctl_name(std::string_view name);    // dot-separated parts of [A-Za-z0-9_-]
std::string check_module_name(std::string_view name);    // [A-Za-z0-9_-]{1,64}, not starting with '-'
std::string check_password_hash(std::string_view hash);  // crypt(3) "$id$..."; the message never shows the value

// "nginx" → "nginx.service"; names with a known unit suffix are kept.
std::string normalize_unit(std::string_view name);
// Text safe to quote in a message: printable ASCII, at most 64 characters.
std::string quote_for_message(std::string_view text);

}  // namespace nodeform::site::detail
