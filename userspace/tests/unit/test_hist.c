// SPDX-License-Identifier: LGPL-2.1-or-later
/* Latency histogram: bucket edges, percentiles, concurrent adds. */
#include <pthread.h>

#include "unit.h"

static void test_bucket_edges(void **state)
{
	unsigned int i;

	(void)state;
	assert_int_equal(gmfp_hist_bucket_of(0), 0);
	assert_int_equal(gmfp_hist_bucket_of(1), 0);
	assert_int_equal(gmfp_hist_bucket_of(2), 1);
	assert_int_equal(gmfp_hist_bucket_of(3), 1);
	assert_int_equal(gmfp_hist_bucket_of(4), 2);
	assert_int_equal(gmfp_hist_bucket_of(7), 2);
	assert_int_equal(gmfp_hist_bucket_of(8), 3);
	assert_int_equal(gmfp_hist_bucket_of(1000), 9);
	assert_int_equal(gmfp_hist_bucket_of((1ull << 31) - 1), 30);
	assert_int_equal(gmfp_hist_bucket_of(1ull << 31), 31);
	assert_int_equal(gmfp_hist_bucket_of(1ull << 32), 31);
	assert_int_equal(gmfp_hist_bucket_of(1ull << 63), 31);
	assert_int_equal(gmfp_hist_bucket_of(UINT64_MAX), 31);
	/* Every power of two opens its bucket; the value below closes the previous. */
	for (i = 1; i < GMFP_HIST_BUCKETS; i++) {
		assert_int_equal(gmfp_hist_bucket_of(1ull << i), i);
		assert_int_equal(gmfp_hist_bucket_of((2ull << i) - 1), i);
		if (i >= 2)
			assert_int_equal(gmfp_hist_bucket_of((1ull << i) - 1), i - 1);
	}
}

static void test_add_read(void **state)
{
	struct gmfp_hist h;
	uint64_t b[GMFP_HIST_BUCKETS], count, max;
	unsigned int i;

	(void)state;
	memset(&h, 0, sizeof(h));
	gmfp_hist_read(&h, b, &count, &max);
	assert_int_equal(count, 0);
	assert_int_equal(max, 0);
	for (i = 0; i < GMFP_HIST_BUCKETS; i++)
		assert_int_equal(b[i], 0);

	gmfp_hist_add(&h, 0);
	gmfp_hist_add(&h, 1);
	gmfp_hist_add(&h, 5);
	gmfp_hist_add(&h, 3);
	gmfp_hist_add(&h, UINT64_MAX);
	gmfp_hist_add(&h, 1ull << 31);
	gmfp_hist_add(&h, 7);
	gmfp_hist_read(&h, b, &count, &max);
	assert_int_equal(count, 7);
	assert_true(max == UINT64_MAX);
	assert_int_equal(b[0], 2);
	assert_int_equal(b[1], 1);
	assert_int_equal(b[2], 2);
	assert_int_equal(b[31], 2);
	for (i = 3; i < 31; i++)
		assert_int_equal(b[i], 0);
	assert_int_equal(atomic_load(&h.count), 7);
}

static void test_max_only_grows(void **state)
{
	struct gmfp_hist h;
	uint64_t b[GMFP_HIST_BUCKETS], count, max;

	(void)state;
	memset(&h, 0, sizeof(h));
	gmfp_hist_add(&h, 100);
	gmfp_hist_add(&h, 10);
	gmfp_hist_add(&h, 99);
	gmfp_hist_read(&h, b, &count, &max);
	assert_int_equal(max, 100);
	gmfp_hist_add(&h, 101);
	gmfp_hist_read(&h, b, &count, &max);
	assert_int_equal(max, 101);
	assert_int_equal(count, 4);
}

static void test_percentile_empty(void **state)
{
	uint64_t b[GMFP_HIST_BUCKETS] = { 0 };

	(void)state;
	assert_int_equal(gmfp_hist_percentile(b, 0, 0, 50), 0);
	assert_int_equal(gmfp_hist_percentile(b, 0, 123, 99), 0);
	assert_int_equal(gmfp_hist_percentile(b, 0, 0, 100), 0);
}

