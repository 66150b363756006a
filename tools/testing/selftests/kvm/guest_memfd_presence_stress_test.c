// SPDX-License-Identifier: GPL-2.0-only
/*
 * guest_memfd presence under stress: everything that can touch, fill or
 * re-arm a page, racing, for a bounded time and number of rounds.
 *
 * Each round ("epoch") builds a VM whose test memslot is a presence
 * guest_memfd and runs, together:
 *  - vCPUs reading and writing the pages, under one of the policies EXIT,
 *    WAIT, ASYNC with EXIT or WAIT as fallback (the guest speaks the async #PF
 *    protocol, sometimes with interrupts off), or with the policy changing
 *    under them; some reads are KVM-internal (OUTS, emulated by KVM);
 *  - helper processes reading and writing the pages through their own mmap,
 *    sent signals and SIGKILLed (and replaced) at random;
 *  - two readers of the notification fds that fill the pages they report,
 *    by COPY or, for re-armed pages, by MARK; in some rounds a filler thread
 *    fills pages nobody asked for yet;
 *  - an evictor that re-arms, discards and punches holes;
 *  - in some rounds the memslot deleted and re-added, or the pages of a
 *    software-protected VM converted between private and shared;
 *  - SIGUSR1 storms on the vCPU threads and the helpers.
 *
 * Every fill writes a known stamp into the whole page: its index and a
 * generation that grows with every COPY.  Every access checks that it sees
 * a stamp, of its own page, of a generation not older than one it saw before
 * and not newer than the latest written, never zeroes or another page.  The
 * test keeps a model of each page (present, contents, not-present periods,
 * records read) under a per-page lock held by everything that changes the
 * page's presence, and checks it against KVM_GET_MEMORY_PRESENT as it goes.
 * At the end of a round every page is filled and every vCPU and helper must
 * finish (a lost wakeup would leave one asleep); records read must equal the
 * records KVM queued, never more than one per not-present period of a page;
 * pages set and cleared must match the model, async #PF "not present" and
 * "page ready" must pair up.  A watchdog reports an access still blocked
 * long after its page became present.
 *
 * The teardown subtest ends rounds destructively: the guest_memfd closed,
 * the memslot deleted, the policy switched to EXIT, or the whole VMM process
 * SIGKILLed, while vCPUs and helpers wait for pages; each must come out
 * within a bound, and a notification fd outliving it all must read EOF.
 *
 *   -d SECONDS     total run time (default 12)
 *   -i ITERATIONS  most rounds per subtest (default 1000)
 *   -s SEED        random seed (default: from the clock, printed)
 *   -w MS          watchdog bound for a waiter on a present page (3000)
 * and the kselftest harness options after them.
 */
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <dirent.h>
#include <time.h>

#include <linux/falloc.h>
#include <linux/kvm.h>
#include <linux/kvm_para.h>
#include <linux/sizes.h>

#include "apic.h"
#include "guest_memfd_presence.h"
#include "kvm_util.h"
#include "processor.h"
#include "test_util.h"
#include "kselftest_harness.h"

#define ST_GPA		SZ_4G
#define ST_SLOT		1
#define ST_NPAGES	64
#define ST_NVCPUS	2
#define ST_HELPERS	2
#define ST_PORT		0x80
#define APF_VECTOR	0xe0
#define APF_EN_FULL	(KVM_ASYNC_PF_ENABLED | KVM_ASYNC_PF_DELIVERY_AS_INT | \
			 KVM_ASYNC_PF_SEND_ALWAYS)

/* The last word of a page is scratch: guests and helpers write it. */
#define SCRATCH		(PAGE_SIZE / 8 - 1)
#define STAMP_MAGIC	0x5354ull
#define SHARED_GEN	0xffffffu
/* Data of an MMIO read while the memslot is gone: the guest retries. */
#define RETRY_WORD	0xdeadbeefcafef0ffull

#define GF_APF		BIT(0)
#define GF_OUTS		BIT(1)
#define GF_CLI		BIT(2)

static u64 stamp(u64 page, u64 gen)
{
	return STAMP_MAGIC << 48 | (gen & 0xffffff) << 24 | (page & 0xffffff);
}

/* @w is a stamp of @page: not zero, not another page's. */
static bool stamp_ok(u64 w, u64 page)
{
	return w >> 48 == STAMP_MAGIC && (w & 0xffffff) == page;
}

/*
 * Words read in this order, from one page: their generations never go
 * back, from @seen (read before) up to @latest (written last).  The shared
 * side of a private page (SHARED_GEN) stands apart: conversions switch
 * between the two at any time.
 */
static bool gen_order(u64 a, u64 b, u64 c, u64 seen, u64 latest)
{
	u64 w[3] = { a, b, c }, g, prev = seen;
	int i;

	for (i = 0; i < 3; i++) {
		g = (w[i] >> 24) & 0xffffff;
		if (g == SHARED_GEN)
			continue;
		if (g < prev || g > latest)
			return false;
		prev = g;
	}
	return true;
}

/* Options. */
static unsigned int opt_seconds = 12;
static unsigned int opt_iterations = 1000;
static u64 opt_seed;
static unsigned int opt_watchdog_ms = 3000;

/* ---------------------------------------------------------------- guest */

static struct kvm_vcpu_pv_apf_data apf_data[ST_NVCPUS] __aligned(64);

struct guest_vcpu {
	u64 accesses, retries, outs, writes, cli_reads;
	u64 np, ready, broadcast;
	/*
	 * "Page ready" tokens, newest last: async #PFs nest (an ordinary one,
	 * for memory the host has to fault in, can come while the handler
	 * waits), so one slot for the latest token could lose the outer one.
	 */
	u64 ready_tokens[64];
	u64 ready_token;
	/* The access in progress, for the host's watchdog. */
	u64 seq, page, busy;
} __aligned(64);

static struct guest_vcpu gv[ST_NVCPUS];
static u32 gen_table[ST_NPAGES];
static u32 seen[ST_NVCPUS][ST_NPAGES];
static u64 g_npages;
static u64 g_apf_gpa;

static u32 guest_me(void)
{
	return x2apic_read_reg(APIC_ID);
}

/* "Page not present": wait, interrupts on, for its "page ready". */
static void guest_pf_handler(struct ex_regs *regs)
{
	u32 me = guest_me();
	u32 flags = READ_ONCE(apf_data[me].flags);
	u64 token = get_cr2(), b = READ_ONCE(gv[me].broadcast);

	WRITE_ONCE(apf_data[me].flags, 0);
	__GUEST_ASSERT(flags == KVM_PV_REASON_PAGE_NOT_PRESENT,
		       "#PF flags %#x cr2 %#lx", flags, token);
	gv[me].np++;
	sti();
	while (READ_ONCE(gv[me].broadcast) == b) {
		int i;

		for (i = 0; i < ARRAY_SIZE(gv[me].ready_tokens); i++)
			if (READ_ONCE(gv[me].ready_tokens[i]) == token)
				break;
		if (i < ARRAY_SIZE(gv[me].ready_tokens))
			break;
		cpu_relax();
	}
	cli();
}

static void guest_apf_isr(struct ex_regs *regs)
{
	u32 me = guest_me();
	u32 token = READ_ONCE(apf_data[me].token);

	if (token == ~0u) {
		WRITE_ONCE(gv[me].broadcast, gv[me].broadcast + 1);
	} else {
		WRITE_ONCE(gv[me].ready_tokens[gv[me].ready %
					       ARRAY_SIZE(gv[me].ready_tokens)],
			   token);
		WRITE_ONCE(gv[me].ready_token, token);
		gv[me].ready++;
	}
	WRITE_ONCE(apf_data[me].token, 0);
	wrmsr(MSR_KVM_ASYNC_PF_ACK, 1);
	x2apic_write_reg(APIC_EOI, 0);
}

static void guest_check(u64 id, u64 page, u64 x)
{
	volatile u64 *p = (volatile u64 *)(ST_GPA + page * PAGE_SIZE);
	u64 k = 1 + (x >> 40) % (SCRATCH - 2), a, b, c, gen;

	for (;;) {
		a = p[0];
		b = p[k];
		c = p[SCRATCH - 1];
		if (a != RETRY_WORD && b != RETRY_WORD && c != RETRY_WORD)
			break;
		gv[id].retries++;
	}
	/*
	 * The page may be evicted and filled again between two reads, so
	 * the words can be of different generations, but each is a stamp of
	 * this page, and generations never go back.
	 */
	__GUEST_ASSERT(stamp_ok(a, page) && stamp_ok(b, page) &&
		       stamp_ok(c, page) &&
		       gen_order(a, b, c, seen[id][page], READ_ONCE(gen_table[page])),
		       "page %lu: words 0 %#lx, %lu %#lx, %lu %#lx; seen generation %u before, latest %u",
		       page, a, k, b, (u64)SCRATCH - 1, c, seen[id][page],
		       READ_ONCE(gen_table[page]));
	gen = (c >> 24) & 0xffffff;
	if (gen != SHARED_GEN)
		seen[id][page] = gen;
}

