/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * What gmfp-vm and its guest payload (guest/) agree on: the guest physical
 * memory map, the status page both sides read and write, the report port,
 * the memory pattern and the compute task's recurrence.  Included by the
 * freestanding guest too: nothing but <stdint.h>.
 *
 * Guest physical memory:
 *
 *   0 .. GV_LOW_SIZE      "low memory", an ordinary memslot (anonymous
 *                         memory of the VMM, never tracked): page tables,
 *                         the status page, the async-PF data area, the
 *                         payload (code, data, stacks).  A snapshot or a
 *                         migration carries it with the vCPU state, as a
 *                         VMM carries device state: 2 MiB, sent at once.
 *   GV_RAM_GPA ..         RAM: the presence guest_memfd (shared, or private
 *                         in a KVM_X86_SW_PROTECTED_VM), the memory task's
 *                         data.  This is what restore and postcopy fill
 *                         lazily.
 *
 * Paging: identity map, 2 MiB pages, built by the VMM (long mode from the
 * first instruction).
 */
#ifndef GMFP_VM_GUEST_ABI_H
#define GMFP_VM_GUEST_ABI_H

#include <stdint.h>

#define GV_LOW_SIZE	0x200000ull	/* 2 MiB */
#define GV_PML4_GPA	0x1000ull
#define GV_PDPT_GPA	0x2000ull
#define GV_PD_GPA	0x3000ull	/* PD i maps [i GiB, i+1 GiB) */
#define GV_MAX_PDS	16		/* RAM below 16 GiB */
#define GV_STATUS_GPA	0x20000ull	/* struct gv_status */
#define GV_APF_GPA	0x21000ull	/* struct gv_apf_data */
#define GV_PAYLOAD_GPA	0x100000ull	/* the payload is linked here */
#define GV_PAYLOAD_MAX	0x100000ull
#define GV_RAM_GPA	0x40000000ull	/* 1 GiB */
#define GV_RAM_MAX	(GV_MAX_PDS * 0x40000000ull - GV_RAM_GPA)

#define GV_PORT		0x3f0		/* outl: an event code (GV_EV_*) */
#define GV_APF_VECTOR	0xec		/* "page ready" interrupt */
#define GV_SPURIOUS	0xff

/* events (outl GV_PORT) */
#define GV_EV_BOOT	1		/* booted: APIC and async #PF set up */
#define GV_EV_CMD_DONE	2		/* status.cmd_done_seq moved */
#define GV_EV_PANIC	3		/* unexpected exception: status.panic_*; halts */

/* commands (status.cmd), bits */
#define GV_CMD_WRITE	(1u << 0)	/* write generation cmd_gen's pattern */
#define GV_CMD_VERIFY	(1u << 1)	/* then read everything back, checksum */

/* status.flags, set by the guest */
#define GV_F_APF	(1u << 0)	/* async #PF enabled (interrupt delivery) */
#define GV_F_X2APIC	(1u << 1)

/* status.phase */
#define GV_PH_IDLE	0
#define GV_PH_WRITE	1
#define GV_PH_VERIFY	2

#define GV_MAGIC	0x31304d5650464d47ull	/* "GMFPVM01" */

/*
 * The status page.  The VMM fills the first block before boot and writes a
 * command (cmd, cmd_gen, then cmd_seq, in that order); the guest owns the
 * rest and only ever stores to it (plain 64-bit stores: a reader sees each
 * field whole).
 */
struct gv_status {
	/* VMM, before boot */
	uint64_t magic;
	uint64_t ram_gpa, ram_pages;
	uint64_t seed;			/* of the memory pattern and the compute task */
	uint64_t stride;		/* page visiting order: k * stride mod ram_pages */
	uint64_t boot_flags;		/* GV_BOOT_* */
	/* VMM: a command */
	uint64_t cmd, cmd_gen;
	uint64_t cmd_seq;
	/* guest */
	uint64_t cmd_done_seq;
	uint64_t flags;			/* GV_F_* */
	uint64_t phase;			/* GV_PH_* */
	uint64_t gen;			/* generation in memory (last write pass) */
	uint64_t pages_written;		/* progress of the current/last write pass */
	uint64_t pages_verified;	/* ... of the current/last verify pass */
	uint64_t verify_passes;		/* completed */
	uint64_t verify_sum;		/* of the last completed pass */
	uint64_t verify_bad;		/* words that were not the pattern */
	uint64_t verify_first_bad;	/* page index, or ~0 */
	uint64_t verify_gen;		/* generation the last pass checked */
	uint64_t compute_state;		/* written before compute_units */
	uint64_t compute_units;
	uint64_t compute_units_blocked;	/* ... while the memory task waited for a page */
	uint64_t apf_not_present;	/* "page not present" #PFs taken */
	uint64_t apf_ready;		/* "page ready" interrupts */
	uint64_t apf_broadcast;		/* ... with the wake-all token */
	uint64_t task_switches;
	uint64_t apf_sync_waits;	/* not present with nothing else to run */
	uint64_t panic_vector, panic_err, panic_rip, panic_cr2;
};

#define GV_BOOT_NO_APF	(1u << 0)	/* do not enable async #PF */

/* The async-PF data area (struct kvm_vcpu_pv_apf_data), 64-byte aligned. */
struct gv_apf_data {
	uint32_t flags;			/* 1: "page not present" (#PF, CR2 = token) */
	uint32_t token;			/* "page ready" token; ~0: wake everything */
	uint8_t pad[56];
	uint32_t enabled;
};

/* ---- the memory pattern ---- */
static inline uint64_t gv_mix(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	x ^= x >> 31;
	return x;
}

/* word j of page p in generation gen: gv_page_base(..) ^ j * GV_WORD_MUL */
static inline uint64_t gv_page_base(uint64_t seed, uint64_t gen, uint64_t p)
{
	return gv_mix(seed ^ (gen << 40) ^ (p + 1));
}
#define GV_WORD_MUL 0x100000001b3ull
#define GV_WORDS 512			/* 8-byte words in a 4 KiB page */

/* the checksum adds w * (2j + 1) for word j of every page */

/* ---- the compute task: x <- x * A + C, GV_UNIT_STEPS per unit ---- */
#define GV_LCG_A 6364136223846793005ull
#define GV_LCG_C 1442695040888963407ull
#define GV_UNIT_STEPS 4096
#define GV_COMPUTE_SEED(seed) ((seed) ^ 0x5eed5eed5eed5eedull)

#endif /* GMFP_VM_GUEST_ABI_H */
