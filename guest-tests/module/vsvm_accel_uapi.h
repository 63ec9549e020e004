/* SPDX-License-Identifier: (GPL-2.0 WITH Linux-syscall-note) OR MIT */
/*
 * vsvm_accel_uapi.h - ioctl interface of /dev/vsvm-accel, shared by the
 * vsvm_accel guest kernel module and its userspace test programs.
 *
 * Device register map: devices/accel/README.md.
 */
#ifndef VSVM_ACCEL_UAPI_H
#define VSVM_ACCEL_UAPI_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define VSVM_ACCEL_DEV		"/dev/vsvm-accel"
#define VSVM_ACCEL_MAX_LEN	(1u << 20)	/* DMA_MAX_LEN of the device */

/* DMA_STATUS fields, as returned in vsvm_accel_copy.status. */
#define VSVM_ACCEL_ST_STATE(s)	((s) & 0x3u)
#define VSVM_ACCEL_ST_ERR(s)	(((s) >> 8) & 0xffu)
#define VSVM_ACCEL_ST_IDLE	0
#define VSVM_ACCEL_ST_BUSY	1
#define VSVM_ACCEL_ST_DONE	2
#define VSVM_ACCEL_ST_ERROR	3
#define VSVM_ACCEL_ERR_BAD_LEN	1
#define VSVM_ACCEL_ERR_SRC_FAULT 2
#define VSVM_ACCEL_ERR_DST_FAULT 3
#define VSVM_ACCEL_ERR_BUSY	4

struct vsvm_accel_info {
	__u32 id;		/* ID register: 0x56535641 */
	__u32 version;		/* VERSION register: major << 16 | minor */
	__u32 cap;		/* CAP register */
	__u32 irq_count;	/* completion interrupts (vector 0) seen since probe */
	__u32 jobs_done;	/* DMA_DONE register: jobs completed since reset */
	__u32 reserved;
};

/* vsvm_accel_copy.flags */
#define VSVM_ACCEL_COPY_USE_IRQ	(1u << 0)	/* wait for vector 0 instead of polling */

/*
 * One copy job: the driver bounces user_src through a DMA buffer, lets the
 * device copy it to a second DMA buffer and copies that back to user_dst.
 * len may be 0 (up to VSVM_ACCEL_MAX_LEN): the device, not the driver,
 * rejects it, so the error path can be tested. A device error is not an
 * ioctl error: look at status.
 */
struct vsvm_accel_copy {
	__u64 user_src;		/* in: source buffer (user address) */
	__u64 user_dst;		/* in: destination buffer (user address) */
	__u32 len;		/* in: bytes to copy */
	__u32 flags;		/* in: VSVM_ACCEL_COPY_* */
	__u32 status;		/* out: final DMA_STATUS */
	__u32 irq_seen;		/* out: completion interrupts taken during this job */
	__u64 ns;		/* out: START to completion, nanoseconds */
};

/* vsvm_accel_bench.op: what one timed iteration does */
#define VSVM_ACCEL_BENCH_READ	0	/* one BAR read (SCRATCH): a full round trip */
#define VSVM_ACCEL_BENCH_WRITE	1	/* one BAR write (SCRATCH): posted by QEMU */
#define VSVM_ACCEL_BENCH_IRQ	2	/* write IRQ_RAISE, wait for vector 0 */
#define VSVM_ACCEL_BENCH_MIXED	3	/* one BAR read, then `work` units of CPU work */

/*
 * Timing of `iters` iterations of one operation, measured in the guest kernel
 * around each iteration (ktime_get_ns). Up to VSVM_ACCEL_BENCH_MAX_ITERS.
 */
struct vsvm_accel_bench {
	__u32 op;		/* in: VSVM_ACCEL_BENCH_* */
	__u32 iters;		/* in: iterations */
	__u32 work;		/* in: MIXED: CPU work units per iteration */
	__u32 reserved;
	__u64 median_ns;	/* out */
	__u64 p90_ns;		/* out */
	__u64 min_ns;		/* out */
	__u64 total_ns;		/* out: all iterations */
};
#define VSVM_ACCEL_BENCH_MAX_ITERS	100000

#define VSVM_ACCEL_IOC_MAGIC	0xac
#define VSVM_ACCEL_IOC_INFO	_IOR(VSVM_ACCEL_IOC_MAGIC, 0, struct vsvm_accel_info)
#define VSVM_ACCEL_IOC_COPY	_IOWR(VSVM_ACCEL_IOC_MAGIC, 1, struct vsvm_accel_copy)
#define VSVM_ACCEL_IOC_BENCH	_IOWR(VSVM_ACCEL_IOC_MAGIC, 2, struct vsvm_accel_bench)

#endif /* VSVM_ACCEL_UAPI_H */
