// validate / render through run_cli with string streams.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "nodeform/controller/cli.hpp"
#include "test_paths.hpp"

namespace nodeform::controller {
namespace {

struct CliRun {
    int code;
    std::string out;
    std::string err;
};

CliRun run(const std::vector<std::string>& args) {
    std::ostringstream out;
    std::ostringstream err;
    int code = run_cli(args, CliIo{out, err});
    return {code, out.str(), err.str()};
}

std::string example() {
    return test::source_dir() + "/examples/site";
}

TEST(CliValidate, AcceptsTheExample) {
    CliRun r = run({"validate", "--site", example()});
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_NE(r.out.find("valid: site 'lab', 5 nodes"), std::string::npos) << r.out;
}

TEST(CliValidate, JsonOutput) {
    CliRun r = run({"validate", "--site", example(), "--json"});
    ASSERT_EQ(r.code, 0) << r.err;
    auto doc = nlohmann::json::parse(r.out);
    EXPECT_EQ(doc["valid"], true);
    EXPECT_TRUE(doc["errors"].empty());
    EXPECT_EQ(doc["nodes"].size(), 5u);
}

TEST(CliValidate, RejectsInvalidWithLinesAndSummary) {
    test::TempDir temp;
    std::string dir = test::invalid_site("missing-posture", temp);
    CliRun r = run({"validate", "--site", dir});
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("specs/base.yaml:3:12: access.posture: posture 'nope' does not exist"), std::string::npos)
        << r.err;
    EXPECT_NE(r.err.find(": invalid: 1 error\n"), std::string::npos) << r.err;

    CliRun j = run({"validate", "--site", dir, "--json"});
    EXPECT_EQ(j.code, 1);
    auto doc = nlohmann::json::parse(j.out);
    EXPECT_EQ(doc["valid"], false);
    ASSERT_EQ(doc["errors"].size(), 1u);
    EXPECT_EQ(doc["errors"][0]["file"], "specs/base.yaml");
    EXPECT_EQ(doc["errors"][0]["line"], 3);
    EXPECT_EQ(doc["errors"][0]["column"], 12);
    EXPECT_EQ(doc["errors"][0]["field"], "access.posture");
}

TEST(CliValidate, UsageErrors) {
    EXPECT_EQ(run({"validate"}).code, 2);
    EXPECT_EQ(run({"validate", "--site"}).code, 2);
    EXPECT_EQ(run({"validate", "--site", example(), "extra"}).code, 2);
    EXPECT_EQ(run({"validate", "--bogus"}).code, 2);
    CliRun help = run({"validate", "--help"});
    EXPECT_EQ(help.code, 0);
    EXPECT_NE(help.out.find("usage: nodeform-controller validate"), std::string::npos);
}

TEST(CliRender, PrintsCanonicalRedactedJsonIdenticallyEachRun) {
    CliRun a = run({"render", "--site", example(), "mon-01"});
    CliRun b = run({"render", "--site", example(), "mon-01"});
    ASSERT_EQ(a.code, 0) << a.err;
    EXPECT_EQ(a.out, b.out);
    ASSERT_FALSE(a.out.empty());
    EXPECT_EQ(a.out.back(), '\n');
    auto doc = nlohmann::json::parse(a.out);
    EXPECT_EQ(doc.dump() + "\n", a.out);  // canonical: sorted keys, no whitespace
    EXPECT_EQ(doc["stacks"][0]["env"]["GRAFANA_ADMIN_PASSWORD"], "[REDACTED]");
    EXPECT_EQ(a.out.find("fake-grafana-password"), std::string::npos);

    CliRun revealed = run({"render", "--site", example(), "mon-01", "--reveal-secrets"});
    ASSERT_EQ(revealed.code, 0);
    EXPECT_NE(revealed.out.find("fake-grafana-password"), std::string::npos);
}

TEST(CliRender, Errors) {
    EXPECT_EQ(run({"render", "--site", example()}).code, 2);
    EXPECT_EQ(run({"render", "demo-01"}).code, 2);
    CliRun unknown = run({"render", "--site", example(), "nope-01"});
    EXPECT_EQ(unknown.code, 1);
    EXPECT_NE(unknown.err.find("no node 'nope-01'"), std::string::npos);
    test::TempDir temp;
    CliRun invalid = run({"render", "--site", test::invalid_site("missing-spec", temp), "node-01"});
    EXPECT_EQ(invalid.code, 1);
    EXPECT_NE(invalid.err.find("spec 'web' does not exist"), std::string::npos);
    EXPECT_EQ(run({"render", "--help"}).code, 0);
}

}  // namespace
}  // namespace nodeform::controller
