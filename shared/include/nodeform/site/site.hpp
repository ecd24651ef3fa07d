#pragma once
// The site configuration (docs/site-config.md) loaded, validated and resolved.
// load_site() is a pure function of the directory's files (and the env:/file: secret sources).
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace nodeform::site {

// One problem in the site: printed as "FILE:LINE:COL: FIELD: MESSAGE" (FILE relative to the site dir).
struct Diagnostic {
    std::string file;
    int line = 0;       // 1-based; 0 when unknown
    int column = 0;     // 1-based; 0 when unknown
    std::string field;  // dotted path inside the file, e.g. "access.users[2].name"
    std::string message;
    std::string to_string() const;
};

struct NamingPolicy {
    int max_length = 63;
};

struct Placement {  // site.yaml placement.sites[]
    std::string name;
    std::int64_t vmid_min = 0;
    std::int64_t vmid_max = 0;
    std::vector<std::string> hosts;  // PVE node names that belong to this site
};

struct ProxmoxEndpoint {  // site.yaml proxmox.endpoints[]
    std::string name;
    std::string url;           // https://pve.example.net:8006
    std::string token_id;      // USER@REALM!TOKENID
    std::string token_secret;  // resolved from secrets.yaml (secret)
    std::string fingerprint;   // SHA-256 of the API certificate, hex with or without colons
};

struct SiteInfo {
    std::string name;
    std::string domain;
    std::string timezone;
    std::string controller_url;
    NamingPolicy naming;
    std::vector<Placement> placements;
    std::vector<ProxmoxEndpoint> proxmox;
};

struct Sizing {  // preset + the node's overrides
    int cores = 1;
    int memory_mb = 1024;
    int disk_gb = 10;
    int balloon_mb = 0;  // 0 = ballooning off
};

// provider: qemu — a local QEMU VM on the controller's host (docs/provisioning.md).
struct QemuPlacement {
    std::string template_image;  // absolute path of the baked qcow2; vmlinuz and initrd.img beside it
    std::string state_dir;       // absolute path; one vm-VMID directory per VM
    std::string accel = "auto";  // auto | kvm | tcg
};

// For provider qemu the Proxmox fields are fixed: pve_node and site "local", storage = qemu.state_dir,
// bridge "user" (QEMU user-mode networking), template_vmid 0 (the template image).
struct NodePlacement {
    std::string site;      // placement site name (found from pve_node)
    std::string endpoint;  // ProxmoxEndpoint.name
    std::string pve_node;
    std::int64_t template_vmid = 0;
    std::string storage;
    std::string bridge;
    std::string pool;  // may be empty
    std::vector<std::string> tags;
    std::optional<std::int64_t> vmid;  // fixed VMID, else allocated from the site's range
    std::string provider = "proxmox";  // proxmox | qemu (last: positional initializers stay valid)
    QemuPlacement qemu;                // provider qemu only
};

enum class AuthMethod { network, site_token, node_token };
enum class DecommissionPolicy { requires_final_backup, requires_migration_first, allow_immediate_destroy };

struct NodeAuth {
    AuthMethod method = AuthMethod::node_token;
    std::vector<std::string> allowed_cidrs;  // for AuthMethod::network
    std::string site_token;                  // for AuthMethod::site_token (secret)
};

struct Node {
    std::string name;  // the identity
    std::string type = "vm";
    std::string spec_name;
    std::string posture_name;
    std::string preset_name;
    Sizing sizing;
    NodePlacement placement;
    DecommissionPolicy decommission = DecommissionPolicy::requires_final_backup;
    NodeAuth auth;
    std::string hostname;     // resolved hostname (no domain)
    std::string fqdn;         // hostname.domain
    nlohmann::json resolved;  // the resolved spec (docs/resolved-spec.md), secrets included
    std::string digest;       // canonical_digest(resolved)
};

struct Site {
    std::string dir;
    SiteInfo info;
    std::map<std::string, Node> nodes;  // by identity
    std::string digest;                 // digest over every node's digest and the site info
};

struct LoadResult {
    std::optional<Site> site;             // set only when diagnostics is empty
    std::vector<Diagnostic> diagnostics;  // every error found, in file order
    bool ok() const { return site.has_value(); }
};

// Where env:NAME secret sources are read from; tests pass a fake.
struct LoadOptions {
    std::function<std::optional<std::string>(const std::string&)> getenv;  // empty = the process environment
};

LoadResult load_site(const std::string& dir);
LoadResult load_site(const std::string& dir, const LoadOptions& options);
// The same over files held in memory (relative path → content, e.g. "specs/web.yaml"); for tests and fuzzing.
// file: secrets resolve against these paths only.
LoadResult load_site_files(const std::map<std::string, std::string>& files, const LoadOptions& options = {});

// Diagnostics as JSON: [{"file","line","column","field","message"}...] (validate --json).
// A resolved spec (from the controller, a file or a cache) against shared/defs/resolved-spec.schema.json, the
// schema the resolver's output is tested against: one diagnostic per problem (file = source), none when it matches.
std::vector<Diagnostic> validate_resolved_spec(const nlohmann::json& spec, const std::string& source);

nlohmann::json diagnostics_to_json(const std::vector<Diagnostic>& diagnostics);

// What `render` prints: canonical JSON of the resolved spec (redacted unless reveal_secrets) and a newline.
std::string render_node(const Node& node, bool reveal_secrets);

// The resolved spec with every value that came from secrets.yaml replaced by "[REDACTED]".
nlohmann::json redact_resolved(const nlohmann::json& resolved);

// The names site files use; parse_* reads the same names.
const char* to_string(AuthMethod method);
const char* to_string(DecommissionPolicy policy);
std::optional<AuthMethod> parse_auth_method(std::string_view name);
std::optional<DecommissionPolicy> parse_decommission_policy(std::string_view name);

}  // namespace nodeform::site
