// Seed loading, enrollment, spec fetch with ETag and cache fallback, reports, backoff: against an
// in-test HttpTransport that plays the controller (docs/protocol.md).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include "fakes/memory_filesystem.hpp"
#include "fakes/memory_logger.hpp"
#include "nodeform/agent/cli.hpp"
#include "nodeform/agent/controller_client.hpp"
#include "nodeform/args.hpp"
#include "nodeform/canonical_json.hpp"
#include "test_paths.hpp"

namespace nodeform::agent {
namespace {

const std::string kFingerprint(64, 'a');

Seed test_seed() {
    return Seed{"web-01", "https://10.0.2.2:8443", "one-time-token-SECRET", kFingerprint};
}

class FakeController final : public HttpTransport {
  public:
    std::vector<HttpRequest> requests;
    int unreachable = 0;  // this many sends fail at the transport level
    bool accept_enroll = true;
    bool enrolled = false;
    nlohmann::json spec = {{"schema_version", 1}, {"identity", "web-01"}, {"packages", nlohmann::json::array()}};
    int report_status = 201;    // what POST /v1/nodes/web-01/reports answers
    std::string apply_request;  // Nodeform-Apply-Request on spec answers, when set

    Result<HttpResponse> send(const HttpRequest& r) override {
        requests.push_back(r);
        if (unreachable > 0) {
            --unreachable;
            return make_error("connect to 10.0.2.2:8443: Connection refused");
        }
        if (r.path == "/v1/enroll") {
            auto body = nlohmann::json::parse(r.body);
            if (!accept_enroll || enrolled || body["token"] != "one-time-token-SECRET") {
                return HttpResponse{401, {}, R"({"error":{"code":"invalid_token","message":"no"}})"};
            }
            enrolled = true;
            return HttpResponse{200, {}, R"({"identity":"web-01","credential":"node-credential-XYZ"})"};
        }
        if (r.path == "/v1/spec/web-01") {
            std::string etag = "\"" + canonical_digest(spec) + "\"";
            std::map<std::string, std::string> headers = {{"etag", etag}};
            if (!apply_request.empty()) headers["nodeform-apply-request"] = apply_request;
            auto inm = r.headers.find("If-None-Match");
            if (inm != r.headers.end() && inm->second == etag) return HttpResponse{304, headers, ""};
            return HttpResponse{200, headers, canonical_dump(spec)};
        }
        if (r.path == "/v1/nodes/web-01/reports") {
            if (report_status < 300) return HttpResponse{report_status, {}, "{}"};
            return HttpResponse{
                report_status,
                {},
                R"({"error":{"code":"refused","message":"status )" + std::to_string(report_status) + R"("}})"};
        }
        return HttpResponse{404, {}, R"({"error":{"code":"not_found","message":"no route"}})"};
    }
};

class FixedRandom final : public Random {
  public:
    std::uint64_t next() override { return 12345; }
};

ClientOptions fast_options() {
    static FixedRandom random;
    ClientOptions o;
    o.sleep = [](std::chrono::milliseconds) {};
    o.random = &random;
    return o;
}

TEST(Seed, SourcesInOrder) {
    MemoryFilesystem fs;
    EXPECT_FALSE(load_seed(fs, std::nullopt).ok());
    auto seed = test_seed();
    fs.put_file("/sys/class/dmi/id/product_serial", encode_seed_compact(seed) + "\n");
    auto from_smbios = load_seed(fs, std::nullopt);
    ASSERT_TRUE(from_smbios.ok()) << from_smbios.message();
    EXPECT_EQ(from_smbios->source, "SMBIOS serial");
    EXPECT_EQ(from_smbios->seed.token, seed.token);
    fs.put_file("/etc/nodeform/seed.yaml",
                "identity: web-02\ncontroller_url: https://c:8443\ntoken: t0ken-abcdefghijkl\n"
                "ca_fingerprint: " +
                    kFingerprint + "\n");
    auto from_yaml = load_seed(fs, std::nullopt);
    ASSERT_TRUE(from_yaml.ok()) << from_yaml.message();
    EXPECT_EQ(from_yaml->seed.identity, "web-02");
    fs.put_file("/tmp/explicit", encode_seed_compact(seed));
    auto explicit_file = load_seed(fs, std::string("/tmp/explicit"));
    ASSERT_TRUE(explicit_file.ok());
    EXPECT_EQ(explicit_file->seed.identity, "web-01");
    // A malformed seed is an error, never silently skipped for the next source.
    fs.put_file("/etc/nodeform/seed.yaml", "identity: web-02\nsurprise: 1\n");
    auto bad = load_seed(fs, std::nullopt);
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.message().find("surprise"), std::string::npos);
}

TEST(Client, EnrollsOnceStoresTheCredentialAndNeverSendsTheTokenAgain) {
    MemoryFilesystem fs;
    MemoryLogger log;
    FakeController controller;
    {
        ControllerClient client(controller, fs, log, test_seed(), fast_options());
        auto spec = client.fetch_spec();
        ASSERT_TRUE(spec.ok()) << spec.message();
        EXPECT_EQ(spec->spec["identity"], "web-01");
        EXPECT_FALSE(spec->from_cache);
    }
    auto cred = fs.stat("/var/lib/nodeform/credential").value();
    ASSERT_TRUE(cred.has_value());
    EXPECT_EQ(cred->mode, 0600u);
    EXPECT_EQ(fs.stat("/var/lib/nodeform/spec.json").value()->mode, 0600u);
    // A new process: reads the stored credential, revalidates with If-None-Match, gets 304.
    controller.requests.clear();
    ControllerClient again(controller, fs, log, test_seed(), fast_options());
    auto spec = again.fetch_spec();
    ASSERT_TRUE(spec.ok());
    EXPECT_TRUE(spec->not_modified);
    ASSERT_EQ(controller.requests.size(), 1u);
    EXPECT_EQ(controller.requests[0].headers.at("Authorization"), "Bearer node-credential-XYZ");
    EXPECT_EQ(controller.requests[0].headers.at("If-None-Match"), "\"" + canonical_digest(controller.spec) + "\"");
    for (const auto& r : controller.requests)
        EXPECT_EQ(r.body.find("one-time-token-SECRET"), std::string::npos);
    ASSERT_TRUE(again.post_report({{"report_id", "x"}}).ok());
    EXPECT_EQ(controller.requests.back().headers.at("Authorization"), "Bearer node-credential-XYZ");
    for (const auto& line : log.lines)
        EXPECT_EQ(line.message.find("SECRET"), std::string::npos);
}

TEST(Client, ApplyRequestHeaderIsPassedOnFromA200AndA304AndAMalformedOneIsIgnored) {
    MemoryFilesystem fs;
    MemoryLogger log;
    FakeController controller;
    ControllerClient client(controller, fs, log, test_seed(), fast_options());
    auto none = client.fetch_spec();
    ASSERT_TRUE(none.ok()) << none.message();
    EXPECT_EQ(none->apply_request, "");
    controller.apply_request = "op-2026-12-04.1";
    auto first = client.fetch_spec();
    ASSERT_TRUE(first.ok());
    EXPECT_TRUE(first->not_modified);
    EXPECT_EQ(first->apply_request, "op-2026-12-04.1");
    controller.spec["packages"] = nlohmann::json::array({{{"name", "nginx"}, {"state", "present"}}});
    auto changed = client.fetch_spec();
    ASSERT_TRUE(changed.ok());
    EXPECT_FALSE(changed->not_modified);
    EXPECT_EQ(changed->apply_request, "op-2026-12-04.1");
    controller.apply_request = "bad value; rm -rf /";
    auto bad = client.fetch_spec();
    ASSERT_TRUE(bad.ok());
    EXPECT_EQ(bad->apply_request, "");
    bool warned = false;
    for (const auto& line : log.lines)
        warned = warned || line.message.find("malformed Nodeform-Apply-Request") != std::string::npos;
    EXPECT_TRUE(warned);
}

TEST(Client, ReportDeliveryTellsRejectedForGoodFromTryAgainLater) {
    MemoryFilesystem fs;
    MemoryLogger log;
    FakeController controller;
    ControllerClient client(controller, fs, log, test_seed(), fast_options());
    const std::vector<std::pair<int, ReportDelivery>> cases = {
        {201, ReportDelivery::stored},      {200, ReportDelivery::stored},      {400, ReportDelivery::rejected},
        {413, ReportDelivery::rejected},    {422, ReportDelivery::rejected},    {401, ReportDelivery::unavailable},
        {403, ReportDelivery::unavailable}, {404, ReportDelivery::unavailable}, {429, ReportDelivery::unavailable},
        {503, ReportDelivery::unavailable}};
    for (const auto& [status, expected] : cases) {
        controller.report_status = status;
        auto sent = client.post_report({{"report_id", "r-" + std::to_string(status)}});
        EXPECT_EQ(sent.delivery, expected) << status;
        if (!sent.ok()) {
            EXPECT_NE(sent.message.find(std::to_string(status)), std::string::npos) << sent.message;
        }
    }
    controller.unreachable = 100;
    EXPECT_EQ(client.post_report({{"report_id", "down"}}).delivery, ReportDelivery::unavailable);
}

TEST(Client, SiteTokenPostureUsesTheSeedTokenAsBearer) {
    MemoryFilesystem fs;
    MemoryLogger log;
    FakeController controller;
    controller.accept_enroll = false;
    ControllerClient client(controller, fs, log, test_seed(), fast_options());
    ASSERT_TRUE(client.fetch_spec().ok());
    EXPECT_EQ(controller.requests.back().headers.at("Authorization"), "Bearer one-time-token-SECRET");
    EXPECT_FALSE(fs.exists("/var/lib/nodeform/credential"));
}

TEST(Client, UnreachableControllerFallsBackToTheLastGoodSpec) {
    MemoryFilesystem fs;
    MemoryLogger log;
    FakeController controller;
    {
        ControllerClient client(controller, fs, log, test_seed(), fast_options());
        ASSERT_TRUE(client.fetch_spec().ok());
    }
    controller.unreachable = 100;
    std::vector<std::chrono::milliseconds> sleeps;
    auto options = fast_options();
    options.sleep = [&](std::chrono::milliseconds d) { sleeps.push_back(d); };
    ControllerClient client(controller, fs, log, test_seed(), options);
    auto spec = client.fetch_spec();
    ASSERT_TRUE(spec.ok()) << spec.message();
    EXPECT_TRUE(spec->from_cache);
    EXPECT_NE(spec->warning.find("Connection refused"), std::string::npos);
    EXPECT_EQ(spec->spec, controller.spec);
    EXPECT_EQ(sleeps.size(), 4u);  // 5 attempts, 4 waits
    // Without a cache there is nothing to converge.
    MemoryFilesystem empty;
    controller.unreachable = 100;
    ControllerClient fresh(controller, empty, log, test_seed(), fast_options());
    auto none = fresh.fetch_spec();
    ASSERT_FALSE(none.ok());
    EXPECT_NE(none.message().find("no cached spec"), std::string::npos);
}

// The controller's credential rules (docs/protocol.md): one-use enrollment tokens, the current credential and the
// previous one (in its grace), a pending rotation announced on authenticated answers.
class CredentialController final : public HttpTransport {
  public:
    std::set<std::string> tokens;  // valid, unused
    std::string current, previous;
    bool rotate_pending = false;
    int enroll_requests = 0;
    int rotations = 0;
    std::vector<std::string> bearers;  // of every authenticated request, in order
    nlohmann::json spec = {{"schema_version", 1}, {"identity", "web-01"}, {"packages", nlohmann::json::array()}};

