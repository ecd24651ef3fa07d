#pragma once
// The daemon's STATUS= line; the Notifier itself is nodeform/notifier.hpp.
#include <string>

#include "nodeform/notifier.hpp"

namespace nodeform::agent::daemon {

// The daemon's service-manager seam is the shared one (nodeform/notifier.hpp).
using nodeform::make_systemd_notifier;
using nodeform::Notifier;

// The one-line STATUS= summary, e.g. "ready, 0 drift, 5/5 health" or "converging (attempt 2), 1 failed".
struct StatusSummary {
    bool ready = false;
    unsigned attempt = 0;  // converge attempts so far (before ready)
    unsigned failed = 0;
    unsigned drifted = 0;
    unsigned health_pass = 0;
    unsigned health_total = 0;
    unsigned spooled = 0;  // reports waiting for the controller
    std::string note;      // e.g. "controller unreachable"
};
std::string format_status(const StatusSummary& s);

}  // namespace nodeform::agent::daemon
