/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libgmfp internals shared by the library's files and its unit tests (which
 * link the objects directly).  Nothing here is exported from the shared
 * library: libgmfp.map lists the public symbols.
 */
#ifndef GMFP_INTERNAL_H
#define GMFP_INTERNAL_H

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "gmfp.h"

/*
 * liburcu publishes nodes with its own inline-asm atomics, which TSan does
 * not see.  Where a node goes through a wfcqueue or the lfht from one
 * thread to another, these tell TSan about the ordering liburcu provides.
 */
#if defined(__SANITIZE_THREAD__)
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#define GMFP_TSAN_RELEASE(p) __tsan_release(p)
#define GMFP_TSAN_ACQUIRE(p) __tsan_acquire(p)
#else
#define GMFP_TSAN_RELEASE(p) ((void)(p))
#define GMFP_TSAN_ACQUIRE(p) ((void)(p))
#endif

#define GMFP_LIKELY(x) __builtin_expect(!!(x), 1)
#define GMFP_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define GMFP_DIV_ROUND_UP(a, b) (((a) + (b) - 1) / (b))

/*
 * Options structs grow at the end.  Copy what the caller's (possibly older
 * or newer) struct has into ours; a newer caller's extra bytes must be zero,
 * else -E2BIG (it asked for something this library does not know).
 */
int gmfp_opts_copy(void *dst, size_t dst_sz, const void *src);

/* Monotonic clock in ns. */
static inline uint64_t gmfp_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- page sources (source.c) ---- */
struct gmfp_source {
	struct gmfp_source_ops ops;
	void *ctx;
	_Atomic uint64_t requests, pages, failures, reconnects;
};

/* For sources that count reconnects themselves (source_tcp.c). */
void gmfp_source_count_reconnect(struct gmfp_source *s);

/* ---- the wire protocol's layout checks (wire.c) ---- */
struct gmfp_wire_msg;

/*
 * Whether the layout a HELLO or WELCOME @m carries is exactly @nr_regions
 * regions of @region_sizes bytes: what a server and a client that both name
 * a layout must agree on.
 */
bool gmfp_wire_layout_is(const struct gmfp_wire_msg *m, uint32_t nr_regions,
			 const uint64_t *region_sizes);
/* Whether @npages pages from @pgoff of @region lie within the layout. */
bool gmfp_wire_in_layout(uint32_t nr_regions, const uint64_t *region_sizes,
			 uint32_t region, uint64_t pgoff, uint32_t npages);

/* ---- socket I/O of the wire protocol (sockio.c) ---- */
/*
 * Both ends of a connection (serve.c, source_tcp.c) send and receive with
 * MSG_DONTWAIT after a poll() bounded by a deadline in gmfp_now_ns() time.
 */
static inline uint64_t gmfp_sock_deadline(uint32_t ms)
{
	return gmfp_now_ns() + (uint64_t)ms * 1000000;
}

/*
 * Wait for @events on @fd until @deadline (0: forever): 0 once poll() says
 * ready or in error (the next I/O call tells which), else -ETIMEDOUT or
 * -errno.
 */
int gmfp_sock_wait(int fd, short events, uint64_t deadline);
/* All @len bytes of @buf by @deadline: 0, or -errno (EPIPE as such). */
int gmfp_sock_send_all(int fd, const void *buf, size_t len, uint64_t deadline);

/*
 * One sendmsg() of @len bytes with @nfds fds as SCM_RIGHTS (at most
 * GMFP_SOCK_MAX_FDS): its result, or -errno.  For the pager protocol and
 * the tests that speak it by hand.
 */
#define GMFP_SOCK_MAX_FDS 128
ssize_t gmfp_sock_send_fds(int fd, const void *buf, size_t len, const int *fds,
			   unsigned int nfds, int flags);

/* Bytes received on a connection and not consumed yet. */
struct gmfp_sock_rbuf {
	uint8_t *buf;
	size_t len;
	size_t size;		/* of @buf: no frame bigger than this is taken */
};

