// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * The page server tool, gmfp-serve, against the real kernel: post-copy from
 * a live guest_memfd.  A SOURCE presence VM's guest_memfd is filled from an
 * image (the running source VM's memory); gmfp-serve inherits it
 * (--gmem-fd) and serves it on loopback; a DESTINATION presence VM (WAIT
 * policy: vCPUs, and helper processes through the mapping) is served by the
 * fault engine through gmfp_source_tcp().  Every page is checked against
 * the source.
 *
 *  - postcopy: complete, every page fetched once, while a peer sends garbage
 *    and another asks and never reads; the server exits 0 (no leak: it is
 *    built with ASan) on SIGTERM.
 *  - kill -9 of the server a quarter of the way through, a new one on the
 *    same port: the transfer resumes and completes; what the new server
 *    serves beyond what was missing is bounded by what was in flight.
 *  - a source whose own pages are not all present yet: those are refused,
 *    the destination gets exactly the pages the source has and nothing else
 *    becomes present; once the source has them, the destination completes.
 */
#include <fcntl.h>
#include <linux/close_range.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#include "vmtest.h"

#define NPAGES 512		/* a power of two: the helpers' strides */
#define NHELPERS 3

static int image_fd = -1;

/* ---- source and destination ---- */

static bool all_pages(uint64_t pg)
{
	(void)pg;
	return true;
}

static bool even_pages(uint64_t pg)
{
	return !(pg & 1);
}

static bool odd_pages(uint64_t pg)
{
	return pg & 1;
}

/* Copy the image's @which pages into @v (the source catching up). */
static void source_fill(struct vt_vm *v, bool (*which)(uint64_t pg))
{
	uint8_t page[PG];
	uint64_t pg;

	for (pg = 0; pg < NPAGES; pg++) {
		if (!which(pg))
			continue;
		CHECK_EQ(pread(image_fd, page, PG, (off_t)(pg * PG)), PG);
		CHECK_EQ(gmfp_gmem_copy(v->gmem, pg * PG, page, PG, 0, NULL), 0);
	}
}

/* A raw connection to the server, for the hostile peers. */
static int raw_connect(const char *port)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	CHECK(fd >= 0, "socket: %s", strerror(errno));
	a.sin_port = htons((uint16_t)atoi(port));
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	CHECK_EQ(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	return fd;
}

/* Read and drop everything until the server closes @fd, @ms at most. */
static bool raw_drain_closed(int fd, unsigned int ms)
{
	uint64_t dl = vt_now_ms() + ms;
	static uint8_t b[65536];

	while (vt_now_ms() < dl) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t n;

		if (poll(&p, 1, 100) <= 0)
			continue;
		n = recv(fd, b, sizeof(b), MSG_DONTWAIT);
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
			return true;
	}
	return false;
}

/*
 * Wait, @ms at most, for the server to close @fd, without reading from it:
 * a peer that reads is no longer one that never reads, and would let the
 * server send on (and then idle between frames, as it may) instead of
 * timing the peer out.  The close shows as a FIN or, with our requests
 * still unread on its side, a reset.
 */
static bool raw_closed_unread(int fd, unsigned int ms)
{
	uint64_t dl = vt_now_ms() + ms;

	while (vt_now_ms() < dl) {
		struct pollfd p = { .fd = fd, .events = POLLRDHUP };

		if (poll(&p, 1, 100) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)))
			return true;
	}
	return false;
}

/* ---- tests ---- */

