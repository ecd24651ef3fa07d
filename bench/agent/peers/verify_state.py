#!/usr/bin/env python3
"""Check that ROOT holds the desired state of state.json (written by gen_state.py).

usage: verify_state.py ROOT STATE_JSON   -> prints "ok" (exit 0) or the first 5 differences (exit 1)
Same check for every tool, so a tool that is fast because it did less shows up as not verified.
"""
import json
import os
import stat
import sys

root, state_file = sys.argv[1:3]
st = json.load(open(state_file))
problems = []


def rd(path):
    with open(os.path.join(root, path.lstrip("/")), encoding="utf-8") as f:
        return f.read()


installed = set()
for para in rd("/var/lib/dpkg/status").split("\n\n"):
    fields = dict(line.split(": ", 1) for line in para.splitlines() if ": " in line and not line.startswith(" "))
    if fields.get("Status", "").endswith(" installed"):
        installed.add(fields.get("Package"))
problems += [f"package {p} not installed" for p in st["packages"] if p not in installed]

passwd = {l.split(":")[0]: l.split(":") for l in rd("/etc/passwd").splitlines() if l}
group = {l.split(":")[0]: l.split(":") for l in rd("/etc/group").splitlines() if l}
gids = {int(g[2]): n for n, g in group.items()}
g = group.get(st["group"])
if not g or int(g[2]) != st["gid"]:
    problems.append(f"group {st['group']} missing or gid differs")
members = set(g[3].split(",")) if g and g[3] else set()


def check_path(path, mode, uid, gid, content=None, kind=stat.S_IFREG):
    full = os.path.join(root, path.lstrip("/"))
    try:
        s = os.lstat(full)
    except FileNotFoundError:
        problems.append(f"{path} missing")
        return
    if stat.S_IFMT(s.st_mode) != kind:
        problems.append(f"{path} has the wrong type")
    if mode is not None and stat.S_IMODE(s.st_mode) != int(mode, 8):
        problems.append(f"{path} mode {oct(stat.S_IMODE(s.st_mode))} != {mode}")
    if (s.st_uid, s.st_gid) != (uid, gid):
        problems.append(f"{path} owner {s.st_uid}:{s.st_gid} != {uid}:{gid}")
    if content is not None and open(full, encoding="utf-8").read() != content:
        problems.append(f"{path} content differs")


for u in st["users"]:
    p = passwd.get(u["name"])
    if not p:
        problems.append(f"user {u['name']} missing")
        continue
    uid, gid = int(p[2]), int(p[3])
    if uid != u["uid"] or p[5] != u["home"] or p[6] != "/bin/bash":
        problems.append(f"user {u['name']} uid/home/shell differ: {':'.join(p)}")
    if u["name"] not in members:
        problems.append(f"user {u['name']} not in {st['group']}")
    check_path(u["home"], None, uid, gid, kind=stat.S_IFDIR)  # mode: each tool's useradd default
    check_path(u["home"] + "/.ssh", "0700", uid, gid, kind=stat.S_IFDIR)
    check_path(u["home"] + "/.ssh/authorized_keys", "0600", uid, gid, u["key"] + "\n")

def ids(item):
    return (int(passwd[item["owner"]][2]) if item["owner"] in passwd else -1,
            int(group[item["group"]][2]) if item["group"] in group else -1)


for f in st["files"]:
    check_path(f["path"], f["mode"], *ids(f), f["content"])

for d in st.get("directories", []):
    check_path(d["path"], d["mode"], *ids(d), kind=stat.S_IFDIR)

for s in st.get("symlinks", []):
    check_path(s["path"], None, 0, 0, kind=stat.S_IFLNK)  # links are root's; their mode means nothing
    full = os.path.join(root, s["path"].lstrip("/"))
    if os.path.islink(full) and os.readlink(full) != s["target"]:
        problems.append(f"{s['path']} -> {os.readlink(full)} != {s['target']}")

if problems:
    print("; ".join(problems[:5]) + (f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""))
    sys.exit(1)
print("ok")
