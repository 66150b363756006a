// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * The fault engine against the real kernel: vCPUs of a presence VM (WAIT
 * and EXIT policies, shared and private memory) and forked helper processes
 * reading through the guest_memfd mapping, served from a file and from a TCP
 * page server on loopback.  Every page's contents are checked, every page
 * is fetched once, a flaky source still completes, and a dead source makes
 * no page present while its accessors keep waiting.
 */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "vmtest.h"

#define NPAGES 512		/* 2 MiB: a power of two (helpers' strides) */
#define NHELPERS 3

static int image_fd = -1;

static int make_file_source(struct gmfp_source **s)
{
	GMFP_OPTS_INIT(struct gmfp_file_opts, fo);

	fo.fd = image_fd;
	return gmfp_source_file(s, &fo);
}

static int make_tcp_source(struct gmfp_source **s, const char *port)
{
	GMFP_OPTS_INIT(struct gmfp_tcp_opts, to);
	static uint64_t size = NPAGES * PG;

	to.host = "127.0.0.1";
	to.port = port;
	to.nr_regions = 1;
	to.region_sizes = &size;
	to.timeout_ms = 2000;
	to.connect_timeout_ms = 500;
	return gmfp_source_tcp(s, &to);
}

static void check_all_pages(struct vt_vm *v)
{
	uint64_t p;

	if (!v->hva)
		return;
	for (p = 0; p < NPAGES; p++)
		CHECK(vt_page_ok((char *)v->hva + p * PG, p), "page %lu has wrong contents",
		      (unsigned long)p);
}

/*
 * Two vCPUs (one half each) and helpers (everything) on a VM served by
 * @src; checks contents, sums, and that every page was fetched once.
 */
static void serve_vm(struct gmfp_source *src, unsigned int policy, bool private_mem,
		     unsigned int workers, enum gmfp_bg_order bg, int helpers)
{
	GMFP_OPTS_INIT(struct gmfp_engine_opts, o);
	GMFP_OPTS_INIT(struct gmfp_engine_stats, st);
	struct gmfp_source_stats ss;
	struct gmfp_gmem_stats ks;
	struct gmfp_engine *e = NULL;
	struct vt_vm v;
	pid_t pids[NHELPERS];
	char json[2048];
	int r, i;

	r = vt_vm_create(&v, NPAGES, private_mem, policy);
	if (r == -EOPNOTSUPP) {
		vt_vm_destroy(&v);
		SKIP_TEST("no presence tracking for this VM type");
	}
	CHECK_EQ(r, 0);
	CHECK_EQ(vt_vcpu_add(&v, 0, NPAGES / 2), 0);
	CHECK_EQ(vt_vcpu_add(&v, NPAGES / 2, NPAGES / 2), 0);
	o.workers = workers;
	o.bg_order = bg;
	o.max_batch = 16;
	CHECK_EQ(gmfp_engine_new(&e, src, &o), 0);
	CHECK_EQ(gmfp_engine_add(e, v.gmem, NULL), 0);
	for (i = 0; i < v.nr_vcpus; i++)
		v.vcpus[i].engine = policy == GMFP_POLICY_EXIT ? e : NULL;
	/* accessors first: their records are waiting when the engine starts */
	if (helpers)
		CHECK_EQ(vt_helpers_start(&v, helpers, pids), 0);
	CHECK_EQ(vt_vcpus_start(&v), 0);
	usleep(100000);
	CHECK_EQ(gmfp_engine_start(e), 0);
	vt_vcpus_join(&v);
	for (i = 0; i < v.nr_vcpus; i++) {
		CHECK_EQ(v.vcpus[i].result, 0);
		CHECK_EQ(v.vcpus[i].sum, vt_expected_sum(v.vcpus[i].first, v.vcpus[i].npages));
		if (policy == GMFP_POLICY_EXIT)
			CHECK(v.vcpus[i].np_exits > 0, "vCPU %d: no NOT_PRESENT exit", i);
	}
	if (helpers)
		CHECK_EQ(vt_helpers_wait(helpers, pids, 60000), 0);
	/* the vCPUs and helpers touched every page */
	CHECK_EQ(gmfp_engine_wait(e, 60000), 0);
	check_all_pages(&v);
	CHECK_EQ(vt_count_present(v.gmem, NPAGES), NPAGES);
	CHECK_EQ(gmfp_engine_get_stats(e, &st), 0);
	gmfp_source_get_stats(src, &ss);
	CHECK_EQ(st.pages_present, NPAGES);
	CHECK_EQ(st.pages_demand + st.pages_background, NPAGES);
	/* fetched once: the source was asked for each page exactly once */
	CHECK_EQ(ss.pages, NPAGES);
	CHECK_EQ(st.errors, 0);
	CHECK(st.pages_by_origin[GMFP_ORIGIN_VCPU] > 0, "no page served for a vCPU");
	if (helpers)
		CHECK(st.pages_by_origin[GMFP_ORIGIN_MMAP] > 0, "no page served for a helper");
	CHECK_EQ(gmfp_gmem_stats(v.gmem, &ks), 0);
	CHECK_EQ(ks.nr_present, NPAGES);
	/* one record per page at most */
	CHECK(ks.notifications <= NPAGES, "%llu records", (unsigned long long)ks.notifications);
	CHECK(gmfp_engine_stats_json(e, json, sizeof(json)) > 0, "json");
	printf("#   %s\n", json);
	gmfp_engine_destroy(e);
	vt_vm_destroy(&v);
}

