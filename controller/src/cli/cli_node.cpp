#include <iomanip>
#include <map>
#include <ostream>
#include <sstream>

#include "nodeform/args.hpp"
#include "nodeform/clock.hpp"
#include "nodeform/controller/api/node_status.hpp"
#include "nodeform/controller/api/server.hpp"
#include "nodeform/controller/cli.hpp"
#include "nodeform/controller/config.hpp"
#include "nodeform/controller/lifecycle/lifecycle.hpp"
#include "nodeform/controller/store/sqlite.hpp"
#include "nodeform/controller/store/store.hpp"
#include "nodeform/controller/store/store_location.hpp"
#include "nodeform/random.hpp"
#include "nodeform/site/site.hpp"

namespace nodeform::controller {
namespace {

constexpr const char* kListUsage =
    R"(usage: nodeform-controller node list [--state DIR] [--site DIR] [--config FILE] [--json]

Every node of the site (when --site is given) and every node the store knows, with its status derived from
its reports: pending, converging, ready, drifted, failed, unhealthy, stale; and its provisioning lifecycle
state and addresses as 'node create' recorded them (Proxmox is not asked).
)";

constexpr const char* kShowUsage = R"(usage: nodeform-controller node show IDENTITY [--state DIR] [--site DIR] [--json]

A node's status and its last report: per-resource results, drift and health; its provisioning lifecycle
state, VMID, PVE node and addresses as 'node create' recorded them (Proxmox is not asked).
)";

constexpr const char* kApplyUsage =
    R"(usage: nodeform-controller node apply IDENTITY [--state DIR] [--site DIR] [--config FILE] [--json]

Ask a node to converge now, whatever its apply.trigger (manual) or apply.drift (report) says: a new request id
is stored (durably, in the controller's store) and sent as Nodeform-Apply-Request on every answer to the node's
spec fetch until the report of the run that took it arrives; the agent converges once per id. The node sees it
at its next refetch (apply.interval, or at once after 'systemctl reload nodeform-agent' on the node). A second
'node apply' before the first was taken replaces it (the node converges once). Prints the request id.
The node must be in the site (--site) or known to the store (enrolled or reported).
)";

struct Loaded {
    std::unique_ptr<Store> store;
    std::unique_ptr<lifecycle::LifecycleStore> lifecycle;
    std::optional<site::Site> site;
    ControllerConfig config;
};

// 0 on success, else the exit code (message already written).
int load(const std::vector<std::string>& args, CliIo io, const char* name, const char* usage, ParsedArgs& parsed,
         Loaded& out) {
    auto p = parse_args(args, serve_arg_spec());
    if (!p) {
        io.err << "nodeform-controller " << name << ": " << p.message() << "\n";
        return exit_code::usage;
    }
    parsed = *p;
    if (parsed.has("help")) {
        io.out << usage;
        return -1;
    }
    auto config = load_controller_config(parsed);
    if (!config) {
        io.err << "nodeform-controller " << name << ": " << config.message() << "\n";
        return exit_code::config;
    }
    out.config = *config;
    if (config->state.empty()) {
        io.err << "nodeform-controller " << name << ": --state DIR is required (or state: in the config file)\n";
        return exit_code::usage;
    }
    auto where = store_location(*config);
    if (!where) {
        io.err << "nodeform-controller " << name << ": " << where.message() << "\n";
        return exit_code::config;
    }
    auto store = open_store(*where);
    if (!store) {
        io.err << "nodeform-controller " << name << ": " << store.message() << "\n";
        return exit_code::runtime;
    }
    out.store = std::move(*store);
    auto lifecycle = open_lifecycle_store(*where);
    if (!lifecycle) {
        io.err << "nodeform-controller " << name << ": " << lifecycle.message() << "\n";
        return exit_code::runtime;
    }
    out.lifecycle = std::move(*lifecycle);
    if (!config->site.empty()) {
        auto loaded = site::load_site(config->site);
        if (loaded.ok()) {
            out.site = std::move(*loaded.site);
        } else {
            io.err << "warning: the site " << config->site << " does not load (" << loaded.diagnostics.size()
                   << " errors; run 'nodeform-controller validate'); showing stored nodes only\n";
        }
    }
    return 0;
}

