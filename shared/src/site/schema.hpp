#pragma once
// JSON Schema validation of one site file (valijson, schemas embedded from shared/defs/), with the
// errors rewritten for people and placed at the YAML position of the offending key or value.
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "yaml_json.hpp"

namespace nodeform::site::detail {

// report: the agent's run report (docs/protocol.md), validated by the controller through the same path.
// resolved_spec: what the resolver produces and the agent checks before converging (docs/resolved-spec.md).
enum class FileKind { site, spec, posture, preset, node, secrets, report, resolved_spec };

const char* schema_file_name(FileKind kind);
// The schema text compiled into the binary (generated from shared/defs/*.schema.json).
std::optional<std::string_view> embedded_schema(std::string_view name);

// Parsed schemas for every file kind; built once per load.
class SchemaSet {
  public:
    SchemaSet();  // the site's file kinds (not report)
    explicit SchemaSet(FileKind only);
    ~SchemaSet();
    SchemaSet(const SchemaSet&) = delete;
    SchemaSet& operator=(const SchemaSet&) = delete;

    // Appends one diagnostic per problem (all unknown keys, not only the first). Returns true when valid.
    bool validate(FileKind kind, const Document& doc, std::vector<Diagnostic>& out) const;

  private:
    void add(FileKind kind);
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

// Levenshtein distance, capped: used for "did you mean" hints.
std::size_t edit_distance(std::string_view a, std::string_view b);

}  // namespace nodeform::site::detail
