#pragma once
// The run report of docs/protocol.md as one typed value: the agent builds it, stamps it once and sends
// to_json(report); the controller parses the body once at its boundary (parse_report) against
// shared/defs/report.schema.json plus the rules a schema cannot say, and uses the typed value past it.
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "nodeform/result.hpp"

namespace nodeform {
class Random;
namespace site::detail {
class SchemaSet;
}
}  // namespace nodeform

namespace nodeform::protocol {

enum class Phase { converging, platform_ready, sustain };
enum class Trigger { run, health };
enum class Mode { apply, check };
enum class ResourceStatus { unchanged, changed, failed, skipped, drifted };
enum class HealthStatus { pass, fail };

const char* to_string(Phase phase);  // "converging", "platform-ready", "sustain"
const char* to_string(Trigger trigger);
const char* to_string(Mode mode);
const char* to_string(ResourceStatus status);
const char* to_string(HealthStatus status);

struct Change {
    std::string field;
    nlohmann::json old_value;  // already redacted ("[REDACTED]") for secret fields
    nlohmann::json new_value;
};

struct ResourceEntry {
    std::string id;    // TYPE:NAME
    std::string type;  // may be empty
    ResourceStatus status = ResourceStatus::unchanged;
    std::int64_t duration_ms = 0;
    std::string message;
    std::vector<Change> changes;
};

struct DriftEntry {
    std::string id;
    std::vector<Change> changes;
};

struct HealthEntry {
    std::string name;
    std::string type;
    HealthStatus status = HealthStatus::pass;
    std::string message;
    std::string checked_at;  // RFC 3339 as the agent wrote it; may be empty
};

// Absent counts are 0. Every count is 0..INT64_MAX (the store keeps int64).
struct Counts {
    std::int64_t total = 0;
    std::int64_t unchanged = 0;
    std::int64_t changed = 0;
    std::int64_t failed = 0;
    std::int64_t skipped = 0;
    std::int64_t drifted = 0;
};

struct Report {
    std::string report_id;  // UUID v4 from the agent; 1-128 of [A-Za-z0-9._-] accepted
    std::string identity;
    std::string agent_version;
    std::string spec_digest;
    Phase phase = Phase::converging;
    Trigger trigger = Trigger::run;
    Mode mode = Mode::apply;
    std::string started_at;  // RFC 3339 UTC
    std::string finished_at;
    bool platform_ready = false;
    Counts counts;
    std::vector<ResourceEntry> resources;
    std::vector<DriftEntry> drift;
    std::vector<HealthEntry> health;
    std::string error;          // run-level failure; empty: none (not sent)
    std::string apply_request;  // the controller's converge request this run took (Nodeform-Apply-Request); empty: none
    std::optional<std::int64_t> spool_dropped;  // set by the agent's spool; absent from one-shot apply reports

    std::int64_t health_failed() const;
};

// The body as docs/protocol.md shows it.
nlohmann::json to_json(const Report& report);
// One health[] entry of it.
nlohmann::json to_json(const HealthEntry& entry);

// What the agent sets on every report it sends, in one place. A run's own report keeps its report_id (the
// one in last-run.json and the platform-ready marker), times, identity and digest when set; a report made
// at `at` (a health change) gets a fresh report_id, started_at = finished_at = at and the current who/what.
// Trigger, phase and the current health results are always set.
struct Stamp {
    std::string identity;
    std::string agent_version;
    std::string spec_digest;
    Trigger trigger = Trigger::run;
    Phase phase = Phase::converging;
    std::vector<HealthEntry> health;
    std::string at;  // RFC 3339; empty for a run's own report
};
void stamp(Report& report, const Stamp& stamp, Random& random);

// The one JSON parse at the report boundary (body text → JSON); Err when it is not JSON.
Result<nlohmann::json> parse_report_json(std::string_view body);

// Validates a report against report.schema.json (valijson, the site's schema path), then what the schema
// cannot say (integers beyond INT64_MAX, report_id characters, timestamps); Err names the field and the reason,
// e.g. "counts.changed: must be at most 9223372036854775807 (got 9223372036854775808)". Unknown keys are ignored.
// Holds the parsed schema: build one and reuse it (parse is const and thread-safe).
class ReportParser {
  public:
    ReportParser();
    ~ReportParser();
    ReportParser(const ReportParser&) = delete;
    ReportParser& operator=(const ReportParser&) = delete;

    Result<Report> parse(const nlohmann::json& body) const;

  private:
    std::unique_ptr<site::detail::SchemaSet> schema_;
};

}  // namespace nodeform::protocol
