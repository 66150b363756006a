// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * The fault engine.
 *
 * Threads: N workers, all alike.  Each waits in epoll_wait() on one epoll
 * set holding every region's notification fd, an eventfd that
 * gmfp_engine_demand() and busy workers poke, and an eventfd that stays
 * readable once the engine stops.  A worker that wakes reads the records
 * (many per read()) and turns them into requests, then takes demand
 * requests first, then due retries, then a background run; fetches the run
 * from the source into a buffer and installs it with one
 * KVM_MEMORY_PRESENT_COPY.  The worker that reads a record usually serves
 * it: no hand-off between threads on the demand path, which costs two
 * context switches per fault (measured: a separate reader thread made the
 * engine slower than a one-thread loop).  If it queued more than it takes,
 * it pokes the eventfd so that another worker wakes for the rest.
 *
 * One request per page in flight: requests live in a liburcu lock-free hash
 * table (cds_lfht_add_unique), keyed by region and page, from the moment
 * the page is wanted until it is present.  Whoever else wants the page
 * meanwhile (another record after a re-arm race, a demand call, background
 * fill) finds the request and adds nothing, so each page is fetched once.
 * Demand requests queue on a wait-free queue (wfcqueue); background fill
 * claims runs of missing pages straight from the engine's bitmap and looks
 * at the demand queue before every run, so demand never waits for more than
 * one background run per worker.
 *
 * Failing closed: a page is made present only by a COPY of contents the
 * source returned successfully (or a MARK of a page the source said is zero,
 * with GMFP_ENGINE_MARK_ZERO).  A failed fetch leaves its pages not present,
 * in the table, on a retry list with exponential backoff; their accessors
 * keep waiting, and on_error and the stats say which page failed and why.
 */
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <urcu.h>
#include <urcu/rculfhash.h>
#include <urcu/wfcqueue.h>

#include "internal.h"

#define PAGE GMFP_PAGE_SIZE
#define MAX_REGIONS 256
#define PGOFF_BITS 48
#define READ_BATCH 256
#define MAX_BATCH_LIMIT 256

struct req {
	struct cds_lfht_node node;
	struct cds_wfcq_node qnode;	/* demand queue (or injection queue) */
	struct rcu_head rcu;
	struct req *retry_next;
	uint64_t key;
	_Atomic uint64_t t0_ns;		/* first demand, 0: background only */
	uint64_t not_before_ns;		/* retry time */
	_Atomic uint32_t origin;
	uint32_t attempts;
	_Atomic bool demand;
	_Atomic uint32_t state;		/* REQ_*: see want_page() */
};

/*
 * Where a request is, for a record of its page that arrives while it is in
 * the table (a duplicate).  Such a record is usually for the period the
 * request serves; but once the request's COPY is done, the VMM may
 * DISCARD the page and an access start a new period, whose only record
 * arrives before the request has left the table.  Dropping that record
 * would leave the accessor waiting for ever, so a duplicate that may be
 * one is flagged (_DUP), and whoever retires the request asks the kernel
 * whether the page is still present (req_finish()).
 */
enum {
	REQ_WAITING,		/* not installing: an install to come serves any record */
	REQ_WAITING_DUP,	/* ... a record came: retired without an install, recheck */
	REQ_INSTALLING,		/* fetched, its COPY or MARK may be done already */
	REQ_INSTALLING_DUP,	/* ... a record came meanwhile: recheck once done */
	REQ_DONE,		/* out of the table */
};

struct region {
	int gmem;
	int nfd;
	_Atomic bool eof;		/* nfd read end of file */
	uint64_t npages;
	_Atomic uint64_t *done;		/* present (installed or found present) */
	_Atomic uint64_t nr_done;
	_Atomic bool finished;
};

struct engine_stats {
	_Atomic uint64_t records, reads, duplicates, stale;
	_Atomic uint64_t pages_demand, pages_background, pages_zero;
	_Atomic uint64_t by_origin[4];
	_Atomic uint64_t bytes, fetches, installs, errors, retries, already_present;
	_Atomic int64_t last_error;
};

struct gmfp_engine {
	struct gmfp_engine_opts o;
	struct gmfp_source *src;
	const struct gmfp_kops *k;
	void *kctx;
	struct region regions[MAX_REGIONS];
	uint32_t nr_regions;
	uint64_t pages_total;
	_Atomic uint64_t pages_present;

	struct cds_lfht *ht;
	struct cds_wfcq_head dq_head;	/* demand queue */
	struct cds_wfcq_tail dq_tail;
	struct cds_wfcq_head inj_head;	/* gmfp_engine_demand() -> workers */
	struct cds_wfcq_tail inj_tail;

	pthread_mutex_t lock;		/* progress, retry list, bg cursor */
	pthread_cond_t progress;	/* pages became present / stop */
	_Atomic uint64_t dq_len;	/* requests on the demand queue */
	struct req *retry;
	uint64_t nr_retry;		/* requests on the retry list */
	_Atomic uint32_t fail_streak;	/* first attempts failed in a row */
	uint64_t next_probe_ns;		/* background probe while paused */
	uint32_t bg_region;
	uint64_t bg_cursor;
	bool bg_done;
	struct gmfp_around around;
	_Atomic uint64_t last_demand;	/* key of the latest demand request */
	uint64_t around_key;
	struct gmfp_order_entry *order;
	size_t order_n, order_i;

	pthread_mutex_t rec_lock;	/* demand order being recorded */
	struct gmfp_order_entry *rec;
	size_t rec_n, rec_cap;

	int epfd, evfd, stopfd;
	pthread_t *workers;
	uint32_t nr_workers;
	bool started;
	_Atomic bool stop;
	bool stopped;

	struct gmfp_hist lat;
	struct engine_stats st;
};

/* ---- the real kernel ---- */

static int k_notify_open(void *ctx, int gmem, unsigned int flags)
{
	(void)ctx;
	return gmfp_notify_open(gmem, flags);
}

static ssize_t k_notify_read(void *ctx, int nfd, struct gmfp_event *ev, size_t max)
{
	(void)ctx;
	return gmfp_notify_read(nfd, ev, max);
}

static int k_bitmap(void *ctx, int gmem, uint64_t off, uint64_t len, uint64_t *bm)
{
	(void)ctx;
	return gmfp_gmem_bitmap(gmem, off, len, bm);
}

static int k_mark(void *ctx, int gmem, uint64_t off, uint64_t len)
{
	(void)ctx;
	return gmfp_gmem_mark(gmem, off, len);
}

static int64_t k_copy(void *ctx, int gmem, uint64_t off, const void *src,
		      uint64_t len, unsigned int flags, uint64_t *done)
{
	(void)ctx;
	return gmfp_gmem_copy(gmem, off, src, len, flags, done);
}

static int k_discard(void *ctx, int gmem, uint64_t off, uint64_t len)
{
	(void)ctx;
	return gmfp_gmem_discard(gmem, off, len);
}

static int k_finish(void *ctx, int gmem)
{
	(void)ctx;
	return gmfp_gmem_finish(gmem);
}

