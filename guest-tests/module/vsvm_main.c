// SPDX-License-Identifier: GPL-2.0
/*
 * vsvm_accel - guest driver for the vsvm test accelerator (PCI 5653:a001).
 *
 * The guest has no IOMMU and its kernel has no VFIO no-IOMMU mode, so the
 * copy engine is driven from here: /dev/vsvm-accel takes copy jobs from
 * userspace, bounces the data through coherent DMA buffers (bus address ==
 * guest-physical address without an IOMMU) and runs them on the device,
 * either polling DMA_STATUS or waiting for MSI-X vector 0.
 *
 * It also drives work queue 0 (VSVM_ACCEL_IOC_WQ_RUN): a ring of 64-byte
 * descriptors, completion records and a data arena in coherent DMA memory, the
 * queue's completion interrupt on MSI-X vector 1 and the error interrupt
 * (SWERR and error records) on vector 2. Without an IOMMU the device has no
 * SVM, so descriptors carry guest-physical addresses and no PASID.
 *
 * Register map: devices/accel/README.md. ioctls: vsvm_accel_uapi.h.
 *
 * Processes bind to the device for SVA through /dev/vsvm-sva<N>: vsvm_sva.c.
 *
 * One source for every guest kernel scripts/setup fetches (Debian 6.12 and
 * 7.3): this file uses only interfaces both have unchanged (misc device,
 * managed PCI, pci_alloc_irq_vectors, coherent DMA); the one interface that
 * differs (the IOMMU's SVA feature API, gone in 6.16) is handled in
 * vsvm_sva.c.
 */
#include <linux/completion.h>
#include <linux/delay.h>
#include <linux/dma-mapping.h>
#include <linux/fs.h>
#include <linux/interrupt.h>
#include <linux/io-64-nonatomic-lo-hi.h>
#include <linux/iopoll.h>
#include <linux/ktime.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/pci.h>
#include <linux/slab.h>
#include <linux/sort.h>
#include <linux/spinlock.h>
#include <linux/uaccess.h>
#include <linux/wait.h>

#include "vsvm_accel_hw.h"
#include "vsvm_accel_uapi.h"
#include "vsvm_sva.h"

#define DRV_NAME	"vsvm_accel"

#define JOB_TIMEOUT_US	(5 * USEC_PER_SEC)

#define REC_SLOT	64	/* bytes per op's record: room to misalign one */
#define REC_MISALIGN	8	/* a record address 8 bytes off its 32-byte alignment */

/*
 * The control block (one coherent allocation): the ring, the BATCH lists of
 * one run, then one record slot per op and one for the run's fence.
 */
#define CTL_RING_OFF	0
#define CTL_BATCH_OFF	(CTL_RING_OFF + VSVM_ACCEL_WQ_RING * DESC_SIZE)
#define CTL_RECS_OFF	(CTL_BATCH_OFF + VSVM_ACCEL_WQ_MAX_OPS * DESC_SIZE)
#define FENCE_REC	VSVM_ACCEL_WQ_MAX_OPS
#define CTL_SIZE	(CTL_RECS_OFF + (VSVM_ACCEL_WQ_MAX_OPS + 1) * REC_SLOT)

#define WQ_RUN_TIMEOUT_MS	5000	/* a 1 MiB copy takes milliseconds */
#define WQ_ERR_IRQ_TIMEOUT_MS	1000
#define WQ_ERR_IRQ_QUIET_MS	10	/* no more error interrupts for this long: all came */
#define WQ_ERR_IRQ_SETTLE_MAX	20
#define WQ_STOP_TIMEOUT_US	(5 * USEC_PER_SEC)

/* A completion record; STATUS is written last. */
struct vsvm_record {
	u8 status;
	u8 fault_info;
	__le16 rsvd0;
	__le32 bytes_completed;
	__le64 fault_addr;
	__le64 result;
	__le64 rsvd1;
};
static_assert(sizeof(struct vsvm_record) == 32);

/* Work queue 0 and the error interrupt. */
struct vsvm_wq {
	bool ready;			/* the queue is enabled and ours */
	void *ctl;			/* ring, batch lists, records */
	dma_addr_t ctl_dma;
	void *arena;			/* every op's data */
	dma_addr_t arena_dma;
	u32 tail;			/* next ring slot to write */
	int irq_done, irq_err;		/* Linux irqs of the queue and error vectors, or 0 */
	atomic_t done_irqs, err_irqs;
	wait_queue_head_t waitq;	/* woken by both interrupts */
	/*
	 * Set by the queue's interrupt handler when it finds the run's fence
	 * done: the fence's interrupt came (or one that followed its record).
	 * fence_lock orders that look against the reset of the fence's record.
	 */
	bool fence_irq;
	spinlock_t fence_lock;
};

struct vsvm_accel {
	struct pci_dev *pdev;
	void __iomem *regs;
	int irq;			/* Linux irq of MSI-X vector 0 */
	atomic_t irq_count;
	struct completion job_done;
	/* Bounce buffers, grown on demand and kept: jobs are serialized. */
	void *src, *dst;
	dma_addr_t src_dma, dst_dma;
	size_t buf_size;
	u32 bench_sink;			/* keeps the benchmark's CPU work alive */
	struct vsvm_wq wq;
	struct vsvm_sva_dev *sva;	/* SVA for processes (vsvm_sva.c), or NULL */
};

