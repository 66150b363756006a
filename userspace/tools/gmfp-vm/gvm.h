/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * gmfp-vm: a small reference VMM for guest_memfd presence tracking.  See
 * docs/gmfp-vm.md for the reading guide; main.c for the commands.
 *
 *   vm.c       the VM: KVM setup, presence guest_memfd as RAM, long mode,
 *              the vCPU thread (EXIT policy faults), pause, vCPU state
 *   state.c    snapshot files and the state blob a migration sends
 *   serve.c    the source side of postcopy: a page server over the live
 *              guest_memfd (gmfp_wire_serve()) and the control connection
 *   report.c   verdicts (checksums), the summary and its JSON
 *   main.c     the commands: run, snapshot, restore, migrate, incoming
 */
#ifndef GMFP_VM_GVM_H
#define GMFP_VM_GVM_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "gmfp.h"
#include "guest_abi.h"
#include "kvm_abi.h"

#define PG GMFP_PAGE_SIZE

/* exit codes */
enum {
	GVM_EXIT_OK = 0,
	GVM_EXIT_VERIFY = 1,	/* the guest or the VMM found wrong memory */
	GVM_EXIT_USAGE = 2,
	GVM_EXIT_SOURCE = 3,	/* pages could not be had: source gone, image bad */
	GVM_EXIT_SETUP = 4,	/* KVM, presence tracking, files, network */
	GVM_EXIT_GUEST = 5,	/* guest panic or an unexpected exit */
	GVM_EXIT_TIMEOUT = 6,
};

double gvm_now(void);		/* CLOCK_MONOTONIC, seconds */

/* ---- the VM (vm.c) ---- */

struct gvm_config {
	uint64_t ram_size;	/* multiple of 2 MiB */
	bool private_mem;	/* KVM_X86_SW_PROTECTED_VM, private RAM */
	unsigned int policy;	/* GMFP_POLICY_* */
	unsigned int fallback;	/* with ASYNC: EXIT or WAIT */
};

struct gvm {
	int kvm, vm, vcpu, gmem;
	struct kvm_run *run;
	size_t run_size;
	uint8_t *low;			/* low memory, GV_LOW_SIZE */
	uint8_t *ram;			/* shared mmap of the guest_memfd, or NULL */
	void *ram_alias;		/* private: the slot's (unused) shared half */
	uint64_t ram_size, ram_pages;
	bool private_mem;
	unsigned int policy, fallback;
	volatile struct gv_status *st;

	/* the vCPU thread */
	pthread_t thread;
	bool running;
	atomic_bool stop;
	pthread_mutex_t lock;
	pthread_cond_t cond;		/* an event, an error, the thread ended */
	uint64_t events;
	int error;			/* GVM_EXIT_* of a fatal vCPU problem, 0 */
	char errmsg[256];

	/* EXIT policy: how a not-present exit is served */
	struct gmfp_engine *engine;	/* gmfp_engine_demand(), or NULL: wait */
	_Atomic uint64_t np_exits, intr_exits, io_exits;
};

/* Create the VM (no vCPU state yet).  0, or -errno with a message in @err. */
int gvm_create(struct gvm *v, const struct gvm_config *c, char *err, size_t len);
/* Fresh boot: page tables, payload, status page, long-mode registers. */
int gvm_boot_setup(struct gvm *v, uint64_t seed);
/* Start / stop the vCPU thread (stop: the vCPU is out of KVM_RUN, state coherent). */
int gvm_start(struct gvm *v);
void gvm_pause(struct gvm *v);
void gvm_destroy(struct gvm *v);
/* Post a command to the guest; returns its sequence number. */
uint64_t gvm_command(struct gvm *v, uint64_t cmd, uint64_t gen);
/* Wait until the guest completed command @seq: 0, a GVM_EXIT_* code, or
 * -ETIMEDOUT after @timeout_ms (< 0: forever).  @tick, if set, runs every
 * ~100 ms (progress, checks); a non-zero return from it ends the wait. */
int gvm_wait_cmd(struct gvm *v, uint64_t seq, int timeout_ms, int (*tick)(void *), void *arg);
/* Sleep up to @ms, returning early with the vCPU's error if it has one. */
int gvm_sleep(struct gvm *v, int ms);
/* Policies: which one to use given what the kernel and the guest do. */
const char *gvm_policy_name(unsigned int p);
int gvm_parse_policy(const char *s, unsigned int *p);

/* ---- vCPU state and snapshots (state.c) ---- */

#define GV_NR_MSRS 3
struct gv_cpu {
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct kvm_fpu fpu;
	struct kvm_lapic_state lapic;
	struct kvm_vcpu_events events;
	struct kvm_mp_state mp;
	uint32_t pad;
	uint64_t msr[GV_NR_MSRS];	/* TSC, ASYNC_PF_INT, ASYNC_PF_EN */
};

#define GV_STATE_MAGIC 0x54534d5650464d47ull	/* "GMFPVMST" */
#define GV_STATE_VERSION 2
struct gv_state_hdr {
	uint64_t magic;
	uint32_t version, hdr_size;
	uint32_t cpu_size, flags;
	uint64_t low_size, ram_size, ram_gpa;
	uint64_t seed;
	uint64_t low_pages;		/* low memory pages stored (not all zero) */
	uint64_t reserved[3];
};

