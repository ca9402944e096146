#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The test command: installs the dependencies, builds everything with warnings as errors
# (clang, with the fuzz targets), and runs every test; then builds everything again with
# AddressSanitizer and UndefinedBehaviorSanitizer (SBX_SANITIZE=ON, in build-test-asan) and runs
# the same tests there. Run as root: the integration tests set file capabilities, make network
# namespaces and drive the helper as an unprivileged user. A failed or skipped test in either
# run fails the whole: this machine has every feature the tests use.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "test.sh: run as root (sudo scripts/test.sh)" >&2
  exit 1
fi
scripts/install-deps.sh
build=${SBX_BUILD_DIR:-build-test}
asan_build=${SBX_ASAN_BUILD_DIR:-build-test-asan}

# run_ctest DIR [CTEST ARGS...]: runs the tests of DIR into DIR/ctest.log; nonzero when one
# failed or was skipped.
run_ctest() {
  local dir=$1 log=$1/ctest.log status
  shift
  set +e
  (cd "$dir" && ctest --output-on-failure --no-tests=error -j"$(nproc)" "$@") 2>&1 | tee "$log"
  status=${PIPESTATUS[0]}
  set -e
  if grep -qE '\*\*\*Skipped|Not Run' "$log"; then
    echo "test.sh: some tests in $dir were skipped; every test must run here" >&2
    return 1
  fi
  return "$status"
}

cmake -S . -B "$build" -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DSBX_WERROR=ON -DSBX_FUZZ=ON -DSBX_FUZZ_SECONDS="${SBX_FUZZ_SECONDS:-30}"
cmake --build "$build" -j"$(nproc)"
main_status=0
run_ctest "$build" || main_status=$?

# The sanitizer run: every program (tests, supervisor, helper, probe, driver, doubles) built
# with -fsanitize=address,undefined; any report makes its process fail, and with it the test.
# The fuzzers are built by the first run (they carry their own sanitizers). The package test is
# left out here: it builds, installs and purges the Debian package from the sources with its own
# uninstrumented build, so a second run would test nothing new.
cmake -S . -B "$asan_build" -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DSBX_WERROR=ON -DSBX_SANITIZE=ON -DSBX_FUZZ=OFF
cmake --build "$asan_build" -j"$(nproc)"
asan_status=0
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
run_ctest "$asan_build" -E '^package_install_purge$' || asan_status=$?

echo "test.sh: $build: $([ "$main_status" -eq 0 ] && echo passed || echo FAILED)," \
  "$asan_build (ASan+UBSan): $([ "$asan_status" -eq 0 ] && echo passed || echo FAILED)"
[ "$main_status" -eq 0 ] && [ "$asan_status" -eq 0 ]
