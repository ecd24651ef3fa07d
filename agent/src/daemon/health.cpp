#include "nodeform/agent/daemon/health.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>

#include "nodeform/http.hpp"

namespace nodeform::agent::daemon {
namespace {

using Json = nlohmann::json;

bool valid_unit_name(const std::string& unit) {
    if (unit.empty() || unit.size() > 256 || unit[0] == '-') return false;
    for (char c : unit) {
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
                  c == '.' || c == '@' || c == ':' || c == '\\';
        if (!ok) return false;
    }
    return true;
}

bool valid_host(const std::string& host) {
    if (host.empty() || host.size() > 253 || host[0] == '-') return false;
    for (char c : host) {
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
                  c == ':';
        if (!ok) return false;
    }
    return true;
}

struct Url {
    std::string scheme, host, path;
    int port = 0;
};

// http(s)://host[:port][/path]; IPv6 literals in brackets.
std::optional<Url> parse_url(const std::string& text) {
    Url url;
    std::size_t pos = text.find("://");
    if (pos == std::string::npos) return std::nullopt;
    url.scheme = text.substr(0, pos);
    if (url.scheme != "http" && url.scheme != "https") return std::nullopt;
    std::string rest = text.substr(pos + 3);
    std::size_t slash = rest.find('/');
    std::string authority = rest.substr(0, slash);
    url.path = slash == std::string::npos ? "/" : rest.substr(slash);
    url.port = url.scheme == "https" ? 443 : 80;
    std::string port_text;
    if (!authority.empty() && authority[0] == '[') {
        std::size_t close = authority.find(']');
        if (close == std::string::npos) return std::nullopt;
        url.host = authority.substr(1, close - 1);
        if (close + 1 < authority.size()) {
            if (authority[close + 1] != ':') return std::nullopt;
            port_text = authority.substr(close + 2);
        }
    } else {
        std::size_t colon = authority.rfind(':');
        url.host = authority.substr(0, colon);
        if (colon != std::string::npos) port_text = authority.substr(colon + 1);
    }
    if (!port_text.empty()) {
        if (port_text.size() > 5) return std::nullopt;
        int p = 0;
        for (char c : port_text) {
            if (c < '0' || c > '9') return std::nullopt;
            p = p * 10 + (c - '0');
        }
        if (p < 1 || p > 65535) return std::nullopt;
        url.port = p;
    }
    if (!valid_host(url.host)) return std::nullopt;
    for (char c : url.path)
        if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) return std::nullopt;
    return url;
}

std::string check_label(const Json& item, std::size_t index) {
    if (item.is_object() && item.contains("name") && item["name"].is_string())
        return "health check '" + item["name"].get<std::string>() + "'";
    return "health check #" + std::to_string(index + 1);
}

// Connects with a deadline; "" on success, else why not.
std::string tcp_connect(const std::string& host, int port, std::chrono::milliseconds timeout) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    addrinfo* found = nullptr;
    std::string service = std::to_string(port);
    int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &found);
    if (rc != 0) return "cannot resolve " + host + ": " + gai_strerror(rc);
    std::string why = "no address for " + host;
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (addrinfo* ai = found; ai != nullptr; ai = ai->ai_next) {
        int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            why = std::string("socket: ") + std::strerror(errno);
            continue;
        }
        rc = ::connect(fd, ai->ai_addr, ai->ai_addrlen);
        if (rc != 0 && errno == EINPROGRESS) {
            auto left =
                std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
            pollfd p{fd, POLLOUT, 0};
            int n = left.count() > 0 ? ::poll(&p, 1, static_cast<int>(left.count())) : 0;
            if (n == 1) {
                int err = 0;
                socklen_t len = sizeof err;
                ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
                rc = err == 0 ? 0 : -1;
                errno = err;
            } else {
                rc = -1;
                errno = ETIMEDOUT;
            }
        }
        int saved = errno;
        ::close(fd);
        if (rc == 0) {
            ::freeaddrinfo(found);
            return "";
        }
        why = "connect to " + host + ":" + service + ": " + std::strerror(saved);
    }
    ::freeaddrinfo(found);
    return why;
}

}  // namespace

