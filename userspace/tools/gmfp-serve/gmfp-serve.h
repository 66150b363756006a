/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * gmfp-serve: a page server for post-copy migration and lazy restore.  It
 * serves memory images and live guest_memfds over the gmfp wire protocol
 * (gmfp_wire.h), one thread per connection running gmfp_wire_serve().
 *
 *   main.c   options, the listening socket, connections, signals
 *   pages.c  where the pages come from (image files, guest_memfd mappings)
 *            and the demand-before-background gate every fetch goes through
 *   stats.c  counters, their JSON, and the log
 */
#ifndef GMFP_SERVE_TOOL_H
#define GMFP_SERVE_TOOL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gmfp.h"
#include "gmfp_wire.h"

#define PROG "gmfp-serve"

/* Exit status (the --help text lists them too). */
enum {
	GS_EXIT_OK = 0,		/* SIGTERM/SIGINT after cleanup, --help, --version */
	GS_EXIT_RUNTIME = 1,	/* failed while serving */
	GS_EXIT_USAGE = 2,	/* bad command line */
	GS_EXIT_INPUT = 3,	/* an --image or --gmem-fd cannot be served */
	GS_EXIT_LISTEN = 4,	/* cannot listen on the --listen address */
};

/* ---- stats.c ---- */

/* Why a connection was closed or a request answered with ERROR. */
enum gs_err {
	GS_ERR_MALFORMED,	/* not a frame, or not one a client may send now */
	GS_ERR_OVERSIZED,	/* a header announcing more than any frame can be */
	GS_ERR_VERSION,		/* another protocol version */
	GS_ERR_HANDSHAKE,	/* the client expects another layout or page size */
	GS_ERR_TIMEOUT,		/* silent mid-frame, or not reading our answers */
	GS_ERR_RESET,		/* gone in the middle of a frame */
	GS_ERR_IO,		/* any other socket error, out of memory */
	GS_ERR_FETCH,		/* pages could not be read: ERROR answered */
	GS_ERR_NOT_PRESENT,	/* live guest_memfd pages not present: ERROR answered */
	GS_ERR_NR
};

/* Index of the request classes in the counters below. */
enum { GS_DEMAND, GS_BACKGROUND };

struct gs_stats {
	_Atomic uint64_t conns;		/* accepted and served */
	_Atomic uint64_t active;	/* being served now */
	_Atomic uint64_t refused;	/* over --max-conns (or no thread for them) */
	_Atomic uint64_t requests[2];	/* fetches answered with DATA, by class */
	_Atomic uint64_t pages[2];	/* pages in them */
	_Atomic uint64_t zero_pages;	/* flagged zero, not sent */
	_Atomic uint64_t bytes;		/* page bytes sent */
	_Atomic uint64_t repeats;	/* pages this process had served before */
	_Atomic uint64_t bg_waits;	/* background fetches held back for demand */
	_Atomic uint64_t errors[GS_ERR_NR];
};

static inline void gs_count(_Atomic uint64_t *c, uint64_t n)
{
	atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

/* Same contract as snprintf(): the length the whole object needs. */
int gs_stats_json(const struct gs_stats *st, char *buf, size_t len);
/* The name of an error kind as the JSON has it. */
const char *gs_err_name(enum gs_err kind);

/*
 * One line on stderr, "gmfp-serve: " + message, written with a single
 * write() so that lines of concurrent threads never interleave.
 */
void gs_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/*
 * The same, but at most a burst of lines per second for messages a peer can
 * provoke at will; what was left out is counted in the next line that goes
 * out.  @rl is a caller's static instance.
 */
struct gs_ratelimit {
	pthread_mutex_t lock;
	uint64_t window_ns;
	unsigned int in_window;
	uint64_t suppressed;
};
#define GS_RATELIMIT_INIT { .lock = PTHREAD_MUTEX_INITIALIZER }
void gs_log_rl(struct gs_ratelimit *rl, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

uint64_t gs_now_ns(void);

/* ---- pages.c ---- */

struct gs_region;

struct gs_pages {
	uint32_t nr_regions;
	struct gs_region *regions;
	uint64_t *sizes;		/* bytes, for the handshake */
	struct gmfp_source *src;	/* what gmfp_wire_serve() fetches from */
	struct gs_stats *st;

	uint32_t throttle_us;		/* per page, one page at a time: a slow link */
	uint32_t bg_max_wait_ms;	/* the longest background yields to demand */

	/* the demand-before-background gate */
	pthread_mutex_t lock;
	pthread_cond_t cond;		/* CLOCK_MONOTONIC */
	uint32_t demand_active;		/* demand fetches in progress */
	bool link_busy;			/* throttle: a page slot is taken */
	bool stopping;
};

/* The peer the calling thread serves, for messages ("" if none). */
extern __thread const char *gs_peer;

/*
 * Set up @p (before adding regions).  Returns 0 or -errno; the add
 * functions print why they fail and return -errno.
 */
int gs_pages_init(struct gs_pages *p, struct gs_stats *st, uint32_t throttle_us,
		  uint32_t bg_max_wait_ms);
/* An image file: a region of its size. */
int gs_pages_add_image(struct gs_pages *p, const char *path);
/*
 * An inherited guest_memfd (or any file that can be mapped shared, e.g. a
 * memfd): a region of its size, read through a read-only shared mapping.
 * A presence-tracked one is asked for each request's pages first: a page
 * that is not present is answered with ERROR (ENODATA), never read.
 */
int gs_pages_add_gmem(struct gs_pages *p, int fd);
/* After the last add: the source for gmfp_wire_serve(). */
int gs_pages_ready(struct gs_pages *p);
/* Wake everything waiting in the gate: shutting down. */
void gs_pages_stop(struct gs_pages *p);
void gs_pages_destroy(struct gs_pages *p);

#endif /* GMFP_SERVE_TOOL_H */
