// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Soak: the library's fault engine and the tools (gmfp-pager, gmfp-serve,
 * both the ASan+UBSan builds, like this test) against the real kernel, in
 * rounds for a duration, with the pager and the page server SIGKILLed at
 * random moments and started again.
 *
 *   restore   a lazy restore through gmfp-pager, its pages from gmfp-serve
 *             serving the image:
 *             two vCPUs (WAIT policy) and two forked helper processes read
 *             every page through the guest_memfd; 0-3 kills, each of the
 *             pager (3 in 4) or of the server.  A killed pager makes
 *             nothing present after its death, its VMM socket reads end of
 *             file, and a new one given the same fds takes over exactly
 *             what is present and fetches the rest.
 *   postcopy  the library's engine in this process pulls a live source
 *             VM's guest_memfd from gmfp-serve --gmem-fd, the same
 *             accessors; 0-3 kills of the server, restarted on the same
 *             port each time.  Every page is received once.
 *
 * The kill moments are spread over as long as the last transfer of the
 * kind took (a fault's round trip is tens of ms on the debug kernel under
 * TCG: no throttle is needed for a "during"), one in eight at once (while
 * the engine starts), and the engine's knobs (workers, batch, background
 * order) are drawn for each round.
 *
 * After every round: every page equals the source (each page of the image
 * is different and never zero), every accessor finished with the right
 * contents within STUCK_MS of the last page becoming present, the exit
 * statuses (the tools exit 0 on SIGTERM: LeakSanitizer found nothing), and
 * the fds of this process, of the pager and of the server are back where
 * they were.  A fixed seed (-s, printed) replays the same choices (kill
 * count, victims, moments, engine knobs); the timing of the VM is not
 * replayed.  The last line counts rounds, kills, pages and the longest wait.
 */
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "vmtest.h"

#define NPAGES 128		/* a power of two: the helpers' strides */
#define NHELPERS 2
#define SOCK_PATH "/tmp/gmfp-soak-pager.sock"
#define TRANSFER_MS 120000	/* a round's pages must all be present by then */
/* An accessor still running this long after all its pages are present is stuck. */
#define STUCK_MS 10000
#define FD_SETTLE_MS 5000

enum { K_RESTORE, K_POSTCOPY, K_NR };
static const char *const kind_name[K_NR] = { "restore", "postcopy" };

/* the options, set once in main() */
static unsigned int opt_secs = 20;
static unsigned long opt_rounds = 100000;
static uint64_t opt_seed;
static unsigned int opt_kinds = (1u << K_RESTORE) | (1u << K_POSTCOPY);

static char image_path[64];
static int image_fd = -1;

struct soak {
	uint64_t rng;
	uint64_t window_ms[K_NR];	/* how long the last transfer took */
	/* totals */
	unsigned long rounds[K_NR];
	unsigned long kills_pager, kills_serve[K_NR], rounds_no_kill;
	uint64_t pages_final, pages_helpers, pages_vcpus;
	uint64_t max_wait_ms, max_transfer_ms, refetched;
};

