// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Order files (parse, load, save) and the around-demand walk.  Every parse
 * goes through an exact-size heap copy of the text without a NUL, so ASan
 * reports any read past @len.
 */
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "unit.h"

static const uint64_t pages2[] = { 10, 20 };

/* gmfp_order_parse() on @len bytes of @s, copied to a buffer of exactly @len. */
static ssize_t parse_n(const char *s, size_t len, uint32_t nr, const uint64_t *rp,
		       struct gmfp_order_entry **out, size_t *dropped, size_t *bad)
{
	char *copy = malloc(len ? len : 1);
	ssize_t r;

	assert_non_null(copy);
	memcpy(copy, s, len);
	r = gmfp_order_parse(copy, len, nr, rp, out, dropped, bad);
	free(copy);
	return r;
}

#define S(lit) lit, sizeof(lit) - 1

static ssize_t parse(const char *s, struct gmfp_order_entry **out,
		     size_t *dropped, size_t *bad)
{
	return parse_n(s, strlen(s), 2, pages2, out, dropped, bad);
}

/* parse_n() with pages2, for the count alone: the entries are freed. */
static ssize_t count_n(const char *s, size_t len)
{
	struct gmfp_order_entry *e = NULL;
	size_t bad;
	ssize_t n = parse_n(s, len, 2, pages2, &e, NULL, &bad);

	if (n > 0)
		free(e);
	return n;
}

static void expect_entries(const struct gmfp_order_entry *e, ssize_t n,
			   const struct gmfp_order_entry *want, size_t nwant)
{
	size_t i;

	assert_int_equal(n, (ssize_t)nwant);
	for (i = 0; i < nwant; i++) {
		assert_int_equal(e[i].region, want[i].region);
		assert_true(e[i].pgoff == want[i].pgoff);
	}
}

static void test_parse_good(void **state)
{
	struct gmfp_order_entry *e = NULL;
	const struct gmfp_order_entry want[] = { { 0, 1 }, { 0, 2 }, { 1, 5 }, { 0, 9 }, { 1, 19 } };
	size_t dropped = 99, bad = 99;
	ssize_t n;

	(void)state;
	n = parse("0 1\n0 2\n1 5\n0 9\n1 19\n", &e, &dropped, &bad);
	expect_entries(e, n, want, 5);
	assert_int_equal(dropped, 0);
	assert_int_equal(bad, 0);
	free(e);

	/* No newline at the end; several blanks and tabs between the numbers. */
	n = parse("0 1\n0 2\n1 5\n0\t \t9\n  1 19", &e, &dropped, &bad);
	expect_entries(e, n, want, 5);
	free(e);

	/* Order is file order, duplicates kept (the engine skips them). */
	n = parse("1 3\n0 3\n1 3\n", &e, NULL, NULL);
	assert_int_equal(n, 3);
	assert_int_equal(e[0].region, 1);
	assert_int_equal(e[1].region, 0);
	assert_int_equal(e[2].region, 1);
	free(e);

	/* leading zeros are plain decimal, not octal */
	n = parse("01 010\n", &e, NULL, NULL);
	assert_int_equal(n, 1);
	assert_true(e[0].region == 1 && e[0].pgoff == 10);
	free(e);
}

static void test_parse_empty(void **state)
{
	struct gmfp_order_entry *e = (void *)1;
	size_t dropped = 5;

	(void)state;
	assert_int_equal(gmfp_order_parse(NULL, 0, 2, pages2, &e, &dropped, NULL), 0);
	assert_null(e);
	assert_int_equal(dropped, 0);
	assert_int_equal(parse("", &e, NULL, NULL), 0);
	assert_null(e);
	assert_int_equal(parse("\n\n# only comments\n   \n\t\n", &e, NULL, NULL), 0);
	assert_null(e);
	/* no regions at all: everything well formed is dropped */
	assert_int_equal(parse_n("0 0\n1 1\n", 8, 0, NULL, &e, &dropped, NULL), 0);
	assert_int_equal(dropped, 2);
}

