// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * The engine's scheduling against a fake kernel (struct gmfp_kops) and fake
 * page sources: dedup, demand before background, batching, background
 * orders, fail-closed behaviour and retries, stats.  The fake keeps the
 * kernel's rules that matter here: one record per not-present period, COPY
 * refuses present pages, accessors wait until their page is present.  The
 * real kernel is exercised by tests/vm/.  Also built under TSan.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/mman.h>
#include <unistd.h>

#include "unit.h"
#include "gmfp_wire.h"

#define PG GMFP_PAGE_SIZE

/* ---- fake kernel ---- */
struct fake {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int gmem;			/* memfd, for fstat/dup */
	int pipe[2];			/* one byte per queued record */
	uint64_t npages;
	uint8_t *mem;
	uint8_t *present, *notified;
	struct gmfp_event *q;
	size_t qn, qcap;
	uint64_t *qtime;		/* fetch-log length when each record was read */
	unsigned int marks, copies, finishes, discards;
	bool finished, cancel;
	struct fetch_log *log;
	/* called by COPY, unlocked, after it made [off, off + len) present */
	void (*after_copy)(struct fake *f, uint64_t off, uint64_t len, void *arg);
	void *hook_arg;
};

struct fetch_log {
	pthread_mutex_t lock;
	size_t n;
	struct { uint32_t region, npages, flags; uint64_t pgoff; } e[65536];
};

static struct fake *fake_new(uint64_t npages, struct fetch_log *log)
{
	struct fake *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	pthread_mutex_init(&f->lock, NULL);
	pthread_cond_init(&f->cond, NULL);
	f->gmem = memfd_create("fake-gmem", MFD_CLOEXEC);
	assert_true(f->gmem >= 0);
	assert_int_equal(ftruncate(f->gmem, (off_t)(npages * PG)), 0);
	assert_int_equal(pipe2(f->pipe, O_NONBLOCK | O_CLOEXEC), 0);
	f->npages = npages;
	f->mem = calloc(npages, PG);
	f->present = calloc(npages, 1);
	f->notified = calloc(npages, 1);
	f->qtime = calloc(npages, sizeof(uint64_t));
	f->qcap = npages;
	f->q = calloc(npages, sizeof(*f->q));
	f->log = log;
	assert_true(f->mem && f->present && f->notified && f->q && f->qtime);
	return f;
}

static void fake_free(struct fake *f)
{
	close(f->gmem);
	close(f->pipe[0]);
	close(f->pipe[1]);
	free(f->mem);
	free(f->present);
	free(f->notified);
	free(f->q);
	free(f->qtime);
	pthread_mutex_destroy(&f->lock);
	pthread_cond_destroy(&f->cond);
	free(f);
}

static size_t log_len(struct fetch_log *l)
{
	size_t n;

	if (!l)
		return 0;
	pthread_mutex_lock(&l->lock);
	n = l->n;
	pthread_mutex_unlock(&l->lock);
	return n;
}

/*
 * An access to page @pg: queue a record if first in its period, then wait;
 * a new period (discard) wakes the waiter, which asks again, as the kernel's
 * gate does.  0 / -ECANCELED
 */
static int fake_access(struct fake *f, uint64_t pg, uint32_t origin)
{
	int r = 0;

	pthread_mutex_lock(&f->lock);
again:
	if (!f->present[pg] && !f->notified[pg]) {
		f->notified[pg] = 1;
		memset(&f->q[f->qn], 0, sizeof(f->q[0]));
		f->q[f->qn].type = GMFP_EVENT_FAULT;
		f->q[f->qn].offset = pg * PG;
		f->q[f->qn].origin = origin;
		f->q[f->qn].vcpu_id = GMFP_NO_VCPU;
		f->qn++;
		assert_int_equal(write(f->pipe[1], "r", 1), 1);
	}
	while (!f->present[pg] && !f->cancel) {
		pthread_cond_wait(&f->cond, &f->lock);
		if (!f->present[pg] && !f->notified[pg])
			goto again;
	}
	if (!f->present[pg])
		r = -ECANCELED;
	pthread_mutex_unlock(&f->lock);
	return r;
}

static void fake_cancel(struct fake *f)
{
	pthread_mutex_lock(&f->lock);
	f->cancel = true;
	pthread_cond_broadcast(&f->cond);
	pthread_mutex_unlock(&f->lock);
}

static struct fake *fake_of(void *ctx, int gmem)
{
	(void)gmem;
	return ctx;
}

static int fk_notify_open(void *ctx, int gmem, unsigned int flags)
{
	struct fake *f = fake_of(ctx, gmem);

	(void)flags;
	return fcntl(f->pipe[0], F_DUPFD_CLOEXEC, 0);
}

static ssize_t fk_notify_read(void *ctx, int nfd, struct gmfp_event *ev, size_t max)
{
	struct fake *f = ctx;
	char c[256];
	size_t n;

	(void)nfd;
	pthread_mutex_lock(&f->lock);
	if (f->finished) {
		pthread_mutex_unlock(&f->lock);
		return 0;
	}
	n = f->qn < max ? f->qn : max;
	if (n > sizeof(c))
		n = sizeof(c);
	if (!n) {
		pthread_mutex_unlock(&f->lock);
		return -EAGAIN;
	}
	memcpy(ev, f->q, n * sizeof(*ev));
	/* when the engine learnt of each page: the fetch log's length then */
	for (size_t k = 0; k < n; k++)
		f->qtime[ev[k].offset / PG] = log_len(f->log);
	memmove(f->q, f->q + n, (f->qn - n) * sizeof(*ev));
	f->qn -= n;
	assert_int_equal(read(f->pipe[0], c, n), (ssize_t)n);
	pthread_mutex_unlock(&f->lock);
	return (ssize_t)n;
}

