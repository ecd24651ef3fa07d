// timezone: /etc/localtime a symlink to /usr/share/zoneinfo/ZONE and /etc/timezone holding ZONE, the zone checked
// against the zoneinfo database inside the root (a TZif file), so a typo never leaves a node without a zone.
#include "../engine/context.hpp"
#include "converge_each.hpp"
#include "nodeform/agent/validate.hpp"

namespace nodeform::agent {

Status validate_timezone_name(const std::string& zone) {
    const std::string rule = "an IANA zone name such as \"Europe/Berlin\" or \"Etc/UTC\"";
    if (zone.empty() || zone.size() > 128 || zone.front() == '/' || zone.back() == '/')
        return make_error("invalid time zone " + quote_for_message(zone) + ": " + rule);
    for (char c : zone) {
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
                  c == '+' || c == '/';
        if (!ok) return make_error("invalid time zone " + quote_for_message(zone) + ": " + rule);
    }
    if (auto st = validate_abs_path("/" + zone, "time zone"); !st)
        return make_error("invalid time zone " + quote_for_message(zone) + ": " + rule);
    return Ok{};
}

std::vector<ResourceResult> converge_timezone(Context& ctx, const std::vector<Item>& items) {
    return converge_each(ctx, items, [&ctx](const Item& item, ResourceResult& r) -> std::string {
        const std::string zone = item.name;
        if (auto st = validate_timezone_name(zone); !st) return st.message();
        const std::string zoneinfo = "/usr/share/zoneinfo/" + zone;
        auto data = ctx.fs.read(zoneinfo, 1024 * 1024);
        if (!data || data->compare(0, 4, "TZif") != 0) {
            auto dir = ctx.fs.stat("/usr/share/zoneinfo");
            bool no_db = !dir || !dir->has_value();
            std::string why = no_db ? "this system has no /usr/share/zoneinfo; add the package tzdata to the spec"
                                    : "time zone " + quote_for_message(zone) + " is not in /usr/share/zoneinfo (" +
                                          (data ? std::string("not a TZif file") : data.message()) + ")";
            if (ctx.apply() || !no_db) return why;
            r.changes.push_back(ctx.change(item.pointer, "localtime", nullptr, zoneinfo));
            r.message = "would set " + zone + " (" + why + ")";
            return {};
        }
        auto st = ctx.fs.stat("/etc/localtime");
        if (!st) return st.message();
        std::optional<std::string> link;
        if (st->has_value() && (*st)->type == FileType::symlink) {
            auto target = ctx.fs.read_link("/etc/localtime");
            if (!target) return target.message();
            link = *target;
        } else if (st->has_value() && (*st)->type == FileType::directory) {
            return ctx.fs.host_path("/etc/localtime") + " is a directory";
        }
        if (link != zoneinfo) {
            nlohmann::json old = link              ? nlohmann::json(*link)
                                 : st->has_value() ? nlohmann::json("not a symlink")
                                                   : nlohmann::json(nullptr);
            r.changes.push_back(ctx.change(item.pointer, "localtime", old, zoneinfo));
            if (ctx.apply()) {
                if (auto s = ctx.fs.symlink(zoneinfo, "/etc/localtime"); !s) return s.message();
            }
        }
        if (auto s = ensure_file(ctx, r, item.pointer, "timezone", "/etc/timezone", zone + "\n", 0644, 0, 0); !s)
            return s.message();
        r.message = r.changes.empty() ? "time zone is " + zone
                                      : (ctx.apply() ? "time zone set to " : "would set time zone to ") + zone;
        return {};
    });
}

}  // namespace nodeform::agent
