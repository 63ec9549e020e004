// SPDX-License-Identifier: MIT
/*
 * sva-bench: Shared Virtual Memory benchmark, guest side (benches/sva.rs boots
 * it through guest-tests/guest/tests/sva-bench). The process binds itself to
 * the accelerator (/dev/vsvm-sva0, libvsvm.h) and compares, interleaved so that
 * the machine's noise hits every side alike:
 *
 *   sva-bench copy REPS MAX_FAULT SIZE...
 *	for each repetition and size, in an order that rotates every repetition:
 *	  cpu     memcpy(dst, src, size) by this CPU (both buffers pre-faulted);
 *	  device  a device MEMMOVE of the same buffers (pre-faulted);
 *	  fault   a device MEMMOVE from the same source into a fresh mmap that
 *		  nobody touched: every destination page is a page request through
 *		  PRI and the guest's PRQ (sizes up to MAX_FAULT only).
 *	Device jobs are split at the device's MAX_XFER, submitted with one call,
 *	and only the last raises the completion interrupt; the time runs from
 *	the submit to the process seeing the last record (at once if it is
 *	written when the process looks, else woken by that interrupt). Every byte the
 *	device wrote is checked (outside the timing). One line per size:
 *	  BENCH sva-copy len=L reps=R cpu_ns=M device_ns=M fault_ns=M
 *	(medians; fault_ns=0 above MAX_FAULT).
 *
 *   sva-bench rtt N
 *	N rounds, each timing (rotating order) three round trips:
 *	  fault   an 8-byte MEMMOVE into a never-touched page (one page request),
 *		  submit -> record written -> process sees it (as above);
 *	  job     the same MEMMOVE into a pre-faulted page: the same path without
 *		  the page request (the MSI-X round trip as the program sees it);
 *	  msix    the driver's own MSI-X round trip (/dev/vsvm-accel BENCH irq:
 *		  write IRQ_RAISE, the interrupt wakes the waiter; timed in the
 *		  kernel, as the latency benchmark does).
 *	One line each:
 *	  BENCH sva-rtt kind=K n=N median_ns=M p90_ns=P min_ns=m
 *
 * Exit 0 only if every job succeeded and every byte was right.
 */
#define _GNU_SOURCE
#include <err.h>
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "libvsvm.h"

#define PAGE		4096u
#define TIMEOUT_MS	60000	/* 16 MiB of page requests under TCG: seconds, well below */
#define MAX_JOBS	64	/* 64 x MAX_XFER (1 MiB): the largest size we take */
#define RTT_BYTES	8

static struct vsvm v;
static struct vsvm_job jobs[MAX_JOBS];
static int failures;

static uint64_t now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Sorts v in place: v[n / 2] is the median, v[n * 9 / 10] the 90th percentile. */
static void sort_u64(uint64_t *s, size_t n)
{
	qsort(s, n, sizeof(*s), cmp_u64);
}

static void *map_fresh(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		err(1, "mmap %zu", len);
	return p;
}

/* A buffer whose every page is present (written once by this CPU). */
static uint8_t *map_present(size_t len)
{
	uint8_t *p = map_fresh(len);

	memset(p, 0x5a, len);
	return p;
}

/* Byte i of the source in repetition rep: changes every repetition, so a stale copy shows. */
static void fill_source(uint8_t *src, size_t len, unsigned int rep)
{
	uint64_t *w = (uint64_t *)src;

	for (size_t i = 0; i < len / 8; i++)
		w[i] = (i * 0x9e3779b97f4a7c15ull) ^ ((uint64_t)rep << 56) ^ rep;
}

/*
 * Device MEMMOVE src -> dst of len bytes, split at MAX_XFER, one submit call; only the last
 * descriptor raises the completion interrupt. Returns the nanoseconds from the submit to the
 * process awake with every record written, or 0 on a failure (reported).
 */
