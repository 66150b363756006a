// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * libFuzzer target: gmfp_pager_decode(), the pager-protocol decoder that
 * gmfp-pager runs on every packet a VMM sends (and a VMM on the pager's
 * answers), gmfp_pager_check_attach(), which judges an ATTACH, and the
 * daemon's own handshake (tools/gmfp-pager/session.c, compiled in), which
 * checks an ATTACH against the file descriptors that came with it.
 *
 * The input is a 4-byte fd plan, then one packet.  The plan: byte 0 is the
 * number of fds sent with the packet (its low 3 bits; 0xff: 66, more than
 * any request carries), bytes 1-3 hold 3 bits per fd, its kind: a memfd of
 * 16 pages (A), another of 32 (B), A again, a memfd of 64 pages (an image),
 * that image opened write-only, a pipe, a socket, /dev/null.  memfds are
 * regular files with sizes, but not presence guest_memfds.
 *
 * Checked on the packet, decoding from an exact-size heap copy:
 *  - the result is the packet's length or -EMSGSIZE, -EPROTONOSUPPORT,
 *    -EBADMSG, or -EINVAL (an ATTACH that is well-formed but refused);
 *  - a message that decodes encodes to the very same bytes ("whatever
 *    decodes re-encodes to the same bytes", gmfp_pager.h), and encoding
 *    into any smaller buffer gives -ENOSPC;
 *  - a refused ATTACH: gmfp_pager_check_attach() says so with a reason and
 *    a region index that exists (or GMFP_PAGER_NO_REGION), and the encoder
 *    refuses it too;
 *  - strings in a decoded message are NUL terminated within their fields,
 *    a STATUS_REPLY's JSON lies within the packet.
 * Checked on the daemon's handshake, the packet and the fds sent on a
 * SOCK_SEQPACKET socketpair:
 *  - every answer decodes; the last is the one the packet deserves: an
 *    ERROR with the decoder's errno, STATUS_REPLY, DETACHED, or an ERROR
 *    EBADMSG for fds with a message that takes none;
 *  - an ATTACH with another number of fds than it declares (one per
 *    region, and the image for FILE) is refused with EINVAL saying so;
 *  - nothing is ever served (no fd is a presence guest_memfd), and a
 *    region fd that is no regular file, or a FILE image that is not a
 *    readable regular file, is refused by the checks, before the engine
 *    (which would say ENOTTY); EBADF only for a bad image;
 *  - afterwards the process has exactly the fds it had: the daemon closed
 *    every fd it was handed, on every path.
 */
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz.h"
#include "gmfp_pager.h"
#include "internal.h"

/* the daemon's sources, with the real kernel interface (no fake kernel) */
#include "../../tools/gmfp-pager/pagerd.c"
#include "../../tools/gmfp-pager/session.c"

#define PLAN_SIZE 4
#define MANY_FDS 66		/* > GMFP_PAGER_MAX_FDS */

enum fd_kind {
	FD_GMEM_A, FD_GMEM_B, FD_GMEM_A_AGAIN, FD_IMAGE, FD_IMAGE_WRONLY, FD_PIPE, FD_SOCKET,
	FD_DEVNULL, FD_KINDS
};

static void check_strings(const struct gmfp_pager_msg *m)
{
	if (m->type == GMFP_PAGER_ATTACH) {
		FUZZ_CHECK(memchr(m->u.attach.host, 0, sizeof(m->u.attach.host)), "host");
		FUZZ_CHECK(memchr(m->u.attach.port, 0, sizeof(m->u.attach.port)), "port");
	} else if (m->type == GMFP_PAGER_ERROR) {
		FUZZ_CHECK(memchr(m->u.error.msg, 0, sizeof(m->u.error.msg)), "msg");
		FUZZ_CHECK(m->u.error.err < 0 && m->u.error.err >= -4095, "err %d",
			   m->u.error.err);
	}
}

/* The decoder, the check and the encoder on one packet: its decode result. */
static ssize_t check_codec(const uint8_t *data, size_t size)
{
	static uint8_t out[GMFP_PAGER_MAX_MSG];
	static struct gmfp_pager_msg m;
	uint8_t *buf = fz_dup(data, size), *short_buf;
	const char *why;
	uint32_t region;
	ssize_t n, e;
	int r;

	n = gmfp_pager_decode(buf, size, &m);
	FUZZ_CHECK((n >= 0 && (size_t)n == size) || n == -EMSGSIZE ||
		   n == -EPROTONOSUPPORT || n == -EBADMSG || n == -EINVAL,
		   "decode of %zu bytes: %zd", size, n);
	if (n == -EPROTONOSUPPORT)
		FUZZ_CHECK(m.version != GMFP_PAGER_VERSION, "version %u refused", m.version);
	if (n == -EINVAL) {
		/* only an ATTACH can be refused for its values, and *m holds it */
		FUZZ_CHECK(m.type == GMFP_PAGER_ATTACH, "-EINVAL for type %u", m.type);
		check_strings(&m);
		r = gmfp_pager_check_attach(&m.u.attach, &region, &why);
		FUZZ_CHECK(r == -EINVAL && why && *why, "check_attach %d", r);
		FUZZ_CHECK(region == GMFP_PAGER_NO_REGION || region < m.u.attach.nr_regions,
			   "region %u of %u", region, m.u.attach.nr_regions);
		e = gmfp_pager_encode(out, sizeof(out), &m);
		FUZZ_CHECK(e == -EINVAL, "encoded a refused ATTACH: %zd", e);
	}
	if (n < 0) {
		free(buf);
		return n;
	}
	check_strings(&m);
	FUZZ_CHECK(m.version == GMFP_PAGER_VERSION, "version %u", m.version);
	if (m.type == GMFP_PAGER_ATTACH) {
		r = gmfp_pager_check_attach(&m.u.attach, &region, &why);
		FUZZ_CHECK(!r && region == GMFP_PAGER_NO_REGION && !why,
			   "a decoded ATTACH fails its check: %d", r);
	}
	if (m.type == GMFP_PAGER_STATUS_REPLY)
		FUZZ_CHECK((const uint8_t *)m.u.status.json >= buf + 16 &&
			   (const uint8_t *)m.u.status.json + m.u.status.len == buf + size,
			   "json outside the packet");
	e = gmfp_pager_encode(out, sizeof(out), &m);
	FUZZ_CHECK(e == n, "type %u: %zd bytes decoded, %zd encoded", m.type, n, e);
	FUZZ_CHECK(!memcmp(out, buf, size), "type %u: re-encoding differs", m.type);
	/* one byte short of room (an exact-size heap buffer): -ENOSPC */
	short_buf = malloc(size - 1);
	FUZZ_CHECK(short_buf, "out of memory");
	e = gmfp_pager_encode(short_buf, size - 1, &m);
	FUZZ_CHECK(e == -ENOSPC, "encode into %zu bytes: %zd", size - 1, e);
	free(short_buf);
	free(buf);
	return n;
}

/* ---- the daemon's handshake ---- */

static int kind_fd[FD_KINDS];

static int fd_count(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	FUZZ_CHECK(d, "/proc/self/fd");
	while ((e = readdir(d)))
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

static int memfd_pages(const char *name, unsigned int npages)
{
	int fd = memfd_create(name, MFD_CLOEXEC);

	FUZZ_CHECK(fd >= 0 && !ftruncate(fd, (off_t)npages * GMFP_PAGE_SIZE), "memfd");
	return fd;
}

/* One fd of each kind, for the whole run: SCM_RIGHTS hands the daemon copies. */
static void make_kinds(void)
{
	char path[64];
	int p[2], sv[2];

	kind_fd[FD_GMEM_A] = memfd_pages("gmem-a", 16);
	kind_fd[FD_GMEM_B] = memfd_pages("gmem-b", 32);
	kind_fd[FD_GMEM_A_AGAIN] = kind_fd[FD_GMEM_A];
	kind_fd[FD_IMAGE] = memfd_pages("image", 64);
	snprintf(path, sizeof(path), "/proc/self/fd/%d", kind_fd[FD_IMAGE]);
	kind_fd[FD_IMAGE_WRONLY] = open(path, O_WRONLY | O_CLOEXEC);
	FUZZ_CHECK(!pipe2(p, O_CLOEXEC), "pipe");
	kind_fd[FD_PIPE] = p[0];	/* p[1] stays open, unused */
	FUZZ_CHECK(!socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), "socketpair");
	kind_fd[FD_SOCKET] = sv[0];
	kind_fd[FD_DEVNULL] = open("/dev/null", O_RDONLY | O_CLOEXEC);
	FUZZ_CHECK(kind_fd[FD_IMAGE_WRONLY] >= 0 && kind_fd[FD_DEVNULL] >= 0, "open");
}

/* What the daemon may take for a region's guest_memfd: fstat() gives a size. */
static bool regular(enum fd_kind k)
{
	return k <= FD_IMAGE_WRONLY;
}

static void check_handshake(const uint8_t *plan, const uint8_t *pkt, size_t size, ssize_t dec)
{
	static struct pagerd d;
	static struct session s;
	static struct gmfp_pager_msg m, got, dm;
	static uint8_t req[GMFP_PAGER_MAX_REQUEST], ans[GMFP_PAGER_MAX_MSG];
	static int stopfd = -1;
	uint32_t kinds = plan[1] | (uint32_t)plan[2] << 8 | (uint32_t)plan[3] << 16;
	unsigned int nfds = plan[0] == 0xff ? MANY_FDS : plan[0] & 7, i, want;
	int fds[MANY_FDS], sv[2], base, last_err = 0, answers = 0;
	uint16_t last = 0;
	bool attached, bad_region = false, bad_image;
	ssize_t n;

	if (stopfd < 0) {
		make_kinds();
		stopfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		FUZZ_CHECK(stopfd >= 0, "eventfd");
	}
	for (i = 0; i < nfds; i++)
		fds[i] = kind_fd[i < 8 ? (kinds >> (3 * i)) & 7 : FD_GMEM_A];
	base = fd_count();
	FUZZ_CHECK(!socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), "socketpair");
	/* an empty packet reads as end of file: nothing to answer */
	if (size) {
		n = gmfp_sock_send_fds(sv[0], pkt, size, fds, nfds, MSG_NOSIGNAL);
		if (n != (ssize_t)size) {
			/* too big for the socket: nothing for the daemon to judge */
			close(sv[0]);
			close(sv[1]);
			FUZZ_CHECK(fd_count() == base, "fds after a failed send");
			return;
		}
	}
	shutdown(sv[0], SHUT_WR);

	memset(&d, 0, sizeof(d));
	pthread_mutex_init(&d.lock, NULL);
	d.quiet = true;
	d.socket_path = "/run/fuzz-pager.sock";
	d.timeout_ms = 1000;
	d.default_workers = DEFAULT_WORKERS;
	d.max_workers = DEFAULT_MAX_WORKERS;
	d.max_sessions = DEFAULT_MAX_SESSIONS;
	d.lfd = d.sigfd = d.reapfd = -1;
	d.stopfd = stopfd;
	memset(&s, 0, sizeof(s));
	s.d = &d;
	s.id = 1;
	s.sock = sv[1];
	s.pid = getpid();
	s.uid = getuid();
	handshake(&s, req, &m, &attached);
	FUZZ_CHECK(!attached, "served fds that are no presence guest_memfds");
	close(s.sock);
	pthread_mutex_destroy(&d.lock);

	/* every answer decodes; keep the last */
	for (;;) {
		n = recv(sv[0], ans, sizeof(ans), MSG_DONTWAIT);
		if (n <= 0)
			break;
		FUZZ_CHECK(gmfp_pager_decode(ans, (size_t)n, &got) == n,
			   "an answer that does not decode (%zd bytes)", n);
		answers++;
		last = got.type;
		last_err = got.type == GMFP_PAGER_ERROR ? got.u.error.err : 0;
	}
	close(sv[0]);
	if (getenv("FUZZ_DEBUG"))
		fprintf(stderr, "fuzz_pager: %zu bytes (decode %zd), %u fds: %d answers, last"
			" type %u err %d \"%s\"\n", size, dec, nfds, answers, last, last_err,
			last == GMFP_PAGER_ERROR ? got.u.error.msg : "");
	FUZZ_CHECK(fd_count() == base, "%d fds after the handshake, %d before (%u sent)",
		   fd_count(), base, nfds);

	if (!size) {
		FUZZ_CHECK(!answers, "an answer to nothing");
		return;
	}
	FUZZ_CHECK(answers >= 1, "no answer");
	/* longer than any request: cut short, dropped unread (with its fds) */
	if (size > GMFP_PAGER_MAX_REQUEST)
		dec = -EMSGSIZE;
	else if (nfds > GMFP_PAGER_MAX_FDS) {
		FUZZ_CHECK(last == GMFP_PAGER_ERROR && last_err == -EINVAL &&
			   strstr(got.u.error.msg, "more than"),
			   "%u fds: type %u err %d", nfds, last, last_err);
		return;
	}
	if (dec < 0) {
		int want_err = dec == -EPROTONOSUPPORT || dec == -EMSGSIZE || dec == -EINVAL ?
			       (int)dec : -EBADMSG;

		FUZZ_CHECK(last == GMFP_PAGER_ERROR && last_err == want_err,
			   "undecodable (%zd): type %u err %d", dec, last, last_err);
		return;
	}
	/* the decode of the packet the daemon judged */
	FUZZ_CHECK(gmfp_pager_decode(pkt, size, &dm) == dec, "decodes differently");
	if (dm.type != GMFP_PAGER_ATTACH) {
		if (nfds)
			FUZZ_CHECK(last == GMFP_PAGER_ERROR && last_err == -EBADMSG &&
				   strstr(got.u.error.msg, "file descriptors sent with"),
				   "fds with type %u: type %u err %d", dm.type, last, last_err);
		else if (dm.type == GMFP_PAGER_STATUS)
			FUZZ_CHECK(last == GMFP_PAGER_STATUS_REPLY, "STATUS: type %u", last);
		else if (dm.type == GMFP_PAGER_DETACH)
			FUZZ_CHECK(last == GMFP_PAGER_DETACHED, "DETACH: type %u", last);
		else
			FUZZ_CHECK(last == GMFP_PAGER_ERROR && last_err == -EBADMSG,
				   "type %u from a VMM: type %u err %d", dm.type, last, last_err);
		return;
	}
	FUZZ_CHECK(answers == 1 && last == GMFP_PAGER_ERROR, "ATTACH: %d answers, type %u",
		   answers, last);
	want = dm.u.attach.nr_regions + (dm.u.attach.source == GMFP_PAGER_SRC_FILE);
	if (nfds != want) {
		FUZZ_CHECK(last_err == -EINVAL && strstr(got.u.error.msg, "file descriptors sent"),
			   "%u fds for %u: err %d \"%s\"", nfds, want, last_err, got.u.error.msg);
		return;
	}
	for (i = 0; i < dm.u.attach.nr_regions; i++)
		bad_region |= !regular((kinds >> (3 * i)) & 7);
	bad_image = dm.u.attach.source == GMFP_PAGER_SRC_FILE &&
		    (kinds >> (3 * (nfds - 1)) & 7) >= FD_IMAGE_WRONLY;
	FUZZ_CHECK(last_err == -EINVAL || last_err == -EBADF || last_err == -ENOTTY ||
		   last_err == -ENOMEM, "ATTACH refused with %d \"%s\"", last_err,
		   got.u.error.msg);
	if (bad_region || bad_image)
		FUZZ_CHECK(last_err != -ENOTTY, "a bad fd kind got to the engine: \"%s\"",
			   got.u.error.msg);
	if (last_err == -EBADF)
		FUZZ_CHECK(bad_image, "EBADF without a bad image: \"%s\"", got.u.error.msg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t no_plan[PLAN_SIZE];
	const uint8_t *plan = size >= PLAN_SIZE ? data : no_plan;
	size_t skip = size >= PLAN_SIZE ? PLAN_SIZE : size;
	ssize_t dec = check_codec(data + skip, size - skip);

	check_handshake(plan, data + skip, size - skip, dec);
	return 0;
}
