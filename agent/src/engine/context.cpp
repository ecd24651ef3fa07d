#include "context.hpp"

#include <algorithm>
#include <cstdio>

#include "nodeform/agent/validate.hpp"
#include "nodeform/canonical_json.hpp"

namespace nodeform::agent {

std::string string_field(const nlohmann::json& j, const char* key, const std::string& fallback) {
    if (!j.is_object()) return fallback;
    auto it = j.find(key);
    return it != j.end() && it->is_string() ? it->get<std::string>() : fallback;
}

bool bool_field(const nlohmann::json& j, const char* key, bool fallback) {
    if (!j.is_object()) return fallback;
    auto it = j.find(key);
    return it != j.end() && it->is_boolean() ? it->get<bool>() : fallback;
}

Context::Context(ProcessRunner& r, Filesystem& f, Clock& c, Logger& l, const ConvergeOptions& o, RunMode m,
                 const nlohmann::json& spec)
    : runner(r), fs(f), clock(c), logger(l), options(o), mode(m) {
    offline = !(o.root.empty() || o.root == "/");
    if (!offline) {
        auto st = fs.stat("/run/systemd/system");
        systemd_running = st.ok() && st->has_value() && (*st)->type == FileType::directory;
    }
    secrets = collect_secrets(spec);
    if (auto files = spec.find("files"); files != spec.end() && files->is_array()) {
        for (const auto& f : *files) {
            if (bool_field(f, "template")) {
                facts = node_facts(fs, spec);
                break;
            }
        }
    }
    if (auto it = spec.find("secret_paths"); it != spec.end() && it->is_array()) {
        for (const auto& p : *it) {
            if (p.is_string()) secret_paths.push_back(p.get<std::string>());
        }
    }
}

bool Context::is_secret(const std::string& pointer) const {
    for (const auto& s : secret_paths) {
        if (s == pointer) return true;
        if (s.size() > pointer.size() && s.compare(0, pointer.size(), pointer) == 0 && s[pointer.size()] == '/') {
            return true;  // a secret inside this value
        }
        if (pointer.size() > s.size() && pointer.compare(0, s.size(), s) == 0 && pointer[s.size()] == '/') {
            return true;  // this value inside a secret
        }
    }
    return false;
}

FieldChange Context::change(const std::string& pointer, const std::string& field, nlohmann::json old_value,
                            nlohmann::json new_value) const {
    if (is_secret(pointer)) {
        if (!old_value.is_null()) old_value = "[REDACTED]";
        new_value = "[REDACTED]";
    }
    return FieldChange{field, std::move(old_value), std::move(new_value)};
}

std::string output_tail(const ProcessResult& result, std::size_t max_chars) {
    std::string text = result.err;
    auto trim = [](std::string s) {
        while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\r'))
            s.pop_back();
        std::size_t i = 0;
        while (i < s.size() && (s[i] == '\n' || s[i] == ' '))
            ++i;
        return s.substr(i);
    };
    text = trim(text);
    if (text.empty()) text = trim(result.out);
    if (text.size() > max_chars) text = "…" + text.substr(text.size() - max_chars);
    for (auto& ch : text) {
        if (ch == '\n') ch = ' ';
    }
    return text;
}

Result<ProcessResult> Context::run_raw(std::vector<std::string> argv, std::chrono::milliseconds timeout,
                                       std::map<std::string, std::string> env, std::string stdin_data) {
    ProcessRequest request;
    request.argv = std::move(argv);
    request.env = std::move(env);
    request.stdin_data = std::move(stdin_data);
    request.timeout = timeout;
    request.redact = secrets;
    logger.debug("running " + describe_command(request.argv, secrets));
    return runner.run(request);
}

Result<ProcessResult> Context::run(std::vector<std::string> argv, std::chrono::milliseconds timeout,
                                   std::map<std::string, std::string> env, std::string stdin_data) {
    std::string line = describe_command(argv, secrets);
    auto result = run_raw(std::move(argv), timeout, std::move(env), std::move(stdin_data));
    if (!result) return result.error();
    if (result->timed_out) {
        return make_error(line + " timed out after " + std::to_string(timeout.count() / 1000) + " s");
    }
    if (result->exit_code != 0) {
        std::string tail = output_tail(*result);
        return make_error(line + " exited with " + std::to_string(result->exit_code) +
                          (tail.empty() ? "" : ": " + tail));
    }
    return result;
}

std::vector<std::string> Context::in_root(std::vector<std::string> argv) const {
    if (!offline) return argv;
    std::vector<std::string> out = {"chroot", fs.root()};
    out.insert(out.end(), argv.begin(), argv.end());
    return out;
}

Result<AccountsDb> Context::accounts() {
    AccountsDb db;
    auto passwd = fs.read("/etc/passwd");
    if (!passwd) return make_error("cannot read the user database: " + passwd.message());
    auto group = fs.read("/etc/group");
    if (!group) return make_error("cannot read the group database: " + group.message());
    db.users = parse_passwd(*passwd);
    db.groups = parse_group(*group);
    return db;
}

ResourceResult make_result(const Item& item) {
    ResourceResult r;
    r.id = item.id;
    r.type = item.type;
    r.name = item.name;
    return r;
}

void finish_result(Context& ctx, ResourceResult& result, const std::string& error) {
    result.message = redact_secrets(result.message, ctx.secrets);
    if (!error.empty()) {
        result.status = ResourceStatus::failed;
        result.message = redact_secrets(error, ctx.secrets);
        return;
    }
    if (result.changes.empty()) {
        result.status = ResourceStatus::unchanged;
    } else {
        result.status = ctx.apply() ? ResourceStatus::changed : ResourceStatus::drifted;
    }
}

bool word_chars(const std::string& s, const std::string& extra) {
    if (s.empty() || s.size() > 256) return false;
    for (char c : s) {
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  extra.find(c) != std::string::npos;
        if (!ok) return false;
    }
    return true;
}

std::string updated_message(const Context& ctx, const ResourceResult& result) {
    std::string fields;
    for (const auto& c : result.changes)
        fields += (fields.empty() ? "" : ", ") + c.field;
    return (ctx.apply() ? "updated " : "would update ") + fields;
}

std::string first_line(const std::string& s) {
    std::string line = s.substr(0, s.find('\n'));
    while (!line.empty() && (line.back() == ' ' || line.back() == '\r'))
        line.pop_back();
    return line;
}

std::vector<std::string> systemctl(Context& ctx, std::vector<std::string> args) {
    std::vector<std::string> argv = {"systemctl"};
    if (!ctx.systemd_running) argv.push_back("--root=" + ctx.fs.root());
    argv.insert(argv.end(), args.begin(), args.end());
    return argv;
}

std::string octal_mode(mode_t mode) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(mode));
    return buf;
}

