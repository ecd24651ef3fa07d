// sysctl: one drop-in per key, /etc/sysctl.d/90-nodeform-KEY.conf, loaded live with `sysctl -p FILE` when the file
// or the running value (/proc/sys/...) differs. kernel_modules: /etc/modules-load.d/nodeform-NAME.conf and, on a
// live system, `modprobe NAME` when /sys/module/NAME is missing. An offline root gets the files only.
#include "../engine/context.hpp"
#include "converge_each.hpp"
#include "nodeform/agent/validate.hpp"

namespace nodeform::agent {
namespace {

bool key_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
}

// Whitespace runs as one space, trimmed: /proc/sys separates the fields of a multi-value key with tabs.
std::string squeeze(const std::string& s) {
    std::string out;
    for (char c : s) {
        bool space = c == ' ' || c == '\t' || c == '\n' || c == '\r';
        if (space) {
            if (!out.empty() && out.back() != ' ') out.push_back(' ');
        } else {
            out.push_back(c);
        }
    }
    while (!out.empty() && out.back() == ' ')
        out.pop_back();
    return out;
}

std::string proc_path(const std::string& key) {
    std::string p = "/proc/sys/" + key;
    for (std::size_t i = 10; i < p.size(); ++i) {
        if (p[i] == '.') p[i] = '/';
    }
    return p;
}

}  // namespace

Status validate_sysctl_name(const std::string& name) {
    const std::string rule =
        "a kernel parameter is dot-separated parts of letters, digits, '_' and '-' "
        "(e.g. \"net.ipv4.ip_forward\")";
    if (name.empty() || name.size() > 255 || name.front() == '.' || name.back() == '.' ||
        name.find("..") != std::string::npos)
        return make_error("invalid sysctl " + quote_for_message(name) + ": " + rule);
    for (char c : name) {
        if (!key_char(c) && c != '.') return make_error("invalid sysctl " + quote_for_message(name) + ": " + rule);
    }
    return Ok{};
}

Status validate_module_name(const std::string& name) {
    if (name.empty() || name.size() > 64 || name.front() == '-')
        return make_error("invalid kernel module " + quote_for_message(name) +
                          ": use 1-64 letters, digits, '_' and '-', not starting with '-'");
    for (char c : name) {
        if (!key_char(c))
            return make_error("invalid kernel module " + quote_for_message(name) +
                              ": use 1-64 letters, digits, '_' and '-', not starting with '-'");
    }
    return Ok{};
}

std::vector<ResourceResult> converge_sysctl(Context& ctx, const std::vector<Item>& items) {
    return converge_each(ctx, items, [&ctx](const Item& item, ResourceResult& r) -> std::string {
        const std::string key = item.name;
        const std::string value = string_field(item.spec, "value");
        if (auto st = validate_sysctl_name(key); !st) return st.message();
        if (value.empty() || value.size() > 4096 || value.find_first_of("\r\n") != std::string::npos)
            return "value must be one non-empty line";
        for (unsigned char c : value) {
            if (c < 0x20 && c != '\t') return "value contains a control character";
        }
        const std::string file = "/etc/sysctl.d/90-nodeform-" + key + ".conf";
        const std::string content =
            "# Managed by nodeform: changes here are overwritten.\n" + key + " = " + value + "\n";
        const std::size_t before = r.changes.size();
        if (auto s = ensure_file(ctx, r, item.pointer + "/value", "file", file, content, 0644, 0, 0); !s)
            return s.message();
        bool load = r.changes.size() > before;
        std::string note;
        if (!ctx.offline) {
            auto live = ctx.fs.read(proc_path(key), 64 * 1024);
            if (!live) {
                if (ctx.apply())
                    return "kernel parameter " + key + " does not exist on this kernel (" + live.message() +
                           "); is its module loaded (kernel_modules)?";
                note = "; not present on this kernel yet";
            } else if (squeeze(*live) != squeeze(value)) {
                r.changes.push_back(ctx.change(item.pointer + "/value", "running", squeeze(*live), squeeze(value)));
                load = true;
            }
            if (load && ctx.apply()) {
                auto res = ctx.run({"sysctl", "-q", "-p", file}, ctx.short_timeout());
                if (!res) return "cannot load " + file + ": " + res.message();
            }
        } else if (!r.changes.empty()) {
            note = "; loaded at the machine's next boot";
        }
        r.message =
            (r.changes.empty() ? key + " = " + value : (ctx.apply() ? "set " : "would set ") + key + " = " + value) +
            note;
        return {};
    });
}

std::vector<ResourceResult> converge_kernel_modules(Context& ctx, const std::vector<Item>& items) {
    return converge_each(ctx, items, [&ctx](const Item& item, ResourceResult& r) -> std::string {
        const std::string name = item.name;
        if (auto st = validate_module_name(name); !st) return st.message();
        const std::string file = "/etc/modules-load.d/nodeform-" + name + ".conf";
        if (auto s = ensure_file(ctx, r, item.pointer, "file", file,
                                 "# Managed by nodeform: changes here are overwritten.\n" + name + "\n", 0644, 0, 0);
            !s)
            return s.message();
        if (!ctx.offline) {
            std::string sys = name;
            for (auto& c : sys) {
                if (c == '-') c = '_';
            }
            auto loaded = ctx.fs.stat("/sys/module/" + sys);
            if (!loaded) return loaded.message();
            if (!loaded->has_value()) {
                r.changes.push_back(ctx.change(item.pointer, "loaded", false, true));
                if (ctx.apply()) {
                    auto res = ctx.run({"modprobe", "--", name}, ctx.short_timeout());
                    if (!res) return "cannot load kernel module " + name + ": " + res.message();
                }
            }
        }
        r.message = r.changes.empty() ? "loaded at boot" + std::string(ctx.offline ? "" : " and now")
                                      : (ctx.apply() ? "configured" : "would configure") +
                                            std::string(ctx.offline ? " (loaded at the machine's next boot)" : "");
        return {};
    });
}

}  // namespace nodeform::agent
