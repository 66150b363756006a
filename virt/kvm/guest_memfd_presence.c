// SPDX-License-Identifier: GPL-2.0
/*
 * guest_memfd presence tracking.
 *
 * A guest_memfd created with GUEST_MEMFD_FLAG_PRESENCE starts with every page
 * not present.  Every way of reaching a page -- a vCPU fault through
 * kvm_gmem_get_pfn(), a KVM-internal or userspace access through an mmap of
 * the guest_memfd -- tests the page's bit first.  The first access in a
 * not-present period queues one record for userspace; the accessor then exits
 * or waits until userspace populates the page with KVM_SET_MEMORY_PRESENT.
 *
 * Ordering: a page's contents are written before its present bit is set with
 * release semantics, and every gate tests the bit with acquire semantics, so
 * whoever sees the bit sees the contents.  Waiters queue themselves and then
 * test the bit again before sleeping; the setter sets the bit before it looks
 * at the wait queue (wq_has_sleeper() has the full barrier), so either the
 * waiter sees the bit or the setter sees the waiter.
 *
 * Lifetime: the state is referenced by the inode and by every notification
 * fd.  The inode's death (or KVM_MEMORY_PRESENT_FINISH) frees the bitmaps and
 * queued records; a notification fd that outlives the inode pins nothing but
 * the small structure itself and reads end-of-file.  The gates test the
 * bitmaps locklessly, so they are freed only after an RCU grace period, and
 * every lockless reader tests @finished first inside an RCU read-side section.
 * Everything that walks or changes the bitmaps for longer holds the mapping's
 * invalidate lock, which FINISH takes exclusively.
 */
#include <linux/anon_inodes.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/hash.h>
#include <linux/highmem.h>
#include <linux/kref.h>
#include <linux/kvm_host.h>
#include <linux/mm.h>
#include <linux/pagemap.h>
#include <linux/folio_batch.h>
#include <linux/poll.h>
#include <linux/sched/mm.h>
#include <linux/sched/signal.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/vmalloc.h>
#include <linux/wait.h>
#include <trace/events/kvm.h>

#include "guest_memfd.h"

/*
 * Waiters are spread over hashed queues, keyed by page index, so that vCPUs
 * faulting on different pages neither share one lock nor wake each other
 * (userfaultfd's single fault queue is what collapses its paging rate).  The
 * index is hashed, not masked: first touches at a 2 MiB (or any power of two)
 * stride would otherwise all land on one queue.
 */
#define KVM_GMEM_PRESENCE_WAITQ_BITS	8
#define KVM_GMEM_PRESENCE_NR_WAITQ	BIT(KVM_GMEM_PRESENCE_WAITQ_BITS)

enum {
	GMEM_STAT_FAULTS,
	GMEM_STAT_NOTIFICATIONS,
	GMEM_STAT_WAITS,
	GMEM_STAT_WAKEUPS,
	GMEM_STAT_SET,
	GMEM_STAT_CLEARED,
	GMEM_STAT_WAKE_MISSES,
	GMEM_NR_STATS,
};

struct kvm_gmem_presence {
	/* One reference for the inode, one per notification fd. */
	struct kref ref;
	/* For tracepoints: which guest_memfd. */
	unsigned long ino;
	pgoff_t nr_pages;
	/* One bit per page: contents valid, accesses pass the gate. */
	unsigned long *present;
	/* One bit per page: this not-present period has a record. */
	unsigned long *notified;
	/* One bit per page, under @event_lock: a record is on @events. */
	unsigned long *queued;
	/*
	 * Every page is present for good: the gates pass without looking at
	 * the bitmaps, which are gone.  Set under @event_lock and the
	 * invalidate lock.
	 */
	bool finished;

	/* Bumped whenever waiters must re-evaluate (see gmem_new_period()). */
	atomic_long_t gen;
	/*
	 * No more records can come: the guest_memfd file was released, or
	 * tracking finished.  Readers get end-of-file once @events is empty.
	 */
	bool closed;

	/* Protects @events, @nr_queued, @queued, and sets @closed/@finished. */
	spinlock_t event_lock;
	struct list_head events;
	unsigned long nr_queued;
	wait_queue_head_t event_wq;

	atomic64_t stats[GMEM_NR_STATS];
	wait_queue_head_t page_wq[KVM_GMEM_PRESENCE_NR_WAITQ];
};

struct kvm_gmem_presence_record {
	struct list_head list;
	pgoff_t index;
	u32 access;
	u32 origin;
	u32 vcpu_id;
	struct pid *pid;
};

struct kvm_gmem_presence_waiter {
	wait_queue_entry_t wait;
	struct kvm_gmem_presence *p;
	pgoff_t index;
};

/* The range woken by a set-present; NULL as a key wakes everybody. */
struct kvm_gmem_presence_key {
	pgoff_t start;
	pgoff_t end;
};

static void gmem_stat_add(struct kvm_gmem_presence *p, int stat, long n)
{
	atomic64_add(n, &p->stats[stat]);
}

static wait_queue_head_t *gmem_waitq(struct kvm_gmem_presence *p, pgoff_t index)
{
	return &p->page_wq[hash_long(index, KVM_GMEM_PRESENCE_WAITQ_BITS)];
}

static void gmem_free_bitmaps(struct kvm_gmem_presence *p)
{
	kvfree(p->present);
	kvfree(p->notified);
	kvfree(p->queued);
	p->present = NULL;
	p->notified = NULL;
	p->queued = NULL;
}

struct kvm_gmem_presence *kvm_gmem_presence_create(struct inode *inode)
{
	pgoff_t nr_pages = i_size_read(inode) >> PAGE_SHIFT;
	size_t bytes = BITS_TO_LONGS(nr_pages) * sizeof(long);
	struct kvm_gmem_presence *p;
	int i;

	p = kzalloc_obj(*p, GFP_KERNEL_ACCOUNT);
	if (!p)
		return ERR_PTR(-ENOMEM);

	/*
	 * Three bits per page, allocated up front so that no fault ever has
	 * to allocate tracking state.  Sizes whose bitmaps can't be allocated
	 * fail the creation rather than warn.
	 */
	p->present = kvzalloc(bytes, GFP_KERNEL_ACCOUNT | __GFP_NOWARN);
	p->notified = kvzalloc(bytes, GFP_KERNEL_ACCOUNT | __GFP_NOWARN);
	p->queued = kvzalloc(bytes, GFP_KERNEL_ACCOUNT | __GFP_NOWARN);
	if (!p->present || !p->notified || !p->queued) {
		gmem_free_bitmaps(p);
		kfree(p);
		return ERR_PTR(-ENOMEM);
	}

	kref_init(&p->ref);
	p->ino = inode->i_ino;
	p->nr_pages = nr_pages;
	spin_lock_init(&p->event_lock);
	INIT_LIST_HEAD(&p->events);
	init_waitqueue_head(&p->event_wq);
	for (i = 0; i < KVM_GMEM_PRESENCE_NR_WAITQ; i++)
		init_waitqueue_head(&p->page_wq[i]);
	return p;
}

static void gmem_presence_free(struct kref *ref)
{
	kfree(container_of(ref, struct kvm_gmem_presence, ref));
}

static void gmem_presence_put(struct kvm_gmem_presence *p)
{
	kref_put(&p->ref, gmem_presence_free);
}

