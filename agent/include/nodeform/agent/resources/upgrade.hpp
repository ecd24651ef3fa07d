#pragma once
// The upgrade policy's reading of apt: what `apt-get -s upgrade` would move, and whether a security archive offers it.
#include <string>
#include <vector>

namespace nodeform::agent {

struct PendingUpgrade {
    std::string name;
    std::string installed;  // empty: a new package the upgrade pulls in
    std::string version;    // the version apt would install
    bool security = false;  // a release of that version is labelled Debian-Security or its archive ends in -security
};

// The "Inst NAME [OLD] (NEW LABEL:VERSION/ARCHIVE, ... [ARCH])" lines of apt-get -s output; other lines are skipped.
std::vector<PendingUpgrade> parse_simulated_upgrade(const std::string& out);

}  // namespace nodeform::agent
