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
#define VSVM_ACCEL_ERR_TRANSLATION 5	/* the IOMMU refused a translation */

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
 * Give the device VSVM_ACCEL_UNMAPPED_IOVA as the destination instead of the
 * driver's buffer: an address the DMA API never handed out, so behind an IOMMU
 * the write must fault (and without one it lies outside guest RAM).
 */
#define VSVM_ACCEL_COPY_UNMAPPED_DST	(1u << 1)
#define VSVM_ACCEL_COPY_FLAGS	(VSVM_ACCEL_COPY_USE_IRQ | VSVM_ACCEL_COPY_UNMAPPED_DST)
#define VSVM_ACCEL_UNMAPPED_IOVA	0x700000000000ull

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

/*
 * Work queues (device registers from 0x100, devices/accel/README.md). The
 * driver owns work queue 0: a ring of VSVM_ACCEL_WQ_RING descriptors, one
 * completion record per op and a data arena of VSVM_ACCEL_WQ_ARENA bytes, all
 * DMA-coherent (without an IOMMU the bus addresses are guest-physical). The
 * queue raises MSI-X vector VSVM_ACCEL_WQ_VECTOR on completions, the error
 * interrupt is vector VSVM_ACCEL_ERR_VECTOR.
 */
#define VSVM_ACCEL_WQ_RING	128		/* ring size in descriptors */
#define VSVM_ACCEL_WQ_ARENA	(2u << 20)	/* data arena: every op's data lives here */
#define VSVM_ACCEL_WQ_MAX_OPS	64		/* ops per VSVM_ACCEL_IOC_WQ_RUN */
#define VSVM_ACCEL_WQ_VECTOR	1
#define VSVM_ACCEL_ERR_VECTOR	2

/* CAP register bits */
#define VSVM_ACCEL_CAP_PLAIN_DMA	(1u << 0)
#define VSVM_ACCEL_CAP_WQ		(1u << 1)
#define VSVM_ACCEL_CAP_SVM		(1u << 2)
#define VSVM_ACCEL_CAP_WQ_COUNT(c)	(((c) >> 8) & 0xfu)

/* Descriptor opcodes */
#define VSVM_WQ_OPC_NOP		0x00
#define VSVM_WQ_OPC_MEMMOVE	0x01
#define VSVM_WQ_OPC_FILL	0x02
#define VSVM_WQ_OPC_COMPARE	0x03
#define VSVM_WQ_OPC_BATCH	0x04

/* Completion record / SWERR status codes */
#define VSVM_WQ_ST_NONE			0x00
#define VSVM_WQ_ST_SUCCESS		0x01
#define VSVM_WQ_ST_PAGE_FAULT		0x02
#define VSVM_WQ_ST_ABORTED		0x03
#define VSVM_WQ_ST_BATCH_FAIL		0x04
#define VSVM_WQ_ST_FIRST_ERROR		0x10
#define VSVM_WQ_ST_BAD_OPCODE		0x10
#define VSVM_WQ_ST_BAD_FLAGS		0x11
#define VSVM_WQ_ST_BAD_SIZE		0x12
#define VSVM_WQ_ST_BAD_BATCH		0x13
#define VSVM_WQ_ST_NESTED_BATCH		0x14
#define VSVM_WQ_ST_BAD_PASID		0x15
#define VSVM_WQ_ST_PASID_DISABLED	0x16
#define VSVM_WQ_ST_BAD_COMPLETION_ADDR	0x17
#define VSVM_WQ_ST_COMPLETION_FAULT	0x18
#define VSVM_WQ_ST_RING_READ_FAULT	0x19
#define VSVM_WQ_ST_BAD_TAIL		0x1a
#define VSVM_WQ_ST_BAD_PRIVILEGE	0x1b
#define VSVM_WQ_ST_PRI_UNAVAILABLE	0x1c
#define VSVM_WQ_ST_TRANSLATION_ERROR	0x1d
#define VSVM_WQ_ST_DMA_ERROR		0x1e

/* Completion record FAULT_INFO bits */
#define VSVM_WQ_FI_WRITE	(1u << 0)
#define VSVM_WQ_FI_BACKWARD	(1u << 1)

