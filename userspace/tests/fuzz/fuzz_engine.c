// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * libFuzzer target: the fault engine's handling of notification records
 * (engine.c read_records() -> want_page()) and what it does about them,
 * against a fake kernel (struct gmfp_kops, as in tests/unit/test_engine.c)
 * and a fake page source.
 *
 * The input configures an engine (1-3 regions of 1-300 pages, some present
 * from the start, workers, batch size, readahead, background order, flags,
 * a source that flags zero pages and fails some fetches for a while) and
 * then is a script the main thread plays, its first few operations before
 * gmfp_engine_start(), the rest while the engine runs: batches of
 * records with arbitrary types, offsets (in range, unaligned, past the end,
 * any u64) and origins; notification reads that fail (EINTR, EAGAIN, EIO,
 * end of file); gmfp_engine_demand() calls; DISCARDs of present pages that
 * are then touched again (a new period, a new record); pauses.
 *
 * The fake kernel checks, as they happen:
 *  - every COPY, MARK, bitmap read and DISCARD lies inside its region, page
 *    aligned, non-empty; COPY always skips present pages;
 *  - COPY writes exactly the source's contents of those pages (zeroes for
 *    pages the source called zero): never another page's, never garbage;
 *  - no page is made present (COPY or MARK) that the source never returned
 *    successfully; MARK only with GMFP_ENGINE_MARK_ZERO and only for pages
 *    the source called zero; DISCARD only with GMFP_ENGINE_RENOTIFY, of
 *    pages that are not present; FINISH only with GMFP_ENGINE_FINISH;
 *  - every fetch is inside the layout and at most max_batch pages.
 * And at the end: every page of a region whose records kept flowing is
 * present within a bound (with background fill: all of them; without, at
 * least every page a record or a demand asked for), and the engine's
 * pages_present agrees with the kernel's.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz.h"
#include "gmfp.h"
#include "internal.h"

#define PG GMFP_PAGE_SIZE
#define MAX_REG 3
#define MAX_PAGES 300
#define QCAP 1024
#define SETTLE_MS 10000

enum quirk { Q_NONE, Q_EINTR, Q_EAGAIN, Q_EIO, Q_EOF };

struct freg {
	int gmem;			/* memfd of npages pages: the engine fstat()s it */
	int pipe[2];			/* one byte in it while a read has something */
	int engine_gmem, engine_nfd;	/* the fds the engine passes back */
	uint64_t npages;
	uint8_t present[MAX_PAGES];
	uint8_t notified[MAX_PAGES];	/* a record queued in this period */
	uint8_t fetched[MAX_PAGES];	/* the source returned it at least once */
	uint8_t wanted[MAX_PAGES];	/* a record read for it, or a demand */
	uint8_t contents[MAX_PAGES];	/* 0: none, 1: the source's, 2: zero */
	struct gmfp_event q[QCAP];
	size_t qn;
	enum quirk quirk;
	bool signalled;			/* the pipe holds its byte */
	bool eof;			/* reads end: records stop for good */
};

struct fake {
	pthread_mutex_t lock;
	struct freg r[MAX_REG];
	uint32_t nr;
	uint32_t engine_flags;
	uint32_t max_batch;
	/* source */
	uint32_t zero_mod;		/* page pg is zero if (pg + region) % zero_mod == 0 */
	uint32_t fail_mod;		/* pages failing while fail_budget lasts */
	int fail_budget;
	int fail_err;
};

static struct fake F;

static bool is_zero_page(uint32_t region, uint64_t pg)
{
	return F.zero_mod && (pg + region) % F.zero_mod == 0;
}

static void signal_update(struct freg *r)
{
	bool want = r->qn || r->quirk != Q_NONE || r->eof;
	char c = 0;

	if (want && !r->signalled)
		FUZZ_CHECK(write(r->pipe[1], "r", 1) == 1, "pipe write");
	else if (!want && r->signalled)
		FUZZ_CHECK(read(r->pipe[0], &c, 1) == 1, "pipe read");
	r->signalled = want;
}

static struct freg *reg_of_gmem(int gmem)
{
	uint32_t i;

	for (i = 0; i < F.nr; i++)
		if (F.r[i].engine_gmem == gmem)
			return &F.r[i];
	FUZZ_CHECK(0, "unknown gmem fd %d", gmem);
	return NULL;
}

