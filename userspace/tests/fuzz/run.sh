#!/bin/bash
# Run libFuzzer targets: tests/fuzz/run.sh <seconds per target> <name>...
#
# Each target build/fuzz/fuzz_<name> starts from its work corpus
# (build/fuzz/work/<name>/, kept between runs, where libFuzzer adds what it
# finds) and the committed seeds (tests/fuzz/corpus/<name>/, read only), so
# every seed, regression inputs included, is replayed first.  A crash, leak,
# sanitizer report, failed check or hang (FUZZ_TIMEOUT seconds for one
# input) fails the run; the input is saved in build/fuzz/artifacts/<name>/.
# Prints one line per target: executions, coverage (edges), features, corpus.
# FUZZ_JOBS=1 (default) runs the targets one after the other, in this shell.
set -uo pipefail
cd "$(dirname "$0")/../.."
secs=$1; shift
: "${FUZZ_TIMEOUT:=20}"
B=build/fuzz
bad=""
total=0
for t in "$@"; do
	bin=$B/fuzz_$t
	work=$B/work/$t
	art=$B/artifacts/$t
	log=$B/log-$t.txt
	mkdir -p "$work" "$art" tests/fuzz/corpus/"$t"
	[ -x "$bin" ] || { echo "fuzz: $bin missing (make fuzz-build)"; bad="$bad $t"; continue; }
	t0=$(date +%s.%N)
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:allocator_may_return_null=1 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		"$bin" -max_total_time="$secs" -timeout="$FUZZ_TIMEOUT" -rss_limit_mb=2048 \
		-print_final_stats=1 -artifact_prefix="$art/" "$work" tests/fuzz/corpus/"$t" \
		> "$log" 2>&1
	rc=$?
	t1=$(date +%s.%N)
	runs=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+).*/\1/p' "$log" | tail -n1)
	cov=$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -n1 |
	      sed -nE 's/.*cov: ([0-9]+) ft: ([0-9]+) corp: ([0-9]+).*/cov \1, ft \2, corpus \3/p')
	printf 'fuzz %-12s %8s execs in %5.1f s  %s\n' "$t" "${runs:-?}" \
		"$(awk "BEGIN { print $t1 - $t0 }")" "${cov:-}"
	total=$((total + ${runs:-0}))
	if [ "$rc" != 0 ]; then
		bad="$bad $t"
		echo "fuzz: $t failed (exit $rc), log $log, inputs in $art/:"
		grep -E 'ERROR|check failed|SUMMARY|Test unit written|==[0-9]+==' "$log" | head -n 20
	fi
done
if [ -n "$bad" ]; then
	echo "fuzz: $total executions, failing:$bad"
	exit 1
fi
echo "fuzz: $total executions, no failure"
