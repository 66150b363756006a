// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * gmfp-vm's parts that need no KVM, on the host: the checks it makes of
 * the guest (the checksum, the compute task's state, the page order), the
 * postcopy page server over loopback through gmfp_source_tcp(), the
 * control connection's messages, the JSON builder, and the command line
 * (./build/rel/bin/gmfp-vm, or $GMFP_VM).  The whole VMM runs against the
 * real kernel in userspace/tests/vm/vmm_vm_test.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "unit.h"
#include "../../tools/gmfp-vm/report.c"
#include "../../tools/gmfp-vm/serve.c"

/* The guest's compute task, step for step (guest/guest.c: cpu_task). */
static void test_compute_state(void **state)
{
	uint64_t seed = 1234567, x = GV_COMPUTE_SEED(seed), n;
	int i;

	(void)state;
	assert_true(gvm_compute_consistent(seed, 0, 0));
	for (n = 1; n <= 50; n++) {
		for (i = 0; i < GV_UNIT_STEPS; i++)
			x = x * GV_LCG_A + GV_LCG_C;
		assert_true(gvm_compute_consistent(seed, n, x));
		/* the state published, the count not yet: one unit ahead is fine */
		if (n > 1)
			assert_true(gvm_compute_consistent(seed, n - 1, x));
		assert_false(gvm_compute_consistent(seed, n, x ^ 1));
		assert_false(gvm_compute_consistent(seed + 1, n, x));
		assert_false(gvm_compute_consistent(seed, n + 2, x));
	}
}

static void fill(uint8_t *mem, uint64_t seed, uint64_t gen, uint64_t npages)
{
	uint64_t p, j;

	for (p = 0; p < npages; p++) {
		uint64_t *w = (uint64_t *)(mem + p * PG), base = gv_page_base(seed, gen, p);

		for (j = 0; j < GV_WORDS; j++)
			w[j] = base ^ (j * GV_WORD_MUL);
	}
}

static void test_checksum(void **state)
{
	const uint64_t np = 64;
	uint8_t *mem = malloc(np * PG);
	uint64_t sum;

	(void)state;
	assert_non_null(mem);
	fill(mem, 99, 3, np);
	sum = gvm_expected_sum(99, 3, np);
	assert_int_equal(gvm_memory_sum(mem, np), sum);
	assert_int_not_equal(gvm_expected_sum(99, 4, np), sum);
	assert_int_not_equal(gvm_expected_sum(98, 3, np), sum);
	/* one word wrong, two words swapped, a zero page: all seen */
	((uint64_t *)mem)[7] ^= 1ull << 40;
	assert_int_not_equal(gvm_memory_sum(mem, np), sum);
	((uint64_t *)mem)[7] ^= 1ull << 40;
	{
		uint64_t *w = (uint64_t *)(mem + 5 * PG), t = w[1];

		w[1] = w[2];
		w[2] = t;
		assert_int_not_equal(gvm_memory_sum(mem, np), sum);
		w[2] = w[1];
		w[1] = t;
	}
	memset(mem + 9 * PG, 0, PG);
	assert_int_not_equal(gvm_memory_sum(mem, np), sum);
	free(mem);
}

/* k * stride mod n visits every page exactly once. */
static void test_stride(void **state)
{
	static const uint64_t sizes[] = { 1, 2, 3, 4, 5, 512, 1000, 4096, 6144, 65536, 98304 };
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		uint64_t n = sizes[i], s = gvm_pick_stride(n, 7), p = 0, k;
		uint8_t *seen = calloc(n, 1);

		assert_non_null(seen);
		assert_true(s >= 1 && (s < n || n == 1));
		for (k = 0; k < n; k++) {
			assert_int_equal(seen[p], 0);
			seen[p] = 1;
			p += s;
			if (p >= n)
				p -= n;
		}
		free(seen);
	}
}

/* The postcopy source's page server, fetched from like the destination does. */
static void test_page_server(void **state)
{
	const uint64_t np = 512;
	GMFP_OPTS_INIT(struct gmfp_tcp_opts, to);
	struct gvm_server_stats ss;
	struct gvm_server *srv;
	struct gmfp_source *src;
	struct gvm v;
	char port[16];
	uint8_t *buf = malloc(64 * PG);
	uint64_t size = np * PG;
	uint16_t p;
	int r;

	(void)state;
	memset(&v, 0, sizeof(v));
	v.ram_size = size;
	v.ram_pages = np;
	v.ram = malloc(size);
	assert_non_null(v.ram);
	assert_non_null(buf);
	fill(v.ram, 5, 1, np);
	assert_int_equal(gvm_server_start(&srv, &v, "127.0.0.1:0", 0, &p), 0);
	snprintf(port, sizeof(port), "%u", p);
	to.host = "127.0.0.1";
	to.port = port;
	to.nr_regions = 1;
	to.region_sizes = &size;
	assert_int_equal(gmfp_source_tcp(&src, &to), 0);
	{
		struct gmfp_fetch f = { .region = 0, .flags = GMFP_FETCH_DEMAND, .pgoff = 300,
					.npages = 1, .buf = buf };
		uint64_t zero[1] = { 0 };

		f.zero = zero;
		assert_int_equal(gmfp_source_fetch(src, &f), 0);
		assert_memory_equal(buf, v.ram + 300 * PG, PG);
		f.flags = 0;
		f.pgoff = 0;
		f.npages = 64;
		assert_int_equal(gmfp_source_fetch(src, &f), 0);
		assert_memory_equal(buf, v.ram, 64 * PG);
		/* outside the region: refused, the source fails the fetch */
		f.pgoff = np - 1;
		f.npages = 2;
		r = gmfp_source_fetch(src, &f);
		assert_true(r < 0);
	}
	gmfp_source_destroy(src);
	gvm_server_stats(srv, &ss);
	assert_int_equal(ss.pages_demand, 1);
	assert_int_equal(ss.pages_background, 64);
	assert_true(ss.connections >= 1);
	gvm_server_stop(srv);
	free(v.ram);
	free(buf);
}