static void gmem_free_record(struct kvm_gmem_presence_record *rec)
{
	put_pid(rec->pid);
	kfree(rec);
}

/*
 * Take every queued record off the list and mark no more records as coming;
 * the caller frees them outside the lock.  Readers blocked in read() or
 * poll() are told.
 */
static void gmem_close_events(struct kvm_gmem_presence *p, bool finish,
			      struct list_head *stale)
{
	spin_lock(&p->event_lock);
	WRITE_ONCE(p->closed, true);
	if (finish) {
		/* Pairs with the acquire in the gates: see the file comment. */
		smp_store_release(&p->finished, true);
	}
	list_splice_init(&p->events, stale);
	p->nr_queued = 0;
	spin_unlock(&p->event_lock);
	wake_up_poll(&p->event_wq, EPOLLHUP);
}

static void gmem_free_records(struct list_head *list)
{
	struct kvm_gmem_presence_record *rec, *tmp;

	list_for_each_entry_safe(rec, tmp, list, list) {
		gmem_free_record(rec);
		cond_resched();
	}
}

/*
 * Called when the inode dies: no fault, waiter or ioctl can be left, only
 * notification fds, which now read end-of-file.  Everything proportional to
 * the guest_memfd's size goes now, not when the last notification fd does.
 */
void kvm_gmem_presence_destroy(struct kvm_gmem_presence *p)
{
	LIST_HEAD(stale);

	gmem_close_events(p, false, &stale);
	gmem_free_records(&stale);
	gmem_free_bitmaps(p);
	gmem_presence_put(p);
}

/**
 * kvm_gmem_presence_test() - the gate: is a page present?
 * @p: presence state of the guest_memfd inode
 * @index: page index in the guest_memfd
 *
 * Acquire: pairs with the release in gmem_set_present(), so a caller that
 * sees the bit also sees the contents written before it was set.  Once
 * tracking has finished every page is present and the bitmap may be gone.
 *
 * Return: true if the page is present.
 */
bool kvm_gmem_presence_test(struct kvm_gmem_presence *p, pgoff_t index)
{
	guard(rcu)();
	/* Finished: the bitmap may be gone; pairs with gmem_close_events(). */
	if (smp_load_acquire(&p->finished))
		return true;
	return test_bit_acquire(index, p->present);
}

static void gmem_set_present(struct kvm_gmem_presence *p, pgoff_t index)
{
	/* Contents (copied or zeroed) before the bit; see the file comment. */
	smp_mb__before_atomic();
	set_bit(index, p->present);
}

static int gmem_wake_fn(wait_queue_entry_t *wait, unsigned int mode, int sync,
			void *arg)
{
	struct kvm_gmem_presence_waiter *w;
	struct kvm_gmem_presence_key *key = arg;

	w = container_of(wait, struct kvm_gmem_presence_waiter, wait);
	if (key && (w->index < key->start || w->index >= key->end)) {
		gmem_stat_add(w->p, GMEM_STAT_WAKE_MISSES, 1);
		return 0;
	}

	gmem_stat_add(w->p, GMEM_STAT_WAKEUPS, 1);
	trace_kvm_gmem_presence_wake(w->p->ino, w->index);
	return autoremove_wake_function(wait, mode, sync, NULL);
}

static void gmem_wake_queue(wait_queue_head_t *wq,
			    struct kvm_gmem_presence_key *key)
{
	/* Full barrier: the bits set by the caller before the queue check. */
	if (wq_has_sleeper(wq))
		__wake_up(wq, TASK_NORMAL, 0, key);
}

static void gmem_wake_range(struct kvm_gmem_presence *p, pgoff_t start,
			    pgoff_t end)
{
	struct kvm_gmem_presence_key key = { .start = start, .end = end };
	pgoff_t i;

	if (end - start >= KVM_GMEM_PRESENCE_NR_WAITQ) {
		for (i = 0; i < KVM_GMEM_PRESENCE_NR_WAITQ; i++)
			gmem_wake_queue(&p->page_wq[i], &key);
		return;
	}

	for (i = start; i < end; i++)
		gmem_wake_queue(gmem_waitq(p, i), &key);
}

/**
 * kvm_gmem_presence_wake_all() - make every waiter re-evaluate
 * @p: presence state
 *
 * Used when the ground moves under waiters: a memslot is unbound, the file is
 * released, the VM's policy changes.  Waiters that armed before the call see
 * the generation change even if they only queue themselves after it.
 */
void kvm_gmem_presence_wake_all(struct kvm_gmem_presence *p)
{
	int i;

	atomic_long_inc(&p->gen);
	for (i = 0; i < KVM_GMEM_PRESENCE_NR_WAITQ; i++)
		gmem_wake_queue(&p->page_wq[i], NULL);
}

/**
 * kvm_gmem_presence_new_period() - make the waiters on a range re-evaluate
 * @p: presence state
 * @start: first page index
 * @end: page index after the last
 *
 * A waiter snapshots the generation and then only watches its page's bit.
 * If the page was set and re-armed again meanwhile, the wakeup for the set
 * found nobody queued yet, and the bit it watches looks unchanged: moving the
 * generation makes it look again and report the new period.  A private <->
 * shared conversion moves the ground the same way: the access may now be
 * served elsewhere, or fail.  Waiters and pending async #PFs on the range are
 * woken; others that see the new generation only retry once.
 */
void kvm_gmem_presence_new_period(struct kvm_gmem_presence *p, pgoff_t start,
				  pgoff_t end)
{
	atomic_long_inc(&p->gen);
	gmem_wake_range(p, start, end);
}

/**
 * kvm_gmem_presence_close() - the guest_memfd file is being released
 * @p: presence state
 *
 * No new access can reach the pages, and nobody can populate them: no more
 * records are queued, readers of the notification fd get end-of-file once
 * they have read those already queued, and waiters are woken to find out.
 */
void kvm_gmem_presence_close(struct kvm_gmem_presence *p)
{
	spin_lock(&p->event_lock);
	WRITE_ONCE(p->closed, true);
	spin_unlock(&p->event_lock);
	wake_up_poll(&p->event_wq, EPOLLHUP);
	kvm_gmem_presence_wake_all(p);
}

/*
 * Clear bits [@start, @end) atomically: faults set bits in the same words
 * without any lock.  Indices are 64-bit, unlike bitmap_clear()'s.
 */
static void gmem_bitmap_clear(unsigned long *map, pgoff_t start, pgoff_t end)
{
	while (start < end) {
		unsigned long mask = BITMAP_FIRST_WORD_MASK(start);
		pgoff_t word = BIT_WORD(start);

		if (end < (word + 1) * BITS_PER_LONG)
			mask &= BITMAP_LAST_WORD_MASK(end);
		atomic_long_andnot(mask, (atomic_long_t *)&map[word]);
		start = (word + 1) * BITS_PER_LONG;
		if (!(word % 4096))
			cond_resched();
	}
}

/**
 * kvm_gmem_presence_rearm() - mark a range not present again
 * @p: presence state
 * @start: first page index
 * @end: page index after the last
 *
 * The caller holds the invalidate lock for write and is inside an
 * invalidation of the range, so in-flight vCPU faults that passed the gate
 * will be retried.  Re-arming a page that isn't present starts a new
 * not-present period too.  The notified bits go first: an access that sees
 * the page not present can then always raise a record for the new period.
 */
