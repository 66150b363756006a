#!/bin/sh
# In the test VM: libvirt drives the post-copy live migration of QEMU's
# migration-test boot-sector guest (the guest of qemu/postcopy) between two
# session-mode libvirtd daemons on loopback, each with its own host UUID:
#   virsh migrate --live --postcopy ... &   then   virsh migrate-postcopy
# libvirt (9.0, bookworm) has no guest_memfd memory backing, so the RAM
# backend is selected by QEMU command-line passthrough (<qemu:commandline>,
# qemu/libvirt/README.md): an -object with id "gmem" plus
# "-machine memory-backend=gmem", which overrides the memory-backend=pc.ram
# that libvirt generates (QEMU keeps the last value; libvirt's own pc.ram
# object stays unused and is not migrated).  The source's domain XML has
# memory-backend-memfd (a guest_memfd VM cannot be a migration source); the
# destination's XML, handed over with `virsh migrate --xml`, has
#   gmem   memory-backend-guest-memfd,presence=on: the missing pages are
#          found by KVM's presence tracking (qemu/patches/0005)
#   uffd   memory-backend-memfd: userfaultfd, QEMU's usual path (for
#          comparison; also what runs on a KVM without presence)
# Each mode checks: virsh migrate exits 0 after migrate-postcopy, the domain
# is gone from the source and running on the destination, whose guest makes
# PASSES more passes; every page of the destination is consistent with the
# stopped guest (pmemsave through virsh qemu-monitor-command --hmp, then
# check_ram); the faults went the expected way (the destination QEMU's trace:
# presence faults and no userfault on the RAM block for gmem, userfaults for
# uffd).  Prints libvirt's job statistics of the migration.
# Exit 0 if every mode passed, 1 if not.
#   args: the modes (default: gmem)
#   env:  RUNAS (user the daemons and QEMU run as: session mode; default
#         gmemlv), PASSES (1), PRECOPY (3 s), BW (precopy and post-copy
#         MiB/s, 8), TMO (per phase, 240 s), QEMU,
#         QEMU_TEST_DIR (bootsect, check_ram), LIBVIRTD, VIRSH, KEEP=1 (keep
#         the work directory), LV_FILTERS (libvirtd's log_filters, e.g.
#         "1:qemu.qemu_monitor")
RUNAS=${RUNAS:-gmemlv}
if [ "$(id -u)" = 0 ]; then
	# Session-mode daemons run as an ordinary user: root's libvirtd is
	# the system one (cgroups, namespaces, security drivers, one per host).
	id "$RUNAS" > /dev/null 2>&1 || { echo "libvirt: FAIL: no user $RUNAS"; exit 1; }
	# In the test VM: the user needs /dev/kvm and userfaultfd (the
	# destination QEMU uses it for the RAM blocks that are not guest_memfd,
	# the ROMs).  Outside, the caller sees to it.
	if [ -z "${LIBVIRT_HOST:-}" ]; then
		chmod 666 /dev/kvm
		[ -c /dev/userfaultfd ] && chmod 666 /dev/userfaultfd
		[ -w /proc/sys/vm/unprivileged_userfaultfd ] && echo 1 > /proc/sys/vm/unprivileged_userfaultfd
	fi
	exec su -s /bin/sh "$RUNAS" -c "exec \"$0\" $*"
fi

export PATH=$PATH:/usr/sbin:/usr/bin
MODES=${*:-gmem}
PASSES=${PASSES:-1}
PRECOPY=${PRECOPY:-3}
BW=${BW:-8}
TMO=${TMO:-240}
Q=${QEMU:-/usr/bin/qemu-system-x86_64}
H=${QEMU_TEST_DIR:-/kvm/qemu}
LIBVIRTD=${LIBVIRTD:-libvirtd}
VIRSH=${VIRSH:-virsh}
SIZE=128
DOM=gmem
PORT=49152
W= PIDS=

