#pragma once
// The site's naming policy for node names (they become hostnames and VM names), shared by the site loader
// and the provisioning gates.
#include <string>
#include <string_view>

namespace nodeform::site {

// "" when NAME is 1..max_length characters of a-z 0-9 '-', starts with a letter and does not end with '-';
// else the reason, for a person.
std::string check_hostname(std::string_view name, int max_length);

}  // namespace nodeform::site