static void test_wait_file(void)
{
	struct gmfp_source *s;

	if (make_file_source(&s))
		CHECK(0, "file source");
	serve_vm(s, GMFP_POLICY_WAIT, false, 2, GMFP_BG_NONE, NHELPERS);
	gmfp_source_destroy(s);
}

static void test_exit_file(void)
{
	struct gmfp_source *s;

	if (make_file_source(&s))
		CHECK(0, "file source");
	serve_vm(s, GMFP_POLICY_EXIT, false, 4, GMFP_BG_SEQUENTIAL, NHELPERS);
	gmfp_source_destroy(s);
}

static void test_private_wait(void)
{
	struct gmfp_source *s;

	if (make_file_source(&s))
		CHECK(0, "file source");
	serve_vm(s, GMFP_POLICY_WAIT, true, 2, GMFP_BG_AROUND_DEMAND, 0);
	gmfp_source_destroy(s);
}

static void test_wait_tcp(void)
{
	struct gmfp_source *s;
	struct vt_server srv;

	CHECK_EQ(vt_server_start(&srv, image_fd, NPAGES, 0), 0);
	if (make_tcp_source(&s, srv.port)) {
		vt_server_kill(&srv);
		CHECK(0, "tcp source");
	}
	serve_vm(s, GMFP_POLICY_WAIT, false, 2, GMFP_BG_SEQUENTIAL, NHELPERS);
	gmfp_source_destroy(s);
	vt_server_kill(&srv);
}

/* A source that fails every third fetch the first times it is asked. */
struct flaky {
	struct gmfp_source *file;
	_Atomic unsigned int calls, failures;
};

static int flaky_fetch(void *ctx, struct gmfp_fetch *f)
{
	struct flaky *fl = ctx;
	unsigned int n = atomic_fetch_add(&fl->calls, 1);

	if (n % 3 == 1 && atomic_load(&fl->failures) < 20) {
		atomic_fetch_add(&fl->failures, 1);
		/* garbage in the buffer: it must not reach the guest */
		memset(f->buf, 0xa5, (size_t)f->npages * PG);
		return -EIO;
	}
	return gmfp_source_fetch(fl->file, f);
}

static void test_flaky_source(void)
{
	GMFP_OPTS_INIT(struct gmfp_source_ops, ops);
	GMFP_OPTS_INIT(struct gmfp_engine_opts, o);
	GMFP_OPTS_INIT(struct gmfp_engine_stats, st);
	struct flaky fl = { 0 };
	struct gmfp_source *s;
	struct gmfp_engine *e;
	struct vt_vm v;
	pid_t pids[NHELPERS];

	CHECK_EQ(make_file_source(&fl.file), 0);
	ops.fetch = flaky_fetch;
	CHECK_EQ(gmfp_source_new(&s, &ops, &fl), 0);
	CHECK_EQ(vt_vm_create(&v, NPAGES, false, GMFP_POLICY_WAIT), 0);
	CHECK_EQ(vt_vcpu_add(&v, 0, NPAGES), 0);
	o.workers = 2;
	o.bg_order = GMFP_BG_SEQUENTIAL;
	o.retry_min_ms = 5;
	o.retry_max_ms = 50;
	CHECK_EQ(gmfp_engine_new(&e, s, &o), 0);
	CHECK_EQ(gmfp_engine_add(e, v.gmem, NULL), 0);
	CHECK_EQ(vt_helpers_start(&v, NHELPERS, pids), 0);
	CHECK_EQ(vt_vcpus_start(&v), 0);
	CHECK_EQ(gmfp_engine_start(e), 0);
	vt_vcpus_join(&v);
	CHECK_EQ(v.vcpus[0].result, 0);
	CHECK_EQ(v.vcpus[0].sum, vt_expected_sum(0, NPAGES));
	CHECK_EQ(vt_helpers_wait(NHELPERS, pids, 60000), 0);
	CHECK_EQ(gmfp_engine_wait(e, 60000), 0);
	check_all_pages(&v);
	CHECK_EQ(gmfp_engine_get_stats(e, &st), 0);
	CHECK_EQ(st.errors, atomic_load(&fl.failures));
	CHECK(st.errors > 0 && st.retries >= st.errors, "errors %llu retries %llu",
	      (unsigned long long)st.errors, (unsigned long long)st.retries);
	CHECK_EQ(st.last_error, -EIO);
	gmfp_engine_destroy(e);
	gmfp_source_destroy(s);
	gmfp_source_destroy(fl.file);
	vt_vm_destroy(&v);
}

static _Atomic unsigned int dead_errors;

