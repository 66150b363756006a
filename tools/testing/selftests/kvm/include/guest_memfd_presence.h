/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Helpers shared by the guest_memfd presence selftests.
 */
#ifndef SELFTEST_KVM_GUEST_MEMFD_PRESENCE_H
#define SELFTEST_KVM_GUEST_MEMFD_PRESENCE_H

#include <errno.h>
#include <sys/ioctl.h>

#include <linux/kvm.h>

#include "kvm_util.h"
#include "processor.h"
#include "ucall_common.h"

static inline struct kvm_gmem_presence_stats gmem_presence_stats(int gmem)
{
	struct kvm_gmem_presence_stats st;

	TEST_ASSERT(!ioctl(gmem, KVM_GMEM_PRESENCE_STATS, &st),
		    "KVM_GMEM_PRESENCE_STATS");
	return st;
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

#endif /* SELFTEST_KVM_GUEST_MEMFD_PRESENCE_H */
