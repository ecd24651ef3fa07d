// Authentication without a server: CIDR matching, bearer parsing, the limiter and the posture decision
// (the node_token case against a real SQLite store in a temp dir).
#include <gtest/gtest.h>

#include "fakes/memory_logger.hpp"
#include "nodeform/controller/api/auth.hpp"
#include "nodeform/controller/store/sqlite.hpp"
#include "nodeform/random.hpp"
#include "test_paths.hpp"

namespace nodeform::controller {
namespace {

using std::chrono::seconds;
using Steady = std::chrono::steady_clock::time_point;

const Steady kT0 = Steady(seconds(1000));

TEST(Cidr, MatchesNetworksOfBothFamilies) {
    EXPECT_TRUE(ip_in_cidr("10.1.2.3", "10.0.0.0/8"));
    EXPECT_FALSE(ip_in_cidr("11.1.2.3", "10.0.0.0/8"));
    EXPECT_TRUE(ip_in_cidr("192.168.1.7", "192.168.1.7"));  // a bare address is /32
    EXPECT_FALSE(ip_in_cidr("192.168.1.8", "192.168.1.7"));
    EXPECT_TRUE(ip_in_cidr("::ffff:10.1.2.3", "10.0.0.0/8"));  // IPv4-mapped clients of a dual-stack listener
    EXPECT_TRUE(ip_in_cidr("2001:db8::1", "2001:db8::/32"));
    EXPECT_FALSE(ip_in_cidr("2001:db9::1", "2001:db8::/32"));
    EXPECT_TRUE(ip_in_cidr("1.2.3.4", "0.0.0.0/0"));
    EXPECT_FALSE(ip_in_cidr("10.1.2.3", "2001:db8::/32"));  // across families
    for (const char* bad : {"10.0.0.0/33", "10.0.0.0/", "10.0.0.0/x", "10.0.0.0/1234", "not-an-ip/8"})
        EXPECT_FALSE(ip_in_cidr("10.1.2.3", bad)) << bad;
    EXPECT_FALSE(ip_in_cidr("garbage", "10.0.0.0/8"));
}

TEST(Bearer, TakesTheTokenOfTheBearerScheme) {
    EXPECT_EQ(bearer_token("Bearer abc"), "abc");
    EXPECT_EQ(bearer_token("bearer  abc  "), "abc");
    EXPECT_EQ(bearer_token("Basic abc"), "");
    EXPECT_EQ(bearer_token("Bearer "), "");
    EXPECT_EQ(bearer_token(""), "");
}

TEST(AuthLimiter, BlocksAfterTheLimitUntilTheWindowPasses) {
    AuthLimiter limiter(3, seconds(60));
    for (int i = 0; i < 3; ++i) {
        EXPECT_FALSE(limiter.blocked("10.0.0.1", kT0));
        limiter.failure("10.0.0.1", kT0);
    }
    EXPECT_TRUE(limiter.blocked("10.0.0.1", kT0 + seconds(59)));
    EXPECT_FALSE(limiter.blocked("10.0.0.2", kT0));  // per address
    EXPECT_FALSE(limiter.blocked("10.0.0.1", kT0 + seconds(60)));
}

site::Node node(site::AuthMethod method) {
    site::Node n;
    n.name = "web-01";
    n.auth.method = method;
    n.auth.allowed_cidrs = {"10.0.0.0/8"};
    n.auth.site_token = "site-secret";
    return n;
}

struct AuthFixture {
    test::TempDir dir;
    std::unique_ptr<Store> store;
    AuthLimiter limiter{5, seconds(60)};
    MemoryLogger logger;
    AuthFixture() {
        auto s = open_sqlite_store(sqlite::database_path(dir.path()));
        EXPECT_TRUE(s.ok());
        store = std::move(*s);
    }
    AuthOutcome check(const site::Node& n, const std::string& addr, const std::string& authorization) {
        return authenticate_node(n, addr, authorization, *store, limiter, kT0, logger);
    }
};

TEST(AuthenticateNode, NetworkPostureGoesByTheClientAddress) {
    AuthFixture f;
    EXPECT_TRUE(f.check(node(site::AuthMethod::network), "10.9.9.9", "").ok());
    auto refused = f.check(node(site::AuthMethod::network), "192.0.2.1", "Bearer anything");
    EXPECT_EQ(refused.status, 403);
    EXPECT_EQ(refused.code, "address_not_allowed");
}

TEST(AuthenticateNode, SiteTokenPostureComparesTheToken) {
    AuthFixture f;
    auto n = node(site::AuthMethod::site_token);
    EXPECT_TRUE(f.check(n, "127.0.0.1", "Bearer site-secret").ok());
    EXPECT_EQ(f.check(n, "127.0.0.1", "").code, "missing_credential");
    EXPECT_EQ(f.check(n, "127.0.0.1", "Bearer wrong").code, "invalid_credential");
    n.auth.site_token.clear();  // no token configured: nothing passes
    EXPECT_EQ(f.check(n, "127.0.0.1", "Bearer ").status, 401);
}

TEST(AuthenticateNode, NodeTokenPostureNeedsTheNodesOwnCredential) {
    AuthFixture f;
    auto random = make_system_random();
    auto enroll = [&](const std::string& identity) {
        std::string token = generate_secret(*random, "nfe_"), credential = generate_secret(*random, "nfc_");
        auto now = std::chrono::system_clock::now();
        EXPECT_TRUE(f.store->add_enrollment_token(identity, hash_secret(token), now + std::chrono::hours(1), now).ok());
        EXPECT_EQ(*f.store->enroll(identity, hash_secret(token), hash_secret(credential), now),
                  EnrollOutcome::enrolled);
        return credential;
    };
    std::string own = enroll("web-01"), other = enroll("web-02");
    auto n = node(site::AuthMethod::node_token);
    EXPECT_TRUE(f.check(n, "127.0.0.1", "Bearer " + own).ok());
    EXPECT_EQ(f.check(n, "127.0.0.1", "Bearer " + other).status, 403);
    EXPECT_EQ(f.check(n, "127.0.0.1", "Bearer nfc_unknown").code, "invalid_credential");
    EXPECT_EQ(f.check(n, "127.0.0.1", "").code, "missing_credential");
}

// A site credential TTL: rotation is asked for in its last third, the credential is refused once it is over;
// `token rotate` asks at any age; a previous credential in its grace passes without asking again.
TEST(AuthenticateNode, CredentialTtlAsksForRotationThenExpires) {
    AuthFixture f;
    const TimePoint t0 = TimePoint(std::chrono::hours(1000));
    ASSERT_TRUE(f.store->add_enrollment_token("web-01", hash_secret("t"), t0 + std::chrono::hours(1), t0).ok());
    ASSERT_EQ(*f.store->enroll("web-01", hash_secret("t"), hash_secret("nfc_a"), t0), EnrollOutcome::enrolled);
    auto n = node(site::AuthMethod::node_token);
    auto at = [&](std::chrono::seconds after, const std::string& credential, seconds ttl = seconds(900)) {
        return authenticate_node(n, "127.0.0.1", "Bearer " + credential, *f.store, f.limiter, kT0, f.logger,
                                 CredentialPolicy{ttl, t0 + after});
    };
    EXPECT_TRUE(at(seconds(599), "nfc_a").ok());
    EXPECT_FALSE(at(seconds(599), "nfc_a").rotate);
    EXPECT_TRUE(at(seconds(600), "nfc_a").rotate);
    EXPECT_EQ(at(seconds(600), "nfc_a").credential_hash, hash_secret("nfc_a"));
    EXPECT_EQ(at(seconds(900), "nfc_a").code, "expired_credential");
    EXPECT_FALSE(at(seconds(5000), "nfc_a", seconds(0)).rotate);  // no TTL: never expires
    ASSERT_TRUE(*f.store->request_rotation("web-01", t0));
    EXPECT_TRUE(at(seconds(1), "nfc_a").rotate);
    ASSERT_TRUE(*f.store->rotate_credential("web-01", hash_secret("nfc_a"), hash_secret("nfc_b"), t0 + seconds(2),
                                            t0 + seconds(60)));
    auto old = at(seconds(3), "nfc_a");
    EXPECT_TRUE(old.ok());
    EXPECT_FALSE(old.rotate);
    EXPECT_FALSE(at(seconds(3), "nfc_b").rotate);
    EXPECT_EQ(at(seconds(61), "nfc_a").code, "invalid_credential");
}

TEST(AuthenticateNode, RepeatedFailuresAreRateLimitedEvenWithTheRightToken) {
    AuthFixture f;
    auto n = node(site::AuthMethod::site_token);
    for (int i = 0; i < 5; ++i)
        EXPECT_EQ(f.check(n, "10.0.0.1", "Bearer wrong").status, 401);
    EXPECT_EQ(f.check(n, "10.0.0.1", "Bearer site-secret").status, 429);
    EXPECT_TRUE(f.check(n, "10.0.0.2", "Bearer site-secret").ok());
}

TEST(AuthenticateOperator, NeedsTheOperatorToken) {
    AuthLimiter limiter(5, seconds(60));
    std::string hash = hash_secret("nfo_operator");
    EXPECT_TRUE(authenticate_operator("127.0.0.1", "Bearer nfo_operator", hash, limiter, kT0).ok());
    EXPECT_EQ(authenticate_operator("127.0.0.1", "", hash, limiter, kT0).code, "missing_credential");
    EXPECT_EQ(authenticate_operator("127.0.0.1", "Bearer nfo_wrong", hash, limiter, kT0).code, "invalid_credential");
    EXPECT_EQ(authenticate_operator("127.0.0.2", "Bearer nfo_operator", "", limiter, kT0).status, 401);  // disabled
}

}  // namespace
}  // namespace nodeform::controller
