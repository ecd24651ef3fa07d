// Resolution: spec + posture + site defaults + secrets → the resolved spec (docs/resolved-spec.md).
// Runs only on a site that passed every check, so references exist and values are well-formed.
#include <algorithm>

#include <yaml-cpp/yaml.h>

#include "context.hpp"
#include "names.hpp"
#include "nodeform/canonical_json.hpp"

namespace nodeform::site::detail {
namespace {

void emit_yaml(YAML::Emitter& out, const Json& value) {
    switch (value.type()) {
        case Json::value_t::object:
            out << YAML::BeginMap;
            for (auto it = value.begin(); it != value.end(); ++it) {
                out << YAML::Key << it.key() << YAML::Value;
                emit_yaml(out, *it);
            }
            out << YAML::EndMap;
            break;
        case Json::value_t::array:
            out << YAML::BeginSeq;
            for (const auto& item : value)
                emit_yaml(out, item);
            out << YAML::EndSeq;
            break;
        case Json::value_t::string:
            out << YAML::DoubleQuoted << value.get<std::string>();
            break;
        case Json::value_t::boolean:
            out << (value.get<bool>() ? "true" : "false");
            break;
        case Json::value_t::null:
            out << YAML::Null;
            break;
        default:
            out << value.dump();
            break;
    }
}

// A compose document given as a mapping becomes YAML text (keys sorted, strings double-quoted).
std::string compose_text(const Json& compose) {
    if (compose.is_string()) return compose.get<std::string>();
    YAML::Emitter out;
    emit_yaml(out, compose);
    return std::string(out.c_str()) + "\n";
}

std::string mode4(const std::string& mode) {
    return mode.size() == 3 ? "0" + mode : mode;
}

Json package_list(const Json* list) {
    Json out = Json::array();
    if (list == nullptr || !list->is_array()) return out;
    for (const auto& item : *list) {
        if (item.is_string()) {
            out.push_back({{"name", item.get<std::string>()}, {"state", "present"}});
        } else {
            Json package = {{"name", string_at(item, "name")}, {"state", string_at(item, "state", "present")}};
            if (member(item, "version")) package["version"] = string_at(item, "version");
            if (const Json* hold = member(item, "hold"); hold != nullptr && hold->is_boolean()) package["hold"] = *hold;
            out.push_back(std::move(package));
        }
    }
    return out;
}

std::int64_t duration_or(const Json& object, const char* key, std::int64_t fallback) {
    return duration_at(object, key, fallback).value_or(fallback);
}

Sizing sizing_for(const Context& c, const Json& node) {
    Sizing sizing;
    auto apply = [&sizing](const Json& source) {
        if (auto v = int_at(source, "cores")) sizing.cores = static_cast<int>(*v);
        if (auto v = int_at(source, "memory_mb")) sizing.memory_mb = static_cast<int>(*v);
        if (auto v = int_at(source, "disk_gb")) sizing.disk_gb = static_cast<int>(*v);
        if (auto v = int_at(source, "balloon_mb")) sizing.balloon_mb = static_cast<int>(*v);
    };
    std::string preset = string_at(node, "preset");
    if (!preset.empty()) apply(c.presets.at(preset).json);
    if (const Json* overrides = member(node, "overrides")) apply(*overrides);
    return sizing;
}

}  // namespace

std::string render_sshd_config(const std::string& posture_name, const Json& ssh) {
    std::string root = "no";
    if (const Json* v = member(ssh, "permit_root_login")) {
        if (v->is_boolean()) root = v->get<bool>() ? "yes" : "no";
        if (v->is_string()) root = v->get<std::string>();
    }
    std::string out = "# Managed by nodeform from posture '" + posture_name + "'. Local changes are overwritten.\n";
    out += "Port " + std::to_string(int_at(ssh, "port").value_or(22)) + "\n";
    out += "PermitRootLogin " + root + "\n";
    out +=
        std::string("PasswordAuthentication ") + (bool_at(ssh, "password_authentication", false) ? "yes" : "no") + "\n";
    out += std::string("KbdInteractiveAuthentication ") +
           (bool_at(ssh, "password_authentication", false) ? "yes" : "no") + "\n";
    return out;
}

void resolve_site(Context& c, Site& site) {
    const Json& sj = c.site->json;
    SiteInfo& info = site.info;
    info.name = string_at(sj, "name");
    const Json& defaults = *member(sj, "defaults");
    info.domain = string_at(defaults, "domain");
    info.timezone = string_at(defaults, "timezone", "Etc/UTC");
    info.controller_url = string_at(*member(sj, "controller"), "url");
    info.naming.max_length = c.max_name_length;
    if (const Json* placement = member(sj, "placement"); placement && member(*placement, "sites")) {
        for (const auto& s : *member(*placement, "sites")) {
            Placement p;
            p.name = string_at(s, "name");
            p.vmid_min = int_at(s, "vmid_min").value_or(0);
            p.vmid_max = int_at(s, "vmid_max").value_or(0);
            for (const auto& h : *member(s, "hosts"))
                p.hosts.push_back(h.get<std::string>());
            info.placements.push_back(std::move(p));
        }
    }
    if (const Json* proxmox = member(sj, "proxmox"); proxmox && member(*proxmox, "endpoints")) {
        for (const auto& e : *member(*proxmox, "endpoints")) {
            ProxmoxEndpoint endpoint;
            endpoint.name = string_at(e, "name");
            endpoint.url = string_at(e, "url");
            endpoint.token_id = string_at(e, "token_id");
            endpoint.fingerprint = string_at(e, "fingerprint");
            endpoint.token_secret =
                lookup_secret(c, "proxmox", string_at(e, "token_secret", endpoint.name)).value_or("");
            info.proxmox.push_back(std::move(endpoint));
        }
    }

    Json node_digests = Json::object();
    for (const auto& [name, node_doc] : c.nodes) {
        const Json& nj = node_doc.json;
        Node node;
        node.name = name;
        node.type = string_at(nj, "type", "vm");
        node.spec_name = string_at(nj, "spec");
        node.preset_name = string_at(nj, "preset");
        node.sizing = sizing_for(c, nj);
        node.decommission = parse_decommission_policy(string_at(nj, "decommission"))
                                .value_or(DecommissionPolicy::requires_final_backup);
        if (const Json* qm = member(nj, "qemu"); qm && string_at(nj, "provider") == "qemu") {
            NodePlacement& p = node.placement;
            p.provider = "qemu";
            p.qemu.template_image = string_at(*qm, "template");
            p.qemu.state_dir = string_at(*qm, "state_dir");
            p.qemu.accel = string_at(*qm, "accel", "auto");
            p.pve_node = "local";
            p.site = "local";
            p.storage = p.qemu.state_dir;
            p.bridge = "user";
        } else if (const Json* px = member(nj, "proxmox")) {
            NodePlacement& p = node.placement;
            p.endpoint = string_at(*px, "endpoint");
            p.pve_node = string_at(*px, "node");
            p.site = string_at(*px, "site");
            if (p.site.empty()) {
                for (const auto& placement : info.placements) {
                    if (std::find(placement.hosts.begin(), placement.hosts.end(), p.pve_node) !=
                        placement.hosts.end()) {
                        p.site = placement.name;
                    }
                }
            }
            p.template_vmid = int_at(*px, "template_vmid").value_or(0);
            p.storage = string_at(*px, "storage");
            p.bridge = string_at(*px, "bridge");
            p.pool = string_at(*px, "pool");
            if (const Json* tags = member(*px, "tags")) {
                for (const auto& t : *tags)
                    p.tags.push_back(t.get<std::string>());
            }
            if (auto vmid = int_at(*px, "vmid")) p.vmid = *vmid;
        }

        const Json& spec = c.specs.at(node.spec_name).json;
        const Json& access = *member(spec, "access");
        node.posture_name = string_at(access, "posture");
        const Json& posture = c.postures.at(node.posture_name).json;
        const Json& auth = *member(posture, "auth");
        node.auth.method = parse_auth_method(string_at(auth, "method")).value_or(AuthMethod::node_token);
        if (const Json* cidrs = member(auth, "allowed_cidrs")) {
            for (const auto& cidr : *cidrs)
                node.auth.allowed_cidrs.push_back(cidr.get<std::string>());
        }
        if (node.auth.method == AuthMethod::site_token) {
            node.auth.site_token = lookup_secret(c, "", "site_token").value_or("");
        }

        Json r = Json::object();
        std::vector<std::string> secret_paths;
        r["schema_version"] = 1;
        r["identity"] = name;
        r["spec"] = node.spec_name;
        r["posture"] = node.posture_name;
        r["site"] = info.name;
        std::string hostname = name;
        std::string domain = info.domain;
        if (const Json* identity = member(spec, "identity")) {
            hostname = string_at(*identity, "hostname", hostname);
            domain = string_at(*identity, "domain", domain);
        }
        node.hostname = hostname;
        node.fqdn = hostname + "." + domain;
        r["hostname"] = {{"hostname", hostname}, {"domain", domain}, {"fqdn", node.fqdn}};
        r["timezone"] = info.timezone;
        if (const Json* locale = member(*member(c.site->json, "defaults"), "locale")) r["locale"] = *locale;

        const Json* network = member(nj, "network");
        if (network == nullptr) network = member(spec, "network");
        if (network == nullptr) {
            r["network"] = {{"mode", "dhcp"}};
        } else {
            Json n = {{"mode", "static"}, {"address", string_at(*network, "address")}};
            if (member(*network, "gateway")) n["gateway"] = string_at(*network, "gateway");
            n["dns"] = member(*network, "dns") ? *member(*network, "dns") : Json::array();
            n["search"] = member(*network, "search") ? *member(*network, "search") : Json::array({domain});
            r["network"] = n;
        }

        // Groups: declared ones, then every group a user names that is not declared.
        Json groups = Json::array();
        std::set<std::string> group_names;
        if (const Json* gs = member(access, "groups")) {
            for (const auto& g : *gs) {
                Json out = {{"name", string_at(g, "name")}, {"state", string_at(g, "state", "present")}};
                if (auto gid = int_at(g, "gid")) out["gid"] = *gid;
                group_names.insert(string_at(g, "name"));
                groups.push_back(out);
            }
        }
        bool nopasswd = member(posture, "sudo") ? bool_at(*member(posture, "sudo"), "nopasswd", false) : false;
        Json users = Json::array();
        if (const Json* us = member(access, "users")) {
            for (std::size_t i = 0; i < us->size(); ++i) {
                const Json& u = (*us)[i];
                std::string uname = string_at(u, "name");
                bool sudo = bool_at(u, "sudo", false);
                Json out = {{"name", uname},
                            {"shell", string_at(u, "shell", "/bin/bash")},
                            {"home", string_at(u, "home", "/home/" + uname)},
                            {"groups", member(u, "groups") ? *member(u, "groups") : Json::array()},
                            {"sudo", sudo},
                            {"sudo_nopasswd", sudo && nopasswd},
                            {"state", string_at(u, "state", "present")}};
                if (auto uid = int_at(u, "uid")) out["uid"] = *uid;
                Json keys = Json::array();
                if (const Json* ks = member(u, "ssh_keys")) {
                    for (const auto& k : *ks) {
                        secret_paths.push_back("/users/" + std::to_string(i) + "/ssh_keys/" +
                                               std::to_string(keys.size()));
                        keys.push_back(lookup_secret(c, "ssh_keys", k.get<std::string>()).value_or(""));
                    }
                }
                out["ssh_keys"] = keys;
                out["locked"] = bool_at(u, "locked", false);
                if (const Json* pw = member(u, "password"); pw != nullptr && pw->is_string()) {
                    secret_paths.push_back("/users/" + std::to_string(i) + "/password");
                    out["password"] = lookup_secret(c, "passwords", pw->get<std::string>()).value_or("");
                }
                for (const auto& g : out["groups"]) {
                    std::string gname = g.get<std::string>();
                    if (group_names.insert(gname).second) groups.push_back({{"name", gname}, {"state", "present"}});
                }
                users.push_back(out);
            }
        }
        r["groups"] = groups;
        r["users"] = users;

        const Json* platform = member(spec, "platform");
        const Json empty = Json::object();
        if (platform == nullptr) platform = &empty;
        Json packages = package_list(member(*platform, "packages"));
        std::set<std::string> package_names;
        for (const auto& p : packages)
            package_names.insert(p["name"].get<std::string>());
        for (const auto& p : package_list(member(posture, "packages"))) {
            if (package_names.insert(p["name"].get<std::string>()).second) packages.push_back(p);
        }
        r["packages"] = packages;

        Json files = Json::array();
        if (const Json* fs = member(*platform, "files")) {
            for (const auto& f : *fs) {
                Json restart = Json::array();
                if (const Json* rs = member(f, "restart")) {
                    for (const auto& unit : *rs)
                        restart.push_back(normalize_unit(unit.get<std::string>()));
                }
                Json file = {{"path", string_at(f, "path")},
                             {"content", string_at(f, "content")},
                             {"mode", mode4(string_at(f, "mode", "0644"))},
                             {"owner", string_at(f, "owner", "root")},
                             {"group", string_at(f, "group", "root")},
                             {"state", string_at(f, "state", "present")},
                             {"restart", restart}};
                if (bool_at(f, "template", false)) file["template"] = true;
                files.push_back(std::move(file));
            }
        }
        if (const Json* ssh = member(posture, "ssh")) {
            files.push_back({{"path", "/etc/ssh/sshd_config.d/50-nodeform.conf"},
                             {"content", render_sshd_config(node.posture_name, *ssh)},
                             {"mode", "0644"},
                             {"owner", "root"},
                             {"group", "root"},
                             {"state", "present"},
                             {"restart", Json::array({"ssh.service"})}});
        }
        r["files"] = files;

        Json apt_sources = Json::array();
        if (const Json* as = member(*platform, "apt_sources")) {
            for (const auto& a : *as) {
                Json source = {{"name", string_at(a, "name")}, {"state", string_at(a, "state", "present")}};
                if (string_at(a, "state", "present") == "present") {
                    for (const char* key : {"uris", "suites", "components", "architectures"})
                        source[key] = member(a, key) ? *member(a, key) : Json::array();
                    source["key"] = string_at(a, "key");
                }
                apt_sources.push_back(std::move(source));
            }
        }
        r["apt_sources"] = apt_sources;
        Json mounts = Json::array();
        if (const Json* ms = member(*platform, "mounts")) {
            for (const auto& m : *ms) {
                mounts.push_back({{"path", string_at(m, "path")},
                                  {"device", string_at(m, "device")},
                                  {"fstype", string_at(m, "fstype", "ext4")},
                                  {"options", string_at(m, "options", "defaults")},
                                  {"format", bool_at(m, "format", true)}});
            }
        }
        r["mounts"] = mounts;
        Json directories = Json::array();
        if (const Json* ds = member(*platform, "directories")) {
            for (const auto& d : *ds) {
                directories.push_back({{"path", string_at(d, "path")},
                                       {"mode", mode4(string_at(d, "mode", "0755"))},
                                       {"owner", string_at(d, "owner", "root")},
                                       {"group", string_at(d, "group", "root")},
                                       {"recursive", bool_at(d, "recursive", false)}});
            }
        }
        r["directories"] = directories;
        Json symlinks = Json::array();
        if (const Json* ls = member(*platform, "symlinks")) {
            for (const auto& l : *ls) {
                Json link = {{"path", string_at(l, "path")}, {"state", string_at(l, "state", "present")}};
                if (member(l, "target")) link["target"] = string_at(l, "target");
                symlinks.push_back(std::move(link));
            }
        }
        r["symlinks"] = symlinks;
        Json sysctl = Json::array();
        if (const Json* sc = member(*platform, "sysctl")) {
            for (auto it = sc->begin(); it != sc->end(); ++it) {  // keys in sorted order
                std::string value = it->is_string() ? it->get<std::string>() : std::to_string(it->get<std::int64_t>());
                sysctl.push_back({{"name", it.key()}, {"value", value}});
            }
        }
        r["sysctl"] = sysctl;
        Json modules = Json::array();
        if (const Json* ms = member(*platform, "kernel_modules")) {
            for (const auto& m : *ms)
                modules.push_back({{"name", m.get<std::string>()}});
        }
        r["kernel_modules"] = modules;
        if (const Json* up = member(*platform, "upgrade")) {
            r["upgrade"] = up->is_string() ? Json{{"policy", *up}, {"interval_s", 86400}}
                                           : Json{{"policy", string_at(*up, "policy", "none")},
                                                  {"interval_s", duration_or(*up, "interval", 86400)}};
        }
        Json timers = Json::array();
        if (const Json* ts = member(*platform, "timers")) {
            for (const auto& t : *ts) {
                std::string tname = string_at(t, "name");
                Json timer = {{"name", tname}, {"state", string_at(t, "state", "present")}};
                if (string_at(t, "state", "present") == "present") {
                    timer["on_calendar"] = string_at(t, "on_calendar");
                    timer["command"] = member(t, "command") ? *member(t, "command") : Json::array();
                    timer["user"] = string_at(t, "user", "root");
                    timer["description"] = string_at(t, "description", "nodeform timer " + tname);
                    timer["persistent"] = bool_at(t, "persistent", true);
                }
                timers.push_back(std::move(timer));
            }
        }
        r["timers"] = timers;

        Json services = Json::array();
        if (const Json* svc = member(*platform, "services")) {
            if (svc->is_object()) {
                for (const char* key : {"enable", "disable"}) {
                    bool on = std::string(key) == "enable";
                    if (const Json* list = member(*svc, key)) {
                        for (const auto& unit : *list) {
                            services.push_back(
                                {{"name", normalize_unit(unit.get<std::string>())}, {"enabled", on}, {"running", on}});
                        }
                    }
                }
            } else {
                for (const auto& item : *svc) {
                    if (item.is_string()) {
                        services.push_back(
                            {{"name", normalize_unit(item.get<std::string>())}, {"enabled", true}, {"running", true}});
                    } else {
                        bool enabled = bool_at(item, "enabled", true);
                        services.push_back({{"name", normalize_unit(string_at(item, "name"))},
                                            {"enabled", enabled},
                                            {"running", bool_at(item, "running", enabled)}});
                    }
                }
            }
        }
        r["services"] = services;

        Json stacks = Json::array();
        if (const Json* ss = member(*platform, "stacks")) {
            for (std::size_t i = 0; i < ss->size(); ++i) {
                const Json& s = (*ss)[i];
                if (string_at(s, "state", "present") == "absent") {
                    stacks.push_back({{"name", string_at(s, "name")},
                                      {"state", "absent"},
                                      {"remove_files", bool_at(s, "remove_files", false)}});
                    continue;
                }
                Json env = Json::object();
                if (const Json* e = member(s, "env")) {
                    for (auto it = e->begin(); it != e->end(); ++it) {
                        if (it->is_object()) {
                            secret_paths.push_back("/stacks/" + std::to_string(i) + "/env/" + pointer_escape(it.key()));
                            env[it.key()] = lookup_secret(c, "stack_env", string_at(*it, "secret")).value_or("");
                        } else if (it->is_string()) {
                            env[it.key()] = it->get<std::string>();
                        } else if (it->is_boolean()) {
                            env[it.key()] = it->get<bool>() ? "true" : "false";
                        } else {
                            env[it.key()] = std::to_string(it->get<std::int64_t>());
                        }
                    }
                }
                stacks.push_back({{"name", string_at(s, "name")},
                                  {"compose", compose_text(*member(s, "compose"))},
                                  {"env", env},
                                  {"state", "present"}});
            }
        }
        r["stacks"] = stacks;

        Json health = Json::array();
        if (const Json* hs = member(spec, "health")) {
            for (const auto& h : *hs) {
                std::string type = string_at(h, "type");
                Json out = {{"name", string_at(h, "name")},
                            {"type", type},
                            {"interval_s", duration_or(h, "interval", 30)},
                            {"timeout_s", duration_or(h, "timeout", 5)}};
                if (type == "systemd_unit") {
                    out["unit"] = normalize_unit(string_at(h, "unit"));
                } else if (type == "tcp") {
                    out["host"] = string_at(h, "host", "127.0.0.1");
                    out["port"] = int_at(h, "port").value_or(0);
                } else if (type == "http") {
                    out["url"] = string_at(h, "url");
                    out["expect_status"] = int_at(h, "expect_status").value_or(200);
                } else if (type == "disk_free") {
                    out["path"] = string_at(h, "path", "/");
                    // Neither threshold given: 10 %. min_free_mb alone is checked alone.
                    auto mb = int_at(h, "min_free_mb");
                    auto percent = int_at(h, "min_free_percent");
                    if (percent || !mb) out["min_free_percent"] = percent.value_or(10);
                    if (mb) out["min_free_mb"] = *mb;
                } else if (type == "command") {
                    out["argv"] = *member(h, "argv");
                }
                health.push_back(out);
            }
        }
        r["health"] = health;

        const Json* apply = member(spec, "apply");
        if (apply == nullptr) apply = &empty;
        r["apply"] = {{"trigger", string_at(*apply, "trigger", "schedule")},
                      {"interval_s", duration_or(*apply, "interval", 300)},
                      {"splay_s", duration_or(*apply, "splay", 60)},
                      {"drift", string_at(*apply, "drift", "remediate")}};

        std::sort(secret_paths.begin(), secret_paths.end());
        r["secret_paths"] = secret_paths;
        node.resolved = std::move(r);
        node.digest = canonical_digest(node.resolved);
        node_digests[name] = node.digest;
        site.nodes.emplace(name, std::move(node));
    }

    Json summary = {{"name", info.name},
                    {"domain", info.domain},
                    {"timezone", info.timezone},
                    {"controller_url", info.controller_url},
                    {"naming_max_length", info.naming.max_length},
                    {"nodes", node_digests}};
    Json placements = Json::array();
    for (const auto& p : info.placements) {
        placements.push_back(
            {{"name", p.name}, {"vmid_min", p.vmid_min}, {"vmid_max", p.vmid_max}, {"hosts", p.hosts}});
    }
    summary["placements"] = placements;
    Json endpoints = Json::array();
    for (const auto& e : info.proxmox) {
        // The token secret itself stays out: a digest must not let anyone test guesses of it.
        endpoints.push_back(
            {{"name", e.name}, {"url", e.url}, {"token_id", e.token_id}, {"fingerprint", e.fingerprint}});
    }
    summary["proxmox"] = endpoints;
    Json node_info = Json::object();
    for (const auto& [name, node] : site.nodes) {
        Json p = {{"endpoint", node.placement.endpoint}, {"pve_node", node.placement.pve_node},
                  {"site", node.placement.site},         {"template_vmid", node.placement.template_vmid},
                  {"storage", node.placement.storage},   {"bridge", node.placement.bridge},
                  {"pool", node.placement.pool},         {"tags", node.placement.tags}};
        if (node.placement.vmid) p["vmid"] = *node.placement.vmid;
        node_info[name] = {{"type", node.type},
                           {"preset", node.preset_name},
                           {"cores", node.sizing.cores},
                           {"memory_mb", node.sizing.memory_mb},
                           {"disk_gb", node.sizing.disk_gb},
                           {"balloon_mb", node.sizing.balloon_mb},
                           {"decommission", to_string(node.decommission)},
                           {"placement", p}};
    }
    summary["node_settings"] = node_info;
    site.digest = canonical_digest(summary);
}

}  // namespace nodeform::site::detail
