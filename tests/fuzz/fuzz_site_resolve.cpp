// libFuzzer: a whole site in memory → load_site_files (validation + resolution) → render.
// The input replaces one file of a small valid site: its first byte picks the file, the rest is the content;
// "\n===FILE path\n" separators in the rest add or replace more files. Checks: no crash, determinism,
// a valid result has a digest matching its resolved spec, and redaction removes every secret path.
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>

#include "nodeform/canonical_json.hpp"
#include "nodeform/site/site.hpp"

using namespace nodeform::site;

namespace {

std::map<std::string, std::string> base_site() {
    return {
        {"site.yaml",
         "schema_version: 1\nname: fz\ndefaults:\n  domain: fz.example.net\ncontroller:\n"
         "  url: https://127.0.0.1:8443\nplacement:\n  sites:\n    - name: a\n      vmid_min: 1000\n"
         "      vmid_max: 1999\n      hosts: [pve1]\nproxmox:\n  endpoints:\n    - name: pve\n"
         "      url: https://pve1:8006\n      token_id: a@pve!b\n      fingerprint: \"" +
             std::string(64, 'a') + "\"\n"},
        {"secrets.yaml",
         "ssh_keys:\n  k: \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFuzzFuzzFuzz k\"\nsite_token: "
         "\"0123456789abcdef0\"\nproxmox:\n  pve: t\nstack_env:\n  s: v\n"},
        {"postures/dev.yaml", "auth:\n  method: network\n  allowed_cidrs: [127.0.0.0/8]\nssh: {port: 22}\n"},
        {"presets/small.yaml", "cores: 1\nmemory_mb: 1024\ndisk_gb: 10\n"},
        {"specs/base.yaml",
         "schema_version: 1\naccess:\n  posture: dev\n  users: [{name: a, ssh_keys: [k]}]\n"
         "platform:\n  services: {enable: [cron]}\n  stacks:\n    - name: x\n"
         "      compose: {services: {a: {image: b}}}\n      env: {S: {secret: s}}\n"},
        {"nodes/n-1.yaml",
         "spec: base\npreset: small\nproxmox: {endpoint: pve, node: pve1, template_vmid: 9000, "
         "storage: s, bridge: b, vmid: 1001}\n"},
    };
}

const char* const kFiles[] = {"site.yaml",       "secrets.yaml",   "postures/dev.yaml", "presets/small.yaml",
                              "specs/base.yaml", "nodes/n-1.yaml", "nodes/n-2.yaml",    "specs/other.yaml"};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 1 || size > 64 * 1024) return 0;
    auto files = base_site();
    std::string rest(reinterpret_cast<const char*>(data) + 1, size - 1);
    std::string current = kFiles[data[0] % (sizeof kFiles / sizeof kFiles[0])];
    const std::string marker = "\n===FILE ";
    int added = 0;
    while (true) {
        std::size_t at = rest.find(marker);
        files[current] = rest.substr(0, at);
        if (at == std::string::npos || ++added > 8) break;
        std::size_t eol = rest.find('\n', at + marker.size());
        if (eol == std::string::npos) break;
        current = rest.substr(at + marker.size(), eol - at - marker.size());
        if (current.empty() || current[0] == '/' || current.find("..") != std::string::npos) return 0;
        rest = rest.substr(eol + 1);
    }
    LoadOptions options;
    options.getenv = [](const std::string& name) -> std::optional<std::string> {
        if (name == "FUZZ") return std::string("value");
        return std::nullopt;
    };
    LoadResult a = load_site_files(files, options);
    if (a.ok() != a.diagnostics.empty()) __builtin_trap();
    for (const auto& d : a.diagnostics)
        (void)d.to_string();
    if (!a.ok()) return 0;
    LoadResult b = load_site_files(files, options);
    if (!b.ok() || b.site->digest != a.site->digest) __builtin_trap();
    for (const auto& [name, node] : a.site->nodes) {
        if (node.digest != nodeform::canonical_digest(node.resolved)) __builtin_trap();
        nlohmann::json redacted = redact_resolved(node.resolved);
        for (const auto& p : node.resolved.at("secret_paths")) {
            if (redacted.at(nlohmann::json::json_pointer(p.get<std::string>())) != "[REDACTED]") __builtin_trap();
        }
        if (render_node(node, false) != render_node(b.site->nodes.at(name), false)) __builtin_trap();
    }
    return 0;
}