void kvm_gmem_presence_rearm(struct kvm_gmem_presence *p, pgoff_t start,
			     pgoff_t end)
{
	end = min(end, p->nr_pages);
	if (start >= end || WARN_ON_ONCE(p->finished))
		return;

	gmem_bitmap_clear(p->notified, start, end);
	/* A fault that sees the page not present must find notified clear. */
	smp_mb__after_atomic();
	gmem_bitmap_clear(p->present, start, end);
	/* Order the clears before anything the caller zaps afterwards. */
	smp_mb();
	gmem_stat_add(p, GMEM_STAT_CLEARED, end - start);
}

/* Nothing to record: the page is present, or this period has a record. */
static bool gmem_notified(struct kvm_gmem_presence *p, pgoff_t index)
{
	guard(rcu)();
	/* As in kvm_gmem_presence_test(): finished first, then the bitmap. */
	return smp_load_acquire(&p->finished) || test_bit(index, p->notified);
}

/*
 * Claim the page's not-present period and queue its record, under
 * @event_lock.  A record from an earlier period that no reader has taken yet
 * stands for this one too, so at most one record per page is ever queued and
 * the queue is bounded by the guest_memfd's size, read or not.
 *
 * Return: true if done (claimed, or nothing to do); false if the caller
 * must come back with a record to queue.
 */
static bool gmem_claim_period(struct kvm_gmem_presence *p, pgoff_t index,
			      struct kvm_gmem_presence_record **recp)
{
	struct kvm_gmem_presence_record *rec = *recp;

	lockdep_assert_held(&p->event_lock);

	if (p->finished || p->closed || test_bit(index, p->notified))
		return true;
	if (test_bit(index, p->queued)) {
		set_bit(index, p->notified);
		return true;
	}
	if (!rec)
		return false;

	set_bit(index, p->notified);
	__set_bit(index, p->queued);
	list_add_tail(&rec->list, &p->events);
	p->nr_queued++;
	*recp = NULL;
	return true;
}

/*
 * Raise the page's record unless this not-present period already has one.
 * The record is allocated before the lock is taken, and only when no queued
 * record already covers the page.
 *
 * Return: 0, or -ENOMEM if a record was needed and couldn't be allocated;
 * the caller waits a little and retries the access.
 */
static int gmem_notify(struct kvm_gmem_presence *p, pgoff_t index, u32 access,
		       u32 origin, u32 vcpu_id)
{
	struct kvm_gmem_presence_record *rec = NULL;
	bool queued = false, done;

	gmem_stat_add(p, GMEM_STAT_FAULTS, 1);
	while (!gmem_notified(p, index)) {
		if (!rec) {
			rec = kmalloc_obj(*rec, GFP_KERNEL_ACCOUNT);
			if (!rec)
				return -ENOMEM;
			rec->index = index;
			rec->access = access;
			rec->origin = origin;
			rec->vcpu_id = vcpu_id;
			rec->pid = get_pid(task_tgid(current));
		}

		spin_lock(&p->event_lock);
		done = gmem_claim_period(p, index, &rec);
		spin_unlock(&p->event_lock);
		if (done) {
			queued = !rec;
			break;
		}
	}
	if (rec)
		gmem_free_record(rec);

	trace_kvm_gmem_presence_fault(p->ino, index, access, origin, queued);
	if (queued) {
		gmem_stat_add(p, GMEM_STAT_NOTIFICATIONS, 1);
		wake_up_poll(&p->event_wq, EPOLLIN | EPOLLRDNORM);
	}
	return 0;
}

static bool gmem_must_wait(struct kvm_gmem_presence *p, pgoff_t index,
			   unsigned long gen)
{
	return !kvm_gmem_presence_test(p, index) &&
	       atomic_long_read(&p->gen) == gen && !READ_ONCE(p->closed);
}

static void gmem_init_waiter(struct kvm_gmem_presence_waiter *w,
			     struct kvm_gmem_presence *p, pgoff_t index)
{
	init_waitqueue_func_entry(&w->wait, gmem_wake_fn);
	INIT_LIST_HEAD(&w->wait.entry);
	w->wait.private = current;
	w->p = p;
	w->index = index;
}

/*
 * Sleep once until the page is present, the generation moves, or a signal
 * that @state allows arrives.  Callers retry their access afterwards, so a
 * spurious wakeup costs one more trip through the gate.
 */
static int gmem_wait_once(struct kvm_gmem_presence *p, pgoff_t index,
			  unsigned long gen, unsigned int state)
{
	struct kvm_gmem_presence_waiter w;
	wait_queue_head_t *wq = gmem_waitq(p, index);
	int r = 0;

	gmem_init_waiter(&w, p, index);
	prepare_to_wait(wq, &w.wait, state);
	if (gmem_must_wait(p, index, gen)) {
		if (signal_pending_state(state, current)) {
			r = -EINTR;
		} else {
			gmem_stat_add(p, GMEM_STAT_WAITS, 1);
			trace_kvm_gmem_presence_wait(p->ino, index);
			schedule();
			if (!kvm_gmem_presence_test(p, index) &&
			    signal_pending_state(state, current))
				r = -EINTR;
		}
	}
	finish_wait(wq, &w.wait);
	return r;
}

static u32 gmem_fault_access(struct vm_fault *vmf)
{
	if (vmf->flags & FAULT_FLAG_INSTRUCTION)
		return KVM_GMEM_ACCESS_EXEC;
	if (vmf->flags & FAULT_FLAG_WRITE)
		return KVM_GMEM_ACCESS_WRITE;
	return KVM_GMEM_ACCESS_READ;
}

static int gmem_notify_mmap(struct vm_fault *vmf, struct kvm_gmem_presence *p)
{
	struct kvm_vcpu *vcpu = NULL;
	u32 origin = KVM_GMEM_ORIGIN_MMAP;

	/*
	 * A kernel-mode access by a thread with a loaded vCPU is KVM reaching
	 * guest memory through the memslot's mapping of the guest_memfd.
	 */
	if (!(vmf->flags & FAULT_FLAG_USER))
		vcpu = kvm_get_running_vcpu();
	if (vcpu)
		origin = KVM_GMEM_ORIGIN_KVM;

	return gmem_notify(p, vmf->pgoff, gmem_fault_access(vmf), origin,
			   vcpu ? vcpu->vcpu_id : KVM_GMEM_NO_VCPU);
}

/*
 * How a fault on a not-present page sleeps.  A user-mode fault, and the
 * first attempt of any fault, sleeps interruptibly if the caller allows it:
 * a pending signal ends the sleep, and VM_FAULT_RETRY lets the caller act on
 * it (GUP with FOLL_INTERRUPTIBLE returns -EINTR, a user-mode fault returns
 * to deliver it).  But a kernel-mode fault taken by the arch fault handler,
 * such as KVM's copy_from_user() of guest memory, is retried at once for
 * anything but a fatal signal: sleeping interruptibly again would spin with
 * the signal pending, never delivered.  A retry (FAULT_FLAG_TRIED) that comes
 * back with a signal still pending is such a fault; it sleeps killable
 * instead, which the hung task detector leaves alone.
 */
