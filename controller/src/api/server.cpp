// The controller API routes on cpp-httplib. Every route is dispatched by hand-written path checks in the pre-routing
// handler (no std::regex over request paths); POST bodies are read by httplib (payload cap → 413) and handled by
// two regex routes whose paths the pre-routing handler has already bounded and validated. Authentication, the
// report boundary, metrics, the site snapshot and the state directory live beside it (auth.cpp, report_intake.cpp,
// metrics.cpp, site_snapshot.cpp, state.cpp).
#include "nodeform/controller/api/server.hpp"

#include <openssl/ssl.h>

#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <string_view>

#include "guarded_server.hpp"
#include "nodeform/canonical_json.hpp"
#include "nodeform/controller/api/auth.hpp"
#include "nodeform/controller/api/metrics.hpp"
#include "nodeform/controller/api/node_status.hpp"
#include "nodeform/controller/api/report_intake.hpp"
#include "nodeform/controller/api/status_page.hpp"
#include "nodeform/controller/store/report_batcher.hpp"
#include "nodeform/json_limits.hpp"

namespace nodeform::controller {

using json = nlohmann::json;

// ---------------------------------------------------------------------------------------------------------------
// Small pieces

bool valid_identity(const std::string& identity) {
    if (identity.empty() || identity.size() > 253) return false;
    if (identity.front() == '.' || identity.front() == '-') return false;
    for (char c : identity) {
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.' && c != '_') return false;
    }
    return identity.find("..") == std::string::npos;
}

namespace {

std::string error_body(const std::string& code, const std::string& message) {
    return json{{"error", {{"code", code}, {"message", message}}}}.dump();
}

void send_error(httplib::Response& res, int status, const std::string& code, const std::string& message) {
    res.status = status;
    res.set_content(error_body(code, message), "application/json");
}

void send_json(httplib::Response& res, int status, const json& body) {
    res.status = status;
    res.set_content(body.dump(), "application/json");
}

// If-None-Match: "*", or a comma list of (optionally weak) entity tags.
bool etag_matches(const std::string& header, const std::string& etag) {
    for (std::string item : header_items(header, ',')) {
        if (item.rfind("W/", 0) == 0) item = item.substr(2);
        if (item == "*" || item == etag) return true;
        if (item.size() >= 2 && item.front() == '"' && item.back() == '"' && item.substr(1, item.size() - 2) == etag)
            return true;
    }
    return false;
}

// Per-request context carried from the pre-routing handler to the logger on the same worker thread.
struct RequestContext {
    std::chrono::steady_clock::time_point start{};
    std::string request_id;
    std::string route = "other";
    std::string identity;
    bool active = false;
};
thread_local RequestContext t_request;

// The pending converge requests (`node apply`) that spec answers carry, so that answering a spec never waits for
// the store: read whole from the store every kApplyRefresh, and dropped here as soon as this controller stores the
// report that took one (another controller's copy drops it at its next read; the agent takes each id once).
class PendingApplies {
  public:
    std::optional<std::string> find(const std::string& identity) const {
        if (!any_.load(std::memory_order_acquire)) return std::nullopt;
        std::lock_guard<std::mutex> lock(mutex_);
        auto it = requests_.find(identity);
        if (it == requests_.end()) return std::nullopt;
        return it->second;
    }
    // Reads the store; a read that raced with an acknowledgement here is dropped (the next one is current).
    Status refresh(Store& store) {
        std::uint64_t before = generation();
        auto all = store.pending_applies();
        if (!all) return all.error();
        std::lock_guard<std::mutex> lock(mutex_);
        if (generation_ != before) return Ok{};
        requests_ = std::move(*all);
        any_.store(!requests_.empty(), std::memory_order_release);
        return Ok{};
    }
    void acknowledged(const std::string& identity, const std::string& request_id) {
        std::lock_guard<std::mutex> lock(mutex_);
        ++generation_;
        auto it = requests_.find(identity);
        if (it != requests_.end() && it->second == request_id) requests_.erase(it);
        any_.store(!requests_.empty(), std::memory_order_release);
    }

  private:
    std::uint64_t generation() const {
        std::lock_guard<std::mutex> lock(mutex_);
        return generation_;
    }
    mutable std::mutex mutex_;
    std::map<std::string, std::string> requests_;  // identity → request id
    std::uint64_t generation_ = 0;                 // acknowledgements so far
    std::atomic<bool> any_{false};
};
constexpr std::chrono::seconds kApplyRefresh{1};

}  // namespace

// ---------------------------------------------------------------------------------------------------------------

struct ControllerServer::Impl {
    ControllerConfig config;
    Store& store;
    const Clock& clock;
    Logger& logger;
    Notifier& notifier;
    Random& random;
    ServerSecrets secrets;
    lifecycle::LifecycleStore* lifecycle;  // may be null
    protocol::ReportParser report_parser;  // report.schema.json, parsed once
    ReportBatcher reports;                 // group commit; declared before http so that it outlives the workers
    ConnectionCounters connections;        // likewise

