// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * gmfp-vm's guest: two tasks on one vCPU and a scheduler driven by the
 * paravirtual async page fault protocol.
 *
 *   memory task   runs the VMM's commands: write a generation's pattern over
 *                 all of RAM, read it all back (every word checked, a
 *                 checksum), in a strided page order; idle otherwise.
 *   compute task  steps a recurrence (the VMM can check its state from the
 *                 number of steps) whenever the memory task cannot run.
 *
 * The memory task has priority.  When it touches a RAM page that is not
 * present and the host can fault asynchronously, KVM injects a #PF with
 * "page not present" in the async-PF data area and a token in CR2: the
 * handler parks the memory task and switches to the compute task.  When
 * the page arrives KVM raises the "page ready" interrupt with the same
 * token: the handler acknowledges it (MSR_KVM_ASYNC_PF_ACK, EOI) and
 * switches back; the memory task's access is retried and finds the page.
 * Under the WAIT or EXIT policy, or with async #PF off, the whole vCPU
 * waits instead and the compute task does not run meanwhile.
 *
 * Everything the VMM sees goes through the status page (guest_abi.h) and
 * an outl to GV_PORT per event.
 */
#include <stdint.h>

#include "../guest_abi.h"

#define MSR_APIC_BASE		0x1b
#define MSR_X2APIC_TPR		0x808
#define MSR_X2APIC_EOI		0x80b
#define MSR_X2APIC_SVR		0x80f
#define MSR_KVM_ASYNC_PF_EN	0x4b564d02
#define MSR_KVM_ASYNC_PF_INT	0x4b564d06
#define MSR_KVM_ASYNC_PF_ACK	0x4b564d07
#define APF_ENABLED		(1u << 0)
#define APF_SEND_ALWAYS		(1u << 1)	/* at CPL 0 too: we are a kernel */
#define APF_DELIVERY_AS_INT	(1u << 3)
#define KVM_FEATURE_ASYNC_PF	4
#define KVM_FEATURE_ASYNC_PF_INT 14
#define REASON_PAGE_NOT_PRESENT	1

#define ST ((volatile struct gv_status *)GV_STATUS_GPA)
#define APF ((volatile struct gv_apf_data *)GV_APF_GPA)

/* entry.S */
void switch_stack(uint64_t *save_rsp, uint64_t new_rsp);
void isr_pf(void);
void isr_apf(void);
void isr_spurious(void);
#define F(n) void isr_fault_##n(void);
F(0) F(1) F(2) F(3) F(4) F(5) F(6) F(7) F(8) F(9) F(10) F(11) F(12) F(13)
F(16) F(17) F(18) F(19) F(20) F(21)
#undef F
void guest_main(void);
void pf_handler(uint64_t *frame);
void apf_handler(void);
void fatal(uint64_t *frame);

static inline void outl(uint16_t port, uint32_t v)
{
	asm volatile("outl %0, %1" : : "a"(v), "Nd"(port));
}

static inline uint64_t rdmsr(uint32_t msr)
{
	uint32_t lo, hi;

	asm volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
	return (uint64_t)hi << 32 | lo;
}

static inline void wrmsr(uint32_t msr, uint64_t v)
{
	asm volatile("wrmsr" : : "c"(msr), "a"((uint32_t)v), "d"((uint32_t)(v >> 32))
		     : "memory");
}

