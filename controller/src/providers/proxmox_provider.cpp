// Proxmox VE API client and Provider: token auth, form bodies, task polling, safe retries.
#include <algorithm>
#include <mutex>
#include <thread>

#include "nodeform/controller/providers/proxmox.hpp"
#include "nodeform/json_limits.hpp"
#include "nodeform/process.hpp"

namespace nodeform::controller::providers {
namespace {

using json = nlohmann::json;
using Params = std::vector<std::pair<std::string, std::string>>;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

constexpr const char* kApiBase = "/api2/json";

struct ApiResponse {
    int status = 0;        // 0 = transport failure
    json data;             // the "data" member
    std::string message;   // Proxmox's message when status is not 2xx, or the transport error
    bool refused = false;  // the endpoint's certificate was refused (transport error kCertificateRefused)
    bool ok() const { return status >= 200 && status < 300; }
};

bool contains(const std::string& text, const char* needle) {
    return text.find(needle) != std::string::npos;
}

// Proxmox's message (an API error or a task's exit status) as a failure kind.
FailureKind classify_message(const std::string& m) {
    if (contains(m, "got timeout") || contains(m, "is locked")) return FailureKind::locked;
    if (contains(m, "already exists")) return FailureKind::already_exists;
    if (contains(m, "already running")) return FailureKind::already_running;
    // qemu-server: "QEMU guest agent is not running" (agent not up) vs "VM N is not running" (VM stopped).
    if (contains(m, "guest agent is not running")) return FailureKind::agent_not_running;
    if (contains(m, "is not running")) return FailureKind::vm_not_running;
    if (contains(m, "file changed by other user") || contains(m, "checksum missmatch") ||
        contains(m, "checksum mismatch")) {
        return FailureKind::conflict;
    }
    if (contains(m, "does not exist")) return FailureKind::not_found;
    return FailureKind::other;
}

FailureKind classify(const ApiResponse& r) {
    if (r.refused) return FailureKind::untrusted;
    if (r.status == 0) return FailureKind::other;
    FailureKind kind = classify_message(r.message);
    return kind == FailureKind::other && r.status == 404 ? FailureKind::not_found : kind;
}

// Retrying is safe when Proxmox certainly did nothing (lock not acquired, no worker started) or the
// request only reads.
bool retryable(const ApiResponse& r, bool idempotent) {
    if (r.refused) return false;  // a refused certificate stays refused
    if (contains(r.message, "got timeout") && contains(r.message, "lock")) return true;
    if (contains(r.message, "got no worker upid")) return true;
    // Proxmox answers 500 for facts too ("does not exist", "already exists", "not running"): those are final.
    if (classify(r) != FailureKind::other) return false;
    if (idempotent && (r.status == 0 || r.status >= 500)) return true;
    return false;
}

std::string trim_message(std::string m) {
    while (!m.empty() && (m.back() == '\n' || m.back() == ' ' || m.back() == '\r'))
        m.pop_back();
    if (m.size() > 2000) m = m.substr(0, 2000) + "...";
    return m;
}

class ProxmoxProvider final : public Provider {
  public:
    ProxmoxProvider(std::unique_ptr<HttpTransport> transport, ProxmoxOptions options)
        : transport_(std::move(transport)), options_(std::move(options)) {
        if (!options_.sleep) options_.sleep = [](milliseconds d) { std::this_thread::sleep_for(d); };
        if (!options_.token_secret.empty()) secrets_.push_back(options_.token_secret);
    }

    void add_secret(const std::string& secret) override {
        if (secret.empty()) return;
        std::lock_guard<std::mutex> lock(mutex_);
        secrets_.push_back(secret);
    }

    std::vector<ApiCall> take_calls() override {
        std::lock_guard<std::mutex> lock(mutex_);
        std::vector<ApiCall> out;
        out.swap(calls_);
        return out;
    }

    Outcome<std::vector<std::string>> online_hosts() override {
        auto r = call("GET", "/nodes", {}, true);
        if (!r.ok()) return fail<std::vector<std::string>>(r, "listing cluster nodes");
        std::vector<std::string> hosts;
        if (r.data.is_array()) {
            for (const auto& n : r.data) {
                if (n.is_object() && n.value("status", "") == "online" && n.contains("node") && n["node"].is_string()) {
                    hosts.push_back(n["node"].get<std::string>());
                }
            }
        }
        return Outcome<std::vector<std::string>>::success(hosts);
    }

