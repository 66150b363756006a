// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * gmfp_source_tcp(): pages from a peer speaking the gmfp wire protocol.
 *
 * A fixed set of connections in two classes, demand and background, so that
 * a vCPU's fault never queues behind a background transfer on the same
 * stream; the server serves the demand channel first.  A connection carries
 * one request at a time (no pipelining): whoever holds it sends a REQ and
 * reads its answer, so any byte that is not exactly the answer to that REQ
 * means the stream can no longer be trusted.  Then the connection is closed
 * and the fetch fails; the next fetch on it connects again.  This is the
 * fail-closed half of the engine's contract: success is returned only for a
 * frame that the decoder accepted whole and that answers this very request.
 */
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gmfp_wire.h"
#include "internal.h"

#define TCP_TIMEOUT_MS		5000
#define TCP_CONNECT_TIMEOUT_MS	2000
#define TCP_MAX_CONNS		64	/* per class; more is a bug, not a plan */
/* Room for any frame the decoder can ask us to wait for. */
#define RBUF_SIZE (GMFP_WIRE_HDR_SIZE + GMFP_WIRE_MAX_PAYLOAD)

enum { CLS_DEMAND, CLS_BACKGROUND };

struct tcp_conn {
	pthread_mutex_t lock;	/* held for a whole exchange */
	bool busy;		/* under tcp_src.lock: picked by a fetch */
	uint8_t channel;
	uint8_t cls;
	bool connected_once;
	int fd;			/* -1: not connected */
	uint32_t seq;		/* of the last REQ */
	struct gmfp_sock_rbuf rb;	/* buf allocated at the first connect */
};

struct tcp_src {
	struct gmfp_source *src;	/* for the reconnect counter */
	char *host, *port;
	uint32_t timeout_ms, connect_timeout_ms;
	uint32_t nr_regions;
	uint64_t *region_sizes;

	pthread_mutex_t lock;		/* the busy flags */
	pthread_cond_t cond[2];		/* per class: a connection was put back */
	/* conns[0, nr_demand) are demand, conns[nr_demand, nr_conns) background */
	uint32_t nr_demand, nr_conns;
	struct tcp_conn conns[];
};

static void conn_close(struct tcp_conn *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->rb.len = 0;
}

/*
 * Send the frame @buf and read the one that answers it into @m, both by
 * @deadline: the answer's length (consume it with gmfp_sock_consume()), or
 * -errno.  The peer going away is -ECONNRESET whichever way we notice it:
 * EPIPE on send, or EOF, which is never orderly while an answer is due.
 */
static ssize_t conn_ask(struct tcp_conn *c, const void *buf, size_t len,
			struct gmfp_wire_msg *m, uint64_t deadline)
{
	int r = gmfp_sock_send_all(c->fd, buf, len, deadline);
	ssize_t n;

	if (r)
		return r == -EPIPE ? -ECONNRESET : r;
	n = gmfp_sock_recv_frame(c->fd, &c->rb, m, deadline, 0);
	return n ? n : -ECONNRESET;
}

static int gai_errno(int e)
{
	switch (e) {
	case EAI_MEMORY:
		return -ENOMEM;
	case EAI_AGAIN:
		return -EAGAIN;
	case EAI_SYSTEM:
		return errno ? -errno : -EIO;
	default:
		return -EHOSTUNREACH;	/* no such host or service */
	}
}

/* A connected non-blocking TCP socket to host:port, or -errno. */
static int tcp_connect(const struct tcp_src *t)
{
	struct addrinfo hints, *res, *ai;
	uint64_t deadline = gmfp_sock_deadline(t->connect_timeout_ms);
	int fd = -ECONNREFUSED, r;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_protocol = IPPROTO_TCP;
	r = getaddrinfo(t->host, t->port, &hints, &res);
	if (r)
		return gai_errno(r);
	for (ai = res; ai; ai = ai->ai_next) {
		int s, soerr = 0;
		socklen_t sl = sizeof(soerr);

		s = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
			   ai->ai_protocol);
		if (s < 0) {
			fd = -errno;
			continue;
		}
		if (connect(s, ai->ai_addr, ai->ai_addrlen) == 0) {
			fd = s;
			break;
		}
		/* EINTR: a non-blocking connect goes on in the background */
		if (errno == EINPROGRESS || errno == EINTR) {
			r = gmfp_sock_wait(s, POLLOUT, deadline);
			if (!r && getsockopt(s, SOL_SOCKET, SO_ERROR, &soerr, &sl))
				r = -errno;
			else if (!r)
				r = -soerr;
			if (!r) {
				fd = s;
				break;
			}
		} else {
			r = -errno;
		}
		close(s);
		fd = r;
		if (r == -ETIMEDOUT)	/* the time for this attempt is up */
			break;
	}
	freeaddrinfo(res);
	return fd;
}

