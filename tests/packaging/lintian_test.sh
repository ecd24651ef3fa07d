# lintian on both packages: no error and no warning; every override the packages ship carries a comment
# that says why (packaging/debian/*/lintian-overrides).
. "$(dirname "$0")/lib.sh"
command -v lintian >/dev/null || skip "lintian missing: scripts/install-deps.sh test"
for deb in "$agent_deb" "$controller_deb"; do
  out=$(lintian --fail-on none --no-tag-display-limit --display-level '>=warning' "$deb" 2>&1)
  bad=$(grep -E '^[EW]: ' <<<"$out" || true)
  [ -z "$bad" ] || fail "$(basename "$deb"):"$'\n'"$bad"
  ok "$(basename "$deb"): lintian reports no error or warning"
done
for overrides in "$src"/packaging/debian/*/lintian-overrides; do
  [ -f "$overrides" ] || continue
  awk 'NF && !/^#/ { if (prev !~ /^#/) { print FILENAME ": no comment above: " $0; bad=1 } } { prev=$0 } END { exit bad }' \
    "$overrides" || fail "an override without its reason"
done
ok "every lintian override is explained"
