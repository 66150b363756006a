#!/bin/bash
# Build our QEMU (qemu/build.sh, cached) and run qemu/tests/smoke.py with it on
# this machine's /dev/kvm: memory-backend-guest-memfd boots QEMU's
# migration-test guest, is a precopy destination, blocks outgoing migration,
# and presence=on either works (kernel with the presence series) or is
# refused with KVM's error.   SMOKE_TESTS="boot migrate" picks tests.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gmem-presence}
[ -c /dev/kvm ] && [ -w /dev/kvm ] || { echo "qemu-smoke: needs a usable /dev/kvm" >&2; exit 1; }
qemu=$("$HERE/build.sh" | sed -n 's/^QEMU=//p')
ver=$(basename "$(dirname "$qemu")"); ver=${ver#qemu-build-}
QEMU_TREE=${QEMU_TREE:-$CACHE/qemu-tree-$ver} exec /usr/bin/python3 "$HERE/tests/smoke.py" "$qemu" ${SMOKE_TESTS:-}
