#!/usr/bin/env python3
"""Regenerates tests/data/invalid/<case>/ from tests/data/valid/minimal plus one change per case.

Each case directory is a complete site tree and holds expected-error.txt: one line per substring that
some diagnostic ("FILE:LINE:COL: FIELD: MESSAGE") must contain. Cases whose input is too big to commit
hold generate.json instead; tests/unit/site/corpus_test.cpp writes that file into a copy at test time.

Usage: make_invalid_corpus.py [--validator PATH]  (with a validator, expected-error.txt is upgraded to the
full diagnostic line that contains the chosen substring, so positions are pinned too; review the diff).
"""
import json
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
BASE = os.path.join(HERE, "valid", "minimal")
OUT = os.path.join(HERE, "invalid")


def base_text(path):
    with open(os.path.join(BASE, path)) as f:
        return f.read()


def sub(path, old, new):
    text = base_text(path)
    assert old in text, (path, old)
    return {path: text.replace(old, new, 1)}


def add(path, content):
    return {path: content}


def delete(path):
    return {path: None}


def merge(*changes):
    out = {}
    for c in changes:
        out.update(c)
    return out


SPEC = "specs/base.yaml"
NODE = "nodes/node-01.yaml"
SITE = "site.yaml"
SECRETS = "secrets.yaml"
DEV = "postures/dev.yaml"

