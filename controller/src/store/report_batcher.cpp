// Group commit: one committer thread drains the queue into Store::insert_reports (see report_batcher.hpp).
// There is no artificial delay: while one batch is being fsynced the next one accumulates.
#include "nodeform/controller/store/report_batcher.hpp"

#include <algorithm>
#include <vector>

namespace nodeform::controller {

struct ReportBatcher::Pending {
    ReportRecord report;
    std::mutex mutex;
    std::condition_variable done_cv;
    bool done = false;
    Result<InsertOutcome> result = make_error("not committed");

    void finish(Result<InsertOutcome> r) {
        {
            std::lock_guard<std::mutex> lock(mutex);
            result = std::move(r);
            done = true;
        }
        done_cv.notify_one();
    }
};

ReportBatcher::ReportBatcher(Store& store, std::size_t max_batch)
    : store_(store), max_batch_(std::max<std::size_t>(max_batch, 1)) {
    committer_ = std::thread([this] { run(); });
}

ReportBatcher::~ReportBatcher() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stopping_ = true;
    }
    wake_.notify_all();
    if (committer_.joinable()) committer_.join();
}

Result<InsertOutcome> ReportBatcher::submit(const ReportRecord& report) {
    auto p = std::make_shared<Pending>();
    p->report = report;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        if (stopping_) return make_error("the report store is shutting down");
        queue_.push_back(p);
    }
    wake_.notify_one();
    std::unique_lock<std::mutex> lock(p->mutex);
    p->done_cv.wait(lock, [&] { return p->done; });
    return std::move(p->result);
}

ReportBatcher::Stats ReportBatcher::stats() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return stats_;
}

std::size_t ReportBatcher::queued() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return queue_.size();
}

void ReportBatcher::run() {
    while (true) {
        std::vector<std::shared_ptr<Pending>> batch;
        {
            std::unique_lock<std::mutex> lock(mutex_);
            wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
            if (stopping_) {
                for (auto& p : queue_)
                    p->finish(make_error("the report store is shutting down"));
                queue_.clear();
                return;
            }
            while (!queue_.empty() && batch.size() < max_batch_) {
                batch.push_back(std::move(queue_.front()));
                queue_.pop_front();
            }
        }
        std::vector<ReportRecord> records;
        records.reserve(batch.size());
        for (const auto& p : batch)
            records.push_back(p->report);
        auto outcomes = store_.insert_reports(records);
        if (outcomes && outcomes->size() == batch.size()) {
            {
                std::lock_guard<std::mutex> lock(mutex_);
                stats_.batches++;
                stats_.reports += batch.size();
            }
            for (std::size_t i = 0; i < batch.size(); ++i)
                batch[i]->finish((*outcomes)[i]);
            continue;
        }
        if (outcomes) {  // a Store that broke its contract: a bug, but never acknowledge blindly
            for (auto& p : batch)
                p->finish(make_error("the store returned a wrong number of outcomes"));
            continue;
        }
        if (batch.size() == 1) {
            batch.front()->finish(outcomes.error());
            continue;
        }
        // The batch was rolled back: retry one report per transaction so that only the failing ones fail.
        for (auto& p : batch) {
            auto one = store_.insert_reports({p->report});
            if (one && one->size() == 1) {
                {
                    std::lock_guard<std::mutex> lock(mutex_);
                    stats_.batches++;
                    stats_.reports++;
                }
                p->finish(one->front());
            } else {
                p->finish(one ? Result<InsertOutcome>(make_error("the store returned a wrong number of outcomes"))
                              : Result<InsertOutcome>(one.error()));
            }
        }
    }
}

}  // namespace nodeform::controller
