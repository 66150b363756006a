/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A program that uses libgmfp the way a VMM would get it: installed, found
 * with pkg-config, nothing but the public headers.  tests/check-install.sh
 * builds it strictly (-std=c11 -pedantic -Werror: the headers must not need
 * extensions or feature macros), links it against the shared library and
 * against libgmfp.a, and runs it.  Everything here works without /dev/kvm.
 *
 *   consumer <scratch file> [<expected version>]
 *
 * Prints one line per failed check and a summary; exits non-zero on a
 * failure.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gmfp.h>
#include <gmfp_wire.h>

static int checks, failures;

#define CHECK(cond) check((cond) != 0, #cond, __LINE__)
#define CHECK_EQ(a, b) check_eq((long long)(a), (long long)(b), #a, #b, __LINE__)

static void check(int ok, const char *what, int line)
{
	checks++;
	if (!ok) {
		failures++;
		fprintf(stderr, "consumer.c:%d: check failed: %s\n", line, what);
	}
}

static void check_eq(long long a, long long b, const char *as, const char *bs, int line)
{
	checks++;
	if (a != b) {
		failures++;
		fprintf(stderr, "consumer.c:%d: check failed: %s == %s (%lld != %lld)\n",
			line, as, bs, a, b);
	}
}

static void test_version(const char *expected)
{
	const char *v = gmfp_version();
	char prefix[32];

	CHECK(v != NULL);
	if (!v)
		return;
	sprintf(prefix, "%d.%d.", GMFP_VERSION_MAJOR, GMFP_VERSION_MINOR);
	CHECK(strncmp(v, prefix, strlen(prefix)) == 0);
	if (expected)
		CHECK(strcmp(v, expected) == 0);
}

/* Errors that need no kernel support: bad fds and bad arguments. */
static void test_errors(void)
{
	struct gmfp_source *src = NULL;

	CHECK_EQ(gmfp_gmem_mark(-1, 0, GMFP_PAGE_SIZE), -EBADF);
	CHECK_EQ(gmfp_gmem_size(-1), -EBADF);
	CHECK_EQ(gmfp_notify_open(-1, GMFP_NOTIFY_CLOEXEC), -EBADF);

	CHECK_EQ(gmfp_source_zero(&src), 0);
	CHECK(src != NULL);
	CHECK_EQ(gmfp_engine_new(NULL, src, NULL), -EINVAL);
	CHECK_EQ(gmfp_source_new(NULL, NULL, NULL), -EINVAL);
	gmfp_source_destroy(src);
	gmfp_source_destroy(NULL);
}

static void test_engine(void)
{
	struct gmfp_source *src = NULL;
	struct gmfp_engine *e = NULL;
	char json[4096];
	int n;

	CHECK_EQ(gmfp_source_zero(&src), 0);
	if (!src)
		return;

	/* defaults */
	CHECK_EQ(gmfp_engine_new(&e, src, NULL), 0);
	CHECK(e != NULL);
	gmfp_engine_destroy(e);

	/* options, the way a caller sets them */
	{
		GMFP_OPTS_INIT(struct gmfp_engine_opts, opts);
		GMFP_OPTS_INIT(struct gmfp_engine_stats, st);

		opts.workers = 2;
		opts.max_batch = 32;
		opts.bg_order = GMFP_BG_SEQUENTIAL;
		e = NULL;
		CHECK_EQ(gmfp_engine_new(&e, src, &opts), 0);
		CHECK(e != NULL);
		if (e) {
			CHECK_EQ(gmfp_engine_get_stats(e, &st), 0);
			CHECK_EQ(st.pages_total, 0);
			CHECK_EQ(st.errors, 0);
			n = gmfp_engine_stats_json(e, NULL, 0);
			CHECK(n > 2);
			CHECK(n < (int)sizeof(json));
			CHECK_EQ(gmfp_engine_stats_json(e, json, sizeof(json)), n);
			CHECK(json[0] == '{');
			CHECK_EQ(strlen(json), n);
			gmfp_engine_destroy(e);
		}
	}
	gmfp_source_destroy(src);
}

