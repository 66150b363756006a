// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Page lists to runs: the batched uAPI wrappers issue one ioctl per run of
 * consecutive page indices, so a list in any order becomes the fewest runs.
 */
#include <stdlib.h>

#include "internal.h"

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	/* Not x - y: the difference of two u64 does not fit an int. */
	return (x > y) - (x < y);
}

int gmfp_for_each_run(uint64_t *pgoffs, size_t n, uint64_t max_run,
		      int (*fn)(void *arg, uint64_t first, uint64_t npages),
		      void *arg)
{
	uint64_t first, npages;
	size_t i;
	int r;

	if (!n)
		return 0;
	qsort(pgoffs, n, sizeof(*pgoffs), cmp_u64);

	first = pgoffs[0];
	npages = 1;
	for (i = 1; i < n; i++) {
		uint64_t p = pgoffs[i];

		if (p == pgoffs[i - 1])
			continue;
		/*
		 * Sorted and distinct, so p > the previous index, which
		 * therefore is not UINT64_MAX: "previous + 1" cannot wrap, and
		 * first + npages == p is the same test without overflow.
		 */
		if (p - first == npages && (!max_run || npages < max_run)) {
			npages++;
			continue;
		}
		r = fn(arg, first, npages);
		if (r)
			return r;
		first = p;
		npages = 1;
	}
	return fn(arg, first, npages);
}
