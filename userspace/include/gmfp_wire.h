/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The gmfp wire protocol: how a destination asks a page server (the source
 * VMM of a post-copy migration, or a snapshot store) for pages.  Used by
 * gmfp_source_tcp() on the asking side and gmfp_wire_serve() on the serving
 * side, and by the tools; encoder and decoder are public so that other
 * implementations can be tested against them.
 *
 * Every frame is a 16-byte header and a payload; all integers are
 * little-endian:
 *
 *   u32 magic    GMFP_WIRE_MAGIC ("GMFP" in memory)
 *   u8  version  GMFP_WIRE_VERSION
 *   u8  type     GMFP_WIRE_*
 *   u16 flags    0 (reserved, must be 0)
 *   u32 length   payload bytes, at most GMFP_WIRE_MAX_PAYLOAD
 *   u32 seq      request id: a REQ's seq comes back in its DATA or ERROR
 *
 * Payloads (exact sizes; anything else is malformed):
 *
 *   HELLO    client -> server, first frame of a connection
 *            u16 min_version, u16 max_version, u8 channel (GMFP_WIRE_CH_*),
 *            u8 pad[3] = 0, u32 page_size, u32 nr_regions, u32 pad = 0,
 *            u64 region_size[nr_regions]   (the layout the client expects;
 *            nr_regions 0: whatever the server has)
 *   WELCOME  server -> client, answer to HELLO
 *            u16 version (chosen), u16 pad = 0, u32 page_size,
 *            u32 nr_regions, u32 pad = 0, u64 region_size[nr_regions]
 *   REQ      client -> server
 *            u32 region, u32 npages (1..GMFP_WIRE_MAX_PAGES), u64 pgoff
 *   DATA     server -> client, answer to REQ
 *            u32 region, u32 npages, u64 pgoff,
 *            u64 zero[(npages + 63) / 64]   bit i: page i is all zeroes
 *            then page_size bytes for each page whose zero bit is clear,
 *            in page order
 *   ERROR    server -> client, a REQ that cannot be served
 *            u32 region, u32 npages, u64 pgoff, i32 err (positive errno),
 *            u32 pad = 0
 *   BYE      either side, empty: orderly close
 *
 * The channel names a connection's priority: a server serves DEMAND
 * connections before BACKGROUND ones.  Regions are checked against the layout
 * of the handshake: a REQ or DATA outside it is malformed.
 */
#ifndef GMFP_WIRE_H
#define GMFP_WIRE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "gmfp.h"

#ifdef __cplusplus
extern "C" {
#endif

#define GMFP_WIRE_MAGIC		0x50464d47u	/* "GMFP" as little-endian bytes */
#define GMFP_WIRE_VERSION	1
#define GMFP_WIRE_HDR_SIZE	16
#define GMFP_WIRE_MAX_PAGES	256
#define GMFP_WIRE_MAX_REGIONS	1024
/* the biggest frame: a DATA of GMFP_WIRE_MAX_PAGES non-zero pages */
#define GMFP_WIRE_MAX_PAYLOAD	(16 + 8 * (GMFP_WIRE_MAX_PAGES / 64) + \
				 GMFP_WIRE_MAX_PAGES * GMFP_PAGE_SIZE)

enum gmfp_wire_type {
	GMFP_WIRE_HELLO = 1,
	GMFP_WIRE_WELCOME = 2,
	GMFP_WIRE_REQ = 3,
	GMFP_WIRE_DATA = 4,
	GMFP_WIRE_ERROR = 5,
	GMFP_WIRE_BYE = 6,
};

#define GMFP_WIRE_CH_DEMAND	1
#define GMFP_WIRE_CH_BACKGROUND	2

/*
 * A decoded frame.  Pointers point into the buffer that was decoded and
 * are valid as long as it is.  region_sizes are little-endian u64 there:
 * read them with gmfp_wire_region_size().
 */
struct gmfp_wire_msg {
	uint8_t type;
	uint8_t version;
	uint32_t seq;
	uint32_t length;		/* payload bytes */
	union {
		struct {
			uint16_t min_version, max_version;
			uint8_t channel;
			uint32_t page_size;
			uint32_t nr_regions;
			const void *region_sizes;
		} hello, welcome;	/* welcome: min = max = version */
		struct {
			uint32_t region, npages;
			uint64_t pgoff;
		} req;
		struct {
			uint32_t region, npages;
			uint64_t pgoff;
			const void *zero;	/* (npages + 63) / 64 LE u64 */
			const void *pages;	/* non-zero pages, in order */
			uint32_t nr_data;	/* pages present in @pages */
		} data;
		struct {
			uint32_t region, npages;
			uint64_t pgoff;
			int32_t err;
		} error;
	} u;
};

/*
 * Decode one frame from the @len bytes at @buf.  Returns the frame's total
 * length (header + payload) when a whole, well-formed frame is there; 0 if
 * more bytes are needed (nothing is read past @len); -EBADMSG for a
 * malformed frame (bad magic, unknown type, non-zero reserved or pad,
 * payload size not what the type needs, npages 0 or too many, too many
 * regions); -EMSGSIZE if length exceeds GMFP_WIRE_MAX_PAYLOAD (known from
 * the header alone); -EPROTONOSUPPORT for another version.
 */
ssize_t gmfp_wire_decode(const void *buf, size_t len, struct gmfp_wire_msg *m);

/* u64 number @i of a HELLO / WELCOME layout. */
uint64_t gmfp_wire_region_size(const struct gmfp_wire_msg *m, uint32_t i);

/*
 * Encoders: write one frame into @buf of @len bytes; return its length, or
 * -ENOSPC if it does not fit, -EINVAL for arguments that would make a
 * malformed frame.  DATA: @pages holds npages * page_size bytes in page
 * order; pages whose bit is set in @zero (may be NULL) are left out.
 */
ssize_t gmfp_wire_encode_hello(void *buf, size_t len, uint32_t seq,
			       uint8_t channel, uint32_t nr_regions,
			       const uint64_t *region_sizes);
ssize_t gmfp_wire_encode_welcome(void *buf, size_t len, uint32_t seq,
				 uint32_t nr_regions, const uint64_t *region_sizes);
ssize_t gmfp_wire_encode_req(void *buf, size_t len, uint32_t seq, uint32_t region,
			     uint64_t pgoff, uint32_t npages);
ssize_t gmfp_wire_encode_data(void *buf, size_t len, uint32_t seq, uint32_t region,
			      uint64_t pgoff, uint32_t npages, const uint64_t *zero,
			      const void *pages);
ssize_t gmfp_wire_encode_error(void *buf, size_t len, uint32_t seq, uint32_t region,
			       uint64_t pgoff, uint32_t npages, int err);
ssize_t gmfp_wire_encode_bye(void *buf, size_t len);

/*
 * Serve one connected socket from @src until the peer says BYE or closes:
 * answer the HELLO with the layout, then every REQ with DATA (zero pages
 * flagged, not sent) or ERROR.  Demand connections should be given their
 * own thread.  Returns 0 after an orderly end, -errno on a protocol or I/O
 * error (the socket is left open for the caller to close).
 */
struct gmfp_serve_opts {
	size_t sz;
	struct gmfp_source *src;
	uint32_t nr_regions;
	const uint64_t *region_sizes;	/* bytes */
	uint32_t timeout_ms;		/* a peer silent this long mid-frame: -ETIMEDOUT (0: 30000) */
};
int gmfp_wire_serve(int sock, const struct gmfp_serve_opts *opts);

#ifdef __cplusplus
}
#endif
#endif /* GMFP_WIRE_H */
