// Semantic checks: everything the JSON Schemas cannot say (formats, references, uniqueness, ranges).
// Every check tolerates documents that failed schema validation (wrong types are skipped, not re-reported).
#include <algorithm>
#include <cstdlib>

#include "context.hpp"
#include "names.hpp"
#include "nodeform/duration.hpp"
#include "nodeform/template.hpp"

namespace nodeform::site::detail {
namespace {

// Calls check(value) for a string at pointer and reports its reason at the value's position.
void expect(const Document& doc, std::vector<Diagnostic>& out, const std::string& pointer, const Json* value,
            const std::function<std::string(const std::string&)>& check) {
    if (value == nullptr || !value->is_string()) return;
    std::string why = check(value->get<std::string>());
    if (!why.empty()) out.push_back(doc.diag(pointer, quote_for_message(value->get<std::string>()) + " " + why));
}

std::string host_or_ip(const std::string& text) {
    if (check_ip(text).empty()) return {};
    if (check_domain(text).empty()) return {};
    return "is neither an IP address nor a host name";
}

std::string proxmox_name(const std::string& text) {
    for (char c : text) {
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
                  c == '.';
        if (!ok) return "may contain only letters, digits, '-', '_' and '.'";
    }
    return text.empty() ? "must not be empty" : "";
}

// A path on the controller's host that reaches QEMU's option syntax: absolute, normalized, printable, no comma.
std::string local_path(const std::string& text) {
    if (text.empty() || text[0] != '/') return "is not an absolute path";
    if (text == "/") return "is the root directory";
    for (unsigned char c : text) {
        if (c < 0x20 || c == 0x7f) return "contains a control character";
        if (c == ',') return "contains a comma (QEMU's option syntax would split it)";
    }
    if ((text + "/").find("/../") != std::string::npos || (text + "/").find("/./") != std::string::npos ||
        text.find("//") != std::string::npos) {
        return "is not a normalized path (no '.', '..' or '//')";
    }
    return {};
}

std::string proxmox_tag(const std::string& text) {
    for (char c : text) {
        bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '+' || c == '.';
        if (!ok) return "is not a Proxmox tag (lowercase letters, digits, '-', '_', '+', '.')";
    }
    return text.empty() ? "must not be empty" : "";
}

std::string token_id_check(const std::string& text) {
    std::size_t at = text.find('@');
    std::size_t bang = text.find('!');
    if (at == std::string::npos || bang == std::string::npos || at == 0 || bang < at + 2 || bang + 1 == text.size()) {
        return "must be USER@REALM!TOKENID";
    }
    for (char c : text) {
        unsigned char u = static_cast<unsigned char>(c);
        if (u <= 0x20 || u >= 0x7f) return "must be USER@REALM!TOKENID without spaces";
    }
    return {};
}

// Reports a duplicate of `name` (seen before at another pointer) inside one document.
struct UniqueNames {
    std::map<std::string, std::string> seen;  // name → first pointer
    void add(const Document& doc, std::vector<Diagnostic>& out, const std::string& name, const std::string& pointer,
             const char* what) {
        auto [it, inserted] = seen.emplace(name, pointer);
        if (!inserted) {
            Mark first = doc.mark_of(it->second);
            out.push_back(doc.diag(pointer, std::string("duplicate ") + what + " " + quote_for_message(name) +
                                                " (first defined at line " + std::to_string(first.line) + ")"));
        }
    }
};

void check_packages(const Document& doc, std::vector<Diagnostic>& out, const std::string& pointer, const Json* list) {
    if (list == nullptr || !list->is_array()) return;
    UniqueNames names;
    for (std::size_t i = 0; i < list->size(); ++i) {
        const Json& item = (*list)[i];
        std::string p = pointer_join(pointer, i);
        const Json* name = &item;
        if (item.is_object()) {
            name = member(item, "name");
            p = pointer_join(p, "name");
        }
        if (name == nullptr || !name->is_string()) continue;
        expect(doc, out, p, name, [](const std::string& s) { return check_package_name(s); });
        names.add(doc, out, name->get<std::string>(), p, "package");
        if (item.is_object()) {
            const std::string ip = pointer_join(pointer, i);
            expect(doc, out, ip + "/version", member(item, "version"),
                   [](const std::string& s) { return check_package_version(s); });
            if (string_at(item, "state", "present") == "absent" && (member(item, "version") || member(item, "hold")))
                out.push_back(doc.diag(ip, "version and hold have no effect with state absent; remove them"));
        }
    }
}

void check_network(Context& c, const Document& doc, const std::string& pointer, const Json* network) {
    if (network == nullptr || !network->is_object()) return;
    auto& out = c.diagnostics;
    const Json* address = member(*network, "address");
    expect(doc, out, pointer + "/address", address, [](const std::string& s) { return check_cidr(s, true); });
    const Json* gateway = member(*network, "gateway");
    expect(doc, out, pointer + "/gateway", gateway, [](const std::string& s) { return check_ip(s); });
    if (address != nullptr && address->is_string() && gateway != nullptr && gateway->is_string()) {
        bool v6a = address->get<std::string>().find(':') != std::string::npos;
        bool v6g = gateway->get<std::string>().find(':') != std::string::npos;
        if (v6a != v6g)
            out.push_back(doc.diag(pointer + "/gateway", "is not in the address family of network.address"));
    }
    if (const Json* dns = member(*network, "dns"); dns != nullptr && dns->is_array()) {
        for (std::size_t i = 0; i < dns->size(); ++i) {
            expect(doc, out, pointer_join(pointer + "/dns", i), &(*dns)[i],
                   [](const std::string& s) { return check_ip(s); });
        }
    }
    if (const Json* search = member(*network, "search"); search != nullptr && search->is_array()) {
        for (std::size_t i = 0; i < search->size(); ++i) {
            expect(doc, out, pointer_join(pointer + "/search", i), &(*search)[i],
                   [](const std::string& s) { return check_domain(s); });
        }
    }
}

// The document that j[key] names among documents (specs, presets, postures); a diagnostic at pointer when there is
// none.
const Document* referenced(const Document& doc, std::vector<Diagnostic>& out, const Json& j, const std::string& key,
                           const std::map<std::string, Document>& documents, const std::string& pointer) {
    const Json* ref = member(j, key.c_str());
    if (ref == nullptr || !ref->is_string()) return nullptr;
    const std::string& name = ref->get_ref<const std::string&>();
    auto it = documents.find(name);
    if (it != documents.end()) return &it->second;
    out.push_back(
        doc.diag(pointer, key + " " + quote_for_message(name) + " does not exist (no " + key + "s/" + name + ".yaml)"));
    return nullptr;
}

void check_duration(const Document& doc, std::vector<Diagnostic>& out, const std::string& pointer, const Json* v,
                    bool allow_zero = false) {
    if (v == nullptr || !v->is_string()) return;  // integers are range-checked by the schema
    auto seconds = duration_seconds(*v);
    if (!seconds) {
        out.push_back(doc.diag(pointer, quote_for_message(v->get<std::string>()) +
                                            " is not a duration: use seconds (30) or 30s, 5m, 1h, 1d (whole seconds, "
                                            "at most 7 days)"));
    } else if (*seconds == 0 && !allow_zero) {
        out.push_back(doc.diag(pointer, "must be longer than 0 seconds"));
    }
}

// platform.upgrade: a policy name or {policy, interval}; the interval at least an hour (apt is not a poll loop).
void check_upgrade(const Document& doc, std::vector<Diagnostic>& out, const Json* upgrade) {
    if (upgrade == nullptr) return;
    if (upgrade->is_string()) {
        const std::string& policy = upgrade->get_ref<const std::string&>();
        if (policy != "none" && policy != "security" && policy != "all") {
            out.push_back(doc.diag("/platform/upgrade",
                                   "unknown policy " + quote_for_message(policy) + "; use none, security or all"));
        }
        return;
    }
    if (!upgrade->is_object()) return;
    check_duration(doc, out, "/platform/upgrade/interval", member(*upgrade, "interval"));
    auto interval = duration_at(*upgrade, "interval", 86400);
    if (interval && *interval < 3600) {
        out.push_back(doc.diag("/platform/upgrade/interval", "interval " + std::to_string(*interval) +
                                                                 "s is shorter than 1h; upgrades run at most hourly"));
    }
}

void check_site_file(Context& c) {
    if (!c.site) return;
    const Document& doc = *c.site;
    const Json& j = doc.json;
    auto& out = c.diagnostics;
    expect(doc, out, "/name", member(j, "name"), [](const std::string& s) { return check_object_name(s); });
    if (const Json* defaults = member(j, "defaults")) {
        expect(doc, out, "/defaults/domain", member(*defaults, "domain"),
               [](const std::string& s) { return check_domain(s); });
        expect(doc, out, "/defaults/timezone", member(*defaults, "timezone"),
               [](const std::string& s) { return check_timezone(s); });
        expect(doc, out, "/defaults/locale", member(*defaults, "locale"),
               [](const std::string& s) { return check_locale(s); });
    }
    if (const Json* controller = member(j, "controller")) {
        expect(doc, out, "/controller/url", member(*controller, "url"),
               [](const std::string& s) { return check_url(s, false); });
    }
    if (const Json* naming = member(j, "naming")) {
        if (auto max = int_at(*naming, "max_length"); max && *max >= 1 && *max <= 63) {
            c.max_name_length = static_cast<int>(*max);
        }
    }
    // Placement sites: unique names, sane non-overlapping ranges, each host in one site.
    const Json* sites = member(j, "placement") ? member(*member(j, "placement"), "sites") : nullptr;
    if (sites != nullptr && sites->is_array()) {
        UniqueNames names;
        UniqueNames hosts;
        std::vector<std::tuple<std::int64_t, std::int64_t, std::string, std::string>> ranges;
        for (std::size_t i = 0; i < sites->size(); ++i) {
            const Json& s = (*sites)[i];
            if (!s.is_object()) continue;
            std::string p = pointer_join("/placement/sites", i);
            std::string name = string_at(s, "name");
            expect(doc, out, p + "/name", member(s, "name"), [](const std::string& x) { return check_object_name(x); });
            if (!name.empty()) names.add(doc, out, name, p + "/name", "placement site");
            auto lo = int_at(s, "vmid_min");
            auto hi = int_at(s, "vmid_max");
            if (lo && hi) {
                if (*lo > *hi) {
                    out.push_back(doc.diag(p + "/vmid_max", "vmid_max " + std::to_string(*hi) + " is below vmid_min " +
                                                                std::to_string(*lo)));
                } else {
                    for (const auto& [olo, ohi, oname, opointer] : ranges) {
                        if (*lo <= ohi && olo <= *hi) {
                            out.push_back(doc.diag(p + "/vmid_min",
                                                   "VMID range " + std::to_string(*lo) + "-" + std::to_string(*hi) +
                                                       " overlaps the range of site " + quote_for_message(oname)));
                            break;
                        }
                    }
                    ranges.emplace_back(*lo, *hi, name, p);
                }
            }
            if (const Json* h = member(s, "hosts"); h != nullptr && h->is_array()) {
                for (std::size_t k = 0; k < h->size(); ++k) {
                    std::string hp = pointer_join(p + "/hosts", k);
                    expect(doc, out, hp, &(*h)[k], [](const std::string& x) { return check_hostname(x, 63); });
                    if ((*h)[k].is_string()) hosts.add(doc, out, (*h)[k].get<std::string>(), hp, "Proxmox host");
                }
            }
        }
    }
    const Json* endpoints = member(j, "proxmox") ? member(*member(j, "proxmox"), "endpoints") : nullptr;
    if (endpoints != nullptr && endpoints->is_array()) {
        UniqueNames names;
        for (std::size_t i = 0; i < endpoints->size(); ++i) {
            const Json& e = (*endpoints)[i];
            if (!e.is_object()) continue;
            std::string p = pointer_join("/proxmox/endpoints", i);
            expect(doc, out, p + "/name", member(e, "name"), [](const std::string& x) { return check_object_name(x); });
            if (!string_at(e, "name").empty()) names.add(doc, out, string_at(e, "name"), p + "/name", "endpoint");
            expect(doc, out, p + "/url", member(e, "url"), [](const std::string& x) { return check_url(x, true); });
            expect(doc, out, p + "/token_id", member(e, "token_id"), token_id_check);
            expect(doc, out, p + "/fingerprint", member(e, "fingerprint"), check_fingerprint);
            const Json* ref = member(e, "token_secret");
            std::string key = ref != nullptr && ref->is_string() ? ref->get<std::string>() : string_at(e, "name");
            if (key.empty()) continue;
            bool missing = false;
            lookup_secret(c, "proxmox", key, &missing);
            if (missing) {
                out.push_back(doc.diag(ref != nullptr ? p + "/token_secret" : p + "/name",
                                       "secret " + quote_for_message(key) +
                                           " is not defined under 'proxmox' in secrets.yaml; add it there"));
            }
        }
    }
}

void check_posture(Context& c, const std::string& name, const Document& doc) {
    auto& out = c.diagnostics;
    const Json& j = doc.json;
    const Json* auth = member(j, "auth");
    if (auth != nullptr && auth->is_object()) {
        std::string method = string_at(*auth, "method");
        const Json* cidrs = member(*auth, "allowed_cidrs");
        if (method == "network") {
            if (cidrs == nullptr || !cidrs->is_array() || cidrs->empty()) {
                if (cidrs == nullptr || cidrs->is_array()) {
                    out.push_back(doc.diag("/auth/method", "auth.method network needs a non-empty auth.allowed_cidrs"));
                }
            }
        } else if (cidrs != nullptr && !method.empty()) {
            out.push_back(doc.diag("/auth/allowed_cidrs", "allowed_cidrs applies only to auth.method network", true));
        }
        if (cidrs != nullptr && cidrs->is_array()) {
            for (std::size_t i = 0; i < cidrs->size(); ++i) {
                expect(doc, out, pointer_join("/auth/allowed_cidrs", i), &(*cidrs)[i],
                       [](const std::string& s) { return check_cidr(s, false); });
            }
        }
        if (method == "site_token") {
            bool missing = false;
            lookup_secret(c, "", "site_token", &missing);
            if (missing) {
                out.push_back(doc.diag("/auth/method", "posture " + quote_for_message(name) +
                                                           " uses site_token but secrets.yaml has no site_token"));
            }
        }
    }
    check_packages(doc, out, "/packages", member(j, "packages"));
}

void check_preset(Context& c, const Document& doc) {
    auto memory = int_at(doc.json, "memory_mb");
    auto balloon = int_at(doc.json, "balloon_mb");
    if (memory && balloon && *balloon > *memory) {
        c.add(doc.diag("/balloon_mb",
                       "balloon_mb " + std::to_string(*balloon) + " is above memory_mb " + std::to_string(*memory)));
    }
}

void check_health(Context& c, const Document& doc, const Json* health) {
    if (health == nullptr || !health->is_array()) return;
    auto& out = c.diagnostics;
    static const std::map<std::string, std::vector<std::string>> kKeys = {
        {"systemd_unit", {"unit"}},
        {"tcp", {"host", "port"}},
        {"http", {"url", "expect_status"}},
        {"disk_free", {"path", "min_free_percent", "min_free_mb"}},
        {"command", {"argv"}},
    };
    static const std::map<std::string, std::string> kRequired = {
        {"systemd_unit", "unit"}, {"tcp", "port"}, {"http", "url"}, {"command", "argv"}};
    static const std::vector<std::string> kTypeKeys = {
        "unit", "host", "port", "url", "expect_status", "path", "min_free_percent", "min_free_mb", "argv"};
    UniqueNames names;
    for (std::size_t i = 0; i < health->size(); ++i) {
        const Json& h = (*health)[i];
        if (!h.is_object()) continue;
        std::string p = pointer_join("/health", i);
        expect(doc, out, p + "/name", member(h, "name"), [](const std::string& s) { return check_object_name(s); });
        if (!string_at(h, "name").empty()) names.add(doc, out, string_at(h, "name"), p + "/name", "health check");
        std::string type = string_at(h, "type");
        auto keys = kKeys.find(type);
        if (keys != kKeys.end()) {
            for (const auto& key : kTypeKeys) {
                bool allowed = std::find(keys->second.begin(), keys->second.end(), key) != keys->second.end();
                if (!allowed && h.contains(key)) {
                    out.push_back(
                        doc.diag(p + "/" + key, "key '" + key + "' does not apply to a " + type + " check", true));
                }
            }
            auto req = kRequired.find(type);
            if (req != kRequired.end() && !h.contains(req->second)) {
                out.push_back(doc.diag(p, "a " + type + " check needs '" + req->second + "'"));
            }
        }
        check_duration(doc, out, p + "/interval", member(h, "interval"));
        check_duration(doc, out, p + "/timeout", member(h, "timeout"));
        auto interval = duration_at(h, "interval", 30);
        auto timeout = duration_at(h, "timeout", 5);
        if (interval && timeout && *timeout > *interval) {
            out.push_back(doc.diag(p + "/timeout", "timeout " + std::to_string(*timeout) +
                                                       "s is longer than interval " + std::to_string(*interval) + "s"));
        }
        expect(doc, out, p + "/unit", member(h, "unit"), [](const std::string& s) { return check_unit_name(s); });
        expect(doc, out, p + "/host", member(h, "host"), host_or_ip);
        expect(doc, out, p + "/url", member(h, "url"), [](const std::string& s) { return check_url(s, false); });
        expect(doc, out, p + "/path", member(h, "path"), [](const std::string& s) { return check_absolute_path(s); });
        if (const Json* argv = member(h, "argv"); argv != nullptr && argv->is_array() && !argv->empty()) {
            expect(doc, out, p + "/argv/0", &(*argv)[0], [](const std::string& s) {
                std::string why = check_absolute_path(s);
                return why.empty() ? why : why + " (commands run without a shell: give the program's full path)";
            });
        }
    }
}

// platform.directories, symlinks, sysctl and kernel_modules.
void check_paths_and_kernel(const Document& doc, std::vector<Diagnostic>& out, const Json& platform) {
    auto absolute = [](const std::string& x) { return check_absolute_path(x); };
    auto unix_name = [](const std::string& x) { return check_unix_name(x); };
    if (const Json* sources = member(platform, "apt_sources"); sources != nullptr && sources->is_array()) {
        UniqueNames names;
        for (std::size_t i = 0; i < sources->size(); ++i) {
            const Json& a = (*sources)[i];
            if (!a.is_object()) continue;
            std::string p = pointer_join("/platform/apt_sources", i);
            expect(doc, out, p + "/name", member(a, "name"), [](const std::string& x) {
                std::string why = check_object_name(x);
                if (why.empty() && x.find('.') != std::string::npos) why = "must not contain '.'";
                return why;
            });
            if (!string_at(a, "name").empty()) names.add(doc, out, string_at(a, "name"), p + "/name", "apt source");
            if (string_at(a, "state", "present") != "present") continue;
            for (const char* key : {"uris", "suites", "key"}) {
                if (!a.contains(key))
                    out.push_back(doc.diag(p, std::string("an apt source with state present needs '") + key + "'"));
            }
            if (const Json* uris = member(a, "uris"); uris != nullptr && uris->is_array()) {
                for (std::size_t k = 0; k < uris->size(); ++k) {
                    expect(doc, out, pointer_join(p + "/uris", k), &(*uris)[k],
                           [](const std::string& x) { return check_url(x, false); });
                }
            }
            const Json* suites = member(a, "suites");
            bool flat = suites != nullptr && suites->is_array() && suites->size() == 1 && (*suites)[0].is_string() &&
                        !(*suites)[0].get<std::string>().empty() && (*suites)[0].get<std::string>().back() == '/';
            if (!flat && suites != nullptr && !a.contains("components"))
                out.push_back(doc.diag(p, "an apt source needs 'components' (unless its one suite ends in '/')"));
            expect(doc, out, p + "/key", member(a, "key"), [](const std::string& x) -> std::string {
                std::string t = x;
                while (!t.empty() && (t.back() == '\n' || t.back() == ' '))
                    t.pop_back();
                const std::string begin = "-----BEGIN PGP PUBLIC KEY BLOCK-----";
                const std::string end = "-----END PGP PUBLIC KEY BLOCK-----";
                if (t.rfind(begin, 0) != 0 || t.size() < end.size() ||
                    t.compare(t.size() - end.size(), end.size(), end) != 0)
                    return "is not an ASCII-armored OpenPGP public key (gpg --export --armor KEYID)";
                return {};
            });
        }
    }
    if (const Json* mounts = member(platform, "mounts"); mounts != nullptr && mounts->is_array()) {
        UniqueNames paths;
        UniqueNames devices;
        for (std::size_t i = 0; i < mounts->size(); ++i) {
            const Json& m = (*mounts)[i];
            if (!m.is_object()) continue;
            std::string p = pointer_join("/platform/mounts", i);
            expect(doc, out, p + "/path", member(m, "path"), absolute);
            if (string_at(m, "path") == "/")
                out.push_back(doc.diag(p + "/path", "the root filesystem cannot be managed"));
            if (!string_at(m, "path").empty()) paths.add(doc, out, string_at(m, "path"), p + "/path", "mount point");
            expect(doc, out, p + "/device", member(m, "device"), [](const std::string& x) -> std::string {
                std::string why = check_absolute_path(x);
                if (why.empty() && x.rfind("/dev/", 0) != 0) why = "must be a block device under /dev";
                return why;
            });
            if (!string_at(m, "device").empty()) devices.add(doc, out, string_at(m, "device"), p + "/device", "device");
            expect(doc, out, p + "/options", member(m, "options"), [](const std::string& x) -> std::string {
                for (char ch : x) {
                    bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                              std::string_view(",=_-.").find(ch) != std::string_view::npos;
                    if (!ok) return "must be mount(8) options (letters, digits, ',', '=', '_', '-', '.')";
                }
                return {};
            });
        }
    }
    if (const Json* dirs = member(platform, "directories"); dirs != nullptr && dirs->is_array()) {
        UniqueNames paths;
        for (std::size_t i = 0; i < dirs->size(); ++i) {
            const Json& d = (*dirs)[i];
            if (!d.is_object()) continue;
            std::string p = pointer_join("/platform/directories", i);
            expect(doc, out, p + "/path", member(d, "path"), absolute);
            if (string_at(d, "path") == "/")
                out.push_back(doc.diag(p + "/path", "the root directory cannot be managed"));
            if (!string_at(d, "path").empty()) paths.add(doc, out, string_at(d, "path"), p + "/path", "directory");
            expect(doc, out, p + "/mode", member(d, "mode"), [](const std::string& x) { return check_mode(x); });
            expect(doc, out, p + "/owner", member(d, "owner"), unix_name);
            expect(doc, out, p + "/group", member(d, "group"), unix_name);
        }
    }
    if (const Json* links = member(platform, "symlinks"); links != nullptr && links->is_array()) {
        UniqueNames paths;
        for (std::size_t i = 0; i < links->size(); ++i) {
            const Json& l = (*links)[i];
            if (!l.is_object()) continue;
            std::string p = pointer_join("/platform/symlinks", i);
            expect(doc, out, p + "/path", member(l, "path"), absolute);
            if (!string_at(l, "path").empty()) paths.add(doc, out, string_at(l, "path"), p + "/path", "symlink");
            bool present = string_at(l, "state", "present") == "present";
            if (present && !l.contains("target"))
                out.push_back(doc.diag(p, "a symlink with state present needs 'target'"));
            expect(doc, out, p + "/target", member(l, "target"), [](const std::string& x) -> std::string {
                for (unsigned char ch : x) {
                    if (ch < 0x20 || ch == 0x7f) return "contains a control character";
                }
                return {};
            });
        }
    }
    if (const Json* sysctl = member(platform, "sysctl"); sysctl != nullptr && sysctl->is_object()) {
        for (auto it = sysctl->begin(); it != sysctl->end(); ++it) {
            std::string p = pointer_join("/platform/sysctl", it.key());
            std::string why = check_sysctl_name(it.key());
            if (!why.empty()) out.push_back(doc.diag(p, quote_for_message(it.key()) + " " + why, true));
            expect(doc, out, p, &*it, [](const std::string& x) -> std::string {
                for (unsigned char ch : x) {
                    if (ch < 0x20 && ch != '\t') return "must be one line without control characters";
                }
                return {};
            });
        }
    }
    if (const Json* modules = member(platform, "kernel_modules"); modules != nullptr && modules->is_array()) {
        UniqueNames names;
        for (std::size_t i = 0; i < modules->size(); ++i) {
            std::string p = pointer_join("/platform/kernel_modules", i);
            expect(doc, out, p, &(*modules)[i], [](const std::string& x) { return check_module_name(x); });
            if ((*modules)[i].is_string()) names.add(doc, out, (*modules)[i].get<std::string>(), p, "kernel module");
        }
    }
}

void check_timers(const Document& doc, std::vector<Diagnostic>& out, const Json* timers) {
    if (timers == nullptr || !timers->is_array()) return;
    UniqueNames names;
    for (std::size_t i = 0; i < timers->size(); ++i) {
        const Json& t = (*timers)[i];
        if (!t.is_object()) continue;
        std::string p = pointer_join("/platform/timers", i);
        expect(doc, out, p + "/name", member(t, "name"), [](const std::string& x) {
            std::string why = check_object_name(x);
            if (why.empty() && x.find('.') != std::string::npos) why = "must not contain '.'";
            return why;
        });
        if (!string_at(t, "name").empty()) names.add(doc, out, string_at(t, "name"), p + "/name", "timer");
        if (string_at(t, "state", "present") == "present") {
            if (!t.contains("on_calendar")) out.push_back(doc.diag(p, "a timer needs 'on_calendar'"));
            if (!t.contains("command")) out.push_back(doc.diag(p, "a timer needs 'command'"));
        }
        expect(doc, out, p + "/on_calendar", member(t, "on_calendar"), [](const std::string& x) -> std::string {
            for (char ch : x) {
                bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                          std::string_view(" *:,./~+-_").find(ch) != std::string_view::npos;
                if (!ok) return "is not a systemd calendar expression (e.g. 'daily', 'Mon *-*-* 03:00')";
            }
            return {};
        });
        expect(doc, out, p + "/user", member(t, "user"), [](const std::string& x) { return check_unix_name(x); });
        if (const Json* argv = member(t, "command"); argv != nullptr && argv->is_array() && !argv->empty()) {
            expect(doc, out, p + "/command/0", &(*argv)[0], [](const std::string& x) {
                std::string why = check_absolute_path(x);
                return why.empty() ? why : why + " (commands run without a shell: give the program's full path)";
            });
            for (std::size_t k = 0; k < argv->size(); ++k) {
                expect(doc, out, pointer_join(p + "/command", k), &(*argv)[k], [](const std::string& x) -> std::string {
                    for (unsigned char ch : x) {
                        if (ch < 0x20 || ch == 0x7f) return "contains a control character";
                    }
                    return {};
                });
            }
        }
    }
}

void check_spec(Context& c, const std::string& name, const Document& doc) {
    auto& out = c.diagnostics;
    const Json& j = doc.json;
    (void)name;
    if (const Json* identity = member(j, "identity")) {
        int max = c.max_name_length;
        expect(doc, out, "/identity/hostname", member(*identity, "hostname"),
               [max](const std::string& s) { return check_hostname(s, max); });
        expect(doc, out, "/identity/domain", member(*identity, "domain"),
               [](const std::string& s) { return check_domain(s); });
    }
    check_network(c, doc, "/network", member(j, "network"));

    const Json* access = member(j, "access");
    std::set<std::string> declared_groups;
    std::set<std::string> absent_groups;
    if (access != nullptr && access->is_object()) {
        referenced(doc, out, *access, "posture", c.postures, "/access/posture");
        if (const Json* groups = member(*access, "groups"); groups != nullptr && groups->is_array()) {
            UniqueNames names;
            UniqueNames gids;
            for (std::size_t i = 0; i < groups->size(); ++i) {
                const Json& g = (*groups)[i];
                if (!g.is_object()) continue;
                std::string p = pointer_join("/access/groups", i);
                expect(doc, out, p + "/name", member(g, "name"),
                       [](const std::string& s) { return check_unix_name(s); });
                std::string gname = string_at(g, "name");
                if (!gname.empty()) {
                    names.add(doc, out, gname, p + "/name", "group");
                    declared_groups.insert(gname);
                    if (string_at(g, "state", "present") == "absent") absent_groups.insert(gname);
                }
                if (auto gid = int_at(g, "gid")) gids.add(doc, out, std::to_string(*gid), p + "/gid", "gid");
            }
        }
        if (const Json* users = member(*access, "users"); users != nullptr && users->is_array()) {
            UniqueNames names;
            UniqueNames uids;
            for (std::size_t i = 0; i < users->size(); ++i) {
                const Json& u = (*users)[i];
                if (!u.is_object()) continue;
                std::string p = pointer_join("/access/users", i);
                expect(doc, out, p + "/name", member(u, "name"),
                       [](const std::string& s) { return check_unix_name(s); });
                if (!string_at(u, "name").empty()) names.add(doc, out, string_at(u, "name"), p + "/name", "user");
                if (auto uid = int_at(u, "uid")) uids.add(doc, out, std::to_string(*uid), p + "/uid", "uid");
                expect(doc, out, p + "/shell", member(u, "shell"),
                       [](const std::string& s) { return check_absolute_path(s); });
                expect(doc, out, p + "/home", member(u, "home"),
                       [](const std::string& s) { return check_absolute_path(s); });
                if (const Json* gs = member(u, "groups"); gs != nullptr && gs->is_array()) {
                    UniqueNames user_groups;
                    for (std::size_t k = 0; k < gs->size(); ++k) {
                        std::string gp = pointer_join(p + "/groups", k);
                        expect(doc, out, gp, &(*gs)[k], [](const std::string& s) { return check_unix_name(s); });
                        if (!(*gs)[k].is_string()) continue;
                        std::string g = (*gs)[k].get<std::string>();
                        user_groups.add(doc, out, g, gp, "group");
                        if (absent_groups.count(g) != 0 && string_at(u, "state", "present") == "present") {
                            out.push_back(doc.diag(gp, "group " + quote_for_message(g) +
                                                           " is declared with state absent in access.groups"));
                        }
                    }
                }
                if (const Json* pw = member(u, "password"); pw != nullptr && pw->is_string()) {
                    bool missing = false;
                    auto hash = lookup_secret(c, "passwords", pw->get<std::string>(), &missing);
                    if (missing) {
                        out.push_back(
                            doc.diag(p + "/password", "password " + quote_for_message(pw->get<std::string>()) +
                                                          " is not defined under 'passwords' in secrets.yaml"));
                    } else if (hash && !check_password_hash(*hash).empty()) {
                        out.push_back(doc.diag(p + "/password", "secrets.yaml passwords." + pw->get<std::string>() +
                                                                    " " + check_password_hash(*hash)));
                    }
                }
                if (const Json* keys = member(u, "ssh_keys"); keys != nullptr && keys->is_array()) {
                    for (std::size_t k = 0; k < keys->size(); ++k) {
                        if (!(*keys)[k].is_string()) continue;
                        std::string id = (*keys)[k].get<std::string>();
                        bool missing = false;
                        lookup_secret(c, "ssh_keys", id, &missing);
                        if (missing) {
                            out.push_back(doc.diag(pointer_join(p + "/ssh_keys", k),
                                                   "ssh key " + quote_for_message(id) +
                                                       " is not defined under 'ssh_keys' in secrets.yaml"));
                        }
                    }
                }
            }
        }
    }

    const Json* platform = member(j, "platform");
    std::set<std::string> services;
    if (platform != nullptr && platform->is_object()) {
        check_packages(doc, out, "/platform/packages", member(*platform, "packages"));
        check_upgrade(doc, out, member(*platform, "upgrade"));
        const Json* svc = member(*platform, "services");
        UniqueNames unit_names;
        auto add_unit = [&](const Json* value, const std::string& p) {
            if (value == nullptr || !value->is_string()) return;
            std::string unit = value->get<std::string>();
            std::string why = check_unit_name(unit);
            if (!why.empty()) {
                out.push_back(doc.diag(p, quote_for_message(unit) + " " + why));
                return;
            }
            std::string normal = normalize_unit(unit);
            services.insert(normal);
            unit_names.add(doc, out, normal, p, "service");
        };
        if (svc != nullptr && svc->is_object()) {
            for (const char* key : {"enable", "disable"}) {
                const Json* list = member(*svc, key);
                if (list == nullptr || !list->is_array()) continue;
                for (std::size_t i = 0; i < list->size(); ++i) {
                    add_unit(&(*list)[i], pointer_join(std::string("/platform/services/") + key, i));
                }
            }
        } else if (svc != nullptr && svc->is_array()) {
            for (std::size_t i = 0; i < svc->size(); ++i) {
                const Json& item = (*svc)[i];
                std::string p = pointer_join("/platform/services", i);
                if (item.is_object()) {
                    add_unit(member(item, "name"), p + "/name");
                    if (!bool_at(item, "enabled", true) && bool_at(item, "running", false)) {
                        // A disabled unit may still run (started by another unit); allowed.
                    }
                } else {
                    add_unit(&item, p);
                }
            }
        }
        if (const Json* files = member(*platform, "files"); files != nullptr && files->is_array()) {
            UniqueNames paths;
            for (std::size_t i = 0; i < files->size(); ++i) {
                const Json& f = (*files)[i];
                if (!f.is_object()) continue;
                std::string p = pointer_join("/platform/files", i);
                expect(doc, out, p + "/path", member(f, "path"),
                       [](const std::string& s) { return check_absolute_path(s); });
                if (!string_at(f, "path").empty()) paths.add(doc, out, string_at(f, "path"), p + "/path", "file");
                if (string_at(f, "path") == "/etc/ssh/sshd_config.d/50-nodeform.conf") {
                    out.push_back(doc.diag(p + "/path",
                                           "this path is written from the posture's ssh block; "
                                           "change the posture instead"));
                }
                expect(doc, out, p + "/mode", member(f, "mode"), [](const std::string& s) { return check_mode(s); });
                expect(doc, out, p + "/owner", member(f, "owner"),
                       [](const std::string& s) { return check_unix_name(s); });
                expect(doc, out, p + "/group", member(f, "group"),
                       [](const std::string& s) { return check_unix_name(s); });
                std::string state = string_at(f, "state", "present");
                if (state == "present" && !f.contains("content")) {
                    out.push_back(doc.diag(p, "a file with state present needs 'content'"));
                }
                if (state == "absent" && f.contains("content")) {
                    out.push_back(doc.diag(p + "/content", "content has no effect with state absent; remove it", true));
                }
                if (bool_at(f, "template", false)) {
                    if (const Json* content = member(f, "content"); content != nullptr && content->is_string()) {
                        auto used = template_facts_used(content->get<std::string>());
                        if (!used) out.push_back(doc.diag(p + "/content", "template " + used.message()));
                    }
                }
                if (const Json* restart = member(f, "restart"); restart != nullptr && restart->is_array()) {
                    for (std::size_t k = 0; k < restart->size(); ++k) {
                        const Json& r = (*restart)[k];
                        if (!r.is_string()) continue;
                        std::string rp = pointer_join(p + "/restart", k);
                        std::string unit = r.get<std::string>();
                        std::string why = check_unit_name(unit);
                        if (!why.empty()) {
                            out.push_back(doc.diag(rp, quote_for_message(unit) + " " + why));
                        } else if (services.count(normalize_unit(unit)) == 0) {
                            out.push_back(doc.diag(rp, "restarts " + quote_for_message(normalize_unit(unit)) +
                                                           ", which is not listed in platform.services"));
                        }
                    }
                }
            }
        }
        check_paths_and_kernel(doc, out, *platform);
        check_timers(doc, out, member(*platform, "timers"));
        if (const Json* stacks = member(*platform, "stacks"); stacks != nullptr && stacks->is_array()) {
            UniqueNames names;
            for (std::size_t i = 0; i < stacks->size(); ++i) {
                const Json& s = (*stacks)[i];
                if (!s.is_object()) continue;
                std::string p = pointer_join("/platform/stacks", i);
                expect(doc, out, p + "/name", member(s, "name"), [](const std::string& x) {
                    std::string why = check_object_name(x);
                    if (why.empty() && x.find('.') != std::string::npos) why = "must not contain '.'";
                    return why;
                });
                if (!string_at(s, "name").empty()) names.add(doc, out, string_at(s, "name"), p + "/name", "stack");
                const Json* compose = member(s, "compose");
                if (string_at(s, "state", "present") == "present" && compose == nullptr) {
                    out.push_back(doc.diag(p, "a stack with state present needs 'compose'"));
                }
                if (string_at(s, "state", "present") == "absent" && compose != nullptr) {
                    out.push_back(doc.diag(p + "/compose", "compose has no effect with state absent; remove it", true));
                }
                if (member(s, "remove_files") && string_at(s, "state", "present") != "absent") {
                    out.push_back(doc.diag(p + "/remove_files", "remove_files applies only with state absent", true));
                }
                if (compose != nullptr && compose->is_string() &&
                    compose->get<std::string>().find_first_not_of(" \t\r\n") == std::string::npos) {
                    out.push_back(doc.diag(p + "/compose", "the compose document is empty"));
                }
                if (compose != nullptr && compose->is_object() && !compose->contains("services")) {
                    out.push_back(doc.diag(p + "/compose", "the compose document has no 'services'"));
                }
                const Json* env = member(s, "env");
                if (env == nullptr || !env->is_object()) continue;
                for (auto it = env->begin(); it != env->end(); ++it) {
                    std::string ep = pointer_join(p + "/env", it.key());
                    std::string why = check_env_name(it.key());
                    if (!why.empty())
                        out.push_back(doc.diag(ep, "variable name " + quote_for_message(it.key()) + " " + why, true));
                    if (it->is_object()) {
                        const Json* ref = member(*it, "secret");
                        if (ref == nullptr || !ref->is_string()) continue;
                        bool missing = false;
                        lookup_secret(c, "stack_env", ref->get<std::string>(), &missing);
                        if (missing) {
                            out.push_back(
                                doc.diag(ep + "/secret", "secret " + quote_for_message(ref->get<std::string>()) +
                                                             " is not defined under 'stack_env' in secrets.yaml"));
                        }
                    }
                }
            }
        }
    }
    check_health(c, doc, member(j, "health"));
    if (const Json* apply = member(j, "apply"); apply != nullptr && apply->is_object()) {
        check_duration(doc, out, "/apply/interval", member(*apply, "interval"));
        check_duration(doc, out, "/apply/splay", member(*apply, "splay"), true);
        auto interval = duration_at(*apply, "interval", 300);
        auto splay = duration_at(*apply, "splay", 60);
        if (interval && splay && *splay > *interval) {
            out.push_back(doc.diag("/apply/splay", "splay " + std::to_string(*splay) + "s is longer than interval " +
                                                       std::to_string(*interval) + "s"));
        }
    }
}

// The placement site a node's Proxmox placement belongs to, with the pointer of its entry.
const Json* find_placement_site(const Context& c, const std::string& name) {
    if (!c.site) return nullptr;
    const Json* placement = member(c.site->json, "placement");
    const Json* sites = placement ? member(*placement, "sites") : nullptr;
    if (sites == nullptr || !sites->is_array()) return nullptr;
    for (const auto& s : *sites) {
        if (s.is_object() && string_at(s, "name") == name) return &s;
    }
    return nullptr;
}

const Json* find_site_for_host(const Context& c, const std::string& host) {
    if (!c.site) return nullptr;
    const Json* placement = member(c.site->json, "placement");
    const Json* sites = placement ? member(*placement, "sites") : nullptr;
    if (sites == nullptr || !sites->is_array()) return nullptr;
    for (const auto& s : *sites) {
        const Json* hosts = s.is_object() ? member(s, "hosts") : nullptr;
        if (hosts == nullptr || !hosts->is_array()) continue;
        for (const auto& h : *hosts) {
            if (h.is_string() && h.get<std::string>() == host) return &s;
        }
    }
    return nullptr;
}

bool has_endpoint(const Context& c, const std::string& name) {
    if (!c.site) return false;
    const Json* proxmox = member(c.site->json, "proxmox");
    const Json* endpoints = proxmox ? member(*proxmox, "endpoints") : nullptr;
    if (endpoints == nullptr || !endpoints->is_array()) return false;
    for (const auto& e : *endpoints) {
        if (e.is_object() && string_at(e, "name") == name) return true;
    }
    return false;
}

void check_nodes(Context& c) {
    auto& out = c.diagnostics;
    std::map<std::int64_t, std::string> vmids;     // vmid → node
    std::map<std::string, std::string> hostnames;  // fqdn → node
    std::map<std::string, std::string> addresses;  // ip → node
    for (const auto& [name, doc] : c.nodes) {
        const Json& j = doc.json;
        std::string why = check_hostname(name, c.max_name_length);
        if (!why.empty()) {
            c.add({doc.file, 1, 1, "", "node name " + quote_for_message(name) + " (from the file name) " + why});
        }
        if (string_at(j, "type") == "ct") {
            out.push_back(doc.diag("/type", "type 'ct' (containers) is reserved and not supported yet; use 'vm'"));
        }
        const Document* spec = referenced(doc, out, j, "spec", c.specs, "/spec");
        const Document* preset = referenced(doc, out, j, "preset", c.presets, "/preset");
        if (const Json* overrides = member(j, "overrides"); overrides != nullptr && overrides->is_object()) {
            auto memory = int_at(*overrides, "memory_mb");
            if (!memory && preset != nullptr) memory = int_at(preset->json, "memory_mb");
            auto balloon = int_at(*overrides, "balloon_mb");
            if (!balloon && preset != nullptr) balloon = int_at(preset->json, "balloon_mb");
            if (memory && balloon && *balloon > *memory) {
                out.push_back(doc.diag("/overrides", "balloon_mb " + std::to_string(*balloon) + " is above memory_mb " +
                                                         std::to_string(*memory)));
            }
        }
        check_network(c, doc, "/network", member(j, "network"));

        // Hostname and static address must be unique across nodes.
        std::string hostname = name;
        std::string domain;
        if (c.site) {
            if (const Json* defaults = member(c.site->json, "defaults")) domain = string_at(*defaults, "domain");
        }
        if (spec != nullptr) {
            if (const Json* identity = member(spec->json, "identity"); identity != nullptr && identity->is_object()) {
                hostname = string_at(*identity, "hostname", hostname);
                domain = string_at(*identity, "domain", domain);
            }
        }
        std::string fqdn = domain.empty() ? hostname : hostname + "." + domain;
        if (auto [it, inserted] = hostnames.emplace(fqdn, name); !inserted) {
            out.push_back(doc.diag(
                member(j, "spec") != nullptr ? "/spec" : "",
                "hostname " + quote_for_message(fqdn) + " is already used by node " + quote_for_message(it->second)));
        }
        const Json* network = member(j, "network");
        std::string network_pointer = "/network";
        const Document* network_doc = &doc;
        if (network == nullptr && spec != nullptr) {
            network = member(spec->json, "network");
            network_doc = spec;
        }
        if (network != nullptr && network->is_object()) {
            std::string address = string_at(*network, "address");
            address = address.substr(0, address.find('/'));
            if (!address.empty()) {
                if (auto [it, inserted] = addresses.emplace(address, name); !inserted) {
                    std::string where = network_doc == &doc ? "/network/address" : "/spec";
                    out.push_back(doc.diag(where, "address " + quote_for_message(address) +
                                                      " is already used by node " + quote_for_message(it->second) +
                                                      (network_doc == &doc ? ""
                                                                           : " (both take it from the spec; "
                                                                             "set network in the node file)")));
                }
            }
        }

        const Json* qm = member(j, "qemu");
        if (string_at(j, "provider") == "qemu") {
            if (qm == nullptr) {
                out.push_back(doc.diag("/provider", "provider 'qemu' needs a qemu section (template, state_dir)"));
            }
            if (member(j, "proxmox") != nullptr) {
                out.push_back(doc.diag("/proxmox", "a node with provider 'qemu' has no Proxmox placement: remove it"));
            }
            if (qm != nullptr && qm->is_object()) {
                expect(doc, out, "/qemu/template", member(*qm, "template"), local_path);
                expect(doc, out, "/qemu/state_dir", member(*qm, "state_dir"), local_path);
            }
            continue;
        }
        if (qm != nullptr) out.push_back(doc.diag("/qemu", "qemu settings need 'provider: qemu' in the same file"));
        const Json* px = member(j, "proxmox");
        if (px == nullptr || !px->is_object()) continue;
        std::string endpoint = string_at(*px, "endpoint");
        if (!endpoint.empty() && !has_endpoint(c, endpoint)) {
            out.push_back(doc.diag("/proxmox/endpoint", "endpoint " + quote_for_message(endpoint) +
                                                            " is not defined in site.yaml proxmox.endpoints"));
        }
        std::string host = string_at(*px, "node");
        std::string site_name = string_at(*px, "site");
        const Json* placement_site = nullptr;
        if (!site_name.empty()) {
            placement_site = find_placement_site(c, site_name);
            if (placement_site == nullptr) {
                out.push_back(doc.diag("/proxmox/site", "placement site " + quote_for_message(site_name) +
                                                            " is not defined in site.yaml placement.sites"));
            } else if (!host.empty()) {
                bool belongs = false;
                if (const Json* hosts = member(*placement_site, "hosts"); hosts != nullptr && hosts->is_array()) {
                    for (const auto& h : *hosts)
                        belongs = belongs || (h.is_string() && h.get<std::string>() == host);
                }
                if (!belongs) {
                    out.push_back(doc.diag("/proxmox/node", "Proxmox host " + quote_for_message(host) +
                                                                " does not belong to placement site " +
                                                                quote_for_message(site_name)));
                }
            }
        } else if (!host.empty()) {
            placement_site = find_site_for_host(c, host);
            if (placement_site == nullptr) {
                out.push_back(
                    doc.diag("/proxmox/node", "Proxmox host " + quote_for_message(host) +
                                                  " does not belong to any site in site.yaml placement.sites"));
            }
        }
        for (const char* key : {"storage", "bridge", "pool"}) {
            expect(doc, out, std::string("/proxmox/") + key, member(*px, key), proxmox_name);
        }
        if (const Json* tags = member(*px, "tags"); tags != nullptr && tags->is_array()) {
            for (std::size_t i = 0; i < tags->size(); ++i) {
                expect(doc, out, pointer_join("/proxmox/tags", i), &(*tags)[i], proxmox_tag);
            }
        }
        auto vmid = int_at(*px, "vmid");
        if (vmid) {
            if (placement_site != nullptr) {
                auto lo = int_at(*placement_site, "vmid_min");
                auto hi = int_at(*placement_site, "vmid_max");
                if (lo && hi && (*vmid < *lo || *vmid > *hi)) {
                    out.push_back(doc.diag("/proxmox/vmid", "VMID " + std::to_string(*vmid) + " is outside the range " +
                                                                std::to_string(*lo) + "-" + std::to_string(*hi) +
                                                                " of placement site " +
                                                                quote_for_message(string_at(*placement_site, "name"))));
                }
            }
            if (auto [it, inserted] = vmids.emplace(*vmid, name); !inserted) {
                out.push_back(doc.diag("/proxmox/vmid", "VMID " + std::to_string(*vmid) + " is already used by node " +
                                                            quote_for_message(it->second)));
            }
            if (auto tmpl = int_at(*px, "template_vmid"); tmpl && *tmpl == *vmid) {
                out.push_back(doc.diag("/proxmox/vmid", "VMID is the same as template_vmid"));
            }
        }
    }
}

}  // namespace

const Json* member(const Json& object, const char* key) {
    if (!object.is_object()) return nullptr;
    auto it = object.find(key);
    return it == object.end() ? nullptr : &*it;
}

std::string string_at(const Json& object, const char* key, const std::string& fallback) {
    const Json* v = member(object, key);
    return v != nullptr && v->is_string() ? v->get<std::string>() : fallback;
}

std::optional<std::int64_t> int_at(const Json& object, const char* key) {
    const Json* v = member(object, key);
    if (v == nullptr || !v->is_number_integer()) return std::nullopt;
    return v->get<std::int64_t>();
}

bool bool_at(const Json& object, const char* key, bool fallback) {
    const Json* v = member(object, key);
    return v != nullptr && v->is_boolean() ? v->get<bool>() : fallback;
}

std::optional<std::int64_t> duration_seconds(const Json& value) {
    constexpr std::int64_t kWeek = 7 * 86400;
    if (value.is_number_integer()) {
        auto v = value.get<std::int64_t>();
        if (v < 0 || v > kWeek) return std::nullopt;
        return v;
    }
    if (!value.is_string()) return std::nullopt;
    auto d = parse_duration(value.get_ref<const std::string&>());
    if (!d || d->count() % 1000 != 0 || d->count() / 1000 > kWeek) return std::nullopt;
    return d->count() / 1000;
}

std::optional<std::int64_t> duration_at(const Json& object, const char* key, std::int64_t fallback) {
    const Json* v = member(object, key);
    return v == nullptr ? std::optional<std::int64_t>(fallback) : duration_seconds(*v);
}

void check_site(Context& c) {
    check_site_file(c);
    for (const auto& [name, doc] : c.postures)
        check_posture(c, name, doc);
    for (const auto& [name, doc] : c.presets)
        check_preset(c, doc);
    for (const auto& [name, doc] : c.specs)
        check_spec(c, name, doc);
    check_nodes(c);
}

}  // namespace nodeform::site::detail
