#!/bin/bash
# Edit the patch series (patches/*.patch) as git commits.
#
#   scripts/series.sh import   make $EDIT a git repo: pristine copies of every
#                              file the series touches, then one commit per
#                              patch (git am)
#   scripts/series.sh export   rewrite patches/ from the commits in $EDIT
#                              (git format-patch), one file per commit
#
# Edit with ordinary git in $EDIT (commit --fixup + rebase -i --autosquash,
# or add new commits), then export.  SRC is the pristine tree.
set -euo pipefail
TOP=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gmem-presence}
EDIT=${EDIT:-$CACHE/series-edit}
SRC=${SRC:?set SRC to the pristine tree}
export GIT_AUTHOR_NAME=${GIT_AUTHOR_NAME:-gmem-presence} GIT_AUTHOR_EMAIL=${GIT_AUTHOR_EMAIL:-gmem-presence@localhost}
export GIT_COMMITTER_NAME=$GIT_AUTHOR_NAME GIT_COMMITTER_EMAIL=$GIT_AUTHOR_EMAIL

case "${1:-}" in
import)
	rm -rf "$EDIT"
	mkdir -p "$EDIT"
	files=$(cat "$TOP"/patches/*.patch | sed -n 's|^+++ b/||p' | cut -f1 | sort -u)
	extra=${EXTRA_FILES:-}
	for f in $files $extra; do
		mkdir -p "$EDIT/$(dirname "$f")"
		cp "$SRC/$f" "$EDIT/$f"
	done
	git -C "$EDIT" init -q
	git -C "$EDIT" add -A
	git -C "$EDIT" commit -qm "pristine"
	git -C "$EDIT" tag base
	for p in "$TOP"/patches/*.patch; do
		if head -1 "$p" | grep -q '^From '; then
			git -C "$EDIT" am -q "$p"
		else
			git -C "$EDIT" apply "$p"
			git -C "$EDIT" add -A
			git -C "$EDIT" commit -qm "$(basename "$p" .patch)"
		fi
	done
	echo "series: $EDIT has $(git -C "$EDIT" rev-list --count base..HEAD) commits"
	;;
export)
	rm -f "$TOP"/patches/*.patch
	git -C "$EDIT" format-patch -q --signoff --no-signature --zero-commit -N \
		-o "$TOP/patches" base..HEAD
	ls "$TOP/patches"
	;;
*)
	echo "usage: $0 import|export" >&2
	exit 2
	;;
esac
