// The state directory without a server: the operator token (0600, kept across starts) and the generated TLS.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>

#include "nodeform/atomic_file.hpp"
#include "nodeform/controller/api/state.hpp"
#include "test_paths.hpp"

namespace nodeform::controller {
namespace {

mode_t mode_of(const std::string& path) {
    struct stat st {};
    EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
    return st.st_mode & 07777;
}

TEST(PrepareState, CreatesTheOperatorTokenOnceAndKeepsIt) {
    test::TempDir dir;
    auto random = make_system_random();
    ControllerConfig config;
    config.state = dir.path() + "/state";
    config.plain_http = true;
    auto first = prepare_state(config, "lab", *random);
    ASSERT_TRUE(first.ok()) << first.message();
    EXPECT_TRUE(first->generated_operator_token);
    EXPECT_EQ(first->operator_token.rfind("nfo_", 0), 0u);
    EXPECT_EQ(mode_of(config.state), 0700u);
    EXPECT_EQ(mode_of(config.state + "/operator-token"), 0600u);
    EXPECT_TRUE(first->ca_fingerprint.empty());  // plain HTTP: no TLS made
    EXPECT_FALSE(std::filesystem::exists(config.state + "/tls"));
    auto again = prepare_state(config, "lab", *random);
    ASSERT_TRUE(again.ok());
    EXPECT_FALSE(again->generated_operator_token);
    EXPECT_EQ(again->operator_token, first->operator_token);
}

TEST(PrepareState, RefusesATooShortTokenAndHalfATlsPair) {
    test::TempDir dir;
    auto random = make_system_random();
    ControllerConfig config;
    config.state = dir.path();
    config.plain_http = true;
    ASSERT_TRUE(write_file_atomic(dir.path() + "/operator-token", "short\n", WriteOptions{0600, true}).ok());
    auto short_token = prepare_state(config, "lab", *random);
    ASSERT_FALSE(short_token.ok());
    EXPECT_NE(short_token.message().find("too short"), std::string::npos);

    test::TempDir other;
    ControllerConfig tls;
    tls.state = other.path();
    tls.tls_cert = other.path() + "/cert.pem";
    auto half = prepare_state(tls, "lab", *random);
    ASSERT_FALSE(half.ok());
    EXPECT_NE(half.message().find("go together"), std::string::npos);
}

TEST(PrepareState, GeneratesTheSiteCaAndServerCertificate) {
    test::TempDir dir;
    auto random = make_system_random();
    ControllerConfig config;
    config.state = dir.path();
    config.listen_host = "127.0.0.1";
    auto prepared = prepare_state(config, "lab", *random);
    ASSERT_TRUE(prepared.ok()) << prepared.message();
    EXPECT_TRUE(prepared->generated_tls);
    EXPECT_EQ(prepared->ca_fingerprint.size(), 64u);
    EXPECT_EQ(config.tls_cert, dir.path() + "/tls/server.pem");
    EXPECT_EQ(mode_of(config.tls_key), 0600u);
    ControllerConfig again_config;
    again_config.state = dir.path();
    auto again = prepare_state(again_config, "lab", *random);
    ASSERT_TRUE(again.ok());
    EXPECT_FALSE(again->generated_tls);  // kept, not regenerated
    EXPECT_EQ(again->ca_fingerprint, prepared->ca_fingerprint);
}

}  // namespace
}  // namespace nodeform::controller
