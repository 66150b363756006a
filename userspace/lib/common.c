// SPDX-License-Identifier: LGPL-2.1-or-later
/* Version, options structs, bitmap search. */
#include <string.h>

#include "internal.h"

const char *gmfp_version(void)
{
	return "0.1.0";
}

int gmfp_opts_copy(void *dst, size_t dst_sz, const void *src)
{
	size_t src_sz, i;

	memset(dst, 0, dst_sz);
	if (!src) {
		*(size_t *)dst = dst_sz;
		return 0;
	}
	src_sz = *(const size_t *)src;
	if (src_sz < sizeof(size_t))
		return -EINVAL;
	/* A newer caller: what we do not know about must be left zero. */
	for (i = dst_sz; i < src_sz; i++)
		if (((const unsigned char *)src)[i])
			return -E2BIG;
	memcpy(dst, src, src_sz < dst_sz ? src_sz : dst_sz);
	*(size_t *)dst = dst_sz;
	return 0;
}

uint64_t gmfp_find_next_zero(const _Atomic uint64_t *map, uint64_t n, uint64_t from)
{
	while (from < n) {
		uint64_t w = ~atomic_load_explicit(&map[from / 64], memory_order_acquire);

		w &= ~0ull << (from % 64);
		if (w) {
			uint64_t i = (from & ~63ull) + (uint64_t)__builtin_ctzll(w);

			return i < n ? i : n;
		}
		from = (from & ~63ull) + 64;
	}
	return n;
}
