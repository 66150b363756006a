// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Background fill orders: recorded access order files ("region pgoff" per
 * line, written by one run's engine and replayed by the next) and the
 * around-demand walk.
 *
 * An order file comes from disk, possibly from another machine or a
 * truncated write, so the parser trusts nothing: it never reads past @len
 * (the text need not be NUL terminated), rejects any number that does not
 * fit 64 bits and anything after the second number but a comment, and
 * reports the line of the first problem.  Entries that are well formed but
 * name a page that does not exist in this VM's layout are dropped and
 * counted instead: a layout change should cost prefetch quality, not fail
 * the restore.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

/* Biggest order file loaded: 16 M lines at 16 bytes, far above any VM's need. */
#define ORDER_FILE_MAX (256ull << 20)

static bool is_blank(char c)
{
	return c == ' ' || c == '\t';
}

static const char *skip_blanks(const char *p, const char *end)
{
	while (p < end && is_blank(*p))
		p++;
	return p;
}

/* A decimal number at *@pp (digits only, no sign); false if none or > u64. */
static bool parse_u64(const char **pp, const char *end, uint64_t *v)
{
	const char *p = *pp;
	uint64_t x = 0;

	if (p == end || *p < '0' || *p > '9')
		return false;
	for (; p < end && *p >= '0' && *p <= '9'; p++) {
		unsigned int d = (unsigned int)(*p - '0');

		if (x > (UINT64_MAX - d) / 10)
			return false;
		x = x * 10 + d;
	}
	*pp = p;
	*v = x;
	return true;
}

/*
 * One line without its '\n' (and without the '\r' of a CRLF):
 * 1 for an entry, 0 for a blank or comment line, -1 if malformed.
 * A '#' after the two numbers starts a comment too.
 */
static int parse_line(const char *p, const char *end, uint64_t *region,
		      uint64_t *pgoff)
{
	p = skip_blanks(p, end);
	if (p == end || *p == '#')
		return 0;
	if (!parse_u64(&p, end, region))
		return -1;
	/* At least one blank between the numbers: "12" "3" is not "123". */
	if (p == end || !is_blank(*p))
		return -1;
	p = skip_blanks(p, end);
	if (!parse_u64(&p, end, pgoff))
		return -1;
	p = skip_blanks(p, end);
	if (p != end && *p != '#')
		return -1;
	return 1;
}

ssize_t gmfp_order_parse(const char *text, size_t len, uint32_t nr_regions,
			 const uint64_t *region_pages,
			 struct gmfp_order_entry **out, size_t *dropped,
			 size_t *bad_line)
{
	const char *p = text, *end = text + len;
	struct gmfp_order_entry *v = NULL;
	size_t n = 0, cap = 0, ndropped = 0, line = 0;

	if (dropped)
		*dropped = 0;
	if (bad_line)
		*bad_line = 0;
	if (!out || (len && !text) || (nr_regions && !region_pages))
		return -EINVAL;
	*out = NULL;

	while (p < end) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		const char *next = eol ? eol + 1 : end;
		uint64_t region, pgoff;
		int r;

		if (!eol)
			eol = end;
		if (eol > p && eol[-1] == '\r')
			eol--;
		line++;
		r = parse_line(p, eol, &region, &pgoff);
		p = next;
		if (r < 0) {
			free(v);
			if (bad_line)
				*bad_line = line;
			return -EINVAL;
		}
		if (!r)
			continue;
		/*
		 * A region number beyond u32 is well formed, just not one of
		 * ours: dropped like any other region >= nr_regions.
		 */
		if (region >= nr_regions || pgoff >= region_pages[region]) {
			ndropped++;
			continue;
		}
		if (n == cap) {
			size_t ncap = cap ? cap * 2 : 256;
			struct gmfp_order_entry *nv;

			if (ncap > SSIZE_MAX / sizeof(*v) ||
			    !(nv = realloc(v, ncap * sizeof(*v)))) {
				free(v);
				return -ENOMEM;
			}
			v = nv;
			cap = ncap;
		}
		v[n].region = (uint32_t)region;
		v[n].pgoff = pgoff;
		n++;
	}
	if (dropped)
		*dropped = ndropped;
	*out = v;	/* NULL when there are no entries */
	return (ssize_t)n;
}

ssize_t gmfp_order_load(const char *path, uint32_t nr_regions,
			const uint64_t *region_pages,
			struct gmfp_order_entry **out, size_t *dropped)
{
	size_t cap, used = 0;
	struct stat st;
	char *buf;
	ssize_t r;
	int fd;

