#include "nodeform/controller/cli.hpp"

#include <ostream>

#include "nodeform/args.hpp"

namespace nodeform::controller {

int cmd_serve(const std::vector<std::string>& /*args*/, CliIo io) {
    io.err << "nodeform-controller: serve: not implemented yet\n";
    return exit_code::runtime;
}

}  // namespace nodeform::controller
