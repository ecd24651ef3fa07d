#include "nodeform/agent/daemon/daemon.hpp"
#include "nodeform/json_limits.hpp"

#include <csignal>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <vector>

#include <malloc.h>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>

#include "nodeform/atomic_file.hpp"

namespace nodeform::agent::daemon {
namespace {

using Json = nlohmann::json;
using std::chrono::milliseconds;
namespace asio = boost::asio;

std::string str_of(const Json& object, const char* key) {
    if (!object.is_object() || !object.contains(key) || !object[key].is_string()) return "";
    return object[key].get<std::string>();
}

std::string value_text(const Json& v) {
    if (v.is_string()) return v.get<std::string>();
    if (v.is_null()) return "none";
    std::string text = v.dump();
    if (text.size() > 80) text = text.substr(0, 77) + "...";
    return text;
}

// "mode 0600 -> 0644, owner alice -> root"
std::string describe_changes(const std::vector<protocol::Change>& changes) {
    std::string out;
    for (const auto& c : changes) {
        if (!out.empty()) out += ", ";
        std::string oldv = value_text(c.old_value);
        std::string newv = value_text(c.new_value);
        if (c.field == "content" && oldv.size() + newv.size() > 60) {
            out += "content changed";
        } else {
            out += c.field + " " + oldv + " -> " + newv;
        }
    }
    return out;
}

}  // namespace

std::string describe_counts(const protocol::Report& report) {
    const auto& c = report.counts;
    return std::to_string(c.total) + " resources: " + std::to_string(c.changed) + " changed, " +
           std::to_string(c.failed) + " failed, " + std::to_string(c.skipped) + " skipped, " +
           std::to_string(c.drifted) + " drifted";
}

struct Daemon::Impl {
    Impl(DaemonOptions o, DaemonDeps d)
        : opt(std::move(o)),
          deps(d),
          run_pool(std::make_unique<asio::thread_pool>(1)),
          health_pool(std::make_unique<asio::thread_pool>(2)),
          send_pool(std::make_unique<asio::thread_pool>(1)),
          turn_timer(io),
          send_timer(io),
          watchdog_timer(io),
          stop_timer(io),
          debounce_timer(io),
          unit_timer(io),
          run_backoff(opt.retry_base, opt.retry_cap),
          send_backoff(opt.retry_base, opt.retry_cap) {}

    ~Impl() {
        if (watch_stream && watch_stream->is_open()) (void)watch_stream->release();  // the watcher owns its fd
        if (abandoned) {
            // A worker is stuck past the stop timeout; joining would hang. The process exits right after.
            (void)run_pool.release();
            (void)health_pool.release();
            (void)send_pool.release();
            return;
        }
        run_pool->join();
        health_pool->join();
        send_pool->join();
    }

    DaemonOptions opt;
    DaemonDeps deps;
    asio::io_context io;
    std::unique_ptr<asio::thread_pool> run_pool;
    std::unique_ptr<asio::thread_pool> health_pool;
    std::unique_ptr<asio::thread_pool> send_pool;
    asio::steady_timer turn_timer;
    asio::steady_timer send_timer;
    asio::steady_timer watchdog_timer;
    asio::steady_timer stop_timer;
    asio::steady_timer debounce_timer;
    asio::steady_timer unit_timer;
    std::optional<asio::posix::stream_descriptor> watch_stream;  // the watcher's fd, in the event loop
    std::optional<asio::signal_set> signals;
    // Keeps io.run() alive while the only pending work sits on a worker pool (a turn, a probe, a delivery).
    std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
    Backoff run_backoff;
    Backoff send_backoff;

    // Loop state: touched only on the io thread.
    bool ready = false;
    bool stopping = false;
    bool finished = false;
    bool abandoned = false;
    bool running = false;
    bool rerun = false;
    bool sending = false;
    bool send_again = false;
    bool delivery_failing = false;  // the last delivery attempt failed: reports wait in the spool
    bool enrolled = false;
    bool turn_timer_armed = false;
    unsigned attempt = 0;
    unsigned failed = 0;
    unsigned drifted = 0;
    std::string note;
    std::string digest;
    std::optional<protocol::Report> last_report;  // the last run's, stamped
    std::string last_run_at;
    std::vector<HealthCheckSpec> checks;
    std::vector<std::unique_ptr<asio::steady_timer>> health_timers;
    std::uint64_t health_generation = 0;
    HealthTracker tracker;
    milliseconds interval{std::chrono::seconds(300)};
    milliseconds splay{std::chrono::seconds(60)};

