#pragma once
// Timing policy of the sustain loop: per-identity splay, turn scheduling and retry backoff.
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

namespace nodeform::agent::daemon {

// Source of uniform 64-bit random numbers for jitter (not for secrets). Fake in tests.
class Random {
  public:
    virtual ~Random() = default;
    virtual std::uint64_t next() = 0;
    // Uniform in [0, bound); 0 when bound is 0.
    std::uint64_t below(std::uint64_t bound) { return bound == 0 ? 0 : next() % bound; }
};

// std::mt19937_64 seeded from std::random_device.
std::unique_ptr<Random> make_system_random();

// Fixed offset in [0, splay) derived from a SHA-256 of the identity: the same node always gets the same offset.
std::chrono::milliseconds splay_offset(const std::string& identity, std::chrono::milliseconds splay);

// Small random jitter added to each turn: up to min(splay / 10, 5 s), at least 0.
std::chrono::milliseconds max_jitter(std::chrono::milliseconds splay);

// Delay from wall time `now` until the next turn on the grid {k * interval + offset} that is strictly after now,
// plus `jitter`. Nodes with different offsets never fetch together however they were booted.
std::chrono::milliseconds next_turn_delay(std::chrono::system_clock::time_point now, std::chrono::milliseconds interval,
                                          std::chrono::milliseconds offset, std::chrono::milliseconds jitter);

// Exponential backoff with full jitter, bounded: attempt n (0-based) waits uniform [0, min(cap, base * 2^n)].
class Backoff {
  public:
    Backoff(std::chrono::milliseconds base, std::chrono::milliseconds cap) : base_(base), cap_(cap) {}
    // The bound for the current attempt (before jitter).
    std::chrono::milliseconds ceiling() const;
    // The delay to wait now; advances the attempt counter.
    std::chrono::milliseconds next(Random& random);
    void reset() { attempt_ = 0; }
    unsigned attempt() const { return attempt_; }

  private:
    std::chrono::milliseconds base_;
    std::chrono::milliseconds cap_;
    unsigned attempt_ = 0;
};

}  // namespace nodeform::agent::daemon
