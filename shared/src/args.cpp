#include "nodeform/args.hpp"

#include <ostream>
#include <utility>

namespace nodeform {

Result<ParsedArgs> parse_args(const std::vector<std::string>& args, const ArgSpec& spec) {
    ParsedArgs parsed;
    bool options_done = false;
    for (std::size_t i = 0; i < args.size(); ++i) {
        const std::string& arg = args[i];
        if (options_done || arg.size() < 3 || arg.compare(0, 2, "--") != 0) {
            if (arg == "--") {
                options_done = true;
                continue;
            }
            if (!options_done && arg.size() > 1 && arg[0] == '-' && arg != "-") {
                if (arg == "-h") {
                    parsed.flags.insert("help");
                    continue;
                }
                return make_error("unknown option " + arg + " (see --help)");
            }
            parsed.positionals.push_back(arg);
            continue;
        }
        std::string key = arg.substr(2);
        std::optional<std::string> inline_value;
        if (auto eq = key.find('='); eq != std::string::npos) {
            inline_value = key.substr(eq + 1);
            key = key.substr(0, eq);
        }
        if (spec.flags.count(key) || key == "help") {
            if (inline_value) return make_error("option --" + key + " takes no value");
            parsed.flags.insert(key);
        } else if (spec.valued.count(key)) {
            if (inline_value) {
                parsed.values[key] = *inline_value;
            } else if (i + 1 < args.size()) {
                parsed.values[key] = args[++i];
            } else {
                return make_error("option --" + key + " needs a value");
            }
        } else {
            return make_error("unknown option --" + key + " (see --help)");
        }
    }
    return parsed;
}

std::optional<ParsedArgs> parse_command_args(const std::vector<std::string>& args, const ArgSpec& spec,
                                             const std::string& command, std::string_view usage, std::ostream& out,
                                             std::ostream& err, int& exit) {
    auto parsed = parse_args(args, spec);
    if (!parsed) {
        err << command << ": " << parsed.message() << "\n";
        exit = exit_code::usage;
        return std::nullopt;
    }
    if (parsed->has("help")) {
        out << usage;
        exit = exit_code::ok;
        return std::nullopt;
    }
    return std::move(*parsed);
}

}  // namespace nodeform
