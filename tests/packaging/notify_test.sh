#!/usr/bin/env bash
# zc-netback under a service manager, on an emulated host: it sends READY=1
# to $NOTIFY_SOCKET (sd_notify(3), Type=notify) only once its control socket
# listens, STOPPING=1 on SIGTERM, and with stderr the stream $JOURNAL_STREAM
# names its log lines carry syslog priorities ("<6>info ...").
# Everything started here is stopped by PID; the directory is removed.
set -euo pipefail
bin=${1:?usage: notify_test.sh BUILD_DIR}
emu=$bin/stack/zc-emu
command -v python3 >/dev/null || { echo "python3 not installed" >&2; exit 77; }
dir=$(mktemp -d /tmp/zcnet-notify-XXXXXX)
pids=()
cleanup() {
    local rc=$?
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    "$emu" down --dir "$dir" >/dev/null 2>&1 || true
    [ $rc -eq 0 ] || { echo "--- logs"; tail -n 20 "$dir"/*.log 2>/dev/null || true; }
    rm -rf "$dir"
    exit $rc
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }
wait_file() { for _ in $(seq 1 300); do [ -e "$1" ] && return 0; sleep 0.05; done; fail "timeout waiting for $1"; }

# The service manager's end: each datagram on one line, with whether the
# control socket existed when it arrived.
python3 - "$dir/notify.sock" "$dir/netback.sock" >"$dir/notify.log" 2>&1 <<'PY' &
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.settimeout(30)
while True:
    try:
        m = s.recv(4096).decode()
    except socket.timeout:
        break
    print(m.replace("\n", " ") + (" ctl=yes" if os.path.exists(sys.argv[2]) else " ctl=no"), flush=True)
    if "STOPPING=1" in m:
        break
PY
pids+=($!)
wait_file "$dir/notify.sock"

"$emu" up --dir "$dir"
wait_file "$dir/broker.sock"
: >"$dir/netback.log"
journal=$(stat -c '%d:%i' "$dir/netback.log")
NOTIFY_SOCKET=$dir/notify.sock JOURNAL_STREAM=$journal \
    "$emu" run --dir "$dir" --dom 0 -- "$bin/netback/zc-netback" run --ctl "$dir/netback.sock" \
    --metrics-file "$dir/zcnet.prom" --metrics-interval 1 2>>"$dir/netback.log" &
nb=$!
pids+=($nb)
for _ in $(seq 1 300); do grep -q READY=1 "$dir/notify.log" && break; sleep 0.05; done
grep -q 'READY=1 ctl=yes' "$dir/notify.log" || fail "no READY=1 after the control socket listens: $(cat "$dir/notify.log")"
grep -q '^<6>info netback: ready' "$dir/netback.log" || fail "no '<6>' priority on the journal stream"
grep -q '^zcnet\[' "$dir/netback.log" && fail "a line without priority on the journal stream"

# Metrics: the textfile collector's file and a scrape through the control
# socket, both in the Prometheus text format; the file goes with the daemon.
wait_file "$dir/zcnet.prom"
grep -qx 'zcnet_netback_vifs 0' "$dir/zcnet.prom" || fail "metrics file: $(head -5 "$dir/zcnet.prom")"
"$bin/netback/zc-netback" stats --prometheus --ctl "$dir/netback.sock" >"$dir/scrape.txt" || fail "stats --prometheus"
grep -qx '# TYPE zcnet_netback_tx_packets_total counter' "$dir/scrape.txt" || fail "scrape: $(head -5 "$dir/scrape.txt")"
if "$bin/netback/zc-netback" stats --json --prometheus --ctl "$dir/netback.sock" >/dev/null 2>&1; then
    fail "--json with --prometheus accepted"
fi

# The zc-netback process itself (zc-emu run's child) gets SIGTERM.
np=$(pgrep -P "$nb" -x zc-netback || true)
[ -n "$np" ] || np=$nb
kill -TERM "$np"
for _ in $(seq 1 300); do grep -q STOPPING=1 "$dir/notify.log" && break; sleep 0.05; done
grep -q 'STOPPING=1' "$dir/notify.log" || fail "no STOPPING=1 on SIGTERM"
wait "$nb" || fail "zc-netback exited $? on SIGTERM"
[ -e "$dir/zcnet.prom" ] && fail "metrics file left behind after exit"
echo "notify: ok"
