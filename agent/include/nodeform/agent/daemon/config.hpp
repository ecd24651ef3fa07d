#pragma once
// AgentConfig: every setting of `nodeform-agent run`, filled once: defaults < config file < command line.
#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "nodeform/log.hpp"
#include "nodeform/result.hpp"

namespace nodeform::agent::daemon {

struct AgentConfig {
    std::string config_file = "/etc/nodeform/agent.yaml";  // only settable on the command line
    bool config_file_explicit = false;                     // --config given: a missing file is an error
    std::string seed;                                      // --seed FILE; empty = the seed search order of docs/seed.md
    std::string spec;                                      // --spec FILE: converge this resolved spec, no controller
    std::string state_dir = "/var/lib/nodeform";
    std::string spool_dir;                              // empty = STATE_DIR/spool
    std::size_t spool_max = 1000;                       // newest N reports kept while the controller is away
    std::string controller_url;                         // overrides the seed's controller_url
    std::string root;                                   // converge an offline root filesystem instead of /
    std::optional<std::chrono::milliseconds> interval;  // overrides the spec's apply.interval_s
    std::optional<std::chrono::milliseconds> splay;     // overrides the spec's apply.splay_s
    std::chrono::milliseconds stop_timeout{std::chrono::seconds(80)};  // below the unit's TimeoutStopSec
    std::chrono::milliseconds retry_base{std::chrono::seconds(5)};     // first retry of a failed run/send
    std::chrono::milliseconds retry_cap{std::chrono::minutes(5)};      // longest retry wait
    std::uint64_t max_turns = 0;  // stop after N sustain turns (benchmarks, tests); 0 = forever
    LogLevel log_level = LogLevel::info;

    std::string effective_spool_dir() const { return spool_dir.empty() ? state_dir + "/spool" : spool_dir; }
};

// The options `run` accepts (also the key names of the config file, without "--").
const std::vector<std::string>& config_keys();

// Applies one key (flag name without "--") to config; Err says which key and why.
Status apply_config_value(AgentConfig& config, const std::string& key, const std::string& value);

// Parses the YAML config file text (a flat mapping of config_keys()); unknown keys are errors.
Status apply_config_yaml(AgentConfig& config, const std::string& text, const std::string& source_name);

// Builds the config: defaults, then the file (--config FILE or /etc/nodeform/agent.yaml if it exists),
// then the command line. Sets `help` when --help was given.
struct LoadedConfig {
    AgentConfig config;
    bool help = false;
};
Result<LoadedConfig> load_agent_config(const std::vector<std::string>& args);

}  // namespace nodeform::agent::daemon
