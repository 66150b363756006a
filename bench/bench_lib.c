// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * bench_lib: how fast libgmfp's engine serves presence faults, against the
 * simplest loop a VMM could write (read one record, pread the page, COPY it).
 *
 * In the test VM (`make bench-lib`: release kernel, tsc=reliable), for each
 * server: a fresh presence guest_memfd of NPAGES pages, an image file on
 * tmpfs, and ACCESSORS threads that fault every page once through the
 * guest_memfd mapping, in a random or a sequential order.  Each access is
 * timed by the accessor (fault -> contents visible); the run's pages/s is
 * pages / wall time.  Prints one table row per server.
 *
 *   bench_lib [npages [accessors [reps]]]   defaults 16384 (64 MiB), 4, 3
 *
 * Every configuration runs @reps times, interleaved with the others (so a
 * slow phase of a noisy host hits them all alike); a row gives the median
 * run's figures and the min-max of pages/s, followed by the same as
 *   BENCH {"bench":"lib",...}
 * for bench/report.py.
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include <linux/kvm.h>

#include "gmfp.h"
#include "internal.h"
#include "bench_common.h"

#define PG GMFP_PAGE_SIZE

static uint64_t npages = 16384;
static unsigned int accessors = 4;
static unsigned int reps = 3;

struct result {
	double pps;
	uint64_t p50, p99, max, fetches, installs, bad;
};
static int image_fd;
static int kvm_fd;

static uint64_t word0(uint64_t p)
{
	return 0x9e3779b97f4a7c15ull * (p + 1);
}

static int make_image(void)
{
	char path[] = "/tmp/bench-image-XXXXXX";
	uint64_t *buf = calloc(1, PG), p;
	int fd = mkstemp(path);

	if (fd < 0 || !buf)
		return -1;
	unlink(path);
	for (p = 0; p < npages; p++) {
		buf[0] = word0(p);
		buf[PG / 8 - 1] = ~word0(p);
		if (pwrite(fd, buf, PG, (off_t)(p * PG)) != PG)
			return -1;
	}
	free(buf);
	return fd;
}

struct run {
	int vm, gmem;
	volatile uint8_t *hva;
	uint64_t *order;
	struct gmfp_hist lat;
	_Atomic uint64_t bad;
};

struct acc {
	struct run *r;
	unsigned int idx;
	pthread_t t;
};

static void *accessor_main(void *arg)
{
	struct acc *a = arg;
	struct run *r = a->r;
	uint64_t k;

	for (k = a->idx; k < npages; k += accessors) {
		uint64_t p = r->order[k], t0 = gmfp_now_ns(), v;

		v = *(volatile uint64_t *)(r->hva + p * PG);
		gmfp_hist_add(&r->lat, (gmfp_now_ns() - t0) / 1000);
		if (v != word0(p))
			atomic_fetch_add(&r->bad, 1);
	}
	return NULL;
}

/*
 * The baseline: a blocking read of one record, one pread, one COPY, in a
 * loop, until every page has been served once (each page is faulted, so
 * each gets exactly one record).
 */
static void *simple_loop(void *arg)
{
	struct run *r = arg;
	struct gmfp_event ev;
	void *buf = aligned_alloc(PG, PG);
	int nfd = gmfp_notify_open(r->gmem, GMFP_NOTIFY_CLOEXEC);
	uint64_t served = 0;

	while (buf && nfd >= 0 && served < npages) {
		ssize_t n = gmfp_notify_read(nfd, &ev, 1);

		if (n == -EINTR)
			continue;
		if (n != 1)
			break;
		if (pread(image_fd, buf, PG, (off_t)ev.offset) != PG)
			break;
		if (gmfp_gmem_copy(r->gmem, ev.offset, buf, PG, GMFP_COPY_SKIP_PRESENT, NULL) < 0)
			break;
		served++;
	}
	if (nfd >= 0)
		close(nfd);
	free(buf);
	return NULL;
}

