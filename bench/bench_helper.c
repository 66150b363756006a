// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * bench_helper: the helper-process path.  Threads of ANOTHER process fault
 * on memory that a handler thread of this process fills, page by page:
 *
 *   presence         a presence guest_memfd (shared, mmap-able); the faulting
 *                    process maps it; the handler reads one record from the
 *                    notification fd and COPYs the page (KVM_SET_MEMORY_PRESENT),
 *                    the raw uAPI, no library
 *   presence-engine  the same guest_memfd, served by libgmfp's engine (1 worker,
 *                    demand only, callback source): what a VMM gets
 *   uffd-missing     private anonymous memory registered MISSING by the
 *                    faulting process, which hands the userfaultfd over; the
 *                    handler reads one uffd_msg and UFFDIO_COPYs the page
 *   uffd-minor       a shmem memfd (page cache filled beforehand), mapped and
 *                    registered MINOR; the handler reads one uffd_msg and
 *                    UFFDIO_CONTINUEs (no copy: upstream demand_paging_test's
 *                    MINOR mode does the same)
 *
 * The handler is one thread with the same loop for both interfaces (a
 * blocking read() of one record, one install ioctl).  The source contents
 * live in this process' memory, already faulted in.  Each faulting thread
 * walks its own contiguous slice once, reading the first word of each page,
 * and times every access (first touch -> the load returns).  pages/s is
 * pages / the faulting threads' wall time.  After each run the faulting
 * process checks every byte of every page; any difference fails the program.
 *
 * Per page it also keeps when the handler got the record and when its
 * install returned, so that the latency splits into
 *   notify   touch -> the handler's read() returns with the record
 *   install  the install ioctl (COPY / CONTINUE)
 *   resume   the install returned -> the faulting load returns (can be
 *            negative: the faulter is woken inside the ioctl)
 *
 *   bench_helper [-n pages] [-t 1,2,4] [-r reps] [-m mode,...] [-T]
 *
 * -T: one traced run per mode (1 thread) with the presence tracepoints,
 * page_fault_user and sched_switch in ftrace (clock "mono"); prints where
 * the time goes between the user-space timestamps and the kernel events.
 * Traced runs print no BENCH lines.
 *
 * Output: a table, and one line per (mode, threads)
 *   BENCH {"bench":"helper","mode":...,"threads":N,...}
 * with the median run's figures (of the pages/s) and min/max of pages/s.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/kvm.h>
#include <linux/userfaultfd.h>

#include "gmfp.h"
#include "bench_common.h"

#define PG 4096ul
#define MAX_REPS 16
#define MAX_THREADS 64

enum mode { M_PRESENCE, M_ENGINE, M_UFFD_MISSING, M_UFFD_MINOR, NR_MODES };
static const char *const mode_name[NR_MODES] = {
	"presence", "presence-engine", "uffd-missing", "uffd-minor",
};

static uint64_t npages = 8192;
static unsigned int reps = 3;
static unsigned int nthr_list[8] = { 1, 2, 4 };
static unsigned int nr_nthr = 3;
static bool mode_on[NR_MODES] = { true, true, true, true };
static int kvm_fd = -1;

/* Shared with the faulting process (MAP_SHARED before the fork). */
struct shared {
	uint64_t t_start, t_end;
	_Atomic uint64_t bad_first;	/* wrong first word seen at the fault */
	uint64_t bad_pages;		/* pages that differ after the run */
	int child_err;
	/* per page, CLOCK_MONOTONIC ns */
	uint64_t *t_touch, *t_resume;	/* faulting thread */
	uint64_t *t_read, *t_inst;	/* handler */
};