    // Drift watching (docs/daemon.md, "Drift in a second").
    std::shared_ptr<const Json> spec_now;  // the last spec a turn fetched: changes are examined against it
    std::set<std::string> changes;         // seen, not yet examined ("/etc/group", "unit:nginx.service")
    bool debounce_armed = false;
    bool unit_busy = false;
    bool cgroup_seen = false;            // a managed unit's cgroup changed since the last unit check began
    bool checking_cgroup_event = false;  // the unit check under way was started by such a change
    // A cgroup appears/disappears a moment before systemd settles the unit's state: look shortly after.
    static constexpr milliseconds kUnitEventDelay{100};
    std::vector<UnitExpectation> units;
    std::vector<std::string> unit_states;  // as last seen, parallel to units
    std::string last_apply_request;        // the controller's last converge request taken (daemon.json)

    mutable std::mutex stats_mutex;
    DaemonStats stats;

    // ---- helpers -------------------------------------------------------------------------------------------

    void bump(std::uint64_t DaemonStats::*field) {
        std::lock_guard<std::mutex> lock(stats_mutex);
        ++(stats.*field);
    }

    std::vector<protocol::HealthEntry> health_entries() const {
        std::vector<protocol::HealthEntry> out;
        for (const auto& r : tracker.results())
            out.push_back(to_entry(r));
        return out;
    }

    // Every report this daemon sends is stamped here (protocol::stamp); `at` non-empty: a new report at that time.
    void stamp(protocol::Report& report, protocol::Trigger trigger, protocol::Phase phase, const std::string& at) {
        protocol::stamp(report, {opt.identity, opt.agent_version, digest, trigger, phase, health_entries(), at},
                        deps.random);
    }

    void update_status() {
        if (stopping) return;  // STOPPING=1 is the last word to systemd
        StatusSummary s;
        s.ready = ready;
        s.attempt = attempt;
        s.failed = failed;
        s.drifted = drifted;
        s.health_pass = tracker.passing();
        s.health_total = static_cast<unsigned>(checks.size());
        // Reports in flight to a healthy controller are not news; only those waiting for one are.
        s.spooled = deps.poster == nullptr || delivery_failing ? static_cast<unsigned>(deps.spool.size()) : 0;
        s.note = note;
        deps.notifier.notify("STATUS=" + format_status(s));
    }

    void write_state() {
        if (opt.state_file.empty()) return;
        Json state = {{"identity", opt.identity},
                      {"ready", ready},
                      {"turns", stats.turns},
                      {"last_run_at", last_run_at},
                      {"last_report_id", last_report ? last_report->report_id : std::string()},
                      {"spec_digest", digest},
                      {"spooled", deps.spool.size()},
                      {"spool_dropped", deps.spool.dropped()},
                      {"apply_request", last_apply_request}};
        if (auto st = write_file_atomic(opt.state_file, state.dump() + "\n", WriteOptions{0600, true}); !st)
            deps.logger.warning("cannot write daemon state: " + st.message());
    }

    void spool_report(const protocol::Report& report) {
        const std::string& id = report.report_id;
        if (auto st = deps.spool.put(protocol::to_json(report)); !st) {
            deps.logger.error("cannot spool report " + id + ": " + st.message() + " (is " + deps.spool.dir() +
                                  " writable and not full?)",
                              {{"NODEFORM_RUN_ID", id}});
            return;
        }
        bump(&DaemonStats::reports_spooled);
        kick_sender();
    }

    // ---- lifecycle -----------------------------------------------------------------------------------------

