#include "nodeform/controller/config.hpp"

#include <yaml-cpp/yaml.h>

#include <cctype>
#include <filesystem>
#include <functional>
#include <map>

#include "nodeform/atomic_file.hpp"
#include "nodeform/controller/store/postgres.hpp"
#include "nodeform/duration.hpp"
#include "nodeform/json_limits.hpp"
#include "nodeform/tls.hpp"

namespace nodeform::controller {
namespace {

std::string trim(const std::string& s) {
    std::size_t b = 0, e = s.size();
    while (b < e && std::isspace(static_cast<unsigned char>(s[b])))
        ++b;
    while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1])))
        --e;
    return s.substr(b, e - b);
}

std::optional<long long> parse_int(const std::string& text, long long min, long long max) {
    if (text.empty() || text.size() > 12) return std::nullopt;
    for (char c : text)
        if (!std::isdigit(static_cast<unsigned char>(c))) return std::nullopt;
    long long v = std::stoll(text);
    if (v < min || v > max) return std::nullopt;
    return v;
}

std::optional<bool> parse_bool(const std::string& text) {
    if (text == "true" || text == "yes" || text == "on" || text == "1") return true;
    if (text == "false" || text == "no" || text == "off" || text == "0") return false;
    return std::nullopt;
}

using Setter = std::function<Status(ControllerConfig&, const std::string&)>;

Setter string_setter(std::string ControllerConfig::*field) {
    return [=](ControllerConfig& c, const std::string& v) -> Status {
        c.*field = v;
        return Ok{};
    };
}

Setter bool_setter(bool ControllerConfig::*field) {
    return [=](ControllerConfig& c, const std::string& v) -> Status {
        auto b = parse_bool(v);
        if (!b) return make_error("'" + v + "' is not true or false");
        c.*field = *b;
        return Ok{};
    };
}

Setter int_setter(int ControllerConfig::*field, long long min, long long max) {
    return [=](ControllerConfig& c, const std::string& v) -> Status {
        auto n = parse_int(v, min, max);
        if (!n)
            return make_error("'" + v + "' is not a whole number between " + std::to_string(min) + " and " +
                              std::to_string(max));
        c.*field = static_cast<int>(*n);
        return Ok{};
    };
}

Setter seconds_setter(std::chrono::seconds ControllerConfig::*field, std::chrono::seconds min) {
    return [=](ControllerConfig& c, const std::string& v) -> Status {
        auto d = parse_duration(v);
        if (!d || *d < min)
            return make_error("'" + v + "' is not a duration of at least " + std::to_string(min.count()) +
                              "s (e.g. 30s, 5m, 2h)");
        c.*field = std::chrono::duration_cast<std::chrono::seconds>(*d);
        return Ok{};
    };
}

Setter millis_setter(std::chrono::milliseconds ControllerConfig::*field, std::chrono::milliseconds min) {
    return [=](ControllerConfig& c, const std::string& v) -> Status {
        auto d = parse_duration(v);
        if (!d || *d < min)
            return make_error("'" + v + "' is not a duration of at least " + std::to_string(min.count()) +
                              "ms (e.g. 500ms, 30s, 5m)");
        c.*field = *d;
        return Ok{};
    };
}

