#pragma once
// The state of one load_site() run: every parsed file, resolved secrets and the diagnostics so far.
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "nodeform/site/site.hpp"
#include "schema.hpp"
#include "yaml_json.hpp"

namespace nodeform::site::detail {

using Json = nlohmann::json;

// A value from secrets.yaml, resolved on first use. Never put `value` in a diagnostic.
struct SecretEntry {
    std::string pointer;  // inside secrets.yaml
    bool resolved = false;
    bool ok = false;
    std::string value;
};

// Where one load_site() run reads the site's files: a directory (load_site) or memory (load_site_files,
// fuzzing). Not the controller's SiteSource (a whole loaded site plus a change stamp): this is file access.
// Paths are relative to the site ("specs/web.yaml"); read() also takes absolute paths (file: secrets).
class SiteFiles {
  public:
    virtual ~SiteFiles() = default;
    virtual bool is_directory(const std::string& path) const = 0;
    virtual bool exists(const std::string& path) const = 0;
    // Entry names directly inside path; nullopt and a reason when it cannot be listed.
    virtual std::optional<std::vector<std::string>> list(const std::string& path, std::string& reason) const = 0;
    virtual std::optional<std::string> read(const std::string& path, std::size_t max_bytes,
                                            std::string& reason) const = 0;
};

struct Context {
    const SiteFiles* source = nullptr;
    std::string dir;
    LoadOptions options;
    YamlLimits limits;
    std::vector<Diagnostic> diagnostics;

    std::optional<Document> site;
    std::optional<Document> secrets;
    std::map<std::string, Document> specs;  // by name (file stem)
    std::map<std::string, Document> postures;
    std::map<std::string, Document> presets;
    std::map<std::string, Document> nodes;
    std::map<std::string, SecretEntry> secret_cache;  // by pointer in secrets.yaml

    int max_name_length = 63;
    std::size_t site_bytes = 0;  // YAML read so far (bounded in total, not only per file)

    void add(Diagnostic d) { diagnostics.push_back(std::move(d)); }
};

// Safe accessors over documents that may not have passed schema validation.
const Json* member(const Json& object, const char* key);
std::string string_at(const Json& object, const char* key, const std::string& fallback = "");
std::optional<std::int64_t> int_at(const Json& object, const char* key);
bool bool_at(const Json& object, const char* key, bool fallback);
// Whole seconds (0 to 7 days) from an integer or a string in the one duration grammar (nodeform/duration.hpp);
// nullopt when malformed or out of range.
std::optional<std::int64_t> duration_seconds(const Json& value);
// duration_seconds of object[key], or fallback when the key is absent.
std::optional<std::int64_t> duration_at(const Json& object, const char* key, std::int64_t fallback);

// Semantic checks over every loaded file (references, names, formats, uniqueness). Appends diagnostics.
void check_site(Context& context);

// A secret from secrets.yaml section (ssh_keys, proxmox, stack_env) or "site_token" (key empty).
// Reports a problem with the source (env var unset, unreadable file, malformed key) once, at secrets.yaml.
// nullopt when missing or unusable; `missing` tells which.
std::optional<std::string> lookup_secret(Context& context, const std::string& section, const std::string& key,
                                         bool* missing = nullptr);

// Builds every node (sizing, placement, auth, resolved spec, digest). Only called when check_site found nothing.
void resolve_site(Context& context, Site& site);

// The posture's ssh block rendered as an sshd_config drop-in.
std::string render_sshd_config(const std::string& posture_name, const Json& ssh);

}  // namespace nodeform::site::detail
