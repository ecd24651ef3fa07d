#include "nodeform/controller/api/node_status.hpp"

#include "nodeform/clock.hpp"
#include "nodeform/enum_names.hpp"
#include "nodeform/json_limits.hpp"

namespace nodeform::controller {

namespace {

constexpr EnumName<NodeStatus> kStatusNames[] = {
    {NodeStatus::pending, "pending"}, {NodeStatus::converging, "converging"}, {NodeStatus::ready, "ready"},
    {NodeStatus::drifted, "drifted"}, {NodeStatus::failed, "failed"},         {NodeStatus::unhealthy, "unhealthy"},
    {NodeStatus::stale, "stale"}};

}  // namespace

const char* to_string(NodeStatus status) {
    return name_of(kStatusNames, status, "pending");
}

namespace {

std::chrono::seconds interval_of(const site::Node* node) {
    if (node != nullptr) {
        const auto& apply = node->resolved.find("apply");
        if (apply != node->resolved.end() && apply->is_object()) {
            auto it = apply->find("interval_s");
            if (it != apply->end() && it->is_number_integer() && it->get<long long>() > 0)
                return std::chrono::seconds(it->get<long long>());
        }
    }
    return std::chrono::seconds(300);
}

nlohmann::json parse_body(const std::string& body) {
    auto j = parse_json_bounded(body, {body.size()});
    return j ? *j : nlohmann::json();
}

}  // namespace

NodeStatus derive_status(const NodeRecord& record, const site::Node* site_node, TimePoint now,
                         const StatusOptions& options) {
    if (!record.last_report) return NodeStatus::pending;
    if (now - record.last_report->received_at > 2 * interval_of(site_node) + options.grace) return NodeStatus::stale;
    // Health comes from the newest report (health-triggered reports carry only health); the rest from the last run.
    if (record.last_report->health_failed > 0) return NodeStatus::unhealthy;
    const ReportRecord& run = record.last_run_report ? *record.last_run_report : *record.last_report;
    if (run.failed > 0) return NodeStatus::failed;
    if (run.drifted > 0) return NodeStatus::drifted;
    if (run.platform_ready || run.phase == "platform-ready" || run.phase == "sustain") {
        if (site_node != nullptr && !run.spec_digest.empty() && run.spec_digest != site_node->digest)
            return NodeStatus::converging;  // the site changed since: the node has not applied the new spec yet
        return NodeStatus::ready;
    }
    return NodeStatus::converging;
}

std::map<std::string, int> nodes_by_status(const std::vector<NodeRecord>& records, const site::Site& site,
                                           TimePoint now, const StatusOptions& options) {
    std::map<std::string, int> by_status;
    for (auto s : kAllStatuses)
        by_status[to_string(s)] = 0;
    std::map<std::string, const NodeRecord*> by_id;
    for (const auto& r : records)
        by_id[r.identity] = &r;
    for (const auto& [id, node] : site.nodes) {
        auto it = by_id.find(id);
        NodeRecord empty{id, {}, {}, 0, false};
        by_status[to_string(derive_status(it == by_id.end() ? empty : *it->second, &node, now, options))]++;
    }
    return by_status;
}

nlohmann::json node_summary_json(const NodeRecord& record, const site::Node* site_node, TimePoint now,
                                 const StatusOptions& options) {
    nlohmann::json j;
    j["identity"] = record.identity;
    j["status"] = to_string(derive_status(record, site_node, now, options));
    j["in_site"] = site_node != nullptr;
    j["current_digest"] = site_node != nullptr ? nlohmann::json(site_node->digest) : nlohmann::json();
    j["enrolled"] = record.has_credential;
    j["reports"] = record.report_count;
    if (record.last_report) {
        const auto& last = *record.last_report;
        const ReportRecord& run = record.last_run_report ? *record.last_run_report : last;
        j["last_report_id"] = last.report_id;
        j["last_report_at"] = format_rfc3339(last.received_at);
        j["last_report_age_s"] = std::chrono::duration_cast<std::chrono::seconds>(now - last.received_at).count();
        j["spec_digest"] = run.spec_digest;
        j["phase"] = run.phase;
        j["changed"] = run.changed;
        j["failed"] = run.failed;
        j["drifted"] = run.drifted;
        j["health_failed"] = last.health_failed;
    } else {
        for (const char* key : {"last_report_id", "last_report_at", "last_report_age_s", "spec_digest", "phase"})
            j[key] = nullptr;
        j["changed"] = 0;
        j["failed"] = 0;
        j["drifted"] = 0;
        j["health_failed"] = 0;
    }
    return j;
}

nlohmann::json node_detail_json(const NodeRecord& record, const site::Node* site_node, TimePoint now,
                                const StatusOptions& options) {
    nlohmann::json j = node_summary_json(record, site_node, now, options);
    j["last_report"] = record.last_report ? parse_body(record.last_report->body) : nlohmann::json();
    if (record.last_run_report && record.last_report &&
        record.last_run_report->report_id != record.last_report->report_id)
        j["last_run_report"] = parse_body(record.last_run_report->body);
    return j;
}

nlohmann::json lifecycle_json(const std::optional<lifecycle::NodeRecord>& record) {
    if (!record) return nullptr;
    nlohmann::json j = {{"state", lifecycle::to_string(record->state)},
                        {"step", record->step},
                        {"vmid", record->vmid},
                        {"pve_node", record->pve_node},
                        {"ips", record->ips},
                        {"updated_at", record->updated_at}};
    if (!record->failed_step.empty()) j["failed_step"] = record->failed_step;
    if (!record->reason.empty()) j["reason"] = record->reason;
    return j;
}

}  // namespace nodeform::controller
