#pragma once
// Getting the spec: the identity seed (docs/seed.md), enrollment, spec fetch with ETag and an on-disk
// cache of the last good spec, report upload, and bounded exponential backoff with full jitter.
// HTTP goes through HttpTransport (shared/include/nodeform/http.hpp); files through Filesystem.
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "nodeform/agent/report_delivery.hpp"
#include "nodeform/agent/system/filesystem.hpp"
#include "nodeform/http.hpp"
#include "nodeform/log.hpp"
#include "nodeform/random.hpp"
#include "nodeform/result.hpp"
#include "nodeform/seed.hpp"

namespace nodeform::agent {

struct LoadedSeed {
    Seed seed;
    std::string source;  // "--seed FILE", "/etc/nodeform/seed.yaml" or "SMBIOS serial"
};

// Sources in order: seed_file (a path read through fs; YAML or the compact nf1: form), /etc/nodeform/seed.yaml,
// /sys/class/dmi/id/product_serial (compact form). A source that exists but is malformed is an error
// (never silently skipped); Err lists the places looked at when none exists.
Result<LoadedSeed> load_seed(Filesystem& fs, const std::optional<std::string>& seed_file);

// Bounded exponential backoff with full jitter: attempt n (0-based) waits uniform[0, min(max, initial*2^n)].
struct BackoffPolicy {
    std::chrono::milliseconds initial{std::chrono::seconds(1)};
    std::chrono::milliseconds max{std::chrono::seconds(60)};
    int attempts = 5;  // total tries, including the first
};
// random is any uniformly distributed 64-bit value.
std::chrono::milliseconds backoff_delay(const BackoffPolicy& policy, int attempt, std::uint64_t random);

struct ClientOptions {
    std::string state_dir = "/var/lib/nodeform";  // inside fs: credential (0600), spec.json (0600, the last good spec)
    BackoffPolicy backoff;
    std::function<void(std::chrono::milliseconds)> sleep;  // empty: std::this_thread::sleep_for
    Random* random = nullptr;  // the backoff's full jitter (nodeform/random.hpp); null: no wait (tests)
    // Reads the seed again (a new seed file, or the SMBIOS seed after a re-provision) when the controller refuses
    // the node credential; empty: the seed given to the constructor is all there is.
    std::function<Result<Seed>()> reload_seed;
    // Answer Nodeform-Credential-Rotate by fetching a new credential. One client per agent does (the one that
    // fetches specs); others pick the stored credential up after a 401.
    bool may_rotate = true;
};

struct FetchedSpec {
    nlohmann::json spec;
    std::string etag;                 // "sha256:<hex>" (quotes stripped)
    bool from_cache = false;          // the controller was unreachable (or said 304) and the cached spec is used
    bool not_modified = false;        // the controller answered 304
    std::string warning;              // why the cache was used, when it was
    bool credential_refused = false;  // 401 on the node credential and no unused enrollment token yet
    std::string apply_request;        // Nodeform-Apply-Request of a 200/304 answer (docs/protocol.md); empty: none
};

class ControllerClient {
  public:
    ControllerClient(HttpTransport& http, Filesystem& fs, Logger& logger, Seed seed, ClientOptions options = {});

    // node_token posture: POST /v1/enroll once, store the credential 0600 in STATE_DIR/credential; the seed
    // token is never sent again once a credential exists. When the controller rejects the token as an
    // enrollment token, the seed token is used as the site token (site_token posture). Retries with backoff.
    Status ensure_enrolled();
    // GET /v1/spec/{identity} with If-None-Match; caches a new spec atomically. Falls back to the cached
    // spec (from_cache + warning) when the controller cannot be reached after the retries or refuses
    // (401/403/404: not retried); Err when there is no cached spec. A refused credential re-enrolls with the
    // seed's token when that token was never used before (reload_seed); else credential_refused is set.
    // Answers carrying Nodeform-Credential-Rotate: pending fetch a new credential first (rotate_credential).
    Result<FetchedSpec> fetch_spec();
    // POST /v1/nodes/{identity}/credential with the current credential; stores the new one atomically.
    Status rotate_credential();
    // POST /v1/nodes/{identity}/reports; retries transport errors and 5xx with backoff.
    ReportPostResult post_report(const nlohmann::json& report);
    // The cached last good spec, if any.
    Result<std::optional<FetchedSpec>> cached_spec();

  private:
    std::map<std::string, std::string> auth_headers();
    Result<HttpResponse> send_with_retry(const HttpRequest& request, bool retry_5xx);
    // send_with_retry with the credential; a 401 re-reads the stored credential (rotated or re-enrolled by the
    // other client of this agent) and tries once more with it when it changed. Honours a rotation request.
    Result<HttpResponse> send_authenticated(HttpRequest request);
    // The stored credential record (credential + the hashes of the enrollment tokens used); false: none.
    bool load_credential();
    Status store_credential();
    // POST /v1/enroll with token; the token's hash is remembered as used whatever the outcome.
    Result<int> enroll_with(const std::string& token);
    // After a 401 on the credential: enroll again with the (reloaded) seed's token if it was never used.
    bool try_reenroll();

    HttpTransport& http_;
    Filesystem& fs_;
    Logger& logger_;
    Seed seed_;
    ClientOptions options_;
    std::string credential_;                // loaded or enrolled; empty before
    std::vector<std::string> used_tokens_;  // sha256 hex of enrollment tokens already tried (newest last)
    bool use_seed_token_ = false;           // site_token posture detected
    bool rotating_ = false;                 // inside rotate_credential
};

// TLS options for the controller from a seed: pin = the seed's CA fingerprint.
HttpClientOptions controller_http_options(const Seed& seed);

}  // namespace nodeform::agent
