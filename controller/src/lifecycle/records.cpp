// The lifecycle's records as text: state names, and the JSON of records, receipts and plans.
#include <algorithm>

#include "nodeform/controller/lifecycle/lifecycle.hpp"
#include "nodeform/enum_names.hpp"

namespace nodeform::controller::lifecycle {

using json = nlohmann::json;

namespace {
constexpr EnumName<State> kStateNames[] = {{State::planned, "planned"},
                                           {State::provisioning, "provisioning"},
                                           {State::registered, "registered"},
                                           {State::validating, "validating"},
                                           {State::active, "active"},
                                           {State::decommissioning, "decommissioning"},
                                           {State::decommissioned, "decommissioned"},
                                           {State::failed, "failed"},
                                           {State::abandoned, "abandoned"}};
}  // namespace

const char* to_string(State state) {
    return name_of(kStateNames, state, "failed");
}

std::optional<State> parse_state(const std::string& text) {
    return value_of(kStateNames, text);
}

json to_json(const Receipt& r) {
    json j = {{"id", r.id},
              {"identity", r.identity},
              {"step", r.step},
              {"outcome", r.outcome},
              {"state_after", r.state_after},
              {"started_at", r.started_at},
              {"finished_at", r.finished_at},
              {"inputs", r.inputs},
              {"calls", r.calls},
              {"outputs", r.outputs}};
    if (!r.error.empty()) j["error"] = r.error;
    return j;
}

json to_json(const NodeRecord& r) {
    json j = {{"identity", r.identity}, {"state", to_string(r.state)}, {"step", r.step},
              {"endpoint", r.endpoint}, {"pve_node", r.pve_node},      {"vmid", r.vmid},
              {"ips", r.ips},           {"updated_at", r.updated_at}};
    if (!r.failed_step.empty()) j["failed_step"] = r.failed_step;
    if (!r.reason.empty()) j["reason"] = r.reason;
    if (!r.token_expires_at.empty()) j["token_expires_at"] = r.token_expires_at;
    if (!r.pending_upid.empty()) j["pending_upid"] = r.pending_upid;
    return j;
}

bool Plan::ok() const {
    return std::all_of(gates.begin(), gates.end(), [](const GateVerdict& g) { return g.pass; });
}

json to_json(const GateVerdict& g) {
    return {{"gate", g.name}, {"pass", g.pass}, {"detail", g.detail}};
}

json to_json(const Plan& p) {
    json gates = json::array();
    for (const auto& g : p.gates)
        gates.push_back(to_json(g));
    json calls = json::array();
    for (const auto& c : p.calls)
        calls.push_back({{"method", c.method}, {"path", c.path}, {"params", c.params}});
    return {{"identity", p.identity}, {"state", p.current_state}, {"vmid", p.vmid}, {"provider", p.provider},
            {"ok", p.ok()},           {"gates", gates},           {"calls", calls}};
}

}  // namespace nodeform::controller::lifecycle
