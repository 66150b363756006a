#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# `make demo`, in the test VM: gmfp-vm, the reference VMM, end to end.
#
#   1. boot a VM (shared memory), let its guest write and verify all of its
#      RAM, snapshot it (vCPU state + memory image)
#   2. restore the snapshot lazily into a confidential VM
#      (KVM_X86_SW_PROTECTED_VM: private memory, filled only by
#      KVM_SET_MEMORY_PRESENT COPY): the vCPU runs at once, pages come
#      from the image on demand and in the background
#   3. migrate a running VM post-copy between two gmfp-vm processes on
#      loopback: the source stops, the destination resumes at once and
#      pulls the pages from the source's live guest_memfd
#
# Each step prints its summary; the guest checks every word it reads back
# and the VMM checks the guest's checksum.  GMFP_DEMO_MEM sets the RAM size.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
vm=$here/bin/gmfp-vm
mem=${GMFP_DEMO_MEM:-128M}
snap=/tmp/gmfp-demo-snapshot
port=7070
# the ASan build's leak report at exit would drown the summaries
export ASAN_OPTIONS=${ASAN_OPTIONS:-}:detect_leaks=0

step() { echo; echo "### $*"; echo; }

kind="release kernel"
# (not the checkers' names: the log verdict would take them for reports)
[ -e /sys/kernel/debug/kmemleak ] && kind="debug kernel (memory and lock checkers on: every figure is slower)"
echo "gmfp-vm demo: $(uname -r), $kind, QEMU TCG (nested SVM), clock $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource 2>/dev/null)"
echo "RAM $mem; the tools are ASan+UBSan builds"

step "1/3  gmfp-vm snapshot --mem $mem $snap"
"$vm" snapshot --mem "$mem" "$snap"

step "2/3  gmfp-vm restore --lazy --private $snap   (confidential VM)"
"$vm" restore --lazy --private "$snap"

step "3/3  gmfp-vm incoming $port  &  gmfp-vm migrate --postcopy 127.0.0.1:$port"
"$vm" incoming --listen 127.0.0.1 "$port" > /tmp/gmfp-demo-incoming.txt &
dest=$!
src_rc=0
"$vm" migrate --postcopy "127.0.0.1:$port" --mem "$mem" --serve 127.0.0.1:0 \
	> /tmp/gmfp-demo-migrate.txt || src_rc=$?
dest_rc=0
wait $dest || dest_rc=$?
echo "--- source"
cat /tmp/gmfp-demo-migrate.txt
echo "--- destination"
cat /tmp/gmfp-demo-incoming.txt
rm -rf "$snap"
[ $src_rc = 0 ] && [ $dest_rc = 0 ]
