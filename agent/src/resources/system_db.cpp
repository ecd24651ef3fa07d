#include "nodeform/agent/resources/system_db.hpp"

#include <charconv>

namespace nodeform::agent {
namespace {

std::vector<std::string_view> split(std::string_view line, char sep) {
    std::vector<std::string_view> parts;
    std::size_t start = 0;
    while (true) {
        std::size_t pos = line.find(sep, start);
        if (pos == std::string_view::npos) {
            parts.push_back(line.substr(start));
            return parts;
        }
        parts.push_back(line.substr(start, pos - start));
        start = pos + 1;
    }
}

bool parse_id(std::string_view text, unsigned& out) {
    if (text.empty()) return false;
    auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
    return ec == std::errc() && ptr == text.data() + text.size();
}

template <typename F>
void for_each_line(std::string_view text, F f) {
    std::size_t start = 0;
    while (start < text.size()) {
        std::size_t end = text.find('\n', start);
        if (end == std::string_view::npos) end = text.size();
        std::string_view line = text.substr(start, end - start);
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        f(line);
        start = end + 1;
    }
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
        s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
        s.remove_suffix(1);
    return s;
}

}  // namespace

std::map<std::string, DpkgPackage> parse_dpkg_status(std::string_view text) {
    std::map<std::string, DpkgPackage> packages;
    DpkgPackage current;
    auto flush = [&]() {
        if (!current.name.empty()) {
            // Prefer an installed instance when several architectures share a name.
            auto it = packages.find(current.name);
            if (it == packages.end() || (!it->second.installed() && current.installed()))
                packages[current.name] = current;
            if (!current.architecture.empty()) packages[current.name + ":" + current.architecture] = current;
        }
        current = DpkgPackage{};
    };
    for_each_line(text, [&](std::string_view line) {
        if (line.empty()) {
            flush();
            return;
        }
        if (line.front() == ' ' || line.front() == '\t') return;  // continuation
        std::size_t colon = line.find(':');
        if (colon == std::string_view::npos) return;
        std::string_view key = line.substr(0, colon);
        std::string_view value = trim(line.substr(colon + 1));
        if (key == "Package") {
            if (!current.name.empty()) flush();  // a stanza that lost its blank separator line
            current.name = std::string(value);
        } else if (key == "Architecture") {
            current.architecture = std::string(value);
        } else if (key == "Version") {
            current.version = std::string(value);
        } else if (key == "Status") {
            auto words = split(value, ' ');
            if (words.size() == 3) {
                current.want = std::string(words[0]);
                current.state = std::string(words[2]);
            }
        }
    });
    flush();
    return packages;
}

std::vector<PasswdEntry> parse_passwd(std::string_view text) {
    std::vector<PasswdEntry> entries;
    for_each_line(text, [&](std::string_view line) {
        if (line.empty() || line.front() == '#' || line.front() == '+' || line.front() == '-') return;
        auto f = split(line, ':');
        if (f.size() != 7 || f[0].empty()) return;
        unsigned uid = 0, gid = 0;
        if (!parse_id(f[2], uid) || !parse_id(f[3], gid)) return;
        entries.push_back({std::string(f[0]), uid, gid, std::string(f[4]), std::string(f[5]), std::string(f[6])});
    });
    return entries;
}

std::vector<ShadowEntry> parse_shadow(std::string_view text) {
    std::vector<ShadowEntry> entries;
    for_each_line(text, [&](std::string_view line) {
        if (line.empty() || line.front() == '#') return;
        auto f = split(line, ':');
        if (f.size() != 9 || f[0].empty()) return;
        entries.push_back({std::string(f[0]), std::string(f[1]), std::string(f[7])});
    });
    return entries;
}

std::vector<GroupEntry> parse_group(std::string_view text) {
    std::vector<GroupEntry> entries;
    for_each_line(text, [&](std::string_view line) {
        if (line.empty() || line.front() == '#' || line.front() == '+' || line.front() == '-') return;
        auto f = split(line, ':');
        if (f.size() != 4 || f[0].empty()) return;
        unsigned gid = 0;
        if (!parse_id(f[2], gid)) return;
        GroupEntry g{std::string(f[0]), gid, {}};
        if (!f[3].empty()) {
            for (auto m : split(f[3], ',')) {
                if (!trim(m).empty()) g.members.emplace_back(trim(m));
            }
        }
        entries.push_back(std::move(g));
    });
    return entries;
}

const PasswdEntry* AccountsDb::user(const std::string& name) const {
    for (const auto& u : users) {
        if (u.name == name) return &u;
    }
    return nullptr;
}

const GroupEntry* AccountsDb::group(const std::string& name) const {
    for (const auto& g : groups) {
        if (g.name == name) return &g;
    }
    return nullptr;
}

const GroupEntry* AccountsDb::group_by_gid(gid_t gid) const {
    for (const auto& g : groups) {
        if (g.gid == gid) return &g;
    }
    return nullptr;
}

std::vector<std::string> AccountsDb::supplementary_groups(const std::string& user) const {
    std::vector<std::string> out;
    for (const auto& g : groups) {
        for (const auto& m : g.members) {
            if (m == user) {
                out.push_back(g.name);
                break;
            }
        }
    }
    return out;
}

}  // namespace nodeform::agent
