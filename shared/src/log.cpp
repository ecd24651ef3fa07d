#include "nodeform/log.hpp"

#define SD_JOURNAL_SUPPRESS_LOCATION
#include <sys/stat.h>
#include <systemd/sd-journal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <vector>

namespace nodeform {
namespace {

const char* level_name(LogLevel level) {
    switch (level) {
        case LogLevel::debug: return "debug";
        case LogLevel::info: return "info";
        case LogLevel::notice: return "notice";
        case LogLevel::warning: return "warning";
        case LogLevel::error: return "error";
    }
    return "info";
}

class StderrLogger final : public Logger {
public:
    explicit StderrLogger(LogLevel min_level) : min_level_(min_level) {}
    void log(LogLevel level, const std::string& message, const LogFields& fields) override {
        if (static_cast<int>(level) > static_cast<int>(min_level_)) return;
        std::string line = std::string(level_name(level)) + ": " + message;
        for (const auto& [key, value] : fields) line += " " + key + "=" + value;
        line.push_back('\n');
        std::lock_guard<std::mutex> lock(mutex_);
        std::fwrite(line.data(), 1, line.size(), stderr);
        std::fflush(stderr);
    }

private:
    LogLevel min_level_;
    std::mutex mutex_;
};

class JournaldLogger final : public Logger {
public:
    JournaldLogger(std::string identifier, LogLevel min_level)
        : identifier_(std::move(identifier)), min_level_(min_level) {}
    void log(LogLevel level, const std::string& message, const LogFields& fields) override {
        if (static_cast<int>(level) > static_cast<int>(min_level_)) return;
        std::vector<std::string> items;
        items.reserve(fields.size() + 3);
        items.push_back("MESSAGE=" + message);
        items.push_back("PRIORITY=" + std::to_string(static_cast<int>(level)));
        items.push_back("SYSLOG_IDENTIFIER=" + identifier_);
        for (const auto& [key, value] : fields) items.push_back(key + "=" + value);
        std::vector<iovec> iov(items.size());
        for (std::size_t i = 0; i < items.size(); ++i) {
            iov[i].iov_base = items[i].data();
            iov[i].iov_len = items[i].size();
        }
        sd_journal_sendv(iov.data(), static_cast<int>(iov.size()));
    }

private:
    std::string identifier_;
    LogLevel min_level_;
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

std::unique_ptr<Logger> make_stderr_logger(LogLevel min_level) { return std::make_unique<StderrLogger>(min_level); }

std::unique_ptr<Logger> make_journald_logger(const std::string& identifier, LogLevel min_level) {
    return std::make_unique<JournaldLogger>(identifier, min_level);
}

std::unique_ptr<Logger> make_default_logger(const std::string& identifier, LogLevel min_level) {
    if (stderr_is_journal()) return make_journald_logger(identifier, min_level);
    return make_stderr_logger(min_level);
}

}  // namespace nodeform
