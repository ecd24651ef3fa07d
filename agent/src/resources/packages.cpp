// packages: installed state from /var/lib/dpkg/status (no process per package); one apt-get install
// for everything missing or at another version than pinned (NAME=VERSION, a prefix resolved with apt-cache madison),
// one apt-get purge for everything to remove, one apt-mark hold/unhold for holds. Offline roots run apt in a chroot.
#include <algorithm>
#include <optional>
#include <set>

#include "../engine/context.hpp"
#include "nodeform/agent/validate.hpp"

namespace nodeform::agent {
namespace {

using Ms = std::chrono::milliseconds;

const DpkgPackage* find_package(const Result<std::map<std::string, DpkgPackage>>& db, const std::string& name) {
    if (!db) return nullptr;
    auto it = db->find(name);
    return it == db->end() ? nullptr : &it->second;
}

// Package lists present and younger than the bound?
bool lists_fresh(Context& ctx) {
    auto names = ctx.fs.list("/var/lib/apt/lists");
    if (!names) return false;
    std::chrono::system_clock::time_point newest{};
    bool any = false;
    for (const auto& n : *names) {
        if (n.find("_Packages") == std::string::npos) continue;
        auto st = ctx.fs.stat("/var/lib/apt/lists/" + n);
        if (!st || !st->has_value()) continue;
        any = true;
        newest = std::max(newest, (*st)->mtime);
    }
    return any && ctx.clock.now() - newest < ctx.options.apt_lists_max_age;
}

// Packages apt has a candidate for, out of names (one apt-cache call).
Result<std::set<std::string>> known_packages(Context& ctx, const std::vector<std::string>& names) {
    std::vector<std::string> argv = {"apt-cache", "policy"};
    argv.insert(argv.end(), names.begin(), names.end());
    auto res = ctx.run(ctx.in_root(argv), ctx.short_timeout());
    if (!res) return res.error();
    std::set<std::string> known;
    std::string current;
    std::size_t start = 0;
    const std::string& out = res->out;
    while (start < out.size()) {
        std::size_t end = out.find('\n', start);
        if (end == std::string::npos) end = out.size();
        std::string line = out.substr(start, end - start);
        start = end + 1;
        if (!line.empty() && line[0] != ' ' && line.back() == ':') {
            current = line.substr(0, line.size() - 1);
        } else if (!current.empty()) {
            auto pos = line.find("Candidate:");
            if (pos != std::string::npos) {
                std::string candidate = line.substr(pos + 10);
                while (!candidate.empty() && candidate.front() == ' ')
                    candidate.erase(0, 1);
                if (candidate != "(none)" && !candidate.empty()) {
                    known.insert(current);
                    auto colon = current.find(':');
                    if (colon != std::string::npos) known.insert(current.substr(0, colon));
                }
            }
        }
    }
    return known;
}

// An exact Debian version, or a prefix ending in '*'.
Status validate_version(const std::string& v) {
    std::string body = !v.empty() && v.back() == '*' ? v.substr(0, v.size() - 1) : v;
    bool ok = !body.empty() && body.size() <= 127 && body[0] >= '0' && body[0] <= '9';
    for (char c : body) {
        ok = ok && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                    c == '+' || c == '~' || c == ':' || c == '-');
    }
    if (ok) return Ok{};
    return make_error("invalid version " + quote_for_message(v) +
                      ": a Debian version (letters, digits and '.+~:-', starting with a digit), optionally ending in "
                      "'*' for a prefix");
}

bool version_matches(const std::string& installed, const std::string& wanted) {
    if (wanted.empty()) return true;
    if (wanted.back() == '*') return installed.rfind(wanted.substr(0, wanted.size() - 1), 0) == 0;
    return installed == wanted;
}

// The first version apt offers for name that matches wanted (apt-cache madison lists the newest first).
Result<std::string> candidate_version(Context& ctx, const std::string& name, const std::string& wanted) {
    if (wanted.back() != '*') return wanted;
    auto res = ctx.run(ctx.in_root({"apt-cache", "madison", name}), ctx.short_timeout());
    if (!res) return res.error();
    std::size_t start = 0;
    const std::string& out = res->out;
    while (start < out.size()) {
        std::size_t end = out.find('\n', start);
        if (end == std::string::npos) end = out.size();
        std::string line = out.substr(start, end - start);
        start = end + 1;
        auto a = line.find('|');
        auto b = a == std::string::npos ? a : line.find('|', a + 1);
        if (b == std::string::npos) continue;
        std::string v = line.substr(a + 1, b - a - 1);
        while (!v.empty() && v.front() == ' ')
            v.erase(0, 1);
        while (!v.empty() && v.back() == ' ')
            v.pop_back();
        if (version_matches(v, wanted)) return v;
    }
    return make_error("no version of " + name + " matching " + wanted +
                      " is available from the configured apt sources (apt-cache madison " + name + ")");
}

}  // namespace

