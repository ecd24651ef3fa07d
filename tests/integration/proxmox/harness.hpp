#pragma once
// Shared setup for the Proxmox lifecycle tests: the stand-in behind the site, issuer and reports of
// lifecycle_fakes.hpp.
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <sstream>
#include <string>

#include "fakes/memory_logger.hpp"
#include "lifecycle_fakes.hpp"
#include "nodeform/controller/lifecycle/lifecycle.hpp"
#include "nodeform/controller/providers/proxmox.hpp"
#include "pve_standin.hpp"
#include "test_paths.hpp"

namespace nodeform::test {

namespace pv = nodeform::controller::providers;

// One controller "process": store + lifecycle over the stand-in. Destroy and re-create it to simulate a restart.
struct Harness {
    explicit Harness(PveStandin& pve, const std::string& db, int nodes = 1)
        : standin(pve), site(make_site(pve.base_url(), pve.options().token_id, pve.options().token_secret, nodes)) {
        auto s = lc::LifecycleStore::open(db);
        if (!s) throw std::runtime_error(s.message());
        store = std::move(*s);
    }

    // The harness's store, issuer, reports, clock and logger; the caller adds the providers.
    lc::LifecycleDeps deps() {
        lc::LifecycleDeps d;
        d.store = store.get();
        d.issuer = &issuer;
        d.reports = &reports;
        d.clock = &clock;
        d.logger = &logger;
        return d;
    }

    std::unique_ptr<lc::Lifecycle> make(std::function<void(const std::string&)> crash = {}) {
        lc::LifecycleDeps deps = this->deps();
        std::string base = standin.base_url();
        deps.providers = [base](const site::ProxmoxEndpoint& e) -> Result<std::unique_ptr<pv::Provider>> {
            pv::ProxmoxOptions o;
            o.token_id = e.token_id;
            o.token_secret = e.token_secret;
            o.poll_min = std::chrono::milliseconds(5);
            o.poll_max = std::chrono::milliseconds(20);
            o.retry_backoff = std::chrono::milliseconds(5);
            return pv::make_proxmox_provider(make_loopback_transport(base), o);
        };
        deps.progress = [this](const lc::ProgressEvent& e) {
            std::lock_guard<std::mutex> l(mu);
            progress << e.identity << " " << e.step << " " << e.detail << "\n";
        };
        deps.crash_point = std::move(crash);
        lc::LifecycleOptions opt;
        opt.ca_fingerprint = std::string(64, 'a');
        opt.wait_poll = std::chrono::milliseconds(10);
        opt.agent_poll = std::chrono::milliseconds(10);
        opt.agent_timeout = std::chrono::seconds(10);
        opt.report_timeout = std::chrono::seconds(2);
        return std::make_unique<lc::Lifecycle>(deps, opt);
    }

    // Everything a secret could leak into: receipts, logs, progress lines.
    std::string everything_written() {
        std::string all = progress.str();
        for (const auto& l : logger.lines) {
            all += l.message + "\n";
            for (const auto& [k, v] : l.fields)
                all += k + "=" + v + "\n";
        }
        auto records = store->all();
        if (records) {
            for (const auto& r : *records) {
                all += lc::to_json(r).dump() + "\n";
                auto rs = store->receipts(r.identity);
                if (rs) {
                    for (const auto& x : *rs)
                        all += lc::to_json(x).dump() + "\n";
                }
            }
        }
        return all;
    }

    PveStandin& standin;
    site::Site site;
    std::unique_ptr<lc::LifecycleStore> store;
    FakeIssuer issuer;
    FakeReports reports;
    SystemClock clock;
    MemoryLogger logger;
    std::mutex mu;
    std::ostringstream progress;
};

inline PveStandinOptions fast_standin() {
    PveStandinOptions o;
    o.default_task_ms = std::chrono::milliseconds(20);
    o.boot_ms = std::chrono::milliseconds(40);
    return o;
}

}  // namespace nodeform::test
