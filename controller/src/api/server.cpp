// The controller API on cpp-httplib. Every route is dispatched by hand-written path checks in the pre-routing
// handler (no std::regex over request paths); POST bodies are read by httplib (payload cap → 413) and handled by
// two regex routes whose paths the pre-routing handler has already bounded and validated.
#include "nodeform/controller/api/server.hpp"

#include <arpa/inet.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <httplib.h>

#include <algorithm>
#include <condition_variable>
#include <filesystem>
#include <map>
#include <sstream>

#include "guarded_server.hpp"
#include "nodeform/atomic_file.hpp"
#include "nodeform/canonical_json.hpp"
#include "nodeform/controller/api/node_status.hpp"
#include "nodeform/controller/api/status_page.hpp"
#include "nodeform/controller/store/report_batcher.hpp"
#include "nodeform/controller/store/sqlite.hpp"
#include "nodeform/systemd.hpp"
#include "nodeform/tls.hpp"

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

// sd_notify(3) spoken natively (nodeform/systemd.hpp); the environment is read once, at construction.
class SystemdNotifier final : public Notifier {
  public:
    SystemdNotifier() : env_(systemd::NotifyEnvironment::from_process()) {}
    void notify(const std::string& state) override { (void)systemd::notify(env_, state); }
    std::chrono::microseconds watchdog_interval() override { return systemd::watchdog_timeout(env_); }

  private:
    systemd::NotifyEnvironment env_;
};

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

bool parse_ip(const std::string& text, int& family, unsigned char* out) {
    std::string addr = text;
    if (addr.rfind("::ffff:", 0) == 0 && addr.find('.') != std::string::npos) addr = addr.substr(7);
    if (inet_pton(AF_INET, addr.c_str(), out) == 1) {
        family = AF_INET;
        return true;
    }
    if (inet_pton(AF_INET6, addr.c_str(), out) == 1) {
        family = AF_INET6;
        return true;
    }
    return false;
}

// "10.0.0.0/8", "2001:db8::/32" or a bare address; false for malformed CIDRs.
bool ip_in_cidr(const std::string& ip, const std::string& cidr) {
    auto slash = cidr.find('/');
    std::string net = cidr.substr(0, slash);
    int fam_ip = 0, fam_net = 0;
    unsigned char a[16] = {}, b[16] = {};
    if (!parse_ip(ip, fam_ip, a) || !parse_ip(net, fam_net, b) || fam_ip != fam_net) return false;
    int max_bits = fam_ip == AF_INET ? 32 : 128;
    int bits = max_bits;
    if (slash != std::string::npos) {
        std::string p = cidr.substr(slash + 1);
        if (p.empty() || p.size() > 3 || !std::all_of(p.begin(), p.end(), ::isdigit)) return false;
        bits = std::stoi(p);
        if (bits > max_bits) return false;
    }
    for (int i = 0; i < bits; ++i) {
        int byte = i / 8, bit = 7 - i % 8;
        if (((a[byte] >> bit) & 1) != ((b[byte] >> bit) & 1)) return false;
    }
    return true;
}

std::string bearer_token(const httplib::Request& req) {
    std::string h = req.get_header_value("Authorization");
    if (h.size() > 7 && (h.rfind("Bearer ", 0) == 0 || h.rfind("bearer ", 0) == 0)) {
        std::string t = h.substr(7);
        while (!t.empty() && t.front() == ' ')
            t.erase(t.begin());
        while (!t.empty() && t.back() == ' ')
            t.pop_back();
        return t;
    }
    return "";
}

std::string random_hex(std::size_t bytes) {
    std::vector<unsigned char> buf(bytes);
    if (RAND_bytes(buf.data(), static_cast<int>(buf.size())) != 1) return "0";
    static const char* hex = "0123456789abcdef";
    std::string out;
    for (unsigned char c : buf) {
        out.push_back(hex[c >> 4]);
        out.push_back(hex[c & 0xf]);
    }
    return out;
}

