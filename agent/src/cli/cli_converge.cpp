#include "nodeform/agent/cli.hpp"

#include <ostream>

#include "nodeform/args.hpp"

namespace nodeform::agent {

int cmd_apply(const std::vector<std::string>& /*args*/, CliIo io) {
    io.err << "nodeform-agent: apply: not implemented yet\n";
    return exit_code::runtime;
}

int cmd_plan(const std::vector<std::string>& /*args*/, CliIo io) {
    io.err << "nodeform-agent: plan: not implemented yet\n";
    return exit_code::runtime;
}

int cmd_wait_ready(const std::vector<std::string>& /*args*/, CliIo io) {
    io.err << "nodeform-agent: wait-ready: not implemented yet\n";
    return exit_code::runtime;
}

int cmd_seed(const std::vector<std::string>& /*args*/, CliIo io) {
    io.err << "nodeform-agent: seed: not implemented yet\n";
    return exit_code::runtime;
}

}  // namespace nodeform::agent
