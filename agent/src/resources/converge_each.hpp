#pragma once
// The loop every resource converger shares: one result per item, finished and timed the same way.
#include <chrono>
#include <string>
#include <vector>

#include "../engine/context.hpp"

namespace nodeform::agent {

// converge_one(item, result) records the item's changes and message and returns its error ("" when none); each
// result is then finished (finish_result) and given the time it took.
template <typename ConvergeOne>
std::vector<ResourceResult> converge_each(Context& ctx, const std::vector<Item>& items, ConvergeOne converge_one) {
    std::vector<ResourceResult> results;
    for (const auto& item : items) {
        auto start = ctx.clock.steady_now();
        auto r = make_result(item);
        finish_result(ctx, r, converge_one(item, r));
        r.duration = std::chrono::duration_cast<std::chrono::milliseconds>(ctx.clock.steady_now() - start);
        results.push_back(r);
    }
    return results;
}

}  // namespace nodeform::agent
