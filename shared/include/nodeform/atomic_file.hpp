#pragma once
// Durable file writes: temp file in the same directory + fsync + rename + fsync of the directory.
#include <sys/types.h>
#include <string>

#include "nodeform/result.hpp"

namespace nodeform {

struct WriteOptions {
    mode_t mode = 0644;
    bool create_parents = false;  // create missing parent directories (mode 0755)
};

Status write_file_atomic(const std::string& path, const std::string& content, const WriteOptions& options = {});
Result<std::string> read_file(const std::string& path, std::size_t max_bytes = 64 * 1024 * 1024);

}  // namespace nodeform
