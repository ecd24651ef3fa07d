// The lifecycle's driver: prepares a node's run and walks an operation's step table (provision_steps.cpp,
// decommission_steps.cpp), one receipt and one persisted record per step, resuming after the last step done.
#include "nodeform/controller/lifecycle/lifecycle.hpp"

#include <algorithm>
#include <atomic>
#include <thread>

#include "nodeform/base64.hpp"
#include "nodeform/process.hpp"
#include "run.hpp"

namespace nodeform::controller::lifecycle {

using std::chrono::milliseconds;

// ---------------------------------------------------------------------------------------------------------------
// One node's run

std::string Run::redact(const std::string& text) const {
    return redact_secrets(text, secrets);
}

std::string Run::now() const {
    return format_rfc3339(deps.clock->now());
}

void Run::hook(const std::string& point) const {
    if (deps.crash_point) deps.crash_point(point);
}

bool Run::poll(milliseconds limit, milliseconds interval, const std::function<bool()>& done) const {
    const auto deadline = deps.clock->steady_now() + limit;
    for (;;) {
        if (done()) return true;
        if (deps.clock->steady_now() > deadline) return false;
        deps.clock->sleep_for(interval);
    }
}

Status Run::persist() {
    rec.updated_at = now();
    if (auto st = deps.store->put(rec); !st) return make_error("the lifecycle record was not saved: " + st.message());
    return Ok{};
}

Seed Run::seed(const std::string& token) const {
    return Seed{id(), options.controller_url.empty() ? site->info.controller_url : options.controller_url, token,
                options.ca_fingerprint};
}

std::string Run::posture_token() const {
    return node->auth.method == site::AuthMethod::site_token ? node->auth.site_token : std::string();
}

Seed Run::planned_seed() const {
    std::string token = posture_token();
    return seed(token.empty() ? std::string(deps.issuer->token_length(), 'x') : token);
}

StepOut StepOut::done(json outputs, json inputs) {
    StepOut o;
    o.outputs = std::move(outputs);
    o.inputs = std::move(inputs);
    return o;
}

StepOut StepOut::skip(json outputs) {
    StepOut o = done(std::move(outputs));
    o.kind = Kind::skipped;
    return o;
}

StepOut StepOut::fail(std::string error) {
    StepOut o;
    o.kind = Kind::failed;
    o.error = std::move(error);
    return o;
}

StepOut StepOut::retry(std::string error, milliseconds delay) {
    StepOut o = fail(std::move(error));
    o.kind = Kind::retry;
    o.delay = delay;
    return o;
}

StepOut StepOut::wait(std::string message) {
    StepOut o = fail(std::move(message));
    o.kind = Kind::waiting;
    return o;
}

StepOut task_step(const providers::Outcome<providers::TaskOutcome>& task, const std::string& what,
                  std::string summary) {
    if (!task.ok()) return StepOut::fail(task.error.message);
    json outputs = {{"upid", task.value->upid}, {"exitstatus", task.value->exitstatus}};
    if (task.value->ok()) {
        outputs["summary"] = std::move(summary);
        return StepOut::done(std::move(outputs));
    }
    StepOut o = StepOut::fail(what + " ended: " + task.value->exitstatus);
    if (!task.value->log_tail.empty()) outputs["task_log"] = task.value->log_tail;
    o.outputs = std::move(outputs);
    return o;
}

int step_index(const Operation& op, const std::string& step) {
    auto it = std::find_if(op.steps.begin(), op.steps.end(), [&](const Step& s) { return step == s.name; });
    return it == op.steps.end() ? -1 : static_cast<int>(it - op.steps.begin());
}

// ---------------------------------------------------------------------------------------------------------------
// The driver

bool run_step(Run& run, const Step& step, std::string& error, std::string* waiting) {
    run.hook(std::string("before:") + step.name);
    Receipt receipt;
    receipt.identity = run.rec.identity;
    receipt.step = step.name;
    receipt.started_at = run.now();
    StepOut out;
    for (int attempt = 1;; ++attempt) {
        try {
            out = step.body(run);
        } catch (const std::exception& e) {
            out = StepOut::fail(std::string("internal error: ") + e.what());
        }
        if (out.kind != StepOut::Kind::retry) break;
        if (attempt >= step.attempts) {
            out.kind = StepOut::Kind::failed;
            break;
        }
        if (out.delay.count() > 0) run.deps.clock->sleep_for(out.delay);
    }
    if (out.kind == StepOut::Kind::waiting && waiting != nullptr) {
        *waiting = run.redact(out.error);
        return false;
    }
    receipt.finished_at = run.now();
    for (const auto& call : run.provider->take_calls())
        receipt.calls.push_back(providers::to_json(call));
    receipt.inputs = out.inputs;
    receipt.outputs = out.outputs;
    receipt.error = run.redact(out.error);
    if (out.ok()) {
        receipt.outcome = out.kind == StepOut::Kind::skipped ? "skipped" : "ok";
        run.rec.step = step.name;
        run.rec.state = step.state_after;
        run.rec.failed_step.clear();
        run.rec.reason.clear();
    } else {
        receipt.outcome = "failed";
        run.rec.state = State::failed;
        run.rec.failed_step = step.name;
        run.rec.reason = receipt.error;
        error = receipt.error;
    }
    receipt.state_after = to_string(run.rec.state);
    // A receipt's text passes through redaction as a whole, in case a message echoed a secret.
    json redacted = json::parse(run.redact(to_json(receipt).dump()), nullptr, false);
    if (redacted.is_object()) {
        receipt.inputs = redacted["inputs"];
        receipt.calls = redacted["calls"];
        receipt.outputs = redacted["outputs"];
    }
    if (auto put = run.persist(); !put) {
        error = put.message();
        return false;
    }
    if (auto add = run.deps.store->add_receipt(receipt); !add) {
        error = "the receipt was not saved: " + add.message();
        return false;
    }
    double elapsed = std::chrono::duration<double>(run.deps.clock->steady_now() - run.t0).count();
    std::string detail = out.ok() ? (out.kind == StepOut::Kind::skipped ? "already done" : "done") : receipt.error;
    if (out.outputs.contains("summary") && out.outputs["summary"].is_string()) {
        detail = out.outputs["summary"].get<std::string>();
    }
    detail = run.redact(detail);
    if (run.deps.progress) run.deps.progress({run.rec.identity, step.name, detail, elapsed, !out.ok()});
    if (run.deps.logger) {
        run.deps.logger->log(out.ok() ? LogLevel::info : LogLevel::error,
                             run.rec.identity + ": " + step.name + ": " + detail,
                             {{"IDENTITY", run.rec.identity}, {"STEP", step.name}, {"OUTCOME", receipt.outcome}});
    }
    run.hook(std::string("after:") + step.name);
    return out.ok();
}

RunResult drive(Run& run, const Operation& op) {
    for (std::size_t i = static_cast<std::size_t>(step_index(op, run.rec.step) + 1); i < op.steps.size(); ++i) {
        if (run.deps.may_continue && !run.deps.may_continue(run.id())) {
            return {run.id(), run.rec.state, false,
                    run.id() + ": stopped before " + op.steps[i].name + ": another controller took the lease over"};
        }
        std::string error;
        std::string waiting;
        if (run_step(run, op.steps[i], error, &waiting)) continue;
        if (!waiting.empty()) return {run.id(), run.rec.state, false, run.id() + ": " + waiting};
        return op.on_failure(run, op.steps[i].name, error);
    }
    return op.on_done(run);
}

// ---------------------------------------------------------------------------------------------------------------
// Entry points

Lifecycle::Lifecycle(LifecycleDeps deps, LifecycleOptions options)
    : deps_(std::move(deps)), options_(std::move(options)) {}

// Finds the node, its endpoint and placement site, the stored record, and a provider.
Result<std::unique_ptr<Run>> Lifecycle::prepare(const site::Site& site, const std::string& identity) {
    auto it = site.nodes.find(identity);
    if (it == site.nodes.end()) {
        return make_error("node '" + identity + "' is not in the site (" + site.dir + "/nodes/" + identity +
                          ".yaml): check the name with 'nodeform-controller validate'");
    }
    auto run = std::make_unique<Run>(deps_, options_, vmid_mutex_);
    run->site = &site;
    run->node = &it->second;
    run->t0 = deps_.clock->steady_now();
    if (run->node->type != "vm") {
        return make_error("node '" + identity + "' has type '" + run->node->type + "': only type vm is provisioned");
    }
    if (run->node->placement.provider == "qemu") return prepare_local(std::move(run), identity);
    for (const auto& e : site.info.proxmox) {
        if (e.name == run->node->placement.endpoint) run->endpoint = &e;
    }
    if (run->endpoint == nullptr) {
        return make_error("node '" + identity + "': Proxmox endpoint '" + run->node->placement.endpoint +
                          "' is not in site.yaml proxmox.endpoints");
    }
    for (const auto& p : site.info.placements) {
        if (p.name == run->node->placement.site) run->placement = &p;
    }
    if (!run->endpoint->token_secret.empty()) run->secrets.push_back(run->endpoint->token_secret);
    auto provider = deps_.providers(*run->endpoint);
    if (!provider) return make_error("Proxmox endpoint '" + run->endpoint->name + "': " + provider.message());
    run->provider = std::move(*provider);
    return finish_prepare(std::move(run), identity);
}

// provider qemu: one host ("local") with the VMIDs 100-999999, the provider from qemu_providers.
Result<std::unique_ptr<Run>> Lifecycle::prepare_local(std::unique_ptr<Run> run, const std::string& identity) {
    run->local_placement = site::Placement{"local", 100, 999999, {"local"}};
    run->placement = &run->local_placement;
    if (!deps_.qemu_providers) {
        return make_error("node '" + identity + "' has provider qemu, which this controller does not run");
    }
    auto provider = deps_.qemu_providers(*run->node);
    if (!provider) return make_error("node '" + identity + "': qemu provider: " + provider.message());
    run->provider = std::move(*provider);
    return finish_prepare(std::move(run), identity);
}

// The secrets the run redacts (handed to the provider too) and the stored record.
Result<std::unique_ptr<Run>> Lifecycle::finish_prepare(std::unique_ptr<Run> run, const std::string& identity) {
    if (!run->posture_token().empty()) {  // the site token and the seeds that carry it
        const std::string compact = encode_seed_compact(run->planned_seed());
        for (const auto& secret : {run->posture_token(), compact, base64_encode(compact)})
            run->secrets.push_back(secret);
    }
    for (const auto& secret : run->secrets)
        run->provider->add_secret(secret);
    auto rec = deps_.store->get(identity);
    if (!rec) return rec.error();
    run->rec = *rec ? **rec : fresh_record(identity);
    return run;
}

RunResult Lifecycle::create(const site::Site& site, const std::string& identity) {
    reserve_batch(site, {identity});
    return create_reserved(site, identity);
}

RunResult Lifecycle::create_reserved(const site::Site& site, const std::string& identity) {
    auto run = prepare(site, identity);
    if (!run) return RunResult{identity, State::failed, false, run.message()};
    return provision(**run);
}

std::vector<RunResult> Lifecycle::create_many(const site::Site& site, const std::vector<std::string>& identities,
                                              int parallel) {
    std::vector<RunResult> results(identities.size());
    reserve_batch(site, identities);
    std::atomic<std::size_t> next{0};
    int workers = std::max(1, std::min<int>(parallel, static_cast<int>(identities.size())));
    auto work = [&] {
        for (;;) {
            std::size_t i = next.fetch_add(1);
            if (i >= identities.size()) return;
            try {
                results[i] = create_reserved(site, identities[i]);
            } catch (const std::exception& e) {
                results[i] = RunResult{identities[i], State::failed, false, std::string("internal error: ") + e.what()};
            }
        }
    };
    std::vector<std::thread> threads;
    for (int w = 1; w < workers; ++w)
        threads.emplace_back(work);
    work();
    for (auto& t : threads)
        t.join();
    return results;
}

RunResult Lifecycle::destroy(const site::Site& site, const std::string& identity, bool abandon) {
    auto run = prepare(site, identity);
    if (!run) return RunResult{identity, State::failed, false, run.message()};
    return decommission(**run, abandon);
}

RunResult Lifecycle::advance(const site::Site& site, const std::string& identity) {
    auto run = prepare(site, identity);
    if (!run) return RunResult{identity, State::failed, false, run.message()};
    const NodeRecord& rec = (*run)->rec;
    bool decommissioning = rec.state == State::decommissioning ||
                           (rec.state == State::failed && step_index(decommission_operation(), rec.failed_step) >= 0);
    return decommissioning ? decommission(**run, false) : provision(**run);
}

Status Lifecycle::queue_create(const std::string& identity) {
    auto rec = deps_.store->get(identity);
    if (!rec) return rec.error();
    NodeRecord r = *rec ? **rec : fresh_record(identity);
    if (r.state == State::decommissioning) {
        return make_error("node '" + identity + "' is being decommissioned: wait for 'node destroy' to finish");
    }
    if (r.state == State::active) return Ok{};
    if (r.state == State::failed && step_index(decommission_operation(), r.failed_step) >= 0) {
        return make_error("node '" + identity + "' failed at '" + r.failed_step +
                          "' while decommissioning: 'node destroy " + identity + "' again");
    }
    if (r.state == State::decommissioned || r.state == State::abandoned) r = fresh_record(identity);
    if (r.state == State::failed) r.state = State::planned;  // resumes after the last step done (r.step)
    r.updated_at = format_rfc3339(deps_.clock->now());
    return queue(r);
}

Status Lifecycle::queue_destroy(const std::string& identity) {
    auto rec = deps_.store->get(identity);
    if (!rec) return rec.error();
    if (!*rec || ((*rec)->state == State::planned && (*rec)->vmid == 0)) {
        return make_error("node '" + identity + "' was never provisioned by this controller; nothing to destroy");
    }
    NodeRecord r = **rec;
    if (r.state == State::decommissioned) return Ok{};
    if (r.state != State::decommissioning) {
        r.state = State::decommissioning;
        r.step.clear();
    }
    r.updated_at = format_rfc3339(deps_.clock->now());
    return queue(r);
}

Status Lifecycle::queue(const NodeRecord& record) {
    if (auto st = deps_.store->put(record); !st) return st;
    return deps_.store->clear_retry(record.identity);  // queued again: its failures start over
}

}  // namespace nodeform::controller::lifecycle
