#pragma once
// The controller's HTTP(S) API (docs/protocol.md, docs/controller.md): specs, enrollment, reports, operator
// views, health and metrics. Side effects come in through the constructor: Store, SiteSource, Clock, Logger,
// Notifier, Random (request ids, node credentials).
#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "nodeform/clock.hpp"
#include "nodeform/controller/api/site_snapshot.hpp"
#include "nodeform/controller/api/state.hpp"
#include "nodeform/controller/config.hpp"
#include "nodeform/controller/lifecycle/lifecycle.hpp"
#include "nodeform/controller/store/store.hpp"
#include "nodeform/log.hpp"
#include "nodeform/notifier.hpp"
#include "nodeform/random.hpp"
#include "nodeform/result.hpp"
#include "nodeform/site/site.hpp"

namespace httplib {
class Server;
}

namespace nodeform::controller {

// An identity as it may appear in a URL path: 1..253 of [A-Za-z0-9._-], not "." or "..", no leading '.' or '-'.
bool valid_identity(const std::string& identity);

// Secrets the operator endpoints need.
struct ServerSecrets {
    std::string operator_token_hash;  // hash_secret(operator token); empty disables the operator endpoints
};

class ControllerServer {
  public:
    // lifecycle: the provisioning records shown by the operator endpoints (null: no "lifecycle" fields).
    ControllerServer(ControllerConfig config, Store& store, SiteSource& site_source, const Clock& clock, Logger& logger,
                     Notifier& notifier, Random& random, ServerSecrets secrets,
                     lifecycle::LifecycleStore* lifecycle = nullptr);
    ~ControllerServer();
    ControllerServer(const ControllerServer&) = delete;
    ControllerServer& operator=(const ControllerServer&) = delete;

    // Loads the site (Err when it is invalid: nothing to serve), binds the listener (port 0 = ephemeral).
    Status start();
    int port() const { return port_; }
    // Serves until stop(); starts the reload poller, retention and watchdog threads. Sends READY=1.
    Status run();
    void stop();
    // Reloads the site now (SIGHUP); Ok when the new site is serving, Err (old one kept) when it is invalid.
    Status reload();

    // For tests and /readyz.
    std::shared_ptr<const site::Site> current_site() const;
    // Connections accepted and not yet closed (in service, waiting for a worker, or idle), as /metrics shows them.
    std::int64_t open_connections() const;

    struct Impl;

  private:
    std::unique_ptr<Impl> impl_;
    int port_ = 0;
};

}  // namespace nodeform::controller
