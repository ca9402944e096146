#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Runs each libFuzzer target (the wire-protocol decoder, the policy parser) for SECONDS under
# ASan+UBSan, starting from the committed seed corpus in tests/fuzz/corpus/. New inputs go to a
# scratch directory, never into the committed corpus, unless --merge is given: then the inputs
# that add coverage are merged into tests/fuzz/corpus/TARGET (libFuzzer -merge=1).
#
# Usage: scripts/fuzz.sh [SECONDS] [--merge]      (default 600: the documented 10-minute run)
# Environment: SBX_FUZZ_BUILD_DIR (default build-fuzz), SBX_FUZZ_OUT (default
# BUILD/fuzz-out: per target corpus/, artifacts/ and log), SBX_FUZZ_JOBS (build jobs).
# Exit status: 0 when both targets ran for the whole time without a finding; otherwise 1, with
# the crashing input in SBX_FUZZ_OUT/TARGET/artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
merge=0
case "${2:-}" in
  --merge) merge=1 ;;
  "") ;;
  *) echo "usage: scripts/fuzz.sh [SECONDS] [--merge]" >&2; exit 2 ;;
esac
if ! [[ $seconds =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
  echo "fuzz.sh: SECONDS must be a positive integer" >&2
  exit 2
fi
build=${SBX_FUZZ_BUILD_DIR:-build-fuzz}
out=${SBX_FUZZ_OUT:-$build/fuzz-out}
jobs=${SBX_FUZZ_JOBS:-$(nproc)}

cmake -S . -B "$build" -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DSBX_FUZZ=ON >/dev/null
cmake --build "$build" -j"$jobs" --target sbx_protocol_fuzzer sbx_policy_fuzzer

# A UBSan report is a finding: print its stack and stop (the targets are also built with
# -fno-sanitize-recover=undefined). No leak is tolerated either.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

failed=()
for target in protocol policy; do
  fuzzer=$build/tests/fuzz/sbx_${target}_fuzzer
  seeds=tests/fuzz/corpus/$target
  dir=$out/$target
  rm -rf "$dir"
  mkdir -p "$dir/corpus" "$dir/artifacts"
  echo "== $target: $seconds s, seeds $seeds, scratch $dir"
  set +e
  "$fuzzer" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$dir/artifacts/" "$dir/corpus" "$seeds" 2>&1 | tee "$dir/log"
  status=${PIPESTATUS[0]}
  set -e
  if [ "$status" -ne 0 ]; then
    failed+=("$target")
    continue
  fi
  if [ "$merge" -eq 1 ]; then
    before=$(find "$seeds" -type f | wc -l)
    "$fuzzer" -merge=1 "$seeds" "$dir/corpus" >"$dir/merge.log" 2>&1
    echo "== $target: merged $(($(find "$seeds" -type f | wc -l) - before)) inputs into $seeds"
  fi
done

for target in protocol policy; do
  log=$out/$target/log
  [ -f "$log" ] || continue
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 || true)
  echo "== $target: ${runs:-?} executions, ${cov:-cov ?}, corpus $(find "$out/$target/corpus" -type f | wc -l) new inputs"
done
if [ "${#failed[@]}" -ne 0 ]; then
  echo "fuzz.sh: finding in: ${failed[*]} (inputs in $out/<target>/artifacts/)" >&2
  exit 1
fi