static int k_stats(void *ctx, int gmem, struct gmfp_gmem_stats *st)
{
	(void)ctx;
	return gmfp_gmem_stats(gmem, st);
}

static const struct gmfp_kops kernel_ops = {
	.notify_open = k_notify_open,
	.notify_read = k_notify_read,
	.bitmap = k_bitmap,
	.mark = k_mark,
	.copy = k_copy,
	.finish = k_finish,
	.discard = k_discard,
	.stats = k_stats,
};

void gmfp_engine_set_kops(struct gmfp_engine *e, const struct gmfp_kops *k, void *ctx)
{
	e->k = k ? k : &kernel_ops;
	e->kctx = ctx;
}

static uint64_t make_key(uint32_t region, uint64_t pgoff)
{
	return (uint64_t)region << PGOFF_BITS | pgoff;
}

static uint32_t key_region(uint64_t key)
{
	return (uint32_t)(key >> PGOFF_BITS);
}

static uint64_t key_pgoff(uint64_t key)
{
	return key & ((1ull << PGOFF_BITS) - 1);
}

static unsigned long hash_key(uint64_t key)
{
	/* 64-bit multiplicative hash (golden ratio) */
	return (unsigned long)((key * 0x9e3779b97f4a7c15ull) >> 16);
}

static int match_key(struct cds_lfht_node *node, const void *key)
{
	struct req *r = caa_container_of(node, struct req, node);

	GMFP_TSAN_ACQUIRE(r);
	return r->key == *(const uint64_t *)key;
}

