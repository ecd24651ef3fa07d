// Proxmox VE stand-in: behaves as qemu-server's PVE/API2/Qemu.pm and pve-manager's Cluster.pm document,
// for the calls nodeform makes. Tasks complete lazily: every request first advances the clock.
#include "pve_standin.hpp"

#include <httplib.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <mutex>
#include <random>
#include <thread>

#include "nodeform/base64.hpp"
#include "nodeform/canonical_json.hpp"
#include "nodeform/controller/providers/qemu.hpp"
#include "nodeform/posix_process_runner.hpp"
#include "nodeform/seed.hpp"

namespace nodeform::test {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using Params = std::map<std::string, std::string>;

int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

// Strict percent-decoding (URI::Escape::uri_unescape leaves bad escapes alone; we reject them).
bool unescape(const std::string& in, std::string& out, bool plus_space) {
    out.clear();
    for (std::size_t i = 0; i < in.size(); ++i) {
        if (in[i] == '%') {
            if (i + 2 >= in.size() || hexval(in[i + 1]) < 0 || hexval(in[i + 2]) < 0) return false;
            out.push_back(static_cast<char>(hexval(in[i + 1]) * 16 + hexval(in[i + 2])));
            i += 2;
        } else if (in[i] == '+' && plus_space) {
            out.push_back(' ');
        } else {
            out.push_back(in[i]);
        }
    }
    return true;
}

bool parse_form(const std::string& body, Params& out) {
    std::size_t start = 0;
    while (start < body.size()) {
        auto amp = body.find('&', start);
        std::string pair = body.substr(start, amp == std::string::npos ? std::string::npos : amp - start);
        auto eq = pair.find('=');
        std::string k, v;
        if (!unescape(pair.substr(0, eq), k, true)) return false;
        if (eq != std::string::npos && !unescape(pair.substr(eq + 1), v, true)) return false;
        out[k] = v;
        if (amp == std::string::npos) break;
        start = amp + 1;
    }
    return true;
}

bool is_int(const std::string& s) {
    if (s.empty() || s.size() > 12) return false;
    return std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

bool dns_name(const std::string& s) {
    if (s.empty() || s.size() > 253) return false;
    for (char c : s) {
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.')) {
            return false;
        }
    }
    return s.front() != '-' && s.front() != '.';
}

std::vector<std::string> split(const std::string& s, char sep) {
    std::vector<std::string> out;
    std::size_t start = 0;
    for (;;) {
        auto p = s.find(sep, start);
        out.push_back(s.substr(start, p == std::string::npos ? std::string::npos : p - start));
        if (p == std::string::npos) break;
        start = p + 1;
    }
    return out;
}

// PVE::Tools::validate_ssh_public_keys: each non-empty line "TYPE BASE64 [comment]".
bool valid_ssh_keys(const std::string& keys) {
    bool any = false;
    for (const auto& line : split(keys, '\n')) {
        if (line.empty()) continue;
        auto f = split(line, ' ');
        if (f.size() < 2) return false;
        const std::string& t = f[0];
        if (!(t.rfind("ssh-", 0) == 0 || t.rfind("ecdsa-", 0) == 0 || t.rfind("sk-", 0) == 0)) return false;
        // Real Proxmox runs `ssh-keygen -l` on the keys; the stand-in checks the shape only (base64 alphabet).
        if (f[1].size() < 16) return false;
        for (char c : f[1]) {
            if (!std::isalnum(static_cast<unsigned char>(c)) && c != '+' && c != '/' && c != '=') return false;
        }
        any = true;
    }
    return any;
}

struct Vm {
    std::string node;
    std::int64_t vmid = 0;
    std::map<std::string, std::string> config;
    bool running = false;
    Clock::time_point started_at;
    bool stops_during_boot = false;  // the guest powers off halfway through boot
};

struct Task {
    std::string upid;
    std::string node;
    std::string type;
    std::string id;
    Clock::time_point end;
    bool stopped = false;
    std::string exitstatus;
    std::function<std::string()> on_done;  // returns "" for OK, or the error
    std::shared_future<std::string> work;  // QEMU-backed mode: the task ends when this is done ("" = OK)
    std::vector<std::string> log;
};

struct Reply {
    int status = 200;
    json body;
};

Reply ok(json data) {
    return {200, {{"data", std::move(data)}}};
}
Reply fail(int status, const std::string& message) {
    return {status, {{"data", nullptr}, {"message", message + "\n"}}};
}
Reply param_fail(const std::map<std::string, std::string>& errors) {
    json e = json::object();
    for (const auto& [k, v] : errors)
        e[k] = v;
    return {400, {{"data", nullptr}, {"errors", e}, {"message", "Parameter verification failed.\n"}}};
}

}  // namespace

struct PveStandin::Impl {
    PveStandinOptions opt;
    std::unique_ptr<httplib::Server> server_ptr;
    std::thread thread;
    int port = 0;

    mutable std::mutex mu;
    std::map<std::int64_t, Vm> vms;
    std::vector<Task> tasks;
    std::map<std::int64_t, int> clone_requests;
    std::vector<std::string> log;
    std::vector<std::int64_t> backups;
    int lock_timeouts = 0;
    int task_lock_timeouts = 0;
    int guest_stops = 0;
    int no_worker = 0;
    int get_errors = 0;
    int get_error_status = 500;
    std::map<std::string, std::pair<int, std::string>> task_failures;
    std::uint32_t next_pid = 0x1a2b;
    std::mt19937 rng{42};

    // QEMU-backed mode: the qemu provider launches and stops the real guests; qemu_mu serialises its calls,
    // which run outside `mu` (a boot's seed and accelerator probe take seconds).
    PosixProcessRunner runner;
    SystemClock clock;
    std::unique_ptr<controller::providers::Provider> qemu_provider;
    std::mutex qemu_mu;