    Outcome<bool> vmid_free(std::int64_t vmid) override {
        auto r = call("GET", "/cluster/nextid?vmid=" + std::to_string(vmid), {}, true);
        if (r.ok()) return Outcome<bool>::success(true);
        if (r.status == 400 && contains(r.message, "already exists")) return Outcome<bool>::success(false);
        return fail<bool>(r, "checking whether VMID " + std::to_string(vmid) + " is free");
    }

    Outcome<std::vector<std::int64_t>> used_vmids() override {
        auto r = call("GET", "/cluster/resources?type=vm", {}, true);
        if (!r.ok()) return fail<std::vector<std::int64_t>>(r, "listing cluster resources");
        std::vector<std::int64_t> ids;
        if (r.data.is_array()) {
            for (const auto& item : r.data) {
                if (item.is_object() && item.contains("vmid") && item["vmid"].is_number_integer()) {
                    ids.push_back(item["vmid"].get<std::int64_t>());
                }
            }
        }
        return Outcome<std::vector<std::int64_t>>::success(ids);
    }

    Outcome<bool> storage_exists(const std::string& node, const std::string& storage) override {
        auto r = call("GET", "/nodes/" + percent_encode(node) + "/storage", {}, true);
        if (!r.ok()) return fail<bool>(r, "listing storages of " + node);
        bool found = false;
        if (r.data.is_array()) {
            for (const auto& s : r.data) {
                if (s.is_object() && s.value("storage", "") == storage) found = true;
            }
        }
        return Outcome<bool>::success(found);
    }

    Outcome<bool> bridge_exists(const std::string& node, const std::string& bridge) override {
        auto r = call("GET", "/nodes/" + percent_encode(node) + "/network?type=any_bridge", {}, true);
        if (!r.ok()) return fail<bool>(r, "listing bridges of " + node);
        bool found = false;
        if (r.data.is_array()) {
            for (const auto& s : r.data) {
                if (s.is_object() && s.value("iface", "") == bridge) found = true;
            }
        }
        return Outcome<bool>::success(found);
    }

    Outcome<VmState> vm_state(const std::string& node, std::int64_t vmid) override {
        VmState state;
        auto r = call("GET", vm_path(node, vmid) + "/config", {}, true);
        if (!r.ok()) {
            if (classify(r) == FailureKind::not_found) return Outcome<VmState>::success(state);
            return fail<VmState>(r, "reading the configuration of VM " + std::to_string(vmid));
        }
        state.exists = true;
        if (r.data.is_object()) {
            for (const auto& [key, value] : r.data.items()) {
                std::string text = value.is_string() ? value.get<std::string>() : value.dump();
                if (key == "digest") {
                    state.digest = text;
                } else {
                    state.config[key] = text;
                }
            }
        }
        state.name = state.config.count("name") ? state.config["name"] : "";
        state.lock = state.config.count("lock") ? state.config["lock"] : "";
        state.is_template = state.config.count("template") && state.config["template"] == "1";
        auto s = call("GET", vm_path(node, vmid) + "/status/current", {}, true);
        if (s.ok() && s.data.is_object()) {
            state.status = s.data.value("status", "");
            if (state.lock.empty()) state.lock = s.data.value("lock", "");
        } else if (!s.ok() && classify(s) == FailureKind::not_found) {
            state.exists = false;  // removed between the two reads
        } else if (!s.ok()) {
            return fail<VmState>(s, "reading the status of VM " + std::to_string(vmid));
        }
        return Outcome<VmState>::success(state);
    }

    Outcome<TaskOutcome> clone(const CloneRequest& q, const std::function<void(const std::string&)>& on_upid) override {
        Params p = {{"newid", std::to_string(q.newid)}, {"name", q.name}, {"full", q.full ? "1" : "0"}};
        if (!q.storage.empty() && q.full) p.emplace_back("storage", q.storage);
        if (!q.pool.empty()) p.emplace_back("pool", q.pool);
        if (!q.description.empty()) p.emplace_back("description", q.description);
        return run_task("POST", vm_path(q.node, q.template_vmid) + "/clone", p, options_.limits.clone,
                        "cloning template " + std::to_string(q.template_vmid) + " to VM " + std::to_string(q.newid),
                        on_upid);
    }

