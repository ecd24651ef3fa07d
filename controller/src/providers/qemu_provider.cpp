// The qemu provider: each Provider call as files in the VM's directory, qemu-img, cloud-localds and a
// daemonized qemu-system-x86_64 (through the ProcessRunner), its guest agent over the QGA socket.
#include <signal.h>
#include <sys/stat.h>

#include <filesystem>
#include <mutex>
#include <random>

#include "nodeform/atomic_file.hpp"
#include "nodeform/canonical_json.hpp"
#include "nodeform/controller/providers/proxmox.hpp"
#include "nodeform/controller/providers/qemu.hpp"

namespace nodeform::controller::providers {

using json = nlohmann::json;
using std::chrono::milliseconds;
namespace fs = std::filesystem;

namespace {

class RealHostProcesses final : public HostProcesses {
  public:
    std::optional<std::string> cmdline(int pid) override {
        if (pid <= 0) return std::nullopt;
        auto text = read_file("/proc/" + std::to_string(pid) + "/cmdline", 1024 * 1024);
        if (!text) return std::nullopt;
        return *text;
    }
    bool signal(int pid, int sig) override { return pid > 0 && ::kill(pid, sig) == 0; }
};

std::string random_uuid() {
    std::random_device rd;
    std::mt19937_64 rng((static_cast<std::uint64_t>(rd()) << 32) ^ rd());
    std::uint64_t a = rng(), b = rng();
    a = (a & ~0xf000ULL) | 0x4000ULL;                         // version 4
    b = (b & 0x3fffffffffffffffULL) | 0x8000000000000000ULL;  // variant 10
    char out[40];
    std::snprintf(out, sizeof out, "%08llx-%04llx-%04llx-%04llx-%012llx", (unsigned long long)(a >> 32),
                  (unsigned long long)((a >> 16) & 0xffff), (unsigned long long)(a & 0xffff),
                  (unsigned long long)(b >> 48), (unsigned long long)(b & 0xffffffffffffULL));
    return out;
}

ApiCall api(std::string method, std::string path, int status, std::string error = "", std::int64_t ms = 0) {
    ApiCall c;
    c.method = std::move(method);
    c.path = std::move(path);
    c.status = status;
    c.error = std::move(error);
    c.duration_ms = ms;
    return c;
}

std::string vm_text(std::int64_t vmid) {
    return "VM " + std::to_string(vmid);
}

TaskOutcome task(const std::string& upid, const std::string& exitstatus, std::vector<std::string> tail = {}) {
    TaskOutcome t;
    t.upid = upid;
    t.exitstatus = exitstatus;
    t.log_tail = std::move(tail);
    return t;
}

// The last lines of a text (a failed command's stderr, the console log).
std::vector<std::string> tail_lines(const std::string& text, std::size_t n) {
    std::vector<std::string> lines;
    std::size_t start = 0;
    while (start < text.size()) {
        auto nl = text.find('\n', start);
        lines.push_back(text.substr(start, nl == std::string::npos ? std::string::npos : nl - start));
        if (nl == std::string::npos) break;
        start = nl + 1;
    }
    if (lines.size() > n) lines.erase(lines.begin(), lines.end() - static_cast<std::ptrdiff_t>(n));
    return lines;
}

class QemuProvider final : public Provider {
  public:
    QemuProvider(QemuOptions options, ProcessRunner& runner, const Clock& clock, std::unique_ptr<HostProcesses> procs)
        : o_(std::move(options)), runner_(runner), clock_(clock), procs_(std::move(procs)) {
        if (!procs_) procs_ = make_host_processes();
    }

    void add_secret(const std::string& secret) override {
        if (secret.empty()) return;
        std::lock_guard<std::mutex> lock(mutex_);
        secrets_.push_back(secret);
    }

    std::vector<ApiCall> take_calls() override {
        std::lock_guard<std::mutex> lock(mutex_);
        std::vector<ApiCall> out;
        out.swap(calls_);
        return out;
    }

    Outcome<std::vector<std::string>> online_hosts() override {
        return Outcome<std::vector<std::string>>::success({"local"});
    }

    Outcome<bool> vmid_free(std::int64_t vmid) override {
        std::error_code ec;
        return Outcome<bool>::success(!fs::exists(qemu_paths(o_.state_dir, vmid).vm_json, ec));
    }

