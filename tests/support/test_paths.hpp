#pragma once
// Paths and files tests need: the source tree (for tests/data, examples), the build tree, scratch dirs,
// the cached Debian root of the root tests, and the invalid site corpus assembled from its overlays.
#include <string>

namespace nodeform::test {

std::string source_dir();  // the repository root
std::string binary_dir();  // the CMake build tree
std::string data_dir();    // tests/data
// A fresh empty directory under $TMPDIR, removed when the returned object dies.
class TempDir {
  public:
    TempDir();
    ~TempDir();
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    const std::string& path() const { return path_; }

  private:
    std::string path_;
};

// The content of path, empty when it cannot be read.
std::string slurp(const std::string& path);
// Writes text to path, creating parent directories.
void write_text(const std::string& path, const std::string& text);

// The debootstrapped root prepared by scripts/test-setup.sh ($NODEFORM_TEST_ROOTFS overrides); empty when
// there is none or it is incomplete (no .nodeform-complete).
std::string cached_rootfs();

// tests/data/invalid/NAME assembled under temp: tests/data/valid/minimal, then the case's files over it, the
// paths its delete.txt lists removed, the file its generate.json describes written. Returns the site directory.
std::string invalid_site(const std::string& name, const TempDir& temp);

}  // namespace nodeform::test
