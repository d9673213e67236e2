#!/bin/sh
# netback/vif-zcnet with xenstore-write and zc-netback replaced by stubs:
# "online" reports connected when zc-netback answers, and fails the vif with
# hotplug-status "error" and a hotplug-error message when it does not.
# Usage: vif_script_test.sh SCRIPT
set -eu
script=$1
t=$(mktemp -d /tmp/zcnet-vif.XXXXXX)
trap 'rm -rf "$t"' EXIT
mkdir "$t/bin"
cat >"$t/bin/xenstore-write" <<'S'
#!/bin/sh
while [ $# -ge 2 ]; do echo "$1=$2" >>"$STUB_LOG"; shift 2; done
S
cat >"$t/bin/xenstore-rm" <<'S'
#!/bin/sh
echo "rm $1" >>"$STUB_LOG"
S
# zc-netback stats answers when $STUB_UP exists.
cat >"$t/bin/zc-netback" <<'S'
#!/bin/sh
[ "$1" = stats ] && [ -e "$STUB_UP" ]
S
chmod +x "$t/bin/"*
export PATH="$t/bin:$PATH" STUB_LOG="$t/log" STUB_UP="$t/up" XENBUS_PATH=backend/vif/1/0
export ZCNET_NETBACK_CTL="$t/netback.sock"
fail() { echo "FAIL: $*"; cat "$t/log" 2>/dev/null; exit 1; }

# 1. No control socket at all.
: >"$t/log"
sh "$script" online 2>"$t/err" && fail "online succeeded without zc-netback"
grep -qx 'backend/vif/1/0/hotplug-status=error' "$t/log" || fail "no hotplug-status error"
grep -q '^backend/vif/1/0/hotplug-error=vif-zcnet: zc-netback is not running' "$t/log" || fail "no hotplug-error"
grep -q 'zc-netback is not running' "$t/err" || fail "no message on stderr"

# 2. A socket that does not answer (zc-netback crashed).
python3 -c "import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])" "$ZCNET_NETBACK_CTL"
: >"$t/log"
sh "$script" online 2>/dev/null && fail "online succeeded with a stale socket"
grep -qx 'backend/vif/1/0/hotplug-status=error' "$t/log" || fail "no hotplug-status error (stale socket)"

# 3. zc-netback answers.
touch "$t/up"
: >"$t/log"
sh "$script" online || fail "online failed with zc-netback running"
grep -qx 'backend/vif/1/0/hotplug-status=connected' "$t/log" || fail "not connected"
grep -q 'error' "$t/log" && fail "an error written while zc-netback runs"

# 4. offline never fails.
rm -f "$t/up"
sh "$script" offline || fail "offline failed"
echo "vif-zcnet: ok"