    // Boots vmid as a real guest from the settings it received: overlay (once), sizing, smbios1, cloud-init.
    std::string qemu_boot(std::int64_t vmid, const std::string& name, std::map<std::string, std::string> config) {
        namespace pv = controller::providers;
        std::lock_guard<std::mutex> lock(qemu_mu);
        const auto paths = pv::qemu_paths(opt.qemu_state_dir, vmid);
        std::error_code ec;
        if (!std::filesystem::exists(paths.vm_json, ec)) {
            pv::CloneRequest clone;
            clone.newid = vmid;
            clone.name = name;
            auto c = qemu_provider->clone(clone, nullptr);
            if (!c.ok()) return c.error.message;
            if (!c.value->ok()) return c.value->exitstatus;
        }
        std::string disk_size;  // the boot disk's size= (Proxmox's resize wrote it)
        std::map<std::string, std::string> settings;
        for (const auto& [k, v] : config) {
            const bool disk = k.rfind("scsi", 0) == 0 || k.rfind("virtio", 0) == 0 || k.rfind("sata", 0) == 0 ||
                              k.rfind("ide", 0) == 0;
            if (disk && k != "scsihw" && disk_size.empty() && v.find("media=cdrom") == std::string::npos) {
                auto at = v.find("size=");
                if (at != std::string::npos) disk_size = v.substr(at + 5, v.find(',', at) - at - 5);
            }
            if (disk || k == "lock" || k == "template" || k == "nodeform-clone-upid") continue;
            settings[k] = v;
        }
        auto configured = qemu_provider->configure("", vmid, settings, "");
        if (!configured.ok()) return configured.error.message;
        // Grow the overlay to the disk size Proxmox was asked for (never shrink below the template's).
        std::ifstream in(paths.vm_json);
        json vm = json::parse(in, nullptr, false);
        std::string have = vm.is_object() && vm.contains("config") && vm["config"].is_object()
                               ? vm["config"].value("virtio0", "")
                               : "";
        auto have_at = have.find("size=");
        const std::uint64_t have_bytes = have_at == std::string::npos ? 0 : std::stoull(have.substr(have_at + 5));
        const std::uint64_t want_bytes = disk_size.empty() || !is_int(disk_size.substr(0, disk_size.size() - 1))
                                             ? 0
                                             : std::stoull(disk_size.substr(0, disk_size.size() - 1))
                                                   << (disk_size.back() == 'G' ? 30 : 20);
        if (want_bytes > have_bytes) {
            auto r = qemu_provider->resize("", vmid, "virtio0", std::to_string(want_bytes));
            if (!r.ok()) return r.error.message;
            if (!r.value->ok()) return r.value->exitstatus;
        }
        auto started = qemu_provider->start("", vmid);
        if (!started.ok()) return started.error.message;
        return started.value->ok() ? std::string() : started.value->exitstatus;
    }

    std::string qemu_stop(std::int64_t vmid) {
        std::lock_guard<std::mutex> lock(qemu_mu);
        auto stopped = qemu_provider->stop("", vmid);
        if (!stopped.ok()) return stopped.error.message;
        return stopped.value->ok() ? std::string() : stopped.value->exitstatus;
    }

    std::string digest_of(const Vm& vm) const {
        json j(vm.config);
        return sha256_hex(j.dump()).substr(0, 40);
    }

    std::chrono::milliseconds duration(const std::string& type) const {
        auto it = opt.task_ms.find(type);
        return it == opt.task_ms.end() ? opt.default_task_ms : it->second;
    }

    std::string mac() {
        char buf[32];
        std::snprintf(buf, sizeof buf, "BC:24:11:%02X:%02X:%02X", static_cast<unsigned>(rng() & 0xff),
                      static_cast<unsigned>(rng() & 0xff), static_cast<unsigned>(rng() & 0xff));
        return buf;
    }

    std::string uuid() {
        char buf[40];
        std::snprintf(buf, sizeof buf, "%08x-%04x-4%03x-a%03x-%08x%04x", static_cast<unsigned>(rng()),
                      static_cast<unsigned>(rng() & 0xffff), static_cast<unsigned>(rng() & 0xfff),
                      static_cast<unsigned>(rng() & 0xfff), static_cast<unsigned>(rng()),
                      static_cast<unsigned>(rng() & 0xffff));
        return buf;
    }

    // Completes every task whose time has come; guests that power off during boot stop.
    void advance() {
        auto now = Clock::now();
        for (auto& [id, vm] : vms) {
            if (vm.running && vm.stops_during_boot && now >= vm.started_at + opt.boot_ms / 2) {
                vm.running = false;
                vm.stops_during_boot = false;
            }
        }
        for (auto& t : tasks) {
            if (t.stopped || now < t.end) continue;
            if (t.work.valid() && t.work.wait_for(std::chrono::seconds(0)) != std::future_status::ready) continue;
            t.stopped = true;
            std::string error = t.work.valid() ? t.work.get() : std::string();
            auto f = task_failures.find(t.type);
            if (f != task_failures.end() && f->second.first > 0) {
                --f->second.first;
                error = f->second.second;
                if (t.type == "qmclone") {  // clone failure: Proxmox unlinks the new config
                    for (auto it = vms.begin(); it != vms.end(); ++it) {
                        if (it->second.config.count("lock") && it->second.config["lock"] == "clone" &&
                            it->second.config.count("nodeform-clone-upid") &&
                            it->second.config["nodeform-clone-upid"] == t.upid) {
                            vms.erase(it);
                            break;
                        }
                    }
                }
            } else if (t.on_done && error.empty()) {
                error = t.on_done();
            }
            t.exitstatus = error.empty() ? "OK" : error;
            t.log.push_back(error.empty() ? "TASK OK" : "TASK ERROR: " + error);
        }
    }

