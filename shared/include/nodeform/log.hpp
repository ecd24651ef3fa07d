#pragma once
// Logger: structured log lines. Journald (with fields) under systemd, plain stderr otherwise.
// Callers never pass secrets; fields are extra key/value pairs (keys UPPER_SNAKE, journald style).
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace nodeform {

enum class LogLevel { debug = 7, info = 6, notice = 5, warning = 4, error = 3 };

using LogFields = std::map<std::string, std::string>;

class Logger {
  public:
    virtual ~Logger() = default;
    virtual void log(LogLevel level, const std::string& message, const LogFields& fields = {}) = 0;

    void debug(const std::string& m, const LogFields& f = {}) { log(LogLevel::debug, m, f); }
    void info(const std::string& m, const LogFields& f = {}) { log(LogLevel::info, m, f); }
    void notice(const std::string& m, const LogFields& f = {}) { log(LogLevel::notice, m, f); }
    void warning(const std::string& m, const LogFields& f = {}) { log(LogLevel::warning, m, f); }
    void error(const std::string& m, const LogFields& f = {}) { log(LogLevel::error, m, f); }
};

// Writes "LEVEL message key=value ..." lines to stderr; lines below min_level are dropped.
std::unique_ptr<Logger> make_stderr_logger(LogLevel min_level = LogLevel::info);
// Sends to journald (native protocol, nodeform/systemd.hpp) with MESSAGE, PRIORITY, SYSLOG_IDENTIFIER and the
// given fields (keys journald cannot take are renamed or dropped); a line journald refuses goes to stderr.
std::unique_ptr<Logger> make_journald_logger(const std::string& identifier, LogLevel min_level = LogLevel::info,
                                             const std::string& socket_path = "/run/systemd/journal/socket");
// Journald when stderr is connected to the journal (JOURNAL_STREAM matches), else stderr.
std::unique_ptr<Logger> make_default_logger(const std::string& identifier, LogLevel min_level = LogLevel::info);

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
