// nodeform-agent: parses nothing itself; the CLI library does the work.
#include <exception>
#include <iostream>

#include "nodeform/agent/cli.hpp"
#include "nodeform/args.hpp"

int main(int argc, char** argv) {
    try {
        return nodeform::agent::run_cli(std::vector<std::string>(argv + 1, argv + argc), {std::cout, std::cerr});
    } catch (const std::exception& e) {
        std::cerr << "nodeform-agent: internal error: " << e.what() << "\n";
        return nodeform::exit_code::runtime;
    }
}
