#pragma once
// eventually: polls a condition until it holds or a limit passes (for threads and processes a test starts).
#include <chrono>
#include <functional>
#include <thread>

namespace nodeform::test {

// True as soon as condition() is; false when it still is not after limit.
inline bool eventually(const std::function<bool()>& condition,
                       std::chrono::milliseconds limit = std::chrono::seconds(10),
                       std::chrono::milliseconds poll = std::chrono::milliseconds(5)) {
    auto end = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < end) {
        if (condition()) return true;
        std::this_thread::sleep_for(poll);
    }
    return condition();
}

}  // namespace nodeform::test
