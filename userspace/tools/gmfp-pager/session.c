// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * gmfp-pager: one session, on its own thread, per accepted connection.
 *
 * Handshake: the peer may ask for the status any number of times and then
 * attach once; each request must come within --timeout-ms, or the peer is
 * dropped (a connection flood holds its slots for that long at most).
 * Attach: the fds that came with the ATTACH are checked against what it
 * says (sizes, which guest_memfd each is, that the regions of a guest_memfd
 * cover all of it, that the image holds every region), a source and an
 * engine are built, and the engine is started with GMFP_ENGINE_RENOTIFY:
 * if a pager served these guest_memfds before and died, the accessors
 * whose records it had read and not served fault again.  Then the session
 * waits for its socket as long as it takes; end of file (the VMM detached
 * or died) stops the engine, and pages not yet present stay so.
 *
 * The engine serves whole guest_memfds, numbered in order of first
 * appearance; the source it sees (map_fetch) turns a guest_memfd page into
 * the region that names it and the page within that region, which is what
 * both the image (a file offset per region) and a page server (regions
 * numbered as in the ATTACH) are indexed by.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gmfp_wire.h"
#include "pagerd.h"

#define PG GMFP_PAGE_SIZE
#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define HISTORY_JSON_MAX 4096
#define ERROR_LOG_INTERVAL_NS 1000000000ull

static void close_fds(int *fds, unsigned int n)
{
	unsigned int i;

	for (i = 0; i < n; i++)
		if (fds[i] >= 0)
			close(fds[i]);
}

/* ---- the source the engine sees ---- */

/*
 * Engine region = a guest_memfd; a fetch may cross from one of its regions
 * into the next (two memslots back to back): split it there.
 */
static int map_fetch(void *ctx, struct gmfp_fetch *f)
{
	struct session *s = ctx;
	const struct gmem *g;
	uint64_t pg = f->pgoff;
	uint32_t done = 0;

	if (f->region >= s->nr_gmems)
		return -EINVAL;
	g = &s->gmems[f->region];
	while (done < f->npages) {
		const struct extent *e = NULL;
		uint64_t zero[GMFP_WIRE_MAX_PAGES / 64];
		struct gmfp_fetch sub;
		uint32_t i, k;
		int r;

		for (i = g->ext_start; i < g->ext_start + g->ext_count; i++)
			if (pg >= s->ext[i].first && pg < s->ext[i].first + s->ext[i].npages) {
				e = &s->ext[i];
				break;
			}
		if (!e)		/* the regions cover every guest_memfd: cannot be */
			return -EINVAL;
		k = f->npages - done;
		if (k > e->first + e->npages - pg)
			k = (uint32_t)(e->first + e->npages - pg);
		if (k > GMFP_WIRE_MAX_PAGES)
			k = GMFP_WIRE_MAX_PAGES;
		memset(&sub, 0, sizeof(sub));
		memset(zero, 0, sizeof(zero));
		sub.region = e->region;
		sub.flags = f->flags;
		sub.pgoff = pg - e->first;
		sub.npages = k;
		sub.buf = (char *)f->buf + (size_t)done * PG;
		sub.zero = f->zero ? zero : NULL;
		r = gmfp_source_fetch(s->inner, &sub);
		if (r)
			return r;
		if (f->zero)
			for (i = 0; i < k; i++)
				if (zero[i / 64] & (1ull << (i % 64)))
					f->zero[(done + i) / 64] |= 1ull << ((done + i) % 64);
		pg += k;
		done += k;
	}
	return 0;
}

static void on_engine_error(void *arg, uint32_t region, uint64_t pgoff, uint32_t npages,
			    int err)
{
	struct session *s = arg;
	uint64_t now = pagerd_now_ns(), last = atomic_load(&s->last_err_log_ns);
	char eb[64];

	atomic_fetch_add(&s->errors_logged, 1);
	/* a dead source fails every retry: one line a second is plenty */
	if (now - last < ERROR_LOG_INTERVAL_NS ||
	    !atomic_compare_exchange_strong(&s->last_err_log_ns, &last, now))
		return;
	pagerd_log(s->d, "session %u: pages %" PRIu64 "..%" PRIu64 " of guest_memfd %u: %s"
		   " (not made present; retrying)", s->id, pgoff, pgoff + npages - 1, region,
		   pagerd_strerror(err, eb, sizeof(eb)));
}

static void *waiter_main(void *arg)
{
	struct session *s = arg;
	uint64_t t, ms;

	/* 0 once every page is present (and, with FINISH, finished) */
	if (gmfp_engine_wait(s->eng, -1))
		return NULL;
	t = pagerd_now_ns();
	atomic_store(&s->t_complete_ns, t);
	ms = (t - s->t_attach_ns) / 1000000;
	pagerd_log(s->d, "session %u: complete: %" PRIu64 " pages fetched in %" PRIu64 " ms",
		   s->id, s->pages_total - s->pages_at_attach, ms);
	return NULL;
}

/* ---- attach ---- */

