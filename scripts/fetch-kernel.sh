#!/bin/bash
# Fetch Debian's linux-source-7.3 package and extract the pristine tree into the
# cache.  Bookworm's apt reads the newer suites through a private sources list and
# state directory: nothing on the system changes, nothing is installed from them.
#
#   KVER_PIN   preferred package version (default below); the newest 7.3.y is
#              used when the pin is no longer served.
#   CACHE      cache root (default ${XDG_CACHE_HOME:-~/.cache}/gmem-presence)
# Prints the path of the pristine tree on its last line ("SRC=<path>").
set -euo pipefail
KVER_PIN=${KVER_PIN:-7.3.4-1~bpo13+1}
CACHE=${CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gmem-presence}
APTDIR=$CACHE/apt
mkdir -p "$APTDIR/lists/partial" "$APTDIR/archives/partial" "$CACHE/debs" "$CACHE/src"

cat > "$APTDIR/sources.list" <<SRC
deb http://deb.debian.org/debian trixie-backports main
deb http://deb.debian.org/debian sid main
SRC
APT_OPTS=(-o Dir::Etc::sourcelist="$APTDIR/sources.list" -o Dir::Etc::sourceparts=/dev/null
	  -o Dir::State::Lists="$APTDIR/lists" -o Dir::Cache="$APTDIR"
	  -o Dir::State::status=/dev/null -o APT::Get::List-Cleanup=0 -o Debug::NoLocking=1 -o APT::Sandbox::User=root)

pick_deb() {
	# A deb already downloaded satisfies the pin (or, with no pin, any 7.3.y).
	ls "$CACHE"/debs/linux-source-7.3_"${KVER_PIN:-}"*_all.deb 2>/dev/null | sort -V | tail -n1
}

deb=$(pick_deb || true)
if [ -z "$deb" ]; then
	# Refresh the private lists at most once a day.
	if [ -z "$(find "$APTDIR/lists" -name '*Packages*' -mtime -1 2>/dev/null | head -n1)" ]; then
		apt-get "${APT_OPTS[@]}" update -qq >&2
	fi
	avail=$(apt-cache "${APT_OPTS[@]}" madison linux-source-7.3 | awk '{print $3}' | sort -uV)
	[ -n "$avail" ] || { echo "fetch-kernel: linux-source-7.3 is not served by trixie-backports/sid" >&2; exit 1; }
	ver=""
	if [ -n "$KVER_PIN" ] && echo "$avail" | grep -qxF "$KVER_PIN"; then
		ver=$KVER_PIN
	else
		[ -n "$KVER_PIN" ] && echo "fetch-kernel: pin $KVER_PIN not served; falling back" >&2
		ver=$(echo "$avail" | tail -n1)
	fi
	(cd "$CACHE/debs" && apt-get "${APT_OPTS[@]}" download "linux-source-7.3=$ver" >&2)
	KVER_PIN=
	deb=$(pick_deb)
fi
ver=$(dpkg-deb -f "$deb" Version)
src=$CACHE/src/linux-source-$ver
if [ ! -f "$src/.extracted" ]; then
	echo "fetch-kernel: extracting $deb" >&2
	rm -rf "$src" "$src.tmp"
	mkdir -p "$src.tmp"
	dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$src.tmp" --wildcards './usr/src/linux-source-7.3.tar.*'
	tarball=$(ls "$src.tmp"/usr/src/linux-source-7.3.tar.*)
	mkdir -p "$src"
	tar -xf "$tarball" -C "$src" --strip-components=1
	rm -rf "$src.tmp"
	touch "$src/.extracted"
fi
echo "fetch-kernel: using Debian linux-source-7.3 $ver" >&2
echo "SRC=$src"
