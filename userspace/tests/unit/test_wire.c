// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * The wire protocol's encoder and decoder: round trips, the exact bytes of
 * the format, every truncation, every malformation the header documents,
 * and a fixed-seed mutation fuzz.  Frames are decoded from heap copies of
 * exactly the length given, so that ASan reports any read past it.
 */
#include <errno.h>

#include "unit.h"
#include "gmfp_wire.h"

#define PS GMFP_PAGE_SIZE

/* Decode @len bytes of @frame from an exact-size heap copy. */
static ssize_t decode_copy(const void *frame, size_t len, struct gmfp_wire_msg *m)
{
	/* malloc(0) may be NULL; decode() must not touch a 0-byte buffer anyway */
	uint8_t *c = malloc(len ? len : 1);
	ssize_t r;

	assert_non_null(c);
	memcpy(c, frame, len);
	r = gmfp_wire_decode(c, len, m);
	free(c);
	return r;
}

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static void set32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static void set64(uint8_t *p, uint64_t v)
{
	set32(p, (uint32_t)v);
	set32(p + 4, (uint32_t)(v >> 32));
}

static uint64_t le64(const uint8_t *p)
{
	return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

/* Page @i's contents in the test frames. */
static void fill_page(uint8_t *p, uint32_t i)
{
	uint32_t k;

	for (k = 0; k < PS; k++)
		p[k] = (uint8_t)(i * 31 + k * 7 + 1);
}

static void hdr_check(const uint8_t *f, uint8_t type, uint32_t length, uint32_t seq)
{
	assert_memory_equal(f, "GMFP", 4);
	assert_int_equal(f[4], GMFP_WIRE_VERSION);
	assert_int_equal(f[5], type);
	assert_int_equal(f[6], 0);
	assert_int_equal(f[7], 0);
	assert_int_equal(le32(f + 8), length);
	assert_int_equal(le32(f + 12), seq);
}

/* ---- round trips and exact bytes ---- */

static void test_hello(void **state)
{
	const uint64_t sizes[3] = { 1ull << 30, 4096, 0x123456789000ull };
	struct gmfp_wire_msg m;
	uint8_t f[128];
	ssize_t n;

	(void)state;
	n = gmfp_wire_encode_hello(f, sizeof(f), 77, GMFP_WIRE_CH_DEMAND, 3, sizes);
	assert_int_equal(n, 16 + 20 + 24);
	hdr_check(f, GMFP_WIRE_HELLO, 44, 77);
	/* min_version, max_version, channel, pad[3], page_size, nr, pad */
	assert_int_equal(f[16] | f[17] << 8, 1);
	assert_int_equal(f[18] | f[19] << 8, 1);
	assert_int_equal(f[20], GMFP_WIRE_CH_DEMAND);
	assert_int_equal(f[21] | f[22] | f[23], 0);
	assert_int_equal(le32(f + 24), 4096);
	assert_int_equal(le32(f + 28), 3);
	assert_int_equal(le32(f + 32), 0);
	assert_true(le64(f + 44) == 4096);

	assert_int_equal(decode_copy(f, (size_t)n, &m), n);
	assert_int_equal(m.type, GMFP_WIRE_HELLO);
	assert_int_equal(m.version, 1);
	assert_int_equal(m.seq, 77);
	assert_int_equal(m.length, 44);
	assert_int_equal(m.u.hello.min_version, 1);
	assert_int_equal(m.u.hello.max_version, 1);
	assert_int_equal(m.u.hello.channel, GMFP_WIRE_CH_DEMAND);
	assert_int_equal(m.u.hello.page_size, 4096);
	assert_int_equal(m.u.hello.nr_regions, 3);
	/* region_sizes come from a decode of the local buffer, not the copy */
	assert_int_equal(gmfp_wire_decode(f, (size_t)n, &m), n);
	assert_true(gmfp_wire_region_size(&m, 0) == sizes[0]);
	assert_true(gmfp_wire_region_size(&m, 1) == sizes[1]);
	assert_true(gmfp_wire_region_size(&m, 2) == sizes[2]);
	assert_true(gmfp_wire_region_size(&m, 3) == 0);
	assert_true(gmfp_wire_region_size(NULL, 0) == 0);

	/* no layout: "whatever the server has" */
	n = gmfp_wire_encode_hello(f, sizeof(f), 0, GMFP_WIRE_CH_BACKGROUND, 0, NULL);
	assert_int_equal(n, 36);
	assert_int_equal(decode_copy(f, (size_t)n, &m), 36);
	assert_int_equal(m.u.hello.channel, GMFP_WIRE_CH_BACKGROUND);
	assert_int_equal(m.u.hello.nr_regions, 0);
}

static void test_welcome(void **state)
{
	const uint64_t sizes[2] = { 8192, 1ull << 40 };
	struct gmfp_wire_msg m;
	uint8_t f[64];
	ssize_t n;

	(void)state;
	n = gmfp_wire_encode_welcome(f, sizeof(f), 5, 2, sizes);
	assert_int_equal(n, 16 + 16 + 16);
	hdr_check(f, GMFP_WIRE_WELCOME, 32, 5);
	assert_int_equal(f[16] | f[17] << 8, 1);
	assert_int_equal(f[18] | f[19], 0);
	assert_int_equal(le32(f + 20), 4096);
	assert_int_equal(le32(f + 24), 2);
	assert_int_equal(le32(f + 28), 0);
	assert_int_equal(gmfp_wire_decode(f, (size_t)n, &m), n);
	assert_int_equal(m.type, GMFP_WIRE_WELCOME);
	assert_int_equal(m.u.welcome.min_version, 1);
	assert_int_equal(m.u.welcome.max_version, 1);
	assert_int_equal(m.u.welcome.page_size, 4096);
	assert_int_equal(m.u.welcome.nr_regions, 2);
	assert_true(gmfp_wire_region_size(&m, 0) == 8192);
	assert_true(gmfp_wire_region_size(&m, 1) == 1ull << 40);
	assert_true(gmfp_wire_region_size(&m, 2) == 0);
	assert_int_equal(decode_copy(f, (size_t)n, &m), n);
}

static void test_req(void **state)
{
	static const uint8_t want[32] = {
		'G', 'M', 'F', 'P', 1, 3, 0, 0, 16, 0, 0, 0, 0x44, 0x33, 0x22, 0x11,
		7, 0, 0, 0, 0, 1, 0, 0, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11,
	};
	struct gmfp_wire_msg m;
	uint8_t f[32];

	(void)state;
	assert_int_equal(gmfp_wire_encode_req(f, sizeof(f), 0x11223344, 7,
					      0x1122334455667788ull, 256), 32);
	assert_memory_equal(f, want, 32);
	assert_int_equal(decode_copy(f, 32, &m), 32);
	assert_int_equal(m.type, GMFP_WIRE_REQ);
	assert_int_equal(m.seq, 0x11223344);
	assert_int_equal(m.u.req.region, 7);
	assert_int_equal(m.u.req.npages, 256);
	assert_true(m.u.req.pgoff == 0x1122334455667788ull);
}

static void test_error_bye(void **state)
{
	struct gmfp_wire_msg m;
	uint8_t f[40];

	(void)state;
	assert_int_equal(gmfp_wire_encode_error(f, sizeof(f), 9, 2, 100, 4, EIO), 40);
	hdr_check(f, GMFP_WIRE_ERROR, 24, 9);
	assert_int_equal(le32(f + 32), EIO);
	assert_int_equal(le32(f + 36), 0);
	assert_int_equal(decode_copy(f, 40, &m), 40);
	assert_int_equal(m.type, GMFP_WIRE_ERROR);
	assert_int_equal(m.u.error.region, 2);
	assert_int_equal(m.u.error.npages, 4);
	assert_true(m.u.error.pgoff == 100);
	assert_int_equal(m.u.error.err, EIO);
	/* npages 0: an ERROR that answers a HELLO */
	assert_int_equal(gmfp_wire_encode_error(f, sizeof(f), 0, 0, 0, 0, ENXIO), 40);
	assert_int_equal(decode_copy(f, 40, &m), 40);
	assert_int_equal(m.u.error.err, ENXIO);

	assert_int_equal(gmfp_wire_encode_bye(f, sizeof(f)), 16);
	hdr_check(f, GMFP_WIRE_BYE, 0, 0);
	assert_int_equal(decode_copy(f, 16, &m), 16);
	assert_int_equal(m.type, GMFP_WIRE_BYE);
	assert_int_equal(m.length, 0);
}

/* Encode a DATA of @npages with @zero (may be NULL), check it both ways. */
static void data_round_trip(uint32_t npages, const uint64_t *zero)
{
	size_t max = GMFP_WIRE_HDR_SIZE + GMFP_WIRE_MAX_PAYLOAD;
	uint8_t *pages = malloc((size_t)npages * PS), *f = malloc(max);
	uint32_t i, words = (npages + 63) / 64, nzero = 0;
	struct gmfp_wire_msg m;
	const uint8_t *d;
	ssize_t n;

	assert_non_null(pages);
	assert_non_null(f);
	for (i = 0; i < npages; i++) {
		fill_page(pages + (size_t)i * PS, i);
		if (zero && (zero[i / 64] >> (i % 64) & 1))
			nzero++;
	}
	n = gmfp_wire_encode_data(f, max, 123, 4, 1000, npages, zero, pages);
	assert_int_equal(n, 16 + 16 + 8 * words + (size_t)PS * (npages - nzero));
	hdr_check(f, GMFP_WIRE_DATA, (uint32_t)n - 16, 123);
	/* exactly the size it needs: fits; one less: -ENOSPC */
	assert_int_equal(gmfp_wire_encode_data(f, (size_t)n, 123, 4, 1000, npages,
					       zero, pages), n);
	assert_int_equal(gmfp_wire_encode_data(f, (size_t)n - 1, 123, 4, 1000,
					       npages, zero, pages), -ENOSPC);

	assert_int_equal(decode_copy(f, (size_t)n, &m), n);
	assert_int_equal(gmfp_wire_decode(f, (size_t)n, &m), n);
	assert_int_equal(m.type, GMFP_WIRE_DATA);
	assert_int_equal(m.seq, 123);
	assert_int_equal(m.u.data.region, 4);
	assert_int_equal(m.u.data.npages, npages);
	assert_true(m.u.data.pgoff == 1000);
	assert_int_equal(m.u.data.nr_data, npages - nzero);
	assert_ptr_equal(m.u.data.zero, f + 32);
	for (i = 0; i < words; i++)
		assert_true(le64((const uint8_t *)m.u.data.zero + 8 * i) ==
			    (zero ? zero[i] : 0));
	d = m.u.data.pages;
	for (i = 0; i < npages; i++) {
		if (zero && (zero[i / 64] >> (i % 64) & 1))
			continue;
		assert_memory_equal(d, pages + (size_t)i * PS, PS);
		d += PS;
	}
	assert_ptr_equal(d, f + n);
	free(pages);
	free(f);
}

static void test_data(void **state)
{
	static const uint32_t sizes[] = { 1, 2, 63, 64, 65, 128, 200, 255, 256 };
	uint64_t zero[4];
	size_t k;

	(void)state;
	for (k = 0; k < GMFP_ARRAY_SIZE(sizes); k++) {
		uint32_t np = sizes[k], i;

		data_round_trip(np, NULL);
		/* every page zero */
		memset(zero, 0, sizeof(zero));
		for (i = 0; i < np; i++)
			zero[i / 64] |= 1ull << (i % 64);
		data_round_trip(np, zero);
		/* every third page zero, runs of two non-zero ones between */
		memset(zero, 0, sizeof(zero));
		for (i = 0; i < np; i += 3)
			zero[i / 64] |= 1ull << (i % 64);
		data_round_trip(np, zero);
		/* only the last page non-zero */
		memset(zero, 0, sizeof(zero));
		for (i = 0; i + 1 < np; i++)
			zero[i / 64] |= 1ull << (i % 64);
		data_round_trip(np, zero);
	}
}

/* ---- truncation ---- */

/* Every prefix of @f (shorter than @n) needs more bytes, none read past. */
static void all_prefixes(const uint8_t *f, size_t n, size_t step)
{
	struct gmfp_wire_msg m;
	size_t l;

	for (l = 0; l < n; l += (l < 64 || l + 64 > n) ? 1 : step)
		assert_int_equal(decode_copy(f, l, &m), 0);
	assert_int_equal(decode_copy(f, n, &m), (ssize_t)n);
}

static void test_truncated(void **state)
{
	size_t max = GMFP_WIRE_HDR_SIZE + GMFP_WIRE_MAX_PAYLOAD;
	uint64_t sizes[GMFP_WIRE_MAX_REGIONS], zero[4] = { 0x5, 0, 0, 0 };
	uint8_t *f = malloc(max), *pages = calloc(GMFP_WIRE_MAX_PAGES, PS);
	ssize_t n;
	uint32_t i;

	(void)state;
	assert_non_null(f);
	assert_non_null(pages);
	for (i = 0; i < GMFP_WIRE_MAX_REGIONS; i++)
		sizes[i] = (uint64_t)(i + 1) << 20;

	n = gmfp_wire_encode_hello(f, max, 1, GMFP_WIRE_CH_DEMAND, 3, sizes);
	all_prefixes(f, (size_t)n, 1);
	n = gmfp_wire_encode_hello(f, max, 1, GMFP_WIRE_CH_DEMAND,
				   GMFP_WIRE_MAX_REGIONS, sizes);
	all_prefixes(f, (size_t)n, 1);
	n = gmfp_wire_encode_welcome(f, max, 1, 0, NULL);
	all_prefixes(f, (size_t)n, 1);
	n = gmfp_wire_encode_welcome(f, max, 1, 17, sizes);
	all_prefixes(f, (size_t)n, 1);
	n = gmfp_wire_encode_req(f, max, 1, 0, 0, 1);
	all_prefixes(f, (size_t)n, 1);
	n = gmfp_wire_encode_error(f, max, 1, 0, 0, 1, EIO);
	all_prefixes(f, (size_t)n, 1);
	n = gmfp_wire_encode_bye(f, max);
	all_prefixes(f, (size_t)n, 1);
	/* a DATA of 3 pages, 1 sent: every length */
	n = gmfp_wire_encode_data(f, max, 1, 0, 0, 3, zero, pages);
	assert_int_equal(n, 16 + 24 + PS);
	all_prefixes(f, (size_t)n, 1);
	/* a full-size one: every length near the ends, a sample between */
	n = gmfp_wire_encode_data(f, max, 1, 0, 0, 256, NULL, pages);
	assert_int_equal(n, (ssize_t)max);
	all_prefixes(f, (size_t)n, 4093);
	free(f);
	free(pages);
}

/* ---- malformed frames ---- */

static void test_malformed_header(void **state)
{
	/*
	 * One header byte changed in a REQ, decoded from the whole frame or
	 * from the header alone: the header alone decides, so a short buffer
	 * is no "need more".
	 */
	static const struct {
		size_t at;
		uint8_t v;
		size_t len;
		ssize_t want;
	} cases[] = {
		{ 0, 'g', 32, -EBADMSG },		/* magic */
		{ 0, 'g', 16, -EBADMSG },
		{ 3, 'P' ^ 0x80, 32, -EBADMSG },
		{ 4, 2, 32, -EPROTONOSUPPORT },		/* version */
		{ 4, 0, 16, -EPROTONOSUPPORT },
		{ 6, 1, 32, -EBADMSG },			/* flags */
		{ 7, 0x80, 16, -EBADMSG },
		{ 5, 0, 32, -EBADMSG },			/* type */
		{ 5, 7, 32, -EBADMSG },
		{ 5, 0xff, 16, -EBADMSG },
	};
	struct gmfp_wire_msg m;
	uint8_t f[40], g[40];
	unsigned int i;
	ssize_t n;

	(void)state;
	n = gmfp_wire_encode_req(f, sizeof(f), 1, 0, 0, 1);
	assert_int_equal(n, 32);

	for (i = 0; i < GMFP_ARRAY_SIZE(cases); i++) {
		memcpy(g, f, 32);
		g[cases[i].at] = cases[i].v;
		n = decode_copy(g, cases[i].len, &m);
		if (n != cases[i].want)
			fail_msg("case %u: %zd, want %zd", i, n, cases[i].want);
	}

	/* oversized length: known from the header alone, for any type */
	memcpy(g, f, 32);
	g[5] = GMFP_WIRE_DATA;
	set32(g + 8, GMFP_WIRE_MAX_PAYLOAD + 1);
	assert_int_equal(decode_copy(g, 16, &m), -EMSGSIZE);
	set32(g + 8, 0xffffffffu);
	assert_int_equal(decode_copy(g, 16, &m), -EMSGSIZE);
	g[5] = GMFP_WIRE_REQ;
	assert_int_equal(decode_copy(g, 16, &m), -EMSGSIZE);
	/* the biggest allowed length is "need more", not an error */
	g[5] = GMFP_WIRE_DATA;
	set32(g + 8, GMFP_WIRE_MAX_PAYLOAD);
	assert_int_equal(decode_copy(g, 32, &m), 0);

	/* the seq is free: anything goes */
	memcpy(g, f, 32);
	set32(g + 12, 0xffffffffu);
	assert_int_equal(decode_copy(g, 32, &m), 32);
	assert_int_equal(m.seq, 0xffffffffu);
}

/* @f with payload length @length: the header says -EBADMSG at once. */
static void bad_length(const uint8_t *f, size_t n, uint32_t length)
{
	struct gmfp_wire_msg m;
	uint8_t *g = malloc(n + 64);

	assert_non_null(g);
	memset(g, 0, n + 64);
	memcpy(g, f, n);
	set32(g + 8, length);
	assert_int_equal(decode_copy(g, 16, &m), -EBADMSG);
	assert_int_equal(decode_copy(g, n + 64, &m), -EBADMSG);
	free(g);
}

static void test_malformed_length(void **state)
{
	const uint64_t sizes[2] = { 4096, 8192 };
	uint8_t f[128];
	ssize_t n;

	(void)state;
	n = gmfp_wire_encode_req(f, sizeof(f), 1, 0, 0, 1);
	bad_length(f, (size_t)n, 0);
	bad_length(f, (size_t)n, 15);
	bad_length(f, (size_t)n, 17);
	bad_length(f, (size_t)n, 24);
	n = gmfp_wire_encode_error(f, sizeof(f), 1, 0, 0, 1, EIO);
	bad_length(f, (size_t)n, 16);
	bad_length(f, (size_t)n, 23);
	bad_length(f, (size_t)n, 25);
	n = gmfp_wire_encode_bye(f, sizeof(f));
	bad_length(f, (size_t)n, 1);
	bad_length(f, (size_t)n, 8);
	n = gmfp_wire_encode_hello(f, sizeof(f), 1, GMFP_WIRE_CH_DEMAND, 2, sizes);
	bad_length(f, (size_t)n, 0);
	bad_length(f, (size_t)n, 19);
	bad_length(f, (size_t)n, 21);
	bad_length(f, (size_t)n, 20 + 8 * 2 + 4);
	bad_length(f, (size_t)n, 20 + 8 * (GMFP_WIRE_MAX_REGIONS + 1));
	n = gmfp_wire_encode_welcome(f, sizeof(f), 1, 2, sizes);
	bad_length(f, (size_t)n, 15);
	bad_length(f, (size_t)n, 16 + 8 * 2 + 1);
	bad_length(f, (size_t)n, 16 + 8 * (GMFP_WIRE_MAX_REGIONS + 1));
	n = gmfp_wire_encode_data(f, sizeof(f), 1, 0, 0, 1,
				  (const uint64_t[]){ 1 }, NULL);
	bad_length(f, (size_t)n, 0);
	bad_length(f, (size_t)n, 23);
}

/* The frame @g of @n bytes decodes as @want, from exactly @n bytes. */
static void expect(const uint8_t *g, size_t n, ssize_t want)
{
	struct gmfp_wire_msg m;

	assert_int_equal(decode_copy(g, n, &m), want);
}

/* Frame @f of @n bytes but for the u32 at @off, which is @v: malformed. */
static void expect_bad32(const uint8_t *f, size_t n, size_t off, uint32_t v)
{
	uint8_t *g = malloc(n);

	assert_non_null(g);
	memcpy(g, f, n);
	set32(g + off, v);
	expect(g, n, -EBADMSG);
	free(g);
}

/* The same for each byte in [@from, @to) in turn, when it is @v. */
static void expect_bad_bytes(const uint8_t *f, size_t n, size_t from, size_t to,
			     uint8_t v)
{
	uint8_t *g = malloc(n);
	size_t i;

	assert_non_null(g);
	for (i = from; i < to; i++) {
		memcpy(g, f, n);
		g[i] = v;
		expect(g, n, -EBADMSG);
	}
	free(g);
}

static void test_malformed_payload(void **state)
{
	const uint64_t sizes[2] = { 4096, 8192 };
	uint64_t zero[4];
	uint8_t *pages = calloc(GMFP_WIRE_MAX_PAGES, PS);
	size_t max = GMFP_WIRE_HDR_SIZE + GMFP_WIRE_MAX_PAYLOAD + 8;
	uint8_t *f = malloc(max), *g = malloc(max);
	uint32_t i;
	ssize_t n;

	(void)state;
	assert_non_null(pages);
	assert_non_null(f);
	assert_non_null(g);

	/* HELLO: each pad byte, page size, channel, nr_regions vs length */
	n = gmfp_wire_encode_hello(f, max, 1, GMFP_WIRE_CH_DEMAND, 2, sizes);
	expect_bad_bytes(f, (size_t)n, 21, 24, 1);
	expect_bad_bytes(f, (size_t)n, 32, 36, 0x10);
	expect_bad32(f, (size_t)n, 24, 8192);
	expect_bad_bytes(f, (size_t)n, 20, 21, 0);	/* channel */
	expect_bad_bytes(f, (size_t)n, 20, 21, 3);
	expect_bad32(f, (size_t)n, 28, 1);
	expect_bad32(f, (size_t)n, 28, 3);
	/* too many regions, with a length to match */
	n = gmfp_wire_encode_hello(f, max, 1, GMFP_WIRE_CH_DEMAND, 0, NULL);
	memset(g, 0, max);
	memcpy(g, f, (size_t)n);
	set32(g + 8, 20 + 8 * (GMFP_WIRE_MAX_REGIONS + 1));
	set32(g + 28, GMFP_WIRE_MAX_REGIONS + 1);
	expect(g, 16 + 20 + 8 * (GMFP_WIRE_MAX_REGIONS + 1), -EBADMSG);
	set32(g + 28, 0xffffffffu);
	expect(g, 16 + 20 + 8 * (GMFP_WIRE_MAX_REGIONS + 1), -EBADMSG);
	/* GMFP_WIRE_MAX_REGIONS itself is fine */
	set32(g + 8, 20 + 8 * GMFP_WIRE_MAX_REGIONS);
	set32(g + 28, GMFP_WIRE_MAX_REGIONS);
	expect(g, 16 + 20 + 8 * GMFP_WIRE_MAX_REGIONS,
	       16 + 20 + 8 * GMFP_WIRE_MAX_REGIONS);

	/* WELCOME: pads, page size, nr_regions vs length */
	n = gmfp_wire_encode_welcome(f, max, 1, 2, sizes);
	expect_bad_bytes(f, (size_t)n, 18, 20, 1);
	expect_bad_bytes(f, (size_t)n, 28, 32, 1);
	expect_bad32(f, (size_t)n, 20, 65536);
	expect_bad32(f, (size_t)n, 24, 1);
	expect_bad32(f, (size_t)n, 24, GMFP_WIRE_MAX_REGIONS + 1);

	/* REQ: npages 0 and 257 */
	n = gmfp_wire_encode_req(f, max, 1, 0, 0, 1);
	expect_bad32(f, (size_t)n, 20, 0);
	expect_bad32(f, (size_t)n, 20, GMFP_WIRE_MAX_PAGES + 1);
	expect_bad32(f, (size_t)n, 20, 0x80000000u);
	memcpy(g, f, (size_t)n);
	set32(g + 20, GMFP_WIRE_MAX_PAGES);
	expect(g, (size_t)n, n);

	/* ERROR: err must be > 0, pad zero, npages <= the maximum */
	n = gmfp_wire_encode_error(f, max, 1, 0, 0, 1, EIO);
	expect_bad32(f, (size_t)n, 32, 0);
	expect_bad32(f, (size_t)n, 32, (uint32_t)-EIO);
	expect_bad_bytes(f, (size_t)n, 39, 40, 1);
	expect_bad32(f, (size_t)n, 20, GMFP_WIRE_MAX_PAGES + 1);

	/* DATA: npages 0 and 257 */
	n = gmfp_wire_encode_data(f, max, 1, 0, 0, 1, NULL, pages);
	expect_bad32(f, (size_t)n, 20, 0);
	expect_bad32(f, (size_t)n, 20, GMFP_WIRE_MAX_PAGES + 1);

	/* DATA: a zero bit past npages, with a length that would fit it */
	for (i = 1; i <= 256; i += (i < 70 ? 1 : 37)) {
		uint32_t words = (i + 63) / 64;

		memset(zero, 0, sizeof(zero));
		if (i % 64) {
			zero[words - 1] = 1ull << (i % 64);
			n = gmfp_wire_encode_data(f, max, 1, 0, 0, i, NULL, pages);
			memcpy(g, f, (size_t)n);
			set64(g + 32 + 8 * (words - 1), zero[words - 1]);
			expect(g, (size_t)n, -EBADMSG);
			/* the same, with one page fewer to match the count */
			set32(g + 8, (uint32_t)n - 16 - PS);
			expect(g, (size_t)n - PS, -EBADMSG);
		}
		/* payload one page too long, one page too short, one byte off */
		n = gmfp_wire_encode_data(f, max, 1, 0, 0, i, NULL, pages);
		memcpy(g, f, (size_t)n);
		if (i < 256) {
			memset(g + n, 0, PS);
			set32(g + 8, (uint32_t)n - 16 + PS);
			expect(g, (size_t)n + PS, -EBADMSG);
		}
		set32(g + 8, (uint32_t)n - 16 - PS);
		expect(g, (size_t)n - PS, -EBADMSG);
		set32(g + 8, (uint32_t)n - 16 - 1);
		expect(g, (size_t)n - 1, -EBADMSG);
		/* bitmap cut short: length covers fewer words than npages needs */
		if (words > 1) {
			set32(g + 8, 16 + 8 * (words - 1));
			expect(g, 16 + 16 + 8 * (words - 1), -EBADMSG);
		}
		/* all zero, no page bytes: only a length with none is right */
		memset(zero, 0, sizeof(zero));
		{
			uint32_t k;

			for (k = 0; k < i; k++)
				zero[k / 64] |= 1ull << (k % 64);
		}
		n = gmfp_wire_encode_data(f, max, 1, 0, 0, i, zero, NULL);
		assert_int_equal(n, 32 + 8 * words);
		expect(f, (size_t)n, n);
		memcpy(g, f, (size_t)n);
		memset(g + n, 0, 8);
		set32(g + 8, (uint32_t)n - 16 + 8);
		expect(g, (size_t)n + 8, -EBADMSG);
	}
	free(pages);
	free(f);
	free(g);
}

/* ---- encoder argument checks ---- */

static void test_encode_errors(void **state)
{
	const uint64_t sizes[1] = { 4096 };
	uint8_t f[128], page[PS];
	uint64_t zero[4] = { 0 };
	size_t l;

	(void)state;
	memset(page, 1, sizeof(page));
	/* too small at every length, never written past: heap of that size */
	for (l = 0; l < 44; l++) {
		uint8_t *b = malloc(l ? l : 1);

		assert_int_equal(gmfp_wire_encode_hello(b, l, 0, GMFP_WIRE_CH_DEMAND,
							1, sizes), -ENOSPC);
		if (l < 40) {
			assert_int_equal(gmfp_wire_encode_welcome(b, l, 0, 1, sizes),
					 -ENOSPC);
			assert_int_equal(gmfp_wire_encode_error(b, l, 0, 0, 0, 1, EIO),
					 -ENOSPC);
		}
		if (l < 32)
			assert_int_equal(gmfp_wire_encode_req(b, l, 0, 0, 0, 1), -ENOSPC);
		if (l < 40)
			assert_int_equal(gmfp_wire_encode_data(b, l, 0, 0, 0, 1, NULL,
							       page), -ENOSPC);
		if (l < 16)
			assert_int_equal(gmfp_wire_encode_bye(b, l), -ENOSPC);
		free(b);
	}
	assert_int_equal(gmfp_wire_encode_data(f, sizeof(f), 0, 0, 0, 1, NULL, page),
			 -ENOSPC);

	assert_int_equal(gmfp_wire_encode_hello(f, sizeof(f), 0, 0, 0, NULL), -EINVAL);
	assert_int_equal(gmfp_wire_encode_hello(f, sizeof(f), 0, 3, 0, NULL), -EINVAL);
	assert_int_equal(gmfp_wire_encode_hello(f, sizeof(f), 0, GMFP_WIRE_CH_DEMAND,
						1, NULL), -EINVAL);
	assert_int_equal(gmfp_wire_encode_hello(f, sizeof(f), 0, GMFP_WIRE_CH_DEMAND,
						GMFP_WIRE_MAX_REGIONS + 1, sizes),
			 -EINVAL);
	assert_int_equal(gmfp_wire_encode_welcome(f, sizeof(f), 0, 2, NULL), -EINVAL);
	assert_int_equal(gmfp_wire_encode_welcome(f, sizeof(f), 0,
						  GMFP_WIRE_MAX_REGIONS + 1, sizes),
			 -EINVAL);
	assert_int_equal(gmfp_wire_encode_req(f, sizeof(f), 0, 0, 0, 0), -EINVAL);
	assert_int_equal(gmfp_wire_encode_req(f, sizeof(f), 0, 0, 0, 257), -EINVAL);
	assert_int_equal(gmfp_wire_encode_data(f, sizeof(f), 0, 0, 0, 0, NULL, page),
			 -EINVAL);
	assert_int_equal(gmfp_wire_encode_data(f, sizeof(f), 0, 0, 0, 257, NULL, page),
			 -EINVAL);
	/* a bit past npages */
	zero[0] = 1ull << 5;
	assert_int_equal(gmfp_wire_encode_data(f, sizeof(f), 0, 0, 0, 5, zero, page),
			 -EINVAL);
	zero[0] = 0;
	zero[1] = 1ull << 1;	/* page 65 of 65 */
	assert_int_equal(gmfp_wire_encode_data(f, sizeof(f), 0, 0, 0, 65, zero, page),
			 -EINVAL);
	/* 64 pages: the word is all theirs, all zero is fine */
	zero[0] = ~0ull;
	assert_int_equal(gmfp_wire_encode_data(f, sizeof(f), 0, 0, 0, 64, zero, NULL),
			 40);
	/* non-zero pages and nothing to take them from */
	zero[1] = 0;
	zero[0] = 1;
	assert_int_equal(gmfp_wire_encode_data(f, sizeof(f), 0, 0, 0, 2, zero, NULL),
			 -EINVAL);
	assert_int_equal(gmfp_wire_encode_data(f, sizeof(f), 0, 0, 0, 1, zero, NULL), 40);
	assert_int_equal(gmfp_wire_encode_error(f, sizeof(f), 0, 0, 0, 1, 0), -EINVAL);
	assert_int_equal(gmfp_wire_encode_error(f, sizeof(f), 0, 0, 0, 1, -EIO), -EINVAL);
	assert_int_equal(gmfp_wire_encode_error(f, sizeof(f), 0, 0, 0, 257, EIO), -EINVAL);
	/* no buffer but a length */
	assert_int_equal(gmfp_wire_encode_bye(NULL, 16), -EINVAL);
	assert_int_equal(gmfp_wire_encode_req(NULL, 32, 0, 0, 0, 1), -EINVAL);
}

/* ---- fuzz ---- */

static uint64_t rng_state;

static uint64_t rnd(void)
{
	/* xorshift64*: deterministic, same sequence on every run */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545f4914f6cdd1dull;
}

struct corpus {
	uint8_t *f;
	size_t n;
};

/*
 * Check a frame the decoder accepted: every pointer lies inside it, and
 * encoding the decoded message gives back the very same bytes (one encoding
 * per message: nothing the decoder let through was left unchecked).
 */
static void check_accepted(const uint8_t *f, size_t n, const struct gmfp_wire_msg *m)
{
	size_t max = GMFP_WIRE_HDR_SIZE + GMFP_WIRE_MAX_PAYLOAD;
	uint8_t *e = malloc(max);
	uint64_t sizes[GMFP_WIRE_MAX_REGIONS], zero[4];
	const uint8_t *end = f + n;
	ssize_t k = -1;
	uint32_t i;

	assert_non_null(e);
	assert_int_equal(m->length + 16, n);
	switch (m->type) {
	case GMFP_WIRE_HELLO:
	case GMFP_WIRE_WELCOME:
		assert_true(m->u.hello.nr_regions <= GMFP_WIRE_MAX_REGIONS);
		assert_true((const uint8_t *)m->u.hello.region_sizes +
			    8 * (size_t)m->u.hello.nr_regions == end);
		for (i = 0; i < m->u.hello.nr_regions; i++)
			sizes[i] = gmfp_wire_region_size(m, i);
		if (m->type == GMFP_WIRE_HELLO)
			k = gmfp_wire_encode_hello(e, max, m->seq, m->u.hello.channel,
						   m->u.hello.nr_regions, sizes);
		else
			k = gmfp_wire_encode_welcome(e, max, m->seq,
						     m->u.welcome.nr_regions, sizes);
		/* the versions are free to vary: the encoder writes its own */
		if (k > 0)
			memcpy(e + 16, f + 16, m->type == GMFP_WIRE_HELLO ? 4 : 2);
		break;
	case GMFP_WIRE_REQ:
		k = gmfp_wire_encode_req(e, max, m->seq, m->u.req.region,
					 m->u.req.pgoff, m->u.req.npages);
		break;
	case GMFP_WIRE_DATA:
		assert_true(m->u.data.nr_data <= m->u.data.npages);
		assert_true((const uint8_t *)m->u.data.pages +
			    (size_t)m->u.data.nr_data * PS == end);
		memset(zero, 0, sizeof(zero));
		for (i = 0; i < (m->u.data.npages + 63) / 64; i++)
			zero[i] = le64((const uint8_t *)m->u.data.zero + 8 * i);
		{
			/* expand the sent pages to a full buffer for the encoder */
			uint8_t *pages = malloc((size_t)m->u.data.npages * PS);
			const uint8_t *src = m->u.data.pages;

			assert_non_null(pages);
			for (i = 0; i < m->u.data.npages; i++) {
				if (zero[i / 64] >> (i % 64) & 1)
					continue;
				memcpy(pages + (size_t)i * PS, src, PS);
				src += PS;
			}
			k = gmfp_wire_encode_data(e, max, m->seq, m->u.data.region,
						  m->u.data.pgoff, m->u.data.npages,
						  zero, pages);
			free(pages);
		}
		break;
	case GMFP_WIRE_ERROR:
		k = gmfp_wire_encode_error(e, max, m->seq, m->u.error.region,
					   m->u.error.pgoff, m->u.error.npages,
					   m->u.error.err);
		break;
	case GMFP_WIRE_BYE:
		k = gmfp_wire_encode_bye(e, max);
		/* the encoder's BYE has seq 0; a peer's may have any */
		if (k > 0)
			memcpy(e + 12, f + 12, 4);
		break;
	default:
		fail_msg("accepted unknown type %u", m->type);
	}
	assert_int_equal(k, (ssize_t)n);
	assert_memory_equal(e, f, n);
	free(e);
}

static void test_fuzz(void **state)
{
	const uint64_t sizes[5] = { 4096, 1 << 20, 3ull << 30, 0, 12345 };
	uint64_t zero[2] = { 0xfffffffffffffffaull, 0x1 };	/* 65 pages, 2 sent */
	uint64_t zero1[1] = { 0x1 };
	size_t max = GMFP_WIRE_HDR_SIZE + GMFP_WIRE_MAX_PAYLOAD;
	uint8_t *pages = malloc(4 * PS), *buf = malloc(max);
	struct corpus c[12];
	size_t nc = 0, i, accepted = 0, errors = 0, more = 0;
	int it;

	(void)state;
	assert_non_null(pages);
	assert_non_null(buf);
	for (i = 0; i < 4; i++)
		fill_page(pages + i * PS, (uint32_t)i);
	/* reuse buf as scratch per frame, keep a copy of each */
#define ADD(expr) do {						\
		ssize_t _n = (expr);					\
		assert_true(_n > 0);					\
		c[nc].f = malloc((size_t)_n);				\
		assert_non_null(c[nc].f);				\
		memcpy(c[nc].f, buf, (size_t)_n);			\
		c[nc++].n = (size_t)_n;					\
	} while (0)
	ADD(gmfp_wire_encode_hello(buf, max, 1, GMFP_WIRE_CH_DEMAND, 5, sizes));
	ADD(gmfp_wire_encode_hello(buf, max, 2, GMFP_WIRE_CH_BACKGROUND, 0, NULL));
	ADD(gmfp_wire_encode_welcome(buf, max, 3, 5, sizes));
	ADD(gmfp_wire_encode_welcome(buf, max, 3, 1, sizes));
	ADD(gmfp_wire_encode_req(buf, max, 4, 1, 99, 17));
	ADD(gmfp_wire_encode_req(buf, max, 4, 0, 0, 256));
	ADD(gmfp_wire_encode_data(buf, max, 5, 2, 64, 65, zero, pages));
	ADD(gmfp_wire_encode_data(buf, max, 5, 2, 64, 1, zero1, NULL));
	ADD(gmfp_wire_encode_data(buf, max, 5, 2, 64, 2, NULL, pages));
	ADD(gmfp_wire_encode_error(buf, max, 6, 3, 7, 8, ENOENT));
	ADD(gmfp_wire_encode_bye(buf, max));
#undef ADD

	rng_state = 0x9e3779b97f4a7c15ull;
	for (it = 0; it < 20000; it++) {
		const struct corpus *src = &c[rnd() % nc];
		size_t n = src->n, flips = 1 + rnd() % 4, k;
		struct gmfp_wire_msg m;
		uint8_t *copy;
		ssize_t r;

		memcpy(buf, src->f, n);
		for (k = 0; k < flips; k++) {
			/* mostly the header and the fixed payload: the interesting bytes */
			size_t pos = (rnd() % 4) ? rnd() % (n < 48 ? n : 48) : rnd() % n;

			switch (rnd() % 4) {
			case 0:
				buf[pos] ^= (uint8_t)(1u << (rnd() % 8));
				break;
			case 1:
				buf[pos] = (uint8_t)rnd();
				break;
			case 2:
				buf[pos] = (uint8_t)(buf[pos] + 1);
				break;
			default:
				buf[pos] = (uint8_t)(buf[pos] - 1);
				break;
			}
		}
		/* sometimes cut short, sometimes with trailing bytes */
		if (rnd() % 8 == 0)
			n = rnd() % (n + 1);
		else if (rnd() % 8 == 0 && n + 64 <= max) {
			for (k = 0; k < 64; k++)
				buf[n + k] = (uint8_t)rnd();
			n += rnd() % 65;
		}
		/* decoded from an exact-size copy, checked while m points into it */
		copy = malloc(n ? n : 1);
		assert_non_null(copy);
		memcpy(copy, buf, n);
		r = gmfp_wire_decode(copy, n, &m);
		if (r > 0) {
			assert_true((size_t)r <= n);
			check_accepted(copy, (size_t)r, &m);
			accepted++;
		} else if (r == 0) {
			more++;
		} else {
			assert_true(r == -EBADMSG || r == -EMSGSIZE ||
				    r == -EPROTONOSUPPORT);
			errors++;
		}
		free(copy);
	}
	/* the fuzz must have reached all three outcomes */
	assert_true(accepted > 100);
	assert_true(errors > 100);
	assert_true(more > 100);
	for (i = 0; i < nc; i++)
		free(c[i].f);
	free(pages);
	free(buf);
}

