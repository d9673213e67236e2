#!/usr/bin/env bash
# Builds the cached, slow-changing half of the Xen lab from Debian packages:
#   xen.elf            Xen 4.17 (uncompressed: QEMU's multiboot loader wants the ELF)
#   vmlinuz            Debian's Linux 6.1 (dom0 and domU run the same kernel)
#   dom0-base.cpio.gz  a debootstrap'd bookworm root with xen-utils and the Xen modules
#   domu-modules/      the .ko files the domU initramfs needs
#   domu-iperf3/       iperf3 with its shared libraries and the loader, for the
#                      domU initramfs (a root tree: usr/bin, lib, lib64)
#   key                what this was built from; lab.sh rebuilds when it changes
# Usage: mkbase.sh CACHE_DIR KEY KERNEL_PKG
set -euo pipefail
cache=$1 key=$2 kpkg=$3
mirror=${ZCNET_XENLAB_MIRROR:-http://deb.debian.org/debian}
secmirror=${ZCNET_XENLAB_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
work=$cache/work
rm -f "$cache/key"
# A finished debootstrap of an interrupted build is reused: it is the slow part.
[ -e "$work/root/.xenlab-debootstrap-done" ] || rm -rf "$work"
rm -rf "$work/debs" "$work/pkgs"
mkdir -p "$work/debs"
log() { echo "xenlab: $*" >&2; }

# 1. dom0 root. xen-utils-4.17 is the toolstack (xl, xenstored, xenconsoled);
#    busybox-static gives nc/ping for the scenarios; iperf3 and ethtool serve
#    the uplink step (the server in dom0's namespace, the veth's checksum
#    offload; the domUs take iperf3 from this root). dom0 is offline, so the
#    root also carries the shared libraries the zcnet package depends on
#    (dpkg-deb -f zcnet_*.deb Depends): lab.sh installs that package with
#    dpkg and dpkg refuses it if one is missing.
[ -e "$work/root/.xenlab-debootstrap-done" ] || log "debootstrap dom0 root (a few minutes)"
root=$work/root
if [ ! -e "$root/.xenlab-debootstrap-done" ]; then
  debootstrap --variant=minbase \
    --include=xen-utils-4.17,xenstore-utils,iproute2,kmod,procps,busybox-static,iperf3,ethtool,libbpf1,libxdp1,liburing2,libsystemd0 \
    bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 ||
    { tail -30 "$work/debootstrap.log" >&2; exit 1; }
  # The point releases and security updates, as on the build host: the
  # package's Depends carry the versions of the host's libraries
  # (dpkg-shlibdeps), newer than bookworm's first release.
  cat >"$root/etc/apt/sources.list" <<SRC
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb $secmirror bookworm-security main
SRC
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  chroot "$root" sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get -y -qq upgrade' \
    >>"$work/debootstrap.log" 2>&1 || { tail -30 "$work/debootstrap.log" >&2; exit 1; }
  chroot "$root" apt-get clean
  touch "$root/.xenlab-debootstrap-done"
fi

# 2. The hypervisor must be the version of the tools in that root (libxenctrl
#    and Xen's domctl interface version must agree).
xenver=$(chroot "$root" dpkg-query -W -f='${Version}' xen-utils-4.17)
log "hypervisor xen-hypervisor-4.17-amd64=$xenver, kernel $kpkg"
chmod 777 "$work/debs" # apt's _apt user downloads into it
(cd "$work/debs" && apt-get download -q "xen-hypervisor-4.17-amd64=$xenver" "$kpkg" >/dev/null)
for d in "$work"/debs/*.deb; do dpkg -x "$d" "$work/pkgs"; done
gunzip -c "$work"/pkgs/boot/xen-4.17-amd64.gz >"$cache/xen.elf.new"
kver=$(ls "$work/pkgs/lib/modules")
cp "$work/pkgs/boot/vmlinuz-$kver" "$cache/vmlinuz.new"

# 3. Modules: Xen's device drivers and netfront (never netback), and veth for
#    the uplink step, with depmod.
mods=$work/pkgs/lib/modules/$kver
dst=$root/lib/modules/$kver
mkdir -p "$dst/kernel/drivers"
cp -a "$mods/kernel/drivers/xen" "$dst/kernel/drivers/"
mkdir -p "$dst/kernel/drivers/net"
cp "$mods"/kernel/drivers/net/xen-netfront.ko* "$mods"/kernel/drivers/net/veth.ko* "$dst/kernel/drivers/net/"
cp "$mods"/modules.order "$mods"/modules.builtin* "$dst/" 2>/dev/null || true
chroot "$root" depmod "$kver"
mkdir -p "$root/etc/modprobe.d"
echo "install xen-netback /bin/false" >"$root/etc/modprobe.d/xenlab-no-netback.conf"
rm -rf "$cache/domu-modules.new" && mkdir -p "$cache/domu-modules.new"
cp "$mods"/kernel/drivers/net/xen-netfront.ko* "$cache/domu-modules.new/"
for m in xen-evtchn xen-gntalloc xen-gntdev xenfs xen-privcmd; do
  f=$(find "$mods/kernel/drivers/xen" -name "$m.ko*" | head -1)
  [ -n "$f" ] && cp "$f" "$cache/domu-modules.new/"
done
echo "$kver" >"$cache/domu-modules.new/KVER"

# 4. iperf3 for the domUs (busybox initramfs, no libc of their own): the
#    binary, every library ldd names and the loader, at their paths (read
#    inside the chroot: its symlinks may be absolute).
ip3=$cache/domu-iperf3.new
rm -rf "$ip3" && mkdir -p "$ip3/usr/bin"
cp "$root/usr/bin/iperf3" "$ip3/usr/bin/"
chroot "$root" ldd /usr/bin/iperf3 | awk '/=> \//{print $3} /^\t\/[^ ]*ld-linux/{print $1}' | while read -r l; do
  mkdir -p "$ip3$(dirname "$l")"
  chroot "$root" cat "$l" >"$ip3$l"
  chmod 755 "$ip3$l"
done
[ -x "$ip3/lib64/ld-linux-x86-64.so.2" ] || { echo "xenlab: no loader for iperf3 (ldd: $(chroot "$root" ldd /usr/bin/iperf3))" >&2; exit 1; }

# 5. Slim it (docs, locales, apt state) and pack. /init comes with the overlay.
rm -f "$root/.xenlab-debootstrap-done"
rm -rf "$root"/usr/share/{doc,man,info,locale} "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/*
log "packing dom0 root"
(cd "$root" && find . -print0 | cpio --null -o -H newc --quiet | gzip -1) >"$cache/dom0-base.cpio.gz.new"

for f in xen.elf vmlinuz dom0-base.cpio.gz; do mv "$cache/$f.new" "$cache/$f"; done
rm -rf "$cache/domu-modules" && mv "$cache/domu-modules.new" "$cache/domu-modules"
rm -rf "$cache/domu-iperf3" && mv "$cache/domu-iperf3.new" "$cache/domu-iperf3"
echo "$xenver" >"$cache/xen-version"
rm -rf "$work"
echo "$key" >"$cache/key"
log "base images ready in $cache"
