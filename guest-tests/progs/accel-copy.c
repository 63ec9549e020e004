// SPDX-License-Identifier: MIT
/*
 * accel-copy: run copy jobs on the vsvm accelerator through the vsvm_accel
 * guest kernel module (/dev/vsvm-accel) and check the results.
 *
 *   accel-copy [--len N] [--irq] [--iters K] [--seed S] [--bad-len]
 *              [--unmapped-dst [--iommu]]
 *
 * Each job copies N bytes (default 4096, at most 1 MiB) of a seeded pattern;
 * the destination must equal the source and DMA_STATUS must say done. With
 * --irq the driver waits for MSI-X vector 0, and the driver's interrupt count
 * must grow by exactly one per job (without --irq it must not grow at all).
 * --bad-len sends len 0 instead, which the device must reject with BAD_LEN.
 * --unmapped-dst aims the copy at an IOVA the DMA API never mapped: behind an
 * IOMMU (--iommu) the device must end it with TRANSLATION, without one with
 * DST_FAULT (the address is not guest RAM).
 *
 * Last line: "accel-copy: ... OK", or "accel-copy: FAIL: <why>" and exit 1.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "../module/vsvm_accel_uapi.h"
#include "pattern.h"

static void fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void fail(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fputs("accel-copy: FAIL: ", stdout);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	exit(1);
}

static void usage(void)
{
	fprintf(stderr, "usage: accel-copy [--len N] [--irq] [--iters K] [--seed S] [--bad-len]\n"
			"                  [--unmapped-dst [--iommu]]\n");
	exit(2);
}

static unsigned long parse_num(const char *s, const char *what)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 0);
	if (errno || *end || end == s) {
		fprintf(stderr, "accel-copy: bad %s '%s'\n", what, s);
		usage();
	}
	return v;
}

static int cmp_u64(const void *x, const void *y)
{
	uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;

	return a < b ? -1 : a > b;
}

static struct vsvm_accel_info info(int fd)
{
	struct vsvm_accel_info in;

	memset(&in, 0, sizeof(in));
	if (ioctl(fd, VSVM_ACCEL_IOC_INFO, &in) < 0)
		fail("VSVM_ACCEL_IOC_INFO: %s", strerror(errno));
	return in;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "len", required_argument, NULL, 'l' },
		{ "irq", no_argument, NULL, 'i' },
		{ "iters", required_argument, NULL, 'k' },
		{ "seed", required_argument, NULL, 's' },
		{ "bad-len", no_argument, NULL, 'b' },
		{ "unmapped-dst", no_argument, NULL, 'u' },
		{ "iommu", no_argument, NULL, 'm' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	unsigned long len = 4096, iters = 1, seed = 1;
	int use_irq = 0, bad_len = 0, unmapped = 0, iommu = 0, c;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'l': len = parse_num(optarg, "length"); break;
		case 'i': use_irq = 1; break;
		case 'k': iters = parse_num(optarg, "iteration count"); break;
		case 's': seed = parse_num(optarg, "seed"); break;
		case 'b': bad_len = 1; break;
		case 'u': unmapped = 1; break;
		case 'm': iommu = 1; break;
		default: usage();
		}
	}
	if (optind != argc || iters == 0 || len > UINT32_MAX)
		usage();
	if (bad_len)
		len = 0;
	if (bad_len && unmapped)
		usage();
	/* What an unmapped destination must end in. */
	uint32_t want_err = iommu ? VSVM_ACCEL_ERR_TRANSLATION : VSVM_ACCEL_ERR_DST_FAULT;

	int fd = open(VSVM_ACCEL_DEV, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		fail("open %s: %s (is vsvm_accel loaded and bound?)", VSVM_ACCEL_DEV, strerror(errno));

	struct vsvm_accel_info before = info(fd);
	printf("accel-copy: id %#010x version %u.%u cap %#x irq_count %u jobs_done %u\n",
	       before.id, before.version >> 16, before.version & 0xffff, before.cap,
	       before.irq_count, before.jobs_done);

	/* +1: a zero-length run still passes valid pointers */
	uint8_t *src = malloc(len + 1), *dst = malloc(len + 1);
	if (!src || !dst)
		fail("out of memory for %lu-byte buffers", len);

	uint64_t total_ns = 0;
	/* Per-job times, for the median (a mean follows the slowest jobs of a noisy guest). */
	uint64_t *job_ns = calloc(iters, sizeof(*job_ns));
	if (!job_ns)
		fail("out of memory for %lu job times", iters);
	uint32_t irq_seen = 0, last_status = 0;
	for (unsigned long k = 0; k < iters; k++) {
		struct vsvm_accel_copy job;

		pattern_bytes(src, len, seed + k);
		memset(dst, 0xa5, len);	/* the driver must overwrite every byte */
		memset(&job, 0, sizeof(job));
		job.user_src = (uintptr_t)src;
		job.user_dst = (uintptr_t)dst;
		job.len = (uint32_t)len;
		job.flags = (use_irq ? VSVM_ACCEL_COPY_USE_IRQ : 0) |
			    (unmapped ? VSVM_ACCEL_COPY_UNMAPPED_DST : 0);
		if (ioctl(fd, VSVM_ACCEL_IOC_COPY, &job) < 0)
			fail("job %lu: VSVM_ACCEL_IOC_COPY: %s", k, strerror(errno));

		uint32_t st = job.status;
		last_status = st;
		if (bad_len) {
			if (VSVM_ACCEL_ST_STATE(st) != VSVM_ACCEL_ST_ERROR ||
			    VSVM_ACCEL_ST_ERR(st) != VSVM_ACCEL_ERR_BAD_LEN)
				fail("job %lu: len 0 gave status %#x, want error BAD_LEN (%#x)", k, st,
				     VSVM_ACCEL_ERR_BAD_LEN << 8 | VSVM_ACCEL_ST_ERROR);
		} else if (unmapped) {
			if (VSVM_ACCEL_ST_STATE(st) != VSVM_ACCEL_ST_ERROR ||
			    VSVM_ACCEL_ST_ERR(st) != want_err)
				fail("job %lu: unmapped destination gave status %#x, want error %u",
				     k, st, want_err);
		} else {
			if (VSVM_ACCEL_ST_STATE(st) != VSVM_ACCEL_ST_DONE)
				fail("job %lu: status %#x (state %u, error %u), want done", k, st,
				     VSVM_ACCEL_ST_STATE(st), VSVM_ACCEL_ST_ERR(st));
			for (size_t i = 0; i < len; i++)
				if (dst[i] != src[i])
					fail("job %lu: byte %zu of %lu differs: got %#04x, want %#04x",
					     k, i, len, dst[i], src[i]);
		}
		if (job.irq_seen != (use_irq ? 1u : 0u))
			fail("job %lu: %u completion interrupt(s) during the job, want %u", k,
			     job.irq_seen, use_irq ? 1u : 0u);
		irq_seen += job.irq_seen;
		total_ns += job.ns;
		job_ns[k] = job.ns;
	}

	struct vsvm_accel_info after = info(fd);
	printf("accel-copy: irq_count %u jobs_done %u, %" PRIu64 " ns/job\n",
	       after.irq_count, after.jobs_done, total_ns / iters);
	qsort(job_ns, iters, sizeof(*job_ns), cmp_u64);
	printf("accel-copy: median %" PRIu64 " ns/job\n", job_ns[iters / 2]);
	free(job_ns);
	uint32_t want_irqs = use_irq ? (uint32_t)iters : 0;
	if (after.irq_count - before.irq_count != want_irqs)
		fail("irq_count went from %u to %u over %lu jobs, want +%u",
		     before.irq_count, after.irq_count, iters, want_irqs);
	if (after.jobs_done - before.jobs_done != (uint32_t)iters)
		fail("jobs_done went from %u to %u over %lu jobs", before.jobs_done,
		     after.jobs_done, iters);

	if (bad_len)
		printf("accel-copy: len 0 rejected with BAD_LEN (status %#x) in %lu jobs, irq=%s, OK\n",
		       last_status, iters, use_irq ? "yes" : "no");
	else if (unmapped)
		printf("accel-copy: unmapped destination %#llx refused with %s (status %#x) in %lu jobs, OK\n",
		       VSVM_ACCEL_UNMAPPED_IOVA, iommu ? "TRANSLATION" : "DST_FAULT", last_status, iters);
	else
		printf("accel-copy: copied %lu bytes in %lu jobs, irq=%s, OK\n",
		       len * iters, iters, use_irq ? "yes" : "no");
	free(src);
	free(dst);
	close(fd);
	return 0;
}