    std::string start_task(const std::string& node, const std::string& type, const std::string& id,
                           std::function<std::string()> on_done, std::vector<std::string> log_lines = {}) {
        Task t;
        t.node = node;
        t.type = type;
        t.id = id;
        char buf[96];
        auto starttime =
            std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
                .count();
        std::snprintf(buf, sizeof buf, "%08X:%08X:%08llX", next_pid++, 0x00c0ffeeu,
                      static_cast<unsigned long long>(starttime));
        t.upid = "UPID:" + node + ":" + buf + ":" + type + ":" + id + ":" + opt.token_id + ":";
        t.end = Clock::now() + duration(type);
        t.on_done = std::move(on_done);
        t.log = std::move(log_lines);
        tasks.push_back(t);
        return tasks.back().upid;
    }

    bool known_node(const std::string& n) const {
        return std::find(opt.nodes.begin(), opt.nodes.end(), n) != opt.nodes.end();
    }

    Reply lock_timeout(std::int64_t vmid) {
        --lock_timeouts;
        return fail(500,
                    "can't lock file '/var/lock/qemu-server/lock-" + std::to_string(vmid) + ".conf' - got timeout");
    }

    Reply handle(const std::string& method, const std::vector<std::string>& seg, const Params& p) {
        advance();
        if (method == "GET" && get_errors > 0) {
            --get_errors;
            return fail(get_error_status, "proxy loop detected / service temporarily unavailable");
        }
        auto param = [&](const char* k) {
            auto it = p.find(k);
            return it == p.end() ? std::string() : it->second;
        };
        std::size_t n = seg.size();
        if (n == 1 && seg[0] == "version" && method == "GET") return ok({{"version", "8.2.4"}, {"release", "8.2"}});
        if (n == 1 && seg[0] == "nodes" && method == "GET") {
            json out = json::array();
            for (const auto& node : opt.nodes)
                out.push_back({{"node", node}, {"status", "online"}, {"type", "node"}});
            return ok(out);
        }
        if (n == 2 && seg[0] == "cluster" && seg[1] == "nextid" && method == "GET") {
            std::string v = param("vmid");
            if (!v.empty()) {
                if (!is_int(v)) return param_fail({{"vmid", "type check ('integer') failed - got '" + v + "'"}});
                if (vms.count(std::stoll(v))) return param_fail({{"vmid", "VM " + v + " already exists"}});
                return ok(v);
            }
            for (std::int64_t id = 100;; ++id) {
                if (!vms.count(id)) return ok(std::to_string(id));
            }
        }
        if (n == 2 && seg[0] == "cluster" && seg[1] == "resources" && method == "GET") {
            std::string type = param("type");
            json out = json::array();
            if (type.empty() || type == "vm") {
                for (const auto& [id, vm] : vms) {
                    out.push_back({{"id", "qemu/" + std::to_string(id)},
                                   {"type", "qemu"},
                                   {"vmid", id},
                                   {"node", vm.node},
                                   {"name", vm.config.count("name") ? vm.config.at("name") : ""},
                                   {"status", vm.running ? "running" : "stopped"},
                                   {"template", vm.config.count("template") ? 1 : 0}});
                }
            }
            if (type.empty() || type == "storage") {
                for (const auto& node : opt.nodes) {
                    for (const auto& s : opt.storages) {
                        out.push_back({{"id", "storage/" + node + "/" + s},
                                       {"type", "storage"},
                                       {"storage", s},
                                       {"node", node},
                                       {"status", "available"}});
                    }
                }
            }
            if (type.empty() || type == "node") {
                for (const auto& node : opt.nodes) {
                    out.push_back({{"id", "node/" + node}, {"type", "node"}, {"node", node}, {"status", "online"}});
                }
            }
            return ok(out);
        }
        if (n >= 2 && seg[0] == "nodes") {
            const std::string& node = seg[1];
            if (!known_node(node)) return fail(595, "no such cluster node '" + node + "'");
            if (n == 3 && seg[2] == "storage" && method == "GET") {
                json out = json::array();
                for (const auto& s : opt.storages) {
                    out.push_back(
                        {{"storage", s}, {"content", "images,rootdir,backup"}, {"active", 1}, {"enabled", 1}});
                }
                return ok(out);
            }
            if (n == 3 && seg[2] == "network" && method == "GET") {
                json out = json::array();
                for (const auto& b : opt.bridges)
                    out.push_back({{"iface", b}, {"type", "bridge"}, {"active", 1}});
                return ok(out);
            }
            if (n == 3 && seg[2] == "vzdump" && method == "POST") return vzdump(node, p);
            if (n >= 4 && seg[2] == "tasks") return task(node, seg);
            if (n >= 4 && seg[2] == "qemu") {
                if (!is_int(seg[3]))
                    return param_fail({{"vmid", "type check ('integer') failed - got '" + seg[3] + "'"}});
                return qemu(method, node, std::stoll(seg[3]), std::vector<std::string>(seg.begin() + 4, seg.end()), p);
            }
        }
        return fail(
            501, "Method '" + method + " /" + [&] {
                std::string s;
                for (const auto& x : seg)
                    s += (s.empty() ? "" : "/") + x;
                return s;
            }() + "' not implemented");
    }

    Reply task(const std::string& node, const std::vector<std::string>& seg) {
        const std::string& upid = seg[3];
        for (const auto& t : tasks) {
            if (t.upid != upid) continue;
            if (t.node != node) return fail(500, "unable to parse worker upid '" + upid + "'");
            if (seg.size() == 5 && seg[4] == "status") {
                json d = {{"upid", t.upid}, {"node", t.node},       {"type", t.type},
                          {"id", t.id},     {"user", opt.token_id}, {"status", t.stopped ? "stopped" : "running"}};
                if (t.stopped) d["exitstatus"] = t.exitstatus;
                return ok(d);
            }
            if (seg.size() == 5 && seg[4] == "log") {
                json out = json::array();
                int i = 1;
                for (const auto& line : t.log)
                    out.push_back({{"n", i++}, {"t", line}});
                return ok(out);
            }
        }
        return fail(500, "no such task");
    }