/* splitmix64: small, and the same sequence for the same seed everywhere */
static uint64_t rnd(struct soak *k)
{
	uint64_t z = (k->rng += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t rnd_below(struct soak *k, uint64_t n)
{
	return n ? rnd(k) % n : 0;
}

/* ---- waiting ---- */

/* Sleep @ms, or less if every page becomes present: false then. */
static bool sleep_unless_complete(struct vt_vm *v, uint64_t ms)
{
	uint64_t end = vt_now_ms() + ms;

	do {
		if (vt_count_present(v->gmem, NPAGES) == NPAGES)
			return false;
		usleep(3000);
	} while (vt_now_ms() < end);
	return true;
}

/* Every page present within TRANSFER_MS: when it was seen so. */
static uint64_t wait_all_present(struct vt_vm *v, struct gmfp_engine *e, struct gmfp_source *s,
				 uint64_t t0)
{
	for (;;) {
		uint64_t now = vt_now_ms();

		if (vt_count_present(v->gmem, NPAGES) == NPAGES)
			return now;
		if (now - t0 > TRANSFER_MS) {
			vt_dump_stuck(v, e, s);
			CHECK(0, "%llu of %u pages present after %u ms",
			      (unsigned long long)vt_count_present(v->gmem, NPAGES), NPAGES,
			      TRANSFER_MS);
		}
		usleep(2000);
	}
}

/*
 * Every vCPU and helper of @v finishes, with the right contents, within
 * STUCK_MS of @t_all (when every page was seen present): a waiter that a
 * lost wakeup or a lost record left behind shows here.  Returns the longest
 * any of them took after @t_all.
 */
static uint64_t accessors_finish(struct soak *k, struct vt_vm *v, pid_t *pids, uint64_t t_all)
{
	bool vdone[8] = { false }, hdone[NHELPERS] = { false };
	int left = v->nr_vcpus + NHELPERS, i, st;
	uint64_t worst = 0;

	while (left) {
		uint64_t now = vt_now_ms();

		for (i = 0; i < v->nr_vcpus; i++) {
			struct vt_vcpu *c = &v->vcpus[i];

			if (vdone[i] || pthread_tryjoin_np(c->thread, NULL))
				continue;
			vdone[i] = true;
			left--;
			worst = now - t_all > worst ? now - t_all : worst;
			CHECK(c->result == 0, "vCPU %d: result %d", i, c->result);
			CHECK(c->sum == vt_expected_sum(c->first, c->npages),
			      "vCPU %d read a wrong page: sum %#x, expected %#x", i, c->sum,
			      vt_expected_sum(c->first, c->npages));
			k->pages_vcpus += c->npages;
		}
		for (i = 0; i < NHELPERS; i++) {
			if (hdone[i] || waitpid(pids[i], &st, WNOHANG) != pids[i])
				continue;
			hdone[i] = true;
			left--;
			worst = now - t_all > worst ? now - t_all : worst;
			CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0,
			      "helper %d: status %#x (1: a page with wrong contents)", i, st);
			k->pages_helpers += NPAGES;
		}
		if (left && now - t_all > STUCK_MS) {
			vt_dump_stuck(v, NULL, NULL);
			for (i = 0; i < NHELPERS; i++)
				if (!hdone[i])
					vt_dump_threads(pids[i]);
			CHECK(0, "%d accessors still waiting %u ms after every page became present",
			      left, STUCK_MS);
		}
		if (left)
			usleep(2000);
	}
	return worst;
}

/* ---- fds ---- */

/* @pid's fd count once it has not changed for 100 ms (2 s at most). */
static int fds_settled(pid_t pid)
{
	uint64_t end = vt_now_ms() + 2000, since = vt_now_ms();
	int n = vt_fd_count(pid), m;

	while (vt_now_ms() < end) {
		usleep(10000);
		m = vt_fd_count(pid);
		if (m != n) {
			n = m;
			since = vt_now_ms();
		} else if (vt_now_ms() - since >= 100) {
			break;
		}
	}
	CHECK(n > 0, "no fds of %d", (int)pid);
	return n;
}

/* @pid's fds back to @base within FD_SETTLE_MS: @what keeps none it was handed. */
static void fds_back(pid_t pid, int base, const char *what)
{
	uint64_t end = vt_now_ms() + FD_SETTLE_MS;
	int n;

	while ((n = vt_fd_count(pid)) != base && vt_now_ms() < end)
		usleep(10000);
	if (n != base) {
		char path[64], target[256];
		int fd;
		ssize_t len;

		for (fd = 0; fd < 1024; fd++) {
			snprintf(path, sizeof(path), "/proc/%d/fd/%d", (int)pid, fd);
			len = readlink(path, target, sizeof(target) - 1);
			if (len > 0)
				printf("#   %s fd %d -> %.*s\n", what, fd, (int)len, target);
		}
	}
	CHECK(n == base, "%s has %d fds, %d before", what, n, base);
}

/* The counters every round updates once its pages are all checked. */
static void round_done(struct soak *k, int kind, uint64_t transfer_ms, uint64_t wait_ms,
		       int kills)
{
	k->pages_final += NPAGES;
	k->window_ms[kind] = transfer_ms;
	if (wait_ms > k->max_wait_ms)
		k->max_wait_ms = wait_ms;
	if (transfer_ms > k->max_transfer_ms)
		k->max_transfer_ms = transfer_ms;
	k->rounds_no_kill += !kills;
}

/* The kill moment: spread the kills over a transfer as long as the last one. */
static uint64_t kill_delay(struct soak *k, int kind, int kills)
{
	if (!rnd_below(k, 8))
		return 0;	/* at once: the engine is still starting */
	return rnd_below(k, k->window_ms[kind] / (uint64_t)kills + 1);
}

/*
 * SIGKILL the server, start it again on its port.  Its fd count is not
 * measured again: clients reconnect at once, and a server with the same
 * arguments starts with as many fds as the first.
 */
static void serve_kill_restart(struct soak *k, struct vt_serve *srv, int gmem,
			       const char *const *args)
{
	char port[16];

	snprintf(port, sizeof(port), "%s", srv->port);
	CHECK_EQ(kill(srv->pid, SIGKILL), 0);
	CHECK_EQ(vt_serve_wait(srv, 10000), 128 + SIGKILL);
	/* a while without a server: the clients retry, nobody gets a wrong page */
	usleep((useconds_t)rnd_below(k, 200) * 1000);
	vt_serve_start(srv, gmem, port, args);
	CHECK(!strcmp(srv->port, port), "restarted on %s, not %s", srv->port, port);
}

/* ---- a lazy restore through gmfp-pager ---- */

static void pager_attach(struct vt_attach *a, struct vt_vm *v, const char *port,
			 uint32_t workers, uint32_t batch, uint32_t bg, char *json, size_t len)
{
	int r = vt_pager_attach(a, SOCK_PATH, v, image_path, port, workers, batch, bg);

	CHECK(!r, "attach: %s (%s)", strerror(-r), a->why);
	CHECK(gmfp_pager_session_status(a->sock, json, len) > 0, "session status");
}

static void round_restore(struct soak *k, char *log, size_t loglen)
{
	static const uint32_t batches[] = { 4, 8, 16, 32 };
	static const uint32_t bgs[] = { GMFP_PAGER_BG_SEQUENTIAL, GMFP_PAGER_BG_AROUND_DEMAND };
	static char json[GMFP_PAGER_MAX_JSON];
	const char *args[] = { "--image", image_path, NULL };
	uint32_t workers = 1 + (uint32_t)rnd_below(k, 2), batch = batches[rnd_below(k, 4)];
	uint32_t bg = bgs[rnd_below(k, 2)];
	int fd0 = vt_fd_count(0), pfd0, sfd0, kills = (int)rnd_below(k, 4), i, st, r;
	uint64_t tb = vt_now_ms(), t0, t_all, at_attach = 0, present, fetched, wait;
	bool serve_killed = false;
	struct vt_serve srv;
	struct vt_attach a;
	pid_t pager, pids[NHELPERS];
	struct vt_vm v;
	size_t off;

	r = vt_vm_create(&v, NPAGES, false, GMFP_POLICY_WAIT);
	if (r == -EOPNOTSUPP) {
		vt_vm_destroy(&v);
		SKIP_TEST("no presence tracking");
	}
	CHECK_EQ(r, 0);
	CHECK_EQ(vt_vcpu_add(&v, 0, NPAGES / 2), 0);
	CHECK_EQ(vt_vcpu_add(&v, NPAGES / 2, NPAGES / 2), 0);
	vt_serve_start(&srv, -1, "0", args);
	sfd0 = fds_settled(srv.pid);
	pager = vt_pager_start(SOCK_PATH, NULL);
	pfd0 = fds_settled(pager);
	CHECK_EQ(vt_helpers_start(&v, NHELPERS, pids), 0);
	CHECK_EQ(vt_vcpus_start(&v), 0);
	t0 = vt_now_ms();
	pager_attach(&a, &v, srv.port, workers, batch, bg, json, GMFP_PAGER_MAX_JSON);
	CHECK_EQ(vt_json_u64(json, NULL, "pages_at_attach"), 0);
	off = (size_t)snprintf(log, loglen, "workers %u batch %u bg %u; kills:", workers, batch, bg);
	for (i = 0; i < kills; i++) {
		uint64_t d = kill_delay(k, K_RESTORE, kills);

		if (!sleep_unless_complete(&v, d))
			break;
		if (rnd_below(k, 4) == 3) {
			serve_kill_restart(k, &srv, -1, args);
			serve_killed = true;
			k->kills_serve[K_RESTORE]++;
			off += (size_t)snprintf(log + off, loglen - off, " serve@+%llu",
						(unsigned long long)d);
			continue;
		}
		CHECK_EQ(kill(pager, SIGKILL), 0);
		CHECK_EQ(waitpid(pager, &st, 0), pager);
		CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "pager status %#x", st);
		k->kills_pager++;
		/* the VMM reads end of file; what is present is right */
		{
			struct pollfd p = { .fd = a.sock, .events = POLLIN };
			char c;

			CHECK_EQ(poll(&p, 1, 5000), 1);
			CHECK_EQ(recv(a.sock, &c, 1, MSG_DONTWAIT), 0);
		}
		close(a.sock);
		present = vt_count_present(v.gmem, NPAGES);
		vt_check_present_pages(&v);
		/* nobody serves: nothing becomes present */
		usleep((useconds_t)rnd_below(k, 100) * 1000);
		CHECK_EQ(vt_count_present(v.gmem, NPAGES), present);
		pager = vt_pager_start(SOCK_PATH, NULL);
		pfd0 = fds_settled(pager);
		pager_attach(&a, &v, srv.port, workers, batch, bg, json, GMFP_PAGER_MAX_JSON);
		/* it takes over exactly what is there */
		at_attach = vt_json_u64(json, NULL, "pages_at_attach");
		CHECK_EQ(at_attach, present);
		serve_killed = false;
		off += (size_t)snprintf(log + off, loglen - off, " pager@+%llu(%llu present)",
					(unsigned long long)d, (unsigned long long)present);
	}
	t_all = wait_all_present(&v, NULL, NULL, t0);
	wait = accessors_finish(k, &v, pids, t_all);
	vt_pager_wait_complete(a.sock, json, GMFP_PAGER_MAX_JSON, STUCK_MS);
	vt_check_present_pages(&v);
	CHECK_EQ(vt_count_present(v.gmem, NPAGES), NPAGES);
	CHECK_EQ(vt_json_u64(json, NULL, "pages_at_attach"), at_attach);
	CHECK_EQ(vt_json_u64(json, "\"engine\":", "pages_present"), NPAGES);
	CHECK_EQ(vt_json_u64(json, "\"engine\":", "already_present"), 0);
	/* the last pager fetched what was missing: once each unless its server died */
	fetched = vt_json_u64(json, "\"source\":", "pages");
	if (serve_killed)
		CHECK(fetched >= NPAGES - at_attach, "fetched %llu of %llu missing",
		      (unsigned long long)fetched, (unsigned long long)(NPAGES - at_attach));
	else
		CHECK_EQ(fetched, NPAGES - at_attach);
	k->refetched += fetched - (NPAGES - at_attach);
	CHECK_EQ(gmfp_pager_detach(a.sock), 0);
	fds_back(pager, pfd0, "gmfp-pager");
	fds_back(srv.pid, sfd0, "gmfp-serve");
	vt_pager_stop(pager);
	vt_serve_stop(&srv);
	vt_vm_destroy(&v);
	CHECK_EQ(vt_fd_count(0), fd0);
	round_done(k, K_RESTORE, t_all - t0, wait, i);
	snprintf(log + off, loglen - off, "%s; all present after %llu ms, last accessor %llu ms"
		 " later; setup %llu ms, checks and teardown %llu ms", i ? "" : " none",
		 (unsigned long long)(t_all - t0), (unsigned long long)wait,
		 (unsigned long long)(t0 - tb), (unsigned long long)(vt_now_ms() - t_all - wait));
}

