/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The guest_memfd presence uAPI (include/uapi/linux/kvm.h of the patched
 * kernel), under our own names, so that the library builds against any
 * installed linux/kvm.h.  When the installed header has the presence uAPI
 * (the in-VM build uses the patched kernel's headers: GMFP_KHDR), every
 * number and layout here is checked against it at compile time.
 */
#ifndef GMFP_KUAPI_H
#define GMFP_KUAPI_H

#include <stddef.h>
#include <linux/kvm.h>

#define GMFP_K_CAP_GUEST_MEMFD_PRESENCE	252
#define GMFP_K_CAP_GUEST_MEMFD_FLAGS	244
#define GMFP_K_FLAG_MMAP		(1ULL << 0)
#define GMFP_K_FLAG_INIT_SHARED		(1ULL << 1)
#define GMFP_K_FLAG_PRESENCE		(1ULL << 2)

#define GMFP_K_OP_MARK		1
#define GMFP_K_OP_COPY		2
#define GMFP_K_OP_DISCARD	3
#define GMFP_K_OP_REARM		4
#define GMFP_K_OP_FINISH	5

#define GMFP_K_NOTIFY_PID	(1U << 0)
#define GMFP_K_FINISHED		(1ULL << 0)
#define GMFP_K_EXIT_FLAG_NOT_PRESENT (1ULL << 4)

struct gmfp_k_create_guest_memfd {
	__u64 size;
	__u64 flags;
	__u64 reserved[6];
};

struct gmfp_k_memory_present {
	__u64 offset;
	__u64 size;
	__u32 op;
	__u32 flags;
	__u64 src;
	__u64 done;
	__u64 reserved[3];
};

struct gmfp_k_memory_present_bitmap {
	__u64 offset;
	__u64 size;
	__u64 bitmap;
	__u64 flags;
	__u64 reserved[4];
};

struct gmfp_k_notify_fd {
	__u32 flags;
	__u32 pad;
	__u64 reserved[3];
};

struct gmfp_k_presence_stats {
	__u64 nr_pages;
	__u64 nr_present;
	__u64 faults;
	__u64 notifications;
	__u64 waits;
	__u64 wakeups;
	__u64 pages_set;
	__u64 pages_cleared;
	__u64 events_queued;
	__u64 wake_misses;
	__u64 flags;
	__u64 reserved[5];
};

#define GMFP_K_CREATE_GUEST_MEMFD _IOWR(KVMIO, 0xd4, struct gmfp_k_create_guest_memfd)
#define GMFP_K_SET_MEMORY_PRESENT _IOWR(KVMIO, 0xd6, struct gmfp_k_memory_present)
#define GMFP_K_GET_MEMORY_PRESENT _IOW(KVMIO, 0xd7, struct gmfp_k_memory_present_bitmap)
#define GMFP_K_GET_NOTIFY_FD	  _IOW(KVMIO, 0xd8, struct gmfp_k_notify_fd)
#define GMFP_K_PRESENCE_STATS	  _IOR(KVMIO, 0xd9, struct gmfp_k_presence_stats)

#define GMFP_K_SAME(a, b) _Static_assert((a) == (b), #a " != " #b)
#define GMFP_K_SAME_LAYOUT(ours, theirs) \
	_Static_assert(sizeof(struct ours) == sizeof(struct theirs), #ours)

#ifdef KVM_SET_MEMORY_PRESENT
GMFP_K_SAME(GMFP_K_CAP_GUEST_MEMFD_PRESENCE, KVM_CAP_GUEST_MEMFD_PRESENCE);
GMFP_K_SAME(GMFP_K_CAP_GUEST_MEMFD_FLAGS, KVM_CAP_GUEST_MEMFD_FLAGS);
GMFP_K_SAME(GMFP_K_FLAG_MMAP, GUEST_MEMFD_FLAG_MMAP);
GMFP_K_SAME(GMFP_K_FLAG_INIT_SHARED, GUEST_MEMFD_FLAG_INIT_SHARED);
GMFP_K_SAME(GMFP_K_FLAG_PRESENCE, GUEST_MEMFD_FLAG_PRESENCE);
GMFP_K_SAME(GMFP_K_OP_MARK, KVM_MEMORY_PRESENT_MARK);
GMFP_K_SAME(GMFP_K_OP_COPY, KVM_MEMORY_PRESENT_COPY);
GMFP_K_SAME(GMFP_K_OP_DISCARD, KVM_MEMORY_PRESENT_DISCARD);
GMFP_K_SAME(GMFP_K_OP_REARM, KVM_MEMORY_PRESENT_REARM);
GMFP_K_SAME(GMFP_K_OP_FINISH, KVM_MEMORY_PRESENT_FINISH);
GMFP_K_SAME(GMFP_K_NOTIFY_PID, KVM_GMEM_NOTIFY_PID);
GMFP_K_SAME(GMFP_K_FINISHED, KVM_GMEM_PRESENCE_FINISHED);
GMFP_K_SAME(GMFP_K_EXIT_FLAG_NOT_PRESENT, KVM_MEMORY_EXIT_FLAG_NOT_PRESENT);
GMFP_K_SAME(GMFP_K_CREATE_GUEST_MEMFD, KVM_CREATE_GUEST_MEMFD);
GMFP_K_SAME(GMFP_K_SET_MEMORY_PRESENT, KVM_SET_MEMORY_PRESENT);
GMFP_K_SAME(GMFP_K_GET_MEMORY_PRESENT, KVM_GET_MEMORY_PRESENT);
GMFP_K_SAME(GMFP_K_GET_NOTIFY_FD, KVM_GMEM_GET_NOTIFY_FD);
GMFP_K_SAME(GMFP_K_PRESENCE_STATS, KVM_GMEM_PRESENCE_STATS);
GMFP_K_SAME_LAYOUT(gmfp_k_memory_present, kvm_memory_present);
GMFP_K_SAME_LAYOUT(gmfp_k_memory_present_bitmap, kvm_memory_present_bitmap);
GMFP_K_SAME_LAYOUT(gmfp_k_notify_fd, kvm_gmem_notify_fd);
GMFP_K_SAME_LAYOUT(gmfp_k_presence_stats, kvm_gmem_presence_stats);
GMFP_K_SAME_LAYOUT(gmfp_event, kvm_gmem_presence_event);
GMFP_K_SAME(offsetof(struct gmfp_event, offset), offsetof(struct kvm_gmem_presence_event, offset));
GMFP_K_SAME(offsetof(struct gmfp_event, origin), offsetof(struct kvm_gmem_presence_event, origin));
GMFP_K_SAME(offsetof(struct gmfp_event, pid), offsetof(struct kvm_gmem_presence_event, pid));
GMFP_K_SAME(GMFP_ORIGIN_VCPU, KVM_GMEM_ORIGIN_VCPU);
GMFP_K_SAME(GMFP_ORIGIN_KVM, KVM_GMEM_ORIGIN_KVM);
GMFP_K_SAME(GMFP_ORIGIN_MMAP, KVM_GMEM_ORIGIN_MMAP);
GMFP_K_SAME(GMFP_ACCESS_READ, KVM_GMEM_ACCESS_READ);
GMFP_K_SAME(GMFP_ACCESS_WRITE, KVM_GMEM_ACCESS_WRITE);
GMFP_K_SAME(GMFP_ACCESS_EXEC, KVM_GMEM_ACCESS_EXEC);
GMFP_K_SAME(GMFP_EVENT_FAULT, KVM_GMEM_EVENT_FAULT);
GMFP_K_SAME(GMFP_NO_VCPU, KVM_GMEM_NO_VCPU);
GMFP_K_SAME(GMFP_POLICY_EXIT, KVM_GMEM_PRESENCE_EXIT);
GMFP_K_SAME(GMFP_POLICY_WAIT, KVM_GMEM_PRESENCE_WAIT);
GMFP_K_SAME(GMFP_POLICY_ASYNC, KVM_GMEM_PRESENCE_ASYNC);
#elif defined(GMFP_KHDR)
#error "GMFP_KHDR: the kernel headers given have no guest_memfd presence uAPI"
#endif
_Static_assert(sizeof(struct gmfp_event) == 48, "record size");

#endif /* GMFP_KUAPI_H */
