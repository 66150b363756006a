// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * The pager daemon (gmfp-pager, ASan+UBSan like this test) against the real
 * kernel, in a process of its own: a presence VM's vCPUs and forked helper
 * processes reading through the guest_memfd mapping are served after the
 * VMM hands the guest_memfd over with gmfp_pager_attach(); every page is
 * checked against the image.
 *
 * Restart: the pager is SIGKILLed mid-restore (a slow page server keeps
 * pages missing): no page becomes present after that, every waiter keeps
 * waiting (a vCPU still leaves KVM_RUN on a signal and goes back), the VMM
 * reads end of file; a new pager given the same fds completes the restore
 * and fetches exactly the pages that were still missing.
 *
 * Refusal and hostile peers: a uid that is not allowed is refused with
 * EACCES and nothing is served; garbage, another version, oversized
 * packets, too many fds, bogus offsets, a guest_memfd already served, a
 * peer that never reads and a connection flood get clear errors while a
 * good peer is served, and make no page present.  The daemon exits 0 on
 * SIGTERM after all of it: no leak (LeakSanitizer), no crash.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "vmtest.h"
#include "gmfp_pager.h"

#define NPAGES 512		/* 2 MiB: a power of two (helpers' strides) */
#define NHELPERS 3
#define SOCK_PATH "/tmp/gmfp-pager-vm.sock"

static char image_path[64];
static int image_fd = -1;

/* ---- helpers ---- */

/* Every vCPU thread still in KVM_RUN (none has finished). */
static void vcpus_still_waiting(struct vt_vm *v)
{
	int i;

	for (i = 0; i < v->nr_vcpus; i++)
		CHECK_EQ(pthread_tryjoin_np(v->vcpus[i].thread, NULL), EBUSY);
}

static void helpers_still_waiting(pid_t *pids, int n)
{
	int i, st;

	for (i = 0; i < n; i++)
		CHECK(waitpid(pids[i], &st, WNOHANG) == 0, "helper %d finished (%#x)", i, st);
}

static void print_restore(const char *what, const char *json)
{
	const char *s = strstr(json, "\"session\":");

	CHECK(s, "no session in %s", json);
	printf("#   %s: %llu pages fetched in %llu ms: %llu pages/s; fault latency p50 %llu us,"
	       " p99 %llu us (%llu demand pages)\n", what,
	       (unsigned long long)vt_json_u64(s, NULL, "fetched"),
	       (unsigned long long)vt_json_u64(s, NULL, "serving_ms"),
	       (unsigned long long)vt_json_u64(s, NULL, "pages_per_s"),
	       (unsigned long long)vt_json_u64(s, "\"engine\":", "lat_p50_us"),
	       (unsigned long long)vt_json_u64(s, "\"engine\":", "lat_p99_us"),
	       (unsigned long long)vt_json_u64(s, "\"engine\":", "lat_count"));
}

/* ---- a slow page server (TCP, loopback): @us_per_page per page served ---- */

struct slow {
	struct gmfp_source *file;
	unsigned int us_per_page;
};

static int slow_fetch(void *ctx, struct gmfp_fetch *f)
{
	struct slow *s = ctx;

	usleep(s->us_per_page * f->npages);
	return gmfp_source_fetch(s->file, f);
}

