/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The gmfp pager protocol: how a VMM hands its presence guest_memfds to a
 * pager daemon (gmfp-pager) that serves their faults in another process,
 * from an image file or a page server, and survives being restarted.
 *
 * A VMM adopts it in a few lines:
 *
 *	struct gmfp_pager_region r = { .gmem = gmem, .size = size, .gpa = gpa };
 *	GMFP_OPTS_INIT(struct gmfp_pager_attach_opts, o);
 *	o.regions = &r;
 *	o.nr_regions = 1;
 *	o.source = GMFP_PAGER_SRC_FILE;
 *	o.file_path = "guest.img";
 *	err = gmfp_pager_attach(&sock, "/run/gmfp-pager.sock", &o);
 *	... run the VM; keep @sock open: end of file on it = the pager is gone ...
 *	gmfp_pager_detach(sock);
 *
 * Transport: an AF_UNIX SOCK_SEQPACKET connection, one message per packet.
 * The file descriptors travel with the ATTACH message as SCM_RIGHTS: one
 * per region, in region order, then (FILE source) the image, which the VMM
 * opens with its own permissions: the pager never opens a path for a peer.
 * The pager checks the peer's uid (SO_PEERCRED) before reading anything.
 *
 * Every message is a 16-byte header and a body whose size the type fixes;
 * all integers are little-endian, every reserved field and padding byte is 0:
 *
 *   u32 magic    GMFP_PAGER_MAGIC (the bytes "GMPG")
 *   u16 version  GMFP_PAGER_VERSION
 *   u16 type     GMFP_PAGER_*
 *   u32 length   of the whole message, header included: the packet's size
 *   u32 flags    0
 *
 *   ATTACH   VMM -> pager, with the fds.  48 bytes of
 *              u32 nr_regions (1..GMFP_PAGER_MAX_REGIONS), u32 source,
 *              u32 workers, u32 max_batch, u32 demand_readahead,
 *              u32 bg_order, u32 flags, u32 tcp_timeout_ms,
 *              u32 tcp_connect_timeout_ms, u32 reserved[3]
 *            char host[256], char port[32]   (TCP; NUL terminated and
 *                                             NUL padded; all 0 for FILE)
 *            nr_regions times 40 bytes of
 *              u64 gmem_offset, u64 size, u64 gpa, u64 file_offset,
 *              u32 flags, u32 reserved
 *   ATTACHED pager -> VMM: serving.  u32 session, u32 nr_gmems,
 *            u64 pages_total, u64 pages_present (when the pager took over),
 *            u64 reserved
 *   STATUS   VMM or monitor -> pager, empty
 *   STATUS_REPLY  u32 json_len (<= GMFP_PAGER_MAX_JSON), u32 reserved,
 *            json_len bytes of JSON, no NUL
 *   DETACH   VMM -> pager, empty: stop serving (pages not present stay so)
 *   DETACHED pager -> VMM, empty: the session's engine is stopped and its
 *            fds are closed
 *   ERROR    pager -> peer: u32 err (positive errno), u32 region (index of
 *            the region at fault, or GMFP_PAGER_NO_REGION), u16 version (the
 *            pager's), u16 reserved, u32 reserved, char msg[128] (NUL
 *            terminated and padded); the pager closes the connection after
 *            an ERROR to a peer that is not attached
 *
 * A connection that is not attached may send STATUS any number of times,
 * then ATTACH once; on an attached connection STATUS reports that session
 * only, and DETACH (or simply closing it) ends it.
 *
 * Conventions as in gmfp.h: negative errno values, options structs with a
 * size field (GMFP_OPTS_INIT()), no global state; distinct sockets may be
 * used from distinct threads, one call at a time per socket.
 */
#ifndef GMFP_PAGER_H
#define GMFP_PAGER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "gmfp.h"