/* Several frames back to back in one buffer: each decoded in turn. */
static void test_stream(void **state)
{
	uint8_t buf[256], page[PS];
	size_t off = 0, total;
	struct gmfp_wire_msg m;
	ssize_t n;
	int types[4] = { 0 }, i = 0;
	uint8_t *big;

	(void)state;
	memset(page, 0xab, sizeof(page));
	off += (size_t)gmfp_wire_encode_req(buf + off, sizeof(buf) - off, 1, 0, 0, 1);
	off += (size_t)gmfp_wire_encode_error(buf + off, sizeof(buf) - off, 1, 0, 0, 1, 5);
	off += (size_t)gmfp_wire_encode_bye(buf + off, sizeof(buf) - off);
	total = off + 40 + PS;
	big = malloc(total);
	assert_non_null(big);
	memcpy(big, buf, off);
	assert_int_equal(gmfp_wire_encode_data(big + off, total - off, 2, 0, 0, 1,
					       NULL, page), 40 + PS);
	for (off = 0; off < total; off += (size_t)n) {
		n = gmfp_wire_decode(big + off, total - off, &m);
		assert_true(n > 0);
		types[i++] = m.type;
	}
	assert_int_equal(types[0], GMFP_WIRE_REQ);
	assert_int_equal(types[1], GMFP_WIRE_ERROR);
	assert_int_equal(types[2], GMFP_WIRE_BYE);
	assert_int_equal(types[3], GMFP_WIRE_DATA);
	assert_memory_equal(m.u.data.pages, page, PS);
	free(big);
	/* a malformed frame leaves the caller's message alone */
	memset(&m, 0x5a, sizeof(m));
	memset(buf, 0, 16);
	assert_int_equal(gmfp_wire_decode(buf, 16, &m), -EBADMSG);
	assert_int_equal(m.type, 0x5a);
	/* a NULL message is allowed: just the length */
	assert_int_equal(gmfp_wire_encode_bye(buf, 16), 16);
	assert_int_equal(gmfp_wire_decode(buf, 16, NULL), 16);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hello),
		cmocka_unit_test(test_welcome),
		cmocka_unit_test(test_req),
		cmocka_unit_test(test_error_bye),
		cmocka_unit_test(test_data),
		cmocka_unit_test(test_truncated),
		cmocka_unit_test(test_malformed_header),
		cmocka_unit_test(test_malformed_length),
		cmocka_unit_test(test_malformed_payload),
		cmocka_unit_test(test_encode_errors),
		cmocka_unit_test(test_fuzz),
		cmocka_unit_test(test_stream),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
