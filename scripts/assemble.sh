#!/bin/bash
# Assemble the kernel tree we build: pristine Debian source + our patch series
# (patches/*.patch, in order; the new files are in the patches that add them).
# Only files whose contents changed are rewritten, so kbuild stays incremental.
#
#   SRC   pristine tree (from fetch-kernel.sh)      required
#   TREE  assembled tree                            required
set -euo pipefail
TOP=$(cd "$(dirname "$0")/.." && pwd)
SRC=${SRC:?}
TREE=${TREE:?}
# PATCHES (a list of files) overrides the series, e.g. to build a prefix of it.
PATCHES=${PATCHES:-$(ls "$TOP"/patches/*.patch 2>/dev/null | sort || true)}

if [ ! -f "$TREE/.assembled" ]; then
	echo "assemble: new tree $TREE (hard links to the pristine source)"
	rm -rf "$TREE"
	cp -al "$SRC" "$TREE"
	: > "$TREE/.manifest"
	touch "$TREE/.assembled"
fi

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
touched=$(for p in $PATCHES; do sed -n 's|^+++ b/||p' "$p" | cut -f1; done | sed '/^$/d' | sort -u)
new=0
for f in $touched; do
	if [ -f "$SRC/$f" ]; then
		mkdir -p "$stage/$(dirname "$f")"
		cp "$SRC/$f" "$stage/$f"
	else
		new=$((new + 1))
	fi
done
for p in $PATCHES; do
	patch -s -p1 -d "$stage" --no-backup-if-mismatch -r - < "$p" ||
		{ echo "assemble: $(basename "$p") does not apply"; exit 1; }
done

# Files we touched last time but no longer do go back to pristine.
# Files we no longer change go back to pristine, with a new mtime (not the
# pristine one, which is older than their objects) so that make rebuilds them.
for f in $(comm -23 "$TREE/.manifest" <(echo "$touched")); do
	rm -f "$TREE/$f"
	if [ -f "$SRC/$f" ]; then cp "$SRC/$f" "$TREE/$f"; fi
done
# rsync replaces files by rename, never in place, so the hard links to the
# pristine tree are broken rather than written through; -c skips unchanged ones.
rsync -rc "$stage/" "$TREE/"
echo "$touched" > "$TREE/.manifest"
echo "assemble: $(echo "$PATCHES" | grep -c . || true) patches, $new new files"