static void count(_Atomic uint64_t *c, uint64_t n)
{
	atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

static bool is_done(struct gmfp_engine *e, uint64_t key)
{
	return gmfp_test_bit(e->regions[key_region(key)].done, key_pgoff(key));
}

static void free_req_rcu(struct rcu_head *head)
{
	struct req *r = caa_container_of(head, struct req, rcu);

	GMFP_TSAN_ACQUIRE(r);
	free(r);
}

/* ---- requests ---- */

static struct req *req_alloc(uint64_t key, bool demand, uint32_t origin)
{
	struct req *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	cds_lfht_node_init(&r->node);
	cds_wfcq_node_init(&r->qnode);
	r->key = key;
	atomic_init(&r->origin, demand ? origin : 0);
	atomic_init(&r->t0_ns, demand ? gmfp_now_ns() : 0);
	atomic_init(&r->demand, demand);
	return r;
}

/*
 * Insert @r unless the page already has a request; returns the request in
 * the table (@r or the existing one).  Caller holds the RCU read lock.
 */
static struct req *req_insert(struct gmfp_engine *e, struct req *r)
{
	struct cds_lfht_node *n;
	struct req *cur;

	GMFP_TSAN_RELEASE(r);
	n = cds_lfht_add_unique(e->ht, hash_key(r->key), match_key, &r->key, &r->node);
	cur = caa_container_of(n, struct req, node);
	GMFP_TSAN_ACQUIRE(cur);
	return cur;
}

/* Requests a worker retired, freed together after one grace period. */
struct retired {
	struct req *head;
	unsigned int n;
};

#define RETIRE_BATCH 64

static void free_chain_rcu(struct rcu_head *head)
{
	struct req *r = caa_container_of(head, struct req, rcu), *next;

	for (; r; r = next) {
		GMFP_TSAN_ACQUIRE(r);
		next = r->retry_next;
		free(r);
	}
}

/*
 * One call_rcu() per RETIRE_BATCH requests rather than per page: each
 * call_rcu() may wake liburcu's callback thread, a context switch per
 * fault otherwise.
 */
static void retired_flush(struct retired *rt)
{
	if (!rt->head)
		return;
	call_rcu(&rt->head->rcu, free_chain_rcu);
	rt->head = NULL;
	rt->n = 0;
}

/*
 * The page is present: drop its request.  Caller holds the RCU read lock.
 * @rt: the worker's batch, or NULL to free on its own.
 */
static void req_retire(struct gmfp_engine *e, struct req *r, struct retired *rt)
{
	GMFP_TSAN_RELEASE(r);
	if (cds_lfht_del(e->ht, &r->node))
		return;
	if (!rt) {
		call_rcu(&r->rcu, free_req_rcu);
		return;
	}
	r->retry_next = rt->head;
	rt->head = r;
	if (++rt->n == RETIRE_BATCH)
		retired_flush(rt);
}

/* Wake one more worker (epoll on evfd is an exclusive wakeup). */
static void poke(struct gmfp_engine *e)
{
	uint64_t one = 1;

	/* EAGAIN: the counter is full, a wakeup is pending anyway */
	if (write(e->evfd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		atomic_store(&e->st.last_error, -errno);
}

static void record_demand(struct gmfp_engine *e, uint64_t key)
{
	if (!e->o.record_file)
		return;
	pthread_mutex_lock(&e->rec_lock);
	if (e->rec_n == e->rec_cap && e->rec_cap < e->pages_total) {
		size_t cap = e->rec_cap ? e->rec_cap * 2 : 1024;
		void *p = realloc(e->rec, cap * sizeof(*e->rec));

		if (p) {
			e->rec = p;
			e->rec_cap = cap;
		}
	}
	if (e->rec_n < e->rec_cap) {
		e->rec[e->rec_n].region = key_region(key);
		e->rec[e->rec_n].pgoff = key_pgoff(key);
		e->rec_n++;
	}
	pthread_mutex_unlock(&e->rec_lock);
}

static int page_present(struct gmfp_engine *e, struct region *rg, uint64_t pg)
{
	uint64_t w = 0;
	int r = e->k->bitmap(e->kctx, rg->gmem, pg * PAGE, PAGE, &w);

	return r ? r : (int)(w & 1);
}

static void want_page(struct gmfp_engine *e, uint64_t key, uint32_t origin);

/*
 * The page of @r is done (installed, or found present): take @r out of the
 * table.  If a record came for the page meanwhile that may be from a new
 * period (see REQ_*), ask the kernel, and if the page is not present any
 * more, want it again.  Caller holds the RCU read lock (which keeps @r's
 * memory until we are done with it); @rt as for req_retire().
 */
static void req_finish(struct gmfp_engine *e, struct req *r, struct retired *rt)
{
	uint64_t key = r->key;
	uint32_t origin = atomic_load(&r->origin), old;
	struct region *rg = &e->regions[key_region(key)];

	/* out of the table first: a record from now on makes a new request */
	req_retire(e, r, rt);
	old = atomic_exchange(&r->state, REQ_DONE);
	if (old != REQ_WAITING_DUP && old != REQ_INSTALLING_DUP)
		return;
	if (page_present(e, rg, key_pgoff(key)) != 0)
		return;		/* still present (or unknown): the record was stale */
	if (gmfp_clear_bit(rg->done, key_pgoff(key))) {
		atomic_fetch_sub(&rg->nr_done, 1);
		atomic_fetch_sub(&e->pages_present, 1);
	}
	want_page(e, key, origin);
}

/*
 * A page is wanted now (a record, or gmfp_engine_demand()).  Reader thread,
 * inside the RCU read lock.
 */
static void want_page(struct gmfp_engine *e, uint64_t key, uint32_t origin)
{
	struct region *rg = &e->regions[key_region(key)];
	struct req *r, *cur;
	uint32_t st, flagged;

again:
	if (is_done(e, key)) {
		/*
		 * Usually a record read after the page was installed.  But a
		 * VMM may have discarded or re-armed it since: ask the kernel
		 * rather than leave an accessor waiting for ever.
		 */
		if (page_present(e, rg, key_pgoff(key)) != 0) {
			count(&e->st.stale, 1);
			return;
		}
		if (gmfp_clear_bit(rg->done, key_pgoff(key))) {
			atomic_fetch_sub(&rg->nr_done, 1);
			atomic_fetch_sub(&e->pages_present, 1);
		}
	}
	/*
	 * The kernel sends one record per period: dropping it would leave the
	 * accessors waiting for ever, so an allocation failure is waited out.
	 */
	while (!(r = req_alloc(key, true, origin))) {
		count(&e->st.errors, 1);
		atomic_store(&e->st.last_error, -ENOMEM);
		if (atomic_load(&e->stop))
			return;
		usleep(1000);
	}
	cur = req_insert(e, r);
	if (cur != r) {
		/* flag it (see REQ_*); one that has just left the table: start over */
		st = atomic_load(&cur->state);
		do {
			if (st == REQ_DONE)
				break;
			flagged = st == REQ_WAITING ? REQ_WAITING_DUP :
				  st == REQ_INSTALLING ? REQ_INSTALLING_DUP : st;
		} while (flagged != st &&
			 !atomic_compare_exchange_weak(&cur->state, &st, flagged));
		free(r);
		if (st == REQ_DONE)
			goto again;
		count(&e->st.duplicates, 1);
		/* Promote a background request: somebody waits for it now. */
		if (!atomic_exchange(&cur->demand, true)) {
			atomic_store(&cur->t0_ns, gmfp_now_ns());
			atomic_store(&cur->origin, origin);
		}
		return;
	}
	/* installed meanwhile (see claim_run()): nothing to fetch */
	if (is_done(e, key)) {
		req_finish(e, r, NULL);
		count(&e->st.stale, 1);
		return;
	}
	atomic_store_explicit(&e->last_demand, key, memory_order_relaxed);
	record_demand(e, key);
	GMFP_TSAN_RELEASE(r);
	cds_wfcq_enqueue(&e->dq_head, &e->dq_tail, &r->qnode);
	atomic_fetch_add(&e->dq_len, 1);
}

/* ---- reading records ---- */

/*
 * End of file on a notification fd: tracking of the region finished (the
 * engine holds the guest_memfd, so it cannot be gone).  If somebody else
 * finished it, every page is present now: account for them, or
 * gmfp_engine_wait() would wait for pages nobody will ever ask for.  The fd
 * stays open until destroy: other workers may be reading it right now.
 */
static void region_eof(struct gmfp_engine *e, struct region *rg)
{
	struct gmfp_gmem_stats st;
	uint64_t i;

	if (atomic_exchange(&rg->eof, true))
		return;
	epoll_ctl(e->epfd, EPOLL_CTL_DEL, rg->nfd, NULL);
	memset(&st, 0, sizeof(st));
	if (e->k->stats(e->kctx, rg->gmem, &st) || !(st.flags & GMFP_GMEM_FINISHED))
		return;
	rg->finished = true;
	for (i = 0; i < rg->npages; i++)
		if (!gmfp_set_bit(rg->done, i)) {
			atomic_fetch_add(&rg->nr_done, 1);
			atomic_fetch_add(&e->pages_present, 1);
		}
	pthread_mutex_lock(&e->lock);
	pthread_cond_broadcast(&e->progress);
	pthread_mutex_unlock(&e->lock);
}

static void read_records(struct gmfp_engine *e, uint32_t ri, struct gmfp_event *ev)
{
	struct region *rg = &e->regions[ri];
	ssize_t n, i;

	while (!atomic_load(&rg->eof)) {
		n = e->k->notify_read(e->kctx, rg->nfd, ev, READ_BATCH);
		if (n == -EINTR)
			continue;
		if (n == -EAGAIN)
			return;
		if (n <= 0) {
			/* EOF: tracking finished or the guest_memfd is gone. */
			if (n < 0) {
				count(&e->st.errors, 1);
				atomic_store(&e->st.last_error, n);
			}
			region_eof(e, rg);
			return;
		}
		count(&e->st.reads, 1);
		count(&e->st.records, (uint64_t)n);
		rcu_read_lock();
		for (i = 0; i < n; i++) {
			uint64_t pg = ev[i].offset / PAGE;

			if (ev[i].type != GMFP_EVENT_FAULT || pg >= rg->npages)
				continue;	/* a record type we do not know */
			want_page(e, make_key(ri, pg),
				  ev[i].origin <= GMFP_ORIGIN_MMAP ? ev[i].origin : 0);
		}
		rcu_read_unlock();
		if (n < READ_BATCH)
			return;
	}
}

static void take_injected(struct gmfp_engine *e)
{
	struct cds_wfcq_node *qn;

	rcu_read_lock();
	while ((qn = cds_wfcq_dequeue_blocking(&e->inj_head, &e->inj_tail))) {
		struct req *r = caa_container_of(qn, struct req, qnode);

		GMFP_TSAN_ACQUIRE(r);
		want_page(e, r->key, r->origin);
		free(r);
	}
	rcu_read_unlock();
}

/*
 * Wait for records, pokes or the stop (@timeout_ms, -1: no limit) and read
 * whatever is ready.  Returns false once the engine stops.
 */
static bool poll_events(struct gmfp_engine *e, struct gmfp_event *rec, int timeout_ms)
{
	struct epoll_event evs[16];
	uint64_t v;
	int n, i;

	n = epoll_wait(e->epfd, evs, GMFP_ARRAY_SIZE(evs), timeout_ms);
	if (n < 0 && errno != EINTR) {
		atomic_store(&e->st.last_error, -errno);
		usleep(1000);	/* EBADF/EFAULT cannot happen; do not spin */
	}
	for (i = 0; i < n && !atomic_load(&e->stop); i++) {
		if (evs[i].data.u32 == UINT32_MAX - 1)
			break;	/* the stop fd */
		if (evs[i].data.u32 == UINT32_MAX) {
			/* drain the pokes: the demand queue says what to do */
			if (read(e->evfd, &v, sizeof(v)) < 0 && errno != EAGAIN)
				atomic_store(&e->st.last_error, -errno);
			take_injected(e);
		} else {
			read_records(e, evs[i].data.u32, rec);
		}
	}
	return !atomic_load(&e->stop);
}

/* ---- claiming work ---- */

static uint64_t backoff_ns(struct gmfp_engine *e, uint32_t attempts)
{
	uint64_t ms = e->o.retry_min_ms;

	while (--attempts && ms < e->o.retry_max_ms)
		ms *= 2;
	if (ms > e->o.retry_max_ms)
		ms = e->o.retry_max_ms;
	return ms * 1000000ull;
}

/*
 * Claim up to @max background pages starting at @key's page, upwards, that
 * are neither done nor in flight.  Caller holds the RCU read lock.
 */
static uint32_t claim_run(struct gmfp_engine *e, uint64_t key, struct req **out,
			  uint32_t max)
{
	struct region *rg = &e->regions[key_region(key)];
	uint64_t pg = key_pgoff(key);
	uint32_t n = 0;

	while (n < max && pg + n < rg->npages) {
		uint64_t k = key + n;
		struct req *r;

		if (is_done(e, k))
			break;
		r = req_alloc(k, false, 0);
		if (!r)
			break;
		if (req_insert(e, r) != r) {
			free(r);
			break;
		}
		/*
		 * Installed and retired between the test and the insert: the
		 * installer set the bit before it left the table, so it shows.
		 */
		if (is_done(e, k)) {
			req_finish(e, r, NULL);
			break;
		}
		out[n++] = r;
	}
	return n;
}

/* Next sequential candidate, under e->lock. */
static bool bg_next_sequential(struct gmfp_engine *e, uint64_t *key)
{
	while (e->bg_region < e->nr_regions) {
		struct region *rg = &e->regions[e->bg_region];
		uint64_t pg = gmfp_find_next_zero(rg->done, rg->npages, e->bg_cursor);

		if (pg < rg->npages) {
			*key = make_key(e->bg_region, pg);
			e->bg_cursor = pg + 1;
			return true;
		}
		e->bg_region++;
		e->bg_cursor = 0;
	}
	return false;
}

static bool bg_next_around(struct gmfp_engine *e, uint64_t *key)
{
	uint64_t c = atomic_load_explicit(&e->last_demand, memory_order_relaxed);
	uint64_t first;

	if (c == UINT64_MAX)
		return false;
	if (c != e->around_key) {
		e->around_key = c;
		gmfp_around_reset(&e->around, key_pgoff(c));
	}
	while (gmfp_around_next(&e->around, e->regions[key_region(c)].npages, &first)) {
		uint64_t k = make_key(key_region(c), first);

		if (!is_done(e, k)) {
			*key = k;
			return true;
		}
	}
	return false;
}

static bool bg_next_recorded(struct gmfp_engine *e, uint64_t *key)
{
	while (e->order_i < e->order_n) {
		struct gmfp_order_entry *o = &e->order[e->order_i++];
		uint64_t k = make_key(o->region, o->pgoff);

		if (!is_done(e, k)) {
			*key = k;
			return true;
		}
	}
	return false;
}

/*
 * Background work: a run of missing pages in the chosen order.  Called with
 * e->lock held (it protects the cursors) and the RCU read lock.
 */
static bool bg_next(struct gmfp_engine *e, uint64_t *key, bool *seq)
{
	*seq = false;
	if (e->o.bg_order == GMFP_BG_AROUND_DEMAND && bg_next_around(e, key))
		return true;
	if (e->o.bg_order == GMFP_BG_RECORDED && bg_next_recorded(e, key))
		return true;
	/* every order ends with a sequential sweep of what is left */
	*seq = true;
	return bg_next_sequential(e, key);
}

static uint32_t claim_background(struct gmfp_engine *e, struct req **out, uint32_t max)
{
	uint64_t key;
	uint32_t n;
	bool seq;

	while (!e->bg_done) {
		if (!bg_next(e, &key, &seq)) {
			/*
			 * The sweep found nothing missing that is not in
			 * flight; in-flight pages that fail come back through
			 * the retry list.
			 */
			e->bg_done = true;
			break;
		}
		n = claim_run(e, key, out, max);
		if (n) {
			/* the sweep's cursor moves past what it claimed */
			if (seq && key_pgoff(key) + n > e->bg_cursor)
				e->bg_cursor = key_pgoff(key) + n;
			return n;
		}
	}
	return 0;
}

/*
 * Background pauses after 4 * workers first attempts in a row failed (new
 * runs, or pages of a failed run tried alone): the source looks dead, and
 * claiming more would only move every page of the VM onto the retry list.
 * Retries of pages that already failed alone do not count, so pages a
 * source lacks for good do not keep it paused; any success resumes it.
 * While paused, one run is claimed per probe interval (before any retry)
 * to find out whether the source is back.
 */
static bool background_paused(struct gmfp_engine *e)
{
	return atomic_load(&e->fail_streak) >= 4 * e->o.workers;
}

/* Under e->lock: claim a background run, as a probe if paused. */
static uint32_t claim_bg_run(struct gmfp_engine *e, struct req **v, uint64_t now,
			     bool paused)
{
	uint64_t gap = (e->o.retry_max_ms < 100 ? 100 : e->o.retry_max_ms) * 1000000ull;
	uint32_t n;

	rcu_read_lock();
	n = claim_background(e, v, e->o.max_batch);
	rcu_read_unlock();
	if (n && paused)
		e->next_probe_ns = now + gap;
	return n;
}

/* A due retry, under e->lock. */
/*
 * Of the due retries: demand first, then the one due the longest.  Not the
 * first in the list: failures are pushed at its head, so pages a source
 * lacks for good, due again after each short backoff, would always come
 * first and starve the rest.
 */
static bool better_retry(struct req *r, struct req *best)
{
	bool d = atomic_load(&r->demand);

	if (!best)
		return true;
	if (d != atomic_load(&best->demand))
		return d;
	return r->not_before_ns < best->not_before_ns;
}

static struct req *take_retry(struct gmfp_engine *e, uint64_t now, uint64_t *next_due)
{
	struct req **pp, **best = NULL;

	for (pp = &e->retry; *pp; pp = &(*pp)->retry_next) {
		struct req *r = *pp;

		if (r->not_before_ns > now) {
			if (r->not_before_ns < *next_due)
				*next_due = r->not_before_ns;
			continue;
		}
		if (better_retry(r, best ? *best : NULL))
			best = pp;
	}
	if (best) {
		struct req *r = *best;

		*best = r->retry_next;
		r->retry_next = NULL;
		e->nr_retry--;
		return r;
	}
	return NULL;
}

static int cmp_req(const void *a, const void *b)
{
	const struct req *x = *(struct req *const *)a, *y = *(struct req *const *)b;

	return x->key < y->key ? -1 : x->key > y->key;
}

/*
 * Demand work: up to @max queued demand requests.  Lock-free; the
 * wfcqueue's blocking dequeue serialises the workers among themselves.
 */
static uint32_t take_demand(struct gmfp_engine *e, struct req **out, uint32_t max)
{
	uint32_t n = 0;

	while (n < max) {
		struct cds_wfcq_node *qn = cds_wfcq_dequeue_blocking(&e->dq_head, &e->dq_tail);

		if (!qn)
			break;
		out[n] = caa_container_of(qn, struct req, qnode);
		GMFP_TSAN_ACQUIRE(out[n]);
		n++;
	}
	return n;
}

/* CLOCK_MONOTONIC now + @ns, for pthread_cond_timedwait() */
static void deadline_ns(struct timespec *ts, uint64_t ns)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += (time_t)(ns / 1000000000ull);
	ts->tv_nsec += (long)(ns % 1000000000ull);
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

/* ---- fetch + install ---- */

static void page_done(struct gmfp_engine *e, struct req *r, uint64_t now,
		      struct retired *rt)
{
	struct region *rg = &e->regions[key_region(r->key)];

	if (gmfp_set_bit(rg->done, key_pgoff(r->key))) {
		/* somebody else's: counted there */
		req_finish(e, r, rt);
		return;
	}
	atomic_fetch_add(&rg->nr_done, 1);
	atomic_fetch_add(&e->pages_present, 1);
	if (atomic_load(&r->demand)) {
		uint64_t t0 = atomic_load(&r->t0_ns);
		uint32_t origin = atomic_load(&r->origin);

		count(&e->st.pages_demand, 1);
		count(&e->st.by_origin[origin < 4 ? origin : 0], 1);
		gmfp_hist_add(&e->lat, now > t0 ? (now - t0) / 1000 : 0);
	} else {
		count(&e->st.pages_background, 1);
		count(&e->st.by_origin[0], 1);
	}
	req_finish(e, r, rt);
}

static void fail_run(struct gmfp_engine *e, struct req **v, uint32_t n, int err)
{
	uint64_t now = gmfp_now_ns();
	uint32_t i;

	count(&e->st.errors, 1);
	atomic_store(&e->st.last_error, err);
	if (e->o.on_error)
		e->o.on_error(e->o.cb_arg, key_region(v[0]->key), key_pgoff(v[0]->key), n, err);
	pthread_mutex_lock(&e->lock);
	for (i = 0; i < n; i++) {
		struct req *r = v[i];

		/*
		 * A run fails as a whole when one of its pages does (a source
		 * that lacks some pages).  Its pages are retried one by one at
		 * once, and only a page that fails alone backs off: the others
		 * must not wait, nor fill the retry list and pause background.
		 */
		if (n == 1) {
			r->attempts++;
			r->not_before_ns = now + backoff_ns(e, r->attempts);
		} else {
			r->not_before_ns = now;
		}
		r->retry_next = e->retry;
		e->retry = r;
		e->nr_retry++;
	}
	pthread_mutex_unlock(&e->lock);
}

struct worker_buf {
	void *buf;
	struct retired rt;
	bool bg_turn;		/* background before retries next time */
	uint64_t zero[MAX_BATCH_LIMIT / 64];
	struct req *v[MAX_BATCH_LIMIT];
};

/* Install pages [i, j) of a fetched run; returns 0 or -errno, *@ok done. */
static int install(struct gmfp_engine *e, struct worker_buf *w, struct req **v,
		   uint32_t n, uint32_t *ok)
{
	struct region *rg = &e->regions[key_region(v[0]->key)];
	uint64_t off = key_pgoff(v[0]->key) * PAGE, done;
	uint32_t i, j;
	int64_t r;

	*ok = 0;
	for (i = 0; i < n; i = j) {
		bool z = w->zero[i / 64] & (1ull << (i % 64));

		for (j = i + 1; j < n; j++)
			if (!!(w->zero[j / 64] & (1ull << (j % 64))) != z)
				break;
		if (z)
			count(&e->st.pages_zero, j - i);
		count(&e->st.installs, 1);
		if (z && (e->o.flags & GMFP_ENGINE_MARK_ZERO)) {
			/* fresh memory reads as zeroes: no copy needed */
			r = e->k->mark(e->kctx, rg->gmem, off + (uint64_t)i * PAGE,
					   (uint64_t)(j - i) * PAGE);
			if (r)
				return (int)r;
		} else {
			char *p = (char *)w->buf + (size_t)i * PAGE;

			if (z)
				memset(p, 0, (size_t)(j - i) * PAGE);
			r = e->k->copy(e->kctx, rg->gmem, off + (uint64_t)i * PAGE, p,
					   (uint64_t)(j - i) * PAGE,
					   GMFP_COPY_SKIP_PRESENT, &done);
			if (r < 0) {
				*ok = i + (uint32_t)(done / PAGE);
				return (int)r;
			}
			count(&e->st.already_present, (uint64_t)r);
			count(&e->st.bytes, (uint64_t)(j - i) * PAGE);
		}
		*ok = j;
	}
	return 0;
}

static void serve_run(struct gmfp_engine *e, struct worker_buf *w, struct req **v,
		      uint32_t n, bool demand)
{
	struct gmfp_fetch f;
	uint32_t ok = 0, i;
	uint64_t now;
	int r;

	memset(&f, 0, sizeof(f));
	memset(w->zero, 0, sizeof(w->zero));
	f.region = key_region(v[0]->key);
	f.pgoff = key_pgoff(v[0]->key);
	f.npages = n;
	f.flags = demand ? GMFP_FETCH_DEMAND : 0;
	f.buf = w->buf;
	f.zero = w->zero;
	count(&e->st.fetches, 1);
	r = gmfp_source_fetch(e->src, &f);
	if (!r) {
		/* a record read from now on may come after our COPY (see REQ_*) */
		for (i = 0; i < n; i++)
			atomic_store(&v[i]->state, REQ_INSTALLING);
		r = install(e, w, v, n, &ok);
		/* not installed: a retry will be, and serves what came meanwhile */
		for (i = ok; i < n; i++)
			atomic_store(&v[i]->state, REQ_WAITING);
	}
	now = gmfp_now_ns();
	rcu_read_lock();
	for (i = 0; i < ok; i++)
		page_done(e, v[i], now, &w->rt);
	rcu_read_unlock();
	if (!r)
		atomic_store(&e->fail_streak, 0);
	else if (n > 1 || !v[0]->attempts)
		atomic_fetch_add(&e->fail_streak, 1);
	if (r) {
		if (r == -EEXIST)	/* raced with a MARK without SKIP: present */
			r = -EIO;
		count(&e->st.retries, n - ok);
		fail_run(e, v + ok, n - ok, r);
	}
	if (ok) {
		pthread_mutex_lock(&e->lock);
		pthread_cond_broadcast(&e->progress);
		pthread_mutex_unlock(&e->lock);
	}
}

/* Split sorted requests into runs of consecutive pages and serve each. */
static void serve_batch(struct gmfp_engine *e, struct worker_buf *w, struct req **v,
			uint32_t n, bool demand)
{
	uint32_t i, j;

	qsort(v, n, sizeof(*v), cmp_req);
	for (i = 0; i < n; i = j) {
		for (j = i + 1; j < n; j++)
			if (v[j]->key != v[j - 1]->key + 1 ||
			    key_region(v[j]->key) != key_region(v[i]->key))
				break;
		serve_run(e, w, v + i, j - i, demand);
	}
}

/* Demand readahead: extend a single-run demand batch with following pages. */
static uint32_t demand_readahead(struct gmfp_engine *e, struct req **v, uint32_t n)
{
	uint64_t last = v[n - 1]->key;
	uint32_t room = e->o.max_batch - n, want = e->o.demand_readahead;

	if (!want || !room)
		return n;
	if (key_pgoff(last) + 1 >= e->regions[key_region(last)].npages)
		return n;
	rcu_read_lock();
	n += claim_run(e, last + 1, v + n, want < room ? want : room);
	rcu_read_unlock();
	return n;
}

static bool everything_done(struct gmfp_engine *e)
{
	return atomic_load(&e->pages_present) >= e->pages_total;
}

/*
 * One piece of work, demand first.  Returns true if it did something; else
 * *@due is when the earliest retry is due (UINT64_MAX: none).
 */
static bool worker_step(struct gmfp_engine *e, struct worker_buf *w, uint64_t *due)
{
	uint64_t now;
	struct req *r;
	uint32_t n;
	bool bg_ok, paused;

	*due = UINT64_MAX;
	/* 1. demand, always first */
	n = take_demand(e, w->v, e->o.max_batch);
	if (n) {
		atomic_fetch_sub(&e->dq_len, n);
		/* more queued than this worker takes: wake another one */
		if (atomic_load(&e->dq_len) && e->o.workers > 1)
			poke(e);
		if (n == 1)
			n = demand_readahead(e, w->v, n);
		serve_batch(e, w, w->v, n, true);
		return true;
	}
	/*
	 * 2. and 3.: due retries and background, in turns.  Retries first
	 * (a page that failed is likely wanted), but after a retry a
	 * background run goes first: pages a source lacks for good are
	 * retried for ever, and must not starve the fill of the others.
	 * Background only while no demand is queued and the source works.
	 */
	r = NULL;
	n = 0;
	pthread_mutex_lock(&e->lock);
	now = gmfp_now_ns();
	paused = background_paused(e);
	bg_ok = !e->bg_done && cds_wfcq_empty(&e->dq_head, &e->dq_tail) &&
		(!paused || now >= e->next_probe_ns);
	if (bg_ok && (w->bg_turn || paused))
		n = claim_bg_run(e, w->v, now, paused);
	if (!n)
		r = take_retry(e, now, due);
	if (!n && !r && bg_ok && !w->bg_turn && !paused)
		n = claim_bg_run(e, w->v, now, paused);
	/* paused: wake up for the next probe too */
	if (paused && !e->bg_done && e->next_probe_ns < *due)
		*due = e->next_probe_ns > now ? e->next_probe_ns : now;
	pthread_mutex_unlock(&e->lock);
	if (r) {
		w->bg_turn = true;
		w->v[0] = r;
		serve_run(e, w, w->v, 1, atomic_load(&r->demand));
		return true;
	}
	if (n) {
		w->bg_turn = false;
		serve_run(e, w, w->v, n, false);
		return true;
	}
	if (everything_done(e)) {
		pthread_mutex_lock(&e->lock);
		pthread_cond_broadcast(&e->progress);
		pthread_mutex_unlock(&e->lock);
	}
	return !cds_wfcq_empty(&e->dq_head, &e->dq_tail);
}

static int due_timeout_ms(uint64_t due)
{
	uint64_t now = gmfp_now_ns();

	if (due == UINT64_MAX)
		return -1;
	if (due <= now)
		return 0;
	return (int)((due - now + 999999) / 1000000);
}

static void *worker_main(void *arg)
{
	struct gmfp_engine *e = arg;
	struct worker_buf *w = calloc(1, sizeof(*w));
	struct gmfp_event *rec = malloc(READ_BATCH * sizeof(*rec));
	uint64_t due = UINT64_MAX;
	bool busy = true;

	rcu_register_thread();
	if (w)
		w->buf = aligned_alloc(PAGE, (size_t)e->o.max_batch * PAGE);
	/*
	 * Records first (without sleeping while there is work), then one
	 * piece of work; sleep in epoll only when there is nothing to do.
	 */
	while (w && w->buf && rec) {
		if (!busy)
			retired_flush(&w->rt);	/* before sleeping */
		if (!poll_events(e, rec, busy ? 0 : due_timeout_ms(due)))
			break;
		busy = worker_step(e, w, &due);
	}
	if (w) {
		retired_flush(&w->rt);
		free(w->buf);
	}
	free(w);
	free(rec);
	rcu_unregister_thread();
	return NULL;
}

/* ---- public ---- */

static int cond_init_monotonic(pthread_cond_t *c)
{
	pthread_condattr_t a;
	int r;

	pthread_condattr_init(&a);
	pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
	r = pthread_cond_init(c, &a);
	pthread_condattr_destroy(&a);
	return -r;
}

int gmfp_engine_new(struct gmfp_engine **out, struct gmfp_source *src,
		    const struct gmfp_engine_opts *opts)
{
	struct gmfp_engine *e;
	struct epoll_event ev;
	int r;

	if (!out)
		return -EINVAL;
	*out = NULL;
	if (!src)
		return -EINVAL;
	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	r = gmfp_opts_copy(&e->o, sizeof(e->o), opts);
	if (r)
		goto err_free;
	r = -EINVAL;
	if (!e->o.workers)
		e->o.workers = 1;
	if (!e->o.max_batch)
		e->o.max_batch = 64;
	if (!e->o.retry_min_ms)
		e->o.retry_min_ms = 10;
	if (!e->o.retry_max_ms)
		e->o.retry_max_ms = 1000;
	if (e->o.workers > 64 || e->o.max_batch > MAX_BATCH_LIMIT ||
	    e->o.demand_readahead >= MAX_BATCH_LIMIT ||
	    e->o.retry_min_ms > e->o.retry_max_ms ||
	    (unsigned int)e->o.bg_order > GMFP_BG_RECORDED ||
	    (e->o.bg_order == GMFP_BG_RECORDED && !e->o.order_file) ||
	    (e->o.flags & ~(GMFP_ENGINE_FINISH | GMFP_ENGINE_MARK_ZERO |
			    GMFP_ENGINE_RENOTIFY)))
		goto err_free;
	/* a source that caps its requests caps our batches */
	if (src->ops.max_pages && e->o.max_batch > src->ops.max_pages)
		e->o.max_batch = src->ops.max_pages;
	e->src = src;
	e->k = &kernel_ops;
	e->epfd = e->evfd = e->stopfd = -1;
	atomic_init(&e->last_demand, UINT64_MAX);
	e->around_key = UINT64_MAX;
	cds_wfcq_init(&e->dq_head, &e->dq_tail);
	cds_wfcq_init(&e->inj_head, &e->inj_tail);
	pthread_mutex_init(&e->lock, NULL);
	pthread_mutex_init(&e->rec_lock, NULL);
	cond_init_monotonic(&e->progress);
	r = -ENOMEM;
	e->ht = cds_lfht_new(1024, 1024, 0, CDS_LFHT_AUTO_RESIZE | CDS_LFHT_ACCOUNTING, NULL);
	if (!e->ht)
		goto err_destroy;
	e->epfd = epoll_create1(EPOLL_CLOEXEC);
	e->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	e->stopfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (e->epfd < 0 || e->evfd < 0 || e->stopfd < 0) {
		r = -errno;
		goto err_destroy;
	}
	memset(&ev, 0, sizeof(ev));
	ev.events = EPOLLIN;
	ev.data.u32 = UINT32_MAX;
	if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, e->evfd, &ev)) {
		r = -errno;
		goto err_destroy;
	}
	/* never read: once written, every epoll_wait() returns at once */
	ev.data.u32 = UINT32_MAX - 1;
	if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, e->stopfd, &ev)) {
		r = -errno;
		goto err_destroy;
	}
	*out = e;
	return 0;
