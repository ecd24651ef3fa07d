// mounts: a filesystem made only on a device without any signature (blkid finds none), never on one that has one;
// its /etc/fstab line by UUID (the line for the mount point replaced, every other line kept); mounted at the path.
// Devices, blkid, mkfs and mount are the host's: under --root the mount point is ROOT/PATH.
#include <sstream>

#include "../engine/context.hpp"
#include "converge_each.hpp"
#include "nodeform/agent/validate.hpp"

namespace nodeform::agent {
namespace {

struct Signature {
    std::string type;  // "" when blkid found none
    std::string uuid;
};

Result<Signature> probe(Context& ctx, const std::string& device) {
    auto res = ctx.run_raw({"blkid", "-p", "-o", "export", "--", device}, ctx.short_timeout());
    if (!res) return res.error();
    if (res->exit_code == 2) return Signature{};  // no signature at all
    if (res->exit_code != 0) return make_error("blkid " + device + " failed: " + output_tail(*res));
    Signature s;
    std::istringstream in(res->out);
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind("TYPE=", 0) == 0) s.type = line.substr(5);
        if (line.rfind("PTTYPE=", 0) == 0 && s.type.empty()) s.type = "partition table (" + line.substr(7) + ")";
        if (line.rfind("UUID=", 0) == 0) s.uuid = line.substr(5);
    }
    if (s.type.empty()) s.type = "unknown signature";
    return s;
}

// The mount point's field in /proc/self/mountinfo uses \040 for a space, and so on.
std::string unescape_mountinfo(const std::string& s) {
    std::string out;
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '\\' && i + 3 < s.size()) {
            out.push_back(static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0')));
            i += 3;
        } else {
            out.push_back(s[i]);
        }
    }
    return out;
}

}  // namespace

std::vector<ResourceResult> converge_mounts(Context& ctx, const std::vector<Item>& items) {
    return converge_each(ctx, items, [&ctx](const Item& item, ResourceResult& r) -> std::string {
        const std::string path = item.name;
        const std::string device = string_field(item.spec, "device");
        const std::string fstype = string_field(item.spec, "fstype", "ext4");
        const std::string options = string_field(item.spec, "options", "defaults");
        const bool format = bool_field(item.spec, "format", true);
        if (auto st = validate_abs_path(path, "mount point"); !st) return st.message();
        if (path == "/") return std::string("refusing to manage the root filesystem's mount");
        if (auto st = validate_abs_path(device, "device"); !st || device.rfind("/dev/", 0) != 0)
            return "device " + quote_for_message(device) +
                   " must be a path under /dev (e.g. /dev/vdb, /dev/disk/by-id/…)";
        if (fstype != "ext4" && fstype != "xfs")
            return "fstype " + quote_for_message(fstype) + " is not supported (ext4 or xfs)";
        if (!word_chars(options, ",=_-.")) return "options " + quote_for_message(options) + " must be mount(8) options";

        auto sig = probe(ctx, device);
        if (!sig) return sig.message();
        if (sig->type.empty()) {
            if (!format) return device + " has no filesystem and format is false; nothing is mounted";
            r.changes.push_back(ctx.change(item.pointer + "/fstype", "filesystem", "none", fstype));
            if (!ctx.apply()) {
                r.message = "would make " + fstype + " on " + device + " (it has no signature) and mount it";
                return {};
            }
            auto mk = ctx.run({"mkfs." + fstype, "-q", device}, ctx.long_timeout());
            if (!mk) return "cannot make a filesystem on " + device + ": " + mk.message();
            sig = probe(ctx, device);
            if (!sig) return sig.message();
        }
        if (sig->type != fstype)
            return device + " holds " + sig->type + (sig->uuid.empty() ? "" : " (UUID " + sig->uuid + ")") + ", not " +
                   fstype +
                   "; nodeform never reformats a device that has a signature: wipe it by hand "
                   "(wipefs) if its data is not needed, or set fstype to match";
        if (!word_chars(sig->uuid, "-")) return "blkid reports no usable UUID for " + device;

        // /etc/fstab: the line for this mount point, by UUID.
        const std::string line = "UUID=" + sig->uuid + " " + path + " " + fstype + " " + options + " 0 2";
        auto fstab = ctx.fs.read("/etc/fstab");
        std::string text = fstab ? *fstab : std::string();
        std::string out;
        bool placed = false;
        std::istringstream in(text);
        std::string l;
        while (std::getline(in, l)) {
            std::istringstream f(l);
            std::string spec_field, mount_point;
            f >> spec_field >> mount_point;
            if (!l.empty() && l[0] != '#' && mount_point == path) {
                if (!placed) out += line + "\n";
                placed = true;
                continue;
            }
            out += l + "\n";
        }
        if (!placed) out += line + "\n";
        if (out != text) {
            r.changes.push_back(ctx.change(item.pointer, "fstab",
                                           placed ? nlohmann::json("other line") : nlohmann::json(nullptr), line));
            if (ctx.apply()) {
                if (auto w = ctx.fs.write_atomic("/etc/fstab", out, {0644, 0, 0}); !w) return w.message();
            }
        }
        // Mounted at the path (as the host sees it)?
        const std::string target = ctx.fs.host_path(path);
        auto info = ctx.fs.read("/proc/self/mountinfo", 4 * 1024 * 1024);
        if (!info) return "cannot read /proc/self/mountinfo (is /proc mounted?): " + info.message();
        bool mounted = false;
        std::istringstream mi(*info);
        while (std::getline(mi, l)) {
            std::istringstream f(l);
            std::string id, parent, devno, root, mount_point;
            f >> id >> parent >> devno >> root >> mount_point;
            if (unescape_mountinfo(mount_point) == target) mounted = true;
        }
        if (!mounted) {
            r.changes.push_back(ctx.change(item.pointer, "mounted", false, true));
            if (ctx.apply()) {
                if (auto d = make_directories(ctx.fs, path, 0755); !d) return d.message();
                auto m = ctx.run({"mount", "-t", fstype, "-o", options, device, target}, ctx.short_timeout());
                if (!m) return "cannot mount " + device + " at " + target + ": " + m.message();
            }
        }
        r.message = r.changes.empty()
                        ? fstype + " " + sig->uuid + " mounted at " + path
                        : (ctx.apply() ? "mounted " : "would mount ") + fstype + " " + sig->uuid + " at " + path;
        return {};
    });
}

}  // namespace nodeform::agent
