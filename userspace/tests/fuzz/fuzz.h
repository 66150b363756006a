/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Shared helpers of the libFuzzer targets (tests/fuzz/fuzz_*.c).
 *
 * A target checks properties, not only memory safety: FUZZ_CHECK() prints
 * what went wrong and aborts, which libFuzzer reports as a crash and saves
 * the input.  Inputs are read with a cursor (struct fz) that yields zeroes
 * once the data is used up, so every input, however short, is a complete
 * test case.
 */
#ifndef GMFP_FUZZ_H
#define GMFP_FUZZ_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_CHECK(cond, ...)						\
	do {								\
		if (!(cond)) {						\
			fprintf(stderr, "%s:%d: check failed: %s: ",	\
				__FILE__, __LINE__, #cond);		\
			fprintf(stderr, __VA_ARGS__);			\
			fputc('\n', stderr);				\
			abort();					\
		}							\
	} while (0)

struct fz {
	const uint8_t *p;
	size_t len, pos;
};

static inline void fz_init(struct fz *f, const uint8_t *p, size_t len)
{
	f->p = p;
	f->len = len;
	f->pos = 0;
}

static inline size_t fz_left(const struct fz *f)
{
	return f->len - f->pos;
}

static inline uint8_t fz_u8(struct fz *f)
{
	return f->pos < f->len ? f->p[f->pos++] : 0;
}

static inline uint16_t fz_u16(struct fz *f)
{
	uint16_t v = fz_u8(f);

	return (uint16_t)(v | fz_u8(f) << 8);
}

static inline uint32_t fz_u32(struct fz *f)
{
	uint32_t v = fz_u16(f);

	return v | (uint32_t)fz_u16(f) << 16;
}

static inline uint64_t fz_u64(struct fz *f)
{
	uint64_t v = fz_u32(f);

	return v | (uint64_t)fz_u32(f) << 32;
}

/* Up to @n bytes (fewer at the end of the input): a pointer into it. */
static inline const uint8_t *fz_bytes(struct fz *f, size_t n, size_t *got)
{
	const uint8_t *p = f->p + f->pos;

	*got = n < fz_left(f) ? n : fz_left(f);
	f->pos += *got;
	return p;
}

/* An exact-size heap copy: ASan reports any read past @len. */
static inline uint8_t *fz_dup(const uint8_t *p, size_t len)
{
	uint8_t *c = malloc(len ? len : 1);

	FUZZ_CHECK(c, "out of memory");
	if (len)
		memcpy(c, p, len);
	return c;
}

/*
 * Contents of page @pg of region @region as the fake sources serve them:
 * every 8-byte word names its region, page and place, so a page copied to
 * the wrong offset, a stale buffer or a torn copy shows.
 */
static inline uint64_t fz_word(uint32_t region, uint64_t pg, uint32_t j)
{
	return ((uint64_t)region << 56 | pg << 16 | j) ^ 0x5a5a000000005a5aull;
}

static inline void fz_fill_page(void *page, uint32_t region, uint64_t pg)
{
	uint64_t *w = page;
	uint32_t j;

	for (j = 0; j < 4096 / 8; j++)
		w[j] = fz_word(region, pg, j);
}

/* Whether @page holds page @pg of @region (sampled), or zeroes if @zero. */
static inline bool fz_page_ok(const void *page, uint32_t region, uint64_t pg, bool zero)
{
	const uint64_t *w = page;
	uint32_t j;

	for (j = 0; j < 4096 / 8; j += j < 4 || j > 506 ? 1 : 31)
		if (w[j] != (zero ? 0 : fz_word(region, pg, j)))
			return false;
	return true;
}

#endif /* GMFP_FUZZ_H */
