#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# The initramfs's /init for scripts/kernel-test.sh (busybox sh): loads the 9p, virtio and
# overlay modules, mounts the host's root (9p, read-only) under a tmpfs overlay and the
# writable share for the results, then switches to the overlay with busybox's init as pid 1
# (it reaps every orphan), whose one task is scripts/kernel-test-guest.sh.
fail() {
  echo "kernel-test init: $*"
  echo o >/proc/sysrq-trigger
  sleep 10
}
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules/order); do
  insmod "/modules/$m" || fail "insmod $m"
done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose sbxhost /mnt/host ||
  fail "mount the host's root"
mount -t tmpfs -o mode=0755 tmpfs /mnt/rw || fail "tmpfs for the overlay"
mkdir -p /mnt/rw/upper /mnt/rw/work
mount -t overlay -o lowerdir=/mnt/host,upperdir=/mnt/rw/upper,workdir=/mnt/rw/work overlay \
  /newroot || fail "overlay"
mkdir -p /newroot/sbx-out
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 sbxout /newroot/sbx-out ||
  fail "mount the results share"
repo=$(cat /newroot/sbx-out/repo)
echo "::sysinit:/bin/bash $repo/scripts/kernel-test-guest.sh" >/newroot/etc/inittab
umount /proc /sys /dev
exec switch_root /newroot /bin/busybox init
