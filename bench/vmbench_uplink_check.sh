#!/usr/bin/env bash
# CI check of the runner's uplink mode: guests -> kernel namespace through
# zc-netback's AF_XDP uplink, next to the kernel path's UDP rows of the same
# run. Rows exist, every byte arrived intact, rates are non-zero, the XDP
# mode and the per-frame copies are shown, 9000 B is reported unsupported,
# and no namespace or zc-netback is left behind. Never a speed threshold.
# Exit 77 (ctest SKIP_RETURN_CODE) without root or network namespaces.
set -euo pipefail
bin=${1:?usage: vmbench_uplink_check.sh ZC_VMBENCH}
[ "$(id -u)" = 0 ] || { echo "skip: needs root"; exit 77; }
command -v ip >/dev/null || { echo "skip: no iproute2"; exit 77; }
probe=zcub-probe-$$
ip netns add "$probe" 2>/dev/null || { echo "skip: cannot create network namespaces"; exit 77; }
ip netns del "$probe"
dir=$(mktemp -d /tmp/zcnet-vmbup-XXXXXX)
trap 'rm -rf "$dir"' EXIT
# zc-netback processes of an uplink run whose control socket is gone: left
# behind by a runner that ended (other runs' sockets still exist).
orphans() {
    local pid ctl
    for pid in $(pgrep -f "zc-netback run --ctl .*zcnet-vmbench-.* --uplink" || true); do
        ctl=$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | sed -n '/^--ctl$/{n;p}')
        [ -n "$ctl" ] && [ ! -e "$ctl" ] && echo "$pid"
    done
    return 0
}
"$bin" --modes uplink --sizes 64,1500,9000 --seconds 0.3 --json "$dir/r.json" --csv "$dir/r.csv" --png "" \
    >"$dir/out.txt" 2>&1 &
pid=$!
rc=0
wait $pid || rc=$?
cat "$dir/out.txt"
[ $rc = 0 ] || { echo "zc-vmbench failed ($rc)"; exit 1; }
if ip netns list | grep -q "^zcb-$pid-"; then echo "namespaces of the run left behind"; exit 1; fi
[ -z "$(orphans)" ] || { echo "zc-netback left running: $(orphans)"; exit 1; }
up() { jq -e "$1" "$dir/r.json" >/dev/null; }
up '[.rows[] | select(.mode == "uplink")] | length == 2' || { echo "uplink rows missing (64 and 1500 B)"; exit 1; }
up '[.rows[] | select(.mode == "kernel-udp" and .frame <= 1500)] | length == 2' || { echo "kernel-udp rows missing"; exit 1; }
up '[.rows[] | select(.mode == "uplink" and (.intact != true or .gbps <= 0 or .mpps <= 0 or .frames == 0))] | length == 0' ||
    { echo "an uplink row is not intact or moved nothing"; exit 1; }
# On veth the driver has no zero-copy: copy (or skb) mode, and the kernel's
# copy counted; one grant copy of the frame per frame on the wire.
up '[.rows[] | select(.mode == "uplink" and (.xdp_mode == "copy" or .xdp_mode == "skb"))] | length == 2' ||
    { echo "no XDP copy/skb mode on veth"; exit 1; }
up '[.rows[] | select(.mode == "uplink" and (.copies_per_pkt < 1.9 or .copies_per_pkt > 2.5 or .grant_copy_segments_per_pkt < 1))] | length == 0' ||
    { echo "implausible copies per frame"; jq '.rows[] | select(.mode == "uplink")' "$dir/r.json"; exit 1; }
up '[.rows[] | select(.mode == "uplink" and .ratio_kernel <= 0)] | length == 0' || { echo "no ratio to the kernel row"; exit 1; }
grep -q "^uplink  *9000  not supported: .*multi-buffer" "$dir/out.txt" || { echo "9000 B not reported as unsupported"; exit 1; }
grep -q "uplink/kernel" "$dir/out.txt" || { echo "no uplink summary"; exit 1; }

# SIGINT while the uplink runs: the namespaces and zc-netback go with it.
# Job control on, so the background run keeps SIGINT's default action.
set -m
"$bin" --modes uplink --sizes 1500 --seconds 3 --json "$dir/i.json" --csv "$dir/i.csv" --png "" >"$dir/int.txt" 2>&1 &
pid=$!
set +m
for _ in $(seq 1 600); do grep -q "^kernel-udp" "$dir/int.txt" && ip netns list | grep -q "^zcb-$pid-1-" && break; sleep 0.05; done
ip netns list | grep -q "^zcb-$pid-1-" || { echo "the uplink's namespaces never appeared"; cat "$dir/int.txt"; kill $pid; exit 1; }
sleep 1
# The emulated host's directory (zc-netback's --ctl is in it): a signal
# ends the runner without its destructors; its janitor removes it.
emu_dir=$(for p in $(pgrep -P $pid); do tr '\0' '\n' <"/proc/$p/cmdline" 2>/dev/null | sed -n '/^--ctl$/{n;p}'; done | head -1)
emu_dir=${emu_dir%/netback.sock}
kill -INT $pid
rc=0
wait $pid || rc=$?
[ $rc -ne 0 ] || { echo "zc-vmbench finished despite SIGINT"; exit 1; }
[ -n "$emu_dir" ] || { echo "no emulated host directory seen"; exit 1; }
for _ in $(seq 1 100); do [ -e "$emu_dir" ] || break; sleep 0.05; done
if [ -e "$emu_dir" ]; then echo "$emu_dir left behind after SIGINT"; rm -rf "$emu_dir"; exit 1; fi
sleep 0.5
if ip netns list | grep -q "^zcb-$pid-"; then echo "namespaces left behind after SIGINT"; exit 1; fi
[ -z "$(orphans)" ] || { echo "zc-netback left running after SIGINT: $(orphans)"; exit 1; }
echo "vmbench uplink: ok"
