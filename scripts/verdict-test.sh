#!/bin/bash
# Tests of common.sh's parse_verdict and verdict_line, on made-up run logs:
# the counts make check and make stress add up depend on them.
# Prints one line per case and "verdict-test: N of N cases pass".
set -uo pipefail
. "$(dirname "$0")/common.sh"
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
n=0 bad=0

# case NAME LOG RC EXPECTED-P/F/S EXPECTED-LINE
case_() {
	local name=$1 text=$2 rc=$3 want=$4 wline=$5 got line
	printf '%b' "$text" > "$tmp"
	parse_verdict "$tmp" "$rc"
	got="$VERDICT_P/$VERDICT_F/$VERDICT_S"
	line=$(verdict_line "$VERDICT_P" "$VERDICT_F" "$VERDICT_S")
	n=$((n + 1))
	if [ "$got" = "$want" ] && [ "$line" = "$wline" ]; then
		echo "ok    $name"
	else
		echo "FAIL  $name: got $got \"$line\", want $want \"$wline\""
		bad=$((bad + 1))
	fi
}

case_ "all passed" 'PASS a\nPASS b\n2 passed, 0 failed\n' 0 2/0/0 "2 passed, 0 failed"
case_ "skips kept" '19 passed, 0 failed, 2 skipped\n' 0 19/0/2 "19 passed, 0 failed, 2 skipped"
case_ "failures" '3 passed, 2 failed\n' 1 3/2/0 "3 passed, 2 failed"
case_ "last line wins" '1 passed, 1 failed\nretry\n2 passed, 0 failed\n' 0 2/0/0 "2 passed, 0 failed"
case_ "CR line ends (serial console)" '4 passed, 0 failed, 1 skipped\r\n' 0 4/0/1 "4 passed, 0 failed, 1 skipped"
case_ "no verdict: one failure" 'kernel panic\n' 1 0/1/0 "0 passed, 1 failed"
case_ "empty log" '' 0 0/1/0 "0 passed, 1 failed"
case_ "broke after its summary" '5 passed, 0 failed\n' 2 5/1/0 "5 passed, 1 failed"
case_ "failure already counted" '5 passed, 3 failed\n' 1 5/3/0 "5 passed, 3 failed"
case_ "not a verdict: text around it" 'x 2 passed, 0 failed\n2 passed, 0 failed (of 3)\n' 0 0/1/0 "0 passed, 1 failed"

echo "verdict-test: $((n - bad)) of $n cases pass"
[ "$bad" = 0 ]
