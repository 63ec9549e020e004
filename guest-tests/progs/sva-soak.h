// SPDX-License-Identifier: MIT
/*
 * sva-soak.h - a random soak of SVA jobs for accel-sva (soak and demo modes):
 * thousands of memmove / fill / compare jobs from a seeded PRNG on the
 * process's own memory, with a model of every byte kept by the program.
 *
 * The process's memory, each region at a fixed virtual address of its own
 * (so that an unmapped one stays a hole nothing else lands in):
 *   malloc  malloc'd buffers, touched by the CPU (4 KiB pages)
 *   thp     a 2 MiB-aligned MADV_HUGEPAGE region, touched by the CPU
 *   anon    anonymous mmap the CPU never touches (MADV_NOHUGEPAGE): the
 *           device's first access to each page is a PRI page request; the
 *           region is munmap'd and mapped again (fresh) between jobs
 *   shm     a memfd mapped twice: the device works through one mapping, the
 *           program checks through the other; the device's mapping is
 *           munmap'd and mapped again between jobs (its pages fault again,
 *           and while it is unmapped a write reaching the pages would show)
 *   ro      a read-only mapping with known bytes (read by jobs, a write faults)
 *   hole    never mapped; none: PROT_NONE
 * Jobs aimed at ro (writes), hole, none, or an anon/shm region while it is
 * unmapped must end PAGE_FAULT at that address with nothing written; the
 * process lives on.
 *
 * Jobs go out in batches of 1..max_inflight (one submit, then a bounded wait
 * for each record). Within a batch no job writes a byte another job of the
 * batch reads or writes, so the device may run them in any order and the
 * model (updated in job order) still holds. After each batch every
 * destination byte and every COMPARE result is checked against the model;
 * whole regions are checked before they are unmapped and at the end (a write
 * outside a job's range would show there).
 */
#ifndef SVA_SOAK_H
#define SVA_SOAK_H

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "libvsvm.h"
#include "pattern.h"

#define SOAK_PAGE		4096u
#define SOAK_HUGE		(2u << 20)
#define SOAK_MAX_INFLIGHT	32	/* the most a batch may hold (half the ring) */
#define SOAK_TIMEOUT_MS		10000	/* per record: a 1 MiB job of fresh pages takes ~0.3 s */
#define SOAK_BASE		0x300000000000ull	/* the regions' fixed addresses */
#define SOAK_SLOT		(64ull << 20)		/* one region per slot */
#define SOAK_SWEEP_JOBS		500	/* whole-region checks this often */
#define SOAK_REMAP_PCT		8	/* chance of an unmap/remap before a batch */
#define SOAK_FAULT_PCT		6	/* chance a job aims at a faulting address */
#define SOAK_MALLOC_SLACK	8	/* malloc regions start 1 or 2 bytes in, guard bytes around */
#define SOAK_GUARD		0xa5

struct soak_params {
	uint64_t seed;
	unsigned int jobs;
	unsigned int max_inflight;	/* 1 ..= SOAK_MAX_INFLIGHT */
	int force_events;		/* make sure a munmap, faults and fresh pages happen */
	const char *who;		/* prefix of its lines */
};

/* What a soak did; filled in as it goes (so a failed run still tells how far it got). */
struct soak_stats {
	uint64_t jobs, batches, memmoves, fills, compares;
	uint64_t bytes_verified;	/* destinations and compared bytes checked against the model */
	uint64_t bytes_swept;		/* whole-region checks */
	uint64_t faults_expected, faults_seen;
	uint64_t fault_pages;		/* fresh anon pages the device touched first: page requests */
	uint64_t unmaps, remaps, max_batch;
	uint64_t ns;
	int failed;
};

enum soak_kind { SK_MALLOC, SK_THP, SK_ANON, SK_SHM, SK_RO, SK_HOLE, SK_NONE };

struct soak_region {
	enum soak_kind kind;
	char name[16];
	uint8_t *va;		/* what the device is given */
	void *raw;		/* malloc: what to free */
	uint8_t *cpu;		/* where the program looks (shm: the second mapping) */
	size_t len;
	uint8_t *model;
	int mapped;		/* va mapped now (anon, shm can be unmapped between batches) */
	uint8_t *touched;	/* anon: per page, touched since it was mapped */
	int fd;
};

