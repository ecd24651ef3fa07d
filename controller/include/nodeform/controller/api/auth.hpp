#pragma once
// Who may call the controller: the node's posture (network: client address in allowed_cidrs; site_token; node_token:
// the enrolled credential), the operator token, and a per-address limit on failed attempts. No HTTP in here: the
// routes pass the client address and the Authorization header in and send the outcome back.
#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "nodeform/controller/store/store.hpp"
#include "nodeform/log.hpp"
#include "nodeform/site/site.hpp"

namespace nodeform::controller {

// "10.0.0.0/8", "2001:db8::/32" or a bare address; IPv4-mapped IPv6 clients match IPv4 networks.
// False for malformed addresses or CIDRs and across families.
bool ip_in_cidr(const std::string& ip, const std::string& cidr);

// The token of an "Authorization: Bearer <token>" header value (scheme case-insensitive as sent by clients:
// "Bearer"/"bearer", spaces trimmed); "" when there is none.
std::string bearer_token(const std::string& authorization);

// The items of a header value separated by `separator` (Cookie: ';', If-None-Match: ','), spaces trimmed.
std::vector<std::string> header_items(const std::string& value, char separator);

// Counts authentication failures per client address within a fixed window; memory is bounded.
class AuthLimiter {
  public:
    AuthLimiter(int limit, std::chrono::seconds window) : limit_(limit), window_(window) {}
    bool blocked(const std::string& addr, std::chrono::steady_clock::time_point now);
    void failure(const std::string& addr, std::chrono::steady_clock::time_point now);
    std::chrono::seconds window() const { return window_; }

  private:
    struct Entry {
        std::chrono::steady_clock::time_point window_start{};
        int failures = 0;
    };
    int limit_;
    std::chrono::seconds window_;
    std::mutex mutex_;
    std::map<std::string, Entry> entries_;
    std::atomic<bool> any_{false};  // entries_ is not empty: blocked() takes no lock on the common path
};

// 200 = allowed; otherwise the HTTP status, error code and message to answer with (429 carries Retry-After =
// the limiter's window).
struct AuthOutcome {
    AuthOutcome() = default;
    AuthOutcome(int s, std::string c, std::string m) : status(s), code(std::move(c)), message(std::move(m)) {}
    int status = 200;
    std::string code;
    std::string message;
    bool rotate = false;          // node_token: the node should fetch a new credential (docs/protocol.md)
    std::string credential_hash;  // node_token: the hash of the credential presented
    bool ok() const { return status == 200; }
};

// node_token credentials: ttl > 0 refuses a credential issued more than ttl before `now` and asks for its
// rotation once two thirds of it have passed; 0 = they never expire.
struct CredentialPolicy {
    std::chrono::seconds ttl{0};
    TimePoint now{};
};

// The posture decision for a node-facing request (spec, report). 401/403 count as failures for the limiter;
// a store that cannot answer is 503 (logged), never a pass.
AuthOutcome authenticate_node(const site::Node& node, const std::string& client_addr, const std::string& authorization,
                              Store& store, AuthLimiter& limiter, std::chrono::steady_clock::time_point now,
                              Logger& logger, const CredentialPolicy& policy = {});

// The operator endpoints: Bearer <operator token> whose hash is operator_token_hash (empty: always refused).
AuthOutcome authenticate_operator(const std::string& client_addr, const std::string& authorization,
                                  const std::string& operator_token_hash, AuthLimiter& limiter,
                                  std::chrono::steady_clock::time_point now);

}  // namespace nodeform::controller
