#pragma once
// The qemu provider: the Provider interface over local QEMU VMs on the controller's host (labs, development,
// CI, the demo). One directory per VM under the state directory: vm-VMID/{vm.json, overlay.qcow2, seed.img,
// qga.sock, console.log, qemu.pid}. The Proxmox settings the lifecycle writes (smbios1, cores, memory,
// ciuser, sshkeys, ipconfig0, ...) are kept in vm.json and turned into QEMU's argv at start.
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "nodeform/clock.hpp"
#include "nodeform/controller/providers/provider.hpp"
#include "nodeform/process.hpp"
#include "nodeform/result.hpp"

namespace nodeform::controller::providers {

// Processes on the host: reading one's command line and signalling it (the real one reads /proc).
class HostProcesses {
  public:
    virtual ~HostProcesses() = default;
    // The NUL-separated command line of a live process, nullopt when there is none with that PID.
    virtual std::optional<std::string> cmdline(int pid) = 0;
    virtual bool signal(int pid, int sig) = 0;  // kill(2); false when no such process
};
std::unique_ptr<HostProcesses> make_host_processes();

struct QemuOptions {
    std::string template_image;  // absolute path; vmlinuz and initrd.img beside it
    std::string state_dir;       // absolute path
    std::string accel = "auto";  // auto | kvm | tcg
    std::string qemu_binary = "qemu-system-x86_64";
    std::string kvm_device = "/dev/kvm";
    std::chrono::milliseconds kvm_probe_timeout{std::chrono::seconds(20)};  // the probe boot is killed after this
    std::chrono::milliseconds qga_timeout{std::chrono::seconds(5)};         // one guest-agent exchange
};

// The settings vm.json keeps for one VM (Proxmox's option names and encodings).
struct QemuVm {
    std::int64_t vmid = 0;
    std::string name;
    std::map<std::string, std::string> config;  // cores, memory, smbios1, ciuser, sshkeys, ipconfig0, virtio0, ...
};

// Paths of one VM's files.
struct QemuPaths {
    std::string dir, overlay, seed, qga, console, pidfile, vm_json;
};
QemuPaths qemu_paths(const std::string& state_dir, std::int64_t vmid);

// smbios1 ("uuid=U,serial=B64,base64=1") as QEMU's -smbios argument, as qemu-server builds it: base64 fields
// decoded, commas in values doubled. Err when a base64=1 field is not base64.
Result<std::string> smbios_argument(const std::string& smbios1);

// The NoCloud seed's files from the Proxmox cloud-init settings (ciuser, sshkeys, ipconfig0, nameserver,
// searchdomain), as qemu-server's NoCloud generator writes them. Values are JSON-quoted (valid YAML).
struct NoCloudFiles {
    std::string user_data, meta_data, network_config;
};
Result<NoCloudFiles> nocloud_files(const QemuVm& vm, const std::string& mac);

// The VM's MAC address (stable per VMID, QEMU's locally administered prefix 52:54:00).
std::string qemu_mac(std::int64_t vmid);

// The full qemu-system-x86_64 argv that starts the VM daemonized. accel is "kvm" or "tcg".
Result<std::vector<std::string>> qemu_argv(const QemuOptions& options, const QemuVm& vm, const std::string& accel);

// The probe: a kernel-only boot that must reach its root-mount panic within the timeout.
std::vector<std::string> kvm_probe_argv(const QemuOptions& options);
// Decides the accelerator: the explicit setting, else kvm when /dev/kvm exists and the probe boots, else tcg.
std::string choose_accel(const QemuOptions& options, ProcessRunner& runner, bool kvm_device_exists);

std::unique_ptr<Provider> make_qemu_provider(QemuOptions options, ProcessRunner& runner, const Clock& clock,
                                             std::unique_ptr<HostProcesses> processes = nullptr);

// The QEMU guest agent over its unix socket: guest-sync first (stale replies stay queued), then one command.
class QgaClient {
  public:
    QgaClient(std::string socket_path, std::chrono::milliseconds timeout);
    // The command's "return" value; Err with the agent's or the socket's message.
    Result<nlohmann::json> call(const std::string& command, const nlohmann::json& arguments = nlohmann::json());
    struct ExecResult {
        int exit_code = -1;
        std::string out, err;
    };
    // guest-exec + guest-exec-status until exited or `limit` passed (polled on `clock`).
    Result<ExecResult> exec(const std::vector<std::string>& argv, const Clock& clock, std::chrono::milliseconds limit);

  private:
    std::string path_;
    std::chrono::milliseconds timeout_;
};

}  // namespace nodeform::controller::providers
