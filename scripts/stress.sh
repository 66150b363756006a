#!/bin/bash
# `make stress`: the long runs of the stress and fuzz selftests and of the
# userspace soak (userspace/soak_vm_test: lazy restores through gmfp-pager and
# postcopies from gmfp-serve, both killed at random), on the debug kernel
# (KASAN, lockdep, kmemleak and the other checkers of configs/debug.fragment);
# then the long run of the userspace libFuzzer targets on the host.
#
#   DURATION=secs    run time of guest_memfd_presence_stress_test and of
#                    userspace/soak_vm_test                         (default 600)
#   FUZZ_CALLS=n     calls of guest_memfd_presence_fuzz_test        (default 150000)
#   FUZZ_SECS=secs   the fuzzer's time cap                          (default DURATION)
#   SEED=n           seed for all three (default: each picks one and prints it)
#   STRESS_TESTS     extra in-VM tests to run in the same boot
#   USERFUZZ_SECS=s  then the libFuzzer targets of userspace/tests/fuzz/ on the
#                    host, s seconds each (default DURATION / the number of
#                    targets, at least 30; 0 skips them): docs/fuzzing.md
#
# The per-test and whole-VM timeouts follow DURATION.  Ends with one verdict
# line for all of it ("N passed, N failed"): the VM's tests, plus one for the
# fuzz targets.
set -euo pipefail
. "$(dirname "$0")/common.sh"
DURATION=${DURATION:-600}
FUZZ_CALLS=${FUZZ_CALLS:-150000}
FUZZ_SECS=${FUZZ_SECS:-$DURATION}
seed=${SEED:+:-s:$SEED}
export FLAVOR=${FLAVOR:-debug}
export TESTS="guest_memfd_presence_stress_test:-d:$DURATION$seed guest_memfd_presence_fuzz_test:-n:$FUZZ_CALLS:-d:$FUZZ_SECS$seed userspace/soak_vm_test:-d:$DURATION$seed ${STRESS_TESTS:-}"
export KST_TIMEOUT=${KST_TIMEOUT:-$((DURATION + 300))}
export TIMEOUT=${TIMEOUT:-$((2 * DURATION + FUZZ_SECS + 1200))}
export VERBOSE=${VERBOSE:-1}
ntargets=$(ls "$TOP"/userspace/tests/fuzz/fuzz_*.c | wc -l)
USERFUZZ_SECS=${USERFUZZ_SECS:-$(( DURATION / ntargets > 30 ? DURATION / ntargets : 30 ))}
if [ "$USERFUZZ_SECS" = 0 ]; then uf="no libFuzzer run"; else uf="then $ntargets libFuzzer targets $USERFUZZ_SECS s each"; fi
log "stress: $DURATION s of races, $FUZZ_CALLS fuzz calls (at most $FUZZ_SECS s), $DURATION s of userspace soak, $FLAVOR kernel; $uf"

vmout=$(mktemp)
trap 'rm -f "$vmout"' EXIT
rc=0
"$TOP/scripts/vm-test.sh" 2>&1 | tee "$vmout" || rc=1
parse_verdict "$vmout" "$rc"
passed=$VERDICT_P failed=$VERDICT_F

# The protocol parsers under coverage-guided fuzzing, on the host (no lock:
# neither a kernel build nor a VM run).
if [ "$USERFUZZ_SECS" != 0 ]; then
	t0=$(now)
	if make -C "$TOP/userspace" -s fuzz-long FUZZ_SECONDS="$USERFUZZ_SECS"; then
		passed=$((passed + 1))
	else
		failed=$((failed + 1))
	fi
	timing "userspace fuzz-long" "$(since "$t0")"
fi
verdict_line "$passed" "$failed" "$VERDICT_S"
[ "$failed" = 0 ]
