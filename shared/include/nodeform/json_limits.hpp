#pragma once
// Every JSON or YAML document that comes from outside the process (HTTP bodies and answers, spec, seed, config and
// state files read back) is parsed through these: size and nesting depth are bounded at parse time, so no later
// recursive walk (dump, hash, compare) can exhaust the stack, and the error says which limit was hit.
#include <cstddef>
#include <string>
#include <string_view>

#include <yaml-cpp/node/node.h>
#include <nlohmann/json.hpp>

#include "nodeform/result.hpp"

namespace nodeform {

// Arrays/objects (YAML sequences/mappings) nest at most this deep; the outermost container is level 1.
inline constexpr std::size_t kMaxDocumentDepth = 128;

struct DocumentLimits {
    std::size_t max_bytes = 0;  // required: the caller's size limit for this document
    std::size_t max_depth = kMaxDocumentDepth;
};

// Deepest nesting of arrays/objects in JSON text (brackets outside strings), counting no further than cap + 1.
std::size_t json_nesting_depth(std::string_view text, std::size_t cap);

// One JSON value within limits. Errors: "larger than N bytes", "nested deeper than N levels", "not valid JSON: …".
Result<nlohmann::json> parse_json_bounded(std::string_view text, const DocumentLimits& limits);

// One YAML document within limits (a second document is an error). Errors name LINE:COLUMN where known.
Result<YAML::Node> load_yaml_bounded(const std::string& text, const DocumentLimits& limits);

}  // namespace nodeform