/*
 * Only the first probed device gets /dev/vsvm-accel. vsvm_lock serializes
 * jobs (the engine runs one at a time) and keeps remove() from tearing the
 * device down under a running ioctl: the file ops reach the device only
 * through vsvm_dev, under the lock.
 */
static DEFINE_MUTEX(vsvm_lock);
static struct vsvm_accel *vsvm_dev;

static irqreturn_t vsvm_irq(int irq, void *data)
{
	struct vsvm_accel *a = data;

	/*
	 * MSI-X vectors are never shared, so this is our completion. No register
	 * read here: every BAR access is a round trip to the server, and the
	 * ioctl reads DMA_STATUS itself.
	 */
	atomic_inc(&a->irq_count);
	complete(&a->job_done);
	return IRQ_HANDLED;
}

static void vsvm_free_bufs(struct vsvm_accel *a)
{
	if (!a->buf_size)
		return;
	dma_free_coherent(&a->pdev->dev, a->buf_size, a->src, a->src_dma);
	dma_free_coherent(&a->pdev->dev, a->buf_size, a->dst, a->dst_dma);
	a->buf_size = 0;
}

static int vsvm_get_bufs(struct vsvm_accel *a, u32 len)
{
	/* len 0 still needs valid addresses: the device must see the job. */
	size_t size = PAGE_ALIGN(max_t(size_t, len, 1));

	if (size <= a->buf_size)
		return 0;
	vsvm_free_bufs(a);
	a->src = dma_alloc_coherent(&a->pdev->dev, size, &a->src_dma, GFP_KERNEL);
	a->dst = dma_alloc_coherent(&a->pdev->dev, size, &a->dst_dma, GFP_KERNEL);
	if (!a->src || !a->dst) {
		if (a->src)
			dma_free_coherent(&a->pdev->dev, size, a->src, a->src_dma);
		if (a->dst)
			dma_free_coherent(&a->pdev->dev, size, a->dst, a->dst_dma);
		return -ENOMEM;
	}
	a->buf_size = size;
	return 0;
}

static int vsvm_copy(struct vsvm_accel *a, struct vsvm_accel_copy __user *uarg)
{
	struct vsvm_accel_copy c;
	bool use_irq;
	u32 status, irqs_before;
	dma_addr_t dst;
	u64 start;
	int ret;

	if (copy_from_user(&c, uarg, sizeof(c)))
		return -EFAULT;
	if (c.len > VSVM_ACCEL_MAX_LEN || (c.flags & ~VSVM_ACCEL_COPY_FLAGS))
		return -EINVAL;
	use_irq = c.flags & VSVM_ACCEL_COPY_USE_IRQ;

	ret = vsvm_get_bufs(a, c.len);
	if (ret)
		return ret;
	if (copy_from_user(a->src, u64_to_user_ptr(c.user_src), c.len))
		return -EFAULT;
	/* So a job that moves nothing cannot pass for a good copy. */
	memset(a->dst, 0, c.len);

	/* Forget any completion left over from an earlier (timed-out) job. */
	reinit_completion(&a->job_done);
	irqs_before = atomic_read(&a->irq_count);

	writel(lower_32_bits(a->src_dma), a->regs + REG_DMA_SRC);
	writel(upper_32_bits(a->src_dma), a->regs + REG_DMA_SRC + 4);
	dst = (c.flags & VSVM_ACCEL_COPY_UNMAPPED_DST) ? VSVM_ACCEL_UNMAPPED_IOVA : a->dst_dma;
	writel(lower_32_bits(dst), a->regs + REG_DMA_DST);
	writel(upper_32_bits(dst), a->regs + REG_DMA_DST + 4);
	writel(c.len, a->regs + REG_DMA_LEN);
	start = ktime_get_ns();
	/* writel orders the buffer stores above before the doorbell. */
	writel(CMD_START | (use_irq ? CMD_IRQ : 0), a->regs + REG_DMA_CMD);

	if (use_irq) {
		if (!wait_for_completion_timeout(&a->job_done,
						 usecs_to_jiffies(JOB_TIMEOUT_US)))
			ret = -ETIMEDOUT;
		status = readl(a->regs + REG_DMA_STATUS);
	} else {
		/*
		 * START sets the state to busy before the write completes, so
		 * the first read already sees this job, never the previous one.
		 */
		ret = readl_poll_timeout(a->regs + REG_DMA_STATUS, status,
					 VSVM_ACCEL_ST_STATE(status) != VSVM_ACCEL_ST_BUSY,
					 20, JOB_TIMEOUT_US);
	}
	c.ns = ktime_get_ns() - start;
	if (ret) {
		dev_err(&a->pdev->dev, "job timed out (%s, len %u, status %#x)\n",
			use_irq ? "irq" : "poll", c.len, status);
		return ret;
	}
	c.status = status;
	c.irq_seen = atomic_read(&a->irq_count) - irqs_before;

	if (copy_to_user(u64_to_user_ptr(c.user_dst), a->dst, c.len))
		return -EFAULT;
	if (copy_to_user(uarg, &c, sizeof(c)))
		return -EFAULT;
	return 0;
}

