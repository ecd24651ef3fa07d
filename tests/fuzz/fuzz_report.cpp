// libFuzzer: arbitrary bytes → the controller's report boundary (bounded JSON parse, then the report schema and
// the checks past it). Must never crash, hang, leak or throw; a report that parses is stored as its canonical
// JSON, and that text must parse again to the same report (what the store keeps is what was accepted).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "nodeform/canonical_json.hpp"
#include "nodeform/report.hpp"

using namespace nodeform;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static const protocol::ReportParser parser;  // the schema is parsed once per process, as in the controller
    auto body = protocol::parse_report_json(std::string_view(reinterpret_cast<const char*>(data), size));
    if (!body) return 0;
    auto report = parser.parse(*body);
    if (!report) return 0;
    std::string stored = canonical_dump(protocol::to_json(*report));
    auto again_body = protocol::parse_report_json(stored);
    if (!again_body) std::abort();
    auto again = parser.parse(*again_body);
    if (!again || canonical_dump(protocol::to_json(*again)) != stored) std::abort();
    return 0;
}
