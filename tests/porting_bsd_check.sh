#!/usr/bin/env bash
# apps/porting/udp_sender_bsd (PORTING.md's left column) against a kernel UDP
# echo on loopback: the original the port is compared with works, too.
set -euo pipefail
bin=${1:?usage: porting_bsd_check.sh UDP_SENDER_BSD}
port_file=$(mktemp /tmp/zcnet-porting-XXXXXX)
python3 - "$port_file" <<'PY' &
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
open(sys.argv[1], "w").write(str(s.getsockname()[1]))
s.settimeout(10)
for _ in range(5):
    data, addr = s.recvfrom(2048)
    s.sendto(data, addr)
PY
srv=$!
trap 'kill $srv 2>/dev/null || true; rm -f "$port_file"' EXIT
for _ in $(seq 1 100); do [ -s "$port_file" ] && break; sleep 0.05; done
"$bin" 127.0.0.1 "$(cat "$port_file")" 5
