#include "nodeform/agent/daemon/adapters.hpp"
#include "nodeform/agent/validate.hpp"
#include "nodeform/json_limits.hpp"

#include "nodeform/agent/system/run_lock.hpp"
#include "nodeform/atomic_file.hpp"
#include "nodeform/canonical_json.hpp"

namespace nodeform::agent::daemon {

Result<SpecFetch> ControllerSpecSource::fetch() {
    auto fetched = client_.fetch_spec();
    if (!fetched) return fetched.error();
    if (!fetched->from_cache || fetched->not_modified) reached_ = true;
    if (fetched->spec.value("identity", "") != identity_) {
        return make_error("the spec is for '" + fetched->spec.value("identity", "") + "', not " + identity_ +
                          "; refusing to converge it");
    }
    SpecFetch out;
    out.spec = std::move(fetched->spec);
    out.digest = fetched->etag.empty() ? canonical_digest(out.spec) : fetched->etag;
    out.from_cache = fetched->from_cache && !fetched->not_modified;
    out.not_modified = fetched->not_modified;
    out.warning = fetched->warning;
    out.credential_refused = fetched->credential_refused;
    out.apply_request = std::move(fetched->apply_request);
    return out;
}

Result<SpecFetch> FileSpecSource::fetch() {
    auto text = read_file(path_, 64 * 1024 * 1024);
    if (!text) return make_error("cannot read the spec file: " + text.message());
    auto parsed = parse_json_bounded(*text, {text->size()});
    if (!parsed) return make_error(path_ + ": " + parsed.message());
    nlohmann::json& j = *parsed;
    if (!j.is_object()) return make_error(path_ + " is not a resolved spec (a JSON object)");
    if (auto st = check_spec_schema(j, path_); !st) return st.error();
    SpecFetch out;
    out.digest = canonical_digest(j);
    out.spec = std::move(j);
    return out;
}

RunOutcome ConvergeRunEngine::run(const nlohmann::json& spec, TurnMode mode) {
    RunOutcome out;
    auto lock = RunLock::acquire(lock_path_, lock_timeout_);
    if (!lock) {
        RunReport failed;  // no report_id: the daemon's stamp draws one
        failed.identity = spec.value("identity", "");
        failed.spec_digest = canonical_digest(spec);
        failed.mode = mode == TurnMode::apply ? RunMode::apply : RunMode::check;
        failed.started_at = failed.finished_at = std::chrono::system_clock::now();
        failed.error = lock.message();
        out.report = to_report(failed);
        return out;
    }
    RunReport report = engine_.run(spec, mode == TurnMode::apply ? RunMode::apply : RunMode::check);
    out.ok = report.ok();
    out.platform_ready = report.platform_ready;
    out.reached_platform_ready = report.reached_platform_ready;
    out.report = to_report(report);
    return out;
}

ReportPostResult ClientReportPoster::post(const nlohmann::json& report) {
    if (!source_.reached_controller())
        return {ReportDelivery::unavailable, "waiting for the first answer from the controller before sending reports"};
    return client_.post_report(report);
}

}  // namespace nodeform::agent::daemon