static pid_t slow_server_start(char *port, size_t len, unsigned int us_per_page)
{
	struct sockaddr_in a;
	socklen_t al = sizeof(a);
	int lfd, one = 1;
	pid_t pid;

	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHECK(lfd >= 0, "socket");
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	CHECK(!bind(lfd, (struct sockaddr *)&a, sizeof(a)) && !listen(lfd, 16) &&
	      !getsockname(lfd, (struct sockaddr *)&a, &al), "listen: %s", strerror(errno));
	snprintf(port, len, "%u", ntohs(a.sin_port));
	fflush(NULL);
	pid = fork();
	CHECK(pid >= 0, "fork");
	if (!pid) {
		GMFP_OPTS_INIT(struct gmfp_file_opts, fo);
		GMFP_OPTS_INIT(struct gmfp_source_ops, ops);
		GMFP_OPTS_INIT(struct gmfp_serve_opts, so);
		struct slow s = { .us_per_page = us_per_page };
		struct gmfp_source *src;
		uint64_t size = NPAGES * PG;

		setpgid(0, 0);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		fo.fd = image_fd;
		ops.fetch = slow_fetch;
		if (gmfp_source_file(&s.file, &fo) || gmfp_source_new(&src, &ops, &s))
			_exit(2);
		so.src = src;
		so.nr_regions = 1;
		so.region_sizes = &size;
		signal(SIGCHLD, SIG_IGN);
		for (;;) {
			int c = accept(lfd, NULL, NULL);

			if (c < 0)
				_exit(3);
			if (!fork()) {
				close(lfd);
				gmfp_wire_serve(c, &so);
				_exit(0);
			}
			close(c);
		}
	}
	setpgid(pid, pid);
	close(lfd);
	return pid;
}