static void check_range(struct freg *r, uint64_t off, uint64_t len, const char *op)
{
	FUZZ_CHECK(off % PG == 0 && len % PG == 0 && len > 0 &&
		   off / PG <= r->npages && len / PG <= r->npages - off / PG,
		   "%s of [%#lx, +%#lx) in a region of %lu pages", op, (unsigned long)off,
		   (unsigned long)len, (unsigned long)r->npages);
}

static int fk_notify_open(void *ctx, int gmem, unsigned int flags)
{
	struct stat st, mine;
	uint32_t i;
	int fd;

	(void)ctx;
	(void)flags;
	FUZZ_CHECK(!fstat(gmem, &st), "fstat");
	for (i = 0; i < F.nr; i++) {
		FUZZ_CHECK(!fstat(F.r[i].gmem, &mine), "fstat");
		if (mine.st_ino == st.st_ino) {
			fd = fcntl(F.r[i].pipe[0], F_DUPFD_CLOEXEC, 0);
			F.r[i].engine_gmem = gmem;
			F.r[i].engine_nfd = fd;
			return fd;
		}
	}
	FUZZ_CHECK(0, "notify_open on a gmem that is no region's");
	return -ENOTTY;
}

static ssize_t fk_notify_read(void *ctx, int nfd, struct gmfp_event *ev, size_t max)
{
	struct freg *r = NULL;
	ssize_t n;
	uint32_t i;
	size_t k;

	(void)ctx;
	pthread_mutex_lock(&F.lock);
	for (i = 0; i < F.nr; i++)
		if (F.r[i].engine_nfd == nfd)
			r = &F.r[i];
	FUZZ_CHECK(r, "notify_read of fd %d", nfd);
	FUZZ_CHECK(max > 0, "read of 0 records");
	switch (r->quirk) {
	case Q_EINTR:
		n = -EINTR;
		break;
	case Q_EAGAIN:
		n = -EAGAIN;
		break;
	case Q_EIO:
	case Q_EOF:
		/* after the records queued before it, as a kernel would */
		if (!r->qn) {
			r->eof = true;
			n = r->quirk == Q_EIO ? -EIO : 0;
			break;
		}
		/* fall through */
	default:
		if (r->eof) {
			n = 0;
			break;
		}
		n = (ssize_t)(r->qn < max ? r->qn : max);
		if (!n) {
			n = -EAGAIN;
			break;
		}
		memcpy(ev, r->q, (size_t)n * sizeof(*ev));
		for (k = 0; k < (size_t)n; k++) {
			uint64_t pg = ev[k].offset / PG;

			if (ev[k].type == GMFP_EVENT_FAULT && ev[k].offset / PG < r->npages)
				r->wanted[pg] = 1;
		}
		memmove(r->q, r->q + n, (r->qn - (size_t)n) * sizeof(*ev));
		r->qn -= (size_t)n;
		if (r->quirk == Q_EIO || r->quirk == Q_EOF)
			goto out;	/* its turn comes */
	}
	r->quirk = Q_NONE;
out:
	signal_update(r);
	pthread_mutex_unlock(&F.lock);
	return n;
}

static int fk_bitmap(void *ctx, int gmem, uint64_t off, uint64_t len, uint64_t *bm)
{
	struct freg *r;
	uint64_t i;

	(void)ctx;
	pthread_mutex_lock(&F.lock);
	r = reg_of_gmem(gmem);
	check_range(r, off, len, "bitmap");
	memset(bm, 0, (len / PG + 63) / 64 * 8);
	for (i = 0; i < len / PG; i++)
		if (r->present[off / PG + i])
			bm[i / 64] |= 1ull << (i % 64);
	pthread_mutex_unlock(&F.lock);
	return 0;
}

static void make_present(struct freg *r, uint64_t pg, uint8_t contents, const char *op)
{
	uint32_t ri = (uint32_t)(r - F.r);

	FUZZ_CHECK(r->fetched[pg], "%s of region %u page %lu, which the source never returned",
		   op, ri, (unsigned long)pg);
	r->present[pg] = 1;
	r->notified[pg] = 0;
	r->contents[pg] = contents;
}

