// SPDX-License-Identifier: GPL-2.0-only
/*
 * guest_memfd presence: an ioctl fuzzer for the uAPI, and who may do what.
 *
 * fuzz: random and adversarial calls of KVM_SET_MEMORY_PRESENT,
 * KVM_GET_MEMORY_PRESENT, KVM_GMEM_GET_NOTIFY_FD and KVM_GMEM_PRESENCE_STATS
 * (structure contents, sizes and directions encoded in the ioctl number,
 * flags, reserved fields, offsets and lengths that overflow, are unaligned
 * or reach past the end, source and structure pointers that are NULL,
 * unmapped, read-only, kernel addresses or a not-present page of a
 * guest_memfd's own mapping), on presence guest_memfds (shared, private,
 * bound to a running VM or not), on a guest_memfd without presence and on
 * fds of other kinds; reads of the notification fd with odd lengths and
 * buffers; KVM_CREATE_GUEST_MEMFD, KVM_CHECK_EXTENSION and KVM_ENABLE_CAP of
 * the presence flag and capability on the VM fd.  Meanwhile two vCPUs fault
 * on the bound guest_memfd and a thread serves their records.  Every call
 * must succeed or fail with an errno that api.rst documents for it (the
 * table below); some results are checked further (done, bitmaps, records,
 * returned fds, the capability oracle).  A call that does not return within
 * 20 s is a hang.
 *
 *   -s SEED    the call sequence (default: from the clock, printed)
 *   -n CALLS   number of calls (default 15000)
 *   -d SECS    stop after this long even if CALLS are not done (default 15)
 *
 * The other subtests: a process holding only a notification fd can read
 * records and do nothing else with it; a process without the guest_memfd
 * (another uid, no fds) reaches neither the memory nor the presence state;
 * a notification fd outliving its VM and guest_memfd reads end of file;
 * a read() into a buffer that is only partly writable loses no record.
 */
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/wait.h>

#include <linux/falloc.h>
#include <linux/kvm.h>
#include <linux/sizes.h>

#include "guest_memfd_presence.h"
#include "kvm_util.h"
#include "processor.h"
#include "test_util.h"
#include "kselftest_harness.h"

#define FZ_GPA		SZ_4G
#define FZ_SLOT		1
#define FZ_NPAGES	64
#define FZ_SIZE		(FZ_NPAGES * PAGE_SIZE)
/* B is larger: marking all of it takes long enough for a signal to come. */
#define FZ_B_NPAGES	8192
#define FZ_B_SIZE	((u64)FZ_B_NPAGES * PAGE_SIZE)
#define FZ_NVCPUS	2

static u64 opt_seed;
static unsigned long opt_calls = 15000;
static unsigned int opt_seconds = 15;

static const u64 shared_flags = GUEST_MEMFD_FLAG_MMAP |
				GUEST_MEMFD_FLAG_INIT_SHARED |
				GUEST_MEMFD_FLAG_PRESENCE;

/* ---------------------------------------------------------------- guest */

static u64 g_npages;

static void guest_code(u64 seed)
{
	u64 x = seed | 1, n;

	for (n = 1;; n++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		READ_ONCE(*(volatile u64 *)(FZ_GPA + (x % g_npages) * PAGE_SIZE));
		if (!(n % 64))
			GUEST_SYNC(n);
	}
}

/* ------------------------------------------------------------ the setup */

enum fd_kind {
	FD_GMEM,	/* presence guest_memfd */
	FD_PLAIN,	/* guest_memfd without presence */
	FD_NOTIFY,
	FD_OTHER,	/* eventfd, pipe, /dev/null, memfd: no such ioctl */
	FD_VM,
	FD_VCPU,
	FD_SYS,		/* /dev/kvm */
	FD_CLOSED,
	NR_FD_KINDS,
};

static const char * const kind_name[] = {
	"presence gmem", "plain gmem", "notify fd", "other fd", "VM fd",
	"vCPU fd", "/dev/kvm", "closed fd",
};

struct fz {
	struct kvm_vm *vm, *pvm;
	struct kvm_vcpu *vcpu[FZ_NVCPUS + 1];	/* the last one never runs */
	struct kvm_vcpu *pvcpu;
	pthread_t vcpu_th[FZ_NVCPUS], server_th, wd_th;
	int gmem_a, gmem_b, gmem_c, plain, nfd_a, nfd_fuzz;
	u64 *map_a, *map_b;
	int others[4], sysfd, closed_fd;
	u8 *buf, *ro, *none;
	u64 unmapped;
	volatile int stop_vcpus, stop_server, stop_wd;
	volatile u64 call_start_ns;
	char call_desc[256];
	u64 seed;

	unsigned long calls, by_kind[NR_FD_KINDS], ok, errs[200];
	unsigned long finishes, rotations, notify_fds, records, served;
	unsigned long exits, eintr_run, creates, caps;
	/* B or C finished: fuzzed so for a while, then replaced. */
	int finished[3];
};

static struct fz *F;
static __thread u64 rs;

static u64 rnd(void)
{
	return gmem_presence_rand(&rs);
}

static void noop_handler(int sig)
{
}

static void sleep_us(u64 us)
{
	struct timespec ts = { .tv_sec = us / 1000000, .tv_nsec = us % 1000000 * 1000 };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

static bool join_within(pthread_t th, int secs, void **ret)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += secs;
	return !pthread_timedjoin_np(th, ret, &ts);
}

static void mark_page(int gmem, u64 page)
{
	struct kvm_memory_present a = {
		.offset = page * PAGE_SIZE,
		.size = PAGE_SIZE,
		.op = KVM_MEMORY_PRESENT_MARK,
	};

	/* EINTR can't come for a single page; finished tracking is fine. */
	TEST_ASSERT(!ioctl(gmem, KVM_SET_MEMORY_PRESENT, &a),
		    "MARK page %llu: errno %d", (unsigned long long)page, errno);
}

static void *vcpu_thread(void *arg)
{
	long id = (long)arg;
	struct kvm_vcpu *vcpu = F->vcpu[id];
	struct kvm_run *run = vcpu->run;
	struct ucall uc;
	int r;

	for (;;) {
		r = __vcpu_run(vcpu);
		if (r == -1 && errno == EINTR) {
			F->eintr_run++;
			continue;
		}
		if (r == -1 && errno == EFAULT &&
		    run->exit_reason == KVM_EXIT_MEMORY_FAULT) {
			TEST_ASSERT(run->memory_fault.flags ==
				    KVM_MEMORY_EXIT_FLAG_NOT_PRESENT,
				    "memory fault exit flags %#llx",
				    run->memory_fault.flags);
			__atomic_add_fetch(&F->exits, 1, __ATOMIC_RELAXED);
			/* The server fills it, from the record. */
			sleep_us(1000);
			continue;
		}
		TEST_ASSERT(!r, "KVM_RUN: errno %d, exit %s", errno,
			    exit_reason_str(run->exit_reason));
		switch (get_ucall(vcpu, &uc)) {
		case UCALL_SYNC:
			if (F->stop_vcpus)
				return NULL;
			break;
		case UCALL_ABORT:
			REPORT_GUEST_ASSERT(uc);
			break;
		default:
			TEST_FAIL("unexpected exit %s",
				  exit_reason_str(run->exit_reason));
		}
	}
}