    std::unique_ptr<httplib::Server> http;
    RequestMetrics metrics;
    AuthLimiter limiter;
    PendingApplies applies;

    SiteSnapshots site;  // the served site and its reloads

    std::mutex stop_mutex;
    std::condition_variable stop_cv;
    bool stopping = false;
    std::vector<std::thread> threads;
    std::unique_ptr<StatusPages> pages;  // GET /, /nodes/{identity}, /login; POST /login, /logout

    Impl(ControllerConfig c, Store& s, SiteSource& src, const Clock& clk, Logger& log, Notifier& n, Random& rnd,
         ServerSecrets sec, lifecycle::LifecycleStore* lc)
        : config(std::move(c)),
          store(s),
          clock(clk),
          logger(log),
          notifier(n),
          random(rnd),
          secrets(std::move(sec)),
          lifecycle(lc),
          reports(s),
          limiter(config.auth_failure_limit, config.auth_failure_window),
          site(src, clk, log, SiteBoard{&s, controller_instance_id(rnd), site_beat_ttl(config.reload_interval)}) {
        pages = std::make_unique<StatusPages>(
            StatusPageDeps{store, lifecycle, clock, secrets.operator_token_hash,
                           [this]() -> std::shared_ptr<const site::Site> {
                               auto snap = current();
                               return snap ? std::shared_ptr<const site::Site>(snap, &snap->site) : nullptr;
                           },
                           StatusOptions{config.stale_grace},
                           [this](const std::string& a) { return limiter.blocked(a, clock.steady_now()); },
                           [this](const std::string& a) { limiter.failure(a, clock.steady_now()); }});
    }

    std::shared_ptr<const Snapshot> current() const { return site.current(); }
    Status reload(bool initial) { return site.reload(initial); }

    // ---- auth ----------------------------------------------------------------------------------------------

    AuthOutcome authenticate(const httplib::Request& req, const site::Node& node) {
        return authenticate_node(node, req.remote_addr, req.get_header_value("Authorization"), store, limiter,
                                 clock.steady_now(), logger, CredentialPolicy{config.credential_ttl, clock.now()});
    }

    bool operator_ok(const httplib::Request& req, httplib::Response& res) {
        return !reject(res, authenticate_operator(req.remote_addr, req.get_header_value("Authorization"),
                                                  secrets.operator_token_hash, limiter, clock.steady_now()));
    }

    bool reject(httplib::Response& res, const AuthOutcome& auth) {
        if (auth.status == 200) return false;
        send_error(res, auth.status, auth.code, auth.message);
        if (auth.status == 429) res.set_header("Retry-After", std::to_string(limiter.window().count()));
        return true;
    }

    // ---- handlers -----------------------------------------------------------------------------------------

    // The node a node-facing request acts on: the site is loaded, the node exists and the caller passed its
    // posture's authentication. nullptr when the error answer has been sent. `snap` keeps the node alive.
    const site::Node* authorized_node(const httplib::Request& req, httplib::Response& res, const std::string& identity,
                                      std::shared_ptr<const Snapshot>& snap, AuthOutcome* outcome = nullptr) {
        snap = current();
        if (!snap) {
            send_error(res, 503, "not_ready", "no site loaded");
            return nullptr;
        }
        auto it = snap->site.nodes.find(identity);
        if (it == snap->site.nodes.end()) {
            send_error(res, 404, "unknown_node", "node '" + identity + "' is not in the site");
            return nullptr;
        }
        t_request.identity = identity;
        AuthOutcome auth = authenticate(req, it->second);
        if (reject(res, auth)) return nullptr;
        // Every authenticated answer says when the node should fetch a new credential.
        if (auth.rotate) res.set_header("Nodeform-Credential-Rotate", "pending");
        if (outcome != nullptr) *outcome = std::move(auth);
        return &it->second;
    }

    // What an event loop may answer itself (guarded_server.hpp): /healthz, and the spec of a node that does not
    // authenticate by a stored credential (its answer reads only memory). Everything else may wait on the store.
    bool loop_answers(std::string_view method, std::string_view target) const {
        if (method != "GET") return false;
        if (target == "/healthz") return true;
        constexpr std::string_view kSpec = "/v1/spec/";
        if (target.substr(0, kSpec.size()) != kSpec) return false;
        std::string identity(target.substr(kSpec.size(), target.find('?') - kSpec.size()));
        if (!valid_identity(identity)) return false;  // percent-encoded or malformed: a worker decides
        auto snap = current();
        if (!snap) return false;
        auto it = snap->site.nodes.find(identity);
        return it != snap->site.nodes.end() && it->second.auth.method != site::AuthMethod::node_token;
    }

