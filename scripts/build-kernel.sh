#!/bin/bash
# Configure (when the fragments change) and build bzImage out of tree.
#   TREE     assembled source tree                 required
#   KBUILD   build directory                       required
#   FLAVOR   debug | release                        default debug
set -euo pipefail
TOP=$(cd "$(dirname "$0")/.." && pwd)
TREE=${TREE:?}
KBUILD=${KBUILD:?}
FLAVOR=${FLAVOR:-debug}
JOBS=${JOBS:-$(nproc)}
CACHE=${CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gmem-presence}
FRAGS=("$TOP/configs/base.fragment")
[ "$FLAVOR" = debug ] && FRAGS+=("$TOP/configs/debug.fragment")

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
