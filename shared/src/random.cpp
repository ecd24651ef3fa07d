#include "nodeform/random.hpp"

#include <openssl/rand.h>

#include <stdexcept>

namespace nodeform {
namespace {

class SystemRandom final : public Random {
  public:
    std::uint64_t next() override {
        std::uint64_t v = 0;
        fill(reinterpret_cast<unsigned char*>(&v), sizeof v);
        return v;
    }
    void fill(unsigned char* out, std::size_t size) override {
        if (size > 0 && RAND_bytes(out, static_cast<int>(size)) != 1)
            throw std::runtime_error("OpenSSL RAND_bytes failed");  // no entropy: nothing sensible to do
    }
};

}  // namespace

std::string hex_of(const unsigned char* bytes, std::size_t size) {
    static const char* hex = "0123456789abcdef";
    std::string out;
    out.reserve(2 * size);
    for (std::size_t i = 0; i < size; ++i) {
        out.push_back(hex[bytes[i] >> 4]);
        out.push_back(hex[bytes[i] & 0x0f]);
    }
    return out;
}

void Random::fill(unsigned char* out, std::size_t size) {
    for (std::size_t i = 0; i < size; i += 8) {
        std::uint64_t v = next();
        for (std::size_t k = 0; k < 8 && i + k < size; ++k)
            out[i + k] = static_cast<unsigned char>(v >> (8 * k));
    }
}

std::unique_ptr<Random> make_system_random() {
    return std::make_unique<SystemRandom>();
}

std::string random_hex(Random& random, std::size_t bytes) {
    std::string buf(bytes, '\0');
    random.fill(reinterpret_cast<unsigned char*>(buf.data()), buf.size());
    return hex_of(reinterpret_cast<const unsigned char*>(buf.data()), buf.size());
}

std::string make_uuid_v4(Random& random) {
    unsigned char b[16];
    random.fill(b, sizeof b);
    b[6] = static_cast<unsigned char>((b[6] & 0x0f) | 0x40);
    b[8] = static_cast<unsigned char>((b[8] & 0x3f) | 0x80);
    std::string h = hex_of(b, sizeof b);
    return h.substr(0, 8) + "-" + h.substr(8, 4) + "-" + h.substr(12, 4) + "-" + h.substr(16, 4) + "-" + h.substr(20);
}

bool looks_like_uuid(const std::string& t) {
    if (t.size() != 36) return false;
    for (std::size_t i = 0; i < t.size(); ++i) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? t[i] != '-' : !((t[i] >= '0' && t[i] <= '9') || (t[i] >= 'a' && t[i] <= 'f'))) return false;
    }
    return true;
}

std::string generate_secret(Random& random, const std::string& prefix) {
    return prefix + random_hex(random, 32);
}

}  // namespace nodeform
