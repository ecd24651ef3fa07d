#include "nodeform/controller/api/site_snapshot.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <sstream>
#include <vector>

#include "nodeform/canonical_json.hpp"

namespace nodeform::controller {
namespace {

class DirectorySiteSource final : public SiteSource {
  public:
    explicit DirectorySiteSource(std::string dir) : dir_(std::move(dir)) {}
    site::LoadResult load() override { return site::load_site(dir_); }
    std::string stamp() override {
        namespace fs = std::filesystem;
        std::vector<std::string> entries;
        std::error_code ec;
        fs::recursive_directory_iterator it(dir_, fs::directory_options::skip_permission_denied, ec), end;
        for (; !ec && it != end && entries.size() < 20000; it.increment(ec)) {
            struct stat st {};
            if (::lstat(it->path().c_str(), &st) != 0) continue;
            std::ostringstream line;
            line << it->path().string() << '|' << st.st_size << '|' << st.st_mtim.tv_sec << '.' << st.st_mtim.tv_nsec
                 << '|' << st.st_ino;
            entries.push_back(line.str());
        }
        std::sort(entries.begin(), entries.end());
        std::string all;
        for (const auto& e : entries)
            all += e + "\n";
        if (ec) all += "error:" + ec.message();
        return sha256_hex(all);
    }

  private:
    std::string dir_;
};

}  // namespace

std::unique_ptr<SiteSource> make_directory_site_source(const std::string& dir) {
    return std::make_unique<DirectorySiteSource>(dir);
}

std::string controller_instance_id(Random& random) {
    char host[256] = {};
    std::string name = ::gethostname(host, sizeof(host) - 1) == 0 && host[0] != '\0' ? host : "controller";
    return name + "-" + std::to_string(::getpid()) + "-" + generate_secret(random, "").substr(0, 8);
}

std::chrono::milliseconds site_beat_ttl(std::chrono::milliseconds reload_interval) {
    return std::max(std::chrono::milliseconds(15000), 5 * reload_interval);
}

SiteAgreement decide_site(const std::string& loaded_digest, const std::vector<SiteBeat>& beats, TimePoint now,
                          std::chrono::milliseconds ttl) {
    SiteAgreement out;
    for (const auto& beat : beats) {
        if (now - beat.heartbeat > ttl) continue;  // expired: that controller is gone
        if (beat.digest != loaded_digest) out.waiting_for.push_back(beat.controller + " (" + beat.digest + ")");
    }
    out.serve_loaded = out.waiting_for.empty();
    return out;
}

std::shared_ptr<const Snapshot> SiteSnapshots::current() const {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        if (!pending_) return snapshot_;
    }
    (void)promote();
    std::lock_guard<std::mutex> lock(mutex_);
    return snapshot_;
}

bool SiteSnapshots::promote() const {
    std::shared_ptr<const Snapshot> candidate;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        candidate = pending_;
    }
    if (!candidate || board_.store == nullptr) return false;
    auto beats = board_.store->site_digests();
    if (!beats) return false;  // the store did not answer: keep serving the previous site
    auto agreement = decide_site(candidate->site.digest, *beats, clock_.now(), board_.ttl);
    std::lock_guard<std::mutex> lock(mutex_);
    if (pending_ != candidate) return false;  // a newer load replaced it meanwhile
    if (!agreement.serve_loaded) {
        status_.waiting_for = std::move(agreement.waiting_for);
        return false;
    }
    snapshot_ = std::move(pending_);
    pending_.reset();
    status_.pending = false;
    status_.pending_since.clear();
    status_.waiting_for.clear();
    logger_.notice("serving site digest " + snapshot_->site.digest + ": every live controller has loaded it");
    return true;
}

void SiteSnapshots::publish(const std::string& digest) {
    if (board_.store == nullptr) return;
    if (auto st = board_.store->publish_site_digest({board_.controller, digest, clock_.now()}); !st)
        logger_.warning("cannot publish the loaded site's digest to the store (retrying every reload interval): " +
                        st.message());
}

void SiteSnapshots::heartbeat() {
    std::string digest;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        if (pending_)
            digest = pending_->site.digest;
        else if (snapshot_)
            digest = snapshot_->site.digest;
    }
    if (digest.empty()) return;
    publish(digest);
    (void)promote();
}

void SiteSnapshots::withdraw() {
    if (board_.store == nullptr) return;
    if (auto st = board_.store->withdraw_site_digest(board_.controller); !st)
        logger_.warning("cannot withdraw this controller's site digest from the store: " + st.message());
}

ReloadStatus SiteSnapshots::status() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return status_;
}

bool SiteSnapshots::changed() {
    std::string stamp = source_.stamp();
    std::lock_guard<std::mutex> lock(mutex_);
    return stamp != last_stamp_;
}

Status SiteSnapshots::reload(bool initial) {
    std::lock_guard<std::mutex> guard(reload_mutex_);
    std::string stamp = source_.stamp();
    site::LoadResult loaded = source_.load();
    if (!loaded.ok()) {
        std::string why;
        for (std::size_t i = 0; i < loaded.diagnostics.size() && i < 10; ++i)
            why += (i ? "; " : "") + loaded.diagnostics[i].to_string();
        if (loaded.diagnostics.size() > 10) why += "; … " + std::to_string(loaded.diagnostics.size() - 10) + " more";
        if (why.empty()) why = "the site could not be loaded";
        {
            std::lock_guard<std::mutex> lock(mutex_);
            last_stamp_ = stamp;
            status_.last_ok = false;
            status_.last_error = why;
            if (!initial) status_.reloads_failed++;
        }
        logger_.error(std::string(initial ? "the site is invalid; nothing to serve: "
                                          : "refusing the changed site (still serving the last good one): ") +
                      why);
        return make_error(why);
    }
    auto snap = std::make_shared<Snapshot>();
    snap->site = std::move(*loaded.site);
    for (const auto& [identity, node] : snap->site.nodes)
        snap->bodies[identity] = canonical_dump(node.resolved);
    snap->loaded_at = format_rfc3339(clock_.now());
    std::string digest = snap->site.digest;
    std::size_t count = snap->site.nodes.size();
    bool pends = false;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        // Served at once: at startup, without a board, or when the digest is the one already served.
        pends = !initial && board_.store != nullptr && snapshot_ && snapshot_->site.digest != digest;
        if (pends) {
            if (!pending_ || pending_->site.digest != digest) status_.pending_since = snap->loaded_at;
            pending_ = std::move(snap);
            status_.pending = true;
        } else {
            snapshot_ = std::move(snap);
            pending_.reset();
            status_.pending = false;
            status_.pending_since.clear();
            status_.waiting_for.clear();
        }
        last_stamp_ = stamp;
        status_.last_ok = true;
        status_.last_error.clear();
        if (!initial) status_.reloads_ok++;
    }
    logger_.notice(std::string(initial ? "site loaded" : "site reloaded") + ": " + std::to_string(count) +
                   " nodes, digest " + digest);
    publish(digest);
    if (pends && !promote() && status().pending) {  // (another request may have promoted it meanwhile)
        auto st = status();
        std::string who;
        for (const auto& w : st.waiting_for)
            who += (who.empty() ? "" : ", ") + w;
        logger_.notice("serving the previous site until every live controller has loaded digest " + digest +
                       (who.empty() ? std::string(" (the store did not answer)") : "; waiting for " + who));
    }
    return Ok{};
}

}  // namespace nodeform::controller
