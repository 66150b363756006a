// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * gmfp-vm (the reference VMM, ASan+UBSan like this test) against the real
 * kernel: snapshot and restore.  Its own guest writes a pattern over all of
 * its RAM and verifies it; after a restore it reads everything back.  Every
 * run is checked twice: by the guest (every word against the pattern, a
 * checksum) and by the VMM (the expected checksum, and for shared memory
 * its own read of RAM); the compute task's state is checked against the
 * number of steps it reports.  Postcopy: vmm_postcopy_vm_test.
 *
 *   snapshot              boot, write, verify, snapshot
 *   restore_eager         everything copied in before the vCPU runs
 *   restore_lazy_*        lazy restore from the image through the in-process
 *                         engine, under each policy (EXIT: the vCPU exits on
 *                         missing pages; WAIT: it waits in the kernel; ASYNC:
 *                         the guest takes async #PFs)
 *   restore_private       the confidential flavour: KVM_X86_SW_PROTECTED_VM,
 *                         private RAM filled only by COPY, from the image
 *   restore_pager         the faults served by gmfp-pager instead
 */
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmmtest.h"

#define SNAP "/tmp/gmfp-vm-snap"
#define PAGER_SOCK "/tmp/gmfp-vm-pager.sock"
#define LOW_SIZE (2u << 20)	/* low memory: the state file holds its non-zero pages */

static bool have_snapshot;

static void make_snapshot(void)
{
	const char *args[] = { "snapshot", "--mem", MEM, "--json", SNAP, NULL };
	struct proc p;
	struct stat sb;

	if (have_snapshot)
		return;
	proc_run(&p, args, 120000);
	check_verified(&p, true);
	CHECK_EQ(jnum(&p, "checksum", "generation"), 1);
	CHECK(jnum(&p, "compute", "units") > 0, "the compute task never ran");
	CHECK(!stat(SNAP "/memory", &sb) && sb.st_size == MEM_PAGES * PG, "memory image");
	/* vCPU state and the low memory pages that are not all zero */
	CHECK(!stat(SNAP "/state", &sb) && sb.st_size > 4 * PG &&
	      sb.st_size < (off_t)LOW_SIZE, "state file of %lld bytes",
	      (long long)sb.st_size);
	proc_free(&p);
	have_snapshot = true;
}

static void test_snapshot(void)
{
	make_snapshot();
}

static void restore(const char *policy, bool lazy, bool private_mem, const char *pager,
		    struct proc *p)
{
	const char *args[20];
	int n = 0;

	make_snapshot();
	args[n++] = "restore";
	if (lazy)
		args[n++] = "--lazy";
	if (policy) {
		args[n++] = "--policy";
		args[n++] = policy;
	}
	if (private_mem)
		args[n++] = "--private";
	if (pager) {
		args[n++] = "--pager";
		args[n++] = pager;
	}
	args[n++] = "--json";
	args[n++] = SNAP;
	args[n] = NULL;
	proc_run(p, args, 120000);
	check_verified(p, !private_mem);
	CHECK_EQ(jnum(p, "checksum", "generation"), 1);
	CHECK(jnum(p, "checksum", "passes") >= 2, "no verify pass after the restore");
	CHECK_EQ(jnum(p, "kernel", "finished"), 1);
}

static void test_restore_eager(void)
{
	struct proc p;

	restore(NULL, false, false, NULL, &p);
	/* nothing was missing once the vCPU ran */
	CHECK_EQ(jnum(&p, "kernel", "faults"), 0);
	proc_free(&p);
}

static void test_restore_lazy_async(void)
{
	struct proc p;

	restore("async", true, false, NULL, &p);
	check_lazy(&p);
	CHECK(jnum(&p, "vcpu", "async_not_present") > 0, "no async #PF under ASYNC");
	CHECK(jnum(&p, "vcpu", "async_ready") > 0, "no \"page ready\" under ASYNC");
	proc_free(&p);
}

static void test_restore_lazy_wait(void)
{
	struct proc p;

	restore("wait", true, false, NULL, &p);
	check_lazy(&p);
	CHECK_EQ(jnum(&p, "vcpu", "async_not_present"), 0);
	CHECK_EQ(jnum(&p, "vcpu", "not_present_exits"), 0);
	CHECK(jnum(&p, "kernel", "waits") > 0, "the vCPU never waited in the kernel");
	proc_free(&p);
}

static void test_restore_lazy_exit(void)
{
	struct proc p;

	restore("exit", true, false, NULL, &p);
	check_lazy(&p);
	CHECK(jnum(&p, "vcpu", "not_present_exits") > 0, "no KVM_EXIT_MEMORY_FAULT under EXIT");
	CHECK_EQ(jnum(&p, "vcpu", "async_not_present"), 0);
	proc_free(&p);
}

static void test_restore_private(void)
{
	struct proc p;

	if (!vmm_have_sw_protected())
		SKIP_TEST("no KVM_X86_SW_PROTECTED_VM");
	restore(NULL, true, true, NULL, &p);
	check_lazy(&p);
	CHECK_EQ(jnum(&p, NULL, "private"), 1);
	proc_free(&p);
}

static void test_restore_pager(void)
{
	struct proc p;
	pid_t pid;

	make_snapshot();
	pid = vt_pager_start(PAGER_SOCK, NULL);
	restore(NULL, true, false, PAGER_SOCK, &p);
	check_lazy(&p);
	proc_free(&p);
	vt_pager_stop(pid);
}

static const struct vt_case cases[] = {
	{ "snapshot", test_snapshot },
	{ "restore_eager", test_restore_eager },
	{ "restore_lazy_async", test_restore_lazy_async },
	{ "restore_lazy_wait", test_restore_lazy_wait },
	{ "restore_lazy_exit", test_restore_lazy_exit },
	{ "restore_private", test_restore_private },
	{ "restore_pager", test_restore_pager },
};

int main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	return vt_run(argc, argv, "vmm_vm_test", cases, sizeof(cases) / sizeof(cases[0]));
}
