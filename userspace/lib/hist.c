// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Fault latency histogram: log2 buckets of microseconds, the way QEMU keeps
 * its postcopy latency distribution.  Adds come from every engine thread, so
 * each one is a handful of atomic read-modify-writes on separate words; there
 * is no lock and a snapshot is only approximately instantaneous.
 */
#include "internal.h"

unsigned int gmfp_hist_bucket_of(uint64_t us)
{
	unsigned int b;

	/* Bucket 0 takes [0, 2): 0 and 1 us are both "below resolution". */
	if (us < 2)
		return 0;
	b = 63u - (unsigned int)__builtin_clzll(us);
	return b < GMFP_HIST_BUCKETS ? b : GMFP_HIST_BUCKETS - 1;
}

void gmfp_hist_add(struct gmfp_hist *h, uint64_t us)
{
	uint64_t old = atomic_load_explicit(&h->max_us, memory_order_relaxed);

	/*
	 * max first, then the bucket with release: a reader that sees the
	 * bucket's increment (acquire) also sees a max at least this large,
	 * so a snapshot never caps a percentile below a sample it counts.
	 */
	while (old < us &&
	       !atomic_compare_exchange_weak_explicit(&h->max_us, &old, us,
						      memory_order_relaxed,
						      memory_order_relaxed))
		;
	atomic_fetch_add_explicit(&h->bucket[gmfp_hist_bucket_of(us)], 1,
				  memory_order_release);
	atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
}

void gmfp_hist_read(struct gmfp_hist *h, uint64_t bucket[GMFP_HIST_BUCKETS],
		    uint64_t *count, uint64_t *max_us)
{
	uint64_t sum = 0;
	unsigned int i;

	for (i = 0; i < GMFP_HIST_BUCKETS; i++) {
		bucket[i] = atomic_load_explicit(&h->bucket[i], memory_order_acquire);
		sum += bucket[i];
	}
	/*
	 * The count reported is the sum of the buckets copied, not h->count:
	 * with adds racing the copy the two can differ, and percentiles
	 * computed from the snapshot need the count that matches its buckets.
	 */
	*count = sum;
	*max_us = atomic_load_explicit(&h->max_us, memory_order_relaxed);
}

uint64_t gmfp_hist_percentile(const uint64_t bucket[GMFP_HIST_BUCKETS],
			      uint64_t count, uint64_t max_us, double pct)
{
	uint64_t rank, seen = 0;
	double r;
	unsigned int i;

	if (!count)
		return 0;
	/*
	 * The rank of the sample: ceil(pct/100 * count), clamped to
	 * [1, count].  pct * count first: for integral pct and any realistic
	 * count the product is exact and so is its quotient by 100 when it
	 * divides, which keeps p50 of 100 samples at rank 50, not 51.
	 */
	r = pct * (double)count / 100.0;
	if (!(r > 1.0))			/* also NaN and pct <= 0 */
		rank = 1;
	else if (r >= (double)count)
		rank = count;
	else {
		rank = (uint64_t)r;
		if ((double)rank < r)
			rank++;
	}
	for (i = 0; i < GMFP_HIST_BUCKETS; i++) {
		seen += bucket[i];
		if (seen >= rank) {
			/*
			 * Bucket 0's upper bound is 2 like bucket 1's lower
			 * one; the last bucket has none (it holds everything
			 * above), so there only max_us is an upper bound.
			 */
			uint64_t upper = i == GMFP_HIST_BUCKETS - 1 ?
					 UINT64_MAX : 2ull << i;

			return upper < max_us ? upper : max_us;
		}
	}
	/* @count larger than the buckets hold: the largest sample is all we know. */
	return max_us;
}
