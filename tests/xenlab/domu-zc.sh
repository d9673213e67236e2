# Sourced by domu-init.sh for xenlab=zc (step 4): zc-stackd and the zc
# socket API inside a real Xen guest. The guest's kernel has no
# xen-netfront loaded; zc-xen-guest (the packaged script, uapi/README.md
# "In a real Xen guest") checks the modules, device nodes and the vif and
# starts zc-stackd on it. Then:
#   za (A): zc-echo and zc-perf servers; zc-perf, payload verified, to B's
#           kernel socket and to C's zc-perf; then its zc-perf server is
#           killed while C streams to it, and restarted on the same port.
#   zc (C): a zc-perf server; zc-perf, payload verified, to A; then streams
#           to A for good (each run's REPORT line says whether it was served).
# Markers: XENLAB-ZC-<WHAT> on the console; dom0's scenario reads them.
role=$(arg role) ip=$(arg ip) peer=$(arg peer) other=$(arg other)
zcfail() {
  echo "XENLAB-ZC-FAIL $role: $*"
  for f in /tmp/stackd.log /tmp/perf-s.log /tmp/perf-s2.log /tmp/echo.log /tmp/perf.out; do
    [ -f "$f" ] && { echo "---- $f"; tail -n 30 "$f"; }
  done
  while :; do sleep 60; done
}

# As an operator would (uapi/README.md): modules, /dev/xen, the vif, then
# ZCNET_HV=xen zc-stackd, listening at /run/zcnet/stackd.sock.
zc-xen-guest --devid 0 -- --ip "$ip" >/tmp/stackd.log 2>&1 &
stackd=$!
for _ in $(seq 1 600); do [ -S /run/zcnet/stackd.sock ] && break; kill -0 $stackd 2>/dev/null || break; sleep 0.2; done
[ -S /run/zcnet/stackd.sock ] || zcfail "zc-stackd did not start"
echo "XENLAB-ZC-STACKD-UP $role pid=$stackd $(grep -a 'serving' /tmp/stackd.log | head -1)"
echo "XENLAB-ZC-POOL $role $(grep -a 'pool export:' /tmp/stackd.log | head -1 | sed 's/.*pool export: //')"

# zcperf TAG IP PORT TRIES [ARGS]: zc-perf's verified client until one run
# has the server's REPORT, at least one datagram received, none corrupt.
zcperf() {
  tag=$1 to=$2 port=$3 tries=$4; shift 4
  for _ in $(seq 1 "$tries"); do
    zc-perf -c "$to" --port "$port" --verify --json "$@" >/tmp/perf.out 2>&1
    rc=$?
    got=$(sed -n 's/.*"server":{"report":true,"received":\([0-9]*\).*/\1/p' /tmp/perf.out)
    echo "XENLAB-ZC-PERF $tag rc=$rc received=${got:-none} $(sed -n 's/.*"sent":\([0-9]*\).*"corrupt":\([0-9]*\).*/sent=\1 corrupt=\2/p' /tmp/perf.out)"
    [ "$rc" = 0 ] && [ "${got:-0}" -gt 0 ] && return 0
    sleep 1
  done
  return 1
}

# rx_on PORT: datagrams zc-stackd delivered to the socket bound to PORT.
rx_on() { zc-stackd stats --sockets | awk -v p=":$1" 'substr($3, length($3) - length(p) + 1) == p {print $6; exit}'; }

zc-perf -s --port 5201 >/tmp/perf-s.log 2>&1 &
perfs=$!
case "$role" in
za)
  zc-echo -s --port 7 >/tmp/echo.log 2>&1 &
  echo "XENLAB-ZC-SERVING $role zc-echo :7, zc-perf :5201"
  zcperf AB "$peer" 5202 20 --time 3 --size 1200 --rtt 20 || zcfail "zc-perf A -> B"
  zcperf AC "$other" 5201 30 --time 3 --size 1200 --rtt 20 || zcfail "zc-perf A -> C"
  # The application killed mid-stream: once C's datagrams flow into our
  # zc-perf server, SIGKILL it; zc-stackd must reclaim its socket and let a
  # new server bind the same port.
  for _ in $(seq 1 150); do
    r1=$(rx_on 5201); sleep 2; r2=$(rx_on 5201)
    [ "${r2:-0}" -gt "${r1:-0}" ] && break
  done
  [ "${r2:-0}" -gt "${r1:-0}" ] || zcfail "no stream from C to watch"
  kill -9 $perfs
  wait $perfs 2>/dev/null
  echo "XENLAB-ZC-APP-KILLED $role zc-perf server (pid $perfs) after $r2 datagrams, mid-stream"
  sleep 1
  kill -0 $stackd 2>/dev/null || zcfail "zc-stackd died with its application"
  zc-perf -s --port 5201 >/tmp/perf-s2.log 2>&1 &
  perfs=$!
  # (under emulation a start takes seconds: wait for its bind, or its end)
  for _ in $(seq 1 120); do
    grep -q "server on port 5201" /tmp/perf-s2.log && break
    kill -0 $perfs 2>/dev/null || break
    sleep 0.5
  done
  kill -0 $perfs 2>/dev/null && grep -q "server on port 5201" /tmp/perf-s2.log || zcfail "the restarted zc-perf server did not bind 5201"
  echo "XENLAB-ZC-APP-RESTARTED $role zc-perf server pid $perfs bound 5201 again; zc-stackd pid $stackd alive"
  for _ in $(seq 1 150); do [ "$(rx_on 5201)" -gt 0 ] 2>/dev/null && break; sleep 1; done
  [ "$(rx_on 5201)" -gt 0 ] 2>/dev/null || zcfail "the restarted server receives nothing"
  echo "XENLAB-ZC-RESTARTED-RX $role $(rx_on 5201) datagrams into the new socket"
  zc-stackd stats | tr -s ' ' | tr '\n' ' ' | sed 's/^/XENLAB-ZC-STATS za /'; echo
  ;;
zc)
  echo "XENLAB-ZC-SERVING $role zc-perf :5201"
  zcperf CA "$peer" 5201 30 --time 3 --size 1200 --rtt 20 || zcfail "zc-perf C -> A"
  # A stream to A for good: A kills its server in the middle of one of
  # these runs and restarts it; the runs after that are served by the new one.
  while :; do zcperf CA-stream "$peer" 5201 1 --time 6 --size 1200 --rtt 5; done
  ;;
esac
while :; do sleep 60; done
