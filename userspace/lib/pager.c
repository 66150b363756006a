// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * The pager protocol (format in gmfp_pager.h): message encoder and decoder,
 * and the client calls a VMM makes to hand its guest_memfds to gmfp-pager.
 *
 * The decoder is fed packets from peers we do not trust (the pager decodes
 * what VMMs send, a VMM what the pager answers), so every integer goes
 * through byte loads, nothing at or after @len is read, and a message is
 * accepted only if every byte is what the format says: one encoding per
 * message, decode followed by encode gives the same bytes back.
 *
 * The transport is SOCK_SEQPACKET: one message per packet, and the packet
 * boundary is the message boundary, so there is no framing to get wrong and
 * a short or long packet is simply malformed.
 */
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "gmfp_pager.h"
#include "internal.h"

#define ATTACHED_BODY	32
#define STATUS_FIXED	8
#define ERROR_BODY	(16 + GMFP_PAGER_ERRMSG_MAX)
#define REPLY_TIMEOUT_MS 5000
#define ATTACH_TIMEOUT_MS 30000
#define MAX_ERRNO	4095

static bool all_zero(const uint8_t *p, size_t n)
{
	while (n--)
		if (*p++)
			return false;
	return true;
}

/* A NUL terminated string in a fixed field, NUL padded: what the wire allows. */
static bool fixed_string_ok(const char *s, size_t size)
{
	const char *nul = memchr(s, 0, size);

	return nul && all_zero((const uint8_t *)nul, size - (size_t)(nul - s));
}

/* Host names and ports end up in logs and JSON: plain printable ASCII only. */
static bool printable(const char *s)
{
	for (; *s; s++)
		if (*s <= ' ' || *s > '~')
			return false;
	return true;
}

static bool aligned(uint64_t v)
{
	return !(v % GMFP_PAGE_SIZE);
}

/* [start, start + len) does not wrap around 2^64 */
static bool no_wrap(uint64_t start, uint64_t len)
{
	return start + len >= start;
}

static size_t attach_size(uint32_t nr_regions)
{
	return GMFP_PAGER_HDR_SIZE + GMFP_PAGER_ATTACH_FIXED +
	       (size_t)nr_regions * GMFP_PAGER_REGION_SIZE;
}

static int refuse(uint32_t *region, const char **why, uint32_t r, const char *text)
{
	if (region)
		*region = r;
	if (why)
		*why = text;
	return -EINVAL;
}

