#pragma once
// A Proxmox VE API stand-in for tests (never shipped): the subset of /api2/json the lifecycle uses,
// with real-format UPIDs, tasks that take time, locks, validation errors, and fault injection.
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "nodeform/http.hpp"

namespace nodeform::test {

struct PveStandinOptions {
    std::string token_id = "root@pam!nodeform";
    std::string token_secret = "0b3d9c2e-5f1a-4c6b-9d8e-7a6b5c4d3e2f";
    std::vector<std::string> nodes = {"pve1"};
    std::vector<std::string> storages = {"local", "local-lvm"};
    std::vector<std::string> bridges = {"vmbr0"};
    std::map<std::string, std::chrono::milliseconds> task_ms;  // by task type: qmclone qmresize qmstart ...
    std::chrono::milliseconds default_task_ms{30};
    std::chrono::milliseconds boot_ms{60};  // after start, until the guest agent answers
    std::string tls_cert_file;              // PEM chain: serve https when set
    std::string tls_key_file;
    std::string host = "127.0.0.1";
    int port = 0;  // 0 = any free port
    // QEMU-backed mode (e2e): when qemu_template is set, a started VM boots a real guest through the qemu
    // provider's launcher (an overlay of the template in qemu_state_dir), built from the smbios1, cloud-init
    // (ciuser, sshkeys, ipconfig0, ...) and sizing (cores, memory, disk size) settings the VM received; the
    // guest-agent calls go to its real guest agent. Empty (the default): simulated guests (boot_ms).
    std::string qemu_template;
    std::string qemu_state_dir;
    std::string qemu_accel = "auto";  // auto | kvm | tcg
};

class PveStandin {
  public:
    explicit PveStandin(PveStandinOptions options = {});
    ~PveStandin();
    PveStandin(const PveStandin&) = delete;
    PveStandin& operator=(const PveStandin&) = delete;

    int port() const;
    std::string base_url() const;  // http(s)://127.0.0.1:PORT
    const PveStandinOptions& options() const;

    // Inventory.
    void add_template(const std::string& node, std::int64_t vmid, const std::string& name, int disk_gb = 2);
    void add_vm(const std::string& node, std::int64_t vmid, const std::string& name, bool running);
    // Sets one raw config option (e.g. a template's smbios1 with manufacturer/product fields).
    void set_config(std::int64_t vmid, const std::string& key, const std::string& value);

    // Fault injection (each counts down per matching request/task).
    void inject_lock_timeouts(int count);                 // mutating VM calls: "can't lock file ... got timeout"
    void inject_no_worker(int count);                     // task-starting calls: "got no worker upid"
    void inject_get_errors(int count, int status = 500);  // any GET: 5xx burst
    void inject_task_failures(const std::string& type, int count, const std::string& exitstatus);
    // Clones whose worker (forked before qemu-server takes the locks) ends in "can't lock file ... got
    // timeout": the POST answers a UPID, the task fails, no VM is created.
    void inject_task_lock_timeouts(int count);
    // VMs started next whose guest powers off during boot, before the guest agent comes up.
    void inject_guest_stops(int count);
    void set_task_ms(const std::string& type, std::chrono::milliseconds duration);
    void set_boot_ms(std::chrono::milliseconds duration);

    // Inspection.
    bool vm_exists(std::int64_t vmid) const;
    nlohmann::json vm_config(std::int64_t vmid) const;  // null when absent
    std::string vm_status(std::int64_t vmid) const;     // running | stopped | ""
    int clone_requests(std::int64_t newid) const;       // accepted clone requests for this VMID
    int vm_count() const;                               // templates excluded
    int request_count() const;
    std::vector<std::string> request_log() const;  // "METHOD /path" lines
    std::vector<std::int64_t> backups() const;     // VMIDs backed up by vzdump
    void reset_request_log();

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

// A plain-HTTP client transport for loopback tests (https with pinning comes from make_http_transport).
std::unique_ptr<HttpTransport> make_loopback_transport(const std::string& base_url);

// The enrollment token of the seed a VM's config carries in `smbios1` (serial=BASE64,...); "" when there is none.
std::string seed_token_in_smbios1(const nlohmann::json& vm_config);

}  // namespace nodeform::test
