#!/bin/bash
# `make bench`: boot the release kernel (tsc=reliable) and run the benchmark
# matrix of bench/matrix in the VM, then bench/report.py turns the BENCH lines
# of the log into out/bench/results.json, a table and PNG plots.
#
# Under TCG the nested vCPUs of these benchmarks now and then bring the test
# VM's own kernel down, or stop the guest altogether (docs/benchmarks.md,
# "Intermittent nested-vCPU faults"; also with only upstream code running).
# So an oops panics the guest at once (oops=panic), a stopped guest is killed
# after STALL seconds of silence (/init prints a heartbeat while a test runs),
# and what that boot did not run goes into a new boot, the run the guest
# died in first (once per entry: an entry it dies in twice is dropped, the
# repetitions of a "rep" entry included).  report.py reads every boot's log.
#
#   BENCH_REPS=N      repetitions of the "rep" entries (default 3)
#   BENCH_DPT=0       leave out the demand_paging_test entries
#   BENCH_MATRIX=f    another matrix file
#   BENCH_ONLY=re     only entries whose test entry matches the regex (grep -E)
#   BENCH_BOOTS=N     at most N boots (default 4)
#   BENCH_BUDGET=S    no new boot after S seconds; a boot's hard timeout is what
#                     is left of S + 180 (default 960: the whole make bench stays
#                     within 20 minutes with the release kernel built)
#   STALL=S           silence that counts as a stopped guest (default 150)
#   plus what scripts/vm-test.sh reads (APPEND, KST_TIMEOUT, SKIP_BUILD)
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

# One hold of the lock for every boot, so that nothing runs in between; the
# kernel is built first, so that its build time is not taken from the budget.
gp_lock
if [ "${SKIP_BUILD:-0}" != 1 ]; then
	FLAVOR=release "$TOP/scripts/kernel.sh" || die "release kernel build failed"
fi
BOOTS=${BENCH_BOOTS:-4}
BUDGET=${BENCH_BUDGET:-960}
read -r -a todo <<< "$list"
declare -A interrupted=()
logs=()
t0=$(now)
stamp=$(date +%Y%m%d-%H%M%S)
skip=${SKIP_BUILD:-0}
for ((boot = 1; boot <= BOOTS && ${#todo[@]} > 0; boot++)); do
	el=$(since "$t0"); el=${el%.*}
	if [ "$boot" -gt 1 ] && [ "$el" -ge "$BUDGET" ]; then
		log "no boot $boot: ${el}s spent (BENCH_BUDGET=$BUDGET); ${#todo[@]} runs not run"
		break
	fi
	blog=$OUT/logs/bench-$stamp-boot$boot.log
	logs+=("$blog")
	log "boot $boot: ${#todo[@]} runs"
	FLAVOR=release TESTS="${todo[*]}" LOG="$blog" SKIP_BUILD=$skip \
		APPEND="tsc=reliable oops=panic kst.heartbeat=30 ${APPEND:-}" \
		VERBOSE=${VERBOSE:-1} STALL=${STALL:-150} TIMEOUT=$((BUDGET + 180 - el)) \
		KST_TIMEOUT=${KST_TIMEOUT:-240} "$TOP/scripts/vm-test.sh"
	vrc=$?
	skip=1
	log "boot $boot finished (rc=$vrc) after $(since "$t0") s; report.py judges"
	# What this boot got through: /init names each run in a START and a
	# RESULT line, in list order.  A START without its RESULT is the run
	# the guest died in.
	[ -f "$blog" ] || break
	ndone=$(grep -ac '^=== KST: RESULT ' "$blog")
	nstart=$(grep -ac '^=== KST: START ' "$blog")
	if [ "$ndone" -ge "${#todo[@]}" ]; then
		todo=()
		break
	fi
	if [ "$nstart" -eq 0 ]; then
		log "boot $boot ran nothing: giving up"
		break
	fi
	rest=("${todo[@]:$ndone}")
	if [ "$nstart" -gt "$ndone" ]; then
		dead=${rest[0]}
		rest=("${rest[@]:1}")
		if [ -z "${interrupted[$dead]:-}" ]; then
			interrupted[$dead]=1
			rest=("$dead" "${rest[@]}")
			log "the guest died in $dead: it runs again in the next boot"
		else
			log "the guest died in $dead again: not run a third time"
		fi
	fi
	todo=("${rest[@]}")
done
[ ${#todo[@]} -gt 0 ] && log "${#todo[@]} runs never ran: ${todo[*]}"
largs=()
for l in "${logs[@]}"; do [ -f "$l" ] && largs+=(--log "$l"); done
[ ${#largs[@]} -gt 0 ] || die "no VM log"
python3 "$TOP/bench/report.py" "${largs[@]}" --matrix "$MATRIX" \
	--reps "$REPS" --out "$OUT/bench"