    void get_spec(const httplib::Request& req, httplib::Response& res, const std::string& identity) {
        t_request.route = "/v1/spec/{identity}";
        std::shared_ptr<const Snapshot> snap;
        const site::Node* node = authorized_node(req, res, identity, snap);
        if (node == nullptr) return;
        std::string etag = "\"" + node->digest + "\"";
        res.set_header("ETag", etag);
        res.set_header("Cache-Control", "no-cache");
        // A pending `node apply` rides on every answer until the node's report acknowledges it; the agent takes
        // each id once. From the cache (PendingApplies): a new request shows within kApplyRefresh.
        if (auto pending = applies.find(identity)) res.set_header("Nodeform-Apply-Request", *pending);
        if (etag_matches(req.get_header_value("If-None-Match"), node->digest)) {
            res.status = 304;
            return;
        }
        res.status = 200;
        res.set_content(snap->bodies.at(identity), "application/json");
    }

    void post_enroll(const httplib::Request& req, httplib::Response& res) {
        t_request.route = "/v1/enroll";
        auto now_steady = clock.steady_now();
        if (limiter.blocked(req.remote_addr, now_steady)) {
            send_error(res, 429, "rate_limited", "too many failed attempts from " + req.remote_addr + "; retry later");
            res.set_header("Retry-After", std::to_string(limiter.window().count()));
            return;
        }
        auto parsed = parse_json_bounded(req.body, {config.max_body_bytes});
        if (!parsed) return send_error(res, 400, "malformed_body", "the body is " + parsed.message());
        json& body = *parsed;
        if (!body.is_object())
            return send_error(res, 400, "malformed_body", "expected a JSON object {\"identity\":…,\"token\":…}");
        auto id_it = body.find("identity");
        auto tok_it = body.find("token");
        if (id_it == body.end() || !id_it->is_string() || tok_it == body.end() || !tok_it->is_string())
            return send_error(res, 400, "malformed_body", "\"identity\" and \"token\" must be strings");
        std::string identity = id_it->get<std::string>();
        std::string token = tok_it->get<std::string>();
        if (!valid_identity(identity)) return send_error(res, 400, "invalid_identity", "malformed identity");
        if (token.empty() || token.size() > 256) {
            limiter.failure(req.remote_addr, now_steady);
            return send_error(res, 401, "invalid_token", "unknown, expired or already used enrollment token");
        }
        auto snap = current();
        if (!snap) return send_error(res, 503, "not_ready", "no site loaded");
        auto node = snap->site.nodes.find(identity);
        if (node == snap->site.nodes.end()) {
            limiter.failure(req.remote_addr, now_steady);
            return send_error(res, 401, "invalid_token", "unknown, expired or already used enrollment token");
        }
        t_request.identity = identity;
        if (node->second.auth.method != site::AuthMethod::node_token)
            return send_error(res, 409, "enrollment_not_used",
                              std::string("node '") + identity + "' authenticates by " +
                                  site::to_string(node->second.auth.method) + "; it does not enroll");
        std::string credential = generate_secret(random, "nfc_");
        auto outcome = store.enroll(identity, hash_secret(token), hash_secret(credential), clock.now());
        if (!outcome) {
            logger.error("enrollment failed: " + outcome.message(), {{"NODEFORM_IDENTITY", identity}});
            return send_error(res, 503, "store_unavailable", "the controller's store is unavailable; retry");
        }
        if (*outcome != EnrollOutcome::enrolled) {
            limiter.failure(req.remote_addr, now_steady);
            logger.warning("enrollment refused: invalid token", {{"NODEFORM_IDENTITY", identity}});
            return send_error(res, 401, "invalid_token", "unknown, expired or already used enrollment token");
        }
        logger.notice("node enrolled", {{"NODEFORM_IDENTITY", identity}});
        send_json(res, 200, json{{"identity", identity}, {"credential", credential}});
    }

    // POST /v1/nodes/{identity}/credential: a new credential for the caller, who authenticates with its current
    // one (or the previous one within its grace, when the answer to a rotation was lost).
    void post_credential(const httplib::Request& req, httplib::Response& res, const std::string& identity) {
        t_request.route = "/v1/nodes/{identity}/credential";
        std::shared_ptr<const Snapshot> snap;
        AuthOutcome auth;
        const site::Node* node = authorized_node(req, res, identity, snap, &auth);
        if (node == nullptr) return;
        if (node->auth.method != site::AuthMethod::node_token)
            return send_error(res, 409, "rotation_not_used",
                              std::string("node '") + identity + "' authenticates by " +
                                  site::to_string(node->auth.method) + "; it has no credential to rotate");
        std::string credential = generate_secret(random, "nfc_");
        auto now = clock.now();
        auto rotated = store.rotate_credential(
            identity, auth.credential_hash, hash_secret(credential), now,
            now + std::chrono::duration_cast<std::chrono::system_clock::duration>(config.credential_grace));
        if (!rotated) {
            logger.error("credential rotation failed: " + rotated.message(), {{"NODEFORM_IDENTITY", identity}});
            return send_error(res, 503, "store_unavailable", "the controller's store is unavailable; retry");
        }
        if (!*rotated) return send_error(res, 401, "invalid_credential", "the credential changed meanwhile; retry");
        res.headers.erase("Nodeform-Credential-Rotate");
        logger.notice("node credential rotated", {{"NODEFORM_IDENTITY", identity}});
        send_json(res, 200, json{{"identity", identity}, {"credential", credential}});
    }

