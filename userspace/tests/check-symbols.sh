#!/bin/bash
# tests/check-symbols.sh <shlib> <map> <header>...
# tests/check-symbols.sh --functions <header>...
#
# The public API is stated three times; this fails unless all three agree:
#   - the functions declared in the headers (gmfp_*; parsed from the text,
#     and cross-checked against the compiler's own list when it is GCC),
#   - the names listed in the symbol version script <map>,
#   - the functions the shared library exports (nm -D --defined-only).
# It also fails unless every exported symbol carries the version GMFP_0.1
# (objdump -T), nothing but gmfp_* functions is exported, and the SONAME is
# libgmfp.so.0 (readelf -d).
#
# With --functions it only prints the functions the headers declare, one a
# line (tests/check-man.sh uses that list).
set -euo pipefail
export LC_ALL=C

VERSION_NODE=GMFP_0.1
SONAME=libgmfp.so.0

die() { echo "check-symbols: FAIL: $*" >&2; exit 1; }

usage() {
	echo "usage: $0 <shlib> <map> <header>... | --functions <header>..." >&2
	exit 2
}

# Function names declared in C headers, one a line, sorted.  Comments,
# strings, preprocessor lines and attributes are removed, the text is split
# into top-level declarations, and every identifier gmfp_* directly followed
# by "(" outside any parentheses or braces of a non-typedef, non-static
# declaration is a function (so multi-line prototypes, several declarators
# and function-pointer parameters are handled; typedefs of function pointers
# and struct members are not functions).
header_functions() {
	perl -e '
	use strict; use warnings;
	my %names;
	for my $f (@ARGV) {
		open(my $fh, "<", $f) or die "$f: $!\n";
		my $s = do { local $/; <$fh> };
		close($fh);
		$s =~ s{\\\n}{}g;	# line continuations
		$s =~ s{(/\*.*?\*/)|(//[^\n]*)|("(?:[^"\\\n]|\\.)*")|(\x27(?:[^\x27\\\n]|\\.)*\x27)}
		       {defined $1 || defined $2 ? " " : "\"\""}gse;
		$s =~ s{^[ \t]*#[^\n]*}{}mg;	# preprocessor directives
		$s =~ s{\bextern\s*""\s*\{}{ }g;	# extern "C" {, its } is dropped below
		my $attr = qr{\b__attribute__\s*(\((?:[^()]++|(?-1))*\))};
		$s =~ s{$attr}{ }g;
		# split into top-level statements
		my @stmts;
		my ($cur, $depth) = ("", 0);
		for my $c (split //, $s) {
			if ($c eq "{") {
				$depth++;
			} elsif ($c eq "}") {
				if ($depth == 0) {	# closes extern "C"
					push @stmts, $cur; $cur = ""; next;
				}
				$depth--;
				if ($depth == 0 && $cur =~ /^[^{=]*\)\s*\{/) {
					# end of a function definition (static inline)
					push @stmts, "static " . $cur; $cur = ""; next;
				}
			} elsif ($c eq ";" && $depth == 0) {
				push @stmts, $cur; $cur = ""; next;
			}
			$cur .= $c;
		}
		for my $st (@stmts) {
			$st =~ s/\s+/ /g;
			next if $st =~ /^\s*(typedef|static)\b/ || $st =~ /\bstatic\b/;
			# identifiers followed by "(" at parenthesis and brace depth 0
			my ($pd, $bd) = (0, 0);
			while ($st =~ /\G.*?([(){}]|\b(gmfp_\w+)\s*(?=\())/gc) {
				if (defined $2) {
					$names{$2} = 1 if $pd == 0 && $bd == 0;
					next;
				}
				my $t = $1;
				$pd++ if $t eq "("; $pd-- if $t eq ")";
				$bd++ if $t eq "{"; $bd-- if $t eq "}";
			}
		}
	}
	print "$_\n" for sort keys %names;
	' "$@"
}

# Functions the compiler sees declared in those headers (GCC's -aux-info).
compiler_functions() {
	local cc=${CC:-cc} h dirs=() inc=()
	for h in "$@"; do dirs+=("$(dirname "$h")"); done
	for h in $(printf '%s\n' "${dirs[@]}" | sort -u); do inc+=("-I$h"); done
	for h in "$@"; do echo "#include \"$(basename "$h")\""; done > "$tmp/all.c"
	"$cc" -std=gnu11 "${inc[@]}" -fsyntax-only -aux-info "$tmp/aux" "$tmp/all.c" 2>"$tmp/cc.err" ||
		{ cat "$tmp/cc.err" >&2; die "the headers do not compile"; }
	# lines look like: /* include/gmfp.h:53:NC */ extern const char *gmfp_version (void);
	perl -ne '
		BEGIN { %h = map { s{^\./}{}r => 1 } @ARGV; @ARGV = (); }
		next unless m{^/\* (.+?):\d+:NC \*/ extern .*?\b(gmfp_\w+) \(};
		print "$2\n" if $h{$1 =~ s{^\./}{}r};
	' "$@" < "$tmp/aux" | sort -u
}

# Names in the global: part of version node $VERSION_NODE, after checking
# that the map has that one node, explicit names only, and "local: *;".
map_functions() {
	perl -e '
	use strict; use warnings;
	my ($node, $f) = @ARGV;
	open(my $fh, "<", $f) or die "$f: $!\n";
	my $s = do { local $/; <$fh> };
	$s =~ s{/\*.*?\*/}{ }gs;
	$s =~ s{#[^\n]*}{ }g;
	my @nodes = $s =~ /([\w.]+)\s*\{/g;
	die "expected exactly one version node $node, found: @nodes\n"
		unless @nodes == 1 && $nodes[0] eq $node;
	my ($body) = $s =~ /\Q$node\E\s*\{(.*)\}\s*;\s*$/s
		or die "cannot parse the body of version node $node\n";
	my ($global, $local) = $body =~ /^\s*global\s*:(.*)\blocal\s*:(.*)$/s
		or die "node $node: expected \"global: ... local: *;\"\n";
	$local =~ s/\s+//g;
	die "node $node: local: must be exactly \"*;\", is \"$local\"\n" unless $local eq "*;";
	my %seen;
	for my $e (split /;/, $global) {
		$e =~ s/^\s+|\s+$//g;
		next if $e eq "";
		die "node $node: \"$e\" is not one plain function name\n"
			unless $e =~ /^[A-Za-z_]\w*$/;
		die "node $node: $e listed twice\n" if $seen{$e}++;
		print "$e\n";
	}
	' "$VERSION_NODE" "$1" | sort
}

# Report the difference of two sorted lists and fail if there is one.
same_set() {	# <name A> <file A> <name B> <file B>
	local a b
	a=$(comm -23 "$2" "$4" | sed 's/^/    /')
	b=$(comm -13 "$2" "$4" | sed 's/^/    /')
	[ -z "$a$b" ] && return 0
	echo "check-symbols: FAIL: $1 and $3 differ" >&2
	[ -z "$a" ] || printf '  in %s only:\n%s\n' "$1" "$a" >&2
	[ -z "$b" ] || printf '  in %s only:\n%s\n' "$3" "$b" >&2
	exit 1
}

if [ "${1:-}" = --functions ]; then
	shift
	[ $# -ge 1 ] || usage
	for f in "$@"; do [ -r "$f" ] || die "$f: not readable"; done
	header_functions "$@"
	exit 0
fi

[ $# -ge 3 ] || usage
shlib=$1 map=$2; shift 2
headers=("$@")
for f in "$shlib" "$map" "${headers[@]}"; do
	[ -r "$f" ] || die "$f: not readable"
done
for t in nm objdump readelf perl; do
	command -v "$t" >/dev/null || die "$t not found"
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

header_functions "${headers[@]}" > "$tmp/headers"
[ -s "$tmp/headers" ] || die "no gmfp_* function found in ${headers[*]}"

cc_checked="not cross-checked: \$CC has no -aux-info"
if ${CC:-cc} -fsyntax-only -aux-info /dev/null -x c /dev/null 2>/dev/null; then
	compiler_functions "${headers[@]}" > "$tmp/compiler"
	same_set "the header parser" "$tmp/headers" "the compiler (-aux-info)" "$tmp/compiler"
	cc_checked="the compiler agrees"
fi

map_functions "$map" > "$tmp/map" || die "$map: malformed version script"
same_set "the headers" "$tmp/headers" "$map" "$tmp/map"

# Dynamic symbols defined by the library.  The version node itself shows up
# as an absolute symbol; other linker-made symbols are tolerated, anything
# else that is not a gmfp_* function is a leak.
nm -D --defined-only "$shlib" > "$tmp/nm.raw" || die "nm -D failed on $shlib"
awk '{ n = $NF; sub(/@.*/, "", n); print $(NF-1), n }' "$tmp/nm.raw" | sort -k2 > "$tmp/nm"
awk '$2 ~ /^gmfp_/ { print $2 }' "$tmp/nm" | sort -u > "$tmp/exported"
leaks=$(awk -v node="$VERSION_NODE" '
	$2 !~ /^gmfp_/ && $2 != node &&
	$2 !~ /^(_init|_fini|_edata|_end|__bss_start|_DYNAMIC|_GLOBAL_OFFSET_TABLE_)$/ { print "    " $1 " " $2 }' "$tmp/nm")
[ -z "$leaks" ] || die "$shlib exports symbols that are not part of the API:
$leaks"
notfunc=$(awk '$2 ~ /^gmfp_/ && $1 != "T" && $1 != "i" { print "    " $1 " " $2 }' "$tmp/nm")
[ -z "$notfunc" ] || die "$shlib exports gmfp_* symbols that are not functions in .text:
$notfunc"
same_set "the headers" "$tmp/headers" "$shlib (nm -D)" "$tmp/exported"

# Versions: objdump -T lines end in "<version> <name>"; hidden versions
# are shown in parentheses, unversioned symbols as "Base" (or with no
# version column at all in a library without version information).
objdump -T "$shlib" > "$tmp/objdump" || die "objdump -T failed on $shlib"
badver=$(awk -v node="$VERSION_NODE" '
	$NF ~ /^gmfp_/ && $0 !~ /\*UND\*/ && $(NF-1) != node {
		v = $(NF-1); if (v ~ /^[0-9a-f]+$/ && length(v) >= 8) v = "none"
		print "    " $NF " has version " v }' "$tmp/objdump" | sort)
[ -z "$badver" ] || die "exported symbols without version $VERSION_NODE:
$badver"
nver=$(awk -v node="$VERSION_NODE" '$NF ~ /^gmfp_/ && $0 !~ /\*UND\*/ && $(NF-1) == node' "$tmp/objdump" | wc -l)
[ "$nver" -eq "$(wc -l < "$tmp/exported")" ] ||
	die "objdump -T shows $nver gmfp_* symbols with version $VERSION_NODE, nm -D $(wc -l < "$tmp/exported")"

soname=$(readelf -d "$shlib" | sed -n 's/.*(SONAME).*\[\(.*\)\].*/\1/p')
[ "$soname" = "$SONAME" ] || die "$shlib: SONAME is \"${soname:-none}\", expected $SONAME"

echo "check-symbols: OK: $(wc -l < "$tmp/headers") functions in ${headers[*]} ($cc_checked)," \
	"$(wc -l < "$tmp/map") in $map, $(wc -l < "$tmp/exported") exported by $(basename "$shlib")," \
	"all version $VERSION_NODE, SONAME $soname"
