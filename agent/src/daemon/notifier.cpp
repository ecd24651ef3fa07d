#include "nodeform/agent/daemon/notifier.hpp"

#include <systemd/sd-daemon.h>

namespace nodeform::agent::daemon {
namespace {

class SystemdNotifier final : public Notifier {
  public:
    SystemdNotifier() {
        std::uint64_t usec = 0;
        if (sd_watchdog_enabled(0, &usec) > 0) watchdog_ = std::chrono::microseconds(usec);
    }
    void notify(const std::string& state) override { sd_notify(0, state.c_str()); }
    std::chrono::microseconds watchdog_timeout() const override { return watchdog_; }

  private:
    std::chrono::microseconds watchdog_{0};
};

}  // namespace

std::unique_ptr<Notifier> make_systemd_notifier() {
    return std::make_unique<SystemdNotifier>();
}

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
