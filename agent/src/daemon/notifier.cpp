#include "nodeform/agent/daemon/notifier.hpp"

namespace nodeform::agent::daemon {
std::string format_status(const StatusSummary& s) {
    std::string line;
    if (s.ready) {
        line = "ready";
        if (s.failed > 0) line += ", " + std::to_string(s.failed) + " failed";
        line += ", " + std::to_string(s.drifted) + " drift";
    } else {
        line = "converging";
        if (s.attempt > 0) line += " (attempt " + std::to_string(s.attempt) + ")";
        line += ", " + std::to_string(s.failed) + " failed";
    }
    line += ", " + std::to_string(s.health_pass) + "/" + std::to_string(s.health_total) + " health";
    if (s.spooled > 0) line += ", " + std::to_string(s.spooled) + " reports spooled";
    if (!s.note.empty()) line += ", " + s.note;
    return line;
}

}  // namespace nodeform::agent::daemon
