// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * The pager protocol and daemon on the host.
 *
 * Codec: every message type round trips (and re-encodes to the same
 * bytes), every malformed case has its errno, gmfp_pager_check_attach()
 * names the region at fault, and a mutation fuzz never gets past the
 * decoder with something that does not re-encode identically.
 *
 * Daemon: gmfp-pager's own sources are compiled into this test (under the
 * same ASan+UBSan) and run by pagerd_main() in a forked child, so that a
 * leak (LeakSanitizer at its exit) or a crash in the daemon fails the test
 * through its exit status.  There is no presence guest_memfd on the host:
 * memfd_create() fds travel instead, which the daemon checks (sizes,
 * tiling, the image) and the engine then refuses with ENOTTY, so the host
 * covers the handshake, fd passing, the errors a VMM gets, uid refusal,
 * hostile peers on raw sockets and the bounds on connections, while a
 * well-behaved peer is served throughout; the VM test (pager_vm_test)
 * serves real guest_memfds.  After each hostile round the daemon's fd count
 * is back where it was: no fd of a peer is kept.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "unit.h"
#include "gmfp_pager.h"

/* the daemon, built into this test, its engine open to a fake kernel */
#define PAGERD_TEST_KOPS
#include "../../tools/gmfp-pager/pagerd.c"
#include "../../tools/gmfp-pager/session.c"

#define T_PAGES 64
#define T_SIZE (T_PAGES * GMFP_PAGE_SIZE)

static char t_dir[64];
/* set: the daemons started get the fake kernel below (T_FAKE_KERNEL) */
static bool t_fake;
/* daemons started by the current test, killed by its teardown if it failed */
static pid_t t_pids[8];
static unsigned int t_nr_pids;
static char t_sock[128];
static char t_image[160];

/* ---- a fake kernel, shared between processes ---- */
/*
 * The engine in the daemon reaches "the kernel" through gmfp_kops; with
 * T_FAKE_KERNEL in its environment, pagerd_test_kops() installs these.  A
 * fake presence guest_memfd is a memfd (its contents) plus a file
 * fk-<inode> mapped by both processes (presence bits, a period counter per
 * page, counters); its notification fd is a datagram socket the daemon
 * binds at fk-<inode>.n, to which the test's accessors send one 48-byte
 * record per period of a page they wait for, as the kernel does.  COPY
 * writes the memfd and then sets the bit; DISCARD (RENOTIFY) clears it and
 * starts a new period, so waiting accessors ask again.
 */
#define FK_MAX_PAGES 512

struct fk_shared {
	_Atomic uint64_t present[FK_MAX_PAGES / 64];
	_Atomic uint32_t period[FK_MAX_PAGES];
	_Atomic uint64_t copied, skipped, discarded;
	uint64_t npages;
};

static pthread_mutex_t fk_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
	ino_t ino;
	struct fk_shared *sh;
} fk_maps[16];
static unsigned int fk_nr_maps;
static const char *fk_dir;

static struct fk_shared *fk_map(ino_t ino)
{
	struct fk_shared *sh = NULL;
	char path[256];
	unsigned int i;
	int fd;

	pthread_mutex_lock(&fk_lock);
	for (i = 0; i < fk_nr_maps; i++)
		if (fk_maps[i].ino == ino)
			sh = fk_maps[i].sh;
	if (!sh && fk_nr_maps < 16) {
		snprintf(path, sizeof(path), "%s/fk-%lu", fk_dir, (unsigned long)ino);
		fd = open(path, O_RDWR | O_CLOEXEC);
		if (fd >= 0) {
			sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
			close(fd);
			if (sh == MAP_FAILED) {
				sh = NULL;
			} else {
				fk_maps[fk_nr_maps].ino = ino;
				fk_maps[fk_nr_maps++].sh = sh;
			}
		}
	}
	pthread_mutex_unlock(&fk_lock);
	return sh;
}

static struct fk_shared *fk_of(int gmem)
{
	struct stat st;

	return fstat(gmem, &st) ? NULL : fk_map(st.st_ino);
}

static bool fk_present(struct fk_shared *sh, uint64_t pg)
{
	return atomic_load(&sh->present[pg / 64]) & (1ull << (pg % 64));
}

static int fk_notify_open(void *ctx, int gmem, unsigned int flags)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	struct stat st;
	int fd;

	(void)ctx;
	(void)flags;
	if (fstat(gmem, &st) || !fk_map(st.st_ino))
		return -ENOTTY;
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	snprintf(a.sun_path, sizeof(a.sun_path), "%s/fk-%lu.n", fk_dir, (unsigned long)st.st_ino);
	unlink(a.sun_path);
	if (bind(fd, (struct sockaddr *)&a, sizeof(a))) {
		close(fd);
		return -errno;
	}
	return fd;
}

static ssize_t fk_notify_read(void *ctx, int nfd, struct gmfp_event *ev, size_t max)
{
	size_t n = 0;

	(void)ctx;
	while (n < max && recv(nfd, &ev[n], sizeof(*ev), MSG_DONTWAIT) == sizeof(*ev))
		n++;
	return n ? (ssize_t)n : -EAGAIN;
}

static int fk_bitmap(void *ctx, int gmem, uint64_t off, uint64_t len, uint64_t *bm)
{
	struct fk_shared *sh = fk_of(gmem);
	uint64_t i, n = len / GMFP_PAGE_SIZE;

	(void)ctx;
	if (!sh)
		return -ENOTTY;
	memset(bm, 0, (n + 63) / 64 * 8);
	for (i = 0; i < n; i++)
		if (fk_present(sh, off / GMFP_PAGE_SIZE + i))
			bm[i / 64] |= 1ull << (i % 64);
	return 0;
}

static int fk_mark(void *ctx, int gmem, uint64_t off, uint64_t len)
{
	struct fk_shared *sh = fk_of(gmem);
	uint64_t pg;

	(void)ctx;
	for (pg = off / GMFP_PAGE_SIZE; pg < (off + len) / GMFP_PAGE_SIZE; pg++)
		atomic_fetch_or(&sh->present[pg / 64], 1ull << (pg % 64));
	return 0;
}

static int64_t fk_copy(void *ctx, int gmem, uint64_t off, const void *src, uint64_t len,
		       unsigned int flags, uint64_t *done)
{
	struct fk_shared *sh = fk_of(gmem);
	uint64_t i, skipped = 0;

	(void)ctx;
	for (i = 0; i < len / GMFP_PAGE_SIZE; i++) {
		uint64_t pg = off / GMFP_PAGE_SIZE + i;

		if (fk_present(sh, pg)) {
			if (!(flags & GMFP_COPY_SKIP_PRESENT)) {
				*done = i * GMFP_PAGE_SIZE;
				return -EEXIST;
			}
			skipped++;
			atomic_fetch_add(&sh->skipped, 1);
			continue;
		}
		/* contents first, then presence: what an accessor sees is whole */
		if (pwrite(gmem, (const char *)src + i * GMFP_PAGE_SIZE, GMFP_PAGE_SIZE,
			   (off_t)(pg * GMFP_PAGE_SIZE)) != GMFP_PAGE_SIZE) {
			*done = i * GMFP_PAGE_SIZE;
			return -EIO;
		}
		atomic_fetch_or(&sh->present[pg / 64], 1ull << (pg % 64));
		atomic_fetch_add(&sh->copied, 1);
	}
	*done = len;
	return (int64_t)skipped;
}

static int fk_discard(void *ctx, int gmem, uint64_t off, uint64_t len)
{
	struct fk_shared *sh = fk_of(gmem);
	uint64_t pg;

	(void)ctx;
	for (pg = off / GMFP_PAGE_SIZE; pg < (off + len) / GMFP_PAGE_SIZE; pg++) {
		atomic_fetch_and(&sh->present[pg / 64], ~(1ull << (pg % 64)));
		atomic_fetch_add(&sh->period[pg], 1);
		atomic_fetch_add(&sh->discarded, 1);
	}
	return 0;
}

static int fk_finish(void *ctx, int gmem)
{
	(void)ctx;
	(void)gmem;
	return 0;
}

static int fk_stats(void *ctx, int gmem, struct gmfp_gmem_stats *st)
{
	struct fk_shared *sh = fk_of(gmem);
	uint64_t pg;

	(void)ctx;
	memset(st, 0, sizeof(*st));
	st->nr_pages = sh->npages;
	for (pg = 0; pg < sh->npages; pg++)
		st->nr_present += fk_present(sh, pg);
	return 0;
}

static const struct gmfp_kops fk_ops = {
	.notify_open = fk_notify_open,
	.notify_read = fk_notify_read,
	.bitmap = fk_bitmap,
	.mark = fk_mark,
	.copy = fk_copy,
	.finish = fk_finish,
	.discard = fk_discard,
	.stats = fk_stats,
};

void pagerd_test_kops(struct gmfp_engine *e)
{
	fk_dir = getenv("T_FAKE_KERNEL");
	if (fk_dir)
		gmfp_engine_set_kops(e, &fk_ops, NULL);
}

/* ---- helpers ---- */

static uint64_t t_ms(void)
{
	return gmfp_now_ns() / 1000000;
}

static void t_sleep_ms(unsigned int ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000 };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

static int t_memfd(uint64_t size)
{
	int fd = memfd_create("t-gmem", MFD_CLOEXEC);

	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)size), 0);
	return fd;
}

/* Run the daemon (pagerd_main) in a child with @args after --socket and -q. */
static pid_t t_spawn(const char *const *args, bool quiet, int *out_fd, bool with_socket)
{
	const char *argv[40];
	int pfd[2] = { -1, -1 }, argc = 0;
	pid_t pid;

	argv[argc++] = "/proc/self/exe";
	argv[argc++] = "--pagerd";
	if (with_socket) {
		argv[argc++] = "--socket";
		argv[argc++] = t_sock;
	}
	if (quiet)
		argv[argc++] = "--quiet";
	for (; args && *args; args++)
		argv[argc++] = *args;
	argv[argc] = NULL;
	if (out_fd)
		assert_int_equal(pipe2(pfd, O_CLOEXEC), 0);
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	assert_true(pid >= 0);
	if (!pid) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (out_fd) {
			dup2(pfd[1], 1);
			dup2(pfd[1], 2);
		}
		/*
		 * A fresh image of this program runs the daemon (main() sees
		 * --pagerd): LeakSanitizer at its exit then judges the daemon
		 * alone, not what this test process had allocated.
		 */
		if (t_fake)
			setenv("T_FAKE_KERNEL", t_dir, 1);
		execv(argv[0], (char **)argv);
		_exit(127);
	}
	if (out_fd) {
		close(pfd[1]);
		*out_fd = pfd[0];
	}
	if (t_nr_pids < 8)
		t_pids[t_nr_pids++] = pid;
	return pid;
}

/* Exit status of @pid within @ms, -1 if killed by a signal or still running. */
static int t_wait(pid_t pid, unsigned int ms)
{
	uint64_t end = t_ms() + ms;
	int st;

	for (;;) {
		pid_t r = waitpid(pid, &st, WNOHANG);

		if (r == pid)
			return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
		if (t_ms() > end) {
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			return -1;
		}
		t_sleep_ms(5);
	}
}

static pid_t t_daemon(const char *const *args)
{
	uint64_t end = t_ms() + 5000;
	pid_t pid = t_spawn(args, true, NULL, true);
	int r, st;

	/* ready once something answers on the socket (even a refusal) */
	do {
		r = gmfp_pager_status(t_sock, NULL, 0);
		if (r != -ENOENT && r != -ECONNREFUSED)
			return pid;
		assert_int_equal(waitpid(pid, &st, WNOHANG), 0);
		t_sleep_ms(5);
	} while (t_ms() < end);
	fail_msg("the daemon did not come up");
	return -1;
}

