// Faults on a real VM (label e2e), one VM for both:
// - the controller is down when the VM boots: the agent keeps retrying with backoff (visible in its journal)
//   and converges once the controller is started on the URL its seed names;
// - the VM is reset in the middle of its first converge (QEMU killed with SIGKILL right after the agent fetched
//   its spec and before its first report, then started again through the qemu provider): the next boot
//   finishes the converge and the node reaches platform-ready.
#include "qemu_e2e.hpp"

namespace nodeform::test {
namespace {

// Log lines of the agent's journal whose MESSAGE mentions `text`.
std::size_t messages_with(const std::vector<json>& entries, const std::string& text) {
    std::size_t n = 0;
    for (const auto& e : entries)
        if (e.contains("MESSAGE") && e["MESSAGE"].is_string() &&
            e["MESSAGE"].get<std::string>().find(text) != std::string::npos)
            ++n;
    return n;
}

TEST_F(QemuE2e, TheAgentWaitsOutADownControllerAndAResetDuringTheFirstConvergeIsFinishedByTheNextBoot) {
    const int port = free_loopback_port();
    ASSERT_GT(port, 0);
    const std::string log1 = temp_.path() + "/controller-1.log", log2 = temp_.path() + "/controller-2.log";
    {
        // Once, so that STATE/tls holds the site CA and a server certificate for 10.0.2.2 (the seed pins the CA).
        ServeOnPort first(site_, state_, port, log1);
        ASSERT_TRUE(first.up()) << slurp(log1);
    }

    // 1. The VM boots while no controller listens on the URL in its seed.
    int code = -1;
    // --report-timeout 0: returns once the guest agent answers, "still validating" (exit 1: not yet ready).
    std::string out = create(port, "0", code);
    ASSERT_NE(out.find("agent_ready"), std::string::npos) << out << "\n--- console tail ---\n" << console_tail();
    EXPECT_NE(out.find("still validating"), std::string::npos) << out;

    // 2. The agent retries with backoff: at least two failed attempts, each followed by "next attempt in N ms".
    std::vector<json> journal;
    const bool retried = wait_until(
        [&] {
            journal = agent_journal();
            return messages_with(journal, "next attempt in") >= 2;
        },
        minutes(8));
    ASSERT_TRUE(retried) << "the agent did not retry\n" << console_tail();
    EXPECT_NE(guest({"/usr/bin/test", "-f", "/var/lib/nodeform/platform-ready"}, false).exit_code, 0);
    EXPECT_NE(node_status(), "ready");

    // 3. The controller comes up on the seed's URL; the agent enrolls and fetches its spec. The moment the spec
    //    fetch shows in the access log (the credential is on the guest's disk by then: the fetch used it), QEMU
    //    is killed: a hard reset in the middle of the first converge.
    ServeOnPort second(site_, state_, port, log2);
    ASSERT_TRUE(second.up()) << slurp(log2);
    const auto paths = pv::qemu_paths(vms_, vmid_);
    const std::string pid_text = slurp(paths.pidfile);
    ASSERT_FALSE(pid_text.empty()) << "no QEMU pidfile";
    const int qemu_pid = std::stoi(pid_text);
    const bool fetched = wait_until(
        [&] {
            const std::string log = slurp(log2);
            return log.find("GET /v1/spec/{identity} 200 vm-01") != std::string::npos;
        },
        minutes(6), milliseconds(50));
    ASSERT_TRUE(fetched) << "the agent never fetched its spec\n" << slurp(log2) << console_tail();
    ASSERT_EQ(::kill(qemu_pid, SIGKILL), 0);
    ASSERT_TRUE(wait_until([&] { return processes_mentioning(vms_).empty(); }, seconds(30), milliseconds(100)));
    EXPECT_EQ(slurp(log2).find("POST /v1/nodes/{identity}/reports"), std::string::npos)
        << "the first converge had already reported: the reset did not interrupt it\n"
        << slurp(log2);
    EXPECT_NE(node_status(), "ready");

    // 4. Started again through the qemu provider (same overlay, same seed): the next boot finishes the converge.
    PosixProcessRunner runner;
    SystemClock clock;
    pv::QemuOptions options;
    options.template_image = template_;
    options.state_dir = vms_;
    auto provider = pv::make_qemu_provider(options, runner, clock);
    auto started = provider->start("", vmid_);
    ASSERT_TRUE(started.ok()) << started.error.message;
    ASSERT_TRUE(started.value->ok()) << started.value->exitstatus;
    std::string status;
    const bool ready = wait_until(
        [&] {
            status = node_status();
            return status == "ready";
        },
        minutes(12), seconds(10));
    ASSERT_TRUE(ready) << "status " << status << "\n" << node_entry().dump(2) << "\n" << console_tail();
    EXPECT_EQ(guest({"/usr/bin/test", "-f", "/var/lib/nodeform/platform-ready"}).exit_code, 0);
    EXPECT_NE(guest({"/usr/bin/id", "alice"}).out.find("uid=2001(alice)"), std::string::npos);
    EXPECT_EQ(guest({"/usr/bin/cat", "/etc/nodeform-e2e/app.conf"}).out, "greeting = hello from the e2e spec\n");
    // This boot did not enroll again: the credential from before the reset was kept and used.
    EXPECT_EQ(slurp(log2).find("POST /v1/enroll 200", slurp(log2).find("GET /v1/spec/{identity} 200 vm-01")),
              std::string::npos)
        << slurp(log2);

    destroy_and_expect_nothing_left(credential_probe(port));
}

}  // namespace
}  // namespace nodeform::test
