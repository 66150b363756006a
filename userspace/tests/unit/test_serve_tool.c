// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * The page server tool, gmfp-serve, as a separate process on loopback:
 * its command line and exit codes, contents fetched through
 * gmfp_source_tcp() (images and an inherited mmap-able fd), demand before
 * background under a background flood, a server killed with SIGKILL and
 * restarted on the same port mid-transfer, and hostile peers on raw
 * sockets (short frames, garbage, oversized lengths, another version,
 * bogus requests, a client that never reads, a connection flood) while good
 * clients keep being served.
 *
 * The binary is ./build/rel/bin/gmfp-serve (make test-build builds it; the
 * tests run from userspace/), or $GMFP_SERVE.  Every server started is
 * killed with the test process (PR_SET_PDEATHSIG) and every wait is bounded.
 * Assertions only on the main thread; client threads count in atomics.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "unit.h"
#include "gmfp_wire.h"

#define PS GMFP_PAGE_SIZE
#define NP0 256			/* pages of image 0 */
#define NP1 128			/* pages of image 1: the last 32 a hole */
#define NP1_DATA 96
#define MAX_FRAME (GMFP_WIRE_HDR_SIZE + GMFP_WIRE_MAX_PAYLOAD)

static char dir[64];
static char img0[PATH_MAX], img1[PATH_MAX], bigimg[PATH_MAX];
static const char *serve_bin;
static unsigned int nr_spawned;

/* ---- page contents ---- */

static bool page_is_zero(uint32_t region, uint64_t pg)
{
	return pg % 7 == 3 || (region == 1 && pg >= NP1_DATA);
}

static void pattern(uint8_t *p, uint32_t region, uint64_t pg)
{
	uint64_t j;

	if (page_is_zero(region, pg)) {
		memset(p, 0, PS);
		return;
	}
	for (j = 0; j < PS / 8; j++) {
		uint64_t v = ((uint64_t)region << 56) ^ (pg << 20) ^ j ^ 0x5a5a000000000001ull;

		memcpy(p + 8 * j, &v, 8);
	}
}

/* Pages of a fetch that are not what they should be (zero bits included). */
static unsigned int bad_pages(const struct gmfp_fetch *f)
{
	uint8_t want[PS];
	unsigned int bad = 0;
	uint32_t i;

	for (i = 0; i < f->npages; i++) {
		const uint8_t *got = (const uint8_t *)f->buf + (size_t)i * PS;
		bool zbit = f->zero && (f->zero[i / 64] >> (i % 64) & 1);
		bool zero = page_is_zero(f->region, f->pgoff + i);

		if (f->zero) {
			if (zbit != zero) {
				bad++;
				continue;
			}
			if (zero)
				continue;
		}
		pattern(want, f->region, f->pgoff + i);
		bad += memcmp(got, want, PS) != 0;
	}
	return bad;
}

static void write_image(const char *path, uint32_t region, uint64_t npages,
			uint64_t data_pages)
{
	uint8_t page[PS];
	uint64_t pg;
	int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600);

	assert_true(fd >= 0);
	for (pg = 0; pg < data_pages; pg++) {
		pattern(page, region, pg);
		assert_int_equal(pwrite(fd, page, PS, (off_t)(pg * PS)), PS);
	}
	/* the rest a hole: reads as zeroes */
	assert_int_equal(ftruncate(fd, (off_t)(npages * PS)), 0);
	close(fd);
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static void sleep_ms(unsigned int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

/* ---- the server process ---- */

struct srv {
	pid_t pid;
	int out;		/* its stdout */
	char port[16];
	char err_path[PATH_MAX];
	char obuf[16384];	/* what it printed */
	size_t olen;
	int status;		/* after srv_wait() */
};

/* Read its stdout until @until appears or EOF or @ms pass. */
static bool srv_read_until(struct srv *s, const char *until, unsigned int ms)
{
	uint64_t dl = now_ms() + ms;

	for (;;) {
		struct pollfd p = { .fd = s->out, .events = POLLIN };
		uint64_t now = now_ms();
		ssize_t n;

		s->obuf[s->olen] = 0;
		if (until && strstr(s->obuf, until))
			return true;
		if (now >= dl || s->olen == sizeof(s->obuf) - 1)
			return false;
		if (poll(&p, 1, (int)(dl - now)) <= 0)
			continue;
		n = read(s->out, s->obuf + s->olen, sizeof(s->obuf) - 1 - s->olen);
		if (n <= 0)
			return !until;
		s->olen += (size_t)n;
	}
}

/* Fork and exec the server with @args (NULL-terminated); no wait. */
static void srv_spawn(struct srv *s, const char *const *args)
{
	const char *argv[40];
	int pfd[2], i;

	memset(s, 0, sizeof(*s));
	snprintf(s->err_path, sizeof(s->err_path), "%s/serve-%u.err", dir, nr_spawned++);
	argv[0] = serve_bin;
	for (i = 0; args[i]; i++)
		argv[i + 1] = args[i];
	argv[i + 1] = NULL;
	assert_int_equal(pipe2(pfd, O_CLOEXEC), 0);
	s->pid = fork();
	assert_true(s->pid >= 0);
	if (!s->pid) {
		int e = open(s->err_path, O_CREAT | O_TRUNC | O_WRONLY, 0600);

		/* a test that dies takes its servers with it */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(pfd[1], 1);
		if (e >= 0)
			dup2(e, 2);
		execv(serve_bin, (char *const *)argv);
		_exit(127);
	}
	close(pfd[1]);
	s->out = pfd[0];
}

/* Spawn and wait for "listening on": the port it took. */
static void srv_start(struct srv *s, const char *const *args)
{
	char *p;

	srv_spawn(s, args);
	if (!srv_read_until(s, "\n", 10000) || !(p = strstr(s->obuf, "listening on 127.0.0.1:")))
		fail_msg("gmfp-serve did not start: stdout '%s'", s->obuf);
	p += strlen("listening on 127.0.0.1:");
	snprintf(s->port, sizeof(s->port), "%.*s", (int)strspn(p, "0123456789"), p);
	assert_true(s->port[0]);
}

/* Wait for it to exit: its exit status, 128 + signal, or -1 after @ms. */
static int srv_wait(struct srv *s, unsigned int ms)
{
	uint64_t dl = now_ms() + ms;
	int st;

	for (;;) {
		pid_t r = waitpid(s->pid, &st, WNOHANG);

		if (r == s->pid)
			break;
		if (now_ms() > dl) {
			kill(s->pid, SIGKILL);
			waitpid(s->pid, &st, 0);
			s->pid = 0;
			close(s->out);
			return -1;
		}
		sleep_ms(5);
	}
	s->pid = 0;
	srv_read_until(s, NULL, 2000);	/* the rest: the --json line */
	close(s->out);
	s->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
	return s->status;
}

/* SIGTERM, and it must exit 0 within 10 s. */
static void srv_stop(struct srv *s)
{
	kill(s->pid, SIGTERM);
	assert_int_equal(srv_wait(s, 10000), 0);
}

/* Exit status of a server that is expected to give up at once. */
static int srv_exit_code(const char *const *args)
{
	struct srv s;

	srv_spawn(&s, args);
	return srv_wait(&s, 10000);
}

static bool file_has(const char *path, const char *needle)
{
	char buf[65536];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return false;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n < 0)
		return false;
	buf[n] = 0;
	return strstr(buf, needle) != NULL;
}

