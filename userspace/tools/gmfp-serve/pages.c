// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * gmfp-serve: where the pages come from, and in which order they go out.
 *
 * Region r is the r-th --image or --gmem-fd of the command line.  An image
 * is read by a libgmfp file source; a guest_memfd (the source VM's memory,
 * the live side of post-copy) through a read-only shared mapping, since a
 * guest_memfd has no read().  One gmfp_source over all of them is what every
 * connection's gmfp_wire_serve() fetches from; it is called by many
 * connection threads at once.
 *
 * Demand before background: gmfp_wire_serve() flags the fetches of DEMAND
 * channel connections GMFP_FETCH_DEMAND.  A background fetch waits while any
 * demand fetch is in progress, so that the disk (or, with --throttle-us, the
 * emulated link) goes to whoever has a vCPU waiting.  It waits at most
 * bg_max_wait_ms: under a continuous demand stream the background is slowed,
 * not starved until the client's request timeout, which would only make it
 * reconnect and ask again.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "gmfp-serve.h"

#define PS GMFP_PAGE_SIZE

__thread const char *gs_peer = "";

struct gs_region {
	char *name;			/* for messages */
	uint64_t size;
	struct gmfp_source *file;	/* an --image, or NULL */
	const uint8_t *map;		/* a --gmem-fd, or NULL */
	int gmem;			/* its fd (not ours to close), or -1 */
	bool tracked;			/* presence-tracked: ask before reading */
	_Atomic uint64_t *served;	/* one bit per page: served before */
};

static struct gs_ratelimit fetch_rl = GS_RATELIMIT_INIT;

int gs_pages_init(struct gs_pages *p, struct gs_stats *st, uint32_t throttle_us,
		  uint32_t bg_max_wait_ms)
{
	pthread_condattr_t ca;
	int r;

	memset(p, 0, sizeof(*p));
	p->st = st;
	p->throttle_us = throttle_us;
	p->bg_max_wait_ms = bg_max_wait_ms;
	r = pthread_condattr_init(&ca);
	if (r)
		return -r;
	r = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	if (!r)
		r = pthread_cond_init(&p->cond, &ca);
	pthread_condattr_destroy(&ca);
	if (r)
		return -r;
	r = pthread_mutex_init(&p->lock, NULL);
	if (r) {
		pthread_cond_destroy(&p->cond);
		return -r;
	}
	return 0;
}

/* A new region at the end, with everything but its backing set up. */
static struct gs_region *region_new(struct gs_pages *p, const char *name, uint64_t size)
{
	struct gs_region *v, *rg;
	uint64_t *s, words;

	if (p->nr_regions >= GMFP_WIRE_MAX_REGIONS) {
		gs_log("%s: too many regions (at most %u)", name, GMFP_WIRE_MAX_REGIONS);
		return NULL;
	}
	if (!size || size % PS) {
		gs_log("%s: size %llu is not a positive multiple of %u", name,
		       (unsigned long long)size, PS);
		return NULL;
	}
	v = realloc(p->regions, (p->nr_regions + 1) * sizeof(*v));
	if (!v)
		goto nomem;
	p->regions = v;
	s = realloc(p->sizes, (p->nr_regions + 1) * sizeof(*s));
	if (!s)
		goto nomem;
	p->sizes = s;
	rg = &p->regions[p->nr_regions];
	memset(rg, 0, sizeof(*rg));
	rg->gmem = -1;
	rg->size = size;
	rg->name = strdup(name);
	words = (size / PS + 63) / 64;
	rg->served = calloc(words, sizeof(*rg->served));
	if (!rg->name || !rg->served) {
		free(rg->name);
		free(rg->served);
		goto nomem;
	}
	return rg;
nomem:
	gs_log("%s: out of memory", name);
	return NULL;
}

/* The region region_new() returned is complete: count it. */
static void region_commit(struct gs_pages *p, struct gs_region *rg)
{
	p->sizes[p->nr_regions] = rg->size;
	p->nr_regions++;
}

