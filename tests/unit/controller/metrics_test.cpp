// /metrics without a server: the request histograms and the gauges in the Prometheus text format.
#include <gtest/gtest.h>

#include "nodeform/controller/api/metrics.hpp"

namespace nodeform::controller {
namespace {

bool has_line(const std::string& text, const std::string& line) {
    return text.find("\n" + line + "\n") != std::string::npos || text.rfind(line + "\n", 0) == 0;
}

TEST(Metrics, RequestsAreCountedByRouteAndStatusWithCumulativeBuckets) {
    RequestMetrics requests;
    requests.observe("/v1/spec/{identity}", 200, 0.002);
    requests.observe("/v1/spec/{identity}", 200, 0.3);
    requests.observe("/v1/spec/{identity}", 304, 0.0001);
    std::string text = render_metrics(requests, ServerGauges{});
    EXPECT_TRUE(has_line(text, R"(nodeform_http_requests_total{route="/v1/spec/{identity}",status="200"} 2)")) << text;
    EXPECT_TRUE(has_line(text, R"(nodeform_http_requests_total{route="/v1/spec/{identity}",status="304"} 1)"));
    EXPECT_TRUE(
        has_line(text, R"(nodeform_http_request_duration_seconds_bucket{route="/v1/spec/{identity}",le="0.0005"} 1)"));
    EXPECT_TRUE(
        has_line(text, R"(nodeform_http_request_duration_seconds_bucket{route="/v1/spec/{identity}",le="0.0025"} 2)"));
    EXPECT_TRUE(
        has_line(text, R"(nodeform_http_request_duration_seconds_bucket{route="/v1/spec/{identity}",le="+Inf"} 3)"));
    EXPECT_TRUE(has_line(text, R"(nodeform_http_request_duration_seconds_count{route="/v1/spec/{identity}"} 3)"));
    EXPECT_TRUE(has_line(text, "# TYPE nodeform_http_request_duration_seconds histogram"));
}

TEST(Metrics, GaugesSayWhatTheServerKnows) {
    RequestMetrics requests;
    ServerGauges g;
    g.nodes_by_status = {{"ready", 2}, {"failed", 0}};
    g.reports_stored = -1;  // the store did not answer
    g.connections_open = 3;
    g.connections_rejected = 4;
    g.report_commits = 5;
    g.report_commit_reports = 9;
    g.reloads_ok = 1;
    g.reloads_failed = 2;
    g.last_reload_ok = false;
    g.site_nodes = 2;
    std::string text = render_metrics(requests, g);
    for (const char* line :
         {R"(nodeform_nodes{status="ready"} 2)", R"(nodeform_nodes{status="failed"} 0)", "nodeform_reports_stored -1",
          "nodeform_http_connections_open 3", "nodeform_http_connections_rejected_total 4",
          "nodeform_report_commits_total 5", "nodeform_report_commit_reports_total 9",
          R"(nodeform_site_reloads_total{result="ok"} 1)", R"(nodeform_site_reloads_total{result="failed"} 2)",
          "nodeform_site_last_reload_ok 0", "nodeform_site_nodes 2"})
        EXPECT_TRUE(has_line(text, line)) << line << "\n" << text;
}

}  // namespace
}  // namespace nodeform::controller