static void slow_server_kill(pid_t pid)
{
	kill(-pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

/* ---- raw peers ---- */

static int raw_connect(void)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

	CHECK(fd >= 0, "socket");
	strcpy(a.sun_path, SOCK_PATH);
	CHECK(!connect(fd, (struct sockaddr *)&a, sizeof(a)), "connect: %s", strerror(errno));
	return fd;
}

static void raw_send(int fd, const void *buf, size_t len, const int *fds, unsigned int nfds)
{
	ssize_t n = gmfp_sock_send_fds(fd, buf, len, fds, nfds, MSG_NOSIGNAL);

	CHECK(n == (ssize_t)len, "sendmsg: %s", n < 0 ? strerror((int)-n) : "short");
}

/* The answer to a hostile packet: ERROR @err (its text containing @text), then EOF. */
static void raw_expect_error(int fd, int err, const char *text)
{
	static uint8_t buf[GMFP_PAGER_MAX_MSG];
	struct gmfp_pager_msg m;
	struct pollfd p = { .fd = fd, .events = POLLIN };
	ssize_t n;
	int i;

	for (i = 0; i < 2; i++) {
		CHECK(poll(&p, 1, 10000) == 1, "no answer");
		n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
		/* a reset for our unread request comes before the answer */
		if (n < 0 && errno == ECONNRESET)
			n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (!i) {
			CHECK(n > 0, "no ERROR: %zd %s", n, strerror(errno));
			CHECK_EQ(gmfp_pager_decode(buf, (size_t)n, &m), n);
			CHECK_EQ(m.type, GMFP_PAGER_ERROR);
			CHECK(m.u.error.err == err && strstr(m.u.error.msg, text),
			      "error %d \"%s\", expected %d \"%s\"", m.u.error.err,
			      m.u.error.msg, err, text);
		} else {
			CHECK(n == 0 || (n < 0 && errno == ECONNRESET), "not closed: %zd", n);
		}
	}
	close(fd);
}

static void raw_bad(const void *buf, size_t len, const int *fds, unsigned int nfds,
		    int err, const char *text)
{
	int fd = raw_connect();

	raw_send(fd, buf, len, fds, nfds);
	raw_expect_error(fd, err, text);
}

/* ---- tests ---- */

/*
 * Lazy restore through the pager: accessors fault first, then the VMM
 * attaches; every page comes from the image once.  No background fill:
 * the accessors touch every page, so each is a demand fault, and the
 * latency figures printed are those of all of them.
 */
static void restore(bool private_mem)
{
	static char json[GMFP_PAGER_MAX_JSON];
	struct vt_vm v;
	struct vt_attach a;
	pid_t pager, pids[NHELPERS];
	int nh = private_mem ? 0 : NHELPERS, r;

	r = vt_vm_create(&v, NPAGES, private_mem, GMFP_POLICY_WAIT);
	if (r == -EOPNOTSUPP) {
		vt_vm_destroy(&v);
		SKIP_TEST("no presence tracking for this VM type");
	}
	CHECK_EQ(r, 0);
	CHECK_EQ(vt_vcpu_add(&v, 0, NPAGES / 2), 0);
	CHECK_EQ(vt_vcpu_add(&v, NPAGES / 2, NPAGES / 2), 0);
	pager = vt_pager_start(SOCK_PATH, NULL);
	/* the accessors wait before anybody serves them */
	if (nh)
		CHECK_EQ(vt_helpers_start(&v, nh, pids), 0);
	CHECK_EQ(vt_vcpus_start(&v), 0);
	usleep(100000);
	CHECK_EQ(vt_count_present(v.gmem, NPAGES), 0);
	r = vt_pager_attach(&a, SOCK_PATH, &v, image_path, NULL, 2, 0, GMFP_PAGER_BG_NONE);
	CHECK(!r, "attach: %s (%s)", strerror(-r), a.why);
	CHECK(a.session > 0, "session id");
	vt_vcpus_finish(&v, 60000);
	if (nh)
		CHECK_EQ(vt_helpers_wait(nh, pids, 60000), 0);
	vt_pager_wait_complete(a.sock, json, sizeof(json), 60000);
	vt_check_present_pages(&v);
	CHECK_EQ(vt_count_present(v.gmem, NPAGES), NPAGES);
	/* each page fetched once, from nothing present */
	CHECK_EQ(vt_json_u64(json, NULL, "pages_at_attach"), 0);
	CHECK_EQ(vt_json_u64(json, "\"source\":", "pages"), NPAGES);
	CHECK_EQ(vt_json_u64(json, "\"source\":", "failures"), 0);
	CHECK_EQ(vt_json_u64(json, "\"engine\":", "pages_present"), NPAGES);
	CHECK_EQ(vt_json_u64(json, "\"engine\":", "errors"), 0);
	CHECK_EQ(vt_json_u64(json, "\"engine\":", "already_present"), 0);
	CHECK_EQ(vt_json_u64(json, "\"engine\":", "pages_demand"), NPAGES);
	CHECK_EQ(vt_json_u64(json, "\"engine\":", "lat_count"), NPAGES);
	CHECK_EQ(vt_json_u64(json, "\"pages_by_origin\":", "background"), 0);
	if (!nh)
		CHECK_EQ(vt_json_u64(json, "\"pages_by_origin\":", "vcpu"), NPAGES);
	print_restore(private_mem ? "pager, private memory" : "pager lazy restore", json);
	printf("#   %s\n", json);
	/* the daemon's view lists the session */
	CHECK(gmfp_pager_status(SOCK_PATH, json, sizeof(json)) > 0, "status");
	CHECK_EQ(vt_json_u64(json, "\"pager\":", "attached"), 1);
	CHECK(strstr(json, "\"state\":\"complete\""), "%s", json);
	CHECK_EQ(gmfp_pager_detach(a.sock), 0);
	vt_pager_stop(pager);
	vt_vm_destroy(&v);
}

static void test_restore_shared(void)
{
	restore(false);
}

static void test_restore_private(void)
{
	restore(true);
}

/*
 * SIGKILL the pager mid-restore: nothing more becomes present, nobody
 * finishes, the VMM reads EOF; a new pager on the same fds completes it
 * and fetches only what was missing.
 */
static void test_kill_and_resume(void)
{
	static char json[GMFP_PAGER_MAX_JSON];
	unsigned int intr[8];
	struct vt_vm v;
	struct vt_attach a, b;
	pid_t pager, server, pids[NHELPERS];
	uint64_t before, after, end;
	char port[16], c;
	struct pollfd p;
	int r, i, st;

	CHECK_EQ(vt_vm_create(&v, NPAGES, false, GMFP_POLICY_WAIT), 0);
	CHECK_EQ(vt_vcpu_add(&v, 0, NPAGES / 2), 0);
	CHECK_EQ(vt_vcpu_add(&v, NPAGES / 2, NPAGES / 2), 0);
	/* 4 ms a page, one worker, 8 pages a batch: seconds for the whole */
	server = slow_server_start(port, sizeof(port), 4000);
	pager = vt_pager_start(SOCK_PATH, NULL);
	CHECK_EQ(vt_helpers_start(&v, NHELPERS, pids), 0);
	CHECK_EQ(vt_vcpus_start(&v), 0);
	r = vt_pager_attach(&a, SOCK_PATH, &v, image_path, port, 1, 8, GMFP_PAGER_BG_SEQUENTIAL);
	CHECK(!r, "attach: %s (%s)", strerror(-r), a.why);
	end = vt_now_ms() + 60000;
	while ((before = vt_count_present(v.gmem, NPAGES)) < 48) {
		CHECK(vt_now_ms() < end, "only %llu pages present", (unsigned long long)before);
		usleep(5000);
	}
	CHECK_EQ(kill(pager, SIGKILL), 0);
	CHECK_EQ(waitpid(pager, &st, 0), pager);
	CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "pager status %#x", st);
	before = vt_count_present(v.gmem, NPAGES);
	CHECK(before < NPAGES - 64, "%llu pages present: the source was too fast to test a kill",
	      (unsigned long long)before);
	vt_check_present_pages(&v);
	/* the VMM sees the pager gone */
	p.fd = a.sock;
	p.events = POLLIN;
	CHECK_EQ(poll(&p, 1, 5000), 1);
	CHECK_EQ(recv(a.sock, &c, 1, MSG_DONTWAIT), 0);
	close(a.sock);
	/* nothing becomes present, nobody finishes; a signal still interrupts a vCPU */
	for (i = 0; i < v.nr_vcpus; i++) {
		intr[i] = v.vcpus[i].intr_exits;
		pthread_kill(v.vcpus[i].thread, SIGUSR1);
	}
	usleep(1000000);
	after = vt_count_present(v.gmem, NPAGES);
	CHECK_EQ(after, before);
	helpers_still_waiting(pids, NHELPERS);
	vcpus_still_waiting(&v);
	for (i = 0; i < v.nr_vcpus; i++)
		CHECK(v.vcpus[i].intr_exits > intr[i], "vCPU %d not interrupted", i);
	printf("#   pager killed with %llu of %u pages present; 1 s later still %llu,"
	       " all %d accessors waiting\n", (unsigned long long)before, NPAGES,
	       (unsigned long long)after, NHELPERS + v.nr_vcpus);

	/* a new pager, the same socket path (the dead one's is stale), the same fds */
	pager = vt_pager_start(SOCK_PATH, NULL);
	r = vt_pager_attach(&b, SOCK_PATH, &v, image_path, NULL, 2, 0, GMFP_PAGER_BG_SEQUENTIAL);
	CHECK(!r, "attach again: %s (%s)", strerror(-r), b.why);
	vt_vcpus_finish(&v, 60000);
	CHECK_EQ(vt_helpers_wait(NHELPERS, pids, 60000), 0);
	vt_pager_wait_complete(b.sock, json, sizeof(json), 60000);
	vt_check_present_pages(&v);
	CHECK_EQ(vt_count_present(v.gmem, NPAGES), NPAGES);
	/* it took over what was there and fetched exactly the rest */
	CHECK_EQ(vt_json_u64(json, NULL, "pages_at_attach"), after);
	CHECK_EQ(vt_json_u64(json, "\"source\":", "pages"), NPAGES - after);
	CHECK_EQ(vt_json_u64(json, "\"engine\":", "pages_present"), NPAGES);
	CHECK_EQ(vt_json_u64(json, "\"engine\":", "bytes"), (NPAGES - after) * PG);
	CHECK_EQ(vt_json_u64(json, "\"engine\":", "already_present"), 0);
	CHECK_EQ(vt_json_u64(json, "\"engine\":", "errors"), 0);
	print_restore("after the restart", json);
	CHECK_EQ(gmfp_pager_detach(b.sock), 0);
	vt_pager_stop(pager);
	slow_server_kill(server);
	vt_vm_destroy(&v);
}