    int run() {
        work.emplace(io.get_executor());
        if (opt.handle_signals) {
            signals.emplace(io, SIGHUP, SIGTERM, SIGINT);
            wait_signal();
        }
        start_watchdog();
        load_state();
        if (deps.watcher != nullptr && deps.watcher->fd() >= 0) {
            watch_stream.emplace(io, deps.watcher->fd());
            wait_watch();
        }
        arm_unit_poll();
        ready = opt.already_ready;
        {
            std::lock_guard<std::mutex> lock(stats_mutex);
            stats.ready = ready;
        }
        // READY=1 means "the loop runs" (boot does not wait for a converge); platform-ready is STATUS=ready.
        deps.notifier.notify("READY=1");
        if (ready) deps.logger.info("platform-ready marker found: sustaining");
        update_status();
        kick_sender();
        const milliseconds first = start_delay(opt.start_splay.value_or(opt.splay.value_or(splay)), deps.random);
        if (first.count() > 0) {
            deps.logger.info("first run in " + std::to_string(first.count()) + " ms (splay)");
            arm_turn(first);
        } else {
            start_turn();
        }
        io.run();
        return 0;
    }

    void wait_signal() {
        signals->async_wait([this](const boost::system::error_code& ec, int signo) {
            if (ec || finished) return;
            if (signo == SIGHUP) {
                deps.logger.info("SIGHUP: running now");
                run_now();
            } else {
                deps.logger.info(std::string(signo == SIGTERM ? "SIGTERM" : "SIGINT") +
                                 ": finishing the resource in hand, then stopping");
                begin_stop();
            }
            if (!finished) wait_signal();
        });
    }

    void start_watchdog() {
        auto timeout = deps.notifier.watchdog_timeout();
        if (timeout.count() <= 0) return;
        auto half = std::chrono::duration_cast<std::chrono::microseconds>(timeout / 2);
        deps.notifier.notify("WATCHDOG=1");
        watchdog_timer.expires_after(half);
        watchdog_timer.async_wait([this](const boost::system::error_code& ec) {
            if (ec || finished) return;
            start_watchdog();
        });
    }

    void run_now() {
        if (stopping) return;
        if (running) {
            rerun = true;
        } else {
            turn_timer.cancel();
            start_turn();
        }
        if (!sending) {
            send_timer.cancel();
            send_backoff.reset();
            kick_sender();
        }
    }

    void begin_stop() {
        if (stopping) return;
        stopping = true;
        deps.notifier.notify("STOPPING=1");
        turn_timer.cancel();
        send_timer.cancel();
        stop_watching();
        stop_health();
        deps.engine.cancel();
        // One last delivery pass (bounded by the stop timeout); what it cannot deliver stays spooled.
        kick_sender();
        stop_timer.expires_after(opt.stop_timeout);
        stop_timer.async_wait([this](const boost::system::error_code& ec) {
            if (ec || finished) return;
            deps.logger.error("stop timeout reached with work in progress; exiting without waiting for it");
            abandoned = true;
            finish();
        });
        maybe_finish();
    }

    void maybe_finish() {
        if (stopping && !running && !sending && !finished) finish();
    }

    void finish() {
        finished = true;
        write_state();
        {
            std::lock_guard<std::mutex> lock(stats_mutex);
            stats.abandoned_work = abandoned;
        }
        turn_timer.cancel();
        send_timer.cancel();
        stop_watching();
        watchdog_timer.cancel();
        stop_timer.cancel();
        stop_health();
        if (signals) signals->cancel();
        work.reset();
        deps.logger.info("stopped after " + std::to_string(stats.turns) + " runs; " +
                         std::to_string(deps.spool.size()) + " reports spooled");
        io.stop();
    }

    // ---- turns ---------------------------------------------------------------------------------------------

    struct TurnResult {
        bool enrolled = false;
        std::string error;
        std::optional<SpecFetch> fetch;
        std::optional<RunOutcome> outcome;
        TurnMode mode = TurnMode::apply;
        bool local = false;         // started by a change: ran the last spec, no fetch
        std::string apply_request;  // the controller's converge request this turn took
    };