/* Serves guest_memfd A: every record's page is marked present. */
static void *server_thread(void *arg)
{
	struct kvm_gmem_presence_event ev[16];
	struct pollfd pfd = { .fd = F->nfd_a, .events = POLLIN };
	ssize_t n;
	int i;

	while (!F->stop_server) {
		poll(&pfd, 1, 10);
		n = read(F->nfd_a, ev, sizeof(ev));
		if (n <= 0) {
			TEST_ASSERT(n < 0 && errno == EAGAIN,
				    "server read: %zd errno %d", n, errno);
			continue;
		}
		for (i = 0; i < n / sizeof(ev[0]); i++) {
			TEST_ASSERT(ev[i].type == KVM_GMEM_EVENT_FAULT &&
				    ev[i].offset < FZ_SIZE,
				    "record type %u offset %#llx", ev[i].type,
				    ev[i].offset);
			mark_page(F->gmem_a, ev[i].offset / PAGE_SIZE);
			__atomic_add_fetch(&F->served, 1, __ATOMIC_RELAXED);
		}
	}
	return NULL;
}

/* A call that doesn't come back is a hang: say which. */
static void *watchdog_thread(void *arg)
{
	u64 t;

	while (!F->stop_wd) {
		sleep_us(100000);
		t = F->call_start_ns;
		TEST_ASSERT(!t || gmem_presence_now_ns() - t < 20000000000ull,
			    "call %lu has not returned for 20 s: %s", F->calls,
			    F->call_desc);
	}
	return NULL;
}

static void fz_setup(void)
{
	const struct vm_shape protected_shape = {
		.mode = VM_MODE_DEFAULT,
		.type = KVM_X86_SW_PROTECTED_VM,
	};
	struct sigaction sa = { .sa_handler = noop_handler };
	sigset_t set;
	int p[2];
	long v;

	F = calloc(1, sizeof(*F));
	TEST_ASSERT(F, "calloc");
	F->seed = opt_seed;
	rs = opt_seed;

	F->vm = vm_create_with_vcpus(FZ_NVCPUS + 1, guest_code, F->vcpu);
	F->gmem_a = vm_create_guest_memfd(F->vm, FZ_SIZE, shared_flags);
	F->map_a = kvm_mmap(FZ_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED,
			    F->gmem_a);
	vm_set_user_memory_region2(F->vm, FZ_SLOT, KVM_MEM_GUEST_MEMFD, FZ_GPA,
				   FZ_SIZE, F->map_a, F->gmem_a, 0);
	virt_map(F->vm, FZ_GPA, FZ_GPA, FZ_NPAGES);
	g_npages = FZ_NPAGES;
	sync_global_to_guest(F->vm, g_npages);
	for (v = 0; v < FZ_NVCPUS + 1; v++)
		vcpu_args_set(F->vcpu[v], 1, rnd());
	vm_enable_cap(F->vm, KVM_CAP_GUEST_MEMFD_PRESENCE, KVM_GMEM_PRESENCE_WAIT);

	F->gmem_b = vm_create_guest_memfd(F->vm, FZ_B_SIZE, shared_flags);
	F->map_b = kvm_mmap(FZ_B_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED,
			    F->gmem_b);
	F->plain = vm_create_guest_memfd(F->vm, FZ_SIZE, GUEST_MEMFD_FLAG_MMAP);
	F->gmem_c = -1;
	if (kvm_check_cap(KVM_CAP_VM_TYPES) & BIT(KVM_X86_SW_PROTECTED_VM)) {
		F->pvm = vm_create_shape_with_one_vcpu(protected_shape,
						       &F->pvcpu, guest_code);
		F->gmem_c = vm_create_guest_memfd(F->pvm, FZ_SIZE,
						  GUEST_MEMFD_FLAG_PRESENCE);
	}
	F->nfd_a = gmem_notify_fd(F->gmem_a, O_NONBLOCK | KVM_GMEM_NOTIFY_PID);
	F->nfd_fuzz = gmem_notify_fd(F->gmem_a, O_NONBLOCK);
	TEST_ASSERT(F->nfd_a >= 0 && F->nfd_fuzz >= 0, "KVM_GMEM_GET_NOTIFY_FD");

	F->others[0] = eventfd(0, 0);
	TEST_ASSERT(!pipe(p), "pipe");
	F->others[1] = p[0];
	F->others[2] = open("/dev/null", O_RDWR);
	F->others[3] = memfd_create("fuzz", 0);
	F->sysfd = open_kvm_dev_path_or_exit();
	F->closed_fd = dup(F->others[0]);
	close(F->closed_fd);
	TEST_ASSERT(F->others[0] >= 0 && F->others[2] >= 0 &&
		    F->others[3] >= 0, "other fds");

	/* Buffers: two RW pages, then read-only, then PROT_NONE. */
	F->buf = mmap(NULL, 5 * PAGE_SIZE, PROT_READ | PROT_WRITE,
		      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	TEST_ASSERT(F->buf != MAP_FAILED, "mmap");
	memset(F->buf, 0, 5 * PAGE_SIZE);
	F->ro = F->buf + 2 * PAGE_SIZE;
	F->none = F->buf + 3 * PAGE_SIZE;
	mprotect(F->ro, PAGE_SIZE, PROT_READ);
	mprotect(F->none, PAGE_SIZE, PROT_NONE);
	F->unmapped = (u64)F->buf + 4 * PAGE_SIZE;
	munmap((void *)F->unmapped, PAGE_SIZE);

	/* SIGALRM interrupts the fuzzer (this thread) only. */
	sigaction(SIGALRM, &sa, NULL);
	sigemptyset(&set);
	sigaddset(&set, SIGALRM);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	for (v = 0; v < FZ_NVCPUS; v++)
		pthread_create(&F->vcpu_th[v], NULL, vcpu_thread, (void *)v);
	pthread_create(&F->server_th, NULL, server_thread, NULL);
	pthread_create(&F->wd_th, NULL, watchdog_thread, NULL);
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);
}

/* ---------------------------------------------------------- the values */

static u64 pick_offset(u64 size)
{
	u64 npages = size / PAGE_SIZE;

	switch (rnd() % 12) {
	case 0: return 0;
	case 1: return size;
	case 2: return size - PAGE_SIZE;
	case 3: return size + PAGE_SIZE;
	case 4: return (rnd() % npages) * PAGE_SIZE + 1 + rnd() % (PAGE_SIZE - 1);
	case 5: return 1ull << 63;
	case 6: return ~0ull;
	case 7: return -PAGE_SIZE;
	case 8: return rnd();
	case 9: return (rnd() % (2 * npages)) * PAGE_SIZE;
	default: return (rnd() % npages) * PAGE_SIZE;
	}
}

static u64 pick_size(u64 offset, u64 size)
{
	switch (rnd() % 12) {
	case 0: return 0;
	case 1: return size;
	case 2: return size - offset;
	case 3: return size - offset + PAGE_SIZE;
	case 4: return PAGE_SIZE + 1 + rnd() % (PAGE_SIZE - 1);
	case 5: return -PAGE_SIZE;
	case 6: return 1ull << 63;
	case 7: return rnd() & ~(PAGE_SIZE - 1);
	case 8: return (1 + rnd() % (size / PAGE_SIZE)) * PAGE_SIZE;
	default: return (1 + rnd() % 4) * PAGE_SIZE;
	}
}

/* A page of guest_memfd A's mapping, likely not present. */
static u64 a_page(void)
{
	return (u64)F->map_a + (rnd() % FZ_NPAGES) * PAGE_SIZE;
}

