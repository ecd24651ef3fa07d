#include "nodeform/template.hpp"

#include <algorithm>

namespace nodeform {
namespace {

bool fact_char(char c) {
    return (c >= 'a' && c <= 'z') || c == '_';
}

// Walks text once: literal runs go to on_text, each substitution's fact name to on_fact (which may fail).
template <typename OnText, typename OnFact>
Status walk(std::string_view text, OnText on_text, OnFact on_fact) {
    std::size_t line = 1;
    std::size_t i = 0;
    while (i < text.size()) {
        char c = text[i];
        if (c == '\\' && text.substr(i + 1, 2) == "{{") {
            on_text("{{");
            i += 3;
            continue;
        }
        if (c == '\\' && text.substr(i + 1, 3) == "\\{{") {
            on_text("\\");
            i += 2;  // the `{{` that follows is a substitution
            continue;
        }
        if (c != '{' || text.substr(i, 2) != "{{") {
            if (c == '\n') ++line;
            on_text(std::string_view(&text[i], 1));
            ++i;
            continue;
        }
        std::size_t close = text.find("}}", i + 2);
        std::size_t newline = text.find('\n', i + 2);
        const std::string where = "line " + std::to_string(line) + ": ";
        if (close == std::string_view::npos || (newline != std::string_view::npos && newline < close)) {
            return make_error(where + "'{{' is not closed by '}}' on the same line (write \\{{ for a literal '{{')");
        }
        std::string_view inner = text.substr(i + 2, close - i - 2);
        while (!inner.empty() && inner.front() == ' ')
            inner.remove_prefix(1);
        while (!inner.empty() && inner.back() == ' ')
            inner.remove_suffix(1);
        std::string name(inner);
        if (name.empty() || !std::all_of(name.begin(), name.end(), fact_char)) {
            return make_error(where + "'{{" +
                              std::string(text.substr(i + 2, std::min<std::size_t>(close - i - 2, 40))) +
                              "}}' is not a fact name (write \\{{ for a literal '{{')");
        }
        const auto& names = template_fact_names();
        if (std::find(names.begin(), names.end(), name) == names.end()) {
            std::string known;
            for (const auto& n : names)
                known += (known.empty() ? "" : ", ") + n;
            return make_error(where + "unknown fact '" + name + "' (known: " + known + ")");
        }
        if (auto st = on_fact(name, where); !st) return st;
        i = close + 2;
    }
    return Ok{};
}

}  // namespace

const std::vector<std::string>& template_fact_names() {
    static const std::vector<std::string> names = {"hostname", "fqdn", "primary_ip", "site", "node"};
    return names;
}

Result<std::vector<std::string>> template_facts_used(std::string_view text) {
    std::vector<std::string> used;
    auto st = walk(
        text, [](std::string_view) {},
        [&used](const std::string& name, const std::string&) -> Status {
            if (std::find(used.begin(), used.end(), name) == used.end()) used.push_back(name);
            return Ok{};
        });
    if (!st) return st.error();
    return used;
}

Result<std::string> render_template(std::string_view text, const std::map<std::string, std::string>& facts) {
    std::string out;
    out.reserve(text.size());
    auto st = walk(
        text, [&out](std::string_view s) { out.append(s); },
        [&](const std::string& name, const std::string& where) -> Status {
            auto it = facts.find(name);
            if (it == facts.end()) return make_error(where + name + " is not known on this node");
            out += it->second;
            return Ok{};
        });
    if (!st) return st.error();
    return out;
}

}  // namespace nodeform