static void test_postcopy(void)
{
	GMFP_OPTS_INIT(struct gmfp_engine_opts, o);
	GMFP_OPTS_INIT(struct gmfp_engine_stats, st);
	static const char garbage[] = "GET / HTTP/1.1\r\n\r\nthis is not gmfp";
	uint8_t frame[GMFP_WIRE_HDR_SIZE + 64];
	struct gmfp_source_stats ss;
	struct gmfp_engine *e;
	struct gmfp_source *s;
	struct vt_vm src, dst;
	struct vt_counting cnt;
	pid_t pids[NHELPERS];
	struct vt_serve srv;
	const char *js;
	int i, bad, mute;
	ssize_t n;

	vt_source_vm(&src, NPAGES, image_fd, all_pages);
	if (vt_skipped)
		return;
	CHECK_EQ(vt_count_present(src.gmem, NPAGES), NPAGES);
	vt_serve_start(&srv, src.gmem, "0", (const char *[]){ "--io-timeout-ms", "1000", NULL });

	/* hostile peers first: garbage, and one that asks and never reads */
	bad = raw_connect(srv.port);
	CHECK_EQ(send(bad, garbage, sizeof(garbage) - 1, MSG_NOSIGNAL),
		 (ssize_t)sizeof(garbage) - 1);
	mute = raw_connect(srv.port);
	n = gmfp_wire_encode_hello(frame, sizeof(frame), 0, GMFP_WIRE_CH_DEMAND, 0, NULL);
	CHECK_EQ(send(mute, frame, (size_t)n, MSG_NOSIGNAL), n);
	for (i = 0; i < 64; i++) {
		n = gmfp_wire_encode_req(frame, sizeof(frame), 1 + i, 0, 0, GMFP_WIRE_MAX_PAGES);
		CHECK_EQ(send(mute, frame, (size_t)n, MSG_NOSIGNAL), n);
	}

	CHECK_EQ(vt_vm_create(&dst, NPAGES, false, GMFP_POLICY_WAIT), 0);
	CHECK_EQ(vt_vcpu_add(&dst, 0, NPAGES / 2), 0);
	CHECK_EQ(vt_vcpu_add(&dst, NPAGES / 2, NPAGES / 2), 0);
	s = vt_counting_source(&cnt, srv.port, NPAGES);
	o.workers = 2;
	o.max_batch = 16;
	o.bg_order = GMFP_BG_SEQUENTIAL;
	CHECK_EQ(gmfp_engine_new(&e, s, &o), 0);
	CHECK_EQ(gmfp_engine_add(e, dst.gmem, NULL), 0);
	CHECK_EQ(vt_helpers_start(&dst, NHELPERS, pids), 0);
	CHECK_EQ(vt_vcpus_start(&dst), 0);
	usleep(100000);
	CHECK_EQ(gmfp_engine_start(e), 0);
	if (vt_vcpus_join_timeout(&dst, 120000)) {
		vt_dump_stuck(&dst, e, cnt.tcp);
		vt_dump_threads(srv.pid);
		for (i = 0; i < NHELPERS; i++)
			vt_dump_threads(pids[i]);
		CHECK(0, "the vCPUs did not finish in 120 s");
	}
	for (i = 0; i < dst.nr_vcpus; i++) {
		CHECK_EQ(dst.vcpus[i].result, 0);
		CHECK_EQ(dst.vcpus[i].sum,
			 vt_expected_sum(dst.vcpus[i].first, dst.vcpus[i].npages));
	}
	CHECK_EQ(vt_helpers_wait(NHELPERS, pids, 60000), 0);
	CHECK_EQ(gmfp_engine_wait(e, 60000), 0);
	vt_check_against_source(&dst, &src);
	CHECK_EQ(vt_count_present(dst.gmem, NPAGES), NPAGES);
	CHECK_EQ(gmfp_engine_get_stats(e, &st), 0);
	CHECK_EQ(st.errors, 0);
	CHECK(st.pages_demand > 0, "no demand page");
	gmfp_source_get_stats(cnt.tcp, &ss);
	CHECK_EQ(ss.pages, NPAGES);	/* every page asked for once */
	CHECK_EQ(atomic_load(&cnt.ok_pages), NPAGES);
	gmfp_engine_destroy(e);
	gmfp_source_destroy(s);
	gmfp_source_destroy(cnt.tcp);

	/* the hostile ones were closed on the server's side */
	if (!raw_drain_closed(bad, 10000) || !raw_closed_unread(mute, 20000)) {
		vt_dump_threads(srv.pid);
		CHECK(0, "a hostile peer was not closed by the server");
	}
	close(bad);
	close(mute);
	/*
	 * The server's page counts include what it sent the peer that never
	 * reads (as much as the socket buffers took): the exact "once" is the
	 * client's count above.
	 */
	js = vt_serve_stop(&srv);
	CHECK(vt_json_u64(js, "\"pages\":{", "demand") +
	      vt_json_u64(js, "\"pages\":{", "background") >= NPAGES,
	      "the server served fewer pages than the destination got");
	CHECK(vt_json_u64(js, "\"pages\":{", "demand") > 0, "no demand page on the server");
	CHECK_EQ(vt_json_u64(js, "\"errors\":{", "malformed"), 1);
	CHECK_EQ(vt_json_u64(js, "\"errors\":{", "timeout"), 1);
	CHECK_EQ(vt_json_u64(js, "\"errors\":{", "fetch") +
		 vt_json_u64(js, "\"errors\":{", "not_present"), 0);
	vt_vm_destroy(&dst);
	vt_vm_destroy(&src);
}

