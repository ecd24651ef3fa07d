// The controller API over real HTTP on 127.0.0.1: an in-process ControllerServer with a real SQLite store and
// hand-built sites (a fake SiteSource lets tests swap in a new or broken site).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <sstream>
#include <thread>

#include "controller_fixture.hpp"
#include "eventually.hpp"
#include "fakes/memory_logger.hpp"
#include "fakes/recording_notifier.hpp"
#include "nodeform/canonical_json.hpp"
#include "nodeform/clock.hpp"
#include "nodeform/controller/api/server.hpp"
#include "nodeform/controller/store/sqlite.hpp"
#include "nodeform/controller/store/store.hpp"
#include "nodeform/http.hpp"
#include "nodeform/log.hpp"
#include "nodeform/tls.hpp"
#include "postgres_cluster.hpp"
#include "test_paths.hpp"

namespace nodeform::controller {
namespace {

using json = nlohmann::json;
using test::status_of;

// The HTTP status of a response; -1 when there was none.
site::Node make_node(const std::string& name, site::AuthMethod method, std::vector<std::string> cidrs = {},
                     std::string site_token = "") {
    site::Node n;
    n.name = name;
    n.auth.method = method;
    n.auth.allowed_cidrs = std::move(cidrs);
    n.auth.site_token = std::move(site_token);
    n.resolved =
        json{{"schema_version", 1},
             {"identity", name},
             {"apply", {{"trigger", "schedule"}, {"interval_s", 300}, {"splay_s", 60}, {"drift", "remediate"}}}};
    n.digest = canonical_digest(n.resolved);
    return n;
}

site::Site make_site(std::vector<site::Node> nodes) {
    site::Site s;
    s.info.name = "test";
    for (auto& n : nodes)
        s.nodes[n.name] = n;
    s.digest = "sha256:" + std::to_string(s.nodes.size());
    return s;
}

class FakeSiteSource final : public SiteSource {
  public:
    explicit FakeSiteSource(site::Site s) { set(std::move(s)); }
    site::LoadResult load() override {
        std::lock_guard<std::mutex> lock(mutex_);
        return result_;
    }
    std::string stamp() override {
        std::lock_guard<std::mutex> lock(mutex_);
        return std::to_string(version_);
    }
    void set(site::Site s) {
        std::lock_guard<std::mutex> lock(mutex_);
        result_ = site::LoadResult{std::move(s), {}};
        ++version_;
    }
    void break_it() {
        std::lock_guard<std::mutex> lock(mutex_);
        result_ = site::LoadResult{std::nullopt, {site::Diagnostic{"site.yaml", 3, 1, "site.name", "is required"}}};
        ++version_;
    }

  private:
    std::mutex mutex_;
    site::LoadResult result_;
    int version_ = 0;
};

constexpr const char* kOperatorToken = "nfo_test_operator_token_0123456789";
constexpr const char* kSiteToken = "stage-site-token-abcdef";

json report_for(const std::string& identity, const std::string& id, const std::string& phase = "converging",
                int failed = 0) {
    return json{{"report_id", id},
                {"identity", identity},
                {"agent_version", "0.1.0"},
                {"spec_digest", "sha256:abc"},
                {"phase", phase},
                {"trigger", "run"},
                {"mode", "apply"},
                {"started_at", "2026-11-23T19:40:00.123Z"},
                {"finished_at", "2026-11-23T19:40:01.456Z"},
                {"platform_ready", phase != "converging"},
                {"counts", {{"total", 2}, {"unchanged", 1}, {"changed", 1 - failed}, {"failed", failed}}},
                {"resources", json::array({{{"id", "package:nginx"}, {"type", "package"}, {"status", "changed"}}})},
                {"drift", json::array()},
                {"health", json::array({{{"name", "ssh"}, {"type", "tcp"}, {"status", "pass"}}})}};
}

enum class StoreKind { sqlite, postgres };

// Every API test runs on both stores: SQLite in the test's state directory, and a fresh database of this binary's
// PostgreSQL 15 cluster (kept across a stop() and start() within the test).
class ApiTest : public test::InProcessControllerTest, public ::testing::WithParamInterface<StoreKind> {
  protected:
    void SetUp() override { start(); }

    void open_stores() {
        if (GetParam() == StoreKind::sqlite) return test::open_controller_stores(dir_.path(), store_, lifecycle_);
        auto& cluster = test::PostgresCluster::shared();
        if (pg_url_.empty()) pg_url_ = cluster.create_database();
        ASSERT_FALSE(pg_url_.empty()) << cluster.error();
        lifecycle_.reset();
        store_.reset();
        auto opened = open_postgres_store(pg_url_, "");
        ASSERT_TRUE(opened.ok()) << opened.message();
        store_ = std::move(*opened);
        auto opened_lifecycle = lifecycle::open_postgres_lifecycle_store(pg_url_, "");
        ASSERT_TRUE(opened_lifecycle.ok()) << opened_lifecycle.message();
        lifecycle_ = std::move(*opened_lifecycle);
    }
    // SQL on the test's PostgreSQL database: "" when it ran, else the error.
    std::string pg_exec(const std::string& sql) {
        auto db = pg_url_.substr(std::string("postgresql:///").size());
        return test::PostgresCluster::shared().exec(db.substr(0, db.find('?')), sql);
    }

    void start(int threads = 8, bool tls = false, std::chrono::seconds read_timeout = std::chrono::seconds(1)) {
        open_stores();
        if (HasFatalFailure()) return;
        config_.state = dir_.path();
        config_.plain_http = !tls;
        config_.listen_host = "127.0.0.1";
        if (tls) {
            auto prepared =
                prepare_state(config_, "test", *random_);  // STATE/tls: CA + server certificate for 127.0.0.1
            ASSERT_TRUE(prepared.ok()) << prepared.message();
        }
        config_.listen_port = 0;
        config_.threads = threads;
        config_.max_body_bytes = 64 * 1024;
        config_.read_timeout = read_timeout;
        config_.auth_failure_limit = 5;
        config_.reload_interval = std::chrono::milliseconds(100);
        server_ = std::make_unique<ControllerServer>(config_, *store_, source_, clock_, logger_, notifier_, *random_,
                                                     ServerSecrets{hash_secret(kOperatorToken)}, lifecycle_.get());
        test::run_and_connect(*server_, thread_, client_, dir_.path(), tls, std::chrono::seconds(10));
    }

    httplib::Headers bearer(const std::string& token) { return {{"Authorization", "Bearer " + token}}; }

    std::string enroll(const std::string& identity) {
        std::string token = generate_secret(*random_, "nfe_");
        EXPECT_TRUE(
            store_
                ->add_enrollment_token(identity, hash_secret(token), clock_.now() + std::chrono::hours(1), clock_.now())
                .ok());
        auto res =
            client_->Post("/v1/enroll", json{{"identity", identity}, {"token", token}}.dump(), "application/json");
        EXPECT_TRUE(res);
        if (!res) return "";
        EXPECT_EQ(res->status, 200) << res->body;
        auto body = json::parse(res->body, nullptr, false);
        return body.value("credential", "");
    }

