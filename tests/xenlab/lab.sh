#!/usr/bin/env bash
# The real Xen lab: Debian's Xen 4.17 with a PV dom0 and PV domUs running
# Debian's unmodified Linux 6.1 (xen-netfront), booted in QEMU (TCG), against
# zcnet's real-Xen hypervisor port and zc-netback.
#
#   tests/xenlab/lab.sh [step1|step2|step3|step4|all]     (default: all)
#
# step1  the Xen hypervisor port in dom0 against two domUs (grant map,
#        gref->gref copy between the domUs' pages, GNTST_* codes, event
#        channels across domains, xenstore watches): tests/xenlab/hv_lab_test.cpp
# step2  zc-netback in dom0, installed from the zcnet package with dpkg and
#        run with no capabilities (kernel xen-netback never loaded), two domUs with
#        the unmodified xen-netfront: Connected, ping both ways, a checksummed
#        bulk transfer, xl destroy of one guest mid-transfer, re-create.
# step3  the uplink: dom0 gets a veth pair whose far end is in a network
#        namespace (10.0.0.100, TX checksum offload off, an iperf3 server);
#        the packaged zc-netback runs with --uplink on the near end and only
#        the capabilities an uplink needs (zc-netback(8)). A domU pings the
#        namespace and is pinged, runs iperf3 TCP to it both ways (-R) while
#        a second domU streams to it, sends 4 MiB to the namespace (md5
#        compared); the uplink's counters show checksums completed and GSO
#        frames segmented, no drop of the guest's frames; the XDP program is
#        gone once zc-netback stops. iperf3's rates are printed, not judged.
# step4  the zc socket API inside real guests: A and C run zc-stackd (our
#        userspace netfront, the kernel's xen-netfront not loaded, started
#        by the packaged zc-xen-guest) with zc-perf/zc-echo; B is an
#        unmodified guest with kernel sockets (zc-xenlab-perf, zc-perf's
#        protocol). B pings A's stack, echoes through zc-echo and streams
#        to zc-perf in A, A's zc-perf streams to B, A and C run zc-perf
#        both ways, every payload verified; A's zc-perf server is SIGKILLed
#        while C streams to it and restarted on the same port, zc-stackd
#        and zc-netback running on. Pools go by copy where the guest
#        kernel has no udmabuf (Debian 12's: uapi/README.md, "Pools").
#
# Images are built from Debian packages only and cached in
# ${ZCNET_XENLAB_CACHE:-/var/cache/zcnet-xenlab}, keyed by the kernel package
# version and the image recipe (mkbase.sh); later runs only repack our own
# binaries (a second cpio appended to the cached dom0 initramfs).
#
# Environment: ZCNET_XENLAB_BUILD  a build tree to take binaries from
#              (default: build/release, built here if needed; zc-netback
#              goes into dom0 as the Debian package cpack makes from it);
#              ZCNET_XENLAB_TIMEOUT  seconds for the whole boot (default 1500);
#              ZCNET_XENLAB_KEEP=1  keep the run directory.
# With --if-enabled (how ctest calls it) it exits 77 (skip) unless
# ZCNET_XENLAB=1. Exits 0 when every requested step printed its PASS marker,
# else non-zero with the relevant part of the serial log.
# Timings under TCG emulation are not performance figures.
set -euo pipefail

if [ "${1:-}" = "--if-enabled" ]; then
  shift
  if [ "${ZCNET_XENLAB:-0}" != 1 ]; then
    echo "xenlab: skipped (set ZCNET_XENLAB=1 to boot Xen in QEMU; takes minutes)"
    exit 77
  fi
fi
what=${1:-all}
case "$what" in step1|step2|step3|step4|all) ;; *) echo "usage: $0 [step1|step2|step3|step4|all]" >&2; exit 2 ;; esac

here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
cache=${ZCNET_XENLAB_CACHE:-/var/cache/zcnet-xenlab}
timeout_s=${ZCNET_XENLAB_TIMEOUT:-1500}
log() { echo "xenlab: $*" >&2; }
t0=$(date +%s)

if [ "$(id -u)" -ne 0 ]; then echo "xenlab: needs root (debootstrap, chroot)" >&2; exit 1; fi
bash "$src/scripts/install-deps.sh"

# ---- our binaries -------------------------------------------------------------------------
# The whole tree is built: cpack packages everything that installs (cheap
# when up to date, as in CI after `./zcnet build release`).
bld=${ZCNET_XENLAB_BUILD:-}
if [ -z "$bld" ]; then
  bld=$src/build/release
  (cd "$src" && cmake --preset release >/dev/null && cmake --build --preset release -j2 >/dev/null)
else
  cmake --build "$bld" -j2 >/dev/null
fi
labtest_bin=$bld/tests/test_xenlab_hv
hvxen_bin=$bld/tests/test_hv_xen
peer_bin=$bld/tests/zc-xenlab-peer
perf_bin=$bld/tests/zc-xenlab-perf
for b in "$labtest_bin" "$hvxen_bin" "$peer_bin" "$perf_bin"; do
  [ -x "$b" ] || { echo "xenlab: missing $b (build the release preset)" >&2; exit 1; }
