#!/bin/sh
# In the test VM: post-copy live migration of QEMU's migration-test
# boot-sector guest between two QEMUs on loopback TCP, from ordinary RAM
# (memory-backend-memfd; a guest_memfd VM cannot be a migration source, it
# has no dirty logging) into
#   gmem          memory-backend-guest-memfd,presence=on: the missing pages
#                 are found by KVM's presence tracking (qemu/patches/0005)
#   uffd          memory-backend-memfd: the missing pages are found by
#                 userfaultfd, QEMU's usual path, for comparison
#   gmem-preempt  gmem with the postcopy-preempt capability (a second
#                 channel for the requested pages)
#   gmem-recover  gmem, and the migration is paused during post-copy
#                 (migrate_pause: the connection is shut down), then
#                 recovered over a new connection (migrate_recover, migrate -r)
#   gmem-async    gmem with presence-async=on (asynchronous page faults
#                 where the guest could take them; the boot sector cannot,
#                 so this is the WAIT fallback)
#   gmem-broken   gmem, the migration goes through tcp_proxy, which is
#                 SIGKILLed during post-copy: both sides must notice the
#                 broken connection and reach postcopy-paused by themselves
#                 (the destination's vCPU waits meanwhile, no pass), then a
#                 new proxy, migrate_recover and migrate -r, completion
#   uffd-preempt, uffd-recover, uffd-broken  the same over userfaultfd (for
#                 comparison, and the script's checks outside the VM, on a
#                 KVM without presence)
#   trace         not a mode: the modes after it also trace every page the
#                 destination receives in post-copy, with timestamps, and
#                 print where the faults were relative to the source's
#                 stream (the fault-count analysis of qemu/README.md)
# The guest increments the first byte of every page of [1 MiB, 100 MiB) over
# and over, so precopy never converges; post-copy is started after PRECOPY
# seconds.  Each mode checks: the migration completes on both sides, the
# guest runs on the destination (PASSES more passes), every page of the
# destination is consistent with the stopped guest (check_ram, as in
# presence_boot), and the faults went the expected way (trace of the
# destination: postcopy_presence_fault records for gmem and no userfault on
# the RAM block; userfaults for uffd).  Prints the migration's total time,
# downtime and the destination's post-copy blocktime for each mode, and how
# many of the destination's page requests the source found not yet sent and
# already sent (get_queued_page / get_queued_page_not_dirty).
# Exit 0 if every mode passed, 1 if not.
#   args: the modes (default: gmem uffd)
#   env:  PASSES (1), PRECOPY (2 s), TMO (per phase, 240 s), QEMU, QEMU_TEST_DIR
MODES=${*:-gmem uffd}
PASSES=${PASSES:-1}
PRECOPY=${PRECOPY:-2}
TMO=${TMO:-240}
Q=${QEMU:-/usr/bin/qemu-system-x86_64}
H=${QEMU_TEST_DIR:-/kvm/qemu}
SIZE=128M
PORT=4444
SPID= DPID= PXPID= D=
TRACE=