struct result {
	double pps;
	double p50, p99, max;			/* us */
	double notify50, install50, resume50;	/* us, medians */
	uint64_t dups;
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t word_of(uint64_t p, uint64_t i)
{
	return (p + 1) * 0x9e3779b97f4a7c15ull ^ (i * 0xbf58476d1ce4e5b9ull);
}

static void fill_page(void *dst, uint64_t p)
{
	uint64_t *w = dst, i;

	for (i = 0; i < PG / 8; i++)
		w[i] = word_of(p, i);
}

static void *xmap_shared(size_t len)
{
	void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	if (m == MAP_FAILED) {
		perror("mmap shared");
		exit(1);
	}
	memset(m, 0, len);
	return m;
}

static void die(const char *what)
{
	fprintf(stderr, "bench_helper: %s: %s\n", what, strerror(errno));
	exit(1);
}

/* ---- fd passing over a socketpair ---- */

static int send_fd(int sock, int fd, uint64_t word)
{
	char cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { .iov_base = &word, .iov_len = sizeof(word) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	struct cmsghdr *c;

	if (fd >= 0) {
		memset(cbuf, 0, sizeof(cbuf));
		mh.msg_control = cbuf;
		mh.msg_controllen = sizeof(cbuf);
		c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof(int));
	}
	return sendmsg(sock, &mh, 0) == sizeof(word) ? 0 : -errno;
}

static int recv_fd(int sock, int *fd, uint64_t *word)
{
	char cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { .iov_base = word, .iov_len = sizeof(*word) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1,
			     .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
	struct cmsghdr *c;
	ssize_t n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);

	if (n != sizeof(*word))
		return n < 0 ? -errno : -EPIPE;
	*fd = -1;
	c = CMSG_FIRSTHDR(&mh);
	if (c && c->cmsg_type == SCM_RIGHTS)
		memcpy(fd, CMSG_DATA(c), sizeof(int));
	return 0;
}

/* ---- the faulting process ---- */

struct faulter {
	struct shared *sh;
	volatile const uint8_t *mem;
	uint64_t first, last;
	pthread_barrier_t *bar;
	pthread_t t;
};

static void *fault_main(void *arg)
{
	struct faulter *f = arg;
	struct shared *sh = f->sh;
	uint64_t p;

	prctl(PR_SET_NAME, "bh-fault");
	pthread_barrier_wait(f->bar);
	for (p = f->first; p < f->last; p++) {
		uint64_t t0 = now_ns(), v;

		v = *(volatile const uint64_t *)(f->mem + p * PG);
		sh->t_resume[p] = now_ns();
		sh->t_touch[p] = t0;
		if (v != word_of(p, 0))
			atomic_fetch_add(&sh->bad_first, 1);
	}
	return NULL;
}

static uint64_t verify(const uint8_t *mem)
{
	uint64_t p, i, bad = 0;

	for (p = 0; p < npages; p++) {
		const uint64_t *w = (const uint64_t *)(mem + p * PG);

		for (i = 0; i < PG / 8; i++)
			if (w[i] != word_of(p, i))
				break;
		bad += i != PG / 8;
	}
	return bad;
}

static int uffd_open(uint64_t features)
{
	struct uffdio_api api = { .api = UFFD_API, .features = features };
	int fd = (int)syscall(__NR_userfaultfd, O_CLOEXEC);

	if (fd < 0)
		return -errno;
	if (ioctl(fd, UFFDIO_API, &api)) {
		close(fd);
		return -errno;
	}
	return fd;
}

/*
 * The child: set up its view of the memory, hand the parent what it needs,
 * wait for "go", fault everything with @nthr threads, check it, exit.
 */
static void child_main(enum mode m, int sock, int fd, unsigned int nthr, struct shared *sh)
{
	struct faulter f[MAX_THREADS];
	pthread_barrier_t bar;
	size_t len = npages * PG;
	uint8_t *mem;
	uint64_t go;
	int ufd = -1, dummy;
	unsigned int i;

	if (m == M_PRESENCE || m == M_ENGINE) {
		mem = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
	} else if (m == M_UFFD_MISSING) {
		mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (mem != MAP_FAILED)
			madvise(mem, len, MADV_NOHUGEPAGE);
	} else {
		mem = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
	}
	if (mem == MAP_FAILED)
		die("child mmap");
	if (m == M_UFFD_MISSING || m == M_UFFD_MINOR) {
		struct uffdio_register reg = {
			.range = { .start = (uintptr_t)mem, .len = len },
			.mode = m == M_UFFD_MISSING ? UFFDIO_REGISTER_MODE_MISSING :
						      UFFDIO_REGISTER_MODE_MINOR,
		};

		ufd = uffd_open(m == M_UFFD_MINOR ? UFFD_FEATURE_MINOR_SHMEM : 0);
		if (ufd < 0) {
			errno = -ufd;
			die("userfaultfd");
		}
		if (ioctl(ufd, UFFDIO_REGISTER, &reg))
			die("UFFDIO_REGISTER");
	}
	if (send_fd(sock, ufd, (uintptr_t)mem))
		die("send uffd");
	if (ufd >= 0)
		close(ufd);

	pthread_barrier_init(&bar, NULL, nthr + 1);
	for (i = 0; i < nthr; i++) {
		f[i].sh = sh;
		f[i].mem = mem;
		f[i].first = npages * i / nthr;
		f[i].last = npages * (i + 1) / nthr;
		f[i].bar = &bar;
		if (pthread_create(&f[i].t, NULL, fault_main, &f[i]))
			die("pthread_create");
	}
	/* the handler is running */
	if (recv_fd(sock, &dummy, &go))
		die("recv go");
	sh->t_start = now_ns();
	pthread_barrier_wait(&bar);
	for (i = 0; i < nthr; i++)
		pthread_join(f[i].t, NULL);
	sh->t_end = now_ns();
	sh->bad_pages = verify(mem);
	_exit(0);
}

/* ---- the handler (this process) ---- */

struct handler {
	enum mode m;
	int fd;			/* notification fd or userfaultfd */
	int gmem;
	uintptr_t base;		/* the child's mapping (uffd) */
	const uint8_t *src;
	struct shared *sh;
	pid_t child;
	uint64_t installed, dups;
	int err;
};

static void *handler_main(void *arg)
{
	struct handler *h = arg;
	struct shared *sh = h->sh;

	prctl(PR_SET_NAME, "bh-handler");
	while (h->installed < npages) {
		uint64_t idx, t;
		int r;

		if (h->m == M_PRESENCE) {
			struct kvm_gmem_presence_event ev;
			struct kvm_memory_present mp;
			ssize_t n = read(h->fd, &ev, sizeof(ev));

			if (n < 0 && errno == EINTR)
				continue;
			if (n != sizeof(ev)) {
				h->err = n < 0 ? -errno : -EIO;
				break;
			}
			t = now_ns();
			if (ev.type != KVM_GMEM_EVENT_FAULT)
				continue;
			idx = ev.offset / PG;
			sh->t_read[idx] = t;
			memset(&mp, 0, sizeof(mp));
			mp.offset = ev.offset;
			mp.size = PG;
			mp.op = KVM_MEMORY_PRESENT_COPY;
			mp.src = (uintptr_t)(h->src + ev.offset);
			r = ioctl(h->gmem, KVM_SET_MEMORY_PRESENT, &mp) ? -errno : 0;
		} else {
			struct uffd_msg msg;
			ssize_t n = read(h->fd, &msg, sizeof(msg));

			if (n < 0 && (errno == EINTR || errno == EAGAIN))
				continue;
			if (n != sizeof(msg)) {
				h->err = n < 0 ? -errno : -EIO;
				break;
			}
			t = now_ns();
			if (msg.event != UFFD_EVENT_PAGEFAULT)
				continue;
			idx = (msg.arg.pagefault.address - h->base) / PG;
			sh->t_read[idx] = t;
			if (h->m == M_UFFD_MISSING) {
				struct uffdio_copy c = {
					.dst = h->base + idx * PG,
					.src = (uintptr_t)(h->src + idx * PG),
					.len = PG,
				};

				r = ioctl(h->fd, UFFDIO_COPY, &c) ? -errno : 0;
			} else {
				struct uffdio_continue c = {
					.range = { .start = h->base + idx * PG, .len = PG },
				};

				r = ioctl(h->fd, UFFDIO_CONTINUE, &c) ? -errno : 0;
			}
		}
		sh->t_inst[idx] = now_ns();
		if (r == -EEXIST) {
			h->dups++;
		} else if (r) {
			h->err = r;
			break;
		} else {
			h->installed++;
		}
	}
	/* the faulting threads would wait for ever */
	if (h->err)
		kill(h->child, SIGKILL);
	return NULL;
}

/* libgmfp's engine: the source copies from the prepared contents. */
static int src_fetch(void *ctx, struct gmfp_fetch *f)
{
	memcpy(f->buf, (const uint8_t *)ctx + f->pgoff * PG, (size_t)f->npages * PG);
	return 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

static double pct_us(const uint64_t *sorted, uint64_t n, unsigned int pct)
{
	uint64_t k = (n * pct + 99) / 100;

	return (double)sorted[k ? k - 1 : 0] / 1000.0;
}

static double median_diff_us(const uint64_t *a, const uint64_t *b, int64_t *tmp, bool need_b)
{
	uint64_t p, n = 0;

	for (p = 0; p < npages; p++)
		if (a[p] && (!need_b || b[p]))
			tmp[n++] = (int64_t)(a[p] - b[p]);
	if (!n)
		return 0;
	qsort(tmp, n, sizeof(*tmp), cmp_i64);
	return (double)tmp[n / 2] / 1000.0;
}

/* The contents, in this process: the source of every COPY. */
static uint8_t *contents;
static int shm_fd = -1;		/* uffd-minor: the memfd, filled once */

static int make_contents(void)
{
	uint64_t p;

	contents = aligned_alloc(PG, npages * PG);
	if (!contents)
		return -ENOMEM;
	for (p = 0; p < npages; p++)
		fill_page(contents + p * PG, p);
	return 0;
}

/* A fresh memfd with the contents in its page cache (not mapped anywhere). */
static int make_shmem(void)
{
	int fd = memfd_create("bench-minor", MFD_CLOEXEC);

	if (fd < 0)
		return -errno;
	if (pwrite(fd, contents, npages * PG, 0) != (ssize_t)(npages * PG)) {
		close(fd);
		return -EIO;
	}
	return fd;
}

static int make_gmem(int *vm)
{
	struct kvm_create_guest_memfd g = {
		.size = npages * PG,
		.flags = GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED |
			 GUEST_MEMFD_FLAG_PRESENCE,
	};
	int fd;

	*vm = ioctl(kvm_fd, KVM_CREATE_VM, 0);
	if (*vm < 0)
		return -errno;
	fd = ioctl(*vm, KVM_CREATE_GUEST_MEMFD, &g);
	if (fd < 0) {
		fd = -errno;
		close(*vm);
	}
	return fd;
}

static struct shared *sh;
static uintptr_t last_base;	/* the child's mapping in the latest run */

static void alloc_shared(void)
{
	sh = xmap_shared(sizeof(*sh));
	sh->t_touch = xmap_shared(npages * 8);
	sh->t_resume = xmap_shared(npages * 8);
	sh->t_read = xmap_shared(npages * 8);
	sh->t_inst = xmap_shared(npages * 8);
}

static void reset_shared(void)
{
	uint64_t *a[4] = { sh->t_touch, sh->t_resume, sh->t_read, sh->t_inst };
	int i;

	for (i = 0; i < 4; i++)
		memset(a[i], 0, npages * 8);
	sh->t_start = sh->t_end = 0;
	sh->bad_first = 0;
	sh->bad_pages = 0;
	sh->child_err = 0;
}

/* One run of @m with @nthr faulting threads.  Returns 0 or -errno; fails
 * loudly (exit) on wrong contents. */
static int run_one(enum mode m, unsigned int nthr, struct result *res)
{
	GMFP_OPTS_INIT(struct gmfp_engine_opts, eo);
	GMFP_OPTS_INIT(struct gmfp_source_ops, so);
	GMFP_OPTS_INIT(struct gmfp_engine_stats, est);
	struct gmfp_engine *e = NULL;
	struct gmfp_source *src = NULL;
	struct handler h = { .m = m, .fd = -1, .gmem = -1, .src = contents, .sh = sh };
	int sv[2], vm = -1, childfd = -1, st, r = 0;
	uint64_t *lat, p, base = 0, go = 1;
	bool handler_started = false;
	int64_t *tmp;
	pthread_t ht;
	pid_t pid;

	reset_shared();
	if (m == M_PRESENCE || m == M_ENGINE) {
		h.gmem = make_gmem(&vm);
		if (h.gmem < 0)
			return h.gmem;
		childfd = h.gmem;
	} else if (m == M_UFFD_MINOR) {
		childfd = shm_fd;
	}
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv))
		return -errno;
	pid = fork();
	if (pid < 0)
		return -errno;
	if (!pid) {
		close(sv[0]);
		child_main(m, sv[1], childfd, nthr, sh);
	}
	close(sv[1]);
	h.child = pid;
	if (recv_fd(sv[0], &h.fd, &base)) {
		r = -EPIPE;
		goto out_child;
	}
	h.base = (uintptr_t)base;
	last_base = h.base;