    // local: a turn for a change the watcher saw, against the last spec (the controller is not asked).
    void start_turn(bool local = false) {
        if (stopping || running) return;
        if (local && !spec_now) return;
        running = true;
        bool need_enroll = !enrolled && !local;
        bool sustain = ready;
        auto spec = local ? spec_now : nullptr;
        asio::post(*run_pool, [this, need_enroll, sustain, spec, seen = last_apply_request]() {
            TurnResult r;
            if (spec) {
                r.local = true;
                r.mode = turn_mode(*spec, sustain, false);
                r.outcome = deps.engine.run(*spec, r.mode);
                post_turn_done(std::move(r));
                return;
            }
            if (need_enroll) {
                auto st = deps.spec_source.enroll();
                if (!st) {
                    r.error = "enrollment failed: " + st.message();
                    post_turn_done(std::move(r));
                    return;
                }
                r.enrolled = true;
            }
            auto fetched = deps.spec_source.fetch();
            if (!fetched) {
                r.error = "cannot get the spec: " + fetched.message();
                post_turn_done(std::move(r));
                return;
            }
            bool requested = !fetched->apply_request.empty() && fetched->apply_request != seen;
            if (requested) r.apply_request = fetched->apply_request;
            r.mode = turn_mode(fetched->spec, sustain, requested);
            r.outcome = deps.engine.run(fetched->spec, r.mode);
            r.fetch = std::move(*fetched);
            post_turn_done(std::move(r));
        });
    }

    // Until platform-ready every run converges. In sustain, `drift: report` and `trigger: manual` only check,
    // unless the controller asked for a converge (docs/daemon.md).
    static TurnMode turn_mode(const Json& spec, bool sustain, bool requested) {
        if (!sustain || requested) return TurnMode::apply;
        const Json* apply =
            spec.is_object() && spec.contains("apply") && spec["apply"].is_object() ? &spec["apply"] : nullptr;
        if (apply == nullptr) return TurnMode::apply;
        return str_of(*apply, "drift") == "report" || str_of(*apply, "trigger") == "manual" ? TurnMode::check
                                                                                            : TurnMode::apply;
    }

    void post_turn_done(TurnResult r) {
        asio::post(io, [this, r = std::move(r)]() mutable { turn_done(std::move(r)); });
    }

    void turn_done(TurnResult r) {
        running = false;
        if (r.enrolled) enrolled = true;
        if (!r.error.empty()) {
            note = "no spec";
            deps.logger.warning(r.error);
            update_status();
            if (stopping) return maybe_finish();
            schedule_retry();
            return;
        }
        if (!r.local) {
            SpecFetch& fetch = *r.fetch;
            note = fetch.credential_refused ? "credential refused, waiting for a new enrollment token, cached spec"
                   : fetch.from_cache       ? "controller unreachable, cached spec"
                                            : "";
            if (fetch.from_cache && !fetch.warning.empty())
                deps.logger.log(fetch.credential_refused ? LogLevel::error : LogLevel::warning, fetch.warning,
                                {{"NODEFORM_STATUS", fetch.credential_refused ? "credential-refused" : "cached-spec"}});
            apply_spec(fetch);
            spec_now = std::make_shared<const Json>(std::move(fetch.spec));
            r.fetch.reset();
        }
        if (!r.apply_request.empty()) {
            deps.logger.notice("the controller asked for a converge (request " + r.apply_request + ")");
            last_apply_request = r.apply_request;
        }

        RunOutcome& outcome = *r.outcome;
        protocol::Report report = std::move(outcome.report);
        const bool reaching = !ready && (outcome.reached_platform_ready || outcome.ok);
        stamp(report, protocol::Trigger::run,
              reaching                            ? protocol::Phase::platform_ready
              : (ready || outcome.platform_ready) ? protocol::Phase::sustain
                                                  : protocol::Phase::converging,
              "");
        report.apply_request = r.apply_request;  // the controller clears its request when this report arrives
        const std::string id = report.report_id;
        log_run(report, r.mode);
        failed = static_cast<unsigned>(report.counts.failed + report.counts.skipped);
        drifted = static_cast<unsigned>(report.counts.drifted);
        last_report = report;
        last_run_at = report.finished_at;
        spool_report(report);
        {
            std::lock_guard<std::mutex> lock(stats_mutex);
            ++stats.turns;
            if (r.local) ++stats.change_turns;
        }
        after_run_changes(report);

        bool was_ready = ready;
        if (!ready && (reaching || outcome.platform_ready)) {
            ready = true;
            {
                std::lock_guard<std::mutex> lock(stats_mutex);
                stats.ready = true;
            }
            deps.logger.notice("platform ready after " + std::to_string(attempt + 1) + " converge run(s)",
                               {{"NODEFORM_RUN_ID", id}, {"NODEFORM_STATUS", "platform-ready"}});
        }
        if (!was_ready && !ready) ++attempt;
        if (ready) {
            attempt = 0;
            run_backoff.reset();
        }
        write_state();
        update_status();
        ::malloc_trim(0);  // hand the turn's freed heap pages back: the daemon idles for most of each interval

        if (opt.max_turns > 0 && stats.turns >= opt.max_turns) {
            deps.logger.info("reached " + std::to_string(opt.max_turns) + " runs (--max-turns): stopping");
            begin_stop();
        }
        if (stopping) return maybe_finish();
        if (rerun) {
            rerun = false;
            start_turn();
        } else if (ready) {
            if (!r.local || !turn_timer_armed) schedule_next_turn();
            if (!changes.empty()) arm_debounce();
        } else {
            schedule_retry();
        }
    }