static void test_parse_comments_crlf(void **state)
{
	struct gmfp_order_entry *e = NULL;
	const struct gmfp_order_entry want[] = { { 0, 3 }, { 1, 0 }, { 0, 4 }, { 1, 7 } };
	size_t dropped, bad = 99;
	ssize_t n;

	(void)state;
	n = parse("# header\r\n\r\n  0\t3  # hot page\r\n\n1 0\r\n"
		  "   # indented comment\n0 4#tight comment\n\t\n1 7\r", &e, &dropped, &bad);
	expect_entries(e, n, want, 4);
	assert_int_equal(dropped, 0);
	assert_int_equal(bad, 0);
	free(e);
	/* '#' alone and "#" right after a line start */
	assert_int_equal(count_n(S("#\n#0 1\n0 3\n")), 1);
}

static void test_parse_dropped(void **state)
{
	struct gmfp_order_entry *e = NULL;
	const struct gmfp_order_entry want[] = { { 0, 9 }, { 1, 19 }, { 0, 0 } };
	size_t dropped = 0;
	ssize_t n;

	(void)state;
	n = parse("0 9\n"
		  "0 10\n"			/* pgoff == region size */
		  "1 19\n"
		  "1 20\n"
		  "2 0\n"			/* no region 2 */
		  "4294967295 0\n"
		  "4294967296 0\n"		/* beyond u32: still just not ours */
		  "18446744073709551615 1\n"
		  "0 18446744073709551615\n"
		  "0 0\n", &e, &dropped, NULL);
	expect_entries(e, n, want, 3);
	assert_int_equal(dropped, 7);
	free(e);

	/* All dropped: no entries, no array. */
	n = parse("5 5\n0 100\n", &e, &dropped, NULL);
	assert_int_equal(n, 0);
	assert_null(e);
	assert_int_equal(dropped, 2);
}

struct bad_case {
	const char *text;
	size_t len;		/* 0: strlen */
	size_t line;
};

static void test_parse_malformed(void **state)
{
	static const struct bad_case cases[] = {
		{ "0\n", 0, 1 },
		{ "0", 0, 1 },
		{ "0 \n", 0, 1 },
		{ "0 1\nx 1\n", 0, 2 },
		{ "0 1 2\n", 0, 1 },
		{ "0 1x\n", 0, 1 },
		{ "0 1 x\n", 0, 1 },
		{ "-1 2\n", 0, 1 },
		{ "+1 2\n", 0, 1 },
		{ "0 -2\n", 0, 1 },
		{ "0x1 2\n", 0, 1 },
		{ "1,2\n", 0, 1 },
		{ "1, 2\n", 0, 1 },
		{ "12\n", 0, 1 },
		{ "1 2.0\n", 0, 1 },
		{ "0 1\n\n\n0 1 junk\n0 1\n", 0, 4 },
		{ "# c\n0 1\r\n1 2\r\r\n", 0, 3 },	/* a CR that is not CRLF's */
		{ "0 1\n0\r1\n", 0, 2 },
		{ "0 1\n \x01 2\n", 0, 2 },
		{ "0 1\n0 1\v\n", 0, 2 },
		{ "0 1\n0 1\0\n", 9, 2 },		/* an embedded NUL */
		{ "\0 1\n", 4, 1 },
		{ "0 1\n0 2\n0 3\n0 4\n0 5\n0 6\n0 7\n0 8\n0 9\n1 0\nbad\n", 0, 11 },
		{ "0 1\n0 2\n0 3\n0 4\n0 5\n0 6\n0 7\n0 8\n0 9\n1 0\n1 1 1", 0, 11 },
		{ "99 99\n\x80\n", 0, 2 },	/* dropped entries still count lines */
	};
	unsigned int i;

	(void)state;
	for (i = 0; i < GMFP_ARRAY_SIZE(cases); i++) {
		const struct bad_case *c = &cases[i];
		size_t len = c->len ? c->len : strlen(c->text);
		struct gmfp_order_entry *e = (void *)1;
		size_t bad = 0, dropped = 7;
		ssize_t n;

		n = parse_n(c->text, len, 2, pages2, &e, &dropped, &bad);
		if (n != -EINVAL || bad != c->line)
			fail_msg("case %u: got %zd line %zu, want -EINVAL line %zu",
				 i, n, bad, c->line);
		assert_null(e);
		/* also without the out parameters for diagnostics */
		n = parse_n(c->text, len, 2, pages2, &e, NULL, NULL);
		assert_int_equal(n, -EINVAL);
	}
}