	if (m == M_PRESENCE) {
		struct kvm_gmem_notify_fd nf = { .flags = O_CLOEXEC };

		h.fd = ioctl(h.gmem, KVM_GMEM_GET_NOTIFY_FD, &nf);
		if (h.fd < 0) {
			r = -errno;
			goto out_child;
		}
	}
	if (m == M_ENGINE) {
		so.fetch = src_fetch;
		eo.workers = 1;
		eo.max_batch = 64;
		eo.bg_order = GMFP_BG_NONE;
		if (gmfp_source_new(&src, &so, contents) ||
		    gmfp_engine_new(&e, src, &eo) || gmfp_engine_add(e, h.gmem, NULL) ||
		    gmfp_engine_start(e)) {
			r = -EIO;
			goto out_child;
		}
	} else if (pthread_create(&ht, NULL, handler_main, &h)) {
		r = -EAGAIN;
		goto out_child;
	} else {
		handler_started = true;
	}
	/* go */
	if (send_fd(sv[0], -1, go))
		r = -EPIPE;

out_child:
	if (r)
		kill(pid, SIGKILL);
	close(sv[0]);
	if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st))
		r = r ? r : -ECHILD;
	if (m == M_ENGINE) {
		if (e) {
			gmfp_engine_get_stats(e, &est);
			gmfp_engine_destroy(e);
			h.dups = est.duplicates;
			if (!r && est.pages_demand != npages)
				r = -EIO;
		}
		if (src)
			gmfp_source_destroy(src);
	} else if (handler_started) {
		/* a child that died leaves the handler blocked in read() */
		if (r)
			pthread_cancel(ht);
		pthread_join(ht, NULL);
	}
	if (h.fd >= 0)
		close(h.fd);
	if (h.gmem >= 0)
		close(h.gmem);
	if (vm >= 0)
		close(vm);
	if (r)
		return r;
	if (h.err)
		return h.err;

	if (sh->bad_first || sh->bad_pages) {
		fprintf(stderr, "bench_helper: %s, %u threads: WRONG CONTENTS: %lu first words, %lu pages differ\n",
			mode_name[m], nthr, (unsigned long)sh->bad_first,
			(unsigned long)sh->bad_pages);
		exit(3);
	}

	lat = malloc(npages * sizeof(*lat));
	tmp = malloc(npages * sizeof(*tmp));
	for (p = 0; p < npages; p++)
		lat[p] = sh->t_resume[p] - sh->t_touch[p];
	qsort(lat, npages, sizeof(*lat), cmp_u64);
	res->pps = (double)npages * 1e9 / (double)(sh->t_end - sh->t_start);
	res->p50 = pct_us(lat, npages, 50);
	res->p99 = pct_us(lat, npages, 99);
	res->max = (double)lat[npages - 1] / 1000.0;
	res->dups = h.dups;
	if (m == M_ENGINE) {
		/* the engine does not tell us when it read each record */
		res->notify50 = res->install50 = res->resume50 = 0;
	} else {
		res->notify50 = median_diff_us(sh->t_read, sh->t_touch, tmp, false);
		res->install50 = median_diff_us(sh->t_inst, sh->t_read, tmp, false);
		res->resume50 = median_diff_us(sh->t_resume, sh->t_inst, tmp, true);
	}
	free(lat);
	free(tmp);
	return 0;
}