    // ---- drift watching ------------------------------------------------------------------------------------

    void load_state() {
        if (opt.state_file.empty()) return;
        auto text = read_file(opt.state_file, 1024 * 1024);
        if (!text) return;
        auto parsed = parse_json_bounded(*text, {text->size()});
        if (parsed && parsed->is_object()) last_apply_request = str_of(*parsed, "apply_request");
    }

    void stop_watching() {
        debounce_timer.cancel();
        unit_timer.cancel();
        if (watch_stream) watch_stream->cancel();
    }

    void wait_watch() {
        watch_stream->async_wait(asio::posix::stream_descriptor::wait_read,
                                 [this](const boost::system::error_code& ec) {
                                     if (ec || stopping || finished) return;
                                     note_changes(deps.watcher->take_changes());
                                     wait_watch();
                                 });
    }

    void note_changes(const std::vector<std::string>& all) {
        std::vector<std::string> paths;
        bool units_moved = false;  // a managed service's cgroup came or went: look at the unit states now
        for (const auto& p : all) {
            if (unit_of_cgroup(p).empty())
                paths.push_back(p);
            else
                units_moved = true;
        }
        if (units_moved) check_units_soon();
        if (paths.empty()) return;
        changes.insert(paths.begin(), paths.end());
        deps.logger.debug("changed: " + join_some(paths));
        if (!running) arm_debounce();  // during a run: sorted out when it ends (after_run_changes)
    }

    // A burst of events becomes one examination, opt.watch_debounce after its first event.
    void arm_debounce() {
        if (debounce_armed || stopping || !ready) return;
        debounce_armed = true;
        debounce_timer.expires_after(opt.watch_debounce);
        debounce_timer.async_wait([this](const boost::system::error_code& ec) {
            debounce_armed = false;
            if (ec || stopping || running || changes.empty() || !ready) return;
            std::vector<std::string> seen(changes.begin(), changes.end());
            changes.clear();
            deps.logger.info("change seen: " + join_some(seen) + "; examining it now",
                             {{"NODEFORM_STATUS", "change-seen"}});
            start_turn(true);
        });
    }

    // After every run: what the run itself wrote is not drift; the watches follow the spec (and re-arm
    // what the run created or replaced).
    void after_run_changes(const protocol::Report& report) {
        if (deps.watcher != nullptr) {
            auto during = deps.watcher->take_changes();  // the run's own writes are queued by now
            changes.insert(during.begin(), during.end());
            for (const auto& res : report.resources) {
                if (res.status != protocol::ResourceStatus::changed) continue;
                for (auto it = changes.begin(); it != changes.end();)
                    it = written_by(res.id, *it) ? changes.erase(it) : std::next(it);
            }
            if (spec_now) deps.watcher->watch(watched_paths(*spec_now));
        } else {
            changes.clear();
        }
        if (!ready) changes.clear();  // until platform-ready the retries converge anyway
        // The unit check compares with what it saw last, across runs: a unit whose repair failed is examined once.
        // Only a new list of units starts it over.
        if (spec_now) {
            auto next = unit_expectations(*spec_now);
            bool same = next.size() == units.size();
            for (std::size_t i = 0; same && i < next.size(); ++i)
                same = next[i].unit == units[i].unit && next[i].running == units[i].running;
            if (!same) {
                units = std::move(next);
                unit_states.assign(units.size(), "");
            }
        }
    }

