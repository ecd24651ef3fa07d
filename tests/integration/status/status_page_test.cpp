// The status pages over real HTTP(S) on 127.0.0.1: an in-process ControllerServer with a real SQLite store and
// lifecycle store, reports posted as agents post them; a headless Chromium driven over its DevTools pipe logs in
// through the real form and reads the pages; the Grafana dashboard and the alert rules are checked against the
// metrics this controller serves (and promtool).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <thread>

#include "controller_fixture.hpp"
#include "fakes/memory_logger.hpp"
#include "fakes/recording_notifier.hpp"
#include "nodeform/atomic_file.hpp"
#include "nodeform/base64.hpp"
#include "nodeform/canonical_json.hpp"
#include "nodeform/clock.hpp"
#include "nodeform/controller/api/server.hpp"
#include "nodeform/controller/api/status_page.hpp"
#include "nodeform/controller/store/sqlite.hpp"
#include "nodeform/controller/store/store.hpp"
#include "nodeform/log.hpp"
#include "nodeform/posix_process_runner.hpp"
#include "nodeform/random.hpp"
#include "nodeform/tls.hpp"
#include "static_site_source.hpp"
#include "test_paths.hpp"

namespace nodeform::controller {
namespace {

using json = nlohmann::json;
using test::status_of;
namespace fs = std::filesystem;

constexpr const char* kOperatorToken = "nfo_status_operator_token_0123456789abcdef";
constexpr const char* kSiteToken = "stage-site-token-must-never-show";
constexpr const char* kDbPassword = "hunter2-db-password-must-never-show";
constexpr const char* kHostileId = "<script>alert('id')</script>";
constexpr const char* kHostileMessage = "\"><img src=x onerror=alert(1)><script>alert('msg')</script>";
constexpr const char* kHostilePath = "file:/etc/<b>evil</b>&'x'.conf";

// Wall time the test moves forward (to make a node stale); steady time is real.
class ManualClock final : public Clock {
  public:
    std::chrono::system_clock::time_point now() const override {
        return std::chrono::system_clock::time_point(std::chrono::milliseconds(ms_.load()));
    }
    std::chrono::steady_clock::time_point steady_now() const override { return std::chrono::steady_clock::now(); }
    void sleep_for(std::chrono::milliseconds d) const override { std::this_thread::sleep_for(d); }
    void advance(std::chrono::milliseconds d) { ms_ += d.count(); }

  private:
    std::atomic<std::int64_t> ms_{
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
            .count()};
};

using test::StaticSiteSource;

site::Node make_node(const std::string& name, site::AuthMethod method, std::string site_token = "") {
    site::Node n;
    n.name = name;
    n.auth.method = method;
    n.auth.allowed_cidrs = {"127.0.0.0/8"};
    n.auth.site_token = std::move(site_token);
    n.resolved =
        json{{"schema_version", 1},
             {"identity", name},
             {"apply", {{"trigger", "schedule"}, {"interval_s", 300}, {"splay_s", 60}, {"drift", "remediate"}}}};
    if (name == "db-01") {
        n.resolved["stacks"] = json::array({{{"name", "pg"}, {"env", {{"DB_PASSWORD", kDbPassword}}}}});
        n.resolved["secret_paths"] = json::array({"/stacks/0/env/DB_PASSWORD"});
    }
    n.digest = canonical_digest(n.resolved);
    return n;
}

site::Site make_site() {
    site::Site s;
    s.info.name = "lab";
    for (auto n : {make_node("web-01", site::AuthMethod::network), make_node("web-02", site::AuthMethod::network),
                   make_node("db-01", site::AuthMethod::network), make_node("cache-01", site::AuthMethod::network),
                   make_node("old-01", site::AuthMethod::network), make_node("new-01", site::AuthMethod::network),
                   make_node("stage-01", site::AuthMethod::site_token, kSiteToken)})
        s.nodes[n.name] = n;
    s.digest = "sha256:lab";
    return s;
}

struct ReportSpec {
    std::string phase = "sustain";
    int changed = 0, failed = 0;
    std::string message = "installed";
    std::string resource = "package:nginx";
    std::string resource_status = "unchanged";
    bool health_pass = true;
    json drift = json::array();
    std::string digest;  // "" = the site's
    double took_s = 1.5;
};

class StatusPageTest : public test::InProcessControllerTest {
  protected:
    void start(bool tls, int auth_failure_limit = 50) {
        test::open_controller_stores(dir_.path(), store_, lifecycle_);
        if (HasFatalFailure()) return;
        config_.state = dir_.path();
        config_.plain_http = !tls;
        config_.listen_host = "127.0.0.1";
        config_.listen_port = 0;
        config_.threads = 4;
        config_.auth_failure_limit = auth_failure_limit;
        if (tls) {
            auto prepared = prepare_state(config_, "lab", *random_);
            ASSERT_TRUE(prepared.ok()) << prepared.message();
        }
        server_ = std::make_unique<ControllerServer>(config_, *store_, source_, clock_, logger_, notifier_, *random_,
                                                     ServerSecrets{hash_secret(kOperatorToken)}, lifecycle_.get());
        test::run_and_connect(*server_, thread_, client_, dir_.path(), tls, std::chrono::seconds(20));
    }