static int fk_bitmap(void *ctx, int gmem, uint64_t off, uint64_t len, uint64_t *bm)
{
	struct fake *f = fake_of(ctx, gmem);
	uint64_t i;

	memset(bm, 0, GMFP_DIV_ROUND_UP(len / PG, 64) * 8);
	pthread_mutex_lock(&f->lock);
	for (i = 0; i < len / PG; i++)
		if (f->present[off / PG + i])
			bm[i / 64] |= 1ull << (i % 64);
	pthread_mutex_unlock(&f->lock);
	return 0;
}

static int fk_mark(void *ctx, int gmem, uint64_t off, uint64_t len)
{
	struct fake *f = fake_of(ctx, gmem);
	uint64_t i;

	pthread_mutex_lock(&f->lock);
	f->marks++;
	for (i = off / PG; i < (off + len) / PG; i++) {
		f->present[i] = 1;
		f->notified[i] = 0;
	}
	pthread_cond_broadcast(&f->cond);
	pthread_mutex_unlock(&f->lock);
	return 0;
}

static int64_t fk_copy(void *ctx, int gmem, uint64_t off, const void *src,
		       uint64_t len, unsigned int flags, uint64_t *done)
{
	struct fake *f = fake_of(ctx, gmem);
	int64_t skipped = 0;
	uint64_t i;

	pthread_mutex_lock(&f->lock);
	f->copies++;
	for (i = 0; i < len / PG; i++) {
		uint64_t pg = off / PG + i;

		if (f->present[pg]) {
			if (!(flags & GMFP_COPY_SKIP_PRESENT)) {
				*done = i * PG;
				pthread_mutex_unlock(&f->lock);
				return -EEXIST;
			}
			skipped++;
			continue;
		}
		memcpy(f->mem + pg * PG, (const char *)src + i * PG, PG);
		f->present[pg] = 1;
		f->notified[pg] = 0;
	}
	if (done)
		*done = len;
	pthread_cond_broadcast(&f->cond);
	pthread_mutex_unlock(&f->lock);
	if (f->after_copy)
		f->after_copy(f, off, len, f->hook_arg);
	return skipped;
}

static int fk_finish(void *ctx, int gmem)
{
	struct fake *f = fake_of(ctx, gmem);
	uint64_t i;

	pthread_mutex_lock(&f->lock);
	for (i = 0; i < f->npages; i++)
		if (!f->present[i]) {
			pthread_mutex_unlock(&f->lock);
			return -EBUSY;
		}
	f->finished = true;
	f->finishes++;
	/* EOF: make the fd readable for good */
	assert_int_equal(write(f->pipe[1], "e", 1), 1);
	pthread_mutex_unlock(&f->lock);
	return 0;
}

/* Records already queued stay queued, as in the kernel (one per page). */
static int fk_discard(void *ctx, int gmem, uint64_t off, uint64_t len)
{
	struct fake *f = fake_of(ctx, gmem);
	uint64_t i;
	size_t k;

	pthread_mutex_lock(&f->lock);
	for (i = off / PG; i < (off + len) / PG; i++) {
		bool queued = false;

		for (k = 0; k < f->qn; k++)
			queued |= f->q[k].offset == i * PG;
		f->present[i] = 0;
		/* a queued record stands for the new period too */
		f->notified[i] = queued;
		memset(f->mem + i * PG, 0, PG);
	}
	f->discards++;
	pthread_cond_broadcast(&f->cond);
	pthread_mutex_unlock(&f->lock);
	return 0;
}

static int fk_stats(void *ctx, int gmem, struct gmfp_gmem_stats *st)
{
	struct fake *f = fake_of(ctx, gmem);

	memset(st, 0, sizeof(*st));
	pthread_mutex_lock(&f->lock);
	st->nr_pages = f->npages;
	st->flags = f->finished ? GMFP_GMEM_FINISHED : 0;
	pthread_mutex_unlock(&f->lock);
	return 0;
}

static const struct gmfp_kops fake_ops = {
	.notify_open = fk_notify_open, .notify_read = fk_notify_read,
	.bitmap = fk_bitmap, .mark = fk_mark, .copy = fk_copy,
	.finish = fk_finish, .stats = fk_stats, .discard = fk_discard,
};

/* ---- fake sources ---- */
static uint64_t pattern(uint32_t region, uint64_t pg)
{
	return 0x9e3779b97f4a7c15ull * (pg + 1) ^ ((uint64_t)region << 56);
}

struct src_ctx {
	struct fetch_log *log;
	uint32_t sleep_us;
	uint64_t fail_page;		/* UINT64_MAX: none */
	int fail_times;			/* < 0: for ever */
	_Atomic int failed;
	uint32_t zero_every;		/* every n-th page is zero (0: none) */
	bool fail_all;			/* every fetch fails */
	bool fail_odd;			/* fetches with an odd page fail */
	_Atomic uint64_t pages;
	_Atomic int32_t per_page[8192];	/* fetch count per page of region 0 */
};

static int src_fetch(void *ctx, struct gmfp_fetch *f)
{
	struct src_ctx *s = ctx;
	uint32_t i;

	if (s->log) {
		pthread_mutex_lock(&s->log->lock);
		if (s->log->n < GMFP_ARRAY_SIZE(s->log->e)) {
			s->log->e[s->log->n].region = f->region;
			s->log->e[s->log->n].pgoff = f->pgoff;
			s->log->e[s->log->n].npages = f->npages;
			s->log->e[s->log->n].flags = f->flags;
			s->log->n++;
		}
		pthread_mutex_unlock(&s->log->lock);
	}
	if (s->sleep_us)
		usleep(s->sleep_us);
	if (s->fail_all)
		return -EIO;
	if (s->fail_odd && (f->npages > 1 || f->pgoff % 2))
		return -ENODATA;
	if (s->fail_page >= f->pgoff && s->fail_page < f->pgoff + f->npages &&
	    (s->fail_times < 0 || atomic_fetch_add(&s->failed, 1) < s->fail_times))
		return -EIO;
	for (i = 0; i < f->npages; i++) {
		uint64_t pg = f->pgoff + i, *w = (uint64_t *)((char *)f->buf + (size_t)i * PG);
		size_t j;

		if (f->region == 0 && pg < GMFP_ARRAY_SIZE(s->per_page))
			atomic_fetch_add(&s->per_page[pg], 1);
		if (s->zero_every && pg % s->zero_every == 0) {
			f->zero[i / 64] |= 1ull << (i % 64);
			continue;
		}
		for (j = 0; j < PG / 8; j++)
			w[j] = pattern(f->region, pg) + j;
	}
	atomic_fetch_add(&s->pages, f->npages);
	return 0;
}

