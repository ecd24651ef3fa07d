// The provisioning lifecycle: gates, resumable idempotent steps that read Proxmox's real state, receipts.
#include "nodeform/controller/lifecycle/lifecycle.hpp"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <map>
#include <set>
#include <thread>

#include "nodeform/base64.hpp"
#include "nodeform/controller/providers/proxmox.hpp"
#include "nodeform/process.hpp"
#include "nodeform/seed.hpp"

namespace nodeform::controller::lifecycle {

using json = nlohmann::json;
using providers::FailureKind;
using providers::Outcome;
using providers::VmState;
using std::chrono::milliseconds;

namespace {

const std::vector<std::string> kProvisionSteps = {"vmid_reserved", "cloned",     "configured",  "resized",
                                                  "started",       "registered", "agent_ready", "active"};
const std::vector<std::string> kDecommissionSteps = {"backed_up", "stopped", "destroyed", "revoked"};

int step_index(const std::vector<std::string>& steps, const std::string& step) {
    auto it = std::find(steps.begin(), steps.end(), step);
    return it == steps.end() ? -1 : static_cast<int>(it - steps.begin());
}

bool valid_hostname(const std::string& name, int max_length, std::string& why) {
    int limit = std::min(max_length > 0 ? max_length : 63, 63);
    if (name.empty() || static_cast<int>(name.size()) > limit) {
        why = "must be 1 to " + std::to_string(limit) + " characters (site naming.max_length)";
        return false;
    }
    if (!(name[0] >= 'a' && name[0] <= 'z')) {
        why = "must start with a lower-case letter";
        return false;
    }
    if (name.back() == '-') {
        why = "must not end with a hyphen";
        return false;
    }
    for (char c : name) {
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) {
            why = "may contain only lower-case letters, digits and hyphens";
            return false;
        }
    }
    return true;
}

std::string boot_disk(const VmState& vm) {
    auto is_disk = [&](const std::string& key) {
        auto it = vm.config.find(key);
        if (it == vm.config.end()) return false;
        return it->second.find("media=cdrom") == std::string::npos && it->second.find("cloudinit") == std::string::npos;
    };
    auto boot = vm.config.find("boot");
    if (boot != vm.config.end()) {
        for (const auto& [k, v] : providers::split_option_string(boot->second)) {
            if (k != "order") continue;
            std::size_t start = 0;
            while (start <= v.size()) {
                auto semi = v.find(';', start);
                std::string dev = v.substr(start, semi == std::string::npos ? std::string::npos : semi - start);
                if (is_disk(dev)) return dev;
                if (semi == std::string::npos) break;
                start = semi + 1;
            }
        }
    }
    for (const char* key : {"scsi0", "virtio0", "sata0", "ide0"}) {
        if (is_disk(key)) return key;
    }
    return "";
}

std::optional<std::uint64_t> disk_size(const VmState& vm, const std::string& disk) {
    auto it = vm.config.find(disk);
    if (it == vm.config.end()) return std::nullopt;
    for (const auto& [k, v] : providers::split_option_string(it->second)) {
        if (k == "size") return providers::parse_size(v);
    }
    return std::nullopt;
}

}  // namespace

const char* to_string(State state) {
    switch (state) {
        case State::planned:
            return "planned";
        case State::provisioning:
            return "provisioning";
        case State::registered:
            return "registered";
        case State::validating:
            return "validating";
        case State::active:
            return "active";
        case State::decommissioning:
            return "decommissioning";
        case State::decommissioned:
            return "decommissioned";
        case State::failed:
            return "failed";
        case State::abandoned:
            return "abandoned";
    }
    return "failed";
}

