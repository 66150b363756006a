// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * gmfp_source_tcp() against gmfp_wire_serve() on loopback, against
 * hand-written hostile servers, and gmfp_wire_serve() against a hand-written
 * client on a socketpair.
 *
 * Assertions only on the test's main thread (cmocka longjmps); server and
 * worker threads count what they saw in atomics.  Every wait is bounded:
 * request timeouts are a few hundred milliseconds, and script servers give
 * up after a few seconds of silence.  Also run under TSan.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include "unit.h"
#include "gmfp_wire.h"

#define PS GMFP_PAGE_SIZE
#define MAX_FRAME (GMFP_WIRE_HDR_SIZE + GMFP_WIRE_MAX_PAYLOAD)
#define MAX_SRV_CONNS 32

static const uint64_t layout[2] = { 1ull << 20, 512ull << 10 };	/* 256, 128 pages */

/* ---- the page contents everyone agrees on ---- */

static bool page_is_zero(uint64_t pg)
{
	return pg % 7 == 3;
}

/* Page @pg of @region: every 8-byte word says where it is. */
static void pattern(uint8_t *p, uint32_t region, uint64_t pg)
{
	uint64_t j;

	for (j = 0; j < PS / 8; j++) {
		uint64_t v = ((uint64_t)region << 48) ^ (pg << 12) ^ j ^
			     0xa5a5000000000000ull;

		memcpy(p + 8 * j, &v, 8);
	}
}

/* How many pages of a fetch that returned 0 are not what they should be. */
static unsigned int bad_pages(const struct gmfp_fetch *f)
{
	uint8_t want[PS];
	unsigned int bad = 0;
	uint32_t i;

	for (i = 0; i < f->npages; i++) {
		const uint8_t *got = (const uint8_t *)f->buf + (size_t)i * PS;
		uint64_t pg = f->pgoff + i;
		bool zbit = f->zero && (f->zero[i / 64] >> (i % 64) & 1);

		if (page_is_zero(pg)) {
			if (f->zero) {
				bad += !zbit;
				continue;
			}
			memset(want, 0, PS);
		} else {
			if (zbit) {
				bad++;
				continue;
			}
			pattern(want, f->region, pg);
		}
		bad += memcmp(got, want, PS) != 0;
	}
	return bad;
}

/* ---- the server's page source ---- */

struct pat_src {
	_Atomic unsigned int demand, background;	/* fetches by flag */
	_Atomic int drop;	/* shut the connection down in the next fetch */
	_Atomic int ret;	/* non-zero: what the next fetch returns */
};

/* The connection the current server thread serves (for drop). */
static __thread int cur_fd = -1;

static int pat_fetch(void *ctx, struct gmfp_fetch *f)
{
	struct pat_src *p = ctx;
	uint32_t i;
	int ret;

	if (f->flags & GMFP_FETCH_DEMAND)
		atomic_fetch_add(&p->demand, 1);
	else
		atomic_fetch_add(&p->background, 1);
	if (atomic_exchange(&p->drop, 0)) {
		/* the server going away in the middle of a request */
		shutdown(cur_fd, SHUT_RDWR);
		return -EIO;
	}
	ret = atomic_exchange(&p->ret, 0);
	if (ret)
		return ret;
	for (i = 0; i < f->npages; i++)
		if (f->pgoff + i == 666)
			return -EIO;
	for (i = 0; i < f->npages; i++) {
		uint8_t *page = (uint8_t *)f->buf + (size_t)i * PS;

		if (page_is_zero(f->pgoff + i)) {
			f->zero[i / 64] |= 1ull << (i % 64);
			memset(page, 0xee, PS);	/* ignored: must not be sent */
		} else {
			pattern(page, f->region, f->pgoff + i);
		}
	}
	return 0;
}

static struct gmfp_source *pat_source(struct pat_src *p)
{
	struct gmfp_source_ops ops = { .sz = sizeof(ops), .fetch = pat_fetch };
	struct gmfp_source *s;

	memset(p, 0, sizeof(*p));
	assert_int_equal(gmfp_source_new(&s, &ops, p), 0);
	return s;
}

/* ---- a loopback server: gmfp_wire_serve() or a script per connection ---- */

enum mode {
	M_SERVE,		/* gmfp_wire_serve() */
	M_SILENT,		/* handshake, then never answers */
	M_WRONG_SEQ,		/* DATA with another seq */
	M_WRONG_PGOFF,		/* DATA for another pgoff */
	M_WRONG_REGION,
	M_WRONG_NPAGES,
	M_ERROR_WRONG_SEQ,	/* ERROR with another seq */
	M_OVERSIZE,		/* a header with a length past the maximum */
	M_GARBAGE,		/* not a frame at all */
	M_BYE,			/* BYE instead of an answer */
	M_BAD_BITMAP,		/* DATA whose bitmap does not match its length */
	M_TRUNC_CLOSE,		/* half a DATA, then EOF */
	M_TRUNC_HANG,		/* half a DATA, then silence */
	M_WELCOME_LAYOUT,	/* WELCOME with another layout */
	M_WELCOME_NOT,		/* a REQ instead of a WELCOME */
	M_DOUBLE,		/* the answer, then an unsolicited second one */
	M_CHUNKED,		/* the answer in 7-byte pieces */
	M_ERROR_NOT_ERRNO,	/* ERROR whose err is above the errno range */
};

struct server;

struct srv_conn {
	struct server *s;
	int fd;
	pthread_t th;
	_Atomic bool done;
	int rc;			/* gmfp_wire_serve()'s, read after join */
};

struct server {
	int lfd;
	char port[16];
	enum mode mode;
	struct gmfp_source *src;
	uint32_t nr_regions;
	const uint64_t *sizes;
	uint32_t timeout_ms;
	pthread_t acceptor;
	pthread_mutex_t lock;
	bool stopping;
	int nconn;
	struct srv_conn conns[MAX_SRV_CONNS];
	_Atomic int accepted;
	struct pat_src *pat;	/* pat_server(): src counts here; both go with s */
};