static int fk_mark(void *ctx, int gmem, uint64_t off, uint64_t len)
{
	struct freg *r;
	uint64_t i;

	(void)ctx;
	pthread_mutex_lock(&F.lock);
	r = reg_of_gmem(gmem);
	check_range(r, off, len, "MARK");
	FUZZ_CHECK(F.engine_flags & GMFP_ENGINE_MARK_ZERO, "MARK without MARK_ZERO");
	for (i = off / PG; i < (off + len) / PG; i++) {
		FUZZ_CHECK(is_zero_page((uint32_t)(r - F.r), i), "MARK of page %lu, not a zero page",
			   (unsigned long)i);
		/* MARK of a present page is harmless: the zero page it already is */
		make_present(r, i, 2, "MARK");
	}
	pthread_mutex_unlock(&F.lock);
	return 0;
}

static int64_t fk_copy(void *ctx, int gmem, uint64_t off, const void *src, uint64_t len,
		       unsigned int flags, uint64_t *done)
{
	const uint8_t *s = src;
	struct freg *r;
	uint32_t ri;
	int64_t skipped = 0;
	uint64_t i;

	(void)ctx;
	pthread_mutex_lock(&F.lock);
	r = reg_of_gmem(gmem);
	ri = (uint32_t)(r - F.r);
	check_range(r, off, len, "COPY");
	FUZZ_CHECK(flags == GMFP_COPY_SKIP_PRESENT, "COPY flags %#x", flags);
	FUZZ_CHECK(src, "COPY from NULL");
	for (i = 0; i < len / PG; i++, s += PG) {
		uint64_t pg = off / PG + i;
		bool zero = is_zero_page(ri, pg);

		if (r->present[pg]) {
			skipped++;
			continue;
		}
		FUZZ_CHECK(fz_page_ok(s, ri, pg, zero),
			   "COPY of region %u page %lu: wrong contents (word 0 %#lx)", ri,
			   (unsigned long)pg, (unsigned long)*(const uint64_t *)s);
		make_present(r, pg, zero ? 2 : 1, "COPY");
	}
	if (done)
		*done = len;
	pthread_mutex_unlock(&F.lock);
	return skipped;
}

static int fk_finish(void *ctx, int gmem)
{
	struct freg *r;
	uint64_t i;

	(void)ctx;
	pthread_mutex_lock(&F.lock);
	r = reg_of_gmem(gmem);
	FUZZ_CHECK(F.engine_flags & GMFP_ENGINE_FINISH, "FINISH without the flag");
	for (i = 0; i < r->npages; i++)
		if (!r->present[i]) {
			pthread_mutex_unlock(&F.lock);
			return -EBUSY;
		}
	pthread_mutex_unlock(&F.lock);
	/* not modelled further: the region stays as it is (records keep working) */
	return 0;
}

static int fk_discard(void *ctx, int gmem, uint64_t off, uint64_t len)
{
	struct freg *r;
	uint64_t i;

	(void)ctx;
	pthread_mutex_lock(&F.lock);
	r = reg_of_gmem(gmem);
	check_range(r, off, len, "DISCARD");
	FUZZ_CHECK(F.engine_flags & GMFP_ENGINE_RENOTIFY, "DISCARD without RENOTIFY");
	for (i = off / PG; i < (off + len) / PG; i++)
		FUZZ_CHECK(!r->present[i], "RENOTIFY discarded present page %lu",
			   (unsigned long)i);
	pthread_mutex_unlock(&F.lock);
	return 0;
}

static int fk_stats(void *ctx, int gmem, struct gmfp_gmem_stats *st)
{
	struct freg *r;

	(void)ctx;
	pthread_mutex_lock(&F.lock);
	r = reg_of_gmem(gmem);
	memset(st, 0, sizeof(*st));
	st->nr_pages = r->npages;
	pthread_mutex_unlock(&F.lock);
	return 0;
}

static const struct gmfp_kops fake_ops = {
	.notify_open = fk_notify_open, .notify_read = fk_notify_read,
	.bitmap = fk_bitmap, .mark = fk_mark, .copy = fk_copy,
	.finish = fk_finish, .discard = fk_discard, .stats = fk_stats,
};