    void post_report(const httplib::Request& req, httplib::Response& res, const std::string& identity) {
        t_request.route = "/v1/nodes/{identity}/reports";
        std::shared_ptr<const Snapshot> snap;
        if (authorized_node(req, res, identity, snap) == nullptr) return;
        auto intake = accept_report(report_parser, req.body, identity, clock.now());
        if (!intake.ok()) return send_error(res, intake.status, intake.code, intake.message);
        const ReportRecord& rec = intake.record;
        auto outcome = reports.submit(rec);  // returns after the batch holding rec has committed (fsync)
        if (!outcome) {
            logger.error("storing a report failed: " + outcome.message(), {{"NODEFORM_IDENTITY", identity}});
            return send_error(res, 503, "store_unavailable", "the report was not stored; retry");
        }
        if (!rec.apply_request.empty() && *outcome != InsertOutcome::conflict) {
            // The run that took the converge request is stored: the request is done. A store error answers 503,
            // so the agent retries the report and the acknowledgement with it.
            auto acked = store.acknowledge_apply(identity, rec.apply_request);
            if (!acked) {
                logger.error("clearing a converge request failed: " + acked.message(),
                             {{"NODEFORM_IDENTITY", identity}});
                return send_error(res, 503, "store_unavailable", "the converge request was not cleared; retry");
            }
            applies.acknowledged(identity, rec.apply_request);
            if (*acked)
                logger.notice("node took converge request " + rec.apply_request, {{"NODEFORM_IDENTITY", identity}});
        }
        switch (*outcome) {
            case InsertOutcome::inserted:
                return send_json(res, 201, json{{"report_id", rec.report_id}, {"stored", true}});
            case InsertOutcome::duplicate:
                return send_json(res, 200, json{{"report_id", rec.report_id}, {"stored", false}});
            case InsertOutcome::conflict:
                return send_error(res, 409, "report_id_conflict",
                                  "a different report with id " + rec.report_id + " is already stored");
        }
    }

    void get_nodes(const httplib::Request& req, httplib::Response& res) {
        t_request.route = "/v1/nodes";
        if (!operator_ok(req, res)) return;
        auto records = store.nodes();
        if (!records) return send_error(res, 503, "store_unavailable", records.message());
        std::map<std::string, lifecycle::NodeRecord> provisioned;
        if (lifecycle != nullptr) {
            auto all = lifecycle->all();
            if (!all) return send_error(res, 503, "store_unavailable", all.message());
            for (auto& r : *all)
                provisioned[r.identity] = std::move(r);
        }
        auto snap = current();
        std::map<std::string, NodeRecord> by_id;
        for (const auto& [id, r] : provisioned)
            by_id[id].identity = id;
        if (snap)
            for (const auto& [id, n] : snap->site.nodes)
                by_id[id].identity = id;
        for (auto& r : *records)
            by_id[r.identity] = std::move(r);
        json list = json::array();
        StatusOptions opts{config.stale_grace};
        for (const auto& [id, rec] : by_id) {
            const site::Node* node = nullptr;
            if (snap) {
                auto it = snap->site.nodes.find(id);
                if (it != snap->site.nodes.end()) node = &it->second;
            }
            json summary = node_summary_json(rec, node, clock.now(), opts);
            if (lifecycle != nullptr) {
                auto lc = provisioned.find(id);
                summary["lifecycle"] =
                    lifecycle_json(lc == provisioned.end() ? std::nullopt : std::optional(lc->second));
            }
            list.push_back(std::move(summary));
        }
        send_json(res, 200, json{{"nodes", list}});
    }

