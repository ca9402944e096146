#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Runs a command, by default sbx's integration suites, on Debian 12's own kernels: the stock
# one (what linux-image-amd64 depends on, 6.1) and the newest 6.12, each booted under QEMU
# (KVM where /dev/kvm opens, TCG otherwise) with this machine's root shared read-only over 9p
# under a tmpfs overlay, and cgroup2 alone mounted with every controller enabled down to a
# delegated test subtree.
#
#   scripts/kernel-test.sh [--kernel 6.1|6.12|all] [--build DIR] [--timeout SECONDS]
#                          [-- CMD ARGS...]
#
# The kernels come from Debian's archive only (apt-get download, dpkg -x) and are kept in
# $SBX_KERNEL_CACHE (default /var/cache/sbx-kernel-test), outside the repository. Without
# `--`, the guest runs the helper's and the supervisor's integration suites of the build in
# DIR (default build-test) through ctest, and the cgroup limit tests (which need an enforcing
# cgroup v2). With
# `-- CMD ARGS...` it runs that command instead, as root, in the current directory, and its
# exit status is the script's. A kernel that does not boot, or a command that runs past the
# timeout (default 1800 s), is a failure, with the console log shown. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

usage() {
  sed -n '9,10p' "$0" | sed 's/^# \{0,3\}//' >&2
  exit 2
}

kernels=all
build=build-test
timeout_s=1800
cmd=()
while [ $# -gt 0 ]; do
  case $1 in
    --kernel) kernels=${2:?--kernel needs 6.1, 6.12 or all}; shift 2 ;;
    --build) build=${2:?--build needs a directory}; shift 2 ;;
    --timeout) timeout_s=${2:?--timeout needs seconds}; shift 2 ;;
    --) shift; cmd=("$@"); break ;;
    -h|--help) usage ;;
    *) echo "kernel-test.sh: unknown argument: $1" >&2; usage ;;
  esac
done
case $kernels in
  6.1|6.12) list=("$kernels") ;;
  all) list=(6.1 6.12) ;;
  *) echo "kernel-test.sh: --kernel must be 6.1, 6.12 or all, not $kernels" >&2; exit 2 ;;
esac
if [ "$(id -u)" -ne 0 ]; then
  echo "kernel-test.sh: run as root (the guest runs the suites as root, as CI does)" >&2
  exit 1
fi
for tool in qemu-system-x86_64 /bin/busybox depmod cpio xz apt-get dpkg; do
  command -v "$tool" >/dev/null || {
    echo "kernel-test.sh: $tool is missing (scripts/install-deps.sh installs it)" >&2
    exit 1
  }
done
busybox=/bin/busybox  # busybox-static: the initramfs has no libc
cache=${SBX_KERNEL_CACHE:-/var/cache/sbx-kernel-test}
mkdir -p "$cache"

# The package name for a kernel line: the stock one is what linux-image-amd64 depends on; for
# 6.12 the newest signed linux-image-6.12.N+deb12-amd64.
package_for() {
  case $1 in
    6.1)
      apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}' ;;
    6.12)
      apt-cache search --names-only '^linux-image-6\.12\.[0-9]+\+deb12-amd64$' |
        awk '{print $1}' | sort -V | tail -n 1 ;;
  esac
}

