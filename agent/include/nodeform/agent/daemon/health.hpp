#pragma once
// Health checks from the spec's `health` list: what to probe, how to probe it, and which results are changes.
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "nodeform/agent/system/filesystem.hpp"
#include "nodeform/clock.hpp"
#include "nodeform/process.hpp"
#include "nodeform/report.hpp"
#include "nodeform/result.hpp"

namespace nodeform::agent::daemon {

struct HealthCheckSpec {
    std::string name;
    std::string type;  // systemd_unit | tcp | http | disk_free | command
    std::chrono::milliseconds interval{std::chrono::seconds(30)};
    std::chrono::milliseconds timeout{std::chrono::seconds(5)};
    std::string unit;                          // systemd_unit
    std::string host;                          // tcp
    int port = 0;                              // tcp
    std::string url;                           // http
    int expect_status = 200;                   // http
    std::string path;                          // disk_free
    std::optional<double> min_free_percent;    // disk_free
    std::optional<std::uint64_t> min_free_mb;  // disk_free
    std::vector<std::string> argv;             // command
};

// Parses the spec's `health` array (docs/resolved-spec.md). Err names the check and the field.
Result<std::vector<HealthCheckSpec>> parse_health_checks(const nlohmann::json& health);

struct HealthResult {
    std::string name;
    std::string type;
    bool pass = false;
    std::string message;  // "active", "connected", "HTTP 200", "42% free", "exit 0", or why not
    std::chrono::system_clock::time_point checked_at;
};
// As a report's health[] entry (docs/protocol.md).
protocol::HealthEntry to_entry(const HealthResult& result);

// Runs one check to completion (blocking, bounded by the check's timeout). Called on a worker thread.
class HealthProber {
  public:
    virtual ~HealthProber() = default;
    virtual HealthResult probe(const HealthCheckSpec& check) = 0;
};

// The real prober: systemctl and commands through the ProcessRunner, sockets, HTTP, statvfs through the
// Filesystem (disk_free paths resolve inside its root); systemctl gets no --root (it asks the running manager).
class SystemHealthProber final : public HealthProber {
  public:
    SystemHealthProber(ProcessRunner& runner, const Clock& clock, Filesystem& fs)
        : runner_(runner), clock_(clock), fs_(fs) {}
    HealthResult probe(const HealthCheckSpec& check) override;

  private:
    ProcessRunner& runner_;
    const Clock& clock_;
    Filesystem& fs_;
};

// Remembers each check's last outcome; tells which new results are state changes.
class HealthTracker {
  public:
    // True when this result changes the check's state: pass <-> fail, or a first result that fails.
    bool update(const HealthResult& result);
    // Forget checks that are no longer in the spec.
    void retain(const std::vector<HealthCheckSpec>& checks);
    std::vector<HealthResult> results() const;  // in name order
    unsigned passing() const;
    std::size_t size() const { return last_.size(); }

  private:
    std::map<std::string, HealthResult> last_;
};

}  // namespace nodeform::agent::daemon
