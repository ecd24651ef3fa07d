#include "nodeform/controller/cli.hpp"

#include <ostream>

#include "nodeform/args.hpp"

namespace nodeform::controller {

int cmd_validate(const std::vector<std::string>& /*args*/, CliIo io) {
    io.err << "nodeform-controller: validate: not implemented yet\n";
    return exit_code::runtime;
}

int cmd_render(const std::vector<std::string>& /*args*/, CliIo io) {
    io.err << "nodeform-controller: render: not implemented yet\n";
    return exit_code::runtime;
}

}  // namespace nodeform::controller
