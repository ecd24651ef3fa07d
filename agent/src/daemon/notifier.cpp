#include "nodeform/agent/daemon/notifier.hpp"

#include "nodeform/systemd.hpp"

namespace nodeform::agent::daemon {
namespace {

// sd_notify(3) spoken natively; the environment is read once, when the daemon starts.
class SystemdNotifier final : public Notifier {
  public:
    explicit SystemdNotifier(systemd::NotifyEnvironment env)
        : env_(std::move(env)), watchdog_(systemd::watchdog_timeout(env_)) {}
    // A lost notification is not fatal to the daemon (systemd's own timeouts report it).
    void notify(const std::string& state) override { (void)systemd::notify(env_, state); }
    std::chrono::microseconds watchdog_timeout() const override { return watchdog_; }

  private:
    systemd::NotifyEnvironment env_;
    std::chrono::microseconds watchdog_;
};

}  // namespace

std::unique_ptr<Notifier> make_systemd_notifier() {
    return std::make_unique<SystemdNotifier>(systemd::NotifyEnvironment::from_process());
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
