#pragma once
// Drift in a second: which paths and units of a resolved spec the daemon watches, and the change
// notification seam (inotify on the real system, a fake in unit tests).
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "nodeform/result.hpp"

namespace nodeform::agent::daemon {

// Tells which watched paths changed. Paths are absolute paths inside the root ("/etc/group").
class ChangeWatcher {
  public:
    virtual ~ChangeWatcher() = default;
    // From now on watch exactly these paths: a file through its directory (so a file replaced by rename
    // stays watched), a directory also through its entries. Missing paths are watched once they appear
    // in an existing directory. Called again after every run (re-arms what was removed or recreated).
    virtual void watch(const std::vector<std::string>& paths) = 0;
    // Readable while changes are pending; the daemon waits on it in its event loop (-1: never readable).
    virtual int fd() const = 0;
    // Non-blocking: the watched paths that changed since the last call, each once.
    virtual std::vector<std::string> take_changes() = 0;
};

// inotify under root (a host directory, "/" for the live system). Err when inotify is not available.
Result<std::unique_ptr<ChangeWatcher>> make_inotify_watcher(const std::string& root);

// What a spec manages on disk: its files, directories and symlinks, the account databases and
// /etc/sudoers.d (users or groups), each user's authorized_keys, dpkg's status file (packages) and
// each stack's directory, and the cgroup directory of each service the spec wants running or stopped
// (/sys/fs/cgroup/[unified/|systemd/]system.slice/UNIT: systemd creates it when the unit starts, removes it
// when it stops).
// Sorted, unique.
std::vector<std::string> watched_paths(const nlohmann::json& spec);

// The unit whose cgroup directory `path` is ("nginx.service"), or "" when it is not one.
std::string unit_of_cgroup(const std::string& path);

// True when a run that changed the resource `id` ("file:/etc/motd", "user:alice", "package:nginx")
// writes `path` itself: such a change seen after the run is the agent's own, not drift.
bool written_by(const std::string& id, const std::string& path);

// A service the spec wants running (or stopped), for the periodic unit state check.
struct UnitExpectation {
    std::string unit;
    bool running = true;
};
std::vector<UnitExpectation> unit_expectations(const nlohmann::json& spec);
// True when `state` (systemctl is-active) is not what the expectation wants.
bool unit_differs(const UnitExpectation& expected, const std::string& state);

}  // namespace nodeform::agent::daemon