/* header + struct gv_cpu + low memory map and pages, as one buffer */
struct gv_blob {
	uint8_t *buf;
	size_t len;
};

int gvm_get_cpu(struct gvm *v, struct gv_cpu *c);
int gvm_set_cpu(struct gvm *v, const struct gv_cpu *c);
/* The paused VM's state as a blob (malloc'ed). */
int gvm_state_blob(struct gvm *v, uint64_t seed, struct gv_blob *b);
/* Check a blob; its header, cpu and low memory. */
int gvm_blob_parse(const struct gv_blob *b, const struct gv_state_hdr **h,
		   const struct gv_cpu **c, const uint64_t **low_map, const uint8_t **low_pages,
		   char *err, size_t len);
/* Into a VM created with the blob's RAM size: low memory and vCPU. */
int gvm_blob_load(struct gvm *v, const struct gv_blob *b, char *err, size_t len);
/* Snapshot directory: DIR/state (blob) and DIR/memory (RAM image). */
int gvm_snapshot_write(struct gvm *v, uint64_t seed, const char *dir, char *err, size_t len);
int gvm_blob_read_file(const char *path, struct gv_blob *b, char *err, size_t len);
bool gvm_cpu_apf_enabled(const struct gv_cpu *c);

/* ---- checks (report.c) ---- */

/* the checksum the guest reports for generation @gen of @npages pages */
uint64_t gvm_expected_sum(uint64_t seed, uint64_t gen, uint64_t npages);
/* the same over memory at @mem (shared RAM) */
uint64_t gvm_memory_sum(const uint8_t *mem, uint64_t npages);
/* pages among those present that are not generation @gen's pattern */
int64_t gvm_check_present(struct gvm *v, uint64_t seed, uint64_t gen, uint64_t *present);
/* the compute task's state after @units units: consistent? */
bool gvm_compute_consistent(uint64_t seed, uint64_t units, uint64_t state);
uint64_t gvm_pick_stride(uint64_t npages, uint64_t seed);

/* ---- a JSON object builder (report.c) ---- */
struct jb {
	char *buf;
	size_t len, cap;
	bool first;
	int oom;
};
void jb_open(struct jb *j);		/* '{' */
void jb_close(struct jb *j);		/* '}' */
void jb_key(struct jb *j, const char *k);
void jb_obj(struct jb *j, const char *k);	/* "k":{ */
void jb_u64(struct jb *j, const char *k, uint64_t v);
void jb_i64(struct jb *j, const char *k, int64_t v);
void jb_dbl(struct jb *j, const char *k, double v);
void jb_bool(struct jb *j, const char *k, bool v);
void jb_str(struct jb *j, const char *k, const char *v);
void jb_raw(struct jb *j, const char *k, const char *json);
void jb_free(struct jb *j);

/* ---- the source side of a postcopy migration (serve.c) ---- */

struct gvm_server;
/* Serve @v's RAM (shared, paused) over the wire protocol on @addr ("host:port",
 * port 0 for any); *@port gets the port.  @throttle_us per page emulates a slow link. */
int gvm_server_start(struct gvm_server **out, struct gvm *v, const char *addr,
		     uint32_t throttle_us, uint16_t *port);
struct gvm_server_stats {
	uint64_t connections, requests, pages_demand, pages_background;
};
void gvm_server_stats(struct gvm_server *s, struct gvm_server_stats *st);
void gvm_server_stop(struct gvm_server *s);

/* Control connection messages (source <-> destination), native endian. */
#define GV_MIG_MAGIC 0x474d5650464d47ull	/* "GMFPVMG" */
enum {
	GV_MIG_HELLO = 1, GV_MIG_READY = 2, GV_MIG_STATE = 3, GV_MIG_RESUMED = 4,
	GV_MIG_DONE = 5, GV_MIG_FAILED = 6,
};
struct gv_mig_msg {
	uint64_t magic;
	uint32_t type, reserved;
	uint64_t len;			/* bytes after this header */
	uint64_t a, b, c, d;		/* per type */
};
/*
 * HELLO   a = RAM bytes, b = page server port, c = the guest's GV_F_* (source,
 *         while its guest still runs)
 * READY   the destination has its VM and page source (not serving yet)
 * STATE   a = page server port, b = µs since the source paused, c = source
 *         pages (total); then the blob
 * RESUMED a = downtime µs as the destination measured it
 * DONE    a = pages demand, b = pages background (the destination's engine)
 * FAILED  the destination gives up
 */
int gvm_send_msg(int fd, uint32_t type, uint64_t a, uint64_t b, uint64_t c,
		 const void *payload, size_t len);
/* Read one message (payload malloc'ed into *@payload if any): 0, -errno, -EPIPE at EOF. */
int gvm_recv_msg(int fd, struct gv_mig_msg *m, void **payload, int timeout_ms);
int gvm_listen(const char *addr, int backlog, uint16_t *port, char *err, size_t len);
int gvm_connect(const char *hostport, int timeout_ms, char *err, size_t len);

#endif /* GMFP_VM_GVM_H */
