#include <ostream>

#include "nodeform/args.hpp"
#include "nodeform/clock.hpp"
#include "nodeform/controller/api/server.hpp"
#include "nodeform/controller/cli.hpp"
#include "nodeform/controller/config.hpp"
#include "nodeform/controller/store/sqlite.hpp"
#include "nodeform/controller/store/store.hpp"
#include "nodeform/controller/store/store_location.hpp"
#include "nodeform/duration.hpp"
#include "nodeform/site/site.hpp"

namespace nodeform::controller {
namespace {

constexpr const char* kTokenUsage = R"(usage: nodeform-controller token SUBCOMMAND IDENTITY [OPTIONS]

Subcommands:
  issue IDENTITY... [--ttl DURATION] [--json]
        create a one-time enrollment token for each node (of the site, using node_token auth) and print
        it (once: only its hash is stored): one token per line, in the order given, or with --json one
        {"identity","token","expires_at"} object per line. Every identity is checked before any token is
        made. Default TTL 24h (e.g. 30m, 12h, 7d).
  revoke IDENTITY
        delete the node's credential and its unused enrollment tokens; the node must enroll again.
  rotate IDENTITY
        ask the node to fetch a new credential: its next request is answered with
        Nodeform-Credential-Rotate: pending and it POSTs /v1/nodes/IDENTITY/credential; the old
        credential stays accepted for credential-grace (1h) after that (docs/protocol.md).

Options:
  --state DIR       state directory of the controller (nodeform.db)
  --site DIR        the site (issue only: the identity must be a node of it)
  --config FILE     config file (default /etc/nodeform/controller.yaml when it exists)
)";

}  // namespace

int cmd_token(const std::vector<std::string>& args, CliIo io) {
    ArgSpec spec = serve_arg_spec();
    spec.valued.insert("ttl");
    int code = 0;
    auto parsed = parse_command_args(args, spec, "nodeform-controller token", kTokenUsage, io.out, io.err, code);
    if (!parsed) return code;
    const auto& positionals = parsed->positionals;
    const bool known =
        !positionals.empty() && (positionals[0] == "issue" || positionals[0] == "revoke" || positionals[0] == "rotate");
    if (!known || positionals.size() < 2 || (positionals[0] != "issue" && positionals.size() != 2)) {
        io.err << kTokenUsage;
        return exit_code::usage;
    }
    const std::string& sub = positionals[0];
    const std::vector<std::string> identities(positionals.begin() + 1, positionals.end());
    const std::string& identity = identities.front();
    for (const auto& id : identities) {
        if (!valid_identity(id)) {
            io.err << "nodeform-controller token: '" << id << "' is not a valid node identity\n";
            return exit_code::usage;
        }
    }
    auto config = load_controller_config(*parsed);
    if (!config) {
        io.err << "nodeform-controller token: " << config.message() << "\n";
        return exit_code::config;
    }
    if (config->state.empty()) {
        io.err << "nodeform-controller token: --state DIR is required (or state: in the config file)\n";
        return exit_code::usage;
    }
    SystemClock clock;
    // The controller's store; an error is printed here, the caller picks the exit code.
    auto open_token_store = [&]() -> Result<std::unique_ptr<Store>> {
        auto where = store_location(*config);
        if (!where) {
            io.err << "nodeform-controller token: " << where.message() << "\n";
            return where.error();
        }
        auto store = open_store(*where);
        if (!store) io.err << "nodeform-controller token: " << store.message() << "\n";
        return store;
    };
    if (sub == "rotate") {
        auto store = open_token_store();
        if (!store) return exit_code::runtime;
        auto requested = (*store)->request_rotation(identity, clock.now());
        if (!requested) {
            io.err << "nodeform-controller token rotate: " << requested.message() << "\n";
            return exit_code::runtime;
        }
        if (!*requested) {
            io.err << "nodeform-controller token rotate: " << identity
                   << " holds no credential (not enrolled, or revoked)\n";
            return exit_code::failure;
        }
        io.out << "rotation requested for " << identity << ": the node fetches a new credential on its next request\n";
        return exit_code::ok;
    }
    if (sub == "revoke") {
        auto store = open_token_store();
        if (!store) return exit_code::runtime;
        auto revoked = (*store)->revoke(identity, clock.now());
        if (!revoked) {
            io.err << "nodeform-controller token revoke: " << revoked.message() << "\n";
            return exit_code::runtime;
        }
        io.out << (*revoked ? "revoked the credential and unused enrollment tokens of " : "nothing to revoke for ")
               << identity << "\n";
        return exit_code::ok;
    }
    auto ttl = parse_duration(parsed->get_or("ttl", "24h"));
    if (!ttl || ttl->count() < 1000) {
        io.err << "nodeform-controller token issue: --ttl must be a duration such as 30m, 24h or 7d\n";
        return exit_code::usage;
    }
    if (config->site.empty()) {
        io.err << "nodeform-controller token issue: --site DIR is required (tokens are only issued for nodes of the "
                  "site)\n";
        return exit_code::usage;
    }
    auto loaded = site::load_site(config->site);
    if (!loaded.ok()) {
        io.err << "nodeform-controller token issue: the site " << config->site << " is invalid:\n";
        for (const auto& d : loaded.diagnostics)
            io.err << "  " << d.to_string() << "\n";
        return exit_code::config;
    }
    for (const auto& id : identities) {
        auto node = loaded.site->nodes.find(id);
        if (node == loaded.site->nodes.end()) {
            io.err << "nodeform-controller token issue: '" << id << "' is not a node of the site " << config->site
                   << "\n";
            return exit_code::failure;
        }
        if (node->second.auth.method != site::AuthMethod::node_token) {
            io.err << "nodeform-controller token issue: node '" << id << "' authenticates by "
                   << site::to_string(node->second.auth.method) << "; enrollment tokens are only for node_token\n";
            return exit_code::failure;
        }
    }
    auto store = open_token_store();
    if (!store) return exit_code::runtime;
    auto random = make_system_random();
    for (const auto& id : identities) {
        std::string token = generate_secret(*random, "nfe_");
        auto now = clock.now();
        auto expires = now + std::chrono::duration_cast<std::chrono::system_clock::duration>(*ttl);
        if (auto st = (*store)->add_enrollment_token(id, hash_secret(token), expires, now); !st) {
            io.err << "nodeform-controller token issue: " << id << ": " << st.message() << "\n";
            return exit_code::runtime;
        }
        if (parsed->has("json")) {
            io.out << nlohmann::json{{"identity", id}, {"token", token}, {"expires_at", format_rfc3339(expires)}}.dump()
                   << "\n";
        } else {
            io.out << token << "\n";
            io.err << "one-time enrollment token for " << id << ", valid until " << format_rfc3339(expires)
                   << "; it is shown only now\n";
        }
    }
    return exit_code::ok;
}

}  // namespace nodeform::controller