int gmfp_pager_check_attach(const struct gmfp_pager_attach_msg *a, uint32_t *region,
			    const char **why)
{
	const uint32_t none = GMFP_PAGER_NO_REGION;
	uint32_t i, j;

	if (region)
		*region = none;
	if (why)
		*why = NULL;
	if (!a)
		return refuse(region, why, none, "no attach request");
	if (!a->nr_regions || a->nr_regions > GMFP_PAGER_MAX_REGIONS)
		return refuse(region, why, none, "the number of regions must be 1..64");
	if (a->source != GMFP_PAGER_SRC_FILE && a->source != GMFP_PAGER_SRC_TCP)
		return refuse(region, why, none, "unknown page source");
	if (a->workers > 64)
		return refuse(region, why, none, "more than 64 workers");
	if (a->max_batch > 256)
		return refuse(region, why, none, "max_batch above 256 pages");
	if (a->demand_readahead >= 256)
		return refuse(region, why, none, "demand_readahead of 256 pages or more");
	if (a->bg_order > GMFP_PAGER_BG_AROUND_DEMAND)
		return refuse(region, why, none, "unknown background order");
	if (a->flags & ~(GMFP_PAGER_MARK_ZERO | GMFP_PAGER_FINISH))
		return refuse(region, why, none, "unknown attach flags");
	if (!memchr(a->host, 0, sizeof(a->host)) || !memchr(a->port, 0, sizeof(a->port)))
		return refuse(region, why, none, "host or port too long");
	if (a->source == GMFP_PAGER_SRC_TCP) {
		if (!a->port[0])
			return refuse(region, why, none, "a TCP source needs a port");
		if (!printable(a->host) || !printable(a->port))
			return refuse(region, why, none,
				      "host and port must be printable ASCII without spaces");
	} else if (a->host[0] || a->port[0] || a->tcp_timeout_ms ||
		   a->tcp_connect_timeout_ms) {
		return refuse(region, why, none, "a file source takes no host, port or TCP timeouts");
	}
	for (i = 0; i < a->nr_regions; i++) {
		const struct gmfp_pager_wire_region *r = &a->regions[i];

		if (r->flags & ~GMFP_PAGER_PRIVATE)
			return refuse(region, why, i, "unknown region flags");
		if (!r->size)
			return refuse(region, why, i, "region of size 0");
		if (!aligned(r->gmem_offset) || !aligned(r->size) || !aligned(r->gpa) ||
		    !aligned(r->file_offset))
			return refuse(region, why, i,
				      "gmem_offset, size, gpa and file_offset must be page aligned");
		if (!no_wrap(r->gmem_offset, r->size) || !no_wrap(r->gpa, r->size) ||
		    !no_wrap(r->file_offset, r->size))
			return refuse(region, why, i, "region wraps around the end of the address space");
		if (a->source == GMFP_PAGER_SRC_TCP && r->file_offset)
			return refuse(region, why, i, "file_offset given for a TCP source");
		for (j = 0; j < i; j++) {
			const struct gmfp_pager_wire_region *q = &a->regions[j];

			if (r->gpa < q->gpa + q->size && q->gpa < r->gpa + r->size)
				return refuse(region, why, i,
					      "region overlaps an earlier one in guest physical memory");
		}
	}
	return 0;
}

static void put_hdr(uint8_t *p, uint16_t type, uint32_t length)
{
	gmfp_put32(p, GMFP_PAGER_MAGIC);
	gmfp_put16(p + 4, GMFP_PAGER_VERSION);
	gmfp_put16(p + 6, type);
	gmfp_put32(p + 8, length);
	gmfp_put32(p + 12, 0);
}

/* The size a message of @m's type and contents needs, or -EINVAL. */
static ssize_t msg_size(const struct gmfp_pager_msg *m)
{
	switch (m->type) {
	case GMFP_PAGER_ATTACH:
		if (gmfp_pager_check_attach(&m->u.attach, NULL, NULL))
			return -EINVAL;
		return (ssize_t)attach_size(m->u.attach.nr_regions);
	case GMFP_PAGER_ATTACHED:
		return GMFP_PAGER_HDR_SIZE + ATTACHED_BODY;
	case GMFP_PAGER_STATUS:
	case GMFP_PAGER_DETACH:
	case GMFP_PAGER_DETACHED:
		return GMFP_PAGER_HDR_SIZE;
	case GMFP_PAGER_STATUS_REPLY:
		if (m->u.status.len > GMFP_PAGER_MAX_JSON ||
		    (m->u.status.len && !m->u.status.json))
			return -EINVAL;
		return GMFP_PAGER_HDR_SIZE + STATUS_FIXED + (ssize_t)m->u.status.len;
	case GMFP_PAGER_ERROR:
		if (m->u.error.err >= 0 || m->u.error.err < -MAX_ERRNO ||
		    !memchr(m->u.error.msg, 0, sizeof(m->u.error.msg)))
			return -EINVAL;
		return GMFP_PAGER_HDR_SIZE + ERROR_BODY;
	default:
		return -EINVAL;
	}
}

