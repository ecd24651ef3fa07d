#include "nodeform/process.hpp"

namespace nodeform {

std::string redact_secrets(std::string text, const std::vector<std::string>& secrets) {
    static const std::string kMark = "[REDACTED]";
    for (const auto& secret : secrets) {
        if (secret.empty()) continue;
        std::size_t pos = 0;
        while ((pos = text.find(secret, pos)) != std::string::npos) {
            text.replace(pos, secret.size(), kMark);
            pos += kMark.size();
        }
    }
    return text;
}

std::string describe_command(const std::vector<std::string>& argv, const std::vector<std::string>& secrets) {
    std::string line;
    for (const auto& arg : argv) {
        if (!line.empty()) line.push_back(' ');
        bool plain = !arg.empty() && arg.find_first_of(" \t\n'\"\\$`") == std::string::npos;
        line += plain ? arg : "'" + arg + "'";
    }
    return redact_secrets(line, secrets);
}

}  // namespace nodeform
