#include <gtest/gtest.h>

#include <sys/stat.h>
#include <filesystem>

#include "nodeform/args.hpp"
#include "nodeform/atomic_file.hpp"
#include "nodeform/base64.hpp"
#include "nodeform/canonical_json.hpp"
#include "nodeform/clock.hpp"
#include "nodeform/process.hpp"
#include "nodeform/seed.hpp"
#include "test_paths.hpp"

namespace nodeform {
namespace {

TEST(CanonicalJson, SortsKeysAndIsStable) {
    auto a = nlohmann::json::parse(R"({"b":1,"a":{"d":[1,2],"c":"x"}})");
    auto b = nlohmann::json::parse(R"({ "a": {"c":"x", "d":[1,2]}, "b":1 })");
    EXPECT_EQ(canonical_dump(a), R"({"a":{"c":"x","d":[1,2]},"b":1})");
    EXPECT_EQ(canonical_digest(a), canonical_digest(b));
    EXPECT_NE(canonical_digest(a), canonical_digest(nlohmann::json::parse(R"({"b":2})")));
}

TEST(CanonicalJson, Sha256KnownVector) {
    EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Base64, RoundTripsAllLengths) {
    std::string data;
    for (int i = 0; i < 40; ++i) {
        EXPECT_EQ(base64_decode(base64_encode(data)).value(), data);
        EXPECT_EQ(base64_decode(base64url_encode(data)).value(), data);
        data.push_back(static_cast<char>(i * 37));
    }
    EXPECT_EQ(base64_encode("foobar"), "Zm9vYmFy");
    EXPECT_EQ(base64_encode("fo"), "Zm8=");
    EXPECT_FALSE(base64_decode("a$bc").has_value());
}

TEST(Seed, CompactRoundTripFitsSmbiosBudget) {
    Seed seed{"web-01", "https://controller.example.net:8443", std::string(43, 'A'), std::string(64, 'a')};
    std::string text = encode_seed_compact(seed);
    EXPECT_LE(text.size(), 300u);
    auto back = decode_seed_compact(text + "\n");
    ASSERT_TRUE(back.ok()) << back.message();
    EXPECT_EQ(back->identity, "web-01");
    EXPECT_EQ(back->token, seed.token);
}

TEST(Seed, RejectsMalformedWithFieldName) {
    auto r = parse_seed_yaml(
        "identity: Web_01\ncontroller_url: https://c:1\ntoken: aaaaaaaaaaaaaaaaaaaa\n"
        "ca_fingerprint: " +
            std::string(64, 'a') + "\n",
        "seed.yaml");
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.message().find("seed.yaml: identity"), std::string::npos) << r.message();
    auto unknown = parse_seed_yaml("identiti: x\n", "seed.yaml");
    ASSERT_FALSE(unknown.ok());
    EXPECT_NE(unknown.message().find("unknown key"), std::string::npos);
    EXPECT_FALSE(decode_seed_compact("garbage").ok());
}

TEST(AtomicFile, WritesContentAndMode) {
    test::TempDir dir;
    std::string path = dir.path() + "/sub/file.txt";
    ASSERT_TRUE(write_file_atomic(path, "hello", {.mode = 0600, .create_parents = true}).ok());
    EXPECT_EQ(read_file(path).value(), "hello");
    struct stat st {};
    ASSERT_EQ(stat(path.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0600u);
    ASSERT_TRUE(write_file_atomic(path, "again", {.mode = 0644}).ok());
    EXPECT_EQ(read_file(path).value(), "again");
    EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path() + "/sub"), {}), 1);
    EXPECT_FALSE(write_file_atomic(dir.path() + "/missing/x", "y").ok());
}

TEST(Args, ParsesOptionsFlagsAndPositionals) {
    ArgSpec spec{{"site", "state"}, {"json"}};
    auto r = parse_args({"--site", "a", "--state=b", "--json", "web-01"}, spec);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->get("site"), "a");
    EXPECT_EQ(r->get("state"), "b");
    EXPECT_TRUE(r->has("json"));
    EXPECT_EQ(r->positionals, std::vector<std::string>{"web-01"});
    EXPECT_FALSE(parse_args({"--sit", "a"}, spec).ok());
    EXPECT_FALSE(parse_args({"--site"}, spec).ok());
    EXPECT_FALSE(parse_args({"--json=1"}, spec).ok());
}

TEST(Redaction, ReplacesEverySecret) {
    EXPECT_EQ(redact_secrets("token=abc and abc", {"abc"}), "token=[REDACTED] and [REDACTED]");
    EXPECT_EQ(describe_command({"useradd", "-p", "s3cret", "a b"}, {"s3cret"}), "useradd -p [REDACTED] 'a b'");
}

TEST(Clock, Rfc3339RoundTrip) {
    auto t = std::chrono::system_clock::time_point(std::chrono::milliseconds(1795000000123));
    std::string text = format_rfc3339(t);
    EXPECT_EQ(text, "2026-11-18T11:06:40.123Z");
    std::chrono::system_clock::time_point back;
    ASSERT_TRUE(parse_rfc3339(text, back));
    EXPECT_EQ(back, t);
    EXPECT_FALSE(parse_rfc3339("2026-13-01T00:00:00Z", back));
}

}  // namespace
}  // namespace nodeform
