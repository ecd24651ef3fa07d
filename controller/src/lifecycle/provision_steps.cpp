// Provisioning as a table of steps: gates and VMID, clone, configure, resize, start, register, guest agent,
// platform-ready. Each body reads Proxmox's real state first, so running it again after a crash is safe.
#include <cctype>

#include "nodeform/base64.hpp"
#include "nodeform/controller/providers/proxmox.hpp"
#include "run.hpp"

namespace nodeform::controller::lifecycle {

using providers::FailureKind;

namespace {

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

std::string vm_text(std::int64_t vmid) {
    return "VM " + std::to_string(vmid);
}

// Waits while Proxmox holds a lock on the VM (a clone still copying); returns the settled state.
Outcome<VmState> settled(Run& run, std::int64_t vmid) {
    Outcome<VmState> state;
    bool unlocked = run.poll(run.options.lock_wait, run.options.wait_poll, [&] {
        state = run.provider->vm_state(run.node->placement.pve_node, vmid);
        return !state.ok() || !state.value->exists || state.value->lock.empty();
    });
    if (unlocked) return state;
    return Outcome<VmState>::failure(FailureKind::locked,
                                     vm_text(vmid) + " is still locked (" + state.value->lock + ")");
}

// vmid_reserved: the gates, then the VMID is ours.
StepOut reserve_vmid(Run& run) {
    const auto& pl = run.node->placement;
    json verdicts = json::array();
    std::string refused;
    for (const auto& v : gates(run, true)) {
        verdicts.push_back(to_json(v));
        if (!v.pass) refused += (refused.empty() ? "" : "; ") + v.name + ": " + v.detail;
    }
    if (!refused.empty()) return StepOut::fail("refused by gates: " + refused);
    return StepOut::done(
        {{"gates", verdicts},
         {"vmid", run.rec.vmid},
         {"summary", "VMID " + std::to_string(run.rec.vmid) + " on " + pl.pve_node}},
        {{"pve_node", pl.pve_node}, {"template", pl.template_vmid}, {"storage", pl.storage}, {"bridge", pl.bridge}});
}

// cloned: exactly one clone, ever; after a crash, the VM's real state decides.
StepOut clone_vm(Run& run) {
    auto& rec = run.rec;
    auto& p = *run.provider;
    const auto& pl = run.node->placement;
    const std::int64_t vmid = rec.vmid;
    const json inputs = {{"template", pl.template_vmid}, {"newid", vmid}, {"storage", pl.storage}, {"full", true}};
    auto not_ours = [&](const VmState& vm) {
        return StepOut::fail("VMID " + std::to_string(vmid) + " is in use by VM '" + vm.name + "', not by this node");
    };
    if (!rec.pending_upid.empty()) {  // a clone we started before a restart
        auto t = p.wait_task(rec.pending_upid, std::chrono::minutes(20));
        if (t.ok() && !t.value->ok()) {
            std::string upid = rec.pending_upid;
            rec.pending_upid.clear();
            return StepOut::fail("clone task " + upid + " ended: " + t.value->exitstatus);
        }
    }
    auto vm = settled(run, vmid);
    if (!vm.ok()) return StepOut::fail(vm.error.message);
    if (vm.value->exists) {
        if (vm.value->name != run.id() || vm.value->is_template) return not_ours(*vm.value);
        rec.pending_upid.clear();
        return StepOut::skip({{"summary", vm_text(vmid) + " already exists (cloned)"}});
    }
    auto free = p.vmid_free(vmid);
    if (!free.ok()) return StepOut::fail(free.error.message);
    if (!*free.value) return StepOut::fail("VMID " + std::to_string(vmid) + " is in use elsewhere in the cluster");
    const providers::CloneRequest request = clone_request(run);
    Status saved = Ok{};
    auto t = p.clone(request, [&](const std::string& upid) {
        rec.pending_upid = upid;
        saved = run.persist();
        run.hook("called:cloned");
    });
    if (!t.ok()) {
        if (t.error.kind == FailureKind::already_exists || t.error.kind == FailureKind::timeout) {
            return StepOut::retry(vm_text(vmid) + " did not appear after cloning: " + t.error.message);
        }
        if (t.error.kind == FailureKind::locked) return StepOut::retry(t.error.message, run.options.wait_poll);
        return StepOut::fail(t.error.message);
    }
    if (!saved) return StepOut::fail("clone task " + t.value->upid + ": " + saved.message());
    StepOut out = task_step(t, "clone task", vm_text(vmid) + " cloned from " + std::to_string(pl.template_vmid));
    out.inputs = inputs;
    if (!out.ok()) {
        rec.pending_upid.clear();
        // qemu-server forks the clone worker before it takes the locks: a lock timeout is the task's exit
        // status. Retried like the HTTP-level one; the next attempt reads the VM's real state first.
        if (t.value->failure == FailureKind::locked) {
            out.kind = StepOut::Kind::retry;
            out.delay = run.options.wait_poll;
        }
        return out;
    }
    vm = settled(run, vmid);  // the task says OK: the VM must be there now
    if (!vm.ok()) return StepOut::fail(vm.error.message);
    if (!vm.value->exists) return StepOut::retry(vm_text(vmid) + " did not appear after cloning");
    if (vm.value->name != run.id() || vm.value->is_template) return not_ours(*vm.value);
    rec.pending_upid.clear();
    return out;
}

// configured: sizing, cloud-init, and the seed with the credential the node's posture needs: the site
// token (site_token), else a fresh one-time enrollment token.
StepOut configure_vm(Run& run) {
    auto& p = *run.provider;
    const auto& node = *run.node;
    const std::int64_t vmid = run.rec.vmid;
    auto vm = settled(run, vmid);
    if (!vm.ok()) return StepOut::fail(vm.error.message);
    if (!vm.value->exists) return StepOut::fail(vm_text(vmid) + " disappeared");
    IssuedToken token{run.posture_token(), {}};
    if (token.token.empty()) {
        auto issued = run.deps.issuer->issue(run.id(), run.options.token_ttl);
        if (!issued) return StepOut::fail("issuing the enrollment token: " + issued.message());
        token = *issued;
    }
    std::string compact = encode_seed_compact(run.seed(token.token));
    for (const auto& secret : {token.token, compact, base64_encode(compact)}) {
        run.secrets.push_back(secret);
        p.add_secret(secret);
    }
    auto cfg = build_config(node, *vm.value, compact);
    if (!cfg) return StepOut::fail(cfg.message());
    auto r = p.configure(node.placement.pve_node, vmid, cfg->params, vm.value->digest);
    run.hook("called:configured");
    if (!r.ok()) {
        bool changed = r.error.kind == FailureKind::conflict || r.error.kind == FailureKind::locked;
        return changed ? StepOut::retry(r.error.message) : StepOut::fail(r.error.message);
    }
    const bool site_token = !run.posture_token().empty();
    run.rec.token_expires_at = site_token ? "" : format_rfc3339(token.expires_at);
    return StepOut::done({{"token_expires_at", run.rec.token_expires_at},
                          {"seed_credential", site_token ? "site token" : "one-time enrollment token"},
                          {"summary", "cores " + std::to_string(node.sizing.cores) + ", memory " +
                                          std::to_string(node.sizing.memory_mb) + " MB, seed in smbios1"}},
                         json(cfg->shown));
}

// resized: absolute size, only ever grown.
StepOut resize_disk(Run& run) {
    const auto& node = *run.node;
    const std::int64_t vmid = run.rec.vmid;
    auto vm = settled(run, vmid);
    if (!vm.ok()) return StepOut::fail(vm.error.message);
    std::string disk = boot_disk(*vm.value);
    if (disk.empty()) return StepOut::fail(vm_text(vmid) + " has no boot disk to resize");
    std::uint64_t want = static_cast<std::uint64_t>(node.sizing.disk_gb) << 30;
    auto have = disk_size(*vm.value, disk);
    std::string size = std::to_string(node.sizing.disk_gb) + "G";
    if (have && *have >= want) {
        return StepOut::skip(
            {{"disk", disk},
             {"summary", disk + " already " + std::to_string(*have >> 30) + "G (wanted " + size + ")"}});
    }
    auto t = run.provider->resize(node.placement.pve_node, vmid, disk, size);
    run.hook("called:resized");
    StepOut out = task_step(t, "resize task", disk + " resized to " + size);
    out.inputs = {{"disk", disk}, {"size", size}};
    return out;
}

StepOut start_vm(Run& run) {
    auto vm = settled(run, run.rec.vmid);
    if (!vm.ok()) return StepOut::fail(vm.error.message);
    if (vm.value->status == "running") return StepOut::skip({{"summary", "already running"}});
    auto t = run.provider->start(run.node->placement.pve_node, run.rec.vmid);
    run.hook("called:started");
    return task_step(t, "start task", "running");
}

StepOut register_node(Run& run) {
    if (run.rec.token_expires_at.empty()) {
        return StepOut::done({{"summary", "the seed carries the site token (posture site_token)"}});
    }
    return StepOut::done({{"token_expires_at", run.rec.token_expires_at},
                          {"summary", "enrollment token issued, expires " + run.rec.token_expires_at}});
}

// agent_ready: the QEMU guest agent answers; the node's addresses as it reports them.
StepOut await_agent(Run& run) {
    auto& p = *run.provider;
    const auto& pve = run.node->placement.pve_node;
    const std::int64_t vmid = run.rec.vmid;
    Outcome<bool> ping;
    int pings = 0;
    bool answered = run.poll(run.options.agent_timeout, run.options.agent_poll, [&] {
        ping = p.agent_ping(pve, vmid);
        ++pings;
        return !ping.ok() || *ping.value;
    });
    if (!ping.ok() && ping.error.kind == FailureKind::vm_not_running && run.node->placement.provider == "qemu") {
        return StepOut::fail(vm_text(vmid) + " stopped while waiting for its guest agent (" + ping.error.message +
                             "): it crashed or was shut down from inside; look at its serial console " +
                             run.node->placement.qemu.state_dir + "/vm-" + std::to_string(vmid) + "/console.log");
    }
    if (!ping.ok() && ping.error.kind == FailureKind::vm_not_running) {
        return StepOut::fail(vm_text(vmid) + " stopped while waiting for its guest agent (" + ping.error.message +
                             "): it crashed or was shut down from inside; look at its console and at the task "
                             "log on " +
                             pve + " (Proxmox: " + vm_text(vmid) + " > Console, Task History)");
    }
    if (!ping.ok()) return StepOut::fail(ping.error.message);
    if (!answered) {
        return StepOut::fail("the QEMU guest agent did not answer within " +
                             std::to_string(run.options.agent_timeout.count() / 1000) +
                             " s: check that the template has qemu-guest-agent installed and enabled");
    }
    // Folded pings: the receipt keeps the count, not every attempt.
    auto calls = p.take_calls();
    auto nics = p.agent_interfaces(pve, vmid);
    run.rec.ips.clear();
    if (nics.ok()) run.rec.ips = reportable_addresses(*nics.value);
    std::string ips;
    for (const auto& a : run.rec.ips)
        ips += (ips.empty() ? "" : " ") + a;
    json outputs = {{"agent_pings", pings},
                    {"ips", run.rec.ips},
                    {"summary", "guest agent answers; addresses " + (ips.empty() ? "(none yet)" : ips)}};
    if (!calls.empty()) outputs["first_ping"] = providers::to_json(calls.front());
    return StepOut::done(std::move(outputs));
}

// active: the node reported platform-ready with passing health.
StepOut await_report(Run& run) {
    const std::string& id = run.id();
    std::optional<NodeReport> last;
    bool ready = run.poll(run.options.report_timeout, run.options.wait_poll, [&] {
        last = run.deps.reports ? run.deps.reports->latest(id) : std::nullopt;
        return last && last->platform_ready && last->health_passing;
    });
    if (!ready) {
        std::string why =
            !last ? "no report from the node yet"
                  : (!last->platform_ready ? "the node has not reached platform-ready" : "health checks are failing");
        return StepOut::wait("still validating (" + why + "); re-run 'node create " + id + "' to keep waiting");
    }
    // The addresses as the node becomes active (DHCP may have answered after the first agent reply).
    auto nics = run.provider->agent_interfaces(run.node->placement.pve_node, run.rec.vmid);
    if (nics.ok()) run.rec.ips = reportable_addresses(*nics.value);
    return StepOut::done({{"report_received_at", last->received_at},
                          {"ips", run.rec.ips},
                          {"summary", "platform-ready, health passing"}});
}

// rollback (not a table step: run on failure): destroys a VM that never booted; it holds no data.
StepOut destroy_unbooted(Run& run) {
    const std::int64_t vmid = run.rec.vmid;
    const auto& pve = run.node->placement.pve_node;
    auto vm = run.provider->vm_state(pve, vmid);
    if (!vm.ok()) return StepOut::fail(vm.error.message);
    if (!vm.value->exists) return StepOut::skip({{"summary", "no partial VM left (Proxmox removed it)"}});
    if (!is_ours(*vm.value, run.id()) || vm.value->status == "running") {
        return StepOut::fail(vm_text(vmid) + " is not a stopped VM of this node; left untouched");
    }
    return task_step(run.provider->destroy(pve, vmid), "destroy task", "partial " + vm_text(vmid) + " destroyed");
}

// A failed gate leaves the node failed at "gates" without a VMID; a failed clone, configure or resize rolls back.
RunResult provisioning_failed(Run& run, const std::string& step, const std::string& error) {
    auto& rec = run.rec;
    const std::string& id = run.id();
    std::string msg = run.redact(error);
    auto saved = [&] {
        if (auto st = run.persist(); !st) msg += "; " + st.message();
    };
    if (step == "vmid_reserved") {
        rec.failed_step = "gates";
        if (!run.node->placement.vmid) rec.vmid = 0;
        saved();
        return {id, State::failed, false, id + ": " + msg};
    }
    int index = step_index(provision_operation(), step);
    if (run.options.rollback_on_failure && rec.vmid != 0 && index >= 1 && index <= 3) {
        const std::string step_before = rec.step;
        std::string ignored;
        (void)run_step(run, Step{"rollback", State::failed, destroy_unbooted}, ignored);
        const bool rolled = rec.step == "rollback";  // run_step records the step name once the body succeeded
        rec.state = State::failed;
        rec.failed_step = step;
        rec.reason = msg + (rolled ? " (rolled back: no VM left)" : "");
        if (rolled) {
            rec.step.clear();
            rec.pending_upid.clear();
            if (!run.node->placement.vmid) rec.vmid = 0;
        } else {
            rec.step = step_before;
        }
        msg = rec.reason;
        saved();
    }
    return {id, State::failed, false, id + ": " + step + " failed: " + msg};
}

RunResult provisioned(Run& run) {
    return {run.id(), State::active, true, run.id() + ": active (VM " + std::to_string(run.rec.vmid) + ")"};
}

}  // namespace

providers::CloneRequest clone_request(const Run& run) {
    const auto& pl = run.node->placement;
    return {
        pl.pve_node, pl.template_vmid, run.rec.vmid, run.id(), pl.storage, pl.pool, "managed by nodeform: " + run.id(),
        true};
}

std::string describe(const providers::CloneRequest& q) {
    return "newid=" + std::to_string(q.newid) + " name=" + q.name + " full=" + (q.full ? "1" : "0") +
           (q.storage.empty() ? "" : " storage=" + q.storage) + (q.pool.empty() ? "" : " pool=" + q.pool) +
           (q.description.empty() ? "" : " description='" + q.description + "'");
}

const Operation& provision_operation() {
    static const Operation op{{{"vmid_reserved", State::provisioning, reserve_vmid},
                               {"cloned", State::provisioning, clone_vm, 4},
                               {"configured", State::provisioning, configure_vm, 3},
                               {"resized", State::provisioning, resize_disk},
                               {"started", State::provisioning, start_vm},
                               {"registered", State::registered, register_node},
                               {"agent_ready", State::validating, await_agent},
                               {"active", State::active, await_report}},
                              provisioning_failed,
                              provisioned};
    return op;
}

RunResult provision(Run& run) {
    auto& rec = run.rec;
    const std::string& id = run.id();
    const Operation& op = provision_operation();
    switch (rec.state) {
        case State::active:
            return {id, rec.state, true, "already active (VM " + std::to_string(rec.vmid) + ")"};
        case State::decommissioning:
            return {id, rec.state, false, "node is being decommissioned: finish 'node destroy " + id + "' first"};
        case State::decommissioned:
        case State::abandoned:
            rec = fresh_record(id);
            break;
        default:
            break;
    }
    if (rec.state == State::failed && step_index(op, rec.failed_step) < 0 && rec.failed_step != "gates") {
        return {id, rec.state, false,
                "node failed at '" + rec.failed_step + "' while decommissioning: re-run 'node destroy " + id + "'"};
    }
    if (rec.state == State::planned || (rec.state == State::failed && rec.failed_step == "gates")) {
        rec.state = State::planned;
        if (auto st = run.persist(); !st) return {id, State::failed, false, id + ": " + st.message()};
    }
    if (step_index(op, rec.step) >= 0) rec.pve_node = run.node->placement.pve_node;
    return drive(run, op);
}

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

}  // namespace nodeform::controller::lifecycle
