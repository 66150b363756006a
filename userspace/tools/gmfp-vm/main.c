// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * gmfp-vm: a small reference VMM for guest_memfd presence tracking, with
 * its own guest.  It boots, snapshots, restores lazily and migrates
 * post-copy a VM whose RAM is a presence guest_memfd (shared, or private
 * in a KVM_X86_SW_PROTECTED_VM), using only libgmfp and its tools.
 *
 *   run                 boot, write and verify all RAM, run the compute task
 *   snapshot DIR        the same, then pause and save vCPU state + RAM image
 *   restore [--lazy] DIR  resume a snapshot; --lazy: at once, pages on demand
 *                       (in-process engine, or --pager SOCKET: gmfp-pager)
 *   migrate --postcopy HOST:PORT   boot, run, stop, send the vCPU state to
 *                       HOST:PORT and serve the pages until it has them all
 *   incoming PORT       the destination: resume at once, fetch pages
 *
 * See --help, and docs/gmfp-vm.md for the reading guide.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gmfp_pager.h"
#include "gvm.h"

#define DEFAULT_MEM (256ull << 20)
#define DEFAULT_SEED 0x6d656d6f72792121ull
#ifndef MADV_POPULATE_READ
#define GVM_MADV_POPULATE_READ 22
#else
#define GVM_MADV_POPULATE_READ MADV_POPULATE_READ
#endif

struct opts {
	uint64_t mem;
	uint64_t seed;
	bool private_mem;
	unsigned int policy;		/* 0: automatic */
	unsigned int fallback;
	bool lazy;
	const char *pager;
	const char *postcopy;
	const char *listen;		/* incoming: address to listen on */
	const char *serve;		/* migrate: page server address */
	uint32_t throttle_us;
	uint32_t workers;
	uint32_t batch;			/* engine max_batch, 0: its default */
	int compute_ms;
	int timeout_s;
	int stall_s;
	bool json, progress, quiet, no_apf;
};

/* Everything the summary reports. */
struct summary {
	const char *mode;
	uint64_t ram_size;
	bool private_mem;
	unsigned int policy, fallback;
	const char *pager;
	char source[300];
	char snapshot[300];
	double downtime_ms, downtime_before_ms, setup_ms, present_ms, verified_ms, total_ms, write_ms;
	bool have_engine;
	struct gmfp_engine_stats es;
	bool have_ks;
	struct gmfp_gmem_stats ks;
	/* the guest */
	bool have_verify;
	uint64_t gen, guest_sum, expected_sum, memory_sum, bad_words, first_bad, passes;
	bool have_memory_sum;
	bool have_pp;
	double pp_s;
	uint64_t pp_pages_verified, pp_compute, pp_compute_blocked;
	uint64_t compute_units, compute_state;
	bool compute_ok;
	uint64_t apf_np, apf_ready, apf_broadcast, switches, sync_waits;
	uint64_t np_exits;
	bool guest_apf;
	/* source side */
	bool have_ss;
	struct gvm_server_stats ss;
	double postcopy_ms;
	/* a source that went away */
	bool have_present_check;
	uint64_t present_checked, present_wrong;
	/* verdict */
	int exit_code;
	char error[512];
};

static struct opts O;

