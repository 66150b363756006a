#!/bin/sh
# In the test VM: our QEMU runs QEMU's migration-test boot-sector guest with
# its RAM in memory-backend-guest-memfd,presence=on (created with
# GUEST_MEMFD_FLAG_PRESENCE, every page marked present at start), on the
# presence kernel.  Checks: the memslots are bound to the guest_memfd
# (-trace kvm_set_user_memory), the guest makes passes over its memory (a 'B'
# on the serial port each), and with the guest stopped every page of
# [1 MiB, 100 MiB) is consistent (check_ram: the migration-test check).
# Exit 0 pass, 1 fail.
#   $1  passes to wait for (default 2)   $2  timeout in seconds (default 240)
PASSES=${1:-2}
TMO=${2:-240}
# (QEMU, QEMU_TEST_DIR and PRESENCE=off are for trying it outside the VM.)
Q=${QEMU:-/usr/bin/qemu-system-x86_64}
H=${QEMU_TEST_DIR:-/kvm/qemu}
D=$(mktemp -d /tmp/qemu-presence.XXXXXX)
fail() { echo "presence_boot: FAIL: $*"; [ -f $D/log ] && sed 's/^/  qemu: /' $D/log | grep -v kvm_set_user_memory | tail -n 20; kill $QPID 2>/dev/null; exit 1; }
bs() { [ -f $D/serial ] && tr -cd B < $D/serial | wc -c || echo 0; }

mkfifo $D/mon.in $D/mon.out || fail "mkfifo"
# A writable copy: snapshot=on would want a temporary file in /var/tmp.
cp $H/bootsect $D/disk || fail "cp"
$Q -accel kvm -nodefaults -display none -L /usr/share/seabios -L /usr/share/qemu \
	-machine q35,smm=off,memory-backend=mem \
	-object memory-backend-guest-memfd,id=mem,size=128M,presence=${PRESENCE:-on} \
	-drive if=none,id=d0,file=$D/disk,format=raw \
	-device ide-hd,drive=d0,secs=1,cyls=1,heads=1 \
	-serial file:$D/serial -monitor pipe:$D/mon \
	-trace kvm_set_user_memory > $D/log 2>&1 &
QPID=$!
cat $D/mon.out > $D/mon.txt &
exec 3> $D/mon.in

t0=$(date +%s)
while [ "$(bs)" -lt "$PASSES" ]; do
	kill -0 $QPID 2>/dev/null || fail "QEMU exited"
	[ $(( $(date +%s) - t0 )) -ge "$TMO" ] && fail "$(bs) of $PASSES passes after ${TMO}s"
	sleep 1
done
dt=$(( $(date +%s) - t0 ))
slots=$(grep -c 'flags=0x4 .*guest_memfd=[0-9][0-9]* .*ret=0' $D/log)
grep -q 'kvm_set_user_memory.*ret=-' $D/log && fail "a memslot update failed"
[ "$slots" -gt 0 ] || fail "no memslot bound to the guest_memfd"

echo stop >&3
# quoted: unquoted, HMP would read "SIZE /tmp..." as a division
echo "pmemsave 0x100000 0x6300000 \"$D/ram\"" >&3
echo "info status" >&3
t1=$(date +%s)
until grep -q 'VM status: paused' $D/mon.txt 2>/dev/null; do
	[ $(( $(date +%s) - t1 )) -ge 60 ] && fail "monitor did not answer"
	sleep 1
done
[ -f $D/ram ] || fail "no RAM dump: $(tr -d "\r" < $D/mon.txt | tail -n 5)"
$H/check_ram $D/ram || fail "guest RAM inconsistent"
echo quit >&3
wait $QPID
echo "presence_boot: PASS: $(bs) passes in ${dt}s, $slots memslot updates with KVM_MEM_GUEST_MEMFD, RAM consistent"
rm -rf $D
exit 0
