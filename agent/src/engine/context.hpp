#pragma once
// What every resource stage gets from the engine: the injected system interfaces, the run mode and
// helpers for commands, secrets and results. Private to the agent library.
#include <chrono>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "nodeform/agent/converge.hpp"
#include "nodeform/agent/resources/system_db.hpp"

namespace nodeform::agent {

// The string at key of a JSON object; fallback when j is not an object or the key is missing or not a string.
std::string string_field(const nlohmann::json& j, const char* key, const std::string& fallback = {});

// One resource of the spec: its id, its JSON and where that JSON sits in the spec (for secret_paths).
struct Item {
    std::string id;
    std::string type;
    std::string name;
    nlohmann::json spec;
    std::string pointer;            // JSON Pointer of spec inside the resolved spec, e.g. "/users/0"
    std::vector<std::string> deps;  // ids of resources that must not have failed
};

class Context {
  public:
    Context(ProcessRunner& runner, Filesystem& fs, Clock& clock, Logger& logger, const ConvergeOptions& options,
            RunMode mode, const nlohmann::json& spec);

    ProcessRunner& runner;
    Filesystem& fs;
    Clock& clock;
    Logger& logger;
    const ConvergeOptions& options;
    const RunMode mode;
    bool offline = false;          // converging a root other than the live "/"
    bool systemd_running = false;  // live system with systemd as PID 1
    std::vector<std::string> secrets;
    std::vector<std::string> secret_paths;
    std::set<std::string> restart_requests;  // services to try-restart after the files stage

    bool apply() const { return mode == RunMode::apply; }
    // True when the value at pointer (or anything inside it, or a parent of it) is a secret.
    bool is_secret(const std::string& pointer) const;
    // A change of field; old/new replaced by "[REDACTED]" when pointer is secret.
    FieldChange change(const std::string& pointer, const std::string& field, nlohmann::json old_value,
                       nlohmann::json new_value) const;

    // Runs argv with secrets redacted; Err when it could not start, timed out or exited non-zero;
    // the error names the command and carries the tail of its stderr (or stdout).
    Result<ProcessResult> run(std::vector<std::string> argv, std::chrono::milliseconds timeout,
                              std::map<std::string, std::string> env = {}, std::string stdin_data = {});
    // Runs argv and returns the result whatever the exit code (Err only when it could not start).
    Result<ProcessResult> run_raw(std::vector<std::string> argv, std::chrono::milliseconds timeout,
                                  std::map<std::string, std::string> env = {}, std::string stdin_data = {});
    // argv run inside the root: "chroot ROOT argv..." when offline, argv otherwise.
    std::vector<std::string> in_root(std::vector<std::string> argv) const;
    // Fresh view of /etc/passwd and /etc/group (re-read after useradd/groupadd).
    Result<AccountsDb> accounts();
    std::chrono::milliseconds short_timeout() const { return std::chrono::minutes(2); }
    std::chrono::milliseconds long_timeout() const { return options.command_timeout; }
};

// The last lines of a command's output, for an error message (at most max_chars, trimmed).
std::string output_tail(const ProcessResult& result, std::size_t max_chars = 400);

// Stage functions: each converges its items (already filtered for failed dependencies) and returns
// one result per item, in item order. They never throw for bad input.
std::vector<ResourceResult> converge_hostname(Context& ctx, const std::vector<Item>& items);
std::vector<ResourceResult> converge_packages(Context& ctx, const std::vector<Item>& items);
std::vector<ResourceResult> converge_groups(Context& ctx, const std::vector<Item>& items);
std::vector<ResourceResult> converge_users(Context& ctx, const std::vector<Item>& items);
std::vector<ResourceResult> converge_files(Context& ctx, const std::vector<Item>& items);
std::vector<ResourceResult> converge_services(Context& ctx, const std::vector<Item>& items);
std::vector<ResourceResult> converge_stacks(Context& ctx, const std::vector<Item>& items);
// After the files stage: try-restart every requested service once; returns per-service failures.
std::map<std::string, std::string> restart_requested_services(Context& ctx);

// A result skeleton for item.
ResourceResult make_result(const Item& item);
// Sets status from changes: failed when error is set, else changed/drifted when changes, else unchanged.
void finish_result(Context& ctx, ResourceResult& result, const std::string& error = {});

}  // namespace nodeform::agent