/* SWERR register fields */
#define VSVM_WQ_SWERR_VALID		(1ull << 0)
#define VSVM_WQ_SWERR_OVERFLOW		(1ull << 1)
#define VSVM_WQ_SWERR_BATCH		(1ull << 2)
#define VSVM_WQ_SWERR_WQ_VALID		(1ull << 3)
#define VSVM_WQ_SWERR_CODE(s)		((unsigned int)((s) >> 8) & 0xffu)
#define VSVM_WQ_SWERR_WQ(s)		((unsigned int)((s) >> 16) & 0xfu)
#define VSVM_WQ_SWERR_DESC_INDEX(s)	((unsigned int)((s) >> 32) & 0xffffu)
#define VSVM_WQ_SWERR_BATCH_INDEX(s)	((unsigned int)((s) >> 48) & 0xffffu)

/* vsvm_accel_wq_op.flags: how the driver builds the descriptor */
#define VSVM_WQ_OP_NO_RECORD		(1u << 0)	/* CRAV clear: no completion record */
#define VSVM_WQ_OP_NO_IRQ		(1u << 1)	/* RCI clear: no completion interrupt */
#define VSVM_WQ_OP_MISALIGN_RECORD	(1u << 2)	/* record address 8 bytes off alignment */
#define VSVM_WQ_OP_PASID		(1u << 3)	/* PV set, PASID = pasid */
#define VSVM_WQ_OP_PRIV			(1u << 4)	/* PRIV set */
#define VSVM_WQ_OP_RESERVED_BIT		(1u << 5)	/* a reserved CONTROL bit set */
#define VSVM_WQ_OP_FLAGS		0x3fu

#define VSVM_WQ_NOT_IN_BATCH	0xffffffffu

/*
 * One operation: the driver turns it into a 64-byte descriptor. Addresses are
 * offsets into the arena (SRC = arena + src_off, DST = arena + dst_off; FILL
 * and NOP ignore src_off). A BATCH op takes the batch_ops ops that follow it
 * in the array as its descriptor list (written to LEN: len, normally equal to
 * batch_ops); those are not put on the ring. Every op gets its own completion
 * record (unless VSVM_WQ_OP_NO_RECORD) and, outside a batch, its own ring slot.
 * Data ops must stay inside the arena: src_off/dst_off + len <= ARENA.
 */
struct vsvm_accel_wq_op {
	/* in */
	__u8 opcode;		/* any value: the device judges it */
	__u8 reserved0[3];
	__u32 flags;		/* VSVM_WQ_OP_* */
	__u32 len;		/* LEN: bytes, or BATCH descriptor count */
	__u32 batch_ops;	/* BATCH: number of following ops forming its list */
	__u32 src_off;
	__u32 dst_off;
	__u64 pattern;		/* FILL */
	__u32 pasid;		/* with VSVM_WQ_OP_PASID */
	/* out */
	__u32 ring_slot;	/* ring slot of the descriptor (of its BATCH inside one) */
	__u32 batch_index;	/* index in its batch, or VSVM_WQ_NOT_IN_BATCH */
	__u8 status;		/* record STATUS; 0: the device wrote no record */
	__u8 fault_info;	/* VSVM_WQ_FI_* */
	__u16 reserved1;
	__u32 bytes_completed;
	__u32 reserved2;
	__u64 fault_addr;
	__u64 result;		/* COMPARE: 0 equal, 1 different */
	__u64 completion_addr;	/* COMPLETION as submitted (bus address) */
};

/* vsvm_accel_wq_run.flags */
#define VSVM_WQ_RUN_DOORBELL_EACH	(1u << 0)	/* write TAIL after every descriptor */
#define VSVM_WQ_RUN_RESTART		(1u << 1)	/* disable and re-enable the queue first */
#define VSVM_WQ_RUN_BAD_DOORBELL	(1u << 2)	/* first write TAIL = WQ_SIZE (BAD_TAIL) */
#define VSVM_WQ_RUN_FLAGS		0x7u