/* A uid that is not allowed: EACCES with a reason, nothing served. */
static void test_refused_uid(void)
{
	char other[16];
	struct vt_vm v;
	struct vt_attach a;
	pid_t pager;
	int r;

	snprintf(other, sizeof(other), "%u", (unsigned int)geteuid() + 1000);
	CHECK_EQ(vt_vm_create(&v, NPAGES, false, GMFP_POLICY_WAIT), 0);
	pager = vt_pager_start(SOCK_PATH, (const char *[]){ "--allow-uid", other, NULL });
	r = vt_pager_attach(&a, SOCK_PATH, &v, image_path, NULL, 0, 0, 0);
	CHECK(r == -EACCES, "attach: %d (%s), expected -EACCES", r, a.why);
	CHECK_EQ(a.sock, -1);
	CHECK(strstr(a.why, "not allowed"), "reason: \"%s\"", a.why);
	CHECK_EQ(gmfp_pager_status(SOCK_PATH, NULL, 0), -EACCES);
	usleep(300000);
	CHECK_EQ(vt_count_present(v.gmem, NPAGES), 0);
	printf("#   refused: %s\n", a.why);
	vt_pager_stop(pager);
	vt_vm_destroy(&v);
}

/*
 * Hostile peers against the real daemon while a good one restores: each
 * gets a clear error, none makes a page present, the good one completes.
 */
