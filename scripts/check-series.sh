#!/bin/bash
# Every patch of the exported series (out/series/, from `make series`) builds:
# for k = 1..N, assemble a tree with the first k patches and build bzImage
# with -Werror-like strictness: a failed build, or a compiler warning, fails.
# Then the same tree's KVM core is compile-tested for arm64, i386, s390 and riscv
# (scripts/cross-build.sh: W=1, cross compilers): the configurations without
# KVM_ASYNC_PF, without KVM_GUEST_MEMFD, or without both.  First, every patch goes through
# the pristine tree's scripts/checkpatch.pl --strict: each ERROR, WARNING or
# CHECK fails it unless patches/checkpatch-reasons.txt gives the reason it
# stays (one line per patch and message; a reason that no longer matches
# anything fails too, so the file stays true).
#
#   make check-series        SERIES_DIR (default out/series: the mails, cover
#                            letter left out), FLAVOR (default release: the
#                            checkers' options don't change what compiles), JOBS,
#                            CROSS_ARCHES (default "arm64 i386 s390 riscv"; "" skips),
#                            CHECKPATCH=0 skips checkpatch, BUILD=0 the builds,
#                            X86=0 skips only the x86_64 bzImage of each prefix (a
#                            cross-only rerun after a change that x86_64
#                            compiles alike)
# Uses its own tree and build directories, so the incremental edit loop stays
# warm.  Each step rebuilds what the patch touches: ~1-4 min per header patch.
set -euo pipefail
. "$(dirname "$0")/common.sh"
export FLAVOR=${FLAVOR:-release}
resolve_paths
SERIES_DIR=${SERIES_DIR:-$OUT/series}
mapfile -t series < <(series_mails "$SERIES_DIR")
[ ${#series[@]} -gt 0 ] || die "no series in $SERIES_DIR (make series)"
TREE=$CACHE/tree-$KVER-series KBUILD=$CACHE/build/$KVER-series-$FLAVOR
CROSS_BUILD=$CACHE/build/$KVER-series-cross
export TREE KBUILD CROSS_BUILD
mkdir -p "$OUT" "$CACHE"
fail=0
if [ "${CHECKPATCH:-1}" != 0 ]; then
	"$TOP/scripts/checkpatch-series.py" "$SRC" "$TOP/patches/checkpatch-reasons.txt" \
		"${series[@]}" || fail=1
fi
[ "${BUILD:-1}" != 0 ] || exit $fail
# checkpatch needs no lock; the builds do.
gp_lock
for k in $(seq 1 ${#series[@]}); do
	p=${series[$((k - 1))]}
	name=$(basename "$p")
	log="$OUT/series-$k.log"
	t0=$(now)
	if ! PATCHES="${series[*]:0:$k}" "$TOP/scripts/assemble.sh" > "$log" 2>&1; then
		echo "FAIL  $name  (assemble failed: does not apply?, $log)"
		tail -n 5 "$log"
		fail=1
		continue
	fi
	if [ "${X86:-1}" = 0 ]; then
		echo "SKIP  $name  x86_64  (X86=0)"
	elif ! "$TOP/scripts/build-kernel.sh" >> "$log" 2>&1; then
		echo "FAIL  $name  x86_64  (build failed, $log)"
		grep -E "error|Error" "$log" | head -20
		fail=1
	elif grep -q "warning:" "$log"; then
		echo "FAIL  $name  x86_64  (compiler warnings, $log)"
		grep -A3 "warning:" "$log" | head -20
		fail=1
	else
		echo "PASS  $name  x86_64  ($(since "$t0") s)"
	fi
	# The same prefix for the other configurations KVM builds for (one
	# PASS/FAIL line per arch).
	if [ -n "${CROSS_ARCHES-arm64 i386 s390 riscv}" ]; then
		res="$OUT/series-$k-cross.out"
		rc=0
		CROSS_LOG="$OUT/series-$k-cross" CROSS_LABEL="$name  " \
			"$TOP/scripts/cross-build.sh" 2>> "$log" | tee "$res" || rc=${PIPESTATUS[0]}
		if [ $rc != 0 ]; then
			fail=1
			grep -q '^FAIL' "$res" ||
				{ echo "FAIL  $name  cross-build  ($log)"; tail -n 5 "$log"; }
		fi
	fi
done
exit $fail
