// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Engine stats as JSON: the output is parsed back with a strict little
 * parser (objects, arrays, plain keys, integers) into "path = number" pairs
 * and compared with the struct, and snprintf() semantics are checked at
 * every buffer length with exact-size heap buffers so ASan sees any
 * overrun.
 */
#include <inttypes.h>

#include "unit.h"

#define MAX_ITEMS 128

struct item {
	char path[64];
	char num[32];
};

struct parsed {
	struct item it[MAX_ITEMS];
	unsigned int n;
};

static const char *ws(const char *p)
{
	while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
		p++;
	return p;
}

static const char *parse_value(const char *p, const char *path, struct parsed *out);

static const char *parse_number(const char *p, const char *path, struct parsed *out)
{
	const char *s = p;
	struct item *it;

	if (*p == '-')
		p++;
	if (*p == '0')
		p++;	/* JSON: no leading zeros */
	else if (*p >= '1' && *p <= '9')
		while (*p >= '0' && *p <= '9')
			p++;
	else
		return NULL;
	if ((size_t)(p - s) >= sizeof(it->num) || out->n == MAX_ITEMS)
		return NULL;
	it = &out->it[out->n++];
	snprintf(it->path, sizeof(it->path), "%s", path);
	memcpy(it->num, s, (size_t)(p - s));
	it->num[p - s] = '\0';
	return p;
}

/*
 * After a member or element (@p NULL if it did not parse): past @close
 * with *@end set if the container ends there, past the ',' if another
 * follows, NULL for anything else.
 */
static const char *next_item(const char *p, char close, bool *end)
{
	if (!p)
		return NULL;
	p = ws(p);
	*end = *p == close;
	return *end || *p == ',' ? p + 1 : NULL;
}

static const char *parse_object(const char *p, const char *path, struct parsed *out)
{
	p = ws(p + 1);
	if (*p == '}')
		return p + 1;
	for (;;) {
		char sub[64], key[48];
		size_t k = 0;
		bool end;

		if (*p != '"')
			return NULL;
		for (p++; *p != '"'; p++) {
			/* Our keys are plain identifiers: no escapes expected. */
			if (!*p || *p == '\\' || (unsigned char)*p < 0x20 ||
			    k + 1 >= sizeof(key))
				return NULL;
			key[k++] = *p;
		}
		key[k] = '\0';
		p = ws(p + 1);
		if (*p != ':')
			return NULL;
		snprintf(sub, sizeof(sub), "%s%s%s", path, *path ? "." : "", key);
		p = next_item(parse_value(p + 1, sub, out), '}', &end);
		if (!p || end)
			return p;
		p = ws(p);
	}
}

static const char *parse_array(const char *p, const char *path, struct parsed *out)
{
	unsigned int i = 0;

	p = ws(p + 1);
	if (*p == ']')
		return p + 1;
	for (;;) {
		char sub[64];
		bool end;

		snprintf(sub, sizeof(sub), "%s[%u]", path, i++);
		p = next_item(parse_value(p, sub, out), ']', &end);
		if (!p || end)
			return p;
	}
}

static const char *parse_value(const char *p, const char *path, struct parsed *out)
{
	p = ws(p);
	if (*p == '{')
		return parse_object(p, path, out);
	if (*p == '[')
		return parse_array(p, path, out);
	return parse_number(p, path, out);
}

/* The whole text is exactly one object. */
static bool parse_json(const char *s, struct parsed *out)
{
	const char *p;

	out->n = 0;
	p = ws(s);
	if (*p != '{')
		return false;
	p = parse_value(p, "", out);
	return p && !*ws(p);
}

static const char *lookup(const struct parsed *ps, const char *path)
{
	const char *found = NULL;
	unsigned int i;

	for (i = 0; i < ps->n; i++)
		if (!strcmp(ps->it[i].path, path)) {
			if (found)
				fail_msg("key %s twice", path);
			found = ps->it[i].num;
		}
	return found;
}

static unsigned int n_expect;
static struct item expect[MAX_ITEMS];

static void want_u64(const char *path, uint64_t v)
{
	assert_true(n_expect < MAX_ITEMS);
	snprintf(expect[n_expect].path, sizeof(expect[0].path), "%s", path);
	snprintf(expect[n_expect].num, sizeof(expect[0].num), "%" PRIu64, v);
	n_expect++;
}