static uint64_t device_copy(uint8_t *dst, const uint8_t *src, size_t len, const char *what)
{
	size_t xfer = v.info.max_xfer ? v.info.max_xfer : 1, n = (len + xfer - 1) / xfer;
	uint64_t t0, t1;

	if (n > MAX_JOBS) {
		fprintf(stderr, "sva-bench: %zu bytes need %zu jobs (max %d)\n", len, n, MAX_JOBS);
		failures++;
		return 0;
	}
	for (size_t i = 0; i < n; i++) {
		size_t off = i * xfer, k = len - off < xfer ? len - off : xfer;

		vsvm_memmove(&jobs[i], dst + off, src + off, (uint32_t)k);
		if (i + 1 < n)
			jobs[i].desc.control &= ~VSVM_DESC_RCI;
	}
	t0 = now_ns();
	if (vsvm_submit(&v, jobs, (unsigned int)n)) {
		fprintf(stderr, "sva-bench: %s: submit: %s\n", what, strerror(errno));
		failures++;
		return 0;
	}
	/* The queue runs in order: the last record written means the others were before it. */
	for (size_t i = n; i-- > 0;) {
		if (!vsvm_done(&jobs[i]) && vsvm_wait(&v, &jobs[i], TIMEOUT_MS)) {
			fprintf(stderr, "sva-bench: %s: wait: %s\n", what, strerror(errno));
			failures++;
			return 0;
		}
	}
	t1 = now_ns();
	for (size_t i = 0; i < n; i++) {
		if (jobs[i].rec.status != VSVM_WQ_ST_SUCCESS) {
			fprintf(stderr, "sva-bench: %s %zu bytes: job %zu status %#x at %#" PRIx64 "\n",
				what, len, i, jobs[i].rec.status, (uint64_t)jobs[i].rec.fault_addr);
			failures++;
			return 0;
		}
	}
	if (memcmp(dst, src, len)) {
		fprintf(stderr, "sva-bench: %s %zu bytes: the copy differs from the source\n", what,
			len);
		failures++;
		return 0;
	}
	return t1 - t0 ? t1 - t0 : 1;
}

static uint64_t cpu_copy(uint8_t *dst, const uint8_t *src, size_t len)
{
	uint64_t t0 = now_ns(), t1;

	memcpy(dst, src, len);
	/* The copy must happen here, not be moved past the clock. */
	__asm__ __volatile__("" : : "r"(dst) : "memory");
	t1 = now_ns();
	return t1 - t0 ? t1 - t0 : 1;
}

static int copy_bench(unsigned int reps, size_t max_fault, size_t *sizes, unsigned int nsizes)
{
	size_t largest = 0;
	uint64_t *samples[3];
	uint8_t *src, *dst;

	for (unsigned int s = 0; s < nsizes; s++)
		largest = sizes[s] > largest ? sizes[s] : largest;
	src = map_present(largest);
	dst = map_present(largest);
	for (int k = 0; k < 3; k++) {
		samples[k] = calloc((size_t)reps * nsizes, sizeof(uint64_t));
		if (!samples[k])
			err(1, "calloc");
	}
	for (unsigned int rep = 0; rep < reps; rep++) {
		for (unsigned int s = 0; s < nsizes; s++) {
			size_t len = sizes[s];

			fill_source(src, len, rep);
			for (int step = 0; step < 3; step++) {
				int kind = (int)(rep + s + step) % 3;
				uint64_t *out = &samples[kind][s * reps + rep];

				if (kind == 0) {
					*out = cpu_copy(dst, src, len);
				} else if (kind == 1) {
					memset(dst, 0, len);	/* stale bytes must not pass */
					*out = device_copy(dst, src, len, "device");
				} else if (len <= max_fault) {
					uint8_t *fresh = map_fresh(len);

					*out = device_copy(fresh, src, len, "fault");
					munmap(fresh, len);
				}
			}
		}
		fprintf(stderr, "sva-bench: copy repetition %u of %u done\n", rep + 1, reps);
	}
	for (unsigned int s = 0; s < nsizes; s++) {
		uint64_t med[3];

		for (int k = 0; k < 3; k++) {
			sort_u64(&samples[k][s * reps], reps);
			med[k] = samples[k][s * reps + reps / 2];
		}
		printf("BENCH sva-copy len=%zu reps=%u cpu_ns=%" PRIu64 " device_ns=%" PRIu64
		       " fault_ns=%" PRIu64 "\n", sizes[s], reps, med[0], med[1], med[2]);
	}
	return 0;
}

