#pragma once
// Node-fact templates for files with `template: true` (docs/site-config.md, "Templates"): `{{ fact }}` is replaced
// by the node's fact; `\{{` is a literal `{{`; `\\{{` is one backslash followed by a substitution; every other
// character, backslashes included, is copied as is. No expressions, filters, loops or includes.
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "nodeform/result.hpp"

namespace nodeform {

// The facts a template may name, in documentation order: hostname, fqdn, primary_ip, site, node.
const std::vector<std::string>& template_fact_names();

// The facts text names, in order of first use; Err naming the line and the problem for an unknown fact or an
// unclosed or malformed `{{`.
Result<std::vector<std::string>> template_facts_used(std::string_view text);

// text with every substitution replaced from facts; Err as template_facts_used, or when a fact it names is missing
// from facts ("primary_ip is not known on this node").
Result<std::string> render_template(std::string_view text, const std::map<std::string, std::string>& facts);

}  // namespace nodeform