/* "key": value in the object "obj" (NULL: anywhere) of JSON @js. */
static uint64_t jget(const char *js, const char *obj, const char *key)
{
	char pat[64];
	const char *p = js;

	if (!js)
		return UINT64_MAX;
	if (obj) {
		snprintf(pat, sizeof(pat), "\"%s\":{", obj);
		p = strstr(js, pat);
		if (!p)
			return UINT64_MAX;
	}
	snprintf(pat, sizeof(pat), "\"%s\":", key);
	p = strstr(p, pat);
	return p ? strtoull(p + strlen(pat), NULL, 10) : UINT64_MAX;
}

/* The --json line of a server that exited. */
static const char *srv_json(struct srv *s)
{
	const char *p = strstr(s->obuf, "\n{\"connections\"");

	return p ? p + 1 : NULL;
}

/* The stats file, rewritten on SIGUSR1: waits for a fresh copy. */
static char stats_buf[4096];
static const char *srv_stats(struct srv *s, const char *path)
{
	uint64_t dl = now_ms() + 5000;
	struct stat before, after;
	bool had = !stat(path, &before);

	kill(s->pid, SIGUSR1);
	while (now_ms() < dl) {
		int fd;
		ssize_t n;

		sleep_ms(5);
		if (stat(path, &after) || (had && after.st_ino == before.st_ino))
			continue;	/* not replaced yet */
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		n = read(fd, stats_buf, sizeof(stats_buf) - 1);
		close(fd);
		if (n > 0) {
			stats_buf[n] = 0;
			return stats_buf;
		}
	}
	return NULL;
}

/* Poll the stats file until obj.key >= @min (or == with @exact). */
static uint64_t srv_stats_wait(struct srv *s, const char *path, const char *obj,
			       const char *key, uint64_t want, bool exact)
{
	uint64_t dl = now_ms() + 8000, v = UINT64_MAX;

	while (now_ms() < dl) {
		v = jget(srv_stats(s, path), obj, key);
		if (v != UINT64_MAX && (exact ? v == want : v >= want))
			break;
		sleep_ms(20);
	}
	return v;
}

/* /proc/<pid>/status "Key:" in kB or count. */
static long proc_status(pid_t pid, const char *key)
{
	char path[64], line[256];
	long v = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, key, strlen(key)) && line[strlen(key)] == ':')
			v = strtol(line + strlen(key) + 1, NULL, 10);
	fclose(f);
	return v;
}

static int proc_fds(pid_t pid)
{
	char path[64];
	struct dirent *d;
	DIR *dp;
	int n = 0;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	dp = opendir(path);
	if (!dp)
		return -1;
	while ((d = readdir(dp)))
		n += d->d_name[0] != '.';
	closedir(dp);
	return n;
}

/*
 * Wait (5 s at most) until the server has no connection thread left and,
 * with @fds >= 0, holds that many fds: every connection joined and closed.
 */
static bool settle(pid_t pid, int fds)
{
	uint64_t dl = now_ms() + 15000;

	while (now_ms() < dl) {
		if (proc_status(pid, "Threads") == 1 && (fds < 0 || proc_fds(pid) == fds))
			return true;
		sleep_ms(10);
	}
	return false;
}

/* ---- clients ---- */

static const uint64_t layout2[2] = { NP0 * (uint64_t)PS, NP1 * (uint64_t)PS };

static struct gmfp_source *tcp(const char *port, uint32_t nr, const uint64_t *sizes,
			       uint32_t dconns, uint32_t bconns, uint32_t timeout_ms)
{
	GMFP_OPTS_INIT(struct gmfp_tcp_opts, o);
	struct gmfp_source *s;

	o.port = port;
	o.nr_regions = nr;
	o.region_sizes = sizes;
	o.demand_conns = dconns;
	o.background_conns = bconns;
	o.timeout_ms = timeout_ms;
	o.connect_timeout_ms = 500;
	assert_int_equal(gmfp_source_tcp(&s, &o), 0);
	return s;
}

