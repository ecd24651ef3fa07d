#include "schema.hpp"

#include <algorithm>
#include <array>
#include <stdexcept>

#include "nodeform/enum_names.hpp"
#include "valijson_remainder.hpp"  // before valijson

#include <valijson/adapters/nlohmann_json_adapter.hpp>
#include <valijson/schema.hpp>
#include <valijson/schema_parser.hpp>
#include <valijson/validation_results.hpp>
#include <valijson/validator.hpp>

namespace nodeform::site::detail {
namespace {

// The schema of each kind of document; SchemaSet() loads the site's kinds, SchemaSet(kind) one kind alone.
constexpr EnumName<FileKind> kSchemaFiles[] = {
    {FileKind::site, "site.schema.json"},       {FileKind::spec, "spec.schema.json"},
    {FileKind::posture, "posture.schema.json"}, {FileKind::preset, "preset.schema.json"},
    {FileKind::node, "node.schema.json"},       {FileKind::secrets, "secrets.schema.json"},
    {FileKind::report, "report.schema.json"},   {FileKind::resolved_spec, "resolved-spec.schema.json"}};
// The kinds of a site directory; report and resolved_spec are loaded alone where they are checked.
constexpr std::array<FileKind, 6> kKinds = {FileKind::site,   FileKind::spec, FileKind::posture,
                                            FileKind::preset, FileKind::node, FileKind::secrets};

bool starts_with(const std::string& s, std::string_view prefix) {
    return s.rfind(prefix, 0) == 0;
}

std::string type_name(const nlohmann::json& value) {
    switch (value.type()) {
        case nlohmann::json::value_t::null:
            return "null (empty value)";
        case nlohmann::json::value_t::boolean:
            return "boolean";
        case nlohmann::json::value_t::number_integer:
        case nlohmann::json::value_t::number_unsigned:
            return "integer";
        case nlohmann::json::value_t::number_float:
            return "number";
        case nlohmann::json::value_t::string:
            return "string";
        case nlohmann::json::value_t::array:
            return "list";
        case nlohmann::json::value_t::object:
            return "mapping";
        default:
            return "value";
    }
}

std::string schema_type_name(const std::string& t) {
    if (t == "array") return "list";
    if (t == "object") return "mapping";
    return t;
}

std::string join_values(const nlohmann::json& values) {
    std::string out;
    for (const auto& v : values) {
        if (!out.empty()) out += ", ";
        out += v.is_string() ? v.get<std::string>() : v.dump();
    }
    return out;
}

std::string number_text(const nlohmann::json& v) {
    if (v.is_number_float()) {
        double d = v.get<double>();
        if (d == static_cast<double>(static_cast<std::int64_t>(d))) return std::to_string(static_cast<std::int64_t>(d));
    }
    return v.dump();
}

}  // namespace

const char* schema_file_name(FileKind kind) {
    return name_of(kSchemaFiles, kind, "");
}

std::size_t edit_distance(std::string_view a, std::string_view b) {
    if (a.size() > 64 || b.size() > 64) return 64;
    std::vector<std::size_t> prev(b.size() + 1), cur(b.size() + 1);
    for (std::size_t j = 0; j <= b.size(); ++j)
        prev[j] = j;
    for (std::size_t i = 1; i <= a.size(); ++i) {
        cur[0] = i;
        for (std::size_t j = 1; j <= b.size(); ++j) {
            std::size_t sub = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
            cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, sub});
        }
        std::swap(prev, cur);
    }
    return prev[b.size()];
}

struct SchemaSet::Impl {
    struct Entry {
        nlohmann::json source;
        valijson::Schema schema;
    };
    std::map<FileKind, std::unique_ptr<Entry>> entries;