/* A pointer to read @len bytes from (or write them to). */
static u64 pick_ptr(size_t len, bool *in_buf)
{
	*in_buf = false;
	switch (rnd() % 16) {
	case 0: return 0;
	case 1: return F->unmapped;
	case 2: return 0xffff888000000000ull;
	case 3: return 0xffffffff81000000ull;
	case 4: return 0x8000000000000000ull;
	case 5: return (u64)F->ro;
	case 6: return (u64)F->none;
	/* Straddling into the read-only or the PROT_NONE page. */
	case 7: return (u64)F->ro - 8;
	case 8: return (u64)F->none - len / 2;
	case 9: return a_page();
	case 10: return 8 + rnd() % 4000;
	default:
		*in_buf = true;
		return (u64)F->buf + rnd() % (2 * PAGE_SIZE - len + 1);
	}
}

static u64 pick_reserved(void)
{
	return rnd() % 8 ? 0 : (rnd() % 2 ? 1 : rnd());
}

/* ---------------------------------------------------------- the calls */

struct target {
	int fd;
	enum fd_kind kind;
	int gmem;		/* which presence gmem: 0 A, 1 B, 2 C */
};

static struct target pick_target(void)
{
	u64 r = rnd() % 100;

	if (r < 40)
		return (struct target){ F->gmem_a, FD_GMEM, 0 };
	if (r < 55)
		return (struct target){ F->gmem_b, FD_GMEM, 1 };
	if (r < 65 && F->gmem_c >= 0)
		return (struct target){ F->gmem_c, FD_GMEM, 2 };
	if (r < 70)
		return (struct target){ F->plain, FD_PLAIN, -1 };
	if (r < 75)
		return (struct target){ F->nfd_fuzz, FD_NOTIFY, -1 };
	if (r < 85)
		return (struct target){ F->others[rnd() % 4], FD_OTHER, -1 };
	if (r < 90)
		return (struct target){ F->vm->fd, FD_VM, -1 };
	if (r < 93)
		return (struct target){ F->vcpu[FZ_NVCPUS]->fd, FD_VCPU, -1 };
	if (r < 96)
		return (struct target){ F->sysfd, FD_SYS, -1 };
	return (struct target){ F->closed_fd, FD_CLOSED, -1 };
}

static const unsigned long valid_cmds[] = {
	KVM_SET_MEMORY_PRESENT, KVM_GET_MEMORY_PRESENT,
	KVM_GMEM_GET_NOTIFY_FD, KVM_GMEM_PRESENCE_STATS,
};

/* The ioctl number: a valid one, or one with another size or direction. */
static unsigned long pick_cmd(void)
{
	unsigned long cmd = valid_cmds[rnd() % 4];
	unsigned int size = _IOC_SIZE(cmd), dir = _IOC_DIR(cmd), nr = _IOC_NR(cmd);

	if (rnd() % 100 < 80)
		return cmd;
	switch (rnd() % 5) {
	case 0:
		size += 1 + rnd() % 16;
		break;
	case 1:
		size = rnd() % size;
		break;
	case 2:
		size = rnd() % (1 << _IOC_SIZEBITS);
		break;
	case 3:
		dir = rnd() % 4;
		break;
	default:
		nr = 0xda + rnd() % 6;	/* unused numbers */
		break;
	}
	return _IOC(dir, KVMIO, nr, size);
}

static bool errno_in(int e, const int *set, int n)
{
	int i;

	for (i = 0; i < n; i++)
		if (set[i] == e)
			return true;
	return false;
}

#define ALLOWED(...)	((const int[]){ __VA_ARGS__ })
#define NR_ARGS(...)	(sizeof((const int[]){ __VA_ARGS__ }) / sizeof(int))
#define CHECK_ERRNO(e, ...)						\
	TEST_ASSERT(errno_in(e, ALLOWED(__VA_ARGS__), NR_ARGS(__VA_ARGS__)), \
		    "call %lu: undocumented errno %d (%s): %s", F->calls, e, \
		    strerror(e), F->call_desc)

#define DONE_CANARY	0xd0d0d0d0d0d0d0d0ull

/*
 * The documented errnos (api.rst, 4.146-4.149 and the guest_memfd ioctl
 * class) of a call on a presence guest_memfd, and what it must have left.
 */
static void check_set(long r, int e, struct kvm_memory_present *a,
		      bool in_buf, bool arg_ro)
{
	u64 done = in_buf ? a->done : DONE_CANARY;

	if (!r && !in_buf)
		return;
	if (!r) {
		TEST_ASSERT(a->op >= KVM_MEMORY_PRESENT_MARK &&
			    a->op <= KVM_MEMORY_PRESENT_FINISH && !a->flags,
			    "call %lu succeeded: %s", F->calls, F->call_desc);
		TEST_ASSERT(!in_buf || done == a->size,
			    "call %lu: done %#llx, size %#llx: %s", F->calls,
			    (unsigned long long)done, a->size, F->call_desc);
		return;
	}
	CHECK_ERRNO(e, EINVAL, EFAULT, EEXIST, EHWPOISON, EPERM, EBUSY, EINTR,
		    ENOMEM);
	if (!in_buf || arg_ro)
		return;
	if (e == EINVAL) {
		/* Rejected arguments: done not written (or 0 for FINISH). */
		TEST_ASSERT(done == DONE_CANARY || !done,
			    "call %lu: EINVAL with done %#llx: %s", F->calls,
			    (unsigned long long)done, F->call_desc);
	} else if (e == EPERM || e == EBUSY) {
		TEST_ASSERT(!done, "call %lu: errno %d, done %#llx: %s",
			    F->calls, e, (unsigned long long)done, F->call_desc);
	} else if (done != DONE_CANARY) {
		TEST_ASSERT(done < a->size && !(done % PAGE_SIZE),
			    "call %lu: errno %d, done %#llx of %#llx: %s",
			    F->calls, e, (unsigned long long)done, a->size,
			    F->call_desc);
	}
}

static void check_notify_fd(int fd, u32 flags)
{
	char path[64], link[128];
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = readlink(path, link, sizeof(link) - 1);
	TEST_ASSERT(n > 0, "readlink %s", path);
	link[n] = 0;
	TEST_ASSERT(strstr(link, "kvm-gmem-notify"), "new fd is %s", link);
	TEST_ASSERT(!!(fcntl(fd, F_GETFL) & O_NONBLOCK) == !!(flags & O_NONBLOCK),
		    "O_NONBLOCK of the new fd, flags %#x", flags);
	TEST_ASSERT(!!(fcntl(fd, F_GETFD) & FD_CLOEXEC) == !!(flags & O_CLOEXEC),
		    "FD_CLOEXEC of the new fd, flags %#x", flags);
	TEST_ASSERT((fcntl(fd, F_GETFL) & O_ACCMODE) == O_RDONLY,
		    "the notification fd is not read-only");
	close(fd);
	F->notify_fds++;
}

/* Tracking of B or C finished: replace the guest_memfd. */
static void rotate(int which)
{
	if (which == 1) {
		kvm_munmap(F->map_b, FZ_B_SIZE);
		close(F->gmem_b);
		F->gmem_b = vm_create_guest_memfd(F->vm, FZ_B_SIZE, shared_flags);
		F->map_b = kvm_mmap(FZ_B_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED,
				    F->gmem_b);
	} else {
		close(F->gmem_c);
		F->gmem_c = vm_create_guest_memfd(F->pvm, FZ_SIZE,
						  GUEST_MEMFD_FLAG_PRESENCE);
	}
	F->rotations++;
}

