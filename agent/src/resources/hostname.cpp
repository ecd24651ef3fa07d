// hostname: /etc/hostname, the 127.0.1.1 line of /etc/hosts, and the running hostname (live system
// with systemd only, through hostnamectl).
#include "../engine/context.hpp"
#include "converge_each.hpp"
#include "nodeform/agent/validate.hpp"

namespace nodeform::agent {
namespace {

// /etc/hosts with the 127.0.1.1 line set to want (replacing every existing 127.0.1.1 line, keeping the rest).
std::string rewrite_hosts(const std::string& hosts, const std::string& want) {
    std::string out;
    bool placed = false;
    std::size_t start = 0;
    while (start < hosts.size()) {
        std::size_t end = hosts.find('\n', start);
        if (end == std::string::npos) end = hosts.size();
        std::string line = hosts.substr(start, end - start);
        start = end + 1;
        std::size_t i = 0;
        while (i < line.size() && (line[i] == ' ' || line[i] == '\t'))
            ++i;
        bool is_ours =
            line.compare(i, 9, "127.0.1.1") == 0 && (line.size() == i + 9 || line[i + 9] == ' ' || line[i + 9] == '\t');
        if (is_ours) {
            if (!placed) out += want + "\n";
            placed = true;
            continue;
        }
        out += line + "\n";
    }
    if (!placed) {
        // Right after the 127.0.0.1 line when there is one, else at the end.
        std::size_t pos = out.find("127.0.0.1");
        if (pos != std::string::npos && (pos == 0 || out[pos - 1] == '\n')) {
            std::size_t eol = out.find('\n', pos);
            out.insert(eol == std::string::npos ? out.size() : eol + 1, want + "\n");
        } else {
            out += want + "\n";
        }
    }
    return out;
}

}  // namespace

std::vector<ResourceResult> converge_hostname(Context& ctx, const std::vector<Item>& items) {
    return converge_each(ctx, items, [&ctx](const Item& item, ResourceResult& r) {
        std::string error;
        std::string host = string_field(item.spec, "hostname");
        std::string domain = string_field(item.spec, "domain");
        std::string fqdn = string_field(item.spec, "fqdn");
        if (fqdn.empty()) fqdn = domain.empty() ? host : host + "." + domain;
        if (auto st = validate_hostname(host); !st)
            error = st.message();
        else if (auto sd = validate_domain(domain); !sd)
            error = sd.message();
        else if (fqdn != host && fqdn != host + "." + domain)
            error = "fqdn " + quote_for_message(fqdn) + " is not hostname.domain";

        std::vector<std::string> done;
        if (error.empty()) {
            auto current = ctx.fs.read("/etc/hostname");
            std::string old = current ? current.value() : std::string();
            while (!old.empty() && (old.back() == '\n' || old.back() == ' '))
                old.pop_back();
            if (old != host) {
                r.changes.push_back(ctx.change(item.pointer + "/hostname", "hostname", old, host));
                if (ctx.apply()) {
                    if (auto st = ctx.fs.write_atomic("/etc/hostname", host + "\n", {0644, 0, 0}); !st)
                        error = st.message();
                }
            }
        }
        if (error.empty()) {
            auto hosts = ctx.fs.read("/etc/hosts");
            std::string text = hosts ? hosts.value() : "127.0.0.1\tlocalhost\n";
            std::string want = fqdn == host ? "127.0.1.1\t" + host : "127.0.1.1\t" + fqdn + " " + host;
            std::string updated = rewrite_hosts(text, want);
            if (updated != text) {
                r.changes.push_back(ctx.change(item.pointer + "/fqdn", "hosts", nullptr, want));
                if (ctx.apply()) {
                    if (auto st = ctx.fs.write_atomic("/etc/hosts", updated, {0644, 0, 0}); !st) error = st.message();
                }
            }
        }
        if (error.empty() && ctx.systemd_running) {
            auto running = ctx.fs.read("/proc/sys/kernel/hostname");
            std::string now = running ? running.value() : std::string();
            while (!now.empty() && now.back() == '\n')
                now.pop_back();
            if (now != host) {
                r.changes.push_back(ctx.change(item.pointer + "/hostname", "running_hostname", now, host));
                if (ctx.apply()) {
                    auto res = ctx.run({"hostnamectl", "set-hostname", host}, ctx.short_timeout());
                    if (!res) error = "cannot set the running hostname: " + res.message();
                }
            }
        }
        if (error.empty())
            r.message = r.changes.empty() ? "hostname is " + fqdn
                                          : (ctx.apply() ? "hostname set to " : "would set hostname to ") + fqdn;
        return error;
    });
}

}  // namespace nodeform::agent
