#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The reference pipeline (../shared/seeds: the Go launchers' buildStartScript), reproduced for
# timing only: a private mount namespace, / rprivate, a tmpfs sandbox dir, two links, then
# `ip netns exec` of the VMM. Run as root. Usage: reference_launch.sh SANDBOX_DIR KERNEL ROOTFS
# NETNS VMM [ARGS...]
set -euo pipefail
dir=$1 kernel=$2 rootfs=$3 netns=$4
shift 4
exec unshare -m -- bash -c "
set -euo pipefail
mount --make-rprivate /
mkdir -p $dir
mount -t tmpfs tmpfs $dir
ln -s $kernel $dir/vmlinux
ln -s $rootfs $dir/rootfs.ext4
exec ip netns exec $netns $*
"
