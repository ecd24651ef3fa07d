#pragma once
// The Notifier fake: records every message; the watchdog timeout is whatever the test sets.
#include <mutex>
#include <vector>

#include "nodeform/notifier.hpp"

namespace nodeform {

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

}  // namespace nodeform