/* ---- a postcopy: the engine here, gmfp-serve on a live guest_memfd ---- */

static void round_postcopy(struct soak *k, char *log, size_t loglen)
{
	static const uint32_t batches[] = { 4, 8, 16, 32 };
	static const enum gmfp_bg_order bgs[] = { GMFP_BG_SEQUENTIAL, GMFP_BG_AROUND_DEMAND };
	GMFP_OPTS_INIT(struct gmfp_engine_opts, o);
	GMFP_OPTS_INIT(struct gmfp_engine_stats, st);
	const char *const *args = NULL;
	int fd0 = vt_fd_count(0), sfd0, kills = (int)rnd_below(k, 4), i;
	uint64_t tb = vt_now_ms(), t0, t_all, wait;
	struct gmfp_source_stats ss;
	struct vt_counting cnt;
	struct gmfp_engine *e;
	struct gmfp_source *s;
	struct vt_vm src, dst;
	struct vt_serve srv;
	pid_t pids[NHELPERS];
	size_t off;

	vt_source_vm(&src, NPAGES, image_fd, NULL);
	if (vt_skipped)
		return;
	vt_serve_start(&srv, src.gmem, "0", args);
	sfd0 = fds_settled(srv.pid);
	CHECK_EQ(vt_vm_create(&dst, NPAGES, false, GMFP_POLICY_WAIT), 0);
	CHECK_EQ(vt_vcpu_add(&dst, 0, NPAGES / 2), 0);
	CHECK_EQ(vt_vcpu_add(&dst, NPAGES / 2, NPAGES / 2), 0);
	s = vt_counting_source(&cnt, srv.port, NPAGES);
	o.workers = 1 + (uint32_t)rnd_below(k, 3);
	o.max_batch = batches[rnd_below(k, 4)];
	o.bg_order = bgs[rnd_below(k, 2)];
	o.retry_min_ms = 20;
	o.retry_max_ms = 200;
	CHECK_EQ(gmfp_engine_new(&e, s, &o), 0);
	CHECK_EQ(gmfp_engine_add(e, dst.gmem, NULL), 0);
	CHECK_EQ(vt_helpers_start(&dst, NHELPERS, pids), 0);
	CHECK_EQ(vt_vcpus_start(&dst), 0);
	t0 = vt_now_ms();
	CHECK_EQ(gmfp_engine_start(e), 0);
	off = (size_t)snprintf(log, loglen, "workers %u batch %u bg %d; kills:", o.workers,
			       o.max_batch, (int)o.bg_order);
	for (i = 0; i < kills; i++) {
		uint64_t d = kill_delay(k, K_POSTCOPY, kills);

		if (!sleep_unless_complete(&dst, d))
			break;
		serve_kill_restart(k, &srv, src.gmem, args);
		k->kills_serve[K_POSTCOPY]++;
		off += (size_t)snprintf(log + off, loglen - off, " serve@+%llu(%llu present)",
					(unsigned long long)d,
					(unsigned long long)vt_count_present(dst.gmem, NPAGES));
	}
	t_all = wait_all_present(&dst, e, cnt.tcp, t0);
	wait = accessors_finish(k, &dst, pids, t_all);
	CHECK_EQ(gmfp_engine_wait(e, STUCK_MS), 0);
	vt_check_against_source(&dst, &src);
	CHECK_EQ(gmfp_engine_get_stats(e, &st), 0);
	CHECK_EQ(st.pages_present, NPAGES);
	CHECK_EQ(st.already_present, 0);
	gmfp_source_get_stats(cnt.tcp, &ss);
	/* every page received exactly once; the rest of what was asked for failed */
	CHECK_EQ(atomic_load(&cnt.ok_pages), NPAGES);
	CHECK_EQ(ss.pages - NPAGES, atomic_load(&cnt.failed_pages));
	k->refetched += ss.pages - NPAGES;
	gmfp_engine_destroy(e);
	gmfp_source_destroy(s);
	gmfp_source_destroy(cnt.tcp);
	fds_back(srv.pid, sfd0, "gmfp-serve");
	vt_serve_stop(&srv);
	vt_vm_destroy(&dst);
	vt_vm_destroy(&src);
	CHECK_EQ(vt_fd_count(0), fd0);
	round_done(k, K_POSTCOPY, t_all - t0, wait, i);
	snprintf(log + off, loglen - off, "%s; all present after %llu ms, last accessor %llu ms"
		 " later; %llu pages in %llu failed fetches; setup %llu ms, checks and teardown"
		 " %llu ms", i ? "" : " none", (unsigned long long)(t_all - t0),
		 (unsigned long long)wait, (unsigned long long)atomic_load(&cnt.failed_pages),
		 (unsigned long long)atomic_load(&cnt.failed), (unsigned long long)(t0 - tb),
		 (unsigned long long)(vt_now_ms() - t_all - wait));
}

