// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * libgmfp's uAPI layer against the real kernel: every wrapper, the batching
 * of page lists into one ioctl per run, the resume of a COPY interrupted by
 * signals, and the documented errors.
 */
#include <fcntl.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "vmtest.h"

static uint64_t *pattern_pages(uint64_t first, uint64_t n)
{
	uint64_t *b = aligned_alloc(PG, n * PG), p, j;

	if (!b)
		return NULL;
	for (p = 0; p < n; p++)
		for (j = 0; j < PG / 8; j++)
			b[p * PG / 8 + j] = vt_word(first + p, j);
	return b;
}

static void test_policies_and_create(void)
{
	struct vt_vm v;
	int kvm = open("/dev/kvm", O_RDWR), vm, fd, sup;

	CHECK(kvm >= 0, "/dev/kvm");
	sup = gmfp_vm_policies(kvm);
	CHECK(sup >= 0 && (sup & GMFP_POLICY_EXIT) && (sup & GMFP_POLICY_WAIT),
	      "policies %d", sup);
	vm = ioctl(kvm, KVM_CREATE_VM, 0);
	CHECK(vm >= 0, "vm");
	CHECK_EQ(gmfp_vm_set_policy(vm, GMFP_POLICY_WAIT, 0), 0);
	CHECK_EQ(gmfp_vm_set_policy(vm, GMFP_POLICY_EXIT | GMFP_POLICY_WAIT, 0), -EINVAL);
	CHECK_EQ(gmfp_vm_set_policy(vm, GMFP_POLICY_WAIT, GMFP_POLICY_EXIT), -EINVAL);
	if (sup & GMFP_POLICY_ASYNC)
		CHECK_EQ(gmfp_vm_set_policy(vm, GMFP_POLICY_ASYNC, GMFP_POLICY_WAIT), 0);
	CHECK_EQ(gmfp_gmem_create(vm, 4096, 1u << 7), -EINVAL);
	CHECK_EQ(gmfp_gmem_create(vm, 4095, GMFP_GMEM_SHARED), -EINVAL);
	fd = gmfp_gmem_create(vm, 64 * PG, GMFP_GMEM_SHARED);
	CHECK(fd >= 0, "create: %d", fd);
	CHECK_EQ(gmfp_gmem_size(fd), 64 * PG);
	CHECK_EQ(gmfp_gmem_page_present(fd, 0), 0);
	CHECK_EQ(gmfp_gmem_page_present(fd, 64), -EINVAL);
	close(fd);
	close(vm);
	close(kvm);
	/* a plain guest_memfd is not a presence one: ENOTTY */
	CHECK_EQ(vt_vm_create(&v, 16, false, GMFP_POLICY_WAIT), 0);
	{
		struct kvm_create_guest_memfd c = { .size = 16 * PG };
		struct gmfp_engine *e;
		struct gmfp_source *z;
		uint64_t w;
		int plain = ioctl(v.vm, KVM_CREATE_GUEST_MEMFD, &c);

		CHECK(plain >= 0, "plain guest_memfd");
		CHECK_EQ(gmfp_gmem_bitmap(plain, 0, PG, &w), -ENOTTY);
		CHECK_EQ(gmfp_notify_open(plain, 0), -ENOTTY);
		CHECK_EQ(gmfp_gmem_mark(plain, 0, PG), -ENOTTY);
		CHECK_EQ(gmfp_source_zero(&z), 0);
		CHECK_EQ(gmfp_engine_new(&e, z, NULL), 0);
		CHECK_EQ(gmfp_engine_add(e, plain, NULL), -ENOTTY);
		gmfp_engine_destroy(e);
		gmfp_source_destroy(z);
		close(plain);
	}
	vt_vm_destroy(&v);
	CHECK_EQ(gmfp_gmem_mark(-1, 0, PG), -EBADF);
	CHECK_EQ(gmfp_gmem_bitmap(-1, 0, PG, NULL), -EBADF);
}

