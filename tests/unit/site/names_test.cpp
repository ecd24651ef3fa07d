// The hand-written format checks (shared/src/site/names.hpp).
#include <gtest/gtest.h>

#include "../../../shared/src/site/names.hpp"

namespace nodeform::site::detail {
namespace {

TEST(Names, Hostname) {
    EXPECT_EQ(check_hostname("web-01", 63), "");
    EXPECT_NE(check_hostname("Web-01", 63), "");
    EXPECT_NE(check_hostname("1web", 63), "");
    EXPECT_NE(check_hostname("web-", 63), "");
    EXPECT_NE(check_hostname("web_01", 63), "");
    EXPECT_NE(check_hostname(std::string(64, 'a'), 63), "");
    EXPECT_EQ(check_hostname(std::string(63, 'a'), 63), "");
    EXPECT_NE(check_hostname("abcdefghi", 8), "");
}

TEST(Names, PackagesUsersUnits) {
    EXPECT_EQ(check_package_name("libstdc++6"), "");
    EXPECT_EQ(check_package_name("docker.io"), "");
    EXPECT_NE(check_package_name("x"), "");
    EXPECT_NE(check_package_name("-x"), "");
    EXPECT_NE(check_package_name("Nginx"), "");
    EXPECT_NE(check_package_name("a b"), "");
    EXPECT_EQ(check_unix_name("_apt"), "");
    EXPECT_EQ(check_unix_name("www-data"), "");
    EXPECT_NE(check_unix_name("root;rm"), "");
    EXPECT_NE(check_unix_name(std::string(33, 'a')), "");
    EXPECT_EQ(check_unit_name("nginx"), "");
    EXPECT_EQ(check_unit_name("getty@tty1.service"), "");
    EXPECT_EQ(check_unit_name("fstrim.timer"), "");
    EXPECT_NE(check_unit_name("nginx.servic"), "");
    EXPECT_NE(check_unit_name("a b"), "");
    EXPECT_NE(check_unit_name("-x"), "");
    EXPECT_EQ(normalize_unit("nginx"), "nginx.service");
    EXPECT_EQ(normalize_unit("fstrim.timer"), "fstrim.timer");
}

TEST(Names, Paths) {
    EXPECT_EQ(check_absolute_path("/etc/motd"), "");
    EXPECT_EQ(check_absolute_path("/"), "");
    EXPECT_NE(check_absolute_path("etc/motd"), "");
    EXPECT_NE(check_absolute_path("/etc/../x"), "");
    EXPECT_NE(check_absolute_path("/etc/./x"), "");
    EXPECT_NE(check_absolute_path("/etc//x"), "");
    EXPECT_NE(check_absolute_path("/etc/x/"), "");
    EXPECT_NE(check_absolute_path(std::string("/etc/\0x", 7)), "");
    EXPECT_NE(check_absolute_path("/etc/a\nb"), "");
}

TEST(Names, AddressesAndNetworks) {
    EXPECT_EQ(check_ip("10.0.0.1"), "");
    EXPECT_EQ(check_ip("::1"), "");
    EXPECT_EQ(check_ip("fd00::1:2"), "");
    EXPECT_NE(check_ip("10.0.0"), "");
    EXPECT_NE(check_ip("10.0.0.256"), "");
    EXPECT_NE(check_ip("010.0.0.1"), "");
    EXPECT_NE(check_ip("fd00:::1"), "");
    EXPECT_EQ(check_cidr("10.20.0.11/24", true), "");
    EXPECT_NE(check_cidr("10.20.0.11/24", false), "");
    EXPECT_EQ(check_cidr("10.20.0.0/24", false), "");
    EXPECT_EQ(check_cidr("0.0.0.0/0", false), "");
    EXPECT_EQ(check_cidr("fd00::/8", false), "");
    EXPECT_NE(check_cidr("10.0.0.0/33", true), "");
    EXPECT_NE(check_cidr("10.0.0.0", true), "");
    EXPECT_NE(check_cidr("10.0.0.0/", true), "");
    EXPECT_NE(check_cidr("10.0.0.0/08", true), "");
}

TEST(Names, Misc) {
    EXPECT_EQ(check_domain("lab.example.net"), "");
    EXPECT_NE(check_domain("lab..net"), "");
    EXPECT_NE(check_domain("-lab.net"), "");
    EXPECT_EQ(check_url("https://pve:8006", true), "");
    EXPECT_NE(check_url("http://pve:8006", true), "");
    EXPECT_NE(check_url("https://user:pw@pve", true), "");
    EXPECT_EQ(check_fingerprint(std::string(64, 'a')), "");
    EXPECT_NE(check_fingerprint(std::string(63, 'a')), "");
    EXPECT_EQ(check_mode("0644"), "");
    EXPECT_EQ(check_mode("755"), "");
    EXPECT_NE(check_mode("0800"), "");
    EXPECT_EQ(check_env_name("DB_PASSWORD"), "");
    EXPECT_NE(check_env_name("1X"), "");
    EXPECT_NE(check_env_name("A-B"), "");
    EXPECT_EQ(check_timezone("Europe/Berlin"), "");
    EXPECT_NE(check_timezone("../etc/passwd"), "");
    EXPECT_EQ(quote_for_message("a\nb"), "'a?b'");
}

}  // namespace
}  // namespace nodeform::site::detail