/* Read one whole frame from a script's connection, 3 s at most. */
static ssize_t s_read(int fd, uint8_t *buf, size_t *len, size_t cap,
		      struct gmfp_wire_msg *m)
{
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t n = gmfp_wire_decode(buf, *len, m);

		if (n)
			return n;
		if (poll(&p, 1, 3000) <= 0)
			return -ETIMEDOUT;
		n = recv(fd, buf + *len, cap - *len, 0);
		if (n <= 0)
			return -ECONNRESET;
		*len += (size_t)n;
	}
}

static void s_consume(uint8_t *buf, size_t *len, size_t n)
{
	*len -= n;
	memmove(buf, buf + n, *len);
}

static void s_send(int fd, const void *p, size_t n)
{
	const uint8_t *b = p;

	while (n) {
		ssize_t k = send(fd, b, n, MSG_NOSIGNAL);

		if (k <= 0)
			return;
		b += k;
		n -= (size_t)k;
	}
}

/* Until the client goes away (or 5 s pass). */
static void s_drain(int fd)
{
	uint8_t b[256];

	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };

		if (poll(&p, 1, 5000) <= 0 || recv(fd, b, sizeof(b), 0) <= 0)
			return;
	}
}

/* A DATA frame with these fields, with the pages everyone agrees on. */
static ssize_t s_data(uint8_t *out, uint32_t seq, uint32_t region, uint64_t pgoff,
		      uint32_t npages)
{
	uint8_t *pages = malloc((size_t)GMFP_WIRE_MAX_PAGES * PS);
	uint64_t zero[4] = { 0 };
	uint32_t i;
	ssize_t n;

	for (i = 0; i < npages; i++) {
		if (page_is_zero(pgoff + i))
			zero[i / 64] |= 1ull << (i % 64);
		else
			pattern(pages + (size_t)i * PS, region, pgoff + i);
	}
	n = gmfp_wire_encode_data(out, MAX_FRAME, seq, region, pgoff, npages, zero,
				  pages);
	free(pages);
	return n;
}

static void script(struct server *s, int fd)
{
	size_t cap = 64 << 10, len = 0;
	uint8_t *in = malloc(cap), *out = malloc(2 * MAX_FRAME);
	static const char garbage[] = "HTTP/1.1 400 Bad Request\r\n\r\nnot a gmfp frame";
	struct gmfp_wire_msg m;
	uint64_t other[2] = { layout[0], layout[1] + PS };
	uint32_t seq, region, npages, i;
	uint64_t pgoff;
	ssize_t n;

	if (!in || !out)
		goto out;
	n = s_read(fd, in, &len, cap, &m);
	if (n <= 0 || m.type != GMFP_WIRE_HELLO)
		goto out;
	seq = m.seq;
	s_consume(in, &len, (size_t)n);
	if (s->mode == M_WELCOME_LAYOUT)
		n = gmfp_wire_encode_welcome(out, MAX_FRAME, seq, 2, other);
	else if (s->mode == M_WELCOME_NOT)
		n = gmfp_wire_encode_req(out, MAX_FRAME, seq, 0, 0, 1);
	else
		n = gmfp_wire_encode_welcome(out, MAX_FRAME, seq, s->nr_regions, s->sizes);
	s_send(fd, out, (size_t)n);
	if (s->mode == M_WELCOME_LAYOUT || s->mode == M_WELCOME_NOT)
		goto drain;

	n = s_read(fd, in, &len, cap, &m);
	if (n <= 0 || m.type != GMFP_WIRE_REQ)
		goto out;
	s_consume(in, &len, (size_t)n);
	seq = m.seq;
	region = m.u.req.region;
	pgoff = m.u.req.pgoff;
	npages = m.u.req.npages;
	/* the answer, as the mode has it, into out[0, n) */
	n = 0;
	switch (s->mode) {
	case M_WRONG_SEQ:
		n = s_data(out, seq + 1, region, pgoff, npages);
		break;
	case M_WRONG_PGOFF:
		n = s_data(out, seq, region, pgoff + 1, npages);
		break;
	case M_WRONG_REGION:
		n = s_data(out, seq, region + 1, pgoff, npages);
		break;
	case M_WRONG_NPAGES:
		n = s_data(out, seq, region, pgoff, npages - 1);
		break;
	case M_ERROR_WRONG_SEQ:
		n = gmfp_wire_encode_error(out, MAX_FRAME, seq + 1, region, pgoff,
					   npages, EIO);
		break;
	case M_ERROR_NOT_ERRNO:
		n = gmfp_wire_encode_error(out, MAX_FRAME, seq, region, pgoff, npages,
					   11069);
		break;
	case M_OVERSIZE:
		n = s_data(out, seq, region, pgoff, npages);
		out[8] = out[9] = out[10] = out[11] = 0xff;
		break;
	case M_GARBAGE:
		memcpy(out, garbage, sizeof(garbage));
		n = sizeof(garbage);
		break;
	case M_BYE:
		n = gmfp_wire_encode_bye(out, MAX_FRAME);
		break;
	case M_BAD_BITMAP:
		/* page 0 claimed zero: the length no longer matches */
		n = s_data(out, seq, region, pgoff, npages);
		out[32] ^= 1;
		break;
	case M_TRUNC_CLOSE:
	case M_TRUNC_HANG:
		n = s_data(out, seq, region, pgoff, npages) / 2;
		break;
	case M_DOUBLE:
		/* both in one send(): there before the client's next fetch */
		n = s_data(out, seq, region, pgoff, npages);
		n += s_data(out + n, seq + 1, region, pgoff, npages);
		break;
	case M_CHUNKED:
		n = s_data(out, seq, region, pgoff, npages);
		for (i = 0; i < (uint32_t)n; i += 7) {
			s_send(fd, out + i, (uint32_t)n - i < 7 ? (uint32_t)n - i : 7);
			if (i % 700 == 0)
				sched_yield();
		}
		n = 0;		/* sent */
		break;
	default:		/* M_SILENT */
		break;
	}
	s_send(fd, out, (size_t)n);
	if (s->mode == M_TRUNC_CLOSE)
		shutdown(fd, SHUT_WR);
drain:
	s_drain(fd);
out:
	free(in);
	free(out);
}