static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...)
{
	va_list ap;

	if (O.quiet)
		return;
	va_start(ap, fmt);
	fprintf(stderr, "gmfp-vm: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
}

static void set_error(struct summary *s, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void set_error(struct summary *s, int code, const char *fmt, ...)
{
	va_list ap;

	if (s->exit_code)
		return;
	s->exit_code = code;
	va_start(ap, fmt);
	vsnprintf(s->error, sizeof(s->error), fmt, ap);
	va_end(ap);
}

/* ---- progress ---- */

struct progress {
	double last;
	bool tty, shown;
};

static void progress_show(struct progress *p, const char *what, uint64_t done, uint64_t total,
			  const char *extra)
{
	double t = gvm_now();
	int w = 30, fill, i;
	char bar[64];

	if (O.quiet || !O.progress || !total)
		return;
	if (t - p->last < (p->tty ? 0.2 : 1.0))
		return;
	p->last = t;
	fill = (int)(done * (uint64_t)w / total);
	for (i = 0; i < w; i++)
		bar[i] = i < fill ? '#' : '.';
	bar[w] = 0;
	fprintf(stderr, "%s  [%s] %3d%% %s %" PRIu64 "/%" PRIu64 " %s%s", p->tty ? "\r" : "",
		bar, (int)(done * 100 / total), what, done, total, extra ? extra : "",
		p->tty ? "\033[K" : "\n");
	p->shown = true;
}

static void progress_end(struct progress *p)
{
	if (p->shown && p->tty)
		fprintf(stderr, "\n");
	p->shown = false;
}

/* ---- policy ---- */

/*
 * The default: ASYNC with WAIT as fallback when the kernel has it and the
 * guest enabled async #PF; else WAIT; else EXIT.
 */
static int choose_policy(struct summary *s, bool guest_apf)
{
	int avail, kvm;

	kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0) {
		set_error(s, GVM_EXIT_SETUP, "/dev/kvm: %s", strerror(errno));
		return -1;
	}
	avail = gmfp_vm_policies(kvm);
	close(kvm);
	if (avail <= 0) {
		set_error(s, GVM_EXIT_SETUP, "the kernel has no guest_memfd presence tracking (%s)",
			  avail < 0 ? strerror(-avail) : "no policies");
		return -1;
	}
	s->fallback = O.fallback;
	if (O.policy) {
		if (!(avail & (int)O.policy)) {
			set_error(s, GVM_EXIT_SETUP, "the kernel has no %s policy",
				  gvm_policy_name(O.policy));
			return -1;
		}
		s->policy = O.policy;
	} else if ((avail & GMFP_POLICY_ASYNC) && guest_apf) {
		s->policy = GMFP_POLICY_ASYNC;
	} else if (avail & GMFP_POLICY_WAIT) {
		s->policy = GMFP_POLICY_WAIT;
	} else {
		s->policy = GMFP_POLICY_EXIT;
	}
	if (s->policy == GMFP_POLICY_ASYNC && !(avail & (int)s->fallback))
		s->fallback = avail & GMFP_POLICY_WAIT ? GMFP_POLICY_WAIT : GMFP_POLICY_EXIT;
	return 0;
}

static int create_vm(struct gvm *v, struct summary *s, uint64_t ram_size)
{
	struct gvm_config c = {
		.ram_size = ram_size, .private_mem = O.private_mem,
		.policy = s->policy, .fallback = s->fallback,
	};
	char err[512];
	int r;

	s->ram_size = ram_size;
	s->private_mem = O.private_mem;
	r = gvm_create(v, &c, err, sizeof(err));
	if (r)
		set_error(s, GVM_EXIT_SETUP, "%s", err);
	return r;
}

/* ---- the guest's figures ---- */

static void collect_guest(struct gvm *v, struct summary *s, uint64_t seed)
{
	volatile struct gv_status *st = v->st;

	s->gen = st->gen;
	s->passes = st->verify_passes;
	s->guest_sum = st->verify_sum;
	s->bad_words = st->verify_bad;
	s->first_bad = st->verify_first_bad;
	s->compute_units = st->compute_units;
	s->compute_state = st->compute_state;
	s->compute_ok = gvm_compute_consistent(seed, s->compute_units, s->compute_state);
	s->apf_np = st->apf_not_present;
	s->apf_ready = st->apf_ready;
	s->apf_broadcast = st->apf_broadcast;
	s->switches = st->task_switches;
	s->sync_waits = st->apf_sync_waits;
	s->guest_apf = st->flags & GV_F_APF;
	s->np_exits = atomic_load(&v->np_exits);
	if (!gmfp_gmem_stats(v->gmem, &s->ks))
		s->have_ks = true;
}

/*
 * The verdict on a completed verify pass: the guest read the pattern of its
 * generation everywhere (bad words 0, its checksum = the expected one), and
 * for shared memory the VMM's own read of RAM gives the same checksum.
 */
static void verdict(struct gvm *v, struct summary *s, uint64_t seed)
{
	s->have_verify = true;
	s->expected_sum = gvm_expected_sum(seed, v->st->verify_gen, v->ram_pages);
	if (v->ram) {
		s->memory_sum = gvm_memory_sum(v->ram, v->ram_pages);
		s->have_memory_sum = true;
	}
	if (s->bad_words)
		set_error(s, GVM_EXIT_VERIFY, "the guest found %" PRIu64 " wrong words (first in page %"
			  PRIu64 ")", s->bad_words, s->first_bad);
	else if (s->guest_sum != s->expected_sum)
		set_error(s, GVM_EXIT_VERIFY, "the guest's checksum %#" PRIx64 " is not the expected %#"
			  PRIx64, s->guest_sum, s->expected_sum);
	else if (s->have_memory_sum && s->memory_sum != s->expected_sum)
		set_error(s, GVM_EXIT_VERIFY, "RAM read by the VMM sums to %#" PRIx64 ", expected %#"
			  PRIx64, s->memory_sum, s->expected_sum);
	else if (!s->compute_ok)
		set_error(s, GVM_EXIT_VERIFY, "the compute task's state is not its %" PRIu64
			  " units' result", s->compute_units);
}

/* ---- the summary ---- */

static const char *policy_desc(const struct summary *s, char *buf, size_t len)
{
	if (s->policy == GMFP_POLICY_ASYNC)
		snprintf(buf, len, "async (fallback %s)", gvm_policy_name(s->fallback));
	else
		snprintf(buf, len, "%s", gvm_policy_name(s->policy));
	return buf;
}

static void print_summary(const struct summary *s)
{
	char pol[64];

	printf("gmfp-vm %s: %" PRIu64 " MiB of RAM, %s, policy %s\n", s->mode, s->ram_size >> 20,
	       s->private_mem ? "private (KVM_X86_SW_PROTECTED_VM)" : "shared",
	       policy_desc(s, pol, sizeof(pol)));
	if (s->source[0])
		printf("  pages from        %s\n", s->source);
	if (s->snapshot[0])
		printf("  snapshot          %s\n", s->snapshot);
	if (s->write_ms > 0)
		printf("  boot to verified  %.1f ms (write + verify all of RAM)\n", s->write_ms);
	if (s->downtime_ms > 0 && s->downtime_before_ms > 0)
		printf("  downtime          %.1f ms (%.1f on the source: pause to state sent)\n",
		       s->downtime_ms, s->downtime_before_ms);
	else if (s->downtime_ms > 0 && s->setup_ms > 0)
		printf("  downtime          %.1f ms (%.1f creating the VM and its page source,"
		       " %.1f loading the state and starting)\n", s->downtime_ms, s->setup_ms,
		       s->downtime_ms - s->setup_ms);
	else if (s->downtime_ms > 0)
		printf("  downtime          %.1f ms (vCPU stopped or not yet running)\n",
		       s->downtime_ms);
	if (s->present_ms > 0)
		printf("  fully present     %.1f ms after the vCPU resumed\n", s->present_ms);
	if (s->verified_ms > 0)
		printf("  guest verified    %.1f ms after the vCPU resumed\n", s->verified_ms);
	if (s->postcopy_ms > 0)
		printf("  served for        %.1f ms after the pause\n", s->postcopy_ms);
	if (s->have_engine) {
		printf("  pages             %" PRIu64 ": %" PRIu64 " on demand, %" PRIu64
		       " background (%" PRIu64 " fetches, %" PRIu64 " errors, %" PRIu64 " retries)\n",
		       s->es.pages_total, s->es.pages_demand, s->es.pages_background, s->es.fetches,
		       s->es.errors, s->es.retries);
		printf("  fault latency     p50 %" PRIu64 " us, p99 %" PRIu64 " us, max %" PRIu64
		       " us (%" PRIu64 " demand faults)\n", s->es.lat_p50_us, s->es.lat_p99_us,
		       s->es.lat_max_us, s->es.lat_count);
	}
	if (s->have_ss)
		printf("  pages served      %" PRIu64 " on demand, %" PRIu64 " background (%" PRIu64
		       " requests, %" PRIu64 " connections)\n", s->ss.pages_demand,
		       s->ss.pages_background, s->ss.requests, s->ss.connections);
	if (s->have_pp)
		printf("  during postcopy   %.1f ms: memory task verified %" PRIu64 " pages; compute"
		       " task %" PRIu64 " units, %" PRIu64 " of them while the memory task waited"
		       " for a page\n", s->pp_s * 1000, s->pp_pages_verified, s->pp_compute,
		       s->pp_compute_blocked);
	if (s->apf_np || s->apf_ready || s->np_exits || s->have_pp)
		printf("  vCPU              %" PRIu64 " async \"page not present\", %" PRIu64
		       " \"page ready\" (%" PRIu64 " wake-all), %" PRIu64 " task switches; %" PRIu64
		       " not-present exits\n", s->apf_np, s->apf_ready, s->apf_broadcast,
		       s->switches, s->np_exits);
	if (s->have_ks)
		printf("  kernel            %" PRIu64 " faults, %" PRIu64 " notifications, %" PRIu64
		       " waits%s\n", s->ks.faults, s->ks.notifications, s->ks.waits,
		       s->ks.flags & GMFP_GMEM_FINISHED ? ", tracking finished" : "");
	if (s->have_verify) {
		printf("  checksum          guest %#018" PRIx64 ", expected %#018" PRIx64, s->guest_sum,
		       s->expected_sum);
		if (s->have_memory_sum)
			printf(", VMM's read %#018" PRIx64, s->memory_sum);
		printf(" (generation %" PRIu64 ", %" PRIu64 " bad words)\n", s->gen, s->bad_words);
		printf("  compute task      %" PRIu64 " units, state %s\n", s->compute_units,
		       s->compute_ok ? "consistent" : "WRONG");
	}
	if (s->have_present_check)
		printf("  present pages     %" PRIu64 " checked against the pattern, %" PRIu64
		       " wrong\n", s->present_checked, s->present_wrong);
	if (s->exit_code)
		printf("  verdict           FAILED: %s\n", s->error);
	else
		printf("  verdict           OK\n");
	fflush(stdout);
}

static void print_json(const struct summary *s)
{
	struct jb j;

	jb_open(&j);
	jb_str(&j, "mode", s->mode);
	jb_u64(&j, "ram_bytes", s->ram_size);
	jb_bool(&j, "private", s->private_mem);
	jb_str(&j, "policy", gvm_policy_name(s->policy));
	if (s->policy == GMFP_POLICY_ASYNC)
		jb_str(&j, "fallback", gvm_policy_name(s->fallback));
	if (s->source[0])
		jb_str(&j, "source", s->source);
	if (s->snapshot[0])
		jb_str(&j, "snapshot", s->snapshot);
	jb_dbl(&j, "boot_to_verified_ms", s->write_ms);
	jb_dbl(&j, "downtime_ms", s->downtime_ms);
	if (s->downtime_before_ms > 0)
		jb_dbl(&j, "downtime_on_source_ms", s->downtime_before_ms);
	if (s->setup_ms > 0)
		jb_dbl(&j, "downtime_setup_ms", s->setup_ms);
	jb_dbl(&j, "present_ms", s->present_ms);
	jb_dbl(&j, "verified_ms", s->verified_ms);
	jb_dbl(&j, "served_ms", s->postcopy_ms);
	jb_dbl(&j, "total_ms", s->total_ms);
	if (s->have_engine) {
		jb_obj(&j, "pages");
		jb_u64(&j, "total", s->es.pages_total);
		jb_u64(&j, "present", s->es.pages_present);
		jb_u64(&j, "demand", s->es.pages_demand);
		jb_u64(&j, "background", s->es.pages_background);
		jb_u64(&j, "zero", s->es.pages_zero);
		jb_u64(&j, "fetches", s->es.fetches);
		jb_u64(&j, "errors", s->es.errors);
		jb_u64(&j, "retries", s->es.retries);
		jb_i64(&j, "last_error", s->es.last_error);
		jb_close(&j);
		jb_obj(&j, "fault_latency_us");
		jb_u64(&j, "p50", s->es.lat_p50_us);
		jb_u64(&j, "p99", s->es.lat_p99_us);
		jb_u64(&j, "max", s->es.lat_max_us);
		jb_u64(&j, "count", s->es.lat_count);
		jb_close(&j);
	}
	if (s->have_ss) {
		jb_obj(&j, "served");
		jb_u64(&j, "demand", s->ss.pages_demand);
		jb_u64(&j, "background", s->ss.pages_background);
		jb_u64(&j, "requests", s->ss.requests);
		jb_u64(&j, "connections", s->ss.connections);
		jb_close(&j);
	}
	if (s->have_pp) {
		jb_obj(&j, "postcopy_progress");
		jb_dbl(&j, "seconds", s->pp_s);
		jb_u64(&j, "memory_pages_verified", s->pp_pages_verified);
		jb_u64(&j, "compute_units", s->pp_compute);
		jb_u64(&j, "compute_units_while_memory_waited", s->pp_compute_blocked);
		jb_close(&j);
	}
	jb_obj(&j, "vcpu");
	jb_bool(&j, "guest_async_pf", s->guest_apf);
	jb_u64(&j, "async_not_present", s->apf_np);
	jb_u64(&j, "async_ready", s->apf_ready);
	jb_u64(&j, "async_wake_all", s->apf_broadcast);
	jb_u64(&j, "task_switches", s->switches);
	jb_u64(&j, "not_present_exits", s->np_exits);
	jb_close(&j);
	if (s->have_ks) {
		jb_obj(&j, "kernel");
		jb_u64(&j, "faults", s->ks.faults);
		jb_u64(&j, "notifications", s->ks.notifications);
		jb_u64(&j, "waits", s->ks.waits);
		jb_u64(&j, "present", s->ks.nr_present);
		jb_bool(&j, "finished", s->ks.flags & GMFP_GMEM_FINISHED);
		jb_close(&j);
	}
	if (s->have_verify) {
		jb_obj(&j, "checksum");
		jb_u64(&j, "generation", s->gen);
		jb_u64(&j, "passes", s->passes);
		jb_u64(&j, "guest", s->guest_sum);
		jb_u64(&j, "expected", s->expected_sum);
		if (s->have_memory_sum)
			jb_u64(&j, "vmm", s->memory_sum);
		jb_u64(&j, "bad_words", s->bad_words);
		jb_bool(&j, "ok", !s->bad_words && s->guest_sum == s->expected_sum &&
			(!s->have_memory_sum || s->memory_sum == s->expected_sum));
		jb_close(&j);
		jb_obj(&j, "compute");
		jb_u64(&j, "units", s->compute_units);
		jb_bool(&j, "consistent", s->compute_ok);
		jb_close(&j);
	}
	if (s->have_present_check) {
		jb_obj(&j, "present_check");
		jb_u64(&j, "checked", s->present_checked);
		jb_u64(&j, "wrong", s->present_wrong);
		jb_close(&j);
	}
	jb_bool(&j, "ok", !s->exit_code);
	jb_u64(&j, "exit_code", (uint64_t)s->exit_code);
	if (s->exit_code)
		jb_str(&j, "error", s->error);
	jb_close(&j);
	if (j.oom) {
		jb_free(&j);
		return;
	}
	printf("%.*s\n", (int)j.len, j.buf);
	fflush(stdout);
	jb_free(&j);
}

static int finish(struct summary *s, double t_start)
{
	s->total_ms = (gvm_now() - t_start) * 1000;
	if (O.json)
		print_json(s);
	else
		print_summary(s);
	if (s->exit_code)
		fprintf(stderr, "gmfp-vm: error: %s\n", s->error);
	return s->exit_code;
}

/* ---- boot, run, snapshot ---- */

struct boot_tick {
	struct gvm *v;
	struct progress p;
};

static int boot_tick(void *arg)
{
	struct boot_tick *b = arg;
	volatile struct gv_status *st = b->v->st;
	uint64_t n = b->v->ram_pages;

	if (st->phase == GV_PH_VERIFY)
		progress_show(&b->p, "verify", st->pages_verified, n, NULL);
	else
		progress_show(&b->p, "write", st->pages_written, n, NULL);
	return 0;
}

/*
 * A fresh VM: all of RAM is new, so it is made present as it is (zeroes)
 * at once -- MARK for shared memory; private memory is only ever filled by
 * COPY, here of zeroes -- and tracking is finished.  Then boot, write
 * generation 1 everywhere, verify it, let the compute task run.
 */
static int boot_and_run(struct gvm *v, struct summary *s, uint64_t *boot_ms)
{
	struct boot_tick bt = { .v = v };
	double t0;
	uint64_t seq;
	int r;

	bt.p.tty = isatty(2);
	if (!v->private_mem) {
		r = gmfp_gmem_mark(v->gmem, 0, v->ram_size);
	} else {
		uint64_t off, chunk = 2u << 20;
		void *zero = calloc(1, chunk);

		r = zero ? 0 : -ENOMEM;
		for (off = 0; !r && off < v->ram_size; off += chunk) {
			int64_t c = gmfp_gmem_copy(v->gmem, off, zero, chunk, 0, NULL);

			r = c < 0 ? (int)c : 0;
		}
		free(zero);
	}
	if (!r)
		r = gmfp_gmem_finish(v->gmem);
	if (r) {
		set_error(s, GVM_EXIT_SETUP, "making fresh RAM present: %s", strerror(-r));
		return r;
	}
	r = gvm_boot_setup(v, O.seed);
	if (r) {
		set_error(s, GVM_EXIT_SETUP, "boot setup: %s", strerror(-r));
		return r;
	}
	if (O.no_apf)
		v->st->boot_flags |= GV_BOOT_NO_APF;
	seq = gvm_command(v, GV_CMD_WRITE | GV_CMD_VERIFY, 1);
	t0 = gvm_now();
	r = gvm_start(v);
	if (r) {
		set_error(s, GVM_EXIT_SETUP, "vCPU thread: %s", strerror(-r));
		return r;
	}
	r = gvm_wait_cmd(v, seq, O.timeout_s * 1000, boot_tick, &bt);
	progress_end(&bt.p);
	if (r == -ETIMEDOUT) {
		set_error(s, GVM_EXIT_TIMEOUT, "the guest did not finish writing and verifying in %d s",
			  O.timeout_s);
		return r;
	}
	if (r) {
		set_error(s, r, "%s", v->errmsg);
		return -EIO;
	}
	*boot_ms = (uint64_t)((gvm_now() - t0) * 1000);
	s->write_ms = (gvm_now() - t0) * 1000;
	if (O.compute_ms > 0) {
		r = gvm_sleep(v, O.compute_ms);
		if (r) {
			set_error(s, r, "%s", v->errmsg);
			return -EIO;
		}
	}
	return 0;
}

static int cmd_run(const char *snapdir)
{
	struct summary s;
	struct gvm v;
	double t_start = gvm_now();
	uint64_t boot_ms;
	char err[512];

	memset(&s, 0, sizeof(s));
	memset(&v, 0, sizeof(v));
	v.kvm = v.vm = v.vcpu = v.gmem = -1;
	s.mode = snapdir ? "snapshot" : "run";
	if (choose_policy(&s, !O.no_apf) || create_vm(&v, &s, O.mem))
		goto out;
	if (boot_and_run(&v, &s, &boot_ms))
		goto out;
	gvm_pause(&v);
	if (v.error) {
		set_error(&s, v.error, "%s", v.errmsg);
		goto out;
	}
	collect_guest(&v, &s, O.seed);
	verdict(&v, &s, O.seed);
	if (!s.exit_code && snapdir) {
		if (gvm_snapshot_write(&v, O.seed, snapdir, err, sizeof(err)))
			set_error(&s, GVM_EXIT_SETUP, "%s", err);
		else
			snprintf(s.snapshot, sizeof(s.snapshot), "%.140s/state, %.140s/memory", snapdir,
				 snapdir);
	}
out:
	gvm_destroy(&v);
	return finish(&s, t_start);
}

/* ---- the destination of a lazy restore or a postcopy migration ---- */

struct dest {
	struct gvm v;
	struct summary *s;
	uint64_t seed;
	struct gmfp_source *src;
	struct gmfp_engine *e;
	int pager_sock;
	int ctl;			/* incoming: the control connection */
	double t_resume, t_present, last_change;
	uint64_t seq, cu0, cb0, last_present;
	atomic_bool present, watch_stop;
	pthread_t watcher;
	bool watching;
	pthread_mutex_t pager_lock;	/* one call at a time on the pager socket */
	struct progress p;
};

static uint64_t json_num(const char *json, const char *key)
{
	char pat[80];
	const char *p, *from = strstr(json, "\"engine\":");

	snprintf(pat, sizeof(pat), "\"%s\":", key);
	p = strstr(from ? from : json, pat);
	return p ? strtoull(p + strlen(pat), NULL, 10) : 0;
}

/* The engine's figures, in process or from the pager's session status. */
static void dest_engine_stats(struct dest *d, struct gmfp_engine_stats *es)
{
	memset(es, 0, sizeof(*es));
	es->sz = sizeof(*es);
	if (d->e) {
		gmfp_engine_get_stats(d->e, es);
	} else if (d->pager_sock >= 0) {
		char *json = malloc(GMFP_PAGER_MAX_JSON + 1);
		int n = -ENOMEM;

		pthread_mutex_lock(&d->pager_lock);
		if (json)
			n = gmfp_pager_session_status(d->pager_sock, json, GMFP_PAGER_MAX_JSON + 1);
		pthread_mutex_unlock(&d->pager_lock);
		if (n > 0) {
			es->pages_total = d->v.ram_pages;
			es->pages_present = json_num(json, "pages_present");
			es->pages_demand = json_num(json, "pages_demand");
			es->pages_background = json_num(json, "pages_background");
			es->pages_zero = json_num(json, "pages_zero");
			es->fetches = json_num(json, "fetches");
			es->errors = json_num(json, "errors");
			es->retries = json_num(json, "retries");
			es->lat_count = json_num(json, "lat_count");
			es->lat_p50_us = json_num(json, "lat_p50_us");
			es->lat_p99_us = json_num(json, "lat_p99_us");
			es->lat_max_us = json_num(json, "lat_max_us");
		}
		free(json);
	}
}

static uint64_t dest_present_pages(struct dest *d)
{
	struct gmfp_gmem_stats ks;

	/* gmfp: the kernel's counters (FINISHED once the engine or pager finished it) */
	if (gmfp_gmem_stats(d->v.gmem, &ks))
		return 0;
	if (ks.flags & GMFP_GMEM_FINISHED)
		return d->v.ram_pages;
	return ks.nr_present;
}

static bool peer_closed(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	char c;

	if (poll(&p, 1, 0) <= 0)
		return false;
	return recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) <= 0;
}