static unsigned int gmem_fault_wait_state(unsigned int flags)
{
	if ((flags & FAULT_FLAG_INTERRUPTIBLE) &&
	    ((flags & FAULT_FLAG_USER) || !(flags & FAULT_FLAG_TRIED) ||
	     !signal_pending(current)))
		return TASK_INTERRUPTIBLE;
	if (flags & FAULT_FLAG_KILLABLE)
		return TASK_KILLABLE;
	return TASK_UNINTERRUPTIBLE;
}

/* The record couldn't be allocated: back off a little, then retry. */
static vm_fault_t gmem_fault_nomem(struct vm_fault *vmf)
{
	if (!(vmf->flags & FAULT_FLAG_RETRY_NOWAIT)) {
		release_fault_lock(vmf);
		memalloc_retry_wait(GFP_KERNEL_ACCOUNT);
	}
	return VM_FAULT_RETRY;
}

/**
 * kvm_gmem_presence_fault() - the gate for faults on a guest_memfd mapping
 * @vmf: the fault
 * @p: presence state of the mapped inode
 *
 * Waits like handle_userfault(): the waiter is queued and the bit tested
 * again before the fault lock is dropped and the task sleeps; the fault is
 * then retried.  No-wait faults (FAULT_FLAG_RETRY_NOWAIT) only raise the
 * record.
 *
 * Return: 0 if the page is present and the fault may proceed, else the
 * vm_fault_t to return.
 */
vm_fault_t kvm_gmem_presence_fault(struct vm_fault *vmf,
				   struct kvm_gmem_presence *p)
{
	struct kvm_gmem_presence_waiter w;
	pgoff_t index = vmf->pgoff;
	wait_queue_head_t *wq;
	unsigned int state;
	struct inode *inode;
	unsigned long gen;
	bool sleep;

	if (likely(kvm_gmem_presence_test(p, index)))
		return 0;

	/*
	 * The caller can't drop the mmap/VMA lock: GUP without
	 * FOLL_UNLOCKABLE, e.g. access_remote_vm().  Sleeping with the lock
	 * held could deadlock with a populating thread of this mm that needs
	 * it, queued behind a writer, so fail the access the way
	 * handle_userfault() does, once the record is raised (if it can be).
	 * Faults from user mode, and KVM's copy_{from,to}_user() and GUP of
	 * guest memory, can always be retried and never get here.
	 */
	if (!(vmf->flags & FAULT_FLAG_ALLOW_RETRY)) {
		gmem_notify_mmap(vmf, p);
		return VM_FAULT_SIGBUS;
	}

	gen = atomic_long_read(&p->gen);
	if (gmem_notify_mmap(vmf, p))
		return gmem_fault_nomem(vmf);

	if (vmf->flags & FAULT_FLAG_RETRY_NOWAIT)
		return VM_FAULT_RETRY;

	state = gmem_fault_wait_state(vmf->flags);
	wq = gmem_waitq(p, index);
	gmem_init_waiter(&w, p, index);
	prepare_to_wait(wq, &w.wait, state);
	if (!gmem_must_wait(p, index, gen)) {
		finish_wait(wq, &w.wait);
		/* Present now: carry on holding the lock; else just retry. */
		if (kvm_gmem_presence_test(p, index))
			return 0;
		release_fault_lock(vmf);
		return VM_FAULT_RETRY;
	}

	/*
	 * Once the fault lock is dropped, nothing keeps the VMA, and with it
	 * the inode, @p and @wq alive: another thread may unmap and close the
	 * guest_memfd while this one sleeps.  Pin the inode, as an armed vCPU
	 * wait does, rather than the file: the release of the file is what
	 * wakes this waiter when nobody is left to populate the page.
	 */
	inode = file_inode(vmf->vma->vm_file);
	ihold(inode);
	sleep = !signal_pending_state(state, current);
	if (sleep) {
		gmem_stat_add(p, GMEM_STAT_WAITS, 1);
		trace_kvm_gmem_presence_wait(p->ino, index);
	}
	release_fault_lock(vmf);
	if (sleep)
		schedule();
	finish_wait(wq, &w.wait);
	iput(inode);
	return VM_FAULT_RETRY;
}

#ifdef CONFIG_KVM_ASYNC_PF
static int gmem_async_wake_fn(wait_queue_entry_t *wait, unsigned int mode,
			      int sync, void *arg)
{
	struct kvm_gmem_async *ga = container_of(wait, struct kvm_gmem_async,
						 wait);
	struct kvm_gmem_presence_key *key = arg;

	if (key && (ga->index < key->start || ga->index >= key->end)) {
		gmem_stat_add(kvm_gmem_presence(ga->inode),
			      GMEM_STAT_WAKE_MISSES, 1);
		return 0;
	}

	list_del_init(&wait->entry);
	gmem_stat_add(kvm_gmem_presence(ga->inode), GMEM_STAT_WAKEUPS, 1);
	trace_kvm_gmem_presence_wake(ga->inode->i_ino, ga->index);
	kvm_async_pf_gmem_ready(ga);
	return 1;
}

/**
 * kvm_gmem_presence_async_arm() - complete an async #PF when a page is in
 * @ga: the guest_memfd part of the async #PF
 * @inode: the guest_memfd inode, referenced until the async #PF is freed
 * @index: the page
 * @gen: the generation sampled before the page was found not present
 *
 * The entry goes on the page's wait queue like a sleeping task would, then
 * the page is tested again: if it turned present (or the ground moved) in the
 * meantime, the wakeup is issued here, so it can't be lost.
 */
void kvm_gmem_presence_async_arm(struct kvm_gmem_async *ga,
				 struct inode *inode, pgoff_t index,
				 unsigned long gen)
{
	struct kvm_gmem_presence *p = kvm_gmem_presence(inode);
	struct kvm_gmem_presence_key key = { .start = index, .end = index + 1 };
	wait_queue_head_t *wq = gmem_waitq(p, index);

	ihold(inode);
	ga->inode = inode;
	ga->index = index;
	init_waitqueue_func_entry(&ga->wait, gmem_async_wake_fn);
	INIT_LIST_HEAD(&ga->wait.entry);
	add_wait_queue(wq, &ga->wait);

	/* Pairs with the barrier in wq_has_sleeper() on the setter's side. */
	smp_mb();
	if (!gmem_must_wait(p, index, gen))
		__wake_up(wq, TASK_NORMAL, 0, &key);
}

/**
 * kvm_gmem_presence_async_disarm() - take a pending async #PF off its page
 * @ga: the guest_memfd part of the async #PF
 *
 * Return: true if it was still waiting; false if a wakeup completed it
 * already, i.e. it is on its vCPU's done list.
 */
bool kvm_gmem_presence_async_disarm(struct kvm_gmem_async *ga)
{
	struct kvm_gmem_presence *p = kvm_gmem_presence(ga->inode);
	wait_queue_head_t *wq = gmem_waitq(p, ga->index);
	unsigned long flags;
	bool queued;

	spin_lock_irqsave(&wq->lock, flags);
	queued = !list_empty(&ga->wait.entry);
	if (queued)
		list_del_init(&ga->wait.entry);
	spin_unlock_irqrestore(&wq->lock, flags);
	return queued;
}
#endif /* CONFIG_KVM_ASYNC_PF */