/* A private VM (no mapping of RAM) is not served. */
static void test_page_server_private(void **state)
{
	struct gvm_server *srv = NULL;
	struct gvm v;
	uint16_t p;

	(void)state;
	memset(&v, 0, sizeof(v));
	v.ram_size = PG;
	assert_int_equal(gvm_server_start(&srv, &v, "127.0.0.1:0", 0, &p), -EOPNOTSUPP);
	assert_null(srv);
}

static void test_messages(void **state)
{
	struct gv_mig_msg m;
	char payload[1000], *got;
	int sv[2];

	(void)state;
	memset(payload, 'x', sizeof(payload));
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_int_equal(gvm_send_msg(sv[0], GV_MIG_STATE, 1, 2, 3, payload, sizeof(payload)), 0);
	assert_int_equal(gvm_recv_msg(sv[1], &m, (void **)&got, 1000), 0);
	assert_int_equal(m.type, GV_MIG_STATE);
	assert_int_equal(m.a, 1);
	assert_int_equal(m.b, 2);
	assert_int_equal(m.c, 3);
	assert_int_equal(m.len, sizeof(payload));
	assert_memory_equal(got, payload, sizeof(payload));
	free(got);
	/* nothing there: a timeout */
	assert_int_equal(gvm_recv_msg(sv[1], &m, NULL, 50), -ETIMEDOUT);
	/* garbage */
	memset(&m, 0, sizeof(m));
	assert_int_equal(write(sv[0], &m, sizeof(m)), (ssize_t)sizeof(m));
	assert_int_equal(gvm_recv_msg(sv[1], &m, NULL, 1000), -EPROTO);
	/* the peer is gone */
	close(sv[0]);
	assert_int_equal(gvm_recv_msg(sv[1], &m, NULL, 1000), -EPIPE);
	close(sv[1]);
}

static void test_json(void **state)
{
	struct jb j;

	(void)state;
	jb_open(&j);
	jb_str(&j, "s", "a\"b\\c\n");
	jb_obj(&j, "o");
	jb_u64(&j, "u", 18446744073709551615ull);
	jb_i64(&j, "i", -5);
	jb_close(&j);
	jb_bool(&j, "t", true);
	jb_dbl(&j, "d", 1.5);
	jb_close(&j);
	assert_false(j.oom);
	assert_string_equal(j.buf, "{\"s\":\"a\\\"b\\\\c\\u000a\",\"o\":{\"u\":18446744073709551615,"
			    "\"i\":-5},\"t\":true,\"d\":1.500}");
	jb_free(&j);
}

static const char *vm_bin;

static int run_tool(const char *const *args)
{
	const char *argv[16];
	int n = 0, st;
	pid_t pid;

	argv[n++] = vm_bin;
	for (; *args; args++)
		argv[n++] = *args;
	argv[n] = NULL;
	pid = fork();
	if (!pid) {
		int null = open("/dev/null", O_WRONLY);

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(null, 1);
		dup2(null, 2);
		execv(vm_bin, (char **)argv);
		_exit(127);
	}
	assert_true(pid > 0);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	return WEXITSTATUS(st);
}

static void test_command_line(void **state)
{
	static const char *help[] = { "--help", NULL };
	static const char *none[] = { NULL };
	static const char *bogus[] = { "bogus", NULL };
	static const char *nodir[] = { "snapshot", NULL };
	static const char *badmem[] = { "run", "--mem", "12Q", NULL };
	static const char *badpol[] = { "run", "--policy", "sometimes", NULL };
	static const char *twoargs[] = { "restore", "a", "b", NULL };
	static const char *pager[] = { "run", "--pager", "/x", NULL };
	static const char *lazy[] = { "incoming", "--lazy", "7070", NULL };
	static const char *port[] = { "incoming", "70000", NULL };
	static const char *privsnap[] = { "snapshot", "--private", "/tmp/x", NULL };
	static const char *privsrc[] = { "migrate", "--private", "--postcopy", "127.0.0.1:1", NULL };
	static const char *nodest[] = { "migrate", NULL };

	(void)state;
	assert_int_equal(access(vm_bin, X_OK), 0);
	assert_int_equal(run_tool(help), 0);
	assert_int_equal(run_tool(none), 2);
	assert_int_equal(run_tool(bogus), 2);
	assert_int_equal(run_tool(nodir), 2);
	assert_int_equal(run_tool(badmem), 2);
	assert_int_equal(run_tool(badpol), 2);
	assert_int_equal(run_tool(twoargs), 2);
	assert_int_equal(run_tool(pager), 2);
	assert_int_equal(run_tool(lazy), 2);
	assert_int_equal(run_tool(port), 2);
	assert_int_equal(run_tool(privsnap), 2);
	assert_int_equal(run_tool(privsrc), 2);
	assert_int_equal(run_tool(nodest), 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_compute_state),
		cmocka_unit_test(test_checksum),
		cmocka_unit_test(test_stride),
		cmocka_unit_test(test_page_server),
		cmocka_unit_test(test_page_server_private),
		cmocka_unit_test(test_messages),
		cmocka_unit_test(test_json),
		cmocka_unit_test(test_command_line),
	};

	vm_bin = getenv("GMFP_VM");
	if (!vm_bin)
		vm_bin = "./build/rel/bin/gmfp-vm";
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