static void sample_postcopy(struct dest *d)
{
	volatile struct gv_status *st = d->v.st;
	struct summary *s = d->s;

	s->have_pp = true;
	s->pp_s = d->t_present - d->t_resume;
	if (st->cmd_done_seq >= d->seq)
		s->pp_pages_verified = d->v.ram_pages;
	else if (st->phase == GV_PH_VERIFY)
		s->pp_pages_verified = st->pages_verified;
	s->pp_compute = st->compute_units - d->cu0;
	s->pp_compute_blocked = st->compute_units_blocked - d->cb0;
}

/*
 * Watch for the moment everything is present: gmfp_engine_wait() with the
 * in-process engine (which then FINISHes the guest_memfd), the kernel's
 * FINISHED flag with a pager.  Then sample the guest's progress and tell the
 * source it may stop serving.
 */
static void *watch_thread(void *arg)
{
	struct dest *d = arg;
	struct gmfp_engine_stats es;

	for (;;) {
		if (atomic_load(&d->watch_stop))
			return NULL;
		if (d->e) {
			int r = gmfp_engine_wait(d->e, 200);

			if (r == -ECANCELED)
				return NULL;
			if (r)
				continue;
		} else if (dest_present_pages(d) != d->v.ram_pages) {
			usleep(2000);
			continue;
		}
		break;
	}
	d->t_present = gvm_now();
	sample_postcopy(d);
	atomic_store(&d->present, true);
	if (d->ctl >= 0) {
		dest_engine_stats(d, &es);
		/* the source may stop serving now */
		gvm_send_msg(d->ctl, GV_MIG_DONE, es.pages_demand, es.pages_background, 0, NULL, 0);
	}
	return NULL;
}

