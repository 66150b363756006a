#!/bin/bash
# Fetch the QEMU that boots the test VM: Debian's qemu-system-x86 from
# bookworm-backports, extracted into the cache (nothing is installed on the
# system; bookworm's own qemu-system-x86, 7.2, from scripts/deps.sh provides
# the shared libraries and the SeaBIOS images it needs).
#
# Not the default: it is for comparing QEMU versions (run the VM with
# QEMU=... QEMU_DATA=... from the last two lines printed).  The intermittent
# nested-vCPU fault of the test VM (docs/benchmarks.md) was measured with
# both: bookworm's 7.2 lost 1 of 16 demand_paging_test runs, 10.0 lost 4 of
# 28 and then the whole guest; 10.0 also hung the guest with a kernel
# without the series.  So the VM keeps bookworm's 7.2.
#
#   QEMU_PIN   preferred package version (default below); the newest served
#              version is used when the pin is gone.
#   CACHE      cache root (default ${XDG_CACHE_HOME:-~/.cache}/gmem-presence)
# Prints, on its last two lines, "QEMU=<binary>" and "QEMU_DATA=<dir>" (pass
# the latter with -L, before the system's firmware directories).
set -euo pipefail
QEMU_PIN=${QEMU_PIN:-1:10.0.2+ds-2+deb13u1~bpo12+1}
CACHE=${CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gmem-presence}
APTDIR=$CACHE/apt-bookworm-backports
PKGS="qemu-system-x86 qemu-system-common qemu-system-data"
mkdir -p "$APTDIR/lists/partial" "$APTDIR/archives/partial" "$CACHE/debs"
echo "deb http://deb.debian.org/debian bookworm-backports main" > "$APTDIR/sources.list"
APT_OPTS=(-o Dir::Etc::sourcelist="$APTDIR/sources.list" -o Dir::Etc::sourceparts=/dev/null
	  -o Dir::State::Lists="$APTDIR/lists" -o Dir::Cache="$APTDIR"
	  -o Dir::State::status=/dev/null -o APT::Get::List-Cleanup=0 -o Debug::NoLocking=1 -o APT::Sandbox::User=root)

# The package version with its epoch, as a file name ("1:" is "1%3a").
deb_name() { echo "$CACHE/debs/${1}_$(echo "$2" | sed 's/:/%3a/')_"; }
have_all() {
	local p
	for p in $PKGS; do ls "$(deb_name "$p" "$1")"*.deb >/dev/null 2>&1 || return 1; done
}

ver=$QEMU_PIN
if ! have_all "$ver"; then
	if [ -z "$(find "$APTDIR/lists" -name '*Packages*' -mtime -1 2>/dev/null | head -n1)" ]; then
		apt-get "${APT_OPTS[@]}" update -qq >&2
	fi
	avail=$(apt-cache "${APT_OPTS[@]}" madison qemu-system-x86 | awk '{print $3}' | sort -uV)
	[ -n "$avail" ] || { echo "fetch-qemu: qemu-system-x86 is not served by bookworm-backports" >&2; exit 1; }
	if ! echo "$avail" | grep -qxF "$ver"; then
		echo "fetch-qemu: pin $ver not served; falling back" >&2
		ver=$(echo "$avail" | tail -n1)
	fi
	(cd "$CACHE/debs" && apt-get "${APT_OPTS[@]}" download $(for p in $PKGS; do echo "$p=$ver"; done) >&2)
fi
root=$CACHE/qemu-$(echo "$ver" | sed 's/^[0-9]*://')
if [ ! -f "$root/.extracted" ]; then
	echo "fetch-qemu: extracting qemu-system-x86 $ver" >&2
	rm -rf "$root"
	for p in $PKGS; do dpkg-deb -x "$(ls "$(deb_name "$p" "$ver")"*.deb)" "$root"; done
	missing=$(ldd "$root/usr/bin/qemu-system-x86_64" | grep 'not found' || true)
	[ -z "$missing" ] || { echo "fetch-qemu: libraries missing (scripts/deps.sh):" >&2; echo "$missing" >&2; exit 1; }
	touch "$root/.extracted"
fi
echo "fetch-qemu: using Debian qemu-system-x86 $ver" >&2
echo "QEMU=$root/usr/bin/qemu-system-x86_64"
echo "QEMU_DATA=$root/usr/share/qemu"