std::string age_text(const nlohmann::json& age) {
    if (!age.is_number()) return "-";
    long long s = age.get<long long>();
    if (s < 0) s = 0;
    if (s < 120) return std::to_string(s) + "s";
    if (s < 7200) return std::to_string(s / 60) + "m";
    if (s < 172800) return std::to_string(s / 3600) + "h";
    return std::to_string(s / 86400) + "d";
}

std::string short_digest(const nlohmann::json& d) {
    if (!d.is_string()) return "-";
    std::string s = d.get<std::string>();
    if (s.rfind("sha256:", 0) == 0) s = s.substr(7);
    return s.substr(0, 12);
}

std::string ips_text(const nlohmann::json& lifecycle) {
    std::string out;
    if (lifecycle.is_object() && lifecycle["ips"].is_array()) {
        for (const auto& ip : lifecycle["ips"])
            out += (out.empty() ? "" : ",") + ip.get<std::string>();
    }
    return out.empty() ? "-" : out;
}

const site::Node* site_node(const Loaded& l, const std::string& id) {
    if (!l.site) return nullptr;
    auto it = l.site->nodes.find(id);
    return it == l.site->nodes.end() ? nullptr : &it->second;
}

}  // namespace

int cmd_node_list(const std::vector<std::string>& args, CliIo io) {
    ParsedArgs parsed;
    Loaded l;
    if (int rc = load(args, io, "node list", kListUsage, parsed, l); rc != 0) return rc < 0 ? exit_code::ok : rc;
    auto records = l.store->nodes();
    if (!records) {
        io.err << "nodeform-controller node list: " << records.message() << "\n";
        return exit_code::runtime;
    }
    auto provisioned = l.lifecycle->all();
    if (!provisioned) {
        io.err << "nodeform-controller node list: " << provisioned.message() << "\n";
        return exit_code::runtime;
    }
    std::map<std::string, lifecycle::NodeRecord> lifecycle_by_id;
    for (auto& r : *provisioned)
        lifecycle_by_id[r.identity] = std::move(r);
    std::map<std::string, NodeRecord> by_id;
    for (const auto& [id, r] : lifecycle_by_id)
        by_id[id].identity = id;
    if (l.site)
        for (const auto& [id, n] : l.site->nodes)
            by_id[id].identity = id;
    for (auto& r : *records)
        by_id[r.identity] = std::move(r);
    SystemClock clock;
    StatusOptions opts{l.config.stale_grace};
    nlohmann::json list = nlohmann::json::array();
    for (const auto& [id, rec] : by_id) {
        auto j = node_summary_json(rec, site_node(l, id), clock.now(), opts);
        auto lc = lifecycle_by_id.find(id);
        j["lifecycle"] = lifecycle_json(lc == lifecycle_by_id.end() ? std::nullopt : std::optional(lc->second));
        list.push_back(std::move(j));
    }
    if (parsed.has("json")) {
        io.out << nlohmann::json{{"nodes", list}}.dump(2) << "\n";
        return exit_code::ok;
    }
    std::size_t w = 8;
    for (const auto& n : list)
        w = std::max(w, n["identity"].get<std::string>().size());
    io.out << std::left << std::setw(static_cast<int>(w) + 2) << "IDENTITY" << std::setw(12) << "STATUS"
           << std::setw(16) << "LIFECYCLE" << std::setw(13) << "LAST REPORT" << std::setw(14) << "SPEC DIGEST"
           << std::setw(9) << "CHANGED" << std::setw(8) << "FAILED"
           << "IPS\n";
    for (const auto& n : list) {
        std::string digest = short_digest(n["spec_digest"]);
        if (n["current_digest"].is_string() && n["spec_digest"].is_string() && n["current_digest"] != n["spec_digest"])
            digest += "*";
        const auto& lc = n["lifecycle"];
        io.out << std::left << std::setw(static_cast<int>(w) + 2) << n["identity"].get<std::string>() << std::setw(12)
               << n["status"].get<std::string>() << std::setw(16)
               << (lc.is_object() ? lc["state"].get<std::string>() : "-") << std::setw(13)
               << (n["last_report_age_s"].is_number() ? age_text(n["last_report_age_s"]) + " ago" : "never")
               << std::setw(14) << digest << std::setw(9) << n["changed"].dump() << std::setw(8) << n["failed"].dump()
               << ips_text(lc) << "\n";
    }
    if (list.empty()) io.out << "(no nodes: pass --site DIR to list the site's nodes)\n";
    return exit_code::ok;
}

