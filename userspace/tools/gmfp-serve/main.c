// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * gmfp-serve: serve memory images and live guest_memfds over the gmfp wire
 * protocol (see gmfp-serve.h for the files, --help for the interface).
 *
 * The main thread owns the listening socket and every connection slot:
 * it accepts, starts one thread per connection (each runs
 * gmfp_wire_serve() to the end and tells the main thread through an
 * eventfd that it is done), joins finished threads, writes the stats file,
 * and handles signals through a signalfd, so that no other thread ever sees
 * a signal and shutting down is ordinary code: shut every connection down,
 * join, free, exit 0.
 *
 * Bounds, whatever peers do: at most --max-conns connections (threads)
 * are served; more are accepted and closed at once, so that a flood costs
 * nothing but the accept.  gmfp_wire_serve() reads frames into a fixed
 * buffer and answers one request at a time, so a connection holds two
 * frame-sized buffers at most.  A peer silent in the middle of a frame, or
 * not reading our answers, is dropped after --io-timeout-ms.  Between
 * frames a client may stay idle as long as it likes (it keeps its
 * connections open while it has nothing to ask); TCP keepalive notices
 * one whose host went away.
 *
 * Resuming: the protocol keeps no state across connections, so a client
 * that reconnects, to this process or to one restarted on the same port,
 * simply asks again for the pages it still lacks.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gmfp-serve.h"

#define DEFAULT_LISTEN "127.0.0.1:0"
#define DEFAULT_MAX_CONNS 64
#define MAX_MAX_CONNS 4096
#define DEFAULT_IO_TIMEOUT_MS 10000
#define DEFAULT_STATS_INTERVAL_MS 1000
#define DEFAULT_BG_MAX_WAIT_MS 1000
#define ACCEPT_BACKOFF_MS 100	/* after EMFILE and the like */
/*
 * gmfp_wire_serve() keeps its buffers on the heap; a connection thread
 * needs little stack (sanitizer builds need more than the bare minimum).
 */
#define CONN_STACK (512u << 10)

struct opts {
	const char *listen;
	uint32_t max_conns;
	uint32_t io_timeout_ms;
	uint32_t throttle_us;
	uint32_t bg_max_wait_ms;
	uint32_t stats_interval_ms;
	const char *stats_file;
	bool json, verbose;
};

struct conn {
	struct srv *srv;
	int fd;
	bool used;		/* main thread only */
	_Atomic bool done;	/* set by the thread as its last act */
	pthread_t th;
	char peer[INET6_ADDRSTRLEN + 10];
};

struct srv {
	struct opts o;
	struct gs_stats st;
	struct gs_pages pages;
	struct conn *conns;	/* o.max_conns slots */
	uint32_t nr_used;
	int lfd, sfd, efd;
	_Atomic bool stopping;
	pthread_attr_t attr;
};

/* separate limits: a flood of refusals must not hide why others were closed */
static struct gs_ratelimit refuse_rl = GS_RATELIMIT_INIT;
static struct gs_ratelimit conn_rl = GS_RATELIMIT_INIT;
static struct gs_ratelimit accept_rl = GS_RATELIMIT_INIT;

