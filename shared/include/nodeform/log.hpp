#pragma once
// Logger: structured log lines. Journald (with fields) under systemd, plain stderr otherwise.
// Callers never pass secrets; fields are extra key/value pairs (keys UPPER_SNAKE, journald style).
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
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

// "debug", "info", "notice", "warning", "error"; parse_log_level reads the same names.
const char* to_string(LogLevel level);
std::optional<LogLevel> parse_log_level(std::string_view name);

// Writes "LEVEL message key=value ..." lines to stderr; lines below min_level are dropped.
std::unique_ptr<Logger> make_stderr_logger(LogLevel min_level = LogLevel::info);
// Sends to journald (native protocol, nodeform/systemd.hpp) with MESSAGE, PRIORITY, SYSLOG_IDENTIFIER and the
// given fields (keys journald cannot take are renamed or dropped); a line journald refuses goes to stderr.
std::unique_ptr<Logger> make_journald_logger(const std::string& identifier, LogLevel min_level = LogLevel::info,
                                             const std::string& socket_path = "/run/systemd/journal/socket");
// Journald when stderr is connected to the journal (JOURNAL_STREAM matches), else stderr.
std::unique_ptr<Logger> make_default_logger(const std::string& identifier, LogLevel min_level = LogLevel::info);

}  // namespace nodeform