int cmd_node_apply(const std::vector<std::string>& args, CliIo io) {
    ParsedArgs parsed;
    Loaded l;
    if (int rc = load(args, io, "node apply", kApplyUsage, parsed, l); rc != 0) return rc < 0 ? exit_code::ok : rc;
    if (parsed.positionals.size() != 1) {
        io.err << kApplyUsage;
        return exit_code::usage;
    }
    const std::string& id = parsed.positionals[0];
    if (!valid_identity(id)) {
        io.err << "nodeform-controller node apply: '" << id << "' is not a valid node identity\n";
        return exit_code::usage;
    }
    auto rec = l.store->node(id);
    if (!rec) {
        io.err << "nodeform-controller node apply: " << rec.message() << "\n";
        return exit_code::runtime;
    }
    if (!rec->has_value() && site_node(l, id) == nullptr) {
        io.err << "nodeform-controller node apply: no node '" << id << "' in the store"
               << (l.site ? " or the site" : " (pass --site DIR to include the site's nodes)") << "\n";
        return exit_code::failure;
    }
    SystemClock clock;
    auto random = make_system_random();
    const std::string request =
        "apply-" +
        std::to_string(std::chrono::duration_cast<std::chrono::seconds>(clock.now().time_since_epoch()).count()) + "-" +
        random_hex(*random, 4);
    if (auto st = l.store->request_apply(id, request, clock.now()); !st) {
        io.err << "nodeform-controller node apply: " << st.message() << "\n";
        return exit_code::runtime;
    }
    if (parsed.has("json")) {
        io.out << nlohmann::json{{"identity", id}, {"apply_request", request}}.dump() << "\n";
    } else {
        io.out << "converge requested for " << id << " (request " << request
               << "): the node converges at its next spec fetch\n";
    }
    return exit_code::ok;
}