    void post(const std::string& identity, const ReportSpec& r) {
        static int seq = 0;
        auto start = clock_.now() - std::chrono::milliseconds(static_cast<int>(r.took_s * 1000));
        json report{
            {"report_id", "r-" + identity + "-" + std::to_string(++seq)},
            {"identity", identity},
            {"agent_version", "0.1.0"},
            {"spec_digest", r.digest.empty() ? source_site_.nodes.at(identity).digest : r.digest},
            {"phase", r.phase},
            {"trigger", "run"},
            {"mode", "apply"},
            {"started_at", format_rfc3339(start)},
            {"finished_at", format_rfc3339(clock_.now())},
            {"platform_ready", r.phase != "converging"},
            {"counts",
             {{"total", 3}, {"unchanged", 3 - r.changed - r.failed}, {"changed", r.changed}, {"failed", r.failed}}},
            {"resources",
             json::array({{{"id", r.resource},
                           {"type", "package"},
                           {"status", r.resource_status},
                           {"duration_ms", 1200},
                           {"message", r.message},
                           {"changes", json::array({{{"field", "state"}, {"old", "absent"}, {"new", "present"}}})}},
                          {{"id", "service:nginx.service"}, {"type", "service"}, {"status", "unchanged"}}})},
            {"drift", r.drift},
            {"health", json::array({{{"name", "ssh"},
                                     {"type", "tcp"},
                                     {"status", r.health_pass ? "pass" : "fail"},
                                     {"message", r.health_pass ? "connected" : "connection refused"}}})}};
        httplib::Headers h;
        if (identity == "stage-01") h = {{"Authorization", std::string("Bearer ") + kSiteToken}};
        auto res = client_->Post("/v1/nodes/" + identity + "/reports", h, report.dump(), "application/json");
        ASSERT_TRUE(res);
        ASSERT_EQ(res->status, 201) << res->body;
        clock_.advance(std::chrono::seconds(30));
    }

    // The fleet the pages show: every status, lifecycle records with receipts, hostile strings and secrets.
    void populate() {
        post("old-01", {});
        clock_.advance(std::chrono::hours(2));  // old-01: no report for > 2 × 300 s + grace → stale
        for (int i = 0; i < 6; ++i) {
            ReportSpec r;
            r.phase = i == 0 ? "converging" : "sustain";
            r.changed = i == 0 ? 3 : i % 3;
            r.resource_status = i == 0 ? "changed" : "unchanged";
            r.took_s = 1.0 + i;
            post("web-01", r);
        }
        ReportSpec failed;
        failed.changed = 1;
        failed.failed = 1;
        failed.message = kHostileMessage;
        failed.resource = kHostilePath;
        failed.resource_status = "failed";
        post("web-02", failed);
        ReportSpec drifted;
        drifted.message = std::string("password was ") + kDbPassword;
        drifted.resource_status = "drifted";
        drifted.drift =
            json::array({{{"id", "file:/etc/motd"},
                          {"changes", json::array({{{"field", "mode"}, {"old", "0600"}, {"new", "0644"}}})}}});
        post("db-01", drifted);
        ReportSpec unhealthy;
        unhealthy.health_pass = false;
        post("cache-01", unhealthy);
        ReportSpec leaky;
        leaky.message = std::string("token ") + kSiteToken + " refused";
        post("stage-01", leaky);

        lifecycle::NodeRecord active = test::active_record("web-01", 9101, {"10.0.0.11"}, "2026-12-04T01:00:00Z");
        lifecycle::NodeRecord hostile = active;
        hostile.identity = kHostileId;
        hostile.state = lifecycle::State::failed;
        hostile.failed_step = "started";
        hostile.reason = kHostileMessage;
        ASSERT_TRUE(lifecycle_->put_many({active, hostile}).ok());
        const char* steps[] = {"vmid_reserved", "cloned",     "configured",  "resized",
                               "started",       "registered", "agent_ready", "active"};
        int second = 0;
        for (const char* step : steps) {
            lifecycle::Receipt r;
            r.identity = "web-01";
            r.step = step;
            r.outcome = "ok";
            r.state_after = std::string(step) == "active" ? "active" : "provisioning";
            r.started_at = "2026-12-04T01:00:" + std::string(second < 10 ? "0" : "") + std::to_string(second) + ".000Z";
            second += std::string(step) == "cloned" ? 20 : 3;
            r.finished_at =
                "2026-12-04T01:00:" + std::string(second < 10 ? "0" : "") + std::to_string(second) + ".000Z";
            ASSERT_TRUE(lifecycle_->add_receipt(r).ok());
        }
        lifecycle::Receipt bad;
        bad.identity = kHostileId;
        bad.step = "started";
        bad.outcome = "failed";
        bad.state_after = "failed";
        bad.started_at = "2026-12-04T01:00:00.000Z";
        bad.finished_at = "2026-12-04T01:00:04.000Z";
        bad.error = kHostileMessage;
        ASSERT_TRUE(lifecycle_->add_receipt(bad).ok());
    }

