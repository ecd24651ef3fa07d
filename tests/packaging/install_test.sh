# Both packages installed the way an operator does, into a copy of the cached Debian root: dpkg -i, then
# apt-get -f install; every file in place; --version inside the root; systemd-analyze verify on the
# installed units; booted with systemd-nspawn, the boot finishes, the controller runs as its user, is active
# (running) with READY reached and answers /healthz, the agent (given a spec in its conffile) runs and
# reaches platform-ready; apt-get remove keeps the state, purge leaves nothing behind.
. "$(dirname "$0")/lib.sh"
need_root
command -v systemd-nspawn >/dev/null && command -v nsenter >/dev/null && command -v curl >/dev/null ||
  skip "systemd-nspawn, nsenter or curl missing: scripts/install-deps.sh test"

work=$(mktemp -d /var/tmp/nodeform-packaging.XXXXXX)
root=$work/root
nspawn_pid="" init=""
cleanup() {
  if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
    kill "$nspawn_pid"  # SIGTERM: an orderly poweroff of the container
    for _ in $(seq 300); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$nspawn_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
cp -a --reflink=auto "$base" "$root"

# The file list of the root, without what is not the packages' doing: kernel file systems, apt's and
# dpkg's own records and caches, logs, the state a booting systemd writes, backup copies (passwd-).
snapshot() {
  (cd "$root" && find . -xdev \( -path ./proc -o -path ./sys -o -path ./dev -o -path ./run -o -path ./tmp \
    -o -path ./var/tmp -o -path ./var/lib/apt -o -path ./var/lib/dpkg -o -path ./var/cache -o -path ./var/log \
    -o -path ./var/backups -o -path ./var/lib/private -o -path ./var/lib/systemd/timers \
    -o -path ./var/lib/systemd/random-seed -o -path ./var/lib/systemd/catalog -o -path ./var/lib/systemd/linger \
    -o -path ./var/lib/dhcp \) -prune \
    -o ! -name '*-' -print | sort)
}
snapshot >"$work/before"
packages_before=$(inroot dpkg-query -W -f='${Package}\n' | sort)

# ---- install: dpkg -i fails on the missing dependencies, apt-get -f install brings them
cp "$agent_deb" "$controller_deb" "$root/tmp/"
inroot dpkg -i "/tmp/$(basename "$agent_deb")" "/tmp/$(basename "$controller_deb")" >"$work/dpkg.log" 2>&1 || true
inroot apt-get -f install -y -q --no-install-recommends >"$work/apt.log" 2>&1 ||
  fail "apt-get -f install: $(tail -n 20 "$work/apt.log")"
for p in nodeform-agent nodeform-controller; do
  [ "$(inroot dpkg-query -W -f='${Status}' "$p")" = "install ok installed" ] ||
    fail "$p is not installed: $(cat "$work/dpkg.log" "$work/apt.log")"
done
ok "dpkg -i + apt-get -f install"

# ---- every file in place
for f in usr/bin/nodeform-agent usr/bin/nodeform-controller lib/systemd/system/nodeform-agent.service \
  lib/systemd/system/nodeform-controller.service etc/nodeform/agent.yaml etc/nodeform/controller.yaml \
  usr/share/man/man1/nodeform-agent.1.gz usr/share/man/man1/nodeform-controller.1.gz \
  usr/share/doc/nodeform-agent/copyright usr/share/doc/nodeform-agent/changelog.gz \
  usr/share/doc/nodeform-controller/copyright usr/share/doc/nodeform-controller/changelog.gz \
  usr/share/doc/nodeform-agent/cloud-init.md usr/share/doc/nodeform-controller/controller.md; do
  [ -e "$root/$f" ] || fail "/$f is missing after the install"
done
for p in nodeform-agent nodeform-controller; do
  inroot dpkg -L "$p" | while read -r f; do [ -e "$root$f" ] || { echo "$p: $f missing" >&2; exit 1; }; done ||
    fail "a file of $p is missing"
done
grep -qx /etc/nodeform/controller.yaml "$root/var/lib/dpkg/info/nodeform-controller.conffiles" ||
  fail "controller.yaml is not a conffile"
[ -L "$root/etc/systemd/system/multi-user.target.wants/nodeform-agent.service" ] || fail "the agent is not enabled"
[ -L "$root/etc/systemd/system/multi-user.target.wants/nodeform-controller.service" ] ||
  fail "the controller is not enabled"
inroot getent passwd nodeform | grep -q ':/var/lib/nodeform-controller:/usr/sbin/nologin$' ||
  fail "no system user nodeform: $(inroot getent passwd nodeform)"
gid=$(inroot getent group nodeform | cut -d: -f3)
[ "$(stat -c '%a %u %g' "$root/etc/nodeform/site")" = "750 0 $gid" ] ||
  fail "/etc/nodeform/site is $(stat -c '%a %u %g' "$root/etc/nodeform/site"), not 750 root:nodeform ($gid)"
ok "every file in place, units enabled, user nodeform, site 0750 root:nodeform"

# ---- the programs run inside the root and print the project's version
version=$(sed -n 's/^project(nodeform VERSION \([0-9.]*\).*/\1/p' "$src/CMakeLists.txt")
for p in agent controller; do
  out=$(inroot "nodeform-$p" --version)
  [ "$out" = "nodeform-$p $version" ] || fail "nodeform-$p --version says '$out', not 'nodeform-$p $version'"
  [ "$(dpkg-deb -f "$([ $p = agent ] && echo "$agent_deb" || echo "$controller_deb")" Version)" = "$version" ] ||
    fail "the nodeform-$p package's version is not $version"
done
ok "--version inside the root: $version"

# ---- systemd-analyze verify on the installed units (with the root's own systemd and man pages)
for p in agent controller; do
  out=$(inroot systemd-analyze verify --man=no "/lib/systemd/system/nodeform-$p.service" 2>&1) ||
    fail "systemd-analyze verify nodeform-$p.service: $out"
  [ -z "$out" ] || fail "systemd-analyze verify nodeform-$p.service warns: $out"
done
ok "systemd-analyze verify: both units clean"
# The sandbox's figure (docs/packaging.md records both): the controller's may not grow unnoticed.
for p in agent controller; do
  exposure=$(inroot systemd-analyze security --offline=true --no-pager "/lib/systemd/system/nodeform-$p.service" 2>&1 |
    sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p')
  [ -n "$exposure" ] || fail "systemd-analyze security gave no figure for nodeform-$p.service"
  echo "exposure nodeform-$p.service: $exposure"
  [ "$p" = agent ] || awk -v e="$exposure" 'BEGIN { exit !(e <= 2.0) }' ||
    fail "nodeform-controller.service's exposure is $exposure (docs/packaging.md: 1.4; at most 2.0)"
done

# ---- boot: the controller as a service, with the example site and a free loopback port
cp -a "$src/examples/site/." "$root/etc/nodeform/site/"
inroot chgrp -R nodeform /etc/nodeform/site
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
sed -i "s/^# listen: .*/listen: 127.0.0.1:$port/" "$root/etc/nodeform/controller.yaml"
grep -q "^listen: 127.0.0.1:$port" "$root/etc/nodeform/controller.yaml" || fail "cannot set listen: in controller.yaml"
# The agent with a resolved spec instead of a seed (the `spec:` key of its conffile): its unit as installed.
cat >"$root/root/nf-pkg-spec.json" <<'JSON'
{"schema_version": 1, "identity": "pkg-01", "secret_paths": [],
 "files": [{"path": "/etc/nf-pkg-test", "mode": "0644", "owner": "root", "group": "root", "state": "present",
            "content": "converged by the packaged agent\n"}]}
JSON
sed -i 's|^# spec: .*|spec: /root/nf-pkg-spec.json|' "$root/etc/nodeform/agent.yaml"
grep -q '^spec: /root/nf-pkg-spec.json' "$root/etc/nodeform/agent.yaml" || fail "cannot set spec: in agent.yaml"
# The cached root blocks daemon starts (policy-rc.d exit 101) for the tests that install into it; a booted
# system has none, and deb-systemd-invoke must act in it.
policy_rc=$(cat "$root/usr/sbin/policy-rc.d" 2>/dev/null || true)
rm -f "$root/usr/sbin/policy-rc.d"
# The host has no systemd or D-Bus: --register=no --keep-unit (docs/testing.md). The host's network.
systemd-nspawn -D "$root" --boot --console=passive --register=no --keep-unit --machine="nf-pkg-$$" \
  >"$work/nspawn.log" 2>&1 &
nspawn_pid=$!
for _ in $(seq 300); do
  child=$(cat /proc/"$nspawn_pid"/task/*/children 2>/dev/null | awk '{ print $1 }' | head -n 1 || true)
  if [ -n "$child" ] && [ "$(cat "/proc/$child/comm" 2>/dev/null)" = systemd ]; then init=$child; break; fi
  sleep 0.1
done
[ -n "$init" ] || fail "the container's systemd did not start: $(cat "$work/nspawn.log")"
in_container() { nsenter -t "$init" -a "$@"; }
for _ in $(seq 300); do
  state=$(in_container systemctl is-system-running --wait 2>&1 || true)
  case "$state" in *"Failed to connect to bus"*) sleep 0.1 ;; *) break ;; esac
done
# The boot finishes (READY=1 when the agent's loop runs, so no converge holds it): not "starting".
case "$state" in running|degraded) ;; *) fail "the boot did not finish: is-system-running says '$state'" ;; esac
for _ in $(seq 100); do
  [ "$(in_container systemctl show -P ActiveState nodeform-controller.service)" = active ] && break
  sleep 0.1
done
status=$(in_container systemctl status --no-pager nodeform-controller.service 2>&1 || true)
grep -q 'Active: active (running)' <<<"$status" ||
  fail "nodeform-controller.service is not active (running): $status
$(in_container journalctl --no-pager -u nodeform-controller.service | tail -n 30)"
# Type=notify: "active" is only reached with READY=1 (before it the unit is "activating").
[ "$(in_container systemctl show -P Type,NotifyAccess nodeform-controller.service | tr '\n' ' ')" = "notify main " ] ||
  fail "the controller unit is not Type=notify"
main_pid=$(in_container systemctl show -P MainPID nodeform-controller.service)
user=$(in_container stat -c %U "/proc/$main_pid")
[ "$user" = nodeform ] || fail "the controller runs as '$user', not nodeform"
health=$(curl -fsS --max-time 10 --cacert "$root/var/lib/nodeform-controller/tls/ca.pem" "https://127.0.0.1:$port/healthz") ||
  fail "GET /healthz failed: $(in_container journalctl --no-pager -u nodeform-controller.service | tail -n 20)"
ok "controller active (running) as nodeform, READY reached, /healthz: $health"
[ -f "$root/var/lib/nodeform-controller/nodeform.db" ] || fail "the controller wrote no database in its state directory"

# ---- the agent: active (running) as installed, platform-ready as its own signal
out=$(in_container nodeform-agent wait-ready --timeout 120 2>&1) ||
  fail "nodeform-agent wait-ready: $out
$(in_container journalctl --no-pager -u nodeform-agent.service | tail -n 30)"
grep -q 'Active: active (running)' <<<"$(in_container systemctl status --no-pager nodeform-agent.service 2>&1 || true)" ||
  fail "nodeform-agent.service is not active (running)"
status_text=$(in_container systemctl show -P StatusText nodeform-agent.service)
for _ in $(seq 100); do
  case "$status_text" in ready*) break ;; esac
  sleep 0.1; status_text=$(in_container systemctl show -P StatusText nodeform-agent.service)
done
case "$status_text" in ready*) ;; *) fail "the agent's STATUS= is '$status_text', not ready…" ;; esac
[ "$(cat "$root/etc/nf-pkg-test")" = "converged by the packaged agent" ] || fail "the agent did not converge its spec"
ok "agent active (running), wait-ready: platform-ready, STATUS=$status_text"

# ---- remove keeps the state, stops the service
in_container apt-get remove -y -q nodeform-controller nodeform-agent >"$work/remove.log" 2>&1 ||
  fail "apt-get remove: $(tail -n 20 "$work/remove.log")"
[ "$(in_container systemctl is-active nodeform-controller.service || true)" != active ] || fail "remove left the controller running"
[ "$(in_container systemctl is-active nodeform-agent.service || true)" != active ] || fail "remove left the agent running"
for f in var/lib/nodeform-controller/nodeform.db var/lib/nodeform-controller/tls/ca.pem var/lib/nodeform/platform-ready \
  etc/nodeform/controller.yaml etc/nodeform/site/site.yaml; do
  [ -e "$root/$f" ] || fail "apt-get remove deleted /$f"
done
[ ! -e "$root/usr/bin/nodeform-controller" ] || fail "apt-get remove left the program"
ok "apt-get remove: stopped, state and configuration kept"

# ---- purge (and the dependencies apt brought) leaves the file list as it was before the install
in_container apt-get purge -y -q nodeform-controller nodeform-agent >"$work/purge.log" 2>&1 ||
  fail "apt-get purge: $(tail -n 20 "$work/purge.log")"
in_container apt-get autoremove --purge -y -q >>"$work/purge.log" 2>&1 || fail "apt-get autoremove: $(tail -n 20 "$work/purge.log")"
kill "$nspawn_pid"
for _ in $(seq 300); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.1; done
[ -z "$policy_rc" ] || { printf '%s\n' "$policy_rc" >"$root/usr/sbin/policy-rc.d"; chmod 755 "$root/usr/sbin/policy-rc.d"; }
rm -f "$root/etc/nf-pkg-test" "$root/root/nf-pkg-spec.json"  # the test's own spec and what it converged
packages_after=$(inroot dpkg-query -W -f='${Package}\n' | sort)
[ "$packages_after" = "$packages_before" ] ||
  fail "the package set differs after purge + autoremove: $(diff <(echo "$packages_before") <(echo "$packages_after"))"
snapshot >"$work/after"
diff -u "$work/before" "$work/after" >"$work/diff" || fail "purge left files behind (or removed some):
$(cat "$work/diff")"
ok "apt-get purge: the root's file list is as before the install"
