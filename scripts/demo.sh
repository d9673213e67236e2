#!/usr/bin/env bash
# The main job: an emulated Xen host (hypervisor broker, zc-netback as dom0,
# two guest domains with the userspace netfront), VM-to-VM traffic through
# zc-netback's switch at several frame sizes, and a throughput summary next
# to memcpy and the kernel path (two network namespaces + veth) measured in
# the same run.
#   scripts/demo.sh BUILD_DIR [zc-vmbench options]
set -euo pipefail
build=${1:?usage: demo.sh BUILD_DIR [zc-vmbench options]}
shift
out=${ZCNET_DEMO_OUT:-$PWD/zcnet-demo}
mkdir -p "$out"
args=(--modes zc,double-copy,kernel,memcpy,app --sizes 64,1500,9000,65535 --seconds 1
      --json "$out/vmbench.json" --csv "$out/vmbench.csv" --png "$out/vmbench.png")
echo "== zcnet demo: emulated Xen host, zc-netback (dom0), guests dom1 -> dom2"
echo "== modes: zc (one gref->gref grant copy per slot), double-copy (through a bounce"
echo "   buffer), kernel (veth + UDP between two network namespaces), memcpy (one core),"
echo "   app (zc-perf between applications on the zc socket API, through zc-stackd in each guest)"
echo
exec "$build/bench/zc-vmbench" "${args[@]}" "$@"
