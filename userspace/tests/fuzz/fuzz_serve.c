// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * libFuzzer target: gmfp_wire_serve(), the serving side of the wire
 * protocol, fed a client's byte stream over a socketpair.
 *
 * The input sets up a layout (0-3 regions, page multiples or any size) and
 * a page source (zero pages, fetches that fail with any return value, junk
 * in the zero bitmap past the request), then is the stream a client sends.
 * A peer thread writes it, closes its sending side, and collects every byte
 * the server answers until the server is done.
 *
 * A model of the protocol, built on gmfp_wire_decode() of the same stream,
 * says what the server must do, and the run is checked against it:
 *  - the return value (0 after a BYE or an end of stream between frames;
 *    the decoder's error, -EBADMSG for an unexpected frame or one larger
 *    than a client may send, -ECONNRESET for an end inside a frame, the
 *    handshake refusals -EPROTONOSUPPORT / -ENXIO);
 *  - the answers, frame by frame: WELCOME with the layout, or ERROR with the
 *    reason; for each REQ, DATA with exactly the source's pages and zero
 *    bits (none past npages), or ERROR with the source's errno, or EINVAL
 *    outside the layout; nothing else, and nothing after.
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz.h"
#include "gmfp_wire.h"

#define PG GMFP_PAGE_SIZE
/* serve.c: the biggest frame it takes from a client */
#define SERVE_RBUF (GMFP_WIRE_HDR_SIZE + 20 + 8 * GMFP_WIRE_MAX_REGIONS)

struct cfg {
	uint32_t nr_regions;
	uint64_t sizes[3];
	uint32_t zero_mod, fail_mod;
	int fail_ret;
	bool junk;
};

static struct cfg C;

static int src_fetch(void *ctx, struct gmfp_fetch *f)
{
	uint8_t *b = f->buf;
	uint32_t i;

	(void)ctx;
	FUZZ_CHECK(f->region < C.nr_regions && f->npages >= 1 &&
		   f->npages <= GMFP_WIRE_MAX_PAGES, "fetch region %u npages %u", f->region,
		   f->npages);
	FUZZ_CHECK(f->pgoff <= C.sizes[f->region] / PG &&
		   f->npages <= C.sizes[f->region] / PG - f->pgoff, "fetch outside the layout");
	if (C.fail_mod && C.fail_ret)
		for (i = 0; i < f->npages; i++)
			if ((f->pgoff + i) % C.fail_mod == 0)
				return C.fail_ret;
	for (i = 0; i < f->npages; i++) {
		uint64_t pg = f->pgoff + i;

		if (C.zero_mod && pg % C.zero_mod == 0) {
			f->zero[i / 64] |= 1ull << (i % 64);
			memset(b + (size_t)i * PG, 0xee, PG);
		} else {
			fz_fill_page(b + (size_t)i * PG, f->region, pg);
		}
	}
	/* bits past the request: the frame must not carry them */
	if (C.junk)
		for (i = f->npages; i < (f->npages + 63) / 64 * 64; i++)
			f->zero[i / 64] |= 1ull << (i % 64);
	return 0;
}

struct peer {
	int fd;
	const uint8_t *out;
	size_t out_len;
	uint8_t *in;
	size_t in_len, in_cap;
};

/* The client: send the stream, read every answer until the server is done. */
static void *peer_main(void *arg)
{
	struct peer *p = arg;
	size_t sent = 0;
	bool shut = false;

	for (;;) {
		struct pollfd pfd = { .fd = p->fd, .events = POLLIN };
		ssize_t n;

		if (sent == p->out_len && !shut) {
			shutdown(p->fd, SHUT_WR);
			shut = true;
		}
		if (!shut)
			pfd.events |= POLLOUT;
		if (poll(&pfd, 1, -1) < 0)
			continue;
		if (pfd.revents & POLLOUT) {
			n = send(p->fd, p->out + sent, p->out_len - sent,
				 MSG_NOSIGNAL | MSG_DONTWAIT);
			if (n > 0)
				sent += (size_t)n;
			else if (n < 0 && errno != EAGAIN && errno != EINTR)
				sent = p->out_len;	/* the server stopped reading */
		}
		if (pfd.revents & (POLLIN | POLLHUP | POLLERR)) {
			if (p->in_cap - p->in_len < 65536) {
				p->in_cap = p->in_cap * 2 + 65536;
				p->in = realloc(p->in, p->in_cap);
				FUZZ_CHECK(p->in, "out of memory");
			}
			n = recv(p->fd, p->in + p->in_len, p->in_cap - p->in_len, MSG_DONTWAIT);
			if (n > 0)
				p->in_len += (size_t)n;
			else if (n == 0 || (errno != EAGAIN && errno != EINTR))
				return NULL;
		}
	}
}

