#!/usr/bin/env python3
"""One desired state, written in each tool's language (issue 7's peer benchmark).

usage: gen_state.py OUT_DIR KEYS_DIR PACKAGES_FILE
Writes OUT_DIR/{nodeform-spec.json,site.pp,playbook.yml,policy.cf,state.json}. KEYS_DIR holds
benchNN.pub (one OpenSSH public key per user). The state: the packages listed in PACKAGES_FILE
(already installed), group benchops (gid 2000), users bench01..bench10 (uid 2001..2010, shell
/bin/bash, home /home/benchNN, supplementary group benchops, one SSH key each), the sudoers
drop-in /etc/sudoers.d/benchops (0440), 20 files /etc/bench/fileNN.conf, 11 directories (/srv/bench
and /srv/bench/dirNN, owners, groups and modes mixed) and 10 symlinks /etc/bench/linkNN.conf -> fileNN.conf
(relative targets). Only kinds that all four tools have built in (docs/benchmarks.md says which are not).
"""
import json
import os
import sys

out, keys_dir, packages_file = sys.argv[1:4]
packages = [p.strip() for p in open(packages_file) if p.strip() and not p.startswith("#")]
GROUP, GID = "benchops", 2000
users = []
for i in range(1, 11):
    name = f"bench{i:02d}"
    key = open(os.path.join(keys_dir, name + ".pub")).read().strip()
    users.append({"name": name, "uid": GID + i, "home": f"/home/{name}", "key": key})
files = [{"path": "/etc/sudoers.d/benchops", "content": f"%{GROUP} ALL=(ALL:ALL) NOPASSWD: ALL\n",
          "mode": "0440", "owner": "root", "group": "root"}]
for i in range(1, 21):
    body = "".join(f"setting_{i:02d}_{k:02d} = value-{i * 100 + k}\n" for k in range(24))
    odd = i % 2 == 1
    files.append({"path": f"/etc/bench/file{i:02d}.conf", "content": f"# bench file {i}\n" + body,
                  "mode": "0644" if odd else "0640", "owner": "root", "group": "root" if odd else GROUP})

# Directories: the parent first (Puppet and the peers' loops create in this order), then odd ones owned by
# the user benchNN (0750), even ones root:benchops (0770).
directories = [{"path": "/srv/bench", "mode": "0755", "owner": "root", "group": "root"}]
for i in range(1, 11):
    odd = i % 2 == 1
    directories.append({"path": f"/srv/bench/dir{i:02d}", "mode": "0750" if odd else "0770",
                        "owner": f"bench{i:02d}" if odd else "root", "group": GROUP})
# Symlinks: relative targets, stored as given by every tool; links are root's (nobody sets their owner).
symlinks = [{"path": f"/etc/bench/link{i:02d}.conf", "target": f"file{i:02d}.conf"} for i in range(1, 11)]

state = {"packages": packages, "group": GROUP, "gid": GID, "users": users, "files": files,
         "directories": directories, "symlinks": symlinks}
json.dump(state, open(os.path.join(out, "state.json"), "w"), indent=1)

# nodeform: a resolved spec (docs/resolved-spec.md), written the way the resolver writes it.
spec = {
    "schema_version": 1, "identity": "bench-01", "spec": "bench", "posture": "bench", "site": "bench",
    "network": {"mode": "dhcp"},
    "groups": [{"name": GROUP, "gid": GID, "state": "present"}],
    "users": [{"name": u["name"], "uid": u["uid"], "shell": "/bin/bash", "home": u["home"], "groups": [GROUP],
               "sudo": False, "sudo_nopasswd": False, "ssh_keys": [u["key"]], "state": "present"} for u in users],
    "packages": [{"name": p, "state": "present"} for p in packages],
    "files": [dict(f, state="present", restart=[]) for f in files],
    "directories": [dict(d, recursive=False) for d in directories],
    "symlinks": [dict(s, state="present") for s in symlinks],
    "services": [], "stacks": [], "health": [],
    "apply": {"trigger": "schedule", "interval_s": 300, "splay_s": 0, "drift": "remediate"},
    "secret_paths": [],
}
json.dump(spec, open(os.path.join(out, "nodeform-spec.json"), "w"), sort_keys=True, separators=(",", ":"))


