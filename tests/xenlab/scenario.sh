#!/bin/sh
# The lab's scenarios, run in dom0 by dom0-init.sh: scenario.sh step1|step2|all.
# Prints XENLAB-OK <what> for each check passed, XENLAB-PASS <step> or
# XENLAB-FAIL <step>: <why> (followed by the logs that explain it).
# Every wait polls with a deadline: emulation speed varies.
what=${1:-all}
export ZCNET_HV=xen
# The lab's test programs (not packaged) with the libraries they were built
# against; zc-netback is the packaged one (installed with dpkg in step2).
bin=/opt/zcnet/bin
labenv="env LD_LIBRARY_PATH=/opt/zcnet/lib"
cons=/var/log/xen/console
step=boot

ok() { echo "XENLAB-OK $step: $*"; }
# To stderr: fail may run inside $(...). Both reach the console.
fail() {
  {
    echo "XENLAB-FAIL $step: $*"
    echo "---- xl list"; xl list 2>&1
    [ -n "${nb:-}" ] && { echo "---- zc-netback stats"; zc-netback stats --json 2>&1; }
    for f in /tmp/netback.log /tmp/xl-*.log "$cons"/guest-*.log; do
      [ -f "$f" ] && { echo "---- $f (tail)"; tail -n 40 "$f"; }
    done
    echo "---- xenstore"; xenstore-ls -f /local/domain/0/backend 2>&1 | head -80
  } >&2
  exit 1
}

