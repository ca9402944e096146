#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The sbx demo, on a fresh Debian 12 machine, as root: installs the dependencies, builds,
# installs sbx-nsexec with its file capabilities (root:sbx 0750, cap_sys_admin,cap_audit_write+ep,
# never setuid) and a policy, makes a netns with a TAP device, builds a guest (Debian's cloud
# kernel and a busybox initramfs), then launches the guest under QEMU through `sbx-supervisor run`
# as the unprivileged user sbx-demo, jailed (QEMU sees only /usr, its images, /dev/net/tun, its
# sandbox dir and a per-sandbox directory for its QMP socket and console), prints the events, the
# guest's console marker, a ping from the netns and the VMM's view of the filesystem, stops it,
# and shows that nothing is left. Re-runnable; a failure leaves no netns, sandbox or temporary
# file and restores /dev/net/tun's mode; `--uninstall` removes what it installed.
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
# The per-sandbox directory the jail gives QEMU read-write: its QMP socket and console.
VM_DIR=$SANDBOX_ROOT/$ID.d
QEMU=/usr/bin/qemu-system-x86_64

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
die() { echo "demo: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "run as root (sudo scripts/demo.sh)"
as_user() { setpriv --reuid "$USER_NAME" --regid sbx --init-groups "$@"; }

uninstall() {
  rm -f "$HELPER" "$SUPERVISOR"
  rmdir /usr/libexec/sbx 2>/dev/null || true
  if [ -f "$POLICY" ] && grep -qF "$POLICY_TAG" "$POLICY"; then rm -f "$POLICY"; fi
  rmdir /etc/sbx 2>/dev/null || true
  rm -rf "$IMAGES"
  rmdir /var/lib/sbx "$SANDBOX_ROOT" 2>/dev/null || true
  id "$USER_NAME" >/dev/null 2>&1 && userdel "$USER_NAME"
  getent group sbx >/dev/null && groupdel sbx
  echo "demo: uninstalled"
}
if [ "${1:-}" = "--uninstall" ]; then uninstall; exit 0; fi
[ $# -eq 0 ] || die "usage: scripts/demo.sh [--uninstall]"

supervisor_pid=
work=
tun_mode=
# Undoes whatever this run set up, wherever it stopped (every step is idempotent).
cleanup() {
  if [ -n "$supervisor_pid" ] && kill -0 "$supervisor_pid" 2>/dev/null; then
    kill -TERM "$supervisor_pid" 2>/dev/null || true
    wait "$supervisor_pid" 2>/dev/null || true
  fi
  ip netns del "$NETNS" 2>/dev/null || true
  if [ -d "$VM_DIR" ]; then as_user rm -rf "$VM_DIR" || true; fi
  if [ -n "$work" ]; then rm -rf "$work"; fi
  if [ -n "$tun_mode" ]; then chmod "$tun_mode" /dev/net/tun; fi
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
# What a jailed QEMU may be given: its libraries, loader and firmware, the initramfs (a spec
# links only a kernel, a rootfs and snapshot files), the TAP clone device.
read_only = /usr
read_only = $IMAGES/initramfs.cpio.gz
device = /dev/net/tun
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
# As a host that lets its VM users open TAP devices would (Debian's default is 0666); the mode
# found is restored at the end.
tun_mode=$(stat -c %a /dev/net/tun)
chmod 0666 /dev/net/tun
ip netns del "$NETNS" 2>/dev/null || true
ip netns add "$NETNS"
ip netns exec "$NETNS" ip tuntap add dev "$TAP" mode tap user "$USER_NAME"
ip netns exec "$NETNS" ip addr add 192.0.2.1/24 dev "$TAP"
ip netns exec "$NETNS" ip link set "$TAP" up
ip netns exec "$NETNS" ip link set lo up

work=$(mktemp -d /tmp/sbx-demo.XXXXXX)
chown "$USER_NAME:sbx" "$work"
# The jail's per-sandbox directory, made by the caller (owned by it, directly under the sandbox
# root); one left by an interrupted run goes first.
if [ -d "$VM_DIR" ]; then as_user rm -rf "$VM_DIR"; fi
as_user mkdir -m 0700 "$VM_DIR"
console=$VM_DIR/console.log
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
  "api_socket": "$VM_DIR/qmp.sock",
  "jail": true,
  "files": {"read_only": ["/usr", "$IMAGES/initramfs.cpio.gz"],
            "read_write": ["$VM_DIR"],
            "devices": ["/dev/net/tun"]},
  "stop_timeout_ms": 10000,
  "ready_timeout_ms": 10000,
  "stdio": "null"
}
SPEC
chmod 0644 "$work/spec.json"

say "sbx-supervisor check"
as_user "$SUPERVISOR" check --spec "$work/spec.json"

say "launch as $USER_NAME (no capabilities) through sbx-supervisor run"
# setpriv itself, not as_user: it execs the supervisor, so $! is the supervisor's pid (a
# backgrounded shell function would put a subshell between them and take the SIGTERM).
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

say "the VMM's view, from inside its jail (read as root through /proc/$vmm_pid/root)"
vmm_root=/proc/$vmm_pid/root
presence() { if [ -e "$1" ]; then echo "exists"; else echo "does not exist"; fi; }
echo "its root: $(cd "$vmm_root" && echo *)"
echo "its mounts:"
awk '{print "  " $5}' "/proc/$vmm_pid/mountinfo"
echo "host:       /etc/passwd $(presence /etc/passwd)"
echo "VMM's view: /etc/passwd $(presence "$vmm_root/etc/passwd")"
echo "VMM's view: $QEMU $(presence "$vmm_root$QEMU")"
# Its own binary shows the view is readable: /etc/passwd is absent, not hidden by permissions.
[ -e "$vmm_root$QEMU" ] || die "cannot read the VMM's view through $vmm_root"
[ ! -e "$vmm_root/etc/passwd" ] || die "the VMM sees the host's /etc/passwd: it is not jailed"

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
echo "QMP socket $VM_DIR/qmp.sock: $([ -e "$VM_DIR/qmp.sock" ] && echo present || echo gone)"
as_user rm -rf "$VM_DIR"
echo "per-sandbox directory $VM_DIR: removed by $USER_NAME"
ip netns del "$NETNS"
echo "netns $NETNS: removed"
chmod "$tun_mode" /dev/net/tun
tun_mode=
echo "/dev/net/tun: mode $(stat -c %a /dev/net/tun) restored"
rm -rf "$work"
[ "$rc" -eq 0 ] || die "the VMM did not exit cleanly"
echo
echo "demo: done (scripts/demo.sh --uninstall removes the installed files, user and group)"
