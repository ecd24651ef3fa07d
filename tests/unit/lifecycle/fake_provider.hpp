#pragma once
// A Proxmox cluster in memory (FakeCloud) behind the Provider interface, and a clock whose sleep advances its
// own time: the lifecycle driver tested without HTTP and without waiting.
#include <atomic>
#include <deque>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "nodeform/clock.hpp"
#include "nodeform/controller/providers/provider.hpp"

namespace nodeform::test {

namespace pv = nodeform::controller::providers;

// Starts at a fixed instant; sleep_for moves both clocks forward at once.
class FakeClock final : public Clock {
  public:
    std::chrono::system_clock::time_point now() const override {
        return std::chrono::system_clock::time_point(std::chrono::seconds(1795000000)) + slept();
    }
    std::chrono::steady_clock::time_point steady_now() const override {
        return std::chrono::steady_clock::time_point(std::chrono::hours(1)) + slept();
    }
    void sleep_for(std::chrono::milliseconds d) const override { slept_ms_ += d.count(); }
    std::chrono::milliseconds slept() const { return std::chrono::milliseconds(slept_ms_.load()); }

  private:
    mutable std::atomic<long long> slept_ms_{0};
};

// The cluster's state; it outlives the providers (and the lifecycles) made over it, as Proxmox outlives a
// controller restart. Tests arrange failures per operation: `errors` fail the call, `task_failures` end its task.
struct FakeCloud {
    FakeCloud() {
        pv::VmState tmpl;
        tmpl.exists = true;
        tmpl.name = "debian12-tmpl";
        tmpl.status = "stopped";
        tmpl.is_template = true;
        tmpl.config = {{"scsi0", "local-lvm:base-9000-disk-0,size=10G"},
                       {"boot", "order=scsi0"},
                       {"smbios1", "uuid=11111111-2222-4333-8444-555555555555"}};
        vms[9000] = tmpl;
    }

    std::map<std::int64_t, pv::VmState> vms;
    std::map<std::string, std::deque<pv::FailureKind>> errors;  // operation -> failures of the next calls
    std::map<std::string, int> task_failures;                   // operation -> tasks that end with an error
    int clone_task_lock_timeouts = 0;  // clone tasks that end in "can't lock file ... got timeout", no VM made
    int agent_silent_pings = 0;        // pings unanswered before the agent is up (-1: never)
    std::map<std::string, int> calls;  // operation -> how often it was called
    int tasks = 0;

    int vm_count() const { return static_cast<int>(vms.size()) - 1; }  // without the template
};

class FakeProvider final : public pv::Provider {
  public:
    explicit FakeProvider(FakeCloud& cloud) : cloud_(cloud) {}

    pv::Outcome<std::vector<std::string>> online_hosts() override {
        record("GET", "/cluster/status");
        return pv::Outcome<std::vector<std::string>>::success({"pve1"});
    }
    pv::Outcome<bool> vmid_free(std::int64_t vmid) override {
        record("GET", "/cluster/nextid?vmid=" + std::to_string(vmid));
        return pv::Outcome<bool>::success(!cloud_.vms.count(vmid));
    }
    pv::Outcome<std::vector<std::int64_t>> used_vmids() override {
        record("GET", "/cluster/resources");
        std::vector<std::int64_t> used;
        for (const auto& [id, vm] : cloud_.vms)
            used.push_back(id);
        return pv::Outcome<std::vector<std::int64_t>>::success(used);
    }
    pv::Outcome<bool> storage_exists(const std::string&, const std::string& storage) override {
        record("GET", "/storage");
        return pv::Outcome<bool>::success(storage == "local-lvm");
    }
    pv::Outcome<bool> bridge_exists(const std::string&, const std::string& bridge) override {
        record("GET", "/network");
        return pv::Outcome<bool>::success(bridge == "vmbr0");
    }
    pv::Outcome<pv::VmState> vm_state(const std::string&, std::int64_t vmid) override {
        record("GET", vm(vmid) + "/config");
        auto it = cloud_.vms.find(vmid);
        return pv::Outcome<pv::VmState>::success(it == cloud_.vms.end() ? pv::VmState{} : it->second);
    }