    httplib::Headers bearer() { return {{"Authorization", std::string("Bearer ") + kOperatorToken}}; }

    std::string get_page(const std::string& path) {
        auto res = client_->Get(path, bearer());
        EXPECT_TRUE(res);
        if (!res) return "";
        EXPECT_EQ(res->status, 200) << path;
        return res->body;
    }

    static std::vector<std::string> set_cookies(const httplib::Result& res) {
        std::vector<std::string> out;
        for (const auto& [k, v] : res->headers)
            if (k == "Set-Cookie") out.push_back(v);
        return out;
    }
    static std::string cookie_value(const std::string& set_cookie) {
        auto eq = set_cookie.find('=');
        auto semi = set_cookie.find(';');
        return set_cookie.substr(eq + 1, semi - eq - 1);
    }
    static std::string hidden(const std::string& html, const std::string& name) {
        std::smatch m;
        std::regex re("name=\"" + name + "\" value=\"([^\"]*)\"");
        return std::regex_search(html, m, re) ? m[1].str() : "";
    }

    site::Site source_site_ = make_site();
    StaticSiteSource source_{source_site_};
    ManualClock clock_;
};

TEST_F(StatusPageTest, PagesRefuseWithoutTheOperatorToken) {
    start(false);
    populate();
    for (const char* path : {"/", "/nodes/web-01", "/?status=failed"}) {
        auto none = client_->Get(path);
        ASSERT_TRUE(none);
        EXPECT_EQ(none->status, 303) << path;
        EXPECT_EQ(none->get_header_value("Location").rfind("/login", 0), 0u) << path;
        EXPECT_EQ(none->body.find("web-01"), std::string::npos);
        auto wrong = client_->Get(path, {{"Authorization", "Bearer nfo_wrong"}});
        ASSERT_TRUE(wrong);
        EXPECT_EQ(wrong->status, 401) << path;
        EXPECT_EQ(wrong->body.find("web-0"), std::string::npos);
        auto forged = client_->Get(path, {{"Cookie", "nf_session=" + std::string(64, 'a')}});
        ASSERT_TRUE(forged);
        EXPECT_EQ(forged->status, 303) << path;
    }
    auto ok = client_->Get("/", bearer());
    ASSERT_TRUE(ok);
    ASSERT_EQ(ok->status, 200);
    EXPECT_EQ(ok->get_header_value("Content-Type"), "text/html; charset=utf-8");
    std::string csp = ok->get_header_value("Content-Security-Policy");
    EXPECT_NE(csp.find("default-src 'none'"), std::string::npos) << csp;
    EXPECT_NE(csp.find("frame-ancestors 'none'"), std::string::npos);
    std::smatch nonce;
    ASSERT_TRUE(std::regex_search(csp, nonce, std::regex("script-src 'nonce-([0-9a-f]{32})'")));
    EXPECT_NE(ok->body.find("<script nonce=\"" + nonce[1].str() + "\">"), std::string::npos);
    EXPECT_NE(ok->body.find("<style nonce=\"" + nonce[1].str() + "\">"), std::string::npos);
    EXPECT_EQ(ok->get_header_value("X-Frame-Options"), "DENY");
    EXPECT_EQ(ok->get_header_value("X-Content-Type-Options"), "nosniff");
    EXPECT_EQ(ok->get_header_value("Referrer-Policy"), "same-origin");
    EXPECT_EQ(ok->get_header_value("Cache-Control"), "no-store");
    EXPECT_EQ(ok->body.find("http://"), std::string::npos);  // no outside source
    EXPECT_EQ(ok->body.find("https://"), std::string::npos);
    EXPECT_EQ(status_of(client_->Post("/", bearer(), "", "application/x-www-form-urlencoded")), 405);
}

TEST_F(StatusPageTest, LoginSetsAStrictSessionCookieAndEveryPostNeedsItsCsrfToken) {
    start(false);
    populate();
    auto form = client_->Get("/login?next=/nodes/web-01");
    ASSERT_TRUE(form);
    ASSERT_EQ(form->status, 200);
    auto cookies = set_cookies(form);
    ASSERT_EQ(cookies.size(), 1u);
    for (const char* flag : {"HttpOnly", "Secure", "SameSite=Strict"})
        EXPECT_NE(cookies[0].find(flag), std::string::npos) << cookies[0];
    std::string login_cookie = "nf_login=" + cookie_value(cookies[0]);
    std::string csrf = hidden(form->body, "csrf");
    ASSERT_EQ(csrf.size(), 64u);
    EXPECT_EQ(hidden(form->body, "next"), "/nodes/web-01");

    httplib::Params good{{"token", kOperatorToken}, {"csrf", csrf}, {"next", "/nodes/web-01"}};
    auto no_cookie = client_->Post("/login", good);  // the form's token without the cookie it belongs to
    ASSERT_TRUE(no_cookie);
    EXPECT_EQ(no_cookie->status, 403);
    EXPECT_TRUE(set_cookies(no_cookie).size() == 1u && set_cookies(no_cookie)[0].rfind("nf_login=", 0) == 0);
    httplib::Params forged{{"token", kOperatorToken}, {"csrf", std::string(64, '0')}, {"next", "/"}};
    EXPECT_EQ(status_of(client_->Post("/login", {{"Cookie", login_cookie}}, forged)), 403);
    EXPECT_EQ(status_of(client_->Post("/login", {{"Cookie", login_cookie}, {"Origin", "https://evil.example"}}, good)),
              403);
    httplib::Params wrong{{"token", "nfo_wrong"}, {"csrf", csrf}, {"next", "/"}};
    auto wrong_token = client_->Post("/login", {{"Cookie", login_cookie}}, wrong);
    ASSERT_TRUE(wrong_token);
    EXPECT_EQ(wrong_token->status, 401);
    for (const auto& c : set_cookies(wrong_token))
        EXPECT_EQ(c.rfind("nf_session", 0), std::string::npos);

    auto ok = client_->Post("/login", {{"Cookie", login_cookie}}, good);
    ASSERT_TRUE(ok);
    ASSERT_EQ(ok->status, 303) << ok->body;
    EXPECT_EQ(ok->get_header_value("Location"), "/nodes/web-01");
    std::string session;
    for (const auto& c : set_cookies(ok)) {
        if (c.rfind("nf_session=", 0) != 0) continue;
        session = cookie_value(c);
        for (const char* flag : {"; HttpOnly", "; Secure", "; SameSite=Strict", "; Path=/"})
            EXPECT_NE(c.find(flag), std::string::npos) << c;
    }
    ASSERT_EQ(session.size(), 64u);
    EXPECT_EQ(session.find(kOperatorToken), std::string::npos);
    httplib::Headers with_session{{"Cookie", "nf_session=" + session}};
    auto page = client_->Get("/", with_session);
    ASSERT_TRUE(page);
    ASSERT_EQ(page->status, 200);
    std::string logout_csrf = hidden(page->body, "csrf");
    ASSERT_EQ(logout_csrf.size(), 64u);
    auto open_redirect =
        client_->Post("/login", {{"Cookie", login_cookie}},
                      httplib::Params{{"token", kOperatorToken}, {"csrf", csrf}, {"next", "//evil.example/"}});
    ASSERT_TRUE(open_redirect);
    EXPECT_EQ(open_redirect->get_header_value("Location"), "/");

    // Logout: a POST without the page's token is refused and the session lives on; with it the session ends.
    EXPECT_EQ(status_of(client_->Post("/logout", with_session, httplib::Params{{"csrf", std::string(64, 'f')}})), 403);
    EXPECT_EQ(status_of(client_->Get("/logout", with_session)), 405);
    EXPECT_EQ(status_of(client_->Get("/", with_session)), 200);
    EXPECT_EQ(status_of(client_->Post("/logout", with_session, httplib::Params{{"csrf", logout_csrf}})), 303);
    EXPECT_EQ(status_of(client_->Get("/", with_session)), 303);
}

// Wrong tokens at the login form count against the controller's failed-authentication limit like any other.
TEST_F(StatusPageTest, WrongLoginsAreRateLimited) {
    start(false, 3);
    auto form = client_->Get("/login");
    ASSERT_TRUE(form);
    std::string login_cookie = "nf_login=" + cookie_value(set_cookies(form)[0]);
    httplib::Params wrong{{"token", "nfo_guess"}, {"csrf", hidden(form->body, "csrf")}, {"next", "/"}};
    for (int i = 0; i < 3; ++i) {
        EXPECT_EQ(status_of(client_->Post("/login", {{"Cookie", login_cookie}}, wrong)), 401);
    }
    httplib::Params right{{"token", kOperatorToken}, {"csrf", hidden(form->body, "csrf")}, {"next", "/"}};
    EXPECT_EQ(status_of(client_->Post("/login", {{"Cookie", login_cookie}}, right)), 429);
    EXPECT_EQ(status_of(client_->Get("/", bearer())), 429);
}

TEST_F(StatusPageTest, FleetPageCountsSortsUrgentFirstAndFilters) {
    start(false);
    populate();
    std::string page = get_page("/");
    // Rows in the order shown: failed, unhealthy, stale, lifecycle-failed, drifted, …, pending, ready.
    std::vector<std::string> order;
    std::regex row("<tr data-status=\"([a-z]+)\" data-identity=\"([^\"]*)\"");
    for (auto it = std::sregex_iterator(page.begin(), page.end(), row); it != std::sregex_iterator(); ++it)
        order.push_back((*it)[2].str() + "=" + (*it)[1].str());
    ASSERT_EQ(order.size(), 8u) << page;
    EXPECT_EQ(order[0], "web-02=failed");
    EXPECT_EQ(order[1], "cache-01=unhealthy");
    EXPECT_EQ(order[2], "old-01=stale");
    EXPECT_EQ(order[3], html_escape(kHostileId) + "=pending");  // provisioning failed: ahead of the quiet ones
    EXPECT_EQ(order[4], "db-01=drifted");
    EXPECT_EQ(order.back(), "web-01=ready");
    for (const char* count : {"href=\"/?status=failed\" data-status=\"failed\"><b>1</b>",
                              "href=\"/?status=ready\" data-status=\"ready\"><b>2</b>",
                              "href=\"/?status=pending\" data-status=\"pending\"><b>2</b>",
                              "href=\"/?status=lifecycle:active\" data-status=\"lifecycle:active\"><b>1</b>"})
        EXPECT_NE(page.find(count), std::string::npos) << count;
    EXPECT_NE(page.find("<meta http-equiv=\"refresh\""), std::string::npos);

    std::string failed = get_page("/?status=failed");
    EXPECT_NE(failed.find("data-identity=\"web-02\""), std::string::npos);
    EXPECT_EQ(failed.find("data-identity=\"web-01\""), std::string::npos);
    std::string query = get_page("/?q=web");
    EXPECT_NE(query.find("data-identity=\"web-01\""), std::string::npos);
    EXPECT_EQ(query.find("data-identity=\"db-01\""), std::string::npos);
    std::string lc = get_page("/?status=lifecycle:failed");
    EXPECT_EQ(lc.find("data-identity=\"web-01\""), std::string::npos);
    EXPECT_NE(lc.find("data-identity=\"" + html_escape(kHostileId) + "\""), std::string::npos);
    std::string bogus = get_page("/?status=%3Cscript%3E&q=%3Cscript%3E");  // unknown status: ignored; query escaped
    EXPECT_EQ(bogus.find("<script>"), std::string::npos);
}

TEST_F(StatusPageTest, NodePageShowsLifecycleReceiptsResourcesHealthSpecAndTimeline) {
    start(false);
    populate();
    std::string web = get_page("/nodes/web-01");
    EXPECT_NE(web.find("<h2 id=\"identity\">web-01</h2>"), std::string::npos);
    EXPECT_NE(web.find("id=\"receipts\""), std::string::npos);
    for (const char* step : {"vmid_reserved", "cloned", "configured", "agent_ready"})
        EXPECT_NE(web.find(std::string("<td>") + step + "</td>"), std::string::npos) << step;
    EXPECT_NE(web.find("20.00 s"), std::string::npos);  // the clone took 20 s
    EXPECT_NE(web.find("9101 on pve1"), std::string::npos);
    EXPECT_NE(web.find(source_site_.nodes.at("web-01").digest), std::string::npos);
    EXPECT_NE(web.find("match</span>"), std::string::npos);
    EXPECT_NE(web.find("<svg id=\"timeline\""), std::string::npos);
    std::regex bar("<rect [^>]*fill=\"#6b8fd6\"");
    auto bars = std::distance(std::sregex_iterator(web.begin(), web.end(), bar), std::sregex_iterator());
    EXPECT_EQ(bars, 6);  // one duration bar per stored report
    EXPECT_NE(web.find("id=\"health\""), std::string::npos);
    EXPECT_NE(web.find("connected"), std::string::npos);
    EXPECT_NE(web.find("<code>state</code>: absent → present"), std::string::npos);

    std::string db = get_page("/nodes/db-01");
    EXPECT_NE(db.find("id=\"drift\""), std::string::npos);
    EXPECT_NE(db.find("file:/etc/motd"), std::string::npos);
    EXPECT_NE(db.find("Never provisioned"), std::string::npos);
    std::string cache = get_page("/nodes/cache-01");
    EXPECT_NE(cache.find("connection refused"), std::string::npos);
    EXPECT_NE(cache.find("s-fail\">fail"), std::string::npos);
    std::string pending = get_page("/nodes/new-01");
    EXPECT_NE(pending.find("no reports yet"), std::string::npos);

    EXPECT_EQ(status_of(client_->Get("/nodes/ghost-01", bearer())), 404);
    EXPECT_EQ(status_of(client_->Get("/nodes/a..b", bearer())), 400);
}

TEST_F(StatusPageTest, HostileStringsAreEscapedAndNoSecretIsOnAnyPage) {
    start(false);
    populate();
    std::vector<std::string> pages = {get_page("/"),
                                      get_page("/?q=%3C"),
                                      get_page("/nodes/web-02"),
                                      get_page("/nodes/db-01"),
                                      get_page("/nodes/stage-01"),
                                      get_page("/nodes/web-01")};
    auto login = client_->Get("/login");
    ASSERT_TRUE(login);
    pages.push_back(login->body);
    for (const auto& page : pages) {
        EXPECT_EQ(page.find("<script>alert"), std::string::npos);
        EXPECT_EQ(page.find("<img src=x"), std::string::npos);
        EXPECT_EQ(page.find("<b>evil"), std::string::npos);
        for (const char* secret : {kSiteToken, kDbPassword, kOperatorToken})
            EXPECT_EQ(page.find(secret), std::string::npos) << secret;
        // Exactly one script element: the page's own, with the nonce.
        std::size_t scripts = 0;
        for (auto p = page.find("<script"); p != std::string::npos; p = page.find("<script", p + 1))
            ++scripts;
        EXPECT_LE(scripts, 1u);
    }
    EXPECT_NE(pages[0].find(html_escape(kHostileId)), std::string::npos);
    EXPECT_NE(pages[2].find(html_escape(kHostileMessage)), std::string::npos);
    EXPECT_NE(pages[2].find(html_escape(kHostilePath)), std::string::npos);
    EXPECT_NE(pages[3].find("password was [REDACTED]"), std::string::npos);
    EXPECT_NE(pages[4].find("token [REDACTED] refused"), std::string::npos);
    // A hostile identity has no node page (its path is refused) and no link.
    EXPECT_EQ(pages[0].find("href=\"/nodes/<"), std::string::npos);
}

// Every nodeform_* series the dashboard and the alert rules use is exported by this controller.
TEST_F(StatusPageTest, DashboardAndAlertRulesUseOnlyMetricsTheControllerExports) {
    start(false);
    populate();
    ASSERT_TRUE(client_->Get("/v1/spec/web-01"));  // a spec request, so the route's histogram exists
    auto metrics = client_->Get("/metrics");
    for (int i = 0; i < 100 && metrics && metrics->body.find("route=\"/v1/spec/{identity}\"") == std::string::npos;
         ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        metrics = client_->Get("/metrics");
    }
    ASSERT_TRUE(metrics);
    std::set<std::string> exported;
    std::regex name("^([a-z_:][a-z0-9_:]*)[{ ]");
    std::istringstream lines(metrics->body);
    for (std::string line; std::getline(lines, line);) {
        std::smatch m;
        if (!line.empty() && line[0] != '#' && std::regex_search(line, m, name)) exported.insert(m[1].str());
    }
    EXPECT_TRUE(exported.count("nodeform_provisioning_step_duration_seconds_bucket")) << metrics->body;
    EXPECT_NE(metrics->body.find("nodeform_provisioning_step_duration_seconds_bucket{step=\"cloned\",outcome=\"ok\","
                                 "le=\"30\"} 1"),
              std::string::npos)
        << metrics->body;
    EXPECT_NE(metrics->body.find("nodeform_lifecycle_nodes{state=\"failed\"} 1"), std::string::npos);
    EXPECT_NE(metrics->body.find("nodeform_controller_ready 1"), std::string::npos);

    auto dashboard_text = read_file(test::source_dir() + "/packaging/grafana/nodeform.json", 1 << 20);
    ASSERT_TRUE(dashboard_text.ok()) << dashboard_text.message();
    json dashboard = json::parse(*dashboard_text, nullptr, false);
    ASSERT_FALSE(dashboard.is_discarded()) << "packaging/grafana/nodeform.json is not JSON";
    ASSERT_TRUE(dashboard["panels"].is_array());
    std::set<std::string> used;
    std::regex metric("nodeform_[a-z0-9_]+");
    std::size_t targets = 0;
    for (const auto& panel : dashboard["panels"]) {
        for (const auto& target : panel.value("targets", json::array())) {
            std::string expr = target.value("expr", "");
            ++targets;
            for (auto it = std::sregex_iterator(expr.begin(), expr.end(), metric); it != std::sregex_iterator(); ++it)
                used.insert((*it)[0].str());
        }
    }
    EXPECT_GE(targets, 6u);
    auto rules_text = read_file(test::source_dir() + "/packaging/prometheus/nodeform-alerts.yaml", 1 << 20);
    ASSERT_TRUE(rules_text.ok()) << rules_text.message();
    for (auto it = std::sregex_iterator(rules_text->begin(), rules_text->end(), metric); it != std::sregex_iterator();
         ++it)
        used.insert((*it)[0].str());
    for (const auto& m : used)
        EXPECT_TRUE(exported.count(m)) << m << " is used by the dashboard or the rules but not exported";
    for (const char* needed : {"nodeform_nodes", "nodeform_report_commit_reports_total",
                               "nodeform_http_request_duration_seconds_bucket", "nodeform_site_reloads_total",
                               "nodeform_provisioning_step_duration_seconds_bucket", "nodeform_controller_ready"})
        EXPECT_TRUE(used.count(needed)) << needed;
}

TEST(AlertRules, PromtoolChecksThem) {
    if (::access("/usr/bin/promtool", X_OK) != 0)
        GTEST_SKIP() << "promtool not installed (scripts/install-deps.sh test)";
    PosixProcessRunner runner;
    ProcessRequest request;
    request.argv = {"/usr/bin/promtool", "check", "rules",
                    test::source_dir() + "/packaging/prometheus/nodeform-alerts.yaml"};
    request.timeout = std::chrono::seconds(60);
    auto result = runner.run(request);
    ASSERT_TRUE(result.ok()) << result.message();
    EXPECT_EQ(result->exit_code, 0) << result->out << result->err;
    EXPECT_NE(result->out.find("SUCCESS"), std::string::npos) << result->out;
}

// ---- the browser ------------------------------------------------------------------------------------------

// Chromium's DevTools protocol over --remote-debugging-pipe (fd 3: commands in, fd 4: answers and events out;
// NUL-terminated JSON). Only loopback: the browser is told to fetch nothing on its own.
class Chromium {
  public:
    ~Chromium() {
        if (pid_ > 0) {
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, nullptr, 0);
        }
        if (to_ >= 0) ::close(to_);
        if (from_ >= 0) ::close(from_);
    }

