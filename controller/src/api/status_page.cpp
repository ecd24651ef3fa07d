// The status pages' routes, operator sessions and CSRF tokens (docs/controller.md#status-pages).
// Sessions live in memory only (a restart logs operators out); the cookie holds a random id, never the token.
#include <httplib.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <map>
#include <mutex>

#include "nodeform/controller/api/auth.hpp"
#include "nodeform/controller/api/server.hpp"
#include "nodeform/controller/api/status_page.hpp"
#include "nodeform/random.hpp"

namespace nodeform::controller {

namespace {

constexpr const char* kSessionCookie = "nf_session";
constexpr const char* kLoginCookie = "nf_login";
constexpr std::chrono::hours kSessionLifetime{12};
constexpr std::size_t kMaxSessions = 1024;

std::string cookie(const httplib::Request& req, const std::string& name) {
    for (const std::string& item : header_items(req.get_header_value("Cookie"), ';')) {
        if (item.size() > name.size() && item.compare(0, name.size(), name) == 0 && item[name.size()] == '=')
            return item.substr(name.size() + 1);
    }
    return "";
}

// Where a login may send the browser back to: the fleet or a node page, nothing else (no open redirect).
std::string safe_next(const std::string& next) {
    if (next == "/") return next;
    if (next.rfind("/nodes/", 0) == 0 && valid_identity(next.substr(7))) return next;
    return "/";
}

std::string session_cookie(const std::string& value, std::int64_t max_age) {
    return std::string(kSessionCookie) + "=" + value + "; Path=/; Max-Age=" + std::to_string(max_age) +
           "; HttpOnly; Secure; SameSite=Strict";
}

const char* const kLoginPage = R"(<div class="login"><h2>Operator login</h2><p class="mut">The operator token is in
<code>STATE/operator-token</code> on the controller.</p>)";

}  // namespace

struct StatusPages::Impl {
    StatusPageDeps deps;
    std::unique_ptr<Random> random = make_system_random();
    std::string key;  // HMAC key for CSRF tokens, random per process
    std::mutex mutex;
    std::map<std::string, std::chrono::steady_clock::time_point> sessions;  // hash_secret(id) → expiry

    explicit Impl(StatusPageDeps d) : deps(std::move(d)), key(random_token(32)) {}

    std::string random_token(std::size_t bytes) { return random_hex(*random, bytes); }