/* ---- ftrace: where the time goes (-T) ---- */

static const char *tracefs;

static int tr_write(const char *file, const char *val)
{
	char path[256];
	int fd, r = 0;

	snprintf(path, sizeof(path), "%s/%s", tracefs, file);
	fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (write(fd, val, strlen(val)) != (ssize_t)strlen(val))
		r = -errno;
	close(fd);
	return r;
}

static const char *const trace_events[] = {
	"kvm/kvm_gmem_presence_fault", "kvm/kvm_gmem_presence_wait",
	"kvm/kvm_gmem_presence_wake", "kvm/kvm_gmem_presence_set",
	"exceptions/page_fault_user", "sched/sched_switch", "sched/sched_waking",
	"sched/sched_wakeup",
};
#define NR_TEV (sizeof(trace_events) / sizeof(trace_events[0]))

static int trace_setup(void)
{
	static const char *const roots[] = { "/sys/kernel/tracing", "/sys/kernel/debug/tracing" };
	char path[256], f[128];
	unsigned int i;

	for (i = 0; i < 2; i++) {
		snprintf(path, sizeof(path), "%s/trace", roots[i]);
		if (!access(path, W_OK)) {
			tracefs = roots[i];
			break;
		}
	}
	if (!tracefs)
		return -ENOENT;
	tr_write("tracing_on", "0");
	if (tr_write("trace_clock", "mono"))
		return -EINVAL;
	tr_write("buffer_size_kb", "16384");
	tr_write("events/enable", "0");
	for (i = 0; i < NR_TEV; i++) {
		snprintf(f, sizeof(f), "events/%s/enable", trace_events[i]);
		if (tr_write(f, "1"))
			printf("# trace: no event %s\n", trace_events[i]);
	}
	tr_write("trace", "");
	return 0;
}