    // The unit check at once (a cgroup event), not at the next poll; one already under way looks again after.
    void check_units_soon() {
        if (deps.unit_runner == nullptr || stopping) return;
        cgroup_seen = true;
        if (unit_busy) return;  // units_seen re-arms with the short delay
        arm_unit_poll(kUnitEventDelay);
    }

    void arm_unit_poll() { arm_unit_poll(opt.unit_poll); }

    void arm_unit_poll(milliseconds delay) {
        if (deps.unit_runner == nullptr || opt.unit_poll.count() <= 0 || stopping) return;
        unit_timer.expires_after(delay);
        unit_timer.async_wait([this](const boost::system::error_code& ec) {
            if (ec || stopping) return;
            if (!ready || running || unit_busy || units.empty()) return arm_unit_poll();
            unit_busy = true;
            checking_cgroup_event = cgroup_seen;
            cgroup_seen = false;
            ProcessRequest request;
            request.argv = {"systemctl", "is-active", "--"};
            for (const auto& u : units)
                request.argv.push_back(u.unit);
            request.timeout = std::chrono::seconds(5);
            asio::post(*health_pool, [this, request, count = units.size()]() {
                auto res = deps.unit_runner->run(request);
                std::vector<std::string> states;
                if (res) {
                    std::size_t start = 0;
                    const std::string& out = res->out;
                    while (start < out.size()) {
                        auto end = out.find('\n', start);
                        if (end == std::string::npos) end = out.size();
                        states.push_back(out.substr(start, end - start));
                        start = end + 1;
                    }
                }
                if (states.size() != count) states.clear();  // no answer: nothing to compare
                asio::post(io, [this, states = std::move(states)]() { units_seen(states); });
            });
        });
    }

    // A managed unit that is not in the state the spec wants, and was not so at the last look, is a change.
    void units_seen(const std::vector<std::string>& states) {
        unit_busy = false;
        if (stopping) return;
        if (!running && states.size() == units.size() && unit_states.size() == units.size()) {
            std::vector<std::string> seen;
            for (std::size_t i = 0; i < units.size(); ++i) {
                if (states[i] != unit_states[i] && unit_differs(units[i], states[i]))
                    seen.push_back("unit:" + units[i].unit);
                unit_states[i] = states[i];
            }
            if (!seen.empty()) {
                deps.logger.info("unit state changed: " + join_some(seen) +
                                 (checking_cgroup_event || cgroup_seen ? " (seen through its cgroup)" : ""));
                note_changes(seen);
            }
        }
        if (cgroup_seen) return arm_unit_poll(kUnitEventDelay);
        arm_unit_poll();
    }

    static std::string join_some(const std::vector<std::string>& items) {
        std::string out;
        for (std::size_t i = 0; i < items.size() && i < 5; ++i)
            out += (i ? ", " : "") + items[i];
        if (items.size() > 5) out += " (+" + std::to_string(items.size() - 5) + " more)";
        return out;
    }

    void apply_spec(const SpecFetch& fetch) {
        milliseconds new_interval = interval, new_splay = splay;
        if (fetch.spec.is_object() && fetch.spec.contains("apply") && fetch.spec["apply"].is_object()) {
            const Json& a = fetch.spec["apply"];
            if (a.contains("interval_s") && a["interval_s"].is_number() && a["interval_s"].get<double>() > 0)
                new_interval = milliseconds(static_cast<std::int64_t>(a["interval_s"].get<double>() * 1000));
            if (a.contains("splay_s") && a["splay_s"].is_number() && a["splay_s"].get<double>() >= 0)
                new_splay = milliseconds(static_cast<std::int64_t>(a["splay_s"].get<double>() * 1000));
        }
        interval = opt.interval.value_or(new_interval);
        splay = opt.splay.value_or(new_splay);
        if (fetch.digest == digest) return;
        if (!digest.empty()) deps.logger.info("spec changed: now " + fetch.digest);
        digest = fetch.digest;
        Json health_list = fetch.spec.is_object() && fetch.spec.contains("health") ? fetch.spec["health"] : Json();
        auto parsed = parse_health_checks(health_list);
        if (!parsed) {
            deps.logger.error("health checks not started: " + parsed.message());
            checks.clear();
        } else {
            checks = std::move(*parsed);
        }
        tracker.retain(checks);
        start_health();
    }

