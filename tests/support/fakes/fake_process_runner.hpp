#pragma once
// FakeProcessRunner: a scripted ProcessRunner for unit tests (test-only: nodeform_fakes). Records every request;
// answers with the handler when set, else the first rule whose argv prefix matches, else exit 0 with no output.
#include <algorithm>
#include <functional>
#include <string>
#include <vector>

#include "nodeform/process.hpp"

namespace nodeform::agent {

class FakeProcessRunner final : public ProcessRunner {
  public:
    struct Rule {
        std::vector<std::string> argv_prefix;  // matched against the start of the request's argv
        ProcessResult result;
    };
    Result<ProcessResult> run(const ProcessRequest& request) override {
        requests.push_back(request);
        if (handler) return handler(request);
        for (const auto& rule : rules) {
            if (rule.argv_prefix.size() > request.argv.size()) continue;
            if (std::equal(rule.argv_prefix.begin(), rule.argv_prefix.end(), request.argv.begin())) return rule.result;
        }
        return ProcessResult{0, false, "", ""};
    }
    // Adds a rule answering exit_code/out/err to commands starting with prefix.
    void on(std::vector<std::string> prefix, int exit_code, std::string out = "", std::string err = "") {
        rules.push_back({std::move(prefix), ProcessResult{exit_code, false, std::move(out), std::move(err)}});
    }
    // The argv of every request, each joined with spaces (for readable assertions).
    std::vector<std::string> commands() const {
        std::vector<std::string> lines;
        for (const auto& r : requests) {
            std::string line;
            for (const auto& a : r.argv)
                line += (line.empty() ? "" : " ") + a;
            lines.push_back(line);
        }
        return lines;
    }

    std::function<Result<ProcessResult>(const ProcessRequest&)> handler;
    std::vector<Rule> rules;
    std::vector<ProcessRequest> requests;
};

}  // namespace nodeform::agent