static void encode_attach(uint8_t *p, const struct gmfp_pager_attach_msg *a)
{
	uint32_t i;

	gmfp_put32(p, a->nr_regions);
	gmfp_put32(p + 4, a->source);
	gmfp_put32(p + 8, a->workers);
	gmfp_put32(p + 12, a->max_batch);
	gmfp_put32(p + 16, a->demand_readahead);
	gmfp_put32(p + 20, a->bg_order);
	gmfp_put32(p + 24, a->flags);
	gmfp_put32(p + 28, a->tcp_timeout_ms);
	gmfp_put32(p + 32, a->tcp_connect_timeout_ms);
	/* reserved[3] and the string padding stay zero */
	memcpy(p + 48, a->host, strlen(a->host));
	memcpy(p + 48 + GMFP_PAGER_HOST_MAX, a->port, strlen(a->port));
	p += GMFP_PAGER_ATTACH_FIXED;
	for (i = 0; i < a->nr_regions; i++, p += GMFP_PAGER_REGION_SIZE) {
		const struct gmfp_pager_wire_region *r = &a->regions[i];

		gmfp_put64(p, r->gmem_offset);
		gmfp_put64(p + 8, r->size);
		gmfp_put64(p + 16, r->gpa);
		gmfp_put64(p + 24, r->file_offset);
		gmfp_put32(p + 32, r->flags);
	}
}

ssize_t gmfp_pager_encode(void *buf, size_t len, const struct gmfp_pager_msg *m)
{
	uint8_t *p = buf, *b;
	ssize_t size;

	if (!m || (!buf && len))
		return -EINVAL;
	size = msg_size(m);
	if (size < 0)
		return size;
	if ((size_t)size > len)
		return -ENOSPC;
	memset(p, 0, (size_t)size);
	put_hdr(p, m->type, (uint32_t)size);
	b = p + GMFP_PAGER_HDR_SIZE;
	switch (m->type) {
	case GMFP_PAGER_ATTACH:
		encode_attach(b, &m->u.attach);
		break;
	case GMFP_PAGER_ATTACHED:
		gmfp_put32(b, m->u.attached.session);
		gmfp_put32(b + 4, m->u.attached.nr_gmems);
		gmfp_put64(b + 8, m->u.attached.pages_total);
		gmfp_put64(b + 16, m->u.attached.pages_present);
		break;
	case GMFP_PAGER_STATUS_REPLY:
		gmfp_put32(b, m->u.status.len);
		if (m->u.status.len)
			memcpy(b + STATUS_FIXED, m->u.status.json, m->u.status.len);
		break;
	case GMFP_PAGER_ERROR:
		gmfp_put32(b, (uint32_t)-m->u.error.err);
		gmfp_put32(b + 4, m->u.error.region);
		gmfp_put16(b + 8, m->u.error.version ? m->u.error.version : GMFP_PAGER_VERSION);
		memcpy(b + 16, m->u.error.msg, strlen(m->u.error.msg));
		break;
	default:	/* empty bodies */
		break;
	}
	return size;
}

static int decode_attach(const uint8_t *p, size_t body, struct gmfp_pager_attach_msg *a)
{
	uint32_t i;

	if (body < GMFP_PAGER_ATTACH_FIXED)
		return -EBADMSG;
	a->nr_regions = gmfp_get32(p);
	/* the size must be exactly what nr_regions says, before we look further */
	if (!a->nr_regions || a->nr_regions > GMFP_PAGER_MAX_REGIONS ||
	    body != attach_size(a->nr_regions) - GMFP_PAGER_HDR_SIZE)
		return -EBADMSG;
	a->source = gmfp_get32(p + 4);
	a->workers = gmfp_get32(p + 8);
	a->max_batch = gmfp_get32(p + 12);
	a->demand_readahead = gmfp_get32(p + 16);
	a->bg_order = gmfp_get32(p + 20);
	a->flags = gmfp_get32(p + 24);
	a->tcp_timeout_ms = gmfp_get32(p + 28);
	a->tcp_connect_timeout_ms = gmfp_get32(p + 32);
	if (!all_zero(p + 36, 12))
		return -EBADMSG;
	memcpy(a->host, p + 48, GMFP_PAGER_HOST_MAX);
	memcpy(a->port, p + 48 + GMFP_PAGER_HOST_MAX, GMFP_PAGER_PORT_MAX);
	if (!fixed_string_ok(a->host, sizeof(a->host)) ||
	    !fixed_string_ok(a->port, sizeof(a->port)))
		return -EBADMSG;
	p += GMFP_PAGER_ATTACH_FIXED;
	for (i = 0; i < a->nr_regions; i++, p += GMFP_PAGER_REGION_SIZE) {
		struct gmfp_pager_wire_region *r = &a->regions[i];

		r->gmem_offset = gmfp_get64(p);
		r->size = gmfp_get64(p + 8);
		r->gpa = gmfp_get64(p + 16);
		r->file_offset = gmfp_get64(p + 24);
		r->flags = gmfp_get32(p + 32);
		if (gmfp_get32(p + 36))
			return -EBADMSG;
	}
	return gmfp_pager_check_attach(a, NULL, NULL);
}

