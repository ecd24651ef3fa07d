#pragma once
// The report boundary of POST /v1/nodes/{identity}/reports: the body is parsed once into the typed report of
// shared/include/nodeform/report.hpp (schema + rules), checked against the URL's node, and turned into the
// store's record. Nothing past this function reads the report's JSON keys.
#include <string>
#include <string_view>

#include "nodeform/clock.hpp"
#include "nodeform/controller/store/store.hpp"
#include "nodeform/report.hpp"

namespace nodeform::controller {

struct ReportIntake {
    int status = 0;       // 0: accepted; 400 (not JSON) or 422 (not a report for this node) otherwise
    std::string code;     // "malformed_body" | "invalid_report"
    std::string message;  // names the field and the reason
    ReportRecord record;  // when accepted: what the store keeps (body = canonical JSON of the typed report)
    bool ok() const { return status == 0; }
};

ReportIntake accept_report(const protocol::ReportParser& parser, std::string_view body, const std::string& identity,
                           TimePoint received_at);

// The store's record of a parsed report (derived columns: changed, failed, drifted, health_failed).
ReportRecord report_record(const protocol::Report& report, TimePoint received_at);

}  // namespace nodeform::controller