static void guest_code(u64 id, u64 seed, u64 flags)
{
	struct guest_vcpu *me = &gv[id];
	u64 n, page, x = seed | 1;
	volatile u64 *p;

	if (flags & GF_APF) {
		x2apic_enable();
		wrmsr(MSR_KVM_ASYNC_PF_INT, APF_VECTOR);
		wrmsr(MSR_KVM_ASYNC_PF_EN, (g_apf_gpa + id * sizeof(apf_data[0])) |
		      APF_EN_FULL);
	}
	sti_nop();

	for (n = 1;; n++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		page = x % g_npages;
		p = (volatile u64 *)(ST_GPA + page * PAGE_SIZE);
		WRITE_ONCE(me->page, page);
		WRITE_ONCE(me->seq, n);
		WRITE_ONCE(me->busy, 1);
		switch ((x >> 32) % 16) {
		case 0:
			if (flags & GF_OUTS) {
				/* Emulated by KVM: the read goes via the hva. */
				u64 src = (u64)p;

				asm volatile("outsb" : "+S"(src) : "d"(ST_PORT)
					     : "memory");
				me->outs++;
				break;
			}
			fallthrough;
		case 1:
			if (flags & GF_CLI) {
				/* No async #PF: the fallback policy. */
				cli();
				guest_check(id, page, x);
				sti_nop();
				me->cli_reads++;
				break;
			}
			fallthrough;
		case 2:
			p[SCRATCH] = n;
			me->writes++;
			break;
		default:
			guest_check(id, page, x);
		}
		WRITE_ONCE(me->busy, 0);
		me->accesses++;
		if (!(n % 32))
			GUEST_SYNC(n);
	}
}

/* ----------------------------------------------------------------- host */

enum { POL_EXIT, POL_WAIT, POL_ASYNC_EXIT, POL_ASYNC_WAIT, NR_POL };
static const char * const pol_name[] = {
	"EXIT", "WAIT", "ASYNC/EXIT", "ASYNC/WAIT",
};

/* The model of a page, under @lock. */
struct pstate {
	pthread_mutex_t lock;
	bool present;
	bool valid;		/* contents are stamp(i, gen) */
	u32 gen;
	u64 periods;		/* not-present periods begun */
	u64 records;		/* records read for the page */
};

struct helper_slot {
	pid_t pid;
	u64 seq, page, busy;
	u64 accesses, writes, usr1;
	u64 fail_page, fail_words[3], fail_gen;
};

/* Counters; also summed over all rounds for the final report. */
struct counts {
	unsigned long long epochs, guest_accesses, guest_outs, guest_writes, guest_cli;
	unsigned long long guest_retries, helper_accesses, helper_writes, records;
	unsigned long long rec_vcpu, rec_kvm, rec_mmap, exits, eintr, mmio, attr_exits;
	unsigned long long copies, marks, rearms, discards, punches, eperm, checks;
	unsigned long long slot_cycles, policy_changes, conversions, kills, signals;
	unsigned long long async_injected, async_halted, async_ready, async_fallbacks;
	unsigned long long waits, wakeups, wake_misses, faults, notifications;
	unsigned long long teardown[4];
};

/* Shared with the helper processes. */
struct shm {
	u32 gen[ST_NPAGES];
	u32 present[ST_NPAGES];
	u64 present_ns[ST_NPAGES];
	struct pstate ps[ST_NPAGES];
	struct helper_slot helper[ST_HELPERS];
	pid_t helper_pids[256];
	u32 nr_helper_pids;
	int stop;
};

static struct counts *totals;
static pid_t main_pid;

struct st {
	struct kvm_vm *vm;
	struct kvm_vcpu *vcpu[ST_NVCPUS];
	pthread_t vcpu_th[ST_NVCPUS];
	int gmem, nfd[2];
	u64 *mem;		/* memslot hva: the gmem mmap, or shared backing */
	u64 size;
	bool private;
	struct guest_vcpu *gv;	/* in guest memory */
	u32 *ggen;
	struct shm *shm;
	u64 seed;

	/* Round configuration. */
	int policy;
	bool policy_storm, slot_cycle, records_only, apf, teardown;
	int td_event;

	volatile int stop_racers, stop_vcpus, stop_readers, stop_watchdog;
	volatile int slot_gone;
	volatile u64 slot_back_ns, policy_ns;
	volatile int vcpu_done[ST_NVCPUS];
	pid_t self;

	/* This round's counts (@r), and the subtest's (@c). */
	struct counts r, c;
	u64 set_pages, cleared_pages;
};

static struct st *S;

#define CNT(x)		__atomic_add_fetch(&S->r.x, 1, __ATOMIC_RELAXED)

static __thread u64 rs;

static u64 rnd(void)
{
	return gmem_presence_rand(&rs);
}

static void seed_thread(u64 salt)
{
	rs = S->seed ^ (salt * 0x9e3779b97f4a7c15ull) ^ (u64)pthread_self();
}