/*
 * The -errno an ERROR frame stands for.  Its err is a positive errno by the
 * format, but the decoder takes any positive i32 and the peer is not
 * trusted: anything above the errno range (found by tests/fuzz/fuzz_tcp.c,
 * -11069 came back from a fetch) is -EIO, so that our callers only ever see
 * real errnos.
 */
static int peer_errno(int32_t err)
{
	return err > 0 && err <= 4095 ? -err : -EIO;
}

/* Connect and shake hands: 0 with c->fd open, or -errno with it closed. */
static int conn_open(struct tcp_src *t, struct tcp_conn *c)
{
	struct gmfp_wire_msg m;
	ssize_t n;
	int r, one = 1;

	if (!c->rb.buf) {
		c->rb.buf = malloc(RBUF_SIZE);
		if (!c->rb.buf)
			return -ENOMEM;
		c->rb.size = RBUF_SIZE;
	}
	r = tcp_connect(t);
	if (r < 0)
		return r;
	c->fd = r;
	c->rb.len = 0;
	/* one small REQ at a time: Nagle would only add a delayed-ACK wait */
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

	/* the receive buffer is empty: build the HELLO in it */
	n = gmfp_wire_encode_hello(c->rb.buf, RBUF_SIZE, 0, c->channel, t->nr_regions,
				   t->region_sizes);
	if (n >= 0)
		n = conn_ask(c, c->rb.buf, (size_t)n, &m,
			     gmfp_sock_deadline(t->timeout_ms));
	if (n < 0) {
		r = (int)n;
		goto fail;
	}
	if (m.type == GMFP_WIRE_ERROR && m.seq == 0)
		r = peer_errno(m.u.error.err);	/* turned away, e.g. -ENXIO */
	else if (m.type != GMFP_WIRE_WELCOME || m.seq != 0 ||
		 m.u.welcome.min_version != GMFP_WIRE_VERSION)
		r = -EBADMSG;
	else if (t->nr_regions &&
		 !gmfp_wire_layout_is(&m, t->nr_regions, t->region_sizes))
		r = -ENXIO;	/* the server must have exactly the memory we have */
	else
		r = 0;
	if (r)
		goto fail;
	gmfp_sock_consume(&c->rb, (size_t)n);
	if (c->connected_once)
		gmfp_source_count_reconnect(t->src);
	c->connected_once = true;
	return 0;
fail:
	conn_close(c);
	return r;
}

/*
 * Anything that arrives on a connection nobody has asked anything of (the
 * server's BYE, its EOF, a reset, stray bytes) means it cannot be used as
 * it is: close it, so that the fetch at hand connects afresh instead of
 * failing on it.
 */
static void conn_check_idle(struct tcp_conn *c)
{
	struct pollfd pfd = { .fd = c->fd, .events = POLLIN };

	if (c->rb.len || poll(&pfd, 1, 0) > 0)
		conn_close(c);
}

/* Copy a DATA frame that answers @f into it. */
static void fill(struct gmfp_fetch *f, const struct gmfp_wire_msg *m)
{
	const uint8_t *z = m->u.data.zero, *src = m->u.data.pages;
	uint8_t *dst = f->buf;
	uint32_t i, w, words = GMFP_DIV_ROUND_UP(f->npages, 64);

	for (w = 0; w < words; w++) {
		uint64_t v = 0;

		for (i = 0; i < 8; i++)
			v |= (uint64_t)z[8 * w + i] << (8 * i);
		if (f->zero)
			f->zero[w] = v;
		for (i = 0; i < 64 && 64 * w + i < f->npages; i++) {
			uint8_t *page = dst + (size_t)(64 * w + i) * GMFP_PAGE_SIZE;

			if (v >> i & 1) {
				/* nobody to tell that it is zero: make it so */
				if (!f->zero)
					memset(page, 0, GMFP_PAGE_SIZE);
				continue;
			}
			memcpy(page, src, GMFP_PAGE_SIZE);
			src += GMFP_PAGE_SIZE;
		}
	}
}

