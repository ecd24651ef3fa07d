#pragma once
// ProcessRunner: the only way nodeform starts a program. argv only, never a shell.
#include <chrono>
#include <map>
#include <string>
#include <vector>

#include "nodeform/result.hpp"

namespace nodeform {

struct ProcessRequest {
    std::vector<std::string> argv;           // argv[0] is an absolute path or a name looked up in PATH
    std::map<std::string, std::string> env;  // added to a minimal clean environment (PATH, LANG=C)
    std::string stdin_data;                  // written to the child's stdin, then closed
    std::chrono::milliseconds timeout{std::chrono::minutes(10)};
    std::size_t output_limit = 64 * 1024;  // bytes kept of stdout and of stderr each
    std::vector<std::string> redact;       // substrings replaced by "[REDACTED]" in captured output
    std::string working_dir;               // empty = inherit
};

struct ProcessResult {
    int exit_code = -1;  // -1 when killed by a signal or timed out
    bool timed_out = false;
    std::string out;  // captured, truncated to output_limit, redacted
    std::string err;
};

class ProcessRunner {
  public:
    virtual ~ProcessRunner() = default;
    // Err only when the program could not be started at all; a non-zero exit is a normal result.
    virtual Result<ProcessResult> run(const ProcessRequest& request) = 0;
};

// Replaces every occurrence of each secret in text with "[REDACTED]".
std::string redact_secrets(std::string text, const std::vector<std::string>& secrets);

// One line describing a command for logs: argv joined, each secret redacted.
std::string describe_command(const std::vector<std::string>& argv, const std::vector<std::string>& secrets);

}  // namespace nodeform
