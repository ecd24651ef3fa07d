#pragma once
// What became of one report sent to the controller: the agent's spool keeps it, drops it or retries it.
#include <string>

namespace nodeform::agent {

enum class ReportDelivery {
    stored,       // 2xx: stored now or already (a retried report id)
    rejected,     // 400, 413, 422: the report itself is unacceptable; resending it can never succeed
    unavailable,  // unreachable, 5xx, 429, or refused for now (401, 403, 404): keep it and retry later
};

struct ReportPostResult {
    ReportDelivery delivery = ReportDelivery::unavailable;
    std::string message;  // why, when not stored
    bool ok() const { return delivery == ReportDelivery::stored; }
};

// The delivery a controller's HTTP status means for a report.
inline ReportDelivery report_delivery_for_status(int status) {
    if (status >= 200 && status < 300) return ReportDelivery::stored;
    if (status == 400 || status == 413 || status == 422) return ReportDelivery::rejected;
    return ReportDelivery::unavailable;
}

}  // namespace nodeform::agent