static int dest_tick(void *arg)
{
	struct dest *d = arg;
	struct gmfp_engine_stats es;
	char extra[96];
	uint64_t n;

	if (atomic_load(&d->present))
		return 0;
	n = dest_present_pages(d);
	if (n != d->last_present) {
		d->last_present = n;
		d->last_change = gvm_now();
	}
	if (d->ctl >= 0 && peer_closed(d->ctl) && !atomic_load(&d->present)) {
		set_error(d->s, GVM_EXIT_SOURCE, "the source went away %.1f s into the postcopy, "
			  "with %" PRIu64 " of %" PRIu64 " pages present: the guest cannot go on",
			  gvm_now() - d->t_resume, n, d->v.ram_pages);
		return GVM_EXIT_SOURCE;
	}
	if (gvm_now() - d->last_change > O.stall_s) {
		dest_engine_stats(d, &es);
		set_error(d->s, GVM_EXIT_SOURCE, "no page arrived for %d s, %" PRIu64 " of %" PRIu64
			  " present (%" PRIu64 " fetch errors, last: %s)", O.stall_s, n,
			  d->v.ram_pages, es.errors,
			  es.last_error ? strerror((int)-es.last_error) : "none");
		return GVM_EXIT_SOURCE;
	}
	snprintf(extra, sizeof(extra), "verified %" PRIu64, d->v.st->phase == GV_PH_VERIFY ?
		 (uint64_t)d->v.st->pages_verified : 0);
	progress_show(&d->p, "present", n, d->v.ram_pages, extra);
	return 0;
}

/* How the pages come: set up by the command before dest_resume(). */
enum dest_src { SRC_EAGER, SRC_FILE, SRC_TCP };

struct dest_how {
	enum dest_src kind;
	const char *image;		/* FILE / EAGER */
	char host[128], port[16];	/* TCP */
};

static void on_engine_error(void *arg, uint32_t region, uint64_t pgoff, uint32_t npages, int err)
{
	(void)arg;
	(void)region;
	(void)pgoff;
	(void)npages;
	(void)err;
	/* counted in the engine's stats; the tick reports a stall */
}

static int eager_copy(struct dest *d, const char *image)
{
	uint64_t off, chunk = 2u << 20;
	uint8_t *buf = malloc(chunk);
	int fd = open(image, O_RDONLY | O_CLOEXEC), r = 0;

	if (fd < 0 || !buf) {
		r = fd < 0 ? -errno : -ENOMEM;
		goto out;
	}
	for (off = 0; !r && off < d->v.ram_size; off += chunk) {
		ssize_t n = pread(fd, buf, chunk, (off_t)off);
		int64_t c;

		if (n != (ssize_t)chunk) {
			r = n < 0 ? -errno : -EIO;
			break;
		}
		/* gmfp: COPY, the only way into private memory */
		c = gmfp_gmem_copy(d->v.gmem, off, buf, chunk, 0, NULL);
		r = c < 0 ? (int)c : 0;
	}
	if (!r)
		r = gmfp_gmem_finish(d->v.gmem);
out:
	if (fd >= 0)
		close(fd);
	free(buf);
	return r;
}

