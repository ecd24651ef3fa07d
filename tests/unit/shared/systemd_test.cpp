// The native sd_notify and journal protocol clients against real AF_UNIX datagram sockets, with each
// journal datagram parsed back as journald would (https://systemd.io/JOURNAL_NATIVE_PROTOCOL/).
#include <gtest/gtest.h>

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "nodeform/log.hpp"
#include "nodeform/systemd.hpp"
#include "test_paths.hpp"

namespace nodeform::systemd {
namespace {

// One received datagram: its payload and the file descriptor passed with it (-1 when none).
struct Datagram {
    std::string payload;
    int fd = -1;
    ~Datagram() {
        if (fd >= 0) ::close(fd);
    }
    Datagram() = default;
    Datagram(Datagram&& o) noexcept : payload(std::move(o.payload)), fd(o.fd) { o.fd = -1; }
    Datagram(const Datagram&) = delete;
};

// A bound AF_UNIX datagram socket standing in for systemd's notify socket or journald's socket.
class DatagramServer {
  public:
    // name: a filesystem path, or "@name" for the abstract namespace.
    explicit DatagramServer(const std::string& name) {
        fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd_ < 0) throw std::runtime_error("socket");
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::memcpy(addr.sun_path, name.data(), name.size());
        if (name[0] == '@') addr.sun_path[0] = '\0';
        const auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size());
        if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), len) != 0) throw std::runtime_error("bind " + name);
        const int one = 1;
        ::setsockopt(fd_, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one));
    }
    ~DatagramServer() { ::close(fd_); }

    // The next datagram, or nothing within a generous timeout (a failure, not a timing assertion).
    std::optional<Datagram> receive(int timeout_ms = 10000) {
        pollfd p{fd_, POLLIN, 0};
        if (::poll(&p, 1, timeout_ms) != 1) return std::nullopt;
        std::string buffer(4 * 1024 * 1024, '\0');
        iovec iov{buffer.data(), buffer.size()};
        alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 4) + CMSG_SPACE(sizeof(ucred))] = {};
        msghdr msg{};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control;
        msg.msg_controllen = sizeof(control);
        const ssize_t n = ::recvmsg(fd_, &msg, MSG_CMSG_CLOEXEC);
        if (n < 0) return std::nullopt;
        Datagram d;
        d.payload.assign(buffer.data(), static_cast<std::size_t>(n));
        for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
                EXPECT_EQ(c->cmsg_len, CMSG_LEN(sizeof(int))) << "exactly one descriptor";
                std::memcpy(&d.fd, CMSG_DATA(c), sizeof(int));
            }
        }
        return d;
    }

  private:
    int fd_ = -1;
};

// A journal entry parsed back by the rules journald applies to a native datagram.
using Entry = std::multimap<std::string, std::string>;

Entry parse_entry(const std::string& data) {
    Entry entry;
    std::size_t pos = 0;
    while (pos < data.size()) {
        const std::size_t end = data.find_first_of("=\n", pos);
        if (end == std::string::npos) throw std::runtime_error("field without terminator");
        const std::string name = data.substr(pos, end - pos);
        if (data[end] == '=') {
            const std::size_t nl = data.find('\n', end + 1);
            if (nl == std::string::npos) throw std::runtime_error("value without newline");
            entry.emplace(name, data.substr(end + 1, nl - end - 1));
            pos = nl + 1;
        } else {
            if (end + 9 > data.size()) throw std::runtime_error("truncated binary length");
            std::uint64_t length = 0;
            for (int i = 7; i >= 0; --i)
                length = (length << 8) | static_cast<unsigned char>(data[end + 1 + i]);
            const std::size_t start = end + 9;
            if (start + length + 1 > data.size() || data[start + length] != '\n')
                throw std::runtime_error("binary value not followed by a newline");
            entry.emplace(name, data.substr(start, length));
            pos = start + length + 1;
        }
    }
    return entry;
}

