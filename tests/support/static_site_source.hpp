#pragma once
// For tests and benchmarks of the controller: a site source with a fixed site.
#include <string>

#include "nodeform/controller/api/server.hpp"
#include "nodeform/site/site.hpp"

namespace nodeform::test {

// A SiteSource that always serves the one site it was given.
class StaticSiteSource final : public controller::SiteSource {
  public:
    explicit StaticSiteSource(site::Site s) : site_(std::move(s)) {}
    site::LoadResult load() override { return site::LoadResult{site_, {}}; }
    std::string stamp() override { return "1"; }

  private:
    site::Site site_;
};

}  // namespace nodeform::test
