// Every case under tests/data/invalid/ (an overlay on tests/data/valid/minimal, test::invalid_site) must be
// rejected with the diagnostic its expected-error.txt names, without leaking any secrets.yaml value.
#include <gtest/gtest.h>

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

class InvalidSite : public ::testing::TestWithParam<std::string> {};

TEST_P(InvalidSite, IsRejectedWithTheDocumentedError) {
    test::TempDir temp;
    std::string dir = test::invalid_site(GetParam(), temp);
    LoadOptions options;
    options.getenv = [](const std::string&) { return std::optional<std::string>(); };
    LoadResult result = load_site(dir, options);
    ASSERT_FALSE(result.ok()) << GetParam() << " was accepted";
    ASSERT_FALSE(result.diagnostics.empty());

    std::string all;
    for (const auto& d : result.diagnostics)
        all += d.to_string() + "\n";
    std::istringstream expected(test::slurp(test::data_dir() + "/invalid/" + GetParam() + "/expected-error.txt"));
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