/*
 * Before the state: the page source and the engine (not started: a
 * postcopy source is still running, its pages are not final yet).
 */
static int dest_source_prepare(struct dest *d, const struct dest_how *h)
{
	struct summary *s = d->s;
	GMFP_OPTS_INIT(struct gmfp_engine_opts, eo);
	uint32_t region;
	int r;

	if (h->kind == SRC_EAGER || O.pager)
		return 0;
	if (h->kind == SRC_FILE) {
		GMFP_OPTS_INIT(struct gmfp_file_opts, fo);

		fo.fd = -1;
		fo.path = h->image;
		/* gmfp: the image as a page source */
		r = gmfp_source_file(&d->src, &fo);
	} else {
		GMFP_OPTS_INIT(struct gmfp_tcp_opts, to);

		to.host = h->host;
		to.port = h->port;
		to.nr_regions = 1;
		to.region_sizes = &d->v.ram_size;
		to.timeout_ms = 5000;
		to.connect_timeout_ms = 2000;
		/* gmfp: the source's page server as a page source */
		r = gmfp_source_tcp(&d->src, &to);
	}
	if (r) {
		set_error(s, GVM_EXIT_SETUP, "page source: %s", strerror(-r));
		return r;
	}
	eo.workers = O.workers;
	eo.max_batch = O.batch;
	eo.bg_order = GMFP_BG_SEQUENTIAL;
	eo.flags = GMFP_ENGINE_FINISH;
	eo.on_error = on_engine_error;
	/* gmfp: the fault engine: demand first, the rest in the background */
	r = gmfp_engine_new(&d->e, d->src, &eo);
	if (!r)
		r = gmfp_engine_add(d->e, d->v.gmem, &region);
	if (r)
		set_error(s, GVM_EXIT_SETUP, "fault engine: %s", strerror(-r));
	return r;
}

/* With the state loaded, in the downtime: start serving. */
static int dest_source_start(struct dest *d, const struct dest_how *h)
{
	struct summary *s = d->s;
	struct gmfp_pager_region reg;
	char msg[GMFP_PAGER_ERRMSG_MAX] = "";
	int r;

	if (h->kind == SRC_EAGER) {
		r = eager_copy(d, h->image);
		if (r)
			set_error(s, GVM_EXIT_SOURCE, "copying %s in: %s", h->image, strerror(-r));
		return r;
	}
	if (O.pager) {
		GMFP_OPTS_INIT(struct gmfp_pager_attach_opts, po);

		memset(&reg, 0, sizeof(reg));
		reg.gmem = d->v.gmem;
		reg.flags = d->v.private_mem ? GMFP_PAGER_PRIVATE : 0;
		reg.size = d->v.ram_size;
		reg.gpa = GV_RAM_GPA;
		po.regions = &reg;
		po.nr_regions = 1;
		if (h->kind == SRC_FILE) {
			po.source = GMFP_PAGER_SRC_FILE;
			po.file_path = h->image;
		} else {
			po.source = GMFP_PAGER_SRC_TCP;
			po.tcp_host = h->host;
			po.tcp_port = h->port;
		}
		po.workers = O.workers;
		po.max_batch = O.batch;
		po.flags = GMFP_PAGER_FINISH;
		po.errmsg = msg;
		po.errmsg_len = sizeof(msg);
		/* gmfp: hand the guest_memfd to the pager daemon */
		r = gmfp_pager_attach(&d->pager_sock, O.pager, &po);
		if (r)
			set_error(s, GVM_EXIT_SETUP, "gmfp-pager at %s: %s%s%s", O.pager,
				  strerror(-r), msg[0] ? ": " : "", msg);
		return r;
	}
	r = gmfp_engine_start(d->e);
	if (r) {
		set_error(s, GVM_EXIT_SETUP, "fault engine: %s", strerror(-r));
		return r;
	}
	d->v.engine = d->e;	/* EXIT policy: the vCPU thread asks it */
	return 0;
}

/* The VM and its page source, ahead of the state (@guest_apf: the policy). */
static int dest_prepare(struct dest *d, uint64_t ram_size, bool guest_apf,
			const struct dest_how *h)
{
	d->p.tty = isatty(2);
	if (choose_policy(d->s, guest_apf) || create_vm(&d->v, d->s, ram_size))
		return -EINVAL;
	return dest_source_prepare(d, h);
}

/*
 * Resume the state in @b lazily (or eagerly) and see the guest's verify
 * pass through.  @t0 is when the downtime began on this side, @before_s
 * what the other side already counted (the source's pause to send).
 */
static int dest_resume(struct dest *d, const struct gv_blob *b, const struct dest_how *h,
		       double t0, double before_s)
{
	struct summary *s = d->s;
	const struct gv_state_hdr *hdr;
	const struct gv_cpu *cpu;
	const uint64_t *map;
	const uint8_t *low;
	char err[512];
	int r;

	if (gvm_blob_parse(b, &hdr, &cpu, &map, &low, err, sizeof(err)) ||
	    gvm_blob_load(&d->v, b, err, sizeof(err))) {
		set_error(s, GVM_EXIT_SETUP, "%s", err);
		return -EINVAL;
	}
	d->seed = hdr->seed;
	/* the memory task reads everything back when it resumes */
	d->seq = gvm_command(&d->v, GV_CMD_VERIFY, 0);
	r = dest_source_start(d, h);
	if (r)
		return r;
	d->cu0 = d->v.st->compute_units;
	d->cb0 = d->v.st->compute_units_blocked;
	r = gvm_start(&d->v);
	if (r) {
		set_error(s, GVM_EXIT_SETUP, "vCPU thread: %s", strerror(-r));
		return r;
	}
	d->t_resume = d->last_change = gvm_now();
	s->downtime_ms = (before_s + d->t_resume - t0) * 1000;
	s->downtime_before_ms = before_s * 1000;
	if (d->ctl >= 0)
		gvm_send_msg(d->ctl, GV_MIG_RESUMED, (uint64_t)(s->downtime_ms * 1000), 0, 0,
			     NULL, 0);
	if (h->kind == SRC_EAGER) {
		atomic_store(&d->present, true);
		d->t_present = d->t_resume;
	} else {
		r = -pthread_create(&d->watcher, NULL, watch_thread, d);
		if (r) {
			set_error(s, GVM_EXIT_SETUP, "thread: %s", strerror(-r));
			return r;
		}
		d->watching = true;
	}

	r = gvm_wait_cmd(&d->v, d->seq, O.timeout_s * 1000, dest_tick, d);
	if (!r) {
		s->verified_ms = (gvm_now() - d->t_resume) * 1000;
		/* everything was read: the last pages are being counted */
		while (!atomic_load(&d->present) && !r) {
			r = dest_tick(d);
			if (!r && !atomic_load(&d->present))
				r = gvm_sleep(&d->v, 20);
			if (!r && gvm_now() - d->t_resume > O.timeout_s)
				r = -ETIMEDOUT;
		}
	}
	progress_end(&d->p);
	if (r == -ETIMEDOUT)
		set_error(s, GVM_EXIT_TIMEOUT, "the guest did not verify its memory in %d s",
			  O.timeout_s);
	else if (r > 0 && !s->exit_code)
		set_error(s, r, "%s", d->v.errmsg);
	/* nothing is installed after this: what is present stays as checked */
	if (d->e)
		gmfp_engine_stop(d->e);
	if (d->watching) {
		atomic_store(&d->watch_stop, true);
		pthread_join(d->watcher, NULL);
		d->watching = false;
	}
	if (atomic_load(&d->present) && h->kind != SRC_EAGER)
		s->present_ms = (d->t_present - d->t_resume) * 1000;
	gvm_pause(&d->v);
	if (d->v.error && !s->exit_code)
		set_error(s, d->v.error, "%s", d->v.errmsg);
	collect_guest(&d->v, s, d->seed);
	if (h->kind != SRC_EAGER) {
		s->have_engine = true;
		dest_engine_stats(d, &s->es);
	}
	if (!s->exit_code) {
		verdict(&d->v, s, d->seed);
	} else if (d->v.ram) {
		int64_t bad = gvm_check_present(&d->v, d->seed, d->v.st->gen, &s->present_checked);

		if (bad >= 0) {
			s->have_present_check = true;
			s->present_wrong = (uint64_t)bad;
			if (bad)
				set_error(s, GVM_EXIT_VERIFY, "%" PRId64 " present pages are wrong", bad);
		}
	}
	return s->exit_code ? -EIO : 0;
}