static struct gmfp_source *src_new(struct src_ctx *c)
{
	GMFP_OPTS_INIT(struct gmfp_source_ops, ops);
	struct gmfp_source *s;

	ops.fetch = src_fetch;
	assert_int_equal(gmfp_source_new(&s, &ops, c), 0);
	return s;
}

static bool fake_present(struct fake *f, uint64_t pg)
{
	bool p;

	pthread_mutex_lock(&f->lock);
	p = f->present[pg];
	pthread_mutex_unlock(&f->lock);
	return p;
}

/* Page @pg of region 0 holds the source's contents. */
static void check_page_contents(struct fake *f, uint64_t pg)
{
	const uint64_t *w = (const uint64_t *)(f->mem + pg * PG);
	size_t j;

	for (j = 0; j < PG / 8; j++)
		if (w[j] != pattern(0, pg) + j)
			fail_msg("page %lu word %zu: %#lx", (unsigned long)pg, j,
				 (unsigned long)w[j]);
}

static void check_contents(struct fake *f, uint32_t region, uint32_t zero_every)
{
	uint64_t pg;
	size_t j;

	for (pg = 0; pg < f->npages; pg++) {
		const uint64_t *w = (const uint64_t *)(f->mem + pg * PG);

		assert_true(f->present[pg]);
		for (j = 0; j < PG / 8; j += 97) {
			uint64_t want = zero_every && pg % zero_every == 0 ? 0 :
					pattern(region, pg) + j;

			if (w[j] != want)
				fail_msg("page %lu word %zu: %#lx != %#lx", (unsigned long)pg,
					 j, (unsigned long)w[j], (unsigned long)want);
		}
	}
}

struct engine_fix {
	struct fake *f;
	struct gmfp_source *src;
	struct gmfp_engine *e;
	struct src_ctx sc;
	struct fetch_log log;
};

static void fix_init(struct engine_fix *x, uint64_t npages, struct gmfp_engine_opts *o)
{
	uint32_t region = 99;

	memset(x, 0, sizeof(*x));
	pthread_mutex_init(&x->log.lock, NULL);
	x->sc.fail_page = UINT64_MAX;
	x->sc.log = &x->log;
	x->f = fake_new(npages, &x->log);
	x->src = src_new(&x->sc);
	assert_int_equal(gmfp_engine_new(&x->e, x->src, o), 0);
	gmfp_engine_set_kops(x->e, &fake_ops, x->f);
	assert_int_equal(gmfp_engine_add(x->e, x->f->gmem, &region), 0);
	assert_int_equal(region, 0);
}

static void fix_fini(struct engine_fix *x)
{
	gmfp_engine_destroy(x->e);
	gmfp_source_destroy(x->src);
	fake_free(x->f);
	pthread_mutex_destroy(&x->log.lock);
}

struct accessor {
	struct fake *f;
	uint64_t first, n, step;
	uint32_t origin;
	int result;
	pthread_t t;
};

static void *accessor_main(void *arg)
{
	struct accessor *a = arg;
	uint64_t i;

	a->result = 0;
	for (i = 0; i < a->n && !a->result; i++)
		a->result = fake_access(a->f, (a->first + i * a->step) % a->f->npages, a->origin);
	return NULL;
}

/* ---- tests ---- */

/* Eight accessors on the same pages: each page fetched exactly once. */
static void test_dedup(void **state)
{
	GMFP_OPTS_INIT(struct gmfp_engine_opts, o);
	struct accessor a[8];
	struct engine_fix x;
	struct gmfp_engine_stats st = { .sz = sizeof(st) };
	int i;

	(void)state;
	o.workers = 4;
	o.max_batch = 8;
	fix_init(&x, 256, &o);
	x.sc.sleep_us = 200;
	for (i = 0; i < 8; i++) {
		a[i] = (struct accessor){ .f = x.f, .first = (uint64_t)i * 7, .n = 256,
					  .step = 1, .origin = GMFP_ORIGIN_MMAP };
		assert_int_equal(pthread_create(&a[i].t, NULL, accessor_main, &a[i]), 0);
	}
	assert_int_equal(gmfp_engine_start(x.e), 0);
	for (i = 0; i < 8; i++) {
		pthread_join(a[i].t, NULL);
		assert_int_equal(a[i].result, 0);
	}
	assert_int_equal(gmfp_engine_wait(x.e, 10000), 0);
	for (i = 0; i < 256; i++)
		assert_int_equal(atomic_load(&x.sc.per_page[i]), 1);
	assert_int_equal(atomic_load(&x.sc.pages), 256);
	check_contents(x.f, 0, 0);
	assert_int_equal(gmfp_engine_get_stats(x.e, &st), 0);
	assert_int_equal(st.pages_present, 256);
	assert_int_equal(st.pages_demand + st.pages_background, 256);
	assert_int_equal(st.pages_by_origin[GMFP_ORIGIN_MMAP], st.pages_demand);
	assert_int_equal(st.errors, 0);
	assert_int_equal(st.lat_count, st.pages_demand);
	fix_fini(&x);
}