/*
 * The next whole frame from @fd, decoded into @m.  Returns its length (its
 * bytes stay at the start of @rb until gmfp_sock_consume()), 0 for EOF
 * before any byte of it, or -errno: -ECONNRESET for EOF inside it, -EBADMSG
 * for a header announcing more than @rb holds, what gmfp_wire_decode() says
 * of a malformed frame, -ETIMEDOUT.  Time limit @deadline; with 0, none
 * until the frame's first byte and @timeout_ms from then (0: none at all),
 * for a peer that may be idle between frames but not in the middle of one.
 */
ssize_t gmfp_sock_recv_frame(int fd, struct gmfp_sock_rbuf *rb,
			     struct gmfp_wire_msg *m, uint64_t deadline,
			     uint32_t timeout_ms);
/* Drop the first @n bytes (a frame gmfp_sock_recv_frame() returned). */
void gmfp_sock_consume(struct gmfp_sock_rbuf *rb, size_t n);

/* ---- the kernel, as the engine sees it (engine.c) ---- */
/*
 * The engine reaches the kernel only through this table.  The default is
 * the uAPI layer (uapi.c); unit tests install a fake kernel to drive the
 * engine's scheduling on a machine without the patched kernel.  gmem is a
 * real fd either way (the engine dup()s and fstat()s it), and notify_open
 * must return an fd that polls readable when records are queued.
 */
struct gmfp_kops {
	int (*notify_open)(void *ctx, int gmem, unsigned int flags);
	ssize_t (*notify_read)(void *ctx, int nfd, struct gmfp_event *ev, size_t max);
	int (*bitmap)(void *ctx, int gmem, uint64_t off, uint64_t len, uint64_t *bm);
	int (*mark)(void *ctx, int gmem, uint64_t off, uint64_t len);
	int64_t (*copy)(void *ctx, int gmem, uint64_t off, const void *src,
			uint64_t len, unsigned int flags, uint64_t *done);
	int (*finish)(void *ctx, int gmem);
	int (*discard)(void *ctx, int gmem, uint64_t off, uint64_t len);
	int (*stats)(void *ctx, int gmem, struct gmfp_gmem_stats *st);
};
/* Before gmfp_engine_add(). */
void gmfp_engine_set_kops(struct gmfp_engine *e, const struct gmfp_kops *k, void *ctx);

/* ---- latency histogram (hist.c) ---- */
/*
 * log2 buckets of microseconds, updated with relaxed atomics from any
 * thread: bucket 0 is [0, 2) us, bucket i >= 1 is [2^i, 2^(i+1)) us, the
 * last bucket also holds everything above.
 */
struct gmfp_hist {
	_Atomic uint64_t bucket[GMFP_HIST_BUCKETS];
	_Atomic uint64_t count;
	_Atomic uint64_t max_us;
};

void gmfp_hist_add(struct gmfp_hist *h, uint64_t us);
unsigned int gmfp_hist_bucket_of(uint64_t us);
/* Snapshot into plain arrays. */
void gmfp_hist_read(struct gmfp_hist *h, uint64_t bucket[GMFP_HIST_BUCKETS],
		    uint64_t *count, uint64_t *max_us);
/*
 * Percentile @pct (0 < pct <= 100) of a snapshot: the upper bound of the
 * bucket holding the pct-th sample, capped at max_us; 0 if count is 0.
 */
uint64_t gmfp_hist_percentile(const uint64_t bucket[GMFP_HIST_BUCKETS],
			      uint64_t count, uint64_t max_us, double pct);

/* ---- JSON (json.c) ---- */
/* struct gmfp_engine_stats as one JSON object; snprintf() semantics. */
int gmfp_stats_to_json(const struct gmfp_engine_stats *st, char *buf, size_t len);

