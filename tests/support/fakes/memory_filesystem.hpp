#pragma once
// MemoryFilesystem: the agent's Filesystem seam in memory, for unit tests (test-only: nodeform_fakes).
#include <map>
#include <optional>
#include <string>

#include "nodeform/agent/system/filesystem.hpp"

namespace nodeform::agent {

// In-memory filesystem for unit tests. Symlinks are stored (read_link) but never followed.
class MemoryFilesystem final : public Filesystem {
  public:
    struct Node {
        FileType type = FileType::regular;
        std::string content;
        FileAttrs attrs;
        std::string target;  // symlinks
    };
    MemoryFilesystem();
    // Test setup: creates parent directories (0755 root:root) as needed.
    void put_file(const std::string& path, const std::string& content, FileAttrs attrs = {});
    void put_dir(const std::string& path, FileAttrs attrs = {0755, 0, 0});
    bool exists(const std::string& path) const { return nodes.count(path) > 0; }
    // Every write_atomic fails with this message while set (simulates a full disk).
    std::optional<std::string> fail_writes;
    // What space() answers for any existing path.
    SpaceInfo space_info{1024ull * 1024 * 1024, 512ull * 1024 * 1024};

    Result<std::optional<FileInfo>> stat(const std::string& path) override;
    Result<std::string> read(const std::string& path, std::size_t max_bytes) override;
    Status write_atomic(const std::string& path, const std::string& content, const FileAttrs& attrs) override;
    Status chmod(const std::string& path, mode_t mode) override;
    Status chown(const std::string& path, uid_t uid, gid_t gid) override;
    Status mkdir(const std::string& path, mode_t mode) override;
    Status remove(const std::string& path) override;
    Status rename(const std::string& from, const std::string& to) override;
    Result<std::vector<std::string>> list(const std::string& dir) override;
    Result<SpaceInfo> space(const std::string& path) override;
    Result<std::string> read_link(const std::string& path) override;
    Status symlink(const std::string& target, const std::string& path) override;
    const std::string& root() const override { return root_; }
    std::string host_path(const std::string& path) const override { return path; }
    Result<std::string> pin_directory(const std::string& path) override;

    std::map<std::string, Node> nodes;  // by normalised absolute path; "/" always present

  private:
    std::string root_ = "/";
};

}  // namespace nodeform::agent
