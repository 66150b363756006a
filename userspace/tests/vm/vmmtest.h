/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Helpers of the gmfp-vm tests (vmmtest.c). */
#ifndef GMFP_VMMTEST_H
#define GMFP_VMMTEST_H

#include "vmtest.h"

#define MEM "8M"		/* the guests' RAM: small, for the debug kernel */
#define MEM_PAGES 2048

/* a gmfp-vm process: its stdout (the --json summary) and stderr */
struct proc {
	pid_t pid;
	int out, err;
	char *json;
	size_t len;
	int status;
};

/* Start gmfp-vm with @args (NULL terminated); echoes the command line. */
void proc_start(struct proc *p, const char *const *args);
/* Read its stderr (echoed) until a line contains @what: true if seen. */
bool proc_wait_line(struct proc *p, const char *what, int timeout_ms);
/* Read its --progress lines ("... present N/M ...") until N >= @min. */
bool proc_wait_present(struct proc *p, uint64_t min, int timeout_ms);
/* Collect its output until it exits (a failed CHECK after @timeout_ms). */
void proc_wait(struct proc *p, int timeout_ms);
/* Start and wait. */
void proc_run(struct proc *p, const char *const *args, int timeout_ms);
int proc_rc(const struct proc *p);
void proc_free(struct proc *p);
/* A number (true: 1) in the JSON: "key" inside object "obj" (NULL: anywhere). */
uint64_t jnum(const struct proc *p, const char *obj, const char *key);
/* The guest's and the VMM's checks passed (@shared: the VMM read RAM too). */
void check_verified(const struct proc *p, bool shared);
/* A lazy fill: every page once, some on demand, no error. */
void check_lazy(const struct proc *p);
void free_port(char *buf, size_t len);
bool vmm_have_sw_protected(void);

#endif /* GMFP_VMMTEST_H */
