// SPDX-License-Identifier: GPL-2.0-only
/*
 * Asynchronous page faults on not-present guest_memfd pages.
 *
 * The guest speaks the paravirtual async #PF protocol (data area, page-ready
 * interrupt, acknowledging MSR).  Task A touches a missing page; on "page
 * not present" the #PF handler switches to task B, which counts its progress
 * with interrupts on, until "page ready" arrives with the same token; then A
 * retries and must read the populated bytes.
 */
#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>

#include <linux/kvm.h>
#include <linux/kvm_para.h>
#include <linux/sizes.h>

#include "apic.h"
#include "guest_memfd_presence.h"
#include "kvm_util.h"
#include "processor.h"
#include "svm_util.h"
#include "test_util.h"
#include "kselftest_harness.h"

#define TEST_GPA	SZ_4G
#define TEST_SLOT	1
/* One more page than x86's ASYNC_PF_PER_VCPU, the per-vCPU queue length. */
#define QF_PAGES	(64 + 1)
#define APF_VECTOR	0xe0
#define PATTERN		0x0123456789abcdefull

#define APF_EN_FULL	(KVM_ASYNC_PF_ENABLED | KVM_ASYNC_PF_DELIVERY_AS_INT | \
			 KVM_ASYNC_PF_SEND_ALWAYS)

/* Guest state, read back with sync_global_from_guest(). */
static struct kvm_vcpu_pv_apf_data apf_data __aligned(64);
static u32 np_token, ready_token;
static u64 nr_not_present, nr_ready, nr_broadcast, progress_b;
/* TSC cycles: task A's access of the test page, task B spinning alone. */
static u64 a_stall_cycles, spin_cycles;
/* Knobs, set with sync_global_to_guest(). */
static u64 sync_every;
static bool touch_again, disable_in_handler, spin_stop;

/* Task B: count until "page ready" for @token arrives or the host says stop. */
static void task_b(u32 token)
{
	while (READ_ONCE(ready_token) != token && !READ_ONCE(spin_stop)) {
		progress_b++;
		if (sync_every && !(progress_b % sync_every))
			GUEST_SYNC(progress_b);
	}
}

static void guest_pf_handler(struct ex_regs *regs)
{
	u32 flags = READ_ONCE(apf_data.flags);
	u32 token = get_cr2();

	WRITE_ONCE(apf_data.flags, 0);
	GUEST_ASSERT_EQ(flags, KVM_PV_REASON_PAGE_NOT_PRESENT);
	nr_not_present++;
	WRITE_ONCE(np_token, token);

	/* Task B runs with interrupts on, so "page ready" can arrive. */
	sti();
	if (disable_in_handler) {
		wrmsr(MSR_KVM_ASYNC_PF_EN, 0);
		cli();
		return;
	}
	if (touch_again)
		GUEST_ASSERT_EQ(READ_ONCE(*(u64 *)TEST_GPA), PATTERN);

	task_b(token);
	cli();
}

static void guest_apf_isr(struct ex_regs *regs)
{
	u32 token = READ_ONCE(apf_data.token);

	if (token == ~0u) {
		nr_broadcast++;
	} else {
		nr_ready++;
		WRITE_ONCE(ready_token, token);
	}
	WRITE_ONCE(apf_data.token, 0);
	wrmsr(MSR_KVM_ASYNC_PF_ACK, 1);
	x2apic_write_reg(APIC_EOI, 0);
}

/* Task A. */
static void guest_code(u64 apf_gpa, u64 en_flags, u64 irqs_off)
{
	u64 t0, v;

	x2apic_enable();
	if (en_flags) {
		wrmsr(MSR_KVM_ASYNC_PF_INT, APF_VECTOR);
		wrmsr(MSR_KVM_ASYNC_PF_EN, apf_gpa | en_flags);
	}
	sti_nop();
	GUEST_SYNC(0);

	if (irqs_off)
		cli();
	t0 = rdtsc();
	v = READ_ONCE(*(u64 *)TEST_GPA);
	WRITE_ONCE(a_stall_cycles, rdtsc() - t0);
	GUEST_ASSERT_EQ(v, PATTERN);
	GUEST_DONE();
}

/* Task B alone, no missing page: the reference for the progress figure. */
static void guest_spin(u64 unused0, u64 unused1, u64 unused2)
{
	u64 t0;

	GUEST_SYNC(0);
	t0 = rdtsc();
	task_b(~0u);
	WRITE_ONCE(spin_cycles, rdtsc() - t0);
	GUEST_DONE();
}

