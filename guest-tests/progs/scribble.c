/*
 * scribble: a hostile guest program. Maps a PCI memory BAR through its sysfs
 * resource file and writes random values at random aligned offsets (32- and
 * 64-bit), printing each write before it makes it, so the console shows the
 * sequence even if the guest dies from it. Used on the remap unit's BAR0 (the
 * VT-d registers) while translation is on: the guest may fall over; the server
 * must not.
 *
 * With --tables R it first takes the unit's structures over (VT-d 9.1-9.6): a
 * root table, context table, PASID directory, PASID table and a first-stage
 * table looping on itself in pages of its own (physical addresses from
 * /proc/self/pagemap), RTADDR pointed at them (SRTP), the invalidation queue
 * moved into another of its pages and global invalidations queued there; then
 * R rounds of random changes to those pages, each followed by invalidations or
 * by a random descriptor. The unit now walks whatever the program wrote.
 *
 *   scribble RESOURCE_FILE [--writes N] [--seed S] [--tables R]
 *
 * Needs iomem=relaxed on the kernel command line when a driver claimed the
 * range (intel-iommu does, for dmar0).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static uint64_t state;

/* VT-d registers (VT-d 11.4) and the bits used here. */
#define GCMD 0x18
#define GSTS 0x1c
#define RTADDR 0x20
#define FSTS 0x34
#define IQH 0x80
#define IQT 0x88
#define IQA 0x90
#define GCMD_SRTP (1u << 30)
#define GCMD_QIE (1u << 26)
#define GSTS_TES (1u << 31)
#define GSTS_QIES (1u << 26)
#define FSTS_IQE (1u << 4)
#define RTADDR_TTM_SCALABLE (1ull << 10)
#define IQA_DW_256 (1ull << 11)

/* Structure entries (VT-d 9.1, 9.4, 9.5, 9.6) and page-table bits (x86 format). */
#define PRESENT 1ull
#define CTX_PASIDE (1ull << 3)
#define CTX_PDTS(n) ((uint64_t)(n) << 9)
#define PASID_AW_48 (2ull << 2)
#define PASID_PGTT_FS (1ull << 6)
#define PTE_TABLE 0x67ull /* P, RW, US, A, D */

/* Invalidation descriptors (VT-d 6.5.2): type, granularity, wait status write. */
#define DESC_BYTES 32
#define CC_GLOBAL (0x1ull | (1ull << 4))
#define IOTLB_GLOBAL (0x2ull | (1ull << 4))
#define PC_ALL (0x7ull | (3ull << 4))
#define WAIT_SW (0x5ull | (1ull << 5))
#define WAIT_DONE 0x2ull

#define PAGE 4096
enum { ROOT, CONTEXT, PASID_DIR, PASID_TABLE, FS_TABLE, QUEUE, STATUS, PAGES };

/* xorshift64*: deterministic for a seed, so a run can be replayed. */
static uint64_t next(void)
{
	state ^= state >> 12;
	state ^= state << 25;
	state ^= state >> 27;
	return state * 0x2545f4914f6cdd1dull;
}

static volatile uint8_t *bar;

static uint32_t rd32(size_t off) { return *(volatile uint32_t *)(bar + off); }
static void wr32(size_t off, uint32_t v) { *(volatile uint32_t *)(bar + off) = v; }
static uint64_t rd64(size_t off) { return *(volatile uint64_t *)(bar + off); }
static void wr64(size_t off, uint64_t v) { *(volatile uint64_t *)(bar + off) = v; }

/* Waits (bounded) until the GSTS bits in mask equal want; returns whether they did. */
static int wait_gsts(uint32_t mask, uint32_t want)
{
	for (int i = 0; i < 1000; i++)
		if ((rd32(GSTS) & mask) == want)
			return 1;
	return 0;
}

/* The physical address of a locked page of ours (0 when pagemap hides it). */
static uint64_t phys(int pagemap, void *page)
{
	uint64_t entry = 0;
	off_t at = (off_t)((uintptr_t)page / PAGE) * 8;
	if (pread(pagemap, &entry, 8, at) != 8 || !(entry >> 63))
		return 0;
	return (entry & ((1ull << 55) - 1)) * PAGE;
}