static int cmp_u64(const void *x, const void *y)
{
	u64 a = *(const u64 *)x, b = *(const u64 *)y;

	return a < b ? -1 : a > b;
}

/* Busy CPU work the compiler cannot drop: stands for a driver's own computing. */
static noinline u32 vsvm_work(u32 units)
{
	u32 x = units, i;

	for (i = 0; i < units * 64; i++)
		x = x * 1103515245u + 12345u;
	return x;
}

/* One timed iteration of @op; returns -ETIMEDOUT if an interrupt never came. */
static int vsvm_bench_once(struct vsvm_accel *a, u32 op, u32 work, u32 i)
{
	switch (op) {
	case VSVM_ACCEL_BENCH_READ:
		readl(a->regs + REG_SCRATCH);
		return 0;
	case VSVM_ACCEL_BENCH_WRITE:
		writel(i, a->regs + REG_SCRATCH);
		return 0;
	case VSVM_ACCEL_BENCH_IRQ:
		reinit_completion(&a->job_done);
		writel(0, a->regs + REG_IRQ_RAISE);
		return wait_for_completion_timeout(&a->job_done, HZ) ? 0 : -ETIMEDOUT;
	case VSVM_ACCEL_BENCH_MIXED:
		readl(a->regs + REG_SCRATCH);
		WRITE_ONCE(a->bench_sink, vsvm_work(work));
		return 0;
	}
	return -EINVAL;
}

static long vsvm_bench(struct vsvm_accel *a, struct vsvm_accel_bench __user *ub)
{
	struct vsvm_accel_bench b;
	u64 *ns, t0, start;
	int ret = 0;
	u32 i;

	if (copy_from_user(&b, ub, sizeof(b)))
		return -EFAULT;
	if (!b.iters || b.iters > VSVM_ACCEL_BENCH_MAX_ITERS || b.op > VSVM_ACCEL_BENCH_MIXED)
		return -EINVAL;
	ns = kvmalloc_array(b.iters, sizeof(*ns), GFP_KERNEL);
	if (!ns)
		return -ENOMEM;
	start = ktime_get_ns();
	for (i = 0; i < b.iters && !ret; i++) {
		t0 = ktime_get_ns();
		ret = vsvm_bench_once(a, b.op, b.work, i);
		ns[i] = ktime_get_ns() - t0;
	}
	/* Posted writes are only done once a read has pushed them through. */
	readl(a->regs + REG_SCRATCH);
	b.total_ns = ktime_get_ns() - start;
	if (!ret) {
		sort(ns, b.iters, sizeof(*ns), cmp_u64, NULL);
		b.min_ns = ns[0];
		b.median_ns = ns[b.iters / 2];
		b.p90_ns = ns[b.iters * 9 / 10];
		ret = copy_to_user(ub, &b, sizeof(b)) ? -EFAULT : 0;
	}
	kvfree(ns);
	return ret;
}

/* ---------------------------------------------------------------- work queue 0 */

static bool vsvm_wq_fence_done(struct vsvm_wq *wq);

static irqreturn_t vsvm_wq_irq(int irq, void *data)
{
	struct vsvm_wq *wq = &((struct vsvm_accel *)data)->wq;

	/*
	 * The device writes a record before it raises the interrupt, so an
	 * interrupt that finds the fence done is the fence's (or a later one):
	 * the waiter wants that, not just the record. No register read here.
	 */
	atomic_inc(&wq->done_irqs);
	spin_lock(&wq->fence_lock);
	if (vsvm_wq_fence_done(wq))
		WRITE_ONCE(wq->fence_irq, true);
	spin_unlock(&wq->fence_lock);
	wake_up(&wq->waitq);
	return IRQ_HANDLED;
}

static irqreturn_t vsvm_err_irq(int irq, void *data)
{
	struct vsvm_accel *a = data;

	atomic_inc(&a->wq.err_irqs);
	wake_up(&a->wq.waitq);
	return IRQ_HANDLED;
}

static void __iomem *vsvm_wq_reg(struct vsvm_accel *a, u32 reg)
{
	return a->regs + REG_WQ(0) + reg;
}

static struct vsvm_desc *vsvm_wq_ring(struct vsvm_wq *wq, u32 slot)
{
	return wq->ctl + CTL_RING_OFF + slot * DESC_SIZE;
}

static void *vsvm_wq_rec(struct vsvm_wq *wq, u32 i, bool misaligned)
{
	return wq->ctl + CTL_RECS_OFF + i * REC_SLOT + (misaligned ? REC_MISALIGN : 0);
}

static u64 vsvm_wq_rec_dma(struct vsvm_wq *wq, u32 i, bool misaligned)
{
	return wq->ctl_dma + CTL_RECS_OFF + i * REC_SLOT + (misaligned ? REC_MISALIGN : 0);
}

