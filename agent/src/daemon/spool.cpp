#include "nodeform/agent/daemon/spool.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <stdexcept>

#include "nodeform/atomic_file.hpp"

namespace nodeform::agent::daemon {
namespace {

constexpr const char* kDroppedFile = "dropped";
constexpr std::size_t kSeqDigits = 16;

std::string entry_name(std::uint64_t seq, const std::string& id) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%016llu", static_cast<unsigned long long>(seq));
    return std::string(buf) + "-" + id + ".json";
}

// Parses "SEQ-UUID.json"; false for anything else (temp files, strangers).
bool parse_entry_name(const std::string& name, std::uint64_t& seq, std::string& id) {
    const std::string suffix = ".json";
    if (name.size() != kSeqDigits + 1 + 36 + suffix.size()) return false;
    if (name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) return false;
    if (name[kSeqDigits] != '-') return false;
    seq = 0;
    for (std::size_t i = 0; i < kSeqDigits; ++i) {
        if (name[i] < '0' || name[i] > '9') return false;
        seq = seq * 10 + static_cast<std::uint64_t>(name[i] - '0');
    }
    id = name.substr(kSeqDigits + 1, 36);
    return looks_like_uuid(id);
}

}  // namespace

Result<std::unique_ptr<Spool>> Spool::open(const std::string& dir, std::size_t max_entries) {
    namespace fs = std::filesystem;
    if (max_entries == 0) return make_error("spool size must be at least 1");
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) return make_error("cannot create spool directory " + dir + ": " + ec.message());
    ::chmod(dir.c_str(), 0700);
    std::unique_ptr<Spool> spool(new Spool(dir, max_entries));
    for (const auto& item : fs::directory_iterator(dir, ec)) {
        std::uint64_t seq = 0;
        std::string id;
        std::string name = item.path().filename().string();
        if (parse_entry_name(name, seq, id)) {
            spool->entries_.push_back({seq, id, item.path().string()});
            spool->next_seq_ = std::max(spool->next_seq_, seq + 1);
        } else if (name.find(".nodeform-tmp-") != std::string::npos) {
            fs::remove(item.path(), ec);  // a write interrupted by a crash: never renamed, never acknowledged
        }
    }
    if (ec) return make_error("cannot list spool directory " + dir + ": " + ec.message());
    std::sort(spool->entries_.begin(), spool->entries_.end(),
              [](const SpoolEntry& a, const SpoolEntry& b) { return a.seq < b.seq; });
    auto dropped = read_file(dir + "/" + kDroppedFile, 64);
    if (dropped) {
        try {
            spool->dropped_ = std::stoull(*dropped);
        } catch (const std::exception&) {
            spool->dropped_ = 0;
        }
    }
    return spool;
}

Status Spool::save_dropped() {
    return write_file_atomic(dir_ + "/" + kDroppedFile, std::to_string(dropped_) + "\n", WriteOptions{0600, false});
}

Status Spool::put(nlohmann::json report) {
    if (!report.is_object() || !report.contains("report_id") || !report["report_id"].is_string() ||
        !looks_like_uuid(report["report_id"].get<std::string>()))
        throw std::logic_error("Spool::put: report without a UUID report_id");
    std::lock_guard<std::mutex> lock(mutex_);
    if (entries_.size() >= max_) {
        // Count first, then delete: a crash in between over-counts by one rather than losing a count.
        dropped_ += entries_.size() - max_ + 1;
        if (auto st = save_dropped(); !st) return st;
        while (entries_.size() >= max_) {
            std::remove(entries_.front().path.c_str());
            entries_.pop_front();
        }
    }
    report["spool_dropped"] = dropped_;
    std::string id = report["report_id"].get<std::string>();
    SpoolEntry entry{next_seq_++, id, dir_ + "/" + entry_name(next_seq_ - 1, id)};
    if (auto st = write_file_atomic(entry.path, report.dump(), WriteOptions{0600, false}); !st) return st;
    entries_.push_back(entry);
    return Ok{};
}

std::vector<SpoolEntry> Spool::list() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return {entries_.begin(), entries_.end()};
}

Result<std::string> Spool::read(const SpoolEntry& entry) const {
    return read_file(entry.path, 16 * 1024 * 1024);
}

Status Spool::remove(const SpoolEntry& entry) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (std::remove(entry.path.c_str()) != 0 && errno != ENOENT)
        return make_error("cannot delete spooled report " + entry.path);
    entries_.erase(
        std::remove_if(entries_.begin(), entries_.end(), [&](const SpoolEntry& e) { return e.seq == entry.seq; }),
        entries_.end());
    return Ok{};
}

std::size_t Spool::size() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return entries_.size();
}

std::uint64_t Spool::dropped() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return dropped_;
}

}  // namespace nodeform::agent::daemon