def pp(s):
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


# Puppet: one manifest; packages as one resource array (the dpkg provider prefetches them in one query).
m = [f"package {{ [{', '.join(pp(p) for p in packages)}]: ensure => installed }}",
     f"group {{ {pp(GROUP)}: ensure => present, gid => {GID} }}",
     "file { '/etc/bench': ensure => directory, owner => 'root', group => 'root', mode => '0755' }"]
for u in users:
    n = u["name"]
    m.append(f"user {{ {pp(n)}: ensure => present, uid => {u['uid']}, home => {pp(u['home'])}, shell => '/bin/bash',"
             f" groups => [{pp(GROUP)}], membership => inclusive, managehome => true, require => Group[{pp(GROUP)}] }}")
    m.append(f"file {{ {pp(u['home'] + '/.ssh')}: ensure => directory, owner => {pp(n)}, group => {pp(n)},"
             f" mode => '0700', require => User[{pp(n)}] }}")
    m.append(f"file {{ {pp(u['home'] + '/.ssh/authorized_keys')}: ensure => file, content => {pp(u['key'] + chr(10))},"
             f" owner => {pp(n)}, group => {pp(n)}, mode => '0600' }}")
for f in files:
    m.append(f"file {{ {pp(f['path'])}: ensure => file, content => {pp(f['content'])}, owner => {pp(f['owner'])},"
             f" group => {pp(f['group'])}, mode => {pp(f['mode'])}, require => Group[{pp(GROUP)}] }}")
for d in directories:
    m.append(f"file {{ {pp(d['path'])}: ensure => directory, owner => {pp(d['owner'])}, group => {pp(d['group'])},"
             f" mode => {pp(d['mode'])} }}")  # the owner's User and the Group are autorequired
for s in symlinks:
    m.append(f"file {{ {pp(s['path'])}: ensure => link, target => {pp(s['target'])} }}")
open(os.path.join(out, "site.pp"), "w").write("\n".join(m) + "\n")

# Ansible: one play, no fact gathering (nothing here needs facts), loops for users and files.
y = json.dumps  # JSON is YAML: no quoting surprises
play = [
    "- hosts: localhost",
    "  connection: local",
    "  gather_facts: false",
    "  tasks:",
    "    - name: packages",
    f"      ansible.builtin.apt: {{name: {y(packages)}, state: present}}",
    "    - name: group",
    f"      ansible.builtin.group: {{name: {GROUP}, gid: {GID}, state: present}}",
    "    - name: users",
    "      ansible.builtin.user: {name: \"{{ item.name }}\", uid: \"{{ item.uid }}\", home: \"{{ item.home }}\","
    f" shell: /bin/bash, groups: [{GROUP}], append: false, create_home: true, state: present}}",
    f"      loop: {y([{'name': u['name'], 'uid': u['uid'], 'home': u['home']} for u in users])}",
    "    - name: ssh directories",
    "      ansible.builtin.file: {path: \"{{ item.home }}/.ssh\", state: directory, owner: \"{{ item.name }}\","
    " group: \"{{ item.name }}\", mode: \"0700\"}",
    f"      loop: {y([{'name': u['name'], 'home': u['home']} for u in users])}",
    "    - name: authorized_keys",
    "      ansible.builtin.copy: {dest: \"{{ item.home }}/.ssh/authorized_keys\", content: \"{{ item.key }}\","
    " owner: \"{{ item.name }}\", group: \"{{ item.name }}\", mode: \"0600\"}",
    f"      loop: {y([{'name': u['name'], 'home': u['home'], 'key': u['key'] + chr(10)} for u in users])}",
    "    - name: /etc/bench",
    "      ansible.builtin.file: {path: /etc/bench, state: directory, owner: root, group: root, mode: \"0755\"}",
    "    - name: files",
    "      ansible.builtin.copy: {dest: \"{{ item.path }}\", content: \"{{ item.content }}\", owner: \"{{ item.owner }}\","
    " group: \"{{ item.group }}\", mode: \"{{ item.mode }}\"}",
    f"      loop: {y(files)}",
    "    - name: directories",
    "      ansible.builtin.file: {path: \"{{ item.path }}\", state: directory, owner: \"{{ item.owner }}\","
    " group: \"{{ item.group }}\", mode: \"{{ item.mode }}\"}",
    f"      loop: {y(directories)}",
    "    - name: symlinks",  # a relative src is relative to the link's directory, as with ln -s
    "      ansible.builtin.file: {path: \"{{ item.path }}\", src: \"{{ item.target }}\", state: link}",
    f"      loop: {y(symlinks)}",
]
open(os.path.join(out, "playbook.yml"), "w").write("\n".join(play) + "\n")


