#!/bin/bash
# Fetch the QEMU source from Debian's source package and a newer meson, into the
# cache.  Like scripts/fetch-kernel.sh, bookworm's apt reads the newer suite
# through a private sources list (here with deb-src lines) and a private state
# directory: nothing on the system changes, nothing is installed from it.
#
# Debian repacks QEMU's upstream tarball as <ver>+ds (bundled firmware binaries
# and python/wheels removed; a KVM-only build with Debian's seabios needs
# neither).  The source is unpacked the way Debian builds it: dpkg-source
# applies debian/patches (among them the ones that let the stripped tarball
# configure: no edk2 blobs to unpack, no pycotap).  Our patches
# (qemu/patches/) go on top of that.
#
#   QEMU_PIN   preferred source version (default below); the newest served
#              version is used when the pin is gone from the archive.
#   MESON_MIN  lowest meson accepted (QEMU 10.2 needs 1.5)
#   CACHE      cache root (default ${XDG_CACHE_HOME:-~/.cache}/gmem-presence)
# Prints "QEMU_SRC=<path>" and "QEMU_PYTHONPATH=<meson's path>" last.
set -euo pipefail
QEMU_PIN=${QEMU_PIN-1:10.2.2+ds-1}
MESON_MIN=${MESON_MIN:-1.5}
CACHE=${CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gmem-presence}
APTDIR=$CACHE/apt-qemu
DL=$CACHE/qemu-dl
mkdir -p "$APTDIR/lists/partial" "$APTDIR/archives/partial" "$DL"

cat > "$APTDIR/sources.list" <<SRC
deb http://deb.debian.org/debian sid main
deb-src http://deb.debian.org/debian sid main
SRC
APT_OPTS=(-o Dir::Etc::sourcelist="$APTDIR/sources.list" -o Dir::Etc::sourceparts=/dev/null
	  -o Dir::State::Lists="$APTDIR/lists" -o Dir::Cache="$APTDIR"
	  -o Dir::State::status=/dev/null -o APT::Get::List-Cleanup=0 -o Debug::NoLocking=1
	  -o APT::Sandbox::User=root)

refresh_lists() {
	# At most once a day (and always when a lookup found nothing).
	if [ "${1:-}" = force ] ||
	   [ -z "$(find "$APTDIR/lists" -name '*Sources*' -mtime -1 2>/dev/null | head -n1)" ]; then
		apt-get "${APT_OPTS[@]}" update -qq >&2
	fi
}

# --- QEMU source ---------------------------------------------------------------
# A source already extracted for the pin is used as is (no network).
src_dir_of() { echo "$CACHE/qemu-src-${1#*:}"; }
ver=""
if [ -n "$QEMU_PIN" ] && [ -f "$(src_dir_of "$QEMU_PIN")/.extracted" ]; then
	ver=$QEMU_PIN
else
	refresh_lists
	avail=$(apt-cache "${APT_OPTS[@]}" showsrc qemu 2>/dev/null |
		awk '$1 == "Package:" {p = $2} $1 == "Version:" && p == "qemu" {print $2}' | sort -uV)
	if [ -z "$avail" ]; then
		refresh_lists force
		avail=$(apt-cache "${APT_OPTS[@]}" showsrc qemu 2>/dev/null |
			awk '$1 == "Package:" {p = $2} $1 == "Version:" && p == "qemu" {print $2}' | sort -uV)
	fi
	[ -n "$avail" ] || { echo "fetch-qemu: no qemu source package in sid" >&2; exit 1; }
	if [ -n "$QEMU_PIN" ] && echo "$avail" | grep -qxF "$QEMU_PIN"; then
		ver=$QEMU_PIN
	else
		[ -n "$QEMU_PIN" ] && echo "fetch-qemu: pin $QEMU_PIN not served; falling back" >&2
		ver=$(echo "$avail" | tail -n1)
	fi
fi
src=$(src_dir_of "$ver")
if [ ! -f "$src/.extracted" ]; then
	(cd "$DL" && apt-get "${APT_OPTS[@]}" source --download-only "qemu=$ver" >&2)
	dsc=$DL/qemu_${ver#*:}.dsc
	echo "fetch-qemu: unpacking $(basename "$dsc") (orig tarball + debian/patches)" >&2
	rm -rf "$src" "$src.tmp"
	dpkg-source -q -x "$dsc" "$src.tmp" >&2
	mv "$src.tmp" "$src"
	touch "$src/.extracted"
fi
echo "fetch-qemu: using Debian qemu $ver (upstream $(cat "$src/VERSION"))" >&2

# --- meson -------------------------------------------------------------------------
# QEMU's configure builds a Python venv (with the system's site packages) and
# takes meson from it; it would install meson from python/wheels/, but
# Debian's +ds tarball drops that directory.  sid's meson is a pure-Python
# .deb (Architecture: all): extracted here, not installed, and put on
# PYTHONPATH by qemu/build.sh.
PYROOT=$CACHE/qemu-meson
PYPATH=$PYROOT/usr/lib/python3/dist-packages
meson_ok() {
	local v
	v=$(PYTHONPATH=$PYPATH /usr/bin/python3 -c 'import mesonbuild.coredata as c; print(c.version)' 2>/dev/null) &&
		dpkg --compare-versions "$v" ge "$MESON_MIN"
}
if ! meson_ok; then
	refresh_lists
	(cd "$DL" && rm -f meson_*.deb && apt-get "${APT_OPTS[@]}" download meson >&2)
	rm -rf "$PYROOT" && mkdir -p "$PYROOT"
	dpkg-deb -x "$(ls "$DL"/meson_*_all.deb | sort -V | tail -n1)" "$PYROOT"
	meson_ok || { echo "fetch-qemu: sid's meson is older than $MESON_MIN" >&2; exit 1; }
fi
echo "fetch-qemu: using meson $(PYTHONPATH=$PYPATH /usr/bin/python3 -c 'import mesonbuild.coredata as c; print(c.version)') ($(cd "$DL" && ls meson_*_all.deb))" >&2
echo "QEMU_SRC=$src"
echo "QEMU_PYTHONPATH=$PYPATH"
