// What the configure step writes into the VM's config: sizing, cloud-init fields and the seed in smbios1.
#include "nodeform/base64.hpp"
#include "nodeform/controller/lifecycle/lifecycle.hpp"
#include "nodeform/controller/providers/proxmox.hpp"

namespace nodeform::controller::lifecycle {
namespace {

using json = nlohmann::json;

std::string join(const json& list, const char* sep) {
    std::string out;
    if (!list.is_array()) return out;
    for (const auto& item : list) {
        if (!item.is_string()) continue;
        if (!out.empty()) out += sep;
        out += item.get<std::string>();
    }
    return out;
}

// Cloud-init values end up in YAML and config lines: refuse control characters and commas where
// Proxmox's own formats would split them.
bool plain_token(const std::string& s, bool allow_comma) {
    if (s.empty() || s.size() > 253) return false;
    for (unsigned char c : s) {
        if (c < 0x21 || c == 0x7f) return false;
        if (!allow_comma && c == ',') return false;
    }
    return true;
}

}  // namespace

Result<ConfigInputs> build_config(const site::Node& node, const providers::VmState& vm,
                                  const std::string& seed_compact) {
    ConfigInputs in;
    auto set = [&](const std::string& key, const std::string& value, const std::string& shown) {
        in.params[key] = value;
        in.shown[key] = shown;
    };
    auto set_plain = [&](const std::string& key, const std::string& value) { set(key, value, value); };

    const auto& sz = node.sizing;
    set_plain("cores", std::to_string(sz.cores));
    set_plain("memory", std::to_string(sz.memory_mb));
    set_plain("balloon", std::to_string(sz.balloon_mb));
    set_plain("agent", "1");
    set_plain("onboot", "1");
    if (!node.placement.tags.empty()) {
        std::string tags;
        for (const auto& t : node.placement.tags) {
            if (!plain_token(t, false)) return make_error("placement tag '" + t + "' is not a valid Proxmox tag");
            tags += (tags.empty() ? "" : ";") + t;
        }
        set_plain("tags", tags);
    }

    // The first user with sudo gets cloud-init's default user and every user's keys of that user.
    const json& resolved = node.resolved;
    if (resolved.contains("users") && resolved["users"].is_array()) {
        for (const auto& u : resolved["users"]) {
            if (!u.is_object() || !u.value("sudo", false) || u.value("state", "present") != "present") continue;
            std::string name = u.value("name", "");
            if (!plain_token(name, false)) return make_error("user name '" + name + "' cannot be a cloud-init user");
            set_plain("ciuser", name);
            std::vector<std::string> keys;
            if (u.contains("ssh_keys") && u["ssh_keys"].is_array()) {
                for (const auto& k : u["ssh_keys"]) {
                    if (k.is_string()) keys.push_back(k.get<std::string>());
                }
            }
            if (!keys.empty()) {
                set("sshkeys", providers::encode_sshkeys(keys), "[" + std::to_string(keys.size()) + " key(s)]");
            }
            break;
        }
    }

    // Network: ipconfig0 from the spec, DHCP otherwise.
    const json net = resolved.contains("network") ? resolved["network"] : json::object();
    std::string mode = net.is_object() ? net.value("mode", "dhcp") : "dhcp";
    if (mode == "static") {
        std::string address = net.value("address", "");
        std::string gateway = net.value("gateway", "");
        if (!plain_token(address, false))
            return make_error("network.address '" + address + "' is not an address/prefix");
        std::string v = "ip=" + address;
        if (!gateway.empty()) {
            if (!plain_token(gateway, false)) return make_error("network.gateway '" + gateway + "' is not an address");
            v += ",gw=" + gateway;
        }
        set_plain("ipconfig0", v);
    } else {
        set_plain("ipconfig0", "ip=dhcp");
    }
    if (net.is_object()) {
        std::string dns = join(net.value("dns", json::array()), " ");
        if (!dns.empty()) set_plain("nameserver", dns);
        std::string search = join(net.value("search", json::array()), " ");
        if (!search.empty()) set_plain("searchdomain", search);
    }
    if (!in.params.count("searchdomain") && resolved.contains("hostname") && resolved["hostname"].is_object()) {
        std::string domain = resolved["hostname"].value("domain", "");
        if (!domain.empty()) set_plain("searchdomain", domain);
    }

    // The bridge: keep the template's NIC model and MAC, change only bridge=.
    auto net0 = vm.config.find("net0");
    if (!node.placement.bridge.empty()) {
        std::string value;
        bool replaced = false;
        if (net0 != vm.config.end()) {
            for (const auto& [k, v] : providers::split_option_string(net0->second)) {
                std::string item = k.empty() ? v : k + "=" + v;
                if (k == "bridge") {
                    item = "bridge=" + node.placement.bridge;
                    replaced = true;
                }
                value += (value.empty() ? "" : ",") + item;
            }
        }
        if (value.empty()) value = "virtio";
        if (!replaced) value += ",bridge=" + node.placement.bridge;
        if (net0 == vm.config.end() || net0->second != value) set_plain("net0", value);
    }

    // The seed: SMBIOS type 1 serial, base64, keeping the VM's uuid.
    auto existing = vm.config.find("smbios1");
    auto smbios = providers::build_smbios1(existing == vm.config.end() ? "" : existing->second, seed_compact);
    if (!smbios) return smbios.error();
    std::string shown;
    for (const auto& [k, v] : providers::split_option_string(*smbios)) {
        shown += (shown.empty() ? "" : ",") + k + "=" + (k == "serial" ? std::string("[REDACTED seed]") : v);
    }
    set("smbios1", *smbios, shown);
    return in;
}

providers::VmState projected_clone(const providers::VmState& tmpl) {
    providers::VmState clone = tmpl;
    clone.is_template = false;
    clone.config.erase("template");
    std::string smbios1 = "uuid=00000000-0000-0000-0000-000000000000";
    auto it = tmpl.config.find("smbios1");
    if (it != tmpl.config.end()) {
        for (const auto& [k, v] : providers::split_option_string(it->second)) {
            if (k != "uuid") smbios1 += "," + (k.empty() ? v : k + "=" + v);
        }
    }
    clone.config["smbios1"] = smbios1;
    return clone;
}

}  // namespace nodeform::controller::lifecycle
