// libFuzzer: arbitrary bytes → the seed decoders (compact "nf1:" form and seed.yaml). Must never crash, hang, leak
// or throw; a seed that decodes is valid (validate_seed) and survives encode → decode unchanged.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "nodeform/seed.hpp"

using namespace nodeform;

namespace {
void check_round_trip(const Seed& seed) {
    if (!validate_seed(seed).ok()) std::abort();
    auto again = decode_seed_compact(encode_seed_compact(seed));
    if (!again.ok() || again->identity != seed.identity || again->controller_url != seed.controller_url ||
        again->token != seed.token || again->ca_fingerprint != seed.ca_fingerprint)
        std::abort();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size > 16 * 1024) return 0;
    std::string text(reinterpret_cast<const char*>(data), size);
    if (auto seed = decode_seed_compact(text)) check_round_trip(*seed);
    if (auto seed = decode_seed_compact("nf1:" + text)) check_round_trip(*seed);
    if (auto seed = parse_seed_yaml(text, "seed.yaml")) check_round_trip(*seed);
    return 0;
}
