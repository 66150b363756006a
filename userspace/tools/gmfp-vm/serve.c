// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * The source side of a postcopy migration: once the guest is paused its
 * RAM no longer changes, and a page server hands out pages of the live
 * guest_memfd (read through its shared mapping) with libgmfp's
 * gmfp_wire_serve(), one thread per connection, until the destination says
 * it has everything.  (gmfp-serve --gmem-fd does the same as a separate
 * process.)  Plus the control connection's messages and socket helpers.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gmfp_wire.h"
#include "gvm.h"

#define MAX_CONNS 32

struct gvm_server {
	struct gvm *vm;
	struct gmfp_source *src;
	uint64_t size;
	uint32_t throttle_us;
	int lfd;
	pthread_t acceptor;
	pthread_mutex_t lock;
	int conns[MAX_CONNS];
	pthread_t threads[MAX_CONNS];
	bool used[MAX_CONNS];
	atomic_bool stop;
	_Atomic uint64_t connections, requests, pages_demand, pages_background;
};

/* gmfp: a page source of our own (callbacks): the pages of the paused VM */
static int ram_fetch(void *ctx, struct gmfp_fetch *f)
{
	struct gvm_server *s = ctx;
	uint64_t off = f->pgoff * PG, len = (uint64_t)f->npages * PG;

	if (f->region || off + len > s->size || off + len < off)
		return -EINVAL;
	if (s->throttle_us)
		usleep(s->throttle_us * f->npages);
	memcpy(f->buf, s->vm->ram + off, len);
	atomic_fetch_add(&s->requests, 1);
	if (f->flags & GMFP_FETCH_DEMAND)
		atomic_fetch_add(&s->pages_demand, f->npages);
	else
		atomic_fetch_add(&s->pages_background, f->npages);
	return 0;
}

struct conn_arg {
	struct gvm_server *s;
	int slot;
};

static void *conn_thread(void *arg)
{
	struct conn_arg *a = arg;
	struct gvm_server *s = a->s;
	int fd = s->conns[a->slot];
	GMFP_OPTS_INIT(struct gmfp_serve_opts, so);

	so.src = s->src;
	so.nr_regions = 1;
	so.region_sizes = &s->size;
	/* gmfp: the serving side of the wire protocol, one connection */
	gmfp_wire_serve(fd, &so);
	free(a);
	return NULL;
}

static void *accept_thread(void *arg)
{
	struct gvm_server *s = arg;

	while (!atomic_load(&s->stop)) {
		struct pollfd p = { .fd = s->lfd, .events = POLLIN };
		struct conn_arg *a;
		int fd, i, one = 1;

		if (poll(&p, 1, 100) <= 0)
			continue;
		fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		pthread_mutex_lock(&s->lock);
		for (i = 0; i < MAX_CONNS && s->used[i]; i++)
			;
		a = i < MAX_CONNS ? malloc(sizeof(*a)) : NULL;
		if (!a) {
			pthread_mutex_unlock(&s->lock);
			close(fd);
			continue;
		}
		a->s = s;
		a->slot = i;
		s->conns[i] = fd;
		if (pthread_create(&s->threads[i], NULL, conn_thread, a)) {
			free(a);
			close(fd);
		} else {
			s->used[i] = true;
			atomic_fetch_add(&s->connections, 1);
		}
		pthread_mutex_unlock(&s->lock);
	}
	return NULL;
}

int gvm_server_start(struct gvm_server **out, struct gvm *v, const char *addr,
		     uint32_t throttle_us, uint16_t *port)
{
	GMFP_OPTS_INIT(struct gmfp_source_ops, ops);
	struct gvm_server *s;
	char err[256];
	int r;

	if (!v->ram)
		return -EOPNOTSUPP;	/* private memory cannot be read */
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->vm = v;
	s->size = v->ram_size;
	s->throttle_us = throttle_us;
	pthread_mutex_init(&s->lock, NULL);
	ops.fetch = ram_fetch;
	ops.max_pages = 256;
	r = gmfp_source_new(&s->src, &ops, s);
	if (r)
		goto fail;
	s->lfd = gvm_listen(addr, 16, port, err, sizeof(err));
	if (s->lfd < 0) {
		r = s->lfd;
		goto fail;
	}
	r = -pthread_create(&s->acceptor, NULL, accept_thread, s);
	if (r) {
		close(s->lfd);
		goto fail;
	}
	*out = s;
	return 0;
fail:
	if (s->src)
		gmfp_source_destroy(s->src);
	pthread_mutex_destroy(&s->lock);
	free(s);
	return r;
}

void gvm_server_stats(struct gvm_server *s, struct gvm_server_stats *st)
{
	st->connections = atomic_load(&s->connections);
	st->requests = atomic_load(&s->requests);
	st->pages_demand = atomic_load(&s->pages_demand);
	st->pages_background = atomic_load(&s->pages_background);
}

