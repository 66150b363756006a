// Print the host TSC rate in kHz (measured against CLOCK_MONOTONIC_RAW).
// Under QEMU TCG the guest's TSC runs at this rate; run-vm.sh passes it to
// the guest as tsc_early_khz= so that the guest need not calibrate against
// the emulated PIT, which fails when the host is busy.
#include <stdio.h>
#include <stdint.h>
#include <time.h>
#include <x86intrin.h>

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_RAW, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(void)
{
	struct timespec d = { 0, 100 * 1000 * 1000 };
	double best = 0;
	for (int i = 0; i < 3; i++) {
		double t0 = now();
		uint64_t c0 = __rdtsc();
		nanosleep(&d, NULL);
		uint64_t c1 = __rdtsc();
		double t1 = now();
		double khz = (c1 - c0) / (t1 - t0) / 1000;
		if (khz > best)
			best = khz;
	}
	if (best < 100000)	/* < 100 MHz: not a usable TSC */
		return 1;
	printf("%.0f\n", best);
	return 0;
}
