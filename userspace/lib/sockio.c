// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Socket I/O of the wire protocol, for both of its ends: gmfp_wire_serve()
 * (serve.c) and gmfp_source_tcp() (source_tcp.c).
 *
 * Every send()/recv() is MSG_DONTWAIT after a poll() with a deadline, so
 * that the socket may be blocking or not and a peer that stops reading, or
 * stops in the middle of a frame, costs us at most the time the caller
 * allows, never a thread forever.
 */
#include <limits.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>

#include "gmfp_wire.h"
#include "internal.h"

int gmfp_sock_wait(int fd, short events, uint64_t deadline)
{
	for (;;) {
		struct pollfd pfd = { .fd = fd, .events = events };
		int tmo = -1, r;

		if (deadline) {
			uint64_t now = gmfp_now_ns(), ms;

			if (now >= deadline)
				return -ETIMEDOUT;
			ms = (deadline - now + 999999) / 1000000;
			tmo = ms > INT_MAX ? INT_MAX : (int)ms;
		}
		r = poll(&pfd, 1, tmo);
		if (r > 0)
			return 0;	/* readiness or an error: the I/O call tells */
		if (r < 0 && errno != EINTR)
			return -errno;
		/* timed out or interrupted: the deadline check decides */
	}
}

int gmfp_sock_send_all(int fd, const void *buf, size_t len, uint64_t deadline)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
		int r;

		if (n > 0) {
			p += n;
			len -= (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
			return -errno;
		r = gmfp_sock_wait(fd, POLLOUT, deadline);
		if (r)
			return r;
	}
	return 0;
}

/* The payload length a frame's header announces (wire.c checks the rest). */
static uint32_t hdr_length(const uint8_t *hdr)
{
	return (uint32_t)hdr[8] | (uint32_t)hdr[9] << 8 | (uint32_t)hdr[10] << 16 |
	       (uint32_t)hdr[11] << 24;
}

ssize_t gmfp_sock_recv_frame(int fd, struct gmfp_sock_rbuf *rb,
			     struct gmfp_wire_msg *m, uint64_t deadline,
			     uint32_t timeout_ms)
{
	for (;;) {
		ssize_t n = gmfp_wire_decode(rb->buf, rb->len, m);
		int r;

		if (n)
			return n;
		/*
		 * decode() wants more of a frame it has not rejected.  One that
		 * cannot fit is one this end never expects (serve.c's buffer
		 * holds only what a client sends); otherwise there is room.
		 */
		if (rb->len >= GMFP_WIRE_HDR_SIZE &&
		    GMFP_WIRE_HDR_SIZE + (size_t)hdr_length(rb->buf) > rb->size)
			return -EBADMSG;
		/* No deadline of the caller's: the clock starts with the first byte. */
		if (!deadline && rb->len && timeout_ms)
			deadline = gmfp_sock_deadline(timeout_ms);
		r = gmfp_sock_wait(fd, POLLIN, deadline);
		if (r)
			return r;
		n = recv(fd, rb->buf + rb->len, rb->size - rb->len, MSG_DONTWAIT);
		if (n > 0) {
			rb->len += (size_t)n;
			continue;
		}
		if (n == 0)	/* EOF: orderly only between frames */
			return rb->len ? -ECONNRESET : 0;
		if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK)
			return -errno;
	}
}

void gmfp_sock_consume(struct gmfp_sock_rbuf *rb, size_t n)
{
	rb->len -= n;
	memmove(rb->buf, rb->buf + n, rb->len);
}

ssize_t gmfp_sock_send_fds(int fd, const void *buf, size_t len, const int *fds,
			   unsigned int nfds, int flags)
{
	union {
		char b[CMSG_SPACE(sizeof(int) * GMFP_SOCK_MAX_FDS)];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	ssize_t n;

	if (nfds > GMFP_SOCK_MAX_FDS)
		return -EINVAL;
	if (nfds) {
		struct cmsghdr *c;

		memset(&ctl, 0, sizeof(ctl));
		mh.msg_control = ctl.b;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
	}
	n = sendmsg(fd, &mh, flags);
	return n < 0 ? -errno : n;
}
