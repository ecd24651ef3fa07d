#pragma once
// The Proxmox VE implementation of Provider, over nodeform::HttpTransport (docs/provisioning.md).
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "nodeform/controller/providers/provider.hpp"
#include "nodeform/http.hpp"

namespace nodeform::controller::providers {

// Per-operation time limits (the whole operation, task included).
struct ProxmoxTimeLimits {
    std::chrono::milliseconds read{std::chrono::seconds(30)};
    std::chrono::milliseconds clone{std::chrono::minutes(20)};
    std::chrono::milliseconds resize{std::chrono::minutes(5)};
    std::chrono::milliseconds power{std::chrono::minutes(3)};
    std::chrono::milliseconds backup{std::chrono::hours(4)};
    std::chrono::milliseconds destroy{std::chrono::minutes(10)};
};

struct ProxmoxOptions {
    std::string token_id;      // USER@REALM!TOKENID
    std::string token_secret;  // secret: only ever in the Authorization header
    ProxmoxTimeLimits limits;
    std::chrono::milliseconds poll_min{std::chrono::milliseconds(100)};       // task polling starts here...
    std::chrono::milliseconds poll_max{std::chrono::milliseconds(250)};       // ...and backs off to this
    int max_attempts = 6;                                                     // for safe retries
    std::chrono::milliseconds retry_backoff{std::chrono::milliseconds(250)};  // doubles per attempt, capped 4 s
    std::function<void(std::chrono::milliseconds)> sleep;                     // default: this_thread::sleep_for
};

// The provider owns the transport (one per worker: transports are not shared between threads).
std::unique_ptr<Provider> make_proxmox_provider(std::unique_ptr<HttpTransport> transport, ProxmoxOptions options);

// --- helpers, exposed for tests ---

// application/x-www-form-urlencoded of ordered pairs (RFC 3986 unreserved kept, space as %20).
std::string form_encode(const std::vector<std::pair<std::string, std::string>>& params);
std::string percent_encode(const std::string& text);
std::optional<std::string> percent_decode(const std::string& text, bool plus_is_space);
// The value Proxmox expects for `sshkeys`: the newline-joined keys, percent-encoded once (the form
// encoding adds the second layer), as the bpg Terraform provider does.
std::string encode_sshkeys(const std::vector<std::string>& keys);

// UPID:node:pid:pstart:starttime:type:id:user:  (pid, pstart, starttime in hex)
struct Upid {
    std::string node;
    std::uint32_t pid = 0;
    std::uint64_t pstart = 0;
    std::int64_t starttime = 0;
    std::string type;
    std::string id;
    std::string user;
};
std::optional<Upid> parse_upid(const std::string& text);
std::string format_upid(const Upid& upid);

// smbios1 option value "uuid=U,[FIELD=B64,...]serial=B64,base64=1" keeping the uuid and the other fields
// (manufacturer, product, ...) of `existing`; Err when over 512 chars, saying what takes the room.
Result<std::string> build_smbios1(const std::string& existing, const std::string& serial);
// key=value,... option strings (e.g. smbios1, net0, scsi0); the first bare item gets key "" (e.g. "virtio=MAC").
std::vector<std::pair<std::string, std::string>> split_option_string(const std::string& value);
// The guest agent's guest-network-get-interfaces answer (a list; anything else: none) as interfaces with
// "ADDRESS/PREFIX" addresses.
std::vector<NetInterface> parse_guest_interfaces(const nlohmann::json& list);
// Size in bytes of a "size=10G" style value; nullopt when unparsable.
std::optional<std::uint64_t> parse_size(const std::string& text);

}  // namespace nodeform::controller::providers
