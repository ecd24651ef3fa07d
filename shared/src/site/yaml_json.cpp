#include "yaml_json.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <limits>
#include <set>
#include <sstream>

#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/parser.h>
#include <yaml-cpp/yaml.h>

namespace nodeform::site::detail {
namespace {

Mark to_mark(const YAML::Mark& mark) {
    if (mark.is_null() || mark.line < 0 || mark.column < 0) return {};
    return {mark.line + 1, mark.column + 1};
}

bool all_digits(const std::string& s, std::size_t from) {
    if (from >= s.size()) return false;
    for (std::size_t i = from; i < s.size(); ++i) {
        if (s[i] < '0' || s[i] > '9') return false;
    }
    return true;
}

bool is_hex_digits(const std::string& s, std::size_t from) {
    if (from >= s.size()) return false;
    for (std::size_t i = from; i < s.size(); ++i) {
        char c = s[i];
        bool hex = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
        if (!hex) return false;
    }
    return true;
}

// YAML 1.2 core-schema float: -?(digits)(.digits)?([eE][-+]?digits)? with at least one of . or e.
bool is_float_text(const std::string& s) {
    std::size_t i = 0;
    if (i < s.size() && (s[i] == '-' || s[i] == '+')) ++i;
    std::size_t digits = 0;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9')
        ++i, ++digits;
    bool dot = false;
    bool exp = false;
    if (i < s.size() && s[i] == '.') {
        dot = true;
        ++i;
        while (i < s.size() && s[i] >= '0' && s[i] <= '9')
            ++i, ++digits;
    }
    if (digits == 0) return false;
    if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
        exp = true;
        ++i;
        if (i < s.size() && (s[i] == '-' || s[i] == '+')) ++i;
        std::size_t exp_digits = 0;
        while (i < s.size() && s[i] >= '0' && s[i] <= '9')
            ++i, ++exp_digits;
        if (exp_digits == 0) return false;
    }
    return i == s.size() && (dot || exp);
}

// Receives parser events only to learn where each document starts.
class DocumentCounter : public YAML::EventHandler {
  public:
    YAML::Mark start;
    void OnDocumentStart(const YAML::Mark& mark) override { start = mark; }
    void OnDocumentEnd() override {}
    void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
    void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
    void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t, const std::string&) override {}
    void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
    void OnSequenceEnd() override {}
    void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
    void OnMapEnd() override {}
};

struct Converter {
    const std::string& file;
    const YamlLimits& limits;
    std::vector<Diagnostic>& diagnostics;
    Document& doc;
    std::size_t nodes = 0;
    bool aborted = false;

    void error(const Mark& mark, const std::string& pointer, std::string message) {
        diagnostics.push_back({file, mark.line, mark.column, pointer_to_field(pointer), std::move(message)});
    }

    // Plain scalars follow the YAML 1.2 core schema; quoted scalars are always strings.
    // A plain scalar with a leading zero (0644) stays a string: YAML 1.1 and 1.2 disagree on its value.
    nlohmann::json scalar(const YAML::Node& node, const std::string& pointer, const Mark& mark) {
        const std::string& text = node.Scalar();
        if (invalid_utf8_at(text) != std::string_view::npos) {
            error(mark, pointer, "the value is not valid UTF-8 (check escapes such as \\ud800)");
            return nullptr;
        }
        const std::string& tag = node.Tag();
        if (tag == "!" || tag == "tag:yaml.org,2002:str") return text;
        if (text.empty() || text == "~" || text == "null" || text == "Null" || text == "NULL") return nullptr;
        if (text == "true" || text == "True" || text == "TRUE") return true;
        if (text == "false" || text == "False" || text == "FALSE") return false;
        std::size_t start = (text[0] == '-' || text[0] == '+') ? 1 : 0;
        if (all_digits(text, start)) {
            if (text.size() - start > 1 && text[start] == '0') return text;
            errno = 0;
            char* end = nullptr;
            long long value = std::strtoll(text.c_str(), &end, 10);
            if (errno == ERANGE) {
                error(mark, pointer, "number " + text + " is out of range");
                return nullptr;
            }
            return static_cast<std::int64_t>(value);
        }
        if (text.size() > 2 && text[0] == '0' && (text[1] == 'x' || text[1] == 'o') &&
            (text[1] == 'x' ? is_hex_digits(text, 2) : all_digits(text, 2))) {
            if (text.size() > 18) {
                error(mark, pointer, "number " + text + " is out of range");
                return nullptr;
            }
            return static_cast<std::int64_t>(std::stoll(text.substr(2), nullptr, text[1] == 'x' ? 16 : 8));
        }
        if (is_float_text(text)) {
            errno = 0;
            double value = std::strtod(text.c_str(), nullptr);
            if (errno == ERANGE) {
                error(mark, pointer, "number " + text + " is out of range");
                return nullptr;
            }
            return value;
        }
        return text;
    }

