// The qemu provider's pure parts: file layout, the -smbios argument, the NoCloud seed, QEMU's argv, the
// accelerator choice.
#include <algorithm>
#include <cctype>
#include <filesystem>

#include "nodeform/base64.hpp"
#include "nodeform/controller/providers/proxmox.hpp"
#include "nodeform/controller/providers/qemu.hpp"

namespace nodeform::controller::providers {

using json = nlohmann::json;

namespace {

// A value inside QEMU's key=value,... option syntax: commas doubled.
std::string qemu_escape(const std::string& value) {
    std::string out;
    for (char c : value) {
        out.push_back(c);
        if (c == ',') out.push_back(',');
    }
    return out;
}

std::string percent_decode(const std::string& text) {
    std::string out;
    for (std::size_t i = 0; i < text.size(); ++i) {
        if (text[i] == '%' && i + 2 < text.size() && std::isxdigit(static_cast<unsigned char>(text[i + 1])) &&
            std::isxdigit(static_cast<unsigned char>(text[i + 2]))) {
            out.push_back(static_cast<char>(std::stoi(text.substr(i + 1, 2), nullptr, 16)));
            i += 2;
        } else {
            out.push_back(text[i]);
        }
    }
    return out;
}

std::string config_value(const QemuVm& vm, const std::string& key, const std::string& fallback = "") {
    auto it = vm.config.find(key);
    return it == vm.config.end() ? fallback : it->second;
}

bool positive_integer(const std::string& s) {
    return !s.empty() && s.size() <= 9 &&
           std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; }) && s != "0";
}

}  // namespace

QemuPaths qemu_paths(const std::string& state_dir, std::int64_t vmid) {
    QemuPaths p;
    p.dir = state_dir + "/vm-" + std::to_string(vmid);
    p.overlay = p.dir + "/overlay.qcow2";
    p.seed = p.dir + "/seed.img";
    p.qga = p.dir + "/qga.sock";
    p.console = p.dir + "/console.log";
    p.pidfile = p.dir + "/qemu.pid";
    p.vm_json = p.dir + "/vm.json";
    return p;
}

Result<std::string> smbios_argument(const std::string& smbios1) {
    const auto fields = split_option_string(smbios1);
    bool base64 = false;
    for (const auto& [k, v] : fields) {
        if (k == "base64") base64 = v == "1";
    }
    std::string out = "type=1";
    for (const auto& [k, v] : fields) {
        if (k.empty() || k == "base64") continue;
        std::string value = v;
        if (base64 && k != "uuid") {
            auto decoded = base64_decode(v);
            if (!decoded) return make_error("smbios1: field '" + k + "' is not base64 although base64=1");
            value = *decoded;
        }
        for (unsigned char c : value) {
            if (c < 0x20 || c == 0x7f) return make_error("smbios1: field '" + k + "' holds a control character");
        }
        out += "," + k + "=" + qemu_escape(value);
    }
    return out;
}

std::string qemu_mac(std::int64_t vmid) {
    char mac[32];
    const auto v = static_cast<std::uint32_t>(vmid);
    std::snprintf(mac, sizeof mac, "52:54:00:%02x:%02x:%02x", (v >> 16) & 0xff, (v >> 8) & 0xff, v & 0xff);
    return mac;
}

Result<NoCloudFiles> nocloud_files(const QemuVm& vm, const std::string& mac) {
    NoCloudFiles f;
    const std::string uuid = [&] {
        for (const auto& [k, v] : split_option_string(config_value(vm, "smbios1")))
            if (k == "uuid") return v;
        return std::string("vm-") + std::to_string(vm.vmid);
    }();
    auto q = [](const std::string& s) { return json(s).dump(); };  // JSON strings are YAML scalars
    f.meta_data = "instance-id: " + q(uuid) + "\nlocal-hostname: " + q(vm.name) + "\n";

    std::string ud = "#cloud-config\nhostname: " + q(vm.name) + "\nmanage_etc_hosts: true\n";
    if (auto domain = config_value(vm, "searchdomain"); !domain.empty() && domain.find(' ') == std::string::npos) {
        ud += "fqdn: " + q(vm.name + "." + domain) + "\n";
    }
    if (auto user = config_value(vm, "ciuser"); !user.empty()) ud += "user: " + q(user) + "\n";
    if (auto keys = config_value(vm, "sshkeys"); !keys.empty()) {
        ud += "ssh_authorized_keys:\n";
        std::string all = percent_decode(keys);
        std::size_t start = 0;
        while (start < all.size()) {
            auto nl = all.find('\n', start);
            std::string key = all.substr(start, nl == std::string::npos ? std::string::npos : nl - start);
            if (!key.empty()) ud += "  - " + q(key) + "\n";
            if (nl == std::string::npos) break;
            start = nl + 1;
        }
    }
    ud += "chpasswd:\n  expire: false\nusers:\n  - default\n";
    f.user_data = ud;

    // network-config v1, matched on the NIC's MAC (qemu-server's NoCloud generator does the same).
    json subnet = {{"type", "dhcp"}};
    for (const auto& [k, v] : split_option_string(config_value(vm, "ipconfig0", "ip=dhcp"))) {
        if (k == "ip" && v != "dhcp") subnet = {{"type", "static"}, {"address", v}};
        if (k == "gw" && subnet["type"] == "static") subnet["gateway"] = v;
    }
    json iface = {{"type", "physical"}, {"name", "eth0"}, {"mac_address", mac}, {"subnets", json::array({subnet})}};
    json config = json::array({iface});
    auto words = [](const std::string& s) {
        json list = json::array();
        std::size_t start = 0;
        while (start < s.size()) {
            auto sp = s.find(' ', start);
            std::string w = s.substr(start, sp == std::string::npos ? std::string::npos : sp - start);
            if (!w.empty()) list.push_back(w);
            if (sp == std::string::npos) break;
            start = sp + 1;
        }
        return list;
    };
    json ns = words(config_value(vm, "nameserver"));
    json search = words(config_value(vm, "searchdomain"));
    if (!ns.empty() || !search.empty()) {
        config.push_back({{"type", "nameserver"}, {"address", ns}, {"search", search}});
    }
    f.network_config = json({{"version", 1}, {"config", config}}).dump(2) + "\n";
    return f;
}