/* ---- the soak ---- */

static void test_soak(void)
{
	struct soak k = { .rng = opt_seed };
	uint64_t t0 = vt_now_ms(), end = t0 + (uint64_t)opt_secs * 1000;
	unsigned long n = 0;
	char log[1024];
	int kind = 0;

	/* a first guess, replaced by each round's own time */
	k.window_ms[K_RESTORE] = k.window_ms[K_POSTCOPY] = 1000;
	printf("# soak: seed %llu (-s to replay), %u s, at most %lu rounds\n",
	       (unsigned long long)opt_seed, opt_secs, opt_rounds);
	/* at least one round of each kind asked for, then until the time is up */
	while (n < opt_rounds && (vt_now_ms() < end || (n < 2 && opt_kinds == 3))) {
		uint64_t r0 = vt_now_ms();

		if (!(opt_kinds & (1u << kind))) {
			kind = (kind + 1) % K_NR;
			continue;
		}
		log[0] = 0;
		if (kind == K_RESTORE)
			round_restore(&k, log, sizeof(log));
		else
			round_postcopy(&k, log, sizeof(log));
		if (vt_skipped)
			return;
		k.rounds[kind]++;
		printf("#   round %lu %s (%.1f s): %s\n", ++n, kind_name[kind],
		       (vt_now_ms() - r0) / 1000.0, log);
		kind = (kind + 1) % K_NR;
	}
	printf("# SOAK TOTAL seed %llu: %lu rounds in %.1f s (%lu lazy restores through gmfp-pager,"
	       " %lu postcopies from gmfp-serve, %lu without a kill); kills: %lu gmfp-pager,"
	       " %lu gmfp-serve (%lu during restores, %lu during postcopies); pages verified:"
	       " %llu by the VMM against the source, %llu by helper processes, %llu read by"
	       " vCPUs; %llu pages fetched again after a kill; longest transfer %llu ms; max"
	       " wait after the last page was present %llu ms (bound %u)\n",
	       (unsigned long long)opt_seed, n, (vt_now_ms() - t0) / 1000.0, k.rounds[K_RESTORE],
	       k.rounds[K_POSTCOPY], k.rounds_no_kill, k.kills_pager,
	       k.kills_serve[K_RESTORE] + k.kills_serve[K_POSTCOPY], k.kills_serve[K_RESTORE],
	       k.kills_serve[K_POSTCOPY], (unsigned long long)k.pages_final,
	       (unsigned long long)k.pages_helpers, (unsigned long long)k.pages_vcpus,
	       (unsigned long long)k.refetched, (unsigned long long)k.max_transfer_ms,
	       (unsigned long long)k.max_wait_ms, STUCK_MS);
	CHECK(n > 0, "no round ran");
}