/* Program the ring and enable the queue: HEAD = TAIL = 0 afterwards. */
static int vsvm_wq_enable(struct vsvm_accel *a)
{
	struct vsvm_wq *wq = &a->wq;
	dma_addr_t ring = wq->ctl_dma + CTL_RING_OFF;
	u32 status;

	/* The 64-bit registers take one 8-byte access. */
	writeq(ring, vsvm_wq_reg(a, WQ_BASE));
	writel(VSVM_ACCEL_WQ_RING, vsvm_wq_reg(a, WQ_SIZE));
	writel(WQ_CTRL_ENABLE | WQ_CTRL_VECTOR(VSVM_ACCEL_WQ_VECTOR), vsvm_wq_reg(a, WQ_CTRL));
	/* The read also pushes the posted writes above through. */
	status = readl(vsvm_wq_reg(a, WQ_STATUS));
	if (!(status & WQ_STATUS_ENABLED)) {
		dev_err(&a->pdev->dev, "work queue 0 refused its ring (status %#x, error %#x)\n",
			status, WQ_STATUS_ERROR(status));
		return -EIO;
	}
	wq->tail = 0;
	return 0;
}

/* Disable the queue and wait until no descriptor is in flight. */
static int vsvm_wq_disable(struct vsvm_accel *a)
{
	u32 status;

	writel(0, vsvm_wq_reg(a, WQ_CTRL));
	return readl_poll_timeout(vsvm_wq_reg(a, WQ_STATUS), status,
				  !(status & WQ_STATUS_BUSY), 100, WQ_STOP_TIMEOUT_US);
}

static void vsvm_wq_free(struct vsvm_accel *a)
{
	struct vsvm_wq *wq = &a->wq;
	struct device *dev = &a->pdev->dev;

	if (wq->irq_err)
		free_irq(wq->irq_err, a);
	if (wq->irq_done)
		free_irq(wq->irq_done, a);
	wq->irq_err = wq->irq_done = 0;
	if (wq->arena)
		dma_free_coherent(dev, VSVM_ACCEL_WQ_ARENA, wq->arena, wq->arena_dma);
	if (wq->ctl)
		dma_free_coherent(dev, CTL_SIZE, wq->ctl, wq->ctl_dma);
	wq->arena = wq->ctl = NULL;
	wq->ready = false;
}

/*
 * Work queue 0 at probe. Failing here only costs the work queue ioctl: the
 * plain copy engine does not depend on it.
 */
static int vsvm_wq_setup(struct vsvm_accel *a, u32 cap, int nvec)
{
	struct vsvm_wq *wq = &a->wq;
	struct pci_dev *pdev = a->pdev;
	struct device *dev = &pdev->dev;
	u32 max_size;
	int ret;

	init_waitqueue_head(&wq->waitq);
	spin_lock_init(&wq->fence_lock);
	atomic_set(&wq->done_irqs, 0);
	atomic_set(&wq->err_irqs, 0);
	if (!(cap & VSVM_ACCEL_CAP_WQ) || !VSVM_ACCEL_CAP_WQ_COUNT(cap))
		return -ENODEV;
	if (nvec <= VSVM_ACCEL_ERR_VECTOR)
		return -ENOSPC;
	max_size = readl(a->regs + REG_MAX_WQ_SIZE);
	if (max_size < VSVM_ACCEL_WQ_RING)
		return -EINVAL;

	wq->ctl = dma_alloc_coherent(dev, CTL_SIZE, &wq->ctl_dma, GFP_KERNEL);
	wq->arena = dma_alloc_coherent(dev, VSVM_ACCEL_WQ_ARENA, &wq->arena_dma, GFP_KERNEL);
	if (!wq->ctl || !wq->arena) {
		ret = -ENOMEM;
		goto err;
	}
	ret = request_irq(pci_irq_vector(pdev, VSVM_ACCEL_WQ_VECTOR), vsvm_wq_irq, 0,
			  DRV_NAME "-wq0", a);
	if (ret)
		goto err;
	wq->irq_done = pci_irq_vector(pdev, VSVM_ACCEL_WQ_VECTOR);
	ret = request_irq(pci_irq_vector(pdev, VSVM_ACCEL_ERR_VECTOR), vsvm_err_irq, 0,
			  DRV_NAME "-err", a);
	if (ret)
		goto err;
	wq->irq_err = pci_irq_vector(pdev, VSVM_ACCEL_ERR_VECTOR);

	/*
	 * A queue left enabled (by an earlier driver) ignores BASE and SIZE:
	 * stop it before programming it.
	 */
	ret = vsvm_wq_disable(a);
	if (ret)
		goto err;
	/* Forget errors from before us, then take the error interrupt. */
	writel(lower_32_bits(VSVM_WQ_SWERR_VALID | VSVM_WQ_SWERR_OVERFLOW),
	       a->regs + REG_SWERR);
	writel(ERRCTL_IRQ_EN | ERRCTL_VECTOR(VSVM_ACCEL_ERR_VECTOR), a->regs + REG_ERRCTL);
	ret = vsvm_wq_enable(a);
	if (ret)
		goto err_errctl;
	wq->ready = true;
	return 0;

err_errctl:
	writel(0, a->regs + REG_ERRCTL);
err:
	vsvm_wq_free(a);
	return ret;
}

/* Stop the device touching the queue's memory (before it is freed). */
static void vsvm_wq_stop(struct vsvm_accel *a)
{
	if (!a->wq.ctl)
		return;
	if (vsvm_wq_disable(a))
		dev_warn(&a->pdev->dev, "work queue 0 still busy after disable\n");
	writel(0, a->regs + REG_ERRCTL);
	a->wq.ready = false;
}

