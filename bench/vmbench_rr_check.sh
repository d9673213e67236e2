#!/usr/bin/env bash
# CI check of the runner's request/response mode: the app-rr rows (zc-rr
# between applications through zc-stackd in two guests) exist at 64 and
# 1500 B with round trips, none lost or mismatched, ordered percentiles and
# per-round-trip counters; with root, kernel-rr rows and the app-rr/kernel-rr
# ratios of the pass. Never a speed threshold.
set -euo pipefail
bin=${1:?usage: vmbench_rr_check.sh ZC_VMBENCH}
dir=$(mktemp -d /tmp/zcnet-vmbrr-XXXXXX)
trap 'rm -rf "$dir"' EXIT
"$bin" --modes rr --sizes 64,1500 --seconds 0.3 --json "$dir/r.json" --csv "$dir/r.csv" --png "" | tee "$dir/out.txt"
jq -e '[.latency[] | select(.mode == "app-rr")] | length == 2' "$dir/r.json" >/dev/null || { echo "app-rr rows missing"; exit 1; }
jq -e '[.latency[] | select(.mode == "app-rr" and (.samples == 0 or .lost != 0 or .p50_us <= 0 or
        .p50_us > .p99_us or .p99_us > .p999_us))] | length == 0' "$dir/r.json" >/dev/null ||
    { echo "an app-rr row is not sane"; jq '.latency' "$dir/r.json"; exit 1; }
jq -e '[.latency[] | select(.mode == "app-rr" and (.cpu_us_per_rt <= 0 or .notifies_per_rt <= 0))] | length == 0' \
    "$dir/r.json" >/dev/null || { echo "app-rr rows lack their per-round-trip counters"; exit 1; }
jq -e '[.latency[] | select(.mode == "app-rr") | .frame] == [64, 1500]' "$dir/r.json" >/dev/null ||
    { echo "app-rr rows are not of 64 and 1500-byte frames"; exit 1; }
if [ "$(id -u)" = 0 ] && jq -e '[.latency[] | select(.mode == "kernel-rr")] | length > 0' "$dir/r.json" >/dev/null; then
    jq -e '[.latency[] | select(.mode == "kernel-rr") | .frame] as $k |
           [.latency[] | select(.mode == "app-rr" and (.frame as $f | $k | index($f)) and .p50_vs_kernel <= 0)] |
           length == 0' "$dir/r.json" >/dev/null || { echo "app-rr rows lack their ratio to kernel-rr"; exit 1; }
    grep -q '^app-rr .*/kernel-rr: p50 ' "$dir/out.txt" || { echo "no app-rr/kernel-rr ratio printed"; exit 1; }
fi
echo "vmbench rr: ok"