    Result<HttpResponse> send(const HttpRequest& r) override {
        if (r.path == "/v1/enroll") {
            ++enroll_requests;
            std::string token = nlohmann::json::parse(r.body)["token"];
            if (!tokens.erase(token)) return HttpResponse{401, {}, R"({"error":{"code":"invalid_token"}})"};
            current = "cred-" + std::to_string(++issued_);
            return HttpResponse{200, {}, nlohmann::json{{"credential", current}}.dump()};
        }
        auto h = r.headers.find("Authorization");
        std::string bearer = h == r.headers.end() ? "" : h->second.substr(7);
        bearers.push_back(bearer);
        if (bearer.empty() || (bearer != current && bearer != previous))
            return HttpResponse{401, {}, R"({"error":{"code":"invalid_credential"}})"};
        std::map<std::string, std::string> headers;
        if (rotate_pending && bearer == current) headers["nodeform-credential-rotate"] = "pending";
        if (r.path == "/v1/nodes/web-01/credential") {
            if (bearer == current) previous = current;
            current = "cred-" + std::to_string(++issued_);
            rotate_pending = false;
            ++rotations;
            return HttpResponse{200, {}, nlohmann::json{{"credential", current}}.dump()};
        }
        if (r.path == "/v1/spec/web-01") {
            headers["etag"] = "\"" + canonical_digest(spec) + "\"";
            auto inm = r.headers.find("If-None-Match");
            if (inm != r.headers.end() && inm->second == headers["etag"]) return HttpResponse{304, headers, ""};
            return HttpResponse{200, headers, canonical_dump(spec)};
        }
        if (r.path == "/v1/nodes/web-01/reports") return HttpResponse{201, headers, "{}"};
        return HttpResponse{404, {}, "{}"};
    }

