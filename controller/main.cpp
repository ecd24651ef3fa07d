// nodeform-controller: parses nothing itself; the CLI library does the work.
#include <exception>
#include <iostream>

#include "nodeform/args.hpp"
#include "nodeform/controller/cli.hpp"

int main(int argc, char** argv) {
    try {
        return nodeform::controller::run_cli(std::vector<std::string>(argv + 1, argv + argc), {std::cout, std::cerr});
    } catch (const std::exception& e) {
        std::cerr << "nodeform-controller: internal error: " << e.what() << "\n";
        return nodeform::exit_code::runtime;
    }
}