    void get_node(const httplib::Request& req, httplib::Response& res, const std::string& identity) {
        t_request.route = "/v1/nodes/{identity}";
        if (!operator_ok(req, res)) return;
        auto snap = current();
        const site::Node* node = nullptr;
        if (snap) {
            auto it = snap->site.nodes.find(identity);
            if (it != snap->site.nodes.end()) node = &it->second;
        }
        auto rec = store.node(identity);
        if (!rec) return send_error(res, 503, "store_unavailable", rec.message());
        std::optional<lifecycle::NodeRecord> provisioned;
        if (lifecycle != nullptr) {
            auto got = lifecycle->get(identity);
            if (!got) return send_error(res, 503, "store_unavailable", got.message());
            provisioned = std::move(*got);
        }
        if (!rec->has_value() && node == nullptr && !provisioned)
            return send_error(res, 404, "unknown_node", "node '" + identity + "' is neither in the site nor the store");
        NodeRecord r = rec->has_value() ? **rec : NodeRecord{identity, {}, {}, 0, false};
        t_request.identity = identity;
        json detail = node_detail_json(r, node, clock.now(), StatusOptions{config.stale_grace});
        if (lifecycle != nullptr) detail["lifecycle"] = lifecycle_json(provisioned);
        send_json(res, 200, detail);
    }

    void get_readyz(httplib::Response& res) {
        t_request.route = "/readyz";
        auto snap = current();
        json body;
        bool store_ok = store.ping().ok();
        auto reloads = site.status();
        body["last_reload"] = {{"ok", reloads.last_ok}, {"error", reloads.last_error}};
        // A loaded site waiting for the other controllers (no digests: see "site" below).
        if (reloads.pending)
            body["site_pending"] = {{"since", reloads.pending_since}, {"waiting_for", reloads.waiting_for.size()}};
        body["store"] = store_ok ? "ok" : "unavailable";
        // No digest: the site's covers its secrets, and this answer needs no authentication (docs/controller.md).
        body["site"] = snap ? json{{"name", snap->site.info.name},
                                   {"nodes", snap->site.nodes.size()},
                                   {"loaded_at", snap->loaded_at}}
                            : json();
        bool ready = snap && store_ok;
        body["status"] =
            ready ? (body["last_reload"]["ok"].get<bool>() ? "ready" : "ready_with_stale_site") : "not_ready";
        send_json(res, ready ? 200 : 503, body);
    }

    void get_metrics(httplib::Response& res) {
        t_request.route = "/metrics";
        auto snap = current();
        ServerGauges g;
        auto records = store.node_summaries();
        StatusOptions opts{config.stale_grace};
        g.nodes_by_status = snap && records ? nodes_by_status(*records, snap->site, clock.now(), opts)
                                            : nodes_by_status({}, site::Site{}, clock.now(), opts);
        auto stored = store.report_count();
        g.reports_stored = stored ? *stored : -1;
        g.connections_open = connections.open.load();
        g.connections_rejected = connections.rejected.load();
        g.deadline_closed = connections.deadline_closed.load();
        g.served_on_loop = connections.served_on_loop.load();
        auto batches = reports.stats();
        g.report_commits = batches.batches;
        g.report_commit_reports = batches.reports;
        auto reloads = site.status();
        g.reloads_ok = reloads.reloads_ok;
        g.reloads_failed = reloads.reloads_failed;
        g.last_reload_ok = reloads.last_ok;
        g.site_reload_pending = reloads.pending;
        g.site_nodes = snap ? snap->site.nodes.size() : 0;
        std::ostringstream fleet;  // lifecycle gauges and provisioning step histograms (status_page.hpp)
        render_fleet_metrics(fleet, lifecycle, snap && stored.ok());
        res.status = 200;
        res.set_content(render_metrics(metrics, g) + fleet.str(), "text/plain; version=0.0.4");
    }

    // ---- dispatch -----------------------------------------------------------------------------------------

    // Splits "/v1/nodes/ID/reports" style paths; false when a segment is empty.
    static std::vector<std::string> segments(const std::string& path) {
        std::vector<std::string> out;
        std::size_t start = 1;
        while (start <= path.size()) {
            auto slash = path.find('/', start);
            out.push_back(path.substr(start, slash == std::string::npos ? std::string::npos : slash - start));
            if (slash == std::string::npos) break;
            start = slash + 1;
        }
        return out;
    }

