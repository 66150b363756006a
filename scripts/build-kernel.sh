#!/bin/bash
# Configure (when the fragments change) and build bzImage out of tree.
#   TREE     assembled source tree                 required
#   KBUILD   build directory                       required
#   FLAVOR   debug | debug-nokasan | release        default debug
set -euo pipefail
TOP=$(cd "$(dirname "$0")/.." && pwd)
TREE=${TREE:?}
KBUILD=${KBUILD:?}
FLAVOR=${FLAVOR:-debug}
JOBS=${JOBS:-$(nproc)}
CACHE=${CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gmem-presence}
FRAGS=("$TOP/configs/base.fragment")
case "$FLAVOR" in
debug)	FRAGS+=("$TOP/configs/debug.fragment") ;;
# The debug checkers without KASAN: to measure what KASAN costs, or for a
# faster loop while a change is not ready for `make check`.
debug-nokasan)
	mkdir -p "$KBUILD"
	grep -v '^CONFIG_KASAN' "$TOP/configs/debug.fragment" > "$KBUILD/nokasan.fragment"
	echo "# CONFIG_KASAN is not set" >> "$KBUILD/nokasan.fragment"
	FRAGS+=("$KBUILD/nokasan.fragment") ;;
release) ;;
*)	echo "build-kernel: unknown FLAVOR=$FLAVOR (debug, debug-nokasan, release)" >&2
	exit 1 ;;
esac

export CCACHE_DIR=${CCACHE_DIR:-$CACHE/ccache}
# depend mode: no extra preprocessor pass on a miss
export CCACHE_DEPEND=1 CCACHE_BASEDIR=$TREE
MAKEARGS=(-C "$TREE" O="$KBUILD" ARCH=x86_64 -j"$JOBS" CC="ccache gcc")
mkdir -p "$KBUILD"

want=$(cat "${FRAGS[@]}" | sha256sum | cut -c1-16)
if [ ! -f "$KBUILD/.config" ] || [ "$(cat "$KBUILD/.frag-hash" 2>/dev/null)" != "$want" ]; then
	echo "build-kernel: configuring $FLAVOR"
	make "${MAKEARGS[@]}" tinyconfig >/dev/null
	(cd "$KBUILD" && "$TREE/scripts/kconfig/merge_config.sh" -m -O "$KBUILD" "$KBUILD/.config" "${FRAGS[@]}" >/dev/null)
	make "${MAKEARGS[@]}" olddefconfig >/dev/null
	# Every requested option must survive dependency resolution.
	bad=0
	while IFS= read -r l; do
		case "$l" in
		CONFIG_*=n) k=${l%%=*}
			grep -qE "^$k=" "$KBUILD/.config" && { echo "config: $k should be unset"; bad=1; } ;;
		CONFIG_*=*) k=${l%%=*}; v=${l#*=}
			got=$(grep -E "^$k=" "$KBUILD/.config" | cut -d= -f2- || true)
			[ "$got" = "$v" ] || { echo "config: $k wanted $v got '${got:-unset}'"; bad=1; } ;;
		"# CONFIG_"*" is not set") k=${l#\# }; k=${k%% *}
			grep -qE "^$k=" "$KBUILD/.config" && { echo "config: $k should be unset"; bad=1; } ;;
		esac
	done < <(cat "${FRAGS[@]}")
	[ $bad = 0 ] || { echo "build-kernel: config fragment not satisfied"; exit 1; }
	echo "$want" > "$KBUILD/.frag-hash"
fi
t0=$(date +%s)
make "${MAKEARGS[@]}" -s bzImage
echo "build-kernel: $FLAVOR bzImage in $(( $(date +%s) - t0 )) s"