    bool start(const std::string& profile) {
        int in[2], out[2];
        if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0) return false;
        pid_ = ::fork();
        if (pid_ < 0) return false;
        if (pid_ == 0) {
            ::dup2(in[0], 3);
            ::dup2(out[1], 4);
            int null = ::open("/dev/null", O_WRONLY);
            ::dup2(null, 1);
            ::dup2(null, 2);
            std::string user_dir = "--user-data-dir=" + profile;
            const char* argv[] = {"/usr/bin/chromium",
                                  "--headless",
                                  "--no-sandbox",
                                  "--disable-gpu",
                                  "--disable-quic",
                                  "--no-first-run",
                                  "--disable-background-networking",
                                  "--disable-component-update",
                                  "--disable-sync",
                                  "--disable-dev-shm-usage",
                                  "--ignore-certificate-errors",  // the controller's CA is the one this test made
                                  "--window-size=1280,900",
                                  "--remote-debugging-pipe",
                                  user_dir.c_str(),
                                  "about:blank",
                                  nullptr};
            ::execv(argv[0], const_cast<char* const*>(argv));
            ::_exit(127);
        }
        ::close(in[0]);
        ::close(out[1]);
        to_ = in[1];
        from_ = out[0];
        return true;
    }

    // Sends a command (to the page session when there is one) and returns its result; events are kept.
    json call(const std::string& method, json params = json::object(), bool browser_level = false) {
        int id = ++next_id_;
        json msg{{"id", id}, {"method", method}, {"params", std::move(params)}};
        if (!session_.empty() && !browser_level) msg["sessionId"] = session_;
        std::string text = msg.dump();
        text.push_back('\0');
        for (std::size_t off = 0; off < text.size();) {
            ssize_t n = ::write(to_, text.data() + off, text.size() - off);
            if (n <= 0) return json{{"error", "write failed"}};
            off += static_cast<std::size_t>(n);
        }
        while (true) {
            auto m = read_message(std::chrono::seconds(60));
            if (!m) return json{{"error", "timed out waiting for " + method}};
            if (m->contains("id") && (*m)["id"] == id) return m->contains("error") ? *m : (*m)["result"];
            events_.push_back(std::move(*m));
        }
    }

