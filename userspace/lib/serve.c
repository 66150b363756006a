// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * gmfp_wire_serve(): the serving side of the wire protocol, one connected
 * socket at a time, pages from any gmfp_source.
 *
 * The socket may be blocking or not: every recv()/send() is MSG_DONTWAIT
 * after a poll(), so that a peer that stops reading or stops in the middle
 * of a frame costs us at most the timeout, never a thread forever.  Between
 * frames, once the handshake is done, we wait as long as the peer likes: a
 * client keeps its connections open and idle while it has nothing to ask.
 * A caller that wants to end it from outside shuts the socket down, which
 * reads as EOF here.
 */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "gmfp_wire.h"
#include "internal.h"

#define SERVE_TIMEOUT_MS 30000
/* The biggest frame a client may send us: a HELLO with a full layout. */
#define RBUF_SIZE (GMFP_WIRE_HDR_SIZE + 20 + 8 * GMFP_WIRE_MAX_REGIONS)
#define WBUF_SIZE (GMFP_WIRE_HDR_SIZE + GMFP_WIRE_MAX_PAYLOAD)

struct serve {
	int fd;
	uint32_t timeout_ms;
	uint8_t channel;
	const struct gmfp_serve_opts *o;
	struct gmfp_sock_rbuf rb;	/* received, not yet consumed */
	uint8_t *wbuf;		/* one outgoing frame */
	uint8_t *pages;		/* what the source fills */
	uint64_t zero[GMFP_WIRE_MAX_PAGES / 64];
};

/* A reply, which gets the whole timeout to go out: 0 or -errno. */
static int send_all(struct serve *s, const void *buf, size_t len)
{
	return gmfp_sock_send_all(s->fd, buf, len, gmfp_sock_deadline(s->timeout_ms));
}

/*
 * The next whole frame, decoded into @m; returns its length (consume it
 * with gmfp_sock_consume()), 0 for EOF between frames, or -errno.  @idle:
 * no time limit while nothing of the next frame has arrived.
 */
static ssize_t read_frame(struct serve *s, struct gmfp_wire_msg *m, bool idle)
{
	return gmfp_sock_recv_frame(s->fd, &s->rb, m,
				    idle ? 0 : gmfp_sock_deadline(s->timeout_ms),
				    s->timeout_ms);
}

static int send_error(struct serve *s, uint32_t seq, uint32_t region,
		      uint64_t pgoff, uint32_t npages, int err)
{
	ssize_t n = gmfp_wire_encode_error(s->wbuf, WBUF_SIZE, seq, region, pgoff,
					   npages, err);

	return n < 0 ? (int)n : send_all(s, s->wbuf, (size_t)n);
}

/*
 * HELLO -> WELCOME.  Returns 1 when the connection is open for requests, 0
 * if the peer left before saying anything, -errno if we turned it away
 * (after telling it why with an ERROR frame where that makes sense).
 */
static int handshake(struct serve *s)
{
	const struct gmfp_serve_opts *o = s->o;
	struct gmfp_wire_msg m;
	ssize_t n;
	uint32_t seq;
	int err = 0;

	n = read_frame(s, &m, false);
	if (n == -EPROTONOSUPPORT) {
		/* a newer client may still read a version 1 ERROR: say why */
		send_error(s, 0, 0, 0, 0, EPROTONOSUPPORT);
		return (int)n;
	}
	if (n <= 0)
		return (int)n;
	if (m.type != GMFP_WIRE_HELLO)
		return -EBADMSG;
	seq = m.seq;
	if (m.u.hello.min_version > GMFP_WIRE_VERSION ||
	    m.u.hello.max_version < GMFP_WIRE_VERSION)
		err = EPROTONOSUPPORT;
	else if (m.u.hello.page_size != GMFP_PAGE_SIZE)
		err = EINVAL;
	else if (m.u.hello.nr_regions &&
		 !gmfp_wire_layout_is(&m, o->nr_regions, o->region_sizes))
		err = ENXIO;	/* the client expects a layout: not ours */
	s->channel = m.u.hello.channel;
	gmfp_sock_consume(&s->rb, (size_t)n);
	if (err) {
		send_error(s, seq, 0, 0, 0, err);
		return -err;
	}
	n = gmfp_wire_encode_welcome(s->wbuf, WBUF_SIZE, seq, o->nr_regions,
				     o->region_sizes);
	if (n < 0)
		return (int)n;
	err = send_all(s, s->wbuf, (size_t)n);
	return err ? err : 1;
}

