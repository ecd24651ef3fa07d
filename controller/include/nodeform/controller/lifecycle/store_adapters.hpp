#pragma once
// The lifecycle's EnrollmentIssuer and NodeReportSource implemented over the controller's Store.
#include <memory>

#include "nodeform/controller/lifecycle/lifecycle.hpp"
#include "nodeform/controller/store/store.hpp"

namespace nodeform::controller::lifecycle {

// Tokens: generate_secret(random, "nfe_"), stored hashed via Store::add_enrollment_token; revoke = Store::revoke.
std::unique_ptr<EnrollmentIssuer> make_store_issuer(Store& store, const Clock& clock, Random& random);
// platform_ready from the newest run report; health passing when the newest report has no failed check.
std::unique_ptr<NodeReportSource> make_store_report_source(Store& store);

}  // namespace nodeform::controller::lifecycle