/* SIGTERM: the daemon must exit 0 (no leak, no crash). */
static void t_stop(pid_t pid)
{
	assert_int_equal(kill(pid, SIGTERM), 0);
	assert_int_equal(t_wait(pid, 10000), 0);
	assert_int_equal(access(t_sock, F_OK), -1);
}

static int t_fd_count(pid_t pid)
{
	char path[64];
	struct dirent *de;
	DIR *dir;
	int n = 0;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	dir = opendir(path);
	assert_non_null(dir);
	while ((de = readdir(dir)))
		if (de->d_name[0] != '.')
			n++;
	closedir(dir);
	return n;
}

/*
 * The daemon's fds when idle: sessions end asynchronously (the one that
 * checked it was up may still be closing), so wait for a count that holds.
 */
static int t_idle_fds(pid_t pid)
{
	int n = t_fd_count(pid), same = 0, k;

	while (same < 5) {
		t_sleep_ms(20);
		k = t_fd_count(pid);
		same = k == n ? same + 1 : 0;
		n = k;
	}
	return n;
}

/* The daemon's sessions end asynchronously: wait until its fds are @want. */
static void t_fds_back_to(pid_t pid, int want)
{
	uint64_t end = t_ms() + 5000;
	int n;

	while ((n = t_fd_count(pid)) != want && t_ms() < end)
		t_sleep_ms(10);
	assert_int_equal(n, want);
}

/* A u64 member "key": in @json after @after (if not NULL). */
static uint64_t t_json_u64(const char *json, const char *after, const char *key)
{
	char pat[64];
	const char *p = after ? strstr(json, after) : json;

	assert_non_null(p);
	snprintf(pat, sizeof(pat), "\"%s\":", key);
	p = strstr(p, pat);
	if (!p)
		fail_msg("no %s in %s", key, json);
	return strtoull(p + strlen(pat), NULL, 10);
}

static uint64_t t_counter(const char *key)
{
	char json[GMFP_PAGER_MAX_JSON];

	assert_true(gmfp_pager_status(t_sock, json, sizeof(json)) > 0);
	return t_json_u64(json, "\"pager\":", key);
}

static int t_connect(void)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	strcpy(a.sun_path, t_sock);
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	return fd;
}

/* Send one packet with @nfds fds; returns sendmsg()'s result or -errno. */
static ssize_t t_send(int fd, const void *buf, size_t len, const int *fds, unsigned int nfds)
{
	assert_true(nfds <= GMFP_SOCK_MAX_FDS);
	return gmfp_sock_send_fds(fd, buf, len, fds, nfds, MSG_NOSIGNAL);
}

/*
 * The next packet from the daemon, within 5 s, decoded into @m: its type,
 * 0 at end of file.
 */
static int t_recv(int fd, struct gmfp_pager_msg *m, uint8_t *buf)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	ssize_t n;

	assert_int_equal(poll(&p, 1, 5000), 1);
	n = recv(fd, buf, GMFP_PAGER_MAX_MSG, 0);
	/* a peer that closed with our request unread: reported before its answer */
	if (n < 0 && errno == ECONNRESET)
		n = recv(fd, buf, GMFP_PAGER_MAX_MSG, MSG_DONTWAIT);
	if (n < 0 && (errno == ECONNRESET || errno == EAGAIN))
		return 0;
	assert_true(n >= 0);
	if (!n)
		return 0;
	assert_int_equal(gmfp_pager_decode(buf, (size_t)n, m), n);
	return m->type;
}

/* A hostile packet: the daemon answers with ERROR @err, then closes. */
static void t_expect_error(int fd, int err, const char *text)
{
	uint8_t *buf = malloc(GMFP_PAGER_MAX_MSG);
	struct gmfp_pager_msg m;

	assert_non_null(buf);
	assert_int_equal(t_recv(fd, &m, buf), GMFP_PAGER_ERROR);
	if (m.u.error.err != err)
		fail_msg("error %d (%s), expected %d", m.u.error.err, m.u.error.msg, err);
	if (text && !strstr(m.u.error.msg, text))
		fail_msg("error message \"%s\" lacks \"%s\"", m.u.error.msg, text);
	assert_int_equal(t_recv(fd, &m, buf), 0);
	free(buf);
}

static void t_attach_msg(struct gmfp_pager_msg *m, uint32_t nr, uint32_t source)
{
	uint32_t i;

	memset(m, 0, sizeof(*m));
	m->type = GMFP_PAGER_ATTACH;
	m->u.attach.nr_regions = nr;
	m->u.attach.source = source;
	if (source == GMFP_PAGER_SRC_TCP)
		strcpy(m->u.attach.port, "4711");
	for (i = 0; i < nr; i++) {
		m->u.attach.regions[i].gmem_offset = 0;
		m->u.attach.regions[i].size = T_SIZE;
		m->u.attach.regions[i].gpa = (uint64_t)i * T_SIZE;
	}
}

/* ---- codec ---- */

static void t_roundtrip(const struct gmfp_pager_msg *m, size_t want)
{
	uint8_t *a = malloc(GMFP_PAGER_MAX_MSG), *b = malloc(GMFP_PAGER_MAX_MSG);
	struct gmfp_pager_msg *d = malloc(sizeof(*d));
	ssize_t n;
	size_t len;

	assert_true(a && b && d);
	n = gmfp_pager_encode(a, GMFP_PAGER_MAX_MSG, m);
	assert_int_equal(n, want);
	for (len = 0; len < want; len += want / 7 + 1)
		assert_int_equal(gmfp_pager_encode(b, len, m), -ENOSPC);
	assert_int_equal(gmfp_pager_decode(a, (size_t)n, d), n);
	assert_int_equal(d->type, m->type);
	assert_int_equal(d->version, GMFP_PAGER_VERSION);
	switch (m->type) {
	case GMFP_PAGER_ATTACH:
		assert_memory_equal(&d->u.attach, &m->u.attach, sizeof(m->u.attach));
		break;
	case GMFP_PAGER_ATTACHED:
		assert_memory_equal(&d->u.attached, &m->u.attached, sizeof(m->u.attached));
		break;
	case GMFP_PAGER_STATUS_REPLY:
		assert_int_equal(d->u.status.len, m->u.status.len);
		assert_memory_equal(d->u.status.json, m->u.status.json, m->u.status.len);
		assert_ptr_equal(d->u.status.json, (char *)a + 24);
		break;
	case GMFP_PAGER_ERROR:
		assert_int_equal(d->u.error.err, m->u.error.err);
		assert_int_equal(d->u.error.region, m->u.error.region);
		assert_string_equal(d->u.error.msg, m->u.error.msg);
		break;
	default:
		break;
	}
	/* canonical: the decoded message encodes to the same bytes */
	assert_int_equal(gmfp_pager_encode(b, GMFP_PAGER_MAX_MSG, d), n);
	assert_memory_equal(a, b, (size_t)n);
	/* every truncation of it is malformed */
	for (len = 0; len < (size_t)n; len += (size_t)n / 11 + 1)
		assert_int_equal(gmfp_pager_decode(a, len, d), -EBADMSG);
	free(a);
	free(b);
	free(d);
}

static void test_codec_roundtrip(void **state)
{
	struct gmfp_pager_msg *m = calloc(1, sizeof(*m));
	char *json = malloc(GMFP_PAGER_MAX_JSON);
	uint32_t i;

	(void)state;
	assert_true(m && json);
	/* FILE, one region */
	t_attach_msg(m, 1, GMFP_PAGER_SRC_FILE);
	m->u.attach.regions[0].file_offset = 1ull << 40;
	m->u.attach.regions[0].gpa = 0xffffffffffe00000ull;	/* ends just below 2^64 */
	m->u.attach.regions[0].size = 0x100000;
	m->u.attach.regions[0].flags = GMFP_PAGER_PRIVATE;
	m->u.attach.workers = 64;
	m->u.attach.max_batch = 256;
	m->u.attach.demand_readahead = 255;
	m->u.attach.bg_order = GMFP_PAGER_BG_AROUND_DEMAND;
	m->u.attach.flags = GMFP_PAGER_MARK_ZERO | GMFP_PAGER_FINISH;
	t_roundtrip(m, GMFP_PAGER_HDR_SIZE + GMFP_PAGER_ATTACH_FIXED + GMFP_PAGER_REGION_SIZE);
	/* TCP, the most regions, the longest host and port */
	t_attach_msg(m, GMFP_PAGER_MAX_REGIONS, GMFP_PAGER_SRC_TCP);
	memset(m->u.attach.host, 'h', GMFP_PAGER_HOST_MAX - 1);
	memset(m->u.attach.port, '9', GMFP_PAGER_PORT_MAX - 1);
	m->u.attach.tcp_timeout_ms = 0xffffffffu;
	m->u.attach.tcp_connect_timeout_ms = 1;
	for (i = 0; i < GMFP_PAGER_MAX_REGIONS; i++)
		m->u.attach.regions[i].gmem_offset = (uint64_t)i << 30;
	t_roundtrip(m, GMFP_PAGER_MAX_REQUEST);
	/* the others */
	memset(m, 0, sizeof(*m));
	m->type = GMFP_PAGER_ATTACHED;
	m->u.attached.session = 0xfffffffeu;
	m->u.attached.nr_gmems = 64;
	m->u.attached.pages_total = ~0ull;
	m->u.attached.pages_present = 1ull << 63;
	t_roundtrip(m, 48);
	memset(m, 0, sizeof(*m));
	m->type = GMFP_PAGER_STATUS;
	t_roundtrip(m, 16);
	m->type = GMFP_PAGER_DETACH;
	t_roundtrip(m, 16);
	m->type = GMFP_PAGER_DETACHED;
	t_roundtrip(m, 16);
	m->type = GMFP_PAGER_STATUS_REPLY;
	m->u.status.json = NULL;
	m->u.status.len = 0;
	t_roundtrip(m, 24);
	memset(json, '{', GMFP_PAGER_MAX_JSON);
	m->u.status.json = json;
	m->u.status.len = GMFP_PAGER_MAX_JSON;
	t_roundtrip(m, GMFP_PAGER_MAX_MSG);
	memset(m, 0, sizeof(*m));
	m->type = GMFP_PAGER_ERROR;
	m->u.error.err = -EACCES;
	m->u.error.region = 63;
	m->u.error.version = GMFP_PAGER_VERSION;
	memset(m->u.error.msg, 'x', GMFP_PAGER_ERRMSG_MAX - 1);
	t_roundtrip(m, 160);
	m->u.error.err = -4095;
	m->u.error.region = GMFP_PAGER_NO_REGION;
	m->u.error.msg[0] = 0;
	t_roundtrip(m, 160);
	free(json);
	free(m);
}

