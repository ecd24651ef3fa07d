#include <gtest/gtest.h>

#include <sys/stat.h>
#include <filesystem>

#include "nodeform/args.hpp"
#include "nodeform/atomic_file.hpp"
#include "nodeform/base64.hpp"
#include "nodeform/canonical_json.hpp"
#include "nodeform/clock.hpp"
#include "nodeform/json_limits.hpp"
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

// During a CA rotation the seed pins two CAs ("OLD,NEW"); one stays the normal form; three, or junk, are refused.
TEST(Seed, CarriesOneOrTwoCaPins) {
    const std::string a(64, 'a'), b(64, 'b');
    auto yaml = [](const std::string& fp) {
        return parse_seed_yaml(
            "identity: web-01\ncontroller_url: https://c:1\ntoken: aaaaaaaaaaaaaaaaaaaa\n"
            "ca_fingerprint: " +
                fp + "\n",
            "seed.yaml");
    };
    EXPECT_TRUE(yaml(a).ok());
    auto two = yaml(a + "," + b);
    ASSERT_TRUE(two.ok()) << two.message();
    EXPECT_EQ(two->ca_fingerprint, a + "," + b);
    auto back = decode_seed_compact(encode_seed_compact(*two));
    ASSERT_TRUE(back.ok()) << back.message();
    EXPECT_EQ(back->ca_fingerprint, a + "," + b);
    EXPECT_FALSE(yaml(a + "," + b + "," + a).ok());
    EXPECT_FALSE(yaml(a + ",").ok());
    EXPECT_NE(yaml(a + ";" + b).message().find("ca_fingerprint"), std::string::npos);
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

// Every seed validate_seed accepts survives encode -> decode (found by fuzz_seed: a 3 KiB host name validated from
// seed.yaml, but its compact form exceeded the decoder's limit): the host and port are bounded as DNS and TCP are.
TEST(Seed, EveryValidSeedRoundTripsAndHostsAndPortsAreBounded) {
    const std::string token(256, 't'), two_pins = std::string(64, 'a') + "," + std::string(64, 'b');
    std::string longest_host;
    for (int i = 0; i < 4; ++i)
        longest_host += std::string(i == 3 ? 61 : 63, 'h') + (i == 3 ? "" : ".");
    ASSERT_EQ(longest_host.size(), 253u);
    Seed largest{std::string(63, 'n'), "https://" + longest_host + ":65535/", token, two_pins};
    ASSERT_TRUE(validate_seed(largest).ok()) << validate_seed(largest).message();
    auto again = decode_seed_compact(encode_seed_compact(largest));
    ASSERT_TRUE(again.ok()) << again.message();
    EXPECT_EQ(again->controller_url, largest.controller_url);
    const std::pair<std::string, std::string> refused[] = {
        {"https://" + longest_host + "h", "longer than 253"},
        {"https://" + std::string(64, 'h') + ".example.net", "label is longer than 63"},
        {"https://controller.example.net:0", "port must be 1-65535"},
        {"https://controller.example.net:65536", "port must be 1-65535"},
        {"https://[fd00::1]:99999", "port must be 1-65535"},
    };
    for (const auto& [url, reason] : refused) {
        auto st = validate_seed(Seed{"web-01", url, token, two_pins});
        ASSERT_FALSE(st.ok()) << url;
        EXPECT_NE(st.message().find("controller_url: "), std::string::npos) << st.message();
        EXPECT_NE(st.message().find(reason), std::string::npos) << st.message();
    }
    EXPECT_TRUE(validate_seed(Seed{"web-01", "https://[fd00::1]:8443", token, two_pins}).ok());
    EXPECT_TRUE(validate_seed(Seed{"web-01", "https://[fd00::1]", token, two_pins}).ok());
}

// http:// only to loopback (docs/seed.md), in every way a seed is made or read.
TEST(Seed, PlainHttpOnlyToLoopback) {
    const std::string fp(64, 'a');
    const std::string token(20, 't');
    for (const char* url : {"http://127.0.0.1:8080", "http://127.9.9.9", "http://localhost:80/", "http://[::1]:8080"}) {
        Seed seed{"dev-01", url, token, ""};
        EXPECT_TRUE(validate_seed(seed).ok()) << url << ": " << validate_seed(seed).message();
        EXPECT_TRUE(decode_seed_compact(encode_seed_compact(seed)).ok()) << url;
    }
    for (const char* url : {"http://10.9.9.9:8080", "http://controller.example.net", "http://128.0.0.1",
                            "http://localhost.example.net", "http://[::2]", "http://127.0.0.1.nip.io"}) {
        Seed seed{"dev-01", url, token, fp};
        auto st = validate_seed(seed);
        ASSERT_FALSE(st.ok()) << url;
        EXPECT_NE(st.message().find("controller_url: plain http:// is allowed only to a loopback address"),
                  std::string::npos)
            << st.message();
        // decode: the compact form of such a seed (made by hand) is refused too, and so is its YAML form
        EXPECT_FALSE(decode_seed_compact(encode_seed_compact(seed)).ok()) << url;
        auto yaml = parse_seed_yaml("identity: dev-01\ncontroller_url: " + std::string(url) + "\ntoken: " + token +
                                        "\nca_fingerprint: " + fp + "\n",
                                    "seed.yaml");
        ASSERT_FALSE(yaml.ok()) << url;
        EXPECT_NE(yaml.message().find("seed.yaml: controller_url"), std::string::npos) << yaml.message();
    }
    EXPECT_TRUE(validate_seed({"web-01", "https://10.9.9.9:8443", token, fp}).ok());
}

TEST(DocumentLimits, JsonDepthAndSizeAreBoundedAtParseTime) {
    auto nested = [](std::size_t depth, char open, char close) {
        return std::string(depth, open) + std::string(depth, close);
    };
    EXPECT_TRUE(parse_json_bounded(nested(kMaxDocumentDepth, '[', ']'), {1 << 20}).ok());
    for (std::size_t depth : {kMaxDocumentDepth + 1, std::size_t{100000}}) {
        auto deep = parse_json_bounded(nested(depth, '[', ']'), {1 << 20});
        ASSERT_FALSE(deep.ok());
        EXPECT_EQ(deep.message(), "nested deeper than 128 levels");
    }
    std::string objects;
    for (int i = 0; i < 200; ++i)
        objects += "{\"a\":";
    objects += "1" + std::string(200, '}');
    EXPECT_FALSE(parse_json_bounded(objects, {1 << 20}).ok());
    // Brackets inside strings (with escaped quotes) are text, not nesting.
    std::string in_string = "[\"" + std::string(1000, '[') + "\\\"" + std::string(1000, '{') + "\"]";
    EXPECT_TRUE(parse_json_bounded(in_string, {1 << 20}).ok());
    auto big = parse_json_bounded("[1, 2, 3]", {8});
    ASSERT_FALSE(big.ok());
    EXPECT_NE(big.message().find("larger than 8 bytes"), std::string::npos);
    auto bad = parse_json_bounded("{\"a\":", {1 << 20});
    ASSERT_FALSE(bad.ok());
    EXPECT_EQ(bad.message().rfind("not valid JSON: ", 0), 0u) << bad.message();
    EXPECT_EQ(json_nesting_depth("[[1],[[2]]]", 10), 3u);
}

// A number JSON allows but a double cannot hold is an error, not an exception (fuzz_report found 1e400 escaping).
TEST(DocumentLimits, NumbersOutOfRangeAreAnErrorNotAnException) {
    for (const char* text : {"1e400", "[-1e400]", "{\"a\": 1e99999}"}) {
        auto j = parse_json_bounded(text, {1024});
        ASSERT_FALSE(j.ok()) << text;
        EXPECT_NE(j.message().find("not valid JSON"), std::string::npos) << j.message();
    }
}

TEST(DocumentLimits, YamlDepthAndSizeAreBoundedAtParseTime) {
    std::string flow = std::string(kMaxDocumentDepth + 1, '[') + std::string(kMaxDocumentDepth + 1, ']');
    auto deep = load_yaml_bounded(flow, {1 << 20});
    ASSERT_FALSE(deep.ok());
    EXPECT_NE(deep.message().find("nested deeper than 128 levels"), std::string::npos) << deep.message();
    std::string block;
    for (std::size_t i = 0; i <= kMaxDocumentDepth; ++i)
        block += std::string(i * 2, ' ') + "k:\n";
    EXPECT_FALSE(load_yaml_bounded(block, {1 << 20}).ok());
    auto huge = load_yaml_bounded(std::string(100000, '['), {1 << 20});  // yaml-cpp's own guard, or ours
    EXPECT_FALSE(huge.ok());
    EXPECT_TRUE(load_yaml_bounded("a: [1, {b: 2}]\n", {1 << 20}).ok());
    EXPECT_FALSE(load_yaml_bounded("a: 1\n", {3}).ok());
    auto two = load_yaml_bounded("a: 1\n---\nb: 2\n", {1 << 20});
    ASSERT_FALSE(two.ok());
    EXPECT_NE(two.message().find("more than one YAML document"), std::string::npos);
}

// Each of the seed's parsers holds to the document limits.
TEST(DocumentLimits, SeedParsersRefuseDeepNesting) {
    std::string deep = std::string(2000, '[') + std::string(2000, ']');
    auto compact = decode_seed_compact("nf1:" + base64url_encode("{\"i\":" + deep + "}"));
    ASSERT_FALSE(compact.ok());
    auto yaml = parse_seed_yaml("identity: " + deep + "\n", "seed.yaml");
    ASSERT_FALSE(yaml.ok());
    EXPECT_NE(yaml.message().find("seed.yaml"), std::string::npos);
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

// Every field out of its range is refused, years beyond what system_clock can hold among them (fuzz_report found
// a year 9999 overflowing the nanosecond conversion).
TEST(Clock, Rfc3339RefusesFieldsOutOfRange) {
    std::chrono::system_clock::time_point back;
    for (const char* text : {"9999-01-01T00:00:00Z", "2263-01-01T00:00:00Z", "1969-12-31T23:59:59Z",
                             "-999-01-01T00:00:00Z", "2026-01-01T-1:00:00Z", "2026-01-01T00:-1:00Z",
                             "2026-01-01T00:00:-1Z", "2026-01-01T00:00:00.-01Z", "2026-01-32T00:00:00Z"})
        EXPECT_FALSE(parse_rfc3339(text, back)) << text;
    EXPECT_TRUE(parse_rfc3339("2200-12-31T23:59:59.999Z", back));
}

}  // namespace
}  // namespace nodeform
