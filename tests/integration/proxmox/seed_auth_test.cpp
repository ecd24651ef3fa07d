// A provisioned node's seed authenticates: provisioned against the stand-in with the controller's real store
// as issuer, then the agent's ControllerClient, given the seed read back from the VM's smbios1, fetches its
// spec from a real in-process controller over loopback, for every posture.
#include <gtest/gtest.h>

#include <thread>

#include "fakes/memory_filesystem.hpp"
#include "fakes/memory_logger.hpp"
#include "fakes/recording_notifier.hpp"
#include "harness.hpp"
#include "nodeform/agent/controller_client.hpp"
#include "nodeform/agent/system/filesystem.hpp"
#include "nodeform/base64.hpp"
#include "nodeform/canonical_json.hpp"
#include "nodeform/controller/api/server.hpp"
#include "nodeform/controller/lifecycle/store_adapters.hpp"
#include "nodeform/controller/store/sqlite.hpp"
#include "nodeform/controller/store/store.hpp"
#include "nodeform/random.hpp"
#include "nodeform/seed.hpp"
#include "static_site_source.hpp"

namespace nodeform::test {
namespace {

using nlohmann::json;
namespace ctl = nodeform::controller;

// The seed the VM carries in its SMBIOS serial.
Seed seed_of(PveStandin& pve, std::int64_t vmid) {
    const std::string smbios = pve.vm_config(vmid)["smbios1"];
    std::string serial = smbios.substr(smbios.find("serial=") + 7);
    serial = serial.substr(0, serial.find(','));
    auto compact = base64_decode(serial);
    if (!compact) throw std::runtime_error("smbios1 serial is not base64: " + smbios);
    auto seed = decode_seed_compact(*compact);
    if (!seed) throw std::runtime_error(seed.message());
    return *seed;
}

TEST(ProvisionedSeed, AuthenticatesForEveryPosture) {
    const std::string site_token = "mon-site-token-0123456789abcdef";
    PveStandin pve(fast_standin());
    pve.add_template("pve1", 9000, "debian12-tmpl");
    TempDir dir;
    const std::string db = dir.path() + "/nodeform.db";
    Harness h(pve, db, 3);
    h.site.nodes["web-02"].auth.method = site::AuthMethod::site_token;  // like mon-01 in examples/site
    h.site.nodes["web-02"].auth.site_token = site_token;
    h.site.nodes["web-03"].auth.method = site::AuthMethod::network;
    h.site.nodes["web-03"].auth.allowed_cidrs = {"127.0.0.0/8"};
    for (auto& [name, node] : h.site.nodes) {
        node.resolved["schema_version"] = 1;
        node.digest = canonical_digest(node.resolved);
    }

    auto store = ctl::open_sqlite_store(db);
    ASSERT_TRUE(store) << store.message();
    auto random = make_system_random();
    auto issuer = lc::make_store_issuer(**store, h.clock, *random);
    lc::LifecycleDeps deps;
    deps.store = h.store.get();
    deps.providers = [&pve](const site::ProxmoxEndpoint& e) -> Result<std::unique_ptr<pv::Provider>> {
        pv::ProxmoxOptions o;
        o.token_id = e.token_id;
        o.token_secret = e.token_secret;
        o.poll_min = std::chrono::milliseconds(5);
        o.poll_max = std::chrono::milliseconds(20);
        return pv::make_proxmox_provider(make_loopback_transport(pve.base_url()), o);
    };
    deps.issuer = issuer.get();
    deps.reports = &h.reports;
    deps.clock = &h.clock;
    deps.logger = &h.logger;
    lc::LifecycleOptions opt;
    opt.ca_fingerprint = std::string(64, 'a');
    opt.wait_poll = std::chrono::milliseconds(10);
    opt.agent_poll = std::chrono::milliseconds(10);
    lc::Lifecycle lifecycle(deps, opt);
    for (const auto& r : lifecycle.create_many(h.site, {"web-01", "web-02", "web-03"}, 3))
        ASSERT_TRUE(r.ok) << r.message;

    ctl::ControllerConfig config;
    config.state = dir.path();
    config.plain_http = true;
    config.listen_host = "127.0.0.1";
    config.listen_port = 0;
    config.threads = 4;
    StaticSiteSource source(h.site);
    MemoryLogger server_log;
    RecordingNotifier notifier;
    ctl::ControllerServer server(config, **store, source, h.clock, server_log, notifier, *random,
                                 ctl::ServerSecrets{ctl::hash_secret("nfo_test_operator_token_0123456789")},
                                 h.store.get());
    auto started = server.start();
    ASSERT_TRUE(started) << started.message();
    std::thread serving([&] { (void)server.run(); });
    struct Stop {  // also when an assertion ends the test early
        ctl::ControllerServer& server;
        std::thread& thread;
        ~Stop() {
            server.stop();
            if (thread.joinable()) thread.join();
        }
    } stop{server, serving};
    const std::string url = "http://127.0.0.1:" + std::to_string(server.port());

    for (const auto& [name, posture] : std::vector<std::pair<std::string, std::string>>{
             {"web-01", "node_token"}, {"web-02", "site_token"}, {"web-03", "network"}}) {
        SCOPED_TRACE(name + " (" + posture + ")");
        auto rec = h.store->get(name);
        ASSERT_TRUE(rec && *rec);
        Seed seed = seed_of(pve, (*rec)->vmid);
        EXPECT_EQ(seed.identity, name);
        if (posture == "site_token") {
            EXPECT_EQ(seed.token, site_token);
        }
        seed.controller_url = url;  // the site's URL is not this test's loopback controller
        auto transport = make_loopback_transport(url);
        agent::MemoryFilesystem fs;
        MemoryLogger agent_log;
        agent::ClientOptions client_options;
        client_options.backoff.attempts = 1;
        client_options.sleep = [](std::chrono::milliseconds) {};
        agent::ControllerClient client(*transport, fs, agent_log, seed, client_options);
        auto spec = client.fetch_spec();
        ASSERT_TRUE(spec) << spec.message();
        EXPECT_FALSE(spec->from_cache) << spec->warning;
        EXPECT_EQ(spec->spec.value("identity", ""), name);
    }
}

}  // namespace
}  // namespace nodeform::test