static void test_encode_errors(void **state)
{
	struct gmfp_pager_msg *m = calloc(1, sizeof(*m));
	uint8_t buf[GMFP_PAGER_MAX_REQUEST];

	(void)state;
	assert_non_null(m);
	assert_int_equal(gmfp_pager_encode(buf, sizeof(buf), NULL), -EINVAL);
	m->type = 0;
	assert_int_equal(gmfp_pager_encode(buf, sizeof(buf), m), -EINVAL);
	m->type = 8;
	assert_int_equal(gmfp_pager_encode(buf, sizeof(buf), m), -EINVAL);
	m->type = GMFP_PAGER_STATUS;
	assert_int_equal(gmfp_pager_encode(NULL, 16, m), -EINVAL);
	assert_int_equal(gmfp_pager_encode(NULL, 0, m), -ENOSPC);
	m->type = GMFP_PAGER_ERROR;
	m->u.error.err = 0;
	assert_int_equal(gmfp_pager_encode(buf, sizeof(buf), m), -EINVAL);
	m->u.error.err = EIO;	/* positive: not an errno value here */
	assert_int_equal(gmfp_pager_encode(buf, sizeof(buf), m), -EINVAL);
	m->u.error.err = -4096;
	assert_int_equal(gmfp_pager_encode(buf, sizeof(buf), m), -EINVAL);
	m->u.error.err = -EIO;
	memset(m->u.error.msg, 'x', sizeof(m->u.error.msg));
	assert_int_equal(gmfp_pager_encode(buf, sizeof(buf), m), -EINVAL);
	memset(m, 0, sizeof(*m));
	m->type = GMFP_PAGER_STATUS_REPLY;
	m->u.status.len = 1;
	assert_int_equal(gmfp_pager_encode(buf, sizeof(buf), m), -EINVAL);
	m->u.status.json = "x";
	m->u.status.len = GMFP_PAGER_MAX_JSON + 1;
	assert_int_equal(gmfp_pager_encode(buf, sizeof(buf), m), -EINVAL);
	/* an ATTACH the checks refuse is not encoded */
	t_attach_msg(m, 1, GMFP_PAGER_SRC_FILE);
	m->u.attach.regions[0].size = 100;
	assert_int_equal(gmfp_pager_encode(buf, sizeof(buf), m), -EINVAL);
	free(m);
}

/* Encode @m, let @mutate patch the bytes, expect @err from the decoder. */
static void t_bad(const struct gmfp_pager_msg *m, size_t off, const void *bytes, size_t n,
		  ssize_t err)
{
	uint8_t buf[GMFP_PAGER_MAX_REQUEST + 64];
	struct gmfp_pager_msg *d = malloc(sizeof(*d));
	ssize_t len = gmfp_pager_encode(buf, sizeof(buf), m);

	assert_non_null(d);
	assert_true(len > 0);
	assert_true(off + n <= (size_t)len);
	memcpy(buf + off, bytes, n);
	if (gmfp_pager_decode(buf, (size_t)len, d) != err)
		fail_msg("patch at %zu: %zd, expected %zd", off,
			 gmfp_pager_decode(buf, (size_t)len, d), err);
	free(d);
}

static void t_bad32(const struct gmfp_pager_msg *m, size_t off, uint32_t v, ssize_t err)
{
	uint8_t b[4] = { (uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24) };

	t_bad(m, off, b, 4, err);
}

static void test_decode_malformed(void **state)
{
	struct gmfp_pager_msg *m = calloc(1, sizeof(*m)), *d = calloc(1, sizeof(*d));
	const size_t H = GMFP_PAGER_HDR_SIZE, R = H + GMFP_PAGER_ATTACH_FIXED;
	uint8_t big[GMFP_PAGER_MAX_MSG + 1], one = 1, x = 'x';
	uint8_t buf[GMFP_PAGER_MAX_REQUEST];
	ssize_t n;

	(void)state;
	assert_true(m && d);
	memset(big, 0, sizeof(big));
	/* NULL and sizes */
	assert_int_equal(gmfp_pager_decode(big, 16, NULL), -EINVAL);
	assert_int_equal(gmfp_pager_decode(NULL, 16, d), -EINVAL);
	assert_int_equal(gmfp_pager_decode(big, 0, d), -EBADMSG);
	assert_int_equal(gmfp_pager_decode(big, 15, d), -EBADMSG);
	assert_int_equal(gmfp_pager_decode(big, sizeof(big), d), -EMSGSIZE);

	/* header */
	m->type = GMFP_PAGER_STATUS;
	t_bad32(m, 0, 0x47504d48, -EBADMSG);		/* magic */
	t_bad(m, 4, "\x02\x00", 2, -EPROTONOSUPPORT);	/* version */
	t_bad(m, 4, "\x00\x00", 2, -EPROTONOSUPPORT);
	n = gmfp_pager_encode(buf, sizeof(buf), m);
	buf[4] = 7;
	assert_int_equal(gmfp_pager_decode(buf, (size_t)n, d), -EPROTONOSUPPORT);
	assert_int_equal(d->version, 7);
	assert_int_equal(d->type, GMFP_PAGER_STATUS);
	t_bad(m, 6, "\x00\x00", 2, -EBADMSG);		/* type 0 */
	t_bad(m, 6, "\x08\x00", 2, -EBADMSG);		/* type 8 */
	t_bad(m, 6, "\xff\xff", 2, -EBADMSG);
	t_bad32(m, 8, 17, -EBADMSG);			/* length != packet */
	t_bad32(m, 8, 15, -EBADMSG);
	t_bad32(m, 8, GMFP_PAGER_MAX_MSG + 1, -EMSGSIZE);
	t_bad32(m, 8, 0xffffffffu, -EMSGSIZE);
	t_bad32(m, 12, 1, -EBADMSG);			/* flags */
	t_bad32(m, 12, 0x80000000u, -EBADMSG);
	/* empty bodies: STATUS, DETACH, DETACHED with a byte more */
	for (m->type = GMFP_PAGER_STATUS; m->type <= GMFP_PAGER_DETACHED; m->type++) {
		if (m->type == GMFP_PAGER_STATUS_REPLY)
			continue;
		n = gmfp_pager_encode(buf, sizeof(buf), m);
		buf[8] = 17;
		assert_int_equal(gmfp_pager_decode(buf, 17, d), -EBADMSG);
	}
	/* a server message sent as a request is still well formed: the daemon decides */
	memset(m, 0, sizeof(*m));
	m->type = GMFP_PAGER_ATTACHED;
	t_bad(m, H + 24, &one, 1, -EBADMSG);		/* reserved */
	n = gmfp_pager_encode(buf, sizeof(buf), m);
	buf[8] = 40;
	assert_int_equal(gmfp_pager_decode(buf, 40, d), -EBADMSG);

	/* STATUS_REPLY */
	m->type = GMFP_PAGER_STATUS_REPLY;
	m->u.status.json = "{}";
	m->u.status.len = 2;
	t_bad32(m, H, 3, -EBADMSG);			/* json_len != body */
	t_bad32(m, H, 1, -EBADMSG);
	t_bad32(m, H, GMFP_PAGER_MAX_JSON + 1, -EBADMSG);
	t_bad32(m, H + 4, 1, -EBADMSG);			/* reserved */

	/* ERROR */
	memset(m, 0, sizeof(*m));
	m->type = GMFP_PAGER_ERROR;
	m->u.error.err = -EIO;
	strcpy(m->u.error.msg, "no");
	t_bad32(m, H, 0, -EBADMSG);			/* err 0 */
	t_bad32(m, H, 4096, -EBADMSG);
	t_bad32(m, H, (uint32_t)-EIO, -EBADMSG);	/* negative on the wire */
	t_bad(m, H + 8, "\x00\x00", 2, -EBADMSG);	/* version 0 */
	t_bad(m, H + 10, &one, 1, -EBADMSG);		/* reserved */
	t_bad32(m, H + 12, 1, -EBADMSG);
	t_bad(m, H + 16 + 3, &x, 1, -EBADMSG);		/* junk after the NUL */
	memset(buf, 'y', sizeof(buf));
	t_bad(m, H + 16, buf, GMFP_PAGER_ERRMSG_MAX, -EBADMSG);	/* no NUL */

	/* ATTACH: structure */
	t_attach_msg(m, 2, GMFP_PAGER_SRC_FILE);
	t_bad32(m, H, 0, -EBADMSG);			/* nr_regions 0 */
	t_bad32(m, H, 3, -EBADMSG);			/* more than the body holds */
	t_bad32(m, H, 1, -EBADMSG);			/* fewer */
	t_bad32(m, H, GMFP_PAGER_MAX_REGIONS + 1, -EBADMSG);
	t_bad32(m, H, 0xffffffffu, -EBADMSG);
	t_bad32(m, H + 36, 1, -EBADMSG);		/* reserved[3] */
	t_bad32(m, H + 44, 1, -EBADMSG);
	t_bad(m, H + 48 + 5, &x, 1, -EBADMSG);		/* host: junk after the NUL */
	t_bad(m, H + 48 + 256 + 31, &x, 1, -EBADMSG);	/* port: no NUL */
	t_bad32(m, R + 36, 1, -EBADMSG);		/* region reserved */
	t_bad32(m, R + 40 + 36, 0x100, -EBADMSG);
	n = gmfp_pager_encode(buf, sizeof(buf), m);
	assert_int_equal(gmfp_pager_decode(buf, (size_t)n - 1, d), -EBADMSG);
	/* ATTACH: values (the message is decoded all the same) */
	t_bad32(m, H + 4, 3, -EINVAL);			/* source */
	t_bad32(m, H + 4, 0, -EINVAL);
	t_bad32(m, H + 8, 65, -EINVAL);			/* workers */
	t_bad32(m, H + 12, 257, -EINVAL);		/* max_batch */
	t_bad32(m, H + 16, 256, -EINVAL);		/* demand_readahead */
	t_bad32(m, H + 20, 3, -EINVAL);			/* bg_order */
	t_bad32(m, H + 24, 4, -EINVAL);			/* flags */
	t_bad32(m, H + 28, 1, -EINVAL);			/* TCP timeout with FILE */
	t_bad(m, H + 48, "a", 1, -EINVAL);		/* host with FILE */
	t_bad(m, H + 48 + 256, "1", 1, -EINVAL);	/* port with FILE */
	t_bad32(m, R, 1, -EINVAL);			/* gmem_offset not aligned */
	t_bad32(m, R + 8, 4095, -EINVAL);		/* size */
	t_bad32(m, R + 16, 0x800, -EINVAL);		/* gpa */
	t_bad32(m, R + 24, 0x10, -EINVAL);		/* file_offset */
	t_bad32(m, R + 32, 2, -EINVAL);			/* region flags */
	t_bad(m, R + 8, "\0\0\0\0\0\0\0\0", 8, -EINVAL);	/* size 0 */
	t_bad(m, R, "\0\xf0\xff\xff\xff\xff\xff\xff", 8, -EINVAL);	/* wraps */
	t_bad(m, R + 40 + 16, "\0\0\0\0\0\0\0\0", 8, -EINVAL);	/* gpa overlap */
	n = gmfp_pager_encode(buf, sizeof(buf), m);
	buf[R] = 1;
	assert_int_equal(gmfp_pager_decode(buf, (size_t)n, d), -EINVAL);
	assert_int_equal(d->type, GMFP_PAGER_ATTACH);
	assert_int_equal(d->u.attach.regions[0].gmem_offset, 1);
	t_attach_msg(m, 1, GMFP_PAGER_SRC_TCP);
	t_bad(m, H + 48 + 256, "\0\0\0\0", 4, -EINVAL);	/* no port */
	t_bad(m, H + 48, " ", 1, -EINVAL);		/* host with a space */
	t_bad(m, H + 48, "\x7f", 1, -EINVAL);
	t_bad(m, H + 48 + 256, "\n", 1, -EINVAL);
	t_bad32(m, R + 24, 0x1000, -EINVAL);		/* file_offset with TCP */
	free(m);
	free(d);
}

static void t_check(struct gmfp_pager_attach_msg *a, uint32_t want_region, const char *text)
{
	uint32_t region = 12345;
	const char *why = "unset";

	assert_int_equal(gmfp_pager_check_attach(a, &region, &why), -EINVAL);
	assert_int_equal(region, want_region);
	assert_non_null(why);
	if (!strstr(why, text))
		fail_msg("\"%s\" lacks \"%s\"", why, text);
}