err_destroy:
	gmfp_engine_destroy(e);
	return r;
err_free:
	free(e);
	return r;
}

int gmfp_engine_add(struct gmfp_engine *e, int gmem, uint32_t *region)
{
	struct epoll_event ev;
	struct region *rg;
	int64_t size;
	uint64_t words, *bm;
	int r;

	if (!e)
		return -EINVAL;
	if (gmem < 0)
		return -EBADF;
	if (e->started)
		return -EBUSY;
	if (e->nr_regions == MAX_REGIONS)
		return -ENOSPC;
	size = gmfp_gmem_size(gmem);
	if (size < 0)
		return (int)size;
	if (!size || size % PAGE || (uint64_t)size / PAGE >= 1ull << PGOFF_BITS)
		return -EINVAL;
	rg = &e->regions[e->nr_regions];
	rg->npages = (uint64_t)size / PAGE;
	words = GMFP_DIV_ROUND_UP(rg->npages, 64);
	bm = calloc(words, sizeof(uint64_t));
	if (!bm)
		return -ENOMEM;
	rg->gmem = fcntl(gmem, F_DUPFD_CLOEXEC, 0);
	if (rg->gmem < 0) {
		r = -errno;
		goto err_bm;
	}
	/* -ENOTTY here: not a presence guest_memfd */
	rg->nfd = e->k->notify_open(e->kctx, rg->gmem,
				    GMFP_NOTIFY_NONBLOCK | GMFP_NOTIFY_CLOEXEC);
	if (rg->nfd < 0) {
		r = rg->nfd;
		goto err_gmem;
	}
	/* Open the fd before reading the bitmap: no record falls in between. */
	r = e->k->bitmap(e->kctx, rg->gmem, 0, (uint64_t)size, bm);
	if (r)
		goto err_nfd;
	memset(&ev, 0, sizeof(ev));
	ev.events = EPOLLIN;
	ev.data.u32 = e->nr_regions;
	if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, rg->nfd, &ev)) {
		r = -errno;
		goto err_nfd;
	}
	rg->done = (_Atomic uint64_t *)bm;
	for (uint64_t i = 0; i < words; i++)
		atomic_fetch_add(&rg->nr_done, (uint64_t)__builtin_popcountll(bm[i]));
	e->pages_total += rg->npages;
	atomic_fetch_add(&e->pages_present, atomic_load(&rg->nr_done));
	if (region)
		*region = e->nr_regions;
	e->nr_regions++;
	return 0;
