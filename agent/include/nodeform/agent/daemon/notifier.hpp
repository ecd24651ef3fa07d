#pragma once
// Notifier: how the daemon talks to its service manager (sd_notify). Fake records messages in tests.
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace nodeform::agent::daemon {

class Notifier {
  public:
    virtual ~Notifier() = default;
    // Sends one state string, e.g. "READY=1", "WATCHDOG=1", "STATUS=ready, 0 drift, 5/5 health", "STOPPING=1".
    virtual void notify(const std::string& state) = 0;
    // The watchdog timeout the service manager set (WATCHDOG_USEC); zero when the watchdog is off.
    virtual std::chrono::microseconds watchdog_timeout() const = 0;
};

// sd_notify(3) over NOTIFY_SOCKET and WATCHDOG_USEC/WATCHDOG_PID (nodeform/systemd.hpp), read from the
// environment now; does nothing when not started by systemd.
std::unique_ptr<Notifier> make_systemd_notifier();

// Records every message; the watchdog timeout is whatever the test sets.
class RecordingNotifier final : public Notifier {
  public:
    explicit RecordingNotifier(std::chrono::microseconds watchdog = std::chrono::microseconds(0))
        : watchdog_(watchdog) {}
    void notify(const std::string& state) override {
        std::lock_guard<std::mutex> lock(mutex_);
        messages_.push_back(state);
    }
    std::chrono::microseconds watchdog_timeout() const override { return watchdog_; }
    std::vector<std::string> messages() const {
        std::lock_guard<std::mutex> lock(mutex_);
        return messages_;
    }

  private:
    std::chrono::microseconds watchdog_;
    mutable std::mutex mutex_;
    std::vector<std::string> messages_;
};

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
