#!/usr/bin/env bash
# The uplink end to end (docs/ARCHITECTURE.md, "Uplinks"): an emulated guest
# (zc-stackd, 10.0.0.1) behind zc-netback, whose --uplink is one end of a
# veth pair; the other end is in a network namespace where the kernel's own
# stack has 10.0.0.100. Both ends live in namespaces of this test (unique
# names, removed on every exit path, with everything started here).
#   1. the kernel pings the guest; the guest pings the kernel (ARP both ways);
#   2. UDP kernel -> guest's zc socket (zc-echo server), payload verified;
#   3. UDP guest's zc socket -> kernel (zc-echo client), payload verified;
#   4. zc-netback stats shows the uplink, its XDP mode and counters;
#   5. --xdp-mode zc on veth fails with a clear message;
#   6. a guest whose vif's `ip` key does not list the address it uses is
#      dropped (ARP and IP) and counted;
#   7. a guest whose vif has `rate` set is held to it (within 10%);
#   8. zc-netback's XDP program is gone from the interface after it stops.
# Exit 77 (ctest SKIP_RETURN_CODE) without root or network namespaces.
set -euo pipefail
bin=${1:?usage: uplink_e2e.sh BUILD_DIR}
emu=$bin/stack/zc-emu
[ "$(id -u)" = 0 ] || { echo "skip: needs root"; exit 77; }
command -v ip >/dev/null || { echo "skip: no iproute2"; exit 77; }
command -v python3 >/dev/null || { echo "skip: no python3"; exit 77; }
tag=$$$RANDOM
ns_near=zcup-n-$tag ns_far=zcup-f-$tag
va=zua$tag vb=zub$tag
va=${va:0:15} vb=${vb:0:15}
dir=$(mktemp -d /tmp/zcnet-uplink-e2e-XXXXXX)
pids=()
cleanup() {
    local rc=$?
    if [ $rc -ne 0 ] && [ $rc -ne 77 ]; then
        echo "--- stats"
        "$bin/uapi/zc-stackd" stats --listen "$dir/stack1.sock" --json 2>/dev/null || true
        ip netns exec "$ns_near" "$bin/netback/zc-netback" stats --json --ctl "$dir/netback.sock" 2>/dev/null || true
        ip netns exec "$ns_far" cat /proc/net/snmp 2>/dev/null | grep Udp: || true
        echo "--- logs"; tail -n 30 "$dir"/*.log 2>/dev/null || true
    fi
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    ip netns exec "$ns_near" "$emu" down --dir "$dir" >/dev/null 2>&1 || true
    ip netns del "$ns_near" 2>/dev/null || true
    ip netns del "$ns_far" 2>/dev/null || true
    rm -rf "$dir"
    exit $rc
}
trap cleanup EXIT
trap 'exit 1' INT TERM
export ZCNET_LOG=info

ip netns add "$ns_near" 2>/dev/null || { echo "skip: cannot create network namespaces"; exit 77; }
ip netns add "$ns_far"
ip link add "$va" netns "$ns_near" type veth peer name "$vb" netns "$ns_far"
ip -n "$ns_near" link set lo up
ip -n "$ns_near" link set "$va" up
ip -n "$ns_far" link set lo up
ip -n "$ns_far" addr add 10.0.0.100/24 dev "$vb"
ip -n "$ns_far" link set "$vb" up
# The kernel hands its own frames to veth checksum-partial and AF_XDP (Linux
# 6.1) carries no checksum metadata: the far end computes its checksums, as
# a NIC does before the wire (ethtool -K tx off, ETHTOOL_STXCSUM, without
# needing the ethtool binary). docs/ARCHITECTURE.md, "Uplinks".
ip netns exec "$ns_far" python3 - "$vb" <<'PY'
import ctypes, fcntl, socket, struct, sys
ETHTOOL_STXCSUM, SIOCETHTOOL = 0x17, 0x8946
val = ctypes.create_string_buffer(struct.pack("II", ETHTOOL_STXCSUM, 0))
ifr = struct.pack("16sP", sys.argv[1].encode(), ctypes.addressof(val)) + b"\0" * 16
fcntl.ioctl(socket.socket(), SIOCETHTOOL, ifr)
PY
near() { ip netns exec "$ns_near" "$@"; }
far() { ip netns exec "$ns_far" "$@"; }

wait_file() { for _ in $(seq 1 300); do [ -e "$1" ] && return 0; sleep 0.05; done; echo "timeout waiting for $1"; return 1; }
wait_bound() {
    for _ in $(seq 1 300); do grep -q "server on port" "$1" 2>/dev/null && return 0; sleep 0.05; done
    echo "timeout waiting for the server in $1"; cat "$1"; return 1
}

near "$emu" up --dir "$dir"
wait_file "$dir/broker.sock"

echo "== --xdp-mode zc on veth fails clearly"
if near "$emu" run --dir "$dir" --dom 0 -- "$bin/netback/zc-netback" run --ctl "$dir/zc.sock" \
    --uplink "$va" --xdp-mode zc >"$dir/zc-mode.log" 2>&1; then
    echo "zc mode on veth succeeded?"; exit 1
fi
grep -q "zero-copy" "$dir/zc-mode.log" || { echo "no clear message:"; cat "$dir/zc-mode.log"; exit 1; }
grep "zc-netback: uplink" "$dir/zc-mode.log"
if near ip link show "$va" | grep -q "xdp"; then echo "a program was left on $va"; exit 1; fi

# Started with ip netns exec itself (it execs), not through near(): $! is
# then the process to signal.
ip netns exec "$ns_near" "$emu" run --dir "$dir" --dom 0 -- "$bin/netback/zc-netback" run --ctl "$dir/netback.sock" \
    --uplink "$va" >"$dir/netback.log" 2>&1 &
netback_pid=$!
pids+=($!)
wait_file "$dir/netback.sock"
ip netns exec "$ns_near" "$emu" run --dir "$dir" --dom 1 -- "$bin/uapi/zc-stackd" --ip 10.0.0.1 --listen "$dir/stack1.sock" \
    >"$dir/stackd1.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 300); do near "$emu" status --dir "$dir" | grep -qx "  dom1" && break; sleep 0.05; done
near "$emu" run --dir "$dir" --dom 0 --attach -- "$bin/netback/zc-netback" vif-add --frontend 1 >/dev/null
wait_file "$dir/stack1.sock"
s1=$dir/stack1.sock

echo "== kernel pings the guest"
# ICMP echo from the kernel's stack (a raw socket: no ping binary needed).
far python3 - <<'PY'
import os, socket, struct, time
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff); s += s >> 16
    return ~s & 0xffff
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.settimeout(2)
ident = os.getpid() & 0xffff
for seq in range(3):
    payload = os.urandom(56)
    h = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    pkt = struct.pack("!BBHHH", 8, 0, csum(h + payload), ident, seq) + payload
    s.sendto(pkt, ("10.0.0.1", 0))
    while True:
        data = s.recv(2048)
        ihl = (data[0] & 0xf) * 4
        t, code, _, i, q = struct.unpack("!BBHHH", data[ihl:ihl + 8])
        if t == 0 and i == ident and q == seq:
            assert data[ihl + 8:] == payload, "echo reply payload differs"
            break
print("kernel ping: 3 replies from 10.0.0.1, payload intact")
PY
echo "== guest pings the kernel"
"$bin/apps/zc-ping" --service "$s1" -c 3 10.0.0.100
far ip neigh show 10.0.0.1 | grep -q lladdr || { echo "kernel has no ARP entry for the guest"; exit 1; }

echo "== UDP kernel -> guest zc socket, payload verified"
"$bin/apps/zc-echo" -s --service "$s1" --port 7 --count 20 >"$dir/echo-server.log" 2>&1 &
echo_srv=$!
pids+=($echo_srv)
wait_bound "$dir/echo-server.log"
far python3 - <<'PY'
import os, socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
for i in range(20):
    msg = os.urandom(16) + bytes([i]) * (100 + 50 * i)
    s.sendto(msg, ("10.0.0.1", 7))
    data, peer = s.recvfrom(4096)
    assert data == msg, f"echo {i} differs"
print("kernel client: 20 echoes intact")
PY
wait $echo_srv

echo "== UDP guest zc socket -> kernel, payload verified"
ip netns exec "$ns_far" python3 - >"$dir/kernel-echo.log" 2>&1 <<'PY' &
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("10.0.0.100", 9007))
print("server on port 9007", flush=True)
for _ in range(20):
    data, peer = s.recvfrom(65536)
    s.sendto(data, peer)
PY
pids+=($!)
wait_bound "$dir/kernel-echo.log"
"$bin/apps/zc-echo" -c 10.0.0.100 --service "$s1" --port 9007 --count 20 --size 1000

echo "== zc-netback stats"
near "$bin/netback/zc-netback" stats --ctl "$dir/netback.sock"
near "$bin/netback/zc-netback" stats --json --ctl "$dir/netback.sock" >"$dir/stats.json"
python3 - "$dir/stats.json" <<'PY'
import json, sys
u = json.load(open(sys.argv[1]))["uplinks"]
assert len(u) == 1, u
u = u[0]
assert u["xdp_mode"] in ("copy", "skb"), u
assert u["to_wire_frames"] >= 40 and u["from_wire_frames"] >= 40 and u["to_vif_frames"] >= 40, u
assert u["drop_copy_error"] == 0 and u["drop_runt"] == 0, u
print("uplink", u["ifname"], "mode", u["xdp_mode"], "to_wire", u["to_wire_frames"], "from_wire", u["from_wire_frames"])
PY

echo "== a guest sending from an address its vif does not allow is dropped and counted"
# dom2 uses 10.0.0.2, its vif allows only 10.0.0.7 (xl's ip=).
ip netns exec "$ns_near" "$emu" run --dir "$dir" --dom 2 -- "$bin/uapi/zc-stackd" --ip 10.0.0.2 --listen "$dir/stack2.sock" \
    >"$dir/stackd2.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 300); do near "$emu" status --dir "$dir" | grep -qx "  dom2" && break; sleep 0.05; done
near "$emu" run --dir "$dir" --dom 0 --attach -- "$bin/netback/zc-netback" vif-add --frontend 2 --ip 10.0.0.7 >/dev/null
wait_file "$dir/stack2.sock"
if "$bin/apps/zc-ping" --service "$dir/stack2.sock" -c 2 10.0.0.100 >"$dir/ping2.log" 2>&1; then
    echo "a spoofing guest reached the wire"; exit 1
fi
near "$bin/netback/zc-netback" stats --json --ctl "$dir/netback.sock" | python3 -c '
import json, sys
v = [x for x in json.load(sys.stdin)["vifs"] if x["frontend"] == 2][0]
assert v["drop_spoofed_ip"] > 0, v
print("dom2: drop_spoofed_ip", v["drop_spoofed_ip"], "drop_spoofed_mac", v["drop_spoofed_mac"])'

echo "== a vif with rate=8Mb/s@10ms is held to it"
ip netns exec "$ns_near" "$emu" run --dir "$dir" --dom 3 -- "$bin/uapi/zc-stackd" --ip 10.0.0.3 --listen "$dir/stack3.sock" \
    >"$dir/stackd3.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 300); do near "$emu" status --dir "$dir" | grep -qx "  dom3" && break; sleep 0.05; done
near "$emu" run --dir "$dir" --dom 0 --attach -- "$bin/netback/zc-netback" vif-add --frontend 3 --rate 8Mb/s@10ms >/dev/null
wait_file "$dir/stack3.sock"
"$bin/apps/zc-ping" --service "$dir/stack3.sock" -c 1 10.0.0.100 >/dev/null
rx_bytes() { far cat "/sys/class/net/$vb/statistics/rx_bytes"; }
# zc-perf sends as fast as it can for 4 s (no server: nobody answers); the
# far end's byte counter is sampled 1 s and 3 s in (the rate counts frames).
"$bin/apps/zc-perf" -c 10.0.0.100 --service "$dir/stack3.sock" --port 9 --size 1000 --time 4 --rtt 0 \
    >"$dir/perf3.log" 2>&1 &
perf3=$!
pids+=($perf3)
sleep 1
b1=$(rx_bytes); t1=$(date +%s.%N)
sleep 2
b2=$(rx_bytes); t2=$(date +%s.%N)
python3 - "$b1" "$b2" "$t1" "$t2" <<'PY'
import sys
b1, b2, t1, t2 = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
rate = (b2 - b1) / (t2 - t1)
want = 8e6 / 8
print("rate-limited vif: %.0f bytes/s on the wire, rate %.0f (%.1f%%)" % (rate, want, 100 * rate / want))
assert abs(rate - want) <= 0.1 * want, "not within 10%"
PY
wait $perf3 || true

echo "== the program is detached when zc-netback stops"
kill "$netback_pid"
wait "$netback_pid" || true
grep -q "zc_uplink detached" "$dir/netback.log" || { echo "zc-netback did not detach its program"; exit 1; }
if near ip link show "$va" | grep -q "prog/xdp"; then echo "XDP program left on $va"; near ip link show "$va"; tail -5 "$dir/netback.log"; exit 1; fi
echo "uplink e2e: ok"
