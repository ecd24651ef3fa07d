// The lifecycle's dependencies as `node create` and `serve` wire them.
#include "lifecycle_wiring.hpp"

#include <unistd.h>

#include <cstdlib>

#include "nodeform/controller/lifecycle/store_adapters.hpp"
#include "nodeform/controller/providers/proxmox.hpp"
#include "nodeform/controller/providers/qemu.hpp"
#include "nodeform/http.hpp"

namespace nodeform::controller {

namespace lc = lifecycle;

lc::LifecycleDeps lifecycle_deps(Store& store, lc::LifecycleStore& lifecycle_store, const Clock& clock, Logger* logger,
                                 LifecycleWiring& wiring) {
    wiring.issuer = lc::make_store_issuer(store, clock, *wiring.random);
    wiring.reports = lc::make_store_report_source(store);
    lc::LifecycleDeps deps;
    deps.store = &lifecycle_store;
    deps.issuer = wiring.issuer.get();
    deps.reports = wiring.reports.get();
    deps.clock = &clock;
    deps.logger = logger;
    deps.providers = [](const site::ProxmoxEndpoint& e) -> Result<std::unique_ptr<providers::Provider>> {
        HttpClientOptions http;
        http.base_url = e.url;
        while (!http.base_url.empty() && http.base_url.back() == '/')
            http.base_url.pop_back();
        http.tls.pin_sha256 = e.fingerprint;
        auto transport = make_http_transport(http);
        if (!transport) return transport.error();
        providers::ProxmoxOptions o;
        o.token_id = e.token_id;
        o.token_secret = e.token_secret;
        return providers::make_proxmox_provider(std::move(*transport), o);
    };
    deps.qemu_providers = [&wiring, &clock](const site::Node& n) -> Result<std::unique_ptr<providers::Provider>> {
        providers::QemuOptions o;
        o.template_image = n.placement.qemu.template_image;
        o.state_dir = n.placement.qemu.state_dir;
        o.accel = n.placement.qemu.accel;
        return providers::make_qemu_provider(std::move(o), wiring.runner, clock);
    };
    // Test hook (never set in production): exit abruptly at a lifecycle point, like a SIGKILL.
    if (const char* crash = std::getenv("NODEFORM_TEST_CRASH_AT"); crash != nullptr && *crash != '\0') {
        std::string point = crash;
        deps.crash_point = [point](const std::string& p) {
            if (p == point) _exit(137);
        };
    }
    return deps;
}

Status override_endpoints(site::Site& site, const std::vector<std::string>& overrides) {
    for (const auto& ep : overrides) {
        auto eq = ep.find('=');
        bool found = false;
        if (eq != std::string::npos) {
            for (auto& e : site.info.proxmox) {
                if (e.name == ep.substr(0, eq)) {
                    e.url = ep.substr(eq + 1);
                    found = true;
                }
            }
        }
        if (!found) return make_error("--endpoint wants NAME=URL with NAME one of site.yaml proxmox.endpoints");
    }
    return Ok{};
}

}  // namespace nodeform::controller
