#!/usr/bin/env bash
# The test command: installs the dependencies, builds everything with warnings as errors
# (clang, with the fuzz targets), and runs every test. Run as root: the integration tests set
# file capabilities, make network namespaces and drive the helper as an unprivileged user.
# A skipped test fails the run: this machine has every feature the tests use.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "test.sh: run as root (sudo scripts/test.sh)" >&2
  exit 1
fi
scripts/install-deps.sh
build=${SBX_BUILD_DIR:-build-test}
cmake -S . -B "$build" -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DSBX_WERROR=ON -DSBX_FUZZ=ON -DSBX_FUZZ_SECONDS="${SBX_FUZZ_SECONDS:-30}"
cmake --build "$build" -j"$(nproc)"
log="$build/ctest.log"
set +e
(cd "$build" && ctest --output-on-failure --no-tests=error -j"$(nproc)") 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
if grep -qE '\*\*\*Skipped|Not Run' "$log"; then
  echo "test.sh: some tests were skipped; every test must run here" >&2
  exit 1
fi
exit "$status"