static void test_copy_mark_discard_rearm(void)
{
	struct gmfp_gmem_stats st0, st1;
	struct vt_vm v;
	uint64_t *src = pattern_pages(0, 64), done = 0, bm, p;
	uint64_t list[] = { 40, 41, 42, 50, 51, 60 };
	struct gmfp_page pages[6];
	int i;

	CHECK(src, "alloc");
	CHECK_EQ(vt_vm_create(&v, 64, false, GMFP_POLICY_WAIT), 0);
	CHECK_EQ(gmfp_gmem_stats(v.gmem, &st0), 0);
	CHECK_EQ(st0.nr_pages, 64);
	CHECK_EQ(st0.nr_present, 0);
	/* copy 8 pages, then again: EEXIST, or skipped with the flag */
	CHECK_EQ(gmfp_gmem_copy(v.gmem, 0, src, 8 * PG, 0, &done), 0);
	CHECK_EQ(done, 8 * PG);
	CHECK_EQ(gmfp_gmem_copy(v.gmem, 0, src, 8 * PG, 0, &done), -EEXIST);
	CHECK_EQ(done, 0);
	CHECK_EQ(gmfp_gmem_copy(v.gmem, 4 * PG, src + 4 * PG / 8, 8 * PG,
				GMFP_COPY_SKIP_PRESENT, &done), 4);
	CHECK_EQ(done, 8 * PG);
	CHECK_EQ(gmfp_gmem_copy(v.gmem, 1, src, PG, 0, NULL), -EINVAL);
	CHECK_EQ(gmfp_gmem_copy(v.gmem, 0, NULL, PG, 0, NULL), -EINVAL);
	CHECK_EQ(gmfp_gmem_copy(v.gmem, 0, src, PG, 1u << 9, NULL), -EINVAL);
	for (p = 0; p < 12; p++)
		CHECK(vt_page_ok((char *)v.hva + p * PG, p), "page %lu", (unsigned long)p);
	/* batched copy: 6 pages in 3 runs of consecutive pages and buffers */
	for (i = 0; i < 6; i++) {
		pages[i].pgoff = list[5 - i];	/* unsorted on purpose */
		pages[i].data = (char *)src + list[5 - i] * PG;
	}
	CHECK_EQ(gmfp_gmem_copy_pages(v.gmem, pages, 6), 3);
	for (i = 0; i < 6; i++)
		CHECK(vt_page_ok((char *)v.hva + list[i] * PG, list[i]), "page %lu",
		      (unsigned long)list[i]);
	/* again: all present, skipped */
	CHECK_EQ(gmfp_gmem_copy_pages(v.gmem, pages, 6), 3);
	pages[1].pgoff = pages[0].pgoff;
	CHECK_EQ(gmfp_gmem_copy_pages(v.gmem, pages, 6), -EINVAL);	/* a page twice */
	CHECK_EQ(gmfp_gmem_stats(v.gmem, &st1), 0);
	CHECK_EQ(st1.nr_present, 12 + 6);
	/* mark: zero pages present */
	list[0] = 20; list[1] = 22; list[2] = 21;
	CHECK_EQ(gmfp_gmem_mark_pages(v.gmem, list, 3), 1);
	CHECK_EQ(*(volatile uint64_t *)((char *)v.hva + 21 * PG), 0);
	CHECK_EQ(gmfp_gmem_bitmap(v.gmem, 16 * PG, 8 * PG, &bm), 0);
	CHECK_EQ(bm, 0x70);
	/* discard: not present again, contents gone */
	CHECK_EQ(gmfp_gmem_discard_pages(v.gmem, list, 1), 1);
	CHECK_EQ(gmfp_gmem_page_present(v.gmem, 20), 0);
	CHECK_EQ(gmfp_gmem_discard(v.gmem, 0, PG), 0);
	CHECK_EQ(gmfp_gmem_mark(v.gmem, 0, PG), 0);
	CHECK_EQ(*(volatile uint64_t *)v.hva, 0);
	/* rearm keeps the contents */
	CHECK_EQ(gmfp_gmem_rearm(v.gmem, PG, PG), 0);
	CHECK_EQ(gmfp_gmem_page_present(v.gmem, 1), 0);
	CHECK_EQ(gmfp_gmem_mark(v.gmem, PG, PG), 0);
	CHECK(vt_page_ok((char *)v.hva + PG, 1), "rearmed page kept");
	CHECK_EQ(gmfp_gmem_rearm(v.gmem, PG, 3), -EINVAL);
	/* finish: EBUSY until everything is present */
	CHECK_EQ(gmfp_gmem_finish(v.gmem), -EBUSY);
	CHECK_EQ(gmfp_gmem_mark(v.gmem, 0, 64 * PG), 0);
	CHECK_EQ(gmfp_gmem_finish(v.gmem), 0);
	CHECK_EQ(gmfp_gmem_stats(v.gmem, &st1), 0);
	CHECK(st1.flags & GMFP_GMEM_FINISHED, "finished flag");
	CHECK_EQ(gmfp_gmem_rearm(v.gmem, 0, PG), -EINVAL);
	vt_vm_destroy(&v);
	free(src);
}

static void test_rearm_private(void)
{
	struct vt_vm v;
	int r = vt_vm_create(&v, 16, true, GMFP_POLICY_WAIT);

	if (r == -EOPNOTSUPP) {
		vt_vm_destroy(&v);
		SKIP_TEST("no SW-protected VMs");
	}
	CHECK_EQ(r, 0);
	CHECK_EQ(gmfp_gmem_mark(v.gmem, 0, PG), 0);
	CHECK_EQ(gmfp_gmem_rearm(v.gmem, 0, PG), -EPERM);
	vt_vm_destroy(&v);
}

