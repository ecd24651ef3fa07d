#include "nodeform/agent/converge.hpp"
#include "nodeform/json_limits.hpp"

#include <set>
#include <utility>

#include "context.hpp"
#include "nodeform/canonical_json.hpp"
#include "nodeform/enum_names.hpp"

namespace nodeform::agent {
namespace {

using Ms = std::chrono::milliseconds;

// The items of one spec list; the name comes from name_key (or the whole entry for strings).
std::vector<Item> items_of(const nlohmann::json& spec, const char* list, const char* type, const char* name_key) {
    std::vector<Item> items;
    auto it = spec.find(list);
    if (it == spec.end() || !it->is_array()) return items;
    for (std::size_t i = 0; i < it->size(); ++i) {
        const auto& entry = (*it)[i];
        Item item;
        item.type = type;
        item.spec = entry;
        item.pointer = std::string("/") + list + "/" + std::to_string(i);
        item.name = entry.is_object() ? string_field(entry, name_key) : "";
        if (item.name.empty()) item.name = "#" + std::to_string(i);
        item.id = std::string(type) + ":" + item.name;
        items.push_back(std::move(item));
    }
    return items;
}

// The one resource at spec[key] (type key, pointer /key), named by name_of; none when absent or name_of gives "".
template <typename NameOf>
std::vector<Item> single_item(const nlohmann::json& spec, const char* key, NameOf name_of) {
    std::vector<Item> items;
    auto it = spec.find(key);
    if (it == spec.end()) return items;
    Item item;
    item.type = key;
    item.spec = *it;
    item.pointer = std::string("/") + key;
    item.name = name_of(*it);
    if (item.name.empty()) return items;
    item.id = std::string(key) + ":" + item.name;
    items.push_back(std::move(item));
    return items;
}

bool is_docker_package(const std::string& name) {
    static const std::set<std::string> names = {"docker.io", "docker-ce", "docker-compose", "docker-compose-plugin",
                                                "moby-engine"};
    return names.count(name) > 0;
}

constexpr EnumName<ResourceStatus> kStatusNames[] = {{ResourceStatus::unchanged, "unchanged"},
                                                     {ResourceStatus::changed, "changed"},
                                                     {ResourceStatus::failed, "failed"},
                                                     {ResourceStatus::skipped, "skipped"},
                                                     {ResourceStatus::drifted, "drifted"}};
constexpr std::pair<ResourceStatus, int RunCounts::*> kCounters[] = {{ResourceStatus::unchanged, &RunCounts::unchanged},
                                                                     {ResourceStatus::changed, &RunCounts::changed},
                                                                     {ResourceStatus::failed, &RunCounts::failed},
                                                                     {ResourceStatus::skipped, &RunCounts::skipped},
                                                                     {ResourceStatus::drifted, &RunCounts::drifted}};

}  // namespace

const char* to_string(RunMode mode) {
    return mode == RunMode::apply ? "apply" : "check";
}

const char* to_string(ResourceStatus status) {
    return name_of(kStatusNames, status, "unknown");
}

RunCounts RunReport::counts() const {
    RunCounts c;
    for (const auto& r : resources) {
        ++c.total;
        for (const auto& [status, counter] : kCounters) {
            if (status == r.status) ++(c.*counter);
        }
    }
    return c;
}

bool RunReport::ok() const {
    if (!error.empty()) return false;
    auto c = counts();
    return c.failed == 0 && c.skipped == 0;
}

bool RunReport::changes_pending() const {
    return counts().drifted > 0;
}

nlohmann::json redact_paths(const nlohmann::json& document, const std::vector<std::string>& secret_paths) {
    nlohmann::json out = document;
    for (const auto& path : secret_paths) {
        try {
            nlohmann::json::json_pointer ptr(path);
            if (out.contains(ptr)) out[ptr] = "[REDACTED]";
        } catch (const nlohmann::json::exception&) {
            // Not a valid pointer: nothing to redact there.
        }
    }
    return out;
}

std::vector<std::string> collect_secrets(const nlohmann::json& resolved_spec) {
    std::vector<std::string> secrets;
    if (!resolved_spec.is_object()) return secrets;
    auto it = resolved_spec.find("secret_paths");
    if (it == resolved_spec.end() || !it->is_array()) return secrets;
    for (const auto& p : *it) {
        if (!p.is_string()) continue;
        try {
            nlohmann::json::json_pointer ptr(p.get<std::string>());
            if (!resolved_spec.contains(ptr)) continue;
            const auto& v = resolved_spec[ptr];
            if (v.is_string() && !v.get<std::string>().empty()) secrets.push_back(v.get<std::string>());
        } catch (const nlohmann::json::exception&) {
        }
    }
    return secrets;
}

static nlohmann::json resource_json(const ResourceResult& r) {
    nlohmann::json changes = nlohmann::json::array();
    for (const auto& c : r.changes)
        changes.push_back({{"field", c.field}, {"old", c.old_value}, {"new", c.new_value}});
    return {{"id", r.id},
            {"type", r.type},
            {"status", to_string(r.status)},
            {"duration_ms", r.duration.count()},
            {"message", r.message},
            {"changes", changes}};
}

static nlohmann::json counts_json(const RunCounts& c) {
    return {{"total", c.total},   {"unchanged", c.unchanged}, {"changed", c.changed},
            {"failed", c.failed}, {"skipped", c.skipped},     {"drifted", c.drifted}};
}

static_assert(static_cast<int>(ResourceStatus::drifted) == static_cast<int>(protocol::ResourceStatus::drifted) &&
                  static_cast<int>(ResourceStatus::skipped) == static_cast<int>(protocol::ResourceStatus::skipped) &&
                  static_cast<int>(ResourceStatus::failed) == static_cast<int>(protocol::ResourceStatus::failed) &&
                  static_cast<int>(ResourceStatus::changed) == static_cast<int>(protocol::ResourceStatus::changed),
              "agent and protocol resource statuses are the same list");

protocol::Report to_report(const RunReport& report) {
    protocol::Report out;
    out.report_id = report.report_id;
    out.identity = report.identity;
    out.agent_version = NODEFORM_VERSION;
    out.spec_digest = report.spec_digest;
    out.phase = report.reached_platform_ready ? protocol::Phase::platform_ready
                : report.platform_ready       ? protocol::Phase::sustain
                                              : protocol::Phase::converging;
    out.trigger = protocol::Trigger::run;
    out.mode = report.mode == RunMode::apply ? protocol::Mode::apply : protocol::Mode::check;
    out.started_at = format_rfc3339(report.started_at);
    out.finished_at = format_rfc3339(report.finished_at);
    out.platform_ready = report.platform_ready;
    RunCounts c = report.counts();
    out.counts = {c.total, c.unchanged, c.changed, c.failed, c.skipped, c.drifted};
    for (const auto& r : report.resources) {
        std::vector<protocol::Change> changes;
        for (const auto& ch : r.changes)
            changes.push_back({ch.field, ch.old_value, ch.new_value});
        out.resources.push_back(
            {r.id, r.type, static_cast<protocol::ResourceStatus>(r.status), r.duration.count(), r.message, changes});
        if (r.status == ResourceStatus::drifted) out.drift.push_back({r.id, std::move(changes)});
    }
    out.error = report.error;
    return out;
}

nlohmann::json to_report_json(const RunReport& report) {
    return protocol::to_json(to_report(report));
}

nlohmann::json to_last_run_json(const RunReport& report) {
    nlohmann::json resources = nlohmann::json::array();
    for (const auto& r : report.resources)
        resources.push_back(resource_json(r));
    nlohmann::json timings = nlohmann::json::object();
    for (const auto& [k, v] : report.timings)
        timings[k] = v;
    auto duration = std::chrono::duration<double>(report.finished_at - report.started_at).count();
    nlohmann::json j = {
        {"version", {{"agent", NODEFORM_VERSION}, {"spec_digest", report.spec_digest}}},
        {"report_id", report.report_id},
        {"identity", report.identity},
        {"mode", to_string(report.mode)},
        {"started_at", format_rfc3339(report.started_at)},
        {"finished_at", format_rfc3339(report.finished_at)},
        {"duration_s", duration},
        {"success", report.ok()},
        {"platform_ready", report.platform_ready},
        {"counts", counts_json(report.counts())},
        {"timings", timings},
        {"resources", resources},
    };
    if (!report.error.empty()) j["error"] = report.error;
    return j;
}

std::optional<PlatformReady> read_platform_ready(Filesystem& fs, const std::string& state_dir) {
    auto text = fs.read(state_dir + "/platform-ready", 64 * 1024);
    if (!text) return std::nullopt;
    auto j = parse_json_bounded(*text, {text->size()});
    if (!j || !j->is_object()) return std::nullopt;
    PlatformReady ready;
    ready.reached_at = string_field(*j, "reached_at");
    ready.spec_digest = string_field(*j, "spec_digest");
    return ready;
}

ConvergeEngine::ConvergeEngine(ProcessRunner& runner, Filesystem& fs, Clock& clock, Logger& logger, Random& random,
                               ConvergeOptions options)
    : runner_(runner), fs_(fs), clock_(clock), logger_(logger), random_(random), options_(std::move(options)) {}

RunReport ConvergeEngine::run(const nlohmann::json& spec, RunMode mode) {
    RunReport report;
    report.report_id = make_uuid_v4(random_);
    report.mode = mode;
    report.started_at = clock_.now();
    const auto steady_start = clock_.steady_now();
    auto finish = [&]() {
        report.finished_at = clock_.now();
        report.timings["total"] = std::chrono::duration<double>(clock_.steady_now() - steady_start).count();
    };

    if (!spec.is_object()) {
        report.error = "the resolved spec is not a JSON object";
        finish();
        return report;
    }
    report.identity = string_field(spec, "identity");
    report.spec_digest = canonical_digest(spec);
    auto version = spec.find("schema_version");
    if (version == spec.end() || !version->is_number_integer() || version->get<int>() != 1) {
        report.error =
            "the resolved spec has no schema_version 1; this agent understands schema_version 1 only "
            "(upgrade the agent or the controller)";
        finish();
        return report;
    }
    if (report.identity.empty()) {
        report.error = "the resolved spec has no identity";
        finish();
        return report;
    }

    Context ctx(runner_, fs_, clock_, logger_, options_, mode, spec);

    // Items, in the dependency order of the stages.
    auto hostname = single_item(spec, "hostname", [&](const nlohmann::json& h) {
        if (!h.is_object()) return std::string();
        std::string name = string_field(h, "hostname");
        return name.empty() ? report.identity : name;
    });
    auto timezone = single_item(spec, "timezone", [](const nlohmann::json& tz) {
        return tz.is_string() ? tz.get<std::string>() : std::string();
    });
    auto locale = single_item(spec, "locale", [](const nlohmann::json& lc) {
        return lc.is_string() ? lc.get<std::string>() : std::string();
    });
    auto apt_sources = items_of(spec, "apt_sources", "apt_source", "name");
    auto packages = items_of(spec, "packages", "package", "name");
    // policy none: no resource at all (nothing to check).
    auto upgrade = single_item(spec, "upgrade", [](const nlohmann::json& up) {
        std::string policy = up.is_object() ? string_field(up, "policy") : "";
        return policy == "none" ? std::string() : policy;
    });
    auto groups = items_of(spec, "groups", "group", "name");
    auto users = items_of(spec, "users", "user", "name");
    auto mounts = items_of(spec, "mounts", "mount", "path");
    auto directories = items_of(spec, "directories", "directory", "path");
    auto files = items_of(spec, "files", "file", "path");
    auto symlinks = items_of(spec, "symlinks", "symlink", "path");
    auto modules = items_of(spec, "kernel_modules", "kernel_module", "name");
    auto sysctl = items_of(spec, "sysctl", "sysctl", "name");
    auto services = items_of(spec, "services", "service", "name");
    auto timers = items_of(spec, "timers", "timer", "name");
    auto stacks = items_of(spec, "stacks", "stack", "name");

    std::set<std::string> ids;
    for (auto* list : {&hostname, &timezone, &apt_sources, &packages, &upgrade, &locale, &groups, &users, &mounts,
                       &directories, &files, &symlinks, &modules, &sysctl, &services, &timers, &stacks}) {
        for (auto& item : *list)
            ids.insert(item.id);
    }
    auto dep_if_declared = [&](Item& item, const std::string& id) {
        if (ids.count(id) && id != item.id) item.deps.push_back(id);
    };
    for (auto& user : users) {
        if (auto g = user.spec.find("groups"); user.spec.is_object() && g != user.spec.end() && g->is_array()) {
            for (const auto& name : *g) {
                if (name.is_string()) dep_if_declared(user, "group:" + name.get<std::string>());
            }
        }
    }
    for (auto* list : {&directories, &files}) {
        for (auto& item : *list) {
            if (!item.spec.is_object()) continue;
            if (auto o = string_field(item.spec, "owner"); !o.empty()) dep_if_declared(item, "user:" + o);
            if (auto g = string_field(item.spec, "group"); !g.empty()) dep_if_declared(item, "group:" + g);
        }
    }
    for (auto& timer : timers) {
        if (auto u = string_field(timer.spec, "user"); !u.empty()) dep_if_declared(timer, "user:" + u);
    }
    for (auto& service : services) {
        for (const auto& file : files) {
            if (!file.spec.is_object()) continue;
            auto r = file.spec.find("restart");
            if (r == file.spec.end() || !r->is_array()) continue;
            for (const auto& s : *r) {
                if (s.is_string() && s.get<std::string>() == service.name) dep_if_declared(service, file.id);
            }
        }
    }
    for (auto& l : locale) {
        dep_if_declared(l, "package:locales");
    }
    for (auto& stack : stacks) {
        for (const auto& p : packages) {
            if (is_docker_package(p.name) && string_field(p.spec, "state") != "absent") dep_if_declared(stack, p.id);
        }
    }

    std::map<std::string, ResourceStatus> done;
    std::set<std::string> seen;
    auto emit = [&](const ResourceResult& r) {
        done[r.id] = r.status;
        report.resources.push_back(r);
        report.timings[r.type] += std::chrono::duration<double>(r.duration).count();
        if (options_.on_result) options_.on_result(r);
    };

    using Stage = std::vector<ResourceResult> (*)(Context&, const std::vector<Item>&);
    auto run_stage = [&](std::vector<Item>& items, Stage stage) {
        std::vector<Item> ready;
        std::map<std::string, ResourceResult> early;
        for (auto& item : items) {
            if (!seen.insert(item.id).second) {
                auto r = make_result(item);
                r.status = ResourceStatus::failed;
                r.message = "declared twice in the spec (" + item.pointer + "); only the first is converged";
                early[item.pointer] = r;
                continue;
            }
            if (stop_requested_.load()) {
                auto r = make_result(item);
                r.status = ResourceStatus::skipped;
                r.message = "skipped: the agent is stopping; the next run converges it";
                early[item.pointer] = r;
                continue;
            }
            std::string blocked;
            for (const auto& dep : item.deps) {
                auto d = done.find(dep);
                if (d != done.end() && (d->second == ResourceStatus::failed || d->second == ResourceStatus::skipped)) {
                    blocked = dep;
                    break;
                }
            }
            if (!blocked.empty()) {
                auto r = make_result(item);
                r.status = ResourceStatus::skipped;
                r.message = "skipped: " + blocked + " " + to_string(done[blocked]);
                early[item.pointer] = r;
                continue;
            }
            ready.push_back(item);
        }
        std::vector<ResourceResult> results;
        try {
            results = ready.empty() ? std::vector<ResourceResult>{} : stage(ctx, ready);
        } catch (const std::exception& e) {
            // A programming error inside one stage must not stop the others.
            logger_.error(std::string("internal error while converging: ") + e.what());
            results.clear();
            for (const auto& item : ready) {
                auto r = make_result(item);
                r.status = ResourceStatus::failed;
                r.message = std::string("internal error: ") + e.what();
                results.push_back(r);
            }
        }
        std::map<std::string, ResourceResult> by_pointer = early;
        for (std::size_t i = 0; i < results.size() && i < ready.size(); ++i)
            by_pointer[ready[i].pointer] = results[i];
        for (const auto& item : items) {
            auto it = by_pointer.find(item.pointer);
            if (it != by_pointer.end()) emit(it->second);
        }
    };

    run_stage(hostname, converge_hostname);
    run_stage(timezone, converge_timezone);
    run_stage(apt_sources, converge_apt_sources);
    run_stage(packages, converge_packages);
    run_stage(upgrade, converge_upgrade);
    run_stage(locale, converge_locale);
    run_stage(groups, converge_groups);
    run_stage(users, converge_users);
    run_stage(mounts, converge_mounts);
    run_stage(directories, converge_directories);
    run_stage(files, converge_files);
    if (!ctx.restart_requests.empty()) {
        auto failures = restart_requested_services(ctx);
        for (const auto& [service, message] : failures) {
            for (auto& r : report.resources) {
                if (r.type != "file") continue;
                for (const auto& f : files) {
                    if (f.id != r.id || !f.spec.is_object()) continue;
                    auto rs = f.spec.find("restart");
                    if (rs == f.spec.end() || !rs->is_array()) continue;
                    for (const auto& s : *rs) {
                        if (s.is_string() && s.get<std::string>() == service && r.status != ResourceStatus::failed) {
                            r.status = ResourceStatus::failed;
                            r.message += "; restart of " + service + " failed: " + message;
                            done[r.id] = r.status;
                            if (options_.on_result) options_.on_result(r);
                        }
                    }
                }
            }
        }
    }
    run_stage(symlinks, converge_symlinks);
    run_stage(modules, converge_kernel_modules);
    run_stage(sysctl, converge_sysctl);
    run_stage(services, converge_services);
    run_stage(timers, converge_timers);
    run_stage(stacks, converge_stacks);

    finish();
    auto marker = read_platform_ready(fs_, options_.state_dir);
    report.platform_ready = marker.has_value();
    if (mode == RunMode::apply && options_.write_state) {
        if (auto st = make_directories(fs_, options_.state_dir, 0755); !st) {
            report.error = "cannot record the run: " + st.message();
            return report;
        }
        if (report.ok() && !marker && options_.allow_platform_ready) {
            nlohmann::json ready = {{"reached_at", format_rfc3339(report.finished_at)},
                                    {"spec_digest", report.spec_digest},
                                    {"identity", report.identity},
                                    {"report_id", report.report_id}};
            if (auto st = fs_.write_atomic(options_.state_dir + "/platform-ready", ready.dump() + "\n", {0644, 0, 0});
                !st) {
                report.error = "cannot write the platform-ready marker: " + st.message();
            } else {
                report.platform_ready = true;
                report.reached_platform_ready = true;
                logger_.notice("platform ready", {{"SPEC_DIGEST", report.spec_digest}});
            }
        }
        auto last = to_last_run_json(report);
        if (auto st = fs_.write_atomic(options_.state_dir + "/last-run.json", last.dump(2) + "\n", {0644, 0, 0}); !st) {
            if (report.error.empty()) report.error = "cannot write last-run.json: " + st.message();
        }
    }
    return report;
}

}  // namespace nodeform::agent
