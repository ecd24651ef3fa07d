#pragma once
// The operator's status pages (docs/controller.md#status-pages): GET / (the fleet) and GET /nodes/{identity},
// server-rendered HTML behind the operator token — the Authorization: Bearer header, or the session cookie that
// POST /login sets (HttpOnly, Secure, SameSite=Strict). Every POST carries a CSRF token; every page sends a
// nonce-based Content-Security-Policy and no outside source; every string is HTML-escaped after redaction.
#include <functional>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "nodeform/clock.hpp"
#include "nodeform/controller/api/node_status.hpp"
#include "nodeform/controller/lifecycle/lifecycle.hpp"
#include "nodeform/controller/store/store.hpp"
#include "nodeform/site/site.hpp"

namespace httplib {
class Server;
struct Request;
struct Response;
}  // namespace httplib

namespace nodeform::controller {

// ---- pure rendering (unit-tested and benchmarked without a server) ----------------------------------------

// The one escape for text and quoted attribute values: & < > " ' become entities.
std::string html_escape(std::string_view text);
void append_escaped(std::string& out, std::string_view text);

// One fleet-table row.
struct FleetRow {
    std::string identity;
    NodeStatus status = NodeStatus::pending;
    std::string lifecycle;              // lifecycle state, "" when never provisioned
    std::optional<std::int64_t> age_s;  // since the last report
    std::string spec_digest;            // what the node last applied
    std::string current_digest;         // what the site says it should have ("" when not in the site)
    std::int64_t changed = 0, failed = 0, drifted = 0, health_failed = 0;
};

// One node's row; provisioned may be null.
FleetRow fleet_row(const NodeRecord& record, const site::Node* site_node, const lifecycle::NodeRecord* provisioned,
                   TimePoint now, const StatusOptions& options);
// Rows for every node the site, the report store or the lifecycle store knows, most urgent first
// (failed, unhealthy, stale, lifecycle failed, drifted, converging, pending, ready), then by identity.
std::vector<FleetRow> fleet_rows(const std::vector<NodeRecord>& records, const site::Site* site,
                                 const std::vector<lifecycle::NodeRecord>& provisioned, TimePoint now,
                                 const StatusOptions& options);

struct PageContext {
    std::string nonce;  // CSP nonce of the page's one <style> and one <script>
    std::string csrf;   // the logout form's token ("" when authenticated by the bearer header: no form)
    std::string site_name;
    std::string generated_at;
};

struct FleetFilter {
    std::string status;  // a NodeStatus or lifecycle state name; "" = all
    std::string query;   // substring of the identity; "" = all
};
std::string render_fleet_page(const PageContext& page, const std::vector<FleetRow>& rows, const FleetFilter& filter,
                              int refresh_s);

struct NodePageData {
    FleetRow summary;
    bool in_site = false;
    bool enrolled = false;
    std::int64_t report_count = 0;
    nlohmann::json last_report;        // the newest report (health from here), null when none
    nlohmann::json last_run_report;    // the newest run report (resources, drift from here), null when none
    std::vector<ReportRecord> recent;  // newest first, bounded by the caller
    std::optional<lifecycle::NodeRecord> lifecycle;
    std::vector<lifecycle::Receipt> receipts;
    std::vector<std::string> secrets;  // redacted from every string shown
};
std::string render_node_page(const PageContext& page, const NodePageData& node);

// The node's secret values (its resolved spec's secret_paths and its site token), for redaction.
std::vector<std::string> node_secrets(const site::Node& node);

// ---- the routes ------------------------------------------------------------------------------------------

struct StatusPageDeps {
    Store& store;
    lifecycle::LifecycleStore* lifecycle;  // may be null
    const Clock& clock;
    std::string operator_token_hash;  // hash_secret(operator token); empty: every page answers 401
    std::function<std::shared_ptr<const site::Site>()> site;  // the site being served, null before the first load
    StatusOptions status_options;
    std::function<bool(const std::string& addr)> auth_blocked;  // the server's failed-authentication limiter
    std::function<void(const std::string& addr)> auth_failed;
    int refresh_s = 30;
    int timeline_reports = 50;  // the node page's bounded history
};

class StatusPages {
  public:
    explicit StatusPages(StatusPageDeps deps);
    ~StatusPages();
    StatusPages(const StatusPages&) = delete;
    StatusPages& operator=(const StatusPages&) = delete;

    enum class Claim { none, handled, needs_body };
    // From the server's pre-routing handler: answers GET /, /login, /nodes/{identity} (handled), leaves
    // POST /login and /logout to the routes register_routes() adds (needs_body), or is not its path (none).
    // route is set to the metrics label.
    Claim pre_route(const httplib::Request& req, httplib::Response& res, std::string& route);
    // POST /login and POST /logout: form bodies, read (size-capped) by httplib.
    void register_routes(httplib::Server& http);

    struct Impl;

  private:
    std::unique_ptr<Impl> impl_;
};

// ---- metrics the dashboard and alert rules use ---------------------------------------------------------

// nodeform_lifecycle_nodes{state}, nodeform_provisioning_step_duration_seconds{step,outcome} (from the
// lifecycle store's receipts at scrape time: the steps run in `node create`, another process) and
// nodeform_controller_ready. lifecycle may be null.
void render_fleet_metrics(std::ostringstream& out, lifecycle::LifecycleStore* lifecycle, bool ready);

}  // namespace nodeform::controller
