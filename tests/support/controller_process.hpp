#pragma once
// The real nodeform-controller binary as a child process serving plain HTTP on an ephemeral loopback port,
// and its CLI run to completion (token issue/rotate/revoke). Killed (SIGKILL) when the object dies.
#include <sys/types.h>

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace nodeform::test {

// The smallest report the controller accepts for identity: one changed resource, id as its report_id.
inline nlohmann::json minimal_report(const std::string& identity, const std::string& id) {
    return nlohmann::json{{"report_id", id},
                          {"identity", identity},
                          {"agent_version", "0.1.0"},
                          {"spec_digest", "sha256:abc"},
                          {"phase", "converging"},
                          {"trigger", "run"},
                          {"mode", "apply"},
                          {"started_at", "2026-11-23T19:40:00.123Z"},
                          {"finished_at", "2026-11-23T19:40:01.456Z"},
                          {"platform_ready", false},
                          {"counts", {{"total", 1}, {"changed", 1}}},
                          {"resources", nlohmann::json::array()}};
}

class ControllerProcess {
  public:
    // `nodeform-controller serve --site SITE --state STATE --listen 127.0.0.1:0 --plain-http ...extra`; port() is 0
    // when it did not come up. With tls, HTTPS with the generated site CA (STATE/tls/ca.pem) instead.
    ControllerProcess(const std::string& site, const std::string& state, std::vector<std::string> extra = {},
                      bool tls = false);
    ~ControllerProcess();
    ControllerProcess(const ControllerProcess&) = delete;
    ControllerProcess& operator=(const ControllerProcess&) = delete;
    int port() const { return port_; }
    pid_t pid() const { return pid_; }  // e.g. for SIGHUP (reload the site now)
    void kill9();
    void reload();    // SIGHUP: reload the site now
    int terminate();  // SIGTERM, then the exit status (-1 when killed by a signal)

  private:
    pid_t pid_ = -1;
    int fd_ = -1;
    int port_ = 0;
};

// In a forked child: runs args[0] with args (argv only, no shell); _exit(127) when it cannot. Never returns.
[[noreturn]] void exec_argv(std::vector<std::string> args);

struct CliResult {
    int exit_code = -1;
    std::string out;
    std::string err;
};
// nodeform-controller ARGS... (argv only, no shell).
CliResult run_controller_cli(const std::vector<std::string>& args);

}  // namespace nodeform::test
