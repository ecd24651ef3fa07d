#pragma once
// A small simulated Debian for engine unit tests: a MemoryFilesystem with /etc/passwd, /etc/group and
// dpkg's status file, and a FakeProcessRunner whose groupadd/useradd/usermod/apt-get/visudo/systemctl
// update that filesystem the way the real tools would (enough for the engine's logic, nothing more).
#include <set>
#include <sstream>

#include "fakes/fake_process_runner.hpp"
#include "fakes/memory_filesystem.hpp"
#include "fakes/memory_logger.hpp"
#include "nodeform/agent/converge.hpp"
#include "nodeform/agent/resources/system_db.hpp"

namespace nodeform::agent::test {

class FixedClock final : public Clock {
  public:
    std::chrono::system_clock::time_point now() const override {
        return std::chrono::system_clock::time_point(std::chrono::seconds(1795000000));
    }
    std::chrono::steady_clock::time_point steady_now() const override { return std::chrono::steady_clock::now(); }
    void sleep_for(std::chrono::milliseconds) const override {}
};

inline std::string dpkg_stanza(const std::string& name, const std::string& state = "installed",
                               const std::string& version = "1.0") {
    return "Package: " + name + "\nStatus: install ok " + state + "\nArchitecture: amd64\nVersion: " + version +
           "\nDescription: test\n a test package\n\n";
}

struct FakeSystem {
    MemoryFilesystem fs;
    FakeProcessRunner runner;
    FixedClock clock;
    MemoryLogger logger;
    std::unique_ptr<Random> random = make_system_random();
    std::set<std::string> apt_known = {"hello", "nginx", "sudo", "curl"};
    std::set<std::string> units = {"ssh.service", "nginx.service"};
    std::set<std::string> enabled_units;
    std::set<std::string> active_units;
    int next_uid = 1000;

    FakeSystem() {
        fs.put_file("/etc/passwd",
                    "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n");
        fs.put_file("/etc/group", "root:x:0:\ndaemon:x:1:\nsudo:x:27:\n");
        fs.put_file("/etc/hostname", "localhost\n");
        fs.put_file("/etc/hosts", "127.0.0.1\tlocalhost\n");
        fs.put_file("/var/lib/dpkg/status", dpkg_stanza("base-files") + dpkg_stanza("sudo"));
        fs.put_file("/var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages", "x");
        fs.put_dir("/etc/sudoers.d");
        fs.put_dir("/home");
        runner.handler = [this](const ProcessRequest& r) { return handle(r); };
    }

    std::string arg_after(const std::vector<std::string>& argv, const std::string& flag) {
        for (std::size_t i = 0; i + 1 < argv.size(); ++i) {
            if (argv[i] == flag) return argv[i + 1];
        }
        return {};
    }

    void append(const std::string& path, const std::string& line) {
        auto text = fs.read(path, 1 << 20).value();
        fs.put_file(path, text + line);
    }

    Result<ProcessResult> handle(const ProcessRequest& r) {
        std::vector<std::string> argv = r.argv;
        if (argv.size() > 2 && argv[0] == "chroot") argv.erase(argv.begin(), argv.begin() + 2);
        if (argv.size() > 2 && argv[1] == "--root") argv.erase(argv.begin() + 1, argv.begin() + 3);
        const std::string& cmd = argv[0];
        if (cmd == "groupadd") {
            std::string gid = arg_after(argv, "-g");
            append("/etc/group", argv.back() + ":x:" + (gid.empty() ? std::to_string(next_uid++) : gid) + ":\n");
        } else if (cmd == "useradd") {
            std::string name = argv.back();
            std::string uid = arg_after(argv, "-u");
            if (uid.empty()) uid = std::to_string(next_uid++);
            append("/etc/group", name + ":x:" + uid + ":\n");
            append("/etc/passwd",
                   name + ":x:" + uid + ":" + uid + "::" + arg_after(argv, "-d") + ":" + arg_after(argv, "-s") + "\n");
            fs.put_dir(arg_after(argv, "-d"),
                       {0700, static_cast<uid_t>(std::stoi(uid)), static_cast<gid_t>(std::stoi(uid))});
            set_groups(name, arg_after(argv, "-G"));
            if (fs.exists("/etc/shadow")) append("/etc/shadow", name + ":!:20000:0:99999:7:::\n");
        } else if (cmd == "usermod") {
            std::string name = argv.back();
            for (std::size_t i = 0; i + 1 < argv.size(); ++i) {
                if (argv[i] == "-G") set_groups(name, argv[i + 1]);
                if (argv[i] == "-e") set_shadow(name, 7, argv[i + 1]);
            }
        } else if (cmd == "chpasswd") {
            std::string line = r.stdin_data.substr(0, r.stdin_data.find('\n'));
            set_shadow(line.substr(0, line.find(':')), 1, line.substr(line.find(':') + 1));
        } else if (cmd == "apt-cache") {
            std::string out;
            for (std::size_t i = 2; i < argv.size(); ++i) {
                if (apt_known.count(argv[i])) out += argv[i] + ":\n  Installed: (none)\n  Candidate: 1.0\n";
            }
            return ProcessResult{0, false, out, ""};
        } else if (cmd == "apt-get" && argv.size() > 1 && argv[1] == "install") {
            for (const auto& a : argv) {
                auto eq = a.find('=');  // NAME=VERSION installs that version
                std::string name = a.substr(0, eq);
                if (apt_known.count(name))
                    set_package(name, "install", eq == std::string::npos ? "1.0" : a.substr(eq + 1));
            }
        } else if (cmd == "apt-mark" && argv.size() > 2) {
            auto status = parse_dpkg_status(fs.read("/var/lib/dpkg/status", 1 << 20).value());
            for (std::size_t i = 2; i < argv.size(); ++i)
                set_package(argv[i], argv[1] == "hold" ? "hold" : "install",
                            status.count(argv[i]) ? status[argv[i]].version : "1.0");
        } else if (cmd == "systemctl") {
            std::string verb;
            std::string unit = argv.back();
            for (const auto& a : argv) {
                if (a == "is-enabled" || a == "is-active" || a == "enable" || a == "disable" || a == "start" ||
                    a == "stop" || a == "try-restart")
                    verb = a;
            }
            if (verb == "is-enabled") {
                if (!units.count(unit))
                    return ProcessResult{1, false, "", "Failed to get unit file state: No such file"};
                return ProcessResult{enabled_units.count(unit) ? 0 : 1, false,
                                     enabled_units.count(unit) ? "enabled\n" : "disabled\n", ""};
            }
            if (verb == "is-active") {
                return ProcessResult{active_units.count(unit) ? 0 : 3, false,
                                     active_units.count(unit) ? "active\n" : "inactive\n", ""};
            }
            if (verb == "enable") enabled_units.insert(unit);
            if (verb == "disable") enabled_units.erase(unit);
            if (verb == "start") active_units.insert(unit);
            if (verb == "stop") active_units.erase(unit);
        }
        return ProcessResult{0, false, "", ""};
    }