static void want_i64(const char *path, int64_t v)
{
	assert_true(n_expect < MAX_ITEMS);
	snprintf(expect[n_expect].path, sizeof(expect[0].path), "%s", path);
	snprintf(expect[n_expect].num, sizeof(expect[0].num), "%" PRId64, v);
	n_expect++;
}

/* Every field of the struct, by the name it must have in the JSON. */
static void build_expect(const struct gmfp_engine_stats *st)
{
	char path[32];
	unsigned int i;

	n_expect = 0;
	want_u64("pages_total", st->pages_total);
	want_u64("pages_present", st->pages_present);
	want_u64("records", st->records);
	want_u64("reads", st->reads);
	want_u64("duplicates", st->duplicates);
	want_u64("stale", st->stale);
	want_u64("pages_demand", st->pages_demand);
	want_u64("pages_background", st->pages_background);
	want_u64("pages_by_origin.background", st->pages_by_origin[0]);
	want_u64("pages_by_origin.vcpu", st->pages_by_origin[GMFP_ORIGIN_VCPU]);
	want_u64("pages_by_origin.kvm", st->pages_by_origin[GMFP_ORIGIN_KVM]);
	want_u64("pages_by_origin.mmap", st->pages_by_origin[GMFP_ORIGIN_MMAP]);
	want_u64("pages_zero", st->pages_zero);
	want_u64("bytes", st->bytes);
	want_u64("fetches", st->fetches);
	want_u64("installs", st->installs);
	want_u64("errors", st->errors);
	want_u64("retries", st->retries);
	want_u64("already_present", st->already_present);
	for (i = 0; i < GMFP_HIST_BUCKETS; i++) {
		snprintf(path, sizeof(path), "lat_hist[%u]", i);
		want_u64(path, st->lat_hist[i]);
	}
	want_u64("lat_count", st->lat_count);
	want_u64("lat_p50_us", st->lat_p50_us);
	want_u64("lat_p99_us", st->lat_p99_us);
	want_u64("lat_max_us", st->lat_max_us);
	want_i64("last_error", st->last_error);
	want_u64("latency_us.p50", st->lat_p50_us);
	want_u64("latency_us.p99", st->lat_p99_us);
	want_u64("latency_us.max", st->lat_max_us);
	want_u64("latency_us.count", st->lat_count);
}

/*
 * Every u64 from pages_total up to (not including) last_error, as an
 * array (test_layout_assumption checks that it is one): how many.
 */
static size_t u64_fields(struct gmfp_engine_stats *st, uint64_t **w)
{
	*w = &st->pages_total;
	return (size_t)((uint64_t *)&st->last_error - *w);
}

/* Distinct values in every field, so that a swapped field shows. */
static void fill_stats(struct gmfp_engine_stats *st, uint64_t seed)
{
	uint64_t *w;
	size_t i, nw;

	memset(st, 0, sizeof(*st));
	st->sz = sizeof(*st);
	nw = u64_fields(st, &w);
	for (i = 0; i < nw; i++)
		w[i] = seed * 1000003ull + i * 7919ull + 1;
	st->last_error = -110;
}

static void check_parses_to(const struct gmfp_engine_stats *st)
{
	static struct parsed ps;
	char buf[4096];
	unsigned int i;
	int n;

	n = gmfp_stats_to_json(st, buf, sizeof(buf));
	assert_true(n > 0 && (size_t)n < sizeof(buf));
	assert_int_equal(strlen(buf), (size_t)n);
	if (!parse_json(buf, &ps))
		fail_msg("not valid JSON: %s", buf);
	build_expect(st);
	/* Exactly the expected members: none missing, none extra. */
	assert_int_equal(ps.n, n_expect);
	for (i = 0; i < n_expect; i++) {
		const char *got = lookup(&ps, expect[i].path);

		if (!got)
			fail_msg("missing %s in %s", expect[i].path, buf);
		assert_string_equal(got, expect[i].num);
	}
}

static void test_fields(void **state)
{
	struct gmfp_engine_stats st;

	(void)state;
	fill_stats(&st, 1);
	check_parses_to(&st);
	fill_stats(&st, 12345);
	check_parses_to(&st);
}

static void test_zero(void **state)
{
	struct gmfp_engine_stats st;

	(void)state;
	memset(&st, 0, sizeof(st));
	st.sz = sizeof(st);
	check_parses_to(&st);
}

