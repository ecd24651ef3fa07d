// stacks: docker-compose.yml and .env (0600) under /opt/nodeform/stacks/NAME/; brought up only when
// the configuration hash changed or not every service has a running container (a one-shot service, restart: "no",
// whose container exited with code 0 counts as converged). state: absent takes the stack down, keeping its files
// unless remove_files.
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <set>
#include <sstream>

#include "../engine/context.hpp"
#include "nodeform/agent/validate.hpp"
#include "nodeform/canonical_json.hpp"
#include "nodeform/json_limits.hpp"

namespace nodeform::agent {
namespace {

using Ms = std::chrono::milliseconds;
const std::string kStacksDir = "/opt/nodeform/stacks";

struct ComposeTool {
    std::vector<std::string> argv;  // {"docker", "compose"} or {"docker-compose"}
    std::string name;
};

Result<ComposeTool> find_compose(Context& ctx) {
    auto v2 = ctx.run_raw({"docker", "compose", "version"}, ctx.short_timeout());
    if (v2 && v2->exit_code == 0) return ComposeTool{{"docker", "compose"}, "docker compose"};
    auto v1 = ctx.run_raw({"docker-compose", "version"}, ctx.short_timeout());
    if (v1 && v1->exit_code == 0) return ComposeTool{{"docker-compose"}, "docker-compose"};
    return make_error(
        "neither `docker compose` (v2) nor `docker-compose` (v1) works on this machine; add docker.io "
        "and docker-compose to the spec's packages");
}

struct ComposeServices {
    std::size_t count = 0;
    std::set<std::string> one_shot;  // services with restart: "no": exited with code 0 counts as converged
};

Result<ComposeServices> read_services(const std::string& compose) {
    auto loaded = load_yaml_bounded(compose, {compose.size()});
    if (!loaded) return make_error("the compose file: " + loaded.message());
    try {
        const YAML::Node& doc = *loaded;
        if (!doc.IsMap() || !doc["services"] || !doc["services"].IsMap() || doc["services"].size() == 0) {
            return make_error("the compose file has no services");
        }
        ComposeServices out;
        out.count = doc["services"].size();
        for (const auto& service : doc["services"]) {
            const YAML::Node& body = service.second;
            if (body.IsMap() && body["restart"] && body["restart"].IsScalar() && body["restart"].Scalar() == "no")
                out.one_shot.insert(service.first.as<std::string>());
        }
        return out;
    } catch (const YAML::Exception& e) {
        return make_error("the compose file is not valid YAML: line " + std::to_string(e.mark.line + 1) + ": " + e.msg);
    }
}

// The IDs of every container of project name (running or not), through compose's project label.
std::vector<std::string> project_containers(Context& ctx, const std::string& name) {
    std::vector<std::string> ids;
    auto res = ctx.run_raw({"docker", "ps", "-aq", "--filter", "label=com.docker.compose.project=" + name},
                           ctx.short_timeout());
    if (!res || res->exit_code != 0) return ids;
    std::size_t pos = 0;
    while (pos < res->out.size()) {
        std::size_t end = res->out.find('\n', pos);
        if (end == std::string::npos) end = res->out.size();
        if (end > pos) ids.push_back(res->out.substr(pos, end - pos));
        pos = end + 1;
    }
    return ids;
}

// state: absent: `down` (or `docker rm -f` when the compose file is gone), then the files only with remove_files.
std::string remove_stack(Context& ctx, const Item& item, ResourceResult& r, std::optional<Result<ComposeTool>>& tool) {
    const std::string name = item.name;
    const std::string dir = kStacksDir + "/" + name;
    const std::string compose_path = dir + "/docker-compose.yml";
    const bool remove_files = bool_field(item.spec, "remove_files");
    auto compose_st = ctx.fs.stat(compose_path);
    if (!compose_st) return compose_st.message();
    const bool have_compose = compose_st->has_value();
    if (!ctx.offline) {
        auto ids = project_containers(ctx, name);
        if (!ids.empty()) {
            r.changes.push_back(ctx.change(item.pointer + "/state", "containers",
                                           std::to_string(ids.size()) + " container(s)", "none"));
            if (ctx.apply()) {
                if (!tool) tool = find_compose(ctx);
                std::vector<std::string> argv;
                if (have_compose && *tool) {
                    argv = tool->value().argv;
                    argv.insert(argv.end(), {"-p", name, "-f", ctx.fs.host_path(compose_path)});
                    auto env = ctx.fs.stat(dir + "/.env");
                    if (env && env->has_value())
                        argv.insert(argv.end(), {"--env-file", ctx.fs.host_path(dir + "/.env")});
                    argv.insert(argv.end(), {"down", "--remove-orphans"});
                } else {
                    argv = {"docker", "rm", "-f"};
                    argv.insert(argv.end(), ids.begin(), ids.end());
                }
                auto res = ctx.run(argv, ctx.long_timeout());
                if (!res) return "cannot take stack " + name + " down: " + res.message();
            }
        }
    }
    auto dir_st = ctx.fs.stat(dir);
    if (!dir_st) return dir_st.message();
    if (remove_files && dir_st->has_value()) {
        r.changes.push_back(ctx.change(item.pointer + "/remove_files", "files", "present", "absent"));
        if (ctx.apply()) {
            for (const char* f : {"docker-compose.yml", ".env", ".nodeform-config-hash"}) {
                if (auto st = ctx.fs.remove(dir + "/" + f); !st) return st.message();
            }
            if (auto st = ctx.fs.remove(dir); !st)
                return st.message() + " (nodeform removes only the files it wrote; the rest is yours)";
        }
    }
    if (r.changes.empty())
        r.message = dir_st->has_value() ? "down (files kept)" : "absent";
    else
        r.message = (ctx.apply() ? "taken down" : "would take down") +
                    std::string(remove_files ? ", files removed" : ", files kept");
    return {};
}

}  // namespace

std::vector<ResourceResult> converge_stacks(Context& ctx, const std::vector<Item>& items) {
    std::vector<ResourceResult> results;
    std::optional<Result<ComposeTool>> tool;
    for (const auto& item : items) {
        auto start = ctx.clock.steady_now();
        auto r = make_result(item);
        std::string error;
        const std::string name = item.name;
        const std::string state = string_field(item.spec, "state", "present");
        if (state != "present") {
            if (auto st = validate_stack_name(name); !st)
                error = st.message();
            else if (state != "absent")
                error = "state must be \"present\" or \"absent\"";
            else
                error = remove_stack(ctx, item, r, tool);
            finish_result(ctx, r, error);
            r.duration = std::chrono::duration_cast<Ms>(ctx.clock.steady_now() - start);
            results.push_back(r);
            continue;
        }
        std::string compose;
        std::string env_text;
        if (auto st = validate_stack_name(name); !st)
            error = st.message();
        else if (!item.spec.contains("compose") || !item.spec["compose"].is_string())
            error = "compose must be a string";
        else
            compose = item.spec["compose"].get<std::string>();
        if (error.empty()) {
            auto env = item.spec.find("env");
            if (env != item.spec.end() && env->is_object()) {
                for (const auto& [k, v] : env->items()) {  // nlohmann::json objects iterate in key order
                    if (auto st = validate_env_name(k); !st) {
                        error = st.message();
                        break;
                    }
                    if (!v.is_string() || v.get<std::string>().find_first_of("\r\n") != std::string::npos) {
                        error = "env " + k + " must be a one-line string";
                        break;
                    }
                    env_text += k + "=" + v.get<std::string>() + "\n";
                }
            }
        }
        std::size_t services = 0;
        std::set<std::string> one_shot;
        if (error.empty()) {
            auto n = read_services(compose);
            if (!n) {
                error = n.message();
            } else {
                services = n->count;
                one_shot = n->one_shot;
            }
        }
        const std::string dir = kStacksDir + "/" + name;
        const std::string compose_path = dir + "/docker-compose.yml";
        const std::string env_path = dir + "/.env";
        const std::string hash_path = dir + "/.nodeform-config-hash";
        const std::string hash = "sha256:" + sha256_hex(compose + '\0' + env_text) + "\n";
        bool config_changed = false;
        if (error.empty()) {
            auto check = [&](const std::string& path, const std::string& content, mode_t mode, const std::string& field,
                             const std::string& pointer) {
                auto st = ctx.fs.stat(path);
                auto old = ctx.fs.read(path);
                bool same = st && st->has_value() && old && *old == content && (*st)->mode == mode && (*st)->uid == 0;
                if (!same) {
                    r.changes.push_back(ctx.change(
                        pointer, field,
                        old ? nlohmann::json("sha256:" + sha256_hex(*old).substr(0, 16)) : nlohmann::json(nullptr),
                        "sha256:" + sha256_hex(content).substr(0, 16)));
                    config_changed = true;
                }
                return same;
            };
            bool compose_same = check(compose_path, compose, 0644, "compose", item.pointer + "/compose");
            bool env_same = check(env_path, env_text, 0600, "env", item.pointer + "/env");
            auto stored = ctx.fs.read(hash_path);
            if (!stored || *stored != hash) config_changed = true;
            if (ctx.apply() && (!compose_same || !env_same)) {
                if (auto st = make_directories(ctx.fs, dir, 0755); !st)
                    error = st.message();
                else if (auto c = ctx.fs.chmod(dir, 0750); !c)
                    error = c.message();
                if (error.empty() && !compose_same) {
                    if (auto w = ctx.fs.write_atomic(compose_path, compose, {0644, 0, 0}); !w) error = w.message();
                }
                if (error.empty() && !env_same) {
                    if (auto w = ctx.fs.write_atomic(env_path, env_text, {0600, 0, 0}); !w) error = w.message();
                }
            }
        }
        if (error.empty() && ctx.offline) {
            r.message = r.changes.empty() ? "files up to date; containers not managed in an offline root"
                                          : (ctx.apply() ? "files written; containers start on the machine's first run"
                                                         : "would write files");
        } else if (error.empty()) {
            if (!tool) tool = find_compose(ctx);
            if (!*tool) {
                if (ctx.apply())
                    error = tool->message();
                else {
                    r.changes.push_back(ctx.change(item.pointer, "containers", "unknown", "running"));
                    r.message = "would bring up (no compose tool yet: " + tool->message() + ")";
                }
            } else {
                const auto& t = tool->value();
                auto base = t.argv;
                base.insert(base.end(), {"-p", name, "-f", ctx.fs.host_path(compose_path), "--env-file",
                                         ctx.fs.host_path(env_path)});
                // The stack's containers (sorted IDs, running or not) and how many of them run.
                struct Observed {
                    std::vector<std::string> ids;
                    std::size_t running = 0;
                };
                auto observe = [&]() {
                    Observed o;
                    auto ps = base;
                    ps.insert(ps.end(), {"ps", "-q"});
                    auto ids = ctx.run_raw(ps, ctx.short_timeout());
                    if (!ids || ids->exit_code != 0) return o;
                    std::size_t pos = 0;
                    const std::string& out = ids->out;
                    while (pos < out.size()) {
                        std::size_t end = out.find('\n', pos);
                        if (end == std::string::npos) end = out.size();
                        std::string id = out.substr(pos, end - pos);
                        pos = end + 1;
                        if (!id.empty()) o.ids.push_back(id);
                    }
                    std::sort(o.ids.begin(), o.ids.end());
                    if (o.ids.empty()) return o;
                    std::vector<std::string> argv = {"docker", "inspect", "-f",
                                                     "{{.State.Running}} {{.State.ExitCode}} {{index .Config.Labels "
                                                     "\"com.docker.compose.service\"}}"};
                    argv.insert(argv.end(), o.ids.begin(), o.ids.end());
                    auto states = ctx.run_raw(argv, ctx.short_timeout());
                    if (states && states->exit_code == 0) {
                        std::istringstream lines(states->out);
                        std::string running, code, service;
                        while (lines >> running >> code) {
                            std::getline(lines, service);
                            if (!service.empty() && service.front() == ' ') service.erase(0, 1);
                            // Up, or a one-shot service (restart: "no") that finished with exit code 0.
                            if (running == "true" || (code == "0" && one_shot.count(service))) ++o.running;
                        }
                    }
                    return o;
                };
                auto summary = [&](const Observed& o) {
                    return std::to_string(o.running) + "/" + std::to_string(services) +
                           (one_shot.empty() ? " running" : " running or completed");
                };
                const bool files_changed = !r.changes.empty();
                // Nothing to compare against when the files change anyway (up runs and the stack changed).
                const Observed before = config_changed && files_changed ? Observed{} : observe();
                bool need_up = config_changed || before.running < services;
                if (need_up) {
                    if (!config_changed) {
                        r.changes.push_back(
                            ctx.change(item.pointer, "containers", summary(before), summary(Observed{{}, services})));
                    } else if (!files_changed && !ctx.apply()) {
                        // Same files, but never brought up with them (a failed up, or the hash file is gone).
                        r.changes.push_back(ctx.change(item.pointer, "configuration", "not applied", "applied"));
                    }
                    if (ctx.apply()) {
                        auto up = base;
                        up.insert(up.end(), {"up", "-d", "--remove-orphans"});
                        auto res = ctx.run(up, ctx.long_timeout());
                        if (!res)
                            error = t.name + " up failed: " + res.message();
                        else if (auto w = ctx.fs.write_atomic(hash_path, hash, {0600, 0, 0}); !w)
                            error = w.message();
                        if (error.empty() && config_changed && !files_changed) {
                            // Only the hash was missing: changed only if up really created or started something.
                            Observed after = observe();
                            if (after.ids != before.ids || after.running != before.running)
                                r.changes.push_back(
                                    ctx.change(item.pointer, "containers", summary(before), summary(after)));
                        }
                    }
                    if (r.changes.empty())
                        r.message = "configuration recorded; containers already up to date";
                    else
                        r.message = ctx.apply() ? "brought up with " + t.name : "would bring up with " + t.name;
                } else {
                    r.message = summary(before);
                }
            }
        }
        finish_result(ctx, r, error);
        r.duration = std::chrono::duration_cast<Ms>(ctx.clock.steady_now() - start);
        results.push_back(r);
    }
    return results;
}

}  // namespace nodeform::agent
