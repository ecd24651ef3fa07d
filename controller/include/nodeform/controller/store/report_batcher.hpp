#pragma once
// Group commit for run reports: concurrent submit() calls are gathered by one committer thread into a single
// Store::insert_reports() transaction (one fsync for the whole batch). submit() returns only after the batch
// holding its report has committed (or failed), so a 2xx built on its Ok means "on disk".
// If a batch fails it is retried one report per transaction, so a report that cannot be stored fails alone
// while an I/O failure (disk full, read-only database) fails every report of the batch; a failed report was
// not stored and may be retried.
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>

#include "nodeform/controller/store/store.hpp"
#include "nodeform/result.hpp"

namespace nodeform::controller {

class ReportBatcher {
  public:
    // max_batch: most reports per transaction (≥ 1). Starts the committer thread.
    explicit ReportBatcher(Store& store, std::size_t max_batch = 512);
    // Fails every report still queued ("shutting down"), then joins the committer.
    ~ReportBatcher();
    ReportBatcher(const ReportBatcher&) = delete;
    ReportBatcher& operator=(const ReportBatcher&) = delete;

    // Blocks until the report's batch has committed; same outcomes as Store::insert_report.
    Result<InsertOutcome> submit(const ReportRecord& report);

    struct Stats {
        std::uint64_t batches = 0;  // committed transactions (fallback singles included)
        std::uint64_t reports = 0;  // reports in them
    };
    Stats stats() const;
    // Reports waiting for the committer (not yet in a transaction).
    std::size_t queued() const;

  private:
    struct Pending;
    void run();

    Store& store_;
    std::size_t max_batch_;
    mutable std::mutex mutex_;
    std::condition_variable wake_;
    std::deque<std::shared_ptr<Pending>> queue_;
    bool stopping_ = false;
    Stats stats_;
    std::thread committer_;
};

}  // namespace nodeform::controller
