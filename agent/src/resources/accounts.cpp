// groups and users: checked by reading /etc/group and /etc/passwd, changed with groupadd/groupmod/
// groupdel/useradd/usermod/userdel (their --root option for an offline root). authorized_keys and the
// sudoers drop-in are written through the Filesystem; the drop-in is checked with visudo -cf first.
#include <algorithm>
#include <set>

#include "../engine/context.hpp"
#include "converge_each.hpp"
#include "nodeform/agent/validate.hpp"
#include "nodeform/canonical_json.hpp"

namespace nodeform::agent {
namespace {

bool flag(const nlohmann::json& j, const char* key) {
    if (!j.is_object()) return false;
    auto it = j.find(key);
    return it != j.end() && it->is_boolean() && it->get<bool>();
}

std::optional<long long> number(const nlohmann::json& j, const char* key) {
    if (!j.is_object()) return std::nullopt;
    auto it = j.find(key);
    if (it == j.end() || !it->is_number_integer()) return std::nullopt;
    return it->get<long long>();
}

std::vector<std::string> strings(const nlohmann::json& j, const char* key) {
    std::vector<std::string> out;
    if (!j.is_object()) return out;
    auto it = j.find(key);
    if (it == j.end() || !it->is_array()) return out;
    for (const auto& v : *it) {
        if (v.is_string()) out.push_back(v.get<std::string>());
    }
    return out;
}

std::vector<std::string> with_root(Context& ctx, std::vector<std::string> argv) {
    if (ctx.offline) argv.insert(argv.begin() + 1, {"--root", ctx.fs.root()});
    return argv;
}

std::string join(const std::vector<std::string>& v, const std::string& sep) {
    std::string out;
    for (const auto& s : v)
        out += (out.empty() ? "" : sep) + s;
    return out;
}

std::string fingerprint(const std::string& content) {
    return "sha256:" + sha256_hex(content).substr(0, 16);
}

}  // namespace

std::vector<ResourceResult> converge_groups(Context& ctx, const std::vector<Item>& items) {
    return converge_each(ctx, items, [&ctx](const Item& item, ResourceResult& r) {
        std::string error;
        std::string name = string_field(item.spec, "name");
        std::string state = string_field(item.spec, "state", "present");
        auto gid = number(item.spec, "gid");
        if (auto st = validate_account_name(name, "group name"); !st)
            error = st.message();
        else if (state != "present" && state != "absent")
            error = "state must be \"present\" or \"absent\"";
        else if (gid && (*gid < 0 || *gid > 4294967294LL))
            error = "gid " + std::to_string(*gid) + " is out of range";
        if (error.empty()) {
            auto db = ctx.accounts();
            if (!db) {
                error = db.message();
            } else if (const GroupEntry* g = db->group(name); state == "present") {
                if (g == nullptr) {
                    r.changes.push_back(ctx.change(item.pointer + "/state", "state", "absent", "present"));
                    if (ctx.apply()) {
                        std::vector<std::string> argv = {"groupadd"};
                        if (gid) argv.insert(argv.end(), {"-g", std::to_string(*gid)});
                        argv.push_back(name);
                        auto res = ctx.run(with_root(ctx, argv), ctx.short_timeout());
                        if (!res) error = "cannot create group " + name + ": " + res.message();
                    }
                    r.message = ctx.apply() ? "created" : "would create";
                } else if (gid && static_cast<long long>(g->gid) != *gid) {
                    r.changes.push_back(ctx.change(item.pointer + "/gid", "gid", g->gid, *gid));
                    if (ctx.apply()) {
                        auto res = ctx.run(with_root(ctx, {"groupmod", "-g", std::to_string(*gid), name}),
                                           ctx.short_timeout());
                        if (!res) error = "cannot change the gid of group " + name + ": " + res.message();
                    }
                    r.message = (ctx.apply() ? "gid changed to " : "would change gid to ") + std::to_string(*gid);
                } else {
                    r.message = "exists (gid " + std::to_string(g->gid) + ")";
                }
            } else if (g != nullptr) {
                r.changes.push_back(ctx.change(item.pointer + "/state", "state", "present", "absent"));
                if (ctx.apply()) {
                    auto res = ctx.run(with_root(ctx, {"groupdel", name}), ctx.short_timeout());
                    if (!res) error = "cannot remove group " + name + ": " + res.message();
                }
                r.message = ctx.apply() ? "removed" : "would remove";
            } else {
                r.message = "absent";
            }
        }
        return error;
    });
}

namespace {

struct UserSpec {
    std::string name;
    std::string state;
    std::optional<long long> uid;
    std::string shell;
    std::string home;
    std::vector<std::string> groups;
    bool sudo = false;
    bool nopasswd = false;
    std::vector<std::string> keys;
};

Result<UserSpec> read_user_spec(const Item& item) {
    UserSpec u;
    u.name = string_field(item.spec, "name");
    if (auto st = validate_account_name(u.name, "user name"); !st) return st.error();
    u.state = string_field(item.spec, "state", "present");
    if (u.state != "present" && u.state != "absent") return make_error("state must be \"present\" or \"absent\"");
    u.uid = number(item.spec, "uid");
    if (u.uid && (*u.uid < 0 || *u.uid > 4294967294LL))
        return make_error("uid " + std::to_string(*u.uid) + " is out of range");
    u.shell = string_field(item.spec, "shell", "/bin/bash");
    if (auto st = validate_passwd_path(u.shell, "shell"); !st) return st.error();
    u.home = string_field(item.spec, "home", "/home/" + u.name);
    if (auto st = validate_passwd_path(u.home, "home"); !st) return st.error();
    u.groups = strings(item.spec, "groups");
    for (const auto& g : u.groups) {
        if (auto st = validate_account_name(g, "group name"); !st) return st.error();
    }
    std::sort(u.groups.begin(), u.groups.end());
    u.groups.erase(std::unique(u.groups.begin(), u.groups.end()), u.groups.end());
    u.sudo = flag(item.spec, "sudo");
    u.nopasswd = flag(item.spec, "sudo_nopasswd");
    u.keys = strings(item.spec, "ssh_keys");
    for (std::size_t i = 0; i < u.keys.size(); ++i) {
        const auto& k = u.keys[i];
        if (k.empty() || k.find_first_of("\r\n") != std::string::npos || k.find('\0') != std::string::npos) {
            return make_error("ssh_keys[" + std::to_string(i) + "] must be one non-empty line");
        }
    }
    if (u.state == "absent" && u.name == "root") return make_error("refusing to remove the root account");
    return u;
}

std::string sudoers_content(const UserSpec& u) {
    return "# Managed by nodeform: changes here are overwritten.\n" + u.name +
           (u.nopasswd ? " ALL=(ALL:ALL) NOPASSWD: ALL\n" : " ALL=(ALL:ALL) ALL\n");
}

// Records a change of path's mode from have to want and makes it when applying; Ok when they agree.
Status ensure_mode(Context& ctx, ResourceResult& r, const std::string& pointer, const std::string& field,
                   const std::string& path, mode_t have, mode_t want) {
    if (have == want) return Ok{};
    char oldm[8], newm[8];
    std::snprintf(oldm, sizeof oldm, "%04o", static_cast<unsigned>(have));
    std::snprintf(newm, sizeof newm, "%04o", static_cast<unsigned>(want));
    r.changes.push_back(ctx.change(pointer, field, oldm, newm));
    if (ctx.apply()) return ctx.fs.chmod(path, want);
    return Ok{};
}

// Records a change of path's owner from have_uid:have_gid to uid:gid and makes it when applying.
Status ensure_owner(Context& ctx, ResourceResult& r, const std::string& pointer, const std::string& field,
                    const std::string& path, uid_t have_uid, gid_t have_gid, uid_t uid, gid_t gid) {
    if (have_uid == uid && have_gid == gid) return Ok{};
    r.changes.push_back(ctx.change(pointer, field, std::to_string(have_uid) + ":" + std::to_string(have_gid),
                                   std::to_string(uid) + ":" + std::to_string(gid)));
    if (ctx.apply()) return ctx.fs.chown(path, uid, gid);
    return Ok{};
}

// Ensures a directory with mode and owner; records a change; Err on failure.
Status ensure_dir(Context& ctx, ResourceResult& r, const std::string& pointer, const std::string& path, mode_t mode,
                  uid_t uid, gid_t gid) {
    auto st = ctx.fs.stat(path);
    if (!st) return st.error();
    if (!st->has_value()) {
        r.changes.push_back(ctx.change(pointer, path, nullptr, "directory"));
        if (ctx.apply()) {
            if (auto m = ctx.fs.mkdir(path, mode); !m) return m;
            if (auto c = ctx.fs.chown(path, uid, gid); !c) return c;
        }
        return Ok{};
    }
    if ((*st)->type != FileType::directory)
        return make_error(ctx.fs.host_path(path) + " exists and is not a directory");
    if (auto c = ensure_owner(ctx, r, pointer, path + " owner", path, (*st)->uid, (*st)->gid, uid, gid); !c) return c;
    if (auto c = ensure_mode(ctx, r, pointer, path + " mode", path, (*st)->mode, mode); !c) return c;
    return Ok{};
}

// Ensures a file's exact content, mode and owner (or its absence when content is nullopt).
Status ensure_file(Context& ctx, ResourceResult& r, const std::string& pointer, const std::string& field_name,
                   const std::string& path, const std::optional<std::string>& content, mode_t mode, uid_t uid,
                   gid_t gid) {
    auto st = ctx.fs.stat(path);
    if (!st) return st.error();
    if (!content) {
        if (st->has_value()) {
            r.changes.push_back(ctx.change(pointer, field_name, "present", "absent"));
            if (ctx.apply()) return ctx.fs.remove(path);
        }
        return Ok{};
    }
    bool rewrite = false;
    if (!st->has_value() || (*st)->type != FileType::regular) {
        r.changes.push_back(ctx.change(pointer, field_name, nullptr, fingerprint(*content)));
        rewrite = true;
    } else {
        auto old = ctx.fs.read(path);
        if (!old) return old.error();
        if (*old != *content) {
            r.changes.push_back(ctx.change(pointer, field_name, fingerprint(*old), fingerprint(*content)));
            rewrite = true;
        } else {
            if (auto c = ensure_mode(ctx, r, pointer, field_name + " mode", path, (*st)->mode, mode); !c) return c;
            if (auto c = ensure_owner(ctx, r, pointer, field_name + " owner", path, (*st)->uid, (*st)->gid, uid, gid);
                !c)
                return c;
        }
    }
    if (rewrite && ctx.apply()) return ctx.fs.write_atomic(path, *content, {mode, uid, gid});
    return Ok{};
}

Status converge_sudo(Context& ctx, ResourceResult& r, const Item& item, const UserSpec& u) {
    const std::string path = "/etc/sudoers.d/nodeform-" + u.name;
    auto st = ctx.fs.stat(path);
    if (!st) return st.error();
    if (!u.sudo) {
        if (st->has_value()) {
            r.changes.push_back(ctx.change(item.pointer + "/sudo", "sudo", true, false));
            if (ctx.apply()) return ctx.fs.remove(path);
        }
        return Ok{};
    }
    const std::string content = sudoers_content(u);
    bool same = false;
    if (st->has_value() && (*st)->type == FileType::regular) {
        auto old = ctx.fs.read(path);
        same = old && *old == content && (*st)->mode == 0440 && (*st)->uid == 0 && (*st)->gid == 0;
    }
    if (same) return Ok{};
    nlohmann::json old_value = st->has_value() ? nlohmann::json("other rule") : nlohmann::json(false);
    r.changes.push_back(ctx.change(item.pointer + "/sudo", "sudo", old_value, u.nopasswd ? "nopasswd" : "password"));
    if (!ctx.apply()) return Ok{};
    auto dir = ctx.fs.stat("/etc/sudoers.d");
    if (!dir || !dir->has_value()) {
        return make_error("sudo is not installed (no /etc/sudoers.d); add the package sudo to the spec");
    }
    // sudo ignores files in sudoers.d whose name contains '.', so the candidate is inert until renamed.
    const std::string candidate = "/etc/sudoers.d/.nodeform-" + u.name + ".check";
    if (auto w = ctx.fs.write_atomic(candidate, content, {0440, 0, 0}); !w) return w;
    auto res = ctx.run(ctx.in_root({"visudo", "-cf", candidate}), ctx.short_timeout());
    if (!res) {
        (void)ctx.fs.remove(candidate);
        return make_error("visudo rejected the sudoers rule, nothing installed: " + res.message());
    }
    return ctx.fs.rename(candidate, path);
}

}  // namespace

std::vector<ResourceResult> converge_users(Context& ctx, const std::vector<Item>& items) {
    return converge_each(ctx, items, [&ctx](const Item& item, ResourceResult& r) {
        auto spec = read_user_spec(item);
        if (!spec) return spec.message();
        const UserSpec& u = *spec;
        std::string error;
        auto db = ctx.accounts();
        if (!db) error = db.message();
        const PasswdEntry* existing = db ? db->user(u.name) : nullptr;
        std::vector<std::string> notes;

        if (error.empty() && u.state == "absent") {
            if (existing != nullptr) {
                if (existing->uid == 0) {
                    error = "refusing to remove " + u.name + ": it has uid 0";
                } else {
                    r.changes.push_back(ctx.change(item.pointer + "/state", "state", "present", "absent"));
                    if (ctx.apply()) {
                        auto res = ctx.run(with_root(ctx, {"userdel", u.name}), ctx.short_timeout());
                        if (!res)
                            error = "cannot remove user " + u.name + ": " + res.message();
                        else
                            (void)ctx.fs.remove("/etc/sudoers.d/nodeform-" + u.name);
                    }
                    notes.push_back(ctx.apply() ? "removed (home directory kept)" : "would remove");
                }
            } else {
                notes.push_back("absent");
            }
        } else if (error.empty()) {
            for (const auto& g : u.groups) {
                if (db->group(g) == nullptr && ctx.apply()) {
                    error = "group " + g + " does not exist; declare it in the spec's groups";
                }
            }
        }
        if (error.empty() && u.state == "present") {
            if (existing == nullptr) {
                r.changes.push_back(ctx.change(item.pointer + "/state", "state", "absent", "present"));
                if (!u.groups.empty())
                    r.changes.push_back(
                        ctx.change(item.pointer + "/groups", "groups", nlohmann::json::array(), u.groups));
                if (ctx.apply()) {
                    std::vector<std::string> argv = {"useradd", "-m", "-d", u.home, "-s", u.shell};
                    if (u.uid) argv.insert(argv.end(), {"-u", std::to_string(*u.uid)});
                    if (db->group(u.name) != nullptr)
                        argv.insert(argv.end(), {"-g", u.name});
                    else
                        argv.push_back("-U");
                    if (!u.groups.empty()) argv.insert(argv.end(), {"-G", join(u.groups, ",")});
                    argv.push_back(u.name);
                    auto res = ctx.run(with_root(ctx, argv), ctx.short_timeout());
                    if (!res) error = "cannot create user " + u.name + ": " + res.message();
                }
                notes.push_back(ctx.apply() ? "created" : "would create");
            } else {
                std::vector<std::string> argv = {"usermod"};
                if (u.uid && static_cast<long long>(existing->uid) != *u.uid) {
                    r.changes.push_back(ctx.change(item.pointer + "/uid", "uid", existing->uid, *u.uid));
                    argv.insert(argv.end(), {"-u", std::to_string(*u.uid)});
                }
                if (existing->shell != u.shell) {
                    r.changes.push_back(ctx.change(item.pointer + "/shell", "shell", existing->shell, u.shell));
                    argv.insert(argv.end(), {"-s", u.shell});
                }
                if (existing->home != u.home) {
                    r.changes.push_back(ctx.change(item.pointer + "/home", "home", existing->home, u.home));
                    argv.insert(argv.end(), {"-d", u.home, "-m"});
                }
                auto current = db->supplementary_groups(u.name);
                std::sort(current.begin(), current.end());
                if (current != u.groups) {
                    r.changes.push_back(ctx.change(item.pointer + "/groups", "groups", current, u.groups));
                    argv.insert(argv.end(), {"-G", join(u.groups, ",")});
                }
                if (argv.size() > 1 && ctx.apply()) {
                    argv.push_back(u.name);
                    auto res = ctx.run(with_root(ctx, argv), ctx.short_timeout());
                    if (!res) error = "cannot modify user " + u.name + ": " + res.message();
                }
                if (!r.changes.empty()) notes.push_back(ctx.apply() ? "modified" : "would modify");
            }
        }
        // Keys and sudo need the account as it is now.
        if (error.empty() && u.state == "present") {
            std::size_t before = r.changes.size();
            const PasswdEntry* now = nullptr;
            AccountsDb fresh;
            if (ctx.apply()) {
                auto again = ctx.accounts();
                if (!again)
                    error = again.message();
                else
                    fresh = *again;
                now = fresh.user(u.name);
                if (error.empty() && now == nullptr) error = "user " + u.name + " is missing after useradd";
            } else {
                now = existing;
            }
            if (error.empty() && now != nullptr) {
                std::string home = now->home;
                std::optional<std::string> keys;
                if (!u.keys.empty()) keys = join(u.keys, "\n") + "\n";
                auto home_st = ctx.fs.stat(home);
                if (!home_st) {
                    error = home_st.message();
                } else if (!home_st->has_value()) {
                    if (auto s = ensure_dir(ctx, r, item.pointer + "/home", home, 0700, now->uid, now->gid); !s)
                        error = s.message();
                }
                auto ssh_dir_st = ctx.fs.stat(home + "/.ssh");
                bool need_dir = keys.has_value() || (ssh_dir_st && ssh_dir_st->has_value());
                if (error.empty() && need_dir && keys) {
                    if (auto s =
                            ensure_dir(ctx, r, item.pointer + "/ssh_keys", home + "/.ssh", 0700, now->uid, now->gid);
                        !s) {
                        error = s.message();
                    }
                }
                if (error.empty() && (keys || (ssh_dir_st && ssh_dir_st->has_value()))) {
                    if (auto s = ensure_file(ctx, r, item.pointer + "/ssh_keys", "authorized_keys",
                                             home + "/.ssh/authorized_keys", keys, 0600, now->uid, now->gid);
                        !s) {
                        error = "cannot write authorized_keys: " + s.message();
                    }
                }
            } else if (error.empty() && now == nullptr && !u.keys.empty()) {
                r.changes.push_back(ctx.change(item.pointer + "/ssh_keys", "authorized_keys", nullptr,
                                               std::to_string(u.keys.size()) + " keys"));
            }
            if (error.empty()) {
                if (auto s = converge_sudo(ctx, r, item, u); !s) error = s.message();
            }
            if (r.changes.size() > before && notes.empty()) notes.push_back(ctx.apply() ? "updated" : "would update");
        }
        if (error.empty()) {
            std::set<std::string> fields;
            for (const auto& c : r.changes)
                fields.insert(c.field);
            r.message = notes.empty() ? "up to date" : join(notes, ", ");
            if (!r.changes.empty()) {
                std::vector<std::string> f(fields.begin(), fields.end());
                r.message += " (" + join(f, ", ") + ")";
            }
        }
        return error;
    });
}

}  // namespace nodeform::agent