/* KVM_SET_MEMORY_PRESENT of [0, @size), resumed after signals (EINTR). */
static void op_all(int gmem, u64 size, u32 op)
{
	u64 offset = 0, done;
	int r;

	while (offset < size) {
		r = __gmem_set_present(gmem, offset, size - offset, op, NULL, &done);
		TEST_ASSERT(!r || (errno == EINTR && done < size - offset),
			    "op %u [%#llx, +%#llx): errno %d done %#llx", op,
			    (unsigned long long)offset,
			    (unsigned long long)(size - offset), errno,
			    (unsigned long long)done);
		offset += done;
	}
}

/*
 * Now and then fill B or C and end tracking, so that the finished state is
 * fuzzed too; replace it after a while.
 */
static void finish_or_rotate(void)
{
	int which = 1 + rnd() % 2, g;

	for (g = 1; g < 3; g++) {
		if (F->finished[g] && !--F->finished[g]) {
			TEST_ASSERT(gmem_presence_stats(g == 1 ? F->gmem_b :
					F->gmem_c).flags == KVM_GMEM_PRESENCE_FINISHED,
				    "not finished");
			rotate(g);
		}
	}
	if (rnd() % 500 || (which == 2 && F->gmem_c < 0) || F->finished[which])
		return;
	g = which == 1 ? F->gmem_b : F->gmem_c;
	op_all(g, which == 1 ? FZ_B_SIZE : FZ_SIZE, KVM_MEMORY_PRESENT_MARK);
	/* FINISH is not interrupted by signals. */
	gmem_set_present(g, 0, which == 1 ? FZ_B_SIZE : FZ_SIZE,
			 KVM_MEMORY_PRESENT_FINISH);
	F->finishes++;
	F->finished[which] = 300;
}

static void fuzz_gmem_ioctl(void)
{
	struct target t = pick_target();
	unsigned long cmd = pick_cmd();
	bool in_buf, arg_ro, valid;
	struct kvm_memory_present *a;
	struct kvm_memory_present_bitmap *bm;
	struct kvm_gmem_notify_fd *nf;
	struct kvm_gmem_presence_stats *st;
	size_t len = min_t(size_t, max_t(size_t, _IOC_SIZE(cmd), 64), PAGE_SIZE);
	u64 arg, fsize = t.gmem == 1 ? FZ_B_SIZE : FZ_SIZE, bits_ptr = 0;
	bool bits_in_buf = false;
	long r;
	int e, i;

	arg = pick_ptr(len, &in_buf);
	arg_ro = arg >= (u64)F->ro && arg < (u64)F->ro + PAGE_SIZE;
	valid = cmd == valid_cmds[0] || cmd == valid_cmds[1] ||
		cmd == valid_cmds[2] || cmd == valid_cmds[3];

	if (in_buf) {
		/* Random bytes, then an adversarial structure. */
		for (i = 0; i < len / 8; i++)
			((u64 *)arg)[i] = rnd();
		a = (void *)arg;
		bm = (void *)arg;
		nf = (void *)arg;
		if (cmd == KVM_SET_MEMORY_PRESENT) {
			a->offset = pick_offset(fsize);
			a->size = pick_size(a->offset, fsize);
			a->op = rnd() % 8 ? 1 + rnd() % 5 :
				(rnd() % 2 ? rnd() % 8 : (u32)rnd());
			a->flags = rnd() % 8 ? 0 : 1u << (rnd() % 32);
			a->src = a->op == KVM_MEMORY_PRESENT_COPY || !(rnd() % 8) ?
				 pick_ptr(PAGE_SIZE, &bits_in_buf) : 0;
			/* COPY from A's own not-present mapping, now and then. */
			if (a->op == KVM_MEMORY_PRESENT_COPY && !(rnd() % 6))
				a->src = a_page();
			a->done = DONE_CANARY;
			for (i = 0; i < 3; i++)
				a->reserved[i] = pick_reserved();
			/* Keep A tracked: the vCPUs fault on it. */
			if (t.gmem == 0 && a->op == KVM_MEMORY_PRESENT_FINISH &&
			    !a->offset && a->size == fsize)
				a->size -= PAGE_SIZE;
		} else if (cmd == KVM_GET_MEMORY_PRESENT) {
			bm->offset = pick_offset(fsize);
			bm->size = pick_size(bm->offset, fsize);
			bits_ptr = pick_ptr(16, &bits_in_buf);
			/* The bitmap must not overlap the structure. */
			if (bits_in_buf)
				bits_ptr = (u64)F->buf + ((arg - (u64)F->buf) <
					   PAGE_SIZE ? PAGE_SIZE + 512 : 64);
			bm->bitmap = bits_ptr;
			bm->flags = rnd() % 8 ? 0 : rnd();
			for (i = 0; i < 4; i++)
				bm->reserved[i] = pick_reserved();
			if (bits_in_buf)
				memset((void *)bits_ptr, 0xee, 16);
		} else if (cmd == KVM_GMEM_GET_NOTIFY_FD) {
			nf->flags = rnd() % 4 ? (rnd() % 2 ? O_NONBLOCK : 0) |
				    (rnd() % 2 ? O_CLOEXEC : 0) |
				    (rnd() % 2 ? KVM_GMEM_NOTIFY_PID : 0) :
				    (u32)rnd();
			nf->pad = pick_reserved();
			for (i = 0; i < 3; i++)
				nf->reserved[i] = pick_reserved();
		}
	}

	snprintf(F->call_desc, sizeof(F->call_desc),
		 "ioctl(%s, %#lx, %#llx) [%llx %llx %llx %llx %llx %llx]",
		 kind_name[t.kind], cmd, (unsigned long long)arg,
		 in_buf ? ((unsigned long long *)arg)[0] : 0,
		 in_buf ? ((unsigned long long *)arg)[1] : 0,
		 in_buf ? ((unsigned long long *)arg)[2] : 0,
		 in_buf ? ((unsigned long long *)arg)[3] : 0,
		 in_buf ? ((unsigned long long *)arg)[4] : 0,
		 in_buf ? ((unsigned long long *)arg)[5] : 0);
	F->call_start_ns = gmem_presence_now_ns();
	r = ioctl(t.fd, cmd, arg);
	e = r < 0 ? errno : 0;
	F->call_start_ns = 0;
	F->calls++;
	F->by_kind[t.kind]++;
	if (r >= 0)
		F->ok++;
	else
		F->errs[e < 200 ? e : 0]++;

	switch (t.kind) {
	case FD_GMEM:
		break;
	case FD_CLOSED:
		TEST_ASSERT(r == -1, "call %lu succeeded: %s", F->calls, F->call_desc);
		CHECK_ERRNO(e, EBADF);
		return;
	case FD_VCPU:
	case FD_SYS:
		TEST_ASSERT(r == -1, "call %lu succeeded: %s", F->calls, F->call_desc);
		CHECK_ERRNO(e, EINVAL);
		return;
	default:
		TEST_ASSERT(r == -1, "call %lu succeeded: %s", F->calls, F->call_desc);
		CHECK_ERRNO(e, ENOTTY);
		return;
	}

	if (!valid) {
		TEST_ASSERT(r == -1, "call %lu succeeded: %s", F->calls, F->call_desc);
		CHECK_ERRNO(e, ENOTTY);
		return;
	}
	switch (cmd) {
	case KVM_SET_MEMORY_PRESENT:
		a = (void *)arg;
		check_set(r, e, in_buf ? a : NULL, in_buf, arg_ro);
		if (!r && in_buf && a->op == KVM_MEMORY_PRESENT_FINISH &&
		    !F->finished[t.gmem]) {
			F->finishes++;
			F->finished[t.gmem] = 300;
		}
		break;
	case KVM_GET_MEMORY_PRESENT:
		if (r) {
			CHECK_ERRNO(e, EINVAL, EFAULT, EINTR);
			break;
		}
		bm = (void *)arg;
		if (in_buf && bits_in_buf) {
			u64 nr = bm->size / PAGE_SIZE, last = (nr - 1) / 64;
			u64 word = ((u64 *)bits_ptr)[last];

			/* Bits past the range written as zero. */
			TEST_ASSERT(nr % 64 == 0 || !(word >> (nr % 64)),
				    "call %lu: bitmap word %#llx past %llu pages: %s",
				    F->calls, (unsigned long long)word,
				    (unsigned long long)nr, F->call_desc);
		}
		break;
	case KVM_GMEM_GET_NOTIFY_FD:
		if (r < 0) {
			CHECK_ERRNO(e, EINVAL, EFAULT, EMFILE, ENOMEM);
			break;
		}
		nf = (void *)arg;
		if (in_buf || arg_ro)
			check_notify_fd(r, nf->flags);
		else
			close(r);
		break;
	case KVM_GMEM_PRESENCE_STATS:
		if (r) {
			CHECK_ERRNO(e, EFAULT);
			break;
		}
		st = (void *)arg;
		if (in_buf)
			TEST_ASSERT(st->nr_pages == fsize / PAGE_SIZE &&
				    st->nr_present <= st->nr_pages &&
				    st->events_queued <= st->nr_pages &&
				    !(st->flags & ~KVM_GMEM_PRESENCE_FINISHED) &&
				    !st->reserved[0] && !st->reserved[4],
				    "call %lu: stats nr_pages %llu present %llu queued %llu flags %#llx",
				    F->calls, st->nr_pages, st->nr_present,
				    st->events_queued, st->flags);
		break;
	}
}

