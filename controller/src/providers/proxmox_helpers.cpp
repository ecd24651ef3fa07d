// Pure helpers of the Proxmox client: form encoding, sshkeys, UPIDs, smbios1, option strings.
#include <cstdio>
#include <cstdlib>

#include "nodeform/base64.hpp"
#include "nodeform/controller/providers/proxmox.hpp"

namespace nodeform::controller::providers {
namespace {

bool unreserved(unsigned char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
           c == '.' || c == '~';
}

int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

bool parse_hex(const std::string& text, std::uint64_t& out) {
    if (text.empty() || text.size() > 16) return false;
    out = 0;
    for (char c : text) {
        int v = hex_value(c);
        if (v < 0) return false;
        out = out * 16 + static_cast<std::uint64_t>(v);
    }
    return true;
}

}  // namespace

nlohmann::json to_json(const ApiCall& call) {
    nlohmann::json j = {{"method", call.method},
                        {"path", call.path},
                        {"status", call.status},
                        {"attempt", call.attempt},
                        {"duration_ms", call.duration_ms}};
    if (!call.upid.empty()) j["upid"] = call.upid;
    if (!call.exitstatus.empty()) j["exitstatus"] = call.exitstatus;
    if (!call.error.empty()) j["error"] = call.error;
    if (call.polls > 0) j["polls"] = call.polls;
    return j;
}

std::string percent_encode(const std::string& text) {
    static const char* hex = "0123456789ABCDEF";
    std::string out;
    out.reserve(text.size() * 3);
    for (unsigned char c : text) {
        if (unreserved(c)) {
            out.push_back(static_cast<char>(c));
        } else {
            out.push_back('%');
            out.push_back(hex[c >> 4]);
            out.push_back(hex[c & 15]);
        }
    }
    return out;
}

std::optional<std::string> percent_decode(const std::string& text, bool plus_is_space) {
    std::string out;
    out.reserve(text.size());
    for (std::size_t i = 0; i < text.size(); ++i) {
        char c = text[i];
        if (c == '%') {
            if (i + 2 >= text.size()) return std::nullopt;
            int hi = hex_value(text[i + 1]);
            int lo = hex_value(text[i + 2]);
            if (hi < 0 || lo < 0) return std::nullopt;
            out.push_back(static_cast<char>(hi * 16 + lo));
            i += 2;
        } else if (c == '+' && plus_is_space) {
            out.push_back(' ');
        } else {
            out.push_back(c);
        }
    }
    return out;
}

std::string form_encode(const std::vector<std::pair<std::string, std::string>>& params) {
    std::string out;
    for (const auto& [key, value] : params) {
        if (!out.empty()) out.push_back('&');
        out += percent_encode(key);
        out.push_back('=');
        out += percent_encode(value);
    }
    return out;
}

std::string encode_sshkeys(const std::vector<std::string>& keys) {
    std::string joined;
    for (const auto& key : keys) {
        if (!joined.empty()) joined.push_back('\n');
        joined += key;
    }
    return percent_encode(joined);
}

std::optional<Upid> parse_upid(const std::string& text) {
    if (text.size() > 512 || text.rfind("UPID:", 0) != 0) return std::nullopt;
    std::vector<std::string> parts;
    std::string current;
    for (std::size_t i = 5; i < text.size(); ++i) {
        if (text[i] == ':') {
            parts.push_back(current);
            current.clear();
        } else {
            current.push_back(text[i]);
        }
    }
    if (!current.empty() || parts.size() != 7) return std::nullopt;
    Upid upid;
    upid.node = parts[0];
    std::uint64_t pid = 0, pstart = 0, starttime = 0;
    if (upid.node.empty() || !parse_hex(parts[1], pid) || !parse_hex(parts[2], pstart) ||
        !parse_hex(parts[3], starttime) || parts[4].empty() || parts[6].empty()) {
        return std::nullopt;
    }
    for (char c : upid.node) {
        if (!(unreserved(static_cast<unsigned char>(c)))) return std::nullopt;
    }
    upid.pid = static_cast<std::uint32_t>(pid);
    upid.pstart = pstart;
    upid.starttime = static_cast<std::int64_t>(starttime);
    upid.type = parts[4];
    upid.id = parts[5];
    upid.user = parts[6];
    return upid;
}

std::string format_upid(const Upid& upid) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%08X:%08llX:%08llX", upid.pid, static_cast<unsigned long long>(upid.pstart),
                  static_cast<unsigned long long>(upid.starttime));
    return "UPID:" + upid.node + ":" + buf + ":" + upid.type + ":" + upid.id + ":" + upid.user + ":";
}