/* Data ops must stay in the arena; @len 0 is for the device to refuse. */
static bool vsvm_wq_in_arena(u32 off, u32 len)
{
	return (u64)off + len <= VSVM_ACCEL_WQ_ARENA;
}

static int vsvm_wq_check_op(const struct vsvm_accel_wq_op *op, bool in_batch)
{
	if (op->flags & ~VSVM_WQ_OP_FLAGS)
		return -EINVAL;
	if (op->src_off >= VSVM_ACCEL_WQ_ARENA || op->dst_off >= VSVM_ACCEL_WQ_ARENA)
		return -EINVAL;
	switch (op->opcode) {
	case VSVM_WQ_OPC_MEMMOVE:
	case VSVM_WQ_OPC_COMPARE:
		if (!vsvm_wq_in_arena(op->src_off, op->len))
			return -EINVAL;
		fallthrough;
	case VSVM_WQ_OPC_FILL:
		if (!vsvm_wq_in_arena(op->dst_off, op->len))
			return -EINVAL;
		break;
	case VSVM_WQ_OPC_BATCH:
		/* Inside a batch a BATCH is a literal descriptor (NESTED_BATCH). */
		if (in_batch && op->batch_ops)
			return -EINVAL;
		break;
	}
	return 0;
}

/* The descriptor of ops[@i]; its record is record slot @i. */
static void vsvm_wq_build(struct vsvm_wq *wq, struct vsvm_desc *d,
			  struct vsvm_accel_wq_op *op, u32 i)
{
	bool misaligned = op->flags & VSVM_WQ_OP_MISALIGN_RECORD;
	u32 control = op->opcode;
	u64 completion = 0;

	if (!(op->flags & VSVM_WQ_OP_NO_RECORD)) {
		control |= DESC_CRAV;
		completion = vsvm_wq_rec_dma(wq, i, misaligned);
		memset(vsvm_wq_rec(wq, i, false), 0, REC_SLOT);
	}
	if (!(op->flags & VSVM_WQ_OP_NO_IRQ))
		control |= DESC_RCI;
	if (op->flags & VSVM_WQ_OP_PASID)
		control |= DESC_PV;
	if (op->flags & VSVM_WQ_OP_PRIV)
		control |= DESC_PRIV;
	if (op->flags & VSVM_WQ_OP_RESERVED_BIT)
		control |= DESC_RESERVED;

	memset(d, 0, sizeof(*d));
	d->control = cpu_to_le32(control);
	d->pasid = cpu_to_le32(op->flags & VSVM_WQ_OP_PASID ? op->pasid : 0);
	d->completion = cpu_to_le64(completion);
	d->src = cpu_to_le64(wq->arena_dma + op->src_off);
	d->dst = cpu_to_le64(wq->arena_dma + op->dst_off);
	d->len = cpu_to_le32(op->len);
	d->pattern = cpu_to_le64(op->pattern);
	op->completion_addr = completion;
	op->batch_index = VSVM_WQ_NOT_IN_BATCH;
}

static void vsvm_wq_doorbell(struct vsvm_accel *a)
{
	/* writel orders the descriptor and record stores before the doorbell. */
	writel(a->wq.tail, vsvm_wq_reg(a, WQ_TAIL));
}

/* Put one descriptor on the ring (the caller made sure there is room). */
static u32 vsvm_wq_push(struct vsvm_accel *a, const struct vsvm_desc *d, bool doorbell)
{
	struct vsvm_wq *wq = &a->wq;
	u32 slot = wq->tail;

	*vsvm_wq_ring(wq, slot) = *d;
	wq->tail = (slot + 1) % VSVM_ACCEL_WQ_RING;
	if (doorbell)
		vsvm_wq_doorbell(a);
	return slot;
}

/* Check a run's ops before any of them reaches the device. */
static int vsvm_wq_validate(const struct vsvm_accel_wq_op *ops, u32 nops)
{
	u32 i = 0, j, n;
	int ret;

	while (i < nops) {
		ret = vsvm_wq_check_op(&ops[i], false);
		if (ret)
			return ret;
		n = ops[i].opcode == VSVM_WQ_OPC_BATCH ? ops[i].batch_ops : 0;
		if (n > nops - i - 1)
			return -EINVAL;
		for (j = 1; j <= n; j++) {
			ret = vsvm_wq_check_op(&ops[i + j], true);
			if (ret)
				return ret;
		}
		i += 1 + n;
	}
	return 0;
}

/*
 * Write the run's descriptors: a BATCH op takes the ops after it as its list.
 * One ring slot per top-level op, then a NOP fence with a record and a
 * completion interrupt, and the doorbell (or one per descriptor). The ring is
 * empty when a run starts (the previous one waited for its fence) and a run
 * needs at most MAX_OPS + 1 < RING slots.
 */