/*
 * Demand before background: with background fill of a big region running
 * on one worker, a demand record is served after at most the background
 * run in progress when the engine read it (and one that the worker claimed
 * while the reader was queueing the demand).
 */
static void test_demand_first(void **state)
{
	GMFP_OPTS_INIT(struct gmfp_engine_opts, o);
	struct engine_fix x;
	uint64_t pages[] = { 4000, 3000, 2500, 3900, 1234 };
	size_t i, k;

	(void)state;
	o.workers = 1;
	o.max_batch = 4;
	o.bg_order = GMFP_BG_SEQUENTIAL;
	fix_init(&x, 4096, &o);
	x.sc.sleep_us = 300;
	assert_int_equal(gmfp_engine_start(x.e), 0);
	usleep(20000);
	for (i = 0; i < GMFP_ARRAY_SIZE(pages); i++)
		assert_int_equal(fake_access(x.f, pages[i], GMFP_ORIGIN_VCPU), 0);
	assert_int_equal(gmfp_engine_wait(x.e, 20000), 0);
	for (i = 0; i < GMFP_ARRAY_SIZE(pages); i++) {
		size_t q = x.f->qtime[pages[i]], served = SIZE_MAX;

		for (k = q; k < x.log.n; k++)
			if (x.log.e[k].pgoff <= pages[i] &&
			    pages[i] < x.log.e[k].pgoff + x.log.e[k].npages) {
				served = k;
				break;
			}
		assert_true(served != SIZE_MAX);
		assert_true(x.log.e[served].flags & GMFP_FETCH_DEMAND);
		assert_true(served <= q + 1);
	}
	check_contents(x.f, 0, 0);
	fix_fini(&x);
}

/* Background sequential fill: runs of max_batch pages, everything once. */
static void test_background_batches(void **state)
{
	GMFP_OPTS_INIT(struct gmfp_engine_opts, o);
	struct gmfp_engine_stats st = { .sz = sizeof(st) };
	struct engine_fix x;
	size_t k;

	(void)state;
	o.workers = 2;
	o.max_batch = 32;
	o.bg_order = GMFP_BG_SEQUENTIAL;
	o.flags = GMFP_ENGINE_FINISH;
	fix_init(&x, 1000, &o);
	x.sc.zero_every = 10;
	assert_int_equal(gmfp_engine_start(x.e), 0);
	assert_int_equal(gmfp_engine_wait(x.e, 10000), 0);
	check_contents(x.f, 0, 10);
	assert_int_equal(x.f->finishes, 1);
	for (k = 0; k < 1000; k++)
		assert_int_equal(atomic_load(&x.sc.per_page[k]), 1);
	for (k = 0; k < x.log.n; k++)
		assert_true(x.log.e[k].npages <= 32);
	/* 1000 pages in runs of 32: at most a few more fetches than 32 */
	assert_true(x.log.n <= 40);
	assert_int_equal(gmfp_engine_get_stats(x.e, &st), 0);
	assert_int_equal(st.pages_background, 1000);
	assert_int_equal(st.pages_zero, 100);
	assert_int_equal(st.bytes, 1000 * PG);
	assert_int_equal(x.f->marks, 0);	/* no MARK_ZERO: zero pages copied */
	fix_fini(&x);
}

static void test_mark_zero(void **state)
{
	GMFP_OPTS_INIT(struct gmfp_engine_opts, o);
	struct engine_fix x;

	(void)state;
	o.bg_order = GMFP_BG_SEQUENTIAL;
	o.flags = GMFP_ENGINE_MARK_ZERO;
	fix_init(&x, 128, &o);
	x.sc.zero_every = 2;
	assert_int_equal(gmfp_engine_start(x.e), 0);
	assert_int_equal(gmfp_engine_wait(x.e, 10000), 0);
	check_contents(x.f, 0, 2);
	assert_true(x.f->marks >= 64 / 2);
	fix_fini(&x);
}

static uint64_t err_page;
static int err_code;
static _Atomic int err_calls;

static void on_error(void *arg, uint32_t region, uint64_t pgoff, uint32_t npages, int err)
{
	(void)arg;
	(void)region;
	(void)npages;
	err_page = pgoff;
	err_code = err;
	atomic_fetch_add(&err_calls, 1);
}

/* A source that never delivers page 5: it never becomes present. */
static void test_fail_closed(void **state)
{
	GMFP_OPTS_INIT(struct gmfp_engine_opts, o);
	struct gmfp_engine_stats st = { .sz = sizeof(st) };
	struct engine_fix x;
	struct accessor a = { .first = 5, .n = 1, .step = 1, .origin = GMFP_ORIGIN_VCPU };
	uint64_t i;

	(void)state;
	o.workers = 2;
	o.max_batch = 1;
	o.bg_order = GMFP_BG_SEQUENTIAL;
	o.retry_min_ms = 1;
	o.retry_max_ms = 8;
	o.on_error = on_error;
	atomic_store(&err_calls, 0);
	fix_init(&x, 64, &o);
	x.sc.fail_page = 5;
	x.sc.fail_times = -1;
	a.f = x.f;
	assert_int_equal(pthread_create(&a.t, NULL, accessor_main, &a), 0);
	assert_int_equal(gmfp_engine_start(x.e), 0);
	assert_int_equal(gmfp_engine_wait(x.e, 300), -ETIMEDOUT);
	pthread_mutex_lock(&x.f->lock);
	for (i = 0; i < 64; i++)
		assert_int_equal(x.f->present[i], i != 5);
	pthread_mutex_unlock(&x.f->lock);
	assert_int_equal(gmfp_engine_get_stats(x.e, &st), 0);
	assert_int_equal(st.pages_present, 63);
	assert_true(st.errors >= 3);	/* retried with backoff */
	assert_true(st.retries >= 3);
	assert_int_equal(st.last_error, -EIO);
	assert_true(atomic_load(&err_calls) >= 3);
	assert_int_equal(err_page, 5);
	assert_int_equal(err_code, -EIO);
	/* the accessor is still waiting */
	assert_int_equal(pthread_tryjoin_np(a.t, NULL), EBUSY);
	gmfp_engine_stop(x.e);
	assert_int_equal(gmfp_engine_wait(x.e, 0), -ECANCELED);
	fake_cancel(x.f);
	pthread_join(a.t, NULL);
	assert_int_equal(a.result, -ECANCELED);
	fix_fini(&x);
}