/* 50 x 1 us, 49 x 10 us, 1 x 1000 us */
static void test_percentile_three_groups(void **state)
{
	struct gmfp_hist h;
	uint64_t b[GMFP_HIST_BUCKETS], count, max;
	int i;

	(void)state;
	memset(&h, 0, sizeof(h));
	for (i = 0; i < 50; i++)
		gmfp_hist_add(&h, 1);
	for (i = 0; i < 49; i++)
		gmfp_hist_add(&h, 10);
	gmfp_hist_add(&h, 1000);
	gmfp_hist_read(&h, b, &count, &max);
	assert_int_equal(count, 100);
	assert_int_equal(max, 1000);

	/* rank 50 is the last 1 us sample: bucket 0, upper bound 2 */
	assert_int_equal(gmfp_hist_percentile(b, count, max, 50), 2);
	/* rank 51: first 10 us sample, bucket 3 = [8, 16) */
	assert_int_equal(gmfp_hist_percentile(b, count, max, 51), 16);
	assert_int_equal(gmfp_hist_percentile(b, count, max, 50.5), 16);
	assert_int_equal(gmfp_hist_percentile(b, count, max, 99), 16);
	/* rank 100: bucket 9 = [512, 1024), capped at the max 1000 */
	assert_int_equal(gmfp_hist_percentile(b, count, max, 99.5), 1000);
	assert_int_equal(gmfp_hist_percentile(b, count, max, 100), 1000);
	assert_int_equal(gmfp_hist_percentile(b, count, max, 1), 2);
	assert_int_equal(gmfp_hist_percentile(b, count, max, 0.001), 2);
}

/* Every value 1..1000 once. */
static void test_percentile_uniform(void **state)
{
	struct gmfp_hist h;
	uint64_t b[GMFP_HIST_BUCKETS], count, max, v;

	(void)state;
	memset(&h, 0, sizeof(h));
	for (v = 1; v <= 1000; v++)
		gmfp_hist_add(&h, v);
	gmfp_hist_read(&h, b, &count, &max);
	assert_int_equal(count, 1000);
	assert_int_equal(b[0], 1);
	assert_int_equal(b[1], 2);
	assert_int_equal(b[8], 256);
	assert_int_equal(b[9], 489);
	/* cumulative: b0..b3 = 15, b0..b8 = 511 */
	assert_int_equal(gmfp_hist_percentile(b, count, max, 1), 16);	/* rank 10 */
	assert_int_equal(gmfp_hist_percentile(b, count, max, 1.5), 16);	/* rank 15: last of b3 */
	assert_int_equal(gmfp_hist_percentile(b, count, max, 1.55), 32);	/* rank 16: first of b4 */
	assert_int_equal(gmfp_hist_percentile(b, count, max, 50), 512);	/* rank 500 */
	assert_int_equal(gmfp_hist_percentile(b, count, max, 51.05), 512);	/* rank 511 */
	assert_int_equal(gmfp_hist_percentile(b, count, max, 51.15), 1000); /* rank 512 */
	assert_int_equal(gmfp_hist_percentile(b, count, max, 99), 1000);
	assert_int_equal(gmfp_hist_percentile(b, count, max, 100), 1000);
}

