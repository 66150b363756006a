/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* What the benchmark programs in bench/ share. */
#ifndef GMFP_BENCH_COMMON_H
#define GMFP_BENCH_COMMON_H

#include <stdio.h>
#include <string.h>
#include <unistd.h>

/*
 * µs timings need the TSC: the kernel switches to it only some seconds
 * after boot (with tsc=reliable), and until then uses jiffies (4 ms steps).
 * Wait for it (30 s at most) and say which clock the figures come from.
 */
static inline void wait_for_tsc(void)
{
	char cs[32] = "";
	int i;

	for (i = 0; i < 300; i++) {
		FILE *f = fopen("/sys/devices/system/clocksource/clocksource0/current_clocksource", "r");

		if (f) {
			if (!fgets(cs, sizeof(cs), f))
				cs[0] = 0;
			fclose(f);
		}
		if (!strcmp(cs, "tsc\n"))
			break;
		usleep(100000);
	}
	printf("# clocksource: %s", cs[0] ? cs : "unknown\n");
}

#endif /* GMFP_BENCH_COMMON_H */
