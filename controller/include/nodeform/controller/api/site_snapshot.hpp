#pragma once
// The site as the controller serves it: where it comes from (SiteSource), and the current snapshot swapped
// whole on a successful reload; a failed reload keeps the last good one and says why (/readyz, /metrics).
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "nodeform/clock.hpp"
#include "nodeform/log.hpp"
#include "nodeform/result.hpp"
#include "nodeform/site/site.hpp"

namespace nodeform::controller {

// Where the site comes from: a whole load plus a cheap change stamp (polled every reload interval). Not the
// site loader's file access (site::detail::SiteFiles): this is a loaded, validated site.
class SiteSource {
  public:
    virtual ~SiteSource() = default;
    virtual site::LoadResult load() = 0;
    // Changes whenever the files may have changed.
    virtual std::string stamp() = 0;
};
// load_site(dir); stamp = every file's path, size, mtime (ns) and inode under dir.
std::unique_ptr<SiteSource> make_directory_site_source(const std::string& dir);

// The site as served: the Site plus each node's spec body, rendered once per load.
struct Snapshot {
    site::Site site;
    std::map<std::string, std::string> bodies;  // identity → canonical JSON
    std::string loaded_at;
};

struct ReloadStatus {
    bool last_ok = true;
    std::string last_error;  // why the newest site on disk is not the one served
    std::uint64_t reloads_ok = 0;
    std::uint64_t reloads_failed = 0;
};

// Thread-safe: readers take current() (a shared_ptr that outlives a concurrent swap); one reload at a time.
class SiteSnapshots {
  public:
    SiteSnapshots(SiteSource& source, const Clock& clock, Logger& logger)
        : source_(source), clock_(clock), logger_(logger) {}

    std::shared_ptr<const Snapshot> current() const;
    // Loads the site; Ok when it now serves, Err (previous snapshot kept) when invalid. `initial` (startup) is
    // not counted as a reload.
    Status reload(bool initial);
    // The source's stamp differs from the one of the last reload (successful or not).
    bool changed();
    ReloadStatus status() const;

  private:
    SiteSource& source_;
    const Clock& clock_;
    Logger& logger_;
    mutable std::mutex mutex_;
    std::shared_ptr<const Snapshot> snapshot_;
    std::string last_stamp_;
    ReloadStatus status_;
    std::mutex reload_mutex_;
};

}  // namespace nodeform::controller
