#!/usr/bin/env bash
# End to end on an emulated host, with the real daemons as processes:
# zc-netback in dom0, zc-stackd in dom1 (10.0.0.1) and dom2 (10.0.0.2),
# applications attached to the stacks through libzcnet.
#   1. zc-ping from guest 1 to guest 2 (and back): ICMP echo answered by the
#      other guest's stack;
#   2. zc-perf guest 1 -> guest 2, strict and fallback, payload verified;
#   3. two applications per guest at once: zc-perf and zc-echo clients on
#      guest 1, their servers on guest 2, all running concurrently;
#   4. guest 1's zc-stackd killed (SIGKILL) and restarted, its vif added
#      again, with guest 2 pinging it throughout: round trips are back to
#      normal at once (they took ~100 ms each, the service's poll timeout,
#      when zc-netback's events still went to the dead domain's handle).
# Everything started here is stopped (by PID) and the directory removed,
# also on failure.
set -euo pipefail
bin=${1:?usage: uapi_e2e.sh BUILD_DIR}
emu=$bin/stack/zc-emu
dir=$(mktemp -d /tmp/zcnet-uapi-e2e-XXXXXX)
pids=()
cleanup() {
    local rc=$?
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    "$emu" down --dir "$dir" >/dev/null 2>&1 || true
    if [ $rc -ne 0 ]; then
        echo "--- logs"; tail -n 20 "$dir"/*.log 2>/dev/null || true
    fi
    rm -rf "$dir"
    exit $rc
}
trap cleanup EXIT
export ZCNET_LOG=warn

wait_file() { for _ in $(seq 1 300); do [ -e "$1" ] && return 0; sleep 0.05; done; echo "timeout waiting for $1"; return 1; }
# A server is ready once it has bound its port (it says so on stderr).
wait_bound() {
    for _ in $(seq 1 300); do grep -q "server on port" "$1" 2>/dev/null && return 0; sleep 0.05; done
    echo "timeout waiting for the server in $1"; cat "$1"; return 1
}

"$emu" up --dir "$dir"
wait_file "$dir/broker.sock"
"$emu" run --dir "$dir" --dom 0 -- "$bin/netback/zc-netback" run --ctl "$dir/netback.sock" >"$dir/netback.log" 2>&1 &
pids+=($!)
wait_file "$dir/netback.sock"
declare -A stackd_pid
start_stackd() {
    "$emu" run --dir "$dir" --dom "$1" -- "$bin/uapi/zc-stackd" --ip 10.0.0.$1 --listen "$dir/stack$1.sock" \
        >>"$dir/stackd$1.log" 2>&1 &
    stackd_pid[$1]=$!
    pids+=($!)
}
# The domain exists once its zc-stackd connected to the broker; it then
# waits for its vif (--wait-vif), which we add as the toolstack does.
add_vif() {
    for _ in $(seq 1 300); do "$emu" status --dir "$dir" | grep -qx "  dom$1" && break; sleep 0.05; done
    "$emu" run --dir "$dir" --dom 0 --attach -- "$bin/netback/zc-netback" vif-add --frontend "$1" >/dev/null
}
for d in 1 2; do start_stackd $d; done
for d in 1 2; do add_vif $d; done
wait_file "$dir/stack1.sock"
wait_file "$dir/stack2.sock"
s1=$dir/stack1.sock
s2=$dir/stack2.sock

echo "== ping"
"$bin/apps/zc-ping" --service "$s1" -c 3 10.0.0.2
"$bin/apps/zc-ping" --service "$s2" -c 1 10.0.0.1

echo "== zc-perf strict and fallback, payload verified"
"$bin/apps/zc-perf" -s --service "$s2" --port 5201 >"$dir/perf-server.log" 2>&1 &
pids+=($!)
wait_bound "$dir/perf-server.log"
for mode in strict fallback; do
    "$bin/apps/zc-perf" -c 10.0.0.2 --service "$s1" --port 5201 --mode $mode --verify --time 1 --rtt 200 --json \
        >"$dir/perf-$mode.json"
    cat "$dir/perf-$mode.json"
    jq -e '.server.report == true and .server.corrupt == 0 and .server.received > 0 and .sent > 0' \
        "$dir/perf-$mode.json" >/dev/null || { echo "zc-perf $mode: bad result"; exit 1; }
    jq -e '.latency_us.samples > 0' "$dir/perf-$mode.json" >/dev/null || { echo "zc-perf $mode: no latency"; exit 1; }
done
jq -e '.stats.zc_sends > 0 and .stats.copied_sends == 0' "$dir/perf-strict.json" >/dev/null ||
    { echo "strict mode copied"; exit 1; }
jq -e '.stats.copied_sends > 0 and .copied == .stats.copied_sends' "$dir/perf-fallback.json" >/dev/null ||
    { echo "fallback mode did not report its copies"; exit 1; }

echo "== two applications per guest at once"
"$bin/apps/zc-echo" -s --service "$s2" --port 7 --count 200 >"$dir/echo-server.log" 2>&1 &
echo_srv=$!
pids+=($echo_srv)
wait_bound "$dir/echo-server.log"
"$bin/apps/zc-perf" -c 10.0.0.2 --service "$s1" --port 5201 --mode strict --verify --time 2 --rtt 100 --json \
    >"$dir/perf-concurrent.json" &
perf_cli=$!
"$bin/apps/zc-echo" -c 10.0.0.2 --service "$s1" --port 7 --count 200 --size 300
wait $perf_cli
jq -e '.server.report == true and .server.corrupt == 0 and .server.received > 0' "$dir/perf-concurrent.json" \
    >/dev/null || { echo "concurrent zc-perf: bad result"; cat "$dir/perf-concurrent.json"; exit 1; }
wait $echo_srv

echo "== apps/PORTING.md's port, against zc-echo"
"$bin/apps/zc-echo" -s --service "$s2" --port 8 --count 20 >"$dir/echo-server2.log" 2>&1 &
echo_srv=$!
pids+=($echo_srv)
wait_bound "$dir/echo-server2.log"
"$bin/apps/udp-sender-zc" 10.0.0.2 8 20 "$s1"
wait $echo_srv
echo "== zc-stackd stats"
"$bin/uapi/zc-stackd" stats --listen "$s2" --json | tee "$dir/stackd2.json"
jq -e '.echo_replies > 0 and .arp_replies > 0 and .rx_udp > 0 and .sockets_opened >= 3' "$dir/stackd2.json" \
    >/dev/null || { echo "zc-stackd stats: counters missing"; exit 1; }
# zc-echo answers from the receive buffers themselves (220 echoes above).
jq -e '.tx_rx_bufs >= 220' "$dir/stackd2.json" >/dev/null || { echo "zc-echo did not echo in place"; exit 1; }
"$bin/uapi/zc-stackd" stats --listen "$s2" --sockets --json | jq -e '.sockets | type == "array"' >/dev/null ||
    { echo "zc-stackd stats --sockets --json: no sockets array"; exit 1; }
# To a file first: grep -q stops reading at the first match, and the
# writer's SIGPIPE would fail the pipeline (pipefail).
"$bin/uapi/zc-stackd" stats --listen "$s2" --prometheus >"$dir/stackd2.prom" ||
    { echo "zc-stackd stats --prometheus failed"; exit 1; }
grep -q '^zcnet_stackd_rx_udp_total [1-9]' "$dir/stackd2.prom" ||
    { echo "zc-stackd stats --prometheus: no rx_udp_total"; head -20 "$dir/stackd2.prom"; exit 1; }

echo "== zc-stackd of guest 1 killed and restarted with traffic running"
# Guest 2 pings guest 1 throughout (replies stop while guest 1 is down).
"$bin/apps/zc-ping" --service "$s2" -c 40 -W 200 10.0.0.1 >"$dir/ping-during.log" 2>&1 &
ping_bg=$!
pids+=($ping_bg)
sleep 0.5
stackd1=$(pgrep -P "${stackd_pid[1]}")
kill -KILL "$stackd1"
wait "${stackd_pid[1]}" 2>/dev/null || true
rm -f "$s1"
# The broker destroys domain 1 once its last process is gone, then
# zc-netback removes its vif (@releaseDomain); only then can it be added
# again (vif-add refuses a vif that exists).
for _ in $(seq 1 300); do "$emu" status --dir "$dir" | grep -qx "  dom1" || break; sleep 0.05; done
for _ in $(seq 1 300); do
    "$bin/netback/zc-netback" stats --ctl "$dir/netback.sock" --json |
        jq -e '[.devices[] | select(.frontend == 1)] | length == 0' >/dev/null && break
    sleep 0.05
done
start_stackd 1
add_vif 1
wait_file "$s1"
# Round trips in the first second after the restart, both ways: at most
# one of ten may be slow (50 ms: far above the normal sub-millisecond RTT
# on this host, far below the 100 ms of a lost event).
slow_pings() {
    "$bin/apps/zc-ping" --service "$1" -c 10 -W 1000 "$2" | tee "$dir/ping-after.log" >&2
    awk '/^reply/ { v = $(NF-1); sub(/^time=/, "", v); if (v + 0 >= 50) n++ } END { print n + 0 }' \
        "$dir/ping-after.log"
}
for way in "$s1 10.0.0.2" "$s2 10.0.0.1"; do
    # shellcheck disable=SC2086
    n=$(slow_pings $way)
    grep -q '10 packets transmitted, 10 received' "$dir/ping-after.log" || { echo "pings lost ($way)"; exit 1; }
    [ "$n" -le 1 ] || { echo "after the restart, $n of 10 round trips ($way) took 50 ms or more"; exit 1; }
done
wait $ping_bg || true
grep -q '^reply' "$dir/ping-during.log" || { echo "no traffic ran during the restart"; exit 1; }
echo "uapi e2e: ok"