static void test_extremes(void **state)
{
	struct gmfp_engine_stats st;
	uint64_t *w;
	size_t i, nw;

	(void)state;
	memset(&st, 0, sizeof(st));
	nw = u64_fields(&st, &w);
	for (i = 0; i < nw; i++)
		w[i] = UINT64_MAX - i;
	st.last_error = INT64_MIN;
	check_parses_to(&st);
	st.last_error = INT64_MAX;
	check_parses_to(&st);
	st.last_error = 0;
	check_parses_to(&st);
}

static void test_layout_assumption(void **state)
{
	struct gmfp_engine_stats st;

	(void)state;
	/*
	 * u64_fields() walks the u64 fields as an array; if the struct gains a
	 * field of another type this catches it before the tests lie.
	 */
	assert_int_equal((char *)&st.last_error - (char *)&st.pages_total,
			 (15 + 4 + GMFP_HIST_BUCKETS + 4) * sizeof(uint64_t));
}

static void test_truncation(void **state)
{
	struct gmfp_engine_stats st;
	char full[4096];
	int n, len;

	(void)state;
	fill_stats(&st, 77);
	st.last_error = INT64_MIN;
	n = gmfp_stats_to_json(&st, full, sizeof(full));
	assert_true(n > 0 && (size_t)n < sizeof(full));

	assert_int_equal(gmfp_stats_to_json(&st, NULL, 0), n);
	/* A NULL buffer with a length is taken as no buffer. */
	assert_int_equal(gmfp_stats_to_json(&st, NULL, 100), n);

	for (len = 0; len <= n + 2; len++) {
		/* Exactly @len bytes on the heap (one for len 0, untouched). */
		char *b = malloc(len ? (size_t)len : 1);
		size_t keep;

		assert_non_null(b);
		memset(b, 'X', len ? (size_t)len : 1);
		assert_int_equal(gmfp_stats_to_json(&st, b, (size_t)len), n);
		if (!len) {
			assert_int_equal(b[0], 'X');
		} else {
			keep = (size_t)len - 1 < (size_t)n ? (size_t)len - 1 : (size_t)n;
			assert_int_equal(b[keep], '\0');
			assert_int_equal(strlen(b), keep);
			assert_memory_equal(b, full, keep);
		}
		free(b);
	}
}

static void test_exact_fit(void **state)
{
	struct gmfp_engine_stats st;
	char *b;
	int n;

	(void)state;
	fill_stats(&st, 3);
	n = gmfp_stats_to_json(&st, NULL, 0);
	assert_true(n > 0);
	b = malloc((size_t)n + 1);
	assert_non_null(b);
	assert_int_equal(gmfp_stats_to_json(&st, b, (size_t)n + 1), n);
	assert_int_equal(strlen(b), (size_t)n);
	assert_int_equal(b[0], '{');
	assert_int_equal(b[n - 1], '}');
	free(b);
}

static void test_null_stats(void **state)
{
	char buf[8] = "abc";

	(void)state;
	assert_int_equal(gmfp_stats_to_json(NULL, buf, sizeof(buf)), -EINVAL);
}

/* The parser itself must reject what it should, or the checks above mean little. */
static void test_parser_self_check(void **state)
{
	static struct parsed ps;

	(void)state;
	assert_true(parse_json("{\"a\":1,\"b\":{\"c\":[1,2]}}", &ps));
	assert_int_equal(ps.n, 3);
	assert_string_equal(ps.it[2].path, "b.c[1]");
	assert_false(parse_json("{\"a\":1", &ps));
	assert_false(parse_json("{\"a\":1}}", &ps));
	assert_false(parse_json("{\"a\":01}", &ps));
	assert_false(parse_json("{\"a\":1,}", &ps));
	assert_false(parse_json("{\"a\":[1,2}", &ps));
	assert_false(parse_json("{a:1}", &ps));
	assert_false(parse_json("{\"a\":-}", &ps));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parser_self_check),
		cmocka_unit_test(test_layout_assumption),
		cmocka_unit_test(test_fields),
		cmocka_unit_test(test_zero),
		cmocka_unit_test(test_extremes),
		cmocka_unit_test(test_truncation),
		cmocka_unit_test(test_exact_fit),
		cmocka_unit_test(test_null_stats),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
