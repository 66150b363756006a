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
#   STALL=secs        kill QEMU once the serial console has been silent this
#                     long (default 0: off); with kst.heartbeat= in APPEND a
#                     running test prints, so silence means the guest stopped
#   APPEND="..."      extra kernel command line (e.g. kst.crash=panic, kvm_amd.npt=0)
#   INTERACTIVE=1     boot to a shell after the tests (kst.shell=1), console on this
#                     terminal; quit QEMU with Ctrl-A X.  No verdict.
#   VERBOSE=1|2       live view: 1 = also the tests' own output, 2 = the whole serial
#                     console (default: progress lines + kernel reports)
#   LOG=file          serial log                       default $OUT/logs/vm-<date>.log
#   QEMU, CPU (max), MEM (2G), SMP (2,sockets=2,cores=1,threads=1)
#   QEMU_DATA=dir     QEMU's own firmware directory (-L), for a QEMU that is
#                     not installed (scripts/fetch-qemu.sh)
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
STALL=${STALL:-0}
[ -f "$KERNEL" ] || die "no kernel $KERNEL (make kernel)"
[ -f "$INITRD" ] || die "no initramfs $INITRD (scripts/mk-initramfs.sh)"
mkdir -p "$OUT/logs"
LOG=${LOG:-$OUT/logs/vm-$(date +%Y%m%d-%H%M%S).log}
ln -sfn "$(basename "$LOG")" "$OUT/logs/latest.log" 2>/dev/null || true

KARGS="console=ttyS0 earlyprintk=serial,ttyS0 panic=-1 loglevel=5 log_buf_len=4M kst.timeout=$KST_TIMEOUT"
if [ -n "${TESTS:-}" ]; then
	tl=$(echo $TESTS | tr ' ' ',')
	if [ ${#tl} -le 1200 ]; then
		KARGS="$KARGS kst.tests=$tl"
	else
		# Too long for the kernel command line (2048 bytes in all, `make
		# bench`): /init then runs the initramfs's own list, which must be it.
		[ "$(cpio -i --quiet --to-stdout kvm/TESTS < "$INITRD" 2>/dev/null)" = "$(echo $TESTS)" ] ||
			die "TESTS is too long for kst.tests= and is not the initramfs's list (scripts/mk-initramfs.sh with the same TESTS)"
	fi
fi
[ "${INTERACTIVE:-0}" = 1 ] && KARGS="$KARGS kst.shell=1"
KARGS="$KARGS ${APPEND:-}"
# The tests the guest is expected to run: TESTS, else the initramfs default list.
expected=${TESTS:-$(cpio -i --quiet --to-stdout kvm/TESTS < "$INITRD" 2>/dev/null)}

QARGS=(-accel tcg,thread=multi -M pc -cpu "$CPU" -smp "$SMP" -m "$MEM"
       -no-reboot -nic none -vga none -display none ${QEMU_DATA:+-L "$QEMU_DATA"}
       -kernel "$KERNEL" -initrd "$INITRD" -append "$KARGS")

gp_lock
# Under TCG the guest TSC ticks at the host's TSC rate, but the guest's own
# calibration against the emulated PIT fails when the host is busy ("tsc:
# Unable to calibrate against PIT"); KVM then has no TSC frequency and every
# selftest dies in KVM_GET_TSC_KHZ.  So tell the guest the rate (TSC_KHZ=0: don't).
if [ -z "${TSC_KHZ:-}" ]; then
	helper=$CACHE/bin/host-tsc-khz
	if [ ! -x "$helper" ] || [ "$TOP/scripts/host-tsc-khz.c" -nt "$helper" ]; then
		mkdir -p "$CACHE/bin" && gcc -O2 -o "$helper" "$TOP/scripts/host-tsc-khz.c" || log "warning: cannot build $helper"
	fi
	TSC_KHZ=$("$helper" 2>/dev/null) || { TSC_KHZ=0; log "warning: no usable host TSC rate; the guest calibrates itself"; }
fi
[ "$TSC_KHZ" != 0 ] && QARGS[${#QARGS[@]}-1]="$KARGS tsc_early_khz=$TSC_KHZ"
if [ "${INTERACTIVE:-0}" = 1 ]; then
	log "interactive VM (quit: Ctrl-A X), serial log in $LOG"
	exec "$QEMU" "${QARGS[@]}" \
		-chardev stdio,id=con,mux=on,signal=off,logfile="$LOG" \
		-serial chardev:con -mon chardev=con,mode=readline
fi

qver=$("$QEMU" --version | head -n1)
echo "$qver" > "$LOG.qemu"   # for bench/report.py
log "booting $(basename "$KERNEL") ($FLAVOR) under $qver, tests: $(echo $expected), log: $LOG"
t0=$(now)
# Live view: our progress lines and anything that looks like a kernel report.
follow=(python3 -u "$TOP/scripts/vm-verdict.py" --follow)
follow+=(--verbose "${VERBOSE:-0}")
rm -f "$LOG.pid" "$LOG.stall"
wd=""
if [ "$STALL" -gt 0 ]; then
	# A guest that stops altogether (seen with nested vCPUs under TCG,
	# docs/benchmarks.md) never reaches its per-test timeout: only the hard
	# TIMEOUT would end it.  Watch the serial log instead.
	(
		while sleep 5; do
			[ -s "$LOG.pid" ] || continue
			pid=$(cat "$LOG.pid")
			kill -0 "$pid" 2>/dev/null || break
			age=$(( $(date +%s) - $(stat -c %Y "$LOG") ))
			if [ "$age" -ge "$STALL" ]; then
				echo "no serial output for ${age}s" > "$LOG.stall"
				log "the guest printed nothing for ${age}s (STALL=$STALL): killing QEMU" >&2
				kill "$pid"
				break
			fi
		done
	) &
	wd=$!
fi
timeout "$TIMEOUT" "$QEMU" "${QARGS[@]}" -pidfile "$LOG.pid" -serial stdio -monitor none < /dev/null 2>&1 \
	| tee "$LOG" | "${follow[@]}"
qrc=${PIPESTATUS[0]}
[ -n "$wd" ] && { kill "$wd" 2>/dev/null; wait "$wd" 2>/dev/null; }
rm -f "$LOG.pid"
secs=$(since "$t0")
timing "vm run ($FLAVOR, $(echo $expected | wc -w) tests)" "$secs"
hard=""
[ "$qrc" = 124 ] && hard=$TIMEOUT
python3 "$TOP/scripts/vm-verdict.py" --log "$LOG" --tests "$expected" \
	--known "$TOP/configs/tcg-known-failures.txt" --qemu-rc "$qrc" --hard-timeout "$hard" \
	--stall "$(cat "$LOG.stall" 2>/dev/null)"
