// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Helpers of the gmfp-vm tests (vmm_vm_test, vmm_postcopy_vm_test): run the
 * binary, read its stderr and its JSON, the checks every run passes, a
 * pager daemon, a free port.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "gmfp_pager.h"
#include "vmmtest.h"

/* ---- running gmfp-vm ---- */

void proc_start(struct proc *p, const char *const *args)
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
bool proc_wait_line(struct proc *p, const char *what, int timeout_ms)
{
	uint64_t end = vt_now_ms() + (uint64_t)timeout_ms;
	char line[1024];
	size_t n = 0;

	while (vt_now_ms() < end) {
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
bool proc_wait_present(struct proc *p, uint64_t min, int timeout_ms)
{
	uint64_t end = vt_now_ms() + (uint64_t)timeout_ms;
	char line[1024];
	size_t n = 0;

	while (vt_now_ms() < end) {
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
void proc_wait(struct proc *p, int timeout_ms)
{
	uint64_t end = vt_now_ms() + (uint64_t)timeout_ms;
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

		CHECK(vt_now_ms() < end, "gmfp-vm (pid %d) still running after %d s", (int)p->pid,
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

int proc_rc(const struct proc *p)
{
	return WIFEXITED(p->status) ? WEXITSTATUS(p->status) : 128 + WTERMSIG(p->status);
}

/* A number in the JSON: "key" inside object "obj" (NULL: anywhere). */
uint64_t jnum(const struct proc *p, const char *obj, const char *key)
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

void proc_free(struct proc *p)
{
	free(p->json);
	p->json = NULL;
}

/* Run gmfp-vm to the end. */
void proc_run(struct proc *p, const char *const *args, int timeout_ms)
{
	proc_start(p, args);
	proc_wait(p, timeout_ms);
}

/* Both checks passed: the guest's and the VMM's, and the compute state. */
void check_verified(const struct proc *p, bool shared)
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

void check_lazy(const struct proc *p)
{
	CHECK_EQ(jnum(p, "pages", "total"), MEM_PAGES);
	CHECK_EQ(jnum(p, "pages", "demand") + jnum(p, "pages", "background"), MEM_PAGES);
	CHECK(jnum(p, "pages", "demand") > 0, "a lazy restore with no demand fault");
	CHECK_EQ(jnum(p, "pages", "errors"), 0);
}

void free_port(char *buf, size_t len)
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

bool vmm_have_sw_protected(void)
{
	int kvm = open("/dev/kvm", O_RDWR), r;

	CHECK(kvm >= 0, "/dev/kvm");
	r = ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_VM_TYPES);
	close(kvm);
	return r > 0 && (r & (1 << KVM_X86_SW_PROTECTED_VM));
}
