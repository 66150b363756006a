// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Writes the seed corpus of the fuzz targets: gen_corpus <dir> makes
 * <dir>/<target>/<seed> files (make fuzz-corpus: tests/fuzz/corpus/).
 *
 * Frames and messages come from the library's own encoders, so every seed
 * starts the fuzzer on valid input of each kind; the input layouts of the
 * targets that take a configuration and a script (engine, serve, tcp) are
 * described at the top of their fuzz_<name>.c and followed here byte by
 * byte.  Seeds are small: pages are few, and most are flagged zero.
 */
#include <errno.h>
#include <stdarg.h>
#include <sys/stat.h>

#include "fuzz.h"
#include "gmfp_pager.h"
#include "gmfp_wire.h"

#define PG GMFP_PAGE_SIZE

static const char *root;

struct out {
	uint8_t b[1 << 20];
	size_t n;
};

static struct out O;

static void die(const char *what)
{
	fprintf(stderr, "gen_corpus: %s\n", what);
	exit(1);
}

static void put(const void *p, size_t n)
{
	if (O.n + n > sizeof(O.b))
		die("seed too large");
	memcpy(O.b + O.n, p, n);
	O.n += n;
}

static void u8(uint8_t v)
{
	put(&v, 1);
}

static void u16(uint16_t v)
{
	u8((uint8_t)v);
	u8((uint8_t)(v >> 8));
}

static void u32(uint32_t v)
{
	u16((uint16_t)v);
	u16((uint16_t)(v >> 16));
}

/* An encoder's result appended; @n < 0 is a bug here. */
static void frame(ssize_t n, const uint8_t *buf)
{
	if (n < 0)
		die("an encoder refused a seed");
	put(buf, (size_t)n);
}

static void seed(const char *target, const char *name)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", root, target);
	mkdir(path, 0755);
	snprintf(path, sizeof(path), "%s/%s/%s", root, target, name);
	f = fopen(path, "wb");
	if (!f || fwrite(O.b, 1, O.n, f) != O.n || fclose(f))
		die(path);
	O.n = 0;
}

static uint8_t F[GMFP_WIRE_HDR_SIZE + GMFP_WIRE_MAX_PAYLOAD];
static uint8_t pages[8 * PG];

static void fill_pages(uint32_t region, uint64_t pgoff, unsigned int n)
{
	unsigned int i;

	for (i = 0; i < n; i++)
		fz_fill_page(pages + (size_t)i * PG, region, pgoff + i);
}

/* ---- wire ---- */
static void gen_wire(void)
{
	const uint64_t sizes[3] = { 1ull << 30, PG, 0x123456789000ull };
	uint64_t zero3 = 0x2, zero65[2] = { ~0x5ull, 0x1 }, zero64 = ~0ull;
	ssize_t n;

	frame(gmfp_wire_encode_hello(F, sizeof(F), 0, GMFP_WIRE_CH_DEMAND, 0, NULL), F);
	seed("wire", "hello-demand");
	frame(gmfp_wire_encode_hello(F, sizeof(F), 7, GMFP_WIRE_CH_BACKGROUND, 3, sizes), F);
	seed("wire", "hello-background-3regions");
	frame(gmfp_wire_encode_welcome(F, sizeof(F), 0, 2, sizes), F);
	seed("wire", "welcome-2regions");
	frame(gmfp_wire_encode_req(F, sizeof(F), 1, 2, 0x1234, 256), F);
	seed("wire", "req");
	fill_pages(0, 5, 3);
	frame(gmfp_wire_encode_data(F, sizeof(F), 1, 0, 5, 1, NULL, pages), F);
	seed("wire", "data-1page");
	frame(gmfp_wire_encode_data(F, sizeof(F), 2, 1, 9, 3, &zero3, pages), F);
	seed("wire", "data-3pages-middle-zero");
	frame(gmfp_wire_encode_data(F, sizeof(F), 3, 0, 0, 65, zero65, pages), F);
	seed("wire", "data-65pages-2sent");
	frame(gmfp_wire_encode_data(F, sizeof(F), 4, 0, 64, 64, &zero64, pages), F);
	seed("wire", "data-64pages-all-zero");
	frame(gmfp_wire_encode_error(F, sizeof(F), 5, 1, 77, 8, ENODATA), F);
	seed("wire", "error");
	frame(gmfp_wire_encode_error(F, sizeof(F), 0, 0, 0, 0, ENXIO), F);
	seed("wire", "error-refused-hello");
	frame(gmfp_wire_encode_bye(F, sizeof(F)), F);
	seed("wire", "bye");
	/* two frames back to back: the decoder takes the first */
	n = gmfp_wire_encode_req(F, sizeof(F), 9, 0, 1, 1);
	frame(n, F);
	frame(gmfp_wire_encode_bye(F, sizeof(F)), F);
	seed("wire", "req-then-bye");
}