    Outcome<TaskOutcome> wait_task(const std::string& upid, milliseconds limit) override {
        ApiCall rec;
        rec.method = "GET";
        rec.upid = upid;
        auto t = poll(upid, limit, rec);
        record(rec);
        return t;
    }

    Outcome<bool> configure(const std::string& node, std::int64_t vmid,
                            const std::map<std::string, std::string>& params, const std::string& digest) override {
        Params p(params.begin(), params.end());
        if (!digest.empty()) p.emplace_back("digest", digest);
        auto r = call("PUT", vm_path(node, vmid) + "/config", p, false);
        if (!r.ok()) return fail<bool>(r, "configuring VM " + std::to_string(vmid));
        return Outcome<bool>::success(true);
    }

    Outcome<TaskOutcome> resize(const std::string& node, std::int64_t vmid, const std::string& disk,
                                const std::string& size) override {
        return run_task("PUT", vm_path(node, vmid) + "/resize", {{"disk", disk}, {"size", size}},
                        options_.limits.resize, "resizing " + disk + " of VM " + std::to_string(vmid));
    }

    Outcome<TaskOutcome> start(const std::string& node, std::int64_t vmid) override {
        auto t = run_task("POST", vm_path(node, vmid) + "/status/start", {}, options_.limits.power,
                          "starting VM " + std::to_string(vmid));
        if (!t.ok() && t.error.kind == FailureKind::already_running) {
            auto s = vm_state(node, vmid);  // "already running": believe the status, not the message
            if (s.ok() && s.value->status == "running") {
                return Outcome<TaskOutcome>::success(TaskOutcome{"", "OK", {"already running"}});
            }
        }
        return t;
    }

    Outcome<TaskOutcome> shutdown(const std::string& node, std::int64_t vmid, int timeout_s) override {
        return run_task("POST", vm_path(node, vmid) + "/status/shutdown",
                        {{"timeout", std::to_string(timeout_s)}, {"forceStop", "1"}}, options_.limits.power,
                        "shutting down VM " + std::to_string(vmid));
    }

    Outcome<TaskOutcome> stop(const std::string& node, std::int64_t vmid) override {
        return run_task("POST", vm_path(node, vmid) + "/status/stop", {}, options_.limits.power,
                        "stopping VM " + std::to_string(vmid));
    }

    Outcome<TaskOutcome> backup(const std::string& node, std::int64_t vmid, const std::string& storage) override {
        return run_task(
            "POST", "/nodes/" + percent_encode(node) + "/vzdump",
            {{"vmid", std::to_string(vmid)}, {"storage", storage}, {"mode", "snapshot"}, {"compress", "zstd"}},
            options_.limits.backup, "backing up VM " + std::to_string(vmid) + " to " + storage);
    }

    Outcome<TaskOutcome> destroy(const std::string& node, std::int64_t vmid) override {
        auto t = run_task("DELETE", vm_path(node, vmid) + "?purge=1&destroy-unreferenced-disks=1", {},
                          options_.limits.destroy, "destroying VM " + std::to_string(vmid));
        if (!t.ok() && t.error.kind == FailureKind::not_found) {
            return Outcome<TaskOutcome>::success(TaskOutcome{"", "OK", {"already gone"}});
        }
        return t;
    }

    Outcome<bool> agent_ping(const std::string& node, std::int64_t vmid) override {
        auto r = call("POST", vm_path(node, vmid) + "/agent/ping", {}, false, /*retry=*/false);
        if (r.ok()) return Outcome<bool>::success(true);
        if (classify(r) == FailureKind::agent_not_running) return Outcome<bool>::success(false);
        return fail<bool>(r, "pinging the guest agent of VM " + std::to_string(vmid));
    }

    Outcome<std::vector<NetInterface>> agent_interfaces(const std::string& node, std::int64_t vmid) override {
        auto r = call("GET", vm_path(node, vmid) + "/agent/network-get-interfaces", {}, true);
        if (!r.ok()) return fail<std::vector<NetInterface>>(r, "reading the guest's network interfaces");
        const json none = json::array();
        const bool listed = r.data.is_object() && r.data.contains("result");
        return Outcome<std::vector<NetInterface>>::success(parse_guest_interfaces(listed ? r.data["result"] : none));
    }

