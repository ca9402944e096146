#!/usr/bin/env bash
# The benchmark command: builds what it needs (Release), then runs sbx-bench as root and prints
# the table; the same numbers go to bench-results.json (or $1).
#   sudo bench/run.sh [JSON_OUT] [sbx-bench options...]
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "bench/run.sh: run as root" >&2; exit 1; }
scripts/install-deps.sh >/dev/null
out=${1:-bench-results.json}
shift || true
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DSBX_BUILD_TESTS=OFF >/dev/null
cmake --build build-bench -j"$(nproc)" --target sbx-bench sbx-bench-stub sbx-bench-exec-once sbx-nsexec-bench \
  sbx-supervisor >/dev/null
exec build-bench/bench/sbx-bench --bin-dir "$PWD/build-bench" --src-dir "$PWD" --json "$out" "$@"
