#pragma once
// Parsers for the system databases the agent reads directly instead of running a process per item:
// dpkg's status file, /etc/passwd, /etc/shadow and /etc/group. Malformed lines are skipped, never fatal.
#include <sys/types.h>

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace nodeform::agent {

struct DpkgPackage {
    std::string name;
    std::string architecture;  // "amd64", "all", ...
    std::string version;
    std::string want;   // install | hold | deinstall | purge | unknown
    std::string state;  // not-installed | config-files | half-installed | unpacked | half-configured |
                        // triggers-awaited | triggers-pending | installed
    bool installed() const {
        return state == "installed" || state == "triggers-pending" || state == "triggers-awaited";
    }
    // Anything beyond "not-installed" / "config-files": something to purge for state: absent.
    bool present_on_disk() const { return !state.empty() && state != "not-installed" && state != "config-files"; }
};

// Parses /var/lib/dpkg/status (RFC 822-style stanzas). Keyed by "name" and also "name:arch".
std::map<std::string, DpkgPackage> parse_dpkg_status(std::string_view text);

struct PasswdEntry {
    std::string name;
    uid_t uid = 0;
    gid_t gid = 0;
    std::string gecos;
    std::string home;
    std::string shell;
};

struct GroupEntry {
    std::string name;
    gid_t gid = 0;
    std::vector<std::string> members;
};

// One line of /etc/shadow: the password field ("!" first = locked) and the account expiry (days since 1970, "" none).
struct ShadowEntry {
    std::string name;
    std::string password;
    std::string expire;
};

std::vector<PasswdEntry> parse_passwd(std::string_view text);
// Lines with other than 9 fields are skipped.
std::vector<ShadowEntry> parse_shadow(std::string_view text);
std::vector<GroupEntry> parse_group(std::string_view text);

struct AccountsDb {
    std::vector<PasswdEntry> users;
    std::vector<GroupEntry> groups;
    const PasswdEntry* user(const std::string& name) const;
    const GroupEntry* group(const std::string& name) const;
    const GroupEntry* group_by_gid(gid_t gid) const;
    // Supplementary groups of user (from the member lists), in /etc/group order.
    std::vector<std::string> supplementary_groups(const std::string& user) const;
};

}  // namespace nodeform::agent