    httplib::Server::HandlerResponse pre_route(const httplib::Request& req, httplib::Response& res) {
        t_request = RequestContext{};
        t_request.active = true;
        t_request.start = std::chrono::steady_clock::now();
        t_request.request_id = random_hex(random, 8);
        res.set_header("X-Request-Id", t_request.request_id);
        using HR = httplib::Server::HandlerResponse;
        const std::string& path = req.path;  // already percent-decoded by httplib
        if (path.empty() || path.front() != '/' || path.find('\0') != std::string::npos) {
            send_error(res, 400, "bad_path", "malformed request path");
            return HR::Handled;
        }
        auto seg = segments(path);
        bool get = req.method == "GET" || req.method == "HEAD";
        auto identity_ok = [&](const std::string& id) {
            if (valid_identity(id)) return true;
            t_request.route = "invalid_identity";
            send_error(res, 400, "invalid_identity",
                       "a node identity is 1-253 characters of letters, digits, '.', '-' and '_'");
            return false;
        };
        if (seg.size() == 1 && (seg[0] == "healthz" || seg[0] == "readyz" || seg[0] == "metrics")) {
            if (!get) return method_not_allowed(res, "GET");
            if (seg[0] == "healthz") {
                t_request.route = "/healthz";
                send_json(res, 200, json{{"status", "ok"}});
            } else if (seg[0] == "readyz") {
                get_readyz(res);
            } else {
                get_metrics(res);
            }
            return HR::Handled;
        }
        if (seg.size() == 3 && seg[0] == "v1" && seg[1] == "spec") {
            if (!get) return method_not_allowed(res, "GET");
            if (identity_ok(seg[2])) get_spec(req, res, seg[2]);
            return HR::Handled;
        }
        if (seg.size() == 2 && seg[0] == "v1" && seg[1] == "enroll") {
            if (req.method != "POST") return method_not_allowed(res, "POST");
            t_request.route = "/v1/enroll";
            return HR::Unhandled;  // the POST route reads the (size-capped) body
        }
        if (seg.size() == 2 && seg[0] == "v1" && seg[1] == "nodes") {
            if (!get) return method_not_allowed(res, "GET");
            get_nodes(req, res);
            return HR::Handled;
        }
        if (seg.size() == 3 && seg[0] == "v1" && seg[1] == "nodes") {
            if (!get) return method_not_allowed(res, "GET");
            if (identity_ok(seg[2])) get_node(req, res, seg[2]);
            return HR::Handled;
        }
        if (seg.size() == 4 && seg[0] == "v1" && seg[1] == "nodes" && seg[3] == "credential") {
            if (req.method != "POST") return method_not_allowed(res, "POST");
            if (identity_ok(seg[2])) post_credential(req, res, seg[2]);
            // The body is not read (the request has none): never parse a stray one as the next request.
            const std::string length = req.get_header_value("Content-Length");
            if ((!length.empty() && length != "0") || req.has_header("Transfer-Encoding"))
                res.set_header("Connection", "close");
            return HR::Handled;
        }
        if (seg.size() == 4 && seg[0] == "v1" && seg[1] == "nodes" && seg[3] == "reports") {
            if (req.method != "POST") return method_not_allowed(res, "POST");
            t_request.route = "/v1/nodes/{identity}/reports";
            if (!identity_ok(seg[2])) {
                res.set_header("Connection", "close");  // the unread body must not be parsed as a request
                return HR::Handled;
            }
            return HR::Unhandled;
        }
        std::string page_route;
        if (auto claim = pages->pre_route(req, res, page_route); claim != StatusPages::Claim::none) {
            t_request.route = page_route;
            return claim == StatusPages::Claim::handled ? HR::Handled : HR::Unhandled;
        }
        t_request.route = "other";
        send_error(res, 404, "not_found", "no such endpoint (see docs/protocol.md)");
        if (!get) res.set_header("Connection", "close");
        return HR::Handled;
    }

    httplib::Server::HandlerResponse method_not_allowed(httplib::Response& res, const char* allow) {
        send_error(res, 405, "method_not_allowed", std::string("use ") + allow);
        res.set_header("Allow", allow);
        res.set_header("Connection", "close");
        return httplib::Server::HandlerResponse::Handled;
    }

    void on_logged(const httplib::Request& req, const httplib::Response& res) {
        double seconds = 0;
        std::string route = "unparsed";
        std::string request_id;
        std::string identity;
        if (t_request.active) {
            seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_request.start).count();
            route = t_request.route;
            request_id = t_request.request_id;
            identity = t_request.identity;
        }
        t_request.active = false;
        metrics.observe(route, res.status, seconds);
        if (!config.access_log && res.status < 500) return;
        LogFields fields{{"NODEFORM_ROUTE", route},
                         {"NODEFORM_STATUS", std::to_string(res.status)},
                         {"NODEFORM_CLIENT", req.remote_addr}};
        if (!request_id.empty()) fields["NODEFORM_REQUEST_ID"] = request_id;
        if (!identity.empty()) fields["NODEFORM_IDENTITY"] = identity;
        std::string method = req.method.size() <= 10 ? req.method : "?";
        std::string line = method + " " + route + " " + std::to_string(res.status);
        if (!identity.empty()) line += " " + identity;
        logger.log(res.status >= 500 ? LogLevel::error : LogLevel::info, line, fields);
    }