Result<std::map<std::string, DpkgPackage>> read_dpkg(Context& ctx) {
    auto text = ctx.fs.read("/var/lib/dpkg/status", 256 * 1024 * 1024);
    if (!text)
        return make_error("cannot read dpkg's status database: " + text.message() + " (is this a Debian system?)");
    return parse_dpkg_status(*text);
}

std::string explain_apt_failure(const Context& ctx, const std::string& message) {
    if (message.find("Could not get lock") != std::string::npos ||
        message.find("is held by process") != std::string::npos ||
        message.find("Unable to acquire the dpkg") != std::string::npos) {
        return "the dpkg lock is held by another process (waited " +
               std::to_string(ctx.options.dpkg_lock_timeout.count()) +
               " s; cloud-init or unattended-upgrades may still be running); the next run will retry: " + message;
    }
    if (message.find("No space left on device") != std::string::npos) {
        return "the disk is full; free space (apt-get clean, old kernels, logs) and run again: " + message;
    }
    return message;
}

std::map<std::string, std::string> apt_env() {
    return {{"DEBIAN_FRONTEND", "noninteractive"}, {"APT_LISTCHANGES_FRONTEND", "none"}};
}

std::vector<std::string> apt_options(const Context& ctx) {
    return {"-o", "DPkg::Lock::Timeout=" + std::to_string(ctx.options.dpkg_lock_timeout.count()),
            "-o", "Dpkg::Options::=--force-confdef",
            "-o", "Dpkg::Options::=--force-confold"};
}

OfflineDaemonsBlocked::OfflineDaemonsBlocked(Context& ctx) : ctx_(ctx) {
    if (!ctx.offline) return;
    auto st = ctx.fs.stat("/usr/sbin/policy-rc.d");
    if (st && !st->has_value()) {
        placed_ =
            ctx.fs
                .write_atomic("/usr/sbin/policy-rc.d", "#!/bin/sh\n# nodeform: offline root\nexit 101\n", {0755, 0, 0})
                .ok();
    }
}

OfflineDaemonsBlocked::~OfflineDaemonsBlocked() {
    if (placed_) (void)ctx_.fs.remove("/usr/sbin/policy-rc.d");
}