say() { echo "postcopy: $*"; }
now() { cut -d' ' -f1 /proc/uptime; }
elapsed() { awk "BEGIN{printf \"%.1f\", $(now) - $1}"; }
bs() { [ -f "$1" ] && tr -cd B < "$1" | wc -c || echo 0; }
# SIGTERM, and SIGKILL for a QEMU that does not go within 10 s (a source in
# postcopy-paused may not)
stop_qemus() {
	[ -n "$PXPID" ] && { kill -9 $PXPID 2>/dev/null; wait $PXPID 2>/dev/null; PXPID=; }
	for _p in $SPID $DPID; do kill $_p 2>/dev/null; done
	_t=0
	while [ $_t -lt 10 ]; do
		_alive=
		for _p in $SPID $DPID; do kill -0 $_p 2>/dev/null && _alive=1; done
		[ -z "$_alive" ] && break
		sleep 1
		_t=$((_t + 1))
	done
	for _p in $SPID $DPID; do kill -9 $_p 2>/dev/null; wait $_p 2>/dev/null; done
	SPID= DPID=
	exec 3>&- 4>&-
}
# fail MSG: this mode failed; show the end of both QEMUs' output
fail() {
	say "FAIL: $MODE: $*"
	for s in src dst; do
		[ -f $D/$s.log ] && plain $D/$s.log |
			grep -v -E '^(postcopy_|get_queued_page|ram_load_postcopy_loop|loadvm_postcopy|ram_dirty_bitmap|migrate_handle_rp)' |
			tail -n 15 | sed "s/^/  $s: /"
		[ -f $D/$s.mon.txt ] && tr -d '\r' < $D/$s.mon.txt | grep -a -v '^(qemu)' |
			tail -n 8 | sed "s/^/  $s monitor: /"
	done
	# Does the destination's main loop still answer its monitor?
	if [ -n "$DPID" ] && kill -0 $DPID 2>/dev/null; then
		_n0=$(tr -d '\r' < $D/dst.mon.txt | grep -a -c 'VM status')
		mon dst "info status"
		sleep 3
		_n1=$(tr -d '\r' < $D/dst.mon.txt | grep -a -c 'VM status')
		if [ "$_n1" -gt "$_n0" ]; then
			echo "  dst monitor answers: $(tr -d '\r' < $D/dst.mon.txt | grep -a 'VM status' | tail -n 1)"
		else
			echo "  dst monitor does not answer 'info status' within 3 s (main loop blocked)"
		fi
		case $MODE in gmem*) $H/gmem_state $DPID 2>&1 | sed 's/^/  /' ;; esac
	fi
	[ -n "$DIAG" ] && diag_report
	# Where a QEMU that is still there waits: its threads' kernel stacks
	for _p in $SPID $DPID; do
		[ -d /proc/$_p/task ] || continue
		for _t in /proc/$_p/task/*; do
			echo "  pid $_p $(cat $_t/comm 2>/dev/null) [$(sed 's/.*) //' $_t/stat 2>/dev/null | cut -d' ' -f1)]: $(head -n 6 $_t/stack 2>/dev/null | sed 's/^\[<[0-9a-f]*>\] //; s/+0x.*//' | tr '\n' ' ')"
		done
	done
	stop_qemus
	ktrace off
	return 1
}
# Recovery modes (DIAG): QEMU traces of the pause/resume path, of the
# destination's page requests (a few thousand lines) and, for gmem, the
# kernel's presence tracepoints, reported by fail().
KT=/sys/kernel/debug/tracing
DIAG_DST="-trace postcopy_pause_incoming -trace postcopy_pause_incoming_continued
	-trace postcopy_pause_fault_thread -trace postcopy_pause_fault_thread_continued
	-trace loadvm_postcopy_handle_resume -trace postcopy_page_req_add
	-trace postcopy_page_req_del -trace postcopy_page_req_sync
	-trace postcopy_ram_listen_thread_exit -trace postcopy_ram_incoming_cleanup_entry
	-trace postcopy_ram_incoming_cleanup_join -trace postcopy_ram_incoming_cleanup_exit
	-trace postcopy_ram_fault_thread_quit -trace postcopy_ram_fault_thread_exit
	-trace ram_dirty_bitmap_request"
DIAG_SRC="-trace postcopy_pause_return_path -trace postcopy_pause_return_path_continued
	-trace postcopy_pause_continued -trace ram_dirty_bitmap_reload_begin
	-trace ram_dirty_bitmap_reload_complete -trace migrate_handle_rp_req_pages"
