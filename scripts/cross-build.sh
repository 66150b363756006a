#!/bin/bash
# Compile-test the KVM core for the other configurations KVM builds for, with
# Debian's cross compilers, so that a patch breaking one of them is caught:
#
#   arm64   KVM_GUEST_MEMFD=y, no KVM_ASYNC_PF             arch/arm64/kvm/
#   i386    KVM_ASYNC_PF=y, no KVM_GUEST_MEMFD (64-bit only) arch/x86/kvm/
#   s390    KVM_ASYNC_PF=y + KVM_ASYNC_PF_SYNC, no KVM_GUEST_MEMFD  arch/s390/kvm/
#   riscv   neither KVM_GUEST_MEMFD nor KVM_ASYNC_PF (as powerpc, mips and
#           loongarch): every hook of the series compiled out  arch/riscv/kvm/
#
# Each arch: its defconfig + KVM (built in), debug info, -Werror and
# MODVERSIONS off; then only the arch's KVM directory, which is what compiles
# virt/kvm/*.c (through virt/kvm/Makefile.kvm), with W=1, through ccache.
# Fails on a build error, or on a compiler warning in virt/kvm/, arch/*/kvm/
# or a KVM header (include/linux/kvm*, include/uapi/linux/kvm*,
# include/trace/events/kvm*, arch/*/include/asm/kvm*).
#
#   TREE          assembled tree to build        default $CACHE/tree-$KVER
#   ASSEMBLE=1    assemble TREE first (scripts/assemble.sh; `make cross-build`)
#   CROSS_ARCHES  default "arm64 i386 s390 riscv"
#   CROSS_BUILD   build dirs are $CROSS_BUILD-<arch>   default $CACHE/build/$KVER-cross
#   CROSS_LOG     logs are $CROSS_LOG-<arch>.log        default $OUT/cross
#   CROSS_LABEL   prefix of the PASS/FAIL lines (check-series: the patch)
#   JOBS          default nproc
# Prints one PASS/FAIL line per arch (FAIL with the first error or warning
# lines); exits non-zero when any arch fails.
set -euo pipefail
. "$(dirname "$0")/common.sh"
gp_lock
resolve_paths
CROSS_ARCHES=${CROSS_ARCHES-arm64 i386 s390 riscv}
CROSS_BUILD=${CROSS_BUILD:-$CACHE/build/$KVER-cross}
CROSS_LOG=${CROSS_LOG:-$OUT/cross}
CROSS_LABEL=${CROSS_LABEL:-}
JOBS=${JOBS:-$(nproc)}
mkdir -p "$(dirname "$CROSS_LOG")"

if [ "${ASSEMBLE:-0}" = 1 ]; then
	t0=$(now)
	"$TOP/scripts/assemble.sh" >&2 || die "assemble failed ($TREE)"
	timing "assemble tree" "$(since "$t0")"
fi
[ -f "$TREE/Makefile" ] && [ -f "$TREE/virt/kvm/Makefile.kvm" ] ||
	die "no assembled tree at TREE=$TREE (make kernel, or ASSEMBLE=1)"

export CCACHE_DIR=${CCACHE_DIR:-$CACHE/ccache}
# depend mode: no extra preprocessor pass on a miss
export CCACHE_DEPEND=1 CCACHE_BASEDIR=$TREE

# Warnings (and errors) that count: in our code or KVM's, whichever arch.
KVM_FILES='(virt/kvm/|arch/[a-z0-9_]+/kvm/|include/linux/kvm|include/uapi/linux/kvm|include/trace/events/kvm|arch/[a-z0-9_]+/include/(uapi/)?asm/kvm)[^:]*:[0-9]+(:[0-9]+)?: '

# arch -> karch cross-prefix kvm-dir "options to enable" "expected .config lines"
arch_recipe() {
	case "$1" in
	arm64)	echo "arm64 aarch64-linux-gnu- arch/arm64/kvm/"
		echo "VIRTUALIZATION KVM"
		echo "CONFIG_KVM=y CONFIG_KVM_GUEST_MEMFD=y !CONFIG_KVM_ASYNC_PF" ;;
	i386)	echo "i386 i686-linux-gnu- arch/x86/kvm/"
		echo "VIRTUALIZATION KVM KVM_INTEL KVM_AMD"
		echo "CONFIG_KVM=y CONFIG_KVM_ASYNC_PF=y !CONFIG_64BIT !CONFIG_KVM_GUEST_MEMFD" ;;
	s390)	echo "s390 s390x-linux-gnu- arch/s390/kvm/"
		echo "VIRTUALIZATION KVM"
		echo "CONFIG_KVM=y CONFIG_KVM_ASYNC_PF=y CONFIG_KVM_ASYNC_PF_SYNC=y !CONFIG_KVM_GUEST_MEMFD" ;;
	riscv)	echo "riscv riscv64-linux-gnu- arch/riscv/kvm/"
		echo "VIRTUALIZATION KVM"
		echo "CONFIG_KVM=y !CONFIG_KVM_ASYNC_PF !CONFIG_KVM_GUEST_MEMFD" ;;
	*)	die "unknown arch $1 (arm64, i386, s390, riscv)" ;;
	esac
}
# Off everywhere: speed (no debug info, no genksyms) and warnings stay warnings
# (i386_defconfig has WERROR=y; we grade the warnings ourselves).
DISABLE="WERROR KVM_WERROR MODVERSIONS DEBUG_INFO_DWARF_TOOLCHAIN_DEFAULT
 DEBUG_INFO_DWARF4 DEBUG_INFO_DWARF5 DEBUG_INFO_REDUCED DEBUG_INFO_BTF"