std::optional<State> parse_state(const std::string& text) {
    for (State s : {State::planned, State::provisioning, State::registered, State::validating, State::active,
                    State::decommissioning, State::decommissioned, State::failed, State::abandoned}) {
        if (text == to_string(s)) return s;
    }
    return std::nullopt;
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

json to_json(const Plan& p) {
    json gates = json::array();
    for (const auto& g : p.gates)
        gates.push_back({{"gate", g.name}, {"pass", g.pass}, {"detail", g.detail}});
    json calls = json::array();
    for (const auto& c : p.calls)
        calls.push_back({{"method", c.method}, {"path", c.path}, {"params", c.params}});
    return {{"identity", p.identity}, {"state", p.current_state}, {"vmid", p.vmid},
            {"ok", p.ok()},           {"gates", gates},           {"calls", calls}};
}

// Everything one node's run needs; one provider (and so one transport) per run.
struct Lifecycle::Run {
    const site::Site* site = nullptr;
    const site::Node* node = nullptr;
    const site::ProxmoxEndpoint* endpoint = nullptr;
    const site::Placement* placement = nullptr;
    std::unique_ptr<providers::Provider> provider;
    NodeRecord rec;
    std::chrono::steady_clock::time_point t0;
    std::vector<std::string> secrets;  // never in errors, receipts or logs

    std::string redact(const std::string& text) const { return redact_secrets(text, secrets); }
};

Lifecycle::Lifecycle(LifecycleDeps deps, LifecycleOptions options)
    : deps_(std::move(deps)), options_(std::move(options)) {
    if (!deps_.sleep) deps_.sleep = [](milliseconds d) { std::this_thread::sleep_for(d); };
}

void Lifecycle::sleep(milliseconds d) {
    deps_.sleep(d);
}

namespace {

struct StepOut {
    bool ok = true;
    bool skipped = false;
    json inputs = json::object();
    json outputs = json::object();
    std::string error;
    static StepOut fail(std::string e) {
        StepOut o;
        o.ok = false;
        o.error = std::move(e);
        return o;
    }
    static StepOut skip(json outputs) {
        StepOut o;
        o.skipped = true;
        o.outputs = std::move(outputs);
        return o;
    }
};

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// Shared helpers (free functions over the Run, kept in this file).

namespace {

struct Ctx {
    LifecycleDeps* deps;
    LifecycleOptions* options;
};

std::string now_text(const LifecycleDeps& deps) {
    return format_rfc3339(deps.clock->now());
}

void hook(const LifecycleDeps& deps, const std::string& point) {
    if (deps.crash_point) deps.crash_point(point);
}

}  // namespace

// Prepares a run: finds the node, its endpoint and placement site, and a provider.
static Result<std::unique_ptr<Lifecycle::Run>> prepare_run_impl(const site::Site& site, const std::string& identity,
                                                                LifecycleDeps& deps);

RunResult Lifecycle::create(const site::Site& site, const std::string& identity) {
    reserve_batch(site, {identity});
    return create_reserved(site, identity);
}

RunResult Lifecycle::create_reserved(const site::Site& site, const std::string& identity) {
    auto run = prepare_run_impl(site, identity, deps_);
    if (!run) return RunResult{identity, State::failed, false, run.message()};
    return provision(**run);
}

// Reserves a VMID for every node of the batch that has none yet, in one pass: one cluster/resources read per
// endpoint, the store read once, all reservations written in one transaction. Best effort: a node left without
// a reservation (an unreachable endpoint, a full range) is allocated by its vmid gate, which also reports why.
// A reserved VMID is only a candidate: the node's gate still checks range, cluster/nextid and the store.
void Lifecycle::reserve_batch(const site::Site& site, const std::vector<std::string>& identities) {
    struct Want {
        const site::Node* node = nullptr;
        const site::Placement* placement = nullptr;
        NodeRecord rec;
    };
    std::lock_guard<std::mutex> lock(vmid_mutex_);
    auto all = deps_.store->all();
    if (!all) return;
    std::map<std::string, NodeRecord> stored;
    for (auto& r : *all)
        stored[r.identity] = std::move(r);
    std::map<std::string, std::vector<Want>> by_endpoint;  // endpoint name -> nodes wanting a VMID
    std::set<std::string> wanting;
    for (const auto& id : identities) {
        auto it = site.nodes.find(id);
        if (it == site.nodes.end() || it->second.type != "vm" || it->second.placement.vmid) continue;
        if (wanting.count(id)) continue;
        Want w;
        w.node = &it->second;
        for (const auto& p : site.info.placements) {
            if (p.name == w.node->placement.site) w.placement = &p;
        }
        if (w.placement == nullptr) continue;
        auto rec = stored.find(id);
        if (rec != stored.end()) w.rec = rec->second;
        w.rec.identity = id;
        if (w.rec.state == State::active || w.rec.state == State::decommissioning) continue;
        if (w.rec.state == State::decommissioned || w.rec.state == State::abandoned) {
            w.rec = NodeRecord{};
            w.rec.identity = id;
        }
        if (w.rec.state == State::failed && step_index(kProvisionSteps, w.rec.failed_step) < 0 &&
            w.rec.failed_step != "gates") {
            continue;  // failed while decommissioning: provision() refuses it
        }
        if (step_index(kProvisionSteps, w.rec.step) >= 0) continue;  // past the reservation: its VMID is fixed
        wanting.insert(id);
        by_endpoint[w.node->placement.endpoint].push_back(std::move(w));
    }
    if (wanting.empty()) return;
    // Held by nodes outside this batch (decommissioned and abandoned nodes hold none).
    std::set<std::int64_t> held;
    for (const auto& [id, r] : stored) {
        if (!wanting.count(id) && r.vmid != 0 && r.state != State::decommissioned && r.state != State::abandoned) {
            held.insert(r.vmid);
        }
    }
    std::vector<NodeRecord> reserved;
    for (auto& [endpoint_name, wants] : by_endpoint) {
        const site::ProxmoxEndpoint* endpoint = nullptr;
        for (const auto& e : site.info.proxmox) {
            if (e.name == endpoint_name) endpoint = &e;
        }
        if (endpoint == nullptr) continue;
        auto provider = deps_.providers(*endpoint);
        if (!provider) continue;
        if (!endpoint->token_secret.empty()) (*provider)->add_secret(endpoint->token_secret);
        auto used = (*provider)->used_vmids();
        if (!used.ok()) continue;
        std::set<std::int64_t> taken(used.value->begin(), used.value->end());
        taken.insert(held.begin(), held.end());
        for (const auto& [id, n] : site.nodes) {  // VMIDs the site fixes for its nodes are never handed out
            if (n.placement.vmid) taken.insert(*n.placement.vmid);
        }
        auto usable = [&](const Want& w, std::int64_t v) {
            return v > 0 && v >= w.placement->vmid_min && v <= w.placement->vmid_max && !taken.count(v);
        };
        // A reservation that survived a crash is kept while still usable: the resumed run gets the same VMID.
        std::vector<bool> kept(wants.size(), false);
        for (std::size_t i = 0; i < wants.size(); ++i) {
            if (wants[i].rec.vmid != 0 && usable(wants[i], wants[i].rec.vmid)) {
                taken.insert(wants[i].rec.vmid);
                kept[i] = true;
            }
        }
        for (std::size_t i = 0; i < wants.size(); ++i) {
            if (kept[i]) continue;
            auto& w = wants[i];
            std::int64_t chosen = 0;
            for (std::int64_t v = std::max<std::int64_t>(1, w.placement->vmid_min); v <= w.placement->vmid_max; ++v) {
                if (!taken.count(v)) {
                    chosen = v;
                    break;
                }
            }
            w.rec.vmid = chosen;  // 0: none free; the gate allocates and explains
            if (chosen != 0) taken.insert(chosen);
        }
        for (auto& w : wants) {
            if (w.rec.vmid == 0) continue;
            w.rec.updated_at = now_text(deps_);
            reserved.push_back(w.rec);
        }
    }
    if (reserved.empty()) return;
    if (auto st = deps_.store->put_many(reserved); !st) {
        if (deps_.logger) deps_.logger->log(LogLevel::warning, "reserving the batch's VMIDs: " + st.message(), {});
        return;
    }
    hook(deps_, "after:vmids_reserved");
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
    auto run = prepare_run_impl(site, identity, deps_);
    if (!run) return RunResult{identity, State::failed, false, run.message()};
    return decommission(**run, abandon);
}

static Result<std::unique_ptr<Lifecycle::Run>> prepare_run_impl(const site::Site& site, const std::string& identity,
                                                                LifecycleDeps& deps) {
    auto it = site.nodes.find(identity);
    if (it == site.nodes.end()) {
        return make_error("node '" + identity + "' is not in the site (" + site.dir + "/nodes/" + identity +
                          ".yaml): check the name with 'nodeform-controller validate'");
    }
    auto run = std::make_unique<Lifecycle::Run>();
    run->site = &site;
    run->node = &it->second;
    run->t0 = std::chrono::steady_clock::now();
    if (run->node->type != "vm") {
        return make_error("node '" + identity + "' has type '" + run->node->type + "': only type vm is provisioned");
    }
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
    auto provider = deps.providers(*run->endpoint);
    if (!provider) return make_error("Proxmox endpoint '" + run->endpoint->name + "': " + provider.message());
    run->provider = std::move(*provider);
    auto rec = deps.store->get(identity);
    if (!rec) return rec.error();
    if (*rec) {
        run->rec = **rec;
    } else {
        run->rec.identity = identity;
        run->rec.state = State::planned;
    }
    return run;
}

// ---------------------------------------------------------------------------------------------------------------
// Gates

std::vector<GateVerdict> Lifecycle::gates(Run& run, bool reserve) {
    std::vector<GateVerdict> out;
    auto& p = *run.provider;
    const auto& node = *run.node;
    const auto& pl = node.placement;
    auto add = [&](std::string name, bool pass, std::string detail) {
        out.push_back({std::move(name), pass, run.redact(detail)});
    };

    std::string why;
    bool name_ok = valid_hostname(node.name, run.site->info.naming.max_length, why);
    add("hostname", name_ok, name_ok ? "'" + node.name + "' follows the naming policy" : "'" + node.name + "' " + why);

    if (run.placement == nullptr) {
        add("site_host", false, "placement site '" + pl.site + "' is not in site.yaml placement.sites");
    } else {
        bool listed = std::find(run.placement->hosts.begin(), run.placement->hosts.end(), pl.pve_node) !=
                      run.placement->hosts.end();
        if (!listed) {
            add("site_host", false, "PVE host '" + pl.pve_node + "' does not belong to site '" + pl.site + "'");
        } else {
            auto hosts = p.online_hosts();
            if (!hosts.ok()) {
                add("site_host", false, hosts.error.message);
            } else {
                bool online = std::find(hosts.value->begin(), hosts.value->end(), pl.pve_node) != hosts.value->end();
                add("site_host", online,
                    online ? "PVE host '" + pl.pve_node + "' belongs to site '" + pl.site + "' and is online"
                           : "PVE host '" + pl.pve_node + "' is not an online node of the cluster");
            }
        }
    }

    auto tmpl = p.vm_state(pl.pve_node, pl.template_vmid);
    if (!tmpl.ok()) {
        add("template", false, tmpl.error.message);
    } else if (!tmpl.value->exists) {
        add("template", false, "template VM " + std::to_string(pl.template_vmid) + " does not exist on " + pl.pve_node);
    } else if (!tmpl.value->is_template) {
        add("template", false,
            "VM " + std::to_string(pl.template_vmid) + " ('" + tmpl.value->name +
                "') is not a template: convert it with 'qm template' first");
    } else {
        add("template", true, "VM " + std::to_string(pl.template_vmid) + " ('" + tmpl.value->name + "') is a template");
    }

    auto storage = p.storage_exists(pl.pve_node, pl.storage);
    if (!storage.ok()) {
        add("storage", false, storage.error.message);
    } else {
        add("storage", *storage.value,
            "storage '" + pl.storage + "' " + (*storage.value ? "exists" : "does not exist") + " on " + pl.pve_node);
    }
    auto bridge = p.bridge_exists(pl.pve_node, pl.bridge);
    if (!bridge.ok()) {
        add("bridge", false, bridge.error.message);
    } else {
        add("bridge", *bridge.value,
            "bridge '" + pl.bridge + "' " + (*bridge.value ? "exists" : "does not exist") + " on " + pl.pve_node);
    }

    // The seed must fit into smbios1 (512 characters) with a token of the issuer's length.
    {
        Seed seed{node.name, options_.controller_url.empty() ? run.site->info.controller_url : options_.controller_url,
                  std::string(deps_.issuer->token_length(), 'x'), options_.ca_fingerprint};
        auto smbios = providers::build_smbios1("uuid=00000000-0000-0000-0000-000000000000", encode_seed_compact(seed));
        auto valid = validate_seed(seed);
        if (!valid) {
            add("seed", false, "the seed is not valid: " + valid.message());
        } else if (!smbios) {
            add("seed", false, smbios.message());
        } else {
            add("seed", true, "smbios1 will be " + std::to_string(smbios->size()) + " of 512 characters");
        }
    }

    // VMID: inside the site's range and free, or already this node's VM.
    std::unique_lock<std::mutex> lock(vmid_mutex_, std::defer_lock);
    std::int64_t lo = run.placement ? run.placement->vmid_min : 0;
    std::int64_t hi = run.placement ? run.placement->vmid_max : 0;
    auto in_range = [&](std::int64_t v) { return v >= lo && v <= hi; };
    auto mine = [&](std::int64_t v) -> std::optional<bool> {
        auto s = p.vm_state(pl.pve_node, v);
        if (!s.ok() || !s.value->exists) return std::nullopt;
        return s.value->name == node.name || (s.value->lock == "clone" && s.value->name.empty());
    };
    std::int64_t chosen = 0;
    std::string detail;
    bool pass = false;
    if (run.rec.vmid != 0 && !run.rec.step.empty()) {
        auto m = mine(run.rec.vmid);
        if (m && *m) {
            chosen = run.rec.vmid;
            pass = true;
            detail = "VMID " + std::to_string(chosen) + " is already this node's VM";
        }
    }
    // Reserved for this node by reserve_batch(): verified here, in parallel with the batch's other nodes.
    if (!pass && run.rec.vmid != 0 && run.rec.step.empty() && !pl.vmid && in_range(run.rec.vmid)) {
        const std::int64_t v = run.rec.vmid;
        bool held_by_other = false;
        auto all = deps_.store->all();
        if (all) {
            for (const auto& r : *all) {
                held_by_other = held_by_other || (r.identity != node.name && r.vmid == v &&
                                                  r.state != State::decommissioned && r.state != State::abandoned);
            }
        }
        if (all && !held_by_other) {
            auto f = p.vmid_free(v);
            if (f.ok() && *f.value) {
                chosen = v;
                pass = true;
                detail = "VMID " + std::to_string(v) + " reserved from range " + std::to_string(lo) + "-" +
                         std::to_string(hi) + " and free";
            } else if (f.ok()) {
                auto m = mine(v);  // else taken in Proxmox since the reservation: allocate another below
                if (m && *m) {
                    chosen = v;
                    pass = true;
                    detail = "VMID " + std::to_string(v) + " is already this node's VM";
                }
            }
        }
    }
    if (!pass) {
        lock.lock();
        std::set<std::int64_t> reserved;
        auto all = deps_.store->all();
        if (all) {
            for (const auto& r : *all) {
                if (r.identity != node.name && r.vmid != 0 && r.state != State::decommissioned &&
                    r.state != State::abandoned) {
                    reserved.insert(r.vmid);
                }
            }
        }
        if (pl.vmid) {
            chosen = *pl.vmid;
            if (!in_range(chosen)) {
                detail = "VMID " + std::to_string(chosen) + " is outside site '" + pl.site + "' range " +
                         std::to_string(lo) + "-" + std::to_string(hi);
            } else if (reserved.count(chosen)) {
                detail = "VMID " + std::to_string(chosen) + " is reserved by another node of this controller";
            } else {
                auto f = p.vmid_free(chosen);
                if (!f.ok()) {
                    detail = f.error.message;
                } else if (!*f.value) {
                    auto m = mine(chosen);
                    pass = m && *m;
                    detail = pass ? "VMID " + std::to_string(chosen) + " is already this node's VM"
                                  : "VMID " + std::to_string(chosen) + " is already in use in the cluster";
                } else {
                    pass = true;
                    detail = "VMID " + std::to_string(chosen) + " is in range " + std::to_string(lo) + "-" +
                             std::to_string(hi) + " and free";
                }
            }
        } else {
            auto used = p.used_vmids();
            if (!used.ok()) {
                detail = used.error.message;
            } else {
                std::set<std::int64_t> taken(used.value->begin(), used.value->end());
                for (std::int64_t v = lo; v <= hi && v > 0 && !pass; ++v) {
                    if (taken.count(v) || reserved.count(v)) continue;
                    auto f = p.vmid_free(v);
                    if (!f.ok()) {
                        detail = f.error.message;
                        break;
                    }
                    if (*f.value) {
                        chosen = v;
                        pass = true;
                        detail = "VMID " + std::to_string(v) + " allocated from range " + std::to_string(lo) + "-" +
                                 std::to_string(hi) + " and free";
                    }
                }
                if (!pass && detail.empty()) {
                    detail = "no free VMID left in site '" + pl.site + "' range " + std::to_string(lo) + "-" +
                             std::to_string(hi);
                }
            }
        }
    }
    add("vmid", pass, detail);
    if (pass) {
        run.rec.vmid = chosen;
        bool all_pass = std::all_of(out.begin(), out.end(), [](const GateVerdict& g) { return g.pass; });
        if (reserve && all_pass) {
            run.rec.pve_node = pl.pve_node;
            run.rec.endpoint = pl.endpoint;
            run.rec.updated_at = now_text(deps_);
            (void)deps_.store->put(run.rec);  // the reservation; persisted again by the step
        }
    }
    return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Plan

Result<Plan> Lifecycle::plan(const site::Site& site, const std::string& identity) {
    auto prepared = prepare_run_impl(site, identity, deps_);
    if (!prepared) return prepared.error();
    Run& run = **prepared;
    Plan plan;
    plan.identity = identity;
    auto existing = deps_.store->get(identity);
    plan.current_state = existing && *existing ? to_string((*existing)->state) : "none";
    if (existing && *existing && (*existing)->state == State::active) {
        plan.vmid = (*existing)->vmid;
        return plan;
    }
    plan.gates = gates(run, false);
    plan.vmid = run.rec.vmid;
    const auto& pl = run.node->placement;
    const std::string vm = "/nodes/" + pl.pve_node + "/qemu/" + std::to_string(plan.vmid);
    int done = step_index(kProvisionSteps, run.rec.step);
    auto want = [&](const std::string& step) { return step_index(kProvisionSteps, step) > done; };
    if (want("cloned")) {
        std::string params = "newid=" + std::to_string(plan.vmid) + " name=" + identity +
                             " full=1 storage=" + pl.storage + (pl.pool.empty() ? "" : " pool=" + pl.pool) +
                             " description=managed-by-nodeform";
        plan.calls.push_back(
            {"POST", "/nodes/" + pl.pve_node + "/qemu/" + std::to_string(pl.template_vmid) + "/clone", params});
        plan.calls.push_back({"GET", "/nodes/" + pl.pve_node + "/tasks/{UPID}/status", "until stopped"});
    }
    if (want("configured")) {
        VmState tmpl;
        auto t = run.provider->vm_state(pl.pve_node, pl.template_vmid);
        if (t.ok()) tmpl = *t.value;
        tmpl.config["smbios1"] = "uuid=[the clone's uuid]";
        Seed seed{identity, options_.controller_url.empty() ? site.info.controller_url : options_.controller_url,
                  std::string(deps_.issuer->token_length(), 'x'), options_.ca_fingerprint};
        auto cfg = build_config(*run.node, tmpl, encode_seed_compact(seed));
        std::string params;
        if (cfg) {
            for (const auto& [k, v] : cfg->shown)
                params += (params.empty() ? "" : " ") + k + "=" + v;
        } else {
            params = "(cannot build the configuration: " + cfg.message() + ")";
        }
        plan.calls.push_back({"PUT", vm + "/config", params + " digest=[current digest]"});
    }
    if (want("resized")) {
        plan.calls.push_back(
            {"PUT", vm + "/resize",
             "disk=[boot disk] size=" + std::to_string(run.node->sizing.disk_gb) + "G (only when smaller)"});
    }
    if (want("started")) plan.calls.push_back({"POST", vm + "/status/start", ""});
    if (want("agent_ready")) {
        plan.calls.push_back({"POST", vm + "/agent/ping", "until the guest agent answers"});
        plan.calls.push_back({"GET", vm + "/agent/network-get-interfaces", ""});
    }
    (void)run.provider->take_calls();
    return plan;
}

// ---------------------------------------------------------------------------------------------------------------
// Steps

namespace {

// Runs one step: hook before, body, receipt, persisted record, progress, hook after.
bool run_step(LifecycleDeps& deps, Lifecycle::Run& run, const std::string& step, State state_after,
              const std::function<StepOut()>& body, std::string& error_out);

}  // namespace

static bool run_step_impl(LifecycleDeps& deps, Lifecycle::Run& run, const std::string& step, State state_after,
                          const std::function<StepOut()>& body, std::string& error_out) {
    hook(deps, "before:" + step);
    Receipt receipt;
    receipt.identity = run.rec.identity;
    receipt.step = step;
    receipt.started_at = now_text(deps);
    StepOut out;
    try {
        out = body();
    } catch (const std::exception& e) {
        out = StepOut::fail(std::string("internal error: ") + e.what());
    }
    receipt.finished_at = now_text(deps);
    for (const auto& call : run.provider->take_calls())
        receipt.calls.push_back(providers::to_json(call));
    receipt.inputs = out.inputs;
    receipt.outputs = out.outputs;
    receipt.error = run.redact(out.error);
    if (out.ok) {
        receipt.outcome = out.skipped ? "skipped" : "ok";
        run.rec.step = step;
        run.rec.state = state_after;
        run.rec.failed_step.clear();
        run.rec.reason.clear();
    } else {
        receipt.outcome = "failed";
        run.rec.state = State::failed;
        run.rec.failed_step = step;
        run.rec.reason = receipt.error;
        error_out = receipt.error;
    }
    receipt.state_after = to_string(run.rec.state);
    run.rec.updated_at = receipt.finished_at;
    // A receipt's text passes through redaction as a whole, in case a message echoed a secret.
    json redacted = json::parse(run.redact(to_json(receipt).dump()), nullptr, false);
    if (redacted.is_object()) {
        receipt.inputs = redacted["inputs"];
        receipt.calls = redacted["calls"];
        receipt.outputs = redacted["outputs"];
    }
    auto put = deps.store->put(run.rec);
    auto add = deps.store->add_receipt(receipt);
    if (!put || !add) {
        error_out = !put ? put.message() : add.message();
        return false;
    }
    double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - run.t0).count();
    std::string detail = out.ok ? (out.skipped ? "already done" : "done") : receipt.error;
    if (out.outputs.contains("summary") && out.outputs["summary"].is_string()) {
        detail = out.outputs["summary"].get<std::string>();
    }
    if (deps.progress) deps.progress({run.rec.identity, step, run.redact(detail), elapsed, !out.ok});
    if (deps.logger) {
        deps.logger->log(out.ok ? LogLevel::info : LogLevel::error,
                         run.rec.identity + ": " + step + ": " + run.redact(detail),
                         {{"IDENTITY", run.rec.identity}, {"STEP", step}, {"OUTCOME", receipt.outcome}});
    }
    hook(deps, "after:" + step);
    return out.ok;
}

namespace {
bool run_step(LifecycleDeps& deps, Lifecycle::Run& run, const std::string& step, State state_after,
              const std::function<StepOut()>& body, std::string& error_out) {
    return run_step_impl(deps, run, step, state_after, body, error_out);
}
}  // namespace

RunResult Lifecycle::provision(Run& run) {
    auto& rec = run.rec;
    auto& p = *run.provider;
    const auto& node = *run.node;
    const auto& pl = node.placement;
    const std::string id = node.name;

    switch (rec.state) {
        case State::active:
            return {id, rec.state, true, "already active (VM " + std::to_string(rec.vmid) + ")"};
        case State::decommissioning:
            return {id, rec.state, false, "node is being decommissioned: finish 'node destroy " + id + "' first"};
        case State::decommissioned:
        case State::abandoned: {
            NodeRecord fresh;
            fresh.identity = id;
            rec = fresh;
            break;
        }
        default:
            break;
    }
    if (rec.state == State::failed) {
        int idx = step_index(kProvisionSteps, rec.failed_step);
        if (idx < 0 && rec.failed_step != "gates") {
            return {id, rec.state, false,
                    "node failed at '" + rec.failed_step + "' while decommissioning: re-run 'node destroy " + id + "'"};
        }
    }
    auto fail = [&](const std::string& step, const std::string& message) -> RunResult {
        std::string msg = run.redact(message);
        // Roll back a VM that never booted: it holds no data.
        int idx = step_index(kProvisionSteps, step);
        if (options_.rollback_on_failure && rec.vmid != 0 && idx >= 1 && idx <= 3) {
            std::string ignored;
            std::string step_before = rec.step;
            bool rolled = false;
            run_step(
                deps_, run, "rollback", State::failed,
                [&]() -> StepOut {
                    auto vm = p.vm_state(pl.pve_node, rec.vmid);
                    if (!vm.ok()) return StepOut::fail(vm.error.message);
                    if (!vm.value->exists) {
                        rolled = true;
                        return StepOut::skip({{"summary", "no partial VM left (Proxmox removed it)"}});
                    }
                    bool ours = vm.value->name == id || (vm.value->lock == "clone" && vm.value->name.empty());
                    if (!ours || vm.value->status == "running") {
                        return StepOut::fail("VM " + std::to_string(rec.vmid) +
                                             " is not a stopped VM of this node; left untouched");
                    }
                    auto d = p.destroy(pl.pve_node, rec.vmid);
                    if (!d.ok()) return StepOut::fail(d.error.message);
                    if (!d.value->ok()) return StepOut::fail("destroy task ended: " + d.value->exitstatus);
                    rolled = true;
                    StepOut o;
                    o.outputs = {{"summary", "partial VM " + std::to_string(rec.vmid) + " destroyed"},
                                 {"upid", d.value->upid}};
                    return o;
                },
                ignored);
            rec.state = State::failed;
            rec.failed_step = step;
            rec.reason = msg + (rolled ? " (rolled back: no VM left)" : "");
            if (rolled) {
                rec.step.clear();
                rec.pending_upid.clear();
                if (!pl.vmid) rec.vmid = 0;
            } else {
                rec.step = step_before;
            }
            rec.updated_at = now_text(deps_);
            (void)deps_.store->put(rec);
            msg = rec.reason;
        }
        return {id, State::failed, false, id + ": " + step + " failed: " + msg};
    };
    auto done = [&](const std::string& step) {
        return step_index(kProvisionSteps, rec.step) >= step_index(kProvisionSteps, step);
    };
    std::string err;
    if (rec.state == State::planned || (rec.state == State::failed && rec.failed_step == "gates")) {
        rec.state = State::planned;
        rec.updated_at = now_text(deps_);
        if (auto st = deps_.store->put(rec); !st) return {id, State::failed, false, st.message()};
    }

    // Waits while Proxmox holds a lock on the VM (a clone still copying); returns the settled state.
    auto settled = [&](std::int64_t vmid) -> Outcome<VmState> {
        auto deadline = std::chrono::steady_clock::now() + options_.lock_wait;
        for (;;) {
            auto s = p.vm_state(pl.pve_node, vmid);
            if (!s.ok() || !s.value->exists || s.value->lock.empty()) return s;
            if (std::chrono::steady_clock::now() > deadline) {
                return Outcome<VmState>::failure(
                    FailureKind::locked, "VM " + std::to_string(vmid) + " is still locked (" + s.value->lock + ")");
            }
            sleep(options_.wait_poll);
        }
    };

    // vmid_reserved: gates, then the VMID is ours.
    if (!done("vmid_reserved")) {
        std::vector<GateVerdict> verdicts;
        bool ok = run_step(
            deps_, run, "vmid_reserved", State::provisioning,
            [&]() -> StepOut {
                verdicts = gates(run, true);
                StepOut o;
                json g = json::array();
                std::string refused;
                for (const auto& v : verdicts) {
                    g.push_back({{"gate", v.name}, {"pass", v.pass}, {"detail", v.detail}});
                    if (!v.pass) refused += (refused.empty() ? "" : "; ") + v.name + ": " + v.detail;
                }
                o.outputs = {{"gates", g},
                             {"vmid", rec.vmid},
                             {"summary", "VMID " + std::to_string(rec.vmid) + " on " + pl.pve_node}};
                o.inputs = {{"pve_node", pl.pve_node},
                            {"template", pl.template_vmid},
                            {"storage", pl.storage},
                            {"bridge", pl.bridge}};
                if (!refused.empty()) return StepOut::fail("refused by gates: " + refused);
                return o;
            },
            err);
        if (!ok) {
            rec.failed_step = "gates";
            if (!pl.vmid) rec.vmid = 0;
            (void)deps_.store->put(rec);
            return {id, State::failed, false, id + ": " + err};
        }
    } else if (rec.state == State::failed) {
        rec.state = State::provisioning;
    }
    const std::int64_t vmid = rec.vmid;
    rec.pve_node = pl.pve_node;

    // cloned: exactly one clone, ever; after a crash, the VM's real state decides.
    if (!done("cloned")) {
        bool ok = run_step(
            deps_, run, "cloned", State::provisioning,
            [&]() -> StepOut {
                StepOut o;
                o.inputs = {{"template", pl.template_vmid}, {"newid", vmid}, {"storage", pl.storage}, {"full", true}};
                if (!rec.pending_upid.empty()) {  // a clone we started before a restart
                    auto t = p.wait_task(rec.pending_upid, std::chrono::minutes(20));
                    if (t.ok() && !t.value->ok()) {
                        std::string upid = rec.pending_upid;
                        rec.pending_upid.clear();
                        return StepOut::fail("clone task " + upid + " ended: " + t.value->exitstatus);
                    }
                }
                for (int attempt = 1; attempt <= 4; ++attempt) {
                    auto vm = settled(vmid);
                    if (!vm.ok()) return StepOut::fail(vm.error.message);
                    if (vm.value->exists) {
                        if (vm.value->name != id || vm.value->is_template) {
                            return StepOut::fail("VMID " + std::to_string(vmid) + " is in use by VM '" +
                                                 vm.value->name + "', not by this node");
                        }
                        rec.pending_upid.clear();
                        if (o.outputs.contains("upid")) {
                            o.outputs["summary"] =
                                "VM " + std::to_string(vmid) + " cloned from " + std::to_string(pl.template_vmid);
                            return o;
                        }
                        return StepOut::skip({{"summary", "VM " + std::to_string(vmid) + " already exists (cloned)"}});
                    }
                    auto free = p.vmid_free(vmid);
                    if (!free.ok()) return StepOut::fail(free.error.message);
                    if (!*free.value) {
                        return StepOut::fail("VMID " + std::to_string(vmid) + " is in use elsewhere in the cluster");
                    }
                    providers::CloneRequest q{
                        pl.pve_node, pl.template_vmid, vmid, id, pl.storage, pl.pool, "managed by nodeform: " + id,
                        true};
                    auto t = p.clone(q, [&](const std::string& upid) {
                        rec.pending_upid = upid;
                        rec.updated_at = now_text(deps_);
                        (void)deps_.store->put(rec);
                        hook(deps_, "called:cloned");
                    });
                    if (!t.ok()) {
                        if (t.error.kind == FailureKind::already_exists || t.error.kind == FailureKind::timeout) {
                            continue;  // read the real state again
                        }
                        if (t.error.kind == FailureKind::locked && attempt < 4) {
                            sleep(options_.wait_poll);
                            continue;
                        }
                        return StepOut::fail(t.error.message);
                    }
                    o.outputs["upid"] = t.value->upid;
                    o.outputs["exitstatus"] = t.value->exitstatus;
                    if (!t.value->ok()) {
                        rec.pending_upid.clear();
                        o.ok = false;
                        o.error = "clone task ended: " + t.value->exitstatus;
                        if (!t.value->log_tail.empty()) o.outputs["task_log"] = t.value->log_tail;
                        return o;
                    }
                }
                return StepOut::fail("VM " + std::to_string(vmid) + " did not appear after cloning");
            },
            err);
        if (!ok) return fail("cloned", err);
    }

    // configured: sizing, cloud-init, and the seed with a fresh one-time token.
    if (!done("configured")) {
        bool ok = run_step(
            deps_, run, "configured", State::provisioning,
            [&]() -> StepOut {
                for (int attempt = 1; attempt <= 3; ++attempt) {
                    auto vm = settled(vmid);
                    if (!vm.ok()) return StepOut::fail(vm.error.message);
                    if (!vm.value->exists) return StepOut::fail("VM " + std::to_string(vmid) + " disappeared");
                    auto token = deps_.issuer->issue(id, options_.token_ttl);
                    if (!token) return StepOut::fail("issuing the enrollment token: " + token.message());
                    run.secrets.push_back(token->token);
                    p.add_secret(token->token);
                    Seed seed{id,
                              options_.controller_url.empty() ? run.site->info.controller_url : options_.controller_url,
                              token->token, options_.ca_fingerprint};
                    std::string compact = encode_seed_compact(seed);
                    for (const auto& s : {compact, base64_encode(compact)}) {
                        run.secrets.push_back(s);
                        p.add_secret(s);
                    }
                    auto cfg = build_config(node, *vm.value, compact);
                    if (!cfg) return StepOut::fail(cfg.message());
                    auto r = p.configure(pl.pve_node, vmid, cfg->params, vm.value->digest);
                    hook(deps_, "called:configured");
                    if (!r.ok()) {
                        if ((r.error.kind == FailureKind::conflict || r.error.kind == FailureKind::locked) &&
                            attempt < 3) {
                            continue;
                        }
                        return StepOut::fail(r.error.message);
                    }
                    rec.token_expires_at = format_rfc3339(token->expires_at);
                    StepOut o;
                    o.inputs = json(cfg->shown);
                    o.outputs = {{"token_expires_at", rec.token_expires_at},
                                 {"summary", "cores " + std::to_string(node.sizing.cores) + ", memory " +
                                                 std::to_string(node.sizing.memory_mb) + " MB, seed in smbios1"}};
                    return o;
                }
                return StepOut::fail("configuration kept changing underneath (digest mismatch)");
            },
            err);
        if (!ok) return fail("configured", err);
    }

    // resized: absolute size, only ever grown.
    if (!done("resized")) {
        bool ok = run_step(
            deps_, run, "resized", State::provisioning,
            [&]() -> StepOut {
                auto vm = settled(vmid);
                if (!vm.ok()) return StepOut::fail(vm.error.message);
                std::string disk = boot_disk(*vm.value);
                if (disk.empty()) return StepOut::fail("VM " + std::to_string(vmid) + " has no boot disk to resize");
                std::uint64_t want = static_cast<std::uint64_t>(node.sizing.disk_gb) << 30;
                auto have = disk_size(*vm.value, disk);
                std::string size = std::to_string(node.sizing.disk_gb) + "G";
                if (have && *have >= want) {
                    return StepOut::skip(
                        {{"disk", disk},
                         {"summary", disk + " already " + std::to_string(*have >> 30) + "G (wanted " + size + ")"}});
                }
                auto t = p.resize(pl.pve_node, vmid, disk, size);
                hook(deps_, "called:resized");
                if (!t.ok()) return StepOut::fail(t.error.message);
                if (!t.value->ok()) return StepOut::fail("resize task ended: " + t.value->exitstatus);
                StepOut o;
                o.inputs = {{"disk", disk}, {"size", size}};
                o.outputs = {{"upid", t.value->upid},
                             {"exitstatus", t.value->exitstatus},
                             {"summary", disk + " resized to " + size}};
                return o;
            },
            err);
        if (!ok) return fail("resized", err);
    }

    if (!done("started")) {
        bool ok = run_step(
            deps_, run, "started", State::provisioning,
            [&]() -> StepOut {
                auto vm = settled(vmid);
                if (!vm.ok()) return StepOut::fail(vm.error.message);
                if (vm.value->status == "running") return StepOut::skip({{"summary", "already running"}});
                auto t = p.start(pl.pve_node, vmid);
                hook(deps_, "called:started");
                if (!t.ok()) return StepOut::fail(t.error.message);
                if (!t.value->ok()) return StepOut::fail("start task ended: " + t.value->exitstatus);
                StepOut o;
                o.outputs = {{"upid", t.value->upid}, {"exitstatus", t.value->exitstatus}, {"summary", "running"}};
                return o;
            },
            err);
        if (!ok) return fail("started", err);
    }

    if (!done("registered")) {
        bool ok = run_step(
            deps_, run, "registered", State::registered,
            [&]() -> StepOut {
                StepOut o;
                o.outputs = {{"token_expires_at", rec.token_expires_at},
                             {"summary", "enrollment token issued, expires " + rec.token_expires_at}};
                return o;
            },
            err);
        if (!ok) return fail("registered", err);
    }

    if (!done("agent_ready")) {
        bool ok = run_step(
            deps_, run, "agent_ready", State::validating,
            [&]() -> StepOut {
                auto deadline = std::chrono::steady_clock::now() + options_.agent_timeout;
                int pings = 0;
                for (;;) {
                    auto ping = p.agent_ping(pl.pve_node, vmid);
                    ++pings;
                    if (!ping.ok()) return StepOut::fail(ping.error.message);
                    if (*ping.value) break;
                    if (std::chrono::steady_clock::now() > deadline) {
                        return StepOut::fail("the QEMU guest agent did not answer within " +
                                             std::to_string(options_.agent_timeout.count() / 1000) +
                                             " s: check that the template has qemu-guest-agent installed and enabled");
                    }
                    sleep(options_.agent_poll);
                }
                // Folded pings: the receipt keeps the count, not every attempt.
                auto calls = p.take_calls();
                auto nics = p.agent_interfaces(pl.pve_node, vmid);
                StepOut o;
                o.outputs["agent_pings"] = pings;
                if (!calls.empty()) o.outputs["first_ping"] = providers::to_json(calls.front());
                rec.ips.clear();
                if (nics.ok()) rec.ips = reportable_addresses(*nics.value);
                std::string ips;
                for (const auto& a : rec.ips)
                    ips += (ips.empty() ? "" : " ") + a;
                o.outputs["ips"] = rec.ips;
                o.outputs["summary"] = "guest agent answers; addresses " + (ips.empty() ? "(none yet)" : ips);
                return o;
            },
            err);
        if (!ok) return fail("agent_ready", err);
    }

    // active: the node reported platform-ready with passing health.
    auto deadline = std::chrono::steady_clock::now() + options_.report_timeout;
    std::optional<NodeReport> last;
    for (;;) {
        last = deps_.reports ? deps_.reports->latest(id) : std::nullopt;
        if (last && last->platform_ready && last->health_passing) break;
        if (std::chrono::steady_clock::now() > deadline) {
            std::string why = !last ? "no report from the node yet"
                                    : (!last->platform_ready ? "the node has not reached platform-ready"
                                                             : "health checks are failing");
            return {id, State::validating, false,
                    id + ": still validating (" + why + "); re-run 'node create " + id + "' to keep waiting"};
        }
        sleep(options_.wait_poll);
    }
    bool ok = run_step(
        deps_, run, "active", State::active,
        [&]() -> StepOut {
            StepOut o;
            // The addresses as the node becomes active (DHCP may have answered after the first agent reply).
            auto nics = p.agent_interfaces(pl.pve_node, vmid);
            if (nics.ok()) rec.ips = reportable_addresses(*nics.value);
            o.outputs = {{"report_received_at", last->received_at},
                         {"ips", rec.ips},
                         {"summary", "platform-ready, health passing"}};
            return o;
        },
        err);
    if (!ok) return fail("active", err);
    return {id, State::active, true, id + ": active (VM " + std::to_string(vmid) + ")"};
}

// ---------------------------------------------------------------------------------------------------------------
// Addresses

std::vector<std::string> reportable_addresses(const std::vector<providers::NetInterface>& interfaces) {
    std::vector<std::string> out;
    for (const auto& n : interfaces) {
        for (const auto& a : n.addresses) {
            std::string ip = a.substr(0, a.find('/'));
            for (auto& c : ip)
                c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
            if (ip.empty() || ip.rfind("127.", 0) == 0 || ip == "::1" || ip.rfind("169.254.", 0) == 0) continue;
            // fe80::/10: fe8x, fe9x, feax, febx
            if (ip.size() >= 4 && ip.rfind("fe", 0) == 0 && std::string("89ab").find(ip[2]) != std::string::npos &&
                ip.find(':') != std::string::npos && ip.find(':') == 4) {
                continue;
            }
            if (std::find(out.begin(), out.end(), a) == out.end()) out.push_back(a);
        }
    }
    return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Decommission

RunResult Lifecycle::decommission(Run& run, bool abandon) {
    auto& rec = run.rec;
    auto& p = *run.provider;
    const auto& node = *run.node;
    const std::string id = node.name;
    std::string err;
    if (rec.state == State::planned && rec.vmid == 0) {
        return {id, rec.state, false, id + ": never provisioned by this controller; nothing to destroy"};
    }
    if (rec.state == State::decommissioned) return {id, rec.state, true, id + ": already decommissioned"};
    if (abandon) {
        run_step(
            deps_, run, "abandoned", State::abandoned,
            [&]() -> StepOut {
                StepOut o;
                o.outputs = {{"vmid", rec.vmid},
                             {"summary", "forgotten; VM " + std::to_string(rec.vmid) + " left untouched"}};
                return o;
            },
            err);
        return {id, State::abandoned, true, id + ": abandoned (Proxmox untouched)"};
    }
    using site::DecommissionPolicy;
    if (node.decommission == DecommissionPolicy::requires_migration_first) {
        std::string stacks;
        if (node.resolved.contains("stacks") && node.resolved["stacks"].is_array()) {
            for (const auto& s : node.resolved["stacks"]) {
                if (s.is_object()) stacks += (stacks.empty() ? "" : ", ") + s.value("name", "?");
            }
        }
        if (!stacks.empty()) {
            return {id, rec.state, false,
                    id + ": refused: decommission policy requires_migration_first and stacks are still assigned (" +
                        stacks + "); move them to another node's spec, apply, then destroy"};
        }
    }
    if (rec.state != State::decommissioning) {
        rec.state = State::decommissioning;
        rec.step.clear();
        rec.updated_at = now_text(deps_);
        if (auto st = deps_.store->put(rec); !st) return {id, rec.state, false, st.message()};
    }
    const std::string pve = rec.pve_node.empty() ? node.placement.pve_node : rec.pve_node;
    const std::int64_t vmid = rec.vmid;
    auto done = [&](const std::string& step) {
        return step_index(kDecommissionSteps, rec.step) >= step_index(kDecommissionSteps, step);
    };
    auto failed = [&](const std::string& step) {
        return RunResult{id, State::failed, false, id + ": " + step + " failed: " + err};
    };
    auto exists_ours = [&]() -> Outcome<VmState> {
        if (vmid == 0) return Outcome<VmState>::success(VmState{});
        auto vm = p.vm_state(pve, vmid);
        if (vm.ok() && vm.value->exists && vm.value->name != id) {
            return Outcome<VmState>::failure(
                FailureKind::other,
                "VM " + std::to_string(vmid) + " is now '" + vm.value->name + "', not this node: left untouched");
        }
        return vm;
    };
    auto next_state = [&](const std::string& step) {
        return step == "revoked" ? State::decommissioned : State::decommissioning;
    };
    if (!done("backed_up")) {
        bool ok = run_step(
            deps_, run, "backed_up", next_state("backed_up"),
            [&]() -> StepOut {
                if (node.decommission != DecommissionPolicy::requires_final_backup) {
                    return StepOut::skip(
                        {{"summary", std::string("no backup: policy ") + site::to_string(node.decommission)}});
                }
                auto vm = exists_ours();
                if (!vm.ok()) return StepOut::fail(vm.error.message);
                if (!vm.value->exists) return StepOut::skip({{"summary", "no VM to back up"}});
                auto t = p.backup(pve, vmid, options_.backup_storage);
                if (!t.ok()) return StepOut::fail(t.error.message);
                if (!t.value->ok()) {
                    StepOut o = StepOut::fail("vzdump ended: " + t.value->exitstatus);
                    o.outputs["task_log"] = t.value->log_tail;
                    return o;
                }
                StepOut o;
                o.inputs = {{"storage", options_.backup_storage}, {"mode", "snapshot"}};
                o.outputs = {{"upid", t.value->upid},
                             {"exitstatus", t.value->exitstatus},
                             {"summary", "final backup to " + options_.backup_storage + ": " + t.value->exitstatus}};
                return o;
            },
            err);
        if (!ok) return failed("backed_up");
    }
    if (!done("stopped")) {
        bool ok = run_step(
            deps_, run, "stopped", next_state("stopped"),
            [&]() -> StepOut {
                auto vm = exists_ours();
                if (!vm.ok()) return StepOut::fail(vm.error.message);
                if (!vm.value->exists || vm.value->status != "running") {
                    return StepOut::skip({{"summary", "not running"}});
                }
                auto t = p.shutdown(pve, vmid, options_.shutdown_timeout_s);
                if (!t.ok() || !t.value->ok()) {
                    t = p.stop(pve, vmid);
                    if (!t.ok()) return StepOut::fail(t.error.message);
                    if (!t.value->ok()) return StepOut::fail("stop ended: " + t.value->exitstatus);
                }
                StepOut o;
                o.outputs = {{"upid", t.value->upid}, {"summary", "stopped"}};
                return o;
            },
            err);
        if (!ok) return failed("stopped");
    }
    if (!done("destroyed")) {
        bool ok = run_step(
            deps_, run, "destroyed", next_state("destroyed"),
            [&]() -> StepOut {
                auto vm = exists_ours();
                if (!vm.ok()) return StepOut::fail(vm.error.message);
                if (!vm.value->exists) return StepOut::skip({{"summary", "VM already gone"}});
                auto t = p.destroy(pve, vmid);
                if (!t.ok()) return StepOut::fail(t.error.message);
                if (!t.value->ok()) return StepOut::fail("destroy ended: " + t.value->exitstatus);
                StepOut o;
                o.inputs = {{"purge", 1}, {"destroy-unreferenced-disks", 1}};
                o.outputs = {{"upid", t.value->upid}, {"summary", "VM " + std::to_string(vmid) + " destroyed (purge)"}};
                return o;
            },
            err);
        if (!ok) return failed("destroyed");
    }
    if (!done("revoked")) {
        bool ok = run_step(
            deps_, run, "revoked", next_state("revoked"),
            [&]() -> StepOut {
                auto st = deps_.issuer->revoke(id);
                if (!st) return StepOut::fail("revoking the node credential: " + st.message());
                return StepOut{true, false, json::object(), {{"summary", "node credential revoked"}}, ""};
            },
            err);
        if (!ok) return failed("revoked");
    }
    rec.ips.clear();
    (void)deps_.store->put(rec);
    return {id, State::decommissioned, true, id + ": decommissioned"};
}

}  // namespace nodeform::controller::lifecycle