std::vector<ResourceResult> converge_packages(Context& ctx, const std::vector<Item>& items) {
    const auto stage_start = ctx.clock.steady_now();
    std::vector<ResourceResult> results;
    std::vector<std::string> errors(items.size());
    std::vector<bool> want_present(items.size(), true);
    std::vector<std::string> names(items.size());
    std::vector<std::string> versions(items.size());
    std::vector<std::optional<bool>> holds(items.size());
    for (std::size_t i = 0; i < items.size(); ++i) {
        results.push_back(make_result(items[i]));
        names[i] = string_field(items[i].spec, "name");
        versions[i] = string_field(items[i].spec, "version");
        if (auto h = items[i].spec.is_object() ? items[i].spec.find("hold") : items[i].spec.end();
            items[i].spec.is_object() && h != items[i].spec.end() && h->is_boolean())
            holds[i] = h->get<bool>();
        std::string state = string_field(items[i].spec, "state", "present");
        if (auto st = validate_package_name(names[i]); !st) {
            errors[i] = st.message();
        } else if (state != "present" && state != "absent") {
            errors[i] = "state must be \"present\" or \"absent\", not " + quote_for_message(state);
        } else if (auto v = versions[i].empty() ? Status(Ok{}) : validate_version(versions[i]); !v) {
            errors[i] = v.message();
        }
        want_present[i] = state != "absent";
    }

    auto dpkg = read_dpkg(ctx);
    std::vector<std::size_t> to_install, to_purge;
    for (std::size_t i = 0; i < items.size(); ++i) {
        if (!errors[i].empty()) continue;
        if (!dpkg) {
            errors[i] = dpkg.message();
            continue;
        }
        auto it = dpkg->find(names[i]);
        bool installed = it != dpkg->end() && it->second.installed();
        bool on_disk = it != dpkg->end() && it->second.present_on_disk();
        if (want_present[i] && !installed) {
            to_install.push_back(i);
            results[i].changes.push_back(
                ctx.change(items[i].pointer + "/state", "state", on_disk ? it->second.state : "absent", "present"));
        } else if (want_present[i] && !version_matches(it->second.version, versions[i])) {
            to_install.push_back(i);
            results[i].changes.push_back(
                ctx.change(items[i].pointer + "/version", "version", it->second.version, versions[i]));
        } else if (!want_present[i] && on_disk) {
            to_purge.push_back(i);
            results[i].changes.push_back(ctx.change(items[i].pointer + "/state", "state", "present", "absent"));
        } else {
            results[i].message = want_present[i] ? "installed (" + it->second.version + ")" : "not installed";
            if (want_present[i] && it->second.want == "hold") results[i].message += ", held";
        }
    }

    if (ctx.apply() && (!to_install.empty() || !to_purge.empty())) {
        const auto env = apt_env();
        const auto options = apt_options(ctx);
        std::optional<OfflineDaemonsBlocked> blocked(std::in_place, ctx);
        bool updated = false;
        std::vector<std::string> install_args(items.size());  // NAME=VERSION for a pinned version
        auto apt_update = [&]() -> Status {
            updated = true;
            std::vector<std::string> argv = {"apt-get", "update", "-q"};
            argv.insert(argv.end(), options.begin(), options.end());
            auto res = ctx.run(ctx.in_root(argv), ctx.long_timeout(), env);
            if (!res) return make_error("apt-get update failed: " + explain_apt_failure(ctx, res.message()));
            return Ok{};
        };
        // apt-get args (the verb first) with the options and the packages at which; a failure is each one's error.
        auto apt_get = [&](std::vector<std::string> args, const std::vector<std::size_t>& which) {
            std::vector<std::string> argv = {"apt-get"};
            argv.insert(argv.end(), args.begin(), args.end());
            argv.insert(argv.end(), options.begin(), options.end());
            for (auto i : which)
                argv.push_back(install_args[i].empty() ? names[i] : install_args[i]);
            auto res = ctx.run(ctx.in_root(argv), ctx.long_timeout(), env);
            if (!res) {
                for (auto i : which)
                    errors[i] = "apt-get " + args[0] + " failed: " + explain_apt_failure(ctx, res.message());
            }
        };

        if (!to_install.empty()) {
            std::string install_error;
            if (!lists_fresh(ctx)) {
                if (auto st = apt_update(); !st) install_error = st.message();
            }
            std::vector<std::string> wanted;
            for (auto i : to_install)
                wanted.push_back(names[i]);
            std::set<std::string> known;
            if (install_error.empty()) {
                auto k = known_packages(ctx, wanted);
                if (!k)
                    install_error = "cannot ask apt which packages exist: " + k.message();
                else
                    known = *k;
                bool missing =
                    std::any_of(wanted.begin(), wanted.end(), [&](const std::string& n) { return !known.count(n); });
                if (install_error.empty() && missing && !updated) {
                    if (auto st = apt_update(); !st)
                        install_error = st.message();
                    else if (auto k2 = known_packages(ctx, wanted); k2)
                        known = *k2;
                }
            }
            std::vector<std::size_t> installable;
            bool versioned = false;
            for (auto i : to_install) {
                if (!install_error.empty())
                    errors[i] = install_error;
                else if (!known.count(names[i])) {
                    errors[i] = "package " + names[i] + " is not available from the configured apt sources (looked " +
                                "after apt-get update); check the name or add its repository";
                } else if (!versions[i].empty()) {
                    auto v = candidate_version(ctx, names[i], versions[i]);
                    if (!v) {
                        errors[i] = v.message();
                    } else {
                        install_args[i] = names[i] + "=" + *v;
                        versioned = true;
                        installable.push_back(i);
                    }
                } else {
                    installable.push_back(i);
                }
            }
            std::vector<std::string> install = {"install", "-y", "-q", "--no-install-recommends"};
            // A pinned version may be older than the installed one, and a held package must be allowed to move.
            if (versioned) install.insert(install.end(), {"--allow-downgrades", "--allow-change-held-packages"});
            if (!installable.empty()) apt_get(install, installable);
        }
        if (!to_purge.empty()) apt_get({"purge", "-y", "-q"}, to_purge);
        blocked.reset();

        // Verify against dpkg's own record, not apt's exit code alone.
        auto after = read_dpkg(ctx);
        for (auto i : to_install) {
            if (!errors[i].empty()) continue;
            const DpkgPackage* pkg = find_package(after, names[i]);
            if (pkg == nullptr || !pkg->installed()) {
                errors[i] = "apt-get install succeeded but dpkg does not list " + names[i] + " as installed";
            } else if (!version_matches(pkg->version, versions[i])) {
                errors[i] =
                    "apt-get install succeeded but " + names[i] + " is at " + pkg->version + ", not " + versions[i];
            } else {
                results[i].message = "installed " + pkg->version;
            }
        }
        for (auto i : to_purge) {
            if (!errors[i].empty()) continue;
            const DpkgPackage* pkg = find_package(after, names[i]);
            if (!after || (pkg != nullptr && pkg->present_on_disk())) {
                errors[i] = "apt-get purge succeeded but dpkg still lists " + names[i];
            } else {
                results[i].message = "purged";
            }
        }
    } else if (!ctx.apply()) {
        for (auto i : to_install)
            results[i].message = "would install";
        for (auto i : to_purge)
            results[i].message = "would purge";
    }

    // Holds: dpkg's selection ("hold") against the spec, for packages that are (or now are) installed or wanted.
    std::vector<std::size_t> to_hold, to_unhold;
    auto now = ctx.apply() ? read_dpkg(ctx) : std::move(dpkg);
    for (std::size_t i = 0; i < items.size(); ++i) {
        if (!errors[i].empty() || !holds[i] || !want_present[i]) continue;
        const DpkgPackage* pkg = find_package(now, names[i]);
        bool held = pkg != nullptr && pkg->want == "hold";
        if (held == *holds[i]) continue;
        results[i].changes.push_back(ctx.change(items[i].pointer + "/hold", "hold", held, *holds[i]));
        (*holds[i] ? to_hold : to_unhold).push_back(i);
    }
    for (auto* batch : {&to_hold, &to_unhold}) {
        if (batch->empty() || !ctx.apply()) continue;
        std::vector<std::string> argv = {"apt-mark", batch == &to_hold ? "hold" : "unhold"};
        for (auto i : *batch)
            argv.push_back(names[i]);
        auto res = ctx.run(ctx.in_root(argv), ctx.short_timeout());
        for (auto i : *batch) {
            if (!res) errors[i] = "cannot " + argv[1] + " " + names[i] + ": " + res.message();
        }
    }
    for (auto* batch : {&to_hold, &to_unhold}) {
        for (auto i : *batch) {
            std::string what = batch == &to_hold ? "held" : "unheld";
            std::string& m = results[i].message;
            m += (m.empty() ? "" : "; ") + (ctx.apply() ? what : "would be " + what);
        }
    }

    const auto elapsed = std::chrono::duration_cast<Ms>(ctx.clock.steady_now() - stage_start);
    for (std::size_t i = 0; i < items.size(); ++i) {
        finish_result(ctx, results[i], errors[i]);
        // The batch's time belongs to the packages it worked on.
        bool worked = !results[i].changes.empty();
        results[i].duration = worked ? elapsed : Ms(0);
    }
    return results;
}

}  // namespace nodeform::agent
