#include "nodeform/controller/cli.hpp"

#include <ostream>

#include "nodeform/args.hpp"

namespace nodeform::controller {

int cmd_node_list(const std::vector<std::string>& /*args*/, CliIo io) {
    io.err << "nodeform-controller: node list: not implemented yet\n";
    return exit_code::runtime;
}

int cmd_node_show(const std::vector<std::string>& /*args*/, CliIo io) {
    io.err << "nodeform-controller: node show: not implemented yet\n";
    return exit_code::runtime;
}

}  // namespace nodeform::controller