/* The server's next answer, decoded: must be a whole, valid frame. */
static void next_answer(const struct peer *p, size_t *pos, struct gmfp_wire_msg *m)
{
	ssize_t n;

	FUZZ_CHECK(*pos < p->in_len, "an answer is missing");
	n = gmfp_wire_decode(p->in + *pos, p->in_len - *pos, m);
	FUZZ_CHECK(n > 0, "the server sent a bad frame: %zd", n);
	*pos += (size_t)n;
}

static void expect_error(const struct peer *p, size_t *pos, uint32_t seq, uint32_t region,
			 uint64_t pgoff, uint32_t npages, int err)
{
	struct gmfp_wire_msg m;

	next_answer(p, pos, &m);
	FUZZ_CHECK(m.type == GMFP_WIRE_ERROR && m.seq == seq && m.u.error.region == region &&
		   m.u.error.pgoff == pgoff && m.u.error.npages == npages && m.u.error.err == err,
		   "expected ERROR %d for seq %u, got type %u seq %u err %d", err, seq, m.type,
		   m.seq, m.type == GMFP_WIRE_ERROR ? m.u.error.err : 0);
}

static bool in_layout(uint32_t region, uint64_t pgoff, uint32_t npages)
{
	uint64_t pages;

	if (region >= C.nr_regions)
		return false;
	pages = C.sizes[region] / PG;
	return pgoff <= pages && npages <= pages - pgoff;
}

static void expect_data(const struct peer *p, size_t *pos, const struct gmfp_wire_msg *req)
{
	uint32_t region = req->u.req.region, npages = req->u.req.npages, i;
	const uint8_t *page, *zero;
	struct gmfp_wire_msg m;
	int e;

	if (!in_layout(region, req->u.req.pgoff, npages)) {
		expect_error(p, pos, req->seq, region, req->u.req.pgoff, npages, EINVAL);
		return;
	}
	e = 0;
	if (C.fail_mod && C.fail_ret)
		for (i = 0; i < npages; i++)
			if ((req->u.req.pgoff + i) % C.fail_mod == 0)
				e = C.fail_ret;
	if (e) {
		/* gmfp_source_fetch(): > 0 is -EIO; serve.c: below -4095 is no errno */
		if (e > 0 || e < -4095)
			e = -EIO;
		expect_error(p, pos, req->seq, region, req->u.req.pgoff, npages, -e);
		return;
	}
	next_answer(p, pos, &m);
	FUZZ_CHECK(m.type == GMFP_WIRE_DATA && m.seq == req->seq && m.u.data.region == region &&
		   m.u.data.pgoff == req->u.req.pgoff && m.u.data.npages == npages,
		   "expected DATA for seq %u, got type %u seq %u", req->seq, m.type, m.seq);
	zero = m.u.data.zero;
	page = m.u.data.pages;
	for (i = 0; i < npages; i++) {
		uint64_t pg = req->u.req.pgoff + i;
		bool z = zero[i / 8] >> (i % 8) & 1;

		FUZZ_CHECK(z == (C.zero_mod && pg % C.zero_mod == 0), "page %lu: zero bit %d",
			   (unsigned long)pg, z);
		if (z)
			continue;
		FUZZ_CHECK(fz_page_ok(page, region, pg, false), "page %lu: wrong contents",
			   (unsigned long)pg);
		page += PG;
	}
}

static uint32_t hdr_len(const uint8_t *p)
{
	return (uint32_t)p[8] | (uint32_t)p[9] << 8 | (uint32_t)p[10] << 16 |
	       (uint32_t)p[11] << 24;
}

/*
 * The next client frame as the server sees it: what gmfp_sock_recv_frame()
 * returns given the rest of the stream and the server's buffer size.
 */
static ssize_t next_frame(const uint8_t *s, size_t left, struct gmfp_wire_msg *m)
{
	ssize_t n = gmfp_wire_decode(s, left, m);

	if (n >= 0 && left >= GMFP_WIRE_HDR_SIZE &&
	    GMFP_WIRE_HDR_SIZE + (uint64_t)hdr_len(s) > SERVE_RBUF)
		return -EBADMSG;	/* can never fit: refused from the header */
	if (n == 0)
		return left ? -ECONNRESET : 0;	/* the stream ends inside a frame */
	return n;
}

