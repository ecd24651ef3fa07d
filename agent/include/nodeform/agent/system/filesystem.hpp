#pragma once
// Filesystem: every file the agent reads or writes on the machine it converges goes through here.
// Paths are absolute paths *inside* the root ("/etc/hostname"); the real implementation resolves
// them under the root directory (--root, or "/") and never follows a symlink out of it.
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "nodeform/result.hpp"

namespace nodeform::agent {

enum class FileType { regular, directory, symlink, other };

struct FileInfo {
    FileType type = FileType::regular;
    mode_t mode = 0;  // permission bits only (07777)
    uid_t uid = 0;
    gid_t gid = 0;
    std::uint64_t size = 0;
    std::chrono::system_clock::time_point mtime{};
};

struct FileAttrs {
    mode_t mode = 0644;
    uid_t uid = 0;
    gid_t gid = 0;
};

// What statvfs says about the filesystem holding a path.
struct SpaceInfo {
    std::uint64_t total_bytes = 0;
    std::uint64_t available_bytes = 0;  // to unprivileged users (f_bavail)
};

// The largest file the agent manages, and so the default read limit: every file it writes it can read back.
inline constexpr std::size_t kMaxFileBytes = 16 * 1024 * 1024;

class Filesystem {
  public:
    virtual ~Filesystem() = default;
    // lstat semantics (a symlink is reported as a symlink); nullopt when the path does not exist.
    virtual Result<std::optional<FileInfo>> stat(const std::string& path) = 0;
    // Follows symlinks, but only within the root.
    virtual Result<std::string> read(const std::string& path, std::size_t max_bytes = kMaxFileBytes) = 0;
    // Temp file in the same directory with attrs applied, fsync, rename over path, fsync the directory.
    // The parent directory must exist. A symlink at path is replaced, never followed.
    virtual Status write_atomic(const std::string& path, const std::string& content, const FileAttrs& attrs) = 0;
    virtual Status chmod(const std::string& path, mode_t mode) = 0;           // never follows a final symlink
    virtual Status chown(const std::string& path, uid_t uid, gid_t gid) = 0;  // never follows a final symlink
    virtual Status mkdir(const std::string& path, mode_t mode) = 0;           // one level; Ok when a directory exists
    virtual Status remove(const std::string& path) = 0;  // file, symlink or empty dir; Ok when absent
    virtual Status rename(const std::string& from, const std::string& to) = 0;  // both inside the root
    virtual Result<std::vector<std::string>> list(const std::string& dir) = 0;  // entry names, sorted, no . and ..
    // statvfs of the filesystem that holds path (resolved in the root, following symlinks only within it).
    virtual Result<SpaceInfo> space(const std::string& path) = 0;
    // The target of the symlink at path, as stored (never resolved); Err when path is not a symlink.
    virtual Result<std::string> read_link(const std::string& path) = 0;
    // Makes path a symlink to target (stored as given, never followed): a new link renamed over whatever non-directory
    // is at path, so the change is atomic. The parent directory must exist.
    virtual Status symlink(const std::string& target, const std::string& path) = 0;
    // The directory at path in the root (made with its parents, 0755, when missing) as a host path that names that
    // very directory for as long as this Filesystem lives (/proc/self/fd/N on the real one): for code that works
    // with host paths (the run lock, the spool, the daemon's state file), so no symlink on the way leaves the root.
    virtual Result<std::string> pin_directory(const std::string& path) = 0;
    // The root as a host path: "/" for the live system.
    virtual const std::string& root() const = 0;
    // Where path lives on the host (root + path, lexically); for messages and for commands run outside the root.
    virtual std::string host_path(const std::string& path) const = 0;
};

// The real filesystem rooted at root (a host directory; "" or "/" = the live system).
// Err when root is not an existing directory.
Result<std::unique_ptr<Filesystem>> make_root_filesystem(const std::string& root);

// mkdir -p with mode for every directory it creates.
Status make_directories(Filesystem& fs, const std::string& path, mode_t mode = 0755);
// Lexical normalisation of an absolute in-root path: "//a/./b/../c" -> "/a/c"; Err when not absolute.
Result<std::string> normalize_path(const std::string& path);

}  // namespace nodeform::agent
