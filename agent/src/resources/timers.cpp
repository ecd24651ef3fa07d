// timers: NAME.service (Type=oneshot, the command as argv) and NAME.timer (OnCalendar) under /etc/systemd/system,
// the timer enabled (systemctl --root in an offline root) and, with systemd running, started; a changed unit file is
// picked up with one daemon-reload and a restart of the timer. state: absent stops, disables and removes both.
#include "../engine/context.hpp"
#include "converge_each.hpp"
#include "nodeform/agent/validate.hpp"

namespace nodeform::agent {
namespace {

const std::string kHeader = "# Managed by nodeform: changes here are overwritten.\n";

bool plain_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
           c == '/' || c == ':' || c == '=' || c == ',' || c == '+' || c == '@' || c == '-';
}

// '%' and '$' doubled: systemd expands specifiers and variables in ExecStart, Description and User.
std::string unit_literal(const std::string& s) {
    std::string out;
    for (char c : s) {
        if (c == '%' || c == '$') out.push_back(c);
        out.push_back(c);
    }
    return out;
}

}  // namespace

std::string exec_start_line(const std::vector<std::string>& argv) {
    std::string out;
    for (const auto& arg : argv) {
        if (!out.empty()) out.push_back(' ');
        bool plain = !arg.empty();
        for (char c : arg)
            plain = plain && plain_char(c);
        if (plain) {
            out += arg;
            continue;
        }
        out.push_back('"');
        for (char c : unit_literal(arg)) {
            if (c == '\\' || c == '"') out.push_back('\\');
            out.push_back(c);
        }
        out.push_back('"');
    }
    return out;
}