    // The schema fragment for a JSON Pointer inside a document (following local $refs); null if none.
    const nlohmann::json* schema_at(const nlohmann::json& root, const nlohmann::json& doc,
                                    const std::string& pointer) const {
        const nlohmann::json* schema = &root;
        const nlohmann::json* node = &doc;
        auto deref = [&root](const nlohmann::json* s) {
            for (int guard = 0; guard < 8 && s != nullptr && s->is_object() && s->contains("$ref"); ++guard) {
                std::string ref = (*s)["$ref"].get<std::string>();
                if (!starts_with(ref, "#/")) return s;
                const nlohmann::json* t = &root;
                for (const auto& tok : pointer_tokens(ref.substr(1))) {
                    if (!t->is_object() || !t->contains(tok)) return static_cast<const nlohmann::json*>(nullptr);
                    t = &(*t)[tok];
                }
                s = t;
            }
            return s;
        };
        schema = deref(schema);
        for (const auto& token : pointer_tokens(pointer)) {
            if (schema == nullptr || node == nullptr) return nullptr;
            if (node->is_array()) {
                if (!schema->contains("items")) return nullptr;
                schema = deref(&(*schema)["items"]);
                std::size_t index = token.size() < 9 ? std::stoul("0" + token) : node->size();
                node = index < node->size() ? &(*node)[index] : nullptr;
            } else if (node->is_object()) {
                const nlohmann::json* next = nullptr;
                if (schema->contains("properties") && (*schema)["properties"].contains(token)) {
                    next = &(*schema)["properties"][token];
                } else if (schema->contains("additionalProperties") && (*schema)["additionalProperties"].is_object()) {
                    next = &(*schema)["additionalProperties"];
                }
                schema = deref(next);
                auto it = node->find(token);
                node = it != node->end() ? &*it : nullptr;
            } else {
                return nullptr;
            }
        }
        return schema;
    }
};

SchemaSet::SchemaSet() : impl_(std::make_unique<Impl>()) {
    for (FileKind kind : kKinds)
        add(kind);
}

SchemaSet::SchemaSet(FileKind only) : impl_(std::make_unique<Impl>()) {
    add(only);
}

void SchemaSet::add(FileKind kind) {
    auto text = embedded_schema(schema_file_name(kind));
    if (!text) throw std::logic_error(std::string("schema not embedded: ") + schema_file_name(kind));
    auto entry = std::make_unique<Impl::Entry>();
    entry->source = nlohmann::json::parse(*text);
    valijson::SchemaParser parser;
    valijson::adapters::NlohmannJsonAdapter adapter(entry->source);
    parser.populateSchema(adapter, entry->schema);
    impl_->entries.emplace(kind, std::move(entry));
}

SchemaSet::~SchemaSet() = default;