static void vsvm_wq_submit(struct vsvm_accel *a, struct vsvm_accel_wq_op *ops, u32 nops,
			   bool each)
{
	struct vsvm_wq *wq = &a->wq;
	struct vsvm_accel_wq_op fence = { .opcode = VSVM_WQ_OPC_NOP };
	struct vsvm_desc d, *list;
	u32 i = 0, j, n, slot, listed = 0;

	/*
	 * Before any doorbell: the fence's record reads NONE, so a late interrupt
	 * of the previous run cannot pass for this run's fence.
	 */
	spin_lock_irq(&wq->fence_lock);
	memset(vsvm_wq_rec(wq, FENCE_REC, false), 0, REC_SLOT);
	wq->fence_irq = false;
	spin_unlock_irq(&wq->fence_lock);

	while (i < nops) {
		vsvm_wq_build(wq, &d, &ops[i], i);
		n = 0;
		if (ops[i].opcode == VSVM_WQ_OPC_BATCH) {
			n = ops[i].batch_ops;
			d.src = cpu_to_le64(wq->ctl_dma + CTL_BATCH_OFF + listed * DESC_SIZE);
		}
		for (j = 1; j <= n; j++) {
			list = wq->ctl + CTL_BATCH_OFF + (listed + j - 1) * DESC_SIZE;
			vsvm_wq_build(wq, list, &ops[i + j], i + j);
			ops[i + j].batch_index = j - 1;
		}
		listed += n;
		slot = vsvm_wq_push(a, &d, each);
		for (j = 0; j <= n; j++)
			ops[i + j].ring_slot = slot;
		i += 1 + n;
	}
	vsvm_wq_build(wq, &d, &fence, FENCE_REC);
	vsvm_wq_push(a, &d, true);
}

static bool vsvm_wq_fence_done(struct vsvm_wq *wq)
{
	return READ_ONCE(*(u8 *)vsvm_wq_rec(wq, FENCE_REC, false)) != VSVM_WQ_ST_NONE;
}

/* Copy each op's record into it; true if one reports an error status. */
static bool vsvm_wq_collect(struct vsvm_wq *wq, struct vsvm_accel_wq_op *ops, u32 nops)
{
	struct vsvm_record rec;
	bool error = false;
	u32 i;

	/* The fence's status was seen: every earlier record is complete. */
	dma_rmb();
	for (i = 0; i < nops; i++) {
		memset(&rec, 0, sizeof(rec));
		if (!(ops[i].flags & VSVM_WQ_OP_NO_RECORD))
			memcpy(&rec, vsvm_wq_rec(wq, i, ops[i].flags & VSVM_WQ_OP_MISALIGN_RECORD),
			       sizeof(rec));
		ops[i].status = rec.status;
		ops[i].fault_info = rec.fault_info;
		ops[i].bytes_completed = le32_to_cpu(rec.bytes_completed);
		ops[i].fault_addr = le64_to_cpu(rec.fault_addr);
		ops[i].result = le64_to_cpu(rec.result);
		error |= rec.status >= VSVM_WQ_ST_FIRST_ERROR;
	}
	return error;
}

/* Disable the queue, wait for it to stop, enable it again: the ring starts over at slot 0. */
static int vsvm_wq_restart(struct vsvm_accel *a)
{
	if (vsvm_wq_disable(a) || vsvm_wq_enable(a)) {
		dev_err(&a->pdev->dev, "work queue 0 could not be restarted: disabled\n");
		a->wq.ready = false;
		return -EIO;
	}
	return 0;
}

/* The fence never interrupted: say what the device shows, then start the queue afresh. */
static void vsvm_wq_timed_out(struct vsvm_accel *a)
{
	struct vsvm_wq *wq = &a->wq;

	dev_err(&a->pdev->dev,
		"work queue 0: no completion interrupt after the fence in %u ms (fence status %#x, HEAD %u TAIL %u ours %u, STATUS %#x, DONE %u, irqs %d/%d)\n",
		WQ_RUN_TIMEOUT_MS, READ_ONCE(*(u8 *)vsvm_wq_rec(wq, FENCE_REC, false)),
		readl(vsvm_wq_reg(a, WQ_HEAD)), readl(vsvm_wq_reg(a, WQ_TAIL)), wq->tail,
		readl(vsvm_wq_reg(a, WQ_STATUS)), readl(vsvm_wq_reg(a, WQ_DONE)),
		atomic_read(&wq->done_irqs), atomic_read(&wq->err_irqs));
	vsvm_wq_restart(a);
}

/*
 * Wait for the error vector (it may trail the fence's completion interrupt),
 * then until no more come: every error raises it, and one that came late
 * would be counted in the next run.
 */
static void vsvm_wq_wait_err_irq(struct vsvm_wq *wq, int before)
{
	int seen, i;

	if (!wait_event_timeout(wq->waitq, atomic_read(&wq->err_irqs) != before,
				msecs_to_jiffies(WQ_ERR_IRQ_TIMEOUT_MS)))
		return;
	for (i = 0; i < WQ_ERR_IRQ_SETTLE_MAX; i++) {
		seen = atomic_read(&wq->err_irqs);
		msleep(WQ_ERR_IRQ_QUIET_MS);
		if (atomic_read(&wq->err_irqs) == seen)
			break;
	}
}

