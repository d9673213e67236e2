#!/bin/sh
# The installed binaries carry Debian's hardening (CMakeLists.txt,
# ZCNET_HARDEN), checked on the ELF files themselves with readelf:
#   PIE        executables are ET_DYN with DF_1_PIE
#   RELRO/NOW  a GNU_RELRO segment and immediate binding (BIND_NOW / DF_1_NOW)
#   stack      __stack_chk_fail imported (-fstack-protector-strong)
#   fortify    in optimised builds, some __*_chk libc function imported by at
#              least one of the files (a file whose calls all have unknown
#              object sizes imports none even when fortified: reported, as
#              Debian's hardening-check does, but only all files without one
#              fail)
# Usage: check_hardening.sh BUILD_TYPE FILE...
set -eu
type=$1
shift
command -v readelf >/dev/null || { echo "readelf not installed" >&2; exit 77; }
rc=0
fortified=0
bad() { echo "$f: $*"; rc=1; }
for f in "$@"; do
  h=$(readelf -hldW "$f" 2>/dev/null) || { bad "not an ELF file"; continue; }
  syms=$(readelf --dyn-syms -W "$f" | awk '$7 == "UND" {print $8}')
  case "$f" in
    *.so*) ;;
    *) printf '%s\n' "$h" | grep -q 'Type: *DYN' || bad "not PIE (ELF type is not DYN)"
       printf '%s\n' "$h" | grep -q 'FLAGS_1.*PIE' || bad "not PIE (no DF_1_PIE)" ;;
  esac
  printf '%s\n' "$h" | grep -q 'GNU_RELRO' || bad "no RELRO segment"
  printf '%s\n' "$h" | grep -Eq 'BIND_NOW|FLAGS_1.* NOW' || bad "no immediate binding (-z now)"
  printf '%s\n' "$syms" | grep -q '^__stack_chk_fail' || bad "no stack protector (__stack_chk_fail not imported)"
  if printf '%s\n' "$syms" | grep -Eq '^__[a-z_]+_chk(@|$)'; then
    fortified=$((fortified + 1))
  else
    echo "$f: imports no __*_chk function (no fortifiable call with a known object size)"
  fi
done
case "$type" in
  Release|RelWithDebInfo|MinSizeRel)
    [ "$fortified" -gt 0 ] || { echo "not fortified: no file imports a __*_chk function"; rc=1; } ;;
esac
[ $rc -eq 0 ] && echo "hardened: $*"
exit $rc
