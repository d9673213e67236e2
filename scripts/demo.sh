#!/usr/bin/env bash
# The main job: an emulated Xen host with two guest domains and dom0; dom0
# grant-copies between the guests (gref to gref) and prints a throughput
# summary next to memcpy measured in the same run.
#   scripts/demo.sh BUILD_DIR [--seconds S]
set -euo pipefail
build=${1:?usage: demo.sh BUILD_DIR [--seconds S]}
shift
seconds=0.5
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds=$2; shift 2 ;;
    *) echo "demo: unknown option $1" >&2; exit 2 ;;
  esac
done
emu=$build/stack/zc-emu
demo=$build/bench/zc-hvdemo
dir=$(mktemp -d /tmp/zcnet-demo-XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  "$emu" down --dir "$dir" >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT

echo "== starting an emulated Xen host in $dir"
"$emu" up --dir "$dir"
echo "== guests: dom1 (source) and dom2 (destination), 256 pages each"
"$emu" run --dir "$dir" --dom 1 -- "$demo" guest --pages 256 & pids+=($!)
"$emu" run --dir "$dir" --dom 2 -- "$demo" guest --pages 256 --expect-from 1 & pids+=($!)
echo "== dom0: grant copy dom1 -> dom2, ${seconds}s per size"
rc=0
"$emu" run --dir "$dir" --dom 0 -- "$demo" host --src 1 --dst 2 --seconds "$seconds" --json "$dir/summary.json" || rc=$?
for p in "${pids[@]}"; do wait "$p" || rc=1; done
pids=()
[ -f "$dir/summary.json" ] && { echo; echo "JSON: $(cat "$dir/summary.json")"; }
if [ $rc -eq 0 ]; then echo "== demo passed"; else echo "== demo FAILED (rc=$rc)"; fi
exit $rc