static void test_percentile_rank_exact(void **state)
{
	uint64_t b[GMFP_HIST_BUCKETS] = { 0 };

	(void)state;
	/*
	 * Rank ceil(pct/100 * count), with no floating-point slop: 99 of 100
	 * samples in bucket 2 and one in bucket 5 -> p99 is bucket 2.
	 */
	b[2] = 99;
	b[5] = 1;
	assert_int_equal(gmfp_hist_percentile(b, 100, 40, 99), 8);
	assert_int_equal(gmfp_hist_percentile(b, 100, 40, 99.01), 40);
	/* 990 of 1000 */
	b[2] = 990;
	b[5] = 10;
	assert_int_equal(gmfp_hist_percentile(b, 1000, 40, 99), 8);
	assert_int_equal(gmfp_hist_percentile(b, 1000, 40, 99.15), 40);
	/* 7 samples: p50 -> rank ceil(3.5) = 4 */
	memset(b, 0, sizeof(b));
	b[1] = 3;
	b[4] = 4;
	assert_int_equal(gmfp_hist_percentile(b, 7, 20, 50), 20);
	assert_int_equal(gmfp_hist_percentile(b, 7, 31, 42.8), 4);	/* rank 3 */
	assert_int_equal(gmfp_hist_percentile(b, 7, 31, 42.9), 31);	/* rank 4 */
	/* 3 x 3 us: upper bound 4, capped at the max 3 */
	memset(b, 0, sizeof(b));
	b[1] = 3;
	assert_int_equal(gmfp_hist_percentile(b, 3, 3, 50), 3);
	/* out-of-contract pct is clamped, not an out-of-bounds walk */
	assert_int_equal(gmfp_hist_percentile(b, 3, 3, 0), 3);
	assert_int_equal(gmfp_hist_percentile(b, 3, 3, -5), 3);
	assert_int_equal(gmfp_hist_percentile(b, 3, 3, 1000), 3);
}

static void test_percentile_single(void **state)
{
	struct gmfp_hist h;
	uint64_t b[GMFP_HIST_BUCKETS], count, max;

	(void)state;
	memset(&h, 0, sizeof(h));
	gmfp_hist_add(&h, 5);
	gmfp_hist_read(&h, b, &count, &max);
	assert_int_equal(gmfp_hist_percentile(b, count, max, 50), 5);
	assert_int_equal(gmfp_hist_percentile(b, count, max, 99), 5);
	assert_int_equal(gmfp_hist_percentile(b, count, max, 100), 5);

	memset(&h, 0, sizeof(h));
	gmfp_hist_add(&h, 0);
	gmfp_hist_read(&h, b, &count, &max);
	assert_int_equal(gmfp_hist_percentile(b, count, max, 50), 0);

	memset(&h, 0, sizeof(h));
	gmfp_hist_add(&h, 1000);
	gmfp_hist_add(&h, 1024);
	gmfp_hist_read(&h, b, &count, &max);
	assert_int_equal(gmfp_hist_percentile(b, count, max, 50), 1024);
	assert_int_equal(gmfp_hist_percentile(b, count, max, 100), 1024);
}

static void test_percentile_last_bucket(void **state)
{
	struct gmfp_hist h;
	uint64_t b[GMFP_HIST_BUCKETS], count, max;

	(void)state;
	/*
	 * The last bucket is open ended: its percentile is the max, not the
	 * 2^32 a fixed bound would claim for an hour-long stall.
	 */
	memset(&h, 0, sizeof(h));
	gmfp_hist_add(&h, 1ull << 40);
	gmfp_hist_read(&h, b, &count, &max);
	assert_int_equal(b[31], 1);
	assert_true(gmfp_hist_percentile(b, count, max, 50) == 1ull << 40);
	gmfp_hist_add(&h, UINT64_MAX);
	gmfp_hist_read(&h, b, &count, &max);
	assert_true(gmfp_hist_percentile(b, count, max, 99) == UINT64_MAX);

	/* 2^31 exactly: bucket 31, max 2^31 */
	memset(&h, 0, sizeof(h));
	gmfp_hist_add(&h, 1ull << 31);
	gmfp_hist_read(&h, b, &count, &max);
	assert_true(gmfp_hist_percentile(b, count, max, 50) == 1ull << 31);
	/* bucket 30's bound 2^31 is a real bound */
	memset(&h, 0, sizeof(h));
	gmfp_hist_add(&h, 1ull << 30);
	gmfp_hist_add(&h, 1ull << 40);
	gmfp_hist_read(&h, b, &count, &max);
	assert_true(gmfp_hist_percentile(b, count, max, 50) == 1ull << 31);
}