static void test_check_attach(void **state)
{
	struct gmfp_pager_msg *m = calloc(1, sizeof(*m));
	struct gmfp_pager_attach_msg *a = &m->u.attach;
	uint32_t region = 7;
	const char *why = "unset";

	(void)state;
	assert_non_null(m);
	t_attach_msg(m, 3, GMFP_PAGER_SRC_FILE);
	assert_int_equal(gmfp_pager_check_attach(a, &region, &why), 0);
	assert_int_equal(region, GMFP_PAGER_NO_REGION);
	assert_null(why);
	assert_int_equal(gmfp_pager_check_attach(a, NULL, NULL), 0);
	assert_int_equal(gmfp_pager_check_attach(NULL, NULL, NULL), -EINVAL);
	a->regions[2].gpa = a->regions[1].gpa + GMFP_PAGE_SIZE;
	t_check(a, 2, "overlaps");
	a->regions[2].gpa = 1ull << 40;
	a->regions[1].size = 0;
	t_check(a, 1, "size 0");
	a->regions[1].size = T_SIZE;
	a->regions[0].file_offset = 512;
	t_check(a, 0, "aligned");
	a->regions[0].file_offset = ~0ull & ~4095ull;
	t_check(a, 0, "wraps");
	a->regions[0].file_offset = 0;
	a->regions[2].flags = 4;
	t_check(a, 2, "flags");
	a->regions[2].flags = 0;
	a->nr_regions = 65;
	t_check(a, GMFP_PAGER_NO_REGION, "1..64");
	a->nr_regions = 3;
	a->workers = 100;
	t_check(a, GMFP_PAGER_NO_REGION, "workers");
	a->workers = 0;
	a->tcp_timeout_ms = 5;
	t_check(a, GMFP_PAGER_NO_REGION, "file source");
	a->tcp_timeout_ms = 0;
	a->source = GMFP_PAGER_SRC_TCP;
	t_check(a, GMFP_PAGER_NO_REGION, "port");
	strcpy(a->port, "80");
	assert_int_equal(gmfp_pager_check_attach(a, NULL, NULL), 0);
	memset(a->host, 'a', sizeof(a->host));
	t_check(a, GMFP_PAGER_NO_REGION, "too long");
	free(m);
}

static uint64_t t_xs;

static uint64_t t_rand(void)
{
	t_xs ^= t_xs << 13;
	t_xs ^= t_xs >> 7;
	t_xs ^= t_xs << 17;
	return t_xs;
}

/* Mutations of valid messages: decoded only if they re-encode identically. */
static void test_decode_fuzz(void **state)
{
	struct gmfp_pager_msg *seeds = calloc(5, sizeof(*seeds)), *d = malloc(sizeof(*d));
	uint8_t orig[GMFP_PAGER_MAX_REQUEST], buf[GMFP_PAGER_MAX_REQUEST], re[GMFP_PAGER_MAX_REQUEST];
	unsigned int i, k, ok = 0;

	(void)state;
	assert_true(seeds && d);
	t_xs = 0x9e3779b97f4a7c15ull;
	t_attach_msg(&seeds[0], 3, GMFP_PAGER_SRC_FILE);
	t_attach_msg(&seeds[1], 2, GMFP_PAGER_SRC_TCP);
	seeds[2].type = GMFP_PAGER_ERROR;
	seeds[2].u.error.err = -EINVAL;
	strcpy(seeds[2].u.error.msg, "bad");
	seeds[3].type = GMFP_PAGER_ATTACHED;
	seeds[4].type = GMFP_PAGER_STATUS_REPLY;
	seeds[4].u.status.json = "{\"a\":1}";
	seeds[4].u.status.len = 7;
	for (i = 0; i < 40000; i++) {
		ssize_t n = gmfp_pager_encode(orig, sizeof(orig), &seeds[i % 5]), r, len;
		unsigned int flips = 1 + (unsigned int)(t_rand() % 4);

		assert_true(n > 0);
		memcpy(buf, orig, (size_t)n);
		len = n;
		for (k = 0; k < flips; k++) {
			uint64_t x = t_rand();

			switch (x % 4) {
			case 0:	/* a byte */
				buf[(x >> 8) % (uint64_t)len] = (uint8_t)(x >> 32);
				break;
			case 1:	/* a bit */
				buf[(x >> 8) % (uint64_t)len] ^= (uint8_t)(1u << ((x >> 40) % 8));
				break;
			case 2:	/* shorter */
				len = (ssize_t)((x >> 8) % (uint64_t)len);
				break;
			default:	/* a small integer somewhere */
				buf[(x >> 8) % (uint64_t)len] = (uint8_t)((x >> 32) % 3);
				break;
			}
			if (!len)
				break;
		}
		r = gmfp_pager_decode(buf, (size_t)len, d);
		if (r < 0) {
			assert_true(r == -EBADMSG || r == -EINVAL || r == -EMSGSIZE ||
				    r == -EPROTONOSUPPORT);
			continue;
		}
		assert_int_equal(r, len);
		assert_int_equal(gmfp_pager_encode(re, sizeof(re), d), len);
		assert_memory_equal(re, buf, (size_t)len);
		ok++;
	}
	/* some mutations are valid messages (a changed value): they did re-encode */
	assert_true(ok > 0);
	free(seeds);
	free(d);
}

/* ---- client arguments, no daemon needed ---- */

static void test_client_args(void **state)
{
	struct gmfp_pager_region r = { .size = T_SIZE };
	char why[GMFP_PAGER_ERRMSG_MAX], longpath[200];
	struct {
		struct gmfp_pager_attach_opts o;
		uint64_t future;
	} big;
	int sock = 12345, gmem = t_memfd(T_SIZE);
	GMFP_OPTS_INIT(struct gmfp_pager_attach_opts, o);

	(void)state;
	r.gmem = gmem;
	o.regions = &r;
	o.nr_regions = 1;
	o.source = GMFP_PAGER_SRC_FILE;
	o.file_path = t_image;
	o.errmsg = why;
	o.errmsg_len = sizeof(why);
	assert_int_equal(gmfp_pager_attach(NULL, t_sock, &o), -EINVAL);
	assert_int_equal(gmfp_pager_attach(&sock, t_sock, NULL), -EINVAL);
	assert_int_equal(sock, -1);
	/* no daemon yet */
	assert_int_equal(gmfp_pager_attach(&sock, t_sock, &o), -ENOENT);
	assert_int_equal(gmfp_pager_attach(&sock, NULL, &o), -EINVAL);
	assert_int_equal(gmfp_pager_attach(&sock, "", &o), -EINVAL);
	memset(longpath, 'p', sizeof(longpath) - 1);
	longpath[sizeof(longpath) - 1] = 0;
	assert_int_equal(gmfp_pager_attach(&sock, longpath, &o), -ENAMETOOLONG);
	assert_int_equal(gmfp_pager_status(t_sock, why, sizeof(why)), -ENOENT);
	assert_int_equal(gmfp_pager_status(t_sock, NULL, 5), -EINVAL);
	assert_int_equal(gmfp_pager_session_status(-1, why, sizeof(why)), -EBADF);
	assert_int_equal(gmfp_pager_detach(-1), -EBADF);
	/* refused before anything is sent, with a reason */
	o.nr_regions = 0;
	assert_int_equal(gmfp_pager_attach(&sock, t_sock, &o), -EINVAL);
	assert_non_null(strstr(why, "regions"));
	o.nr_regions = 1;
	r.size = 100;
	assert_int_equal(gmfp_pager_attach(&sock, t_sock, &o), -EINVAL);
	assert_non_null(strstr(why, "aligned"));
	r.size = T_SIZE;
	r.gmem = -1;
	assert_int_equal(gmfp_pager_attach(&sock, t_sock, &o), -EBADF);
	r.gmem = 1000;	/* not open */
	assert_int_equal(gmfp_pager_attach(&sock, t_sock, &o), -EBADF);
	r.gmem = gmem;
	o.file_path = "/nonexistent/image";
	assert_int_equal(gmfp_pager_attach(&sock, t_sock, &o), -ENOENT);
	o.file_path = NULL;
	o.file_fd = -1;
	assert_int_equal(gmfp_pager_attach(&sock, t_sock, &o), -EBADF);
	o.file_fd = 0;
	o.source = GMFP_PAGER_SRC_TCP;
	assert_int_equal(gmfp_pager_attach(&sock, t_sock, &o), -EINVAL);
	assert_non_null(strstr(why, "port"));
	o.tcp_port = "1";
	o.tcp_host = "has space";
	assert_int_equal(gmfp_pager_attach(&sock, t_sock, &o), -EINVAL);
	o.source = 9;
	assert_int_equal(gmfp_pager_attach(&sock, t_sock, &o), -EINVAL);
	/* options from a newer header: zero tail fine, anything else E2BIG */
	memset(&big, 0, sizeof(big));
	big.o = o;
	big.o.sz = sizeof(big);
	big.o.source = GMFP_PAGER_SRC_FILE;
	big.o.file_path = t_image;
	assert_int_equal(gmfp_pager_attach(&sock, t_sock, &big.o), -ENOENT);
	big.future = 1;
	assert_int_equal(gmfp_pager_attach(&sock, t_sock, &big.o), -E2BIG);
	assert_int_equal(sock, -1);
	close(gmem);
}

/* ---- the command line ---- */

static int t_run(const char *const *args, bool with_socket, char *out, size_t len)
{
	int fd, st;
	pid_t pid = t_spawn(args, false, &fd, with_socket);
	size_t n = 0;
	ssize_t k;

	while (n + 1 < len && (k = read(fd, out + n, len - 1 - n)) > 0)
		n += (size_t)k;
	out[n] = 0;
	close(fd);
	st = t_wait(pid, 10000);
	return st;
}