static void test_parse_overflow(void **state)
{
	struct gmfp_order_entry *e = NULL;
	const uint64_t huge[] = { UINT64_MAX };
	size_t bad = 0;
	ssize_t n;

	(void)state;
	/* 2^64 - 1 fits; 2^64 and beyond do not, whatever the region size */
	n = parse_n(S("0 18446744073709551614\n"), 1, huge, &e, NULL, &bad);
	assert_int_equal(n, 1);
	assert_true(e[0].pgoff == UINT64_MAX - 1);
	free(e);

	n = parse_n(S("0 1\n0 18446744073709551616\n"), 1, huge, &e, NULL, &bad);
	assert_int_equal(n, -EINVAL);
	assert_int_equal(bad, 2);
	n = parse_n(S("18446744073709551616 0\n"), 1, huge, &e, NULL, &bad);
	assert_int_equal(n, -EINVAL);
	assert_int_equal(bad, 1);
	/* the last digit is what overflows */
	n = parse_n(S("0 18446744073709551619\n"), 1, huge, &e, NULL, &bad);
	assert_int_equal(n, -EINVAL);
	/* 10 * x alone overflows */
	n = parse_n(S("0 36893488147419103230\n"), 1, huge, &e, NULL, &bad);
	assert_int_equal(n, -EINVAL);
	n = parse_n(S("0 99999999999999999999999999999\n"), 1, huge, &e, NULL, &bad);
	assert_int_equal(n, -EINVAL);
	/* 2^64 - 1 itself parses (and is out of range: dropped) */
	n = parse_n(S("0 18446744073709551615\n3 0\n"), 1, huge, &e, NULL, &bad);
	assert_int_equal(n, 0);
	/* a huge number on line 3 after a dropped one */
	n = parse_n(S("7 7\n\n00000000000000000000000018446744073709551616 0\n"),
		    1, huge, &e, NULL, &bad);
	assert_int_equal(n, -EINVAL);
	assert_int_equal(bad, 3);
}

static void test_parse_long_lines(void **state)
{
	const size_t big = 1 << 20;
	char *s = malloc(3 * big + 64);
	struct gmfp_order_entry *e = NULL;
	const uint64_t huge[] = { UINT64_MAX };
	size_t len = 0, bad;
	ssize_t n;

	(void)state;
	assert_non_null(s);
	/* a 1 MiB comment, 1 MiB of blanks, then 1 MiB of leading zeros */
	s[len++] = '#';
	memset(s + len, 'c', big);
	len += big;
	s[len++] = '\n';
	memset(s + len, ' ', big);
	len += big;
	memcpy(s + len, "0 ", 2);
	len += 2;
	memset(s + len, '0', big);
	len += big;
	memcpy(s + len, "77\n0 5", 6);
	len += 6;
	n = parse_n(s, len, 1, huge, &e, NULL, &bad);
	assert_int_equal(n, 2);
	assert_int_equal(e[0].pgoff, 77);
	assert_int_equal(e[1].pgoff, 5);
	free(e);
	free(s);
}

