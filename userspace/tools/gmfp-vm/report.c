// SPDX-License-Identifier: LGPL-2.1-or-later
/* Checks of the guest's memory and compute state; a small JSON builder. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gvm.h"

double gvm_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

uint64_t gvm_expected_sum(uint64_t seed, uint64_t gen, uint64_t npages)
{
	uint64_t p, j, sum = 0;

	for (p = 0; p < npages; p++) {
		uint64_t base = gv_page_base(seed, gen, p);

		for (j = 0; j < GV_WORDS; j++)
			sum += (base ^ (j * GV_WORD_MUL)) * (2 * j + 1);
	}
	return sum;
}

uint64_t gvm_memory_sum(const uint8_t *mem, uint64_t npages)
{
	const volatile uint64_t *w = (const volatile uint64_t *)mem;
	uint64_t p, j, sum = 0;

	for (p = 0; p < npages; p++, w += GV_WORDS)
		for (j = 0; j < GV_WORDS; j++)
			sum += w[j] * (2 * j + 1);
	return sum;
}

int64_t gvm_check_present(struct gvm *v, uint64_t seed, uint64_t gen, uint64_t *present)
{
	uint64_t *bm = calloc((v->ram_pages + 63) / 64, 8), p, j, n = 0;
	int64_t bad = 0;
	int r;

	if (!bm)
		return -ENOMEM;
	/* gmfp: the presence bitmap; only present pages are read (others would wait) */
	r = gmfp_gmem_bitmap(v->gmem, 0, v->ram_size, bm);
	if (r == -ENXIO || r == -EINVAL) {
		/* tracking finished: everything is present */
		memset(bm, 0xff, (v->ram_pages + 63) / 64 * 8);
		r = 0;
	}
	if (r) {
		free(bm);
		return r;
	}
	for (p = 0; p < v->ram_pages; p++) {
		const volatile uint64_t *w;
		uint64_t base;

		if (!(bm[p / 64] >> (p % 64) & 1))
			continue;
		n++;
		w = (const volatile uint64_t *)(v->ram + p * PG);
		base = gv_page_base(seed, gen, p);
		for (j = 0; j < GV_WORDS; j++)
			if (w[j] != (base ^ (j * GV_WORD_MUL))) {
				bad++;
				break;
			}
	}
	free(bm);
	*present = n;
	return bad;
}

/* x <- a x + c, n times, as one affine map: O(log n) */
static uint64_t lcg_jump(uint64_t x, uint64_t n)
{
	uint64_t a = GV_LCG_A, c = GV_LCG_C, ra = 1, rc = 0;

	while (n) {
		if (n & 1) {
			ra *= a;
			rc = rc * a + c;
		}
		c = (a + 1) * c;
		a *= a;
		n >>= 1;
	}
	return ra * x + rc;
}

bool gvm_compute_consistent(uint64_t seed, uint64_t units, uint64_t state)
{
	uint64_t x0 = GV_COMPUTE_SEED(seed), s = (uint64_t)GV_UNIT_STEPS;

	if (!units)
		return true;	/* nothing published yet */
	/* the state is stored before the count: it may be one unit ahead */
	return lcg_jump(x0, units * s) == state || lcg_jump(x0, (units + 1) * s) == state;
}

static uint64_t gcd(uint64_t a, uint64_t b)
{
	while (b) {
		uint64_t t = a % b;

		a = b;
		b = t;
	}
	return a;
}

uint64_t gvm_pick_stride(uint64_t npages, uint64_t seed)
{
	uint64_t s;

	if (npages < 3)
		return 1;
	/* about 0.38 of the way round, coprime with npages: every page once */
	s = npages * 382 / 1000 + (seed % 7);
	while (gcd(s, npages) != 1)
		s++;
	return s % npages ? s % npages : 1;
}

/* ---- JSON ---- */

static void jb_put(struct jb *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void jb_put(struct jb *j, const char *fmt, ...)
{
	va_list ap;
	int n;

	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(j->buf ? j->buf + j->len : NULL, j->buf ? j->cap - j->len : 0, fmt, ap);
		va_end(ap);
		if (n < 0) {
			j->oom = 1;
			return;
		}
		if (j->buf && j->len + (size_t)n < j->cap) {
			j->len += (size_t)n;
			return;
		}
		size_t cap = (j->cap ? j->cap * 2 : 4096) + (size_t)n;
		char *nb = realloc(j->buf, cap);

		if (!nb) {
			j->oom = 1;
			return;
		}
		j->buf = nb;
		j->cap = cap;
	}
}

void jb_open(struct jb *j)
{
	memset(j, 0, sizeof(*j));
	jb_put(j, "{");
	j->first = true;
}

void jb_close(struct jb *j)
{
	jb_put(j, "}");
	j->first = false;
}

void jb_key(struct jb *j, const char *k)
{
	jb_put(j, "%s\"%s\":", j->first ? "" : ",", k);
	j->first = false;
}

void jb_obj(struct jb *j, const char *k)
{
	jb_key(j, k);
	jb_put(j, "{");
	j->first = true;
}

void jb_u64(struct jb *j, const char *k, uint64_t v)
{
	jb_key(j, k);
	jb_put(j, "%" PRIu64, v);
}

void jb_i64(struct jb *j, const char *k, int64_t v)
{
	jb_key(j, k);
	jb_put(j, "%" PRId64, v);
}

void jb_dbl(struct jb *j, const char *k, double v)
{
	jb_key(j, k);
	jb_put(j, "%.3f", v);
}

void jb_bool(struct jb *j, const char *k, bool v)
{
	jb_key(j, k);
	jb_put(j, "%s", v ? "true" : "false");
}

void jb_str(struct jb *j, const char *k, const char *v)
{
	jb_key(j, k);
	jb_put(j, "\"");
	for (; v && *v; v++) {
		unsigned char c = (unsigned char)*v;

		if (c == '"' || c == '\\')
			jb_put(j, "\\%c", c);
		else if (c < 0x20)
			jb_put(j, "\\u%04x", c);
		else
			jb_put(j, "%c", c);
	}
	jb_put(j, "\"");
}

void jb_raw(struct jb *j, const char *k, const char *json)
{
	jb_key(j, k);
	jb_put(j, "%s", json && *json ? json : "null");
}

void jb_free(struct jb *j)
{
	free(j->buf);
	memset(j, 0, sizeof(*j));
}
