// dpkg status, passwd and group parsing; name validation.
#include <gtest/gtest.h>

#include "nodeform/agent/resources/system_db.hpp"
#include "nodeform/agent/validate.hpp"

namespace nodeform::agent {
namespace {

TEST(DpkgStatus, ParsesStanzasStatesAndArchitectures) {
    const std::string status =
        "Package: hello\nStatus: install ok installed\nPriority: optional\nArchitecture: amd64\nVersion: 2.10-3\n"
        "Description: example\n multi-line\n .\n description: with colon\n\n"
        "Package: telnet\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 0.17\n\n"
        "Package: broken\nStatus: install reinstreq half-configured\nArchitecture: all\nVersion: 1\n\n"
        "Package: libc6\nStatus: install ok installed\nArchitecture: i386\nVersion: 2.36\n\n"
        "Package: libc6\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2.36\n"
        "Package: garbage-without-blank-line\n";
    auto db = parse_dpkg_status(status);
    ASSERT_TRUE(db.count("hello"));
    EXPECT_TRUE(db["hello"].installed());
    EXPECT_EQ(db["hello"].version, "2.10-3");
    EXPECT_FALSE(db["telnet"].installed());
    EXPECT_FALSE(db["telnet"].present_on_disk());  // config-files only: nothing to purge but conffiles
    EXPECT_FALSE(db["broken"].installed());
    EXPECT_TRUE(db["broken"].present_on_disk());
    EXPECT_TRUE(db.count("libc6:i386"));
    EXPECT_TRUE(db.count("libc6:amd64"));
    EXPECT_FALSE(db.count("description"));
}

TEST(DpkgStatus, ToleratesEmptyAndMalformedInput) {
    EXPECT_TRUE(parse_dpkg_status("").empty());
    EXPECT_TRUE(parse_dpkg_status("\n\n\nnonsense\n: \nStatus: x\n").empty());
    auto db = parse_dpkg_status("Package: a\r\nStatus: install ok installed\r\n");
    EXPECT_TRUE(db["a"].installed());
}

TEST(Accounts, ParsesPasswdAndGroup) {
    auto users = parse_passwd(
        "root:x:0:0:root:/root:/bin/bash\n# comment\nbad line\nalice:x:1100:1100:Alice,,,:/home/alice:/bin/bash\n"
        "neg:x:-1:0::/:/bin/sh\n+nis\n");
    ASSERT_EQ(users.size(), 2u);
    EXPECT_EQ(users[1].name, "alice");
    EXPECT_EQ(users[1].uid, 1100u);
    EXPECT_EQ(users[1].home, "/home/alice");
    EXPECT_EQ(users[1].shell, "/bin/bash");
    AccountsDb db;
    db.users = users;
    db.groups = parse_group("root:x:0:\nops:x:2000:alice,bob\nsudo:x:27:bob\nempty:x:3000:\nbroken:x:zz:\n");
    ASSERT_EQ(db.groups.size(), 4u);
    EXPECT_EQ(db.group("ops")->gid, 2000u);
    EXPECT_EQ(db.supplementary_groups("bob"), (std::vector<std::string>{"ops", "sudo"}));
    EXPECT_EQ(db.supplementary_groups("alice"), (std::vector<std::string>{"ops"}));
    EXPECT_TRUE(db.supplementary_groups("carol").empty());
    EXPECT_EQ(db.group("broken"), nullptr);
    EXPECT_EQ(db.user("nobody"), nullptr);
}

TEST(Validate, AccountNames) {
    for (std::string ok : {"alice", "_svc", "a", "web-admin", "x1_2", "machine$"}) {
        EXPECT_TRUE(validate_account_name(ok).ok()) << ok;
    }
    for (const std::string& bad : std::vector<std::string>{"", "root;rm -rf /", "Alice", "1abc", "-rf", "a b", "a/b",
                                                           "a$b", "a\nb", std::string(33, 'a'), "al:ce", "--help"}) {
        auto st = validate_account_name(bad);
        EXPECT_FALSE(st.ok()) << bad;
    }
    auto st = validate_account_name("root;rm -rf /");
    EXPECT_EQ(st.message().rfind("invalid user name \"root;rm -rf /\": ", 0), 0u) << st.message();
    EXPECT_NE(validate_account_name("a\nb").message().find("\\x0a"), std::string::npos);
}

TEST(Validate, PackagesUnitsStacksPathsModes) {
    EXPECT_TRUE(validate_package_name("libstdc++6").ok());
    EXPECT_TRUE(validate_package_name("libc6:amd64").ok());
    EXPECT_FALSE(validate_package_name("-o").ok());
    EXPECT_FALSE(validate_package_name("Hello").ok());
    EXPECT_FALSE(validate_package_name("a").ok());
    EXPECT_FALSE(validate_package_name("hello;ls").ok());
    EXPECT_TRUE(validate_unit_name("getty@tty1.service").ok());
    EXPECT_FALSE(validate_unit_name("--now").ok());
    EXPECT_FALSE(validate_unit_name("a b.service").ok());
    EXPECT_TRUE(validate_stack_name("metrics").ok());
    EXPECT_FALSE(validate_stack_name("../etc").ok());
    EXPECT_TRUE(validate_abs_path("/etc/nginx/conf.d/site.conf").ok());
    EXPECT_FALSE(validate_abs_path("etc/passwd").ok());
    EXPECT_FALSE(validate_abs_path("/etc/../shadow").ok());
    EXPECT_FALSE(validate_abs_path("/etc//x").ok());
    EXPECT_FALSE(validate_abs_path("/etc/x\n").ok());
    EXPECT_FALSE(validate_passwd_path("/home/a:b", "home").ok());
    EXPECT_TRUE(validate_hostname("web-01").ok());
    EXPECT_FALSE(validate_hostname("-web").ok());
    EXPECT_TRUE(validate_domain("lab.example.net").ok());
    EXPECT_FALSE(validate_domain("lab..net").ok());
    EXPECT_TRUE(validate_env_name("DB_PASSWORD").ok());
    EXPECT_FALSE(validate_env_name("A=B").ok());
    unsigned mode = 0;
    EXPECT_TRUE(parse_mode("0640", mode).ok());
    EXPECT_EQ(mode, 0640u);
    EXPECT_TRUE(parse_mode("4755", mode).ok());
    EXPECT_EQ(mode, 04755u);
    EXPECT_FALSE(parse_mode("0999", mode).ok());
    EXPECT_FALSE(parse_mode("rw-r--r--", mode).ok());
}

}  // namespace
}  // namespace nodeform::agent
