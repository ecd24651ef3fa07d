#pragma once
// YAML text → nlohmann::json with a map from JSON Pointer to the source position of every value and key.
// Bounded: file size, nesting depth and expanded node count (alias bombs) are capped; never throws.
#include <cstddef>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "nodeform/site/site.hpp"

namespace nodeform::site::detail {

struct Mark {
    int line = 0;    // 1-based; 0 unknown
    int column = 0;  // 1-based; 0 unknown
};

struct YamlLimits {
    std::size_t max_file_bytes = 1024 * 1024;
    int max_depth = 64;
    std::size_t max_nodes = 100000;
};

// One parsed file: its JSON form and where each value (and each object key) came from.
struct Document {
    std::string file;  // relative to the site directory
    nlohmann::json json;
    std::map<std::string, Mark> value_marks;  // JSON Pointer → position of the value
    std::map<std::string, Mark> key_marks;    // JSON Pointer → position of the key naming it

    // Position for pointer: the key if key_first and known, else the value, else the nearest ancestor.
    Mark mark_of(const std::string& pointer, bool key_first = false) const;
    // A diagnostic at pointer, FIELD being the dotted form of the pointer.
    Diagnostic diag(const std::string& pointer, std::string message, bool at_key = false) const;
};

// Parses text as a single YAML document. Appends diagnostics for every problem; nullopt when unusable.
std::optional<Document> parse_yaml(const std::string& text, const std::string& file, const YamlLimits& limits,
                                   std::vector<Diagnostic>& diagnostics);

// Reads a file of at most max_bytes; nullopt and a reason when it cannot.
std::optional<std::string> read_bounded(const std::string& path, std::size_t max_bytes, std::string& reason);

// Offset of the first byte that is not strict UTF-8 (no overlongs, surrogates, > U+10FFFF); npos when valid.
std::size_t invalid_utf8_at(std::string_view text);

// RFC 6901 helpers.
std::string pointer_escape(const std::string& token);
// Splits "/a/b~1c" into its unescaped tokens {"a", "b/c"}; "" gives none.
std::vector<std::string> pointer_tokens(const std::string& pointer);
std::string pointer_join(const std::string& pointer, const std::string& token);
std::string pointer_join(const std::string& pointer, std::size_t index);
// "/access/users/2/name" → "access.users[2].name" (array indices found from doc when given).
std::string pointer_to_field(const std::string& pointer, const nlohmann::json* doc = nullptr);

}  // namespace nodeform::site::detail