static void dest_destroy(struct dest *d)
{
	if (d->e)
		gmfp_engine_stop(d->e);
	if (d->watching) {
		atomic_store(&d->watch_stop, true);
		pthread_join(d->watcher, NULL);
	}
	gvm_pause(&d->v);
	if (d->e)
		gmfp_engine_destroy(d->e);
	if (d->src)
		gmfp_source_destroy(d->src);
	if (d->pager_sock >= 0)
		gmfp_pager_detach(d->pager_sock);
	d->v.engine = NULL;
	gvm_destroy(&d->v);
	pthread_mutex_destroy(&d->pager_lock);
}

static void dest_init(struct dest *d, struct summary *s)
{
	memset(d, 0, sizeof(*d));
	d->v.kvm = d->v.vm = d->v.vcpu = d->v.gmem = -1;
	d->pager_sock = -1;
	d->ctl = -1;
	d->s = s;
	pthread_mutex_init(&d->pager_lock, NULL);
}

static int cmd_restore(const char *dir)
{
	struct summary s;
	struct dest d;
	struct dest_how h;
	struct gv_blob b = { 0 };
	char path[4096], image[4096], err[512];
	double t0 = gvm_now();
	struct stat sb;

	memset(&s, 0, sizeof(s));
	memset(&h, 0, sizeof(h));
	dest_init(&d, &s);
	s.mode = O.lazy ? "restore --lazy" : "restore";
	s.pager = O.pager;
	snprintf(path, sizeof(path), "%s/state", dir);
	snprintf(image, sizeof(image), "%s/memory", dir);
	h.kind = O.lazy ? SRC_FILE : SRC_EAGER;
	h.image = image;
	if (gvm_blob_read_file(path, &b, err, sizeof(err))) {
		set_error(&s, GVM_EXIT_SETUP, "%s", err);
		goto out;
	}
	if (stat(image, &sb) || !S_ISREG(sb.st_mode)) {
		set_error(&s, GVM_EXIT_SETUP, "%s: %s", image, strerror(errno ? errno : EINVAL));
		goto out;
	}
	snprintf(s.source, sizeof(s.source), "%.200s (%s)", image,
		 !O.lazy ? "copied in before the vCPU runs" :
		 O.pager ? "served by gmfp-pager" : "served by the in-process fault engine");
	{
		const struct gv_state_hdr *hdr;
		const struct gv_cpu *cpu;
		const uint64_t *map;
		const uint8_t *low;

		if (gvm_blob_parse(&b, &hdr, &cpu, &map, &low, err, sizeof(err))) {
			set_error(&s, GVM_EXIT_SETUP, "%s: %s", path, err);
			goto out;
		}
		if ((uint64_t)sb.st_size != hdr->ram_size) {
			set_error(&s, GVM_EXIT_SOURCE, "%s: %lld bytes, the state says %llu", image,
				  (long long)sb.st_size, (unsigned long long)hdr->ram_size);
			goto out;
		}
		if (!dest_prepare(&d, hdr->ram_size, gvm_cpu_apf_enabled(cpu), &h)) {
			s.setup_ms = (gvm_now() - t0) * 1000;
			dest_resume(&d, &b, &h, t0, 0);
		}
	}
out:
	dest_destroy(&d);
	free(b.buf);
	return finish(&s, t0);
}

static int cmd_incoming(const char *port)
{
	struct summary s;
	struct dest d;
	struct dest_how h;
	struct gv_mig_msg m;
	struct sockaddr_storage peer;
	socklen_t pl = sizeof(peer);
	struct gv_blob b = { 0 };
	char addr[300], err[512];
	double t_start = gvm_now(), t0;
	int lfd, r;

	memset(&s, 0, sizeof(s));
	memset(&h, 0, sizeof(h));
	dest_init(&d, &s);
	s.mode = "incoming (postcopy destination)";
	s.pager = O.pager;
	snprintf(addr, sizeof(addr), "%s:%s", O.listen ? O.listen : "0.0.0.0", port);
	lfd = gvm_listen(addr, 1, NULL, err, sizeof(err));
	if (lfd < 0) {
		set_error(&s, GVM_EXIT_SETUP, "%s", err);
		return finish(&s, t_start);
	}
	note("waiting for the source on %s", addr);
	{
		struct pollfd p = { .fd = lfd, .events = POLLIN };

		r = poll(&p, 1, O.timeout_s * 1000);
	}
	d.ctl = r > 0 ? accept4(lfd, (struct sockaddr *)&peer, &pl, SOCK_CLOEXEC) : -1;
	close(lfd);
	if (d.ctl < 0) {
		set_error(&s, GVM_EXIT_TIMEOUT, "no source connected within %d s", O.timeout_s);
		goto out;
	}
	/*
	 * HELLO: the RAM size, the page server's port, whether the guest took
	 * async #PF.  The VM and its page source are set up now, while the
	 * source still runs: none of it counts as downtime.
	 */
	r = gvm_recv_msg(d.ctl, &m, NULL, O.timeout_s * 1000);
	if (r || m.type != GV_MIG_HELLO) {
		set_error(&s, GVM_EXIT_SOURCE, "no hello from the source: %s",
			  r ? strerror(-r) : "unexpected message");
		goto out;
	}
	h.kind = SRC_TCP;
	if (peer.ss_family == AF_INET6)
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&peer)->sin6_addr, h.host,
			  sizeof(h.host));
	else
		inet_ntop(AF_INET, &((struct sockaddr_in *)&peer)->sin_addr, h.host,
			  sizeof(h.host));
	snprintf(h.port, sizeof(h.port), "%u", (unsigned int)m.b);
	snprintf(s.source, sizeof(s.source), "page server %s:%s (%s)", h.host, h.port,
		 O.pager ? "through gmfp-pager" : "in-process fault engine");
	if (dest_prepare(&d, m.a, m.c & GV_F_APF, &h))
		goto out;
	r = gvm_send_msg(d.ctl, GV_MIG_READY, 0, 0, 0, NULL, 0);
	if (!r)
		r = gvm_recv_msg(d.ctl, &m, (void **)&b.buf, O.timeout_s * 1000);
	t0 = gvm_now();
	if (r || m.type != GV_MIG_STATE || !b.buf) {
		set_error(&s, GVM_EXIT_SOURCE, "no vCPU state from the source: %s",
			  r ? strerror(-r) : "unexpected message");
		goto out;
	}
	b.len = m.len;
	dest_resume(&d, &b, &h, t0, (double)m.b / 1e6);
out:
	if (d.ctl >= 0 && s.exit_code)
		gvm_send_msg(d.ctl, GV_MIG_FAILED, 0, 0, 0, NULL, 0);
	if (d.ctl >= 0)
		close(d.ctl);
	d.ctl = -1;
	dest_destroy(&d);
	free(b.buf);
	return finish(&s, t_start);
}

/* ---- the source of a postcopy migration ---- */