err_nfd:
	close(rg->nfd);
err_gmem:
	close(rg->gmem);
err_bm:
	free(bm);
	memset(rg, 0, sizeof(*rg));
	return r;
}

/*
 * GMFP_ENGINE_RENOTIFY: a new period for every page not present, so that
 * the accessors of pages whose records a dead predecessor consumed ask
 * again.  Runs of not-present pages from the bitmap read at add time;
 * before the reader starts, so the new records just queue up.
 */
static int renotify(struct gmfp_engine *e)
{
	uint32_t i;

	for (i = 0; i < e->nr_regions; i++) {
		struct region *rg = &e->regions[i];
		uint64_t pg = 0, end;
		int r;

		while ((pg = gmfp_find_next_zero(rg->done, rg->npages, pg)) < rg->npages) {
			for (end = pg + 1; end < rg->npages && !gmfp_test_bit(rg->done, end); end++)
				;
			r = e->k->discard(e->kctx, rg->gmem, pg * PAGE, (end - pg) * PAGE);
			if (r)
				return r;
			pg = end;
		}
	}
	return 0;
}

int gmfp_engine_start(struct gmfp_engine *e)
{
	uint64_t pages[MAX_REGIONS];
	uint32_t i;
	ssize_t n;
	size_t dropped;
	int r;

	if (!e)
		return -EINVAL;
	if (e->started)
		return -EBUSY;
	if (atomic_load(&e->stop))
		return -ECANCELED;
	if (!e->nr_regions)
		return -ENOENT;
	if (e->o.bg_order == GMFP_BG_RECORDED) {
		for (i = 0; i < e->nr_regions; i++)
			pages[i] = e->regions[i].npages;
		n = gmfp_order_load(e->o.order_file, e->nr_regions, pages, &e->order, &dropped);
		if (n < 0)
			return (int)n;
		e->order_n = (size_t)n;
	}
	if (e->o.bg_order == GMFP_BG_NONE)
		e->bg_done = true;
	if (e->o.flags & GMFP_ENGINE_RENOTIFY) {
		r = renotify(e);
		if (r)
			return r;
	}
	e->workers = calloc(e->o.workers, sizeof(*e->workers));
	if (!e->workers)
		return -ENOMEM;
	e->started = true;
	for (i = 0; i < e->o.workers; i++) {
		r = -pthread_create(&e->workers[i], NULL, worker_main, e);
		if (r)
			break;
		e->nr_workers++;
	}
	if (r) {
		gmfp_engine_stop(e);
		return r;
	}
	return 0;
}