say() { echo "libvirt: $*"; }
now() { cut -d' ' -f1 /proc/uptime; }
elapsed() { awk "BEGIN{printf \"%.1f\", $(now) - $1}"; }
bs() { [ -f "$1" ] && tr -cd B < "$1" | wc -c || echo 0; }
uri() { echo "qemu:///session?socket=$W/$1/run/libvirt/libvirt-sock"; }
vsh() { _s=$1; shift; "$VIRSH" -q -c "$(uri $_s)" "$@"; }

# daemon NAME UUID: a session libvirtd with its own XDG directories (so its
# own socket, state, capabilities cache and QEMU logs) and host UUID
daemon() {
	_b=$W/$1
	mkdir -p $_b/run $_b/config/libvirt $_b/cache $_b/home || return 1
	chmod 700 $_b/run
	cat > $_b/config/libvirt/libvirtd.conf <<-EOF
	host_uuid = "$2"
	log_outputs = "2:file:$_b/libvirtd.log"
	log_filters = "${LV_FILTERS:-}"
	EOF
	# QEMU's output to a plain file (no virtlogd).  (migration_address
	# cannot be a local address: --listen-address and --migrateuri.)
	cat > $_b/config/libvirt/qemu.conf <<-EOF
	stdio_handler = "file"
	EOF
	XDG_RUNTIME_DIR=$_b/run XDG_CONFIG_HOME=$_b/config XDG_CACHE_HOME=$_b/cache HOME=$_b/home \
		"$LIBVIRTD" > $_b/libvirtd.out 2>&1 &
	# (daemon runs in $(...): the pid goes through a file, for cleanup)
	echo $! > $_b/libvirtd.pid
	_t=0
	while [ ! -S $_b/run/libvirt/libvirt-sock ]; do
		kill -0 $! 2>/dev/null || { echo "libvirtd $1 exited: $(tail -n 5 $_b/libvirtd.out $_b/libvirtd.log 2>/dev/null)"; return 1; }
		[ $_t -ge 60 ] && { echo "libvirtd $1: no socket in 60 s"; return 1; }
		sleep 1
		_t=$((_t + 1))
	done
}

# domxml NAME MEMORY-OBJECT [EXTRA-QEMU-ARGS...]: the domain, with the RAM
# backend given on QEMU's command line
domxml() {
	_n=$1 _o=$2
	shift 2
	cat <<-EOF
	<domain type='kvm' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
	  <name>$DOM</name>
	  <uuid>5d1f0c9e-6a1b-4c7e-9f00-00000000a001</uuid>
	  <memory unit='MiB'>$SIZE</memory>
	  <vcpu>1</vcpu>
	  <os><type arch='x86_64' machine='q35'>hvm</type><boot dev='hd'/></os>
	  <features><acpi/><smm state='off'/></features>
	  <on_poweroff>destroy</on_poweroff><on_reboot>destroy</on_reboot><on_crash>destroy</on_crash>
	  <devices>
	    <emulator>$Q</emulator>
	    <disk type='file' device='disk'>
	      <driver name='qemu' type='raw'/>
	      <source file='$W/disk'/>
	      <target dev='sda' bus='sata'/>
	      <geometry cyls='1' heads='1' secs='1'/>
	    </disk>
	    <controller type='usb' model='none'/>
	    <serial type='file'><source path='$W/$_n.serial'/></serial>
	    <memballoon model='none'/>
	  </devices>
	  <qemu:commandline>
	    <qemu:arg value='-object'/>
	    <qemu:arg value='$_o'/>
	    <qemu:arg value='-machine'/>
	    <qemu:arg value='memory-backend=gmem'/>
	EOF
	for _a in "$@"; do echo "    <qemu:arg value='$_a'/>"; done
	cat <<-EOF
	  </qemu:commandline>
	</domain>
	EOF
}