  private:
    static std::string vm_path(const std::string& node, std::int64_t vmid) {
        return "/nodes/" + percent_encode(node) + "/qemu/" + std::to_string(vmid);
    }

    std::string redact(const std::string& text) {
        std::lock_guard<std::mutex> lock(mutex_);
        return redact_secrets(text, secrets_);
    }

    void record(const ApiCall& c) {
        std::lock_guard<std::mutex> lock(mutex_);
        calls_.push_back(c);
    }

    template <typename T>
    Outcome<T> fail(const ApiResponse& r, const std::string& what) {
        std::string msg =
            what + " failed: " + (r.status == 0 ? "" : "HTTP " + std::to_string(r.status) + ": ") + redact(r.message);
        return Outcome<T>::failure(classify(r), msg);
    }

    // One request, no retries; never throws.
    ApiResponse send_once(const std::string& method, const std::string& path, const Params& params) {
        HttpRequest req;
        req.method = method;
        req.path = std::string(kApiBase) + path;
        req.headers["Authorization"] = "PVEAPIToken=" + options_.token_id + "=" + options_.token_secret;
        req.headers["Accept"] = "application/json";
        if (!params.empty()) {
            req.body = form_encode(params);
            req.content_type = "application/x-www-form-urlencoded";
        }
        ApiResponse out;
        if (refused_) {  // the first refusal was reported; nothing more is sent to this endpoint
            out.refused = true;
            out.message = "not sent: the Proxmox endpoint's TLS certificate was refused (reported above)";
            return out;
        }
        auto sent = transport_->send(req);
        if (!sent) {
            out.refused = refused_ = is_certificate_refused(sent.error());
            out.message = (out.refused ? "the Proxmox endpoint's TLS certificate was refused: "
                                       : "cannot reach the Proxmox API: ") +
                          sent.message();
            return out;
        }
        out.status = sent->status;
        auto parsed = parse_json_bounded(sent->body, {sent->body.size()});
        json body = parsed ? *parsed : json();
        if (body.is_object() && body.contains("data")) out.data = body["data"];
        if (!out.ok()) {
            std::string msg;
            if (body.is_object() && body.contains("message") && body["message"].is_string()) {
                msg = body["message"].get<std::string>();
            }
            if (body.is_object() && body.contains("errors") && body["errors"].is_object()) {
                std::string details;
                for (const auto& [param, m] : body["errors"].items()) {
                    if (!details.empty()) details += "; ";
                    details += param + ": " + (m.is_string() ? m.get<std::string>() : m.dump());
                }
                msg = trim_message(msg) + (msg.empty() ? "" : " ") + "(" + details + ")";
            }
            if (msg.empty()) {
                auto reason = sent->headers.find("x-reason");  // transports may pass the status line's reason
                msg = reason != sent->headers.end() ? reason->second : "no message in the response";
            }
            out.message = trim_message(msg);
            if (out.status == 401) out.message += " (check the API token id and secret in the site's secrets)";
        }
        return out;
    }

    // A request with safe retries; every attempt is recorded.
    ApiResponse call(const std::string& method, const std::string& path, const Params& params, bool idempotent,
                     bool retry = true) {
        milliseconds backoff = options_.retry_backoff;
        ApiResponse r;
        for (int attempt = 1;; ++attempt) {
            auto t0 = steady_clock::now();
            r = send_once(method, path, params);
            ApiCall rec;
            rec.method = method;
            rec.path = path;
            rec.status = r.status;
            rec.attempt = attempt;
            rec.duration_ms = std::chrono::duration_cast<milliseconds>(steady_clock::now() - t0).count();
            if (!r.ok()) rec.error = redact(r.message);
            if (r.ok() && r.data.is_string() && r.data.get<std::string>().rfind("UPID:", 0) == 0) {
                rec.upid = r.data.get<std::string>();
            }
            record(rec);
            if (r.ok() || !retry || attempt >= options_.max_attempts || !retryable(r, idempotent)) return r;
            options_.sleep(backoff);
            backoff = std::min(backoff * 2, milliseconds(4000));
        }
    }