    Outcome<std::vector<std::int64_t>> used_vmids() override {
        std::vector<std::int64_t> out;
        std::error_code ec;
        for (fs::directory_iterator it(o_.state_dir, ec), end; !ec && it != end; it.increment(ec)) {
            const std::string name = it->path().filename().string();
            if (name.rfind("vm-", 0) != 0 || name.size() > 14) continue;
            try {
                std::int64_t v = std::stoll(name.substr(3));
                if (fs::exists(it->path() / "vm.json")) out.push_back(v);
            } catch (const std::exception&) {
            }
        }
        return Outcome<std::vector<std::int64_t>>::success(out);
    }

    Outcome<bool> storage_exists(const std::string&, const std::string& storage) override {
        std::error_code ec;
        const fs::path dir(storage);
        bool ok = storage == o_.state_dir && (fs::is_directory(dir, ec) || fs::is_directory(dir.parent_path(), ec));
        return Outcome<bool>::success(ok);
    }

    Outcome<bool> bridge_exists(const std::string&, const std::string& bridge) override {
        return Outcome<bool>::success(bridge == "user");
    }

    Outcome<VmState> vm_state(const std::string&, std::int64_t vmid) override {
        if (vmid == 0) return template_state();
        auto vm = load(vmid);
        if (!vm) return Outcome<VmState>::success(VmState{});
        VmState s;
        s.exists = true;
        s.name = vm->name;
        s.config = vm->config;
        s.digest = digest(*vm);
        s.status = running_pid(vmid) ? "running" : "stopped";
        return Outcome<VmState>::success(std::move(s));
    }

    Outcome<TaskOutcome> clone(const CloneRequest& request,
                               const std::function<void(const std::string&)>& on_upid) override {
        const auto p = qemu_paths(o_.state_dir, request.newid);
        const std::string upid = "qemu:" + std::to_string(request.newid) + ":clone";
        std::error_code ec;
        if (fs::exists(p.vm_json, ec))
            return Outcome<TaskOutcome>::failure(FailureKind::already_exists,
                                                 vm_text(request.newid) + " already exists");
        fs::remove_all(p.dir, ec);  // a clone that stopped half-way before vm.json was written
        fs::create_directories(p.dir, ec);
        if (ec) return Outcome<TaskOutcome>::failure(FailureKind::other, "creating " + p.dir + ": " + ec.message());
        fs::permissions(p.dir, fs::perms::owner_all, ec);  // vm.json holds the seed's credential
        if (on_upid) on_upid(upid);
        auto size = template_size();
        if (!size) return Outcome<TaskOutcome>::success(task(upid, size.message()));
        auto r = exec("clone", {"qemu-img", "create", "-f", "qcow2", "-b", o_.template_image, "-F", "qcow2", p.overlay},
                      p.overlay);
        if (!r.ok()) return Outcome<TaskOutcome>::success(task(upid, "qemu-img create failed", r.tail));
        QemuVm vm;
        vm.vmid = request.newid;
        vm.name = request.name;
        vm.config["smbios1"] = "uuid=" + random_uuid();
        vm.config["virtio0"] = "local:vm-" + std::to_string(request.newid) + "-disk-0,size=" + std::to_string(*size);
        vm.config["description"] = request.description;
        if (auto st = save(vm); !st) return Outcome<TaskOutcome>::success(task(upid, st.message()));
        return Outcome<TaskOutcome>::success(task(upid, "OK"));
    }

    Outcome<TaskOutcome> wait_task(const std::string& upid, milliseconds) override {
        // Every qemu operation finishes before its call returns: a remembered clone either wrote vm.json or not.
        std::int64_t vmid = 0;
        if (std::sscanf(upid.c_str(), "qemu:%lld:", reinterpret_cast<long long*>(&vmid)) != 1) {
            return Outcome<TaskOutcome>::failure(FailureKind::not_found, "'" + upid + "' is not a qemu task");
        }
        std::error_code ec;
        bool done = fs::exists(qemu_paths(o_.state_dir, vmid).vm_json, ec);
        return Outcome<TaskOutcome>::success(task(upid, done ? "OK" : "interrupted before the VM was complete"));
    }

