#!/bin/sh
# /init of the lab's dom0 (a PV dom0 on Xen 4.17 in QEMU). No systemd, no
# udev: mount what the Xen tools need, load the Xen modules by hand (never
# xen-netback), start xenstored and xenconsoled, run the scenario, then leave
# QEMU through the isa-debug-exit port (poweroff would halt Xen but not QEMU).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /dev/shm
mkdir -p /var/run /var/log/xen/console /var/lib/xen /var/lib/xenstored /run/xen /run/xenstored /run/zcnet

quit() {
  echo "XENLAB-END $1"
  sync
  # QEMU exits with (1 << 1) | 1 = 3.
  printf '\001' | dd of=/dev/port bs=1 seek=244 2>/dev/null
  sleep 30
  echo 1 >/proc/sys/kernel/sysrq; echo o >/proc/sysrq-trigger
  while :; do sleep 60; done
}

fail() { echo "XENLAB-FAIL boot: $*"; quit 1; }

modprobe xenfs || fail "modprobe xenfs"
mount -t xenfs xenfs /proc/xen || fail "mount xenfs"
for m in xen-evtchn xen-gntdev xen-gntalloc xen-privcmd; do
  modprobe "$m" || fail "modprobe $m"
done
grep -q control_d /proc/xen/capabilities || fail "not the control domain"

xenbin=$(ls -d /usr/lib/xen-*/bin | head -1)
export PATH=$PATH:$xenbin
# The C xenstored of the xen-utils package, in the foreground-less way its
# init script starts it.
if [ -x "$xenbin/xenstored" ]; then xs=$xenbin/xenstored; else xs=$(command -v xenstored || command -v oxenstored); fi
"$xs" --pid-file /run/xenstored.pid || fail "xenstored"
for _ in $(seq 1 100); do xenstore-read / >/dev/null 2>&1 && break; sleep 0.1; done
xen-init-dom0 >/tmp/xen-init-dom0.log 2>&1 || { cat /tmp/xen-init-dom0.log; fail "xen-init-dom0"; }
xenconsoled --log=guest --log-dir=/var/log/xen/console || fail "xenconsoled"
ip link set lo up
# bpffs, as systemd mounts it at boot (the uplink's XDP program needs none
# of it; zc-netback, running without CAP_SYS_ADMIN, could not mount it).
mount -t bpf bpf /sys/fs/bpf || fail "mount bpffs"
[ -e /sys/module/xen_netback ] && fail "xen-netback is loaded"

echo "XENLAB-DOM0-UP $(uname -r) $(xl info 2>/dev/null | awk '/xen_version/{print $3}')"
sh /opt/zcnet/lab/scenario.sh "$(cat /etc/xenlab/what)"
quit $?