    static std::string error_code(const httplib::Result& res) {
        auto body = json::parse(res->body, nullptr, false);
        if (!body.is_object() || !body.contains("error")) return "<no error body: " + res->body + ">";
        return body["error"].value("code", "");
    }

    // Raw request over a socket: for paths httplib's client would normalize or refuse to send. closed: whether the
    // server closed the connection (rather than the 5 s read timeout ending the wait).
    std::string raw(const std::string& request, bool* closed = nullptr) {
        int fd = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_port = htons(static_cast<uint16_t>(server_->port()));
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
            ::close(fd);
            return "";
        }
        (void)!::write(fd, request.data(), request.size());

        std::string out;
        char buf[4096];
        timeval tv{5, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        ssize_t n;
        while ((n = ::read(fd, buf, sizeof(buf))) > 0)
            out.append(buf, static_cast<std::size_t>(n));
        if (closed != nullptr) *closed = n == 0 || (n < 0 && errno == ECONNRESET);
        ::close(fd);
        return out;
    }

    FakeSiteSource source_{
        make_site({make_node("web-01", site::AuthMethod::node_token), make_node("web-02", site::AuthMethod::node_token),
                   make_node("stage-01", site::AuthMethod::site_token, {}, kSiteToken),
                   make_node("dev-01", site::AuthMethod::network, {"127.0.0.0/8"}),
                   make_node("far-01", site::AuthMethod::network, {"10.0.0.0/8"})})};
    SystemClock clock_;
    std::string pg_url_;
};

std::size_t count_of(const std::string& text, const std::string& what) {
    std::size_t n = 0;
    for (auto pos = text.find(what); pos != std::string::npos; pos = text.find(what, pos + 1))
        ++n;
    return n;
}

std::string chunk(const std::string& data) {
    std::ostringstream out;
    out << std::hex << data.size() << "\r\n" << data << "\r\n";
    return out.str();
}

TEST_P(ApiTest, SpecWithEtagAnd304) {
    auto res = client_->Get("/v1/spec/dev-01");
    ASSERT_TRUE(res);
    ASSERT_EQ(res->status, 200) << res->body;
    auto site = server_->current_site();
    const auto& node = site->nodes.at("dev-01");
    EXPECT_EQ(res->get_header_value("ETag"), "\"" + node.digest + "\"");
    EXPECT_EQ(res->get_header_value("Content-Type"), "application/json");
    EXPECT_EQ(json::parse(res->body), node.resolved);
    auto again = client_->Get("/v1/spec/dev-01", {{"If-None-Match", res->get_header_value("ETag")}});
    ASSERT_TRUE(again);
    EXPECT_EQ(again->status, 304);
    EXPECT_TRUE(again->body.empty());
    EXPECT_EQ(status_of(client_->Get("/v1/spec/dev-01", {{"If-None-Match", "\"sha256:old\""}})), 200);
}

TEST_P(ApiTest, SpecStatusPaths) {
    auto unknown = client_->Get("/v1/spec/nope-01");
    ASSERT_TRUE(unknown);
    EXPECT_EQ(unknown->status, 404);
    EXPECT_EQ(error_code(unknown), "unknown_node");
    EXPECT_EQ(status_of(client_->Get("/v1/spec/far-01")), 403);  // network posture, 127.0.0.1 not in 10.0.0.0/8
    auto no_token = client_->Get("/v1/spec/stage-01");
    ASSERT_TRUE(no_token);
    EXPECT_EQ(no_token->status, 401);
    EXPECT_EQ(error_code(no_token), "missing_credential");
    EXPECT_EQ(status_of(client_->Get("/v1/spec/stage-01", bearer("wrong"))), 401);
    EXPECT_EQ(status_of(client_->Get("/v1/spec/stage-01", bearer(kSiteToken))), 200);
    EXPECT_EQ(status_of(client_->Get("/v1/spec/web-01")), 401);
    EXPECT_EQ(status_of(client_->Post("/v1/spec/web-01", "{}", "application/json")), 405);
    auto nothing = client_->Get("/v2/whatever");
    ASSERT_TRUE(nothing);
    EXPECT_EQ(nothing->status, 404);
    EXPECT_EQ(error_code(nothing), "not_found");
    // No secret ever reaches the log.
    for (const auto& line : logger_.snapshot()) {
        EXPECT_EQ(line.message.find(kSiteToken), std::string::npos);
        for (const auto& [k, v] : line.fields)
            EXPECT_EQ(v.find("wrong"), std::string::npos);
    }
}

TEST_P(ApiTest, EnrollOnceReplayAndExpiryRefused) {
    std::string token = generate_secret(*random_, "nfe_");
    ASSERT_TRUE(
        store_->add_enrollment_token("web-01", hash_secret(token), clock_.now() + std::chrono::hours(1), clock_.now())
            .ok());
    std::string body = json{{"identity", "web-01"}, {"token", token}}.dump();
    auto first = client_->Post("/v1/enroll", body, "application/json");
    ASSERT_TRUE(first);
    ASSERT_EQ(first->status, 200) << first->body;
    std::string credential = json::parse(first->body)["credential"];
    EXPECT_EQ(credential.rfind("nfc_", 0), 0u);
    auto replay = client_->Post("/v1/enroll", body, "application/json");
    ASSERT_TRUE(replay);
    EXPECT_EQ(replay->status, 401);
    EXPECT_EQ(error_code(replay), "invalid_token");

    std::string expired = generate_secret(*random_, "nfe_");
    ASSERT_TRUE(store_
                    ->add_enrollment_token("web-02", hash_secret(expired), clock_.now() - std::chrono::seconds(1),
                                           clock_.now() - std::chrono::hours(1))
                    .ok());
    auto late =
        client_->Post("/v1/enroll", json{{"identity", "web-02"}, {"token", expired}}.dump(), "application/json");
    ASSERT_TRUE(late);
    EXPECT_EQ(late->status, 401);

    // A token issued for web-02 does not enroll web-01.
    std::string other = generate_secret(*random_, "nfe_");
    ASSERT_TRUE(
        store_->add_enrollment_token("web-02", hash_secret(other), clock_.now() + std::chrono::hours(1), clock_.now())
            .ok());
    auto wrong_node =
        client_->Post("/v1/enroll", json{{"identity", "web-01"}, {"token", other}}.dump(), "application/json");
    ASSERT_TRUE(wrong_node);
    EXPECT_EQ(wrong_node->status, 401);

    EXPECT_EQ(status_of(client_->Post("/v1/enroll", "{not json", "application/json")), 400);
    auto not_node_token =
        client_->Post("/v1/enroll", json{{"identity", "stage-01"}, {"token", "x"}}.dump(), "application/json");
    ASSERT_TRUE(not_node_token);
    EXPECT_EQ(not_node_token->status, 409);

    // The credential works for its own spec, not another node's.
    EXPECT_EQ(status_of(client_->Get("/v1/spec/web-01", bearer(credential))), 200);
    EXPECT_EQ(status_of(client_->Get("/v1/spec/web-02", bearer(credential))), 403);
    // Credentials and tokens are stored hashed.
    if (GetParam() == StoreKind::postgres) {
        EXPECT_EQ(pg_exec("DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM credentials WHERE identity = 'web-01' AND "
                          "credential_hash = '" +
                          hash_secret(credential) + "') THEN RAISE EXCEPTION 'not stored hashed'; END IF; END $$"),
                  "");
    } else {
        auto db = sqlite::open_database(sqlite::database_path(dir_.path()));
        ASSERT_TRUE(db.ok());
        auto s = db->prepare("SELECT credential_hash FROM credentials WHERE identity = 'web-01'");
        ASSERT_TRUE(s.ok());
        ASSERT_TRUE(*s->step());
        EXPECT_EQ(s->text(0), hash_secret(credential));
    }
    for (const auto& line : logger_.snapshot())
        EXPECT_EQ(line.message.find(credential), std::string::npos);
}

TEST_P(ApiTest, ReportsIdempotentValidatedAndOwnNodeOnly) {
    std::string cred = enroll("web-01");
    std::string cred2 = enroll("web-02");
    auto report = report_for("web-01", "11111111-2222-3333-4444-555555555555");
    auto first = client_->Post("/v1/nodes/web-01/reports", bearer(cred), report.dump(), "application/json");
    ASSERT_TRUE(first);
    EXPECT_EQ(first->status, 201) << first->body;
    EXPECT_EQ(status_of(client_->Post("/v1/nodes/web-01/reports", bearer(cred), report.dump(), "application/json")),
              200);
    auto changed = report;
    changed["phase"] = "sustain";
    EXPECT_EQ(status_of(client_->Post("/v1/nodes/web-01/reports", bearer(cred), changed.dump(), "application/json")),
              409);
    EXPECT_EQ(*store_->report_count(), 1);

    EXPECT_EQ(status_of(client_->Post("/v1/nodes/web-01/reports", bearer(cred2),
                                      report_for("web-01", "other-report").dump(), "application/json")),
              403);
    EXPECT_EQ(status_of(client_->Post("/v1/nodes/web-01/reports", bearer(cred), report_for("web-02", "mismatch").dump(),
                                      "application/json")),
              422);
    auto bad_shape = report_for("web-01", "bad-shape");
    bad_shape["phase"] = "dancing";
    auto shape = client_->Post("/v1/nodes/web-01/reports", bearer(cred), bad_shape.dump(), "application/json");
    ASSERT_TRUE(shape);
    EXPECT_EQ(shape->status, 422);
    EXPECT_EQ(error_code(shape), "invalid_report");
    // Issue 13, defect 5: a count the store cannot keep is refused, naming the field (it used to wrap negative).
    auto huge = report_for("web-01", "huge-count");
    huge["counts"]["changed"] = 9223372036854775808ull;
    auto wrapped = client_->Post("/v1/nodes/web-01/reports", bearer(cred), huge.dump(), "application/json");
    ASSERT_TRUE(wrapped);
    EXPECT_EQ(wrapped->status, 422);
    EXPECT_EQ(error_code(wrapped), "invalid_report");
    EXPECT_NE(wrapped->body.find("counts.changed: must be at most 9223372036854775807"), std::string::npos)
        << wrapped->body;
    EXPECT_EQ(status_of(client_->Post("/v1/nodes/web-01/reports", bearer(cred), "{\"report_id\":", "application/json")),
              400);
    std::string big(100 * 1024, 'x');
    auto too_big = client_->Post("/v1/nodes/web-01/reports", bearer(cred), big, "application/json");
    ASSERT_TRUE(too_big);
    EXPECT_EQ(too_big->status, 413);
    EXPECT_EQ(error_code(too_big), "payload_too_large");
    EXPECT_EQ(status_of(client_->Post("/v1/nodes/ghost-01/reports", bearer(cred), report.dump(), "application/json")),
              404);
    EXPECT_EQ(*store_->report_count(), 1);
}

TEST_P(ApiTest, HostileIdentitiesAreRefusedWithoutHarm) {
    std::vector<std::string> paths = {"/v1/spec/..",
                                      "/v1/spec/%2e%2e",
                                      "/v1/spec/..%2f..%2fetc%2fpasswd",
                                      "/v1/spec/a%00b",
                                      "/v1/spec/web-01%00",
                                      "/v1/spec/-rf",
                                      "/v1/spec/a%20b",
                                      "/v1/nodes/..%2fweb-01/reports",
                                      "/v1/spec/" + std::string(10 * 1024, 'a'),
                                      "/v1/spec/" + std::string(300, 'a')};
    for (const auto& path : paths) {
        bool post = path.find("reports") != std::string::npos;
        std::string response = raw((post ? "POST " : "GET ") + path +
                                   " HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}");
        // cpp-httplib closes the connection unanswered on some malformed paths (over-long lines, "..");
        // that is a refusal too: nothing is served, and the server stays up (checked below).
        if (response.empty()) continue;
        ASSERT_GE(response.size(), 12u) << path.substr(0, 80);
        int status = std::stoi(response.substr(9, 3));
        EXPECT_TRUE(status == 400 || status == 404 || status == 414) << path.substr(0, 80) << " → " << status;
    }
    // Traversal through the raw path (no encoding) is just a path that matches no route.
    std::string r = raw("GET /v1/spec/../../etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    ASSERT_GE(r.size(), 12u);
    EXPECT_TRUE(r.substr(9, 3) == "404" || r.substr(9, 3) == "400") << r.substr(0, 40);
    EXPECT_EQ(status_of(client_->Get("/v1/spec/dev-01")), 200);
}

TEST_P(ApiTest, RepeatedAuthFailuresAreRateLimited) {
    for (int i = 0; i < 5; ++i) {
        EXPECT_EQ(status_of(client_->Get("/v1/spec/stage-01", bearer("wrong"))), 401);
    }
    auto limited = client_->Get("/v1/spec/stage-01", bearer(kSiteToken));  // even the right token now
    ASSERT_TRUE(limited);
    EXPECT_EQ(limited->status, 429);
    EXPECT_FALSE(limited->get_header_value("Retry-After").empty());
    auto enroll_limited =
        client_->Post("/v1/enroll", json{{"identity", "web-01"}, {"token", "x"}}.dump(), "application/json");
    ASSERT_TRUE(enroll_limited);
    EXPECT_EQ(enroll_limited->status, 429);
    EXPECT_EQ(status_of(client_->Get("/healthz")), 200);  // unauthenticated endpoints are not limited
}

TEST_P(ApiTest, OperatorViewsAndStatus) {
    EXPECT_EQ(status_of(client_->Get("/v1/nodes")), 401);
    EXPECT_EQ(status_of(client_->Get("/v1/nodes", bearer("nfo_wrong"))), 401);
    std::string cred = enroll("web-01");
    ASSERT_TRUE(client_->Post("/v1/nodes/web-01/reports", bearer(cred),
                              report_for("web-01", "r1", "platform-ready").dump(), "application/json"));
    ASSERT_TRUE(client_->Post("/v1/nodes/dev-01/reports", report_for("dev-01", "r2", "converging", 1).dump(),
                              "application/json"));
    auto list = client_->Get("/v1/nodes", bearer(kOperatorToken));
    ASSERT_TRUE(list);
    ASSERT_EQ(list->status, 200);
    std::map<std::string, std::string> status;
    auto nodes = json::parse(list->body)["nodes"];
    for (const auto& n : nodes)
        status[n["identity"]] = n["status"];
    EXPECT_EQ(status["web-01"], "converging");  // platform-ready, but for another spec digest than the site's
    EXPECT_EQ(status["dev-01"], "failed");
    EXPECT_EQ(status["web-02"], "pending");
    EXPECT_EQ(status.size(), 5u);
    auto one = client_->Get("/v1/nodes/dev-01", bearer(kOperatorToken));
    ASSERT_TRUE(one);
    ASSERT_EQ(one->status, 200);
    auto detail = json::parse(one->body);
    EXPECT_EQ(detail["last_report"]["report_id"], "r2");
    EXPECT_EQ(detail["failed"], 1);
    EXPECT_EQ(status_of(client_->Get("/v1/nodes/ghost-01", bearer(kOperatorToken))), 404);
}

// The operator views carry each node's provisioning record (lifecycle state, VMID, PVE node, IPs) from the
// lifecycle store, null for a node that was never provisioned; a node known only to the lifecycle store is listed.
TEST_P(ApiTest, OperatorViewsCarryTheLifecycle) {
    lifecycle::NodeRecord web = test::active_record("web-02", 9102, {"10.0.0.12", "fd00::12"}, "2026-11-24T02:00:00Z");
    lifecycle::NodeRecord gone = web;
    gone.identity = "old-01";
    gone.vmid = 9199;
    gone.state = lifecycle::State::failed;
    gone.failed_step = "started";
    gone.reason = "start failed: no space";
    ASSERT_TRUE(lifecycle_->put_many({web, gone}).ok());

    auto list = client_->Get("/v1/nodes", bearer(kOperatorToken));
    ASSERT_TRUE(list);
    ASSERT_EQ(list->status, 200);
    std::map<std::string, json> by_id;
    const json listed = json::parse(list->body);
    for (const auto& n : listed["nodes"])
        by_id[n["identity"]] = n;
    ASSERT_EQ(by_id.size(), 6u);  // the five site nodes and old-01, which only the lifecycle store knows
    EXPECT_EQ(by_id["web-02"]["lifecycle"]["state"], "active");
    EXPECT_EQ(by_id["web-02"]["lifecycle"]["vmid"], 9102);
    EXPECT_EQ(by_id["web-02"]["lifecycle"]["pve_node"], "pve1");
    EXPECT_EQ(by_id["web-02"]["lifecycle"]["ips"], json::array({"10.0.0.12", "fd00::12"}));
    EXPECT_TRUE(by_id["web-01"]["lifecycle"].is_null());
    EXPECT_EQ(by_id["old-01"]["lifecycle"]["state"], "failed");
    EXPECT_EQ(by_id["old-01"]["lifecycle"]["failed_step"], "started");

    auto one = client_->Get("/v1/nodes/web-02", bearer(kOperatorToken));
    ASSERT_TRUE(one);
    ASSERT_EQ(one->status, 200);
    EXPECT_EQ(json::parse(one->body)["lifecycle"]["ips"][0], "10.0.0.12");
    auto only_provisioned = client_->Get("/v1/nodes/old-01", bearer(kOperatorToken));
    ASSERT_TRUE(only_provisioned);
    ASSERT_EQ(only_provisioned->status, 200);
    EXPECT_EQ(json::parse(only_provisioned->body)["lifecycle"]["reason"], "start failed: no space");
    auto never = client_->Get("/v1/nodes/web-01", bearer(kOperatorToken));
    ASSERT_TRUE(never);
    ASSERT_EQ(never->status, 200);
    EXPECT_TRUE(json::parse(never->body)["lifecycle"].is_null());
}

TEST_P(ApiTest, HealthReadyAndMetrics) {
    EXPECT_EQ(status_of(client_->Get("/healthz")), 200);
    auto r = client_->Get("/readyz");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(json::parse(r->body)["status"], "ready");
    ASSERT_TRUE(client_->Get("/v1/spec/dev-01"));
    // A request is counted by httplib's logger callback, which runs just after the response is sent.
    auto m = client_->Get("/metrics");
    for (int i = 0; i < 100 && m && m->body.find("route=\"/v1/spec/{identity}\"") == std::string::npos; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        m = client_->Get("/metrics");
    }
    ASSERT_TRUE(m);
    EXPECT_EQ(m->status, 200);
    EXPECT_NE(m->body.find("nodeform_http_requests_total{route=\"/v1/spec/{identity}\",status=\"200\"} 1"),
              std::string::npos)
        << m->body;
    EXPECT_NE(m->body.find("nodeform_http_request_duration_seconds_bucket{route=\"/v1/spec/{identity}\",le=\"+Inf\"}"),
              std::string::npos);
    EXPECT_NE(m->body.find("nodeform_nodes{status=\"pending\"} 5"), std::string::npos) << m->body;
    EXPECT_NE(m->body.find("nodeform_reports_stored 0"), std::string::npos);
    EXPECT_NE(m->body.find("nodeform_site_reloads_total{result=\"failed\"} 0"), std::string::npos);
}

TEST_P(ApiTest, HotReloadServesNewSiteAndKeepsOldOnBrokenOne) {
    auto site = make_site({make_node("dev-01", site::AuthMethod::network, {"127.0.0.0/8"}),
                           make_node("dev-02", site::AuthMethod::network, {"127.0.0.0/8"})});
    source_.set(site);
    bool served = false;
    for (int i = 0; i < 50 && !served; ++i) {
        auto res = client_->Get("/v1/spec/dev-02");
        served = res && res->status == 200;
        if (!served) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ASSERT_TRUE(served) << "the new site was not picked up";
    source_.break_it();
    bool refused = false;
    for (int i = 0; i < 50 && !refused; ++i) {
        auto r = client_->Get("/readyz");
        refused = r && json::parse(r->body)["last_reload"]["ok"] == false;
        if (!refused) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ASSERT_TRUE(refused) << "the broken site was not noticed";
    auto r = client_->Get("/readyz");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);  // still serving the last good site
    auto body = json::parse(r->body);
    EXPECT_NE(body["last_reload"]["error"].get<std::string>().find("site.name"), std::string::npos);
    EXPECT_EQ(status_of(client_->Get("/v1/spec/dev-02")), 200);
    auto m = client_->Get("/metrics");
    ASSERT_TRUE(m);
    EXPECT_NE(m->body.find("nodeform_site_reloads_total{result=\"failed\"} 1"), std::string::npos) << m->body;
    EXPECT_NE(m->body.find("nodeform_site_last_reload_ok 0"), std::string::npos);
    // An explicit reload (SIGHUP) of a broken site is refused too.
    EXPECT_FALSE(server_->reload().ok());
}

// Opens a connection and sends the request line and headers one byte at a time.
class SlowLoris {
  public:
    explicit SlowLoris(int port) {
        fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_port = htons(static_cast<uint16_t>(port));
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
    }
    ~SlowLoris() { ::close(fd_); }
    bool send_byte(char c) { return connected_ && ::send(fd_, &c, 1, MSG_NOSIGNAL) == 1; }
    // True when the server closed the connection (read returns 0 or an error) within the timeout.
    bool closed_by_server(int seconds) {
        timeval tv{seconds, 0};
        setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        char buf[256];
        ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
        return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) || n > 0;
    }

  private:
    int fd_ = -1;
    bool connected_ = false;
};

TEST_P(ApiTest, SlowLorisDoesNotBlockOtherClients) {
    // 6 of the 8 workers are held by clients trickling headers; others are still served promptly.
    std::vector<std::unique_ptr<SlowLoris>> lorises;
    for (int i = 0; i < 6; ++i)
        lorises.push_back(std::make_unique<SlowLoris>(server_->port()));
    std::atomic<bool> stop{false};
    std::thread trickle([&] {
        const std::string header = "GET /v1/spec/dev-01 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
        for (std::size_t i = 0; !stop; ++i) {
            for (auto& l : lorises)
                l->send_byte(i < header.size() ? header[i] : 'a');
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    auto started = std::chrono::steady_clock::now();
    for (int i = 0; i < 20; ++i) {
        httplib::Client c("127.0.0.1", server_->port());
        c.set_read_timeout(std::chrono::seconds(2));
        auto res = c.Get("/v1/spec/dev-01");
        ASSERT_TRUE(res) << "request " << i << " failed while slow clients were connected";
        EXPECT_EQ(res->status, 200);
    }
    EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(2));
    stop = true;
    trickle.join();
    // A client that stalls mid-headers is cut off after the read timeout (1 s here).
    SlowLoris stalled(server_->port());
    for (char c : std::string("GET /healthz HTTP/1.1\r\nHo"))
        stalled.send_byte(c);
    EXPECT_TRUE(stalled.closed_by_server(4));
}

TEST_P(ApiTest, SlowClientsCannotHoldWorkersBeyondTheReadTimeout) {
    // Twice as many trickling clients as workers, each sending a byte every 100 ms (well inside a per-recv
    // timeout): each is cut off read_timeout (1 s) after a worker takes it up, so a normal client waiting behind
    // them is served after about (clients / workers) × read_timeout, not never.
    stop();
    start(4);
    std::vector<std::unique_ptr<SlowLoris>> lorises;
    for (int i = 0; i < 8; ++i)
        lorises.push_back(std::make_unique<SlowLoris>(server_->port()));
    std::atomic<bool> stop_trickle{false};
    std::atomic<int> cut{0};
    std::thread trickle([&] {
        const std::string header = "GET /v1/spec/dev-01 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
        std::vector<bool> alive(lorises.size(), true);
        for (std::size_t i = 0; !stop_trickle; ++i) {
            for (std::size_t l = 0; l < lorises.size(); ++l) {
                if (alive[l] && !lorises[l]->send_byte(i < header.size() ? header[i] : 'a')) {
                    alive[l] = false;
                    cut++;
                }
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    auto started = std::chrono::steady_clock::now();
    httplib::Client c("127.0.0.1", server_->port());
    c.set_read_timeout(std::chrono::seconds(20));
    auto res = c.Get("/v1/spec/dev-01");
    auto waited = std::chrono::steady_clock::now() - started;
    ASSERT_TRUE(res) << "the normal client was not served while slow clients were connected";
    EXPECT_EQ(res->status, 200);
    EXPECT_LT(waited, std::chrono::seconds(6)) << "slow clients held the workers beyond 2 x read_timeout";
    // Every slow client was cut off by the server (a send fails once the server has closed and reset).
    for (int i = 0; i < 50 && cut < 8; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    stop_trickle = true;
    trickle.join();
    EXPECT_EQ(cut.load(), 8);
    auto m = client_->Get("/metrics");
    ASSERT_TRUE(m);
    EXPECT_NE(m->body.find("nodeform_http_deadline_closed_total 8"), std::string::npos) << m->body;
}

TEST_P(ApiTest, RequestHeadIsCappedAt64KiB) {
    auto request = [](int headers) {
        std::string r = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n";
        for (int i = 0; i < headers; ++i)
            r += "X-Pad-" + std::to_string(i) + ": " + std::string(1000, 'a') + "\r\n";
        return r + "\r\n";
    };
    EXPECT_EQ(raw(request(40)).rfind("HTTP/1.1 200", 0), 0u);  // 40 KiB of headers, each line under 8 KiB
    std::string refused = raw(request(100));                   // 100 KiB
    EXPECT_EQ(refused.rfind("HTTP/1.1 400", 0), 0u) << refused.substr(0, 200);
    EXPECT_EQ(refused.find("HTTP/1.1 200"), std::string::npos);
    EXPECT_TRUE(client_->Get("/healthz"));
}

TEST_P(ApiTest, HttpsServesKeepAliveAndCutsOffAStalledHandshake) {
    stop();
    start(4, /*tls=*/true);
    client_->set_keep_alive(true);
    for (int i = 0; i < 3; ++i) {  // three requests on one TLS connection
        auto res = client_->Get("/v1/spec/dev-01");
        ASSERT_TRUE(res) << httplib::to_string(res.error());
        EXPECT_EQ(res->status, 200);
        EXPECT_EQ(json::parse(res->body, nullptr, false).value("identity", ""), "dev-01");
    }
    auto post = client_->Post("/v1/nodes/dev-01/reports", report_for("dev-01", "tls-1").dump(), "application/json");
    ASSERT_TRUE(post);
    EXPECT_EQ(post->status, 201) << post->body;
    EXPECT_TRUE(store_->find_report("tls-1")->has_value());
    // Half a ClientHello, then silence: the handshake counts against read_timeout (1 s here).
    SlowLoris stalled(server_->port());
    for (char c : std::string("\x16\x03\x01\x02\x00", 5))
        stalled.send_byte(c);
    EXPECT_TRUE(stalled.closed_by_server(4));
}

// The fingerprint of the certificate a TLS handshake with 127.0.0.1:port presents ("" when it fails).
std::string served_certificate(int port) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<std::uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    std::string fingerprint;
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
        SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
        SSL* ssl = SSL_new(ctx);
        SSL_set_fd(ssl, fd);
        if (SSL_connect(ssl) == 1) {
            X509* cert = SSL_get1_peer_certificate(ssl);
            fingerprint = tls::certificate_fingerprint(cert);
            X509_free(cert);
        }
        SSL_free(ssl);
        SSL_CTX_free(ctx);
    }
    ::close(fd);
    return fingerprint;
}

// A certificate due for renewal is issued anew from the site CA and served to new connections without a restart;
// clients that trust (pin) the CA keep working.
TEST_P(ApiTest, RenewsTheServerCertificateAndServesItWithoutARestart) {
    stop();
    config_.cert_renew_before = std::chrono::seconds(3650LL * 86400);  // always due: renewed at every check
    config_.cert_check_interval = std::chrono::seconds(1);
    start(4, /*tls=*/true);
    const std::string first = served_certificate(server_->port());
    ASSERT_EQ(first.size(), 64u);
    std::string now;
    for (int i = 0; i < 200 && (now.empty() || now == first); ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        now = served_certificate(server_->port());
    }
    EXPECT_EQ(now.size(), 64u);
    EXPECT_NE(now, first) << "the renewed certificate is served without a restart";
    auto res = client_->Get("/healthz");  // verifies the chain against the (unchanged) site CA
    ASSERT_TRUE(res) << httplib::to_string(res.error());
    EXPECT_EQ(res->status, 200);
}

// Beyond max-connections (open: in service, queued or idle) a connection is answered 503 on the accepting thread
// at once.
TEST_P(ApiTest, ConnectionsBeyondTheCapAreAnswered503AtOnce) {
    stop();
    config_.max_connections = 4;
    start(2, false, std::chrono::seconds(3));  // 3 s: the silent connections outlive this test's set-up under load
    // The set-up's own /healthz connection is counted until its worker has closed it, which can lag behind the
    // client's return under load: with it still counted, the fourth silent connection would be the one refused.
    for (int i = 0; i < 500 && server_->open_connections() > 0; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    ASSERT_EQ(server_->open_connections(), 0);
    // Four silent connections, all waiting for their first request (parked, not on a worker).
    std::vector<std::unique_ptr<SlowLoris>> silent;
    for (int i = 0; i < 4; ++i)
        silent.push_back(std::make_unique<SlowLoris>(server_->port()));
    // All four counted before the fifth arrives (under load the accepting thread may lag behind connect()).
    for (int i = 0; i < 500 && server_->open_connections() < 4; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    ASSERT_EQ(server_->open_connections(), 4);
    auto started = std::chrono::steady_clock::now();
    std::string answer = raw("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(2)) << "the refusal waited for a worker";
    EXPECT_EQ(answer.rfind("HTTP/1.1 503", 0), 0u) << answer;
    EXPECT_NE(answer.find("Retry-After: 1"), std::string::npos);
    EXPECT_NE(answer.find("too_many_connections"), std::string::npos);
    // Once the silent ones have been cut off (read_timeout after a worker took each up), new clients are served.
    bool served = false;
    for (int i = 0; i < 150 && !served; ++i) {
        auto r = client_->Get("/healthz");
        served = r && r->status == 200;
        if (!served) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    EXPECT_TRUE(served);
    for (auto& s : silent)
        EXPECT_TRUE(s->closed_by_server(4));
    auto m = client_->Get("/metrics");
    ASSERT_TRUE(m);
    EXPECT_EQ(m->body.find("nodeform_http_connections_rejected_total 0"), std::string::npos);
}

// An idle keep-alive connection holds no worker: with 2 workers, 64 connections kept open between requests are
// all served again, and a new client is answered at once rather than after a keep-alive timeout (5 s).
TEST_P(ApiTest, IdleKeepAliveConnectionsHoldNoWorker) {
    stop();
    start(2);
    std::vector<std::unique_ptr<httplib::Client>> clients;
    for (int i = 0; i < 64; ++i) {
        clients.push_back(std::make_unique<httplib::Client>("127.0.0.1", server_->port()));
        clients.back()->set_keep_alive(true);
        clients.back()->set_read_timeout(std::chrono::seconds(2));
        auto res = clients.back()->Get("/healthz");
        ASSERT_TRUE(res) << "client " << i << ": " << httplib::to_string(res.error());
        EXPECT_EQ(res->status, 200);
    }
    EXPECT_GE(server_->open_connections(), 64) << "the clients' connections were kept open";
    for (std::size_t i = 0; i < clients.size(); ++i) {
        auto res = clients[i]->Get("/healthz");
        ASSERT_TRUE(res) << "client " << i << " again: " << httplib::to_string(res.error());
        EXPECT_EQ(res->status, 200);
    }
    auto started = std::chrono::steady_clock::now();
    httplib::Client fresh("127.0.0.1", server_->port());
    fresh.set_read_timeout(std::chrono::seconds(2));
    auto res = fresh.Get("/healthz");
    ASSERT_TRUE(res) << httplib::to_string(res.error());
    EXPECT_EQ(res->status, 200);
    EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(2));
}

// max-body-bytes (64 KiB here) holds on every framing of a body, and nothing refused is stored.
TEST_P(ApiTest, BodyLimitHoldsOnEveryFraming) {
    auto head = [](const std::string& framing) {
        return "POST /v1/nodes/dev-01/reports HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + framing +
               "\r\n";
    };
    std::string report = report_for("dev-01", "chunked-ok").dump();
    std::string ok = raw(head("Transfer-Encoding: chunked\r\nConnection: close\r\n") + chunk(report.substr(0, 10)) +
                         chunk(report.substr(10)) + "0\r\n\r\n");
    EXPECT_EQ(ok.rfind("HTTP/1.1 201", 0), 0u) << ok;
    // One chunk declared beyond the limit: refused at its size line, before its data.
    std::string declared = raw(head("Transfer-Encoding: chunked\r\n") + "100000\r\n" + std::string(1000, ' '));
    EXPECT_EQ(declared.rfind("HTTP/1.1 413", 0), 0u) << declared;
    EXPECT_NE(declared.find("payload_too_large"), std::string::npos) << declared;
    // Small chunks adding up beyond it.
    std::string many = head("Transfer-Encoding: chunked\r\n");
    for (int i = 0; i < 80; ++i)
        many += chunk(std::string(1024, ' '));
    std::string summed = raw(many + "0\r\n\r\n");
    EXPECT_EQ(summed.rfind("HTTP/1.1 413", 0), 0u) << summed;
    // A Content-Length beyond it: refused without reading the body.
    std::string length = raw(head("Content-Length: 100000000\r\n") + std::string(1000, ' '));
    EXPECT_EQ(length.rfind("HTTP/1.1 413", 0), 0u) << length;
    // Both framings at once, or a coding other than chunked alone: refused, and nothing after is parsed.
    const std::string hidden = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    for (const std::string& framing :
         {std::string("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"),
          std::string("Transfer-Encoding: gzip, chunked\r\n"),
          std::string("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"),
          std::string("Content-Length: 5\r\nContent-Length: 6\r\n"), std::string("Content-Length: -1\r\n")}) {
        bool closed = false;
        std::string answer = raw(head(framing) + chunk(report) + "0\r\n\r\n" + hidden, &closed);
        EXPECT_EQ(answer.rfind("HTTP/1.1 4", 0), 0u) << framing << answer;  // 400, or 413 for a length of -1
        EXPECT_EQ(count_of(answer, "HTTP/1.1 "), 1u) << framing << answer;
        EXPECT_TRUE(closed) << framing;
    }
    // A malformed chunk: refused.
    std::string malformed = raw(head("Transfer-Encoding: chunked\r\n") + "zz\r\n" + report + "\r\n0\r\n\r\n");
    EXPECT_EQ(malformed.rfind("HTTP/1.1 400", 0), 0u) << malformed;
    EXPECT_EQ(*store_->report_count(), 1);
    auto up = client_->Get("/healthz");
    ASSERT_TRUE(up);
    EXPECT_EQ(up->status, 200);
}

// After a refused request the connection closes: bytes the server did not read as a body are never parsed as a
// request, whatever the refusal (no route, wrong method, bad identity, too large, malformed head, a GET's body).
TEST_P(ApiTest, RefusedRequestsCloseAndTheirUnreadBodyIsNeverParsed) {
    const std::string hidden = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    auto with_body = [&](const std::string& line, std::size_t length) {
        return line + "\r\nHost: x\r\nContent-Length: " + std::to_string(length) + "\r\n\r\n" + hidden;
    };
    for (const std::string& request :
         {with_body("POST /nowhere HTTP/1.1", hidden.size()), with_body("PUT /healthz HTTP/1.1", hidden.size()),
          with_body("POST /v1/nodes/bad!id/reports HTTP/1.1", hidden.size()),
          with_body("POST /v1/nodes/dev-01/reports HTTP/1.1", 10 * 1024 * 1024),
          with_body("GET /healthz HTTP/1.1", hidden.size()), "GARBAGE\r\n\r\n" + hidden,
          "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" + hidden}) {
        bool closed = false;
        std::string answer = raw(request, &closed);
        EXPECT_EQ(count_of(answer, "HTTP/1.1 "), 1u) << request << "\n---\n" << answer;
        EXPECT_TRUE(closed) << request;
    }
}

// Keep-alive still carries complete requests, and its header announces the limits the server enforces.
TEST_P(ApiTest, KeepAliveServesPipelinedRequestsAndAnnouncesItsLimits) {
    std::string report = report_for("dev-01", "pipelined").dump();
    std::string answer =
        raw("POST /v1/nodes/dev-01/reports HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Content-Length: " +
            std::to_string(report.size()) + "\r\n\r\n" + report +
            "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    EXPECT_EQ(count_of(answer, "HTTP/1.1 "), 2u) << answer;
    EXPECT_EQ(answer.rfind("HTTP/1.1 201", 0), 0u) << answer;
    EXPECT_NE(answer.find("HTTP/1.1 200"), std::string::npos) << answer;
    EXPECT_NE(answer.find("Keep-Alive: timeout=" + std::to_string(config_.keep_alive_timeout.count()) + ", max=1000"),
              std::string::npos)
        << answer;
}

// nodeform_http_requests_on_loop_total from /metrics (-1 when unreadable).
long long requests_on_loop(httplib::Client& client) {
    auto m = client.Get("/metrics");
    if (!m || m->status != 200) return -1;
    const std::string name = "\nnodeform_http_requests_on_loop_total ";
    auto at = m->body.find(name);
    if (at == std::string::npos) return -1;
    return std::stoll(m->body.substr(at + name.size()));
}

// A spec answer that reads only memory (a node authenticated by its address or the site token) comes from an event
// loop, headers and 304 included; one that looks up a stored credential, and every POST, comes from a worker.
TEST_P(ApiTest, SpecAnswersThatReadOnlyMemoryComeFromAnEventLoop) {
    httplib::Client metrics("127.0.0.1", server_->port());
    const long long before = requests_on_loop(metrics);
    ASSERT_GE(before, 0);
    httplib::Client node("127.0.0.1", server_->port());
    node.set_keep_alive(true);
    const std::string etag = "\"" + server_->current_site()->nodes.at("dev-01").digest + "\"";
    for (int i = 0; i < 10; ++i) {
        auto res = node.Get("/v1/spec/dev-01");
        ASSERT_TRUE(res);
        EXPECT_EQ(res->status, 200);
        EXPECT_EQ(res->get_header_value("ETag"), etag);
        EXPECT_EQ(status_of(node.Get("/v1/spec/dev-01", {{"If-None-Match", etag}})), 304);
        EXPECT_EQ(status_of(node.Get("/v1/spec/stage-01", bearer(kSiteToken))), 200);
        std::this_thread::sleep_for(std::chrono::milliseconds(5));  // the connection parks between turns
    }
    EXPECT_TRUE(test::eventually([&] { return requests_on_loop(metrics) >= before + 25; }, std::chrono::seconds(5)))
        << "on the loop: " << requests_on_loop(metrics) - before << " of 30";

    const std::string credential = enroll("web-01");
    ASSERT_FALSE(credential.empty());
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    const long long settled = requests_on_loop(metrics);
    for (int i = 0; i < 10; ++i) {
        EXPECT_EQ(status_of(node.Get("/v1/spec/web-01", bearer(credential))), 200);
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    std::string report = report_for("dev-01", "from-a-worker").dump();
    EXPECT_EQ(status_of(node.Post("/v1/nodes/dev-01/reports", report, "application/json")), 201);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    EXPECT_EQ(requests_on_loop(metrics), settled) << "a credential lookup or a body never runs on a loop";
}

// A converge request (`node apply`) rides on spec answers, the loop's too, within a second of being stored, and
// leaves them as soon as the report that took it is stored here.
TEST_P(ApiTest, AConvergeRequestRidesOnSpecAnswersUntilItsReportIsStored) {
    httplib::Client node("127.0.0.1", server_->port());
    node.set_keep_alive(true);
    auto header = [&] {
        auto res = node.Get("/v1/spec/dev-01");
        return res ? res->get_header_value("Nodeform-Apply-Request") : std::string("<no answer>");
    };
    EXPECT_EQ(header(), "");
    ASSERT_TRUE(store_->request_apply("dev-01", "req-7", clock_.now()).ok());
    EXPECT_TRUE(test::eventually([&] { return header() == "req-7"; }, std::chrono::seconds(5)));
    json report = report_for("dev-01", "took-req-7");
    report["apply_request"] = "req-7";
    EXPECT_EQ(status_of(node.Post("/v1/nodes/dev-01/reports", report.dump(), "application/json")), 201);
    EXPECT_EQ(header(), "") << "acknowledged: not sent again";
    EXPECT_FALSE(store_->pending_apply("dev-01")->has_value());
}

// A loop never waits for a client: one that pipelines spec requests and never reads its answers (64 KiB each)
// fills its socket, is handed to a worker and cut at the write timeout, while other keep-alive clients are answered
// throughout.
TEST_P(ApiTest, AClientThatNeverReadsCannotStallTheLoops) {
    auto big = make_node("big-01", site::AuthMethod::network, {"127.0.0.0/8"});
    big.resolved["padding"] = std::string(64 * 1024, 'x');
    big.digest = canonical_digest(big.resolved);
    source_.set(make_site({make_node("dev-01", site::AuthMethod::network, {"127.0.0.0/8"}), big}));
    ASSERT_TRUE(test::eventually([&] { return status_of(client_->Get("/v1/spec/big-01")) == 200; }));
    auto deadline_closed = [&] {
        auto m = client_->Get("/metrics");
        const std::string name = "\nnodeform_http_deadline_closed_total ";
        auto at = m ? m->body.find(name) : std::string::npos;
        return at == std::string::npos ? -1LL : std::stoll(m->body.substr(at + name.size()));
    };
    const long long closed_before = deadline_closed();
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    int small = 4096;
    ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(server_->port()));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    std::string burst;
    for (int i = 0; i < 8; ++i)
        burst += "GET /v1/spec/big-01 HTTP/1.1\r\nHost: x\r\n\r\n";
    std::atomic<bool> stop_sending{false};
    std::atomic<bool> cut{false};
    std::thread hostile([&] {
        while (!stop_sending) {
            if (::send(fd, burst.data(), burst.size(), MSG_NOSIGNAL | MSG_DONTWAIT) < 0 && errno != EAGAIN) {
                cut = true;
                return;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
        }
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(300));  // its answers have filled both socket buffers
    std::vector<std::unique_ptr<httplib::Client>> others;
    for (int i = 0; i < 4; ++i) {
        others.push_back(std::make_unique<httplib::Client>("127.0.0.1", server_->port()));
        others.back()->set_keep_alive(true);
        others.back()->set_read_timeout(std::chrono::seconds(2));
    }
    auto started = std::chrono::steady_clock::now();
    for (int round = 0; round < 25; ++round) {
        for (auto& c : others) {
            auto res = c->Get("/v1/spec/dev-01");
            ASSERT_TRUE(res) << "round " << round << ": " << httplib::to_string(res.error());
            EXPECT_EQ(res->status, 200);
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(3));
    EXPECT_TRUE(test::eventually([&] { return cut.load(); }, std::chrono::seconds(config_.write_timeout.count() + 5)))
        << "the client that never reads is cut at the write timeout";
    EXPECT_GT(deadline_closed(), closed_before);
    stop_sending = true;
    hostile.join();
    ::close(fd);
}

// Every JSON body the controller reads is bounded in depth at parse time: refused with 400, the server lives on.
TEST_P(ApiTest, DeeplyNestedJsonBodiesAreRefused) {
    std::string deep = std::string(20000, '[') + std::string(20000, ']');
    auto report = report_for("dev-01", "deep").dump();
    report.insert(1, "\"extra\":" + deep + ",");
    auto enroll_body = "{\"identity\":\"web-01\",\"token\":" + deep + "}";
    auto at_limit = report_for("dev-01", "at-limit");
    json value = json::array();
    for (int i = 0; i < 120; ++i)
        value = json::array({value});
    at_limit["extra"] = value;
    for (auto [path, body] : {std::pair{"/v1/nodes/dev-01/reports", report}, std::pair{"/v1/enroll", enroll_body}}) {
        auto res = client_->Post(path, body, "application/json");
        ASSERT_TRUE(res) << path;
        EXPECT_EQ(res->status, 400) << path << res->body;
        EXPECT_NE(res->body.find("nested deeper than 128 levels"), std::string::npos) << res->body;
    }
    auto ok = client_->Post("/v1/nodes/dev-01/reports", at_limit.dump(), "application/json");
    ASSERT_TRUE(ok);
    EXPECT_NE(ok->status, 400) << ok->body;
    auto up = client_->Get("/healthz");
    ASSERT_TRUE(up);
    EXPECT_EQ(up->status, 200);
}

// A second server on an address in use fails to start, naming the address (no SO_REUSEPORT sharing).
TEST_P(ApiTest, ASecondServerOnTheSameAddressIsRefused) {
    ControllerConfig second = config_;
    second.listen_port = server_->port();
    test::TempDir state;
    second.state = state.path();
    ControllerServer other(second, *store_, source_, clock_, logger_, notifier_, *random_,
                           ServerSecrets{hash_secret(kOperatorToken)}, lifecycle_.get());
    auto st = other.start();
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.message().find("127.0.0.1:" + std::to_string(server_->port()) + ": address in use"), std::string::npos)
        << st.message();
}

// Nothing served without authentication depends on a secret: no site or spec digest in /readyz or /metrics.
TEST_P(ApiTest, UnauthenticatedEndpointsExposeNoDigest) {
    auto site = server_->current_site();
    ASSERT_TRUE(site);
    for (const char* path : {"/healthz", "/readyz", "/metrics"}) {
        auto res = client_->Get(path);
        ASSERT_TRUE(res) << path;
        EXPECT_EQ(res->body.find(site->digest), std::string::npos) << path << res->body;
        for (const auto& [id, node] : site->nodes)
            EXPECT_EQ(res->body.find(node.digest), std::string::npos) << path << " shows " << id << "'s digest";
        EXPECT_EQ(res->body.find("digest"), std::string::npos) << path << res->body;
    }
}

}  // namespace
INSTANTIATE_TEST_SUITE_P(Stores, ApiTest, ::testing::Values(StoreKind::sqlite, StoreKind::postgres),
                         [](const ::testing::TestParamInfo<StoreKind>& info) {
                             return info.param == StoreKind::sqlite ? "sqlite" : "postgres";
                         });

}  // namespace nodeform::controller
