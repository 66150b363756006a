/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libgmfp: serve guest_memfd presence faults (post-copy migration, lazy
 * snapshot restore) for a KVM VMM.
 *
 * Three layers, each usable without the ones above it:
 *
 *   1. uAPI wrappers (gmfp_gmem_*, gmfp_notify_*, gmfp_vm_*): thin, typed
 *      wrappers around the guest_memfd presence ioctls, with batching of
 *      page lists into one ioctl per contiguous run and transparent resume
 *      of an interrupted KVM_SET_MEMORY_PRESENT.
 *   2. Page sources (gmfp_source_*): where page contents come from: an image
 *      file, a peer over TCP (see gmfp_wire.h), explicit zero-fill, or the
 *      caller's own callbacks.
 *   3. The fault engine (gmfp_engine_*): reads the notification fds of one
 *      or more presence guest_memfds, fetches every wanted page once, demand
 *      before background, installs runs of pages with one COPY each, and
 *      fails closed: a page whose contents could not be fetched is never made
 *      present.
 *
 * Conventions: every function that can fail returns a negative errno value
 * (or NULL for the few that return a pointer, with the reason in *err).
 * Options structs start with a size field, set it with GMFP_OPTS_INIT() so
 * that a program built against an older header keeps working.  There is no
 * global state; distinct handles may be used from distinct threads freely,
 * and the engine's functions may be called from any thread.
 *
 * Page size is 4 KiB (GMFP_PAGE_SIZE); offsets and lengths are in bytes and
 * page aligned unless a name says "pgoff" (a page index).
 */
#ifndef GMFP_H
#define GMFP_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define GMFP_VERSION_MAJOR 0
#define GMFP_VERSION_MINOR 1
#define GMFP_PAGE_SIZE 4096u
#define GMFP_PAGE_SHIFT 12

/* Zero an options struct and set its size field. */
#define GMFP_OPTS_INIT(type, name) \
	type name; memset(&name, 0, sizeof(name)); name.sz = sizeof(name)

/* Library version as "major.minor.patch". */
const char *gmfp_version(void);

/* ------------------------------------------------------------------ */
/* 1. uAPI wrappers                                                    */
/* ------------------------------------------------------------------ */

/* vCPU policies (KVM_CAP_GUEST_MEMFD_PRESENCE). */
#define GMFP_POLICY_EXIT  (1u << 0)
#define GMFP_POLICY_WAIT  (1u << 1)
#define GMFP_POLICY_ASYNC (1u << 2)

/* gmfp_gmem_create() flags */
#define GMFP_GMEM_SHARED  (1u << 0)	/* mmap-able, starts shared */

/*
 * Policies the kernel supports for VMs like @fd (a VM fd or /dev/kvm):
 * a mask of GMFP_POLICY_*, 0 without presence tracking, or -errno.
 */
int gmfp_vm_policies(int fd);

/*
 * Choose what a vCPU of VM @vm_fd does on a not-present page: one of
 * GMFP_POLICY_*, and with GMFP_POLICY_ASYNC the fallback (EXIT or WAIT) for
 * faults that cannot be asynchronous, else 0.  -EINVAL for a bad
 * combination, -EOPNOTSUPP if the kernel has no presence tracking.
 */
int gmfp_vm_set_policy(int vm_fd, unsigned int policy, unsigned int fallback);

/*
 * Create a presence-tracked guest_memfd of @size bytes on VM @vm_fd.
 * GMFP_GMEM_SHARED: mmap-able and shared (helper processes may map it);
 * without it private memory, filled only by COPY.  Returns the fd or -errno
 * (-EOPNOTSUPP: the kernel or this VM type has no presence tracking).
 */
int gmfp_gmem_create(int vm_fd, uint64_t size, unsigned int flags);

/* Size in bytes of guest_memfd @gmem (fstat), or -errno. */
int64_t gmfp_gmem_size(int gmem);

/*
 * Make [off, off + len) present with its contents as they are (zeroes for
 * pages never written).  Resumes after EINTR; -errno otherwise.
 */
int gmfp_gmem_mark(int gmem, uint64_t off, uint64_t len);

/* gmfp_gmem_copy() flags */
#define GMFP_COPY_SKIP_PRESENT (1u << 0) /* step over pages already present */

/*
 * Copy @len bytes from @src into [off, off + len) and make them present,
 * atomically per page.  Resumes after EINTR.  A page already present fails
 * with -EEXIST, unless GMFP_COPY_SKIP_PRESENT: then it is left as it is and
 * counted.  Returns the number of pages skipped (>= 0) or -errno; on error,
 * *@done (if not NULL) has the bytes copied before it.
 */