/* ---- pager (format: fuzz_pager.c: a 4-byte fd plan, then the packet) ---- */
enum { K_GMEM_A, K_GMEM_B, K_GMEM_A_AGAIN, K_IMAGE, K_IMAGE_WRONLY, K_PIPE, K_SOCKET,
       K_DEVNULL };
#define GMEM_A_SIZE (16 * PG)

/* The fd plan: @n fds (0xff: too many), of the kinds in @kinds. */
static void pager_plan(uint8_t n, const uint8_t *kinds)
{
	uint32_t bits = 0;
	unsigned int i;

	for (i = 0; n != 0xff && i < n; i++)
		bits |= (uint32_t)kinds[i] << (3 * i);
	u8(n);
	u8((uint8_t)bits);
	u8((uint8_t)(bits >> 8));
	u8((uint8_t)(bits >> 16));
}

static void pager_seed_fds(const struct gmfp_pager_msg *m, uint8_t n, const uint8_t *kinds,
			   const char *name)
{
	pager_plan(n, kinds);
	frame(gmfp_pager_encode(F, sizeof(F), m), F);
	seed("pager", name);
}

static void pager_seed(const struct gmfp_pager_msg *m, const char *name)
{
	pager_seed_fds(m, 0, NULL, name);
}

/* ATTACHes whose fds the daemon checks: right and wrong numbers and kinds. */
static void gen_pager_fds(void)
{
	static struct gmfp_pager_msg m;

	memset(&m, 0, sizeof(m));
	m.type = GMFP_PAGER_ATTACH;
	m.u.attach.nr_regions = 1;
	m.u.attach.source = GMFP_PAGER_SRC_FILE;
	m.u.attach.regions[0].size = GMEM_A_SIZE;
	/* all checks pass: the engine refuses a memfd (ENOTTY) */
	pager_seed_fds(&m, 2, (const uint8_t[]){ K_GMEM_A, K_IMAGE }, "fds-file-ok");
	pager_seed_fds(&m, 1, (const uint8_t[]){ K_GMEM_A }, "fds-file-no-image");
	pager_seed_fds(&m, 3, (const uint8_t[]){ K_GMEM_A, K_IMAGE, K_GMEM_B },
		       "fds-file-one-too-many");
	pager_seed_fds(&m, 2, (const uint8_t[]){ K_GMEM_A, K_PIPE }, "fds-image-pipe");
	pager_seed_fds(&m, 2, (const uint8_t[]){ K_GMEM_A, K_IMAGE_WRONLY }, "fds-image-wronly");
	pager_seed_fds(&m, 2, (const uint8_t[]){ K_GMEM_A, K_DEVNULL }, "fds-image-devnull");
	pager_seed_fds(&m, 2, (const uint8_t[]){ K_SOCKET, K_IMAGE }, "fds-region-socket");
	pager_seed_fds(&m, 2, (const uint8_t[]){ K_GMEM_B, K_IMAGE }, "fds-region-not-tiled");
	pager_seed_fds(&m, 0xff, NULL, "fds-too-many");
	/* two regions of one guest_memfd (sent twice), over TCP: no image */
	m.u.attach.nr_regions = 2;
	m.u.attach.source = GMFP_PAGER_SRC_TCP;
	strcpy(m.u.attach.port, "7070");
	m.u.attach.regions[0].size = GMEM_A_SIZE / 2;
	m.u.attach.regions[1].gmem_offset = GMEM_A_SIZE / 2;
	m.u.attach.regions[1].size = GMEM_A_SIZE / 2;
	m.u.attach.regions[1].gpa = GMEM_A_SIZE / 2;
	pager_seed_fds(&m, 2, (const uint8_t[]){ K_GMEM_A, K_GMEM_A_AGAIN }, "fds-tcp-one-gmem");
	pager_seed_fds(&m, 3, (const uint8_t[]){ K_GMEM_A, K_GMEM_A_AGAIN, K_IMAGE },
		       "fds-tcp-with-an-image");
	/* fds with a message that takes none */
	memset(&m, 0, sizeof(m));
	m.type = GMFP_PAGER_STATUS;
	pager_seed_fds(&m, 1, (const uint8_t[]){ K_GMEM_A }, "fds-with-status");
}

