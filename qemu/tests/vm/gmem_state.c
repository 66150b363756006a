// SPDX-License-Identifier: GPL-2.0
/*
 * gmem_state PID: the presence state of the guest_memfd a process (a QEMU
 * with memory-backend-guest-memfd,presence=on) holds, for post-mortems of
 * qemu/postcopy: KVM_GMEM_PRESENCE_STATS and the pages KVM_GET_MEMORY_PRESENT
 * reports not present (guest_memfd byte offsets, as in QEMU's traces).
 * The fd is borrowed with pidfd_getfd(); nothing is changed.
 * Exit 0 if a guest_memfd was found and read, 1 if not.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "gmfp.h"
#include "kuapi.h"

#define SHOW_MISSING 16

static int find_gmem_fd(int pid)
{
	char dir[64], path[PATH_MAX], link[256];
	struct dirent *de;
	int fd = -1;
	DIR *d;

	snprintf(dir, sizeof(dir), "/proc/%d/fd", pid);
	d = opendir(dir);
	if (!d)
		return -1;
	while ((de = readdir(d))) {
		ssize_t n;

		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		n = readlink(path, link, sizeof(link) - 1);
		if (n < 0)
			continue;
		link[n] = 0;
		if (!strcmp(link, "anon_inode:[kvm-gmem]")) {
			fd = atoi(de->d_name);
			break;
		}
	}
	closedir(d);
	return fd;
}

int main(int argc, char **argv)
{
	struct gmfp_k_presence_stats st;
	struct gmfp_k_memory_present_bitmap bm;
	uint64_t *bits, i, missing = 0;
	int pid, tfd, pidfd, fd;
	struct stat sb;

	if (argc != 2) {
		fprintf(stderr, "usage: gmem_state PID\n");
		return 2;
	}
	pid = atoi(argv[1]);
	tfd = find_gmem_fd(pid);
	if (tfd < 0) {
		printf("gmem_state: pid %d holds no guest_memfd\n", pid);
		return 1;
	}
	pidfd = syscall(SYS_pidfd_open, pid, 0);
	if (pidfd < 0) {
		printf("gmem_state: pidfd_open(%d): %s\n", pid, strerror(errno));
		return 1;
	}
	fd = syscall(SYS_pidfd_getfd, pidfd, tfd, 0);
	if (fd < 0) {
		printf("gmem_state: pidfd_getfd(%d, %d): %s\n", pid, tfd,
		       strerror(errno));
		return 1;
	}
	memset(&st, 0, sizeof(st));
	if (ioctl(fd, GMFP_K_PRESENCE_STATS, &st) || fstat(fd, &sb)) {
		printf("gmem_state: KVM_GMEM_PRESENCE_STATS: %s\n",
		       strerror(errno));
		return 1;
	}
	printf("gmem_state: pid %d fd %d: %llu pages, %llu present, faults %llu, notifications %llu, waits %llu, wakeups %llu, set %llu, cleared %llu, queued %llu, wake misses %llu%s\n",
	       pid, tfd, (unsigned long long)st.nr_pages,
	       (unsigned long long)st.nr_present,
	       (unsigned long long)st.faults,
	       (unsigned long long)st.notifications,
	       (unsigned long long)st.waits, (unsigned long long)st.wakeups,
	       (unsigned long long)st.pages_set,
	       (unsigned long long)st.pages_cleared,
	       (unsigned long long)st.events_queued,
	       (unsigned long long)st.wake_misses,
	       st.flags & GMFP_K_FINISHED ? ", finished" : "");
	if (st.flags & GMFP_K_FINISHED)
		return 0;

	bits = calloc((st.nr_pages + 63) / 64, sizeof(*bits));
	if (!bits)
		return 1;
	memset(&bm, 0, sizeof(bm));
	bm.offset = 0;
	bm.size = sb.st_size;
	bm.bitmap = (uintptr_t)bits;
	if (ioctl(fd, GMFP_K_GET_MEMORY_PRESENT, &bm)) {
		printf("gmem_state: KVM_GET_MEMORY_PRESENT: %s\n",
		       strerror(errno));
		return 1;
	}
	printf("gmem_state: not present:");
	for (i = 0; i < st.nr_pages; i++) {
		if (bits[i / 64] & (1ULL << (i % 64)))
			continue;
		if (missing++ < SHOW_MISSING)
			printf(" 0x%llx", (unsigned long long)i * 4096);
	}
	printf("%s (%llu pages)\n", missing > SHOW_MISSING ? " ..." : "",
	       (unsigned long long)missing);
	return 0;
}
