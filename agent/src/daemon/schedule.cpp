#include "nodeform/agent/daemon/schedule.hpp"

#include <algorithm>

#include "nodeform/canonical_json.hpp"

namespace nodeform::agent::daemon {
std::chrono::milliseconds splay_offset(const std::string& identity, std::chrono::milliseconds splay) {
    if (splay.count() <= 0) return std::chrono::milliseconds(0);
    std::string hex = sha256_hex(identity);
    std::uint64_t value = std::stoull(hex.substr(0, 16), nullptr, 16);
    return std::chrono::milliseconds(static_cast<std::int64_t>(value % static_cast<std::uint64_t>(splay.count())));
}

std::chrono::milliseconds max_jitter(std::chrono::milliseconds splay) {
    if (splay.count() <= 0) return std::chrono::milliseconds(0);
    return std::min(splay / 10, std::chrono::milliseconds(5000));
}

std::chrono::milliseconds next_turn_delay(std::chrono::system_clock::time_point now, std::chrono::milliseconds interval,
                                          std::chrono::milliseconds offset, std::chrono::milliseconds jitter) {
    using namespace std::chrono;
    if (interval.count() <= 0) return jitter;
    const std::int64_t t = duration_cast<milliseconds>(now.time_since_epoch()).count();
    const std::int64_t i = interval.count();
    const std::int64_t o = ((offset.count() % i) + i) % i;
    // Smallest k*i + o strictly greater than t.
    std::int64_t k = (t - o) >= 0 ? (t - o) / i + 1 : -((o - t) / i) + ((o - t) % i == 0 ? 1 : 0);
    std::int64_t next = k * i + o;
    while (next <= t)
        next += i;
    return milliseconds(next - t) + jitter;
}

std::chrono::milliseconds start_delay(std::chrono::milliseconds splay, Random& random) {
    if (splay.count() <= 0) return std::chrono::milliseconds(0);
    return std::chrono::milliseconds(
        static_cast<std::int64_t>(random.below(static_cast<std::uint64_t>(splay.count()) + 1)));
}

std::chrono::milliseconds Backoff::ceiling() const {
    using namespace std::chrono;
    milliseconds bound = base_;
    for (unsigned i = 0; i < attempt_ && bound < cap_; ++i)
        bound *= 2;
    return std::min(bound, cap_);
}

std::chrono::milliseconds Backoff::next(Random& random) {
    auto bound = ceiling();
    ++attempt_;
    return std::chrono::milliseconds(
        static_cast<std::int64_t>(random.below(static_cast<std::uint64_t>(bound.count()) + 1)));
}

}  // namespace nodeform::agent::daemon