/*
 * A source that fails everything: background stops claiming new pages once
 * fetches keep failing, instead of putting the whole VM on the retry list.
 */
static void test_dead_source_bounded(void **state)
{
	GMFP_OPTS_INIT(struct gmfp_engine_opts, o);
	GMFP_OPTS_INIT(struct gmfp_engine_stats, st);
	struct engine_fix x;
	uint64_t i, claimed = 0, max_pg = 0;

	(void)state;
	o.workers = 2;
	o.max_batch = 16;
	o.bg_order = GMFP_BG_SEQUENTIAL;
	o.retry_min_ms = 1;
	o.retry_max_ms = 2;
	fix_init(&x, 8192, &o);
	x.sc.fail_all = true;
	assert_int_equal(gmfp_engine_start(x.e), 0);
	assert_int_equal(gmfp_engine_wait(x.e, 400), -ETIMEDOUT);
	gmfp_engine_stop(x.e);
	for (i = 0; i < x.log.n; i++)
		if (x.log.e[i].pgoff + x.log.e[i].npages > max_pg)
			max_pg = x.log.e[i].pgoff + x.log.e[i].npages;
	for (i = 0; i < 8192; i++)
		claimed += x.f->present[i];
	assert_int_equal(claimed, 0);
	assert_int_equal(gmfp_engine_get_stats(x.e, &st), 0);
	assert_true(st.errors > 10);
	/* a few runs before the fail streak pauses background, not 8192 */
	assert_true(max_pg <= 16 * 16);
	fix_fini(&x);
}

/*
 * A source that lacks every odd page: runs containing one fail as a whole,
 * yet every even page arrives promptly and the odd ones never do.
 */
static void partial_source(unsigned int workers, uint32_t retry_min, uint32_t retry_max,
			   uint64_t npages, uint32_t sleep_us)
{
	GMFP_OPTS_INIT(struct gmfp_engine_opts, o);
	struct engine_fix x;
	uint64_t i, n = 0;
	int k;

	o.workers = workers;
	o.max_batch = 16;
	o.bg_order = GMFP_BG_SEQUENTIAL;
	o.retry_min_ms = retry_min;
	o.retry_max_ms = retry_max;
	fix_init(&x, npages, &o);
	x.sc.fail_odd = true;
	x.sc.sleep_us = sleep_us;
	assert_int_equal(gmfp_engine_start(x.e), 0);
	for (k = 0; k < 2000 && n < npages / 2; k++) {
		usleep(10000);
		pthread_mutex_lock(&x.f->lock);
		for (n = 0, i = 0; i < npages; i++)
			n += x.f->present[i];
		pthread_mutex_unlock(&x.f->lock);
	}
	gmfp_engine_stop(x.e);
	assert_int_equal(n, npages / 2);
	for (i = 0; i < npages; i++)
		assert_int_equal(x.f->present[i], i % 2 == 0);
	fix_fini(&x);
}

/* A page server on loopback whose source lacks the odd pages. */
struct lserver {
	int lfd;
	struct gmfp_source *src;
	struct src_ctx sc;
	uint64_t size;
	pthread_t t;
	int conns[8];
	int nconns;
};

static void *conn_main(void *arg)
{
	struct lserver *ls = arg;
	GMFP_OPTS_INIT(struct gmfp_serve_opts, so);
	int fd = ls->conns[ls->nconns - 1];

	so.src = ls->src;
	so.nr_regions = 1;
	so.region_sizes = &ls->size;
	gmfp_wire_serve(fd, &so);
	return NULL;
}

static void *accept_main(void *arg)
{
	struct lserver *ls = arg;
	pthread_t t[8];
	int i, n = 0;

	while (n < 2) {
		int fd = accept(ls->lfd, NULL, NULL);

		if (fd < 0)
			break;
		ls->conns[ls->nconns++] = fd;
		pthread_create(&t[n++], NULL, conn_main, ls);
		usleep(1000);	/* conn_main has read its fd */
	}
	for (i = 0; i < n; i++)
		pthread_join(t[i], NULL);
	return NULL;
}