ssize_t gmfp_pager_decode(const void *buf, size_t len, struct gmfp_pager_msg *m)
{
	const uint8_t *p = buf, *b;
	uint32_t length, err;
	size_t body;
	int r = 0;

	if (!m || (!buf && len))
		return -EINVAL;
	memset(m, 0, sizeof(*m));
	if (len > GMFP_PAGER_MAX_MSG)
		return -EMSGSIZE;
	if (len < GMFP_PAGER_HDR_SIZE || gmfp_get32(p) != GMFP_PAGER_MAGIC)
		return -EBADMSG;
	m->version = gmfp_get16(p + 4);
	m->type = gmfp_get16(p + 6);
	if (m->version != GMFP_PAGER_VERSION)
		return -EPROTONOSUPPORT;
	length = gmfp_get32(p + 8);
	if (length > GMFP_PAGER_MAX_MSG)
		return -EMSGSIZE;
	if (length != len || gmfp_get32(p + 12))
		return -EBADMSG;
	b = p + GMFP_PAGER_HDR_SIZE;
	body = len - GMFP_PAGER_HDR_SIZE;
	switch (m->type) {
	case GMFP_PAGER_ATTACH:
		r = decode_attach(b, body, &m->u.attach);
		break;
	case GMFP_PAGER_ATTACHED:
		if (body != ATTACHED_BODY || gmfp_get64(b + 24))
			return -EBADMSG;
		m->u.attached.session = gmfp_get32(b);
		m->u.attached.nr_gmems = gmfp_get32(b + 4);
		m->u.attached.pages_total = gmfp_get64(b + 8);
		m->u.attached.pages_present = gmfp_get64(b + 16);
		break;
	case GMFP_PAGER_STATUS:
	case GMFP_PAGER_DETACH:
	case GMFP_PAGER_DETACHED:
		if (body)
			return -EBADMSG;
		break;
	case GMFP_PAGER_STATUS_REPLY:
		if (body < STATUS_FIXED || gmfp_get32(b + 4))
			return -EBADMSG;
		m->u.status.len = gmfp_get32(b);
		if (m->u.status.len > GMFP_PAGER_MAX_JSON ||
		    body != STATUS_FIXED + (size_t)m->u.status.len)
			return -EBADMSG;
		m->u.status.json = (const char *)b + STATUS_FIXED;
		break;
	case GMFP_PAGER_ERROR:
		if (body != ERROR_BODY)
			return -EBADMSG;
		err = gmfp_get32(b);
		m->u.error.region = gmfp_get32(b + 4);
		m->u.error.version = gmfp_get16(b + 8);
		if (!err || err > MAX_ERRNO || !m->u.error.version || gmfp_get16(b + 10) ||
		    gmfp_get32(b + 12))
			return -EBADMSG;
		m->u.error.err = -(int32_t)err;
		memcpy(m->u.error.msg, b + 16, GMFP_PAGER_ERRMSG_MAX);
		if (!fixed_string_ok(m->u.error.msg, sizeof(m->u.error.msg)))
			return -EBADMSG;
		break;
	default:
		return -EBADMSG;
	}
	return r ? r : (ssize_t)len;
}

/* ---- client ---- */

static void set_errmsg(char *buf, size_t len, const char *text)
{
	if (!buf || !len)
		return;
	snprintf(buf, len, "%s", text ? text : "");
}