# from libvirt's job-completed event: time, downtime, post-copy requests
jobs_line() {
	awk -F': ' '$1 ~ /time_elapsed$/ { t = $2 } $1 ~ /downtime$/ { d = $2 }
		$1 ~ /memory_postcopy_requests$/ { r = $2 }
		END { printf "job %s ms, downtime %s ms, %s post-copy requests", t, d, r }' $W/job.event
}

cleanup() {
	for _s in src dst; do
		[ -S $W/$_s/run/libvirt/libvirt-sock ] && vsh $_s destroy $DOM > /dev/null 2>&1
	done
	PIDS=$(cat $W/src/libvirtd.pid $W/dst/libvirtd.pid 2>/dev/null)
	for _p in $PIDS; do kill $_p 2>/dev/null; done
	for _p in $PIDS; do
		_t=0
		while kill -0 $_p 2>/dev/null && [ $_t -lt 20 ]; do sleep 1; _t=$((_t + 1)); done
		kill -9 $_p 2>/dev/null
	done
	PIDS=
	# a QEMU that libvirt did not end (its pid file): no CPU hog for the
	# next mode
	for _f in $W/src/run/libvirt/qemu/run/$DOM.pid $W/dst/run/libvirt/qemu/run/$DOM.pid; do
		[ -f $_f ] && kill -9 "$(cat $_f)" 2>/dev/null
	done
}

fail() {
	say "FAIL: $MODE: $*"
	for _s in src dst; do
		[ -f $W/$_s/cache/libvirt/qemu/log/$DOM.log ] &&
			grep -v -E '(postcopy_|ram_load_postcopy)' $W/$_s/cache/libvirt/qemu/log/$DOM.log |
			tail -n 12 | sed "s/^/  $_s qemu: /"
		[ -f $W/$_s/libvirtd.log ] && tail -n 8 $W/$_s/libvirtd.log | sed "s/^/  $_s libvirtd: /"
	done
	[ -f $W/migrate.out ] && sed 's/^/  virsh migrate: /' $W/migrate.out
	ps -o pid,user,stat,time,args 2>/dev/null | grep -E 'qemu-system|libvirtd' | grep -v grep | cut -c1-160 | sed 's/^/  ps: /'
	cleanup
	return 1
}