    Outcome<bool> configure(const std::string&, std::int64_t vmid, const std::map<std::string, std::string>& params,
                            const std::string& want_digest) override {
        auto vm = load(vmid);
        if (!vm) return Outcome<bool>::failure(FailureKind::not_found, vm_text(vmid) + " does not exist");
        if (!want_digest.empty() && want_digest != digest(*vm)) {
            return Outcome<bool>::failure(FailureKind::conflict, vm_text(vmid) + "'s configuration changed meanwhile");
        }
        for (const auto& [k, v] : params)
            vm->config[k] = v;
        record(api("PUT", "vm-" + std::to_string(vmid) + "/vm.json", 200));
        if (auto st = save(*vm); !st) return Outcome<bool>::failure(FailureKind::other, st.message());
        return Outcome<bool>::success(true);
    }

    Outcome<TaskOutcome> resize(const std::string&, std::int64_t vmid, const std::string& disk,
                                const std::string& size) override {
        const std::string upid = "qemu:" + std::to_string(vmid) + ":resize";
        auto vm = load(vmid);
        if (!vm) return Outcome<TaskOutcome>::failure(FailureKind::not_found, vm_text(vmid) + " does not exist");
        auto bytes = parse_size(size);
        if (!bytes) return Outcome<TaskOutcome>::failure(FailureKind::other, "size '" + size + "' is not a size");
        const auto p = qemu_paths(o_.state_dir, vmid);
        auto r = exec("resize", {"qemu-img", "resize", "-f", "qcow2", p.overlay, std::to_string(*bytes)}, p.overlay);
        if (!r.ok()) return Outcome<TaskOutcome>::success(task(upid, "qemu-img resize failed", r.tail));
        vm->config[disk] = "local:vm-" + std::to_string(vmid) + "-disk-0,size=" + std::to_string(*bytes);
        if (auto st = save(*vm); !st) return Outcome<TaskOutcome>::success(task(upid, st.message()));
        return Outcome<TaskOutcome>::success(task(upid, "OK"));
    }

    Outcome<TaskOutcome> start(const std::string&, std::int64_t vmid) override {
        const std::string upid = "qemu:" + std::to_string(vmid) + ":start";
        auto vm = load(vmid);
        if (!vm) return Outcome<TaskOutcome>::failure(FailureKind::not_found, vm_text(vmid) + " does not exist");
        if (running_pid(vmid))
            return Outcome<TaskOutcome>::failure(FailureKind::already_running, vm_text(vmid) + " is already running");
        const auto p = qemu_paths(o_.state_dir, vmid);
        auto files = nocloud_files(*vm, qemu_mac(vmid));
        if (!files) return Outcome<TaskOutcome>::success(task(upid, "NoCloud seed: " + files.message()));
        const std::string cfg = p.dir + "/nocloud";
        for (const auto& [name, text] : {std::pair<std::string, std::string>{"user-data", files->user_data},
                                         {"meta-data", files->meta_data},
                                         {"network-config", files->network_config}}) {
            if (auto st = write_file_atomic(cfg + "/" + name, text, {0600, true}); !st) {
                return Outcome<TaskOutcome>::success(task(upid, "NoCloud seed: " + st.message()));
            }
        }
        auto seed = exec("seed",
                         {"cloud-localds", "--network-config=" + cfg + "/network-config", p.seed, cfg + "/user-data",
                          cfg + "/meta-data"},
                         p.seed);
        if (!seed.ok()) return Outcome<TaskOutcome>::success(task(upid, "cloud-localds failed", seed.tail));
        if (!accel_) {
            std::error_code ec;
            const bool kvm = fs::exists(o_.kvm_device, ec);
            const auto t0 = clock_.steady_now();
            accel_ = choose_accel(o_, runner_, kvm);
            const auto ms = std::chrono::duration_cast<milliseconds>(clock_.steady_now() - t0).count();
            record(api("PROBE",
                       std::string("accelerator: ") + *accel_ + (o_.accel == "auto" && kvm ? " (KVM probe)" : ""), 200,
                       "", ms));
        }
        auto argv = qemu_argv(o_, *vm, *accel_);
        if (!argv) return Outcome<TaskOutcome>::success(task(upid, argv.message()));
        std::error_code ec;
        fs::remove(p.pidfile, ec);
        fs::remove(p.qga, ec);
        auto r = exec("start", *argv, "vm-" + std::to_string(vmid) + " (" + *accel_ + ")");
        if (!r.ok()) return Outcome<TaskOutcome>::success(task(upid, "qemu-system-x86_64 failed", r.tail));
        auto pid = running_pid(vmid);
        if (!pid) {
            return Outcome<TaskOutcome>::success(task(upid, "QEMU started but is not running", console_tail(vmid)));
        }
        vm->config["accel"] = *accel_;
        vm->config["pid"] = std::to_string(*pid);  // found again after a restart, even once the pidfile is gone
        (void)save(*vm);
        return Outcome<TaskOutcome>::success(task(upid, "OK"));
    }

