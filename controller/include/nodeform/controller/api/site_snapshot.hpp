#pragma once
// The site as the controller serves it: where it comes from (SiteSource), and the current snapshot swapped
// whole on a successful reload; a failed reload keeps the last good one and says why (/readyz, /metrics).
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include <vector>

#include "nodeform/clock.hpp"
#include "nodeform/controller/store/store.hpp"
#include "nodeform/log.hpp"
#include "nodeform/random.hpp"
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
    // A loaded site waiting for the other live controllers (docs/controller.md "one site digest at a time").
    bool pending = false;
    std::string pending_since;             // RFC 3339, when it was loaded
    std::vector<std::string> waiting_for;  // "CONTROLLER (DIGEST)" of each live controller with another digest
};

// Whether a controller may serve the site it has loaded: every live controller (heartbeat no older than ttl at
// now; this one's own beat included) has published loaded_digest. waiting_for names the others.
struct SiteAgreement {
    bool serve_loaded = false;
    std::vector<std::string> waiting_for;  // "CONTROLLER (DIGEST)", in the beats' order
};
SiteAgreement decide_site(const std::string& loaded_digest, const std::vector<SiteBeat>& beats, TimePoint now,
                          std::chrono::milliseconds ttl);

// The shared store's digest board as SiteSnapshots uses it: this controller's id and how long a heartbeat lasts.
struct SiteBoard {
    Store* store = nullptr;  // null: no coordination, every good load is served at once (a lone controller)
    std::string controller;
    std::chrono::milliseconds ttl{15000};
};
// "HOST-PID-RANDOM": unique per controller process, readable in logs.
std::string controller_instance_id(Random& random);
// How long another controller's beat counts as live here: 5 of this one's reload intervals, at least 15 s.
std::chrono::milliseconds site_beat_ttl(std::chrono::milliseconds reload_interval);
// Every controller beats at least this often, whatever its reload_interval: well inside any beat's lifetime.
inline constexpr std::chrono::milliseconds kSiteBeatEvery{3000};

// Thread-safe: readers take current() (a shared_ptr that outlives a concurrent swap); one reload at a time.
class SiteSnapshots {
  public:
    SiteSnapshots(SiteSource& source, const Clock& clock, Logger& logger, SiteBoard board = {})
        : source_(source), clock_(clock), logger_(logger), board_(std::move(board)) {}

    // The served snapshot. While a loaded site pends, each call asks the board first (so that once any
    // controller served the new digest, a later request to any other one is served it too).
    std::shared_ptr<const Snapshot> current() const;
    // Loads the site; Ok when it is valid (served now, or pending until every live controller has loaded it),
    // Err (previous snapshot kept) when invalid. `initial` (startup) is not counted as a reload and serves at once.
    Status reload(bool initial);
    // Publishes this controller's loaded digest with a fresh heartbeat and serves a pending site if agreed.
    void heartbeat();
    // Deletes this controller's beat (a stopping controller no longer holds reloads back).
    void withdraw();
    // The source's stamp differs from the one of the last reload (successful or not).
    bool changed();
    ReloadStatus status() const;

  private:
    SiteSource& source_;
    const Clock& clock_;
    Logger& logger_;
    // Serves pending_ when the board agrees; Ok(false) when it still pends or the board did not answer.
    bool promote() const;
    void publish(const std::string& digest);

    SiteBoard board_;
    mutable std::mutex mutex_;
    mutable std::shared_ptr<const Snapshot> snapshot_;
    mutable std::shared_ptr<const Snapshot> pending_;  // loaded, valid, not yet served
    std::string last_stamp_;
    mutable ReloadStatus status_;
    std::mutex reload_mutex_;
};

}  // namespace nodeform::controller
