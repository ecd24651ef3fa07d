// libFuzzer: arbitrary bytes → YAML → JSON with positions → schema validation for every file kind.
// Must never crash, hang, leak or throw; positions must point inside the input.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "schema.hpp"
#include "yaml_json.hpp"

using namespace nodeform::site;

namespace {
const detail::SchemaSet& schemas() {
    static const detail::SchemaSet set;  // immutable after construction; harness-only
    return set;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size > 64 * 1024) return 0;
    std::string text(reinterpret_cast<const char*>(data), size);
    std::vector<Diagnostic> diagnostics;
    detail::YamlLimits limits;
    limits.max_nodes = 20000;
    auto doc = detail::parse_yaml(text, "fuzz.yaml", limits, diagnostics);
    if (doc) {
        for (auto kind : {detail::FileKind::site, detail::FileKind::spec, detail::FileKind::posture,
                          detail::FileKind::preset, detail::FileKind::node, detail::FileKind::secrets}) {
            schemas().validate(kind, *doc, diagnostics);
        }
    }
    std::size_t lines = 1;
    for (char c : text)
        lines += c == '\n';
    for (const auto& d : diagnostics) {
        if (d.line < 0 || static_cast<std::size_t>(d.line) > lines + 1) __builtin_trap();
        (void)d.to_string();
    }
    return 0;
}
