// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * The uAPI layer: typed wrappers around the guest_memfd presence ioctls.
 *
 * KVM_SET_MEMORY_PRESENT reports its progress in .done and stops with EINTR
 * on a signal after at least one page, so every range operation here loops
 * until the range is done: a VMM thread that gets signals (timers, SIGCHLD,
 * vCPU kicks) still completes its copy without seeing EINTR.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "kuapi.h"

#define PAGE GMFP_PAGE_SIZE

static bool aligned(uint64_t v)
{
	return !(v & (PAGE - 1));
}

static bool range_ok(uint64_t off, uint64_t len)
{
	return len && aligned(off) && aligned(len) && off + len > off;
}

int gmfp_vm_policies(int fd)
{
	int r = ioctl(fd, KVM_CHECK_EXTENSION, GMFP_K_CAP_GUEST_MEMFD_PRESENCE);

	return r < 0 ? -errno : r;
}

int gmfp_vm_set_policy(int vm_fd, unsigned int policy, unsigned int fallback)
{
	struct kvm_enable_cap cap;
	int sup = gmfp_vm_policies(vm_fd);

	if (sup < 0)
		return sup;
	if (!sup)
		return -EOPNOTSUPP;
	memset(&cap, 0, sizeof(cap));
	cap.cap = GMFP_K_CAP_GUEST_MEMFD_PRESENCE;
	cap.args[0] = policy;
	cap.args[1] = fallback;
	return ioctl(vm_fd, KVM_ENABLE_CAP, &cap) ? -errno : 0;
}

int gmfp_gmem_create(int vm_fd, uint64_t size, unsigned int flags)
{
	struct gmfp_k_create_guest_memfd args;
	int r;

	if (flags & ~GMFP_GMEM_SHARED)
		return -EINVAL;
	if (!range_ok(0, size))
		return -EINVAL;
	r = ioctl(vm_fd, KVM_CHECK_EXTENSION, GMFP_K_CAP_GUEST_MEMFD_FLAGS);
	if (r < 0)
		return -errno;
	/* Say "not supported" rather than the kernel's bare EINVAL. */
	if (!((uint64_t)r & GMFP_K_FLAG_PRESENCE))
		return -EOPNOTSUPP;
	memset(&args, 0, sizeof(args));
	args.size = size;
	args.flags = GMFP_K_FLAG_PRESENCE;
	if (flags & GMFP_GMEM_SHARED)
		args.flags |= GMFP_K_FLAG_MMAP | GMFP_K_FLAG_INIT_SHARED;
	r = ioctl(vm_fd, GMFP_K_CREATE_GUEST_MEMFD, &args);
	return r < 0 ? -errno : r;
}

int64_t gmfp_gmem_size(int gmem)
{
	struct stat st;

	if (fstat(gmem, &st))
		return -errno;
	return st.st_size;
}

/*
 * One operation over a range, resumed after EINTR.  *@done counts the bytes
 * the kernel finished, also when it fails part way.
 */
static int set_present(int gmem, uint32_t op, uint64_t off, uint64_t len,
		       const void *src, uint64_t *done)
{
	struct gmfp_k_memory_present a;

	*done = 0;
	while (*done < len) {
		memset(&a, 0, sizeof(a));
		a.offset = off + *done;
		a.size = len - *done;
		a.op = op;
		a.src = src ? (uint64_t)(uintptr_t)src + *done : 0;
		if (!ioctl(gmem, GMFP_K_SET_MEMORY_PRESENT, &a)) {
			*done = len;
			break;
		}
		if (errno != EINTR)
			break;
		/* only MARK and COPY report progress; the rest restart whole */
		*done += a.done;
	}
	if (*done == len)
		return 0;
	*done += a.done;
	return -errno;
}

int gmfp_gmem_mark(int gmem, uint64_t off, uint64_t len)
{
	uint64_t done;

	if (!range_ok(off, len))
		return gmem < 0 ? -EBADF : -EINVAL;
	return set_present(gmem, GMFP_K_OP_MARK, off, len, NULL, &done);
}