static void test_kill_restart(void)
{
	GMFP_OPTS_INIT(struct gmfp_engine_opts, o);
	GMFP_OPTS_INIT(struct gmfp_engine_stats, st);
	static const char *const slow[] = { "--throttle-us", "3000", NULL };
	struct gmfp_source_stats ss;
	struct gmfp_engine *e;
	struct gmfp_source *s;
	struct vt_vm src, dst;
	struct vt_counting cnt;
	pid_t pids[NHELPERS];
	uint64_t present, dl, served2, beyond, repeat2, inflight;
	struct vt_serve srv;
	char port[16];
	const char *js;

	vt_source_vm(&src, NPAGES, image_fd, all_pages);
	if (vt_skipped)
		return;
	/* a slow link: a page every 3 ms, so that there is a "mid-transfer" */
	vt_serve_start(&srv, src.gmem, "0", slow);
	snprintf(port, sizeof(port), "%s", srv.port);

	CHECK_EQ(vt_vm_create(&dst, NPAGES, false, GMFP_POLICY_WAIT), 0);
	CHECK_EQ(vt_vcpu_add(&dst, 0, NPAGES), 0);
	s = vt_counting_source(&cnt, port, NPAGES);
	o.workers = 2;
	o.max_batch = 8;
	o.bg_order = GMFP_BG_SEQUENTIAL;
	o.retry_min_ms = 20;
	o.retry_max_ms = 200;
	inflight = (uint64_t)o.workers * o.max_batch;
	CHECK_EQ(gmfp_engine_new(&e, s, &o), 0);
	CHECK_EQ(gmfp_engine_add(e, dst.gmem, NULL), 0);
	CHECK_EQ(vt_helpers_start(&dst, NHELPERS, pids), 0);
	CHECK_EQ(vt_vcpus_start(&dst), 0);
	CHECK_EQ(gmfp_engine_start(e), 0);

	dl = vt_now_ms() + 60000;
	while (vt_count_present(dst.gmem, NPAGES) < NPAGES / 4 && vt_now_ms() < dl)
		usleep(2000);
	kill(srv.pid, SIGKILL);
	CHECK_EQ(vt_serve_wait(&srv, 10000), 128 + SIGKILL);
	/* whatever was still on its way has arrived or is lost by now (TCG: slow) */
	usleep(1000000);
	present = vt_count_present(dst.gmem, NPAGES);
	CHECK(present >= NPAGES / 4 && present < NPAGES,
	      "%llu pages present at the kill: not mid-transfer (throttle too small?)",
	      (unsigned long long)present);
	/* nothing moves while there is no server */
	usleep(300000);
	CHECK_EQ(vt_count_present(dst.gmem, NPAGES), present);

	vt_serve_start(&srv, src.gmem, port, slow);
	CHECK_EQ(strcmp(srv.port, port), 0);
	vt_vcpus_join(&dst);
	CHECK_EQ(dst.vcpus[0].result, 0);
	CHECK_EQ(dst.vcpus[0].sum, vt_expected_sum(0, NPAGES));
	CHECK_EQ(vt_helpers_wait(NHELPERS, pids, 120000), 0);
	CHECK_EQ(gmfp_engine_wait(e, 120000), 0);
	vt_check_against_source(&dst, &src);
	CHECK_EQ(gmfp_engine_get_stats(e, &st), 0);
	gmfp_source_get_stats(cnt.tcp, &ss);
	CHECK(st.errors > 0, "the kill went unnoticed");
	CHECK(ss.reconnects >= 1, "no reconnect");
	/* every page was received (successfully) exactly once */
	CHECK_EQ(atomic_load(&cnt.ok_pages), NPAGES);
	gmfp_engine_destroy(e);
	gmfp_source_destroy(s);
	gmfp_source_destroy(cnt.tcp);

	js = vt_serve_stop(&srv);
	served2 = vt_json_u64(js, "\"pages\":{", "demand") +
		  vt_json_u64(js, "\"pages\":{", "background");
	repeat2 = vt_json_u64(js, "\"pages\":{", "repeat");
	CHECK(served2 >= NPAGES - present, "the new server served %llu of %llu missing",
	      (unsigned long long)served2, (unsigned long long)(NPAGES - present));
	beyond = served2 - (NPAGES - present);
	printf("#   kill/restart: %llu of %u pages present at the kill; the new server "
	       "served %llu (%llu beyond what was missing, %llu repeats); client asked "
	       "for %llu pages in all, %llu more than %u (%llu pages in %llu failed "
	       "fetches); %llu reconnects\n",
	       (unsigned long long)present, NPAGES, (unsigned long long)served2,
	       (unsigned long long)beyond, (unsigned long long)repeat2,
	       (unsigned long long)ss.pages, (unsigned long long)(ss.pages - NPAGES), NPAGES,
	       (unsigned long long)atomic_load(&cnt.failed_pages),
	       (unsigned long long)atomic_load(&cnt.failed),
	       (unsigned long long)ss.reconnects);
	/* fetched twice: at most what was in flight when the server died */
	CHECK(beyond <= inflight, "%llu pages served twice", (unsigned long long)beyond);
	CHECK(repeat2 <= inflight, "%llu repeats", (unsigned long long)repeat2);
	CHECK_EQ(ss.pages - NPAGES, atomic_load(&cnt.failed_pages));
	vt_vm_destroy(&dst);
	vt_vm_destroy(&src);
}