static void test_partial_tcp_source(void **state)
{
	GMFP_OPTS_INIT(struct gmfp_engine_opts, o);
	GMFP_OPTS_INIT(struct gmfp_tcp_opts, to);
	struct lserver ls;
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t al = sizeof(a);
	struct engine_fix x;
	struct gmfp_source *tcp;
	char port[16];
	uint64_t i, n = 0;
	int k;

	(void)state;
	memset(&ls, 0, sizeof(ls));
	ls.sc.fail_odd = true;
	ls.sc.fail_page = UINT64_MAX;
	ls.size = 1024 * PG;
	ls.src = src_new(&ls.sc);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ls.lfd = socket(AF_INET, SOCK_STREAM, 0);
	assert_int_equal(bind(ls.lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(ls.lfd, 4), 0);
	assert_int_equal(getsockname(ls.lfd, (struct sockaddr *)&a, &al), 0);
	snprintf(port, sizeof(port), "%u", ntohs(a.sin_port));
	assert_int_equal(pthread_create(&ls.t, NULL, accept_main, &ls), 0);
	to.port = port;
	to.nr_regions = 1;
	to.region_sizes = &ls.size;
	assert_int_equal(gmfp_source_tcp(&tcp, &to), 0);
	o.workers = 2;
	o.max_batch = 16;
	o.bg_order = GMFP_BG_SEQUENTIAL;
	fix_init(&x, 1024, &o);
	/* the engine serves from the TCP source instead of the fixture's */
	gmfp_engine_destroy(x.e);
	assert_int_equal(gmfp_engine_new(&x.e, tcp, &o), 0);
	gmfp_engine_set_kops(x.e, &fake_ops, x.f);
	assert_int_equal(gmfp_engine_add(x.e, x.f->gmem, NULL), 0);
	assert_int_equal(gmfp_engine_start(x.e), 0);
	for (k = 0; k < 2000 && n < 512; k++) {
		usleep(10000);
		pthread_mutex_lock(&x.f->lock);
		for (n = 0, i = 0; i < 1024; i++)
			n += x.f->present[i];
		pthread_mutex_unlock(&x.f->lock);
	}
	gmfp_engine_stop(x.e);
	assert_int_equal(n, 512);
	fix_fini(&x);
	gmfp_source_destroy(tcp);	/* closes the connections: serve returns */
	shutdown(ls.lfd, SHUT_RDWR);
	close(ls.lfd);
	pthread_join(ls.t, NULL);
	for (k = 0; k < ls.nconns; k++)
		close(ls.conns[k]);
	gmfp_source_destroy(ls.src);
}

static void test_partial_source(void **state)
{
	(void)state;
	partial_source(2, 20, 100, 1024, 0);
	/* one worker, default backoff: the retries of the bad pages alone
	 * must not keep background paused */
	partial_source(1, 0, 0, 2048, 0);
	/*
	 * a slow source and short backoffs: the bad pages are due again
	 * faster than they are served, and must not starve the good ones
	 */
	partial_source(1, 1, 4, 512, 1000);
}

/* A source that fails a few times, then recovers: everything completes. */
static void test_transient_errors(void **state)
{
	GMFP_OPTS_INIT(struct gmfp_engine_opts, o);
	struct gmfp_engine_stats st = { .sz = sizeof(st) };
	struct engine_fix x;
	struct accessor a = { .first = 0, .n = 300, .step = 7, .origin = GMFP_ORIGIN_KVM };

	(void)state;
	o.workers = 3;
	o.bg_order = GMFP_BG_SEQUENTIAL;
	o.retry_min_ms = 1;
	o.retry_max_ms = 4;
	fix_init(&x, 300, &o);
	x.sc.fail_page = 17;
	x.sc.fail_times = 4;
	a.f = x.f;
	assert_int_equal(pthread_create(&a.t, NULL, accessor_main, &a), 0);
	assert_int_equal(gmfp_engine_start(x.e), 0);
	pthread_join(a.t, NULL);
	assert_int_equal(a.result, 0);
	assert_int_equal(gmfp_engine_wait(x.e, 10000), 0);
	check_contents(x.f, 0, 0);
	assert_int_equal(gmfp_engine_get_stats(x.e, &st), 0);
	assert_int_equal(st.errors, 4);
	assert_true(st.retries >= 4);
	assert_int_equal(st.pages_present, 300);
	fix_fini(&x);
}

/* gmfp_engine_demand(): the EXIT-policy path. */
static void test_demand_call(void **state)
{
	GMFP_OPTS_INIT(struct gmfp_engine_opts, o);
	struct engine_fix x;

	(void)state;
	fix_init(&x, 64, &o);
	/* not started yet: the request waits for the engine */
	assert_int_equal(gmfp_engine_demand(x.e, 0, 3, 100), -ETIMEDOUT);
	assert_int_equal(gmfp_engine_start(x.e), 0);
	assert_int_equal(gmfp_engine_demand(x.e, 0, 64, 100), -EINVAL);
	assert_int_equal(gmfp_engine_demand(x.e, 1, 0, 100), -EINVAL);
	assert_int_equal(gmfp_engine_demand(x.e, 0, 33, 5000), 0);
	assert_true(x.f->present[33]);
	/* the request made before the start was served once it started */
	assert_int_equal(gmfp_engine_demand(x.e, 0, 3, 5000), 0);
	assert_int_equal(atomic_load(&x.sc.per_page[3]), 1);
	assert_false(x.f->present[34]);	/* BG_NONE: nothing else */
	/* a record for the same page after the demand call: stale, no fetch */
	assert_int_equal(gmfp_engine_demand(x.e, 0, 33, 5000), 0);
	assert_int_equal(atomic_load(&x.sc.per_page[33]), 1);
	assert_int_equal(gmfp_engine_wait(x.e, 50), -ETIMEDOUT);
	fix_fini(&x);
}

/* Around-demand: background continues next to the latest demand fault. */
static void test_around_demand(void **state)
{
	GMFP_OPTS_INIT(struct gmfp_engine_opts, o);
	struct engine_fix x;
	size_t k, first_bg = SIZE_MAX;

	(void)state;
	o.bg_order = GMFP_BG_AROUND_DEMAND;
	o.max_batch = 4;
	fix_init(&x, 4096, &o);
	x.sc.sleep_us = 100;
	/* the demand comes before the engine starts: it is the first record */
	pthread_mutex_lock(&x.f->lock);
	x.f->notified[3000] = 1;
	x.f->q[0] = (struct gmfp_event){ .type = GMFP_EVENT_FAULT, .offset = 3000 * PG,
					 .origin = GMFP_ORIGIN_VCPU };
	x.f->qn = 1;
	assert_int_equal(write(x.f->pipe[1], "r", 1), 1);
	pthread_mutex_unlock(&x.f->lock);
	assert_int_equal(gmfp_engine_start(x.e), 0);
	assert_int_equal(gmfp_engine_demand(x.e, 0, 3000, 5000), 0);
	assert_int_equal(gmfp_engine_wait(x.e, 30000), 0);
	/*
	 * The worker may have claimed a sequential run before the reader saw
	 * the record; from the demand fetch on, background is around it.
	 */
	for (k = 0; k < x.log.n && first_bg == SIZE_MAX; k++)
		if (x.log.e[k].flags & GMFP_FETCH_DEMAND && x.log.e[k].pgoff == 3000)
			first_bg = k + 1;
	assert_true(first_bg + 4 <= x.log.n);
	/* the next background runs are within a few pages of 3000 */
	for (k = first_bg; k < first_bg + 4; k++) {
		int64_t d = (int64_t)x.log.e[k].pgoff - 3000;

		assert_true(d > -16 && d < 16);
	}
	check_contents(x.f, 0, 0);
	fix_fini(&x);
}

/* Recorded order: a demand run writes it, the next run follows it. */
static void test_recorded_order(void **state)
{
	GMFP_OPTS_INIT(struct gmfp_engine_opts, o);
	char dir[] = "/tmp/gmfp-order-XXXXXX", path[64];
	struct engine_fix x;
	uint64_t want[] = { 700, 12, 555, 13, 900 };
	size_t i;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/order", dir);
	/* run 1: demand only, recording */
	o.record_file = path;
	fix_init(&x, 1024, &o);
	assert_int_equal(gmfp_engine_start(x.e), 0);
	for (i = 0; i < GMFP_ARRAY_SIZE(want); i++)
		assert_int_equal(fake_access(x.f, want[i], GMFP_ORIGIN_VCPU), 0);
	fix_fini(&x);
	/* run 2: background follows the recording first */
	memset(&o, 0, sizeof(o));
	o.sz = sizeof(o);
	o.bg_order = GMFP_BG_RECORDED;
	o.order_file = path;
	o.max_batch = 1;
	fix_init(&x, 1024, &o);
	assert_int_equal(gmfp_engine_start(x.e), 0);
	assert_int_equal(gmfp_engine_wait(x.e, 30000), 0);
	assert_true(x.log.n >= GMFP_ARRAY_SIZE(want));
	for (i = 0; i < GMFP_ARRAY_SIZE(want); i++)
		assert_int_equal(x.log.e[i].pgoff, want[i]);
	check_contents(x.f, 0, 0);
	fix_fini(&x);
	unlink(path);
	rmdir(dir);
}

/*
 * A server died after reading records it never served: its accessors wait
 * with their period claimed.  A successor with GMFP_ENGINE_RENOTIFY serves
 * them without background fill; one without it would not.
 */
static void test_renotify_after_crash(void **state)
{
	GMFP_OPTS_INIT(struct gmfp_engine_opts, o);
	struct gmfp_event ev[8];
	struct accessor a[3];
	struct engine_fix x;
	int i;

	(void)state;
	o.flags = GMFP_ENGINE_RENOTIFY;
	fix_init(&x, 64, &o);
	for (i = 0; i < 3; i++) {
		a[i] = (struct accessor){ .f = x.f, .first = 10 + (uint64_t)i * 20, .n = 1,
					  .step = 1, .origin = GMFP_ORIGIN_MMAP };
		assert_int_equal(pthread_create(&a[i].t, NULL, accessor_main, &a[i]), 0);
	}
	/* the dead predecessor: reads the three records, serves nothing */
	for (i = 0; i < 3; ) {
		ssize_t n = fk_notify_read(x.f, -1, ev + i, 8);

		if (n > 0)
			i += (int)n;
		else
			usleep(1000);
	}
	{
		static char zero[PG];

		fk_copy(x.f, x.f->gmem, 0, zero, PG, 0, NULL);	/* page 0: present */
	}
	assert_int_equal(gmfp_engine_start(x.e), 0);
	for (i = 0; i < 3; i++) {
		pthread_join(a[i].t, NULL);
		assert_int_equal(a[i].result, 0);
	}
	assert_true(x.f->discards >= 1);
	assert_true(x.f->present[10] && x.f->present[30] && x.f->present[50]);
	fix_fini(&x);
}

/* Somebody else FINISHes: the engine sees EOF and counts every page. */
static void test_finished_elsewhere(void **state)
{
	GMFP_OPTS_INIT(struct gmfp_engine_opts, o);
	struct engine_fix x;

	(void)state;
	fix_init(&x, 16, &o);
	assert_int_equal(gmfp_engine_start(x.e), 0);
	fk_mark(x.f, x.f->gmem, 0, 16 * PG);
	assert_int_equal(fk_finish(x.f, x.f->gmem), 0);
	assert_int_equal(gmfp_engine_wait(x.e, 5000), 0);
	fix_fini(&x);
}

/*
 * The VMM discards a page the instant the engine has installed it, and a
 * vCPU touches it again: a new period, a new record, which another worker
 * reads while the installing worker has not yet retired the page's
 * request.  That record must not be dropped as a duplicate of a request
 * that is about to end: the vCPU would wait for ever.  (Found by reasoning
 * about what tests/fuzz/fuzz_engine.c's discards can race with; this
 * makes the race happen every time: the hook holds the installer inside
 * its COPY until the other worker has read the record.)
 */
struct discard_race {
	struct engine_fix *x;
	struct accessor again;
	bool fired, started;
};

static void discard_after_copy(struct fake *f, uint64_t off, uint64_t len, void *arg)
{
	struct discard_race *dr = arg;
	struct gmfp_engine_stats st = { .sz = sizeof(st) };
	uint64_t deadline = gmfp_now_ns() + 5000000000ull;

	(void)len;
	if (dr->fired)
		return;
	dr->fired = true;
	fk_discard(f, f->gmem, off, PG);
	dr->again = (struct accessor){ .f = f, .first = off / PG, .n = 1, .step = 1,
				       .origin = GMFP_ORIGIN_VCPU, .result = 1 };
	dr->started = !pthread_create(&dr->again.t, NULL, accessor_main, &dr->again);
	/* until the other worker has read the new record and met our request */
	do {
		usleep(1000);
		assert_int_equal(gmfp_engine_get_stats(dr->x->e, &st), 0);
	} while (!st.duplicates && gmfp_now_ns() < deadline);
}

static void test_discard_while_installing(void **state)
{
	GMFP_OPTS_INIT(struct gmfp_engine_opts, o);
	struct gmfp_engine_stats st = { .sz = sizeof(st) };
	struct discard_race dr = { 0 };
	struct accessor first = { .n = 1, .step = 1, .first = 5, .origin = GMFP_ORIGIN_VCPU };
	struct engine_fix x;
	int i;

	(void)state;
	o.workers = 2;			/* one installs, the other reads records */
	fix_init(&x, 16, &o);
	dr.x = &x;
	x.f->after_copy = discard_after_copy;
	x.f->hook_arg = &dr;
	first.f = x.f;
	assert_int_equal(gmfp_engine_start(x.e), 0);
	assert_int_equal(pthread_create(&first.t, NULL, accessor_main, &first), 0);
	/* both accesses are served: within 5 s, or they never will be */
	for (i = 0; i < 500 && !(fake_present(x.f, 5) && atomic_load(&x.sc.per_page[5]) == 2);
	     i++)
		usleep(10000);
	fake_cancel(x.f);	/* no more waiting for anybody left behind */
	pthread_join(first.t, NULL);
	assert_true(dr.fired);
	assert_true(dr.started);
	pthread_join(dr.again.t, NULL);
	assert_int_equal(gmfp_engine_get_stats(x.e, &st), 0);
	assert_int_equal(st.duplicates, 1);	/* the race did happen */
	assert_int_equal(first.result, 0);
	assert_int_equal(dr.again.result, 0);
	assert_true(fake_present(x.f, 5));
	assert_int_equal(atomic_load(&x.sc.per_page[5]), 2);	/* fetched again */
	check_page_contents(x.f, 5);
	fix_fini(&x);
}

static void test_bad_args(void **state)
{
	GMFP_OPTS_INIT(struct gmfp_engine_opts, o);
	struct gmfp_engine *e;
	struct gmfp_source *s;
	struct {
		struct gmfp_engine_opts o;
		uint64_t newer;
	} big;

	(void)state;
	assert_int_equal(gmfp_source_zero(&s), 0);
	assert_int_equal(gmfp_engine_new(NULL, s, NULL), -EINVAL);
	assert_int_equal(gmfp_engine_new(&e, NULL, NULL), -EINVAL);
	assert_null(e);
	o.max_batch = 1000;
	assert_int_equal(gmfp_engine_new(&e, s, &o), -EINVAL);
	o.max_batch = 0;
	o.bg_order = GMFP_BG_RECORDED;	/* without order_file */
	assert_int_equal(gmfp_engine_new(&e, s, &o), -EINVAL);
	o.bg_order = GMFP_BG_NONE;
	o.flags = 1u << 31;
	assert_int_equal(gmfp_engine_new(&e, s, &o), -EINVAL);
	o.flags = 0;
	o.retry_min_ms = 100;
	o.retry_max_ms = 10;
	assert_int_equal(gmfp_engine_new(&e, s, &o), -EINVAL);
	/* a newer caller's struct: unknown non-zero tail is refused */
	memset(&big, 0, sizeof(big));
	big.o.sz = sizeof(big);
	assert_int_equal(gmfp_engine_new(&e, s, &big.o), 0);
	assert_int_equal(gmfp_engine_start(e), -ENOENT);	/* no region */
	assert_int_equal(gmfp_engine_add(e, -1, NULL), -EBADF);
	assert_int_equal(gmfp_engine_wait(e, 0), -EINVAL);
	gmfp_engine_destroy(e);
	big.newer = 1;
	assert_int_equal(gmfp_engine_new(&e, s, &big.o), -E2BIG);
	gmfp_engine_destroy(NULL);
	gmfp_source_destroy(s);
}

static void test_stats_json(void **state)
{
	GMFP_OPTS_INIT(struct gmfp_engine_opts, o);
	struct engine_fix x;
	char buf[4096];
	int n;

	(void)state;
	o.bg_order = GMFP_BG_SEQUENTIAL;
	fix_init(&x, 32, &o);
	assert_int_equal(gmfp_engine_start(x.e), 0);
	assert_int_equal(gmfp_engine_wait(x.e, 5000), 0);
	n = gmfp_engine_stats_json(x.e, buf, sizeof(buf));
	assert_true(n > 0 && (size_t)n < sizeof(buf));
	assert_non_null(strstr(buf, "\"pages_present\":32"));
	assert_non_null(strstr(buf, "\"pages_background\":32"));
	assert_int_equal(gmfp_engine_stats_json(x.e, NULL, 0), n);
	fix_fini(&x);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_dedup),
		cmocka_unit_test(test_demand_first),
		cmocka_unit_test(test_background_batches),
		cmocka_unit_test(test_mark_zero),
		cmocka_unit_test(test_fail_closed),
		cmocka_unit_test(test_dead_source_bounded),
		cmocka_unit_test(test_partial_source),
		cmocka_unit_test(test_partial_tcp_source),
		cmocka_unit_test(test_transient_errors),
		cmocka_unit_test(test_demand_call),
		cmocka_unit_test(test_around_demand),
		cmocka_unit_test(test_recorded_order),
		cmocka_unit_test(test_renotify_after_crash),
		cmocka_unit_test(test_finished_elsewhere),
		cmocka_unit_test(test_discard_while_installing),
		cmocka_unit_test(test_bad_args),
		cmocka_unit_test(test_stats_json),
	};

	return cmocka_run_group_tests_name("engine", tests, NULL, NULL);
}
