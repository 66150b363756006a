// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * The gmfp wire protocol: frame encoder and decoder (format in gmfp_wire.h).
 *
 * Every integer goes through byte loads and stores: a frame sits anywhere in
 * a receive buffer, with no particular alignment, and is little-endian
 * whatever the host is.  The decoder is fed bytes straight off a socket from
 * a peer we do not trust, so it reads nothing at or past @len, rejects a
 * frame as soon as its header shows that it can never be valid (so a peer
 * cannot make us wait for, or buffer, a megabyte of garbage), and accepts a
 * frame only if every byte of it is what the format says: there is exactly
 * one encoding of each message, and decode followed by encode gives back the
 * same bytes (tests/fuzz/fuzz_wire.c checks it) -- but for what our encoders
 * cannot say: the version range of a HELLO and the version of a WELCOME
 * (always 1 here) and the seq of a BYE (a peer's may have any; ours, 0).
 */
#include <errno.h>
#include <string.h>

#include "gmfp_wire.h"
#include "internal.h"

/* Fixed payload parts, before any variable array. */
#define HELLO_FIXED	20
#define WELCOME_FIXED	16
#define REQ_SIZE	16
#define DATA_FIXED	16
#define ERROR_SIZE	24
/* u32 page_size, u32 nr_regions, u32 pad: how HELLO and WELCOME end. */
#define LAYOUT_FIXED	12

static inline uint32_t zero_words(uint32_t npages)
{
	return GMFP_DIV_ROUND_UP(npages, 64);
}

/* Bits of the last bitmap word that name pages (all of them if a full word). */
static inline uint64_t last_word_mask(uint32_t npages)
{
	return npages % 64 ? (1ull << (npages % 64)) - 1 : ~0ull;
}

/* u32 region, u32 npages, u64 pgoff: how REQ, DATA and ERROR begin. */
static void get_range(const uint8_t *p, uint32_t *region, uint64_t *pgoff,
		      uint32_t *npages)
{
	*region = gmfp_get32(p);
	*npages = gmfp_get32(p + 4);
	*pgoff = gmfp_get64(p + 8);
}

static void put_range(uint8_t *p, uint32_t region, uint64_t pgoff, uint32_t npages)
{
	gmfp_put32(p, region);
	gmfp_put32(p + 4, npages);
	gmfp_put64(p + 8, pgoff);
}

/*
 * What the header alone tells about a payload of @length bytes for @type:
 * -EBADMSG if no frame of that type can be that long.  Fixed-size frames
 * are checked exactly; the variable ones as far as the header allows.
 */
static int check_length(uint8_t type, uint32_t length)
{
	switch (type) {
	case GMFP_WIRE_HELLO:
		if (length < HELLO_FIXED || (length - HELLO_FIXED) % 8 ||
		    (length - HELLO_FIXED) / 8 > GMFP_WIRE_MAX_REGIONS)
			return -EBADMSG;
		return 0;
	case GMFP_WIRE_WELCOME:
		if (length < WELCOME_FIXED || (length - WELCOME_FIXED) % 8 ||
		    (length - WELCOME_FIXED) / 8 > GMFP_WIRE_MAX_REGIONS)
			return -EBADMSG;
		return 0;
	case GMFP_WIRE_REQ:
		return length == REQ_SIZE ? 0 : -EBADMSG;
	case GMFP_WIRE_DATA:
		/* at least the fixed part and one bitmap word */
		return length >= DATA_FIXED + 8 ? 0 : -EBADMSG;
	case GMFP_WIRE_ERROR:
		return length == ERROR_SIZE ? 0 : -EBADMSG;
	case GMFP_WIRE_BYE:
		return length == 0 ? 0 : -EBADMSG;
	default:
		return -EBADMSG;
	}
}

/*
 * The tail HELLO and WELCOME share, at @p, @room bytes to the payload's
 * end: u32 page_size, u32 nr_regions, u32 pad = 0, u64 region_size[].  The
 * two use one layout of the union, so m->u.hello serves for either.
 */
static int decode_layout(const uint8_t *p, uint32_t room, struct gmfp_wire_msg *m)
{
	uint32_t nr = gmfp_get32(p + 4);

	if (gmfp_get32(p) != GMFP_PAGE_SIZE || gmfp_get32(p + 8))
		return -EBADMSG;
	/* nr is bounded first: 8 * nr cannot overflow */
	if (nr > GMFP_WIRE_MAX_REGIONS || room != LAYOUT_FIXED + 8 * nr)
		return -EBADMSG;
	m->u.hello.page_size = GMFP_PAGE_SIZE;
	m->u.hello.nr_regions = nr;
	m->u.hello.region_sizes = p + LAYOUT_FIXED;
	return 0;
}

static int decode_hello(const uint8_t *p, uint32_t length, struct gmfp_wire_msg *m)
{
	m->u.hello.min_version = gmfp_get16(p);
	m->u.hello.max_version = gmfp_get16(p + 2);
	m->u.hello.channel = p[4];
	if (p[5] || p[6] || p[7])
		return -EBADMSG;
	if (m->u.hello.channel != GMFP_WIRE_CH_DEMAND &&
	    m->u.hello.channel != GMFP_WIRE_CH_BACKGROUND)
		return -EBADMSG;
	return decode_layout(p + 8, length - 8, m);
}

static int decode_welcome(const uint8_t *p, uint32_t length, struct gmfp_wire_msg *m)
{
	m->u.welcome.min_version = m->u.welcome.max_version = gmfp_get16(p);
	if (gmfp_get16(p + 2))
		return -EBADMSG;
	return decode_layout(p + 4, length - 4, m);
}

static int decode_data(const uint8_t *p, uint32_t length, struct gmfp_wire_msg *m)
{
	const uint8_t *z = p + DATA_FIXED;
	uint32_t npages, words, i, nzero = 0;

	get_range(p, &m->u.data.region, &m->u.data.pgoff, &m->u.data.npages);
	npages = m->u.data.npages;
	if (npages < 1 || npages > GMFP_WIRE_MAX_PAGES)
		return -EBADMSG;
	words = zero_words(npages);
	/* the bitmap must be there before we look at it */
	if (length < DATA_FIXED + 8 * words)
		return -EBADMSG;
	for (i = 0; i < words; i++) {
		uint64_t w = gmfp_get64(z + 8 * i);

		if (i == words - 1 && (w & ~last_word_mask(npages)))
			return -EBADMSG;
		nzero += (uint32_t)__builtin_popcountll(w);
	}
	m->u.data.nr_data = npages - nzero;
	if ((uint64_t)length != DATA_FIXED + 8ull * words +
				(uint64_t)GMFP_PAGE_SIZE * m->u.data.nr_data)
		return -EBADMSG;
	m->u.data.zero = z;
	m->u.data.pages = z + 8 * words;
	return 0;
}

static int decode_error(const uint8_t *p, struct gmfp_wire_msg *m)
{
	get_range(p, &m->u.error.region, &m->u.error.pgoff, &m->u.error.npages);
	m->u.error.err = (int32_t)gmfp_get32(p + 16);
	/* npages 0: an ERROR that answers no REQ (a refused HELLO) */
	if (m->u.error.npages > GMFP_WIRE_MAX_PAGES || m->u.error.err <= 0 ||
	    gmfp_get32(p + 20))
		return -EBADMSG;
	return 0;
}

ssize_t gmfp_wire_decode(const void *buf, size_t len, struct gmfp_wire_msg *m)
{
	const uint8_t *p = buf, *pl = p + GMFP_WIRE_HDR_SIZE;
	struct gmfp_wire_msg d;
	uint32_t length;
	int r;

	if (len < GMFP_WIRE_HDR_SIZE)
		return 0;
	if (gmfp_get32(p) != GMFP_WIRE_MAGIC)
		return -EBADMSG;
	if (p[4] != GMFP_WIRE_VERSION)
		return -EPROTONOSUPPORT;
	if (gmfp_get16(p + 6))
		return -EBADMSG;
	if (p[5] < GMFP_WIRE_HELLO || p[5] > GMFP_WIRE_BYE)
		return -EBADMSG;
	length = gmfp_get32(p + 8);
	if (length > GMFP_WIRE_MAX_PAYLOAD)
		return -EMSGSIZE;
	r = check_length(p[5], length);
	if (r)
		return r;
	if (len - GMFP_WIRE_HDR_SIZE < length)
		return 0;

	/* Into a local copy: *m is left alone for a malformed frame. */
	memset(&d, 0, sizeof(d));
	d.type = p[5];
	d.version = p[4];
	d.length = length;
	d.seq = gmfp_get32(p + 12);
	switch (d.type) {
	case GMFP_WIRE_HELLO:
		r = decode_hello(pl, length, &d);
		break;
	case GMFP_WIRE_WELCOME:
		r = decode_welcome(pl, length, &d);
		break;
	case GMFP_WIRE_REQ:
		get_range(pl, &d.u.req.region, &d.u.req.pgoff, &d.u.req.npages);
		if (d.u.req.npages < 1 || d.u.req.npages > GMFP_WIRE_MAX_PAGES)
			r = -EBADMSG;
		break;
	case GMFP_WIRE_DATA:
		r = decode_data(pl, length, &d);
		break;
	case GMFP_WIRE_ERROR:
		r = decode_error(pl, &d);
		break;
	case GMFP_WIRE_BYE:
		break;
	}
	if (r)
		return r;
	if (m)
		*m = d;
	return GMFP_WIRE_HDR_SIZE + (ssize_t)length;
}

uint64_t gmfp_wire_region_size(const struct gmfp_wire_msg *m, uint32_t i)
{
	/* hello and welcome share one layout of the union */
	if (!m || (m->type != GMFP_WIRE_HELLO && m->type != GMFP_WIRE_WELCOME) ||
	    i >= m->u.hello.nr_regions || !m->u.hello.region_sizes)
		return 0;
	return gmfp_get64((const uint8_t *)m->u.hello.region_sizes + 8 * (size_t)i);
}

bool gmfp_wire_layout_is(const struct gmfp_wire_msg *m, uint32_t nr_regions,
			 const uint64_t *region_sizes)
{
	uint32_t i;

	if (m->u.hello.nr_regions != nr_regions)
		return false;
	for (i = 0; i < nr_regions; i++)
		if (gmfp_wire_region_size(m, i) != region_sizes[i])
			return false;
	return true;
}

bool gmfp_wire_in_layout(uint32_t nr_regions, const uint64_t *region_sizes,
			 uint32_t region, uint64_t pgoff, uint32_t npages)
{
	uint64_t pages;

	if (region >= nr_regions)
		return false;
	pages = region_sizes[region] / GMFP_PAGE_SIZE;
	/* not pgoff + npages > pages: that can wrap */
	return pgoff <= pages && npages <= pages - pgoff;
}

/*
 * Common start of every encoder: room for a @length byte payload, header
 * written.  Returns the frame size or -ENOSPC / -EINVAL.
 */
static ssize_t put_hdr(void *buf, size_t len, uint8_t type, uint32_t length,
		       uint32_t seq)
{
	uint8_t *p = buf;
	size_t need = GMFP_WIRE_HDR_SIZE + (size_t)length;

	if (!buf && len)
		return -EINVAL;
	if (len < need)
		return -ENOSPC;
	gmfp_put32(p, GMFP_WIRE_MAGIC);
	p[4] = GMFP_WIRE_VERSION;
	p[5] = type;
	gmfp_put16(p + 6, 0);
	gmfp_put32(p + 8, length);
	gmfp_put32(p + 12, seq);
	return (ssize_t)need;
}

static int check_layout(uint32_t nr_regions, const uint64_t *region_sizes)
{
	if (nr_regions > GMFP_WIRE_MAX_REGIONS || (nr_regions && !region_sizes))
		return -EINVAL;
	return 0;
}

/* The tail HELLO and WELCOME share: see decode_layout(). */
static void put_layout(uint8_t *p, uint32_t nr_regions, const uint64_t *region_sizes)
{
	uint32_t i;

	gmfp_put32(p, GMFP_PAGE_SIZE);
	gmfp_put32(p + 4, nr_regions);
	gmfp_put32(p + 8, 0);
	for (i = 0; i < nr_regions; i++)
		gmfp_put64(p + LAYOUT_FIXED + 8 * (size_t)i, region_sizes[i]);
}

/*
 * What HELLO and WELCOME have in common: the header, and the layout that
 * ends their @fixed byte fixed part.  The caller writes what comes before.
 */
static ssize_t put_layout_frame(void *buf, size_t len, uint8_t type, uint32_t fixed,
				uint32_t seq, uint32_t nr_regions,
				const uint64_t *region_sizes)
{
	uint8_t *p = buf;
	ssize_t n;

	if (check_layout(nr_regions, region_sizes))
		return -EINVAL;
	n = put_hdr(buf, len, type, fixed + 8 * nr_regions, seq);
	if (n < 0)
		return n;
	put_layout(p + GMFP_WIRE_HDR_SIZE + fixed - LAYOUT_FIXED, nr_regions,
		   region_sizes);
	return n;
}

ssize_t gmfp_wire_encode_hello(void *buf, size_t len, uint32_t seq,
			       uint8_t channel, uint32_t nr_regions,
			       const uint64_t *region_sizes)
{
	uint8_t *p = buf;
	ssize_t n;

	if (channel != GMFP_WIRE_CH_DEMAND && channel != GMFP_WIRE_CH_BACKGROUND)
		return -EINVAL;
	n = put_layout_frame(buf, len, GMFP_WIRE_HELLO, HELLO_FIXED, seq, nr_regions,
			     region_sizes);
	if (n < 0)
		return n;
	p += GMFP_WIRE_HDR_SIZE;
	/* this implementation speaks exactly version 1 */
	gmfp_put16(p, GMFP_WIRE_VERSION);
	gmfp_put16(p + 2, GMFP_WIRE_VERSION);
	p[4] = channel;
	p[5] = p[6] = p[7] = 0;
	return n;
}

ssize_t gmfp_wire_encode_welcome(void *buf, size_t len, uint32_t seq,
				 uint32_t nr_regions, const uint64_t *region_sizes)
{
	uint8_t *p = buf;
	ssize_t n;

	n = put_layout_frame(buf, len, GMFP_WIRE_WELCOME, WELCOME_FIXED, seq,
			     nr_regions, region_sizes);
	if (n < 0)
		return n;
	p += GMFP_WIRE_HDR_SIZE;
	gmfp_put16(p, GMFP_WIRE_VERSION);
	gmfp_put16(p + 2, 0);
	return n;
}

/* REQ, DATA and ERROR: the header and the range their payload starts with. */
static ssize_t put_range_frame(void *buf, size_t len, uint8_t type, uint32_t length,
			       uint32_t seq, uint32_t region, uint64_t pgoff,
			       uint32_t npages)
{
	uint8_t *p = buf;
	ssize_t n = put_hdr(buf, len, type, length, seq);

	if (n >= 0)
		put_range(p + GMFP_WIRE_HDR_SIZE, region, pgoff, npages);
	return n;
}

ssize_t gmfp_wire_encode_req(void *buf, size_t len, uint32_t seq, uint32_t region,
			     uint64_t pgoff, uint32_t npages)
{
	if (npages < 1 || npages > GMFP_WIRE_MAX_PAGES)
		return -EINVAL;
	return put_range_frame(buf, len, GMFP_WIRE_REQ, REQ_SIZE, seq, region, pgoff,
			       npages);
}

ssize_t gmfp_wire_encode_data(void *buf, size_t len, uint32_t seq, uint32_t region,
			      uint64_t pgoff, uint32_t npages, const uint64_t *zero,
			      const void *pages)
{
	const uint8_t *src = pages;
	uint32_t words, i, j, nzero = 0;
	uint8_t *p = buf, *out;
	ssize_t n;

	if (npages < 1 || npages > GMFP_WIRE_MAX_PAGES)
		return -EINVAL;
	words = zero_words(npages);
	if (zero) {
		/* stray bits past npages would make the frame malformed */
		if (zero[words - 1] & ~last_word_mask(npages))
			return -EINVAL;
		for (i = 0; i < words; i++)
			nzero += (uint32_t)__builtin_popcountll(zero[i]);
	}
	if (nzero < npages && !pages)
		return -EINVAL;
	n = put_range_frame(buf, len, GMFP_WIRE_DATA,
			    DATA_FIXED + 8 * words + GMFP_PAGE_SIZE * (npages - nzero),
			    seq, region, pgoff, npages);
	if (n < 0)
		return n;
	p += GMFP_WIRE_HDR_SIZE;
	for (i = 0; i < words; i++)
		gmfp_put64(p + DATA_FIXED + 8 * i, zero ? zero[i] : 0);

	/* the non-zero pages, one memcpy() per run of them */
	out = p + DATA_FIXED + 8 * words;
	for (i = 0; i < npages; i = j) {
		if (zero && (zero[i / 64] >> (i % 64) & 1)) {
			j = i + 1;
			continue;
		}
		for (j = i + 1; j < npages; j++)
			if (zero && (zero[j / 64] >> (j % 64) & 1))
				break;
		memcpy(out, src + (size_t)i * GMFP_PAGE_SIZE,
		       (size_t)(j - i) * GMFP_PAGE_SIZE);
		out += (size_t)(j - i) * GMFP_PAGE_SIZE;
	}
	return n;
}

ssize_t gmfp_wire_encode_error(void *buf, size_t len, uint32_t seq, uint32_t region,
			       uint64_t pgoff, uint32_t npages, int err)
{
	uint8_t *p = buf;
	ssize_t n;

	if (err <= 0 || npages > GMFP_WIRE_MAX_PAGES)
		return -EINVAL;
	n = put_range_frame(buf, len, GMFP_WIRE_ERROR, ERROR_SIZE, seq, region, pgoff,
			    npages);
	if (n < 0)
		return n;
	p += GMFP_WIRE_HDR_SIZE;
	gmfp_put32(p + 16, (uint32_t)err);
	gmfp_put32(p + 20, 0);
	return n;
}

ssize_t gmfp_wire_encode_bye(void *buf, size_t len)
{
	return put_hdr(buf, len, GMFP_WIRE_BYE, 0, 0);
}