/* Writes the 256-bit descriptor d at *tail of our queue and advances the tail. */
static void queue_desc(uint64_t *queue, unsigned *tail, const uint64_t d[4])
{
	memcpy(queue + (*tail % (PAGE / DESC_BYTES)) * 4, d, DESC_BYTES);
	(*tail)++;
}

/* Queues global context-cache, PASID-cache and IOTLB invalidations and a wait writing
 * WAIT_DONE to status_pa, as a driver does after changing the structures. */
static void invalidate_all(uint64_t *queue, unsigned *tail, uint64_t status_pa)
{
	const uint64_t cc[4] = {CC_GLOBAL}, pc[4] = {PC_ALL}, iotlb[4] = {IOTLB_GLOBAL};
	const uint64_t wait[4] = {WAIT_SW | (WAIT_DONE << 32), status_pa};
	queue_desc(queue, tail, cc);
	queue_desc(queue, tail, pc);
	queue_desc(queue, tail, iotlb);
	queue_desc(queue, tail, wait);
}

static int tables(unsigned long rounds)
{
	int pagemap = open("/proc/self/pagemap", O_RDONLY);
	uint8_t *mem = mmap(NULL, PAGES * PAGE, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE | MAP_LOCKED, -1, 0);
	if (pagemap < 0 || mem == MAP_FAILED) {
		fprintf(stderr, "scribble: tables: no pagemap or no memory: %s\n", strerror(errno));
		return 1;
	}
	uint64_t pa[PAGES];
	uint64_t *page[PAGES];
	for (int i = 0; i < PAGES; i++) {
		page[i] = (uint64_t *)(mem + i * PAGE);
		page[i][0] = 0; /* touch: populated and locked already, but be sure */
		pa[i] = phys(pagemap, page[i]);
		if (!pa[i]) {
			fprintf(stderr, "scribble: tables: no physical address for page %d\n", i);
			return 1;
		}
	}
	/* Every root entry (both halves) and every context entry lead to the same chain, so
	 * whichever device the unit translates walks it. */
	for (int i = 0; i < PAGE / 8; i++) {
		page[ROOT][i] = pa[CONTEXT] | PRESENT;
		page[PASID_DIR][i] = pa[PASID_TABLE] | PRESENT;
		page[FS_TABLE][i] = pa[FS_TABLE] | PTE_TABLE; /* a loop */
	}
	for (int i = 0; i < PAGE / 32; i++) {
		uint64_t *ctx = page[CONTEXT] + i * 4;
		ctx[0] = pa[PASID_DIR] | CTX_PDTS(0) | CTX_PASIDE | PRESENT;
		ctx[1] = 0; /* RID_PASID 0 */
		ctx[2] = ctx[3] = 0;
	}
	for (int i = 0; i < PAGE / 64; i++) {
		uint64_t *pe = page[PASID_TABLE] + i * 8;
		memset(pe, 0, 64);
		pe[0] = PASID_PGTT_FS | PASID_AW_48 | PRESENT;
		pe[1] = 1; /* domain 1 */
		pe[2] = pa[FS_TABLE];
	}
	uint32_t keep = rd32(GSTS) & (GSTS_TES | GSTS_QIES);
	printf("scribble: tables: root 0x%" PRIx64 " context 0x%" PRIx64 " PASID dir 0x%" PRIx64
	       " table 0x%" PRIx64 " first stage 0x%" PRIx64 " queue 0x%" PRIx64 ", GSTS 0x%x\n",
	       pa[ROOT], pa[CONTEXT], pa[PASID_DIR], pa[PASID_TABLE], pa[FS_TABLE], pa[QUEUE], keep);
	fflush(stdout);
	wr64(RTADDR, pa[ROOT] | RTADDR_TTM_SCALABLE);
	wr32(GCMD, keep | GCMD_SRTP);
	printf("scribble: tables: root table set: %s\n", wait_gsts(1u << 30, 1u << 30) ? "yes" : "no");
	/* The queue: off, moved into our page (IQH restarts at 0), on again. */
	wr32(GCMD, keep & ~GCMD_QIE);
	wait_gsts(GSTS_QIES, 0);
	wr64(IQT, 0);
	wr64(IQA, pa[QUEUE] | IQA_DW_256);
	wr32(GCMD, keep | GCMD_QIE);
	printf("scribble: tables: queue moved: %s\n", wait_gsts(GSTS_QIES, GSTS_QIES) ? "yes" : "no");
	fflush(stdout);
	volatile uint32_t *status = (volatile uint32_t *)page[STATUS];
	unsigned tail = 0;
	unsigned long done = 0, stopped = 0;
	for (unsigned long n = 0; n <= rounds; n++) {
		if (n > 0) {
			/* One random change to one of the structures (or a random queue slot). */
			uint64_t r = next(), value = next();
			int which = (int)(r % (FS_TABLE + 1));
			size_t q = (size_t)(r >> 8) % (PAGE / 8);
			if (r & (1 << 6))
				page[which][q] ^= 1ull << (value % 64);
			else
				page[which][q] = value;
			printf("scribble: table %d +0x%zx = %#" PRIx64 "\n", which, q * 8,
			       page[which][q]);
		}
		if (n % 4 == 3) {
			const uint64_t junk[4] = {next(), next(), next(), next()};
			queue_desc(page[QUEUE], &tail, junk);
		}
		*status = 0;
		invalidate_all(page[QUEUE], &tail, pa[STATUS]);
		wr64(IQT, (uint64_t)(tail % (PAGE / DESC_BYTES)) * DESC_BYTES);
		for (int i = 0; i < 2000 && *status != WAIT_DONE; i++)
			usleep(50);
		if (*status == WAIT_DONE)
			done++;
		if (rd32(FSTS) & FSTS_IQE) {
			/* What Linux's qi_check_fault does: the bad descriptor becomes a wait
			 * without status write, IQE cleared; the queue runs on from there. */
			const uint64_t nop[4] = {0x5};
			unsigned at = (unsigned)(rd64(IQH) / DESC_BYTES);
			queue_desc(page[QUEUE], &at, nop);
			wr32(FSTS, FSTS_IQE);
			stopped++;
		}
	}
	printf("scribble: tables: done, %lu rounds, %lu invalidation waits completed, %lu queue "
	       "errors\n", rounds, done, stopped);
	fflush(stdout);
	return 0;
}