static int usage(void)
{
	fprintf(stderr, "usage: soak_vm_test [-d SECS] [-i ROUNDS] [-s SEED] [-k restore|postcopy]"
		" [-r N] [-c CASE]\n"
		"  -d SECS    run rounds for SECS seconds (default 20)\n"
		"  -i ROUNDS  at most ROUNDS rounds (default 100000)\n"
		"  -s SEED    the random choices' seed (default: from the clock; printed)\n"
		"  -k KIND    only rounds of KIND\n");
	return 2;
}

int main(int argc, char **argv)
{
	static const struct vt_case cases[] = {
		{ "restores_and_postcopies_with_pager_and_server_killed_at_random", test_soak },
	};
	char *rest[64], *end;
	unsigned long long x;
	int nrest = 0, i, r;
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	opt_seed = (uint64_t)ts.tv_sec * 1000003u ^ (uint64_t)ts.tv_nsec ^ (uint64_t)getpid();
	rest[nrest++] = argv[0];
	for (i = 1; i < argc; i++) {
		const char *o = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(o, "-d") || !strcmp(o, "-i") || !strcmp(o, "-s") || !strcmp(o, "-k")) {
			if (!val)
				return usage();
			i++;
			errno = 0;
			if (!strcmp(o, "-k")) {
				if (!strcmp(val, kind_name[K_RESTORE]))
					opt_kinds = 1u << K_RESTORE;
				else if (!strcmp(val, kind_name[K_POSTCOPY]))
					opt_kinds = 1u << K_POSTCOPY;
				else
					return usage();
				continue;
			}
			x = strtoull(val, &end, 0);
			if (errno || *end || end == val)
				return usage();
			if (!strcmp(o, "-d"))
				opt_secs = (unsigned int)x;
			else if (!strcmp(o, "-i"))
				opt_rounds = (unsigned long)x;
			else
				opt_seed = x;
		} else if (nrest < 63) {
			rest[nrest++] = argv[i];
		}
	}
	rest[nrest] = NULL;
	signal(SIGPIPE, SIG_IGN);
	image_fd = vt_make_image(NPAGES, image_path, sizeof(image_path));
	if (image_fd < 0) {
		perror("image");
		return 1;
	}
	unlink(SOCK_PATH);
	r = vt_run(nrest, rest, "soak_vm_test", cases, sizeof(cases) / sizeof(cases[0]));
	close(image_fd);
	unlink(image_path);
	return r;
}