static long vsvm_wq_run(struct vsvm_accel *a, struct vsvm_accel_wq_run __user *ur)
{
	struct vsvm_wq *wq = &a->wq;
	struct vsvm_accel_wq_op *ops;
	struct vsvm_accel_wq_run r;
	int done_before, err_before;
	u32 wq_done;
	bool error;
	u64 start;
	long ret;

	if (!wq->ready)
		return -ENODEV;
	if (copy_from_user(&r, ur, sizeof(r)))
		return -EFAULT;
	if (!r.nops || r.nops > VSVM_ACCEL_WQ_MAX_OPS || r.data_len > VSVM_ACCEL_WQ_ARENA ||
	    (r.flags & ~VSVM_WQ_RUN_FLAGS))
		return -EINVAL;
	ops = memdup_array_user(u64_to_user_ptr(r.user_ops), r.nops, sizeof(*ops));
	if (IS_ERR(ops))
		return PTR_ERR(ops);
	ret = vsvm_wq_validate(ops, r.nops);
	if (ret)
		goto out;
	if (copy_from_user(wq->arena, u64_to_user_ptr(r.user_data), r.data_len)) {
		ret = -EFAULT;
		goto out;
	}

	if (r.flags & VSVM_WQ_RUN_RESTART) {
		ret = vsvm_wq_restart(a);
		if (ret)
			goto out;
	}
	done_before = atomic_read(&wq->done_irqs);
	err_before = atomic_read(&wq->err_irqs);
	wq_done = readl(vsvm_wq_reg(a, WQ_DONE));
	if (r.flags & VSVM_WQ_RUN_BAD_DOORBELL)
		writel(VSVM_ACCEL_WQ_RING, vsvm_wq_reg(a, WQ_TAIL));
	start = ktime_get_ns();
	vsvm_wq_submit(a, ops, r.nops, r.flags & VSVM_WQ_RUN_DOORBELL_EACH);
	if (!wait_event_timeout(wq->waitq, READ_ONCE(wq->fence_irq),
				msecs_to_jiffies(WQ_RUN_TIMEOUT_MS))) {
		vsvm_wq_timed_out(a);
		ret = -ETIMEDOUT;
		goto out;
	}
	r.ns = ktime_get_ns() - start;
	error = vsvm_wq_collect(wq, ops, r.nops);

	r.swerr = readq(a->regs + REG_SWERR);
	r.swerr_addr = readq(a->regs + REG_SWERR_ADDR);
	if ((r.swerr & VSVM_WQ_SWERR_VALID) || error)
		vsvm_wq_wait_err_irq(wq, err_before);
	/* Clear what we saw, no more: a later error keeps OVERFLOW set. */
	if (r.swerr & (VSVM_WQ_SWERR_VALID | VSVM_WQ_SWERR_OVERFLOW))
		writel(lower_32_bits(r.swerr & (VSVM_WQ_SWERR_VALID |
						VSVM_WQ_SWERR_OVERFLOW)),
		       a->regs + REG_SWERR);
	r.completion_irqs = atomic_read(&wq->done_irqs) - done_before;
	r.error_irqs = atomic_read(&wq->err_irqs) - err_before;
	r.descs_done = readl(vsvm_wq_reg(a, WQ_DONE)) - wq_done;
	r.arena_addr = wq->arena_dma;

	if (copy_to_user(u64_to_user_ptr(r.user_data), wq->arena, r.data_len) ||
	    copy_to_user(u64_to_user_ptr(r.user_ops), ops, r.nops * sizeof(*ops)) ||
	    copy_to_user(ur, &r, sizeof(r)))
		ret = -EFAULT;
out:
	kfree(ops);
	return ret;
}

static long vsvm_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct vsvm_accel_info info = {};
	struct vsvm_accel *a;
	long ret;

	mutex_lock(&vsvm_lock);
	a = vsvm_dev;
	if (!a) {
		ret = -ENODEV;	/* removed while the file was open */
		goto out;
	}
	switch (cmd) {
	case VSVM_ACCEL_IOC_INFO:
		info.id = readl(a->regs + REG_ID);
		info.version = readl(a->regs + REG_VERSION);
		info.cap = readl(a->regs + REG_CAP);
		info.irq_count = atomic_read(&a->irq_count);
		info.jobs_done = readl(a->regs + REG_DMA_DONE);
		ret = copy_to_user((void __user *)arg, &info, sizeof(info)) ? -EFAULT : 0;
		break;
	case VSVM_ACCEL_IOC_COPY:
		ret = vsvm_copy(a, (struct vsvm_accel_copy __user *)arg);
		break;
	case VSVM_ACCEL_IOC_BENCH:
		ret = vsvm_bench(a, (struct vsvm_accel_bench __user *)arg);
		break;
	case VSVM_ACCEL_IOC_WQ_RUN:
		ret = vsvm_wq_run(a, (struct vsvm_accel_wq_run __user *)arg);
		break;
	default:
		ret = -ENOTTY;
	}
out:
	mutex_unlock(&vsvm_lock);
	return ret;
}

static const struct file_operations vsvm_fops = {
	.owner		= THIS_MODULE,
	.unlocked_ioctl	= vsvm_ioctl,
	.compat_ioctl	= compat_ptr_ioctl,	/* same struct layout on 32-bit */
};

static struct miscdevice vsvm_misc = {
	.name	= "vsvm-accel",
	.fops	= &vsvm_fops,
	.mode	= 0600,
};