#ifdef __cplusplus
extern "C" {
#endif

#define GMFP_PAGER_MAGIC	0x47504d47u	/* "GMPG" as little-endian bytes */
#define GMFP_PAGER_VERSION	1
#define GMFP_PAGER_HDR_SIZE	16
#define GMFP_PAGER_MAX_REGIONS	64
#define GMFP_PAGER_HOST_MAX	256		/* bytes of host, NUL included */
#define GMFP_PAGER_PORT_MAX	32
#define GMFP_PAGER_ERRMSG_MAX	128
#define GMFP_PAGER_MAX_JSON	65536
#define GMFP_PAGER_NO_REGION	0xffffffffu
#define GMFP_PAGER_ATTACH_FIXED	(48 + GMFP_PAGER_HOST_MAX + GMFP_PAGER_PORT_MAX)
#define GMFP_PAGER_REGION_SIZE	40
/* the biggest messages each way */
#define GMFP_PAGER_MAX_REQUEST	(GMFP_PAGER_HDR_SIZE + GMFP_PAGER_ATTACH_FIXED + \
				 GMFP_PAGER_MAX_REGIONS * GMFP_PAGER_REGION_SIZE)
#define GMFP_PAGER_MAX_MSG	(GMFP_PAGER_HDR_SIZE + 8 + GMFP_PAGER_MAX_JSON)
/* fds with one ATTACH: a guest_memfd per region and the image */
#define GMFP_PAGER_MAX_FDS	(GMFP_PAGER_MAX_REGIONS + 1)

enum gmfp_pager_type {
	GMFP_PAGER_ATTACH = 1,
	GMFP_PAGER_ATTACHED = 2,
	GMFP_PAGER_STATUS = 3,
	GMFP_PAGER_STATUS_REPLY = 4,
	GMFP_PAGER_DETACH = 5,
	GMFP_PAGER_DETACHED = 6,
	GMFP_PAGER_ERROR = 7,
};

/* Page source of a session */
#define GMFP_PAGER_SRC_FILE	1	/* an image file, passed as an fd */
#define GMFP_PAGER_SRC_TCP	2	/* a page server (gmfp_wire.h) */

/* Background fill order; 0, the default, is sequential. */
enum gmfp_pager_bg {
	GMFP_PAGER_BG_SEQUENTIAL = 0,
	GMFP_PAGER_BG_NONE = 1,
	GMFP_PAGER_BG_AROUND_DEMAND = 2,
};

/* ATTACH flags */
#define GMFP_PAGER_MARK_ZERO	(1u << 0)	/* GMFP_ENGINE_MARK_ZERO: memory is fresh */
#define GMFP_PAGER_FINISH	(1u << 1)	/* FINISH each guest_memfd once complete */

/* region flags */
#define GMFP_PAGER_PRIVATE	(1u << 0)	/* private memory (filled by COPY only) */

/* ------------------------------------------------------------------ */
/* Messages: encoder and decoder                                       */
/* ------------------------------------------------------------------ */

/*
 * One region as it travels: [gmem_offset, gmem_offset + size) of a
 * guest_memfd, at guest physical address gpa, whose contents are at
 * file_offset in the image (FILE; 0 for TCP, where the page server numbers
 * the regions as the ATTACH does).  Everything page aligned.  The regions
 * naming one guest_memfd must cover all of it, without overlap: the pager
 * serves whole guest_memfds and has no contents for a byte nobody named.
 */
struct gmfp_pager_wire_region {
	uint64_t gmem_offset;
	uint64_t size;
	uint64_t gpa;
	uint64_t file_offset;
	uint32_t flags;			/* GMFP_PAGER_PRIVATE */
};

struct gmfp_pager_attach_msg {
	uint32_t nr_regions;
	uint32_t source;		/* GMFP_PAGER_SRC_* */
	uint32_t workers;		/* engine threads; 0: the pager's default */
	uint32_t max_batch;		/* pages per fetch and COPY (<= 256; 0: 64) */
	uint32_t demand_readahead;	/* (< 256) */
	uint32_t bg_order;		/* GMFP_PAGER_BG_* */
	uint32_t flags;			/* GMFP_PAGER_MARK_ZERO, GMFP_PAGER_FINISH */
	uint32_t tcp_timeout_ms;	/* TCP: per request (0: 5000) */
	uint32_t tcp_connect_timeout_ms;/* TCP: per connect (0: 2000) */
	char host[GMFP_PAGER_HOST_MAX];	/* TCP: "" for 127.0.0.1 */
	char port[GMFP_PAGER_PORT_MAX];	/* TCP: required */
	struct gmfp_pager_wire_region regions[GMFP_PAGER_MAX_REGIONS];
};