static int src_fetch(void *ctx, struct gmfp_fetch *f)
{
	uint8_t *b = f->buf;
	struct freg *r;
	uint32_t i;
	bool fail = false;

	(void)ctx;
	pthread_mutex_lock(&F.lock);
	FUZZ_CHECK(f->region < F.nr, "fetch of region %u of %u", f->region, F.nr);
	r = &F.r[f->region];
	FUZZ_CHECK(f->npages >= 1 && f->npages <= F.max_batch, "fetch of %u pages (max %u)",
		   f->npages, F.max_batch);
	FUZZ_CHECK(f->pgoff < r->npages && f->npages <= r->npages - f->pgoff,
		   "fetch of [%lu, +%u) of %lu pages", (unsigned long)f->pgoff, f->npages,
		   (unsigned long)r->npages);
	FUZZ_CHECK(f->buf && f->zero, "fetch without buffers");
	if (F.fail_budget > 0 && F.fail_mod)
		for (i = 0; i < f->npages; i++)
			if ((f->pgoff + i + f->region) % F.fail_mod == 0)
				fail = true;
	if (fail) {
		F.fail_budget--;
		pthread_mutex_unlock(&F.lock);
		return F.fail_err;
	}
	for (i = 0; i < f->npages; i++) {
		uint64_t pg = f->pgoff + i;

		r->fetched[pg] = 1;
		if (is_zero_page(f->region, pg)) {
			/* junk in a zero page's part of the buffer: it must be ignored */
			f->zero[i / 64] |= 1ull << (i % 64);
			memset(b + (size_t)i * PG, 0xee, PG);
			continue;
		}
		fz_fill_page(b + (size_t)i * PG, f->region, pg);
	}
	pthread_mutex_unlock(&F.lock);
	return 0;
}

static uint64_t ms_now(void)
{
	return gmfp_now_ns() / 1000000;
}

/* One record of the script: region, page, how it is bent. */
static void queue_record(struct fz *in)
{
	struct freg *r = &F.r[fz_u8(in) % F.nr];
	uint16_t pg = fz_u16(in);
	uint8_t how = fz_u8(in);
	struct gmfp_event ev;

	memset(&ev, 0, sizeof(ev));
	ev.type = GMFP_EVENT_FAULT;
	ev.offset = (uint64_t)(pg % (r->npages + 2)) * PG + (uint64_t)(how & 0x0f) * 256;
	ev.origin = how >> 4 & 3;
	ev.vcpu_id = GMFP_NO_VCPU;
	if (how & 0x40)
		ev.offset = fz_u64(in);
	if (how & 0x80) {
		ev.type = fz_u8(in);
		ev.origin = fz_u32(in);
		ev.flags = fz_u32(in);
	}
	if (r->qn == QCAP)
		return;
	/* as the kernel does: one record per page per period, for pages not present */
	if (ev.type == GMFP_EVENT_FAULT && ev.offset / PG < r->npages) {
		if (r->present[ev.offset / PG] || r->notified[ev.offset / PG])
			if (!(how & 0x40))
				return;
		r->notified[ev.offset / PG] = 1;
	}
	r->q[r->qn++] = ev;
	signal_update(r);
}