/* A source from callbacks: the options struct, ctx and destroy. */
struct counting_ctx {
	int fetched, destroyed;
};

static int counting_fetch(void *ctx, struct gmfp_fetch *f)
{
	struct counting_ctx *c = ctx;

	memset(f->buf, 0x5a, (size_t)f->npages * GMFP_PAGE_SIZE);
	c->fetched += (int)f->npages;
	return 0;
}

static void counting_destroy(void *ctx)
{
	((struct counting_ctx *)ctx)->destroyed++;
}

static int page_is(const unsigned char *p, unsigned char v)
{
	size_t i;

	for (i = 0; i < GMFP_PAGE_SIZE; i++)
		if (p[i] != v)
			return 0;
	return 1;
}

/* @f asks for @npages from @pgoff into @buf, the bitmap @zero cleared. */
static void fetch_init(struct gmfp_fetch *f, uint64_t pgoff, uint32_t npages,
		       unsigned char *buf, uint64_t *zero)
{
	memset(f, 0, sizeof(*f));
	f->pgoff = pgoff;
	f->npages = npages;
	f->buf = buf;
	f->zero = zero;
	zero[0] = 0;
}

static void test_sources(const char *scratch)
{
	struct counting_ctx ctx = { 0, 0 };
	struct gmfp_source *s = NULL;
	struct gmfp_source_stats st;
	static unsigned char buf[3 * GMFP_PAGE_SIZE];
	uint64_t zero[1];
	struct gmfp_fetch f;
	FILE *fp;
	unsigned int i;

	{
		GMFP_OPTS_INIT(struct gmfp_source_ops, ops);

		ops.fetch = counting_fetch;
		ops.destroy = counting_destroy;
		CHECK_EQ(gmfp_source_new(&s, &ops, &ctx), 0);
	}
	if (s) {
		fetch_init(&f, 7, 2, buf, zero);
		CHECK_EQ(gmfp_source_fetch(s, &f), 0);
		CHECK_EQ(ctx.fetched, 2);
		CHECK(page_is(buf, 0x5a) && page_is(buf + GMFP_PAGE_SIZE, 0x5a));
		gmfp_source_get_stats(s, &st);
		CHECK_EQ(st.requests, 1);
		CHECK_EQ(st.pages, 2);
		CHECK_EQ(st.failures, 0);
		gmfp_source_destroy(s);
		CHECK_EQ(ctx.destroyed, 1);
	}

	/* the zero source: every page reads as zero */
	s = NULL;
	CHECK_EQ(gmfp_source_zero(&s), 0);
	if (s) {
		memset(buf, 0xff, sizeof(buf));
		fetch_init(&f, 0, 3, buf, zero);
		CHECK_EQ(gmfp_source_fetch(s, &f), 0);
		for (i = 0; i < 3; i++)
			CHECK((zero[0] >> i & 1) || page_is(buf + i * GMFP_PAGE_SIZE, 0));
		gmfp_source_destroy(s);
	}

	/* an image file of two pages: 0xa5 and 0x3c */
	fp = fopen(scratch, "wb");
	CHECK(fp != NULL);
	if (!fp)
		return;
	memset(buf, 0xa5, GMFP_PAGE_SIZE);
	memset(buf + GMFP_PAGE_SIZE, 0x3c, GMFP_PAGE_SIZE);
	CHECK_EQ(fwrite(buf, 1, 2 * GMFP_PAGE_SIZE, fp), 2 * GMFP_PAGE_SIZE);
	CHECK_EQ(fclose(fp), 0);
	{
		GMFP_OPTS_INIT(struct gmfp_file_opts, fo);

		fo.fd = -1;
		fo.path = scratch;
		s = NULL;
		CHECK_EQ(gmfp_source_file(&s, &fo), 0);
	}
	if (s) {
		memset(buf, 0, sizeof(buf));
		fetch_init(&f, 0, 2, buf, zero);
		CHECK_EQ(gmfp_source_fetch(s, &f), 0);
		CHECK((zero[0] & 3) == 0);
		CHECK(page_is(buf, 0xa5));
		CHECK(page_is(buf + GMFP_PAGE_SIZE, 0x3c));
		/* past the end of the file, without GMFP_FILE_SHORT_IS_ZERO */
		f.pgoff = 2;
		f.npages = 1;
		CHECK_EQ(gmfp_source_fetch(s, &f), -EIO);
		gmfp_source_destroy(s);
	}
	remove(scratch);
}