/*
 * Queue full: touch QF_PAGES missing pages in turn.  The #PF handler is not
 * installed, so each "page not present" is swallowed by kvm_asm_safe() and
 * the loop goes on to the next page, leaving the async #PF pending.  The
 * last page finds the queue full and takes the fallback (EXIT); after
 * userspace has populated everything, the access is retried and every
 * pending fault must complete with "page ready".
 */
static void guest_queue_full(u64 apf_gpa, u64 en_flags, u64 unused)
{
	u64 i;
	u8 vec;

	x2apic_enable();
	wrmsr(MSR_KVM_ASYNC_PF_INT, APF_VECTOR);
	wrmsr(MSR_KVM_ASYNC_PF_EN, apf_gpa | en_flags);
	sti_nop();
	GUEST_SYNC(0);

	for (i = 0; i < QF_PAGES; i++) {
		vec = kvm_asm_safe("cmpb $0, (%[p])",
				   [p] "r"(TEST_GPA + i * PAGE_SIZE));
		if (vec == PF_VECTOR) {
			GUEST_ASSERT_EQ(READ_ONCE(apf_data.flags),
					KVM_PV_REASON_PAGE_NOT_PRESENT);
			WRITE_ONCE(apf_data.flags, 0);
			nr_not_present++;
		} else {
			GUEST_ASSERT_EQ(vec, 0);
		}
	}
	while (READ_ONCE(nr_ready) < nr_not_present)
		cpu_relax();
	GUEST_DONE();
}

static u64 l2_value;

static void l2_touch(void)
{
	WRITE_ONCE(l2_value, READ_ONCE(*(u64 *)TEST_GPA));
	asm volatile("vmmcall");
}

/* Nested: L2 touches the missing page; L1 has async #PF enabled. */
static void guest_nested(u64 apf_gpa, u64 en_flags, u64 svm_gva)
{
	struct svm_test_data *svm = (struct svm_test_data *)svm_gva;

	x2apic_enable();
	wrmsr(MSR_KVM_ASYNC_PF_INT, APF_VECTOR);
	wrmsr(MSR_KVM_ASYNC_PF_EN, apf_gpa | en_flags);
	sti_nop();
	GUEST_SYNC(0);

	generic_svm_setup(svm, l2_touch);
	run_guest(svm->vmcb, svm->vmcb_gpa);
	GUEST_ASSERT_EQ(svm->vmcb->control.exit_code, SVM_EXIT_VMMCALL);
	GUEST_ASSERT_EQ(READ_ONCE(l2_value), PATTERN);
	GUEST_DONE();
}

struct apf_vm {
	struct kvm_vm *vm;
	struct kvm_vcpu *vcpu;
	int gmem;
	int nfd;
};

static void set_policy(struct kvm_vm *vm, u64 policy, u64 fallback)
{
	struct kvm_enable_cap cap = {
		.cap = KVM_CAP_GUEST_MEMFD_PRESENCE,
		.args = { policy, fallback },
	};

	vm_ioctl(vm, KVM_ENABLE_CAP, &cap);
}

static void __apf_vm_create(struct apf_vm *t, void *guest, int npages,
			    u64 en_flags, u64 arg2, u64 policy, u64 fallback,
			    bool private)
{
	const u64 size = npages * PAGE_SIZE;
	const struct vm_shape protected_shape = {
		.mode = VM_MODE_DEFAULT,
		.type = KVM_X86_SW_PROTECTED_VM,
	};

	t->vm = vm_create_shape_with_one_vcpu(private ? protected_shape :
					      VM_SHAPE_DEFAULT, &t->vcpu,
					      guest);
	vm_install_exception_handler(t->vm, PF_VECTOR, guest_pf_handler);
	vm_install_exception_handler(t->vm, APF_VECTOR, guest_apf_isr);

	if (private) {
		/* Private memory: no mmap, shared half from anonymous memory. */
		t->gmem = vm_create_guest_memfd(t->vm, size,
						GUEST_MEMFD_FLAG_PRESENCE);
		vm_mem_add(t->vm, VM_MEM_SRC_ANONYMOUS, TEST_GPA, TEST_SLOT,
			   npages, KVM_MEM_GUEST_MEMFD, t->gmem, 0);
		vm_mem_set_private(t->vm, TEST_GPA, size);
	} else {
		t->gmem = vm_create_guest_memfd(t->vm, size,
						GUEST_MEMFD_FLAG_MMAP |
						GUEST_MEMFD_FLAG_INIT_SHARED |
						GUEST_MEMFD_FLAG_PRESENCE);
		vm_set_user_memory_region2(t->vm, TEST_SLOT,
					   KVM_MEM_GUEST_MEMFD, TEST_GPA,
					   size, NULL, t->gmem, 0);
	}
	virt_map(t->vm, TEST_GPA, TEST_GPA, npages);
	vcpu_args_set(t->vcpu, 3, addr_gva2gpa(t->vm, (gva_t)&apf_data),
		      en_flags, arg2);
	set_policy(t->vm, policy, fallback);
	t->nfd = gmem_notify_fd(t->gmem, O_NONBLOCK);
	TEST_ASSERT(t->nfd >= 0, "KVM_GMEM_GET_NOTIFY_FD");
}

