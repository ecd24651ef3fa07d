// The report boundary without a server: body → typed report → the store's record, and the refusals.
#include <gtest/gtest.h>

#include "nodeform/canonical_json.hpp"
#include "nodeform/controller/api/report_intake.hpp"

namespace nodeform::controller {
namespace {

nlohmann::json body() {
    return {
        {"report_id", "r-1"},
        {"identity", "web-01"},
        {"agent_version", "0.1.0"},
        {"spec_digest", "sha256:abc"},
        {"phase", "sustain"},
        {"trigger", "health"},
        {"mode", "check"},
        {"started_at", "2026-11-23T19:40:00.123Z"},
        {"finished_at", "2026-11-23T19:40:01.456Z"},
        {"platform_ready", true},
        {"counts", {{"total", 3}, {"changed", 1}, {"failed", 1}}},
        {"drift", nlohmann::json::array({{{"id", "file:/a"}}, {{"id", "file:/b"}}})},
        {"health", nlohmann::json::array({{{"name", "a"}, {"status", "fail"}}, {{"name", "b"}, {"status", "pass"}}})}};
}

const TimePoint kNow = TimePoint(std::chrono::seconds(1'800'000'000));

TEST(ReportIntake, AcceptedReportsBecomeTheStoresRecord) {
    protocol::ReportParser parser;
    auto in = accept_report(parser, body().dump(), "web-01", kNow);
    ASSERT_TRUE(in.ok()) << in.message;
    const ReportRecord& r = in.record;
    EXPECT_EQ(r.report_id, "r-1");
    EXPECT_EQ(r.identity, "web-01");
    EXPECT_EQ(r.received_at, kNow);
    EXPECT_EQ(r.phase, "sustain");
    EXPECT_EQ(r.trigger, "health");
    EXPECT_EQ(r.mode, "check");
    EXPECT_TRUE(r.platform_ready);
    EXPECT_EQ(r.changed, 1);
    EXPECT_EQ(r.failed, 1);
    EXPECT_EQ(r.drifted, 2);  // no drifted count: the drift entries
    EXPECT_EQ(r.health_failed, 1);
    // The body kept is the canonical JSON of what was validated; the same report again gives the same body.
    EXPECT_EQ(accept_report(parser, body().dump(2), "web-01", kNow).record.body, r.body);
    EXPECT_EQ(nlohmann::json::parse(r.body)["counts"]["skipped"], 0);
}

TEST(ReportIntake, RefusalsSayWhy) {
    protocol::ReportParser parser;
    auto not_json = accept_report(parser, "{\"report_id\":", "web-01", kNow);
    EXPECT_EQ(not_json.status, 400);
    EXPECT_EQ(not_json.code, "malformed_body");
    auto other = accept_report(parser, body().dump(), "web-02", kNow);
    EXPECT_EQ(other.status, 422);
    EXPECT_EQ(other.code, "invalid_report");
    EXPECT_NE(other.message.find("does not match the URL's node 'web-02'"), std::string::npos);
    auto b = body();
    b["counts"]["failed"] = 18446744073709551615ull;
    auto huge = accept_report(parser, b.dump(), "web-01", kNow);
    EXPECT_EQ(huge.status, 422);
    EXPECT_NE(huge.message.find("counts.failed: must be at most 9223372036854775807"), std::string::npos)
        << huge.message;
}

}  // namespace
}  // namespace nodeform::controller