static void region_free(struct gs_region *rg)
{
	if (rg->file)
		gmfp_source_destroy(rg->file);
	if (rg->map)
		munmap((void *)rg->map, rg->size);
	free(rg->served);
	free(rg->name);
}

int gs_pages_add_image(struct gs_pages *p, const char *path)
{
	GMFP_OPTS_INIT(struct gmfp_file_opts, fo);
	struct gs_region *rg;
	uint64_t size;
	struct stat sb;
	int fd, r;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		gs_log("%s: cannot open: %s", path, strerror(-r));
		return r;
	}
	if (fstat(fd, &sb)) {
		r = -errno;
		gs_log("%s: %s", path, strerror(-r));
		goto out;
	}
	if (S_ISBLK(sb.st_mode)) {
		if (ioctl(fd, BLKGETSIZE64, &size)) {
			r = -errno;
			gs_log("%s: cannot get the device size: %s", path, strerror(-r));
			goto out;
		}
	} else if (S_ISREG(sb.st_mode)) {
		size = (uint64_t)sb.st_size;
	} else {
		r = -EINVAL;
		gs_log("%s: not a regular file or block device", path);
		goto out;
	}
	rg = region_new(p, path, size);
	if (!rg) {
		r = -EINVAL;
		goto out;
	}
	/*
	 * Region 0 of a source of its own.  A short read (the file shrank
	 * under us) stays an error: the client gets ERROR, never zeroes.
	 */
	fo.fd = fd;
	r = gmfp_source_file(&rg->file, &fo);
	if (r) {
		gs_log("%s: %s", path, strerror(-r));
		region_free(rg);
		goto out;
	}
	region_commit(p, rg);
out:
	close(fd);	/* the file source has its own dup */
	return r;
}

int gs_pages_add_gmem(struct gs_pages *p, int fd)
{
	struct gmfp_gmem_stats ks;
	struct gs_region *rg;
	char name[32];
	int64_t size;
	void *map;
	int r;

	snprintf(name, sizeof(name), "--gmem-fd %d", fd);
	if (fcntl(fd, F_GETFD) < 0) {
		gs_log("%s: not an open file descriptor", name);
		return -EBADF;
	}
	size = gmfp_gmem_size(fd);
	if (size < 0) {
		gs_log("%s: %s", name, strerror((int)-size));
		return (int)size;
	}
	rg = region_new(p, name, (uint64_t)size);
	if (!rg)
		return -EINVAL;
	/*
	 * Presence tracking still on (not finished): the source's own VM may
	 * not have every page yet.  A plain guest_memfd, or a memfd, answers
	 * ENOTTY: every page is there.
	 */
	r = gmfp_gmem_stats(fd, &ks);
	if (!r) {
		rg->tracked = !(ks.flags & GMFP_GMEM_FINISHED);
		if (rg->tracked && ks.nr_present < ks.nr_pages)
			gs_log("%s: %llu of %llu pages not present: refused until they are",
			       name, (unsigned long long)(ks.nr_pages - ks.nr_present),
			       (unsigned long long)ks.nr_pages);
	} else if (r != -ENOTTY && r != -EINVAL) {
		gs_log("%s: presence stats: %s", name, strerror(-r));
		region_free(rg);
		return r;
	}
	map = mmap(NULL, (size_t)size, PROT_READ, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED) {
		r = -errno;
		gs_log("%s: cannot map it: %s (private guest_memfd memory cannot be read "
		       "by userspace)", name, strerror(-r));
		region_free(rg);
		return r;
	}
	rg->map = map;
	rg->gmem = fd;
	/* nothing this process starts needs it */
	fcntl(fd, F_SETFD, FD_CLOEXEC);
	region_commit(p, rg);
	return 0;
}

/* ---- the gate ---- */

static void deadline_ts(struct timespec *ts, uint64_t ns)
{
	ts->tv_sec = (time_t)(ns / 1000000000ull);
	ts->tv_nsec = (long)(ns % 1000000000ull);
}

