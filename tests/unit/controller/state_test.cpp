// The state directory without a server: the operator token (0600, kept across starts) and the generated TLS.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>

#include "nodeform/atomic_file.hpp"
#include "nodeform/controller/api/state.hpp"
#include "nodeform/tls.hpp"
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

// Renewal: a certificate within cert_renew_before of its expiry is issued anew from the same CA (agents pin the
// CA, so they accept it); one that is not due, or the operator's own, is left alone; a key that does not match
// its certificate (a crash between the two writes) is healed.
TEST(PrepareState, RenewsTheServerCertificateFromTheSiteCaBeforeItExpires) {
    test::TempDir dir;
    auto random = make_system_random();
    ControllerConfig config;
    config.state = dir.path();
    config.listen_host = "127.0.0.1";
    auto prepared = prepare_state(config, "lab", *random);
    ASSERT_TRUE(prepared.ok()) << prepared.message();
    EXPECT_FALSE(prepared->renewed_tls) << "a fresh certificate is not due";
    const auto paths = tls::pki_paths(dir.path() + "/tls");
    const std::string first = *tls::certificate_file_fingerprint(paths.server_cert);
    const std::string ca = *read_file(paths.ca_cert);
    EXPECT_FALSE(*renew_server_certificate_if_due(config));  // 825 days left, 30 days asked

    config.cert_renew_before = std::chrono::seconds(900LL * 86400);  // 825 days left is now "due"
    auto renewed = renew_server_certificate_if_due(config);
    ASSERT_TRUE(renewed.ok()) << renewed.message();
    EXPECT_TRUE(*renewed);
    const std::string second = *tls::certificate_file_fingerprint(paths.server_cert);
    EXPECT_NE(second, first);
    EXPECT_EQ(*read_file(paths.ca_cert), ca) << "the CA is kept";
    EXPECT_TRUE(tls::certificate_matches_key(*read_file(paths.server_cert), *read_file(paths.server_key)));
    EXPECT_NE(read_file(paths.server_cert)->find(ca), std::string::npos) << "the chain ends with the same CA";
    EXPECT_EQ(mode_of(paths.server_key), 0600u);
    auto left = tls::certificate_lifetime_left(*read_file(paths.server_cert));
    ASSERT_TRUE(left.ok());
    EXPECT_GT(*left, std::chrono::seconds(800LL * 86400));

    // Restarting with the default window: prepare_state leaves it; a key/cert mismatch is renewed at start.
    ControllerConfig restart;
    restart.state = dir.path();
    restart.listen_host = "127.0.0.1";
    auto other = tls::generate_pki({});
    ASSERT_TRUE(other.ok());
    ASSERT_TRUE(write_file_atomic(paths.server_key, other->server_key_pem, WriteOptions{0600, true}).ok());
    auto healed = prepare_state(restart, "lab", *random);
    ASSERT_TRUE(healed.ok()) << healed.message();
    EXPECT_TRUE(healed->renewed_tls);
    EXPECT_TRUE(tls::certificate_matches_key(*read_file(paths.server_cert), *read_file(paths.server_key)));

    // The operator's own certificate is never touched.
    ControllerConfig own = restart;
    own.tls_cert = dir.path() + "/own.pem";
    own.tls_key = dir.path() + "/own.key";
    own.cert_renew_before = std::chrono::seconds(900LL * 86400);
    EXPECT_FALSE(*renew_server_certificate_if_due(own));
}

}  // namespace
}  // namespace nodeform::controller