const std::map<std::string, Setter>& setters() {
    static const std::map<std::string, Setter> table = {
        {"site", string_setter(&ControllerConfig::site)},
        {"state", string_setter(&ControllerConfig::state)},
        {"store",
         [](ControllerConfig& c, const std::string& v) -> Status {
             // The value is never echoed: it may hold a password.
             if (v.empty() || v == "sqlite") {
                 c.store.clear();
                 return Ok{};
             }
             if (!pg::is_postgres_url(v)) return make_error("expected sqlite or a postgresql://… URL");
             if (auto parsed = pg::url_has_password(v); !parsed) return make_error(parsed.message());
             c.store = v;
             return Ok{};
         }},
        {"store-password-file", string_setter(&ControllerConfig::store_password_file)},
        {"listen",
         [](ControllerConfig& c, const std::string& v) -> Status {
             if (auto st = parse_listen(v, c.listen_host, c.listen_port); !st) return st;
             c.listen_given = true;
             return Ok{};
         }},
        {"plain-http", bool_setter(&ControllerConfig::plain_http)},
        {"access-log", bool_setter(&ControllerConfig::access_log)},
        {"tls-cert", string_setter(&ControllerConfig::tls_cert)},
        {"tls-key", string_setter(&ControllerConfig::tls_key)},
        {"tls-hosts",
         [](ControllerConfig& c, const std::string& v) -> Status {
             c.tls_hosts.clear();
             std::size_t start = 0;
             while (start <= v.size()) {
                 auto comma = v.find(',', start);
                 std::string item =
                     trim(v.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
                 if (!item.empty()) c.tls_hosts.push_back(item);
                 if (comma == std::string::npos) break;
                 start = comma + 1;
             }
             return Ok{};
         }},
        {"threads", int_setter(&ControllerConfig::threads, 2, 1024)},
        {"max-connections", int_setter(&ControllerConfig::max_connections, 0, 1000000)},
        {"max-body-bytes",
         [](ControllerConfig& c, const std::string& v) -> Status {
             auto n = parse_int(v, 1024, 1LL << 30);
             if (!n) return make_error("'" + v + "' is not a byte count between 1024 and 1073741824");
             c.max_body_bytes = static_cast<std::size_t>(*n);
             return Ok{};
         }},
        {"read-timeout", seconds_setter(&ControllerConfig::read_timeout, std::chrono::seconds(1))},
        {"write-timeout", seconds_setter(&ControllerConfig::write_timeout, std::chrono::seconds(1))},
        {"keep-alive-timeout", seconds_setter(&ControllerConfig::keep_alive_timeout, std::chrono::seconds(1))},
        {"auth-failure-limit", int_setter(&ControllerConfig::auth_failure_limit, 1, 1000000)},
        {"auth-failure-window", seconds_setter(&ControllerConfig::auth_failure_window, std::chrono::seconds(1))},
        {"reports-keep-last", int_setter(&ControllerConfig::reports_keep_last, 1, 1000000)},
        {"reports-keep-days", int_setter(&ControllerConfig::reports_keep_days, 0, 100000)},
        {"stale-grace", seconds_setter(&ControllerConfig::stale_grace, std::chrono::seconds(0))},
        {"credential-ttl", seconds_setter(&ControllerConfig::credential_ttl, std::chrono::seconds(0))},
        {"credential-grace", seconds_setter(&ControllerConfig::credential_grace, std::chrono::seconds(0))},
        {"cert-renew-before", seconds_setter(&ControllerConfig::cert_renew_before, std::chrono::seconds(0))},
        {"cert-check-interval", seconds_setter(&ControllerConfig::cert_check_interval, std::chrono::seconds(1))},
        {"reload-interval",
         [](ControllerConfig& c, const std::string& v) -> Status {
             auto d = parse_duration(v);
             if (!d || *d < std::chrono::milliseconds(100))
                 return make_error("'" + v + "' is not a duration of at least 100ms");
             c.reload_interval = *d;
             return Ok{};
         }},
        {"lifecycle", bool_setter(&ControllerConfig::lifecycle)},
        {"lifecycle-interval", millis_setter(&ControllerConfig::lifecycle_interval, std::chrono::milliseconds(100))},
        {"lease-ttl", millis_setter(&ControllerConfig::lease_ttl, std::chrono::milliseconds(1000))},
        {"lifecycle-parallel", int_setter(&ControllerConfig::lifecycle_parallel, 1, 256)},
        {"lifecycle-retries", int_setter(&ControllerConfig::lifecycle_retries, 0, 1000)},
        {"lifecycle-retry-backoff",
         millis_setter(&ControllerConfig::lifecycle_retry_backoff, std::chrono::milliseconds(100))},
        {"ca-fingerprint",
         [](ControllerConfig& c, const std::string& v) -> Status {
             c.ca_fingerprint = tls::normalize_fingerprint(v);
             if (c.ca_fingerprint.empty()) return make_error("not a SHA-256 fingerprint (64 hex digits)");
             return Ok{};
         }},
        {"endpoint",
         [](ControllerConfig& c, const std::string& v) -> Status {
             auto eq = v.find('=');
             if (eq == std::string::npos || eq == 0 || eq + 1 == v.size())
                 return make_error("expected NAME=URL (NAME one of site.yaml proxmox.endpoints)");
             c.endpoints.push_back(v);
             return Ok{};
         }},
        {"log-level",
         [](ControllerConfig& c, const std::string& v) -> Status {
             if (v != "debug" && v != "info" && v != "notice" && v != "warning" && v != "error")
                 return make_error("'" + v + "' is not one of debug, info, notice, warning, error");
             c.log_level = v;
             return Ok{};
         }},
    };
    return table;
}

Status apply_file(ControllerConfig& config, const std::string& path) {
    auto text = read_file(path, 1024 * 1024);
    if (!text) return make_error("cannot read the config file: " + text.message());
    auto loaded = load_yaml_bounded(*text, {1024 * 1024});
    if (!loaded) return make_error(path + ":" + loaded.message());
    const YAML::Node& root = *loaded;
    if (root.IsNull()) return Ok{};
    if (!root.IsMap()) return make_error(path + ": the config file must be a mapping of option: value");
    for (const auto& item : root) {
        std::string key = item.first.Scalar();
        auto it = setters().find(key);
        std::string where = path + ":" + std::to_string(item.first.Mark().line + 1) + ": " + key;
        if (it == setters().end() || key == "config")
            return make_error(where + ": unknown key (the keys are the long options of 'serve', without --)");
        std::string value;
        if (item.second.IsSequence() && key == "tls-hosts") {
            for (const auto& v : item.second)
                value += (value.empty() ? "" : ",") + v.Scalar();
        } else if (item.second.IsScalar()) {
            value = item.second.Scalar();
        } else {
            return make_error(where + ": expected a single value");
        }
        if (auto st = it->second(config, value); !st) return make_error(where + ": " + st.message());
    }
    return Ok{};
}

}  // namespace

