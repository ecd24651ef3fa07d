// The lifecycle reconciler and the lease guard (docs/controller.md "Lifecycle reconciler").
#include "nodeform/controller/lifecycle/reconciler.hpp"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>

namespace nodeform::controller::lifecycle {

using std::chrono::milliseconds;

namespace {
constexpr milliseconds kSlice{100};  // waits are cut into slices so stop() and release() are prompt
}

std::string lease_holder_name(const std::string& random_suffix) {
    char host[HOST_NAME_MAX + 1] = {};
    if (gethostname(host, sizeof host - 1) != 0) host[0] = '\0';
    return std::string(host[0] ? host : "controller") + ":" + std::to_string(getpid()) + ":" + random_suffix;
}

LeaseGuard::LeaseGuard(LifecycleStore& store, const Clock& clock, std::string holder, std::string identity,
                       milliseconds ttl, Logger* logger)
    : store_(store),
      clock_(clock),
      holder_(std::move(holder)),
      identity_(std::move(identity)),
      ttl_(ttl),
      logger_(logger) {}

LeaseGuard::~LeaseGuard() {
    release();
}

Result<bool> LeaseGuard::acquire() {
    auto got = store_.acquire_lease(identity_, holder_, clock_.now(), ttl_);
    if (!got) return got.error();
    if (!*got) return false;
    held_ = true;
    lost_ = false;
    thread_ = std::thread([this] { heartbeat(); });
    return true;
}

void LeaseGuard::heartbeat() {
    const milliseconds every = std::max(kSlice, ttl_ / 3);
    auto last = clock_.steady_now();
    while (held_) {
        clock_.sleep_for(kSlice);
        if (!held_ || clock_.steady_now() - last < every) continue;
        last = clock_.steady_now();
        auto renewed = store_.renew_lease(identity_, holder_, clock_.now(), ttl_);
        if (renewed && !*renewed) {
            lost_ = true;
            if (logger_) logger_->error(identity_ + ": the lease was taken over by another controller");
            return;
        }
        if (!renewed && logger_) logger_->warning(identity_ + ": renewing the lease failed: " + renewed.message());
    }
}

void LeaseGuard::release() {
    bool was = held_.exchange(false);
    if (thread_.joinable()) thread_.join();
    if (was && !lost_) {
        if (auto st = store_.release_lease(identity_, holder_); !st && logger_) {
            logger_->warning(identity_ + ": releasing the lease failed: " + st.message());
        }
    }
}

bool release_dead_local_lease(LifecycleStore& store, const std::string& identity) {
    auto lease = store.lease(identity);
    if (!lease || !*lease) return false;
    const std::string& holder = (*lease)->holder;
    const std::string mine = lease_holder_name("cli");
    const std::string host = mine.substr(0, mine.find(':') + 1);
    if (holder.rfind(host, 0) != 0 || holder.size() < 4 || holder.substr(holder.size() - 4) != ":cli") return false;
    const std::string pid_text = holder.substr(host.size(), holder.size() - 4 - host.size());
    char* end = nullptr;
    long pid = std::strtol(pid_text.c_str(), &end, 10);
    if (end == pid_text.c_str() || *end != '\0' || pid <= 1) return false;
    if (::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) return false;
    return store.release_lease(identity, holder).ok();
}

Result<bool> reconciler_serving(LifecycleStore& store, const Clock& clock, std::string* holder) {
    auto lease = store.lease(kReconcilerLease);
    if (!lease) return lease.error();
    if (!*lease || (*lease)->expires_at <= clock.now()) return false;
    if (holder) *holder = (*lease)->holder;
    return true;
}

Reconciler::Reconciler(Lifecycle& lifecycle, LifecycleStore& store, const Clock& clock, Logger& logger,
                       std::function<std::shared_ptr<const site::Site>()> load_site, ReconcilerOptions options)
    : lifecycle_(lifecycle),
      store_(store),
      clock_(clock),
      logger_(logger),
      load_site_(std::move(load_site)),
      options_(std::move(options)) {}

Reconciler::~Reconciler() {
    stop();
}

bool Reconciler::holds(const std::string& identity) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = leases_.find(identity);
    return it == leases_.end() || !it->second->lost();
}

void Reconciler::start() {
    stopping_ = false;
    loop_ = std::thread([this] {
        auto next = clock_.steady_now();
        while (!stopping_) {
            if (clock_.steady_now() >= next) {
                try {
                    tick();
                } catch (const std::exception& e) {
                    logger_.error(std::string("lifecycle reconciler: internal error: ") + e.what());
                }
                next = clock_.steady_now() + options_.interval;
            }
            clock_.sleep_for(kSlice);
        }
    });
}

void Reconciler::stop() {
    stopping_ = true;
    if (loop_.joinable()) loop_.join();
    reap(true);
    presence_.reset();
}

