// SPDX-License-Identifier: MIT
/*
 * accel-sva: Shared Virtual Memory from a guest process (libvsvm.h): the
 * process binds to /dev/vsvm-sva0 and the device works on the process's own
 * virtual addresses; every byte the device touched is checked.
 *
 *   accel-sva basic   memmove / fill / compare on malloc'd buffers (4 KiB
 *                     pages) and on transparent huge pages (a 2 MiB-aligned
 *                     region with MADV_HUGEPAGE, AnonHugePages checked in
 *                     /proc/self/smaps)
 *   accel-sva fault   the device writes (FILL) and copies into freshly
 *                     mmap'd buffers the process never touched: every page
 *                     is a PRI page request the kernel's IOMMU driver answers
 *   accel-sva bad     bad input: ioctls with bad arguments get -EINVAL /
 *                     -EFAULT / -EPERM, the process and the device go on
 *   accel-sva badaddr the device writes a read-only page and reads and writes
 *                     addresses with no mapping (a hole, a PROT_NONE page): the
 *                     kernel answers the page requests Invalid Request, the
 *                     record says PAGE_FAULT, the process lives, the next job
 *                     works
 *   accel-sva munmap  a memfd mapped twice: the device fills one mapping (its
 *                     ATC now holds the pages), the process unmaps it, jobs on
 *                     that range fault and the other mapping shows the pages
 *                     untouched: the kernel's PASID-based IOTLB and device-TLB
 *                     invalidations reached the device
 *   accel-sva two     two processes bound at once, each to its own PASID, the
 *                     same virtual address holding different bytes in each:
 *                     each one's jobs see its own memory, and a job aimed at an
 *                     address only the other process mapped faults
 *   accel-sva kill    a child queues many faulting jobs and is SIGKILLed with
 *                     them in flight: the driver drains and unbinds; a new
 *                     process binds and works
 *   accel-sva soak [--jobs N] [--seed S] [--procs 1|2] [--in-flight K]
 *                     N random jobs (default 3000, split between the
 *                     processes: by default two bound at once, each to its own
 *                     PASID) mixing memmove / fill / compare on malloc'd, THP
 *                     and never-touched memory, jobs aimed at read-only,
 *                     unmapped and PROT_NONE addresses, and munmap / mmap of
 *                     ranges between jobs, up to K (default 16) jobs in flight;
 *                     every record and every byte checked against the
 *                     program's model (sva-soak.h). The seed is printed; the
 *                     same seed replays the same jobs
 *   accel-sva demo [--jobs N] [--seed S]
 *                     the soak as the demo runs it: one process, N jobs
 *                     (default 400), sure to include never-touched pages and
 *                     a munmap with jobs faulting on the range; its last line
 *                     is machine-readable ("accel-sva demo: jobs=N ...")
 *
 * Exits 3 when the kernel refuses to bind the process (EOPNOTSUPP): Debian's
 * 6.12 has "iommu: disable SVA when CONFIG_X86 is set" (stable 6.12.64), which
 * makes iommu_sva_bind_device() fail on x86 whatever the IOMMU.
 *
 * Prints "sva <case>: ... OK" or "sva <case>: FAIL: <why>" per case, then
 * "accel-sva <mode>: N cases, M failed: PASS|FAIL"; exits 1 if a case failed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "libvsvm.h"
#include "pattern.h"
#include "sva-soak.h"

#define KiB		1024u
#define MiB		(1024u * KiB)
#define PAGE		4096u
#define HUGE		(2u * MiB)
#define TIMEOUT_MS	10000	/* a job of 256 faulting pages under TCG: well below */
#define PATTERN		0x0123456789abcdefull
#define EXIT_SVA_REFUSED 3	/* the kernel refused the bind: EOPNOTSUPP */

static struct vsvm v;

static uint64_t now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}
static char case_name[64];
static int cases, failed;

static void case_start(const char *name)
{
	snprintf(case_name, sizeof(case_name), "%s", name);
	cases++;
}

static void case_fail(const char *fmt, ...)
{
	va_list ap;

	failed++;
	printf("sva %s: FAIL: ", case_name);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
}

static void case_ok(const char *fmt, ...)
{
	va_list ap;

	printf("sva %s: ", case_name);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf(": OK\n");
	fflush(stdout);
}

#define CHECK(cond, ...)				\
	do {						\
		if (!(cond)) {				\
			case_fail(__VA_ARGS__);		\
			return;				\
		}					\
	} while (0)

/* Run one job to its record; a message on failure. */
static const char *run(struct vsvm_job *job)
{
	static char why[128];

	if (vsvm_run(&v, job, TIMEOUT_MS)) {
		snprintf(why, sizeof(why), "job %s: %s", job->rec.status ? "status" : "wait",
			 strerror(errno));
		return why;
	}
	if (job->rec.status != VSVM_WQ_ST_SUCCESS) {
		snprintf(why, sizeof(why), "status %#x, fault addr %#" PRIx64 ", %u bytes done",
			 job->rec.status, (uint64_t)job->rec.fault_addr, job->rec.bytes_completed);
		return why;
	}
	return NULL;
}

/* First index where buf differs from want, or -1. */
static long first_diff(const uint8_t *buf, const uint8_t *want, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (buf[i] != want[i])
			return (long)i;
	return -1;
}

static long first_not_pattern(const uint8_t *buf, uint64_t pattern, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (buf[i] != (uint8_t)(pattern >> (8 * (i % 8))))
			return (long)i;
	return -1;
}

/*
 * memmove, fill and compare on src/dst of len bytes; every byte of dst (and
 * the guard bytes around the job's range) checked. dst has room for len + 2
 * guard bytes on each side: dst[-2..-1] and dst[len..len+1].
 */