int cmd_node_show(const std::vector<std::string>& args, CliIo io) {
    ParsedArgs parsed;
    Loaded l;
    if (int rc = load(args, io, "node show", kShowUsage, parsed, l); rc != 0) return rc < 0 ? exit_code::ok : rc;
    if (parsed.positionals.size() != 1) {
        io.err << kShowUsage;
        return exit_code::usage;
    }
    const std::string& id = parsed.positionals[0];
    if (!valid_identity(id)) {
        io.err << "nodeform-controller node show: '" << id << "' is not a valid node identity\n";
        return exit_code::usage;
    }
    auto rec = l.store->node(id);
    if (!rec) {
        io.err << "nodeform-controller node show: " << rec.message() << "\n";
        return exit_code::runtime;
    }
    const site::Node* node = site_node(l, id);
    auto provisioned = l.lifecycle->get(id);
    if (!provisioned) {
        io.err << "nodeform-controller node show: " << provisioned.message() << "\n";
        return exit_code::runtime;
    }
    if (!rec->has_value() && node == nullptr && !provisioned->has_value()) {
        io.err << "nodeform-controller node show: no node '" << id << "' in the store"
               << (l.site ? " or the site" : " (pass --site DIR to include the site's nodes)") << "\n";
        return exit_code::failure;
    }
    NodeRecord r = rec->has_value() ? **rec : NodeRecord{id, {}, {}, 0, false};
    SystemClock clock;
    auto j = node_detail_json(r, node, clock.now(), StatusOptions{l.config.stale_grace});
    j["lifecycle"] = lifecycle_json(*provisioned);
    if (parsed.has("json")) {
        io.out << j.dump(2) << "\n";
        return exit_code::ok;
    }
    io.out << "identity:      " << id << "\n"
           << "status:        " << j["status"].get<std::string>() << "\n"
           << "enrolled:      " << (r.has_credential ? "yes" : "no") << "\n"
           << "reports:       " << r.report_count << "\n";
    if (node) io.out << "site digest:   " << node->digest << "\n";
    if (const auto& lc = j["lifecycle"]; lc.is_object()) {
        io.out << "lifecycle:     " << lc["state"].get<std::string>()
               << (lc.contains("failed_step") ? " (at " + lc["failed_step"].get<std::string>() + ")" : "") << "\n"
               << "vmid:          " << (lc["vmid"].get<std::int64_t>() != 0 ? lc["vmid"].dump() : "-") << "\n"
               << "pve node:      "
               << (lc["pve_node"].get<std::string>().empty() ? "-" : lc["pve_node"].get<std::string>()) << "\n"
               << "ips:           " << ips_text(lc) << "\n";
    } else {
        io.out << "lifecycle:     - (not provisioned by this controller)\n";
    }
    const auto& last = j["last_report"];
    if (!last.is_object()) {
        io.out << "last report:   never\n";
        return exit_code::ok;
    }
    io.out << "last report:   " << last.value("report_id", "") << " (" << age_text(j["last_report_age_s"]) << " ago, "
           << last.value("trigger", "") << "/" << last.value("mode", "") << ", phase " << last.value("phase", "")
           << ")\n"
           << "spec digest:   " << last.value("spec_digest", "") << "\n"
           << "agent:         " << last.value("agent_version", "") << "\n"
           << "finished at:   " << last.value("finished_at", "") << "\n"
           << "platform ready: " << (last.value("platform_ready", false) ? "yes" : "no") << "\n";
    const auto& run = j.contains("last_run_report") ? j["last_run_report"] : last;
    if (run.contains("counts")) io.out << "counts:        " << run["counts"].dump() << "\n";
    if (run.contains("resources") && !run["resources"].empty()) {
        io.out << "resources:\n";
        for (const auto& res : run["resources"])
            io.out << "  " << std::left << std::setw(10) << res.value("status", "") << res.value("id", "")
                   << (res.contains("message") && res["message"].is_string() &&
                               !res["message"].get<std::string>().empty()
                           ? "  — " + res["message"].get<std::string>()
                           : "")
                   << "\n";
    }
    if (run.contains("drift") && !run["drift"].empty()) {
        io.out << "drift:\n";
        for (const auto& d : run["drift"]) {
            io.out << "  " << d.value("id", "") << "\n";
            if (d.contains("changes") && d["changes"].is_array())
                for (const auto& c : d["changes"])
                    io.out << "    " << c.value("field", "") << ": " << (c.contains("old") ? c["old"].dump() : "")
                           << " -> " << (c.contains("new") ? c["new"].dump() : "") << "\n";
        }
    }
    if (last.contains("health") && !last["health"].empty()) {
        io.out << "health:\n";
        for (const auto& h : last["health"])
            io.out << "  " << std::left << std::setw(6) << h.value("status", "") << h.value("name", "") << " ("
                   << h.value("type", "") << ") " << h.value("message", "") << "\n";
    }
    return exit_code::ok;
}

}  // namespace nodeform::controller