static void test_percentile_count_mismatch(void **state)
{
	uint64_t b[GMFP_HIST_BUCKETS] = { 0 };

	(void)state;
	/* A count above what the buckets hold falls back to the max. */
	b[3] = 2;
	assert_int_equal(gmfp_hist_percentile(b, 10, 12, 100), 12);
	assert_int_equal(gmfp_hist_percentile(b, 10, 12, 10), 12);
}

#define NTHREADS 4
#define PER_THREAD 200000

struct adder {
	struct gmfp_hist *h;
	unsigned int id;
};

/* NTHREADS threads of @fn, each with its id, adding into @h at once. */
static void run_adders(struct gmfp_hist *h, void *(*fn)(void *))
{
	struct adder a[NTHREADS];
	pthread_t th[NTHREADS];
	unsigned int t;

	for (t = 0; t < NTHREADS; t++) {
		a[t].h = h;
		a[t].id = t;
		assert_int_equal(pthread_create(&th[t], NULL, fn, &a[t]), 0);
	}
	for (t = 0; t < NTHREADS; t++)
		assert_int_equal(pthread_join(th[t], NULL), 0);
}

/* Thread t adds i * (t + 1) for i < PER_THREAD: known buckets and max. */
static void *adder_main(void *p)
{
	struct adder *a = p;
	uint64_t i;

	for (i = 0; i < PER_THREAD; i++)
		gmfp_hist_add(a->h, i * (a->id + 1));
	return NULL;
}

static void test_concurrent(void **state)
{
	struct gmfp_hist h;
	uint64_t b[GMFP_HIST_BUCKETS], want[GMFP_HIST_BUCKETS] = { 0 };
	uint64_t count, max, i;
	unsigned int t;

	(void)state;
	memset(&h, 0, sizeof(h));
	run_adders(&h, adder_main);

	for (t = 0; t < NTHREADS; t++)
		for (i = 0; i < PER_THREAD; i++)
			want[gmfp_hist_bucket_of(i * (t + 1))]++;
	gmfp_hist_read(&h, b, &count, &max);
	assert_int_equal(count, (uint64_t)NTHREADS * PER_THREAD);
	assert_int_equal(atomic_load(&h.count), (uint64_t)NTHREADS * PER_THREAD);
	assert_int_equal(max, (uint64_t)(PER_THREAD - 1) * NTHREADS);
	for (t = 0; t < GMFP_HIST_BUCKETS; t++)
		assert_int_equal(b[t], want[t]);
}

/* Threads race for the max with interleaved values: the largest wins. */
static void *max_main(void *p)
{
	struct adder *a = p;
	uint64_t i;

	for (i = 0; i < PER_THREAD; i++)
		gmfp_hist_add(a->h, i * NTHREADS + a->id);
	return NULL;
}

static void test_concurrent_max(void **state)
{
	struct gmfp_hist h;
	uint64_t b[GMFP_HIST_BUCKETS], count, max;

	(void)state;
	memset(&h, 0, sizeof(h));
	run_adders(&h, max_main);
	gmfp_hist_read(&h, b, &count, &max);
	assert_int_equal(max, (uint64_t)PER_THREAD * NTHREADS - 1);
	assert_int_equal(count, (uint64_t)PER_THREAD * NTHREADS);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bucket_edges),
		cmocka_unit_test(test_add_read),
		cmocka_unit_test(test_max_only_grows),
		cmocka_unit_test(test_percentile_empty),
		cmocka_unit_test(test_percentile_three_groups),
		cmocka_unit_test(test_percentile_uniform),
		cmocka_unit_test(test_percentile_rank_exact),
		cmocka_unit_test(test_percentile_single),
		cmocka_unit_test(test_percentile_last_bucket),
		cmocka_unit_test(test_percentile_count_mismatch),
		cmocka_unit_test(test_concurrent),
		cmocka_unit_test(test_concurrent_max),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
