#!/usr/bin/env bash
# The Debian packages in a clean root: cpack builds zcnet and libzcnet-dev,
# a debootstrap'd root installs them with dpkg, uses them (zc-netback --help,
# pkg-config, a C program against zc.h, a find_package(zcnet) consumer), then
# purges them and checks that nothing they installed is left behind.
#
# The base root is built once per suite and include list and cached as a
# tarball in ${ZCNET_PKGTEST_CACHE:-/var/cache/zcnet-pkgtest} (like
# tests/xenlab caches its images); every run unpacks a fresh copy. The
# packages' run-time Depends are pre-seeded in that root; apt inside the root
# (apt-get satisfy, with the suite's updates and security sources) brings
# them up to the versions this build needs before dpkg -i installs zcnet.
#
# Usage: ZCNET_PKGTEST=1 pkgtest.sh BUILD_DIR. Exit 77 (skip) unless
# ZCNET_PKGTEST=1 (it needs the network once and writes the cache; .ci/run
# enables it), when not root, or when cpack/dpkg-deb are missing, or
# debootstrap is missing and no cached root exists.
set -euo pipefail
build=$(cd "${1:?usage: pkgtest.sh BUILD_DIR}" && pwd)
suite=${ZCNET_PKGTEST_SUITE:-bookworm}
mirror=${ZCNET_PKGTEST_MIRROR:-http://deb.debian.org/debian}
cache=${ZCNET_PKGTEST_CACHE:-/var/cache/zcnet-pkgtest}
# What the root holds besides minbase: the consumer's tools and zcnet's
# run-time libraries (Depends of the zcnet package on Debian 12).
include=pkg-config,gcc,libc6-dev,make,cmake,libxengnttab1,libxenevtchn1,libxenstore4,libsystemd0

log() { echo "pkgtest: $*" >&2; }
skip() { log "SKIP: $*"; exit 77; }
fail() { log "FAIL: $*"; exit 1; }

[ "${ZCNET_PKGTEST:-0}" = 1 ] || skip "set ZCNET_PKGTEST=1 to build, install and purge the packages"
[ "$(id -u)" -eq 0 ] || skip "needs root (chroot, dpkg in a root)"
for t in cpack dpkg-deb chroot tar; do
  command -v "$t" >/dev/null || skip "$t not installed"
done

key="$suite minbase+updates+security $include"
tarball=$cache/$suite-$(printf '%s' "$key" | sha256sum | cut -c1-16).tar.gz

work=$(mktemp -d /tmp/zcnet-pkgtest.XXXXXX)
root=$work/root
cleanup() {
  local rc=$?
  for m in proc dev; do
    mountpoint -q "$root/$m" 2>/dev/null && umount -l "$root/$m"
  done
  rm -rf --one-file-system "$work"
  exit $rc
}
trap cleanup EXIT
trap 'log "FAIL: line $LINENO exited $?"' ERR
trap 'exit 130' INT TERM

# ---- 1. the packages -----------------------------------------------------------------------
t0=$(date +%s)
log "cpack -G DEB in $build"
(cd "$build" && cpack -G DEB -B "$work/debs" >"$work/cpack.log" 2>&1) ||
  { tail -30 "$work/cpack.log" >&2; fail "cpack"; }
rt=$(ls "$work"/debs/zcnet_*.deb 2>/dev/null | head -1)
dev=$(ls "$work"/debs/libzcnet-dev_*.deb 2>/dev/null | head -1)
[ -f "$rt" ] && [ -f "$dev" ] || fail "cpack made no zcnet / libzcnet-dev package: $(ls "$work/debs")"
dpkg-deb -f "$dev" Depends | grep -q 'zcnet (= ' || fail "libzcnet-dev does not depend on its zcnet"
for d in libxengnttab1 libxenevtchn1 libxenstore4 libsystemd0 libc6; do
  dpkg-deb -f "$rt" Depends | grep -q "$d" || fail "zcnet's Depends lack $d: $(dpkg-deb -f "$rt" Depends)"
done
# lintian: no errors (warnings are allowed and printed).
if command -v lintian >/dev/null; then
  lintian --tag-display-limit 0 "$rt" "$dev" >"$work/lintian.log" 2>&1 || true
  grep -E '^[WE]: ' "$work/lintian.log" >&2 || true
  if grep -q '^E: ' "$work/lintian.log"; then fail "lintian reports errors"; fi
  grep -qE '^(E|W|I|N): |^$' "$work/lintian.log" || [ ! -s "$work/lintian.log" ] ||
    grep -q 'root privileges' "$work/lintian.log" || { cat "$work/lintian.log" >&2; fail "lintian did not run"; }
else
  log "lintian not installed: not checked"
fi

# ---- 2. the clean root ---------------------------------------------------------------------
if [ ! -f "$tarball" ]; then
  command -v debootstrap >/dev/null || skip "debootstrap not installed and no cached root $tarball"
  log "debootstrap $suite into the cache (once; a few minutes)"
  mkdir -p "$cache"
  debootstrap --variant=minbase --include="$include" "$suite" "$work/base" "$mirror" \
    >"$work/debootstrap.log" 2>&1 || { tail -30 "$work/debootstrap.log" >&2; fail "debootstrap"; }
  cat >"$work/base/etc/apt/sources.list" <<SRC
deb $mirror $suite main
deb $mirror $suite-updates main
deb http://security.debian.org/debian-security $suite-security main
SRC
  cp /etc/resolv.conf "$work/base/etc/resolv.conf"
  chroot "$work/base" sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get -y -qq upgrade' \
    >>"$work/debootstrap.log" 2>&1 || { tail -30 "$work/debootstrap.log" >&2; fail "apt upgrade in the new root"; }
  chroot "$work/base" apt-get clean
  tar -C "$work/base" -czf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
  rm -rf --one-file-system "$work/base"
fi
mkdir "$root"
tar -C "$root" -xzf "$tarball"
mount -t proc proc "$root/proc"
mount --bind /dev "$root/dev"
in_root() { chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"; }
# zcnet's Depends, from the root's apt: offline when the cached root already
# satisfies them, else after apt-get update (this host's libraries may be
# newer than the cache).
cp /etc/resolv.conf "$root/etc/resolv.conf"
deps=$(dpkg-deb -f "$rt" Depends)
if ! in_root apt-get satisfy -y -qq --no-install-recommends "$deps" >"$work/apt.log" 2>&1; then
  log "the cached root lacks zcnet's Depends at these versions: apt-get update"
  in_root sh -c 'apt-get update -qq && apt-get satisfy -y -qq --no-install-recommends "$1"' sh "$deps" \
    >>"$work/apt.log" 2>&1 || { cat "$work/apt.log" >&2; fail "apt-get satisfy '$deps' in the root"; }
fi
# Every file and directory in the root before zcnet, to compare after the purge.
snapshot() { (cd "$root" && find . -xdev \( -path ./proc -o -path ./dev -o -path ./tmp -o -path ./var/lib/dpkg -o -path ./var/log -o -path ./var/cache \) -prune -o -print | LC_ALL=C sort); }
snapshot >"$work/before"

# ---- 3. install ----------------------------------------------------------------------------
cp "$rt" "$dev" "$root/tmp/"
log "dpkg -i $(basename "$rt") $(basename "$dev")"
in_root dpkg -i "/tmp/$(basename "$rt")" "/tmp/$(basename "$dev")" >"$work/dpkg.log" 2>&1 ||
  { cat "$work/dpkg.log" >&2; fail "dpkg -i"; }
in_root dpkg -L zcnet libzcnet-dev | LC_ALL=C sort -u >"$work/listed"
for f in /usr/bin/zc-netback /usr/bin/zc-stackd /etc/xen/scripts/vif-zcnet /usr/include/zc.h \
         /lib/systemd/system/zc-netback.service /lib/systemd/system/zc-stackd@.service \
         /usr/share/man/man8/zc-netback.8.gz /usr/share/man/man3/zc_socket.3.gz; do
  grep -qx "$f" "$work/listed" || fail "$f is not in dpkg -L"
  [ -e "$root$f" ] || fail "$f listed but not installed"
done

# ---- 4. use --------------------------------------------------------------------------------
in_root zc-netback --help >"$work/help" || fail "zc-netback --help exited $?"
grep -q '^usage: zc-netback' "$work/help" || fail "zc-netback --help printed no usage"
flags=$(in_root pkg-config --cflags --libs zcnet) || fail "pkg-config --cflags --libs zcnet"
log "pkg-config: $flags"
case " $flags " in *" -lzcnet "*) ;; *) fail "pkg-config gives no -lzcnet: $flags" ;; esac
mkdir "$root/tmp/consumer"
cat >"$root/tmp/consumer/main.c" <<'C'
#include <stdio.h>
#include <string.h>
#include <zc.h>
int main(void) {
    const char* v = zc_version();
    if (!v || !*v) return 1;
    printf("zc_version %s\n", v);
    return 0;
}
C
in_root sh -c 'cd /tmp/consumer && cc -Wall -Werror -o c-consumer main.c $(pkg-config --cflags --libs zcnet)' ||
  fail "a C program against the installed zc.h and -lzcnet does not build"