/*
 * A run: data_len bytes from user_data go to arena byte 0, the ops are
 * submitted (one doorbell, or one per descriptor), then a NOP fence with a
 * record and a completion interrupt. The driver sleeps until the completion
 * interrupt shows the fence done (the queue runs in order, so every op is done
 * then), waits for the error interrupt too when SWERR or a record reports an
 * error, reads and clears SWERR, and copies the arena's first data_len bytes
 * back to user_data and the ops (with their outputs) back to user_ops.
 * A device error is not an ioctl error: look at the statuses and swerr.
 * -ETIMEDOUT: the fence's completion interrupt never came (details in dmesg).
 */
struct vsvm_accel_wq_run {
	__u64 user_ops;		/* in/out: nops struct vsvm_accel_wq_op */
	__u64 user_data;	/* in/out: arena image, data_len bytes */
	__u32 nops;		/* in: 1 ..= VSVM_ACCEL_WQ_MAX_OPS */
	__u32 data_len;		/* in: 0 ..= VSVM_ACCEL_WQ_ARENA */
	__u32 flags;		/* in: VSVM_WQ_RUN_* */
	/* out */
	__u32 completion_irqs;	/* queue vector interrupts taken during the run */
	__u32 error_irqs;	/* error vector interrupts taken during the run */
	__u32 descs_done;	/* WQ_DONE delta: ring descriptors completed, fence included */
	__u64 swerr;		/* SWERR after the run (then cleared) */
	__u64 swerr_addr;	/* SWERR_ADDR after the run */
	__u64 arena_addr;	/* bus address of arena byte 0 */
	__u64 ns;		/* first doorbell to the fence's interrupt */
};

#define VSVM_ACCEL_IOC_MAGIC	0xac
#define VSVM_ACCEL_IOC_INFO	_IOR(VSVM_ACCEL_IOC_MAGIC, 0, struct vsvm_accel_info)
#define VSVM_ACCEL_IOC_COPY	_IOWR(VSVM_ACCEL_IOC_MAGIC, 1, struct vsvm_accel_copy)
#define VSVM_ACCEL_IOC_BENCH	_IOWR(VSVM_ACCEL_IOC_MAGIC, 2, struct vsvm_accel_bench)
#define VSVM_ACCEL_IOC_WQ_RUN	_IOWR(VSVM_ACCEL_IOC_MAGIC, 3, struct vsvm_accel_wq_run)

/*
 * Shared Virtual Memory: /dev/vsvm-sva<N>, one per accelerator whose IOMMU
 * can bind process address spaces to it (CAP.SVM, and the kernel's SVA for
 * the device). The driver gives SVA work queue VSVM_SVA_WQ (block-on-fault,
 * completion interrupt on MSI-X vector VSVM_SVA_VECTOR); work queue 0 stays
 * the kernel-mode one above. devices/accel/README.md ("SVA from guest
 * userspace") describes the whole flow.
 *
 * open() binds the calling process's address space to the device
 * (iommu_sva_bind_device) and enables the PASID it got on the device
 * (PASID_SEL / PASID_CTL). Descriptors then carry the process's own virtual
 * addresses; the device reads and writes its memory through the IOMMU, and a
 * page it has not touched yet is faulted in by the kernel through PRI page
 * requests. Completion records land in the process's memory: poll their
 * STATUS byte, or sleep in VSVM_SVA_IOC_WAIT until the completion interrupt.
 * close() (the last one of the file) disables the PASID on the device,
 * waits until the device drained it (descriptors in flight end ABORTED or
 * complete) and unbinds. Only the process that opened the file may submit
 * through it (a child after fork() gets -EPERM: its addresses are not the
 * bound ones).
 */
#define VSVM_SVA_DEV_PREFIX	"/dev/vsvm-sva"	/* + accelerator index: /dev/vsvm-sva0 */
#define VSVM_SVA_WQ		1		/* the work queue SVA uses */
#define VSVM_SVA_VECTOR		3		/* its completion interrupt */
#define VSVM_SVA_RING		64		/* its ring, in descriptors */
#define VSVM_SVA_MAX_SUBMIT	32		/* descriptors per VSVM_SVA_IOC_SUBMIT */
#define VSVM_SVA_RECORD_ALIGN	32

