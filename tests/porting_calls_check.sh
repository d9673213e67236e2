#!/usr/bin/env bash
# apps/porting/udp_calls_bsd (kernel UDP over the host's loopback) and its
# port udp_calls_zc (zc sockets of one guest of an emulated host, started by
# scripts/zc-socket-demo.sh) print the same lines: each zc call behaves as
# its BSD counterpart. Usage: porting_calls_check.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
src=${1:?usage: porting_calls_check.sh SOURCE_DIR BUILD_DIR}
bin=${2:?usage: porting_calls_check.sh SOURCE_DIR BUILD_DIR}
out=$(mktemp -d /tmp/zcnet-porting-calls-XXXXXX)
trap 'rm -rf "$out"' EXIT
# The host's loopback is shared: try a few ports until one is free.
for _ in 1 2 3 4 5; do
    port=$((20000 + RANDOM % 20000))
    if "$bin/apps/udp-calls-bsd" $port >"$out/bsd.txt" 2>"$out/bsd.err"; then break; fi
    grep -q "Address already in use" "$out/bsd.err" || { cat "$out/bsd.err"; exit 1; }
done
"$src/scripts/zc-socket-demo.sh" "$bin" sh -c "\"$bin/apps/udp-calls-zc\" $port \"\$ZCNET_STACK_SOCK\" >\"$out/zc.txt\"" \
    >"$out/demo.log" 2>&1 || { cat "$out/demo.log"; exit 1; }
echo "--- BSD sockets"; cat "$out/bsd.txt"
echo "--- zc sockets"; cat "$out/zc.txt"
[ "$(wc -l <"$out/bsd.txt")" -ge 6 ] || { echo "the BSD program printed too little"; exit 1; }
diff -u "$out/bsd.txt" "$out/zc.txt" || { echo "the zc port behaves differently"; exit 1; }
echo "same output"