static void test_source_not_present(void)
{
	GMFP_OPTS_INIT(struct gmfp_engine_opts, o);
	GMFP_OPTS_INIT(struct gmfp_engine_stats, st);
	uint64_t *bs, *bd, dl, pg;
	struct gmfp_engine *e;
	struct gmfp_source *s;
	struct vt_vm src, dst;
	struct vt_counting cnt;
	struct vt_serve srv;
	const char *js;
	int w;

	vt_source_vm(&src, NPAGES, image_fd, even_pages);
	if (vt_skipped)
		return;
	CHECK_EQ(vt_count_present(src.gmem, NPAGES), NPAGES / 2);
	vt_serve_start(&srv, src.gmem, "0", NULL);

	/* background only: nobody waits for a page that may never come */
	CHECK_EQ(vt_vm_create(&dst, NPAGES, false, GMFP_POLICY_WAIT), 0);
	s = vt_counting_source(&cnt, srv.port, NPAGES);
	o.workers = 2;
	o.max_batch = 16;
	o.bg_order = GMFP_BG_SEQUENTIAL;
	o.retry_min_ms = 20;
	o.retry_max_ms = 100;
	CHECK_EQ(gmfp_engine_new(&e, s, &o), 0);
	CHECK_EQ(gmfp_engine_add(e, dst.gmem, NULL), 0);
	CHECK_EQ(gmfp_engine_start(e), 0);
	dl = vt_now_ms() + 20000;
	while (vt_count_present(dst.gmem, NPAGES) < NPAGES / 2 && vt_now_ms() < dl)
		usleep(10000);
	{
		char json[2048];

		gmfp_engine_stats_json(e, json, sizeof(json));
		printf("#   engine: %s\n#   source: %llu ok pages, %llu failed fetches; "
		       "single even pages: %llu ok, %llu failed (last %d)\n", json,
		       (unsigned long long)atomic_load(&cnt.ok_pages),
		       (unsigned long long)atomic_load(&cnt.failed),
		       (unsigned long long)atomic_load(&cnt.even_single_ok),
		       (unsigned long long)atomic_load(&cnt.even_single_fail),
		       atomic_load(&cnt.last_even_err));
	}
	/* and it stays at that: the rest is refused, again and again */
	CHECK_EQ(gmfp_engine_wait(e, 1000), -ETIMEDOUT);
	CHECK_EQ(vt_count_present(dst.gmem, NPAGES), NPAGES / 2);
	bs = calloc(NPAGES / 64, 8);
	bd = calloc(NPAGES / 64, 8);
	CHECK(bs && bd, "out of memory");
	CHECK_EQ(gmfp_gmem_bitmap(src.gmem, 0, NPAGES * PG, bs), 0);
	CHECK_EQ(gmfp_gmem_bitmap(dst.gmem, 0, NPAGES * PG, bd), 0);
	for (w = 0; w < NPAGES / 64; w++)
		CHECK(bs[w] == bd[w], "word %d: source %#llx, destination %#llx", w,
		      (unsigned long long)bs[w], (unsigned long long)bd[w]);
	free(bs);
	free(bd);
	for (pg = 0; pg < NPAGES; pg += 2)
		CHECK(vt_page_ok((char *)dst.hva + pg * PG, pg), "page %llu wrong",
		      (unsigned long long)pg);
	CHECK_EQ(gmfp_engine_get_stats(e, &st), 0);
	CHECK(st.errors > 0, "no error reported");
	CHECK_EQ(st.last_error, -ENODATA);

	/* the source catches up: so does the destination */
	source_fill(&src, odd_pages);
	CHECK_EQ(gmfp_engine_wait(e, 60000), 0);
	vt_check_against_source(&dst, &src);
	gmfp_engine_destroy(e);
	gmfp_source_destroy(s);
	gmfp_source_destroy(cnt.tcp);
	js = vt_serve_stop(&srv);
	CHECK(vt_json_u64(js, "\"errors\":{", "not_present") > 0, "no refusal counted");
	CHECK_EQ(vt_json_u64(js, "\"errors\":{", "fetch"), 0);
	vt_vm_destroy(&dst);
	vt_vm_destroy(&src);
}

int main(int argc, char **argv)
{
	static const struct vt_case cases[] = {
		{ "postcopy_from_live_guest_memfd", test_postcopy },
		{ "server_killed_and_restarted_mid_transfer", test_kill_restart },
		{ "source_pages_not_present_are_refused", test_source_not_present },
	};
	char path[64], serve_path[512];

	signal(SIGPIPE, SIG_IGN);
	if (!vt_tool("gmfp-serve", serve_path, sizeof(serve_path)) ||
	    access(serve_path, X_OK)) {
		fprintf(stderr, "serve_vm_test: %s: %s (make vm-tests builds it)\n",
			serve_path, strerror(errno));
		return 1;
	}
	image_fd = vt_make_image(NPAGES, path, sizeof(path));
	if (image_fd < 0) {
		perror("image");
		return 1;
	}
	unlink(path);
	return vt_run(argc, argv, "serve_vm_test", cases, sizeof(cases) / sizeof(cases[0]));
}
