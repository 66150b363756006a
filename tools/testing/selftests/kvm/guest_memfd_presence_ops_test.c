// SPDX-License-Identifier: GPL-2.0-only
/*
 * guest_memfd presence: the operations of KVM_SET_MEMORY_PRESENT and the
 * properties a VMM relies on around them -- a KVM-internal wait under a
 * stream of signals, copy-in from a source that is itself not present,
 * punch vs. discard, finishing tracking, the bound on queued records, the
 * lifetime of a notification fd, conversions and policy changes waking
 * waiters, and wait-queue hashing.
 */
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>

#include <linux/falloc.h>
#include <linux/kvm.h>
#include <linux/sizes.h>

#include "guest_memfd_presence.h"
#include "kvm_util.h"
#include "processor.h"
#include "test_util.h"
#include "kselftest_harness.h"

#define OPS_GPA		SZ_4G
#define OPS_SLOT	1
#define OPS_NPAGES	8
#define OPS_SIZE	(OPS_NPAGES * PAGE_SIZE)
#define OPS_PORT	0x80
#define OPS_PATTERN(i)	(0xa5a5000000000000ull | (i))

static const u64 shared_flags = GUEST_MEMFD_FLAG_MMAP |
				GUEST_MEMFD_FLAG_INIT_SHARED |
				GUEST_MEMFD_FLAG_PRESENCE;

static int op_errno(int gmem, u32 op, u64 offset, u64 size, const void *src)
{
	return __gmem_set_present(gmem, offset, size, op, src, NULL) ? errno : 0;
}

/* Copy in @page, every word OPS_PATTERN(@value). */
static void copy_pattern(int gmem, u64 page, u64 value)
{
	gmem_copy_in_word(gmem, page, OPS_PATTERN(value));
}

static bool page_present(int gmem, u64 page)
{
	return gmem_page_present(gmem, page * PAGE_SIZE);
}

static int open_notify(int gmem, u32 flags)
{
	int fd = gmem_notify_fd(gmem, flags);

	TEST_ASSERT(fd >= 0, "KVM_GMEM_GET_NOTIFY_FD: errno %d", errno);
	return fd;
}

/* Records readable now, without blocking (the fd is O_NONBLOCK). */
static int drain_records(int nfd)
{
	struct kvm_gmem_presence_event ev[16];
	int n = 0;
	ssize_t r;

	while ((r = read(nfd, ev, sizeof(ev))) > 0) {
		TEST_ASSERT_EQ(r % sizeof(ev[0]), 0);
		TEST_ASSERT_EQ(ev[0].type, KVM_GMEM_EVENT_FAULT);
		n += r / sizeof(ev[0]);
	}
	TEST_ASSERT(r < 0 && errno == EAGAIN, "read notify fd: %zd errno %d",
		    r, errno);
	return n;
}

/* Poll @gmem's stats until @field reaches @min; false after ~20 s. */
#define wait_stat(gmem, field, min)					\
({									\
	bool __ok = false;						\
	int __i;							\
									\
	for (__i = 0; __i < 4000 && !__ok; __i++) {			\
		__ok = gmem_presence_stats(gmem).field >= (min);	\
		if (!__ok)						\
			usleep(5000);					\
	}								\
	__ok;								\
})

static bool join_within(pthread_t th, int secs, void **ret)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += secs;
	return !pthread_timedjoin_np(th, ret, &ts);
}

static void noop_handler(int sig)
{
}

/* A default VM whose test slot is a presence guest_memfd, mapped. */
struct ops_vm {
	struct kvm_vm *vm;
	struct kvm_vcpu *vcpu;
	int gmem;
	void *mem;
};

static void ops_vm_create(struct ops_vm *t, void *guest_code)
{
	t->vm = vm_create_with_one_vcpu(&t->vcpu, guest_code);
	t->gmem = vm_create_guest_memfd(t->vm, OPS_SIZE, shared_flags);
	t->mem = kvm_mmap(OPS_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED,
			  t->gmem);
	vm_set_user_memory_region2(t->vm, OPS_SLOT, KVM_MEM_GUEST_MEMFD,
				   OPS_GPA, OPS_SIZE, t->mem, t->gmem, 0);
	virt_map(t->vm, OPS_GPA, OPS_GPA, OPS_NPAGES);
	vcpu_args_set(t->vcpu, 1, OPS_GPA);
}