# wait_for SECONDS DESCRIPTION COMMAND...: until COMMAND succeeds.
wait_for() {
  t=$1 d=$2; shift 2
  end=$(( $(date +%s) + t ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -ge "$end" ] && fail "timeout (${t}s) waiting for $d"
    sleep 0.5
  done
}

# domu NAME EXTRA [VIF]: a PV domU running the lab's busybox initramfs.
domu() {
  name=$1 extra=$2 vif=${3:-}
  cat >/tmp/$name.cfg <<EOF
type = "pv"
name = "$name"
kernel = "/opt/zcnet/domu/vmlinuz"
ramdisk = "/opt/zcnet/domu/initrd.gz"
extra = "console=hvc0 $extra"
memory = 192
vcpus = ${vcpus:-1}
on_crash = "preserve"
EOF
  [ -n "$vif" ] && echo "vif = [ '$vif' ]" >>/tmp/$name.cfg
  xl create /tmp/$name.cfg >/tmp/xl-$name.log 2>&1 || fail "xl create $name: $(cat /tmp/xl-$name.log)"
  xl domid "$name"
}

guest_says() { grep -q "$2" "$cons/guest-$1.log" 2>/dev/null; }
xs_is() { [ "$(xenstore-read "$1" 2>/dev/null)" = "$2" ]; }

step1() {
  step=step1
  a=$(domu lab1a "xenlab=peer") || exit 1
  b=$(domu lab1b "xenlab=peer") || exit 1
  ok "domUs created: A=dom$a B=dom$b"
  xenstore-write /local/domain/$a/data/xenlab-other "$b" /local/domain/$b/data/xenlab-other "$a"
  wait_for 300 "dom$a's grants" xs_is /local/domain/$a/data/xenlab/ready 1
  wait_for 300 "dom$b's grants" xs_is /local/domain/$b/data/xenlab/ready 1
  ok "both peers granted pages and offered event channels"
  XENLAB_A=$a XENLAB_B=$b $labenv $bin/test_xenlab_hv --gtest_color=no >/tmp/labtest.log 2>&1
  rc=$?
  cat /tmp/labtest.log
  [ $rc -eq 0 ] || fail "test_xenlab_hv failed (rc $rc)"
  ok "test_xenlab_hv: $(grep -c '^\[       OK \]' /tmp/labtest.log) tests passed"
  $labenv $bin/test_hv_xen --gtest_color=no --gtest_filter='HvXenReal.*:HvXenPrecheck.*:HvXenCopyBatch.*' >/tmp/hvxen.log 2>&1
  rc=$?
  cat /tmp/hvxen.log
  [ $rc -eq 0 ] || fail "test_hv_xen HvXenReal.* failed (rc $rc)"
  grep -q "SKIPPED" /tmp/hvxen.log && fail "HvXenReal tests skipped on a Xen host"
  ok "test_hv_xen HvXenReal.*: $(grep -c '^\[       OK \]' /tmp/hvxen.log) tests passed"
  xl destroy lab1a; xl destroy lab1b
  echo "XENLAB-PASS step1"
}

vif_connected() { # DOMID
  xs_is /local/domain/0/backend/vif/$1/0/state 4 && xs_is /local/domain/$1/device/vif/0/state 4
}
gntdev_maps() { grep -c /dev/xen/gntdev /proc/$1/maps; }
netback_alive() { kill -0 "$nb" 2>/dev/null || fail "zc-netback died"; }

step2() {
  step=step2
  [ -e /sys/module/xen_netback ] && fail "kernel xen-netback is loaded"
  # As an operator would: the runtime package with dpkg (dom0 is offline;
  # its image carries the package's dependencies, mkbase.sh).
  deb=$(ls /opt/zcnet/debs/zcnet_*.deb | head -1)
  dpkg -i "$deb" >/tmp/dpkg.log 2>&1 || { cat /tmp/dpkg.log >&2; fail "dpkg -i $deb"; }
  [ "$(command -v zc-netback)" = /usr/bin/zc-netback ] || fail "zc-netback not installed in /usr/bin: $(command -v zc-netback)"
  [ -x /etc/xen/scripts/vif-zcnet ] || fail "the package installed no /etc/xen/scripts/vif-zcnet"
  ok "installed $(dpkg-query -W -f='${Package} ${Version}' zcnet) with dpkg"
  # With no capability at all, as zc-netback.service runs it
  # (CapabilityBoundingSet= empty): root opens the Xen device nodes and
  # xenstored's socket as their owner, and Xen decides what dom0 may do.
  setpriv --bounding-set=-all --inh-caps=-all zc-netback run >/tmp/netback.log 2>&1 &
  nb=$!
  wait_for 60 "zc-netback's control socket" test -S /run/zcnet/netback.sock
  capeff=$(awk '/^CapEff/{print $2}' /proc/$nb/status)
  [ "$capeff" = 0000000000000000 ] || fail "zc-netback kept capabilities: CapEff $capeff"
  ok "zc-netback running (pid $nb) with no capabilities (CapEff $capeff)"
  vif=script=vif-zcnet
  # A has two vCPUs: Linux netfront then opens one queue per vCPU (queue-N
  # keys), so frames go from two queues to B's one. B keeps one vCPU: TCG
  # is slow enough.
  vcpus=2
  a=$(domu lab2a "xenlab=net role=a ip=10.0.0.1 peer=10.0.0.2" "mac=00:16:3e:5a:00:01,$vif") || exit 1
  vcpus=1
  b=$(domu lab2b "xenlab=net role=b ip=10.0.0.2 peer=10.0.0.1" "mac=00:16:3e:5a:00:02,$vif") || exit 1
  ok "domUs created: A=dom$a B=dom$b"
  wait_for 300 "dom$a's vif Connected on both ends" vif_connected $a
  wait_for 300 "dom$b's vif Connected on both ends" vif_connected $b
  ok "both vifs Connected (backend and frontend state 4)"
  # What libxl and the real netfront wrote, for comparison with the
  # emulated toolstack (zc-netback vif-add) and our userspace netfront.
  echo "---- dom$a frontend (libxl + xen-netfront)"; xenstore-ls -fp /local/domain/$a/device/vif/0
  echo "---- dom$a backend (libxl + zc-netback)"; xenstore-ls -fp /local/domain/0/backend/vif/$a/0
  wait_for 300 "A pings B" guest_says lab2a "XENLAB-DOMU-PING-OK"
  ok "A pings B: $(grep -a PING-OK $cons/guest-lab2a.log)"
  wait_for 300 "B pings A" guest_says lab2b "XENLAB-DOMU-PING-OK"
  ok "B pings A: $(grep -a PING-OK $cons/guest-lab2b.log)"
  # Progress, so that a stall shows where: the per-vif counters every 20 s.
  ( while sleep 20; do echo "stats: $(zc-netback stats --json)"; tail -n 3 /tmp/netback.log; done ) &
  mon=$!
  wait_for 600 "the bulk transfer A -> B" guest_says lab2b "XENLAB-DOMU-RX"
  kill $mon
  tx=$(grep -a "XENLAB-DOMU-TX " $cons/guest-lab2a.log | head -1 | awk '{print $2, $3}')
  rx=$(grep -a "XENLAB-DOMU-RX " $cons/guest-lab2b.log | head -1 | awk '{print $2, $3}')
  [ -n "$tx" ] && [ "$tx" = "$rx" ] || fail "bulk transfer mismatch: sent '$tx', received '$rx'"
  ok "bulk transfer A -> B intact: $rx (bytes md5)"
  netback_alive
  zc-netback stats
  maps_ab=$(gntdev_maps $nb)

  # Destroy A in the middle of a stream to B.
  n0=$(grep -ac STREAM-1M $cons/guest-lab2b.log)
  wait_for 300 "the stream A -> B" sh -c "[ \$(grep -ac STREAM-1M $cons/guest-lab2b.log) -ge $(( n0 + 1 )) ]"
  xl destroy lab2a || fail "xl destroy lab2a"
  ok "A (dom$a) destroyed during a transfer"
  wait_for 120 "dom$a gone from xl list (no zombie holding grants)" sh -c "! xl list | awk '{print \$2}' | grep -qx $a"
  wait_for 120 "zc-netback to tear dom$a's vif down" sh -c "! xenstore-read /local/domain/0/backend/vif/$a/0/state"
  sleep 1
  netback_alive
  ok "zc-netback survived; teardown: $(grep -a "vif $a/0: \(disconnected\|removed\)" /tmp/netback.log | sed 's/^zcnet\[[0-9]*\] //' | tr '\n' '|')"
  maps_b=$(gntdev_maps $nb)
  [ "$maps_b" -lt "$maps_ab" ] || fail "gntdev mappings did not shrink after A's teardown ($maps_ab -> $maps_b)"
  ok "gntdev mappings in zc-netback: $maps_ab with A and B, $maps_b with B alone"
  xs_is /local/domain/0/backend/vif/$b/0/state 4 || fail "B's vif left Connected"

  # A comes back and reconnects; B answers.
  vcpus=2
  a2=$(domu lab2a2 "xenlab=net role=a2 ip=10.0.0.1 peer=10.0.0.2" "mac=00:16:3e:5a:00:01,$vif") || exit 1
  wait_for 300 "the new A (dom$a2) Connected" vif_connected $a2
  wait_for 300 "the new A pings B" guest_says lab2a2 "XENLAB-DOMU-PING-OK"
  ok "A re-created as dom$a2, reconnected, pings B: $(grep -a PING-OK $cons/guest-lab2a2.log)"
  maps_ab2=$(gntdev_maps $nb)
  [ "$maps_ab2" -eq "$maps_ab" ] || ok "note: gntdev mappings $maps_ab2 now vs $maps_ab before"
  netback_alive
  zc-netback stats
  xl destroy lab2a2; xl destroy lab2b
  wait_for 120 "all vifs torn down" sh -c "[ -z \"\$(xenstore-list /local/domain/0/backend/vif 2>/dev/null)\" ]"
  wait_for 60 "zc-netback to unmap everything" sh -c "[ \$(grep -c /dev/xen/gntdev /proc/$nb/maps) -eq 0 ]"
  ok "no grant mapping left in zc-netback after both guests are gone"
  kill $nb; wait $nb
  echo "---- zc-netback log (tail)"; tail -n 30 /tmp/netback.log
  echo "XENLAB-PASS step2"
}

case "$what" in
step1) step1 ;;
step2) step2 ;;
all) step1 && step2 ;;
esac