done

# ---- cached base images ----------------------------------------------------------------------
kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
[ -n "$kpkg" ] || { echo "xenlab: cannot resolve linux-image-amd64 (apt-get update?)" >&2; exit 1; }
kver_pkg=$(apt-cache policy "$kpkg" | awk '/Candidate:/{print $2}')
key="kernel=$kpkg=$kver_pkg recipe=$(sha256sum "$here/mkbase.sh" | cut -c1-16)"
mkdir -p "$cache"
if [ "$(cat "$cache/key" 2>/dev/null)" != "$key" ]; then
  log "building base images ($key)"
  bash "$here/mkbase.sh" "$cache" "$key" "$kpkg"
else
  log "base images cached ($key)"
fi

# ---- per-run overlay: our binaries, scripts, the domU initramfs --------------------------------
run=$(mktemp -d /tmp/zcnet-xenlab.XXXXXX)
qpid=
cleanup() {
  if [ -n "$qpid" ] && kill -0 "$qpid" 2>/dev/null; then kill "$qpid" 2>/dev/null || true; sleep 1; kill -9 "$qpid" 2>/dev/null || true; fi
  if [ "${ZCNET_XENLAB_KEEP:-0}" = 1 ]; then log "run directory kept: $run"; else rm -rf "$run"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# zc-netback, vif-zcnet and the units reach dom0 as an operator installs
# them: the runtime package, installed there with dpkg (scenario.sh).
log "cpack -G DEB in $bld"
(cd "$bld" && cpack -G DEB -B "$run/debs" >"$run/cpack.log" 2>&1) || { tail -20 "$run/cpack.log" >&2; exit 1; }
rt=$(ls "$run"/debs/zcnet_*.deb 2>/dev/null | head -1)
[ -n "$rt" ] || { echo "xenlab: cpack made no zcnet package: $(ls "$run/debs")" >&2; exit 1; }

# domU: busybox, the Xen modules, our static peers, iperf3 (with its
# libraries and the loader, mkbase.sh), an /init. For step 4, what a guest
# needs from the zcnet package (zc-stackd, zc-perf, zc-echo, libzcnet,
# zc-xen-guest), taken out of the package, with every library they load and
# the build host's loader under /opt/zcnet (the domU has no libc of its
# own); /usr/local/bin runs them through that loader.
du=$run/domu
mkdir -p "$du"/{bin,dev,proc,sys,tmp,run,lib/modules,opt/zcnet/bin,opt/zcnet/lib,usr/local/bin,usr/local/sbin}
cp /bin/busybox "$du/bin/busybox"
cp "$cache"/domu-modules/*.ko* "$du/lib/modules/"
cp -a "$cache/domu-iperf3/." "$du/"
cp "$peer_bin" "$du/bin/zc-xenlab-peer"
cp "$perf_bin" "$du/bin/zc-xenlab-perf"
install -m755 "$here/domu-init.sh" "$du/init"
install -m644 "$here/domu-zc.sh" "$du/lib/xenlab-zc.sh"
pkg=$run/pkgroot
dpkg-deb -x "$rt" "$pkg"
pkglib=$(dirname "$(find "$pkg" -name 'libzcnet.so.1' | head -1)")
install -m755 "$pkg/usr/sbin/zc-xen-guest" "$du/usr/local/sbin/zc-xen-guest"
for p in zc-stackd zc-perf zc-echo; do
  cp "$pkg/usr/bin/$p" "$du/opt/zcnet/bin/"
  if LD_LIBRARY_PATH=$pkglib ldd "$pkg/usr/bin/$p" | grep -q "not found"; then
    echo "xenlab: $p from the package misses libraries: $(LD_LIBRARY_PATH=$pkglib ldd "$pkg/usr/bin/$p")" >&2; exit 1
  fi
  LD_LIBRARY_PATH=$pkglib ldd "$pkg/usr/bin/$p" | awk '/=> \//{print $3} /^\t\/[^ ]*ld-linux/{print $1}' |
    while read -r l; do cp -L "$l" "$du/opt/zcnet/lib/"; done
  printf '#!/bin/sh\nexec /opt/zcnet/lib/ld-linux-x86-64.so.2 --library-path /opt/zcnet/lib /opt/zcnet/bin/%s "$@"\n' "$p" \
    >"$du/usr/local/bin/$p"
  chmod 755 "$du/usr/local/bin/$p"
done
[ -x "$du/opt/zcnet/lib/ld-linux-x86-64.so.2" ] || { echo "xenlab: no loader for zc-stackd in the domU" >&2; exit 1; }
(cd "$du" && find . -print0 | cpio --null -o -H newc --quiet | gzip -1) >"$run/domu.cpio.gz"

ov=$run/overlay
mkdir -p "$ov"/opt/zcnet/{bin,lib,domu,lab,debs} "$ov/etc/xenlab"
install -m755 "$here/dom0-init.sh" "$ov/init"
install -m755 "$here"/scenario.sh "$ov/opt/zcnet/lab/"
cp "$rt" "$ov/opt/zcnet/debs/"
cp "$cache/vmlinuz" "$ov/opt/zcnet/domu/vmlinuz"
cp "$run/domu.cpio.gz" "$ov/opt/zcnet/domu/initrd.gz"
for b in "$labtest_bin" "$hvxen_bin"; do
  cp "$b" "$ov/opt/zcnet/bin/"
  # Their libraries, except glibc's own (dom0 has the same release).
  ldd "$b" | awk '/=> \//{print $3}' | while read -r l; do
    case "$(basename "$l")" in libc.so*|libm.so*|ld-linux*|libpthread*|libdl.so*|librt.so*) continue ;; esac
    cp -L "$l" "$ov/opt/zcnet/lib/"
  done
done
echo "$what" >"$ov/etc/xenlab/what"
(cd "$ov" && find . -print0 | cpio --null -o -H newc --quiet | gzip -1) >"$run/overlay.cpio.gz"
cat "$cache/dom0-base.cpio.gz" "$run/overlay.cpio.gz" >"$run/dom0.cpio.gz"
log "images ready after $(( $(date +%s) - t0 ))s; booting Xen in QEMU (TCG; a few minutes)"
# The boot's budget (ZCNET_XENLAB_TIMEOUT) counts from here: building the
# images first (half an hour on a fresh machine) must not use it up.
tb=$(date +%s)

# ---- boot ---------------------------------------------------------------------------------------
serial=$run/serial.log
: >"$serial"
qemu-system-x86_64 -accel tcg,thread=multi -cpu qemu64 -m 3G -smp 2 -no-reboot \
  -kernel "$cache/xen.elf" \
  -append "console=com1 com1=115200,8n1 loglvl=all guest_loglvl=all dom0_mem=1280M,max:1280M noreboot" \
  -initrd "$cache/vmlinuz console=hvc0 earlyprintk=xen rdinit=/init,$run/dom0.cpio.gz" \
  -serial "file:$serial" -monitor none -display none -net none \
  -device isa-debug-exit,iobase=0xf4,iosize=0x04 </dev/null >"$run/qemu.out" 2>&1 &
qpid=$!

# Markers (printed by dom0-init.sh and scenario.sh): XENLAB-DOM0-UP,
# XENLAB-PASS <step>, XENLAB-FAIL <step>: <why>, XENLAB-END.
steps=$([ "$what" = all ] && echo "step1 step2 step3 step4" || echo "$what")
verdict=timeout
while :; do
  el=$(( $(date +%s) - tb ))
  if grep -aq "XENLAB-END" "$serial"; then verdict=end; break; fi
  if ! kill -0 "$qpid" 2>/dev/null; then verdict=qemu-exited; break; fi
  if grep -aqE "Kernel panic|Panic on CPU|\(XEN\) \*\*\*\*\*\*" "$serial"; then verdict=panic; sleep 2; break; fi
  if [ "$el" -ge "$timeout_s" ]; then break; fi
  if ! grep -aq "XENLAB-DOM0-UP" "$serial" && [ "$el" -ge $(( timeout_s / 2 )) ]; then verdict=no-dom0; break; fi
  sleep 2
done
# Let QEMU leave through the debug-exit port; kill it otherwise.
for _ in $(seq 1 15); do kill -0 "$qpid" 2>/dev/null || break; sleep 1; done
kill "$qpid" 2>/dev/null || true
wait "$qpid" 2>/dev/null || true
qpid=
el=$(( $(date +%s) - t0 ))

grep -a "^XENLAB-\|XENLAB-PASS\|XENLAB-FAIL\|XENLAB-OK" "$serial" | tr -d '\r' | sed 's/^/  /' >&2 || true
rc=0
for s in $steps; do
  if ! grep -aq "XENLAB-PASS $s" "$serial"; then rc=1; fi
done
if grep -aq "XENLAB-FAIL" "$serial"; then rc=1; fi
out=${ZCNET_XENLAB_LOG:-$src/build/xenlab-serial.log}
mkdir -p "$(dirname "$out")"
cp "$serial" "$out"
if [ "$rc" -ne 0 ]; then
  log "FAILED ($verdict after ${el}s); serial log: $out"
  if grep -aq "XENLAB-FAIL" "$serial"; then
    grep -an "XENLAB-FAIL" "$serial" | head -5 >&2
    first=$(grep -an "XENLAB-FAIL" "$serial" | head -1 | cut -d: -f1)
    sed -n "$(( first > 80 ? first - 80 : 1 )),$(( first + 20 ))p" "$serial" | tr -d '\r' >&2
  else
    tail -n 80 "$serial" | tr -d '\r' >&2
  fi
  exit 1
fi
log "PASS: $steps (${el}s wall under TCG emulation; not a performance figure); serial log: $out"
