// Native sd_notify(3) and journal native protocol clients; see the header for the contracts.
#include "nodeform/systemd.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>

namespace nodeform::systemd {
namespace {

std::optional<std::string> env_var(const char* name) {
    const char* value = std::getenv(name);
    if (value == nullptr) return std::nullopt;
    return std::string(value);
}

// A non-negative decimal without sign, spaces or overflow.
std::optional<std::uint64_t> parse_decimal(const std::string& text) {
    if (text.empty() || text.size() > 20) return std::nullopt;
    std::uint64_t value = 0;
    for (char c : text) {
        if (c < '0' || c > '9') return std::nullopt;
        const std::uint64_t digit = static_cast<std::uint64_t>(c - '0');
        if (value > (std::numeric_limits<std::uint64_t>::max() - digit) / 10) return std::nullopt;
        value = value * 10 + digit;
    }
    return value;
}

std::string errno_text(int err) {
    return std::strerror(err);
}

// The address of a socket named by a path ("/run/...") or an abstract name ("@name").
Result<std::pair<sockaddr_un, socklen_t>> unix_address(const std::string& name, const char* what) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (name.empty() || (name[0] != '/' && name[0] != '@'))
        return make_error(std::string(what) + " is neither an absolute path nor an abstract socket name (@…)");
    if (name.size() < 2 || name.size() >= sizeof(addr.sun_path))
        return make_error(std::string(what) + " has an invalid length for a unix socket address");
    std::memcpy(addr.sun_path, name.data(), name.size());
    if (addr.sun_path[0] == '@') addr.sun_path[0] = '\0';
    const auto length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size());
    return std::make_pair(addr, length);
}

class Fd {
  public:
    explicit Fd(int fd) : fd_(fd) {}
    ~Fd() {
        if (fd_ >= 0) ::close(fd_);
    }
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    int get() const { return fd_; }

  private:
    int fd_;
};

// One datagram to address (with the ancillary data in control, if any), retried on EINTR; the sendmsg result.
ssize_t send_datagram(int fd, std::pair<sockaddr_un, socklen_t>& address, std::string_view data, int flags,
                      void* control = nullptr, std::size_t control_size = 0) {
    iovec iov{const_cast<char*>(data.data()), data.size()};
    msghdr msg{};
    msg.msg_name = &address.first;
    msg.msg_namelen = address.second;
    msg.msg_iov = data.empty() ? nullptr : &iov;
    msg.msg_iovlen = data.empty() ? 0 : 1;
    msg.msg_control = control;
    msg.msg_controllen = control_size;
    ssize_t sent = -1;
    do {
        sent = ::sendmsg(fd, &msg, flags | MSG_NOSIGNAL);
    } while (sent < 0 && errno == EINTR);
    return sent;
}

void append_le64(std::string& out, std::uint64_t value) {
    for (int i = 0; i < 8; ++i)
        out.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
}

}  // namespace

NotifyEnvironment NotifyEnvironment::from_process() {
    NotifyEnvironment env;
    env.notify_socket = env_var("NOTIFY_SOCKET");
    env.watchdog_usec = env_var("WATCHDOG_USEC");
    env.watchdog_pid = env_var("WATCHDOG_PID");
    env.pid = ::getpid();
    return env;
}