static int timed_wait(struct gmfp_engine *e, const struct timespec *dl)
{
	if (!dl)
		return pthread_cond_wait(&e->progress, &e->lock);
	return pthread_cond_timedwait(&e->progress, &e->lock, dl);
}

static struct timespec *deadline(struct timespec *ts, int timeout_ms)
{
	if (timeout_ms < 0)
		return NULL;
	deadline_ns(ts, (uint64_t)timeout_ms * 1000000ull);
	return ts;
}

static bool all_done(struct gmfp_engine *e, uint64_t key)
{
	(void)key;
	return everything_done(e);
}

/*
 * Sleep on e->progress until @done(e, @key), a stop, or the deadline:
 * 0, -ECANCELED or -ETIMEDOUT.  Every page_done() broadcasts under e->lock
 * after setting its bit, so testing under the lock loses no wakeup.
 */
static int wait_for(struct gmfp_engine *e, int timeout_ms,
		    bool (*done)(struct gmfp_engine *, uint64_t), uint64_t key)
{
	struct timespec ts, *dl = deadline(&ts, timeout_ms);
	int r = 0;

	pthread_mutex_lock(&e->lock);
	while (!done(e, key) && !atomic_load(&e->stop) && !r)
		r = timed_wait(e, dl);
	if (done(e, key))
		r = 0;
	else if (atomic_load(&e->stop))
		r = -ECANCELED;
	else
		r = -ETIMEDOUT;
	pthread_mutex_unlock(&e->lock);
	return r;
}

