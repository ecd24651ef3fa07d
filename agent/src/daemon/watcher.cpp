#include "nodeform/agent/daemon/watcher.hpp"

#include <fcntl.h>
#include <limits.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>

namespace nodeform::agent::daemon {
namespace {

using Json = nlohmann::json;

constexpr const char* kAccountFiles[] = {"/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow"};
constexpr const char* kSudoersDir = "/etc/sudoers.d";
constexpr const char* kDpkgStatus = "/var/lib/dpkg/status";
constexpr const char* kStacksDir = "/opt/nodeform/stacks";
constexpr const char* kSysctlDir = "/etc/sysctl.d";
constexpr const char* kModulesDir = "/etc/modules-load.d";
constexpr const char* kAptSourcesDir = "/etc/apt/sources.list.d";
constexpr const char* kAptKeyringsDir = "/etc/apt/keyrings";
constexpr const char* kUnitDir = "/etc/systemd/system";
// systemd makes a service's cgroup when it starts and removes it when it stops, in the default slice of its
// hierarchy: unified (cgroup v2, Debian 12's default), hybrid, legacy. Only the one the system has is watched.
constexpr const char* kServiceCgroups[] = {"/sys/fs/cgroup/system.slice", "/sys/fs/cgroup/unified/system.slice",
                                           "/sys/fs/cgroup/systemd/system.slice"};

// Directory events that can mean "a watched entry changed"; the directory's own removal re-arms.
constexpr std::uint32_t kMask = IN_CLOSE_WRITE | IN_MODIFY | IN_ATTRIB | IN_CREATE | IN_DELETE | IN_MOVED_FROM |
                                IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW;

std::string parent_of(const std::string& path) {
    auto slash = path.rfind('/');
    return slash == 0 || slash == std::string::npos ? "/" : path.substr(0, slash);
}

std::string name_of(const std::string& path) {
    return path.substr(path.rfind('/') + 1);
}

bool under(const std::string& path, const std::string& dir) {
    return path == dir ||
           (path.size() > dir.size() && path.compare(0, dir.size(), dir) == 0 && path[dir.size()] == '/');
}

class InotifyWatcher final : public ChangeWatcher {
  public:
    InotifyWatcher(int fd, std::string root) : fd_(fd), root_(std::move(root)) {}
    ~InotifyWatcher() override { ::close(fd_); }

    void watch(const std::vector<std::string>& paths) override {
        paths_ = paths;
        // host directory -> what its entries mean
        std::map<std::string, Dir> wanted;
        for (const auto& p : paths) {
            if (p.empty() || p[0] != '/' || p == "/") continue;
            wanted[parent_of(p)].names[name_of(p)] = p;
            if (!unit_of_cgroup(p).empty()) continue;  // a unit's cgroup: only its creation and removal count
            struct stat st {};
            if (::lstat(host(p).c_str(), &st) == 0 && S_ISDIR(st.st_mode)) wanted[p].whole = p;
        }
        std::map<int, Dir> next;
        for (auto& [dir, what] : wanted) {
            if (!inside_root(dir)) continue;  // a symlink on the way leads out of the root: not ours to watch
            int wd = ::inotify_add_watch(fd_, host(dir).c_str(), kMask);
            if (wd < 0) continue;  // missing (seen when it appears in its parent) or not a directory
            Dir& d = next[wd];
            d.names.insert(what.names.begin(), what.names.end());
            if (!what.whole.empty()) d.whole = what.whole;
        }
        for (const auto& [wd, d] : dirs_)
            if (next.count(wd) == 0) ::inotify_rm_watch(fd_, wd);
        dirs_ = std::move(next);
    }

    int fd() const override { return fd_; }

    std::vector<std::string> take_changes() override {
        std::set<std::string> changed;
        bool rearm = false;
        alignas(inotify_event) char buf[4096];
        for (;;) {
            ssize_t n = ::read(fd_, buf, sizeof buf);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break;
            for (char* p = buf; p < buf + n;) {
                auto* e = reinterpret_cast<inotify_event*>(p);
                p += sizeof(inotify_event) + e->len;
                if (e->mask & IN_Q_OVERFLOW) {
                    changed.insert(paths_.begin(), paths_.end());  // events were lost: look at everything
                    rearm = true;
                    continue;
                }
                auto it = dirs_.find(e->wd);
                if (it == dirs_.end()) continue;
                const Dir& d = it->second;
                if (e->mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF)) {
                    if (!d.whole.empty()) changed.insert(d.whole);
                    rearm = true;
                    continue;
                }
                std::string name = e->len > 0 ? std::string(e->name) : std::string();
                if (auto n2 = d.names.find(name); n2 != d.names.end()) {
                    changed.insert(n2->second);
                    // A watched directory created, or a directory moved in over it: watch the new one.
                    if (e->mask & IN_ISDIR) rearm = true;
                } else if (!d.whole.empty() && !name.empty()) {
                    changed.insert(d.whole);
                }
            }
        }
        if (rearm) watch(std::vector<std::string>(paths_));
        return {changed.begin(), changed.end()};
    }

  private:
    struct Dir {
        std::map<std::string, std::string> names;  // entry name -> watched path
        std::string whole;                         // non-empty: any entry change is a change of this directory
    };

    std::string host(const std::string& path) const { return root_ == "/" ? path : root_ + path; }

    bool inside_root(const std::string& dir) const {
        if (root_ == "/") return true;
        char resolved[PATH_MAX];
        if (::realpath(host(dir).c_str(), resolved) == nullptr) return false;
        return under(resolved, root_);
    }

