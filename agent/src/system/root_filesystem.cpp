// The real Filesystem: every path is resolved with openat2(RESOLVE_IN_ROOT) against a descriptor of
// the root directory, so ".." and symlinks (absolute or relative) can never leave the root.
#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <random>
#include <vector>

#include "nodeform/agent/system/filesystem.hpp"

namespace nodeform::agent {
namespace {

struct Fd {
    int fd = -1;
    explicit Fd(int f = -1) : fd(f) {}
    Fd(Fd&& o) noexcept : fd(o.fd) { o.fd = -1; }
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    ~Fd() {
        if (fd >= 0) ::close(fd);
    }
};

std::string errno_message(const std::string& what, const std::string& path, int err) {
    return what + " " + path + ": " + std::strerror(err);
}

FileType type_of(mode_t mode) {
    if (S_ISREG(mode)) return FileType::regular;
    if (S_ISDIR(mode)) return FileType::directory;
    if (S_ISLNK(mode)) return FileType::symlink;
    return FileType::other;
}

class RootFilesystem final : public Filesystem {
  public:
    RootFilesystem(std::string root, int root_fd) : root_(std::move(root)), root_fd_(root_fd) {}
    ~RootFilesystem() override { ::close(root_fd_); }

    Result<std::optional<FileInfo>> stat(const std::string& path) override {
        auto parent = open_parent(path);
        if (!parent) {
            if (parent.error().message == kMissing) return std::optional<FileInfo>{};
            return parent.error();
        }
        struct stat st {};
        if (::fstatat(parent->dir.fd, parent->name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
            if (errno == ENOENT || errno == ENOTDIR) return std::optional<FileInfo>{};
            return make_error(errno_message("cannot stat", host_path(path), errno));
        }
        FileInfo info;
        info.type = type_of(st.st_mode);
        info.mode = st.st_mode & 07777;
        info.uid = st.st_uid;
        info.gid = st.st_gid;
        info.size = static_cast<std::uint64_t>(st.st_size);
        info.mtime =
            std::chrono::system_clock::time_point(std::chrono::duration_cast<std::chrono::system_clock::duration>(
                std::chrono::seconds(st.st_mtim.tv_sec) + std::chrono::nanoseconds(st.st_mtim.tv_nsec)));
        return std::optional<FileInfo>(info);
    }

    Result<std::string> read(const std::string& path, std::size_t max_bytes) override {
        auto norm = normalize_path(path);
        if (!norm) return norm.error();
        int fd = open_in_root(*norm, O_RDONLY | O_CLOEXEC, 0);
        if (fd < 0) return make_error(errno_message("cannot open", host_path(*norm), errno));
        Fd file(fd);
        std::string content;
        char buffer[65536];
        while (true) {
            ssize_t n = ::read(file.fd, buffer, sizeof buffer);
            if (n < 0) {
                if (errno == EINTR) continue;
                return make_error(errno_message("cannot read", host_path(*norm), errno));
            }
            if (n == 0) break;
            content.append(buffer, static_cast<std::size_t>(n));
            if (content.size() > max_bytes) {
                return make_error(host_path(*norm) + " is larger than " + std::to_string(max_bytes) + " bytes");
            }
        }
        return content;
    }

    Status write_atomic(const std::string& path, const std::string& content, const FileAttrs& attrs) override {
        auto parent = open_parent(path);
        if (!parent) {
            if (parent.error().message == kMissing) {
                return make_error("cannot write " + host_path(path) + ": its directory does not exist");
            }
            return parent.error();
        }
        std::random_device rd;
        std::string tmp = "." + parent->name + ".nodeform-" + std::to_string(rd());
        int fd = ::openat(parent->dir.fd, tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0) return make_error(errno_message("cannot create a temporary file next to", host_path(path), errno));
        Fd file(fd);
        auto fail = [&](const std::string& what) -> Status {
            int err = errno;
            ::unlinkat(parent->dir.fd, tmp.c_str(), 0);
            return make_error(errno_message(what, host_path(path), err));
        };
        std::size_t written = 0;
        while (written < content.size()) {
            ssize_t n = ::write(file.fd, content.data() + written, content.size() - written);
            if (n < 0) {
                if (errno == EINTR) continue;
                return fail("cannot write");
            }
            written += static_cast<std::size_t>(n);
        }
        if (::fchown(file.fd, attrs.uid, attrs.gid) != 0) return fail("cannot set the owner of");
        if (::fchmod(file.fd, attrs.mode) != 0) return fail("cannot set the mode of");
        if (::fsync(file.fd) != 0) return fail("cannot fsync");
        if (::renameat(parent->dir.fd, tmp.c_str(), parent->dir.fd, parent->name.c_str()) != 0) {
            return fail("cannot rename into place");
        }
        ::fsync(parent->dir.fd);
        return Ok{};
    }

    Status chmod(const std::string& path, mode_t mode) override {
        auto parent = require_parent(path);
        if (!parent) return parent.error();
        struct stat st {};
        if (::fstatat(parent->dir.fd, parent->name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
            return make_error(errno_message("cannot stat", host_path(path), errno));
        }
        if (S_ISLNK(st.st_mode)) return make_error("refusing to chmod " + host_path(path) + ": it is a symlink");
        if (::fchmodat(parent->dir.fd, parent->name.c_str(), mode, 0) != 0) {
            return make_error(errno_message("cannot chmod", host_path(path), errno));
        }
        return Ok{};
    }

    Status chown(const std::string& path, uid_t uid, gid_t gid) override {
        auto parent = require_parent(path);
        if (!parent) return parent.error();
        if (::fchownat(parent->dir.fd, parent->name.c_str(), uid, gid, AT_SYMLINK_NOFOLLOW) != 0) {
            return make_error(errno_message("cannot chown", host_path(path), errno));
        }
        return Ok{};
    }

    Status mkdir(const std::string& path, mode_t mode) override {
        auto parent = require_parent(path);
        if (!parent) return parent.error();
        if (::mkdirat(parent->dir.fd, parent->name.c_str(), mode) != 0) {
            int err = errno;
            struct stat st {};
            if (err == EEXIST && ::fstatat(parent->dir.fd, parent->name.c_str(), &st, 0) == 0 && S_ISDIR(st.st_mode)) {
                return Ok{};
            }
            return make_error(errno_message("cannot create directory", host_path(path), err));
        }
        ::fchmodat(parent->dir.fd, parent->name.c_str(), mode, 0);  // umask must not narrow it
        return Ok{};
    }

    Status remove(const std::string& path) override {
        auto parent = open_parent(path);
        if (!parent) {
            if (parent.error().message == kMissing) return Ok{};
            return parent.error();
        }
        if (::unlinkat(parent->dir.fd, parent->name.c_str(), 0) == 0) return Ok{};
        if (errno == ENOENT) return Ok{};
        if (errno == EISDIR || errno == EPERM) {
            if (::unlinkat(parent->dir.fd, parent->name.c_str(), AT_REMOVEDIR) == 0) return Ok{};
        }
        return make_error(errno_message("cannot remove", host_path(path), errno));
    }

    Status rename(const std::string& from, const std::string& to) override {
        auto a = require_parent(from);
        if (!a) return a.error();
        auto b = require_parent(to);
        if (!b) return b.error();
        if (::renameat(a->dir.fd, a->name.c_str(), b->dir.fd, b->name.c_str()) != 0) {
            return make_error(errno_message("cannot rename " + host_path(from) + " to", host_path(to), errno));
        }
        ::fsync(b->dir.fd);
        return Ok{};
    }

    Result<std::vector<std::string>> list(const std::string& dir) override {
        auto norm = normalize_path(dir);
        if (!norm) return norm.error();
        int fd = open_in_root(*norm, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
        if (fd < 0) return make_error(errno_message("cannot open directory", host_path(*norm), errno));
        DIR* d = ::fdopendir(fd);
        if (d == nullptr) {
            ::close(fd);
            return make_error(errno_message("cannot list", host_path(*norm), errno));
        }
        std::vector<std::string> names;
        while (dirent* e = ::readdir(d)) {
            std::string name = e->d_name;
            if (name != "." && name != "..") names.push_back(name);
        }
        ::closedir(d);
        std::sort(names.begin(), names.end());
        return names;
    }

    Result<SpaceInfo> space(const std::string& path) override {
        auto norm = normalize_path(path);
        if (!norm) return norm.error();
        int fd = open_in_root(*norm, O_PATH | O_CLOEXEC, 0);
        if (fd < 0) return make_error(errno_message("cannot open", host_path(*norm), errno));
        Fd guard(fd);
        struct statvfs vfs {};
        if (::fstatvfs(fd, &vfs) != 0) return make_error(errno_message("statvfs", host_path(*norm), errno));
        SpaceInfo info;
        info.total_bytes = static_cast<std::uint64_t>(vfs.f_blocks) * vfs.f_frsize;
        info.available_bytes = static_cast<std::uint64_t>(vfs.f_bavail) * vfs.f_frsize;
        return info;
    }

    Result<std::string> read_link(const std::string& path) override {
        auto parent = require_parent(path);
        if (!parent) return parent.error();
        char buffer[4097];
        ssize_t n = ::readlinkat(parent->dir.fd, parent->name.c_str(), buffer, sizeof buffer - 1);
        if (n < 0) return make_error(errno_message("cannot read the link", host_path(path), errno));
        if (static_cast<std::size_t>(n) >= sizeof buffer - 1) return make_error(host_path(path) + ": link too long");
        return std::string(buffer, static_cast<std::size_t>(n));
    }

    Status symlink(const std::string& target, const std::string& path) override {
        auto parent = require_parent(path);
        if (!parent) return parent.error();
        std::random_device rd;
        std::string tmp = "." + parent->name + ".nodeform-" + std::to_string(rd());
        if (::symlinkat(target.c_str(), parent->dir.fd, tmp.c_str()) != 0) {
            return make_error(errno_message("cannot create a symlink next to", host_path(path), errno));
        }
        if (::renameat(parent->dir.fd, tmp.c_str(), parent->dir.fd, parent->name.c_str()) != 0) {
            int err = errno;
            ::unlinkat(parent->dir.fd, tmp.c_str(), 0);
            return make_error(errno_message("cannot rename the symlink into place at", host_path(path), err));
        }
        ::fsync(parent->dir.fd);
        return Ok{};
    }

    const std::string& root() const override { return root_; }

    std::string host_path(const std::string& path) const override {
        if (root_ == "/") return path;
        return root_ + path;
    }

    Result<std::string> pin_directory(const std::string& path) override {
        if (auto st = make_directories(*this, path, 0755); !st) return st.error();
        auto norm = normalize_path(path);
        if (!norm) return norm.error();
        int fd = open_in_root(*norm, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
        if (fd < 0) return make_error(errno_message("cannot open directory", host_path(*norm), errno));
        std::lock_guard<std::mutex> lock(pinned_mutex_);
        pinned_.emplace_back(fd);
        return "/proc/self/fd/" + std::to_string(fd);
    }

  private:
    static constexpr const char* kMissing = "\x01missing";
    struct Parent {
        Fd dir;
        std::string name;
    };

    int open_in_root(const std::string& norm, int flags, mode_t mode) const {
        if (norm == "/") return ::openat(root_fd_, ".", flags, mode);
        open_how how{};
        how.flags = static_cast<std::uint64_t>(flags);
        how.mode = mode;
        how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
        std::string rel = norm.substr(1);
        long fd;
        do {
            fd = ::syscall(SYS_openat2, root_fd_, rel.c_str(), &how, sizeof how);
        } while (fd < 0 && errno == EAGAIN);
        return static_cast<int>(fd);
    }

    // The directory containing path (resolved in the root) and the last component.
    Result<Parent> open_parent(const std::string& path) const {
        auto norm = normalize_path(path);
        if (!norm) return norm.error();
        if (*norm == "/") return make_error("cannot operate on the root directory itself");
        std::size_t slash = norm->rfind('/');
        std::string dir = slash == 0 ? "/" : norm->substr(0, slash);
        int fd = open_in_root(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
        if (fd < 0) {
            if (errno == ENOENT || errno == ENOTDIR) return make_error(kMissing);
            return make_error(errno_message("cannot open directory", host_path(dir), errno));
        }
        return Parent{Fd(fd), norm->substr(slash + 1)};
    }

    // open_parent with a readable error when the directory is missing.
    Result<Parent> require_parent(const std::string& path) const {
        auto parent = open_parent(path);
        if (!parent && parent.error().message == kMissing) {
            return make_error("the directory of " + host_path(path) + " does not exist");
        }
        return parent;
    }

    std::string root_;
    int root_fd_;
    std::mutex pinned_mutex_;
    std::vector<Fd> pinned_;  // directories handed out by pin_directory, open until this Filesystem dies
};

}  // namespace

Result<std::unique_ptr<Filesystem>> make_root_filesystem(const std::string& root) {
    std::string r = root.empty() ? "/" : root;
    while (r.size() > 1 && r.back() == '/')
        r.pop_back();
    int fd = ::open(r.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return make_error(errno_message("cannot open root directory", r, errno));
    if (r != "/") {
        char resolved[PATH_MAX];
        if (::realpath(r.c_str(), resolved) != nullptr) r = resolved;
    }
    return std::unique_ptr<Filesystem>(new RootFilesystem(r, fd));
}

}  // namespace nodeform::agent
