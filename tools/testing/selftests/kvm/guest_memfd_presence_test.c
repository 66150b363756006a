// SPDX-License-Identifier: GPL-2.0-only
/*
 * guest_memfd presence tracking: every access to a not-present page is held
 * at one gate, raises one record, and is released by KVM_SET_MEMORY_PRESENT.
 *
 * Each subtest runs in its own child with the harness timeout, so a hang is
 * a failure rather than a stuck run.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <linux/falloc.h>
#include <linux/kvm.h>
#include <linux/sizes.h>

#include "guest_memfd_presence.h"
#include "kvm_util.h"
#include "processor.h"
#include "test_util.h"
#include "kselftest_harness.h"

#define TEST_GPA	SZ_4G
#define TEST_SLOT	1
#define TEST_NPAGES	8
#define TEST_SIZE	(TEST_NPAGES * PAGE_SIZE)
#define TEST_PORT	0x80

#define PATTERN(i)	(0x5a5a000000000000ull | (i))

static u64 gmem_flags_shared = GUEST_MEMFD_FLAG_MMAP |
			       GUEST_MEMFD_FLAG_INIT_SHARED |
			       GUEST_MEMFD_FLAG_PRESENCE;

/* The errno of a failing KVM_SET_MEMORY_PRESENT, 0 if it succeeded. */
static int set_present_errno(int fd, u64 offset, u64 size, u32 op, void *src)
{
	errno = 0;
	return __gmem_set_present(fd, offset, size, op, src, NULL) ? errno : 0;
}

static void set_present(int fd, u64 offset, u64 size)
{
	gmem_set_present(fd, offset, size, KVM_MEMORY_PRESENT_MARK);
}

/* Copy in one page filled with PATTERN(page index). */
static void copy_in_page(int fd, u64 page)
{
	gmem_copy_in_word(fd, page, PATTERN(page));
}

/* Not present again, contents kept (shared memory only). */
static void rearm(int fd, u64 offset, u64 size)
{
	gmem_set_present(fd, offset, size, KVM_MEMORY_PRESENT_REARM);
}

/* Contents freed, not present again. */
static void discard(int fd, u64 offset, u64 size)
{
	gmem_set_present(fd, offset, size, KVM_MEMORY_PRESENT_DISCARD);
}

static void set_policy(struct kvm_vm *vm, u64 policy)
{
	vm_enable_cap(vm, KVM_CAP_GUEST_MEMFD_PRESENCE, policy);
}

/* A default VM with a gmem-only memslot backed by a presence guest_memfd. */
struct pvm {
	struct kvm_vm *vm;
	struct kvm_vcpu *vcpu;
	int gmem;
	void *mem;
};

static void pvm_create(struct pvm *t, void *guest_code, bool map_hva)
{
	t->vm = vm_create_with_one_vcpu(&t->vcpu, guest_code);
	t->gmem = vm_create_guest_memfd(t->vm, TEST_SIZE, gmem_flags_shared);
	t->mem = NULL;
	if (map_hva)
		t->mem = kvm_mmap(TEST_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED,
				  t->gmem);
	vm_set_user_memory_region2(t->vm, TEST_SLOT, KVM_MEM_GUEST_MEMFD,
				   TEST_GPA, TEST_SIZE, t->mem, t->gmem, 0);
	virt_map(t->vm, TEST_GPA, TEST_GPA, TEST_NPAGES);
	vcpu_args_set(t->vcpu, 2, TEST_GPA, TEST_NPAGES);
}

static void guest_read_pages(u64 gpa, u64 npages)
{
	u64 i;

	for (i = 0; i < npages; i++)
		GUEST_ASSERT_EQ(READ_ONCE(*(u64 *)(gpa + i * PAGE_SIZE)),
				PATTERN(i));
	GUEST_DONE();
}

TEST(capabilities)
{
	const u64 policies = KVM_GMEM_PRESENCE_EXIT | KVM_GMEM_PRESENCE_WAIT |
			     KVM_GMEM_PRESENCE_ASYNC;
	struct kvm_vm *vm = vm_create_barebones();
	struct kvm_gmem_presence_stats st;
	int fd;

	/* The supported policies, one bit each, on /dev/kvm and the VM. */
	ASSERT_EQ(kvm_check_cap(KVM_CAP_GUEST_MEMFD_PRESENCE), policies);
	ASSERT_EQ(vm_check_cap(vm, KVM_CAP_GUEST_MEMFD_PRESENCE), policies);
	ASSERT_TRUE(vm_check_cap(vm, KVM_CAP_GUEST_MEMFD_FLAGS) &
		    GUEST_MEMFD_FLAG_PRESENCE);

	/* With and without mmap; a new guest_memfd has nothing present. */
	fd = vm_create_guest_memfd(vm, TEST_SIZE, GUEST_MEMFD_FLAG_PRESENCE);
	st = gmem_presence_stats(fd);
	ASSERT_EQ(st.nr_present, 0);
	ASSERT_EQ(st.nr_pages, TEST_NPAGES);
	ASSERT_EQ(st.events_queued, 0);
	ASSERT_EQ(st.flags, 0);
	close(fd);
	fd = vm_create_guest_memfd(vm, TEST_SIZE, gmem_flags_shared);
	ASSERT_EQ(gmem_presence_stats(fd).nr_present, 0);
	close(fd);
	kvm_vm_free(vm);
}

