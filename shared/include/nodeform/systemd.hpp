#pragma once
// The two systemd client protocols the daemons speak, implemented natively (no libsystemd, whose
// Debian 12 build drags six compression/crypto libraries into every process):
//  - service notification, sd_notify(3): one datagram to $NOTIFY_SOCKET (a path or "@abstract");
//  - the journal's native protocol (https://systemd.io/JOURNAL_NATIVE_PROTOCOL/): one datagram per
//    entry to /run/systemd/journal/socket, or an empty datagram carrying a sealed memfd when too big.
// Both are documented stable interfaces. Nothing here reads the process environment except
// NotifyEnvironment::from_process(); tests build a NotifyEnvironment by hand.
#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "nodeform/result.hpp"

namespace nodeform::systemd {

// The variables sd_notify(3) and sd_watchdog_enabled(3) read, captured once.
struct NotifyEnvironment {
    std::optional<std::string> notify_socket;  // NOTIFY_SOCKET
    std::optional<std::string> watchdog_usec;  // WATCHDOG_USEC
    std::optional<std::string> watchdog_pid;   // WATCHDOG_PID
    pid_t pid = 0;                             // this process (compared with WATCHDOG_PID)

    // getenv and getpid, read now; later changes to the environment are not seen.
    static NotifyEnvironment from_process();
};

// Sends one state string ("READY=1", "STATUS=…", "WATCHDOG=1", "STOPPING=1") as a single datagram to
// NOTIFY_SOCKET. Ok without sending anything when NOTIFY_SOCKET is unset or empty.
Status notify(const NotifyEnvironment& env, std::string_view state);

// WATCHDOG_USEC when the watchdog is meant for this process (WATCHDOG_PID unset or equal to env.pid),
// zero otherwise or when either variable is malformed: what sd_watchdog_enabled(3) returns.
std::chrono::microseconds watchdog_timeout(const NotifyEnvironment& env);

// Where journald listens for the native protocol.
inline constexpr const char* kJournalSocketPath = "/run/systemd/journal/socket";

// One journal entry: field name → value, in order; a name may repeat.
using JournalFields = std::vector<std::pair<std::string, std::string>>;

// True for a name journald accepts from a client: 1..64 of [A-Z0-9_], not starting with '_' or a digit.
bool valid_journal_field_name(std::string_view name);

// The name to send for a caller's key: lowercase letters uppercased and any other character outside
// [A-Z0-9_] turned into '_'; empty (drop the field) when the result is still not a valid name.
std::string journal_field_name(std::string_view key);

// The datagram payload for one entry: "NAME=value\n", or "NAME\n" + 64-bit little-endian length +
// value + "\n" when the value contains a newline. Fields whose name journal_field_name() rejects are
// left out.
std::string encode_journal_entry(const JournalFields& fields);

// A client of journald's native protocol. Sends never block: a full socket buffer or a missing
// journald is an error for the caller to handle (the logger writes to stderr instead).
class JournalClient {
  public:
    explicit JournalClient(std::string socket_path = kJournalSocketPath);
    ~JournalClient();
    JournalClient(const JournalClient&) = delete;
    JournalClient& operator=(const JournalClient&) = delete;

    // One entry; falls back to a sealed memfd passed with SCM_RIGHTS when the datagram is too big.
    // Thread-safe (one sendmsg per entry on a socket that is never reconfigured).
    Status send(const JournalFields& fields) const;

  private:
    std::string socket_path_;
    int fd_ = -1;
};

}  // namespace nodeform::systemd