/* One fetch into a fresh buffer: the fetch's result; *bad for wrong pages. */
static int fetch(struct gmfp_source *s, uint32_t region, uint64_t pgoff, uint32_t n,
		 bool demand, bool want_zero, unsigned int *bad)
{
	uint64_t zero[GMFP_WIRE_MAX_PAGES / 64] = { 0 };
	struct gmfp_fetch f = {
		.region = region, .pgoff = pgoff, .npages = n,
		.flags = demand ? GMFP_FETCH_DEMAND : 0,
		.zero = want_zero ? zero : NULL,
	};
	int r;

	f.buf = malloc((size_t)n * PS);
	if (!f.buf)
		return -ENOMEM;
	memset(f.buf, 0xcc, (size_t)n * PS);
	r = gmfp_source_fetch(s, &f);
	if (!r && bad)
		*bad += bad_pages(&f);
	free(f.buf);
	return r;
}

/* A raw connection to the server. */
static int raw_connect(const char *port)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	a.sin_port = htons((uint16_t)atoi(port));
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	return fd;
}

static void raw_send(int fd, const void *p, size_t n)
{
	assert_int_equal(send(fd, p, n, MSG_NOSIGNAL), (ssize_t)n);
}

/*
 * The next frame from @fd within @ms: its type, 0 for EOF (or a reset),
 * -ETIMEDOUT.  @buf of MAX_FRAME bytes keeps what follows it.
 */
static int raw_read(int fd, uint8_t *buf, size_t *len, struct gmfp_wire_msg *m,
		    unsigned int ms)
{
	uint64_t dl = now_ms() + ms;

	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t n = gmfp_wire_decode(buf, *len, m);
		uint64_t now = now_ms();

		if (n > 0) {
			*len -= (size_t)n;
			memmove(buf, buf + n, *len);
			return m->type;
		}
		if (n < 0)
			return (int)n;
		if (now >= dl)
			return -ETIMEDOUT;
		if (poll(&p, 1, (int)(dl - now)) <= 0)
			continue;
		n = recv(fd, buf + *len, MAX_FRAME - *len, 0);
		if (n <= 0)
			return 0;
		*len += (size_t)n;
	}
}

/* Handshake on a raw connection: WELCOME expected. */
static void raw_hello(int fd, uint8_t *buf, size_t *len, uint8_t channel)
{
	uint8_t h[GMFP_WIRE_HDR_SIZE + 64];
	struct gmfp_wire_msg m;
	ssize_t n = gmfp_wire_encode_hello(h, sizeof(h), 0, channel, 2, layout2);

	assert_true(n > 0);
	raw_send(fd, h, (size_t)n);
	assert_int_equal(raw_read(fd, buf, len, &m, 5000), GMFP_WIRE_WELCOME);
}

/* The server closed @fd (EOF or reset) within @ms, reading past anything. */
static bool raw_closed(int fd, unsigned int ms)
{
	uint64_t dl = now_ms() + ms;
	uint8_t b[4096];

	while (now_ms() < dl) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t n;

		if (poll(&p, 1, 50) <= 0)
			continue;
		n = recv(fd, b, sizeof(b), MSG_DONTWAIT);
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
			return true;
	}
	return false;
}

static void good_client(const char *port);

/* ---- setup ---- */

