// The fleet page for N nodes (default 10,000): a real SQLite state database with R reports per node and a
// lifecycle record per node, a site of N nodes, an in-process ControllerServer on loopback. Times GET / with the
// operator bearer token end to end (request sent → last byte read) and, separately, its parts in process: the
// store's node query, the lifecycle query, building the rows and rendering the HTML.
//   status-page-bench [NODES] [REPORTS_PER_NODE] [RUNS]
#include <httplib.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <thread>

#include "fakes/memory_logger.hpp"
#include "nodeform/canonical_json.hpp"
#include "nodeform/controller/api/server.hpp"
#include "nodeform/controller/api/status_page.hpp"
#include "nodeform/controller/store/sqlite.hpp"
#include "nodeform/log.hpp"
#include "nodeform/notifier.hpp"
#include "nodeform/random.hpp"
#include "static_site_source.hpp"
#include "test_paths.hpp"

using namespace nodeform;
using namespace nodeform::controller;
using json = nlohmann::json;
using Clock_ = std::chrono::steady_clock;

namespace {

using FixedSite = test::StaticSiteSource;

double ms_since(Clock_::time_point start) {
    return std::chrono::duration<double, std::milli>(Clock_::now() - start).count();
}

struct Stats {
    double median, p95, max;
};
Stats stats(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return {v[v.size() / 2], v[std::min(v.size() - 1, v.size() * 95 / 100)], v.back()};
}

}  // namespace

int main(int argc, char** argv) {
    const int nodes = argc > 1 ? std::atoi(argv[1]) : 10000;
    const int per_node = argc > 2 ? std::atoi(argv[2]) : 3;
    const int runs = argc > 3 ? std::atoi(argv[3]) : 20;
    test::TempDir dir;
    auto store = open_sqlite_store(sqlite::database_path(dir.path()));
    auto lifecycle = lifecycle::LifecycleStore::open(sqlite::database_path(dir.path()));
    if (!store || !lifecycle) {
        std::cerr << "cannot open the state database\n";
        return 1;
    }
    site::Site site;
    site.info.name = "bench";
    site.digest = "sha256:bench";
    auto now = std::chrono::system_clock::now();
    std::vector<ReportRecord> batch;
    std::vector<lifecycle::NodeRecord> records;
    auto t0 = Clock_::now();
    for (int i = 0; i < nodes; ++i) {
        char name[32];
        std::snprintf(name, sizeof(name), "node-%05d", i);
        site::Node n;
        n.name = name;
        n.auth.method = site::AuthMethod::network;
        n.resolved = json{{"identity", name}, {"apply", {{"interval_s", 300}}}};
        n.digest = canonical_digest(n.resolved);
        for (int r = 0; r < per_node; ++r) {
            ReportRecord rec;
            rec.report_id = std::string(name) + "-" + std::to_string(r);
            rec.identity = name;
            rec.received_at = now - std::chrono::seconds(60 * (per_node - r) + i % 1000);
            rec.spec_digest = i % 50 == 0 ? "sha256:old" : n.digest;
            rec.phase = "sustain";
            rec.trigger = "run";
            rec.mode = "apply";
            rec.finished_at = format_rfc3339(rec.received_at);
            rec.platform_ready = true;
            rec.changed = r == 0 ? 5 : 0;
            rec.failed = i % 97 == 0 ? 1 : 0;
            rec.health_failed = i % 131 == 0 ? 1 : 0;
            json body{{"report_id", rec.report_id},
                      {"identity", name},
                      {"spec_digest", rec.spec_digest},
                      {"resources", json::array()}};
            for (int k = 0; k < 12; ++k)  // a realistic report: a dozen resources
                body["resources"].push_back(
                    {{"id", "package:pkg" + std::to_string(k)}, {"status", "unchanged"}, {"duration_ms", 12}});
            rec.body = canonical_dump(body);
            batch.push_back(std::move(rec));
        }
        lifecycle::NodeRecord lc;
        lc.identity = name;
        lc.state = i % 200 == 0 ? lifecycle::State::failed : lifecycle::State::active;
        lc.vmid = 1000 + i;
        records.push_back(lc);
        site.nodes[name] = std::move(n);
        if (batch.size() >= 5000) {
            if (!(*store)->insert_reports(batch)) return 1;
            batch.clear();
        }
    }
    if (!batch.empty() && !(*store)->insert_reports(batch)) return 1;
    if (!(*lifecycle)->put_many(records)) return 1;
    std::cerr << "status-page-bench: " << nodes << " nodes, " << nodes * per_node << " reports stored in "
              << ms_since(t0) / 1000 << " s\n";

    // The parts, in process.
    SystemClock clock;
    std::vector<double> q_nodes, q_lifecycle, build, render, total_http;
    std::size_t bytes = 0;
    auto shared_site = std::make_shared<site::Site>(site);
    for (int run = 0; run < runs; ++run) {
        auto a = Clock_::now();
        auto all = (*store)->node_summaries();
        q_nodes.push_back(ms_since(a));
        a = Clock_::now();
        auto lcs = (*lifecycle)->all();
        q_lifecycle.push_back(ms_since(a));
        a = Clock_::now();
        auto rows = fleet_rows(*all, shared_site.get(), *lcs, clock.now(), StatusOptions{});
        build.push_back(ms_since(a));
        a = Clock_::now();
        std::string html = render_fleet_page(PageContext{"nonce", "csrf", "bench", "now"}, rows, {}, 30);
        render.push_back(ms_since(a));
        bytes = html.size();
    }

    // End to end over loopback.
    FixedSite source(site);
    MemoryLogger logger;
    auto notifier = make_systemd_notifier();  // silent without NOTIFY_SOCKET
    auto random = make_system_random();
    ControllerConfig config;
    config.state = dir.path();
    config.plain_http = true;
    config.listen_host = "127.0.0.1";
    config.listen_port = 0;
    config.threads = 4;
    config.access_log = false;
    const std::string token = "nfo_bench_operator_token_0123456789";
    ControllerServer server(config, **store, source, clock, logger, *notifier, *random,
                            ServerSecrets{hash_secret(token)}, lifecycle->get());
    if (auto st = server.start(); !st) {
        std::cerr << st.message() << "\n";
        return 1;
    }
    std::thread serving([&] { (void)server.run(); });
    httplib::Client client("127.0.0.1", server.port());
    client.set_read_timeout(std::chrono::seconds(30));
    httplib::Headers auth{{"Authorization", "Bearer " + token}};
    (void)client.Get("/", auth);  // warm-up
    int ok = 0;
    for (int run = 0; run < runs; ++run) {
        auto a = Clock_::now();
        auto res = client.Get("/", auth);
        total_http.push_back(ms_since(a));
        ok += res && res->status == 200 ? 1 : 0;
    }
    server.stop();
    serving.join();

    auto row = [](const char* what, const std::vector<double>& v) {
        auto s = stats(v);
        std::printf("| %s | %.1f | %.1f | %.1f |\n", what, s.median, s.p95, s.max);
    };
    std::printf("fleet page: %d nodes, %d reports each, %d runs, page %.1f MiB, %d/%d answered 200\n\n", nodes,
                per_node, runs, double(bytes) / (1024 * 1024), ok, runs);
    std::printf("| part | median ms | p95 ms | max ms |\n|---|---|---|---|\n");
    row("store: node_summaries() (last and last-run report of each node, no bodies)", q_nodes);
    row("lifecycle store: all()", q_lifecycle);
    row("fleet_rows (status derivation, order)", build);
    row("render_fleet_page (HTML)", render);
    row("**GET / end to end over loopback**", total_http);
    return ok == runs ? 0 : 1;
}