static int cmd_migrate(const char *dest)
{
	struct summary s;
	struct gvm v;
	struct gvm_server *srv = NULL;
	struct gv_blob b = { 0 };
	struct gv_mig_msg m;
	struct progress p = { .tty = isatty(2) };
	double t_start = gvm_now(), t_pause;
	char err[512];
	uint64_t boot_ms;
	uint16_t port = 0;
	int ctl, r;
	bool done = false;

	memset(&s, 0, sizeof(s));
	memset(&v, 0, sizeof(v));
	v.kvm = v.vm = v.vcpu = v.gmem = -1;
	s.mode = "migrate --postcopy (source)";
	if (O.private_mem) {
		set_error(&s, GVM_EXIT_USAGE, "private memory cannot be read, hence not served: "
			  "a postcopy source is a shared-memory VM (the destination may be private)");
		return finish(&s, t_start);
	}
	ctl = gvm_connect(dest, 30000, err, sizeof(err));
	if (ctl < 0) {
		set_error(&s, GVM_EXIT_SETUP, "%s", err);
		return finish(&s, t_start);
	}
	if (choose_policy(&s, !O.no_apf) || create_vm(&v, &s, O.mem))
		goto out;
	r = gvm_server_start(&srv, &v, O.serve ? O.serve : "0.0.0.0:0", O.throttle_us, &port);
	if (r) {
		set_error(&s, GVM_EXIT_SETUP, "page server: %s", strerror(-r));
		goto out;
	}
	if (boot_and_run(&v, &s, &boot_ms))
		goto out;
	/*
	 * While the guest runs: map every page in this process (the page
	 * server reads through the mapping), and let the destination set up.
	 */
	madvise(v.ram, v.ram_size, GVM_MADV_POPULATE_READ);
	r = gvm_send_msg(ctl, GV_MIG_HELLO, v.ram_size, port, v.st->flags, NULL, 0);
	if (!r)
		r = gvm_recv_msg(ctl, &m, NULL, 60000);
	if (r || m.type != GV_MIG_READY) {
		set_error(&s, GVM_EXIT_SETUP, "the destination is not ready: %s",
			  r ? strerror(-r) : "it failed");
		goto out;
	}

	/* stop: from here on the source's RAM does not change */
	t_pause = gvm_now();
	gvm_pause(&v);
	if (v.error) {
		set_error(&s, v.error, "%s", v.errmsg);
		goto out;
	}
	collect_guest(&v, &s, O.seed);
	r = gvm_state_blob(&v, O.seed, &b);
	if (!r)
		r = gvm_send_msg(ctl, GV_MIG_STATE, port,
				 (uint64_t)((gvm_now() - t_pause) * 1e6), v.ram_pages, b.buf, b.len);
	if (r) {
		set_error(&s, GVM_EXIT_SETUP, "sending the vCPU state to %s: %s", dest, strerror(-r));
		goto out;
	}
	snprintf(s.source, sizeof(s.source), "this VM's guest_memfd, served on port %u", port);
	r = gvm_recv_msg(ctl, &m, NULL, 60000);
	if (r || m.type != GV_MIG_RESUMED) {
		set_error(&s, GVM_EXIT_SOURCE, "the destination did not resume: %s",
			  r ? strerror(-r) : "it failed");
		goto out;
	}
	/* pause to the destination's word that it runs: an upper bound */
	s.downtime_ms = (gvm_now() - t_pause) * 1000;
	note("the destination resumed after %.1f ms of downtime (%.1f ms by its clock); "
	     "serving its pages", s.downtime_ms, (double)m.a / 1000);
	/* keep serving until the destination has every page */
	while (!done) {
		struct pollfd pf = { .fd = ctl, .events = POLLIN };
		struct gvm_server_stats ss;

		if (gvm_now() - t_pause > O.timeout_s) {
			set_error(&s, GVM_EXIT_TIMEOUT, "the destination did not finish in %d s",
				  O.timeout_s);
			break;
		}
		gvm_server_stats(srv, &ss);
		progress_show(&p, "served", ss.pages_demand + ss.pages_background, v.ram_pages, NULL);
		if (poll(&pf, 1, 100) <= 0)
			continue;
		r = gvm_recv_msg(ctl, &m, NULL, 5000);
		if (r) {
			set_error(&s, GVM_EXIT_SOURCE, "the destination went away before it had every"
				  " page: %s", strerror(-r));
			break;
		}
		if (m.type == GV_MIG_DONE)
			done = true;
		else if (m.type == GV_MIG_FAILED)
			set_error(&s, GVM_EXIT_SOURCE, "the destination failed");
		if (s.exit_code)
			break;
	}
	progress_end(&p);
	s.postcopy_ms = (gvm_now() - t_pause) * 1000;
	verdict(&v, &s, O.seed);
out:
	if (srv) {
		gvm_server_stats(srv, &s.ss);
		s.have_ss = true;
		gvm_server_stop(srv);
	}
	close(ctl);
	free(b.buf);
	gvm_destroy(&v);
	return finish(&s, t_start);
}

/* ---- command line ---- */

static void usage(FILE *f)
{
	fprintf(f,
"usage: gmfp-vm COMMAND [OPTIONS] [ARG]\n"
"A small reference VMM for guest_memfd presence tracking, with its own guest:\n"
"a memory task that writes and verifies all of RAM, a compute task, async #PF.\n"
"\n"
"commands:\n"
"  run                        boot, write + verify RAM, run the compute task\n"
"  snapshot DIR               the same, then pause and save DIR/state, DIR/memory\n"
"  restore [--lazy] DIR       resume a snapshot (--lazy: at once, pages on demand)\n"
"  migrate --postcopy HOST:PORT  boot, run, stop, send the vCPU state to an\n"
"                             'incoming' VMM, serve RAM until it has it all\n"
"  incoming PORT              wait for a source, resume at once, fetch the pages\n"
"\n"
"options:\n"
"  -m, --mem SIZE             RAM (run, snapshot, migrate), K/M/G, a multiple of\n"
"                             2 MiB; default 256M\n"
"  -p, --private              KVM_X86_SW_PROTECTED_VM with private RAM (filled\n"
"                             only by COPY; not for a migration source)\n"
"  -P, --policy exit|wait|async  what a vCPU does on a missing page; default:\n"
"                             async if the kernel has it and the guest enabled\n"
"                             async #PF, else wait\n"
"      --fallback exit|wait   with async, for faults that cannot be async (wait)\n"
"      --lazy                 restore: start before the memory is there\n"
"      --pager SOCKET         restore/incoming: have gmfp-pager at SOCKET serve\n"
"                             the faults instead of the in-process engine\n"
"      --postcopy HOST:PORT   migrate: the destination\n"
"      --listen HOST          incoming: address to listen on (0.0.0.0)\n"
"      --serve HOST:PORT      migrate: page server address (0.0.0.0:0)\n"
"      --throttle-us N        migrate: the page server takes N us a page (a slow\n"
"                             link, for tests and demos)\n"
"  -w, --workers N            fault engine threads (3)\n"
"      --batch N              pages per fetch and COPY, 1..256 (the engine's 64);\n"
"                             smaller: a demand fault waits less behind the\n"
"                             background runs in flight\n"
"      --compute-ms MS        after verifying, let the compute task run (200)\n"
"      --seed N               of the memory pattern (a fixed default)\n"
"      --no-async-pf          the guest does not enable async #PF\n"
"      --timeout S            give up after S seconds (600)\n"
"      --stall S              give up when no page arrived for S seconds (30)\n"
"  -j, --json                 the summary as one JSON object on stdout\n"
"      --progress             progress lines on stderr (a bar on a terminal)\n"
"  -q, --quiet                no notes on stderr\n"
"  -h, --help                 this text\n"
"\n"
"exit status: 0 ok; 1 memory or compute state wrong; 2 usage; 3 pages could\n"
"not be had (source gone, image unreadable); 4 setup (KVM, presence tracking,\n"
"files, network); 5 guest panic or unexpected exit; 6 timeout.\n");
}