/* Per page, the kernel's view: ns of the first event of each kind. */
struct kview {
	uint64_t pf;		/* page_fault_user */
	uint64_t rec, wait;	/* presence: record queued, faulter about to sleep */
	uint64_t wake;		/* presence: the page's waiter woken */
	uint64_t waking;	/* sched_waking of the faulting thread (the waker) */
	uint64_t woken;		/* sched_wakeup of it (its CPU, maybe after an IPI) */
	uint64_t run;		/* sched_switch to it after that */
};

/* Median of b - a over the pages that have both (a, b: ns per page). */
static double med(const uint64_t *b, const uint64_t *a, int64_t *tmp)
{
	return median_diff_us(b, a, tmp, true);
}

static void print_step(const char *what, const uint64_t *b, const uint64_t *a, int64_t *tmp)
{
	printf(", %s %.1f", what, med(b, a, tmp));
}

/*
 * Parse the trace: "<comm>-<pid> [cpu] <flags> <secs>.<usecs>: <event>: ..."
 * With one faulting thread, the thread waits for one page at a time: the
 * page of its latest page_fault_user event (tied to a page by address).
 * Its next sched_waking is the handler waking it for that page (uffd and
 * presence alike), sched_wakeup when its CPU takes it (after an IPI), the
 * sched_switch to it after that when it runs again.
 * The presence events carry the page index.
 */
