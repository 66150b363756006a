#!/bin/bash
# Every patch of the series builds: for k = 1..N, assemble a tree with the
# first k patches (plus our new files, which the Makefile only compiles once
# the patch that adds them to virt/kvm/Makefile.kvm is in) and build bzImage
# with -Werror-like strictness: a failed build, or a compiler warning, fails.
#
#   make check-series        FLAVOR (default release: the checkers' options
#                            don't change what compiles), JOBS
# Uses its own tree and build directory, so the incremental edit loop stays
# warm.  Each step rebuilds what the patch touches: ~3-4 min per header patch.
set -euo pipefail
. "$(dirname "$0")/common.sh"
export FLAVOR=${FLAVOR:-release}
gp_lock
resolve_paths
series=("$TOP"/patches/*.patch)
TREE=$CACHE/tree-$KVER-series KBUILD=$CACHE/build/$KVER-series-$FLAVOR
export TREE KBUILD
mkdir -p "$OUT"
fail=0
for k in $(seq 1 ${#series[@]}); do
	p=${series[$((k - 1))]}
	log="$OUT/series-$k.log"
	t0=$(now)
	if ! PATCHES="${series[*]:0:$k}" "$TOP/scripts/assemble.sh" > "$log" 2>&1 ||
	   ! "$TOP/scripts/build-kernel.sh" >> "$log" 2>&1; then
		echo "FAIL  $(basename "$p")  (build failed, $log)"
		grep -E "error|Error" "$log" | head -20
		fail=1
		continue
	fi
	if grep -q "warning:" "$log"; then
		echo "FAIL  $(basename "$p")  (compiler warnings, $log)"
		grep -A3 "warning:" "$log" | head -20
		fail=1
		continue
	fi
	echo "PASS  $(basename "$p")  ($(since "$t0") s)"
done
exit $fail
