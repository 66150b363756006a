#!/bin/bash
# Build our QEMU: Debian's QEMU source (qemu/fetch.sh) + qemu/patches/*.patch,
# a KVM-only x86_64-softmmu with the devices of qemu/devices-x86_64.mak, with
# ccache.  Run under nice: the machine is shared.
#
#   CACHE        cache root (default ${XDG_CACHE_HOME:-~/.cache}/gmem-presence)
#   QEMU_TREE    patched tree  default $CACHE/qemu-tree-<ver>  (a git repo:
#                "pristine" tag = Debian's source, our patches on top via git am)
#   QEMU_BUILD   build dir     default $CACHE/qemu-build-<ver>
#   CCACHE_DIR   default $CACHE/ccache-qemu
#   JOBS         default nproc
# Prints "QEMU_TREE=<patched tree>", "QEMU=<path of qemu-system-x86_64>" and
# "MIGRATION_TEST=<path of tests/qtest/migration-test>" last.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gmem-presence}
export CACHE
log() { echo "[qemu-build] $*" >&2; }
die() { echo "[qemu-build] ERROR: $*" >&2; exit 1; }

out=$("$HERE/fetch.sh") || die "fetch.sh failed"
QEMU_SRC=$(echo "$out" | sed -n 's/^QEMU_SRC=//p')
QEMU_PYTHONPATH=$(echo "$out" | sed -n 's/^QEMU_PYTHONPATH=//p')
ver=${QEMU_SRC##*/qemu-src-}
QEMU_TREE=${QEMU_TREE:-$CACHE/qemu-tree-$ver}
QEMU_BUILD=${QEMU_BUILD:-$CACHE/qemu-build-$ver}
export CCACHE_DIR=${CCACHE_DIR:-$CACHE/ccache-qemu}
# Meson and pycotap from sid (fetch.sh); the build's meson re-runs need them too.
export PYTHONPATH=$QEMU_PYTHONPATH${PYTHONPATH:+:$PYTHONPATH}
JOBS=${JOBS:-$(nproc)}
GIT=(git -C "$QEMU_TREE" -c user.name=gmem-presence -c user.email=gmem-presence@localhost
     -c commit.gpgsign=false)

# --- tree: pristine + patches ----------------------------------------------------
# git keeps the tree and lets the series apply as commits (git am, their
# messages kept).  A reset rewrites only the files that differ, with a new
# mtime, so ninja and ccache redo only what the patch set changed.
if [ ! -f "$QEMU_TREE/.git/gmem-pristine" ]; then
	log "creating $QEMU_TREE from $QEMU_SRC"
	rm -rf "$QEMU_TREE"
	mkdir -p "$QEMU_TREE"
	cp -a "$QEMU_SRC/." "$QEMU_TREE/"
	rm -f "$QEMU_TREE/.extracted"
	"${GIT[@]}" init -q
	"${GIT[@]}" add -A -f
	"${GIT[@]}" commit -q -m "Debian qemu $ver (pristine)"
	"${GIT[@]}" tag -f pristine >/dev/null
	touch "$QEMU_TREE/.git/gmem-pristine"
fi
patches=$(ls "$HERE"/patches/*.patch 2>/dev/null || true)
devices=$HERE/devices-x86_64.mak
stamp=$( { [ -z "$patches" ] || cat $patches; cat "$devices"; } | sha256sum | cut -d' ' -f1)
if [ "$(cat "$QEMU_TREE/.git/gmem-series" 2>/dev/null)" != "$stamp" ]; then
	log "applying $(echo "$patches" | grep -c . || true) patch(es) from qemu/patches/"
	rm -f "$QEMU_TREE/.git/gmem-series"
	"${GIT[@]}" am --abort >/dev/null 2>&1 || true
	"${GIT[@]}" reset -q --hard pristine
	"${GIT[@]}" clean -q -fdx
	for p in $patches; do
		"${GIT[@]}" am -q --keep-cr "$p" || die "$(basename "$p") does not apply"
	done
	cp "$devices" "$QEMU_TREE/configs/devices/x86_64-softmmu/gmem-presence.mak"
	echo "$stamp" > "$QEMU_TREE/.git/gmem-series"
fi

# --- configure + build -----------------------------------------------------------
# KVM only (no TCG), no default features or devices.  Firmware: Debian's
# seabios and /usr/share/qemu (kvmvapic.bin, linuxboot_dma.bin); the +ds
# tarball has no blobs to install (as in debian/rules).
CONF=(--target-list=x86_64-softmmu --without-default-features --without-default-devices
      --with-devices-x86_64=gmem-presence --enable-kvm --disable-tcg
      --python=/usr/bin/python3 --disable-download --disable-docs --disable-install-blobs
      --prefix=/usr --firmwarepath=/usr/share/qemu:/usr/share/seabios
      --extra-cflags=-g1)
# QEMU's configure hands meson the compiler in a machine file, so meson's own
# ccache detection does not apply: name it in --cc.
command -v ccache >/dev/null && CONF+=(--cc="ccache cc")
conf_stamp=$(printf '%s\n' "${CONF[@]}" "$QEMU_TREE" | sha256sum | cut -d' ' -f1)
t0=$(date +%s.%N)
if [ ! -f "$QEMU_BUILD/build.ninja" ] || [ "$(cat "$QEMU_BUILD/.gmem-conf" 2>/dev/null)" != "$conf_stamp" ]; then
	log "configuring in $QEMU_BUILD"
	rm -rf "$QEMU_BUILD" && mkdir -p "$QEMU_BUILD"
	(cd "$QEMU_BUILD" && nice "$QEMU_TREE/configure" "${CONF[@]}") > "$QEMU_BUILD.configure.log" 2>&1 ||
		{ tail -n 30 "$QEMU_BUILD.configure.log" >&2; die "configure failed (log: $QEMU_BUILD.configure.log)"; }
	echo "$conf_stamp" > "$QEMU_BUILD/.gmem-conf"
fi
log "building (ninja -j$JOBS, ccache in $CCACHE_DIR)"
nice ninja -C "$QEMU_BUILD" -j"$JOBS" qemu-system-x86_64 tests/qtest/migration-test >&2 || die "build failed"
log "built in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s"
"$QEMU_BUILD/qemu-system-x86_64" --version | head -n1 >&2
echo "QEMU_TREE=$QEMU_TREE"
echo "QEMU=$QEMU_BUILD/qemu-system-x86_64"
echo "MIGRATION_TEST=$QEMU_BUILD/tests/qtest/migration-test"
