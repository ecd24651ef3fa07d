#pragma once
// Timing policy of the sustain loop: per-identity splay, turn scheduling and retry backoff.
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "nodeform/random.hpp"

namespace nodeform::agent::daemon {

// Jitter comes from the shared Random seam (nodeform/random.hpp).
using nodeform::make_system_random;
using nodeform::Random;

// Fixed offset in [0, splay) derived from a SHA-256 of the identity: the same node always gets the same offset.
std::chrono::milliseconds splay_offset(const std::string& identity, std::chrono::milliseconds splay);

// Small random jitter added to each turn: up to min(splay / 10, 5 s), at least 0.
std::chrono::milliseconds max_jitter(std::chrono::milliseconds splay);

// Delay from wall time `now` until the next turn on the grid {k * interval + offset} that is strictly after now,
// plus `jitter`. Nodes with different offsets never fetch together however they were booted.
std::chrono::milliseconds next_turn_delay(std::chrono::system_clock::time_point now, std::chrono::milliseconds interval,
                                          std::chrono::milliseconds offset, std::chrono::milliseconds jitter);

// Delay before the first turn after a (re)start: uniform in [0, splay], so a fleet booted (or restarted) together
// spreads its first requests over the splay instead of hitting the controller in the same second.
std::chrono::milliseconds start_delay(std::chrono::milliseconds splay, Random& random);

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
