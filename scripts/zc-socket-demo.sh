#!/usr/bin/env bash
# The README's start-up sequence for the zc socket API ("The zero-copy
# socket API"), as a script: an emulated Xen host, zc-netback in dom0, a
# zc-stackd in each of two guests, then applications on those stacks.
# The lines between the README markers below are quoted verbatim in
# README.md; tests/readme_quote_check.sh fails when the two differ, and
# ctest runs this script (readme_socket_demo), so neither can drift.
#
# Usage: scripts/zc-socket-demo.sh [BUILD_DIR [COMMAND ARGS...]]
#   BUILD_DIR default: build/release. COMMAND (for tests) runs after the
#   sequence with ZCNET_STACK_SOCK naming guest 1's zc-stackd; its exit
#   status is the script's.
# Everything it starts is stopped (by PID) and its directory removed on
# exit, also on failure.
set -euo pipefail
[ $# -ge 1 ] && export ZCNET_BUILD=$1 && shift
cleanup() {
    local rc=$?
    for p in $(jobs -p); do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ -n "${d:-}" ] && { "$b/stack/zc-emu" down --dir "$d" >/dev/null 2>&1 || true; rm -rf "$d"; }
    exit $rc
}
trap cleanup EXIT

# README:begin
b=${ZCNET_BUILD:-build/release}          # the build (./zcnet build release)
d=$(mktemp -d /tmp/zcnet-emu-XXXXXX)     # the emulated host's directory
wait_for() {                             # until the shell test $1 holds (10 s)
    for _ in $(seq 100); do eval "$1" && return 0; sleep 0.1; done
    echo "timed out waiting for: $1" >&2; return 1
}
$b/stack/zc-emu up --dir $d               # returns once the host is up
$b/stack/zc-emu run --dir $d --dom 0 -- $b/netback/zc-netback run --ctl $d/netback.sock &
wait_for "[ -S $d/netback.sock ]"
for i in 1 2; do
    $b/stack/zc-emu run --dir $d --dom $i -- $b/uapi/zc-stackd --ip 10.0.0.$i --listen $d/s$i.sock &
    wait_for "$b/stack/zc-emu status --dir $d | grep -qx '  dom$i'"   # domain i exists
    $b/stack/zc-emu run --dir $d --dom 0 --attach -- $b/netback/zc-netback vif-add --frontend $i
    wait_for "[ -S $d/s$i.sock ]"                                     # its zc-stackd serves
done
$b/apps/zc-ping --service $d/s1.sock -c 3 10.0.0.2
$b/apps/zc-perf -s --service $d/s2.sock 2>$d/perf-server.log &
wait_for "grep -q 'server on port' $d/perf-server.log"
$b/apps/zc-perf -c 10.0.0.2 --service $d/s1.sock --time 1 --mode strict --verify --json
$b/apps/zc-perf -c 10.0.0.2 --service $d/s1.sock --time 1 --mode fallback --verify
$b/uapi/zc-stackd stats --listen $d/s2.sock --json                   # the service's counters
# README:end
if [ $# -gt 0 ]; then
    ZCNET_STACK_SOCK=$d/s1.sock "$@"
    exit
fi
echo "zc socket demo: ok"