ktrace() {
	[ -d $KT/events/kvm/kvm_gmem_presence_wait ] || return 0
	echo 0 > $KT/tracing_on
	if [ "$1" = on ]; then
		echo 8192 > $KT/buffer_size_kb
		: > $KT/trace
	fi
	for _e in fault wait wake set; do
		echo $([ "$1" = on ] && echo 1 || echo 0) > $KT/events/kvm/kvm_gmem_presence_$_e/enable
	done
	[ "$1" = on ] && echo 1 > $KT/tracing_on
	return 0
}
diag_report() {
	plain $D/dst.log | grep -E '^(postcopy_pause|loadvm_postcopy_handle_resume|postcopy_ram_listen_thread_exit|postcopy_ram_incoming_cleanup|postcopy_ram_fault_thread_(quit|exit)|ram_dirty_bitmap)' |
		uniq -c | tail -n 14 | sed 's/^/  dst trace: /'
	plain $D/src.log | grep -E '^postcopy_pause' | uniq -c | tail -n 6 | sed 's/^/  src trace: /'
	echo "  src: $(plain $D/src.log | grep -c '^ram_dirty_bitmap_reload_complete') received bitmaps reloaded"
	# page requests the destination added and never resolved
	plain $D/dst.log | awk '
		$1 == "postcopy_page_req_add" { req[$5] = 1; nadd++ }
		$1 == "postcopy_page_req_del" { delete req[$5]; ndel++ }
		$1 == "postcopy_page_req_sync" { nsync++ }
		END { n = 0; l = ""
			for (a in req) { n++; if (n <= 8) l = l " " a }
			printf "  dst: %d page requests added, %d resolved, %d re-sent at resume; unresolved %d:%s\n", nadd, ndel, nsync, n, l }'
	echo "  src: $(plain $D/src.log | grep -c '^migrate_handle_rp_req_pages') requests received"
	if [ -f $KT/trace ] && [ "$(cat $KT/events/kvm/kvm_gmem_presence_wait/enable 2>/dev/null)" = 1 ]; then
		echo 0 > $KT/tracing_on
		# the last event of each page: fault, wait, wake, set (MARK,
		# COPY) or clear (DISCARD, REARM)
		awk '
		function hex(s,  i, v) {
			v = 0
			s = tolower(substr(s, 3))
			for (i = 1; i <= length(s); i++)
				v = v * 16 + index("0123456789abcdef", substr(s, i, 1)) - 1
			return v
		}
		{
			for (i = 1; i <= NF; i++) if ($i ~ /^kvm_gmem_presence_/) break
			if (i > NF) next
			ev = $i; sub(/^kvm_gmem_presence_/, "", ev); sub(/:$/, "", ev)
			for (j = i; j <= NF; j++) {
				if ($j == "index") idx = hex($(j + 1))
				if ($j == "pages") np = $(j + 1)
				if ($j == "flags") op = hex($(j + 1))
			}
			if (ev == "set") {
				if (op == 3 || op == 4) ev = "clear"
				for (k = 0; k < np; k++) last[idx + k] = ev
			} else {
				last[idx] = ev; who[idx] = substr($0, 1, index($0, "[") - 1); sub(/^ +/, "", who[idx])
			}
			n[ev]++
		}
		END {
			m = 0; l = ""
			for (k in last) if (last[k] == "wait" || last[k] == "fault") {
				m++; if (m <= 8) l = l sprintf(" 0x%x (%s, %s)", k * 4096, last[k], who[k]) }
			printf "  kernel trace: %d faults, %d waits, %d wakes, %d sets, %d clears; pages whose last event is a fault or wait: %d%s\n",
				n["fault"], n["wait"], n["wake"], n["set"], n["clear"], m, l
		}' $KT/trace 2>&1
		grep -v '^#' $KT/trace | grep -v 'kvm_gmem_presence_set' | tail -n 6 | sed 's/^/  kernel trace: /'
	fi
}
# mon src|dst CMD: an HMP command (monitors on fds 3 and 4)
mon() {
	if [ "$1" = src ]; then echo "$2" >&3; else echo "$2" >&4; fi
}
# wait_mon src|dst REGEX SECS [CMD]: until the monitor output matches, every
# second sending CMD (e.g. "info migrate") if given
wait_mon() {
	_t0=$(date +%s)
	while ! tr -d '\r' < $D/$1.mon.txt | grep -a -q -E "$2"; do
		kill -0 $SPID 2>/dev/null || { echo "source QEMU exited"; return 1; }
		kill -0 $DPID 2>/dev/null || { echo "destination QEMU exited"; return 1; }
		[ $(( $(date +%s) - _t0 )) -ge "$3" ] && { echo "no '$2' from $1 in $3 s"; return 1; }
		tr -d '\r' < $D/$1.mon.txt | grep -a -q -E 'Status:[[:space:]]*(failed|cancelled)' &&
			{ echo "$1: migration $(tr -d '\r' < $D/$1.mon.txt | grep -a -E -o 'Status:[[:space:]]*(failed|cancelled).*' | tail -n 1)"; return 1; }
		[ -n "$4" ] && mon $1 "$4"
		sleep 1
	done
}
# start NAME MEMORY-BACKEND-OPTIONS [QEMU-ARGS...]
start() {
	_n=$1 _m=$2
	shift 2
	mkfifo $D/$_n.mon.in $D/$_n.mon.out || return 1
	cp $H/bootsect $D/$_n.disk || return 1
	$Q -accel kvm -nodefaults -display none -name $_n,debug-threads=on -L /usr/share/seabios -L /usr/share/qemu \
		-machine q35,smm=off,memory-backend=mem -object "$_m" \
		-drive if=none,id=d0,file=$D/$_n.disk,format=raw \
		-device ide-hd,drive=d0,secs=1,cyls=1,heads=1 \
		-serial file:$D/$_n.serial -monitor pipe:$D/$_n.mon ${TRACE:+-msg timestamp=on} \
		"$@" > $D/$_n.log 2>&1 &
	_pid=$!
	cat $D/$_n.mon.out > $D/$_n.mon.txt &
	# Read-write: opening a FIFO only for writing would block for good if
	# QEMU exits before it opens its end (e.g. a backend it refuses).
	if [ $_n = src ]; then SPID=$_pid; exec 3<> $D/src.mon.in; else DPID=$_pid; exec 4<> $D/dst.mon.in; fi
}

