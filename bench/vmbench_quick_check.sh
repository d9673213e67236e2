#!/usr/bin/env bash
# CI check of the runner: --quick produces JSON whose rows are sane (frames
# delivered, integrity verified, non-zero rates). Never a speed threshold.
set -euo pipefail
bin=${1:?usage: vmbench_quick_check.sh ZC_VMBENCH}
dir=$(mktemp -d /tmp/zcnet-vmbq-XXXXXX)
trap 'rm -rf "$dir"' EXIT
"$bin" --quick --modes zc,double-copy,pressure,memcpy --json "$dir/r.json" --csv "$dir/r.csv" --png "" 
jq -e '.rows | length >= 12' "$dir/r.json" >/dev/null || { echo "too few rows"; exit 1; }
jq -e '[.rows[] | select(.intact != true)] | length == 0' "$dir/r.json" >/dev/null || { echo "a row is not intact"; jq '.rows[] | select(.intact != true)' "$dir/r.json"; exit 1; }
jq -e '[.rows[] | select(.gbps <= 0 or .frames == 0)] | length == 0' "$dir/r.json" >/dev/null || { echo "a row moved nothing"; exit 1; }
jq -e '[.rows[] | select(.mode == "zc" and .fallbacks_per_pkt > 0.5)] | length == 0' "$dir/r.json" >/dev/null || { echo "zc mode fell back for most frames"; exit 1; }
jq -e '[.rows[] | select(.mode == "double-copy" and .fallbacks_per_pkt < 0.9)] | length == 0' "$dir/r.json" >/dev/null || { echo "double-copy did not bounce"; exit 1; }
jq -e '[.rows[] | select(.mode == "pressure")] | length == 3' "$dir/r.json" >/dev/null || { echo "pressure rows missing"; exit 1; }
head -c 300 "$dir/r.csv" | head -1 | grep -q '^mode,frame' || { echo "bad CSV"; exit 1; }
# --repeat: rows are medians over interleaved passes, with their spread.
"$bin" --repeat 2 --sizes 1500 --seconds 0.2 --modes zc,double-copy --json "$dir/p.json" --csv "$dir/p.csv" --png "" >"$dir/p.txt"
jq -e '[.rows[] | select(.passes != 2 or .gbps_min > .gbps or .gbps > .gbps_max)] | length == 0' "$dir/p.json" >/dev/null || { echo "bad --repeat rows"; exit 1; }
grep -q 'median (min-max)' "$dir/p.txt" || { echo "no --repeat summary"; exit 1; }
# rr: request/response round trips through zc-netback (the kernel rows need root).
"$bin" --modes rr --sizes 64 --seconds 0.2 --json "$dir/l.json" --csv "$dir/l.csv" --png "" >"$dir/l.txt"
jq -e '[.latency[] | select(.mode == "zc-rr" and .samples > 0 and .p50_us > 0 and .p50_us <= .p99_us and .p99_us <= .p999_us)] | length == 1' "$dir/l.json" >/dev/null || { echo "bad rr rows"; cat "$dir/l.txt"; exit 1; }
echo "vmbench quick: ok"
