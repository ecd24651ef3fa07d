#include "nodeform/atomic_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

namespace nodeform {
namespace {

std::string errno_text(const std::string& what, const std::string& path) {
    return what + " " + path + ": " + std::strerror(errno);
}

Status write_all(int fd, const std::string& content, const std::string& path) {
    std::size_t written = 0;
    while (written < content.size()) {
        ssize_t n = ::write(fd, content.data() + written, content.size() - written);
        if (n < 0) {
            if (errno == EINTR) continue;
            return make_error(errno_text("cannot write", path));
        }
        written += static_cast<std::size_t>(n);
    }
    return Ok{};
}

}  // namespace

Status write_file_atomic(const std::string& path, const std::string& content, const WriteOptions& options) {
    namespace fs = std::filesystem;
    fs::path target(path);
    fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
    if (options.create_parents) {
        std::error_code ec;
        fs::create_directories(dir, ec);
        if (ec) return make_error("cannot create directory " + dir.string() + ": " + ec.message());
    }
    std::random_device rd;
    std::string tmp = (dir / ("." + target.filename().string() + ".nodeform-tmp-" + std::to_string(rd()))).string();
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, options.mode);
    if (fd < 0) return make_error(errno_text("cannot create", tmp));
    auto fail = [&](Error e) {
        ::close(fd);
        ::unlink(tmp.c_str());
        return e;
    };
    if (auto st = write_all(fd, content, tmp); !st) return fail(st.error());
    if (::fchmod(fd, options.mode) != 0) return fail(make_error(errno_text("cannot chmod", tmp)));
    if (::fsync(fd) != 0) return fail(make_error(errno_text("cannot fsync", tmp)));
    if (::close(fd) != 0) {
        ::unlink(tmp.c_str());
        return make_error(errno_text("cannot close", tmp));
    }
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        std::string message = errno_text("cannot rename into place", path);
        ::unlink(tmp.c_str());
        return make_error(message);
    }
    int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        ::fsync(dfd);
        ::close(dfd);
    }
    return Ok{};
}

Result<std::string> read_file(const std::string& path, std::size_t max_bytes) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return make_error(errno_text("cannot open", path));
    std::string content;
    char buffer[65536];
    while (in) {
        in.read(buffer, sizeof buffer);
        content.append(buffer, static_cast<std::size_t>(in.gcount()));
        if (content.size() > max_bytes) {
            return make_error(path + ": file is larger than " + std::to_string(max_bytes) + " bytes");
        }
    }
    if (in.bad()) return make_error(errno_text("cannot read", path));
    return content;
}

}  // namespace nodeform
