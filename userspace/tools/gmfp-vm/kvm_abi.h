/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The bits of the KVM uAPI gmfp-vm uses that an older installed
 * <linux/kvm.h> lacks (the host build uses the distribution's headers; the
 * in-VM build, GMFP_KHDR, the patched kernel's, and there the fallbacks
 * below are checked against the real definitions).  The presence uAPI
 * itself is libgmfp's business (gmfp.h).
 */
#ifndef GMFP_VM_KVM_ABI_H
#define GMFP_VM_KVM_ABI_H

#include <stddef.h>
#include <stdint.h>
#include <linux/kvm.h>

struct gvm_memory_region2 {
	uint32_t slot;
	uint32_t flags;
	uint64_t guest_phys_addr;
	uint64_t memory_size;
	uint64_t userspace_addr;
	uint64_t guest_memfd_offset;
	uint32_t guest_memfd;
	uint32_t pad1;
	uint64_t pad2[14];
};

struct gvm_memory_attributes {
	uint64_t address;
	uint64_t size;
	uint64_t attributes;
	uint64_t flags;
};

/* kvm_run's exit union starts at offset 32; memory_fault is three u64s */
struct gvm_memory_fault {
	uint64_t flags;
	uint64_t gpa;
	uint64_t size;
};
#define GVM_RUN_EXIT_UNION_OFFSET 32

#define GVM_SET_USER_MEMORY_REGION2 _IOW(KVMIO, 0x49, struct gvm_memory_region2)
#define GVM_SET_MEMORY_ATTRIBUTES _IOW(KVMIO, 0xd2, struct gvm_memory_attributes)
#define GVM_MEM_GUEST_MEMFD (1u << 2)
#define GVM_MEMORY_ATTRIBUTE_PRIVATE (1ull << 3)
#define GVM_X86_SW_PROTECTED_VM 1
#define GVM_CAP_VM_TYPES 235
#define GVM_EXIT_MEMORY_FAULT 39
#define GVM_MEMORY_EXIT_FLAG_NOT_PRESENT (1ull << 4)

#define GVM_MSR_IA32_TSC 0x10
#define GVM_MSR_KVM_ASYNC_PF_EN 0x4b564d02
#define GVM_MSR_KVM_ASYNC_PF_INT 0x4b564d06
#define GVM_ASYNC_PF_ENABLED (1u << 0)

static inline const struct gvm_memory_fault *gvm_run_memory_fault(const struct kvm_run *run)
{
	return (const struct gvm_memory_fault *)((const char *)run + GVM_RUN_EXIT_UNION_OFFSET);
}

#ifdef GMFP_KHDR
#include <asm/kvm_para.h>
_Static_assert(GVM_SET_USER_MEMORY_REGION2 == KVM_SET_USER_MEMORY_REGION2, "region2");
_Static_assert(sizeof(struct gvm_memory_region2) ==
	       sizeof(struct kvm_userspace_memory_region2), "region2 size");
_Static_assert(offsetof(struct gvm_memory_region2, guest_memfd) ==
	       offsetof(struct kvm_userspace_memory_region2, guest_memfd), "region2 layout");
_Static_assert(GVM_SET_MEMORY_ATTRIBUTES == KVM_SET_MEMORY_ATTRIBUTES, "attributes");
_Static_assert(GVM_MEM_GUEST_MEMFD == KVM_MEM_GUEST_MEMFD, "guest_memfd flag");
_Static_assert(GVM_MEMORY_ATTRIBUTE_PRIVATE == KVM_MEMORY_ATTRIBUTE_PRIVATE, "private");
_Static_assert(GVM_X86_SW_PROTECTED_VM == KVM_X86_SW_PROTECTED_VM, "sw protected");
_Static_assert(GVM_CAP_VM_TYPES == KVM_CAP_VM_TYPES, "vm types");
_Static_assert(GVM_EXIT_MEMORY_FAULT == KVM_EXIT_MEMORY_FAULT, "memory fault exit");
_Static_assert(GVM_MEMORY_EXIT_FLAG_NOT_PRESENT == KVM_MEMORY_EXIT_FLAG_NOT_PRESENT,
	       "not present");
_Static_assert(offsetof(struct kvm_run, memory_fault) == GVM_RUN_EXIT_UNION_OFFSET,
	       "kvm_run exit union");
_Static_assert(GVM_MSR_KVM_ASYNC_PF_EN == MSR_KVM_ASYNC_PF_EN, "apf en");
_Static_assert(GVM_MSR_KVM_ASYNC_PF_INT == MSR_KVM_ASYNC_PF_INT, "apf int");
_Static_assert(GVM_ASYNC_PF_ENABLED == KVM_ASYNC_PF_ENABLED, "apf enabled");
#endif

#endif /* GMFP_VM_KVM_ABI_H */
