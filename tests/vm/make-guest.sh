#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# make-guest.sh OUTDIR
#
# Builds the QEMU test guest used by the sbx end-to-end tests:
#   OUTDIR/vmlinuz              Debian's cloud kernel (fetched with `apt-get download`,
#                               unpacked with `dpkg -x`, never installed into /boot)
#   OUTDIR/initramfs.cpio.gz    busybox + the kernel's virtio-net modules + an /init that
#                               brings eth0 up as 192.0.2.2/24 and prints SBX-GUEST-READY
#
# Run as root. Idempotent: the downloaded .deb and its unpacked tree are cached in
# OUTDIR/cache and reused; the initramfs is rebuilt reproducibly on each run.
# Installs nothing: qemu-system-x86, busybox-static, cpio and iproute2 must already be
# installed (the install script does that).
set -euo pipefail

die() { echo "make-guest: error: $*" >&2; exit 1; }
log() { echo "make-guest: $*" >&2; }

[[ $# -eq 1 ]] || die "usage: $0 OUTDIR"
[[ $(id -u) -eq 0 ]] || die "must run as root"

# Modules needed for virtio-net on microvm (virtio-mmio transport), in load order.
MODULES=(virtio_ring virtio virtio_mmio failover net_failover virtio_net)
MARKER=SBX-GUEST-READY
GUEST_ADDR=192.0.2.2/24

# ---- prerequisites ---------------------------------------------------------
missing=()
need_pkg() { # need_pkg PACKAGE TEST...
    local pkg=$1; shift
    "$@" >/dev/null 2>&1 || missing+=("$pkg")
}
pkg_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
need_pkg qemu-system-x86 command -v qemu-system-x86_64
# The busybox (dynamic) package also ships /bin/busybox; the guest needs the static one.
need_pkg busybox-static  pkg_installed busybox-static
need_pkg busybox-static  test -x /bin/busybox
need_pkg cpio            command -v cpio
need_pkg iproute2        command -v ip
need_pkg dpkg            command -v dpkg-deb
need_pkg apt             command -v apt-get
need_pkg gzip            command -v gzip
if ((${#missing[@]})); then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    die "missing package(s): ${missing[*]} (install with: apt-get install -y ${missing[*]})"
fi

OUTDIR=$1
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
CACHE=$OUTDIR/cache
mkdir -p "$CACHE"

WORK=$(mktemp -d "$OUTDIR/.work.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# ---- kernel package --------------------------------------------------------
# Newest linux-image-<abi>-cloud-amd64 that apt knows: what the metapackage depends on,
# else the highest version among the real packages apt-cache lists.
resolve_kernel_pkg() {
    local p
    p=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null |
        sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-cloud-amd64\)$/\1/p' | sort -V | tail -n1 || true)
    if [[ -z $p ]]; then
        p=$(apt-cache search --names-only '^linux-image-[0-9].*-cloud-amd64$' 2>/dev/null |
            awk '{print $1}' | sort -V | tail -n1 || true)
    fi
    [[ -n $p ]] && echo "$p"
}

download_pkg() { # download_pkg PKG -> .deb in $CACHE
    local pkg=$1 dl=$WORK/dl
    mkdir -p "$dl"
    # Let apt's unprivileged _apt user write the download dir (avoids the
    # "download is performed unsandboxed" warning).
    if id _apt >/dev/null 2>&1; then chmod 0755 "$WORK"; chown _apt "$dl"; fi
    (cd "$dl" && apt-get download -q "$pkg") >&2 || return 1
    local deb
    deb=$(find "$dl" -maxdepth 1 -name "${pkg}_*.deb" -print -quit)
    [[ -n $deb ]] || return 1
    chown root: "$deb"
    mv "$deb" "$CACHE/"
}

cached_deb_for() { # cached_deb_for PKG|'' -> newest cached .deb for PKG (any cloud kernel if '')
    local pat=${1:-linux-image-[0-9]*-cloud-amd64}
    find "$CACHE" -maxdepth 1 -name "${pat}_*.deb" -printf '%f\n' | sort -V | tail -n1
}

PKG=$(resolve_kernel_pkg || true)
DEB=""
if [[ -n $PKG ]]; then
    DEB=$(cached_deb_for "$PKG")
elif [[ -n $(cached_deb_for "") ]]; then
    # apt knows no cloud kernel (no lists?) but we have one cached: use it, offline.
    DEB=$(cached_deb_for "")
    log "apt knows no cloud kernel; reusing cached $DEB"
fi

if [[ -z $DEB ]]; then
    if [[ -z $PKG ]] || ! download_pkg "$PKG"; then
        log "no usable package lists for the cloud kernel; running apt-get update"
        apt-get update -q >&2 || die "apt-get update failed"
        PKG=$(resolve_kernel_pkg) || die "apt knows no linux-image-*-cloud-amd64 package"
        DEB=$(cached_deb_for "$PKG")
        if [[ -z $DEB ]]; then
            download_pkg "$PKG" || die "apt-get download $PKG failed"
        fi
    fi
    DEB=$(cached_deb_for "$PKG")
    [[ -n $DEB ]] || die "download of $PKG produced no .deb"
    log "downloaded $DEB"
else
    log "reusing cached $DEB"
fi
PKG=${DEB%%_*}

# ---- unpack (cached, keyed by the .deb name) -------------------------------
KROOT=$CACHE/kernel-root
if [[ ! -f $KROOT/.sbx-from || $(cat "$KROOT/.sbx-from") != "$DEB" ]]; then
    log "unpacking $DEB into $KROOT"
    rm -rf "$CACHE/kernel-root.tmp"
    mkdir "$CACHE/kernel-root.tmp"
    dpkg -x "$CACHE/$DEB" "$CACHE/kernel-root.tmp"
    echo "$DEB" >"$CACHE/kernel-root.tmp/.sbx-from"
    rm -rf "$KROOT"
    mv "$CACHE/kernel-root.tmp" "$KROOT"
fi

KVER=${PKG#linux-image-}
VMLINUZ_SRC=$KROOT/boot/vmlinuz-$KVER
MODDIR=$KROOT/lib/modules/$KVER
[[ -f $VMLINUZ_SRC ]] || die "no kernel image at $VMLINUZ_SRC"
[[ -d $MODDIR ]] || die "no module tree at $MODDIR"

install -m 0644 "$VMLINUZ_SRC" "$WORK/vmlinuz"
mv -f "$WORK/vmlinuz" "$OUTDIR/vmlinuz"

# ---- initramfs -------------------------------------------------------------
IR=$WORK/root
mkdir -p "$IR"/{bin,sbin,dev,proc,sys,tmp,run,lib/modules}
install -m 0755 /bin/busybox "$IR/bin/busybox"
# Applet symlinks, made at build time so the image needs no --install step.
while read -r applet; do
    [[ -n $applet && $applet != busybox ]] || continue
    ln -sf busybox "$IR/bin/$applet"
done < <(/bin/busybox --list)

# /init's stdio: the kernel opens /dev/console before running /init.
mknod -m 0600 "$IR/dev/console" c 5 1
mknod -m 0666 "$IR/dev/null" c 1 3

for m in "${MODULES[@]}"; do
    f=$(find "$MODDIR" -type f \( -name "$m.ko" -o -name "$m.ko.xz" -o -name "$m.ko.zst" -o -name "$m.ko.gz" \) -print -quit)
    [[ -n $f ]] || die "module $m not found under $MODDIR (built in? check $KROOT/boot/config-$KVER)"
    dst=$IR/lib/modules/$m.ko
    case $f in
        *.ko)     cp "$f" "$dst" ;;
        *.ko.xz)  command -v xz >/dev/null || die "module $f is xz-compressed: install xz-utils"
                  xz -dc "$f" >"$dst" ;;
        *.ko.zst) command -v zstd >/dev/null || die "module $f is zstd-compressed: install zstd"
                  zstd -qdc "$f" >"$dst" ;;
        *.ko.gz)  gzip -dc "$f" >"$dst" ;;
    esac
    log "module $m <- ${f#"$KROOT"}"
done

cat >"$IR/init" <<EOF
#!/bin/sh
# sbx test guest init (generated by tests/vm/make-guest.sh)
export PATH=/bin:/sbin
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run

# Twice over: a module whose dependency is not loaded yet fails the first pass.
for pass in 1 2; do
    for m in ${MODULES[*]}; do
        grep -q "^\$m " /proc/modules || insmod /lib/modules/\$m.ko 2>/dev/null
    done
done

ip link set lo up
i=0
while [ ! -e /sys/class/net/eth0 ] && [ \$i -lt 50 ]; do sleep 0.1; i=\$((i+1)); done
if [ -e /sys/class/net/eth0 ]; then
    ip addr add $GUEST_ADDR dev eth0
    ip link set eth0 up
    echo "$MARKER"
else
    echo "SBX-GUEST-ERROR: no eth0; loaded modules:"
    cat /proc/modules
fi

# Keep running until the VMM is stopped.
while :; do sleep 3600; done
EOF
chmod 0755 "$IR/init"

# Reproducible archive: sorted names, fixed mtimes, no gzip timestamp.
find "$IR" -exec touch -h -d @0 {} +
(cd "$IR" && find . -mindepth 1 | LC_ALL=C sort |
    cpio -o -H newc -R 0:0 --reproducible --quiet) | gzip -9 -n >"$WORK/initramfs.cpio.gz"
chmod 0644 "$WORK/initramfs.cpio.gz"
mv -f "$WORK/initramfs.cpio.gz" "$OUTDIR/initramfs.cpio.gz"

echo "kernel-package: $PKG ($DEB)"
echo "vmlinuz: $OUTDIR/vmlinuz"
echo "initramfs: $OUTDIR/initramfs.cpio.gz"
echo "modules: ${MODULES[*]}"
