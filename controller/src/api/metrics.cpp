#include "nodeform/controller/api/metrics.hpp"

#include <sstream>

namespace nodeform::controller {

void RequestMetrics::observe(const std::string& route, int status, double seconds) {
    std::lock_guard<std::mutex> lock(mutex_);
    requests_[{route, status}]++;
    auto& h = latency_[route];
    for (std::size_t i = 0; i < kBucketCount; ++i)
        if (seconds <= kBuckets[i]) h.buckets[i]++;
    h.count++;
    h.sum += seconds;
}

void RequestMetrics::render(std::ostream& out) {
    std::lock_guard<std::mutex> lock(mutex_);
    out << "# HELP nodeform_http_requests_total HTTP requests by route and status.\n"
           "# TYPE nodeform_http_requests_total counter\n";
    for (const auto& [key, n] : requests_)
        out << "nodeform_http_requests_total{route=\"" << key.first << "\",status=\"" << key.second << "\"} " << n
            << "\n";
    out << "# HELP nodeform_http_request_duration_seconds Time from request parsed to response written.\n"
           "# TYPE nodeform_http_request_duration_seconds histogram\n";
    for (const auto& [route, h] : latency_) {
        for (std::size_t i = 0; i < kBucketCount; ++i)
            out << "nodeform_http_request_duration_seconds_bucket{route=\"" << route << "\",le=\"" << kBuckets[i]
                << "\"} " << h.buckets[i] << "\n";
        out << "nodeform_http_request_duration_seconds_bucket{route=\"" << route << "\",le=\"+Inf\"} " << h.count
            << "\n";
        out << "nodeform_http_request_duration_seconds_sum{route=\"" << route << "\"} " << h.sum << "\n";
        out << "nodeform_http_request_duration_seconds_count{route=\"" << route << "\"} " << h.count << "\n";
    }
}

std::string render_metrics(RequestMetrics& requests, const ServerGauges& g) {
    std::ostringstream out;
    requests.render(out);
    out << "# HELP nodeform_nodes Nodes of the site by derived status.\n# TYPE nodeform_nodes gauge\n";
    for (const auto& [s, n] : g.nodes_by_status)
        out << "nodeform_nodes{status=\"" << s << "\"} " << n << "\n";
    out << "# HELP nodeform_reports_stored Reports currently stored.\n# TYPE nodeform_reports_stored gauge\n"
        << "nodeform_reports_stored " << g.reports_stored << "\n";
    out << "# HELP nodeform_http_connections_open Open connections: in service, waiting for a worker, or idle between "
           "requests.\n"
        << "# TYPE nodeform_http_connections_open gauge\nnodeform_http_connections_open " << g.connections_open << "\n"
        << "# HELP nodeform_http_connections_rejected_total Connections refused beyond max-connections.\n"
        << "# TYPE nodeform_http_connections_rejected_total counter\nnodeform_http_connections_rejected_total "
        << g.connections_rejected << "\n"
        << "# HELP nodeform_http_deadline_closed_total Connections closed for missing a read/write deadline.\n"
        << "# TYPE nodeform_http_deadline_closed_total counter\nnodeform_http_deadline_closed_total "
        << g.deadline_closed << "\n"
        << "# HELP nodeform_http_requests_on_loop_total Requests an event loop answered itself, without a worker.\n"
        << "# TYPE nodeform_http_requests_on_loop_total counter\nnodeform_http_requests_on_loop_total "
        << g.served_on_loop << "\n";
    out << "# HELP nodeform_report_commits_total Report transactions committed (group commit).\n"
        << "# TYPE nodeform_report_commits_total counter\nnodeform_report_commits_total " << g.report_commits
        << "\n# HELP nodeform_report_commit_reports_total Reports in those transactions.\n"
        << "# TYPE nodeform_report_commit_reports_total counter\nnodeform_report_commit_reports_total "
        << g.report_commit_reports << "\n";
    out << "# HELP nodeform_site_reloads_total Site reloads by result.\n# TYPE nodeform_site_reloads_total "
           "counter\n"
        << "nodeform_site_reloads_total{result=\"ok\"} " << g.reloads_ok << "\n"
        << "nodeform_site_reloads_total{result=\"failed\"} " << g.reloads_failed << "\n"
        << "# HELP nodeform_site_last_reload_ok 1 when the newest site on disk is the one served.\n"
           "# TYPE nodeform_site_last_reload_ok gauge\n"
        << "nodeform_site_last_reload_ok " << (g.last_reload_ok ? 1 : 0) << "\n"
        << "# HELP nodeform_site_reload_pending 1 while a loaded site waits for every live controller to load it.\n"
           "# TYPE nodeform_site_reload_pending gauge\n"
        << "nodeform_site_reload_pending " << (g.site_reload_pending ? 1 : 0) << "\n"
        << "# HELP nodeform_site_nodes Nodes in the served site.\n# TYPE nodeform_site_nodes gauge\n"
        << "nodeform_site_nodes " << g.site_nodes << "\n";
    return out.str();
}

}  // namespace nodeform::controller
