// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * gmfp-vm (the reference VMM, ASan+UBSan like this test) end to end against
 * the real kernel: its own guest writes a pattern over all of its RAM and
 * verifies it, is snapshotted, restored lazily and migrated post-copy, and
 * reads everything back.  Every run is checked twice: by the guest (every
 * word against the pattern, a checksum) and by the VMM (the expected
 * checksum, and for shared memory its own read of RAM); the compute task's
 * state is checked against the number of steps it reports.
 *
 *   snapshot              boot, write, verify, snapshot
 *   restore_eager         everything copied in before the vCPU runs
 *   restore_lazy_*        lazy restore from the image through the in-process
 *                         engine, under each policy (EXIT: the vCPU exits on
 *                         missing pages; ASYNC: the guest takes async #PFs)
 *   restore_private       the confidential flavour: KVM_X86_SW_PROTECTED_VM,
 *                         private RAM filled only by COPY, from the image
 *   restore_pager         the faults served by gmfp-pager instead
 *   postcopy_*            two gmfp-vm processes on loopback: the source stops,
 *                         the destination resumes at once and pulls the pages
 *                         from the source's live guest_memfd; under ASYNC the
 *                         compute task must make progress while the memory
 *                         task waits for pages, under WAIT it cannot
 *   postcopy_exit_private the EXIT policy into a private destination (of a
 *                         shared source: private memory is filled by COPY)
 *   postcopy_source_killed  the source is SIGKILLed mid-postcopy: the
 *                         destination says so and exits 3, and every page
 *                         that did become present is the right one
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "gmfp_pager.h"
#include "vmtest.h"

#define MEM "8M"
#define MEM_PAGES 2048
#define SNAP "/tmp/gmfp-vm-snap"
#define PAGER_SOCK "/tmp/gmfp-vm-pager.sock"
#define GV_LOW_SIZE_FOR_TEST (2u << 20)	/* the state file holds low memory */

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- running gmfp-vm ---- */

struct proc {
	pid_t pid;
	int out, err;		/* its stdout (the JSON), its stderr */
	char *json;
	size_t len;
	int status;
};

static void proc_start(struct proc *p, const char *const *args)
{
	const char *argv[40];
	int o[2], e[2], n = 0;
	char bin[512];

	CHECK(vt_tool("gmfp-vm", bin, sizeof(bin)), "no path for gmfp-vm");
	CHECK(!access(bin, X_OK), "%s: not found", bin);
	argv[n++] = bin;
	for (; *args; args++)
		argv[n++] = *args;
	argv[n] = NULL;
	CHECK(!pipe2(o, O_CLOEXEC) && !pipe2(e, O_CLOEXEC), "pipe");
	fflush(NULL);
	memset(p, 0, sizeof(*p));
	p->pid = fork();
	CHECK(p->pid >= 0, "fork");
	if (!p->pid) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(o[1], 1);
		dup2(e[1], 2);
		execv(bin, (char **)argv);
		_exit(127);
	}
	close(o[1]);
	close(e[1]);
	p->out = o[0];
	p->err = e[0];
	printf("#   gmfp-vm");
	for (n = 1; argv[n]; n++)
		printf(" %s", argv[n]);
	printf("\n");
}

/* Read its stderr until a line contains @what (echoing it): true if seen. */
static bool proc_wait_line(struct proc *p, const char *what, int timeout_ms)
{
	uint64_t end = now_ms() + (uint64_t)timeout_ms;
	char line[1024];
	size_t n = 0;

	while (now_ms() < end) {
		struct pollfd pf = { .fd = p->err, .events = POLLIN };
		char c;

		if (poll(&pf, 1, 100) <= 0)
			continue;
		if (read(p->err, &c, 1) != 1)
			return false;
		if (c != '\n' && n < sizeof(line) - 1) {
			line[n++] = c;
			continue;
		}
		line[n] = 0;
		n = 0;
		printf("#   | %s\n", line);
		if (strstr(line, what))
			return true;
	}
	return false;
}

/*
 * Read its --progress lines ("... present N/M ...") until N >= @min:
 * true once seen.
 */
static bool proc_wait_present(struct proc *p, uint64_t min, int timeout_ms)
{
	uint64_t end = now_ms() + (uint64_t)timeout_ms;
	char line[1024];
	size_t n = 0;

	while (now_ms() < end) {
		struct pollfd pf = { .fd = p->err, .events = POLLIN };
		const char *at;
		char c;

		if (poll(&pf, 1, 100) <= 0)
			continue;
		if (read(p->err, &c, 1) != 1)
			return false;
		if (c != '\n' && n < sizeof(line) - 1) {
			line[n++] = c;
			continue;
		}
		line[n] = 0;
		n = 0;
		printf("#   | %s\n", line);
		at = strstr(line, " present ");
		if (at && strtoull(at + 9, NULL, 10) >= min)
			return true;
	}
	return false;
}

