#include "nodeform/agent/controller_client.hpp"
#include "nodeform/agent/validate.hpp"
#include "nodeform/json_limits.hpp"

#include <algorithm>
#include <cctype>
#include <thread>

#include "nodeform/canonical_json.hpp"

namespace nodeform::agent {
namespace {

const char* kSeedYaml = "/etc/nodeform/seed.yaml";
const char* kSmbiosSerial = "/sys/class/dmi/id/product_serial";

Result<Seed> parse_seed_text(const std::string& text, const std::string& source) {
    std::size_t i = 0;
    while (i < text.size() && (text[i] == ' ' || text[i] == '\n' || text[i] == '\t' || text[i] == '\r'))
        ++i;
    if (text.compare(i, 4, "nf1:") == 0) {
        auto seed = decode_seed_compact(std::string_view(text).substr(i));
        if (!seed) return make_error(source + ": " + seed.message());
        return seed;
    }
    return parse_seed_yaml(text, source);
}

std::string error_text(const HttpResponse& response) {
    auto parsed = parse_json_bounded(response.body, {response.body.size()});
    const nlohmann::json j = parsed ? std::move(*parsed) : nlohmann::json();
    if (j.is_object() && j.contains("error") && j["error"].is_object()) {
        const auto& e = j["error"];
        std::string code = e.contains("code") && e["code"].is_string() ? e["code"].get<std::string>() : "";
        std::string message = e.contains("message") && e["message"].is_string() ? e["message"].get<std::string>() : "";
        return "HTTP " + std::to_string(response.status) + (code.empty() ? "" : " " + code) +
               (message.empty() ? "" : ": " + message);
    }
    return "HTTP " + std::to_string(response.status);
}

// Nodeform-Apply-Request: 1-128 of [A-Za-z0-9._-]; anything else is ignored (and logged).
std::string apply_request_of(const HttpResponse& response, Logger& logger) {
    auto header = response.headers.find("nodeform-apply-request");
    if (header == response.headers.end() || header->second.empty()) return "";
    const std::string& v = header->second;
    bool ok = v.size() <= 128 && std::all_of(v.begin(), v.end(), [](char c) {
                  return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
              });
    if (!ok) {
        logger.warning("ignoring a malformed Nodeform-Apply-Request header (expected 1-128 of A-Za-z0-9._-)");
        return "";
    }
    return v;
}

std::string strip_quotes(std::string etag) {
    if (etag.rfind("W/", 0) == 0) etag = etag.substr(2);
    if (etag.size() >= 2 && etag.front() == '"' && etag.back() == '"') etag = etag.substr(1, etag.size() - 2);
    return etag;
}

}  // namespace

Result<LoadedSeed> load_seed(Filesystem& fs, const std::optional<std::string>& seed_file) {
    if (seed_file) {
        auto text = fs.read(*seed_file, 64 * 1024);
        if (!text) return make_error("cannot read the seed: " + text.message());
        auto seed = parse_seed_text(*text, *seed_file);
        if (!seed) return seed.error();
        return LoadedSeed{*seed, "--seed " + *seed_file};
    }
    auto yaml = fs.stat(kSeedYaml);
    if (yaml && yaml->has_value()) {
        auto text = fs.read(kSeedYaml, 64 * 1024);
        if (!text) return make_error("cannot read the seed: " + text.message());
        auto seed = parse_seed_text(*text, kSeedYaml);
        if (!seed) return seed.error();
        return LoadedSeed{*seed, kSeedYaml};
    }
    auto serial = fs.read(kSmbiosSerial, 4096);
    if (serial) {
        std::string text = *serial;
        while (!text.empty() && (text.back() == '\n' || text.back() == ' '))
            text.pop_back();
        if (text.rfind("nf1:", 0) == 0) {
            auto seed = decode_seed_compact(text);
            if (!seed) return make_error(std::string(kSmbiosSerial) + ": " + seed.message());
            return LoadedSeed{*seed, "SMBIOS serial"};
        }
    }
    return make_error(
        std::string("no identity seed found: looked for --seed FILE, ") + kSeedYaml + " and an nf1: value in " +
        kSmbiosSerial + (serial ? "" : " (unreadable: " + serial.message() + ")") +
        "; write a seed (nodeform-agent seed encode) or pass --spec FILE to converge without a controller");
}

std::chrono::milliseconds backoff_delay(const BackoffPolicy& policy, int attempt, std::uint64_t random) {
    long long cap = policy.max.count();
    long long base = std::max<long long>(1, policy.initial.count());
    long long ceiling = base;
    for (int i = 0; i < attempt && ceiling < cap; ++i)
        ceiling *= 2;
    ceiling = std::min(ceiling, cap);
    if (ceiling <= 0) return std::chrono::milliseconds(0);
    return std::chrono::milliseconds(static_cast<long long>(random % static_cast<std::uint64_t>(ceiling + 1)));
}

HttpClientOptions controller_http_options(const Seed& seed) {
    HttpClientOptions options;
    options.base_url = seed.controller_url;
    options.tls.pin_sha256 = seed.ca_fingerprint;
    return options;
}

ControllerClient::ControllerClient(HttpTransport& http, Filesystem& fs, Logger& logger, Seed seed,
                                   ClientOptions options)
    : http_(http), fs_(fs), logger_(logger), seed_(std::move(seed)), options_(std::move(options)) {
    if (!options_.sleep) options_.sleep = [](std::chrono::milliseconds d) { std::this_thread::sleep_for(d); };
}

std::map<std::string, std::string> ControllerClient::auth_headers() {
    if (!credential_.empty()) return {{"Authorization", "Bearer " + credential_}};
    if (use_seed_token_ && !seed_.token.empty()) return {{"Authorization", "Bearer " + seed_.token}};
    return {};
}

Result<HttpResponse> ControllerClient::send_with_retry(const HttpRequest& request, bool retry_5xx) {
    std::string last;
    const int attempts = std::max(1, options_.backoff.attempts);
    for (int attempt = 0; attempt < attempts; ++attempt) {
        if (attempt > 0)
            options_.sleep(
                backoff_delay(options_.backoff, attempt - 1, options_.random != nullptr ? options_.random->next() : 0));
        auto response = http_.send(request);
        if (response && !(retry_5xx && response->status >= 500)) return response;
        last = response ? error_text(*response) : response.message();
        logger_.warning("controller request failed, will retry",
                        {{"PATH", request.path}, {"ERROR", last}, {"ATTEMPT", std::to_string(attempt + 1)}});
    }
    return make_error("the controller at " + seed_.controller_url + " did not answer " + request.method + " " +
                      request.path + " after " + std::to_string(attempts) + " attempts: " + last);
}

bool ControllerClient::load_credential() {
    const std::string path = options_.state_dir + "/credential";
    auto stored = fs_.read(path, 64 * 1024);
    if (!stored) return false;
    auto parsed = parse_json_bounded(*stored, {stored->size()});
    const nlohmann::json j = parsed ? std::move(*parsed) : nlohmann::json();
    if (!j.is_object() || j.value("identity", "") != seed_.identity || !j.contains("credential") ||
        !j["credential"].is_string()) {
        logger_.warning("ignoring " + fs_.host_path(path) + ": it does not hold a credential for " + seed_.identity);
        return false;
    }
    credential_ = j["credential"].get<std::string>();
    used_tokens_.clear();
    if (j.contains("used_tokens") && j["used_tokens"].is_array())
        for (const auto& t : j["used_tokens"])
            if (t.is_string()) used_tokens_.push_back(t.get<std::string>());
    return true;
}

Status ControllerClient::store_credential() {
    const std::string path = options_.state_dir + "/credential";
    while (used_tokens_.size() > 32)
        used_tokens_.erase(used_tokens_.begin());
    nlohmann::json record = {{"identity", seed_.identity}, {"credential", credential_}, {"used_tokens", used_tokens_}};
    if (auto st = make_directories(fs_, options_.state_dir, 0755); !st) return st;
    return fs_.write_atomic(path, record.dump() + "\n", {0600, 0, 0});
}

Result<int> ControllerClient::enroll_with(const std::string& token) {
    HttpRequest request;
    request.method = "POST";
    request.path = "/v1/enroll";
    request.content_type = "application/json";
    request.body = nlohmann::json({{"identity", seed_.identity}, {"token", token}}).dump();
    auto response = send_with_retry(request, true);
    if (!response) return response.error();
    const std::string token_hash = sha256_hex(token);
    const bool answered = response->status < 500 && response->status != 429;  // else the token may still work
    if (answered && std::find(used_tokens_.begin(), used_tokens_.end(), token_hash) == used_tokens_.end())
        used_tokens_.push_back(token_hash);
    if (response->status != 200) return response->status;
    auto parsed = parse_json_bounded(response->body, {response->body.size()});
    const nlohmann::json j = parsed ? std::move(*parsed) : nlohmann::json();
    if (!j.is_object() || !j.contains("credential") || !j["credential"].is_string() ||
        j["credential"].get<std::string>().empty()) {
        return make_error("the controller's enrollment answer has no credential");
    }
    credential_ = j["credential"].get<std::string>();
    if (auto st = store_credential(); !st) {
        return make_error(
            "enrolled, but cannot store the node credential (the one-time token is now used up; "
            "re-seed the node after fixing this): " +
            st.message());
    }
    logger_.notice("enrolled with the controller", {{"IDENTITY", seed_.identity}});
    return 200;
}

Status ControllerClient::ensure_enrolled() {
    if (!credential_.empty() || use_seed_token_) return Ok{};
    if (load_credential()) return Ok{};
    auto status = enroll_with(seed_.token);
    if (!status) return status.error();
    if (*status == 200) return Ok{};
    if (*status == 401 || *status == 404 || *status == 405 || *status == 409) {
        // Not an enrollment token, or (409) a posture without enrollment: site token or network auth.
        use_seed_token_ = true;
        logger_.info("the seed token is not an enrollment token; using it as the site token");
        return Ok{};
    }
    return make_error("enrollment failed: HTTP " + std::to_string(*status));
}

bool ControllerClient::try_reenroll() {
    if (options_.reload_seed) {
        auto reloaded = options_.reload_seed();
        if (!reloaded) {
            logger_.warning("cannot read the seed again: " + reloaded.message());
        } else if (reloaded->identity != seed_.identity) {
            logger_.error("the seed now names '" + reloaded->identity + "', not " + seed_.identity +
                          "; a node does not change its identity without a reinstall");
        } else {
            seed_.token = reloaded->token;
        }
    }
    if (seed_.token.empty()) return false;
    const std::string token_hash = sha256_hex(seed_.token);
    if (std::find(used_tokens_.begin(), used_tokens_.end(), token_hash) != used_tokens_.end()) return false;
    logger_.notice("the node credential was refused; enrolling again with the seed's new enrollment token",
                   {{"IDENTITY", seed_.identity}});
    const std::string refused = credential_;
    credential_.clear();
    auto status = enroll_with(seed_.token);
    if (status && *status == 200) return true;
    credential_ = refused;  // keep the record (and the used tokens) until a token works
    if (auto st = store_credential(); !st) logger_.warning("cannot store the used enrollment tokens: " + st.message());
    logger_.error("enrolling again failed: " + (status ? "HTTP " + std::to_string(*status) : status.message()) +
                  "; waiting for another new enrollment token");
    return false;
}

Result<HttpResponse> ControllerClient::send_authenticated(HttpRequest request) {
    request.headers.erase("Authorization");
    for (auto& [name, value] : auth_headers())
        request.headers[name] = value;
    auto response = send_with_retry(request, true);
    if (response && response->status == 401 && !credential_.empty()) {
        const std::string before = credential_;
        if (load_credential() && credential_ != before) {
            logger_.info("the stored node credential changed (rotated or enrolled again); using it");
            request.headers["Authorization"] = "Bearer " + credential_;
            response = send_with_retry(request, true);
        }
    }
    if (response && (response->status < 300 || response->status == 304) && options_.may_rotate && !rotating_ &&
        response->headers.count("nodeform-credential-rotate")) {
        if (auto st = rotate_credential(); !st)
            logger_.warning("cannot rotate the node credential yet (the current one keeps working): " + st.message());
    }
    return response;
}

Status ControllerClient::rotate_credential() {
    if (credential_.empty()) return make_error("no node credential to rotate");
    rotating_ = true;
    HttpRequest request;
    request.method = "POST";
    request.path = "/v1/nodes/" + seed_.identity + "/credential";
    auto response = send_authenticated(request);
    rotating_ = false;
    if (!response) return response.error();
    if (response->status != 200) return make_error(error_text(*response));
    auto parsed = parse_json_bounded(response->body, {response->body.size()});
    const nlohmann::json j = parsed ? std::move(*parsed) : nlohmann::json();
    if (!j.is_object() || !j.contains("credential") || !j["credential"].is_string() ||
        j["credential"].get<std::string>().empty())
        return make_error("the controller's rotation answer has no credential");
    const std::string previous = credential_;
    credential_ = j["credential"].get<std::string>();
    if (auto st = store_credential(); !st) {
        // The old credential works for the grace period; the next request asks again (still "pending").
        credential_ = previous;
        return make_error("cannot store the new credential: " + st.message());
    }
    logger_.notice("node credential rotated", {{"IDENTITY", seed_.identity}});
    return Ok{};
}

Result<std::optional<FetchedSpec>> ControllerClient::cached_spec() {
    auto text = fs_.read(options_.state_dir + "/spec.json", 64 * 1024 * 1024);
    if (!text) {
        auto st = fs_.stat(options_.state_dir + "/spec.json");
        if (st && !st->has_value()) return std::optional<FetchedSpec>{};
        return make_error("cannot read the cached spec: " + text.message());
    }
    auto parsed = parse_json_bounded(*text, {text->size()});
    if (!parsed || !parsed->is_object())
        return make_error("the cached spec " + fs_.host_path(options_.state_dir + "/spec.json") +
                          " is not a JSON object" + (parsed ? "" : ": " + parsed.message()));
    nlohmann::json& j = *parsed;
    FetchedSpec cached;
    cached.spec = j;
    cached.etag = canonical_digest(j);
    cached.from_cache = true;
    return std::optional<FetchedSpec>(cached);
}

Result<FetchedSpec> ControllerClient::fetch_spec() {
    auto cached = cached_spec();
    std::optional<FetchedSpec> have = cached ? *cached : std::nullopt;
    auto fallback = [&](const std::string& why) -> Result<FetchedSpec> {
        if (!have) return make_error(why + "; no cached spec to fall back on");
        FetchedSpec spec = *have;
        spec.warning = why + "; converging the last good spec (" + spec.etag + ")";
        logger_.warning(spec.warning);
        return spec;
    };
    if (auto st = ensure_enrolled(); !st) return fallback(st.message());
    HttpRequest request;
    request.method = "GET";
    request.path = "/v1/spec/" + seed_.identity;
    if (have) request.headers["If-None-Match"] = "\"" + have->etag + "\"";
    auto response = send_authenticated(request);
    if (response && response->status == 401 && !credential_.empty() && try_reenroll())
        response = send_authenticated(request);
    if (response && response->status == 401 && use_seed_token_ && options_.reload_seed) {
        // The seed token was refused as a site token: a new seed (a new enrollment or site token) starts over.
        auto again = options_.reload_seed();
        if (again && again->identity == seed_.identity && again->token != seed_.token) {
            seed_.token = again->token;
            use_seed_token_ = false;
            if (ensure_enrolled()) response = send_authenticated(request);
        }
    }
    if (!response) return fallback(response.message());
    if (response->status == 304 && have) {
        FetchedSpec spec = *have;
        spec.not_modified = true;
        spec.apply_request = apply_request_of(*response, logger_);
        return spec;
    }
    if (response->status != 200) {
        std::string hint;
        bool refused = response->status == 401 && !credential_.empty();
        if (refused)
            hint =
                " (the node credential was refused: revoked, expired, or the controller's store was restored; "
                "waiting for a new enrollment token in a new seed file or the SMBIOS seed)";
        else if (response->status == 401)
            hint = " (the seed token was refused)";
        if (response->status == 403) hint = " (this node may not read that spec)";
        if (response->status == 404) hint = " (the controller has no node " + seed_.identity + ")";
        auto out = fallback("cannot fetch the spec: " + error_text(*response) + hint);
        if (out) out->credential_refused = refused;
        return out;
    }
    auto parsed = parse_json_bounded(response->body, {response->body.size()});
    if (!parsed) return fallback("the controller sent a spec that is " + parsed.message());
    nlohmann::json& j = *parsed;
    if (!j.is_object()) return fallback("the controller sent a spec that is not a JSON object");
    if (auto st = check_spec_schema(j, "the controller's spec"); !st) return fallback(st.message());
    FetchedSpec spec;
    spec.spec = j;
    spec.etag = canonical_digest(j);
    auto header = response->headers.find("etag");
    if (header != response->headers.end() && strip_quotes(header->second) != spec.etag) {
        return fallback("the spec's digest " + spec.etag + " does not match its ETag " + header->second);
    }
    spec.apply_request = apply_request_of(*response, logger_);
    if (auto st = make_directories(fs_, options_.state_dir, 0755); !st) return st.error();
    // The spec carries secrets: root-only.
    if (auto st = fs_.write_atomic(options_.state_dir + "/spec.json", canonical_dump(j), {0600, 0, 0}); !st) {
        logger_.warning("cannot cache the spec: " + st.message());
    }
    return spec;
}

ReportPostResult ControllerClient::post_report(const nlohmann::json& report) {
    if (auto st = ensure_enrolled(); !st) return {ReportDelivery::unavailable, st.message()};
    HttpRequest request;
    request.method = "POST";
    request.path = "/v1/nodes/" + seed_.identity + "/reports";
    request.content_type = "application/json";
    request.body = report.dump();
    auto response = send_authenticated(request);
    if (!response) return {ReportDelivery::unavailable, response.message()};
    auto delivery = report_delivery_for_status(response->status);
    if (delivery == ReportDelivery::stored) return {delivery, ""};
    return {delivery, "the controller refused the report: " + error_text(*response)};
}

}  // namespace nodeform::agent