/* One REQ and its answer on @c, connecting first if need be. */
static int conn_exchange(struct tcp_src *t, struct tcp_conn *c, struct gmfp_fetch *f)
{
	uint8_t req[GMFP_WIRE_HDR_SIZE + 16];
	struct gmfp_wire_msg m;
	ssize_t n;
	int r;

	if (c->fd >= 0)
		conn_check_idle(c);
	if (c->fd < 0) {
		r = conn_open(t, c);
		if (r)
			return r;
	}
	c->seq++;
	n = gmfp_wire_encode_req(req, sizeof(req), c->seq, f->region, f->pgoff,
				 f->npages);
	if (n < 0)
		return (int)n;
	n = conn_ask(c, req, (size_t)n, &m, gmfp_sock_deadline(t->timeout_ms));
	if (n < 0) {
		r = (int)n;
		goto fail;
	}
	switch (m.type) {
	case GMFP_WIRE_DATA:
		if (m.seq != c->seq || m.u.data.region != f->region ||
		    m.u.data.pgoff != f->pgoff || m.u.data.npages != f->npages) {
			r = -EBADMSG;
			goto fail;
		}
		fill(f, &m);
		r = 0;
		break;
	case GMFP_WIRE_ERROR:
		if (m.seq != c->seq || m.u.error.region != f->region ||
		    m.u.error.pgoff != f->pgoff || m.u.error.npages != f->npages) {
			r = -EBADMSG;
			goto fail;
		}
		/* the server could not serve it: the stream itself is fine */
		r = peer_errno(m.u.error.err);
		break;
	case GMFP_WIRE_BYE:
		r = -ECONNRESET;
		goto fail;
	default:
		r = -EBADMSG;
		goto fail;
	}
	gmfp_sock_consume(&c->rb, (size_t)n);
	return r;
fail:
	conn_close(c);
	return r;
}

/* A free connection of the class @demand asks for (or of the other, if
 * that class has none), waiting for one if all are busy. */
static struct tcp_conn *conn_get(struct tcp_src *t, bool demand)
{
	uint32_t lo = 0, hi = t->nr_conns, i;
	unsigned int cls;

	if (demand && t->nr_demand)
		hi = t->nr_demand;
	else if (!demand && t->nr_conns > t->nr_demand)
		lo = t->nr_demand;
	cls = t->conns[lo].cls;	/* with no class of its own: all one class */

	pthread_mutex_lock(&t->lock);
	for (;;) {
		for (i = lo; i < hi; i++) {
			if (!t->conns[i].busy) {
				t->conns[i].busy = true;
				pthread_mutex_unlock(&t->lock);
				return &t->conns[i];
			}
		}
		pthread_cond_wait(&t->cond[cls], &t->lock);
	}
}

static void conn_put(struct tcp_src *t, struct tcp_conn *c)
{
	pthread_mutex_lock(&t->lock);
	c->busy = false;
	/*
	 * Everyone who waits on this class's condition variable can use @c
	 * (a fetch whose class has no connections waits on the other's), so
	 * one wakeup for one connection is enough.
	 */
	pthread_cond_signal(&t->cond[c->cls]);
	pthread_mutex_unlock(&t->lock);
}

static int tcp_fetch(void *ctx, struct gmfp_fetch *f)
{
	struct tcp_src *t = ctx;
	struct tcp_conn *c;
	int r;

	if (f->npages < 1 || f->npages > GMFP_WIRE_MAX_PAGES)
		return -EINVAL;
	/* outside the layout: no need to ask the server to say so */
	if (t->nr_regions && !gmfp_wire_in_layout(t->nr_regions, t->region_sizes,
						  f->region, f->pgoff, f->npages))
		return -EINVAL;
	c = conn_get(t, f->flags & GMFP_FETCH_DEMAND);
	pthread_mutex_lock(&c->lock);
	r = conn_exchange(t, c, f);
	pthread_mutex_unlock(&c->lock);
	conn_put(t, c);
	return r;
}

