// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * libFuzzer target: gmfp_source_tcp(), the asking side of the wire
 * protocol, against a hostile page server on loopback.
 *
 * The input is a layout the client expects (or none), up to four fetches,
 * and a script for the server: a list of chunks of bytes.  The server
 * answers every frame the client sends (HELLO, REQ) with the next chunk,
 * whatever it holds, and ends a connection (shutdown, the client sees end
 * of file) after a chunk so flagged or when the chunks run out; a
 * connection accepted after that is closed at once.  A chunk may be empty:
 * no answer, the client's timeout (kept short) runs out.
 *
 * Checked: each fetch returns 0 or a negative errno; a fetch that succeeds
 * ("success only for a frame that the decoder accepted whole and that
 * answers this very request", source_tcp.c) has exactly the zero bits and
 * the pages of a DATA frame that the server sent, found by decoding the
 * bytes of one of its connections frame by frame from the start, with the
 * fetch's region, pages and the seq of a REQ on that connection.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz.h"
#include "gmfp_wire.h"

#define PG GMFP_PAGE_SIZE
#define MAX_CONNS 8
#define END_BIT 0x8000u
#define GMFP_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

struct conn {
	int fd;
	uint8_t in[4096];		/* the client's frames, small */
	size_t in_len;
	uint8_t *sent;			/* everything we answered on it */
	size_t sent_len;
	uint32_t reqs;			/* frames of the client answered */
	uint32_t seqs[64];		/* of its REQs */
	bool ended;
};

struct server {
	pthread_mutex_t lock;		/* the connections, between the two threads */
	int lfd, stop[2];
	char port[16];
	/* the script */
	const uint8_t *chunks;
	size_t chunks_len, cpos;
	bool out_of_chunks;
	struct conn c[MAX_CONNS];
	unsigned int nconns;
};

static struct server S;

/* The next chunk of the script: bytes, and whether the connection ends. */
static bool next_chunk(const uint8_t **p, size_t *n, bool *end)
{
	uint16_t h;

	if (S.cpos + 2 > S.chunks_len) {
		S.out_of_chunks = true;
		return false;
	}
	h = (uint16_t)(S.chunks[S.cpos] | S.chunks[S.cpos + 1] << 8);
	S.cpos += 2;
	*n = h & ~END_BIT;
	if (*n > S.chunks_len - S.cpos)
		*n = S.chunks_len - S.cpos;
	*p = S.chunks + S.cpos;
	S.cpos += *n;
	*end = h & END_BIT;
	return true;
}

static void conn_end(struct conn *c)
{
	if (!c->ended)
		shutdown(c->fd, SHUT_WR);
	c->ended = true;
}

/* Blocking enough for a loopback socket the client reads; a few KiB at most. */
static void conn_send(struct conn *c, const uint8_t *p, size_t n)
{
	size_t done = 0;

	c->sent = realloc(c->sent, c->sent_len + n + 1);
	FUZZ_CHECK(c->sent, "out of memory");
	memcpy(c->sent + c->sent_len, p, n);
	c->sent_len += n;
	while (done < n) {
		struct pollfd pfd = { .fd = c->fd, .events = POLLOUT };
		ssize_t k = send(c->fd, p + done, n - done, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (k > 0) {
			done += (size_t)k;
			continue;
		}
		if (k < 0 && errno != EAGAIN && errno != EINTR)
			return;		/* the client closed: it gave up on us */
		if (poll(&pfd, 1, 1000) <= 0)
			return;
	}
}

/* Bytes from the client: answer each whole frame with the next chunk. */
static void conn_input(struct conn *c)
{
	ssize_t n = recv(c->fd, c->in + c->in_len, sizeof(c->in) - c->in_len, MSG_DONTWAIT);

	if (n <= 0) {
		if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
			close(c->fd);
			c->fd = -1;
		}
		return;
	}
	c->in_len += (size_t)n;
	for (;;) {
		struct gmfp_wire_msg m;
		ssize_t f = gmfp_wire_decode(c->in, c->in_len, &m);
		const uint8_t *p;
		size_t len;
		bool end;

		/* the client is the library: its frames are good */
		FUZZ_CHECK(f >= 0, "the client sent a bad frame: %zd", f);
		if (!f)
			break;
		memmove(c->in, c->in + f, c->in_len - (size_t)f);
		c->in_len -= (size_t)f;
		if (c->ended || m.type == GMFP_WIRE_BYE)
			continue;
		FUZZ_CHECK(m.type == (c->reqs ? GMFP_WIRE_REQ : GMFP_WIRE_HELLO),
			   "client frame %u of type %u", c->reqs, m.type);
		if (c->reqs && c->reqs <= GMFP_ARRAY_LEN(c->seqs))
			c->seqs[c->reqs - 1] = m.seq;
		c->reqs++;
		if (!next_chunk(&p, &len, &end)) {
			conn_end(c);
			continue;
		}
		conn_send(c, p, len);
		if (end)
			conn_end(c);
	}
}

static void *server_main(void *arg)
{
	(void)arg;
	for (;;) {
		struct pollfd p[2 + MAX_CONNS];
		unsigned int i, n = 2;

		p[0] = (struct pollfd){ .fd = S.stop[0], .events = POLLIN };
		p[1] = (struct pollfd){ .fd = S.lfd, .events = POLLIN };
		for (i = 0; i < S.nconns; i++)
			p[n++] = (struct pollfd){ .fd = S.c[i].fd, .events = POLLIN };
		if (poll(p, n, -1) < 0)
			continue;
		if (p[0].revents)
			return NULL;
		pthread_mutex_lock(&S.lock);
		for (i = 0; i < S.nconns; i++)
			if (S.c[i].fd >= 0 && p[2 + i].revents)
				conn_input(&S.c[i]);
		if (p[1].revents & POLLIN) {
			int fd = accept4(S.lfd, NULL, NULL, SOCK_CLOEXEC);

			if (fd >= 0 && (S.nconns == MAX_CONNS || S.out_of_chunks)) {
				close(fd);
			} else if (fd >= 0) {
				memset(&S.c[S.nconns], 0, sizeof(S.c[0]));
				S.c[S.nconns++].fd = fd;
			}
		}
		pthread_mutex_unlock(&S.lock);
	}
}

int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t al = sizeof(a);

	(void)argc;
	(void)argv;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	S.lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	FUZZ_CHECK(S.lfd >= 0 && !bind(S.lfd, (struct sockaddr *)&a, sizeof(a)) &&
		   !listen(S.lfd, 16) && !getsockname(S.lfd, (struct sockaddr *)&a, &al),
		   "listen on loopback: %d", errno);
	snprintf(S.port, sizeof(S.port), "%u", ntohs(a.sin_port));
	pthread_mutex_init(&S.lock, NULL);
	return 0;
}

