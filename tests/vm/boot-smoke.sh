#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# boot-smoke.sh OUTDIR
#
# Manual proof (as root) that the guest built by make-guest.sh boots under QEMU/TCG on the
# microvm machine and answers ping, entirely inside a throwaway network namespace:
#   netns sbx-smoke-$$ with tap0 = 192.0.2.1/24  <->  guest eth0 = 192.0.2.2/24
# Then stops QEMU through QMP (qmp_capabilities, quit). Leaves nothing behind: the netns
# (and its tap), the QEMU process and the run directory are removed by a trap, even on failure.
set -euo pipefail

die() { echo "boot-smoke: error: $*" >&2; exit 1; }
log() { echo "boot-smoke: $*" >&2; }

[[ $# -eq 1 ]] || die "usage: $0 OUTDIR"
[[ $(id -u) -eq 0 ]] || die "must run as root"

OUTDIR=$(cd "$1" && pwd) || die "no such directory: $1"
KERNEL=$OUTDIR/vmlinuz
INITRD=$OUTDIR/initramfs.cpio.gz
[[ -f $KERNEL && -f $INITRD ]] || die "missing $KERNEL or $INITRD: run tests/vm/make-guest.sh $1"
[[ -c /dev/net/tun ]] || die "/dev/net/tun is missing (modprobe tun)"
for c in qemu-system-x86_64 ip python3; do
    command -v "$c" >/dev/null || die "$c not found"
done
# iputils-ping if present, else busybox's ping (busybox-static is a prerequisite anyway).
if command -v ping >/dev/null; then PING=(ping)
elif [[ -x /bin/busybox ]]; then PING=(/bin/busybox ping)
else die "no ping: install iputils-ping or busybox-static"; fi

MARKER=SBX-GUEST-READY
HOST_ADDR=192.0.2.1/24
GUEST_IP=192.0.2.2
BOOT_TIMEOUT=${BOOT_TIMEOUT:-30}   # seconds to wait for the console marker
QUIT_TIMEOUT=${QUIT_TIMEOUT:-10}   # seconds to wait for qemu to exit after QMP quit

NS=sbx-smoke-$$
RUN=$(mktemp -d /tmp/sbx-smoke.XXXXXX)
CONSOLE=$RUN/console.log
QMP=$RUN/qmp.sock
QEMU_PID=""
NS_CREATED=0
OK=0

cleanup() {
    local rc=$?
    set +e
    if [[ -n $QEMU_PID ]] && kill -0 "$QEMU_PID" 2>/dev/null; then
        log "cleanup: stopping qemu (pid $QEMU_PID)"
        kill -TERM "$QEMU_PID" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$QEMU_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$QEMU_PID" 2>/dev/null
        wait "$QEMU_PID" 2>/dev/null
    fi
    if ((NS_CREATED)); then
        ip netns delete "$NS" 2>/dev/null
        ip netns list | grep -qw "$NS" && log "cleanup: WARNING: netns $NS still present"
    fi
    if ((!OK)); then
        [[ -s $RUN/qemu.stderr ]] && { log "qemu stderr:"; sed 's/^/  /' "$RUN/qemu.stderr" >&2; }
        [[ -s $CONSOLE ]] && { log "console (last 30 lines):"; tail -n 30 "$CONSOLE" | sed 's/^/  /' >&2; }
    fi
    rm -rf "$RUN"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

now_ms() { local t=${EPOCHREALTIME/[.,]/}; echo $((10#$t / 1000)); }
secs() { printf '%d.%02d' $(($1 / 1000)) $(($1 % 1000 / 10)); }

# ---- network namespace with a TAP ------------------------------------------
ip netns add "$NS"
NS_CREATED=1
ip netns exec "$NS" ip link set lo up
ip netns exec "$NS" ip tuntap add dev tap0 mode tap
ip netns exec "$NS" ip addr add "$HOST_ADDR" dev tap0
ip netns exec "$NS" ip link set tap0 up

# ---- boot ------------------------------------------------------------------
# shellcheck disable=SC2054 # commas are qemu option syntax
QEMU_ARGS=(
    qemu-system-x86_64
    -accel tcg
    # icount: the guest's TSC and PIT both run off QEMU's virtual clock. Without it the TSC is
    # the host's and the kernel's PIT calibration of it fails when the host is busy; microvm's
    # hardware-reduced ACPI gives the kernel no PIT tick, HPET or PM timer to fall back on, so
    # it then hangs in "Calibrating delay loop" (seen in ~1 of 3 boots here under load).
    -icount shift=auto
    -machine microvm
    -m 256
    -smp 1
    -nodefaults -no-user-config -nographic
    -no-reboot
    -serial "file:$CONSOLE"
    -kernel "$KERNEL"
    -initrd "$INITRD"
    -append "console=ttyS0 panic=-1"
    -netdev tap,id=n0,ifname=tap0,script=no,downscript=no
    -device virtio-net-device,netdev=n0
    -qmp "unix:$QMP,server=on,wait=off"
)
log "netns $NS: ${QEMU_ARGS[*]}"
T0=$(now_ms)
# `ip netns exec` and `nice` both exec, so $! is qemu's own pid.
ip netns exec "$NS" nice -n 10 "${QEMU_ARGS[@]}" </dev/null >"$RUN/qemu.stdout" 2>"$RUN/qemu.stderr" &
QEMU_PID=$!

deadline=$((T0 + BOOT_TIMEOUT * 1000))
until grep -q "^$MARKER" "$CONSOLE" 2>/dev/null; do
    kill -0 "$QEMU_PID" 2>/dev/null || die "qemu exited before the guest was ready"
    grep -q "SBX-GUEST-ERROR" "$CONSOLE" 2>/dev/null && die "guest reported an error"
    (($(now_ms) > deadline)) && die "no $MARKER on the console within ${BOOT_TIMEOUT}s"
    sleep 0.05
done
T1=$(now_ms)
BOOT_TIME=$(secs $((T1 - T0)))
log "guest ready: marker seen after ${BOOT_TIME}s"

# ---- ping from inside the netns --------------------------------------------
log "ping $GUEST_IP from netns $NS"
ip netns exec "$NS" "${PING[@]}" -c 3 -W 2 "$GUEST_IP" | tee "$RUN/ping.out" >&2 ||
    die "guest does not answer ping"
PING_SUMMARY=$(grep -E 'packets transmitted' "$RUN/ping.out")

# ---- stop through QMP ------------------------------------------------------
log "QMP: qmp_capabilities, quit"
TQ=$(now_ms)
QMP_RESULT=$(python3 - "$QMP" <<'PY'
import json, socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(5)
s.connect(sys.argv[1])
f = s.makefile("rwb")
def recv():
    """Next non-event message."""
    while True:
        line = f.readline()
        if not line:
            raise SystemExit("QMP: connection closed")
        msg = json.loads(line)
        if "event" not in msg:
            return msg
def cmd(name):
    f.write(json.dumps({"execute": name}).encode() + b"\r\n"); f.flush()
    return recv()
greeting = recv()
assert "QMP" in greeting, greeting
caps = cmd("qmp_capabilities")
assert caps.get("return") == {}, caps
quit_ = cmd("quit")
assert quit_.get("return") == {}, quit_
print(json.dumps({"qmp_capabilities": caps, "quit": quit_}))
PY
) || die "QMP exchange failed"
log "QMP replies: $QMP_RESULT"

for _ in $(seq $((QUIT_TIMEOUT * 10))); do kill -0 "$QEMU_PID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$QEMU_PID" 2>/dev/null && die "qemu still running ${QUIT_TIMEOUT}s after QMP quit"
set +e; wait "$QEMU_PID"; QEMU_RC=$?; set -e
QEMU_PID=""
T2=$(now_ms)
STOP_TIME=$(secs $((T2 - TQ)))
[[ $QEMU_RC -eq 0 ]] || die "qemu exited with status $QEMU_RC after QMP quit"

OK=1
echo "boot-time: ${BOOT_TIME}s (qemu start to $MARKER)"
echo "ping: $PING_SUMMARY"
echo "qmp: $QMP_RESULT"
echo "qemu-exit: status $QEMU_RC, ${STOP_TIME}s from QMP connect to process exit"
