#pragma once
// MemoryLogger: the Logger seam in memory, for tests (test-only: nodeform_fakes).
#include <mutex>
#include <string>
#include <vector>

#include "nodeform/log.hpp"

namespace nodeform {

// Keeps every line in memory; for tests.
class MemoryLogger final : public Logger {
  public:
    struct Line {
        LogLevel level;
        std::string message;
        LogFields fields;
    };
    // Thread-safe: servers and daemons log from several threads. Read `lines` once they have stopped.
    void log(LogLevel level, const std::string& message, const LogFields& fields) override {
        std::lock_guard<std::mutex> lock(mutex_);
        lines.push_back({level, message, fields});
    }
    // A copy taken under the lock, for reading while other threads may still log.
    std::vector<Line> snapshot() const {
        std::lock_guard<std::mutex> lock(mutex_);
        return lines;
    }
    std::vector<Line> lines;

  private:
    mutable std::mutex mutex_;
};

}  // namespace nodeform
