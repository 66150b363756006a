#!/bin/bash
# The patch series (patches/*.patch) is the kernel side's source: every change
# to an existing file and every new file is in the patch that introduces it.
#
#   scripts/series.sh import   make $EDIT a git repo: pristine copies of every
#                              existing file the series touches, then one
#                              commit per patch (git am)
#   scripts/series.sh export   rewrite patches/ from the commits in $EDIT
#                              (git format-patch), one file per commit
#   scripts/series.sh mail     (make series) the series as a git history on
#                              the whole pristine tree, exported with
#                              git format-patch --cover-letter into
#                              $OUT/series/; the cover letter is
#                              patches/cover-letter.txt, its figures filled in
#                              by scripts/cover-letter.py
#   scripts/series.sh verify   git am of $OUT/series/ onto the pristine tree
#                              gives exactly the tree scripts/assemble.sh
#                              builds from patches/ (what make kernel builds);
#                              diff -r of the two trees
#
# Edit with ordinary git in $EDIT (commit --fixup + rebase -i --autosquash,
# or add new commits), then export.  SRC is the pristine tree (default: from
# scripts/fetch-kernel.sh).  mail and verify share one git repository of the
# pristine tree in $CACHE/series-git-<version> (imported once, ~1.5 min),
# under their own lock, not the build lock.
set -euo pipefail
. "$(dirname "$0")/common.sh"
EDIT=${EDIT:-$CACHE/series-edit}
export GIT_AUTHOR_NAME=${GIT_AUTHOR_NAME:-gmem-presence} GIT_AUTHOR_EMAIL=${GIT_AUTHOR_EMAIL:-gmem-presence@localhost}
export GIT_COMMITTER_NAME=$GIT_AUTHOR_NAME GIT_COMMITTER_EMAIL=$GIT_AUTHOR_EMAIL
PATCHES_DIR=$TOP/patches
MAIL=$OUT/series

# The pristine tree as a git repository with a work tree ($REPO/wt), the
# pristine commit tagged "pristine".  The commit's dates are fixed, so that
# it is the same commit wherever it is imported.
pristine_repo() {
	REPO=$CACHE/series-git-$KVER
	WT=$REPO/wt
	export GIT_DIR=$REPO/git GIT_WORK_TREE=$WT
	if ! git rev-parse -q --verify pristine >/dev/null 2>&1; then
		log "importing the pristine tree into $REPO (once)"
		rm -rf "$REPO"
		mkdir -p "$REPO"
		git init -q
		# -f: the kernel's .gitignore would leave out files of the source.
		git --work-tree="$SRC" add -A -f
		GIT_AUTHOR_DATE="2000-01-01T00:00:00Z" GIT_COMMITTER_DATE="2000-01-01T00:00:00Z" \
			git --work-tree="$SRC" commit -q -m "Debian linux-source $(basename "$SRC")"
		git tag pristine
		mkdir -p "$WT"
	fi
	# A clean checkout of the pristine commit (only what differs is written).
	git am --abort >/dev/null 2>&1 || true
	git checkout -q -f --detach pristine
	git clean -q -fdx
}

# git am PATCH... onto the pristine tree, as branch $1.
am_onto_pristine() {
	local branch=$1
	shift
	pristine_repo
	git checkout -q -B "$branch"
	git am -q --whitespace=nowarn "$@" > "$REPO/am.log" 2>&1 ||
		die "git am failed at patch $(cat "$GIT_DIR/rebase-apply/next" 2>/dev/null || echo '?') of $#: $(head -n 3 "$REPO/am.log")"
}

case "${1:-}" in
import)
	resolve_paths
	rm -rf "$EDIT"
	mkdir -p "$EDIT"
	files=$(cat "$PATCHES_DIR"/*.patch | sed -n 's|^+++ b/||p' | cut -f1 | sort -u)
	extra=${EXTRA_FILES:-}
	for f in $files $extra; do
		# New files come with the patch that adds them.
		[ -f "$SRC/$f" ] || continue
		mkdir -p "$EDIT/$(dirname "$f")"
		cp "$SRC/$f" "$EDIT/$f"
	done
	git -C "$EDIT" init -q
	git -C "$EDIT" add -A
	git -C "$EDIT" commit -qm "pristine"
	git -C "$EDIT" tag base
	git -C "$EDIT" am -q "$PATCHES_DIR"/*.patch
	echo "series: $EDIT has $(git -C "$EDIT" rev-list --count base..HEAD) commits"
	;;
export)
	rm -f "$PATCHES_DIR"/*.patch
	git -C "$EDIT" format-patch -q --signoff --no-signature --zero-commit -N \
		-o "$PATCHES_DIR" base..HEAD
	ls "$PATCHES_DIR"
	;;
mail)
	t0=$(now)
	resolve_paths
	mkdir -p "$CACHE"
	exec {lock}>>"$CACHE/series-git.lock"
	flock "$lock"
	am_onto_pristine series "$PATCHES_DIR"/*.patch
	n=$(git rev-list --count pristine..series)
	rm -rf "$MAIL"
	git format-patch -q --cover-letter --no-signature --zero-commit -o "$MAIL" pristine..series
	BASE="Debian's linux-source-${KVER%.*} $(basename "$SRC" | sed 's/^linux-source-//')" \
		"$TOP/scripts/cover-letter.py" "$MAIL/0000-cover-letter.patch" \
		"$PATCHES_DIR/cover-letter.txt" "$MAIL"
	echo "series: $n patches + cover letter in ${MAIL#"$TOP"/}/ (history: branch series of $GIT_DIR, base tag pristine; $(since "$t0") s)"
	;;
verify)
	t0=$(now)
	resolve_paths
	mapfile -t mails < <(series_mails "$MAIL")
	[ ${#mails[@]} -gt 0 ] || die "no series in $MAIL (make series)"
	mkdir -p "$CACHE"
	exec {lock}>>"$CACHE/series-git.lock"
	flock "$lock"
	am_onto_pristine verify "${mails[@]}"
	# The tree make kernel builds, assembled from patches/ by assemble.sh
	# into a scratch directory (hard links to the pristine tree: cheap).
	scratch=$(mktemp -d "$CACHE/series-verify.XXXXXX")
	trap 'rm -rf "$scratch"' EXIT
	TREE=$scratch/tree "$TOP/scripts/assemble.sh" > "$scratch/assemble.log" ||
		die "assemble.sh failed: $(tail -n 3 "$scratch/assemble.log")"
	if ! diff -r --no-dereference -x .git -x .manifest -x .assembled "$WT" "$scratch/tree" > "$scratch/diff"; then
		echo "FAIL  git am of ${#mails[@]} patches from ${MAIL#"$TOP"/}/ differs from the assembled tree:"
		head -n 40 "$scratch/diff"
		exit 1
	fi
	echo "PASS  git am of ${#mails[@]} patches from ${MAIL#"$TOP"/}/ onto the pristine tree gives exactly the assembled tree ($(git diff --shortstat pristine verify | sed 's/^ //'); $(since "$t0") s)"
	;;
*)
	echo "usage: $0 import|export|mail|verify" >&2
	exit 2
	;;
esac