# Downloads and unpacks PACKAGE into $cache/PACKAGE (once), with modules.dep made by depmod.
fetch_kernel() {
  local pkg=$1 dir=$cache/$1
  if [ ! -f "$dir/.unpacked" ]; then
    rm -rf "$dir" "$cache/dl-$pkg"
    mkdir -p "$cache/dl-$pkg"
    (cd "$cache/dl-$pkg" && apt-get download -q -o APT::Sandbox::User=root "$pkg" >/dev/null)
    dpkg -x "$cache/dl-$pkg"/*.deb "$dir"
    rm -rf "$cache/dl-$pkg"
    local version
    version=$(ls "$dir/lib/modules")
    depmod -b "$dir" "$version"
    touch "$dir/.unpacked"
  fi
}

# The initramfs for the kernel unpacked in DIR: busybox, the modules 9p, virtio-pci and
# overlay need (their modules.dep order, decompressed: busybox's insmod takes plain .ko), and
# the first-stage init.
make_initramfs() {
  local dir=$1 out=$2 version work
  version=$(ls "$dir/lib/modules")
  work=$(mktemp -d)
  mkdir -p "$work"/{bin,dev,proc,sys,mnt/host,mnt/rw,newroot,modules}
  cp "$busybox" "$work/bin/busybox"
  for applet in sh mount umount insmod mkdir cat echo switch_root sleep; do
    ln -s busybox "$work/bin/$applet"
  done
  local moddir=$dir/lib/modules/$version
  # Each wanted module and, before it, what it depends on (modules.dep lists direct and
  # indirect dependencies, nearest last): a module built in is not in modules.dep, and skipped.
  local order=() seen=" "
  add_module() {
    local name=$1 line path dep
    line=$(grep -E "(^|/)${name}\.ko(\.xz|\.zst)?:" "$moddir/modules.dep" || true)
    [ -n "$line" ] || return 0
    path=${line%%:*}
    case $seen in *" $path "*) return 0 ;; esac
    for dep in $(echo "${line#*:}" | tr ' ' '\n' | tac); do
      dep=$(basename "$dep")
      add_module "${dep%%.ko*}"
    done
    case $seen in *" $path "*) return 0 ;; esac
    seen="$seen$path "
    order+=("$path")
  }
  for m in virtio_pci 9pnet_virtio 9p overlay; do add_module "$m"; done
  local i=0 f base
  : >"$work/modules/order"
  for f in "${order[@]}"; do
    i=$((i + 1))
    base=$(printf '%02d-%s' "$i" "$(basename "${f%%.ko*}").ko")
    case $f in
      *.xz) xz -dc "$moddir/$f" >"$work/modules/$base" ;;
      *.zst) zstd -qdc "$moddir/$f" >"$work/modules/$base" ;;
      *) cp "$moddir/$f" "$work/modules/$base" ;;
    esac
    echo "$base" >>"$work/modules/order"
  done
  cp "$repo/scripts/kernel-test-init.sh" "$work/init"
  chmod 0755 "$work/init"
  (cd "$work" && find . | cpio -o -H newc --quiet | gzip -1) >"$out"
  rm -rf "$work"
}

# KVM where a vCPU can actually be made and reset (a nested /dev/kvm may open and still refuse
# the host CPU's MSRs), TCG otherwise.
accel=tcg
cpu=max
if [ -r /dev/kvm ] && [ -w /dev/kvm ] &&
  timeout 10 qemu-system-x86_64 -accel kvm -cpu host -machine pc -nodefaults -display none \
    -monitor none -serial none -S -daemonize -pidfile "$cache/kvm-probe.pid" 2>/dev/null; then
  accel=kvm
  cpu=host
fi
[ -f "$cache/kvm-probe.pid" ] && kill "$(cat "$cache/kvm-probe.pid")" 2>/dev/null
rm -f "$cache/kvm-probe.pid"

# Every test of the suites runs in the guests, the loops of 200 to 1,000 launches included
# (the helper's races over paths, leaks over cycles), under emulation at one round in
# SBX_TEST_LOOP_DIVISOR (set below): about 3 minutes per kernel, well within the suites'
# per-test TIMEOUT (tests/CMakeLists.txt).

# The guest's command, as one bash command line: what was given, or the default suites.
if [ ${#cmd[@]} -eq 0 ]; then
  [ -x "$build/supervisor/sbx-supervisor" ] || {
    echo "kernel-test.sh: no build in $build (scripts/test.sh makes it)" >&2
    exit 1
  }
  build_abs=$(cd "$build" && pwd)
  guest_cmd="cd $(printf '%q' "$build_abs") && { ./supervisor/sbx-supervisor doctor |
  sed -n 's/.*landlock: ABI \([0-9]*\).*/\1/p' >/sbx-out/landlock_abi; } ;
  ctest --output-on-failure --no-tests=error -j2 \
  -R '^sbx_(helper_integration|supervisor_integration|cgroup_limits)[.]' |
  tee /sbx-out/ctest.log; status=\${PIPESTATUS[0]};
  if grep -qE '[*]{3}Skipped|Not Run' /sbx-out/ctest.log; then
  echo 'kernel-test.sh: a test was skipped: every test must run here'; exit 1; fi; exit \$status"
else
  guest_cmd=$(printf '%q ' "${cmd[@]}")
fi

# Under emulation a vCPU can stand still for tens of seconds while the host runs QEMU's other
# threads (the guest's watchdog then reports a soft lockup): the tests' waits for children,
# events and reports are stretched by SBX_TEST_TIME_SCALE (tests/integration/time_scale.h).
# No test asserts on speed, so only how long a real failure takes to be reported changes.
# A launch there is also ten to twenty times slower than on the host, so the long loops (races
# of a thousand launches, two hundred sandboxes, the passed-fd grid) run one round in
# SBX_TEST_LOOP_DIVISOR: what they prove of the kernel shows in a fifth of their rounds, and
# the host's suites, in the same CI run, run them whole.
time_scale=1 loop_divisor=1
[ "$accel" = tcg ] && time_scale=10 loop_divisor=5
guest_cmd="export SBX_TEST_TIME_SCALE=$time_scale SBX_TEST_LOOP_DIVISOR=$loop_divisor; $guest_cmd"

summaries=()
overall=0
for k in "${list[@]}"; do
  pkg=$(package_for "$k")
  if [ -z "$pkg" ]; then
    echo "kernel-test.sh: no package found for $k (apt-get update first)" >&2
    exit 1
  fi
  fetch_kernel "$pkg"
  kdir=$cache/$pkg
  version=$(ls "$kdir/lib/modules")
  initrd=$cache/initramfs-$version.cpio.gz
  make_initramfs "$kdir" "$initrd"
  out=$(mktemp -d /tmp/sbx-kernel-out.XXXXXX)
  chmod 0755 "$out"
  # What the guest reads: the command line, where it runs, its time limit, this repository.
  printf '%s\n' "$guest_cmd" >"$out/cmd"
  printf '%s\n' "$PWD" >"$out/cwd"
  printf '%s\n' "$timeout_s" >"$out/timeout"
  printf '%s\n' "$repo" >"$out/repo"
  console=$out/console.log
  echo "kernel-test.sh: $pkg ($version), accel $accel"
  start=$(date +%s)
  set +e
  timeout --signal=KILL "$((timeout_s + 120))" qemu-system-x86_64 -accel "$accel" -m 3072 -smp 2 \
    -nographic -no-reboot -nodefaults -serial stdio -cpu "$cpu" \
    -kernel "$kdir/boot/vmlinuz-$version" -initrd "$initrd" \
    -append "console=ttyS0 panic=-1 loglevel=5 softlockup_all_cpu_backtrace=1" \
    -virtfs local,path=/,mount_tag=sbxhost,security_model=none,readonly=on,multidevs=remap \
    -virtfs local,path="$out",mount_tag=sbxout,security_model=none,multidevs=remap \
    </dev/null >"$console" 2>&1
  qemu_status=$?
  set -e
  elapsed=$(($(date +%s) - start))
  cat "$console"
  if [ ! -f "$out/status" ]; then
    echo "kernel-test.sh: $version: no exit status from the guest (QEMU exit $qemu_status after" \
      "${elapsed}s): it did not boot or the command hung; console log above" >&2
    status=125
  else
    status=$(cat "$out/status")
  fi
  abi=$(cat "$out/landlock_abi" 2>/dev/null || echo '?')
  controllers=$(cat "$out/controllers" 2>/dev/null || echo '?')
  passed=$(grep -oE '^[0-9]+% tests passed, [0-9]+ tests failed out of [0-9]+' \
    "$out/ctest.log" 2>/dev/null || echo "exit status $status")
  summaries+=("kernel $version: Landlock ABI $abi, cgroup controllers: $controllers; $passed; ${elapsed}s")
  [ "$status" -eq 0 ] || overall=$status
  rm -rf "$out"
done
for line in "${summaries[@]}"; do echo "kernel-test.sh: $line"; done
exit "$overall"