static void test_parse_unterminated(void **state)
{
	const char text[] = "0 1\n1 12";	/* the buffer ends in a digit */
	struct gmfp_order_entry *e = NULL;
	size_t i, bad;
	ssize_t n;

	(void)state;
	n = parse_n(text, sizeof(text) - 1, 2, pages2, &e, NULL, &bad);
	assert_int_equal(n, 2);
	assert_int_equal(e[1].pgoff, 12);
	free(e);
	/* Every prefix: a valid file or a malformed last line, never an overread. */
	for (i = 0; i <= sizeof(text) - 1; i++) {
		n = count_n(text, i);
		if (i == 0)
			assert_int_equal(n, 0);
		else if (i < 3 || (i >= 5 && i < 7))
			assert_int_equal(n, -EINVAL);
		else
			assert_int_equal(n, i <= 4 ? 1 : 2);
	}
	/* a prefix cut in the middle of the region number: still one entry */
	assert_int_equal(count_n("0 1\n1 1", 7), 2);
	/* ends on CR, on a blank, inside a comment */
	assert_int_equal(count_n(S("0 1\r")), 1);
	assert_int_equal(count_n(S("0 1 ")), 1);
	assert_int_equal(count_n(S("0 1 #")), 1);
}

static void test_parse_many(void **state)
{
	/* More entries than the first allocation, so the array grows. */
	const uint64_t pages[] = { 100000 };
	struct gmfp_order_entry *e = NULL;
	char *s = malloc(100000 * 10);
	size_t len = 0, i;
	ssize_t n;

	(void)state;
	assert_non_null(s);
	for (i = 0; i < 100000; i++)
		len += (size_t)sprintf(s + len, "0 %zu\n", 99999 - i);
	n = parse_n(s, len, 1, pages, &e, NULL, NULL);
	assert_int_equal(n, 100000);
	for (i = 0; i < 100000; i++)
		assert_int_equal(e[i].pgoff, 99999 - i);
	free(e);
	free(s);
}

static void test_parse_bad_args(void **state)
{
	struct gmfp_order_entry *e;

	(void)state;
	assert_int_equal(gmfp_order_parse("0 0", 3, 1, pages2, NULL, NULL, NULL), -EINVAL);
	assert_int_equal(gmfp_order_parse(NULL, 3, 1, pages2, &e, NULL, NULL), -EINVAL);
	assert_int_equal(gmfp_order_parse("0 0", 3, 1, NULL, &e, NULL, NULL), -EINVAL);
}

/* ---- save / load ---- */

static char tmpdir[64];

static int setup_dir(void **state)
{
	(void)state;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/gmfp-order-XXXXXX");
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown_dir(void **state)
{
	DIR *d = opendir(tmpdir);
	struct dirent *de;

	(void)state;
	if (!d)
		return -1;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (unlinkat(dirfd(d), de->d_name, 0))
			unlinkat(dirfd(d), de->d_name, AT_REMOVEDIR);
	}
	closedir(d);
	return rmdir(tmpdir);
}

static unsigned int dir_entries(void)
{
	DIR *d = opendir(tmpdir);
	struct dirent *de;
	unsigned int n = 0;

	assert_non_null(d);
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

static void write_file(const char *path, const char *s, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, s, len), (ssize_t)len);
	close(fd);
}

