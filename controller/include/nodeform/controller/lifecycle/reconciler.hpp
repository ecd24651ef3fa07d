#pragma once
// The lifecycle reconciler `nodeform-controller serve` runs (docs/controller.md "Lifecycle reconciler"): it
// advances every node whose record can advance, each only while holding that node's lease.
#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "nodeform/controller/lifecycle/lifecycle.hpp"

namespace nodeform::controller::lifecycle {

// The lease a live reconciler renews: `node create`/`destroy` queue work only while one is live.
inline constexpr const char* kReconcilerLease = "@reconciler";

// A holder name unique to this process: HOST:PID:RANDOM.
std::string lease_holder_name(const std::string& random_suffix);

// Holds one node's (or the reconciler's) lease: acquire() once, then a heartbeat thread renews it every
// ttl/3 until release() (or destruction). lost() turns true when another holder took it over.
class LeaseGuard {
  public:
    LeaseGuard(LifecycleStore& store, const Clock& clock, std::string holder, std::string identity,
               std::chrono::milliseconds ttl, Logger* logger = nullptr);
    ~LeaseGuard();
    LeaseGuard(const LeaseGuard&) = delete;
    LeaseGuard& operator=(const LeaseGuard&) = delete;
    // Ok(true) when held (the heartbeat runs), Ok(false) when another holder's lease is live.
    Result<bool> acquire();
    void release();
    bool lost() const { return lost_; }

  private:
    void heartbeat();
    LifecycleStore& store_;
    const Clock& clock_;
    std::string holder_;
    std::string identity_;
    std::chrono::milliseconds ttl_;
    Logger* logger_;
    std::atomic<bool> held_{false};
    std::atomic<bool> lost_{false};
    std::thread thread_;
};

// Releases the lease on identity when its holder is a `node create`/`destroy` process of this host (HOST:PID:cli)
// that is gone (killed), so work resumes at once instead of after the lease's expiry. True when released.
bool release_dead_local_lease(LifecycleStore& store, const std::string& identity);

// True when a reconciler holds a live kReconcilerLease (its holder in `holder`).
Result<bool> reconciler_serving(LifecycleStore& store, const Clock& clock, std::string* holder = nullptr);

struct ReconcilerOptions {
    std::string holder;                                   // this controller's lease holder name
    std::chrono::milliseconds interval{2000};             // how often records are scanned for work
    std::chrono::milliseconds lease_ttl{60000};           // a node's lease lasts this long without a heartbeat
    int parallel = 4;                                     // nodes worked on at once
    int retries = 5;                                      // a failed node is retried at most this often
    std::chrono::milliseconds retry_backoff{30000};       // first retry after this, then doubling
    std::chrono::milliseconds retry_backoff_max{600000};  // ...up to this
};

class Reconciler {
  public:
    // load_site gives the current site (serve's loaded snapshot); nullptr while none loads.
    Reconciler(Lifecycle& lifecycle, LifecycleStore& store, const Clock& clock, Logger& logger,
               std::function<std::shared_ptr<const site::Site>()> load_site, ReconcilerOptions options);
    ~Reconciler();
    Reconciler(const Reconciler&) = delete;
    Reconciler& operator=(const Reconciler&) = delete;
    // For LifecycleDeps::may_continue: false once this controller lost the node's lease.
    bool holds(const std::string& identity);
    void start();  // the loop thread
    void stop();   // ends the loop, waits for the nodes being worked on
    // One scan: starts work on every node that can advance and is not being worked on here.
    void tick();

  private:
    bool wants_work(const NodeRecord& rec, const std::optional<RetryState>& retry) const;
    void work(std::shared_ptr<const site::Site> site, const std::string& identity);
    void advance_held(const site::Site& site, const std::string& identity);
    void reap(bool all);

    Lifecycle& lifecycle_;
    LifecycleStore& store_;
    const Clock& clock_;
    Logger& logger_;
    std::function<std::shared_ptr<const site::Site>()> load_site_;
    ReconcilerOptions options_;
    std::unique_ptr<LeaseGuard> presence_;
    std::atomic<bool> stopping_{false};
    std::thread loop_;
    std::mutex mutex_;
    std::set<std::string> busy_;
    std::map<std::string, LeaseGuard*> leases_;  // the nodes being worked on here
    std::vector<std::pair<std::string, std::thread>> workers_;
    std::set<std::string> finished_;
};

}  // namespace nodeform::controller::lifecycle