int64_t gmfp_gmem_copy(int gmem, uint64_t off, const void *src, uint64_t len,
		       unsigned int flags, uint64_t *done);

/* DISCARD (free, not present again), REARM (not present, keep contents). */
int gmfp_gmem_discard(int gmem, uint64_t off, uint64_t len);
int gmfp_gmem_rearm(int gmem, uint64_t off, uint64_t len);
/* FINISH: stop tracking for good; -EBUSY unless every page is present. */
int gmfp_gmem_finish(int gmem);

/* One page of a batch: page index and (for COPY) its 4 KiB of contents. */
struct gmfp_page {
	uint64_t pgoff;
	const void *data;
};

/*
 * Batched forms: @pages need not be sorted; every maximal run of
 * consecutive page indices (and, for copy, consecutive data buffers) goes
 * to the kernel in one ioctl.  Return the number of ioctls issued or -errno
 * (gmfp_gmem_copy_pages() skips pages already present).
 */
int gmfp_gmem_mark_pages(int gmem, const uint64_t *pgoffs, size_t n);
int gmfp_gmem_copy_pages(int gmem, const struct gmfp_page *pages, size_t n);
int gmfp_gmem_discard_pages(int gmem, const uint64_t *pgoffs, size_t n);

/*
 * Presence bitmap of [off, off + len): bit i of @bitmap (uint64_t words,
 * LSB first) is page off / 4096 + i.  Room for (len / 4096 + 63) / 64 words.
 */
int gmfp_gmem_bitmap(int gmem, uint64_t off, uint64_t len, uint64_t *bitmap);

/* 1 if page @pgoff is present, 0 if not, -errno. */
int gmfp_gmem_page_present(int gmem, uint64_t pgoff);

/* Kernel counters of one presence guest_memfd (KVM_GMEM_PRESENCE_STATS). */
struct gmfp_gmem_stats {
	uint64_t nr_pages, nr_present;
	uint64_t faults, notifications, waits, wakeups;
	uint64_t pages_set, pages_cleared, events_queued, wake_misses;
	uint64_t flags;			/* GMFP_GMEM_FINISHED */
};
#define GMFP_GMEM_FINISHED (1ull << 0)
int gmfp_gmem_stats(int gmem, struct gmfp_gmem_stats *st);

/* Notification fd: gmfp_notify_open() flags */
#define GMFP_NOTIFY_NONBLOCK (1u << 0)
#define GMFP_NOTIFY_CLOEXEC  (1u << 1)
#define GMFP_NOTIFY_PID      (1u << 2)	/* records carry the accessor's pid */

/* Record origins and access bits (as in the kernel's records). */
#define GMFP_ORIGIN_VCPU 1
#define GMFP_ORIGIN_KVM  2
#define GMFP_ORIGIN_MMAP 3
#define GMFP_ACCESS_READ  (1u << 0)
#define GMFP_ACCESS_WRITE (1u << 1)
#define GMFP_ACCESS_EXEC  (1u << 2)
#define GMFP_EVENT_FAULT 1
#define GMFP_NO_VCPU 0xffffffffu

/* One notification record, byte for byte what the kernel writes. */
struct gmfp_event {
	uint32_t type;		/* GMFP_EVENT_FAULT; skip unknown types */
	uint32_t flags;
	uint64_t offset;	/* byte offset of the page in the guest_memfd */
	uint32_t access;	/* GMFP_ACCESS_* */
	uint32_t origin;	/* GMFP_ORIGIN_* */
	uint32_t vcpu_id;	/* GMFP_NO_VCPU if not a vCPU */
	uint32_t pid;		/* 0 unless GMFP_NOTIFY_PID */
	uint64_t reserved[2];
};

/* Open a notification fd on @gmem; returns the fd or -errno. */
int gmfp_notify_open(int gmem, unsigned int flags);

/*
 * Read up to @max records in one read(): the number read, 0 at end of file
 * (tracking finished or the guest_memfd is gone), -EAGAIN (non-blocking,
 * none queued), or -errno.  -EINTR is returned, not retried.
 */
ssize_t gmfp_notify_read(int nfd, struct gmfp_event *ev, size_t max);

/* ------------------------------------------------------------------ */
/* 2. Page sources                                                     */
/* ------------------------------------------------------------------ */

/* gmfp_fetch.flags */
#define GMFP_FETCH_DEMAND (1u << 0)	/* somebody waits for it */