static bool seq_asked(const struct conn *c, uint32_t seq)
{
	uint32_t i;

	for (i = 0; i + 1 < c->reqs && i < GMFP_ARRAY_LEN(c->seqs); i++)
		if (c->seqs[i] == seq)
			return true;
	return false;
}

/* Whether @f's result is what a DATA frame on some connection said. */
static bool matches_a_data_frame(const struct gmfp_fetch *f)
{
	unsigned int i;

	for (i = 0; i < S.nconns; i++) {
		const struct conn *c = &S.c[i];
		size_t pos = 0;
		uint32_t k = 0;

		/* the client reads answers in order: frame k answers client frame k */
		while (pos < c->sent_len) {
			struct gmfp_wire_msg m;
			ssize_t n = gmfp_wire_decode(c->sent + pos, c->sent_len - pos, &m);
			const uint8_t *zero, *page;
			uint32_t j;
			bool ok = true;

			if (n <= 0)
				break;
			pos += (size_t)n;
			k++;
			if (m.type != GMFP_WIRE_DATA || m.u.data.region != f->region ||
			    m.u.data.pgoff != f->pgoff || m.u.data.npages != f->npages ||
			    !seq_asked(c, m.seq))
				continue;
			zero = m.u.data.zero;
			page = m.u.data.pages;
			for (j = 0; j < f->npages && ok; j++) {
				bool z = zero[j / 8] >> (j % 8) & 1;

				ok = z == (f->zero[j / 64] >> (j % 64) & 1);
				if (!z) {
					ok = ok && !memcmp(page, (uint8_t *)f->buf + (size_t)j * PG, PG);
					page += PG;
				}
			}
			if (ok)
				return true;
		}
	}
	return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	GMFP_OPTS_INIT(struct gmfp_tcp_opts, o);
	static uint8_t buf[GMFP_WIRE_MAX_PAGES * PG];
	uint64_t sizes[2], zero[GMFP_WIRE_MAX_PAGES / 64];
	struct gmfp_source *src;
	struct gmfp_fetch f;
	pthread_t t;
	struct fz in;
	unsigned int nfetch, i;
	uint8_t c0;
	int r;

	fz_init(&in, data, size);
	c0 = fz_u8(&in);
	o.port = S.port;
	o.nr_regions = (c0 & 3) % 3;
	for (i = 0; i < o.nr_regions; i++)
		sizes[i] = (uint64_t)(1 + fz_u16(&in) % 1024) * PG;
	o.region_sizes = sizes;
	o.demand_conns = 1;
	o.background_conns = c0 >> 2 & 1;
	o.timeout_ms = 50;
	o.connect_timeout_ms = 500;
	nfetch = 1 + (c0 >> 3 & 3);
	FUZZ_CHECK(!gmfp_source_tcp(&src, &o), "source");

	memset(&S.c, 0, sizeof(S.c));
	S.nconns = 0;
	S.cpos = 0;
	S.out_of_chunks = false;
	/* the fetches come first in the input, the server's chunks after them */
	S.chunks = data + in.pos + 4 * nfetch;
	S.chunks_len = fz_left(&in) > 4 * nfetch ? fz_left(&in) - 4 * nfetch : 0;
	FUZZ_CHECK(!pipe2(S.stop, O_CLOEXEC), "pipe");
	FUZZ_CHECK(!pthread_create(&t, NULL, server_main, NULL), "thread");
	for (i = 0; i < nfetch; i++) {
		memset(&f, 0, sizeof(f));
		memset(zero, 0, sizeof(zero));
		f.region = fz_u8(&in) % 3;
		f.pgoff = fz_u16(&in) % 1100;
		f.npages = 1 + fz_u8(&in);
		f.flags = (f.npages & 1) ? GMFP_FETCH_DEMAND : 0;
		f.buf = buf;
		f.zero = zero;
		r = gmfp_source_fetch(src, &f);
		FUZZ_CHECK(r <= 0 && r >= -4095, "fetch returned %d", r);
		if (getenv("FUZZ_DEBUG")) fprintf(stderr, "fetch %u: %d\n", i, r);
		pthread_mutex_lock(&S.lock);
		if (!r)
			FUZZ_CHECK(matches_a_data_frame(&f),
				   "fetch %u (region %u, %u pages at %lu) succeeded with contents no"
				   " DATA frame of the server had", i, f.region, f.npages,
				   (unsigned long)f.pgoff);
		pthread_mutex_unlock(&S.lock);
	}
	gmfp_source_destroy(src);
	FUZZ_CHECK(write(S.stop[1], "x", 1) == 1, "stop");
	pthread_join(t, NULL);
	close(S.stop[0]);
	close(S.stop[1]);
	for (i = 0; i < S.nconns; i++) {
		if (S.c[i].fd >= 0)
			close(S.c[i].fd);
		free(S.c[i].sent);
	}
	return 0;
}