    // dpkg's status with name's stanza replaced: installed, selection want (install | hold), version.
    void set_package(const std::string& name, const std::string& want, const std::string& version) {
        std::string text = fs.read("/var/lib/dpkg/status", 1 << 20).value();
        std::string out;
        std::size_t pos = 0;
        while (pos < text.size()) {
            std::size_t end = text.find("\n\n", pos);
            std::string stanza = text.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
            pos = end == std::string::npos ? text.size() : end + 2;
            if (stanza.empty() || stanza.rfind("Package: " + name + "\n", 0) == 0) continue;
            out += stanza + "\n\n";
        }
        out += "Package: " + name + "\nStatus: " + want + " ok installed\nArchitecture: amd64\nVersion: " + version +
               "\n\n";
        fs.put_file("/var/lib/dpkg/status", out);
    }

    // Field index of user's /etc/shadow line set to value.
    void set_shadow(const std::string& user, std::size_t index, const std::string& value) {
        auto text = fs.read("/etc/shadow", 1 << 20).value();
        std::stringstream in(text);
        std::string line, out;
        while (std::getline(in, line)) {
            if (line.substr(0, line.find(':')) == user) {
                std::vector<std::string> f;
                std::stringstream fields(line + ":");
                std::string field;
                while (std::getline(fields, field, ':'))
                    f.push_back(field);
                f.resize(9);
                f[index] = value;
                line.clear();
                for (std::size_t i = 0; i < f.size(); ++i)
                    line += (i ? ":" : "") + f[i];
            }
            out += line + "\n";
        }
        fs.put_file("/etc/shadow", out, {0640, 0, 42});
    }

    void set_groups(const std::string& user, const std::string& list) {
        std::set<std::string> want;
        std::stringstream ss(list);
        std::string g;
        while (std::getline(ss, g, ',')) {
            if (!g.empty()) want.insert(g);
        }
        auto text = fs.read("/etc/group", 1 << 20).value();
        std::stringstream in(text);
        std::string line, out;
        while (std::getline(in, line)) {
            auto parts_end = line.rfind(':');
            std::string head = line.substr(0, parts_end + 1);
            std::string name = line.substr(0, line.find(':'));
            std::vector<std::string> members;
            std::stringstream ms(line.substr(parts_end + 1));
            std::string m;
            while (std::getline(ms, m, ',')) {
                if (!m.empty() && m != user) members.push_back(m);
            }
            if (want.count(name)) members.push_back(user);
            std::string joined;
            for (const auto& x : members)
                joined += (joined.empty() ? "" : ",") + x;
            out += head + joined + "\n";
        }
        fs.put_file("/etc/group", out);
    }

    // The position of the first command starting with prefix, or -1.
    int position(const std::string& prefix) const {
        auto cmds = runner.commands();
        for (std::size_t i = 0; i < cmds.size(); ++i) {
            if (cmds[i].find(prefix) != std::string::npos) return static_cast<int>(i);
        }
        return -1;
    }
};

inline const ResourceResult* find_result(const RunReport& report, const std::string& id) {
    for (const auto& r : report.resources) {
        if (r.id == id) return &r;
    }
    return nullptr;
}

}  // namespace nodeform::agent::test