std::string only(const Entry& entry, const std::string& name) {
    EXPECT_EQ(entry.count(name), 1u) << name;
    auto it = entry.find(name);
    return it == entry.end() ? std::string() : it->second;
}

std::string abstract_name() {
    std::random_device rd;
    return "@nodeform-test-" + std::to_string(::getpid()) + "-" + std::to_string(rd());
}

NotifyEnvironment env_with_socket(const std::string& socket) {
    NotifyEnvironment env;
    env.notify_socket = socket;
    env.pid = 4242;
    return env;
}

TEST(SystemdNotify, ReadyAndStatusArriveOnPathSocket) {
    test::TempDir dir;
    const std::string path = dir.path() + "/notify";
    DatagramServer server(path);
    const auto env = env_with_socket(path);
    ASSERT_TRUE(notify(env, "READY=1").ok());
    ASSERT_TRUE(notify(env, "STATUS=ready, 0 drift, 5/5 health").ok());
    auto first = server.receive();
    auto second = server.receive();
    ASSERT_TRUE(first && second);
    EXPECT_EQ(first->payload, "READY=1");
    EXPECT_EQ(second->payload, "STATUS=ready, 0 drift, 5/5 health");
    EXPECT_EQ(first->fd, -1);
}

TEST(SystemdNotify, AbstractNamespaceSocket) {
    const std::string name = abstract_name();
    DatagramServer server(name);
    ASSERT_TRUE(notify(env_with_socket(name), "WATCHDOG=1").ok());
    auto d = server.receive();
    ASSERT_TRUE(d);
    EXPECT_EQ(d->payload, "WATCHDOG=1");
}

TEST(SystemdNotify, UnsetOrEmptySocketIsANoOp) {
    NotifyEnvironment env;
    EXPECT_TRUE(notify(env, "READY=1").ok());
    env.notify_socket = "";
    EXPECT_TRUE(notify(env, "READY=1").ok());
}

TEST(SystemdNotify, UnreachableOrMalformedSocketIsAnError) {
    test::TempDir dir;
    auto missing = notify(env_with_socket(dir.path() + "/nobody-listens"), "READY=1");
    ASSERT_FALSE(missing.ok());
    EXPECT_NE(missing.message().find("NOTIFY_SOCKET"), std::string::npos) << missing.message();
    EXPECT_FALSE(notify(env_with_socket("relative/path"), "READY=1").ok());
    EXPECT_FALSE(notify(env_with_socket("/" + std::string(200, 'x')), "READY=1").ok());
}

TEST(SystemdNotify, FromProcessReadsTheEnvironmentOnce) {
    auto env = NotifyEnvironment::from_process();
    EXPECT_EQ(env.pid, ::getpid());
}

TEST(SystemdWatchdog, PidRuleOfSdWatchdogEnabled) {
    NotifyEnvironment env;
    env.pid = 4242;
    EXPECT_EQ(watchdog_timeout(env).count(), 0) << "unset";
    env.watchdog_usec = "30000000";
    EXPECT_EQ(watchdog_timeout(env).count(), 30000000) << "no WATCHDOG_PID: meant for us";
    env.watchdog_pid = "4242";
    EXPECT_EQ(watchdog_timeout(env).count(), 30000000) << "WATCHDOG_PID is us";
    env.watchdog_pid = "4243";
    EXPECT_EQ(watchdog_timeout(env).count(), 0) << "meant for another process (e.g. our parent)";
    env.watchdog_pid = "42x";
    EXPECT_EQ(watchdog_timeout(env).count(), 0) << "malformed WATCHDOG_PID";
    env.watchdog_pid.reset();
    for (const char* bad : {"", "0", "-5", "12s", " 12", "99999999999999999999999"}) {
        env.watchdog_usec = bad;
        EXPECT_EQ(watchdog_timeout(env).count(), 0) << "WATCHDOG_USEC=" << bad;
    }
}