static void *conn_main(void *arg)
{
	struct srv_conn *c = arg;
	struct server *s = c->s;

	cur_fd = c->fd;
	if (s->mode == M_SERVE) {
		struct gmfp_serve_opts o = {
			.sz = sizeof(o), .src = s->src, .nr_regions = s->nr_regions,
			.region_sizes = s->sizes, .timeout_ms = s->timeout_ms,
		};

		c->rc = gmfp_wire_serve(c->fd, &o);
	} else {
		script(s, c->fd);
	}
	atomic_store(&c->done, true);
	return NULL;
}

static void *acceptor_main(void *arg)
{
	struct server *s = arg;

	for (;;) {
		int fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);
		struct srv_conn *c;

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			return NULL;	/* shut down: we are stopping */
		}
		pthread_mutex_lock(&s->lock);
		if (s->stopping || s->nconn == MAX_SRV_CONNS) {
			pthread_mutex_unlock(&s->lock);
			close(fd);
			continue;
		}
		c = &s->conns[s->nconn];
		c->s = s;
		c->fd = fd;
		atomic_store(&c->done, false);
		/* counted first: the thread may answer before we go on */
		atomic_fetch_add(&s->accepted, 1);
		if (pthread_create(&c->th, NULL, conn_main, c)) {
			atomic_fetch_sub(&s->accepted, 1);
			close(fd);
		} else {
			s->nconn++;
		}
		pthread_mutex_unlock(&s->lock);
	}
}

static int listen_loopback(char port[16], int backlog)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t al = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(fd, backlog), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &al), 0);
	snprintf(port, 16, "%u", ntohs(a.sin_port));
	return fd;
}

static struct server *server_start(enum mode mode, struct gmfp_source *src,
				   uint32_t nr_regions, const uint64_t *sizes)
{
	struct server *s = calloc(1, sizeof(*s));

	assert_non_null(s);
	s->mode = mode;
	s->src = src;
	s->nr_regions = nr_regions;
	s->sizes = sizes;
	s->timeout_ms = 2000;
	pthread_mutex_init(&s->lock, NULL);
	s->lfd = listen_loopback(s->port, 16);
	assert_int_equal(pthread_create(&s->acceptor, NULL, acceptor_main, s), 0);
	return s;
}

/* Shut every connection down from the server side, wait till they end. */
static void server_kick(struct server *s)
{
	int i, n, tries;

	pthread_mutex_lock(&s->lock);
	n = s->nconn;
	for (i = 0; i < n; i++)
		shutdown(s->conns[i].fd, SHUT_RDWR);
	pthread_mutex_unlock(&s->lock);
	for (i = 0; i < n; i++)
		for (tries = 0; tries < 2000 && !atomic_load(&s->conns[i].done); tries++)
			usleep(1000);
	usleep(20000);	/* and the FINs are in the client's sockets */
}

static void server_stop(struct server *s)
{
	int i;

	pthread_mutex_lock(&s->lock);
	s->stopping = true;
	pthread_mutex_unlock(&s->lock);
	shutdown(s->lfd, SHUT_RDWR);	/* wakes accept() */
	pthread_join(s->acceptor, NULL);
	close(s->lfd);
	for (i = 0; i < s->nconn; i++) {
		shutdown(s->conns[i].fd, SHUT_RDWR);
		pthread_join(s->conns[i].th, NULL);
		close(s->conns[i].fd);
	}
	pthread_mutex_destroy(&s->lock);
	if (s->pat) {
		gmfp_source_destroy(s->src);
		free(s->pat);
	}
	free(s);
}

/* gmfp_wire_serve() from a pattern source of its own (counts in s->pat). */
static struct server *pat_server(uint32_t nr_regions, const uint64_t *sizes)
{
	struct pat_src *p = malloc(sizeof(*p));
	struct server *s;

	assert_non_null(p);
	s = server_start(M_SERVE, pat_source(p), nr_regions, sizes);
	s->pat = p;
	return s;
}

/* The client first: it says BYE, so the serving threads end in order. */
static void stop_both(struct gmfp_source *c, struct server *s)
{
	gmfp_source_destroy(c);
	server_stop(s);
}

/* A TCP source for @s; @nr_regions 0: no layout expected. */
static struct gmfp_source *client(const struct server *s, uint32_t nr_regions,
				  const uint64_t *sizes, uint32_t timeout_ms)
{
	GMFP_OPTS_INIT(struct gmfp_tcp_opts, o);
	struct gmfp_source *c;

	o.port = s->port;
	o.nr_regions = nr_regions;
	o.region_sizes = sizes;
	o.timeout_ms = timeout_ms;
	o.connect_timeout_ms = 1000;
	assert_int_equal(gmfp_source_tcp(&c, &o), 0);
	return c;
}

/* One fetch into fresh buffers; checks the pages when it succeeds. */
static int fetch(struct gmfp_source *c, uint32_t region, uint64_t pgoff,
		 uint32_t npages, bool demand, bool with_zero)
{
	uint8_t *buf = malloc((size_t)npages * PS);
	uint64_t zero[4] = { 0 };
	struct gmfp_fetch f = {
		.region = region, .pgoff = pgoff, .npages = npages, .buf = buf,
		.flags = demand ? GMFP_FETCH_DEMAND : 0,
		.zero = with_zero ? zero : NULL,
	};
	int r;

	assert_non_null(buf);
	memset(buf, 0xcc, (size_t)npages * PS);
	r = gmfp_source_fetch(c, &f);
	if (r == 0)
		assert_int_equal(bad_pages(&f), 0);
	free(buf);
	return r;
}

static uint64_t ms_since(uint64_t t0)
{
	return (gmfp_now_ns() - t0) / 1000000;
}

/* The fetches of @c that failed, and its reconnects, so far. */
static void expect_counts(struct gmfp_source *c, uint64_t failures,
			  uint64_t reconnects)
{
	struct gmfp_source_stats st;

	gmfp_source_get_stats(c, &st);
	assert_int_equal(st.failures, failures);
	assert_int_equal(st.reconnects, reconnects);
}

/* ---- client against gmfp_wire_serve() ---- */