std::vector<ResourceResult> converge_timers(Context& ctx, const std::vector<Item>& items) {
    bool reloaded = false;
    return converge_each(ctx, items, [&ctx, &reloaded](const Item& item, ResourceResult& r) -> std::string {
        const std::string name = item.name;
        const std::string state = string_field(item.spec, "state", "present");
        const std::string calendar = string_field(item.spec, "on_calendar");
        const std::string user = string_field(item.spec, "user", "root");
        const std::string description = string_field(item.spec, "description", "nodeform timer " + name);
        const bool persistent = bool_field(item.spec, "persistent", true);
        std::vector<std::string> command;
        if (auto c = item.spec.find("command"); c != item.spec.end() && c->is_array()) {
            for (const auto& a : *c) {
                if (!a.is_string()) return std::string("command must list strings");
                command.push_back(a.get<std::string>());
            }
        }
        if (auto st = validate_stack_name(name); !st)
            return "invalid timer name " + quote_for_message(name) +
                   ": use 1-63 lower-case letters, digits, '_' or '-'";
        if (state != "present" && state != "absent") return std::string("state must be \"present\" or \"absent\"");
        const std::string service_path = "/etc/systemd/system/" + name + ".service";
        const std::string timer_path = "/etc/systemd/system/" + name + ".timer";
        const std::string timer_unit = name + ".timer";
        if (state == "present") {
            if (command.empty()) return std::string("command must name a program and its arguments");
            if (auto st = validate_abs_path(command[0], "command"); !st)
                return st.message() + " (the command runs without a shell: give the program's full path)";
            for (const auto& a : command) {
                for (unsigned char c : a) {
                    if (c < 0x20 || c == 0x7f)
                        return "command argument " + quote_for_message(a) + " contains a control character";
                }
            }
            if (calendar.empty() || calendar.size() > 256) return std::string("on_calendar must be 1-256 characters");
            for (char c : calendar) {
                bool ok = plain_char(c) || c == ' ' || c == '*' || c == '~';
                if (!ok)
                    return "on_calendar " + quote_for_message(calendar) +
                           " has a character systemd calendar "
                           "expressions do not use";
            }
            if (auto st = validate_owner(user, "user"); !st) return st.message();
            for (unsigned char c : description) {
                if (c < 0x20 || c == 0x7f) return std::string("description contains a control character");
            }
        }
        std::optional<std::string> service, timer;
        if (state == "present") {
            service = kHeader + "[Unit]\nDescription=" + unit_literal(description) +
                      "\n\n[Service]\nType=oneshot\nUser=" + unit_literal(user) +
                      "\nExecStart=" + exec_start_line(command) + "\n";
            timer = kHeader + "[Unit]\nDescription=" + unit_literal(description) +
                    " (timer)\n\n[Timer]\nOnCalendar=" + calendar + "\nPersistent=" + (persistent ? "true" : "false") +
                    "\n\n[Install]\nWantedBy=timers.target\n";
        }
        // Absent: stop and disable first, while the unit files still exist.
        if (state == "absent") {
            auto exists = ctx.fs.stat(timer_path);
            if (!exists) return exists.message();
            if (exists->has_value() && ctx.apply()) {
                auto args = ctx.systemd_running ? std::vector<std::string>{"disable", "--now", "--", timer_unit}
                                                : std::vector<std::string>{"disable", "--", timer_unit};
                auto res = ctx.run(systemctl(ctx, args), ctx.short_timeout());
                if (!res) return "cannot disable " + timer_unit + ": " + res.message();
            }
        }
        const std::size_t before = r.changes.size();
        if (auto s = ensure_file(ctx, r, item.pointer + "/command", "service", service_path, service, 0644, 0, 0); !s)
            return s.message();
        if (auto s = ensure_file(ctx, r, item.pointer + "/on_calendar", "timer", timer_path, timer, 0644, 0, 0); !s)
            return s.message();
        const bool files_changed = r.changes.size() > before;
        if (files_changed && ctx.apply() && ctx.systemd_running && !reloaded) {
            auto res = ctx.run({"systemctl", "daemon-reload"}, ctx.short_timeout());
            if (!res) return "systemctl daemon-reload failed: " + res.message();
            reloaded = true;
        }
        if (state == "absent") {
            r.message = r.changes.empty() ? "absent" : (ctx.apply() ? "removed" : "would remove");
            return {};
        }
        auto enabled = ctx.run_raw(systemctl(ctx, {"is-enabled", "--", timer_unit}), ctx.short_timeout());
        if (!enabled) return "cannot run systemctl: " + enabled.message();
        std::string now = first_line(enabled->out);
        if (now != "enabled") {
            r.changes.push_back(ctx.change(item.pointer, "enabled", now.empty() ? "not-found" : now, "enabled"));
            if (ctx.apply()) {
                auto res = ctx.run(systemctl(ctx, {"enable", "--", timer_unit}), ctx.short_timeout());
                if (!res) return "cannot enable " + timer_unit + ": " + res.message();
            }
        }
        if (ctx.systemd_running) {
            auto active = ctx.run_raw({"systemctl", "is-active", "--", timer_unit}, ctx.short_timeout());
            if (!active) return "cannot run systemctl: " + active.message();
            std::string a = first_line(active->out);
            if (a != "active") {
                r.changes.push_back(ctx.change(item.pointer, "running", a, "active"));
                if (ctx.apply()) {
                    auto res = ctx.run({"systemctl", "start", "--", timer_unit}, ctx.short_timeout());
                    if (!res) return "cannot start " + timer_unit + ": " + res.message();
                }
            } else if (files_changed && ctx.apply()) {
                auto res = ctx.run({"systemctl", "restart", "--", timer_unit}, ctx.short_timeout());
                if (!res) return "cannot restart " + timer_unit + ": " + res.message();
            }
        }
        if (r.changes.empty()) {
            r.message = "enabled" + std::string(ctx.systemd_running ? " and active" : "") + ", " + calendar;
        } else {
            r.message = updated_message(ctx, r);
        }
        return {};
    });
}

}  // namespace nodeform::agent
