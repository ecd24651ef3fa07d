#include "nodeform/report.hpp"

#include "nodeform/json_limits.hpp"

#include <algorithm>
#include <limits>

#include "nodeform/clock.hpp"
#include "nodeform/enum_names.hpp"
#include "nodeform/random.hpp"
#include "site/schema.hpp"

namespace nodeform::protocol {
namespace {

using Json = nlohmann::json;

constexpr std::int64_t kMaxInt = std::numeric_limits<std::int64_t>::max();

// The JSON Pointer of the first integer anywhere in value that the store cannot keep (beyond INT64_MAX), and
// its text in `found`: valijson reads integers as int64, so the schema alone would see such a number wrapped.
// Iterative (an explicit stack), so a deeply nested value cannot exhaust the call stack here.
std::string oversized_integer(const Json& value, std::string& found) {
    std::vector<std::pair<const Json*, std::string>> todo{{&value, ""}};
    while (!todo.empty()) {
        auto [v, pointer] = std::move(todo.back());
        todo.pop_back();
        if (v->is_number_unsigned() && v->get<std::uint64_t>() > static_cast<std::uint64_t>(kMaxInt)) {
            found = v->dump();
            return pointer;
        }
        if (v->is_object()) {
            for (auto it = v->rbegin(); it != v->rend(); ++it)
                todo.emplace_back(&it.value(), site::detail::pointer_join(pointer, it.key()));
        } else if (v->is_array()) {
            for (std::size_t i = v->size(); i-- > 0;)
                todo.emplace_back(&(*v)[i], site::detail::pointer_join(pointer, i));
        }
    }
    return "";
}

Error field_error(const std::string& field, const std::string& message) {
    return make_error((field.empty() ? std::string("the report") : field) + ": " + message);
}

// Accessors past the schema: the types are known, absent optional values give their defaults.
std::string str(const Json& object, const char* key) {
    auto it = object.find(key);
    return it != object.end() && it->is_string() ? it->get<std::string>() : std::string();
}
std::int64_t integer(const Json& object, const char* key) {
    auto it = object.find(key);
    return it != object.end() && it->is_number_integer() ? it->get<std::int64_t>() : 0;
}
const Json& array(const Json& object, const char* key) {
    static const Json kEmpty = Json::array();
    auto it = object.find(key);
    return it != object.end() && it->is_array() ? *it : kEmpty;
}

// The value named text in table; the first entry when none is (unreachable after the schema's enum).
template <typename Enum, std::size_t N>
Enum enum_of(const std::string& text, const EnumName<Enum> (&table)[N]) {
    return value_of(table, text).value_or(table[0].value);
}

constexpr EnumName<Phase> kPhases[] = {
    {Phase::converging, "converging"}, {Phase::platform_ready, "platform-ready"}, {Phase::sustain, "sustain"}};
constexpr EnumName<Trigger> kTriggers[] = {{Trigger::run, "run"}, {Trigger::health, "health"}};
constexpr EnumName<Mode> kModes[] = {{Mode::apply, "apply"}, {Mode::check, "check"}};
constexpr EnumName<ResourceStatus> kStatuses[] = {{ResourceStatus::unchanged, "unchanged"},
                                                  {ResourceStatus::changed, "changed"},
                                                  {ResourceStatus::failed, "failed"},
                                                  {ResourceStatus::skipped, "skipped"},
                                                  {ResourceStatus::drifted, "drifted"}};
constexpr EnumName<HealthStatus> kHealth[] = {{HealthStatus::pass, "pass"}, {HealthStatus::fail, "fail"}};

std::vector<Change> changes_of(const Json& object) {
    std::vector<Change> out;
    for (const auto& c : array(object, "changes")) {
        Change change;
        change.field = str(c, "field");
        if (auto it = c.find("old"); it != c.end()) change.old_value = *it;
        if (auto it = c.find("new"); it != c.end()) change.new_value = *it;
        out.push_back(std::move(change));
    }
    return out;
}

Json changes_json(const std::vector<Change>& changes) {
    Json out = Json::array();
    for (const auto& c : changes)
        out.push_back({{"field", c.field}, {"old", c.old_value}, {"new", c.new_value}});
    return out;
}

}  // namespace

const char* to_string(Phase phase) {
    return name_of(kPhases, phase, "");
}
const char* to_string(Trigger trigger) {
    return name_of(kTriggers, trigger, "health");
}
const char* to_string(Mode mode) {
    return name_of(kModes, mode, "check");
}
const char* to_string(ResourceStatus status) {
    return name_of(kStatuses, status, "");
}
const char* to_string(HealthStatus status) {
    return name_of(kHealth, status, "fail");
}

std::int64_t Report::health_failed() const {
    return std::count_if(health.begin(), health.end(),
                         [](const HealthEntry& h) { return h.status == HealthStatus::fail; });
}

Json to_json(const HealthEntry& h) {
    return {{"name", h.name},
            {"type", h.type},
            {"status", to_string(h.status)},
            {"message", h.message},
            {"checked_at", h.checked_at}};
}

Json to_json(const Report& r) {
    Json resources = Json::array();
    for (const auto& e : r.resources)
        resources.push_back({{"id", e.id},
                             {"type", e.type},
                             {"status", to_string(e.status)},
                             {"duration_ms", e.duration_ms},
                             {"message", e.message},
                             {"changes", changes_json(e.changes)}});
    Json drift = Json::array();
    for (const auto& d : r.drift)
        drift.push_back({{"id", d.id}, {"changes", changes_json(d.changes)}});
    Json health = Json::array();
    for (const auto& h : r.health)
        health.push_back(to_json(h));
    const Counts& c = r.counts;
    Json j = {{"report_id", r.report_id},
              {"identity", r.identity},
              {"agent_version", r.agent_version},
              {"spec_digest", r.spec_digest},
              {"phase", to_string(r.phase)},
              {"trigger", to_string(r.trigger)},
              {"mode", to_string(r.mode)},
              {"started_at", r.started_at},
              {"finished_at", r.finished_at},
              {"platform_ready", r.platform_ready},
              {"counts",
               {{"total", c.total},
                {"unchanged", c.unchanged},
                {"changed", c.changed},
                {"failed", c.failed},
                {"skipped", c.skipped},
                {"drifted", c.drifted}}},
              {"resources", std::move(resources)},
              {"drift", std::move(drift)},
              {"health", std::move(health)}};
    if (!r.error.empty()) j["error"] = r.error;
    if (!r.apply_request.empty()) j["apply_request"] = r.apply_request;
    if (r.spool_dropped) j["spool_dropped"] = *r.spool_dropped;
    return j;
}

void stamp(Report& report, const Stamp& s, Random& random) {
    const bool fresh = !s.at.empty();
    if (fresh || !looks_like_uuid(report.report_id)) report.report_id = make_uuid_v4(random);
    if (fresh || report.identity.empty()) report.identity = s.identity;
    if (fresh || report.agent_version.empty()) report.agent_version = s.agent_version;
    if (fresh || report.spec_digest.empty()) report.spec_digest = s.spec_digest;
    if (fresh) report.started_at = report.finished_at = s.at;
    report.trigger = s.trigger;
    report.phase = s.phase;
    report.health = s.health;
}

Result<nlohmann::json> parse_report_json(std::string_view body) {
    // The size was bounded by the HTTP layer (max-body-bytes); the depth is bounded here.
    auto j = parse_json_bounded(body, {body.size()});
    if (!j) return make_error("the body is " + j.message());
    return std::move(*j);
}

ReportParser::ReportParser() : schema_(std::make_unique<site::detail::SchemaSet>(site::detail::FileKind::report)) {}
ReportParser::~ReportParser() = default;

Result<Report> ReportParser::parse(const Json& body) const {
    std::string found;
    std::string at = oversized_integer(body, found);
    if (!found.empty())
        return field_error(site::detail::pointer_to_field(at, &body),
                           "must be at most " + std::to_string(kMaxInt) + " (got " + found + ")");
    site::detail::Document doc;
    doc.file = "report";
    doc.json = body;
    std::vector<site::Diagnostic> problems;
    if (!schema_->validate(site::detail::FileKind::report, doc, problems)) {
        std::string message;
        for (std::size_t i = 0; i < problems.size() && i < 5; ++i)
            message += (i ? "; " : "") + (problems[i].field.empty() ? std::string("the report") : problems[i].field) +
                       ": " + problems[i].message;
        return make_error(message.empty() ? "the report does not match the protocol" : message);
    }
    Report r;
    r.report_id = str(body, "report_id");
    if (!std::all_of(r.report_id.begin(), r.report_id.end(), [](char c) {
            return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
        }))
        return field_error("report_id", "must be 1-128 of [A-Za-z0-9._-] (a UUID)");
    r.identity = str(body, "identity");
    r.agent_version = str(body, "agent_version");
    r.spec_digest = str(body, "spec_digest");
    r.phase = enum_of(str(body, "phase"), kPhases);
    r.trigger = enum_of(str(body, "trigger"), kTriggers);
    r.mode = enum_of(str(body, "mode"), kModes);
    r.started_at = str(body, "started_at");
    r.finished_at = str(body, "finished_at");
    for (const auto* key : {"started_at", "finished_at"}) {
        std::chrono::system_clock::time_point t;
        if (!parse_rfc3339(str(body, key), t)) return field_error(key, "must be an RFC 3339 UTC timestamp");
    }
    r.platform_ready = body.at("platform_ready").get<bool>();
    const Json& counts = body.at("counts");
    r.counts = {integer(counts, "total"),  integer(counts, "unchanged"), integer(counts, "changed"),
                integer(counts, "failed"), integer(counts, "skipped"),   integer(counts, "drifted")};
    for (const auto& e : array(body, "resources"))
        r.resources.push_back({str(e, "id"), str(e, "type"), enum_of(str(e, "status"), kStatuses),
                               integer(e, "duration_ms"), str(e, "message"), changes_of(e)});
    for (const auto& d : array(body, "drift"))
        r.drift.push_back({str(d, "id"), changes_of(d)});
    for (const auto& h : array(body, "health"))
        r.health.push_back({str(h, "name"), str(h, "type"), enum_of(str(h, "status"), kHealth), str(h, "message"),
                            str(h, "checked_at")});
    r.error = str(body, "error");
    r.apply_request = str(body, "apply_request");
    if (!std::all_of(r.apply_request.begin(), r.apply_request.end(), [](char c) {
            return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
        }))
        return field_error("apply_request", "must be 1-128 of [A-Za-z0-9._-] (the id the controller sent)");
    if (body.contains("spool_dropped")) r.spool_dropped = integer(body, "spool_dropped");
    return r;
}

}  // namespace nodeform::protocol