    Reply vzdump(const std::string& node, const Params& p) {
        auto it = p.find("vmid");
        if (it == p.end() || !is_int(it->second))
            return param_fail({{"vmid", "property is missing and it is not optional"}});
        std::int64_t vmid = std::stoll(it->second);
        auto st = p.find("storage");
        if (st != p.end() && std::find(opt.storages.begin(), opt.storages.end(), st->second) == opt.storages.end()) {
            return param_fail({{"storage", "storage '" + st->second + "' does not exist"}});
        }
        if (no_worker > 0) {
            --no_worker;
            return fail(500, "got no worker upid - start worker failed");
        }
        std::string upid = start_task(node, "vzdump", std::to_string(vmid),
                                      [this, vmid]() -> std::string {
                                          if (!vms.count(vmid)) return "job errors";
                                          backups.push_back(vmid);
                                          return "";
                                      },
                                      {"INFO: starting new backup job: vzdump " + std::to_string(vmid)});
        return ok(upid);
    }

    Reply qemu(const std::string& method, const std::string& node, std::int64_t vmid,
               const std::vector<std::string>& rest, const Params& p) {
        const std::string sid = std::to_string(vmid);
        auto it = vms.find(vmid);
        bool exists = it != vms.end() && it->second.node == node;
        auto missing = [&] {
            return fail(500, "Configuration file 'nodes/" + node + "/qemu-server/" + sid + ".conf' does not exist");
        };
        auto param = [&](const char* k) {
            auto f = p.find(k);
            return f == p.end() ? std::string() : f->second;
        };
        std::string sub;
        for (const auto& r : rest)
            sub += (sub.empty() ? "" : "/") + r;

        if (sub.empty() && method == "DELETE") {
            if (!exists) return missing();
            if (lock_timeouts > 0) return lock_timeout(vmid);
            Vm& vm = it->second;
            if (vm.config.count("lock")) return fail(500, "VM is locked (" + vm.config["lock"] + ")");
            if (vm.running) return fail(500, "VM " + sid + " is running - destroy failed");
            if (no_worker > 0) {
                --no_worker;
                return fail(500, "got no worker upid - start worker failed");
            }
            vm.config["lock"] = "destroyed";
            return ok(start_task(node, "qmdestroy", sid, [this, vmid] {
                if (qemu_provider) {
                    std::lock_guard<std::mutex> lock(qemu_mu);
                    auto d = qemu_provider->destroy("", vmid);  // the overlay, seed, sockets and vm.json
                    if (!d.ok()) return d.error.message;
                    if (!d.value->ok()) return d.value->exitstatus;
                }
                vms.erase(vmid);  // purge: disks, jobs, HA and pool membership go with it
                return std::string();
            }));
        }
        if (sub == "config" && method == "GET") {
            if (!exists) return missing();
            json d(it->second.config);
            d.erase("nodeform-clone-upid");
            d["digest"] = digest_of(it->second);
            return ok(d);
        }
        if (sub == "config" && (method == "PUT" || method == "POST")) return configure(method, node, vmid, p);
        if (sub == "status/current" && method == "GET") {
            if (!exists) return missing();
            const Vm& vm = it->second;
            json d = {{"vmid", vmid},
                      {"status", vm.running ? "running" : "stopped"},
                      {"qmpstatus", vm.running ? "running" : "stopped"},
                      {"name", vm.config.count("name") ? vm.config.at("name") : ""}};
            if (vm.config.count("lock")) d["lock"] = vm.config.at("lock");
            if (vm.config.count("agent")) d["agent"] = 1;
            return ok(d);
        }
        if (sub == "clone" && method == "POST") return clone(node, vmid, p);
        if (sub == "resize" && method == "PUT") {
            if (!exists) return missing();
            std::string disk = param("disk"), size = param("size");
            if (disk.empty()) return param_fail({{"disk", "property is missing and it is not optional"}});
            if (size.empty() || !(size.back() == 'G' || size.back() == 'M') ||
                !is_int(size.substr(0, size.size() - 1))) {
                return param_fail({{"size", "value does not match the regex pattern"}});
            }
            if (lock_timeouts > 0) return lock_timeout(vmid);
            Vm& vm = it->second;
            if (vm.config.count("lock")) return fail(500, "VM is locked (" + vm.config["lock"] + ")");
            if (!vm.config.count(disk)) return fail(500, "disk '" + disk + "' does not exist");
            std::uint64_t want = std::stoull(size.substr(0, size.size() - 1)) * (size.back() == 'G' ? 1024 : 1);
            std::string& line = vm.config[disk];
            auto pos = line.find("size=");
            std::uint64_t have = 0;
            if (pos != std::string::npos) {
                std::string s = line.substr(pos + 5);
                s = s.substr(0, s.find(','));
                have = std::stoull(s.substr(0, s.size() - 1)) * (s.back() == 'G' ? 1024 : 1);
            }
            if (want < have) return fail(500, "shrinking disks is not supported");
            return ok(start_task(node, "resize", sid, [this, vmid, disk, size] {
                auto v = vms.find(vmid);
                if (v == vms.end()) return std::string("VM " + std::to_string(vmid) + " does not exist");
                std::string& l = v->second.config[disk];
                auto at = l.find("size=");
                l = (at == std::string::npos ? l : l.substr(0, at - 1)) + ",size=" + size;
                return std::string();
            }));
        }
        if (rest.size() == 2 && rest[0] == "status" && method == "POST") {
            if (!exists) return missing();
            Vm& vm = it->second;
            const std::string& action = rest[1];
            if (action != "start" && action != "stop" && action != "shutdown") return fail(501, "not implemented");
            if (lock_timeouts > 0) return lock_timeout(vmid);
            if (vm.config.count("lock")) return fail(500, "VM is locked (" + vm.config["lock"] + ")");
            if (vm.config.count("template")) return fail(500, "you can't start a vm if it's a template");
            if (action == "start" && vm.running) return fail(500, "VM " + sid + " already running");
            if (no_worker > 0) {
                --no_worker;
                return fail(500, "got no worker upid - start worker failed");
            }
            std::string type = action == "start" ? "qmstart" : action == "stop" ? "qmstop" : "qmshutdown";
            std::shared_future<std::string> work;
            if (qemu_provider) {
                const std::string name = vm.config.count("name") ? vm.config.at("name") : "";
                work =
                    action == "start"
                        ? std::async(std::launch::async,
                                     [this, vmid, name, config = vm.config] { return qemu_boot(vmid, name, config); })
                              .share()
                        : std::async(std::launch::async, [this, vmid] { return qemu_stop(vmid); }).share();
            }
            std::string upid = start_task(node, type, sid, [this, vmid, action] {
                auto v = vms.find(vmid);
                if (v == vms.end()) return std::string("VM " + std::to_string(vmid) + " does not exist");
                v->second.running = action == "start";
                if (action == "start") v->second.started_at = Clock::now();
                if (action == "start" && guest_stops > 0) {
                    --guest_stops;
                    v->second.stops_during_boot = true;
                }
                return std::string();
            });
            tasks.back().work = std::move(work);
            return ok(upid);
        }
        if ((sub == "agent/ping" && method == "POST") || (sub == "agent/network-get-interfaces" && method == "GET")) {
            if (!exists) return missing();
            const Vm& vm = it->second;
            if (!vm.config.count("agent") || vm.config.at("agent").rfind("0", 0) == 0) {
                return fail(500, "No QEMU guest agent configured");
            }
            if (!vm.running) return fail(500, "VM " + sid + " is not running");
            if (qemu_provider) return qemu_agent(vmid, sub);
            if (Clock::now() < vm.started_at + opt.boot_ms) return fail(500, "QEMU guest agent is not running");
            if (sub == "agent/ping") return ok({{"result", json::object()}});
            std::string hw;
            if (vm.config.count("net0")) {
                auto v = vm.config.at("net0");
                auto eq = v.find('=');
                hw = eq == std::string::npos ? "" : v.substr(eq + 1, 17);
            }
            json result = json::array();
            result.push_back(
                {{"name", "lo"},
                 {"hardware-address", "00:00:00:00:00:00"},
                 {"ip-addresses", {{{"ip-address", "127.0.0.1"}, {"ip-address-type", "ipv4"}, {"prefix", 8}}}}});
            result.push_back(
                {{"name", "eth0"},
                 {"hardware-address", hw},
                 {"ip-addresses",
                  {{{"ip-address", "10.20." + std::to_string(vmid / 250 % 250) + "." + std::to_string(vmid % 250 + 2)},
                    {"ip-address-type", "ipv4"},
                    {"prefix", 24}}}}});
            return ok({{"result", result}});
        }
        return fail(501, "Method '" + method + " /nodes/" + node + "/qemu/" + sid + "/" + sub + "' not implemented");
    }

