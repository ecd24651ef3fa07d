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
    std::optional<std::string> password;  // a crypt(3) hash; a secret
    bool locked = false;
};

// A crypt(3) hash as /etc/shadow holds it: "$id$..." of [A-Za-z0-9./$=,+-]; the message never shows the value.
Status validate_password_hash(const std::string& hash) {
    bool ok = hash.size() >= 3 && hash.size() <= 1024 && hash[0] == '$';
    for (char c : hash) {
        ok = ok && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                    c == '/' || c == '$' || c == '=' || c == ',' || c == '+' || c == '-');
    }
    if (ok) return Ok{};
    return make_error(
        "password must be a crypt(3) hash such as \"$y$…\" or \"$6$…\" (mkpasswd or openssl passwd -6 make one); "
        "the value is not shown");
}

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
    if (auto p = item.spec.is_object() ? item.spec.find("password") : item.spec.end();
        item.spec.is_object() && p != item.spec.end() && p->is_string()) {
        if (auto st = validate_password_hash(p->get<std::string>()); !st) return st.error();
        u.password = p->get<std::string>();
    }
    u.locked = flag(item.spec, "locked");
    if (u.state == "absent" && u.name == "root") return make_error("refusing to remove the root account");
    return u;
}

std::string sudoers_content(const UserSpec& u) {
    return "# Managed by nodeform: changes here are overwritten.\n" + u.name +
           (u.nopasswd ? " ALL=(ALL:ALL) NOPASSWD: ALL\n" : " ALL=(ALL:ALL) ALL\n");
}

// The password hash and the lock: /etc/shadow read through the Filesystem, changed with `chpasswd -e` (the hash on
// stdin, never in argv) and `usermod -e 1` / `usermod -e ""` (an expired account refuses every login, SSH keys too).
Status converge_password(Context& ctx, ResourceResult& r, const Item& item, const UserSpec& u) {
    auto text = ctx.fs.read("/etc/shadow");
    std::optional<ShadowEntry> entry;
    if (text) {
        for (auto& e : parse_shadow(*text)) {
            if (e.name == u.name) entry = e;
        }
    }
    if (!entry) {
        if (ctx.apply() && (u.password || u.locked))
            return make_error("user " + u.name + " has no line in /etc/shadow" + (text ? "" : ": " + text.message()));
        if (u.password) r.changes.push_back(ctx.change(item.pointer + "/password", "password", nullptr, "set"));
        if (u.locked) r.changes.push_back(ctx.change(item.pointer + "/locked", "locked", nullptr, true));
        return Ok{};
    }
    const std::string& have = entry->password;
    const bool have_locked = !have.empty() && have[0] == '!';
    const std::string base =
        have.substr(have.find_first_not_of('!') == std::string::npos ? have.size() : have.find_first_not_of('!'));
    const std::string want_base = u.password ? *u.password : base;
    // Without a hash there is nothing to unlock: the field stays as useradd left it ("!": no password).
    const std::string want = u.locked ? "!" + want_base : want_base.empty() ? have : want_base;
    if (want != have) {
        if (u.password && base != *u.password)
            r.changes.push_back(ctx.change(item.pointer + "/password", "password", "other", "set"));
        // A bare "!" (useradd's "no password yet") is not a lock.
        const bool locked_now = have_locked && !base.empty();
        if (locked_now != u.locked && !(want_base.empty() && !u.locked))
            r.changes.push_back(ctx.change(item.pointer + "/locked", "locked", locked_now, u.locked));
        if (ctx.apply()) {
            auto res = ctx.run(with_root(ctx, {"chpasswd", "-e"}), ctx.short_timeout(), {}, u.name + ":" + want + "\n");
            if (!res) return make_error("cannot set the password of " + u.name + ": " + res.message());
        }
    }
    const bool expired = entry->expire == "1";
    if (expired != u.locked) {
        r.changes.push_back(ctx.change(item.pointer + "/locked", "account expired", expired, u.locked));
        if (ctx.apply()) {
            auto res = ctx.run(with_root(ctx, {"usermod", "-e", u.locked ? "1" : "", u.name}), ctx.short_timeout());
            if (!res)
                return make_error("cannot " + std::string(u.locked ? "lock " : "unlock ") + u.name + ": " +
                                  res.message());
        }
    }
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
            if (error.empty()) {
                if (auto s = converge_password(ctx, r, item, u); !s) error = s.message();
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
