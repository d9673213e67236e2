#!/bin/sh
# scripts/zc-xen-guest against a stand-in for a guest's /sys, /dev and /run
# (ZC_XEN_GUEST_ROOT): each check it makes refuses what it must, with a
# message naming the fix, and a ready guest gets
# `ZCNET_HV=xen zc-stackd run --devid N OPTIONS` (a stand-in zc-stackd
# prints what it was given). The real thing runs in tests/xenlab step 4.
# Needs root for the device nodes (mknod); exits 77 (skip) otherwise.
# Usage: zc_xen_guest_test.sh SCRIPT
script=$1
[ "$(id -u)" = 0 ] || { echo "needs root (mknod)"; exit 77; }
t=$(mktemp -d /tmp/zc-xen-guest-test.XXXXXX)
trap 'rm -rf "$t"' EXIT
fails=0
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }

# A ready guest: the modules loaded, the nodes, vif-0 with no driver.
ready() {
  rm -rf "$t/root" && mkdir -p "$t/root/sys/bus/xen/devices/vif-0" "$t/root/dev/xen" "$t/root/run"
  for m in xen_evtchn xen_gntalloc xen_gntdev; do mkdir -p "$t/root/sys/module/$m/parameters"; done
  echo 1024 >"$t/root/sys/module/xen_gntalloc/parameters/limit"
  minor=200
  for d in evtchn gntalloc gntdev xenbus; do mknod "$t/root/dev/xen/$d" c 10 $minor; minor=$((minor + 1)); done
}
# A zc-stackd and a modprobe of our own, first in PATH.
mkdir -p "$t/bin"
printf '#!/bin/sh\necho "ZCNET_HV=$ZCNET_HV zc-stackd $*"\n' >"$t/bin/zc-stackd"
printf '#!/bin/sh\necho "modprobe $*" >>%s/modprobe.log\nexit 1\n' "$t" >"$t/bin/modprobe"
chmod 755 "$t/bin/zc-stackd" "$t/bin/modprobe"
run() { ZC_XEN_GUEST_ROOT=$t/root PATH=$t/bin:$PATH sh "$script" "$@" >"$t/out" 2>&1; }
# expect_refusal WHAT PATTERN ARGS...: exit 1 and PATTERN in the message.
expect_refusal() {
  what=$1 pat=$2; shift 2
  run "$@"
  rc=$?
  [ $rc = 1 ] || bad "$what: exit $rc, not 1: $(cat "$t/out")"
  grep -q "$pat" "$t/out" || bad "$what: no '$pat' in: $(cat "$t/out")"
}

ready
run --check || bad "a ready guest: $(cat "$t/out")"
[ -d "$t/root/run/zcnet" ] || bad "no /run/zcnet made"
grep -q "zc-stackd" "$t/out" || bad "--check says nothing: $(cat "$t/out")"
grep -q "^ZCNET_HV=" "$t/out" && bad "--check started zc-stackd"

ready
run --devid 0 -- --ip 10.0.0.1 --netmask 255.255.255.0 || bad "start: $(cat "$t/out")"
grep -qx "ZCNET_HV=xen zc-stackd run --devid 0 --ip 10.0.0.1 --netmask 255.255.255.0" "$t/out" ||
  bad "zc-stackd was not started as expected: $(cat "$t/out")"

ready
rm "$t/root/dev/xen/xenbus"
expect_refusal "no /dev/xen/xenbus" "/dev/xen/xenbus is missing" --check

ready
rm "$t/root/dev/xen/gntalloc"
: >"$t/root/dev/xen/gntalloc" # a file, not the device
expect_refusal "gntalloc not a device" "/dev/xen/gntalloc is missing" --check

ready
mkdir -p "$t/root/sys/bus/xen/drivers/vif"
ln -s ../../drivers/vif "$t/root/sys/bus/xen/devices/vif-0/driver"
expect_refusal "vif driven by xen-netfront" "blacklist xen-netfront" --check

ready
expect_refusal "no such vif" "no vif-1" --devid 1 --check

ready
echo 256 >"$t/root/sys/module/xen_gntalloc/parameters/limit"
expect_refusal "gntalloc's limit too low" "limit is 256" --check

ready
rm -r "$t/root/sys/module/xen_gntdev"
: >"$t/modprobe.log"
expect_refusal "xen-gntdev cannot be loaded" "cannot load xen-gntdev" --check
grep -qx "modprobe xen-gntdev" "$t/modprobe.log" || bad "modprobe was not asked for xen-gntdev: $(cat "$t/modprobe.log")"

ready
rm -r "$t/root/sys/bus/xen"
expect_refusal "not a Xen guest" "not a Xen guest" --check

ready
run --devid x --check
rc=$?
[ $rc = 2 ] && grep -q "wants a number" "$t/out" || bad "--devid x: exit $rc: $(cat "$t/out")"
[ "$fails" = 0 ] && echo "zc-xen-guest: all checks behave" && exit 0
exit 1