// If-None-Match: "*", or a comma list of (optionally weak) entity tags.
bool etag_matches(const std::string& header, const std::string& etag) {
    if (header.empty()) return false;
    std::size_t start = 0;
    while (start < header.size()) {
        auto comma = header.find(',', start);
        std::string item = header.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
        while (!item.empty() && item.front() == ' ')
            item.erase(item.begin());
        while (!item.empty() && item.back() == ' ')
            item.pop_back();
        if (item.rfind("W/", 0) == 0) item = item.substr(2);
        if (item == "*" || item == etag) return true;
        if (item.size() >= 2 && item.front() == '"' && item.back() == '"' && item.substr(1, item.size() - 2) == etag)
            return true;
        if (comma == std::string::npos) break;
        start = comma + 1;
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

constexpr double kBuckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5};
constexpr std::size_t kBucketCount = sizeof(kBuckets) / sizeof(kBuckets[0]);

class Metrics {
  public:
    void observe(const std::string& route, int status, double seconds) {
        std::lock_guard<std::mutex> lock(mutex_);
        requests_[{route, status}]++;
        auto& h = latency_[route];
        for (std::size_t i = 0; i < kBucketCount; ++i)
            if (seconds <= kBuckets[i]) h.buckets[i]++;
        h.count++;
        h.sum += seconds;
    }
    void render(std::ostringstream& out) {
        std::lock_guard<std::mutex> lock(mutex_);
        out << "# HELP nodeform_http_requests_total HTTP requests by route and status.\n"
               "# TYPE nodeform_http_requests_total counter\n";
        for (const auto& [key, n] : requests_)
            out << "nodeform_http_requests_total{route=\"" << key.first << "\",status=\"" << key.second << "\"} " << n
                << "\n";
        out << "# HELP nodeform_http_request_duration_seconds Time from request parsed to response written.\n"
               "# TYPE nodeform_http_request_duration_seconds histogram\n";
        for (const auto& [route, h] : latency_) {
            for (std::size_t i = 0; i < kBucketCount; ++i)
                out << "nodeform_http_request_duration_seconds_bucket{route=\"" << route << "\",le=\"" << kBuckets[i]
                    << "\"} " << h.buckets[i] << "\n";
            out << "nodeform_http_request_duration_seconds_bucket{route=\"" << route << "\",le=\"+Inf\"} " << h.count
                << "\n";
            out << "nodeform_http_request_duration_seconds_sum{route=\"" << route << "\"} " << h.sum << "\n";
            out << "nodeform_http_request_duration_seconds_count{route=\"" << route << "\"} " << h.count << "\n";
        }
    }

  private:
    struct Histogram {
        std::uint64_t buckets[kBucketCount] = {};
        std::uint64_t count = 0;
        double sum = 0;
    };
    std::mutex mutex_;
    std::map<std::pair<std::string, int>, std::uint64_t> requests_;
    std::map<std::string, Histogram> latency_;
};

// Counts authentication failures per client address within a fixed window.
class AuthLimiter {
  public:
    AuthLimiter(int limit, std::chrono::seconds window) : limit_(limit), window_(window) {}
    bool blocked(const std::string& addr, std::chrono::steady_clock::time_point now) {
        std::lock_guard<std::mutex> lock(mutex_);
        auto it = entries_.find(addr);
        if (it == entries_.end()) return false;
        if (now - it->second.window_start >= window_) {
            entries_.erase(it);
            return false;
        }
        return it->second.failures >= limit_;
    }
    void failure(const std::string& addr, std::chrono::steady_clock::time_point now) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (entries_.size() > 100000) {  // bounded memory: drop expired windows, then everything if still huge
            for (auto it = entries_.begin(); it != entries_.end();)
                it = now - it->second.window_start >= window_ ? entries_.erase(it) : std::next(it);
            if (entries_.size() > 100000) entries_.clear();
        }
        auto& e = entries_[addr];
        if (e.failures == 0 || now - e.window_start >= window_) {
            e.window_start = now;
            e.failures = 0;
        }
        e.failures++;
    }
    std::chrono::seconds window() const { return window_; }

  private:
    struct Entry {
        std::chrono::steady_clock::time_point window_start{};
        int failures = 0;
    };
    int limit_;
    std::chrono::seconds window_;
    std::mutex mutex_;
    std::map<std::string, Entry> entries_;
};

// The site as served: the Site plus each node's spec body, rendered once per load.
struct Snapshot {
    site::Site site;
    std::map<std::string, std::string> bodies;  // identity → canonical JSON
    std::string loaded_at;
};

struct AuthOutcome {
    int status = 200;
    std::string code;
    std::string message;
};

}  // namespace

std::unique_ptr<SiteSource> make_directory_site_source(const std::string& dir) {
    return std::make_unique<DirectorySiteSource>(dir);
}

