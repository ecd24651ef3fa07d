#include "test_paths.hpp"

#include <cstdlib>
#include <filesystem>
#include <stdexcept>

namespace nodeform::test {

std::string source_dir() {
    return NODEFORM_SOURCE_DIR;
}
std::string binary_dir() {
    return NODEFORM_BINARY_DIR;
}
std::string data_dir() {
    return std::string(NODEFORM_SOURCE_DIR) + "/tests/data";
}

TempDir::TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string pattern = std::string(base && *base ? base : "/tmp") + "/nodeform-test-XXXXXX";
    if (mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
}

TempDir::~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
}

}  // namespace nodeform::test
