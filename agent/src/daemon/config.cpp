#include "nodeform/agent/daemon/config.hpp"
#include "nodeform/json_limits.hpp"

#include <sys/stat.h>

#include <cctype>
#include <limits>

#include <yaml-cpp/yaml.h>

#include "nodeform/args.hpp"
#include "nodeform/atomic_file.hpp"
#include "nodeform/duration.hpp"

namespace nodeform::agent::daemon {
namespace {

Result<std::uint64_t> parse_count(const std::string& key, const std::string& value) {
    if (value.empty() || value.size() > 18) return make_error(key + ": expected a whole number, got '" + value + "'");
    std::uint64_t n = 0;
    for (char c : value) {
        if (c < '0' || c > '9') return make_error(key + ": expected a whole number, got '" + value + "'");
        n = n * 10 + static_cast<std::uint64_t>(c - '0');
    }
    return n;
}

}  // namespace

const std::vector<std::string>& config_keys() {
    static const std::vector<std::string> keys = {
        "seed",     "spec",  "state-dir",    "spool-dir",  "spool-max", "controller-url", "root",
        "interval", "splay", "stop-timeout", "retry-base", "retry-cap", "max-turns",      "log-level"};
    return keys;
}

Status apply_config_value(AgentConfig& c, const std::string& key, const std::string& value) {
    auto duration = [&](std::chrono::milliseconds& out) -> Status {
        auto d = parse_duration(value);
        if (!d) return make_error(key + ": invalid duration '" + value + "': expected " + kDurationExamples);
        out = *d;
        return Ok{};
    };
    if (key == "seed") {
        c.seed = value;
    } else if (key == "spec") {
        c.spec = value;
    } else if (key == "state-dir") {
        if (value.empty()) return make_error("state-dir: must not be empty");
        c.state_dir = value;
    } else if (key == "spool-dir") {
        c.spool_dir = value;
    } else if (key == "spool-max") {
        auto n = parse_count(key, value);
        if (!n) return n.error();
        if (*n < 1 || *n > 1000000) return make_error("spool-max: must be between 1 and 1000000");
        c.spool_max = static_cast<std::size_t>(*n);
    } else if (key == "controller-url") {
        if (value.rfind("https://", 0) != 0 && value.rfind("http://", 0) != 0)
            return make_error("controller-url: expected https://HOST[:PORT], got '" + value + "'");
        c.controller_url = value;
    } else if (key == "root") {
        c.root = value;
    } else if (key == "interval" || key == "splay") {
        std::chrono::milliseconds d{};
        if (auto st = duration(d); !st) return st;
        if (key == "interval" && d.count() <= 0) return make_error("interval: must be greater than 0");
        (key == "interval" ? c.interval : c.splay) = d;
    } else if (key == "stop-timeout") {
        return duration(c.stop_timeout);
    } else if (key == "retry-base") {
        if (auto st = duration(c.retry_base); !st) return st;
        if (c.retry_base.count() <= 0) return make_error("retry-base: must be greater than 0");
    } else if (key == "retry-cap") {
        return duration(c.retry_cap);
    } else if (key == "max-turns") {
        auto n = parse_count(key, value);
        if (!n) return n.error();
        c.max_turns = *n;
    } else if (key == "log-level") {
        auto level = parse_log_level(value);
        if (!level) return make_error("log-level: expected debug, info, notice, warning or error, got '" + value + "'");
        c.log_level = *level;
    } else {
        return make_error("unknown setting '" + key + "'");
    }
    return Ok{};
}

Status apply_config_yaml(AgentConfig& config, const std::string& text, const std::string& source_name) {
    auto loaded = load_yaml_bounded(text, {1024 * 1024});
    if (!loaded) return make_error(source_name + ": " + loaded.message());
    const YAML::Node& root = *loaded;
    if (root.IsNull()) return Ok{};
    if (!root.IsMap()) return make_error(source_name + ": expected a mapping of settings (e.g. 'state-dir: DIR')");
    for (const auto& item : root) {
        std::string key;
        try {
            key = item.first.as<std::string>();
        } catch (const YAML::Exception&) {
            return make_error(source_name + ": setting names must be strings");
        }
        if (!item.second.IsScalar()) return make_error(source_name + ": " + key + ": expected a single value");
        auto st = apply_config_value(config, key, item.second.Scalar());
        if (!st) return make_error(source_name + ": " + st.message());
    }
    return Ok{};
}

Result<LoadedConfig> load_agent_config(const std::vector<std::string>& args) {
    ArgSpec spec;
    for (const auto& key : config_keys())
        spec.valued.insert(key);
    spec.valued.insert("config");
    spec.flags.insert("help");
    auto parsed = parse_args(args, spec);
    if (!parsed) return parsed.error();
    LoadedConfig loaded;
    if (parsed->has("help")) {
        loaded.help = true;
        return loaded;
    }
    if (!parsed->positionals.empty()) return make_error("unexpected argument '" + parsed->positionals[0] + "'");
    AgentConfig& config = loaded.config;
    if (auto file = parsed->get("config")) {
        config.config_file = *file;
        config.config_file_explicit = true;
    }
    struct stat st {};
    bool exists = ::stat(config.config_file.c_str(), &st) == 0;
    if (exists || config.config_file_explicit) {
        auto text = read_file(config.config_file, 1024 * 1024);
        if (!text) return make_error("cannot read config file: " + text.message());
        if (auto applied = apply_config_yaml(config, *text, config.config_file); !applied) return applied.error();
    }
    for (const auto& [key, value] : parsed->values) {
        if (key == "config") continue;
        if (auto applied = apply_config_value(config, key, value); !applied)
            return make_error("--" + applied.message());
    }
    return loaded;
}

}  // namespace nodeform::agent::daemon
