#!/bin/bash
# `make stress`: the long runs of the stress and fuzz selftests and of the
# userspace soak (userspace/soak_vm_test: lazy restores through gmfp-pager and
# postcopies from gmfp-serve, both killed at random), on the debug kernel
# (KASAN, lockdep, kmemleak and the other checkers of configs/debug.fragment).
#
#   DURATION=secs    run time of guest_memfd_presence_stress_test and of
#                    userspace/soak_vm_test                         (default 600)
#   FUZZ_CALLS=n     calls of guest_memfd_presence_fuzz_test        (default 150000)
#   FUZZ_SECS=secs   the fuzzer's time cap                          (default DURATION)
#   SEED=n           seed for all three (default: each picks one and prints it)
#   STRESS_TESTS     extra in-VM tests to run in the same boot
#
# The per-test and whole-VM timeouts follow DURATION.  Ends with the
# verdict line of scripts/vm-test.sh ("N passed, N failed").
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
log "stress: $DURATION s of races, $FUZZ_CALLS fuzz calls (at most $FUZZ_SECS s), $DURATION s of userspace soak, $FLAVOR kernel"
exec "$TOP/scripts/vm-test.sh"
