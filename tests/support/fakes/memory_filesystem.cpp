#include "memory_filesystem.hpp"

#include <algorithm>

namespace nodeform::agent {
namespace {

std::string parent_of(const std::string& norm) {
    std::size_t slash = norm.rfind('/');
    return slash == 0 ? "/" : norm.substr(0, slash);
}

}  // namespace

MemoryFilesystem::MemoryFilesystem() {
    nodes["/"] = Node{FileType::directory, "", {0755, 0, 0}, ""};
}

void MemoryFilesystem::put_dir(const std::string& path, FileAttrs attrs) {
    auto norm = normalize_path(path);
    if (!norm) return;
    if (*norm != "/") put_dir(parent_of(*norm));
    auto it = nodes.find(*norm);
    if (it == nodes.end())
        nodes[*norm] = Node{FileType::directory, "", attrs, ""};
    else if (attrs.mode != 0755 || attrs.uid != 0 || attrs.gid != 0)
        it->second.attrs = attrs;
}

void MemoryFilesystem::put_file(const std::string& path, const std::string& content, FileAttrs attrs) {
    auto norm = normalize_path(path);
    if (!norm) return;
    put_dir(parent_of(*norm));
    nodes[*norm] = Node{FileType::regular, content, attrs, ""};
}

Result<std::optional<FileInfo>> MemoryFilesystem::stat(const std::string& path) {
    auto norm = normalize_path(path);
    if (!norm) return norm.error();
    auto it = nodes.find(*norm);
    if (it == nodes.end()) return std::optional<FileInfo>{};
    FileInfo info;
    info.type = it->second.type;
    info.mode = it->second.attrs.mode;
    info.uid = it->second.attrs.uid;
    info.gid = it->second.attrs.gid;
    info.size = it->second.content.size();
    return std::optional<FileInfo>(info);
}

Result<std::string> MemoryFilesystem::pin_directory(const std::string& path) {
    if (auto st = make_directories(*this, path, 0755); !st) return st.error();
    return host_path(path);
}

Result<SpaceInfo> MemoryFilesystem::space(const std::string& path) {
    auto norm = normalize_path(path);
    if (!norm) return norm.error();
    if (nodes.count(*norm) == 0) return make_error("cannot open " + *norm + ": No such file or directory");
    return space_info;
}

Result<std::string> MemoryFilesystem::read(const std::string& path, std::size_t max_bytes) {
    auto norm = normalize_path(path);
    if (!norm) return norm.error();
    auto it = nodes.find(*norm);
    if (it == nodes.end()) return make_error("cannot open " + *norm + ": No such file or directory");
    if (it->second.type != FileType::regular) return make_error("cannot read " + *norm + ": Is a directory");
    if (it->second.content.size() > max_bytes) return make_error(*norm + " is too large");
    return it->second.content;
}

Status MemoryFilesystem::write_atomic(const std::string& path, const std::string& content, const FileAttrs& attrs) {
    auto norm = normalize_path(path);
    if (!norm) return norm.error();
    if (fail_writes) return make_error("cannot write " + *norm + ": " + *fail_writes);
    auto parent = nodes.find(parent_of(*norm));
    if (parent == nodes.end() || parent->second.type != FileType::directory) {
        return make_error("cannot write " + *norm + ": its directory does not exist");
    }
    auto it = nodes.find(*norm);
    if (it != nodes.end() && it->second.type == FileType::directory)
        return make_error("cannot write " + *norm + ": Is a directory");
    nodes[*norm] = Node{FileType::regular, content, attrs, ""};
    return Ok{};
}

Status MemoryFilesystem::chmod(const std::string& path, mode_t mode) {
    auto norm = normalize_path(path);
    if (!norm) return norm.error();
    auto it = nodes.find(*norm);
    if (it == nodes.end()) return make_error("cannot chmod " + *norm + ": No such file or directory");
    it->second.attrs.mode = mode;
    return Ok{};
}

Status MemoryFilesystem::chown(const std::string& path, uid_t uid, gid_t gid) {
    auto norm = normalize_path(path);
    if (!norm) return norm.error();
    auto it = nodes.find(*norm);
    if (it == nodes.end()) return make_error("cannot chown " + *norm + ": No such file or directory");
    it->second.attrs.uid = uid;
    it->second.attrs.gid = gid;
    return Ok{};
}

Status MemoryFilesystem::mkdir(const std::string& path, mode_t mode) {
    auto norm = normalize_path(path);
    if (!norm) return norm.error();
    auto it = nodes.find(*norm);
    if (it != nodes.end()) {
        if (it->second.type == FileType::directory) return Ok{};
        return make_error("cannot create directory " + *norm + ": File exists");
    }
    if (nodes.count(parent_of(*norm)) == 0) return make_error("the directory of " + *norm + " does not exist");
    nodes[*norm] = Node{FileType::directory, "", {mode, 0, 0}, ""};
    return Ok{};
}

Status MemoryFilesystem::remove(const std::string& path) {
    auto norm = normalize_path(path);
    if (!norm) return norm.error();
    auto it = nodes.find(*norm);
    if (it == nodes.end()) return Ok{};
    if (it->second.type == FileType::directory) {
        auto next = std::next(it);
        if (next != nodes.end() && next->first.rfind(*norm + "/", 0) == 0) {
            return make_error("cannot remove " + *norm + ": Directory not empty");
        }
    }
    nodes.erase(it);
    return Ok{};
}

Status MemoryFilesystem::rename(const std::string& from, const std::string& to) {
    auto a = normalize_path(from);
    auto b = normalize_path(to);
    if (!a) return a.error();
    if (!b) return b.error();
    auto it = nodes.find(*a);
    if (it == nodes.end()) return make_error("cannot rename " + *a + ": No such file or directory");
    if (nodes.count(parent_of(*b)) == 0) return make_error("the directory of " + *b + " does not exist");
    Node node = it->second;
    nodes.erase(it);
    nodes[*b] = node;
    return Ok{};
}

Result<std::vector<std::string>> MemoryFilesystem::list(const std::string& dir) {
    auto norm = normalize_path(dir);
    if (!norm) return norm.error();
    auto it = nodes.find(*norm);
    if (it == nodes.end() || it->second.type != FileType::directory) {
        return make_error("cannot open directory " + *norm + ": No such file or directory");
    }
    std::string prefix = *norm == "/" ? "/" : *norm + "/";
    std::vector<std::string> names;
    for (auto i = nodes.lower_bound(prefix); i != nodes.end() && i->first.rfind(prefix, 0) == 0; ++i) {
        std::string rest = i->first.substr(prefix.size());
        if (!rest.empty() && rest.find('/') == std::string::npos) names.push_back(rest);
    }
    std::sort(names.begin(), names.end());
    return names;
}

Result<std::string> MemoryFilesystem::read_link(const std::string& path) {
    auto norm = normalize_path(path);
    if (!norm) return norm.error();
    auto it = nodes.find(*norm);
    if (it == nodes.end() || it->second.type != FileType::symlink)
        return make_error("cannot read the link " + *norm + ": Invalid argument");
    return it->second.target;
}

Status MemoryFilesystem::symlink(const std::string& target, const std::string& path) {
    auto norm = normalize_path(path);
    if (!norm) return norm.error();
    if (nodes.count(parent_of(*norm)) == 0) return make_error("the directory of " + *norm + " does not exist");
    auto it = nodes.find(*norm);
    if (it != nodes.end() && it->second.type == FileType::directory)
        return make_error("cannot rename the symlink into place at " + *norm + ": Is a directory");
    nodes[*norm] = Node{FileType::symlink, "", {0777, 0, 0}, target};
    return Ok{};
}

}  // namespace nodeform::agent