static void apf_vm_create(struct apf_vm *t, u64 en_flags, bool irqs_off,
			  u64 policy, u64 fallback)
{
	__apf_vm_create(t, guest_code, 1, en_flags, irqs_off, policy,
			fallback, false);
}

static void apf_vm_free(struct apf_vm *t)
{
	close(t->nfd);
	kvm_vm_free(t->vm);
	if (t->gmem >= 0)
		close(t->gmem);
}

static u64 run_until_sync(struct kvm_vcpu *vcpu)
{
	struct ucall uc;

	vcpu_run(vcpu);
	switch (get_ucall(vcpu, &uc)) {
	case UCALL_SYNC:
		return uc.args[1];
	case UCALL_ABORT:
		REPORT_GUEST_ASSERT(uc);
	default:
		TEST_FAIL("unexpected exit %s", exit_reason_str(vcpu->run->exit_reason));
	}
	return 0;
}

static void populate_pages(int gmem, int npages)
{
	u64 *buf = aligned_alloc(PAGE_SIZE, npages * PAGE_SIZE);
	size_t i;

	for (i = 0; i < npages * PAGE_SIZE / 8; i++)
		buf[i] = PATTERN;
	gmem_copy_in(gmem, 0, buf, npages * PAGE_SIZE);
	free(buf);
}

static void populate(int gmem)
{
	populate_pages(gmem, 1);
}

static bool wait_record(int nfd, int ms)
{
	struct kvm_gmem_presence_event ev;

	if (!gmem_read_event(nfd, &ev, ms))
		return false;
	TEST_ASSERT_EQ(ev.origin, KVM_GMEM_ORIGIN_VCPU);
	TEST_ASSERT_EQ(ev.offset, 0);
	return true;
}

/* @n "not present" and @n "page ready" seen by the guest, @n injected. */
static void assert_async_counts(struct apf_vm *t, u64 n)
{
	sync_global_from_guest(t->vm, nr_not_present);
	sync_global_from_guest(t->vm, nr_ready);
	TEST_ASSERT_EQ(nr_not_present, n);
	TEST_ASSERT_EQ(nr_ready, n);
	TEST_ASSERT_EQ(vcpu_get_stat(t->vcpu, gmem_async_injected), n);
}

static u64 get_stats_notifications(int gmem)
{
	return gmem_presence_stats(gmem).notifications;
}

static void *vcpu_thread(void *arg)
{
	struct kvm_vcpu *vcpu = arg;
	long r = __vcpu_run(vcpu);

	return (void *)(r ? (long)-errno : 0);
}

/* Populate @ms after the record arrives; return task B's progress. */
static u64 run_with_missing_page(struct apf_vm *t, int ms)
{
	pthread_t th;
	void *ret;

	pthread_create(&th, NULL, vcpu_thread, t->vcpu);
	TEST_ASSERT(wait_record(t->nfd, 20000), "no record");
	usleep(ms * 1000);
	populate(t->gmem);
	pthread_join(th, &ret);
	TEST_ASSERT_EQ((long)ret, 0);
	gmem_presence_assert_done(t->vcpu);
	sync_global_from_guest(t->vm, progress_b);
	return progress_b;
}

/*
 * ASYNC with EXIT as fallback; the vCPU runs in @th until task A's async #PF
 * is pending and its record has been read.
 */