TEST(JournalProtocol, FieldNames) {
    EXPECT_TRUE(valid_journal_field_name("MESSAGE"));
    EXPECT_TRUE(valid_journal_field_name("NODEFORM_RUN_ID"));
    EXPECT_TRUE(valid_journal_field_name("A1_2"));
    EXPECT_TRUE(valid_journal_field_name(std::string(64, 'A')));
    EXPECT_FALSE(valid_journal_field_name(std::string(65, 'A')));
    EXPECT_FALSE(valid_journal_field_name(""));
    EXPECT_FALSE(valid_journal_field_name("_PID"));
    EXPECT_FALSE(valid_journal_field_name("1ABC"));
    EXPECT_FALSE(valid_journal_field_name("lower"));
    EXPECT_FALSE(valid_journal_field_name("A=B"));
    EXPECT_FALSE(valid_journal_field_name("A\nB"));
    EXPECT_EQ(journal_field_name("node-id"), "NODE_ID");
    EXPECT_EQ(journal_field_name("Unit"), "UNIT");
    EXPECT_EQ(journal_field_name("_PID"), "") << "a trusted field cannot be forged";
    EXPECT_EQ(journal_field_name("9LIVES"), "");
    EXPECT_EQ(journal_field_name(std::string(65, 'A')), "");
}

TEST(JournalProtocol, PlainAndBinaryForms) {
    const std::string encoded =
        encode_journal_entry({{"MESSAGE", "one line"}, {"NODEFORM_OUTPUT", "two\nlines"}, {"EMPTY", ""}});
    std::string expected = "MESSAGE=one line\nNODEFORM_OUTPUT\n";
    expected += std::string("\x09\0\0\0\0\0\0\0", 8);
    expected += "two\nlines\nEMPTY=\n";
    EXPECT_EQ(encoded, expected);
    auto entry = parse_entry(encoded);
    EXPECT_EQ(only(entry, "NODEFORM_OUTPUT"), "two\nlines");
    EXPECT_EQ(only(entry, "EMPTY"), "");
}

TEST(JournalProtocol, InvalidFieldNamesAreNeverSent) {
    const std::string encoded = encode_journal_entry(
        {{"MESSAGE", "m"}, {"_PID", "1"}, {"1ABC", "x"}, {std::string(65, 'A'), "x"}, {"", "x"}, {"A=B", "v"}});
    auto entry = parse_entry(encoded);
    EXPECT_EQ(entry.size(), 2u) << encoded;
    EXPECT_EQ(only(entry, "MESSAGE"), "m");
    EXPECT_EQ(only(entry, "A_B"), "v") << "renamed, so the '=' cannot split the field";
    EXPECT_EQ(encoded.find("_PID"), std::string::npos);
}

TEST(JournaldLogger, SendsStructuredEntriesToTheSocket) {
    test::TempDir dir;
    const std::string path = dir.path() + "/journal";
    DatagramServer journal(path);
    auto logger = make_journald_logger("nodeform-agent", LogLevel::info, path);
    logger->debug("below the level: never sent");
    logger->error("converge failed\nsecond line", {{"NODEFORM_STATUS", "failed"},
                                                   {"NODEFORM_RUN_ID", "run-1"},
                                                   {"_SYSTEMD_UNIT", "forged"},
                                                   {"bad name", "renamed"}});
    auto d = journal.receive();
    ASSERT_TRUE(d);
    EXPECT_EQ(d->fd, -1);
    auto entry = parse_entry(d->payload);
    EXPECT_EQ(only(entry, "MESSAGE"), "converge failed\nsecond line");
    EXPECT_EQ(only(entry, "PRIORITY"), "3");
    EXPECT_EQ(only(entry, "SYSLOG_IDENTIFIER"), "nodeform-agent");
    EXPECT_EQ(only(entry, "NODEFORM_STATUS"), "failed");
    EXPECT_EQ(only(entry, "NODEFORM_RUN_ID"), "run-1");
    EXPECT_EQ(only(entry, "BAD_NAME"), "renamed");
    EXPECT_EQ(entry.count("_SYSTEMD_UNIT"), 0u);
    EXPECT_EQ(entry.size(), 6u);

    logger->notice("second");
    auto next = journal.receive();
    ASSERT_TRUE(next);
    auto second = parse_entry(next->payload);
    EXPECT_EQ(only(second, "MESSAGE"), "second") << "the debug line was dropped, not queued";
    EXPECT_EQ(only(second, "PRIORITY"), "5");
}

