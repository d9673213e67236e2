#!/usr/bin/env bash
# CI check of the runner's app mode (zc-perf through zc-stackd in each
# guest): rows exist, payloads verified intact, non-zero rates, the app/raw
# ratio printed; the same for the direct mode. Never a speed threshold.
set -euo pipefail
bin=${1:?usage: vmbench_app_check.sh ZC_VMBENCH}
dir=$(mktemp -d /tmp/zcnet-vmbapp-XXXXXX)
trap 'rm -rf "$dir"' EXIT
"$bin" --modes zc,app,direct --sizes 64,1500 --seconds 0.3 --json "$dir/r.json" --csv "$dir/r.csv" --png "" | tee "$dir/out.txt"
jq -e '[.rows[] | select(.mode == "app")] | length == 2' "$dir/r.json" >/dev/null || { echo "app rows missing"; exit 1; }
jq -e '[.rows[] | select(.mode == "app" and (.intact != true or .gbps <= 0))] | length == 0' "$dir/r.json" >/dev/null ||
    { echo "an app row is not intact or moved nothing"; exit 1; }
grep -q 'app/raw = ' "$dir/out.txt" || { echo "no app/raw ratio"; exit 1; }
# The direct mode (zc-stackd --zc-direct on): its rows intact, and its
# ratios to the app rows of the same run printed.
jq -e '[.rows[] | select(.mode == "direct")] | length == 2' "$dir/r.json" >/dev/null || { echo "direct rows missing"; exit 1; }
jq -e '[.rows[] | select(.mode == "direct" and (.intact != true or .gbps <= 0))] | length == 0' "$dir/r.json" >/dev/null ||
    { echo "a direct row is not intact or moved nothing"; exit 1; }
grep -q 'direct/app = ' "$dir/out.txt" || { echo "no direct/app ratio"; exit 1; }
echo "vmbench app: ok"
