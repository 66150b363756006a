/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Helpers shared by the guest_memfd presence selftests.
 */
#ifndef SELFTEST_KVM_GUEST_MEMFD_PRESENCE_H
#define SELFTEST_KVM_GUEST_MEMFD_PRESENCE_H

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <linux/falloc.h>
#include <linux/kvm.h>

#include "kvm_util.h"
#include "processor.h"
#include "ucall_common.h"

/* KVM_SET_MEMORY_PRESENT with @op; *@done gets the progress. */
static inline int __gmem_set_present(int gmem, u64 offset, u64 size, u32 op,
				     const void *src, u64 *done)
{
	struct kvm_memory_present args = {
		.offset = offset,
		.size = size,
		.op = op,
		.src = (u64)src,
	};
	int r;

	r = ioctl(gmem, KVM_SET_MEMORY_PRESENT, &args);
	if (done)
		*done = args.done;
	return r;
}

/* KVM_SET_MEMORY_PRESENT with @op (not COPY) must do the whole range. */
static inline void gmem_set_present(int gmem, u64 offset, u64 size, u32 op)
{
	u64 done = 0;
	int r = __gmem_set_present(gmem, offset, size, op, NULL, &done);

	TEST_ASSERT(!r, "KVM_SET_MEMORY_PRESENT op %u [%#llx, +%#llx): r=%d errno=%d",
		    op, (unsigned long long)offset, (unsigned long long)size,
		    r, errno);
	TEST_ASSERT_EQ(done, size);
}

/* KVM_MEMORY_PRESENT_COPY of @size bytes from @src must do the whole range. */
static inline void gmem_copy_in(int gmem, u64 offset, const void *src, u64 size)
{
	u64 done = 0;
	int r = __gmem_set_present(gmem, offset, size, KVM_MEMORY_PRESENT_COPY,
				   src, &done);

	TEST_ASSERT(!r, "KVM_MEMORY_PRESENT_COPY [%#llx, +%#llx): r=%d errno=%d",
		    (unsigned long long)offset, (unsigned long long)size, r,
		    errno);
	TEST_ASSERT_EQ(done, size);
}

/* Copy in page @page with every 64-bit word set to @word. */
static inline void gmem_copy_in_word(int gmem, u64 page, u64 word)
{
	u64 *buf = aligned_alloc(PAGE_SIZE, PAGE_SIZE);
	int i;

	TEST_ASSERT(buf, "aligned_alloc");
	for (i = 0; i < PAGE_SIZE / 8; i++)
		buf[i] = word;
	gmem_copy_in(gmem, page * PAGE_SIZE, buf, PAGE_SIZE);
	free(buf);
}

static inline int gmem_notify_fd(int gmem, u32 flags)
{
	struct kvm_gmem_notify_fd args = { .flags = flags };

	return ioctl(gmem, KVM_GMEM_GET_NOTIFY_FD, &args);
}

/* Wait up to @ms for one record; false if none came. */
static inline bool gmem_read_event(int nfd, struct kvm_gmem_presence_event *ev,
				   int ms)
{
	struct pollfd pfd = { .fd = nfd, .events = POLLIN };
	ssize_t n;

	if (poll(&pfd, 1, ms) <= 0 || !(pfd.revents & POLLIN))
		return false;
	n = read(nfd, ev, sizeof(*ev));
	TEST_ASSERT(n == sizeof(*ev), "read notify fd: %zd errno %d", n, errno);
	TEST_ASSERT_EQ(ev->type, KVM_GMEM_EVENT_FAULT);
	TEST_ASSERT_EQ(ev->flags, 0);
	TEST_ASSERT(!ev->reserved[0] && !ev->reserved[1],
		    "record reserved fields not zero");
	return true;
}

static inline struct kvm_gmem_presence_stats gmem_presence_stats(int gmem)
{
	struct kvm_gmem_presence_stats st;

	TEST_ASSERT(!ioctl(gmem, KVM_GMEM_PRESENCE_STATS, &st),
		    "KVM_GMEM_PRESENCE_STATS");
	return st;
}

/* The page at @offset is present, per KVM_GET_MEMORY_PRESENT. */
static inline bool gmem_page_present(int gmem, u64 offset)
{
	u64 bitmap = 0;
	struct kvm_memory_present_bitmap bm = {
		.offset = offset,
		.size = PAGE_SIZE,
		.bitmap = (u64)&bitmap,
	};

	TEST_ASSERT(!ioctl(gmem, KVM_GET_MEMORY_PRESENT, &bm),
		    "KVM_GET_MEMORY_PRESENT");
	return bitmap & 1;
}

static inline void gmem_punch_hole(int gmem, u64 offset, u64 size)
{
	TEST_ASSERT(!fallocate(gmem, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE,
			       offset, size),
		    "punch hole [%#llx, +%#llx): errno %d",
		    (unsigned long long)offset, (unsigned long long)size, errno);
}

/*
 * A plain punch-hole over a present page with contents (of a guest_memfd
 * with GUEST_MEMFD_FLAG_MMAP) frees them but doesn't re-arm: the page stays
 * present, reads as zeroes, and raises no record.
 */