/* One 8-byte MEMMOVE into dst: nanoseconds from submit to the process awake, 0 on failure. */
static uint64_t rtt_job(uint8_t *dst, const uint8_t *src, const char *what)
{
	return device_copy(dst, src, RTT_BYTES, what);
}

/* The driver's MSI-X round trip, one iteration timed in the kernel; 0 on failure. */
static uint64_t rtt_msix(int accel)
{
	struct vsvm_accel_bench b = { .op = VSVM_ACCEL_BENCH_IRQ, .iters = 1 };

	if (ioctl(accel, VSVM_ACCEL_IOC_BENCH, &b) < 0) {
		fprintf(stderr, "sva-bench: msix: %s\n", strerror(errno));
		failures++;
		return 0;
	}
	return b.median_ns ? b.median_ns : 1;
}

static void print_rtt(const char *kind, uint64_t *s, unsigned int n)
{
	sort_u64(s, n);
	printf("BENCH sva-rtt kind=%s n=%u median_ns=%" PRIu64 " p90_ns=%" PRIu64
	       " min_ns=%" PRIu64 "\n", kind, n, s[n / 2], s[n * 9 / 10], s[0]);
}

static int rtt_bench(unsigned int n)
{
	static const char *const kinds[3] = { "fault", "job", "msix" };
	uint8_t *src = map_present(PAGE), *warm = map_present(PAGE);
	uint64_t *s[3];
	int accel = open(VSVM_ACCEL_DEV, O_RDWR | O_CLOEXEC);

	if (accel < 0)
		err(1, "open %s", VSVM_ACCEL_DEV);
	for (int k = 0; k < 3; k++) {
		s[k] = calloc(n, sizeof(uint64_t));
		if (!s[k])
			err(1, "calloc");
	}
	/* One of each first, untimed: the device's ATC and the process's pages settle. */
	fill_source(src, PAGE, 1);
	rtt_job(warm, src, "warm-up");
	for (unsigned int i = 0; i < n; i++) {
		fill_source(src, PAGE, i + 2);
		for (int step = 0; step < 3; step++) {
			int kind = (int)(i + step) % 3;

			if (kind == 0) {
				uint8_t *fresh = map_fresh(PAGE);

				s[0][i] = rtt_job(fresh, src, "fault");
				munmap(fresh, PAGE);
			} else if (kind == 1) {
				s[1][i] = rtt_job(warm, src, "job");
			} else {
				s[2][i] = rtt_msix(accel);
			}
		}
	}
	for (int k = 0; k < 3; k++)
		print_rtt(kinds[k], s[k], n);
	close(accel);
	return 0;
}

static void usage(void)
{
	fprintf(stderr, "usage: sva-bench copy REPS MAX_FAULT SIZE... | sva-bench rtt N\n");
	exit(2);
}

int main(int argc, char **argv)
{
	if (argc < 3)
		usage();
	if (vsvm_open(&v, 0))
		err(1, "vsvm_open");
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (!strcmp(argv[1], "copy") && argc >= 5) {
		unsigned int reps = (unsigned int)strtoul(argv[2], NULL, 0), nsizes = 0;
		size_t max_fault = strtoull(argv[3], NULL, 0);
		size_t sizes[32];

		for (int i = 4; i < argc && nsizes < 32; i++) {
			sizes[nsizes] = strtoull(argv[i], NULL, 0);
			if (!sizes[nsizes] || sizes[nsizes] % PAGE)
				usage();
			nsizes++;
		}
		if (!reps)
			usage();
		copy_bench(reps, max_fault, sizes, nsizes);
	} else if (!strcmp(argv[1], "rtt")) {
		unsigned int n = (unsigned int)strtoul(argv[2], NULL, 0);

		if (!n)
			usage();
		rtt_bench(n);
	} else {
		usage();
	}
	vsvm_close(&v);
	if (failures)
		printf("sva-bench: FAIL: %d failure(s)\n", failures);
	return failures ? 1 : 0;
}