static void usage(FILE *f)
{
	fprintf(f,
"Usage: " PROG " [options] {--image FILE | --gmem-fd N}...\n"
"\n"
"Serve pages over TCP with the gmfp wire protocol (libgmfp's gmfp_source_tcp()\n"
"is a client): the source side of a post-copy migration, or a snapshot store.\n"
"Each --image and --gmem-fd is one region, in the order given; a region's size\n"
"is its file's.  Demand connections are served before background ones.\n"
"\n"
"  -i, --image FILE          a memory image file (or block device)\n"
"  -g, --gmem-fd N           an inherited guest_memfd (shared, mmap-able), e.g.\n"
"                            the running source VM's memory; read through a\n"
"                            read-only mapping.  With presence tracking still on,\n"
"                            a page not present yet is answered with ERROR\n"
"                            (ENODATA), never read.  Any mmap-able fd works.\n"
"  -l, --listen [HOST:]PORT  address to listen on (default " DEFAULT_LISTEN ");\n"
"                            port 0 picks a free one; \":PORT\" is every address;\n"
"                            IPv6 as [ADDR]:PORT.  Once ready, prints\n"
"                            \"listening on HOST:PORT\" on stdout.\n"
"  -c, --max-conns N         connections served at once (default %u); more are\n"
"                            accepted and closed at once, and counted\n"
"  -t, --io-timeout-ms N     drop a peer that stops mid-frame or stops reading\n"
"                            for this long (default %u)\n"
"      --throttle-us N       emulate a slow link: every page takes N us, one\n"
"                            page at a time over all connections (default 0)\n"
"      --bg-max-wait-ms N    longest a background request waits for demand\n"
"                            ones (default %u)\n"
"  -j, --json                print the statistics as JSON on stdout at exit\n"
"  -s, --stats-file PATH     keep the statistics JSON in PATH: rewritten every\n"
"                            --stats-interval-ms (default %u), on SIGUSR1 and\n"
"                            at exit\n"
"      --stats-interval-ms N\n"
"  -v, --verbose             log every connection, not only failures\n"
"  -V, --version\n"
"  -h, --help\n"
"\n"
"Statistics: connections, active, refused, requests and pages by class\n"
"(demand/background), zero pages (flagged, not sent), pages served more than\n"
"once by this process (repeat), page bytes sent, background requests held\n"
"back for demand, errors by kind (malformed, oversized, version, handshake,\n"
"timeout, reset, io: connections closed; fetch, not_present: ERROR answers).\n"
"Each closed connection and each failed fetch is logged on stderr.\n"
"\n"
"SIGTERM, SIGINT: close every connection and exit.  SIGUSR1: write the\n"
"stats file now.\n"
"\n"
"Exit status: 0 after SIGTERM/SIGINT, 1 failure while serving, 2 usage,\n"
"3 an image or fd cannot be served, 4 cannot listen.\n",
		DEFAULT_MAX_CONNS, DEFAULT_IO_TIMEOUT_MS, DEFAULT_BG_MAX_WAIT_MS,
		DEFAULT_STATS_INTERVAL_MS);
}

static bool parse_u32(const char *s, uint32_t min, uint32_t max, uint32_t *out)
{
	unsigned long long v;
	char *end;

	if (!s || !*s || *s == '-' || *s == '+')
		return false;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || v < min || v > max)
		return false;
	*out = (uint32_t)v;
	return true;
}

/*
 * [HOST:]PORT, [V6ADDR]:PORT, :PORT.  *@host is NULL for every address,
 * @buf holds the pieces.
 */
static bool parse_listen(const char *arg, char *buf, size_t len, const char **host,
			 const char **port)
{
	char *colon;

	if (strlen(arg) >= len)
		return false;
	strcpy(buf, arg);
	if (buf[0] == '[') {
		char *end = strchr(buf, ']');

		if (!end || end[1] != ':' || !end[2])
			return false;
		*end = 0;
		*host = buf + 1;
		*port = end + 2;
		return **host;
	}
	colon = strrchr(buf, ':');
	if (!colon) {
		*host = "127.0.0.1";
		*port = buf;
		return *buf;
	}
	if (strchr(buf, ':') != colon)	/* a bare IPv6 address: needs [] */
		return false;
	*colon = 0;
	*host = *buf ? buf : NULL;
	*port = colon + 1;
	return **port;
}

static void addr_name(const struct sockaddr *sa, socklen_t sl, char *buf, size_t len)
{
	char h[INET6_ADDRSTRLEN], p[8];

	if (getnameinfo(sa, sl, h, sizeof(h), p, sizeof(p),
			NI_NUMERICHOST | NI_NUMERICSERV)) {
		snprintf(buf, len, "?");
		return;
	}
	snprintf(buf, len, sa->sa_family == AF_INET6 ? "[%s]:%s" : "%s:%s", h, p);
}

