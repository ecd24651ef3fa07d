#!/usr/bin/env python3
"""Boot-to-platform-ready, step by step, from one e2e test's artifacts (docs/benchmarks.md, issue 15).

Usage: bench/e2e/boot_breakdown.py DIR
DIR is NODEFORM_E2E_ARTIFACTS/TEST (tests/e2e/qemu/qemu_e2e.hpp writes it): the guest's boot journal
(journal-boot.txt, `journalctl -b -o short-monotonic`), the agent's journal (agent-journal.json), and a copy
of the controller's SQLite store (nodeform.db: lifecycle receipts and reports). Guest times are the guest's
monotonic clock (0 = kernel start); the host's receipts are placed on it through the guest's realtime clock
(journald's __REALTIME_TIMESTAMP - __MONOTONIC_TIMESTAMP = the guest's boot instant).
"""
import datetime
import json
import re
import sqlite3
import sys


def iso_s(text):
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc).timestamp()


def main(d):
    boot = {}
    line_re = re.compile(r"^\[\s*([0-9.]+)\] \S+ systemd\[1\]: (Starting|Started|Finished|Reached target) (\S+\.(?:service|target|socket|mount))")
    for line in open(f"{d}/journal-boot.txt", errors="replace"):
        m = line_re.match(line)
        if m:
            boot.setdefault((m.group(2), m.group(3)), float(m.group(1)))
    agent = []
    for line in open(f"{d}/agent-journal.json", errors="replace"):
        try:
            agent.append(json.loads(line))
        except ValueError:
            pass
    mono = lambda e: int(e["__MONOTONIC_TIMESTAMP"]) / 1e6
    boot_epoch = min(int(e["__REALTIME_TIMESTAMP"]) / 1e6 - mono(e) for e in agent)
    first = lambda text: next((mono(e) for e in agent if text in str(e.get("MESSAGE", ""))), None)

    db = sqlite3.connect(f"{d}/nodeform.db")
    receipts = {s: (iso_s(a), iso_s(b)) for s, a, b in db.execute(
        "select step, started_at, finished_at from lifecycle_receipts order by id")}
    report = db.execute("select body, received_at from reports where phase='platform-ready' order by received_at"
                        " limit 1").fetchone()
    body = json.loads(report[0])
    received = report[1] / 1000.0

    rows = []
    t0 = receipts["vmid_reserved"][0]
    for step in ("vmid_reserved", "cloned", "configured", "resized", "started", "registered"):
        if step in receipts:
            a, b = receipts[step]
            rows.append((f"host: {step}", a - t0, b - a))
    g = lambda s: boot_epoch + s - t0  # guest monotonic -> seconds since the first receipt
    started_end = receipts["started"][1] - t0
    rows.append(("QEMU started → kernel start (firmware)", started_end, g(0) - started_end))
    def span(label, a, b):
        if a is not None and b is not None:
            rows.append((label, g(a), b - a))
    span("kernel → systemd (journald started)", 0.0, boot.get(("Started", "systemd-journald.service")))
    span("cloud-init-local", boot.get(("Starting", "cloud-init-local.service")),
         boot.get(("Finished", "cloud-init-local.service")))
    span("networking", boot.get(("Starting", "networking.service")), boot.get(("Finished", "networking.service")))
    span("cloud-init (network stage)", boot.get(("Starting", "cloud-init.service")),
         boot.get(("Finished", "cloud-init.service")))
    span("cloud-config", boot.get(("Starting", "cloud-config.service")),
         boot.get(("Finished", "cloud-config.service")))
    span("cloud-final (after the agent started)", boot.get(("Starting", "cloud-final.service")),
         boot.get(("Finished", "cloud-final.service")))
    a_start = boot.get(("Starting", "nodeform-agent.service")) or first("Starting nodeform-agent")
    a_up = first("starting for")
    span("agent start (unit start → first log line)", a_start, a_up)
    enrolled = first("enrolled with the controller")
    span("enroll", a_up, enrolled)
    run_start = iso_s(body["started_at"]) - boot_epoch
    run_end = iso_s(body["finished_at"]) - boot_epoch
    span("fetch spec (enrolled → converge start)", enrolled, run_start)
    span("converge (whole run)", run_start, run_end)
    for r in body.get("resources", []):
        rows.append((f"  {r['id']} ({r['status']})", None, r.get("duration_ms", 0) / 1000.0))
    span("report (run end → stored by the controller)", run_end, received - boot_epoch)
    if "agent_ready" in receipts:
        rows.append(("host: guest agent answers (agent_ready)", None, receipts["agent_ready"][1] - t0))
    rows.append(("platform-ready report stored", None, received - t0))

    print(f"| step | at (s) | took (s) |\n|---|---|---|")
    for label, at, took in rows:
        print(f"| {label} | {'' if at is None else f'{at:.2f}'} | {took:.3f} |")
    agent_share = (run_end - a_start) if a_start is not None else float("nan")
    print(f"\nboot to platform-ready (first receipt → report stored): {received - t0:.1f} s; agent process "
          f"(unit start → run end): {agent_share:.2f} s; of which converge {run_end - run_start:.2f} s")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