/* read() of a notification fd of A: odd lengths and buffers. */
static void fuzz_read(void)
{
	static const size_t lens[] = { 0, 1, 47, 48, 49, 96, 4096 };
	size_t len = lens[rnd() % ARRAY_SIZE(lens)];
	struct kvm_gmem_presence_event *ev;
	bool in_buf;
	u64 ptr = pick_ptr(min_t(size_t, len, PAGE_SIZE), &in_buf);
	ssize_t n;
	int e, i;

	if (len > PAGE_SIZE && in_buf)
		ptr = (u64)F->buf;
	snprintf(F->call_desc, sizeof(F->call_desc), "read(notify fd, %#llx, %zu)",
		 (unsigned long long)ptr, len);
	F->call_start_ns = gmem_presence_now_ns();
	n = read(F->nfd_fuzz, (void *)ptr, len);
	e = n < 0 ? errno : 0;
	F->call_start_ns = 0;
	F->calls++;
	F->by_kind[FD_NOTIFY]++;
	if (n < 0) {
		F->errs[e < 200 ? e : 0]++;
		CHECK_ERRNO(e, EINVAL, EFAULT, EAGAIN);
		TEST_ASSERT(e != EINVAL || len < sizeof(*ev),
			    "EINVAL for %zu bytes", len);
		return;
	}
	F->ok++;
	TEST_ASSERT(!(n % sizeof(*ev)) && n <= len && len >= sizeof(*ev),
		    "read %zd of %zu", n, len);
	/* Records taken here are served here, else their vCPU waits. */
	for (i = 0; i < n / sizeof(*ev); i++) {
		ev = (void *)(ptr + i * sizeof(*ev));
		TEST_ASSERT(ev->type == KVM_GMEM_EVENT_FAULT && !ev->flags &&
			    !ev->pid && ev->offset < FZ_SIZE &&
			    !(ev->offset % PAGE_SIZE),
			    "record: type %u flags %#x pid %u offset %#llx",
			    ev->type, ev->flags, ev->pid, ev->offset);
		mark_page(F->gmem_a, ev->offset / PAGE_SIZE);
		F->records++;
	}
}

/* The VM fd's part of the uAPI: the flag, the capability. */
static void fuzz_vm(void)
{
	static const u64 flag_bits[] = {
		GUEST_MEMFD_FLAG_MMAP, GUEST_MEMFD_FLAG_INIT_SHARED,
		GUEST_MEMFD_FLAG_PRESENCE, 1ull << 3, 1ull << 63,
	};
	struct kvm_create_guest_memfd cg = { 0 };
	struct kvm_enable_cap cap = { .cap = KVM_CAP_GUEST_MEMFD_PRESENCE };
	u64 p, fb;
	bool ok;
	long r;
	int i;

	switch (rnd() % 3) {
	case 0:
		for (i = 0; i < ARRAY_SIZE(flag_bits); i++)
			if (rnd() % 2)
				cg.flags |= flag_bits[i];
		cg.size = rnd() % 4 ? (1 + rnd() % 64) * PAGE_SIZE :
			  pick_size(0, 1ull << 32);
		/* Bitmaps of 128 MiB to 2 GiB: room for the VM, not a test. */
		if (cg.size >= 1ull << 42 && cg.size < 1ull << 47)
			cg.size = 1ull << 50;
		if (!(rnd() % 8))
			cg.reserved[rnd() % 6] = 1;
		snprintf(F->call_desc, sizeof(F->call_desc),
			 "KVM_CREATE_GUEST_MEMFD flags %#llx size %#llx",
			 cg.flags, cg.size);
		r = __vm_ioctl(F->vm, KVM_CREATE_GUEST_MEMFD, &cg);
		if (r >= 0) {
			TEST_ASSERT(!(cg.flags & ~(GUEST_MEMFD_FLAG_MMAP |
						   GUEST_MEMFD_FLAG_INIT_SHARED |
						   GUEST_MEMFD_FLAG_PRESENCE)),
				    "created: %s", F->call_desc);
			if (cg.flags & GUEST_MEMFD_FLAG_PRESENCE)
				TEST_ASSERT(gmem_presence_stats(r).nr_pages ==
					    cg.size / PAGE_SIZE, "%s", F->call_desc);
			close(r);
		} else {
			CHECK_ERRNO(errno, EINVAL, ENOMEM);
		}
		F->creates++;
		break;
	case 1:
		TEST_ASSERT_EQ(vm_check_cap(F->vm, KVM_CAP_GUEST_MEMFD_PRESENCE),
			       KVM_GMEM_PRESENCE_EXIT | KVM_GMEM_PRESENCE_WAIT |
			       KVM_GMEM_PRESENCE_ASYNC);
		TEST_ASSERT_EQ(kvm_check_cap(KVM_CAP_GUEST_MEMFD_PRESENCE),
			       KVM_GMEM_PRESENCE_EXIT | KVM_GMEM_PRESENCE_WAIT |
			       KVM_GMEM_PRESENCE_ASYNC);
		F->caps++;
		break;
	default:
		cap.args[0] = rnd() % 4 ? 1ull << (rnd() % 4) : rnd();
		cap.args[1] = rnd() % 3 ? 1ull << (rnd() % 3) : (rnd() % 2 ? 0 : rnd());
		cap.args[2] = rnd() % 8 ? 0 : rnd();
		cap.args[3] = rnd() % 8 ? 0 : rnd();
		cap.flags = rnd() % 8 ? 0 : rnd();
		p = cap.args[0];
		fb = cap.args[1];
		/* The oracle: what the documentation accepts. */
		ok = !cap.flags && !cap.args[2] && !cap.args[3] &&
		     (p == KVM_GMEM_PRESENCE_ASYNC ?
		      fb == KVM_GMEM_PRESENCE_EXIT || fb == KVM_GMEM_PRESENCE_WAIT :
		      (p == KVM_GMEM_PRESENCE_EXIT || p == KVM_GMEM_PRESENCE_WAIT) &&
		      !fb);
		r = __vm_ioctl(F->vm, KVM_ENABLE_CAP, &cap);
		TEST_ASSERT(ok ? !r : r == -1 && errno == EINVAL,
			    "KVM_ENABLE_CAP args %#llx %#llx %#llx %#llx flags %#x: r %ld errno %d",
			    cap.args[0], cap.args[1], cap.args[2], cap.args[3],
			    cap.flags, r, errno);
		F->caps++;
	}
	F->calls++;
	F->by_kind[FD_VM]++;
}