    std::string mac(const std::string& purpose, const std::string& value) const {
        unsigned char out[EVP_MAX_MD_SIZE];
        unsigned int len = 0;
        std::string data = purpose + ":" + value;
        HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
             reinterpret_cast<const unsigned char*>(data.data()), data.size(), out, &len);
        return hex_of(out, len);
    }

    // ---- sessions ----
    std::string new_session() {
        std::string id = random_token(32);
        auto now = deps.clock.steady_now();
        std::lock_guard<std::mutex> lock(mutex);
        for (auto it = sessions.begin(); it != sessions.end();)
            it = it->second <= now ? sessions.erase(it) : std::next(it);
        while (sessions.size() >= kMaxSessions) {  // bounded: the session closest to expiry goes first
            auto oldest = std::min_element(sessions.begin(), sessions.end(),
                                           [](const auto& a, const auto& b) { return a.second < b.second; });
            sessions.erase(oldest);
        }
        sessions[hash_secret(id)] = now + kSessionLifetime;
        return id;
    }
    bool session_valid(const std::string& id) {
        if (id.size() != 64) return false;
        std::lock_guard<std::mutex> lock(mutex);
        auto it = sessions.find(hash_secret(id));
        return it != sessions.end() && it->second > deps.clock.steady_now();
    }
    void end_session(const std::string& id) {
        std::lock_guard<std::mutex> lock(mutex);
        sessions.erase(hash_secret(id));
    }

    // ---- responses ----
    static void send_html(httplib::Response& res, int status, const std::string& body, const std::string& nonce) {
        res.status = status;
        res.set_header("Content-Security-Policy", "default-src 'none'; style-src 'nonce-" + nonce +
                                                      "'; script-src 'nonce-" + nonce +
                                                      "'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'");
        res.set_header("X-Frame-Options", "DENY");
        res.set_header("X-Content-Type-Options", "nosniff");
        res.set_header("Referrer-Policy", "same-origin");  // no-referrer would make same-origin POSTs say Origin: null
        res.set_header("Cache-Control", "no-store");
        res.set_content(body, "text/html; charset=utf-8");
    }

    PageContext context(const std::string& session) {
        PageContext page;
        page.nonce = random_token(16);
        if (!session.empty()) page.csrf = mac("csrf", session);
        auto site = deps.site ? deps.site() : nullptr;
        page.site_name = site ? site->info.name : "";
        page.generated_at = format_rfc3339(deps.clock.now());
        return page;
    }

    void message_page(httplib::Response& res, int status, const std::string& title, const std::string& text) {
        PageContext page = context("");
        std::string body = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>" +
                           html_escape(title) + "</title></head><body><h1>" + html_escape(title) + "</h1><p>" +
                           html_escape(text) + "</p><p><a href=\"/login\">Log in</a></p></body></html>";
        send_html(res, status, body, page.nonce);
    }

    void login_page(httplib::Response& res, int status, const std::string& next, const std::string& error) {
        std::string nonce_cookie = random_token(16);
        PageContext page = context("");
        std::string out =
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>nodeform · login</title>";
        out += login_style(page.nonce);
        out += "</head><body>";
        out += kLoginPage;
        if (!error.empty()) out += "<p class=\"err\" id=\"error\">" + html_escape(error) + "</p>";
        out +=
            "<form method=\"post\" action=\"/login\"><label for=\"token\">Operator token</label>"
            "<input type=\"password\" id=\"token\" name=\"token\" autocomplete=\"current-password\" required "
            "autofocus><input type=\"hidden\" name=\"csrf\" value=\"" +
            mac("login", nonce_cookie) + "\"><input type=\"hidden\" name=\"next\" value=\"" +
            html_escape(safe_next(next)) + "\"><button type=\"submit\">Log in</button></form></div></body></html>";
        res.set_header("Set-Cookie", std::string(kLoginCookie) + "=" + nonce_cookie +
                                         "; Path=/login; Max-Age=900; HttpOnly; Secure; SameSite=Strict");
        send_html(res, status, out, page.nonce);
    }

    static std::string login_style(const std::string& nonce);

    // Ok(session id, "" for the bearer header) or the refusal already sent.
    std::optional<std::string> authenticate(const httplib::Request& req, httplib::Response& res) {
        std::string token = bearer_token(req.get_header_value("Authorization"));
        if (!token.empty()) {
            if (deps.auth_blocked && deps.auth_blocked(req.remote_addr)) {
                message_page(res, 429, "Too many attempts", "too many failed authentications; retry later");
                return std::nullopt;
            }
            if (deps.operator_token_hash.empty() ||
                !constant_time_equal(hash_secret(token), deps.operator_token_hash)) {
                if (deps.auth_failed) deps.auth_failed(req.remote_addr);
                message_page(res, 401, "Not authorized", "the bearer token is not the operator token");
                return std::nullopt;
            }
            return std::string();
        }
        std::string session = cookie(req, kSessionCookie);
        if (!session.empty() && session_valid(session)) return session;
        res.set_redirect("/login?next=" + (req.path == "/" ? std::string("/") : safe_next(req.path)), 303);
        res.set_header("Cache-Control", "no-store");
        return std::nullopt;
    }

    // POSTs: a cross-site request carries another Origin; SameSite=Strict keeps the cookie away besides.
    static bool same_origin(const httplib::Request& req) {
        std::string origin = req.get_header_value("Origin");
        if (origin.empty() || origin == "null") return origin.empty();
        std::string host = req.get_header_value("Host");
        return origin == "https://" + host || origin == "http://" + host;
    }

    // ---- handlers ----
    void get_fleet(const httplib::Request& req, httplib::Response& res) {
        auto session = authenticate(req, res);
        if (!session) return;
        auto records = deps.store.node_summaries();  // no report bodies: the table needs none
        if (!records) return message_page(res, 503, "Store unavailable", records.message());
        std::vector<lifecycle::NodeRecord> provisioned;
        if (deps.lifecycle != nullptr) {
            auto all = deps.lifecycle->all();
            if (!all) return message_page(res, 503, "Store unavailable", all.message());
            provisioned = std::move(*all);
        }
        auto site = deps.site ? deps.site() : nullptr;
        auto rows = fleet_rows(*records, site.get(), provisioned, deps.clock.now(), deps.status_options);
        FleetFilter filter;
        std::string status = req.get_param_value("status");
        for (auto s : kAllStatuses)
            if (status == to_string(s)) filter.status = status;
        if (status.rfind("lifecycle:", 0) == 0 && lifecycle::parse_state(status.substr(10))) filter.status = status;
        filter.query = req.get_param_value("q").substr(0, 253);
        PageContext page = context(*session);
        send_html(res, 200, render_fleet_page(page, rows, filter, deps.refresh_s), page.nonce);
    }

    void get_node(const httplib::Request& req, httplib::Response& res, const std::string& identity) {
        auto session = authenticate(req, res);
        if (!session) return;
        auto site = deps.site ? deps.site() : nullptr;
        const site::Node* node = nullptr;
        if (site) {
            auto it = site->nodes.find(identity);
            if (it != site->nodes.end()) node = &it->second;
        }
        auto rec = deps.store.node(identity);
        if (!rec) return message_page(res, 503, "Store unavailable", rec.message());
        NodePageData data;
        if (deps.lifecycle != nullptr) {
            auto got = deps.lifecycle->get(identity);
            if (!got) return message_page(res, 503, "Store unavailable", got.message());
            data.lifecycle = std::move(*got);
            if (data.lifecycle) {
                auto receipts = deps.lifecycle->receipts(identity);
                if (!receipts) return message_page(res, 503, "Store unavailable", receipts.message());
                data.receipts = std::move(*receipts);
            }
        }
        if (!rec->has_value() && node == nullptr && !data.lifecycle)
            return message_page(res, 404, "Unknown node", "no node '" + identity + "' in the site or the stores");
        NodeRecord r = rec->has_value() ? **rec : NodeRecord{identity, {}, {}, 0, false};
        auto recent = deps.store.recent_reports(identity, deps.timeline_reports);
        if (!recent) return message_page(res, 503, "Store unavailable", recent.message());
        data.recent = std::move(*recent);
        data.summary =
            fleet_row(r, node, data.lifecycle ? &*data.lifecycle : nullptr, deps.clock.now(), deps.status_options);
        data.in_site = node != nullptr;
        data.enrolled = r.has_credential;
        data.report_count = r.report_count;
        auto parse = [](const std::optional<ReportRecord>& report) {
            if (!report) return nlohmann::json();
            auto j = nlohmann::json::parse(report->body, nullptr, false);
            return j.is_discarded() ? nlohmann::json() : j;
        };
        data.last_report = parse(r.last_report);
        data.last_run_report = r.last_run_report ? parse(r.last_run_report) : data.last_report;
        if (node != nullptr) data.secrets = node_secrets(*node);
        PageContext page = context(*session);
        send_html(res, 200, render_node_page(page, data), page.nonce);
    }

    void post_login(const httplib::Request& req, httplib::Response& res) {
        std::string next = req.get_param_value("next");
        if (!same_origin(req)) return message_page(res, 403, "Forbidden", "cross-origin form");
        if (deps.auth_blocked && deps.auth_blocked(req.remote_addr))
            return message_page(res, 429, "Too many attempts", "too many failed authentications; retry later");
        std::string nonce_cookie = cookie(req, kLoginCookie);
        if (nonce_cookie.empty() || !constant_time_equal(req.get_param_value("csrf"), mac("login", nonce_cookie)))
            return login_page(res, 403, next, "The login form expired; enter the token again.");
        std::string token = req.get_param_value("token");
        if (deps.operator_token_hash.empty() || token.empty() ||
            !constant_time_equal(hash_secret(token), deps.operator_token_hash)) {
            if (deps.auth_failed) deps.auth_failed(req.remote_addr);
            return login_page(res, 401, next, "That is not the operator token.");
        }
        std::string session = new_session();
        res.set_header("Set-Cookie", session_cookie(session, std::chrono::seconds(kSessionLifetime).count()));
        res.set_header("Set-Cookie", std::string(kLoginCookie) +
                                         "=; Path=/login; Max-Age=0; HttpOnly; Secure; "
                                         "SameSite=Strict");
        res.set_redirect(safe_next(next), 303);
        res.set_header("Cache-Control", "no-store");
    }

    void post_logout(const httplib::Request& req, httplib::Response& res) {
        std::string session = cookie(req, kSessionCookie);
        if (!same_origin(req) || session.empty() || !session_valid(session) ||
            !constant_time_equal(req.get_param_value("csrf"), mac("csrf", session)))
            return message_page(res, 403, "Forbidden", "log out with the button on a page of this controller");
        end_session(session);
        res.set_header("Set-Cookie", session_cookie("", 0));
        res.set_redirect("/login", 303);
        res.set_header("Cache-Control", "no-store");
    }
};

