// Placeholder until the site loader lands; owned by the site-configuration work (issue 3).
#include "nodeform/site/site.hpp"

namespace nodeform::site {

std::string Diagnostic::to_string() const {
    return file + ":" + std::to_string(line) + ":" + std::to_string(column) + ": " + field + ": " + message;
}

LoadResult load_site(const std::string& dir) {
    LoadResult result;
    result.diagnostics.push_back({dir, 0, 0, "", "site loading is not implemented yet"});
    return result;
}

nlohmann::json redact_resolved(const nlohmann::json& resolved) { return resolved; }

const char* to_string(AuthMethod method) {
    switch (method) {
        case AuthMethod::network: return "network";
        case AuthMethod::site_token: return "site_token";
        case AuthMethod::node_token: return "node_token";
    }
    return "?";
}

const char* to_string(DecommissionPolicy policy) {
    switch (policy) {
        case DecommissionPolicy::requires_final_backup: return "requires_final_backup";
        case DecommissionPolicy::requires_migration_first: return "requires_migration_first";
        case DecommissionPolicy::allow_immediate_destroy: return "allow_immediate_destroy";
    }
    return "?";
}

}  // namespace nodeform::site
