#!/bin/busybox sh
# /init of the lab's domUs: busybox, Debian's unmodified xen-netfront and the
# Xen device modules, nothing else. What to do comes from the kernel command
# line that dom0's scenario put in the domU config ("extra"):
#   xenlab=peer           step 1: run zc-xenlab-peer (grants, event channel)
#   xenlab=net role=R ip=A.B.C.D peer=A.B.C.D [host=A.B.C.D]
#                         steps 2 and 3: bring eth0 up and play role R
#                         (step 2: a, b, a2; step 3: u, the guest that talks
#                         to HOST, a namespace behind zc-netback's uplink,
#                         and g, its guest-to-guest peer; step 4: zb, the
#                         kernel-socket peer of zc-stackd's applications).
#   xenlab=zc role=R ip=A.B.C.D peer=A.B.C.D [other=A.B.C.D]
#                         step 4: no xen-netfront; zc-stackd on the vif
#                         through zc-xen-guest (the packaged script), and
#                         zc-perf/zc-echo on it (za: A, zc: C).
# Markers go to the console (hvc0), which xenconsoled logs in dom0, where the
# scenario reads them.
/bin/busybox --install -s /bin
export PATH=/bin:/usr/local/sbin:/usr/local/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /tmp
arg() { tr ' ' '\n' </proc/cmdline | sed -n "s/^$1=//p" | tail -1; }
mode=$(arg xenlab)
# zc mode keeps the kernel's xen-netfront out: zc-stackd's netfront owns the
# vif (zc-xen-guest checks that no driver is bound to it).
mods="xen-evtchn xen-gntalloc xen-gntdev xen-netfront"
[ "$mode" = zc ] && mods="xen-evtchn xen-gntalloc xen-gntdev"
for m in $mods; do
  f=$(ls /lib/modules/$m.ko* 2>/dev/null | head -1)
  [ -n "$f" ] && insmod "$f"
done
echo "XENLAB-DOMU-UP mode=$mode"

case "$mode" in
peer)
  exec /bin/zc-xenlab-peer 0
  ;;