std::string StatusPages::Impl::login_style(const std::string& nonce) {
    // The shared stylesheet is the fleet page's; the login page needs only its own few rules.
    return "<style nonce=\"" + nonce +
           "\">body{margin:0;font:14px/1.45 system-ui,sans-serif;background:#f6f7f9;color:#1d2330}"
           ".login{max-width:380px;margin:80px auto;background:#fff;border:1px solid #e3e6eb;border-radius:10px;"
           "padding:22px}.login h2{margin:0 0 6px}.mut{color:#667085}code{font:12px ui-monospace,monospace}"
           "input[type=password]{width:100%;box-sizing:border-box;padding:8px;margin:8px 0 12px;border:1px solid "
           "#d0d5dd;border-radius:6px;font:inherit}button{padding:7px 16px;border-radius:6px;border:0;"
           "background:#1d4fb8;color:#fff;font:inherit;cursor:pointer}.err{color:#b42318}</style>";
}

StatusPages::StatusPages(StatusPageDeps deps) : impl_(std::make_unique<Impl>(std::move(deps))) {}
StatusPages::~StatusPages() = default;

StatusPages::Claim StatusPages::pre_route(const httplib::Request& req, httplib::Response& res, std::string& route) {
    const std::string& path = req.path;
    bool get = req.method == "GET" || req.method == "HEAD";
    auto only = [&](const char* allow) {
        impl_->message_page(res, 405, "Method not allowed", std::string("use ") + allow);
        res.set_header("Allow", allow);
        res.set_header("Connection", "close");
        return Claim::handled;
    };
    if (path == "/") {
        route = "/";
        if (!get) return only("GET");
        impl_->get_fleet(req, res);
        return Claim::handled;
    }
    if (path == "/login") {
        route = "/login";
        if (req.method == "POST") return Claim::needs_body;
        if (!get) return only("GET, POST");
        std::string session = cookie(req, kSessionCookie);
        if (!session.empty() && impl_->session_valid(session)) {
            res.set_redirect(safe_next(req.get_param_value("next")), 303);
            return Claim::handled;
        }
        impl_->login_page(res, 200, req.get_param_value("next"), "");
        return Claim::handled;
    }
    if (path == "/logout") {
        route = "/logout";
        if (req.method == "POST") return Claim::needs_body;
        return only("POST");
    }
    if (path.rfind("/nodes/", 0) == 0 && path.find('/', 7) == std::string::npos) {
        route = "/nodes/{identity}";
        if (!get) return only("GET");
        std::string identity = path.substr(7);
        if (!valid_identity(identity)) {
            impl_->message_page(res, 400, "Invalid identity",
                                "a node identity is 1-253 characters of letters, digits, '.', '-' and '_'");
            return Claim::handled;
        }
        impl_->get_node(req, res, identity);
        return Claim::handled;
    }
    return Claim::none;
}

