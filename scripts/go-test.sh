#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# scripts/go-test.sh [--build DIR]
#
# The Go client's checks and tests (clients/go): gofmt -l (any file listed fails), go vet, and
# go test against the real programs of the C++ build DIR (default build-test): sbx-supervisor,
# the test build of sbx-nsexec (which reads the policy at the build's SBX_TEST_POLICY_PATH) and
# the probe VMM, plus the QEMU guest of tests/vm. Run as root: like the C++ integration
# fixtures (tests/integration/helper_env.cc), it puts cap_sys_admin,cap_audit_write+ep on a
# private copy of the helper under /run, writes a root-owned policy, makes a netns with a TAP
# device, and runs the tests as the unprivileged test user (uid/gid 64123) through setpriv.
# Everything is undone on exit, failed or not. It shares the C++ fixtures' lock, so it never
# runs beside their suites. A skipped Go test fails the run: the environment is all here.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)

die() { echo "go-test.sh: $*" >&2; exit 1; }
build=build-test
while [ $# -gt 0 ]; do
  case $1 in
    --build) [ $# -ge 2 ] || die "--build needs a directory"; build=$2; shift 2 ;;
    *) die "usage: scripts/go-test.sh [--build DIR]" ;;
  esac
done
[ "$(id -u)" -eq 0 ] || die "run as root (sudo scripts/go-test.sh)"
command -v go >/dev/null || die "go is not installed (apt-get install golang-go; scripts/install-deps.sh)"
[ -d "$build" ] || die "no build directory $build"
build=$(cd "$build" && pwd)

TEST_UID=64123
QEMU=/usr/bin/qemu-system-x86_64
LOCK=/run/lock/sbx-it.lock
CACHE=/var/cache/sbx-go-test
POLICY_TAG="# written by scripts/go-test.sh"
supervisor_src=$build/supervisor/sbx-supervisor
helper_src=$build/helper/sbx-nsexec-test
probe_src=$build/tests/sbx-probe-vmm
for f in "$supervisor_src" "$helper_src" "$probe_src" "$QEMU"; do
  [ -x "$f" ] || die "$f is missing (build $build first; QEMU: scripts/install-deps.sh)"
done
policy_path=$(sed -n 's/^SBX_TEST_POLICY_PATH:[A-Z]*=//p' "$build/CMakeCache.txt")
[ -n "$policy_path" ] || die "no SBX_TEST_POLICY_PATH in $build/CMakeCache.txt"

status=0
fail() { echo "go-test.sh: FAILED: $*" >&2; status=1; }

unformatted=$(gofmt -l clients/go)
[ -z "$unformatted" ] || fail "gofmt -l lists: $unformatted"

# The pids of the test user's processes.
test_user_pids() {
  local s pid
  for s in /proc/[0-9]*/status; do
    awk -v uid="$TEST_UID" '$1 == "Uid:" { exit ($2 == uid ? 0 : 1) }' "$s" 2>/dev/null || continue
    pid=${s#/proc/}
    echo "${pid%/status}"
  done
}
kill_test_user_processes() {
  local pid i
  for i in $(seq 50); do
    pids=$(test_user_pids)
    [ -n "$pids" ] || return 0
    for pid in $pids; do kill -KILL "$pid" 2>/dev/null || true; done
    sleep 0.1
  done
  echo "go-test.sh: processes of uid $TEST_UID survived SIGKILL: $(test_user_pids | tr '\n' ' ')" >&2
}

# One run at a time on this machine, this and the C++ integration suites: the policy path and
# the test uid are shared.
exec 9>"$LOCK"
flock -w 1800 9 || die "$LOCK is held by another run"

# What a run killed in its tracks left: its directory (which records what it did to the
# policy), its netns.
for d in /run/sbx-gt-*; do
  [ -d "$d" ] && [ ! -L "$d" ] || continue
  if [ -f "$policy_path" ] && head -n 1 "$policy_path" | grep -qF "$POLICY_TAG"; then
    if [ -f "$d/policy.orig" ]; then
      cp "$d/policy.orig" "$policy_path.gt-tmp" && mv "$policy_path.gt-tmp" "$policy_path"
    elif [ -f "$d/policy-created" ]; then
      rm -f "$policy_path"
    fi
  fi
  rm -rf "$d"
done
for n in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^sbx-gt-' || true); do
  ip netns del "$n" || true
done
kill_test_user_processes

dir=
netns=
tun_mode=
policy_state=
cleanup() {
  local rc=$?
  set +e
  kill_test_user_processes
  [ -n "$netns" ] && ip netns del "$netns"
  case $policy_state in
    backed-up) cp "$dir/policy.orig" "$policy_path.gt-tmp" && mv "$policy_path.gt-tmp" "$policy_path" ;;
    created) rm -f "$policy_path" ;;
    created-dir) rm -f "$policy_path"; rmdir "$(dirname "$policy_path")" ;;
  esac
  [ -n "$tun_mode" ] && chmod "$tun_mode" /dev/net/tun
  [ -n "$dir" ] && rm -rf "$dir"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