    nlohmann::json convert(const YAML::Node& node, const std::string& pointer, int depth, const Mark& fallback) {
        if (aborted) return nullptr;
        Mark mark = to_mark(node.Mark());
        if (mark.line == 0) mark = fallback;
        doc.value_marks[pointer] = mark;
        if (++nodes > limits.max_nodes) {
            error(mark, pointer,
                  "the document expands to more than " + std::to_string(limits.max_nodes) +
                      " values (too many aliases?); simplify the file");
            aborted = true;
            return nullptr;
        }
        if (depth > limits.max_depth) {
            error(mark, pointer, "nesting deeper than " + std::to_string(limits.max_depth) + " levels");
            aborted = true;
            return nullptr;
        }
        switch (node.Type()) {
            case YAML::NodeType::Undefined:
            case YAML::NodeType::Null:
                return nullptr;
            case YAML::NodeType::Scalar:
                return scalar(node, pointer, mark);
            case YAML::NodeType::Sequence: {
                nlohmann::json out = nlohmann::json::array();
                std::size_t index = 0;
                for (auto it = node.begin(); it != node.end() && !aborted; ++it, ++index) {
                    out.push_back(convert(*it, pointer_join(pointer, index), depth + 1, mark));
                }
                return out;
            }
            case YAML::NodeType::Map: {
                nlohmann::json out = nlohmann::json::object();
                for (auto it = node.begin(); it != node.end() && !aborted; ++it) {
                    const YAML::Node key = it->first;  // the iterator's pair is a temporary
                    const YAML::Node value = it->second;
                    Mark key_mark = to_mark(key.Mark());
                    if (key_mark.line == 0) key_mark = mark;
                    if (!key.IsScalar()) {
                        error(key_mark, pointer, "a mapping key must be a plain string");
                        ++nodes;
                        continue;
                    }
                    std::string name = key.Scalar();
                    if (invalid_utf8_at(name) != std::string_view::npos) {
                        error(key_mark, pointer, "a mapping key is not valid UTF-8");
                        continue;
                    }
                    std::string child = pointer_join(pointer, name);
                    if (out.contains(name)) {
                        error(key_mark, child, "duplicate key '" + name + "'");
                        continue;
                    }
                    doc.key_marks[child] = key_mark;
                    out[name] = convert(value, child, depth + 1, key_mark);
                }
                return out;
            }
        }
        return nullptr;
    }
};

}  // namespace

