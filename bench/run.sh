#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The benchmark command: builds what it needs (Release), then runs sbx-bench as root and prints
# the table; the same numbers go to bench-results.json (or $1).
#   sudo bench/run.sh [JSON_OUT] [sbx-bench options...]
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "bench/run.sh: run as root" >&2; exit 1; }
scripts/install-deps.sh >/dev/null
out=${1:-bench-results.json}
shift || true
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# The build's output (static links print glibc's NSS notices) is shown only if it fails.
if ! { cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DSBX_BUILD_TESTS=OFF &&
  cmake --build build-bench -j"$(nproc)" --target sbx-bench sbx-bench-stub sbx-bench-exec-once \
    sbx-nsexec-bench sbx-supervisor; } >"$log" 2>&1; then
  cat "$log" >&2
  echo "bench/run.sh: the build failed" >&2
  exit 1
fi
build-bench/bench/sbx-bench --bin-dir "$PWD/build-bench" --src-dir "$PWD" --json "$out" "$@"