static void count_error(void *arg, uint32_t region, uint64_t pgoff, uint32_t npages, int err)
{
	(void)arg;
	(void)region;
	(void)pgoff;
	(void)npages;
	(void)err;
	atomic_fetch_add(&dead_errors, 1);
}

/*
 * The page server dies after a few requests: pages it served are present
 * with the right contents, no other page becomes present, the accessors keep
 * waiting, the engine reports the errors; then the waiters are still
 * killable / interruptible.
 */
static void test_dead_source(void)
{
	GMFP_OPTS_INIT(struct gmfp_engine_opts, o);
	GMFP_OPTS_INIT(struct gmfp_engine_stats, st);
	struct gmfp_source *s;
	struct gmfp_engine *e;
	struct vt_server srv;
	struct vt_vm v;
	pid_t pids[NHELPERS];
	uint64_t before, after, *bm, p;
	int i, status;

	CHECK_EQ(vt_server_start(&srv, image_fd, NPAGES, 4), 0);
	CHECK_EQ(make_tcp_source(&s, srv.port), 0);
	CHECK_EQ(vt_vm_create(&v, NPAGES, false, GMFP_POLICY_WAIT), 0);
	CHECK_EQ(vt_vcpu_add(&v, 0, NPAGES), 0);
	o.workers = 2;
	o.max_batch = 4;
	o.bg_order = GMFP_BG_SEQUENTIAL;
	o.retry_min_ms = 10;
	o.retry_max_ms = 100;
	o.on_error = count_error;
	atomic_store(&dead_errors, 0);
	CHECK_EQ(gmfp_engine_new(&e, s, &o), 0);
	CHECK_EQ(gmfp_engine_add(e, v.gmem, NULL), 0);
	CHECK_EQ(vt_helpers_start(&v, NHELPERS, pids), 0);
	CHECK_EQ(vt_vcpus_start(&v), 0);
	CHECK_EQ(gmfp_engine_start(e), 0);
	CHECK_EQ(gmfp_engine_wait(e, 3000), -ETIMEDOUT);
	before = vt_count_present(v.gmem, NPAGES);
	/* at most what 4 requests per connection can carry */
	CHECK(before < NPAGES && before <= 2 * 4 * 4, "%llu present", (unsigned long long)before);
	CHECK_EQ(gmfp_engine_get_stats(e, &st), 0);
	CHECK(st.errors > 0, "no error reported");
	CHECK(atomic_load(&dead_errors) > 0, "on_error not called");
	CHECK(st.last_error < 0, "last_error %lld", (long long)st.last_error);
	/* every present page is right */
	bm = calloc(NPAGES / 64, 8);
	CHECK(bm && !gmfp_gmem_bitmap(v.gmem, 0, NPAGES * PG, bm), "bitmap");
	for (p = 0; p < NPAGES; p++)
		if (bm[p / 64] & (1ull << (p % 64)))
			CHECK(vt_page_ok((char *)v.hva + p * PG, p), "page %lu", (unsigned long)p);
	free(bm);
	/* the accessors are still waiting */
	for (i = 0; i < NHELPERS; i++)
		CHECK_EQ(waitpid(pids[i], &status, WNOHANG), 0);
	usleep(500000);
	after = vt_count_present(v.gmem, NPAGES);
	CHECK_EQ(after, before);
	gmfp_engine_stop(e);
	CHECK_EQ(vt_count_present(v.gmem, NPAGES), before);
	/* waiting helpers die on SIGKILL; waiting vCPUs leave on a signal */
	for (i = 0; i < NHELPERS; i++)
		kill(pids[i], SIGKILL);
	for (i = 0; i < NHELPERS; i++) {
		CHECK_EQ(waitpid(pids[i], &status, 0), pids[i]);
		CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "helper status %#x", status);
	}
	vt_vcpus_kick(&v);
	vt_vcpus_join(&v);
	CHECK_EQ(v.vcpus[0].result, -ECANCELED);
	CHECK(v.vcpus[0].intr_exits > 0, "vCPU not interrupted");
	CHECK_EQ(vt_count_present(v.gmem, NPAGES), before);
	gmfp_engine_destroy(e);
	gmfp_source_destroy(s);
	vt_server_kill(&srv);
	vt_vm_destroy(&v);
}

int main(int argc, char **argv)
{
	static const struct vt_case cases[] = {
		{ "wait_policy_file_source_vcpus_and_helpers", test_wait_file },
		{ "exit_policy_file_source_demand_and_background", test_exit_file },
		{ "private_memory_wait_policy", test_private_wait },
		{ "wait_policy_tcp_source", test_wait_tcp },
		{ "flaky_source_recovers", test_flaky_source },
		{ "dead_source_fails_closed", test_dead_source },
	};
	char path[64];

	image_fd = vt_make_image(NPAGES, path, sizeof(path));
	if (image_fd < 0) {
		perror("image");
		return 1;
	}
	unlink(path);
	return vt_run(argc, argv, "engine_vm_test", cases, sizeof(cases) / sizeof(cases[0]));
}