    void schedule_retry() {
        auto delay = run_backoff.next(deps.random);
        deps.logger.info("next attempt in " + std::to_string(delay.count()) + " ms");
        arm_turn(delay);
    }

    void schedule_next_turn() {
        milliseconds offset = splay_offset(opt.identity, splay);
        milliseconds jitter(
            static_cast<std::int64_t>(deps.random.below(static_cast<std::uint64_t>(max_jitter(splay).count()) + 1)));
        arm_turn(next_turn_delay(deps.clock.now(), interval, offset, jitter));
    }

    void arm_turn(milliseconds delay) {
        turn_timer_armed = true;
        turn_timer.expires_after(delay);
        turn_timer.async_wait([this](const boost::system::error_code& ec) {
            if (ec) return;
            turn_timer_armed = false;
            if (stopping) return;
            if (running) {
                rerun = true;  // a turn for a change is in hand: the scheduled one follows it
                return;
            }
            start_turn();
        });
    }

    void log_run(const protocol::Report& report, TurnMode mode) {
        const std::string& id = report.report_id;
        if (!report.error.empty())
            deps.logger.error("run failed: " + report.error, {{"NODEFORM_RUN_ID", id}, {"NODEFORM_STATUS", "failed"}});
        for (const auto& res : report.resources) {
            if (res.status == protocol::ResourceStatus::unchanged) continue;
            std::string status = protocol::to_string(res.status);
            std::string line = res.id + " " + status;
            std::string changes = describe_changes(res.changes);
            if (!changes.empty())
                line += ": " + changes;
            else if (!res.message.empty())
                line += ": " + res.message;
            LogLevel level =
                res.status == protocol::ResourceStatus::failed ? LogLevel::error
                : res.status == protocol::ResourceStatus::skipped || res.status == protocol::ResourceStatus::drifted
                    ? LogLevel::warning
                    : LogLevel::notice;
            deps.logger.log(level, line,
                            {{"NODEFORM_RUN_ID", id}, {"NODEFORM_RESOURCE", res.id}, {"NODEFORM_STATUS", status}});
        }
        bool bad = report.counts.failed + report.counts.skipped > 0 || !report.error.empty();
        deps.logger.log(
            bad ? LogLevel::warning : LogLevel::info,
            std::string(mode == TurnMode::check ? "check" : "converge") + " run finished: " + describe_counts(report),
            {{"NODEFORM_RUN_ID", id}, {"NODEFORM_STATUS", bad ? "failed" : "ok"}});
    }

    // ---- health --------------------------------------------------------------------------------------------

    void stop_health() {
        ++health_generation;
        for (auto& t : health_timers)
            t->cancel();
        health_timers.clear();
    }

    void start_health() {
        stop_health();
        if (stopping) return;
        for (std::size_t i = 0; i < checks.size(); ++i) {
            health_timers.push_back(std::make_unique<asio::steady_timer>(io));
            arm_health(i, milliseconds(0));
        }
    }

    void arm_health(std::size_t index, milliseconds delay) {
        auto generation = health_generation;
        auto& timer = *health_timers[index];
        timer.expires_after(delay);
        timer.async_wait([this, index, generation](const boost::system::error_code& ec) {
            if (ec || generation != health_generation || stopping) return;
            HealthCheckSpec check = checks[index];
            asio::post(*health_pool, [this, index, generation, check]() {
                HealthResult result = deps.prober.probe(check);
                asio::post(io, [this, index, generation, result]() { health_done(index, generation, result); });
            });
        });
    }

    void health_done(std::size_t index, std::uint64_t generation, const HealthResult& result) {
        if (generation != health_generation || stopping) return;
        bool changed = tracker.update(result);
        if (changed) {
            deps.logger.log(
                result.pass ? LogLevel::notice : LogLevel::warning,
                "health check " + result.name + " " + (result.pass ? "passes" : "fails") + ": " + result.message,
                {{"NODEFORM_RESOURCE", "health:" + result.name}, {"NODEFORM_STATUS", result.pass ? "pass" : "fail"}});
            send_health_report();
        }
        update_status();
        arm_health(index, checks[index].interval);
    }