for arch in $CROSS_ARCHES; do arch_recipe "$arch" >/dev/null; done
# Paths as in the source tree: virt/kvm/x.c, not arch/x86/kvm/../../../virt/kvm/x.c
tidy() { sed -E "s|$TREE/||g; s|^([a-z0-9_]+/)+(\.\./)+||"; }
fail=0
for arch in $CROSS_ARCHES; do
	{ read -r karch cross kdir; read -r enable; read -r expect; } < <(arch_recipe "$arch")
	B=$CROSS_BUILD-$arch
	log=$CROSS_LOG-$arch.log
	t0=$(now)
	command -v "${cross}gcc" >/dev/null ||
		die "${cross}gcc not found (make deps installs the cross compilers)"
	MAKEARGS=(-C "$TREE" O="$B" ARCH="$karch" CROSS_COMPILE="$cross"
		CC="ccache ${cross}gcc" -j"$JOBS")
	mkdir -p "$B"
	: > "$log"

	# Configure once per recipe (kbuild re-syncs by itself when a patch
	# changes a Kconfig file).
	want=$(printf '%s\n' "$karch" "$enable" "$DISABLE" | sha256sum | cut -c1-16)
	if [ ! -f "$B/.config" ] || [ "$(cat "$B/.recipe-hash" 2>/dev/null)" != "$want" ]; then
		log "$arch: configuring (defconfig + KVM)"
		opts=()
		for o in $enable; do opts+=(-e "$o"); done
		for o in $DISABLE; do opts+=(-d "$o"); done
		if ! { make "${MAKEARGS[@]}" defconfig &&
		       "$TREE/scripts/config" --file "$B/.config" "${opts[@]}" -e DEBUG_INFO_NONE &&
		       make "${MAKEARGS[@]}" olddefconfig; } >> "$log" 2>&1; then
			echo "FAIL  ${CROSS_LABEL}$arch  (configuration failed, $log)"
			tail -n 20 "$log"
			fail=1
			continue
		fi
		echo "$want" > "$B/.recipe-hash"
	fi
	bad=""
	for e in $expect; do
		case "$e" in
		!*)	grep -qE "^${e#!}=" "$B/.config" && bad="$bad $e" ;;
		*)	grep -qx "$e" "$B/.config" || bad="$bad $e" ;;
		esac
	done
	if [ -n "$bad" ]; then
		echo "FAIL  ${CROSS_LABEL}$arch  (config: not$bad; $B/.config)"
		rm -f "$B/.recipe-hash"
		fail=1
		continue
	fi

	# After a run that failed, every KVM object is compiled again (ccache
	# hits for the unchanged ones), so that a warning is reported on every
	# run until it is fixed, not only by the run that compiled it first.
	if [ -f "$B/.kvm-failed" ]; then
		find "$B/virt/kvm" "$B/${kdir%/}" -name '*.o' -delete 2>/dev/null || true
		rm -f "$B/.kvm-failed"
	fi
	rc=0
	# -k: every object that fails is reported, not only the first one.
	make "${MAKEARGS[@]}" -k W=1 "$kdir" >> "$log" 2>&1 || rc=$?
	secs=$(since "$t0")

	errs=$(grep -E ': (fatal )?error: |undefined reference' "$log" | tidy | awk '!seen[$0]++' || true)
	[ -n "$errs" ] || errs=$(grep -E '^make.*(Error [0-9]|\*\*\*)' "$log" || true)
	warns=$(grep -E "$KVM_FILES"'warning: ' "$log" | tidy | sort -u || true)
	others=$(grep -E ': warning: ' "$log" | grep -cvE "$KVM_FILES" || true)
	[ $rc = 0 ] && [ -z "$warns" ] || : > "$B/.kvm-failed"
	if [ $rc != 0 ]; then
		echo "FAIL  ${CROSS_LABEL}$arch  (build failed, $secs s, $log)"
		{ [ -n "$errs" ] && echo "$errs" || tail -n 20 "$log"; } | head -n 30 | sed 's/^/      /'
		[ -z "$warns" ] || { echo "      and warnings:"; echo "$warns" | head -n 10 | sed 's/^/      /'; }
		fail=1
	elif [ -n "$warns" ]; then
		echo "FAIL  ${CROSS_LABEL}$arch  (compiler warnings, $secs s, $log)"
		echo "$warns" | head -n 20 | sed 's/^/      /'
		fail=1
	else
		echo "PASS  ${CROSS_LABEL}$arch  ($secs s$([ "$others" = 0 ] || echo ", $others warnings outside KVM ignored"))"
	fi
	timing "cross-build $arch" "$secs"
done
exit $fail
