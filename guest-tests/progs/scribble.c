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
 * With --cases ACCEL_RESOURCE_FILE it takes the unit over the same way and runs targeted
 * cases instead, each checked against the architected outcome read back from the unit's
 * registers (FSTS, the fault recording registers, IQH, IQERCD) and the accelerator's
 * DMA_STATUS: a first-stage loop (bounded walk; with PS 0x72), reserved bits in the
 * context and PASID entries (0x42, 0x5a), the PASID table and the first-stage table
 * outside RAM (0x58, 0x73), a copy to an unmapped IOVA (TRANSLATION, 0x71), the queue tail
 * past the queue's end (IQE, IQEI 1) and a wait status address outside RAM (IQE, IQEI 2),
 * each followed by the recovery a driver makes. Then it switches the unit to legacy mode
 * (RTADDR.TTM 00, SRTP) and runs the legacy counterparts against a legacy root and context
 * table and a second-stage table: a second-stage loop (bounded walk; with PS 0x0c), reserved
 * bits in the root and context entries (0x0a, 0x0b), the root table, the context table and
 * the second-stage table outside RAM (0x08, 0x09, 0x07), a write and a read at unmapped
 * IOVAs (0x05, 0x06). The accelerator's plain engine (its BAR0 through ACCEL_RESOURCE_FILE)
 * makes the requests. One line per case:
 * "hostile: <case>: <outcome> OK" or "hostile: <case>: FAIL: <what was seen>".
 *
 *   scribble RESOURCE_FILE [--writes N] [--seed S] [--tables R] [--cases ACCEL_RESOURCE_FILE]
 *
 * Needs iomem=relaxed on the kernel command line when a driver claimed the
 * range (intel-iommu does, for dmar0).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysinfo.h>
#include <time.h>
#include <unistd.h>

static uint64_t state;

/* VT-d registers (VT-d 11.4) and the bits used here. */
#define CAP 0x08
#define GCMD 0x18
#define GSTS 0x1c
#define RTADDR 0x20
#define FSTS 0x34
#define FECTL 0x38
#define IQH 0x80
#define IQT 0x88
#define IQA 0x90
#define IQERCD 0xb0
#define GCMD_SRTP (1u << 30)
#define GCMD_QIE (1u << 26)
#define GSTS_TES (1u << 31)
#define GSTS_RTPS (1u << 30)
#define GSTS_QIES (1u << 26)
#define FSTS_PFO (1u << 0)
#define FSTS_PPF (1u << 1)
#define FSTS_IQE (1u << 4)
#define FSTS_ICE (1u << 5)
#define FSTS_ITE (1u << 6)
#define FSTS_ERRORS (FSTS_PFO | FSTS_IQE | FSTS_ICE | FSTS_ITE) /* RW1C */
#define FECTL_IM (1u << 31)
#define IQERCD_IQEI(v) ((unsigned)((v) & 0xf))
#define RTADDR_TTM_SCALABLE (1ull << 10)
#define RTADDR_TTM_LEGACY 0ull
#define IQA_DW_256 (1ull << 11)
/* CAP.FRO (bits 33:24, in 16-byte units) and CAP.NFR (bits 47:40, count - 1): where the
 * fault recording registers are and how many. */
#define CAP_FRO(c) ((size_t)(((c) >> 24) & 0x3ff) * 16)
#define CAP_NFR(c) ((unsigned)(((c) >> 40) & 0xff) + 1)
/* A fault recording register (VT-d 11.4.14), upper quadword: SID 79:64, PP 95, FR 103:96,
 * T 126 (1 read, 0 write), F 127 (RW1C); lower quadword: FI, the page address, 63:12. */
#define FRCD_BYTES 16
#define FRCD_SID(hi) ((unsigned)((hi) & 0xffff))
#define FRCD_PP(hi) ((unsigned)((hi) >> 31) & 1)
#define FRCD_FR(hi) ((unsigned)((hi) >> 32) & 0xff)
#define FRCD_T(hi) ((unsigned)((hi) >> 62) & 1)
#define FRCD_F (1ull << 63)
#define FRCD_FI(lo) ((uint64_t)(lo) & ~(uint64_t)0xfff)

/* Structure entries (VT-d 9.1, 9.4, 9.5, 9.6) and page-table bits (x86 format). */
#define PRESENT 1ull
#define CTX_PASIDE (1ull << 3)
#define CTX_PDTS(n) ((uint64_t)(n) << 9)
#define PASID_AW_48 (2ull << 2)
#define PASID_PGTT_FS (1ull << 6)
#define PTE_TABLE 0x67ull /* P, RW, US, A, D */
#define PTE_BYTES 8
#define PTE_PS (1ull << 7) /* a large page: reserved in the top level (PML4) */
/* Legacy-mode entries (VT-d 9.1, 9.3): a root entry is 128 bits (the upper half reserved),
 * a context entry 128 bits: P, TT 00 (untranslated requests, second stage) and SLPTPTR in
 * the lower half, AW and DID in the upper. Second-stage entries (9.8): R, W, PS. */
#define LEGACY_ROOT_WORDS 2
#define LEGACY_CONTEXT_WORDS 2
#define LCTX_AW_48 2ull /* AW 010b: a 4-level table, 48-bit input */
#define LCTX_DID(d) ((uint64_t)(d) << 8)
#define SS_RW 0x3ull /* R, W */
#define SS_PS (1ull << 7) /* a large page: reserved in the top level */
/* A bit no address width reaches (MGAW is 48): reserved in every pointer field. */
#define ABOVE_WIDTH (1ull << 62)

