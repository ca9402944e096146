#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# package_install_purge: builds the Debian package with packaging/build-deb.sh, lints it, installs
# it with `apt-get install ./sbx_*.deb`, checks the helper (root:sbx 0750, cap_sys_admin,cap_audit_write=ep, not
# setuid), runs the probe VMM through the INSTALLED sbx-supervisor and sbx-nsexec as a member of
# the group sbx (started/ready/exited, the VMM's own exit code) and as a user who is not (refused:
# setup_failed at spawn_helper, EACCES, exit 125), then purges the package and checks nothing of
# it is left. Runs as root; undoes everything it did, also when it fails (trap).
#
# It refuses to run rather than destroy an installed sbx package or a hand-installed sbx it does
# not know. A scripts/demo.sh install (whose files the package replaces) is removed first with
# `scripts/demo.sh --uninstall`: see packaging/README.md.
#
# usage: package_test.sh SOURCE_DIR PROBE_VMM     (SBX_DEB_JOBS: build parallelism)
set -euo pipefail
export LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive

HELPER=/usr/libexec/sbx/sbx-nsexec
CAPS=cap_sys_admin,cap_audit_write  # what packaging/debian/postinst sets, as getcap prints it
SUPERVISOR=/usr/bin/sbx-supervisor
POLICY=/etc/sbx/nsexec.conf
SANDBOX_ROOT=/run/sbx
DEMO_TAG="# written by sbx scripts/demo.sh"
USER_IN=sbx-pkgtest-in    # a member of sbx
USER_OUT=sbx-pkgtest-out  # not a member
USER_MARK="sbx tests/packaging/package_test.sh"
# Set while the package may be installed by this test: a later run may then purge it.
INSTALLED_MARK=/run/lock/sbx-package-test.installed
APT=(apt-get -q -y -o DPkg::Lock::Timeout=600)

step() { printf '\n== %s\n' "$*"; }
fail() { echo "package_test: FAIL: $*" >&2; exit 1; }
check() {  # check DESCRIPTION COMMAND...: run a command that must succeed
  local what=$1; shift
  if "$@"; then echo "ok: $what"; else fail "$what"; fi
}
not() { ! "$@" >/dev/null 2>&1; }
has() { grep -qE "$2" "$1"; }