static int serve_req(struct serve *s, const struct gmfp_wire_msg *m)
{
	const struct gmfp_serve_opts *o = s->o;
	uint32_t region = m->u.req.region, npages = m->u.req.npages;
	uint64_t pgoff = m->u.req.pgoff;
	uint32_t words = GMFP_DIV_ROUND_UP(npages, 64);
	struct gmfp_fetch f;
	ssize_t n;
	int r;

	/* outside the layout: the peer's mistake, answered, not fatal */
	if (!gmfp_wire_in_layout(o->nr_regions, o->region_sizes, region, pgoff,
				 npages))
		return send_error(s, m->seq, region, pgoff, npages, EINVAL);

	memset(s->zero, 0, sizeof(s->zero));
	memset(&f, 0, sizeof(f));
	f.region = region;
	f.flags = s->channel == GMFP_WIRE_CH_DEMAND ? GMFP_FETCH_DEMAND : 0;
	f.pgoff = pgoff;
	f.npages = npages;
	f.buf = s->pages;
	f.zero = s->zero;
	r = gmfp_source_fetch(o->src, &f);
	if (r) {
		/*
		 * gmfp_source_fetch() returns r < 0, but a callback source may
		 * return anything: what is not an errno (-INT_MIN among them)
		 * goes out as EIO, as a client takes it anyway.
		 */
		return send_error(s, m->seq, region, pgoff, npages,
				  r < 0 && r >= -4095 ? -r : EIO);
	}
	/* a source may leave junk above npages; the frame must not carry it */
	if (npages % 64)
		s->zero[words - 1] &= (1ull << (npages % 64)) - 1;
	n = gmfp_wire_encode_data(s->wbuf, WBUF_SIZE, m->seq, region, pgoff, npages,
				  s->zero, s->pages);
	if (n < 0)
		return (int)n;
	return send_all(s, s->wbuf, (size_t)n);
}

int gmfp_wire_serve(int sock, const struct gmfp_serve_opts *opts)
{
	struct gmfp_serve_opts o;
	struct gmfp_wire_msg m;
	struct serve *s;
	int r, one = 1;
	ssize_t n;

	if (sock < 0 || !opts)
		return -EINVAL;
	r = gmfp_opts_copy(&o, sizeof(o), opts);
	if (r)
		return r;
	if (!o.src || o.nr_regions > GMFP_WIRE_MAX_REGIONS ||
	    (o.nr_regions && !o.region_sizes))
		return -EINVAL;

	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->fd = sock;
	s->o = &o;
	s->timeout_ms = o.timeout_ms ? o.timeout_ms : SERVE_TIMEOUT_MS;
	s->rb.buf = malloc(RBUF_SIZE);
	s->rb.size = RBUF_SIZE;
	s->wbuf = malloc(WBUF_SIZE);
	s->pages = malloc((size_t)GMFP_WIRE_MAX_PAGES * GMFP_PAGE_SIZE);
	if (!s->rb.buf || !s->wbuf || !s->pages) {
		r = -ENOMEM;
		goto out;
	}
	/*
	 * Replies are whole frames written at once; Nagle would only hold a
	 * small one back until the peer's delayed ACK.  Not a TCP socket
	 * (a socketpair in a test, say): nothing to tune.
	 */
	setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

	r = handshake(s);
	if (r <= 0)
		goto out;
	for (;;) {
		n = read_frame(s, &m, true);
		if (n <= 0) {
			r = (int)n;
			break;
		}
		if (m.type == GMFP_WIRE_BYE) {
			r = 0;
			break;
		}
		/* anything but a REQ now is a peer that does not follow */
		r = m.type == GMFP_WIRE_REQ ? serve_req(s, &m) : -EBADMSG;
		if (r)
			break;
		gmfp_sock_consume(&s->rb, (size_t)n);
	}
out:
	free(s->pages);
	free(s->wbuf);
	free(s->rb.buf);
	free(s);
	return r;
}