static void apf_vm_start_pending(struct apf_vm *t, pthread_t *th)
{
	apf_vm_create(t, APF_EN_FULL, false, KVM_GMEM_PRESENCE_ASYNC,
		      KVM_GMEM_PRESENCE_EXIT);
	run_until_sync(t->vcpu);
	pthread_create(th, NULL, vcpu_thread, t->vcpu);
	TEST_ASSERT(wait_record(t->nfd, 20000), "no record");
	usleep(100000);
}

/* Inject-and-continue: one "not present", one "page ready", same token. */
TEST(async_inject_and_continue)
{
	struct apf_vm t;

	apf_vm_create(&t, APF_EN_FULL, false, KVM_GMEM_PRESENCE_ASYNC,
		      KVM_GMEM_PRESENCE_EXIT);
	run_until_sync(t.vcpu);
	run_with_missing_page(&t, 200);

	sync_global_from_guest(t.vm, nr_not_present);
	sync_global_from_guest(t.vm, nr_ready);
	sync_global_from_guest(t.vm, np_token);
	sync_global_from_guest(t.vm, ready_token);
	ASSERT_EQ(nr_not_present, 1);
	ASSERT_EQ(nr_ready, 1);
	ASSERT_EQ(np_token, ready_token);
	ASSERT_GT(progress_b, 0);
	ASSERT_EQ(vcpu_get_stat(t.vcpu, gmem_async_injected), 1);
	ASSERT_EQ(vcpu_get_stat(t.vcpu, gmem_async_ready), 1);
	ASSERT_EQ(vcpu_get_stat(t.vcpu, gmem_async_fallbacks), 0);
	ASSERT_FALSE(wait_record(t.nfd, 0));
	apf_vm_free(&t);
}

/* Private memory of a SW-protected VM takes the async path too, no WARN. */
TEST(async_private_memory)
{
	struct apf_vm t;

	if (!(kvm_check_cap(KVM_CAP_VM_TYPES) & BIT(KVM_X86_SW_PROTECTED_VM)))
		SKIP(return, "KVM_X86_SW_PROTECTED_VM not supported");

	__apf_vm_create(&t, guest_code, 1, APF_EN_FULL, false,
			KVM_GMEM_PRESENCE_ASYNC, KVM_GMEM_PRESENCE_EXIT, true);
	run_until_sync(t.vcpu);
	run_with_missing_page(&t, 100);

	assert_async_counts(&t, 1);
	apf_vm_free(&t);
}

/* The guest never enabled async #PF: the fallback (EXIT) applies. */
TEST(fallback_guest_disabled)
{
	struct apf_vm t;
	int r;

	apf_vm_create(&t, 0, false, KVM_GMEM_PRESENCE_ASYNC,
		      KVM_GMEM_PRESENCE_EXIT);
	run_until_sync(t.vcpu);
	r = __vcpu_run(t.vcpu);
	ASSERT_EQ(r, -1);
	ASSERT_EQ(errno, EFAULT);
	ASSERT_EQ(t.vcpu->run->exit_reason, KVM_EXIT_MEMORY_FAULT);
	ASSERT_EQ(t.vcpu->run->memory_fault.flags,
		  KVM_MEMORY_EXIT_FLAG_NOT_PRESENT);
	ASSERT_EQ(vcpu_get_stat(t.vcpu, gmem_async_fallbacks), 1);
	ASSERT_EQ(vcpu_get_stat(t.vcpu, gmem_async_fallback_disabled), 1);
	ASSERT_TRUE(wait_record(t.nfd, 0));
	populate(t.gmem);
	vcpu_run(t.vcpu);
	gmem_presence_assert_done(t.vcpu);
	apf_vm_free(&t);
}

static void *populate_later(void *arg)
{
	struct apf_vm *t = arg;

	TEST_ASSERT(wait_record(t->nfd, 20000), "no record");
	usleep(100000);
	populate(t->gmem);
	return NULL;
}

/*
 * Run the vCPU to completion while another thread populates the page; the
 * vCPU must not leave KVM_RUN for the missing page.
 */
static void run_populating_later(struct apf_vm *t)
{
	pthread_t th;

	run_until_sync(t->vcpu);
	pthread_create(&th, NULL, populate_later, t);
	vcpu_run(t->vcpu);
	gmem_presence_assert_done(t->vcpu);
	pthread_join(th, NULL);
	sync_global_from_guest(t->vm, nr_not_present);
}

