#!/bin/sh
# Renders each man page the way lintian's manpage-has-errors-from-man does
# (man --warnings, UTF-8) and with groff -ww; any warning fails.
# Exit 77 (skip) when neither man nor groff is installed.
command -v man >/dev/null || command -v groff >/dev/null || { echo "man/groff not installed" >&2; exit 77; }
rc=0
for f in "$@"; do
  if command -v man >/dev/null; then
    out=$(LC_ALL=C.UTF-8 MANROFFSEQ='' MANWIDTH=80 man --warnings -E UTF-8 -l -Tutf8 -Z "$f" 2>&1 >/dev/null)
  else
    out=$(groff -man -Tutf8 -ww -z "$f" 2>&1)
  fi
  [ -z "$out" ] || { echo "$f:"; echo "$out"; rc=1; }
  # The page says something (a roff error can also swallow everything).
  n=$(groff -man -Tutf8 "$f" 2>/dev/null | wc -l)
  [ "$n" -ge 20 ] || { echo "$f: renders to only $n lines"; rc=1; }
done
exit $rc
