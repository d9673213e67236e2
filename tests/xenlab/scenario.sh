#!/bin/sh
# The lab's scenarios, run in dom0 by dom0-init.sh: scenario.sh step1|step2|step3|step4|all.
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
    [ -n "${nb:-}" ] && { echo "---- zc-netback stats"; zc-netback stats 2>&1; zc-netback stats --json 2>&1; }
    for f in /tmp/netback.log /tmp/xl-*.log "$cons"/guest-*.log /tmp/iperf3-server.log; do
      [ -f "$f" ] && { echo "---- $f (tail)"; tail -n 40 "$f"; }
    done
    echo "---- xenstore"; xenstore-ls -f /local/domain/0/backend 2>&1 | head -80
  } >&2
  [ "$step" = step3 ] && step3_cleanup
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

# As an operator would: the runtime package with dpkg (dom0 is offline;
# its image carries the package's dependencies, mkbase.sh). Once per boot.
install_zcnet() {
  if ! dpkg-query -W zcnet >/dev/null 2>&1; then
    deb=$(ls /opt/zcnet/debs/zcnet_*.deb | head -1)
    dpkg -i "$deb" >/tmp/dpkg.log 2>&1 || { cat /tmp/dpkg.log >&2; fail "dpkg -i $deb"; }
  fi
  [ "$(command -v zc-netback)" = /usr/bin/zc-netback ] || fail "zc-netback not installed in /usr/bin: $(command -v zc-netback)"
  [ -x /etc/xen/scripts/vif-zcnet ] || fail "the package installed no /etc/xen/scripts/vif-zcnet"
  ok "installed $(dpkg-query -W -f='${Package} ${Version}' zcnet) with dpkg"
}

