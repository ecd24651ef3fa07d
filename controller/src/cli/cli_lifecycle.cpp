#include "nodeform/controller/cli.hpp"

#include <ostream>

#include "nodeform/args.hpp"

namespace nodeform::controller {

int cmd_node_plan(const std::vector<std::string>& /*args*/, CliIo io) {
    io.err << "nodeform-controller: node plan: not implemented yet\n";
    return exit_code::runtime;
}

int cmd_node_create(const std::vector<std::string>& /*args*/, CliIo io) {
    io.err << "nodeform-controller: node create: not implemented yet\n";
    return exit_code::runtime;
}

int cmd_node_destroy(const std::vector<std::string>& /*args*/, CliIo io) {
    io.err << "nodeform-controller: node destroy: not implemented yet\n";
    return exit_code::runtime;
}

int cmd_node_receipts(const std::vector<std::string>& /*args*/, CliIo io) {
    io.err << "nodeform-controller: node receipts: not implemented yet\n";
    return exit_code::runtime;
}

}  // namespace nodeform::controller
