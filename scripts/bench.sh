#!/bin/bash
# `make bench`: boot the release kernel once (tsc=reliable) and run the
# benchmark matrix of bench/matrix in the VM, then bench/report.py turns the
# BENCH lines of the log into out/bench/results.json, a table and PNG plots.
#
#   BENCH_REPS=N      repetitions of the "rep" entries (default 3)
#   BENCH_DPT=0       leave out the demand_paging_test entries
#   BENCH_MATRIX=f    another matrix file
#   BENCH_ONLY=re     only entries whose test entry matches the regex (grep -E)
#   plus what scripts/vm-test.sh reads (APPEND, KST_TIMEOUT, TIMEOUT, SKIP_BUILD)
#   KST_TIMEOUT defaults to 240 s per entry: the longest (bench_helper) takes
#   about 55 s, and a hung nested vCPU (seen under TCG, see docs/benchmarks.md)
#   must not eat the 20-minute budget
# Exit status: report.py's (non-zero if a benchmark failed, printed wrong
# contents or nothing at all); modes a binary rejects are reported missing.
set -uo pipefail
. "$(dirname "$0")/common.sh"
REPS=${BENCH_REPS:-3}
MATRIX=${BENCH_MATRIX:-$TOP/bench/matrix}
[ -f "$MATRIX" ] || die "no matrix $MATRIX"

entries() {	# kind -> entries of that kind, filtered
	awk -v k="$1" -v dpt="${BENCH_DPT:-1}" '
		/^[ \t]*(#|$)/ { next }
		$1 == k && !(dpt == "0" && $5 ~ /^demand_paging_test/) { print $5 }' "$MATRIX" |
	if [ -n "${BENCH_ONLY:-}" ]; then grep -E -- "$BENCH_ONLY" || true; else cat; fi
}
rep=$(entries rep)
once=$(entries once)
list=""
for ((i = 0; i < REPS; i++)); do list="$list $rep"; done
list=$(echo $list $once)
[ -n "$list" ] || die "nothing to run (BENCH_ONLY=${BENCH_ONLY:-})"
log "$(echo $list | wc -w) runs: $REPS x $(echo $rep | wc -w) repeated entries + $(echo $once | wc -w) once"

t0=$(now)
FLAVOR=release TESTS="$list" APPEND="tsc=reliable ${APPEND:-}" VERBOSE=${VERBOSE:-1} \
	KST_TIMEOUT=${KST_TIMEOUT:-240} "$TOP/scripts/vm-test.sh"
vrc=$?
log "VM run finished (rc=$vrc) after $(since "$t0") s; a rejected mode fails its test, report.py judges"
python3 "$TOP/bench/report.py" --log "$OUT/logs/latest.log" --matrix "$MATRIX" \
	--reps "$REPS" --out "$OUT/bench"
