#!/bin/bash
# Build static KVM selftests out of tree from the assembled tree.
#   TREE, KBUILD   assembled tree and a configured (built) kernel dir     (default: common.sh)
#   KST            output dir (OUTPUT=)         default $CACHE/kselftest-$KVER
#   TESTS="a x86/b ..."  which tests            default: the project's default set
#                        ("name:arg1:arg2" is accepted; the arguments are ignored here)
# Headers: `make headers` installs the sanitized UAPI headers (with our uapi
# patch) into $KBUILD/usr/include, used through KHDR_INCLUDES.
# Tests named userspace/<name> are the userspace library's in-VM programs:
# built with `make -C userspace vm-tests` against the same headers, into $UVM.
set -euo pipefail
. "$(dirname "$0")/common.sh"
resolve_paths
[ -f "$TREE/.assembled" ] || die "no assembled tree at $TREE (run scripts/assemble.sh / make kernel)"
[ -f "$KBUILD/.config" ] || die "no configured kernel in $KBUILD (run make kernel)"
JOBS=${JOBS:-$(nproc)}
gp_lock

KDIR=$TREE/tools/testing/selftests/kvm
if [ -n "${TESTS:-}" ]; then
	all=$(test_names $TESTS)
else
	all=$(default_tests)
	for t in $OUR_TESTS; do
		[ -f "$KDIR/${t%%:*}.c" ] || log "note: ${t%%:*}.c not in the tree yet, skipping it"
	done
fi
want=$(kselftests_of $all)
uwant=$(userspace_of $all)
targets=()
for t in $want; do
	if [ ! -f "$KDIR/$t.c" ]; then
		die "no selftest source $KDIR/$t.c"
	fi
	if ! grep -qE "^TEST_GEN_PROGS_(x86|COMMON)[[:space:]]*\+?=[[:space:]]*$t[[:space:]]*\$" "$KDIR/Makefile.kvm"; then
		die "$t is not listed in tools/testing/selftests/kvm/Makefile.kvm for x86"
	fi
	targets+=("$KST/$t")
done

export CCACHE_DIR=${CCACHE_DIR:-$CACHE/ccache} CCACHE_DEPEND=1 CCACHE_BASEDIR=$TREE
t0=$(now)
make -C "$TREE" O="$KBUILD" ARCH=x86_64 -j"$JOBS" -s headers
timing "selftests: make headers" "$(since "$t0")"

if [ ${#targets[@]} -gt 0 ]; then
	t0=$(now)
	mkdir -p "$KST"
	# EXTRA_CFLAGS also reaches the link step, hence -static there too.  TMPOUT:
	# otherwise try-run writes into the source tree.
	make -C "$KDIR" -j"$JOBS" ARCH=x86_64 CC="ccache gcc" \
		OUTPUT="$KST" TMPOUT="$KST/.tmp_tryrun" \
		KHDR_INCLUDES="-isystem $KBUILD/usr/include" EXTRA_CFLAGS=-static \
		"${targets[@]}" > "$KST/.build.log" 2>&1 || {
		grep -E 'error|Error|warning: implicit' "$KST/.build.log" | head -n 40 >&2
		tail -n 20 "$KST/.build.log" >&2
		die "selftest build failed (full log: $KST/.build.log)"
	}
	for t in $want; do
		file "$KST/$t" | grep -q 'statically linked' || die "$KST/$t is not statically linked"
	done
	timing "selftests: build $(echo $want | wc -w) tests" "$(since "$t0")"
fi
mkdir -p "$KST"
echo "$want" > "$KST/.built-tests"

if [ -n "$uwant" ]; then
	t0=$(now)
	mkdir -p "$UVM"
	make -C "$TOP/userspace" -j"$JOBS" vm-tests KHDR="$KBUILD/usr/include" VMOUT="$UVM" \
		> "$UVM/.build.log" 2>&1 || {
		grep -E 'error:|warning:|Error' "$UVM/.build.log" | head -n 40 >&2
		die "userspace in-VM programs failed to build (full log: $UVM/.build.log)"
	}
	for t in $uwant; do
		[ -x "$UVM/${t#userspace/}" ] || die "no userspace program $UVM/${t#userspace/}"
	done
	timing "userspace: build $(echo $uwant | wc -w) in-VM programs" "$(since "$t0")"
fi