/* Interrupts off: no async #PF can be injected; the WAIT fallback sleeps. */
TEST(fallback_irqs_blocked)
{
	struct apf_vm t;

	apf_vm_create(&t, APF_EN_FULL, true, KVM_GMEM_PRESENCE_ASYNC,
		      KVM_GMEM_PRESENCE_WAIT);
	run_populating_later(&t);
	ASSERT_EQ(nr_not_present, 0);
	ASSERT_EQ(vcpu_get_stat(t.vcpu, gmem_async_injected), 0);
	ASSERT_EQ(vcpu_get_stat(t.vcpu, gmem_async_fallbacks), 1);
	ASSERT_EQ(vcpu_get_stat(t.vcpu, gmem_async_fallback_blocked), 1);
	ASSERT_EQ(vcpu_get_stat(t.vcpu, gmem_presence_waits), 1);
	apf_vm_free(&t);
}

/* CPL0 without SEND_ALWAYS: "APF halt" until the page is ready. */
TEST(cpl0_halts)
{
	struct apf_vm t;

	apf_vm_create(&t, KVM_ASYNC_PF_ENABLED | KVM_ASYNC_PF_DELIVERY_AS_INT,
		      false, KVM_GMEM_PRESENCE_ASYNC, KVM_GMEM_PRESENCE_EXIT);
	run_populating_later(&t);
	ASSERT_EQ(nr_not_present, 0);
	ASSERT_EQ(vcpu_get_stat(t.vcpu, gmem_async_halted), 1);
	ASSERT_EQ(vcpu_get_stat(t.vcpu, gmem_async_ready), 1);
	apf_vm_free(&t);
}

/* Touching a page already reported missing halts until it is ready. */
TEST(repeated_fault_halts)
{
	struct apf_vm t;

	apf_vm_create(&t, APF_EN_FULL, false, KVM_GMEM_PRESENCE_ASYNC,
		      KVM_GMEM_PRESENCE_EXIT);
	touch_again = true;
	sync_global_to_guest(t.vm, touch_again);
	run_until_sync(t.vcpu);
	run_with_missing_page(&t, 100);

	assert_async_counts(&t, 1);
	ASSERT_EQ(get_stats_notifications(t.gmem), 1);
	apf_vm_free(&t);
}

/*
 * The per-vCPU async #PF queue is full: the fault that finds it full takes
 * the fallback (EXIT), and the pending ones still complete.
 */
TEST(fallback_queue_full)
{
	struct apf_vm t;

	__apf_vm_create(&t, guest_queue_full, QF_PAGES, APF_EN_FULL, 0,
			KVM_GMEM_PRESENCE_ASYNC, KVM_GMEM_PRESENCE_EXIT, false);
	/* Let kvm_asm_safe() catch "page not present". */
	vm_install_exception_handler(t.vm, PF_VECTOR, NULL);
	run_until_sync(t.vcpu);

	gmem_presence_assert_exit(t.vcpu, __vcpu_run(t.vcpu),
				  TEST_GPA + (QF_PAGES - 1) * PAGE_SIZE, 0);
	ASSERT_EQ(vcpu_get_stat(t.vcpu, gmem_async_injected), QF_PAGES - 1);
	ASSERT_EQ(vcpu_get_stat(t.vcpu, gmem_async_fallbacks), 1);
	ASSERT_EQ(vcpu_get_stat(t.vcpu, gmem_async_fallback_queue_full), 1);
	ASSERT_EQ(vcpu_get_stat(t.vcpu, gmem_async_ready), 0);
	ASSERT_EQ(get_stats_notifications(t.gmem), QF_PAGES);

	populate_pages(t.gmem, QF_PAGES);
	vcpu_run(t.vcpu);
	gmem_presence_assert_done(t.vcpu);
	sync_global_from_guest(t.vm, nr_not_present);
	sync_global_from_guest(t.vm, nr_ready);
	ASSERT_EQ(nr_not_present, QF_PAGES - 1);
	ASSERT_EQ(nr_ready, QF_PAGES - 1);
	ASSERT_EQ(vcpu_get_stat(t.vcpu, gmem_async_ready), QF_PAGES - 1);
	ASSERT_EQ(get_stats_notifications(t.gmem), QF_PAGES);
	apf_vm_free(&t);
}