/* Play up to @max operations of the script; @started: the engine runs. */
static void run_script(struct gmfp_engine *e, struct fz *in, unsigned int max, bool started)
{
	unsigned int ops = 0;

	while (fz_left(in) && ops++ < max) {
		uint8_t op = fz_u8(in);
		struct freg *r;
		uint64_t pg, t0;
		unsigned int n, i;

		switch (op % 8) {
		case 0:
		case 1:
		case 2:
			/* a batch of records, sometimes more than one read takes */
			n = 1 + fz_u8(in) % 16;
			if (op & 0x80)
				n += 240 + fz_u8(in) % 64;
			pthread_mutex_lock(&F.lock);
			for (i = 0; i < n; i++)
				queue_record(in);
			pthread_mutex_unlock(&F.lock);
			break;
		case 3:
			r = &F.r[fz_u8(in) % F.nr];
			pthread_mutex_lock(&F.lock);
			r->quirk = (enum quirk)(1 + (op >> 3) % 4);
			signal_update(r);
			pthread_mutex_unlock(&F.lock);
			break;
		case 4: {
			uint32_t ri = fz_u8(in) % F.nr;

			pg = fz_u16(in) % F.r[ri].npages;
			pthread_mutex_lock(&F.lock);
			F.r[ri].wanted[pg] = 1;
			pthread_mutex_unlock(&F.lock);
			/* returns -ETIMEDOUT at once unless present: the request stays */
			n = (unsigned int)gmfp_engine_demand(e, ri, pg, 0);
			FUZZ_CHECK((int)n == 0 || (int)n == -ETIMEDOUT, "demand: %d", (int)n);
			break;
		}
		case 5:
			/* the VMM discards a present page, an accessor touches it again */
			r = &F.r[fz_u8(in) % F.nr];
			pg = fz_u16(in) % r->npages;
			pthread_mutex_lock(&F.lock);
			if (r->present[pg] && r->qn < QCAP && !r->eof) {
				struct gmfp_event ev = { .type = GMFP_EVENT_FAULT, .offset = pg * PG,
							 .origin = GMFP_ORIGIN_VCPU };

				r->present[pg] = 0;
				r->contents[pg] = 0;
				r->notified[pg] = 1;
				r->q[r->qn++] = ev;
				signal_update(r);
			}
			pthread_mutex_unlock(&F.lock);
			break;
		case 6:
			usleep(fz_u8(in) * 4u);
			break;
		case 7:
			/* until every queued record is read */
			if (!started)
				break;
			t0 = ms_now();
			for (;;) {
				size_t left = 0;

				pthread_mutex_lock(&F.lock);
				for (i = 0; i < F.nr; i++)
					left += F.r[i].eof ? 0 : F.r[i].qn;
				pthread_mutex_unlock(&F.lock);
				if (!left || ms_now() - t0 > 100)
					break;
				usleep(50);
			}
			break;
		}
	}
}

