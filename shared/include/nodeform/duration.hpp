#pragma once
// The one duration grammar of nodeform (docs/site-config.md, "Durations"): site files, the agent's config and
// flags and the controller's config and flags all read durations through parse_duration.
#include <chrono>
#include <optional>
#include <string_view>

namespace nodeform {

// DIGITS [UNIT]: at most 12 digits, UNIT one of ms, s, m, min, h, d; no unit means seconds; surrounding
// whitespace is ignored; at most 2^40 ms (about 34 years). Anything else (fractions, signs, "5 minutes") is nullopt.
std::optional<std::chrono::milliseconds> parse_duration(std::string_view text);

// How error messages show the grammar to a person.
inline constexpr const char* kDurationExamples = "250ms, 30s, 5m, 2h, 7d or plain seconds";

}  // namespace nodeform