  private:
    int issued_ = 0;
};

std::string stored_credential(MemoryFilesystem& fs) {
    auto text = fs.read("/var/lib/nodeform/credential", 4096);
    return text ? nlohmann::json::parse(*text).value("credential", "") : "";
}

// The fetching client answers a rotation request and stores the new credential (0600); the reporting client
// never rotates itself, and picks the stored credential up once its old one is refused.
TEST(Client, RotationStoresTheNewCredentialAndTheOtherClientPicksItUp) {
    MemoryFilesystem fs;
    MemoryLogger log;
    CredentialController controller;
    controller.tokens = {"one-time-token-SECRET"};
    ControllerClient fetcher(controller, fs, log, test_seed(), fast_options());
    auto report_options = fast_options();
    report_options.may_rotate = false;
    ControllerClient reporter(controller, fs, log, test_seed(), report_options);
    ASSERT_TRUE(fetcher.fetch_spec().ok());
    EXPECT_EQ(stored_credential(fs), "cred-1");
    ASSERT_TRUE(reporter.post_report({{"report_id", "a"}}).ok());

    controller.rotate_pending = true;
    ASSERT_TRUE(reporter.post_report({{"report_id", "b"}}).ok());
    EXPECT_EQ(controller.rotations, 0) << "only the fetching client rotates";
    auto spec = fetcher.fetch_spec();
    ASSERT_TRUE(spec.ok()) << spec.message();
    EXPECT_TRUE(spec->not_modified) << "the request is carried by a 304 as well";
    EXPECT_EQ(controller.rotations, 1);
    EXPECT_EQ(stored_credential(fs), "cred-2");
    EXPECT_EQ(fs.stat("/var/lib/nodeform/credential").value()->mode, 0600u);
    ASSERT_TRUE(fetcher.fetch_spec().ok());
    EXPECT_EQ(controller.bearers.back(), "cred-2");

    ASSERT_TRUE(reporter.post_report({{"report_id", "c"}}).ok());
    EXPECT_EQ(controller.bearers.back(), "cred-1") << "the old credential works during the grace period";
    controller.previous.clear();  // the grace period is over
    ASSERT_TRUE(reporter.post_report({{"report_id", "d"}}).ok());
    EXPECT_EQ(controller.bearers.back(), "cred-2");
    for (const auto& line : log.lines)
        EXPECT_EQ(line.message.find("cred-"), std::string::npos) << "credentials are never logged";
}

// A refused credential: the cached spec keeps the node converging (credential_refused says why); enrollment is
// tried again only with a seed token never used before, whether it worked or not.
TEST(Client, RefusedCredentialUsesTheCacheAndReEnrollsOnlyWithAnUnusedToken) {
    MemoryFilesystem fs;
    MemoryLogger log;
    CredentialController controller;
    controller.tokens = {"one-time-token-SECRET"};
    Seed seed = test_seed();
    auto options = fast_options();
    options.reload_seed = [&]() -> Result<Seed> { return seed; };
    ControllerClient client(controller, fs, log, test_seed(), options);
    ASSERT_TRUE(client.fetch_spec().ok());
    ASSERT_EQ(controller.enroll_requests, 1);

    controller.current.clear();  // revoked (or the controller's store restored from before the enrollment)
    auto refused = client.fetch_spec();
    ASSERT_TRUE(refused.ok()) << refused.message();
    EXPECT_TRUE(refused->from_cache);
    EXPECT_TRUE(refused->credential_refused);
    EXPECT_NE(refused->warning.find("waiting for a new enrollment token"), std::string::npos) << refused->warning;
    EXPECT_EQ(controller.enroll_requests, 1) << "the used token is not tried again";

    seed.token = "new-token-UNKNOWN";  // a new seed whose token the controller does not know
    ASSERT_TRUE(client.fetch_spec()->credential_refused);
    EXPECT_EQ(controller.enroll_requests, 2);
    ASSERT_TRUE(client.fetch_spec()->credential_refused);
    EXPECT_EQ(controller.enroll_requests, 2) << "a refused token is not tried again either";

    seed.token = "new-token-GOOD";
    controller.tokens.insert(seed.token);
    auto again = client.fetch_spec();
    ASSERT_TRUE(again.ok()) << again.message();
    EXPECT_TRUE(again->not_modified) << "the controller answered (304: the cached spec is current)";
    EXPECT_FALSE(again->credential_refused);
    EXPECT_EQ(controller.enroll_requests, 3);
    EXPECT_EQ(stored_credential(fs), controller.current);
    // The used tokens survive a restart (by hash only).
    auto record = *fs.read("/var/lib/nodeform/credential", 4096);
    EXPECT_EQ(record.find("new-token-GOOD"), std::string::npos);
    EXPECT_NE(record.find(sha256_hex("new-token-GOOD")), std::string::npos);
}

// A node whose state was wiped (no stored credential, the seed's token used up) starts over with a new seed.
TEST(Client, AUsedUpSeedTokenIsReplacedByANewSeed) {
    MemoryFilesystem fs;
    MemoryLogger log;
    CredentialController controller;  // knows no token: the seed's was used by the node's earlier life
    Seed seed = test_seed();
    auto options = fast_options();
    options.reload_seed = [&]() -> Result<Seed> { return seed; };
    ControllerClient client(controller, fs, log, test_seed(), options);
    EXPECT_FALSE(client.fetch_spec().ok()) << "refused, and no cached spec";
    seed.token = "fresh-token-0123456789";
    controller.tokens.insert(seed.token);
    auto spec = client.fetch_spec();
    ASSERT_TRUE(spec.ok()) << spec.message();
    EXPECT_FALSE(spec->from_cache);
    EXPECT_EQ(stored_credential(fs), controller.current);
}

TEST(Client, RefusesASpecWhoseDigestDoesNotMatchItsEtag) {
    MemoryFilesystem fs;
    MemoryLogger log;
    class Liar final : public HttpTransport {
      public:
        Result<HttpResponse> send(const HttpRequest& r) override {
            if (r.path == "/v1/enroll") return HttpResponse{401, {}, "{}"};
            return HttpResponse{200, {{"etag", "\"sha256:0000\""}}, R"({"identity":"web-01","schema_version":1})"};
        }
    } liar;
    ControllerClient client(liar, fs, log, test_seed(), fast_options());
    auto spec = client.fetch_spec();
    ASSERT_FALSE(spec.ok());
    EXPECT_NE(spec.message().find("does not match its ETag"), std::string::npos);
}

// What the controller sends is checked against the resolved-spec schema before it is converged or cached, and
// within the document limits: a wrong-typed collection, an unknown key, a missing identity, deep nesting.
TEST(Client, RefusesASpecThatIsNotAResolvedSpec) {
    std::string deep = std::string(5000, '[') + std::string(5000, ']');
    for (const auto& [body, expected] : std::vector<std::pair<std::string, std::string>>{
             {R"({"identity":"web-01","schema_version":1,"files":"notalist"})", "files: expected list"},
             {R"({"identity":"web-01","schema_version":1,"packages":[{"name":"x","versoin":"1"}]})",
              "unknown key 'versoin'"},
             {R"({"identity":"web-01","schema_version":2})", "schema_version"},
             {R"({"schema_version":1})", "missing required key 'identity'"},
             {R"({"identity":"web-01","schema_version":1,"users":[{"name":"a","uid":4294967295}]})", "uid"},
             {R"({"identity":"web-01","schema_version":1,"x":)" + deep + "}", "nested deeper than 128 levels"}}) {
        MemoryFilesystem fs;
        MemoryLogger log;
        class Sender final : public HttpTransport {
          public:
            explicit Sender(std::string body) : body_(std::move(body)) {}
            Result<HttpResponse> send(const HttpRequest& r) override {
                if (r.path == "/v1/enroll") return HttpResponse{401, {}, "{}"};
                return HttpResponse{200, {}, body_};
            }

          private:
            std::string body_;
        } sender(body);
        ControllerClient client(sender, fs, log, test_seed(), fast_options());
        auto spec = client.fetch_spec();
        ASSERT_FALSE(spec.ok()) << body;
        EXPECT_NE(spec.message().find(expected), std::string::npos) << spec.message();
        EXPECT_FALSE(fs.stat("/var/lib/nodeform/spec.json").value().has_value()) << "an invalid spec was cached";
    }
}

// A --spec FILE that is not a resolved spec this agent understands is refused as documented (apply: 3, plan: 1),
// whatever is wrong with it, and nothing is converged.
TEST(Cli, SpecFileProblemsExitWithTheConfigurationCode) {
    test::TempDir dir;
    std::string deep = std::string(5000, '[') + std::string(5000, ']');
    int n = 0;
    for (const std::string& text :
         {std::string(R"({"schema_version":2,"identity":"n"})"), std::string(R"({"schema_version":1})"),
          std::string(R"({"schema_version":1,"identity":"n","files":"notalist"})"),
          std::string(R"({"schema_version":1,"identity":"n","servicez":[]})"),
          R"({"schema_version":1,"identity":"n","x":)" + deep + "}", std::string("[1]"), std::string("{")}) {
        std::string spec = dir.path() + "/spec-" + std::to_string(n++) + ".json";
        std::ofstream(spec) << text;
        for (const char* command : {"apply", "plan"}) {
            std::ostringstream out, err;
            int code = run_cli({command, "--spec", spec, "--root", dir.path()}, {out, err});
            // apply: 3 (configuration); plan documents 1 for an unusable spec
            int expected = std::string(command) == "apply" ? exit_code::config : exit_code::failure;
            EXPECT_EQ(code, expected) << command << " " << text.substr(0, 80) << ": " << err.str();
            EXPECT_NE(err.str().find(spec), std::string::npos) << err.str();
        }
    }
    EXPECT_FALSE(std::filesystem::exists(dir.path() + "/var/lib/nodeform/last-run.json"));
}

TEST(Backoff, FullJitterWithinExponentialBounds) {
    BackoffPolicy p;
    p.initial = std::chrono::milliseconds(1000);
    p.max = std::chrono::milliseconds(8000);
    EXPECT_EQ(backoff_delay(p, 0, 0).count(), 0);
    EXPECT_EQ(backoff_delay(p, 0, 1000).count(), 1000);
    EXPECT_EQ(backoff_delay(p, 0, 1001).count(), 0);
    EXPECT_EQ(backoff_delay(p, 2, 4000).count(), 4000);
    EXPECT_EQ(backoff_delay(p, 10, ~std::uint64_t{0} - 5).count() <= 8000, true);
    EXPECT_EQ(backoff_delay(p, 60, 8000).count(), 8000);  // no overflow for large attempts
    for (std::uint64_t r = 0; r < 20000; r += 777)
        EXPECT_LE(backoff_delay(p, 3, r).count(), 8000);
}

}  // namespace
}  // namespace nodeform::agent