static void trace_analyse(enum mode m, uintptr_t base)
{
	struct kview *kv = calloc(npages, sizeof(*kv));
	int64_t *tmp = malloc(npages * sizeof(*tmp));
	uint64_t *col[7], cur = UINT64_MAX, n = 0, p;
	char path[256], line[512];
	FILE *f;
	int i;

	snprintf(path, sizeof(path), "%s/trace", tracefs);
	f = fopen(path, "r");
	for (i = 0; i < 7; i++)
		col[i] = malloc(npages * 8);
	if (!f || !kv || !tmp || !col[6])
		return;
	while (fgets(line, sizeof(line), f)) {
		char *b = strchr(line, ']'), *ev;
		unsigned long sec, usec;
		unsigned long long x;
		uint64_t t;

		if (line[0] == '#' || !b)
			continue;
		b = strchr(b + 1, ' ');
		if (!b)
			continue;
		while (*b == ' ')
			b++;
		b = strchr(b, ' ');	/* skip the irq-info flags */
		if (!b || sscanf(b, " %lu.%lu:", &sec, &usec) != 2)
			continue;
		t = (uint64_t)sec * 1000000000ull + (uint64_t)usec * 1000ull;
		ev = strstr(b, ": ");
		if (!ev)
			continue;
		ev += 2;
		if (!strncmp(ev, "page_fault_user:", 16)) {
			char *a = strstr(ev, "address=");

			if (!a || sscanf(a, "address=%llx", &x) != 1 ||
			    x < base || x >= base + npages * PG)
				continue;
			cur = (x - base) / PG;
			if (!kv[cur].pf)
				kv[cur].pf = t;
		} else if (!strncmp(ev, "kvm_gmem_presence_", 18)) {
			char *a = strstr(ev, "index ");

			if (!a || sscanf(a, "index %llx", &x) != 1 || x >= npages)
				continue;
			if (!strncmp(ev + 18, "fault:", 6) && strstr(ev, "notified") && !kv[x].rec)
				kv[x].rec = t;
			else if (!strncmp(ev + 18, "wait:", 5) && !kv[x].wait)
				kv[x].wait = t;
			else if (!strncmp(ev + 18, "wake:", 5) && !kv[x].wake)
				kv[x].wake = t;
		} else if (cur != UINT64_MAX && !strncmp(ev, "sched_waking:", 13)) {
			if (strstr(ev, "comm=bh-fault ") && !kv[cur].waking)
				kv[cur].waking = t;
		} else if (cur != UINT64_MAX && !strncmp(ev, "sched_wakeup:", 13)) {
			if (strstr(ev, "comm=bh-fault ") && !kv[cur].woken)
				kv[cur].woken = t;
		} else if (cur != UINT64_MAX && !strncmp(ev, "sched_switch:", 13)) {
			if (strstr(ev, "next_comm=bh-fault ") && kv[cur].woken && !kv[cur].run)
				kv[cur].run = t;
		}
	}
	fclose(f);
	for (p = 0; p < npages; p++) {
		col[0][p] = kv[p].pf;
		col[1][p] = kv[p].rec;
		col[2][p] = kv[p].wait;
		col[3][p] = kv[p].wake;
		col[4][p] = kv[p].woken;
		col[5][p] = kv[p].run;
		col[6][p] = kv[p].waking;
		n += kv[p].pf && kv[p].woken && kv[p].run;
	}
	printf("TRACE %-16s pages with #PF, wakeup and switch-in traced: %lu of %lu\n",
	       mode_name[m], (unsigned long)n, (unsigned long)npages);
	printf("TRACE %-16s median us: touch->#PF", mode_name[m]);
	printf(" %.1f", med(col[0], sh->t_touch, tmp));
	if (m == M_PRESENCE) {
		print_step("#PF->record queued", col[1], col[0], tmp);
		print_step("record->faulter sleeps", col[2], col[1], tmp);
	}
	print_step("#PF->handler read returns", sh->t_read, col[0], tmp);
	print_step("read returns->wakeup call", col[6], sh->t_read, tmp);
	print_step("wakeup call->install returns", sh->t_inst, col[6], tmp);
	print_step("wakeup call->faulter woken", col[4], col[6], tmp);
	print_step("woken->faulter runs", col[5], col[4], tmp);
	print_step("runs->load returns", sh->t_resume, col[5], tmp);
	printf("\n");
	for (i = 0; i < 7; i++)
		free(col[i]);
	free(kv);
	free(tmp);
}