static void test_cli(void **state)
{
	char out[8192];
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	pid_t pid;
	int fd;

	(void)state;
	assert_int_equal(t_run((const char *[]){ "--help", NULL }, false, out, sizeof(out)), 0);
	assert_non_null(strstr(out, "Usage: gmfp-pager"));
	assert_non_null(strstr(out, "--allow-uid"));
	assert_non_null(strstr(out, "Exit status"));
	assert_int_equal(t_run((const char *[]){ "-V", NULL }, false, out, sizeof(out)), 0);
	assert_non_null(strstr(out, "protocol version 1"));
	assert_int_equal(t_run(NULL, false, out, sizeof(out)), PAGERD_EXIT_USAGE);
	assert_non_null(strstr(out, "--socket PATH is required"));
	assert_int_equal(t_run((const char *[]){ "--bogus", NULL }, true, out, sizeof(out)),
			 PAGERD_EXIT_USAGE);
	assert_int_equal(t_run((const char *[]){ "extra", NULL }, true, out, sizeof(out)),
			 PAGERD_EXIT_USAGE);
	assert_int_equal(t_run((const char *[]){ "--max-sessions", "0", NULL }, true, out,
			       sizeof(out)), PAGERD_EXIT_USAGE);
	assert_int_equal(t_run((const char *[]){ "--max-sessions", "12x", NULL }, true, out,
			       sizeof(out)), PAGERD_EXIT_USAGE);
	assert_int_equal(t_run((const char *[]){ "--allow-uid", "-1", NULL }, true, out,
			       sizeof(out)), PAGERD_EXIT_USAGE);
	assert_int_equal(t_run((const char *[]){ "--timeout-ms", "1", NULL }, true, out,
			       sizeof(out)), PAGERD_EXIT_USAGE);
	assert_int_equal(t_run((const char *[]){ "--workers", "8", "--max-workers", "4", NULL },
			       true, out, sizeof(out)), PAGERD_EXIT_USAGE);
	/* a path that is not a socket is left alone */
	fd = open(t_sock, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(t_run(NULL, true, out, sizeof(out)), PAGERD_EXIT_INUSE);
	assert_non_null(strstr(out, "not a socket"));
	assert_int_equal(access(t_sock, F_OK), 0);
	unlink(t_sock);
	/* a stale socket (its pager died) is replaced */
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	strcpy(a.sun_path, t_sock);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	close(fd);
	pid = t_daemon(NULL);
	/* a live one is not: exit 3 */
	assert_int_equal(t_run(NULL, true, out, sizeof(out)), PAGERD_EXIT_INUSE);
	assert_non_null(strstr(out, "another pager"));
	assert_true(gmfp_pager_status(t_sock, NULL, 0) > 0);
	t_stop(pid);
}

/* ---- the daemon ---- */

static void test_status_and_json(void **state)
{
	char json[GMFP_PAGER_MAX_JSON], out[GMFP_PAGER_MAX_JSON];
	int fd, n, i;
	pid_t pid;

	(void)state;
	pid = t_daemon(NULL);
	n = gmfp_pager_status(t_sock, json, sizeof(json));
	assert_true(n > 0 && (size_t)n < sizeof(json));
	assert_int_equal(strlen(json), n);
	assert_non_null(strstr(json, "\"pager\":{\"version\":\"0.1.0\",\"protocol\":1"));
	assert_non_null(strstr(json, "\"sessions\":["));
	assert_int_equal(t_json_u64(json, NULL, "max_sessions"), 16);
	/* cut like snprintf(), the length is the whole */
	assert_true(gmfp_pager_status(t_sock, json, 10) > 100);
	assert_int_equal(strlen(json), 9);
	assert_true(gmfp_pager_status(t_sock, NULL, 0) > 100);
	/* a connection may ask several times */
	fd = t_connect();
	for (i = 0; i < 5; i++)
		assert_true(gmfp_pager_session_status(fd, json, sizeof(json)) > 0);
	/* and its own session is listed, in the handshake */
	assert_non_null(strstr(json, "\"state\":\"handshake\""));
	/* DETACH without an attach: DETACHED, then closed */
	assert_int_equal(gmfp_pager_detach(fd), 0);
	t_stop(pid);

	/* --json: the final statistics on stdout */
	pid = t_spawn((const char *[]){ "--json", NULL }, true, &fd, true);
	for (i = 0; i < 500 && gmfp_pager_status(t_sock, NULL, 0) < 0; i++)
		t_sleep_ms(10);
	assert_true(gmfp_pager_status(t_sock, NULL, 0) > 0);
	kill(pid, SIGINT);
	n = (int)read(fd, out, sizeof(out) - 1);
	assert_true(n > 0);
	out[n] = 0;
	close(fd);
	assert_int_equal(t_wait(pid, 10000), 0);
	assert_true(out[0] == '{' && out[n - 1] == '\n');
	assert_non_null(strstr(out, "\"ended_sessions\":[]"));
	assert_true(t_json_u64(out, NULL, "connections") >= 2);
}

/* Attach @nr regions of @gmems to the daemon; returns the errno, *why filled. */
static int t_attach(const struct gmfp_pager_region *r, uint32_t nr, uint32_t source,
		    int image_fd, char *why)
{
	GMFP_OPTS_INIT(struct gmfp_pager_attach_opts, o);
	int sock = 7, e;

	o.regions = r;
	o.nr_regions = nr;
	o.source = source;
	if (source == GMFP_PAGER_SRC_FILE) {
		o.file_path = image_fd < 0 ? t_image : NULL;
		o.file_fd = image_fd;
	} else {
		o.tcp_port = "9";
	}
	o.errmsg = why;
	o.errmsg_len = GMFP_PAGER_ERRMSG_MAX;
	e = gmfp_pager_attach(&sock, t_sock, &o);
	assert_int_equal(sock, -1);
	return e;
}

static void t_attach_fails(const struct gmfp_pager_region *r, uint32_t nr, uint32_t source,
			   int image_fd, int err, const char *text)
{
	char why[GMFP_PAGER_ERRMSG_MAX];
	int e = t_attach(r, nr, source, image_fd, why);

	if (e != err)
		fail_msg("attach: %d (%s), expected %d", e, why, err);
	if (!strstr(why, text))
		fail_msg("\"%s\" lacks \"%s\"", why, text);
}

static void test_attach_checks(void **state)
{
	struct gmfp_pager_region r[4];
	int g = t_memfd(T_SIZE), g2 = t_memfd(2 * T_SIZE), base, fd, p[2];
	pid_t pid;

	(void)state;
	pid = t_daemon((const char *[]){ "--max-workers", "4", NULL });
	base = t_idle_fds(pid);
	memset(r, 0, sizeof(r));
	/* everything in order: the engine finds no presence tracking */
	r[0].gmem = g;
	r[0].size = T_SIZE;
	t_attach_fails(r, 1, GMFP_PAGER_SRC_FILE, -1, -ENOTTY, "region 0: not a guest_memfd");
	t_attach_fails(r, 1, GMFP_PAGER_SRC_TCP, -1, -ENOTTY, "presence tracking");
	/* two regions tiling one guest_memfd (the same fd twice) are one guest_memfd */
	r[0].gmem = g2;
	r[1] = r[0];
	r[1].gmem_offset = T_SIZE;
	r[1].gpa = 1ull << 32;
	r[1].file_offset = T_SIZE;	/* the image has one region's worth */
	t_attach_fails(r, 2, GMFP_PAGER_SRC_FILE, -1, -EINVAL, "region 1: image bytes");
	r[1].file_offset = 0;
	t_attach_fails(r, 2, GMFP_PAGER_SRC_FILE, -1, -ENOTTY, "region 0");
	t_attach_fails(r, 2, GMFP_PAGER_SRC_TCP, -1, -ENOTTY, "region 0");
	/* ... reversed, through a dup of the fd */
	r[0].gmem_offset = T_SIZE;
	r[1].gmem_offset = 0;
	r[1].gmem = fd = dup(g2);
	t_attach_fails(r, 2, GMFP_PAGER_SRC_TCP, -1, -ENOTTY, "region 0");
	close(fd);
	r[1].gmem = g2;
	/* a gap */
	r[0].gmem_offset = 0;
	r[1].gmem_offset = T_SIZE + GMFP_PAGE_SIZE;
	r[1].size = T_SIZE - GMFP_PAGE_SIZE;
	t_attach_fails(r, 2, GMFP_PAGER_SRC_TCP, -1, -EINVAL, "in no region");
	/* only part of it */
	t_attach_fails(r, 1, GMFP_PAGER_SRC_TCP, -1, -EINVAL, "in no region");
	/* an overlap */
	r[1].gmem_offset = T_SIZE - GMFP_PAGE_SIZE;
	r[1].size = T_SIZE + GMFP_PAGE_SIZE;
	t_attach_fails(r, 2, GMFP_PAGER_SRC_TCP, -1, -EINVAL, "overlaps region");
	/* beyond the guest_memfd */
	r[1].gmem_offset = T_SIZE;
	r[1].size = 2 * T_SIZE;
	t_attach_fails(r, 2, GMFP_PAGER_SRC_TCP, -1, -EINVAL, "region 1: bytes");
	/* private and shared views of one guest_memfd */
	r[1].size = T_SIZE;
	r[1].flags = GMFP_PAGER_PRIVATE;
	t_attach_fails(r, 2, GMFP_PAGER_SRC_TCP, -1, -EINVAL, "PRIVATE");
	r[1].flags = 0;
	/* the image: too short, write-only, a pipe */
	r[0].gmem = g;
	r[0].size = T_SIZE;
	r[0].file_offset = GMFP_PAGE_SIZE;
	t_attach_fails(r, 1, GMFP_PAGER_SRC_FILE, -1, -EINVAL, "past its end");
	r[0].file_offset = 0;
	fd = open(t_image, O_WRONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	t_attach_fails(r, 1, GMFP_PAGER_SRC_FILE, fd, -EBADF, "not open for reading");
	close(fd);
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	t_attach_fails(r, 1, GMFP_PAGER_SRC_FILE, p[0], -EBADF, "not a regular file");
	close(p[0]);
	close(p[1]);
	/* an fd that is not a guest_memfd at all: a socket has no size */
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	r[0].gmem = p[0];
	t_attach_fails(r, 1, GMFP_PAGER_SRC_TCP, -1, -EINVAL, "beyond its guest_memfd");
	close(p[0]);
	close(p[1]);
	/* more workers than --max-workers */
	{
		GMFP_OPTS_INIT(struct gmfp_pager_attach_opts, o);
		char why[GMFP_PAGER_ERRMSG_MAX];
		int sock;

		r[0].gmem = g;
		o.regions = r;
		o.nr_regions = 1;
		o.source = GMFP_PAGER_SRC_FILE;
		o.file_path = t_image;
		o.workers = 8;
		o.errmsg = why;
		o.errmsg_len = sizeof(why);
		assert_int_equal(gmfp_pager_attach(&sock, t_sock, &o), -EINVAL);
		assert_non_null(strstr(why, "allows 4"));
	}
	assert_int_equal(t_counter("attach_failed"), 16);
	assert_int_equal(t_counter("attached"), 0);
	/* the daemon kept none of the fds it was sent */
	t_fds_back_to(pid, base);
	close(g);
	close(g2);
	t_stop(pid);
}

/*
 * As uid @uid, in a child: gmfp_pager_status() (its result in *@status)
 * and gmfp_pager_attach() (returned, its errmsg in @why).
 */
static int t_status_as(uid_t uid, int *status, char *why)
{
	int p[2], r = 0;
	pid_t pid;

	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	fflush(stdout);
	pid = fork();
	assert_true(pid >= 0);
	if (!pid) {
		struct gmfp_pager_region reg = { .gmem = 0, .size = T_SIZE };
		GMFP_OPTS_INIT(struct gmfp_pager_attach_opts, o);
		char msg[GMFP_PAGER_ERRMSG_MAX] = "";
		int sock, res[2];

		if (setresgid(uid, uid, uid) || setresuid(uid, uid, uid))
			_exit(99);
		res[0] = gmfp_pager_status(t_sock, NULL, 0);
		reg.gmem = memfd_create("x", MFD_CLOEXEC);
		if (ftruncate(reg.gmem, T_SIZE))
			_exit(98);
		o.regions = &reg;
		o.nr_regions = 1;
		o.source = GMFP_PAGER_SRC_TCP;
		o.tcp_port = "1";
		o.errmsg = msg;
		o.errmsg_len = sizeof(msg);
		res[1] = gmfp_pager_attach(&sock, t_sock, &o);
		if (write(p[1], res, sizeof(res)) != sizeof(res) ||
		    write(p[1], msg, sizeof(msg)) != sizeof(msg))
			_exit(97);
		_exit(0);
	}
	close(p[1]);
	{
		int res[2];

		assert_int_equal(read(p[0], res, sizeof(res)), sizeof(res));
		assert_int_equal(read(p[0], why, GMFP_PAGER_ERRMSG_MAX), GMFP_PAGER_ERRMSG_MAX);
		*status = res[0];
		r = res[1];
	}
	close(p[0]);
	assert_int_equal(t_wait(pid, 10000), 0);
	return r;
}

static void test_refused_uid(void **state)
{
	char other[16], json[GMFP_PAGER_MAX_JSON], why[GMFP_PAGER_ERRMSG_MAX];
	struct gmfp_pager_region r = { .size = T_SIZE };
	int fd, n;
	pid_t pid;

	(void)state;
	snprintf(other, sizeof(other), "%u", (unsigned int)geteuid() + 1);
	pid = t_spawn((const char *[]){ "--allow-uid", other, "--json", NULL }, true, &fd, true);
	for (n = 0; n < 500 && gmfp_pager_status(t_sock, NULL, 0) != -EACCES; n++)
		t_sleep_ms(10);
	/* refused with a reason, nothing served */
	assert_int_equal(gmfp_pager_status(t_sock, json, sizeof(json)), -EACCES);
	r.gmem = t_memfd(T_SIZE);
	assert_int_equal(t_attach(&r, 1, GMFP_PAGER_SRC_FILE, -1, why), -EACCES);
	assert_non_null(strstr(why, "not allowed"));
	close(r.gmem);
	kill(pid, SIGTERM);
	n = (int)read(fd, json, sizeof(json) - 1);
	assert_true(n > 0);
	json[n] = 0;
	close(fd);
	assert_int_equal(t_wait(pid, 10000), 0);
	assert_int_equal(t_json_u64(json, NULL, "refused_uid"), 3);
	assert_int_equal(t_json_u64(json, NULL, "attach_failed"), 0);
	assert_int_equal(t_json_u64(json, NULL, "sessions"), 0);

	/* another user, really: refused by the socket's mode or by its uid */
	if (geteuid())
		return;
	pid = t_daemon(NULL);
	assert_int_equal(t_status_as(65534, &n, why), -EACCES);
	assert_int_equal(n, -EACCES);
	t_stop(pid);
	pid = t_daemon((const char *[]){ "--allow-uid", "0", "--allow-uid", "4242", NULL });
	assert_int_equal(t_status_as(65534, &n, why), -EACCES);
	assert_int_equal(n, -EACCES);
	assert_non_null(strstr(why, "uid 65534 is not allowed"));
	/* an allowed other user gets in */
	assert_int_equal(t_status_as(4242, &n, why), -ENOTTY);
	assert_true(n > 0);
	assert_int_equal(t_counter("refused_uid"), 2);
	t_stop(pid);
}

static void t_raw_bad(const void *buf, size_t len, const int *fds, unsigned int nfds,
		      int err, const char *text)
{
	int fd = t_connect();

	assert_int_equal(t_send(fd, buf, len, fds, nfds), (ssize_t)len);
	t_expect_error(fd, err, text);
	close(fd);
}

static void test_hostile_peers(void **state)
{
	struct gmfp_pager_msg *m = calloc(1, sizeof(*m));
	uint8_t buf[GMFP_PAGER_MAX_REQUEST + 64], *huge = calloc(1, 100000);
	int g = t_memfd(T_SIZE), img = open(t_image, O_RDONLY | O_CLOEXEC), fds[100];
	uint64_t errs;
	unsigned int i;
	ssize_t n;
	pid_t pid;
	int base, fd;

	(void)state;
	assert_true(m && huge && img >= 0);
	pid = t_daemon((const char *[]){ "--timeout-ms", "300", NULL });
	base = t_idle_fds(pid);
	/* short, garbage, oversized, wrong version, wrong length */
	t_raw_bad("GMPG\x01\x00", 6, NULL, 0, -EBADMSG, "malformed");
	for (i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)(i * 37 + 11);
	t_raw_bad(buf, 200, NULL, 0, -EBADMSG, "malformed message (200 bytes)");
	t_raw_bad(huge, 100000, NULL, 0, -EMSGSIZE, "too large");
	m->type = GMFP_PAGER_STATUS;
	n = gmfp_pager_encode(buf, sizeof(buf), m);
	buf[4] = 2;
	t_raw_bad(buf, (size_t)n, NULL, 0, -EPROTONOSUPPORT, "version 2 is not supported");
	buf[4] = 1;
	buf[8] = 40;
	memset(buf + 16, 0, 24);
	t_raw_bad(buf, 40, NULL, 0, -EBADMSG, "malformed");
	/* a message that is not a request */
	m->type = GMFP_PAGER_ERROR;
	m->u.error.err = -EIO;
	n = gmfp_pager_encode(buf, sizeof(buf), m);
	t_raw_bad(buf, (size_t)n, NULL, 0, -EBADMSG, "ERROR is not a request");
	m->type = GMFP_PAGER_DETACHED;
	n = gmfp_pager_encode(buf, sizeof(buf), m);
	t_raw_bad(buf, (size_t)n, NULL, 0, -EBADMSG, "DETACHED is not a request");
	/* fds where none belong, too many fds, too few */
	m->type = GMFP_PAGER_STATUS;
	n = gmfp_pager_encode(buf, sizeof(buf), m);
	t_raw_bad(buf, (size_t)n, &g, 1, -EBADMSG, "file descriptors sent with a STATUS");
	t_attach_msg(m, 1, GMFP_PAGER_SRC_FILE);
	n = gmfp_pager_encode(buf, sizeof(buf), m);
	for (i = 0; i < 100; i++)
		fds[i] = i % 2 ? g : img;
	t_raw_bad(buf, (size_t)n, fds, 100, -EINVAL, "more than 65 file descriptors");
	/* one too many: fits the control buffer's alignment slack, no MSG_CTRUNC */
	t_raw_bad(buf, (size_t)n, fds, GMFP_PAGER_MAX_FDS + 1, -EINVAL,
		  "more than 65 file descriptors");
	t_raw_bad(buf, (size_t)n, &g, 1, -EINVAL, "1 file descriptors sent, 2 expected");
	t_raw_bad(buf, (size_t)n, NULL, 0, -EINVAL, "0 file descriptors sent");
	fds[0] = g;
	fds[1] = img;
	/* bogus offsets: misaligned, wrapping, beyond the guest_memfd */
	buf[GMFP_PAGER_HDR_SIZE + GMFP_PAGER_ATTACH_FIXED] = 0x10;
	t_raw_bad(buf, (size_t)n, fds, 2, -EINVAL, "region 0: gmem_offset");
	memset(buf + GMFP_PAGER_HDR_SIZE + GMFP_PAGER_ATTACH_FIXED, 0xff, 8);
	buf[GMFP_PAGER_HDR_SIZE + GMFP_PAGER_ATTACH_FIXED] = 0;
	buf[GMFP_PAGER_HDR_SIZE + GMFP_PAGER_ATTACH_FIXED + 1] = 0xf0;
	t_raw_bad(buf, (size_t)n, fds, 2, -EINVAL, "wraps");
	m->u.attach.regions[0].gmem_offset = 1ull << 40;
	n = gmfp_pager_encode(buf, sizeof(buf), m);
	t_raw_bad(buf, (size_t)n, fds, 2, -EINVAL, "beyond its guest_memfd");
	/* oversized lengths in the body */
	m->u.attach.regions[0].gmem_offset = 0;
	m->u.attach.regions[0].size = 1ull << 62;
	n = gmfp_pager_encode(buf, sizeof(buf), m);
	t_raw_bad(buf, (size_t)n, fds, 2, -EINVAL, "beyond its guest_memfd");
	m->u.attach.regions[0].size = T_SIZE;
	n = gmfp_pager_encode(buf, sizeof(buf), m);
	buf[GMFP_PAGER_HDR_SIZE] = 200;	/* nr_regions */
	t_raw_bad(buf, (size_t)n, fds, 2, -EBADMSG, "malformed");
	/* an empty packet reads as end of file: closed, no answer */
	fd = t_connect();
	assert_int_equal(t_send(fd, buf, 0, NULL, 0), 0);
	{
		struct gmfp_pager_msg r;

		assert_int_equal(t_recv(fd, &r, huge), 0);
	}
	close(fd);
	/* a peer that says nothing is dropped after --timeout-ms */
	fd = t_connect();
	{
		struct gmfp_pager_msg r;
		uint64_t t0 = t_ms();

		assert_int_equal(t_recv(fd, &r, huge), 0);
		assert_true(t_ms() - t0 >= 250);
	}
	close(fd);
	/* all the while a good peer is served */
	assert_true(gmfp_pager_status(t_sock, NULL, 0) > 0);
	errs = t_counter("protocol_errors");
	assert_int_equal(errs, 13);
	assert_int_equal(t_counter("attach_failed"), 4);
	assert_int_equal(t_counter("dropped"), 1);
	t_fds_back_to(pid, base);
	close(g);
	close(img);
	free(huge);
	free(m);
	t_stop(pid);
}

static void test_connection_flood(void **state)
{
	int idle[4], flood[40], base, i;
	char why[GMFP_PAGER_ERRMSG_MAX];
	struct gmfp_pager_msg m;
	uint8_t *buf = malloc(GMFP_PAGER_MAX_MSG);
	uint64_t t0;
	pid_t pid;

	(void)state;
	assert_non_null(buf);
	pid = t_daemon((const char *[]){ "--max-sessions", "4", "--timeout-ms", "500", NULL });
	base = t_idle_fds(pid);
	for (i = 0; i < 4; i++)
		idle[i] = t_connect();
	/* every slot is taken: refused at once, with a reason */
	t0 = t_ms();
	for (i = 0; i < 40; i++)
		flood[i] = t_connect();
	for (i = 0; i < 40; i++) {
		t_expect_error(flood[i], -EAGAIN, "too many sessions (4)");
		close(flood[i]);
	}
	assert_true(t_ms() - t0 < 450);
	assert_int_equal(gmfp_pager_status(t_sock, NULL, 0), -EAGAIN);
	{
		struct gmfp_pager_region r = { .gmem = idle[0], .size = T_SIZE };

		assert_int_equal(t_attach(&r, 1, GMFP_PAGER_SRC_TCP, -1, why), -EAGAIN);
		assert_non_null(strstr(why, "try again later"));
	}
	/* the idle ones are dropped after --timeout-ms, and the slots free */
	for (i = 0; i < 4; i++) {
		assert_int_equal(t_recv(idle[i], &m, buf), 0);
		close(idle[i]);
	}
	t0 = t_ms();
	while (gmfp_pager_status(t_sock, NULL, 0) == -EAGAIN && t_ms() - t0 < 3000)
		t_sleep_ms(10);
	assert_true(gmfp_pager_status(t_sock, NULL, 0) > 0);
	assert_true(t_counter("refused_busy") >= 42);
	assert_int_equal(t_counter("dropped"), 4);
	t_fds_back_to(pid, base);
	free(buf);
	t_stop(pid);
}

struct t_statuser {
	pthread_t t;
	_Atomic unsigned int ok, bad;
};

static void *t_statuser_main(void *arg)
{
	struct t_statuser *s = arg;
	char *json = malloc(GMFP_PAGER_MAX_JSON);
	int i;

	for (i = 0; i < 40; i++) {
		int r = json ? gmfp_pager_status(t_sock, json, GMFP_PAGER_MAX_JSON) : -ENOMEM;

		if (r > 0 && strstr(json, "\"pager\":")) {
			atomic_fetch_add(&s->ok, 1);
		} else {
			fprintf(stderr, "status: %d\n", r);
			atomic_fetch_add(&s->bad, 1);
		}
	}
	free(json);
	return NULL;
}

/*
 * A peer that asks for the status and never reads the answers is dropped
 * once its socket is full for --timeout-ms; other peers are served
 * meanwhile, concurrently.
 */
static void test_never_reading_peer(void **state)
{
	struct t_statuser users[4];
	struct gmfp_pager_msg m;
	uint8_t buf[64];
	int fd, base, i, sent = 0;
	uint64_t t0;
	pid_t pid;

	(void)state;
	memset(users, 0, sizeof(users));
	pid = t_daemon((const char *[]){ "--timeout-ms", "400", NULL });
	base = t_idle_fds(pid);
	memset(&m, 0, sizeof(m));
	m.type = GMFP_PAGER_STATUS;
	assert_int_equal(gmfp_pager_encode(buf, sizeof(buf), &m), 16);
	fd = t_connect();
	for (i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&users[i].t, NULL, t_statuser_main, &users[i]), 0);
	/* ask, never read: until our own send would block or the daemon hangs up */
	t0 = t_ms();
	for (;;) {
		ssize_t n = send(fd, buf, 16, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n == 16) {
			sent++;
			continue;
		}
		if (n < 0 && (errno == EPIPE || errno == ECONNRESET))
			break;
		assert_true(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
		assert_true(t_ms() - t0 < 10000);
		t_sleep_ms(20);
	}
	assert_true(sent > 10);
	for (i = 0; i < 4; i++) {
		pthread_join(users[i].t, NULL);
		assert_int_equal(atomic_load(&users[i].bad), 0);
		assert_int_equal(atomic_load(&users[i].ok), 40);
	}
	assert_int_equal(t_counter("dropped"), 1);
	close(fd);
	t_fds_back_to(pid, base);
	t_stop(pid);
}

/* ---- the real serving path, on the fake kernel ---- */

#define FK_IMAGE_PAGES 400

static char t_fkimage[160];

/* word @j of page @fp of the fake image */
static uint64_t t_word(uint64_t fp, uint64_t j)
{
	return (0x9e3779b97f4a7c15ull * (fp + 1)) ^ (j * 0x100000001b3ull);
}

struct t_fvm {
	int gmem;
	ino_t ino;
	uint64_t npages;
	struct fk_shared *sh;
	struct sockaddr_un naddr;	/* where the daemon reads records */
	int sfd;
	/* file page of each page: the regions of the attach */
	uint64_t (*file_page)(uint64_t pg);
};

/*
 * Two fake guest_memfds: A (256 pages) in two regions, [0, 100) at image
 * page 300 and [100, 256) at image page 0, so that a background run of A
 * crosses a region; B (64 pages), one region at image page 200.
 */
static uint64_t t_fp_a(uint64_t pg)
{
	return pg < 100 ? 300 + pg : pg - 100;
}

static uint64_t t_fp_b(uint64_t pg)
{
	return 200 + pg;
}

static void t_fvm_new(struct t_fvm *v, uint64_t npages, uint64_t (*fp)(uint64_t))
{
	char path[256];
	struct stat st;
	int fd;

	memset(v, 0, sizeof(*v));
	v->npages = npages;
	v->file_page = fp;
	v->gmem = t_memfd(npages * GMFP_PAGE_SIZE);
	assert_int_equal(fstat(v->gmem, &st), 0);
	v->ino = st.st_ino;
	snprintf(path, sizeof(path), "%s/fk-%lu", t_dir, (unsigned long)v->ino);
	fd = open(path, O_CREAT | O_RDWR | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, sizeof(struct fk_shared)), 0);
	v->sh = mmap(NULL, sizeof(*v->sh), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	assert_true(v->sh != MAP_FAILED);
	close(fd);
	v->sh->npages = npages;
	v->naddr.sun_family = AF_UNIX;
	snprintf(v->naddr.sun_path, sizeof(v->naddr.sun_path), "%s/fk-%lu.n", t_dir,
		 (unsigned long)v->ino);
	v->sfd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_true(v->sfd >= 0);
}

static void t_fvm_free(struct t_fvm *v)
{
	char path[256];

	snprintf(path, sizeof(path), "%s/fk-%lu", t_dir, (unsigned long)v->ino);
	unlink(path);
	unlink(v->naddr.sun_path);
	munmap(v->sh, sizeof(*v->sh));
	close(v->gmem);
	close(v->sfd);
}

static uint64_t t_fvm_present(struct t_fvm *v)
{
	uint64_t pg, n = 0;

	for (pg = 0; pg < v->npages; pg++)
		n += fk_present(v->sh, pg);
	return n;
}

/* Every present page holds its image page. */
static void t_fvm_check(struct t_fvm *v, bool all)
{
	uint64_t page[GMFP_PAGE_SIZE / 8], pg, j;

	for (pg = 0; pg < v->npages; pg++) {
		if (!fk_present(v->sh, pg)) {
			assert_false(all);
			continue;
		}
		assert_int_equal(pread(v->gmem, page, GMFP_PAGE_SIZE,
				       (off_t)(pg * GMFP_PAGE_SIZE)), GMFP_PAGE_SIZE);
		for (j = 0; j < GMFP_PAGE_SIZE / 8; j++)
			if (page[j] != t_word(v->file_page(pg), j))
				fail_msg("page %lu word %lu wrong", (unsigned long)pg,
					 (unsigned long)j);
	}
}

/* An accessor: waits for its pages in a stride order, one record per period. */
struct t_acc {
	struct t_fvm *v;
	uint64_t first, step;
	pthread_t t;
	_Atomic bool stop;
	_Atomic uint64_t done, bad;
	_Atomic bool finished;
};

static void *t_acc_main(void *arg)
{
	struct t_acc *a = arg;
	struct t_fvm *v = a->v;
	uint64_t k, j, page[GMFP_PAGE_SIZE / 8];

	for (k = 0; k < v->npages && !atomic_load(&a->stop); k++) {
		uint64_t pg = (a->first + k * a->step) % v->npages;
		uint32_t last = UINT32_MAX, p;

		while (!fk_present(v->sh, pg) && !atomic_load(&a->stop)) {
			p = atomic_load(&v->sh->period[pg]);
			if (p != last) {
				struct gmfp_event ev = {
					.type = GMFP_EVENT_FAULT, .offset = pg * GMFP_PAGE_SIZE,
					.access = GMFP_ACCESS_READ, .origin = GMFP_ORIGIN_MMAP,
					.vcpu_id = GMFP_NO_VCPU,
				};

				/* lost if nobody listens: the next period asks again */
				sendto(v->sfd, &ev, sizeof(ev), MSG_DONTWAIT,
				       (struct sockaddr *)&v->naddr, sizeof(v->naddr));
				last = p;
			}
			usleep(300);
		}
		if (atomic_load(&a->stop))
			break;
		if (pread(v->gmem, page, GMFP_PAGE_SIZE, (off_t)(pg * GMFP_PAGE_SIZE)) !=
		    GMFP_PAGE_SIZE)
			atomic_fetch_add(&a->bad, 1);
		for (j = 0; j < GMFP_PAGE_SIZE / 8; j++)
			if (page[j] != t_word(v->file_page(pg), j)) {
				atomic_fetch_add(&a->bad, 1);
				break;
			}
		atomic_fetch_add(&a->done, 1);
	}
	atomic_store(&a->finished, true);
	return NULL;
}

static void t_acc_start(struct t_acc *a, struct t_fvm *v, uint64_t first, uint64_t step)
{
	memset(a, 0, sizeof(*a));
	a->v = v;
	a->first = first;
	a->step = step;
	assert_int_equal(pthread_create(&a->t, NULL, t_acc_main, a), 0);
}

/* All accessors through all their pages within 30 s, none with a bad page. */
static void t_acc_finish(struct t_acc *a, unsigned int n)
{
	uint64_t end = t_ms() + 30000;
	unsigned int i;

	for (i = 0; i < n; i++) {
		while (!atomic_load(&a[i].finished) && t_ms() < end)
			t_sleep_ms(5);
		if (!atomic_load(&a[i].finished)) {
			for (i = 0; i < n; i++)
				atomic_store(&a[i].stop, true);
			for (i = 0; i < n; i++)
				pthread_join(a[i].t, NULL);
			fail_msg("accessors still waiting");
		}
		pthread_join(a[i].t, NULL);
		assert_int_equal(atomic_load(&a[i].bad), 0);
		assert_int_equal(atomic_load(&a[i].done), a[i].v->npages);
	}
}

/* A page server for the three regions, in a child; @us_per_page slows it. */
struct t_slow {
	struct gmfp_source *file;
	unsigned int us;
};

static int t_slow_fetch(void *ctx, struct gmfp_fetch *f)
{
	struct t_slow *sl = ctx;

	usleep(sl->us * f->npages);
	return gmfp_source_fetch(sl->file, f);
}

static pid_t t_server(char *port, size_t len, unsigned int us_per_page)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t al = sizeof(a);
	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
	pid_t pid;

	assert_true(lfd >= 0);
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(lfd, 16), 0);
	assert_int_equal(getsockname(lfd, (struct sockaddr *)&a, &al), 0);
	snprintf(port, len, "%u", ntohs(a.sin_port));
	fflush(NULL);
	pid = fork();
	assert_true(pid >= 0);
	if (!pid) {
		static const uint64_t offs[3] = { 300 * GMFP_PAGE_SIZE, 0, 200 * GMFP_PAGE_SIZE };
		static const uint64_t sizes[3] = { 100 * GMFP_PAGE_SIZE, 156 * GMFP_PAGE_SIZE,
						   64 * GMFP_PAGE_SIZE };
		GMFP_OPTS_INIT(struct gmfp_file_opts, fo);
		GMFP_OPTS_INIT(struct gmfp_source_ops, ops);
		GMFP_OPTS_INIT(struct gmfp_serve_opts, so);
		struct t_slow sl = { .us = us_per_page };
		struct gmfp_source *src;

		setpgid(0, 0);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		fo.fd = -1;
		fo.path = t_fkimage;
		fo.region_offsets = offs;
		fo.nr_regions = 3;
		ops.fetch = t_slow_fetch;
		if (gmfp_source_file(&sl.file, &fo) || gmfp_source_new(&src, &ops, &sl))
			_exit(2);
		so.src = src;
		so.nr_regions = 3;
		so.region_sizes = sizes;
		signal(SIGCHLD, SIG_IGN);
		for (;;) {
			int c = accept(lfd, NULL, NULL);

			if (c < 0)
				_exit(3);
			if (!fork()) {
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

static void t_server_kill(pid_t pid)
{
	kill(-pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

/* Attach A and B as three regions; returns the errno. */
static int t_attach_fake(int *sock, struct t_fvm *a, struct t_fvm *b, const char *port,
			 uint32_t workers, uint32_t max_batch, char *why)
{
	struct gmfp_pager_region r[3] = {
		{ .gmem = a->gmem, .size = 100 * GMFP_PAGE_SIZE, .gpa = 0,
		  .file_offset = 300 * GMFP_PAGE_SIZE },
		{ .gmem = a->gmem, .gmem_offset = 100 * GMFP_PAGE_SIZE,
		  .size = 156 * GMFP_PAGE_SIZE, .gpa = 1ull << 30 },
		{ .gmem = b->gmem, .size = 64 * GMFP_PAGE_SIZE, .gpa = 1ull << 32,
		  .file_offset = 200 * GMFP_PAGE_SIZE },
	};
	GMFP_OPTS_INIT(struct gmfp_pager_attach_opts, o);

	o.regions = r;
	o.nr_regions = 3;
	if (port) {
		r[0].file_offset = r[1].file_offset = r[2].file_offset = 0;
		o.source = GMFP_PAGER_SRC_TCP;
		o.tcp_port = port;
		o.tcp_timeout_ms = 2000;
	} else {
		o.source = GMFP_PAGER_SRC_FILE;
		o.file_path = t_fkimage;
	}
	o.workers = workers;
	o.max_batch = max_batch;
	o.errmsg = why;
	o.errmsg_len = GMFP_PAGER_ERRMSG_MAX;
	return gmfp_pager_attach(sock, t_sock, &o);
}

static void t_wait_complete(int sock, char *json, size_t len)
{
	uint64_t end = t_ms() + 30000;

	for (;;) {
		assert_true(gmfp_pager_session_status(sock, json, len) > 0);
		if (strstr(json, "\"complete\":true"))
			return;
		if (t_ms() > end)
			fail_msg("not complete: %s", json);
		t_sleep_ms(10);
	}
}

/*
 * Lazy restore of two guest_memfds in three regions through the daemon, from
 * the image or a page server, while hostile peers come and go: every page
 * right, each fetched once; a second attach of A is refused (EBUSY); detach
 * stops the session.
 */
static void t_fake_restore(bool tcp)
{
	char json[GMFP_PAGER_MAX_JSON], why[GMFP_PAGER_ERRMSG_MAX], port[16];
	struct t_fvm a, b;
	struct t_acc acc[3];
	pid_t pid, server = 0;
	int sock, other, fd;

	t_fake = true;
	t_fvm_new(&a, 256, t_fp_a);
	t_fvm_new(&b, 64, t_fp_b);
	if (tcp)
		server = t_server(port, sizeof(port), 0);
	pid = t_daemon(NULL);
	/* accessors first: nobody listens, their records are lost */
	t_acc_start(&acc[0], &a, 0, 3);
	t_acc_start(&acc[1], &a, 77, 5);
	t_acc_start(&acc[2], &b, 5, 7);
	t_sleep_ms(20);
	assert_int_equal(t_attach_fake(&sock, &a, &b, tcp ? port : NULL, 2, 0, why), 0);
	/* A is served: nobody else may serve it; hostile peers meanwhile */
	assert_int_equal(t_attach_fake(&other, &a, &b, NULL, 2, 0, why), -EBUSY);
	assert_non_null(strstr(why, "served by session"));
	fd = t_connect();
	assert_int_equal(t_send(fd, "garbage!garbage!", 16, NULL, 0), 16);
	t_expect_error(fd, -EBADMSG, "malformed");
	close(fd);
	t_acc_finish(acc, 3);
	t_wait_complete(sock, json, sizeof(json));
	t_fvm_check(&a, true);
	t_fvm_check(&b, true);
	/* one fetch per page, none copied twice */
	assert_int_equal(t_json_u64(json, NULL, "gmems"), 2);
	assert_int_equal(t_json_u64(json, NULL, "regions"), 3);
	assert_int_equal(t_json_u64(json, NULL, "gmem_pages"), 320);
	assert_int_equal(t_json_u64(json, NULL, "pages_at_attach"), 0);
	assert_int_equal(t_json_u64(json, "\"source\":", "pages"), 320);
	assert_int_equal(t_json_u64(json, "\"engine\":", "pages_present"), 320);
	assert_int_equal(t_json_u64(json, "\"engine\":", "already_present"), 0);
	assert_int_equal(t_json_u64(json, "\"engine\":", "errors"), 0);
	assert_int_equal(t_json_u64(json, "\"engine\":", "pages_demand") +
			 t_json_u64(json, "\"engine\":", "pages_background"), 320);
	assert_non_null(strstr(json, "\"region_list\":[{\"gmem_offset\":0,\"size\":409600"));
	assert_int_equal(atomic_load(&a.sh->copied) + atomic_load(&b.sh->copied), 320);
	assert_int_equal(atomic_load(&a.sh->skipped) + atomic_load(&b.sh->skipped), 0);
	assert_non_null(strstr(json, tcp ? "\"type\":\"tcp\"" : "\"type\":\"file\""));
	/* the daemon lists it */
	assert_true(gmfp_pager_status(t_sock, json, sizeof(json)) > 0);
	assert_non_null(strstr(json, "\"state\":\"complete\""));
	assert_int_equal(t_json_u64(json, "\"pager\":", "attached"), 1);
	assert_int_equal(gmfp_pager_detach(sock), 0);
	assert_true(gmfp_pager_status(t_sock, json, sizeof(json)) > 0);
	assert_int_equal(t_json_u64(json, "\"pager\":", "detached"), 1);
	assert_non_null(strstr(json, "\"end\":\"detached\""));
	t_stop(pid);
	if (server)
		t_server_kill(server);
	t_fvm_free(&a);
	t_fvm_free(&b);
	t_fake = false;
}

static void test_fake_restore_file(void **state)
{
	(void)state;
	t_fake_restore(false);
}

static void test_fake_restore_tcp(void **state)
{
	(void)state;
	t_fake_restore(true);
}

/*
 * The daemon dies (SIGKILL) mid-restore: nothing more becomes present, the
 * accessors keep waiting, the VMM reads EOF; a new daemon given the same
 * fds fetches exactly what is missing.  Then the VMM closes its socket
 * without detaching: the session ends.
 */
static void test_fake_restart(void **state)
{
	char json[GMFP_PAGER_MAX_JSON], why[GMFP_PAGER_ERRMSG_MAX], port[16], c;
	uint64_t before, after, disc, end;
	struct t_fvm a, b;
	struct t_acc acc[3];
	struct pollfd p;
	pid_t pid, server;
	int sock, st;

	(void)state;
	t_fake = true;
	t_fvm_new(&a, 256, t_fp_a);
	t_fvm_new(&b, 64, t_fp_b);
	server = t_server(port, sizeof(port), 3000);
	pid = t_daemon(NULL);
	t_acc_start(&acc[0], &a, 0, 3);
	t_acc_start(&acc[1], &a, 77, 5);
	t_acc_start(&acc[2], &b, 5, 7);
	assert_int_equal(t_attach_fake(&sock, &a, &b, port, 1, 4, why), 0);
	end = t_ms() + 30000;
	while (t_fvm_present(&a) + t_fvm_present(&b) < 30 && t_ms() < end)
		t_sleep_ms(2);
	assert_int_equal(kill(pid, SIGKILL), 0);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	before = t_fvm_present(&a) + t_fvm_present(&b);
	assert_true(before >= 30 && before < 200);
	/* the VMM sees it gone; nothing more becomes present, nobody is done */
	p.fd = sock;
	p.events = POLLIN;
	assert_int_equal(poll(&p, 1, 5000), 1);
	assert_int_equal(recv(sock, &c, 1, MSG_DONTWAIT), 0);
	close(sock);
	t_sleep_ms(300);
	after = t_fvm_present(&a) + t_fvm_present(&b);
	assert_int_equal(after, before);
	assert_false(atomic_load(&acc[0].finished) && atomic_load(&acc[1].finished) &&
		     atomic_load(&acc[2].finished));
	t_fvm_check(&a, false);
	t_fvm_check(&b, false);
	/* a new daemon on the stale socket, the same fds, the image this time */
	disc = atomic_load(&a.sh->discarded) + atomic_load(&b.sh->discarded);
	pid = t_daemon(NULL);
	assert_int_equal(t_attach_fake(&sock, &a, &b, NULL, 2, 0, why), 0);
	t_acc_finish(acc, 3);
	t_wait_complete(sock, json, sizeof(json));
	t_fvm_check(&a, true);
	t_fvm_check(&b, true);
	assert_int_equal(t_json_u64(json, NULL, "pages_at_attach"), after);
	assert_int_equal(t_json_u64(json, "\"source\":", "pages"), 320 - after);
	assert_int_equal(t_json_u64(json, "\"engine\":", "already_present"), 0);
	assert_int_equal(t_json_u64(json, "\"engine\":", "errors"), 0);
	/* RENOTIFY: a new period for exactly the pages that were missing */
	assert_int_equal(atomic_load(&a.sh->discarded) + atomic_load(&b.sh->discarded) - disc,
			 320 - after);
	/* the VMM goes away without a word: the session ends */
	close(sock);
	end = t_ms() + 5000;
	do {
		assert_true(gmfp_pager_status(t_sock, json, sizeof(json)) > 0);
		if (t_json_u64(json, "\"pager\":", "ended"))
			break;
		t_sleep_ms(10);
	} while (t_ms() < end);
	assert_int_equal(t_json_u64(json, "\"pager\":", "ended"), 1);
	assert_non_null(strstr(json, "\"ended_sessions\":[{"));
	assert_non_null(strstr(json, "\"end\":\"connection closed\""));
	t_stop(pid);
	t_server_kill(server);
	t_fvm_free(&a);
	t_fvm_free(&b);
	t_fake = false;
}

/* ---- setup ---- */

static int t_group_setup(void **state)
{
	uint8_t page[GMFP_PAGE_SIZE];
	int fd, i;

	(void)state;
	strcpy(t_dir, "/tmp/gmfp-pager-test.XXXXXX");
	/* other users reach the socket: its mode and the daemon decide */
	if (!mkdtemp(t_dir) || chmod(t_dir, 0711))
		return -1;
	snprintf(t_sock, sizeof(t_sock), "%s/pager.sock", t_dir);
	snprintf(t_image, sizeof(t_image), "%s/image", t_dir);
	snprintf(t_fkimage, sizeof(t_fkimage), "%s/fkimage", t_dir);
	fd = open(t_fkimage, O_CREAT | O_RDWR | O_CLOEXEC, 0644);
	if (fd < 0)
		return -1;
	for (i = 0; i < FK_IMAGE_PAGES; i++) {
		uint64_t w[GMFP_PAGE_SIZE / 8], j;

		for (j = 0; j < GMFP_PAGE_SIZE / 8; j++)
			w[j] = t_word((uint64_t)i, j);
		if (write(fd, w, sizeof(w)) != sizeof(w))
			return -1;
	}
	close(fd);
	fd = open(t_image, O_CREAT | O_RDWR | O_CLOEXEC, 0644);
	if (fd < 0)
		return -1;
	for (i = 0; i < T_PAGES; i++) {
		memset(page, i, sizeof(page));
		if (write(fd, page, sizeof(page)) != sizeof(page))
			return -1;
	}
	close(fd);
	return 0;
}

/* After each test: no daemon of a failed test lingers on into the next. */
static int t_teardown(void **state)
{
	unsigned int i;

	(void)state;
	for (i = 0; i < t_nr_pids; i++)
		if (waitpid(t_pids[i], NULL, WNOHANG) == 0) {
			kill(t_pids[i], SIGKILL);
			waitpid(t_pids[i], NULL, 0);
		}
	t_nr_pids = 0;
	unlink(t_sock);
	return 0;
}

static int t_group_teardown(void **state)
{
	(void)state;
	unlink(t_sock);
	unlink(t_image);
	unlink(t_fkimage);
	rmdir(t_dir);
	return 0;
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_codec_roundtrip, t_teardown),
		cmocka_unit_test_teardown(test_encode_errors, t_teardown),
		cmocka_unit_test_teardown(test_decode_malformed, t_teardown),
		cmocka_unit_test_teardown(test_check_attach, t_teardown),
		cmocka_unit_test_teardown(test_decode_fuzz, t_teardown),
		cmocka_unit_test_teardown(test_client_args, t_teardown),
		cmocka_unit_test_teardown(test_cli, t_teardown),
		cmocka_unit_test_teardown(test_status_and_json, t_teardown),
		cmocka_unit_test_teardown(test_attach_checks, t_teardown),
		cmocka_unit_test_teardown(test_refused_uid, t_teardown),
		cmocka_unit_test_teardown(test_hostile_peers, t_teardown),
		cmocka_unit_test_teardown(test_connection_flood, t_teardown),
		cmocka_unit_test_teardown(test_never_reading_peer, t_teardown),
		cmocka_unit_test_teardown(test_fake_restore_file, t_teardown),
		cmocka_unit_test_teardown(test_fake_restore_tcp, t_teardown),
		cmocka_unit_test_teardown(test_fake_restart, t_teardown),
	};

	/* the daemon, run by t_spawn() */
	if (argc > 1 && !strcmp(argv[1], "--pagerd"))
		return pagerd_main(argc - 1, argv + 1);
	if (argc > 1)
		cmocka_set_test_filter(argv[1]);
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, t_group_setup, t_group_teardown);
}
