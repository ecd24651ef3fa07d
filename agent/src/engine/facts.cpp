// The node facts templates use (nodeform/template.hpp): hostname, fqdn, site and node from the spec; primary_ip from
// the spec's static address, else the IPv4 address of the interface holding the default route, read from
// /proc/net/route and /proc/net/fib_trie through the Filesystem (no process, no socket).
#include <cstdint>
#include <cstdio>
#include <sstream>

#include "context.hpp"

namespace nodeform::agent {
namespace {

std::optional<std::uint32_t> parse_dotted(const std::string& text) {
    unsigned a, b, c, d;
    char tail;
    if (std::sscanf(text.c_str(), "%u.%u.%u.%u%c", &a, &b, &c, &d, &tail) != 4 || a > 255 || b > 255 || c > 255 ||
        d > 255)
        return std::nullopt;
    return a | (b << 8) | (c << 16) | (static_cast<std::uint32_t>(d) << 24);  // /proc/net/route's byte order
}

std::optional<std::uint32_t> parse_hex(const std::string& text) {
    if (text.size() != 8) return std::nullopt;
    try {
        return static_cast<std::uint32_t>(std::stoul(text, nullptr, 16));
    } catch (...) {
        return std::nullopt;
    }
}

}  // namespace

std::optional<std::string> primary_ipv4(const std::string& route, const std::string& fib_trie) {
    struct Route {
        std::string iface;
        std::uint32_t dest = 0, mask = 0;
        long metric = 0;
    };
    std::vector<Route> routes;
    std::istringstream in(route);
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
        std::istringstream f(line);
        std::string iface, dest, gw, flags, refcnt, use, metric, mask;
        if (!(f >> iface >> dest >> gw >> flags >> refcnt >> use >> metric >> mask)) continue;
        auto d = parse_hex(dest);
        auto m = parse_hex(mask);
        if (!d || !m) continue;
        long met = 0;
        try {
            met = std::stol(metric);
        } catch (...) {
            continue;
        }
        routes.push_back({iface, *d, *m, met});
    }
    const Route* def = nullptr;
    for (const auto& r : routes) {
        if (r.dest == 0 && r.mask == 0 && (def == nullptr || r.metric < def->metric)) def = &r;
    }
    if (def == nullptr) return std::nullopt;
    std::vector<std::string> locals;
    std::istringstream trie(fib_trie);
    std::string current;
    while (std::getline(trie, line)) {
        auto bar = line.find("|-- ");
        if (bar != std::string::npos) {
            current = line.substr(bar + 4);
        } else if (line.find("/32 host LOCAL") != std::string::npos && !current.empty()) {
            locals.push_back(current);
        }
    }
    for (const auto& r : routes) {
        if (r.iface != def->iface || r.mask == 0) continue;
        for (const auto& l : locals) {
            auto ip = parse_dotted(l);
            if (ip && (*ip & r.mask) == r.dest && (*ip & 0xff) != 127) return l;
        }
    }
    return std::nullopt;
}

std::map<std::string, std::string> node_facts(Filesystem& fs, const nlohmann::json& spec) {
    std::map<std::string, std::string> facts;
    if (!spec.is_object()) return facts;
    facts["node"] = string_field(spec, "identity");
    if (auto site = string_field(spec, "site"); !site.empty()) facts["site"] = site;
    if (auto h = spec.find("hostname"); h != spec.end() && h->is_object()) {
        facts["hostname"] = string_field(*h, "hostname", facts["node"]);
        std::string fqdn = string_field(*h, "fqdn");
        std::string domain = string_field(*h, "domain");
        facts["fqdn"] = !fqdn.empty() ? fqdn : domain.empty() ? facts["hostname"] : facts["hostname"] + "." + domain;
    }
    if (auto n = spec.find("network"); n != spec.end() && n->is_object() && string_field(*n, "mode") == "static") {
        std::string address = string_field(*n, "address");
        if (!address.empty()) facts["primary_ip"] = address.substr(0, address.find('/'));
    }
    if (!facts.count("primary_ip")) {
        auto route = fs.read("/proc/net/route", 1024 * 1024);
        auto trie = fs.read("/proc/net/fib_trie", 4 * 1024 * 1024);
        if (route && trie) {
            if (auto ip = primary_ipv4(*route, *trie)) facts["primary_ip"] = *ip;
        }
    }
    return facts;
}

}  // namespace nodeform::agent
