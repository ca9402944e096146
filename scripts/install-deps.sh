#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Installs everything sbx needs to build and test on a fresh Debian 12 (bookworm) machine.
# Run as root. Only Debian packages; nothing is downloaded from anywhere else.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps.sh: run as root (it calls apt-get)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
packages=(
  # build
  cmake make pkg-config g++ clang libclang-rt-14-dev clang-format
  libcap-ng-dev libseccomp-dev libaudit-dev
  libboost1.81-dev libboost-json1.81-dev libboost-log1.81-dev
  # tests
  libgtest-dev libgmock-dev libcap2-bin iproute2 util-linux procps iputils-ping
  # the QEMU end-to-end test and the demo
  qemu-system-x86 busybox-static cpio
  # scripts/kernel-test.sh: depmod for the unpacked kernels, xz for their modules
  kmod xz-utils
  # the Go client (clients/go): Debian 12's Go 1.19, standard library only
  golang-go
  # the fault matrix (tests/faults) injects its failures with strace
  strace
  # the benchmark smoke run compares against bwrap
  bubblewrap
  # the Debian package (packaging/build-deb.sh) and its test: dpkg-shlibdeps, lintian
  dpkg-dev lintian
)
apt-get update -q
apt-get install -y -q --no-install-recommends "${packages[@]}"
