// Every tree under tests/data/invalid/ must be rejected with the diagnostic its expected-error.txt names,
// without leaking any secrets.yaml value. Trees with generate.json get their oversized file written at test time.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "nodeform/site/site.hpp"
#include "test_paths.hpp"

namespace nodeform::site {
namespace {

namespace fs = std::filesystem;

std::vector<std::string> case_names() {
    std::vector<std::string> names;
    for (const auto& entry : fs::directory_iterator(test::data_dir() + "/invalid")) {
        if (entry.is_directory()) names.push_back(entry.path().filename().string());
    }
    std::sort(names.begin(), names.end());
    return names;
}

std::string slurp(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

// Writes the file a generate.json asks for: {"file", "kind": huge|deep-flow|deep-block|laughs, ...}.
void materialize(const std::string& dir, const nlohmann::json& spec) {
    std::string path = dir + "/" + spec.at("file").get<std::string>();
    fs::create_directories(fs::path(path).parent_path());
    std::string kind = spec.at("kind");
    if (kind == "huge") {
        // A sparse file: the loader must refuse it from its size, without reading 100 MB.
        int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        ASSERT_GE(fd, 0);
        ASSERT_EQ(::ftruncate(fd, spec.at("bytes").get<off_t>()), 0);
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
        FAIL() << "unknown generate kind " << kind;
    }
}

class InvalidSite : public ::testing::TestWithParam<std::string> {};

TEST_P(InvalidSite, IsRejectedWithTheDocumentedError) {
    std::string dir = test::data_dir() + "/invalid/" + GetParam();
    test::TempDir temp;
    if (fs::exists(dir + "/generate.json")) {
        std::string copy = temp.path() + "/site";
        fs::copy(dir, copy, fs::copy_options::recursive);
        materialize(copy, nlohmann::json::parse(slurp(dir + "/generate.json")));
        dir = copy;
    }
    LoadOptions options;
    options.getenv = [](const std::string&) { return std::optional<std::string>(); };
    LoadResult result = load_site(dir, options);
    ASSERT_FALSE(result.ok()) << GetParam() << " was accepted";
    ASSERT_FALSE(result.diagnostics.empty());

    std::string all;
    for (const auto& d : result.diagnostics)
        all += d.to_string() + "\n";
    std::istringstream expected(slurp(dir + "/expected-error.txt"));
    std::string line;
    int checked = 0;
    while (std::getline(expected, line)) {
        if (line.empty()) continue;
        ++checked;
        EXPECT_NE(all.find(line), std::string::npos) << "expected: " << line << "\ngot:\n" << all;
    }
    EXPECT_GT(checked, 0) << "expected-error.txt is empty";
    // The fake secrets all carry this marker; no diagnostic may repeat one.
    EXPECT_EQ(all.find("SECRETVALUE"), std::string::npos) << all;
}

INSTANTIATE_TEST_SUITE_P(Corpus, InvalidSite, ::testing::ValuesIn(case_names()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                             std::string name = info.param;
                             for (char& c : name) {
                                 if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                             }
                             return name;
                         });

TEST(InvalidCorpus, HasAtLeastFortyCases) {
    EXPECT_GE(case_names().size(), 40u);
}

}  // namespace
}  // namespace nodeform::site
