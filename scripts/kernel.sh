#!/bin/bash
# fetch (cached) -> assemble -> build bzImage, under the global lock, timed.
#   FLAVOR=debug|release   (default debug)    build dir: $CACHE/build/<kver>-<flavor>
set -euo pipefail
. "$(dirname "$0")/common.sh"
gp_lock

t0=$(now)
resolve_paths
timing "fetch kernel source" "$(since "$t0")"

t0=$(now)
"$TOP/scripts/assemble.sh"
timing "assemble tree" "$(since "$t0")"

t0=$(now)
"$TOP/scripts/build-kernel.sh" || die "kernel build failed ($FLAVOR, $KBUILD)"
timing "build bzImage ($FLAVOR)" "$(since "$t0")"
ls -l "$KBUILD/arch/x86/boot/bzImage" | awk '{print "[kernel] " $NF " (" $5 " bytes)"}'