// Provisioning and decommissioning states advance; a failed node while its retries last and its backoff passed.
bool Reconciler::wants_work(const NodeRecord& rec, const std::optional<RetryState>& retry) const {
    switch (rec.state) {
        case State::planned:
        case State::provisioning:
        case State::registered:
        case State::validating:
        case State::decommissioning:
            return true;
        case State::failed:
            if (!retry) return true;  // failed outside a reconciler (a 'node create' here): one try now
            return retry->failures < options_.retries && clock_.now() >= retry->next_at;
        default:
            return false;
    }
}

void Reconciler::tick() {
    reap(false);
    // The presence lease says "a reconciler serves" to 'node create'; one of the live controllers holds it.
    if (!presence_ || presence_->lost()) {
        presence_ = std::make_unique<LeaseGuard>(store_, clock_, options_.holder, kReconcilerLease, options_.lease_ttl,
                                                 &logger_);
        if (auto held = presence_->acquire(); !held || !*held) presence_.reset();
    }
    auto records = store_.all();
    if (!records) {
        logger_.warning("lifecycle reconciler: reading the records failed: " + records.message());
        return;
    }
    std::shared_ptr<const site::Site> site;
    for (const auto& rec : *records) {
        if (stopping_) return;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            if (busy_.count(rec.identity) || static_cast<int>(busy_.size()) >= options_.parallel) continue;
        }
        std::optional<RetryState> retry;
        if (rec.state == State::failed) {
            auto read = store_.retry(rec.identity);
            if (!read) {
                logger_.warning("lifecycle reconciler: " + read.message());
                continue;
            }
            retry = *read;
        }
        if (!wants_work(rec, retry)) continue;
        if (!site) site = load_site_();
        if (!site) {
            logger_.warning("lifecycle reconciler: no site loaded; nodes wait");
            return;
        }
        if (!site->nodes.count(rec.identity)) continue;  // removed from the site: left to the operator
        std::lock_guard<std::mutex> lock(mutex_);
        busy_.insert(rec.identity);
        workers_.emplace_back(rec.identity, std::thread([this, site, id = rec.identity] { work(site, id); }));
    }
}

void Reconciler::work(std::shared_ptr<const site::Site> site, const std::string& identity) {
    LeaseGuard lease(store_, clock_, options_.holder, identity, options_.lease_ttl, &logger_);
    auto held = lease.acquire();
    if (held && !*held && release_dead_local_lease(store_, identity)) held = lease.acquire();
    if (held && *held) {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            leases_[identity] = &lease;
        }
        advance_held(*site, identity);
        {
            std::lock_guard<std::mutex> lock(mutex_);
            leases_.erase(identity);
        }
        lease.release();
    } else if (!held) {
        logger_.warning(identity + ": taking the lease failed: " + held.message());
    }
    std::lock_guard<std::mutex> lock(mutex_);
    finished_.insert(identity);
}

// Under the node's lease: the record and retry count are read again (another controller may have retried it
// since the scan), the node advanced, and its retry count written before the lease is given up.
void Reconciler::advance_held(const site::Site& site, const std::string& identity) {
    auto rec = store_.get(identity);
    auto retry = store_.retry(identity);
    if (!rec || !retry) {
        logger_.warning("lifecycle reconciler: " + (!rec ? rec.message() : retry.message()));
        return;
    }
    if (!*rec || !wants_work(**rec, *retry)) return;
    RunResult result;
    try {
        result = lifecycle_.advance(site, identity);
    } catch (const std::exception& e) {
        result = RunResult{identity, State::failed, false, std::string("internal error: ") + e.what()};
    }
    if (!result.ok && result.state == State::failed) {
        RetryState next;
        next.failures = (*retry ? (*retry)->failures : 0) + 1;
        auto delay = options_.retry_backoff * (1LL << std::min(next.failures - 1, 16));
        next.next_at = clock_.now() + std::min<milliseconds>(delay, options_.retry_backoff_max);
        if (auto st = store_.put_retry(identity, next); !st) logger_.warning(identity + ": " + st.message());
        logger_.error(result.message + (next.failures < options_.retries
                                            ? " (retry " + std::to_string(next.failures) + " of " +
                                                  std::to_string(options_.retries) + " later)"
                                            : " (no retries left: 'node create' or 'node destroy' again)"));
    } else if (result.ok) {
        if (*retry) {
            if (auto st = store_.clear_retry(identity); !st) logger_.warning(identity + ": " + st.message());
        }
        logger_.notice(result.message.empty() ? identity + ": " + to_string(result.state) : result.message);
    }
}

void Reconciler::reap(bool all) {
    std::vector<std::pair<std::string, std::thread>> done;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        for (auto it = workers_.begin(); it != workers_.end();) {
            if (all || finished_.count(it->first)) {
                done.push_back(std::move(*it));
                it = workers_.erase(it);
            } else {
                ++it;
            }
        }
    }
    for (auto& [id, t] : done) {
        t.join();
        std::lock_guard<std::mutex> lock(mutex_);
        finished_.erase(id);
        busy_.erase(id);
    }
}

}  // namespace nodeform::controller::lifecycle