# name → (changes, expected substring, generate spec or None)
CASES = {
    "yaml-syntax": (sub(SPEC, "  posture: dev", "  posture: [dev"), "invalid YAML", None),
    "yaml-tab-indent": (sub(SPEC, "      gid: 2000", "\tgid: 2000"), "invalid YAML", None),
    "missing-site-yaml": (delete(SITE), "site.yaml:0:0: -: missing", None),
    "empty-file": (add("presets/empty.yaml", ""), "presets/empty.yaml:1:1: -: the file is empty", None),
    "top-level-list": (add("presets/list.yaml", "- cores: 1\n"), "expected a mapping at the top of the file", None),
    "multi-document": (add("presets/two.yaml", "cores: 1\nmemory_mb: 512\ndisk_gb: 5\n---\ncores: 2\n"),
                       "put one document in each file", None),
    "unknown-key-top": (sub(SPEC, "access:", "acess:"), "unknown key 'acess'; did you mean 'access'?", None),
    "unknown-key-nested": (sub(SPEC, "      sudo: true", "      sudoo: true"), "unknown key 'sudoo'", None),
    "unknown-key-site": (sub(SITE, "controller:", "controler:"), "unknown key 'controler'", None),
    "unknown-key-secrets": (sub(SECRETS, "site_token:", "site_tokens:"), "unknown key 'site_tokens'", None),
    "wrong-type-string": (sub("presets/small.yaml", "cores: 1", "cores: two"), "expected integer, got string", None),
    "wrong-type-list": (sub(SPEC, "groups: [ops]", "groups: ops"), "expected list, got string", None),
    "wrong-type-bool": (sub(SPEC, "sudo: true", "sudo: yes"), "expected boolean, got string", None),
    "missing-required": (sub(NODE, "spec: base\n", ""), "missing required key 'spec'", None),
    "bad-enum": (sub(SPEC, "{name: less, state: present}", "{name: less, state: presnt}"),
                 "must be one of: present, absent (got 'presnt')", None),
    "schema-version-2": (sub(SPEC, "schema_version: 1", "schema_version: 2"), "must be one of: 1", None),
    "integer-overflow": (sub("presets/small.yaml", "cores: 1", "cores: 99999999999999999999999"),
                         "is out of range", None),
    "number-too-large": (sub("presets/small.yaml", "cores: 1", "cores: 100000"), "must be at most 512", None),
    "missing-posture": (sub(SPEC, "posture: dev", "posture: nope"), "posture 'nope' does not exist", None),
    "missing-spec": (sub(NODE, "spec: base", "spec: web"), "spec 'web' does not exist", None),
    "missing-preset": (sub(NODE, "preset: small", "preset: huge"), "preset 'huge' does not exist", None),
    "missing-endpoint": (sub(NODE, "endpoint: pve", "endpoint: pve-x"), "endpoint 'pve-x' is not defined", None),
    "missing-ssh-key": (sub(SPEC, "ssh_keys: [alice]", "ssh_keys: [alice, carol]"),
                        "ssh key 'carol' is not defined under 'ssh_keys'", None),
    "missing-stack-secret": (sub(SPEC, "{secret: db_password}", "{secret: db_pass}"),
                             "secret 'db_pass' is not defined under 'stack_env'", None),
    "missing-proxmox-secret": (sub(SECRETS, "  pve: ", "  pve-other: "),
                               "secret 'pve' is not defined under 'proxmox'", None),
    "missing-secrets-file": (delete(SECRETS), "ssh key 'alice' is not defined", None),
    "site-token-missing": (merge(sub(DEV, "method: network\n  allowed_cidrs: [127.0.0.0/8]", "method: site_token"),
                                 sub(SECRETS, 'site_token: "test-site-token-SECRETVALUE-0001"\n', "")),
                           "uses site_token but secrets.yaml has no site_token", None),
    "restart-unknown-service": (sub(SPEC, "restart: [cron]", "restart: [nginx]"),
                                "restarts 'nginx.service', which is not listed in platform.services", None),
    "duplicate-user": (sub(SPEC, "platform:", "    - name: alice\nplatform:"), "duplicate user 'alice'", None),
    "duplicate-package": (sub(SPEC, "    - hello\n", "    - hello\n    - hello\n"), "duplicate package 'hello'", None),
    "duplicate-file": (sub(SPEC, "  stacks:", "    - path: /etc/motd\n      content: x\n  stacks:"),
                       "duplicate file '/etc/motd'", None),
    "duplicate-yaml-key": (sub("presets/small.yaml", "cores: 1\n", "cores: 1\ncores: 2\n"),
                           "duplicate key 'cores'", None),
    "duplicate-name-yml": (add("specs/base.yml", base_text(SPEC)), "duplicate name 'base'", None),
    "duplicate-service": (sub(SPEC, "enable: [cron]", "enable: [cron]\n    disable: [cron.service]"),
                          "duplicate service 'cron.service'", None),
    "bad-package-name": (sub(SPEC, "    - hello\n", "    - Hello_World\n"), "is not a Debian package name", None),
    "bad-user-name": (sub(SPEC, "    - name: alice\n      uid", "    - name: \"root;rm -rf /\"\n      uid"),
                      "'root;rm -rf /' may contain only lowercase letters", None),
    "bad-group-name": (sub(SPEC, "    - name: ops", "    - name: 9ops"), "must start with a lowercase letter or '_'", None),
    "bad-unit-name": (sub(SPEC, "enable: [cron]", "enable: [\"cron daemon\"]"), "is not a systemd unit name", None),
    "relative-file-path": (sub(SPEC, "path: /etc/motd", "path: etc/motd"), "must be an absolute path", None),
    "dotdot-file-path": (sub(SPEC, "path: /etc/motd", "path: /etc/../root/.ssh/authorized_keys"),
                         "no '..' component", None),
    "bad-hostname": (sub(SPEC, "schema_version: 1\n", "schema_version: 1\nidentity:\n  hostname: Web_01\n"),
                     "must start with a lowercase letter", None),
    "node-name-too-long": (merge(sub(SITE, "controller:", "naming:\n  max_length: 8\ncontroller:"),
                                 add("nodes/a-very-long-node-name.yaml", "spec: base\n")),
                           "is longer than 8 characters (naming.max_length)", None),
    "bad-node-file-name": (add("nodes/Node_3.yaml", "spec: base\n"), "node name 'Node_3' (from the file name)", None),
    "bad-cidr": (sub(SPEC, "access:", "network:\n  address: 10.0.0.300/24\naccess:"), "octet above 255", None),
    "bad-gateway": (sub(SPEC, "access:", "network:\n  address: 10.0.0.5/24\n  gateway: 10.0.0\naccess:"),
                    "expected four octets", None),
    "bad-allowed-cidr": (sub(DEV, "127.0.0.0/8", "127.0.0.1/8"), "has host bits set", None),
    "network-needs-cidrs": (sub(DEV, "  allowed_cidrs: [127.0.0.0/8]\n", ""),
                            "auth.method network needs a non-empty auth.allowed_cidrs", None),
    "duplicate-vmid": (add("nodes/node-03.yaml", base_text(NODE)), "VMID 1001 is already used by node 'node-01'", None),
    "duplicate-hostname": (sub(SPEC, "schema_version: 1\n", "schema_version: 1\nidentity:\n  hostname: shared\n"),
                           "hostname 'shared.test.example.net' is already used by node 'node-01'", None),
    "duplicate-address": (merge(add("nodes/node-03.yaml", "spec: base\nnetwork:\n  address: 10.0.0.5/24\n"),
                                add("nodes/node-04.yaml", "spec: base\nnetwork:\n  address: 10.0.0.5/24\n")),
                          "address '10.0.0.5' is already used by node 'node-03'", None),
    "vmid-out-of-range": (sub(NODE, "vmid: 1001", "vmid: 2500"), "VMID 2500 is outside the range 1000-1999", None),
    "host-not-in-any-site": (sub(NODE, "node: pve1", "node: pve9"), "does not belong to any site", None),
    "host-wrong-site": (sub(NODE, "  node: pve1", "  site: rack-b\n  node: pve1"),
                        "Proxmox host 'pve1' does not belong to placement site 'rack-b'", None),
    "overlapping-ranges": (sub(SITE, "vmid_min: 2000", "vmid_min: 1500"), "overlaps the range of site 'rack-a'", None),
    "range-inverted": (sub(SITE, "vmid_max: 2999", "vmid_max: 1999"), "vmid_max 1999 is below vmid_min 2000", None),
    "host-in-two-sites": (sub(SITE, "hosts: [pve3]", "hosts: [pve3, pve1]"), "duplicate Proxmox host 'pve1'", None),
    "ct-reserved": (sub(NODE, "type: vm", "type: ct"), "type 'ct' (containers) is reserved", None),
    "health-missing-port": (sub(SPEC, "    port: 22\n", ""), "a tcp check needs 'port'", None),
    "health-wrong-key": (sub(SPEC, "    port: 22\n", "    port: 22\n    url: http://x/\n"),
                         "key 'url' does not apply to a tcp check", None),
    "bad-duration": (sub(SPEC, "interval: 1m", "interval: 5 minutes"), "is not a duration", None),
    "timeout-longer-than-interval": (sub(SPEC, "interval: 1m", "interval: 1m\n    timeout: 2m"),
                                     "timeout 120s is longer than interval 60s", None),
    "bad-file-mode": (sub(SPEC, "content: \"hello\\n\"", "content: \"hello\\n\"\n      mode: \"0999\""),
                      "must be 3 or 4 octal digits", None),
    "file-without-content": (sub(SPEC, "      content: \"hello\\n\"\n", ""), "a file with state present needs 'content'",
                             None),
    "env-secret-unset": (sub(SECRETS, '"db-SECRETVALUE-0003"', "env:NODEFORM_TEST_SURELY_UNSET"),
                         "environment variable NODEFORM_TEST_SURELY_UNSET is not set", None),
    "file-secret-missing": (sub(SECRETS, '"db-SECRETVALUE-0003"', "file:secrets/missing.txt"),
                            "cannot read secret file 'secrets/missing.txt'", None),
    "bad-ssh-key": (sub(SECRETS, '"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAITestKeyTestKeyTestKeyTestKeyTestKeyTest01 alice@test"',
                        '"not-a-key SECRETVALUE"'), "is not an SSH public key", None),
    "bad-fingerprint": (sub(SITE, '"00:11:22', '"zz:11:22'), "must be a SHA-256 fingerprint", None),
    "bad-token-id": (sub(SITE, "nodeform@pve!ci", "nodeform-ci"), "must be USER@REALM!TOKENID", None),
    "bad-controller-url": (sub(SITE, "https://127.0.0.1:8443", "ftp://127.0.0.1"), "must start with http:// or https://",
                           None),
    "balloon-above-memory": (sub("presets/small.yaml", "disk_gb: 10", "disk_gb: 10\nballoon_mb: 4096"),
                             "balloon_mb 4096 is above memory_mb 1024", None),
    "nul-byte": (add("presets/nul.yaml", "cores: 1\x00\n"), "contains a NUL byte", None),
    "not-yaml-extension": (add("specs/base.yaml.bak", "x: 1\n"), "not a .yaml file", None),
    "absent-file-with-content": (sub(SPEC, "      content: \"hello\\n\"\n", "      content: \"hello\\n\"\n      state: absent\n"),
                                 "content has no effect with state absent", None),
    "command-relative-argv": (sub(SPEC, "  - name: disk\n", "  - name: ok\n    type: command\n    argv: [bin/true]\n  - name: disk\n"),
                              "give the program's full path", None),
    "stray-comma": (add("presets/comma.yaml", "- a\n,\n"), "put one document in each file", None),
    "invalid-utf8": (add("presets/latin1.yaml", "cores: 1\n# caf\xe9\n"), "presets/latin1.yaml:2:6: -: the file is not valid UTF-8",
                     None),
    "utf8-surrogate-escape": (sub(SPEC, 'content: "hello\\n"', 'content: "\\ud800"'), "invalid YAML: invalid unicode: 55296", None),
    "huge-file": ({}, "the limit is 1048576 bytes",
                  {"file": "specs/huge.yaml", "kind": "huge", "bytes": 100 * 1024 * 1024}),
    "deep-flow-nesting": ({}, "nesting", {"file": "specs/deep.yaml", "kind": "deep-flow", "depth": 10000}),
    "deep-block-nesting": ({}, "nesting", {"file": "specs/deep.yaml", "kind": "deep-block", "depth": 10000}),
    "billion-laughs": ({}, "too many aliases", {"file": "specs/laughs.yaml", "kind": "laughs", "levels": 12}),
}


