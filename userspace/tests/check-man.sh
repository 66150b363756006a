#!/bin/bash
# tests/check-man.sh <header>...
#
# Fails unless
#   - every public function of the headers (as tests/check-symbols.sh
#     --functions parses them) has man/<function>.3: a page, or a one-line
#     ".so man3/<page>.3" link to a page in man/;
#   - the page that documents a function lists it in its NAME section and
#     shows it in its SYNOPSIS;
#   - every link is named after a public function, every name in a NAME
#     section is a public function or the page's own name, and every
#     "name(3)" reference to a gmfp page resolves in man/;
#   - every page has .TH <NAME> 3, the sections NAME, SYNOPSIS, DESCRIPTION
#     and SEE ALSO (function pages also RETURN VALUE), is plain ASCII, and
#     "groff -man -ww -z" (and "mandoc -Tlint", if installed) reports
#     nothing for it.
set -euo pipefail
export LC_ALL=C

die() { echo "check-man: FAIL: $*" >&2; exit 1; }

[ $# -ge 1 ] || { echo "usage: $0 <header>..." >&2; exit 2; }
here=$(dirname "$0")
mandir=$here/../man
[ -d "$mandir" ] || die "no man/ directory"
command -v groff >/dev/null || die "groff not found"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"$here/check-symbols.sh" --functions "$@" > "$tmp/functions"
[ -s "$tmp/functions" ] || die "no public function found in $*"
nfunc=$(wc -l < "$tmp/functions")
is_function() { grep -qxF -- "$1" "$tmp/functions"; }

# link_target <file>: the page a ".so" link file points to, or nothing if
# <file> is a page.  Dies on a malformed link.
link_target() {
	local f=$1 lines
	grep -q '^\.so' "$f" || return 0
	lines=$(grep -cv '^\.\\"' "$f" || true)
	[ "$lines" -eq 1 ] || die "$(basename "$f"): a .so link must be one line, has $lines"
	sed -n 's|^\.so man3/\([A-Za-z0-9_]*\)\.3$|\1|p' "$f" | grep . ||
		die "$(basename "$f"): expected \".so man3/<page>.3\", found \"$(grep '^\.so' "$f")\""
}

# section <file> <title>: the text of one .SH section, font escapes removed.
section() {
	awk -v want="$2" '
		/^\.SH/ { t = $0; sub(/^\.SH[ \t]*/, "", t); gsub(/"/, "", t); on = (t == want); next }
		on' "$1" | sed -e 's/\\f[BIRP]//g' -e 's/\\-/-/g'
}

# names listed in the NAME section (before "\-"), one a line
name_names() {
	awk '/^\.SH[ \t]+"?NAME"?[ \t]*$/ { on = 1; next } /^\.SH/ { on = 0 } on' "$1" |
		tr '\n' ' ' | sed -e 's/\\f[BIRP]//g' -e 's/[ ]\\-.*//' | tr ', ' '\n\n' | grep . || true
}

pages=() links=()
for f in "$mandir"/*.3; do
	[ -e "$f" ] || die "no man pages in man/"
	if [ -n "$(link_target "$f")" ]; then links+=("$f"); else pages+=("$f"); fi
done

# ---- pages ----
lint=groff
command -v mandoc >/dev/null && lint="groff + mandoc"
for f in "${pages[@]}"; do
	b=$(basename "$f" .3)
	if grep -nP '[^\x00-\x7f]' "$f" > "$tmp/nonascii"; then
		die "$b.3: non-ASCII characters (use groff escapes):
$(head -3 "$tmp/nonascii")"
	fi
	th=$(grep -m1 '^\.TH' "$f" || true)
	upper=$(printf '%s' "$b" | tr '[:lower:]' '[:upper:]')
	[[ $th =~ ^\.TH\ \"?$upper\"?\ \"?3\"?( |$) ]] || die "$b.3: first .TH is \"$th\", expected \".TH $upper 3 ...\""
	for s in NAME SYNOPSIS DESCRIPTION "SEE ALSO"; do
		grep -qE "^\.SH \"?$s\"?\$" "$f" || die "$b.3: no $s section"
	done
	names=$(name_names "$f")
	[ -n "$names" ] || die "$b.3: empty NAME section"
	for n in $names; do
		[ "$n" = "$b" ] || is_function "$n" ||
			die "$b.3: NAME lists $n, which is not a public function of $*"
	done
	if is_function "$b"; then
		grep -qE '^\.SH "?RETURN VALUE"?$' "$f" || die "$b.3: no RETURN VALUE section"
	fi
	# groff: any output on stderr is a warning
	if ! LC_ALL=C.UTF-8 groff -man -ww -z "$f" > "$tmp/groff" 2>&1 || [ -s "$tmp/groff" ]; then
		die "groff -man -ww -z $b.3:
$(cat "$tmp/groff")"
	fi
	if command -v mandoc >/dev/null; then
		if ! mandoc -Tlint -Wwarning "$f" > "$tmp/mandoc" 2>&1 || [ -s "$tmp/mandoc" ]; then
			die "mandoc -Tlint -Wwarning $b.3:
$(cat "$tmp/mandoc")"
		fi
	fi
	# references to gmfp pages resolve here
	for r in $(grep -o 'gmfp[a-z0-9_]* *(3)' "$f" | tr -d ' ' | sed 's/(3)//' | sort -u); do
		[ -e "$mandir/$r.3" ] || die "$b.3 refers to $r(3), which has no page or link"
	done
done

# ---- links ----
for f in "${links[@]}"; do
	b=$(basename "$f" .3)
	t=$(link_target "$f")
	is_function "$b" || die "$b.3 is a link, but $b is not a public function of $*"
	[ -e "$mandir/$t.3" ] || die "$b.3 links to $t.3, which does not exist"
	[ -z "$(link_target "$mandir/$t.3")" ] || die "$b.3 links to $t.3, which is a link itself"
done

# ---- every function ----
while read -r fn; do
	f=$mandir/$fn.3
	[ -e "$f" ] || die "$fn has no man page: create man/$fn.3, or a link to the page that documents it"
	t=$(link_target "$f")
	page=$mandir/${t:-$fn}.3
	name_names "$page" | grep -xF -- "$fn" >/dev/null ||
		die "$fn: its page $(basename "$page") does not list it in NAME"
	section "$page" SYNOPSIS | grep -E "(^|[^A-Za-z0-9_])$fn *\(" >/dev/null ||
		die "$fn: its page $(basename "$page") does not show it in SYNOPSIS"
done < "$tmp/functions"

echo "check-man: OK: $nfunc functions in $*, each with a page or link;" \
	"${#pages[@]} pages, ${#links[@]} links; $lint: no warnings"
