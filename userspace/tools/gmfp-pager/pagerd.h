/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * gmfp-pager internals: the daemon (pagerd.c: options, the listening
 * socket, the accept loop, status JSON) and its sessions (session.c: one
 * thread per connection, the handshake, the engine serving a VMM's
 * guest_memfds).  No global state: everything hangs off struct pagerd, so
 * the unit tests can run the daemon in a child of their own.
 */
#ifndef GMFP_PAGERD_H
#define GMFP_PAGERD_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "gmfp.h"
#include "gmfp_pager.h"

#define PAGERD_MAX_ALLOW	32
#define PAGERD_HISTORY		8	/* ended sessions kept for the status */

/* exit codes */
#define PAGERD_EXIT_OK		0	/* shut down by SIGTERM / SIGINT */
#define PAGERD_EXIT_ERROR	1	/* could not run (socket, memory, ...) */
#define PAGERD_EXIT_USAGE	2	/* bad command line */
#define PAGERD_EXIT_INUSE	3	/* the socket path is taken */

enum session_state {
	SESSION_HANDSHAKE,	/* connected, not attached */
	SESSION_SERVING,	/* an engine serves its guest_memfds */
	SESSION_CLOSING,	/* being torn down */
};

/* A run of one guest_memfd's pages that one region of the ATTACH names. */
struct extent {
	uint32_t region;	/* index in the ATTACH */
	uint64_t first;		/* first page in the guest_memfd */
	uint64_t npages;
};

/* A distinct guest_memfd of a session: engine region number = its index. */
struct gmem {
	dev_t dev;
	ino_t ino;
	int fd;			/* borrowed from the received fds */
	uint64_t size;
	uint32_t first_region;	/* the first ATTACH region naming it */
	uint32_t ext_start, ext_count;	/* its extents in session.ext[] */
	bool private_mem;
};

struct pagerd;

struct session {
	struct session *next;
	struct pagerd *d;
	uint32_t id;
	int sock;
	pid_t pid;
	uid_t uid;
	pthread_t thread;
	uint64_t t_connect_ns;

	/* under d->lock */
	enum session_state state;
	bool finished;			/* thread done: join and free it */
	bool claimed;			/* gmems[] are ours (no other session's) */
	struct gmfp_engine *engine;	/* non-NULL while the engine exists */

	/* written before the engine is published, read-only afterwards */
	struct gmfp_pager_attach_msg req;
	uint32_t nr_gmems;
	struct gmem gmems[GMFP_PAGER_MAX_REGIONS];
	struct extent ext[GMFP_PAGER_MAX_REGIONS];
	struct gmfp_engine *eng;	/* owned by the session thread */
	struct gmfp_source *inner;	/* the file or TCP source */
	struct gmfp_source *src;	/* maps guest_memfd pages onto it */
	uint32_t workers;
	uint64_t pages_total, pages_at_attach;
	uint64_t t_attach_ns;
	pthread_t waiter;
	bool waiter_started;

	_Atomic uint64_t t_complete_ns;	/* 0 until every page is present */
	_Atomic uint64_t last_err_log_ns;
	_Atomic uint64_t errors_logged;
	const char *end_reason;
};

struct pagerd_counters {
	uint64_t connections, refused_uid, refused_busy, protocol_errors;
	uint64_t attached, attach_failed, detached, dropped, ended;
};

struct pagerd {
	/* options */
	const char *socket_path;
	uid_t allow[PAGERD_MAX_ALLOW];
	unsigned int nr_allow;
	unsigned int max_sessions;
	unsigned int timeout_ms;
	unsigned int default_workers, max_workers;
	bool json, quiet;

	/* runtime */
	int lfd, sigfd, reapfd, stopfd;
	bool bound;
	dev_t sock_dev;
	ino_t sock_ino;
	uint64_t t0_ns;
	uint64_t accept_pause_until_ns;
	uint64_t last_refusal_log_ns;
	pthread_attr_t thread_attr;	/* of session threads */

	pthread_mutex_t lock;		/* everything below, and sessions' state */
	struct session *sessions;
	unsigned int nr_sessions;
	uint32_t next_id;
	char *history[PAGERD_HISTORY];
	unsigned int history_next;
	struct pagerd_counters n;
};

/* A JSON text being built in a fixed buffer; @over once something did not fit. */
struct jbuf {
	char *buf;
	size_t len, cap;	/* cap counts the NUL */
	bool over;
};

void jb_printf(struct jbuf *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void jb_str(struct jbuf *j, const char *s);	/* a JSON string, escaped */

uint64_t pagerd_now_ns(void);
void pagerd_log(struct pagerd *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
const char *pagerd_strerror(int err, char *buf, size_t len);

/*
 * Send @m on @fd, waiting up to @timeout_ms for room (0: not at all):
 * 0 or -errno.
 */
int pagerd_send(int fd, const struct gmfp_pager_msg *m, unsigned int timeout_ms);
int pagerd_send_error(int fd, int err, uint32_t region, unsigned int timeout_ms,
		      const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* The whole daemon's status, under d->lock; returns the JSON's length. */
size_t pagerd_status_json(struct pagerd *d, char *buf, size_t cap);

/* session.c */
void *session_main(void *arg);
/*
 * One session's JSON object; caller holds d->lock.  @detail: with its
 * regions (for the session's own status; the daemon's lists only counts).
 */
void session_json(struct session *s, struct jbuf *j, bool detail);

/* The command: returns the exit code. */
int pagerd_main(int argc, char **argv);

#endif /* GMFP_PAGERD_H */