/* Invalidation descriptors (VT-d 6.5.2): type, granularity, wait status write. */
#define DESC_BYTES 32
#define QUEUE_SLOTS (PAGE / DESC_BYTES) /* IQA.QS 0: one 4 KiB page */
#define CC_GLOBAL (0x1ull | (1ull << 4))
#define IOTLB_GLOBAL (0x2ull | (1ull << 4))
#define PC_ALL (0x7ull | (3ull << 4))
#define WAIT 0x5ull
#define WAIT_SW (WAIT | (1ull << 5))
#define WAIT_DONE 0x2ull

#define PAGE 4096
/* Our pages: the unit's structures, then (for --cases) a well-formed 4-level first-stage
 * tree mapping IOVA_SRC and IOVA_DST onto two data pages. */
enum {
	ROOT, CONTEXT, PASID_DIR, PASID_TABLE, FS_TABLE, QUEUE, STATUS,
	FS_TOP, FS_L3, FS_L2, FS_L1, SRC, DST, PAGES
};

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
	memcpy(queue + (*tail % QUEUE_SLOTS) * 4, d, DESC_BYTES);
	(*tail)++;
}

/* Queues global context-cache, PASID-cache (scalable mode only: legacy mode has no PASID
 * cache) and IOTLB invalidations and a wait writing WAIT_DONE to status_pa, as a driver
 * does after changing the structures. */
static void invalidate_all(uint64_t *queue, unsigned *tail, uint64_t status_pa, int legacy)
{
	const uint64_t cc[4] = {CC_GLOBAL}, pc[4] = {PC_ALL}, iotlb[4] = {IOTLB_GLOBAL};
	const uint64_t wait[4] = {WAIT_SW | (WAIT_DONE << 32), status_pa};
	queue_desc(queue, tail, cc);
	if (!legacy)
		queue_desc(queue, tail, pc);
	queue_desc(queue, tail, iotlb);
	queue_desc(queue, tail, wait);
}

/* The unit taken over: our pages, their physical addresses, the tail of our queue, and
 * whether RTADDR now says legacy mode (no PASID cache to invalidate then). */
struct unit {
	uint64_t pa[PAGES];
	uint64_t *page[PAGES];
	unsigned tail;
	int legacy;
};

/* Every root entry (both halves), context entry, PASID directory entry and PASID entry
 * leads to the first-stage table at top, so whichever device the unit translates, with
 * or without PASID, walks it. */
static void build(struct unit *u, uint64_t top)
{
	for (int i = 0; i < PAGE / 8; i++) {
		u->page[ROOT][i] = u->pa[CONTEXT] | PRESENT;
		u->page[PASID_DIR][i] = u->pa[PASID_TABLE] | PRESENT;
	}
	for (int i = 0; i < PAGE / 32; i++) {
		uint64_t *ctx = u->page[CONTEXT] + i * 4;
		ctx[0] = u->pa[PASID_DIR] | CTX_PDTS(0) | CTX_PASIDE | PRESENT;
		ctx[1] = 0; /* RID_PASID 0 */
		ctx[2] = ctx[3] = 0;
	}
	for (int i = 0; i < PAGE / 64; i++) {
		uint64_t *pe = u->page[PASID_TABLE] + i * 8;
		memset(pe, 0, 64);
		pe[0] = PASID_PGTT_FS | PASID_AW_48 | PRESENT;
		pe[1] = 1; /* domain 1 */
		pe[2] = top;
	}
}

/* Queues the invalidations after a change, with a wait writing WAIT_DONE into our status
 * page, moves the tail and waits (bounded) for the status: whether it came. */
static int sync_unit(struct unit *u)
{
	volatile uint32_t *status = (volatile uint32_t *)u->page[STATUS];

	*status = 0;
	invalidate_all(u->page[QUEUE], &u->tail, u->pa[STATUS], u->legacy);
	wr64(IQT, (uint64_t)(u->tail % QUEUE_SLOTS) * DESC_BYTES);
	for (int i = 0; i < 2000 && *status != WAIT_DONE; i++)
		usleep(50);
	return *status == WAIT_DONE;
}

/* Takes the unit's structures over: our pages, the chain of build() ending at a first-stage
 * table looping on itself, the root table pointer and the invalidation queue moved there. */