std::unique_ptr<Notifier> make_systemd_notifier() {
    return std::make_unique<SystemdNotifier>();
}

// ---------------------------------------------------------------------------------------------------------------

struct ControllerServer::Impl {
    ControllerConfig config;
    Store& store;
    SiteSource& source;
    const Clock& clock;
    Logger& logger;
    Notifier& notifier;
    ServerSecrets secrets;
    lifecycle::LifecycleStore* lifecycle;  // may be null
    ReportBatcher reports;                 // group commit; declared before http so that it outlives the workers
    ConnectionCounters connections;        // likewise

    std::unique_ptr<httplib::Server> http;
    Metrics metrics;
    AuthLimiter limiter;

    mutable std::mutex site_mutex;
    std::shared_ptr<const Snapshot> snapshot;
    std::string last_stamp;
    std::atomic<std::uint64_t> reloads_ok{0};
    std::atomic<std::uint64_t> reloads_failed{0};
    bool last_reload_ok = true;
    std::string last_reload_error;
    std::mutex reload_mutex;  // one reload at a time

    std::mutex stop_mutex;
    std::condition_variable stop_cv;
    bool stopping = false;
    std::vector<std::thread> threads;
    std::unique_ptr<StatusPages> pages;  // GET /, /nodes/{identity}, /login; POST /login, /logout

