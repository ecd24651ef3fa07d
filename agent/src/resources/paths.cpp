// directories (mode, owner, group; ownership of everything beneath only with recursive: true) and symlinks
// (path → target, replaced atomically; a file or directory in the way is never replaced). Paths stay inside the
// root through the Filesystem; a link's target is stored as given and never followed by the agent.
#include "../engine/context.hpp"
#include "converge_each.hpp"
#include "nodeform/agent/validate.hpp"

namespace nodeform::agent {
namespace {

constexpr std::size_t kMaxRecursiveEntries = 200000;

Status managed_path(Context& ctx, const std::string& path, const std::string& what) {
    if (auto st = validate_abs_path(path, what); !st) return st;
    if (path == "/") return make_error("refusing to manage the root directory itself");
    if (path == ctx.options.state_dir || path.rfind(ctx.options.state_dir + "/", 0) == 0)
        return make_error("refusing to manage nodeform's own state directory");
    return Ok{};
}

// Every entry below dir (not following symlinks) whose owner is not uid:gid; chowned when fix. Err past the cap.
Result<std::size_t> walk_owners(Context& ctx, const std::string& dir, uid_t uid, gid_t gid, bool fix,
                                std::size_t& seen) {
    auto names = ctx.fs.list(dir);
    if (!names) return names.error();
    std::size_t differ = 0;
    for (const auto& n : *names) {
        if (++seen > kMaxRecursiveEntries)
            return make_error("more than " + std::to_string(kMaxRecursiveEntries) +
                              " entries below the directory; recursive ownership is for small trees");
        const std::string path = dir == "/" ? "/" + n : dir + "/" + n;
        auto st = ctx.fs.stat(path);
        if (!st) return st.error();
        if (!st->has_value()) continue;
        if ((*st)->uid != uid || (*st)->gid != gid) {
            ++differ;
            if (fix) {
                if (auto c = ctx.fs.chown(path, uid, gid); !c) return c.error();
            }
        }
        if ((*st)->type == FileType::directory) {
            auto below = walk_owners(ctx, path, uid, gid, fix, seen);
            if (!below) return below.error();
            differ += *below;
        }
    }
    return differ;
}

}  // namespace

std::vector<ResourceResult> converge_directories(Context& ctx, const std::vector<Item>& items) {
    auto db = ctx.accounts();
    return converge_each(ctx, items, [&ctx, &db](const Item& item, ResourceResult& r) -> std::string {
        const std::string path = item.name;
        const std::string owner = string_field(item.spec, "owner", "root");
        const std::string group = string_field(item.spec, "group", "root");
        const bool recursive = bool_field(item.spec, "recursive");
        unsigned mode = 0755;
        if (auto st = managed_path(ctx, path, "directory path"); !st) return st.message();
        if (auto m = parse_mode(string_field(item.spec, "mode", "0755"), mode); !m) return m.message();
        if (auto o = validate_owner(owner, "owner"); !o) return o.message();
        if (auto g = validate_owner(group, "group"); !g) return g.message();
        if (!db) return db.message();
        auto uid = resolve_account_id(*db, owner, true);
        auto gid = resolve_account_id(*db, group, false);
        if ((!uid || !gid) && ctx.apply()) {
            return (!uid ? "owner " + quote_for_message(owner) : "group " + quote_for_message(group)) +
                   " does not exist in the system; declare it in the spec's users or groups";
        }
        auto st = ctx.fs.stat(path);
        if (!st) return st.message();
        if (st->has_value() && (*st)->type != FileType::directory)
            return ctx.fs.host_path(path) + " exists and is not a directory; nodeform does not replace it";
        if (!st->has_value()) {
            r.changes.push_back(ctx.change(item.pointer + "/path", "state", "absent", "directory"));
            if (ctx.apply()) {
                const std::string parent = path.substr(0, std::max<std::size_t>(1, path.rfind('/')));
                if (auto d = make_directories(ctx.fs, parent, 0755); !d) return d.message();
                if (auto d = ctx.fs.mkdir(path, mode); !d) return d.message();
                if (auto c = ctx.fs.chown(path, *uid, *gid); !c) return c.message();
            }
        } else {
            if (!uid || !gid)
                r.changes.push_back(ctx.change(item.pointer + "/owner", "owner",
                                               std::to_string((*st)->uid) + ":" + std::to_string((*st)->gid),
                                               owner + ":" + group));
            else if (auto c = ensure_owner(ctx, r, item.pointer + "/owner", "owner", path, (*st)->uid, (*st)->gid, *uid,
                                           *gid);
                     !c)
                return c.message();
            if (auto c = ensure_mode(ctx, r, item.pointer + "/mode", "mode", path, (*st)->mode, mode); !c)
                return c.message();
            if (recursive && uid && gid) {
                std::size_t seen = 0;
                auto differ = walk_owners(ctx, path, *uid, *gid, ctx.apply(), seen);
                if (!differ) return differ.message();
                if (*differ > 0)
                    r.changes.push_back(ctx.change(item.pointer + "/recursive", "owner (recursive)",
                                                   std::to_string(*differ) + " entries differ", owner + ":" + group));
            }
        }
        if (r.changes.empty()) {
            r.message = "up to date";
        } else if (!st->has_value()) {
            r.message = ctx.apply() ? "created" : "would create";
        } else {
            r.message = updated_message(ctx, r);
        }
        return {};
    });
}

std::vector<ResourceResult> converge_symlinks(Context& ctx, const std::vector<Item>& items) {
    return converge_each(ctx, items, [&ctx](const Item& item, ResourceResult& r) -> std::string {
        const std::string path = item.name;
        const std::string target = string_field(item.spec, "target");
        const std::string state = string_field(item.spec, "state", "present");
        if (auto st = managed_path(ctx, path, "symlink path"); !st) return st.message();
        if (state != "present" && state != "absent") return "state must be \"present\" or \"absent\"";
        if (state == "present") {
            if (target.empty() || target.size() > 4096) return "target must be 1-4096 characters";
            for (unsigned char c : target) {
                if (c < 0x20 || c == 0x7f)
                    return "target " + quote_for_message(target) + " contains a control character";
            }
        }
        auto st = ctx.fs.stat(path);
        if (!st) return st.message();
        std::optional<std::string> have;
        if (st->has_value()) {
            if ((*st)->type != FileType::symlink)
                return ctx.fs.host_path(path) + " exists and is not a symlink; nodeform does not replace or remove it";
            auto t = ctx.fs.read_link(path);
            if (!t) return t.message();
            have = *t;
        }
        if (state == "absent") {
            if (have) {
                r.changes.push_back(ctx.change(item.pointer + "/state", "state", "present", "absent"));
                if (ctx.apply()) {
                    if (auto s = ctx.fs.remove(path); !s) return s.message();
                }
            }
            r.message = have ? (ctx.apply() ? "removed" : "would remove") : "absent";
            return {};
        }
        if (have != target) {
            r.changes.push_back(ctx.change(item.pointer + "/target", "target",
                                           have ? nlohmann::json(*have) : nlohmann::json(nullptr), target));
            if (ctx.apply()) {
                const std::string parent = path.substr(0, std::max<std::size_t>(1, path.rfind('/')));
                if (auto d = make_directories(ctx.fs, parent, 0755); !d) return d.message();
                if (auto s = ctx.fs.symlink(target, path); !s) return s.message();
            }
        }
        r.message =
            r.changes.empty() ? "points to " + target : (ctx.apply() ? "now points to " : "would point to ") + target;
        return {};
    });
}

}  // namespace nodeform::agent
