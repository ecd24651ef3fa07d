// node plan: the gates' verdicts and the API calls 'node create' would make. Reads only, writes nothing.
#include "nodeform/controller/providers/proxmox.hpp"
#include "run.hpp"

namespace nodeform::controller::lifecycle {

namespace {

// provider qemu: the Proxmox calls above as what the qemu provider runs instead (docs/provisioning.md).
std::vector<PlannedCall> local_calls(const std::string& state_dir, const std::string& image, std::int64_t vmid,
                                     const std::vector<PlannedCall>& proxmox) {
    const std::string dir = state_dir + "/vm-" + std::to_string(vmid);
    std::vector<PlannedCall> out;
    for (const auto& c : proxmox) {
        auto ends = [&](const std::string& tail) {
            return c.path.size() >= tail.size() && c.path.compare(c.path.size() - tail.size(), tail.size(), tail) == 0;
        };
        if (ends("/clone")) {
            out.push_back({"EXEC", "qemu-img create -f qcow2 -b " + image + " -F qcow2 " + dir + "/overlay.qcow2", ""});
        } else if (ends("/config")) {
            out.push_back({"WRITE", dir + "/vm.json", c.params});
        } else if (ends("/resize")) {
            out.push_back({"EXEC", "qemu-img resize " + dir + "/overlay.qcow2", c.params});
        } else if (ends("/status/start")) {
            out.push_back({"EXEC", "cloud-localds " + dir + "/seed.img (user-data, meta-data, network-config)", ""});
            out.push_back({"EXEC",
                           "qemu-system-x86_64 -kernel/-initrd beside the template, overlay, seed, -smbios, "
                           "-netdev user, guest agent " +
                               dir + "/qga.sock, console " + dir + "/console.log, -daemonize",
                           "accelerator: the node's qemu.accel (auto: KVM when a probe boot succeeds, else tcg)"});
        } else if (ends("/agent/ping")) {
            out.push_back({"QGA", dir + "/qga.sock guest-ping", c.params});
        } else if (ends("/agent/network-get-interfaces")) {
            out.push_back({"QGA", dir + "/qga.sock guest-network-get-interfaces", ""});
        }
    }
    return out;
}

}  // namespace

Result<Plan> Lifecycle::plan(const site::Site& site, const std::string& identity) {
    auto prepared = prepare(site, identity);
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
    const Operation& provisioning = provision_operation();
    int done = step_index(provisioning, run.rec.step);
    auto want = [&](const std::string& step) { return step_index(provisioning, step) > done; };
    if (want("cloned")) {
        plan.calls.push_back({"POST", "/nodes/" + pl.pve_node + "/qemu/" + std::to_string(pl.template_vmid) + "/clone",
                              describe(clone_request(run))});
        plan.calls.push_back({"GET", "/nodes/" + pl.pve_node + "/tasks/{UPID}/status", "until stopped"});
    }
    if (want("configured")) {
        // The VM as configure will find it: this node's clone already, or the template's clone to be.
        providers::VmState target;
        if (done >= step_index(provisioning, "cloned")) {
            if (auto have = run.provider->vm_state(pl.pve_node, plan.vmid); have.ok()) target = *have.value;
        }
        std::string projected_uuid;  // the placeholder standing in for the uuid Proxmox gives the clone
        if (!target.exists) {
            auto t = run.provider->vm_state(pl.pve_node, pl.template_vmid);
            if (t.ok()) target = projected_clone(*t.value);
            for (const auto& [k, v] : providers::split_option_string(target.config["smbios1"])) {
                if (k == "uuid") projected_uuid = v;
            }
        }
        auto cfg = build_config(*run.node, target, encode_seed_compact(run.planned_seed()));
        std::string params;
        if (cfg) {
            for (auto [k, v] : cfg->shown) {
                if (k == "smbios1" && !projected_uuid.empty() && v.rfind("uuid=" + projected_uuid, 0) == 0) {
                    v = "uuid=[the clone's uuid]" + v.substr(5 + projected_uuid.size());
                }
                params += (params.empty() ? "" : " ") + k + "=" + v;
            }
            params += " (smbios1: " + std::to_string(cfg->params.at("smbios1").size()) + " of 512 characters)";
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
    if (pl.provider == "qemu")
        plan.calls = local_calls(pl.qemu.state_dir, pl.qemu.template_image, plan.vmid, plan.calls);
    plan.provider = pl.provider;
    (void)run.provider->take_calls();
    return plan;
}

}  // namespace nodeform::controller::lifecycle