Result<std::vector<HealthCheckSpec>> parse_health_checks(const Json& health) {
    std::vector<HealthCheckSpec> checks;
    if (health.is_null()) return checks;
    if (!health.is_array()) return make_error("spec: 'health' must be a list of checks");
    for (std::size_t i = 0; i < health.size(); ++i) {
        const Json& item = health[i];
        std::string label = check_label(item, i);
        if (!item.is_object()) return make_error(label + ": must be an object");
        auto str = [&](const char* key, std::string& out) -> Status {
            if (!item.contains(key) || !item[key].is_string() || item[key].get<std::string>().empty())
                return make_error(label + ": '" + key + "' must be a non-empty string");
            out = item[key].get<std::string>();
            return Ok{};
        };
        auto num = [&](const char* key, double& out, bool required) -> Status {
            if (!item.contains(key)) {
                if (required) return make_error(label + ": '" + key + "' is required");
                return Ok{};
            }
            if (!item[key].is_number() || !std::isfinite(item[key].get<double>()) || item[key].get<double>() < 0)
                return make_error(label + ": '" + key + "' must be a non-negative number");
            out = item[key].get<double>();
            return Ok{};
        };
        HealthCheckSpec c;
        if (auto st = str("name", c.name); !st) return st.error();
        if (auto st = str("type", c.type); !st) return st.error();
        double interval_s = 30, timeout_s = 5;
        if (auto st = num("interval_s", interval_s, false); !st) return st.error();
        if (auto st = num("timeout_s", timeout_s, false); !st) return st.error();
        if (interval_s <= 0 || interval_s > 86400) return make_error(label + ": 'interval_s' must be in (0, 86400]");
        if (timeout_s <= 0 || timeout_s > 3600) return make_error(label + ": 'timeout_s' must be in (0, 3600]");
        c.interval = std::chrono::milliseconds(static_cast<std::int64_t>(interval_s * 1000));
        c.timeout = std::chrono::milliseconds(static_cast<std::int64_t>(timeout_s * 1000));
        if (c.type == "systemd_unit") {
            if (auto st = str("unit", c.unit); !st) return st.error();
            if (!valid_unit_name(c.unit)) return make_error(label + ": 'unit' is not a valid systemd unit name");
        } else if (c.type == "tcp") {
            if (auto st = str("host", c.host); !st) return st.error();
            if (!valid_host(c.host)) return make_error(label + ": 'host' is not a valid host name or address");
            double port = 0;
            if (auto st = num("port", port, true); !st) return st.error();
            if (port < 1 || port > 65535 || port != static_cast<double>(static_cast<int>(port)))
                return make_error(label + ": 'port' must be a whole number in 1..65535");
            c.port = static_cast<int>(port);
        } else if (c.type == "http") {
            if (auto st = str("url", c.url); !st) return st.error();
            if (!parse_url(c.url)) return make_error(label + ": 'url' must be http(s)://HOST[:PORT][/PATH]");
            double status = 200;
            if (auto st = num("expect_status", status, false); !st) return st.error();
            if (status < 100 || status > 599) return make_error(label + ": 'expect_status' must be in 100..599");
            c.expect_status = static_cast<int>(status);
        } else if (c.type == "disk_free") {
            if (auto st = str("path", c.path); !st) return st.error();
            if (c.path[0] != '/') return make_error(label + ": 'path' must be absolute");
            double v = 0;
            if (item.contains("min_free_percent")) {
                if (auto st = num("min_free_percent", v, true); !st) return st.error();
                if (v > 100) return make_error(label + ": 'min_free_percent' must be at most 100");
                c.min_free_percent = v;
            }
            if (item.contains("min_free_mb")) {
                if (auto st = num("min_free_mb", v, true); !st) return st.error();
                c.min_free_mb = static_cast<std::uint64_t>(v);
            }
            if (!c.min_free_percent && !c.min_free_mb)
                return make_error(label + ": needs 'min_free_percent' or 'min_free_mb'");
        } else if (c.type == "command") {
            if (!item.contains("argv") || !item["argv"].is_array() || item["argv"].empty())
                return make_error(label + ": 'argv' must be a non-empty list of strings");
            for (const auto& a : item["argv"]) {
                if (!a.is_string()) return make_error(label + ": 'argv' must be a non-empty list of strings");
                c.argv.push_back(a.get<std::string>());
            }
            if (c.argv[0].empty() || c.argv[0][0] != '/')
                return make_error(label + ": 'argv[0]' must be an absolute path");
        } else {
            return make_error(label + ": unknown type '" + c.type +
                              "' (expected systemd_unit, tcp, http, disk_free or command)");
        }
        for (const auto& other : checks)
            if (other.name == c.name) return make_error(label + ": the name is used twice");
        checks.push_back(std::move(c));
    }
    return checks;
}

protocol::HealthEntry to_entry(const HealthResult& r) {
    return {r.name, r.type, r.pass ? protocol::HealthStatus::pass : protocol::HealthStatus::fail, r.message,
            format_rfc3339(r.checked_at)};
}

