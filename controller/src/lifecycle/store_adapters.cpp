// EnrollmentIssuer and NodeReportSource over the controller Store (controller/src/store/).
#include "nodeform/controller/lifecycle/store_adapters.hpp"

namespace nodeform::controller::lifecycle {
namespace {

class StoreIssuer final : public EnrollmentIssuer {
  public:
    StoreIssuer(Store& store, const Clock& clock, Random& random) : store_(store), clock_(clock), random_(random) {}

    Result<IssuedToken> issue(const std::string& identity, std::chrono::seconds ttl) override {
        IssuedToken t;
        t.token = generate_secret(random_, "nfe_");
        auto now = clock_.now();
        t.expires_at = now + ttl;
        if (auto st = store_.add_enrollment_token(identity, hash_secret(t.token), t.expires_at, now); !st) {
            return st.error();
        }
        return t;
    }

    Status revoke(const std::string& identity) override {
        auto r = store_.revoke(identity, clock_.now());
        if (!r) return r.error();
        return Ok{};
    }

    std::size_t token_length() const override { return 4 + 64; }  // "nfe_" + 32 bytes in hex

  private:
    Store& store_;
    const Clock& clock_;
    Random& random_;
};

class StoreReports final : public NodeReportSource {
  public:
    explicit StoreReports(Store& store) : store_(store) {}

    std::optional<NodeReport> latest(const std::string& identity) override {
        auto node = store_.node(identity);
        if (!node || !*node) return std::nullopt;
        const auto& rec = **node;
        if (!rec.last_report) return std::nullopt;
        NodeReport r;
        r.platform_ready = rec.last_run_report && rec.last_run_report->platform_ready;
        r.health_passing = rec.last_report->health_failed == 0;
        r.received_at = format_rfc3339(rec.last_report->received_at);
        return r;
    }

  private:
    Store& store_;
};

}  // namespace

std::unique_ptr<EnrollmentIssuer> make_store_issuer(Store& store, const Clock& clock, Random& random) {
    return std::make_unique<StoreIssuer>(store, clock, random);
}

std::unique_ptr<NodeReportSource> make_store_report_source(Store& store) {
    return std::make_unique<StoreReports>(store);
}

}  // namespace nodeform::controller::lifecycle
