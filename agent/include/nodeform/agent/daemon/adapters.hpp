#pragma once
// The daemon's interfaces implemented with the converge engine and the controller client (agent/src/engine,
// agent/src/client): what `nodeform-agent run` plugs into the Daemon.
#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>

#include "nodeform/agent/controller_client.hpp"
#include "nodeform/agent/converge.hpp"
#include "nodeform/agent/daemon/daemon.hpp"

namespace nodeform::agent::daemon {

// Spec from the controller: ControllerClient::fetch_spec (enrolls on first use, ETag, cached last good spec).
class ControllerSpecSource final : public SpecSource {
  public:
    ControllerSpecSource(ControllerClient& client, std::string identity)
        : client_(client), identity_(std::move(identity)) {}
    // Enrollment happens inside fetch(), so a controller that is down at start still lets the cached spec run.
    Status enroll() override { return Ok{}; }
    Result<SpecFetch> fetch() override;
    // True once the controller has answered a fetch (so the node is enrolled and its credential stored).
    bool reached_controller() const { return reached_.load(); }

  private:
    ControllerClient& client_;
    std::string identity_;
    std::atomic<bool> reached_{false};
};

// Spec from a file (--spec): no controller, no enrollment.
class FileSpecSource final : public SpecSource {
  public:
    explicit FileSpecSource(std::string host_path) : path_(std::move(host_path)) {}
    Status enroll() override { return Ok{}; }
    Result<SpecFetch> fetch() override;

  private:
    std::string path_;
};

// One converge/check run through ConvergeEngine, holding the run lock (one run at a time with `apply`).
class ConvergeRunEngine final : public RunEngine {
  public:
    ConvergeRunEngine(ConvergeEngine& engine, std::string lock_path,
                      std::chrono::milliseconds lock_timeout = std::chrono::seconds(60))
        : engine_(engine), lock_path_(std::move(lock_path)), lock_timeout_(lock_timeout) {}
    RunOutcome run(const nlohmann::json& spec, TurnMode mode) override;
    void cancel() override { engine_.request_stop(); }

  private:
    ConvergeEngine& engine_;
    std::string lock_path_;
    std::chrono::milliseconds lock_timeout_;
};

// Reports through a ControllerClient of its own (single attempt: the daemon's sender does the retrying).
// Waits for the spec source to have reached the controller first, so two clients never race to enroll
// with the same one-time token.
class ClientReportPoster final : public ReportPoster {
  public:
    ClientReportPoster(ControllerClient& client, const ControllerSpecSource& source)
        : client_(client), source_(source) {}
    ReportPostResult post(const nlohmann::json& report) override;

  private:
    ControllerClient& client_;
    const ControllerSpecSource& source_;
};

}  // namespace nodeform::agent::daemon