Result<std::vector<std::string>> qemu_argv(const QemuOptions& options, const QemuVm& vm, const std::string& accel) {
    if (accel != "kvm" && accel != "tcg") return make_error("accelerator '" + accel + "' is neither kvm nor tcg");
    const std::string cores = config_value(vm, "cores", "1");
    const std::string memory = config_value(vm, "memory", "1024");
    if (!positive_integer(cores)) return make_error("cores '" + cores + "' is not a positive number");
    if (!positive_integer(memory)) return make_error("memory '" + memory + "' is not a positive number of MB");
    auto smbios = smbios_argument(config_value(vm, "smbios1"));
    if (!smbios) return smbios.error();
    const auto dir = std::filesystem::path(options.template_image).parent_path().string();
    const QemuPaths p = qemu_paths(options.state_dir, vm.vmid);
    return std::vector<std::string>{
        options.qemu_binary,
        "-name",
        qemu_escape(vm.name),
        "-accel",
        accel,
        "-cpu",
        accel == "kvm" ? "host" : "max",
        "-smp",
        cores,
        "-m",
        memory,
        "-nodefaults",
        "-display",
        "none",
        "-kernel",
        dir + "/vmlinuz",
        "-initrd",
        dir + "/initrd.img",
        "-append",
        "root=/dev/vda net.ifnames=0 console=ttyS0",
        "-drive",
        "file=" + qemu_escape(p.overlay) + ",format=qcow2,if=virtio",
        "-drive",
        "file=" + qemu_escape(p.seed) + ",format=raw,if=virtio,readonly=on",
        "-netdev",
        "user,id=net0",
        "-device",
        "virtio-net-pci,netdev=net0,mac=" + qemu_mac(vm.vmid),
        "-smbios",
        *smbios,
        "-chardev",
        "socket,path=" + qemu_escape(p.qga) + ",server=on,wait=off,id=qga0",
        "-device",
        "virtio-serial",
        "-device",
        "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
        "-chardev",
        "file,id=console0,path=" + qemu_escape(p.console),
        "-serial",
        "chardev:console0",
        "-pidfile",
        p.pidfile,
        "-daemonize",
    };
}

std::vector<std::string> kvm_probe_argv(const QemuOptions& options) {
    const auto dir = std::filesystem::path(options.template_image).parent_path().string();
    return {options.qemu_binary,
            "-accel",
            "kvm",
            "-cpu",
            "host",
            "-m",
            "256",
            "-nodefaults",
            "-display",
            "none",
            "-no-reboot",
            "-serial",
            "stdio",
            "-kernel",
            dir + "/vmlinuz",
            "-append",
            "console=ttyS0 panic=-1 root=/dev/nodeform-probe"};
}

std::string choose_accel(const QemuOptions& options, ProcessRunner& runner, bool kvm_device_exists) {
    if (options.accel == "kvm" || options.accel == "tcg") return options.accel;
    if (!kvm_device_exists) return "tcg";
    ProcessRequest request;
    request.argv = kvm_probe_argv(options);
    request.timeout = options.kvm_probe_timeout;  // the runner kills the probe at the deadline
    request.output_limit = 256 * 1024;
    auto r = runner.run(request);
    // A kernel that got as far as looking for its root file system has booted under KVM.
    if (r && !r->timed_out && r->out.find("Kernel panic") != std::string::npos) return "kvm";
    return "tcg";
}

}  // namespace nodeform::controller::providers