step2() {
  step=step2
  [ -e /sys/module/xen_netback ] && fail "kernel xen-netback is loaded"
  install_zcnet
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

# Step 3's network: the guests' subnet 10.0.0.0/24, the host side 10.0.0.100
# in a network namespace behind a veth pair whose near end is zc-netback's
# uplink (docs/ARCHITECTURE.md, "Uplinks").
ns=xenlab-uplink near=zcup0 far=zcup1 hostip=10.0.0.100
inns() { ip netns exec "$ns" "$@"; }
# uplink_counter NAME: the uplink's counter NAME from zc-netback stats --json.
uplink_counter() {
  zc-netback stats --json | sed 's/.*"uplinks":\[//' | tr ',' '\n' | sed -n "s/^\"$1\":\([0-9]*\).*/\1/p" | head -1
}
# uplink_mode: the XDP mode zc-netback obtained on the uplink (fails if none).
uplink_mode() {
  zc-netback stats --json 2>/dev/null | sed -n 's/.*"uplinks":\[{"ifname":"'"$near"'","xdp_mode":"\([a-z]*\)".*/\1/p' | grep .
}
# streamed_1m: MiB guest G has streamed to guest U so far.
streamed_1m() { grep -ac XENLAB-DOMU-STREAM-1M "$cons/guest-lab3u.log"; }
# iperf_field DIR N: field N of U's XENLAB-DOMU-IPERF-DIR line
# ("rc=R BYTES UNIT RATE Mbits/sec").
iperf_field() { grep -a "XENLAB-DOMU-IPERF-$1 " "$cons/guest-lab3u.log" | head -1 | tr -d '\r' | awk -v n="$2" '{print $n}'; }
step3_cleanup() {
  kill ${iperfd:-} ${upl:-} 2>/dev/null
  ip netns del "$ns" 2>/dev/null
  ip link del "$near" 2>/dev/null
}

step3() {
  step=step3 nb=
  [ -e /sys/module/xen_netback ] && fail "kernel xen-netback is loaded"
  install_zcnet
  modprobe veth || fail "modprobe veth"
  ip netns add "$ns" || fail "ip netns add $ns"
  ip link add "$near" type veth peer name "$far" netns "$ns" || { step3_cleanup; fail "ip link add $near (veth)"; }
  ip link set "$near" up
  inns ip link set lo up
  inns ip addr add "$hostip/24" dev "$far"
  inns ip link set "$far" up
  # The kernel hands its own frames to a veth checksum-partial and AF_XDP
  # carries no checksum metadata: the far end computes its checksums, as a
  # NIC does before the wire (docs/ARCHITECTURE.md, "Checksums from the
  # host over veth").
  inns ethtool -K "$far" tx off >/tmp/ethtool.log 2>&1 || { step3_cleanup; fail "ethtool -K $far tx off: $(cat /tmp/ethtool.log)"; }
  inns iperf3 -s --forceflush >/tmp/iperf3-server.log 2>&1 &
  iperfd=$!
  # Where U sends 4 MiB once its iperf3 runs are done. busybox nc
  # half-closes when its stdin ends: the listener's stdin is a FIFO held
  # open (as in domu-init.sh).
  mkfifo /tmp/hold3
  exec 5<>/tmp/hold3
  : >/tmp/up-rx
  inns busybox nc -l -p 5002 <&5 >/tmp/up-rx &
  upl=$!
  ok "namespace $ns: $far $hostip (tx checksum offload off), iperf3 server; uplink $near in dom0"
  # With only what an uplink needs (zc-netback(8), the uplink's drop-in):
  # CAP_NET_ADMIN, CAP_NET_RAW, CAP_IPC_LOCK, CAP_BPF = bits 12, 13, 14, 39.
  setpriv --bounding-set=-all,+net_admin,+net_raw,+ipc_lock,+bpf --inh-caps=-all \
    zc-netback run --uplink "$near" >/tmp/netback.log 2>&1 &
  nb=$!
  wait_for 60 "zc-netback's control socket" test -S /run/zcnet/netback.sock
  capeff=$(awk '/^CapEff/{print $2}' /proc/$nb/status)
  [ "$capeff" = 0000008000007000 ] || fail "zc-netback's capabilities: CapEff $capeff, not the uplink's four (0000008000007000)"
  wait_for 60 "zc-netback stats to show the uplink $near" uplink_mode
  mode=$(uplink_mode)
  ip link show "$near" | grep -q "prog/xdp" || fail "no XDP program on $near: $(ip link show $near)"
  ok "zc-netback running (pid $nb, CapEff $capeff), uplink $near in XDP mode $mode: $(ip link show $near | grep -o 'prog/xdp id [0-9]*')"

  # One vCPU each: TCG is slow enough (step 2 covers two netfront queues).
  vif=script=vif-zcnet vcpus=1
  u=$(domu lab3u "xenlab=net role=u ip=10.0.0.1 peer=10.0.0.2 host=$hostip" "mac=00:16:3e:5a:00:11,$vif") || exit 1
  g=$(domu lab3g "xenlab=net role=g ip=10.0.0.2 peer=10.0.0.1" "mac=00:16:3e:5a:00:12,$vif") || exit 1
  ok "domUs created: U=dom$u (to the host) G=dom$g (streams to U)"
  wait_for 300 "dom$u's vif Connected on both ends" vif_connected $u
  wait_for 300 "dom$g's vif Connected on both ends" vif_connected $g
  ok "both vifs Connected"
  wait_for 300 "U pings the namespace" guest_says lab3u "XENLAB-DOMU-PING-OK u -> $hostip"
  ok "U pings the namespace: $(grep -a "PING-OK u" $cons/guest-lab3u.log | tr -d '\r')"
  inns busybox ping -c 3 -W 2 10.0.0.1 >/tmp/nsping.log 2>&1 || fail "the namespace does not ping U: $(cat /tmp/nsping.log)"
  ok "the namespace pings U: $(grep -c 'bytes from' /tmp/nsping.log) replies"
  wait_for 300 "G pings U" guest_says lab3g "XENLAB-DOMU-PING-OK g"
  ok "G pings U (guest to guest): $(grep -a "PING-OK g" $cons/guest-lab3g.log | tr -d '\r')"

  # iperf3 U -> namespace and namespace -> U (-R), while G streams to U.
  ( while sleep 20; do echo "stats: $(zc-netback stats)"; done ) &
  mon=$!
  wait_for 600 "U's iperf3 runs" guest_says lab3u "XENLAB-DOMU-IPERF-END"
  kill $mon
  for d in UP DOWN; do
    rc=$(iperf_field $d 2) mbit=$(iperf_field $d 5)
    [ "$rc" = rc=0 ] || fail "iperf3 $d failed ($rc): $(grep -a "IPERF-$d" $cons/guest-lab3u.log)"
    awk -v m="$mbit" 'BEGIN{exit !(m > 0)}' || fail "iperf3 $d moved nothing: $(grep -a "IPERF-$d" $cons/guest-lab3u.log)"
  done
  ok "iperf3 TCP U -> namespace: $(iperf_field UP 3) $(iperf_field UP 4) at $(iperf_field UP 5) Mbit/s (TCG emulation, not a performance figure)"
  ok "iperf3 TCP namespace -> U (-R): $(iperf_field DOWN 3) $(iperf_field DOWN 4) at $(iperf_field DOWN 5) Mbit/s (TCG emulation, not a performance figure)"
  during=$(grep -a "XENLAB-DOMU-IPERF-END" $cons/guest-lab3u.log | head -1 | tr -d '\r' | sed 's/.*streamed=//')
  [ "${during:-0}" -ge 1 ] 2>/dev/null || fail "guest-to-guest stream G -> U stalled during iperf3 (${during:-?} MiB)"
  ok "guest to guest at the same time: G streamed $during MiB to U during the iperf3 runs"

  # 4 MiB U -> namespace (the listener started with the namespace), md5 compared.
  wait_for 300 "4 MiB from U at the namespace" sh -c '[ $(wc -c </tmp/up-rx) -ge 4194304 ]'
  sleep 1
  kill $upl; upl=
  exec 5>&-
  tx=$(grep -a "XENLAB-DOMU-TX " $cons/guest-lab3u.log | head -1 | tr -d '\r' | awk '{print $2, $3}')
  rx="$(wc -c </tmp/up-rx) $(md5sum </tmp/up-rx | cut -d' ' -f1)"
  [ -n "$tx" ] && [ "$tx" = "$rx" ] || fail "4 MiB U -> namespace mismatch: sent '$tx', received '$rx'"
  ok "4 MiB U -> namespace intact: $rx (bytes md5)"

  # The guest's real TCP stack sent checksum-blank and GSO frames, and
  # zc-netback completed and segmented them before the wire; the
  # namespace's TCP saw no bad checksum.
  csum=$(uplink_counter csum_completed) gso=$(uplink_counter gso_frames) segs=$(uplink_counter gso_segments)
  [ "${csum:-0}" -gt 0 ] || fail "uplink csum_completed is ${csum:-missing}: no checksum-blank guest frame reached the wire"
  [ "${gso:-0}" -gt 0 ] && [ "${segs:-0}" -gt "${gso:-0}" ] || fail "uplink gso_frames ${gso:-missing}, gso_segments ${segs:-missing}: no GSO frame segmented"
  for c in drop_gso drop_bad_csum drop_oversize drop_copy_error; do
    [ "$(uplink_counter $c)" = 0 ] || fail "uplink $c is $(uplink_counter $c)"
  done
  bad=$(inns awk '/^Tcp:/{if (h) {print $NF; exit} h=1}' /proc/net/snmp)
  [ "$bad" = 0 ] || fail "the namespace's TCP counted $bad InCsumErrors"
  ok "uplink completed $csum checksums, segmented $gso GSO frames into $segs; the namespace's TCP InCsumErrors $bad"

  # Guest to guest still flows after all that.
  n0=$(streamed_1m)
  wait_for 120 "G's stream to U to go on" sh -c "[ \$(grep -ac XENLAB-DOMU-STREAM-1M $cons/guest-lab3u.log) -gt $n0 ]"
  ok "G -> U stream still flowing ($(streamed_1m) MiB in all)"
  netback_alive
  echo "---- U's iperf3 runs and TCP counters"
  grep -a "Mbits/sec\|XENLAB-DOMU-IPERF\|Tcp:" $cons/guest-lab3u.log | tr -d '\r'
  echo "---- the namespace's iperf3 server"; cat /tmp/iperf3-server.log
  echo "---- the namespace's TCP counters"; inns grep ^Tcp: /proc/net/snmp
  echo "---- zc-netback stats (end of step3)"
  zc-netback stats
  zc-netback stats --json

  xl destroy lab3u; xl destroy lab3g
  wait_for 120 "all vifs torn down" sh -c "[ -z \"\$(xenstore-list /local/domain/0/backend/vif 2>/dev/null)\" ]"
  kill $nb; wait $nb
  ip link show "$near" | grep -q "prog/xdp" && fail "zc-netback left its XDP program on $near: $(ip link show $near)"
  ok "zc-netback stopped; no XDP program left on $near"
  echo "---- zc-netback log (tail)"; tail -n 30 /tmp/netback.log
  step3_cleanup
  echo "XENLAB-PASS step3"
}

# Step 4: the zc socket API inside real guests (lab.sh's header). A and C
# run zc-stackd on our userspace netfront (xenlab=zc, domu-zc.sh), B the
# kernel's netfront with kernel UDP sockets (role zb, domu-init.sh).
# wait_marker GUEST SECONDS WHAT: until GUEST's console shows the
# extended regex WHAT; fails at once on a XENLAB-ZC-FAIL of that guest.
wait_marker() {
  g=$1 t=$2 m=$3
  end=$(( $(date +%s) + t ))
  until grep -aqE "$m" "$cons/guest-$g.log" 2>/dev/null; do
    grep -aq "XENLAB-ZC-FAIL" "$cons/guest-$g.log" 2>/dev/null && fail "$g: $(grep -a XENLAB-ZC-FAIL "$cons/guest-$g.log" | head -1)"
    [ "$(date +%s)" -ge "$end" ] && fail "timeout (${t}s) waiting for $g: $m"
    sleep 1
  done
}
said() { grep -aE "$2" "$cons/guest-$1.log" | head -1 | tr -d '\r'; }
# served_runs: C's runs to A that A's zc-perf server answered, verified.
served_runs() { grep -acE "XENLAB-ZC-PERF CA-stream rc=0 received=[1-9]" "$cons/guest-lab4c.log"; }

step4() {
  step=step4
  [ -e /sys/module/xen_netback ] && fail "kernel xen-netback is loaded"
  install_zcnet
  setpriv --bounding-set=-all --inh-caps=-all zc-netback run >/tmp/netback.log 2>&1 &
  nb=$!
  wait_for 60 "zc-netback's control socket" test -S /run/zcnet/netback.sock
  vif=script=vif-zcnet vcpus=1
  a=$(domu lab4a "xenlab=zc role=za ip=10.0.0.1 peer=10.0.0.2 other=10.0.0.3" "mac=00:16:3e:5a:00:21,$vif") || exit 1
  b=$(domu lab4b "xenlab=net role=zb ip=10.0.0.2 peer=10.0.0.1" "mac=00:16:3e:5a:00:22,$vif") || exit 1
  c=$(domu lab4c "xenlab=zc role=zc ip=10.0.0.3 peer=10.0.0.1" "mac=00:16:3e:5a:00:23,$vif") || exit 1
  ok "domUs created: A=dom$a (zc-stackd) B=dom$b (kernel netfront) C=dom$c (zc-stackd)"
  for d in $a $b $c; do wait_for 300 "dom$d's vif Connected on both ends" vif_connected $d; done
  ok "three vifs Connected; A's and C's frontends are zc-stackd's netfront: $(xenstore-read /local/domain/$a/device/vif/0/feature-sg 2>/dev/null) sg"
  wait_marker lab4a 300 "XENLAB-ZC-STACKD-UP"
  wait_marker lab4c 300 "XENLAB-ZC-STACKD-UP"
  ok "zc-stackd in A and C: $(said lab4a XENLAB-ZC-STACKD-UP) | $(said lab4c XENLAB-ZC-STACKD-UP)"
  ok "A's pool export: $(said lab4a XENLAB-ZC-POOL)"
  wait_for 300 "B pings A's zc-stackd" guest_says lab4b "XENLAB-DOMU-PING-OK"
  ok "B pings A's stack: $(said lab4b PING-OK)"
  wait_marker lab4b 300 "XENLAB-ECHO ok"
  ok "B <-> zc-echo in A, request/response: $(said lab4b 'XENLAB-ECHO ok')"
  wait_marker lab4b 400 "XENLAB-PERF-CLIENT ok"
  ok "B's kernel socket -> zc-perf in A: $(said lab4b 'XENLAB-PERF-CLIENT ok')"
  wait_marker lab4a 400 "XENLAB-ZC-PERF AB rc=0 received=[1-9]"
  ok "zc-perf in A -> B's kernel socket: $(said lab4a 'XENLAB-ZC-PERF AB rc=0 received=[1-9]') (B: $(grep -a XENLAB-PERF-SERVED "$cons/guest-lab4b.log" | grep -v 'received=0 ' | tail -1 | tr -d '\r'))"
  wait_marker lab4c 400 "XENLAB-ZC-PERF CA rc=0 received=[1-9]"
  ok "zc-perf C -> A: $(said lab4c 'XENLAB-ZC-PERF CA rc=0 received=[1-9]')"
  wait_marker lab4a 400 "XENLAB-ZC-PERF AC rc=0 received=[1-9]"
  ok "zc-perf A -> C: $(said lab4a 'XENLAB-ZC-PERF AC rc=0 received=[1-9]')"
  wait_marker lab4a 400 "XENLAB-ZC-APP-RESTARTED"
  n0=$(served_runs)
  ok "$(said lab4a XENLAB-ZC-APP-KILLED)"
  ok "$(said lab4a XENLAB-ZC-APP-RESTARTED)"
  netback_alive
  wait_marker lab4a 300 "XENLAB-ZC-RESTARTED-RX"
  wait_for 300 "a run of C's stream served by A's restarted server" sh -c "[ \$(grep -acE 'XENLAB-ZC-PERF CA-stream rc=0 received=[1-9]' $cons/guest-lab4c.log) -gt $n0 ]"
  ok "after the restart: $(said lab4a XENLAB-ZC-RESTARTED-RX); C's runs served and verified: $(served_runs) (before: $n0)"
  said lab4a XENLAB-ZC-STATS
  netback_alive
  zc-netback stats
  xl destroy lab4a; xl destroy lab4b; xl destroy lab4c
  wait_for 120 "all vifs torn down" sh -c "[ -z \"\$(xenstore-list /local/domain/0/backend/vif 2>/dev/null)\" ]"
  kill $nb; wait $nb
  echo "XENLAB-PASS step4"
}

case "$what" in
step1) step1 ;;
step2) step2 ;;
step3) step3 ;;
step4) step4 ;;
all) step1 && step2 && step3 && step4 ;;
esac