static void test_notify(void)
{
	struct gmfp_event ev[8];
	struct vt_vm v;
	uint64_t *src = pattern_pages(5, 1);
	int nfd, st;
	pid_t pid;
	ssize_t n;

	CHECK_EQ(vt_vm_create(&v, 16, false, GMFP_POLICY_WAIT), 0);
	CHECK_EQ(gmfp_notify_open(v.gmem, 1u << 8), -EINVAL);
	nfd = gmfp_notify_open(v.gmem, GMFP_NOTIFY_NONBLOCK | GMFP_NOTIFY_CLOEXEC |
				       GMFP_NOTIFY_PID);
	CHECK(nfd >= 0, "notify_open %d", nfd);
	CHECK_EQ(gmfp_notify_read(nfd, ev, 8), -EAGAIN);
	CHECK_EQ(gmfp_notify_read(nfd, ev, 0), -EINVAL);
	pid = fork();
	if (!pid)
		_exit(vt_page_ok((char *)v.hva + 5 * PG, 5) ? 0 : 1);
	for (n = -EAGAIN; n == -EAGAIN; usleep(10000))
		n = gmfp_notify_read(nfd, ev, 8);
	CHECK_EQ(n, 1);
	CHECK_EQ(ev[0].type, GMFP_EVENT_FAULT);
	CHECK_EQ(ev[0].offset, 5 * PG);
	CHECK_EQ(ev[0].origin, GMFP_ORIGIN_MMAP);
	CHECK_EQ(ev[0].vcpu_id, GMFP_NO_VCPU);
	CHECK_EQ(ev[0].pid, pid);
	CHECK(ev[0].access & GMFP_ACCESS_READ, "access %#x", ev[0].access);
	CHECK_EQ(waitpid(pid, &st, WNOHANG), 0);	/* still waiting */
	CHECK_EQ(gmfp_gmem_copy(v.gmem, 5 * PG, src, PG, 0, NULL), 0);
	CHECK_EQ(waitpid(pid, &st, 0), pid);
	CHECK(WIFEXITED(st) && !WEXITSTATUS(st), "helper saw the right page");
	/* finishing ends the notification stream */
	CHECK_EQ(gmfp_gmem_mark(v.gmem, 0, 16 * PG), 0);
	CHECK_EQ(gmfp_gmem_finish(v.gmem), 0);
	CHECK_EQ(gmfp_notify_read(nfd, ev, 8), 0);
	close(nfd);
	CHECK_EQ(gmfp_notify_read(-1, ev, 8), -EBADF);
	vt_vm_destroy(&v);
	free(src);
}

static volatile sig_atomic_t ticks;

static void on_alarm(int sig)
{
	(void)sig;
	ticks++;
}

/*
 * A big COPY under a storm of signals: the raw ioctl does stop with EINTR
 * (so this test can fail), the library call completes the range anyway.
 */
static void test_copy_resumes_after_eintr(void)
{
	const uint64_t npages = 16384;	/* 64 MiB */
	struct itimerval it = { { 0, 200 }, { 0, 200 } };
	struct kvm_memory_present raw;
	struct sigaction sa;
	struct vt_vm v;
	uint64_t *src = aligned_alloc(PG, npages * PG);
	int eintr = 0, i, r;

	CHECK(src, "alloc");
	memset(src, 0x5a, npages * PG);
	CHECK_EQ(vt_vm_create(&v, 2 * npages, false, GMFP_POLICY_WAIT), 0);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_alarm;	/* no SA_RESTART */
	sigaction(SIGALRM, &sa, NULL);
	setitimer(ITIMER_REAL, &it, NULL);
	for (i = 0; i < 20 && !eintr; i++) {
		memset(&raw, 0, sizeof(raw));
		raw.offset = (uint64_t)npages * PG;
		raw.size = npages * PG;
		raw.op = KVM_MEMORY_PRESENT_COPY;
		raw.src = (uint64_t)(uintptr_t)src;
		r = ioctl(v.gmem, KVM_SET_MEMORY_PRESENT, &raw);
		if (r && errno == EINTR)
			eintr = 1;
		/* start over on fresh pages */
		gmfp_gmem_discard(v.gmem, npages * PG, npages * PG);
	}
	CHECK_EQ(gmfp_gmem_copy(v.gmem, 0, src, npages * PG, 0, NULL), 0);
	memset(&it, 0, sizeof(it));
	setitimer(ITIMER_REAL, &it, NULL);
	printf("#   raw ioctl interrupted: %s; %d signals\n", eintr ? "yes" : "no", (int)ticks);
	CHECK(eintr, "no EINTR seen: the signal storm is too slow to test the resume");
	CHECK_EQ(vt_count_present(v.gmem, 2 * npages), npages);
	CHECK_EQ(*(volatile uint64_t *)((char *)v.hva + (npages - 1) * PG), 0x5a5a5a5a5a5a5a5aull);
	vt_vm_destroy(&v);
	free(src);
}

int main(int argc, char **argv)
{
	static const struct vt_case cases[] = {
		{ "policies_and_create", test_policies_and_create },
		{ "copy_mark_discard_rearm_finish", test_copy_mark_discard_rearm },
		{ "rearm_private_is_eperm", test_rearm_private },
		{ "notify_records", test_notify },
		{ "copy_resumes_after_eintr", test_copy_resumes_after_eintr },
	};

	return vt_run(argc, argv, "uapi_vm_test", cases, sizeof(cases) / sizeof(cases[0]));
}
