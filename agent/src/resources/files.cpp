// files: exact content (with template: true rendered from the node facts first), mode, owner and group; atomic replace;
// the previous content is kept under STATE_DIR/backup/<path>.<UTC time> (newest 5 per file) so a change can be undone.
#include <algorithm>
#include <cstdio>

#include "../engine/context.hpp"
#include "nodeform/agent/validate.hpp"
#include "nodeform/canonical_json.hpp"
#include "nodeform/template.hpp"

namespace nodeform::agent {
namespace {

using Ms = std::chrono::milliseconds;
constexpr std::size_t kBackupsKept = 5;

std::string digest_of(const std::string& content) {
    return "sha256:" + sha256_hex(content);
}

std::string compact_time(std::chrono::system_clock::time_point t) {
    std::string s = format_rfc3339(t);  // 2026-11-23T19:40:00.123Z
    std::string out;
    for (char c : s) {
        if (c != '-' && c != ':') out.push_back(c);
    }
    return out;  // 20261123T194000.123Z
}

Status backup(Context& ctx, const std::string& path, const std::string& content, const FileInfo& info) {
    const std::string dir = ctx.options.state_dir + "/backup" + path.substr(0, path.rfind('/'));
    const std::string base = path.substr(path.rfind('/') + 1);
    if (auto st = make_directories(ctx.fs, dir, 0700); !st) return st;
    if (auto st = ctx.fs.write_atomic(dir + "/" + base + "." + compact_time(ctx.clock.now()), content,
                                      {static_cast<mode_t>(info.mode & 0777), info.uid, info.gid});
        !st) {
        return st;
    }
    auto names = ctx.fs.list(dir);
    if (!names) return Ok{};
    std::vector<std::string> mine;
    for (const auto& n : *names) {
        if (n.size() > base.size() + 1 && n.compare(0, base.size() + 1, base + ".") == 0 &&
            n.find('.', base.size() + 1) != std::string::npos && n.back() == 'Z') {
            mine.push_back(n);
        }
    }
    std::sort(mine.begin(), mine.end());
    for (std::size_t i = 0; i + kBackupsKept < mine.size(); ++i)
        (void)ctx.fs.remove(dir + "/" + mine[i]);
    return Ok{};
}

}  // namespace

std::vector<ResourceResult> converge_files(Context& ctx, const std::vector<Item>& items) {
    std::vector<ResourceResult> results;
    auto db = ctx.accounts();
    for (const auto& item : items) {
        auto start = ctx.clock.steady_now();
        auto r = make_result(item);
        std::string error;
        const std::string path = string_field(item.spec, "path");
        const std::string state = string_field(item.spec, "state", "present");
        const std::string owner = string_field(item.spec, "owner", "root");
        const std::string group = string_field(item.spec, "group", "root");
        unsigned mode = 0644;
        const bool content_is_string =
            item.spec.is_object() && item.spec.contains("content") && item.spec["content"].is_string();
        std::string content = content_is_string ? item.spec["content"].get<std::string>() : std::string();
        const bool is_template = bool_field(item.spec, "template");

        if (auto st = validate_abs_path(path, "file path"); !st)
            error = st.message();
        else if (state != "present" && state != "absent")
            error = "state must be \"present\" or \"absent\"";
        else if (auto m = parse_mode(string_field(item.spec, "mode", "0644"), mode); !m)
            error = m.message();
        else if (auto o = validate_owner(owner, "owner"); !o)
            error = o.message();
        else if (auto g = validate_owner(group, "group"); !g)
            error = g.message();
        else if (state == "present" && content.size() > kMaxFileBytes)
            error = "content is " + std::to_string(content.size()) + " bytes; a managed file holds at most " +
                    std::to_string(kMaxFileBytes) + " bytes (16 MiB)";
        else if (state == "present" && !content_is_string)
            error = "content must be a string";
        else if (path.rfind(ctx.options.state_dir + "/", 0) == 0)
            error = "refusing to manage nodeform's own state directory";
        if (error.empty() && state == "present" && is_template) {
            auto rendered = render_template(content, ctx.facts);
            if (!rendered)
                error = "template: " + rendered.message();
            else if (rendered->size() > kMaxFileBytes)
                error = "the rendered template is larger than 16 MiB";
            else
                content = std::move(*rendered);
        }
        if (error.empty() && item.spec.is_object()) {
            if (auto it = item.spec.find("restart"); it != item.spec.end() && it->is_array()) {
                for (const auto& s : *it) {
                    if (!s.is_string())
                        error = "restart must list unit names";
                    else if (auto v = validate_unit_name(s.get<std::string>()); !v)
                        error = v.message();
                }
            }
        }
        std::optional<unsigned> uid, gid;
        if (error.empty() && state == "present") {
            if (!db)
                error = db.message();
            else {
                uid = resolve_account_id(*db, owner, true);
                gid = resolve_account_id(*db, group, false);
                if (!uid || !gid) {
                    std::string what = !uid ? "owner " + quote_for_message(owner) : "group " + quote_for_message(group);
                    if (ctx.apply())
                        error = what + " does not exist in the system; declare it in the spec's users or groups";
                }
            }
        }
        std::optional<FileInfo> info;
        if (error.empty()) {
            auto st = ctx.fs.stat(path);
            if (!st)
                error = st.message();
            else
                info = *st;
            if (error.empty() && info && info->type == FileType::directory) {
                error = ctx.fs.host_path(path) + " is a directory";
            }
        }
        if (error.empty() && state == "absent") {
            if (info) {
                r.changes.push_back(ctx.change(item.pointer + "/state", "state", "present", "absent"));
                if (ctx.apply()) {
                    if (info->type == FileType::regular) {
                        auto old = ctx.fs.read(path);
                        if (old) (void)backup(ctx, path, *old, *info);
                    }
                    if (auto st = ctx.fs.remove(path); !st) error = st.message();
                }
                r.message = ctx.apply() ? "removed" : "would remove";
            } else {
                r.message = "absent";
            }
        } else if (error.empty()) {
            bool rewrite = false;
            std::optional<std::string> old_content;
            if (!info || info->type != FileType::regular) {
                r.changes.push_back(ctx.change(item.pointer + "/content", "content",
                                               info ? nlohmann::json("not a regular file") : nlohmann::json(nullptr),
                                               digest_of(content)));
                rewrite = true;
            } else {
                auto old = ctx.fs.read(path);
                if (!old)
                    error = old.message();
                else if (*old != content) {
                    old_content = *old;
                    r.changes.push_back(
                        ctx.change(item.pointer + "/content", "content", digest_of(*old), digest_of(content)));
                    rewrite = true;
                }
                if (error.empty() && info->mode != mode) {
                    r.changes.push_back(
                        ctx.change(item.pointer + "/mode", "mode", octal_mode(info->mode), octal_mode(mode)));
                }
                if (error.empty() && uid && info->uid != *uid) {
                    r.changes.push_back(ctx.change(item.pointer + "/owner", "owner", info->uid, owner));
                }
                if (error.empty() && !uid)
                    r.changes.push_back(ctx.change(item.pointer + "/owner", "owner", info->uid, owner));
                if (error.empty() && gid && info->gid != *gid) {
                    r.changes.push_back(ctx.change(item.pointer + "/group", "group", info->gid, group));
                }
                if (error.empty() && !gid)
                    r.changes.push_back(ctx.change(item.pointer + "/group", "group", info->gid, group));
            }
            if (error.empty() && ctx.apply() && !r.changes.empty()) {
                const std::string parent = path.substr(0, std::max<std::size_t>(1, path.rfind('/')));
                if (auto st = make_directories(ctx.fs, parent, 0755); !st) error = st.message();
                if (error.empty() && old_content && info) {
                    if (auto st = backup(ctx, path, *old_content, *info); !st) {
                        error = "cannot keep a backup of the previous content, file left unchanged: " + st.message();
                    }
                }
                if (error.empty()) {
                    Status st = Ok{};
                    if (rewrite) {
                        st = ctx.fs.write_atomic(path, content, {static_cast<mode_t>(mode), *uid, *gid});
                    } else {
                        st = ctx.fs.chown(path, *uid, *gid);
                        if (st) st = ctx.fs.chmod(path, static_cast<mode_t>(mode));
                    }
                    if (!st) error = st.message();
                }
            }
            if (error.empty()) {
                if (r.changes.empty()) {
                    r.message = "up to date";
                } else {
                    r.message = updated_message(ctx, r);
                }
            }
        }
        if (error.empty() && ctx.apply() && !r.changes.empty() && item.spec.is_object()) {
            if (auto it = item.spec.find("restart"); it != item.spec.end() && it->is_array()) {
                for (const auto& s : *it)
                    ctx.restart_requests.insert(s.get<std::string>());
            }
        }
        finish_result(ctx, r, error);
        r.duration = std::chrono::duration_cast<Ms>(ctx.clock.steady_now() - start);
        results.push_back(r);
    }
    return results;
}

}  // namespace nodeform::agent