    Outcome<TaskOutcome> shutdown(const std::string&, std::int64_t vmid, int timeout_s) override {
        const std::string upid = "qemu:" + std::to_string(vmid) + ":shutdown";
        if (!running_pid(vmid)) return Outcome<TaskOutcome>::success(task(upid, "OK"));
        auto r = qga(vmid, "guest-shutdown");
        record(
            api("QGA", "vm-" + std::to_string(vmid) + " guest-shutdown", r ? 200 : 500, r ? "" : redact(r.message())));
        if (!r) return Outcome<TaskOutcome>::success(task(upid, "guest-shutdown: " + redact(r.message())));
        if (!wait_gone(vmid, std::chrono::seconds(timeout_s))) {
            return Outcome<TaskOutcome>::success(
                task(upid, "the guest did not power off within " + std::to_string(timeout_s) + " s"));
        }
        return Outcome<TaskOutcome>::success(task(upid, "OK"));
    }

    Outcome<TaskOutcome> stop(const std::string&, std::int64_t vmid) override {
        const std::string upid = "qemu:" + std::to_string(vmid) + ":stop";
        auto pid = running_pid(vmid);
        if (!pid) return Outcome<TaskOutcome>::success(task(upid, "OK"));
        procs_->signal(*pid, SIGTERM);
        bool gone = wait_gone(vmid, std::chrono::seconds(10));
        if (!gone) {
            procs_->signal(*pid, SIGKILL);
            gone = wait_gone(vmid, std::chrono::seconds(5));
        }
        record(api("KILL", "vm-" + std::to_string(vmid) + " pid " + std::to_string(*pid), gone ? 200 : 500));
        return Outcome<TaskOutcome>::success(
            task(upid, gone ? "OK" : "QEMU (pid " + std::to_string(*pid) + ") did not exit"));
    }

    Outcome<TaskOutcome> backup(const std::string&, std::int64_t vmid, const std::string&) override {
        const std::string upid = "qemu:" + std::to_string(vmid) + ":backup";
        auto vm = load(vmid);
        if (!vm) return Outcome<TaskOutcome>::failure(FailureKind::not_found, vm_text(vmid) + " does not exist");
        const auto p = qemu_paths(o_.state_dir, vmid);
        const std::string dest =
            o_.state_dir + "/backups/" + vm->name + "-" + std::to_string(vmid) + "-" +
            std::to_string(std::chrono::duration_cast<std::chrono::seconds>(clock_.now().time_since_epoch()).count()) +
            ".qcow2";
        std::error_code ec;
        fs::create_directories(o_.state_dir + "/backups", ec);
        // -U: the running VM keeps its lock; the copy is crash-consistent (the VM is stopped right after).
        auto r = exec("backup", {"qemu-img", "convert", "-U", "-f", "qcow2", "-O", "qcow2", p.overlay, dest}, dest);
        if (!r.ok()) return Outcome<TaskOutcome>::success(task(upid, "qemu-img convert failed", r.tail));
        return Outcome<TaskOutcome>::success(task(upid, "OK"));
    }

