#include "nodeform/controller/cli.hpp"

#include <functional>
#include <map>
#include <ostream>

#include "nodeform/args.hpp"

namespace nodeform::controller {
namespace {

using Command = std::function<int(const std::vector<std::string>&, CliIo)>;

constexpr const char* kUsage = R"(usage: nodeform-controller COMMAND [OPTIONS]

Commands:
  validate --site DIR [--json]              check the site configuration; report every error
  render --site DIR IDENTITY                print a node's resolved spec (secrets redacted)
  serve --site DIR --state DIR [...]        serve specs, enrollment and reports over HTTPS
  node list|show|apply|plan|create|destroy|receipts ...
                                            node status and Proxmox VE lifecycle
  token issue|revoke IDENTITY ...           enrollment tokens and node credentials

Run 'nodeform-controller COMMAND --help' for a command's options.
Exit codes: 0 ok, 1 negative outcome (invalid, failed), 2 usage, 3 configuration, 4 runtime.
)";

constexpr const char* kNodeUsage = R"(usage: nodeform-controller node SUBCOMMAND [OPTIONS]

Subcommands:
  list [--json]                 every node with its status
  show IDENTITY [--json]        last report, drift, health, lifecycle
  apply IDENTITY [--json]       ask the node to converge at its next spec fetch (apply.trigger: manual)
  plan NAME                     dry run of provisioning: gates and the API calls it would make
  create NAME...                provision nodes on Proxmox VE
  destroy NAME                  decommission a node by its policy
  receipts NAME [--json]        the lifecycle receipts of a node
)";

int dispatch(const std::map<std::string, Command>& table, const char* usage, const std::vector<std::string>& args,
             CliIo io) {
    if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
        (args.empty() ? io.err : io.out) << usage;
        return args.empty() ? exit_code::usage : exit_code::ok;
    }
    auto it = table.find(args[0]);
    if (it == table.end()) {
        io.err << "nodeform-controller: unknown command '" << args[0] << "'\n\n" << usage;
        return exit_code::usage;
    }
    return it->second(std::vector<std::string>(args.begin() + 1, args.end()), io);
}

}  // namespace

int run_cli(const std::vector<std::string>& args, CliIo io) {
    if (!args.empty() && args[0] == "--version") {
        io.out << "nodeform-controller " << NODEFORM_VERSION << "\n";
        return exit_code::ok;
    }
    const std::map<std::string, Command> node_table = {
        {"list", cmd_node_list},         {"show", cmd_node_show},     {"apply", cmd_node_apply},
        {"plan", cmd_node_plan},         {"create", cmd_node_create}, {"destroy", cmd_node_destroy},
        {"receipts", cmd_node_receipts},
    };
    const std::map<std::string, Command> table = {
        {"validate", cmd_validate},
        {"render", cmd_render},
        {"serve", cmd_serve},
        {"token", cmd_token},
        {"node", [&](const std::vector<std::string>& a, CliIo i) { return dispatch(node_table, kNodeUsage, a, i); }},
    };
    return dispatch(table, kUsage, args, io);
}

}  // namespace nodeform::controller