static void gen_pager(void)
{
	static struct gmfp_pager_msg m;
	static const char json[] = "{\"sessions\":[{\"id\":1,\"pages_total\":4096}]}";
	ssize_t n;

	memset(&m, 0, sizeof(m));
	m.type = GMFP_PAGER_ATTACH;
	m.u.attach.nr_regions = 1;
	m.u.attach.source = GMFP_PAGER_SRC_FILE;
	m.u.attach.flags = GMFP_PAGER_MARK_ZERO;
	m.u.attach.regions[0].size = 1 << 20;
	m.u.attach.regions[0].gpa = 1ull << 32;
	m.u.attach.regions[0].file_offset = 8192;
	pager_seed(&m, "attach-file");

	memset(&m, 0, sizeof(m));
	m.type = GMFP_PAGER_ATTACH;
	m.u.attach.nr_regions = 2;
	m.u.attach.source = GMFP_PAGER_SRC_TCP;
	m.u.attach.workers = 4;
	m.u.attach.max_batch = 128;
	m.u.attach.demand_readahead = 3;
	m.u.attach.bg_order = GMFP_PAGER_BG_AROUND_DEMAND;
	m.u.attach.flags = GMFP_PAGER_FINISH;
	m.u.attach.tcp_timeout_ms = 1000;
	strcpy(m.u.attach.host, "source.example");
	strcpy(m.u.attach.port, "7070");
	m.u.attach.regions[0].size = 1 << 21;
	m.u.attach.regions[1].gmem_offset = 1 << 21;
	m.u.attach.regions[1].size = 1 << 21;
	m.u.attach.regions[1].gpa = 1 << 21;
	m.u.attach.regions[1].flags = GMFP_PAGER_PRIVATE;
	pager_seed(&m, "attach-tcp-2regions");
	/* well formed, refused for its values: workers above 64 */
	pager_plan(0, NULL);
	n = gmfp_pager_encode(F, sizeof(F), &m);
	frame(n, F);
	O.b[4 + GMFP_PAGER_HDR_SIZE + 8] = 65;
	seed("pager", "attach-refused-workers");

	memset(&m, 0, sizeof(m));
	m.type = GMFP_PAGER_ATTACHED;
	m.u.attached.session = 3;
	m.u.attached.nr_gmems = 2;
	m.u.attached.pages_total = 1024;
	m.u.attached.pages_present = 10;
	pager_seed(&m, "attached");

	memset(&m, 0, sizeof(m));
	m.type = GMFP_PAGER_STATUS;
	pager_seed(&m, "status");
	m.type = GMFP_PAGER_DETACH;
	pager_seed(&m, "detach");
	m.type = GMFP_PAGER_DETACHED;
	pager_seed(&m, "detached");

	memset(&m, 0, sizeof(m));
	m.type = GMFP_PAGER_STATUS_REPLY;
	m.u.status.json = json;
	m.u.status.len = (uint32_t)strlen(json);
	pager_seed(&m, "status-reply");

	memset(&m, 0, sizeof(m));
	m.type = GMFP_PAGER_ERROR;
	m.u.error.err = -EBUSY;
	m.u.error.region = 1;
	strcpy(m.u.error.msg, "region 1: its guest_memfd is served by session 2");
	pager_seed(&m, "error");
	gen_pager_fds();
}

/* ---- engine (format: fuzz_engine.c LLVMFuzzerTestOneInput) ---- */
enum { E_RECORDS = 0, E_QUIRK = 3, E_DEMAND = 4, E_DISCARD = 5, E_SLEEP = 6, E_DRAIN = 7 };