    Outcome<TaskOutcome> destroy(const std::string&, std::int64_t vmid) override {
        const std::string upid = "qemu:" + std::to_string(vmid) + ":destroy";
        if (running_pid(vmid)) {
            auto st = stop("local", vmid);
            if (!st.ok() || !st.value->ok()) return st;
        }
        const auto p = qemu_paths(o_.state_dir, vmid);
        std::error_code ec;
        fs::remove_all(p.dir, ec);
        record(api("DELETE", "vm-" + std::to_string(vmid), ec ? 500 : 200, ec ? ec.message() : ""));
        if (ec) return Outcome<TaskOutcome>::success(task(upid, "removing " + p.dir + ": " + ec.message()));
        return Outcome<TaskOutcome>::success(task(upid, "OK"));
    }

    Outcome<bool> agent_ping(const std::string&, std::int64_t vmid) override {
        if (!running_pid(vmid))
            return Outcome<bool>::failure(FailureKind::vm_not_running, vm_text(vmid) + " is not running");
        auto r = qga(vmid, "guest-ping");
        record(api("QGA", "vm-" + std::to_string(vmid) + " guest-ping", r ? 200 : 500, r ? "" : redact(r.message())));
        return Outcome<bool>::success(static_cast<bool>(r));
    }

    Outcome<std::vector<NetInterface>> agent_interfaces(const std::string&, std::int64_t vmid) override {
        if (!running_pid(vmid)) {
            return Outcome<std::vector<NetInterface>>::failure(FailureKind::vm_not_running,
                                                               vm_text(vmid) + " is not running");
        }
        auto r = qga(vmid, "guest-network-get-interfaces");
        record(api("QGA", "vm-" + std::to_string(vmid) + " guest-network-get-interfaces", r ? 200 : 500,
                   r ? "" : redact(r.message())));
        if (!r) return Outcome<std::vector<NetInterface>>::failure(FailureKind::agent_not_running, redact(r.message()));
        return Outcome<std::vector<NetInterface>>::success(parse_guest_interfaces(*r));
    }

  private:
    struct Exec {
        bool ok_ = false;
        std::vector<std::string> tail;
        bool ok() const { return ok_; }
    };

    std::string redact(const std::string& text) {
        std::lock_guard<std::mutex> lock(mutex_);
        return redact_secrets(text, secrets_);
    }

    void record(ApiCall call) {
        std::lock_guard<std::mutex> lock(mutex_);
        call.path = redact_secrets(call.path, secrets_);
        call.error = redact_secrets(call.error, secrets_);
        calls_.push_back(std::move(call));
    }

    // Runs one command; the receipt shows `what` and `shown` (never the argv: QEMU's carries the seed).
    Exec exec(const std::string& what, const std::vector<std::string>& argv, const std::string& shown) {
        ProcessRequest request;
        request.argv = argv;
        request.timeout = what == "backup" ? std::chrono::minutes(20) : std::chrono::minutes(2);
        {
            std::lock_guard<std::mutex> lock(mutex_);
            request.redact = secrets_;
        }
        const auto t0 = clock_.steady_now();
        auto r = runner_.run(request);
        ApiCall call = api("EXEC", what + " " + shown, 0);
        call.duration_ms = std::chrono::duration_cast<milliseconds>(clock_.steady_now() - t0).count();
        Exec e;
        if (!r) {
            call.error = r.message();
            e.tail = {redact(r.message())};
        } else if (r->exit_code != 0) {
            call.status = 500;
            call.error = argv[0] + (r->timed_out ? " timed out" : " exited " + std::to_string(r->exit_code));
            e.tail = tail_lines(redact(r->err.empty() ? r->out : r->err), 10);
        } else {
            call.status = 200;
            e.ok_ = true;
        }
        record(call);
        return e;
    }

    Outcome<VmState> template_state() {
        std::error_code ec;
        const fs::path image(o_.template_image);
        if (!fs::is_regular_file(image, ec)) {
            return Outcome<VmState>::failure(FailureKind::not_found,
                                             "template image " + o_.template_image +
                                                 " does not exist: bake it with "
                                                 "packaging/bake-template.sh (docs/packaging.md)");
        }
        for (const char* f : {"vmlinuz", "initrd.img"}) {
            if (!fs::is_regular_file(image.parent_path() / f, ec)) {
                return Outcome<VmState>::failure(FailureKind::not_found,
                                                 std::string("template image ") + o_.template_image + " has no " + f +
                                                     " beside it (the baked template's kernel)");
            }
        }
        VmState s;
        s.exists = true;
        s.is_template = true;
        s.name = image.filename().string();
        s.status = "stopped";
        return Outcome<VmState>::success(std::move(s));
    }