static void test_basic(void **state)
{
	struct gmfp_source_stats st;
	struct gmfp_source *c;
	struct server *s;

	(void)state;
	s = pat_server(2, layout);
	c = client(s, 2, layout, 2000);

	/* the whole of region 0 in one demand fetch, zero pages flagged */
	assert_int_equal(fetch(c, 0, 0, 256, true, true), 0);
	/* background, region 1, odd size, no bitmap: zeroes in the buffer */
	assert_int_equal(fetch(c, 1, 100, 17, false, false), 0);
	assert_int_equal(fetch(c, 1, 127, 1, false, true), 0);
	assert_int_equal(fetch(c, 0, 3, 1, true, false), 0);	/* a zero page */
	/* one connection of each class, the server saw both channels */
	assert_int_equal(atomic_load(&s->accepted), 2);
	assert_int_equal(atomic_load(&s->pat->demand), 2);
	assert_int_equal(atomic_load(&s->pat->background), 2);

	gmfp_source_get_stats(c, &st);
	assert_true(st.requests == 4);
	assert_true(st.pages == 256 + 17 + 1 + 1);
	expect_counts(c, 0, 0);

	/* more than one request's worth: refused before anything is sent */
	assert_int_equal(fetch(c, 0, 0, 257, true, true), -E2BIG);
	/* outside the expected layout: refused locally */
	assert_int_equal(fetch(c, 2, 0, 1, true, true), -EINVAL);
	assert_int_equal(fetch(c, 1, 128, 1, true, true), -EINVAL);
	assert_int_equal(fetch(c, 1, 120, 9, true, true), -EINVAL);
	assert_int_equal(fetch(c, 0, UINT64_MAX, 2, true, true), -EINVAL);

	stop_both(c, s);
}

static void test_any_layout(void **state)
{
	struct gmfp_source *c;
	struct server *s;

	(void)state;
	s = pat_server(2, layout);
	c = client(s, 0, NULL, 2000);
	assert_int_equal(fetch(c, 1, 0, 128, false, true), 0);
	/* no layout here: the server says what is outside its own */
	assert_int_equal(fetch(c, 1, 128, 1, false, true), -EINVAL);
	assert_int_equal(fetch(c, 5, 0, 1, false, true), -EINVAL);
	/* and the connection survives an ERROR */
	assert_int_equal(fetch(c, 0, 250, 6, false, true), 0);
	assert_int_equal(atomic_load(&s->accepted), 1);
	stop_both(c, s);
}

static void test_error_reply(void **state)
{
	struct gmfp_source *c;
	struct server *s;

	(void)state;
	s = pat_server(1, (const uint64_t[]){ 4096 * 1024 });
	c = client(s, 1, (const uint64_t[]){ 4096 * 1024 }, 2000);
	assert_int_equal(fetch(c, 0, 660, 10, true, true), -EIO);
	assert_int_equal(fetch(c, 0, 666, 1, false, true), -EIO);
	/* the connections stay: no new one, no reconnect */
	assert_int_equal(fetch(c, 0, 650, 16, true, true), 0);
	assert_int_equal(fetch(c, 0, 667, 16, false, true), 0);
	assert_int_equal(atomic_load(&s->accepted), 2);
	expect_counts(c, 2, 0);
	stop_both(c, s);
}

static void test_drop_reconnect(void **state)
{
	struct gmfp_source *c;
	struct server *s;
	int r;

	(void)state;
	s = pat_server(2, layout);
	c = client(s, 2, layout, 2000);
	assert_int_equal(fetch(c, 0, 0, 8, true, true), 0);
	atomic_store(&s->pat->drop, 1);
	r = fetch(c, 0, 8, 8, true, true);
	assert_true(r == -ECONNRESET || r == -EPIPE);
	/* the next fetch connects again and gets its pages */
	assert_int_equal(fetch(c, 0, 8, 8, true, true), 0);
	assert_int_equal(atomic_load(&s->accepted), 2);
	expect_counts(c, 1, 1);

	/* the server ends idle connections: reconnect without a failure */
	assert_int_equal(fetch(c, 1, 0, 4, false, true), 0);
	server_kick(s);
	assert_int_equal(fetch(c, 0, 16, 4, true, true), 0);
	assert_int_equal(fetch(c, 1, 4, 4, false, true), 0);
	expect_counts(c, 1, 3);

	stop_both(c, s);
}

static void test_layout_mismatch(void **state)
{
	const uint64_t fewer[1] = { layout[0] };
	const uint64_t bigger[2] = { layout[0], layout[1] + PS };
	struct gmfp_source *c;
	struct server *s;

	(void)state;
	s = pat_server(2, layout);
	/* the server refuses the HELLO */
	c = client(s, 1, fewer, 2000);
	assert_int_equal(fetch(c, 0, 0, 1, true, true), -ENXIO);
	/* every attempt is refused the same way, not a success by accident */
	assert_int_equal(fetch(c, 0, 0, 1, true, true), -ENXIO);
	gmfp_source_destroy(c);
	c = client(s, 2, bigger, 2000);
	assert_int_equal(fetch(c, 1, 0, 1, false, true), -ENXIO);
	gmfp_source_destroy(c);
	assert_int_equal(atomic_load(&s->pat->demand) +
			 atomic_load(&s->pat->background), 0);
	server_stop(s);

	/* a server that accepts anything but has another layout: we refuse */
	s = server_start(M_WELCOME_LAYOUT, NULL, 0, NULL);
	c = client(s, 2, layout, 2000);
	assert_int_equal(fetch(c, 0, 0, 1, true, true), -ENXIO);
	stop_both(c, s);
}

static void test_timeout(void **state)
{
	struct gmfp_source *c;
	struct server *s;
	uint64_t t0, ms;

	(void)state;
	s = server_start(M_SILENT, NULL, 2, layout);
	c = client(s, 2, layout, 300);
	t0 = gmfp_now_ns();
	assert_int_equal(fetch(c, 0, 0, 4, true, true), -ETIMEDOUT);
	ms = ms_since(t0);
	assert_true(ms >= 290);
	assert_true(ms < 2000);
	stop_both(c, s);

	/* half an answer and then nothing: the same */
	s = server_start(M_TRUNC_HANG, NULL, 2, layout);
	c = client(s, 2, layout, 300);
	t0 = gmfp_now_ns();
	assert_int_equal(fetch(c, 0, 0, 4, true, true), -ETIMEDOUT);
	assert_true(ms_since(t0) < 2000);
	stop_both(c, s);
}

