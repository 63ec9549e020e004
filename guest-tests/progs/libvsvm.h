// SPDX-License-Identifier: MIT
/*
 * libvsvm.h - a small user library for Shared Virtual Memory on the vsvm
 * accelerator: bind the calling process (open /dev/vsvm-sva<N>), let the
 * device move, fill and compare the process's own memory (malloc'd, mmap'd,
 * never touched: the kernel faults pages in for the device), and wait for the
 * completion records the device writes into that memory.
 *
 * Header only (static inline), so a program needs no extra object:
 *
 *	struct vsvm v;
 *	struct vsvm_job job;
 *	if (vsvm_open(&v, 0))			// /dev/vsvm-sva0
 *		err(1, "vsvm_open");
 *	vsvm_memmove(&job, dst, src, len);	// or vsvm_fill, vsvm_compare
 *	if (vsvm_run(&v, &job, 1000) == 0 && job.rec.status == VSVM_WQ_ST_SUCCESS)
 *		...;
 *	vsvm_close(&v);
 *
 * A job keeps its completion record inside itself: it must stay where it is
 * (and alive) until the record is written. vsvm_submit() queues several jobs
 * at once; vsvm_wait() sleeps until a job's completion interrupt (or polls its
 * record with vsvm_done()). The kernel interface: vsvm_accel_uapi.h.
 */
#ifndef LIBVSVM_H
#define LIBVSVM_H

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "../module/vsvm_accel_uapi.h"

/* A process bound to one accelerator. */
struct vsvm {
	int fd;
	struct vsvm_sva_info info;	/* PASID, limits */
};

/* One descriptor and its completion record (32-byte aligned, as the device wants). */
struct vsvm_job {
	struct vsvm_sva_desc desc;
	struct vsvm_sva_record rec __attribute__((aligned(VSVM_SVA_RECORD_ALIGN)));
};

/* Bind to /dev/vsvm-sva<index>: 0, or -1 with errno. */
static inline int vsvm_open(struct vsvm *v, unsigned int index)
{
	char path[64];

	snprintf(path, sizeof(path), VSVM_SVA_DEV_PREFIX "%u", index);
	v->fd = open(path, O_RDWR | O_CLOEXEC);
	if (v->fd < 0)
		return -1;
	if (ioctl(v->fd, VSVM_SVA_IOC_INFO, &v->info) < 0) {
		int e = errno;

		close(v->fd);
		v->fd = -1;
		errno = e;
		return -1;
	}
	return 0;
}

/* Unbind: the kernel drains the process's jobs on the device first. */
static inline void vsvm_close(struct vsvm *v)
{
	if (v->fd >= 0)
		close(v->fd);
	v->fd = -1;
}

/* Refresh v->info (completion interrupt count, descriptors submitted). */
static inline int vsvm_info(struct vsvm *v)
{
	return ioctl(v->fd, VSVM_SVA_IOC_INFO, &v->info);
}

static inline void vsvm_job_init(struct vsvm_job *job, uint32_t opcode)
{
	memset(job, 0, sizeof(*job));
	job->desc.control = opcode | VSVM_DESC_CRAV | VSVM_DESC_RCI;
	job->desc.completion = (uint64_t)(uintptr_t)&job->rec;
}

/* Copy len bytes src -> dst (overlap allowed). */
static inline void vsvm_memmove(struct vsvm_job *job, void *dst, const void *src, uint32_t len)
{
	vsvm_job_init(job, VSVM_WQ_OPC_MEMMOVE);
	job->desc.src = (uint64_t)(uintptr_t)src;
	job->desc.dst = (uint64_t)(uintptr_t)dst;
	job->desc.len = len;
}

/* Fill len bytes at dst with the 8-byte pattern (byte i gets byte i % 8 of it). */
static inline void vsvm_fill(struct vsvm_job *job, void *dst, uint64_t pattern, uint32_t len)
{
	vsvm_job_init(job, VSVM_WQ_OPC_FILL);
	job->desc.dst = (uint64_t)(uintptr_t)dst;
	job->desc.len = len;
	job->desc.pattern = pattern;
}

/* Compare len bytes at a and b: rec.result 0 equal, 1 different (first at bytes_completed). */
static inline void vsvm_compare(struct vsvm_job *job, const void *a, const void *b, uint32_t len)
{
	vsvm_job_init(job, VSVM_WQ_OPC_COMPARE);
	job->desc.src = (uint64_t)(uintptr_t)a;
	job->desc.dst = (uint64_t)(uintptr_t)b;
	job->desc.len = len;
}

/* Queue n jobs (any number: in batches of max_submit): 0, or -1 with errno. */
static inline int vsvm_submit(struct vsvm *v, struct vsvm_job *jobs, unsigned int n)
{
	struct vsvm_sva_desc descs[VSVM_SVA_MAX_SUBMIT];
	struct vsvm_sva_submit s = { 0 };
	unsigned int i, k;

	for (i = 0; i < n; i += k) {
		k = n - i < VSVM_SVA_MAX_SUBMIT ? n - i : VSVM_SVA_MAX_SUBMIT;
		for (unsigned int j = 0; j < k; j++) {
			memset(&jobs[i + j].rec, 0, sizeof(jobs[i + j].rec));
			descs[j] = jobs[i + j].desc;
		}
		s.descs = (uint64_t)(uintptr_t)descs;
		s.count = k;
		while (ioctl(v->fd, VSVM_SVA_IOC_SUBMIT, &s) < 0)
			if (errno != EINTR)
				return -1;
	}
	return 0;
}

/* The job's record is written (its status, with a read barrier for the rest). */
static inline int vsvm_done(const struct vsvm_job *job)
{
	return __atomic_load_n(&job->rec.status, __ATOMIC_ACQUIRE) != VSVM_WQ_ST_NONE;
}

/* Sleep until the job's record is written, at most timeout_ms: 0, or -1 with errno (ETIMEDOUT). */
static inline int vsvm_wait(struct vsvm *v, struct vsvm_job *job, unsigned int timeout_ms)
{
	struct vsvm_sva_wait w = { .record = (uint64_t)(uintptr_t)&job->rec,
				   .timeout_ms = timeout_ms };

	if (ioctl(v->fd, VSVM_SVA_IOC_WAIT, &w) < 0)
		return -1;
	__atomic_thread_fence(__ATOMIC_ACQUIRE);
	return 0;
}

/* Spin (no system call) until the job's record is written, at most timeout_ms. */
static inline int vsvm_poll(const struct vsvm_job *job, unsigned int timeout_ms)
{
	struct timespec t0, t;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (!vsvm_done(job)) {
		clock_gettime(CLOCK_MONOTONIC, &t);
		if ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 > timeout_ms) {
			errno = ETIMEDOUT;
			return -1;
		}
	}
	return 0;
}

/* Submit one job and sleep until it completed: 0 (look at job->rec.status), or -1 with errno. */
static inline int vsvm_run(struct vsvm *v, struct vsvm_job *job, unsigned int timeout_ms)
{
	if (vsvm_submit(v, job, 1))
		return -1;
	return vsvm_wait(v, job, timeout_ms);
}

#endif /* LIBVSVM_H */