    int fd_;
    std::string root_;
    std::vector<std::string> paths_;
    std::map<int, Dir> dirs_;
};

const Json& array_at(const Json& spec, const char* key) {
    static const Json empty = Json::array();
    if (!spec.is_object()) return empty;
    auto it = spec.find(key);
    return it != spec.end() && it->is_array() ? *it : empty;
}

std::string string_of(const Json& j, const char* key) {
    if (!j.is_object()) return "";
    auto it = j.find(key);
    return it != j.end() && it->is_string() ? it->get<std::string>() : "";
}

}  // namespace

Result<std::unique_ptr<ChangeWatcher>> make_inotify_watcher(const std::string& root) {
    int fd = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (fd < 0) return make_error(std::string("inotify_init1: ") + std::strerror(errno));
    std::string r = root.empty() ? "/" : root;
    while (r.size() > 1 && r.back() == '/')
        r.pop_back();
    if (r != "/") {
        char resolved[PATH_MAX];
        if (::realpath(r.c_str(), resolved) != nullptr) r = resolved;
    }
    return std::unique_ptr<ChangeWatcher>(new InotifyWatcher(fd, r));
}

std::string unit_of_cgroup(const std::string& path) {
    for (const char* base : kServiceCgroups) {
        const std::string dir = std::string(base) + "/";
        if (path.size() <= dir.size() || path.compare(0, dir.size(), dir) != 0) continue;
        std::string unit = path.substr(dir.size());
        return unit.find('/') == std::string::npos ? unit : "";
    }
    return "";
}

std::vector<std::string> watched_paths(const Json& spec) {
    std::set<std::string> out;
    for (const auto& u : unit_expectations(spec)) {
        if (u.unit.empty() || u.unit.find('/') != std::string::npos || u.unit[0] == '.') continue;
        for (const char* base : kServiceCgroups)
            out.insert(std::string(base) + "/" + u.unit + (u.unit.find('.') == std::string::npos ? ".service" : ""));
    }
    for (const char* kind : {"files", "directories", "symlinks"})
        for (const auto& f : array_at(spec, kind))
            if (auto p = string_of(f, "path"); !p.empty()) out.insert(p);
    const Json& users = array_at(spec, "users");
    if (!users.empty() || !array_at(spec, "groups").empty()) {
        out.insert(std::begin(kAccountFiles), std::end(kAccountFiles));
        out.insert(kSudoersDir);
    }
    for (const auto& u : users)
        if (auto home = string_of(u, "home"); !home.empty() && home[0] == '/')
            out.insert((home == "/" ? "" : home) + "/.ssh/authorized_keys");
    if (!array_at(spec, "packages").empty()) out.insert(kDpkgStatus);
    for (const auto& s : array_at(spec, "stacks"))
        if (auto name = string_of(s, "name"); !name.empty() && name.find('/') == std::string::npos)
            out.insert(std::string(kStacksDir) + "/" + name);
    if (spec.is_object() && spec.contains("timezone")) out.insert({"/etc/localtime", "/etc/timezone"});
    // The kinds that write drop-ins are watched by their directory (any entry's change is examined).
    if (!array_at(spec, "sysctl").empty()) out.insert(kSysctlDir);
    if (!array_at(spec, "kernel_modules").empty()) out.insert(kModulesDir);
    if (!array_at(spec, "apt_sources").empty()) out.insert({kAptSourcesDir, kAptKeyringsDir});
    if (!array_at(spec, "mounts").empty()) out.insert("/etc/fstab");
    for (const auto& t : array_at(spec, "timers"))
        if (auto name = string_of(t, "name"); !name.empty() && name.find('/') == std::string::npos)
            out.insert(
                {std::string(kUnitDir) + "/" + name + ".service", std::string(kUnitDir) + "/" + name + ".timer"});
    return {out.begin(), out.end()};
}

bool written_by(const std::string& id, const std::string& path) {
    auto colon = id.find(':');
    if (colon == std::string::npos) return false;
    std::string type = id.substr(0, colon), name = id.substr(colon + 1);
    if (type == "file" || type == "directory" || type == "symlink") return path == name;
    if (type == "user" || type == "group") {
        for (const char* f : kAccountFiles)
            if (path == f) return true;
        const std::string keys = "/.ssh/authorized_keys";
        return under(path, kSudoersDir) ||
               (path.size() > keys.size() && path.compare(path.size() - keys.size(), keys.size(), keys) == 0);
    }
    if (type == "package") return path == kDpkgStatus;
    if (type == "stack") return under(path, std::string(kStacksDir) + "/" + name);
    if (type == "timezone") return path == "/etc/localtime" || path == "/etc/timezone";
    if (type == "sysctl") return under(path, kSysctlDir);
    if (type == "kernel_module") return under(path, kModulesDir);
    if (type == "apt_source") return under(path, kAptSourcesDir) || under(path, kAptKeyringsDir);
    if (type == "mount") return path == "/etc/fstab";
    if (type == "timer")
        return path == std::string(kUnitDir) + "/" + name + ".service" ||
               path == std::string(kUnitDir) + "/" + name + ".timer";
    return false;
}

std::vector<UnitExpectation> unit_expectations(const Json& spec) {
    std::vector<UnitExpectation> out;
    for (const auto& s : array_at(spec, "services")) {
        auto name = string_of(s, "name");
        auto running = s.is_object() ? s.find("running") : s.end();
        if (name.empty() || running == s.end() || !running->is_boolean()) continue;
        out.push_back({name, running->get<bool>()});
    }
    return out;
}

bool unit_differs(const UnitExpectation& expected, const std::string& state) {
    bool up = state == "active" || state == "activating" || state == "reloading";
    return expected.running != up;
}

}  // namespace nodeform::agent::daemon