int64_t gmfp_gmem_copy(int gmem, uint64_t off, const void *src, uint64_t len,
		       unsigned int flags, uint64_t *done)
{
	uint64_t pos = 0, d;
	int64_t skipped = 0;
	int r;

	if (done)
		*done = 0;
	if (gmem < 0)
		return -EBADF;
	if (!range_ok(off, len) || !src || (flags & ~GMFP_COPY_SKIP_PRESENT))
		return -EINVAL;
	while (pos < len) {
		r = set_present(gmem, GMFP_K_OP_COPY, off + pos, len - pos,
				(const char *)src + pos, &d);
		pos += d;
		if (!r)
			break;
		/* EEXIST stops at the present page: step over it, go on. */
		if (r != -EEXIST || !(flags & GMFP_COPY_SKIP_PRESENT)) {
			if (done)
				*done = pos;
			return r;
		}
		pos += PAGE;
		skipped++;
	}
	if (done)
		*done = len;
	return skipped;
}

static int simple_op(int gmem, uint32_t op, uint64_t off, uint64_t len)
{
	uint64_t done;

	if (gmem < 0)
		return -EBADF;
	if (!range_ok(off, len))
		return -EINVAL;
	return set_present(gmem, op, off, len, NULL, &done);
}

int gmfp_gmem_discard(int gmem, uint64_t off, uint64_t len)
{
	return simple_op(gmem, GMFP_K_OP_DISCARD, off, len);
}

int gmfp_gmem_rearm(int gmem, uint64_t off, uint64_t len)
{
	return simple_op(gmem, GMFP_K_OP_REARM, off, len);
}

int gmfp_gmem_finish(int gmem)
{
	int64_t size = gmfp_gmem_size(gmem);

	if (size < 0)
		return (int)size;
	return simple_op(gmem, GMFP_K_OP_FINISH, 0, (uint64_t)size);
}

struct run_ctx {
	int gmem;
	uint32_t op;
	int ioctls;
};

static int run_op(void *arg, uint64_t first, uint64_t npages)
{
	struct run_ctx *c = arg;
	uint64_t done;

	if (first > UINT64_MAX / PAGE || npages > UINT64_MAX / PAGE - first)
		return -EINVAL;
	c->ioctls++;
	return set_present(c->gmem, c->op, first * PAGE, npages * PAGE, NULL, &done);
}

static int pages_op(int gmem, uint32_t op, const uint64_t *pgoffs, size_t n)
{
	struct run_ctx c = { .gmem = gmem, .op = op };
	uint64_t *sorted;
	int r;

	if (gmem < 0)
		return -EBADF;
	if (!n)
		return 0;
	if (!pgoffs)
		return -EINVAL;
	sorted = malloc(n * sizeof(*sorted));
	if (!sorted)
		return -ENOMEM;
	memcpy(sorted, pgoffs, n * sizeof(*sorted));
	r = gmfp_for_each_run(sorted, n, 0, run_op, &c);
	free(sorted);
	return r ? r : c.ioctls;
}

int gmfp_gmem_mark_pages(int gmem, const uint64_t *pgoffs, size_t n)
{
	return pages_op(gmem, GMFP_K_OP_MARK, pgoffs, n);
}

int gmfp_gmem_discard_pages(int gmem, const uint64_t *pgoffs, size_t n)
{
	return pages_op(gmem, GMFP_K_OP_DISCARD, pgoffs, n);
}

static int cmp_page(const void *a, const void *b)
{
	const struct gmfp_page *x = a, *y = b;

	return x->pgoff < y->pgoff ? -1 : x->pgoff > y->pgoff;
}

