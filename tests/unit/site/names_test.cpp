// The hand-written format checks (shared/src/site/names.hpp).
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "../../../shared/src/site/names.hpp"

namespace nodeform::site::detail {
namespace {

using Check = std::function<std::string(const std::string&)>;

// check accepts (returns "") every value of good and rejects (returns a reason) every value of bad.
void expect_check(const Check& check, const std::vector<std::string>& good, const std::vector<std::string>& bad) {
    for (const auto& value : good)
        EXPECT_EQ(check(value), "") << "rejected: " << value;
    for (const auto& value : bad)
        EXPECT_NE(check(value), "") << "accepted: " << value;
}

TEST(Names, Hostname) {
    expect_check([](const std::string& s) { return check_hostname(s, 63); }, {"web-01", std::string(63, 'a')},
                 {"Web-01", "1web", "web-", "web_01", std::string(64, 'a')});
    EXPECT_NE(check_hostname("abcdefghi", 8), "");
}

TEST(Names, PackagesUsersUnits) {
    expect_check(check_package_name, {"libstdc++6", "docker.io"}, {"x", "-x", "Nginx", "a b"});
    expect_check(check_unix_name, {"_apt", "www-data"}, {"root;rm", std::string(33, 'a')});
    expect_check(check_unit_name, {"nginx", "getty@tty1.service", "fstrim.timer"}, {"nginx.servic", "a b", "-x"});
    EXPECT_EQ(normalize_unit("nginx"), "nginx.service");
    EXPECT_EQ(normalize_unit("fstrim.timer"), "fstrim.timer");
}

TEST(Names, Paths) {
    expect_check(check_absolute_path, {"/etc/motd", "/"},
                 {"etc/motd", "/etc/../x", "/etc/./x", "/etc//x", "/etc/x/", std::string("/etc/\0x", 7), "/etc/a\nb"});
}

TEST(Names, AddressesAndNetworks) {
    expect_check(check_ip, {"10.0.0.1", "::1", "fd00::1:2"}, {"10.0.0", "10.0.0.256", "010.0.0.1", "fd00:::1"});
    expect_check([](const std::string& s) { return check_cidr(s, true); }, {"10.20.0.11/24"},
                 {"10.0.0.0/33", "10.0.0.0", "10.0.0.0/", "10.0.0.0/08"});
    expect_check([](const std::string& s) { return check_cidr(s, false); }, {"10.20.0.0/24", "0.0.0.0/0", "fd00::/8"},
                 {"10.20.0.11/24"});
}

TEST(Names, Misc) {
    expect_check(check_domain, {"lab.example.net"}, {"lab..net", "-lab.net"});
    expect_check([](const std::string& s) { return check_url(s, true); }, {"https://pve:8006"},
                 {"http://pve:8006", "https://user:pw@pve"});
    expect_check(check_fingerprint, {std::string(64, 'a')}, {std::string(63, 'a')});
    expect_check(check_mode, {"0644", "755"}, {"0800"});
    expect_check(check_env_name, {"DB_PASSWORD"}, {"1X", "A-B"});
    expect_check(check_timezone, {"Europe/Berlin"}, {"../etc/passwd"});
    EXPECT_EQ(quote_for_message("a\nb"), "'a?b'");
}

}  // namespace
}  // namespace nodeform::site::detail