    void setup_routes() {
        http->set_pre_routing_handler(
            [this](const httplib::Request& req, httplib::Response& res) { return pre_route(req, res); });
        http->Post("/v1/enroll",
                   [this](const httplib::Request& req, httplib::Response& res) { post_enroll(req, res); });
        // The pre-routing handler has validated the identity segment (≤ 253 safe characters) before this regex runs.
        http->Post(R"(/v1/nodes/([A-Za-z0-9._-]{1,253})/reports)",
                   [this](const httplib::Request& req, httplib::Response& res) {
                       post_report(req, res, req.matches[1].str());
                   });
        pages->register_routes(*http);
        http->set_error_handler(
            httplib::Server::HandlerWithResponse([](const httplib::Request&, httplib::Response& res) {
                if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
                if (res.status == 400 && request_body_too_large()) res.status = 413;  // a chunked body cut short
                std::string code = res.status == 413   ? "payload_too_large"
                                   : res.status == 414 ? "uri_too_long"
                                   : res.status == 400 ? "bad_request"
                                   : res.status == 404 ? "not_found"
                                                       : "error";
                send_error(res, res.status, code, "HTTP status " + std::to_string(res.status));
                if (res.status == 413) res.set_header("Connection", "close");
                return httplib::Server::HandlerResponse::Handled;
            }));
        http->set_exception_handler([this](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
            std::string what = "unknown exception";
            try {
                if (ep) std::rethrow_exception(ep);
            } catch (const std::exception& e) {
                what = e.what();
            } catch (...) {
            }
            logger.error("internal error handling a request: " + what);
            send_error(res, 500, "internal_error", "internal error; see the controller's log");
        });
        http->set_logger([this](const httplib::Request& req, const httplib::Response& res) { on_logged(req, res); });
    }

    void background(std::function<void()> fn) { threads.emplace_back(std::move(fn)); }

    // Sleeps up to d; true when stopping.
    bool wait_stop(std::chrono::milliseconds d) {
        std::unique_lock<std::mutex> lock(stop_mutex);
        return stop_cv.wait_for(lock, d, [this] { return stopping; });
    }
};

ControllerServer::ControllerServer(ControllerConfig config, Store& store, SiteSource& site_source, const Clock& clock,
                                   Logger& logger, Notifier& notifier, Random& random, ServerSecrets secrets,
                                   lifecycle::LifecycleStore* lifecycle)
    : impl_(std::make_unique<Impl>(std::move(config), store, site_source, clock, logger, notifier, random,
                                   std::move(secrets), lifecycle)) {}

ControllerServer::~ControllerServer() {
    stop();
    for (auto& t : impl_->threads)
        if (t.joinable()) t.join();
}

std::int64_t ControllerServer::open_connections() const {
    return impl_->connections.open.load();
}

std::shared_ptr<const site::Site> ControllerServer::current_site() const {
    auto snap = impl_->current();
    if (!snap) return nullptr;
    return std::shared_ptr<const site::Site>(snap, &snap->site);
}

Status ControllerServer::reload() {
    return impl_->reload(false);
}

Status ControllerServer::start() {
    auto& cfg = impl_->config;
    if (auto st = impl_->reload(true); !st) return make_error("the site is invalid: " + st.message());
    ConnectionLimits limits;
    limits.read_timeout = cfg.read_timeout;
    limits.write_timeout = cfg.write_timeout;
    limits.keep_alive_timeout = cfg.keep_alive_timeout;
    limits.keep_alive_max_requests = 1000;
    limits.max_body_bytes = cfg.max_body_bytes;
    limits.workers = static_cast<std::size_t>(cfg.threads);
    // Idle keep-alive connections wait parked, not on a worker: the cap is on sockets, not threads.
    limits.max_connections = cfg.max_connections > 0 ? static_cast<std::size_t>(cfg.max_connections) : 8192;
    if (auto read = impl_->applies.refresh(impl_->store); !read)
        impl_->logger.warning("cannot read the pending converge requests: " + read.message());
    LoopRoute loop_route = [impl = impl_.get()](std::string_view method, std::string_view target) {
        return impl->loop_answers(method, target);
    };
    if (cfg.plain_http) {
        impl_->http = make_guarded_server(limits, impl_->connections, std::move(loop_route));
    } else {
        if (cfg.tls_cert.empty() || cfg.tls_key.empty())
            return make_error("TLS needs a certificate and key (run prepare_state first, or pass --plain-http)");
        auto ssl =
            make_guarded_ssl_server(limits, impl_->connections, cfg.tls_cert, cfg.tls_key, std::move(loop_route));
        if (!ssl->is_valid())
            return make_error("cannot use the TLS certificate " + cfg.tls_cert + " with key " + cfg.tls_key +
                              " (PEM certificate chain and matching private key)");
        SSL_CTX_set_min_proto_version(ssl->ssl_context(), TLS1_2_VERSION);
        impl_->http = std::move(ssl);
    }
    auto& http = *impl_->http;  // workers, timeouts and the connection cap come from limits (guarded_server.hpp)
    http.set_payload_max_length(cfg.max_body_bytes);
    http.set_tcp_nodelay(true);
    impl_->setup_routes();
    if (cfg.listen_port == 0) {
        port_ = http.bind_to_any_port(cfg.listen_host);
        if (port_ <= 0) return make_error("cannot listen on " + cfg.listen_host + " (any port)");
    } else {
        errno = 0;
        if (!http.bind_to_port(cfg.listen_host, cfg.listen_port)) {
            std::string address = cfg.listen_host + ":" + std::to_string(cfg.listen_port);
            if (errno == EADDRINUSE)
                return make_error("cannot listen on " + address +
                                  ": address in use (another controller or program is listening there)");
            return make_error("cannot listen on " + address + " (in use, or not an address of this machine?)");
        }
        port_ = cfg.listen_port;
    }
    raise_backlog(http, 4096);
    return Ok{};
}