int main(int argc, char **argv)
{
	unsigned long writes = 1000;
	uint64_t seed = 1;
	unsigned long rounds = 0;

	if (argc < 2) {
		fprintf(stderr, "usage: scribble RESOURCE_FILE [--writes N] [--seed S]\n");
		return 2;
	}
	for (int i = 2; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--writes"))
			writes = strtoul(argv[i + 1], NULL, 0);
		else if (!strcmp(argv[i], "--seed"))
			seed = strtoull(argv[i + 1], NULL, 0);
		else if (!strcmp(argv[i], "--tables"))
			rounds = strtoul(argv[i + 1], NULL, 0);
	}
	state = seed ? seed : 1;

	int fd = open(argv[1], O_RDWR | O_SYNC);
	if (fd < 0) {
		fprintf(stderr, "scribble: open %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	struct stat st;
	if (fstat(fd, &st) < 0 || st.st_size < 8) {
		fprintf(stderr, "scribble: %s: no size\n", argv[1]);
		return 1;
	}
	size_t size = (size_t)st.st_size;
	bar = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (bar == MAP_FAILED) {
		fprintf(stderr, "scribble: mmap %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	printf("scribble: %s, %zu bytes, %lu writes, seed %#" PRIx64 "\n", argv[1], size,
	       writes, seed);
	fflush(stdout);
	if (rounds && tables(rounds))
		return 1;
	for (unsigned long n = 0; n < writes; n++) {
		uint64_t r = next(), value = next();
		int wide = r & 1;
		size_t off = (size_t)(r >> 8) % size & ~(size_t)(wide ? 7 : 3);
		printf("scribble: %lu: %s 0x%zx <- %#" PRIx64 "\n", n, wide ? "q" : "l", off,
		       wide ? value : (uint32_t)value);
		fflush(stdout);
		if (wide)
			*(volatile uint64_t *)(bar + off) = value;
		else
			*(volatile uint32_t *)(bar + off) = (uint32_t)value;
	}
	printf("scribble: done, %lu writes\n", writes);
	return 0;
}
