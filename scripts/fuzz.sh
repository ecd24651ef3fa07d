#!/usr/bin/env bash
# Builds the libFuzzer harnesses with clang in build-fuzz/ and runs each for a bounded time.
# usage: scripts/fuzz.sh [SECONDS_PER_HARNESS=60] [HARNESS...]
#   (harnesses: fuzz_site_yaml fuzz_site_resolve fuzz_seed fuzz_report fuzz_http_framing)
# Exit 0 when every harness ran clean; crashes are saved as build-fuzz/crash-* / leak-* / timeout-*.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
shift || true
harnesses=("$@")
[ ${#harnesses[@]} -gt 0 ] || harnesses=(fuzz_site_yaml fuzz_site_resolve fuzz_seed fuzz_report fuzz_http_framing)
root="$(pwd)"
build="$(realpath -m "${NODEFORM_FUZZ_BUILD_DIR:-build-fuzz}")"

cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DNODEFORM_BUILD_FUZZ=ON -DNODEFORM_BUILD_TESTS=ON >/dev/null
nice ninja -C "$build" "${harnesses[@]}"

status=0
for h in "${harnesses[@]}"; do
  corpus="$build/corpus-$h"
  case "$h" in
    fuzz_site_*) seeds="tests/fuzz/corpus/${h#fuzz_site_}" ;;
    fuzz_http_framing) seeds="tests/fuzz/corpus/http" ;;
    *) seeds="tests/fuzz/corpus/${h#fuzz_}" ;;
  esac
  mkdir -p "$corpus"
  [ -d "$seeds" ] || { echo "fuzz.sh: no seed corpus $seeds" >&2; exit 2; }
  echo "== $h for ${seconds}s (seeds: $seeds)"
  if ! ( cd "$build" && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
        "./tests/fuzz/$h" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -print_final_stats=1 "corpus-$h" "$root/$seeds" 2>&1 | tee "fuzz-$h.log" | grep -E "^(#[0-9]+ +DONE|stat::|==[0-9]+==ERROR|SUMMARY|Done)" ); then
    :
  fi
  if grep -qE "ERROR: (libFuzzer|AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer)|runtime error:|deadly signal" "$build/fuzz-$h.log" \
     || ! grep -qE "^Done [0-9]+ runs" "$build/fuzz-$h.log"; then
    echo "== $h: FAILED (see $build/fuzz-$h.log)"
    status=1
  else
    echo "== $h: clean"
  fi
done
exit $status