static void engine_cfg(uint8_t c0, uint8_t c1, uint8_t max_batch, uint8_t readahead, uint8_t zero_mod,
		       uint8_t fail_mod, uint8_t fail_budget, uint8_t err)
{
	u8(c0);
	u8(c1);
	u8(max_batch);
	u8(readahead);
	u8(zero_mod);
	u8(fail_mod);
	u8(fail_budget);
	u8(err);
}

static void engine_region(uint16_t npages_minus1, uint8_t density, uint8_t seedv)
{
	u16(npages_minus1);
	u8(density);
	u8(seedv);
}

/* A batch of @n plain records of region @r, pages @pg, @pg + @step, ... */
static void engine_records(uint8_t r, uint16_t pg, uint16_t step, unsigned int n, uint8_t how)
{
	unsigned int i;

	u8(E_RECORDS);
	u8((uint8_t)(n - 1));
	for (i = 0; i < n; i++) {
		u8(r);
		u16((uint16_t)(pg + i * step));
		u8(how);
	}
}

static void gen_engine(void)
{
	unsigned int i;

	/* 1 region of 64 pages, sequential fill, batches of 16 */
	engine_cfg(0x08, 1, 16, 0, 0, 0, 0, 0);
	engine_region(63, 0, 0);
	engine_records(0, 3, 5, 8, 0x10 /* origin 1 */);
	u8(E_DEMAND), u8(0), u16(40);
	u8(E_DRAIN);
	seed("engine", "sequential-records");

	/* 2 regions, demand only, zero pages marked, discards, EINTR/EAGAIN reads */
	engine_cfg(0x01 | 0x20, 2, 0, 2, 3, 0, 0, 0);
	engine_region(99, 0, 0);
	engine_region(9, 0x80, 3);
	engine_records(0, 0, 1, 12, 0x20);
	engine_records(1, 0, 1, 10, 0x30);
	u8(E_QUIRK | 0 << 3), u8(0);		/* EINTR */
	u8(E_QUIRK | 1 << 3), u8(1);		/* EAGAIN */
	u8(E_DRAIN);
	u8(E_SLEEP), u8(50);
	u8(E_DISCARD), u8(0), u16(4);
	u8(E_DISCARD), u8(1), u16(2);
	u8(E_DRAIN);
	seed("engine", "demand-only-mark-zero-discard");

	/* 3 regions, around-demand, 2 workers, renotify + finish, failing source */
	engine_cfg(0x02 | 0x04 | 0x10 | 0x40 | 0x80, 0, 64, 8, 5, 7, 3, 5);
	engine_region(299, 0x40, 1);
	engine_region(64, 0, 0);
	engine_region(127, 0xc0, 9);
	/* a batch bigger than one read (op | 0x80: 240 + n more) */
	u8(E_RECORDS | 0x80), u8(15), u8(10);
	for (i = 0; i < 16 + 240 + 10; i++) {
		u8((uint8_t)i);
		u16((uint16_t)(i * 7));
		u8((uint8_t)(i & 0x3f));
	}
	u8(E_DRAIN);
	seed("engine", "around-demand-renotify-finish-big-batch");

	/* hostile records: past the end, raw offsets and types, then EOF and EIO */
	engine_cfg(0x01 | 0x08, 3, 8, 0, 0, 0, 0, 0);
	engine_region(31, 0, 0);
	engine_region(31, 0, 0);
	u8(E_RECORDS), u8(3);
	u8(0), u16(33), u8(0x10);		/* page 33 of 32: past the end */
	u8(0), u16(0), u8(0x40);		/* raw offset follows */
	u32(0xfffff000u), u32(0xffffffffu);
	u8(1), u16(2), u8(0x80);		/* raw type, origin, flags follow */
	u8(2), u32(9), u32(1);
	u8(1), u16(5), u8(0x8f);
	u8(1), u32(77), u32(0);
	u8(E_QUIRK | 3 << 3), u8(0);		/* end of file on region 0 */
	u8(E_QUIRK | 2 << 3), u8(1);		/* EIO on region 1 */
	u8(E_DRAIN);
	seed("engine", "hostile-records-eof-eio");
}