/* A decoded message.  status.json points into the decoded buffer. */
struct gmfp_pager_msg {
	uint16_t type;			/* GMFP_PAGER_* */
	uint16_t version;		/* decode: the header's; encode: ignored */
	union {
		struct gmfp_pager_attach_msg attach;
		struct {
			uint32_t session, nr_gmems;
			uint64_t pages_total, pages_present;
		} attached;
		struct {
			const char *json;
			uint32_t len;
		} status;		/* STATUS_REPLY */
		struct {
			int32_t err;	/* negative errno (positive on the wire) */
			uint32_t region;	/* or GMFP_PAGER_NO_REGION */
			uint16_t version;	/* the pager's protocol version */
			char msg[GMFP_PAGER_ERRMSG_MAX];
		} error;
	} u;
};

/*
 * Whether an ATTACH's values make sense on their own: 0, or -EINVAL with
 * the index of the first region at fault in *@region (GMFP_PAGER_NO_REGION
 * for the fixed part; may be NULL) and a static English sentence saying
 * what is wrong in *@why (may be NULL).  Checked: 1..GMFP_PAGER_MAX_REGIONS
 * regions, a known source, workers <= 64, max_batch <= 256,
 * demand_readahead < 256, a known bg_order and flags; TCP: a port, host
 * and port of printable characters, file_offset 0; FILE: no host, port or
 * TCP timeouts; each region: known flags, size > 0, offsets, size and gpa
 * page aligned, no range wrapping around 2^64, and no two regions sharing
 * guest physical addresses.
 */
int gmfp_pager_check_attach(const struct gmfp_pager_attach_msg *a, uint32_t *region,
			    const char **why);

/*
 * Encode @m into @buf of @len bytes: the message's length, -ENOSPC if it
 * does not fit, -EINVAL if @m is not a valid message of its type
 * (gmfp_pager_check_attach(), an unknown type, an ERROR whose err is not
 * in -4095..-1 or whose msg is not NUL terminated, a status of more than
 * GMFP_PAGER_MAX_JSON bytes).
 */
ssize_t gmfp_pager_encode(void *buf, size_t len, const struct gmfp_pager_msg *m);

/*
 * Decode the @len-byte packet at @buf into @m.  Returns @len when it is
 * one well-formed message; -EMSGSIZE when it (or its length field) is
 * larger than GMFP_PAGER_MAX_MSG; -EPROTONOSUPPORT for another version
 * (m->version and m->type are set); -EBADMSG when it is malformed: shorter
 * than a header, bad magic, non-zero header flags, an unknown type, a
 * length field that is not @len, a body size that is not the type's, a
 * non-zero reserved field, a string that is not NUL terminated and
 * padded, an ERROR err outside 1..4095 or version 0; -EINVAL for an ATTACH that is well-formed but whose values
 * gmfp_pager_check_attach() refuses (then *@m holds it, so that the
 * caller can ask why).  Nothing at or after @buf + @len is read, and
 * whatever decodes re-encodes to the same bytes.
 */
ssize_t gmfp_pager_decode(const void *buf, size_t len, struct gmfp_pager_msg *m);

/* ------------------------------------------------------------------ */
/* The client side: what a VMM calls                                   */
/* ------------------------------------------------------------------ */

/* One region to serve: @gmem is a presence guest_memfd (sent, not closed). */
struct gmfp_pager_region {
	int gmem;
	uint32_t flags;			/* GMFP_PAGER_PRIVATE */
	uint64_t gmem_offset;		/* bytes into the guest_memfd */
	uint64_t size;
	uint64_t gpa;			/* guest physical address (reported) */
	uint64_t file_offset;		/* FILE: where these bytes are in the image */
};

