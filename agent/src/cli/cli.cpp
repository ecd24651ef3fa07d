#include "nodeform/agent/cli.hpp"

#include <functional>
#include <map>
#include <ostream>

#include "nodeform/args.hpp"

namespace nodeform::agent {
namespace {

constexpr const char* kUsage = R"(usage: nodeform-agent COMMAND [OPTIONS]

Commands:
  apply [--spec FILE | --seed FILE] [--root DIR] [--json]   converge once
  plan  [--spec FILE | --seed FILE] [--root DIR] [--json]   show what would change, change nothing
  run   [--seed FILE]                                       the daemon (systemd Type=notify)
  wait-ready [--timeout DURATION]                           wait for platform-ready
  seed show|encode ...                                      inspect or produce an identity seed

Run 'nodeform-agent COMMAND --help' for a command's options.
Exit codes: 0 ok, 1 failures, 2 usage (plan: 2 = changes pending), 3 configuration, 4 runtime.
)";

}  // namespace

int run_cli(const std::vector<std::string>& args, CliIo io) {
    using Command = std::function<int(const std::vector<std::string>&, CliIo)>;
    const std::map<std::string, Command> table = {
        {"apply", cmd_apply}, {"plan", cmd_plan}, {"run", cmd_run}, {"wait-ready", cmd_wait_ready}, {"seed", cmd_seed},
    };
    if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
        (args.empty() ? io.err : io.out) << kUsage;
        return args.empty() ? exit_code::usage : exit_code::ok;
    }
    if (args[0] == "--version") {
        io.out << "nodeform-agent " << NODEFORM_VERSION << "\n";
        return exit_code::ok;
    }
    auto it = table.find(args[0]);
    if (it == table.end()) {
        io.err << "nodeform-agent: unknown command '" << args[0] << "'\n\n" << kUsage;
        return exit_code::usage;
    }
    return it->second(std::vector<std::string>(args.begin() + 1, args.end()), io);
}

}  // namespace nodeform::agent