static void shuffle(uint64_t *v, uint64_t n, uint64_t seed)
{
	uint64_t i;

	for (i = 0; i < n; i++)
		v[i] = i;
	for (i = n - 1; i > 0; i--) {
		uint64_t j, t;

		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		j = (seed >> 33) % (i + 1);
		t = v[i];
		v[i] = v[j];
		v[j] = t;
	}
}

/*
 * One run.  workers 0: the simple loop, else the engine with that many
 * workers; readahead: demand_readahead.
 */
static int bench(const char *pattern, unsigned int workers, unsigned int readahead,
		 struct result *res)
{
	GMFP_OPTS_INIT(struct gmfp_engine_opts, o);
	GMFP_OPTS_INIT(struct gmfp_file_opts, fo);
	GMFP_OPTS_INIT(struct gmfp_engine_stats, st);
	uint64_t b[GMFP_HIST_BUCKETS], cnt, max, t0, t1, k;
	struct gmfp_engine *e = NULL;
	struct gmfp_source *src = NULL;
	struct run r;
	struct acc *a = calloc(accessors, sizeof(*a));
	pthread_t loop;
	unsigned int i;

	memset(&r, 0, sizeof(r));
	r.vm = ioctl(kvm_fd, KVM_CREATE_VM, 0);
	if (r.vm < 0)
		return -errno;
	r.gmem = gmfp_gmem_create(r.vm, npages * PG, GMFP_GMEM_SHARED);
	if (r.gmem < 0)
		return r.gmem;
	r.hva = mmap(NULL, npages * PG, PROT_READ, MAP_SHARED, r.gmem, 0);
	if (r.hva == MAP_FAILED)
		return -errno;
	r.order = malloc(npages * sizeof(uint64_t));
	if (!strcmp(pattern, "random")) {
		shuffle(r.order, npages, 42);
	} else {
		/* sequential: accessor i walks its own contiguous quarter */
		for (k = 0; k < npages; k++)
			r.order[k] = (k % accessors) * (npages / accessors) + k / accessors;
	}
	if (workers) {
		fo.fd = image_fd;
		if (gmfp_source_file(&src, &fo))
			return -EIO;
		o.workers = workers;
		o.max_batch = 64;
		o.demand_readahead = readahead;
		if (gmfp_engine_new(&e, src, &o) || gmfp_engine_add(e, r.gmem, NULL))
			return -EIO;
	}
	t0 = gmfp_now_ns();
	if (workers) {
		if (gmfp_engine_start(e))
			return -EIO;
	} else if (pthread_create(&loop, NULL, simple_loop, &r)) {
		return -EIO;
	}
	for (i = 0; i < accessors; i++) {
		a[i].r = &r;
		a[i].idx = i;
		pthread_create(&a[i].t, NULL, accessor_main, &a[i]);
	}
	for (i = 0; i < accessors; i++)
		pthread_join(a[i].t, NULL);
	t1 = gmfp_now_ns();
	if (workers) {
		gmfp_engine_get_stats(e, &st);
		gmfp_engine_destroy(e);
		gmfp_source_destroy(src);
	} else {
		pthread_join(loop, NULL);
		st.fetches = st.installs = npages;
	}
	gmfp_hist_read(&r.lat, b, &cnt, &max);
	res->pps = (double)npages * 1e9 / (double)(t1 - t0);
	res->p50 = gmfp_hist_percentile(b, cnt, max, 50);
	res->p99 = gmfp_hist_percentile(b, cnt, max, 99);
	res->max = max;
	res->fetches = st.fetches;
	res->installs = st.installs;
	res->bad = atomic_load(&r.bad);
	munmap((void *)r.hva, npages * PG);
	close(r.gmem);
	close(r.vm);
	free(r.order);
	free(a);
	return atomic_load(&r.bad) ? -EIO : 0;
}

static const struct config {
	const char *pattern;
	unsigned int workers, readahead;
} configs[] = {
	{ "random", 0, 0 }, { "random", 1, 0 }, { "random", 2, 0 },
	{ "random", 4, 0 }, { "random", 4, 15 },
	{ "sequential", 0, 0 }, { "sequential", 1, 0 }, { "sequential", 2, 0 },
	{ "sequential", 4, 0 }, { "sequential", 4, 15 },
};
#define NCONF (sizeof(configs) / sizeof(configs[0]))