/* Collect stdout and stderr until it exits (within @timeout_ms, else kill). */
static void proc_wait(struct proc *p, int timeout_ms)
{
	uint64_t end = now_ms() + (uint64_t)timeout_ms;
	char buf[4096], line[1024];
	size_t ln = 0;
	bool out_open = true, err_open = true;

	while (out_open || err_open) {
		struct pollfd pf[2] = {
			{ .fd = out_open ? p->out : -1, .events = POLLIN },
			{ .fd = err_open ? p->err : -1, .events = POLLIN },
		};
		ssize_t r;
		int i;

		CHECK(now_ms() < end, "gmfp-vm (pid %d) still running after %d s", (int)p->pid,
		      timeout_ms / 1000);
		if (poll(pf, 2, 200) <= 0)
			continue;
		if (pf[0].revents) {
			r = read(p->out, buf, sizeof(buf));
			if (r <= 0) {
				out_open = false;
			} else {
				p->json = realloc(p->json, p->len + (size_t)r + 1);
				CHECK(p->json, "realloc");
				memcpy(p->json + p->len, buf, (size_t)r);
				p->len += (size_t)r;
				p->json[p->len] = 0;
			}
		}
		if (pf[1].revents) {
			r = read(p->err, buf, sizeof(buf));
			if (r <= 0)
				err_open = false;
			for (i = 0; i < r; i++) {
				if (buf[i] != '\n' && ln < sizeof(line) - 1) {
					line[ln++] = buf[i];
					continue;
				}
				line[ln] = 0;
				ln = 0;
				printf("#   | %s\n", line);
			}
		}
	}
	CHECK(waitpid(p->pid, &p->status, 0) == p->pid, "waitpid");
	close(p->out);
	close(p->err);
	if (!p->json)
		p->json = strdup("");
	printf("#   exit %d: %s", WIFEXITED(p->status) ? WEXITSTATUS(p->status) : -1, p->json);
}

static int proc_rc(const struct proc *p)
{
	return WIFEXITED(p->status) ? WEXITSTATUS(p->status) : 128 + WTERMSIG(p->status);
}

/* A number in the JSON: "key" inside object "obj" (NULL: anywhere). */
static uint64_t jnum(const struct proc *p, const char *obj, const char *key)
{
	char pat[80];
	const char *s = p->json;

	if (obj) {
		snprintf(pat, sizeof(pat), "\"%s\":{", obj);
		s = strstr(s, pat);
		CHECK(s, "no object %s in the JSON", obj);
	}
	snprintf(pat, sizeof(pat), "\"%s\":", key);
	s = strstr(s, pat);
	CHECK(s, "no %s%s%s in the JSON", obj ? obj : "", obj ? "." : "", key);
	s += strlen(pat);
	if (!strncmp(s, "true", 4))
		return 1;
	if (!strncmp(s, "false", 5))
		return 0;
	return strtoull(s, NULL, 10);
}

static void proc_free(struct proc *p)
{
	free(p->json);
	p->json = NULL;
}

/* Run gmfp-vm to the end. */
static void run(struct proc *p, const char *const *args, int timeout_ms)
{
	proc_start(p, args);
	proc_wait(p, timeout_ms);
}

/* Both checks passed: the guest's and the VMM's, and the compute state. */
static void check_verified(const struct proc *p, bool shared)
{
	CHECK_EQ(proc_rc(p), 0);
	CHECK_EQ(jnum(p, NULL, "exit_code"), 0);
	CHECK_EQ(jnum(p, "checksum", "bad_words"), 0);
	CHECK_EQ(jnum(p, "checksum", "ok"), 1);
	CHECK_EQ(jnum(p, "checksum", "guest"), jnum(p, "checksum", "expected"));
	if (shared)
		CHECK_EQ(jnum(p, "checksum", "vmm"), jnum(p, "checksum", "expected"));
	CHECK(jnum(p, "compute", "consistent") == 1, "compute task state");
}

/* ---- snapshot and restore ---- */

static bool have_snapshot;

static void make_snapshot(void)
{
	const char *args[] = { "snapshot", "--mem", MEM, "--json", SNAP, NULL };
	struct proc p;
	struct stat sb;

	if (have_snapshot)
		return;
	run(&p, args, 120000);
	check_verified(&p, true);
	CHECK_EQ(jnum(&p, "checksum", "generation"), 1);
	CHECK(jnum(&p, "compute", "units") > 0, "the compute task never ran");
	CHECK(!stat(SNAP "/memory", &sb) && sb.st_size == MEM_PAGES * PG, "memory image");
	/* vCPU state and the low memory pages that are not all zero */
	CHECK(!stat(SNAP "/state", &sb) && sb.st_size > 4 * PG &&
	      sb.st_size < (off_t)GV_LOW_SIZE_FOR_TEST, "state file of %lld bytes",
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
	run(p, args, 120000);
	check_verified(p, !private_mem);
	CHECK_EQ(jnum(p, "checksum", "generation"), 1);
	CHECK(jnum(p, "checksum", "passes") >= 2, "no verify pass after the restore");
	CHECK_EQ(jnum(p, "kernel", "finished"), 1);
}

static void check_lazy(const struct proc *p)
{
	CHECK_EQ(jnum(p, "pages", "total"), MEM_PAGES);
	CHECK_EQ(jnum(p, "pages", "demand") + jnum(p, "pages", "background"), MEM_PAGES);
	CHECK(jnum(p, "pages", "demand") > 0, "a lazy restore with no demand fault");
	CHECK_EQ(jnum(p, "pages", "errors"), 0);
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
	int r = open("/dev/kvm", O_RDWR), kvm = r;

	CHECK(kvm >= 0, "/dev/kvm");
	r = ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_VM_TYPES);
	close(kvm);
	if (!(r & (1 << KVM_X86_SW_PROTECTED_VM)))
		SKIP_TEST("no KVM_X86_SW_PROTECTED_VM");
	restore(NULL, true, true, NULL, &p);
	check_lazy(&p);
	CHECK_EQ(jnum(&p, NULL, "private"), 1);
	proc_free(&p);
}