/* A traced run: like run_one(), with ftrace on around it. */

static void traced_run(enum mode m)
{
	struct result r;
	int rc;

	if (trace_setup()) {
		printf("# trace: no tracefs or no mono clock; skipped\n");
		return;
	}
	tr_write("tracing_on", "1");
	rc = run_one(m, 1, &r);
	tr_write("tracing_on", "0");
	if (rc) {
		printf("# trace: %s run failed: %s\n", mode_name[m], strerror(-rc));
		return;
	}
	printf("TRACE %-16s traced run: %.0f pages/s, p50 %.1f us (tracing inflates both)\n",
	       mode_name[m], r.pps, r.p50);
	trace_analyse(m, last_base);
	tr_write("events/enable", "0");
	tr_write("trace", "");
}

/* ---- main ---- */

static int cmp_pps(const void *a, const void *b)
{
	const struct result *x = a, *y = b;

	return x->pps < y->pps ? -1 : x->pps > y->pps;
}

static void usage(void)
{
	fprintf(stderr, "usage: bench_helper [-n pages] [-t 1,2,4] [-r reps<=%d] [-m mode,...] [-T]\n"
		"modes: presence presence-engine uffd-missing uffd-minor\n", MAX_REPS);
	exit(2);
}

static void parse_modes(char *s)
{
	char *tok, *save = NULL;
	int i;

	memset(mode_on, 0, sizeof(mode_on));
	for (tok = strtok_r(s, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		for (i = 0; i < NR_MODES; i++)
			if (!strcmp(tok, mode_name[i]))
				break;
		if (i == NR_MODES)
			usage();
		mode_on[i] = true;
	}
}

static void parse_threads(char *s)
{
	char *tok, *save = NULL;

	nr_nthr = 0;
	for (tok = strtok_r(s, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		unsigned long v = strtoul(tok, NULL, 0);

		if (!v || v > MAX_THREADS || nr_nthr == 8)
			usage();
		nthr_list[nr_nthr++] = (unsigned int)v;
	}
	if (!nr_nthr)
		usage();
}

int main(int argc, char **argv)
{
	static struct result res[NR_MODES][8][MAX_REPS];
	bool trace = false;
	unsigned int k, t;
	int c, m, rc = 0;

	while ((c = getopt(argc, argv, "n:t:r:m:T")) != -1) {
		switch (c) {
		case 'n': npages = strtoull(optarg, NULL, 0); break;
		case 't': parse_threads(optarg); break;
		case 'r': reps = (unsigned int)strtoul(optarg, NULL, 0); break;
		case 'm': parse_modes(optarg); break;
		case 'T': trace = true; break;
		default: usage();
		}
	}
	if (!npages || !reps || reps > MAX_REPS)
		usage();
	setvbuf(stdout, NULL, _IOLBF, 0);
	wait_for_tsc();
	kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm_fd < 0 && (mode_on[M_PRESENCE] || mode_on[M_ENGINE]))
		die("/dev/kvm");
	if (make_contents())
		die("contents");
	if (mode_on[M_UFFD_MINOR]) {
		shm_fd = make_shmem();
		if (shm_fd < 0) {
			errno = -shm_fd;
			die("memfd");
		}
	}
	alloc_shared();
	/* a stuck handler or child must not hang the VM run */
	alarm(600);

	if (trace) {
		for (m = 0; m < NR_MODES; m++)
			if (mode_on[m] && m != M_ENGINE)
				traced_run(m);
		return 0;
	}

	printf("# bench_helper: %lu pages (%lu MiB), faulting threads in a child process, one handler thread here\n",
	       (unsigned long)npages, (unsigned long)(npages * PG >> 20));
	printf("# latency: faulting thread, first touch -> load returns; exact percentiles over all pages\n");
	printf("# %u repetitions, interleaved; pages/s median (min-max); other figures from the median run\n", reps);
	for (k = 0; k < reps; k++)
		for (t = 0; t < nr_nthr; t++)
			for (m = 0; m < NR_MODES; m++) {
				int r;

				if (!mode_on[m])
					continue;
				r = run_one(m, nthr_list[t], &res[m][t][k]);
				if (r) {
					fprintf(stderr, "bench_helper: %s, %u threads: %s\n",
						mode_name[m], nthr_list[t], strerror(-r));
					res[m][t][k].pps = -1;
					rc = 1;
				}
			}
	printf("%-16s %7s %9s %19s %8s %8s %8s %8s %8s %8s\n", "mode", "threads", "pages/s",
	       "(min-max)", "p50us", "p99us", "max_us", "notify", "install", "resume");
	for (t = 0; t < nr_nthr; t++)
		for (m = 0; m < NR_MODES; m++) {
			struct result *rs = res[m][t], *md;

			if (!mode_on[m])
				continue;
			qsort(rs, reps, sizeof(*rs), cmp_pps);
			if (rs[0].pps < 0)
				continue;
			md = &rs[reps / 2];
			printf("%-16s %7u %9.0f %9.0f-%-9.0f %8.1f %8.1f %8.1f %8.1f %8.1f %8.1f\n",
			       mode_name[m], nthr_list[t], md->pps, rs[0].pps, rs[reps - 1].pps,
			       md->p50, md->p99, md->max, md->notify50, md->install50, md->resume50);
			printf("BENCH {\"bench\":\"helper\",\"mode\":\"%s\",\"threads\":%u,\"pages\":%lu,"
			       "\"reps\":%u,\"pages_per_s\":%.0f,\"pages_per_s_min\":%.0f,\"pages_per_s_max\":%.0f,"
			       "\"lat_p50_us\":%.1f,\"lat_p99_us\":%.1f,\"lat_max_us\":%.1f,"
			       "\"notify_p50_us\":%.1f,\"install_p50_us\":%.1f,\"resume_p50_us\":%.1f,\"dups\":%lu}\n",
			       mode_name[m], nthr_list[t], (unsigned long)npages, reps, md->pps, rs[0].pps,
			       rs[reps - 1].pps, md->p50, md->p99, md->max, md->notify50, md->install50,
			       md->resume50, (unsigned long)md->dups);
		}
	return rc;
}