/* The listening socket, non-blocking; its address into @shown. */
static int listen_on(const struct opts *o, const char *host, const char *port,
		     char *shown, size_t len)
{
	struct addrinfo hints, *res, *ai;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	int fd = -1, r, one = 1, err = 0;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_protocol = IPPROTO_TCP;
	hints.ai_flags = AI_PASSIVE;
	r = getaddrinfo(host, port, &hints, &res);
	if (r) {
		gs_log("--listen %s: %s", o->listen, gai_strerror(r));
		return -EINVAL;
	}
	for (ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
			    ai->ai_protocol);
		if (fd < 0) {
			err = errno;
			continue;
		}
		/* a restarted server takes its port back from TIME_WAIT at once */
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (!bind(fd, ai->ai_addr, ai->ai_addrlen) &&
		    !listen(fd, o->max_conns > 128 ? (int)o->max_conns : 128))
			break;
		err = errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0) {
		gs_log("cannot listen on %s: %s", o->listen, strerror(err ? err : EINVAL));
		return -(err ? err : EINVAL);
	}
	if (getsockname(fd, (struct sockaddr *)&ss, &sl)) {
		err = errno;
		close(fd);
		gs_log("cannot listen on %s: %s", o->listen, strerror(err));
		return -err;
	}
	addr_name((struct sockaddr *)&ss, sl, shown, len);
	return fd;
}

static enum gs_err classify(int err, const char **what)
{
	switch (err) {
	case -EBADMSG:
		*what = "malformed frame";
		return GS_ERR_MALFORMED;
	case -EMSGSIZE:
		*what = "oversized frame";
		return GS_ERR_OVERSIZED;
	case -EPROTONOSUPPORT:
		*what = "unsupported protocol version";
		return GS_ERR_VERSION;
	case -ENXIO:
		*what = "client expects another memory layout";
		return GS_ERR_HANDSHAKE;
	case -EINVAL:
		*what = "client expects another page size";
		return GS_ERR_HANDSHAKE;
	case -ETIMEDOUT:
		*what = "timed out (silent mid-frame, or not reading)";
		return GS_ERR_TIMEOUT;
	case -ECONNRESET:
	case -EPIPE:
		*what = "connection lost mid-frame";
		return GS_ERR_RESET;
	case -ENOMEM:
		*what = "out of memory";
		return GS_ERR_IO;
	default:
		*what = "socket error";
		return GS_ERR_IO;
	}
}

static void abort_on_close(int fd)
{
	struct linger l = { .l_onoff = 1, .l_linger = 0 };

	if (setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l))) {
		/* not a TCP socket: its close frees everything anyway */
	}
}

static void *conn_main(void *arg)
{
	GMFP_OPTS_INIT(struct gmfp_serve_opts, so);
	struct conn *c = arg;
	struct srv *s = c->srv;
	uint64_t one = 1;
	int r;

	gs_peer = c->peer;
	so.src = s->pages.src;
	so.nr_regions = s->pages.nr_regions;
	so.region_sizes = s->pages.sizes;
	so.timeout_ms = s->o.io_timeout_ms;
	r = gmfp_wire_serve(c->fd, &so);
	/*
	 * A peer that stopped reading has our answers queued, and a FIN after
	 * them that would never get out: the socket would linger, orphaned,
	 * with its send buffer, until TCP gives up minutes later.  Reset it
	 * instead: the peer sees the drop at once and the memory is freed
	 * with the close.
	 */
	if (r == -ETIMEDOUT)
		abort_on_close(c->fd);
	/* shutting down ends connections from outside: nothing to report */
	if (r < 0 && !atomic_load(&s->stopping)) {
		const char *what;
		enum gs_err kind = classify(r, &what);

		gs_count(&s->st.errors[kind], 1);
		gs_log_rl(&conn_rl, "%s: %s (%s), closing", c->peer, what, strerror(-r));
	} else if (s->o.verbose) {
		gs_log("%s: closed", c->peer);
	}
	gs_count(&s->st.active, (uint64_t)-1);
	atomic_store(&c->done, true);
	if (write(s->efd, &one, sizeof(one)) < 0) {
		/* the counter cannot overflow from this; nothing to do */
	}
	return NULL;
}