static void finish_regions(struct gmfp_engine *e)
{
	uint32_t i;

	for (i = 0; i < e->nr_regions; i++) {
		struct region *rg = &e->regions[i];
		int r;

		if (rg->finished)
			continue;
		r = e->k->finish(e->kctx, rg->gmem);
		if (!r || r == -EINVAL)	/* EINVAL: somebody finished it already */
			rg->finished = true;
	}
}

int gmfp_engine_wait(struct gmfp_engine *e, int timeout_ms)
{
	int r;

	if (!e)
		return -EINVAL;
	if (!e->started)
		return -EINVAL;
	r = wait_for(e, timeout_ms, all_done, 0);
	if (!r && (e->o.flags & GMFP_ENGINE_FINISH))
		finish_regions(e);
	return r;
}

int gmfp_engine_demand(struct gmfp_engine *e, uint32_t region, uint64_t pgoff,
		       int timeout_ms)
{
	struct req *r;
	uint64_t key;

	/* before gmfp_engine_start() too: the request waits for the reader */
	if (!e || region >= e->nr_regions || pgoff >= e->regions[region].npages)
		return -EINVAL;
	key = make_key(region, pgoff);
	if (!is_done(e, key)) {
		r = req_alloc(key, true, GMFP_ORIGIN_VCPU);
		if (!r)
			return -ENOMEM;
		/* A worker inserts it: they are registered RCU threads. */
		GMFP_TSAN_RELEASE(r);
		cds_wfcq_enqueue(&e->inj_head, &e->inj_tail, &r->qnode);
		poke(e);
	}
	return wait_for(e, timeout_ms, is_done, key);
}

