#include "nodeform/agent/daemon/daemon.hpp"
#include "nodeform/json_limits.hpp"

#include <csignal>
#include <map>
#include <mutex>
#include <optional>
#include <vector>

#include <malloc.h>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
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
          run_backoff(opt.retry_base, opt.retry_cap),
          send_backoff(opt.retry_base, opt.retry_cap) {}

    ~Impl() {
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
                      {"spool_dropped", deps.spool.dropped()}};
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
    };

    void start_turn() {
        if (stopping || running) return;
        running = true;
        bool need_enroll = !enrolled;
        bool sustain = ready;
        asio::post(*run_pool, [this, need_enroll, sustain]() {
            TurnResult r;
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
            std::string drift = "remediate";
            if (fetched->spec.is_object() && fetched->spec.contains("apply") && fetched->spec["apply"].is_object())
                drift = str_of(fetched->spec["apply"], "drift");
            r.mode = sustain && drift == "report" ? TurnMode::check : TurnMode::apply;
            r.outcome = deps.engine.run(fetched->spec, r.mode);
            r.fetch = std::move(*fetched);
            post_turn_done(std::move(r));
        });
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
        const SpecFetch& fetch = *r.fetch;
        note = fetch.credential_refused ? "credential refused, waiting for a new enrollment token, cached spec"
               : fetch.from_cache       ? "controller unreachable, cached spec"
                                        : "";
        if (fetch.from_cache && !fetch.warning.empty())
            deps.logger.log(fetch.credential_refused ? LogLevel::error : LogLevel::warning, fetch.warning,
                            {{"NODEFORM_STATUS", fetch.credential_refused ? "credential-refused" : "cached-spec"}});
        apply_spec(fetch);

        RunOutcome& outcome = *r.outcome;
        protocol::Report report = std::move(outcome.report);
        const bool reaching = !ready && (outcome.reached_platform_ready || outcome.ok);
        stamp(report, protocol::Trigger::run,
              reaching                            ? protocol::Phase::platform_ready
              : (ready || outcome.platform_ready) ? protocol::Phase::sustain
                                                  : protocol::Phase::converging,
              "");
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
        }

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
            schedule_next_turn();
        } else {
            schedule_retry();
        }
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
        turn_timer.expires_after(delay);
        turn_timer.async_wait([this](const boost::system::error_code& ec) {
            if (ec || stopping) return;
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