	if (dropped)
		*dropped = 0;
	if (!path || !out)
		return -EINVAL;
	*out = NULL;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st)) {
		r = -errno;
		goto out_close;
	}
	if (S_ISREG(st.st_mode) && (uint64_t)st.st_size > ORDER_FILE_MAX) {
		r = -EFBIG;
		goto out_close;
	}
	/*
	 * One byte more than the size, so that the read that sees end of file
	 * needs no reallocation.  The size is only a hint: the file may grow
	 * while we read it, be a pipe, or (procfs) claim size 0, hence the
	 * floor on the first allocation and the cap on what is read.
	 */
	cap = S_ISREG(st.st_mode) ? (size_t)st.st_size + 1 : 65536;
	if (cap < 4096)
		cap = 4096;
	buf = malloc(cap);
	if (!buf) {
		r = -ENOMEM;
		goto out_close;
	}
	for (;;) {
		ssize_t got;

		if (used == cap) {
			size_t ncap = cap * 2 > ORDER_FILE_MAX + 1 ?
				      ORDER_FILE_MAX + 1 : cap * 2;
			char *nb = realloc(buf, ncap);

			if (!nb) {
				r = -ENOMEM;
				goto out_free;
			}
			buf = nb;
			cap = ncap;
		}
		got = read(fd, buf + used, cap - used);
		if (got < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			goto out_free;
		}
		if (!got)
			break;
		used += (size_t)got;
		if (used > ORDER_FILE_MAX) {
			r = -EFBIG;
			goto out_free;
		}
	}
	r = gmfp_order_parse(buf, used, nr_regions, region_pages, out, dropped,
			     NULL);
out_free:
	free(buf);
out_close:
	close(fd);
	return r;
}

static int write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/*
 * Make the rename durable.  Best effort: some file systems refuse fsync on
 * a directory, and the data itself is already on disk by then.
 */
static void fsync_parent(const char *path)
{
	const char *slash = strrchr(path, '/');
	char *dir;
	int fd;

	if (!slash) {
		fd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	} else {
		size_t n = slash == path ? 1 : (size_t)(slash - path);

		dir = strndup(path, n);
		if (!dir)
			return;
		fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		free(dir);
	}
	if (fd < 0)
		return;
	fsync(fd);
	close(fd);
}

#define ORDER_HEADER "# libgmfp access order: \"region pgoff\" per line\n"
#define ORDER_LINE_MAX 33	/* 10 digits, blank, 20 digits, newline, NUL */
#define ORDER_WBUF 65536

int gmfp_order_save(const char *path, const struct gmfp_order_entry *e, size_t n)
{
	size_t plen, fill, i;
	char *tmp, *wbuf;
	int fd, r;

	if (!path || (n && !e))
		return -EINVAL;
	plen = strlen(path);
	/* One allocation for the temp name and the write buffer. */
	tmp = malloc(plen + sizeof(".tmpXXXXXX") + ORDER_WBUF);
	if (!tmp)
		return -ENOMEM;
	memcpy(tmp, path, plen);
	memcpy(tmp + plen, ".tmpXXXXXX", sizeof(".tmpXXXXXX"));
	wbuf = tmp + plen + sizeof(".tmpXXXXXX");

	/*
	 * Temp file next to the target and rename(): a reader (the next
	 * restore) sees the old file or the complete new one, never a prefix
	 * that would parse fine and silently lose the tail.  mkostemp() makes
	 * it 0600, which suits a trace of a guest's memory accesses.
	 */
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		free(tmp);
		return r;
	}
	memcpy(wbuf, ORDER_HEADER, sizeof(ORDER_HEADER) - 1);
	fill = sizeof(ORDER_HEADER) - 1;
	r = 0;
	for (i = 0; i < n; i++) {
		if (ORDER_WBUF - fill < ORDER_LINE_MAX) {
			r = write_all(fd, wbuf, fill);
			if (r)
				goto fail;
			fill = 0;
		}
		fill += (size_t)snprintf(wbuf + fill, ORDER_WBUF - fill,
					 "%" PRIu32 " %" PRIu64 "\n",
					 e[i].region, e[i].pgoff);
	}
	r = write_all(fd, wbuf, fill);
	if (r)
		goto fail;
	if (fsync(fd)) {
		r = -errno;
		goto fail;
	}
	if (close(fd)) {
		fd = -1;
		r = -errno;
		goto fail;
	}
	fd = -1;
	if (rename(tmp, path)) {
		r = -errno;
		goto fail;
	}
	fsync_parent(path);
	free(tmp);
	return 0;
fail:
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	free(tmp);
	return r;
}

/*
 * Around-demand walk.  The center itself is not yielded: it is the demand
 * page, which the demand path is already fetching.  Each distance d = 1, 2,
 * ... yields center + d, then center - d; a side is done for good the first
 * time it leaves [0, npages), and the other side continues alone.
 */
void gmfp_around_reset(struct gmfp_around *a, uint64_t center)
{
	a->center = center;
	a->dist = 1;
	a->up_done = false;
	a->down_done = false;
	a->down_next = false;
}

bool gmfp_around_next(struct gmfp_around *a, uint64_t npages, uint64_t *first)
{
	/* A center outside the region (a stale or bogus demand) gives nothing. */
	if (a->center >= npages) {
		a->up_done = a->down_done = true;
		return false;
	}
	while (!a->up_done || !a->down_done) {
		if (!a->down_next) {
			a->down_next = true;
			if (a->up_done)
				continue;
			/* center + dist < npages, without overflowing. */
			if (a->dist < npages - a->center) {
				*first = a->center + a->dist;
				return true;
			}
			a->up_done = true;
		} else {
			uint64_t d = a->dist;

			/* dist <= npages here, so it cannot wrap. */
			a->down_next = false;
			a->dist++;
			if (a->down_done)
				continue;
			if (d <= a->center) {
				*first = a->center - d;
				return true;
			}
			a->down_done = true;
		}
	}
	return false;
}
