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
#include "gmfp_pager.h"
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

/* ---- odds and ends ---- */
/* CLOCK_MONOTONIC in milliseconds. */
uint64_t vt_now_ms(void);
/* Open file descriptors of process @pid (0: this one); -1 if unknown. */
int vt_fd_count(pid_t pid);
/*
 * The number after "@key": that follows the first @after in @json (NULL:
 * anywhere); a failed CHECK if there is none.
 */
uint64_t vt_json_u64(const char *json, const char *after, const char *key);

/* ---- checks of a VM's memory ---- */
/* Every present page of @v (shared) holds the image's contents. */
void vt_check_present_pages(struct vt_vm *v);
/* Every page of @dst holds what @src has, and what the image says. */
void vt_check_against_source(const struct vt_vm *dst, const struct vt_vm *src);
/* Every vCPU finished within @ms (joined), each with the right sum. */
void vt_vcpus_finish(struct vt_vm *v, int ms);

/* ---- gmfp-pager ---- */
/* SIGTERM: it must exit 0 within 30 s (every session stopped, no leak). */
void vt_pager_stop(pid_t pid);
struct vt_attach {
	int sock;
	uint32_t session;
	char why[GMFP_PAGER_ERRMSG_MAX];
};
/*
 * Hand @v's guest_memfd (one region, all of it) to the pager on @sock:
 * pages from the image at @image_path, or from the page server on
 * 127.0.0.1:@tcp_port if that is not NULL.  0 or -errno (reason in a->why).
 */
int vt_pager_attach(struct vt_attach *a, const char *sock, struct vt_vm *v,
		    const char *image_path, const char *tcp_port, uint32_t workers,
		    uint32_t max_batch, uint32_t bg_order);
/* The session's own status, until it says "complete" (@ms at most). */
void vt_pager_wait_complete(int sock, char *json, size_t len, int ms);

/* ---- gmfp-serve, the page server tool ---- */
struct vt_serve {
	pid_t pid;
	int out;		/* its stdout */
	char port[16];
	char obuf[8192];
	size_t olen;
};
/*
 * Start gmfp-serve on @port ("0": any) serving the guest_memfd @gmem
 * (--gmem-fd; -1: none) and whatever @extra names (NULL-terminated, may be
 * NULL: more regions, options).  Returns once it listens; s->port is its port.
 */
void vt_serve_start(struct vt_serve *s, int gmem, const char *port, const char *const *extra);
/* Read its stdout until @until shows up (NULL: EOF) or @ms pass. */
bool vt_serve_read(struct vt_serve *s, const char *until, unsigned int ms);
/* Wait for it to exit: exit status, 128 + signal, -1 after @ms (killed). */
int vt_serve_wait(struct vt_serve *s, unsigned int ms);
/* SIGTERM: it must exit 0 (an ASan build: 23 if anything leaked); its --json stats. */
const char *vt_serve_stop(struct vt_serve *s);

/* ---- a postcopy source and a counting TCP client ---- */
/*
 * A presence VM (@npages, shared, WAIT) whose guest_memfd holds the image
 * @image_fd's pages for which @present is true (NULL: all of them).  A
 * skipped test (no presence tracking) if it cannot be made.
 */
void vt_source_vm(struct vt_vm *v, uint64_t npages, int image_fd, bool (*present)(uint64_t pg));
/* Counts what the engine got from the TCP source, and what it did not. */
struct vt_counting {
	struct gmfp_source *tcp;
	uint64_t size;
	_Atomic uint64_t ok_pages, failed_pages, failed;
	_Atomic uint64_t even_single_ok, even_single_fail;
	_Atomic int last_even_err;
};
/*
 * A source for the engine: gmfp_source_tcp() to 127.0.0.1:@port (one
 * region of @npages), wrapped to count into @c.  Destroy both c->tcp and it.
 */
struct gmfp_source *vt_counting_source(struct vt_counting *c, const char *port, uint64_t npages);

#endif /* GMFP_VMTEST_H */