static int parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v = strtoull(s, &end, 0);
	int shift = 0;

	if (end == s)
		return -EINVAL;
	switch (*end) {
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	case 0: break;
	default: return -EINVAL;
	}
	if (*end == 'i' && end[1] == 'B')
		end += 2;
	else if (*end == 'B')
		end++;
	if (*end || v > (UINT64_MAX >> shift))
		return -EINVAL;
	*out = (uint64_t)v << shift;
	return 0;
}

static int parse_uint(const char *s, unsigned long max, unsigned long *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 0);
	if (end == s || *end || errno || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

enum {
	OPT_FALLBACK = 256, OPT_LAZY, OPT_PAGER, OPT_POSTCOPY, OPT_LISTEN, OPT_SERVE,
	OPT_THROTTLE, OPT_BATCH, OPT_COMPUTE, OPT_SEED, OPT_NO_APF, OPT_TIMEOUT, OPT_STALL,
	OPT_PROGRESS,
};

static const struct option longopts[] = {
	{ "mem", required_argument, NULL, 'm' },
	{ "private", no_argument, NULL, 'p' },
	{ "policy", required_argument, NULL, 'P' },
	{ "fallback", required_argument, NULL, OPT_FALLBACK },
	{ "lazy", no_argument, NULL, OPT_LAZY },
	{ "pager", required_argument, NULL, OPT_PAGER },
	{ "postcopy", required_argument, NULL, OPT_POSTCOPY },
	{ "listen", required_argument, NULL, OPT_LISTEN },
	{ "serve", required_argument, NULL, OPT_SERVE },
	{ "throttle-us", required_argument, NULL, OPT_THROTTLE },
	{ "workers", required_argument, NULL, 'w' },
	{ "batch", required_argument, NULL, OPT_BATCH },
	{ "compute-ms", required_argument, NULL, OPT_COMPUTE },
	{ "seed", required_argument, NULL, OPT_SEED },
	{ "no-async-pf", no_argument, NULL, OPT_NO_APF },
	{ "timeout", required_argument, NULL, OPT_TIMEOUT },
	{ "stall", required_argument, NULL, OPT_STALL },
	{ "json", no_argument, NULL, 'j' },
	{ "progress", no_argument, NULL, OPT_PROGRESS },
	{ "quiet", no_argument, NULL, 'q' },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

static int bad_usage(const char *fmt, const char *arg)
{
	fprintf(stderr, "gmfp-vm: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\n(gmfp-vm --help for the options)\n");
	return GVM_EXIT_USAGE;
}

int main(int argc, char **argv)
{
	const char *cmd, *arg = NULL;
	unsigned long u;
	int c;

	O.mem = DEFAULT_MEM;
	O.seed = DEFAULT_SEED;
	O.fallback = GMFP_POLICY_WAIT;
	O.workers = 3;
	O.compute_ms = 200;
	O.timeout_s = 600;
	O.stall_s = 30;
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
		usage(stdout);
		return 0;
	}
	if (argc < 2 || argv[1][0] == '-') {
		usage(stderr);
		return GVM_EXIT_USAGE;
	}
	cmd = argv[1];
	optind = 2;
	while ((c = getopt_long(argc, argv, "m:pP:w:jqh", longopts, NULL)) != -1) {
		switch (c) {
		case 'm':
			if (parse_size(optarg, &O.mem))
				return bad_usage("--mem %s: not a size", optarg);
			break;
		case 'p': O.private_mem = true; break;
		case 'P':
			if (gvm_parse_policy(optarg, &O.policy))
				return bad_usage("--policy %s: exit, wait or async", optarg);
			break;
		case OPT_FALLBACK:
			if (gvm_parse_policy(optarg, &O.fallback) || O.fallback == GMFP_POLICY_ASYNC)
				return bad_usage("--fallback %s: exit or wait", optarg);
			break;
		case OPT_LAZY: O.lazy = true; break;
		case OPT_PAGER: O.pager = optarg; break;
		case OPT_POSTCOPY: O.postcopy = optarg; break;
		case OPT_LISTEN: O.listen = optarg; break;
		case OPT_SERVE: O.serve = optarg; break;
		case OPT_THROTTLE:
			if (parse_uint(optarg, 10000000, &u))
				return bad_usage("--throttle-us %s: a number of microseconds", optarg);
			O.throttle_us = (uint32_t)u;
			break;
		case 'w':
			if (parse_uint(optarg, 64, &u) || !u)
				return bad_usage("--workers %s: 1 to 64", optarg);
			O.workers = (uint32_t)u;
			break;
		case OPT_BATCH:
			if (parse_uint(optarg, 256, &u) || !u)
				return bad_usage("--batch %s: 1 to 256", optarg);
			O.batch = (uint32_t)u;
			break;
		case OPT_COMPUTE:
			if (parse_uint(optarg, 3600000, &u))
				return bad_usage("--compute-ms %s: milliseconds", optarg);
			O.compute_ms = (int)u;
			break;
		case OPT_SEED:
			if (parse_size(optarg, &O.seed))
				return bad_usage("--seed %s: a number", optarg);
			break;
		case OPT_NO_APF: O.no_apf = true; break;
		case OPT_TIMEOUT:
			if (parse_uint(optarg, 86400, &u) || !u)
				return bad_usage("--timeout %s: seconds", optarg);
			O.timeout_s = (int)u;
			break;
		case OPT_STALL:
			if (parse_uint(optarg, 86400, &u) || !u)
				return bad_usage("--stall %s: seconds", optarg);
			O.stall_s = (int)u;
			break;
		case 'j': O.json = true; break;
		case OPT_PROGRESS: O.progress = true; break;
		case 'q': O.quiet = true; break;
		case 'h': usage(stdout); return 0;
		default: return bad_usage("%s: bad option", argv[optind - 1]);
		}
	}
	if (optind < argc)
		arg = argv[optind++];
	if (optind < argc)
		return bad_usage("%s: one argument too many", argv[optind]);
	if (O.pager && strcmp(cmd, "restore") && strcmp(cmd, "incoming"))
		return bad_usage("--pager is for restore and incoming, not %s", cmd);
	if (O.lazy && strcmp(cmd, "restore"))
		return bad_usage("--lazy is for restore, not %s", cmd);
	if (O.pager && !strcmp(cmd, "restore") && !O.lazy)
		return bad_usage("--pager serves a lazy restore: add --lazy%s", "");

	if (!strcmp(cmd, "run")) {
		if (arg)
			return bad_usage("run takes no argument (%s)", arg);
		return cmd_run(NULL);
	}
	if (!strcmp(cmd, "snapshot")) {
		if (!arg)
			return bad_usage("snapshot DIR: the directory is missing%s", "");
		if (O.private_mem)
			return bad_usage("a private VM's memory cannot be read: no snapshot of it%s",
					 "");
		return cmd_run(arg);
	}
	if (!strcmp(cmd, "restore")) {
		if (!arg)
			return bad_usage("restore DIR: the snapshot directory is missing%s", "");
		return cmd_restore(arg);
	}
	if (!strcmp(cmd, "migrate")) {
		if (!O.postcopy && arg)
			O.postcopy = arg;
		else if (arg)
			return bad_usage("migrate: %s: one destination only", arg);
		if (!O.postcopy)
			return bad_usage("migrate --postcopy HOST:PORT: the destination is missing%s",
					 "");
		return cmd_migrate(O.postcopy);
	}
	if (!strcmp(cmd, "incoming")) {
		if (!arg)
			return bad_usage("incoming PORT: the port is missing%s", "");
		if (parse_uint(arg, 65535, &u) || !u)
			return bad_usage("incoming %s: a port number", arg);
		return cmd_incoming(arg);
	}
	return bad_usage("%s: unknown command (run, snapshot, restore, migrate, incoming)", cmd);
}
