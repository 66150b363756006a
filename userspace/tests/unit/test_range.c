// SPDX-License-Identifier: LGPL-2.1-or-later
/* Page lists to runs (gmfp_for_each_run) and gmfp_find_next_zero(). */
#include "unit.h"

struct run {
	uint64_t first, npages;
};

struct collect {
	struct run runs[64];
	unsigned int n;
	unsigned int stop_after;	/* return stop_ret from this call (1-based), 0: never */
	int stop_ret;
};

static int collect_cb(void *arg, uint64_t first, uint64_t npages)
{
	struct collect *c = arg;

	assert_true(c->n < GMFP_ARRAY_SIZE(c->runs));
	c->runs[c->n].first = first;
	c->runs[c->n].npages = npages;
	c->n++;
	if (c->stop_after && c->n == c->stop_after)
		return c->stop_ret;
	return 0;
}

static void expect_runs(const struct collect *c, const struct run *want,
			unsigned int n)
{
	unsigned int i;

	assert_int_equal(c->n, n);
	for (i = 0; i < n; i++) {
		assert_true(c->runs[i].first == want[i].first);
		assert_true(c->runs[i].npages == want[i].npages);
	}
}

/* gmfp_for_each_run() over @p with @max_run finishes and yields exactly @want. */
static void check_runs(uint64_t *p, size_t n, uint64_t max_run,
		       const struct run *want, unsigned int nwant)
{
	struct collect c = { 0 };

	assert_int_equal(gmfp_for_each_run(p, n, max_run, collect_cb, &c), 0);
	expect_runs(&c, want, nwant);
}

/* A 64-bit xorshift step: the same pseudo-random pages on every run. */
static uint64_t xorshift(uint64_t *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 7;
	*x ^= *x << 17;
	return *x;
}

static void test_empty(void **state)
{
	struct collect c = { 0 };

	(void)state;
	assert_int_equal(gmfp_for_each_run(NULL, 0, 0, collect_cb, &c), 0);
	assert_int_equal(c.n, 0);
}

static void test_single(void **state)
{
	uint64_t p[] = { 42 };
	const struct run want[] = { { 42, 1 } };

	(void)state;
	check_runs(p, 1, 0, want, 1);
}

static void test_unsorted(void **state)
{
	uint64_t p[] = { 9, 3, 1, 2, 10, 20, 0, 8, 19 };
	const struct run want[] = { { 0, 4 }, { 8, 3 }, { 19, 2 } };
	unsigned int i;

	(void)state;
	check_runs(p, GMFP_ARRAY_SIZE(p), 0, want, GMFP_ARRAY_SIZE(want));
	/* Sorted in place, as documented. */
	for (i = 1; i < GMFP_ARRAY_SIZE(p); i++)
		assert_true(p[i - 1] < p[i]);
}

static void test_duplicates(void **state)
{
	uint64_t p[] = { 5, 5, 6, 5, 7, 7, 100, 100, 6 };
	const struct run want[] = { { 5, 3 }, { 100, 1 } };

	(void)state;
	check_runs(p, GMFP_ARRAY_SIZE(p), 0, want, GMFP_ARRAY_SIZE(want));
}

static void test_all_duplicates(void **state)
{
	uint64_t p[] = { 3, 3, 3, 3 };
	const struct run want[] = { { 3, 1 } };

	(void)state;
	check_runs(p, GMFP_ARRAY_SIZE(p), 1, want, 1);
}

static void test_max_run(void **state)
{
	uint64_t p[10];
	const struct run want4[] = { { 0, 4 }, { 4, 4 }, { 8, 2 } };
	const struct run want1[] = { { 0, 1 }, { 1, 1 }, { 2, 1 } };
	const struct run want5[] = { { 0, 5 }, { 5, 5 } };
	const struct run want_all[] = { { 0, 10 } };
	unsigned int i;

	(void)state;
	for (i = 0; i < 10; i++)
		p[i] = 9 - i;
	check_runs(p, 10, 4, want4, 3);
	check_runs(p, 3, 1, want1, 3);
	check_runs(p, 10, 5, want5, 2);
	/* max_run at or above the run length: no cut */
	check_runs(p, 10, 10, want_all, 1);
	check_runs(p, 10, UINT64_MAX, want_all, 1);
}