    pv::Outcome<pv::TaskOutcome> clone(const pv::CloneRequest& request,
                                       const std::function<void(const std::string&)>& on_upid) override {
        if (auto failed = call("clone", "POST", vm(request.template_vmid) + "/clone")) return *failed;
        if (cloud_.clone_task_lock_timeouts > 0) {  // the worker forked, then could not take the lock
            --cloud_.clone_task_lock_timeouts;
            std::string upid = next_upid("qmclone");
            on_upid(upid);
            std::string status =
                "can't lock file '/var/lock/qemu-server/lock-" + std::to_string(request.newid) + ".conf' - got timeout";
            calls_.back().upid = upid;
            calls_.back().exitstatus = status;
            return pv::Outcome<pv::TaskOutcome>::success({upid, status, {status}, pv::FailureKind::locked});
        }
        auto copy = cloud_.vms.at(request.template_vmid);
        copy.name = request.name;
        copy.is_template = false;
        copy.config["scsi0"] = "local-lvm:vm-" + std::to_string(request.newid) + "-disk-0,size=10G";
        cloud_.vms[request.newid] = copy;
        std::string upid = next_upid("qmclone");
        on_upid(upid);
        return finish("clone", upid);
    }
    pv::Outcome<pv::TaskOutcome> wait_task(const std::string& upid, std::chrono::milliseconds) override {
        record("GET", "/tasks/" + upid + "/status");
        return pv::Outcome<pv::TaskOutcome>::success({upid, "OK", {}});
    }
    pv::Outcome<bool> configure(const std::string&, std::int64_t vmid, const std::map<std::string, std::string>& params,
                                const std::string&) override {
        if (auto failed = call("configure", "PUT", vm(vmid) + "/config")) {
            return pv::Outcome<bool>::failure(failed->error.kind, failed->error.message);
        }
        for (const auto& [k, v] : params)
            cloud_.vms.at(vmid).config[k] = v;
        return pv::Outcome<bool>::success(true);
    }
    pv::Outcome<pv::TaskOutcome> resize(const std::string&, std::int64_t vmid, const std::string& disk,
                                        const std::string& size) override {
        if (auto failed = call("resize", "PUT", vm(vmid) + "/resize")) return *failed;
        auto& cfg = cloud_.vms.at(vmid).config[disk];
        cfg = cfg.substr(0, cfg.find(",size=")) + ",size=" + size;
        return finish("resize", next_upid("resize"));
    }
    pv::Outcome<pv::TaskOutcome> start(const std::string&, std::int64_t vmid) override {
        if (auto failed = call("start", "POST", vm(vmid) + "/status/start")) return *failed;
        std::string upid = next_upid("qmstart");
        if (cloud_.task_failures["start"] == 0) cloud_.vms.at(vmid).status = "running";
        return finish("start", upid);
    }
    pv::Outcome<pv::TaskOutcome> shutdown(const std::string&, std::int64_t vmid, int) override {
        if (auto failed = call("shutdown", "POST", vm(vmid) + "/status/shutdown")) return *failed;
        cloud_.vms.at(vmid).status = "stopped";
        return finish("shutdown", next_upid("qmshutdown"));
    }
    pv::Outcome<pv::TaskOutcome> stop(const std::string&, std::int64_t vmid) override {
        if (auto failed = call("stop", "POST", vm(vmid) + "/status/stop")) return *failed;
        cloud_.vms.at(vmid).status = "stopped";
        return finish("stop", next_upid("qmstop"));
    }
    pv::Outcome<pv::TaskOutcome> backup(const std::string&, std::int64_t vmid, const std::string&) override {
        if (auto failed = call("backup", "POST", "/vzdump?vmid=" + std::to_string(vmid))) return *failed;
        return finish("backup", next_upid("vzdump"));
    }
    pv::Outcome<pv::TaskOutcome> destroy(const std::string&, std::int64_t vmid) override {
        if (auto failed = call("destroy", "DELETE", vm(vmid))) return *failed;
        std::string upid = next_upid("qmdestroy");
        if (cloud_.task_failures["destroy"] == 0) cloud_.vms.erase(vmid);
        return finish("destroy", upid);
    }
    pv::Outcome<bool> agent_ping(const std::string&, std::int64_t vmid) override {
        record("POST", vm(vmid) + "/agent/ping");
        ++cloud_.calls["agent_ping"];
        if (auto& queue = cloud_.errors["agent_ping"]; !queue.empty()) {
            auto kind = queue.front();
            queue.pop_front();
            // As the Proxmox provider: "QEMU guest agent is not running" is "not yet", anything else a failure.
            if (kind == pv::FailureKind::agent_not_running) return pv::Outcome<bool>::success(false);
            return pv::Outcome<bool>::failure(kind, "VM " + std::to_string(vmid) + " is not running");
        }
        if (cloud_.agent_silent_pings < 0) return pv::Outcome<bool>::success(false);
        return pv::Outcome<bool>::success(cloud_.calls["agent_ping"] > cloud_.agent_silent_pings);
    }
    pv::Outcome<std::vector<pv::NetInterface>> agent_interfaces(const std::string&, std::int64_t vmid) override {
        record("GET", vm(vmid) + "/agent/network-get-interfaces");
        return pv::Outcome<std::vector<pv::NetInterface>>::success(
            {{"lo", "00:00:00:00:00:00", {"127.0.0.1/8"}}, {"eth0", "bc:24:11:00:00:01", {"10.20.0.11/24"}}});
    }

    std::vector<pv::ApiCall> take_calls() override { return std::exchange(calls_, {}); }
    void add_secret(const std::string&) override {}

  private:
    static std::string vm(std::int64_t vmid) { return "/nodes/pve1/qemu/" + std::to_string(vmid); }
    void record(const std::string& method, const std::string& path, const std::string& upid = "") {
        pv::ApiCall c;
        c.method = method;
        c.path = path;
        c.status = 200;
        c.upid = upid;
        calls_.push_back(c);
    }
    std::string next_upid(const std::string& type) {
        return "UPID:pve1:0000" + std::to_string(++cloud_.tasks) + ":00000000:00000000:" + type + ":root@pam:";
    }
    // Counts the call and fails it when the test arranged an error for it.
    std::optional<pv::Outcome<pv::TaskOutcome>> call(const std::string& op, const std::string& method,
                                                     const std::string& path) {
        ++cloud_.calls[op];
        record(method, path);
        auto& queue = cloud_.errors[op];
        if (queue.empty()) return std::nullopt;
        auto kind = queue.front();
        queue.pop_front();
        calls_.back().status = 500;
        return pv::Outcome<pv::TaskOutcome>::failure(kind, op + " refused by the fake cloud");
    }
    pv::Outcome<pv::TaskOutcome> finish(const std::string& op, const std::string& upid) {
        calls_.back().upid = upid;
        int& failures = cloud_.task_failures[op];
        std::string status = failures > 0 ? op + " failed: no space left on device" : "OK";
        if (failures > 0) --failures;
        calls_.back().exitstatus = status;
        return pv::Outcome<pv::TaskOutcome>::success(
            {upid, status, status == "OK" ? std::vector<std::string>{} : std::vector<std::string>{status}});
    }

    FakeCloud& cloud_;
    std::vector<pv::ApiCall> calls_;
};

}  // namespace nodeform::test