/*
 * One fetch: @npages pages starting at page @pgoff of region @region (the
 * index of a guest_memfd in the engine, see gmfp_engine_add()).  The source
 * fills @buf (npages * 4096 bytes) and may set bit i of @zero (one bit per
 * page, words of 64) to say that page i is all zeroes, in which case its
 * part of @buf is ignored.
 */
struct gmfp_fetch {
	uint32_t region;
	uint32_t flags;
	uint64_t pgoff;
	uint32_t npages;
	uint32_t reserved;
	void *buf;
	uint64_t *zero;
};

/*
 * A page source.  fetch() may be called from several engine threads at
 * once; returns 0 when every page of the request is filled, or -errno, and
 * then none of them is used (the engine retries later; no page is made
 * present).  destroy() releases @ctx.  max_pages caps one request (0: no
 * cap).
 */
struct gmfp_source_ops {
	size_t sz;
	int (*fetch)(void *ctx, struct gmfp_fetch *f);
	void (*destroy)(void *ctx);
	uint32_t max_pages;
};

struct gmfp_source;

/* A source from callbacks: @ops is copied, @ctx passed to them. */
int gmfp_source_new(struct gmfp_source **out, const struct gmfp_source_ops *ops,
		    void *ctx);

/*
 * An image file: region r is @region_offsets[r] bytes into the file (or, if
 * @region_offsets is NULL, region 0 at offset 0).  Reads with pread();
 * holes (SEEK_HOLE) and short reads past the end of the file are zeroes only
 * with GMFP_FILE_SHORT_IS_ZERO, else -EIO.  The fd is dup()ed.
 */
#define GMFP_FILE_SHORT_IS_ZERO (1u << 0)
struct gmfp_file_opts {
	size_t sz;
	int fd;				/* or -1 and @path */
	const char *path;
	const uint64_t *region_offsets;
	uint32_t nr_regions;
	uint32_t flags;
};
int gmfp_source_file(struct gmfp_source **out, const struct gmfp_file_opts *opts);

/* Every page is zero (explicitly: nothing is fetched). */
int gmfp_source_zero(struct gmfp_source **out);

/* A peer over TCP speaking the gmfp wire protocol (gmfp_wire.h). */
struct gmfp_tcp_opts {
	size_t sz;
	const char *host;		/* name or address; default "127.0.0.1" */
	const char *port;		/* service or number */
	uint32_t demand_conns;		/* connections for demand fetches (1) */
	uint32_t background_conns;	/* connections for background (1) */
	uint32_t timeout_ms;		/* per request before it fails (5000) */
	uint32_t connect_timeout_ms;	/* per connect attempt (2000) */
	/* the layout the engine expects; checked against the server's hello */
	uint32_t nr_regions;
	const uint64_t *region_sizes;	/* bytes, @nr_regions of them */
};
int gmfp_source_tcp(struct gmfp_source **out, const struct gmfp_tcp_opts *opts);

/* Counters every source keeps. */
struct gmfp_source_stats {
	uint64_t requests;	/* fetch() calls */
	uint64_t pages;		/* pages requested */
	uint64_t failures;	/* fetch() calls that failed */
	uint64_t reconnects;	/* TCP: connections re-established */
};
void gmfp_source_get_stats(const struct gmfp_source *s, struct gmfp_source_stats *st);

/* Fetch through a source directly (what the engine calls). */
int gmfp_source_fetch(struct gmfp_source *s, struct gmfp_fetch *f);

void gmfp_source_destroy(struct gmfp_source *s);

/* ------------------------------------------------------------------ */
/* 3. Fault engine                                                     */
/* ------------------------------------------------------------------ */

/* Background fill order */
enum gmfp_bg_order {
	GMFP_BG_NONE = 0,	/* demand only */
	GMFP_BG_SEQUENTIAL,	/* ascending page index, region by region */
	GMFP_BG_AROUND_DEMAND,	/* outward from the latest demand faults */
	GMFP_BG_RECORDED,	/* order_file first, then sequential */
};

/* gmfp_engine_opts.flags */
#define GMFP_ENGINE_FINISH	(1u << 0) /* FINISH each guest_memfd when complete */
#define GMFP_ENGINE_MARK_ZERO	(1u << 1) /* zero pages by MARK: memory is fresh */
/*
 * Taking over from a server that died (a pager restarted): records it read
 * but never served are gone, and the kernel sends one record per period.
 * With this flag gmfp_engine_start() DISCARDs every page that is not
 * present, which begins a new period for each: their waiters fault again
 * and queue fresh records.  A not-present page has no contents to lose.
 */