Status ControllerServer::run() {
    auto& impl = *impl_;
    if (!impl.http) return make_error("start() was not called or failed");
    impl.background([&impl] {  // site hot reload: poll the files' stamp every reload_interval
        // The heartbeat (this controller's loaded digest, for the others: site_snapshot.hpp) at least every
        // kSiteBeatEvery, so that a long reload_interval does not make this controller look dead to the others.
        // Real time, as wait_stop's.
        using steady = std::chrono::steady_clock;
        const auto poll_every = impl.config.reload_interval;
        const auto beat_every = std::min(poll_every, kSiteBeatEvery);
        auto next_poll = steady::now() + poll_every;
        for (;;) {
            auto until_poll = std::chrono::duration_cast<std::chrono::milliseconds>(next_poll - steady::now());
            if (impl.wait_stop(std::clamp(until_poll, std::chrono::milliseconds(0), beat_every))) break;
            if (steady::now() >= next_poll) {
                next_poll = steady::now() + poll_every;
                if (impl.site.changed()) (void)impl.reload(false);
            }
            impl.site.heartbeat();
        }
        impl.site.withdraw();
    });
    impl.background([&impl] {  // the pending converge requests spec answers carry (PendingApplies)
        bool failing = false;
        while (!impl.wait_stop(kApplyRefresh)) {
            auto read = impl.applies.refresh(impl.store);
            if (!read && !failing) impl.logger.warning("cannot read the pending converge requests: " + read.message());
            failing = !read;
        }
    });
    impl.background([&impl] {  // report retention, at start and hourly
        do {
            RetentionPolicy policy{impl.config.reports_keep_last,
                                   std::chrono::hours(24 * impl.config.reports_keep_days)};
            auto removed = impl.store.apply_retention(policy, impl.clock.now());
            if (!removed) {
                impl.logger.warning("report retention failed: " + removed.message());
            } else if (*removed > 0) {
                impl.logger.info("retention removed " + std::to_string(*removed) + " old reports");
            }
        } while (!impl.wait_stop(std::chrono::hours(1)));
    });
    if (!impl.config.plain_http) {
        impl.background([&impl] {  // renew the generated certificate before it expires, and serve it at once
            while (!impl.wait_stop(
                std::chrono::duration_cast<std::chrono::milliseconds>(impl.config.cert_check_interval))) {
                auto renewed = renew_server_certificate_if_due(impl.config);
                if (!renewed) {
                    impl.logger.error(renewed.message());
                } else if (*renewed) {
                    auto st = reload_certificate(*impl.http, impl.config.tls_cert, impl.config.tls_key);
                    if (st)
                        impl.logger.notice("renewed the server certificate from the site CA; serving it now");
                    else
                        impl.logger.error("renewed the server certificate, but " + st.message() +
                                          "; a restart serves it");
                }
            }
        });
    }
    auto watchdog = impl.notifier.watchdog_timeout();
    if (watchdog.count() > 0) {
        impl.background([&impl, watchdog] {  // WATCHDOG=1 only while the store answers
            auto period = std::chrono::duration_cast<std::chrono::milliseconds>(watchdog / 2);
            do {
                if (impl.store.ping().ok()) impl.notifier.notify("WATCHDOG=1");
            } while (!impl.wait_stop(period));
        });
    }
    impl.notifier.notify("READY=1\nSTATUS=serving on port " + std::to_string(port_));
    impl.logger.notice(std::string("serving ") + (impl.config.plain_http ? "http" : "https") + " on " +
                       impl.config.listen_host + ":" + std::to_string(port_));
    bool ok = impl.http->listen_after_bind();
    stop();
    for (auto& t : impl.threads)
        if (t.joinable()) t.join();
    impl.threads.clear();
    return ok ? Status(Ok{}) : Status(make_error("the listener failed"));
}

void ControllerServer::stop() {
    {
        std::lock_guard<std::mutex> lock(impl_->stop_mutex);
        if (impl_->stopping && !impl_->http) return;
        impl_->stopping = true;
    }
    impl_->stop_cv.notify_all();
    if (impl_->http) impl_->http->stop();
}

// ---------------------------------------------------------------------------------------------------------------

}  // namespace nodeform::controller