    bool wait_event(const std::string& method, std::chrono::seconds limit) {
        for (auto it = events_.begin(); it != events_.end(); ++it)
            if (it->value("method", "") == method) {
                events_.erase(events_.begin(), std::next(it));
                return true;
            }
        events_.clear();
        auto deadline = std::chrono::steady_clock::now() + limit;
        while (std::chrono::steady_clock::now() < deadline) {
            auto m = read_message(
                std::chrono::duration_cast<std::chrono::seconds>(deadline - std::chrono::steady_clock::now()) +
                std::chrono::seconds(1));
            if (!m) return false;
            if (m->value("method", "") == method) return true;
        }
        return false;
    }

    bool open_page() {
        json target = call("Target.createTarget", {{"url", "about:blank"}}, true);
        if (!target.contains("targetId")) return false;
        json attached = call("Target.attachToTarget", {{"targetId", target["targetId"]}, {"flatten", true}}, true);
        if (!attached.contains("sessionId")) return false;
        session_ = attached["sessionId"];
        call("Page.enable");
        call("Emulation.setDeviceMetricsOverride",
             {{"width", 1280}, {"height", 900}, {"deviceScaleFactor", 1}, {"mobile", false}});
        return true;
    }

    bool navigate(const std::string& url) {
        events_.clear();
        json r = call("Page.navigate", {{"url", url}});
        if (r.contains("error") || r.contains("errorText")) return false;
        return wait_event("Page.loadEventFired", std::chrono::seconds(60));
    }

