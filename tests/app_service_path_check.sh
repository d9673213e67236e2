#!/usr/bin/env bash
# With no stack service, zc-echo, zc-perf and zc-ping fail (exit != 0) and
# their error names the socket path they tried: --service, else
# $ZCNET_STACK_SOCK (the default /run/zcnet/stackd.sock may exist on a host,
# so it is not tried here).
set -uo pipefail
dir=${1:?usage: app_service_path_check.sh APPS_DIR}
missing=$(mktemp -u /tmp/zcnet-nosvc-XXXXXX.sock) # a name, never created
fail=0
check() { # what, expected path, command...
    local what=$1 path=$2
    shift 2
    local err rc
    err=$("$@" 2>&1 >/dev/null)
    rc=$?
    if [ "$rc" -eq 0 ]; then
        echo "FAIL $what: exit 0 without a stack service"
        fail=1
    elif [[ "$err" != *"$path"* ]]; then
        echo "FAIL $what: error does not name $path: $err"
        fail=1
    else
        echo "ok   $what: $err"
    fi
}
check "zc-echo --service" "$missing" "$dir/zc-echo" -s --count 1 --service "$missing"
check "zc-echo \$ZCNET_STACK_SOCK" "$missing" env ZCNET_STACK_SOCK="$missing" "$dir/zc-echo" -c 10.0.0.2 --count 1
check "zc-perf \$ZCNET_STACK_SOCK" "$missing" env ZCNET_STACK_SOCK="$missing" "$dir/zc-perf" -s --once
check "zc-ping --service" "$missing" "$dir/zc-ping" -c 1 -W 100 --service "$missing" 10.0.0.2
check "udp-sender-zc (PORTING.md) service argument" "$missing" "$dir/udp-sender-zc" 10.0.0.2 9 1 "$missing"
exit $fail