static void data_ops(const char *what, uint8_t *src, uint8_t *dst, uint32_t len, uint64_t seed)
{
	struct vsvm_job job;
	const char *why;
	uint8_t *want = malloc(len);
	long at;

	CHECK(want, "malloc");
	pattern_bytes(src, len, seed);
	memcpy(want, src, len);
	memset(dst - 2, 0xa5, len + 4);

	vsvm_memmove(&job, dst, src, len);
	why = run(&job);
	CHECK(!why, "%s memmove %u: %s", what, len, why);
	at = first_diff(dst, want, len);
	CHECK(at < 0, "%s memmove %u: byte %ld is %#x, want %#x", what, len, at, dst[at], want[at]);
	CHECK(dst[-1] == 0xa5 && dst[-2] == 0xa5 && dst[len] == 0xa5 && dst[len + 1] == 0xa5,
	      "%s memmove %u: wrote outside its range", what, len);
	CHECK(job.rec.bytes_completed == len, "%s memmove: bytes_completed %u", what,
	      job.rec.bytes_completed);

	vsvm_compare(&job, src, dst, len);
	why = run(&job);
	CHECK(!why, "%s compare equal: %s", what, why);
	CHECK(job.rec.result == 0, "%s compare equal: result %" PRIu64, what,
	      (uint64_t)job.rec.result);
	dst[len - 1 - len / 3] ^= 0x40;
	vsvm_compare(&job, src, dst, len);
	why = run(&job);
	CHECK(!why, "%s compare different: %s", what, why);
	CHECK(job.rec.result == 1 && job.rec.bytes_completed == len - 1 - len / 3,
	      "%s compare different: result %" PRIu64 " at %u, want 1 at %u", what,
	      (uint64_t)job.rec.result, job.rec.bytes_completed, len - 1 - len / 3);

	vsvm_fill(&job, dst, PATTERN ^ seed, len);
	why = run(&job);
	CHECK(!why, "%s fill %u: %s", what, len, why);
	at = first_not_pattern(dst, PATTERN ^ seed, len);
	CHECK(at < 0, "%s fill %u: byte %ld is %#x", what, len, at, dst[at]);
	CHECK(dst[-1] == 0xa5 && dst[len] == 0xa5, "%s fill %u: wrote outside its range", what,
	      len);
	/* The source was only read. */
	at = first_diff(src, want, len);
	CHECK(at < 0, "%s: source byte %ld changed", what, at);
	free(want);
	case_ok("%s, %u bytes: memmove, compare (equal, different), fill, every byte checked",
		what, len);
}

/* malloc'd buffers: 4 KiB pages, odd offsets and sizes. */
static void malloc_ops(void)
{
	static const uint32_t sizes[] = { 1, 100, 4096, 10000, 65536 + 3, 1 * MiB };

	for (unsigned int i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		uint32_t len = sizes[i];
		uint8_t *src = malloc(len + 7), *dst = malloc(len + 11);
		char name[32];

		snprintf(name, sizeof(name), "malloc %u", len);
		case_start(name);
		if (!src || !dst) {
			case_fail("malloc");
			continue;
		}
		/* Misaligned on purpose: the device copies any byte range. */
		data_ops("malloc", src + 3, dst + 5, len, i + 1);
		free(src);
		free(dst);
	}
}

/* AnonHugePages (kB) of the mapping holding addr, from /proc/self/smaps; -1 if not found. */
static long anon_huge_kb(const void *addr)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[256];
	int in = 0;
	long kb = -1;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		unsigned long lo, hi;

		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' ')) {
			in = (uintptr_t)addr >= lo && (uintptr_t)addr < hi;
			continue;
		}
		if (in && sscanf(line, "AnonHugePages: %ld kB", &kb) == 1)
			break;
	}
	fclose(f);
	return kb;
}

