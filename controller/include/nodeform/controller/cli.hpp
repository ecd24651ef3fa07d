#pragma once
// nodeform-controller command line: main() hands argv here; each subcommand lives in its own file
// under src/cli/ and returns an exit code from nodeform::exit_code.
#include <iosfwd>
#include <string>
#include <vector>

namespace nodeform::controller {

// Streams the commands write to; main() passes std::cout/std::cerr, tests pass string streams.
struct CliIo {
    std::ostream& out;
    std::ostream& err;
};

int run_cli(const std::vector<std::string>& args, CliIo io);

// args excludes the program and subcommand names.
int cmd_validate(const std::vector<std::string>& args, CliIo io);       // cli_site.cpp
int cmd_render(const std::vector<std::string>& args, CliIo io);         // cli_site.cpp
int cmd_serve(const std::vector<std::string>& args, CliIo io);          // cli_serve.cpp
int cmd_token(const std::vector<std::string>& args, CliIo io);          // cli_token.cpp
int cmd_node_list(const std::vector<std::string>& args, CliIo io);      // cli_node.cpp
int cmd_node_show(const std::vector<std::string>& args, CliIo io);      // cli_node.cpp
int cmd_node_apply(const std::vector<std::string>& args, CliIo io);     // cli_node.cpp
int cmd_node_plan(const std::vector<std::string>& args, CliIo io);      // cli_lifecycle.cpp
int cmd_node_create(const std::vector<std::string>& args, CliIo io);    // cli_lifecycle.cpp
int cmd_node_destroy(const std::vector<std::string>& args, CliIo io);   // cli_lifecycle.cpp
int cmd_node_receipts(const std::vector<std::string>& args, CliIo io);  // cli_lifecycle.cpp

}  // namespace nodeform::controller
