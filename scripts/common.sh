# Sourced by the other scripts: paths, the global build/VM lock, timing helpers.
#
#   CACHE    cache root             default ${XDG_CACHE_HOME:-~/.cache}/gmem-presence
#   OUT      per-checkout output    default <repo>/out  (initramfs, VM logs)
#   FLAVOR   debug | release        default debug
#   SRC      pristine kernel tree   default: resolved with scripts/fetch-kernel.sh
#
# Derived (each may be overridden from the environment):
#   KVER     kernel version of SRC (e.g. 7.3.4)
#   TREE     $CACHE/tree-$KVER                 assembled tree (pristine + ours)
#   KBUILD   $CACHE/build/$KVER-$FLAVOR        kbuild output, bzImage
#   KST      $CACHE/kselftest-$KVER            static KVM selftest binaries
#   UVM      $OUT/userspace-vm-$KVER           in-VM programs of userspace/tests/vm
#            (named "userspace/<name>" in TESTS; dynamically linked, ASan+UBSan)
#            and the benchmarks; per checkout like their objects
#            (userspace/build/): in a shared directory, a binary built from
#            another checkout looks newer than this checkout's sources
TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gmem-presence}
OUT=${OUT:-$TOP/out}
FLAVOR=${FLAVOR:-debug}
LOCKFILE=${GMEM_PRESENCE_LOCK:-/tmp/gmem-presence-vm.lock}
export CACHE OUT FLAVOR

# The KVM selftests run by default (`make vm-test`, `make check`).  Our own
# tests are added by default_tests() when their source is in the tree.
UPSTREAM_TESTS="guest_memfd_test demand_paging_test:-b:256M
 x86/private_mem_conversions_test x86/private_mem_kvm_exits_test pre_fault_memory_test
 x86/sync_regs_test x86/svm_vmcall_test"
# Upstream tests too slow for make check's 20-minute budget under KASAN in TCG
# (143 s and 39 s of the VM run), for paths the series leaves alone (adding
# thousands of memslots, creating the most vCPUs): `make check-upstream`.
SLOW_UPSTREAM_TESTS="set_memory_region_test kvm_create_max_vcpus"
# demand_paging_test -p: its presence modes (patch 0016), a short run of each.
OUR_TESTS="guest_memfd_presence_test guest_memfd_presence_ops_test x86/guest_memfd_presence_apf_test
 guest_memfd_presence_stress_test guest_memfd_presence_fuzz_test
 demand_paging_test:-p:exit:-b:32M demand_paging_test:-p:wait:-b:32M"

log() { echo "[$(basename "$0" .sh)] $*" >&2; }
die() { echo "[$(basename "$0" .sh)] ERROR: $*" >&2; exit 1; }

now() { date +%s.%N; }
# since T0 -> seconds with one decimal
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
# Stage timings, collected in $OUT/timings (one "stage seconds" line each) and
# printed as they happen.
timing() {
	local stage=$1 secs=$2
	echo "[timing] $stage: ${secs} s" >&2
	mkdir -p "$OUT" && echo "$stage $secs" >> "$OUT/timings"
}

# The verdict of a run: the last "N passed, N failed[, N skipped]" line of
# file $1 into VERDICT_P, VERDICT_F and VERDICT_S.  No such line counts as
# "0 passed, 1 failed"; a non-zero exit status $2 of the run with no failure
# counted counts as one failure (the run broke after its summary).
parse_verdict() {
	local line
	line=$(tr -d '\r' < "$1" | grep -E '^[0-9]+ passed, [0-9]+ failed(, [0-9]+ skipped)?$' | tail -n 1)
	if [[ $line =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed(,\ ([0-9]+)\ skipped)?$ ]]; then
		VERDICT_P=${BASH_REMATCH[1]} VERDICT_F=${BASH_REMATCH[2]} VERDICT_S=${BASH_REMATCH[4]:-0}
	else
		VERDICT_P=0 VERDICT_F=1 VERDICT_S=0
	fi
	if [ "${2:-0}" != 0 ] && [ "$VERDICT_F" = 0 ]; then VERDICT_F=1; fi
	return 0
}
# "P passed, F failed[, S skipped]", the skipped part only when S > 0.
verdict_line() {
	local line="$1 passed, $2 failed"
	[ "${3:-0}" != 0 ] && line="$line, $3 skipped"
	echo "$line"
}

