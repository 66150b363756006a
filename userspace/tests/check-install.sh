#!/bin/bash
# tests/check-install.sh: install libgmfp into temporary DESTDIRs and use it
# from there as a VMM would.  Run by "make check-install" (from userspace/;
# the script changes there itself).
#
# 1. make install DESTDIR=<tmp> PREFIX=/usr: headers, libgmfp.so.<VERSION>
#    with its two symlinks and SONAME, libgmfp.a, gmfp.pc and every man page
#    land where the defaults say (LIBDIR = PREFIX/lib, ...), and "man" finds
#    each page, .so links included, in the installed tree.
# 2. Through pkg-config (PKG_CONFIG_PATH + PKG_CONFIG_SYSROOT_DIR into the
#    DESTDIR): tests/consumer.c (-std=c11 -pedantic -Werror) and
#    tests/consumer.cpp (-std=c++11 -pedantic -Werror) are compiled, linked
#    against the installed shared library and run; consumer.c is also
#    linked against libgmfp.a with "pkg-config --static --libs" and run.
# 3. make install with a custom PREFIX, LIBDIR, INCLUDEDIR and MANDIR: the
#    files follow them, gmfp.pc says so, and a consumer built from there
#    runs.
# 4. Both installs write nothing outside their DESTDIR (and the build
#    tree): every file-changing system call of "make install" is traced with
#    strace when it is usable; in any case no gmfp file under the real
#    PREFIX may appear or change.
set -euo pipefail
export LC_ALL=C

cd "$(dirname "$0")/.."
top=$PWD

