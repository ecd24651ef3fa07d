#include "nodeform/controller/api/site_snapshot.hpp"

#include <sys/stat.h>

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

std::shared_ptr<const Snapshot> SiteSnapshots::current() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return snapshot_;
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
    {
        std::lock_guard<std::mutex> lock(mutex_);
        snapshot_ = std::move(snap);
        last_stamp_ = stamp;
        status_.last_ok = true;
        status_.last_error.clear();
        if (!initial) status_.reloads_ok++;
    }
    logger_.notice(std::string(initial ? "site loaded" : "site reloaded") + ": " + std::to_string(count) +
                   " nodes, digest " + digest);
    return Ok{};
}

}  // namespace nodeform::controller