static void test_restore_pager(void)
{
	const char *pargs[] = { "--socket", PAGER_SOCK, NULL };
	const char *argv[8];
	char bin[512];
	struct proc p;
	pid_t pid;
	int i, r, st;

	make_snapshot();
	CHECK(vt_tool("gmfp-pager", bin, sizeof(bin)), "no gmfp-pager");
	argv[0] = bin;
	for (i = 0; pargs[i]; i++)
		argv[i + 1] = pargs[i];
	argv[i + 1] = NULL;
	fflush(NULL);
	pid = fork();
	CHECK(pid >= 0, "fork");
	if (!pid) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(2, 1);
		execv(bin, (char **)argv);
		_exit(127);
	}
	for (i = 0; i < 2000; i++) {
		r = gmfp_pager_status(PAGER_SOCK, NULL, 0);
		if (r != -ENOENT && r != -ECONNREFUSED)
			break;
		usleep(10000);
	}
	restore(NULL, true, false, PAGER_SOCK, &p);
	check_lazy(&p);
	proc_free(&p);
	kill(pid, SIGTERM);
	CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && !WEXITSTATUS(st),
	      "gmfp-pager exit status %#x", st);
}

/* ---- postcopy ---- */

static void free_port(char *buf, size_t len)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t al = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	CHECK(fd >= 0 && !bind(fd, (struct sockaddr *)&a, al) &&
	      !getsockname(fd, (struct sockaddr *)&a, &al), "free port");
	snprintf(buf, len, "%u", ntohs(a.sin_port));
	close(fd);
}

struct mig {
	struct proc src, dst;
	char port[16], dest[32];
};

static void mig_start(struct mig *m, const char *policy, bool private_dest,
		      const char *throttle_us, bool progress)
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
		     struct mig *m)
{
	mig_start(m, policy, private_dest, throttle_us, false);
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
	postcopy("async", false, "200", &m);
	CHECK(jnum(&m.dst, "vcpu", "async_not_present") > 0, "no async #PF under ASYNC");
	CHECK(jnum(&m.dst, "postcopy_progress", "compute_units_while_memory_waited") > 0,
	      "under ASYNC the compute task made no progress while the memory task waited");
	mig_free(&m);
}

static void test_postcopy_wait(void)
{
	struct mig m;

	postcopy("wait", false, "200", &m);
	/* the whole vCPU waits: nothing runs while a page is missing */
	CHECK_EQ(jnum(&m.dst, "postcopy_progress", "compute_units_while_memory_waited"), 0);
	CHECK_EQ(jnum(&m.dst, "vcpu", "async_not_present"), 0);
	mig_free(&m);
}

/* EXIT, and a private destination (of a shared source: COPY fills it) */
static void test_postcopy_exit_private(void)
{
	struct mig m;
	int kvm = open("/dev/kvm", O_RDWR), r;

	CHECK(kvm >= 0, "/dev/kvm");
	r = ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_VM_TYPES);
	close(kvm);
	if (!(r & (1 << KVM_X86_SW_PROTECTED_VM)))
		SKIP_TEST("no KVM_X86_SW_PROTECTED_VM");
	postcopy("exit", true, NULL, &m);
	CHECK(jnum(&m.dst, "vcpu", "not_present_exits") > 0, "no exit under EXIT");
	CHECK_EQ(jnum(&m.dst, NULL, "private"), 1);
	mig_free(&m);
}

static void test_postcopy_source_killed(void)
{
	struct mig m;
	uint64_t checked;
	int st;

	/* 2 ms a page: 4 s for everything at best; killed once some arrived */
	mig_start(&m, "async", false, "2000", true);
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
	{ "snapshot", test_snapshot },
	{ "restore_eager", test_restore_eager },
	{ "restore_lazy_async", test_restore_lazy_async },
	{ "restore_lazy_wait", test_restore_lazy_wait },
	{ "restore_lazy_exit", test_restore_lazy_exit },
	{ "restore_private", test_restore_private },
	{ "restore_pager", test_restore_pager },
	{ "postcopy_async", test_postcopy_async },
	{ "postcopy_wait", test_postcopy_wait },
	{ "postcopy_exit_private", test_postcopy_exit_private },
	{ "postcopy_source_killed", test_postcopy_source_killed },
};

int main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	return vt_run(argc, argv, "vmm_vm_test", cases, sizeof(cases) / sizeof(cases[0]));
}
