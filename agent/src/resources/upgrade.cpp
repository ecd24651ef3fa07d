// upgrade: the spec's package upgrade policy (none | security | all), run at most once per interval. The last run is
// recorded in STATE_DIR/upgrade.json (temp + fsync + rename), so a restart does not run it again. When due:
// apt-get update, apt-get upgrade -s --with-new-pkgs lists what would move (each "Inst" line names the releases the
// new version comes from), then `all` runs apt-get upgrade --with-new-pkgs and `security` runs apt-get install
// --only-upgrade for the packages whose new version a security archive offers. What changed is read from dpkg.
#include "nodeform/agent/resources/upgrade.hpp"

#include "../engine/context.hpp"
#include "nodeform/agent/validate.hpp"
#include "nodeform/json_limits.hpp"

namespace nodeform::agent {
namespace {

std::string trim(std::string s) {
    while (!s.empty() && s.front() == ' ')
        s.erase(0, 1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\r'))
        s.pop_back();
    return s;
}

std::string state_path(const Context& ctx) {
    return ctx.options.state_dir + "/upgrade.json";
}

struct LastRun {
    std::string policy;
    std::chrono::system_clock::time_point at{};
};

std::optional<LastRun> read_last_run(Context& ctx) {
    auto text = ctx.fs.read(state_path(ctx), 64 * 1024);
    if (!text) return std::nullopt;
    auto j = parse_json_bounded(*text, {text->size()});
    if (!j || !j->is_object()) return std::nullopt;
    LastRun last;
    last.policy = string_field(*j, "policy");
    if (!parse_rfc3339(string_field(*j, "last_run"), last.at)) return std::nullopt;
    return last;
}

}  // namespace

std::vector<PendingUpgrade> parse_simulated_upgrade(const std::string& out) {
    std::vector<PendingUpgrade> pending;
    std::size_t start = 0;
    while (start < out.size()) {
        std::size_t end = out.find('\n', start);
        if (end == std::string::npos) end = out.size();
        std::string line = out.substr(start, end - start);
        start = end + 1;
        if (line.rfind("Inst ", 0) != 0) continue;
        PendingUpgrade p;
        std::size_t at = 5;
        std::size_t sp = line.find(' ', at);
        if (sp == std::string::npos) continue;
        p.name = line.substr(at, sp - at);
        at = sp + 1;
        if (at < line.size() && line[at] == '[') {
            auto close = line.find(']', at);
            if (close == std::string::npos) continue;
            p.installed = line.substr(at + 1, close - at - 1);
            at = close + 2;
        }
        if (at >= line.size() || line[at] != '(') continue;
        auto close = line.find(')', at);
        if (close == std::string::npos) continue;
        std::string inner = line.substr(at + 1, close - at - 1);  // NEW REL, REL [ARCH]
        auto arch = inner.rfind(" [");
        if (arch != std::string::npos) inner = inner.substr(0, arch);
        sp = inner.find(' ');
        p.version = inner.substr(0, sp);
        std::string rels = sp == std::string::npos ? "" : inner.substr(sp + 1);
        std::size_t r = 0;
        while (r < rels.size()) {
            auto comma = rels.find(", ", r);
            std::string rel = trim(rels.substr(r, comma == std::string::npos ? std::string::npos : comma - r));
            r = comma == std::string::npos ? rels.size() : comma + 2;
            // LABEL:VERSION/ARCHIVE (label and version may be missing).
            auto slash = rel.rfind('/');
            std::string archive = slash == std::string::npos ? "" : rel.substr(slash + 1);
            auto colon = rel.find(':');
            std::string label =
                colon == std::string::npos || (slash != std::string::npos && colon > slash) ? "" : rel.substr(0, colon);
            bool security_archive = archive.size() > 9 && archive.compare(archive.size() - 9, 9, "-security") == 0;
            if (label == "Debian-Security" || security_archive) p.security = true;
        }
        if (!p.name.empty() && !p.version.empty()) pending.push_back(std::move(p));
    }
    return pending;
}

std::vector<ResourceResult> converge_upgrade(Context& ctx, const std::vector<Item>& items) {
    std::vector<ResourceResult> results;
    for (const auto& item : items) {
        auto started = ctx.clock.steady_now();
        auto r = make_result(item);
        std::string error;
        const std::string policy = string_field(item.spec, "policy", "none");
        const auto interval_it = item.spec.is_object() ? item.spec.find("interval_s") : item.spec.end();
        const auto interval = std::chrono::seconds(
            interval_it != item.spec.end() && interval_it->is_number() ? interval_it->get<std::int64_t>() : 86400);
        const auto now = ctx.clock.now();
        auto last = read_last_run(ctx);
        const bool due = !last || last->policy != policy || now - last->at >= interval || now < last->at;
        if (policy != "security" && policy != "all") {
            error = "unknown upgrade policy " + quote_for_message(policy) + "; use none, security or all";
        } else if (!due) {
            r.message = "last run " + format_rfc3339(last->at) + " (" + policy + "); next after " +
                        format_rfc3339(last->at + interval);
        } else {
            const auto env = apt_env();
            const auto options = apt_options(ctx);
            auto apt_get = [&](std::vector<std::string> args, std::chrono::milliseconds timeout) {
                std::vector<std::string> argv = {"apt-get"};
                argv.insert(argv.end(), args.begin(), args.end());
                argv.insert(argv.end(), options.begin(), options.end());
                return ctx.run(ctx.in_root(argv), timeout, env);
            };
            std::optional<OfflineDaemonsBlocked> blocked;
            if (ctx.apply()) {
                blocked.emplace(ctx);
                if (auto up = apt_get({"update", "-q"}, ctx.long_timeout()); !up)
                    error = "apt-get update failed: " + explain_apt_failure(ctx, up.message());
            }
            std::vector<PendingUpgrade> selected;
            if (error.empty()) {
                auto sim = apt_get({"upgrade", "-s", "-q", "--with-new-pkgs"}, ctx.short_timeout());
                if (!sim) {
                    error = "apt-get -s upgrade failed: " + explain_apt_failure(ctx, sim.message());
                } else {
                    for (auto& p : parse_simulated_upgrade(sim->out)) {
                        // New packages (no installed version) come in as dependencies of the upgrade, not by name.
                        if (!p.installed.empty() && (policy == "all" || p.security)) selected.push_back(std::move(p));
                    }
                }
            }
            if (error.empty() && !ctx.apply()) {
                for (const auto& p : selected)
                    r.changes.push_back(ctx.change(item.pointer, p.name, p.installed, p.version));
                r.message = selected.empty()
                                ? "nothing to upgrade (" + policy + ")"
                                : "would upgrade " + std::to_string(selected.size()) + " package(s) (" + policy + ")";
            } else if (error.empty()) {
                auto before = read_dpkg(ctx);
                if (!selected.empty()) {
                    std::vector<std::string> args = {policy == "all" ? "upgrade" : "install", "-y", "-q"};
                    if (policy == "all") {
                        args.push_back("--with-new-pkgs");
                    } else {
                        args.insert(args.end(), {"--only-upgrade", "--no-install-recommends"});
                        for (const auto& p : selected)
                            args.push_back(p.name);
                    }
                    if (auto res = apt_get(args, ctx.long_timeout()); !res)
                        error = "apt-get " + args[0] + " failed: " + explain_apt_failure(ctx, res.message());
                }
                auto after = read_dpkg(ctx);
                if (before && after) {
                    for (const auto& [name, pkg] : *after) {
                        if (name.find(':') != std::string::npos) continue;  // NAME:ARCH, the same package again
                        auto was = before->find(name);
                        if (was != before->end() && was->second.installed() && pkg.installed() &&
                            was->second.version != pkg.version)
                            r.changes.push_back(ctx.change(item.pointer, name, was->second.version, pkg.version));
                    }
                }
                if (error.empty()) {
                    r.message = r.changes.empty()
                                    ? "nothing to upgrade (" + policy + ")"
                                    : "upgraded " + std::to_string(r.changes.size()) + " package(s) (" + policy + ")";
                    if (ctx.options.write_state) {
                        nlohmann::json record = {{"policy", policy}, {"last_run", format_rfc3339(now)}};
                        Status st = make_directories(ctx.fs, ctx.options.state_dir, 0755);
                        if (st) st = ctx.fs.write_atomic(state_path(ctx), record.dump() + "\n", {0644, 0, 0});
                        if (!st)
                            error =
                                "upgraded, but cannot record the run (the next run upgrades again): " + st.message();
                    }
                }
            }
        }
        finish_result(ctx, r, error);
        r.duration = std::chrono::duration_cast<std::chrono::milliseconds>(ctx.clock.steady_now() - started);
        results.push_back(std::move(r));
    }
    return results;
}

}  // namespace nodeform::agent