HealthResult SystemHealthProber::probe(const HealthCheckSpec& c) {
    HealthResult r;
    r.name = c.name;
    r.type = c.type;
    if (c.type == "systemd_unit" || c.type == "command") {
        ProcessRequest request;
        request.argv = c.type == "command" ? c.argv : std::vector<std::string>{"systemctl", "is-active", c.unit};
        request.timeout = c.timeout;
        request.output_limit = 4096;
        auto result = runner_.run(request);
        if (!result) {
            r.message = result.message();
        } else if (result->timed_out) {
            r.message = "timed out after " + std::to_string(c.timeout.count()) + " ms";
        } else if (c.type == "systemd_unit") {
            std::string state = result->out;
            while (!state.empty() && (state.back() == '\n' || state.back() == ' '))
                state.pop_back();
            if (state.empty()) state = "exit " + std::to_string(result->exit_code);
            r.pass = result->exit_code == 0;
            r.message = state;
        } else {
            r.pass = result->exit_code == 0;
            r.message = result->exit_code >= 0 ? "exit " + std::to_string(result->exit_code) : "killed by a signal";
        }
    } else if (c.type == "tcp") {
        std::string why = tcp_connect(c.host, c.port, c.timeout);
        r.pass = why.empty();
        r.message = r.pass ? "connected" : why;
    } else if (c.type == "http") {
        auto url = parse_url(c.url);
        if (!url) {
            r.message = "invalid url";
        } else {
            std::string host = url->host.find(':') != std::string::npos ? "[" + url->host + "]" : url->host;
            HttpClientOptions options;
            options.base_url = url->scheme + "://" + host + ":" + std::to_string(url->port);
            options.tls.system_trust = url->scheme == "https";
            options.connect_timeout = c.timeout;
            options.read_timeout = c.timeout;
            auto transport = make_http_transport(options);
            Result<HttpResponse> res = transport ? (*transport)->send(HttpRequest{"GET", url->path, {}, "", ""})
                                                 : Result<HttpResponse>(transport.error());
            if (!res) {
                r.message = res.message();
            } else {
                r.pass = res->status == c.expect_status;
                r.message = "HTTP " + std::to_string(res->status);
                if (!r.pass) r.message += " (expected " + std::to_string(c.expect_status) + ")";
            }
        }
    } else if (c.type == "disk_free") {
        auto space = fs_.space(c.path);
        if (!space) {
            r.message = "disk_free " + c.path + ": " + space.message();
        } else {
            double total = static_cast<double>(space->total_bytes);
            double avail = static_cast<double>(space->available_bytes);
            double percent = total > 0 ? avail * 100.0 / total : 0.0;
            std::uint64_t mb = space->available_bytes / (1024 * 1024);
            r.pass = true;
            if (c.min_free_percent && percent < *c.min_free_percent) r.pass = false;
            if (c.min_free_mb && mb < *c.min_free_mb) r.pass = false;
            char buf[160];
            std::snprintf(buf, sizeof buf, "%.1f%% free (%llu MiB)", percent, static_cast<unsigned long long>(mb));
            r.message = buf;
            if (!r.pass) {
                std::string need;
                if (c.min_free_percent) {
                    std::snprintf(buf, sizeof buf, "%g%%", *c.min_free_percent);
                    need = buf;
                }
                if (c.min_free_mb) need += (need.empty() ? "" : " and ") + std::to_string(*c.min_free_mb) + " MiB";
                r.message += "; needs " + need;
            }
        }
    } else {
        r.message = "unknown check type '" + c.type + "'";
    }
    r.checked_at = clock_.now();
    return r;
}

bool HealthTracker::update(const HealthResult& result) {
    auto it = last_.find(result.name);
    bool changed = it == last_.end() ? !result.pass : it->second.pass != result.pass;
    last_[result.name] = result;
    return changed;
}

void HealthTracker::retain(const std::vector<HealthCheckSpec>& checks) {
    for (auto it = last_.begin(); it != last_.end();) {
        bool keep = false;
        for (const auto& c : checks)
            keep = keep || (c.name == it->first && c.type == it->second.type);
        it = keep ? std::next(it) : last_.erase(it);
    }
}

std::vector<HealthResult> HealthTracker::results() const {
    std::vector<HealthResult> out;
    for (const auto& [name, r] : last_)
        out.push_back(r);
    return out;
}

unsigned HealthTracker::passing() const {
    unsigned n = 0;
    for (const auto& [name, r] : last_)
        n += r.pass ? 1 : 0;
    return n;
}

}  // namespace nodeform::agent::daemon
