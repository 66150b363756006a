// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * gmfp-pager: the daemon.  Listens on a Unix SOCK_SEQPACKET socket, checks
 * every peer's uid (SO_PEERCRED) before reading a byte from it, and gives
 * each accepted connection a thread of its own (session.c), so that a
 * hostile or stuck peer holds up nobody but itself; the number of
 * connections is bounded (--max-sessions), and every read and write of a
 * session has a timeout except the wait of an attached VMM's socket, which
 * may be silent for as long as the VM runs.
 *
 * The main thread only accepts, refuses, reaps finished sessions and waits
 * for SIGTERM/SIGINT (signalfd: the signals are blocked in every thread).
 * On shutdown every session stops its engine, which leaves the pages not
 * yet present not present: the VMMs see end of file and may attach to a
 * new pager, which carries on where this one stopped.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "pagerd.h"

#define DEFAULT_MAX_SESSIONS	16
#define DEFAULT_TIMEOUT_MS	5000
#define DEFAULT_WORKERS		2
#define DEFAULT_MAX_WORKERS	16
#define LISTEN_BACKLOG		64
#define SESSION_STACK		(1u << 20)
/* closing part of the status JSON, kept free while sessions are added */
#define JSON_TAIL_ROOM		256

uint64_t pagerd_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void pagerd_log(struct pagerd *d, const char *fmt, ...)
{
	char line[512];
	va_list ap;

	if (d->quiet)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	/* one write per line: sessions log from their own threads */
	fprintf(stderr, "gmfp-pager[%d]: %s\n", (int)getpid(), line);
}

const char *pagerd_strerror(int err, char *buf, size_t len)
{
	return strerror_r(err < 0 ? -err : err, buf, len);
}

/* ---- JSON ---- */

void jb_printf(struct jbuf *j, const char *fmt, ...)
{
	size_t room = j->cap - j->len;
	va_list ap;
	int n;

	if (j->over)
		return;
	va_start(ap, fmt);
	n = vsnprintf(j->buf + j->len, room, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= room) {
		j->over = true;
		j->buf[j->len] = 0;
		return;
	}
	j->len += (size_t)n;
}

void jb_str(struct jbuf *j, const char *s)
{
	jb_printf(j, "\"");
	for (; *s && !j->over; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			jb_printf(j, "\\%c", c);
		else if (c < 0x20 || c > 0x7e)
			jb_printf(j, "\\u%04x", c);
		else
			jb_printf(j, "%c", c);
	}
	jb_printf(j, "\"");
}

static void counters_json(struct pagerd *d, struct jbuf *j)
{
	const struct pagerd_counters *n = &d->n;

	jb_printf(j, "{\"version\":\"%s\",\"protocol\":%u,\"pid\":%d,\"uptime_ms\":%" PRIu64
		  ",\"socket\":", gmfp_version(), GMFP_PAGER_VERSION, (int)getpid(),
		  (pagerd_now_ns() - d->t0_ns) / 1000000);
	jb_str(j, d->socket_path);
	jb_printf(j, ",\"max_sessions\":%u,\"sessions\":%u,\"connections\":%" PRIu64
		  ",\"refused_uid\":%" PRIu64 ",\"refused_busy\":%" PRIu64
		  ",\"protocol_errors\":%" PRIu64 ",\"attached\":%" PRIu64
		  ",\"attach_failed\":%" PRIu64 ",\"detached\":%" PRIu64
		  ",\"dropped\":%" PRIu64 ",\"ended\":%" PRIu64 "}",
		  d->max_sessions, d->nr_sessions, n->connections, n->refused_uid,
		  n->refused_busy, n->protocol_errors, n->attached, n->attach_failed,
		  n->detached, n->dropped, n->ended);
}

/*
 * {"pager":{counters},"sessions":[...],"sessions_omitted":N,
 *  "ended_sessions":[...]}: sessions that do not fit GMFP_PAGER_MAX_JSON
 * are left out and counted rather than cut in the middle.
 */
