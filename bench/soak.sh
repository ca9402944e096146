#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The soak: N launch/ready/stop cycles of sbx-supervisor (default 1000), 4 at a time, every mode
# in turn (plain, files, jail, cgroup, "pid_namespace": false, restore), as the unprivileged
# test user with the setcap'd helper copy and the probe VMM (tests/faults/soak_test.cc). Prints
# one line per figure (the parent's open fds, mounts, cgroups, processes, sandbox dirs, the
# supervisor's peak RSS, the kernel's slab objects of mnt_cache, pid and the cgroups' kernfs
# nodes) with its drift; exits nonzero if fds, mounts, cgroups, processes or sandbox dirs
# drifted. Run as root, after a build of DIR (default build-test):
#   sudo bench/soak.sh [--build DIR] [N]
set -euo pipefail
cd "$(dirname "$0")/.."
build=build-test
if [ "${1:-}" = "--build" ]; then
  build=$2
  shift 2
fi
cycles=${1:-1000}
if [ "$(id -u)" -ne 0 ]; then
  echo "soak.sh: run as root (it sets file capabilities and runs the supervisor as a test user)" >&2
  exit 1
fi
policy=$(sed -n 's/^SBX_TEST_POLICY_PATH:STRING=//p' "$build/CMakeCache.txt")
export SBX_TEST_HELPER=$build/helper/sbx-nsexec-test
export SBX_TEST_PROBE=$build/tests/sbx-probe-vmm
export SBX_TEST_DRIVER=$build/tests/sbx-test-launch
export SBX_TEST_SUPERVISOR=$build/supervisor/sbx-supervisor
export SBX_TEST_POLICY_PATH=${policy:-/run/sbx-test/nsexec.conf}
export SBX_SOAK_CYCLES=$cycles
for f in "$SBX_TEST_HELPER" "$SBX_TEST_PROBE" "$SBX_TEST_DRIVER" "$SBX_TEST_SUPERVISOR" \
  "$build/tests/sbx_soak"; do
  [ -x "$f" ] || { echo "soak.sh: $f is missing: build $build first" >&2; exit 1; }
done
exec "$build/tests/sbx_soak" --gtest_brief=1