/* Turn a connection away: ERROR (EBUSY), if the socket takes it, and close. */
static void refuse(struct srv *s, int fd, const char *peer, const char *why)
{
	uint8_t frame[GMFP_WIRE_HDR_SIZE + 24];
	ssize_t n;

	n = gmfp_wire_encode_error(frame, sizeof(frame), 0, 0, 0, 0, EBUSY);
	if (n > 0 && send(fd, frame, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
		/* best effort: the close says it too */
	}
	close(fd);
	gs_count(&s->st.refused, 1);
	gs_log_rl(&refuse_rl, "%s: refused: %s, closing", peer, why);
}

static void tune(int fd)
{
	int one = 1, idle = 60, intvl = 10, cnt = 6;

	/* a peer whose host vanished while idle between frames: ~2 minutes */
	setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
}

/* Accept everything pending; returns 0, or -errno to back off for a while. */
static int accept_all(struct srv *s)
{
	for (;;) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		char peer[sizeof(((struct conn *)0)->peer)], why[64];
		struct conn *c = NULL;
		uint32_t i;
		int fd, r;

		fd = accept4(s->lfd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC);
		if (fd < 0) {
			switch (errno) {
			case EAGAIN:
#if EWOULDBLOCK != EAGAIN
			case EWOULDBLOCK:
#endif
				return 0;
			case EINTR:
			case ECONNABORTED:
			case EPROTO:
			case EPERM:	/* a firewall said no */
				continue;
			default:
				/* EMFILE, ENFILE, ENOBUFS, ENOMEM: it may pass */
				r = -errno;
				gs_log_rl(&accept_rl, "cannot accept: %s; pausing %u ms",
					  strerror(-r), ACCEPT_BACKOFF_MS);
				return r;
			}
		}
		addr_name((struct sockaddr *)&ss, sl, peer, sizeof(peer));
		if (s->nr_used >= s->o.max_conns) {
			snprintf(why, sizeof(why), "%u connections already (--max-conns)",
				 s->o.max_conns);
			refuse(s, fd, peer, why);
			continue;
		}
		for (i = 0; i < s->o.max_conns; i++) {
			if (!s->conns[i].used) {
				c = &s->conns[i];
				break;
			}
		}
		if (!c) {	/* nr_used says there is one: cannot happen */
			refuse(s, fd, peer, "no free slot");
			continue;
		}
		tune(fd);
		c->srv = s;
		c->fd = fd;
		atomic_store(&c->done, false);
		snprintf(c->peer, sizeof(c->peer), "%s", peer);
		gs_count(&s->st.active, 1);
		r = pthread_create(&c->th, &s->attr, conn_main, c);
		if (r) {
			gs_count(&s->st.active, (uint64_t)-1);
			snprintf(why, sizeof(why), "no thread for it (%s)", strerror(r));
			refuse(s, fd, peer, why);
			continue;
		}
		c->used = true;
		s->nr_used++;
		gs_count(&s->st.conns, 1);
		if (s->o.verbose)
			gs_log("%s: connected", peer);
	}
}

/* Join the threads that are done (all of them with @all). */
static void reap(struct srv *s, bool all)
{
	uint32_t i;

	for (i = 0; i < s->o.max_conns; i++) {
		struct conn *c = &s->conns[i];

		if (!c->used || (!all && !atomic_load(&c->done)))
			continue;
		pthread_join(c->th, NULL);
		close(c->fd);
		c->used = false;
		s->nr_used--;
	}
}

