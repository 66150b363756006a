#!/bin/bash
# Boot the test kernel + initramfs under QEMU TCG (emulated AMD SVM + NPT, no
# host KVM needed), run the selftests in the guest, and judge the run from the
# guest's own output (scripts/vm-verdict.py).
#
#   KERNEL=...        bzImage                 default $KBUILD/arch/x86/boot/bzImage
#   INITRD=...        initramfs               default $OUT/initramfs.cpio
#   TESTS="a b"       run only these (must be in the initramfs); "name:arg1:arg2" passes args
#   KST_TIMEOUT=secs  per-test timeout in the guest    default 300
#   TIMEOUT=secs      hard wall-clock limit for the VM default 1800
#   APPEND="..."      extra kernel command line (e.g. kst.crash=panic, kvm_amd.npt=0)
#   INTERACTIVE=1     boot to a shell after the tests (kst.shell=1), console on this
#                     terminal; quit QEMU with Ctrl-A X.  No verdict.
#   VERBOSE=1         show the whole serial console (default: test progress + reports)
#   LOG=file          serial log                       default $OUT/logs/vm-<date>.log
#   QEMU, CPU (max), MEM (2G), SMP (2,sockets=2,cores=1,threads=1)
# Exit status 0 iff every test passed (or skipped / known TCG failure) and the
# kernel logged no report; the last line printed is "N passed, N failed[, N skipped]".
set -uo pipefail
. "$(dirname "$0")/common.sh"
if [ -z "${KERNEL:-}" ]; then resolve_paths; KERNEL=$KBUILD/arch/x86/boot/bzImage; fi
INITRD=${INITRD:-$OUT/initramfs.cpio}
QEMU=${QEMU:-qemu-system-x86_64}
CPU=${CPU:-max}
MEM=${MEM:-2G}
# No ACPI in the kernel: SeaBIOS' MP table lists one CPU per socket.
SMP=${SMP:-2,sockets=2,cores=1,threads=1}
KST_TIMEOUT=${KST_TIMEOUT:-300}
TIMEOUT=${TIMEOUT:-1800}
[ -f "$KERNEL" ] || die "no kernel $KERNEL (make kernel)"
[ -f "$INITRD" ] || die "no initramfs $INITRD (scripts/mk-initramfs.sh)"
mkdir -p "$OUT/logs"
LOG=${LOG:-$OUT/logs/vm-$(date +%Y%m%d-%H%M%S).log}
ln -sfn "$(basename "$LOG")" "$OUT/logs/latest.log" 2>/dev/null || true

KARGS="console=ttyS0 earlyprintk=serial,ttyS0 panic=-1 loglevel=5 log_buf_len=4M kst.timeout=$KST_TIMEOUT"
[ -n "${TESTS:-}" ] && KARGS="$KARGS kst.tests=$(echo $TESTS | tr ' ' ',')"
[ "${INTERACTIVE:-0}" = 1 ] && KARGS="$KARGS kst.shell=1"
KARGS="$KARGS ${APPEND:-}"
# The tests the guest is expected to run: TESTS, else the initramfs default list.
expected=${TESTS:-$(cpio -i --quiet --to-stdout kvm/TESTS < "$INITRD" 2>/dev/null)}

QARGS=(-accel tcg,thread=multi -M pc -cpu "$CPU" -smp "$SMP" -m "$MEM"
       -no-reboot -nic none -vga none -display none
       -kernel "$KERNEL" -initrd "$INITRD" -append "$KARGS")

gp_lock
if [ "${INTERACTIVE:-0}" = 1 ]; then
	log "interactive VM (quit: Ctrl-A X), serial log in $LOG"
	exec "$QEMU" "${QARGS[@]}" \
		-chardev stdio,id=con,mux=on,signal=off,logfile="$LOG" \
		-serial chardev:con -mon chardev=con,mode=readline
fi

log "booting $(basename "$KERNEL") ($FLAVOR), tests: $(echo $expected), log: $LOG"
t0=$(now)
# Live view: our progress lines and anything that looks like a kernel report.
filter='{ sub(/\r$/, "") }
	verbose { print; fflush(); next }
	/^=== KST: (START|RESULT|END|kmemleak: scanned)/ || /^=== KST: .*(timeout|unkillable|not in the initramfs|kst\.crash)/ {
		sub(/^=== KST: /, ""); print "  vm: " $0; fflush(); next }
	/^=== KST kmsg/ { next }
	'"/$(python3 "$TOP/scripts/vm-verdict.py" --awk-regex)/"' { print "  vm! " $0; fflush() }'
timeout "$TIMEOUT" "$QEMU" "${QARGS[@]}" -serial stdio -monitor none < /dev/null 2>&1 \
	| tee "$LOG" | awk -v verbose="${VERBOSE:-0}" "$filter"
qrc=${PIPESTATUS[0]}
secs=$(since "$t0")
timing "vm run ($FLAVOR, $(echo $expected | wc -w) tests)" "$secs"
hard=""
[ "$qrc" = 124 ] && hard=$TIMEOUT
python3 "$TOP/scripts/vm-verdict.py" --log "$LOG" --tests "$expected" \
	--known "$TOP/configs/tcg-known-failures.txt" --qemu-rc "$qrc" --hard-timeout "$hard"
