#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The sbx demo, on a fresh Debian 12 machine, as root: installs the dependencies, builds,
# installs sbx-nsexec with its file capabilities (root:sbx 0750, cap_sys_admin,cap_audit_write+ep,
# never setuid) and a policy, makes a netns with a TAP device, builds a guest (Debian's cloud
# kernel and a busybox initramfs), then launches the guest under QEMU through `sbx-supervisor run`
# as the unprivileged user sbx-demo, prints the events, the guest's console marker and a ping from
# the netns, stops it, and shows that nothing is left. Re-runnable; `--uninstall` removes what it
# installed.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)

HELPER=/usr/libexec/sbx/sbx-nsexec
SUPERVISOR=/usr/local/bin/sbx-supervisor
POLICY=/etc/sbx/nsexec.conf
POLICY_TAG="# written by sbx scripts/demo.sh"
SANDBOX_ROOT=/run/sbx
IMAGES=/var/lib/sbx/demo
NETNS=sbx-demo
TAP=sbxdemo0
USER_NAME=sbx-demo
ID=demo-vm
QEMU=/usr/bin/qemu-system-x86_64

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
die() { echo "demo: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "run as root (sudo scripts/demo.sh)"

uninstall() {
  rm -f "$HELPER" "$SUPERVISOR"
  rmdir /usr/libexec/sbx 2>/dev/null || true
  if [ -f "$POLICY" ] && grep -qF "$POLICY_TAG" "$POLICY"; then rm -f "$POLICY"; fi
  rmdir /etc/sbx 2>/dev/null || true
  rm -rf "$IMAGES"
  id "$USER_NAME" >/dev/null 2>&1 && userdel "$USER_NAME"
  getent group sbx >/dev/null && groupdel sbx
  echo "demo: uninstalled"
}
if [ "${1:-}" = "--uninstall" ]; then uninstall; exit 0; fi
[ $# -eq 0 ] || die "usage: scripts/demo.sh [--uninstall]"

supervisor_pid=
cleanup() {
  if [ -n "$supervisor_pid" ] && kill -0 "$supervisor_pid" 2>/dev/null; then
    kill -TERM "$supervisor_pid" 2>/dev/null || true
    wait "$supervisor_pid" 2>/dev/null || true
  fi
  ip netns del "$NETNS" 2>/dev/null || true
}
trap cleanup EXIT

say "dependencies (Debian packages)"
scripts/install-deps.sh >/dev/null

say "build"
cmake -S . -B build-demo -DCMAKE_BUILD_TYPE=Release -DSBX_BUILD_TESTS=OFF >/dev/null
cmake --build build-demo -j"$(nproc)" >/dev/null
echo "built build-demo/helper/sbx-nsexec and build-demo/supervisor/sbx-supervisor"

say "install: the helper with its file capabilities, the supervisor, a policy"
getent group sbx >/dev/null || groupadd --system sbx
id "$USER_NAME" >/dev/null 2>&1 ||
  useradd --system --gid sbx --no-create-home --shell /usr/sbin/nologin "$USER_NAME"
install -d -m 0755 /usr/libexec/sbx
install -o root -g sbx -m 0750 build-demo/helper/sbx-nsexec "$HELPER"
setcap cap_sys_admin,cap_audit_write+ep "$HELPER"
install -o root -g root -m 0755 build-demo/supervisor/sbx-supervisor "$SUPERVISOR"
ls -l "$HELPER"
getcap "$HELPER"
if [ -f "$POLICY" ] && ! grep -qF "$POLICY_TAG" "$POLICY"; then
  die "$POLICY exists and was not written by this demo; not touching it"
fi
install -d -m 0755 /etc/sbx
cat > "$POLICY" <<POLICY
$POLICY_TAG
vmm = $QEMU
sandbox_root = $SANDBOX_ROOT
image_root = $IMAGES
netns = sbx-*
tmpfs_size_mb = 16
rlimit_nofile = 4096
POLICY
chmod 0644 "$POLICY"
"$HELPER" --check-policy

say "guest: Debian's cloud kernel and a busybox initramfs"
install -d -m 0755 /var/lib/sbx
tests/vm/make-guest.sh "$IMAGES" >/dev/null
chmod 0755 "$IMAGES"
ls -l "$IMAGES"/vmlinuz "$IMAGES"/initramfs.cpio.gz

say "host setup: sandbox root, netns $NETNS with TAP $TAP (192.0.2.1/24) for $USER_NAME"
install -d -o root -g sbx -m 1770 "$SANDBOX_ROOT"
# As a host that lets its VM users open TAP devices would (Debian's default is 0666).
chmod 0666 /dev/net/tun
ip netns del "$NETNS" 2>/dev/null || true
ip netns add "$NETNS"
ip netns exec "$NETNS" ip tuntap add dev "$TAP" mode tap user "$USER_NAME"
ip netns exec "$NETNS" ip addr add 192.0.2.1/24 dev "$TAP"
ip netns exec "$NETNS" ip link set "$TAP" up
ip netns exec "$NETNS" ip link set lo up

work=$(mktemp -d /tmp/sbx-demo.XXXXXX)
chown "$USER_NAME:sbx" "$work"
console=$work/console.log
events=$work/events.jsonl
cat > "$work/spec.json" <<SPEC
{
  "id": "$ID",
  "vmm": {"kind": "qemu", "binary": "$QEMU",
          "args": ["-accel", "tcg", "-icount", "shift=auto", "-machine", "microvm",
                   "-m", "256", "-smp", "1", "-nodefaults", "-no-user-config",
                   "-display", "none", "-no-reboot", "-serial", "file:$console",
                   "-kernel", "vmlinux", "-initrd", "$IMAGES/initramfs.cpio.gz",
                   "-append", "console=ttyS0 panic=-1",
                   "-netdev", "tap,id=n0,ifname=$TAP,script=no,downscript=no",
                   "-device", "virtio-net-device,netdev=n0"]},
  "sandbox_dir": "$SANDBOX_ROOT/$ID",
  "kernel": "$IMAGES/vmlinuz",
  "netns": "$NETNS",
  "api_socket": "$work/qmp.sock",
  "stop_timeout_ms": 10000,
  "ready_timeout_ms": 10000,
  "stdio": "null"
}
SPEC
chmod 0644 "$work/spec.json"

say "sbx-supervisor check"
setpriv --reuid "$USER_NAME" --regid sbx --init-groups "$SUPERVISOR" check --spec "$work/spec.json"

say "launch as $USER_NAME (no capabilities) through sbx-supervisor run"
setpriv --reuid "$USER_NAME" --regid sbx --init-groups \
  "$SUPERVISOR" run --spec "$work/spec.json" >"$events" 2>"$work/supervisor.log" &
supervisor_pid=$!
for _ in $(seq 600); do
  grep -q SBX-GUEST-READY "$console" 2>/dev/null && break
  kill -0 "$supervisor_pid" 2>/dev/null || break
  sleep 0.1
done
cat "$events"
grep -q SBX-GUEST-READY "$console" || { cat "$work/supervisor.log" "$console" >&2; die "guest did not boot"; }
echo "--- guest console (last lines)"
tail -n 3 "$console"

say "ping the guest from inside the netns"
ip netns exec "$NETNS" ping -c 3 -W 5 192.0.2.2

say "what the VMM looks like from the host"
vmm_pid=$(grep '"started"' "$events" | sed 's/.*"pid":\([0-9]*\).*/\1/')
ps -o pid,pgid,sid,user,comm -p "$vmm_pid"
grep -E '^(Cap(Inh|Prm|Eff|Amb)|NoNewPrivs|Seccomp):' "/proc/$vmm_pid/status"
echo "host mount table entries under $SANDBOX_ROOT: $(grep -c " $SANDBOX_ROOT/" /proc/self/mountinfo || true)"

say "stop (SIGTERM to the supervisor: QMP quit, then signals if needed)"
kill -TERM "$supervisor_pid"
rc=0
wait "$supervisor_pid" || rc=$?
supervisor_pid=
cat "$events"
echo "sbx-supervisor exit status: $rc"

say "nothing left"
echo "processes of $USER_NAME: $(pgrep -u "$USER_NAME" | wc -l)"
echo "mounts under $SANDBOX_ROOT: $(grep -c " $SANDBOX_ROOT/" /proc/self/mountinfo || true)"
echo "sandbox dir $SANDBOX_ROOT/$ID: $([ -e "$SANDBOX_ROOT/$ID" ] && echo present || echo gone)"
ip netns del "$NETNS"
echo "netns $NETNS: removed"
rm -rf "$work"
[ "$rc" -eq 0 ] || die "the VMM did not exit cleanly"
echo
echo "demo: done (scripts/demo.sh --uninstall removes the installed files, user and group)"