def write_case(name, changes, expected, generate):
    root = os.path.join(OUT, name)
    if os.path.exists(root):
        shutil.rmtree(root)
    shutil.copytree(BASE, root)
    for path, content in changes.items():
        full = os.path.join(root, path)
        if content is None:
            os.remove(full)
        else:
            os.makedirs(os.path.dirname(full), exist_ok=True)
            with open(full, "wb") as f:
                f.write(content.encode("latin-1") if name == "invalid-utf8" else content.encode())
    if generate:
        with open(os.path.join(root, "generate.json"), "w") as f:
            json.dump(generate, f, indent=2, sort_keys=True)
            f.write("\n")
    with open(os.path.join(root, "expected-error.txt"), "w") as f:
        f.write(expected + "\n")


def materialize(root, generate, target):
    """Mirror of the C++ test's generator, for --validator runs only."""
    shutil.copytree(root, target)
    path = os.path.join(target, generate["file"])
    kind = generate["kind"]
    with open(path, "w") as f:
        if kind == "huge":
            f.truncate(generate["bytes"])  # sparse, like the C++ test
        elif kind == "deep-flow":
            f.write("x: " + "[" * generate["depth"] + "]" * generate["depth"] + "\n")
        elif kind == "deep-block":
            f.write("x:\n  " + "- " * generate["depth"] + "leaf\n")
        elif kind == "laughs":
            f.write('a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n')
            for i in range(1, generate["levels"]):
                f.write("a%d: &a%d [" % (i, i) + ",".join(["*a%d" % (i - 1)] * 10) + "]\n")