/* ---- serve (format: fuzz_serve.c) ---- */
static void serve_cfg(uint8_t c0, const uint32_t *sizes, uint8_t zero_mod, uint8_t fail_mod,
		      uint32_t fail_ret)
{
	uint32_t i;

	u8(c0);
	for (i = 0; i < (uint32_t)(c0 % 4); i++)
		u32(sizes[i]);
	u8(zero_mod);
	u8(fail_mod);
	u32(fail_ret);
}

static void gen_serve(void)
{
	/* sizes as fuzz_serve.c makes them: (1 + v % 4096) pages */
	const uint32_t v[3] = { 15, 0, 255 };
	const uint64_t sizes[3] = { 16 * PG, PG, 256 * PG };

	/* no layout in the HELLO, requests in and out of it, then BYE */
	serve_cfg(2, v, 3, 0, 0);
	frame(gmfp_wire_encode_hello(F, sizeof(F), 0, GMFP_WIRE_CH_DEMAND, 0, NULL), F);
	frame(gmfp_wire_encode_req(F, sizeof(F), 1, 0, 0, 4), F);
	frame(gmfp_wire_encode_req(F, sizeof(F), 2, 1, 0, 1), F);
	frame(gmfp_wire_encode_req(F, sizeof(F), 3, 0, 15, 2), F);	/* past the end */
	frame(gmfp_wire_encode_req(F, sizeof(F), 4, 2, 0, 1), F);	/* no region 2 */
	frame(gmfp_wire_encode_bye(F, sizeof(F)), F);
	seed("serve", "requests-bye");

	/* the client's layout, the server's answer to a failing source, junk zero bits */
	serve_cfg(3 | 0x40, v, 0, 5, (uint32_t)-ENODATA);
	frame(gmfp_wire_encode_hello(F, sizeof(F), 9, GMFP_WIRE_CH_BACKGROUND, 3, sizes), F);
	frame(gmfp_wire_encode_req(F, sizeof(F), 1, 2, 0, 256), F);
	frame(gmfp_wire_encode_req(F, sizeof(F), 2, 2, 6, 3), F);
	frame(gmfp_wire_encode_req(F, sizeof(F), 3, 0, 1, 3), F);
	seed("serve", "layout-failing-source-eof");

	/* another layout: ENXIO */
	serve_cfg(1, v, 0, 0, 0);
	frame(gmfp_wire_encode_hello(F, sizeof(F), 0, GMFP_WIRE_CH_DEMAND, 2, sizes), F);
	seed("serve", "layout-mismatch");

	/* a newer client: versions 2..3 in its HELLO */
	serve_cfg(1, v, 0, 0, 0);
	frame(gmfp_wire_encode_hello(F, sizeof(F), 0, GMFP_WIRE_CH_DEMAND, 0, NULL), F);
	O.b[O.n - 20 + 0] = 2;		/* min_version */
	O.b[O.n - 20 + 2] = 3;		/* max_version */
	seed("serve", "hello-versions-2-3");

	/* a frame a client never sends, after the handshake */
	serve_cfg(1, v, 0, 0, 0);
	frame(gmfp_wire_encode_hello(F, sizeof(F), 0, GMFP_WIRE_CH_DEMAND, 0, NULL), F);
	fill_pages(0, 0, 1);
	frame(gmfp_wire_encode_data(F, sizeof(F), 1, 0, 0, 1, NULL, pages), F);
	seed("serve", "data-from-client");
}

/* ---- tcp (format: fuzz_tcp.c) ---- */
static void tcp_fetch(uint8_t region, uint16_t pgoff, unsigned int npages)
{
	u8(region);
	u16(pgoff);
	u8((uint8_t)(npages - 1));
}

/* A chunk of the server's script: what follows, until tcp_chunk_end(). */
static size_t tcp_chunk(void)
{
	u16(0);
	return O.n;
}

static void tcp_chunk_end(size_t start, bool end_conn)
{
	size_t len = O.n - start;

	if (len >= 0x8000)
		die("tcp chunk too large");
	O.b[start - 2] = (uint8_t)len;
	O.b[start - 1] = (uint8_t)(len >> 8 | (end_conn ? 0x80 : 0));
}