    void send_health_report() {
        protocol::Report report;
        if (last_report) {
            report = *last_report;
        } else {
            report.mode = protocol::Mode::check;
        }
        report.platform_ready = ready;
        stamp(report, protocol::Trigger::health, ready ? protocol::Phase::sustain : protocol::Phase::converging,
              format_rfc3339(deps.clock.now()));
        bump(&DaemonStats::health_reports);
        spool_report(report);
    }

    // ---- sending -------------------------------------------------------------------------------------------

    struct SendResult {
        std::uint64_t sent = 0;
        std::uint64_t rejected = 0;
        std::vector<std::string> problems;  // logged on the io thread
        std::string error;                  // the controller could not take a report: retry later
    };

    void kick_sender() {
        if (deps.poster == nullptr || finished) return;
        if (sending) {
            send_again = true;
            return;
        }
        if (deps.spool.size() == 0) return;
        sending = true;
        send_again = false;
        asio::post(*send_pool, [this]() {
            SendResult r;
            for (const auto& entry : deps.spool.list()) {
                auto body = deps.spool.read(entry);
                Json report;
                if (body) {
                    auto parsed = parse_json_bounded(*body, {body->size()});
                    if (parsed) report = std::move(*parsed);
                }
                if (!report.is_object()) {
                    r.problems.push_back("spooled report " + entry.path + " is unreadable; discarding it");
                    (void)deps.spool.remove(entry);
                    continue;
                }
                auto sent = deps.poster->post(report);
                if (sent.delivery == ReportDelivery::rejected) {
                    // Head-of-line: a report the controller can never accept must not block the ones behind it.
                    r.problems.push_back("the controller rejected report " + entry.report_id +
                                         " for good; dropping it from the spool: " + sent.message);
                    if (auto rm = deps.spool.remove(entry); !rm) r.problems.push_back(rm.message());
                    ++r.rejected;
                    continue;
                }
                if (!sent.ok()) {
                    r.error = sent.message;
                    break;
                }
                if (auto rm = deps.spool.remove(entry); !rm) r.problems.push_back(rm.message());
                ++r.sent;
            }
            asio::post(io, [this, r = std::move(r)]() { send_done(r); });
        });
    }

    void send_done(const SendResult& r) {
        sending = false;
        {
            std::lock_guard<std::mutex> lock(stats_mutex);
            stats.reports_sent += r.sent;
            stats.reports_rejected += r.rejected;
        }
        for (const auto& p : r.problems)
            deps.logger.warning(p);
        if (!r.error.empty()) {
            delivery_failing = true;
            if (stopping) {
                deps.logger.warning("cannot deliver reports (" + std::to_string(deps.spool.size()) +
                                    " spooled): " + r.error + "; they stay in the spool for the next start");
                return maybe_finish();
            }
            auto delay = send_backoff.next(deps.random);
            deps.logger.warning("cannot deliver reports (" + std::to_string(deps.spool.size()) +
                                " spooled): " + r.error + "; retrying in " + std::to_string(delay.count()) + " ms");
            if (note.empty()) note = "controller unreachable";
            update_status();
            send_timer.expires_after(delay);
            send_timer.async_wait([this](const boost::system::error_code& ec) {
                if (ec || stopping) return;
                kick_sender();
            });
            return;
        }
        if (r.sent > 0) {
            delivery_failing = false;
            send_backoff.reset();
            if (note == "controller unreachable") note.clear();
            update_status();
        }
        // New reports arrived while sending: go again (never loop on a spool that did not shrink).
        bool again = (send_again || r.sent > 0 || r.rejected > 0) && deps.spool.size() > 0;
        send_again = false;
        if (again) return kick_sender();
        maybe_finish();
    }
};

Daemon::Daemon(DaemonOptions options, DaemonDeps deps) : impl_(std::make_unique<Impl>(std::move(options), deps)) {}

Daemon::~Daemon() = default;

int Daemon::run() {
    return impl_->run();
}

void Daemon::request_run_now() {
    asio::post(impl_->io, [this]() { impl_->run_now(); });
}

void Daemon::request_stop() {
    asio::post(impl_->io, [this]() { impl_->begin_stop(); });
}

DaemonStats Daemon::stats() const {
    std::lock_guard<std::mutex> lock(impl_->stats_mutex);
    return impl_->stats;
}

}  // namespace nodeform::agent::daemon
