#!/bin/busybox sh
# /init of the test initramfs (busybox).  Runs the KVM selftests in /kvm and
# prints machine-readable lines that scripts/vm-verdict.py parses:
#   === KST: START <test>
#   === KST: RESULT <test> PASS|FAIL|SKIP|TIMEOUT rc=<rc> time=<secs>s
#   === KST kmsg[<test>]: <kernel message logged while <test> ran>
#   === KST: END pass=<n> fail=<n> skip=<n> ...        (the very last line)
#
# Kernel command line knobs (all optional):
#   kst.tests=a,b,c        run only these (names as under /kvm, e.g. x86/sync_regs_test);
#                          "name:arg1:arg2" passes arguments (':' becomes ' ')
#   kst.timeout=SECS       per-test timeout (default 300); SIGTERM, then SIGKILL
#   kst.shell=1            interactive shell after the tests (exit it to power off)
#   kst.kmemleak=0         skip the final kmemleak scans (~15 s with the debug kernel)
#   kst.heartbeat=SECS     while a test runs, print "=== KST: alive <test> <secs>s"
#                          every SECS seconds (default 0: off), so that the host's
#                          stall watchdog (run-vm.sh STALL=) can tell a quiet test
#                          from a guest that stopped
#   kst.sched=F1,F2        write these to /sys/kernel/debug/sched/features first
#                          (e.g. NO_HRTICK: to tell the scheduler's new hrtick
#                          from the nested-vCPU fault, docs/benchmarks.md)
#   kst.crash=panic|hang|warn|fail   self-test of the failure detection:
#                          panic: /init exits -> "Kernel panic - not syncing: Attempted to kill init"
#                          hang:  never finishes (the host's hard timeout must catch it)
#                          warn:  logs a fake "WARNING:" kernel report through /dev/kmsg
#                          fail:  adds a test that exits 1
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm /tmp /dev/hugepages
mount -t tmpfs tmpfs /dev/shm   # POSIX shm/semaphores (sem_open)
mount -t tmpfs tmpfs /tmp
mount -t hugetlbfs none /dev/hugepages 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
# loopback for the page-server tests of userspace/ (no other network)
ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up 2>/dev/null
# in-VM programs built with ASan+UBSan: fail on any report
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=23
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

up() { cut -d' ' -f1 /proc/uptime; }
say() { echo "=== KST: $*"; }

TESTS=""
TIMEOUT=300
SHELL_AT_END=0
CRASH=""
LEAKCHECK=1
SCHED=""
HEARTBEAT=0
for a in $(cat /proc/cmdline); do
	case "$a" in
	kst.tests=*) TESTS=$(echo "${a#kst.tests=}" | tr ',' ' ') ;;
	kst.timeout=*) TIMEOUT=${a#kst.timeout=} ;;
	kst.shell=1) SHELL_AT_END=1 ;;
	kst.crash=*) CRASH=${a#kst.crash=} ;;
	kst.kmemleak=0) LEAKCHECK=0 ;;
	kst.sched=*) SCHED=$(echo "${a#kst.sched=}" | tr ',' ' ') ;;
	kst.heartbeat=*) HEARTBEAT=${a#kst.heartbeat=} ;;
	esac
done
for f in $SCHED; do
	echo "$f" > /sys/kernel/debug/sched/features || say "kst.sched: cannot set $f"
done
[ -n "$SCHED" ] && say "sched features: $(cat /sys/kernel/debug/sched/features)"
[ -z "$TESTS" ] && TESTS=$(cat /kvm/TESTS)

say "userspace up at $(up) s, kernel $(uname -r), $(grep -c ^processor /proc/cpuinfo) cpus, $(grep MemTotal /proc/meminfo | tr -s ' ')"
say "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
say "svm flags: $(grep -m1 ^flags /proc/cpuinfo | tr ' ' '\n' | grep -E '^(svm|npt|nrip_save|vgif|vnmi|lbrv|decodeassists|flushbyasid|tsc_scale|v_vmsave_vmload|avic|pausefilter|pfthreshold)$' | tr '\n' ' ')"
[ -c /dev/kvm ] || say "no /dev/kvm!"
for p in npt nested nrips vgif vnmi avic lbrv; do
	[ -r /sys/module/kvm_amd/parameters/$p ] && echo -n "kvm_amd.$p=$(cat /sys/module/kvm_amd/parameters/$p) "
done
[ -r /sys/module/kvm/parameters/tdp_mmu ] && echo -n "kvm.tdp_mmu=$(cat /sys/module/kvm/parameters/tdp_mmu)"
echo
KMEMLEAK=/sys/kernel/debug/kmemleak
[ -e $KMEMLEAK ] || LEAKCHECK=0
say "kmemleak: $([ $LEAKCHECK = 1 ] && echo 'scan after the tests' || echo off)"
say "tests: $TESTS (timeout ${TIMEOUT}s each)"
# The boot log goes out once, attributed to "boot"; each test's kernel
# messages are then printed after it.
dmesg -c | sed 's/^/=== KST kmsg[boot]: /'

case "$CRASH" in
panic) say "kst.crash=panic: exiting /init"; exit 1 ;;
hang) say "kst.crash=hang: hanging"; while :; do sleep 3600; done ;;
warn) echo "WARNING: CPU: 0 PID: 1 at kst.crash=warn (simulated report from /init)" > /dev/kmsg ;;
fail) printf '#!/bin/sh\necho "simulated failing test"\nexit 1\n' > /kvm/kst_crash_fail
	chmod +x /kvm/kst_crash_fail; TESTS="$TESTS kst_crash_fail" ;;