static void test_save_load(void **state)
{
	const uint64_t pages[] = { 1000, UINT64_MAX, 1, 50 };
	const size_t n = 20000;	/* several write buffers' worth */
	struct gmfp_order_entry *e = calloc(n, sizeof(*e)), *got = NULL;
	char path[128];
	struct stat st;
	size_t dropped = 9, i;
	ssize_t r;

	(void)state;
	assert_non_null(e);
	for (i = 0; i < n; i++) {
		e[i].region = (uint32_t)(i % 4);
		switch (e[i].region) {
		case 0: e[i].pgoff = i % 1000; break;
		case 1: e[i].pgoff = UINT64_MAX - 1 - i; break;
		case 2: e[i].pgoff = 0; break;
		default: e[i].pgoff = i % 50; break;
		}
	}
	snprintf(path, sizeof(path), "%s/order", tmpdir);
	assert_int_equal(gmfp_order_save(path, e, n), 0);
	assert_int_equal(dir_entries(), 1);	/* no temp file left */
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);

	r = gmfp_order_load(path, 4, pages, &got, &dropped);
	assert_int_equal(r, (ssize_t)n);
	assert_int_equal(dropped, 0);
	for (i = 0; i < n; i++) {
		assert_int_equal(got[i].region, e[i].region);
		assert_true(got[i].pgoff == e[i].pgoff);
	}
	free(got);

	/* Fewer regions on load: the others' entries are dropped. */
	r = gmfp_order_load(path, 1, pages, &got, &dropped);
	assert_int_equal(r, (ssize_t)(n / 4));
	assert_int_equal(dropped, n - n / 4);
	free(got);

	/* Overwrite with fewer entries; then with none. */
	assert_int_equal(gmfp_order_save(path, e, 3), 0);
	r = gmfp_order_load(path, 4, pages, &got, NULL);
	assert_int_equal(r, 3);
	free(got);
	assert_int_equal(gmfp_order_save(path, NULL, 0), 0);
	r = gmfp_order_load(path, 4, pages, &got, NULL);
	assert_int_equal(r, 0);
	assert_null(got);
	assert_int_equal(dir_entries(), 1);

	/* UINT32_MAX region and UINT64_MAX pgoff format and parse back as numbers. */
	e[0].region = UINT32_MAX;
	e[0].pgoff = UINT64_MAX;
	assert_int_equal(gmfp_order_save(path, e, 1), 0);
	r = gmfp_order_load(path, 4, pages, &got, &dropped);
	assert_int_equal(r, 0);
	assert_int_equal(dropped, 1);
	free(e);
}

static void test_save_errors(void **state)
{
	const struct gmfp_order_entry e = { 0, 1 };
	char path[128];

	(void)state;
	snprintf(path, sizeof(path), "%s/no/such/dir/order", tmpdir);
	assert_int_equal(gmfp_order_save(path, &e, 1), -ENOENT);
	assert_int_equal(gmfp_order_save(NULL, &e, 1), -EINVAL);
	snprintf(path, sizeof(path), "%s/x", tmpdir);
	assert_int_equal(gmfp_order_save(path, NULL, 1), -EINVAL);
	/* rename over a directory fails, and the temp file goes away */
	snprintf(path, sizeof(path), "%s/adir", tmpdir);
	assert_int_equal(mkdir(path, 0700), 0);
	assert_true(gmfp_order_save(path, &e, 1) < 0);
	assert_int_equal(dir_entries(), 1);
	rmdir(path);
}

static void test_load_errors(void **state)
{
	const uint64_t pages[] = { 10 };
	struct gmfp_order_entry *got = (void *)1;
	char path[128];
	int fd;

	(void)state;
	snprintf(path, sizeof(path), "%s/missing", tmpdir);
	assert_int_equal(gmfp_order_load(path, 1, pages, &got, NULL), -ENOENT);
	assert_null(got);

	snprintf(path, sizeof(path), "%s/bad", tmpdir);
	write_file(path, "0 1\n0 2 3\n", 10);
	got = (void *)1;
	assert_int_equal(gmfp_order_load(path, 1, pages, &got, NULL), -EINVAL);
	assert_null(got);
	unlink(path);

	/* A file without a final newline, CRLF, comments: as the parser. */
	snprintf(path, sizeof(path), "%s/crlf", tmpdir);
	write_file(path, S("# x\r\n0 1\r\n0 2"));
	assert_int_equal(gmfp_order_load(path, 1, pages, &got, NULL), 2);
	free(got);
	unlink(path);

	/* Too big: a sparse file one byte over the cap, refused before reading. */
	snprintf(path, sizeof(path), "%s/big", tmpdir);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (256 << 20) + 1), 0);
	close(fd);
	assert_int_equal(gmfp_order_load(path, 1, pages, &got, NULL), -EFBIG);
	unlink(path);

	/*
	 * procfs reports size 0 for files with contents: they are read
	 * anyway (and this one is no order file).
	 */
	if (!access("/proc/self/status", R_OK))
		assert_int_equal(gmfp_order_load("/proc/self/status", 1, pages, &got, NULL),
				 -EINVAL);

	/* A directory is not an order file. */
	assert_true(gmfp_order_load(tmpdir, 1, pages, &got, NULL) < 0);
	assert_int_equal(gmfp_order_load(NULL, 1, pages, &got, NULL), -EINVAL);
}