static int connect_pager(const char *path)
{
	struct sockaddr_un a;
	size_t n;
	int fd;

	if (!path)
		return -EINVAL;
	n = strlen(path);
	if (!n)
		return -EINVAL;
	memset(&a, 0, sizeof(a));
	if (n >= sizeof(a.sun_path))
		return -ENAMETOOLONG;
	a.sun_family = AF_UNIX;
	memcpy(a.sun_path, path, n);
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	while (connect(fd, (struct sockaddr *)&a, sizeof(a))) {
		int e = errno;

		if (e == EINTR)
			continue;
		close(fd);
		/* a full backlog of a listening pager: EAGAIN means "busy" too */
		return -e;
	}
	return fd;
}

/* One packet, with @nfds fds as SCM_RIGHTS, by @deadline: 0 or -errno. */
static int send_packet(int fd, const void *buf, size_t len, const int *fds,
		       unsigned int nfds, uint64_t deadline)
{
	ssize_t n;
	int r;

	if (nfds > GMFP_PAGER_MAX_FDS)
		return -EINVAL;
	for (;;) {
		n = gmfp_sock_send_fds(fd, buf, len, fds, nfds, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n == (ssize_t)len)
			return 0;
		if (n >= 0)	/* a packet goes whole or not at all */
			return -EIO;
		if (n == -EINTR)
			continue;
		if (n != -EAGAIN && n != -EWOULDBLOCK)
			return (int)n;
		r = gmfp_sock_wait(fd, POLLOUT, deadline);
		if (r)
			return r;
	}
}

/* Close whatever fds came with a packet: the pager never sends any. */
static bool drop_fds(struct msghdr *mh)
{
	struct cmsghdr *c;
	bool any = false;

	for (c = CMSG_FIRSTHDR(mh); c; c = CMSG_NXTHDR(mh, c)) {
		size_t i, n;

		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (i = 0; i < n; i++) {
			int fd;

			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			close(fd);
		}
		any = true;
	}
	return any;
}

/*
 * The pager's next packet into @buf (GMFP_PAGER_MAX_MSG bytes), decoded into
 * @m, by @deadline (0: only what is queued already).  Returns 0, or -errno:
 * -ECONNRESET at end of file, -EPROTO for anything that is not a valid
 * message, -EPROTONOSUPPORT for another version, -ETIMEDOUT.
 */
