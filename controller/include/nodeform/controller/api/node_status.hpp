#pragma once
// A node's status, derived from its reports (docs/controller.md#node-status), and the JSON views of nodes
// that the operator endpoints and `node list/show --json` share.
#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "nodeform/controller/lifecycle/lifecycle.hpp"
#include "nodeform/controller/store/store.hpp"
#include "nodeform/site/site.hpp"

namespace nodeform::controller {

enum class NodeStatus { pending, converging, ready, drifted, failed, unhealthy, stale };
const char* to_string(NodeStatus status);
inline constexpr NodeStatus kAllStatuses[] = {NodeStatus::pending, NodeStatus::converging, NodeStatus::ready,
                                              NodeStatus::drifted, NodeStatus::failed,     NodeStatus::unhealthy,
                                              NodeStatus::stale};

struct StatusOptions {
    std::chrono::seconds grace{60};  // stale after 2 × apply.interval_s + grace without a report
};

// site_node may be null (a node that reported but is no longer in the site; its interval defaults to 300 s).
NodeStatus derive_status(const NodeRecord& record, const site::Node* site_node, TimePoint now,
                         const StatusOptions& options = {});
// How many of the site's nodes are in each status (every status named, 0 included): the nodeform_nodes gauge.
std::map<std::string, int> nodes_by_status(const std::vector<NodeRecord>& records, const site::Site& site,
                                           TimePoint now, const StatusOptions& options);

// {"identity","status","last_report_at","last_report_age_s","spec_digest","current_digest","changed","failed",
//  "drifted","health_failed","reports"}
nlohmann::json node_summary_json(const NodeRecord& record, const site::Node* site_node, TimePoint now,
                                 const StatusOptions& options = {});
// The summary plus "last_report" (the full report) and "last_run_report" when it differs.
nlohmann::json node_detail_json(const NodeRecord& record, const site::Node* site_node, TimePoint now,
                                const StatusOptions& options = {});
// {"state","step","vmid","pve_node","ips","updated_at"[,"failed_step","reason"]}; null when never provisioned.
nlohmann::json lifecycle_json(const std::optional<lifecycle::NodeRecord>& record);

}  // namespace nodeform::controller