    // The real guest agent's answer in Proxmox's shape (QEMU-backed mode).
    Reply qemu_agent(std::int64_t vmid, const std::string& sub) {
        std::lock_guard<std::mutex> lock(qemu_mu);
        if (sub == "agent/ping") {
            auto r = qemu_provider->agent_ping("", vmid);
            if (!r.ok() || !*r.value) return fail(500, "QEMU guest agent is not running");
            return ok({{"result", json::object()}});
        }
        auto r = qemu_provider->agent_interfaces("", vmid);
        if (!r.ok()) return fail(500, "QEMU guest agent is not running");
        json result = json::array();
        for (const auto& i : *r.value) {
            json ips = json::array();
            for (const auto& a : i.addresses) {  // "10.0.2.15/24"
                const auto slash = a.find('/');
                ips.push_back({{"ip-address", a.substr(0, slash)},
                               {"ip-address-type", a.find(':') == std::string::npos ? "ipv4" : "ipv6"},
                               {"prefix", slash == std::string::npos ? 0 : std::atoi(a.c_str() + slash + 1)}});
            }
            result.push_back({{"name", i.name}, {"hardware-address", i.mac}, {"ip-addresses", ips}});
        }
        return ok({{"result", result}});
    }

    Reply clone(const std::string& node, std::int64_t src, const Params& p) {
        auto it = vms.find(src);
        if (it == vms.end() || it->second.node != node) {
            return fail(500, "Configuration file 'nodes/" + node + "/qemu-server/" + std::to_string(src) +
                                 ".conf' does not exist");
        }
        auto param = [&](const char* k) {
            auto f = p.find(k);
            return f == p.end() ? std::string() : f->second;
        };
        std::map<std::string, std::string> errors;
        std::string newid = param("newid"), name = param("name"), storage = param("storage"), full = param("full");
        if (newid.empty())
            errors["newid"] = "property is missing and it is not optional";
        else if (!is_int(newid) || std::stoll(newid) < 100)
            errors["newid"] = "invalid format - value must be >= 100";
        if (!name.empty() && !dns_name(name))
            errors["name"] = "invalid format - value does not look like a valid DNS name";
        if (!full.empty() && full != "0" && full != "1")
            errors["full"] = "type check ('boolean') failed - got '" + full + "'";
        for (const auto& [k, v] : p) {
            static const char* known[] = {"newid",       "name",   "storage", "full",     "pool",
                                          "description", "target", "format",  "snapname", "bwlimit"};
            if (std::find(std::begin(known), std::end(known), k) == std::end(known)) {
                errors[k] = "property is not defined in schema and the schema does not allow additional properties";
            }
        }
        if (!errors.empty()) return param_fail(errors);
        if (!storage.empty() && std::find(opt.storages.begin(), opt.storages.end(), storage) == opt.storages.end()) {
            return fail(500, "storage '" + storage + "' does not exist");
        }
        std::int64_t id = std::stoll(newid);
        if (lock_timeouts > 0) return lock_timeout(id);
        if (it->second.config.count("lock")) return fail(500, "VM is locked (" + it->second.config["lock"] + ")");
        auto existing = vms.find(id);
        if (existing != vms.end()) {
            return fail(500, "VM " + newid + " already exists on node '" + existing->second.node + "'");
        }
        if (no_worker > 0) {
            --no_worker;
            return fail(500, "got no worker upid - start worker failed");
        }
        ++clone_requests[id];
        if (task_lock_timeouts > 0) {  // the worker runs, cannot take the lock, and ends with the error
            --task_lock_timeouts;
            const std::string error =
                "can't lock file '/var/lock/qemu-server/lock-" + std::to_string(id) + ".conf' - got timeout";
            return ok(start_task(node, "qmclone", std::to_string(src), [error] { return error; }));
        }
        Vm vm;
        vm.node = node;
        vm.vmid = id;
        vm.config["lock"] = "clone";  // "# qmclone temporary file\nlock: clone"
        vms[id] = vm;
        std::string description = param("description");
        std::string upid = start_task(
            node, "qmclone", std::to_string(src),
            [this, id, src, name, storage, description] {
                auto v = vms.find(id);
                auto s = vms.find(src);
                if (v == vms.end() || s == vms.end()) return std::string("clone failed: VM vanished");
                auto conf = s->second.config;
                conf.erase("template");
                conf["name"] = name.empty() ? "Copy-of-VM-" + conf["name"] : name;
                if (!description.empty()) conf["description"] = description;
                // qemu-server keeps every smbios1 field of the source and generates a new uuid.
                std::string smbios1 = "uuid=" + uuid();
                for (const auto& item : split(conf.count("smbios1") ? conf["smbios1"] : "", ',')) {
                    if (!item.empty() && item.rfind("uuid=", 0) != 0) smbios1 += "," + item;
                }
                conf["smbios1"] = smbios1;
                if (conf.count("net0")) {
                    auto comma = conf["net0"].find(',');
                    conf["net0"] = "virtio=" + mac() + (comma == std::string::npos ? "" : conf["net0"].substr(comma));
                }
                for (auto& [k, val] : conf) {
                    if ((k == "scsi0" || k == "virtio0") && val.find("base-") != std::string::npos) {
                        auto size_at = val.find(",size=");
                        val = (storage.empty() ? std::string("local-lvm") : storage) + ":vm-" + std::to_string(id) +
                              "-disk-0" + (size_at == std::string::npos ? "" : val.substr(size_at));
                    }
                }
                v->second.config = conf;  // lock removed
                return std::string();
            },
            {"create full clone of drive scsi0 (local-lvm:base-" + std::to_string(src) + "-disk-0)"});
        vms[id].config["nodeform-clone-upid"] = upid;  // stand-in bookkeeping, hidden from GET config
        return ok(upid);
    }