std::string short_fingerprint(const std::string& content) {
    return "sha256:" + sha256_hex(content).substr(0, 16);
}

std::optional<unsigned> resolve_account_id(const AccountsDb& db, const std::string& name, bool is_user) {
    if (auto id = numeric_account_id(name)) return id;  // validate_owner has refused ids out of range
    if (is_user) {
        if (const auto* u = db.user(name)) return u->uid;
    } else if (const auto* g = db.group(name)) {
        return g->gid;
    }
    return std::nullopt;
}

// Records a change of path's mode from have to want and makes it when applying; Ok when they agree.
Status ensure_mode(Context& ctx, ResourceResult& r, const std::string& pointer, const std::string& field,
                   const std::string& path, mode_t have, mode_t want) {
    if (have == want) return Ok{};
    r.changes.push_back(ctx.change(pointer, field, octal_mode(have), octal_mode(want)));
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
        r.changes.push_back(ctx.change(pointer, field_name, nullptr, short_fingerprint(*content)));
        rewrite = true;
    } else {
        auto old = ctx.fs.read(path);
        if (!old) return old.error();
        if (*old != *content) {
            r.changes.push_back(ctx.change(pointer, field_name, short_fingerprint(*old), short_fingerprint(*content)));
            rewrite = true;
        } else {
            if (auto c = ensure_mode(ctx, r, pointer, field_name + " mode", path, (*st)->mode, mode); !c) return c;
            if (auto c = ensure_owner(ctx, r, pointer, field_name + " owner", path, (*st)->uid, (*st)->gid, uid, gid);
                !c)
                return c;
        }
    }
    if (rewrite && ctx.apply()) {
        if (auto d = make_directories(ctx.fs, path.substr(0, std::max<std::size_t>(1, path.rfind('/'))), 0755); !d)
            return d;
        return ctx.fs.write_atomic(path, *content, {mode, uid, gid});
    }
    return Ok{};
}

}  // namespace nodeform::agent