static int recv_reply(int fd, uint8_t *buf, struct gmfp_pager_msg *m, uint64_t deadline)
{
	union {
		char b[CMSG_SPACE(sizeof(int) * 8)];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = { .iov_base = buf, .iov_len = GMFP_PAGER_MAX_MSG };
	struct msghdr mh;
	bool reset = false;
	ssize_t n;
	int r;

	for (;;) {
		memset(&mh, 0, sizeof(mh));
		mh.msg_iov = &iov;
		mh.msg_iovlen = 1;
		mh.msg_control = ctl.b;
		mh.msg_controllen = sizeof(ctl.b);
		n = recvmsg(fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
		if (n >= 0)
			break;
		if (errno == EINTR)
			continue;
		/*
		 * A pager that closed with our request unread (it refused us)
		 * leaves ECONNRESET pending, reported before the answer it
		 * queued: the next call returns that.
		 */
		if (errno == ECONNRESET && !reset) {
			reset = true;
			continue;
		}
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return errno == ECONNRESET ? -ECONNRESET : -errno;
		if (!deadline)
			return -EAGAIN;
		r = gmfp_sock_wait(fd, POLLIN, deadline);
		if (r)
			return r;
	}
	if (drop_fds(&mh) || (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)))
		return -EPROTO;
	if (!n)
		return -ECONNRESET;
	n = gmfp_pager_decode(buf, (size_t)n, m);
	if (n == -EPROTONOSUPPORT)
		return (int)n;
	return n < 0 ? -EPROTO : 0;
}

/* Send @req, wait for the answer; ERROR answers come back as their errno. */
static int transact(int fd, const struct gmfp_pager_msg *req, const int *fds,
		    unsigned int nfds, uint32_t timeout_ms, uint8_t *buf,
		    struct gmfp_pager_msg *reply, char *errmsg, size_t errmsg_len)
{
	uint8_t out[GMFP_PAGER_MAX_REQUEST];
	uint64_t deadline = gmfp_sock_deadline(timeout_ms);
	ssize_t n = gmfp_pager_encode(out, sizeof(out), req);
	int r;

	if (n < 0)
		return (int)n;
	r = send_packet(fd, out, (size_t)n, fds, nfds, deadline);
	if (r == -EPIPE || r == -ECONNRESET) {
		/* the pager may have said why before it closed: read that */
		int r2 = recv_reply(fd, buf, reply, 0);

		if (r2 || reply->type != GMFP_PAGER_ERROR)
			return r;
	} else if (r) {
		return r;
	} else {
		r = recv_reply(fd, buf, reply, deadline);
		if (r)
			return r;
	}
	if (reply->type == GMFP_PAGER_ERROR) {
		set_errmsg(errmsg, errmsg_len, reply->u.error.msg);
		return reply->u.error.err;
	}
	return 0;
}

static int fill_attach(struct gmfp_pager_attach_msg *a, const struct gmfp_pager_attach_opts *o,
		       int *fds, const char **why)
{
	uint32_t i;

	a->nr_regions = o->nr_regions;
	a->source = o->source;
	a->workers = o->workers;
	a->max_batch = o->max_batch;
	a->demand_readahead = o->demand_readahead;
	a->bg_order = o->bg_order;
	a->flags = o->flags;
	if (o->source == GMFP_PAGER_SRC_TCP) {
		a->tcp_timeout_ms = o->tcp_timeout_ms;
		a->tcp_connect_timeout_ms = o->tcp_connect_timeout_ms;
		if (!o->tcp_port) {
			*why = "a TCP source needs a port";
			return -EINVAL;
		}
		if ((o->tcp_host && strlen(o->tcp_host) >= sizeof(a->host)) ||
		    strlen(o->tcp_port) >= sizeof(a->port)) {
			*why = "host or port too long";
			return -EINVAL;
		}
		if (o->tcp_host)
			strcpy(a->host, o->tcp_host);
		strcpy(a->port, o->tcp_port);
	}
	if (!o->regions || !o->nr_regions || o->nr_regions > GMFP_PAGER_MAX_REGIONS) {
		*why = "the number of regions must be 1..64";
		return -EINVAL;
	}
	for (i = 0; i < o->nr_regions; i++) {
		const struct gmfp_pager_region *r = &o->regions[i];

		if (r->gmem < 0 || fcntl(r->gmem, F_GETFD) < 0) {
			*why = "a region's gmem is not an open file descriptor";
			return -EBADF;
		}
		fds[i] = r->gmem;
		a->regions[i].gmem_offset = r->gmem_offset;
		a->regions[i].size = r->size;
		a->regions[i].gpa = r->gpa;
		a->regions[i].file_offset = r->file_offset;
		a->regions[i].flags = r->flags;
	}
	return gmfp_pager_check_attach(a, NULL, why);
}

int gmfp_pager_attach(int *sock_out, const char *socket_path,
		      const struct gmfp_pager_attach_opts *opts)
{
	struct gmfp_pager_attach_opts o;
	struct gmfp_pager_msg *req = NULL, reply;
	int fds[GMFP_PAGER_MAX_FDS];
	unsigned int nfds;
	const char *why = NULL;
	uint8_t *buf = NULL;
	int r, fd = -1, image = -1;

	if (!sock_out)
		return -EINVAL;
	*sock_out = -1;
	if (!opts)
		return -EINVAL;
	r = gmfp_opts_copy(&o, sizeof(o), opts);
	if (r)
		return r;
	set_errmsg(o.errmsg, o.errmsg_len, "");
	req = calloc(1, sizeof(*req));
	buf = malloc(GMFP_PAGER_MAX_MSG);
	r = -ENOMEM;
	if (!req || !buf)
		goto out;
	req->type = GMFP_PAGER_ATTACH;
	r = fill_attach(&req->u.attach, &o, fds, &why);
	if (r) {
		set_errmsg(o.errmsg, o.errmsg_len, why);
		goto out;
	}
	nfds = o.nr_regions;
	if (o.source == GMFP_PAGER_SRC_FILE) {
		/* opened with the VMM's rights: the pager never opens a peer's path */
		if (o.file_path) {
			image = open(o.file_path, O_RDONLY | O_CLOEXEC);
			if (image < 0) {
				r = -errno;
				set_errmsg(o.errmsg, o.errmsg_len, "cannot open the image file");
				goto out;
			}
			fds[nfds++] = image;
		} else if (o.file_fd < 0 || fcntl(o.file_fd, F_GETFD) < 0) {
			r = -EBADF;
			set_errmsg(o.errmsg, o.errmsg_len, "file_fd is not an open file descriptor");
			goto out;
		} else {
			fds[nfds++] = o.file_fd;
		}
	}
	fd = connect_pager(socket_path);
	if (fd < 0) {
		r = fd;
		goto out;
	}
	r = transact(fd, req, fds, nfds, o.timeout_ms ? o.timeout_ms : ATTACH_TIMEOUT_MS,
		     buf, &reply, o.errmsg, o.errmsg_len);
	if (!r && reply.type != GMFP_PAGER_ATTACHED)
		r = -EPROTO;
	if (!r) {
		if (o.session)
			*o.session = reply.u.attached.session;
		*sock_out = fd;
		fd = -1;
	}
out:
	if (fd >= 0)
		close(fd);
	if (image >= 0)
		close(image);
	free(buf);
	free(req);
	return r;
}

static int copy_json(const struct gmfp_pager_msg *m, char *json, size_t len)
{
	if (m->type != GMFP_PAGER_STATUS_REPLY)
		return -EPROTO;
	if (json && len) {
		size_t n = m->u.status.len < len - 1 ? m->u.status.len : len - 1;

		memcpy(json, m->u.status.json, n);
		json[n] = 0;
	}
	return (int)m->u.status.len;
}

int gmfp_pager_session_status(int sock, char *json, size_t len)
{
	struct gmfp_pager_msg req, reply;
	uint8_t *buf;
	int r;

	if (sock < 0)
		return -EBADF;
	if (!json && len)
		return -EINVAL;
	buf = malloc(GMFP_PAGER_MAX_MSG);
	if (!buf)
		return -ENOMEM;
	memset(&req, 0, sizeof(req));
	req.type = GMFP_PAGER_STATUS;
	r = transact(sock, &req, NULL, 0, REPLY_TIMEOUT_MS, buf, &reply, NULL, 0);
	if (!r)
		r = copy_json(&reply, json, len);
	free(buf);
	return r;
}

int gmfp_pager_status(const char *socket_path, char *json, size_t len)
{
	int fd, r;

	if (!json && len)
		return -EINVAL;
	fd = connect_pager(socket_path);
	if (fd < 0)
		return fd;
	r = gmfp_pager_session_status(fd, json, len);
	close(fd);
	return r;
}

int gmfp_pager_detach(int sock)
{
	struct gmfp_pager_msg req, reply;
	uint8_t *buf;
	int r;

	if (sock < 0)
		return -EBADF;
	buf = malloc(GMFP_PAGER_MAX_MSG);
	if (!buf) {
		close(sock);
		return -ENOMEM;
	}
	memset(&req, 0, sizeof(req));
	req.type = GMFP_PAGER_DETACH;
	r = transact(sock, &req, NULL, 0, REPLY_TIMEOUT_MS, buf, &reply, NULL, 0);
	if (r == -EPIPE)
		r = -ECONNRESET;
	if (!r && reply.type != GMFP_PAGER_DETACHED)
		r = -EPROTO;
	free(buf);
	close(sock);
	return r;
}