    Reply configure(const std::string& method, const std::string& node, std::int64_t vmid, const Params& p) {
        auto it = vms.find(vmid);
        if (it == vms.end() || it->second.node != node) {
            return fail(500, "Configuration file 'nodes/" + node + "/qemu-server/" + std::to_string(vmid) +
                                 ".conf' does not exist");
        }
        static const char* known[] = {"name",   "cores",   "memory",      "balloon",    "agent",        "onboot",
                                      "ciuser", "sshkeys", "ipconfig0",   "nameserver", "searchdomain", "smbios1",
                                      "net0",   "tags",    "description", "digest",     "delete",       "cipassword"};
        std::map<std::string, std::string> errors;
        for (const auto& [k, v] : p) {
            if (std::find(std::begin(known), std::end(known), k) == std::end(known)) {
                errors[k] = "property is not defined in schema and the schema does not allow additional properties";
            }
        }
        for (const char* k : {"cores", "memory", "balloon", "agent", "onboot"}) {
            auto f = p.find(k);
            if (f != p.end() && !is_int(f->second))
                errors[k] = "type check ('integer') failed - got '" + f->second + "'";
        }
        if (p.count("memory") && is_int(p.at("memory")) && std::stoll(p.at("memory")) < 16) {
            errors["memory"] = "value must have a minimum value of 16";
        }
        if (p.count("sshkeys")) {
            std::string keys;
            if (!unescape(p.at("sshkeys"), keys, false)) {
                errors["sshkeys"] = "invalid urlencoded string: " + p.at("sshkeys").substr(0, 40);
            } else if (!valid_ssh_keys(keys)) {
                errors["sshkeys"] = "SSH public key validation error";
            }
        }
        if (p.count("smbios1")) {
            const std::string& s = p.at("smbios1");
            if (s.size() > 512) {
                errors["smbios1"] = "value may only be 512 characters long";
            } else {
                bool b64 = s.find("base64=1") != std::string::npos;
                for (const auto& item : split(s, ',')) {
                    auto eq = item.find('=');
                    if (eq == std::string::npos) {
                        errors["smbios1"] = "invalid format - missing '=' in '" + item + "'";
                        break;
                    }
                    std::string k = item.substr(0, eq), v = item.substr(eq + 1);
                    if (k == "uuid" && v.size() != 36) errors["smbios1"] = "invalid format - uuid";
                    if (b64 && k != "uuid" && k != "base64" && !base64_decode(v)) {
                        errors["smbios1"] = "invalid format - " + k + " is not valid base64";
                    }
                }
            }
        }
        if (p.count("ipconfig0")) {
            const std::string& v = p.at("ipconfig0");
            bool good = v == "ip=dhcp" || (v.rfind("ip=", 0) == 0 && v.find('/') != std::string::npos);
            if (!good) errors["ipconfig0"] = "invalid format - format error";
        }
        if (p.count("name") && !dns_name(p.at("name")))
            errors["name"] = "invalid format - value does not look like a valid DNS name";
        if (!errors.empty()) return param_fail(errors);
        if (lock_timeouts > 0) return lock_timeout(vmid);
        Vm& vm = it->second;
        if (vm.config.count("lock")) return fail(500, "VM is locked (" + vm.config["lock"] + ")");
        if (p.count("digest") && p.at("digest") != digest_of(vm)) {
            return fail(500, "detected modified configuration - file changed by other user? Try again.");
        }
        for (const auto& [k, v] : p) {
            if (k == "digest" || k == "delete") continue;
            vm.config[k] = v;
        }
        if (method == "POST")
            return ok(start_task(node, "qmconfig", std::to_string(vmid), [] { return std::string(); }));
        return ok(nullptr);
    }
};

