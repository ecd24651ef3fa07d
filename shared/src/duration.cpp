#include "nodeform/duration.hpp"

#include <array>
#include <cstdint>
#include <utility>

namespace nodeform {
namespace {

bool is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

constexpr std::array<std::pair<std::string_view, std::int64_t>, 7> kUnits = {
    {{"", 1000}, {"ms", 1}, {"s", 1000}, {"m", 60'000}, {"min", 60'000}, {"h", 3'600'000}, {"d", 86'400'000}}};

}  // namespace

std::optional<std::chrono::milliseconds> parse_duration(std::string_view text) {
    while (!text.empty() && is_space(text.front()))
        text.remove_prefix(1);
    while (!text.empty() && is_space(text.back()))
        text.remove_suffix(1);
    std::size_t i = 0;
    std::int64_t n = 0;
    while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
        if (++i > 12) return std::nullopt;
        n = n * 10 + (text[i - 1] - '0');
    }
    if (i == 0) return std::nullopt;
    const std::string_view unit = text.substr(i);
    for (const auto& [name, ms_per] : kUnits) {
        if (unit != name) continue;
        if (n > (std::int64_t{1} << 40) / ms_per) return std::nullopt;
        return std::chrono::milliseconds(n * ms_per);
    }
    return std::nullopt;
}

}  // namespace nodeform
