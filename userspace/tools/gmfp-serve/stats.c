// SPDX-License-Identifier: LGPL-2.1-or-later
/* gmfp-serve: counters as JSON, and the log. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gmfp-serve.h"

static const char *const err_names[GS_ERR_NR] = {
	[GS_ERR_MALFORMED] = "malformed",
	[GS_ERR_OVERSIZED] = "oversized",
	[GS_ERR_VERSION] = "version",
	[GS_ERR_HANDSHAKE] = "handshake",
	[GS_ERR_TIMEOUT] = "timeout",
	[GS_ERR_RESET] = "reset",
	[GS_ERR_IO] = "io",
	[GS_ERR_FETCH] = "fetch",
	[GS_ERR_NOT_PRESENT] = "not_present",
};

const char *gs_err_name(enum gs_err kind)
{
	return kind < GS_ERR_NR ? err_names[kind] : "?";
}

uint64_t gs_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t ld(const _Atomic uint64_t *c)
{
	return atomic_load_explicit(c, memory_order_relaxed);
}

/*
 * Every value is read once, without a lock: the object is a snapshot of
 * counters that move while it is written, good for monitoring, and this
 * runs from the main thread while connections are being served.
 */
int gs_stats_json(const struct gs_stats *st, char *buf, size_t len)
{
	size_t pos = 0;
	int n, i;

#define ADD(...) do {							\
	n = snprintf(pos < len ? buf + pos : NULL, pos < len ? len - pos : 0, \
		     __VA_ARGS__);					\
	if (n < 0)							\
		return -1;						\
	pos += (size_t)n;						\
} while (0)
	ADD("{\"connections\":%" PRIu64 ",\"active\":%" PRIu64 ",\"refused\":%" PRIu64,
	    ld(&st->conns), ld(&st->active), ld(&st->refused));
	ADD(",\"requests\":{\"demand\":%" PRIu64 ",\"background\":%" PRIu64 "}",
	    ld(&st->requests[GS_DEMAND]), ld(&st->requests[GS_BACKGROUND]));
	ADD(",\"pages\":{\"demand\":%" PRIu64 ",\"background\":%" PRIu64
	    ",\"zero\":%" PRIu64 ",\"repeat\":%" PRIu64 "}",
	    ld(&st->pages[GS_DEMAND]), ld(&st->pages[GS_BACKGROUND]),
	    ld(&st->zero_pages), ld(&st->repeats));
	ADD(",\"bytes\":%" PRIu64 ",\"background_waits\":%" PRIu64 ",\"errors\":{",
	    ld(&st->bytes), ld(&st->bg_waits));
	for (i = 0; i < GS_ERR_NR; i++)
		ADD("%s\"%s\":%" PRIu64, i ? "," : "", err_names[i], ld(&st->errors[i]));
	ADD("}}");
#undef ADD
	return pos > (size_t)INT32_MAX ? -1 : (int)pos;
}

static void vlog(const char *fmt, va_list ap, uint64_t suppressed)
{
	char line[512];
	size_t n;
	int k;

	k = snprintf(line, sizeof(line), PROG ": ");
	n = (size_t)k;
	k = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
	n = k < 0 ? n : n + (size_t)k;
	if (n > sizeof(line) - 2)
		n = sizeof(line) - 2;	/* truncated, but still one line */
	if (suppressed) {
		k = snprintf(line + n, sizeof(line) - n,
			     " (%" PRIu64 " similar messages suppressed)", suppressed);
		n = k < 0 ? n : n + (size_t)k;
		if (n > sizeof(line) - 2)
			n = sizeof(line) - 2;
	}
	line[n++] = '\n';
	/* one write(): lines from several threads never mix */
	if (write(STDERR_FILENO, line, n) < 0) {
		/* nowhere left to say it */
	}
}

void gs_log(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlog(fmt, ap, 0);
	va_end(ap);
}

#define RL_BURST 20	/* lines per second */

void gs_log_rl(struct gs_ratelimit *rl, const char *fmt, ...)
{
	uint64_t now = gs_now_ns(), suppressed = 0;
	bool out = false;
	va_list ap;

	pthread_mutex_lock(&rl->lock);
	if (now - rl->window_ns >= 1000000000ull || !rl->window_ns) {
		rl->window_ns = now;
		rl->in_window = 0;
	}
	if (rl->in_window < RL_BURST) {
		rl->in_window++;
		suppressed = rl->suppressed;
		rl->suppressed = 0;
		out = true;
	} else {
		rl->suppressed++;
	}
	pthread_mutex_unlock(&rl->lock);
	if (!out)
		return;
	va_start(ap, fmt);
	vlog(fmt, ap, suppressed);
	va_end(ap);
}
