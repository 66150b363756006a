#!/bin/bash
# Build the test initramfs (newc cpio, uncompressed): static busybox,
# scripts/init.sh as /init, the stripped static selftests under /kvm.
#   KST       selftest binaries                 default: common.sh
#   UVM       userspace/ in-VM programs (with the shared libraries they need,
#             copied from this machine at the paths ldd names)
#             qemu/<name> tests: qemu/tests/vm/<name>.sh with our QEMU
#             (qemu/build.sh), its libraries and firmware
#   TESTS     tests to include and run by default ("name:args" accepted)
#             default: the project's default set
#   INITRD    output file                       default $OUT/initramfs.cpio
#   STRIP=0   keep debug info
set -euo pipefail
. "$(dirname "$0")/common.sh"
[ -n "${KST:-}" ] || resolve_paths
INITRD=${INITRD:-$OUT/initramfs.cpio}
BUSYBOX=${BUSYBOX:-/bin/busybox}   # Debian busybox-static
t0=$(now)
if [ -n "${TESTS:-}" ]; then
	run=$TESTS
else
	[ -n "${TREE:-}" ] || resolve_paths
	run=$(default_tests)
fi
ROOT=$(mktemp -d "$OUT/.initramfs-root.XXXXXX" 2>/dev/null || { mkdir -p "$OUT"; mktemp -d "$OUT/.initramfs-root.XXXXXX"; })
trap 'rm -rf "$ROOT"' EXIT
mkdir -p "$ROOT"/{bin,sbin,proc,sys,dev,tmp,kvm/x86}
file -L "$BUSYBOX" | grep -q 'statically linked' || die "$BUSYBOX is not static (apt install busybox-static)"
cp "$BUSYBOX" "$ROOT/bin/busybox"
install -m755 "$TOP/scripts/init.sh" "$ROOT/init"
# A dynamically linked program and everything ld.so will load for it (a
# script is copied as it is: busybox runs it).
add_dynamic() {
	local bin=$1 dst=$2 lib
	install -D -m755 "$bin" "$ROOT/$dst"
	[ "$(head -c2 "$bin")" = "#!" ] && return 0
	for lib in $(ldd "$bin" | awk '/=> \// { print $3 } /^\t\/[^ ]+ \(/ { print $1 }'); do
		[ -e "$ROOT$lib" ] || install -D -m755 "$(readlink -f "$lib")" "$ROOT$lib"
	done
}
# The userspace tools the in-VM programs run (userspace/tools/*), in
# /kvm/userspace/bin.
if [ -n "$(for t in $(test_names $run); do case $t in userspace/*) echo y ;; esac; done)" ] &&
   [ -d "$UVM/bin" ]; then
	for b in "$UVM"/bin/*; do
		[ -x "$b" ] && add_dynamic "$b" "kvm/userspace/bin/$(basename "$b")"
	done
fi
# Tests named qemu/<name>: qemu/tests/vm/<name>.sh, run by busybox sh, with our
# QEMU (qemu/build.sh, cached) at /usr/bin/qemu-system-x86_64 with its shared
# libraries, Debian's firmware at the paths it is looked up at, and in
# /kvm/qemu QEMU's migration-test boot sector, check_ram, tcp_proxy and gmem_state (static)
# and QEMU's tests/qtest/migration-test.
if [ -n "$(qemu_of $(test_names $run))" ]; then
	qout=$("$TOP/qemu/build.sh") || die "qemu/build.sh failed"
	qemu_bin=$(echo "$qout" | sed -n 's/^QEMU=//p')
	qemu_tree=$(echo "$qout" | sed -n 's/^QEMU_TREE=//p')
	migration_test=$(echo "$qout" | sed -n 's/^MIGRATION_TEST=//p')
	strip -o "$ROOT/.qemu-system-x86_64" "$qemu_bin"
	add_dynamic "$ROOT/.qemu-system-x86_64" usr/bin/qemu-system-x86_64
	rm -f "$ROOT/.qemu-system-x86_64"
	for f in /usr/share/seabios/bios-256k.bin /usr/share/qemu/kvmvapic.bin; do
		install -D -m644 "$(readlink -f "$f")" "$ROOT$f"
	done
	mkdir -p "$ROOT/kvm/qemu"
	/usr/bin/python3 -c 'import sys; sys.path.insert(0, sys.argv[1]); import smoke; smoke.bootsect(sys.argv[2], sys.argv[3])' \
		"$TOP/qemu/tests" "$qemu_tree" "$ROOT/kvm/qemu/bootsect"
	# QEMU's migration-test for qemu/migration_test (dynamic, glib like QEMU)
	strip -o "$ROOT/.migration-test" "$migration_test"
	add_dynamic "$ROOT/.migration-test" kvm/qemu/migration-test
	rm -f "$ROOT/.migration-test"
	for c in check_ram tcp_proxy gmem_state; do
		gcc -static -O2 -Wall -Wextra -Werror -I"$TOP/userspace/include" -I"$TOP/userspace/lib" \
			-o "$ROOT/kvm/qemu/$c" "$TOP/qemu/tests/vm/$c.c"
	done
fi
# qemu/libvirt: Debian's libvirt too (qemu/libvirt/initramfs.sh)
if [ -n "$(for t in $(test_names $run); do [ "$t" = qemu/libvirt ] && echo y; done)" ]; then
	. "$TOP/qemu/libvirt/initramfs.sh"
fi
for t in $(test_names $run); do
	case $t in
	qemu/*)
		[ -f "$TOP/qemu/tests/vm/${t#qemu/}.sh" ] || die "no qemu test qemu/tests/vm/${t#qemu/}.sh"
		install -m755 "$TOP/qemu/tests/vm/${t#qemu/}.sh" "$ROOT/kvm/$t"
		continue ;;
	userspace/*)
		[ -x "$UVM/${t#userspace/}" ] || die "missing userspace program $UVM/${t#userspace/} (make selftests TESTS=...)"
		add_dynamic "$UVM/${t#userspace/}" "kvm/$t"
		continue ;;
	esac
	[ -f "$KST/$t" ] || die "missing selftest binary $KST/$t (make selftests TESTS=...)"
	file "$KST/$t" | grep -q 'statically linked' || die "$t is not statically linked"
	if [ "${STRIP:-1}" = 1 ]; then strip -o "$ROOT/kvm/$t" "$KST/$t"; else cp "$KST/$t" "$ROOT/kvm/$t"; fi
done
echo $run > "$ROOT/kvm/TESTS"
mknod -m 600 "$ROOT/dev/console" c 5 1 2>/dev/null || true
mkdir -p "$(dirname "$INITRD")"
(cd "$ROOT" && find . -print0 | cpio --null -o -H newc --quiet > "$INITRD.tmp")
mv "$INITRD.tmp" "$INITRD"
timing "initramfs ($(du -h "$INITRD" | cut -f1), $(echo $run | wc -w) tests)" "$(since "$t0")"