/* Whether every page that must be present is; @bg: background fill is on. */
static bool settled(bool bg, char *why, size_t len)
{
	uint32_t i;
	uint64_t pg;

	for (i = 0; i < F.nr; i++) {
		struct freg *r = &F.r[i];

		/* records stopped: a page discarded since may wait for ever, rightly */
		if (r->eof)
			continue;
		if (r->qn) {
			snprintf(why, len, "region %u: %zu records unread", i, r->qn);
			return false;
		}
		for (pg = 0; pg < r->npages; pg++)
			if (!r->present[pg] && (bg || r->wanted[pg] || r->notified[pg])) {
				snprintf(why, len, "region %u page %lu not present%s%s", i,
					 (unsigned long)pg, r->wanted[pg] ? " (wanted)" : "",
					 r->notified[pg] ? " (record read)" : "");
				return false;
			}
	}
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	GMFP_OPTS_INIT(struct gmfp_engine_opts, o);
	GMFP_OPTS_INIT(struct gmfp_source_ops, so);
	struct gmfp_engine_stats st;
	struct gmfp_source *src;
	struct gmfp_engine *e;
	char why[128] = "";
	struct fz in;
	uint8_t c0, c1, dens, seed;
	uint64_t present = 0, t0, pg;
	uint32_t i, region;
	bool bg, any_eof = false;
	int r;

	fz_init(&in, data, size);
	memset(&F, 0, sizeof(F));
	pthread_mutex_init(&F.lock, NULL);
	c0 = fz_u8(&in);
	c1 = fz_u8(&in);
	F.nr = 1 + (c0 & 3) % MAX_REG;
	o.workers = 1 + (c0 >> 2 & 1);
	o.bg_order = (enum gmfp_bg_order)(c0 >> 3 & 3);
	if (o.bg_order == GMFP_BG_RECORDED)	/* no order file here: fuzz_order */
		o.bg_order = GMFP_BG_SEQUENTIAL;
	o.flags = (c0 & 0x20 ? GMFP_ENGINE_MARK_ZERO : 0) |
		  (c0 & 0x40 ? GMFP_ENGINE_RENOTIFY : 0) | (c0 & 0x80 ? GMFP_ENGINE_FINISH : 0);
	o.max_batch = fz_u8(&in);
	o.demand_readahead = fz_u8(&in) % 32;
	o.retry_min_ms = 1;
	o.retry_max_ms = 2;
	F.engine_flags = o.flags;
	F.max_batch = o.max_batch ? o.max_batch : 64;
	F.zero_mod = fz_u8(&in) % 8;
	F.fail_mod = fz_u8(&in) % 16;
	F.fail_budget = fz_u8(&in) % 8;
	F.fail_err = -(int)(1 + fz_u8(&in) % 133);
	bg = o.bg_order != GMFP_BG_NONE;

	for (i = 0; i < F.nr; i++) {
		struct freg *fr = &F.r[i];

		fr->npages = 1 + fz_u16(&in) % MAX_PAGES;
		dens = fz_u8(&in);
		seed = fz_u8(&in);
		fr->gmem = memfd_create("fuzz-gmem", MFD_CLOEXEC);
		FUZZ_CHECK(fr->gmem >= 0 && !ftruncate(fr->gmem, (off_t)(fr->npages * PG)) &&
			   !pipe2(fr->pipe, O_NONBLOCK | O_CLOEXEC), "memfd/pipe: %d", errno);
		fr->engine_gmem = fr->engine_nfd = -1;
		for (pg = 0; pg < fr->npages; pg++)
			if ((uint8_t)(pg * 37 + seed) < dens) {
				fr->present[pg] = fr->fetched[pg] = 1;
				fr->contents[pg] = 1;
				present++;
			}
	}

	so.fetch = src_fetch;
	FUZZ_CHECK(!gmfp_source_new(&src, &so, NULL), "source");
	r = gmfp_engine_new(&e, src, &o);
	FUZZ_CHECK(!r, "engine_new: %d", r);
	gmfp_engine_set_kops(e, &fake_ops, NULL);
	for (i = 0; i < F.nr; i++) {
		r = gmfp_engine_add(e, F.r[i].gmem, &region);
		FUZZ_CHECK(!r && region == i, "engine_add: %d", r);
	}
	/* records (and demands) that wait for the engine before it starts */
	run_script(e, &in, c1 & 7, false);
	r = gmfp_engine_start(e);
	FUZZ_CHECK(!r, "engine_start: %d", r);
	run_script(e, &in, 200, true);

	/* no more records now: the engine must finish what it was told about */
	t0 = ms_now();
	for (;;) {
		bool ok;

		pthread_mutex_lock(&F.lock);
		ok = settled(bg, why, sizeof(why));
		pthread_mutex_unlock(&F.lock);
		if (ok)
			break;
		FUZZ_CHECK(ms_now() - t0 < SETTLE_MS, "not settled after %u ms: %s", SETTLE_MS, why);
		usleep(50);
	}
	for (i = 0; i < F.nr; i++)
		any_eof |= F.r[i].eof;
	/* background fill covers what the engine knows is missing, ended reads or not */
	if (bg) {
		r = gmfp_engine_wait(e, SETTLE_MS);
		FUZZ_CHECK(!r, "engine_wait: %d", r);
	}
	gmfp_engine_stop(e);
	memset(&st, 0, sizeof(st));
	st.sz = sizeof(st);
	FUZZ_CHECK(!gmfp_engine_get_stats(e, &st), "stats");
	present = 0;
	for (i = 0; i < F.nr; i++)
		for (pg = 0; pg < F.r[i].npages; pg++)
			present += F.r[i].present[pg];
	/*
	 * The engine may count a discarded page whose new record it never got
	 * to read (its region's reads ended); otherwise it agrees.
	 */
	if (!any_eof)
		FUZZ_CHECK(st.pages_present == present, "engine: %lu present, kernel: %lu",
			   (unsigned long)st.pages_present, (unsigned long)present);
	if (getenv("FUZZ_DEBUG"))
		fprintf(stderr, "engine: %lu/%lu present, %lu records, %lu duplicates, %lu stale,"
			" %lu demand, %lu background, %lu zero, %lu errors\n",
			(unsigned long)st.pages_present, (unsigned long)st.pages_total,
			(unsigned long)st.records, (unsigned long)st.duplicates,
			(unsigned long)st.stale, (unsigned long)st.pages_demand,
			(unsigned long)st.pages_background, (unsigned long)st.pages_zero,
			(unsigned long)st.errors);
	gmfp_engine_destroy(e);
	gmfp_source_destroy(src);
	for (i = 0; i < F.nr; i++) {
		close(F.r[i].gmem);
		close(F.r[i].pipe[0]);
		close(F.r[i].pipe[1]);
	}
	pthread_mutex_destroy(&F.lock);
	return 0;
}