void gvm_server_stop(struct gvm_server *s)
{
	int i;

	if (!s)
		return;
	atomic_store(&s->stop, true);
	pthread_join(s->acceptor, NULL);
	close(s->lfd);
	for (i = 0; i < MAX_CONNS; i++)
		if (s->used[i])
			shutdown(s->conns[i], SHUT_RDWR);
	for (i = 0; i < MAX_CONNS; i++)
		if (s->used[i]) {
			pthread_join(s->threads[i], NULL);
			close(s->conns[i]);
		}
	gmfp_source_destroy(s->src);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

/* ---- sockets ---- */

static int split_hostport(const char *hp, char *host, size_t hl, char *port, size_t pl)
{
	const char *colon = strrchr(hp, ':');
	size_t n;

	if (!colon) {
		snprintf(host, hl, "127.0.0.1");
		snprintf(port, pl, "%s", hp);
		return *hp ? 0 : -EINVAL;
	}
	n = (size_t)(colon - hp);
	if (n && hp[0] == '[' && hp[n - 1] == ']') {
		hp++;
		n -= 2;
	}
	if (n >= hl || !colon[1] || strlen(colon + 1) >= pl)
		return -EINVAL;
	memcpy(host, hp, n);
	host[n] = 0;
	if (!n)
		snprintf(host, hl, "0.0.0.0");
	snprintf(port, pl, "%s", colon + 1);
	return 0;
}

int gvm_listen(const char *addr, int backlog, uint16_t *port, char *err, size_t len)
{
	char host[256], svc[32];
	struct addrinfo hints, *ai, *p;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	int fd = -1, r, one = 1;

	if (split_hostport(addr, host, sizeof(host), svc, sizeof(svc))) {
		snprintf(err, len, "%s: not HOST:PORT", addr);
		return -EINVAL;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	r = getaddrinfo(host, svc, &hints, &ai);
	if (r) {
		snprintf(err, len, "%s: %s", addr, gai_strerror(r));
		return -EINVAL;
	}
	r = -EADDRNOTAVAIL;
	for (p = ai; p; p = p->ai_next) {
		fd = socket(p->ai_family, p->ai_socktype | SOCK_CLOEXEC, p->ai_protocol);
		if (fd < 0)
			continue;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (!bind(fd, p->ai_addr, p->ai_addrlen) && !listen(fd, backlog))
			break;
		r = -errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(ai);
	if (fd < 0) {
		snprintf(err, len, "listen on %s: %s", addr, strerror(-r));
		return r;
	}
	if (port && !getsockname(fd, (struct sockaddr *)&ss, &sl))
		*port = ntohs(ss.ss_family == AF_INET6 ?
			      ((struct sockaddr_in6 *)&ss)->sin6_port :
			      ((struct sockaddr_in *)&ss)->sin_port);
	return fd;
}

int gvm_connect(const char *hostport, int timeout_ms, char *err, size_t len)
{
	char host[256], svc[32];
	struct addrinfo hints, *ai, *p;
	double end = gvm_now() + timeout_ms / 1000.0;
	int fd = -1, r, one = 1;

	if (split_hostport(hostport, host, sizeof(host), svc, sizeof(svc))) {
		snprintf(err, len, "%s: not HOST:PORT", hostport);
		return -EINVAL;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV;
	r = getaddrinfo(host, svc, &hints, &ai);
	if (r) {
		snprintf(err, len, "%s: %s", hostport, gai_strerror(r));
		return -EINVAL;
	}
	/* the destination may not listen yet: retry until the deadline */
	for (;;) {
		r = -ECONNREFUSED;
		for (p = ai; p; p = p->ai_next) {
			fd = socket(p->ai_family, p->ai_socktype | SOCK_CLOEXEC, p->ai_protocol);
			if (fd < 0)
				continue;
			if (!connect(fd, p->ai_addr, p->ai_addrlen))
				break;
			r = -errno;
			close(fd);
			fd = -1;
		}
		if (fd >= 0 || gvm_now() >= end)
			break;
		usleep(50000);
	}
	freeaddrinfo(ai);
	if (fd < 0) {
		snprintf(err, len, "connect to %s: %s", hostport, strerror(-r));
		return r;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

static int io_full(int fd, void *buf, size_t len, bool wr, int timeout_ms)
{
	uint8_t *p = buf;
	double end = timeout_ms < 0 ? 1e300 : gvm_now() + timeout_ms / 1000.0;

	while (len) {
		struct pollfd pf = { .fd = fd, .events = wr ? POLLOUT : POLLIN };
		double left = end - gvm_now();
		ssize_t n;
		int r;

		if (left <= 0)
			return -ETIMEDOUT;
		r = poll(&pf, 1, left > 1e6 ? -1 : (int)(left * 1000) + 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (!r)
			continue;
		n = wr ? send(fd, p, len, MSG_NOSIGNAL) : recv(fd, p, len, 0);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n < 0)
			return errno == ECONNRESET ? -EPIPE : -errno;
		if (!n)
			return -EPIPE;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int gvm_send_msg(int fd, uint32_t type, uint64_t a, uint64_t b, uint64_t c,
		 const void *payload, size_t len)
{
	struct gv_mig_msg m;
	int r;

	memset(&m, 0, sizeof(m));
	m.magic = GV_MIG_MAGIC;
	m.type = type;
	m.len = len;
	m.a = a;
	m.b = b;
	m.c = c;
	r = io_full(fd, &m, sizeof(m), true, 30000);
	if (!r && len)
		r = io_full(fd, (void *)payload, len, true, 30000);
	return r;
}

int gvm_recv_msg(int fd, struct gv_mig_msg *m, void **payload, int timeout_ms)
{
	int r = io_full(fd, m, sizeof(*m), false, timeout_ms);

	if (payload)
		*payload = NULL;
	if (r)
		return r;
	if (m->magic != GV_MIG_MAGIC || m->len > (64u << 20))
		return -EPROTO;
	if (m->len) {
		void *buf = malloc(m->len);

		if (!buf)
			return -ENOMEM;
		r = io_full(fd, buf, m->len, false, 30000);
		if (r || !payload) {
			free(buf);
			return r ? r : -EPROTO;
		}
		*payload = buf;
	}
	return 0;
}
