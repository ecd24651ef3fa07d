#pragma once
// Argument parsing shared by both executables: GNU-style long options ("--key value",
// "--key=value", boolean "--flag"), positionals, and "--" to end options.
#include <iosfwd>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "nodeform/result.hpp"

namespace nodeform {

struct ArgSpec {
    std::set<std::string> valued;  // options that take a value (without the leading "--")
    std::set<std::string> flags;   // boolean options
};

struct ParsedArgs {
    std::map<std::string, std::string> values;
    std::set<std::string> flags;
    std::vector<std::string> positionals;

    bool has(const std::string& flag) const { return flags.count(flag) > 0; }
    std::optional<std::string> get(const std::string& key) const {
        auto it = values.find(key);
        if (it == values.end()) return std::nullopt;
        return it->second;
    }
    std::string get_or(const std::string& key, const std::string& fallback) const {
        auto v = get(key);
        return v ? *v : fallback;
    }
};

// Err names the offending option: unknown, missing value, or value given to a flag.
Result<ParsedArgs> parse_args(const std::vector<std::string>& args, const ArgSpec& spec);

// What every command does first: parse_args; a bad argument goes to err as "COMMAND: reason" (exit = usage),
// --help writes usage to out (exit = ok). nullopt means the command is done and returns exit.
std::optional<ParsedArgs> parse_command_args(const std::vector<std::string>& args, const ArgSpec& spec,
                                             const std::string& command, std::string_view usage, std::ostream& out,
                                             std::ostream& err, int& exit);

// Exit codes shared by both programs (docs/cli.md).
namespace exit_code {
constexpr int ok = 0;
constexpr int failure = 1;  // the command ran and the outcome is negative (invalid site, failed resource)
constexpr int usage = 2;    // wrong arguments
constexpr int config = 3;   // configuration file or site could not be loaded
constexpr int runtime = 4;  // I/O, network or other runtime failure
}  // namespace exit_code

}  // namespace nodeform
