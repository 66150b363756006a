// SPDX-License-Identifier: LGPL-2.1-or-later
/* Helpers of the in-VM tests: harness, minimal VMM, images, page server. */
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/close_range.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "gmfp_pager.h"
#include "vmtest.h"

int vt_skipped;
static const char *vt_prog, *vt_name;
static size_t vt_index;

void vt_fail(const char *file, int line, const char *cond, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "  FAIL %s:%d: %s: ", file, line, cond);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	printf("not ok %zu %s\n# %s: stopping at the first failure\n", vt_index + 1,
	       vt_name, vt_prog);
	fflush(NULL);
	exit(1);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void vt_usage(const char *prog, const struct vt_case *cases, size_t n)
{
	size_t i;

	fprintf(stderr, "usage: %s [-r REPEAT] [-c CASE]...\n"
		"  -r N     run the selected cases N times (hunting a rare failure)\n"
		"  -c CASE  run only CASE (may be given more than once)\ncases:\n", prog);
	for (i = 0; i < n; i++)
		fprintf(stderr, "  %s\n", cases[i].name);
}

static bool vt_selected(const char *name, int argc, char **argv)
{
	bool any = false;
	int i;

	for (i = 1; i < argc; i++)
		if (!strcmp(argv[i], "-c") && i + 1 < argc) {
			any = true;
			if (!strcmp(argv[++i], name))
				return true;
		}
	return !any;
}

int vt_run(int argc, char **argv, const char *prog, const struct vt_case *cases, size_t n)
{
	size_t i, pass = 0, skip = 0, total = 0, k = 0;
	long repeat = 1, r;
	int a;

	for (a = 1; a < argc; a++) {
		if (!strcmp(argv[a], "-r") && a + 1 < argc) {
			repeat = strtol(argv[++a], NULL, 10);
		} else if (!strcmp(argv[a], "-c") && a + 1 < argc) {
			a++;
		} else {
			vt_usage(prog, cases, n);
			return 2;
		}
	}
	if (repeat < 1) {
		vt_usage(prog, cases, n);
		return 2;
	}
	for (i = 0; i < n; i++)
		total += vt_selected(cases[i].name, argc, argv);
	if (!total) {
		vt_usage(prog, cases, n);
		return 2;
	}

	setvbuf(stdout, NULL, _IOLBF, 0);
	vt_prog = prog;
	printf("TAP version 13\n1..%zu\n", total * (size_t)repeat);
	for (r = 0; r < repeat; r++) {
		for (i = 0; i < n; i++) {
			double t0 = now_s();

			if (!vt_selected(cases[i].name, argc, argv))
				continue;
			vt_skipped = 0;
			vt_index = k++;
			vt_name = cases[i].name;
			printf("# %s: %s\n", prog, cases[i].name);
			cases[i].fn();
			if (vt_skipped) {
				skip++;
				printf("ok %zu %s # SKIP (%.1f s)\n", k, cases[i].name,
				       now_s() - t0);
			} else {
				pass++;
				printf("ok %zu %s (%.1f s)\n", k, cases[i].name, now_s() - t0);
			}
		}
	}
	printf("# %s: %zu passed, 0 failed, %zu skipped\n", prog, pass, skip);
	return pass ? 0 : 4;
}

/* ---- image ---- */

int vt_make_image(uint64_t npages, char *path, size_t len)
{
	uint64_t *buf = malloc(PG), p, j;
	int fd;

	snprintf(path, len, "/tmp/gmfp-image-XXXXXX");
	fd = mkstemp(path);
	if (fd < 0 || !buf) {
		free(buf);
		return -1;
	}
	for (p = 0; p < npages; p++) {
		for (j = 0; j < PG / 8; j++)
			buf[j] = vt_word(p, j);
		if (pwrite(fd, buf, PG, (off_t)(p * PG)) != PG) {
			close(fd);
			free(buf);
			return -1;
		}
	}
	free(buf);
	return fd;
}

bool vt_page_ok(const void *page, uint64_t p)
{
	const volatile uint64_t *w = page;
	uint64_t j;

	for (j = 0; j < PG / 8; j++)
		if (w[j] != vt_word(p, j))
			return false;
	return true;
}

uint32_t vt_expected_sum(uint64_t first, uint64_t n)
{
	uint32_t s = 0;
	uint64_t p;

	for (p = first; p < first + n; p++)
		s += (uint32_t)vt_word(p, 0);
	return s;
}

