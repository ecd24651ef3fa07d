// The whole story on a real VM (label e2e): `node create` of a provider-qemu node against the real controller on
// loopback → the VM boots from an overlay of the baked template (QEMU, software emulation unless KVM boots) →
// the agent reads its seed from SMBIOS, enrolls, pulls its spec, converges and reports platform-ready →
// `ready` in `node list`; checked inside the guest through the guest agent (user, key, sudo, files, services,
// a Compose stack's containers running from the local image baked with --with-docker, platform-ready, the
// agent's structured journal fields); a file emptied and a service stopped inside the VM are repaired at once
// (the drift watcher) and the controller stores both repairs; an edit of the site reaches the VM (reload → new digest
// converged); `node destroy` leaves no QEMU process, overlay, socket or node credential. One VM for all of it.
//
// Timeouts (documented in docs/testing.md): under TCG on 2 busy cores a first boot reaches platform-ready in
// 3.5-8 min; the guest agent gets 12 min, the report 12 min, the whole `node create` 25 min.
#include <algorithm>
#include <set>

#include "nodeform/controller/store/store.hpp"
#include "qemu_e2e.hpp"

namespace nodeform::test {
namespace {

const std::string kGreeting = "greeting = hello from the e2e spec\n";
const std::string kChangedGreeting = "greeting = hello from the edited site\n";
// Added to the site's e2e spec: docker (baked, so the packages are unchanged) and a two-service stack from the
// template's local image (no registry in the guest); no network, so compose creates none.
const std::string kDockerPackages = "    - docker.io\n    - docker-compose\n";
const std::string kStack = R"(  stacks:
    - name: web
      compose: |
        services:
          app:
            image: nodeform/busybox:local
            command: ["sleep", "99999999"]
            network_mode: none
          worker:
            image: nodeform/busybox:local
            command: ["sleep", "99999999"]
            network_mode: none
)";

TEST_F(QemuDockerE2e, ACreatedVmBootsEnrollsConvergesIsReadyRepairsDriftTakesASpecChangeAndDestroyLeavesNothing) {
    {
        std::string spec = slurp(site_ + "/specs/e2e.yaml");
        const auto packages = spec.find("  packages:\n    - sudo\n");
        ASSERT_NE(packages, std::string::npos);
        spec.insert(packages + std::string("  packages:\n    - sudo\n").size(), kDockerPackages + kStack);
        write_text(site_ + "/specs/e2e.yaml", spec);
    }
    ControllerProcess controller(site_, state_, {"--tls-hosts", "10.0.2.2"}, /*tls=*/true);
    ASSERT_GT(controller.port(), 0) << "the controller did not start";

    // 1. node create: gates, overlay, seed in smbios1, boot; waits for the guest agent and platform-ready.
    int code = -1;
    std::string out = create(controller.port(), "12m", code);
    ASSERT_EQ(code, 0) << out << "\n--- console tail ---\n" << console_tail();
    EXPECT_NE(out.find("agent_ready"), std::string::npos) << out;

    // 2. The controller shows the node ready.
    EXPECT_EQ(node_status(), "ready") << node_entry();

    // 3. Inside the guest: platform-ready, the managed user with its key and sudo, the managed file, the services.
    EXPECT_EQ(guest({"/usr/bin/test", "-f", "/var/lib/nodeform/platform-ready"}).exit_code, 0);
    auto id = guest({"/usr/bin/id", "alice"});
    EXPECT_NE(id.out.find("uid=2001(alice)"), std::string::npos) << id.out << id.err;
    EXPECT_NE(guest({"/usr/bin/cat", "/home/alice/.ssh/authorized_keys"}).out.find("alice@laptop"), std::string::npos);
    EXPECT_EQ(guest({"/usr/bin/sudo", "-n", "-l", "-U", "alice"}).exit_code, 0);
    EXPECT_EQ(guest({"/usr/bin/cat", "/etc/nodeform-e2e/app.conf"}).out, kGreeting);
    EXPECT_EQ(guest({"/usr/bin/systemctl", "is-active", "ssh"}).out, "active\n");  // the spec's managed service
    EXPECT_EQ(guest({"/usr/bin/systemctl", "is-enabled", "ssh"}).out, "enabled\n");
    EXPECT_EQ(guest({"/usr/bin/systemctl", "is-active", "nodeform-agent"}).out, "active\n");
    // The stack: both services have a running container (compose's project and service labels).
    auto running = guest({"/usr/bin/docker", "ps", "--filter", "label=com.docker.compose.project=web", "--filter",
                          "status=running", "--format", "{{.Label \"com.docker.compose.service\"}}"});
    std::set<std::string> services;
    for (std::size_t at = 0, nl; at < running.out.size(); at = nl + 1) {
        nl = running.out.find('\n', at);
        if (nl == std::string::npos) nl = running.out.size();
        if (nl > at) services.insert(running.out.substr(at, nl - at));
    }
    EXPECT_EQ(services, (std::set<std::string>{"app", "worker"})) << running.out << running.err;

    // 4. The agent logs to journald with its structured fields (docs/daemon.md): the platform-ready entry with
    //    its run id, and one entry per changed resource of that run, tagged with the resource's id.
    auto ready_entries = agent_journal("NODEFORM_STATUS=platform-ready");
    ASSERT_FALSE(ready_entries.empty()) << "no NODEFORM_STATUS=platform-ready entry in the agent's journal";
    const json& ready = ready_entries.front();
    EXPECT_EQ(ready.value("SYSLOG_IDENTIFIER", ""), "nodeform-agent") << ready.dump();
    const std::string run_id = ready.value("NODEFORM_RUN_ID", "");
    EXPECT_FALSE(run_id.empty()) << ready.dump();
    std::set<std::string> resources;
    for (const auto& e : agent_journal("NODEFORM_RUN_ID=" + run_id))
        if (e.contains("NODEFORM_RESOURCE")) resources.insert(e.value("NODEFORM_RESOURCE", ""));
    EXPECT_TRUE(resources.count("user:alice")) << "resources logged for run " << run_id << ": " << resources.size();
    EXPECT_TRUE(resources.count("file:/etc/nodeform-e2e/app.conf")) << "run " << run_id;
    EXPECT_TRUE(resources.count("stack:web")) << "run " << run_id;

    // The seed came from SMBIOS: the agent enrolled with it and holds a node credential.
    auto status_with_credential = credential_probe(controller.port());
    ASSERT_TRUE(status_with_credential);
    EXPECT_EQ(status_with_credential(), "200");

    // 5. Drift: a managed file emptied and the managed service stopped inside the VM, in one command. The agent's
    //    watcher sees both at once (inotify, the unit's cgroup) and repairs them; the controller stores reports that
    //    name each repair. (Whether the file was ever seen empty is a race the agent wins: not asserted.)
    // The resources that reports stored since `known` (report ids, updated) name as changed.
    const auto repairs_stored = [&](std::set<std::string>& known, std::set<std::string>& repaired) {
        auto store = controller::open_sqlite_store(state_ + "/nodeform.db");
        if (!store) return;
        auto reports = (*store)->recent_reports("vm-01", 50);
        if (!reports) return;
        for (const auto& r : *reports) {
            if (!known.insert(r.report_id).second) continue;
            json body = json::parse(r.body, nullptr, false);
            if (!body.is_object() || !body.contains("resources")) continue;
            for (const auto& res : body["resources"])
                if (res.value("status", "") == "changed") repaired.insert(res.value("id", ""));
        }
    };
    std::set<std::string> known, ignored, repaired;
    repairs_stored(known, ignored);
    ASSERT_FALSE(known.empty()) << "no reports stored for vm-01";
    ASSERT_EQ(guest({"/bin/sh", "-c", "truncate -s 0 /etc/nodeform-e2e/app.conf && systemctl stop ssh"}).exit_code, 0);
    const auto service_repaired = [&] {
        return std::any_of(repaired.begin(), repaired.end(),
                           [](const std::string& id) { return id.rfind("service:ssh", 0) == 0; });
    };
    EXPECT_TRUE(wait_until(
        [&] {
            repairs_stored(known, repaired);
            return repaired.count("file:/etc/nodeform-e2e/app.conf") && service_repaired();
        },
        minutes(5)))
        << "repairs in the reports stored since: " << json(repaired).dump() << "\n"
        << console_tail();
    EXPECT_EQ(guest({"/usr/bin/cat", "/etc/nodeform-e2e/app.conf"}).out, kGreeting) << "drift not repaired";
    EXPECT_EQ(guest({"/usr/bin/systemctl", "is-active", "ssh"}).out, "active\n") << "service not started again";

    // 6. Spec change: the site's copy is edited, the controller reloads it (SIGHUP), and the agent converges the
    //    new digest: the controller shows it as the node's reported digest, the guest has the new file.
    const std::string old_digest = node_entry().value("spec_digest", "");
    ASSERT_FALSE(old_digest.empty()) << node_entry();
    std::string spec = slurp(site_ + "/specs/e2e.yaml");
    const auto at = spec.find("hello from the e2e spec");
    ASSERT_NE(at, std::string::npos);
    spec.replace(at, std::string("hello from the e2e spec").size(), "hello from the edited site");
    write_text(site_ + "/specs/e2e.yaml", spec);
    ASSERT_EQ(::kill(controller.pid(), SIGHUP), 0);
    json entry;
    const bool converged = wait_until(
        [&] {
            entry = node_entry();
            const std::string reported = entry.value("spec_digest", ""), current = entry.value("current_digest", "");
            return !reported.empty() && reported != old_digest && reported == current;
        },
        minutes(5));
    EXPECT_TRUE(converged) << "the agent did not report the edited site's digest\n" << entry.dump(2);
    EXPECT_NE(entry.value("current_digest", ""), old_digest) << "the site's digest did not change";
    EXPECT_EQ(guest({"/usr/bin/cat", "/etc/nodeform-e2e/app.conf"}).out, kChangedGreeting);
    EXPECT_EQ(entry.value("status", ""), "ready") << entry.dump(2);

    // 7. node destroy: no QEMU process, overlay, seed, socket or node credential left.
    destroy_and_expect_nothing_left(status_with_credential);
}

}  // namespace
}  // namespace nodeform::test