run_mode() {
	MODE=$1
	W=$(mktemp -d /tmp/libvirt-test.XXXXXX)
	src_mem=memory-backend-memfd,id=gmem,size=${SIZE}M,share=on
	case $MODE in
	gmem) dst_mem=memory-backend-guest-memfd,id=gmem,size=${SIZE}M,presence=on ;;
	uffd) dst_mem=$src_mem ;;
	*) say "unknown mode $MODE"; return 1 ;;
	esac
	cp $H/bootsect $W/disk || { fail "no boot sector"; return 1; }
	domxml src "$src_mem" > $W/src.xml
	domxml dst "$dst_mem" -trace postcopy_presence_fault -trace postcopy_presence_discard \
		-trace postcopy_ram_fault_thread_request > $W/dst.xml

	t0=$(now)
	err=$(daemon src 8a6e3a7c-0000-4000-8000-000000000001) || { fail "$err"; return 1; }
	# libvirt probes QEMU (many QMP queries, slow under nested TCG) once:
	# the destination daemon starts with the source's capabilities cache
	out=$(vsh src domcapabilities --emulatorbin $Q --virttype kvm 2>&1) ||
		{ fail "libvirt cannot use $Q: $out"; return 1; }
	tc=$(elapsed $t0)
	mkdir -p $W/dst/cache/libvirt/qemu || { fail "mkdir"; return 1; }
	cp -r $W/src/cache/libvirt/qemu/cache $W/dst/cache/libvirt/qemu/
	err=$(daemon dst 8a6e3a7c-0000-4000-8000-000000000002) || { fail "$err"; return 1; }
	# the host UUIDs libvirt migrates between (it refuses the same one)
	su=$(vsh src capabilities | sed -n 's|.*<uuid>\(.*\)</uuid>.*|\1|p' | head -n 1)
	du=$(vsh dst capabilities | sed -n 's|.*<uuid>\(.*\)</uuid>.*|\1|p' | head -n 1)
	[ -n "$su" ] && [ -n "$du" ] && [ "$su" != "$du" ] ||
		{ fail "host UUIDs '$su' and '$du'"; return 1; }
	td=$(elapsed $t0)

	t0=$(now)
	out=$(vsh src create $W/src.xml 2>&1) || { fail "virsh create: $out"; return 1; }
	while [ "$(bs $W/src.serial)" -lt 1 ]; do
		[ "$(vsh src domstate $DOM 2>/dev/null)" = running ] || { fail "source domain not running"; return 1; }
		[ "$(elapsed $t0 | cut -d. -f1)" -ge "$TMO" ] && { fail "no pass of the source guest in ${TMO}s"; return 1; }
		sleep 1
	done
	tb=$(elapsed $t0)

	# Precopy and post-copy at BW MiB/s.  libvirt's default is unlimited:
	# precopy would converge on a slow guest before migrate-postcopy, and
	# post-copy might be over before the guest asks for a page.
	# libvirt's statistics of the job, from its job-completed event
	"$VIRSH" -c "$(uri src)" event $DOM --event job-completed --timeout $((TMO * 2)) > $W/job.event 2>&1 &
	EPID=$!
	tm=$(now)
	"$VIRSH" -c "$(uri src)" migrate --live --postcopy --unsafe --verbose --bandwidth $BW --postcopy-bandwidth $BW \
		--xml $W/dst.xml --listen-address 127.0.0.1 --migrateuri tcp://127.0.0.1:$PORT \
		$DOM "$(uri dst)" > $W/migrate.out 2>&1 &
	MPID=$!
	# libvirt's job starts with the destination's preparation (its QEMU
	# is started): migrate-postcopy is refused until the source QEMU
	# migrates, i.e. memory is being sent; then PRECOPY s of precopy.
	_t0=$(date +%s)
	while :; do
		kill -0 $MPID 2>/dev/null || { wait $MPID; fail "virsh migrate ended before post-copy (rc $?)"; return 1; }
		vsh src domjobinfo $DOM > $W/job.pre 2>&1
		awk '/^Memory processed:/ && $3 + 0 > 0 { ok = 1 } END { exit !ok }' $W/job.pre && break
		[ $(( $(date +%s) - _t0 )) -ge "$TMO" ] && { cat $W/job.pre; fail "no memory sent in ${TMO}s"; return 1; }
		sleep 1
	done
	tq=$(elapsed $tm)
	sleep "$PRECOPY"
	kill -0 $MPID 2>/dev/null || { wait $MPID; fail "virsh migrate ended before post-copy (rc $?)"; return 1; }
	vsh src domjobinfo $DOM > $W/job.pre 2>&1
	grep -q -E 'Operation: +Outgoing migration' $W/job.pre || { cat $W/job.pre; fail "no outgoing migration job on the source"; return 1; }
	tp=$(now)
	out=$(vsh src migrate-postcopy $DOM 2>&1) || { fail "virsh migrate-postcopy: $out"; return 1; }
	_t0=$(date +%s)
	while kill -0 $MPID 2>/dev/null; do
		[ $(( $(date +%s) - _t0 )) -ge "$TMO" ] && { kill $MPID; fail "virsh migrate still running ${TMO}s after migrate-postcopy"; return 1; }
		sleep 1
	done
	wait $MPID
	rc=$?
	dt=$(elapsed $tm)
	dp=$(elapsed $tp)
	[ $rc -eq 0 ] || { fail "virsh migrate exited $rc"; return 1; }
	vsh src domstate $DOM > /dev/null 2>&1 && { fail "the domain is still on the source: $(vsh src domstate $DOM)"; return 1; }
	st=$(vsh dst domstate $DOM 2>&1)
	[ "$st" = running ] || { fail "destination domain state: $st"; return 1; }

	# The guest goes on running on the destination.
	n0=$(bs $W/dst.serial)
	_t0=$(date +%s)
	while [ "$(bs $W/dst.serial)" -lt $((n0 + PASSES)) ]; do
		[ "$(vsh dst domstate $DOM 2>/dev/null)" = running ] || { fail "destination domain not running"; return 1; }
		[ $(( $(date +%s) - _t0 )) -ge "$TMO" ] &&
			{ fail "$(( $(bs $W/dst.serial) - n0 )) of $PASSES passes on the destination in ${TMO}s"; return 1; }
		sleep 1
	done

	out=$(vsh dst suspend $DOM 2>&1) || { fail "virsh suspend: $out"; return 1; }
	# quoted: unquoted, HMP would read "SIZE /tmp..." as a division
	out=$(vsh dst qemu-monitor-command $DOM --hmp "pmemsave 0x100000 0x6300000 \"$W/ram\"" 2>&1) ||
		{ fail "pmemsave: $out"; return 1; }
	[ -f $W/ram ] || { fail "no RAM dump: $out"; return 1; }
	chk=$($H/check_ram $W/ram 2>&1) || { echo "$chk"; fail "destination RAM inconsistent"; return 1; }
	ram=$(vsh dst qemu-monitor-command $DOM --hmp "info ramblock" 2>&1 | tr -d "\r" | grep -E '^ *gmem ')
	[ -n "$ram" ] || { fail "no RAM block gmem on the destination"; return 1; }

	# The destination QEMU's log (libvirt's, with the command line) and
	# its trace lines, without the command line's "-trace EVENT \"
	log=$W/dst/cache/libvirt/qemu/log/$DOM.log
	grep -v -E '^-trace |: warning: trace event' $log > $W/dst.trace
	pf=$(grep -c 'postcopy_presence_fault ' $W/dst.trace)
	pd=$(grep -c 'postcopy_presence_discard ' $W/dst.trace)
	uf=$(grep 'postcopy_ram_fault_thread_request ' $W/dst.trace | grep -c 'rb=gmem ')
	case $MODE in
	gmem)
		grep -q 'memory-backend-guest-memfd' $log || { fail "the destination QEMU has no guest_memfd backend"; return 1; }
		[ "$pd" -gt 0 ] || { fail "no KVM_MEMORY_PRESENT_DISCARD at the start of post-copy"; return 1; }
		[ "$pf" -gt 0 ] || { fail "no presence fault record served"; return 1; }
		[ "$uf" -eq 0 ] || { fail "$uf userfaults on the guest_memfd RAM block"; return 1; }
		how="$pf presence faults, $pd discards, no userfault on gmem" ;;
	uffd)
		[ "$uf" -gt 0 ] || { fail "no userfault on the RAM block"; return 1; }
		[ "$pf" -eq 0 ] || { fail "presence faults without presence"; return 1; }
		how="$uf userfaults" ;;
	esac
	wait $EPID
	grep -q "^event 'job-completed'" $W/job.event || { fail "no job-completed event: $(cat $W/job.event)"; return 1; }
	cleanup
	say "PASS: $MODE: virsh migrate --postcopy + migrate-postcopy in ${dt}s (QEMU sending after ${tq}s, post-copy phase ${dp}s; libvirt: $(jobs_line)), daemons up in ${td}s (QEMU probed in ${tc}s), first pass in ${tb}s; destination RAM block: $(echo $ram | awk '{print $1, $5}'), $how; $chk"
	[ "${KEEP:-0}" = 1 ] || rm -rf $W
	return 0
}

rc=0
for m in $MODES; do
	run_mode $m || rc=1
done
exit $rc