static void test_wire(void)
{
	static unsigned char buf[GMFP_WIRE_HDR_SIZE + 64];
	const uint64_t sizes[2] = { 1ull << 30, 2 * GMFP_PAGE_SIZE };
	struct gmfp_wire_msg m;
	ssize_t n;

	n = gmfp_wire_encode_req(buf, sizeof(buf), 42, 1, 123456789ull, 16);
	CHECK_EQ(n, GMFP_WIRE_HDR_SIZE + 16);
	if (n > 0) {
		memset(&m, 0, sizeof(m));
		CHECK_EQ(gmfp_wire_decode(buf, (size_t)n, &m), n);
		CHECK_EQ(m.type, GMFP_WIRE_REQ);
		CHECK_EQ(m.version, GMFP_WIRE_VERSION);
		CHECK_EQ(m.seq, 42);
		CHECK_EQ(m.length, 16);
		CHECK_EQ(m.u.req.region, 1);
		CHECK_EQ(m.u.req.pgoff, 123456789ull);
		CHECK_EQ(m.u.req.npages, 16);
		/* little-endian "GMFP" */
		CHECK(memcmp(buf, "GMFP", 4) == 0);
		/* a partial frame needs more bytes */
		CHECK_EQ(gmfp_wire_decode(buf, (size_t)n - 1, &m), 0);
		/* bad magic */
		buf[0] ^= 0xff;
		CHECK_EQ(gmfp_wire_decode(buf, (size_t)n, &m), -EBADMSG);
	}
	CHECK_EQ(gmfp_wire_encode_req(buf, GMFP_WIRE_HDR_SIZE, 1, 0, 0, 1), -ENOSPC);
	CHECK_EQ(gmfp_wire_encode_req(buf, sizeof(buf), 1, 0, 0, 0), -EINVAL);

	n = gmfp_wire_encode_hello(buf, sizeof(buf), 1, GMFP_WIRE_CH_DEMAND, 2, sizes);
	CHECK(n > GMFP_WIRE_HDR_SIZE);
	if (n > 0) {
		CHECK_EQ(gmfp_wire_decode(buf, (size_t)n, &m), n);
		CHECK_EQ(m.type, GMFP_WIRE_HELLO);
		CHECK_EQ(m.u.hello.channel, GMFP_WIRE_CH_DEMAND);
		CHECK_EQ(m.u.hello.page_size, GMFP_PAGE_SIZE);
		CHECK_EQ(m.u.hello.nr_regions, 2);
		CHECK_EQ(gmfp_wire_region_size(&m, 0), sizes[0]);
		CHECK_EQ(gmfp_wire_region_size(&m, 1), sizes[1]);
	}

	n = gmfp_wire_encode_bye(buf, sizeof(buf));
	CHECK_EQ(n, GMFP_WIRE_HDR_SIZE);
	if (n > 0) {
		CHECK_EQ(gmfp_wire_decode(buf, (size_t)n, &m), n);
		CHECK_EQ(m.type, GMFP_WIRE_BYE);
	}
}

int main(int argc, char **argv)
{
	if (argc < 2 || argc > 3) {
		fprintf(stderr, "usage: %s <scratch file> [<expected version>]\n", argv[0]);
		return 2;
	}
	test_version(argc > 2 ? argv[2] : NULL);
	test_errors();
	test_engine();
	test_sources(argv[1]);
	test_wire();
	printf("consumer (C, libgmfp %s): %d checks, %d failed\n", gmfp_version(),
	       checks, failures);
	return failures ? EXIT_FAILURE : EXIT_SUCCESS;
}
