// The status pages' rendering as pure functions: the one HTML escape, the fleet's order and counts, redaction.
#include <gtest/gtest.h>

#include "nodeform/canonical_json.hpp"
#include "nodeform/controller/api/status_page.hpp"
#include "test_paths.hpp"

namespace nodeform::controller {
namespace {

using json = nlohmann::json;

TEST(HtmlEscape, EscapesTheFiveSpecialCharactersAndNothingElse) {
    EXPECT_EQ(html_escape("<a href=\"x\" title='y'>&amp;</a>"),
              "&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;amp;&lt;/a&gt;");
    EXPECT_EQ(html_escape("plain web-01 é ✓ / \\ ` ="), "plain web-01 é ✓ / \\ ` =");
    EXPECT_EQ(html_escape(""), "");
    EXPECT_EQ(html_escape(std::string("a\0b", 3)), std::string("a\0b", 3));
    std::string out = "x";
    append_escaped(out, "<>");
    EXPECT_EQ(out, "x&lt;&gt;");
}

ReportRecord report(const std::string& identity, TimePoint at, std::int64_t failed, std::int64_t health_failed,
                    const std::string& digest, const std::string& body = "{}") {
    ReportRecord r;
    r.report_id = identity + "-r";
    r.identity = identity;
    r.received_at = at;
    r.spec_digest = digest;
    r.phase = "sustain";
    r.trigger = "run";
    r.mode = "apply";
    r.platform_ready = true;
    r.failed = failed;
    r.health_failed = health_failed;
    r.body = body;
    return r;
}

site::Node node(const std::string& name) {
    site::Node n;
    n.name = name;
    n.resolved = json{{"identity", name}, {"apply", {{"interval_s", 60}}}};
    n.digest = canonical_digest(n.resolved);
    return n;
}

TEST(FleetRows, UrgentFirstThenByIdentityAndEveryKnownNodeListed) {
    auto now = std::chrono::system_clock::now();
    site::Site site;
    for (const char* name : {"a-ready", "b-failed", "c-stale", "d-pending", "e-unhealthy"})
        site.nodes[name] = node(name);
    std::vector<NodeRecord> records;
    records.push_back({"a-ready", report("a-ready", now, 0, 0, site.nodes["a-ready"].digest), std::nullopt, 1, true});
    records.push_back(
        {"b-failed", report("b-failed", now, 2, 0, site.nodes["b-failed"].digest), std::nullopt, 1, true});
    records.push_back({"c-stale", report("c-stale", now - std::chrono::hours(1), 0, 0, "x"), std::nullopt, 1, true});
    records.push_back(
        {"e-unhealthy", report("e-unhealthy", now, 0, 1, site.nodes["e-unhealthy"].digest), std::nullopt, 1, true});
    lifecycle::NodeRecord gone;
    gone.identity = "z-gone";
    gone.state = lifecycle::State::failed;
    auto rows = fleet_rows(records, &site, {gone}, now, StatusOptions{});
    std::vector<std::string> order;
    for (const auto& r : rows)
        order.push_back(r.identity);
    EXPECT_EQ(order,
              (std::vector<std::string>{"b-failed", "e-unhealthy", "c-stale", "z-gone", "d-pending", "a-ready"}));
    EXPECT_EQ(rows[0].failed, 2);
    EXPECT_EQ(rows[3].lifecycle, "failed");
    EXPECT_FALSE(rows[4].age_s.has_value());
    EXPECT_EQ(*rows[2].age_s, 3600);
    EXPECT_EQ(rows[2].current_digest, site.nodes["c-stale"].digest);

    PageContext page{"n0nce", "c5rf", "lab<1>", "2026-12-04T00:00:00.000Z"};
    std::string html = render_fleet_page(page, rows, {}, 30);
    EXPECT_NE(html.find("<span class=\"site\">lab&lt;1&gt;</span>"), std::string::npos);
    EXPECT_NE(html.find("name=\"csrf\" value=\"c5rf\""), std::string::npos);
    EXPECT_NE(html.find("data-status=\"failed\"><b>1</b>"), std::string::npos);
    EXPECT_NE(html.find("data-status=\"lifecycle:failed\"><b>1</b>"), std::string::npos);
    EXPECT_NE(html.find("<a href=\"/nodes/b-failed\">b-failed</a>"), std::string::npos);
    std::string filtered = render_fleet_page(page, rows, {"stale", ""}, 30);
    EXPECT_NE(filtered.find("data-identity=\"c-stale\""), std::string::npos);
    EXPECT_EQ(filtered.find("data-identity=\"a-ready\""), std::string::npos);
    EXPECT_NE(filtered.find("1 of 6 nodes shown"), std::string::npos);
    std::string without_session = render_fleet_page(PageContext{"n", "", "lab", "t"}, rows, {}, 30);
    EXPECT_EQ(without_session.find("/logout"), std::string::npos);  // bearer clients get no form
}

TEST(NodePage, RedactsTheNodesSecretsBeforeEscaping) {
    site::Node n = node("db-01");
    n.auth.site_token = "site&token";
    n.resolved["stacks"] = json::array({{{"env", {{"PW", "p<w>d"}}}}});
    n.resolved["secret_paths"] = json::array({"/stacks/0/env/PW", "/does/not/exist"});
    auto secrets = node_secrets(n);
    EXPECT_EQ(secrets, (std::vector<std::string>{"site&token", "p<w>d"}));

    NodePageData data;
    data.summary.identity = "db-01";
    data.secrets = secrets;
    data.last_run_report =
        json{{"resources",
              json::array({{{"id", "stack:pg"}, {"status", "failed"}, {"message", "bad p<w>d and site&token"}}})}};
    data.last_report = data.last_run_report;
    std::string html = render_node_page(PageContext{"n", "c", "lab", "t"}, data);
    EXPECT_NE(html.find("bad [REDACTED] and [REDACTED]"), std::string::npos);
    EXPECT_EQ(html.find("p&lt;w&gt;d"), std::string::npos);
    EXPECT_EQ(html.find("site&amp;token"), std::string::npos);
    EXPECT_NE(html.find("no reports yet"), std::string::npos);
    EXPECT_NE(html.find("Never provisioned"), std::string::npos);
}

}  // namespace
}  // namespace nodeform::controller