size_t pagerd_status_json(struct pagerd *d, char *buf, size_t cap)
{
	struct jbuf j = { .buf = buf, .cap = cap - JSON_TAIL_ROOM };
	unsigned int omitted = 0, i, k;
	struct session *s;
	bool first = true;

	jb_printf(&j, "{\"pager\":");
	counters_json(d, &j);
	jb_printf(&j, ",\"sessions\":[");
	for (s = d->sessions; s && !j.over; s = s->next) {
		size_t pos = j.len;

		if (s->finished)
			continue;
		jb_printf(&j, "%s", first ? "" : ",");
		session_json(s, &j, false);
		if (j.over) {
			j.len = pos;
			j.over = false;
			omitted++;
			continue;
		}
		first = false;
	}
	jb_printf(&j, "],\"ended_sessions\":[");
	first = true;
	for (i = 0; i < PAGERD_HISTORY; i++) {
		const char *h;
		size_t pos = j.len;

		/* oldest first */
		k = (d->history_next + i) % PAGERD_HISTORY;
		h = d->history[k];
		if (!h)
			continue;
		jb_printf(&j, "%s%s", first ? "" : ",", h);
		if (j.over) {
			j.len = pos;
			j.over = false;
			break;
		}
		first = false;
	}
	j.cap = cap;
	jb_printf(&j, "],\"sessions_omitted\":%u}", omitted);
	return j.len;
}

/* ---- sending ---- */

int pagerd_send(int fd, const struct gmfp_pager_msg *m, unsigned int timeout_ms)
{
	uint64_t deadline = pagerd_now_ns() + (uint64_t)timeout_ms * 1000000;
	size_t size = m->type == GMFP_PAGER_STATUS_REPLY ? GMFP_PAGER_MAX_MSG : 256;
	uint8_t *buf = malloc(size);
	ssize_t n;
	int r = 0;

	if (!buf)
		return -ENOMEM;
	n = gmfp_pager_encode(buf, size, m);
	if (n < 0) {
		free(buf);
		return (int)n;
	}
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLOUT };
		uint64_t now;
		ssize_t w = send(fd, buf, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (w == n)
			break;
		if (w >= 0) {
			r = -EIO;
			break;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK) {
			r = -errno;
			break;
		}
		/* a peer that does not read its replies gets until the deadline */
		now = pagerd_now_ns();
		if (!timeout_ms || now >= deadline) {
			r = -ETIMEDOUT;
			break;
		}
		if (poll(&p, 1, (int)((deadline - now) / 1000000 + 1)) < 0 && errno != EINTR) {
			r = -errno;
			break;
		}
	}
	free(buf);
	return r;
}

int pagerd_send_error(int fd, int err, uint32_t region, unsigned int timeout_ms,
		      const char *fmt, ...)
{
	struct gmfp_pager_msg m;
	va_list ap;

	memset(&m, 0, sizeof(m));
	m.type = GMFP_PAGER_ERROR;
	m.u.error.err = err < 0 && err >= -4095 ? err : -EIO;
	m.u.error.region = region;
	m.u.error.version = GMFP_PAGER_VERSION;
	va_start(ap, fmt);
	vsnprintf(m.u.error.msg, sizeof(m.u.error.msg), fmt, ap);
	va_end(ap);
	return pagerd_send(fd, &m, timeout_ms);
}

/* ---- sessions ---- */

static bool uid_allowed(struct pagerd *d, uid_t uid)
{
	unsigned int i;

	for (i = 0; i < d->nr_allow; i++)
		if (d->allow[i] == uid)
			return true;
	return false;
}

/* A flood of refused peers must not flood the log: one line a second. */
static bool refusal_log_ok(struct pagerd *d)
{
	uint64_t now = pagerd_now_ns();

	if (now - d->last_refusal_log_ns < 1000000000ull)
		return false;
	d->last_refusal_log_ns = now;
	return true;
}