/* A fault taken while the vCPU runs L2 gets the fallback (EXIT). */
TEST(fallback_nested)
{
	struct apf_vm t;
	gva_t svm_gva;

	if (!kvm_cpu_has(X86_FEATURE_SVM))
		SKIP(return, "nested SVM not available");

	__apf_vm_create(&t, guest_nested, 1, APF_EN_FULL, 0,
			KVM_GMEM_PRESENCE_ASYNC, KVM_GMEM_PRESENCE_EXIT, false);
	vcpu_alloc_svm(t.vm, &svm_gva);
	vcpu_args_set(t.vcpu, 3, addr_gva2gpa(t.vm, (gva_t)&apf_data),
		      APF_EN_FULL, svm_gva);
	run_until_sync(t.vcpu);

	gmem_presence_assert_exit(t.vcpu, __vcpu_run(t.vcpu), TEST_GPA, 0);
	ASSERT_EQ(vcpu_get_stat(t.vcpu, gmem_async_injected), 0);
	ASSERT_EQ(vcpu_get_stat(t.vcpu, gmem_async_fallbacks), 1);
	ASSERT_EQ(vcpu_get_stat(t.vcpu, gmem_async_fallback_nested), 1);
	ASSERT_TRUE(wait_record(t.nfd, 0));

	populate(t.gmem);
	vcpu_run(t.vcpu);
	gmem_presence_assert_done(t.vcpu);
	sync_global_from_guest(t.vm, nr_not_present);
	ASSERT_EQ(nr_not_present, 0);
	apf_vm_free(&t);
}

/*
 * Prefetching (KVM_PRE_FAULT_MEMORY) is not a guest access: no async #PF,
 * no fallback, no record; it fails with ENOENT until the page is present.
 */
TEST(prefetch_not_async)
{
	struct kvm_pre_fault_memory range = {
		.gpa = TEST_GPA,
		.size = PAGE_SIZE,
	};
	struct apf_vm t;
	int r;

	if (!kvm_check_cap(KVM_CAP_PRE_FAULT_MEMORY))
		SKIP(return, "KVM_PRE_FAULT_MEMORY not supported");

	apf_vm_create(&t, APF_EN_FULL, false, KVM_GMEM_PRESENCE_ASYNC,
		      KVM_GMEM_PRESENCE_WAIT);
	run_until_sync(t.vcpu);

	r = __vcpu_ioctl(t.vcpu, KVM_PRE_FAULT_MEMORY, &range);
	ASSERT_EQ(r, -1);
	ASSERT_EQ(errno, ENOENT);
	ASSERT_EQ(vcpu_get_stat(t.vcpu, gmem_async_injected), 0);
	ASSERT_EQ(vcpu_get_stat(t.vcpu, gmem_async_halted), 0);
	ASSERT_EQ(vcpu_get_stat(t.vcpu, gmem_async_fallbacks), 0);
	ASSERT_FALSE(wait_record(t.nfd, 0));
	ASSERT_EQ(get_stats_notifications(t.gmem), 0);

	populate(t.gmem);
	vcpu_ioctl(t.vcpu, KVM_PRE_FAULT_MEMORY, &range);
	ASSERT_EQ(range.size, 0);
	vcpu_run(t.vcpu);
	gmem_presence_assert_done(t.vcpu);
	sync_global_from_guest(t.vm, nr_not_present);
	ASSERT_EQ(nr_not_present, 0);
	apf_vm_free(&t);
}

/* The guest disables async #PF with one pending: dropped, then EXIT. */
TEST(teardown_msr_disable)
{
	struct apf_vm t;
	int r;

	apf_vm_create(&t, APF_EN_FULL, false, KVM_GMEM_PRESENCE_ASYNC,
		      KVM_GMEM_PRESENCE_EXIT);
	disable_in_handler = true;
	sync_global_to_guest(t.vm, disable_in_handler);
	run_until_sync(t.vcpu);
	r = __vcpu_run(t.vcpu);
	ASSERT_EQ(r, -1);
	ASSERT_EQ(errno, EFAULT);
	ASSERT_EQ(t.vcpu->run->memory_fault.flags,
		  KVM_MEMORY_EXIT_FLAG_NOT_PRESENT);
	ASSERT_EQ(vcpu_get_stat(t.vcpu, gmem_async_injected), 1);
	ASSERT_EQ(vcpu_get_stat(t.vcpu, gmem_async_fallbacks), 1);
	ASSERT_EQ(vcpu_get_stat(t.vcpu, gmem_async_ready), 0);

	populate(t.gmem);
	vcpu_run(t.vcpu);
	gmem_presence_assert_done(t.vcpu);
	apf_vm_free(&t);
}

