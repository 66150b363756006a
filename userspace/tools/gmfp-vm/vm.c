// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * The VM: what a VMM does to run a guest whose RAM is a presence
 * guest_memfd.  Integration points with libgmfp are marked "gmfp:".
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "gvm.h"

extern const uint8_t gv_payload_start[], gv_payload_end[];

static int fail(char *err, size_t len, int e, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int fail(char *err, size_t len, int e, const char *fmt, ...)
{
	va_list ap;
	size_t n;

	va_start(ap, fmt);
	vsnprintf(err, len, fmt, ap);
	va_end(ap);
	n = strlen(err);
	if (e && n < len)
		snprintf(err + n, len - n, ": %s", strerror(e));
	return e ? -e : -EINVAL;
}

const char *gvm_policy_name(unsigned int p)
{
	switch (p) {
	case GMFP_POLICY_EXIT: return "exit";
	case GMFP_POLICY_WAIT: return "wait";
	case GMFP_POLICY_ASYNC: return "async";
	}
	return "?";
}

int gvm_parse_policy(const char *s, unsigned int *p)
{
	if (!strcmp(s, "exit"))
		*p = GMFP_POLICY_EXIT;
	else if (!strcmp(s, "wait"))
		*p = GMFP_POLICY_WAIT;
	else if (!strcmp(s, "async"))
		*p = GMFP_POLICY_ASYNC;
	else
		return -EINVAL;
	return 0;
}

static void sig_kick(int sig)
{
	(void)sig;
}

static int set_cpuid(struct gvm *v)
{
	int n = 128, r;
	struct kvm_cpuid2 *c;

	for (;;) {
		c = calloc(1, sizeof(*c) + (size_t)n * sizeof(c->entries[0]));
		if (!c)
			return -ENOMEM;
		c->nent = (uint32_t)n;
		r = ioctl(v->kvm, KVM_GET_SUPPORTED_CPUID, c);
		if (!r || errno != E2BIG)
			break;
		free(c);
		n *= 2;
	}
	if (!r)
		r = ioctl(v->vcpu, KVM_SET_CPUID2, c) ? -errno : 0;
	else
		r = -errno;
	free(c);
	return r;
}

int gvm_create(struct gvm *v, const struct gvm_config *c, char *err, size_t len)
{
	struct gvm_memory_region2 r;
	struct sigaction sa;
	int e, type = c->private_mem ? GVM_X86_SW_PROTECTED_VM : 0;

	memset(v, 0, sizeof(*v));
	v->kvm = v->vm = v->vcpu = v->gmem = -1;
	pthread_mutex_init(&v->lock, NULL);
	pthread_cond_init(&v->cond, NULL);
	v->ram_size = c->ram_size;
	v->ram_pages = c->ram_size / PG;
	v->private_mem = c->private_mem;
	v->policy = c->policy;
	v->fallback = c->fallback;
	if (!c->ram_size || c->ram_size % (2u << 20) || c->ram_size > GV_RAM_MAX)
		return fail(err, len, 0, "memory size must be a multiple of 2 MiB, at most %llu MiB",
			    (unsigned long long)(GV_RAM_MAX >> 20));

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = sig_kick;	/* no SA_RESTART: KVM_RUN returns EINTR */
	sigaction(SIGUSR1, &sa, NULL);

	v->kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (v->kvm < 0)
		return fail(err, len, errno, "/dev/kvm");
	if (c->private_mem &&
	    !(ioctl(v->kvm, KVM_CHECK_EXTENSION, GVM_CAP_VM_TYPES) & (1 << GVM_X86_SW_PROTECTED_VM)))
		return fail(err, len, EOPNOTSUPP, "KVM_X86_SW_PROTECTED_VM");
	v->vm = ioctl(v->kvm, KVM_CREATE_VM, type);
	if (v->vm < 0)
		return fail(err, len, errno, "KVM_CREATE_VM");
	/* the in-kernel local APIC: async #PF's "page ready" is an interrupt */
	if (ioctl(v->vm, KVM_CREATE_IRQCHIP, 0))
		return fail(err, len, errno, "KVM_CREATE_IRQCHIP");

	/* gmfp: what a vCPU does on a not-present page */
	e = gmfp_vm_set_policy(v->vm, c->policy,
			       c->policy == GMFP_POLICY_ASYNC ? c->fallback : 0);
	if (e)
		return fail(err, len, -e, "policy %s%s%s", gvm_policy_name(c->policy),
			    c->policy == GMFP_POLICY_ASYNC ? " with fallback " : "",
			    c->policy == GMFP_POLICY_ASYNC ? gvm_policy_name(c->fallback) : "");
	/* gmfp: RAM, with presence tracking: every page starts not present */
	v->gmem = gmfp_gmem_create(v->vm, v->ram_size, c->private_mem ? 0 : GMFP_GMEM_SHARED);
	if (v->gmem < 0)
		return fail(err, len, -v->gmem, "presence guest_memfd of %llu MiB",
			    (unsigned long long)(v->ram_size >> 20));

	/* low memory: an ordinary memslot */
	v->low = mmap(NULL, GV_LOW_SIZE, PROT_READ | PROT_WRITE,
		      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (v->low == MAP_FAILED) {
		v->low = NULL;
		return fail(err, len, errno, "mmap low memory");
	}
	v->st = (volatile struct gv_status *)(v->low + GV_STATUS_GPA);
	memset(&r, 0, sizeof(r));
	r.slot = 0;
	r.guest_phys_addr = 0;
	r.memory_size = GV_LOW_SIZE;
	r.userspace_addr = (uint64_t)(uintptr_t)v->low;
	if (ioctl(v->vm, GVM_SET_USER_MEMORY_REGION2, &r))
		return fail(err, len, errno, "KVM_SET_USER_MEMORY_REGION2 (low memory)");

	if (c->private_mem) {
		/*
		 * Private RAM: no mapping of it exists.  The slot still needs
		 * a shared half (userspace_addr) for the shared attribute,
		 * which the guest never uses.
		 */
		v->ram_alias = mmap(NULL, v->ram_size, PROT_READ | PROT_WRITE,
				    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (v->ram_alias == MAP_FAILED) {
			v->ram_alias = NULL;
			return fail(err, len, errno, "mmap");
		}
		r.userspace_addr = (uint64_t)(uintptr_t)v->ram_alias;
	} else {
		/* gmfp: the shared mapping; an access to a missing page waits at the gate */
		v->ram = mmap(NULL, v->ram_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->gmem, 0);
		if (v->ram == MAP_FAILED) {
			v->ram = NULL;
			return fail(err, len, errno, "mmap guest_memfd");
		}
		r.userspace_addr = (uint64_t)(uintptr_t)v->ram;
	}
	r.slot = 1;
	r.flags = GVM_MEM_GUEST_MEMFD;
	r.guest_phys_addr = GV_RAM_GPA;
	r.memory_size = v->ram_size;
	r.guest_memfd = (uint32_t)v->gmem;
	r.guest_memfd_offset = 0;
	if (ioctl(v->vm, GVM_SET_USER_MEMORY_REGION2, &r))
		return fail(err, len, errno, "KVM_SET_USER_MEMORY_REGION2 (RAM)");
	if (c->private_mem) {
		struct gvm_memory_attributes a = {
			.address = GV_RAM_GPA, .size = v->ram_size,
			.attributes = GVM_MEMORY_ATTRIBUTE_PRIVATE,
		};

		if (ioctl(v->vm, GVM_SET_MEMORY_ATTRIBUTES, &a))
			return fail(err, len, errno, "KVM_SET_MEMORY_ATTRIBUTES (private)");
	}

	v->vcpu = ioctl(v->vm, KVM_CREATE_VCPU, 0);
	if (v->vcpu < 0)
		return fail(err, len, errno, "KVM_CREATE_VCPU");
	e = ioctl(v->kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (e <= 0)
		return fail(err, len, errno, "KVM_GET_VCPU_MMAP_SIZE");
	v->run_size = (size_t)e;
	v->run = mmap(NULL, v->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->vcpu, 0);
	if (v->run == MAP_FAILED) {
		v->run = NULL;
		return fail(err, len, errno, "mmap kvm_run");
	}
	e = set_cpuid(v);
	if (e)
		return fail(err, len, -e, "KVM_SET_CPUID2");
	return 0;
}

static void seg(struct kvm_segment *s, uint16_t sel, uint8_t type, bool code)
{
	memset(s, 0, sizeof(*s));
	s->limit = 0xffffffff;
	s->selector = sel;
	s->type = type;
	s->present = 1;
	s->s = 1;
	s->g = 1;
	s->l = code;
	s->db = !code;
}

int gvm_boot_setup(struct gvm *v, uint64_t seed)
{
	uint64_t *pml4 = (uint64_t *)(v->low + GV_PML4_GPA);
	uint64_t *pdpt = (uint64_t *)(v->low + GV_PDPT_GPA);
	size_t plen = (size_t)(gv_payload_end - gv_payload_start);
	uint64_t a, end = GV_RAM_GPA + v->ram_size;
	struct kvm_sregs sr;
	struct kvm_regs regs;
	unsigned int i;

	if (plen > GV_PAYLOAD_MAX)
		return -E2BIG;
	/* identity map with 2 MiB pages: low memory, then RAM */
	pml4[0] = GV_PDPT_GPA | 3;
	for (i = 0; i < GV_MAX_PDS; i++)
		pdpt[i] = (GV_PD_GPA + i * PG) | 3;
	((uint64_t *)(v->low + GV_PD_GPA))[0] = 0 | 0x83;
	for (a = GV_RAM_GPA; a < end; a += 2u << 20) {
		uint64_t *pd = (uint64_t *)(v->low + GV_PD_GPA + (a >> 30) * PG);

		pd[(a >> 21) & 511] = a | 0x83;		/* present, writable, 2 MiB */
	}
	memcpy(v->low + GV_PAYLOAD_GPA, gv_payload_start, plen);

	v->st->magic = GV_MAGIC;
	v->st->ram_gpa = GV_RAM_GPA;
	v->st->ram_pages = v->ram_pages;
	v->st->seed = seed;
	v->st->stride = gvm_pick_stride(v->ram_pages, seed);

	if (ioctl(v->vcpu, KVM_GET_SREGS, &sr))
		return -errno;
	seg(&sr.cs, 0x08, 0xb, true);
	seg(&sr.ds, 0x10, 0x3, false);
	sr.es = sr.fs = sr.gs = sr.ss = sr.ds;
	memset(&sr.tr, 0, sizeof(sr.tr));
	sr.tr.type = 11;
	sr.tr.present = 1;
	sr.tr.limit = 0x67;
	sr.cr0 = 0x80050033;		/* PG WP NE ET MP PE */
	sr.cr3 = GV_PML4_GPA;
	sr.cr4 = 0x20;			/* PAE */
	sr.efer = 0x500;		/* LMA LME */
	if (ioctl(v->vcpu, KVM_SET_SREGS, &sr))
		return -errno;
	memset(&regs, 0, sizeof(regs));
	regs.rflags = 2;
	regs.rip = GV_PAYLOAD_GPA;
	if (ioctl(v->vcpu, KVM_SET_REGS, &regs))
		return -errno;
	return 0;
}

static void vcpu_fail(struct gvm *v, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void vcpu_fail(struct gvm *v, int code, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&v->lock);
	if (!v->error) {
		v->error = code;
		va_start(ap, fmt);
		vsnprintf(v->errmsg, sizeof(v->errmsg), fmt, ap);
		va_end(ap);
	}
	pthread_cond_broadcast(&v->cond);
	pthread_mutex_unlock(&v->lock);
}

/*
 * EXIT policy: KVM_RUN failed with EFAULT and KVM_EXIT_MEMORY_FAULT for a
 * not-present page.  With the in-process engine, ask for the page as a
 * demand fault and wait for it; with a pager (another process serves the
 * faults) wait until the kernel says it is present.
 */
static int serve_exit(struct gvm *v, uint64_t gpa)
{
	uint64_t pgoff = (gpa - GV_RAM_GPA) / PG;
	useconds_t nap = 50;
	int r;

	if (gpa < GV_RAM_GPA || pgoff >= v->ram_pages)
		return -ERANGE;
	atomic_fetch_add(&v->np_exits, 1);
	while (!atomic_load(&v->stop)) {
		if (v->engine) {
			/* gmfp: the demand request */
			r = gmfp_engine_demand(v->engine, 0, pgoff, 200);
			if (r != -ETIMEDOUT)
				return r;
		} else {
			r = gmfp_gmem_page_present(v->gmem, pgoff);
			if (r)
				return r < 0 ? r : 0;
			usleep(nap);
			if (nap < 2000)
				nap *= 2;
		}
	}
	return 0;	/* stopping: KVM_RUN will see immediate_exit */
}

static void *vcpu_thread(void *arg)
{
	struct gvm *v = arg;
	struct kvm_run *run = v->run;

	while (!atomic_load(&v->stop)) {
		int r = ioctl(v->vcpu, KVM_RUN, 0), e = errno;

		if (r < 0 && e == EINTR) {
			atomic_fetch_add(&v->intr_exits, 1);
			continue;
		}
		if (r < 0 && e == EFAULT && run->exit_reason == GVM_EXIT_MEMORY_FAULT &&
		    (gvm_run_memory_fault(run)->flags & GVM_MEMORY_EXIT_FLAG_NOT_PRESENT)) {
			uint64_t gpa = gvm_run_memory_fault(run)->gpa;

			r = serve_exit(v, gpa);
			if (r) {
				vcpu_fail(v, GVM_EXIT_SOURCE, "page at %#llx: %s",
					  (unsigned long long)gpa, strerror(-r));
				break;
			}
			continue;
		}
		if (r < 0) {
			vcpu_fail(v, GVM_EXIT_GUEST, "KVM_RUN: %s (exit reason %u)",
				  strerror(e), run->exit_reason);
			break;
		}
		if (run->exit_reason == KVM_EXIT_IO && run->io.port == GV_PORT &&
		    run->io.direction == KVM_EXIT_IO_OUT && run->io.size == 4) {
			uint32_t ev;

			memcpy(&ev, (char *)run + run->io.data_offset, 4);
			atomic_fetch_add(&v->io_exits, 1);
			if (ev == GV_EV_PANIC) {
				vcpu_fail(v, GVM_EXIT_GUEST,
					  "guest panic: vector %llu error %#llx rip %#llx cr2 %#llx",
					  (unsigned long long)v->st->panic_vector,
					  (unsigned long long)v->st->panic_err,
					  (unsigned long long)v->st->panic_rip,
					  (unsigned long long)v->st->panic_cr2);
				break;
			}
			pthread_mutex_lock(&v->lock);
			v->events++;
			pthread_cond_broadcast(&v->cond);
			pthread_mutex_unlock(&v->lock);
			continue;
		}
		vcpu_fail(v, GVM_EXIT_GUEST, "unexpected exit %u%s", run->exit_reason,
			  run->exit_reason == KVM_EXIT_SHUTDOWN ? " (shutdown: triple fault)" :
			  run->exit_reason == KVM_EXIT_HLT ? " (hlt)" : "");
		break;
	}
	pthread_mutex_lock(&v->lock);
	pthread_cond_broadcast(&v->cond);
	pthread_mutex_unlock(&v->lock);
	return NULL;
}

int gvm_start(struct gvm *v)
{
	int r;

	atomic_store(&v->stop, false);
	v->run->immediate_exit = 0;
	r = pthread_create(&v->thread, NULL, vcpu_thread, v);
	if (r)
		return -r;
	v->running = true;
	return 0;
}

void gvm_pause(struct gvm *v)
{
	struct timespec ts;

	if (!v->running)
		return;
	atomic_store(&v->stop, true);
	/* a KVM_RUN entered from now on returns at once */
	v->run->immediate_exit = 1;
	for (;;) {
		pthread_kill(v->thread, SIGUSR1);
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 5 * 1000 * 1000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		if (!pthread_timedjoin_np(v->thread, NULL, &ts))
			break;
	}
	v->running = false;
	/*
	 * Complete what the last exit left pending (an OUT's instruction is
	 * retired on re-entry): with immediate_exit KVM_RUN does only that.
	 */
	if (ioctl(v->vcpu, KVM_RUN, 0) && errno != EINTR && errno != EFAULT)
		vcpu_fail(v, GVM_EXIT_GUEST, "KVM_RUN (completion): %s", strerror(errno));
	v->run->immediate_exit = 0;
}

void gvm_destroy(struct gvm *v)
{
	gvm_pause(v);
	if (v->run)
		munmap(v->run, v->run_size);
	if (v->vcpu >= 0)
		close(v->vcpu);
	if (v->ram)
		munmap(v->ram, v->ram_size);
	if (v->ram_alias)
		munmap(v->ram_alias, v->ram_size);
	if (v->low)
		munmap(v->low, GV_LOW_SIZE);
	if (v->gmem >= 0)
		close(v->gmem);
	if (v->vm >= 0)
		close(v->vm);
	if (v->kvm >= 0)
		close(v->kvm);
	pthread_mutex_destroy(&v->lock);
	pthread_cond_destroy(&v->cond);
	memset(v, 0, sizeof(*v));
	v->kvm = v->vm = v->vcpu = v->gmem = -1;
}

uint64_t gvm_command(struct gvm *v, uint64_t cmd, uint64_t gen)
{
	uint64_t seq = v->st->cmd_seq + 1;

	v->st->cmd = cmd;
	v->st->cmd_gen = gen;
	atomic_thread_fence(memory_order_release);
	v->st->cmd_seq = seq;
	return seq;
}

static int wait_until(struct gvm *v, double deadline)
{
	struct timespec ts;
	double t;
	int err;

	pthread_mutex_lock(&v->lock);
	err = v->error;
	if (!err) {
		t = deadline;
		ts.tv_sec = (time_t)t;
		ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
		pthread_cond_timedwait(&v->cond, &v->lock, &ts);
		err = v->error;
	}
	pthread_mutex_unlock(&v->lock);
	return err;
}

int gvm_wait_cmd(struct gvm *v, uint64_t seq, int timeout_ms, int (*tick)(void *), void *arg)
{
	double end = timeout_ms < 0 ? 1e300 : gvm_now() + timeout_ms / 1000.0;
	int r;

	for (;;) {
		struct timespec rt;
		double step;

		if (v->st->cmd_done_seq >= seq)
			return 0;
		if (v->error)
			return v->error;
		if (gvm_now() >= end)
			return -ETIMEDOUT;
		if (tick) {
			r = tick(arg);
			if (r)
				return r;
		}
		/* the condvar uses CLOCK_REALTIME */
		clock_gettime(CLOCK_REALTIME, &rt);
		step = end - gvm_now();
		if (step > 0.1)
			step = 0.1;
		r = wait_until(v, (double)rt.tv_sec + rt.tv_nsec / 1e9 + step);
		if (r)
			return r;
	}
}

int gvm_sleep(struct gvm *v, int ms)
{
	double end = gvm_now() + ms / 1000.0;
	struct timespec rt;
	int r;

	while (gvm_now() < end) {
		double step = end - gvm_now();

		clock_gettime(CLOCK_REALTIME, &rt);
		r = wait_until(v, (double)rt.tv_sec + rt.tv_nsec / 1e9 + (step > 0.1 ? 0.1 : step));
		if (r)
			return r;
	}
	return 0;
}
