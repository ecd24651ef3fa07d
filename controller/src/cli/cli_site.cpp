// nodeform-controller validate / render: the site configuration from the command line.
#include <ostream>

#include "nodeform/args.hpp"
#include "nodeform/canonical_json.hpp"
#include "nodeform/controller/cli.hpp"
#include "nodeform/site/site.hpp"

namespace nodeform::controller {
namespace {

constexpr const char* kValidateUsage = R"(usage: nodeform-controller validate --site DIR [--json]

Load the site directory (site.yaml, specs/, postures/, presets/, nodes/, secrets.yaml), check it against
the schemas and every semantic rule, and resolve each node's spec. Every problem is reported, one per line:
  FILE:LINE:COL: FIELD: MESSAGE        (FILE relative to DIR; 0 when the position is unknown)

Options:
  --site DIR    the site directory (required)
  --json        print {"valid": BOOL, "errors": [{file,line,column,field,message}...], "nodes": [...]}
  --help        this text

Exit codes: 0 valid, 1 invalid, 2 usage. Secret values never appear in the output.
See docs/site-config.md.
)";

constexpr const char* kRenderUsage = R"(usage: nodeform-controller render --site DIR IDENTITY [--reveal-secrets]

Print the resolved spec of node IDENTITY exactly as the agent receives it: canonical JSON (sorted keys,
no whitespace) and a newline. Values from secrets.yaml are shown as "[REDACTED]" unless --reveal-secrets.
The output is byte-identical across runs for the same site directory.

Options:
  --site DIR          the site directory (required)
  --reveal-secrets    print secret values instead of "[REDACTED]"
  --help              this text

Exit codes: 0 ok, 1 the site is invalid or has no such node, 2 usage.
)";

bool wants_help(const std::vector<std::string>& args) {
    for (const auto& a : args) {
        if (a == "--help" || a == "-h") return true;
        if (a == "--") break;
    }
    return false;
}

void print_diagnostics(const std::vector<site::Diagnostic>& diagnostics, std::ostream& out) {
    for (const auto& d : diagnostics)
        out << d.to_string() << "\n";
}

}  // namespace

int cmd_validate(const std::vector<std::string>& args, CliIo io) {
    if (wants_help(args)) {
        io.out << kValidateUsage;
        return exit_code::ok;
    }
    auto parsed = parse_args(args, ArgSpec{{"site"}, {"json"}});
    if (!parsed) {
        io.err << "nodeform-controller validate: " << parsed.message() << "\n\n" << kValidateUsage;
        return exit_code::usage;
    }
    auto dir = parsed->get("site");
    if (!dir || dir->empty() || !parsed->positionals.empty()) {
        io.err << "nodeform-controller validate: "
               << (dir ? "unexpected argument '" + parsed->positionals[0] + "'" : std::string("--site DIR is required"))
               << "\n\n"
               << kValidateUsage;
        return exit_code::usage;
    }
    auto result = site::load_site(*dir);
    if (parsed->has("json")) {
        nlohmann::json out = {
            {"valid", result.ok()}, {"site", *dir}, {"errors", site::diagnostics_to_json(result.diagnostics)}};
        nlohmann::json nodes = nlohmann::json::array();
        if (result.site) {
            for (const auto& [name, node] : result.site->nodes)
                nodes.push_back({{"identity", name}, {"digest", node.digest}});
            out["digest"] = result.site->digest;
        }
        out["nodes"] = nodes;
        io.out << out.dump(2) << "\n";
        return result.ok() ? exit_code::ok : exit_code::failure;
    }
    if (result.ok()) {
        const auto& s = *result.site;
        io.out << *dir << ": valid: site '" << s.info.name << "', " << s.nodes.size() << " node"
               << (s.nodes.size() == 1 ? "" : "s") << ", digest " << s.digest << "\n";
        return exit_code::ok;
    }
    print_diagnostics(result.diagnostics, io.err);
    io.err << *dir << ": invalid: " << result.diagnostics.size() << " error"
           << (result.diagnostics.size() == 1 ? "" : "s") << "\n";
    return exit_code::failure;
}

int cmd_render(const std::vector<std::string>& args, CliIo io) {
    if (wants_help(args)) {
        io.out << kRenderUsage;
        return exit_code::ok;
    }
    auto parsed = parse_args(args, ArgSpec{{"site"}, {"reveal-secrets"}});
    if (!parsed) {
        io.err << "nodeform-controller render: " << parsed.message() << "\n\n" << kRenderUsage;
        return exit_code::usage;
    }
    auto dir = parsed->get("site");
    if (!dir || dir->empty() || parsed->positionals.size() != 1) {
        io.err << "nodeform-controller render: " << (!dir ? "--site DIR is required" : "give exactly one node IDENTITY")
               << "\n\n"
               << kRenderUsage;
        return exit_code::usage;
    }
    const std::string& identity = parsed->positionals[0];
    auto result = site::load_site(*dir);
    if (!result.ok()) {
        print_diagnostics(result.diagnostics, io.err);
        io.err << *dir << ": invalid: " << result.diagnostics.size() << " error"
               << (result.diagnostics.size() == 1 ? "" : "s") << "; run 'nodeform-controller validate --site " << *dir
               << "'\n";
        return exit_code::failure;
    }
    auto it = result.site->nodes.find(identity);
    if (it == result.site->nodes.end()) {
        io.err << "nodeform-controller render: no node '" << identity << "' in " << *dir << "/nodes/; known nodes:";
        for (const auto& [name, node] : result.site->nodes)
            io.err << " " << name;
        io.err << "\n";
        return exit_code::failure;
    }
    io.out << site::render_node(it->second, parsed->has("reveal-secrets"));
    return exit_code::ok;
}

}  // namespace nodeform::controller