    Result<std::uint64_t> template_size() {
        ProcessRequest request;
        request.argv = {"qemu-img", "info", "--output=json", "-f", "qcow2", o_.template_image};
        request.timeout = std::chrono::seconds(30);
        auto r = runner_.run(request);
        if (!r) return r.error();
        if (r->exit_code != 0) return make_error("qemu-img info " + o_.template_image + ": " + r->err);
        json info = json::parse(r->out, nullptr, false);
        if (!info.is_object() || !info.contains("virtual-size") || !info["virtual-size"].is_number_unsigned()) {
            return make_error("qemu-img info " + o_.template_image + ": no virtual-size");
        }
        return info["virtual-size"].get<std::uint64_t>();
    }

    std::optional<QemuVm> load(std::int64_t vmid) {
        auto text = read_file(qemu_paths(o_.state_dir, vmid).vm_json, 1024 * 1024);
        if (!text) return std::nullopt;
        json j = json::parse(*text, nullptr, false);
        if (!j.is_object() || !j.contains("config") || !j["config"].is_object()) return std::nullopt;
        QemuVm vm;
        vm.vmid = vmid;
        vm.name = j.value("name", "");
        for (const auto& [k, v] : j["config"].items()) {
            if (v.is_string()) vm.config[k] = v.get<std::string>();
        }
        return vm;
    }

    Status save(const QemuVm& vm) {
        json j = {{"vmid", vm.vmid}, {"name", vm.name}, {"config", vm.config}};
        return write_file_atomic(qemu_paths(o_.state_dir, vm.vmid).vm_json, j.dump(2) + "\n", {0600, false});
    }

    static std::string digest(const QemuVm& vm) { return sha256_hex(json(vm.config).dump()).substr(0, 40); }

    // The PID of this VM's QEMU: from its pidfile or, once QEMU removed that while exiting, from vm.json;
    // only while that process is a QEMU running this VM's overlay (a reused PID is not ours).
    std::optional<int> running_pid(std::int64_t vmid) {
        const auto p = qemu_paths(o_.state_dir, vmid);
        int pid = 0;
        if (auto text = read_file(p.pidfile, 64)) pid = std::atoi(text->c_str());
        if (pid <= 0) {
            if (auto vm = load(vmid); vm && vm->config.count("pid")) pid = std::atoi(vm->config.at("pid").c_str());
        }
        auto cmd = procs_->cmdline(pid);
        if (pid <= 0 || !cmd || cmd->find(p.overlay) == std::string::npos) return std::nullopt;
        return pid;
    }

    bool wait_gone(std::int64_t vmid, milliseconds limit) {
        const auto deadline = clock_.steady_now() + limit;
        while (running_pid(vmid)) {
            if (clock_.steady_now() > deadline) return false;
            clock_.sleep_for(milliseconds(250));
        }
        return true;
    }

    Result<json> qga(std::int64_t vmid, const std::string& command) {
        QgaClient client(qemu_paths(o_.state_dir, vmid).qga, o_.qga_timeout);
        return client.call(command);
    }

    std::vector<std::string> console_tail(std::int64_t vmid) {
        auto text = read_file(qemu_paths(o_.state_dir, vmid).console, 16 * 1024 * 1024);
        return text ? tail_lines(redact(*text), 20) : std::vector<std::string>{};
    }

    QemuOptions o_;
    ProcessRunner& runner_;
    const Clock& clock_;
    std::unique_ptr<HostProcesses> procs_;
    std::optional<std::string> accel_;
    std::mutex mutex_;
    std::vector<ApiCall> calls_;
    std::vector<std::string> secrets_;
};

}  // namespace

std::unique_ptr<HostProcesses> make_host_processes() {
    return std::make_unique<RealHostProcesses>();
}

std::unique_ptr<Provider> make_qemu_provider(QemuOptions options, ProcessRunner& runner, const Clock& clock,
                                             std::unique_ptr<HostProcesses> processes) {
    return std::make_unique<QemuProvider>(std::move(options), runner, clock, std::move(processes));
}

}  // namespace nodeform::controller::providers
