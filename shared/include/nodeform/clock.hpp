#pragma once
// Clock: wall time for timestamps and expiries, steady time for intervals, and waiting. Fake in tests (a fake
// clock's sleep_for advances its own time and returns at once).
#include <chrono>
#include <string>

namespace nodeform {

class Clock {
  public:
    virtual ~Clock() = default;
    virtual std::chrono::system_clock::time_point now() const = 0;
    virtual std::chrono::steady_clock::time_point steady_now() const = 0;
    virtual void sleep_for(std::chrono::milliseconds duration) const = 0;
};

class SystemClock final : public Clock {
  public:
    std::chrono::system_clock::time_point now() const override { return std::chrono::system_clock::now(); }
    std::chrono::steady_clock::time_point steady_now() const override { return std::chrono::steady_clock::now(); }
    void sleep_for(std::chrono::milliseconds duration) const override;
};

// RFC 3339 UTC with milliseconds, e.g. 2026-11-23T19:40:00.123Z.
std::string format_rfc3339(std::chrono::system_clock::time_point t);
// Parses what format_rfc3339 writes (and whole seconds without fraction); false when malformed.
bool parse_rfc3339(const std::string& text, std::chrono::system_clock::time_point& out);

}  // namespace nodeform