    Impl(ControllerConfig c, Store& s, SiteSource& src, const Clock& clk, Logger& log, Notifier& n, ServerSecrets sec,
         lifecycle::LifecycleStore* lc)
        : config(std::move(c)),
          store(s),
          source(src),
          clock(clk),
          logger(log),
          notifier(n),
          secrets(std::move(sec)),
          lifecycle(lc),
          reports(s),
          limiter(config.auth_failure_limit, config.auth_failure_window) {
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

    std::shared_ptr<const Snapshot> current() const {
        std::lock_guard<std::mutex> lock(site_mutex);
        return snapshot;
    }

    Status reload(bool initial) {
        std::lock_guard<std::mutex> guard(reload_mutex);
        std::string stamp = source.stamp();
        site::LoadResult loaded = source.load();
        if (!loaded.ok()) {
            std::string why;
            for (std::size_t i = 0; i < loaded.diagnostics.size() && i < 10; ++i)
                why += (i ? "; " : "") + loaded.diagnostics[i].to_string();
            if (loaded.diagnostics.size() > 10)
                why += "; … " + std::to_string(loaded.diagnostics.size() - 10) + " more";
            if (why.empty()) why = "the site could not be loaded";
            {
                std::lock_guard<std::mutex> lock(site_mutex);
                last_stamp = stamp;
                last_reload_ok = false;
                last_reload_error = why;
            }
            if (!initial) reloads_failed++;
            logger.error(std::string(initial ? "the site is invalid; nothing to serve: "
                                             : "refusing the changed site (still serving the last good one): ") +
                         why);
            return make_error(why);
        }
        auto snap = std::make_shared<Snapshot>();
        snap->site = std::move(*loaded.site);
        for (const auto& [identity, node] : snap->site.nodes)
            snap->bodies[identity] = canonical_dump(node.resolved);
        snap->loaded_at = format_rfc3339(clock.now());
        std::string digest = snap->site.digest;
        std::size_t count = snap->site.nodes.size();
        {
            std::lock_guard<std::mutex> lock(site_mutex);
            snapshot = std::move(snap);
            last_stamp = stamp;
            last_reload_ok = true;
            last_reload_error.clear();
        }
        if (!initial) reloads_ok++;
        logger.notice(std::string(initial ? "site loaded" : "site reloaded") + ": " + std::to_string(count) +
                      " nodes, digest " + digest);
        return Ok{};
    }

    // ---- auth ----------------------------------------------------------------------------------------------

    AuthOutcome authenticate(const httplib::Request& req, const site::Node& node) {
        const std::string& addr = req.remote_addr;
        auto now = clock.steady_now();
        if (limiter.blocked(addr, now))
            return {429, "rate_limited", "too many failed authentications from " + addr + "; retry later"};
        AuthOutcome out;
        switch (node.auth.method) {
            case site::AuthMethod::network: {
                bool allowed = false;
                for (const auto& cidr : node.auth.allowed_cidrs)
                    allowed = allowed || ip_in_cidr(addr, cidr);
                if (!allowed)
                    out = {403, "address_not_allowed",
                           "client address " + addr + " is not in the allowed networks of node " + node.name};
                break;
            }
            case site::AuthMethod::site_token: {
                std::string token = bearer_token(req);
                if (token.empty()) {
                    out = {401, "missing_credential", "send Authorization: Bearer <site token>"};
                } else if (node.auth.site_token.empty() || !constant_time_equal(token, node.auth.site_token)) {
                    out = {401, "invalid_credential", "the site token is not valid for node " + node.name};
                }
                break;
            }
            case site::AuthMethod::node_token: {
                std::string token = bearer_token(req);
                if (token.empty()) {
                    out = {401, "missing_credential", "send Authorization: Bearer <node credential> (enroll first)"};
                    break;
                }
                auto owner = store.credential_owner(hash_secret(token));
                if (!owner) {
                    logger.error("credential lookup failed: " + owner.message());
                    return {503, "store_unavailable", "the controller's store is unavailable; retry"};
                }
                if (!owner->has_value()) {
                    out = {401, "invalid_credential", "unknown or revoked node credential; enroll again"};
                } else if (**owner != node.name) {
                    out = {403, "forbidden", "this credential belongs to another node"};
                }
                break;
            }
        }
        if (out.status == 401 || out.status == 403) limiter.failure(addr, now);
        return out;
    }

    bool operator_ok(const httplib::Request& req, httplib::Response& res) {
        auto now = clock.steady_now();
        if (limiter.blocked(req.remote_addr, now)) {
            send_error(res, 429, "rate_limited", "too many failed authentications; retry later");
            res.set_header("Retry-After", std::to_string(limiter.window().count()));
            return false;
        }
        std::string token = bearer_token(req);
        if (secrets.operator_token_hash.empty() || token.empty() ||
            !constant_time_equal(hash_secret(token), secrets.operator_token_hash)) {
            limiter.failure(req.remote_addr, now);
            send_error(res, 401, token.empty() ? "missing_credential" : "invalid_credential",
                       "the operator endpoints need Authorization: Bearer <operator token> (STATE/operator-token)");
            return false;
        }
        return true;
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
                                      std::shared_ptr<const Snapshot>& snap) {
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
        if (reject(res, authenticate(req, it->second))) return nullptr;
        return &it->second;
    }

    void get_spec(const httplib::Request& req, httplib::Response& res, const std::string& identity) {
        t_request.route = "/v1/spec/{identity}";
        std::shared_ptr<const Snapshot> snap;
        const site::Node* node = authorized_node(req, res, identity, snap);
        if (node == nullptr) return;
        std::string etag = "\"" + node->digest + "\"";
        res.set_header("ETag", etag);
        res.set_header("Cache-Control", "no-cache");
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
        json body = json::parse(req.body, nullptr, false);
        if (body.is_discarded() || !body.is_object())
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
        std::string credential = generate_secret("nfc_");
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

    // Err(message) for a report that does not have the protocol's shape.
    static Status validate_report(const json& r, const std::string& identity) {
        if (!r.is_object()) return make_error("the report must be a JSON object");
        auto str = [&](const char* key, std::size_t max) -> Status {
            auto it = r.find(key);
            if (it == r.end() || !it->is_string()) return make_error(std::string("\"") + key + "\" must be a string");
            if (it->get_ref<const std::string&>().size() > max)
                return make_error(std::string("\"") + key + "\" is too long");
            return Ok{};
        };
        auto one_of = [&](const char* key, std::initializer_list<const char*> values) -> Status {
            if (auto st = str(key, 64); !st) return st;
            const auto& v = r.at(key).get_ref<const std::string&>();
            for (const char* ok : values)
                if (v == ok) return Ok{};
            std::string list;
            for (const char* ok : values)
                list += (list.empty() ? "" : ", ") + std::string(ok);
            return make_error(std::string("\"") + key + "\" must be one of " + list);
        };
        if (auto st = str("report_id", 128); !st) return st;
        const auto& id = r.at("report_id").get_ref<const std::string&>();
        if (id.empty() || !std::all_of(id.begin(), id.end(), [](char c) {
                return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
            }))
            return make_error("\"report_id\" must be 1-128 of [A-Za-z0-9._-] (a UUID)");
        if (auto st = str("identity", 253); !st) return st;
        if (r.at("identity").get_ref<const std::string&>() != identity)
            return make_error("the report's identity does not match the URL's node '" + identity + "'");
        if (auto st = str("agent_version", 64); !st) return st;
        if (auto st = str("spec_digest", 128); !st) return st;
        if (auto st = one_of("phase", {"converging", "platform-ready", "sustain"}); !st) return st;
        if (auto st = one_of("trigger", {"run", "health"}); !st) return st;
        if (auto st = one_of("mode", {"apply", "check"}); !st) return st;
        for (const char* key : {"started_at", "finished_at"}) {
            if (auto st = str(key, 64); !st) return st;
            std::chrono::system_clock::time_point t;
            if (!parse_rfc3339(r.at(key).get<std::string>(), t))
                return make_error(std::string("\"") + key + "\" must be an RFC 3339 UTC timestamp");
        }
        auto pr = r.find("platform_ready");
        if (pr == r.end() || !pr->is_boolean()) return make_error("\"platform_ready\" must be true or false");
        auto counts = r.find("counts");
        if (counts == r.end() || !counts->is_object()) return make_error("\"counts\" must be an object");
        for (const auto& [k, v] : counts->items()) {
            if (!v.is_number_unsigned() && !(v.is_number_integer() && v.get<long long>() >= 0))
                return make_error("\"counts." + k + "\" must be a non-negative integer");
        }
        for (const char* key : {"resources", "drift", "health"}) {
            auto it = r.find(key);
            if (it == r.end()) continue;
            if (!it->is_array()) return make_error(std::string("\"") + key + "\" must be an array");
            for (const auto& item : *it)
                if (!item.is_object()) return make_error(std::string("\"") + key + "\" items must be objects");
        }
        if (auto it = r.find("resources"); it != r.end()) {
            for (const auto& res : *it) {
                auto s = res.find("status");
                auto rid = res.find("id");
                if (rid == res.end() || !rid->is_string()) return make_error("\"resources[].id\" must be a string");
                if (s == res.end() || !s->is_string()) return make_error("\"resources[].status\" must be a string");
                const auto& v = s->get_ref<const std::string&>();
                if (v != "unchanged" && v != "changed" && v != "failed" && v != "skipped" && v != "drifted")
                    return make_error("\"resources[].status\" must be unchanged, changed, failed, skipped or drifted");
            }
        }
        if (auto it = r.find("health"); it != r.end()) {
            for (const auto& h : *it) {
                auto s = h.find("status");
                if (s == h.end() || !s->is_string() || (*s != "pass" && *s != "fail"))
                    return make_error("\"health[].status\" must be pass or fail");
            }
        }
        return Ok{};
    }

    void post_report(const httplib::Request& req, httplib::Response& res, const std::string& identity) {
        t_request.route = "/v1/nodes/{identity}/reports";
        std::shared_ptr<const Snapshot> snap;
        if (authorized_node(req, res, identity, snap) == nullptr) return;
        json report = json::parse(req.body, nullptr, false);
        if (report.is_discarded()) return send_error(res, 400, "malformed_body", "the body is not valid JSON");
        if (auto st = validate_report(report, identity); !st)
            return send_error(res, 422, "invalid_report", st.message());
        ReportRecord rec;
        rec.report_id = report["report_id"].get<std::string>();
        rec.identity = identity;
        rec.received_at = clock.now();
        rec.spec_digest = report["spec_digest"].get<std::string>();
        rec.phase = report["phase"].get<std::string>();
        rec.trigger = report["trigger"].get<std::string>();
        rec.mode = report["mode"].get<std::string>();
        rec.finished_at = report["finished_at"].get<std::string>();
        rec.platform_ready = report["platform_ready"].get<bool>();
        const auto& counts = report["counts"];
        auto count = [&](const char* key) -> std::int64_t {
            auto c = counts.find(key);
            return c == counts.end() ? 0 : c->get<std::int64_t>();
        };
        rec.changed = count("changed");
        rec.failed = count("failed");
        rec.drifted = count("drifted");
        if (rec.drifted == 0 && report.contains("drift"))
            rec.drifted = static_cast<std::int64_t>(report["drift"].size());
        if (report.contains("health"))
            for (const auto& h : report["health"])
                rec.health_failed += h["status"] == "fail" ? 1 : 0;
        rec.body = canonical_dump(report);
        auto outcome = reports.submit(rec);  // returns after the batch holding rec has committed (fsync)
        if (!outcome) {
            logger.error("storing a report failed: " + outcome.message(), {{"NODEFORM_IDENTITY", identity}});
            return send_error(res, 503, "store_unavailable", "the report was not stored; retry");
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
        {
            std::lock_guard<std::mutex> lock(site_mutex);
            body["last_reload"] = {{"ok", last_reload_ok}, {"error", last_reload_error}};
        }
        body["store"] = store_ok ? "ok" : "unavailable";
        body["site"] = snap ? json{{"name", snap->site.info.name},
                                   {"digest", snap->site.digest},
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
        std::ostringstream out;
        metrics.render(out);
        auto snap = current();
        std::map<std::string, int> by_status;
        for (auto s : kAllStatuses)
            by_status[to_string(s)] = 0;
        auto records = store.node_summaries();
        if (snap && records) {
            std::map<std::string, const NodeRecord*> by_id;
            for (const auto& r : *records)
                by_id[r.identity] = &r;
            for (const auto& [id, node] : snap->site.nodes) {
                auto it = by_id.find(id);
                NodeRecord empty{id, {}, {}, 0, false};
                by_status[to_string(derive_status(it == by_id.end() ? empty : *it->second, &node, clock.now(),
                                                  StatusOptions{config.stale_grace}))]++;
            }
        }
        out << "# HELP nodeform_nodes Nodes of the site by derived status.\n# TYPE nodeform_nodes gauge\n";
        for (const auto& [s, n] : by_status)
            out << "nodeform_nodes{status=\"" << s << "\"} " << n << "\n";
        auto stored = store.report_count();
        out << "# HELP nodeform_reports_stored Reports currently stored.\n# TYPE nodeform_reports_stored gauge\n"
            << "nodeform_reports_stored " << (stored ? *stored : -1) << "\n";
        out << "# HELP nodeform_http_connections_open Connections in service or waiting for a worker.\n"
            << "# TYPE nodeform_http_connections_open gauge\nnodeform_http_connections_open " << connections.open.load()
            << "\n"
            << "# HELP nodeform_http_connections_rejected_total Connections refused beyond max-connections.\n"
            << "# TYPE nodeform_http_connections_rejected_total counter\nnodeform_http_connections_rejected_total "
            << connections.rejected.load() << "\n"
            << "# HELP nodeform_http_deadline_closed_total Connections closed for missing a read/write deadline.\n"
            << "# TYPE nodeform_http_deadline_closed_total counter\nnodeform_http_deadline_closed_total "
            << connections.deadline_closed.load() << "\n";
        auto batches = reports.stats();
        out << "# HELP nodeform_report_commits_total Report transactions committed (group commit).\n"
            << "# TYPE nodeform_report_commits_total counter\nnodeform_report_commits_total " << batches.batches
            << "\n# HELP nodeform_report_commit_reports_total Reports in those transactions.\n"
            << "# TYPE nodeform_report_commit_reports_total counter\nnodeform_report_commit_reports_total "
            << batches.reports << "\n";
        bool ok;
        {
            std::lock_guard<std::mutex> lock(site_mutex);
            ok = last_reload_ok;
        }
        out << "# HELP nodeform_site_reloads_total Site reloads by result.\n# TYPE nodeform_site_reloads_total "
               "counter\n"
            << "nodeform_site_reloads_total{result=\"ok\"} " << reloads_ok.load() << "\n"
            << "nodeform_site_reloads_total{result=\"failed\"} " << reloads_failed.load() << "\n"
            << "# HELP nodeform_site_last_reload_ok 1 when the newest site on disk is the one served.\n"
               "# TYPE nodeform_site_last_reload_ok gauge\n"
            << "nodeform_site_last_reload_ok " << (ok ? 1 : 0) << "\n"
            << "# HELP nodeform_site_nodes Nodes in the served site.\n# TYPE nodeform_site_nodes gauge\n"
            << "nodeform_site_nodes " << (snap ? snap->site.nodes.size() : 0) << "\n";
        render_fleet_metrics(out, lifecycle, snap && stored.ok());
        res.status = 200;
        res.set_content(out.str(), "text/plain; version=0.0.4");
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
        t_request.request_id = random_hex(8);
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
                                   Logger& logger, Notifier& notifier, ServerSecrets secrets,
                                   lifecycle::LifecycleStore* lifecycle)
    : impl_(std::make_unique<Impl>(std::move(config), store, site_source, clock, logger, notifier, std::move(secrets),
                                   lifecycle)) {}

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
    limits.workers = static_cast<std::size_t>(cfg.threads);
    limits.max_connections = cfg.max_connections > 0 ? static_cast<std::size_t>(cfg.max_connections)
                                                     : 4 * static_cast<std::size_t>(cfg.threads);
    if (cfg.plain_http) {
        impl_->http = make_guarded_server(limits, impl_->connections);
    } else {
        if (cfg.tls_cert.empty() || cfg.tls_key.empty())
            return make_error("TLS needs a certificate and key (run prepare_state first, or pass --plain-http)");
        auto ssl = make_guarded_ssl_server(limits, impl_->connections, cfg.tls_cert, cfg.tls_key);
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
        if (!http.bind_to_port(cfg.listen_host, cfg.listen_port))
            return make_error("cannot listen on " + cfg.listen_host + ":" + std::to_string(cfg.listen_port) +
                              " (in use, or not an address of this machine?)");
        port_ = cfg.listen_port;
    }
    raise_backlog(http, 4096);
    return Ok{};
}

Status ControllerServer::run() {
    auto& impl = *impl_;
    if (!impl.http) return make_error("start() was not called or failed");
    impl.background([&impl] {  // site hot reload: poll the files' stamp
        while (!impl.wait_stop(impl.config.reload_interval)) {
            std::string stamp = impl.source.stamp();
            bool changed;
            {
                std::lock_guard<std::mutex> lock(impl.site_mutex);
                changed = stamp != impl.last_stamp;
            }
            if (changed) (void)impl.reload(false);
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
    auto watchdog = impl.notifier.watchdog_interval();
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

Result<PreparedState> prepare_state(ControllerConfig& config, const std::string& site_name) {
    namespace fs = std::filesystem;
    PreparedState out;
    if (config.state.empty()) return make_error("no state directory: pass --state DIR (or state: in the config file)");
    std::error_code ec;
    fs::create_directories(config.state, ec);
    if (ec) return make_error("cannot create the state directory " + config.state + ": " + ec.message());
    ::chmod(config.state.c_str(), 0700);
    std::string token_path = config.state + "/operator-token";
    if (fs::exists(token_path)) {
        auto text = read_file(token_path, 4096);
        if (!text) return text.error();
        std::string t = *text;
        while (!t.empty() && (t.back() == '\n' || t.back() == ' '))
            t.pop_back();
        if (t.size() < 16)
            return make_error(token_path + " is too short to be an operator token; delete it to regenerate");
        out.operator_token = t;
    } else {
        out.operator_token = generate_secret("nfo_");
        WriteOptions opts;
        opts.mode = 0600;
        if (auto st = write_file_atomic(token_path, out.operator_token + "\n", opts); !st) return st.error();
        out.generated_operator_token = true;
    }
    if (config.plain_http) return out;
    if (!config.tls_cert.empty() || !config.tls_key.empty()) {
        if (config.tls_cert.empty() || config.tls_key.empty())
            return make_error("--tls-cert and --tls-key go together");
        for (const auto& f : {config.tls_cert, config.tls_key})
            if (!fs::exists(f)) return make_error("TLS file " + f + " does not exist");
        return out;
    }
    std::string dir = config.state + "/tls";
    auto paths = tls::pki_paths(dir);
    if (!fs::exists(paths.server_cert) || !fs::exists(paths.server_key)) {
        tls::PkiOptions opts;
        opts.site_name = site_name.empty() ? "nodeform" : site_name;
        opts.hosts = config.tls_hosts;
        if (config.listen_host != "0.0.0.0" && config.listen_host != "::") opts.hosts.push_back(config.listen_host);
        char host[256] = {};
        if (::gethostname(host, sizeof(host) - 1) == 0 && host[0] != '\0') opts.hosts.push_back(host);
        auto pki = tls::generate_pki(opts);
        if (!pki) return pki.error();
        if (auto st = tls::write_pki(dir, *pki); !st) return st.error();
        out.generated_tls = true;
    }
    config.tls_cert = paths.server_cert;
    config.tls_key = paths.server_key;
    auto fp = tls::certificate_file_fingerprint(paths.ca_cert);
    if (fp) out.ca_fingerprint = *fp;
    return out;
}

}  // namespace nodeform::controller