/* A 2 MiB-aligned anonymous region of len bytes with MADV_HUGEPAGE, touched; NULL on failure. */
static uint8_t *huge_region(size_t len)
{
	uint8_t *raw = mmap(NULL, len + HUGE, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint8_t *p;

	if (raw == MAP_FAILED)
		return NULL;
	p = (uint8_t *)(((uintptr_t)raw + HUGE - 1) & ~(uintptr_t)(HUGE - 1));
	if (madvise(p, len, MADV_HUGEPAGE))
		return NULL;
	memset(p, 0, len);
	return p;
}

static void thp_ops(void)
{
	uint8_t *src, *dst;
	long kb;

	case_start("thp");
	src = huge_region(2 * HUGE);
	dst = huge_region(2 * HUGE);
	CHECK(src && dst, "mmap/madvise: %s", strerror(errno));
	kb = anon_huge_kb(src);
	CHECK(kb >= 2048 && anon_huge_kb(dst) >= 2048,
	      "no transparent huge page (AnonHugePages %ld kB / %ld kB; THP %s)", kb,
	      anon_huge_kb(dst), "see /sys/kernel/mm/transparent_hugepage/enabled");
	printf("sva thp: AnonHugePages %ld kB (source), %ld kB (destination)\n", kb,
	       anon_huge_kb(dst));
	/* 1 MiB (MAX_XFER) across the boundary of two huge pages, and inside one. */
	data_ops("thp across 2 MiB pages", src + HUGE - MiB / 2, dst + HUGE - MiB / 2 + 64, MiB, 11);
	data_ops("thp inside a 2 MiB page", src + 4096, dst + 8192, MiB, 12);
	CHECK(anon_huge_kb(src) >= 2048 && anon_huge_kb(dst) >= 2048,
	      "huge pages split during the jobs");
}

/*
 * Never-touched buffers: the device's first access to each page is a page
 * request. Prints "sva fault: pages=N" for the script to compare with the
 * PRQ interrupts it counted.
 */
static void fault_ops(void)
{
	const uint32_t len = MiB;
	uint8_t *a, *b;
	struct vsvm_job *job;
	const char *why;
	uint64_t t0, t1;
	long at;

	case_start("fault fill");
	a = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	b = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	/* The record too sits on a page nobody touched. */
	job = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(a != MAP_FAILED && b != MAP_FAILED && job != MAP_FAILED, "mmap: %s", strerror(errno));
	/* The descriptor is built on the stack and copied into the kernel; the record is job->rec. */
	t0 = now_ns();
	{
		struct vsvm_job j;

		vsvm_fill(&j, a, PATTERN, len);
		j.desc.completion = (uint64_t)(uintptr_t)&job->rec;
		CHECK(vsvm_submit(&v, &j, 1) == 0, "submit: %s", strerror(errno));
		CHECK(vsvm_wait(&v, job, TIMEOUT_MS) == 0, "wait: %s", strerror(errno));
	}
	t1 = now_ns();
	CHECK(job->rec.status == VSVM_WQ_ST_SUCCESS, "status %#x at %#" PRIx64, job->rec.status,
	      (uint64_t)job->rec.fault_addr);
	at = first_not_pattern(a, PATTERN, len);
	CHECK(at < 0, "byte %ld is %#x", at, a[at]);
	case_ok("%u never-touched pages (and the record's) written by the device in %.1f ms "
		"(%.0f us a page), every byte checked", len / PAGE, (t1 - t0) / 1e6,
		(t1 - t0) / 1e3 / (len / PAGE + 1));

	case_start("fault memmove");
	vsvm_memmove(job, b, a, len);
	t0 = now_ns();
	why = run(job);
	t1 = now_ns();
	CHECK(!why, "%s", why);
	at = first_not_pattern(b, PATTERN, len);
	CHECK(at < 0, "byte %ld is %#x", at, b[at]);
	case_ok("%u more never-touched destination pages in %.1f ms, every byte checked",
		len / PAGE, (t1 - t0) / 1e6);
	/* The same copy again, every page present now: what the faults cost. */
	vsvm_memmove(job, b, a, len);
	t0 = now_ns();
	why = run(job);
	t1 = now_ns();
	printf("sva fault: the same memmove with every page present: %.1f ms%s\n", (t1 - t0) / 1e6,
	       why ? " (FAILED)" : "");
	printf("sva fault: pages=%u\n", 2 * (len / PAGE) + 1);
}

/* Bad input: errors, never a crash; the device still works afterwards. */
static void bad_ops(void)
{
	struct vsvm_job job __attribute__((aligned(64)));
	struct vsvm_sva_submit s = { 0 };
	struct vsvm_sva_wait w = { 0 };
	struct vsvm_sva_desc d[VSVM_SVA_MAX_SUBMIT + 1];
	uint8_t buf[256], out[256];
	const char *why;
	pid_t pid;
	int st;

	case_start("bad input");
	vsvm_fill(&job, buf, PATTERN, sizeof(buf));
	d[0] = job.desc;
	s.descs = (uint64_t)(uintptr_t)d;
#define EXPECT(call, err, what)							\
	CHECK((call) < 0 && errno == (err), "%s: want %s, got %s", what, strerror(err), \
	      strerror(errno))
	s.count = 0;
	EXPECT(ioctl(v.fd, VSVM_SVA_IOC_SUBMIT, &s), EINVAL, "count 0");
	s.count = VSVM_SVA_MAX_SUBMIT + 1;
	EXPECT(ioctl(v.fd, VSVM_SVA_IOC_SUBMIT, &s), EINVAL, "count above max");
	s.count = 1;
	s.descs = 8;
	EXPECT(ioctl(v.fd, VSVM_SVA_IOC_SUBMIT, &s), EFAULT, "descriptors at a bad address");
	s.descs = (uint64_t)(uintptr_t)d;
	EXPECT(ioctl(v.fd, VSVM_SVA_IOC_SUBMIT, (void *)8), EFAULT, "argument at a bad address");
	d[0].control &= ~VSVM_DESC_CRAV;
	EXPECT(ioctl(v.fd, VSVM_SVA_IOC_SUBMIT, &s), EINVAL, "no completion record");
	d[0] = job.desc;
	d[0].completion += 8;
	EXPECT(ioctl(v.fd, VSVM_SVA_IOC_SUBMIT, &s), EINVAL, "misaligned record");
	d[0] = job.desc;
	d[0].control |= VSVM_DESC_PRIV;
	EXPECT(ioctl(v.fd, VSVM_SVA_IOC_SUBMIT, &s), EINVAL, "privileged descriptor");
	d[0] = job.desc;
	d[0].completion = 0xffff800000000000ull;
	EXPECT(ioctl(v.fd, VSVM_SVA_IOC_SUBMIT, &s), EFAULT, "record at a kernel address");
	w.record = (uint64_t)(uintptr_t)&job.rec + 4;
	EXPECT(ioctl(v.fd, VSVM_SVA_IOC_WAIT, &w), EINVAL, "wait on a misaligned record");
	w.record = 0x1000;
	w.timeout_ms = 10;
	EXPECT(ioctl(v.fd, VSVM_SVA_IOC_WAIT, &w), EFAULT, "wait on an unmapped record");
	memset(&job.rec, 0, sizeof(job.rec));
	w.record = (uint64_t)(uintptr_t)&job.rec;
	EXPECT(ioctl(v.fd, VSVM_SVA_IOC_WAIT, &w), ETIMEDOUT, "wait on a record never submitted");
	EXPECT(ioctl(v.fd, _IO(VSVM_ACCEL_IOC_MAGIC, 0x7f), 0), ENOTTY, "unknown ioctl");

	/* A child after fork shares the file but not the bound address space. */
	pid = fork();
	CHECK(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		s.count = 1;
		d[0] = job.desc;
		_exit(ioctl(v.fd, VSVM_SVA_IOC_SUBMIT, &s) < 0 && errno == EPERM ? 0 : 1);
	}
	CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0,
	      "a forked child could submit on its parent's binding");

	/* The device judges what the driver passes on: an unknown opcode, in the record. */
	vsvm_job_init(&job, 0x7f);
	CHECK(vsvm_run(&v, &job, TIMEOUT_MS) == 0, "bad opcode job: %s", strerror(errno));
	CHECK(job.rec.status == VSVM_WQ_ST_BAD_OPCODE, "bad opcode: status %#x", job.rec.status);
	memset(out, 0, sizeof(out));
	pattern_bytes(buf, sizeof(buf), 99);
	vsvm_memmove(&job, out, buf, sizeof(buf));
	why = run(&job);
	CHECK(!why, "memmove after the bad input: %s", why);
	CHECK(memcmp(out, buf, sizeof(buf)) == 0, "memmove after the bad input: wrong bytes");
	case_ok("-EINVAL/-EFAULT/-EPERM/-ETIMEDOUT/-ENOTTY as documented, BAD_OPCODE in the record, the next job works");
#undef EXPECT
}