struct why {
	char *buf;
	size_t len;
	uint32_t region;
};

static int deny(struct why *w, uint32_t region, int err, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int deny(struct why *w, uint32_t region, int err, const char *fmt, ...)
{
	va_list ap;
	int n = 0;

	w->region = region;
	if (region != GMFP_PAGER_NO_REGION)
		n = snprintf(w->buf, w->len, "region %u: ", region);
	va_start(ap, fmt);
	vsnprintf(w->buf + n, w->len - (size_t)n, fmt, ap);
	va_end(ap);
	return err;
}

/* Which distinct guest_memfd each region's fd is; their sizes. */
static int find_gmems(struct session *s, const int *fds, uint32_t *gmem_of, struct why *w)
{
	const struct gmfp_pager_attach_msg *a = &s->req;
	uint32_t i, k;

	for (i = 0; i < a->nr_regions; i++) {
		const struct gmfp_pager_wire_region *r = &a->regions[i];
		struct stat st;

		if (fstat(fds[i], &st))
			return deny(w, i, -EBADF, "cannot fstat its fd");
		for (k = 0; k < s->nr_gmems; k++)
			if (s->gmems[k].dev == st.st_dev && s->gmems[k].ino == st.st_ino)
				break;
		if (k == s->nr_gmems) {
			struct gmem *g = &s->gmems[s->nr_gmems++];

			g->dev = st.st_dev;
			g->ino = st.st_ino;
			g->fd = fds[i];
			g->size = st.st_size > 0 ? (uint64_t)st.st_size : 0;
			g->first_region = i;
			g->private_mem = r->flags & GMFP_PAGER_PRIVATE;
		}
		gmem_of[i] = k;
		if (r->gmem_offset + r->size > s->gmems[k].size)
			return deny(w, i, -EINVAL, "bytes %#" PRIx64 "..%#" PRIx64
				    " are beyond its guest_memfd (%" PRIu64 " bytes)",
				    r->gmem_offset, r->gmem_offset + r->size - 1, s->gmems[k].size);
		if (!!(r->flags & GMFP_PAGER_PRIVATE) != s->gmems[k].private_mem)
			return deny(w, i, -EINVAL, "region %u names the same guest_memfd and"
				    " disagrees on GMFP_PAGER_PRIVATE", s->gmems[k].first_region);
	}
	return 0;
}

/*
 * The regions of each guest_memfd, sorted by offset, must tile it: the
 * engine serves (and background-fills) every page of a guest_memfd, and a
 * page no region names has no contents to serve.
 */
static int tile(struct session *s, const uint32_t *gmem_of, struct why *w)
{
	const struct gmfp_pager_attach_msg *a = &s->req;
	uint32_t g, i, j, n = 0;

	for (g = 0; g < s->nr_gmems; g++) {
		struct gmem *gm = &s->gmems[g];
		uint64_t pos = 0;

		gm->ext_start = n;
		for (i = 0; i < a->nr_regions; i++) {
			struct extent e;

			if (gmem_of[i] != g)
				continue;
			e.region = i;
			e.first = a->regions[i].gmem_offset / PG;
			e.npages = a->regions[i].size / PG;
			/* insertion sort by first page */
			for (j = n; j > gm->ext_start && s->ext[j - 1].first > e.first; j--)
				s->ext[j] = s->ext[j - 1];
			s->ext[j] = e;
			n++;
		}
		gm->ext_count = n - gm->ext_start;
		for (i = gm->ext_start; i < n; i++) {
			const struct extent *e = &s->ext[i];

			if (e->first * PG < pos)
				return deny(w, e->region, -EINVAL,
					    "overlaps region %u in their guest_memfd",
					    s->ext[i - 1].region);
			if (e->first * PG > pos)
				break;
			pos = (e->first + e->npages) * PG;
		}
		if (pos < gm->size)
			return deny(w, gm->first_region, -EINVAL,
				    "bytes %#" PRIx64 "..%#" PRIx64 " of its guest_memfd are in"
				    " no region: name all of a guest_memfd", pos,
				    (i < n ? s->ext[i].first * PG : gm->size) - 1);
	}
	return 0;
}

/* No other session may serve one of our guest_memfds: two engines would race. */
static int claim(struct session *s, struct why *w)
{
	struct pagerd *d = s->d;
	struct session *o;
	uint32_t i, k;
	int r = 0;

	pthread_mutex_lock(&d->lock);
	for (o = d->sessions; o && !r; o = o->next) {
		if (o == s || !o->claimed)
			continue;
		for (i = 0; i < s->nr_gmems && !r; i++)
			for (k = 0; k < o->nr_gmems; k++)
				if (o->gmems[k].dev == s->gmems[i].dev &&
				    o->gmems[k].ino == s->gmems[i].ino) {
					r = deny(w, s->gmems[i].first_region, -EBUSY,
						 "its guest_memfd is served by session %u", o->id);
					break;
				}
	}
	if (!r)
		s->claimed = true;
	pthread_mutex_unlock(&d->lock);
	return r;
}

static int make_file_source(struct session *s, int img, struct why *w)
{
	const struct gmfp_pager_attach_msg *a = &s->req;
	GMFP_OPTS_INIT(struct gmfp_file_opts, fo);
	uint64_t offs[GMFP_PAGER_MAX_REGIONS], size;
	struct stat st;
	char eb[64];
	uint32_t i;
	int fl, r;

	if (fstat(img, &st))
		return deny(w, GMFP_PAGER_NO_REGION, -EBADF, "cannot fstat the image");
	if (S_ISREG(st.st_mode)) {
		size = (uint64_t)st.st_size;
	} else if (S_ISBLK(st.st_mode)) {
		/* not lseek(): the VMM shares this file's offset */
		if (ioctl(img, BLKGETSIZE64, &size))
			return deny(w, GMFP_PAGER_NO_REGION, -EBADF,
				    "cannot get the size of the image device");
	} else {
		return deny(w, GMFP_PAGER_NO_REGION, -EBADF,
			    "the image is not a regular file or a block device");
	}
	fl = fcntl(img, F_GETFL);
	if (fl < 0 || (fl & O_ACCMODE) == O_WRONLY)
		return deny(w, GMFP_PAGER_NO_REGION, -EBADF, "the image is not open for reading");
	for (i = 0; i < a->nr_regions; i++) {
		const struct gmfp_pager_wire_region *rg = &a->regions[i];

		if (rg->file_offset + rg->size > size)
			return deny(w, i, -EINVAL, "image bytes %#" PRIx64 "..%#" PRIx64
				    " are past its end (%" PRIu64 " bytes)", rg->file_offset,
				    rg->file_offset + rg->size - 1, size);
		offs[i] = rg->file_offset;
	}
	fo.fd = img;
	fo.region_offsets = offs;
	fo.nr_regions = a->nr_regions;
	r = gmfp_source_file(&s->inner, &fo);
	if (r)
		return deny(w, GMFP_PAGER_NO_REGION, r, "cannot read the image: %s",
			    pagerd_strerror(r, eb, sizeof(eb)));
	return 0;
}

static int make_tcp_source(struct session *s, struct why *w)
{
	const struct gmfp_pager_attach_msg *a = &s->req;
	GMFP_OPTS_INIT(struct gmfp_tcp_opts, to);
	uint64_t sizes[GMFP_PAGER_MAX_REGIONS];
	char eb[64];
	uint32_t i;
	int r;

	for (i = 0; i < a->nr_regions; i++)
		sizes[i] = a->regions[i].size;
	to.host = a->host[0] ? a->host : NULL;
	to.port = a->port;
	to.timeout_ms = a->tcp_timeout_ms;
	to.connect_timeout_ms = a->tcp_connect_timeout_ms;
	/* the page server's layout is the ATTACH's regions, checked on connect */
	to.nr_regions = a->nr_regions;
	to.region_sizes = sizes;
	r = gmfp_source_tcp(&s->inner, &to);
	if (r)
		return deny(w, GMFP_PAGER_NO_REGION, r, "cannot set up the TCP source: %s",
			    pagerd_strerror(r, eb, sizeof(eb)));
	return 0;
}

#ifdef PAGERD_TEST_KOPS
/*
 * Only in the unit test's build of the daemon (tests/unit/test_pager.c): a
 * fake kernel behind the engine, so that the host can run the real serving
 * path without a presence guest_memfd.
 */
void pagerd_test_kops(struct gmfp_engine *e);
#endif

static int start_engine(struct session *s, struct why *w)
{
	static const enum gmfp_bg_order orders[] = {
		[GMFP_PAGER_BG_SEQUENTIAL] = GMFP_BG_SEQUENTIAL,
		[GMFP_PAGER_BG_NONE] = GMFP_BG_NONE,
		[GMFP_PAGER_BG_AROUND_DEMAND] = GMFP_BG_AROUND_DEMAND,
	};
	const struct gmfp_pager_attach_msg *a = &s->req;
	GMFP_OPTS_INIT(struct gmfp_source_ops, ops);
	GMFP_OPTS_INIT(struct gmfp_engine_opts, eo);
	GMFP_OPTS_INIT(struct gmfp_engine_stats, st);
	char eb[64];
	uint32_t g;
	int r;

	s->workers = a->workers ? a->workers : s->d->default_workers;
	if (s->workers > s->d->max_workers)
		return deny(w, GMFP_PAGER_NO_REGION, -EINVAL,
			    "%u workers asked for, this pager allows %u", s->workers,
			    s->d->max_workers);
	ops.fetch = map_fetch;
	ops.max_pages = GMFP_WIRE_MAX_PAGES;
	r = gmfp_source_new(&s->src, &ops, s);
	if (r)
		return deny(w, GMFP_PAGER_NO_REGION, r, "out of memory");
	eo.workers = s->workers;
	eo.max_batch = a->max_batch;
	eo.demand_readahead = a->demand_readahead;
	eo.bg_order = orders[a->bg_order];
	/* RENOTIFY always: we may be taking over from a pager that died */
	eo.flags = GMFP_ENGINE_RENOTIFY;
	if (a->flags & GMFP_PAGER_MARK_ZERO)
		eo.flags |= GMFP_ENGINE_MARK_ZERO;
	if (a->flags & GMFP_PAGER_FINISH)
		eo.flags |= GMFP_ENGINE_FINISH;
	eo.on_error = on_engine_error;
	eo.cb_arg = s;
	r = gmfp_engine_new(&s->eng, s->src, &eo);
	if (r)
		return deny(w, GMFP_PAGER_NO_REGION, r, "cannot create the engine: %s",
			    pagerd_strerror(r, eb, sizeof(eb)));
#ifdef PAGERD_TEST_KOPS
	pagerd_test_kops(s->eng);
#endif
	for (g = 0; g < s->nr_gmems; g++) {
		r = gmfp_engine_add(s->eng, s->gmems[g].fd, NULL);
		if (r == -ENOTTY)
			return deny(w, s->gmems[g].first_region, r,
				    "not a guest_memfd with presence tracking");
		if (r)
			return deny(w, s->gmems[g].first_region, r,
				    "cannot serve its guest_memfd: %s",
				    pagerd_strerror(r, eb, sizeof(eb)));
	}
	gmfp_engine_get_stats(s->eng, &st);
	s->pages_total = st.pages_total;
	s->pages_at_attach = st.pages_present;
	r = gmfp_engine_start(s->eng);
	if (r)
		return deny(w, GMFP_PAGER_NO_REGION, r, "cannot start the engine: %s",
			    pagerd_strerror(r, eb, sizeof(eb)));
	s->t_attach_ns = pagerd_now_ns();
	r = -pthread_create(&s->waiter, NULL, waiter_main, s);
	if (r)
		return deny(w, GMFP_PAGER_NO_REGION, r, "cannot start a thread");
	s->waiter_started = true;
	return 0;
}

static void release(struct session *s)
{
	struct pagerd *d = s->d;

	if (s->eng)
		gmfp_engine_stop(s->eng);
	if (s->waiter_started)
		pthread_join(s->waiter, NULL);
	s->waiter_started = false;
	pthread_mutex_lock(&d->lock);
	s->engine = NULL;
	s->claimed = false;
	pthread_mutex_unlock(&d->lock);
	gmfp_engine_destroy(s->eng);
	s->eng = NULL;
	gmfp_source_destroy(s->src);
	s->src = NULL;
	gmfp_source_destroy(s->inner);
	s->inner = NULL;
}

/*
 * Take over the guest_memfds of an ATTACH.  Consumes @fds (the engine and
 * the file source keep dups of what they need).  0, or -errno with the
 * explanation in @w.
 */
static int attach(struct session *s, int *fds, unsigned int nfds, struct why *w)
{
	const struct gmfp_pager_attach_msg *a = &s->req;
	unsigned int want = a->nr_regions + (a->source == GMFP_PAGER_SRC_FILE);
	uint32_t gmem_of[GMFP_PAGER_MAX_REGIONS];
	int r;

	if (nfds != want) {
		r = deny(w, GMFP_PAGER_NO_REGION, -EINVAL,
			 "%u file descriptors sent, %u expected (one per region%s)", nfds,
			 want, a->source == GMFP_PAGER_SRC_FILE ? ", then the image" : "");
		goto out;
	}
	s->nr_gmems = 0;
	r = find_gmems(s, fds, gmem_of, w);
	if (!r)
		r = tile(s, gmem_of, w);
	if (!r)
		r = claim(s, w);
	if (r)
		goto out;
	if (a->source == GMFP_PAGER_SRC_FILE)
		r = make_file_source(s, fds[a->nr_regions], w);
	else
		r = make_tcp_source(s, w);
	if (!r)
		r = start_engine(s, w);
	if (r) {
		release(s);
		goto out;
	}
	pthread_mutex_lock(&s->d->lock);
	s->engine = s->eng;
	s->state = SESSION_SERVING;
	s->d->n.attached++;
	pthread_mutex_unlock(&s->d->lock);
out:
	if (r) {
		pthread_mutex_lock(&s->d->lock);
		s->claimed = false;
		s->d->n.attach_failed++;
		pthread_mutex_unlock(&s->d->lock);
	}
	close_fds(fds, nfds);
	return r;
}

/* ---- status ---- */

static const char *state_name(const struct session *s)
{
	switch (s->state) {
	case SESSION_HANDSHAKE:
		return "handshake";
	case SESSION_SERVING:
		return atomic_load(&s->t_complete_ns) ? "complete" : "serving";
	default:
		return s->end_reason ? "ended" : "closing";
	}
}

void session_json(struct session *s, struct jbuf *j, bool detail)
{
	GMFP_OPTS_INIT(struct gmfp_engine_stats, st);
	const struct gmfp_pager_attach_msg *a = &s->req;
	uint64_t now = pagerd_now_ns(), tc, end, fetched, pps;
	struct gmfp_source_stats ss;
	uint32_t i;
	int n;

	jb_printf(j, "{\"id\":%u,\"pid\":%d,\"uid\":%u,\"state\":\"%s\"", s->id, (int)s->pid,
		  (unsigned int)s->uid, state_name(s));
	if (s->end_reason)
		jb_printf(j, ",\"end\":\"%s\"", s->end_reason);
	jb_printf(j, ",\"age_ms\":%" PRIu64, (now - s->t_connect_ns) / 1000000);
	if (!s->engine) {
		jb_printf(j, "}");
		return;
	}
	gmfp_engine_get_stats(s->engine, &st);
	memset(&ss, 0, sizeof(ss));
	gmfp_source_get_stats(s->inner, &ss);
	tc = atomic_load(&s->t_complete_ns);
	end = tc ? tc : now;
	fetched = st.pages_present > s->pages_at_attach ? st.pages_present - s->pages_at_attach : 0;
	pps = end > s->t_attach_ns ? fetched * 1000000000ull / (end - s->t_attach_ns) : 0;
	jb_printf(j, ",\"regions\":%u,\"gmems\":%u,\"source\":{\"type\":\"%s\"", a->nr_regions,
		  s->nr_gmems, a->source == GMFP_PAGER_SRC_FILE ? "file" : "tcp");
	if (a->source == GMFP_PAGER_SRC_TCP) {
		jb_printf(j, ",\"host\":");
		jb_str(j, a->host[0] ? a->host : "127.0.0.1");
		jb_printf(j, ",\"port\":");
		jb_str(j, a->port);
	}
	jb_printf(j, ",\"requests\":%" PRIu64 ",\"pages\":%" PRIu64 ",\"failures\":%" PRIu64
		  ",\"reconnects\":%" PRIu64 "}", ss.requests, ss.pages, ss.failures,
		  ss.reconnects);
	jb_printf(j, ",\"workers\":%u,\"gmem_pages\":%" PRIu64 ",\"pages_at_attach\":%" PRIu64
		  ",\"present\":%" PRIu64 ",\"fetched\":%" PRIu64 ",\"complete\":%s"
		  ",\"serving_ms\":%" PRIu64 ",\"pages_per_s\":%" PRIu64, s->workers,
		  s->pages_total, s->pages_at_attach, st.pages_present, fetched,
		  tc ? "true" : "false", (end - s->t_attach_ns) / 1000000, pps);
	if (detail) {
		jb_printf(j, ",\"region_list\":[");
		for (i = 0; i < a->nr_regions; i++)
			jb_printf(j, "%s{\"gmem_offset\":%" PRIu64 ",\"size\":%" PRIu64
				  ",\"gpa\":%" PRIu64 ",\"file_offset\":%" PRIu64
				  ",\"private\":%s}", i ? "," : "", a->regions[i].gmem_offset,
				  a->regions[i].size, a->regions[i].gpa, a->regions[i].file_offset,
				  a->regions[i].flags & GMFP_PAGER_PRIVATE ? "true" : "false");
		jb_printf(j, "]");
	}
	jb_printf(j, ",\"engine\":");
	if (j->over)
		return;
	n = gmfp_engine_stats_json(s->engine, j->buf + j->len, j->cap - j->len);
	if (n < 0 || (size_t)n >= j->cap - j->len) {
		j->over = true;
		j->buf[j->len] = 0;
		return;
	}
	j->len += (size_t)n;
	jb_printf(j, "}");
}

static int send_status(struct session *s, bool own)
{
	struct pagerd *d = s->d;
	struct gmfp_pager_msg m;
	char *buf = malloc(GMFP_PAGER_MAX_JSON + 1);
	int r;

	if (!buf)
		return pagerd_send_error(s->sock, -ENOMEM, GMFP_PAGER_NO_REGION, d->timeout_ms,
					 "out of memory");
	memset(&m, 0, sizeof(m));
	m.type = GMFP_PAGER_STATUS_REPLY;
	pthread_mutex_lock(&d->lock);
	if (own) {
		struct jbuf j = { .buf = buf, .cap = GMFP_PAGER_MAX_JSON + 1 };

		jb_printf(&j, "{\"session\":");
		session_json(s, &j, true);
		jb_printf(&j, "}");
		m.u.status.len = (uint32_t)j.len;
	} else {
		m.u.status.len = (uint32_t)pagerd_status_json(d, buf, GMFP_PAGER_MAX_JSON + 1);
	}
	pthread_mutex_unlock(&d->lock);
	m.u.status.json = buf;
	r = pagerd_send(s->sock, &m, d->timeout_ms);
	free(buf);
	return r;
}

/* An ended attached session stays in the status for a while. */
static void remember(struct session *s)
{
	struct pagerd *d = s->d;
	char *buf = malloc(HISTORY_JSON_MAX);
	struct jbuf j = { .buf = buf, .cap = HISTORY_JSON_MAX };

	pthread_mutex_lock(&d->lock);
	d->n.ended++;
	if (buf) {
		session_json(s, &j, false);
		if (j.over) {
			free(buf);
		} else {
			free(d->history[d->history_next]);
			d->history[d->history_next] = buf;
			d->history_next = (d->history_next + 1) % PAGERD_HISTORY;
		}
	}
	pthread_mutex_unlock(&d->lock);
}

/* Stop serving: the engine stops, pages not present stay so. */
static void teardown(struct session *s, const char *reason)
{
	GMFP_OPTS_INIT(struct gmfp_engine_stats, st);
	struct pagerd *d = s->d;
	struct gmfp_source_stats ss;

	pthread_mutex_lock(&d->lock);
	s->state = SESSION_CLOSING;
	s->end_reason = reason;
	pthread_mutex_unlock(&d->lock);
	gmfp_engine_stop(s->eng);
	if (s->waiter_started)
		pthread_join(s->waiter, NULL);
	s->waiter_started = false;
	remember(s);
	gmfp_engine_get_stats(s->eng, &st);
	memset(&ss, 0, sizeof(ss));
	gmfp_source_get_stats(s->inner, &ss);
	pagerd_log(d, "session %u: %s: %" PRIu64 " of %" PRIu64 " pages present, %" PRIu64
		   " fetched from the source (%" PRIu64 " failed requests)", s->id, reason,
		   st.pages_present, st.pages_total, ss.pages, ss.failures);
	release(s);
}

/* ---- the connection ---- */

/*
 * The next packet, with the fds that came with it, within @timeout_ms
 * (< 0: no limit).  Returns its length (0: end of file), -ETIMEDOUT,
 * -ECANCELED (the daemon shuts down), -EMSGSIZE (too large: dropped),
 * -ETOOMANYREFS (more fds than any request carries: all closed), -errno.
 */
static ssize_t recv_packet(struct session *s, uint8_t *buf, size_t size, int *fds,
			   unsigned int *nfds, int timeout_ms)
{
	union {
		char b[CMSG_SPACE(sizeof(int) * GMFP_PAGER_MAX_FDS)];
		struct cmsghdr align;
	} ctl;
	uint64_t deadline = pagerd_now_ns() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0) * 1000000;

	*nfds = 0;
	for (;;) {
		struct pollfd p[2] = {
			{ .fd = s->sock, .events = POLLIN },
			{ .fd = s->d->stopfd, .events = POLLIN },
		};
		struct iovec iov = { .iov_base = buf, .iov_len = size };
		struct msghdr mh;
		struct cmsghdr *c;
		bool too_many = false;
		int tmo = -1, r;
		ssize_t n;

		if (timeout_ms >= 0) {
			uint64_t now = pagerd_now_ns();

			if (now >= deadline)
				return -ETIMEDOUT;
			tmo = (int)((deadline - now) / 1000000 + 1);
		}
		r = poll(p, 2, tmo);
		if (r < 0 && errno != EINTR)
			return -errno;
		if (r <= 0)
			continue;
		if (p[1].revents)
			return -ECANCELED;
		memset(&mh, 0, sizeof(mh));
		mh.msg_iov = &iov;
		mh.msg_iovlen = 1;
		mh.msg_control = ctl.b;
		mh.msg_controllen = sizeof(ctl.b);
		n = recvmsg(s->sock, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
				continue;
			return -errno;
		}
		for (c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
			size_t i, k;

			if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
				continue;
			k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
			for (i = 0; i < k; i++) {
				int fd;

				memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
				/*
				 * The control buffer's alignment slack takes an fd
				 * or so more than GMFP_PAGER_MAX_FDS without
				 * MSG_CTRUNC: too many all the same.
				 */
				if (*nfds < GMFP_PAGER_MAX_FDS) {
					fds[(*nfds)++] = fd;
				} else {
					close(fd);
					too_many = true;
				}
			}
		}
		if (too_many || (mh.msg_flags & (MSG_CTRUNC | MSG_TRUNC))) {
			close_fds(fds, *nfds);
			*nfds = 0;
			return mh.msg_flags & MSG_TRUNC ? -EMSGSIZE : -ETOOMANYREFS;
		}
		if (!n) {
			close_fds(fds, *nfds);
			*nfds = 0;
		}
		return n;
	}
}