    json eval(const std::string& expression) {
        json r = call("Runtime.evaluate", {{"expression", expression}, {"returnByValue", true}});
        return r.contains("result") ? r["result"].value("value", json()) : json();
    }

    // The whole page (beyond the 900-pixel viewport) as PNG.
    std::string screenshot() {
        json metrics = call("Page.getLayoutMetrics");
        double height = 900;
        if (metrics.contains("cssContentSize"))
            height = std::max(height, metrics["cssContentSize"].value("height", 900.0));
        height = std::min(height, 4000.0);
        json shot = call("Page.captureScreenshot",
                         {{"format", "png"},
                          {"captureBeyondViewport", true},
                          {"clip", {{"x", 0}, {"y", 0}, {"width", 1280}, {"height", height}, {"scale", 1}}}});
        auto png = base64_decode(shot.value("data", ""));
        return png ? *png : "";
    }

  private:
    std::optional<json> read_message(std::chrono::seconds limit) {
        auto deadline = std::chrono::steady_clock::now() + limit;
        while (true) {
            auto nul = buffer_.find('\0');
            if (nul != std::string::npos) {
                json m = json::parse(buffer_.substr(0, nul), nullptr, false);
                buffer_.erase(0, nul + 1);
                return m;
            }
            auto left =
                std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
            if (left.count() <= 0) return std::nullopt;
            pollfd p{from_, POLLIN, 0};
            if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) return std::nullopt;
            char buf[65536];
            ssize_t n = ::read(from_, buf, sizeof(buf));
            if (n <= 0) return std::nullopt;
            buffer_.append(buf, static_cast<std::size_t>(n));
        }
    }

    pid_t pid_ = -1;
    int to_ = -1, from_ = -1;
    int next_id_ = 0;
    std::string session_;
    std::string buffer_;
    std::vector<json> events_;
};