static void test_hostile_peers(void)
{
	static char json[GMFP_PAGER_MAX_JSON];
	static uint8_t buf[GMFP_PAGER_MAX_REQUEST + 16];
	struct gmfp_pager_msg m;
	struct vt_vm good, bad;
	struct vt_attach a, x;
	pid_t pager, pids[NHELPERS];
	int fds[70], idle[6], nidle, fd, i, r;
	uint64_t end;
	uint8_t huge[8192];
	ssize_t n;

	CHECK_EQ(vt_vm_create(&good, NPAGES, false, GMFP_POLICY_WAIT), 0);
	CHECK_EQ(vt_vm_create(&bad, NPAGES, false, GMFP_POLICY_WAIT), 0);
	pager = vt_pager_start(SOCK_PATH, (const char *[]){ "--max-sessions", "6", "--timeout-ms", "5000", NULL });
	CHECK_EQ(vt_helpers_start(&good, NHELPERS, pids), 0);
	r = vt_pager_attach(&a, SOCK_PATH, &good, image_path, NULL, 2, 0, GMFP_PAGER_BG_SEQUENTIAL);
	CHECK(!r, "attach: %s (%s)", strerror(-r), a.why);

	/* garbage, short, another version, oversized */
	memset(huge, 0x5a, sizeof(huge));
	raw_bad(huge, 100, NULL, 0, -EBADMSG, "malformed");
	raw_bad(huge, 3, NULL, 0, -EBADMSG, "malformed");
	raw_bad(huge, sizeof(huge), NULL, 0, -EMSGSIZE, "too large");
	memset(&m, 0, sizeof(m));
	m.type = GMFP_PAGER_STATUS;
	n = gmfp_pager_encode(buf, sizeof(buf), &m);
	buf[4] = 9;
	raw_bad(buf, (size_t)n, NULL, 0, -EPROTONOSUPPORT, "version 9");
	/* an ATTACH of the bad VM's guest_memfd with too many fds, bogus offsets */
	memset(&m, 0, sizeof(m));
	m.type = GMFP_PAGER_ATTACH;
	m.u.attach.nr_regions = 1;
	m.u.attach.source = GMFP_PAGER_SRC_FILE;
	m.u.attach.regions[0].size = bad.size;
	n = gmfp_pager_encode(buf, sizeof(buf), &m);
	for (i = 0; i < 70; i++)
		fds[i] = bad.gmem;
	raw_bad(buf, (size_t)n, fds, 70, -EINVAL, "file descriptors");
	fds[1] = image_fd;
	buf[GMFP_PAGER_HDR_SIZE + GMFP_PAGER_ATTACH_FIXED] = 0x10;	/* gmem_offset */
	raw_bad(buf, (size_t)n, fds, 2, -EINVAL, "aligned");
	m.u.attach.regions[0].gmem_offset = bad.size;
	n = gmfp_pager_encode(buf, sizeof(buf), &m);
	raw_bad(buf, (size_t)n, fds, 2, -EINVAL, "beyond its guest_memfd");
	m.u.attach.regions[0].gmem_offset = 0;
	m.u.attach.regions[0].size = 1ull << 50;
	n = gmfp_pager_encode(buf, sizeof(buf), &m);
	raw_bad(buf, (size_t)n, fds, 2, -EINVAL, "beyond its guest_memfd");
	/* the good VM's guest_memfd is served already */
	r = vt_pager_attach(&x, SOCK_PATH, &good, image_path, NULL, 0, 0, 0);
	CHECK(r == -EBUSY, "second attach: %d (%s)", r, x.why);
	CHECK(strstr(x.why, "served by session"), "%s", x.why);
	/* a peer that asks and never reads: dropped once its socket is full */
	fd = raw_connect();
	memset(&m, 0, sizeof(m));
	m.type = GMFP_PAGER_STATUS;
	n = gmfp_pager_encode(buf, sizeof(buf), &m);
	for (end = vt_now_ms() + 30000;;) {
		ssize_t k = send(fd, buf, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (k < 0 && (errno == EPIPE || errno == ECONNRESET))
			break;
		CHECK(k == n || errno == EAGAIN, "send: %s", strerror(errno));
		CHECK(vt_now_ms() < end, "a peer that never reads was not dropped");
		if (k < 0)
			usleep(10000);
	}
	close(fd);
	/*
	 * A flood: idle peers take the free slots (of 6, one is the good
	 * session's) until one is refused; every one after them is refused too.
	 */
	for (nidle = 0;; nidle++) {
		struct pollfd p = { .events = POLLIN };

		CHECK(nidle < 6, "%d idle peers and no refusal", nidle);
		p.fd = fd = raw_connect();
		if (poll(&p, 1, 100) == 1) {
			raw_expect_error(fd, -EAGAIN, "too many sessions");
			break;
		}
		idle[nidle] = fd;
	}
	CHECK(nidle >= 4, "only %d free slots", nidle);
	for (i = 0; i < 20; i++) {
		fd = raw_connect();
		raw_expect_error(fd, -EAGAIN, "too many sessions");
	}
	for (i = 0; i < nidle; i++)
		close(idle[i]);

	/* the good peer was served all along; the bad VM got nothing */
	CHECK_EQ(vt_helpers_wait(NHELPERS, pids, 60000), 0);
	vt_pager_wait_complete(a.sock, json, sizeof(json), 60000);
	vt_check_present_pages(&good);
	CHECK_EQ(vt_count_present(good.gmem, NPAGES), NPAGES);
	CHECK_EQ(vt_count_present(bad.gmem, NPAGES), 0);
	for (i = 0; i < 100 && gmfp_pager_status(SOCK_PATH, json, sizeof(json)) < 0; i++)
		usleep(20000);
	CHECK(gmfp_pager_status(SOCK_PATH, json, sizeof(json)) > 0, "status");
	CHECK(vt_json_u64(json, "\"pager\":", "protocol_errors") >= 6, "%s", json);
	CHECK(vt_json_u64(json, "\"pager\":", "attach_failed") >= 3, "%s", json);
	CHECK(vt_json_u64(json, "\"pager\":", "refused_busy") >= 21, "%s", json);
	CHECK(vt_json_u64(json, "\"pager\":", "dropped") >= 1, "%s", json);
	printf("#   %s\n", json);
	CHECK_EQ(gmfp_pager_detach(a.sock), 0);
	vt_pager_stop(pager);
	vt_vm_destroy(&bad);
	vt_vm_destroy(&good);
}

int main(int argc, char **argv)
{
	static const struct vt_case cases[] = {
		{ "lazy_restore_through_the_pager", test_restore_shared },
		{ "private_memory_through_the_pager", test_restore_private },
		{ "pager_killed_mid_restore_then_resumed", test_kill_and_resume },
		{ "uid_not_allowed_is_refused", test_refused_uid },
		{ "hostile_peers_while_a_good_one_restores", test_hostile_peers },
	};
	int r;

	signal(SIGPIPE, SIG_IGN);
	image_fd = vt_make_image(NPAGES, image_path, sizeof(image_path));
	if (image_fd < 0) {
		perror("image");
		return 1;
	}
	unlink(SOCK_PATH);
	r = vt_run(argc, argv, "pager_vm_test", cases, sizeof(cases) / sizeof(cases[0]));
	unlink(image_path);
	return r;
}