static void sleep_us(u64 us)
{
	struct timespec ts = { .tv_sec = us / 1000000, .tv_nsec = us % 1000000 * 1000 };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

/*
 * Where every thread of this process is, and the kernel's view of the
 * guest_memfd: printed before a failure for a thread that doesn't finish.
 */
static void dump_state(void)
{
	char path[300], buf[4096];
	struct dirent *de;
	ssize_t n;
	DIR *d;
	int fd;

	d = opendir("/proc/self/task");
	while (d && (de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/stat", de->d_name);
		fd = open(path, O_RDONLY);
		n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
		if (fd >= 0)
			close(fd);
		buf[n > 0 ? n : 0] = 0;
		fprintf(stderr, "thread %s: %.120s\n", de->d_name, buf);
		snprintf(path, sizeof(path), "/proc/self/task/%s/stack", de->d_name);
		fd = open(path, O_RDONLY);
		n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
		if (fd >= 0)
			close(fd);
		buf[n > 0 ? n : 0] = 0;
		fprintf(stderr, "%s", buf);
	}
	if (d)
		closedir(d);
	for (fd = 0; fd < ST_NVCPUS && S->gv; fd++)
		fprintf(stderr, "vCPU %d: access %llu page %llu busy %llu, async #PF: %llu not present, %llu ready, %llu broadcast, token %#llx\n",
			fd, (unsigned long long)S->gv[fd].seq,
			(unsigned long long)S->gv[fd].page,
			(unsigned long long)S->gv[fd].busy,
			(unsigned long long)S->gv[fd].np,
			(unsigned long long)S->gv[fd].ready,
			(unsigned long long)S->gv[fd].broadcast,
			(unsigned long long)S->gv[fd].ready_token);
}

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

static void set_policy(int pol)
{
	static const u64 args[NR_POL][2] = {
		[POL_EXIT] = { KVM_GMEM_PRESENCE_EXIT, 0 },
		[POL_WAIT] = { KVM_GMEM_PRESENCE_WAIT, 0 },
		[POL_ASYNC_EXIT] = { KVM_GMEM_PRESENCE_ASYNC, KVM_GMEM_PRESENCE_EXIT },
		[POL_ASYNC_WAIT] = { KVM_GMEM_PRESENCE_ASYNC, KVM_GMEM_PRESENCE_WAIT },
	};
	struct kvm_enable_cap cap = {
		.cap = KVM_CAP_GUEST_MEMFD_PRESENCE,
		.args = { args[pol][0], args[pol][1] },
	};

	vm_ioctl(S->vm, KVM_ENABLE_CAP, &cap);
	S->policy_ns = gmem_presence_now_ns();
}

static struct pstate *ps_of(u64 i)
{
	return &S->shm->ps[i];
}

static void lock_range(u64 first, u64 n)
{
	u64 i;

	for (i = first; i < first + n; i++)
		pthread_mutex_lock(&ps_of(i)->lock);
}

static void unlock_range(u64 first, u64 n)
{
	u64 i;

	for (i = first; i < first + n; i++)
		pthread_mutex_unlock(&ps_of(i)->lock);
}

static bool model_present(u64 i)
{
	return __atomic_load_n(&S->shm->present[i], __ATOMIC_ACQUIRE);
}

static void model_set_present(u64 i, bool present)
{
	ps_of(i)->present = present;
	if (present)
		S->shm->present_ns[i] = gmem_presence_now_ns();
	__atomic_store_n(&S->shm->present[i], present, __ATOMIC_RELEASE);
}

/*
 * Make page @i present, with its lock held: MARK if it kept its stamp
 * (re-armed), else COPY a new generation.  Published generation first: a
 * reader that sees the new stamp must find it not newer than the latest.
 */
static void ps_fill(u64 i)
{
	struct pstate *ps = ps_of(i);
	u64 *buf, w;
	u64 done = 0;
	int r;

	if (ps->present)
		return;
	if (ps->valid && (rnd() & 1)) {
		gmem_set_present(S->gmem, i * PAGE_SIZE, PAGE_SIZE,
				 KVM_MEMORY_PRESENT_MARK);
		CNT(marks);
	} else {
		buf = aligned_alloc(PAGE_SIZE, PAGE_SIZE);
		TEST_ASSERT(buf, "aligned_alloc");
		ps->gen = ps->gen + 1 >= SHARED_GEN ? 1 : ps->gen + 1;
		__atomic_store_n(&S->shm->gen[i], ps->gen, __ATOMIC_RELEASE);
		__atomic_store_n(&S->ggen[i], ps->gen, __ATOMIC_RELEASE);
		for (w = 0; w < PAGE_SIZE / 8; w++)
			buf[w] = stamp(i, ps->gen);
		r = __gmem_set_present(S->gmem, i * PAGE_SIZE, PAGE_SIZE,
				       KVM_MEMORY_PRESENT_COPY, buf, &done);
		TEST_ASSERT(!r && done == PAGE_SIZE,
			    "COPY of page %llu (model: not present): r %d errno %d done %llu",
			    (unsigned long long)i, r, errno,
			    (unsigned long long)done);
		free(buf);
		CNT(copies);
	}
	ps->valid = true;
	/* Fills run in several threads, each under its own page's lock. */
	__atomic_add_fetch(&S->set_pages, 1, __ATOMIC_RELAXED);
	model_set_present(i, true);
}

/* The kernel's bit agrees with the model; the page's lock is held. */
static void ps_check(u64 i)
{
	bool k = gmem_page_present(S->gmem, i * PAGE_SIZE);

	TEST_ASSERT(k == ps_of(i)->present,
		    "page %llu: KVM_GET_MEMORY_PRESENT says %d, model %d",
		    (unsigned long long)i, k, ps_of(i)->present);
	CNT(checks);
}

/* Re-arm, discard or punch [@first, +@n): all locks held. */
static void ps_evict(u64 first, u64 n, int how)
{
	u64 i;
	int r;

	switch (how) {
	case 0:
		if (S->private) {
			/* Private contents can't be kept: EPERM, nothing done. */
			r = __gmem_set_present(S->gmem, first * PAGE_SIZE,
					       n * PAGE_SIZE,
					       KVM_MEMORY_PRESENT_REARM, NULL,
					       NULL);
			TEST_ASSERT(r == -1 && errno == EPERM,
				    "REARM of private memory: r %d errno %d",
				    r, errno);
			CNT(eperm);
			return;
		}
		for (i = first; i < first + n; i++)
			model_set_present(i, false);
		gmem_set_present(S->gmem, first * PAGE_SIZE, n * PAGE_SIZE,
				 KVM_MEMORY_PRESENT_REARM);
		for (i = first; i < first + n; i++)
			ps_of(i)->periods++;
		__atomic_add_fetch(&S->cleared_pages, n, __ATOMIC_RELAXED);
		CNT(rearms);
		break;
	case 1:
		for (i = first; i < first + n; i++)
			model_set_present(i, false);
		gmem_set_present(S->gmem, first * PAGE_SIZE, n * PAGE_SIZE,
				 KVM_MEMORY_PRESENT_DISCARD);
		for (i = first; i < first + n; i++) {
			ps_of(i)->periods++;
			ps_of(i)->valid = false;
		}
		__atomic_add_fetch(&S->cleared_pages, n, __ATOMIC_RELAXED);
		CNT(discards);
		break;
	default:
		/*
		 * A hole punched into a present page reads zeroes, by design;
		 * only punch pages that are not present, which stay so.
		 */
		for (i = first; i < first + n; i++) {
			if (ps_of(i)->present)
				continue;
			gmem_punch_hole(S->gmem, i * PAGE_SIZE, PAGE_SIZE);
			ps_of(i)->valid = false;
			CNT(punches);
		}
	}
}

/* --------------------------------------------------------------- vCPUs */

static bool vcpu_teardown_done(struct kvm_vcpu *vcpu, int r)
{
	struct kvm_run *run = vcpu->run;

	switch (S->td_event) {
	case 0:	/* guest_memfd closed: EFAULT without NOT_PRESENT */
		return r == -1 && errno == EFAULT &&
		       run->exit_reason == KVM_EXIT_MEMORY_FAULT &&
		       !(run->memory_fault.flags & KVM_MEMORY_EXIT_FLAG_NOT_PRESENT);
	case 1:	/* memslot deleted: the read is MMIO */
		return !r && run->exit_reason == KVM_EXIT_MMIO;
	case 2:	/* policy switched to EXIT */
		return r == -1 && errno == EFAULT &&
		       run->exit_reason == KVM_EXIT_MEMORY_FAULT;
	}
	return false;
}

static void *vcpu_thread(void *arg)
{
	long id = (long)arg;
	struct kvm_vcpu *vcpu = S->vcpu[id];
	struct kvm_run *run = vcpu->run;
	struct ucall uc;
	u64 gpa, page, t0, src;
	u8 byte;
	int r;

	seed_thread(100 + id);
	for (;;) {
		r = __vcpu_run(vcpu);
		if (S->teardown && S->td_event >= 0 &&
		    vcpu_teardown_done(vcpu, r))
			break;
		if (r == -1 && errno == EINTR) {
			CNT(eintr);
			continue;
		}
		if (r == -1 && errno == EFAULT &&
		    run->exit_reason == KVM_EXIT_MEMORY_FAULT &&
		    !(run->memory_fault.flags & KVM_MEMORY_EXIT_FLAG_NOT_PRESENT)) {
			/* Private/shared mismatch raced with a conversion. */
			TEST_ASSERT(S->private,
				    "memory fault exit without NOT_PRESENT: flags %#llx gpa %#llx",
				    run->memory_fault.flags,
				    run->memory_fault.gpa);
			CNT(attr_exits);
			continue;
		}
		if (r == -1 && errno == EFAULT &&
		    run->exit_reason == KVM_EXIT_MEMORY_FAULT) {
			gpa = run->memory_fault.gpa;
			TEST_ASSERT(gpa >= ST_GPA && gpa < ST_GPA + S->size &&
				    !(gpa % PAGE_SIZE) &&
				    run->memory_fault.size == PAGE_SIZE,
				    "not-present exit: gpa %#llx size %#llx",
				    (unsigned long long)gpa,
				    run->memory_fault.size);
			TEST_ASSERT((run->memory_fault.flags &
				     ~KVM_MEMORY_EXIT_FLAG_PRIVATE) ==
				    KVM_MEMORY_EXIT_FLAG_NOT_PRESENT &&
				    !!(run->memory_fault.flags &
				       KVM_MEMORY_EXIT_FLAG_PRIVATE) == S->private,
				    "not-present exit flags %#llx",
				    run->memory_fault.flags);
			CNT(exits);
			page = (gpa - ST_GPA) / PAGE_SIZE;
			if (S->teardown) {
				sleep_us(1000);
				continue;
			}
			/*
			 * Served by the readers (from the record); in some
			 * rounds the vCPU thread fills the page itself.  Go
			 * back in after 20 ms anyway: the guest faults again.
			 */
			if (!S->records_only && !(rnd() % 4)) {
				lock_range(page, 1);
				ps_fill(page);
				unlock_range(page, 1);
			}
			t0 = gmem_presence_now_ns();
			while (!model_present(page) &&
			       gmem_presence_now_ns() - t0 < 20000000ull)
				sleep_us(200);
			continue;
		}
		TEST_ASSERT(!r, "KVM_RUN: r %d errno %d exit %s", r, errno,
			    exit_reason_str(run->exit_reason));

		if (run->exit_reason == KVM_EXIT_MMIO) {
			/* The memslot is (or was just) gone. */
			TEST_ASSERT(run->mmio.phys_addr >= ST_GPA &&
				    run->mmio.phys_addr < ST_GPA + S->size &&
				    (S->r.slot_cycles || S->slot_gone),
				    "MMIO exit at %#llx", run->mmio.phys_addr);
			if (!run->mmio.is_write) {
				u64 w = RETRY_WORD;

				memcpy(run->mmio.data, &w, sizeof(w));
			}
			CNT(mmio);
			continue;
		}
		if (run->exit_reason == KVM_EXIT_IO && run->io.port == ST_PORT) {
			struct kvm_regs regs;

			/* The source is a page's start: RSI, maybe advanced. */
			vcpu_regs_get(vcpu, &regs);
			src = regs.rsi;
			page = (src - ST_GPA) / PAGE_SIZE;
			byte = *((u8 *)run + run->io.data_offset);
			TEST_ASSERT(byte == (u8)page || byte == (u8)RETRY_WORD,
				    "OUTS from page %llu read %#x",
				    (unsigned long long)page, byte);
			continue;
		}
		switch (get_ucall(vcpu, &uc)) {
		case UCALL_SYNC:
			if (S->stop_vcpus)
				goto out;
			break;
		case UCALL_ABORT:
			REPORT_GUEST_ASSERT(uc);
			break;
		default:
			TEST_FAIL("vCPU %ld: unexpected exit %s", id,
				  exit_reason_str(run->exit_reason));
		}
	}
out:
	S->vcpu_done[id] = 1;
	return NULL;
}

/* ------------------------------------------------------------- helpers */

static struct helper_slot *cur_helper;

static void helper_usr1(int sig)
{
	cur_helper->usr1++;
}

/*
 * A helper process: reads and writes pages through its own mapping of the
 * guest_memfd, checking every stamp.  Only what is safe after fork() from a
 * threaded process: no stdio, no malloc, no locks.
 */
static void __noreturn helper_main(int idx, u32 slot, pid_t parent)
{
	struct helper_slot *h = &S->shm->helper[idx];
	struct sigaction sa = { .sa_handler = helper_usr1 };
	u32 seen_gen[ST_NPAGES] = { 0 };
	u64 x = S->seed ^ (getpid() * 0x2545f4914f6cdd1dull), page, k, a, b, c, gen;
	volatile u64 *m;

	/* Known as a helper before its first access can raise a record. */
	__atomic_store_n(&S->shm->helper_pids[slot], getpid(), __ATOMIC_RELEASE);
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	/* The parent may have died before the prctl(). */
	if (getppid() != parent)
		_exit(0);
	cur_helper = h;
	sigaction(SIGUSR1, &sa, NULL);
	m = mmap(NULL, S->size, PROT_READ | PROT_WRITE, MAP_SHARED, S->gmem, 0);
	if (m == MAP_FAILED)
		_exit(2);

	while (!__atomic_load_n(&S->shm->stop, __ATOMIC_ACQUIRE)) {
		gmem_presence_rand(&x);
		page = x % (S->size / PAGE_SIZE);
		k = 1 + (x >> 40) % (SCRATCH - 2);
		__atomic_store_n(&h->page, page, __ATOMIC_RELAXED);
		__atomic_store_n(&h->seq, h->seq + 1, __ATOMIC_RELAXED);
		__atomic_store_n(&h->busy, 1, __ATOMIC_RELEASE);
		if (!((x >> 32) % 8)) {
			m[page * PAGE_SIZE / 8 + SCRATCH] = x;
			h->writes++;
		} else {
			a = m[page * PAGE_SIZE / 8];
			b = m[page * PAGE_SIZE / 8 + k];
			c = m[page * PAGE_SIZE / 8 + SCRATCH - 1];
			gen = (c >> 24) & 0xffffff;
			if (!stamp_ok(a, page) || !stamp_ok(b, page) ||
			    !stamp_ok(c, page) ||
			    !gen_order(a, b, c, seen_gen[page],
				       __atomic_load_n(&S->shm->gen[page],
						       __ATOMIC_ACQUIRE))) {
				h->fail_page = page;
				h->fail_words[0] = a;
				h->fail_words[1] = b;
				h->fail_words[2] = c;
				h->fail_gen = seen_gen[page];
				_exit(1);
			}
			seen_gen[page] = gen;
		}
		__atomic_store_n(&h->busy, 0, __ATOMIC_RELEASE);
		h->accesses++;
		if (!((x >> 48) % 64))
			sleep_us(100);
	}
	_exit(0);
}

static void helper_start(int idx)
{
	struct helper_slot *h = &S->shm->helper[idx];
	u32 slot = S->shm->nr_helper_pids;
	pid_t pid, parent = getpid();

	TEST_ASSERT(slot < ARRAY_SIZE(S->shm->helper_pids), "too many helpers");
	__atomic_store_n(&S->shm->nr_helper_pids, slot + 1, __ATOMIC_RELEASE);
	h->busy = 0;
	pid = fork();
	TEST_ASSERT(pid >= 0, "fork: errno %d", errno);
	if (!pid)
		helper_main(idx, slot, parent);
	h->pid = pid;
	S->shm->helper_pids[slot] = pid;
}

/* Reap @pid within @secs; its wait status, or -1 if it is still there. */
static int reap_within(pid_t pid, int secs)
{
	u64 t0 = gmem_presence_now_ns();
	int status;

	do {
		pid_t r = waitpid(pid, &status, WNOHANG);

		if (r == pid)
			return status;
		TEST_ASSERT(r == 0, "waitpid %d: errno %d", pid, errno);
		sleep_us(2000);
	} while (gmem_presence_now_ns() - t0 < secs * 1000000000ull);
	return -1;
}

static void helper_check_exit(int idx, int status)
{
	struct helper_slot *h = &S->shm->helper[idx];

	if (status == -1)
		dump_state();
	TEST_ASSERT(status != -1,
		    "helper %d stuck on page %llu (present %u) after every page was filled",
		    h->pid, (unsigned long long)h->page,
		    S->shm->present[h->page]);
	TEST_ASSERT(WIFEXITED(status) && !WEXITSTATUS(status),
		    "helper %d: status %#x; page %llu words %#llx %#llx %#llx, seen generation %llu",
		    h->pid, status, (unsigned long long)h->fail_page,
		    (unsigned long long)h->fail_words[0],
		    (unsigned long long)h->fail_words[1],
		    (unsigned long long)h->fail_words[2],
		    (unsigned long long)h->fail_gen);
	S->r.helper_accesses += h->accesses;
	S->r.helper_writes += h->writes;
	h->accesses = 0;
	h->writes = 0;
}

/* ------------------------------------------------------------- readers */

static bool is_helper_pid(pid_t pid)
{
	u32 i, nr = __atomic_load_n(&S->shm->nr_helper_pids, __ATOMIC_ACQUIRE);

	for (i = 0; i < nr; i++)
		if (__atomic_load_n(&S->shm->helper_pids[i], __ATOMIC_ACQUIRE) == pid)
			return true;
	return false;
}

static void check_record(const struct kvm_gmem_presence_event *ev, bool pid)
{
	TEST_ASSERT(ev->type == KVM_GMEM_EVENT_FAULT && !ev->flags &&
		    !ev->reserved[0] && !ev->reserved[1],
		    "record: type %u flags %#x reserved %#llx %#llx", ev->type,
		    ev->flags, ev->reserved[0], ev->reserved[1]);
	TEST_ASSERT(!(ev->offset % PAGE_SIZE) && ev->offset < S->size,
		    "record offset %#llx", ev->offset);
	TEST_ASSERT(ev->access == KVM_GMEM_ACCESS_READ ||
		    ev->access == KVM_GMEM_ACCESS_WRITE,
		    "record access %#x", ev->access);
	switch (ev->origin) {
	case KVM_GMEM_ORIGIN_VCPU:
	case KVM_GMEM_ORIGIN_KVM:
		TEST_ASSERT(ev->vcpu_id < ST_NVCPUS, "record vcpu %u", ev->vcpu_id);
		TEST_ASSERT(ev->pid == (pid ? S->self : 0),
			    "record pid %u for a vCPU", ev->pid);
		TEST_ASSERT(ev->origin == KVM_GMEM_ORIGIN_VCPU ||
			    ev->access == KVM_GMEM_ACCESS_READ,
			    "KVM-internal access %#x", ev->access);
		if (ev->origin == KVM_GMEM_ORIGIN_VCPU)
			CNT(rec_vcpu);
		else
			CNT(rec_kvm);
		break;
	case KVM_GMEM_ORIGIN_MMAP:
		TEST_ASSERT(ev->vcpu_id == KVM_GMEM_NO_VCPU,
			    "mmap record vcpu %u", ev->vcpu_id);
		TEST_ASSERT(pid ? is_helper_pid(ev->pid) : !ev->pid,
			    "mmap record pid %u", ev->pid);
		CNT(rec_mmap);
		break;
	default:
		TEST_FAIL("record origin %u", ev->origin);
	}
}

static void *reader_thread(void *arg)
{
	long r = (long)arg;
	struct kvm_gmem_presence_event ev[8];
	struct pollfd pfd = { .fd = S->nfd[r], .events = POLLIN };
	ssize_t n;
	u64 page;
	int k;

	seed_thread(200 + r);
	for (;;) {
		poll(&pfd, 1, 10);
		n = read(S->nfd[r], ev, (1 + rnd() % 8) * sizeof(ev[0]));
		if (n < 0 && errno == EAGAIN) {
			if (S->stop_readers)
				break;
			continue;
		}
		if (n == 0 && S->teardown)
			break;
		TEST_ASSERT(n > 0 && !(n % sizeof(ev[0])),
			    "read notify fd: %zd errno %d", n, errno);
		for (k = 0; k < n / sizeof(ev[0]); k++) {
			check_record(&ev[k], r);
			page = ev[k].offset / PAGE_SIZE;
			CNT(records);
			lock_range(page, 1);
			ps_of(page)->records++;
			unlock_range(page, 1);
			if (S->teardown)
				continue;
			/* Sometimes keep the waiters waiting a little. */
			if (!(rnd() % 8))
				sleep_us(rnd() % 3000);
			lock_range(page, 1);
			ps_fill(page);
			unlock_range(page, 1);
		}
	}
	return NULL;
}

/* --------------------------------------------------------------- racers */

static void *evictor_thread(void *arg)
{
	u64 first, n, npages = S->size / PAGE_SIZE;

	seed_thread(300);
	while (!S->stop_racers) {
		n = 1 + rnd() % 4;
		first = rnd() % (npages - n + 1);
		lock_range(first, n);
		if (!(rnd() % 4))
			ps_check(first + rnd() % n);
		ps_evict(first, n, rnd() % 3);
		unlock_range(first, n);
		sleep_us(1000 + rnd() % 5000);
	}
	return NULL;
}

static void *filler_thread(void *arg)
{
	u64 page, npages = S->size / PAGE_SIZE;

	seed_thread(400);
	while (!S->stop_racers) {
		page = rnd() % npages;
		lock_range(page, 1);
		ps_fill(page);
		unlock_range(page, 1);
		sleep_us(1000 + rnd() % 5000);
	}
	return NULL;
}

static void *signal_thread(void *arg)
{
	seed_thread(500);
	while (!S->stop_racers) {
		if ((rnd() & 1) || S->private) {
			pthread_kill(S->vcpu_th[rnd() % ST_NVCPUS], SIGUSR1);
		} else {
			pid_t pid = S->shm->helper[rnd() % ST_HELPERS].pid;

			if (pid > 0)
				kill(pid, SIGUSR1);
		}
		CNT(signals);
		sleep_us(500 + rnd() % 4000);
	}
	return NULL;
}

/*
 * SIGKILL a random helper and start another, from the main thread: a helper
 * dies with the thread that forked it (PR_SET_PDEATHSIG), so that none is
 * left behind if the test fails.
 */
static void kill_one_helper(void)
{
	int idx = rnd() % ST_HELPERS, status;
	struct helper_slot *h = &S->shm->helper[idx];

	kill(h->pid, SIGKILL);
	status = reap_within(h->pid, 10);
	TEST_ASSERT(status != -1,
		    "helper %d (page %llu, busy %llu) survived SIGKILL for 10 s",
		    h->pid, (unsigned long long)h->page,
		    (unsigned long long)h->busy);
	TEST_ASSERT((WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) ||
		    (WIFEXITED(status) && !WEXITSTATUS(status)),
		    "killed helper: status %#x, page %llu words %#llx %#llx %#llx",
		    status, (unsigned long long)h->fail_page,
		    (unsigned long long)h->fail_words[0],
		    (unsigned long long)h->fail_words[1],
		    (unsigned long long)h->fail_words[2]);
	S->r.helper_accesses += h->accesses;
	S->r.helper_writes += h->writes;
	h->accesses = 0;
	h->writes = 0;
	CNT(kills);
	helper_start(idx);
}

static void slot_set(bool present)
{
	int r;

	r = __vm_set_user_memory_region2(S->vm, ST_SLOT, KVM_MEM_GUEST_MEMFD,
					 ST_GPA, present ? S->size : 0, S->mem,
					 S->gmem, 0);
	TEST_ASSERT(!r, "%s the memslot: errno %d",
		    present ? "re-adding" : "deleting", errno);
}

static void *slot_thread(void *arg)
{
	seed_thread(700);
	while (!S->stop_racers) {
		sleep_us(50000 + rnd() % 300000);
		S->slot_gone = 1;
		slot_set(false);
		sleep_us(rnd() % 20000);
		slot_set(true);
		S->slot_back_ns = gmem_presence_now_ns();
		S->slot_gone = 0;
		CNT(slot_cycles);
	}
	return NULL;
}

static void *policy_thread(void *arg)
{
	seed_thread(800);
	while (!S->stop_racers) {
		sleep_us(10000 + rnd() % 150000);
		set_policy(rnd() % NR_POL);
		CNT(policy_changes);
	}
	return NULL;
}

static void *convert_thread(void *arg)
{
	u64 first, n, npages = S->size / PAGE_SIZE;

	seed_thread(900);
	while (!S->stop_racers) {
		n = 1 + rnd() % 4;
		first = rnd() % (npages - n + 1);
		if (rnd() & 1)
			vm_mem_set_shared(S->vm, ST_GPA + first * PAGE_SIZE,
					  n * PAGE_SIZE);
		else
			vm_mem_set_private(S->vm, ST_GPA + first * PAGE_SIZE,
					   n * PAGE_SIZE);
		CNT(conversions);
		sleep_us(2000 + rnd() % 20000);
	}
	return NULL;
}

/*
 * An access blocked on a page that has been present for longer than the
 * bound (and no memslot change in between) is a lost wakeup.
 */
struct wd_state {
	u64 seq;
	u64 since;
};

static void wd_check(const char *who, int idx, u64 busy, u64 seq, u64 page,
		     struct wd_state *w, u64 now)
{
	u64 from, bound = opt_watchdog_ms * 1000000ull;

	if (!busy || seq != w->seq) {
		w->seq = seq;
		w->since = now;
		return;
	}
	if (page >= S->size / PAGE_SIZE || S->slot_gone)
		return;
	from = max(w->since, S->slot_back_ns);
	from = max(from, S->policy_ns);
	if (!model_present(page)) {
		/*
		 * Only records fill pages in this round: an access that waits
		 * this long on a page nobody fills had its record lost.
		 */
		TEST_ASSERT(!S->records_only || now - from < 2 * bound + 2000000000ull,
			    "%s %d: access %llu to page %llu waited %llu ms, the page still not present, and only records fill pages: a record is missing (records read for the page: %llu, periods %llu)",
			    who, idx, (unsigned long long)seq,
			    (unsigned long long)page,
			    (unsigned long long)(now - from) / 1000000,
			    (unsigned long long)ps_of(page)->records,
			    (unsigned long long)ps_of(page)->periods);
		return;
	}
	from = max(from, S->shm->present_ns[page]);
	TEST_ASSERT(now - from < bound,
		    "%s %d: access %llu to page %llu still blocked %llu ms after the page became present (policy %s)",
		    who, idx, (unsigned long long)seq, (unsigned long long)page,
		    (unsigned long long)(now - from) / 1000000,
		    pol_name[S->policy]);
}

static void *watchdog_thread(void *arg)
{
	struct wd_state wv[ST_NVCPUS] = { 0 }, wh[ST_HELPERS] = { 0 };
	struct kvm_gmem_presence_stats st;
	struct helper_slot *h;
	u64 now;
	int i;

	while (!S->stop_watchdog) {
		sleep_us(20000);
		now = gmem_presence_now_ns();
		for (i = 0; i < ST_NVCPUS; i++)
			wd_check("vCPU", i, READ_ONCE(S->gv[i].busy),
				 READ_ONCE(S->gv[i].seq),
				 READ_ONCE(S->gv[i].page), &wv[i], now);
		for (i = 0; i < ST_HELPERS && !S->private; i++) {
			h = &S->shm->helper[i];
			wd_check("helper", i,
				 __atomic_load_n(&h->busy, __ATOMIC_ACQUIRE),
				 __atomic_load_n(&h->seq, __ATOMIC_RELAXED) ^
				 ((u64)h->pid << 40),
				 __atomic_load_n(&h->page, __ATOMIC_RELAXED),
				 &wh[i], now);
		}
		/* At most one record per page is ever queued. */
		st = gmem_presence_stats(S->gmem);
		TEST_ASSERT(st.events_queued <= st.nr_pages,
			    "%llu records queued for %llu pages",
			    st.events_queued, st.nr_pages);
	}
	return NULL;
}

/* --------------------------------------------------------------- rounds */

/* Add this round's counts to the subtest's. */
static void round_done(void)
{
	unsigned long long *dst = (void *)&S->c, *src = (void *)&S->r;
	size_t i;

	for (i = 0; i < sizeof(S->r) / sizeof(*src); i++)
		dst[i] += src[i];
	memset(&S->r, 0, sizeof(S->r));
}

static void st_create(bool private)
{
	const struct vm_shape protected_shape = {
		.mode = VM_MODE_DEFAULT,
		.type = KVM_X86_SW_PROTECTED_VM,
	};
	u64 npages = ST_NPAGES, i, w, flags;
	long v;

	S->private = private;
	S->size = npages * PAGE_SIZE;
	S->vm = __vm_create_with_vcpus(private ? protected_shape :
				       VM_SHAPE_DEFAULT, ST_NVCPUS, 0,
				       guest_code, S->vcpu);
	vm_install_exception_handler(S->vm, PF_VECTOR, guest_pf_handler);
	vm_install_exception_handler(S->vm, APF_VECTOR, guest_apf_isr);

	if (private) {
		S->gmem = vm_create_guest_memfd(S->vm, S->size,
						GUEST_MEMFD_FLAG_PRESENCE);
		vm_mem_add(S->vm, VM_MEM_SRC_ANONYMOUS, ST_GPA, ST_SLOT, npages,
			   KVM_MEM_GUEST_MEMFD, S->gmem, 0);
		vm_mem_set_private(S->vm, ST_GPA, S->size);
		/* The shared side: stamped once, a generation of its own. */
		S->mem = addr_gpa2hva(S->vm, ST_GPA);
		for (i = 0; i < npages; i++)
			for (w = 0; w < PAGE_SIZE / 8; w++)
				S->mem[i * PAGE_SIZE / 8 + w] = stamp(i, SHARED_GEN);
	} else {
		S->gmem = vm_create_guest_memfd(S->vm, S->size,
						GUEST_MEMFD_FLAG_MMAP |
						GUEST_MEMFD_FLAG_INIT_SHARED |
						GUEST_MEMFD_FLAG_PRESENCE);
		/*
		 * Without an hva in the teardown rounds: the close must not
		 * be held up by this process's own mapping.
		 */
		S->mem = S->teardown ? NULL :
			 kvm_mmap(S->size, PROT_READ | PROT_WRITE, MAP_SHARED,
				  S->gmem);
		slot_set(true);
	}
	virt_map(S->vm, ST_GPA, ST_GPA, npages);

	g_npages = npages;
	sync_global_to_guest(S->vm, g_npages);
	g_apf_gpa = addr_gva2gpa(S->vm, (gva_t)apf_data);
	sync_global_to_guest(S->vm, g_apf_gpa);
	S->gv = addr_gva2hva(S->vm, (gva_t)gv);
	S->ggen = addr_gva2hva(S->vm, (gva_t)gen_table);

	flags = (S->apf ? GF_APF : 0) | GF_CLI | (S->mem && !private ? GF_OUTS : 0);
	for (v = 0; v < ST_NVCPUS; v++)
		vcpu_args_set(S->vcpu[v], 3, v, rnd() | 1, flags);

	S->nfd[0] = gmem_notify_fd(S->gmem, O_NONBLOCK);
	S->nfd[1] = gmem_notify_fd(S->gmem, O_NONBLOCK | KVM_GMEM_NOTIFY_PID);
	TEST_ASSERT(S->nfd[0] >= 0 && S->nfd[1] >= 0, "KVM_GMEM_GET_NOTIFY_FD");

	memset(S->shm, 0, sizeof(*S->shm));
	for (i = 0; i < npages; i++) {
		pthread_mutex_init(&ps_of(i)->lock, NULL);
		ps_of(i)->periods = 1;
	}
	set_policy(S->policy);
	S->set_pages = 0;
	S->cleared_pages = 0;
	S->stop_racers = 0;
	S->stop_vcpus = 0;
	S->stop_readers = 0;
	S->stop_watchdog = 0;
	S->slot_gone = 0;
	S->slot_back_ns = 0;
	memset((void *)S->vcpu_done, 0, sizeof(S->vcpu_done));
}

static void st_destroy(void)
{
	close(S->nfd[0]);
	close(S->nfd[1]);
	kvm_vm_free(S->vm);
	if (S->mem && !S->private)
		kvm_munmap(S->mem, S->size);
	if (S->gmem >= 0)
		close(S->gmem);
}

static u64 vcpu_stat_sum(const char *name)
{
	u64 sum = 0, data;
	int v;

	for (v = 0; v < ST_NVCPUS; v++) {
		kvm_get_stat(&S->vcpu[v]->stats, name, &data, 1);
		sum += data;
	}
	return sum;
}

/* After a round: everything the kernel counted agrees with the model. */
static void st_check(void)
{
	struct kvm_gmem_presence_stats st = gmem_presence_stats(S->gmem);
	u64 npages = S->size / PAGE_SIZE, i, vfaults, present = 0;
	u64 bitmap = 0, injected, halted, ready, np, gready;
	struct kvm_memory_present_bitmap bm = {
		.size = S->size,
		.bitmap = (u64)&bitmap,
	};
	int v;

	TEST_ASSERT(!ioctl(S->gmem, KVM_GET_MEMORY_PRESENT, &bm),
		    "KVM_GET_MEMORY_PRESENT");
	for (i = 0; i < npages; i++) {
		TEST_ASSERT(!!(bitmap & BIT_ULL(i)) == ps_of(i)->present,
			    "page %llu: bitmap %d, model %d",
			    (unsigned long long)i, !!(bitmap & BIT_ULL(i)),
			    ps_of(i)->present);
		present += ps_of(i)->present;
		/* One record per not-present period at most. */
		TEST_ASSERT(ps_of(i)->records <= ps_of(i)->periods,
			    "page %llu: %llu records for %llu not-present periods",
			    (unsigned long long)i,
			    (unsigned long long)ps_of(i)->records,
			    (unsigned long long)ps_of(i)->periods);
	}
	TEST_ASSERT_EQ(st.nr_pages, npages);
	TEST_ASSERT_EQ(st.nr_present, present);
	TEST_ASSERT_EQ(st.flags, 0);
	TEST_ASSERT_EQ(st.events_queued, 0);
	TEST_ASSERT(st.notifications == S->r.records,
		    "KVM queued %llu records, the readers read %llu",
		    st.notifications, (unsigned long long)S->r.records);
	TEST_ASSERT(st.pages_set == S->set_pages,
		    "KVM counted %llu pages set, the model %llu",
		    st.pages_set, (unsigned long long)S->set_pages);
	TEST_ASSERT(st.pages_cleared == S->cleared_pages,
		    "KVM counted %llu pages cleared, the model %llu",
		    st.pages_cleared, (unsigned long long)S->cleared_pages);
	TEST_ASSERT(st.faults >= st.notifications, "faults %llu < records %llu",
		    st.faults, st.notifications);

	/* Faults: every vCPU fault is a fault of this guest_memfd. */
	vfaults = vcpu_stat_sum("gmem_presence_faults");
	TEST_ASSERT(vfaults <= st.faults && S->r.exits <= vfaults &&
		    S->r.rec_vcpu <= vfaults &&
		    S->r.rec_kvm + S->r.rec_mmap <= st.faults - vfaults,
		    "faults: KVM %llu, vCPUs %llu, exits %llu, records vCPU %llu KVM %llu mmap %llu",
		    st.faults, (unsigned long long)vfaults,
		    (unsigned long long)S->r.exits,
		    (unsigned long long)S->r.rec_vcpu,
		    (unsigned long long)S->r.rec_kvm,
		    (unsigned long long)S->r.rec_mmap);

	/* Async #PF: every "not present" the guest took got its "page ready". */
	for (v = 0; v < ST_NVCPUS; v++) {
		injected = vcpu_get_stat(S->vcpu[v], gmem_async_injected);
		halted = vcpu_get_stat(S->vcpu[v], gmem_async_halted);
		ready = vcpu_get_stat(S->vcpu[v], gmem_async_ready);
		np = READ_ONCE(S->gv[v].np);
		gready = READ_ONCE(S->gv[v].ready);
		/*
		 * The guest also counts ordinary async #PFs (memory the host
		 * had to fault in): each "not present" has its "page ready".
		 */
		TEST_ASSERT(np >= injected && gready == np &&
			    ready == injected + halted,
			    "vCPU %d async #PF: injected %llu halted %llu ready %llu, guest saw %llu not present and %llu ready",
			    v, (unsigned long long)injected,
			    (unsigned long long)halted,
			    (unsigned long long)ready, (unsigned long long)np,
			    (unsigned long long)gready);
		S->r.async_injected += injected;
		S->r.async_halted += halted;
		S->r.async_ready += ready;
		S->r.async_fallbacks += vcpu_get_stat(S->vcpu[v],
						      gmem_async_fallbacks);
		S->r.guest_accesses += READ_ONCE(S->gv[v].accesses);
		S->r.guest_outs += READ_ONCE(S->gv[v].outs);
		S->r.guest_writes += READ_ONCE(S->gv[v].writes);
		S->r.guest_cli += READ_ONCE(S->gv[v].cli_reads);
		S->r.guest_retries += READ_ONCE(S->gv[v].retries);
	}
	S->r.waits += st.waits;
	S->r.wakeups += st.wakeups;
	S->r.wake_misses += st.wake_misses;
	S->r.faults += st.faults;
	S->r.notifications += st.notifications;
}

static void start(pthread_t *th, void *(*fn)(void *), long arg)
{
	TEST_ASSERT(!pthread_create(th, NULL, fn, (void *)arg), "pthread_create");
}

/* One racing round of @ms milliseconds. */
static void st_round(bool private, u64 ms)
{
	pthread_t reader[2], evictor, filler, sig, slot, pol, conv, wd;
	u64 t0, left;
	bool helpers = !private;
	int i, status;
	long v;

	S->policy = rnd() % NR_POL;
	S->policy_storm = !(rnd() % 3);
	S->slot_cycle = !private && !(rnd() % 3);
	S->records_only = rnd() & 1;
	S->apf = rnd() % 4;
	S->teardown = false;
	S->td_event = -1;
	st_create(private);
	ksft_print_msg("round: %s VM, policy %s%s%s%s%s, %llu ms\n",
		       private ? "SW-protected" : "default",
		       pol_name[S->policy],
		       S->policy_storm ? " changing" : "",
		       S->slot_cycle ? ", memslot cycling" : "",
		       S->records_only ? ", filled from records only" : "",
		       S->apf ? "" : ", guest without async #PF",
		       (unsigned long long)ms);

	if (helpers)
		for (i = 0; i < ST_HELPERS; i++)
			helper_start(i);
	for (v = 0; v < 2; v++)
		start(&reader[v], reader_thread, v);
	for (v = 0; v < ST_NVCPUS; v++)
		start(&S->vcpu_th[v], vcpu_thread, v);
	start(&wd, watchdog_thread, 0);
	start(&evictor, evictor_thread, 0);
	if (!S->records_only)
		start(&filler, filler_thread, 0);
	start(&sig, signal_thread, 0);
	if (S->slot_cycle)
		start(&slot, slot_thread, 0);
	if (S->policy_storm)
		start(&pol, policy_thread, 0);
	if (private)
		start(&conv, convert_thread, 0);

	t0 = gmem_presence_now_ns();
	for (;;) {
		left = ms * 1000 - (gmem_presence_now_ns() - t0) / 1000;
		if ((s64)left <= 0)
			break;
		sleep_us(min(left, 30000 + rnd() % 200000));
		if (helpers && (s64)(ms * 1000 - (gmem_presence_now_ns() - t0) / 1000) > 0)
			kill_one_helper();
	}

	S->stop_racers = 1;
	pthread_join(evictor, NULL);
	if (!S->records_only)
		pthread_join(filler, NULL);
	pthread_join(sig, NULL);
	if (S->slot_cycle)
		pthread_join(slot, NULL);
	if (S->policy_storm)
		pthread_join(pol, NULL);
	if (private)
		pthread_join(conv, NULL);

	/* Everything present: every vCPU and helper must now finish. */
	for (i = 0; i < ST_NPAGES; i++) {
		lock_range(i, 1);
		ps_fill(i);
		unlock_range(i, 1);
	}
	S->stop_vcpus = 1;
	for (v = 0; v < ST_NVCPUS; v++) {
		if (join_within(S->vcpu_th[v], 30, NULL))
			continue;
		dump_state();
		TEST_FAIL(
			  "vCPU %ld (access %llu, page %llu, busy %llu) not finished 30 s after every page was filled; policy %s; %llu faults %llu waits %llu wakeups",
			  v, (unsigned long long)S->gv[v].seq,
			  (unsigned long long)S->gv[v].page,
			  (unsigned long long)S->gv[v].busy,
			  pol_name[S->policy],
			  gmem_presence_stats(S->gmem).faults,
			  gmem_presence_stats(S->gmem).waits,
			  gmem_presence_stats(S->gmem).wakeups);
	}
	__atomic_store_n(&S->shm->stop, 1, __ATOMIC_RELEASE);
	if (helpers) {
		for (i = 0; i < ST_HELPERS; i++) {
			status = reap_within(S->shm->helper[i].pid, 30);
			helper_check_exit(i, status);
		}
	}
	S->stop_watchdog = 1;
	pthread_join(wd, NULL);
	S->stop_readers = 1;
	for (v = 0; v < 2; v++)
		pthread_join(reader[v], NULL);

	st_check();
	st_destroy();
	S->r.epochs++;
	round_done();
}

/*
 * A destructive end: vCPUs and helpers wait for pages nobody fills, then
 * @event: 0 closes the guest_memfd (helpers SIGKILLed first, they hold
 * it), 1 deletes the memslot, 2 switches the policy to EXIT.  Every vCPU
 * must come out, and after a close the notification fds read end of file.
 */
static void st_teardown_round(int event)
{
	struct kvm_gmem_presence_event ev;
	pthread_t reader[2];
	int i, status, v;
	u64 t0, npages = ST_NPAGES;
	ssize_t n;

	S->teardown = true;
	S->td_event = -1;
	S->policy = rnd() % NR_POL;
	if (event == 2 && S->policy == POL_EXIT)
		S->policy = POL_WAIT;
	S->policy_storm = false;
	S->slot_cycle = false;
	S->records_only = true;
	S->apf = true;
	st_create(false);
	ksft_print_msg("teardown: policy %s, %s\n", pol_name[S->policy],
		       event == 0 ? "close the guest_memfd" :
		       event == 1 ? "delete the memslot" : "switch to EXIT");

	/* Some pages are there, the others are waited for. */
	for (i = 0; i < npages; i++) {
		if (rnd() % 4)
			continue;
		lock_range(i, 1);
		ps_fill(i);
		unlock_range(i, 1);
	}
	for (i = 0; i < ST_HELPERS; i++)
		helper_start(i);
	for (v = 0; v < 2; v++)
		start(&reader[v], reader_thread, v);
	for (v = 0; v < ST_NVCPUS; v++)
		start(&S->vcpu_th[v], vcpu_thread, v);

	t0 = gmem_presence_now_ns();
	while (S->r.records < 3 && gmem_presence_now_ns() - t0 < 20000000000ull)
		sleep_us(2000);
	/*
	 * Two vCPUs and two helpers each wait on the first missing page they
	 * touch, which may be the same: three is not certain, one is.
	 */
	if (!S->r.records) {
		struct kvm_gmem_presence_stats st = gmem_presence_stats(S->gmem);

		dump_state();
		TEST_FAIL("%llu records read in 20 s; KVM: %llu faults, %llu records, %llu queued, %llu waits, %llu present; helpers %d (%llu accesses) %d (%llu accesses)",
			  S->r.records, st.faults, st.notifications,
			  st.events_queued, st.waits, st.nr_present,
			  S->shm->helper[0].pid,
			  (unsigned long long)S->shm->helper[0].accesses,
			  S->shm->helper[1].pid,
			  (unsigned long long)S->shm->helper[1].accesses);
	}
	sleep_us(rnd() % 100000);

	S->td_event = event;
	switch (event) {
	case 0:
		for (i = 0; i < ST_HELPERS; i++) {
			kill(S->shm->helper[i].pid, SIGKILL);
			status = reap_within(S->shm->helper[i].pid, 10);
			TEST_ASSERT(status != -1 && WIFSIGNALED(status),
				    "helper waiting for a page: not killed (%#x)",
				    status);
		}
		close(S->gmem);
		S->gmem = -1;
		break;
	case 1:
		slot_set(false);
		break;
	case 2:
		set_policy(POL_EXIT);
		break;
	}
	for (v = 0; v < ST_NVCPUS; v++) {
		if (!join_within(S->vcpu_th[v], 20, NULL))
			dump_state();
		TEST_ASSERT(S->vcpu_done[v],
			    "vCPU %d still in KVM_RUN 20 s after the %s (policy %s)",
			    v, event == 0 ? "close" : event == 1 ? "memslot deletion" :
			    "switch to EXIT", pol_name[S->policy]);
	}

	if (event == 0) {
		/* Queued records, then end of file. */
		S->stop_readers = 1;
		for (v = 0; v < 2; v++)
			TEST_ASSERT(join_within(reader[v], 20, NULL),
				    "notification fd: no end of file 20 s after the close");
		n = read(S->nfd[0], &ev, sizeof(ev));
		TEST_ASSERT(n == 0, "read after the end: %zd", n);
	} else {
		/* The helpers still wait; fill the pages and they finish. */
		for (i = 0; i < npages; i++) {
			lock_range(i, 1);
			ps_fill(i);
			unlock_range(i, 1);
		}
		__atomic_store_n(&S->shm->stop, 1, __ATOMIC_RELEASE);
		for (i = 0; i < ST_HELPERS; i++)
			helper_check_exit(i, reap_within(S->shm->helper[i].pid, 30));
		S->stop_readers = 1;
		for (v = 0; v < 2; v++)
			pthread_join(reader[v], NULL);
		TEST_ASSERT_EQ(gmem_presence_stats(S->gmem).events_queued, 0);
		TEST_ASSERT_EQ(gmem_presence_stats(S->gmem).notifications,
			       S->r.records);
		for (i = 0; i < npages; i++)
			TEST_ASSERT(ps_of(i)->records <= ps_of(i)->periods,
				    "page %d: %llu records, %llu periods", i,
				    (unsigned long long)ps_of(i)->records,
				    (unsigned long long)ps_of(i)->periods);
	}
	for (v = 0; v < ST_NVCPUS; v++)
		S->r.guest_accesses += READ_ONCE(S->gv[v].accesses);
	st_destroy();
	S->r.teardown[event]++;
	S->r.epochs++;
	round_done();
}

/*
 * The whole VMM process is SIGKILLed while its vCPUs and helpers wait for
 * pages; a notification fd it passed out over SCM_RIGHTS must then read end
 * of file, its queued records first.
 */
static void st_kill_round(void)
{
	struct kvm_gmem_presence_event ev;
	int sv[2], nfd, status, records = 0;
	struct pollfd pfd;
	u64 t0;
	ssize_t n;
	pid_t pid;

	TEST_ASSERT(!socketpair(AF_UNIX, SOCK_DGRAM, 0, sv), "socketpair");
	S->policy = rnd() % NR_POL;
	pid = fork();
	TEST_ASSERT(pid >= 0, "fork");
	if (!pid) {
		long v;

		close(sv[0]);
		S->teardown = true;
		S->td_event = -1;
		S->records_only = true;
		S->apf = true;
		st_create(false);
		gmem_presence_send_fd(sv[1], S->nfd[1]);
		for (v = 0; v < ST_HELPERS; v++)
			helper_start(v);
		for (v = 0; v < ST_NVCPUS; v++)
			start(&S->vcpu_th[v], vcpu_thread, v);
		for (;;)
			pause();
	}
	close(sv[1]);
	nfd = gmem_presence_recv_fd(sv[0]);
	TEST_ASSERT(nfd >= 0, "no notification fd from the VMM");
	close(sv[0]);
	ksft_print_msg("teardown: SIGKILL the VMM, policy %s\n",
		       pol_name[S->policy]);

	/* Wait for a record: something waits for a page now. */
	pfd = (struct pollfd){ .fd = nfd, .events = POLLIN };
	TEST_ASSERT(poll(&pfd, 1, 20000) == 1, "no record within 20 s");
	sleep_us(rnd() % 100000);
	kill(pid, SIGKILL);
	status = reap_within(pid, 20);
	TEST_ASSERT(status != -1 && WIFSIGNALED(status) &&
		    WTERMSIG(status) == SIGKILL,
		    "VMM not dead 20 s after SIGKILL (%#x)", status);

	t0 = gmem_presence_now_ns();
	for (;;) {
		n = read(nfd, &ev, sizeof(ev));
		if (!n)
			break;
		if (n < 0 && errno == EAGAIN) {
			TEST_ASSERT(gmem_presence_now_ns() - t0 < 20000000000ull,
				    "notification fd: no end of file 20 s after the VMM died");
			sleep_us(5000);
			continue;
		}
		TEST_ASSERT(n == sizeof(ev), "read: %zd errno %d", n, errno);
		TEST_ASSERT_EQ(ev.type, KVM_GMEM_EVENT_FAULT);
		records++;
	}
	TEST_ASSERT(records <= ST_NPAGES, "%d records left for %d pages",
		    records, ST_NPAGES);
	pfd = (struct pollfd){ .fd = nfd, .events = POLLIN };
	TEST_ASSERT(poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLHUP),
		    "poll after the end: revents %#x", pfd.revents);
	TEST_ASSERT(ioctl(nfd, KVM_SET_MEMORY_PRESENT, NULL) == -1 &&
		    errno == ENOTTY, "ioctl on a notification fd: errno %d",
		    errno);
	close(nfd);
	S->r.teardown[3]++;
	S->r.epochs++;
	round_done();
}

/* ------------------------------------------------------------ subtests */

static void st_setup(u64 salt)
{
	struct sigaction sa = { .sa_handler = noop_handler };

	S = calloc(1, sizeof(*S));
	TEST_ASSERT(S, "calloc");
	S->shm = mmap(NULL, sizeof(*S->shm), PROT_READ | PROT_WRITE,
		      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	TEST_ASSERT(S->shm != MAP_FAILED, "mmap");
	S->seed = opt_seed ^ salt;
	S->self = getpid();
	seed_thread(salt);
	sigaction(SIGUSR1, &sa, NULL);
}

static void add_totals(void)
{
	unsigned long long *dst = (void *)totals, *src = (void *)&S->c;
	size_t i;

	for (i = 0; i < sizeof(S->c) / sizeof(*src); i++)
		__atomic_add_fetch(&dst[i], src[i], __ATOMIC_RELAXED);
}

static void print_counts(const char *name, u64 ms)
{
	struct counts *c = &S->c;

	ksft_print_msg("%s: %llu rounds in %llu ms\n", name,
		       (unsigned long long)c->epochs, (unsigned long long)ms);
	ksft_print_msg("  guest: %llu accesses (%llu KVM-internal, %llu writes, %llu with interrupts off), %llu MMIO retries\n",
		       c->guest_accesses, c->guest_outs, c->guest_writes,
		       c->guest_cli, c->guest_retries);
	ksft_print_msg("  helpers: %llu accesses (%llu writes), %llu SIGKILLed, %llu signals\n",
		       c->helper_accesses, c->helper_writes, c->kills,
		       c->signals);
	ksft_print_msg("  records: %llu (vCPU %llu, KVM %llu, mmap %llu); exits %llu, EINTR %llu, MMIO %llu, attribute races %llu\n",
		       c->records, c->rec_vcpu, c->rec_kvm, c->rec_mmap,
		       c->exits, c->eintr, c->mmio, c->attr_exits);
	ksft_print_msg("  ops: %llu COPY, %llu MARK, %llu REARM, %llu DISCARD, %llu punch, %llu private REARM refused, %llu model checks\n",
		       c->copies, c->marks, c->rearms, c->discards, c->punches,
		       c->eperm, c->checks);
	ksft_print_msg("  races: %llu memslot cycles, %llu policy changes, %llu conversions; async #PF %llu injected, %llu halted, %llu ready, %llu fallbacks\n",
		       c->slot_cycles, c->policy_changes, c->conversions,
		       c->async_injected, c->async_halted, c->async_ready,
		       c->async_fallbacks);
	ksft_print_msg("  kernel: %llu faults, %llu records, %llu waits, %llu wakeups, %llu wake misses\n",
		       c->faults, c->notifications, c->waits, c->wakeups,
		       c->wake_misses);
	if (c->teardown[0] + c->teardown[1] + c->teardown[2] + c->teardown[3])
		ksft_print_msg("  teardowns: %llu close, %llu memslot delete, %llu switch to EXIT, %llu SIGKILL\n",
			       c->teardown[0], c->teardown[1], c->teardown[2],
			       c->teardown[3]);
}

/* The share of the run time of each subtest, in percent. */
#define SHARE_RACE	55
#define SHARE_PRIVATE	20
#define SHARE_TEARDOWN	25

static u64 share_ms(int pct)
{
	return (u64)opt_seconds * 10 * pct;
}

static void run_rounds(bool private, int pct, const char *name)
{
	u64 budget = share_ms(pct), t0 = gmem_presence_now_ns(), el, ms;
	unsigned int i;

	for (i = 0; i < opt_iterations; i++) {
		el = (gmem_presence_now_ns() - t0) / 1000000;
		if (el + 500 > budget)
			break;
		/* Rounds of 1 to 4 s, shorter if the budget is. */
		ms = min(1000 + rnd() % 3000, budget - el);
		st_round(private, ms);
	}
	el = (gmem_presence_now_ns() - t0) / 1000000;
	print_counts(name, el);
	TEST_ASSERT(S->c.epochs > 0, "no round run");
	TEST_ASSERT(S->c.guest_accesses > 0, "the guests made no progress");
	add_totals();
}

TEST(race)
{
	st_setup(1);
	run_rounds(false, SHARE_RACE, "race");
	ASSERT_GT(S->c.records, 0);
	ASSERT_GT(S->c.helper_accesses, 0);
}

TEST(private_conversion)
{
	if (!(kvm_check_cap(KVM_CAP_VM_TYPES) & BIT(KVM_X86_SW_PROTECTED_VM)))
		SKIP(return, "KVM_X86_SW_PROTECTED_VM not supported");
	st_setup(2);
	run_rounds(true, SHARE_PRIVATE, "private_conversion");
	ASSERT_GT(S->c.conversions, 0);
}

TEST(teardown)
{
	u64 budget = share_ms(SHARE_TEARDOWN), t0, el;
	unsigned int i;

	st_setup(3);
	t0 = gmem_presence_now_ns();
	for (i = 0; i < opt_iterations; i++) {
		el = (gmem_presence_now_ns() - t0) / 1000000;
		if (i >= 4 && el + 800 > budget)
			break;
		/* Each kind once first, then at random. */
		if ((i < 4 ? i : rnd() % 4) == 3)
			st_kill_round();
		else
			st_teardown_round(i < 4 ? i : rnd() % 3);
	}
	print_counts("teardown", (gmem_presence_now_ns() - t0) / 1000000);
	add_totals();
}

static void print_totals(void)
{
	struct counts *c = totals;

	if (getpid() != main_pid)
		return;
	ksft_print_msg("STRESS TOTAL: %llu rounds, %llu guest accesses, %llu helper accesses, %llu records, %llu COPY + %llu MARK + %llu REARM + %llu DISCARD + %llu punch, %llu memslot cycles, %llu policy changes, %llu conversions, %llu helpers killed, %llu signals, %llu async #PF, %llu teardowns, seed %llu\n",
		       c->epochs, c->guest_accesses, c->helper_accesses,
		       c->records, c->copies, c->marks, c->rearms, c->discards,
		       c->punches, c->slot_cycles, c->policy_changes,
		       c->conversions, c->kills, c->signals, c->async_injected,
		       c->teardown[0] + c->teardown[1] + c->teardown[2] +
		       c->teardown[3], (unsigned long long)opt_seed);
}

int main(int argc, char **argv)
{
	struct __fixture_metadata *f;
	struct __test_metadata *t;
	int opt;

	opt_seed = gmem_presence_now_ns();
	while ((opt = getopt(argc, argv, "d:i:s:w:")) != -1) {
		switch (opt) {
		case 'd':
			opt_seconds = atoi_positive("seconds", optarg);
			break;
		case 'i':
			opt_iterations = atoi_positive("iterations", optarg);
			break;
		case 's':
			opt_seed = strtoull(optarg, NULL, 0);
			break;
		case 'w':
			opt_watchdog_ms = atoi_positive("watchdog ms", optarg);
			break;
		default:
			fprintf(stderr, "usage: %s [-d seconds] [-i iterations] [-s seed] [-w ms] [-- harness options]\n",
				argv[0]);
			return KSFT_FAIL;
		}
	}
	ksft_print_msg("stress: %u s, at most %u rounds per subtest, seed %llu, watchdog %u ms\n",
		       opt_seconds, opt_iterations,
		       (unsigned long long)opt_seed, opt_watchdog_ms);

	/* Each subtest's share of the time, plus room to finish its round. */
	for (f = __fixture_list; f; f = f->next)
		for (t = f->tests; t; t = t->next)
			t->timeout = opt_seconds + 120;

	totals = mmap(NULL, sizeof(*totals), PROT_READ | PROT_WRITE,
		      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	TEST_ASSERT(totals != MAP_FAILED, "mmap");
	main_pid = getpid();
	atexit(print_totals);

	/* The rest is the harness's; its getopt() starts afresh. */
	argv[optind - 1] = argv[0];
	argc -= optind - 1;
	argv += optind - 1;
	optind = 0;
	return test_harness_run(argc, argv);
}
