#!/bin/bash
# Run cmocka test binaries: tests/run-unit.sh <flavour> <binary>...
# Each prints cmocka's report; this adds up "[  PASSED  ] N test(s)." and
# "[  FAILED  ] N test(s)" lines and fails if any binary exits non-zero
# (a failed test, a sanitizer report, a crash).
set -uo pipefail
flavour=$1; shift
pass=0; fail=0; bad=""
for t in "$@"; do
	out=$("$t" 2>&1); rc=$?
	echo "$out"
	p=$(echo "$out" | sed -nE 's/^\[  PASSED  \] ([0-9]+) test.*/\1/p' | tail -n1)
	f=$(echo "$out" | sed -nE 's/^\[  FAILED  \] ([0-9]+) test.*/\1/p' | tail -n1)
	pass=$((pass + ${p:-0})); fail=$((fail + ${f:-0}))
	if [ "$rc" != 0 ]; then
		bad="$bad $(basename "$t")"
		[ "${f:-0}" = 0 ] && fail=$((fail + 1))
	fi
done
echo "unit ($flavour): $pass passed, $fail failed${bad:+ (failing:$bad)}"
[ -z "$bad" ]