static inline void gmem_assert_punch_keeps_present(int gmem, u64 offset)
{
	struct kvm_gmem_presence_stats before = gmem_presence_stats(gmem), after;
	u64 *mem, i;

	mem = mmap(NULL, PAGE_SIZE, PROT_READ, MAP_SHARED, gmem, offset);
	TEST_ASSERT(mem != MAP_FAILED, "mmap guest_memfd: errno %d", errno);
	TEST_ASSERT(gmem_page_present(gmem, offset), "page not present");
	for (i = 0; i < PAGE_SIZE / 8 && !READ_ONCE(mem[i]); i++)
		;
	TEST_ASSERT(i < PAGE_SIZE / 8, "page has no contents to punch");

	gmem_punch_hole(gmem, offset, PAGE_SIZE);
	TEST_ASSERT(gmem_page_present(gmem, offset),
		    "plain punch-hole re-armed the page");
	for (i = 0; i < PAGE_SIZE / 8; i++)
		TEST_ASSERT(!READ_ONCE(mem[i]),
			    "punched page reads %#llx at word %llu",
			    (unsigned long long)mem[i], (unsigned long long)i);

	after = gmem_presence_stats(gmem);
	TEST_ASSERT_EQ(after.nr_present, before.nr_present);
	TEST_ASSERT_EQ(after.notifications, before.notifications);
	TEST_ASSERT_EQ(after.pages_cleared, before.pages_cleared);
	TEST_ASSERT_EQ(munmap(mem, PAGE_SIZE), 0);
}

/* KVM_RUN returned @r for a not-present page at @gpa (one page). */
static inline void gmem_presence_assert_exit(struct kvm_vcpu *vcpu, int r,
					     u64 gpa, u64 extra_flags)
{
	TEST_ASSERT(r == -1 && errno == EFAULT,
		    "KVM_RUN: expected EFAULT, got r=%d errno=%d", r, errno);
	TEST_ASSERT_EQ(vcpu->run->exit_reason, KVM_EXIT_MEMORY_FAULT);
	TEST_ASSERT_EQ(vcpu->run->memory_fault.flags,
		       KVM_MEMORY_EXIT_FLAG_NOT_PRESENT | extra_flags);
	TEST_ASSERT_EQ(vcpu->run->memory_fault.gpa, gpa);
	TEST_ASSERT_EQ(vcpu->run->memory_fault.size, PAGE_SIZE);
}

/*
 * pthread body: KVM_RUN @arg (a struct kvm_vcpu *) until it returns other
 * than EINTR; the thread's result is 0 or -errno.
 */
static inline void *gmem_presence_vcpu_thread(void *arg)
{
	struct kvm_vcpu *vcpu = arg;
	long r = _vcpu_run(vcpu);

	return (void *)(r ? (long)-errno : 0);
}

/* The guest reached GUEST_DONE(); report its assertion if it failed. */
static inline void gmem_presence_assert_done(struct kvm_vcpu *vcpu)
{
	struct ucall uc;

	switch (get_ucall(vcpu, &uc)) {
	case UCALL_DONE:
		return;
	case UCALL_ABORT:
		REPORT_GUEST_ASSERT(uc);
	default:
		TEST_FAIL("unexpected exit %s",
			  exit_reason_str(vcpu->run->exit_reason));
	}
}

/* CLOCK_MONOTONIC in nanoseconds. */
static inline u64 gmem_presence_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

/* Pass @fd over the Unix socket @sock (SCM_RIGHTS), with one byte. */
static inline void gmem_presence_send_fd(int sock, int fd)
{
	char cbuf[CMSG_SPACE(sizeof(int))] = { 0 };
	struct iovec iov = { .iov_base = "f", .iov_len = 1 };
	struct msghdr msg = {
		.msg_iov = &iov,
		.msg_iovlen = 1,
		.msg_control = cbuf,
		.msg_controllen = sizeof(cbuf),
	};
	struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);

	cmsg->cmsg_level = SOL_SOCKET;
	cmsg->cmsg_type = SCM_RIGHTS;
	cmsg->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cmsg), &fd, sizeof(int));
	TEST_ASSERT(sendmsg(sock, &msg, 0) == 1, "sendmsg: errno %d", errno);
}

/* Receive a file descriptor sent by gmem_presence_send_fd(); -1 if none. */
static inline int gmem_presence_recv_fd(int sock)
{
	char cbuf[CMSG_SPACE(sizeof(int))] = { 0 };
	char c;
	struct iovec iov = { .iov_base = &c, .iov_len = 1 };
	struct msghdr msg = {
		.msg_iov = &iov,
		.msg_iovlen = 1,
		.msg_control = cbuf,
		.msg_controllen = sizeof(cbuf),
	};
	struct cmsghdr *cmsg;
	int fd;

	if (recvmsg(sock, &msg, 0) != 1)
		return -1;
	cmsg = CMSG_FIRSTHDR(&msg);
	if (!cmsg || cmsg->cmsg_type != SCM_RIGHTS ||
	    cmsg->cmsg_len != CMSG_LEN(sizeof(int)))
		return -1;
	memcpy(&fd, CMSG_DATA(cmsg), sizeof(int));
	return fd;
}

/* One step of a xorshift64 generator: deterministic per seed, never 0. */
static inline u64 gmem_presence_rand(u64 *state)
{
	u64 x = *state ? *state : 0x9e3779b97f4a7c15ull;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*state = x;
	return x;
}

#endif /* SELFTEST_KVM_GUEST_MEMFD_PRESENCE_H */