static const char *type_name(uint16_t t)
{
	static const char *const names[] = {
		[GMFP_PAGER_ATTACH] = "ATTACH", [GMFP_PAGER_ATTACHED] = "ATTACHED",
		[GMFP_PAGER_STATUS] = "STATUS", [GMFP_PAGER_STATUS_REPLY] = "STATUS_REPLY",
		[GMFP_PAGER_DETACH] = "DETACH", [GMFP_PAGER_DETACHED] = "DETACHED",
		[GMFP_PAGER_ERROR] = "ERROR",
	};

	return t < ARRAY_LEN(names) && names[t] ? names[t] : "unknown";
}

/* Tell a peer what was wrong with what it sent; counts a protocol error. */
static void bad_request(struct session *s, ssize_t err, size_t len,
			const struct gmfp_pager_msg *m)
{
	struct pagerd *d = s->d;
	uint32_t region = GMFP_PAGER_NO_REGION;
	const char *why = NULL;

	pthread_mutex_lock(&d->lock);
	d->n.protocol_errors++;
	pthread_mutex_unlock(&d->lock);
	switch (err) {
	case -EPROTONOSUPPORT:
		pagerd_send_error(s->sock, -EPROTONOSUPPORT, region, d->timeout_ms,
				  "protocol version %u is not supported: this pager speaks %u",
				  m->version, GMFP_PAGER_VERSION);
		break;
	case -EMSGSIZE:
		pagerd_send_error(s->sock, -EMSGSIZE, region, d->timeout_ms,
				  "message too large (a request has at most %u bytes)",
				  GMFP_PAGER_MAX_REQUEST);
		break;
	case -ETOOMANYREFS:
		pagerd_send_error(s->sock, -EINVAL, region, d->timeout_ms,
				  "more than %u file descriptors", GMFP_PAGER_MAX_FDS);
		break;
	case -EINVAL:
		gmfp_pager_check_attach(&m->u.attach, &region, &why);
		if (region != GMFP_PAGER_NO_REGION)
			pagerd_send_error(s->sock, -EINVAL, region, d->timeout_ms,
					  "region %u: %s", region, why ? why : "invalid");
		else
			pagerd_send_error(s->sock, -EINVAL, region, d->timeout_ms,
					  "%s", why ? why : "invalid request");
		break;
	default:
		pagerd_send_error(s->sock, -EBADMSG, region, d->timeout_ms,
				  "malformed message (%zu bytes)", len);
		break;
	}
}

