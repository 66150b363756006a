#!/bin/bash
# make htmldocs: the KVM documentation of the assembled tree through the
# kernel's Sphinx build (Debian's python3-sphinx), restricted to
# Documentation/virt/kvm/ (SPHINXDIRS), HTML into $CACHE/build/<ver>-htmldocs.
# Fails on a Sphinx warning or error in a file the series touches
# (Documentation/virt/kvm/api.rst, index.rst, guest_memfd_presence.rst, ...);
# messages about other files are counted and shown, not failed on.  Then
# scripts/kernel-doc -Wall on every C file and header the series touches:
# fails if a file has more kernel-doc warnings than in the pristine tree.
#
#   SPHINXDIRS   default virt/kvm        log: $OUT/htmldocs.log
set -euo pipefail
. "$(dirname "$0")/common.sh"
SPHINXDIRS=${SPHINXDIRS:-virt/kvm}
gp_lock
t0=$(now)
resolve_paths
"$TOP/scripts/assemble.sh" >&2
command -v sphinx-build >/dev/null || die "no sphinx-build (make deps installs python3-sphinx)"
ours=$(cat "$TOP"/patches/*.patch | sed -n 's|^+++ b/||p' | cut -f1 | sort -u)
DOCS=$CACHE/build/$KVER-htmldocs
mkdir -p "$DOCS" "$OUT"
log=$OUT/htmldocs.log
rc=0
nice make -C "$TREE" O="$DOCS" SPHINXDIRS="$SPHINXDIRS" htmldocs > "$log" 2>&1 || rc=$?
[ $rc = 0 ] || { tail -n 20 "$log"; die "make htmldocs failed (rc $rc, $log)"; }
fail=0
msgs=$(grep -E '(WARNING|ERROR|SEVERE|CRITICAL)' "$log" | grep -v 'dot(1) not found' || true)
mine=0 other=0
while IFS= read -r m; do
	[ -n "$m" ] || continue
	f=${m%%:*}
	f=${f#"$TREE"/}
	if echo "$ours" | grep -qxF "$f"; then
		echo "FAIL  htmldocs: $m"
		mine=$((mine + 1))
	else
		other=$((other + 1))
	fi
done <<< "$msgs"
[ $mine = 0 ] || fail=1
echo "$( [ $mine = 0 ] && echo PASS || echo FAIL)  htmldocs SPHINXDIRS=$SPHINXDIRS: $mine warnings from files the series touches, $other from others ($(since "$t0") s; HTML in $DOCS/Documentation/output, log ${log#"$TOP"/})"

# kernel-doc: no new warning in what the series touches.
kd=0
for f in $(echo "$ours" | grep -E '^(virt|arch|include)/.*\.[ch]$'); do
	new=$("$TREE/scripts/kernel-doc" -none -Wall "$TREE/$f" 2>&1 | grep -c -i 'warning' || true)
	old=0
	[ -f "$SRC/$f" ] && old=$(cd "$SRC" && scripts/kernel-doc -none -Wall "$f" 2>&1 | grep -c -i 'warning' || true)
	if [ "$new" -gt "$old" ]; then
		echo "FAIL  kernel-doc $f: $new warnings ($old before the series)"
		"$TREE/scripts/kernel-doc" -none -Wall "$TREE/$f" 2>&1 | head -n 10
		kd=1
	fi
done
[ $kd = 0 ] && echo "PASS  kernel-doc -Wall: no new warning in the $(echo "$ours" | grep -cE '^(virt|arch|include)/.*\.[ch]$') kernel files the series touches"
[ $kd = 0 ] || fail=1
exit $fail