dir=$(mktemp -d /run/sbx-gt-XXXXXX)
chmod 0755 "$dir"
mkdir -m 0755 "$dir/bin" "$dir/images"
install -o root -g root -m 0755 "$supervisor_src" "$dir/bin/sbx-supervisor"
install -o root -g root -m 0755 "$helper_src" "$dir/bin/sbx-nsexec"
setcap cap_sys_admin,cap_audit_write+ep "$dir/bin/sbx-nsexec"
install -o root -g root -m 0755 "$probe_src" "$dir/bin/sbx-probe-vmm"
install -o root -g root -m 0755 "$probe_src" "$dir/bin/sbx-unlisted-vmm"
echo "not a kernel" >"$dir/images/vmlinux"
echo "not a filesystem" >"$dir/images/rootfs.ext4"
# The QEMU guest: the C++ suite's (ctest's guest_assets) when it made one, else built here.
guest=$build/guest
if [ ! -f "$guest/vmlinuz" ] || [ ! -f "$guest/initramfs.cpio.gz" ]; then
  guest=$CACHE/guest
  install -d -m 0755 "$CACHE"
  tests/vm/make-guest.sh "$guest" >/dev/null
fi
install -m 0644 "$guest/vmlinuz" "$guest/initramfs.cpio.gz" "$dir/images/"
install -d -o root -g "$TEST_UID" -m 01770 "$dir/sandboxes"
install -d -o "$TEST_UID" -g "$TEST_UID" -m 0700 "$dir/work" "$dir/tmp" "$dir/gopath"
# The sources, where the test user reads them; the build cache kept between runs.
cp -r clients/go "$dir/src"
chmod -R a+rX "$dir/src"
install -d -m 0755 "$CACHE"
install -d -o "$TEST_UID" -g "$TEST_UID" -m 0700 "$CACHE/gocache"

netns=sbx-gt-$$
ip netns add "$netns"
tap=sbxgt0
ip netns exec "$netns" ip tuntap add dev "$tap" mode tap user "$TEST_UID"
ip netns exec "$netns" ip addr add 192.0.2.1/24 dev "$tap"
ip netns exec "$netns" ip link set "$tap" up
# As a host that lets its VM users open TAP devices would; the mode found is restored.
tun_mode=$(stat -c %a /dev/net/tun)
chmod 0666 /dev/net/tun

# The policy, at the path the test build of the helper reads; what was there comes back.
if [ -e "$policy_path" ]; then
  cp "$policy_path" "$dir/policy.orig"
  policy_state=backed-up
elif [ -d "$(dirname "$policy_path")" ]; then
  touch "$dir/policy-created"
  policy_state=created
else
  touch "$dir/policy-created"
  install -d -m 0755 "$(dirname "$policy_path")"
  policy_state=created-dir
fi
cat >"$policy_path.gt-tmp" <<POLICY
$POLICY_TAG (pid $$)
vmm = $dir/bin/sbx-probe-vmm
vmm = $QEMU
sandbox_root = $dir/sandboxes
image_root = $dir/images
netns = sbx-gt-*
tmpfs_size_mb = 8
rlimit_nofile = 512
allow_root_vmm = false
read_only = /usr
read_only = $dir/images/initramfs.cpio.gz
device = /dev/net/tun
POLICY
chmod 0644 "$policy_path.gt-tmp"
mv "$policy_path.gt-tmp" "$policy_path"
"$dir/bin/sbx-nsexec" --check-policy >/dev/null || die "the test policy does not parse"

as_test_user() {
  setpriv --reuid="$TEST_UID" --regid="$TEST_UID" --clear-groups \
    env -i PATH=/usr/lib/go/bin:/usr/bin:/bin HOME="$dir/work" TMPDIR="$dir/tmp" \
    GOCACHE="$CACHE/gocache" GOPATH="$dir/gopath" GOPROXY=off CI=true \
    SBX_GO_TEST_SUPERVISOR="$dir/bin/sbx-supervisor" \
    SBX_GO_TEST_HELPER="$dir/bin/sbx-nsexec" \
    SBX_GO_TEST_PROBE="$dir/bin/sbx-probe-vmm" \
    SBX_GO_TEST_UNLISTED_VMM="$dir/bin/sbx-unlisted-vmm" \
    SBX_GO_TEST_SANDBOXES="$dir/sandboxes" \
    SBX_GO_TEST_IMAGES="$dir/images" \
    SBX_GO_TEST_WORK="$dir/work" \
    SBX_GO_TEST_NETNS="$netns" \
    SBX_GO_TEST_TAP="$tap" \
    SBX_GO_TEST_QEMU="$QEMU" \
    "$@" 9>&- # the lock stays with this script
}

cd "$dir/src"
as_test_user go vet ./... || fail "go vet"
log=$dir/go-test.log
set +e
as_test_user go test -p 1 -count=1 -race -v -timeout 10m ./... 2>&1 | tee "$log"
test_status=${PIPESTATUS[0]}
set -e
[ "$test_status" -eq 0 ] || fail "go test"
if grep -q -- '--- SKIP' "$log"; then fail "some Go tests were skipped; every test must run here"; fi
left=$(test_user_pids)
[ -z "$left" ] || fail "processes of uid $TEST_UID left: $left"
cd "$top"
[ "$status" -eq 0 ] && echo "go-test.sh: gofmt, go vet and go test passed"
exit "$status"
