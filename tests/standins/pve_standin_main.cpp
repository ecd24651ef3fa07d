// pve-standin: the Proxmox VE API stand-in as a process, for the docs transcript and the benchmark.
// Test tooling only; never installed.
#include <pthread.h>

#include <csignal>
#include <cstdlib>
#include <iostream>

#include "nodeform/args.hpp"
#include "pve_standin.hpp"

namespace {

std::vector<std::string> split(const std::string& s, char sep) {
    std::vector<std::string> out;
    std::size_t start = 0;
    while (start <= s.size()) {
        auto p = s.find(sep, start);
        std::string item = s.substr(start, p == std::string::npos ? std::string::npos : p - start);
        if (!item.empty()) out.push_back(item);
        if (p == std::string::npos) break;
        start = p + 1;
    }
    return out;
}

constexpr const char* kUsage = R"(usage: pve-standin [OPTIONS]

A Proxmox VE API stand-in for tests (HTTP on loopback). Runs until SIGINT/SIGTERM.

  --port N                      listen port (default 8006; 0 = any)
  --token-id USER@REALM!ID      accepted API token id (default root@pam!nodeform)
  --token-secret SECRET         accepted API token secret (default: the tests' fixed value)
  --nodes A,B                   cluster node names (default pve1)
  --storages A,B                storages on every node (default local,local-lvm)
  --bridges A,B                 bridges on every node (default vmbr0)
  --template NODE:VMID:NAME     a VM template (repeatable as a comma list)
  --task-ms TYPE=MS,...         task durations (qmclone, resize, qmstart, qmstop, qmshutdown, qmdestroy, vzdump)
  --default-task-ms MS          other tasks (default 300)
  --boot-ms MS                  from start until the guest agent answers (default 2000)
)";

}  // namespace

int main(int argc, char** argv) {
    nodeform::ArgSpec spec;
    spec.valued = {"port",    "token-id", "token-secret", "nodes",           "storages",
                   "bridges", "template", "task-ms",      "default-task-ms", "boot-ms"};
    spec.flags = {"help"};
    auto args = nodeform::parse_args(std::vector<std::string>(argv + 1, argv + argc), spec);
    if (!args) {
        std::cerr << "pve-standin: " << args.message() << "\n" << kUsage;
        return 2;
    }
    if (args->has("help")) {
        std::cout << kUsage;
        return 0;
    }
    nodeform::test::PveStandinOptions o;
    o.port = std::atoi(args->get_or("port", "8006").c_str());
    o.token_id = args->get_or("token-id", o.token_id);
    o.token_secret = args->get_or("token-secret", o.token_secret);
    if (auto v = args->get("nodes")) o.nodes = split(*v, ',');
    if (auto v = args->get("storages")) o.storages = split(*v, ',');
    if (auto v = args->get("bridges")) o.bridges = split(*v, ',');
    o.default_task_ms = std::chrono::milliseconds(std::atoi(args->get_or("default-task-ms", "300").c_str()));
    o.boot_ms = std::chrono::milliseconds(std::atoi(args->get_or("boot-ms", "2000").c_str()));
    for (const auto& item : split(args->get_or("task-ms", ""), ',')) {
        auto eq = item.find('=');
        if (eq == std::string::npos) {
            std::cerr << "pve-standin: --task-ms wants TYPE=MS, got '" << item << "'\n";
            return 2;
        }
        o.task_ms[item.substr(0, eq)] = std::chrono::milliseconds(std::atoi(item.substr(eq + 1).c_str()));
    }
    sigset_t stop_signals;  // blocked in every thread, taken with sigwait below
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
    nodeform::test::PveStandin pve(o);
    if (pve.port() <= 0) {
        std::cerr << "pve-standin: cannot listen on 127.0.0.1:" << o.port << "\n";
        return 4;
    }
    for (const auto& t : split(args->get_or("template", ""), ',')) {
        auto f = split(t, ':');
        if (f.size() != 3) {
            std::cerr << "pve-standin: --template wants NODE:VMID:NAME, got '" << t << "'\n";
            return 2;
        }
        pve.add_template(f[0], std::atoll(f[1].c_str()), f[2]);
    }
    std::cout << "pve-standin listening on " << pve.base_url() << std::endl;
    int sig = 0;
    sigwait(&stop_signals, &sig);
    std::cout << "pve-standin: " << pve.request_count() << " requests served" << std::endl;
    return 0;
}