/* File descriptors came with a message that takes none: they are closed. */
static int stray_fds(struct session *s, const struct gmfp_pager_msg *m)
{
	struct pagerd *d = s->d;

	pthread_mutex_lock(&d->lock);
	d->n.protocol_errors++;
	pthread_mutex_unlock(&d->lock);
	return pagerd_send_error(s->sock, -EBADMSG, GMFP_PAGER_NO_REGION, d->timeout_ms,
				 "file descriptors sent with a %s message", type_name(m->type));
}

/* A connection that is not attached: STATUS any number of times, then ATTACH. */
static const char *handshake(struct session *s, uint8_t *buf, struct gmfp_pager_msg *m,
			     bool *attached)
{
	struct pagerd *d = s->d;
	int fds[GMFP_PAGER_MAX_FDS];
	unsigned int nfds;
	char text[GMFP_PAGER_ERRMSG_MAX];
	struct why w = { .buf = text, .len = sizeof(text) };
	ssize_t n, r;

	*attached = false;
	for (;;) {
		n = recv_packet(s, buf, GMFP_PAGER_MAX_REQUEST, fds, &nfds, (int)d->timeout_ms);
		if (!n || n == -ECONNRESET)
			return "closed";
		if (n == -ECANCELED)
			return "shutdown";
		if (n == -ETIMEDOUT) {
			pthread_mutex_lock(&d->lock);
			d->n.dropped++;
			pthread_mutex_unlock(&d->lock);
			pagerd_log(d, "session %u (pid %d): no request within %u ms: dropped",
				   s->id, (int)s->pid, d->timeout_ms);
			return "dropped";
		}
		if (n == -EMSGSIZE || n == -ETOOMANYREFS) {
			bad_request(s, n, 0, m);
			return "bad request";
		}
		if (n < 0)
			return "connection error";
		r = gmfp_pager_decode(buf, (size_t)n, m);
		if (r < 0) {
			close_fds(fds, nfds);
			bad_request(s, r, (size_t)n, m);
			return "bad request";
		}
		if (nfds && m->type != GMFP_PAGER_ATTACH) {
			close_fds(fds, nfds);
			stray_fds(s, m);
			return "bad request";
		}
		switch (m->type) {
		case GMFP_PAGER_STATUS:
			if (send_status(s, false)) {
				pthread_mutex_lock(&d->lock);
				d->n.dropped++;
				pthread_mutex_unlock(&d->lock);
				pagerd_log(d, "session %u (pid %d): does not read its replies: dropped",
					   s->id, (int)s->pid);
				return "dropped";
			}
			continue;
		case GMFP_PAGER_DETACH:
			pagerd_send(s->sock, &(struct gmfp_pager_msg){ .type = GMFP_PAGER_DETACHED },
				    d->timeout_ms);
			return "detached";
		case GMFP_PAGER_ATTACH:
			s->req = m->u.attach;
			r = attach(s, fds, nfds, &w);
			if (r) {
				char eb[64];

				pagerd_log(d, "session %u (pid %d): attach refused: %s (%s)", s->id,
					   (int)s->pid, text, pagerd_strerror((int)r, eb, sizeof(eb)));
				pagerd_send_error(s->sock, (int)r, w.region, d->timeout_ms, "%s", text);
				return "attach failed";
			}
			*attached = true;
			return NULL;
		default:
			pthread_mutex_lock(&d->lock);
			d->n.protocol_errors++;
			pthread_mutex_unlock(&d->lock);
			pagerd_send_error(s->sock, -EBADMSG, GMFP_PAGER_NO_REGION, d->timeout_ms,
					  "%s is not a request", type_name(m->type));
			return "bad request";
		}
	}
}