namespace nodeform::controller {
namespace {

// The one-query node listing: last and last-run reports joined, bodies only when asked.
TEST(StoreNodeSummaries, MatchNodesWithoutTheBodies) {
    test::TempDir dir;
    auto store = open_sqlite_store(dir.path() + "/nodeform.db");
    ASSERT_TRUE(store.ok()) << store.message();
    auto t = std::chrono::system_clock::now();
    auto run = report("a", t, 1, 0, "sha256:1", "{\"run\":1}");
    auto health = report("a", t + std::chrono::seconds(1), 0, 1, "sha256:1", "{\"health\":1}");
    health.report_id = "a-h";
    health.trigger = "health";
    auto only = report("b", t, 0, 0, "sha256:2", "{\"b\":1}");
    ASSERT_TRUE((*store)->insert_reports({run, health, only}).ok());
    auto full = (*store)->nodes();
    auto light = (*store)->node_summaries();
    ASSERT_TRUE(full.ok() && light.ok());
    ASSERT_EQ(full->size(), 2u);
    ASSERT_EQ(light->size(), 2u);
    const NodeRecord& a = (*full)[0];
    EXPECT_EQ(a.report_count, 2);
    EXPECT_EQ(a.last_report->report_id, "a-h");
    EXPECT_EQ(a.last_report->body, "{\"health\":1}");
    EXPECT_EQ(a.last_run_report->report_id, "a-r");
    EXPECT_EQ(a.last_run_report->body, "{\"run\":1}");
    EXPECT_EQ((*full)[1].last_run_report->report_id, "b-r");  // the last report is also the last run report
    EXPECT_EQ((*full)[1].last_run_report->body, "{\"b\":1}");
    for (std::size_t i = 0; i < 2; ++i) {
        const auto& f = (*full)[i];
        const auto& l = (*light)[i];
        EXPECT_EQ(f.identity, l.identity);
        EXPECT_EQ(l.last_report->report_id, f.last_report->report_id);
        EXPECT_EQ(l.last_run_report->report_id, f.last_run_report->report_id);
        EXPECT_EQ(l.last_report->health_failed, f.last_report->health_failed);
        EXPECT_EQ(l.last_run_report->failed, f.last_run_report->failed);
        EXPECT_TRUE(l.last_report->body.empty());
        EXPECT_TRUE(l.last_run_report->body.empty());
    }
    auto one = (*store)->node("a");
    ASSERT_TRUE(one.ok() && one->has_value());
    EXPECT_EQ((**one).last_run_report->report_id, "a-r");
}

}  // namespace
}  // namespace nodeform::controller
