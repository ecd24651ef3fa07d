// The report protocol of docs/protocol.md through the shared type: what parses, what is refused (with the
// field named), the stamp, and that a count the store cannot keep is refused instead of wrapping.
#include <gtest/gtest.h>

#include <limits>

#include "nodeform/random.hpp"
#include "nodeform/report.hpp"

namespace nodeform::protocol {
namespace {

using Json = nlohmann::json;

Json valid() {
    return Json::parse(R"({
      "report_id": "6f1c2c1e-3a4b-4c5d-8e9f-0a1b2c3d4e5f", "identity": "web-01", "agent_version": "0.1.0",
      "spec_digest": "sha256:abc", "phase": "converging", "trigger": "run", "mode": "apply",
      "started_at": "2026-11-23T19:40:00.123Z", "finished_at": "2026-11-23T19:40:01.456Z",
      "platform_ready": false,
      "counts": {"total": 12, "unchanged": 9, "changed": 2, "failed": 1, "skipped": 0, "drifted": 0},
      "resources": [{"id": "package:nginx", "type": "package", "status": "changed", "duration_ms": 5321,
                     "message": "installed", "changes": [{"field": "state", "old": "absent", "new": "present"}]}],
      "drift": [{"id": "file:/etc/motd", "changes": [{"field": "mode", "old": "0600", "new": "0644"}]}],
      "health": [{"name": "nginx", "type": "systemd_unit", "status": "fail", "message": "inactive",
                  "checked_at": "2026-11-23T19:40:01.400Z"}],
      "spool_dropped": 3, "apply_request": "apply-1796380000-9f1c02ab"
    })");
}

// The error for body, or "" when it parses.
std::string error_of(const Json& body) {
    auto r = ReportParser().parse(body);
    return r.ok() ? "" : r.message();
}

TEST(ReportProtocol, TheDocumentedExampleParsesIntoTheTypedReport) {
    auto r = ReportParser().parse(valid());
    ASSERT_TRUE(r.ok()) << r.message();
    EXPECT_EQ(r->identity, "web-01");
    EXPECT_EQ(r->phase, Phase::converging);
    EXPECT_EQ(r->counts.changed, 2);
    EXPECT_EQ(r->counts.failed, 1);
    ASSERT_EQ(r->resources.size(), 1u);
    EXPECT_EQ(r->resources[0].status, ResourceStatus::changed);
    EXPECT_EQ(r->resources[0].duration_ms, 5321);
    EXPECT_EQ(r->resources[0].changes.at(0).new_value, "present");
    EXPECT_EQ(r->drift.at(0).id, "file:/etc/motd");
    EXPECT_EQ(r->health_failed(), 1);
    EXPECT_EQ(r->spool_dropped, 3);
    EXPECT_EQ(r->apply_request, "apply-1796380000-9f1c02ab");
    EXPECT_EQ(to_json(*r), valid());  // the wire format round-trips
}

TEST(ReportProtocol, OptionalPartsMayBeAbsentAndUnknownKeysAreIgnored) {
    Json body = valid();
    body.erase("resources");
    body.erase("drift");
    body.erase("health");
    body.erase("spool_dropped");
    body.erase("apply_request");
    body["counts"] = {{"total", 1}};
    body["future_field"] = {{"x", 1}};
    auto r = ReportParser().parse(body);
    ASSERT_TRUE(r.ok()) << r.message();
    EXPECT_EQ(r->counts.total, 1);
    EXPECT_EQ(r->counts.changed, 0);
    EXPECT_TRUE(r->resources.empty());
    EXPECT_FALSE(r->spool_dropped.has_value());
    EXPECT_FALSE(to_json(*r).contains("future_field"));
    EXPECT_FALSE(to_json(*r).contains("apply_request"));
}

TEST(ReportProtocol, RefusalsNameTheField) {
    auto with = [](const char* pointer, Json value) {
        Json body = valid();
        body[Json::json_pointer(pointer)] = std::move(value);
        return body;
    };
    EXPECT_NE(error_of(with("/phase", "dancing")).find("phase: must be one of"), std::string::npos);
    EXPECT_NE(error_of(with("/platform_ready", "yes")).find("platform_ready: expected boolean"), std::string::npos);
    EXPECT_NE(error_of(with("/counts/failed", -1)).find("counts.failed: must be at least 0"), std::string::npos);
    EXPECT_NE(error_of(with("/counts/failed", 1.5)).find("counts.failed: expected integer"), std::string::npos);
    EXPECT_NE(error_of(with("/resources/0/status", "odd")).find("resources[0].status"), std::string::npos);
    EXPECT_NE(error_of(with("/health/0/status", "meh")).find("health[0].status"), std::string::npos);
    EXPECT_NE(error_of(with("/report_id", "a b")).find("report_id: must be 1-128"), std::string::npos);
    EXPECT_NE(error_of(with("/report_id", std::string(129, 'a'))).find("report_id"), std::string::npos);
    EXPECT_NE(error_of(with("/apply_request", "x\r\nSet-Cookie: a")).find("apply_request: must be 1-128"),
              std::string::npos);
    EXPECT_NE(error_of(with("/apply_request", std::string(129, 'a'))).find("apply_request"), std::string::npos);
    EXPECT_NE(error_of(with("/started_at", "yesterday")).find("started_at: must be an RFC 3339"), std::string::npos);
    Json missing = valid();
    missing.erase("counts");
    EXPECT_NE(error_of(missing).find("missing required key 'counts'"), std::string::npos);
    EXPECT_NE(error_of(Json::array()).find("expected mapping"), std::string::npos);
}

// Issue 13, defect 5: a count beyond INT64_MAX wrapped to a negative number in the store.
TEST(ReportProtocol, IntegersBeyondWhatTheStoreKeepsAreRefusedNotWrapped) {
    const std::uint64_t over = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) + 1;
    for (std::uint64_t value : {over, std::numeric_limits<std::uint64_t>::max()}) {
        Json body = valid();
        body["counts"]["changed"] = value;
        std::string error = error_of(body);
        EXPECT_NE(error.find("counts.changed: must be at most 9223372036854775807 (got " + std::to_string(value) + ")"),
                  std::string::npos)
            << error;
        body = valid();
        body["resources"][0]["duration_ms"] = value;
        EXPECT_NE(error_of(body).find("resources[0].duration_ms: must be at most"), std::string::npos);
        body = valid();
        body["spool_dropped"] = value;
        EXPECT_NE(error_of(body).find("spool_dropped: must be at most"), std::string::npos);
    }
    Json max = valid();
    max["counts"]["changed"] = std::numeric_limits<std::int64_t>::max();
    auto r = ReportParser().parse(max);
    ASSERT_TRUE(r.ok()) << r.message();
    EXPECT_EQ(r->counts.changed, std::numeric_limits<std::int64_t>::max());
}