void StatusPages::register_routes(httplib::Server& http) {
    http.Post("/login", [this](const httplib::Request& req, httplib::Response& res) { impl_->post_login(req, res); });
    http.Post("/logout", [this](const httplib::Request& req, httplib::Response& res) { impl_->post_logout(req, res); });
}

// ---- metrics ---------------------------------------------------------------------------------------------

void render_fleet_metrics(std::ostringstream& out, lifecycle::LifecycleStore* lifecycle, bool ready) {
    out << "# HELP nodeform_controller_ready 1 when a site is loaded and the store answers (as /readyz).\n"
           "# TYPE nodeform_controller_ready gauge\nnodeform_controller_ready "
        << (ready ? 1 : 0) << "\n";
    if (lifecycle == nullptr) return;
    out << "# HELP nodeform_lifecycle_nodes Provisioned nodes by lifecycle state.\n"
           "# TYPE nodeform_lifecycle_nodes gauge\n";
    std::map<std::string, int> by_state;
    for (const char* s : {"planned", "provisioning", "registered", "validating", "active", "decommissioning",
                          "decommissioned", "failed", "abandoned"})
        by_state[s] = 0;
    if (auto all = lifecycle->all(); all)
        for (const auto& r : *all)
            by_state[lifecycle::to_string(r.state)]++;
    for (const auto& [state, n] : by_state)
        out << "nodeform_lifecycle_nodes{state=\"" << state << "\"} " << n << "\n";
    static const std::vector<double> kBounds = {1, 5, 15, 30, 60, 120, 300, 600, 1800};
    auto steps = lifecycle->step_durations(kBounds);
    if (!steps) return;
    out << "# HELP nodeform_provisioning_step_duration_seconds Provisioning and decommissioning steps by outcome, "
           "from the lifecycle receipts.\n# TYPE nodeform_provisioning_step_duration_seconds histogram\n";
    for (const auto& s : *steps) {
        std::string labels = "step=\"" + s.step + "\",outcome=\"" + s.outcome + "\"";  // the lifecycle's own names
        for (std::size_t i = 0; i < kBounds.size(); ++i)
            out << "nodeform_provisioning_step_duration_seconds_bucket{" << labels << ",le=\"" << kBounds[i] << "\"} "
                << s.le[i] << "\n";
        out << "nodeform_provisioning_step_duration_seconds_bucket{" << labels << ",le=\"+Inf\"} " << s.count << "\n"
            << "nodeform_provisioning_step_duration_seconds_sum{" << labels << "} " << s.sum_s << "\n"
            << "nodeform_provisioning_step_duration_seconds_count{" << labels << "} " << s.count << "\n";
    }
}

}  // namespace nodeform::controller
