#!/usr/bin/env bash
# A script's lines between "# README:begin" and "# README:end" must appear
# verbatim in README.md as the ```sh block that follows the line
# "<!-- quoted from SCRIPT -->", so the README shows what the tests run.
# Usage: readme_quote_check.sh SOURCE_DIR SCRIPT (SCRIPT relative to SOURCE_DIR)
set -euo pipefail
src=${1:?usage: readme_quote_check.sh SOURCE_DIR SCRIPT}
script=${2:?usage: readme_quote_check.sh SOURCE_DIR SCRIPT}
want=$(sed -n '/^# README:begin$/,/^# README:end$/p' "$src/$script" | sed '1d;$d')
got=$(awk -v m="<!-- quoted from $script -->" '
    $0 == m { armed = 1; next }
    armed == 1 && /^```sh$/ { armed = 2; next }
    armed == 2 && /^```$/ { exit }
    armed == 2 { print }' "$src/README.md")
[ -n "$want" ] || { echo "$script: no README:begin/README:end block"; exit 1; }
[ -n "$got" ] || { echo "README.md: no \`\`\`sh block after <!-- quoted from $script -->"; exit 1; }
if [ "$want" != "$got" ]; then
    echo "README.md's quote of $script differs from the script (- script, + README):"
    diff <(echo "$want") <(echo "$got") || true
    exit 1
fi
echo "README.md quotes $script verbatim"