// The size that cannot go as one datagram: 300 KiB, or more if this host's default send buffer is larger.
std::size_t oversized() {
    std::size_t size = 300 * 1024;
    std::ifstream wmem("/proc/sys/net/core/wmem_default");
    std::size_t wmem_default = 0;
    if (wmem >> wmem_default && wmem_default + 64 * 1024 > size) size = wmem_default + 64 * 1024;
    return size;
}

TEST(JournalClient, LargeEntryTravelsInASealedMemfd) {
    test::TempDir dir;
    const std::string path = dir.path() + "/journal";
    DatagramServer journal(path);
    std::string message(oversized(), 'x');
    for (std::size_t i = 0; i < message.size(); i += 1000)
        message[i] = static_cast<char>('a' + (i / 1000) % 26);
    message[message.size() / 2] = '\n';
    JournalClient client(path);
    auto sent = client.send({{"MESSAGE", message}, {"NODEFORM_STATUS", "ok"}});
    ASSERT_TRUE(sent.ok()) << sent.message();

    auto d = journal.receive();
    ASSERT_TRUE(d);
    EXPECT_EQ(d->payload.size(), 0u) << "payload and descriptor never travel together";
    ASSERT_GE(d->fd, 0) << "no SCM_RIGHTS descriptor";
    const int seals = ::fcntl(d->fd, F_GET_SEALS);
    EXPECT_EQ(seals & (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL),
              F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL);
    struct stat st {};
    ASSERT_EQ(::fstat(d->fd, &st), 0);
    std::string data(static_cast<std::size_t>(st.st_size), '\0');
    ASSERT_EQ(::pread(d->fd, data.data(), data.size(), 0), static_cast<ssize_t>(data.size()));
    auto entry = parse_entry(data);
    EXPECT_EQ(only(entry, "MESSAGE"), message);
    EXPECT_EQ(only(entry, "NODEFORM_STATUS"), "ok");
}

TEST(JournalClient, NoJournaldIsAnErrorNotACrash) {
    test::TempDir dir;
    JournalClient client(dir.path() + "/no-journald");
    auto sent = client.send({{"MESSAGE", "hello"}});
    EXPECT_FALSE(sent.ok());
    EXPECT_FALSE(client.send({{"MESSAGE", std::string(oversized(), 'y')}}).ok());
    EXPECT_FALSE(JournalClient("relative").send({{"MESSAGE", "hello"}}).ok());
}

TEST(JournalClient, AFullQueueFailsInsteadOfBlocking) {
    test::TempDir dir;
    const std::string path = dir.path() + "/journal";
    DatagramServer journal(path);  // never read: its queue fills up
    JournalClient client(path);
    bool refused = false;
    for (int i = 0; i < 10000 && !refused; ++i)
        refused = !client.send({{"MESSAGE", "line " + std::to_string(i)}}).ok();
    EXPECT_TRUE(refused) << "the queue never filled, or every send blocked until there was room";
    auto first = journal.receive();
    ASSERT_TRUE(first);
    EXPECT_EQ(only(parse_entry(first->payload), "MESSAGE"), "line 0");
}

TEST(JournaldLogger, FallsBackToStderrWithoutJournald) {
    test::TempDir dir;
    auto logger = make_journald_logger("nodeform-agent", LogLevel::info, dir.path() + "/no-journald");
    testing::internal::CaptureStderr();
    logger->warning("journald is gone", {{"NODEFORM_STATUS", "failed"}});
    const std::string err = testing::internal::GetCapturedStderr();
    EXPECT_NE(err.find("journald is gone"), std::string::npos) << err;
    EXPECT_NE(err.find("NODEFORM_STATUS=failed"), std::string::npos) << err;
}

}  // namespace
}  // namespace nodeform::systemd
