#!/bin/sh
# In the test VM: QEMU's own tests/qtest/migration-test (built by
# qemu/build.sh, shipped as /kvm/qemu/migration-test), post-copy cases, with
# the destination's RAM in memory-backend-guest-memfd,presence=on: patch
# 0006's QTEST_MIGRATION_TARGET_MEM (the source keeps migration-test's
# anonymous RAM; both sides get smm=off).  QTEST_QEMU_BINARY is a wrapper
# that gives the destination (the QEMU started with -incoming) the traces of
# the presence path in a log file, so that each case also checks that the
# guest's RAM went through presence tracking: KVM_MEMORY_PRESENT_DISCARD at
# the switch and presence fault records served, no userfault on the RAM.
#   args: cases under /x86_64/migration/postcopy/ (default: plain
#         recovery/plain preempt/plain)
#   env:  QEMU, MIGRATION_TEST, TARGET_MEM (default
#         memory-backend-guest-memfd,presence=on), TMO (per case, 300 s)
# Exit 0 if every case passed, 1 if not.
CASES=${*:-plain recovery/plain preempt/plain}
Q=${QEMU:-/usr/bin/qemu-system-x86_64}
MT=${MIGRATION_TEST:-/kvm/qemu/migration-test}
TMO=${TMO:-300}
W=$(mktemp -d /tmp/migration-test.XXXXXX)

say() { echo "migration_test: $*"; }
now() { cut -d' ' -f1 /proc/uptime; }
[ -x "$MT" ] || { say "FAIL: no $MT"; exit 1; }

# libqtest wants a binary named *-system-<arch>
cat > $W/qemu-system-x86_64 <<EOF
#!/bin/sh
case " \$* " in
*" -incoming "*)
	exec $Q -trace postcopy_presence_fault -trace postcopy_presence_discard \\
		-trace postcopy_ram_fault_thread_request -D $W/dst.\$\$.log "\$@" ;;
esac
exec $Q "\$@"
EOF
chmod +x $W/qemu-system-x86_64
export QTEST_QEMU_BINARY=$W/qemu-system-x86_64
export QTEST_MIGRATION_TARGET_MEM=${TARGET_MEM:-memory-backend-guest-memfd,presence=on}

rc=0
for c in $CASES; do
	p=/x86_64/migration/postcopy/$c
	rm -f $W/dst.*.log
	t0=$(now)
	timeout "$TMO" "$MT" -m thorough -p "$p" > $W/out 2>&1
	r=$?
	dt=$(awk "BEGIN{printf \"%.1f\", $(now) - $t0}")
	pf=$(cat $W/dst.*.log 2>/dev/null | grep -c '^postcopy_presence_fault ')
	pd=$(cat $W/dst.*.log 2>/dev/null | grep -c '^postcopy_presence_discard ')
	uf=$(cat $W/dst.*.log 2>/dev/null | grep '^postcopy_ram_fault_thread_request ' | grep -c 'rb=mig.mem ')
	if [ $r -ne 0 ] || ! grep -q "^ok 1 $p\$" $W/out; then
		grep -v '^# starting QEMU' $W/out | tail -n 20 | sed 's/^/  /'
		{ [ $r -eq 124 ] || [ $r -eq 143 ]; } && say "FAIL: $p: timed out after ${TMO}s" || say "FAIL: $p (exit $r, ${dt}s)"
		rc=1
	elif [ "$pd" -eq 0 ] || [ "$pf" -eq 0 ] || [ "$uf" -ne 0 ]; then
		say "FAIL: $p passed, but not over presence: $pd discards, $pf presence faults, $uf userfaults on the RAM"
		rc=1
	else
		say "PASS: $p in ${dt}s ($pf presence faults, $pd discards, $uf userfaults on the RAM)"
	fi
done
rm -rf $W
exit $rc
