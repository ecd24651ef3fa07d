#include "nodeform/clock.hpp"

#include <cstdio>
#include <ctime>
#include <thread>

namespace nodeform {

void SystemClock::sleep_for(std::chrono::milliseconds duration) const {
    std::this_thread::sleep_for(duration);
}

std::string format_rfc3339(std::chrono::system_clock::time_point t) {
    using namespace std::chrono;
    auto ms = duration_cast<milliseconds>(t.time_since_epoch()).count();
    std::time_t secs = static_cast<std::time_t>(ms / 1000);
    if (ms % 1000 < 0) --secs;
    long frac = static_cast<long>(((ms % 1000) + 1000) % 1000);
    std::tm tm{};
    gmtime_r(&secs, &tm);
    char buf[64];
    std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                  tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
    return buf;
}

bool parse_rfc3339(const std::string& text, std::chrono::system_clock::time_point& out) {
    std::tm tm{};
    int ms = 0;
    char tail[8] = {0};
    int n = std::sscanf(text.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d.%3d%7s", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                        &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms, tail);
    if (n == 8) {
        if (std::string(tail) != "Z") return false;
    } else {
        ms = 0;
        n = std::sscanf(text.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%7s", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
                        &tm.tm_min, &tm.tm_sec, tail);
        if (n != 7 || std::string(tail) != "Z") return false;
    }
    // Years 1970..2200 only: system_clock counts nanoseconds in 64 bits (about 1678..2262), so a larger year would
    // overflow the conversion (found by fuzz_report); no field may be negative ("%2d" accepts "-1").
    if (tm.tm_year < 1970 || tm.tm_year > 2200 || tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 ||
        tm.tm_mday > 31 || tm.tm_hour < 0 || tm.tm_hour > 23 || tm.tm_min < 0 || tm.tm_min > 59 || tm.tm_sec < 0 ||
        tm.tm_sec > 60 || ms < 0)
        return false;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    std::time_t secs = timegm(&tm);
    out = std::chrono::system_clock::from_time_t(secs) + std::chrono::milliseconds(ms);
    return true;
}

}  // namespace nodeform
