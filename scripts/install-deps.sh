#!/usr/bin/env bash
# Install every Debian package zcnet needs. Idempotent: does nothing when all
# are present. Run as root (CI and the README commands do).
set -euo pipefail

pkgs=(
  build-essential cmake pkg-config git
  libxen-dev                       # Xen public headers, libxengnttab/-evtchn/-store
  libgtest-dev libgmock-dev        # GoogleTest
  libbenchmark-dev                 # Google Benchmark
  libxdp-dev libbpf-dev clang llvm # AF_XDP uplink and its XDP program
  liburing-dev                     # io_uring kernel link
  iproute2 iperf3                  # network-namespace tests and kernel baselines
  gnuplot-nox jq                   # bench/plot.sh: the throughput PNG from the JSON
  qemu-system-x86 debootstrap busybox-static cpio  # tests/xenlab: Xen 4.17 booted in QEMU
  libsystemd-dev                   # zc-netback: sd_notify (zc-netback.service, Type=notify)
  dpkg-dev lintian                 # cpack -G DEB (dpkg-shlibdeps), the packages' lintian check
  man-db groff-base                # dist/check_man.sh renders the man pages
)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages: ${missing[*]}; run as root" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