static void tcp_destroy(void *ctx)
{
	struct tcp_src *t = ctx;
	uint8_t bye[GMFP_WIRE_HDR_SIZE];
	uint32_t i;

	gmfp_wire_encode_bye(bye, sizeof(bye));
	for (i = 0; i < t->nr_conns; i++) {
		struct tcp_conn *c = &t->conns[i];

		/* best effort: a server that does not read it sees EOF anyway */
		if (c->fd >= 0)
			(void)send(c->fd, bye, sizeof(bye), MSG_NOSIGNAL | MSG_DONTWAIT);
		conn_close(c);
		free(c->rb.buf);
		pthread_mutex_destroy(&c->lock);
	}
	pthread_cond_destroy(&t->cond[0]);
	pthread_cond_destroy(&t->cond[1]);
	pthread_mutex_destroy(&t->lock);
	free(t->region_sizes);
	free(t->host);
	free(t->port);
	free(t);
}

int gmfp_source_tcp(struct gmfp_source **out, const struct gmfp_tcp_opts *opts)
{
	struct gmfp_source_ops ops;
	struct gmfp_tcp_opts o;
	struct tcp_src *t;
	uint32_t i, n;
	int r;

	if (!out)
		return -EINVAL;
	*out = NULL;
	if (!opts)
		return -EINVAL;	/* a port is needed at least */
	r = gmfp_opts_copy(&o, sizeof(o), opts);
	if (r)
		return r;
	if (!o.port || !*o.port || o.nr_regions > GMFP_WIRE_MAX_REGIONS ||
	    (o.nr_regions && !o.region_sizes))
		return -EINVAL;
	/* Both 0: the defaults; one 0: that class shares the other's. */
	if (!o.demand_conns && !o.background_conns)
		o.demand_conns = o.background_conns = 1;
	if (o.demand_conns > TCP_MAX_CONNS || o.background_conns > TCP_MAX_CONNS)
		return -EINVAL;
	n = o.demand_conns + o.background_conns;

	t = calloc(1, sizeof(*t) + n * sizeof(t->conns[0]));
	if (!t)
		return -ENOMEM;
	t->host = strdup(o.host && *o.host ? o.host : "127.0.0.1");
	t->port = strdup(o.port);
	t->nr_regions = o.nr_regions;
	if (o.nr_regions) {
		t->region_sizes = malloc(o.nr_regions * sizeof(uint64_t));
		if (t->region_sizes)
			memcpy(t->region_sizes, o.region_sizes,
			       o.nr_regions * sizeof(uint64_t));
	}
	if (!t->host || !t->port || (o.nr_regions && !t->region_sizes)) {
		free(t->region_sizes);
		free(t->host);
		free(t->port);
		free(t);
		return -ENOMEM;
	}
	t->timeout_ms = o.timeout_ms ? o.timeout_ms : TCP_TIMEOUT_MS;
	t->connect_timeout_ms = o.connect_timeout_ms ? o.connect_timeout_ms :
				TCP_CONNECT_TIMEOUT_MS;
	t->nr_demand = o.demand_conns;
	t->nr_conns = n;
	pthread_mutex_init(&t->lock, NULL);
	pthread_cond_init(&t->cond[0], NULL);
	pthread_cond_init(&t->cond[1], NULL);
	for (i = 0; i < n; i++) {
		struct tcp_conn *c = &t->conns[i];

		pthread_mutex_init(&c->lock, NULL);
		c->fd = -1;
		c->cls = i < t->nr_demand ? CLS_DEMAND : CLS_BACKGROUND;
		c->channel = i < t->nr_demand ? GMFP_WIRE_CH_DEMAND :
						GMFP_WIRE_CH_BACKGROUND;
	}

	memset(&ops, 0, sizeof(ops));
	ops.sz = sizeof(ops);
	ops.fetch = tcp_fetch;
	ops.destroy = tcp_destroy;
	ops.max_pages = GMFP_WIRE_MAX_PAGES;
	r = gmfp_source_new(out, &ops, t);
	if (r) {
		tcp_destroy(t);
		return r;
	}
	t->src = *out;
	return 0;
}