static void test_load_pipe(void **state)
{
	/* Not a regular file: no size to trust, read to end of file. */
	const uint64_t pages[] = { 1000 };
	struct gmfp_order_entry *got = NULL;
	char path[64];
	int p[2];
	ssize_t r;

	(void)state;
	assert_int_equal(pipe(p), 0);
	assert_int_equal(write(p[1], "0 5\n0 6\n", 8), 8);
	close(p[1]);
	snprintf(path, sizeof(path), "/proc/self/fd/%d", p[0]);
	r = gmfp_order_load(path, 1, pages, &got, NULL);
	close(p[0]);
	if (r == -ENOENT)
		skip();		/* no /proc */
	assert_int_equal(r, 2);
	assert_int_equal(got[1].pgoff, 6);
	free(got);
}

/* ---- around ---- */

static unsigned int walk(uint64_t center, uint64_t npages, uint64_t *seq,
			 unsigned int max)
{
	struct gmfp_around a;
	unsigned int n = 0;
	uint64_t p;

	gmfp_around_reset(&a, center);
	while (n < max && gmfp_around_next(&a, npages, &p))
		seq[n++] = p;
	return n;
}

static void expect_walk(uint64_t center, uint64_t npages, const uint64_t *want,
			unsigned int nwant)
{
	uint64_t seq[64];
	unsigned int n = walk(center, npages, seq, 64), i;

	assert_int_equal(n, nwant);
	for (i = 0; i < n; i++)
		assert_true(seq[i] == want[i]);
}

static void test_around_sequences(void **state)
{
	const uint64_t mid[] = { 6, 4, 7, 3, 8, 2, 9, 1, 0 };
	const uint64_t low[] = { 1, 2, 3, 4 };
	const uint64_t high[] = { 3, 2, 1, 0 };
	const uint64_t one_off[] = { 2, 0, 3, 4 };
	const uint64_t two[] = { 1 };
	const uint64_t two_hi[] = { 0 };

	(void)state;
	/* c+1, c-1, c+2, c-2, ...; the center itself is not yielded */
	expect_walk(5, 10, mid, GMFP_ARRAY_SIZE(mid));
	expect_walk(0, 5, low, GMFP_ARRAY_SIZE(low));
	expect_walk(4, 5, high, GMFP_ARRAY_SIZE(high));
	expect_walk(1, 5, one_off, GMFP_ARRAY_SIZE(one_off));
	expect_walk(0, 2, two, 1);
	expect_walk(1, 2, two_hi, 1);
	expect_walk(0, 1, NULL, 0);
	/* a center outside the region gives nothing */
	expect_walk(5, 5, NULL, 0);
	expect_walk(100, 5, NULL, 0);
	expect_walk(0, 0, NULL, 0);
}

static void test_around_exhausted_stays(void **state)
{
	struct gmfp_around a;
	uint64_t p = 12345;
	int i;

	(void)state;
	gmfp_around_reset(&a, 1);
	assert_true(gmfp_around_next(&a, 3, &p));
	assert_int_equal(p, 2);
	assert_true(gmfp_around_next(&a, 3, &p));
	assert_int_equal(p, 0);
	for (i = 0; i < 5; i++) {
		p = 12345;
		assert_false(gmfp_around_next(&a, 3, &p));
		assert_int_equal(p, 12345);	/* untouched */
	}
	/* reset restarts with the new center */
	gmfp_around_reset(&a, 0);
	assert_true(gmfp_around_next(&a, 3, &p));
	assert_int_equal(p, 1);
	assert_true(gmfp_around_next(&a, 3, &p));
	assert_int_equal(p, 2);
	assert_false(gmfp_around_next(&a, 3, &p));
}

