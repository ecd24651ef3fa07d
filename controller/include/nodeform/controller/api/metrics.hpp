#pragma once
// /metrics in the Prometheus text format (version 0.0.4): per-route request counters and latency histograms
// recorded by RequestMetrics, plus the gauges and counters the server gathers into ServerGauges at scrape time.
#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <ostream>
#include <string>
#include <utility>

namespace nodeform::controller {

// Thread-safe; one per server. Routes are the templated names ("/v1/spec/{identity}"), never raw paths.
class RequestMetrics {
  public:
    static constexpr double kBuckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5};
    static constexpr std::size_t kBucketCount = sizeof(kBuckets) / sizeof(kBuckets[0]);

    void observe(const std::string& route, int status, double seconds);
    void render(std::ostream& out);

  private:
    struct Histogram {
        std::uint64_t buckets[kBucketCount] = {};
        std::uint64_t count = 0;
        double sum = 0;
    };
    std::mutex mutex_;
    std::map<std::pair<std::string, int>, std::uint64_t> requests_;
    std::map<std::string, Histogram> latency_;
};

// What the server knows at scrape time.
struct ServerGauges {
    std::map<std::string, int> nodes_by_status;  // every status name, 0 included
    std::int64_t reports_stored = -1;            // -1: the store did not answer
    std::int64_t connections_open = 0;
    std::uint64_t connections_rejected = 0;
    std::uint64_t deadline_closed = 0;
    std::uint64_t served_on_loop = 0;
    std::uint64_t report_commits = 0;
    std::uint64_t report_commit_reports = 0;
    std::uint64_t reloads_ok = 0;
    std::uint64_t reloads_failed = 0;
    bool last_reload_ok = true;
    bool site_reload_pending = false;  // a loaded site waits for the other controllers
    std::size_t site_nodes = 0;
};

// The whole /metrics body.
std::string render_metrics(RequestMetrics& requests, const ServerGauges& gauges);

}  // namespace nodeform::controller
