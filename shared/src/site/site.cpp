// load_site(): read every file of a site directory, validate (schema + semantics), resolve every node.
#include "nodeform/site/site.hpp"

#include <algorithm>
#include <filesystem>
#include <set>
#include <tuple>

#include "context.hpp"
#include "names.hpp"
#include "nodeform/canonical_json.hpp"
#include "nodeform/enum_names.hpp"

namespace nodeform::site {
namespace {

namespace fs = std::filesystem;
using detail::Context;
using detail::Document;
using detail::FileKind;

constexpr std::size_t kMaxFilesPerDirectory = 65536;  // a fleet's nodes/ (issue 17: 10,000 nodes)
constexpr std::size_t kMaxSiteBytes = 256u << 20;     // all YAML files of a site together

bool ends_with(const std::string& s, const std::string& suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The site directory on disk.
class DirectoryFiles : public detail::SiteFiles {
  public:
    explicit DirectoryFiles(std::string dir) : dir_(std::move(dir)) {}
    bool is_directory(const std::string& path) const override {
        std::error_code ec;
        return fs::is_directory(full(path), ec);
    }
    bool exists(const std::string& path) const override {
        std::error_code ec;
        return fs::exists(full(path), ec);
    }
    std::optional<std::vector<std::string>> list(const std::string& path, std::string& reason) const override {
        std::error_code ec;
        std::vector<std::string> entries;
        fs::directory_iterator it(full(path), ec);
        if (ec) {
            reason = "cannot list the directory: " + ec.message();
            return std::nullopt;
        }
        for (; it != fs::directory_iterator(); it.increment(ec)) {
            if (ec) break;
            entries.push_back(it->path().filename().string());
            if (entries.size() > kMaxFilesPerDirectory) break;
        }
        return entries;
    }
    std::optional<std::string> read(const std::string& path, std::size_t max_bytes,
                                    std::string& reason) const override {
        return detail::read_bounded(full(path), max_bytes, reason);
    }

  private:
    std::string full(const std::string& path) const {
        if (path.empty()) return dir_;
        return path[0] == '/' ? path : dir_ + "/" + path;
    }
    std::string dir_;
};

// A site held in memory: relative path → content. Directories are implied by the paths.
class MemoryFiles : public detail::SiteFiles {
  public:
    explicit MemoryFiles(const std::map<std::string, std::string>& files) : files_(files) {}
    bool is_directory(const std::string& path) const override {
        if (path.empty()) return true;
        auto it = files_.lower_bound(path + "/");
        return it != files_.end() && it->first.rfind(path + "/", 0) == 0;
    }
    bool exists(const std::string& path) const override { return files_.count(path) != 0 || is_directory(path); }
    std::optional<std::vector<std::string>> list(const std::string& path, std::string& reason) const override {
        (void)reason;
        std::set<std::string> names;
        std::string prefix = path.empty() ? "" : path + "/";
        for (auto it = files_.lower_bound(prefix); it != files_.end() && it->first.rfind(prefix, 0) == 0; ++it) {
            std::string rest = it->first.substr(prefix.size());
            names.insert(rest.substr(0, rest.find('/')));
        }
        return std::vector<std::string>(names.begin(), names.end());
    }
    std::optional<std::string> read(const std::string& path, std::size_t max_bytes,
                                    std::string& reason) const override {
        auto it = files_.find(path);
        if (it == files_.end()) {
            reason = is_directory(path) ? "not a regular file" : "cannot open: No such file or directory";
            return std::nullopt;
        }
        if (it->second.size() > max_bytes) {
            reason = "the file is " + std::to_string(it->second.size()) + " bytes; the limit is " +
                     std::to_string(max_bytes) + " bytes";
            return std::nullopt;
        }
        return it->second;
    }

  private:
    const std::map<std::string, std::string>& files_;
};

std::optional<Document> load_file(Context& c, const std::string& file) {
    std::string reason;
    auto text = c.source->read(file, c.limits.max_file_bytes, reason);
    if (!text) {
        c.add({file, 0, 0, "", reason});
        return std::nullopt;
    }
    if (text->size() > kMaxSiteBytes - c.site_bytes) {
        c.add({file, 0, 0, "",
               "the site's YAML passes " + std::to_string(kMaxSiteBytes >> 20) + " MiB in total here; split the site"});
        return std::nullopt;
    }
    c.site_bytes += text->size();
    return detail::parse_yaml(*text, file, c.limits, c.diagnostics);
}

// Loads and schema-validates every NAME.yaml / NAME.yml in sub into out (by NAME).
void load_directory(Context& c, const detail::SchemaSet& schemas, const std::string& sub, FileKind kind,
                    std::map<std::string, Document>& out) {
    if (!c.source->exists(sub)) return;
    if (!c.source->is_directory(sub)) {
        c.add({sub, 0, 0, "", "must be a directory"});
        return;
    }
    std::string reason;
    auto listed = c.source->list(sub, reason);
    if (!listed) {
        c.add({sub, 0, 0, "", reason});
        return;
    }
    std::vector<std::string> entries = std::move(*listed);
    if (entries.size() > kMaxFilesPerDirectory) {
        c.add({sub, 0, 0, "", "more than " + std::to_string(kMaxFilesPerDirectory) + " entries; split the site"});
        return;
    }
    std::sort(entries.begin(), entries.end());
    std::map<std::string, std::string> seen;  // name → file
    for (const auto& entry : entries) {
        std::string file = sub + "/" + entry;
        if (entry.empty() || entry[0] == '.' || entry.rfind("README", 0) == 0) continue;
        std::string stem;
        if (ends_with(entry, ".yaml")) {
            stem = entry.substr(0, entry.size() - 5);
        } else if (ends_with(entry, ".yml")) {
            stem = entry.substr(0, entry.size() - 4);
        } else {
            c.add({file, 0, 0, "", "not a .yaml file; rename it or move it out of " + sub + "/"});
            continue;
        }
        if (c.source->is_directory(file)) {
            c.add({file, 0, 0, "", "is a directory; expected a file"});
            continue;
        }
        if (kind != FileKind::node) {
            std::string why = detail::check_object_name(stem);
            if (!why.empty()) {
                c.add({file, 0, 0, "", "name " + detail::quote_for_message(stem) + " (from the file name) " + why});
                continue;
            }
        }
        if (auto [it2, inserted] = seen.emplace(stem, file); !inserted) {
            c.add({file, 0, 0, "",
                   "duplicate name " + detail::quote_for_message(stem) + ": " + it2->second + " defines it too"});
            continue;
        }
        auto doc = load_file(c, file);
        if (!doc) continue;
        schemas.validate(kind, *doc, c.diagnostics);
        out.emplace(stem, std::move(*doc));
    }
}

LoadResult load_from(const detail::SiteFiles& source, const std::string& dir, const LoadOptions& options) {
    LoadResult result;
    Context c;
    c.source = &source;
    c.dir = dir;
    c.options = options;
    detail::SchemaSet schemas;
    if (!source.exists("site.yaml")) {
        c.add({"site.yaml", 0, 0, "", "missing: every site needs site.yaml (see docs/site-config.md)"});
    } else {
        c.site = load_file(c, "site.yaml");
        if (c.site) schemas.validate(FileKind::site, *c.site, c.diagnostics);
    }
    if (source.exists("secrets.yaml")) {
        c.secrets = load_file(c, "secrets.yaml");
        if (c.secrets) schemas.validate(FileKind::secrets, *c.secrets, c.diagnostics);
    }
    load_directory(c, schemas, "postures", FileKind::posture, c.postures);
    load_directory(c, schemas, "presets", FileKind::preset, c.presets);
    load_directory(c, schemas, "specs", FileKind::spec, c.specs);
    load_directory(c, schemas, "nodes", FileKind::node, c.nodes);
    detail::check_site(c);

    if (c.diagnostics.empty() && c.site) {
        Site site;
        site.dir = dir;
        detail::resolve_site(c, site);
        if (c.diagnostics.empty()) result.site = std::move(site);
    }
    std::stable_sort(c.diagnostics.begin(), c.diagnostics.end(), [](const Diagnostic& a, const Diagnostic& b) {
        return std::tie(a.file, a.line, a.column) < std::tie(b.file, b.line, b.column);
    });
    for (auto& d : c.diagnostics) {
        if (!result.diagnostics.empty()) {
            const auto& last = result.diagnostics.back();
            if (last.file == d.file && last.line == d.line && last.column == d.column && last.field == d.field &&
                last.message == d.message) {
                continue;
            }
        }
        result.diagnostics.push_back(std::move(d));
    }
    return result;
}

}  // namespace

std::string Diagnostic::to_string() const {
    return file + ":" + std::to_string(line) + ":" + std::to_string(column) + ": " + (field.empty() ? "-" : field) +
           ": " + message;
}

LoadResult load_site(const std::string& dir) {
    return load_site(dir, LoadOptions{});
}

LoadResult load_site(const std::string& dir, const LoadOptions& options) {
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) {
        LoadResult result;
        result.diagnostics.push_back(
            {dir, 0, 0, "", "is not a directory; pass the site directory (the one holding site.yaml)"});
        return result;
    }
    DirectoryFiles source(dir);
    return load_from(source, dir, options);
}

LoadResult load_site_files(const std::map<std::string, std::string>& files, const LoadOptions& options) {
    MemoryFiles source(files);
    return load_from(source, "", options);
}

nlohmann::json diagnostics_to_json(const std::vector<Diagnostic>& diagnostics) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& d : diagnostics) {
        out.push_back(
            {{"file", d.file}, {"line", d.line}, {"column", d.column}, {"field", d.field}, {"message", d.message}});
    }
    return out;
}

