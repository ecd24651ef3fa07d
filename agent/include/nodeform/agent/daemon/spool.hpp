#pragma once
// Spool: reports wait on disk (one file each, written atomically) until the controller answers 2xx.
// Bounded: keeps the newest N; every report it had to discard is counted (persisted, cumulative).
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "nodeform/random.hpp"
#include "nodeform/result.hpp"

namespace nodeform::agent::daemon {

struct SpoolEntry {
    std::uint64_t seq = 0;  // order of arrival
    std::string report_id;
    std::string path;
};

// Thread-safe: the loop adds, the sender reads and removes.
class Spool {
  public:
    // Creates the directory (0700) if needed and picks up what a previous process left.
    static Result<std::unique_ptr<Spool>> open(const std::string& dir, std::size_t max_entries);

    // Stamps report["spool_dropped"] with the cumulative dropped count (after making room), then writes it.
    // report must carry a string "report_id".
    Status put(nlohmann::json report);
    // Oldest first.
    std::vector<SpoolEntry> list() const;
    Result<std::string> read(const SpoolEntry& entry) const;
    // Deletes a delivered (or rejected) report; a missing file is fine.
    Status remove(const SpoolEntry& entry);

    std::size_t size() const;
    std::uint64_t dropped() const;
    const std::string& dir() const { return dir_; }

  private:
    Spool(std::string dir, std::size_t max_entries) : dir_(std::move(dir)), max_(max_entries) {}
    Status save_dropped();

    std::string dir_;
    std::size_t max_;
    mutable std::mutex mutex_;
    std::deque<SpoolEntry> entries_;
    std::uint64_t next_seq_ = 1;
    std::uint64_t dropped_ = 0;
};

// Report ids: make_uuid_v4(Random&) and looks_like_uuid (validates spool file names) in nodeform/random.hpp.
using nodeform::looks_like_uuid;
using nodeform::make_uuid_v4;

}  // namespace nodeform::agent::daemon