TEST(invalid_inputs)
{
	const u32 ops[] = {
		KVM_MEMORY_PRESENT_MARK, KVM_MEMORY_PRESENT_COPY,
		KVM_MEMORY_PRESENT_DISCARD, KVM_MEMORY_PRESENT_REARM,
		KVM_MEMORY_PRESENT_FINISH,
	};
	const u32 bad_notify_flags[] = { BIT(1), BIT(7), BIT(31) };
	struct kvm_enable_cap cap = {
		.cap = KVM_CAP_GUEST_MEMFD_PRESENCE,
		.args = { KVM_GMEM_PRESENCE_WAIT, KVM_GMEM_PRESENCE_EXIT },
	};
	struct kvm_vm *vm = vm_create_barebones();
	struct kvm_memory_present_bitmap bm = { 0 };
	struct kvm_gmem_notify_fd nf = { 0 };
	u64 bitmap[2], done;
	static char buf[2 * PAGE_SIZE];
	int fd, plain, priv, efd, nfd, i;

	fd = vm_create_guest_memfd(vm, TEST_SIZE, gmem_flags_shared);

	/* Unaligned, empty, overflowing, beyond the end. */
	ASSERT_EQ(set_present_errno(fd, 1, PAGE_SIZE, KVM_MEMORY_PRESENT_MARK,
				    NULL), EINVAL);
	ASSERT_EQ(set_present_errno(fd, 0, PAGE_SIZE + 1,
				    KVM_MEMORY_PRESENT_MARK, NULL), EINVAL);
	ASSERT_EQ(set_present_errno(fd, 0, 0, KVM_MEMORY_PRESENT_MARK, NULL),
		  EINVAL);
	ASSERT_EQ(set_present_errno(fd, PAGE_SIZE, -PAGE_SIZE,
				    KVM_MEMORY_PRESENT_MARK, NULL), EINVAL);
	ASSERT_EQ(set_present_errno(fd, 0, TEST_SIZE + PAGE_SIZE,
				    KVM_MEMORY_PRESENT_MARK, NULL), EINVAL);
	ASSERT_EQ(set_present_errno(fd, TEST_SIZE, PAGE_SIZE,
				    KVM_MEMORY_PRESENT_MARK, NULL), EINVAL);

	/* No op, unknown ops, a source without COPY, a bad source. */
	ASSERT_EQ(set_present_errno(fd, 0, PAGE_SIZE, 0, NULL), EINVAL);
	ASSERT_EQ(set_present_errno(fd, 0, PAGE_SIZE,
				    KVM_MEMORY_PRESENT_FINISH + 1, NULL), EINVAL);
	ASSERT_EQ(set_present_errno(fd, 0, PAGE_SIZE, ~0u, NULL), EINVAL);
	for (i = 0; i < ARRAY_SIZE(ops); i++) {
		if (ops[i] == KVM_MEMORY_PRESENT_COPY)
			continue;
		ASSERT_EQ(set_present_errno(fd, 0, TEST_SIZE, ops[i], buf),
			  EINVAL);
	}
	ASSERT_EQ(set_present_errno(fd, 0, PAGE_SIZE, KVM_MEMORY_PRESENT_COPY,
				    (void *)8), EFAULT);
	ASSERT_EQ(gmem_presence_stats(fd).nr_present, 0);

	/* Non-zero flags or reserved fields, whatever the op. */
	for (i = 0; i < ARRAY_SIZE(ops); i++) {
		struct kvm_memory_present a = {
			.size = PAGE_SIZE, .op = ops[i], .flags = 1,
		};

		ASSERT_EQ(ioctl(fd, KVM_SET_MEMORY_PRESENT, &a), -1);
		ASSERT_EQ(errno, EINVAL);
		a.flags = 0;
		a.reserved[2] = 1;
		ASSERT_EQ(ioctl(fd, KVM_SET_MEMORY_PRESENT, &a), -1);
		ASSERT_EQ(errno, EINVAL);
	}
	ASSERT_EQ(gmem_presence_stats(fd).nr_present, 0);

	/* FINISH covers the whole file, once everything is present. */
	ASSERT_EQ(set_present_errno(fd, 0, PAGE_SIZE, KVM_MEMORY_PRESENT_FINISH,
				    NULL), EINVAL);
	ASSERT_EQ(set_present_errno(fd, PAGE_SIZE, TEST_SIZE - PAGE_SIZE,
				    KVM_MEMORY_PRESENT_FINISH, NULL), EINVAL);
	done = ~0ull;
	ASSERT_EQ(__gmem_set_present(fd, 0, TEST_SIZE,
				     KVM_MEMORY_PRESENT_FINISH, NULL, &done), -1);
	ASSERT_EQ(errno, EBUSY);
	ASSERT_EQ(done, 0);
	ASSERT_EQ(gmem_presence_stats(fd).flags, 0);

	/* COPY onto a present page: EEXIST, and progress says where. */
	set_present(fd, PAGE_SIZE, PAGE_SIZE);
	done = ~0ull;
	ASSERT_EQ(__gmem_set_present(fd, 0, 2 * PAGE_SIZE,
				     KVM_MEMORY_PRESENT_COPY, buf, &done), -1);
	ASSERT_EQ(errno, EEXIST);
	ASSERT_EQ(done, PAGE_SIZE);

	bm.offset = 0;
	bm.size = TEST_SIZE;
	bm.bitmap = (u64)bitmap;
	bm.flags = 1;
	ASSERT_EQ(ioctl(fd, KVM_GET_MEMORY_PRESENT, &bm), -1);
	ASSERT_EQ(errno, EINVAL);
	bm.flags = 0;
	bm.size = TEST_SIZE + PAGE_SIZE;
	ASSERT_EQ(ioctl(fd, KVM_GET_MEMORY_PRESENT, &bm), -1);
	ASSERT_EQ(errno, EINVAL);
	bm.size = TEST_SIZE;
	bm.bitmap = 8;
	ASSERT_EQ(ioctl(fd, KVM_GET_MEMORY_PRESENT, &bm), -1);
	ASSERT_EQ(errno, EFAULT);

	/* Notification fd flags: O_NONBLOCK, O_CLOEXEC, KVM_GMEM_NOTIFY_PID. */
	for (i = 0; i < ARRAY_SIZE(bad_notify_flags); i++) {
		nf.flags = bad_notify_flags[i];
		ASSERT_EQ(ioctl(fd, KVM_GMEM_GET_NOTIFY_FD, &nf), -1);
		ASSERT_EQ(errno, EINVAL);
	}
	nf.flags = 0;
	nf.pad = 1;
	ASSERT_EQ(ioctl(fd, KVM_GMEM_GET_NOTIFY_FD, &nf), -1);
	ASSERT_EQ(errno, EINVAL);
	nf.pad = 0;
	nf.reserved[0] = 1;
	ASSERT_EQ(ioctl(fd, KVM_GMEM_GET_NOTIFY_FD, &nf), -1);
	ASSERT_EQ(errno, EINVAL);
	nfd = gmem_notify_fd(fd, O_NONBLOCK | O_CLOEXEC | KVM_GMEM_NOTIFY_PID);
	ASSERT_GE(nfd, 0);
	ASSERT_EQ(fcntl(nfd, F_GETFL) & O_NONBLOCK, O_NONBLOCK);
	ASSERT_EQ(fcntl(nfd, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
	close(nfd);

	/* Short reads of the notification fd. */
	nfd = gmem_notify_fd(fd, O_NONBLOCK);
	ASSERT_GE(nfd, 0);
	ASSERT_EQ(fcntl(nfd, F_GETFD) & FD_CLOEXEC, 0);
	ASSERT_EQ(read(nfd, buf, 8), -1);
	ASSERT_EQ(errno, EINVAL);
	ASSERT_EQ(read(nfd, buf, sizeof(struct kvm_gmem_presence_event) - 1), -1);
	ASSERT_EQ(errno, EINVAL);
	ASSERT_EQ(read(nfd, buf, sizeof(struct kvm_gmem_presence_event)), -1);
	ASSERT_EQ(errno, EAGAIN);
	close(nfd);

	/* Private memory can't keep its contents across a re-arm. */
	priv = vm_create_guest_memfd(vm, TEST_SIZE, GUEST_MEMFD_FLAG_PRESENCE);
	ASSERT_EQ(set_present_errno(priv, 0, PAGE_SIZE,
				    KVM_MEMORY_PRESENT_REARM, NULL), EPERM);
	ASSERT_EQ(set_present_errno(priv, 0, PAGE_SIZE,
				    KVM_MEMORY_PRESENT_DISCARD, NULL), 0);

	/* Once tracking has finished, nothing can be made not present. */
	set_present(priv, 0, TEST_SIZE);
	gmem_set_present(priv, 0, TEST_SIZE, KVM_MEMORY_PRESENT_FINISH);
	ASSERT_EQ(gmem_presence_stats(priv).flags, KVM_GMEM_PRESENCE_FINISHED);
	ASSERT_EQ(set_present_errno(priv, 0, PAGE_SIZE,
				    KVM_MEMORY_PRESENT_DISCARD, NULL), EINVAL);
	set_present(fd, 0, TEST_SIZE);
	gmem_set_present(fd, 0, TEST_SIZE, KVM_MEMORY_PRESENT_FINISH);
	ASSERT_EQ(set_present_errno(fd, 0, PAGE_SIZE,
				    KVM_MEMORY_PRESENT_REARM, NULL), EINVAL);
	ASSERT_EQ(set_present_errno(fd, 0, PAGE_SIZE,
				    KVM_MEMORY_PRESENT_DISCARD, NULL), EINVAL);
	ASSERT_EQ(gmem_presence_stats(fd).nr_present, TEST_NPAGES);

	/* Wrong kinds of fd: no presence, not a guest_memfd, closed. */
	plain = vm_create_guest_memfd(vm, TEST_SIZE, 0);
	ASSERT_EQ(set_present_errno(plain, 0, PAGE_SIZE,
				    KVM_MEMORY_PRESENT_MARK, NULL), ENOTTY);
	efd = eventfd(0, 0);
	ASSERT_EQ(set_present_errno(efd, 0, PAGE_SIZE,
				    KVM_MEMORY_PRESENT_MARK, NULL), ENOTTY);
	close(efd);
	ASSERT_EQ(set_present_errno(efd, 0, PAGE_SIZE,
				    KVM_MEMORY_PRESENT_MARK, NULL), EBADF);

	/* Policies: exactly one bit; a fallback (EXIT or WAIT) only for ASYNC. */
	ASSERT_EQ(__vm_enable_cap(vm, KVM_CAP_GUEST_MEMFD_PRESENCE, 0), -1);
	ASSERT_EQ(errno, EINVAL);
	ASSERT_EQ(__vm_enable_cap(vm, KVM_CAP_GUEST_MEMFD_PRESENCE, 7), -1);
	ASSERT_EQ(errno, EINVAL);
	ASSERT_EQ(__vm_enable_cap(vm, KVM_CAP_GUEST_MEMFD_PRESENCE,
				  KVM_GMEM_PRESENCE_EXIT |
				  KVM_GMEM_PRESENCE_WAIT), -1);
	ASSERT_EQ(errno, EINVAL);
	ASSERT_EQ(__vm_enable_cap(vm, KVM_CAP_GUEST_MEMFD_PRESENCE, BIT(3)), -1);
	ASSERT_EQ(errno, EINVAL);
	/* WAIT with a fallback. */
	ASSERT_EQ(__vm_ioctl(vm, KVM_ENABLE_CAP, &cap), -1);
	ASSERT_EQ(errno, EINVAL);
	/* ASYNC takes EXIT or WAIT as its fallback, nothing else. */
	cap.args[0] = KVM_GMEM_PRESENCE_ASYNC;
	cap.args[1] = KVM_GMEM_PRESENCE_ASYNC;
	ASSERT_EQ(__vm_ioctl(vm, KVM_ENABLE_CAP, &cap), -1);
	ASSERT_EQ(errno, EINVAL);
	cap.args[1] = 0;
	ASSERT_EQ(__vm_ioctl(vm, KVM_ENABLE_CAP, &cap), -1);
	ASSERT_EQ(errno, EINVAL);
	cap.args[1] = KVM_GMEM_PRESENCE_EXIT | KVM_GMEM_PRESENCE_WAIT;
	ASSERT_EQ(__vm_ioctl(vm, KVM_ENABLE_CAP, &cap), -1);
	ASSERT_EQ(errno, EINVAL);
	cap.args[1] = KVM_GMEM_PRESENCE_WAIT;
	cap.args[2] = 1;
	ASSERT_EQ(__vm_ioctl(vm, KVM_ENABLE_CAP, &cap), -1);
	ASSERT_EQ(errno, EINVAL);
	cap.args[2] = 0;
	cap.args[3] = 1;
	ASSERT_EQ(__vm_ioctl(vm, KVM_ENABLE_CAP, &cap), -1);
	ASSERT_EQ(errno, EINVAL);
	cap.args[3] = 0;
	cap.flags = 1;
	ASSERT_EQ(__vm_ioctl(vm, KVM_ENABLE_CAP, &cap), -1);
	ASSERT_EQ(errno, EINVAL);
	cap.flags = 0;
	ASSERT_EQ(__vm_ioctl(vm, KVM_ENABLE_CAP, &cap), 0);
	cap.args[1] = KVM_GMEM_PRESENCE_EXIT;
	ASSERT_EQ(__vm_ioctl(vm, KVM_ENABLE_CAP, &cap), 0);
	ASSERT_EQ(__vm_enable_cap(vm, KVM_CAP_GUEST_MEMFD_PRESENCE,
				  KVM_GMEM_PRESENCE_WAIT), 0);
	ASSERT_EQ(__vm_enable_cap(vm, KVM_CAP_GUEST_MEMFD_PRESENCE,
				  KVM_GMEM_PRESENCE_EXIT), 0);

	close(plain);
	close(priv);
	close(fd);
	kvm_vm_free(vm);
}

/*
 * ioctls are matched by their full number, which carries the structure's
 * size: a structure that grows gets a new number, so any other size is an
 * unknown ioctl, and nothing is done.
 */
TEST(struct_sizes)
{
	struct kvm_vm *vm = vm_create_barebones();
	struct {
		struct kvm_memory_present args;
		u64 tail;
	} big = { .args = { .size = PAGE_SIZE, .op = KVM_MEMORY_PRESENT_MARK } };
	struct {
		struct kvm_gmem_presence_stats st;
		u64 tail;
	} bigst;
	const unsigned long nrs[] = { 0xd6, 0xd7, 0xd8, 0xd9 };
	const unsigned long set_big = _IOC(_IOC_READ | _IOC_WRITE, KVMIO, 0xd6,
					   sizeof(big));
	const unsigned long stats_big = _IOC(_IOC_READ, KVMIO, 0xd9,
					     sizeof(bigst));
	int gmem = vm_create_guest_memfd(vm, TEST_SIZE, gmem_flags_shared);
	struct kvm_memory_present args = {
		.size = PAGE_SIZE,
		.op = KVM_MEMORY_PRESENT_MARK,
	};
	u64 small[1] = { 0 };
	int i;

	/* The ABI. */
	ASSERT_EQ(sizeof(struct kvm_memory_present), 64);
	ASSERT_EQ(sizeof(struct kvm_memory_present_bitmap), 64);
	ASSERT_EQ(sizeof(struct kvm_gmem_notify_fd), 32);
	ASSERT_EQ(sizeof(struct kvm_gmem_presence_event), 48);
	ASSERT_EQ(sizeof(struct kvm_gmem_presence_stats), 128);
	ASSERT_EQ(_IOC_SIZE(KVM_SET_MEMORY_PRESENT),
		  sizeof(struct kvm_memory_present));
	ASSERT_EQ(_IOC_SIZE(KVM_GET_MEMORY_PRESENT),
		  sizeof(struct kvm_memory_present_bitmap));
	ASSERT_EQ(_IOC_SIZE(KVM_GMEM_GET_NOTIFY_FD),
		  sizeof(struct kvm_gmem_notify_fd));
	ASSERT_EQ(_IOC_SIZE(KVM_GMEM_PRESENCE_STATS),
		  sizeof(struct kvm_gmem_presence_stats));

	/* Shorter or longer than the structure, any direction: ENOTTY. */
	for (i = 0; i < ARRAY_SIZE(nrs); i++) {
		errno = 0;
		ASSERT_EQ(ioctl(gmem, _IOC(_IOC_READ | _IOC_WRITE, KVMIO,
					   nrs[i], sizeof(small)), small), -1);
		ASSERT_EQ(errno, ENOTTY);
		errno = 0;
		ASSERT_EQ(ioctl(gmem, _IOC(_IOC_READ, KVMIO, nrs[i],
					   sizeof(small)), small), -1);
		ASSERT_EQ(errno, ENOTTY);
		errno = 0;
		ASSERT_EQ(ioctl(gmem, _IOC(_IOC_WRITE, KVMIO, nrs[i],
					   sizeof(big)), &big), -1);
		ASSERT_EQ(errno, ENOTTY);
	}

	/* Longer, even with a zero tail: ENOTTY, and nothing marked. */
	big.tail = 0;
	errno = 0;
	ASSERT_EQ(ioctl(gmem, set_big, &big), -1);
	ASSERT_EQ(errno, ENOTTY);
	ASSERT_EQ(gmem_presence_stats(gmem).nr_present, 0);

	/* The right size but the wrong direction is another ioctl too. */
	errno = 0;
	ASSERT_EQ(ioctl(gmem, _IOW(KVMIO, 0xd6, struct kvm_memory_present),
			&args), -1);
	ASSERT_EQ(errno, ENOTTY);
	ASSERT_EQ(gmem_presence_stats(gmem).nr_present, 0);

	/* A longer output structure is not written to. */
	memset(&bigst, 0xff, sizeof(bigst));
	errno = 0;
	ASSERT_EQ(ioctl(gmem, stats_big, &bigst), -1);
	ASSERT_EQ(errno, ENOTTY);
	ASSERT_EQ(bigst.st.nr_pages, ~0ull);
	ASSERT_EQ(bigst.tail, ~0ull);

	/* An unknown ioctl. */
	errno = 0;
	ASSERT_EQ(ioctl(gmem, _IOWR(KVMIO, 0xda, struct kvm_memory_present),
			&args), -1);
	ASSERT_EQ(errno, ENOTTY);

	/* The exact numbers work. */
	ASSERT_EQ(ioctl(gmem, KVM_SET_MEMORY_PRESENT, &args), 0);
	ASSERT_EQ(args.done, PAGE_SIZE);
	ASSERT_EQ(gmem_presence_stats(gmem).nr_present, 1);
	ASSERT_EQ(gmem_presence_stats(gmem).nr_pages, TEST_NPAGES);

	close(gmem);
	kvm_vm_free(vm);
}

TEST(bitmap_and_rearm)
{
	struct kvm_vm *vm = vm_create_barebones();
	struct kvm_memory_present_bitmap bm = { 0 };
	/*
	 * A multi-TiB guest_memfd costs three bits per page, nothing per
	 * fault.  Shared, so that its pages can be re-armed.
	 */
	const u64 big = 2ull << 40;
	u64 bitmap[2] = { 0 };
	u64 *mem;
	int fd;

	fd = vm_create_guest_memfd(vm, big, gmem_flags_shared);
	set_present(fd, 0, 3 * PAGE_SIZE);
	set_present(fd, 70 * PAGE_SIZE, PAGE_SIZE);
	set_present(fd, big - PAGE_SIZE, PAGE_SIZE);
	/* Marking present twice is harmless. */
	set_present(fd, 0, PAGE_SIZE);

	bm.size = 128 * PAGE_SIZE;
	bm.bitmap = (u64)bitmap;
	ASSERT_EQ(ioctl(fd, KVM_GET_MEMORY_PRESENT, &bm), 0);
	ASSERT_EQ(bitmap[0], 0x7);
	ASSERT_EQ(bitmap[1], 1ull << 6);

	/* An unaligned start shifts the window. */
	bm.offset = PAGE_SIZE;
	ASSERT_EQ(ioctl(fd, KVM_GET_MEMORY_PRESENT, &bm), 0);
	ASSERT_EQ(bitmap[0], 0x3);
	ASSERT_EQ(bitmap[1], 1ull << 5);

	bm.offset = big - 64 * PAGE_SIZE;
	bm.size = 64 * PAGE_SIZE;
	ASSERT_EQ(ioctl(fd, KVM_GET_MEMORY_PRESENT, &bm), 0);
	ASSERT_EQ(bitmap[0], 1ull << 63);

	ASSERT_EQ(gmem_presence_stats(fd).nr_present, 5);
	ASSERT_EQ(gmem_presence_stats(fd).nr_pages, big / PAGE_SIZE);

	rearm(fd, PAGE_SIZE, PAGE_SIZE);
	/* Re-arming what isn't present is allowed too. */
	rearm(fd, 5 * PAGE_SIZE, 2 * PAGE_SIZE);
	bm.offset = 0;
	bm.size = 64 * PAGE_SIZE;
	ASSERT_EQ(ioctl(fd, KVM_GET_MEMORY_PRESENT, &bm), 0);
	ASSERT_EQ(bitmap[0], 0x5);

	/* Discarding frees the contents: present again, the page is zero. */
	mem = kvm_mmap(3 * PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd);
	WRITE_ONCE(mem[0], PATTERN(0));
	WRITE_ONCE(mem[2 * PAGE_SIZE / 8], PATTERN(2));
	discard(fd, 2 * PAGE_SIZE, PAGE_SIZE);
	ASSERT_FALSE(gmem_page_present(fd, 2 * PAGE_SIZE));
	set_present(fd, 2 * PAGE_SIZE, PAGE_SIZE);
	ASSERT_EQ(READ_ONCE(mem[2 * PAGE_SIZE / 8]), 0);
	kvm_munmap(mem, 3 * PAGE_SIZE);

	/* A plain punch-hole frees the contents but doesn't re-arm. */
	gmem_assert_punch_keeps_present(fd, 0);
	ASSERT_EQ(ioctl(fd, KVM_GET_MEMORY_PRESENT, &bm), 0);
	ASSERT_EQ(bitmap[0], 0x5);

	/*
	 * Discarding re-arms, within the file; a plain punch-hole may reach
	 * past the end of the file, and re-arms nothing.
	 */
	ASSERT_EQ(set_present_errno(fd, big - PAGE_SIZE, 64 * PAGE_SIZE,
				    KVM_MEMORY_PRESENT_DISCARD, NULL), EINVAL);
	discard(fd, big - PAGE_SIZE, PAGE_SIZE);
	ASSERT_EQ(gmem_presence_stats(fd).nr_present, 3);
	ASSERT_EQ(fallocate(fd, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE,
			    70 * PAGE_SIZE, PAGE_SIZE), 0);
	ASSERT_EQ(fallocate(fd, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE,
			    big - 2 * PAGE_SIZE, 64 * PAGE_SIZE), 0);
	ASSERT_EQ(fallocate(fd, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE,
			    big, 1ull << 40), 0);
	ASSERT_EQ(gmem_presence_stats(fd).nr_present, 3);
	ASSERT_TRUE(gmem_page_present(fd, 70 * PAGE_SIZE));
	ASSERT_FALSE(gmem_page_present(fd, big - PAGE_SIZE));

	close(fd);
	kvm_vm_free(vm);
}

static void count_signal(int signum)
{
}

/* A large range is interrupted by signals and resumed from .done. */
TEST(large_range_progress)
{
	struct itimerval it = {
		.it_interval = { .tv_usec = 2000 },
		.it_value = { .tv_usec = 2000 },
	};
	struct kvm_vm *vm = vm_create_barebones();
	const u64 size = 4ull << 30;
	u64 offset = 0, done;
	int fd, r, interrupted = 0;

	fd = vm_create_guest_memfd(vm, size, GUEST_MEMFD_FLAG_PRESENCE);
	signal(SIGALRM, count_signal);
	setitimer(ITIMER_REAL, &it, NULL);
	while (offset < size) {
		r = __gmem_set_present(fd, offset, size - offset,
				       KVM_MEMORY_PRESENT_MARK, NULL, &done);
		if (r) {
			ASSERT_EQ(errno, EINTR);
			ASSERT_LT(done, size - offset);
			ASSERT_EQ(done % PAGE_SIZE, 0);
			interrupted++;
		} else {
			ASSERT_EQ(done, size - offset);
		}
		offset += done;
	}
	it = (struct itimerval){ 0 };
	setitimer(ITIMER_REAL, &it, NULL);

	TH_LOG("%d interruptions while marking %llu pages", interrupted,
	       size / PAGE_SIZE);
	ASSERT_GT(interrupted, 0);
	ASSERT_EQ(gmem_presence_stats(fd).nr_present, size / PAGE_SIZE);
	close(fd);
	kvm_vm_free(vm);
}

/* EXIT policy: each page exits once per access, and notifies once. */
TEST(exit_policy)
{
	struct kvm_gmem_presence_event ev;
	struct pvm t;
	int nfd, r;
	u64 i;

	pvm_create(&t, guest_read_pages, false);
	nfd = gmem_notify_fd(t.gmem, O_NONBLOCK | KVM_GMEM_NOTIFY_PID);
	ASSERT_GE(nfd, 0);

	for (i = 0; i < TEST_NPAGES; i++) {
		r = _vcpu_run(t.vcpu);
		gmem_presence_assert_exit(t.vcpu, r, TEST_GPA + i * PAGE_SIZE, 0);

		ASSERT_EQ(gmem_presence_stats(t.gmem).events_queued, 1);
		ASSERT_TRUE(gmem_read_event(nfd, &ev, 0));
		ASSERT_EQ(gmem_presence_stats(t.gmem).events_queued, 0);
		ASSERT_EQ(ev.offset, i * PAGE_SIZE);
		ASSERT_EQ(ev.origin, KVM_GMEM_ORIGIN_VCPU);
		ASSERT_EQ(ev.vcpu_id, 0);
		ASSERT_EQ(ev.access, KVM_GMEM_ACCESS_READ);
		ASSERT_EQ(ev.pid, getpid());

		/* Running again without populating: same exit, no record. */
		r = _vcpu_run(t.vcpu);
		gmem_presence_assert_exit(t.vcpu, r, TEST_GPA + i * PAGE_SIZE, 0);
		ASSERT_FALSE(gmem_read_event(nfd, &ev, 0));

		copy_in_page(t.gmem, i);
	}
	vcpu_run(t.vcpu);
	gmem_presence_assert_done(t.vcpu);
	ASSERT_EQ(gmem_presence_stats(t.gmem).notifications, TEST_NPAGES);
	ASSERT_EQ(gmem_presence_stats(t.gmem).nr_present, TEST_NPAGES);
	ASSERT_EQ(vcpu_get_stat(t.vcpu, gmem_presence_faults), 2 * TEST_NPAGES);
	ASSERT_EQ(vcpu_get_stat(t.vcpu, gmem_presence_waits), 0);

	close(nfd);
	kvm_vm_free(t.vm);
	close(t.gmem);
}

/* Re-arming a populated page notifies again on the next access. */
TEST(rearm_renotifies)
{
	struct kvm_gmem_presence_event ev;
	struct pvm t;
	int nfd, r;
	u64 i;

	pvm_create(&t, guest_read_pages, false);
	nfd = gmem_notify_fd(t.gmem, O_NONBLOCK);
	for (i = 0; i < TEST_NPAGES; i++)
		copy_in_page(t.gmem, i);
	vcpu_run(t.vcpu);
	gmem_presence_assert_done(t.vcpu);
	ASSERT_FALSE(gmem_read_event(nfd, &ev, 0));

	/* The stage-2 mapping must go: the guest faults again. */
	rearm(t.gmem, 3 * PAGE_SIZE, PAGE_SIZE);
	vcpu_args_set(t.vcpu, 2, TEST_GPA, TEST_NPAGES);
	vcpu_arch_set_entry_point(t.vcpu, guest_read_pages);
	r = _vcpu_run(t.vcpu);
	gmem_presence_assert_exit(t.vcpu, r, TEST_GPA + 3 * PAGE_SIZE, 0);
	ASSERT_TRUE(gmem_read_event(nfd, &ev, 0));
	ASSERT_EQ(ev.offset, 3 * PAGE_SIZE);
	/* Without KVM_GMEM_NOTIFY_PID, records name no process. */
	ASSERT_EQ(ev.pid, 0);
	ASSERT_EQ(gmem_presence_stats(t.gmem).notifications, 1);

	/* Contents survive a re-arm: marking present again is enough. */
	set_present(t.gmem, 3 * PAGE_SIZE, PAGE_SIZE);
	vcpu_run(t.vcpu);
	gmem_presence_assert_done(t.vcpu);

	/*
	 * Re-armed again while the new period's record is still unread:
	 * that record stands for the next period too, one per page.
	 */
	rearm(t.gmem, 3 * PAGE_SIZE, PAGE_SIZE);
	vcpu_args_set(t.vcpu, 2, TEST_GPA, TEST_NPAGES);
	vcpu_arch_set_entry_point(t.vcpu, guest_read_pages);
	r = _vcpu_run(t.vcpu);
	gmem_presence_assert_exit(t.vcpu, r, TEST_GPA + 3 * PAGE_SIZE, 0);
	set_present(t.gmem, 3 * PAGE_SIZE, PAGE_SIZE);
	rearm(t.gmem, 3 * PAGE_SIZE, PAGE_SIZE);
	r = _vcpu_run(t.vcpu);
	gmem_presence_assert_exit(t.vcpu, r, TEST_GPA + 3 * PAGE_SIZE, 0);
	ASSERT_EQ(gmem_presence_stats(t.gmem).events_queued, 1);
	ASSERT_EQ(gmem_presence_stats(t.gmem).notifications, 2);
	ASSERT_TRUE(gmem_read_event(nfd, &ev, 0));
	ASSERT_EQ(ev.offset, 3 * PAGE_SIZE);
	ASSERT_FALSE(gmem_read_event(nfd, &ev, 0));

	set_present(t.gmem, 3 * PAGE_SIZE, PAGE_SIZE);
	vcpu_run(t.vcpu);
	gmem_presence_assert_done(t.vcpu);

	close(nfd);
	kvm_vm_free(t.vm);
	close(t.gmem);
}

struct populator {
	int gmem;
	int nfd;
	int count;
	int max;
};

static void *populate_thread(void *arg)
{
	struct populator *p = arg;
	struct kvm_gmem_presence_event ev;

	while (p->count < p->max) {
		ssize_t n = read(p->nfd, &ev, sizeof(ev));

		TEST_ASSERT(n == sizeof(ev), "read: %zd errno %d", n, errno);
		TEST_ASSERT_EQ(ev.origin, KVM_GMEM_ORIGIN_VCPU);
		copy_in_page(p->gmem, ev.offset / PAGE_SIZE);
		p->count++;
	}
	return NULL;
}

/* WAIT policy: the vCPU sleeps in the kernel while a thread populates. */
TEST(wait_policy)
{
	struct populator pop;
	pthread_t th;
	struct pvm t;

	pvm_create(&t, guest_read_pages, false);
	set_policy(t.vm, KVM_GMEM_PRESENCE_WAIT);
	pop = (struct populator){ .gmem = t.gmem, .nfd = gmem_notify_fd(t.gmem, 0),
				  .max = TEST_NPAGES };
	ASSERT_GE(pop.nfd, 0);
	pthread_create(&th, NULL, populate_thread, &pop);

	vcpu_run(t.vcpu);
	gmem_presence_assert_done(t.vcpu);
	pthread_join(th, NULL);
	ASSERT_EQ(pop.count, TEST_NPAGES);
	ASSERT_EQ(gmem_presence_stats(t.gmem).notifications, TEST_NPAGES);
	ASSERT_GE(vcpu_get_stat(t.vcpu, gmem_presence_faults), TEST_NPAGES);

	close(pop.nfd);
	kvm_vm_free(t.vm);
	close(t.gmem);
}

static void noop_handler(int sig)
{
}

/*
 * A signal ends a WAIT with KVM_EXIT_INTR; re-entering carries on.  (Not
 * _vcpu_run(): it loops on EINTR.)
 */
TEST(wait_signal)
{
	struct itimerval it = { .it_value = { .tv_usec = 300000 } };
	struct kvm_gmem_presence_event ev;
	struct pvm t;
	int nfd, r;
	u64 i;

	pvm_create(&t, guest_read_pages, false);
	set_policy(t.vm, KVM_GMEM_PRESENCE_WAIT);
	nfd = gmem_notify_fd(t.gmem, O_NONBLOCK);
	signal(SIGALRM, noop_handler);

	setitimer(ITIMER_REAL, &it, NULL);
	r = __vcpu_run(t.vcpu);
	ASSERT_EQ(r, -1);
	ASSERT_EQ(errno, EINTR);
	ASSERT_EQ(t.vcpu->run->exit_reason, KVM_EXIT_INTR);
	ASSERT_TRUE(gmem_read_event(nfd, &ev, 0));
	ASSERT_EQ(ev.offset, 0);

	/* Interrupted again: still no second record for page 0. */
	setitimer(ITIMER_REAL, &it, NULL);
	r = __vcpu_run(t.vcpu);
	ASSERT_EQ(r, -1);
	ASSERT_EQ(errno, EINTR);
	ASSERT_FALSE(gmem_read_event(nfd, &ev, 0));

	for (i = 0; i < TEST_NPAGES; i++)
		copy_in_page(t.gmem, i);
	vcpu_run(t.vcpu);
	gmem_presence_assert_done(t.vcpu);

	close(nfd);
	kvm_vm_free(t.vm);
	close(t.gmem);
}

static void guest_outs(u64 gpa, u64 npages)
{
	/* OUTS is emulated by KVM, which reads the operand itself. */
	asm volatile("outsb" : "+S"(gpa) : "d"(TEST_PORT) : "memory");
	GUEST_DONE();
}

/* A KVM-internal access (the emulator) is gated through the gmem mmap. */
TEST(kvm_internal_access)
{
	struct kvm_gmem_presence_event ev;
	struct kvm_run *run;
	void *ret;
	pthread_t th;
	struct pvm t;
	int nfd;

	pvm_create(&t, guest_outs, true);
	nfd = gmem_notify_fd(t.gmem, 0);
	pthread_create(&th, NULL, gmem_presence_vcpu_thread, t.vcpu);

	ASSERT_TRUE(gmem_read_event(nfd, &ev, 20000));
	ASSERT_EQ(ev.offset, 0);
	ASSERT_EQ(ev.origin, KVM_GMEM_ORIGIN_KVM);
	ASSERT_EQ(ev.vcpu_id, 0);
	copy_in_page(t.gmem, 0);

	pthread_join(th, &ret);
	ASSERT_EQ((long)ret, 0);
	run = t.vcpu->run;
	ASSERT_EQ(run->exit_reason, KVM_EXIT_IO);
	ASSERT_EQ(run->io.port, TEST_PORT);
	ASSERT_EQ(run->io.direction, KVM_EXIT_IO_OUT);
	ASSERT_EQ(*((u8 *)run + run->io.data_offset), (u8)PATTERN(0));

	close(nfd);
	kvm_vm_free(t.vm);
	kvm_munmap(t.mem, TEST_SIZE);
	close(t.gmem);
}

/* A process holding only the guest_memfd, faulting through its own mmap. */
static int helper_read(int gmem, u64 page)
{
	u64 *mem = mmap(NULL, TEST_SIZE, PROT_READ, MAP_SHARED, gmem, 0);

	if (mem == MAP_FAILED)
		return 2;
	return READ_ONCE(mem[page * PAGE_SIZE / 8]) == PATTERN(page) ? 0 : 1;
}

static void *thread_read(void *arg)
{
	int gmem = (int)(long)arg;

	return (void *)(long)helper_read(gmem, 0);
}

/* Several readers share the records: each gets distinct ones, none lost. */
TEST(several_readers)
{
	struct kvm_vm *vm = vm_create_barebones();
	struct kvm_gmem_presence_event ev;
	pid_t pids[TEST_NPAGES];
	u64 seen[2] = { 0 };
	int gmem, nfd[2], i, status;

	/* Each fd has its own flags; only the second one names processes. */
	gmem = vm_create_guest_memfd(vm, TEST_SIZE, gmem_flags_shared);
	nfd[0] = gmem_notify_fd(gmem, O_NONBLOCK);
	nfd[1] = gmem_notify_fd(gmem, O_NONBLOCK | O_CLOEXEC |
				KVM_GMEM_NOTIFY_PID);
	ASSERT_GE(nfd[0], 0);
	ASSERT_GE(nfd[1], 0);
	ASSERT_EQ(fcntl(nfd[0], F_GETFD) & FD_CLOEXEC, 0);
	ASSERT_EQ(fcntl(nfd[1], F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
	ASSERT_EQ(fcntl(nfd[0], F_GETFL) & O_NONBLOCK, O_NONBLOCK);
	ASSERT_EQ(fcntl(nfd[1], F_GETFL) & O_NONBLOCK, O_NONBLOCK);

	/* One helper per page, each blocks on its own page. */
	for (i = 0; i < TEST_NPAGES; i++) {
		pids[i] = fork();
		if (!pids[i])
			_exit(helper_read(gmem, i));
	}
	for (i = 0; i < TEST_NPAGES; i++) {
		int r = i % 2;

		ASSERT_TRUE(gmem_read_event(nfd[r], &ev, 20000));
		ASSERT_EQ(ev.offset % PAGE_SIZE, 0);
		ASSERT_LT(ev.offset, TEST_SIZE);
		ASSERT_FALSE(seen[0] & BIT(ev.offset / PAGE_SIZE));
		ASSERT_EQ(ev.pid, r ? pids[ev.offset / PAGE_SIZE] : 0);
		seen[0] |= BIT(ev.offset / PAGE_SIZE);
		seen[1]++;
	}
	ASSERT_EQ(seen[0], BIT(TEST_NPAGES) - 1);
	ASSERT_FALSE(gmem_read_event(nfd[0], &ev, 100));
	ASSERT_FALSE(gmem_read_event(nfd[1], &ev, 0));

	for (i = 0; i < TEST_NPAGES; i++)
		copy_in_page(gmem, i);
	for (i = 0; i < TEST_NPAGES; i++) {
		ASSERT_GT(wait(&status), 0);
		ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}

	close(nfd[0]);
	close(nfd[1]);
	close(gmem);
	kvm_vm_free(vm);
}

/* Many threads and a forked helper on one page: exactly one record. */
TEST(dedup_threads_and_helper)
{
	struct kvm_vm *vm = vm_create_barebones();
	struct kvm_gmem_presence_event ev;
	pthread_t th[4];
	int gmem, nfd, i, status;
	void *ret;
	pid_t pid;

	gmem = vm_create_guest_memfd(vm, TEST_SIZE, gmem_flags_shared);
	nfd = gmem_notify_fd(gmem, KVM_GMEM_NOTIFY_PID);

	pid = fork();
	if (!pid)
		_exit(helper_read(gmem, 0));
	for (i = 0; i < 4; i++)
		pthread_create(&th[i], NULL, thread_read, (void *)(long)gmem);

	ASSERT_TRUE(gmem_read_event(nfd, &ev, 20000));
	ASSERT_EQ(ev.offset, 0);
	ASSERT_EQ(ev.origin, KVM_GMEM_ORIGIN_MMAP);
	ASSERT_EQ(ev.vcpu_id, KVM_GMEM_NO_VCPU);
	ASSERT_TRUE(ev.pid == getpid() || ev.pid == pid);
	/* Give every reader time to hit the gate: still only one record. */
	usleep(500000);
	ASSERT_FALSE(gmem_read_event(nfd, &ev, 200));
	ASSERT_GE(gmem_presence_stats(gmem).faults, 2);
	ASSERT_EQ(gmem_presence_stats(gmem).events_queued, 0);

	copy_in_page(gmem, 0);
	for (i = 0; i < 4; i++) {
		pthread_join(th[i], &ret);
		ASSERT_EQ((long)ret, 0);
	}
	ASSERT_EQ(waitpid(pid, &status, 0), pid);
	ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	ASSERT_EQ(gmem_presence_stats(gmem).notifications, 1);

	close(nfd);
	close(gmem);
	kvm_vm_free(vm);
}

static int *usr1_count;

static void usr1_handler(int signum)
{
	__atomic_fetch_add(usr1_count, 1, __ATOMIC_SEQ_CST);
}

/*
 * Signals and a helper sleeping in the fault handler: a handled signal runs
 * and the access goes back to waiting, SIGKILL always ends it.
 */
TEST(helper_signals)
{
	struct kvm_vm *vm = vm_create_barebones();
	struct kvm_gmem_presence_event ev;
	int gmem, nfd, status, i;
	pid_t waiter, victim;

	usr1_count = mmap(NULL, PAGE_SIZE, PROT_READ | PROT_WRITE,
			  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	gmem = vm_create_guest_memfd(vm, TEST_SIZE, gmem_flags_shared);
	nfd = gmem_notify_fd(gmem, KVM_GMEM_NOTIFY_PID);

	waiter = fork();
	if (!waiter) {
		signal(SIGUSR1, usr1_handler);
		_exit(helper_read(gmem, 1));
	}
	ASSERT_TRUE(gmem_read_event(nfd, &ev, 20000));
	ASSERT_EQ(ev.offset, PAGE_SIZE);
	ASSERT_EQ(ev.pid, waiter);

	for (i = 0; i < 100 && !__atomic_load_n(usr1_count, __ATOMIC_SEQ_CST); i++) {
		kill(waiter, SIGUSR1);
		usleep(20000);
	}
	ASSERT_GE(__atomic_load_n(usr1_count, __ATOMIC_SEQ_CST), 1);
	ASSERT_EQ(waitpid(waiter, &status, WNOHANG), 0);

	victim = fork();
	if (!victim)
		_exit(helper_read(gmem, 2));
	ASSERT_TRUE(gmem_read_event(nfd, &ev, 20000));
	ASSERT_EQ(ev.offset, 2 * PAGE_SIZE);
	kill(victim, SIGKILL);
	ASSERT_EQ(waitpid(victim, &status, 0), victim);
	ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

	copy_in_page(gmem, 1);
	ASSERT_EQ(waitpid(waiter, &status, 0), waiter);
	ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);

	close(nfd);
	close(gmem);
	kvm_vm_free(vm);
}

/* Private memory of a software-protected VM: only copy-in can fill it. */
TEST(private_memory)
{
	const struct vm_shape shape = {
		.mode = VM_MODE_DEFAULT,
		.type = KVM_X86_SW_PROTECTED_VM,
	};
	struct kvm_gmem_presence_event ev;
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;
	int gmem, nfd, r;
	u64 i;

	if (!(kvm_check_cap(KVM_CAP_VM_TYPES) & BIT(KVM_X86_SW_PROTECTED_VM)))
		SKIP(return, "KVM_X86_SW_PROTECTED_VM not supported");

	vm = vm_create_shape_with_one_vcpu(shape, &vcpu, guest_read_pages);
	gmem = vm_create_guest_memfd(vm, TEST_SIZE, GUEST_MEMFD_FLAG_PRESENCE);
	vm_mem_add(vm, VM_MEM_SRC_ANONYMOUS, TEST_GPA, TEST_SLOT, TEST_NPAGES,
		   KVM_MEM_GUEST_MEMFD, gmem, 0);
	virt_map(vm, TEST_GPA, TEST_GPA, TEST_NPAGES);
	vm_mem_set_private(vm, TEST_GPA, TEST_SIZE);
	vcpu_args_set(vcpu, 2, TEST_GPA, TEST_NPAGES);
	nfd = gmem_notify_fd(gmem, O_NONBLOCK);

	for (i = 0; i < TEST_NPAGES; i++) {
		r = _vcpu_run(vcpu);
		gmem_presence_assert_exit(vcpu, r, TEST_GPA + i * PAGE_SIZE,
					  KVM_MEMORY_EXIT_FLAG_PRIVATE);
		ASSERT_TRUE(gmem_read_event(nfd, &ev, 0));
		ASSERT_EQ(ev.offset, i * PAGE_SIZE);
		copy_in_page(gmem, i);
	}
	vcpu_run(vcpu);
	gmem_presence_assert_done(vcpu);

	close(nfd);
	close(gmem);
	kvm_vm_free(vm);
}

/*
 * A WAIT-policy vCPU runs in @th until it sleeps on the first page and its
 * record has been read; returns the notification fd.
 */
static int pvm_start_waiting_vcpu(struct pvm *t, pthread_t *th)
{
	struct kvm_gmem_presence_event ev;
	int nfd;

	pvm_create(t, guest_read_pages, false);
	set_policy(t->vm, KVM_GMEM_PRESENCE_WAIT);
	nfd = gmem_notify_fd(t->gmem, 0);
	pthread_create(th, NULL, gmem_presence_vcpu_thread, t->vcpu);
	TEST_ASSERT(gmem_read_event(nfd, &ev, 20000), "no record");
	usleep(100000);
	return nfd;
}

/* Closing the guest_memfd wakes a waiting vCPU, which then fails cleanly. */
TEST(teardown_close_gmem)
{
	struct kvm_gmem_presence_event ev;
	pthread_t th;
	struct pvm t;
	void *ret;
	int nfd;

	nfd = pvm_start_waiting_vcpu(&t, &th);

	close(t.gmem);
	pthread_join(th, &ret);
	ASSERT_EQ((long)ret, -EFAULT);
	ASSERT_EQ(t.vcpu->run->exit_reason, KVM_EXIT_MEMORY_FAULT);

	/* The reader sees end-of-file once the file is gone. */
	ASSERT_EQ(read(nfd, &ev, sizeof(ev)), 0);
	close(nfd);
	kvm_vm_free(t.vm);
}

/* Deleting the memslot wakes a waiting vCPU: it re-faults elsewhere. */
TEST(teardown_delete_memslot)
{
	pthread_t th;
	struct pvm t;
	void *ret;
	int nfd;

	nfd = pvm_start_waiting_vcpu(&t, &th);

	vm_set_user_memory_region2(t.vm, TEST_SLOT, KVM_MEM_GUEST_MEMFD,
				   TEST_GPA, 0, NULL, t.gmem, 0);
	pthread_join(th, &ret);
	ASSERT_NE(t.vcpu->run->exit_reason, KVM_EXIT_UNKNOWN);

	close(nfd);
	close(t.gmem);
	kvm_vm_free(t.vm);
}

/*
 * Re-arming a page that a helper sleeps on, with KVM_MEMORY_PRESENT_DISCARD
 * or _REARM, begins a new period: the helper is woken, reports the page
 * again, and waits for the new contents.  A plain punch-hole re-arms
 * nothing: it wakes nobody, and a present page stays present, reading as
 * zeroes.
 */
static void rearm_sleeping_helper(u32 op)
{
	struct kvm_vm *vm = vm_create_barebones();
	struct kvm_gmem_presence_stats st;
	struct kvm_gmem_presence_event ev;
	int gmem, nfd, status;
	pid_t pid;

	gmem = vm_create_guest_memfd(vm, TEST_SIZE, gmem_flags_shared);
	nfd = gmem_notify_fd(gmem, KVM_GMEM_NOTIFY_PID);
	pid = fork();
	if (!pid)
		_exit(helper_read(gmem, 0));
	TEST_ASSERT(gmem_read_event(nfd, &ev, 20000), "no record");
	TEST_ASSERT_EQ(ev.pid, pid);
	usleep(100000);

	if (op == KVM_MEMORY_PRESENT_DISCARD) {
		st = gmem_presence_stats(gmem);
		gmem_punch_hole(gmem, 0, PAGE_SIZE);
		TEST_ASSERT(!gmem_read_event(nfd, &ev, 200),
			    "plain punch-hole started a new period");
		TEST_ASSERT_EQ(gmem_presence_stats(gmem).wakeups, st.wakeups);
		TEST_ASSERT_EQ(gmem_presence_stats(gmem).notifications,
			       st.notifications);
		TEST_ASSERT_EQ(waitpid(pid, &status, WNOHANG), 0);
	}

	gmem_set_present(gmem, 0, PAGE_SIZE, op);
	TEST_ASSERT(gmem_read_event(nfd, &ev, 20000), "no second record");
	TEST_ASSERT_EQ(ev.offset, 0);
	TEST_ASSERT_EQ(ev.pid, pid);
	TEST_ASSERT_EQ(waitpid(pid, &status, WNOHANG), 0);

	copy_in_page(gmem, 0);
	TEST_ASSERT_EQ(waitpid(pid, &status, 0), pid);
	TEST_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		    "helper status %#x", status);

	if (op == KVM_MEMORY_PRESENT_DISCARD)
		gmem_assert_punch_keeps_present(gmem, 0);

	close(nfd);
	close(gmem);
	kvm_vm_free(vm);
}

TEST(teardown_punch_hole)
{
	rearm_sleeping_helper(KVM_MEMORY_PRESENT_DISCARD);
}

TEST(rearm_wakes_waiters)
{
	rearm_sleeping_helper(KVM_MEMORY_PRESENT_REARM);
}

/*
 * Closing the VM and vCPU fds while a helper sleeps on its mapping: the
 * guest_memfd (and with it the VM, which it references) outlives them, so
 * the helper keeps waiting, without SIGBUS, until the page is populated.
 * Closing the guest_memfd last then destroys the VM with a bound memslot.
 */
TEST(teardown_vm_fd_first)
{
	struct kvm_gmem_presence_event ev;
	int nfd, status;
	struct pvm t;
	pid_t pid;

	pvm_create(&t, guest_read_pages, false);
	nfd = gmem_notify_fd(t.gmem, 0);
	pid = fork();
	if (!pid)
		_exit(helper_read(t.gmem, 0));
	ASSERT_TRUE(gmem_read_event(nfd, &ev, 20000));
	ASSERT_EQ(ev.origin, KVM_GMEM_ORIGIN_MMAP);

	kvm_vm_free(t.vm);
	usleep(100000);
	ASSERT_EQ(waitpid(pid, &status, WNOHANG), 0);

	copy_in_page(t.gmem, 0);
	ASSERT_EQ(waitpid(pid, &status, 0), pid);
	ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	close(t.gmem);
	ASSERT_EQ(read(nfd, &ev, sizeof(ev)), 0);
	close(nfd);
}

/*
 * An access that cannot drop the mmap lock to wait (GUP without
 * FOLL_UNLOCKABLE, here /proc/self/mem) raises the record and fails
 * instead of sleeping with the lock held.
 */
TEST(unretriable_access_fails)
{
	struct kvm_vm *vm = vm_create_barebones();
	struct kvm_gmem_presence_event ev;
	int gmem, nfd, memfd;
	u64 *mem, val;

	gmem = vm_create_guest_memfd(vm, TEST_SIZE, gmem_flags_shared);
	nfd = gmem_notify_fd(gmem, O_NONBLOCK);
	mem = kvm_mmap(TEST_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, gmem);
	memfd = open("/proc/self/mem", O_RDONLY);
	ASSERT_GE(memfd, 0);

	ASSERT_EQ(pread(memfd, &val, sizeof(val), (off_t)&mem[0]), -1);
	ASSERT_EQ(errno, EIO);
	ASSERT_TRUE(gmem_read_event(nfd, &ev, 0));
	ASSERT_EQ(ev.offset, 0);
	ASSERT_EQ(ev.origin, KVM_GMEM_ORIGIN_MMAP);

	copy_in_page(gmem, 0);
	ASSERT_EQ(pread(memfd, &val, sizeof(val), (off_t)&mem[0]), sizeof(val));
	ASSERT_EQ(val, PATTERN(0));
	ASSERT_FALSE(gmem_read_event(nfd, &ev, 0));

	close(memfd);
	kvm_munmap(mem, TEST_SIZE);
	close(nfd);
	close(gmem);
	kvm_vm_free(vm);
}

struct write_from {
	int fd;
	void *mem;
};

static void *thread_write_from(void *arg)
{
	struct write_from *wf = arg;
	ssize_t r;

	/* The kernel's copy from the not-present page sleeps in the fault. */
	r = write(wf->fd, wf->mem, sizeof(u64));
	return (void *)(long)(r < 0 ? -errno : r);
}

/*
 * The mapping is removed and the guest_memfd closed while a thread sleeps
 * in a fault on it: the release wakes it and its retry finds no mapping.
 */
TEST(teardown_unmap_close_while_waiting)
{
	struct kvm_vm *vm = vm_create_barebones();
	struct kvm_gmem_presence_event ev;
	struct write_from wf;
	int gmem, nfd, fds[2];
	pthread_t th;
	void *ret;

	gmem = vm_create_guest_memfd(vm, TEST_SIZE, gmem_flags_shared);
	nfd = gmem_notify_fd(gmem, 0);
	ASSERT_EQ(pipe(fds), 0);
	wf.fd = fds[1];
	wf.mem = kvm_mmap(TEST_SIZE, PROT_READ, MAP_SHARED, gmem);
	pthread_create(&th, NULL, thread_write_from, &wf);
	ASSERT_TRUE(gmem_read_event(nfd, &ev, 20000));
	usleep(100000);

	kvm_munmap(wf.mem, TEST_SIZE);
	close(gmem);
	pthread_join(th, &ret);
	ASSERT_EQ((long)ret, -EFAULT);
	ASSERT_EQ(read(nfd, &ev, sizeof(ev)), 0);

	close(fds[0]);
	close(fds[1]);
	close(nfd);
	kvm_vm_free(vm);
}

/* Killing a process whose vCPU waits, or whose helper sleeps, is clean. */
TEST(teardown_kill_waiting_vcpu)
{
	int status, pipefd[2];
	char c;
	pid_t pid;

	ASSERT_EQ(pipe(pipefd), 0);
	pid = fork();
	if (!pid) {
		struct kvm_gmem_presence_event ev;
		struct pvm t;
		int nfd;

		pvm_create(&t, guest_read_pages, false);
		set_policy(t.vm, KVM_GMEM_PRESENCE_WAIT);
		nfd = gmem_notify_fd(t.gmem, 0);
		if (!fork()) {
			/* Tell the parent once the vCPU has hit the gate. */
			if (read(nfd, &ev, sizeof(ev)) != sizeof(ev) ||
			    write(pipefd[1], "x", 1) != 1)
				_exit(1);
			_exit(0);
		}
		vcpu_run(t.vcpu);
		_exit(3);
	}
	ASSERT_EQ(read(pipefd[0], &c, 1), 1);
	usleep(100000);
	kill(pid, SIGKILL);
	ASSERT_EQ(waitpid(pid, &status, 0), pid);
	ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
}

TEST_HARNESS_MAIN