/**
 * kvm_gmem_async_fallback() - an async #PF can't be used for this fault
 * @vcpu: the faulting vCPU
 * @cr2_or_gpa: the faulting address
 * @reason: KVM_GMEM_APF_FALLBACK_*
 *
 * Count (in total and per reason) and trace why the VM's fallback policy
 * handles the fault, so that a VMM can tell a guest that never enabled
 * async #PF from one whose queue overflows.  Every fallback goes through
 * here.
 */
void kvm_gmem_async_fallback(struct kvm_vcpu *vcpu, gpa_t cr2_or_gpa,
			     int reason)
{
	struct kvm_vcpu_stat_generic *stat = &vcpu->stat.generic;

	trace_kvm_gmem_async_fallback(cr2_or_gpa, reason);
	++stat->gmem_async_fallbacks;
	switch (reason) {
	case KVM_GMEM_APF_FALLBACK_DISABLED:
		++stat->gmem_async_fallback_disabled;
		break;
	case KVM_GMEM_APF_FALLBACK_NESTED:
		++stat->gmem_async_fallback_nested;
		break;
	case KVM_GMEM_APF_FALLBACK_PROTECTED:
		++stat->gmem_async_fallback_protected;
		break;
	case KVM_GMEM_APF_FALLBACK_BLOCKED:
		++stat->gmem_async_fallback_blocked;
		break;
	case KVM_GMEM_APF_FALLBACK_QUEUE_FULL:
		++stat->gmem_async_fallback_queue_full;
		break;
	default:
		WARN_ON_ONCE(1);
	}
}

/*
 * Try an async #PF; false if the fallback policy must handle the fault.
 * Without @apf the arch has already said, and counted, why not.
 */
static bool gmem_vcpu_async(struct kvm_vcpu *vcpu, struct inode *inode,
			    pgoff_t index, unsigned long gen, gpa_t cr2_or_gpa,
			    struct kvm_arch_async_pf *apf)
{
#ifdef CONFIG_KVM_ASYNC_PF
	if (!apf)
		return false;
	if (kvm_setup_async_pf_gmem(vcpu, cr2_or_gpa, apf, inode, index, gen))
		return true;
	kvm_gmem_async_fallback(vcpu, cr2_or_gpa,
				KVM_GMEM_APF_FALLBACK_QUEUE_FULL);
#endif
	return false;
}

/**
 * kvm_gmem_presence_vcpu_fault() - a vCPU faulted on a not-present page
 * @vcpu: the vCPU
 * @inode: the guest_memfd inode
 * @index: page index in the guest_memfd
 * @access: KVM_GMEM_ACCESS_* of the fault
 * @cr2_or_gpa: the faulting address, for an async #PF
 * @apf: the arch's async #PF data if one can be injected now, else NULL
 *
 * Return: 0 to retry the fault (a wait or an async #PF may be armed), or
 * -EFAULT to exit to userspace.
 */
int kvm_gmem_presence_vcpu_fault(struct kvm_vcpu *vcpu, struct inode *inode,
				 pgoff_t index, u32 access, gpa_t cr2_or_gpa,
				 struct kvm_arch_async_pf *apf)
{
	struct kvm_gmem_presence *p = kvm_gmem_presence(inode);
	unsigned long gen = atomic_long_read(&p->gen);
	u8 policy;

	++vcpu->stat.generic.gmem_presence_faults;

	/*
	 * No memory for the page's record: back off and let the guest retry
	 * the access, rather than fail KVM_RUN with an error userspace can't
	 * tie to the page.  A pending signal still ends KVM_RUN meanwhile.
	 */
	if (gmem_notify(p, index, access, KVM_GMEM_ORIGIN_VCPU,
			vcpu->vcpu_id)) {
		memalloc_retry_wait(GFP_KERNEL_ACCOUNT);
		return 0;
	}

	/* Populated since the gate said no: simply run the guest again. */
	if (kvm_gmem_presence_test(p, index))
		return 0;

	policy = READ_ONCE(vcpu->kvm->gmem_presence_policy);
	if (policy == KVM_GMEM_PRESENCE_ASYNC) {
		if (gmem_vcpu_async(vcpu, inode, index, gen, cr2_or_gpa, apf))
			return 0;
		policy = READ_ONCE(vcpu->kvm->gmem_presence_fallback);
	}

	if (policy != KVM_GMEM_PRESENCE_WAIT)
		return -EFAULT;

	/*
	 * Don't sleep here: SRCU is held and memslot updates would wait for
	 * us.  The run loop sleeps after dropping it; the inode reference
	 * keeps the presence state alive until then.
	 */
	if (vcpu->gmem_wait.inode)
		return 0;

	ihold(inode);
	vcpu->gmem_wait.inode = inode;
	vcpu->gmem_wait.index = index;
	vcpu->gmem_wait.gen = gen;
	return 0;
}

/**
 * kvm_gmem_vcpu_wait() - sleep for the page armed by the fault path
 * @vcpu: the vCPU, outside SRCU
 * @r: the run loop's result so far; if it isn't positive the vCPU is leaving
 *     KVM_RUN anyway and only the armed wait is dropped
 *
 * Return: @r, or -EINTR with KVM_EXIT_INTR if a signal ended the wait.
 * Re-entering KVM_RUN faults again and waits again, without a new record.
 */
int kvm_gmem_vcpu_wait(struct kvm_vcpu *vcpu, int r)
{
	struct inode *inode = vcpu->gmem_wait.inode;
	struct kvm_gmem_presence *p = kvm_gmem_presence(inode);

	vcpu->gmem_wait.inode = NULL;
	if (r > 0)
		++vcpu->stat.generic.gmem_presence_waits;
	if (r > 0 && gmem_wait_once(p, vcpu->gmem_wait.index,
				    vcpu->gmem_wait.gen, TASK_INTERRUPTIBLE)) {
		kvm_handle_signal_exit(vcpu);
		r = -EINTR;
	}
	iput(inode);
	return r;
}

/**
 * kvm_gmem_presence_supported() - may @kvm create presence guest_memfds?
 * @kvm: the VM, or NULL for a query on /dev/kvm
 *
 * Legacy SEV and SEV-ES VMs are of the default type but encrypt memory that
 * COPY would fill in plaintext, so once encryption is set up presence is
 * refused, and the other way round (see kvm_gmem_presence_forbid()).
 *
 * Return: true if GUEST_MEMFD_FLAG_PRESENCE is supported.
 */
bool kvm_gmem_presence_supported(struct kvm *kvm)
{
	return kvm_arch_supports_gmem_presence(kvm) &&
	       (!kvm || !READ_ONCE(kvm->gmem_presence_forbidden));
}

u64 kvm_gmem_presence_policies(struct kvm *kvm)
{
	u64 policies = KVM_GMEM_PRESENCE_EXIT | KVM_GMEM_PRESENCE_WAIT;

	if (!kvm_gmem_presence_supported(kvm))
		return 0;
	if (IS_ENABLED(CONFIG_KVM_ASYNC_PF))
		policies |= KVM_GMEM_PRESENCE_ASYNC;
	return policies;
}

/**
 * kvm_gmem_presence_claim() - a presence guest_memfd is being created
 * @kvm: the VM
 *
 * Return: 0, or -EINVAL if the VM can't have one (any more).
 */
int kvm_gmem_presence_claim(struct kvm *kvm)
{
	guard(mutex)(&kvm->lock);
	if (!kvm_gmem_presence_supported(kvm))
		return -EINVAL;
	kvm->gmem_presence_used = true;
	return 0;
}

