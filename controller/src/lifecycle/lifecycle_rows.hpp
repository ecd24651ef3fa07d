#pragma once
// The lifecycle tables' rows as both stores (SQLite, PostgreSQL) read and write them: the same columns in the same
// order, the same JSON in the text columns. Each store only speaks its own SQL dialect and driver.
#include <chrono>
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "nodeform/controller/lifecycle/lifecycle.hpp"
#include "nodeform/json_limits.hpp"

namespace nodeform::controller::lifecycle::rows {

inline constexpr const char* kNodeColumns =
    "identity,state,step,endpoint,pve_node,vmid,pending_upid,failed_step,reason,ips,token_expires_at,updated_at";
inline constexpr const char* kReceiptColumns = "id,identity,step,outcome,state_after,started_at,finished_at,body";

template <typename Clock_TimePoint>
std::int64_t to_ms(Clock_TimePoint t) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

// A JSON column as stored, or null when it is not JSON within the document limits.
inline nlohmann::json stored_json(const std::string& text) {
    auto j = parse_json_bounded(text, {text.size()});
    return j ? std::move(*j) : nlohmann::json();
}

// The body column of a receipt: what a receipt holds beyond its own columns.
inline std::string receipt_body(const Receipt& r) {
    return nlohmann::json{{"inputs", r.inputs}, {"calls", r.calls}, {"outputs", r.outputs}, {"error", r.error}}.dump();
}

// The ips column of a node record.
inline std::string ips_text(const NodeRecord& r) {
    return nlohmann::json(r.ips).dump();
}

// A row in kNodeColumns order; text(i) and integer(i) read column i.
template <typename Text, typename Integer>
NodeRecord node_from(Text text, Integer integer) {
    NodeRecord r;
    r.identity = text(0);
    r.state = parse_state(text(1)).value_or(State::failed);
    r.step = text(2);
    r.endpoint = text(3);
    r.pve_node = text(4);
    r.vmid = integer(5);
    r.pending_upid = text(6);
    r.failed_step = text(7);
    r.reason = text(8);
    nlohmann::json ips = stored_json(text(9));
    for (const auto& ip : ips.is_array() ? ips : nlohmann::json::array())
        if (ip.is_string()) r.ips.push_back(ip.get<std::string>());
    r.token_expires_at = text(10);
    r.updated_at = text(11);
    return r;
}

// A lifecycle_retries row: failures, next_at (ms since the epoch).
inline RetryState retry_from(std::int64_t failures, std::int64_t next_at_ms) {
    return RetryState{static_cast<int>(failures), TimePoint(std::chrono::milliseconds(next_at_ms))};
}

// A row in kReceiptColumns order.
template <typename Text, typename Integer>
Receipt receipt_from(Text text, Integer integer) {
    Receipt r;
    r.id = integer(0);
    r.identity = text(1);
    r.step = text(2);
    r.outcome = text(3);
    r.state_after = text(4);
    r.started_at = text(5);
    r.finished_at = text(6);
    nlohmann::json body = stored_json(text(7));
    if (body.is_object()) {
        r.inputs = body.value("inputs", nlohmann::json::object());
        r.calls = body.value("calls", nlohmann::json::array());
        r.outputs = body.value("outputs", nlohmann::json::object());
        r.error = body.value("error", "");
    }
    return r;
}

}  // namespace nodeform::controller::lifecycle::rows
