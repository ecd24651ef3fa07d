#include <vector>

#include "nodeform/agent/system/filesystem.hpp"

namespace nodeform::agent {

Result<std::string> normalize_path(const std::string& path) {
    if (path.empty() || path[0] != '/') return make_error("path '" + path + "' is not absolute");
    std::vector<std::string> parts;
    std::size_t i = 0;
    while (i < path.size()) {
        while (i < path.size() && path[i] == '/')
            ++i;
        std::size_t j = path.find('/', i);
        if (j == std::string::npos) j = path.size();
        std::string part = path.substr(i, j - i);
        i = j;
        if (part.empty() || part == ".") continue;
        if (part == "..") {
            if (!parts.empty()) parts.pop_back();
            continue;
        }
        parts.push_back(part);
    }
    std::string out;
    for (const auto& p : parts)
        out += "/" + p;
    return out.empty() ? std::string("/") : out;
}

Status make_directories(Filesystem& fs, const std::string& path, mode_t mode) {
    auto norm = normalize_path(path);
    if (!norm) return norm.error();
    if (*norm == "/") return Ok{};
    std::string current;
    std::size_t i = 1;
    while (i <= norm->size()) {
        std::size_t j = norm->find('/', i);
        if (j == std::string::npos) j = norm->size();
        current = norm->substr(0, j);
        auto info = fs.stat(current);
        if (!info) return info.error();
        if (!info->has_value()) {
            if (auto st = fs.mkdir(current, mode); !st) return st;
        } else if ((*info)->type != FileType::directory) {
            // A symlink to a directory is fine for the real filesystem (resolved in the root).
            if ((*info)->type != FileType::symlink) {
                return make_error(fs.host_path(current) + " exists and is not a directory");
            }
        }
        i = j + 1;
    }
    return Ok{};
}

}  // namespace nodeform::agent