net)
  role=$(arg role) ip=$(arg ip) peer=$(arg peer) host=$(arg host)
  for _ in $(seq 1 600); do [ -e /sys/class/net/eth0 ] && break; sleep 0.1; done
  ip addr add "$ip/24" dev eth0
  ip link set eth0 up
  echo "XENLAB-DOMU-NET role=$role ip=$ip mac=$(cat /sys/class/net/eth0/address)"
  pingit() { # [ADDR] (default: the peer)
    to=${1:-$peer}
    # The first replies may be lost while ARP and the other vif settle.
    for _ in $(seq 1 30); do
      if ping -c 3 -W 2 "$to" >/tmp/ping.out 2>&1; then
        echo "XENLAB-DOMU-PING-OK $role -> $to: $(grep -c 'bytes from' /tmp/ping.out) replies"
        return 0
      fi
    done
    echo "XENLAB-DOMU-PING-FAIL $role -> $to"; cat /tmp/ping.out
  }
  # Servers: a 4 MiB bulk transfer on 5000, an endless stream sink on 5001
  # that reports every MiB (and counts them in /tmp/streams). busybox nc
  # half-closes the connection when its stdin ends (and background jobs get
  # /dev/null), and the sender's nc quits on that with its input half read:
  # give the listeners a stdin that never ends, a FIFO we hold open.
  serve() {
    mkfifo /tmp/hold
    exec 4<>/tmp/hold
    : >/tmp/streams
    ( while :; do
        nc -l -p 5001 <&4 | while [ "$(head -c 1048576 | wc -c)" = 1048576 ]; do
          echo "XENLAB-DOMU-STREAM-1M"
          echo >>/tmp/streams
        done
      done ) &
    # The sender's nc waits for us to close: stop ours once 4 MiB are in.
    ( while :; do
        : >/tmp/rx
        nc -l -p 5000 <&4 >/tmp/rx &
        ncpid=$!
        while [ "$(wc -c </tmp/rx)" -lt 4194304 ] && kill -0 $ncpid 2>/dev/null; do sleep 1; done
        kill $ncpid 2>/dev/null
        wait $ncpid 2>/dev/null
        echo "XENLAB-DOMU-RX $(wc -c </tmp/rx) $(md5sum </tmp/rx | cut -d' ' -f1)"
        grep Tcp: /proc/net/snmp
      done ) &
  }
  # send4m ADDR PORT: 4 MiB of random data, its md5 on the console first.
  # nc is kept open until the receiver has read every byte and closed: an
  # nc that exits at EOF of its input may reset a connection that still
  # has unsent data, which would say nothing about the path.
  send4m() {
    dd if=/dev/urandom of=/tmp/tx bs=64k count=64 2>/dev/null
    echo "XENLAB-DOMU-TX $(wc -c </tmp/tx) $(md5sum </tmp/tx | cut -d' ' -f1)"
    rm -f /tmp/txfifo
    mkfifo /tmp/txfifo
    nc "$1" "$2" </tmp/txfifo &
    ncpid=$!
    exec 3>/tmp/txfifo
    cat /tmp/tx >&3
    wait $ncpid
    exec 3>&-
    echo "XENLAB-DOMU-TX-DONE"
    grep Tcp: /proc/net/snmp
  }
  # iperf3T NAME ARGS...: one iperf3 TCP run to the host, its summary
  # (the receiver's bytes and rate) on one marker line.
  iperf3T() {
    n=$1; shift
    /usr/bin/iperf3 -c "$host" -f m "$@" >/tmp/iperf3.out 2>&1
    rc=$?
    cat /tmp/iperf3.out
    echo "XENLAB-DOMU-IPERF-$n rc=$rc $(awk '/receiver/{print $5, $6, $7, $8}' /tmp/iperf3.out)"
  }
  case "$role" in
  b)
    serve
    pingit
    while :; do sleep 5; done
    ;;
  a)
    pingit
    send4m "$peer" 5000
    # Then an endless stream, for dom0 to destroy us in the middle of.
    while :; do cat /dev/urandom | nc "$peer" 5001; sleep 1; done
    ;;
  u)
    # Step 3: G streams to us (guest to guest) while we run iperf3 to the
    # host through the uplink, both ways; then 4 MiB to the host.
    serve
    pingit "$host"
    for _ in $(seq 1 300); do [ -s /tmp/streams ] && break; sleep 1; done
    n0=$(wc -l </tmp/streams)
    echo "XENLAB-DOMU-IPERF-START streamed=$n0"
    iperf3T UP -t 10
    iperf3T DOWN -t 10 -R
    echo "XENLAB-DOMU-IPERF-END streamed=$(( $(wc -l </tmp/streams) - n0 ))"
    send4m "$host" 5002
    while :; do sleep 5; done
    ;;
  g)
    pingit
    while :; do nc "$peer" 5001 </dev/zero; sleep 1; done
    ;;
  a2)
    pingit
    while :; do sleep 5; done
    ;;
  zb)
    # Step 4: an unmodified guest against zc-stackd and its applications in
    # A: zc-perf's kernel-socket peer serves A's zc-perf client; then ping
    # A's stack, request/response with zc-echo, verified bulk to zc-perf.
    zc-xenlab-perf -s 5202 &
    pingit
    # (zc-echo in A may not be up yet: a run with losses is run again)
    for _ in $(seq 1 10); do zc-xenlab-perf -e "$peer" 7 50 512 && break; sleep 2; done
    for _ in $(seq 1 10); do zc-xenlab-perf -c "$peer" 5201 3 1200 && break; sleep 2; done
    while :; do sleep 5; done
    ;;
  esac
  ;;
zc)
  . /lib/xenlab-zc.sh
  ;;
esac
echo "XENLAB-DOMU-IDLE"
while :; do sleep 60; done