/* ---- minimal VMM ---- */

/*
 * The guest: 32-bit flat protected mode, no paging.  ESI = first page's
 * GPA, ECX = number of pages:
 *	xor eax, eax
 * 1:	mov ebx, [esi]; add eax, ebx; add esi, 4096; dec ecx; jnz 1b
 *	mov dx, REPORT_PORT; out dx, eax; 2: hlt; jmp 2b
 */
static const uint8_t guest_code[] = {
	0x31, 0xc0,
	0x8b, 0x1e, 0x01, 0xd8, 0x81, 0xc6, 0x00, 0x10, 0x00, 0x00, 0x49, 0x75, 0xf3,
	0x66, 0xba, REPORT_PORT & 0xff, REPORT_PORT >> 8, 0xef,
	0xf4, 0xeb, 0xfd,
};

static void sigusr1(int sig)
{
	(void)sig;
}

int vt_vm_create(struct vt_vm *v, uint64_t npages, bool private_mem, unsigned int policy)
{
	struct kvm_userspace_memory_region2 r;
	int type = private_mem ? KVM_X86_SW_PROTECTED_VM : 0;
	struct sigaction sa;
	int e;

	memset(v, 0, sizeof(*v));
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = sigusr1;	/* no SA_RESTART: KVM_RUN returns EINTR */
	sigaction(SIGUSR1, &sa, NULL);
	v->gmem = -1;
	v->size = npages * PG;
	v->private_mem = private_mem;
	v->policy = policy;
	v->kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (v->kvm < 0)
		return -errno;
	if (private_mem && !(ioctl(v->kvm, KVM_CHECK_EXTENSION, KVM_CAP_VM_TYPES) &
			     (1 << KVM_X86_SW_PROTECTED_VM)))
		return -EOPNOTSUPP;
	v->vm = ioctl(v->kvm, KVM_CREATE_VM, type);
	if (v->vm < 0)
		return -errno;
	e = gmfp_vm_set_policy(v->vm, policy, 0);
	if (e)
		return e;
	v->gmem = gmfp_gmem_create(v->vm, v->size, private_mem ? 0 : GMFP_GMEM_SHARED);
	if (v->gmem < 0)
		return v->gmem;
	v->code = mmap(NULL, 0x10000, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (v->code == MAP_FAILED)
		return -errno;
	memcpy(v->code, guest_code, sizeof(guest_code));
	memset(&r, 0, sizeof(r));
	r.slot = CODE_SLOT;
	r.guest_phys_addr = 0;
	r.memory_size = 0x10000;
	r.userspace_addr = (uint64_t)(uintptr_t)v->code;
	if (ioctl(v->vm, KVM_SET_USER_MEMORY_REGION2, &r))
		return -errno;
	if (private_mem) {
		/* shared view for the slot's userspace_addr; the guest uses private */
		v->hva = NULL;
		void *shared = mmap(NULL, v->size, PROT_READ | PROT_WRITE,
				    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (shared == MAP_FAILED)
			return -errno;
		r.userspace_addr = (uint64_t)(uintptr_t)shared;
	} else {
		v->hva = mmap(NULL, v->size, PROT_READ | PROT_WRITE, MAP_SHARED, v->gmem, 0);
		if (v->hva == MAP_FAILED) {
			v->hva = NULL;
			return -errno;
		}
		r.userspace_addr = (uint64_t)(uintptr_t)v->hva;
	}
	r.slot = GMEM_SLOT;
	r.flags = KVM_MEM_GUEST_MEMFD;
	r.guest_phys_addr = GMEM_GPA;
	r.memory_size = v->size;
	r.guest_memfd = (uint32_t)v->gmem;
	r.guest_memfd_offset = 0;
	if (ioctl(v->vm, KVM_SET_USER_MEMORY_REGION2, &r))
		return -errno;
	if (private_mem) {
		struct kvm_memory_attributes a = {
			.address = GMEM_GPA, .size = v->size,
			.attributes = KVM_MEMORY_ATTRIBUTE_PRIVATE,
		};

		if (ioctl(v->vm, KVM_SET_MEMORY_ATTRIBUTES, &a))
			return -errno;
	}
	return 0;
}

static void seg(struct kvm_segment *s, uint16_t sel, uint8_t type)
{
	memset(s, 0, sizeof(*s));
	s->base = 0;
	s->limit = 0xffffffff;
	s->selector = sel;
	s->type = type;
	s->present = 1;
	s->dpl = 0;
	s->db = 1;
	s->s = 1;
	s->g = 1;
}

int vt_vcpu_add(struct vt_vm *v, uint64_t first, uint64_t n)
{
	struct vt_vcpu *c = &v->vcpus[v->nr_vcpus];
	struct kvm_sregs sr;
	struct kvm_regs regs;
	int sz;

	if (v->nr_vcpus == 8 || !n)
		return -EINVAL;
	c->vm = v;
	c->id = v->nr_vcpus;
	c->first = first;
	c->npages = n;
	c->fd = ioctl(v->vm, KVM_CREATE_VCPU, c->id);
	if (c->fd < 0)
		return -errno;
	sz = ioctl(v->kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	c->run = mmap(NULL, (size_t)sz, PROT_READ | PROT_WRITE, MAP_SHARED, c->fd, 0);
	if (c->run == MAP_FAILED)
		return -errno;
	if (ioctl(c->fd, KVM_GET_SREGS, &sr))
		return -errno;
	seg(&sr.cs, 0x8, 0xb);
	seg(&sr.ds, 0x10, 0x3);
	sr.es = sr.fs = sr.gs = sr.ss = sr.ds;
	sr.tr.type = 11;
	sr.tr.present = 1;
	sr.tr.limit = 0x67;
	sr.cr0 = (sr.cr0 | 1) & ~(1ull << 31);
	sr.cr4 = 0;
	sr.efer = 0;
	if (ioctl(c->fd, KVM_SET_SREGS, &sr))
		return -errno;
	memset(&regs, 0, sizeof(regs));
	regs.rflags = 2;
	regs.rip = 0;
	regs.rsi = GMEM_GPA + first * PG;
	regs.rcx = n;
	if (ioctl(c->fd, KVM_SET_REGS, &regs))
		return -errno;
	v->nr_vcpus++;
	return 0;
}

static void *vcpu_main(void *arg)
{
	struct vt_vcpu *c = arg;
	struct kvm_run *run = c->run;
	bool reported = false;

	c->result = 0;
	while (!atomic_load(&c->stop)) {
		int r = ioctl(c->fd, KVM_RUN, 0);

		if (r < 0 && errno == EINTR) {
			c->intr_exits++;
			continue;
		}
		if (r < 0 && errno == EFAULT && run->exit_reason == KVM_EXIT_MEMORY_FAULT &&
		    (run->memory_fault.flags & KVM_MEMORY_EXIT_FLAG_NOT_PRESENT)) {
			uint64_t pg = (run->memory_fault.gpa - GMEM_GPA) / PG;

			c->np_exits++;
			if (!c->engine) {
				c->result = -EFAULT;
				break;
			}
			r = gmfp_engine_demand(c->engine, 0, pg, -1);
			if (r) {
				c->result = r;
				break;
			}
			continue;
		}
		if (r < 0) {
			c->result = -errno;
			break;
		}
		if (run->exit_reason == KVM_EXIT_IO && run->io.port == REPORT_PORT &&
		    run->io.direction == KVM_EXIT_IO_OUT && run->io.size == 4) {
			memcpy(&c->sum, (char *)run + run->io.data_offset, 4);
			reported = true;
			continue;
		}
		if (run->exit_reason == KVM_EXIT_HLT && reported)
			break;
		fprintf(stderr, "  vcpu %d: unexpected exit %u\n", c->id, run->exit_reason);
		c->result = -1;
		break;
	}
	if (!reported && !c->result)
		c->result = -ECANCELED;
	return NULL;
}

int vt_vcpus_start(struct vt_vm *v)
{
	int i, r;

	for (i = 0; i < v->nr_vcpus; i++) {
		r = pthread_create(&v->vcpus[i].thread, NULL, vcpu_main, &v->vcpus[i]);
		if (r)
			return -r;
	}
	return 0;
}

void vt_vcpus_join(struct vt_vm *v)
{
	int i;

	for (i = 0; i < v->nr_vcpus; i++)
		pthread_join(v->vcpus[i].thread, NULL);
}

int vt_vcpus_join_timeout(struct vt_vm *v, int timeout_ms)
{
	struct timespec ts;
	int i;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += timeout_ms / 1000;
	for (i = 0; i < v->nr_vcpus; i++)
		if (pthread_timedjoin_np(v->vcpus[i].thread, NULL, &ts))
			return -ETIMEDOUT;
	return 0;
}

/*
 * Every thread of process @pid: name, state, CPU time, where it sleeps in
 * the kernel (/proc/.../stack needs root and CONFIG_STACKTRACE; both hold
 * in the test VM).  What a stuck run needs to be told apart: a thread
 * sleeping for a page that is present (a lost wakeup), or a worker asleep
 * with work queued, or a thread spinning.
 */
void vt_dump_threads(pid_t pid)
{
	char path[320], line[512], comm[64], st;
	unsigned long ut, stt;
	struct dirent *d;
	DIR *dir;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	dir = opendir(path);
	if (!dir)
		return;
	while ((d = readdir(dir))) {
		if (d->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/%d/task/%s/stat", (int)pid, d->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;
		if (fscanf(f, "%*d (%63[^)]) %c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
			   comm, &st, &ut, &stt) != 4) {
			fclose(f);
			continue;
		}
		fclose(f);
		printf("#   stuck: task %d/%s %s state %c utime %lu stime %lu\n", (int)pid,
		       d->d_name, comm, st, ut, stt);
		snprintf(path, sizeof(path), "/proc/%d/task/%s/stack", (int)pid, d->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;
		while (fgets(line, sizeof(line), f))
			printf("#     %s", line);
		fclose(f);
	}
	closedir(dir);
	fflush(stdout);
}

void vt_dump_stuck(struct vt_vm *v, struct gmfp_engine *e, struct gmfp_source *s)
{
	uint64_t npages = v->size / PG, *bm = calloc((npages + 63) / 64, 8), p;
	struct gmfp_source_stats ss;
	struct gmfp_gmem_stats ks;
	char json[2048];
	int shown = 0;

	if (e && gmfp_engine_stats_json(e, json, sizeof(json)) > 0)
		printf("#   stuck: engine %s\n", json);
	if (s) {
		gmfp_source_get_stats(s, &ss);
		printf("#   stuck: source requests %llu pages %llu failures %llu reconnects %llu\n",
		       (unsigned long long)ss.requests, (unsigned long long)ss.pages,
		       (unsigned long long)ss.failures, (unsigned long long)ss.reconnects);
	}
	if (!gmfp_gmem_stats(v->gmem, &ks))
		printf("#   stuck: kernel present %llu faults %llu notifications %llu waits %llu "
		       "wakeups %llu events_queued %llu\n",
		       (unsigned long long)ks.nr_present, (unsigned long long)ks.faults,
		       (unsigned long long)ks.notifications, (unsigned long long)ks.waits,
		       (unsigned long long)ks.wakeups, (unsigned long long)ks.events_queued);
	if (bm && !gmfp_gmem_bitmap(v->gmem, 0, v->size, bm)) {
		printf("#   stuck: missing pages:");
		for (p = 0; p < npages && shown < 32; p++)
			if (!(bm[p / 64] >> (p % 64) & 1)) {
				printf(" %llu", (unsigned long long)p);
				shown++;
			}
		printf("\n");
	}
	free(bm);
	for (p = 0; p < (uint64_t)v->nr_vcpus; p++)
		printf("#   stuck: vcpu %d result %d np_exits %u intr_exits %u\n",
		       v->vcpus[p].id, v->vcpus[p].result, v->vcpus[p].np_exits,
		       v->vcpus[p].intr_exits);
	vt_dump_threads(getpid());
	fflush(stdout);
}

void vt_vcpus_kick(struct vt_vm *v)
{
	int i;

	for (i = 0; i < v->nr_vcpus; i++) {
		atomic_store(&v->vcpus[i].stop, true);
		pthread_kill(v->vcpus[i].thread, SIGUSR1);
	}
}

void vt_vm_destroy(struct vt_vm *v)
{
	int i;

	for (i = 0; i < v->nr_vcpus; i++) {
		munmap(v->vcpus[i].run, (size_t)ioctl(v->kvm, KVM_GET_VCPU_MMAP_SIZE, 0));
		close(v->vcpus[i].fd);
	}
	if (v->hva)
		munmap(v->hva, v->size);
	if (v->code && v->code != MAP_FAILED)
		munmap(v->code, 0x10000);
	if (v->gmem >= 0)
		close(v->gmem);
	if (v->vm > 0)
		close(v->vm);
	if (v->kvm > 0)
		close(v->kvm);
	memset(v, 0, sizeof(*v));
}

/* ---- helper processes ---- */

int vt_helpers_start(struct vt_vm *v, int n, pid_t *pids)
{
	uint64_t npages = v->size / PG;
	int i;

	for (i = 0; i < n; i++) {
		pids[i] = fork();
		if (pids[i] < 0)
			return -errno;
		if (!pids[i]) {
			/* stride order, a different start per helper */
			uint64_t k, p, stride = 2 * (uint64_t)i + 3;
			int bad = 0;

			for (k = 0; k < npages; k++) {
				p = ((uint64_t)i * 17 + k * stride) % npages;
				if (!vt_page_ok((char *)v->hva + p * PG, p))
					bad++;
			}
			/* stride is odd, npages a power of two: every page once */
			_exit(bad ? 1 : 0);
		}
	}
	return 0;
}

int vt_helpers_wait(int n, pid_t *pids, int timeout_ms)
{
	double dl = now_s() + timeout_ms / 1000.0;
	int i, st, bad = 0;

	for (i = 0; i < n; i++) {
		for (;;) {
			pid_t r = waitpid(pids[i], &st, WNOHANG);

			if (r == pids[i]) {
				if (!WIFEXITED(st) || WEXITSTATUS(st))
					bad++;
				pids[i] = 0;
				break;
			}
			if (now_s() > dl)
				return -ETIMEDOUT;
			usleep(10000);
		}
	}
	return bad ? -EIO : 0;
}

/* ---- page server ---- */

static void serve_forever(int lfd, int image_fd, uint64_t npages, unsigned int max_req);

struct counting_src {
	struct gmfp_source *file;
	unsigned int left;	/* requests before dying, 0: for ever */
};

static int counting_fetch(void *ctx, struct gmfp_fetch *f)
{
	struct counting_src *c = ctx;

	/* die without answering, with every connection: a crashed source */
	if (c->left && !--c->left)
		kill(0, SIGKILL);
	return gmfp_source_fetch(c->file, f);
}

static void serve_forever(int lfd, int image_fd, uint64_t npages, unsigned int max_req)
{
	GMFP_OPTS_INIT(struct gmfp_file_opts, fo);
	GMFP_OPTS_INIT(struct gmfp_source_ops, ops);
	GMFP_OPTS_INIT(struct gmfp_serve_opts, so);
	struct counting_src c = { .left = max_req ? max_req + 1 : 0 };
	struct gmfp_source *src;
	uint64_t size = npages * PG;

	fo.fd = image_fd;
	if (gmfp_source_file(&c.file, &fo))
		_exit(2);
	ops.fetch = counting_fetch;
	if (gmfp_source_new(&src, &ops, &c))
		_exit(2);
	so.src = src;
	so.nr_regions = 1;
	so.region_sizes = &size;
	signal(SIGCHLD, SIG_IGN);	/* connection children reap themselves */
	for (;;) {
		int s = accept(lfd, NULL, NULL);

		if (s < 0)
			_exit(3);
		/* one child per connection: demand and background in parallel */
		if (!fork()) {
			close(lfd);
			gmfp_wire_serve(s, &so);
			_exit(0);
		}
		close(s);
	}
}

int vt_server_start(struct vt_server *s, int image_fd, uint64_t npages,
		    unsigned int max_requests)
{
	struct sockaddr_in a;
	socklen_t al = sizeof(a);
	int lfd, one = 1;

	memset(s, 0, sizeof(*s));
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0)
		return -errno;
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(lfd, (struct sockaddr *)&a, sizeof(a)) || listen(lfd, 16) ||
	    getsockname(lfd, (struct sockaddr *)&a, &al)) {
		close(lfd);
		return -errno;
	}
	snprintf(s->port, sizeof(s->port), "%u", ntohs(a.sin_port));
	s->pid = fork();
	if (s->pid < 0)
		return -errno;
	if (!s->pid) {
		/* own process group: killing the server kills its connections */
		setpgid(0, 0);
		serve_forever(lfd, image_fd, npages, max_requests);
	}
	setpgid(s->pid, s->pid);
	close(lfd);
	return 0;
}

void vt_server_kill(struct vt_server *s)
{
	if (s->pid > 0) {
		kill(-s->pid, SIGKILL);
		waitpid(s->pid, NULL, 0);
		s->pid = 0;
	}
}

const char *vt_tool(const char *name, char *buf, size_t len)
{
	char self[512];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	char *slash;

	if (n <= 0)
		return NULL;
	self[n] = 0;
	slash = strrchr(self, '/');
	if (slash)
		*slash = 0;
	snprintf(buf, len, "%s/bin/%s", self, name);
	return buf;
}

uint64_t vt_count_present(int gmem, uint64_t npages)
{
	uint64_t *bm = calloc((npages + 63) / 64, 8), n = 0, i;

	if (!bm || gmfp_gmem_bitmap(gmem, 0, npages * PG, bm)) {
		free(bm);
		return UINT64_MAX;
	}
	for (i = 0; i < (npages + 63) / 64; i++)
		n += (uint64_t)__builtin_popcountll(bm[i]);
	free(bm);
	return n;
}

pid_t vt_pager_start(const char *sock, const char *const *extra)
{
	const char *argv[16];
	char bin[512];
	int argc = 0, i, st, r;
	pid_t pid;

	CHECK(vt_tool("gmfp-pager", bin, sizeof(bin)), "no path for gmfp-pager");
	CHECK(!access(bin, X_OK), "%s: not found", bin);
	argv[argc++] = bin;
	argv[argc++] = "--socket";
	argv[argc++] = sock;
	for (; extra && *extra; extra++)
		argv[argc++] = *extra;
	argv[argc] = NULL;
	fflush(NULL);
	pid = fork();
	CHECK(pid >= 0, "fork");
	if (!pid) {
		/* dies with us; its stdout (the --json text) stays off our TAP */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(2, 1);
		execv(bin, (char **)argv);
		_exit(127);
	}
	for (i = 0; i < 2000; i++) {
		/* up once something answers, a refusal included */
		r = gmfp_pager_status(sock, NULL, 0);
		if (r != -ENOENT && r != -ECONNREFUSED)
			return pid;
		st = 0;
		CHECK(waitpid(pid, &st, WNOHANG) == 0, "gmfp-pager exited, status %#x", st);
		usleep(10000);
	}
	CHECK(0, "gmfp-pager did not come up");
	return -1;
}

/* ---- odds and ends ---- */

uint64_t vt_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int vt_fd_count(pid_t pid)
{
	char path[64];
	struct dirent *d;
	DIR *dir;
	int n = 0;

	snprintf(path, sizeof(path), "/proc/%d/fd", pid ? (int)pid : (int)getpid());
	dir = opendir(path);
	if (!dir)
		return -1;
	while ((d = readdir(dir)))
		n += d->d_name[0] != '.';
	closedir(dir);
	return n - !pid;	/* not counting the directory's own fd */
}

uint64_t vt_json_u64(const char *json, const char *after, const char *key)
{
	char pat[64];
	const char *p = after ? strstr(json, after) : json;

	CHECK(p, "no %s in %s", after, json);
	snprintf(pat, sizeof(pat), "\"%s\":", key);
	p = strstr(p, pat);
	CHECK(p, "no %s in %s", key, json);
	return strtoull(p + strlen(pat), NULL, 10);
}

/* ---- checks of a VM's memory ---- */

void vt_check_present_pages(struct vt_vm *v)
{
	uint64_t npages = v->size / PG, *bm = calloc((npages + 63) / 64, 8), p;

	CHECK(bm && !gmfp_gmem_bitmap(v->gmem, 0, v->size, bm), "bitmap");
	if (v->hva)
		for (p = 0; p < npages; p++)
			if (bm[p / 64] & (1ull << (p % 64)))
				CHECK(vt_page_ok((char *)v->hva + p * PG, p),
				      "page %lu present with wrong contents", (unsigned long)p);
	free(bm);
}

void vt_check_against_source(const struct vt_vm *dst, const struct vt_vm *src)
{
	uint64_t pg;

	for (pg = 0; pg < dst->size / PG; pg++) {
		CHECK(vt_page_ok((const char *)dst->hva + pg * PG, pg), "page %llu wrong",
		      (unsigned long long)pg);
		CHECK(!memcmp((const char *)dst->hva + pg * PG, (const char *)src->hva + pg * PG,
			      PG), "page %llu differs from the source", (unsigned long long)pg);
	}
}

void vt_vcpus_finish(struct vt_vm *v, int ms)
{
	struct timespec ts;
	int i;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ms / 1000;
	for (i = 0; i < v->nr_vcpus; i++) {
		struct vt_vcpu *c = &v->vcpus[i];

		CHECK_EQ(pthread_timedjoin_np(c->thread, NULL, &ts), 0);
		CHECK_EQ(c->result, 0);
		CHECK_EQ(c->sum, vt_expected_sum(c->first, c->npages));
	}
}

/* ---- gmfp-pager ---- */

void vt_pager_stop(pid_t pid)
{
	uint64_t end = vt_now_ms() + 30000;
	int st = 0;

	CHECK_EQ(kill(pid, SIGTERM), 0);
	while (waitpid(pid, &st, WNOHANG) != pid) {
		CHECK(vt_now_ms() < end, "gmfp-pager did not exit on SIGTERM");
		usleep(10000);
	}
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "gmfp-pager exit status %#x", st);
}

int vt_pager_attach(struct vt_attach *a, const char *sock, struct vt_vm *v,
		    const char *image_path, const char *tcp_port, uint32_t workers,
		    uint32_t max_batch, uint32_t bg_order)
{
	struct gmfp_pager_region r = {
		.gmem = v->gmem, .size = v->size, .gpa = GMEM_GPA,
		.flags = v->private_mem ? GMFP_PAGER_PRIVATE : 0,
	};
	GMFP_OPTS_INIT(struct gmfp_pager_attach_opts, o);

	o.regions = &r;
	o.nr_regions = 1;
	if (tcp_port) {
		o.source = GMFP_PAGER_SRC_TCP;
		o.tcp_host = "127.0.0.1";
		o.tcp_port = tcp_port;
		o.tcp_timeout_ms = 2000;
		o.tcp_connect_timeout_ms = 500;
	} else {
		o.source = GMFP_PAGER_SRC_FILE;
		o.file_path = image_path;
	}
	o.workers = workers;
	o.max_batch = max_batch;
	o.bg_order = bg_order;
	o.errmsg = a->why;
	o.errmsg_len = sizeof(a->why);
	o.session = &a->session;
	return gmfp_pager_attach(&a->sock, sock, &o);
}

void vt_pager_wait_complete(int sock, char *json, size_t len, int ms)
{
	uint64_t end = vt_now_ms() + (uint64_t)ms;

	for (;;) {
		CHECK(gmfp_pager_session_status(sock, json, len) > 0, "session status");
		if (strstr(json, "\"complete\":true"))
			return;
		CHECK(vt_now_ms() < end, "not complete: %s", json);
		usleep(20000);
	}
}

/* ---- gmfp-serve ---- */

bool vt_serve_read(struct vt_serve *s, const char *until, unsigned int ms)
{
	uint64_t dl = vt_now_ms() + ms;

	for (;;) {
		struct pollfd p = { .fd = s->out, .events = POLLIN };
		uint64_t now = vt_now_ms();
		ssize_t n;

		s->obuf[s->olen] = 0;
		if (until && strstr(s->obuf, until))
			return true;
		if (now >= dl || s->olen == sizeof(s->obuf) - 1)
			return false;
		if (poll(&p, 1, (int)(dl - now)) <= 0)
			continue;
		n = read(s->out, s->obuf + s->olen, sizeof(s->obuf) - 1 - s->olen);
		if (n <= 0)
			return !until;
		s->olen += (size_t)n;
	}
}

void vt_serve_start(struct vt_serve *s, int gmem, const char *port, const char *const *extra)
{
	const char *argv[24];
	char fdarg[16], listen[40], bin[512];
	int pfd[2], n = 0;
	char *p;

	CHECK(vt_tool("gmfp-serve", bin, sizeof(bin)), "no path for gmfp-serve");
	CHECK(!access(bin, X_OK), "%s: not found", bin);
	memset(s, 0, sizeof(*s));
	snprintf(fdarg, sizeof(fdarg), "%d", gmem);
	snprintf(listen, sizeof(listen), "127.0.0.1:%s", port);
	argv[n++] = bin;
	if (gmem >= 0) {
		argv[n++] = "--gmem-fd";
		argv[n++] = fdarg;
	}
	argv[n++] = "--listen";
	argv[n++] = listen;
	argv[n++] = "--json";
	while (extra && *extra && n < 22)
		argv[n++] = *extra++;
	argv[n] = NULL;
	CHECK_EQ(pipe2(pfd, O_CLOEXEC), 0);
	fflush(NULL);
	s->pid = fork();
	CHECK(s->pid >= 0, "fork: %s", strerror(errno));
	if (!s->pid) {
		/*
		 * Only async-signal-safe calls from here (engine threads may be
		 * running).  The server inherits the source's guest_memfd and
		 * nothing else of ours: not the destination VM, not its memory.
		 */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(pfd[1], 1);
		close_range(3, ~0u, CLOSE_RANGE_CLOEXEC);
		if (gmem >= 0)
			fcntl(gmem, F_SETFD, 0);
		execv(bin, (char *const *)argv);
		_exit(127);
	}
	close(pfd[1]);
	s->out = pfd[0];
	if (!vt_serve_read(s, "\n", 30000) || !(p = strstr(s->obuf, "listening on 127.0.0.1:")))
		CHECK(0, "gmfp-serve did not start: '%s'", s->obuf);
	p += strlen("listening on 127.0.0.1:");
	snprintf(s->port, sizeof(s->port), "%.*s", (int)strspn(p, "0123456789"), p);
	CHECK(s->port[0], "no port in '%s'", s->obuf);
}

int vt_serve_wait(struct vt_serve *s, unsigned int ms)
{
	uint64_t dl = vt_now_ms() + ms;
	int st;

	for (;;) {
		pid_t r = waitpid(s->pid, &st, WNOHANG);

		if (r == s->pid)
			break;
		if (vt_now_ms() > dl) {
			kill(s->pid, SIGKILL);
			waitpid(s->pid, &st, 0);
			s->pid = 0;
			close(s->out);
			return -1;
		}
		usleep(5000);
	}
	s->pid = 0;
	vt_serve_read(s, NULL, 5000);
	close(s->out);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

const char *vt_serve_stop(struct vt_serve *s)
{
	const char *js;

	kill(s->pid, SIGTERM);
	CHECK_EQ(vt_serve_wait(s, 30000), 0);
	js = strstr(s->obuf, "\n{\"connections\"");
	CHECK(js, "no stats JSON in '%s'", s->obuf);
	printf("#   server: %s", js + 1);
	return js + 1;
}

/* ---- a postcopy source and a counting TCP client ---- */

void vt_source_vm(struct vt_vm *v, uint64_t npages, int image_fd, bool (*present)(uint64_t pg))
{
	uint8_t *img = malloc((size_t)npages * PG);
	uint64_t pg;
	int r;

	CHECK(img, "out of memory");
	r = vt_vm_create(v, npages, false, GMFP_POLICY_WAIT);
	if (r == -EOPNOTSUPP) {
		free(img);
		vt_vm_destroy(v);
		SKIP_TEST("no presence tracking");
	}
	CHECK_EQ(r, 0);
	CHECK_EQ(pread(image_fd, img, (size_t)npages * PG, 0), (ssize_t)(npages * PG));
	for (pg = 0; pg < npages; pg++)
		if (!present || present(pg))
			CHECK_EQ(gmfp_gmem_copy(v->gmem, pg * PG, img + pg * PG, PG, 0, NULL), 0);
	free(img);
}

static int counting_tcp_fetch(void *ctx, struct gmfp_fetch *f)
{
	struct vt_counting *c = ctx;
	int r = gmfp_source_fetch(c->tcp, f);

	if (f->npages == 1 && !(f->pgoff % 2)) {
		if (r) {
			atomic_fetch_add(&c->even_single_fail, 1);
			atomic_store(&c->last_even_err, r);
		} else {
			atomic_fetch_add(&c->even_single_ok, 1);
		}
	}
	if (r) {
		atomic_fetch_add(&c->failed, 1);
		atomic_fetch_add(&c->failed_pages, f->npages);
	} else {
		atomic_fetch_add(&c->ok_pages, f->npages);
	}
	return r;
}

struct gmfp_source *vt_counting_source(struct vt_counting *c, const char *port, uint64_t npages)
{
	GMFP_OPTS_INIT(struct gmfp_tcp_opts, to);
	GMFP_OPTS_INIT(struct gmfp_source_ops, ops);
	struct gmfp_source *s;

	memset(c, 0, sizeof(*c));
	c->size = npages * PG;
	to.port = port;
	to.nr_regions = 1;
	to.region_sizes = &c->size;
	to.timeout_ms = 10000;
	to.connect_timeout_ms = 500;
	CHECK_EQ(gmfp_source_tcp(&c->tcp, &to), 0);
	ops.fetch = counting_tcp_fetch;
	ops.max_pages = GMFP_WIRE_MAX_PAGES;
	CHECK_EQ(gmfp_source_new(&s, &ops, c), 0);
	return s;
}