nlohmann::json redact_resolved(const nlohmann::json& resolved) {
    nlohmann::json out = resolved;
    const auto* paths = resolved.is_object() && resolved.contains("secret_paths") ? &resolved["secret_paths"] : nullptr;
    if (paths == nullptr || !paths->is_array()) return out;
    for (const auto& p : *paths) {
        if (!p.is_string()) continue;
        try {
            nlohmann::json::json_pointer pointer(p.get<std::string>());
            if (out.contains(pointer)) out[pointer] = "[REDACTED]";
        } catch (const nlohmann::json::exception&) {
            // A malformed pointer is not ours to fix here; leave the document as it is.
        }
    }
    return out;
}

namespace {

constexpr EnumName<AuthMethod> kAuthMethods[] = {
    {AuthMethod::network, "network"}, {AuthMethod::site_token, "site_token"}, {AuthMethod::node_token, "node_token"}};
constexpr EnumName<DecommissionPolicy> kDecommissionPolicies[] = {
    {DecommissionPolicy::requires_final_backup, "requires_final_backup"},
    {DecommissionPolicy::requires_migration_first, "requires_migration_first"},
    {DecommissionPolicy::allow_immediate_destroy, "allow_immediate_destroy"}};

}  // namespace

std::string render_node(const Node& node, bool reveal_secrets) {
    return canonical_dump(reveal_secrets ? node.resolved : redact_resolved(node.resolved)) + "\n";
}

const char* to_string(AuthMethod method) {
    return name_of(kAuthMethods, method);
}

std::optional<AuthMethod> parse_auth_method(std::string_view name) {
    return value_of(kAuthMethods, name);
}

const char* to_string(DecommissionPolicy policy) {
    return name_of(kDecommissionPolicies, policy);
}

std::optional<DecommissionPolicy> parse_decommission_policy(std::string_view name) {
    return value_of(kDecommissionPolicies, name);
}

}  // namespace nodeform::site