/* ---- page runs (range.c) ---- */
/*
 * Sort @pgoffs in place and split into maximal runs of consecutive
 * indices (duplicates dropped); calls @fn(arg, first, npages) for each,
 * stopping at the first non-zero return, which is returned.  Runs are cut at
 * @max_run pages (0: no limit).
 */
int gmfp_for_each_run(uint64_t *pgoffs, size_t n, uint64_t max_run,
		      int (*fn)(void *arg, uint64_t first, uint64_t npages),
		      void *arg);

/* ---- recorded access order (order.c) ---- */
/*
 * Parse an order file: one "region pgoff" pair of decimal numbers per line,
 * '#' comments and blank lines ignored.  Entries with region >= nr_regions
 * or pgoff >= region_pages[region] are dropped (counted in *@dropped).
 * Returns the number of entries (in *@out, malloc()ed, in file order) or
 * -errno (-EINVAL for a malformed line, with its 1-based number in
 * *@bad_line).
 */
struct gmfp_order_entry {
	uint32_t region;
	uint64_t pgoff;
};
ssize_t gmfp_order_parse(const char *text, size_t len, uint32_t nr_regions,
			 const uint64_t *region_pages,
			 struct gmfp_order_entry **out, size_t *dropped,
			 size_t *bad_line);
ssize_t gmfp_order_load(const char *path, uint32_t nr_regions,
			const uint64_t *region_pages,
			struct gmfp_order_entry **out, size_t *dropped);
/* Write entries as an order file (atomically: temp file + rename). */
int gmfp_order_save(const char *path, const struct gmfp_order_entry *e, size_t n);

/*
 * Around-demand order: the next page to fill, given the latest demand fault
 * @center and a cursor state.  Walks center+1, center-1, center+2, ... in
 * runs; state is reset whenever the center changes.
 */
struct gmfp_around {
	uint64_t center;
	uint64_t dist;		/* next distance to try */
	bool up_done, down_done;
	bool down_next;		/* this dist's down side is next (up done) */
};
void gmfp_around_reset(struct gmfp_around *a, uint64_t center);
/*
 * Next candidate run start in [0, npages): returns false once both sides
 * are exhausted.  *@first is the page; the run goes up (or down) from it.
 */
bool gmfp_around_next(struct gmfp_around *a, uint64_t npages, uint64_t *first);

/* ---- little-endian fields of the wire and pager protocols ---- */
/* Byte by byte: no unaligned loads, the same result on any host. */
static inline uint16_t gmfp_get16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static inline uint32_t gmfp_get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static inline uint64_t gmfp_get64(const uint8_t *p)
{
	return (uint64_t)gmfp_get32(p) | (uint64_t)gmfp_get32(p + 4) << 32;
}

static inline void gmfp_put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static inline void gmfp_put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static inline void gmfp_put64(uint8_t *p, uint64_t v)
{
	gmfp_put32(p, (uint32_t)v);
	gmfp_put32(p + 4, (uint32_t)(v >> 32));
}

/* ---- bitmaps ---- */
static inline bool gmfp_test_bit(const _Atomic uint64_t *map, uint64_t i)
{
	return atomic_load_explicit(&map[i / 64], memory_order_acquire) &
	       (1ull << (i % 64));
}

/* Sets bit @i; returns its old value. */
static inline bool gmfp_set_bit(_Atomic uint64_t *map, uint64_t i)
{
	uint64_t m = 1ull << (i % 64);

	return atomic_fetch_or_explicit(&map[i / 64], m, memory_order_acq_rel) & m;
}

static inline bool gmfp_clear_bit(_Atomic uint64_t *map, uint64_t i)
{
	uint64_t m = 1ull << (i % 64);

	return atomic_fetch_and_explicit(&map[i / 64], ~m, memory_order_acq_rel) & m;
}

/* First clear bit at or after @from below @n, or @n. */
uint64_t gmfp_find_next_zero(const _Atomic uint64_t *map, uint64_t n, uint64_t from);

#endif /* GMFP_INTERNAL_H */
