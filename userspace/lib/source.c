// SPDX-License-Identifier: LGPL-2.1-or-later
/* Page sources: the common wrapper around a gmfp_source_ops table. */
#include <stdlib.h>

#include "internal.h"

int gmfp_source_new(struct gmfp_source **out, const struct gmfp_source_ops *ops,
		    void *ctx)
{
	struct gmfp_source *s;
	int r;

	if (!out || !ops)
		return -EINVAL;
	*out = NULL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	r = gmfp_opts_copy(&s->ops, sizeof(s->ops), ops);
	if (r || !s->ops.fetch) {
		free(s);
		return r ? r : -EINVAL;
	}
	s->ctx = ctx;
	*out = s;
	return 0;
}

int gmfp_source_fetch(struct gmfp_source *s, struct gmfp_fetch *f)
{
	int r;

	if (!s || !f || !f->buf || !f->npages)
		return -EINVAL;
	if (s->ops.max_pages && f->npages > s->ops.max_pages)
		return -E2BIG;
	atomic_fetch_add_explicit(&s->requests, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&s->pages, f->npages, memory_order_relaxed);
	r = s->ops.fetch(s->ctx, f);
	if (r > 0)	/* a callback that does not follow the contract */
		r = -EIO;
	if (r)
		atomic_fetch_add_explicit(&s->failures, 1, memory_order_relaxed);
	return r;
}

void gmfp_source_count_reconnect(struct gmfp_source *s)
{
	atomic_fetch_add_explicit(&s->reconnects, 1, memory_order_relaxed);
}

void gmfp_source_get_stats(const struct gmfp_source *s, struct gmfp_source_stats *st)
{
	struct gmfp_source *m = (struct gmfp_source *)s;

	if (!s || !st)
		return;
	st->requests = atomic_load(&m->requests);
	st->pages = atomic_load(&m->pages);
	st->failures = atomic_load(&m->failures);
	st->reconnects = atomic_load(&m->reconnects);
}

void gmfp_source_destroy(struct gmfp_source *s)
{
	if (!s)
		return;
	if (s->ops.destroy)
		s->ops.destroy(s->ctx);
	free(s);
}