/* One job of a batch and what the model expects of it. */
struct soak_job {
	uint32_t opcode;
	uint64_t src, dst;		/* device addresses */
	uint32_t len;
	uint64_t pattern;
	struct soak_region *rd, *rs;	/* dst/src regions (rs NULL for FILL) */
	size_t dst_off, src_off;
	int fault;			/* must end PAGE_FAULT... */
	uint64_t bad_lo, bad_hi;	/* ...at an address in here... */
	int write;			/* ...with FAULT_INFO.WRITE this */
	uint64_t want_result;		/* COMPARE */
	uint32_t want_at;		/* COMPARE: first difference, or len */
};

/* A range a batch touches, for the no-conflict rule. */
struct soak_range {
	uint64_t lo, hi;
	int write;
};

struct soak {
	struct vsvm *v;
	struct soak_params p;
	struct soak_stats *st;
	uint64_t rng;
	struct soak_region r[10];
	unsigned int nr;
	struct vsvm_job jobs[SOAK_MAX_INFLIGHT];
	struct soak_job meta[SOAK_MAX_INFLIGHT];
	struct soak_range ranges[2 * SOAK_MAX_INFLIGHT];
	unsigned int nranges, unmapped_faults;
};

static inline uint64_t soak_now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* splitmix64: a full 64-bit period from any seed. */
static inline uint64_t soak_rand(struct soak *s)
{
	uint64_t z = (s->rng += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static inline uint64_t soak_below(struct soak *s, uint64_t n)
{
	return n ? soak_rand(s) % n : 0;
}

static void soak_fail(struct soak *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void soak_fail(struct soak *s, const char *fmt, ...)
{
	va_list ap;

	s->st->failed = 1;
	printf("%s: FAIL: ", s->p.who);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf(" (seed %#" PRIx64 ", after %" PRIu64 " jobs)\n", s->p.seed, s->st->jobs);
	fflush(stdout);
}

static uint8_t *soak_slot(unsigned int i)
{
	return (uint8_t *)(uintptr_t)(SOAK_BASE + i * SOAK_SLOT);
}

/* Map the device's view of an anon or shm region at its fixed address. */
static int soak_map(struct soak *s, struct soak_region *r)
{
	void *p;

	if (r->kind == SK_ANON)
		p = mmap(r->va, r->len, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	else
		p = mmap(r->va, r->len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED_NOREPLACE,
			 r->fd, 0);
	if (p != r->va) {
		soak_fail(s, "mmap %s at %p: %s", r->name, (void *)r->va, strerror(errno));
		return -1;
	}
	if (r->kind == SK_ANON) {
		/* One page per fault: no huge page makes one request cover 512. */
		madvise(r->va, r->len, MADV_NOHUGEPAGE);
		r->cpu = r->va;
		memset(r->model, 0, r->len);
		memset(r->touched, 0, r->len / SOAK_PAGE);
	}
	r->mapped = 1;
	return 0;
}

static struct soak_region *soak_add(struct soak *s, enum soak_kind kind, const char *name,
				    size_t len)
{
	struct soak_region *r = &s->r[s->nr];

	memset(r, 0, sizeof(*r));
	r->kind = kind;
	snprintf(r->name, sizeof(r->name), "%s", name);
	r->len = len;
	r->fd = -1;
	r->va = soak_slot(s->nr);
	s->nr++;
	return r;
}

/* The process's regions; -1 after a failure (reported). */
static int soak_setup(struct soak *s)
{
	static const char *names[] = { "malloc0", "malloc1" };
	struct soak_region *r;
	void *p;

	for (unsigned int i = 0; i < 2; i++) {
		r = soak_add(s, SK_MALLOC, names[i], 512u << 10);
		/* Odd start: the device takes any byte address. */
		r->raw = malloc(r->len + SOAK_MALLOC_SLACK);
		if (!r->raw)
			return soak_fail(s, "malloc"), -1;
		/* Guard bytes around it, checked with it. */
		memset(r->raw, SOAK_GUARD, r->len + SOAK_MALLOC_SLACK);
		r->va = (uint8_t *)r->raw + 1 + i;
		r->cpu = r->va;
	}
	r = soak_add(s, SK_THP, "thp", 2 * SOAK_HUGE);
	p = mmap(r->va, r->len, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	if (p != r->va)
		return soak_fail(s, "mmap thp: %s", strerror(errno)), -1;
	madvise(r->va, r->len, MADV_HUGEPAGE);
	r->cpu = r->va;
	r = soak_add(s, SK_ANON, "anon0", 512u << 10);
	r = soak_add(s, SK_ANON, "anon1", 256u << 10);
	r = soak_add(s, SK_SHM, "shm", 256u << 10);
	r->fd = memfd_create("sva-soak", 0);
	if (r->fd < 0 || ftruncate(r->fd, r->len))
		return soak_fail(s, "memfd: %s", strerror(errno)), -1;
	r->cpu = mmap(NULL, r->len, PROT_READ | PROT_WRITE, MAP_SHARED, r->fd, 0);
	if (r->cpu == MAP_FAILED)
		return soak_fail(s, "mmap shm: %s", strerror(errno)), -1;
	r = soak_add(s, SK_RO, "ro", 2 * SOAK_PAGE);
	r->fd = memfd_create("sva-soak-ro", 0);
	if (r->fd < 0 || ftruncate(r->fd, r->len))
		return soak_fail(s, "memfd: %s", strerror(errno)), -1;
	r->cpu = mmap(NULL, r->len, PROT_READ | PROT_WRITE, MAP_SHARED, r->fd, 0);
	p = mmap(r->va, r->len, PROT_READ, MAP_SHARED | MAP_FIXED_NOREPLACE, r->fd, 0);
	if (r->cpu == MAP_FAILED || p != r->va)
		return soak_fail(s, "mmap ro: %s", strerror(errno)), -1;
	r = soak_add(s, SK_HOLE, "hole", 2 * SOAK_PAGE);
	r = soak_add(s, SK_NONE, "none", 2 * SOAK_PAGE);
	p = mmap(r->va, r->len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	if (p != r->va)
		return soak_fail(s, "mmap none: %s", strerror(errno)), -1;

	for (unsigned int i = 0; i < s->nr; i++) {
		r = &s->r[i];
		r->model = calloc(1, r->len);
		r->touched = calloc(1, r->len / SOAK_PAGE + 1);
		if (!r->model || !r->touched)
			return soak_fail(s, "calloc"), -1;
		switch (r->kind) {
		case SK_MALLOC:
		case SK_THP:
		case SK_SHM:
		case SK_RO:
			/* Known bytes, written through the program's view. */
			pattern_bytes(r->model, r->len, s->p.seed + i);
			memcpy(r->cpu, r->model, r->len);
			r->mapped = r->kind != SK_SHM;
			if (r->kind == SK_SHM && soak_map(s, r))
				return -1;
			break;
		case SK_ANON:
			if (soak_map(s, r))
				return -1;
			break;
		case SK_HOLE:
		case SK_NONE:
			break;
		}
	}
	return 0;
}

static void soak_teardown(struct soak *s)
{
	for (unsigned int i = 0; i < s->nr; i++) {
		struct soak_region *r = &s->r[i];

		if (r->kind == SK_MALLOC)
			free(r->raw);
		else if (r->kind != SK_HOLE && (r->mapped || r->kind == SK_NONE))
			munmap(r->va, r->len);
		if ((r->kind == SK_SHM || r->kind == SK_RO) && r->cpu && r->cpu != MAP_FAILED)
			munmap(r->cpu, r->len);
		if (r->fd >= 0)
			close(r->fd);
		free(r->model);
		free(r->touched);
	}
	s->nr = 0;
}

/* Check a whole region against the model (the program's view; anon only while mapped). */
static int soak_sweep(struct soak *s, struct soak_region *r)
{
	if (r->kind == SK_HOLE || r->kind == SK_NONE || (r->kind == SK_ANON && !r->mapped))
		return 0;
	if (memcmp(r->cpu, r->model, r->len)) {
		size_t at = 0;

		while (r->cpu[at] == r->model[at])
			at++;
		soak_fail(s, "%s byte %#zx is %#x, the model says %#x (a write outside a job?)",
			  r->name, at, r->cpu[at], r->model[at]);
		return -1;
	}
	if (r->kind == SK_MALLOC) {
		const uint8_t *raw = r->raw;

		for (size_t i = 0; i < SOAK_MALLOC_SLACK; i++) {
			const uint8_t *g = i < (size_t)(r->va - raw) ? raw + i : r->va + r->len + i -
				(r->va - raw);

			if (*g != SOAK_GUARD) {
				soak_fail(s, "the guard byte at %p next to %s is %#x: a write outside "
					  "a job", (const void *)g, r->name, *g);
				return -1;
			}
		}
	}
	if (r->kind == SK_ANON)
		memset(r->touched, 1, r->len / SOAK_PAGE);
	s->st->bytes_swept += r->len;
	return 0;
}

static int soak_sweep_all(struct soak *s)
{
	for (unsigned int i = 0; i < s->nr; i++)
		if (soak_sweep(s, &s->r[i]))
			return -1;
	return 0;
}

/* Unmap a mapped anon/shm region (checked first), or map an unmapped one again. */
static int soak_toggle(struct soak *s, struct soak_region *r)
{
	if (r->mapped) {
		if (soak_sweep(s, r))
			return -1;
		if (munmap(r->va, r->len))
			return soak_fail(s, "munmap %s: %s", r->name, strerror(errno)), -1;
		r->mapped = 0;
		s->st->unmaps++;
		return 0;
	}
	/* While unmapped, nothing may have reached the pages (shm: seen through the other view). */
	if (r->kind == SK_SHM && soak_sweep(s, r))
		return -1;
	if (soak_map(s, r))
		return -1;
	s->st->remaps++;
	return 0;
}

static struct soak_region *soak_pick(struct soak *s, int (*fit)(const struct soak_region *))
{
	unsigned int n = 0, k;

	for (unsigned int i = 0; i < s->nr; i++)
		n += fit(&s->r[i]);
	if (!n)
		return NULL;
	k = soak_below(s, n);
	for (unsigned int i = 0; i < s->nr; i++)
		if (fit(&s->r[i]) && k-- == 0)
			return &s->r[i];
	return NULL;
}

static int fit_writable(const struct soak_region *r)
{
	return r->mapped && r->kind <= SK_SHM;
}

static int fit_readable(const struct soak_region *r)
{
	return r->mapped && r->kind <= SK_RO;
}

static int fit_toggle(const struct soak_region *r)
{
	return r->kind == SK_ANON || r->kind == SK_SHM;
}

static int fit_unmapped(const struct soak_region *r)
{
	return fit_toggle(r) && !r->mapped;
}

/* Mostly small jobs, some up to max (the region, MAX_XFER). */
static uint32_t soak_len(struct soak *s, size_t max)
{
	uint64_t r = soak_below(s, 100), hi;

	hi = r < 40 ? 512 : r < 75 ? 16u << 10 : r < 95 ? 128u << 10 : 1u << 20;
	if (hi > max)
		hi = max;
	return 1 + soak_below(s, hi);
}

static int soak_overlaps(const struct soak *s, uint64_t lo, uint64_t hi, int write)
{
	for (unsigned int i = 0; i < s->nranges; i++) {
		const struct soak_range *g = &s->ranges[i];

		if (lo < g->hi && g->lo < hi && (write || g->write))
			return 1;
	}
	return 0;
}

static void soak_claim(struct soak *s, uint64_t lo, uint64_t hi, int write)
{
	s->ranges[s->nranges++] = (struct soak_range){ lo, hi, write };
}

/* The first byte where a and b differ, or len. */
static uint32_t soak_first_diff(const uint8_t *a, const uint8_t *b, uint32_t len)
{
	uint32_t i = 0;

	if (!memcmp(a, b, len))
		return len;
	while (a[i] == b[i])
		i++;
	return i;
}

static void soak_fill_model(uint8_t *p, uint64_t pattern, uint32_t len)
{
	for (uint32_t i = 0; i < len; i++)
		p[i] = (uint8_t)(pattern >> (8 * (i % 8)));
}

/*
 * Build a data job into slot k (model updated as if it ran); 0, or 1 if no
 * range free of the batch's others was found (the batch ends there).
 */
static int soak_data_job(struct soak *s, unsigned int k, int force_fresh)
{
	struct soak_job *m = &s->meta[k];
	struct vsvm_job *j = &s->jobs[k];
	uint64_t op = soak_below(s, 100);

	memset(m, 0, sizeof(*m));
	for (int tries = 0; tries < 8; tries++) {
		struct soak_region *rd = soak_pick(s, fit_writable), *rs;
		size_t max;

		if (force_fresh)
			for (unsigned int i = 0; i < s->nr; i++)
				if (s->r[i].kind == SK_ANON && s->r[i].mapped)
					rd = &s->r[i];
		rs = soak_pick(s, fit_readable);
		if (!rd || !rs)
			return 1;
		max = rd->len < rs->len ? rd->len : rs->len;
		if (max > s->v->info.max_xfer)
			max = s->v->info.max_xfer;
		m->len = soak_len(s, max);
		m->rd = rd;
		m->dst_off = soak_below(s, rd->len - m->len + 1);
		m->dst = (uintptr_t)rd->va + m->dst_off;
		if (force_fresh || op >= 80) {
			m->opcode = VSVM_WQ_OPC_FILL;
			m->rs = NULL;
		} else {
			m->opcode = op < 45 ? VSVM_WQ_OPC_MEMMOVE : VSVM_WQ_OPC_COMPARE;
			m->rs = rs;
			m->src_off = soak_below(s, rs->len - m->len + 1);
			m->src = (uintptr_t)rs->va + m->src_off;
		}
		/* COMPARE writes nothing; the program may prepare its second range (below). */
		if (soak_overlaps(s, m->dst, m->dst + m->len, 1))
			continue;
		if (m->rs && soak_overlaps(s, m->src, m->src + m->len, 0))
			continue;
		soak_claim(s, m->dst, m->dst + m->len, 1);
		if (m->rs)
			soak_claim(s, m->src, m->src + m->len, 0);
		goto build;
	}
	return 1;

build:
	switch (m->opcode) {
	case VSVM_WQ_OPC_FILL:
		m->pattern = soak_rand(s);
		soak_fill_model(m->rd->model + m->dst_off, m->pattern, m->len);
		vsvm_fill(j, (void *)(uintptr_t)m->dst, m->pattern, m->len);
		s->st->fills++;
		break;
	case VSVM_WQ_OPC_MEMMOVE:
		memmove(m->rd->model + m->dst_off, m->rs->model + m->src_off, m->len);
		vsvm_memmove(j, (void *)(uintptr_t)m->dst, (void *)(uintptr_t)m->src, m->len);
		s->st->memmoves++;
		break;
	default:
		/*
		 * Random bytes differ at once: half the time the program copies the first
		 * range over the second (where it may write without touching a fresh page),
		 * then maybe changes one byte.
		 */
		if (m->rd->kind != SK_ANON && soak_below(s, 2) &&
		    !(m->rs == m->rd && m->src_off < m->dst_off + m->len &&
		      m->dst_off < m->src_off + m->len)) {
			uint8_t *d = m->rd->model + m->dst_off;

			memcpy(d, m->rs->model + m->src_off, m->len);
			if (soak_below(s, 2))
				d[soak_below(s, m->len)] ^= 1 + soak_below(s, 255);
			memcpy(m->rd->cpu + m->dst_off, d, m->len);
		}
		m->want_at = soak_first_diff(m->rs->model + m->src_off, m->rd->model + m->dst_off,
					     m->len);
		m->want_result = m->want_at < m->len;
		vsvm_compare(j, (void *)(uintptr_t)m->src, (void *)(uintptr_t)m->dst, m->len);
		s->st->compares++;
		break;
	}
	return 0;
}

/* Build a job into slot k that must fault; 0, or 1 if no free range was found. */
static int soak_fault_job(struct soak *s, unsigned int k)
{
	struct soak_job *m = &s->meta[k];
	struct vsvm_job *j = &s->jobs[k];
	struct soak_region *bad = NULL, *ok;
	uint64_t lo;

	memset(m, 0, sizeof(*m));
	/* An unmapped region first when one is waiting for its first fault. */
	if (s->unmapped_faults == 0 || soak_below(s, 3) == 0)
		bad = soak_pick(s, fit_unmapped);
	if (!bad) {
		unsigned int kinds[] = { SK_RO, SK_HOLE, SK_NONE }, want = kinds[soak_below(s, 3)];

		for (unsigned int i = 0; i < s->nr; i++)
			if (s->r[i].kind == want)
				bad = &s->r[i];
	}
	ok = soak_pick(s, fit_writable);
	if (!bad || !ok)
		return 1;
	if (!bad->mapped)
		s->unmapped_faults++;
	m->fault = 1;
	/* The bad operand starts inside the bad region and stays there: nothing is done. */
	m->len = 1 + soak_below(s, bad->len < 64u << 10 ? bad->len : 64u << 10);
	lo = (uintptr_t)bad->va + soak_below(s, bad->len - m->len + 1);
	m->bad_lo = (uintptr_t)bad->va;
	m->bad_hi = m->bad_lo + bad->len;
	m->write = bad->kind == SK_RO || soak_below(s, 2);
	m->rd = ok;
	m->dst_off = soak_below(s, ok->len - m->len + 1);
	if (soak_overlaps(s, (uintptr_t)ok->va + m->dst_off,
			  (uintptr_t)ok->va + m->dst_off + m->len, 1))
		return 1;
	/* The valid side is claimed as written: the model checks it stayed as it was. */
	soak_claim(s, (uintptr_t)ok->va + m->dst_off, (uintptr_t)ok->va + m->dst_off + m->len, 1);
	if (m->write) {
		m->dst = lo;
		m->src = (uintptr_t)ok->va + m->dst_off;
		if (soak_below(s, 2)) {
			m->opcode = VSVM_WQ_OPC_FILL;
			vsvm_fill(j, (void *)(uintptr_t)m->dst, soak_rand(s), m->len);
		} else {
			m->opcode = VSVM_WQ_OPC_MEMMOVE;
			vsvm_memmove(j, (void *)(uintptr_t)m->dst, (void *)(uintptr_t)m->src, m->len);
		}
	} else {
		m->src = lo;
		m->dst = (uintptr_t)ok->va + m->dst_off;
		if (soak_below(s, 2)) {
			m->opcode = VSVM_WQ_OPC_MEMMOVE;
			vsvm_memmove(j, (void *)(uintptr_t)m->dst, (void *)(uintptr_t)m->src, m->len);
		} else {
			m->opcode = VSVM_WQ_OPC_COMPARE;
			vsvm_compare(j, (void *)(uintptr_t)m->src, (void *)(uintptr_t)m->dst, m->len);
		}
	}
	s->st->faults_expected++;
	return 0;
}

static const char *soak_op_name(uint32_t opcode)
{
	return opcode == VSVM_WQ_OPC_FILL ? "fill" : opcode == VSVM_WQ_OPC_MEMMOVE ? "memmove" :
										      "compare";
}

/* Pages of [off, off + len) in an anon region the device touched first: each was a fault. */
static void soak_touch(struct soak *s, struct soak_region *r, size_t off, uint32_t len)
{
	if (!r || r->kind != SK_ANON)
		return;
	for (size_t p = off / SOAK_PAGE; p <= (off + len - 1) / SOAK_PAGE; p++)
		if (!r->touched[p]) {
			r->touched[p] = 1;
			s->st->fault_pages++;
		}
}

/*
 * The program is about to read [off - 1, off + len] of r: an anon page it maps
 * that way (the zero page) no longer faults for a device read, so it counts
 * as touched, without a fault.
 */
static void soak_cpu_reads(struct soak_region *r, size_t off, uint32_t len)
{
	size_t lo = off ? off - 1 : 0, hi = off + len < r->len ? off + len : r->len - 1;

	if (r->kind != SK_ANON)
		return;
	for (size_t p = lo / SOAK_PAGE; p <= hi / SOAK_PAGE; p++)
		r->touched[p] = 1;
}

/* Check job k's record and bytes against the model; 0, or -1 (reported). */
static int soak_check(struct soak *s, unsigned int k, uint64_t index)
{
	struct soak_job *m = &s->meta[k];
	struct vsvm_sva_record *rec = &s->jobs[k].rec;
	const char *op = soak_op_name(m->opcode);

	if (m->fault) {
		if (rec->status != VSVM_WQ_ST_PAGE_FAULT || rec->fault_addr < m->bad_lo ||
		    rec->fault_addr >= m->bad_hi ||
		    !!(rec->fault_info & VSVM_WQ_FI_WRITE) != m->write || rec->bytes_completed) {
			soak_fail(s, "job %" PRIu64 " (%s of %u bytes, %s %#" PRIx64 "): status %#x "
				  "fault addr %#" PRIx64 " info %#x, %u bytes done; want PAGE_FAULT in "
				  "%#" PRIx64 "..%#" PRIx64 " (%s), nothing done", index, op, m->len,
				  m->write ? "to" : "from", m->write ? m->dst : m->src, rec->status,
				  (uint64_t)rec->fault_addr, rec->fault_info, rec->bytes_completed,
				  m->bad_lo, m->bad_hi, m->write ? "write" : "read");
			return -1;
		}
		s->st->faults_seen++;
		/* A FILL has no valid side; the others' must be as it was. */
		if (m->opcode == VSVM_WQ_OPC_FILL)
			return 0;
	} else if (rec->status != VSVM_WQ_ST_SUCCESS) {
		soak_fail(s, "job %" PRIu64 " (%s of %u bytes, src %#" PRIx64 " dst %#" PRIx64 "): "
			  "status %#x, fault addr %#" PRIx64 ", %u bytes done", index, op, m->len,
			  m->src, m->dst, rec->status, (uint64_t)rec->fault_addr, rec->bytes_completed);
		return -1;
	} else if (m->opcode == VSVM_WQ_OPC_COMPARE) {
		if (rec->result != m->want_result ||
		    (m->want_result && rec->bytes_completed != m->want_at)) {
			soak_fail(s, "job %" PRIu64 " (compare of %u bytes, %#" PRIx64 " and %#" PRIx64
				  "): result %" PRIu64 " at %u, the model says %" PRIu64 " at %u", index,
				  m->len, m->src, m->dst, (uint64_t)rec->result, rec->bytes_completed,
				  m->want_result, m->want_at);
			return -1;
		}
		s->st->bytes_verified += m->want_result ? m->want_at + 1 : m->len;
		soak_touch(s, m->rs, m->src_off, m->len);
		soak_touch(s, m->rd, m->dst_off, m->len);
		return 0;
	} else if (rec->bytes_completed != m->len) {
		soak_fail(s, "job %" PRIu64 " (%s of %u bytes): %u bytes done", index, op, m->len,
			  rec->bytes_completed);
		return -1;
	}
	if (!m->fault) {
		soak_touch(s, m->rs, m->src_off, m->len);
		soak_touch(s, m->rd, m->dst_off, m->len);
	}
	soak_cpu_reads(m->rd, m->dst_off, m->len);
	/* The destination (for a fault: the valid side, which must be as it was). */
	if (memcmp(m->rd->cpu + m->dst_off, m->rd->model + m->dst_off, m->len)) {
		uint32_t at = soak_first_diff(m->rd->cpu + m->dst_off, m->rd->model + m->dst_off,
					      m->len);

		soak_fail(s, "job %" PRIu64 " (%s of %u bytes to %s+%#zx%s): byte %u is %#x, the "
			  "model says %#x", index, op, m->len, m->rd->name, m->dst_off,
			  m->fault ? ", faulted" : "", at, m->rd->cpu[m->dst_off + at],
			  m->rd->model[m->dst_off + at]);
		return -1;
	}
	/* The bytes next to it (the batch is done: the model holds for all of it). */
	for (int side = 0; side < 2; side++) {
		size_t at = side ? m->dst_off + m->len : m->dst_off - 1;

		if ((side ? at >= m->rd->len : m->dst_off == 0) || m->rd->cpu[at] == m->rd->model[at])
			continue;
		soak_fail(s, "job %" PRIu64 " (%s of %u bytes to %s+%#zx): the byte %s it, at %#zx, "
			  "is %#x, the model says %#x", index, op, m->len, m->rd->name, m->dst_off,
			  side ? "after" : "before", at, m->rd->cpu[at], m->rd->model[at]);
		return -1;
	}
	s->st->bytes_verified += m->len;
	return 0;
}

/* Unmap or map a region again before a batch (sometimes; in a demo once each for sure). */
static int soak_events(struct soak *s)
{
	struct soak_region *r = NULL;
	uint64_t done = s->st->jobs, n = s->p.jobs;

	if (s->p.force_events && !s->st->unmaps && done >= n / 3) {
		/* shm: a write reaching its pages after the munmap would show. */
		for (unsigned int i = 0; i < s->nr; i++)
			if (s->r[i].kind == SK_SHM && s->r[i].mapped)
				r = &s->r[i];
	} else if (s->p.force_events && !s->st->remaps && done >= 2 * n / 3) {
		r = soak_pick(s, fit_unmapped);
	} else if (soak_below(s, 100) < SOAK_REMAP_PCT) {
		r = soak_pick(s, fit_toggle);
	}
	if (!r)
		return 0;
	/* After an unmap, the next fault job aims at that region. */
	if (r->mapped)
		s->unmapped_faults = 0;
	return soak_toggle(s, r);
}

/* One batch: build, submit, wait for every record, check; 0 or -1 (reported). */
static int soak_batch(struct soak *s)
{
	unsigned int want = 1 + soak_below(s, s->p.max_inflight), n = 0;
	uint64_t first = s->st->jobs;

	s->nranges = 0;
	if (want > s->p.jobs - s->st->jobs)
		want = s->p.jobs - s->st->jobs;
	while (n < want) {
		int fresh = s->p.force_events && first == 0 && n == 0;
		int fault = !fresh && soak_below(s, 100) < SOAK_FAULT_PCT;

		/* A demo faults on the unmapped region soon after the munmap. */
		if (s->p.force_events && !fresh && !s->unmapped_faults && n == 0 &&
		    soak_pick(s, fit_unmapped))
			fault = 1;
		if (fault ? soak_fault_job(s, n) : soak_data_job(s, n, fresh))
			break;
		n++;
	}
	if (!n)
		return soak_fail(s, "no job fits in an empty batch"), -1;
	if (vsvm_submit(s->v, s->jobs, n))
		return soak_fail(s, "submit of %u jobs: %s", n, strerror(errno)), -1;
	if (n > s->st->max_batch)
		s->st->max_batch = n;
	for (unsigned int k = 0; k < n; k++) {
		if (vsvm_wait(s->v, &s->jobs[k], SOAK_TIMEOUT_MS)) {
			soak_fail(s, "job %" PRIu64 " (%s of %u bytes, %u of a batch of %u): no "
				  "completion within %u ms: %s", first + k,
				  soak_op_name(s->meta[k].opcode), s->meta[k].len, k + 1, n,
				  SOAK_TIMEOUT_MS, strerror(errno));
			return -1;
		}
	}
	s->st->batches++;
	for (unsigned int k = 0; k < n; k++) {
		s->st->jobs++;
		if (soak_check(s, k, first + k))
			return -1;
	}
	return 0;
}

/*
 * Run p->jobs random jobs on v; stats in *st (also after a failure). 0 if every
 * job ended as the model said and every byte checked out, -1 otherwise.
 */
static int soak_run(struct vsvm *v, const struct soak_params *p, struct soak_stats *st)
{
	struct soak *s = calloc(1, sizeof(*s));
	uint64_t t0 = soak_now_ns(), swept = 0;
	int ret = -1;

	memset(st, 0, sizeof(*st));
	if (!s) {
		st->failed = 1;
		return -1;
	}
	s->v = v;
	s->p = *p;
	s->st = st;
	s->rng = p->seed;
	if (s->p.max_inflight < 1 || s->p.max_inflight > SOAK_MAX_INFLIGHT)
		s->p.max_inflight = SOAK_MAX_INFLIGHT;
	if (soak_setup(s))
		goto out;
	while (st->jobs < s->p.jobs) {
		if (soak_events(s) || soak_batch(s))
			goto out;
		if (st->jobs - swept >= SOAK_SWEEP_JOBS) {
			if (soak_sweep_all(s))
				goto out;
			swept = st->jobs;
		}
	}
	if (soak_sweep_all(s))
		goto out;
	if (st->faults_seen != st->faults_expected) {
		soak_fail(s, "%" PRIu64 " faults expected, %" PRIu64 " seen", st->faults_expected,
			  st->faults_seen);
		goto out;
	}
	ret = 0;
out:
	st->ns = soak_now_ns() - t0;
	soak_teardown(s);
	free(s);
	if (ret)
		st->failed = 1;
	return ret;
}

/* The machine-readable summary of a soak: "<who>: jobs=N ... seconds=S". */
static void soak_print(const char *who, const struct soak_stats *st, const char *tail)
{
	printf("%s: jobs=%" PRIu64 " bytes_verified=%" PRIu64 " faults_expected=%" PRIu64
	       " faults_seen=%" PRIu64 " fault_pages=%" PRIu64 " memmoves=%" PRIu64 " fills=%"
	       PRIu64 " compares=%" PRIu64 " unmaps=%" PRIu64 " remaps=%" PRIu64 " batches=%"
	       PRIu64 " max_in_flight=%" PRIu64 " bytes_swept=%" PRIu64 " seconds=%.1f%s\n", who,
	       st->jobs, st->bytes_verified, st->faults_expected, st->faults_seen, st->fault_pages,
	       st->memmoves, st->fills, st->compares, st->unmaps, st->remaps, st->batches,
	       st->max_batch, st->bytes_swept, st->ns / 1e9, tail);
	fflush(stdout);
}

#endif /* SVA_SOAK_H */
