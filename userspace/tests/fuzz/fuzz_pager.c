// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * libFuzzer target: gmfp_pager_decode(), the pager-protocol decoder that
 * gmfp-pager runs on every packet a VMM sends (and a VMM on the pager's
 * answers), and gmfp_pager_check_attach(), which judges an ATTACH.
 *
 * The input is one packet.  Checked, decoding from an exact-size heap copy:
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
 */
#include <errno.h>

#include "fuzz.h"
#include "gmfp_pager.h"

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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
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
		return 0;
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
	return 0;
}
