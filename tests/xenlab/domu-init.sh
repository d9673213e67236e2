#!/bin/busybox sh
# /init of the lab's domUs: busybox, Debian's unmodified xen-netfront and the
# Xen device modules, nothing else. What to do comes from the kernel command
# line that dom0's scenario put in the domU config ("extra"):
#   xenlab=peer           step 1: run zc-xenlab-peer (grants, event channel)
#   xenlab=net role=R ip=A.B.C.D peer=A.B.C.D
#                         step 2: bring eth0 up and play role R (a, b, a2).
# Markers go to the console (hvc0), which xenconsoled logs in dom0, where the
# scenario reads them.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /tmp
arg() { tr ' ' '\n' </proc/cmdline | sed -n "s/^$1=//p" | tail -1; }
mode=$(arg xenlab)
for m in xen-evtchn xen-gntalloc xen-gntdev xen-netfront; do
  f=$(ls /lib/modules/$m.ko* 2>/dev/null | head -1)
  [ -n "$f" ] && insmod "$f"
done
echo "XENLAB-DOMU-UP mode=$mode"

case "$mode" in
peer)
  exec /bin/zc-xenlab-peer 0
  ;;
net)
  role=$(arg role) ip=$(arg ip) peer=$(arg peer)
  for _ in $(seq 1 600); do [ -e /sys/class/net/eth0 ] && break; sleep 0.1; done
  ip addr add "$ip/24" dev eth0
  ip link set eth0 up
  echo "XENLAB-DOMU-NET role=$role ip=$ip mac=$(cat /sys/class/net/eth0/address)"
  pingit() {
    # The first replies may be lost while ARP and the other vif settle.
    for _ in $(seq 1 30); do
      if ping -c 3 -W 2 "$peer" >/tmp/ping.out 2>&1; then
        echo "XENLAB-DOMU-PING-OK $role -> $peer: $(grep -c 'bytes from' /tmp/ping.out) replies"
        return 0
      fi
    done
    echo "XENLAB-DOMU-PING-FAIL $role -> $peer"; cat /tmp/ping.out
  }
  case "$role" in
  b)
    # Server: a 4 MiB bulk transfer on 5000, an endless stream sink on
    # 5001 that reports every MiB. busybox nc half-closes the connection
    # when its stdin ends (and background jobs get /dev/null), and the
    # sender's nc quits on that with its input half read: give the
    # listeners a stdin that never ends, a FIFO we hold open.
    mkfifo /tmp/hold
    exec 4<>/tmp/hold
    ( while :; do
        nc -l -p 5001 <&4 | while [ "$(head -c 1048576 | wc -c)" = 1048576 ]; do
          echo "XENLAB-DOMU-STREAM-1M"
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
    pingit
    while :; do sleep 5; done
    ;;
  a)
    pingit
    dd if=/dev/urandom of=/tmp/tx bs=64k count=64 2>/dev/null
    echo "XENLAB-DOMU-TX $(wc -c </tmp/tx) $(md5sum </tmp/tx | cut -d' ' -f1)"
    # nc is kept open until B has read every byte and closed: an nc that
    # exits at EOF of its input may reset a connection that still has
    # unsent data, which would say nothing about the path.
    mkfifo /tmp/txfifo
    nc "$peer" 5000 </tmp/txfifo &
    ncpid=$!
    exec 3>/tmp/txfifo
    cat /tmp/tx >&3
    wait $ncpid
    exec 3>&-
    echo "XENLAB-DOMU-TX-DONE"
    grep Tcp: /proc/net/snmp
    # Then an endless stream, for dom0 to destroy us in the middle of.
    while :; do cat /dev/urandom | nc "$peer" 5001; sleep 1; done
    ;;
  a2)
    pingit
    while :; do sleep 5; done
    ;;
  esac
  ;;
esac
echo "XENLAB-DOMU-IDLE"
while :; do sleep 60; done