static int group_setup(void **state)
{
	(void)state;
	serve_bin = getenv("GMFP_SERVE");
	if (!serve_bin)
		serve_bin = "./build/rel/bin/gmfp-serve";
	if (access(serve_bin, X_OK)) {
		fprintf(stderr, "test_serve_tool: %s: %s (make test-build builds it)\n",
			serve_bin, strerror(errno));
		return -1;
	}
	snprintf(dir, sizeof(dir), "/tmp/gmfp-serve-test-XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	snprintf(img0, sizeof(img0), "%s/img0", dir);
	snprintf(img1, sizeof(img1), "%s/img1", dir);
	snprintf(bigimg, sizeof(bigimg), "%s/big", dir);
	signal(SIGPIPE, SIG_IGN);
	return 0;
}

static int group_teardown(void **state)
{
	struct dirent *d;
	DIR *dp = opendir(dir);
	char p[PATH_MAX];

	(void)state;
	while (dp && (d = readdir(dp))) {
		if (d->d_name[0] == '.')
			continue;
		snprintf(p, sizeof(p), "%s/%s", dir, d->d_name);
		unlink(p);
	}
	if (dp)
		closedir(dp);
	rmdir(dir);
	return 0;
}

/* ---- tests ---- */

static void test_usage(void **state)
{
	char empty[PATH_MAX], odd[PATH_MAX];
	struct srv s, s2;
	int fd;

	(void)state;
	write_image(img0, 0, NP0, NP0);
	snprintf(empty, sizeof(empty), "%s/empty", dir);
	snprintf(odd, sizeof(odd), "%s/odd", dir);
	fd = open(empty, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600);
	close(fd);
	fd = open(odd, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600);
	assert_int_equal(ftruncate(fd, PS + 100), 0);
	close(fd);

	srv_spawn(&s, (const char *[]){ "--help", NULL });
	assert_int_equal(srv_wait(&s, 10000), 0);
	assert_non_null(strstr(s.obuf, "Usage: gmfp-serve"));
	assert_non_null(strstr(s.obuf, "Exit status"));
	srv_spawn(&s, (const char *[]){ "--version", NULL });
	assert_int_equal(srv_wait(&s, 10000), 0);
	assert_non_null(strstr(s.obuf, "gmfp-serve"));

	/* usage: 2 */
	assert_int_equal(srv_exit_code((const char *[]){ NULL }), 2);
	assert_int_equal(srv_exit_code((const char *[]){ "--bogus", "--image", img0, NULL }), 2);
	assert_int_equal(srv_exit_code((const char *[]){ "--max-conns", "0", "-i", img0, NULL }), 2);
	assert_int_equal(srv_exit_code((const char *[]){ "--max-conns", "12x", "-i", img0, NULL }), 2);
	assert_int_equal(srv_exit_code((const char *[]){ "-t", "-5", "-i", img0, NULL }), 2);
	assert_int_equal(srv_exit_code((const char *[]){ "-i", img0, "stray", NULL }), 2);
	assert_int_equal(srv_exit_code((const char *[]){ "-i", img0, "-l", "::1:80", NULL }), 2);
	assert_int_equal(srv_exit_code((const char *[]){ "-i", img0, "-l", "[::1]", NULL }), 2);
	assert_int_equal(srv_exit_code((const char *[]){ "-g", "x", NULL }), 2);
	/* inputs: 3 */
	assert_int_equal(srv_exit_code((const char *[]){ "-i", "/nonexistent/img", NULL }), 3);
	assert_int_equal(srv_exit_code((const char *[]){ "-i", empty, NULL }), 3);
	assert_int_equal(srv_exit_code((const char *[]){ "-i", odd, NULL }), 3);
	assert_int_equal(srv_exit_code((const char *[]){ "-i", dir, NULL }), 3);
	assert_int_equal(srv_exit_code((const char *[]){ "-g", "987", NULL }), 3);
	/* listening: 4 (the port is taken; SO_REUSEADDR does not share it) */
	srv_start(&s, (const char *[]){ "-i", img0, "--json", NULL });
	{
		char l[32];

		snprintf(l, sizeof(l), "127.0.0.1:%s", s.port);
		srv_spawn(&s2, (const char *[]){ "-i", img0, "-l", l, NULL });
		assert_int_equal(srv_wait(&s2, 10000), 4);
		assert_true(file_has(s2.err_path, "Address already in use"));
	}
	assert_int_equal(srv_exit_code((const char *[]){ "-i", img0, "-l", "192.0.2.1:0", NULL }), 4);
	srv_stop(&s);
	assert_non_null(srv_json(&s));
	assert_int_equal(srv_exit_code((const char *[]){ "-i", img0, "-l", "nosuchservice", NULL }), 4);
}

/* SIGINT ends it like SIGTERM; the stats file is kept up to date by itself. */
static void test_signals_stats_file(void **state)
{
	char stats[PATH_MAX];
	uint64_t dl;
	struct srv s;
	int st;

	(void)state;
	write_image(img0, 0, NP0, NP0);
	write_image(img1, 1, NP1, NP1_DATA);
	snprintf(stats, sizeof(stats), "%s/periodic.json", dir);
	unlink(stats);
	srv_start(&s, (const char *[]){ "-i", img0, "-i", img1, "--stats-file", stats,
					"--stats-interval-ms", "50", NULL });
	good_client(s.port);
	/* no SIGUSR1: the interval alone brings the file up to date */
	dl = now_ms() + 5000;
	while (now_ms() < dl && !file_has(stats, "\"background\":128,\"zero\""))
		sleep_ms(20);
	assert_true(file_has(stats, "\"pages\":{\"demand\":128,\"background\":128,"));
	kill(s.pid, SIGINT);
	assert_int_equal(srv_wait(&s, 10000), 0);
	assert_true(file_has(stats, "\"active\":0"));

	/* IPv6, where the loopback has it */
	srv_spawn(&s, (const char *[]){ "-i", img0, "-l", "[::1]:0", NULL });
	if (srv_read_until(&s, "\n", 10000) && strstr(s.obuf, "listening on [::1]:")) {
		kill(s.pid, SIGTERM);
		assert_int_equal(srv_wait(&s, 10000), 0);
	} else {
		st = srv_wait(&s, 10000);
		assert_int_equal(st, 4);
		printf("# no IPv6 loopback here: [::1] not tested\n");
	}
}

/* Everything of both images, in chunks of every size, on both channels. */
static void test_contents(void **state)
{
	struct gmfp_source *c, *wrong;
	uint64_t other[2] = { layout2[0], layout2[1] + PS };
	struct gmfp_source_stats ss;
	unsigned int bad = 0, zeros = 0;
	uint64_t pages = 0, pg;
	uint32_t n, k = 0;
	struct srv s;
	const char *js;

	(void)state;
	write_image(img0, 0, NP0, NP0);
	write_image(img1, 1, NP1, NP1_DATA);
	srv_start(&s, (const char *[]){ "-i", img0, "--image", img1, "--json", NULL });
	c = tcp(s.port, 2, layout2, 1, 1, 2000);
	for (pg = 0; pg < NP0; pg += n, k++) {
		n = 1 + (k * 37) % 64;
		if (pg + n > NP0)
			n = (uint32_t)(NP0 - pg);
		assert_int_equal(fetch(c, 0, pg, n, k & 1, k % 3 != 0, &bad), 0);
		pages += n;
	}
	/* all of region 1 at once: the hole comes back as zero pages */
	assert_int_equal(fetch(c, 1, 0, NP1, false, true, &bad), 0);
	assert_int_equal(fetch(c, 1, 0, GMFP_WIRE_MAX_PAGES, true, true, NULL), -EINVAL);
	pages += NP1;
	assert_int_equal(bad, 0);
	/* one page again: counted as a repeat */
	assert_int_equal(fetch(c, 0, 5, 1, true, false, &bad), 0);
	pages++;
	/* outside the layout: refused by the client, never sent */
	assert_int_equal(fetch(c, 0, NP0, 1, true, true, NULL), -EINVAL);
	assert_int_equal(fetch(c, 2, 0, 1, true, true, NULL), -EINVAL);
	/* a client that expects other memory: turned away in the handshake */
	wrong = tcp(s.port, 2, other, 1, 0, 2000);
	assert_int_equal(fetch(wrong, 0, 0, 1, true, true, NULL), -ENXIO);
	gmfp_source_destroy(wrong);
	gmfp_source_get_stats(c, &ss);
	assert_int_equal(ss.failures, 3);	/* the three -EINVAL */
	gmfp_source_destroy(c);

	srv_stop(&s);
	js = srv_json(&s);
	assert_non_null(js);
	for (pg = 0; pg < NP0; pg++)
		zeros += page_is_zero(0, pg);
	for (pg = 0; pg < NP1; pg++)
		zeros += page_is_zero(1, pg);
	assert_int_equal(jget(js, "pages", "demand") + jget(js, "pages", "background"), pages);
	assert_true(jget(js, "pages", "demand") > 0 && jget(js, "pages", "background") > 0);
	assert_int_equal(jget(js, "pages", "repeat"), 1);
	/* a fetch without a zero bitmap still gets them flagged on the wire */
	assert_int_equal(jget(js, "pages", "zero"), zeros);
	assert_int_equal(jget(js, NULL, "bytes"), (pages - zeros) * PS);
	assert_int_equal(jget(js, "errors", "handshake"), 1);
	assert_int_equal(jget(js, "errors", "malformed"), 0);
	assert_int_equal(jget(js, NULL, "connections"), 3);
	assert_int_equal(jget(js, NULL, "active"), 0);
	assert_true(file_has(s.err_path, "client expects another memory layout"));
}

/* --gmem-fd with an inherited mmap-able fd (a memfd stands in on the host). */
static void test_gmem_fd(void **state)
{
	struct gmfp_source *c;
	unsigned int bad = 0;
	uint64_t size = NP0 * (uint64_t)PS, pg;
	char fdarg[16];
	uint8_t *map;
	struct srv s;
	int fd, p[2];

	(void)state;
	fd = memfd_create("gmfp-serve-test", 0);	/* no CLOEXEC: inherited */
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)size), 0);
	map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	assert_true(map != MAP_FAILED);
	for (pg = 0; pg < NP0; pg++)
		pattern(map + pg * PS, 0, pg);
	snprintf(fdarg, sizeof(fdarg), "%d", fd);
	srv_start(&s, (const char *[]){ "--gmem-fd", fdarg, "--json", NULL });
	c = tcp(s.port, 1, layout2, 1, 1, 2000);
	for (pg = 0; pg < NP0; pg += 64)
		assert_int_equal(fetch(c, 0, pg, 64, pg & 64, true, &bad), 0);
	assert_int_equal(fetch(c, 0, 0, NP0 / 2, false, false, &bad), 0);
	assert_int_equal(bad, 0);
	/* live memory: a change shows in the next fetch */
	map[7 * PS] ^= 1;
	assert_int_equal(fetch(c, 0, 7, 1, true, true, &bad), 0);
	assert_int_equal(bad, 1);
	gmfp_source_destroy(c);
	srv_stop(&s);
	assert_int_equal(jget(srv_json(&s), "pages", "repeat"), NP0 / 2 + 1);
	munmap(map, size);
	close(fd);

	/* not mappable (a pipe): refused at start */
	assert_int_equal(pipe(p), 0);
	snprintf(fdarg, sizeof(fdarg), "%d", p[0]);
	assert_int_equal(srv_exit_code((const char *[]){ "-g", fdarg, NULL }), 3);
	close(p[0]);
	close(p[1]);
}