static int vsvm_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	struct device *dev = &pdev->dev;
	struct vsvm_accel *a;
	u32 devid, version, cap;
	int ret, nvec;

	a = devm_kzalloc(dev, sizeof(*a), GFP_KERNEL);
	if (!a)
		return -ENOMEM;
	a->pdev = pdev;
	atomic_set(&a->irq_count, 0);
	init_completion(&a->job_done);
	pci_set_drvdata(pdev, a);

	ret = pcim_enable_device(pdev);
	if (ret)
		return ret;
	a->regs = pcim_iomap_region(pdev, 0, DRV_NAME);
	if (IS_ERR(a->regs))
		return dev_err_probe(dev, PTR_ERR(a->regs), "cannot map BAR0\n");

	devid = readl(a->regs + REG_ID);
	version = readl(a->regs + REG_VERSION);
	cap = readl(a->regs + REG_CAP);
	if (devid != ACCEL_ID || (version >> 16) != ACCEL_MAJOR || !(cap & CAP_PLAIN_DMA)) {
		dev_err(dev, "not a vsvm accelerator v%u: ID %#x VERSION %#x CAP %#x\n",
			ACCEL_MAJOR, devid, version, cap);
		return -ENODEV;
	}

	ret = dma_set_mask_and_coherent(dev, DMA_BIT_MASK(64));
	if (ret)
		return dev_err_probe(dev, ret, "no usable DMA mask\n");
	/* Without bus mastering every job ends in SRC_FAULT. */
	pci_set_master(pdev);

	nvec = pci_alloc_irq_vectors(pdev, 1, 4, PCI_IRQ_MSIX);
	if (nvec < 0)
		return dev_err_probe(dev, nvec, "cannot allocate MSI-X vectors\n");
	a->irq = pci_irq_vector(pdev, 0);
	ret = request_irq(a->irq, vsvm_irq, 0, DRV_NAME, a);
	if (ret) {
		dev_err(dev, "cannot request irq %d: %d\n", a->irq, ret);
		goto err_vectors;
	}

	ret = vsvm_wq_setup(a, cap, nvec);
	if (ret)
		dev_warn(dev, "work queues unavailable (%d); the plain engine works\n", ret);
	else
		dev_info(dev, "work queue 0: %u descriptors, completion vector %u, error vector %u\n",
			 VSVM_ACCEL_WQ_RING, VSVM_ACCEL_WQ_VECTOR, VSVM_ACCEL_ERR_VECTOR);

	a->sva = vsvm_sva_probe(pdev, a->regs, cap, nvec);

	mutex_lock(&vsvm_lock);
	if (vsvm_dev) {
		ret = -EBUSY;
	} else {
		/* misc_deregister() leaves the old minor behind: ask afresh. */
		vsvm_misc.minor = MISC_DYNAMIC_MINOR;
		vsvm_misc.parent = dev;
		ret = misc_register(&vsvm_misc);
		if (!ret)
			vsvm_dev = a;
	}
	mutex_unlock(&vsvm_lock);
	if (ret) {
		dev_err(dev, "cannot register /dev/%s: %d%s\n", vsvm_misc.name, ret,
			ret == -EBUSY ? " (another device already has it)" : "");
		goto err_wq;
	}

	dev_info(dev, "vsvm accelerator v%u.%u, cap %#x, %d MSI-X vector(s), /dev/%s\n",
		 version >> 16, version & 0xffff, cap, nvec, vsvm_misc.name);
	return 0;

err_wq:
	vsvm_sva_remove(a->sva);
	vsvm_wq_stop(a);
	vsvm_wq_free(a);
	free_irq(a->irq, a);
err_vectors:
	pci_free_irq_vectors(pdev);
	return ret;
}

static void vsvm_remove(struct pci_dev *pdev)
{
	struct vsvm_accel *a = pci_get_drvdata(pdev);

	misc_deregister(&vsvm_misc);
	/* Waits for a running job; later ioctls on open files get -ENODEV. */
	mutex_lock(&vsvm_lock);
	vsvm_dev = NULL;
	mutex_unlock(&vsvm_lock);

	/* Bound processes are drained and unbound while the device still masters the bus. */
	vsvm_sva_remove(a->sva);
	/* A timed-out job may still be running: stop DMA before freeing its buffers. */
	vsvm_wq_stop(a);
	pci_clear_master(pdev);
	vsvm_wq_free(a);
	free_irq(a->irq, a);
	pci_free_irq_vectors(pdev);
	vsvm_free_bufs(a);
	/* BAR0 mapping, region and enable are released by pcim/devm. */
}

static const struct pci_device_id vsvm_ids[] = {
	{ PCI_DEVICE(0x5653, 0xa001) },
	{ }
};
MODULE_DEVICE_TABLE(pci, vsvm_ids);

static struct pci_driver vsvm_driver = {
	.name		= DRV_NAME,
	.id_table	= vsvm_ids,
	.probe		= vsvm_probe,
	.remove		= vsvm_remove,
};
module_pci_driver(vsvm_driver);

MODULE_DESCRIPTION("vsvm test accelerator: copy engine and work queue driver");
MODULE_LICENSE("GPL");
