#include "nodeform/notifier.hpp"

#include "nodeform/systemd.hpp"

namespace nodeform {
namespace {

class SystemdNotifier final : public Notifier {
  public:
    explicit SystemdNotifier(systemd::NotifyEnvironment env)
        : env_(std::move(env)), watchdog_(systemd::watchdog_timeout(env_)) {}
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

}  // namespace nodeform