/**
 * kvm_gmem_presence_forbid() - memory encryption is being set up for @kvm
 * @kvm: the VM, with kvm->lock held
 *
 * Return: 0, or -EBUSY if the VM has (had) a presence guest_memfd: pages it
 * would fill with KVM_MEMORY_PRESENT_COPY would be read encrypted.
 */
int kvm_gmem_presence_forbid(struct kvm *kvm)
{
	lockdep_assert_held(&kvm->lock);
	if (kvm->gmem_presence_used)
		return -EBUSY;
	WRITE_ONCE(kvm->gmem_presence_forbidden, true);
	return 0;
}
EXPORT_SYMBOL_FOR_KVM_INTERNAL(kvm_gmem_presence_forbid);

/*
 * args[0] is the policy, one KVM_GMEM_PRESENCE_* bit as reported by
 * KVM_CHECK_EXTENSION; with ASYNC, args[1] is the fallback (EXIT or WAIT)
 * for faults that can't take an async #PF.  vCPUs waiting in the kernel are
 * woken to re-evaluate: under EXIT they exit, under WAIT they sleep again.
 */
int kvm_gmem_presence_set_policy(struct kvm *kvm, struct kvm_enable_cap *cap)
{
	u64 policy = cap->args[0], fallback = cap->args[1];

	if (cap->flags || cap->args[2] || cap->args[3])
		return -EINVAL;
	if (hweight64(policy) != 1 ||
	    (policy & ~kvm_gmem_presence_policies(kvm)))
		return -EINVAL;
	if (policy == KVM_GMEM_PRESENCE_ASYNC ?
	    fallback != KVM_GMEM_PRESENCE_EXIT &&
	    fallback != KVM_GMEM_PRESENCE_WAIT : fallback)
		return -EINVAL;

	guard(mutex)(&kvm->slots_lock);
	WRITE_ONCE(kvm->gmem_presence_fallback, fallback);
	WRITE_ONCE(kvm->gmem_presence_policy, policy);
	kvm_gmem_presence_wake_gfns(kvm, 0, -1ULL);
	return 0;
}

/* Validate a page-aligned byte range of the guest_memfd. */
static int gmem_check_range(struct inode *inode, u64 offset, u64 size)
{
	if (!size || !PAGE_ALIGNED(offset) || !PAGE_ALIGNED(size))
		return -EINVAL;
	if (offset + size < offset || offset + size > i_size_read(inode))
		return -EINVAL;
	return 0;
}

/*
 * Install one page from a kernel copy of its contents.  The copy was taken
 * before any lock: faulting the source in under the invalidate lock would
 * let a slow or not-present source (a mapping of a not-present guest_memfd
 * page, say) block punch, re-arm and memslot changes queued behind it, and
 * every later KVM_SET_MEMORY_PRESENT behind those.
 */
static int gmem_install_page(struct inode *inode, struct kvm_gmem_presence *p,
			     pgoff_t index, const void *contents)
{
	struct folio *folio;
	int r = 0;

	lockdep_assert_held(&inode->i_mapping->invalidate_lock);

	folio = kvm_gmem_get_folio(inode, index);
	if (IS_ERR(folio))
		return PTR_ERR(folio);

	/* Like UFFDIO_COPY: never overwrite what the guest may use. */
	if (kvm_gmem_presence_test(p, index)) {
		r = -EEXIST;
	} else if (folio_test_hwpoison(folio)) {
		r = -EHWPOISON;
	} else {
		memcpy_to_folio(folio, 0, contents, PAGE_SIZE);
		folio_mark_uptodate(folio);
		gmem_set_present(p, index);
	}

	folio_unlock(folio);
	folio_put(folio);
	return r;
}

static int gmem_copy_page(struct inode *inode, struct kvm_gmem_presence *p,
			  pgoff_t index, const void __user *src, void *bounce)
{
	int r;

	if (kvm_gmem_presence_test(p, index))
		return -EEXIST;
	if (copy_from_user(bounce, src, PAGE_SIZE))
		return -EFAULT;

	filemap_invalidate_lock_shared(inode->i_mapping);
	r = gmem_install_page(inode, p, index, bounce);
	filemap_invalidate_unlock_shared(inode->i_mapping);
	return r;
}

/*
 * Pages marked under one hold of the invalidate lock: big enough to make the
 * lock and the wakeup check cheap per page, small enough to stay responsive
 * to signals and to writers of the lock.
 */
#define GMEM_MARK_BATCH		512

static void gmem_mark_pages(struct inode *inode, struct kvm_gmem_presence *p,
			    pgoff_t start, pgoff_t end)
{
	pgoff_t index;

	filemap_invalidate_lock_shared(inode->i_mapping);
	for (index = start; index < end; index++)
		if (!kvm_gmem_presence_test(p, index))
			gmem_set_present(p, index);
	filemap_invalidate_unlock_shared(inode->i_mapping);
}

/* KVM_MEMORY_PRESENT_MARK and _COPY, resumable after a signal. */
static int gmem_set_range(struct inode *inode, struct kvm_gmem_presence *p,
			  struct kvm_memory_present *args)
{
	bool copy = args->op == KVM_MEMORY_PRESENT_COPY;
	pgoff_t start = args->offset >> PAGE_SHIFT;
	pgoff_t nr = args->size >> PAGE_SHIFT;
	const char __user *src = u64_to_user_ptr(args->src);
	void *bounce = NULL;
	pgoff_t i, n;
	int r = 0;

	if (copy) {
		bounce = kmalloc(PAGE_SIZE, GFP_KERNEL_ACCOUNT);
		if (!bounce)
			return -ENOMEM;
	}

	for (i = 0; i < nr; i += n) {
		if (i && signal_pending(current)) {
			r = -EINTR;
			break;
		}

		if (copy) {
			n = 1;
			r = gmem_copy_page(inode, p, start + i,
					   src + i * PAGE_SIZE, bounce);
			if (r)
				break;
		} else {
			n = min(nr - i, GMEM_MARK_BATCH);
			gmem_mark_pages(inode, p, start + i, start + i + n);
		}

		gmem_stat_add(p, GMEM_STAT_SET, n);
		gmem_wake_range(p, start + i, start + i + n);
		cond_resched();
	}
	kfree(bounce);

	trace_kvm_gmem_presence_set(p->ino, start, i, args->op);
	args->done = (u64)i << PAGE_SHIFT;
	return r;
}

/* Zap userspace PTEs of a re-armed range, each under its folio lock. */
static void gmem_zap_user_mappings(struct address_space *mapping,
				   pgoff_t start, pgoff_t end)
{
	struct folio_batch fbatch;
	pgoff_t index = start;
	unsigned int i;

	folio_batch_init(&fbatch);
	while (filemap_get_folios(mapping, &index, end - 1, &fbatch)) {
		for (i = 0; i < folio_batch_count(&fbatch); i++) {
			struct folio *folio = fbatch.folios[i];

			/*
			 * A fault that tested the bit before it was cleared
			 * holds the folio lock until its PTE is installed.
			 */
			folio_lock(folio);
			unmap_mapping_pages(mapping, folio->index,
					    folio_nr_pages(folio), false);
			folio_unlock(folio);
		}
		folio_batch_release(&fbatch);
		cond_resched();
	}
}