// Strict UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF. Returns the offset of the first bad byte.
std::size_t invalid_utf8_at(std::string_view s) {
    std::size_t i = 0;
    while (i < s.size()) {
        unsigned char c = static_cast<unsigned char>(s[i]);
        if (c < 0x80) {
            ++i;
            continue;
        }
        std::size_t n = 0;
        std::uint32_t cp = 0;
        if ((c & 0xE0) == 0xC0) {
            n = 1, cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            n = 2, cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            n = 3, cp = c & 0x07;
        } else {
            return i;
        }
        for (std::size_t k = 1; k <= n; ++k) {
            if (i + k >= s.size()) return i;
            unsigned char cc = static_cast<unsigned char>(s[i + k]);
            if ((cc & 0xC0) != 0x80) return i;
            cp = (cp << 6) | (cc & 0x3F);
        }
        static constexpr std::uint32_t kMin[] = {0, 0x80, 0x800, 0x10000};
        if (cp < kMin[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
        i += n + 1;
    }
    return std::string_view::npos;
}

Mark Document::mark_of(const std::string& pointer, bool key_first) const {
    std::string p = pointer;
    while (true) {
        if (key_first) {
            auto k = key_marks.find(p);
            if (k != key_marks.end() && k->second.line > 0) return k->second;
        }
        auto v = value_marks.find(p);
        if (v != value_marks.end() && v->second.line > 0) return v->second;
        if (!key_first) {
            auto k = key_marks.find(p);
            if (k != key_marks.end() && k->second.line > 0) return k->second;
        }
        if (p.empty()) return {};
        p = p.substr(0, p.rfind('/'));
    }
}

Diagnostic Document::diag(const std::string& pointer, std::string message, bool at_key) const {
    Mark mark = mark_of(pointer, at_key);
    return {file, mark.line, mark.column, pointer_to_field(pointer, &json), std::move(message)};
}

std::string pointer_escape(const std::string& token) {
    std::string out;
    out.reserve(token.size());
    for (char c : token) {
        if (c == '~') {
            out += "~0";
        } else if (c == '/') {
            out += "~1";
        } else {
            out += c;
        }
    }
    return out;
}

std::string pointer_join(const std::string& pointer, const std::string& token) {
    return pointer + "/" + pointer_escape(token);
}

std::string pointer_join(const std::string& pointer, std::size_t index) {
    return pointer + "/" + std::to_string(index);
}

std::vector<std::string> pointer_tokens(const std::string& pointer) {
    std::vector<std::string> tokens;
    std::size_t pos = 0;
    while (pos < pointer.size()) {
        std::size_t next = pointer.find('/', pos + 1);
        std::string raw = pointer.substr(pos + 1, next == std::string::npos ? std::string::npos : next - pos - 1);
        std::string token;
        for (std::size_t i = 0; i < raw.size(); ++i) {
            if (raw[i] == '~' && i + 1 < raw.size()) {
                token += raw[i + 1] == '1' ? '/' : '~';
                ++i;
            } else {
                token += raw[i];
            }
        }
        tokens.push_back(std::move(token));
        if (next == std::string::npos) break;
        pos = next;
    }
    return tokens;
}

std::string pointer_to_field(const std::string& pointer, const nlohmann::json* doc) {
    std::string field;
    const nlohmann::json* node = doc;
    for (const auto& token : pointer_tokens(pointer)) {
        bool index = false;
        if (node != nullptr) {
            index = node->is_array();
            const nlohmann::json* child = nullptr;
            if (node->is_array() && all_digits(token, 0)) {
                std::size_t i = std::stoul(token.substr(0, 9));
                if (i < node->size()) child = &(*node)[i];
            } else if (node->is_object()) {
                auto it = node->find(token);
                if (it != node->end()) child = &*it;
            }
            node = child;
        } else {
            index = doc == nullptr && all_digits(token, 0);
        }
        if (index) {
            field += "[" + token + "]";
        } else {
            if (!field.empty()) field += ".";
            field += token;
        }
    }
    return field;
}

std::optional<Document> parse_yaml(const std::string& text, const std::string& file, const YamlLimits& limits,
                                   std::vector<Diagnostic>& diagnostics) {
    if (text.find('\0') != std::string::npos) {
        diagnostics.push_back({file, 0, 0, "", "the file contains a NUL byte; it must be UTF-8 YAML text"});
        return std::nullopt;
    }
    if (std::size_t bad = invalid_utf8_at(text); bad != std::string_view::npos) {
        int line = 1;
        int column = 1;
        for (std::size_t i = 0; i < bad; ++i) {
            if (text[i] == '\n') {
                ++line, column = 1;
            } else {
                ++column;
            }
        }
        diagnostics.push_back({file, line, column, "", "the file is not valid UTF-8; save it as UTF-8 text"});
        return std::nullopt;
    }
    // yaml-cpp 0.7's LoadAll() loops forever on a stray ',' (jbeder/yaml-cpp#1040): count documents with a bounded
    // loop of our own, then build the first one with Load().
    int documents = 0;
    YAML::Mark second_document;
    YAML::Node root;
    try {
        std::istringstream stream(text);
        YAML::Parser parser(stream);
        DocumentCounter counter;
        while (documents < 2 && parser.HandleNextDocument(counter)) {
            ++documents;
            if (documents == 2) second_document = counter.start;
        }
        if (documents == 1) root = YAML::Load(text);
    } catch (const YAML::DeepRecursion& e) {
        Mark mark = to_mark(e.mark);
        diagnostics.push_back(
            {file, mark.line, mark.column, "", "nesting is too deep (more than " + std::to_string(e.depth()) + ")"});
        return std::nullopt;
    } catch (const YAML::Exception& e) {
        Mark mark = to_mark(e.mark);
        diagnostics.push_back({file, mark.line, mark.column, "", "invalid YAML: " + e.msg});
        return std::nullopt;
    } catch (const std::exception& e) {
        diagnostics.push_back({file, 0, 0, "", std::string("invalid YAML: ") + e.what()});
        return std::nullopt;
    }
    if (documents > 1) {
        Mark mark = to_mark(second_document);
        diagnostics.push_back({file, mark.line, mark.column, "",
                               "the file holds more than one YAML document (or stray text after the first); "
                               "put one document in each file"});
        return std::nullopt;
    }
    Document doc;
    doc.file = file;
    if (documents == 0 || root.IsNull()) {
        diagnostics.push_back({file, 1, 1, "", "the file is empty; expected a mapping"});
        return std::nullopt;
    }
    std::size_t before = diagnostics.size();
    Converter converter{file, limits, diagnostics, doc};
    try {
        doc.json = converter.convert(root, "", 1, Mark{1, 1});
    } catch (const std::exception& e) {
        diagnostics.push_back({file, 0, 0, "", std::string("cannot read the YAML document: ") + e.what()});
        return std::nullopt;
    }
    if (converter.aborted) return std::nullopt;
    if (!doc.json.is_object()) {
        Mark mark = doc.mark_of("");
        diagnostics.push_back({file, mark.line, mark.column, "", "expected a mapping at the top of the file"});
        return std::nullopt;
    }
    (void)before;
    return doc;
}

std::optional<std::string> read_bounded(const std::string& path, std::size_t max_bytes, std::string& reason) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        reason = std::string("cannot open: ") + std::strerror(errno);
        return std::nullopt;
    }
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
        reason = std::string("cannot stat: ") + std::strerror(errno);
        ::close(fd);
        return std::nullopt;
    }
    if (!S_ISREG(st.st_mode)) {
        reason = "not a regular file";
        ::close(fd);
        return std::nullopt;
    }
    if (static_cast<std::uint64_t>(st.st_size) > max_bytes) {
        reason = "the file is " + std::to_string(st.st_size) + " bytes; the limit is " + std::to_string(max_bytes) +
                 " bytes";
        ::close(fd);
        return std::nullopt;
    }
    std::string content;
    char buffer[65536];
    while (true) {
        ssize_t n = ::read(fd, buffer, sizeof buffer);
        if (n < 0) {
            if (errno == EINTR) continue;
            reason = std::string("cannot read: ") + std::strerror(errno);
            ::close(fd);
            return std::nullopt;
        }
        if (n == 0) break;
        content.append(buffer, static_cast<std::size_t>(n));
        if (content.size() > max_bytes) {
            reason = "the file is larger than the limit of " + std::to_string(max_bytes) + " bytes";
            ::close(fd);
            return std::nullopt;
        }
    }
    ::close(fd);
    return content;
}

}  // namespace nodeform::site::detail