/* Closing the guest_memfd completes a pending item; the retry fails cleanly. */
TEST(teardown_close_gmem)
{
	struct apf_vm t;
	pthread_t th;
	void *ret;

	apf_vm_start_pending(&t, &th);
	close(t.gmem);
	t.gmem = -1;
	pthread_join(th, &ret);
	ASSERT_EQ((long)ret, -EFAULT);
	ASSERT_EQ(t.vcpu->run->exit_reason, KVM_EXIT_MEMORY_FAULT);
	ASSERT_EQ(vcpu_get_stat(t.vcpu, gmem_async_ready), 1);
	apf_vm_free(&t);
}

/*
 * Re-arming a page with an async #PF pending, with KVM_MEMORY_PRESENT_DISCARD
 * or _REARM, completes it: the guest gets "page ready", retries, and the new
 * not-present period is reported and faulted asynchronously again.  A plain
 * punch-hole re-arms nothing: the pending fault stays pending, and once the
 * page is present it stays present, reading as zeroes.
 */
static void rearm_pending(u32 op)
{
	struct apf_vm t;
	pthread_t th;
	void *ret;

	apf_vm_start_pending(&t, &th);
	if (op == KVM_MEMORY_PRESENT_DISCARD) {
		gmem_punch_hole(t.gmem, 0, PAGE_SIZE);
		TEST_ASSERT(!wait_record(t.nfd, 200),
			    "plain punch-hole started a new period");
		TEST_ASSERT_EQ(vcpu_get_stat(t.vcpu, gmem_async_ready), 0);
		TEST_ASSERT_EQ(get_stats_notifications(t.gmem), 1);
	}
	gmem_set_present(t.gmem, 0, PAGE_SIZE, op);
	/* The retry starts a new period: a second record. */
	TEST_ASSERT(wait_record(t.nfd, 20000), "no second record");
	populate(t.gmem);
	pthread_join(th, &ret);
	TEST_ASSERT_EQ((long)ret, 0);
	gmem_presence_assert_done(t.vcpu);

	assert_async_counts(&t, 2);
	TEST_ASSERT_EQ(vcpu_get_stat(t.vcpu, gmem_async_ready), 2);
	TEST_ASSERT_EQ(get_stats_notifications(t.gmem), 2);
	if (op == KVM_MEMORY_PRESENT_DISCARD)
		gmem_assert_punch_keeps_present(t.gmem, 0);
	apf_vm_free(&t);
}

TEST(teardown_punch_pending)
{
	rearm_pending(KVM_MEMORY_PRESENT_DISCARD);
}

TEST(teardown_rearm_pending)
{
	rearm_pending(KVM_MEMORY_PRESENT_REARM);
}

/*
 * Leave KVM_RUN while task A's async #PF is pending: task B reports from
 * inside the #PF handler.
 */
static void apf_vm_pending_in_guest(struct apf_vm *t)
{
	apf_vm_create(t, APF_EN_FULL, false, KVM_GMEM_PRESENCE_ASYNC,
		      KVM_GMEM_PRESENCE_EXIT);
	sync_every = 1000;
	sync_global_to_guest(t->vm, sync_every);
	run_until_sync(t->vcpu);
	TEST_ASSERT(run_until_sync(t->vcpu) > 0, "task B made no progress");
	TEST_ASSERT_EQ(vcpu_get_stat(t->vcpu, gmem_async_injected), 1);
}

/*
 * An INIT resets the vCPU with an item pending: the item is unhooked and
 * freed (kmemleak checks), and populating the page later wakes nothing.
 */
TEST(teardown_vcpu_reset)
{
	struct kvm_vcpu_events events;
	struct kvm_regs regs;
	struct apf_vm t;
	u64 wakeups;

	apf_vm_pending_in_guest(&t);

	/* Latch an INIT; the next KVM_RUN resets the vCPU before entry. */
	vcpu_events_get(t.vcpu, &events);
	events.flags = KVM_VCPUEVENT_VALID_SMM;
	events.smi.latched_init = 1;
	vcpu_events_set(t.vcpu, &events);
	/* Execution then restarts at the reset vector, where nothing is. */
	__vcpu_run(t.vcpu);
	vcpu_regs_get(t.vcpu, &regs);
	ASSERT_EQ(regs.rip, 0xfff0);
	ASSERT_EQ(vcpu_get_stat(t.vcpu, gmem_async_ready), 0);

	wakeups = gmem_presence_stats(t.gmem).wakeups;
	populate(t.gmem);
	ASSERT_EQ(gmem_presence_stats(t.gmem).wakeups, wakeups);
	ASSERT_EQ(vcpu_get_stat(t.vcpu, gmem_async_ready), 0);
	apf_vm_free(&t);
}

