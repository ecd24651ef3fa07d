#include "test_paths.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

namespace nodeform::test {

namespace fs = std::filesystem;

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
    fs::remove_all(path_, ec);
}

std::string slurp(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

void write_text(const std::string& path, const std::string& text) {
    fs::create_directories(fs::path(path).parent_path());
    std::ofstream(path, std::ios::binary) << text;
}

std::string cached_rootfs() {
    std::string path;
    if (const char* env = std::getenv("NODEFORM_TEST_ROOTFS"); env && *env) {
        path = env;
    } else {
        path = slurp("/var/cache/nodeform-test/agent-rootfs.path");
    }
    while (!path.empty() && path.back() == '\n')
        path.pop_back();
    if (path.empty() || !fs::exists(path + "/.nodeform-complete")) return {};
    return path;
}

namespace {

// Writes the file a generate.json asks for: {"file", "kind": huge|deep-flow|deep-block|laughs, ...}.
void materialize(const std::string& dir, const nlohmann::json& spec) {
    std::string path = dir + "/" + spec.at("file").get<std::string>();
    fs::create_directories(fs::path(path).parent_path());
    std::string kind = spec.at("kind");
    if (kind == "huge") {
        // A sparse file: the loader must refuse it from its size, without reading 100 MB.
        int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0 || ::ftruncate(fd, spec.at("bytes").get<off_t>()) != 0)
            throw std::runtime_error("cannot write " + path);
        ::close(fd);
        return;
    }
    std::ofstream out(path, std::ios::binary);
    if (kind == "deep-flow") {
        int depth = spec.at("depth");
        out << "x: " << std::string(depth, '[') << std::string(depth, ']') << "\n";
    } else if (kind == "deep-block") {
        int depth = spec.at("depth");
        out << "x:\n  ";
        for (int i = 0; i < depth; ++i)
            out << "- ";
        out << "leaf\n";
    } else if (kind == "laughs") {
        int levels = spec.at("levels");
        out << "a0: &a0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n";
        for (int i = 1; i < levels; ++i) {
            out << "a" << i << ": &a" << i << " [";
            for (int k = 0; k < 10; ++k)
                out << (k ? "," : "") << "*a" << (i - 1);
            out << "]\n";
        }
    } else {
        throw std::runtime_error("unknown generate kind " + kind);
    }
}

}  // namespace

std::string invalid_site(const std::string& name, const TempDir& temp) {
    const std::string overlay = data_dir() + "/invalid/" + name;
    if (!fs::is_directory(overlay)) throw std::runtime_error("no invalid corpus case " + overlay);
    const std::string site = temp.path() + "/" + name;
    fs::copy(data_dir() + "/valid/minimal", site, fs::copy_options::recursive);
    for (const auto& entry : fs::recursive_directory_iterator(overlay)) {
        const std::string rel = fs::relative(entry.path(), overlay).string();
        if (rel == "expected-error.txt" || rel == "generate.json" || rel == "delete.txt") continue;
        if (entry.is_directory()) {
            fs::create_directories(site + "/" + rel);
        } else {
            fs::copy_file(entry.path(), site + "/" + rel, fs::copy_options::overwrite_existing);
        }
    }
    std::istringstream deleted(slurp(overlay + "/delete.txt"));
    for (std::string rel; std::getline(deleted, rel);) {
        if (!rel.empty() && !fs::remove(site + "/" + rel)) throw std::runtime_error(name + ": cannot delete " + rel);
    }
    if (fs::exists(overlay + "/generate.json"))
        materialize(site, nlohmann::json::parse(slurp(overlay + "/generate.json")));
    return site;
}

}  // namespace nodeform::test