TEST(ReportProtocol, TheBodyIsParsedOnceAndNonJsonIsRefused) {
    EXPECT_FALSE(parse_report_json("{\"report_id\":").ok());
    auto j = parse_report_json(valid().dump());
    ASSERT_TRUE(j.ok());
    EXPECT_EQ(*j, valid());
}

class CountingRandom final : public Random {
  public:
    std::uint64_t next() override { return ++n_; }

  private:
    std::uint64_t n_ = 0;
};

TEST(ReportProtocol, StampKeepsARunsOwnIdAndGivesAHealthReportAFreshOne) {
    CountingRandom random;
    Report run;
    run.report_id = "6f1c2c1e-3a4b-4c5d-8e9f-0a1b2c3d4e5f";
    run.started_at = run.finished_at = "2026-11-23T19:40:00.000Z";
    Stamp s{"web-01", "0.1.0", "sha256:abc", Trigger::run, Phase::sustain, {{"ssh", "tcp", HealthStatus::fail, "", ""}},
            ""};
    stamp(run, s, random);
    EXPECT_EQ(run.report_id, "6f1c2c1e-3a4b-4c5d-8e9f-0a1b2c3d4e5f");  // the id in last-run.json
    EXPECT_EQ(run.identity, "web-01");
    EXPECT_EQ(run.phase, Phase::sustain);
    EXPECT_EQ(run.health_failed(), 1);

    Report health = run;
    s.trigger = Trigger::health;
    s.at = "2026-11-23T19:45:00.000Z";
    stamp(health, s, random);
    EXPECT_NE(health.report_id, run.report_id);
    EXPECT_TRUE(looks_like_uuid(health.report_id)) << health.report_id;
    EXPECT_EQ(health.started_at, s.at);
    EXPECT_EQ(health.finished_at, s.at);
    EXPECT_EQ(health.trigger, Trigger::health);
    EXPECT_TRUE(ReportParser().parse(to_json(health)).ok());

    Report unnamed;  // no id yet (e.g. the run could not take its lock): one is drawn
    stamp(unnamed, {}, random);
    EXPECT_TRUE(looks_like_uuid(unnamed.report_id));
}

TEST(Random, SecretsAndIdsHaveTheirShape) {
    auto random = make_system_random();
    std::string secret = generate_secret(*random, "nfe_");
    EXPECT_EQ(secret.size(), 4u + 64u);
    EXPECT_EQ(secret.rfind("nfe_", 0), 0u);
    EXPECT_NE(secret, generate_secret(*random, "nfe_"));
    EXPECT_EQ(random_hex(*random, 8).size(), 16u);
    std::string id = make_uuid_v4(*random);
    EXPECT_TRUE(looks_like_uuid(id));
    EXPECT_EQ(id[14], '4');
}

}  // namespace
}  // namespace nodeform::protocol
