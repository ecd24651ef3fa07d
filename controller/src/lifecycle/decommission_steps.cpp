// Decommissioning as a table of steps (final backup, stop, destroy, revoke), by the node's decommission policy.
#include "run.hpp"

namespace nodeform::controller::lifecycle {

using site::DecommissionPolicy;

namespace {

// The PVE host the VM was created on (the site's placement may have changed since).
std::string vm_host(const Run& run) {
    return run.rec.pve_node.empty() ? run.node->placement.pve_node : run.rec.pve_node;
}

// The node's VM as Proxmox has it now ("does not exist" when there is none); refuses a VMID reused by another VM.
Outcome<VmState> own_vm(Run& run) {
    const std::int64_t vmid = run.rec.vmid;
    if (vmid == 0) return Outcome<VmState>::success(VmState{});
    auto vm = run.provider->vm_state(vm_host(run), vmid);
    if (vm.ok() && vm.value->exists && vm.value->name != run.id()) {
        return Outcome<VmState>::failure(
            providers::FailureKind::other,
            "VM " + std::to_string(vmid) + " is now '" + vm.value->name + "', not this node: left untouched");
    }
    return vm;
}

StepOut back_up(Run& run) {
    const auto policy = run.node->decommission;
    if (policy != DecommissionPolicy::requires_final_backup) {
        return StepOut::skip({{"summary", std::string("no backup: policy ") + site::to_string(policy)}});
    }
    auto vm = own_vm(run);
    if (!vm.ok()) return StepOut::fail(vm.error.message);
    if (!vm.value->exists) return StepOut::skip({{"summary", "no VM to back up"}});
    const std::string& storage = run.options.backup_storage;
    auto t = run.provider->backup(vm_host(run), run.rec.vmid, storage);
    StepOut out = task_step(t, "vzdump", "final backup to " + storage + ": " + (t.ok() ? t.value->exitstatus : ""));
    out.inputs = {{"storage", storage}, {"mode", "snapshot"}};
    return out;
}

StepOut stop_vm(Run& run) {
    auto vm = own_vm(run);
    if (!vm.ok()) return StepOut::fail(vm.error.message);
    if (!vm.value->exists || vm.value->status != "running") return StepOut::skip({{"summary", "not running"}});
    auto t = run.provider->shutdown(vm_host(run), run.rec.vmid, run.options.shutdown_timeout_s);
    if (!t.ok() || !t.value->ok()) t = run.provider->stop(vm_host(run), run.rec.vmid);  // it did not shut down
    return task_step(t, "stop", "stopped");
}

StepOut destroy_vm(Run& run) {
    auto vm = own_vm(run);
    if (!vm.ok()) return StepOut::fail(vm.error.message);
    if (!vm.value->exists) return StepOut::skip({{"summary", "VM already gone"}});
    StepOut out = task_step(run.provider->destroy(vm_host(run), run.rec.vmid), "destroy",
                            "VM " + std::to_string(run.rec.vmid) + " destroyed (purge)");
    out.inputs = {{"purge", 1}, {"destroy-unreferenced-disks", 1}};
    return out;
}

StepOut revoke_credential(Run& run) {
    if (auto st = run.deps.issuer->revoke(run.id()); !st) {
        return StepOut::fail("revoking the node credential: " + st.message());
    }
    return StepOut::done({{"summary", "node credential revoked"}});
}

StepOut forget(Run& run) {
    return StepOut::done(
        {{"vmid", run.rec.vmid}, {"summary", "forgotten; VM " + std::to_string(run.rec.vmid) + " left untouched"}});
}

RunResult decommission_failed(Run& run, const std::string& step, const std::string& error) {
    return {run.id(), State::failed, false, run.id() + ": " + step + " failed: " + error};
}

RunResult decommissioned(Run& run) {
    run.rec.ips.clear();
    if (auto st = run.persist(); !st) {
        return {run.id(), State::decommissioned, false, run.id() + ": decommissioned, but " + st.message()};
    }
    return {run.id(), State::decommissioned, true, run.id() + ": decommissioned"};
}

// requires_migration_first: the stacks still assigned to the node ("" when none).
std::string assigned_stacks(const site::Node& node) {
    std::string stacks;
    if (node.resolved.contains("stacks") && node.resolved["stacks"].is_array()) {
        for (const auto& s : node.resolved["stacks"]) {
            if (s.is_object()) stacks += (stacks.empty() ? "" : ", ") + s.value("name", "?");
        }
    }
    return stacks;
}

}  // namespace

const Operation& decommission_operation() {
    static const Operation op{{{"backed_up", State::decommissioning, back_up},
                               {"stopped", State::decommissioning, stop_vm},
                               {"destroyed", State::decommissioning, destroy_vm},
                               {"revoked", State::decommissioned, revoke_credential}},
                              decommission_failed,
                              decommissioned};
    return op;
}

RunResult decommission(Run& run, bool abandon) {
    auto& rec = run.rec;
    const std::string& id = run.id();
    if (rec.state == State::planned && rec.vmid == 0) {
        return {id, rec.state, false, id + ": never provisioned by this controller; nothing to destroy"};
    }
    if (rec.state == State::decommissioned) return {id, rec.state, true, id + ": already decommissioned"};
    if (abandon) {
        std::string error;
        if (!run_step(run, Step{"abandoned", State::abandoned, forget}, error)) {
            return {id, State::failed, false, id + ": abandoned failed: " + error};
        }
        return {id, State::abandoned, true, id + ": abandoned (Proxmox untouched)"};
    }
    if (run.node->decommission == DecommissionPolicy::requires_migration_first) {
        if (std::string stacks = assigned_stacks(*run.node); !stacks.empty()) {
            return {id, rec.state, false,
                    id + ": refused: decommission policy requires_migration_first and stacks are still assigned (" +
                        stacks + "); move them to another node's spec, apply, then destroy"};
        }
    }
    if (rec.state != State::decommissioning) {
        rec.state = State::decommissioning;
        rec.step.clear();
        if (auto st = run.persist(); !st) return {id, rec.state, false, id + ": " + st.message()};
    }
    return drive(run, decommission_operation());
}

}  // namespace nodeform::controller::lifecycle
