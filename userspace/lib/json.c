// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * struct gmfp_engine_stats as one JSON object, with snprintf() semantics so
 * that a caller can size its buffer with a first call of (NULL, 0).  No
 * allocation: this is called from monitoring paths that must not fail for
 * want of memory, and every value is an integer we format ourselves.
 */
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>

#include "internal.h"

/* Output cursor: @pos counts every byte the whole object needs. */
struct jbuf {
	char *buf;
	size_t len;
	size_t pos;
};

static void put(struct jbuf *j, const char *s, size_t n)
{
	/* Keep the last byte of @buf for the NUL. */
	if (j->len && j->pos < j->len - 1) {
		size_t room = j->len - 1 - j->pos;

		memcpy(j->buf + j->pos, s, n < room ? n : room);
	}
	j->pos += n;
}

static void put_str(struct jbuf *j, const char *s)
{
	put(j, s, strlen(s));
}

static void put_u64(struct jbuf *j, uint64_t v)
{
	char tmp[24];
	int n = snprintf(tmp, sizeof(tmp), "%" PRIu64, v);

	put(j, tmp, (size_t)n);
}

static void put_i64(struct jbuf *j, int64_t v)
{
	char tmp[24];
	int n = snprintf(tmp, sizeof(tmp), "%" PRId64, v);

	put(j, tmp, (size_t)n);
}

/* ,"key": -- the first member of an object passes first = true. */
static void put_key(struct jbuf *j, const char *key, bool first)
{
	if (!first)
		put(j, ",", 1);
	put(j, "\"", 1);
	put_str(j, key);
	put(j, "\":", 2);
}

static void put_member(struct jbuf *j, const char *key, uint64_t v)
{
	put_key(j, key, false);
	put_u64(j, v);
}

int gmfp_stats_to_json(const struct gmfp_engine_stats *st, char *buf, size_t len)
{
	struct jbuf j = { .buf = buf, .len = buf ? len : 0 };
	unsigned int i;

	if (!st)
		return -EINVAL;

	put_str(&j, "{");
	put_key(&j, "pages_total", true);
	put_u64(&j, st->pages_total);
	put_member(&j, "pages_present", st->pages_present);
	put_member(&j, "records", st->records);
	put_member(&j, "reads", st->reads);
	put_member(&j, "duplicates", st->duplicates);
	put_member(&j, "stale", st->stale);
	put_member(&j, "pages_demand", st->pages_demand);
	put_member(&j, "pages_background", st->pages_background);

	/* Indexed by GMFP_ORIGIN_*, with 0 standing for background fills. */
	put_key(&j, "pages_by_origin", false);
	put_str(&j, "{");
	put_key(&j, "background", true);
	put_u64(&j, st->pages_by_origin[0]);
	put_member(&j, "vcpu", st->pages_by_origin[GMFP_ORIGIN_VCPU]);
	put_member(&j, "kvm", st->pages_by_origin[GMFP_ORIGIN_KVM]);
	put_member(&j, "mmap", st->pages_by_origin[GMFP_ORIGIN_MMAP]);
	put_str(&j, "}");

	put_member(&j, "pages_zero", st->pages_zero);
	put_member(&j, "bytes", st->bytes);
	put_member(&j, "fetches", st->fetches);
	put_member(&j, "installs", st->installs);
	put_member(&j, "errors", st->errors);
	put_member(&j, "retries", st->retries);
	put_member(&j, "already_present", st->already_present);

	put_key(&j, "lat_hist", false);
	put_str(&j, "[");
	for (i = 0; i < GMFP_HIST_BUCKETS; i++) {
		if (i)
			put(&j, ",", 1);
		put_u64(&j, st->lat_hist[i]);
	}
	put_str(&j, "]");

	put_member(&j, "lat_count", st->lat_count);
	put_member(&j, "lat_p50_us", st->lat_p50_us);
	put_member(&j, "lat_p99_us", st->lat_p99_us);
	put_member(&j, "lat_max_us", st->lat_max_us);
	put_key(&j, "last_error", false);
	put_i64(&j, st->last_error);

	/* The same figures again, grouped the way dashboards want them. */
	put_key(&j, "latency_us", false);
	put_str(&j, "{");
	put_key(&j, "p50", true);
	put_u64(&j, st->lat_p50_us);
	put_member(&j, "p99", st->lat_p99_us);
	put_member(&j, "max", st->lat_max_us);
	put_member(&j, "count", st->lat_count);
	put_str(&j, "}");
	put_str(&j, "}");

	if (j.len)
		j.buf[j.pos < j.len ? j.pos : j.len - 1] = '\0';
	/* Cannot happen with fixed fields of at most 20 digits, but be exact. */
	if (j.pos > INT_MAX)
		return -EOVERFLOW;
	return (int)j.pos;
}
