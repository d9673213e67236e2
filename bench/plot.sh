#!/usr/bin/env bash
# Plot Gbit/s against frame size (log x), one line per mode, from the JSON
# that zc-vmbench writes: {"rows":[{"mode":"zc","frame":64,"gbps":1.2,...},...]}
#
#   bench/plot.sh RESULTS.json [OUT.png] [TITLE]
#
# OUT.png defaults to RESULTS.png beside the JSON. Needs jq and gnuplot
# (scripts/install-deps.sh installs both). ZC_PLOT_LOGY=1 makes the y axis
# logarithmic too (small frames differ by orders of magnitude). Rows without a numeric frame or
# gbps, or with an "error", are left out rather than plotted as zero.
set -euo pipefail

usage() { echo "usage: $0 RESULTS.json [OUT.png] [TITLE]" >&2; exit 2; }
if [ $# -lt 1 ] || [ $# -gt 3 ]; then usage; fi
json=$1
out=${2:-${json%.json}.png}
title=${3:-"zcnet VM-to-VM throughput by frame size"}
[ -r "$json" ] || { echo "plot: cannot read $json" >&2; exit 1; }
for tool in jq gnuplot; do
  command -v "$tool" >/dev/null || { echo "plot: $tool not found (run scripts/install-deps.sh)" >&2; exit 1; }
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Modes in a fixed order (the known ones first, as the runner lists them),
# then any others in the order they appear.
# One series per mode, and per guest-pair/queue count when a run has several
# (zc-vmbench --pairs 1,2 --queues 1,2): "zc 2p1q".
series='def series: .mode + (if ((.pairs // 1) != 1 or (.queues // 1) != 1)
                          then " \(.pairs // 1)p\(.queues // 1)q" else "" end);'
known=(zc double-copy pressure kernel-udp kernel-tcp memcpy)
mapfile -t present < <(jq -r "$series"' [.rows[]? | select(.mode | type == "string") | series] | unique | .[]' "$json")
modes=()
for m in "${known[@]}"; do
  for p in "${present[@]}"; do
    case "$p" in "$m"|"$m "*) modes+=("$p") ;; esac
  done
done
for p in "${present[@]}"; do
  case " ${modes[*]} " in *" $p "*) ;; *) modes+=("$p") ;; esac
done
[ ${#modes[@]} -gt 0 ] || { echo "plot: no rows with a mode in $json" >&2; exit 1; }

plot_cmds=()
i=0
for m in "${modes[@]}"; do
  f="$tmp/mode$i.dat"
  jq -r --arg m "$m" "$series"'
    [.rows[] | select((.mode | type) == "string" and series == $m and (.frame|type) == "number"
                      and (.gbps|type) == "number" and .frame > 0 and ((.error // "") == ""))]
    | sort_by(.frame) | .[] | "\(.frame) \(.gbps)"' "$json" >"$f"
  if [ -s "$f" ]; then
    label=${m//[\"\\]/}
    plot_cmds+=("'$f' using 1:2 with linespoints ls $((i % 8 + 1)) title \"$label\"")
  fi
  i=$((i + 1))
done
[ ${#plot_cmds[@]} -gt 0 ] || { echo "plot: no plottable rows in $json" >&2; exit 1; }

# Frame sizes actually measured become the x tics.
plotted='[.rows[] | select((.frame|type) == "number" and .frame > 0 and (.gbps|type) == "number"
                          and ((.error // "") == "")) | .frame] | unique'
xtics=$(jq -r "$plotted"' | map("\"\(.)\" \(.)") | join(", ")' "$json")
# A margin on both ends so the end points and their tic labels are not on the border.
xmin=$(jq -r "$plotted"' | .[0] / 1.5' "$json")
xmax=$(jq -r "$plotted"' | .[-1] * 1.5' "$json")

if gnuplot -e 'set terminal' 2>&1 | grep -q pngcairo; then
  term='pngcairo size 1100,700 enhanced font "Sans,11"'
else
  term='png size 1100,700'
fi

{
  echo "set terminal $term"
  echo "set output '$out'"
  echo "set title \"${title//\"/}\""
  echo 'set xlabel "frame size (bytes, log scale)"'
  echo 'set ylabel "Gbit/s"'
  echo 'set logscale x 2'
  echo "set xtics ($xtics)"
  echo "set xrange [$xmin:$xmax]"
  if [ "${ZC_PLOT_LOGY:-0}" = 1 ]; then
    echo 'set logscale y 10'
  else
    echo 'set yrange [0:*]'
  fi
  echo 'set grid xtics ytics'
  echo 'set key outside right top box'
  echo 'set style line 1 lc rgb "#1f77b4" lw 2 pt 7 ps 1.2'
  echo 'set style line 2 lc rgb "#ff7f0e" lw 2 pt 5 ps 1.2'
  echo 'set style line 3 lc rgb "#2ca02c" lw 2 pt 9 ps 1.3'
  echo 'set style line 4 lc rgb "#d62728" lw 2 pt 11 ps 1.3'
  echo 'set style line 5 lc rgb "#9467bd" lw 2 pt 13 ps 1.3'
  echo 'set style line 6 lc rgb "#7f7f7f" lw 2 dt 2 pt 4 ps 1.1'
  echo 'set style line 7 lc rgb "#8c564b" lw 2 pt 6 ps 1.1'
  echo 'set style line 8 lc rgb "#17becf" lw 2 pt 8 ps 1.1'
  printf 'plot '
  sep=''
  for c in "${plot_cmds[@]}"; do printf '%s%s' "$sep" "$c"; sep=', '; done
  echo
} >"$tmp/plot.gp"

gnuplot "$tmp/plot.gp"
echo "plot: wrote $out"