static void gen_tcp(void)
{
	const uint64_t sizes[2] = { 16 * PG, 64 * PG };
	uint64_t zero = 0x5;
	size_t c;

	/* a layout of 1 region of 16 pages (fuzz_tcp.c: 1 + 15), two fetches */
	u8(1 | 1 << 3);
	u16(15);
	tcp_fetch(0, 0, 1);
	tcp_fetch(0, 4, 3);
	c = tcp_chunk();
	frame(gmfp_wire_encode_welcome(F, sizeof(F), 0, 1, sizes), F);
	tcp_chunk_end(c, false);
	c = tcp_chunk();
	fill_pages(0, 0, 1);
	frame(gmfp_wire_encode_data(F, sizeof(F), 1, 0, 0, 1, NULL, pages), F);
	tcp_chunk_end(c, false);
	c = tcp_chunk();
	fill_pages(0, 4, 3);
	frame(gmfp_wire_encode_data(F, sizeof(F), 2, 0, 4, 3, &zero, pages), F);
	tcp_chunk_end(c, true);
	seed("tcp", "welcome-data-data");

	/* no layout; an ERROR, then BYE, then a new connection serves */
	u8(0 | 2 << 3);
	tcp_fetch(1, 7, 2);
	tcp_fetch(1, 7, 2);
	tcp_fetch(1, 7, 2);
	c = tcp_chunk();
	frame(gmfp_wire_encode_welcome(F, sizeof(F), 0, 2, sizes), F);
	tcp_chunk_end(c, false);
	c = tcp_chunk();
	frame(gmfp_wire_encode_error(F, sizeof(F), 1, 1, 7, 2, ENODATA), F);
	tcp_chunk_end(c, false);
	c = tcp_chunk();
	frame(gmfp_wire_encode_bye(F, sizeof(F)), F);
	tcp_chunk_end(c, true);
	c = tcp_chunk();
	frame(gmfp_wire_encode_welcome(F, sizeof(F), 0, 0, NULL), F);
	tcp_chunk_end(c, false);
	c = tcp_chunk();
	fill_pages(1, 7, 2);
	frame(gmfp_wire_encode_data(F, sizeof(F), 3, 1, 7, 2, NULL, pages), F);
	tcp_chunk_end(c, false);
	seed("tcp", "error-bye-reconnect");

	/* the server refuses the layout; then answers with the wrong seq */
	u8(2 | 1 << 3);
	u16(15);
	u16(63);
	tcp_fetch(0, 0, 1);
	tcp_fetch(0, 0, 1);
	c = tcp_chunk();
	frame(gmfp_wire_encode_error(F, sizeof(F), 0, 0, 0, 0, ENXIO), F);
	tcp_chunk_end(c, true);
	c = tcp_chunk();
	frame(gmfp_wire_encode_welcome(F, sizeof(F), 0, 2, sizes), F);
	tcp_chunk_end(c, false);
	c = tcp_chunk();
	fill_pages(0, 0, 1);
	frame(gmfp_wire_encode_data(F, sizeof(F), 5, 0, 0, 1, NULL, pages), F);
	tcp_chunk_end(c, false);
	seed("tcp", "refused-then-wrong-seq");
}

/* ---- order ---- */
static void text(uint8_t layout, const char *s)
{
	u8(layout);
	put(s, strlen(s));
}

static void gen_order(void)
{
	/* layout byte: regions = b % 4, sizes from the bits above (fuzz_order.c) */
	text(0xff, "0 0\n1 6\n2 63\n# comment\n\n\t 0 5 # why\r\n1 99999\n");
	seed("order", "entries-comments-crlf");
	text(0x03, "3 1\n18446744073709551615 18446744073709551615\n2 1\n");
	seed("order", "huge-numbers-dropped");
	text(0x02, "0 1\n1 2 3\n");
	seed("order", "bad-line");
	text(0x01, "18446744073709551616 0\n");
	seed("order", "overflow");
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: gen_corpus <dir>\n");
		return 2;
	}
	root = argv[1];
	mkdir(root, 0755);
	gen_wire();
	gen_pager();
	gen_engine();
	gen_serve();
	gen_tcp();
	gen_order();
	return 0;
}
