// apt sources: /etc/apt/sources.list.d/nodeform-NAME.sources in deb822 form with Signed-By naming the site's key,
// written to /etc/apt/keyrings/nodeform-NAME.asc (no apt-key, no key trusted for every source); when any source
// changed, one `apt-get update` for all of them, before the packages stage.
#include "../engine/context.hpp"
#include "converge_each.hpp"
#include "nodeform/agent/validate.hpp"

namespace nodeform::agent {
namespace {

const std::string kBegin = "-----BEGIN PGP PUBLIC KEY BLOCK-----";
const std::string kEnd = "-----END PGP PUBLIC KEY BLOCK-----";

std::vector<std::string> strings(const nlohmann::json& j, const char* key) {
    std::vector<std::string> out;
    auto it = j.is_object() ? j.find(key) : j.end();
    if (!j.is_object() || it == j.end() || !it->is_array()) return out;
    for (const auto& v : *it) {
        if (v.is_string()) out.push_back(v.get<std::string>());
    }
    return out;
}

std::string join(const std::vector<std::string>& v) {
    std::string out;
    for (const auto& s : v)
        out += (out.empty() ? "" : " ") + s;
    return out;
}

// The deb822 stanza of item, or an error naming the field.
Result<std::string> sources_text(const Item& item, const std::string& keyring) {
    auto uris = strings(item.spec, "uris");
    auto suites = strings(item.spec, "suites");
    auto components = strings(item.spec, "components");
    auto architectures = strings(item.spec, "architectures");
    if (uris.empty()) return make_error("uris must list at least one http:// or https:// URI");
    for (const auto& u : uris) {
        bool scheme = u.rfind("http://", 0) == 0 || u.rfind("https://", 0) == 0;
        if (!scheme || !word_chars(u, ":/.-_~%+@[]")) return make_error("invalid URI " + quote_for_message(u));
    }
    if (suites.empty()) return make_error("suites must list at least one suite");
    for (const auto& s : suites) {
        if (!word_chars(s, "._/-")) return make_error("invalid suite " + quote_for_message(s));
    }
    bool flat = suites.size() == 1 && suites[0].back() == '/';
    if (!flat && components.empty()) return make_error("components must list at least one component");
    if (flat && !components.empty()) return make_error("a flat repository (suite ending in '/') has no components");
    for (const auto& c : components) {
        if (!word_chars(c, "._/-")) return make_error("invalid component " + quote_for_message(c));
    }
    for (const auto& a : architectures) {
        if (!word_chars(a, "-")) return make_error("invalid architecture " + quote_for_message(a));
    }
    std::string out = "# Managed by nodeform: changes here are overwritten.\nTypes: deb\nURIs: " + join(uris) +
                      "\nSuites: " + join(suites) + "\n";
    if (!components.empty()) out += "Components: " + join(components) + "\n";
    if (!architectures.empty()) out += "Architectures: " + join(architectures) + "\n";
    return out + "Signed-By: " + keyring + "\n";
}

}  // namespace

std::vector<ResourceResult> converge_apt_sources(Context& ctx, const std::vector<Item>& items) {
    std::vector<std::size_t> changed;
    std::size_t index = 0;
    auto results = converge_each(ctx, items, [&](const Item& item, ResourceResult& r) -> std::string {
        const std::size_t at = index++;
        const std::string name = item.name;
        const bool present = string_field(item.spec, "state", "present") == "present";
        if (auto st = validate_stack_name(name); !st)
            return "invalid apt source name " + quote_for_message(name) +
                   ": use 1-63 lower-case letters, digits, '_' or '-'";
        const std::string list = "/etc/apt/sources.list.d/nodeform-" + name + ".sources";
        const std::string keyring = "/etc/apt/keyrings/nodeform-" + name + ".asc";
        std::optional<std::string> sources, key;
        if (present) {
            auto text = sources_text(item, keyring);
            if (!text) return text.message();
            sources = *text;
            key = string_field(item.spec, "key");
            while (!key->empty() && (key->back() == '\n' || key->back() == ' '))
                key->pop_back();
            if (key->rfind(kBegin, 0) != 0 || key->size() < kEnd.size() ||
                key->compare(key->size() - kEnd.size(), kEnd.size(), kEnd) != 0 || key->size() > 64 * 1024)
                return "key must be one ASCII-armored OpenPGP public key (" + kBegin + " … " + kEnd + ")";
            *key += "\n";
        }
        const std::size_t before = r.changes.size();
        if (auto s = ensure_file(ctx, r, item.pointer + "/key", "key", keyring, key, 0644, 0, 0); !s)
            return s.message();
        if (auto s = ensure_file(ctx, r, item.pointer, "sources", list, sources, 0644, 0, 0); !s) return s.message();
        if (r.changes.size() > before) changed.push_back(at);
        r.message = r.changes.empty() ? (present ? "configured" : "absent")
                                      : (ctx.apply() ? (present ? "configured" : "removed")
                                                     : (present ? "would configure" : "would remove"));
        return {};
    });
    if (!changed.empty() && ctx.apply()) {
        // One update for every changed source: the packages stage then sees their packages.
        auto res =
            ctx.run(ctx.in_root({"apt-get", "update", "-q", "-o",
                                 "DPkg::Lock::Timeout=" + std::to_string(ctx.options.dpkg_lock_timeout.count())}),
                    ctx.long_timeout(), {{"DEBIAN_FRONTEND", "noninteractive"}});
        if (!res) {
            for (auto i : changed) {
                results[i].status = ResourceStatus::failed;
                results[i].message = "written, but apt-get update failed (the next run retries): " + res.message();
            }
        } else {
            for (auto i : changed)
                results[i].message += "; apt-get update done";
        }
    }
    return results;
}

}  // namespace nodeform::agent
