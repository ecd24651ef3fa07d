// locale: LANG=NAME in /etc/default/locale, and the locale generated when the system lacks it: its line enabled in
// /etc/locale.gen (checked against /usr/share/i18n/SUPPORTED, so a typo is an error, not a broken LANG) and one
// locale-gen. Whether it is generated is read from /usr/lib/locale and localedef --list-archive, so locale-gen runs
// only when the locale is missing. Runs after packages: the spec may install `locales` in the same run.
#include "../engine/context.hpp"
#include "converge_each.hpp"
#include "nodeform/agent/validate.hpp"

namespace nodeform::agent {
namespace {

// en_US.UTF-8 → en_US.utf8: the name glibc files a generated locale under.
std::string normalized(const std::string& name) {
    auto dot = name.find('.');
    if (dot == std::string::npos) return name;
    auto at = name.find('@', dot);
    std::string codeset = name.substr(dot + 1, at == std::string::npos ? std::string::npos : at - dot - 1);
    std::string out;
    for (char c : codeset) {
        if (c == '-') continue;
        out.push_back(c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c);
    }
    return name.substr(0, dot) + "." + out + (at == std::string::npos ? "" : name.substr(at));
}

std::vector<std::string> lines_of(const std::string& text) {
    std::vector<std::string> lines;
    std::size_t start = 0;
    while (start < text.size()) {
        auto end = text.find('\n', start);
        if (end == std::string::npos) end = text.size();
        lines.push_back(text.substr(start, end - start));
        start = end + 1;
    }
    return lines;
}

}  // namespace

Status validate_locale_name(const std::string& name) {
    const std::string rule = "a locale name such as \"en_US.UTF-8\", \"de_DE.UTF-8\" or \"C.UTF-8\"";
    bool ok = !name.empty() && name.size() <= 64 &&
              ((name.front() >= 'a' && name.front() <= 'z') || name.front() == 'C' || name == "POSIX");
    for (char c : name) {
        ok = ok && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                    c == '.' || c == '-' || c == '@');
    }
    if (ok) return Ok{};
    return make_error("invalid locale " + quote_for_message(name) + ": " + rule);
}

std::vector<ResourceResult> converge_locale(Context& ctx, const std::vector<Item>& items) {
    return converge_each(ctx, items, [&ctx](const Item& item, ResourceResult& r) -> std::string {
        const std::string name = item.name;
        if (auto st = validate_locale_name(name); !st) return st.message();
        const std::string norm = normalized(name);
        bool generated = name == "C" || name == "POSIX" || norm == "C.utf8";
        if (!generated) {
            auto dir = ctx.fs.stat("/usr/lib/locale/" + norm);
            generated = dir && dir->has_value();
        }
        if (!generated) {
            auto archive = ctx.run(ctx.in_root({"localedef", "--list-archive"}), ctx.short_timeout());
            if (archive) {
                for (const auto& l : lines_of(archive->out))
                    generated = generated || l == norm;
            }
        }
        if (!generated) {
            auto supported = ctx.fs.read("/usr/share/i18n/SUPPORTED", 1024 * 1024);
            if (!supported)
                return "cannot generate " + name +
                       ": /usr/share/i18n/SUPPORTED is missing; add the package locales to the spec's packages";
            std::string entry;
            for (const auto& l : lines_of(*supported)) {
                if (l.rfind(name + " ", 0) == 0) entry = l;
            }
            if (entry.empty())
                return "locale " + quote_for_message(name) +
                       " is not in /usr/share/i18n/SUPPORTED; use a name listed there (e.g. en_US.UTF-8)";
            r.changes.push_back(ctx.change(item.pointer, "generated", false, true));
            if (ctx.apply()) {
                auto current = ctx.fs.read("/etc/locale.gen", 1024 * 1024);
                std::string text = current ? *current : std::string();
                bool enabled = false;
                std::string out;
                for (const auto& l : lines_of(text)) {
                    if (l == entry || l == "# " + entry || l == "#" + entry) {
                        if (!enabled) out += entry + "\n";
                        enabled = true;
                    } else {
                        out += l + "\n";
                    }
                }
                if (!enabled) out += entry + "\n";
                if (auto st = ctx.fs.write_atomic("/etc/locale.gen", out, {0644, 0, 0}); !st) return st.message();
                auto gen = ctx.run(ctx.in_root({"locale-gen"}), ctx.long_timeout());
                if (!gen) return "locale-gen failed: " + gen.message();
            }
        }
        if (auto s =
                ensure_file(ctx, r, item.pointer, "default", "/etc/default/locale", "LANG=" + name + "\n", 0644, 0, 0);
            !s)
            return s.message();
        r.message =
            r.changes.empty() ? "LANG is " + name : (ctx.apply() ? "LANG set to " : "would set LANG to ") + name;
        return {};
    });
}

}  // namespace nodeform::agent
