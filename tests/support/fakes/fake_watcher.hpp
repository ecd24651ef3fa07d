#pragma once
// FakeWatcher: a ChangeWatcher for unit tests (test-only). change(path) makes its descriptor readable, as
// inotify would; it records every watch() call.
#include <fcntl.h>
#include <unistd.h>

#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "nodeform/agent/daemon/watcher.hpp"

namespace nodeform::agent::daemon {

class FakeWatcher final : public ChangeWatcher {
  public:
    FakeWatcher() {
        if (::pipe2(pipe_, O_NONBLOCK | O_CLOEXEC) != 0) pipe_[0] = pipe_[1] = -1;
    }
    ~FakeWatcher() override {
        ::close(pipe_[0]);
        ::close(pipe_[1]);
    }
    void watch(const std::vector<std::string>& paths) override {
        std::lock_guard<std::mutex> lock(mutex_);
        watch_calls.push_back(paths);
    }
    int fd() const override { return pipe_[0]; }
    std::vector<std::string> take_changes() override {
        std::lock_guard<std::mutex> lock(mutex_);
        char buf[256];
        while (::read(pipe_[0], buf, sizeof buf) > 0) {
        }
        std::vector<std::string> out(pending_.begin(), pending_.end());
        pending_.clear();
        return out;
    }
    // Test side (any thread): path changed.
    void change(const std::string& path) {
        std::lock_guard<std::mutex> lock(mutex_);
        pending_.insert(path);
        (void)!::write(pipe_[1], "x", 1);
    }
    // A change that is pending without waking the loop, as the agent's own writes during a run are.
    void change_quietly(const std::string& path) {
        std::lock_guard<std::mutex> lock(mutex_);
        pending_.insert(path);
    }
    std::vector<std::vector<std::string>> calls() {
        std::lock_guard<std::mutex> lock(mutex_);
        return watch_calls;
    }

  private:
    int pipe_[2] = {-1, -1};
    std::mutex mutex_;
    std::set<std::string> pending_;
    std::vector<std::vector<std::string>> watch_calls;
};

}  // namespace nodeform::agent::daemon