/*
 * An attached connection: wait for as long as the VMM keeps it open.  Bad
 * requests are answered and the session goes on (the VM's restore is worth
 * more than the VMM's mistake), but a VMM that does not read its replies
 * is dropped.
 */
static const char *serve(struct session *s, uint8_t *buf, struct gmfp_pager_msg *m)
{
	struct pagerd *d = s->d;
	int fds[GMFP_PAGER_MAX_FDS];
	unsigned int nfds;
	ssize_t n, r;

	for (;;) {
		n = recv_packet(s, buf, GMFP_PAGER_MAX_REQUEST, fds, &nfds, -1);
		if (!n || n == -ECONNRESET)
			return "connection closed";
		if (n == -ECANCELED)
			return "shutdown";
		if (n < 0 && n != -EMSGSIZE && n != -ETOOMANYREFS)
			return "connection error";
		r = n < 0 ? n : gmfp_pager_decode(buf, (size_t)n, m);
		close_fds(fds, nfds);
		if (r < 0) {
			bad_request(s, r, n > 0 ? (size_t)n : 0, m);
			r = 0;
		} else if (m->type == GMFP_PAGER_ATTACH) {
			r = pagerd_send_error(s->sock, -EISCONN, GMFP_PAGER_NO_REGION,
					      d->timeout_ms, "this connection is attached already");
		} else if (nfds) {
			r = stray_fds(s, m);
		} else if (m->type == GMFP_PAGER_STATUS) {
			r = send_status(s, true);
		} else if (m->type == GMFP_PAGER_DETACH) {
			/* stopped before we say so: then nothing touches its memory */
			pthread_mutex_lock(&d->lock);
			d->n.detached++;
			pthread_mutex_unlock(&d->lock);
			teardown(s, "detached");
			pagerd_send(s->sock, &(struct gmfp_pager_msg){ .type = GMFP_PAGER_DETACHED },
				    d->timeout_ms);
			return NULL;
		} else {
			r = pagerd_send_error(s->sock, -EBADMSG, GMFP_PAGER_NO_REGION,
					      d->timeout_ms, "%s is not a request here",
					      type_name(m->type));
		}
		if (r) {
			pthread_mutex_lock(&d->lock);
			d->n.dropped++;
			pthread_mutex_unlock(&d->lock);
			return "dropped: the VMM does not read its replies";
		}
	}
}