/* ---- demand before background ---- */

struct bg_flood {
	const char *port;
	_Atomic bool stop;
	_Atomic unsigned int chunks, errors;
	pthread_t th;
};

static void *bg_main(void *arg)
{
	struct bg_flood *b = arg;
	GMFP_OPTS_INIT(struct gmfp_tcp_opts, o);
	struct gmfp_source *s;
	unsigned int bad = 0;
	uint64_t pg = 0;

	o.port = b->port;
	o.background_conns = 1;
	o.timeout_ms = 10000;
	if (gmfp_source_tcp(&s, &o)) {
		atomic_fetch_add(&b->errors, 1);
		return NULL;
	}
	while (!atomic_load(&b->stop)) {
		if (fetch(s, 0, pg, 64, false, true, &bad) || bad)
			atomic_fetch_add(&b->errors, 1);
		else
			atomic_fetch_add(&b->chunks, 1);
		pg = (pg + 64) % NP0;
	}
	gmfp_source_destroy(s);
	return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/*
 * A slow link (--throttle-us 1000: a page a millisecond, one at a time)
 * flooded by two background clients asking for 64 pages at a time: a
 * background request takes 64 ms at best.  Single demand pages meanwhile
 * must come back in a few milliseconds, not behind the batches.
 */
static void test_demand_first(void **state)
{
	struct bg_flood bg[2];
	uint64_t lat[40];
	struct gmfp_source *d;
	unsigned int bad = 0, i;
	struct srv s;
	const char *js;

	(void)state;
	write_image(img0, 0, NP0, NP0);
	srv_start(&s, (const char *[]){ "-i", img0, "--throttle-us", "1000", "--json", NULL });
	for (i = 0; i < 2; i++) {
		memset(&bg[i], 0, sizeof(bg[i]));
		bg[i].port = s.port;
		assert_int_equal(pthread_create(&bg[i].th, NULL, bg_main, &bg[i]), 0);
	}
	d = tcp(s.port, 0, NULL, 1, 0, 10000);
	/* the flood is on */
	while (atomic_load(&bg[0].chunks) + atomic_load(&bg[1].chunks) < 2)
		sleep_ms(5);
	for (i = 0; i < 40; i++) {
		uint64_t t0 = now_us();

		assert_int_equal(fetch(d, 0, (i * 11) % NP0, 1, true, true, &bad), 0);
		lat[i] = now_us() - t0;
		sleep_ms(3);
	}
	for (i = 0; i < 2; i++) {
		atomic_store(&bg[i].stop, true);
		pthread_join(bg[i].th, NULL);
		assert_int_equal(atomic_load(&bg[i].errors), 0);
		assert_true(atomic_load(&bg[i].chunks) > 0);
	}
	gmfp_source_destroy(d);
	srv_stop(&s);
	assert_int_equal(bad, 0);
	qsort(lat, 40, sizeof(lat[0]), cmp_u64);
	printf("# demand latency under a background flood: p50 %llu us, p90 %llu us, "
	       "max %llu us (a background request: >= 64000 us)\n",
	       (unsigned long long)lat[20], (unsigned long long)lat[36],
	       (unsigned long long)lat[39]);
	/* far below a batch: at most one background page ahead of it */
	assert_true(lat[36] < 32000);
	js = srv_json(&s);
	assert_int_equal(jget(js, "requests", "demand"), 40);
	assert_true(jget(js, NULL, "background_waits") > 0);
}

/* ---- kill and restart ---- */

#define KR_PAGES 1024
#define KR_CHUNK 8

struct kr {
	struct gmfp_source *src;
	_Atomic uint32_t next;		/* next chunk to claim */
	_Atomic uint32_t done_pages;	/* received and checked */
	_Atomic uint32_t bad, failures, gave_up;
	pthread_t th[2];
};

struct kr_worker {
	struct kr *k;
	bool demand;
	_Atomic uint32_t failures;
};

/* Claim chunks in order; retry a failed one until it comes. */
static void *kr_main(void *arg)
{
	struct kr_worker *w = arg;
	struct kr *k = w->k;
	uint64_t dl = now_ms() + 30000;

	for (;;) {
		uint32_t c = atomic_fetch_add(&k->next, 1);
		unsigned int bad = 0;

		if (c >= KR_PAGES / KR_CHUNK)
			return NULL;
		while (fetch(k->src, 0, (uint64_t)c * KR_CHUNK, KR_CHUNK, w->demand, true, &bad)) {
			atomic_fetch_add(&k->failures, 1);
			atomic_fetch_add(&w->failures, 1);
			if (now_ms() > dl) {
				atomic_fetch_add(&k->gave_up, 1);
				return NULL;
			}
			sleep_ms(10);
		}
		atomic_fetch_add(&k->bad, bad);
		atomic_fetch_add(&k->done_pages, KR_CHUNK);
	}
}

/*
 * SIGKILL the server a quarter of the way through and start another on the
 * same port: the client reconnects and asks for what it still lacks; the
 * new server serves exactly that.
 */
static void test_kill_restart(void **state)
{
	uint64_t size = KR_PAGES * (uint64_t)PS, s2_pages;
	struct kr_worker w[2];
	struct gmfp_source_stats ss;
	struct kr k;
	struct srv s;
	uint32_t before, f0[2];
	uint64_t dl;
	char l[32];
	int i;

	(void)state;
	write_image(bigimg, 0, KR_PAGES, KR_PAGES);
	memset(&k, 0, sizeof(k));
	srv_start(&s, (const char *[]){ "-i", bigimg, "--throttle-us", "500", NULL });
	snprintf(l, sizeof(l), "127.0.0.1:%s", s.port);
	k.src = tcp(s.port, 1, &size, 1, 1, 2000);
	for (i = 0; i < 2; i++) {
		w[i].k = &k;
		w[i].demand = i == 0;
		atomic_store(&w[i].failures, 0);
		assert_int_equal(pthread_create(&k.th[i], NULL, kr_main, &w[i]), 0);
	}
	while (atomic_load(&k.done_pages) < KR_PAGES / 4)
		sleep_ms(1);
	for (i = 0; i < 2; i++)
		f0[i] = atomic_load(&w[i].failures);
	kill(s.pid, SIGKILL);
	assert_int_equal(srv_wait(&s, 5000), 128 + SIGKILL);
	/*
	 * Until both workers have failed since: each is retrying a chunk that
	 * cannot come, and whatever was still on its way has been counted.
	 */
	dl = now_ms() + 10000;
	while ((atomic_load(&w[0].failures) == f0[0] || atomic_load(&w[1].failures) == f0[1]) &&
	       now_ms() < dl)
		sleep_ms(5);
	sleep_ms(100);
	before = atomic_load(&k.done_pages);
	assert_true(before < KR_PAGES);
	assert_true(atomic_load(&k.failures) > 0);
	srv_start(&s, (const char *[]){ "-i", bigimg, "--throttle-us", "500", "-l", l,
					"--json", NULL });
	for (i = 0; i < 2; i++)
		pthread_join(k.th[i], NULL);
	assert_int_equal(atomic_load(&k.gave_up), 0);
	assert_int_equal(atomic_load(&k.done_pages), KR_PAGES);
	assert_int_equal(atomic_load(&k.bad), 0);
	gmfp_source_get_stats(k.src, &ss);
	assert_true(ss.reconnects >= 1);
	gmfp_source_destroy(k.src);
	srv_stop(&s);
	s2_pages = jget(srv_json(&s), "pages", "demand") + jget(srv_json(&s), "pages", "background");
	printf("# kill/restart: %u of %u pages before the kill, the new server served "
	       "%llu, %u failed fetches (%llu pages asked for in them), %llu reconnects\n",
	       before, KR_PAGES, (unsigned long long)s2_pages, atomic_load(&k.failures),
	       (unsigned long long)(ss.pages - KR_PAGES), (unsigned long long)ss.reconnects);
	/* what was missing, nothing more */
	assert_int_equal(s2_pages, KR_PAGES - before);
	assert_int_equal(jget(srv_json(&s), "pages", "repeat"), 0);
}

/* ---- hostile peers ---- */

/* A good client gets everything of region 0 right. */
static void good_client(const char *port)
{
	struct gmfp_source *c = tcp(port, 2, layout2, 1, 1, 3000);
	unsigned int bad = 0;
	uint64_t pg;

	for (pg = 0; pg < NP0; pg += 64)
		assert_int_equal(fetch(c, 0, pg, 64, pg & 64, true, &bad), 0);
	assert_int_equal(bad, 0);
	gmfp_source_destroy(c);
}

static void put_hdr(uint8_t *h, uint8_t version, uint8_t type, uint32_t len, uint32_t seq)
{
	uint32_t magic = GMFP_WIRE_MAGIC;

	memset(h, 0, GMFP_WIRE_HDR_SIZE);
	memcpy(h, &magic, 4);	/* little-endian host */
	h[4] = version;
	h[5] = type;
	memcpy(h + 8, &len, 4);
	memcpy(h + 12, &seq, 4);
}

static void test_hostile(void **state)
{
	static const char garbage[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
	uint8_t *buf = malloc(MAX_FRAME), frame[GMFP_WIRE_HDR_SIZE + 64];
	char stats[PATH_MAX];
	struct gmfp_wire_msg m;
	size_t len = 0;
	struct srv s;
	int fd, fds0, i;
	ssize_t n;
	long rss0, rss;

	(void)state;
	assert_non_null(buf);
	write_image(img0, 0, NP0, NP0);
	write_image(img1, 1, NP1, NP1_DATA);
	snprintf(stats, sizeof(stats), "%s/stats.json", dir);
	srv_start(&s, (const char *[]){ "-i", img0, "-i", img1, "--io-timeout-ms", "500",
					"--max-conns", "16", "--stats-file", stats,
					"--stats-interval-ms", "100000", "--json", NULL });
	good_client(s.port);
	assert_true(settle(s.pid, -1));
	fds0 = proc_fds(s.pid);
	rss0 = proc_status(s.pid, "VmRSS");
	assert_true(fds0 > 0 && rss0 > 0);

	/* a short frame, then EOF */
	fd = raw_connect(s.port);
	n = gmfp_wire_encode_hello(frame, sizeof(frame), 0, GMFP_WIRE_CH_DEMAND, 2, layout2);
	raw_send(fd, frame, 7);
	close(fd);
	assert_int_equal(srv_stats_wait(&s, stats, "errors", "reset", 1, false), 1);

	/* a short frame, then silence: dropped after the I/O timeout */
	fd = raw_connect(s.port);
	raw_send(fd, frame, (size_t)n - 5);
	assert_true(raw_closed(fd, 5000));
	close(fd);

	/* not the protocol at all */
	fd = raw_connect(s.port);
	raw_send(fd, garbage, sizeof(garbage) - 1);
	assert_true(raw_closed(fd, 5000));
	close(fd);

	/* a header announcing 4 GiB */
	fd = raw_connect(s.port);
	put_hdr(frame, GMFP_WIRE_VERSION, GMFP_WIRE_HELLO, 0xffffffffu, 0);
	raw_send(fd, frame, GMFP_WIRE_HDR_SIZE);
	assert_true(raw_closed(fd, 5000));
	close(fd);

	/* a DATA-sized frame from a client: more than the server ever takes */
	fd = raw_connect(s.port);
	raw_hello(fd, buf, &len, GMFP_WIRE_CH_DEMAND);
	put_hdr(frame, GMFP_WIRE_VERSION, GMFP_WIRE_DATA, 64 << 10, 1);
	raw_send(fd, frame, GMFP_WIRE_HDR_SIZE);
	assert_true(raw_closed(fd, 5000));
	close(fd);

	/* another version: told so, then closed */
	fd = raw_connect(s.port);
	len = 0;
	n = gmfp_wire_encode_hello(frame, sizeof(frame), 0, GMFP_WIRE_CH_DEMAND, 0, NULL);
	frame[4] = GMFP_WIRE_VERSION + 1;
	raw_send(fd, frame, (size_t)n);
	assert_int_equal(raw_read(fd, buf, &len, &m, 5000), GMFP_WIRE_ERROR);
	assert_int_equal(m.u.error.err, EPROTONOSUPPORT);
	assert_true(raw_closed(fd, 5000));
	close(fd);

	/* bogus requests: answered with ERROR, the connection goes on */
	fd = raw_connect(s.port);
	len = 0;
	raw_hello(fd, buf, &len, GMFP_WIRE_CH_BACKGROUND);
	{
		static const struct { uint32_t region; uint64_t pgoff; uint32_t n; } req[] = {
			{ 2, 0, 1 },			/* no such region */
			{ 0, NP0, 1 },			/* past the end */
			{ 1, NP1 - 1, 2 },		/* across the end */
			{ 0, UINT64_MAX - 1, 4 },	/* wraps around */
			{ 0xffffffffu, 0, 1 },
		};

		for (i = 0; i < (int)GMFP_ARRAY_SIZE(req); i++) {
			n = gmfp_wire_encode_req(frame, sizeof(frame), 10 + i, req[i].region,
						 req[i].pgoff, req[i].n);
			raw_send(fd, frame, (size_t)n);
			assert_int_equal(raw_read(fd, buf, &len, &m, 5000), GMFP_WIRE_ERROR);
			assert_int_equal(m.seq, 10 + i);
			assert_int_equal(m.u.error.err, EINVAL);
		}
	}
	n = gmfp_wire_encode_req(frame, sizeof(frame), 20, 1, 90, 8);
	raw_send(fd, frame, (size_t)n);
	assert_int_equal(raw_read(fd, buf, &len, &m, 5000), GMFP_WIRE_DATA);
	assert_int_equal(m.seq, 20);
	assert_int_equal(m.u.data.nr_data, 5);	/* 90..97: 94, 96 and 97 are zero */
	/* npages 0 is no request at all: malformed, closed */
	n = gmfp_wire_encode_req(frame, sizeof(frame), 21, 0, 0, 1);
	frame[GMFP_WIRE_HDR_SIZE + 4] = 0;
	raw_send(fd, frame, (size_t)n);
	assert_true(raw_closed(fd, 5000));
	close(fd);
	good_client(s.port);

	/*
	 * A client that asks and never reads: the server's answers fill the
	 * socket buffers, its send times out and it closes; memory stays where
	 * it was, and others are served meanwhile.
	 */
	fd = raw_connect(s.port);
	len = 0;
	raw_hello(fd, buf, &len, GMFP_WIRE_CH_DEMAND);
	for (i = 0; i < 400; i++) {
		n = gmfp_wire_encode_req(frame, sizeof(frame), 100 + i, 0, 0, GMFP_WIRE_MAX_PAGES);
		if (send(fd, frame, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) != n)
			break;	/* our send buffer is full too: enough */
	}
	good_client(s.port);
	assert_true(srv_stats_wait(&s, stats, "errors", "timeout", 2, false) >= 2);
	rss = proc_status(s.pid, "VmRSS");
	close(fd);
	printf("# server RSS %ld kB before, %ld kB after a client that never reads\n", rss0, rss);
	assert_true(rss < rss0 + 32 * 1024);

	/*
	 * A flood: 16 connections take every slot and sit idle (allowed: a
	 * client keeps idle connections); 40 more are refused at once.
	 */
	{
		int held[16], fl[40];
		struct gmfp_source *c;

		/* every earlier connection gone: the 16 get every slot */
		assert_true(settle(s.pid, fds0));

		for (i = 0; i < 16; i++) {
			held[i] = raw_connect(s.port);
			len = 0;
			raw_hello(held[i], buf, &len, GMFP_WIRE_CH_BACKGROUND);
		}
		for (i = 0; i < 40; i++)
			fl[i] = raw_connect(s.port);
		for (i = 0; i < 40; i++) {
			assert_true(raw_closed(fl[i], 5000));
			close(fl[i]);
		}
		assert_int_equal(srv_stats_wait(&s, stats, NULL, "refused", 40, true), 40);
		assert_true(proc_status(s.pid, "Threads") <= 16 + 1);
		/* a good client meanwhile: turned away with a clear error */
		c = tcp(s.port, 2, layout2, 1, 0, 2000);
		i = fetch(c, 0, 0, 1, true, true, NULL);
		assert_true(i == -EBUSY || i == -ECONNRESET);
		gmfp_source_destroy(c);
		for (i = 0; i < 16; i++)
			close(held[i]);
		assert_int_equal(srv_stats_wait(&s, stats, NULL, "active", 0, true), 0);
		good_client(s.port);
	}

	/* nothing left behind */
	assert_int_equal(srv_stats_wait(&s, stats, NULL, "active", 0, true), 0);
	assert_true(settle(s.pid, fds0));
	srv_stop(&s);
	{
		const char *js = srv_json(&s);

		assert_non_null(js);
		assert_int_equal(jget(js, "errors", "reset"), 1);
		assert_true(jget(js, "errors", "timeout") >= 2);
		assert_int_equal(jget(js, "errors", "malformed"), 3);
		assert_int_equal(jget(js, "errors", "oversized"), 1);
		assert_int_equal(jget(js, "errors", "version"), 1);
		assert_true(jget(js, NULL, "refused") >= 41);
		assert_int_equal(jget(js, "errors", "fetch"), 0);
	}
	assert_true(file_has(s.err_path, ": malformed frame (Bad message), closing"));
	assert_true(file_has(s.err_path, ": oversized frame (Message too long), closing"));
	assert_true(file_has(s.err_path, ": unsupported protocol version"));
	assert_true(file_has(s.err_path, "(--max-conns), closing"));
	assert_true(file_has(s.err_path, "timed out"));
	free(buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_usage),
		cmocka_unit_test(test_signals_stats_file),
		cmocka_unit_test(test_contents),
		cmocka_unit_test(test_gmem_fd),
		cmocka_unit_test(test_demand_first),
		cmocka_unit_test(test_kill_restart),
		cmocka_unit_test(test_hostile),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