/* Destroying the vCPU with an item pending frees it (kmemleak checks). */
TEST(teardown_destroy_pending)
{
	struct apf_vm t;

	apf_vm_pending_in_guest(&t);
	apf_vm_free(&t);
}

/* Task B spinning alone for @ms: its progress per TSC cycle. */
static double spin_rate(int ms)
{
	struct apf_vm t;
	pthread_t th;
	void *ret;
	struct ucall uc;

	__apf_vm_create(&t, guest_spin, 1, 0, 0, KVM_GMEM_PRESENCE_EXIT, 0,
			false);
	run_until_sync(t.vcpu);
	pthread_create(&th, NULL, vcpu_thread, t.vcpu);
	usleep(ms * 1000);
	spin_stop = true;
	sync_global_to_guest(t.vm, spin_stop);
	spin_stop = false;
	pthread_join(th, &ret);
	TEST_ASSERT_EQ((long)ret, 0);
	TEST_ASSERT_EQ(get_ucall(t.vcpu, &uc), UCALL_DONE);
	sync_global_from_guest(t.vm, progress_b);
	sync_global_from_guest(t.vm, spin_cycles);
	apf_vm_free(&t);
	TEST_ASSERT(progress_b && spin_cycles, "task B did not spin");
	return (double)progress_b / (double)spin_cycles;
}

/*
 * Task B's progress while task A's access waits for a page missing @ms,
 * as a percentage of what B does alone in the same time (A's stall, in
 * TSC cycles), under @policy.
 */
static double progress_pct(u64 policy, u64 fallback, int ms, double rate,
			   u64 *iters, double *stall_ms)
{
	struct apf_vm t;
	int khz;

	apf_vm_create(&t, APF_EN_FULL, false, policy, fallback);
	run_until_sync(t.vcpu);
	*iters = run_with_missing_page(&t, ms);
	sync_global_from_guest(t.vm, a_stall_cycles);
	khz = __vcpu_ioctl(t.vcpu, KVM_GET_TSC_KHZ, NULL);
	apf_vm_free(&t);
	TEST_ASSERT(a_stall_cycles, "task A's stall was not measured");
	*stall_ms = khz > 0 ? (double)a_stall_cycles / khz : 0;
	return 100.0 * (double)*iters / (rate * (double)a_stall_cycles);
}

/* One line for bench/report.py (`make bench`). */
static void print_bench(const char *policy, int ms, double pct, u64 iters,
			double stall_ms)
{
	printf("BENCH {\"bench\":\"apf_progress\",\"policy\":\"%s\",", policy);
	printf("\"missing_ms\":%d,\"progress_pct\":%.1f,", ms, pct);
	printf("\"b_iters\":%llu,\"stall_ms\":%.1f}\n",
	       (unsigned long long)iters, stall_ms);
}

/*
 * Figure, not a timed assertion: task B's progress while A's page is missing
 * for a fixed interval, ASYNC against WAIT (where the whole vCPU sleeps),
 * relative to B running alone.  Prints one BENCH line per policy.
 */
TEST(progress_figure)
{
	const int ms = 300;
	double rate, async_pct, wait_pct, async_ms, wait_ms;
	u64 async_b, wait_b;

	rate = spin_rate(ms);
	async_pct = progress_pct(KVM_GMEM_PRESENCE_ASYNC, KVM_GMEM_PRESENCE_EXIT,
				 ms, rate, &async_b, &async_ms);
	wait_pct = progress_pct(KVM_GMEM_PRESENCE_WAIT, 0, ms, rate, &wait_b,
				&wait_ms);

	TH_LOG("FIGURE task B progress, page missing %d ms: ASYNC %llu (%.1f%%) WAIT %llu (%.1f%%)",
	       ms, (unsigned long long)async_b, async_pct,
	       (unsigned long long)wait_b, wait_pct);
	print_bench("async", ms, async_pct, async_b, async_ms);
	print_bench("wait", ms, wait_pct, wait_b, wait_ms);
	fflush(stdout);
	ASSERT_GT(async_b, 0);
	/* The whole vCPU sleeps under WAIT: task B can't run. */
	ASSERT_EQ(wait_b, 0);
}

TEST_HARNESS_MAIN
