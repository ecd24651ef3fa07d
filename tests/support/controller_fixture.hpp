#pragma once
// For tests that run a ControllerServer in process: its stores under STATE, and a loopback client that waits for it.
#include <gtest/gtest.h>
#include <httplib.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "fakes/memory_logger.hpp"
#include "fakes/recording_notifier.hpp"
#include "nodeform/controller/api/server.hpp"
#include "nodeform/controller/lifecycle/lifecycle.hpp"
#include "nodeform/controller/store/sqlite.hpp"
#include "nodeform/controller/store/store.hpp"
#include "nodeform/random.hpp"
#include "nodeform/tls.hpp"
#include "test_paths.hpp"

namespace nodeform::test {

// The status of an HTTP result; -1 when there was no response.
inline int status_of(const httplib::Result& r) {
    return r ? r->status : -1;
}

// A provisioned node's lifecycle record: active on pve1 as VMID vmid with ips, as of updated_at.
inline controller::lifecycle::NodeRecord active_record(const std::string& identity, std::int64_t vmid,
                                                       std::vector<std::string> ips, const std::string& updated_at) {
    controller::lifecycle::NodeRecord r;
    r.identity = identity;
    r.state = controller::lifecycle::State::active;
    r.step = "active";
    r.vmid = vmid;
    r.pve_node = "pve1";
    r.ips = std::move(ips);
    r.updated_at = updated_at;
    return r;
}

// Opens STATE's report store and lifecycle store (one SQLite file) into store and lifecycle.
inline void open_controller_stores(const std::string& state, std::unique_ptr<controller::Store>& store,
                                   std::unique_ptr<controller::lifecycle::LifecycleStore>& lifecycle) {
    auto opened = controller::open_sqlite_store(controller::sqlite::database_path(state));
    ASSERT_TRUE(opened.ok()) << opened.message();
    store = std::move(*opened);
    auto opened_lifecycle = controller::lifecycle::LifecycleStore::open(controller::sqlite::database_path(state));
    ASSERT_TRUE(opened_lifecycle.ok()) << opened_lifecycle.message();
    lifecycle = std::move(*opened_lifecycle);
}

// Starts server, runs it on thread, and sets client to it on 127.0.0.1 (HTTPS trusting STATE/tls's CA when tls)
// once /healthz answers or two seconds have passed.
inline void run_and_connect(controller::ControllerServer& server, std::thread& thread,
                            std::unique_ptr<httplib::Client>& client, const std::string& state, bool tls,
                            std::chrono::seconds read_timeout) {
    auto started = server.start();
    ASSERT_TRUE(started.ok()) << started.message();
    thread = std::thread([&server] { (void)server.run(); });
    if (tls) {
        client = std::make_unique<httplib::Client>("https://127.0.0.1:" + std::to_string(server.port()));
        client->set_ca_cert_path(tls::pki_paths(state + "/tls").ca_cert.c_str());
        client->enable_server_certificate_verification(true);
    } else {
        client = std::make_unique<httplib::Client>("127.0.0.1", server.port());
    }
    client->set_read_timeout(read_timeout);
    for (int i = 0; i < 100; ++i) {
        if (client->Get("/healthz")) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
}

// What an in-process controller test holds: the stores under dir_, the server on thread_, and client_; the
// subclass adds its site source and clock and starts the server (open_controller_stores, run_and_connect).
class InProcessControllerTest : public ::testing::Test {
  protected:
    void TearDown() override { stop(); }
    // Stops the server and waits for its thread.
    void stop() {
        if (server_) server_->stop();
        if (thread_.joinable()) thread_.join();
        server_.reset();
    }

    TempDir dir_;
    MemoryLogger logger_;
    RecordingNotifier notifier_;
    std::unique_ptr<Random> random_ = make_system_random();
    controller::ControllerConfig config_;
    std::unique_ptr<controller::Store> store_;
    std::unique_ptr<controller::lifecycle::LifecycleStore> lifecycle_;
    std::unique_ptr<controller::ControllerServer> server_;
    std::thread thread_;
    std::unique_ptr<httplib::Client> client_;
};

}  // namespace nodeform::test