static int take_over(struct unit *u)
{
	int pagemap = open("/proc/self/pagemap", O_RDONLY);
	uint8_t *mem = mmap(NULL, PAGES * PAGE, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE | MAP_LOCKED, -1, 0);
	if (pagemap < 0 || mem == MAP_FAILED) {
		fprintf(stderr, "scribble: tables: no pagemap or no memory: %s\n", strerror(errno));
		return 1;
	}
	for (int i = 0; i < PAGES; i++) {
		u->page[i] = (uint64_t *)(mem + i * PAGE);
		u->page[i][0] = 0; /* touch: populated and locked already, but be sure */
		u->pa[i] = phys(pagemap, u->page[i]);
		if (!u->pa[i]) {
			fprintf(stderr, "scribble: tables: no physical address for page %d\n", i);
			return 1;
		}
	}
	close(pagemap);
	for (int i = 0; i < PAGE / 8; i++)
		u->page[FS_TABLE][i] = u->pa[FS_TABLE] | PTE_TABLE; /* a loop */
	build(u, u->pa[FS_TABLE]);
	uint32_t keep = rd32(GSTS) & (GSTS_TES | GSTS_QIES);
	printf("scribble: tables: root 0x%" PRIx64 " context 0x%" PRIx64 " PASID dir 0x%" PRIx64
	       " table 0x%" PRIx64 " first stage 0x%" PRIx64 " queue 0x%" PRIx64 ", GSTS 0x%x\n",
	       u->pa[ROOT], u->pa[CONTEXT], u->pa[PASID_DIR], u->pa[PASID_TABLE],
	       u->pa[FS_TABLE], u->pa[QUEUE], keep);
	fflush(stdout);
	wr64(RTADDR, u->pa[ROOT] | RTADDR_TTM_SCALABLE);
	wr32(GCMD, keep | GCMD_SRTP);
	printf("scribble: tables: root table set: %s\n",
	       wait_gsts(GSTS_RTPS, GSTS_RTPS) ? "yes" : "no");
	/* The queue: off, moved into our page (IQH restarts at 0), on again. */
	wr32(GCMD, keep & ~GCMD_QIE);
	wait_gsts(GSTS_QIES, 0);
	wr64(IQT, 0);
	wr64(IQA, u->pa[QUEUE] | IQA_DW_256);
	wr32(GCMD, keep | GCMD_QIE);
	printf("scribble: tables: queue moved: %s\n",
	       wait_gsts(GSTS_QIES, GSTS_QIES) ? "yes" : "no");
	fflush(stdout);
	u->tail = 0;
	u->legacy = 0;
	return 0;
}

static int tables(unsigned long rounds)
{
	struct unit u;
	unsigned long done = 0, stopped = 0;

	if (take_over(&u))
		return 1;
	for (unsigned long n = 0; n <= rounds; n++) {
		if (n > 0) {
			/* One random change to one of the structures (or a random queue slot). */
			uint64_t r = next(), value = next();
			int which = (int)(r % (FS_TABLE + 1));
			size_t q = (size_t)(r >> 8) % (PAGE / 8);
			if (r & (1 << 6))
				u.page[which][q] ^= 1ull << (value % 64);
			else
				u.page[which][q] = value;
			printf("scribble: table %d +0x%zx = %#" PRIx64 "\n", which, q * 8,
			       u.page[which][q]);
		}
		if (n % 4 == 3) {
			const uint64_t junk[4] = {next(), next(), next(), next()};
			queue_desc(u.page[QUEUE], &u.tail, junk);
		}
		if (sync_unit(&u))
			done++;
		if (rd32(FSTS) & FSTS_IQE) {
			/* What Linux's qi_check_fault does: the bad descriptor becomes a wait
			 * without status write, IQE cleared; the queue runs on from there. */
			const uint64_t nop[4] = {WAIT};
			unsigned at = (unsigned)(rd64(IQH) / DESC_BYTES);
			queue_desc(u.page[QUEUE], &at, nop);
			wr32(FSTS, FSTS_IQE);
			stopped++;
		}
	}
	printf("scribble: tables: done, %lu rounds, %lu invalidation waits completed, %lu queue "
	       "errors\n", rounds, done, stopped);
	fflush(stdout);
	return 0;
}

/* --cases: targeted hostile cases against the unit taken over, each checked against the
 * architected outcome read back from the unit's registers and the accelerator's status.
 * The accelerator's plain engine (its BAR0, mapped like the unit's) makes the requests:
 * without PASID, so they walk RID_PASID's entry (PASID 0) of our tables. */

/* The accelerator's plain engine (devices/accel/README.md, BAR0). */
#define ACCEL_DMA_SRC 0x010
#define ACCEL_DMA_DST 0x018
#define ACCEL_DMA_LEN 0x020
#define ACCEL_DMA_CMD 0x024
#define ACCEL_DMA_STATUS 0x028
#define ACCEL_DMA_DONE 0x02c
#define ACCEL_CMD_START 1u
#define ACCEL_STATE(st) ((st) & 3u)
#define ACCEL_STATE_DONE 2u
#define ACCEL_STATE_ERROR 3u
#define ACCEL_CODE(st) (((st) >> 8) & 0xffu)
#define ACCEL_CODE_TRANSLATION 5u

/* Scalable-mode fault reasons (VT-d 7.1.3), as tests/hostile_guests expects them. */
#define FR_CONTEXT_RESERVED 0x42 /* SCT.3 */
#define FR_PASID_TABLE_ACCESS 0x58 /* SPT.1: the PASID table could not be read */
#define FR_PASID_ENTRY_RESERVED 0x5a /* SPT.3 */
#define FR_FS_NOT_PRESENT 0x71 /* SFS.2 */
#define FR_FS_RESERVED 0x72 /* SFS.3 */
#define FR_FS_ROOT_ACCESS 0x73 /* SFS.4: FSPTPTR could not be read */

/* IQERCD.IQEI (VT-d 11.4.9.5). */
#define IQEI_TAIL 1 /* invalid tail pointer */
#define IQEI_FETCH 2 /* descriptor fetch or status write failed */

/* Far above the guest's RAM (the harness gives 512 MiB; none is mapped up here) and inside
 * the unit's 48-bit address width, so it is not a reserved-bit case but a missing one. */
#define OUTSIDE_RAM (1ull << 40)
#define FOUR_GIB (4ull << 30)
/* Our tree maps IOVA_SRC and IOVA_DST; IOVA_UNMAPPED is a leaf entry left clear. */
#define IOVA_SRC 0x1000ull
#define IOVA_DST 0x2000ull
#define IOVA_UNMAPPED 0x3000ull
/* Each case reads from its own never-translated IOVA (a top-level slot of its own): the
 * device's ATC, when ATS is on, holds nothing for it that a previous case left. */