/**
 * kvm_gmem_presence_may_rearm() - can a range be made not present again?
 * @p: presence state
 *
 * The caller holds the invalidate lock for write.
 *
 * Return: 0, or -EINVAL once tracking has finished.
 */
int kvm_gmem_presence_may_rearm(struct kvm_gmem_presence *p)
{
	return p->finished ? -EINVAL : 0;
}

/*
 * KVM_MEMORY_PRESENT_REARM: not present again, contents kept, so that
 * userspace can refresh them (e.g. a far-memory tier brings the page back).
 * Only shared memory: private contents must never be replaced by anyone
 * holding the fd, so re-arming private memory always discards it.  The
 * user PTEs go inside the invalidation, so that no prefetch or fault can map
 * the page again between the clear and the zap.
 */
static int gmem_rearm_range(struct inode *inode, struct kvm_gmem_presence *p,
			    struct kvm_memory_present *args)
{
	pgoff_t start = args->offset >> PAGE_SHIFT;
	pgoff_t end = start + (args->size >> PAGE_SHIFT);
	int r;

	if (!kvm_gmem_range_is_shared(inode, start, end))
		return -EPERM;

	filemap_invalidate_lock(inode->i_mapping);
	r = kvm_gmem_presence_may_rearm(p);
	if (!r) {
		kvm_gmem_invalidate_start(inode, start, end);
		kvm_gmem_presence_rearm(p, start, end);
		gmem_zap_user_mappings(inode->i_mapping, start, end);
		kvm_gmem_invalidate_end(inode, start, end);
	}
	filemap_invalidate_unlock(inode->i_mapping);
	if (r)
		return r;

	kvm_gmem_presence_new_period(p, start, end);
	trace_kvm_gmem_presence_set(p->ino, start, end - start, args->op);
	args->done = args->size;
	return 0;
}

/* KVM_MEMORY_PRESENT_DISCARD: free the contents and re-arm the range. */
static int gmem_discard_range(struct inode *inode, struct kvm_gmem_presence *p,
			      struct kvm_memory_present *args)
{
	int r = kvm_gmem_discard(inode, args->offset, args->size);

	if (r)
		return r;
	trace_kvm_gmem_presence_set(p->ino, args->offset >> PAGE_SHIFT,
				    args->size >> PAGE_SHIFT, args->op);
	args->done = args->size;
	return 0;
}

/* bitmap_weight() takes an unsigned int; guest_memfds can be larger. */
static u64 gmem_count_present(struct kvm_gmem_presence *p)
{
	pgoff_t i, nr_longs = BITS_TO_LONGS(p->nr_pages);
	u64 n = 0;

	if (p->finished)
		return p->nr_pages;
	for (i = 0; i < nr_longs; i++) {
		n += hweight_long(p->present[i]);
		if (!(i % 4096))
			cond_resched();
	}
	return n;
}

/*
 * KVM_MEMORY_PRESENT_FINISH: every page is present and stays so.  The gates
 * stop looking at the bitmaps, which are freed, and readers of the
 * notification fds get end-of-file.  A plain punch-hole is then all a
 * discard is: the page stays present and reads as zeroes.
 */
static int gmem_finish(struct inode *inode, struct kvm_gmem_presence *p,
		       struct kvm_memory_present *args)
{
	LIST_HEAD(stale);
	bool freed = false;
	int r = 0;

	if (args->offset || args->size != i_size_read(inode))
		return -EINVAL;

	filemap_invalidate_lock(inode->i_mapping);
	if (!p->finished) {
		if (gmem_count_present(p) != p->nr_pages) {
			r = -EBUSY;
		} else {
			gmem_close_events(p, true, &stale);
			freed = true;
		}
	}
	filemap_invalidate_unlock(inode->i_mapping);
	if (r)
		return r;

	if (freed) {
		gmem_free_records(&stale);
		/* Lockless gates may still be testing the old bitmaps. */
		synchronize_rcu();
		gmem_free_bitmaps(p);
	}
	args->done = args->size;
	return 0;
}

static long gmem_ioctl_set_present(struct file *file, void __user *argp)
{
	struct kvm_gmem_presence *p = kvm_gmem_presence(file_inode(file));
	struct inode *inode = file_inode(file);
	struct kvm_memory_present args;
	int r;

	if (copy_from_user(&args, argp, sizeof(args)))
		return -EFAULT;
	if (args.flags || memchr_inv(args.reserved, 0, sizeof(args.reserved)))
		return -EINVAL;
	if (args.op != KVM_MEMORY_PRESENT_COPY && args.src)
		return -EINVAL;
	r = gmem_check_range(inode, args.offset, args.size);
	if (r)
		return r;

	args.done = 0;
	switch (args.op) {
	case KVM_MEMORY_PRESENT_MARK:
	case KVM_MEMORY_PRESENT_COPY:
		r = gmem_set_range(inode, p, &args);
		break;
	case KVM_MEMORY_PRESENT_DISCARD:
		r = gmem_discard_range(inode, p, &args);
		break;
	case KVM_MEMORY_PRESENT_REARM:
		r = gmem_rearm_range(inode, p, &args);
		break;
	case KVM_MEMORY_PRESENT_FINISH:
		r = gmem_finish(inode, p, &args);
		break;
	default:
		return -EINVAL;
	}

	/* Report progress even on error, so userspace can resume. */
	if (put_user(args.done,
		     (u64 __user *)(argp + offsetof(struct kvm_memory_present, done))))
		return -EFAULT;
	return r;
}

static long gmem_ioctl_get_present(struct file *file, void __user *argp)
{
	struct kvm_gmem_presence *p = kvm_gmem_presence(file_inode(file));
	struct kvm_memory_present_bitmap args;
	u64 __user *ubitmap;
	pgoff_t start, nr, i;
	int r;

	if (copy_from_user(&args, argp, sizeof(args)))
		return -EFAULT;
	if (args.flags || memchr_inv(args.reserved, 0, sizeof(args.reserved)))
		return -EINVAL;
	r = gmem_check_range(file_inode(file), args.offset, args.size);
	if (r)
		return r;

	start = args.offset >> PAGE_SHIFT;
	nr = args.size >> PAGE_SHIFT;
	ubitmap = u64_to_user_ptr(args.bitmap);
	for (i = 0; i < nr; i += 64) {
		u64 word = 0;
		pgoff_t j;

		for (j = 0; j < 64 && i + j < nr; j++)
			if (kvm_gmem_presence_test(p, start + i + j))
				word |= 1ULL << j;
		if (put_user(word, ubitmap + i / 64))
			return -EFAULT;
		if (fatal_signal_pending(current))
			return -EINTR;
		cond_resched();
	}
	return 0;
}

/* A notification fd: the presence state it reads, and how it reports. */
struct kvm_gmem_notify {
	struct kvm_gmem_presence *p;
	bool report_pid;
};

static bool gmem_events_ready(struct kvm_gmem_presence *p)
{
	return !list_empty_careful(&p->events) || READ_ONCE(p->closed);
}

static struct kvm_gmem_presence_record *
gmem_take_record(struct kvm_gmem_presence *p, bool *closed)
{
	struct kvm_gmem_presence_record *rec;

	spin_lock(&p->event_lock);
	rec = list_first_entry_or_null(&p->events,
				       struct kvm_gmem_presence_record, list);
	if (rec) {
		list_del(&rec->list);
		p->nr_queued--;
		__clear_bit(rec->index, p->queued);
	}
	*closed = p->closed;
	spin_unlock(&p->event_lock);
	return rec;
}

