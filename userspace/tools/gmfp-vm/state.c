// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * vCPU state and snapshots.  A snapshot is a directory:
 *   state    header, vCPU state (struct gv_cpu), low memory (its pages
 *            that are not all zero)
 *   memory   the RAM image, one 4 KiB page after the other
 * A postcopy migration sends the same state blob over its control
 * connection; the RAM follows through the page server.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gvm.h"

static const uint32_t msr_index[GV_NR_MSRS] = {
	GVM_MSR_IA32_TSC,
	GVM_MSR_KVM_ASYNC_PF_INT,	/* the vector before enabling delivery */
	GVM_MSR_KVM_ASYNC_PF_EN,
};

static int errf(char *err, size_t len, int e, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int errf(char *err, size_t len, int e, const char *fmt, ...)
{
	va_list ap;
	size_t n;

	va_start(ap, fmt);
	vsnprintf(err, len, fmt, ap);
	va_end(ap);
	n = strlen(err);
	if (e > 0 && n < len)
		snprintf(err + n, len - n, ": %s", strerror(e));
	return e > 0 ? -e : -EINVAL;
}

struct msrs {
	struct kvm_msrs h;
	struct kvm_msr_entry e[GV_NR_MSRS];
};

int gvm_get_cpu(struct gvm *v, struct gv_cpu *c)
{
	struct msrs m;
	int i;

	memset(c, 0, sizeof(*c));
	if (ioctl(v->vcpu, KVM_GET_REGS, &c->regs) || ioctl(v->vcpu, KVM_GET_SREGS, &c->sregs) ||
	    ioctl(v->vcpu, KVM_GET_FPU, &c->fpu) || ioctl(v->vcpu, KVM_GET_LAPIC, &c->lapic) ||
	    ioctl(v->vcpu, KVM_GET_VCPU_EVENTS, &c->events) ||
	    ioctl(v->vcpu, KVM_GET_MP_STATE, &c->mp))
		return -errno;
	memset(&m, 0, sizeof(m));
	m.h.nmsrs = GV_NR_MSRS;
	for (i = 0; i < GV_NR_MSRS; i++)
		m.e[i].index = msr_index[i];
	if (ioctl(v->vcpu, KVM_GET_MSRS, &m) != GV_NR_MSRS)
		return -EIO;
	for (i = 0; i < GV_NR_MSRS; i++)
		c->msr[i] = m.e[i].data;
	return 0;
}

int gvm_set_cpu(struct gvm *v, const struct gv_cpu *c)
{
	struct kvm_vcpu_events ev = c->events;
	struct msrs m;
	int i;

	/* sregs first: EFER, CR0/CR4 and the APIC base (x2APIC mode) */
	if (ioctl(v->vcpu, KVM_SET_SREGS, &c->sregs) || ioctl(v->vcpu, KVM_SET_REGS, &c->regs) ||
	    ioctl(v->vcpu, KVM_SET_FPU, &c->fpu))
		return -errno;
	memset(&m, 0, sizeof(m));
	m.h.nmsrs = GV_NR_MSRS;
	for (i = 0; i < GV_NR_MSRS; i++) {
		m.e[i].index = msr_index[i];
		m.e[i].data = c->msr[i];
	}
	if (ioctl(v->vcpu, KVM_SET_MSRS, &m) != GV_NR_MSRS)
		return -EIO;
	if (ioctl(v->vcpu, KVM_SET_LAPIC, &c->lapic) || ioctl(v->vcpu, KVM_SET_MP_STATE, &c->mp) ||
	    ioctl(v->vcpu, KVM_SET_VCPU_EVENTS, &ev))
		return -errno;
	return 0;
}

bool gvm_cpu_apf_enabled(const struct gv_cpu *c)
{
	return c->msr[2] & GVM_ASYNC_PF_ENABLED;
}

#define LOW_PAGES (GV_LOW_SIZE / PG)
#define LOW_MAP_WORDS (LOW_PAGES / 64)

static bool page_zero(const uint8_t *p)
{
	const uint64_t *w = (const uint64_t *)p;
	size_t i;

	for (i = 0; i < PG / 8; i++)
		if (w[i])
			return false;
	return true;
}

/*
 * Blob: header, struct gv_cpu, a bitmap of the low memory pages that are
 * not all zero (LOW_MAP_WORDS u64s), those pages.  Low memory is mostly
 * zero (page tables, a status page, a 40 KiB payload): this keeps what a
 * migration sends inside its downtime small.
 */
int gvm_state_blob(struct gvm *v, uint64_t seed, struct gv_blob *b)
{
	uint64_t map[LOW_MAP_WORDS] = { 0 }, n = 0, i;
	struct gv_state_hdr h;
	struct gv_cpu c;
	uint8_t *p;
	int r;

	r = gvm_get_cpu(v, &c);
	if (r)
		return r;
	for (i = 0; i < LOW_PAGES; i++)
		if (!page_zero(v->low + i * PG)) {
			map[i / 64] |= 1ull << (i % 64);
			n++;
		}
	memset(&h, 0, sizeof(h));
	h.magic = GV_STATE_MAGIC;
	h.version = GV_STATE_VERSION;
	h.hdr_size = sizeof(h);
	h.cpu_size = sizeof(c);
	h.low_size = GV_LOW_SIZE;
	h.low_pages = n;
	h.ram_size = v->ram_size;
	h.ram_gpa = GV_RAM_GPA;
	h.seed = seed;
	b->len = sizeof(h) + sizeof(c) + sizeof(map) + n * PG;
	b->buf = malloc(b->len);
	if (!b->buf)
		return -ENOMEM;
	p = b->buf;
	memcpy(p, &h, sizeof(h));
	memcpy(p += sizeof(h), &c, sizeof(c));
	memcpy(p += sizeof(c), map, sizeof(map));
	p += sizeof(map);
	for (i = 0; i < LOW_PAGES; i++)
		if (map[i / 64] >> (i % 64) & 1) {
			memcpy(p, v->low + i * PG, PG);
			p += PG;
		}
	return 0;
}

int gvm_blob_parse(const struct gv_blob *b, const struct gv_state_hdr **hp,
		   const struct gv_cpu **cp, const uint64_t **map, const uint8_t **pages,
		   char *err, size_t len)
{
	const struct gv_state_hdr *h = (const void *)b->buf;
	const uint64_t *m;
	uint64_t n = 0, i;
	size_t fixed = sizeof(*h) + sizeof(struct gv_cpu) + LOW_MAP_WORDS * 8;

	if (b->len < sizeof(*h) || h->magic != GV_STATE_MAGIC)
		return errf(err, len, 0, "not a gmfp-vm state");
	if (h->version != GV_STATE_VERSION || h->hdr_size != sizeof(*h) ||
	    h->cpu_size != sizeof(struct gv_cpu) || h->low_size != GV_LOW_SIZE ||
	    h->ram_gpa != GV_RAM_GPA)
		return errf(err, len, 0, "state of another gmfp-vm version (%u)", h->version);
	if (b->len < fixed || h->low_pages > LOW_PAGES || b->len != fixed + h->low_pages * PG)
		return errf(err, len, 0, "state truncated or padded (%zu bytes)", b->len);
	m = (const uint64_t *)(b->buf + sizeof(*h) + sizeof(struct gv_cpu));
	for (i = 0; i < LOW_MAP_WORDS; i++)
		n += (uint64_t)__builtin_popcountll(m[i]);
	if (n != h->low_pages)
		return errf(err, len, 0, "state: %llu low pages listed, %llu stored",
			    (unsigned long long)n, (unsigned long long)h->low_pages);
	if (!h->ram_size || h->ram_size % (2u << 20) || h->ram_size > GV_RAM_MAX)
		return errf(err, len, 0, "state with a bad memory size");
	*hp = h;
	*cp = (const void *)(b->buf + sizeof(*h));
	*map = m;
	*pages = b->buf + fixed;
	return 0;
}

int gvm_blob_load(struct gvm *v, const struct gv_blob *b, char *err, size_t len)
{
	const struct gv_state_hdr *h;
	const struct gv_cpu *c;
	const uint64_t *map;
	const uint8_t *pages;
	uint64_t i;
	int r;

	r = gvm_blob_parse(b, &h, &c, &map, &pages, err, len);
	if (r)
		return r;
	if (h->ram_size != v->ram_size)
		return errf(err, len, 0, "state of %llu MiB, VM of %llu MiB",
			    (unsigned long long)(h->ram_size >> 20),
			    (unsigned long long)(v->ram_size >> 20));
	for (i = 0; i < LOW_PAGES; i++)
		if (map[i / 64] >> (i % 64) & 1) {
			memcpy(v->low + i * PG, pages, PG);
			pages += PG;
		} else {
			memset(v->low + i * PG, 0, PG);
		}
	if (v->st->magic != GV_MAGIC || v->st->ram_pages != v->ram_pages)
		return errf(err, len, 0, "state: the guest's status page is not gmfp-vm's");
	r = gvm_set_cpu(v, c);
	if (r)
		return errf(err, len, -r, "setting the vCPU state");
	return 0;
}

static int write_all(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int write_file(const char *dir, const char *name, const void *buf, size_t len,
		      char *err, size_t elen)
{
	char path[4096], tmp[4100];
	int fd, r;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return errf(err, elen, errno, "%s", tmp);
	r = write_all(fd, buf, len);
	if (!r && fsync(fd))
		r = -errno;
	if (close(fd) && !r)
		r = -errno;
	if (!r && rename(tmp, path))
		r = -errno;
	if (r) {
		unlink(tmp);
		return errf(err, elen, -r, "writing %s", path);
	}
	return 0;
}

int gvm_snapshot_write(struct gvm *v, uint64_t seed, const char *dir, char *err, size_t len)
{
	struct gv_blob b;
	int r;

	if (!v->ram)
		return errf(err, len, 0, "private memory cannot be read: no snapshot of it");
	if (mkdir(dir, 0755) && errno != EEXIST)
		return errf(err, len, errno, "%s", dir);
	r = gvm_state_blob(v, seed, &b);
	if (r)
		return errf(err, len, -r, "reading the vCPU state");
	/* the memory first: a directory with a state file is complete */
	r = write_file(dir, "memory", v->ram, v->ram_size, err, len);
	if (!r)
		r = write_file(dir, "state", b.buf, b.len, err, len);
	free(b.buf);
	return r;
}

int gvm_blob_read_file(const char *path, struct gv_blob *b, char *err, size_t len)
{
	struct stat sb;
	size_t got = 0;
	int fd;

	memset(b, 0, sizeof(*b));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errf(err, len, errno, "%s", path);
	if (fstat(fd, &sb) || sb.st_size <= 0 || sb.st_size > (64 << 20)) {
		close(fd);
		return errf(err, len, 0, "%s: not a state file", path);
	}
	b->len = (size_t)sb.st_size;
	b->buf = malloc(b->len);
	if (!b->buf) {
		close(fd);
		return -ENOMEM;
	}
	while (got < b->len) {
		ssize_t n = read(fd, b->buf + got, b->len - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			close(fd);
			free(b->buf);
			b->buf = NULL;
			return errf(err, len, n < 0 ? errno : EIO, "reading %s", path);
		}
		got += (size_t)n;
	}
	close(fd);
	return 0;
}
