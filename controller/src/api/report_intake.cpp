#include "nodeform/controller/api/report_intake.hpp"

#include "nodeform/canonical_json.hpp"

namespace nodeform::controller {

ReportRecord report_record(const protocol::Report& report, TimePoint received_at) {
    ReportRecord rec;
    rec.report_id = report.report_id;
    rec.apply_request = report.apply_request;
    rec.identity = report.identity;
    rec.received_at = received_at;
    rec.spec_digest = report.spec_digest;
    rec.phase = protocol::to_string(report.phase);
    rec.trigger = protocol::to_string(report.trigger);
    rec.mode = protocol::to_string(report.mode);
    rec.finished_at = report.finished_at;
    rec.platform_ready = report.platform_ready;
    rec.changed = report.counts.changed;
    rec.failed = report.counts.failed;
    rec.drifted = report.counts.drifted;
    if (rec.drifted == 0) rec.drifted = static_cast<std::int64_t>(report.drift.size());
    rec.health_failed = report.health_failed();
    rec.body = canonical_dump(protocol::to_json(report));
    return rec;
}

ReportIntake accept_report(const protocol::ReportParser& parser, std::string_view body, const std::string& identity,
                           TimePoint received_at) {
    ReportIntake out;
    auto json = protocol::parse_report_json(body);
    if (!json) {
        out.status = 400;
        out.code = "malformed_body";
        out.message = json.message();
        return out;
    }
    auto report = parser.parse(*json);
    if (report && report->identity != identity)
        report = make_error("identity: the report's identity does not match the URL's node '" + identity + "'");
    if (!report) {
        out.status = 422;
        out.code = "invalid_report";
        out.message = report.message();
        return out;
    }
    out.record = report_record(*report, received_at);
    return out;
}

}  // namespace nodeform::controller