static void demand_begin(struct gs_pages *p)
{
	pthread_mutex_lock(&p->lock);
	p->demand_active++;
	pthread_mutex_unlock(&p->lock);
}

static void demand_end(struct gs_pages *p)
{
	pthread_mutex_lock(&p->lock);
	if (!--p->demand_active)
		pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
}

/*
 * Background: wait, under p->lock, while a demand fetch is in progress,
 * until @deadline.  Returns whether it waited; *@expired once the deadline
 * has passed (then demand no longer holds it back).
 */
static bool yield_to_demand(struct gs_pages *p, uint64_t deadline, bool *expired)
{
	struct timespec ts;
	bool waited = false;

	deadline_ts(&ts, deadline);
	while (p->demand_active && !p->stopping && !*expired) {
		waited = true;
		if (pthread_cond_timedwait(&p->cond, &p->lock, &ts) == ETIMEDOUT)
			*expired = true;
	}
	return waited;
}

/*
 * --throttle-us: the pages of all connections go out one at a time, each
 * taking throttle_us, like over one slow link.  Demand takes the next slot
 * whenever the link is free; background only when no demand fetch is in
 * progress (or its wait has run out).  Slots are per page, so a demand
 * request waits for at most one background page, never a whole batch.
 */
static bool throttle(struct gs_pages *p, uint32_t npages, bool demand, uint64_t deadline,
		     bool *expired)
{
	struct timespec d = {
		.tv_sec = p->throttle_us / 1000000,
		.tv_nsec = (long)(p->throttle_us % 1000000) * 1000,
	};
	bool waited = false;
	uint32_t i;

	for (i = 0; i < npages; i++) {
		pthread_mutex_lock(&p->lock);
		for (;;) {
			if (!demand)
				waited |= yield_to_demand(p, deadline, expired);
			if (!p->link_busy || p->stopping)
				break;
			pthread_cond_wait(&p->cond, &p->lock);
		}
		if (p->stopping) {
			pthread_mutex_unlock(&p->lock);
			break;
		}
		p->link_busy = true;
		pthread_mutex_unlock(&p->lock);
		while (nanosleep(&d, &d) && errno == EINTR)
			;
		pthread_mutex_lock(&p->lock);
		p->link_busy = false;
		pthread_cond_broadcast(&p->cond);
		pthread_mutex_unlock(&p->lock);
	}
	return waited;
}

/* ---- reading ---- */

static bool page_zero(const uint8_t *page)
{
	const uint64_t *w = (const void *)page;
	size_t i;

	for (i = 0; i < PS / 8; i++)
		if (w[i])
			return false;
	return true;
}

/*
 * A live guest_memfd: only pages that are present are read.  Reading a page
 * that is not through the mapping would wait until somebody makes it
 * present (the mapping is gated like every other access), holding this
 * connection, and what is not there yet is not ours to hand out.
 */
static int gmem_read(const struct gs_region *rg, struct gmfp_fetch *f)
{
	uint64_t bm[GMFP_WIRE_MAX_PAGES / 64], off = f->pgoff * PS;
	size_t len = (size_t)f->npages * PS;
	uint32_t i;
	int r;

	if (rg->tracked) {
		r = gmfp_gmem_bitmap(rg->gmem, off, len, bm);
		if (r)
			return r;
		for (i = 0; i < f->npages; i++)
			if (!(bm[i / 64] >> (i % 64) & 1))
				return -ENODATA;
	}
	memcpy(f->buf, rg->map + off, len);
	if (f->zero)
		for (i = 0; i < f->npages; i++)
			if (page_zero((const uint8_t *)f->buf + (size_t)i * PS))
				f->zero[i / 64] |= 1ull << (i % 64);
	return 0;
}

static int region_read(const struct gs_region *rg, struct gmfp_fetch *f)
{
	struct gmfp_fetch sub;

	if (rg->map)
		return gmem_read(rg, f);
	/* each image is region 0 of its own file source */
	sub = *f;
	sub.region = 0;
	return gmfp_source_fetch(rg->file, &sub);
}

