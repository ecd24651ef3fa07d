#pragma once
// Notifier: how a service talks to its service manager (sd_notify(3)): "READY=1", "WATCHDOG=1",
// "STATUS=…", "RELOADING=1", "STOPPING=1". The agent's daemon and the controller's server both take one
// through their constructors; tests pass the recording fake of tests/support/recording_notifier.hpp.
#include <chrono>
#include <memory>
#include <string>

namespace nodeform {

class Notifier {
  public:
    virtual ~Notifier() = default;
    // Sends one state string; a lost notification is not fatal (systemd's own timeouts report it).
    virtual void notify(const std::string& state) = 0;
    // The watchdog timeout the service manager set (WATCHDOG_USEC); zero when the watchdog is off.
    virtual std::chrono::microseconds watchdog_timeout() const = 0;
};

// sd_notify(3) spoken natively over NOTIFY_SOCKET (nodeform/systemd.hpp), the environment read now;
// does nothing when not started by systemd.
std::unique_ptr<Notifier> make_systemd_notifier();

}  // namespace nodeform
