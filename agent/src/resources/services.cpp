// services: enable/disable and start/stop through systemctl. Offline roots (and live systems where
// systemd is not PID 1) get enablement only, through systemctl --root.
#include "../engine/context.hpp"
#include "nodeform/agent/validate.hpp"

namespace nodeform::agent {
namespace {

using Ms = std::chrono::milliseconds;

std::optional<bool> flag(const nlohmann::json& j, const char* key) {
    if (!j.is_object()) return std::nullopt;
    auto it = j.find(key);
    if (it == j.end() || !it->is_boolean()) return std::nullopt;
    return it->get<bool>();
}

// With systemd running: one `systemctl daemon-reload` when systemd reports a changed unit file or
// drop-in (NeedDaemonReload) for any of units, so start/restart use the file on disk, not a stale copy.
Status reload_if_needed(Context& ctx, const std::vector<std::string>& units) {
    if (!ctx.systemd_running || !ctx.apply()) return Ok{};
    for (const auto& unit : units) {
        if (!validate_unit_name(unit)) continue;
        auto res = ctx.run_raw({"systemctl", "show", "-P", "NeedDaemonReload", "--", unit}, ctx.short_timeout());
        if (!res || res->exit_code != 0 || first_line(res->out) != "yes") continue;
        auto reload = ctx.run({"systemctl", "daemon-reload"}, ctx.short_timeout());
        if (!reload) return make_error("systemctl daemon-reload failed: " + reload.message());
        ctx.logger.info("reloaded systemd: the unit file of " + unit + " changed", {{"UNIT", unit}});
        return Ok{};
    }
    return Ok{};
}

}  // namespace

std::vector<ResourceResult> converge_services(Context& ctx, const std::vector<Item>& items) {
    std::vector<ResourceResult> results;
    std::vector<std::string> units;
    for (const auto& item : items)
        units.push_back(item.name);
    const Status reloaded = reload_if_needed(ctx, units);
    for (const auto& item : items) {
        auto start = ctx.clock.steady_now();
        auto r = make_result(item);
        std::string error;
        std::vector<std::string> notes;
        const std::string unit = item.name;
        auto enabled = flag(item.spec, "enabled");
        auto running = flag(item.spec, "running");
        if (auto st = validate_unit_name(unit); !st)
            error = st.message();
        else if (!reloaded)
            error = reloaded.message();

        if (error.empty() && enabled) {
            auto res = ctx.run_raw(systemctl(ctx, {"is-enabled", "--", unit}), ctx.short_timeout());
            if (!res) {
                error = "cannot run systemctl: " + res.message();
            } else {
                std::string state = first_line(res->out);
                bool missing =
                    state.empty() || state == "not-found" || res->err.find("No such file") != std::string::npos;
                if (missing) {
                    if (ctx.apply()) {
                        error = "unit " + unit + " not found; is the package that provides it in the spec's packages?";
                    } else {
                        r.changes.push_back(ctx.change(item.pointer + "/enabled", "enabled", "not-found", *enabled));
                        notes.push_back("unit not installed yet");
                    }
                } else if (state == "masked" || state == "masked-runtime") {
                    if (*enabled)
                        error = "unit " + unit + " is masked; unmask it (systemctl unmask " + unit +
                                ") to let nodeform enable it";
                } else {
                    bool is_on = state == "enabled" || state == "enabled-runtime" || state == "linked" ||
                                 state == "linked-runtime" || state == "alias";
                    bool fixed =
                        state == "static" || state == "generated" || state == "transient" || state == "indirect";
                    if (*enabled && !is_on && !fixed) {
                        r.changes.push_back(ctx.change(item.pointer + "/enabled", "enabled", state, "enabled"));
                        if (ctx.apply()) {
                            auto e = ctx.run(systemctl(ctx, {"enable", "--", unit}), ctx.short_timeout());
                            if (!e) error = "cannot enable " + unit + ": " + e.message();
                        }
                    } else if (!*enabled && is_on) {
                        r.changes.push_back(ctx.change(item.pointer + "/enabled", "enabled", state, "disabled"));
                        if (ctx.apply()) {
                            auto e = ctx.run(systemctl(ctx, {"disable", "--", unit}), ctx.short_timeout());
                            if (!e) error = "cannot disable " + unit + ": " + e.message();
                        }
                    } else if (fixed) {
                        notes.push_back(state + " unit: enablement not applicable");
                    }
                }
            }
        }
        if (error.empty() && running) {
            if (!ctx.systemd_running) {
                notes.push_back(ctx.offline ? "running state not managed in an offline root"
                                            : "running state not managed: systemd is not PID 1");
            } else {
                auto res = ctx.run_raw({"systemctl", "is-active", "--", unit}, ctx.short_timeout());
                if (!res) {
                    error = "cannot run systemctl: " + res.message();
                } else {
                    std::string state = first_line(res->out);
                    bool active = state == "active" || state == "reloading" || state == "activating";
                    if (*running && !active) {
                        r.changes.push_back(ctx.change(item.pointer + "/running", "running", state, "active"));
                        if (ctx.apply()) {
                            auto e = ctx.run({"systemctl", "start", "--", unit}, ctx.short_timeout());
                            if (!e) error = "cannot start " + unit + ": " + e.message();
                        }
                    } else if (!*running && active) {
                        r.changes.push_back(ctx.change(item.pointer + "/running", "running", state, "inactive"));
                        if (ctx.apply()) {
                            auto e = ctx.run({"systemctl", "stop", "--", unit}, ctx.short_timeout());
                            if (!e) error = "cannot stop " + unit + ": " + e.message();
                        }
                    }
                }
            }
        }
        if (error.empty()) {
            std::string what;
            for (const auto& c : r.changes) {
                std::string v = c.new_value.is_string() ? c.new_value.get<std::string>() : c.new_value.dump();
                what += (what.empty() ? "" : ", ") + c.field + " → " + v;
            }
            r.message = r.changes.empty() ? "up to date" : (ctx.apply() ? "" : "would set ") + what;
            for (const auto& n : notes)
                r.message += "; " + n;
        }
        finish_result(ctx, r, error);
        r.duration = std::chrono::duration_cast<Ms>(ctx.clock.steady_now() - start);
        results.push_back(r);
    }
    return results;
}

std::map<std::string, std::string> restart_requested_services(Context& ctx) {
    std::map<std::string, std::string> failures;
    if (!ctx.systemd_running || !ctx.apply()) {
        ctx.restart_requests.clear();
        return failures;  // nothing runs in an offline root; the services stage starts what should run
    }
    const std::vector<std::string> units(ctx.restart_requests.begin(), ctx.restart_requests.end());
    if (auto st = reload_if_needed(ctx, units); !st) {
        for (const auto& unit : units)
            failures[unit] = st.message();
        ctx.restart_requests.clear();
        return failures;
    }
    for (const auto& unit : units) {
        // try-restart: restart only if running; a stopped unit gets the new configuration when started.
        auto res = ctx.run({"systemctl", "try-restart", "--", unit}, ctx.short_timeout());
        if (!res)
            failures[unit] = res.message();
        else
            ctx.logger.info("restarted " + unit + " after a configuration change", {{"UNIT", unit}});
    }
    ctx.restart_requests.clear();
    return failures;
}

}  // namespace nodeform::agent