in_root /tmp/consumer/c-consumer >"$work/c.out" || fail "the C consumer exited $?"
grep -q '^zc_version ' "$work/c.out" || fail "the C consumer printed nothing"
cat >"$root/tmp/consumer/CMakeLists.txt" <<'CM'
cmake_minimum_required(VERSION 3.25)
project(consumer LANGUAGES C)
find_package(zcnet 0.1 REQUIRED)
add_executable(cmake-consumer main.c)
target_link_libraries(cmake-consumer PRIVATE zcnet::zcnet)
CM
in_root sh -c 'cd /tmp/consumer && cmake -S . -B b >/dev/null && cmake --build b >/dev/null && ./b/cmake-consumer' >"$work/cm.out" ||
  fail "the find_package(zcnet) consumer does not configure, build or run"
grep -q '^zc_version ' "$work/cm.out" || fail "the CMake consumer printed nothing"
rm -rf "$root/tmp/consumer"

# ---- 5. purge ------------------------------------------------------------------------------
in_root dpkg --purge libzcnet-dev zcnet >"$work/purge.log" 2>&1 || { cat "$work/purge.log" >&2; fail "dpkg --purge"; }
left=""
while read -r f; do
  case $f in ""|/.) continue ;; esac
  [ -e "$root$f" ] || [ -L "$root$f" ] || continue
  # What was there before zcnet (/usr/bin, /lib -> usr/lib on a merged-/usr
  # root, ...) stays; the path is compared in its canonical form.
  canon=$(in_root readlink -m "$f")
  grep -qx ".$canon" "$work/before" && continue
  left+=" $f"
done <"$work/listed"
[ -z "$left" ] || fail "left behind after purge:$left"
snapshot >"$work/after"
if ! diff -u "$work/before" "$work/after" >"$work/diff"; then
  cat "$work/diff" >&2
  fail "the root differs from before the install"
fi
log "ok: installed, used and purged cleanly in $(( $(date +%s) - t0 )) s"