static void test_connect_errors(void **state)
{
	GMFP_OPTS_INIT(struct gmfp_tcp_opts, o);
	struct gmfp_source *c;
	char port[16];
	int lfd, fill[4], i;
	uint64_t t0;

	(void)state;
	/* nobody listening */
	lfd = listen_loopback(port, 1);
	close(lfd);
	o.port = port;
	o.connect_timeout_ms = 300;
	assert_int_equal(gmfp_source_tcp(&c, &o), 0);
	assert_int_equal(fetch(c, 0, 0, 1, true, true), -ECONNREFUSED);
	gmfp_source_destroy(c);

	/*
	 * A listener whose accept queue is full drops our SYN: the connect
	 * timeout is what ends the wait.
	 */
	lfd = listen_loopback(port, 0);
	for (i = 0; i < 4; i++) {
		struct sockaddr_in a = { .sin_family = AF_INET,
					 .sin_port = htons((uint16_t)atoi(port)) };

		a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		fill[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
		connect(fill[i], (struct sockaddr *)&a, sizeof(a));
	}
	usleep(50000);
	assert_int_equal(gmfp_source_tcp(&c, &o), 0);
	t0 = gmfp_now_ns();
	assert_int_equal(fetch(c, 0, 0, 1, true, true), -ETIMEDOUT);
	assert_true(ms_since(t0) >= 290 && ms_since(t0) < 2000);
	gmfp_source_destroy(c);
	for (i = 0; i < 4; i++)
		close(fill[i]);
	close(lfd);
}

static void test_hostile(void **state)
{
	static const struct {
		enum mode mode;
		int err;
	} cases[] = {
		{ M_WRONG_SEQ, -EBADMSG },
		{ M_WRONG_PGOFF, -EBADMSG },
		{ M_WRONG_REGION, -EBADMSG },
		{ M_WRONG_NPAGES, -EBADMSG },
		{ M_ERROR_WRONG_SEQ, -EBADMSG },
		{ M_OVERSIZE, -EMSGSIZE },
		{ M_GARBAGE, -EBADMSG },
		{ M_BYE, -ECONNRESET },
		{ M_BAD_BITMAP, -EBADMSG },
		{ M_TRUNC_CLOSE, -ECONNRESET },
		{ M_WELCOME_NOT, -EBADMSG },
	};
	size_t i;

	(void)state;
	for (i = 0; i < GMFP_ARRAY_SIZE(cases); i++) {
		struct gmfp_source_stats st;
		struct server *s = server_start(cases[i].mode, NULL, 2, layout);
		struct gmfp_source *c = client(s, 2, layout, 1000);
		int r;

		r = fetch(c, 0, 8, 4, true, true);
		if (r != cases[i].err)
			fail_msg("mode %d: %d, want %d", cases[i].mode, r, cases[i].err);
		/* and again, on a new connection: the same, never a success */
		r = fetch(c, 0, 8, 4, true, true);
		if (r != cases[i].err)
			fail_msg("mode %d again: %d, want %d", cases[i].mode, r,
				 cases[i].err);
		gmfp_source_get_stats(c, &st);
		assert_true(st.failures == 2);
		stop_both(c, s);
	}
}

/*
 * An ERROR whose err is no errno (a hostile or broken server): the fetch
 * fails with -EIO, never with a value outside the errno range (found by
 * tests/fuzz/fuzz_tcp.c: -11069).  The stream stays usable.
 */
static void test_error_not_errno(void **state)
{
	struct server *s = server_start(M_ERROR_NOT_ERRNO, NULL, 2, layout);
	struct gmfp_source *c = client(s, 2, layout, 1000);

	(void)state;
	assert_int_equal(fetch(c, 0, 8, 4, true, true), -EIO);
	stop_both(c, s);
}

static void test_odd_but_valid(void **state)
{
	struct gmfp_source *c;
	struct server *s;

	(void)state;
	/* an answer in small pieces is still the answer */
	s = server_start(M_CHUNKED, NULL, 2, layout);
	c = client(s, 2, layout, 3000);
	assert_int_equal(fetch(c, 0, 0, 9, true, true), 0);
	stop_both(c, s);

	/*
	 * Bytes nobody asked for after an answer: the answer stands, the
	 * connection is not trusted again, the next fetch uses a new one.
	 */
	s = server_start(M_DOUBLE, NULL, 2, layout);
	c = client(s, 2, layout, 1000);
	assert_int_equal(fetch(c, 0, 3, 1, true, true), 0);
	assert_int_equal(fetch(c, 0, 3, 1, true, false), 0);
	assert_int_equal(atomic_load(&s->accepted), 2);
	expect_counts(c, 0, 1);
	stop_both(c, s);
}

/* ---- several threads at once ---- */

struct worker {
	struct gmfp_source *c;
	unsigned int id;
	_Atomic unsigned int ok, failed, bad;
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	uint8_t *buf = malloc((size_t)64 * PS);
	uint64_t x = 0x12345 + w->id;
	int i;

	for (i = 0; buf && i < 40; i++) {
		uint64_t zero[1] = { 0 };
		struct gmfp_fetch f = { .buf = buf };

		x = x * 6364136223846793005ull + 1442695040888963407ull;
		f.region = (uint32_t)(x >> 60) & 1;
		f.npages = 1 + (uint32_t)(x >> 20) % 64;
		f.pgoff = (x >> 33) % ((f.region ? 128 : 256) - f.npages + 1);
		f.flags = (w->id + (unsigned int)i) % 2 ? GMFP_FETCH_DEMAND : 0;
		f.zero = i % 3 ? zero : NULL;
		if (gmfp_source_fetch(w->c, &f))
			atomic_fetch_add(&w->failed, 1);
		else if (bad_pages(&f))
			atomic_fetch_add(&w->bad, 1);
		else
			atomic_fetch_add(&w->ok, 1);
	}
	free(buf);
	return NULL;
}

static void test_concurrent(void **state)
{
	GMFP_OPTS_INIT(struct gmfp_tcp_opts, o);
	struct gmfp_source_stats st;
	struct gmfp_source *c;
	struct worker w[4];
	pthread_t th[4];
	struct server *s;
	int i;

	(void)state;
	s = pat_server(2, layout);
	o.port = s->port;
	o.demand_conns = 2;
	o.background_conns = 1;
	o.nr_regions = 2;
	o.region_sizes = layout;
	assert_int_equal(gmfp_source_tcp(&c, &o), 0);
	for (i = 0; i < 4; i++) {
		memset(&w[i], 0, sizeof(w[i]));
		w[i].c = c;
		w[i].id = (unsigned int)i;
		assert_int_equal(pthread_create(&th[i], NULL, worker_main, &w[i]), 0);
	}
	for (i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(atomic_load(&w[i].ok), 40);
		assert_int_equal(atomic_load(&w[i].failed), 0);
		assert_int_equal(atomic_load(&w[i].bad), 0);
	}
	assert_true(atomic_load(&s->accepted) <= 3);
	assert_int_equal(atomic_load(&s->pat->demand), 80);
	assert_int_equal(atomic_load(&s->pat->background), 80);
	gmfp_source_get_stats(c, &st);
	assert_true(st.requests == 160);
	assert_true(st.failures == 0);
	stop_both(c, s);
}

/* A class with no connections of its own uses the other's. */
static void test_one_class(void **state)
{
	GMFP_OPTS_INIT(struct gmfp_tcp_opts, o);
	struct gmfp_source *c;
	struct server *s;

	(void)state;
	s = pat_server(2, layout);
	o.port = s->port;
	o.background_conns = 1;
	assert_int_equal(gmfp_source_tcp(&c, &o), 0);
	assert_int_equal(fetch(c, 0, 0, 4, true, true), 0);
	assert_int_equal(fetch(c, 0, 4, 4, false, true), 0);
	assert_int_equal(atomic_load(&s->accepted), 1);
	assert_int_equal(atomic_load(&s->pat->background), 2);
	assert_int_equal(atomic_load(&s->pat->demand), 0);
	stop_both(c, s);
}

static void test_bad_opts(void **state)
{
	GMFP_OPTS_INIT(struct gmfp_tcp_opts, o);
	struct gmfp_source *c = (struct gmfp_source *)&o;
	uint64_t sizes[1] = { 4096 };

	(void)state;
	assert_int_equal(gmfp_source_tcp(NULL, &o), -EINVAL);
	assert_int_equal(gmfp_source_tcp(&c, NULL), -EINVAL);
	assert_null(c);
	assert_int_equal(gmfp_source_tcp(&c, &o), -EINVAL);	/* no port */
	o.port = "";
	assert_int_equal(gmfp_source_tcp(&c, &o), -EINVAL);
	o.port = "1";
	o.nr_regions = GMFP_WIRE_MAX_REGIONS + 1;
	o.region_sizes = sizes;
	assert_int_equal(gmfp_source_tcp(&c, &o), -EINVAL);
	o.nr_regions = 1;
	o.region_sizes = NULL;
	assert_int_equal(gmfp_source_tcp(&c, &o), -EINVAL);
	o.region_sizes = sizes;
	o.demand_conns = 1000;
	assert_int_equal(gmfp_source_tcp(&c, &o), -EINVAL);
	o.demand_conns = 0;
	o.sz = 4;
	assert_int_equal(gmfp_source_tcp(&c, &o), -EINVAL);
	o.sz = sizeof(o);
	/* fine, and nothing is connected until the first fetch */
	assert_int_equal(gmfp_source_tcp(&c, &o), 0);
	gmfp_source_destroy(c);
}

/* ---- gmfp_wire_serve() against a hand-written client ---- */

struct serve_arg {
	int fd;
	struct gmfp_serve_opts o;
	int rc;
};

static void *serve_main(void *arg)
{
	struct serve_arg *a = arg;

	a->rc = gmfp_wire_serve(a->fd, &a->o);
	return NULL;
}

struct peer {
	int fd;
	pthread_t th;
	struct serve_arg a;
	uint8_t *in;
	size_t len;
};

static void peer_start(struct peer *p, struct gmfp_source *src, uint32_t timeout_ms)
{
	int sv[2];

	memset(p, 0, sizeof(*p));
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	p->fd = sv[0];
	p->a.fd = sv[1];
	p->a.o.sz = sizeof(p->a.o);
	p->a.o.src = src;
	p->a.o.nr_regions = 2;
	p->a.o.region_sizes = layout;
	p->a.o.timeout_ms = timeout_ms;
	p->in = malloc(MAX_FRAME);
	assert_non_null(p->in);
	assert_int_equal(pthread_create(&p->th, NULL, serve_main, &p->a), 0);
}

/* Wait for serve() to return; its result. */
static int peer_end(struct peer *p)
{
	pthread_join(p->th, NULL);
	close(p->fd);
	close(p->a.fd);
	free(p->in);
	return p->a.rc;
}

static void peer_send(struct peer *p, const void *b, size_t n)
{
	assert_int_equal(send(p->fd, b, n, MSG_NOSIGNAL), (ssize_t)n);
}

/* The last @n bytes the peer sends: serve()'s result once it returns. */
static int peer_send_end(struct peer *p, const void *b, size_t n)
{
	peer_send(p, b, n);
	return peer_end(p);
}

/* The next frame from the server, consumed; its type. */
static int peer_read(struct peer *p, struct gmfp_wire_msg *m)
{
	ssize_t n = s_read(p->fd, p->in, &p->len, MAX_FRAME, m);

	if (n <= 0)
		return (int)n;
	/* copy what the caller needs before the buffer moves */
	s_consume(p->in, &p->len, (size_t)n);
	return m->type;
}

static void peer_hello(struct peer *p, uint32_t nr, const uint64_t *sizes)
{
	struct gmfp_wire_msg m;
	uint8_t b[128];
	ssize_t n;

	n = gmfp_wire_encode_hello(b, sizeof(b), 42, GMFP_WIRE_CH_DEMAND, nr, sizes);
	peer_send(p, b, (size_t)n);
	/* one byte at a time would also do: see test_serve_partial */
	assert_int_equal(peer_read(p, &m), GMFP_WIRE_WELCOME);
	assert_int_equal(m.seq, 42);
	assert_int_equal(m.u.welcome.nr_regions, 2);
}

/* A REQ for these pages; the type of the frame that answers it (into @m). */
static int peer_req(struct peer *p, uint32_t seq, uint32_t region, uint64_t pgoff,
		    uint32_t npages, struct gmfp_wire_msg *m)
{
	uint8_t b[GMFP_WIRE_HDR_SIZE + 16];
	ssize_t n = gmfp_wire_encode_req(b, sizeof(b), seq, region, pgoff, npages);

	peer_send(p, b, (size_t)n);
	return peer_read(p, m);
}

/* peer_start(), and through the handshake, asking for no layout. */
static void peer_ready(struct peer *p, struct gmfp_source *src, uint32_t timeout_ms)
{
	peer_start(p, src, timeout_ms);
	peer_hello(p, 0, NULL);
}

static void test_serve_requests(void **state)
{
	struct gmfp_source *src;
	struct gmfp_wire_msg m;
	struct pat_src ps;
	struct peer p;
	uint8_t b[64];
	ssize_t n;

	(void)state;
	src = pat_source(&ps);
	peer_ready(&p, src, 2000);

	/* out of the layout: answered with EINVAL, the connection goes on */
	assert_int_equal(peer_req(&p, 1, 2, 0, 1, &m), GMFP_WIRE_ERROR);
	assert_int_equal(m.seq, 1);
	assert_int_equal(m.u.error.err, EINVAL);
	assert_int_equal(m.u.error.region, 2);
	assert_int_equal(peer_req(&p, 2, 1, 120, 9, &m), GMFP_WIRE_ERROR);
	assert_int_equal(m.u.error.err, EINVAL);
	assert_int_equal(peer_req(&p, 3, 0, UINT64_MAX, 2, &m), GMFP_WIRE_ERROR);

	/* the source's error, as a positive errno */
	assert_int_equal(peer_req(&p, 4, 0, 250, 6, &m), GMFP_WIRE_DATA);
	assert_int_equal(m.seq, 4);
	assert_int_equal(m.u.data.npages, 6);
	/* of pages 250..255, 255 is a zero page: left out */
	assert_int_equal(m.u.data.nr_data, 5);

	/* pipelined: two REQs in one write, two answers in order */
	n = gmfp_wire_encode_req(b, sizeof(b), 5, 1, 0, 1);
	n += gmfp_wire_encode_req(b + n, sizeof(b) - (size_t)n, 6, 1, 3, 1);
	peer_send(&p, b, (size_t)n);
	assert_int_equal(peer_read(&p, &m), GMFP_WIRE_DATA);
	assert_int_equal(m.seq, 5);
	assert_int_equal(m.u.data.nr_data, 1);
	assert_int_equal(peer_read(&p, &m), GMFP_WIRE_DATA);
	assert_int_equal(m.seq, 6);
	assert_int_equal(m.u.data.nr_data, 0);	/* page 3: zero */

	n = gmfp_wire_encode_bye(b, sizeof(b));
	assert_int_equal(peer_send_end(&p, b, (size_t)n), 0);
	/* a DEMAND channel's fetches are demand fetches */
	assert_int_equal(atomic_load(&ps.demand), 3);
	assert_int_equal(atomic_load(&ps.background), 0);

	/* the exact layout in the HELLO is fine too */
	peer_start(&p, src, 2000);
	peer_hello(&p, 2, layout);
	assert_int_equal(peer_req(&p, 7, 0, 0, 1, &m), GMFP_WIRE_DATA);
	/* a callback source's error that is no errno goes out as EIO */
	atomic_store(&ps.ret, -5000);
	assert_int_equal(peer_req(&p, 8, 0, 1, 1, &m), GMFP_WIRE_ERROR);
	assert_int_equal(m.u.error.err, EIO);
	atomic_store(&ps.ret, INT_MIN);
	assert_int_equal(peer_req(&p, 9, 0, 1, 1, &m), GMFP_WIRE_ERROR);
	assert_int_equal(m.u.error.err, EIO);
	atomic_store(&ps.ret, -ENODATA);
	assert_int_equal(peer_req(&p, 10, 0, 1, 1, &m), GMFP_WIRE_ERROR);
	assert_int_equal(m.u.error.err, ENODATA);
	shutdown(p.fd, SHUT_WR);	/* EOF between frames: orderly too */
	assert_int_equal(peer_end(&p), 0);
	gmfp_source_destroy(src);
}

static void test_serve_refuses(void **state)
{
	const uint64_t other[2] = { layout[0], layout[1] * 2 };
	struct gmfp_source *src;
	struct gmfp_wire_msg m;
	struct pat_src ps;
	struct peer p;
	uint8_t b[128];
	ssize_t n;
	uint64_t t0;

	(void)state;
	src = pat_source(&ps);

	/* another layout */
	peer_start(&p, src, 2000);
	n = gmfp_wire_encode_hello(b, sizeof(b), 9, GMFP_WIRE_CH_BACKGROUND, 2, other);
	peer_send(&p, b, (size_t)n);
	assert_int_equal(peer_read(&p, &m), GMFP_WIRE_ERROR);
	assert_int_equal(m.seq, 9);
	assert_int_equal(m.u.error.err, ENXIO);
	assert_int_equal(peer_end(&p), -ENXIO);

	/* a version range without 1 */
	peer_start(&p, src, 2000);
	n = gmfp_wire_encode_hello(b, sizeof(b), 9, GMFP_WIRE_CH_BACKGROUND, 0, NULL);
	b[16] = 2;	/* min_version */
	b[18] = 3;	/* max_version */
	peer_send(&p, b, (size_t)n);
	assert_int_equal(peer_read(&p, &m), GMFP_WIRE_ERROR);
	assert_int_equal(m.u.error.err, EPROTONOSUPPORT);
	assert_int_equal(peer_end(&p), -EPROTONOSUPPORT);

	/* a frame of another version altogether */
	peer_start(&p, src, 2000);
	b[4] = 2;
	peer_send(&p, b, (size_t)n);
	assert_int_equal(peer_read(&p, &m), GMFP_WIRE_ERROR);
	assert_int_equal(m.u.error.err, EPROTONOSUPPORT);
	assert_int_equal(peer_end(&p), -EPROTONOSUPPORT);

	/* something other than a HELLO first */
	peer_start(&p, src, 2000);
	n = gmfp_wire_encode_req(b, sizeof(b), 1, 0, 0, 1);
	assert_int_equal(peer_send_end(&p, b, (size_t)n), -EBADMSG);

	/* malformed after the handshake */
	peer_ready(&p, src, 2000);
	n = gmfp_wire_encode_req(b, sizeof(b), 1, 0, 0, 1);
	b[6] = 1;	/* flags */
	assert_int_equal(peer_send_end(&p, b, (size_t)n), -EBADMSG);

	/* a frame a client has no business sending (DATA), or a 2nd HELLO */
	peer_ready(&p, src, 2000);
	n = gmfp_wire_encode_data(b, sizeof(b), 1, 0, 0, 1, (const uint64_t[]){ 1 },
				  NULL);
	assert_int_equal(peer_send_end(&p, b, (size_t)n), -EBADMSG);
	peer_ready(&p, src, 2000);
	n = gmfp_wire_encode_hello(b, sizeof(b), 1, GMFP_WIRE_CH_DEMAND, 0, NULL);
	assert_int_equal(peer_send_end(&p, b, (size_t)n), -EBADMSG);
	/* a big DATA header: refused before its payload is waited for */
	peer_ready(&p, src, 2000);
	n = gmfp_wire_encode_data(b, sizeof(b), 1, 0, 0, 1, (const uint64_t[]){ 1 },
				  NULL);
	b[8] = 0;
	b[9] = 0;
	b[10] = 0x10;	/* length 1 MiB: allowed, but no client sends it */
	assert_int_equal(peer_send_end(&p, b, 16), -EBADMSG);

	/* oversized */
	peer_ready(&p, src, 2000);
	b[10] = 0x20;
	assert_int_equal(peer_send_end(&p, b, 16), -EMSGSIZE);

	/* half a frame, then silence: the timeout */
	peer_ready(&p, src, 200);
	n = gmfp_wire_encode_req(b, sizeof(b), 1, 0, 0, 1);
	t0 = gmfp_now_ns();
	assert_int_equal(peer_send_end(&p, b, 10), -ETIMEDOUT);
	assert_true(ms_since(t0) >= 190 && ms_since(t0) < 2000);

	/* half a frame, then EOF */
	peer_ready(&p, src, 2000);
	peer_send(&p, b, 20);
	shutdown(p.fd, SHUT_WR);
	assert_int_equal(peer_end(&p), -ECONNRESET);

	/* gone before the HELLO: nothing happened */
	peer_start(&p, src, 2000);
	shutdown(p.fd, SHUT_WR);
	assert_int_equal(peer_end(&p), 0);

	/* a HELLO that never comes */
	peer_start(&p, src, 200);
	assert_int_equal(peer_end(&p), -ETIMEDOUT);

	assert_int_equal(atomic_load(&ps.demand) + atomic_load(&ps.background), 0);
	gmfp_source_destroy(src);
}

static void test_serve_partial(void **state)
{
	struct gmfp_source *src;
	struct gmfp_wire_msg m;
	struct pat_src ps;
	struct peer p;
	uint8_t b[128];
	ssize_t n, i;

	(void)state;
	src = pat_source(&ps);
	peer_start(&p, src, 2000);
	/* HELLO and REQ one byte at a time */
	n = gmfp_wire_encode_hello(b, sizeof(b), 1, GMFP_WIRE_CH_BACKGROUND, 2, layout);
	n += gmfp_wire_encode_req(b + n, sizeof(b) - (size_t)n, 2, 0, 1, 2);
	for (i = 0; i < n; i++)
		peer_send(&p, b + i, 1);
	assert_int_equal(peer_read(&p, &m), GMFP_WIRE_WELCOME);
	assert_int_equal(peer_read(&p, &m), GMFP_WIRE_DATA);
	assert_int_equal(m.seq, 2);
	assert_int_equal(m.u.data.nr_data, 2);
	assert_int_equal(atomic_load(&ps.background), 1);
	close(p.fd);
	p.fd = -1;
	pthread_join(p.th, NULL);
	assert_int_equal(p.a.rc, 0);
	close(p.a.fd);
	free(p.in);

	/* bad opts */
	{
		struct gmfp_serve_opts o = { .sz = sizeof(o) };

		assert_int_equal(gmfp_wire_serve(0, &o), -EINVAL);	/* no source */
		o.src = src;
		assert_int_equal(gmfp_wire_serve(-1, &o), -EINVAL);
		assert_int_equal(gmfp_wire_serve(0, NULL), -EINVAL);
		o.nr_regions = 1;
		assert_int_equal(gmfp_wire_serve(0, &o), -EINVAL);
		o.nr_regions = GMFP_WIRE_MAX_REGIONS + 1;
		o.region_sizes = layout;
		assert_int_equal(gmfp_wire_serve(0, &o), -EINVAL);
	}
	gmfp_source_destroy(src);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_basic),
		cmocka_unit_test(test_any_layout),
		cmocka_unit_test(test_error_reply),
		cmocka_unit_test(test_drop_reconnect),
		cmocka_unit_test(test_layout_mismatch),
		cmocka_unit_test(test_timeout),
		cmocka_unit_test(test_connect_errors),
		cmocka_unit_test(test_hostile),
		cmocka_unit_test(test_error_not_errno),
		cmocka_unit_test(test_odd_but_valid),
		cmocka_unit_test(test_concurrent),
		cmocka_unit_test(test_one_class),
		cmocka_unit_test(test_bad_opts),
		cmocka_unit_test(test_serve_requests),
		cmocka_unit_test(test_serve_refuses),
		cmocka_unit_test(test_serve_partial),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