# proxy LISTEN TARGET: a tcp_proxy between the QEMUs (PXPID), once it
# listens; else the reason in PXERR (not in $(...): PXPID must survive)
proxy() {
	$H/tcp_proxy "$1" "$2" > $D/proxy.$1.log 2>&1 &
	PXPID=$!
	_t=0
	while ! grep -q '^tcp_proxy: listening' $D/proxy.$1.log; do
		kill -0 $PXPID 2>/dev/null ||
			{ PXERR="tcp_proxy $1 $2 exited: $(cat $D/proxy.$1.log)"; PXPID=; return 1; }
		[ $_t -ge 20 ] && { PXERR="tcp_proxy $1 $2 does not listen"; return 1; }
		sleep 1
		_t=$((_t + 1))
	done
}
# plain FILE: a QEMU log without the -msg timestamp=on prefix
plain() { sed -E 's/^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z //' "$1"; }
# analyse DST-LOG SRC-LOG MODE: where the destination's faults were relative
# to the source's post-copy stream (TRACE).  One line.
analyse() {
	awk -v mode="$3" '
	function hex(s,  i, v) {
		v = 0
		s = tolower(substr(s, 3))
		for (i = 1; i <= length(s); i++)
			v = v * 16 + index("0123456789abcdef", substr(s, i, 1)) - 1
		return v
	}
	function ts(s,  a, b) {
		split(s, a, "T"); split(a[2], b, ":")
		return b[1] * 3600 + b[2] * 60 + substr(b[3], 1, length(b[3]) - 1)
	}
	FNR == 1 { file++ }
	file == 2 && $2 == "get_queued_page" { sent_req++ }
	file == 2 && $2 == "get_queued_page_not_dirty" { dup_req++ }
	# the source discard list: "mem:START/LENGTH", target pages in hex
	file == 2 && $2 == "postcopy_discard_send_range" && $3 ~ /^mem:/ {
		split(substr($3, 5), a, "/"); disc += hex("0x" a[2]); ndisc++
	}
	file != 1 { next }
	$2 == "postcopy_blocktime_begin" {
		# addr: A, time: T, cpu: C, exist: E
		bt_begin++; if ($8 == "-1,") bt_nonvcpu++; if ($10 == "1") bt_exist++
		k = $4; sub(/,$/, "", k); open_bt[k] = ts($1)
		next
	}
	# addr: A, time: T, affected_cpus: N, ...
	$2 == "postcopy_blocktime_end" { k = $4; sub(/,$/, "", k); delete open_bt[k]; next }
	$2 == "postcopy_place_page" || $2 == "postcopy_place_page_zero" {
		split($3, a, "="); placed[a[2]] = ts($1); next
	}
	$2 == "postcopy_blocktime_end_one" { if ($6 + 0 > 0) bt_left++; next }
	$2 == "postcopy_presence_discard" { split($5, a, "="); pdisc += hex(a[2]) / 4096; next }
	$2 == "ram_load_postcopy_loop" {
		split($4, a, "="); addr = hex(a[2])
		# RAM_SAVE_FLAG_ZERO (0x2) or RAM_SAVE_FLAG_PAGE (0x8)
		split($5, f, "="); fl = hex(f[2])
		if (!(int(fl / 2) % 2) && !(int(fl / 8) % 2)) next
		t = ts($1)
		if (!t0) t0 = t
		t1 = t; npages++
		if (npages > 1 && addr != last + 4096) jumps++
		if (addr in ft && !(addr in rt)) { wait += t - ft[addr]; nwait++
			if (t - ft[addr] > maxwait) maxwait = t - ft[addr] }
		if (!(addr in rt)) rt[addr] = t
		last = addr
		next
	}
	{
		off = ""
		if ($2 == "postcopy_presence_fault") {
			for (i = 3; i <= NF; i++) {
				split($i, a, "=")
				if (a[1] == "offset") off = hex(a[2])
				if (a[1] == "origin") origin[a[2]]++
			}
		} else if ($2 == "postcopy_ram_fault_thread_request" && $0 ~ / rb=mem /) {
			for (i = 3; i <= NF; i++) { split($i, a, "="); if (a[1] == "offset") off = hex(a[2]) }
		}
		if (off == "") next
		t = ts($1); nf++
		if (off in seen) dupf++
		seen[off] = 1
		if (nf > 1) gap += t - lastf
		lastf = t
		if (off in rt) { before++; next }
		ft[off] = t
		d = (off - last) / 4096
		if (nf <= 25) { fo[nf] = off; fd[nf] = d; fs[nf] = last; fts[nf] = t }
		if (npages && d >= 1 && d <= 32) ahead++
		else if (npages && d > 32) far++
		else if (npages) behind++
		else early++
	}
	END {
		for (i = 1; i <= 25 && i in fo; i++)
			printf "trace: %s: fault %d at +%.1f ms: page 0x%x, stream at 0x%x (%+d pages), waited %.1f ms\n",
				mode, i, (fts[i] - t0) * 1000, fo[i], fs[i], fd[i],
				(fo[i] in rt) ? (rt[fo[i]] - fts[i]) * 1000 : -1
		dt = t1 - t0
		rate = dt > 0 ? npages / dt : 0
		between = nf > 1 ? gap * 1000 / (nf - 1) : 0
		mwait = nwait ? wait * 1000 / nwait : 0
		o = ""
		for (k in origin) o = o " origin " k ": " origin[k]
		printf "trace: %s: post-copy stream %.1f s, %d pages (%.0f/s, %d jumps); %d faults (%d repeated): %d on pages received already, %d at most 32 pages ahead of the stream, %d further ahead, %d behind it, %d before it; waited %.1f ms mean, %.0f ms max (%d), %.1f ms between faults; source: %d requests for pages not sent, %d for pages sent already%s\n",
			mode, dt, npages, rate, jumps, nf, dupf, before, ahead, far, behind, early,
			mwait, maxwait * 1000, nwait, between, sent_req, dup_req, o
		printf "trace: %s: the source discarded %d pages of mem in %d ranges at the switch; %d made not present (KVM_MEMORY_PRESENT_DISCARD)\n", mode, disc, ndisc, pdisc
		nopen = 0; lst = ""
		for (k in open_bt) {
			nopen++
			if (nopen > 5)
				continue
			if (k in placed)
				w = sprintf("placed %+.1f ms after", (placed[k] - open_bt[k]) * 1000)
			else
				w = "never placed"
			lst = lst " " k " (" w ")"
		}
		printf "trace: %s: blocktime entries %d: %d charged to no vCPU, %d on a page already waited for, %d resolutions leaving the vCPU blocked, %d never resolved%s\n",
			mode, bt_begin, bt_nonvcpu, bt_exist, bt_left, nopen, lst
	}' "$1" "$2"
}