TEST(fuzz)
{
	struct itimerval it = {
		.it_interval = { .tv_usec = 3000 },
		.it_value = { .tv_usec = 3000 },
	};
	u64 t0, el, deadline = opt_seconds * 1000000000ull;
	struct kvm_gmem_presence_stats st;
	u64 bits[FZ_B_NPAGES / 64], i, present;
	int fd, e;

	fz_setup();
	ksft_print_msg("fuzz: seed %llu (rerun with -s %llu), %lu calls, at most %u s\n",
		       (unsigned long long)opt_seed,
		       (unsigned long long)opt_seed, opt_calls, opt_seconds);
	setitimer(ITIMER_REAL, &it, NULL);
	t0 = gmem_presence_now_ns();
	while (F->calls < opt_calls) {
		u64 r = rnd() % 100;

		finish_or_rotate();
		if (r < 85)
			fuzz_gmem_ioctl();
		else if (r < 92)
			fuzz_read();
		else
			fuzz_vm();
		if (!(F->calls % 256) && gmem_presence_now_ns() - t0 > deadline)
			break;
	}
	el = gmem_presence_now_ns() - t0;
	it = (struct itimerval){ 0 };
	setitimer(ITIMER_REAL, &it, NULL);

	/* Wind down: everything of A present, the vCPUs leave. */
	vm_enable_cap(F->vm, KVM_CAP_GUEST_MEMFD_PRESENCE, KVM_GMEM_PRESENCE_WAIT);
	F->stop_vcpus = 1;
	for (i = 0; i < FZ_NVCPUS; i++) {
		gmem_set_present(F->gmem_a, 0, FZ_SIZE, KVM_MEMORY_PRESENT_MARK);
		TEST_ASSERT(join_within(F->vcpu_th[i], 30, NULL),
			    "vCPU %llu not done 30 s after every page was present",
			    (unsigned long long)i);
	}
	F->stop_server = 1;
	pthread_join(F->server_th, NULL);
	F->stop_wd = 1;
	pthread_join(F->wd_th, NULL);

	/* Quiet now: the stats agree with the bitmap, on each guest_memfd. */
	for (fd = 0; fd < 3; fd++) {
		int g = fd == 0 ? F->gmem_a : fd == 1 ? F->gmem_b : F->gmem_c;
		u64 npages = fd == 1 ? FZ_B_NPAGES : FZ_NPAGES;
		struct kvm_memory_present_bitmap bm = {
			.size = npages * PAGE_SIZE,
			.bitmap = (u64)bits,
		};

		if (g < 0)
			continue;
		TEST_ASSERT(!ioctl(g, KVM_GET_MEMORY_PRESENT, &bm), "GET");
		st = gmem_presence_stats(g);
		for (present = 0, i = 0; i < npages; i++)
			present += !!(bits[i / 64] & BIT_ULL(i % 64));
		TEST_ASSERT(st.nr_present == present,
			    "gmem %d: nr_present %llu, bitmap %llu", fd,
			    st.nr_present, (unsigned long long)present);
		TEST_ASSERT(st.events_queued <= st.nr_pages, "queued %llu",
			    st.events_queued);
	}

	ksft_print_msg("fuzz: %lu calls in %llu ms (%llu calls/s), %lu succeeded\n",
		       F->calls, (unsigned long long)el / 1000000,
		       (unsigned long long)(F->calls * 1000000000ull / (el ? el : 1)),
		       F->ok);
	for (i = 0; i < NR_FD_KINDS; i++)
		ksft_print_msg("  on %s: %lu\n", kind_name[i], F->by_kind[i]);
	for (e = 0; e < 200; e++)
		if (F->errs[e])
			ksft_print_msg("  errno %d (%s): %lu\n", e, strerror(e),
				       F->errs[e]);
	ksft_print_msg("  %lu FINISH (guest_memfd fuzzed finished, then replaced), %lu notification fds, %lu records read and %lu served, %lu vCPU exits, %lu KVM_CREATE_GUEST_MEMFD, %lu capability calls\n",
		       F->finishes, F->notify_fds, F->records, F->served,
		       F->exits, F->creates, F->caps);
	ksft_print_msg("FUZZ TOTAL: %lu calls, %llu calls/s, seed %llu\n",
		       F->calls,
		       (unsigned long long)(F->calls * 1000000000ull / (el ? el : 1)),
		       (unsigned long long)opt_seed);
	ASSERT_GT(F->ok, 0);
	ASSERT_GT(F->served + F->records, 0);
}

/* ------------------------------------------------------- who may do what */

/* Close every fd but @keep (and @keep2). */
static void close_all_but(int keep, int keep2)
{
	int fd;

	for (fd = 0; fd < 1024; fd++)
		if (fd != keep && fd != keep2)
			close(fd);
}

static int count_fds(void)
{
	int fd, n = 0;

	for (fd = 0; fd < 1024; fd++)
		n += fcntl(fd, F_GETFD) >= 0;
	return n;
}

static void *touch_page(void *arg)
{
	return (void *)(long)READ_ONCE(*(volatile u64 *)arg);
}

/*
 * A process that never held the VM or the guest_memfd gets only a
 * notification fd (SCM_RIGHTS): it reads records, and nothing else works
 * on that fd -- no presence ioctl, no write, no mmap, no way to reopen it
 * for more.  The guest_memfd's state changes only by its owner.
 */
