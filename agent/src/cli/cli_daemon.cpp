#include "nodeform/agent/cli.hpp"

#include <ostream>

#include "nodeform/args.hpp"

namespace nodeform::agent {

int cmd_run(const std::vector<std::string>& /*args*/, CliIo io) {
    io.err << "nodeform-agent: run: not implemented yet\n";
    return exit_code::runtime;
}

}  // namespace nodeform::agent