run_mode() {
	MODE=$1
	D=$(mktemp -d /tmp/qemu-postcopy.XXXXXX)
	src_mem=memory-backend-memfd,id=mem,size=$SIZE,share=on
	caps="postcopy-ram"
	case $MODE in
	gmem*) dst_mem=memory-backend-guest-memfd,id=mem,size=$SIZE,presence=on ;;
	uffd*) dst_mem=$src_mem ;;
	esac
	case $MODE in
	gmem|uffd|*-recover|*-broken) ;;
	gmem-async) dst_mem=$dst_mem,presence-async=on ;;
	*-preempt) caps="$caps postcopy-preempt" ;;
	*) say "unknown mode $MODE"; return 1 ;;
	esac
	# The source connects to the destination directly, or through a
	# tcp_proxy (*-broken) that is killed in post-copy.
	to=$PORT
	case $MODE in *-broken) to=$((PORT + 2)) ;; esac
	DIAG=
	case $MODE in *-recover|*-broken) DIAG=1 ;; esac
	case $MODE in gmem-recover|gmem-broken) ktrace on ;; esac

	start src $src_mem -trace get_queued_page -trace get_queued_page_not_dirty \
		${TRACE:+-trace postcopy_discard_send_range} ${DIAG:+$DIAG_SRC} ||
		{ fail "cannot start the source"; return 1; }
	start dst $dst_mem -incoming defer \
		-trace postcopy_presence_fault -trace postcopy_presence_discard \
		-trace postcopy_ram_fault_thread_request ${TRACE:+-trace ram_load_postcopy_loop -trace postcopy_blocktime_begin -trace postcopy_blocktime_end_one \
		-trace postcopy_blocktime_end -trace postcopy_place_page -trace postcopy_place_page_zero} \
		${DIAG:+$DIAG_DST} ||
		{ fail "cannot start the destination"; return 1; }
	t0=$(date +%s)
	while [ "$(bs $D/src.serial)" -lt 1 ]; do
		kill -0 $SPID 2>/dev/null || { fail "source QEMU exited"; return 1; }
		[ $(( $(date +%s) - t0 )) -ge "$TMO" ] && { fail "no pass of the source guest in ${TMO}s"; return 1; }
		sleep 1
	done
	for c in $caps postcopy-blocktime; do
		mon dst "migrate_set_capability $c on"
	done
	for c in $caps; do
		mon src "migrate_set_capability $c on"
	done
	# Slow post-copy down (bytes/s) so that it can be paused in the middle.
	case $MODE in *-recover|*-broken) mon src "migrate_set_parameter max-postcopy-bandwidth 8388608" ;; esac
	mon dst "migrate_incoming tcp:127.0.0.1:$PORT"
	mon dst "info status"
	err=$(wait_mon dst 'VM status: paused \(inmigrate\)' 60) || { fail "$err"; return 1; }
	case $MODE in *-broken)
		proxy $to $PORT || { fail "$PXERR"; return 1; } ;;
	esac

	tm=$(now)
	mon src "migrate -d tcp:127.0.0.1:$to"
	sleep "$PRECOPY"
	mon src "migrate_start_postcopy"
	err=$(wait_mon src 'Status:[[:space:]]*(postcopy-active|completed)' "$TMO" "info migrate") || { fail "$err"; return 1; }
	case $MODE in *-recover|*-broken)
		tr -d '\r' < $D/src.mon.txt | grep -a -q -E 'Status:[[:space:]]*completed' &&
			{ fail "post-copy completed before it could be paused"; return 1; }
		;;
	esac
	case $MODE in
	*-recover)
		# Shut the connection down in post-copy: both sides pause, the
		# destination's vCPUs wait for pages meanwhile.  Then a new one.
		mon src "migrate_pause"
		err=$(wait_mon src 'Status:[[:space:]]*postcopy-paused' 60 "info migrate") || { fail "$err"; return 1; }
		err=$(wait_mon dst 'Status:[[:space:]]*postcopy-paused' 60 "info migrate") || { fail "$err"; return 1; }
		sleep 2
		mon dst "migrate_recover tcp:127.0.0.1:$((PORT + 1))"
		# still postcopy-paused until the source connects: wait for the socket
		err=$(wait_mon dst "tcp:127.0.0.1:$((PORT + 1))" 60 "info migrate") || { fail "$err"; return 1; }
		mon src "migrate -d -r tcp:127.0.0.1:$((PORT + 1))"
		recovered=" (paused and recovered)" ;;
	*-broken)
		# Break the connection: SIGKILL the proxy, the kernel closes its
		# sockets.  Nobody tells the QEMUs; each must find its
		# connection dead and pause post-copy by itself.
		sleep 1
		tk=$(now)
		kill -9 $PXPID
		wait $PXPID 2>/dev/null
		PXPID=
		err=$(wait_mon src 'Status:[[:space:]]*postcopy-paused' 60 "info migrate") || { fail "after the proxy was killed: $err"; return 1; }
		err=$(wait_mon dst 'Status:[[:space:]]*postcopy-paused' 60 "info migrate") || { fail "after the proxy was killed: $err"; return 1; }
		tp=$(elapsed $tk)
		# The destination's vCPU waits for a missing page meanwhile: no
		# pass can end while pages are missing, the QEMU lives on.
		n0=$(bs $D/dst.serial)
		sleep 3
		n1=$(bs $D/dst.serial)
		kill -0 $DPID 2>/dev/null || { fail "the destination QEMU exited while paused"; return 1; }
		[ "$n1" -eq "$n0" ] || { fail "the destination guest made $((n1 - n0)) passes while post-copy was paused"; return 1; }
		mon dst "migrate_recover tcp:127.0.0.1:$((PORT + 1))"
		err=$(wait_mon dst "tcp:127.0.0.1:$((PORT + 1))" 60 "info migrate") || { fail "$err"; return 1; }
		proxy $((PORT + 3)) $((PORT + 1)) || { fail "$PXERR"; return 1; }
		mon src "migrate -d -r tcp:127.0.0.1:$((PORT + 3))"
		recovered=" (connection killed, both paused in ${tp}s, recovered)" ;;
	esac
	err=$(wait_mon src 'Status:[[:space:]]*completed' "$TMO" "info migrate") || { fail "$err"; return 1; }
	err=$(wait_mon dst 'Status:[[:space:]]*completed' "$TMO" "info migrate") || { fail "$err"; return 1; }
	dt=$(elapsed $tm)
	src_times=$(tr -d '\r' < $D/src.mon.txt | grep -a 'Time (ms):' | tail -n 1)
	src_time=$(echo "$src_times" | grep -o 'total=[0-9]*')
	src_down=$(echo "$src_times" | grep -o 'down=[0-9]*')

	# The guest goes on running on the destination.
	n0=$(bs $D/dst.serial)
	t0=$(date +%s)
	while [ "$(bs $D/dst.serial)" -lt $((n0 + PASSES)) ]; do
		kill -0 $DPID 2>/dev/null || { fail "destination QEMU exited"; return 1; }
		[ $(( $(date +%s) - t0 )) -ge "$TMO" ] &&
			{ fail "$(( $(bs $D/dst.serial) - n0 )) of $PASSES passes on the destination in ${TMO}s"; return 1; }
		sleep 1
	done

	: > $D/dst.mon.txt.mark
	mon dst "stop"
	# quoted: unquoted, HMP would read "SIZE /tmp..." as a division
	mon dst "pmemsave 0x100000 0x6300000 \"$D/ram\""
	mon dst "info migrate -a"
	mon dst "info status"
	err=$(wait_mon dst 'VM status: paused$' 60) || { fail "$err"; return 1; }
	[ -f $D/ram ] || { fail "no RAM dump"; return 1; }
	chk=$($H/check_ram $D/ram 2>&1) || { echo "$chk"; fail "destination RAM inconsistent"; return 1; }

	bt=$(tr -d '\r' < $D/dst.mon.txt | grep -a -o 'Postcopy Blocktime (ms): [0-9]*' | tail -n 1 | grep -o '[0-9]*$')
	vbt=$(tr -d '\r' < $D/dst.mon.txt | grep -a -A1 'Postcopy vCPU Blocktime' | tail -n 1 | tr -d ' []')
	lat=$(tr -d '\r' < $D/dst.mon.txt | grep -a -o 'Postcopy Latency (ns): [0-9]*' | tail -n 1 | grep -o '[0-9]*$')
	plain $D/dst.log > $D/dst.plain
	plain $D/src.log > $D/src.plain
	pf=$(grep -c '^postcopy_presence_fault ' $D/dst.plain)
	pd=$(grep -c '^postcopy_presence_discard ' $D/dst.plain)
	pv=$(grep '^postcopy_presence_fault ' $D/dst.plain | grep -c 'origin=1 ')
	uf=$(grep '^postcopy_ram_fault_thread_request ' $D/dst.plain | grep -c 'rb=mem ')
	rq=$(grep -c '^get_queued_page ' $D/src.plain)
	rqs=$(grep -c '^get_queued_page_not_dirty ' $D/src.plain)
	case $MODE in
	gmem*)
		[ "$pd" -gt 0 ] || { fail "no KVM_MEMORY_PRESENT_DISCARD at the start of post-copy"; return 1; }
		[ "$pf" -gt 0 ] || { fail "no presence fault record served"; return 1; }
		[ "$uf" -eq 0 ] || { fail "$uf userfaults on the guest_memfd RAM block"; return 1; }
		how="$pf presence faults ($pv from the vCPU), $pd discards" ;;
	uffd*)
		[ "$uf" -gt 0 ] || { fail "no userfault on the RAM block"; return 1; }
		[ "$pf" -eq 0 ] || { fail "presence faults without presence"; return 1; }
		how="$uf userfaults" ;;
	esac
	[ -n "$bt" ] || { fail "no postcopy blocktime from the destination"; return 1; }
	[ -n "$TRACE" ] && analyse $D/dst.log $D/src.log $MODE
	mon dst "quit"
	mon src "quit"
	t0=$(date +%s)
	while kill -0 $DPID 2>/dev/null || kill -0 $SPID 2>/dev/null; do
		[ $(( $(date +%s) - t0 )) -ge 60 ] && { fail "QEMU did not quit"; return 1; }
		sleep 1
	done
	wait $DPID $SPID 2>/dev/null
	SPID= DPID=
	exec 3>&- 4>&-
	[ -n "$PXPID" ] && { kill $PXPID; wait $PXPID 2>/dev/null; PXPID=; }
	ktrace off
	say "PASS: $MODE$recovered: migrated in ${dt}s (source: ${src_time:-total=?} ms, ${src_down:-down=?} ms), blocktime ${bt} ms (vCPU ${vbt:-?} ms, latency ${lat:-?} ns), $how; source served $rq requests, $rqs for pages it had sent already; $chk"
	rm -rf $D
	return 0
}

rc=0
for m in $MODES; do
	recovered=
	[ "$m" = trace ] && { TRACE=1; continue; }
	run_mode $m || rc=1
done
exit $rc