static void new_connection(struct pagerd *d, int fd)
{
	struct ucred cr;
	socklen_t cl = sizeof(cr);
	struct session *s;
	int r;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &cl) || cl != sizeof(cr)) {
		close(fd);
		return;
	}
	pthread_mutex_lock(&d->lock);
	d->n.connections++;
	if (!uid_allowed(d, cr.uid)) {
		d->n.refused_uid++;
		pthread_mutex_unlock(&d->lock);
		if (refusal_log_ok(d))
			pagerd_log(d, "refused pid %d: uid %u is not allowed (--allow-uid)",
				   (int)cr.pid, (unsigned int)cr.uid);
		/* nothing of what it sent is read: its fds go with the socket */
		pagerd_send_error(fd, -EACCES, GMFP_PAGER_NO_REGION, 0,
				  "uid %u is not allowed to use this pager", (unsigned int)cr.uid);
		close(fd);
		return;
	}
	if (d->nr_sessions >= d->max_sessions) {
		d->n.refused_busy++;
		pthread_mutex_unlock(&d->lock);
		if (refusal_log_ok(d))
			pagerd_log(d, "refused pid %d: %u sessions already (--max-sessions)",
				   (int)cr.pid, d->max_sessions);
		pagerd_send_error(fd, -EAGAIN, GMFP_PAGER_NO_REGION, 0,
				  "too many sessions (%u): try again later", d->max_sessions);
		close(fd);
		return;
	}
	s = calloc(1, sizeof(*s));
	if (!s) {
		pthread_mutex_unlock(&d->lock);
		pagerd_send_error(fd, -ENOMEM, GMFP_PAGER_NO_REGION, 0, "out of memory");
		close(fd);
		return;
	}
	s->d = d;
	s->id = ++d->next_id;
	s->sock = fd;
	s->pid = cr.pid;
	s->uid = cr.uid;
	s->t_connect_ns = pagerd_now_ns();
	s->state = SESSION_HANDSHAKE;
	s->next = d->sessions;
	d->sessions = s;
	d->nr_sessions++;
	pthread_mutex_unlock(&d->lock);
	r = pthread_create(&s->thread, &d->thread_attr, session_main, s);
	if (r) {
		struct session **pp;

		pthread_mutex_lock(&d->lock);
		for (pp = &d->sessions; *pp != s; pp = &(*pp)->next)
			;
		*pp = s->next;
		d->nr_sessions--;
		pthread_mutex_unlock(&d->lock);
		pagerd_send_error(fd, -EAGAIN, GMFP_PAGER_NO_REGION, 0,
				  "cannot start a session: try again later");
		close(fd);
		free(s);
	}
}

static void accept_all(struct pagerd *d)
{
	for (;;) {
		int fd = accept4(d->lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

		if (fd >= 0) {
			new_connection(d, fd);
			continue;
		}
		if (errno == EINTR || errno == ECONNABORTED)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return;
		/*
		 * Out of fds or memory: the connection stays in the backlog and
		 * the socket readable; pause accepting rather than spin.
		 */
		if (refusal_log_ok(d))
			pagerd_log(d, "accept: %s: pausing", strerror(errno));
		d->accept_pause_until_ns = pagerd_now_ns() + 100000000ull;
		return;
	}
}

/* Join and free the sessions whose threads are done (all with @all). */
static void reap(struct pagerd *d, bool all)
{
	struct session **pp, *s, *done = NULL;

	pthread_mutex_lock(&d->lock);
	for (pp = &d->sessions; (s = *pp);) {
		if (all || s->finished) {
			*pp = s->next;
			s->next = done;
			done = s;
		} else {
			pp = &s->next;
		}
	}
	pthread_mutex_unlock(&d->lock);
	while ((s = done)) {
		done = s->next;
		pthread_join(s->thread, NULL);
		free(s);
	}
}

/* ---- the listening socket ---- */

static int sock_addr(const char *path, struct sockaddr_un *a)
{
	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(a->sun_path))
		return -ENAMETOOLONG;
	strcpy(a->sun_path, path);
	return 0;
}

/*
 * Take @path: a stale socket (nobody accepts on it: a pager that died) is
 * replaced, a live one or anything that is not a socket is left alone.
 */