static void test_around_reset_midway(void **state)
{
	struct gmfp_around a;
	uint64_t p;

	(void)state;
	gmfp_around_reset(&a, 50);
	assert_true(gmfp_around_next(&a, 100, &p));
	assert_int_equal(p, 51);	/* reset after an up step: down not pending */
	gmfp_around_reset(&a, 10);
	assert_true(gmfp_around_next(&a, 100, &p));
	assert_int_equal(p, 11);
	assert_true(gmfp_around_next(&a, 100, &p));
	assert_int_equal(p, 9);
}

static void test_around_huge(void **state)
{
	/* Near 2^64: center + dist must not wrap below npages. */
	const uint64_t top = UINT64_MAX;
	uint64_t seq[4];

	(void)state;
	/* npages = UINT64_MAX: the last page is UINT64_MAX - 1 */
	assert_int_equal(walk(top - 3, top, seq, 4), 4);
	assert_true(seq[0] == top - 2 && seq[1] == top - 4);
	assert_true(seq[2] == top - 1 && seq[3] == top - 5);
	/* up: top - 1 is the last page, then the up side is done */
	assert_true(walk(top - 2, top, seq, 4) == 4);
	assert_true(seq[0] == top - 1);
	assert_true(seq[1] == top - 3);
	assert_true(seq[2] == top - 4);
	assert_true(seq[3] == top - 5);
	/* center at the last page */
	assert_true(walk(top - 1, top, seq, 2) == 2);
	assert_true(seq[0] == top - 2 && seq[1] == top - 3);
}

/* Every page but the center exactly once, distances non-decreasing, up first. */
static void check_cover(uint64_t npages, uint64_t center, uint8_t *seen)
{
	struct gmfp_around a;
	uint64_t p, n = 0, last_dist = 0;
	bool last_up = false;

	memset(seen, 0, npages);
	gmfp_around_reset(&a, center);
	while (gmfp_around_next(&a, npages, &p)) {
		uint64_t dist = p > center ? p - center : center - p;
		bool up = p > center;

		assert_true(p < npages);
		assert_true(p != center);
		assert_int_equal(seen[p], 0);
		seen[p] = 1;
		assert_true(dist >= last_dist);
		if (dist == last_dist)
			assert_true(last_up && !up);	/* up, then down, same dist */
		last_dist = dist;
		last_up = up;
		n++;
		assert_true(n < npages);
	}
	assert_int_equal(n, npages - 1);
}

static void test_around_cover(void **state)
{
	static const uint64_t sizes[] = { 1, 2, 3, 4, 5, 7, 8, 63, 64, 65, 127,
					  128, 129, 255, 256, 257, 500, 999, 1000 };
	static uint8_t seen[1000];
	unsigned int i;
	uint64_t c;

	(void)state;
	for (i = 0; i < GMFP_ARRAY_SIZE(sizes); i++)
		for (c = 0; c < sizes[i]; c++)
			check_cover(sizes[i], c, seen);
	for (i = 1; i <= 40; i++)
		for (c = 0; c < i; c++)
			check_cover(i, c, seen);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_good),
		cmocka_unit_test(test_parse_empty),
		cmocka_unit_test(test_parse_comments_crlf),
		cmocka_unit_test(test_parse_dropped),
		cmocka_unit_test(test_parse_malformed),
		cmocka_unit_test(test_parse_overflow),
		cmocka_unit_test(test_parse_long_lines),
		cmocka_unit_test(test_parse_unterminated),
		cmocka_unit_test(test_parse_many),
		cmocka_unit_test(test_parse_bad_args),
		cmocka_unit_test_setup_teardown(test_save_load, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_save_errors, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_load_errors, setup_dir, teardown_dir),
		cmocka_unit_test(test_load_pipe),
		cmocka_unit_test(test_around_sequences),
		cmocka_unit_test(test_around_exhausted_stays),
		cmocka_unit_test(test_around_reset_midway),
		cmocka_unit_test(test_around_huge),
		cmocka_unit_test(test_around_cover),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
