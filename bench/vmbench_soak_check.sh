#!/usr/bin/env bash
# CI check of zc-vmbench --modes soak (docs/ARCHITECTURE.md, "Measuring"):
# a short soak with the churn named by the first argument, its JSON summary
# read back. The soak's own checks (no loss between guests connected
# through a round, counters that add up, zc-netback's RSS, fds and mapped
# grants back to the warm-up's) decide its exit code; this script also
# fails when the churn did not happen, so a soak that did nothing cannot pass.
#   lifecycle: 3 guests in a ring, a 4th closes and reopens its netfront in
#              a tight loop (frontend Closing/Closed, then Initialising on
#              the same vif) for 15 s
#   kills:     4 guests, one SIGKILLed and re-created on its vif every ~2 s
set -euo pipefail
bin=${1:?usage: vmbench_soak_check.sh ZC_VMBENCH lifecycle|kills}
what=${2:?usage: vmbench_soak_check.sh ZC_VMBENCH lifecycle|kills}
dir=$(mktemp -d /tmp/zcnet-soak-XXXXXX)
trap 'rm -rf "$dir"' EXIT
case $what in
lifecycle) args=(--guests 3 --flappers 1 --duration 15 --round 3 --kill-every 0 --rate 500); churn=.reopens ;;
kills) args=(--guests 4 --duration 20 --round 4 --kill-every 2 --rate 500); churn=.kills ;;
*) echo "unknown variant $what"; exit 2 ;;
esac
# Under AddressSanitizer freed memory stays in its quarantine (256 MiB by
# default), which zc-netback's RSS would show as growth: a small quarantine
# and room for it.
if grep -q __asan_init "$bin"; then
    export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}quarantine_size_mb=8
    args+=(--rss-slack-mb 24)
fi
rc=0
"$bin" --modes soak "${args[@]}" --json "$dir/s.json" >"$dir/out.txt" 2>&1 || rc=$?
cat "$dir/out.txt"
[ "$rc" = 0 ] || { echo "soak ($what) failed: exit $rc"; exit 1; }
jq -e ".pass == true and $churn > 0 and .frames > 0 and .lossless_frames > 0 and .lost == 0" "$dir/s.json" >/dev/null ||
    { echo "soak ($what): bad summary"; cat "$dir/s.json"; exit 1; }
jq -e '.tx_packets + .flood_extra == .rx_packets + .drops and .fds_end <= .fds_warm and .mapped_end == .mapped_warm' \
    "$dir/s.json" >/dev/null || { echo "soak ($what): summary does not add up"; cat "$dir/s.json"; exit 1; }
echo "vmbench soak ($what): ok"