static int listen_on(struct pagerd *d)
{
	struct sockaddr_un a;
	struct stat st;
	mode_t old;
	int fd, r;

	if (sock_addr(d->socket_path, &a)) {
		fprintf(stderr, "gmfp-pager: %s: socket path too long (at most %zu bytes)\n",
			d->socket_path, sizeof(a.sun_path) - 1);
		return PAGERD_EXIT_USAGE;
	}
	if (!lstat(d->socket_path, &st)) {
		if (!S_ISSOCK(st.st_mode)) {
			fprintf(stderr, "gmfp-pager: %s exists and is not a socket\n",
				d->socket_path);
			return PAGERD_EXIT_INUSE;
		}
		fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			perror("gmfp-pager: socket");
			return PAGERD_EXIT_ERROR;
		}
		r = connect(fd, (struct sockaddr *)&a, sizeof(a)) ? errno : 0;
		close(fd);
		if (!r || r == EPROTOTYPE) {
			fprintf(stderr, "gmfp-pager: %s: %s is listening on it\n", d->socket_path,
				r ? "another program" : "another pager");
			return PAGERD_EXIT_INUSE;
		}
		if (r != ECONNREFUSED) {
			fprintf(stderr, "gmfp-pager: %s: %s\n", d->socket_path, strerror(r));
			return PAGERD_EXIT_ERROR;
		}
		pagerd_log(d, "%s: replacing a stale socket", d->socket_path);
		if (unlink(d->socket_path) && errno != ENOENT) {
			fprintf(stderr, "gmfp-pager: unlink %s: %s\n", d->socket_path,
				strerror(errno));
			return PAGERD_EXIT_INUSE;
		}
	}
	d->lfd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (d->lfd < 0) {
		perror("gmfp-pager: socket");
		return PAGERD_EXIT_ERROR;
	}
	/* created 0600 and opened up only when other uids may connect */
	old = umask(077);
	r = bind(d->lfd, (struct sockaddr *)&a, sizeof(a)) ? errno : 0;
	umask(old);
	if (r) {
		fprintf(stderr, "gmfp-pager: bind %s: %s\n", d->socket_path, strerror(r));
		return r == EADDRINUSE ? PAGERD_EXIT_INUSE : PAGERD_EXIT_ERROR;
	}
	d->bound = true;
	if (lstat(d->socket_path, &st)) {
		perror("gmfp-pager: lstat");
		return PAGERD_EXIT_ERROR;
	}
	d->sock_dev = st.st_dev;
	d->sock_ino = st.st_ino;
	if ((d->nr_allow != 1 || d->allow[0] != geteuid()) && chmod(d->socket_path, 0666)) {
		perror("gmfp-pager: chmod");
		return PAGERD_EXIT_ERROR;
	}
	if (listen(d->lfd, LISTEN_BACKLOG)) {
		perror("gmfp-pager: listen");
		return PAGERD_EXIT_ERROR;
	}
	return PAGERD_EXIT_OK;
}

/* Remove the socket file, unless a successor has replaced it meanwhile. */
static void unlink_ours(struct pagerd *d)
{
	struct stat st;

	if (d->bound && !lstat(d->socket_path, &st) && st.st_dev == d->sock_dev &&
	    st.st_ino == d->sock_ino)
		unlink(d->socket_path);
}

/* ---- command line ---- */

static void usage(FILE *f)
{
	fprintf(f,
"Usage: gmfp-pager --socket PATH [options]\n"
"\n"
"Serve the presence faults of VMs' guest_memfds, handed over on a Unix\n"
"socket (gmfp_pager_attach(3)), from an image file or a page server.\n"
"One session per connection, each with its own fault engine; a session\n"
"ends when its connection closes, and the pages not yet present then stay\n"
"so, for a new pager to serve when the VMM attaches again.\n"
"\n"
"Options:\n"
"  -s, --socket PATH       listen here (required); a stale socket is replaced\n"
"  -u, --allow-uid UID     uid allowed to connect (repeatable; default: own uid)\n"
"  -m, --max-sessions N    connections at a time, beyond: refused (default %u)\n"
"  -t, --timeout-ms MS     for a request, a reply to go out (default %u)\n"
"  -w, --workers N         engine threads of a session that asks for 0 (default %u)\n"
"      --max-workers N     most engine threads a session may ask for (default %u)\n"
"  -j, --json              print the final statistics as JSON on stdout at exit\n"
"  -f, --foreground        stay in the foreground (the default; there is no other)\n"
"  -q, --quiet             no log on stderr\n"
"  -V, --version           print the version\n"
"  -h, --help              this text\n"
"\n"
"Statistics: gmfp_pager_status(3), any time, as JSON.\n"
"Signals: SIGTERM, SIGINT: stop every session and exit.\n"
"Exit status: 0 after SIGTERM/SIGINT, 1 if it could not run, 2 for a bad\n"
"command line, 3 if the socket path is in use (another pager, or not a socket).\n",
		DEFAULT_MAX_SESSIONS, DEFAULT_TIMEOUT_MS, DEFAULT_WORKERS, DEFAULT_MAX_WORKERS);
}

static bool parse_uint(const char *s, unsigned long min, unsigned long max,
		       unsigned long *out)
{
	char *end;
	unsigned long v;

	if (!s || !*s || *s == '-' || *s == '+')
		return false;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end || v < min || v > max)
		return false;
	*out = v;
	return true;
}