static inline void cpuid(uint32_t leaf, uint32_t *a, uint32_t *b, uint32_t *c, uint32_t *d)
{
	asm volatile("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d) : "a"(leaf), "c"(0));
}

static inline uint64_t read_cr2(void)
{
	uint64_t v;

	asm volatile("mov %%cr2, %0" : "=r"(v));
	return v;
}

static inline void sti(void) { asm volatile("sti" : : : "memory"); }
static inline void cli(void) { asm volatile("cli" : : : "memory"); }
static inline void barrier(void) { asm volatile("" : : : "memory"); }

/* ---- interrupt descriptor table ---- */

struct idt_gate {
	uint16_t off0, sel;
	uint8_t ist, type;
	uint16_t off1;
	uint32_t off2, zero;
} __attribute__((packed));

static struct idt_gate idt[256] __attribute__((aligned(16)));

static void set_gate(int vec, void (*fn)(void))
{
	uint64_t a = (uint64_t)fn;

	idt[vec].off0 = (uint16_t)a;
	idt[vec].sel = 0x08;
	idt[vec].ist = 0;
	idt[vec].type = 0x8e;		/* present, DPL 0, interrupt gate */
	idt[vec].off1 = (uint16_t)(a >> 16);
	idt[vec].off2 = (uint32_t)(a >> 32);
	idt[vec].zero = 0;
}

static void idt_init(void)
{
	struct __attribute__((packed)) { uint16_t limit; uint64_t base; } d;

	set_gate(0, isr_fault_0); set_gate(1, isr_fault_1); set_gate(2, isr_fault_2);
	set_gate(3, isr_fault_3); set_gate(4, isr_fault_4); set_gate(5, isr_fault_5);
	set_gate(6, isr_fault_6); set_gate(7, isr_fault_7); set_gate(8, isr_fault_8);
	set_gate(9, isr_fault_9); set_gate(10, isr_fault_10); set_gate(11, isr_fault_11);
	set_gate(12, isr_fault_12); set_gate(13, isr_fault_13); set_gate(14, isr_pf);
	set_gate(16, isr_fault_16); set_gate(17, isr_fault_17); set_gate(18, isr_fault_18);
	set_gate(19, isr_fault_19); set_gate(20, isr_fault_20); set_gate(21, isr_fault_21);
	set_gate(GV_APF_VECTOR, isr_apf);
	set_gate(GV_SPURIOUS, isr_spurious);
	d.limit = sizeof(idt) - 1;
	d.base = (uint64_t)idt;
	asm volatile("lidt %0" : : "m"(d));
}

/* ---- the scheduler: two tasks ---- */

enum { T_MEM, T_CPU };
static uint64_t task_rsp[2];
static volatile int cur = T_MEM;
static volatile int mem_idle;		/* waiting for a command */
static volatile int mem_blocked;	/* waiting for a page (async #PF) */
static volatile uint32_t mem_token;
static volatile uint32_t sync_token;	/* waited for in place */
static volatile int sync_ready;
static uint8_t cpu_stack[16384] __attribute__((aligned(16)));

/* With interrupts off. */
static void switch_to(int t)
{
	int from = cur;

	if (from == t)
		return;
	cur = t;
	ST->task_switches = ST->task_switches + 1;
	switch_stack(&task_rsp[from], task_rsp[t]);
}

__attribute__((noreturn)) void fatal(uint64_t *frame)
{
	cli();
	ST->panic_vector = frame[0];
	ST->panic_err = frame[1];
	ST->panic_rip = frame[2];
	ST->panic_cr2 = read_cr2();
	outl(GV_PORT, GV_EV_PANIC);
	for (;;)
		asm volatile("hlt");
}

/* #PF: "page not present" from the host, or a real fault (fatal). */
void pf_handler(uint64_t *frame)
{
	uint32_t reason = APF->flags;
	uint32_t token;

	if (reason != REASON_PAGE_NOT_PRESENT) {
		uint64_t f[3] = { 14, frame[0], frame[1] };

		fatal(f);
	}
	token = (uint32_t)read_cr2();
	APF->flags = 0;
	ST->apf_not_present = ST->apf_not_present + 1;
	if (cur == T_MEM && !mem_blocked) {
		mem_token = token;
		mem_blocked = 1;
		switch_to(T_CPU);	/* back here once the page is ready */
		return;
	}
	/* nothing else to run: wait here, interrupts on, for "page ready" */
	ST->apf_sync_waits = ST->apf_sync_waits + 1;
	sync_token = token;
	sync_ready = 0;
	sti();
	while (!sync_ready)
		asm volatile("pause");
	cli();
}

/* "page ready": the token names the access to retry (~0: all of them). */
void apf_handler(void)
{
	uint32_t token = APF->token;

	APF->token = 0;			/* the slot is free for the next one */
	wrmsr(MSR_KVM_ASYNC_PF_ACK, 1);
	wrmsr(MSR_X2APIC_EOI, 0);
	if (token == ~0u)
		ST->apf_broadcast = ST->apf_broadcast + 1;
	else
		ST->apf_ready = ST->apf_ready + 1;
	if (token == ~0u || token == sync_token)
		sync_ready = 1;
	if (mem_blocked && (token == ~0u || token == mem_token)) {
		mem_blocked = 0;
		switch_to(T_MEM);	/* the compute task resumes here later */
	}
}

/* ---- the compute task ---- */

static void cpu_task(void)
{
	uint64_t x = GV_COMPUTE_SEED(ST->seed), n = 0;
	int i;

	sti();
	for (;;) {
		for (i = 0; i < GV_UNIT_STEPS; i++) {
			x = x * GV_LCG_A + GV_LCG_C;
			asm volatile("" : "+r"(x));
		}
		ST->compute_state = x;
		barrier();
		ST->compute_units = ++n;
		if (mem_blocked)
			ST->compute_units_blocked = ST->compute_units_blocked + 1;
		if (mem_idle && ST->cmd_seq != ST->cmd_done_seq) {
			cli();
			mem_idle = 0;
			switch_to(T_MEM);
			sti();
		}
	}
}

static void cpu_task_init(void)
{
	uint64_t *sp = (uint64_t *)(cpu_stack + sizeof(cpu_stack));
	int i;

	*--sp = 0;			/* cpu_task's return address: never */
	*--sp = (uint64_t)cpu_task;	/* switch_stack's ret */
	for (i = 0; i < 6; i++)
		*--sp = 0;		/* rbx rbp r12-r15 */
	task_rsp[T_CPU] = (uint64_t)sp;
}

/* ---- the memory task ---- */

static inline volatile uint64_t *page(uint64_t p)
{
	return (volatile uint64_t *)(ST->ram_gpa + p * 4096);
}

static void write_pass(uint64_t gen)
{
	uint64_t n = ST->ram_pages, stride = ST->stride, seed = ST->seed, p = 0, k;

	ST->phase = GV_PH_WRITE;
	ST->pages_written = 0;
	for (k = 0; k < n; k++) {
		volatile uint64_t *w = page(p);
		uint64_t base = gv_page_base(seed, gen, p), j;

		for (j = 0; j < GV_WORDS; j++)
			w[j] = base ^ (j * GV_WORD_MUL);
		ST->pages_written = k + 1;
		p += stride;
		if (p >= n)
			p -= n;
	}
	ST->gen = gen;
	ST->phase = GV_PH_IDLE;
}

static void verify_pass(void)
{
	uint64_t n = ST->ram_pages, stride = ST->stride, seed = ST->seed, gen = ST->gen;
	uint64_t p = 0, k, sum = 0, bad = 0, first_bad = ~0ull;

	ST->phase = GV_PH_VERIFY;
	ST->pages_verified = 0;
	for (k = 0; k < n; k++) {
		volatile uint64_t *w = page(p);
		uint64_t base = gv_page_base(seed, gen, p), j, v, pb = 0;

		for (j = 0; j < GV_WORDS; j++) {
			v = w[j];
			sum += v * (2 * j + 1);
			pb += v != (base ^ (j * GV_WORD_MUL));
		}
		if (pb && first_bad == ~0ull)
			first_bad = p;
		bad += pb;
		ST->pages_verified = k + 1;
		p += stride;
		if (p >= n)
			p -= n;
	}
	ST->verify_sum = sum;
	ST->verify_bad = bad;
	ST->verify_first_bad = first_bad;
	ST->verify_gen = gen;
	ST->verify_passes = ST->verify_passes + 1;
	ST->phase = GV_PH_IDLE;
}

static void mem_task(void)
{
	for (;;) {
		uint64_t seq = ST->cmd_seq, cmd;

		if (seq == ST->cmd_done_seq) {
			/* nothing to do: let the compute task run */
			cli();
			mem_idle = 1;
			switch_to(T_CPU);
			sti();
			continue;
		}
		barrier();
		cmd = ST->cmd;
		if (cmd & GV_CMD_WRITE)
			write_pass(ST->cmd_gen);
		if (cmd & GV_CMD_VERIFY)
			verify_pass();
		ST->cmd_done_seq = seq;
		outl(GV_PORT, GV_EV_CMD_DONE);
	}
}

/* ---- boot ---- */

static int apf_supported(void)
{
	uint32_t a, b, c, d;

	cpuid(0x40000000, &a, &b, &c, &d);
	/* "KVMKVMKVM\0\0\0" */
	if (b != 0x4b4d564b || c != 0x564b4d56 || d != 0x4d)
		return 0;
	cpuid(0x40000001, &a, &b, &c, &d);
	return (a >> KVM_FEATURE_ASYNC_PF & 1) && (a >> KVM_FEATURE_ASYNC_PF_INT & 1);
}

void guest_main(void)
{
	uint32_t a, b, c, d;
	uint64_t flags = 0;

	idt_init();
	cpuid(1, &a, &b, &c, &d);
	if (c >> 21 & 1) {
		wrmsr(MSR_APIC_BASE, rdmsr(MSR_APIC_BASE) | (1u << 11) | (1u << 10));
		wrmsr(MSR_X2APIC_SVR, 0x100 | GV_SPURIOUS);
		wrmsr(MSR_X2APIC_TPR, 0);
		flags |= GV_F_X2APIC;
	}
	if ((flags & GV_F_X2APIC) && !(ST->boot_flags & GV_BOOT_NO_APF) && apf_supported()) {
		wrmsr(MSR_KVM_ASYNC_PF_INT, GV_APF_VECTOR);
		wrmsr(MSR_KVM_ASYNC_PF_EN, GV_APF_GPA | APF_ENABLED | APF_SEND_ALWAYS |
		      APF_DELIVERY_AS_INT);
		flags |= GV_F_APF;
	}
	ST->verify_first_bad = ~0ull;
	ST->flags = flags;
	cpu_task_init();
	outl(GV_PORT, GV_EV_BOOT);
	sti();
	mem_task();
}
