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

// The boolean at key of a JSON object; fallback when missing or not a boolean.
bool bool_field(const nlohmann::json& j, const char* key, bool fallback = false);

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
    std::set<std::string> restart_requests;    // services to try-restart after the files stage
    std::map<std::string, std::string> facts;  // node facts for file templates (node_facts)

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
std::vector<ResourceResult> converge_apt_sources(Context& ctx, const std::vector<Item>& items);
std::vector<ResourceResult> converge_mounts(Context& ctx, const std::vector<Item>& items);
std::vector<ResourceResult> converge_timezone(Context& ctx, const std::vector<Item>& items);
std::vector<ResourceResult> converge_directories(Context& ctx, const std::vector<Item>& items);
std::vector<ResourceResult> converge_symlinks(Context& ctx, const std::vector<Item>& items);
std::vector<ResourceResult> converge_kernel_modules(Context& ctx, const std::vector<Item>& items);
std::vector<ResourceResult> converge_sysctl(Context& ctx, const std::vector<Item>& items);
std::vector<ResourceResult> converge_timers(Context& ctx, const std::vector<Item>& items);
std::vector<ResourceResult> converge_upgrade(Context& ctx, const std::vector<Item>& items);
std::vector<ResourceResult> converge_locale(Context& ctx, const std::vector<Item>& items);
// A timer's ExecStart= value: each argument as is when plain, else double-quoted with '\' and '"' escaped; '%' and
// '$' doubled so systemd expands nothing.
std::string exec_start_line(const std::vector<std::string>& argv);
// The facts file templates name (nodeform/template.hpp) for this spec on this machine; primary_ip is missing when
// the spec has no static address and no default route is found.
std::map<std::string, std::string> node_facts(Filesystem& fs, const nlohmann::json& spec);
// The IPv4 address of the default route's interface from /proc/net/route and /proc/net/fib_trie; nullopt if none.
std::optional<std::string> primary_ipv4(const std::string& route, const std::string& fib_trie);
// After the files stage: try-restart every requested service once; returns per-service failures.
std::map<std::string, std::string> restart_requested_services(Context& ctx);

// apt and dpkg, shared by the packages and upgrade stages: dpkg's status database; the environment and -o options of
// every apt-get run; an apt failure explained for a person (lock held, disk full).
Result<std::map<std::string, DpkgPackage>> read_dpkg(Context& ctx);
std::map<std::string, std::string> apt_env();
std::vector<std::string> apt_options(const Context& ctx);
std::string explain_apt_failure(const Context& ctx, const std::string& message);
// While alive in an offline root: /usr/sbin/policy-rc.d exits 101, so maintainer scripts start no daemons (removed
// again when nodeform placed it).
class OfflineDaemonsBlocked {
  public:
    explicit OfflineDaemonsBlocked(Context& ctx);
    ~OfflineDaemonsBlocked();
    OfflineDaemonsBlocked(const OfflineDaemonsBlocked&) = delete;
    OfflineDaemonsBlocked& operator=(const OfflineDaemonsBlocked&) = delete;

  private:
    Context& ctx_;
    bool placed_ = false;
};

// 1-256 characters, each a letter, a digit or one of extra (a value that goes into a command or a config line).
bool word_chars(const std::string& s, const std::string& extra);
// The first line of s, trailing spaces and CR removed (systemctl's one-word answers).
std::string first_line(const std::string& s);
// "systemctl ARGS…", with --root=ROOT when systemd is not running (an offline root: enablement only).
std::vector<std::string> systemctl(Context& ctx, std::vector<std::string> args);
// "0644".
std::string octal_mode(mode_t mode);
// "sha256:" and the first 16 hex digits of content's digest: how changed content shows in a report.
std::string short_fingerprint(const std::string& content);
// A user or group name (or a decimal id) as an id in the root's databases; nullopt when unknown.
std::optional<unsigned> resolve_account_id(const AccountsDb& db, const std::string& name, bool is_user);
// Each records a change in r under pointer (field) when path differs and makes it when applying.
Status ensure_mode(Context& ctx, ResourceResult& r, const std::string& pointer, const std::string& field,
                   const std::string& path, mode_t have, mode_t want);
Status ensure_owner(Context& ctx, ResourceResult& r, const std::string& pointer, const std::string& field,
                    const std::string& path, uid_t have_uid, gid_t have_gid, uid_t uid, gid_t gid);
// A directory with mode and owner (made when missing; its parent must exist).
Status ensure_dir(Context& ctx, ResourceResult& r, const std::string& pointer, const std::string& path, mode_t mode,
                  uid_t uid, gid_t gid);
// A regular file with exactly content, mode and owner (parents made 0755 when missing), or no file when content is
// nullopt; content changes show as short_fingerprint.
Status ensure_file(Context& ctx, ResourceResult& r, const std::string& pointer, const std::string& field_name,
                   const std::string& path, const std::optional<std::string>& content, mode_t mode, uid_t uid,
                   gid_t gid);

// A result skeleton for item.
ResourceResult make_result(const Item& item);
// "updated F1, F2" (apply) or "would update F1, F2" (plan): the fields of result's changes.
std::string updated_message(const Context& ctx, const ResourceResult& result);
// Sets status from changes: failed when error is set, else changed/drifted when changes, else unchanged.
void finish_result(Context& ctx, ResourceResult& result, const std::string& error = {});

}  // namespace nodeform::agent
