#!/usr/bin/env bash
# Guest -> kernel namespace UDP over zc-netback's AF_XDP uplink from an
# application (zc-perf through zc-stackd in the guest), next to the kernel
# path (veth -> veth between two namespaces, kernel sockets) measured in the
# same run by zc-vmbench --modes kernel. zc-vmbench --modes uplink measures
# the uplink itself (raw netfront guests, every byte checked by the kernel
# socket, copies per frame); this script adds the socket layer. Root only.
#   bench/uplink_pps.sh BUILD_DIR [SIZE] [SECONDS] [RUNS]
# Prints, per run, the frames the far veth end received per second (its
# kernel rx_packets counter), the XDP mode, and the kernel path's Mpps.
set -euo pipefail
bin=${1:?usage: uplink_pps.sh BUILD_DIR [SIZE] [SECONDS] [RUNS]}
size=${2:-64} secs=${3:-3} runs=${4:-3}
emu=$bin/stack/zc-emu
tag=$$$RANDOM
ns_near=zcub-n-$tag ns_far=zcub-f-$tag
va=zba$tag vb=zbb$tag
va=${va:0:15} vb=${vb:0:15}
dir=$(mktemp -d /tmp/zcnet-uplink-bench-XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    ip netns exec "$ns_near" "$emu" down --dir "$dir" >/dev/null 2>&1 || true
    ip netns del "$ns_near" 2>/dev/null || true
    ip netns del "$ns_far" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
export ZCNET_LOG=warn
ip netns add "$ns_near"
ip netns add "$ns_far"
ip link add "$va" netns "$ns_near" type veth peer name "$vb" netns "$ns_far"
ip -n "$ns_near" link set "$va" up
ip -n "$ns_far" addr add 10.0.0.100/24 dev "$vb"
ip -n "$ns_far" link set "$vb" up
wait_file() { for _ in $(seq 1 300); do [ -e "$1" ] && return 0; sleep 0.05; done; echo "timeout: $1"; return 1; }
ip netns exec "$ns_near" "$emu" up --dir "$dir" >/dev/null
wait_file "$dir/broker.sock"
ip netns exec "$ns_near" "$emu" run --dir "$dir" --dom 0 -- "$bin/netback/zc-netback" run --ctl "$dir/nb.sock" \
    --uplink "$va" >"$dir/netback.log" 2>&1 &
pids+=($!)
wait_file "$dir/nb.sock"
ip netns exec "$ns_near" "$emu" run --dir "$dir" --dom 1 -- "$bin/uapi/zc-stackd" --ip 10.0.0.1 \
    --listen "$dir/s1.sock" >"$dir/stackd.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 300); do ip netns exec "$ns_near" "$emu" status --dir "$dir" | grep -qx "  dom1" && break; sleep 0.05; done
ip netns exec "$ns_near" "$emu" run --dir "$dir" --dom 0 --attach -- "$bin/netback/zc-netback" vif-add --frontend 1 >/dev/null
wait_file "$dir/s1.sock"
"$bin/apps/zc-ping" --service "$dir/s1.sock" -c 1 10.0.0.100 >/dev/null # ARP resolved
mode=$("$bin/netback/zc-netback" stats --json --ctl "$dir/nb.sock" | python3 -c 'import json,sys; print(json.load(sys.stdin)["uplinks"][0]["xdp_mode"])')
rx() { ip netns exec "$ns_far" cat "/sys/class/net/$vb/statistics/rx_packets"; }
up=() kern=()
for r in $(seq 1 "$runs"); do
    before=$(rx)
    # No server: zc-perf sends for SECONDS and then gives up waiting for a report.
    "$bin/apps/zc-perf" -c 10.0.0.100 --service "$dir/s1.sock" --port 9 --size "$size" --time "$secs" --rtt 0 \
        --json >"$dir/perf$r.json" 2>/dev/null || true
    after=$(rx)
    up+=("$(python3 -c 'import sys; print("%.4f" % ((int(sys.argv[2]) - int(sys.argv[1])) / float(sys.argv[3]) / 1e6))' \
        "$before" "$after" "$secs")")
    # The kernel path right after, under the same load: UDP frames of the same size.
    kern+=("$("$bin/bench/zc-vmbench" --modes kernel --sizes "$((size + 42))" --seconds "$secs" \
        --json "$dir/k.json" --csv "$dir/k.csv" --png "$dir/k.png" 2>/dev/null | awk '$1 == "kernel-udp" {print $6}')")
    echo "run $r: uplink ($mode mode) ${up[-1]} Mpps received by the far end; kernel veth->veth ${kern[-1]} Mpps"
done
"$bin/netback/zc-netback" stats --ctl "$dir/nb.sock" | tail -1
python3 - "$size" "$mode" "${up[*]}" "${kern[*]}" <<'PY'
import statistics, sys
size, mode = sys.argv[1], sys.argv[2]
up = [float(x) for x in sys.argv[3].split()]
k = [float(x) for x in sys.argv[4].split()]
mu, mk = statistics.median(up), statistics.median(k)
print("median of %d: %s B UDP payload, uplink (AF_XDP %s) %.3f Mpps, kernel veth->veth %.3f Mpps, ratio %.2f"
      % (len(up), size, mode, mu, mk, mu / mk if mk else float("nan")))
PY
