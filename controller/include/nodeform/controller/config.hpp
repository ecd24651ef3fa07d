#pragma once
// ControllerConfig: every setting of `nodeform-controller serve` (and the state/site the node and token
// commands read), filled once: defaults < config file (YAML, same key names as the flags) < command line.
#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "nodeform/args.hpp"
#include "nodeform/result.hpp"

namespace nodeform::controller {

inline constexpr const char* kDefaultConfigFile = "/etc/nodeform/controller.yaml";

struct ControllerConfig {
    std::string site;   // site directory
    std::string state;  // state directory (nodeform.db, tls/, operator-token)
    std::string store;  // "" or "sqlite": STATE/nodeform.db; postgresql://… : a database shared by controllers
    std::string store_password_file;  // the PostgreSQL password (never on the command line)
    std::string listen_host = "0.0.0.0";
    int listen_port = 8443;
    bool listen_given = false;  // --listen / listen: was set (else plain-http moves it to loopback)
    bool plain_http = false;
    std::string tls_cert;  // operator-provided certificate chain (PEM); empty = STATE/tls/server.pem
    std::string tls_key;
    std::vector<std::string> tls_hosts;  // extra names/IPs for the generated server certificate
    int threads = 32;                    // worker threads = concurrent connections served
    int max_connections = 0;             // open connections (idle ones included); beyond → 503; 0 = 8192
    std::size_t max_body_bytes = 1024 * 1024;
    std::chrono::seconds read_timeout{5};
    std::chrono::seconds write_timeout{5};
    std::chrono::seconds keep_alive_timeout{5};
    int auth_failure_limit = 10;  // failures per address within the window before 429
    std::chrono::seconds auth_failure_window{60};
    int reports_keep_last = 100;
    int reports_keep_days = 30;
    std::chrono::seconds stale_grace{60};
    std::chrono::seconds credential_ttl{0};               // node credentials expire this long after issue; 0 = never
    std::chrono::seconds credential_grace{3600};          // a rotated credential stays accepted this long
    std::chrono::seconds cert_renew_before{30 * 86400};   // renew the generated server certificate this early
    std::chrono::seconds cert_check_interval{12 * 3600};  // how often serve checks the certificate's expiry
    std::chrono::milliseconds reload_interval{1000};
    bool access_log = true;
    // The lifecycle reconciler (docs/controller.md "Lifecycle reconciler").
    bool lifecycle = true;
    std::chrono::milliseconds lifecycle_interval{2000};  // how often records are scanned for work
    std::chrono::milliseconds lease_ttl{60000};          // a node's lease lasts this long without a heartbeat
    int lifecycle_parallel = 4;
    int lifecycle_retries = 5;
    std::chrono::milliseconds lifecycle_retry_backoff{30000};  // first retry, then doubling up to 10m
    std::string ca_fingerprint;          // the seeds' CA fingerprint; "" = the generated CA's (STATE/tls/ca.pem)
    std::vector<std::string> endpoints;  // NAME=URL: a Proxmox endpoint's URL overridden
    std::string log_level = "info";      // debug|info|notice|warning|error
    std::string config_file;             // the file that was read, if any
};

// The options `serve` accepts (also valid keys of the config file, without "--").
ArgSpec serve_arg_spec();

// Reads `--config FILE` (must exist) or, when absent, default_file if it exists; then applies args on top.
// Err names the file/key/flag at fault.
Result<ControllerConfig> load_controller_config(const ParsedArgs& args,
                                                const std::string& default_file = kDefaultConfigFile);

// "HOST:PORT", "[V6]:PORT" or ":PORT".
Status parse_listen(const std::string& text, std::string& host, int& port);

}  // namespace nodeform::controller