def main():
    validator = None
    if len(sys.argv) == 3 and sys.argv[1] == "--validator":
        validator = sys.argv[2]
    os.makedirs(OUT, exist_ok=True)
    for name, (changes, expected, generate) in sorted(CASES.items()):
        write_case(name, changes, expected, generate)
        if not validator:
            continue
        site = os.path.join(OUT, name)
        tmp = None
        if generate:
            tmp = "/tmp/nodeform-corpus-" + name
            shutil.rmtree(tmp, ignore_errors=True)
            materialize(site, generate, tmp)
            site = tmp
        env = dict(os.environ)
        env.pop("NODEFORM_TEST_SURELY_UNSET", None)
        run = subprocess.run([validator, "validate", "--site", site, "--json"], capture_output=True, text=True, env=env)
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
        lines = []
        try:
            for e in json.loads(run.stdout)["errors"]:
                lines.append("%s:%d:%d: %s: %s" % (e["file"], e["line"], e["column"], e["field"] or "-", e["message"]))
        except Exception:
            pass
        match = [l for l in lines if expected in l]
        status = "ok " if run.returncode == 1 and match else "BAD"
        print("%s %-30s rc=%d %s" % (status, name, run.returncode, match[0] if match else lines[:3]))
        if match:
            with open(os.path.join(OUT, name, "expected-error.txt"), "w") as f:
                f.write(match[0] + "\n")


if __name__ == "__main__":
    main()
