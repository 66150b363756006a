// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * libFuzzer target: gmfp_wire_decode(), the wire-protocol decoder both
 * ends of a page-server connection feed with a peer's bytes.
 *
 * Checked for every input, decoded from an exact-size heap copy (ASan
 * catches any read at or past @len):
 *  - the result is 0 (need more), -EBADMSG, -EMSGSIZE, -EPROTONOSUPPORT,
 *    or a frame length within the input;
 *  - a rejected frame leaves *m untouched;
 *  - a frame is never rejected for being short: every prefix of a frame
 *    that decodes asks for more bytes, and so does every prefix of an
 *    input that is only short;
 *  - a frame that decodes re-encodes to the same bytes with the public
 *    encoders ("exactly one encoding of each message", wire.c), except for
 *    what those encoders cannot express: the version fields of HELLO and
 *    WELCOME, which always carry this implementation's version 1, and the
 *    seq of a BYE, which a peer may set (test_wire.c accepts any) and
 *    gmfp_wire_encode_bye() leaves 0;
 *  - gmfp_wire_region_size() and the decoded pointers stay inside the frame.
 */
#include <errno.h>

#include "fuzz.h"
#include "gmfp_wire.h"

#define PS GMFP_PAGE_SIZE

static uint64_t get64(const uint8_t *p)
{
	uint64_t v = 0;
	int i;

	for (i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static bool in_frame(const void *ptr, size_t n, const uint8_t *f, size_t len)
{
	const uint8_t *p = ptr;

	return p >= f && p <= f + len && n <= (size_t)(f + len - p);
}

/* The frame @m decoded from @f (@n bytes), encoded again into @out. */
static ssize_t reencode(const struct gmfp_wire_msg *m, const uint8_t *f, size_t n,
			uint8_t *out, size_t cap)
{
	static uint64_t sizes[GMFP_WIRE_MAX_REGIONS];
	static uint8_t pages[GMFP_WIRE_MAX_PAGES * PS];
	uint64_t zero[GMFP_WIRE_MAX_PAGES / 64];
	const uint8_t *src;
	uint32_t i, words;

	switch (m->type) {
	case GMFP_WIRE_HELLO:
	case GMFP_WIRE_WELCOME:
		FUZZ_CHECK(m->u.hello.nr_regions <= GMFP_WIRE_MAX_REGIONS, "%u regions",
			   m->u.hello.nr_regions);
		FUZZ_CHECK(in_frame(m->u.hello.region_sizes, 8ull * m->u.hello.nr_regions,
				    f, n), "region sizes outside the frame");
		FUZZ_CHECK(m->u.hello.page_size == PS, "page size %u", m->u.hello.page_size);
		for (i = 0; i < m->u.hello.nr_regions; i++)
			sizes[i] = gmfp_wire_region_size(m, i);
		/* one past the end reads as 0, never out of the frame */
		FUZZ_CHECK(gmfp_wire_region_size(m, m->u.hello.nr_regions) == 0,
			   "region size past the layout");
		if (m->type == GMFP_WIRE_HELLO)
			return gmfp_wire_encode_hello(out, cap, m->seq, m->u.hello.channel,
						      m->u.hello.nr_regions, sizes);
		FUZZ_CHECK(m->u.welcome.min_version == m->u.welcome.max_version,
			   "WELCOME %u..%u", m->u.welcome.min_version,
			   m->u.welcome.max_version);
		return gmfp_wire_encode_welcome(out, cap, m->seq, m->u.welcome.nr_regions,
						sizes);
	case GMFP_WIRE_REQ:
		return gmfp_wire_encode_req(out, cap, m->seq, m->u.req.region, m->u.req.pgoff,
					    m->u.req.npages);
	case GMFP_WIRE_DATA:
		FUZZ_CHECK(m->u.data.npages >= 1 && m->u.data.npages <= GMFP_WIRE_MAX_PAGES,
			   "DATA of %u pages", m->u.data.npages);
		FUZZ_CHECK(m->u.data.nr_data <= m->u.data.npages, "%u of %u pages sent",
			   m->u.data.nr_data, m->u.data.npages);
		words = (m->u.data.npages + 63) / 64;
		FUZZ_CHECK(in_frame(m->u.data.zero, 8ull * words, f, n), "bitmap outside");
		FUZZ_CHECK(in_frame(m->u.data.pages, (size_t)m->u.data.nr_data * PS, f, n),
			   "pages outside the frame");
		for (i = 0; i < words; i++)
			zero[i] = get64((const uint8_t *)m->u.data.zero + 8 * i);
		/* the encoder takes every page, in page order: spread them out */
		src = m->u.data.pages;
		for (i = 0; i < m->u.data.npages; i++) {
			if (zero[i / 64] >> (i % 64) & 1) {
				memset(pages + (size_t)i * PS, 0xa5, PS);	/* ignored */
				continue;
			}
			memcpy(pages + (size_t)i * PS, src, PS);
			src += PS;
		}
		FUZZ_CHECK(src == (const uint8_t *)m->u.data.pages +
				  (size_t)m->u.data.nr_data * PS, "nr_data does not match the bitmap");
		return gmfp_wire_encode_data(out, cap, m->seq, m->u.data.region, m->u.data.pgoff,
					     m->u.data.npages, zero, pages);
	case GMFP_WIRE_ERROR:
		return gmfp_wire_encode_error(out, cap, m->seq, m->u.error.region,
					      m->u.error.pgoff, m->u.error.npages, m->u.error.err);
	case GMFP_WIRE_BYE:
		return gmfp_wire_encode_bye(out, cap);
	}
	FUZZ_CHECK(0, "decoded an unknown type %u", m->type);
	return -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t out[GMFP_WIRE_HDR_SIZE + GMFP_WIRE_MAX_PAYLOAD];
	struct gmfp_wire_msg m, untouched, pm;
	uint8_t *buf = fz_dup(data, size);
	ssize_t n, e;
	size_t k;

	memset(&m, 0x5a, sizeof(m));
	untouched = m;
	n = gmfp_wire_decode(buf, size, &m);
	FUZZ_CHECK(n == 0 || n == -EBADMSG || n == -EMSGSIZE || n == -EPROTONOSUPPORT ||
		   (n >= GMFP_WIRE_HDR_SIZE && (size_t)n <= size), "decode returned %zd", n);
	/* NULL for @m: same verdict */
	FUZZ_CHECK(gmfp_wire_decode(buf, size, NULL) == n, "verdict depends on m");
	if (n <= 0) {
		FUZZ_CHECK(!memcmp(&m, &untouched, sizeof(m)), "*m written for verdict %zd", n);
		/*
		 * "Need more" must hold for every prefix too: a decoder that
		 * rejected a prefix of a frame it would accept whole would
		 * reject good frames that arrive in pieces.
		 */
		if (n == 0)
			for (k = 0; k < size; k += 1 + k / 4)
				FUZZ_CHECK(gmfp_wire_decode(buf, k, NULL) == 0,
					   "prefix %zu of a short input: %zd", k,
					   gmfp_wire_decode(buf, k, NULL));
		free(buf);
		return 0;
	}
	for (k = 0; k < (size_t)n; k += 1 + k / 4)
		FUZZ_CHECK(gmfp_wire_decode(buf, k, &pm) == 0, "prefix %zu of a %zd-byte frame: %zd",
			   k, n, gmfp_wire_decode(buf, k, NULL));
	FUZZ_CHECK(gmfp_wire_decode(buf, (size_t)n - 1, NULL) == 0, "frame minus one byte");
	FUZZ_CHECK(m.length + GMFP_WIRE_HDR_SIZE == (uint64_t)n, "length %u, frame %zd",
		   m.length, n);
	FUZZ_CHECK(m.version == GMFP_WIRE_VERSION, "version %u", m.version);

	e = reencode(&m, buf, (size_t)n, out, sizeof(out));
	FUZZ_CHECK(e == n, "type %u: decoded %zd bytes, re-encoded %zd", m.type, n, e);
	if (m.type == GMFP_WIRE_HELLO) {
		/* what the encoder always writes: versions 1..1 */
		out[16] = buf[16], out[17] = buf[17];
		out[18] = buf[18], out[19] = buf[19];
	} else if (m.type == GMFP_WIRE_WELCOME) {
		out[16] = buf[16], out[17] = buf[17];
	} else if (m.type == GMFP_WIRE_BYE) {
		memcpy(out + 12, buf + 12, 4);
	}
	FUZZ_CHECK(!memcmp(out, buf, (size_t)n), "type %u: re-encoding differs", m.type);
	free(buf);
	return 0;
}