    // Polls tasks/{upid}/status on the UPID's node until stopped or the limit passes.
    Outcome<TaskOutcome> poll(const std::string& upid_text, milliseconds limit, ApiCall& rec) {
        auto upid = parse_upid(upid_text);
        if (!upid) return Outcome<TaskOutcome>::failure(FailureKind::other, "not a task id (UPID): " + upid_text);
        const std::string base = "/nodes/" + percent_encode(upid->node) + "/tasks/" + percent_encode(upid_text);
        rec.path = base + "/status";
        auto deadline = steady_clock::now() + limit;
        milliseconds wait = options_.poll_min;
        int failures = 0;
        for (;;) {
            auto r = send_once("GET", base + "/status", {});
            ++rec.polls;
            rec.status = r.status;
            if (r.ok() && r.data.is_object()) {
                failures = 0;
                if (r.data.value("status", "") == "stopped") {
                    TaskOutcome t;
                    t.upid = upid_text;
                    t.exitstatus = r.data.value("exitstatus", "unknown");
                    rec.exitstatus = redact(t.exitstatus);
                    if (!t.ok()) {
                        t.failure = classify_message(t.exitstatus);
                        auto log = send_once("GET", base + "/log?start=0&limit=1000", {});
                        ++rec.polls;
                        if (log.ok() && log.data.is_array()) {
                            for (const auto& line : log.data) {
                                if (line.is_object() && line.contains("t") && line["t"].is_string()) {
                                    t.log_tail.push_back(redact(line["t"].get<std::string>()));
                                }
                            }
                            if (t.log_tail.size() > 20) t.log_tail.erase(t.log_tail.begin(), t.log_tail.end() - 20);
                        }
                    }
                    return Outcome<TaskOutcome>::success(t);
                }
            } else if (r.refused || (++failures >= options_.max_attempts && !retryable(r, true))) {
                return Outcome<TaskOutcome>::failure(classify(r),
                                                     "polling task " + upid_text + " failed: " + redact(r.message));
            } else if (failures >= options_.max_attempts * 4) {
                return Outcome<TaskOutcome>::failure(classify(r),
                                                     "polling task " + upid_text + " failed: " + redact(r.message));
            }
            if (steady_clock::now() + wait > deadline) {
                rec.error = "time limit reached";
                return Outcome<TaskOutcome>::failure(
                    FailureKind::timeout,
                    "task " + upid_text + " still running after " + std::to_string(limit.count() / 1000) +
                        " s (the time limit); it continues on Proxmox — check it there, then re-run");
            }
            options_.sleep(wait);
            wait = std::min(wait * 2, options_.poll_max);
        }
    }

    // Starts an asynchronous call and waits for its task; a null result (synchronous API) counts as OK.
    Outcome<TaskOutcome> run_task(const std::string& method, const std::string& path, const Params& params,
                                  milliseconds limit, const std::string& what,
                                  const std::function<void(const std::string&)>& on_upid = {}) {
        auto r = call(method, path, params, false);
        if (!r.ok()) return fail<TaskOutcome>(r, what);
        if (!r.data.is_string()) return Outcome<TaskOutcome>::success(TaskOutcome{"", "OK", {}});
        ApiCall rec;
        rec.method = "GET";
        rec.upid = r.data.get<std::string>();
        if (on_upid) on_upid(rec.upid);
        auto t = poll(rec.upid, limit, rec);
        record(rec);
        if (!t.ok()) return Outcome<TaskOutcome>::failure(t.error.kind, what + " failed: " + t.error.message);
        return t;
    }

    std::unique_ptr<HttpTransport> transport_;
    ProxmoxOptions options_;
    std::mutex mutex_;
    std::vector<ApiCall> calls_;
    std::vector<std::string> secrets_;
    bool refused_ = false;  // the endpoint's certificate was refused once: final for this provider
};

}  // namespace

std::unique_ptr<Provider> make_proxmox_provider(std::unique_ptr<HttpTransport> transport, ProxmoxOptions options) {
    return std::make_unique<ProxmoxProvider>(std::move(transport), std::move(options));
}

}  // namespace nodeform::controller::providers
