#pragma once
// Paths tests need: the source tree (for tests/data, examples), the build tree, and scratch dirs.
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

}  // namespace nodeform::test
