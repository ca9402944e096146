#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Builds the Debian package OUTDIR/sbx_VERSION_ARCH.deb from this checkout: a Release build with
# the install prefix /usr, `cmake --install` into a staging tree, the control files from
# packaging/debian/, then `dpkg-deb --root-owner-group --build`. Reproducible: every timestamp
# is SOURCE_DATE_EPOCH (the last git commit, else the changelog's date), the build paths are
# mapped away, the man pages and changelog are gzipped -n, the file list is sorted.
#
# Needs: cmake, g++, the -dev packages of scripts/install-deps.sh, dpkg-dev (dpkg-shlibdeps).
# Runs as any user (the package's owners come from --root-owner-group).
# Environment: SBX_DEB_BUILD_DIR (default build-deb in the checkout), SBX_DEB_JOBS (default nproc).
set -euo pipefail
umask 022
export LC_ALL=C.UTF-8 TZ=UTC

die() { echo "build-deb.sh: $*" >&2; exit 1; }
[ $# -eq 1 ] || die "usage: packaging/build-deb.sh OUTDIR"

src=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$1"
out=$(cd "$1" && pwd)
build=${SBX_DEB_BUILD_DIR:-$src/build-deb}
jobs=${SBX_DEB_JOBS:-$(nproc)}
pkg=$src/packaging
for tool in cmake objcopy readelf dpkg-deb dpkg-shlibdeps dpkg-parsechangelog gzip md5sum; do
  command -v "$tool" >/dev/null || die "$tool not found (scripts/install-deps.sh installs it)"
done

version=$(sed -n 's/^project(sbx VERSION \([0-9.]*\) .*/\1/p' "$src/CMakeLists.txt")
[ -n "$version" ] || die "no version in CMakeLists.txt's project()"
changelog_version=$(dpkg-parsechangelog -l "$pkg/debian/changelog" -SVersion)
[ "$changelog_version" = "$version" ] ||
  die "packaging/debian/changelog is at $changelog_version, CMakeLists.txt at $version"
arch=$(dpkg --print-architecture)
if epoch=$(git -C "$src" log -1 --format=%ct 2>/dev/null) && [ -n "$epoch" ]; then
  SOURCE_DATE_EPOCH=$epoch
else
  SOURCE_DATE_EPOCH=$(dpkg-parsechangelog -l "$pkg/debian/changelog" -STimestamp)
fi
export SOURCE_DATE_EPOCH
deb=$out/sbx_${version}_${arch}.deb
echo "build-deb.sh: sbx $version ($arch), SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH, build dir $build"

# Every option that shapes the binaries is given, so a reused build dir's cache cannot change
# them. The compiled-in paths are the package's: the policy and the helper's location.
mkdir -p "$build"
build=$(cd "$build" && pwd)
cmake -S "$src" -B "$build" \
  -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/usr -DCMAKE_INSTALL_SYSCONFDIR=/etc \
  -DSBX_BUILD_TESTS=OFF -DSBX_BUILD_BENCH=OFF -DSBX_WERROR=OFF -DSBX_SANITIZE=OFF -DSBX_FUZZ=OFF \
  -DSBX_POLICY_PATH=/etc/sbx/nsexec.conf \
  -DSBX_HELPER_INSTALL_PATH=/usr/libexec/sbx/sbx-nsexec \
  -DCMAKE_CXX_FLAGS="-ffile-prefix-map=$src=. -ffile-prefix-map=$build=." >/dev/null
cmake --build "$build" -j"$jobs"

root=$build/deb-root
rm -rf "$root"
DESTDIR=$root cmake --install "$build" --strip >/dev/null
# What dh_strip also drops: the compiler's version strings.
objcopy --remove-section=.comment "$root/usr/bin/sbx-supervisor"
objcopy --remove-section=.comment "$root/usr/libexec/sbx/sbx-nsexec"

# The tree must be the package's layout and the binaries must carry the package's paths.
for f in usr/bin/sbx-supervisor usr/libexec/sbx/sbx-nsexec etc/sbx/nsexec.conf \
  usr/lib/tmpfiles.d/sbx.conf usr/share/man/man1/sbx-supervisor.1.gz \
  usr/share/man/man8/sbx-nsexec.8.gz usr/share/man/man5/sbx-nsexec.conf.5.gz; do
  [ -f "$root/$f" ] || die "cmake --install did not install /$f"
done
"$root/usr/libexec/sbx/sbx-nsexec" --version | grep -qF '(policy /etc/sbx/nsexec.conf)' ||
  die "sbx-nsexec was not built with the policy path /etc/sbx/nsexec.conf"
"$root/usr/bin/sbx-supervisor" --help | grep -qF '/usr/libexec/sbx/sbx-nsexec' ||
  die "sbx-supervisor was not built with the helper path /usr/libexec/sbx/sbx-nsexec"

doc=$root/usr/share/doc/sbx
install -d "$doc"
install -m 0644 "$pkg/debian/copyright" "$doc/copyright"
gzip -9 -n -c "$pkg/debian/changelog" >"$doc/changelog.gz"
install -d "$root/usr/share/lintian/overrides"
install -m 0644 "$pkg/debian/lintian-overrides" "$root/usr/share/lintian/overrides/sbx"

# Depends: adduser for postinst's addgroup, libcap2-bin for setcap, and the shared libraries of
# whichever binary is dynamic. Both are static PIEs in a normal build (the top-level
# CMakeLists.txt says why), and then there are none. dpkg-shlibdeps wants a debian/control to
# read, so it runs in a scratch dir.
dynamic=()
for bin in "$root/usr/bin/sbx-supervisor" "$root/usr/libexec/sbx/sbx-nsexec"; do
  if readelf -lW "$bin" | grep -q 'Requesting program interpreter'; then dynamic+=("$bin"); fi
done
shlibs=
if [ ${#dynamic[@]} -gt 0 ]; then
  scratch=$(mktemp -d)
  trap 'rm -rf "$scratch"' EXIT
  mkdir "$scratch/debian"
  printf 'Source: sbx\n\nPackage: sbx\nArchitecture: any\n' >"$scratch/debian/control"
  # (Its "should already be installed in their package's directory" is about debian/PACKAGE.)
  shlibs=$(cd "$scratch" && dpkg-shlibdeps -O "${dynamic[@]}" \
    2> >(grep -v "in their package's directory" >&2))
  shlibs=${shlibs#shlibs:Depends=}
  [ -n "$shlibs" ] || die "dpkg-shlibdeps found no dependencies of ${dynamic[*]}"
fi
depends="adduser, libcap2-bin${shlibs:+, $shlibs}"

# Installed-Size as dpkg-gencontrol counts it: KiB per file rounded up, 1 per other entry.
installed_size=$(find "$root" -mindepth 1 -printf '%y %s\n' |
  awk '$1 == "f" { n += int(($2 + 1023) / 1024) } $1 != "f" { n += 1 } END { print n }')

ctl=$root/DEBIAN
install -d -m 0755 "$ctl"
sed -e "s|@VERSION@|$version|" -e "s|@ARCH@|$arch|" -e "s|@INSTALLED_SIZE@|$installed_size|" \
  -e "s|@DEPENDS@|$depends|" "$pkg/debian/control.in" >"$ctl/control"
install -m 0644 "$pkg/debian/conffiles" "$ctl/conffiles"
install -m 0755 "$pkg/debian/postinst" "$ctl/postinst"
install -m 0755 "$pkg/debian/postrm" "$ctl/postrm"
# md5sums of every file but the conffiles (dpkg tracks those itself), as dh_md5sums does.
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\n' | LC_ALL=C sort |
  grep -vxF -f <(sed 's|^/||' DEBIAN/conffiles) | xargs -d '\n' md5sum) >"$ctl/md5sums"
chmod 0644 "$ctl/control" "$ctl/md5sums"

# Modes are the install rules' (the helper 0750 until postinst's statoverride makes it
# root:sbx 0750); directories 0755; every timestamp SOURCE_DATE_EPOCH.
find "$root" -type d -exec chmod 0755 {} +
find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

rm -f "$deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "build-deb.sh: built $deb"
dpkg-deb --info "$deb" | sed -n 's/^ \(Depends\|Installed-Size\):/  \1:/p'
