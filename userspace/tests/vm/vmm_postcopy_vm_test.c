// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * gmfp-vm (the reference VMM, ASan+UBSan like this test) against the real
 * kernel: postcopy migration between two gmfp-vm processes on loopback.
 * The source boots its guest (which writes a pattern over all of its RAM
 * and verifies it), stops and sends its vCPU state; the destination resumes
 * at once, pulls the pages from the source's live guest_memfd, demand
 * before background, and its guest reads everything back.  Both sides'
 * checksums are checked (guest and VMM), and that every page was served
 * once.
 *
 *   postcopy_async        under ASYNC the compute task must make progress
 *                         while the memory task waits for pages
 *   postcopy_wait         under WAIT it cannot: the whole vCPU waits
 *   postcopy_exit_private the EXIT policy into a private destination (of a
 *                         shared source: private memory is filled by COPY)
 *   postcopy_pager        the destination's faults served by gmfp-pager
 *   postcopy_source_killed  the source is SIGKILLed mid-postcopy: the
 *                         destination says so and exits 3, and every page
 *                         that did become present is the right one
 */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "vmmtest.h"

#define PAGER_SOCK "/tmp/gmfp-vm-postcopy-pager.sock"

struct mig {
	struct proc src, dst;
	char port[16], dest[32];
};

static void mig_start(struct mig *m, const char *policy, bool private_dest,
		      const char *throttle_us, bool progress, const char *pager)
{
	const char *dargs[16], *sargs[16];
	int n = 0;

	free_port(m->port, sizeof(m->port));
	snprintf(m->dest, sizeof(m->dest), "127.0.0.1:%s", m->port);
	dargs[n++] = "incoming";
	dargs[n++] = "--listen";
	dargs[n++] = "127.0.0.1";
	if (policy) {
		dargs[n++] = "--policy";
		dargs[n++] = policy;
	}
	if (private_dest)
		dargs[n++] = "--private";
	if (progress)
		dargs[n++] = "--progress";
	if (pager) {
		dargs[n++] = "--pager";
		dargs[n++] = pager;
	}
	dargs[n++] = "--json";
	dargs[n++] = m->port;
	dargs[n] = NULL;
	proc_start(&m->dst, dargs);
	CHECK(proc_wait_line(&m->dst, "waiting for the source", 30000),
	      "the destination did not listen");

	n = 0;
	sargs[n++] = "migrate";
	sargs[n++] = "--postcopy";
	sargs[n++] = m->dest;
	sargs[n++] = "--mem";
	sargs[n++] = MEM;
	sargs[n++] = "--serve";
	sargs[n++] = "127.0.0.1:0";
	if (throttle_us) {
		sargs[n++] = "--throttle-us";
		sargs[n++] = throttle_us;
	}
	sargs[n++] = "--json";
	sargs[n] = NULL;
	proc_start(&m->src, sargs);
}

static void postcopy(const char *policy, bool private_dest, const char *throttle_us,
		     const char *pager, struct mig *m)
{
	mig_start(m, policy, private_dest, throttle_us, false, pager);
	proc_wait(&m->dst, 180000);
	proc_wait(&m->src, 30000);
	/* the source verified before it stopped, the destination after */
	check_verified(&m->src, true);
	check_verified(&m->dst, !private_dest);
	CHECK_EQ(jnum(&m->dst, "checksum", "generation"), 1);
	CHECK(jnum(&m->dst, "checksum", "passes") >= 2, "no verify pass on the destination");
	CHECK_EQ(jnum(&m->dst, "checksum", "guest"), jnum(&m->src, "checksum", "guest"));
	check_lazy(&m->dst);
	/* the source served what the destination asked for, each page once */
	CHECK_EQ(jnum(&m->src, "served", "demand") + jnum(&m->src, "served", "background"),
		 MEM_PAGES);
	CHECK(jnum(&m->dst, NULL, "downtime_ms") > 0, "no downtime figure");
	CHECK(jnum(&m->dst, "postcopy_progress", "memory_pages_verified") > 0,
	      "the memory task verified nothing while the pages arrived");
}

static void mig_free(struct mig *m)
{
	proc_free(&m->src);
	proc_free(&m->dst);
}

static void test_postcopy_async(void)
{
	struct mig m;

	/* a slow link: each missing page keeps the memory task waiting a while */
	postcopy("async", false, "200", NULL, &m);
	CHECK(jnum(&m.dst, "vcpu", "async_not_present") > 0, "no async #PF under ASYNC");
	CHECK(jnum(&m.dst, "postcopy_progress", "compute_units_while_memory_waited") > 0,
	      "under ASYNC the compute task made no progress while the memory task waited");
	mig_free(&m);
}

static void test_postcopy_wait(void)
{
	struct mig m;

	postcopy("wait", false, "200", NULL, &m);
	/* the whole vCPU waits: nothing runs while a page is missing */
	CHECK_EQ(jnum(&m.dst, "postcopy_progress", "compute_units_while_memory_waited"), 0);
	CHECK_EQ(jnum(&m.dst, "vcpu", "async_not_present"), 0);
	mig_free(&m);
}

/* EXIT, and a private destination (of a shared source: COPY fills it) */
static void test_postcopy_exit_private(void)
{
	struct mig m;

	if (!vmm_have_sw_protected())
		SKIP_TEST("no KVM_X86_SW_PROTECTED_VM");
	postcopy("exit", true, NULL, NULL, &m);
	CHECK(jnum(&m.dst, "vcpu", "not_present_exits") > 0, "no exit under EXIT");
	CHECK_EQ(jnum(&m.dst, NULL, "private"), 1);
	mig_free(&m);
}

/* The destination hands its guest_memfd to gmfp-pager, which pulls from the source. */
static void test_postcopy_pager(void)
{
	struct mig m;
	pid_t pid = vt_pager_start(PAGER_SOCK, NULL);

	postcopy(NULL, false, NULL, PAGER_SOCK, &m);
	mig_free(&m);
	vt_pager_stop(pid);
}

static void test_postcopy_source_killed(void)
{
	struct mig m;
	uint64_t checked;
	int st;

	/* 2 ms a page: 4 s for everything at best; killed once some arrived */
	mig_start(&m, "async", false, "2000", true, NULL);
	CHECK(proc_wait_present(&m.dst, 100, 120000), "no page arrived");
	CHECK_EQ(kill(m.src.pid, SIGKILL), 0);
	CHECK(waitpid(m.src.pid, &st, 0) == m.src.pid, "waitpid source");
	close(m.src.out);
	close(m.src.err);
	proc_wait(&m.dst, 120000);
	CHECK_EQ(proc_rc(&m.dst), 3);
	CHECK(strstr(m.dst.json, "the source went away"), "no clear error: %s", m.dst.json);
	checked = jnum(&m.dst, "present_check", "checked");
	CHECK(checked > 0 && checked < MEM_PAGES, "%llu pages present", (unsigned long long)checked);
	CHECK_EQ(jnum(&m.dst, "present_check", "wrong"), 0);
	proc_free(&m.dst);
}

static const struct vt_case cases[] = {
	{ "postcopy_async", test_postcopy_async },
	{ "postcopy_wait", test_postcopy_wait },
	{ "postcopy_exit_private", test_postcopy_exit_private },
	{ "postcopy_pager", test_postcopy_pager },
	{ "postcopy_source_killed", test_postcopy_source_killed },
};

int main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	return vt_run(argc, argv, "vmm_postcopy_vm_test", cases,
		      sizeof(cases) / sizeof(cases[0]));
}