bool SchemaSet::validate(FileKind kind, const Document& doc, std::vector<Diagnostic>& out) const {
    const auto& entry = *impl_->entries.at(kind);
    valijson::Validator validator;
    valijson::ValidationResults results;
    valijson::adapters::NlohmannJsonAdapter target(doc.json);
    if (validator.validate(entry.schema, target, &results)) return true;

    std::set<std::pair<std::string, std::string>> seen;
    std::vector<Diagnostic> found;
    valijson::ValidationResults::Error error;
    while (results.popError(error)) {
        const std::string& d = error.description;
        if (starts_with(d, "Failed to validate item #") ||
            starts_with(d, "Failed to validate against schema associated") ||
            starts_with(d, "Failed to validate against additional properties") ||
            starts_with(d, "Failed to validate against any") || starts_with(d, "Failed to validate against child") ||
            starts_with(d, "Failed to validate against exactly")) {
            continue;
        }
        // Context: "<root>", "[key]", "[index]" → JSON Pointer.
        std::string pointer;
        for (std::size_t i = 1; i < error.context.size(); ++i) {
            std::string token = error.context[i];
            if (token.size() >= 2 && token.front() == '[' && token.back() == ']')
                token = token.substr(1, token.size() - 2);
            pointer = pointer_join(pointer, token);
        }
        if (!seen.insert({pointer, d}).second) continue;
        const nlohmann::json* value = nullptr;
        try {
            value = &doc.json.at(nlohmann::json::json_pointer(pointer));
        } catch (const std::exception&) {
            value = nullptr;
        }
        const nlohmann::json* schema = impl_->schema_at(entry.source, doc.json, pointer);
        if (starts_with(d, "Object contains a property that could not be validated")) {
            if (value == nullptr || !value->is_object()) continue;
            std::vector<std::string> allowed;
            if (schema != nullptr && schema->contains("properties")) {
                for (auto it = (*schema)["properties"].begin(); it != (*schema)["properties"].end(); ++it) {
                    allowed.push_back(it.key());
                }
            }
            for (auto it = value->begin(); it != value->end(); ++it) {
                if (std::find(allowed.begin(), allowed.end(), it.key()) != allowed.end()) continue;
                std::string message = "unknown key '" + it.key() + "'";
                std::string best;
                std::size_t best_distance = 3;
                for (const auto& name : allowed) {
                    std::size_t dist = edit_distance(it.key(), name);
                    if (dist < best_distance) best = name, best_distance = dist;
                }
                if (!best.empty()) {
                    message += "; did you mean '" + best + "'?";
                } else {
                    std::string list;
                    for (const auto& name : allowed)
                        list += (list.empty() ? "" : ", ") + name;
                    message += allowed.empty() ? "; no keys are allowed here" : "; allowed keys: " + list;
                }
                found.push_back(doc.diag(pointer_join(pointer, it.key()), message, true));
            }
            continue;
        }
        std::string message;
        std::string where = pointer;
        bool at_key = false;
        if (starts_with(d, "Missing required property '")) {
            std::string key = d.substr(27, d.size() - 27 - 2);
            Diagnostic missing = doc.diag(pointer, "missing required key '" + key + "'");
            missing.field = pointer_to_field(pointer_join(pointer, key), &doc.json);
            found.push_back(missing);
            continue;
        } else if (starts_with(d, "Value type not permitted")) {
            std::string expected;
            if (schema != nullptr && schema->contains("type")) {
                const auto& t = (*schema)["type"];
                if (t.is_string()) {
                    expected = schema_type_name(t.get<std::string>());
                } else {
                    for (const auto& x : t) {
                        expected += (expected.empty() ? "" : " or ") + schema_type_name(x.get<std::string>());
                    }
                }
            }
            message = "expected " + (expected.empty() ? std::string("another type") : expected) + ", got " +
                      (value != nullptr ? type_name(*value) : std::string("nothing"));
        } else if (starts_with(d, "Failed to match against any enum values") ||
                   starts_with(d, "Failed to match expected value set by 'const'")) {
            std::string got = value != nullptr
                                  ? (value->is_string() ? "'" + value->get<std::string>() + "'" : value->dump())
                                  : "nothing";
            if (got.size() > 80) got = got.substr(0, 77) + "...";
            message =
                "must be one of: " +
                (schema != nullptr && schema->contains("enum") ? join_values((*schema)["enum"]) : std::string("?")) +
                " (got " + got + ")";
        } else if (starts_with(d, "Expected number greater than")) {
            message = "must be at least " +
                      (schema != nullptr && schema->contains("minimum") ? number_text((*schema)["minimum"]) : "?") +
                      (value != nullptr ? " (got " + value->dump() + ")" : "");
        } else if (starts_with(d, "Expected number less than")) {
            message = "must be at most " +
                      (schema != nullptr && schema->contains("maximum") ? number_text((*schema)["maximum"]) : "?") +
                      (value != nullptr ? " (got " + value->dump() + ")" : "");
        } else if (starts_with(d, "String should be no fewer than")) {
            std::size_t n =
                schema != nullptr && schema->contains("minLength") ? (*schema)["minLength"].get<std::size_t>() : 1;
            message = n <= 1 ? "must not be empty" : "must be at least " + std::to_string(n) + " characters";
        } else if (starts_with(d, "String should be no more than")) {
            message = "is longer than " +
                      (schema != nullptr && schema->contains("maxLength") ? number_text((*schema)["maxLength"]) : "?") +
                      " characters";
        } else if (starts_with(d, "Array should contain no fewer than")) {
            message = "needs at least " +
                      (schema != nullptr && schema->contains("minItems") ? number_text((*schema)["minItems"]) : "1") +
                      " item(s)";
        } else {
            message = d;
        }
        found.push_back(doc.diag(where, message, at_key));
    }
    // valijson reports innermost errors first within each branch; present them in file order.
    std::stable_sort(found.begin(), found.end(), [](const Diagnostic& a, const Diagnostic& b) {
        return std::tie(a.line, a.column) < std::tie(b.line, b.column);
    });
    out.insert(out.end(), found.begin(), found.end());
    return false;
}

}  // namespace nodeform::site::detail

namespace nodeform::site {

std::vector<Diagnostic> validate_resolved_spec(const nlohmann::json& spec, const std::string& source) {
    detail::Document doc;
    doc.file = source;
    doc.json = spec;
    std::vector<Diagnostic> out;
    detail::SchemaSet(detail::FileKind::resolved_spec).validate(detail::FileKind::resolved_spec, doc, out);
    return out;
}

}  // namespace nodeform::site