[ $# -eq 2 ] || fail "usage: package_test.sh SOURCE_DIR PROBE_VMM"
src=$(cd "$1" && pwd)
probe_src=$2
[ "$(id -u)" -eq 0 ] || fail "run as root: it installs and purges a package"
[ -x "$probe_src" ] || fail "no probe VMM at $probe_src"
for tool in apt-get dpkg-query dpkg-statoverride lintian getcap setpriv useradd userdel flock; do
  command -v "$tool" >/dev/null || fail "$tool not found (scripts/install-deps.sh installs it)"
done

# One run at a time.
exec 9>/run/lock/sbx-package-test.lock
flock -w 600 9 || fail "another package test holds /run/lock/sbx-package-test.lock"

pkg_status() { dpkg-query -W -f='${db:Status-Status}' sbx 2>/dev/null || true; }
pkg_absent() { local s; s=$(pkg_status); [ -z "$s" ] || [ "$s" = not-installed ]; }
ours() { getent passwd "$1" | cut -d: -f5 | grep -qxF "$USER_MARK"; }

# --- What is there before: refuse rather than destroy -------------------------------------------
step "machine state"
if ! pkg_absent; then
  [ -e "$INSTALLED_MARK" ] ||
    fail "the sbx package is on this machine (dpkg status: $(pkg_status)); this test installs and" \
      "purges it and would destroy that installation. Purge it first (apt-get purge sbx)."
  echo "purging the sbx package an interrupted run of this test left"
  "${APT[@]}" purge sbx >/dev/null
fi
rm -f "$INSTALLED_MARK"
for u in "$USER_IN" "$USER_OUT"; do
  if getent passwd "$u" >/dev/null; then
    ours "$u" || fail "user $u exists and was not made by this test"
    pkill -KILL -u "$u" || true
    userdel "$u"
  fi
done
if [ -e "$HELPER" ] || [ -e "$POLICY" ]; then
  # The demo's hand-install: the same paths the package owns. Its own uninstall removes it.
  if ! { [ -f "$POLICY" ] && grep -qxF "$DEMO_TAG" "$POLICY"; }; then
    fail "$HELPER or $POLICY exists, installed neither by the sbx package nor by" \
      "scripts/demo.sh; not touching it"
  fi
  if getent passwd sbx-demo >/dev/null && pgrep -u sbx-demo >/dev/null; then
    fail "scripts/demo.sh is running (processes of sbx-demo)"
  fi
  echo "removing the scripts/demo.sh install (its files are the package's): demo.sh --uninstall"
  "$src/scripts/demo.sh" --uninstall
fi
getent group sbx >/dev/null &&
  fail "the group sbx exists without the package; purging would delete it. Remove it first."
rmdir "$SANDBOX_ROOT"/pkgtest-* 2>/dev/null || true  # left by an interrupted run of this test
if [ -d "$SANDBOX_ROOT" ] && [ -n "$(ls -A "$SANDBOX_ROOT")" ]; then
  fail "$SANDBOX_ROOT is not empty; not touching it"
fi
[ -d "$SANDBOX_ROOT" ] && echo "$SANDBOX_ROOT exists, empty: the package takes it over"

# --- Cleanup, whatever happens from here ---------------------------------------------------------
work=$(mktemp -d /tmp/sbx-pkgtest.XXXXXX)
priv=
supervisor_pid=
policy_saved=
cleanup() {
  local rc=$?
  set +e
  if [ -n "$supervisor_pid" ]; then
    kill -KILL "$supervisor_pid" 2>/dev/null
    wait "$supervisor_pid" 2>/dev/null
  fi
  for u in "$USER_IN" "$USER_OUT"; do
    if ours "$u"; then pkill -KILL -u "$u"; sleep 0.2; userdel "$u"; fi
  done
  # Sandbox dirs a killed supervisor could not remove (the tmpfs was only in the VMM's mount
  # namespace: on the host they are empty).
  rmdir "$SANDBOX_ROOT"/pkgtest-* 2>/dev/null
  if [ -n "$policy_saved" ] && [ -f "$policy_saved" ]; then cp -p "$policy_saved" "$POLICY"; fi
  if [ -e "$INSTALLED_MARK" ]; then
    "${APT[@]}" purge sbx >/dev/null 2>&1 || echo "cleanup: apt-get purge sbx failed" >&2
    rm -f "$INSTALLED_MARK"
  fi
  [ -n "$priv" ] && rm -rf "$priv"
  rm -rf "$work"
  if [ "$rc" -eq 0 ]; then echo "package_test: PASS"; else echo "package_test: FAIL" >&2; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# What must be the same after the purge.
snapshot() {
  for f in /etc/passwd /etc/group /etc/shadow /etc/gshadow /etc/subuid /etc/subgid; do
    echo "## $f"; [ -f "$f" ] && LC_ALL=C sort "$f"
  done
  echo "## statoverrides"; dpkg-statoverride --list | LC_ALL=C sort
}
snapshot >"$work/before.txt"
installed_packages() {
  dpkg-query -W -f='${db:Status-Status} ${Package}\n' | awk '$1 == "installed" { print $2 }' | sort
}
installed_packages >"$work/packages-before.txt"

# --- Build and lint ------------------------------------------------------------------------------
step "build the package (packaging/build-deb.sh)"
chmod 0755 "$work"  # apt's _apt user reads the .deb
SBX_DEB_BUILD_DIR=$work/build "$src/packaging/build-deb.sh" "$work/out" >"$work/build.log" 2>&1 ||
  { tail -n 40 "$work/build.log" >&2; fail "build-deb.sh failed"; }
tail -n 3 "$work/build.log"
debs=("$work"/out/sbx_*.deb)
if [ ${#debs[@]} -ne 1 ] || [ ! -f "${debs[0]}" ]; then fail "expected one sbx_*.deb in $work/out"; fi
deb=${debs[0]}

step "lintian"
# No error, no warning that is not overridden (the overrides are explained in packaging/README.md).
lintian_rc=0
lintian --fail-on error,warning --tag-display-limit 0 "$deb" >"$work/lintian.txt" 2>&1 ||
  lintian_rc=$?
grep -v 'root privileges' "$work/lintian.txt" || true
check "lintian: no error, no warning that is not overridden" test "$lintian_rc" -eq 0

# --- Install -------------------------------------------------------------------------------------
step "apt-get install $deb"
touch "$INSTALLED_MARK"
"${APT[@]}" install --no-install-recommends "$deb" >"$work/apt-install.log" 2>&1 ||
  { cat "$work/apt-install.log" >&2; fail "apt-get install failed"; }
grep -E '^(Setting up|Unpacking) sbx' "$work/apt-install.log"
check "dpkg: sbx installed" test "$(pkg_status)" = installed
check "helper $HELPER is root:sbx 0750" test "$(stat -c '%U:%G %a' "$HELPER")" = "root:sbx 750"
check "helper is not setuid or setgid" test ! -u "$HELPER" -a ! -g "$HELPER"
getcap "$HELPER"
check "helper has exactly $CAPS=ep" test "$(getcap "$HELPER")" = "$HELPER $CAPS=ep"
check "owner and mode recorded as a statoverride" \
  test "$(dpkg-statoverride --list "$HELPER")" = "root sbx 750 $HELPER"
check "group sbx is a system group" test "$(getent group sbx | cut -d: -f3)" -lt 1000
check "$SANDBOX_ROOT is root:sbx 1770" test "$(stat -c '%U:%G %a' "$SANDBOX_ROOT")" = "root:sbx 1770"
check "supervisor installed root 0755" test "$(stat -c '%U:%G %a' "$SUPERVISOR")" = "root:root 755"
"$HELPER" --version >"$work/version.txt"
check "helper reads /etc/sbx/nsexec.conf" grep -qF '(policy /etc/sbx/nsexec.conf)' "$work/version.txt"
for m in man1/sbx-supervisor.1 man8/sbx-nsexec.8 man5/sbx-nsexec.conf.5; do
  check "man page $m" test -s "/usr/share/man/$m.gz"
done
check "the tmpfiles.d entry" test -f /usr/lib/tmpfiles.d/sbx.conf
"$HELPER" --check-policy >"$work/default-policy.txt"
check "the shipped policy parses and allows no VMM" \
  test "$(grep -cE '^(vmm|sandbox_root|image_root|netns) ' "$work/default-policy.txt")" -eq 0

step "postinst when setcap fails: loud failure, no setuid fallback"
mkdir "$work/fakebin"
printf '#!/bin/sh\necho "setcap: simulated failure" >&2\nexit 1\n' >"$work/fakebin/setcap"
chmod 0755 "$work/fakebin/setcap"
rc=0
PATH="$work/fakebin:$PATH" sh /var/lib/dpkg/info/sbx.postinst configure 2>"$work/postinst.err" ||
  rc=$?
cat "$work/postinst.err"
check "postinst exits 1" test "$rc" -eq 1
check "it names the failed setcap" grep -qF "'setcap $CAPS+ep $HELPER' failed" "$work/postinst.err"
check "it says there is no setuid fallback" grep -qF "never falls back to setuid" "$work/postinst.err"
check "the helper is still not setuid or setgid" test ! -u "$HELPER" -a ! -g "$HELPER"

step "apt-get install --reinstall (an unpack drops file capabilities; postinst sets them again)"
"${APT[@]}" install --reinstall --no-install-recommends "$deb" >"$work/apt-reinstall.log" 2>&1 ||
  { cat "$work/apt-reinstall.log" >&2; fail "apt-get install --reinstall failed"; }
check "helper is root:sbx 0750 again" test "$(stat -c '%U:%G %a' "$HELPER")" = "root:sbx 750"
check "helper has exactly $CAPS=ep again" test "$(getcap "$HELPER")" = "$HELPER $CAPS=ep"

# --- One sandbox through the installed binaries --------------------------------------------------
step "test users, the probe VMM, a temporary policy"
useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
  --comment "$USER_MARK" --gid nogroup --groups sbx "$USER_IN"
useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
  --comment "$USER_MARK" --gid nogroup "$USER_OUT"
id "$USER_IN"
id "$USER_OUT"
uid_in=$(id -u "$USER_IN")
priv=$(mktemp -d /run/sbx-pkgtest.XXXXXX)
chmod 0755 "$priv"
install -d -m 0755 "$priv/bin" "$priv/images"
install -m 0755 "$probe_src" "$priv/bin/sbx-probe-vmm"
echo "not a kernel" >"$priv/images/vmlinux"
echo "not a filesystem" >"$priv/images/rootfs.ext4"
chmod 0644 "$priv/images/vmlinux" "$priv/images/rootfs.ext4"
install -d -m 0700 -o "$USER_IN" -g nogroup "$priv/work"

policy_saved=$priv/nsexec.conf.package
cp -p "$POLICY" "$policy_saved"
cat >"$POLICY.pkgtest" <<EOF
# written by tests/packaging/package_test.sh: temporary, the package's file is put back
vmm = $priv/bin/sbx-probe-vmm
sandbox_root = $SANDBOX_ROOT
image_root = $priv/images
tmpfs_size_mb = 8
EOF
chmod 0644 "$POLICY.pkgtest"
mv "$POLICY.pkgtest" "$POLICY"
"$HELPER" --check-policy

write_spec() {  # write_spec FILE ID
  cat >"$1" <<EOF
{
  "id": "$2",
  "vmm": {"kind": "generic", "binary": "$priv/bin/sbx-probe-vmm",
          "args": ["--report", "$priv/work/report-$2.json", "--exit-code", "7"]},
  "sandbox_dir": "$SANDBOX_ROOT/$2",
  "kernel": "$priv/images/vmlinux",
  "rootfs": "$priv/images/rootfs.ext4",
  "stop_timeout_ms": 5000,
  "ready_timeout_ms": 5000,
  "stdio": "null"
}
EOF
  chmod 0644 "$1"
}

step "run as $USER_IN (member of sbx): $SUPERVISOR run"
id_in=pkgtest-in-$$
write_spec "$priv/spec-in.json" "$id_in"
events=$priv/events-in.jsonl
# setpriv execs the supervisor: $! is the supervisor's pid (no shell function in between).
setpriv --reuid="$USER_IN" --regid=nogroup --init-groups \
  "$SUPERVISOR" run --spec "$priv/spec-in.json" >"$events" 2>"$priv/supervisor-in.log" &
supervisor_pid=$!
report=$priv/work/report-$id_in.json
for _ in $(seq 100); do
  [ -f "$report" ] && grep -q '"event":"ready"' "$events" && break
  kill -0 "$supervisor_pid" 2>/dev/null || break
  sleep 0.1
done
cat "$events"
[ -f "$report" ] || { cat "$priv/supervisor-in.log" >&2; fail "the probe VMM wrote no report"; }
check "event started" has "$events" '^\{"event":"started","id":"'"$id_in"'","pid":[0-9]+'
check "event ready" has "$events" '"event":"ready"'
check "the VMM runs as $USER_IN" has "$report" '"uid": ?'"$uid_in"','
check "the VMM has no effective capability" has "$report" '"cap_eff": ?"0+"'
check "the VMM has no permitted capability" has "$report" '"cap_prm": ?"0+"'
check "the VMM has no_new_privs" has "$report" '"no_new_privs": ?1[,}]'
check "the VMM has a seccomp filter" has "$report" '"seccomp_mode": ?2[,}]'
check "the VMM's cwd is its sandbox dir" has "$report" '"cwd": ?"'"$SANDBOX_ROOT/$id_in"'"'
kill -TERM "$supervisor_pid"
rc=0
wait "$supervisor_pid" || rc=$?
supervisor_pid=
cat "$events"
echo "sbx-supervisor exit status $rc; its stderr:"
cat "$priv/supervisor-in.log"
check "exit status is the VMM's (7)" test "$rc" -eq 7
check "event exited, outcome exited, code 7" \
  has "$events" '"event":"exited","id":"'"$id_in"'","outcome":"exited","code":7,'
check "the sandbox dir is removed" test ! -e "$SANDBOX_ROOT/$id_in"
check "no process of $USER_IN is left" not pgrep -u "$USER_IN"
check "no mount under $SANDBOX_ROOT on the host" not grep -qF " $SANDBOX_ROOT/" /proc/self/mountinfo

step "run as $USER_OUT (not in sbx): refused"
id_out=pkgtest-out-$$
write_spec "$priv/spec-out.json" "$id_out"
events=$priv/events-out.jsonl
rc=0
setpriv --reuid="$USER_OUT" --regid=nogroup --init-groups \
  "$SUPERVISOR" run --spec "$priv/spec-out.json" >"$events" 2>"$priv/supervisor-out.log" || rc=$?
cat "$events" "$priv/supervisor-out.log"
check "exit status 125" test "$rc" -eq 125
check "event exited: setup_failed at spawn_helper with EACCES (13)" \
  has "$events" '"outcome":"setup_failed","step":"spawn_helper","errno":13,'
check "no started event" not grep -qF '"event":"started"' "$events"
check "stderr names the step, the helper and the cause" \
  has "$priv/supervisor-out.log" "spawn_helper.*$HELPER.*Permission denied"
check "no sandbox dir was made" test ! -e "$SANDBOX_ROOT/$id_out"

step "put the package's policy back"
cp -p "$policy_saved" "$POLICY"
policy_saved=
check "dpkg --verify sbx: every file as shipped" test -z "$(dpkg --verify sbx)"

# --- Purge ---------------------------------------------------------------------------------------
step "apt-get purge sbx"
userdel "$USER_IN"
userdel "$USER_OUT"
rm -rf "$priv"
priv=
"${APT[@]}" purge sbx >"$work/apt-purge.log" 2>&1 ||
  { cat "$work/apt-purge.log" >&2; fail "apt-get purge failed"; }
rm -f "$INSTALLED_MARK"
grep -E '^(Removing|Purging)' "$work/apt-purge.log"
check "dpkg: sbx not installed" pkg_absent
for p in /usr/libexec/sbx /etc/sbx "$SANDBOX_ROOT" "$SUPERVISOR" /usr/lib/tmpfiles.d/sbx.conf \
  /usr/share/doc/sbx /usr/share/lintian/overrides/sbx /usr/share/man/man1/sbx-supervisor.1.gz \
  /usr/share/man/man8/sbx-nsexec.8.gz /usr/share/man/man5/sbx-nsexec.conf.5.gz; do
  check "gone: $p" test ! -e "$p"
done
check "gone: group sbx" not getent group sbx
check "gone: dpkg's files of sbx" not compgen -G '/var/lib/dpkg/info/sbx.*'
check "gone: the statoverride" not dpkg-statoverride --list "$HELPER"
# Runtime libraries apt pulled in for the package (none where scripts/install-deps.sh ran).
new=$(comm -13 "$work/packages-before.txt" <(installed_packages) |
  grep -xF -f <(apt-mark showauto) || true)
if [ -n "$new" ]; then
  echo "purging what apt installed as dependencies: $new"
  # shellcheck disable=SC2086
  "${APT[@]}" purge $new >/dev/null
fi
check "users, groups, subids and statoverrides as before" \
  diff -u "$work/before.txt" <(snapshot)