struct gmfp_pager_attach_opts {
	size_t sz;			/* GMFP_OPTS_INIT() */
	const struct gmfp_pager_region *regions;
	uint32_t nr_regions;		/* 1..GMFP_PAGER_MAX_REGIONS */
	uint32_t source;		/* GMFP_PAGER_SRC_FILE or _TCP */
	/* FILE: opened here read-only, or file_fd when file_path is NULL */
	const char *file_path;
	int file_fd;
	/* TCP: the pager connects; host NULL for 127.0.0.1 */
	const char *tcp_host;
	const char *tcp_port;
	uint32_t tcp_timeout_ms, tcp_connect_timeout_ms;
	/* engine knobs, 0 for the pager's defaults */
	uint32_t workers;
	uint32_t max_batch;
	uint32_t demand_readahead;
	uint32_t bg_order;		/* GMFP_PAGER_BG_* */
	uint32_t flags;			/* GMFP_PAGER_MARK_ZERO, GMFP_PAGER_FINISH */
	uint32_t timeout_ms;		/* for the pager's answer (30000) */
	/* out, optional: the pager's reason when it refuses; the session id */
	char *errmsg;
	size_t errmsg_len;
	uint32_t *session;
};

/*
 * Connect to the pager at @socket_path, hand it the regions' guest_memfds
 * (and the image) and wait until it serves them.  On success *@sock_out is
 * the connected socket (SOCK_CLOEXEC, blocking): keep it open as long as
 * the pager is to serve.  The pager stops serving when it is closed (or the
 * VMM dies); end of file on it (poll() POLLIN or POLLHUP, then recv() 0)
 * means the pager died: no page becomes present any more, the accessors
 * keep waiting, and attaching the same fds to a new pager resumes where the
 * old one stopped.  Close it in forked children.
 *
 * Returns 0, or -errno (and *@sock_out is -1):
 *   -EINVAL      bad arguments (see gmfp_pager_check_attach()), or the
 *                pager found the request invalid (a range beyond its
 *                guest_memfd or image, regions that overlap or leave part of
 *                a guest_memfd uncovered, too many workers, ...)
 *   -E2BIG       @opts is from a newer header and sets what this one lacks
 *   -EBADF       a region's gmem or file_fd is not an open fd; the pager
 *                could not use the image (not a regular file or block
 *                device, not readable)
 *   -ENAMETOOLONG  @socket_path does not fit a sockaddr_un
 *   -ENOENT, -ECONNREFUSED  no pager listens at @socket_path
 *   -EACCES      the pager does not allow this uid (or the socket file)
 *   -EAGAIN      the pager has as many sessions as it takes
 *   -EBUSY       a guest_memfd is already served by another session
 *   -ENOTTY      a region's fd is not a presence guest_memfd
 *   -EPROTONOSUPPORT  the pager speaks another version of the protocol
 *   -EPROTO      the pager's answer is not a valid message
 *   -ETIMEDOUT   no answer within timeout_ms
 *   -ECONNRESET, -EPIPE  the pager closed the connection without answering
 * and what the pager reports otherwise (its source's or engine's errors);
 * errmsg then holds its explanation, "" if it gave none.
 */
int gmfp_pager_attach(int *sock_out, const char *socket_path,
		      const struct gmfp_pager_attach_opts *opts);

/*
 * The pager's statistics as JSON into @json (NUL terminated when @len > 0):
 * gmfp_pager_status() over a new connection to @socket_path (every
 * session), gmfp_pager_session_status() over an attached socket (that
 * session: its regions, its source's counters and its engine's
 * gmfp_engine_stats_json() object).  Return the JSON's length (without the
 * NUL; more than @len - 1 means it was cut, like snprintf()), or -errno:
 * the connection errors of gmfp_pager_attach(), -EACCES, -EAGAIN, -EPROTO,
 * -ETIMEDOUT (5 s), -ECONNRESET.
 */
int gmfp_pager_status(const char *socket_path, char *json, size_t len);
int gmfp_pager_session_status(int sock, char *json, size_t len);

/*
 * Ask the pager to stop serving @sock's session and close @sock (always).
 * Returns 0 once the pager says its engine is stopped and its fds closed,
 * -ECONNRESET if the pager was already gone, -ETIMEDOUT (5 s), -EPROTO.
 */
int gmfp_pager_detach(int sock);

#ifdef __cplusplus
}
#endif
#endif /* GMFP_PAGER_H */