// Chromium logs in through the real form (the token typed into the password field, the form submitted), follows
// the redirect to the fleet page with its HttpOnly session cookie over HTTPS, and the DOM after its script ran
// shows the expected rows and statuses; screenshots of both pages go to the build tree (docs/images/ holds copies).
TEST_F(StatusPageTest, HeadlessChromiumLogsInAndSeesTheFleet) {
    if (::access("/usr/bin/chromium", X_OK) != 0)
        GTEST_SKIP() << "chromium not installed (scripts/install-deps.sh test)";
    start(true);
    populate();
    test::TempDir profile;
    Chromium browser;
    ASSERT_TRUE(browser.start(profile.path()));
    ASSERT_TRUE(browser.open_page());
    std::string base = "https://127.0.0.1:" + std::to_string(server_->port());

    ASSERT_TRUE(browser.navigate(base + "/"));  // no session: the page sends the browser to the login form
    EXPECT_EQ(browser.eval("location.pathname"), "/login");
    EXPECT_EQ(browser.eval("document.cookie"), "");  // the login cookie is HttpOnly: scripts cannot read it
    browser.eval(std::string("document.getElementById('token').value='") + kOperatorToken +
                 "';document.querySelector('form').submit();");
    ASSERT_TRUE(browser.wait_event("Page.loadEventFired", std::chrono::seconds(60)));
    ASSERT_EQ(browser.eval("location.pathname"), "/") << browser.eval("document.body.innerText");
    EXPECT_EQ(browser.eval("document.cookie"), "");

    json rows = browser.eval(
        "Array.from(document.querySelectorAll('#fleet tbody tr')).map(r=>"
        "[r.cells[0].innerText,r.cells[1].innerText,r.cells[2].innerText])");
    ASSERT_TRUE(rows.is_array()) << rows;
    ASSERT_EQ(rows.size(), 8u) << rows;
    std::map<std::string, std::string> status;
    for (const auto& r : rows)
        status[r[0]] = r[1];
    EXPECT_EQ(rows[0][0], "web-02");
    EXPECT_EQ(status["web-01"], "ready");
    EXPECT_EQ(status["web-02"], "failed");
    EXPECT_EQ(status["db-01"], "drifted");
    EXPECT_EQ(status["cache-01"], "unhealthy");
    EXPECT_EQ(status["old-01"], "stale");
    EXPECT_EQ(status["new-01"], "pending");
    EXPECT_EQ(status[kHostileId], "pending");  // shown as text, not run
    EXPECT_EQ(browser.eval("document.querySelectorAll('img').length"), 0);
    EXPECT_EQ(browser.eval("document.querySelector('#counts a[data-status=\"failed\"] b').innerText"), "1");
    // The table sorts on a header click (the page's own script ran under the CSP).
    browser.eval("document.querySelector('#fleet th').click()");
    EXPECT_EQ(browser.eval("document.querySelector('#fleet tbody tr').cells[0].innerText"), kHostileId);
    EXPECT_EQ(browser.eval("document.querySelector('#fleet th').className"), "asc");
    browser.eval("history.replaceState(null,'','/')");
    ASSERT_TRUE(browser.navigate(base + "/"));
    std::string fleet_png = browser.screenshot();
    ASSERT_GT(fleet_png.size(), 1000u);
    EXPECT_EQ(fleet_png.substr(1, 3), "PNG");

    ASSERT_TRUE(browser.navigate(base + "/nodes/web-01"));
    EXPECT_EQ(browser.eval("document.getElementById('identity').innerText"), "web-01");
    EXPECT_EQ(browser.eval("document.querySelectorAll('#receipts tbody tr').length"), 8);
    EXPECT_EQ(browser.eval("document.querySelectorAll('#timeline rect').length").get<int>() >= 6, true);
    std::string node_png = browser.screenshot();
    ASSERT_GT(node_png.size(), 1000u);

    fs::create_directories(test::binary_dir() + "/screenshots");
    for (const auto& [name, png] : {std::pair{"status-fleet.png", fleet_png}, std::pair{"status-node.png", node_png}}) {
        std::ofstream f(test::binary_dir() + "/screenshots/" + name, std::ios::binary);
        f << png;
    }
    browser.call("Browser.close", json::object(), true);
}

}  // namespace
}  // namespace nodeform::controller
