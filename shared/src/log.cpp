#include "nodeform/log.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <vector>

#include "nodeform/enum_names.hpp"
#include "nodeform/systemd.hpp"

namespace nodeform {
namespace {

constexpr EnumName<LogLevel> kLevels[] = {{LogLevel::debug, "debug"},
                                          {LogLevel::info, "info"},
                                          {LogLevel::notice, "notice"},
                                          {LogLevel::warning, "warning"},
                                          {LogLevel::error, "error"}};

class StderrLogger final : public Logger {
  public:
    explicit StderrLogger(LogLevel min_level) : min_level_(min_level) {}
    void log(LogLevel level, const std::string& message, const LogFields& fields) override {
        if (static_cast<int>(level) > static_cast<int>(min_level_)) return;
        std::string line = std::string(to_string(level)) + ": " + message;
        for (const auto& [key, value] : fields)
            line += " " + key + "=" + value;
        line.push_back('\n');
        std::lock_guard<std::mutex> lock(mutex_);
        std::fwrite(line.data(), 1, line.size(), stderr);
        std::fflush(stderr);
    }

  private:
    LogLevel min_level_;
    std::mutex mutex_;
};

// The journal's native protocol (nodeform/systemd.hpp); a line journald did not take goes to stderr.
class JournaldLogger final : public Logger {
  public:
    JournaldLogger(std::string identifier, LogLevel min_level, std::string socket_path)
        : identifier_(std::move(identifier)),
          min_level_(min_level),
          client_(std::move(socket_path)),
          fallback_(min_level) {}
    void log(LogLevel level, const std::string& message, const LogFields& fields) override {
        if (static_cast<int>(level) > static_cast<int>(min_level_)) return;
        systemd::JournalFields entry;
        entry.reserve(fields.size() + 3);
        entry.emplace_back("MESSAGE", message);
        entry.emplace_back("PRIORITY", std::to_string(static_cast<int>(level)));
        entry.emplace_back("SYSLOG_IDENTIFIER", identifier_);
        for (const auto& [key, value] : fields)
            entry.emplace_back(key, value);
        if (!client_.send(entry).ok()) fallback_.log(level, message, fields);
    }

  private:
    std::string identifier_;
    LogLevel min_level_;
    systemd::JournalClient client_;
    StderrLogger fallback_;
};

bool stderr_is_journal() {
    const char* stream = std::getenv("JOURNAL_STREAM");
    if (stream == nullptr) return false;
    unsigned long long dev = 0, ino = 0;
    if (std::sscanf(stream, "%llu:%llu", &dev, &ino) != 2) return false;
    struct stat st {};
    if (fstat(STDERR_FILENO, &st) != 0) return false;
    return st.st_dev == dev && st.st_ino == ino;
}

}  // namespace

const char* to_string(LogLevel level) {
    return name_of(kLevels, level, "info");
}

std::optional<LogLevel> parse_log_level(std::string_view name) {
    return value_of(kLevels, name);
}

std::unique_ptr<Logger> make_stderr_logger(LogLevel min_level) {
    return std::make_unique<StderrLogger>(min_level);
}

std::unique_ptr<Logger> make_journald_logger(const std::string& identifier, LogLevel min_level,
                                             const std::string& socket_path) {
    return std::make_unique<JournaldLogger>(identifier, min_level, socket_path);
}

std::unique_ptr<Logger> make_default_logger(const std::string& identifier, LogLevel min_level) {
    if (stderr_is_journal()) return make_journald_logger(identifier, min_level);
    return make_stderr_logger(min_level);
}

}  // namespace nodeform