# Exclusive lock shared by every kernel build and VM run on this machine
# (2 cores: one at a time).  Re-entrant: if this process already inherited a
# descriptor holding the lock (from one of our parent scripts, or from
# `flock /tmp/gmem-presence-vm.lock make ...`), that is used instead of
# deadlocking on a second open of the file.
gp_lock() {
	local fd target
	for fd in /proc/$$/fd/*; do
		target=$(readlink "$fd" 2>/dev/null) || continue
		[ "$target" = "$LOCKFILE" ] || continue
		if flock -n "${fd##*/}" 2>/dev/null; then
			return 0
		fi
	done
	exec {GP_LOCK_FD}>>"$LOCKFILE"
	if ! flock -n "$GP_LOCK_FD"; then
		log "waiting for $LOCKFILE (another kernel build or VM run is in progress)"
		local t0; t0=$(now)
		flock "$GP_LOCK_FD"
		log "got the lock after $(since "$t0") s"
	fi
}

kver_of() {
	awk -F' *= *' '/^VERSION/ {v=$2} /^PATCHLEVEL/ {p=$2} /^SUBLEVEL/ {s=$2}
		/^EXTRAVERSION/ {e=$2; exit} END { printf "%s.%s.%s%s\n", v, p, s, e }' "$1/Makefile"
}

# Set SRC (fetching/extracting if needed), KVER, TREE, KBUILD, KST.
resolve_paths() {
	if [ -z "${SRC:-}" ]; then
		local line
		line=$("$TOP/scripts/fetch-kernel.sh" | tail -n1) || die "fetch-kernel.sh failed"
		SRC=${line#SRC=}
	fi
	[ -f "$SRC/Makefile" ] || die "no kernel source at SRC=$SRC"
	KVER=${KVER:-$(kver_of "$SRC")}
	TREE=${TREE:-$CACHE/tree-$KVER}
	KBUILD=${KBUILD:-$CACHE/build/$KVER-$FLAVOR}
	KST=${KST:-$CACHE/kselftest-$KVER}
	UVM=${UVM:-$OUT/userspace-vm-$KVER}
	export SRC KVER TREE KBUILD KST UVM
}

# The in-VM programs of the userspace library: userspace/tests/vm/*_test.c.
userspace_vm_tests() {
	local f
	for f in "$TOP"/userspace/tests/vm/*_test.c; do
		[ -f "$f" ] && echo "userspace/$(basename "$f" .c)"
	done
}

# The default test list: upstream tests plus our own tests whose source exists
# in the assembled tree, plus the userspace library's in-VM programs.
default_tests() {
	local t list=$UPSTREAM_TESTS
	for t in $OUR_TESTS; do
		[ -f "$TREE/tools/testing/selftests/kvm/${t%%:*}.c" ] && list="$list $t"
	done
	echo $list $(userspace_vm_tests)
}

# The patches of a series exported by git format-patch into directory $1, in
# order, without the cover letter.
series_mails() {
	local p
	for p in "$1"/[0-9]*.patch; do
		[ -f "$p" ] && [ "${p##*/}" != 0000-cover-letter.patch ] && echo "$p"
	done
	return 0
}

# Split a test list into KVM selftests, userspace/ programs and qemu/ tests
# (qemu/tests/vm/<name>.sh with our QEMU, qemu/README.md).
kselftests_of() { local t; for t in "$@"; do case $t in userspace/*|qemu/*) ;; *) echo "$t" ;; esac; done; }
userspace_of() { local t; for t in "$@"; do case $t in userspace/*) echo "$t" ;; esac; done; }
qemu_of() { local t; for t in "$@"; do case $t in qemu/*) echo "$t" ;; esac; done; }

# TESTS may use "name:arg1:arg2" to pass arguments; strip them for building.
test_names() {
	local t
	for t in "$@"; do echo "${t%%:*}"; done | awk '!seen[$0]++' | tr '\n' ' '
}