#define CASE_IOVA(n) ((uint64_t)(n) << 39)
#define COPY_BYTES 256u
#define POLLS 20000 /* 50 us each: a second */
#define POLL_US 50
/* The unit records a fault the host's walk reported on the front end's own thread, so the
 * record may come after the device's status: after the first record (or none expected)
 * we wait this long more before counting, so that a late extra one is counted too. */
#define SETTLE_US 50000

static volatile uint8_t *accel;
static unsigned accel_sid;
static unsigned cases_run, cases_failed;
static size_t frcd_base;
static unsigned frcd_count;

static uint32_t accel_rd32(size_t off) { return *(volatile uint32_t *)(accel + off); }
static void accel_wr32(size_t off, uint32_t v) { *(volatile uint32_t *)(accel + off) = v; }
static void accel_wr64(size_t off, uint64_t v) { *(volatile uint64_t *)(accel + off) = v; }

/* Runs one copy on the plain engine and waits (bounded) until it completed: DMA_STATUS. */
static uint32_t copy(uint64_t src, uint64_t dst, uint32_t len)
{
	uint32_t before = accel_rd32(ACCEL_DMA_DONE);

	accel_wr64(ACCEL_DMA_SRC, src);
	accel_wr64(ACCEL_DMA_DST, dst);
	accel_wr32(ACCEL_DMA_LEN, len);
	accel_wr32(ACCEL_DMA_CMD, ACCEL_CMD_START);
	/* DMA_DONE counts jobs ended (done or error): a stale DONE state cannot fool us. */
	for (int i = 0; i < POLLS && accel_rd32(ACCEL_DMA_DONE) == before; i++)
		usleep(POLL_US);
	return accel_rd32(ACCEL_DMA_STATUS);
}

/* The fault records with F set: how many, and the first of them in *lo, *hi. */
static unsigned faults(uint64_t *lo, uint64_t *hi)
{
	unsigned n = 0;

	*lo = *hi = 0;
	for (unsigned i = 0; i < frcd_count; i++) {
		uint64_t h = rd64(frcd_base + i * FRCD_BYTES + 8);
		if (!(h & FRCD_F))
			continue;
		if (!n++) {
			*hi = h;
			*lo = rd64(frcd_base + i * FRCD_BYTES);
		}
	}
	return n;
}

/* The fault records after a copy: waits (bounded) until there are want of them, then
 * SETTLE_US more; how many there are then (the first in *lo, *hi), and in *us how long the
 * first took to appear (in polls of POLL_US). */
static unsigned await_faults(unsigned want, uint64_t *lo, uint64_t *hi, unsigned *us)
{
	int i = 0;

	for (; i < POLLS && faults(lo, hi) < want; i++)
		usleep(POLL_US);
	*us = (unsigned)(i * POLL_US);
	usleep(SETTLE_US);
	return faults(lo, hi);
}

/* Clears every fault record (F is RW1C) and the error bits of FSTS, then reads FSTS back:
 * MMIO writes are posted, and the accelerator is another function with a socket of its own,
 * so without the read a clear still in flight could erase the record of the next copy. */
static void clear_faults(void)
{
	for (unsigned i = 0; i < frcd_count; i++)
		wr64(frcd_base + i * FRCD_BYTES + 8, FRCD_F);
	wr32(FSTS, FSTS_ERRORS);
	(void)rd32(FSTS);
}

