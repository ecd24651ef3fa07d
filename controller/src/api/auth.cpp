#include "nodeform/controller/api/auth.hpp"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <algorithm>

namespace nodeform::controller {
namespace {

bool parse_ip(const std::string& text, int& family, unsigned char* out) {
    std::string addr = text;
    if (addr.rfind("::ffff:", 0) == 0 && addr.find('.') != std::string::npos) addr = addr.substr(7);
    if (inet_pton(AF_INET, addr.c_str(), out) == 1) {
        family = AF_INET;
        return true;
    }
    if (inet_pton(AF_INET6, addr.c_str(), out) == 1) {
        family = AF_INET6;
        return true;
    }
    return false;
}

}  // namespace

bool ip_in_cidr(const std::string& ip, const std::string& cidr) {
    auto slash = cidr.find('/');
    std::string net = cidr.substr(0, slash);
    int fam_ip = 0, fam_net = 0;
    unsigned char a[16] = {}, b[16] = {};
    if (!parse_ip(ip, fam_ip, a) || !parse_ip(net, fam_net, b) || fam_ip != fam_net) return false;
    int max_bits = fam_ip == AF_INET ? 32 : 128;
    int bits = max_bits;
    if (slash != std::string::npos) {
        std::string p = cidr.substr(slash + 1);
        if (p.empty() || p.size() > 3 || !std::all_of(p.begin(), p.end(), ::isdigit)) return false;
        bits = std::stoi(p);
        if (bits > max_bits) return false;
    }
    for (int i = 0; i < bits; ++i) {
        int byte = i / 8, bit = 7 - i % 8;
        if (((a[byte] >> bit) & 1) != ((b[byte] >> bit) & 1)) return false;
    }
    return true;
}

namespace {
std::string trimmed(std::string text) {
    while (!text.empty() && text.front() == ' ')
        text.erase(text.begin());
    while (!text.empty() && text.back() == ' ')
        text.pop_back();
    return text;
}
}  // namespace

std::string bearer_token(const std::string& h) {
    if (h.size() > 7 && (h.rfind("Bearer ", 0) == 0 || h.rfind("bearer ", 0) == 0)) return trimmed(h.substr(7));
    return "";
}

std::vector<std::string> header_items(const std::string& value, char separator) {
    std::vector<std::string> items;
    std::size_t start = 0;
    while (start < value.size()) {
        auto end = value.find(separator, start);
        items.push_back(trimmed(value.substr(start, end == std::string::npos ? std::string::npos : end - start)));
        if (end == std::string::npos) break;
        start = end + 1;
    }
    return items;
}

bool AuthLimiter::blocked(const std::string& addr, std::chrono::steady_clock::time_point now) {
    if (!any_.load(std::memory_order_acquire)) return false;  // no failures counted: nothing to look up
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = entries_.find(addr);
    if (it == entries_.end()) return false;
    if (now - it->second.window_start >= window_) {
        entries_.erase(it);
        any_.store(!entries_.empty(), std::memory_order_release);
        return false;
    }
    return it->second.failures >= limit_;
}

void AuthLimiter::failure(const std::string& addr, std::chrono::steady_clock::time_point now) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (entries_.size() > 100000) {  // bounded memory: drop expired windows, then everything if still huge
        for (auto it = entries_.begin(); it != entries_.end();)
            it = now - it->second.window_start >= window_ ? entries_.erase(it) : std::next(it);
        if (entries_.size() > 100000) entries_.clear();
    }
    auto& e = entries_[addr];
    if (e.failures == 0 || now - e.window_start >= window_) {
        e.window_start = now;
        e.failures = 0;
    }
    e.failures++;
    any_.store(true, std::memory_order_release);
}

AuthOutcome authenticate_node(const site::Node& node, const std::string& addr, const std::string& authorization,
                              Store& store, AuthLimiter& limiter, std::chrono::steady_clock::time_point now,
                              Logger& logger, const CredentialPolicy& policy) {
    if (limiter.blocked(addr, now))
        return {429, "rate_limited", "too many failed authentications from " + addr + "; retry later"};
    AuthOutcome out;
    switch (node.auth.method) {
        case site::AuthMethod::network: {
            bool allowed = false;
            for (const auto& cidr : node.auth.allowed_cidrs)
                allowed = allowed || ip_in_cidr(addr, cidr);
            if (!allowed)
                out = {403, "address_not_allowed",
                       "client address " + addr + " is not in the allowed networks of node " + node.name};
            break;
        }
        case site::AuthMethod::site_token: {
            std::string token = bearer_token(authorization);
            if (token.empty()) {
                out = {401, "missing_credential", "send Authorization: Bearer <site token>"};
            } else if (node.auth.site_token.empty() || !constant_time_equal(token, node.auth.site_token)) {
                out = {401, "invalid_credential", "the site token is not valid for node " + node.name};
            }
            break;
        }
        case site::AuthMethod::node_token: {
            std::string token = bearer_token(authorization);
            if (token.empty()) {
                out = {401, "missing_credential", "send Authorization: Bearer <node credential> (enroll first)"};
                break;
            }
            const std::string hash = hash_secret(token);
            auto found = store.find_credential(hash, policy.now);
            if (!found) {
                logger.error("credential lookup failed: " + found.message());
                return {503, "store_unavailable", "the controller's store is unavailable; retry"};
            }
            if (!found->has_value()) {
                out = {401, "invalid_credential", "unknown or revoked node credential; enroll again"};
                break;
            }
            const CredentialMatch& m = **found;
            if (m.identity != node.name) {
                out = {403, "forbidden", "this credential belongs to another node"};
                break;
            }
            const auto age = policy.now - m.created_at;
            const auto ttl = std::chrono::duration_cast<std::chrono::system_clock::duration>(policy.ttl);
            if (!m.previous && ttl.count() > 0 && age >= ttl) {
                out = {401, "expired_credential", "the node credential has expired; enroll again"};
                break;
            }
            out.credential_hash = hash;
            out.rotate = !m.previous && (m.rotate_requested || (ttl.count() > 0 && age * 3 >= ttl * 2));
            break;
        }
    }
    if (out.status == 401 || out.status == 403) limiter.failure(addr, now);
    return out;
}

AuthOutcome authenticate_operator(const std::string& addr, const std::string& authorization,
                                  const std::string& operator_token_hash, AuthLimiter& limiter,
                                  std::chrono::steady_clock::time_point now) {
    if (limiter.blocked(addr, now)) return {429, "rate_limited", "too many failed authentications; retry later"};
    std::string token = bearer_token(authorization);
    if (operator_token_hash.empty() || token.empty() || !constant_time_equal(hash_secret(token), operator_token_hash)) {
        limiter.failure(addr, now);
        return {401, token.empty() ? "missing_credential" : "invalid_credential",
                "the operator endpoints need Authorization: Bearer <operator token> (STATE/operator-token)"};
    }
    return {};
}

}  // namespace nodeform::controller
