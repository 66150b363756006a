/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * In-VM tests of libgmfp: a minimal VMM (one code memslot, one presence
 * guest_memfd memslot, vCPUs in 32-bit flat protected mode running a page
 * reader), a tiny TAP-ish harness, image and server helpers.  Built against
 * the patched kernel's uAPI headers (KHDR), run in the test VM.
 */
#ifndef GMFP_VMTEST_H
#define GMFP_VMTEST_H

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <linux/kvm.h>

#include "gmfp.h"
#include "gmfp_wire.h"

#define PG GMFP_PAGE_SIZE
#define GMEM_GPA 0x100000ull	/* guest_memfd memslot at 1 MiB */
#define CODE_SLOT 0
#define GMEM_SLOT 1
#define REPORT_PORT 0x3f0

/* ---- harness ---- */
/*
 * A failed CHECK ends the program (after a "not ok" line): a test that
 * stops half way leaves threads, engines and processes behind that would
 * only make the tests after it fail for the wrong reason.
 */
extern int vt_skipped;
void vt_fail(const char *file, int line, const char *cond, const char *fmt, ...)
	__attribute__((noreturn, format(printf, 4, 5)));
#define CHECK(c, ...) do {						\
	if (!(c))							\
		vt_fail(__FILE__, __LINE__, #c, __VA_ARGS__);		\
} while (0)
#define CHECK_EQ(a, b) CHECK((long long)(a) == (long long)(b), "%lld != %lld", \
			     (long long)(a), (long long)(b))
#define SKIP_TEST(...) do { printf("  skip: " __VA_ARGS__); printf("\n"); \
	vt_skipped = 1; return; } while (0)
struct vt_case {
	const char *name;
	void (*fn)(void);
};
int vt_run(int argc, char **argv, const char *prog, const struct vt_case *cases, size_t n);

/* ---- image: page p word j = vt_word(p, j) ---- */
static inline uint64_t vt_word(uint64_t p, uint64_t j)
{
	return (0x9e3779b97f4a7c15ull * (p + 1)) ^ (j * 0x100000001b3ull);
}
/* An image file of @npages pages under /tmp; returns its fd, path in @path. */
int vt_make_image(uint64_t npages, char *path, size_t len);
bool vt_page_ok(const void *page, uint64_t p);
/* What the guest reader reports for pages [first, first + n): sum of dword 0. */
uint32_t vt_expected_sum(uint64_t first, uint64_t n);

/* ---- the minimal VMM ---- */
struct vt_vcpu {
	struct vt_vm *vm;
	int id, fd;
	struct kvm_run *run;
	pthread_t thread;
	uint64_t first, npages;
	/* results */
	uint32_t sum;
	int result;		/* 0, or -errno / -1 on an unexpected exit */
	unsigned int np_exits;	/* KVM_EXIT_MEMORY_FAULT (NOT_PRESENT) */
	unsigned int intr_exits;
	struct gmfp_engine *engine;	/* EXIT policy: served through demand() */
	_Atomic bool stop;
};

struct vt_vm {
	int kvm, vm;
	int gmem;
	uint64_t size;
	void *hva;		/* mmap of the guest_memfd (shared) or NULL */
	void *code;
	bool private_mem;
	unsigned int policy;
	int nr_vcpus;
	struct vt_vcpu vcpus[8];
};

/*
 * A VM (@private_mem: KVM_X86_SW_PROTECTED_VM with private memory) with a
 * presence guest_memfd of @npages pages at GMEM_GPA, policy @policy.
 * Returns 0, or -errno (-EOPNOTSUPP: no presence tracking).
 */
int vt_vm_create(struct vt_vm *v, uint64_t npages, bool private_mem, unsigned int policy);
/* A vCPU that reads pages [first, first + n) and reports their sum. */
int vt_vcpu_add(struct vt_vm *v, uint64_t first, uint64_t n);
/* Run every vCPU on its own thread / join them. */
int vt_vcpus_start(struct vt_vm *v);
void vt_vcpus_join(struct vt_vm *v);
/* The same with a deadline: 0, or -ETIMEDOUT with vCPUs still running. */
int vt_vcpus_join_timeout(struct vt_vm *v, int timeout_ms);
/*
 * After a timeout: what the engine, the kernel and the source say, and the
 * first pages still missing, on stdout as "#   " lines.
 */
/*
 * Start gmfp-pager on @sock with @extra arguments (NULL-terminated, or
 * NULL); returns its pid once it answers (a refusal included).  It dies
 * with the test; its stdout goes to our stderr, off the TAP output.
 */
pid_t vt_pager_start(const char *sock, const char *const *extra);
/* Each thread of @pid: state, CPU time and kernel stack, on stdout. */
void vt_dump_threads(pid_t pid);
void vt_dump_stuck(struct vt_vm *v, struct gmfp_engine *e, struct gmfp_source *s);
/* Interrupt vCPU threads blocked in KVM_RUN (SIGUSR1) and make them stop. */
void vt_vcpus_kick(struct vt_vm *v);
void vt_vm_destroy(struct vt_vm *v);

/*
 * Fork @n helper processes that read pages [0, npages) of @v->hva in a
 * stride order and check every page's contents; each exits 0 when all its
 * pages were right.
 */
int vt_helpers_start(struct vt_vm *v, int n, pid_t *pids);
/* Wait for them: 0 if all exited 0 within @timeout_ms. */
int vt_helpers_wait(int n, pid_t *pids, int timeout_ms);

/* ---- page server (TCP, loopback) ---- */
struct vt_server {
	pid_t pid;
	char port[16];
};
/*
 * Fork a server that serves the image @image_fd (@npages pages, one region)
 * with gmfp_wire_serve(); it exits after answering @max_requests requests
 * (0: never) to play a source that dies.
 */
int vt_server_start(struct vt_server *s, int image_fd, uint64_t npages,
		    unsigned int max_requests);
void vt_server_kill(struct vt_server *s);

/*
 * Path of tool @name (userspace/tools/<name>): bin/<name> next to this
 * program, as the initramfs and `make vm-tests` lay them out.
 */
const char *vt_tool(const char *name, char *buf, size_t len);

/* Count present pages via the bitmap. */
uint64_t vt_count_present(int gmem, uint64_t npages);

#endif /* GMFP_VMTEST_H */