static void account(struct gs_pages *p, struct gs_region *rg, const struct gmfp_fetch *f,
		    bool demand)
{
	struct gs_stats *st = p->st;
	uint64_t zeros = 0, repeats = 0;
	uint32_t i;

	for (i = 0; i < f->npages; i++) {
		uint64_t pg = f->pgoff + i, bit = 1ull << (pg % 64);

		if (f->zero && (f->zero[i / 64] >> (i % 64) & 1))
			zeros++;
		if (atomic_fetch_or_explicit(&rg->served[pg / 64], bit,
					     memory_order_relaxed) & bit)
			repeats++;
	}
	gs_count(&st->requests[demand ? GS_DEMAND : GS_BACKGROUND], 1);
	gs_count(&st->pages[demand ? GS_DEMAND : GS_BACKGROUND], f->npages);
	gs_count(&st->zero_pages, zeros);
	gs_count(&st->bytes, (f->npages - zeros) * PS);
	gs_count(&st->repeats, repeats);
}

static bool in_region(const struct gs_region *rg, uint64_t pgoff, uint32_t npages)
{
	uint64_t n = rg->size / PS;

	return pgoff <= n && npages <= n - pgoff;
}

static int pages_fetch(void *ctx, struct gmfp_fetch *f)
{
	struct gs_pages *p = ctx;
	bool demand = f->flags & GMFP_FETCH_DEMAND, expired = false, waited = false;
	uint64_t deadline = gs_now_ns() + (uint64_t)p->bg_max_wait_ms * 1000000;
	struct gs_region *rg;
	int r;

	/* gmfp_wire_serve() checked the layout; a second look costs nothing */
	if (f->region >= p->nr_regions || !f->npages || f->npages > GMFP_WIRE_MAX_PAGES ||
	    !in_region(&p->regions[f->region], f->pgoff, f->npages))
		return -EINVAL;
	rg = &p->regions[f->region];

	if (demand) {
		demand_begin(p);
	} else {
		pthread_mutex_lock(&p->lock);
		waited = yield_to_demand(p, deadline, &expired);
		pthread_mutex_unlock(&p->lock);
	}
	if (p->throttle_us)
		waited |= throttle(p, f->npages, demand, deadline, &expired);
	r = region_read(rg, f);
	if (demand)
		demand_end(p);
	if (waited)
		gs_count(&p->st->bg_waits, 1);

	if (r) {
		enum gs_err kind = r == -ENODATA ? GS_ERR_NOT_PRESENT : GS_ERR_FETCH;

		gs_count(&p->st->errors[kind], 1);
		gs_log_rl(&fetch_rl, "%s: %s pages %llu..%llu: %s, answered with ERROR",
			  gs_peer, rg->name, (unsigned long long)f->pgoff,
			  (unsigned long long)(f->pgoff + f->npages - 1),
			  r == -ENODATA ? "not present yet" : strerror(-r));
		return r;
	}
	account(p, rg, f, demand);
	return 0;
}

int gs_pages_ready(struct gs_pages *p)
{
	GMFP_OPTS_INIT(struct gmfp_source_ops, ops);

	if (!p->nr_regions)
		return -EINVAL;
	ops.fetch = pages_fetch;
	ops.max_pages = GMFP_WIRE_MAX_PAGES;
	return gmfp_source_new(&p->src, &ops, p);
}

void gs_pages_stop(struct gs_pages *p)
{
	pthread_mutex_lock(&p->lock);
	p->stopping = true;
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
}

void gs_pages_destroy(struct gs_pages *p)
{
	uint32_t i;

	gmfp_source_destroy(p->src);
	for (i = 0; i < p->nr_regions; i++)
		region_free(&p->regions[i]);
	free(p->regions);
	free(p->sizes);
	pthread_cond_destroy(&p->cond);
	pthread_mutex_destroy(&p->lock);
	memset(p, 0, sizeof(*p));
}
