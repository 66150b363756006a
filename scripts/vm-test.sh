#!/bin/bash
# The whole loop, under one hold of the global lock:
#   kernel (fetch, assemble, build) -> selftests -> initramfs -> boot + run -> verdict
# and a timing summary.  `make vm-test`, `make check`, `make demo`, `make shell`.
#
#   TESTS="a b"     subset (default: the project's default set)
#   FLAVOR          debug (default) | release
#   MODE            test (default) | shell (INTERACTIVE VM) | demo (VERBOSE run of our test)
#   SKIP_BUILD=1    reuse the kernel/selftests as they are (no fetch/assemble/build)
#   plus everything scripts/run-vm.sh reads (APPEND, KST_TIMEOUT, TIMEOUT, VERBOSE, ...)
# The last line printed is "N passed, N failed[, N skipped]"; exit status 0 iff
# nothing failed.
set -uo pipefail
. "$(dirname "$0")/common.sh"
MODE=${MODE:-test}
gp_lock
T0=$(now)
[ "${KEEP_TIMINGS:-0}" = 1 ] || { mkdir -p "$OUT"; : > "$OUT/timings"; }

print_timings() {
	echo "=== timings"
	awk '{ t = $NF; $NF = ""; printf "  %7.1f s  %s\n", t, $0 }' "$OUT/timings"
	printf "  %7.1f s  total\n" "$(since "$T0")"
}
fail_early() {
	echo "vm-test: $1 failed; no test ran" >&2
	print_timings
	echo "0 passed, 1 failed"
	exit 1
}

if [ "${SKIP_BUILD:-0}" != 1 ]; then
	"$TOP/scripts/kernel.sh" || fail_early "kernel build"
fi
resolve_paths
if [ "$MODE" = shell ] && [ -z "${TESTS:-}" ]; then
	# boot to a shell; every default test is in /kvm, none runs by itself
	BUILD_TESTS=$(default_tests)
	RUN_TESTS=none
else
	BUILD_TESTS=${TESTS:-$(default_tests)}
	RUN_TESTS=${TESTS:-}
fi
if [ "${SKIP_BUILD:-0}" != 1 ]; then
	TESTS="$BUILD_TESTS" "$TOP/scripts/build-selftests.sh" || fail_early "selftest build"
fi
TESTS="$BUILD_TESTS" "$TOP/scripts/mk-initramfs.sh" || fail_early "initramfs"

case $MODE in
shell)
	TESTS="$RUN_TESTS" INTERACTIVE=1 exec "$TOP/scripts/run-vm.sh" ;;
*)
	[ "$MODE" = demo ] && export VERBOSE=${VERBOSE:-1}
	res=$(mktemp)
	TESTS="$RUN_TESTS" "$TOP/scripts/run-vm.sh" | tee "$res"
	rc=${PIPESTATUS[0]}
	last=$(tail -n1 "$res"); rm -f "$res"
	print_timings
	echo "$last" | grep -qE '^[0-9]+ passed, [0-9]+ failed' || last="0 passed, 1 failed"
	echo "$last"
	;;
esac
exit $rc
