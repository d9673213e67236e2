#!/bin/sh
# systemd-analyze verify on the installed units: the runtime component is
# installed into a scratch root and verified there (--root), so ExecStart
# names binaries that exist. Exit 77 (skip) without systemd-analyze.
# Usage: check_units.sh BUILD_DIR
set -eu
build=$1
command -v systemd-analyze >/dev/null || { echo "systemd-analyze not installed" >&2; exit 77; }
unitdir=$(sed -n 's/^ZCNET_SYSTEMD_UNITDIR:PATH=//p' "$build/CMakeCache.txt")
root=$(mktemp -d /tmp/zcnet-units.XXXXXX)
trap 'rm -rf "$root"' EXIT
DESTDIR=$root cmake --install "$build" --prefix /usr --component runtime >/dev/null
for u in zc-netback.service zc-stackd@.service; do
  [ -f "$root$unitdir/$u" ] || { echo "$u not installed into $unitdir" >&2; exit 1; }
done
# The units they depend on (targets, slices) come from this machine's systemd.
for f in /lib/systemd/system/*.target /lib/systemd/system/*.slice /lib/systemd/system/*.mount; do
  [ -e "$root$unitdir/${f##*/}" ] || cp -P "$f" "$root$unitdir/" 2>/dev/null || true
done
# verify needs an instance for a template; its binary paths are checked
# under the root. The man pages are checked by the man_pages test.
cp "$root$unitdir/zc-stackd@.service" "$root$unitdir/zc-stackd@test.service"
out=$(SYSTEMD_LOG_LEVEL=notice systemd-analyze verify --man=no --root="$root" \
  "$root$unitdir/zc-netback.service" "$root$unitdir/zc-stackd@test.service" 2>&1) || {
  echo "$out"; exit 1; }
# verify reports some problems without failing: any output about our units fails.
if printf '%s\n' "$out" | grep -E 'zc-netback|zc-stackd' ; then exit 1; fi
echo "units verified"