ArgSpec serve_arg_spec() {
    ArgSpec spec;
    for (const auto& [key, setter] : setters()) {
        if (key == "plain-http") continue;
        spec.valued.insert(key);
    }
    spec.valued.insert("config");
    spec.flags = {"plain-http", "json"};
    return spec;
}

Result<ControllerConfig> load_controller_config(const ParsedArgs& args, const std::string& default_file) {
    ControllerConfig config;
    std::string file;
    if (auto given = args.get("config")) {
        file = *given;
        if (!std::filesystem::exists(file)) return make_error("config file " + file + " does not exist");
    } else if (!default_file.empty() && std::filesystem::exists(default_file)) {
        file = default_file;
    }
    if (!file.empty()) {
        if (auto st = apply_file(config, file); !st) return st.error();
        config.config_file = file;
    }
    for (const auto& [key, value] : args.values) {
        if (key == "config") continue;
        auto it = setters().find(key);
        if (it == setters().end()) continue;  // options of the subcommand itself (e.g. --ttl)
        if (key == "store" && pg::is_postgres_url(value)) {
            auto has = pg::url_has_password(value);
            if (has && *has)
                return make_error(
                    "--store: the URL holds a password, which the command line shows to every user (ps, shell "
                    "history); put it in a file named by --store-password-file (mode 0600) or in PGPASSWORD");
        }
        if (auto st = it->second(config, value); !st) return make_error("--" + key + ": " + st.message());
    }
    if (args.has("plain-http")) config.plain_http = true;
    if (config.plain_http && !config.listen_given) {
        config.listen_host = "127.0.0.1";
        config.listen_port = 8080;
    }
    return config;
}

Status parse_listen(const std::string& text, std::string& host, int& port) {
    std::string h, p;
    if (!text.empty() && text.front() == '[') {
        auto close = text.find(']');
        if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':')
            return make_error("'" + text + "' is not [IPV6]:PORT");
        h = text.substr(1, close - 1);
        p = text.substr(close + 2);
    } else {
        auto colon = text.rfind(':');
        if (colon == std::string::npos) return make_error("'" + text + "' is not HOST:PORT (e.g. 0.0.0.0:8443)");
        h = text.substr(0, colon);
        p = text.substr(colon + 1);
    }
    if (h.empty()) h = "0.0.0.0";
    for (char c : h)
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-' && c != ':')
            return make_error("'" + text + "': invalid host");
    auto n = parse_int(p, 0, 65535);
    if (!n) return make_error("'" + text + "': the port must be a number between 0 and 65535");
    host = h;
    port = static_cast<int>(*n);
    return Ok{};
}

}  // namespace nodeform::controller
