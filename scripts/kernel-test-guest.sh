#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Runs in the guest of scripts/kernel-test.sh, on the host's root under a tmpfs overlay:
# mounts what a Debian system has (proc, sys, devtmpfs, tmpfs on /run and /tmp) and cgroup2
# alone on /sys/fs/cgroup with every controller enabled down to a delegated subtree, then runs
# the command the host wrote to /sbx-out/cmd in /sbx-out/cwd, with the timeout in
# /sbx-out/timeout, and leaves its exit status in /sbx-out/status. Then it powers off.
out=/sbx-out
finish() {
  echo "$1" >"$out/status"
  sync
  echo o >/proc/sysrq-trigger
  # Waits for the power-off with a builtin: a program loaded now would come over the 9p share,
  # which the power-off is taking away.
  read -rt 60 _ </dev/console || :
}
trap 'finish 125' ERR
set -eu
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /dev/mqueue
mount -t devpts -o gid=5,mode=0620,ptmxmode=0666 devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t mqueue mqueue /dev/mqueue
# Fresh /run and /tmp, as a booted system has, unless the host's repository or the command's
# directory lies below one (a CI clone in /tmp): the overlay keeps those writable anyway.
below() { case "$1/" in "$2"/*) return 0 ;; esac; return 1; }
for dir in /run /tmp; do
  if below "$(cat "$out/repo")" "$dir" || below "$(cat "$out/cwd")" "$dir"; then
    echo "kernel-test guest: $dir kept from the host's root (the repository is below it)"
    continue
  fi
  mount -t tmpfs -o mode="$([ "$dir" = /tmp ] && echo 1777 || echo 0755)" tmpfs "$dir"
done
mkdir -p -m 1777 /run/lock
mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup
# Every controller the kernel has, enabled from the root down: the tests' delegated subtrees
# (made under the mount's root) get all of them. This shell and init move to a leaf first, as
# systemd keeps the root's own processes in init.scope.
mkdir /sys/fs/cgroup/init.scope
echo 1 >/sys/fs/cgroup/init.scope/cgroup.procs
echo $$ >/sys/fs/cgroup/init.scope/cgroup.procs
for c in $(cat /sys/fs/cgroup/cgroup.controllers); do
  echo "+$c" >/sys/fs/cgroup/cgroup.subtree_control
done
tr -s ' ' ',' </sys/fs/cgroup/cgroup.subtree_control | tr -d '\n' >"$out/controllers"
ln -sf /proc/self/fd /dev/fd
hostname sbx-kernel-test
ip link set lo up
uname -r >"$out/kernel"
echo "kernel-test guest: $(uname -r), cgroup2 controllers $(cat "$out/controllers")"
trap - ERR
set +e
# A one-second wait that takes over ten is said in the kernel log, so the console shows, with
# the kernel's timestamp, whether the guest stood still (under emulation: its vCPUs not run by
# the host) while a test was slow, or went on while the test waited. Builtins only: a program
# would be loaded over the 9p share, whose own delays would read as a stall.
(
  mkfifo /run/kernel-test-tick && exec 3<>/run/kernel-test-tick || exit 0
  read -r last _ </proc/uptime
  while :; do
    # Nobody writes the FIFO: anything but a timeout (status over 128) ends the watch.
    read -rt 1 -u 3 _
    [ $? -gt 128 ] || exit 0
    read -r now _ </proc/uptime
    took=$((${now%.*} - ${last%.*}))
    [ "$took" -gt 10 ] && echo "kernel-test guest: a 1 s wait took ${took} s" >/dev/kmsg
    last=$now
  done
) &
watcher=$!
cd "$(cat "$out/cwd")"
timeout --signal=KILL "$(cat "$out/timeout")" /bin/bash -c "$(cat "$out/cmd")" 2>&1 |
  tee "$out/output.log"
status=${PIPESTATUS[0]}
kill "$watcher" 2>/dev/null
[ "$status" -eq 137 ] && echo "kernel-test guest: the command ran past its timeout"
finish "$status"