std::vector<std::pair<std::string, std::string>> split_option_string(const std::string& value) {
    std::vector<std::pair<std::string, std::string>> out;
    std::size_t start = 0;
    while (start <= value.size()) {
        std::size_t comma = value.find(',', start);
        std::string item = value.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
        if (!item.empty()) {
            auto eq = item.find('=');
            if (eq == std::string::npos) {
                out.emplace_back("", item);
            } else {
                out.emplace_back(item.substr(0, eq), item.substr(eq + 1));
            }
        }
        if (comma == std::string::npos) break;
        start = comma + 1;
    }
    return out;
}

Result<std::string> build_smbios1(const std::string& existing, const std::string& serial) {
    std::string uuid;
    std::vector<std::pair<std::string, std::string>> kept;
    bool was_base64 = false;
    for (const auto& [key, value] : split_option_string(existing)) {
        if (key == "uuid") uuid = value;
        if (key == "base64") was_base64 = value == "1";
    }
    // Fields other than uuid and serial (manufacturer, product, ...) are kept, re-encoded as base64.
    for (const auto& [key, value] : split_option_string(existing)) {
        if (key == "uuid" || key == "serial" || key == "base64" || key.empty()) continue;
        std::string plain = value;
        if (was_base64) {
            auto decoded = base64_decode(value);
            if (!decoded) return make_error("smbios1: field '" + key + "' is not base64 although base64=1");
            plain = *decoded;
        }
        kept.emplace_back(key, base64_encode(plain));
    }
    std::string out;
    if (!uuid.empty()) out = "uuid=" + uuid + ",";
    std::string kept_names;
    for (const auto& [key, value] : kept) {
        out += key + "=" + value + ",";
        kept_names += (kept_names.empty() ? "" : ", ") + key;
    }
    const std::size_t kept_size = out.size() - (uuid.empty() ? 0 : uuid.size() + 6);
    const std::string seed_part = "serial=" + base64_encode(serial) + ",base64=1";
    out += seed_part;
    if (out.size() > 512) {
        std::string why = "smbios1 would be " + std::to_string(out.size()) +
                          " characters, over Proxmox's limit of 512: the seed takes " +
                          std::to_string(seed_part.size()) + " (shorten the node name or the controller URL)";
        if (!kept.empty()) {
            why += " and the SMBIOS fields kept from the template (" + kept_names + ") take " +
                   std::to_string(kept_size) + " (shorten or remove them in the template's smbios1)";
        }
        return make_error(why);
    }
    return out;
}

std::vector<NetInterface> parse_guest_interfaces(const nlohmann::json& list) {
    std::vector<NetInterface> out;
    if (!list.is_array()) return out;
    for (const auto& item : list) {
        if (!item.is_object()) continue;
        NetInterface nic;
        nic.name = item.value("name", "");
        nic.mac = item.value("hardware-address", "");
        if (item.contains("ip-addresses") && item["ip-addresses"].is_array()) {
            for (const auto& a : item["ip-addresses"]) {
                if (!a.is_object() || !a.contains("ip-address") || !a["ip-address"].is_string()) continue;
                std::string addr = a["ip-address"].get<std::string>();
                if (a.contains("prefix") && a["prefix"].is_number_integer()) {
                    addr += "/" + std::to_string(a["prefix"].get<int>());
                }
                nic.addresses.push_back(addr);
            }
        }
        out.push_back(std::move(nic));
    }
    return out;
}

std::optional<std::uint64_t> parse_size(const std::string& text) {
    if (text.empty() || text.size() > 24) return std::nullopt;
    std::size_t i = 0;
    double number = 0;
    std::string digits;
    while (i < text.size() && ((text[i] >= '0' && text[i] <= '9') || text[i] == '.'))
        digits.push_back(text[i++]);
    if (digits.empty()) return std::nullopt;
    char* end = nullptr;
    number = std::strtod(digits.c_str(), &end);
    if (end == nullptr || *end != '\0') return std::nullopt;
    std::uint64_t unit = 1;
    if (i < text.size()) {
        switch (text[i]) {
            case 'K':
                unit = 1ULL << 10;
                break;
            case 'M':
                unit = 1ULL << 20;
                break;
            case 'G':
                unit = 1ULL << 30;
                break;
            case 'T':
                unit = 1ULL << 40;
                break;
            default:
                return std::nullopt;
        }
        ++i;
    }
    if (i != text.size()) return std::nullopt;
    return static_cast<std::uint64_t>(number * static_cast<double>(unit));
}

}  // namespace nodeform::controller::providers
