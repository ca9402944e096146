#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The test command: installs the dependencies, builds everything with warnings as errors
# (clang, with the fuzz targets), and runs every test; then builds everything again with
# AddressSanitizer and UndefinedBehaviorSanitizer (SBX_SANITIZE=ON, in build-test-asan) and runs
# the same tests there; then the Go client's tests (scripts/go-test.sh). Run as root: the
# integration tests set file capabilities, make network namespaces and drive the helper as an
# unprivileged user. A failed or skipped test in any run fails the whole: this machine has
# every feature the tests use.
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

# The cgroup limit tests need cgroup v2 to hold the controllers they limit. On a host where it
# does they run here too; on one where it does not (hybrid cgroups) they run only in the
# kernel guests below, where cgroup2 alone is mounted.
cgroup2_has_limit_controllers() {
  local mnt c
  mnt=$(awk '$3 == "cgroup2" {print $2; exit}' /proc/self/mounts)
  [ -n "$mnt" ] || return 1
  for c in memory pids cpu cpuset io; do
    grep -qw "$c" "$mnt/cgroup.controllers" || return 1
  done
}
host_limits=()
if ! cgroup2_has_limit_controllers; then
  host_limits=(-LE cgroup-v2-limits)
  echo "test.sh: this host's cgroup2 lacks a controller the limit tests need: they run in the" \
    "kernel guests only"
fi

# took NAME: how long the part since the last call took, for README's account of a CI run.
part_start=$SECONDS
took() {
  echo "test.sh: $1 took $((SECONDS - part_start)) s"
  part_start=$SECONDS
}

cmake -S . -B "$build" -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DSBX_WERROR=ON -DSBX_FUZZ=ON -DSBX_FUZZ_SECONDS="${SBX_FUZZ_SECONDS:-30}"
cmake --build "$build" -j"$(nproc)"
main_status=0
run_ctest "$build" "${host_limits[@]}" || main_status=$?
took "the $build build and its tests"

# The soak (bench/soak.sh): 1,000 launch/ready/stop cycles of the first build, every mode, 4 at
# a time; the parent's fds, mounts, cgroups, processes and sandbox dirs must not drift.
soak_status=0
bench/soak.sh --build "$build" "${SBX_SOAK_CYCLES:-1000}" || soak_status=$?
took "the soak"

# The sanitizer run: every program (tests, supervisor, helper, probe, driver, doubles) built
# with -fsanitize=address,undefined; any report makes its process fail, and with it the test.
# The fuzzers are built by the first run (they carry their own sanitizers). The package test is
# left out here: it builds, installs and purges the Debian package from the sources with its own
# uninstrumented build, so a second run would test nothing new. So is the fault matrix: it runs
# everything under strace, where LeakSanitizer cannot stop the world (it ptraces too). And so
# are the six loops that repeat one launch 200 to 1,000 times (races over paths, leaks over
# cycles, 200 detached sandboxes): the sanitizers see the same code in every single-launch test
# here, the loops run in the first build and in both kernel guests, and instrumented they took
# 6.5 of this run's minutes.
cmake -S . -B "$asan_build" -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DSBX_WERROR=ON -DSBX_SANITIZE=ON -DSBX_FUZZ=OFF
cmake --build "$asan_build" -j"$(nproc)"
asan_status=0
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
asan_loops='DuringAThousandLaunches|PassedFdsCannotReplaceTheAllowlistedVmm|TwoHundred'
run_ctest "$asan_build" -E "^(package_install_purge|sbx_faults[.].*|.*($asan_loops).*)\$" \
  "${host_limits[@]}" ||
  asan_status=$?
took "the $asan_build build and its tests"

# The Go client (clients/go): gofmt, go vet, and its tests against the first build's
# supervisor, helper and probe VMM, as the unprivileged test user.
go_status=0
scripts/go-test.sh --build "$build" || go_status=$?
took "the Go client's tests"

# Debian 12's own kernels, 6.1 and 6.12, booted under QEMU: the integration suites and the
# cgroup limit tests of the first build, in each.
kernel_status=0
scripts/kernel-test.sh --kernel all --build "$build" || kernel_status=$?
took "the kernel guests"

word() { [ "$1" -eq 0 ] && echo passed || echo FAILED; }
echo "test.sh: $build: $(word "$main_status"), soak: $(word "$soak_status")," \
  "$asan_build (ASan+UBSan): $(word "$asan_status"), Go client: $(word "$go_status")," \
  "Debian kernels 6.1 and 6.12: $(word "$kernel_status")"
[ "$main_status" -eq 0 ] && [ "$soak_status" -eq 0 ] && [ "$asan_status" -eq 0 ] &&
  [ "$go_status" -eq 0 ] && [ "$kernel_status" -eq 0 ]
