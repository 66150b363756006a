// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * libFuzzer target: gmfp_order_parse(), the parser of recorded access
 * order files (GMFP_BG_RECORDED), which come from disk, possibly from
 * another machine or a truncated write.
 *
 * The first byte picks a layout (0-3 regions of a few sizes); the rest is
 * the file, parsed from an exact-size heap copy without a NUL.  Checked:
 *  - the result is a count, -EINVAL with a line number within the text, or
 *    -ENOMEM; nothing is returned with an error;
 *  - every entry lies within the layout;
 *  - entries + dropped = the lines that hold an entry: a second parse with
 *    every region accepted (a layout of huge regions) returns
 *    entries + dropped entries, in the same order for those kept;
 *  - a parse of the same text with a CRLF for every LF gives the same.
 */
#include <errno.h>

#include "fuzz.h"
#include "internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint64_t small[4] = { 1, 7, 64, 100000 };
	uint64_t pages[4], all[4096];
	struct gmfp_order_entry *v = NULL, *w = NULL, *x = NULL;
	size_t dropped, dropped2, dropped3, bad, bad2, bad3, len, i, j, k;
	uint32_t nr, nr_all;
	ssize_t n, n2, n3;
	char *text, *crlf;
	uint8_t c0 = size ? data[0] : 0;

	nr = c0 % 4;
	for (i = 0; i < 4; i++)
		pages[i] = small[(c0 >> (2 + i)) % 4];
	len = size ? size - 1 : 0;
	text = (char *)fz_dup(data + (size ? 1 : 0), len);

	n = gmfp_order_parse(text, len, nr, pages, &v, &dropped, &bad);
	FUZZ_CHECK(n >= 0 || n == -EINVAL || n == -ENOMEM, "parse: %zd", n);
	if (n < 0) {
		FUZZ_CHECK(!v, "entries returned with an error");
		if (n == -EINVAL) {
			size_t lines = 1;

			for (i = 0; i < len; i++)
				lines += text[i] == '\n';
			FUZZ_CHECK(bad >= 1 && bad <= lines, "bad line %zu of %zu", bad, lines);
		}
		free(text);
		return 0;
	}
	FUZZ_CHECK(bad == 0, "bad line %zu without an error", bad);
	FUZZ_CHECK(n == 0 || v, "no entries for %zd", n);
	for (i = 0; i < (size_t)n; i++)
		FUZZ_CHECK(v[i].region < nr && v[i].pgoff < pages[v[i].region],
			   "entry %zu: region %u page %lu outside the layout", i, v[i].region,
			   (unsigned long)v[i].pgoff);

	/* every region number that fits a u32 index below 4096, every page */
	nr_all = (uint32_t)GMFP_ARRAY_SIZE(all);
	for (i = 0; i < nr_all; i++)
		all[i] = UINT64_MAX;
	n2 = gmfp_order_parse(text, len, nr_all, all, &w, &dropped2, &bad2);
	FUZZ_CHECK(n2 >= n && bad2 == 0, "parse with every region: %zd (%zd)", n2, n);
	/* what the small layout kept, in order, is a subsequence of the large */
	for (i = 0, j = 0; i < (size_t)n; i++, j++) {
		while (j < (size_t)n2 && (w[j].region != v[i].region || w[j].pgoff != v[i].pgoff))
			j++;
		FUZZ_CHECK(j < (size_t)n2, "entry %zu lost with a larger layout", i);
	}
	FUZZ_CHECK((size_t)n + dropped == (size_t)n2 + dropped2,
		   "%zd kept + %zu dropped, with every region %zd + %zu", n, dropped, n2, dropped2);

	/* CRLF line ends: the same entries */
	crlf = malloc(2 * len + 1);
	FUZZ_CHECK(crlf, "out of memory");
	for (i = 0, k = 0; i < len; i++) {
		if (text[i] == '\n' && !(i && text[i - 1] == '\r'))
			crlf[k++] = '\r';
		crlf[k++] = text[i];
	}
	n3 = gmfp_order_parse(crlf, k, nr, pages, &x, &dropped3, &bad3);
	FUZZ_CHECK(n3 == n && dropped3 == dropped, "CRLF: %zd/%zu, LF: %zd/%zu", n3, dropped3,
		   n, dropped);
	for (i = 0; i < (size_t)n; i++)
		FUZZ_CHECK(x[i].region == v[i].region && x[i].pgoff == v[i].pgoff, "CRLF entry %zu",
			   i);
	free(crlf);
	free(x);
	free(w);
	free(v);
	free(text);
	return 0;
}