/* Descriptor CONTROL (bits 7:0: opcode, VSVM_WQ_OPC_*) */
#define VSVM_DESC_CRAV		(1u << 8)	/* completion record address valid: required */
#define VSVM_DESC_RCI		(1u << 9)	/* raise the completion interrupt */
#define VSVM_DESC_PV		(1u << 10)	/* PASID valid: the driver sets it */
#define VSVM_DESC_PRIV		(1u << 11)	/* privileged: refused from userspace */

/* The device's 64-byte descriptor (devices/accel/README.md, "Descriptor"). */
struct vsvm_sva_desc {
	__u32 control;		/* opcode | VSVM_DESC_CRAV [| VSVM_DESC_RCI] */
	__u32 pasid;		/* ignored: the driver writes the file's PASID */
	__u64 completion;	/* record address (process VA), 32-byte aligned */
	__u64 src;		/* process VA; BATCH: the descriptor list */
	__u64 dst;		/* process VA; COMPARE: the second source */
	__u32 len;		/* bytes; BATCH: descriptor count */
	__u32 reserved0;
	__u64 pattern;		/* FILL */
	__u64 reserved1[2];
};

/* The device's 32-byte completion record; STATUS is written last. */
struct vsvm_sva_record {
	__u8 status;		/* VSVM_WQ_ST_*; 0 until the device wrote the record */
	__u8 fault_info;	/* VSVM_WQ_FI_* */
	__u16 reserved0;
	__u32 bytes_completed;
	__u64 fault_addr;
	__u64 result;		/* COMPARE: 0 equal, 1 different */
	__u64 reserved1;
};

struct vsvm_sva_info {
	__u32 pasid;		/* the PASID the process is bound to */
	__u32 wq;		/* VSVM_SVA_WQ */
	__u32 ring_size;	/* VSVM_SVA_RING */
	__u32 max_xfer;		/* MAX_XFER register */
	__u32 max_batch;	/* MAX_BATCH register */
	__u32 max_submit;	/* VSVM_SVA_MAX_SUBMIT */
	__u64 completion_irqs;	/* completion interrupts of the SVA queue since probe */
	__u64 submitted;	/* descriptors this file submitted */
};

/*
 * Submit count (1 ..= VSVM_SVA_MAX_SUBMIT) descriptors from descs, in order,
 * all or none. The driver checks each (-EINVAL: CRAV clear, a record address
 * 0 or not 32-byte aligned, PRIV set), sets PV and the PASID, and puts them on
 * the ring with one doorbell. A full ring is waited for (up to 5 s:
 * -EAGAIN, a signal: -EINTR). The device judges the rest (opcode, sizes,
 * reserved fields, addresses) and reports it in the record.
 */
struct vsvm_sva_submit {
	__u64 descs;		/* in: user address of count struct vsvm_sva_desc */
	__u32 count;		/* in */
	__u32 reserved;		/* in: 0 */
};

/*
 * Sleep until the record at `record` (32-byte aligned, in the process's
 * memory) has a STATUS, at most timeout_ms (0: look once). 0 with status set;
 * -ETIMEDOUT, -EINTR, or -EFAULT if the record cannot be read.
 */
struct vsvm_sva_wait {
	__u64 record;		/* in */
	__u32 timeout_ms;	/* in */
	__u8 status;		/* out: the record's STATUS */
	__u8 reserved[3];
};

#define VSVM_SVA_IOC_INFO	_IOR(VSVM_ACCEL_IOC_MAGIC, 0x10, struct vsvm_sva_info)
#define VSVM_SVA_IOC_SUBMIT	_IOW(VSVM_ACCEL_IOC_MAGIC, 0x11, struct vsvm_sva_submit)
#define VSVM_SVA_IOC_WAIT	_IOWR(VSVM_ACCEL_IOC_MAGIC, 0x12, struct vsvm_sva_wait)

#endif /* VSVM_ACCEL_UAPI_H */