static void test_max_run_with_duplicates(void **state)
{
	/* Duplicates must not count towards max_run. */
	uint64_t p[] = { 0, 0, 1, 1, 2, 2, 3, 3, 4 };
	const struct run want[] = { { 0, 3 }, { 3, 2 } };

	(void)state;
	check_runs(p, GMFP_ARRAY_SIZE(p), 3, want, GMFP_ARRAY_SIZE(want));
}

static void test_early_stop(void **state)
{
	/*
	 * A non-zero return ends the walk and is passed on as is, negative
	 * or not, from the first run, a middle one or the last.
	 */
	static const struct {
		unsigned int stop_after;
		int stop_ret;
	} cases[] = { { 2, -ENOSPC }, { 4, 7 }, { 1, -1 } };
	uint64_t p[] = { 1, 3, 5, 7 };
	unsigned int i;

	(void)state;
	for (i = 0; i < GMFP_ARRAY_SIZE(cases); i++) {
		struct collect c = { .stop_after = cases[i].stop_after,
				     .stop_ret = cases[i].stop_ret };

		assert_int_equal(gmfp_for_each_run(p, 4, 0, collect_cb, &c),
				 cases[i].stop_ret);
		assert_int_equal(c.n, cases[i].stop_after);
	}
}

static void test_high_indices(void **state)
{
	/* 0 follows UINT64_MAX only modulo 2^64: two runs, not one. */
	uint64_t p[] = { UINT64_MAX, 0 };
	uint64_t q[] = { UINT64_MAX, UINT64_MAX - 1, 1, 0, UINT64_MAX - 2 };
	uint64_t r[] = { UINT64_MAX, UINT64_MAX, UINT64_MAX - 1 };
	const struct run want_p[] = { { 0, 1 }, { UINT64_MAX, 1 } };
	const struct run want_q[] = { { 0, 2 }, { UINT64_MAX - 2, 3 } };
	const struct run want_q2[] = { { 0, 2 }, { UINT64_MAX - 2, 2 }, { UINT64_MAX, 1 } };
	const struct run want_r[] = { { UINT64_MAX - 1, 2 } };

	(void)state;
	check_runs(p, 2, 0, want_p, 2);
	check_runs(q, 5, 0, want_q, 2);
	check_runs(q, 5, 2, want_q2, 3);
	check_runs(r, 3, 0, want_r, 1);
}

static void test_large_gap(void **state)
{
	/* Differences above INT_MAX must sort right (no x - y comparator). */
	uint64_t p[] = { 1ull << 40, 5, 1ull << 63, (1ull << 40) + 1, 4 };
	const struct run want[] = { { 4, 2 }, { 1ull << 40, 2 }, { 1ull << 63, 1 } };

	(void)state;
	check_runs(p, 5, 0, want, 3);
}

/* Runs must cover exactly the distinct input pages, each at most max_run long. */
static int cover_cb(void *arg, uint64_t first, uint64_t npages)
{
	uint8_t *seen = arg;
	uint64_t i;

	for (i = 0; i < npages; i++) {
		assert_true(first + i < 2048);
		assert_int_equal(seen[first + i], 1);
		seen[first + i] = 2;
	}
	return 0;
}

struct cutcheck {
	uint64_t max_run, prev_end;
	bool any;
};

static int cut_cb(void *arg, uint64_t first, uint64_t npages)
{
	struct cutcheck *k = arg;

	assert_true(npages >= 1);
	if (k->max_run)
		assert_true(npages <= k->max_run);
	/* Ascending and not overlapping. */
	if (k->any)
		assert_true(first >= k->prev_end);
	k->prev_end = first + npages;
	k->any = true;
	return 0;
}