static void write_stats_file(struct srv *s)
{
	static bool failed;	/* say it once, not every interval */
	char json[1024], tmp[PATH_MAX];
	FILE *f;
	int n;

	n = gs_stats_json(&s->st, json, sizeof(json));
	if (n < 0 || (size_t)n >= sizeof(json) ||
	    snprintf(tmp, sizeof(tmp), "%s.tmp", s->o.stats_file) >= (int)sizeof(tmp))
		return;
	/* whole files only: written aside, renamed over the old one */
	f = fopen(tmp, "we");
	if (f) {
		bool ok = fprintf(f, "%s\n", json) > 0;

		ok = !fclose(f) && ok;
		if (ok && !rename(tmp, s->o.stats_file)) {
			failed = false;
			return;
		}
	}
	if (!failed)
		gs_log("--stats-file %s: %s", s->o.stats_file, strerror(errno));
	failed = true;
	unlink(tmp);
}

/* Returns true when it is time to go. */
static bool handle_signals(struct srv *s)
{
	struct signalfd_siginfo si;
	bool quit = false;

	while (read(s->sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		if (si.ssi_signo == SIGUSR1) {
			if (s->o.stats_file)
				write_stats_file(s);
		} else {
			quit = true;
		}
	}
	return quit;
}

static int run(struct srv *s)
{
	uint64_t next_stats = 0, accept_pause = 0;

	if (s->o.stats_file)
		next_stats = gs_now_ns() + (uint64_t)s->o.stats_interval_ms * 1000000;
	for (;;) {
		struct pollfd pfd[3] = {
			{ .fd = s->sfd, .events = POLLIN },
			{ .fd = s->efd, .events = POLLIN },
			{ .fd = s->lfd, .events = POLLIN },
		};
		uint64_t now = gs_now_ns(), wake = UINT64_MAX, v;
		int tmo = -1, n;

		if (accept_pause && now >= accept_pause)
			accept_pause = 0;
		if (accept_pause)
			wake = accept_pause;
		if (next_stats && next_stats < wake)
			wake = next_stats;
		if (wake != UINT64_MAX)
			tmo = wake > now ? (int)((wake - now + 999999) / 1000000) : 0;
		n = poll(pfd, accept_pause ? 2 : 3, tmo);
		if (n < 0 && errno != EINTR) {
			gs_log("poll: %s", strerror(errno));
			return GS_EXIT_RUNTIME;
		}
		if (n > 0 && (pfd[0].revents & POLLIN) && handle_signals(s))
			return GS_EXIT_OK;
		if (n > 0 && (pfd[1].revents & POLLIN)) {
			if (read(s->efd, &v, sizeof(v)) < 0) {
				/* EAGAIN: somebody else's wakeup, reap anyway */
			}
			reap(s, false);
		}
		if (n > 0 && !accept_pause && (pfd[2].revents & POLLIN) && accept_all(s))
			accept_pause = gs_now_ns() + ACCEPT_BACKOFF_MS * 1000000ull;
		now = gs_now_ns();
		if (next_stats && now >= next_stats) {
			write_stats_file(s);
			next_stats = now + (uint64_t)s->o.stats_interval_ms * 1000000;
		}
	}
}

/* SIGTERM/SIGINT: every connection ends, every thread is joined. */
static void stop_all(struct srv *s)
{
	uint32_t i;

	atomic_store(&s->stopping, true);
	close(s->lfd);
	s->lfd = -1;
	gs_pages_stop(&s->pages);
	/* reads as EOF (or a failed send) in gmfp_wire_serve() */
	for (i = 0; i < s->o.max_conns; i++)
		if (s->conns[i].used)
			shutdown(s->conns[i].fd, SHUT_RDWR);
	reap(s, true);
}

static const char *opt_name(const struct option *lopts, int val)
{
	for (; lopts->name; lopts++)
		if (lopts->val == val)
			return lopts->name;
	return "?";
}

enum {
	OPT_THROTTLE = 256,
	OPT_BG_MAX_WAIT,
	OPT_STATS_INTERVAL,
};

int main(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "image", required_argument, NULL, 'i' },
		{ "gmem-fd", required_argument, NULL, 'g' },
		{ "listen", required_argument, NULL, 'l' },
		{ "max-conns", required_argument, NULL, 'c' },
		{ "io-timeout-ms", required_argument, NULL, 't' },
		{ "throttle-us", required_argument, NULL, OPT_THROTTLE },
		{ "bg-max-wait-ms", required_argument, NULL, OPT_BG_MAX_WAIT },
		{ "json", no_argument, NULL, 'j' },
		{ "stats-file", required_argument, NULL, 's' },
		{ "stats-interval-ms", required_argument, NULL, OPT_STATS_INTERVAL },
		{ "verbose", no_argument, NULL, 'v' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct { bool gmem; const char *arg; } *src = NULL;
	uint32_t nr_src = 0, i, fdnum;
	char shown[INET6_ADDRSTRLEN + 10], lbuf[256];
	const char *lhost, *lport;
	struct srv *s;
	sigset_t sigs;
	int c, r, rc = GS_EXIT_OK;

	setvbuf(stdout, NULL, _IOLBF, 0);
	s = calloc(1, sizeof(*s));
	src = calloc((size_t)argc, sizeof(*src));
	if (!s || !src) {
		gs_log("out of memory");
		return GS_EXIT_RUNTIME;
	}
	s->lfd = s->sfd = s->efd = -1;
	s->o.listen = DEFAULT_LISTEN;
	s->o.max_conns = DEFAULT_MAX_CONNS;
	s->o.io_timeout_ms = DEFAULT_IO_TIMEOUT_MS;
	s->o.bg_max_wait_ms = DEFAULT_BG_MAX_WAIT_MS;
	s->o.stats_interval_ms = DEFAULT_STATS_INTERVAL_MS;

	while ((c = getopt_long(argc, argv, "i:g:l:c:t:js:vVh", lopts, NULL)) != -1) {
		switch (c) {
		case 'i':
		case 'g':
			src[nr_src].gmem = c == 'g';
			src[nr_src++].arg = optarg;
			break;
		case 'l':
			s->o.listen = optarg;
			break;
		case 'c':
			if (!parse_u32(optarg, 1, MAX_MAX_CONNS, &s->o.max_conns))
				goto bad_num;
			break;
		case 't':
			if (!parse_u32(optarg, 1, 3600000, &s->o.io_timeout_ms))
				goto bad_num;
			break;
		case OPT_THROTTLE:
			if (!parse_u32(optarg, 0, 1000000, &s->o.throttle_us))
				goto bad_num;
			break;
		case OPT_BG_MAX_WAIT:
			if (!parse_u32(optarg, 0, 3600000, &s->o.bg_max_wait_ms))
				goto bad_num;
			break;
		case OPT_STATS_INTERVAL:
			if (!parse_u32(optarg, 1, 3600000, &s->o.stats_interval_ms))
				goto bad_num;
			break;
		case 'j':
			s->o.json = true;
			break;
		case 's':
			s->o.stats_file = optarg;
			break;
		case 'v':
			s->o.verbose = true;
			break;
		case 'V':
			printf(PROG " (libgmfp %s, wire protocol %u)\n", gmfp_version(),
			       GMFP_WIRE_VERSION);
			rc = GS_EXIT_OK;
			goto out_free;
		case 'h':
			usage(stdout);
			rc = GS_EXIT_OK;
			goto out_free;
		default:
			fprintf(stderr, "Try '" PROG " --help'.\n");
			rc = GS_EXIT_USAGE;
			goto out_free;
		}
		continue;
bad_num:
		gs_log("--%s: bad value '%s'", opt_name(lopts, c), optarg);
		rc = GS_EXIT_USAGE;
		goto out_free;
	}
	if (optind < argc) {
		gs_log("unexpected argument '%s' (images go with --image)", argv[optind]);
		rc = GS_EXIT_USAGE;
		goto out_free;
	}
	if (!parse_listen(s->o.listen, lbuf, sizeof(lbuf), &lhost, &lport)) {
		gs_log("--listen %s: expected [HOST:]PORT", s->o.listen);
		rc = GS_EXIT_USAGE;
		goto out_free;
	}
	if (!nr_src) {
		gs_log("nothing to serve: give --image FILE or --gmem-fd N");
		fprintf(stderr, "Try '" PROG " --help'.\n");
		rc = GS_EXIT_USAGE;
		goto out_free;
	}

	r = gs_pages_init(&s->pages, &s->st, s->o.throttle_us, s->o.bg_max_wait_ms);
	if (r) {
		gs_log("%s", strerror(-r));
		rc = GS_EXIT_RUNTIME;
		goto out_free;
	}
	for (i = 0; i < nr_src; i++) {
		if (src[i].gmem) {
			if (!parse_u32(src[i].arg, 0, INT_MAX, &fdnum)) {
				gs_log("--gmem-fd: bad value '%s'", src[i].arg);
				rc = GS_EXIT_USAGE;
				goto out_pages;
			}
			r = gs_pages_add_gmem(&s->pages, (int)fdnum);
		} else {
			r = gs_pages_add_image(&s->pages, src[i].arg);
		}
		if (r) {
			rc = GS_EXIT_INPUT;
			goto out_pages;
		}
	}
	r = gs_pages_ready(&s->pages);
	if (r) {
		gs_log("%s", strerror(-r));
		rc = GS_EXIT_RUNTIME;
		goto out_pages;
	}

	/*
	 * Signals only through the signalfd, before any thread exists so that
	 * every thread inherits the mask.  SIGPIPE: sends say MSG_NOSIGNAL, but
	 * a closed stdout must not kill us either.
	 */
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	s->sfd = signalfd(-1, &sigs, SFD_NONBLOCK | SFD_CLOEXEC);
	s->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	s->conns = calloc(s->o.max_conns, sizeof(*s->conns));
	if (s->sfd < 0 || s->efd < 0 || !s->conns) {
		gs_log("cannot set up: %s", strerror(errno ? errno : ENOMEM));
		rc = GS_EXIT_RUNTIME;
		goto out_pages;
	}
	r = pthread_attr_init(&s->attr);
	if (r) {
		gs_log("cannot set up: %s", strerror(r));
		rc = GS_EXIT_RUNTIME;
		goto out_pages;
	}
	/* a smaller stack, where the system allows it; the default otherwise */
	pthread_attr_setstacksize(&s->attr, CONN_STACK);
	s->lfd = listen_on(&s->o, lhost, lport, shown, sizeof(shown));
	if (s->lfd < 0) {
		rc = GS_EXIT_LISTEN;
		goto out_attr;
	}
	printf("listening on %s\n", shown);
	fflush(stdout);
	if (s->o.verbose)
		gs_log("serving %u region(s) on %s", s->pages.nr_regions, shown);

	rc = run(s);
	stop_all(s);
	if (s->o.stats_file)
		write_stats_file(s);
	if (s->o.json) {
		char json[1024];

		if (gs_stats_json(&s->st, json, sizeof(json)) > 0)
			printf("%s\n", json);
	}
out_attr:
	pthread_attr_destroy(&s->attr);
out_pages:
	gs_pages_destroy(&s->pages);
out_free:
	if (s->lfd >= 0)
		close(s->lfd);
	if (s->sfd >= 0)
		close(s->sfd);
	if (s->efd >= 0)
		close(s->efd);
	free(s->conns);
	free(s);
	free(src);
	fflush(stdout);
	return rc;
}