static void ops_vm_free(struct ops_vm *t)
{
	kvm_vm_free(t->vm);
	kvm_munmap(t->mem, OPS_SIZE);
	close(t->gmem);
}

static void set_policy(struct kvm_vm *vm, u64 policy)
{
	vm_enable_cap(vm, KVM_CAP_GUEST_MEMFD_PRESENCE, policy);
}

/* OUTS is emulated by KVM, which reads the operand through the mmap. */
static void guest_outs(u64 gpa)
{
	asm volatile("outsb" : "+S"(gpa) : "d"(OPS_PORT) : "memory");
	GUEST_DONE();
}

static u64 thread_cpu_ns(pthread_t th)
{
	struct timespec ts;
	clockid_t cid;

	TEST_ASSERT(!pthread_getcpuclockid(th, &cid), "pthread_getcpuclockid");
	clock_gettime(cid, &ts);
	return ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

/*
 * A vCPU thread inside a KVM-internal access (the emulator reading guest
 * memory) waits for the page while SIGUSR1 -- QEMU's vCPU kick -- keeps
 * coming.  The wait must sleep, not spin on the pending signal, and finish
 * once the page arrives.
 */
TEST(kvm_access_signal_storm)
{
	struct kvm_gmem_presence_event ev;
	u64 cpu0, cpu1;
	struct ops_vm t;
	pthread_t th;
	void *ret;
	int nfd, i;

	signal(SIGUSR1, noop_handler);
	ops_vm_create(&t, guest_outs);
	nfd = open_notify(t.gmem, 0);
	pthread_create(&th, NULL, gmem_presence_vcpu_thread, t.vcpu);

	ASSERT_EQ(read(nfd, &ev, sizeof(ev)), sizeof(ev));
	ASSERT_EQ(ev.origin, KVM_GMEM_ORIGIN_KVM);
	ASSERT_TRUE(wait_stat(t.gmem, waits, 1));

	cpu0 = thread_cpu_ns(th);
	for (i = 0; i < 200; i++) {
		pthread_kill(th, SIGUSR1);
		usleep(2000);
	}
	cpu1 = thread_cpu_ns(th);
	ksft_print_msg("vCPU thread CPU time over %d signals: %llu ms\n", i,
		       (unsigned long long)(cpu1 - cpu0) / 1000000);
	/* ~400 ms of wall time: a spinning wait would use about all of it. */
	ASSERT_LT(cpu1 - cpu0, 100000000ull);

	copy_pattern(t.gmem, 0, 0);
	ASSERT_TRUE(join_within(th, 20, &ret));
	ASSERT_EQ((long)ret, 0);
	ASSERT_EQ(t.vcpu->run->exit_reason, KVM_EXIT_IO);
	ASSERT_EQ(*((u8 *)t.vcpu->run + t.vcpu->run->io.data_offset),
		  (u8)OPS_PATTERN(0));

	close(nfd);
	ops_vm_free(&t);
}

struct copy_args {
	int gmem;
	u64 page;
	const void *src;
	int err;
};

static void *copy_thread(void *arg)
{
	struct copy_args *a = arg;

	a->err = op_errno(a->gmem, KVM_MEMORY_PRESENT_COPY, a->page * PAGE_SIZE,
			  PAGE_SIZE, a->src);
	return NULL;
}

static void *punch_thread(void *arg)
{
	struct copy_args *a = arg;

	a->err = fallocate(a->gmem, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE,
			   a->page * PAGE_SIZE, PAGE_SIZE) ? errno : 0;
	return NULL;
}

/*
 * A COPY whose source is a mapping of a not-present page sleeps on that
 * page.  A punch-hole (which takes the invalidate lock for write) and a
 * further COPY must not queue up behind it; once the source page arrives,
 * the first COPY completes with its contents.
 */
TEST(copy_from_not_present_source)
{
	struct kvm_vm *vm = vm_create_barebones();
	struct copy_args a, b, c;
	pthread_t ta, tb, tc;
	u64 *mem;
	int gmem;

	gmem = vm_create_guest_memfd(vm, OPS_SIZE, shared_flags);
	mem = kvm_mmap(OPS_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, gmem);

	a = (struct copy_args){ .gmem = gmem, .page = 1, .src = mem };
	pthread_create(&ta, NULL, copy_thread, &a);
	ASSERT_TRUE(wait_stat(gmem, waits, 1));

	b = (struct copy_args){ .gmem = gmem, .page = 3 };
	pthread_create(&tb, NULL, punch_thread, &b);
	ASSERT_TRUE(join_within(tb, 10, NULL));
	ASSERT_EQ(b.err, 0);

	c = (struct copy_args){ .gmem = gmem, .page = 2 };
	c.src = aligned_alloc(PAGE_SIZE, PAGE_SIZE);
	memset((void *)c.src, 0x77, PAGE_SIZE);
	pthread_create(&tc, NULL, copy_thread, &c);
	ASSERT_TRUE(join_within(tc, 10, NULL));
	ASSERT_EQ(c.err, 0);
	ASSERT_EQ(mem[2 * PAGE_SIZE / 8], 0x7777777777777777ull);

	/* The first COPY is still waiting for its source. */
	ASSERT_FALSE(page_present(gmem, 1));
	copy_pattern(gmem, 0, 42);
	ASSERT_TRUE(join_within(ta, 10, NULL));
	ASSERT_EQ(a.err, 0);
	ASSERT_EQ(mem[PAGE_SIZE / 8], OPS_PATTERN(42));
	ASSERT_EQ(mem[2 * PAGE_SIZE / 8 - 1], OPS_PATTERN(42));

	free((void *)c.src);
	kvm_munmap(mem, OPS_SIZE);
	close(gmem);
	kvm_vm_free(vm);
}

/* Fork a child that reads @page through its own mapping. */
static pid_t child_read(int gmem, u64 page, u64 expect)
{
	pid_t pid = fork();

	if (!pid) {
		u64 *m = mmap(NULL, OPS_SIZE, PROT_READ, MAP_SHARED, gmem, 0);

		if (m == MAP_FAILED)
			_exit(2);
		_exit(READ_ONCE(m[page * PAGE_SIZE / 8]) == expect ? 0 : 1);
	}
	return pid;
}

static int child_status(pid_t pid)
{
	int status;

	TEST_ASSERT(waitpid(pid, &status, 0) == pid, "waitpid");
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/*
 * A plain punch-hole leaves a present page present (it reads zeroes, as on
 * any guest_memfd, and raises nothing); DISCARD frees it and re-arms it, so
 * that the next access waits for a copy-in.
 */
TEST(punch_keeps_discard_rearms)
{
	struct kvm_vm *vm = vm_create_barebones();
	u64 *mem;
	int gmem, nfd;
	pid_t pid;

	gmem = vm_create_guest_memfd(vm, OPS_SIZE, shared_flags);
	mem = kvm_mmap(OPS_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, gmem);
	nfd = open_notify(gmem, O_NONBLOCK);

	copy_pattern(gmem, 0, 1);
	copy_pattern(gmem, 1, 2);
	ASSERT_EQ(mem[0], OPS_PATTERN(1));

	ASSERT_EQ(fallocate(gmem, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE,
			    0, PAGE_SIZE), 0);
	ASSERT_TRUE(page_present(gmem, 0));
	ASSERT_EQ(mem[0], 0);
	ASSERT_EQ(drain_records(nfd), 0);

	gmem_set_present(gmem, PAGE_SIZE, PAGE_SIZE, KVM_MEMORY_PRESENT_DISCARD);
	ASSERT_FALSE(page_present(gmem, 1));
	ASSERT_EQ(gmem_presence_stats(gmem).pages_cleared, 1);

	pid = child_read(gmem, 1, OPS_PATTERN(3));
	ASSERT_TRUE(wait_stat(gmem, notifications, 1));
	ASSERT_EQ(drain_records(nfd), 1);
	copy_pattern(gmem, 1, 3);
	ASSERT_EQ(child_status(pid), 0);

	close(nfd);
	kvm_munmap(mem, OPS_SIZE);
	close(gmem);
	kvm_vm_free(vm);
}

/*
 * FINISH: refused while a page is missing; afterwards the gates pass for
 * good, readers see end-of-file, re-arming is refused, and a punch-hole
 * simply discards.
 */
TEST(finish_tracking)
{
	struct kvm_vm *vm = vm_create_barebones();
	struct kvm_gmem_presence_stats st;
	struct pollfd pfd;
	u64 *mem, buf[8];
	int gmem, nfd;

	gmem = vm_create_guest_memfd(vm, OPS_SIZE, shared_flags);
	mem = kvm_mmap(OPS_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, gmem);
	nfd = open_notify(gmem, O_NONBLOCK);

	ASSERT_EQ(op_errno(gmem, KVM_MEMORY_PRESENT_FINISH, 0, PAGE_SIZE, NULL),
		  EINVAL);
	gmem_set_present(gmem, 0, OPS_SIZE - PAGE_SIZE, KVM_MEMORY_PRESENT_MARK);
	ASSERT_EQ(op_errno(gmem, KVM_MEMORY_PRESENT_FINISH, 0, OPS_SIZE, NULL),
		  EBUSY);
	ASSERT_EQ(gmem_presence_stats(gmem).flags, 0);

	copy_pattern(gmem, OPS_NPAGES - 1, 7);
	gmem_set_present(gmem, 0, OPS_SIZE, KVM_MEMORY_PRESENT_FINISH);
	/* Idempotent. */
	gmem_set_present(gmem, 0, OPS_SIZE, KVM_MEMORY_PRESENT_FINISH);

	st = gmem_presence_stats(gmem);
	ASSERT_EQ(st.flags, KVM_GMEM_PRESENCE_FINISHED);
	ASSERT_EQ(st.nr_present, OPS_NPAGES);
	ASSERT_EQ(st.events_queued, 0);

	pfd = (struct pollfd){ .fd = nfd, .events = POLLIN };
	ASSERT_EQ(poll(&pfd, 1, 0), 1);
	ASSERT_TRUE(pfd.revents & POLLHUP);
	ASSERT_EQ(read(nfd, buf, sizeof(struct kvm_gmem_presence_event)), 0);

	ASSERT_EQ(op_errno(gmem, KVM_MEMORY_PRESENT_DISCARD, 0, PAGE_SIZE, NULL),
		  EINVAL);
	ASSERT_EQ(op_errno(gmem, KVM_MEMORY_PRESENT_REARM, 0, PAGE_SIZE, NULL),
		  EINVAL);
	ASSERT_EQ(op_errno(gmem, KVM_MEMORY_PRESENT_COPY, 0, PAGE_SIZE, buf),
		  EEXIST);
	gmem_set_present(gmem, 0, OPS_SIZE, KVM_MEMORY_PRESENT_MARK);

	ASSERT_EQ(mem[(OPS_NPAGES - 1) * PAGE_SIZE / 8], OPS_PATTERN(7));
	ASSERT_EQ(fallocate(gmem, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE,
			    (OPS_NPAGES - 1) * PAGE_SIZE, PAGE_SIZE), 0);
	ASSERT_TRUE(page_present(gmem, OPS_NPAGES - 1));
	ASSERT_EQ(mem[(OPS_NPAGES - 1) * PAGE_SIZE / 8], 0);

	close(nfd);
	kvm_munmap(mem, OPS_SIZE);
	close(gmem);
	kvm_vm_free(vm);
}

static void guest_read_all(u64 gpa)
{
	u64 round, i;

	for (round = 0;; round++) {
		for (i = 0; i < OPS_NPAGES; i++)
			READ_ONCE(*(u64 *)(gpa + i * PAGE_SIZE));
		GUEST_SYNC(round);
	}
}

/*
 * An EXIT-policy VMM that never reads the notification fd, re-arming
 * everything again and again: at most one record per page is ever queued.
 */
TEST(records_bounded)
{
	struct ucall uc;
	struct ops_vm t;
	int nfd, round, i, r;

	ops_vm_create(&t, guest_read_all);
	nfd = open_notify(t.gmem, O_NONBLOCK);

	for (round = 0; round < 4; round++) {
		for (i = 0; i < OPS_NPAGES; i++) {
			r = _vcpu_run(t.vcpu);
			gmem_presence_assert_exit(t.vcpu, r,
						  OPS_GPA + i * PAGE_SIZE, 0);
			gmem_set_present(t.gmem, i * PAGE_SIZE, PAGE_SIZE,
					 KVM_MEMORY_PRESENT_MARK);
		}
		vcpu_run(t.vcpu);
		ASSERT_EQ(get_ucall(t.vcpu, &uc), UCALL_SYNC);
		ASSERT_EQ(uc.args[1], round);
		ASSERT_EQ(gmem_presence_stats(t.gmem).events_queued, OPS_NPAGES);
		gmem_set_present(t.gmem, 0, OPS_SIZE, KVM_MEMORY_PRESENT_REARM);
	}
	ASSERT_EQ(drain_records(nfd), OPS_NPAGES);
	ASSERT_EQ(gmem_presence_stats(t.gmem).events_queued, 0);

	/* Read records make room: the next period raises new ones. */
	for (i = 0; i < OPS_NPAGES; i++) {
		r = _vcpu_run(t.vcpu);
		gmem_presence_assert_exit(t.vcpu, r, OPS_GPA + i * PAGE_SIZE, 0);
		gmem_set_present(t.gmem, i * PAGE_SIZE, PAGE_SIZE,
				 KVM_MEMORY_PRESENT_MARK);
	}
	ASSERT_EQ(drain_records(nfd), OPS_NPAGES);

	close(nfd);
	ops_vm_free(&t);
}

static long mem_free_kb(void)
{
	char line[128];
	long kb = -1;
	FILE *f = fopen("/proc/meminfo", "r");

	TEST_ASSERT(f, "/proc/meminfo");
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "MemFree: %ld kB", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

/*
 * A notification fd that outlives its guest_memfd (leaked to a helper, say)
 * pins no guest memory, and reads end-of-file.
 */
TEST(notify_fd_outlives_gmem)
{
	const u64 size = SZ_256M;
	struct kvm_vm *vm = vm_create_barebones();
	struct kvm_gmem_presence_event ev;
	long before, populated, after;
	struct pollfd pfd;
	int gmem, nfd;

	before = mem_free_kb();
	gmem = vm_create_guest_memfd(vm, size, shared_flags);
	nfd = open_notify(gmem, 0);
	ASSERT_EQ(fallocate(gmem, FALLOC_FL_KEEP_SIZE, 0, size), 0);
	gmem_set_present(gmem, 0, size, KVM_MEMORY_PRESENT_MARK);
	populated = mem_free_kb();
	ksft_print_msg("MemFree: %ld MiB, populated %ld MiB\n", before >> 10,
		       populated >> 10);
	ASSERT_GT(before - populated, (long)(size >> 10) * 3 / 4);

	close(gmem);
	kvm_vm_free(vm);
	after = mem_free_kb();
	ksft_print_msg("MemFree with only the notification fd left: %ld MiB\n",
		       after >> 10);
	/* Pinned, nothing would come back; freed, most of it does at once. */
	ASSERT_GT(after - populated, (long)(size >> 10) / 2);

	pfd = (struct pollfd){ .fd = nfd, .events = POLLIN };
	ASSERT_EQ(poll(&pfd, 1, 0), 1);
	ASSERT_TRUE(pfd.revents & POLLHUP);
	ASSERT_EQ(read(nfd, &ev, sizeof(ev)), 0);
	close(nfd);
	ksft_print_msg("MemFree with the notification fd closed too: %ld MiB\n",
		       mem_free_kb() >> 10);
}

/* The pid is reported only to readers that asked for it. */
TEST(notify_pid_opt_in)
{
	struct kvm_vm *vm = vm_create_barebones();
	struct kvm_gmem_notify_fd bad = { .flags = 1u << 30 };
	struct kvm_gmem_presence_event ev;
	int gmem, plain, with_pid;
	pid_t pid, pid2;

	gmem = vm_create_guest_memfd(vm, OPS_SIZE, shared_flags);
	plain = open_notify(gmem, O_CLOEXEC);
	with_pid = open_notify(gmem, KVM_GMEM_NOTIFY_PID);
	ASSERT_EQ(fcntl(plain, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
	ASSERT_EQ(ioctl(gmem, KVM_GMEM_GET_NOTIFY_FD, &bad), -1);
	ASSERT_EQ(errno, EINVAL);

	pid = child_read(gmem, 0, OPS_PATTERN(0));
	ASSERT_EQ(read(plain, &ev, sizeof(ev)), sizeof(ev));
	ASSERT_EQ(ev.pid, 0);
	pid2 = child_read(gmem, 1, OPS_PATTERN(1));

	ASSERT_EQ(read(with_pid, &ev, sizeof(ev)), sizeof(ev));
	ASSERT_EQ(ev.type, KVM_GMEM_EVENT_FAULT);
	ASSERT_EQ(ev.offset, PAGE_SIZE);
	ASSERT_EQ(ev.pid, pid2);
	ASSERT_EQ(ev.origin, KVM_GMEM_ORIGIN_MMAP);
	ASSERT_EQ(ev.vcpu_id, KVM_GMEM_NO_VCPU);

	copy_pattern(gmem, 0, 0);
	copy_pattern(gmem, 1, 1);
	ASSERT_EQ(child_status(pid), 0);
	ASSERT_EQ(child_status(pid2), 0);

	close(plain);
	close(with_pid);
	close(gmem);
	kvm_vm_free(vm);
}

static void guest_sync_value(u64 gpa)
{
	for (;;)
		GUEST_SYNC(READ_ONCE(*(u64 *)gpa));
}

struct sw_vm {
	struct kvm_vm *vm;
	struct kvm_vcpu *vcpu;
	int gmem;
	u64 *shared;
};

/* A software-protected VM, the test page private in a presence gmem. */
static bool sw_vm_create(struct sw_vm *t, void *guest_code)
{
	const struct vm_shape shape = {
		.mode = VM_MODE_DEFAULT,
		.type = KVM_X86_SW_PROTECTED_VM,
	};

	if (!(kvm_check_cap(KVM_CAP_VM_TYPES) & BIT(KVM_X86_SW_PROTECTED_VM)))
		return false;

	t->vm = vm_create_shape_with_one_vcpu(shape, &t->vcpu, guest_code);
	t->gmem = vm_create_guest_memfd(t->vm, OPS_SIZE,
					GUEST_MEMFD_FLAG_PRESENCE);
	vm_mem_add(t->vm, VM_MEM_SRC_ANONYMOUS, OPS_GPA, OPS_SLOT, OPS_NPAGES,
		   KVM_MEM_GUEST_MEMFD, t->gmem, 0);
	virt_map(t->vm, OPS_GPA, OPS_GPA, OPS_NPAGES);
	vm_mem_set_private(t->vm, OPS_GPA, OPS_SIZE);
	t->shared = addr_gpa2hva(t->vm, OPS_GPA);
	vcpu_args_set(t->vcpu, 1, OPS_GPA);
	return true;
}

static u64 run_to_sync(struct kvm_vcpu *vcpu)
{
	struct ucall uc;

	vcpu_run(vcpu);
	TEST_ASSERT_EQ(get_ucall(vcpu, &uc), UCALL_SYNC);
	return uc.args[1];
}

/*
 * Re-arming private memory destroys it: REARM (keep contents) is refused,
 * DISCARD is the way, and a page marked present afterwards reads zeroes --
 * nobody holding the fd can make the guest see its old contents again, nor
 * have COPY fill a page whose old contents survive.
 */
TEST(private_rearm_destroys)
{
	struct sw_vm t;

	if (!sw_vm_create(&t, guest_sync_value))
		SKIP(return, "KVM_X86_SW_PROTECTED_VM not supported");

	copy_pattern(t.gmem, 0, 9);
	ASSERT_EQ(run_to_sync(t.vcpu), OPS_PATTERN(9));

	ASSERT_EQ(op_errno(t.gmem, KVM_MEMORY_PRESENT_REARM, 0, PAGE_SIZE, NULL),
		  EPERM);
	ASSERT_TRUE(page_present(t.gmem, 0));

	gmem_set_present(t.gmem, 0, PAGE_SIZE, KVM_MEMORY_PRESENT_DISCARD);
	ASSERT_FALSE(page_present(t.gmem, 0));
	gmem_presence_assert_exit(t.vcpu, _vcpu_run(t.vcpu), OPS_GPA,
				  KVM_MEMORY_EXIT_FLAG_PRIVATE);
	gmem_set_present(t.gmem, 0, PAGE_SIZE, KVM_MEMORY_PRESENT_MARK);
	ASSERT_EQ(run_to_sync(t.vcpu), 0);

	close(t.gmem);
	kvm_vm_free(t.vm);
}

static void *run_to_sync_thread(void *arg)
{
	struct kvm_vcpu *vcpu = arg;
	struct ucall uc;

	vcpu_run(vcpu);
	if (get_ucall(vcpu, &uc) != UCALL_SYNC)
		return (void *)-1l;
	return (void *)uc.args[1];
}

/*
 * A vCPU waiting for a not-present private page is woken when the page is
 * converted to shared, and reads the shared memory instead.
 */
TEST(conversion_wakes_waiter)
{
	struct sw_vm t;
	pthread_t th;
	void *ret;

	if (!sw_vm_create(&t, guest_sync_value))
		SKIP(return, "KVM_X86_SW_PROTECTED_VM not supported");

	set_policy(t.vm, KVM_GMEM_PRESENCE_WAIT);
	t.shared[0] = OPS_PATTERN(5);
	pthread_create(&th, NULL, run_to_sync_thread, t.vcpu);
	ASSERT_TRUE(wait_stat(t.gmem, waits, 1));
	usleep(100000);

	vm_mem_set_shared(t.vm, OPS_GPA, PAGE_SIZE);
	if (!join_within(th, 10, &ret)) {
		/* Don't leave the vCPU asleep: fill the page, then fail. */
		copy_pattern(t.gmem, 0, 0);
		pthread_join(th, NULL);
		ASSERT_TRUE(0 && "the waiting vCPU was not woken");
	}
	ASSERT_EQ((u64)ret, OPS_PATTERN(5));
	ASSERT_FALSE(page_present(t.gmem, 0));

	close(t.gmem);
	kvm_vm_free(t.vm);
}

static void guest_read_first(u64 gpa)
{
	READ_ONCE(*(u64 *)gpa);
	GUEST_DONE();
}

static void *run_once_thread(void *arg)
{
	struct kvm_vcpu *vcpu = arg;

	return (void *)(long)(__vcpu_run(vcpu) ? -errno : 0);
}

/*
 * Changing the policy wakes a vCPU waiting in the kernel: from WAIT to EXIT
 * it exits with the not-present memory fault.
 */
TEST(policy_change_wakes_waiter)
{
	struct ops_vm t;
	pthread_t th;
	void *ret;

	ops_vm_create(&t, guest_read_first);
	set_policy(t.vm, KVM_GMEM_PRESENCE_WAIT);
	pthread_create(&th, NULL, run_once_thread, t.vcpu);
	ASSERT_TRUE(wait_stat(t.gmem, waits, 1));
	usleep(100000);

	set_policy(t.vm, KVM_GMEM_PRESENCE_EXIT);
	if (!join_within(th, 10, &ret)) {
		copy_pattern(t.gmem, 0, 0);
		pthread_join(th, NULL);
		ASSERT_TRUE(0 && "the waiting vCPU was not woken");
	}
	errno = -(long)ret;
	gmem_presence_assert_exit(t.vcpu, -1, OPS_GPA, 0);

	copy_pattern(t.gmem, 0, 0);
	vcpu_run(t.vcpu);
	gmem_presence_assert_done(t.vcpu);
	ops_vm_free(&t);
}

/*
 * Helpers sleeping on pages 2 MiB apart (a power-of-two stride) don't share
 * a wait queue: populating one page visits no other page's waiter.
 */
TEST(wait_queues_hashed)
{
	const int nr = 8, stride = SZ_2M / PAGE_SIZE;
	const u64 size = (u64)nr * SZ_2M;
	struct kvm_vm *vm = vm_create_barebones();
	pid_t pid[8];
	int gmem, i;

	gmem = vm_create_guest_memfd(vm, size, shared_flags);
	for (i = 0; i < nr; i++) {
		pid[i] = fork();
		if (!pid[i]) {
			u64 *m = mmap(NULL, size, PROT_READ, MAP_SHARED, gmem, 0);

			if (m == MAP_FAILED)
				_exit(2);
			_exit(READ_ONCE(m[(u64)i * stride * PAGE_SIZE / 8]) ==
			      OPS_PATTERN(i) ? 0 : 1);
		}
	}
	ASSERT_TRUE(wait_stat(gmem, waits, nr));
	usleep(100000);

	for (i = 0; i < nr; i++) {
		copy_pattern(gmem, (u64)i * stride, i);
		ASSERT_EQ(child_status(pid[i]), 0);
	}
	ksft_print_msg("wakeups %llu, waiters visited for other pages %llu\n",
		       (unsigned long long)gmem_presence_stats(gmem).wakeups,
		       (unsigned long long)gmem_presence_stats(gmem).wake_misses);
	ASSERT_EQ(gmem_presence_stats(gmem).wake_misses, 0);

	close(gmem);
	kvm_vm_free(vm);
}

static bool write_file(const char *path, const char *val)
{
	int fd = open(path, O_WRONLY);
	bool ok;

	if (fd < 0)
		return false;
	ok = write(fd, val, strlen(val)) == (ssize_t)strlen(val);
	close(fd);
	return ok;
}

/* Kernel log lines logged since @fd was opened at the end, with @needle. */
static int kmsg_count(int fd, const char *needle)
{
	char line[1024];
	ssize_t n;
	int hits = 0;

	while ((n = read(fd, line, sizeof(line) - 1)) > 0) {
		line[n] = 0;
		hits += !!strstr(line, needle);
	}
	return hits;
}

/*
 * The record for a page can't be allocated (fault injection fails the
 * faulting task's next slab allocation): the access backs off and retries
 * -- no SIGBUS, no VM_FAULT_OOM leaking to the fault handler -- raises its
 * record on the retry and completes with the right contents.
 */
TEST(record_alloc_failure_retries)
{
	const char *knob = "/sys/kernel/debug/failslab/ignore-gfp-wait";
	struct kvm_vm *vm = vm_create_barebones();
	int gmem, kmsg;
	pid_t pid;

	if (access("/proc/self/fail-nth", W_OK) || access(knob, W_OK))
		SKIP(goto out, "no slab fault injection (CONFIG_FAILSLAB)");

	gmem = vm_create_guest_memfd(vm, OPS_SIZE, shared_flags);
	gmem_set_present(gmem, 0, PAGE_SIZE, KVM_MEMORY_PRESENT_MARK);
	ASSERT_TRUE(write_file(knob, "N"));
	kmsg = open("/dev/kmsg", O_RDONLY | O_NONBLOCK);
	ASSERT_GE(kmsg, 0);
	lseek(kmsg, 0, SEEK_END);

	pid = fork();
	if (!pid) {
		u64 *m = mmap(NULL, OPS_SIZE, PROT_READ, MAP_SHARED, gmem, 0);
		char nth[16] = "";
		int fd;
		u64 v;

		if (m == MAP_FAILED)
			_exit(2);
		/* Page tables in place: the record is the first allocation. */
		READ_ONCE(m[0]);
		fd = open("/proc/thread-self/fail-nth", O_RDWR);
		if (fd < 0 || write(fd, "1", 1) != 1)
			_exit(3);
		v = READ_ONCE(m[PAGE_SIZE / 8]);
		/* 0: the injected failure was consumed on the way. */
		if (pread(fd, nth, sizeof(nth) - 1, 0) <= 0 || atoi(nth))
			_exit(4);
		_exit(v == OPS_PATTERN(1) ? 0 : 1);
	}

	ASSERT_TRUE(wait_stat(gmem, notifications, 1));
	ASSERT_TRUE(wait_stat(gmem, waits, 1));
	copy_pattern(gmem, 1, 1);
	ASSERT_EQ(child_status(pid), 0);
	ASSERT_TRUE(write_file(knob, "Y"));
	ASSERT_EQ(kmsg_count(kmsg, "VM_FAULT_OOM"), 0);
	ASSERT_GE(gmem_presence_stats(gmem).faults, 2);

	close(kmsg);
	close(gmem);
out:
	kvm_vm_free(vm);
}

TEST_HARNESS_MAIN