static void test_random_cover(void **state)
{
	static uint64_t p[4096];
	static uint8_t seen[2048];
	unsigned int round, i;
	uint64_t x = 88172645463325252ull;

	(void)state;
	for (round = 0; round < 200; round++) {
		size_t n = round * 20 % 4096;
		struct cutcheck k = { .max_run = round % 7 };

		memset(seen, 0, sizeof(seen));
		for (i = 0; i < n; i++) {
			p[i] = xorshift(&x) % (round % 3 ? 2048 : 300);
			seen[p[i]] = 1;
		}
		assert_int_equal(gmfp_for_each_run(p, n, k.max_run, cover_cb, seen), 0);
		for (i = 0; i < 2048; i++)
			assert_int_not_equal(seen[i], 1);
		assert_int_equal(gmfp_for_each_run(p, n, k.max_run, cut_cb, &k), 0);
	}
}

/* ---- gmfp_find_next_zero ---- */

static uint64_t naive_next_zero(const _Atomic uint64_t *map, uint64_t n, uint64_t from)
{
	for (; from < n; from++)
		if (!gmfp_test_bit(map, from))
			return from;
	return n;
}

static void test_fnz_empty_map(void **state)
{
	_Atomic uint64_t map[4] = { 0 };

	(void)state;
	assert_int_equal(gmfp_find_next_zero(map, 256, 0), 0);
	assert_int_equal(gmfp_find_next_zero(map, 256, 5), 5);
	assert_int_equal(gmfp_find_next_zero(map, 256, 64), 64);
	assert_int_equal(gmfp_find_next_zero(map, 256, 255), 255);
	assert_int_equal(gmfp_find_next_zero(map, 0, 0), 0);
}

static void test_fnz_all_set(void **state)
{
	_Atomic uint64_t map[4] = { ~0ull, ~0ull, ~0ull, ~0ull };

	(void)state;
	assert_int_equal(gmfp_find_next_zero(map, 256, 0), 256);
	assert_int_equal(gmfp_find_next_zero(map, 256, 200), 256);
	assert_int_equal(gmfp_find_next_zero(map, 128, 0), 128);
	assert_int_equal(gmfp_find_next_zero(map, 1, 0), 1);
	assert_int_equal(gmfp_find_next_zero(map, 100, 99), 100);
}

static void test_fnz_word_boundaries(void **state)
{
	_Atomic uint64_t map[3] = { ~0ull, ~1ull, ~0ull };

	(void)state;
	/* bit 64 (word 1, bit 0) is the only clear one */
	assert_int_equal(gmfp_find_next_zero(map, 192, 0), 64);
	assert_int_equal(gmfp_find_next_zero(map, 192, 63), 64);
	assert_int_equal(gmfp_find_next_zero(map, 192, 64), 64);
	assert_int_equal(gmfp_find_next_zero(map, 192, 65), 192);
	assert_int_equal(gmfp_find_next_zero(map, 64, 0), 64);
	assert_int_equal(gmfp_find_next_zero(map, 65, 0), 64);

	/* bit 63 clear: the last bit of a word */
	map[0] = ~(1ull << 63);
	map[1] = ~0ull;
	assert_int_equal(gmfp_find_next_zero(map, 192, 0), 63);
	assert_int_equal(gmfp_find_next_zero(map, 192, 63), 63);
	assert_int_equal(gmfp_find_next_zero(map, 192, 64), 192);
	assert_int_equal(gmfp_find_next_zero(map, 63, 0), 63);

	/* bit 128: first bit of the third word, after a full word */
	map[0] = ~0ull;
	map[2] = ~1ull;
	assert_int_equal(gmfp_find_next_zero(map, 192, 0), 128);
	assert_int_equal(gmfp_find_next_zero(map, 192, 127), 128);
}

