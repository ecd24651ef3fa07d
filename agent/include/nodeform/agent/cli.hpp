#pragma once
// nodeform-agent command line: main() hands argv here; subcommands live in src/cli/.
#include <iosfwd>
#include <string>
#include <vector>

namespace nodeform::agent {

struct CliIo {
    std::ostream& out;
    std::ostream& err;
};

int run_cli(const std::vector<std::string>& args, CliIo io);

int cmd_apply(const std::vector<std::string>& args, CliIo io);       // cli_converge.cpp
int cmd_plan(const std::vector<std::string>& args, CliIo io);        // cli_converge.cpp
int cmd_wait_ready(const std::vector<std::string>& args, CliIo io);  // cli_converge.cpp
int cmd_seed(const std::vector<std::string>& args, CliIo io);        // cli_converge.cpp (seed show|encode)
int cmd_run(const std::vector<std::string>& args, CliIo io);         // cli_daemon.cpp

}  // namespace nodeform::agent