int gmfp_gmem_copy_pages(int gmem, const struct gmfp_page *pages, size_t n)
{
	struct gmfp_page *v;
	size_t i, j;
	int ioctls = 0;
	int64_t r = 0;

	if (gmem < 0)
		return -EBADF;
	if (!n)
		return 0;
	if (!pages)
		return -EINVAL;
	for (i = 0; i < n; i++)
		if (!pages[i].data || pages[i].pgoff > UINT64_MAX / PAGE - 1)
			return -EINVAL;
	v = malloc(n * sizeof(*v));
	if (!v)
		return -ENOMEM;
	memcpy(v, pages, n * sizeof(*v));
	qsort(v, n, sizeof(*v), cmp_page);
	for (i = 0; i < n; i = j) {
		/* a run: consecutive pages whose buffers are consecutive too */
		for (j = i + 1; j < n; j++) {
			if (v[j].pgoff == v[j - 1].pgoff) {
				r = -EINVAL;	/* the same page twice */
				goto out;
			}
			if (v[j].pgoff != v[j - 1].pgoff + 1 ||
			    (const char *)v[j].data != (const char *)v[j - 1].data + PAGE)
				break;
		}
		ioctls++;
		r = gmfp_gmem_copy(gmem, v[i].pgoff * PAGE, v[i].data,
				   (uint64_t)(j - i) * PAGE, GMFP_COPY_SKIP_PRESENT, NULL);
		if (r < 0)
			goto out;
	}
	r = ioctls;
out:
	free(v);
	return (int)r;
}

int gmfp_gmem_bitmap(int gmem, uint64_t off, uint64_t len, uint64_t *bitmap)
{
	struct gmfp_k_memory_present_bitmap a;

	if (gmem < 0)
		return -EBADF;
	if (!range_ok(off, len) || !bitmap)
		return -EINVAL;
	memset(&a, 0, sizeof(a));
	a.offset = off;
	a.size = len;
	a.bitmap = (uint64_t)(uintptr_t)bitmap;
	/* only a fatal signal interrupts it; retry anyway for symmetry */
	while (ioctl(gmem, GMFP_K_GET_MEMORY_PRESENT, &a))
		if (errno != EINTR)
			return -errno;
	return 0;
}

int gmfp_gmem_page_present(int gmem, uint64_t pgoff)
{
	uint64_t w = 0;
	int r;

	if (pgoff > UINT64_MAX / PAGE - 1)
		return -EINVAL;
	r = gmfp_gmem_bitmap(gmem, pgoff * PAGE, PAGE, &w);
	return r ? r : (int)(w & 1);
}

int gmfp_gmem_stats(int gmem, struct gmfp_gmem_stats *st)
{
	struct gmfp_k_presence_stats k;

	if (gmem < 0)
		return -EBADF;
	if (!st)
		return -EINVAL;
	memset(&k, 0, sizeof(k));
	if (ioctl(gmem, GMFP_K_PRESENCE_STATS, &k))
		return -errno;
	st->nr_pages = k.nr_pages;
	st->nr_present = k.nr_present;
	st->faults = k.faults;
	st->notifications = k.notifications;
	st->waits = k.waits;
	st->wakeups = k.wakeups;
	st->pages_set = k.pages_set;
	st->pages_cleared = k.pages_cleared;
	st->events_queued = k.events_queued;
	st->wake_misses = k.wake_misses;
	st->flags = k.flags;
	return 0;
}

int gmfp_notify_open(int gmem, unsigned int flags)
{
	struct gmfp_k_notify_fd a;
	int r;

	if (gmem < 0)
		return -EBADF;
	if (flags & ~(GMFP_NOTIFY_NONBLOCK | GMFP_NOTIFY_CLOEXEC | GMFP_NOTIFY_PID))
		return -EINVAL;
	memset(&a, 0, sizeof(a));
	if (flags & GMFP_NOTIFY_NONBLOCK)
		a.flags |= O_NONBLOCK;
	if (flags & GMFP_NOTIFY_CLOEXEC)
		a.flags |= O_CLOEXEC;
	if (flags & GMFP_NOTIFY_PID)
		a.flags |= GMFP_K_NOTIFY_PID;
	r = ioctl(gmem, GMFP_K_GET_NOTIFY_FD, &a);
	return r < 0 ? -errno : r;
}

ssize_t gmfp_notify_read(int nfd, struct gmfp_event *ev, size_t max)
{
	ssize_t n;

	if (nfd < 0)
		return -EBADF;
	if (!ev || !max)
		return -EINVAL;
	if (max > SSIZE_MAX / sizeof(*ev))
		max = SSIZE_MAX / sizeof(*ev);
	n = read(nfd, ev, max * sizeof(*ev));
	if (n < 0)
		return -errno;
	/* the kernel returns whole records only */
	if (n % (ssize_t)sizeof(*ev))
		return -EIO;
	return n / (ssize_t)sizeof(*ev);
}