static void test_fnz_clear_before_from(void **state)
{
	/* Clear bits below @from are not found. */
	_Atomic uint64_t map[2] = { ~0x3ffull, ~0ull };

	(void)state;
	assert_int_equal(gmfp_find_next_zero(map, 128, 0), 0);
	assert_int_equal(gmfp_find_next_zero(map, 128, 9), 9);
	assert_int_equal(gmfp_find_next_zero(map, 128, 10), 128);
	map[0] = ~0x3ffull & ~(1ull << 40);
	assert_int_equal(gmfp_find_next_zero(map, 128, 10), 40);
}

static void test_fnz_partial_word(void **state)
{
	/* n = 70: bits at and above 70 are beyond the map, clear or not. */
	_Atomic uint64_t map[2] = { ~0ull, ~(1ull << 11) };	/* bit 75 clear */

	(void)state;
	assert_int_equal(gmfp_find_next_zero(map, 70, 0), 70);
	assert_int_equal(gmfp_find_next_zero(map, 70, 69), 70);
	assert_int_equal(gmfp_find_next_zero(map, 76, 0), 75);
	map[1] = ~(1ull << 5);	/* bit 69 */
	assert_int_equal(gmfp_find_next_zero(map, 70, 0), 69);
	assert_int_equal(gmfp_find_next_zero(map, 69, 0), 69);
	/* the unused tail of the last word left zero */
	map[1] = (1ull << 6) - 1;	/* bits 64..69 set, 70.. clear */
	assert_int_equal(gmfp_find_next_zero(map, 70, 0), 70);
	assert_int_equal(gmfp_find_next_zero(map, 71, 0), 70);
}

static void test_fnz_from_beyond(void **state)
{
	_Atomic uint64_t map[2] = { 0, 0 };

	(void)state;
	assert_int_equal(gmfp_find_next_zero(map, 100, 100), 100);
	assert_int_equal(gmfp_find_next_zero(map, 100, 101), 100);
	assert_int_equal(gmfp_find_next_zero(map, 100, 1000000), 100);
	assert_true(gmfp_find_next_zero(map, 100, UINT64_MAX) == 100);
	assert_int_equal(gmfp_find_next_zero(map, 0, 5), 0);
}

static void test_fnz_random(void **state)
{
	_Atomic uint64_t map[5];
	uint64_t x = 0x9e3779b97f4a7c15ull, n, from;
	unsigned int round, w;

	(void)state;
	for (round = 0; round < 300; round++) {
		for (w = 0; w < 5; w++) {
			xorshift(&x);
			/* mostly-full words, to get long searches */
			map[w] = round % 2 ? x | (x << 7) | (x >> 3) : x;
			if (round % 5 == 0)
				map[w] = ~0ull;
		}
		n = 1 + round % 320;
		for (from = 0; from <= n + 1; from++)
			assert_int_equal(gmfp_find_next_zero(map, n, from),
					 naive_next_zero(map, n, from));
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_empty),
		cmocka_unit_test(test_single),
		cmocka_unit_test(test_unsorted),
		cmocka_unit_test(test_duplicates),
		cmocka_unit_test(test_all_duplicates),
		cmocka_unit_test(test_max_run),
		cmocka_unit_test(test_max_run_with_duplicates),
		cmocka_unit_test(test_early_stop),
		cmocka_unit_test(test_high_indices),
		cmocka_unit_test(test_large_gap),
		cmocka_unit_test(test_random_cover),
		cmocka_unit_test(test_fnz_empty_map),
		cmocka_unit_test(test_fnz_all_set),
		cmocka_unit_test(test_fnz_word_boundaries),
		cmocka_unit_test(test_fnz_clear_before_from),
		cmocka_unit_test(test_fnz_partial_word),
		cmocka_unit_test(test_fnz_from_beyond),
		cmocka_unit_test(test_fnz_random),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