die() { echo "check-install: FAIL: $*" >&2; exit 1; }
note() { local m="$*"; echo "check-install: ${m//"${tmp:-//}"/<tmp>}"; }

CC=${CC:-cc}
CXX=${CXX:-c++}
PKG_CONFIG=${PKG_CONFIG:-pkg-config}
MAKE=${MAKE:-make}
for t in "$CC" "$CXX" "$PKG_CONFIG" "$MAKE" readelf ar nm perl; do
	command -v "$t" >/dev/null || die "$t not found"
done

VERSION=$(sed -n 's/^VERSION *:*= *//p' Makefile)
SOVER=$(sed -n 's/^SOVER *:*= *//p' Makefile)
[ -n "$VERSION" ] && [ -n "$SOVER" ] || die "cannot read VERSION and SOVER from Makefile"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/gmfp-check-install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# The installs below must see only the directories given here: drop those
# of the environment and of an outer make's command line (MAKEFLAGS).
unset PREFIX LIBDIR INCLUDEDIR MANDIR DESTDIR
MAKEFLAGS=$(perl -e '
	my ($f, $v) = split /(?:^| )-- /, $ENV{MAKEFLAGS} // "", 2;
	my @v = grep { !/^(PREFIX|LIBDIR|INCLUDEDIR|MANDIR|DESTDIR)=/ }
		(($v // "") =~ /((?:\\.|\S)+)/g);
	print $f, @v ? " -- @v" : "";')
export MAKEFLAGS

# Build first, so that the traced installs have nothing left to compile.
"$MAKE" --no-print-directory -s lib > "$tmp/build.log" 2>&1 ||
	{ cat "$tmp/build.log" >&2; die "make lib failed"; }

use_strace=
if command -v strace >/dev/null && strace -f -qq -o /dev/null true 2>/dev/null; then
	use_strace=1
fi

# install_to <destdir> <make variables...>: make install, traced.
install_to() {
	local dest=$1 log; shift
	log=$tmp/install-$(basename "$dest").log
	mkdir -p "$tmp/cctmp"
	if [ -n "$use_strace" ]; then
		TMPDIR=$tmp/cctmp strace -f -qq -y -e trace=%file,%process,fchdir -e signal=none \
			-o "$dest.strace" \
			"$MAKE" --no-print-directory install DESTDIR="$dest" "$@" > "$log" 2>&1 ||
			{ cat "$log" >&2; die "make install DESTDIR=$dest $* failed"; }
		check_writes "$dest.strace" "$dest"
	else
		TMPDIR=$tmp/cctmp "$MAKE" --no-print-directory install DESTDIR="$dest" "$@" \
			> "$log" 2>&1 ||
			{ cat "$log" >&2; die "make install DESTDIR=$dest $* failed"; }
	fi
}

# check_writes <strace log> <destdir>: every path that a successful
# file-changing system call of "make install" named is in <destdir>, in the
# build tree, in the compiler's temporary directory, or /dev/null.  The log
# is of "strace -f -y": directory fds (AT_FDCWD too) come with their paths;
# for calls that take a path relative to the working directory, that
# directory is followed per process through fork, chdir and fchdir.
check_writes() {
	local bad n
	bad=$(perl -e '
	use strict; use warnings;
	my ($log, $dest, $top, $cctmp) = @ARGV;
	my %write = map { $_ => 1 } qw(mkdir rmdir unlink chmod chown lchown truncate
		mknod utime utimes setxattr lsetxattr removexattr lremovexattr creat);
	my %write_at = map { $_ => 1 } qw(mkdirat unlinkat fchmodat fchmodat2 fchownat
		mknodat utimensat futimesat);
	my (%bad, %cwd, %pending);
	my $n = 0;
	sub norm { my $p = shift; my @o;
		for (split m{/}, $p) { next if $_ eq "" || $_ eq ".";
			if ($_ eq "..") { pop @o } else { push @o, $_ } }
		return "/" . join("/", @o) }
	sub str { my $s = shift // ""; return $s =~ /^"(.*)"$/ ? $1 : undef }
	open(my $fh, "<", $log) or die "$log: $!\n";
	while (<$fh>) {
		chomp;
		my ($pid, $rest) = /^(\d+)\s+(.*)$/ or next;
		$cwd{$pid} //= $top;
		my ($sc, $a, $ret);
		if ($rest =~ /^(\w+)\((.*?)\s*<unfinished \.\.\.>$/) {
			$pending{$pid} = [$1, $2];
			next;
		} elsif ($rest =~ /^<\.\.\. (\w+) resumed>(.*)\)\s+=\s+(-?\d+)/) {
			my $p = delete $pending{$pid} or next;
			($sc, $a, $ret) = ($p->[0], $p->[1] . $2, $3);
		} elsif ($rest =~ /^(\w+)\((.*)\)\s+=\s+(-?\d+)/) {
			($sc, $a, $ret) = ($1, $2, $3);
		} else {
			next;
		}
		next if $ret < 0;	# failed: nothing written
		# the arguments, split at top-level commas, strings kept whole
		my @a = $a =~ /\G\s*((?:"(?:[^"\\]|\\.)*"(?:\.\.\.)?|\{[^}]*\}|\[[^\]]*\]|[^,])+)\s*(?:,|$)/g;
		my $rel = sub { my $p = str($_[0]); return undef unless defined $p;
			return norm($p =~ m{^/} ? $p : "$cwd{$pid}/$p") };
		my $at = sub { my ($d, $p) = @_;
			my $dp = $d =~ /^(?:AT_FDCWD|\d+)<(.*)>$/ ? $1 :
				 $d eq "AT_FDCWD" ? $cwd{$pid} : "?fd:$d";
			my $q = str($p);
			return norm($dp) unless defined $q;	# e.g. utimensat(fd, NULL)
			return norm($q =~ m{^/} ? $q : "$dp/$q") };
		if ($sc =~ /^(clone|clone3|fork|vfork)$/) {
			$cwd{$ret} = $cwd{$pid} if $ret > 0;
			next;
		}
		if ($sc eq "chdir") { my $p = $rel->($a[0]); $cwd{$pid} = $p if defined $p; next }
		if ($sc eq "fchdir") { $cwd{$pid} = norm($1) if ($a[0] // "") =~ /^\d+<(.*)>$/; next }
		my @paths;
		if ($sc eq "open") {
			next unless ($a[1] // "") =~ /O_WRONLY|O_RDWR|O_CREAT|O_TRUNC/;
			@paths = ($rel->($a[0]));
		} elsif ($sc eq "openat" || $sc eq "openat2") {
			next unless ($a[2] // "") =~ /O_WRONLY|O_RDWR|O_CREAT|O_TRUNC/;
			@paths = ($at->($a[0], $a[1]));
		} elsif ($write{$sc}) {
			@paths = ($rel->($a[0]));
		} elsif ($write_at{$sc}) {
			@paths = ($at->($a[0], $a[1]));
		} elsif ($sc eq "symlink") {
			@paths = ($rel->($a[1]));
		} elsif ($sc eq "symlinkat") {
			@paths = ($at->($a[1], $a[2]));
		} elsif ($sc eq "link") {
			@paths = ($rel->($a[1]));
		} elsif ($sc eq "rename") {
			@paths = ($rel->($a[0]), $rel->($a[1]));
		} elsif ($sc eq "linkat") {
			@paths = ($at->($a[2], $a[3]));
		} elsif ($sc =~ /^renameat2?$/) {
			@paths = ($at->($a[0], $a[1]), $at->($a[2], $a[3]));
		} else {
			next;
		}
		for my $p (@paths) {
			$p //= "?unparsed";
			$n++;
			next if $p eq $dest || index($p, "$dest/") == 0;
			next if $p eq "$top/build" || index($p, "$top/build/") == 0;
			next if index($p, "$cctmp/") == 0;
			next if $p eq "/dev/null";
			$bad{"    $sc $p"} = 1;
		}
	}
	print "$_\n" for sort keys %bad;
	print STDERR "$n\n";
	' "$1" "$2" "$top" "$tmp/cctmp" 2>"$1.count")
	[ -z "$bad" ] || die "make install DESTDIR=$2 wrote outside DESTDIR:
$bad"
	n=$(cat "$1.count")
	[ "${n:-0}" -gt 0 ] || die "strace saw no file written by make install DESTDIR=$2"
	note "make install DESTDIR=...: $n file changes traced, all inside DESTDIR or the build tree"
}

# No gmfp file under the real directories of <prefix> may be newer than
# <marker> (the install must have gone to DESTDIR only).
check_untouched() {	# <marker> <dir>...
	local marker=$1 d hits=; shift
	for d in "$@"; do
		[ -d "$d" ] || continue
		hits+=$(find "$d" -maxdepth 1 -name '*gmfp*' -newer "$marker" -print 2>/dev/null || true)
	done
	[ -z "$hits" ] || die "make install touched files outside DESTDIR: $hits"
}

same_file() {	# <installed> <source>
	[ -f "$1" ] || die "not installed: ${1#"$tmp"}"
	cmp -s "$1" "$2" || die "${1#"$tmp"} differs from $2"
}

# check_tree <destdir> <libdir> <includedir> <mandir>: the installed files.
check_tree() {
	local d=$1 lib=$1$2 inc=$1$3 man=$1$4/man3 so f n
	so=libgmfp.so.$VERSION

	for f in include/gmfp.h include/gmfp_wire.h; do
		same_file "$inc/$(basename "$f")" "$f"
	done

	[ -f "$lib/$so" ] && [ ! -L "$lib/$so" ] || die "not installed: $2/$so"
	[ -x "$lib/$so" ] || die "$2/$so is not executable"
	cmp -s "$lib/$so" "build/rel/$so" || die "$2/$so differs from build/rel/$so"
	[ "$(readlink "$lib/libgmfp.so.$SOVER" || true)" = "$so" ] ||
		die "$2/libgmfp.so.$SOVER is not a symlink to $so"
	[ "$(readlink "$lib/libgmfp.so" || true)" = "libgmfp.so.$SOVER" ] ||
		die "$2/libgmfp.so is not a symlink to libgmfp.so.$SOVER"
	readelf -d "$lib/$so" | grep "(SONAME).*\[libgmfp.so.$SOVER\]" >/dev/null ||
		die "$2/$so has no SONAME libgmfp.so.$SOVER"

	[ -f "$lib/libgmfp.a" ] || die "not installed: $2/libgmfp.a"
	n=$(ar t "$lib/libgmfp.a" | grep -c '\.o$' || true)
	[ "$n" -gt 0 ] || die "$2/libgmfp.a has no objects"
	nm --defined-only "$lib/libgmfp.a" 2>/dev/null | grep ' T gmfp_version$' >/dev/null ||
		die "$2/libgmfp.a does not define gmfp_version"

	[ -f "$lib/pkgconfig/gmfp.pc" ] || die "not installed: $2/pkgconfig/gmfp.pc"

	n=0
	for f in man/*.3; do
		same_file "$man/$(basename "$f")" "$f"
		n=$((n + 1))
	done
	[ "$n" -gt 0 ] || die "no man pages in man/"
	[ -f "$man/gmfp.3" ] || die "not installed: $4/man3/gmfp.3"
	note "installed in DESTDIR: headers in $3, $so + 2 links, libgmfp.a ($(ar t "$lib/libgmfp.a" | wc -l) objects), pkgconfig/gmfp.pc in $2, $n man pages in $4/man3"
}

# check_man <destdir><mandir>: man(1) finds and renders every installed
# page by its name, following the .so links as installed.
check_man() {
	local mp=$1 f name out n=0
	command -v man >/dev/null || { note "man(1) not installed: rendering not checked"; return 0; }
	for f in "$mp"/man3/*.3; do
		name=$(basename "$f" .3)
		out=$(MANWIDTH=200 man -M "$mp" -P cat 3 "$name" 2>"$tmp/man.err") ||
			{ cat "$tmp/man.err" >&2; die "man -M ${mp#"$tmp"} 3 $name failed"; }
		# the NAME section of the page shown lists this name
		printf '%s\n' "$out" | sed -n '/^NAME/,/^[A-Z]/p' | grep -w -- "$name" >/dev/null ||
			die "man 3 $name shows a page whose NAME section does not list $name"
		n=$((n + 1))
	done
	note "man -M <DESTDIR>/...: all $n names render, each to a page that lists it"
}

# pc <destdir> <libdir> <args...>: pkg-config finding the DESTDIR's gmfp.pc
# first and mapping the paths it gives into the DESTDIR.
pc() {
	local d=$1 l=$2; shift 2
	PKG_CONFIG_PATH=$d$l/pkgconfig PKG_CONFIG_SYSROOT_DIR=$d "$PKG_CONFIG" "$@"
}

# build_and_run <destdir> <libdir> <tag>: consumers against that install.
build_and_run() {
	local d=$1 l=$2 tag=$3 cflags libs slibs modv out bin
	pc "$d" "$l" --validate gmfp || die "gmfp.pc in ${l} does not validate"
	modv=$(pc "$d" "$l" --modversion gmfp)
	[ "$modv" = "$VERSION" ] || die "gmfp.pc says version $modv, Makefile $VERSION"
	[ "$(pc "$d" "$l" --variable libdir gmfp)" = "$d$l" ] ||
		die "gmfp.pc: libdir is $(pc "$d" "$l" --variable libdir gmfp | sed "s|^$d||"), expected $l"
	cflags=$(pc "$d" "$l" --cflags gmfp)
	libs=$(pc "$d" "$l" --libs gmfp)
	slibs=$(pc "$d" "$l" --static --libs gmfp)
	case " $libs " in *" -lgmfp "*) ;; *) die "pkg-config --libs gmfp has no -lgmfp: $libs";; esac
	case " $libs " in *urcu*) die "pkg-config --libs gmfp (dynamic) should not name liburcu: $libs";; esac
	case " $slibs " in *" -lurcu-cds "*) ;; *) die "pkg-config --static --libs gmfp lacks liburcu-cds: $slibs";; esac

	bin=$tmp/consumer-$tag
	# shellcheck disable=SC2086 # pkg-config output is a list of words
	"$CC" -std=c11 -Wall -Wextra -Werror -pedantic -o "$bin-c" tests/consumer.c $cflags $libs ||
		die "tests/consumer.c does not build against the installed library ($tag)"
	# shellcheck disable=SC2086
	"$CXX" -std=c++11 -Wall -Wextra -Werror -pedantic -o "$bin-cpp" tests/consumer.cpp $cflags $libs ||
		die "tests/consumer.cpp does not build against the installed library ($tag)"
	# Static: libgmfp.a and liburcu*.a, the C library still shared.
	# shellcheck disable=SC2086
	"$CC" -std=c11 -Wall -Wextra -Werror -pedantic -o "$bin-static" tests/consumer.c $cflags \
		-Wl,-Bstatic $slibs -Wl,-Bdynamic ||
		die "tests/consumer.c does not link statically with pkg-config --static --libs gmfp ($tag): $slibs"

	for b in "$bin-c" "$bin-cpp"; do
		readelf -d "$b" | grep "(NEEDED).*\[libgmfp.so.$SOVER\]" >/dev/null ||
			die "$(basename "$b") does not need libgmfp.so.$SOVER"
		out=$(LD_LIBRARY_PATH=$d$l ldd "$b" | awk '/libgmfp/ { print $3 }')
		[ "$out" = "$d$l/libgmfp.so.$SOVER" ] ||
			die "$(basename "$b") would load libgmfp from ${out:-nowhere}, not from the DESTDIR"
	done
	if readelf -d "$bin-static" | grep '(NEEDED).*libgmfp' >/dev/null; then
		die "consumer-$tag-static needs libgmfp.so: not statically linked"
	fi

	LD_LIBRARY_PATH=$d$l "$bin-c" "$tmp/image" "$VERSION" | sed 's/^/  shared: /' ||
		die "consumer.c ($tag, shared) failed"
	LD_LIBRARY_PATH=$d$l "$bin-cpp" "$VERSION" | sed 's/^/  shared: /' ||
		die "consumer.cpp ($tag, shared) failed"
	env -u LD_LIBRARY_PATH "$bin-static" "$tmp/image" "$VERSION" | sed 's/^/  static: /' ||
		die "consumer.c ($tag, static) failed"
	note "consumers ($tag): C and C++ against libgmfp.so.$SOVER, C against libgmfp.a: built with pkg-config, ran"
}

# ---- 1 + 2: PREFIX=/usr, default directories ----
marker=$tmp/marker
touch "$marker"
d1=$tmp/dest
install_to "$d1" PREFIX=/usr
check_untouched "$marker" /usr/lib /usr/lib/pkgconfig /usr/include /usr/share/man/man3
check_tree "$d1" /usr/lib /usr/include /usr/share/man
[ -z "$(find "$d1" -mindepth 1 -maxdepth 1 ! -name usr)" ] || die "make install PREFIX=/usr wrote outside DESTDIR/usr: $(ls "$d1")"
grep -qx 'prefix=/usr' "$d1/usr/lib/pkgconfig/gmfp.pc" || die "gmfp.pc: prefix is not /usr"
check_man "$d1/usr/share/man"
build_and_run "$d1" /usr/lib default

# ---- 3: custom directories ----
# The prefix is itself inside $tmp: an install that ignored DESTDIR would
# create it, and nothing would be left outside $tmp even then.
p=$tmp/real/opt/gmfp
l=$p/lib64/custom
i=$p/inc
m=$p/doc/man
d2=$tmp/dest2
install_to "$d2" PREFIX="$p" LIBDIR="$l" INCLUDEDIR="$i" MANDIR="$m"
[ ! -e "$tmp/real" ] || die "make install DESTDIR=<dest2> PREFIX=<prefix> wrote into <prefix> itself: $(find "$tmp/real" | sed "s|^$tmp|<tmp>|" | head -5)"
check_tree "$d2" "$l" "$i" "$m"
[ ! -e "$d2$p/lib" ] && [ ! -e "$d2$p/include" ] && [ ! -e "$d2$p/share" ] ||
	die "make install LIBDIR=$l INCLUDEDIR=$i MANDIR=$m still wrote to the default directories"
grep -qx "libdir=$l" "$d2$l/pkgconfig/gmfp.pc" || die "gmfp.pc: libdir is not $l"
grep -qx "includedir=$i" "$d2$l/pkgconfig/gmfp.pc" || die "gmfp.pc: includedir is not $i"
build_and_run "$d2" "$l" custom

[ -n "$use_strace" ] || note "strace not usable here: writes outside DESTDIR checked only for gmfp files under /usr"
note "OK"
