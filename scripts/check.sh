#!/bin/bash
# `make check`: deps, host unit tests (userspace/, if it has a `test` target),
# the debug kernel, the selftests, and the VM run of the full default set.
# Continues past a failing stage where that makes sense, and ends with
#   N passed, N failed[, N skipped]
# (the VM tests, plus one entry for the host unit tests when they exist).
# Exit status 0 iff nothing failed.
set -uo pipefail
. "$(dirname "$0")/common.sh"
export FLAVOR=debug
unset TESTS
T0=$(now)
mkdir -p "$OUT"; : > "$OUT/timings"

t0=$(now)
"$TOP/scripts/deps.sh" || { echo "check: make deps failed"; echo "0 passed, 1 failed"; exit 1; }
timing "deps" "$(since "$t0")"

hpass=0; hfail=0
if [ -f "$TOP/userspace/Makefile" ] && make -C "$TOP/userspace" -n test >/dev/null 2>&1; then
	t0=$(now)
	# build in parallel, run one at a time (the threaded tests are timing-aware)
	if make -C "$TOP/userspace" -j"$(nproc)" test-build && make -C "$TOP/userspace" test; then
		hpass=1; echo "check: host unit tests PASS"
	else
		hfail=1; echo "check: host unit tests FAIL"
	fi
	timing "host unit tests" "$(since "$t0")"
else
	echo "check: no userspace unit tests yet (userspace/Makefile has no test target)"
fi

# The loop's own verdict script, on made-up logs (repeated runs, reports).
if python3 "$TOP/scripts/vm-verdict-test.py"; then hpass=$((hpass + 1)); else hfail=$((hfail + 1)); fi
# make bench's report on made-up boot logs (lost boots, reports in our code).
if python3 "$TOP/bench/report-test.py"; then hpass=$((hpass + 1)); else hfail=$((hfail + 1)); fi
# The verdict helpers of common.sh that check and stress merge their counts with.
if "$TOP/scripts/verdict-test.sh"; then hpass=$((hpass + 1)); else hfail=$((hfail + 1)); fi

res=$(mktemp)
trap 'rm -f "$res"' EXIT
KEEP_TIMINGS=1 "$TOP/scripts/vm-test.sh" | tee "$res"
rc=${PIPESTATUS[0]}
parse_verdict "$res" "$rc"
p=$((VERDICT_P + hpass)); f=$((VERDICT_F + hfail))
echo "check: total $(since "$T0") s"
verdict_line "$p" "$f" "$VERDICT_S"
[ "$f" = 0 ]