/*
 * Run one job that must fault: PAGE_FAULT with FAULT_ADDR in [lo, lo + len)
 * and FAULT_INFO.WRITE as `write`; NULL, or why not.
 */
static const char *run_fault(struct vsvm_job *job, const void *lo, size_t len, int write)
{
	static char why[160];
	uint64_t at;

	if (vsvm_run(&v, job, TIMEOUT_MS)) {
		snprintf(why, sizeof(why), "wait: %s", strerror(errno));
		return why;
	}
	at = job->rec.fault_addr;
	if (job->rec.status != VSVM_WQ_ST_PAGE_FAULT || at < (uintptr_t)lo ||
	    at >= (uintptr_t)lo + len || !!(job->rec.fault_info & VSVM_WQ_FI_WRITE) != write) {
		snprintf(why, sizeof(why),
			 "status %#x fault addr %#" PRIx64 " info %#x, want PAGE_FAULT (%#x) in "
			 "%p+%#zx, %s", job->rec.status, at, job->rec.fault_info,
			 VSVM_WQ_ST_PAGE_FAULT, lo, len, write ? "write" : "read");
		return why;
	}
	return NULL;
}

/* A memmove of a fresh pattern into a fresh buffer: every byte checked; NULL, or why not. */
static const char *job_works(uint64_t seed)
{
	static char why[160];
	uint8_t src[512], dst[512];
	struct vsvm_job job;
	const char *err;

	pattern_bytes(src, sizeof(src), seed);
	memset(dst, 0, sizeof(dst));
	vsvm_memmove(&job, dst, src, sizeof(src));
	err = run(&job);
	if (err)
		return err;
	if (memcmp(dst, src, sizeof(src))) {
		snprintf(why, sizeof(why), "memmove: wrong bytes");
		return why;
	}
	return NULL;
}

static int all_bytes(const uint8_t *p, uint8_t b, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (p[i] != b)
			return 0;
	return 1;
}