TEST(notify_fd_only_process)
{
	struct kvm_gmem_presence_stats st;
	struct kvm_vm *vm;
	int sv[2], gmem, nfd, status, i;
	pthread_t th;
	u64 *mem;
	char c;
	pid_t pid;

	ASSERT_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
	pid = fork();
	ASSERT_GE(pid, 0);
	if (!pid) {
		struct kvm_memory_present a = {
			.size = PAGE_SIZE, .op = KVM_MEMORY_PRESENT_MARK,
		};
		struct kvm_gmem_presence_stats cst;
		struct kvm_gmem_presence_event ev;
		struct pollfd pfd;
		char path[64];
		int fd, rfd;

		close_all_but(sv[1], -1);
		fd = gmem_presence_recv_fd(sv[1]);
		if (fd < 0 || count_fds() != 2)
			_exit(10);
		/* Every presence ioctl on it: ENOTTY; nothing else answers. */
		for (i = 0; i < ARRAY_SIZE(valid_cmds); i++)
			if (ioctl(fd, valid_cmds[i], &a) != -1 || errno != ENOTTY)
				_exit(11);
		if (ioctl(fd, KVM_GMEM_PRESENCE_STATS, &cst) != -1 ||
		    ioctl(fd, KVM_CREATE_GUEST_MEMFD, &a) != -1)
			_exit(12);
		if (write(fd, "x", 1) != -1 || errno != EBADF)
			_exit(13);
		if (mmap(NULL, PAGE_SIZE, PROT_READ, MAP_SHARED, fd, 0) !=
		    MAP_FAILED)
			_exit(14);
		if (fcntl(fd, F_SETFL, O_RDWR) || (fcntl(fd, F_GETFL) &
						    O_ACCMODE) != O_RDONLY)
			_exit(15);
		/* Reopening through /proc gives nothing more. */
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		rfd = open(path, O_RDWR);
		if (rfd >= 0 && (ioctl(rfd, KVM_SET_MEMORY_PRESENT, &a) != -1 ||
				 write(rfd, "x", 1) != -1))
			_exit(16);
		if (rfd >= 0)
			close(rfd);
		rfd = open(path, O_RDONLY);
		if (rfd >= 0 && ioctl(rfd, KVM_SET_MEMORY_PRESENT, &a) != -1)
			_exit(17);
		if (rfd >= 0)
			close(rfd);

		/* Records: what it is for. */
		if (write(sv[1], "r", 1) != 1)
			_exit(18);
		pfd = (struct pollfd){ .fd = fd, .events = POLLIN };
		if (poll(&pfd, 1, 20000) != 1 ||
		    read(fd, &ev, sizeof(ev)) != sizeof(ev) ||
		    ev.type != KVM_GMEM_EVENT_FAULT || ev.offset != 3 * PAGE_SIZE ||
		    ev.origin != KVM_GMEM_ORIGIN_MMAP)
			_exit(19);
		if (write(sv[1], "d", 1) != 1)
			_exit(20);
		_exit(0);
	}
	close(sv[1]);

	vm = vm_create_barebones();
	gmem = vm_create_guest_memfd(vm, FZ_SIZE, shared_flags);
	nfd = gmem_notify_fd(gmem, 0);
	ASSERT_GE(nfd, 0);
	gmem_presence_send_fd(sv[0], nfd);
	close(nfd);
	ASSERT_EQ(read(sv[0], &c, 1), 1);
	st = gmem_presence_stats(gmem);
	ASSERT_EQ(st.pages_set + st.pages_cleared + st.notifications, 0);

	/* A fault the holder of the notification fd must see. */
	mem = kvm_mmap(FZ_SIZE, PROT_READ, MAP_SHARED, gmem);
	pthread_create(&th, NULL, touch_page, mem + 3 * PAGE_SIZE / 8);
	ASSERT_EQ(read(sv[0], &c, 1), 1);
	ASSERT_EQ(c, 'd');
	gmem_copy_in_word(gmem, 3, 0x1234);
	pthread_join(th, NULL);
	ASSERT_EQ(waitpid(pid, &status, 0), pid);
	ASSERT_TRUE(WIFEXITED(status));
	ASSERT_EQ(WEXITSTATUS(status), 0);

	/* Only the owner changed anything. */
	st = gmem_presence_stats(gmem);
	ASSERT_EQ(st.pages_set, 1);
	ASSERT_EQ(st.pages_cleared, 0);
	ASSERT_EQ(st.nr_present, 1);
	ASSERT_EQ(st.notifications, 1);

	kvm_munmap(mem, FZ_SIZE);
	close(sv[0]);
	close(gmem);
	kvm_vm_free(vm);
}

struct victim {
	pid_t pid;
	int gmem_fd;
	u64 addr;
};

/*
 * A process of another user, without the guest_memfd, tries every way in:
 * the owner's /proc fd and memory, pidfd_getfd(), process_vm_readv(), the
 * fd number.  None works, and none even touches the memory: no fault, no
 * record, no change of presence.  A process with the VM fd but not the
 * guest_memfd can't either.
 */
TEST(no_gmem_process)
{
	struct kvm_gmem_presence_stats st;
	struct victim v;
	struct kvm_vm *vm;
	int sv[2], gmem, status;
	u64 *mem;
	char c;
	pid_t pid;

	ASSERT_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
	pid = fork();
	ASSERT_GE(pid, 0);
	if (!pid) {
		struct iovec local, remote;
		char path[128], data[8];
		int fd, pidfd;

		close_all_but(sv[1], -1);
		if (setgroups(0, NULL) || setgid(65534) || setuid(65534))
			_exit(10);
		if (read(sv[1], &v, sizeof(v)) != sizeof(v))
			_exit(11);
		snprintf(path, sizeof(path), "/proc/%d/fd/%d", v.pid, v.gmem_fd);
		fd = open(path, O_RDWR);
		if (fd >= 0)
			_exit(12);
		snprintf(path, sizeof(path), "/proc/%d/mem", v.pid);
		fd = open(path, O_RDONLY);
		if (fd >= 0)
			_exit(13);
		snprintf(path, sizeof(path), "/proc/%d/map_files/%llx-%llx",
			 v.pid, (unsigned long long)v.addr,
			 (unsigned long long)v.addr + FZ_SIZE);
		fd = open(path, O_RDONLY);
		if (fd >= 0)
			_exit(14);
		pidfd = syscall(SYS_pidfd_open, v.pid, 0);
		if (pidfd >= 0 && syscall(SYS_pidfd_getfd, pidfd, v.gmem_fd, 0) >= 0)
			_exit(15);
		local = (struct iovec){ .iov_base = data, .iov_len = sizeof(data) };
		remote = (struct iovec){ .iov_base = (void *)v.addr,
					 .iov_len = sizeof(data) };
		if (process_vm_readv(v.pid, &local, 1, &remote, 1, 0) >= 0)
			_exit(16);
		if (ioctl(v.gmem_fd, KVM_GMEM_PRESENCE_STATS, data) != -1 ||
		    errno != EBADF)
			_exit(17);
		if (write(sv[1], "d", 1) != 1)
			_exit(18);
		_exit(0);
	}
	close(sv[1]);

	vm = vm_create_barebones();
	gmem = vm_create_guest_memfd(vm, FZ_SIZE, shared_flags);
	mem = kvm_mmap(FZ_SIZE, PROT_READ, MAP_SHARED, gmem);
	v = (struct victim){ .pid = getpid(), .gmem_fd = gmem, .addr = (u64)mem };
	ASSERT_EQ(write(sv[0], &v, sizeof(v)), sizeof(v));
	ASSERT_EQ(read(sv[0], &c, 1), 1);
	ASSERT_EQ(waitpid(pid, &status, 0), pid);
	ASSERT_TRUE(WIFEXITED(status));
	ASSERT_EQ(WEXITSTATUS(status), 0);

	/* A child with the VM fd but not the guest_memfd. */
	pid = fork();
	ASSERT_GE(pid, 0);
	if (!pid) {
		struct kvm_memory_present a = {
			.size = PAGE_SIZE, .op = KVM_MEMORY_PRESENT_MARK,
		};
		struct kvm_create_guest_memfd cg = {
			.size = PAGE_SIZE, .flags = GUEST_MEMFD_FLAG_PRESENCE,
		};

		munmap(mem, FZ_SIZE);
		close(gmem);
		/* KVM refuses VM ioctls from another mm: EIO. */
		if (ioctl(vm->fd, KVM_SET_MEMORY_PRESENT, &a) != -1 ||
		    errno != EIO)
			_exit(20);
		if (ioctl(vm->fd, KVM_CREATE_GUEST_MEMFD, &cg) != -1 ||
		    errno != EIO)
			_exit(21);
		_exit(0);
	}
	ASSERT_EQ(waitpid(pid, &status, 0), pid);
	ASSERT_TRUE(WIFEXITED(status));
	ASSERT_EQ(WEXITSTATUS(status), 0);

	/* Nothing reached the memory or the presence state. */
	st = gmem_presence_stats(gmem);
	ASSERT_EQ(st.faults, 0);
	ASSERT_EQ(st.notifications, 0);
	ASSERT_EQ(st.nr_present, 0);
	ASSERT_EQ(st.pages_set + st.pages_cleared, 0);

	kvm_munmap(mem, FZ_SIZE);
	close(sv[0]);
	close(gmem);
	kvm_vm_free(vm);
}

