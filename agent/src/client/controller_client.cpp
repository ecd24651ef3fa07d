#include "nodeform/agent/controller_client.hpp"
#include "nodeform/agent/validate.hpp"
#include "nodeform/json_limits.hpp"

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

Status ControllerClient::ensure_enrolled() {
    if (!credential_.empty() || use_seed_token_) return Ok{};
    const std::string path = options_.state_dir + "/credential";
    auto stored = fs_.read(path, 64 * 1024);
    if (stored) {
        auto parsed = parse_json_bounded(*stored, {stored->size()});
        const nlohmann::json j = parsed ? std::move(*parsed) : nlohmann::json();
        if (j.is_object() && j.value("identity", "") == seed_.identity && j.contains("credential") &&
            j["credential"].is_string()) {
            credential_ = j["credential"].get<std::string>();
            return Ok{};
        }
        logger_.warning("ignoring " + fs_.host_path(path) + ": it does not hold a credential for " + seed_.identity);
    }
    HttpRequest request;
    request.method = "POST";
    request.path = "/v1/enroll";
    request.content_type = "application/json";
    request.body = nlohmann::json({{"identity", seed_.identity}, {"token", seed_.token}}).dump();
    auto response = send_with_retry(request, true);
    if (!response) return response.error();
    if (response->status == 200) {
        auto parsed = parse_json_bounded(response->body, {response->body.size()});
        const nlohmann::json j = parsed ? std::move(*parsed) : nlohmann::json();
        if (!j.is_object() || !j.contains("credential") || !j["credential"].is_string() ||
            j["credential"].get<std::string>().empty()) {
            return make_error("the controller's enrollment answer has no credential");
        }
        credential_ = j["credential"].get<std::string>();
        nlohmann::json record = {{"identity", seed_.identity}, {"credential", credential_}};
        if (auto st = make_directories(fs_, options_.state_dir, 0755); !st) return st;
        if (auto st = fs_.write_atomic(path, record.dump() + "\n", {0600, 0, 0}); !st) {
            return make_error(
                "enrolled, but cannot store the node credential (the one-time token is now used up; "
                "re-seed the node after fixing this): " +
                st.message());
        }
        logger_.notice("enrolled with the controller", {{"IDENTITY", seed_.identity}});
        return Ok{};
    }
    if (response->status == 401 || response->status == 404 || response->status == 405 || response->status == 409) {
        // Not an enrollment token, or (409) a posture without enrollment: site token or network auth.
        use_seed_token_ = true;
        logger_.info("the seed token is not an enrollment token; using it as the site token");
        return Ok{};
    }
    return make_error("enrollment failed: " + error_text(*response));
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
    request.headers = auth_headers();
    if (have) request.headers["If-None-Match"] = "\"" + have->etag + "\"";
    auto response = send_with_retry(request, true);
    if (!response) return fallback(response.message());
    if (response->status == 304 && have) {
        FetchedSpec spec = *have;
        spec.not_modified = true;
        return spec;
    }
    if (response->status != 200) {
        std::string hint;
        if (response->status == 401) hint = " (the node credential was refused; re-seed or re-enroll the node)";
        if (response->status == 403) hint = " (this node may not read that spec)";
        if (response->status == 404) hint = " (the controller has no node " + seed_.identity + ")";
        return make_error("cannot fetch the spec: " + error_text(*response) + hint);
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
    request.headers = auth_headers();
    request.content_type = "application/json";
    request.body = report.dump();
    auto response = send_with_retry(request, true);
    if (!response) return {ReportDelivery::unavailable, response.message()};
    auto delivery = report_delivery_for_status(response->status);
    if (delivery == ReportDelivery::stored) return {delivery, ""};
    return {delivery, "the controller refused the report: " + error_text(*response)};
}

}  // namespace nodeform::agent