static void result(const char *name, int ok, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Prints "hostile: NAME: <what> OK" or "hostile: NAME: FAIL: <what>" and counts it. */
static void result(const char *name, int ok, const char *fmt, ...)
{
	va_list ap;

	cases_run++;
	cases_failed += !ok;
	printf("hostile: %s: %s", name, ok ? "" : "FAIL: ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("%s\n", ok ? " OK" : "");
	fflush(stdout);
}

/* Well-formed structures leading to our tree at FS_TOP (or to the first-stage table top). */
static void reset(struct unit *u, uint64_t top)
{
	build(u, top);
	memset(u->page[FS_TOP], 0, PAGE);
	memset(u->page[FS_L3], 0, PAGE);
	memset(u->page[FS_L2], 0, PAGE);
	memset(u->page[FS_L1], 0, PAGE);
	u->page[FS_TOP][0] = u->pa[FS_L3] | PTE_TABLE;
	u->page[FS_L3][0] = u->pa[FS_L2] | PTE_TABLE;
	u->page[FS_L2][0] = u->pa[FS_L1] | PTE_TABLE;
	u->page[FS_L1][IOVA_SRC / PAGE] = u->pa[SRC] | PTE_TABLE;
	u->page[FS_L1][IOVA_DST / PAGE] = u->pa[DST] | PTE_TABLE;
}

/* After the caller broke the structures: invalidate, start from no fault, copy from src to
 * dst; the copy must end in TRANSLATION with exactly one fault record: reason, our
 * accelerator's source-id, the faulting page addr, no PASID, and the access (write or read). */
static void expect_fault(struct unit *u, const char *name, uint64_t src, uint64_t dst,
			 unsigned reason, uint64_t addr, int write)
{
	uint64_t lo, hi;
	unsigned us;

	if (!sync_unit(u)) {
		result(name, 0, "the invalidation wait did not complete");
		return;
	}
	clear_faults();
	uint32_t st = copy(src, dst, COPY_BYTES);
	unsigned n = await_faults(1, &lo, &hi, &us);
	int ok = ACCEL_STATE(st) == ACCEL_STATE_ERROR && ACCEL_CODE(st) == ACCEL_CODE_TRANSLATION &&
		 n == 1 && FRCD_FR(hi) == reason && FRCD_SID(hi) == accel_sid &&
		 FRCD_FI(lo) == addr && !FRCD_PP(hi) && FRCD_T(hi) == !write;
	if (ok)
		result(name, 1, "reason 0x%02x (source-id 0x%04x, address 0x%" PRIx64 ", %s; "
		       "recorded after %u us of polling)", reason, accel_sid, addr,
		       write ? "write" : "read", us);
	else
		result(name, 0, "DMA_STATUS 0x%x, %u records, first: reason 0x%02x source-id 0x%04x "
		       "address 0x%" PRIx64 " PP %u T %u; want error code %u, 1 record: reason "
		       "0x%02x source-id 0x%04x address 0x%" PRIx64 " PP 0 T %d",
		       st, n, FRCD_FR(hi), FRCD_SID(hi), FRCD_FI(lo), FRCD_PP(hi), FRCD_T(hi),
		       ACCEL_CODE_TRANSLATION, reason, accel_sid, addr, !write);
	clear_faults();
}

/* A copy from IOVA src to IOVA dst through the well-formed tables the caller set up, which
 * map them onto our SRC and DST pages: the bytes must land in our DST page. Proves the unit
 * walks what we wrote, so that the faults after it are ours. */
static void copy_through(struct unit *u, const char *name, uint64_t src_iova, uint64_t dst_iova)
{
	uint64_t lo, hi;
	unsigned us;
	uint8_t *src = (uint8_t *)u->page[SRC], *dst = (uint8_t *)u->page[DST];

	for (unsigned i = 0; i < COPY_BYTES; i++)
		src[i] = (uint8_t)next();
	memset(dst, 0, COPY_BYTES);
	int synced = sync_unit(u);
	clear_faults();
	uint32_t st = copy(src_iova, dst_iova, COPY_BYTES);
	unsigned n = await_faults(0, &lo, &hi, &us);
	int same = !memcmp(src, dst, COPY_BYTES);
	result(name, synced && ACCEL_STATE(st) == ACCEL_STATE_DONE && same && !n,
	       "copy through our tables: invalidation wait %s, DMA_STATUS 0x%x, bytes %s, %u "
	       "fault records", synced ? "done" : "lost", st, same ? "copied" : "wrong", n);
}

/* The table FS_TABLE, which the caller's structures point at, with all its entries set to
 * loop (pointing at the table itself): the walk takes its four steps and ends on the table
 * page (a recursive map, legal); a copy at IOVA iova within it changes nothing, since every
 * entry holds the same value. */
static void bounded_walk(struct unit *u, const char *name, uint64_t loop, uint64_t iova)
{
	uint64_t lo, hi;
	unsigned us;

	for (int i = 0; i < PAGE / 8; i++)
		u->page[FS_TABLE][i] = loop;
	int synced = sync_unit(u);
	clear_faults();
	/* One entry of the table copied onto another (entry 2 onto the middle one). */
	uint32_t st = copy(iova + 2 * PTE_BYTES, iova + PAGE / 2, PTE_BYTES);
	unsigned records = await_faults(0, &lo, &hi, &us);
	int intact = 1;
	for (int i = 0; i < PAGE / 8; i++)
		intact &= u->page[FS_TABLE][i] == loop;
	result(name, synced && ACCEL_STATE(st) == ACCEL_STATE_DONE && !records && intact,
	       "bounded walk: DMA_STATUS 0x%x, %u fault records, table %s", st, records,
	       intact ? "intact" : "changed");
}

/* A first-stage table whose entries all point at itself: a bounded walk. With PS set the
 * top level may not map a page: reserved, 0x72. */
static void case_loops(struct unit *u, unsigned n)
{
	uint64_t loop = u->pa[FS_TABLE] | PTE_TABLE;

	reset(u, u->pa[FS_TABLE]);
	bounded_walk(u, "fs-loop", loop, CASE_IOVA(n));
	for (int i = 0; i < PAGE / 8; i++)
		u->page[FS_TABLE][i] = loop | PTE_PS;
	expect_fault(u, "fs-loop-ps", CASE_IOVA(n + 1), IOVA_DST, FR_FS_RESERVED,
		     CASE_IOVA(n + 1), 0);
}

/* The queue's tail written past its end (QS 0: one page): IQE with IQEI 1 and IQH where it
 * was; then the tail set right and IQE cleared: a wait queued there completes. */
static void case_tail_past_end(struct unit *u)
{
	volatile uint32_t *status = (volatile uint32_t *)u->page[STATUS];
	const uint64_t wait[4] = {WAIT_SW | (WAIT_DONE << 32), u->pa[STATUS]};

	if (!sync_unit(u)) {
		result("iq-tail-past-end", 0, "the invalidation wait did not complete");
		return;
	}
	clear_faults();
	uint64_t head = rd64(IQH);
	wr64(IQT, PAGE); /* the first byte past the queue */
	for (int i = 0; i < POLLS && !(rd32(FSTS) & FSTS_IQE); i++)
		usleep(POLL_US);
	uint32_t fsts = rd32(FSTS);
	unsigned iqei = IQERCD_IQEI(rd64(IQERCD));
	uint64_t head_after = rd64(IQH);
	/* Recovery: a wait at the head, the tail after it, then IQE cleared. */
	*status = 0;
	queue_desc(u->page[QUEUE], &u->tail, wait);
	wr64(IQT, (uint64_t)(u->tail % QUEUE_SLOTS) * DESC_BYTES);
	wr32(FSTS, FSTS_IQE);
	for (int i = 0; i < POLLS && *status != WAIT_DONE; i++)
		usleep(POLL_US);
	int ok = (fsts & FSTS_IQE) && iqei == IQEI_TAIL && head_after == head &&
		 *status == WAIT_DONE && !(rd32(FSTS) & FSTS_IQE);
	result("iq-tail-past-end", ok, "IQE, IQEI %u, IQH 0x%" PRIx64 " -> 0x%" PRIx64
	       ", recovered: %s", iqei, head, head_after, *status == WAIT_DONE ? "yes" : "no");
	clear_faults();
}

/* A wait descriptor whose status address is outside RAM: IQE with IQEI 2, IQH on it. Then
 * what Linux does (qi_check_fault): the descriptor turned into a wait without status write,
 * IQE cleared; the queue runs on and a good wait after it completes. */
static void case_wait_outside_ram(struct unit *u)
{
	volatile uint32_t *status = (volatile uint32_t *)u->page[STATUS];
	const uint64_t bad[4] = {WAIT_SW | (WAIT_DONE << 32), OUTSIDE_RAM};
	const uint64_t nop[4] = {WAIT};
	const uint64_t good[4] = {WAIT_SW | (WAIT_DONE << 32), u->pa[STATUS]};

	if (!sync_unit(u)) {
		result("wait-status-outside-ram", 0, "the invalidation wait did not complete");
		return;
	}
	clear_faults();
	unsigned at = u->tail;
	uint64_t bad_offset = (uint64_t)(at % QUEUE_SLOTS) * DESC_BYTES;
	queue_desc(u->page[QUEUE], &u->tail, bad);
	wr64(IQT, (uint64_t)(u->tail % QUEUE_SLOTS) * DESC_BYTES);
	for (int i = 0; i < POLLS && !(rd32(FSTS) & FSTS_IQE); i++)
		usleep(POLL_US);
	uint32_t fsts = rd32(FSTS);
	unsigned iqei = IQERCD_IQEI(rd64(IQERCD));
	uint64_t head = rd64(IQH);
	*status = 0;
	queue_desc(u->page[QUEUE], &at, nop);
	queue_desc(u->page[QUEUE], &u->tail, good);
	wr64(IQT, (uint64_t)(u->tail % QUEUE_SLOTS) * DESC_BYTES);
	wr32(FSTS, FSTS_IQE);
	for (int i = 0; i < POLLS && *status != WAIT_DONE; i++)
		usleep(POLL_US);
	int ok = (fsts & FSTS_IQE) && iqei == IQEI_FETCH && head == bad_offset &&
		 *status == WAIT_DONE && !(rd32(FSTS) & FSTS_IQE);
	result("wait-status-outside-ram", ok, "IQE, IQEI %u, IQH 0x%" PRIx64 " (the wait at 0x%"
	       PRIx64 "), recovered: %s", iqei, head, bad_offset,
	       *status == WAIT_DONE ? "yes" : "no");
	clear_faults();
}

/* Legacy mode (RTADDR.TTM 00): the cases again against a legacy root and context table and
 * a second-stage table (VT-d 3.5 and 9.1-9.3). The unit is switched over by the program
 * itself, as a driver with sm_off would program it: RTADDR and SRTP, with translation left on
 * (the guest's driver is idle meanwhile), so no second boot is needed. The queue keeps its
 * 256-bit descriptors: Linux too uses them whenever the unit supports scalable mode, sm_off
 * or not. */

/* The legacy tree maps its copy pages in a top-level slot of their own, at LEGACY_SLOT, so
 * that no IOVA translated in scalable mode is used again (the device's ATC may still hold
 * those); the legacy fault cases read from CASE_IOVA(LEGACY_SLOT + 1) on. */
#define LEGACY_SLOT 16
#define LEGACY_IOVA(off) (CASE_IOVA(LEGACY_SLOT) + (off))
#define IOVA_UNMAPPED_READ 0x4000ull /* another leaf entry left clear */

/* Legacy-mode fault reasons (VT-d 7.1.3), as tests/hostile_guests/tables.rs expects them. */
#define FR_WRITE_NOT_PERMITTED 0x05 /* LGN.3 */
#define FR_READ_NOT_PERMITTED 0x06 /* LGN.3 */
#define FR_SS_ENTRY_ACCESS 0x07 /* LSL.1: a second-stage table could not be read */
#define FR_ROOT_TABLE_ACCESS 0x08 /* LRT.1 */
#define FR_CONTEXT_TABLE_ACCESS 0x09 /* LCT.1 */
#define FR_ROOT_RESERVED 0x0a /* LRT.3 */
#define FR_LEGACY_CONTEXT_RESERVED 0x0b /* LCT.3 */
#define FR_SS_RESERVED 0x0c /* LSL.3 */

/* Well-formed legacy structures: every root entry and every context entry (whichever
 * device the unit translates) leads to the second-stage table at top, domain 1 (0 is
 * reserved in caching mode); our second-stage tree in FS_TOP..FS_L1 maps
 * LEGACY_IOVA(IOVA_SRC) and LEGACY_IOVA(IOVA_DST) onto the data pages. */
static void legacy_reset(struct unit *u, uint64_t top)
{
	for (int i = 0; i < PAGE / 8; i += LEGACY_ROOT_WORDS) {
		u->page[ROOT][i] = u->pa[CONTEXT] | PRESENT;
		u->page[ROOT][i + 1] = 0;
	}
	for (int i = 0; i < PAGE / 8; i += LEGACY_CONTEXT_WORDS) {
		u->page[CONTEXT][i] = top | PRESENT; /* TT 00: second stage */
		u->page[CONTEXT][i + 1] = LCTX_DID(1) | LCTX_AW_48;
	}
	memset(u->page[FS_TOP], 0, PAGE);
	memset(u->page[FS_L3], 0, PAGE);
	memset(u->page[FS_L2], 0, PAGE);
	memset(u->page[FS_L1], 0, PAGE);
	u->page[FS_TOP][LEGACY_SLOT] = u->pa[FS_L3] | SS_RW;
	u->page[FS_L3][0] = u->pa[FS_L2] | SS_RW;
	u->page[FS_L2][0] = u->pa[FS_L1] | SS_RW;
	u->page[FS_L1][IOVA_SRC / PAGE] = u->pa[SRC] | SS_RW;
	u->page[FS_L1][IOVA_DST / PAGE] = u->pa[DST] | SS_RW;
}

/* Points RTADDR at root (legacy mode) and latches it: whether RTPS came. */
static int set_legacy_root(uint64_t root)
{
	uint32_t keep = rd32(GSTS) & (GSTS_TES | GSTS_QIES);

	wr64(RTADDR, root | RTADDR_TTM_LEGACY);
	wr32(GCMD, keep | GCMD_SRTP);
	return wait_gsts(GSTS_RTPS, GSTS_RTPS);
}

static void legacy_cases(struct unit *u)
{
	unsigned n = LEGACY_SLOT + 1;

	legacy_reset(u, u->pa[FS_TOP]);
	u->legacy = 1;
	if (!set_legacy_root(u->pa[ROOT])) {
		result("legacy-baseline", 0, "RTPS did not come after SRTP with TTM 00");
		return;
	}
	copy_through(u, "legacy-baseline", LEGACY_IOVA(IOVA_SRC), LEGACY_IOVA(IOVA_DST));

	/* A second-stage table whose entries all point at itself (R, W): a bounded walk. With
	 * PS set the top level may not map a page: reserved, 0x0c. */
	legacy_reset(u, u->pa[FS_TABLE]);
	bounded_walk(u, "legacy-ss-loop", u->pa[FS_TABLE] | SS_RW, CASE_IOVA(n++));
	for (int i = 0; i < PAGE / 8; i++)
		u->page[FS_TABLE][i] |= SS_PS;
	expect_fault(u, "legacy-ss-loop-ps", CASE_IOVA(n), LEGACY_IOVA(IOVA_DST), FR_SS_RESERVED,
		     CASE_IOVA(n), 0);
	n++;

	legacy_reset(u, u->pa[FS_TOP]);
	for (int i = 0; i < PAGE / 8; i += LEGACY_ROOT_WORDS)
		u->page[ROOT][i] |= ABOVE_WIDTH;
	expect_fault(u, "legacy-root-reserved", CASE_IOVA(n), LEGACY_IOVA(IOVA_DST),
		     FR_ROOT_RESERVED, CASE_IOVA(n), 0);
	n++;

	legacy_reset(u, u->pa[FS_TOP]);
	for (int i = 0; i < PAGE / 8; i += LEGACY_CONTEXT_WORDS)
		u->page[CONTEXT][i] |= ABOVE_WIDTH;
	expect_fault(u, "legacy-context-reserved", CASE_IOVA(n), LEGACY_IOVA(IOVA_DST),
		     FR_LEGACY_CONTEXT_RESERVED, CASE_IOVA(n), 0);
	n++;

	/* The root table itself outside RAM; then RTADDR back at ours. */
	legacy_reset(u, u->pa[FS_TOP]);
	if (set_legacy_root(OUTSIDE_RAM))
		expect_fault(u, "legacy-root-table-outside-ram", CASE_IOVA(n),
			     LEGACY_IOVA(IOVA_DST), FR_ROOT_TABLE_ACCESS, CASE_IOVA(n), 0);
	else
		result("legacy-root-table-outside-ram", 0, "RTPS did not come after SRTP");
	n++;
	if (!set_legacy_root(u->pa[ROOT])) {
		result("legacy-root-table-back", 0, "RTPS did not come after SRTP");
		return;
	}

	legacy_reset(u, u->pa[FS_TOP]);
	for (int i = 0; i < PAGE / 8; i += LEGACY_ROOT_WORDS)
		u->page[ROOT][i] = OUTSIDE_RAM | PRESENT;
	expect_fault(u, "legacy-context-table-outside-ram", CASE_IOVA(n), LEGACY_IOVA(IOVA_DST),
		     FR_CONTEXT_TABLE_ACCESS, CASE_IOVA(n), 0);
	n++;

	legacy_reset(u, OUTSIDE_RAM);
	expect_fault(u, "legacy-ss-table-outside-ram", CASE_IOVA(n), LEGACY_IOVA(IOVA_DST),
		     FR_SS_ENTRY_ACCESS, CASE_IOVA(n), 0);
	n++;

	/* A write to a clear leaf entry, then a read from another one. */
	legacy_reset(u, u->pa[FS_TOP]);
	expect_fault(u, "legacy-unmapped-iova-write", LEGACY_IOVA(IOVA_SRC),
		     LEGACY_IOVA(IOVA_UNMAPPED), FR_WRITE_NOT_PERMITTED,
		     LEGACY_IOVA(IOVA_UNMAPPED), 1);
	expect_fault(u, "legacy-unmapped-iova-read", LEGACY_IOVA(IOVA_UNMAPPED_READ),
		     LEGACY_IOVA(IOVA_DST), FR_READ_NOT_PERMITTED,
		     LEGACY_IOVA(IOVA_UNMAPPED_READ), 0);
}

static int cases(const char *accel_resource)
{
	struct unit u;
	unsigned bus, dev, fn;
	const char *bdf = strstr(accel_resource, "0000:");
	struct sysinfo si;
	struct timespec t0, t1;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	if (!bdf || sscanf(bdf, "0000:%x:%x.%x", &bus, &dev, &fn) != 3) {
		fprintf(stderr, "scribble: cases: no PCI address in %s\n", accel_resource);
		return 1;
	}
	accel_sid = bus << 8 | dev << 3 | fn;
	/* RAM above the 4 GiB boundary starts there at the latest: all of it ends below. */
	if (sysinfo(&si) || (uint64_t)si.totalram * si.mem_unit + FOUR_GIB >= OUTSIDE_RAM) {
		fprintf(stderr, "scribble: cases: RAM may reach 0x%llx\n", OUTSIDE_RAM);
		return 1;
	}
	int fd = open(accel_resource, O_RDWR | O_SYNC);
	accel = fd < 0 ? MAP_FAILED : mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (accel == MAP_FAILED) {
		fprintf(stderr, "scribble: cases: %s: %s\n", accel_resource, strerror(errno));
		return 1;
	}
	uint64_t cap = rd64(CAP);
	frcd_base = CAP_FRO(cap);
	frcd_count = CAP_NFR(cap);
	/* The fault event masked while we run: the guest's intel-iommu fault handler would
	 * otherwise read and clear the records we are about to check. */
	uint32_t fectl = rd32(FECTL);
	wr32(FECTL, fectl | FECTL_IM);
	if (take_over(&u))
		return 1;
	clear_faults();
	reset(&u, u.pa[FS_TOP]);
	copy_through(&u, "baseline", IOVA_SRC, IOVA_DST);
	case_loops(&u, 1);

	reset(&u, u.pa[FS_TOP]);
	for (int i = 0; i < PAGE / 32; i++)
		u.page[CONTEXT][i * 4] |= ABOVE_WIDTH;
	expect_fault(&u, "context-reserved", CASE_IOVA(3), IOVA_DST, FR_CONTEXT_RESERVED,
		     CASE_IOVA(3), 0);

	reset(&u, u.pa[FS_TOP]);
	for (int i = 0; i < PAGE / 64; i++)
		u.page[PASID_TABLE][i * 8 + 2] |= ABOVE_WIDTH;
	expect_fault(&u, "pasid-entry-reserved", CASE_IOVA(4), IOVA_DST,
		     FR_PASID_ENTRY_RESERVED, CASE_IOVA(4), 0);

	reset(&u, u.pa[FS_TOP]);
	for (int i = 0; i < PAGE / 8; i++)
		u.page[PASID_DIR][i] = OUTSIDE_RAM | PRESENT;
	expect_fault(&u, "pasid-table-outside-ram", CASE_IOVA(5), IOVA_DST,
		     FR_PASID_TABLE_ACCESS, CASE_IOVA(5), 0);

	reset(&u, OUTSIDE_RAM);
	expect_fault(&u, "fs-table-outside-ram", CASE_IOVA(6), IOVA_DST, FR_FS_ROOT_ACCESS,
		     CASE_IOVA(6), 0);

	/* The source mapped, the destination a clear leaf: the write faults. */
	reset(&u, u.pa[FS_TOP]);
	expect_fault(&u, "unmapped-iova", IOVA_SRC, IOVA_UNMAPPED, FR_FS_NOT_PRESENT,
		     IOVA_UNMAPPED, 1);

	reset(&u, u.pa[FS_TOP]);
	case_tail_past_end(&u);
	case_wait_outside_ram(&u);
	legacy_cases(&u);

	clear_faults();
	wr32(FECTL, fectl);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	printf("hostile: done, %u cases, %u failed, %.3f s\n", cases_run, cases_failed,
	       (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
	fflush(stdout);
	munmap((void *)accel, PAGE);
	close(fd);
	return 0;
}

int main(int argc, char **argv)
{
	unsigned long writes = 1000;
	uint64_t seed = 1;
	unsigned long rounds = 0;
	const char *accel_resource = NULL;

	if (argc < 2) {
		fprintf(stderr, "usage: scribble RESOURCE_FILE [--writes N] [--seed S] [--tables R] "
				"[--cases ACCEL_RESOURCE_FILE]\n");
		return 2;
	}
	for (int i = 2; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--writes"))
			writes = strtoul(argv[i + 1], NULL, 0);
		else if (!strcmp(argv[i], "--seed"))
			seed = strtoull(argv[i + 1], NULL, 0);
		else if (!strcmp(argv[i], "--tables"))
			rounds = strtoul(argv[i + 1], NULL, 0);
		else if (!strcmp(argv[i], "--cases"))
			accel_resource = argv[i + 1];
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
	if (accel_resource && cases(accel_resource))
		return 1;
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