PveStandin::PveStandin(PveStandinOptions options) : impl_(std::make_unique<Impl>()) {
    impl_->opt = std::move(options);
    Impl* d = impl_.get();
    if (!d->opt.tls_cert_file.empty()) {
        d->server_ptr = std::make_unique<httplib::SSLServer>(d->opt.tls_cert_file.c_str(), d->opt.tls_key_file.c_str());
    } else {
        d->server_ptr = std::make_unique<httplib::Server>();
    }
    if (!d->opt.qemu_template.empty()) {
        controller::providers::QemuOptions q;
        q.template_image = d->opt.qemu_template;
        q.state_dir = d->opt.qemu_state_dir;
        q.accel = d->opt.qemu_accel;
        q.qga_timeout = std::chrono::seconds(2);
        d->qemu_provider = controller::providers::make_qemu_provider(q, d->runner, d->clock);
    }
    httplib::Server& server = *d->server_ptr;
    server.new_task_queue = [] { return new httplib::ThreadPool(64); };
    auto handler = [d](const httplib::Request& req, httplib::Response& res) {
        const std::string auth = "PVEAPIToken=" + d->opt.token_id + "=" + d->opt.token_secret;
        Reply reply;
        {
            std::lock_guard<std::mutex> lock(d->mu);
            d->log.push_back(req.method + " " + req.path);
            if (req.get_header_value("Authorization") != auth) {
                reply = fail(401, "authentication failure");
            } else {
                Params p;
                for (const auto& [k, v] : req.params)
                    p[k] = v;
                bool form_ok = true;
                if (!req.body.empty()) form_ok = parse_form(req.body, p);
                std::string path = req.path.substr(std::string("/api2/json/").size());
                std::vector<std::string> seg;
                for (auto& s : split(path, '/')) {
                    std::string decoded;
                    if (!s.empty()) seg.push_back(unescape(s, decoded, false) ? decoded : s);
                }
                reply = form_ok ? d->handle(req.method, seg, p) : fail(400, "malformed form body");
            }
        }
        res.status = reply.status;
        res.set_content(reply.body.dump(), "application/json;charset=UTF-8");
    };
    const char* pattern = R"(/api2/json/.*)";
    server.Get(pattern, handler);
    server.Post(pattern, handler);
    server.Put(pattern, handler);
    server.Delete(pattern, handler);
    if (d->opt.port == 0) {
        d->port = server.bind_to_any_port(d->opt.host.c_str());
    } else {
        d->port = server.bind_to_port(d->opt.host.c_str(), d->opt.port) ? d->opt.port : -1;
    }
    d->thread = std::thread([d] { d->server_ptr->listen_after_bind(); });
    while (!server.is_running() && d->port > 0)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

PveStandin::~PveStandin() {
    impl_->server_ptr->stop();
    if (impl_->thread.joinable()) impl_->thread.join();
}

int PveStandin::port() const {
    return impl_->port;
}
std::string PveStandin::base_url() const {
    return (impl_->opt.tls_cert_file.empty() ? "http://" : "https://") + impl_->opt.host + ":" +
           std::to_string(impl_->port);
}
const PveStandinOptions& PveStandin::options() const {
    return impl_->opt;
}

void PveStandin::add_template(const std::string& node, std::int64_t vmid, const std::string& name, int disk_gb) {
    std::lock_guard<std::mutex> lock(impl_->mu);
    Vm vm;
    vm.node = node;
    vm.vmid = vmid;
    vm.config = {{"name", name},
                 {"template", "1"},
                 {"cores", "1"},
                 {"memory", "1024"},
                 {"ostype", "l26"},
                 {"boot", "order=scsi0;ide2;net0"},
                 {"scsi0", "local-lvm:base-" + std::to_string(vmid) + "-disk-0,size=" + std::to_string(disk_gb) + "G"},
                 {"ide2", "local-lvm:vm-" + std::to_string(vmid) + "-cloudinit,media=cdrom"},
                 {"net0", "virtio=BC:24:11:00:00:01,bridge=vmbr0"},
                 {"scsihw", "virtio-scsi-pci"},
                 {"smbios1", "uuid=" + impl_->uuid()}};
    impl_->vms[vmid] = vm;
}

void PveStandin::add_vm(const std::string& node, std::int64_t vmid, const std::string& name, bool running) {
    std::lock_guard<std::mutex> lock(impl_->mu);
    Vm vm;
    vm.node = node;
    vm.vmid = vmid;
    vm.running = running;
    vm.config = {{"name", name},
                 {"cores", "1"},
                 {"memory", "512"},
                 {"scsi0", "local-lvm:vm-" + std::to_string(vmid) + "-disk-0,size=4G"}};
    impl_->vms[vmid] = vm;
}

void PveStandin::set_config(std::int64_t vmid, const std::string& key, const std::string& value) {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->vms.at(vmid).config[key] = value;
}

void PveStandin::inject_task_lock_timeouts(int count) {
    std::lock_guard<std::mutex> l(impl_->mu);
    impl_->task_lock_timeouts = count;
}

void PveStandin::inject_guest_stops(int count) {
    std::lock_guard<std::mutex> l(impl_->mu);
    impl_->guest_stops = count;
}

void PveStandin::inject_lock_timeouts(int count) {
    std::lock_guard<std::mutex> l(impl_->mu);
    impl_->lock_timeouts = count;
}
void PveStandin::inject_no_worker(int count) {
    std::lock_guard<std::mutex> l(impl_->mu);
    impl_->no_worker = count;
}
void PveStandin::inject_get_errors(int count, int status) {
    std::lock_guard<std::mutex> l(impl_->mu);
    impl_->get_errors = count;
    impl_->get_error_status = status;
}
void PveStandin::inject_task_failures(const std::string& type, int count, const std::string& exitstatus) {
    std::lock_guard<std::mutex> l(impl_->mu);
    impl_->task_failures[type] = {count, exitstatus};
}
void PveStandin::set_task_ms(const std::string& type, std::chrono::milliseconds duration) {
    std::lock_guard<std::mutex> l(impl_->mu);
    impl_->opt.task_ms[type] = duration;
}
void PveStandin::set_boot_ms(std::chrono::milliseconds duration) {
    std::lock_guard<std::mutex> l(impl_->mu);
    impl_->opt.boot_ms = duration;
}

bool PveStandin::vm_exists(std::int64_t vmid) const {
    std::lock_guard<std::mutex> l(impl_->mu);
    impl_->advance();
    return impl_->vms.count(vmid) > 0;
}
nlohmann::json PveStandin::vm_config(std::int64_t vmid) const {
    std::lock_guard<std::mutex> l(impl_->mu);
    impl_->advance();
    auto it = impl_->vms.find(vmid);
    if (it == impl_->vms.end()) return nullptr;
    return json(it->second.config);
}
std::string PveStandin::vm_status(std::int64_t vmid) const {
    std::lock_guard<std::mutex> l(impl_->mu);
    impl_->advance();
    auto it = impl_->vms.find(vmid);
    if (it == impl_->vms.end()) return "";
    return it->second.running ? "running" : "stopped";
}
int PveStandin::clone_requests(std::int64_t newid) const {
    std::lock_guard<std::mutex> l(impl_->mu);
    auto it = impl_->clone_requests.find(newid);
    return it == impl_->clone_requests.end() ? 0 : it->second;
}
int PveStandin::vm_count() const {
    std::lock_guard<std::mutex> l(impl_->mu);
    impl_->advance();
    int n = 0;
    for (const auto& [id, vm] : impl_->vms)
        n += vm.config.count("template") ? 0 : 1;
    return n;
}
int PveStandin::request_count() const {
    std::lock_guard<std::mutex> l(impl_->mu);
    return static_cast<int>(impl_->log.size());
}
std::vector<std::string> PveStandin::request_log() const {
    std::lock_guard<std::mutex> l(impl_->mu);
    return impl_->log;
}
std::vector<std::int64_t> PveStandin::backups() const {
    std::lock_guard<std::mutex> l(impl_->mu);
    impl_->advance();
    return impl_->backups;
}
void PveStandin::reset_request_log() {
    std::lock_guard<std::mutex> l(impl_->mu);
    impl_->log.clear();
}

namespace {

class LoopbackTransport final : public HttpTransport {
  public:
    explicit LoopbackTransport(const std::string& base_url) : client_(base_url) {
        client_.set_keep_alive(true);
        client_.set_connection_timeout(5, 0);
        client_.set_read_timeout(30, 0);
    }
    Result<HttpResponse> send(const HttpRequest& request) override {
        httplib::Headers headers(request.headers.begin(), request.headers.end());
        httplib::Result r{nullptr, httplib::Error::Unknown};
        const std::string ct = request.content_type.empty() ? "application/octet-stream" : request.content_type;
        if (request.method == "GET") {
            r = client_.Get(request.path, headers);
        } else if (request.method == "POST") {
            r = client_.Post(request.path, headers, request.body, ct);
        } else if (request.method == "PUT") {
            r = client_.Put(request.path, headers, request.body, ct);
        } else if (request.method == "DELETE") {
            r = client_.Delete(request.path, headers, request.body, ct);
        } else {
            return make_error("unsupported method " + request.method);
        }
        if (!r) return make_error("HTTP request failed: " + httplib::to_string(r.error()));
        HttpResponse out;
        out.status = r->status;
        out.body = r->body;
        for (const auto& [k, v] : r->headers) {
            std::string key = k;
            std::transform(key.begin(), key.end(), key.begin(), [](unsigned char c) { return std::tolower(c); });
            out.headers[key] = v;
        }
        return out;
    }

  private:
    httplib::Client client_;
};

}  // namespace

std::unique_ptr<HttpTransport> make_loopback_transport(const std::string& base_url) {
    return std::make_unique<LoopbackTransport>(base_url);
}

std::string seed_token_in_smbios1(const nlohmann::json& vm_config) {
    std::string smbios = vm_config.value("smbios1", "");
    auto at = smbios.find("serial=");
    if (at == std::string::npos) return "";
    std::string serial = smbios.substr(at + 7);
    serial = serial.substr(0, serial.find(','));
    auto decoded = base64_decode(serial);
    if (!decoded) return "";
    auto seed = decode_seed_compact(*decoded);
    return seed ? seed->token : "";
}

}  // namespace nodeform::test
