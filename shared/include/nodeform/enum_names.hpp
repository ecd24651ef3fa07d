#pragma once
// EnumName tables: an enum's wire/CLI names written once and read both ways (to_string and parse share it).
#include <optional>
#include <string>
#include <string_view>

namespace nodeform {

template <typename E>
struct EnumName {
    E value;
    const char* name;
};

// The name of value in table; fallback when the table lacks it.
template <typename E, std::size_t N>
constexpr const char* name_of(const EnumName<E> (&table)[N], E value, const char* fallback = "?") {
    for (const auto& entry : table) {
        if (entry.value == value) return entry.name;
    }
    return fallback;
}

// The value named name in table; nullopt when no entry has that name.
template <typename E, std::size_t N>
constexpr std::optional<E> value_of(const EnumName<E> (&table)[N], std::string_view name) {
    for (const auto& entry : table) {
        if (name == entry.name) return entry.value;
    }
    return std::nullopt;
}

// "a, b or c": the names of table for a message.
template <typename E, std::size_t N>
std::string names_of(const EnumName<E> (&table)[N]) {
    std::string out;
    for (std::size_t i = 0; i < N; ++i)
        out += std::string(i == 0 ? "" : i + 1 == N ? " or " : ", ") + table[i].name;
    return out;
}

}  // namespace nodeform
