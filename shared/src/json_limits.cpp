#include "nodeform/json_limits.hpp"

#include <sstream>

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/exceptions.h>
#include <yaml-cpp/parser.h>
#include <yaml-cpp/yaml.h>

namespace nodeform {
namespace {

std::string too_large(std::size_t size, std::size_t limit) {
    return "larger than " + std::to_string(limit) + " bytes (" + std::to_string(size) + ")";
}

std::string too_deep(std::size_t limit) {
    return "nested deeper than " + std::to_string(limit) + " levels";
}

struct TooDeep {
    YAML::Mark mark;
};

// Follows the nesting of mappings and sequences; throws TooDeep beyond the limit.
class DepthCounter : public YAML::EventHandler {
  public:
    explicit DepthCounter(std::size_t limit) : limit_(limit) {}
    void OnDocumentStart(const YAML::Mark&) override {}
    void OnDocumentEnd() override {}
    void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
    void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
    void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t, const std::string&) override {}
    void OnSequenceStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t,
                         YAML::EmitterStyle::value) override {
        enter(mark);
    }
    void OnSequenceEnd() override { --depth_; }
    void OnMapStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {
        enter(mark);
    }
    void OnMapEnd() override { --depth_; }

  private:
    void enter(const YAML::Mark& mark) {
        if (++depth_ > limit_) throw TooDeep{mark};
    }
    std::size_t limit_;
    std::size_t depth_ = 0;
};

std::string at(const YAML::Mark& mark) {
    if (mark.is_null() || mark.line < 0) return "";
    return std::to_string(mark.line + 1) + ":" + std::to_string(mark.column + 1) + ": ";
}

}  // namespace

std::size_t json_nesting_depth(std::string_view text, std::size_t cap) {
    std::size_t depth = 0, deepest = 0;
    bool in_string = false, escaped = false;
    for (char c : text) {
        if (in_string) {
            if (escaped) {
                escaped = false;
            } else if (c == '\\') {
                escaped = true;
            } else if (c == '"') {
                in_string = false;
            }
            continue;
        }
        if (c == '"') {
            in_string = true;
        } else if (c == '[' || c == '{') {
            if (++depth > deepest && (deepest = depth) > cap) return deepest;
        } else if ((c == ']' || c == '}') && depth > 0) {
            --depth;
        }
    }
    return deepest;
}

Result<nlohmann::json> parse_json_bounded(std::string_view text, const DocumentLimits& limits) {
    if (text.size() > limits.max_bytes) return make_error(too_large(text.size(), limits.max_bytes));
    if (json_nesting_depth(text, limits.max_depth) > limits.max_depth) return make_error(too_deep(limits.max_depth));
    try {
        return nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {  // parse_error, and out_of_range for a number like 1e400
        std::string what = e.what();
        if (auto p = what.find("] "); what.rfind("[json.exception", 0) == 0 && p != std::string::npos)
            what = what.substr(p + 2);
        return make_error("not valid JSON: " + what);
    }
}

Result<YAML::Node> load_yaml_bounded(const std::string& text, const DocumentLimits& limits) {
    if (text.size() > limits.max_bytes) return make_error(too_large(text.size(), limits.max_bytes));
    try {
        // Depth first, event by event (no tree is built); one document only (yaml-cpp's LoadAll can loop forever).
        std::istringstream stream(text);
        YAML::Parser parser(stream);
        DepthCounter counter(limits.max_depth);
        if (parser.HandleNextDocument(counter) && parser.HandleNextDocument(counter))
            return make_error("more than one YAML document (or stray text after the first)");
        return YAML::Load(text);
    } catch (const TooDeep& e) {
        return make_error(at(e.mark) + too_deep(limits.max_depth));
    } catch (const YAML::Exception& e) {
        return make_error(at(e.mark) + "invalid YAML: " + e.msg);
    }
}

}  // namespace nodeform