void *session_main(void *arg)
{
	struct session *s = arg;
	struct pagerd *d = s->d;
	struct gmfp_pager_msg *m = malloc(sizeof(*m));
	uint8_t *buf = malloc(GMFP_PAGER_MAX_REQUEST);
	const char *reason = "out of memory";
	bool attached = false;
	uint64_t one = 1;
	char name[16];

	snprintf(name, sizeof(name), "pager-s%u", s->id);
	pthread_setname_np(pthread_self(), name);
	if (m && buf)
		reason = handshake(s, buf, m, &attached);
	if (attached) {
		const struct gmfp_pager_attach_msg *a = &s->req;

		pagerd_log(d, "session %u (pid %d, uid %u): serving %u region%s in %u guest_memfd%s,"
			   " %" PRIu64 " pages (%" PRIu64 " present) from %s%s%s%s", s->id,
			   (int)s->pid, (unsigned int)s->uid, a->nr_regions,
			   a->nr_regions > 1 ? "s" : "", s->nr_gmems, s->nr_gmems > 1 ? "s" : "",
			   s->pages_total, s->pages_at_attach,
			   a->source == GMFP_PAGER_SRC_FILE ? "an image" : "tcp:",
			   a->source == GMFP_PAGER_SRC_TCP ? (a->host[0] ? a->host : "127.0.0.1") : "",
			   a->source == GMFP_PAGER_SRC_TCP ? ":" : "",
			   a->source == GMFP_PAGER_SRC_TCP ? a->port : "");
		/* the VMM learns it is served only once the engine runs */
		if (pagerd_send(s->sock, &(struct gmfp_pager_msg){
				.type = GMFP_PAGER_ATTACHED,
				.u.attached = { s->id, s->nr_gmems, s->pages_total,
						s->pages_at_attach } }, d->timeout_ms))
			reason = "dropped: the VMM does not read its replies";
		else
			reason = serve(s, buf, m);
		if (reason)
			teardown(s, reason);
	}
	free(m);
	free(buf);
	close(s->sock);
	/* the slot is free now; the main thread joins us */
	pthread_mutex_lock(&d->lock);
	s->finished = true;
	d->nr_sessions--;
	pthread_mutex_unlock(&d->lock);
	if (write(d->reapfd, &one, sizeof(one)) < 0)
		(void)0;	/* EAGAIN: a wakeup is pending anyway */
	return NULL;
}