/* Returns -1 to go on, or an exit code. */
static int parse_args(struct pagerd *d, int argc, char **argv)
{
	enum { OPT_MAX_WORKERS = 256 };
	static const struct option longopts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "allow-uid", required_argument, NULL, 'u' },
		{ "max-sessions", required_argument, NULL, 'm' },
		{ "timeout-ms", required_argument, NULL, 't' },
		{ "workers", required_argument, NULL, 'w' },
		{ "max-workers", required_argument, NULL, OPT_MAX_WORKERS },
		{ "json", no_argument, NULL, 'j' },
		{ "foreground", no_argument, NULL, 'f' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	unsigned long v;
	int c;

	d->max_sessions = DEFAULT_MAX_SESSIONS;
	d->timeout_ms = DEFAULT_TIMEOUT_MS;
	d->default_workers = DEFAULT_WORKERS;
	d->max_workers = DEFAULT_MAX_WORKERS;
	optind = 1;
	opterr = 1;
	while ((c = getopt_long(argc, argv, "s:u:m:t:w:jfqVh", longopts, NULL)) != -1) {
		switch (c) {
		case 's':
			d->socket_path = optarg;
			break;
		case 'u':
			if (!parse_uint(optarg, 0, UINT_MAX - 1, &v)) {
				fprintf(stderr, "gmfp-pager: --allow-uid %s: not a uid\n", optarg);
				return PAGERD_EXIT_USAGE;
			}
			if (d->nr_allow == PAGERD_MAX_ALLOW) {
				fprintf(stderr, "gmfp-pager: at most %d --allow-uid\n",
					PAGERD_MAX_ALLOW);
				return PAGERD_EXIT_USAGE;
			}
			d->allow[d->nr_allow++] = (uid_t)v;
			break;
		case 'm':
			if (!parse_uint(optarg, 1, 4096, &v)) {
				fprintf(stderr, "gmfp-pager: --max-sessions %s: 1..4096\n", optarg);
				return PAGERD_EXIT_USAGE;
			}
			d->max_sessions = (unsigned int)v;
			break;
		case 't':
			if (!parse_uint(optarg, 10, 3600000, &v)) {
				fprintf(stderr, "gmfp-pager: --timeout-ms %s: 10..3600000\n", optarg);
				return PAGERD_EXIT_USAGE;
			}
			d->timeout_ms = (unsigned int)v;
			break;
		case 'w':
			if (!parse_uint(optarg, 1, 64, &v)) {
				fprintf(stderr, "gmfp-pager: --workers %s: 1..64\n", optarg);
				return PAGERD_EXIT_USAGE;
			}
			d->default_workers = (unsigned int)v;
			break;
		case OPT_MAX_WORKERS:
			if (!parse_uint(optarg, 1, 64, &v)) {
				fprintf(stderr, "gmfp-pager: --max-workers %s: 1..64\n", optarg);
				return PAGERD_EXIT_USAGE;
			}
			d->max_workers = (unsigned int)v;
			break;
		case 'j':
			d->json = true;
			break;
		case 'f':
			break;
		case 'q':
			d->quiet = true;
			break;
		case 'V':
			printf("gmfp-pager (libgmfp %s), protocol version %u\n", gmfp_version(),
			       GMFP_PAGER_VERSION);
			return PAGERD_EXIT_OK;
		case 'h':
			usage(stdout);
			return PAGERD_EXIT_OK;
		default:
			usage(stderr);
			return PAGERD_EXIT_USAGE;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "gmfp-pager: unexpected argument \"%s\"\n", argv[optind]);
		usage(stderr);
		return PAGERD_EXIT_USAGE;
	}
	if (!d->socket_path || !*d->socket_path) {
		fprintf(stderr, "gmfp-pager: --socket PATH is required\n");
		usage(stderr);
		return PAGERD_EXIT_USAGE;
	}
	if (d->default_workers > d->max_workers) {
		fprintf(stderr, "gmfp-pager: --workers %u above --max-workers %u\n",
			d->default_workers, d->max_workers);
		return PAGERD_EXIT_USAGE;
	}
	if (!d->nr_allow)
		d->allow[d->nr_allow++] = geteuid();
	return -1;
}

/* ---- main loop ---- */