#define GMFP_ENGINE_RENOTIFY	(1u << 2)

struct gmfp_engine;

/* Called (from an engine thread) when a fetch or an install fails. */
typedef void (*gmfp_error_cb)(void *arg, uint32_t region, uint64_t pgoff,
			      uint32_t npages, int err);

struct gmfp_engine_opts {
	size_t sz;
	uint32_t workers;		/* fetch/install threads (1) */
	uint32_t max_batch;		/* pages per fetch and COPY (64, <= 256) */
	uint32_t demand_readahead;	/* extra pages after a demand page (0) */
	enum gmfp_bg_order bg_order;
	const char *order_file;		/* GMFP_BG_RECORDED: "region pgoff" lines */
	const char *record_file;	/* write the demand order here on destroy */
	uint32_t retry_min_ms;		/* first backoff after an error (10) */
	uint32_t retry_max_ms;		/* backoff cap (1000) */
	uint32_t flags;			/* GMFP_ENGINE_* */
	gmfp_error_cb on_error;
	void *cb_arg;
};

/*
 * Create an engine serving from @src (which the engine does not own: destroy
 * it after the engine).  @opts may be NULL for defaults.
 */
int gmfp_engine_new(struct gmfp_engine **out, struct gmfp_source *src,
		    const struct gmfp_engine_opts *opts);

/*
 * Serve guest_memfd @gmem (dup()ed) as region number *@region, the next
 * index from 0.  Opens its notification fd and reads its bitmap.  Only
 * before gmfp_engine_start().
 */
int gmfp_engine_add(struct gmfp_engine *e, int gmem, uint32_t *region);

/* Start the reader and the workers. */
int gmfp_engine_start(struct gmfp_engine *e);

/*
 * Wait until every page of every region is present (0), @timeout_ms passes
 * (-ETIMEDOUT; < 0 waits forever), or the engine is stopped (-ECANCELED).
 */
int gmfp_engine_wait(struct gmfp_engine *e, int timeout_ms);

/*
 * Ask for page @pgoff of @region now (e.g. after a KVM_EXIT_MEMORY_FAULT),
 * as a demand fault, and wait until it is present: 0, -ETIMEDOUT, or
 * -ECANCELED.  The kernel has queued a record for it too; whichever comes
 * first is served, the page is fetched once.  May be called before
 * gmfp_engine_start(): the request is served once the engine runs.
 */
int gmfp_engine_demand(struct gmfp_engine *e, uint32_t region, uint64_t pgoff,
		       int timeout_ms);

/*
 * Stop the threads (pending requests are dropped, nothing is installed);
 * gmfp_engine_wait() and gmfp_engine_demand() callers get -ECANCELED.  On
 * an engine never started, it also makes gmfp_engine_start() fail.
 */
void gmfp_engine_stop(struct gmfp_engine *e);

/* Stop if running, write record_file, close the fds, free. */
void gmfp_engine_destroy(struct gmfp_engine *e);

#define GMFP_HIST_BUCKETS 32	/* bucket i: [2^i, 2^(i+1)) us; 0 also < 1 us */

struct gmfp_engine_stats {
	size_t sz;
	uint64_t pages_total, pages_present;
	uint64_t records;		/* records read */
	uint64_t reads;			/* read() calls returning records */
	uint64_t duplicates;		/* records/demands for pages in flight */
	uint64_t stale;			/* records for pages already present */
	uint64_t pages_demand, pages_background;
	uint64_t pages_by_origin[4];	/* [GMFP_ORIGIN_*]; [0]: background */
	uint64_t pages_zero;		/* installed as zero pages */
	uint64_t bytes;			/* bytes fetched and copied in */
	uint64_t fetches, installs;	/* source calls, install ioctls */
	uint64_t errors, retries;
	uint64_t already_present;	/* skipped by COPY: EEXIST */
	/* fault (record read / demand call) -> present, demand pages only */
	uint64_t lat_hist[GMFP_HIST_BUCKETS];
	uint64_t lat_count, lat_p50_us, lat_p99_us, lat_max_us;
	int64_t last_error;		/* -errno of the latest error, 0 if none */
};
int gmfp_engine_get_stats(struct gmfp_engine *e, struct gmfp_engine_stats *st);

/*
 * The same as one JSON object into @buf (NUL terminated when @len > 0).
 * Returns the length the whole object needs (without the NUL), like
 * snprintf(), or -errno.
 */
int gmfp_engine_stats_json(struct gmfp_engine *e, char *buf, size_t len);

#ifdef __cplusplus
}
#endif
#endif /* GMFP_H */