/* What the server must have answered and returned for @s. */
static int model(const uint8_t *s, size_t len, const struct peer *p)
{
	struct gmfp_wire_msg m;
	size_t pos = 0, apos = 0;
	uint32_t i;
	ssize_t n;
	int r;

	n = next_frame(s, len, &m);
	if (n == -EPROTONOSUPPORT) {
		expect_error(p, &apos, 0, 0, 0, 0, EPROTONOSUPPORT);
		r = (int)n;
		goto out;
	}
	if (n <= 0) {
		r = (int)n;
		goto out;
	}
	if (m.type != GMFP_WIRE_HELLO) {
		r = -EBADMSG;
		goto out;
	}
	pos += (size_t)n;
	r = 0;
	if (m.u.hello.min_version > GMFP_WIRE_VERSION || m.u.hello.max_version < GMFP_WIRE_VERSION)
		r = EPROTONOSUPPORT;
	else if (m.u.hello.nr_regions) {
		bool same = m.u.hello.nr_regions == C.nr_regions;

		for (i = 0; same && i < C.nr_regions; i++)
			same = gmfp_wire_region_size(&m, i) == C.sizes[i];
		if (!same)
			r = ENXIO;
	}
	if (r) {
		expect_error(p, &apos, m.seq, 0, 0, 0, r);
		r = -r;
		goto out;
	}
	{
		struct gmfp_wire_msg w;
		uint32_t seq = m.seq;

		next_answer(p, &apos, &w);
		FUZZ_CHECK(w.type == GMFP_WIRE_WELCOME && w.seq == seq &&
			   w.u.welcome.min_version == GMFP_WIRE_VERSION &&
			   w.u.welcome.nr_regions == C.nr_regions, "bad WELCOME");
		for (i = 0; i < C.nr_regions; i++)
			FUZZ_CHECK(gmfp_wire_region_size(&w, i) == C.sizes[i], "WELCOME layout");
	}
	for (;;) {
		n = next_frame(s + pos, len - pos, &m);
		if (n <= 0) {
			r = (int)n;
			break;
		}
		pos += (size_t)n;
		if (m.type == GMFP_WIRE_BYE) {
			r = 0;
			break;
		}
		if (m.type != GMFP_WIRE_REQ) {
			r = -EBADMSG;
			break;
		}
		expect_data(p, &apos, &m);
	}
out:
	FUZZ_CHECK(apos == p->in_len, "%zu bytes of answers, %zu expected", p->in_len, apos);
	return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	GMFP_OPTS_INIT(struct gmfp_serve_opts, so);
	GMFP_OPTS_INIT(struct gmfp_source_ops, ops);
	struct gmfp_source *src;
	struct peer p;
	pthread_t t;
	struct fz in;
	uint8_t c0, *stream;
	size_t slen;
	uint32_t i;
	int sv[2], r, want;

	fz_init(&in, data, size);
	memset(&C, 0, sizeof(C));
	c0 = fz_u8(&in);
	C.nr_regions = c0 % 4;
	for (i = 0; i < C.nr_regions; i++) {
		uint32_t v = fz_u32(&in);

		/* mostly whole pages; sometimes any size (a page server's image) */
		C.sizes[i] = c0 & 0x80 ? v : (uint64_t)(1 + v % 4096) * PG;
	}
	C.zero_mod = fz_u8(&in) % 8;
	C.fail_mod = fz_u8(&in) % 64;
	C.fail_ret = (int)fz_u32(&in);
	C.junk = c0 & 0x40;
	slen = fz_left(&in);
	stream = fz_dup(data + in.pos, slen);

	ops.fetch = src_fetch;
	FUZZ_CHECK(!gmfp_source_new(&src, &ops, NULL), "source");
	FUZZ_CHECK(!socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), "socketpair");
	memset(&p, 0, sizeof(p));
	p.fd = sv[1];
	p.out = stream;
	p.out_len = slen;
	FUZZ_CHECK(!pthread_create(&t, NULL, peer_main, &p), "thread");
	so.src = src;
	so.nr_regions = C.nr_regions;
	so.region_sizes = C.sizes;
	so.timeout_ms = 5000;	/* the peer never stalls: only a bug waits */
	r = gmfp_wire_serve(sv[0], &so);
	shutdown(sv[0], SHUT_RDWR);
	pthread_join(t, NULL);
	close(sv[0]);
	close(sv[1]);

	want = model(stream, slen, &p);
	if (getenv("FUZZ_DEBUG"))
		fprintf(stderr, "serve: %d, %zu bytes of answers\n", r, p.in_len);
	FUZZ_CHECK(r == want, "gmfp_wire_serve() returned %d, the model says %d", r, want);
	free(p.in);
	free(stream);
	gmfp_source_destroy(src);
	return 0;
}