static int cmp_pps(const void *a, const void *b)
{
	const struct result *x = a, *y = b;

	return x->pps < y->pps ? -1 : x->pps > y->pps;
}

static void print_row(const struct config *c, struct result *rs)
{
	struct result *m;
	char name[48];
	uint64_t bad = 0;
	unsigned int i;

	for (i = 0; i < reps; i++)
		bad += rs[i].bad;
	qsort(rs, reps, sizeof(*rs), cmp_pps);
	m = &rs[reps / 2];
	if (c->workers)
		snprintf(name, sizeof(name), "engine, %u worker%s%s", c->workers,
			 c->workers > 1 ? "s" : "", c->readahead ? ", readahead 15" : "");
	else
		snprintf(name, sizeof(name), "simple loop (1 record, 1 COPY)");
	printf("%-10s %-32s %8.0f %8.0f-%-8.0f %6lu %6lu %7lu %8lu %s\n", c->pattern, name,
	       m->pps, rs[0].pps, rs[reps - 1].pps, (unsigned long)m->p50,
	       (unsigned long)m->p99, (unsigned long)m->max, (unsigned long)m->installs,
	       bad ? "WRONG CONTENTS" : "ok");
	printf("BENCH {\"bench\":\"lib\",\"pattern\":\"%s\",\"server\":\"%s\",\"workers\":%u,"
	       "\"readahead\":%u,\"accessors\":%u,\"pages\":%lu,\"reps\":%u,\"pages_per_s\":%.0f,"
	       "\"pages_per_s_min\":%.0f,\"pages_per_s_max\":%.0f,\"lat_p50_us\":%lu,"
	       "\"lat_p99_us\":%lu,\"lat_max_us\":%lu,\"installs\":%lu,\"ok\":%s}\n",
	       c->pattern, c->workers ? "engine" : "simple", c->workers, c->readahead, accessors,
	       (unsigned long)npages, reps, m->pps, rs[0].pps, rs[reps - 1].pps,
	       (unsigned long)m->p50, (unsigned long)m->p99, (unsigned long)m->max,
	       (unsigned long)m->installs, bad ? "false" : "true");
}

int main(int argc, char **argv)
{
	static struct result res[NCONF][16];
	unsigned int i, k;
	int rc = 0;

	if (argc > 1)
		npages = strtoull(argv[1], NULL, 0);
	if (argc > 2)
		accessors = (unsigned int)strtoul(argv[2], NULL, 0);
	if (argc > 3)
		reps = (unsigned int)strtoul(argv[3], NULL, 0);
	if (!accessors || !npages || npages % accessors || !reps || reps > 16) {
		fprintf(stderr, "usage: bench_lib [npages [accessors [reps <= 16]]] (npages a multiple of accessors)\n");
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	wait_for_tsc();
	kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	image_fd = make_image();
	if (kvm_fd < 0 || image_fd < 0) {
		perror("setup");
		return 1;
	}
	printf("# bench_lib: %lu pages (%lu MiB), %u accessor threads faulting through the mmap, file source on tmpfs\n",
	       (unsigned long)npages, (unsigned long)(npages * PG >> 20), accessors);
	printf("# latency: accessor-side, fault -> contents visible, log2 buckets (upper bound)\n");
	printf("# %u repetitions, interleaved; pages/s: median (min-max); latency of the median run\n",
	       reps);
	for (k = 0; k < reps; k++)
		for (i = 0; i < NCONF; i++)
			rc |= bench(configs[i].pattern, configs[i].workers, configs[i].readahead,
				    &res[i][k]);
	printf("%-10s %-32s %8s %17s %6s %6s %7s %8s\n", "pattern", "server", "pages/s",
	       "(min-max)", "p50us", "p99us", "max_us", "installs");
	for (i = 0; i < NCONF; i++)
		print_row(&configs[i], res[i]);
	return rc ? 1 : 0;
}