Status notify(const NotifyEnvironment& env, std::string_view state) {
    if (!env.notify_socket || env.notify_socket->empty()) return Ok{};
    auto address = unix_address(*env.notify_socket, "NOTIFY_SOCKET");
    if (!address) return address.error();
    Fd fd(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (fd.get() < 0) return make_error("notify: socket: " + errno_text(errno));

    const ssize_t sent = send_datagram(fd.get(), *address, state, 0);
    if (sent < 0) return make_error("notify: sending to NOTIFY_SOCKET failed: " + errno_text(errno));
    if (static_cast<std::size_t>(sent) != state.size()) return make_error("notify: short datagram");
    return Ok{};
}

std::chrono::microseconds watchdog_timeout(const NotifyEnvironment& env) {
    const std::chrono::microseconds off(0);
    if (!env.watchdog_usec) return off;
    auto usec = parse_decimal(*env.watchdog_usec);
    if (!usec || *usec == 0 || *usec > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) return off;
    if (env.watchdog_pid) {
        auto pid = parse_decimal(*env.watchdog_pid);
        if (!pid || *pid == 0 || *pid != static_cast<std::uint64_t>(env.pid)) return off;
    }
    return std::chrono::microseconds(static_cast<std::int64_t>(*usec));
}

bool valid_journal_field_name(std::string_view name) {
    if (name.empty() || name.size() > 64) return false;
    if (name[0] == '_' || (name[0] >= '0' && name[0] <= '9')) return false;
    for (char c : name) {
        if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_')) return false;
    }
    return true;
}

std::string journal_field_name(std::string_view key) {
    std::string name;
    name.reserve(key.size());
    for (char c : key) {
        if (c >= 'a' && c <= 'z') {
            name.push_back(static_cast<char>(c - 'a' + 'A'));
        } else if ((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_') {
            name.push_back(c);
        } else {
            name.push_back('_');
        }
    }
    if (!valid_journal_field_name(name)) return {};
    return name;
}

std::string encode_journal_entry(const JournalFields& fields) {
    std::string out;
    for (const auto& [key, value] : fields) {
        const std::string name = journal_field_name(key);
        if (name.empty()) continue;
        out += name;
        if (value.find('\n') == std::string::npos) {
            out.push_back('=');
            out += value;
        } else {
            out.push_back('\n');
            append_le64(out, value.size());
            out += value;
        }
        out.push_back('\n');
    }
    return out;
}

JournalClient::JournalClient(std::string socket_path) : socket_path_(std::move(socket_path)) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
}

JournalClient::~JournalClient() {
    if (fd_ >= 0) ::close(fd_);
}

Status JournalClient::send(const JournalFields& fields) const {
    if (fd_ < 0) return make_error("journal: no socket");
    auto address = unix_address(socket_path_, "the journal socket");
    if (!address) return address.error();
    const std::string payload = encode_journal_entry(fields);
    if (payload.empty()) return make_error("journal: no valid field to send");

    if (send_datagram(fd_, *address, payload, MSG_DONTWAIT) >= 0) return Ok{};
    if (errno != EMSGSIZE && errno != ENOBUFS) return make_error("journal: " + errno_text(errno));

    // Too big for one datagram: the entry goes in a sealed memfd, sent alone in an empty datagram.
    Fd memfd(::memfd_create("journal-entry", MFD_CLOEXEC | MFD_ALLOW_SEALING));
    if (memfd.get() < 0) return make_error("journal: memfd_create: " + errno_text(errno));
    std::size_t done = 0;
    while (done < payload.size()) {
        const ssize_t n = ::write(memfd.get(), payload.data() + done, payload.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return make_error("journal: writing the memfd: " + errno_text(errno));
        done += static_cast<std::size_t>(n);
    }
    if (::fcntl(memfd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) < 0)
        return make_error("journal: sealing the memfd: " + errno_text(errno));

    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
    msghdr layout{};  // only for the CMSG_* macros, which find the header through a msghdr
    layout.msg_control = control;
    layout.msg_controllen = sizeof(control);
    cmsghdr* cmsg = CMSG_FIRSTHDR(&layout);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int));
    const int passed = memfd.get();
    std::memcpy(CMSG_DATA(cmsg), &passed, sizeof(int));
    if (send_datagram(fd_, *address, {}, MSG_DONTWAIT, control, sizeof(control)) < 0)
        return make_error("journal: sending the memfd: " + errno_text(errno));
    return Ok{};
}

}  // namespace nodeform::systemd
