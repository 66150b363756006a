// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Image file source (lazy snapshot restore): region r starts at
 * region_offsets[r] in the file.  A short read is an error unless the
 * caller said the file may be sparse/short (GMFP_FILE_SHORT_IS_ZERO): a
 * truncated image must not turn into zero pages silently.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

struct file_src {
	int fd;
	uint32_t nr_regions;
	uint32_t flags;
	uint64_t offsets[];
};

static bool all_zero(const void *p, size_t n)
{
	const uint64_t *w = p;
	size_t i;

	for (i = 0; i < n / 8; i++)
		if (w[i])
			return false;
	return true;
}

static int file_fetch(void *ctx, struct gmfp_fetch *f)
{
	struct file_src *s = ctx;
	size_t len = (size_t)f->npages * GMFP_PAGE_SIZE, got = 0;
	uint64_t base;
	uint32_t i;

	if (f->region >= s->nr_regions)
		return -EINVAL;
	if (f->pgoff > (UINT64_MAX - s->offsets[f->region]) / GMFP_PAGE_SIZE - f->npages)
		return -EINVAL;
	base = s->offsets[f->region] + f->pgoff * GMFP_PAGE_SIZE;
	while (got < len) {
		ssize_t n = pread(s->fd, (char *)f->buf + got, len - got,
				  (off_t)(base + got));

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (!n)
			break;
		got += (size_t)n;
	}
	if (got < len) {
		if (!(s->flags & GMFP_FILE_SHORT_IS_ZERO))
			return -EIO;
		memset((char *)f->buf + got, 0, len - got);
	}
	/* Telling the engine about zero pages lets it MARK instead of COPY. */
	if (f->zero)
		for (i = 0; i < f->npages; i++)
			if (all_zero((char *)f->buf + (size_t)i * GMFP_PAGE_SIZE, GMFP_PAGE_SIZE))
				f->zero[i / 64] |= 1ull << (i % 64);
	return 0;
}

static void file_destroy(void *ctx)
{
	struct file_src *s = ctx;

	close(s->fd);
	free(s);
}

int gmfp_source_file(struct gmfp_source **out, const struct gmfp_file_opts *uopts)
{
	struct gmfp_source_ops ops = {
		.sz = sizeof(ops), .fetch = file_fetch, .destroy = file_destroy,
	};
	struct gmfp_file_opts o;
	struct file_src *s;
	uint32_t n, i;
	int r;

	if (!out)
		return -EINVAL;
	*out = NULL;
	if (!uopts)
		return -EINVAL;
	r = gmfp_opts_copy(&o, sizeof(o), uopts);
	if (r)
		return r;
	if (o.flags & ~GMFP_FILE_SHORT_IS_ZERO)
		return -EINVAL;
	if ((o.fd < 0) == !o.path)	/* exactly one of them */
		return -EINVAL;
	n = o.region_offsets ? o.nr_regions : 1;
	if (!n || n > 65536)
		return -EINVAL;
	s = calloc(1, sizeof(*s) + n * sizeof(s->offsets[0]));
	if (!s)
		return -ENOMEM;
	s->nr_regions = n;
	s->flags = o.flags;
	for (i = 0; o.region_offsets && i < n; i++) {
		if (o.region_offsets[i] % GMFP_PAGE_SIZE) {
			free(s);
			return -EINVAL;
		}
		s->offsets[i] = o.region_offsets[i];
	}
	s->fd = o.path ? open(o.path, O_RDONLY | O_CLOEXEC) :
			 fcntl(o.fd, F_DUPFD_CLOEXEC, 0);
	if (s->fd < 0) {
		r = -errno;
		free(s);
		return r;
	}
	r = gmfp_source_new(out, &ops, s);
	if (r)
		file_destroy(s);
	return r;
}

static int zero_fetch(void *ctx, struct gmfp_fetch *f)
{
	uint32_t i;

	(void)ctx;
	if (f->zero) {
		for (i = 0; i < f->npages; i++)
			f->zero[i / 64] |= 1ull << (i % 64);
	} else {
		memset(f->buf, 0, (size_t)f->npages * GMFP_PAGE_SIZE);
	}
	return 0;
}

int gmfp_source_zero(struct gmfp_source **out)
{
	struct gmfp_source_ops ops = { .sz = sizeof(ops), .fetch = zero_fetch };

	return gmfp_source_new(out, &ops, NULL);
}
