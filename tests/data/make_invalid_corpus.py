#!/usr/bin/env python3
"""Checks tests/data/invalid/<case>/ against a validator and pins each expected error to its full line.

Each case is an overlay on tests/data/valid/minimal (docs/testing.md, "Invalid site corpus"): the files it changes
or adds, delete.txt (paths to remove, one a line), generate.json (an oversized file written at test time) and
expected-error.txt (one substring a line that some diagnostic "FILE:LINE:COL: FIELD: MESSAGE" must contain).
tests/support/test_paths.cpp (invalid_site) assembles a case the same way for the C++ tests.

Usage: make_invalid_corpus.py VALIDATOR [--pin]   (VALIDATOR: build/controller/nodeform-controller)
With --pin, a one-line expected-error.txt becomes the full diagnostic line containing it (review the diff).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
BASE = os.path.join(HERE, "valid", "minimal")
CASES = os.path.join(HERE, "invalid")
META = ("expected-error.txt", "generate.json", "delete.txt")


def assemble(case, target):
    """The site tree of one case: minimal, the overlay's files over it, delete.txt applied, generate.json written."""
    overlay = os.path.join(CASES, case)
    shutil.copytree(BASE, target)
    shutil.copytree(overlay, target, dirs_exist_ok=True, ignore=lambda d, names: [n for n in names if n in META])
    deleted = os.path.join(overlay, "delete.txt")
    for rel in open(deleted).read().split() if os.path.exists(deleted) else []:
        os.remove(os.path.join(target, rel))
    generate = os.path.join(overlay, "generate.json")
    if os.path.exists(generate):
        spec = json.load(open(generate))
        with open(os.path.join(target, spec["file"]), "w") as f:
            depth = spec.get("depth", 0)
            if spec["kind"] == "huge":
                f.truncate(spec["bytes"])  # sparse, like the C++ test
            elif spec["kind"] == "deep-flow":
                f.write("x: " + "[" * depth + "]" * depth + "\n")
            elif spec["kind"] == "deep-block":
                f.write("x:\n  " + "- " * depth + "leaf\n")
            elif spec["kind"] == "laughs":
                f.write('a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n')
                for i in range(1, spec["levels"]):
                    f.write("a%d: &a%d [" % (i, i) + ",".join(["*a%d" % (i - 1)] * 10) + "]\n")


def main():
    if len(sys.argv) not in (2, 3) or (len(sys.argv) == 3 and sys.argv[2] != "--pin"):
        sys.exit(__doc__)
    validator, pin = sys.argv[1], len(sys.argv) == 3
    env = {k: v for k, v in os.environ.items() if k != "NODEFORM_TEST_SURELY_UNSET"}
    bad = 0
    for case in sorted(os.listdir(CASES)):
        expected_file = os.path.join(CASES, case, "expected-error.txt")
        expected = [l for l in open(expected_file).read().splitlines() if l]
        with tempfile.TemporaryDirectory() as tmp:
            site = os.path.join(tmp, "site")
            assemble(case, site)
            run = subprocess.run([validator, "validate", "--site", site, "--json"], capture_output=True, text=True,
                                 env=env)
        try:
            errors = json.loads(run.stdout)["errors"]
        except ValueError:
            errors = []
        lines = ["%s:%d:%d: %s: %s" % (e["file"], e["line"], e["column"], e["field"] or "-", e["message"])
                 for e in errors]
        ok = run.returncode == 1 and all(any(x in l for l in lines) for x in expected)
        bad += not ok
        print("%s %-30s rc=%d %s" % ("ok " if ok else "BAD", case, run.returncode, lines[:3]))
        if ok and pin and len(expected) == 1:
            with open(expected_file, "w") as f:
                f.write(next(l for l in lines if expected[0] in l) + "\n")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
