// Gates (read-only checks before any mutation) and VMID reservation, for one node and for a batch.
#include <algorithm>
#include <map>

#include "nodeform/controller/providers/proxmox.hpp"
#include "nodeform/site/naming.hpp"
#include "run.hpp"

namespace nodeform::controller::lifecycle {

bool is_ours(const providers::VmState& vm, const std::string& identity) {
    return vm.name == identity || (vm.lock == "clone" && vm.name.empty());
}

std::set<std::int64_t> vmids_held_by_others(const std::vector<NodeRecord>& records,
                                            const std::set<std::string>& except) {
    std::set<std::int64_t> held;
    for (const auto& r : records) {
        if (!except.count(r.identity) && r.vmid != 0 && r.state != State::decommissioned &&
            r.state != State::abandoned) {
            held.insert(r.vmid);
        }
    }
    return held;
}

namespace {

std::string vmid_text(std::int64_t vmid) {
    return "VMID " + std::to_string(vmid);
}

GateVerdict hostname_gate(const Run& run) {
    const std::string& name = run.node->name;
    int limit = std::min(run.site->info.naming.max_length > 0 ? run.site->info.naming.max_length : 63, 63);
    std::string why = site::check_hostname(name, limit);
    return {"hostname", why.empty(), "'" + name + "' " + (why.empty() ? "follows the naming policy" : why)};
}

GateVerdict site_host_gate(const Run& run) {
    const auto& pl = run.node->placement;
    if (run.placement == nullptr) {
        return {"site_host", false, "placement site '" + pl.site + "' is not in site.yaml placement.sites"};
    }
    const auto& hosts_of_site = run.placement->hosts;
    if (std::find(hosts_of_site.begin(), hosts_of_site.end(), pl.pve_node) == hosts_of_site.end()) {
        return {"site_host", false, "PVE host '" + pl.pve_node + "' does not belong to site '" + pl.site + "'"};
    }
    auto hosts = run.provider->online_hosts();
    if (!hosts.ok()) return {"site_host", false, hosts.error.message};
    bool online = std::find(hosts.value->begin(), hosts.value->end(), pl.pve_node) != hosts.value->end();
    return {"site_host", online,
            online ? "PVE host '" + pl.pve_node + "' belongs to site '" + pl.site + "' and is online"
                   : "PVE host '" + pl.pve_node + "' is not an online node of the cluster"};
}

GateVerdict template_gate(const Run& run, const providers::Outcome<providers::VmState>& tmpl) {
    const auto& pl = run.node->placement;
    const std::string vm = "VM " + std::to_string(pl.template_vmid);
    if (!tmpl.ok()) return {"template", false, tmpl.error.message};
    if (!tmpl.value->exists) return {"template", false, "template " + vm + " does not exist on " + pl.pve_node};
    if (!tmpl.value->is_template) {
        return {"template", false,
                vm + " ('" + tmpl.value->name + "') is not a template: convert it with 'qm template' first"};
    }
    return {"template", true, vm + " ('" + tmpl.value->name + "') is a template"};
}

// storage and bridge: the named thing exists on the node's PVE host.
GateVerdict exists_gate(const char* gate, const std::string& name, const providers::Outcome<bool>& exists,
                        const std::string& pve_node) {
    if (!exists.ok()) return {gate, false, exists.error.message};
    return {gate, *exists.value,
            std::string(gate) + " '" + name + "' " + (*exists.value ? "exists" : "does not exist") + " on " + pve_node};
}

// The seed must fit into smbios1 (512 characters) next to the fields the clone keeps from the template,
// sized by the function the configure step uses.
GateVerdict seed_gate(const Run& run, const providers::Outcome<providers::VmState>& tmpl) {
    Seed seed = run.planned_seed();
    if (auto valid = validate_seed(seed); !valid) return {"seed", false, "the seed is not valid: " + valid.message()};
    if (!tmpl.ok() || !tmpl.value->exists) {
        return {"seed", false, "not checked: smbios1 is sized with the template's, and there is none (see 'template')"};
    }
    const auto clone = projected_clone(*tmpl.value);
    auto smbios = providers::build_smbios1(clone.config.at("smbios1"), encode_seed_compact(seed));
    const std::string of = "template VM " + std::to_string(run.node->placement.template_vmid);
    if (!smbios) return {"seed", false, smbios.message() + " (" + of + ")"};
    return {
        "seed", true,
        "smbios1 will be " + std::to_string(smbios->size()) + " of 512 characters (with " + of + "'s SMBIOS fields)"};
}

// VMID: inside the site's range and free, or already this node's VM. Takes `lock` when it has to choose one.
GateVerdict vmid_gate(Run& run, std::unique_lock<std::mutex>& lock, std::int64_t& chosen) {
    auto& p = *run.provider;
    const auto& pl = run.node->placement;
    const std::int64_t lo = run.placement ? run.placement->vmid_min : 0;
    const std::int64_t hi = run.placement ? run.placement->vmid_max : 0;
    const std::string range = std::to_string(lo) + "-" + std::to_string(hi);
    auto in_range = [&](std::int64_t v) { return v >= lo && v <= hi; };
    auto mine = [&](std::int64_t v) {
        auto s = p.vm_state(pl.pve_node, v);
        return s.ok() && s.value->exists && is_ours(*s.value, run.id());
    };
    auto held = [&]() -> Result<std::set<std::int64_t>> {
        auto all = run.deps.store->all();
        if (!all) return make_error("reading the lifecycle records: " + all.message());
        return vmids_held_by_others(*all, {run.id()});
    };
    auto pass = [&](std::int64_t v, std::string detail) {
        chosen = v;
        return GateVerdict{"vmid", true, vmid_text(v) + " " + detail};
    };
    const std::int64_t rec_vmid = run.rec.vmid;
    if (rec_vmid != 0 && !run.rec.step.empty() && mine(rec_vmid)) return pass(rec_vmid, "is already this node's VM");
    // Reserved for this node by reserve_batch(): verified here, in parallel with the batch's other nodes.
    if (rec_vmid != 0 && run.rec.step.empty() && !pl.vmid && in_range(rec_vmid)) {
        auto others = held();
        if (others && !others->count(rec_vmid)) {
            auto f = p.vmid_free(rec_vmid);
            if (f.ok() && *f.value) return pass(rec_vmid, "reserved from range " + range + " and free");
            // else taken in Proxmox since the reservation: allocate another below
            if (f.ok() && mine(rec_vmid)) return pass(rec_vmid, "is already this node's VM");
        }
    }
    lock.lock();
    auto reserved = held();
    if (!reserved) return {"vmid", false, reserved.message()};
    if (pl.vmid) {
        const std::int64_t v = *pl.vmid;
        if (!in_range(v)) {
            return {"vmid", false, vmid_text(v) + " is outside site '" + pl.site + "' range " + range};
        }
        if (reserved->count(v))
            return {"vmid", false, vmid_text(v) + " is reserved by another node of this controller"};
        auto f = p.vmid_free(v);
        if (!f.ok()) return {"vmid", false, f.error.message};
        if (*f.value) return pass(v, "is in range " + range + " and free");
        if (mine(v)) return pass(v, "is already this node's VM");
        return {"vmid", false, vmid_text(v) + " is already in use in the cluster"};
    }
    auto used = p.used_vmids();
    if (!used.ok()) return {"vmid", false, used.error.message};
    std::set<std::int64_t> taken(used.value->begin(), used.value->end());
    for (std::int64_t v = lo; v <= hi && v > 0; ++v) {
        if (taken.count(v) || reserved->count(v)) continue;
        auto f = p.vmid_free(v);
        if (!f.ok()) return {"vmid", false, f.error.message};
        if (*f.value) return pass(v, "allocated from range " + range + " and free");
    }
    return {"vmid", false, "no free VMID left in site '" + pl.site + "' range " + range};
}

}  // namespace

std::vector<GateVerdict> gates(Run& run, bool reserve) {
    auto& p = *run.provider;
    const auto& pl = run.node->placement;
    std::vector<GateVerdict> out = {hostname_gate(run), site_host_gate(run)};
    const auto tmpl = p.vm_state(pl.pve_node, pl.template_vmid);
    out.push_back(template_gate(run, tmpl));
    out.push_back(exists_gate("storage", pl.storage, p.storage_exists(pl.pve_node, pl.storage), pl.pve_node));
    out.push_back(exists_gate("bridge", pl.bridge, p.bridge_exists(pl.pve_node, pl.bridge), pl.pve_node));
    out.push_back(seed_gate(run, tmpl));
    std::unique_lock<std::mutex> lock(run.vmid_mutex, std::defer_lock);  // held until the reservation is saved
    std::int64_t chosen = 0;
    out.push_back(vmid_gate(run, lock, chosen));
    for (auto& g : out)
        g.detail = run.redact(g.detail);
    if (!out.back().pass) return out;
    run.rec.vmid = chosen;
    if (reserve && std::all_of(out.begin(), out.end(), [](const GateVerdict& g) { return g.pass; })) {
        run.rec.pve_node = pl.pve_node;
        run.rec.endpoint = pl.endpoint;
        if (auto st = run.persist(); !st) out.back() = {"vmid", false, vmid_text(chosen) + ": " + st.message()};
    }
    return out;
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
    const Operation& provisioning = provision_operation();
    std::lock_guard<std::mutex> lock(vmid_mutex_);
    auto all = deps_.store->all();
    if (!all) {
        if (deps_.logger) deps_.logger->log(LogLevel::warning, "reserving the batch's VMIDs: " + all.message(), {});
        return;
    }
    std::map<std::string, NodeRecord> stored;
    for (const auto& r : *all)
        stored[r.identity] = r;
    std::map<std::string, std::vector<Want>> by_endpoint;  // endpoint name -> nodes wanting a VMID
    std::set<std::string> wanting;
    for (const auto& id : identities) {
        auto it = site.nodes.find(id);
        if (it == site.nodes.end() || it->second.type != "vm" || it->second.placement.vmid) continue;
        if (it->second.placement.provider == "qemu") continue;  // its gate allocates from the state directory
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
        if (w.rec.state == State::decommissioned || w.rec.state == State::abandoned) w.rec = fresh_record(id);
        if (w.rec.state == State::failed && step_index(provisioning, w.rec.failed_step) < 0 &&
            w.rec.failed_step != "gates") {
            continue;  // failed while decommissioning: provision() refuses it
        }
        if (step_index(provisioning, w.rec.step) >= 0) continue;  // past the reservation: its VMID is fixed
        wanting.insert(id);
        by_endpoint[w.node->placement.endpoint].push_back(std::move(w));
    }
    if (wanting.empty()) return;
    const std::set<std::int64_t> held = vmids_held_by_others(*all, wanting);  // by nodes outside this batch
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
            w.rec.updated_at = format_rfc3339(deps_.clock->now());
            reserved.push_back(w.rec);
        }
    }
    if (reserved.empty()) return;
    if (auto st = deps_.store->put_many(reserved); !st) {
        if (deps_.logger) deps_.logger->log(LogLevel::warning, "reserving the batch's VMIDs: " + st.message(), {});
        return;
    }
    if (deps_.crash_point) deps_.crash_point("after:vmids_reserved");
}

}  // namespace nodeform::controller::lifecycle
