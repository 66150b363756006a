// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * check_ram FILE: the page check of QEMU's migration-test (check_guests_ram)
 * on a dump of [1 MiB, 100 MiB) of its boot-sector guest, which increments
 * the first byte of every page in that range, in order, over and over.  With
 * the guest stopped every page's byte equals the previous page's, except for
 * one step of -1 (mod 256) where the incrementer was.  A dump of zeroes (the
 * guest never ran) fails too.  Exit 0 if consistent, 1 if not, 2 on error.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define PAGE 4096UL
#define LEN (0x6400000UL - 0x100000UL)

int main(int argc, char **argv)
{
	unsigned long off, bad = 0;
	int hit_edge = 0;
	uint8_t first, last;
	uint8_t *ram;
	FILE *f;

	if (argc != 2) {
		fprintf(stderr, "usage: check_ram FILE\n");
		return 2;
	}
	f = fopen(argv[1], "rb");
	if (!f) {
		perror(argv[1]);
		return 2;
	}
	ram = malloc(LEN);
	if (!ram || fread(ram, 1, LEN, f) != LEN) {
		fprintf(stderr, "%s: short read (want %lu bytes)\n", argv[1], LEN);
		return 2;
	}
	fclose(f);
	first = last = ram[0];
	for (off = PAGE; off < LEN; off += PAGE) {
		uint8_t b = ram[off];

		if (b == last)
			continue;
		if ((uint8_t)(b + 1) == last && !hit_edge) {
			hit_edge = 1;
			last = b;
		} else if (++bad <= 10) {
			fprintf(stderr, "inconsistent page at %#lx: first %#x last %#x this %#x\n",
				0x100000UL + off, first, last, b);
		}
	}
	free(ram);
	if (bad) {
		printf("check_ram: %lu of %lu pages inconsistent\n", bad, LEN / PAGE);
		return 1;
	}
	if (!first) {
		printf("check_ram: the guest never wrote its RAM\n");
		return 1;
	}
	printf("check_ram: %lu pages consistent (first byte %#x)\n", LEN / PAGE, first);
	return 0;
}