# CFEngine: a self-contained policy (no masterfiles); the apt_get package module as the stdlib
# configures it (installed-package inventory refreshed every run).
def cf(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("$", "$(const.dollar)") + '"'


c = ["body common control { bundlesequence => { \"bench_group\", \"bench\" }; }",
     "body package_module apt_get {",
     "  query_installed_ifelapsed => \"0\";",
     "  query_updates_ifelapsed => \"1440\";",
     "  interpreter => \"/usr/bin/python3\";",
     "}",
     "body perms mog(m, o, g) { rxdirs => \"false\"; mode => \"$(m)\"; owners => { \"$(o)\" }; groups => { \"$(g)\" }; }",
     "body perms og(o, g) { owners => { \"$(o)\" }; groups => { \"$(g)\" }; }",
     "body contain shell_false { useshell => \"noshell\"; }",
     "body link_from ln_s(x) { link_type => \"symlink\"; source => \"$(x)\"; when_no_source => \"force\"; }",
     "bundle agent bench {",
     "packages:"]
for p in packages:
    c.append(f"  {cf(p)} policy => \"present\", package_module => apt_get;")
c.append("users:")
for u in users:
    c.append(f"  {cf(u['name'])} policy => \"present\", uid => \"{u['uid']}\", home_dir => {cf(u['home'])},"
             f" shell => \"/bin/bash\", groups_secondary => {{ \"{GROUP}\" }};")
c.append("files:")
c.append("  \"/etc/bench/.\" create => \"true\", perms => mog(\"0755\", \"root\", \"root\");")
for u in users:
    n = u["name"]
    c.append(f"  {cf(u['home'] + '/.')} create => \"true\", perms => og({cf(n)}, {cf(n)});")
    c.append(f"  {cf(u['home'] + '/.ssh/.')} create => \"true\", perms => mog(\"0700\", {cf(n)}, {cf(n)});")
    c.append(f"  {cf(u['home'] + '/.ssh/authorized_keys')} create => \"true\", content => {cf(u['key'] + chr(10))},"
             f" perms => mog(\"0600\", {cf(n)}, {cf(n)});")
for f in files:
    c.append(f"  {cf(f['path'])} create => \"true\", content => {cf(f['content'])},"
             f" perms => mog({cf(f['mode'])}, {cf(f['owner'])}, {cf(f['group'])});")
for d in directories:  # a trailing "/." makes the promise a directory
    c.append(f"  {cf(d['path'] + '/.')} create => \"true\","
             f" perms => mog({cf(d['mode'])}, {cf(d['owner'])}, {cf(d['group'])});")
for s in symlinks:
    c.append(f"  {cf(s['path'])} link_from => ln_s({cf(s['target'])});")
c.append("}")
# CFEngine 3.21 has no promise type for groups: a commands promise creates the group when getgid()
# finds none, in its own bundle before the users.
c[0:0] = ["bundle agent bench_group {",
          "vars:",
          f"  \"gid\" int => getgid(\"{GROUP}\");",
          "classes:",
          "  \"has_group\" expression => isvariable(\"gid\");",
          "commands:",
          "  !has_group::",
          f"    \"/usr/sbin/groupadd -g {GID} {GROUP}\" contain => shell_false;",
          "}"]
open(os.path.join(out, "policy.cf"), "w").write("\n".join(c) + "\n")