esac

# Run "$@" in the background, wait for it with a deadline, TERM then KILL.
# Sets rc (124 = timed out, 137 = could not even be killed).
run_with_timeout() {
	"$@" < /dev/null &
	pid=$!
	t_start=$(cut -d. -f1 /proc/uptime)
	dl=$((t_start + TIMEOUT))
	hb=$((t_start + HEARTBEAT))
	phase=run
	rc=""
	while :; do
		st=""
		read -r _ _ st _ 2>/dev/null < /proc/$pid/stat
		[ -z "$st" ] || [ "$st" = Z ] && break
		n=$(cut -d. -f1 /proc/uptime)
		if [ "$HEARTBEAT" -gt 0 ] && [ "$n" -ge "$hb" ]; then
			say "alive $t $((n - t_start))s"
			hb=$((n + HEARTBEAT))
		fi
		if [ "$n" -ge "$dl" ]; then
			case $phase in
			run) say "$t: timeout after ${TIMEOUT}s, sending SIGTERM"
				kill -TERM $pid; phase=term; dl=$((n + 10)) ;;
			term) say "$t: still alive, sending SIGKILL"
				kill -KILL $pid; phase=kill; dl=$((n + 30)) ;;
			kill) say "$t: unkillable (pid $pid):"
				cat /proc/$pid/stack 2>/dev/null
				grep -E '^(State|Name)' /proc/$pid/status
				rc=137; break ;;
			esac
		fi
		sleep 0.1
	done
	if [ -z "$rc" ]; then
		wait $pid
		rc=$?
		[ $phase != run ] && rc=124
	fi
}

pass=0; fail=0; skip=0; summary=""
for t in $TESTS; do
	[ "$t" = none ] && continue
	# A test may run several times with different arguments: its lines are
	# named by the whole "name:arg1:arg2" (just "name" without arguments).
	id=$t
	args=$(echo "$t" | cut -s -d: -f2- | tr ':' ' ')
	t=${t%%:*}
	say "START $id $args"
	if [ ! -x "/kvm/$t" ]; then
		say "$t: not in the initramfs"
		r=FAIL; rc=127; dt=0
	else
		s=$(up)
		run_with_timeout "/kvm/$t" $args
		dt=$(awk "BEGIN{printf \"%.1f\", $(up)-$s}")
		case $rc in
		0) r=PASS ;;
		4) r=SKIP ;;
		124|137) r=TIMEOUT ;;
		*) r=FAIL ;;
		esac
	fi
	case $r in PASS) pass=$((pass+1)) ;; SKIP) skip=$((skip+1)) ;; *) fail=$((fail+1)) ;; esac
	dmesg -c | sed "s|^|=== KST kmsg[$id]: |"
	say "RESULT $id $r rc=$rc time=${dt}s"
	summary="$summary $id=$r"
done

if [ $LEAKCHECK = 1 ] && [ $((pass + fail + skip)) -gt 0 ]; then
	# Objects younger than ~5 s are never reported, and a leak shows up only
	# once it has been unreferenced across scans: pause, scan, pause, scan.
	s=$(up)
	sleep 5
	echo scan > $KMEMLEAK
	sleep 2
	echo scan > $KMEMLEAK
	say "kmemleak: scanned in $(awk "BEGIN{printf \"%.1f\", $(up)-$s}")s"
	sed 's/^/=== KST kmemleak: /' $KMEMLEAK
	dmesg -c | sed 's/^/=== KST kmsg[kmemleak]: /'
fi

if [ "$SHELL_AT_END" = 1 ]; then
	say "dropping to a shell (exit to power off); tests are in /kvm"
	setsid cttyhack sh
fi
dmesg -c | sed 's/^/=== KST kmsg[end]: /'
say "END pass=$pass fail=$fail skip=$skip uptime=$(up)s ::$summary"
sync
# No ACPI in this kernel: poweroff would only halt; reboot exits QEMU (-no-reboot).
if [ -d /sys/firmware/acpi ]; then poweroff -f; else reboot -f; fi
