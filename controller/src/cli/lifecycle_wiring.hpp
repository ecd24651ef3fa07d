#pragma once
// Private to controller/src/cli/: the lifecycle's dependencies as `node create` and `serve` wire them.
#include <memory>
#include <string>
#include <vector>

#include "nodeform/controller/lifecycle/lifecycle.hpp"
#include "nodeform/controller/store/store.hpp"
#include "nodeform/posix_process_runner.hpp"
#include "nodeform/random.hpp"

namespace nodeform::controller {

// What the deps point into; lives as long as the Lifecycle.
struct LifecycleWiring {
    std::unique_ptr<lifecycle::EnrollmentIssuer> issuer;
    std::unique_ptr<lifecycle::NodeReportSource> reports;
    PosixProcessRunner runner;  // the qemu provider's qemu-img, cloud-localds and qemu-system-x86_64
    std::unique_ptr<Random> random = make_system_random();
};

// Store-backed issuer and reports, Proxmox over HTTPS (pinned), local QEMU, and the NODEFORM_TEST_CRASH_AT hook.
lifecycle::LifecycleDeps lifecycle_deps(Store& store, lifecycle::LifecycleStore& lifecycle_store, const Clock& clock,
                                        Logger* logger, LifecycleWiring& wiring);

// Applies NAME=URL overrides to the site's Proxmox endpoints; the error names the override at fault.
Status override_endpoints(site::Site& site, const std::vector<std::string>& overrides);

}  // namespace nodeform::controller