static void guest_read_first(u64 unused)
{
	READ_ONCE(*(volatile u64 *)FZ_GPA);
	GUEST_DONE();
}

static void *run_once(void *arg)
{
	struct kvm_vcpu *vcpu = arg;

	return (void *)(long)(__vcpu_run(vcpu) ? -errno : 0);
}

/*
 * A notification fd held by another process outlives the VM and the
 * guest_memfd, closed while a vCPU waited: it reads the records still
 * queued, then end of file, poll() says POLLHUP, ioctls fail, and nothing
 * in the kernel complains (kmemleak, lockdep: the run's checks).
 */
TEST(notify_fd_outlives_vm)
{
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;
	int sv[2], gmem, nfd, status;
	pthread_t th;
	void *ret;
	char c;
	pid_t pid;

	ASSERT_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
	pid = fork();
	ASSERT_GE(pid, 0);
	if (!pid) {
		struct kvm_gmem_presence_event ev[4];
		struct kvm_gmem_presence_stats st;
		struct pollfd pfd;
		ssize_t n;
		int fd, records = 0;

		close_all_but(sv[1], -1);
		fd = gmem_presence_recv_fd(sv[1]);
		if (fd < 0)
			_exit(10);
		/* Told when the VM and the guest_memfd are gone. */
		if (read(sv[1], &c, 1) != 1)
			_exit(11);
		while ((n = read(fd, ev, sizeof(ev))) > 0)
			records += n / sizeof(ev[0]);
		if (n || records > 1)
			_exit(12);
		pfd = (struct pollfd){ .fd = fd, .events = POLLIN };
		if (poll(&pfd, 1, 0) != 1 || !(pfd.revents & POLLHUP))
			_exit(13);
		if (ioctl(fd, KVM_GMEM_PRESENCE_STATS, &st) != -1 ||
		    errno != ENOTTY)
			_exit(14);
		if (read(fd, ev, sizeof(ev)) != 0)
			_exit(15);
		_exit(0);
	}
	close(sv[1]);

	vm = vm_create_with_one_vcpu(&vcpu, guest_read_first);
	gmem = vm_create_guest_memfd(vm, FZ_SIZE, shared_flags);
	vm_set_user_memory_region2(vm, FZ_SLOT, KVM_MEM_GUEST_MEMFD, FZ_GPA,
				   FZ_SIZE, NULL, gmem, 0);
	virt_map(vm, FZ_GPA, FZ_GPA, FZ_NPAGES);
	vm_enable_cap(vm, KVM_CAP_GUEST_MEMFD_PRESENCE, KVM_GMEM_PRESENCE_WAIT);
	nfd = gmem_notify_fd(gmem, O_NONBLOCK);
	ASSERT_GE(nfd, 0);
	gmem_presence_send_fd(sv[0], nfd);
	close(nfd);

	pthread_create(&th, NULL, run_once, vcpu);
	while (!gmem_presence_stats(gmem).waits)
		sleep_us(5000);
	close(gmem);
	ASSERT_TRUE(join_within(th, 20, &ret));
	ASSERT_EQ((long)ret, -EFAULT);
	kvm_vm_free(vm);

	ASSERT_EQ(write(sv[0], "g", 1), 1);
	ASSERT_EQ(waitpid(pid, &status, 0), pid);
	ASSERT_TRUE(WIFEXITED(status));
	ASSERT_EQ(WEXITSTATUS(status), 0);
	close(sv[0]);
}

/*
 * A read() whose buffer turns unwritable after the first record returns
 * that one record; the next stays queued for the next read(), in order.
 * A buffer that is not writable at all fails with EFAULT and loses nothing.
 */
TEST(notify_read_partial)
{
	struct kvm_gmem_presence_event *ev, first, rest[2];
	struct kvm_vm *vm = vm_create_barebones();
	u8 *area;
	u64 *mem;
	pid_t pid[2];
	int gmem, nfd, i, status;

	gmem = vm_create_guest_memfd(vm, FZ_SIZE, shared_flags);
	nfd = gmem_notify_fd(gmem, O_NONBLOCK);
	ASSERT_GE(nfd, 0);
	mem = kvm_mmap(FZ_SIZE, PROT_READ, MAP_SHARED, gmem);
	/* Two helpers, one after the other: two records, in that order. */
	for (i = 0; i < 2; i++) {
		pid[i] = fork();
		if (!pid[i])
			_exit(READ_ONCE(mem[(5 + i) * PAGE_SIZE / 8]) != 0);
		while (gmem_presence_stats(gmem).events_queued < i + 1)
			sleep_us(2000);
	}

	area = mmap(NULL, 2 * PAGE_SIZE, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(area, MAP_FAILED);
	ASSERT_EQ(mprotect(area + PAGE_SIZE, PAGE_SIZE, PROT_READ), 0);

	ASSERT_EQ(read(nfd, area + PAGE_SIZE, sizeof(*ev)), -1);
	ASSERT_EQ(errno, EFAULT);
	ASSERT_EQ(gmem_presence_stats(gmem).events_queued, 2);

	ev = (void *)(area + PAGE_SIZE - sizeof(*ev));
	ASSERT_EQ(read(nfd, ev, 2 * sizeof(*ev)), sizeof(*ev));
	first = *ev;
	ASSERT_EQ(gmem_presence_stats(gmem).events_queued, 1);
	ASSERT_EQ(read(nfd, rest, sizeof(rest)), sizeof(*ev));
	ASSERT_EQ(first.offset, 5 * PAGE_SIZE);
	ASSERT_EQ(rest[0].offset, 6 * PAGE_SIZE);
	ASSERT_EQ(read(nfd, rest, sizeof(rest)), -1);
	ASSERT_EQ(errno, EAGAIN);

	gmem_set_present(gmem, 0, FZ_SIZE, KVM_MEMORY_PRESENT_MARK);
	for (i = 0; i < 2; i++) {
		ASSERT_EQ(waitpid(pid[i], &status, 0), pid[i]);
		ASSERT_TRUE(WIFEXITED(status) && !WEXITSTATUS(status));
	}
	ASSERT_EQ(gmem_presence_stats(gmem).notifications, 2);
	munmap(area, 2 * PAGE_SIZE);
	kvm_munmap(mem, FZ_SIZE);
	close(nfd);
	close(gmem);
	kvm_vm_free(vm);
}

int main(int argc, char **argv)
{
	int opt;

	opt_seed = gmem_presence_now_ns() % 1000000007;
	while ((opt = getopt(argc, argv, "s:n:d:")) != -1) {
		switch (opt) {
		case 's':
			opt_seed = strtoull(optarg, NULL, 0);
			break;
		case 'n':
			opt_calls = strtoul(optarg, NULL, 0);
			break;
		case 'd':
			opt_seconds = atoi_positive("seconds", optarg);
			break;
		default:
			fprintf(stderr, "usage: %s [-s seed] [-n calls] [-d seconds] [-- harness options]\n",
				argv[0]);
			return KSFT_FAIL;
		}
	}
	{
		struct __fixture_metadata *f;
		struct __test_metadata *t;

		for (f = __fixture_list; f; f = f->next)
			for (t = f->tests; t; t = t->next)
				t->timeout = opt_seconds + 120;
	}
	/* The rest is the harness's; its getopt() starts afresh. */
	argv[optind - 1] = argv[0];
	argc -= optind - 1;
	argv += optind - 1;
	optind = 0;
	return test_harness_run(argc, argv);
}