void gmfp_engine_stop(struct gmfp_engine *e)
{
	uint64_t one = 1;
	uint32_t i;

	if (!e || e->stopped)
		return;
	atomic_store(&e->stop, true);
	if (write(e->stopfd, &one, sizeof(one)) < 0)
		atomic_store(&e->st.last_error, -errno);
	if (!e->started) {
		/* no threads; wake gmfp_engine_demand() callers */
		pthread_mutex_lock(&e->lock);
		pthread_cond_broadcast(&e->progress);
		pthread_mutex_unlock(&e->lock);
		return;
	}
	pthread_mutex_lock(&e->lock);
	pthread_cond_broadcast(&e->progress);
	pthread_mutex_unlock(&e->lock);
	for (i = 0; i < e->nr_workers; i++)
		pthread_join(e->workers[i], NULL);
	e->stopped = true;
}

/* Free every request still in the table, from a registered RCU thread. */
static void *drain_main(void *arg)
{
	struct gmfp_engine *e = arg;
	struct cds_lfht_iter it;
	struct cds_lfht_node *n;
	struct req *r;
	struct cds_wfcq_node *qn;

	rcu_register_thread();
	while ((qn = cds_wfcq_dequeue_blocking(&e->inj_head, &e->inj_tail)))
		free(caa_container_of(qn, struct req, qnode));
	rcu_read_lock();
	/*
	 * Not cds_lfht_for_each_entry(): it applies caa_container_of() to the
	 * NULL that ends the walk, arithmetic on a null pointer, which is
	 * undefined (clang's UBSan stops there, found by tests/fuzz/).
	 */
	for (cds_lfht_first(e->ht, &it); (n = cds_lfht_iter_get_node(&it));
	     cds_lfht_next(e->ht, &it)) {
		r = caa_container_of(n, struct req, node);
		GMFP_TSAN_ACQUIRE(r);
		req_retire(e, r, NULL);
	}
	rcu_read_unlock();
	rcu_barrier();
	rcu_unregister_thread();
	return NULL;
}

void gmfp_engine_destroy(struct gmfp_engine *e)
{
	pthread_t t;
	uint32_t i;

	if (!e)
		return;
	gmfp_engine_stop(e);
	if (e->o.record_file && e->rec_n)
		gmfp_order_save(e->o.record_file, e->rec, e->rec_n);
	if (e->ht) {
		if (!pthread_create(&t, NULL, drain_main, e))
			pthread_join(t, NULL);
		cds_lfht_destroy(e->ht, NULL);
	}
	for (i = 0; i < e->nr_regions; i++) {
		close(e->regions[i].nfd);
		close(e->regions[i].gmem);
		free((void *)e->regions[i].done);
	}
	if (e->epfd >= 0)
		close(e->epfd);
	if (e->evfd >= 0)
		close(e->evfd);
	if (e->stopfd >= 0)
		close(e->stopfd);
	pthread_mutex_destroy(&e->lock);
	pthread_mutex_destroy(&e->rec_lock);
	pthread_cond_destroy(&e->progress);
	cds_wfcq_destroy(&e->dq_head, &e->dq_tail);
	cds_wfcq_destroy(&e->inj_head, &e->inj_tail);
	free(e->workers);
	free(e->order);
	free(e->rec);
	free(e);
}

int gmfp_engine_get_stats(struct gmfp_engine *e, struct gmfp_engine_stats *out)
{
	struct gmfp_engine_stats st;
	size_t sz;
	int i;

	if (!e || !out || out->sz < sizeof(size_t))
		return -EINVAL;
	sz = out->sz < sizeof(st) ? out->sz : sizeof(st);
	memset(&st, 0, sizeof(st));
	st.sz = sz;
	st.pages_total = e->pages_total;
	st.pages_present = atomic_load(&e->pages_present);
	st.records = atomic_load(&e->st.records);
	st.reads = atomic_load(&e->st.reads);
	st.duplicates = atomic_load(&e->st.duplicates);
	st.stale = atomic_load(&e->st.stale);
	st.pages_demand = atomic_load(&e->st.pages_demand);
	st.pages_background = atomic_load(&e->st.pages_background);
	for (i = 0; i < 4; i++)
		st.pages_by_origin[i] = atomic_load(&e->st.by_origin[i]);
	st.pages_zero = atomic_load(&e->st.pages_zero);
	st.bytes = atomic_load(&e->st.bytes);
	st.fetches = atomic_load(&e->st.fetches);
	st.installs = atomic_load(&e->st.installs);
	st.errors = atomic_load(&e->st.errors);
	st.retries = atomic_load(&e->st.retries);
	st.already_present = atomic_load(&e->st.already_present);
	st.last_error = atomic_load(&e->st.last_error);
	gmfp_hist_read(&e->lat, st.lat_hist, &st.lat_count, &st.lat_max_us);
	st.lat_p50_us = gmfp_hist_percentile(st.lat_hist, st.lat_count, st.lat_max_us, 50);
	st.lat_p99_us = gmfp_hist_percentile(st.lat_hist, st.lat_count, st.lat_max_us, 99);
	memcpy(out, &st, sz);
	return 0;
}

int gmfp_engine_stats_json(struct gmfp_engine *e, char *buf, size_t len)
{
	struct gmfp_engine_stats st;
	int r;

	memset(&st, 0, sizeof(st));
	st.sz = sizeof(st);
	r = gmfp_engine_get_stats(e, &st);
	if (r)
		return r;
	return gmfp_stats_to_json(&st, buf, len);
}