/*
 * copy_to_user() failed: put the record back at the head, so that nothing is
 * lost, unless a newer one for the page was queued meanwhile or no more
 * records are wanted.
 */
static void gmem_return_record(struct kvm_gmem_presence *p,
			       struct kvm_gmem_presence_record *rec)
{
	spin_lock(&p->event_lock);
	if (!p->closed && !test_bit(rec->index, p->queued)) {
		__set_bit(rec->index, p->queued);
		list_add(&rec->list, &p->events);
		p->nr_queued++;
		rec = NULL;
	}
	spin_unlock(&p->event_lock);
	if (rec)
		gmem_free_record(rec);
}

static void gmem_fill_event(struct kvm_gmem_presence_event *ev,
			    struct kvm_gmem_presence_record *rec,
			    bool report_pid)
{
	memset(ev, 0, sizeof(*ev));
	ev->type = KVM_GMEM_EVENT_FAULT;
	ev->offset = (u64)rec->index << PAGE_SHIFT;
	ev->access = rec->access;
	ev->origin = rec->origin;
	ev->vcpu_id = rec->vcpu_id;
	if (report_pid)
		ev->pid = pid_vnr(rec->pid);
}

static ssize_t gmem_notify_read(struct file *file, char __user *buf,
				size_t len, loff_t *ppos)
{
	struct kvm_gmem_notify *nf = file->private_data;
	struct kvm_gmem_presence *p = nf->p;
	struct kvm_gmem_presence_event ev;
	struct kvm_gmem_presence_record *rec;
	ssize_t done = 0;
	bool closed;
	int r;

	if (len < sizeof(ev))
		return -EINVAL;

	while (len - done >= sizeof(ev)) {
		rec = gmem_take_record(p, &closed);
		if (!rec) {
			if (done || closed)
				break;
			if (file->f_flags & O_NONBLOCK)
				return -EAGAIN;
			r = wait_event_interruptible(p->event_wq,
						     gmem_events_ready(p));
			if (r)
				return r;
			continue;
		}

		gmem_fill_event(&ev, rec, nf->report_pid);
		if (copy_to_user(buf + done, &ev, sizeof(ev))) {
			gmem_return_record(p, rec);
			return done ? done : -EFAULT;
		}
		gmem_free_record(rec);
		done += sizeof(ev);
		/* A large buffer can drain a long queue. */
		cond_resched();
	}
	return done;
}

static __poll_t gmem_notify_poll(struct file *file, poll_table *wait)
{
	struct kvm_gmem_notify *nf = file->private_data;
	__poll_t mask = 0;

	poll_wait(file, &nf->p->event_wq, wait);
	if (!list_empty_careful(&nf->p->events))
		mask |= EPOLLIN | EPOLLRDNORM;
	if (READ_ONCE(nf->p->closed))
		mask |= EPOLLHUP;
	return mask;
}

static int gmem_notify_release(struct inode *unused, struct file *file)
{
	struct kvm_gmem_notify *nf = file->private_data;

	gmem_presence_put(nf->p);
	kfree(nf);
	return 0;
}

static const struct file_operations gmem_notify_fops = {
	.owner		= THIS_MODULE,
	.read		= gmem_notify_read,
	.poll		= gmem_notify_poll,
	.release	= gmem_notify_release,
	.llseek		= noop_llseek,
};

static long gmem_ioctl_notify_fd(struct file *file, void __user *argp)
{
	const u32 valid = O_NONBLOCK | O_CLOEXEC | KVM_GMEM_NOTIFY_PID;
	struct kvm_gmem_presence *p = kvm_gmem_presence(file_inode(file));
	struct kvm_gmem_notify_fd args;
	struct kvm_gmem_notify *nf;
	int fd;

	BUILD_BUG_ON(KVM_GMEM_NOTIFY_PID & (O_NONBLOCK | O_CLOEXEC));

	if (copy_from_user(&args, argp, sizeof(args)))
		return -EFAULT;
	if ((args.flags & ~valid) || args.pad ||
	    memchr_inv(args.reserved, 0, sizeof(args.reserved)))
		return -EINVAL;

	nf = kzalloc_obj(*nf, GFP_KERNEL_ACCOUNT);
	if (!nf)
		return -ENOMEM;
	nf->report_pid = args.flags & KVM_GMEM_NOTIFY_PID;

	/*
	 * The reader keeps the presence state, not the inode or the file: a
	 * leaked notification fd must pin neither the VM nor guest memory.
	 */
	kref_get(&p->ref);
	nf->p = p;
	fd = anon_inode_getfd("[kvm-gmem-notify]", &gmem_notify_fops, nf,
			      O_RDONLY | (args.flags & (O_NONBLOCK | O_CLOEXEC)));
	if (fd < 0) {
		gmem_presence_put(p);
		kfree(nf);
	}
	return fd;
}

static long gmem_ioctl_stats(struct file *file, void __user *argp)
{
	struct inode *inode = file_inode(file);
	struct kvm_gmem_presence *p = kvm_gmem_presence(inode);
	struct kvm_gmem_presence_stats st = {
		.nr_pages = p->nr_pages,
		.faults = atomic64_read(&p->stats[GMEM_STAT_FAULTS]),
		.notifications = atomic64_read(&p->stats[GMEM_STAT_NOTIFICATIONS]),
		.waits = atomic64_read(&p->stats[GMEM_STAT_WAITS]),
		.wakeups = atomic64_read(&p->stats[GMEM_STAT_WAKEUPS]),
		.pages_set = atomic64_read(&p->stats[GMEM_STAT_SET]),
		.pages_cleared = atomic64_read(&p->stats[GMEM_STAT_CLEARED]),
		.events_queued = READ_ONCE(p->nr_queued),
		.wake_misses = atomic64_read(&p->stats[GMEM_STAT_WAKE_MISSES]),
	};

	/* The bitmap walk must not race with FINISH freeing it. */
	filemap_invalidate_lock_shared(inode->i_mapping);
	st.nr_present = gmem_count_present(p);
	if (p->finished)
		st.flags |= KVM_GMEM_PRESENCE_FINISHED;
	filemap_invalidate_unlock_shared(inode->i_mapping);

	if (copy_to_user(argp, &st, sizeof(st)))
		return -EFAULT;
	return 0;
}

/*
 * ioctls on a presence-tracked guest_memfd, matched by their full number
 * (size included), as everywhere in KVM: a structure that grows gets a new
 * number, and seccomp filters keyed on the number see what they expect.
 */
long kvm_gmem_presence_ioctl(struct file *file, unsigned int cmd,
			     unsigned long arg)
{
	void __user *argp = (void __user *)arg;

	switch (cmd) {
	case KVM_SET_MEMORY_PRESENT:
		return gmem_ioctl_set_present(file, argp);
	case KVM_GET_MEMORY_PRESENT:
		return gmem_ioctl_get_present(file, argp);
	case KVM_GMEM_GET_NOTIFY_FD:
		return gmem_ioctl_notify_fd(file, argp);
	case KVM_GMEM_PRESENCE_STATS:
		return gmem_ioctl_stats(file, argp);
	default:
		return -ENOTTY;
	}
}