static int run(struct pagerd *d)
{
	for (;;) {
		struct pollfd p[3] = {
			{ .fd = d->sigfd, .events = POLLIN },
			{ .fd = d->reapfd, .events = POLLIN },
			{ .fd = d->lfd, .events = POLLIN },
		};
		uint64_t now = pagerd_now_ns();
		nfds_t n = 3;
		int tmo = -1;

		if (d->accept_pause_until_ns > now) {
			n = 2;
			tmo = (int)((d->accept_pause_until_ns - now) / 1000000 + 1);
		}
		if (poll(p, n, tmo) < 0) {
			if (errno == EINTR)
				continue;
			perror("gmfp-pager: poll");
			return PAGERD_EXIT_ERROR;
		}
		if (p[0].revents & POLLIN) {
			struct signalfd_siginfo si;

			if (read(d->sigfd, &si, sizeof(si)) == sizeof(si) &&
			    (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT)) {
				pagerd_log(d, "%s: shutting down", strsignal((int)si.ssi_signo));
				return PAGERD_EXIT_OK;
			}
		}
		/* reap first: a finished session frees its slot for a new peer */
		if (p[1].revents & POLLIN) {
			uint64_t v;

			if (read(d->reapfd, &v, sizeof(v)) < 0 && errno != EAGAIN)
				perror("gmfp-pager: read");
			reap(d, false);
		}
		if (n == 3 && (p[2].revents & (POLLIN | POLLERR | POLLHUP)))
			accept_all(d);
	}
}

static void cleanup(struct pagerd *d)
{
	unsigned int i;

	if (d->lfd >= 0)
		close(d->lfd);
	unlink_ours(d);
	if (d->sigfd >= 0)
		close(d->sigfd);
	if (d->reapfd >= 0)
		close(d->reapfd);
	if (d->stopfd >= 0)
		close(d->stopfd);
	for (i = 0; i < PAGERD_HISTORY; i++)
		free(d->history[i]);
	pthread_mutex_destroy(&d->lock);
	pthread_attr_destroy(&d->thread_attr);
	free(d);
}

int pagerd_main(int argc, char **argv)
{
	struct pagerd *d = calloc(1, sizeof(*d));
	sigset_t set;
	uint64_t one = 1;
	int r;

	if (!d) {
		fprintf(stderr, "gmfp-pager: out of memory\n");
		return PAGERD_EXIT_ERROR;
	}
	d->lfd = d->sigfd = d->reapfd = d->stopfd = -1;
	pthread_mutex_init(&d->lock, NULL);
	/* a session thread needs little stack; --max-sessions of them add up */
	pthread_attr_init(&d->thread_attr);
	pthread_attr_setstacksize(&d->thread_attr, SESSION_STACK);
	d->t0_ns = pagerd_now_ns();
	r = parse_args(d, argc, argv);
	if (r >= 0)
		goto out;
	/*
	 * Before any thread exists: the signals we handle are blocked in all
	 * of them and read from the signalfd here; a peer that goes away
	 * mid-send must not kill us (every send is MSG_NOSIGNAL too).
	 */
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	r = PAGERD_EXIT_ERROR;
	d->sigfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	d->reapfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	/* written once at shutdown and never read: readable for every session */
	d->stopfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (d->sigfd < 0 || d->reapfd < 0 || d->stopfd < 0) {
		perror("gmfp-pager");
		goto out;
	}
	r = listen_on(d);
	if (r != PAGERD_EXIT_OK)
		goto out;
	pagerd_log(d, "listening on %s (max %u sessions, %u allowed uid%s)", d->socket_path,
		   d->max_sessions, d->nr_allow, d->nr_allow > 1 ? "s" : "");
	r = run(d);
	/* no new peers; every session stops its engine and ends */
	close(d->lfd);
	d->lfd = -1;
	if (write(d->stopfd, &one, sizeof(one)) < 0)
		perror("gmfp-pager: write");
	reap(d, true);
	if (d->json) {
		char *buf = malloc(GMFP_PAGER_MAX_JSON + 1);

		if (buf) {
			pthread_mutex_lock(&d->lock);
			pagerd_status_json(d, buf, GMFP_PAGER_MAX_JSON + 1);
			pthread_mutex_unlock(&d->lock);
			printf("%s\n", buf);
			fflush(stdout);
			free(buf);
		}
	}
out:
	cleanup(d);
	return r;
}