/* Read-only and missing pages: Invalid Request answers, PAGE_FAULT records, no signal. */
static void badaddr_ops(void)
{
	struct vsvm_job job;
	uint8_t buf[256], *ro, *hole, *none;
	volatile uint8_t sink;
	const char *why;

	case_start("read-only page");
	ro = mmap(NULL, PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(ro != MAP_FAILED, "mmap: %s", strerror(errno));
	sink = ro[0];	/* present, read-only (the zero page) */
	(void)sink;
	vsvm_fill(&job, ro + 64, PATTERN, 128);
	why = run_fault(&job, ro, PAGE, 1);
	CHECK(!why, "fill on a read-only page: %s", why);
	CHECK(job.rec.bytes_completed == 0, "bytes_completed %u", job.rec.bytes_completed);
	CHECK(all_bytes(ro, 0, PAGE), "the read-only page changed");
	/* Reading it is allowed. */
	memset(buf, 0xa5, sizeof(buf));
	vsvm_memmove(&job, buf, ro, sizeof(buf));
	why = run(&job);
	CHECK(!why, "memmove from the read-only page: %s", why);
	CHECK(all_bytes(buf, 0, sizeof(buf)), "memmove from the read-only page: wrong bytes");
	why = job_works(21);
	CHECK(!why, "the next job: %s", why);
	case_ok("a write faults (PAGE_FAULT, FAULT_INFO.WRITE, the page untouched), a read works, "
		"the next job works");

	case_start("unmapped address");
	/* A hole: the middle of three pages, unmapped (nothing maps into it meanwhile). */
	hole = mmap(NULL, 3 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(hole != MAP_FAILED, "mmap: %s", strerror(errno));
	memset(hole, 0x5a, 3 * PAGE);
	CHECK(munmap(hole + PAGE, PAGE) == 0, "munmap: %s", strerror(errno));
	vsvm_fill(&job, hole + PAGE + 8, PATTERN, 64);
	why = run_fault(&job, hole + PAGE, PAGE, 1);
	CHECK(!why, "fill on the hole: %s", why);
	vsvm_memmove(&job, buf, hole + PAGE + 100, 64);
	why = run_fault(&job, hole + PAGE, PAGE, 0);
	CHECK(!why, "memmove from the hole: %s", why);
	/* A copy running from a present page into the hole: the present part done, then the fault. */
	vsvm_fill(&job, hole + PAGE - 256, PATTERN, 512);
	why = run_fault(&job, hole + PAGE, PAGE, 1);
	CHECK(!why, "fill across into the hole: %s", why);
	CHECK(job.rec.bytes_completed <= 256, "bytes_completed %u past the hole's start",
	      job.rec.bytes_completed);
	CHECK(all_bytes(hole + 2 * PAGE, 0x5a, PAGE), "the page after the hole changed");
	why = job_works(22);
	CHECK(!why, "the next job: %s", why);
	case_ok("writes and reads of a hole fault (PAGE_FAULT, FAULT_ADDR in the hole, WRITE as "
		"the access), the next job works");

	case_start("PROT_NONE page");
	none = mmap(NULL, PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(none != MAP_FAILED, "mmap: %s", strerror(errno));
	vsvm_memmove(&job, buf, none, 64);
	why = run_fault(&job, none, PAGE, 0);
	CHECK(!why, "read of a PROT_NONE page: %s", why);
	vsvm_fill(&job, none, PATTERN, 64);
	why = run_fault(&job, none, PAGE, 1);
	CHECK(!why, "write of a PROT_NONE page: %s", why);
	why = job_works(23);
	CHECK(!why, "the next job: %s", why);
	munmap(ro, PAGE);
	munmap(hole, PAGE);
	munmap(hole + 2 * PAGE, PAGE);
	munmap(none, PAGE);
	case_ok("reads and writes fault, the process was not signalled, the next job works");
}

#define MUNMAP_PAGES	16

/* munmap under the device: jobs on the range fault, the pages stay as they were. */
static void munmap_ops(void)
{
	const size_t len = MUNMAP_PAGES * PAGE;
	uint8_t *dev, *keep, buf[512];
	struct vsvm_job job;
	const char *why;
	long at;
	int fd;

	case_start("munmap");
	fd = memfd_create("accel-sva-munmap", 0);
	CHECK(fd >= 0 && ftruncate(fd, len) == 0, "memfd: %s", strerror(errno));
	dev = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	keep = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	CHECK(dev != MAP_FAILED && keep != MAP_FAILED, "mmap: %s", strerror(errno));
	/* The device writes and reads every page through `dev`: its ATC holds them all. */
	vsvm_fill(&job, dev, PATTERN, len);
	why = run(&job);
	CHECK(!why, "fill: %s", why);
	at = first_not_pattern(keep, PATTERN, len);
	CHECK(at < 0, "fill seen through the second mapping: byte %ld is %#x", at, keep[at]);
	for (unsigned int i = 0; i < MUNMAP_PAGES; i++) {
		vsvm_memmove(&job, buf, dev + i * PAGE + 8, sizeof(buf));
		why = run(&job);
		CHECK(!why, "memmove from page %u: %s", i, why);
	}
	CHECK(munmap(dev, len) == 0, "munmap: %s", strerror(errno));

	/* Every page again, now unmapped: each job faults on its first byte. */
	for (unsigned int i = 0; i < MUNMAP_PAGES; i++) {
		vsvm_fill(&job, dev + i * PAGE, ~PATTERN, PAGE);
		why = run_fault(&job, dev + i * PAGE, PAGE, 1);
		CHECK(!why, "fill of unmapped page %u: %s", i, why);
		CHECK(job.rec.bytes_completed == 0, "fill of unmapped page %u: %u bytes written", i,
		      job.rec.bytes_completed);
		vsvm_memmove(&job, buf, dev + i * PAGE + 8, sizeof(buf));
		why = run_fault(&job, dev + i * PAGE, PAGE, 0);
		CHECK(!why, "memmove from unmapped page %u: %s", i, why);
	}
	at = first_not_pattern(keep, PATTERN, len);
	CHECK(at < 0, "the pages changed after munmap: byte %ld is %#x (a stale ATC entry?)", at,
	      keep[at]);
	/* The pages themselves are still fine through the other mapping. */
	vsvm_fill(&job, keep, ~PATTERN, len);
	why = run(&job);
	CHECK(!why, "fill through the second mapping: %s", why);
	at = first_not_pattern(keep, ~PATTERN, len);
	CHECK(at < 0, "fill through the second mapping: byte %ld is %#x", at, keep[at]);
	munmap(keep, len);
	close(fd);
	case_ok("%u pages filled and read by the device, unmapped: every write and read of them "
		"faults, the pages (seen through a second mapping) untouched, the other mapping works",
		MUNMAP_PAGES);
}

/* Fixed addresses for `two`: the same in both processes, and one private to each. */
#define TWO_SHARED_VA	((void *)0x200000000000ull)
#define TWO_PARENT_VA	((void *)0x210000000000ull)
#define TWO_CHILD_VA	((void *)0x220000000000ull)
#define TWO_LEN		(64 * KiB)
#define TWO_ROUNDS	20

static uint8_t *map_at(void *addr, size_t len)
{
	uint8_t *p = mmap(addr, len, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);

	return p == addr ? p : NULL;
}

/*
 * One side of `two`: its bytes at the shared address, TWO_ROUNDS copies of
 * them checked, then a job aimed at the other's private address must fault.
 */
static void two_side(const char *who, uint64_t seed, uint8_t *mine, uint8_t *theirs)
{
	uint8_t *shared = map_at(TWO_SHARED_VA, TWO_LEN), *want = malloc(TWO_LEN);
	uint8_t *out = malloc(TWO_LEN);
	struct vsvm_job job;
	const char *why;
	long at;
	char name[48];

	snprintf(name, sizeof(name), "two %s", who);
	case_start(name);
	CHECK(shared && mine && want && out, "mmap at fixed addresses: %s", strerror(errno));
	pattern_bytes(shared, TWO_LEN, seed);
	memcpy(want, shared, TWO_LEN);
	pattern_bytes(mine, TWO_LEN, seed + 100);
	for (unsigned int r = 0; r < TWO_ROUNDS; r++) {
		memset(out, 0, TWO_LEN);
		vsvm_memmove(&job, out, shared, TWO_LEN);
		why = run(&job);
		CHECK(!why, "round %u: memmove from the shared address: %s", r, why);
		at = first_diff(out, want, TWO_LEN);
		CHECK(at < 0, "round %u: byte %ld is %#x, want %#x (the other process's?)", r, at,
		      out[at], want[at]);
		vsvm_fill(&job, mine, PATTERN ^ seed ^ r, TWO_LEN);
		why = run(&job);
		CHECK(!why, "round %u: fill of its own buffer: %s", r, why);
		at = first_not_pattern(mine, PATTERN ^ seed ^ r, TWO_LEN);
		CHECK(at < 0, "round %u: fill: byte %ld is %#x", r, at, mine[at]);
	}
	vsvm_fill(&job, theirs, PATTERN, 64);
	why = run_fault(&job, theirs, PAGE, 1);
	CHECK(!why, "a write to the other process's address: %s", why);
	vsvm_memmove(&job, out, theirs, 64);
	why = run_fault(&job, theirs, PAGE, 0);
	CHECK(!why, "a read of the other process's address: %s", why);
	case_ok("PASID %u: %u rounds of copies from %p (the other process has other bytes "
		"there) and fills, every byte its own; a job aimed at the other's %p faults",
		v.info.pasid, TWO_ROUNDS, TWO_SHARED_VA, theirs);
	free(want);
	free(out);
}

/* Two processes bound at once; the child's result comes back in its exit status. */
static void two_ops(void)
{
	int to_child[2], to_parent[2], st;
	uint32_t child_pasid = 0;
	char go = 'g';
	pid_t pid;

	case_start("two processes");
	CHECK(pipe(to_child) == 0 && pipe(to_parent) == 0, "pipe: %s", strerror(errno));
	pid = fork();
	CHECK(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		uint8_t *mine = map_at(TWO_CHILD_VA, TWO_LEN);

		close(to_parent[0]);
		close(to_child[1]);
		/* Its own binding: the inherited file is the parent's. */
		vsvm_close(&v);
		cases = failed = 0;
		if (vsvm_open(&v, 0)) {
			printf("sva two child: FAIL: open: %s\n", strerror(errno));
			_exit(1);
		}
		if (write(to_parent[1], &v.info.pasid, sizeof(v.info.pasid)) != sizeof(v.info.pasid) ||
		    read(to_child[0], &go, 1) != 1)
			_exit(1);
		two_side("child", 2, mine, TWO_PARENT_VA);
		vsvm_close(&v);
		_exit(failed || !cases ? 1 : 0);
	}
	/* A child that died early closes the pipe: no read waits forever. */
	close(to_parent[1]);
	close(to_child[0]);
	{
		uint8_t *mine = map_at(TWO_PARENT_VA, TWO_LEN);

		CHECK(read(to_parent[0], &child_pasid, sizeof(child_pasid)) == sizeof(child_pasid),
		      "the child did not bind");
		/* Both bound now; both run at once. */
		CHECK(write(to_child[1], &go, 1) == 1, "pipe: %s", strerror(errno));
		two_side("parent", 1, mine, TWO_CHILD_VA);
		snprintf(case_name, sizeof(case_name), "two processes");
		munmap(mine, TWO_LEN);
		munmap(TWO_SHARED_VA, TWO_LEN);
	}
	CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0,
	      "the child failed (status %#x)", st);
	CHECK(child_pasid != v.info.pasid, "both bound to PASID %u", child_pasid);
	case_ok("parent on PASID %u, child on PASID %u at the same time", v.info.pasid,
		child_pasid);
}

#define KILL_JOBS	48
#define KILL_JOB_LEN	(256 * KiB)	/* 64 never-touched pages a job */
#define KILL_AFTER_MS	30

/*
 * A child bound to its own PASID queues KILL_JOBS faulting jobs, the parent
 * SIGKILLs it while they run; then a new process binds and works.
 */
static void kill_ops(void)
{
	int to_parent[2], from_next[2], st;
	uint32_t pasid = 0, pasid2 = 0;
	uint64_t t0, t1;
	pid_t pid;

	case_start("kill");
	CHECK(pipe(to_parent) == 0, "pipe: %s", strerror(errno));
	pid = fork();
	CHECK(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		struct vsvm_job *jobs = mmap(NULL, KILL_JOBS * sizeof(*jobs), PROT_READ | PROT_WRITE,
					     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		uint8_t *data = mmap(NULL, (size_t)KILL_JOBS * KILL_JOB_LEN, PROT_READ | PROT_WRITE,
				     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		close(to_parent[0]);
		vsvm_close(&v);
		if (jobs == MAP_FAILED || data == MAP_FAILED || vsvm_open(&v, 0))
			_exit(1);
		for (unsigned int i = 0; i < KILL_JOBS; i++)
			vsvm_fill(&jobs[i], data + (size_t)i * KILL_JOB_LEN, PATTERN, KILL_JOB_LEN);
		if (vsvm_submit(&v, jobs, KILL_JOBS))
			_exit(1);
		if (write(to_parent[1], &v.info.pasid, sizeof(v.info.pasid)) != sizeof(v.info.pasid))
			_exit(1);
		/* Wait for the signal with the jobs running. */
		for (;;)
			pause();
	}
	close(to_parent[1]);
	CHECK(read(to_parent[0], &pasid, sizeof(pasid)) == sizeof(pasid),
	      "the child did not bind and submit");
	close(to_parent[0]);
	usleep(KILL_AFTER_MS * 1000);
	t0 = now_ns();
	kill(pid, SIGKILL);
	CHECK(waitpid(pid, &st, 0) == pid && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL,
	      "the child did not die of SIGKILL (status %#x)", st);
	t1 = now_ns();
	printf("sva kill: killed the process bound to PASID %#x with %u jobs of %u never-touched "
	       "pages queued; it was gone after %.1f ms\n", pasid, KILL_JOBS, KILL_JOB_LEN / PAGE,
	       (t1 - t0) / 1e6);

	/* The next process binds and works. */
	CHECK(pipe(from_next) == 0, "pipe: %s", strerror(errno));
	pid = fork();
	CHECK(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		const char *why;

		close(from_next[0]);
		vsvm_close(&v);
		if (vsvm_open(&v, 0))
			_exit(2);
		why = job_works(31);
		if (why) {
			printf("sva kill: the next process: %s\n", why);
			_exit(3);
		}
		if (write(from_next[1], &v.info.pasid, sizeof(v.info.pasid)) != sizeof(v.info.pasid))
			_exit(4);
		vsvm_close(&v);
		_exit(0);
	}
	CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0,
	      "the next process failed (status %#x)", st);
	close(from_next[1]);
	CHECK(read(from_next[0], &pasid2, sizeof(pasid2)) == sizeof(pasid2), "no PASID back");
	close(from_next[0]);
	CHECK(pasid2 != v.info.pasid, "the next process shares this one's PASID %#x", pasid2);
	/* This process's own binding goes on too. */
	{
		const char *why = job_works(32);

		CHECK(!why, "the parent's next job: %s", why);
	}
	case_ok("the killed process (PASID %#x) went away; the next process bound to PASID %#x "
		"and its job worked, and so did the parent's", pasid, pasid2);
}

#define SOAK_JOBS		3000
#define SOAK_PROCS		2
#define SOAK_IN_FLIGHT		16
#define DEMO_JOBS		400
#define DEMO_SEED		0x5653u
/* A soak process that outlives this (its every wait is bounded) is stuck: stop it. */
#define SOAK_CHILD_TIMEOUT_S	600

struct soak_args {
	uint64_t seed;
	unsigned int jobs, procs, in_flight;
};

/* Options after the mode; -1 on a bad one (printed). */
static int soak_args(int argc, char **argv, struct soak_args *a)
{
	for (int i = 2; i < argc; i++) {
		const char *opt = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
		char *end;
		unsigned long long n;

		if (!val) {
			printf("accel-sva: %s needs a value\n", opt);
			return -1;
		}
		errno = 0;
		n = strtoull(val, &end, 0);
		if (errno || *end || end == val) {
			printf("accel-sva: %s: not a number: %s\n", opt, val);
			return -1;
		}
		if (!strcmp(opt, "--seed")) {
			a->seed = n;
		} else if (!strcmp(opt, "--jobs") && n >= 1 && n <= 10000000) {
			a->jobs = n;
		} else if (!strcmp(opt, "--procs") && n >= 1 && n <= 2) {
			a->procs = n;
		} else if (!strcmp(opt, "--in-flight") && n >= 1 && n <= SOAK_MAX_INFLIGHT) {
			a->in_flight = n;
		} else {
			printf("accel-sva: bad option %s %s\n", opt, val);
			return -1;
		}
		i++;
	}
	return 0;
}

static void soak_add_stats(struct soak_stats *to, const struct soak_stats *st)
{
	to->jobs += st->jobs;
	to->batches += st->batches;
	to->memmoves += st->memmoves;
	to->fills += st->fills;
	to->compares += st->compares;
	to->bytes_verified += st->bytes_verified;
	to->bytes_swept += st->bytes_swept;
	to->faults_expected += st->faults_expected;
	to->faults_seen += st->faults_seen;
	to->fault_pages += st->fault_pages;
	to->unmaps += st->unmaps;
	to->remaps += st->remaps;
	if (st->max_batch > to->max_batch)
		to->max_batch = st->max_batch;
	to->failed |= st->failed;
}

/* Wait for pid at most SOAK_CHILD_TIMEOUT_S (then SIGKILL it): its wait status, or -1. */
static int soak_reap(pid_t pid)
{
	int st;

	for (unsigned int i = 0; i < SOAK_CHILD_TIMEOUT_S * 10; i++) {
		pid_t r = waitpid(pid, &st, WNOHANG);

		if (r == pid)
			return st;
		if (r < 0)
			return -1;
		usleep(100 * 1000);
	}
	printf("sva soak: the second process is stuck after %u s: killing it\n",
	       SOAK_CHILD_TIMEOUT_S);
	kill(pid, SIGKILL);
	waitpid(pid, &st, 0);
	return -1;
}

/*
 * The soak: a second process (its own binding, its own regions at the same
 * addresses, another seed) runs at the same time; its counters come back
 * through a pipe.
 */
static void soak_ops(const struct soak_args *a)
{
	struct soak_params p = { .max_inflight = a->in_flight, .who = "sva soak parent" };
	struct soak_stats st, child = { 0 }, all = { 0 };
	unsigned int share = a->jobs / a->procs;
	int to_parent[2] = { -1, -1 }, to_child[2] = { -1, -1 }, wst = 0;
	char go = 'g';
	pid_t pid = -1;
	uint64_t t0 = now_ns();
	char tail[96];

	case_start("soak");
	printf("sva soak seed %#" PRIx64 " (replay: accel-sva soak --seed %#" PRIx64
	       " --jobs %u --procs %u --in-flight %u), %u jobs in %u process%s, up to %u in flight\n",
	       a->seed, a->seed, a->jobs, a->procs, a->in_flight, a->jobs, a->procs,
	       a->procs > 1 ? "es" : "", a->in_flight);
	if (a->procs > 1) {
		/* A child that died closed its pipe: the write below must fail, not kill us. */
		signal(SIGPIPE, SIG_IGN);
		CHECK(pipe(to_parent) == 0 && pipe(to_child) == 0, "pipe: %s", strerror(errno));
		pid = fork();
		CHECK(pid >= 0, "fork: %s", strerror(errno));
		if (pid == 0) {
			close(to_parent[0]);
			close(to_child[1]);
			/* Its own binding: the inherited file is the parent's. */
			vsvm_close(&v);
			if (vsvm_open(&v, 0)) {
				printf("sva soak child: FAIL: open: %s\n", strerror(errno));
				_exit(1);
			}
			printf("sva soak child: bound to PASID %u\n", v.info.pasid);
			p.seed = a->seed ^ 0x9e3779b97f4a7c15ull;
			p.jobs = a->jobs - share;
			p.who = "sva soak child";
			soak_run(&v, &p, &st);
			soak_print(p.who, &st, st.failed ? ": FAIL" : ": OK");
			/*
			 * Unbind only once the parent's jobs are done too: the drain's stop
			 * marker then never shares the guest's page request queue with a
			 * page request (one interrupt for two would spoil the count the
			 * host compares with the server's).
			 */
			if (write(to_parent[1], &st, sizeof(st)) != sizeof(st) ||
			    read(to_child[0], &go, 1) != 1)
				_exit(1);
			vsvm_close(&v);
			_exit(st.failed ? 1 : 0);
		}
		close(to_parent[1]);
		close(to_child[0]);
	}
	p.seed = a->seed;
	p.jobs = share;
	soak_run(&v, &p, &st);
	soak_print(p.who, &st, st.failed ? ": FAIL" : ": OK");
	soak_add_stats(&all, &st);
	if (pid > 0) {
		/* The child's jobs are done once its counters come (or it died: EOF). */
		ssize_t got = read(to_parent[0], &child, sizeof(child));

		close(to_parent[0]);
		if (write(to_child[1], &go, 1) != 1)
			got = -1;
		close(to_child[1]);
		wst = soak_reap(pid);
		CHECK(got == sizeof(child) && wst >= 0 && WIFEXITED(wst),
		      "the second process did not finish (status %#x)", wst);
		soak_add_stats(&all, &child);
	}
	all.ns = now_ns() - t0;
	snprintf(tail, sizeof(tail), " processes=%u seed=%#" PRIx64, a->procs, a->seed);
	soak_print("sva soak total", &all, tail);
	CHECK(!all.failed, "a soak process failed (its lines above)");
	CHECK(all.jobs == a->jobs, "%" PRIu64 " jobs ran, want %u", all.jobs, a->jobs);
	case_ok("%" PRIu64 " jobs in %u process%s, %" PRIu64 " bytes verified, faults %" PRIu64
		" expected / %" PRIu64 " seen, %" PRIu64 " fresh pages faulted in, %" PRIu64
		" unmaps, %.1f s", all.jobs, a->procs, a->procs > 1 ? "es" : "", all.bytes_verified,
		all.faults_expected, all.faults_seen, all.fault_pages, all.unmaps, all.ns / 1e9);
}

/* The demo's workload: one process, faults and a munmap for sure, a machine-readable line. */
static void demo_ops(const struct soak_args *a)
{
	struct soak_params p = {
		.seed = a->seed, .jobs = a->jobs, .max_inflight = a->in_flight,
		.force_events = 1, .who = "sva demo",
	};
	struct soak_stats st;

	case_start("demo");
	printf("sva demo: %u random jobs (seed %#" PRIx64 ") on this process's own memory: "
	       "malloc'd, huge pages, never-touched pages, a read-only page, a hole, a PROT_NONE "
	       "page; a range unmapped and mapped again halfway\n", a->jobs, a->seed);
	soak_run(&v, &p, &st);
	soak_print(p.who, &st, st.failed ? ": FAIL" : ": OK");
	CHECK(!st.failed, "the demo workload failed (above)");
	CHECK(st.fault_pages > 0 && st.unmaps > 0 && st.faults_seen > 0,
	      "no page faults, munmap or reported faults happened");
	printf("accel-sva demo: jobs=%" PRIu64 " bytes_verified=%" PRIu64 " faults_reported=%" PRIu64
	       " fault_pages=%" PRIu64 " munmaps=%" PRIu64 " pasid=%u\n", st.jobs,
	       st.bytes_verified, st.faults_seen, st.fault_pages, st.unmaps, v.info.pasid);
	case_ok("%" PRIu64 " jobs, %" PRIu64 " bytes verified, %" PRIu64 " never-touched pages "
		"faulted in through PRI, %" PRIu64 " faults reported by the device, %" PRIu64
		" munmap(s), %.1f s", st.jobs, st.bytes_verified, st.fault_pages, st.faults_seen,
		st.unmaps, st.ns / 1e9);
}

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "basic";

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (vsvm_open(&v, 0)) {
		if (errno == EOPNOTSUPP) {
			/* Debian 6.12 (stable 6.12.64+): iommu_sva_bind_device() refuses on x86. */
			printf("accel-sva: the kernel refuses SVA binds (" VSVM_SVA_DEV_PREFIX "0: %s)\n",
			       strerror(errno));
			return EXIT_SVA_REFUSED;
		}
		printf("accel-sva: FAIL: open " VSVM_SVA_DEV_PREFIX "0: %s\n", strerror(errno));
		return 1;
	}
	printf("accel-sva: bound to PASID %u (work queue %u, ring %u, max xfer %u)\n",
	       v.info.pasid, v.info.wq, v.info.ring_size, v.info.max_xfer);
	if (!strcmp(mode, "basic")) {
		malloc_ops();
		thp_ops();
	} else if (!strcmp(mode, "fault")) {
		fault_ops();
	} else if (!strcmp(mode, "bad")) {
		bad_ops();
	} else if (!strcmp(mode, "badaddr")) {
		badaddr_ops();
	} else if (!strcmp(mode, "munmap")) {
		munmap_ops();
	} else if (!strcmp(mode, "two")) {
		two_ops();
	} else if (!strcmp(mode, "kill")) {
		kill_ops();
	} else if (!strcmp(mode, "soak") || !strcmp(mode, "demo")) {
		int demo = !strcmp(mode, "demo");
		struct soak_args a = {
			.jobs = demo ? DEMO_JOBS : SOAK_JOBS,
			.procs = demo ? 1 : SOAK_PROCS,
			.in_flight = SOAK_IN_FLIGHT,
			.seed = demo ? DEMO_SEED : now_ns() ^ ((uint64_t)getpid() << 32),
		};

		if (soak_args(argc, argv, &a))
			return 2;
		if (demo)
			demo_ops(&a);
		else
			soak_ops(&a);
	} else {
		printf("usage: accel-sva basic|fault|bad|badaddr|munmap|two|kill|soak|demo [options]\n");
		return 2;
	}
	vsvm_info(&v);
	printf("accel-sva %s: %" PRIu64 " descriptors submitted, %" PRIu64 " completion interrupts so far\n",
	       mode, (uint64_t)v.info.submitted, (uint64_t)v.info.completion_irqs);
	vsvm_close(&v);
	printf("accel-sva %s: %d cases, %d failed: %s\n", mode, cases, failed,
	       failed ? "FAIL" : "PASS");
	return failed ? 1 : 0;
}
