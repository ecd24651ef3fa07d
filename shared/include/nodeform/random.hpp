#pragma once
// The randomness seam: jitter, ids and secrets all come from a Random passed in through a constructor.
// The real one (make_system_random) draws from OpenSSL's RAND_bytes; tests pass fixed sequences.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace nodeform {

class Random {
  public:
    virtual ~Random() = default;
    virtual std::uint64_t next() = 0;
    // Fills out[0..size); the default draws from next(), the real one from RAND_bytes.
    virtual void fill(unsigned char* out, std::size_t size);
    // Uniform in [0, bound); 0 when bound is 0.
    std::uint64_t below(std::uint64_t bound) { return bound == 0 ? 0 : next() % bound; }
};

// OpenSSL RAND_bytes (a CSPRNG: fit for secrets); throws std::runtime_error if it ever fails.
std::unique_ptr<Random> make_system_random();

// bytes[0..size) as lower-case hex.
std::string hex_of(const unsigned char* bytes, std::size_t size);
// `bytes` random bytes as lower-case hex.
std::string random_hex(Random& random, std::size_t bytes);
// A random UUID, version 4 ("xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx", lower-case hex).
std::string make_uuid_v4(Random& random);
// True for the form make_uuid_v4 produces (any version digit, lower-case hex).
bool looks_like_uuid(const std::string& text);
// prefix + 32 random bytes as hex: tokens and credentials ("nfe_" enrollment, "nfc_" credential, "nfo_" operator).
std::string generate_secret(Random& random, const std::string& prefix);

}  // namespace nodeform
