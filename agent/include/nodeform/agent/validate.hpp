#pragma once
// Checks on every external string before it can reach a command line or a path. Each returns Ok or
// an error naming the value and the rule it broke (the value is quoted as given, control characters escaped).
#include <optional>

#include <nlohmann/json_fwd.hpp>
#include <string>

#include "nodeform/result.hpp"

namespace nodeform::agent {

// POSIX-portable account name, as Debian's useradd accepts by default: [a-z_][a-z0-9_-]*[$]?, ≤ 32.
Status validate_account_name(const std::string& name, const std::string& what = "user name");
// The largest user or group id: (uid_t)-1 = 4294967295 means "leave unchanged" to chown(2).
inline constexpr unsigned long kMaxAccountId = 4294967294UL;
// A file's owner or group: an account name, or a decimal id in 0..kMaxAccountId.
Status validate_owner(const std::string& value, const std::string& what);
// The id of an all-digit owner or group within 0..kMaxAccountId; nullopt for a name or an id out of range.
std::optional<unsigned> numeric_account_id(const std::string& value);
// Debian package name [a-z0-9][a-z0-9+.-]+ with an optional ":ARCH" qualifier.
Status validate_package_name(const std::string& name);
// systemd unit name: [A-Za-z0-9:_.@\-]+, not starting with '-', ≤ 255.
Status validate_unit_name(const std::string& name);
// Stack name: [a-z0-9][a-z0-9_-]*, ≤ 63 (a compose project name and a directory name).
Status validate_stack_name(const std::string& name);
// Hostname label: [a-z0-9]([a-z0-9-]*[a-z0-9])?, ≤ 63; domain: dot-separated labels, ≤ 253 in total.
Status validate_hostname(const std::string& name);
Status validate_domain(const std::string& name);
// Absolute path without control characters, "." or ".." components or doubled slashes; ≤ 4096.
Status validate_abs_path(const std::string& path, const std::string& what = "path");
// An absolute path that can stand in /etc/passwd (validate_abs_path and no ':').
Status validate_passwd_path(const std::string& path, const std::string& what);
// Environment variable name for a stack's .env: [A-Za-z_][A-Za-z0-9_]*.
Status validate_env_name(const std::string& name);
// IANA time zone name: letters, digits, '_', '-', '+' and '/', no empty, '.' or '..' parts; ≤ 128.
Status validate_timezone_name(const std::string& zone);
Status validate_locale_name(const std::string& name);
// A sysctl key: dot-separated parts of [a-z0-9_-] (as under /proc/sys), ≤ 255.
Status validate_sysctl_name(const std::string& name);
// A kernel module name: [A-Za-z0-9_-], ≤ 64.
Status validate_module_name(const std::string& name);
// A 3- or 4-digit octal mode string ("0644"); out receives the value.
Status parse_mode(const std::string& text, unsigned& out);
// A received spec against the resolved-spec schema (the controller's own contract, shared/defs/): unknown or
// wrong-typed fields are errors, one line "SOURCE: FIELD: reason" per problem.
Status check_spec_schema(const nlohmann::json& spec, const std::string& source);
// The value quoted for a message, control characters and non-ASCII escaped, cut at 80 characters.
std::string quote_for_message(const std::string& value);

}  // namespace nodeform::agent
