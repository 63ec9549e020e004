// SPDX-License-Identifier: GPL-2.0
/*
 * vsvm_sva.c - Shared Virtual Memory for guest processes on the vsvm
 * accelerator (devices/accel/README.md, "SVA from guest userspace").
 *
 * /dev/vsvm-sva<N> per accelerator behind an IOMMU: open() binds the calling
 * process's address space to the device (iommu_sva_bind_device) and enables
 * the PASID it got on the device (PASID_SEL / PASID_CTL); the process submits
 * descriptors carrying its own virtual addresses, which the driver tags with
 * that PASID and puts on the SVA work queue's ring (block-on-fault: a page the
 * device finds missing becomes a PRI page request the kernel's IOMMU driver
 * answers); records land in the process's memory; the last close() drains the
 * PASID on the device and unbinds. uapi: vsvm_accel_uapi.h.
 *
 * Kernel differences (the only version conditional of the driver):
 * up to 6.15 a driver enables the IOMMU's per-device features, I/O page
 * faults first, then SVA (iommu_dev_enable_feature); from 6.16 that API is
 * gone and the IOMMU driver enables PRI and I/O page faults itself when the
 * SVA domain is attached to the PASID.
 */
#include <linux/atomic.h>
#include <linux/idr.h>
#include <linux/interrupt.h>
#include <linux/io-64-nonatomic-lo-hi.h>
#include <linux/iommu.h>
#include <linux/iopoll.h>
#include <linux/jiffies.h>
#include <linux/kref.h>
#include <linux/list.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/sched/mm.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/uaccess.h>
#include <linux/version.h>
#include <linux/wait.h>

#include "vsvm_accel_hw.h"
#include "vsvm_accel_uapi.h"
#include "vsvm_sva.h"

#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 16, 0)
#define VSVM_SVA_FEATURE_API 1
#endif

#define SVA_DRAIN_TIMEOUT_S	5
#define SVA_DRAIN_TIMEOUT_US	(SVA_DRAIN_TIMEOUT_S * USEC_PER_SEC)
#define SVA_STOP_TIMEOUT_US	(5 * USEC_PER_SEC)
#define SVA_ROOM_TIMEOUT_MS	5000
/* Records of descriptors without RCI raise nothing: waiters look again this often. */
#define SVA_WAIT_SLICE_MS	10
#define SVA_POLL_US		100

static_assert(VSVM_DESC_CRAV == DESC_CRAV && VSVM_DESC_RCI == DESC_RCI &&
	      VSVM_DESC_PV == DESC_PV && VSVM_DESC_PRIV == DESC_PRIV);
static_assert(sizeof(struct vsvm_sva_desc) == DESC_SIZE);
static_assert(sizeof(struct vsvm_sva_record) == VSVM_SVA_RECORD_ALIGN);

static DEFINE_IDA(vsvm_sva_ida);

struct vsvm_sva_dev {
	struct kref ref;		/* probe's, and one per open file */
	struct pci_dev *pdev;
	void __iomem *regs;
	int index;			/* N of /dev/vsvm-sva<N> */
	char name[24];
	struct miscdevice misc;
	bool features;			/* IOPF and SVA features enabled (up to 6.15) */
	int irq;
	atomic64_t irqs;		/* completion interrupts of the SVA queue */
	wait_queue_head_t waitq;	/* woken by them */
	struct vsvm_desc *ring;
	dma_addr_t ring_dma;
	u32 max_xfer, max_batch;
	/* Serializes the ring, PASID_SEL/PASID_CTL, ctxs and gone. */
	struct mutex lock;
	u32 tail;			/* next ring slot to write */
	u32 head;			/* WQ_HEAD as last read */
	bool gone;			/* removed: no bind, no submission */
	struct list_head ctxs;		/* bound files */
};

/* An open file: one process bound to the device. */
struct vsvm_sva_ctx {
	struct vsvm_sva_dev *d;
	struct list_head node;		/* in d->ctxs while bound */
	struct iommu_sva *handle;	/* NULL once unbound */
	struct mm_struct *mm;		/* the bound address space (mmgrab'd) */
	u32 pasid;
	u64 submitted;
};

static void __iomem *sva_wq_reg(struct vsvm_sva_dev *d, u32 reg)
{
	return d->regs + REG_WQ(VSVM_SVA_WQ) + reg;
}

static irqreturn_t sva_irq(int irq, void *data)
{
	struct vsvm_sva_dev *d = data;

	/* The record is written before the interrupt: waiters look at records. */
	atomic64_inc(&d->irqs);
	wake_up_all(&d->waitq);
	return IRQ_HANDLED;
}

/* Disable the queue and wait until no descriptor is in flight. */
static int sva_wq_stop(struct vsvm_sva_dev *d)
{
	u32 status;

	writel(0, sva_wq_reg(d, WQ_CTRL));
	return readl_poll_timeout(sva_wq_reg(d, WQ_STATUS), status, !(status & WQ_STATUS_BUSY),
				  SVA_POLL_US, SVA_STOP_TIMEOUT_US);
}

/* Program the ring and enable the queue in block-on-fault mode: HEAD = TAIL = 0. */
static int sva_wq_start(struct vsvm_sva_dev *d)
{
	u32 status;

	writeq(d->ring_dma, sva_wq_reg(d, WQ_BASE));
	writel(VSVM_SVA_RING, sva_wq_reg(d, WQ_SIZE));
	writel(WQ_CTRL_ENABLE | WQ_CTRL_BOF | WQ_CTRL_VECTOR(VSVM_SVA_VECTOR),
	       sva_wq_reg(d, WQ_CTRL));
	status = readl(sva_wq_reg(d, WQ_STATUS));
	if (!(status & WQ_STATUS_ENABLED)) {
		dev_err(&d->pdev->dev, "SVA work queue %u refused its ring (status %#x)\n",
			VSVM_SVA_WQ, status);
		return -EIO;
	}
	d->tail = d->head = 0;
	return 0;
}

/* Enable @pasid on the device (d->lock held). */
static int sva_pasid_enable(struct vsvm_sva_dev *d, u32 pasid)
{
	u32 ctl;

	writel(pasid, d->regs + REG_PASID_SEL);
	writel(PASID_CTL_ENABLE, d->regs + REG_PASID_CTL);
	ctl = readl(d->regs + REG_PASID_CTL);
	return (ctl & PASID_CTL_ENABLE) ? 0 : -EIO;
}

/*
 * Disable @pasid on the device and wait until it drained: afterwards the
 * device touches none of its memory (d->lock held).
 */
static int sva_pasid_drain(struct vsvm_sva_dev *d, u32 pasid)
{
	u32 ctl;

	writel(pasid, d->regs + REG_PASID_SEL);
	writel(0, d->regs + REG_PASID_CTL);
	return readl_poll_timeout(d->regs + REG_PASID_CTL, ctl,
				  !(ctl & (PASID_CTL_ENABLE | PASID_CTL_DRAINING)),
				  SVA_POLL_US, SVA_DRAIN_TIMEOUT_US);
}

/* Another bound file of the same address space still uses @pasid (d->lock held). */
static bool sva_pasid_in_use(struct vsvm_sva_dev *d, u32 pasid)
{
	struct vsvm_sva_ctx *c;

	list_for_each_entry(c, &d->ctxs, node)
		if (c->pasid == pasid)
			return true;
	return false;
}

/* Drain the file's PASID on the device (unless still shared), then unbind (d->lock held). */
static void sva_unbind(struct vsvm_sva_dev *d, struct vsvm_sva_ctx *ctx)
{
	if (!ctx->handle)
		return;
	list_del(&ctx->node);
	if (!sva_pasid_in_use(d, ctx->pasid) && sva_pasid_drain(d, ctx->pasid))
		dev_warn(&d->pdev->dev, "PASID %u still draining after %u s: unbinding anyway\n",
			 ctx->pasid, SVA_DRAIN_TIMEOUT_S);
	iommu_sva_unbind_device(ctx->handle);
	ctx->handle = NULL;
	dev_dbg(&d->pdev->dev, "PASID %u drained and unbound\n", ctx->pasid);
}

static void sva_free(struct kref *ref)
{
	kfree(container_of(ref, struct vsvm_sva_dev, ref));
}

static int sva_open(struct inode *inode, struct file *file)
{
	/* misc_open() runs this under misc_mtx: remove() cannot deregister meanwhile. */
	struct vsvm_sva_dev *d = container_of(file->private_data, struct vsvm_sva_dev, misc);
	struct device *dev = &d->pdev->dev;
	struct vsvm_sva_ctx *ctx;
	struct iommu_sva *handle;
	int ret;

	if (!current->mm)
		return -EINVAL;
	ctx = kzalloc(sizeof(*ctx), GFP_KERNEL);
	if (!ctx)
		return -ENOMEM;
	mutex_lock(&d->lock);
	if (d->gone) {
		ret = -ENODEV;
		goto err;
	}
	handle = iommu_sva_bind_device(dev, current->mm);
	if (IS_ERR(handle)) {
		ret = PTR_ERR(handle);
		dev_warn(dev, "binding process %d failed: %d\n", task_pid_nr(current), ret);
		goto err;
	}
	ctx->pasid = iommu_sva_get_pasid(handle);
	ret = sva_pasid_enable(d, ctx->pasid);
	if (ret) {
		dev_err(dev, "the device did not enable PASID %u\n", ctx->pasid);
		iommu_sva_unbind_device(handle);
		goto err;
	}
	ctx->d = d;
	ctx->handle = handle;
	ctx->mm = current->mm;
	mmgrab(ctx->mm);
	list_add(&ctx->node, &d->ctxs);
	kref_get(&d->ref);
	mutex_unlock(&d->lock);
	file->private_data = ctx;
	dev_dbg(dev, "process %d bound to PASID %u\n", task_pid_nr(current), ctx->pasid);
	return 0;

err:
	mutex_unlock(&d->lock);
	kfree(ctx);
	return ret;
}

static int sva_release(struct inode *inode, struct file *file)
{
	struct vsvm_sva_ctx *ctx = file->private_data;
	struct vsvm_sva_dev *d = ctx->d;

	/* Also with jobs in flight, or after the process's address space went away. */
	mutex_lock(&d->lock);
	sva_unbind(d, ctx);
	mutex_unlock(&d->lock);
	mmdrop(ctx->mm);
	kfree(ctx);
	kref_put(&d->ref, sva_free);
	return 0;
}

/* The device's descriptor for a user one, tagged with @pasid; -EINVAL/-EFAULT if unfit. */
static int sva_build(const struct vsvm_sva_desc *u, struct vsvm_desc *hw, u32 pasid)
{
	/* Without a record the process could not learn the outcome (it would be in SWERR). */
	if (!(u->control & VSVM_DESC_CRAV) || (u->control & VSVM_DESC_PRIV))
		return -EINVAL;
	if (!u->completion || !IS_ALIGNED(u->completion, VSVM_SVA_RECORD_ALIGN))
		return -EINVAL;
	if (!access_ok(u64_to_user_ptr(u->completion), sizeof(struct vsvm_sva_record)))
		return -EFAULT;
	/* Everything else is the device's to judge, in the record. */
	hw->control = cpu_to_le32(u->control | DESC_PV);
	hw->pasid = cpu_to_le32(pasid);
	hw->completion = cpu_to_le64(u->completion);
	hw->src = cpu_to_le64(u->src);
	hw->dst = cpu_to_le64(u->dst);
	hw->len = cpu_to_le32(u->len);
	hw->rsvd0 = cpu_to_le32(u->reserved0);
	hw->pattern = cpu_to_le64(u->pattern);
	hw->rsvd1[0] = cpu_to_le64(u->reserved1[0]);
	hw->rsvd1[1] = cpu_to_le64(u->reserved1[1]);
	return 0;
}

static u32 sva_room(struct vsvm_sva_dev *d)
{
	return VSVM_SVA_RING - 1 - ((d->tail - d->head) % VSVM_SVA_RING);
}

/* Wait until @n ring slots are free (d->lock held). */
static int sva_wait_room(struct vsvm_sva_dev *d, u32 n)
{
	unsigned long deadline = jiffies + msecs_to_jiffies(SVA_ROOM_TIMEOUT_MS);
	s64 seq;

	for (;;) {
		if (sva_room(d) >= n)
			return 0;
		seq = atomic64_read(&d->irqs);
		d->head = readl(sva_wq_reg(d, WQ_HEAD)) % VSVM_SVA_RING;
		if (sva_room(d) >= n)
			return 0;
		if (time_after(jiffies, deadline))
			return -EAGAIN;
		if (wait_event_interruptible_timeout(d->waitq, atomic64_read(&d->irqs) != seq,
						     msecs_to_jiffies(SVA_WAIT_SLICE_MS)) < 0)
			return -EINTR;
	}
}

static long sva_submit(struct vsvm_sva_ctx *ctx, struct vsvm_sva_submit __user *us)
{
	struct vsvm_sva_dev *d = ctx->d;
	struct vsvm_sva_desc *descs;
	struct vsvm_desc *hw;
	struct vsvm_sva_submit s;
	long ret = 0;
	u32 i;

	if (copy_from_user(&s, us, sizeof(s)))
		return -EFAULT;
	if (!s.count || s.count > VSVM_SVA_MAX_SUBMIT || s.reserved)
		return -EINVAL;
	descs = memdup_array_user(u64_to_user_ptr(s.descs), s.count, sizeof(*descs));
	if (IS_ERR(descs))
		return PTR_ERR(descs);
	hw = kcalloc(s.count, sizeof(*hw), GFP_KERNEL);
	if (!hw) {
		ret = -ENOMEM;
		goto out;
	}
	for (i = 0; i < s.count && !ret; i++)
		ret = sva_build(&descs[i], &hw[i], ctx->pasid);
	if (ret)
		goto out;

	if (mutex_lock_interruptible(&d->lock)) {
		ret = -EINTR;
		goto out;
	}
	if (d->gone || !ctx->handle)
		ret = -ENODEV;
	else
		ret = sva_wait_room(d, s.count);
	if (!ret) {
		for (i = 0; i < s.count; i++) {
			d->ring[d->tail] = hw[i];
			d->tail = (d->tail + 1) % VSVM_SVA_RING;
		}
		/* writel orders the ring stores before the doorbell. */
		writel(d->tail, sva_wq_reg(d, WQ_TAIL));
		ctx->submitted += s.count;
	}
	mutex_unlock(&d->lock);
out:
	kfree(hw);
	kfree(descs);
	return ret;
}

static long sva_wait(struct vsvm_sva_ctx *ctx, struct vsvm_sva_wait __user *uw)
{
	struct vsvm_sva_dev *d = ctx->d;
	struct vsvm_sva_wait w;
	unsigned long deadline;
	long left, slept;
	u8 status;
	s64 seq;

	if (copy_from_user(&w, uw, sizeof(w)))
		return -EFAULT;
	if (!IS_ALIGNED(w.record, VSVM_SVA_RECORD_ALIGN) || memchr_inv(w.reserved, 0, sizeof(w.reserved)))
		return -EINVAL;
	deadline = jiffies + msecs_to_jiffies(w.timeout_ms);
	for (;;) {
		/* Read the count first: an interrupt after the look below then wakes us. */
		seq = atomic64_read(&d->irqs);
		if (get_user(status, (u8 __user *)u64_to_user_ptr(w.record)))
			return -EFAULT;
		if (status)
			break;
		left = (long)(deadline - jiffies);
		if (left <= 0)
			return -ETIMEDOUT;
		slept = wait_event_interruptible_timeout(d->waitq, atomic64_read(&d->irqs) != seq,
							 min_t(long, left,
							       msecs_to_jiffies(SVA_WAIT_SLICE_MS)));
		if (slept < 0)
			return -EINTR;
	}
	w.status = status;
	return copy_to_user(uw, &w, sizeof(w)) ? -EFAULT : 0;
}

static long sva_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct vsvm_sva_ctx *ctx = file->private_data;
	struct vsvm_sva_dev *d = ctx->d;
	struct vsvm_sva_info info = {};

	/* Another address space's addresses would be read in the bound one (after fork). */
	if (current->mm != ctx->mm)
		return -EPERM;
	switch (cmd) {
	case VSVM_SVA_IOC_INFO:
		info.pasid = ctx->pasid;
		info.wq = VSVM_SVA_WQ;
		info.ring_size = VSVM_SVA_RING;
		info.max_xfer = d->max_xfer;
		info.max_batch = d->max_batch;
		info.max_submit = VSVM_SVA_MAX_SUBMIT;
		info.completion_irqs = atomic64_read(&d->irqs);
		info.submitted = ctx->submitted;
		return copy_to_user((void __user *)arg, &info, sizeof(info)) ? -EFAULT : 0;
	case VSVM_SVA_IOC_SUBMIT:
		return sva_submit(ctx, (struct vsvm_sva_submit __user *)arg);
	case VSVM_SVA_IOC_WAIT:
		return sva_wait(ctx, (struct vsvm_sva_wait __user *)arg);
	}
	return -ENOTTY;
}

static const struct file_operations sva_fops = {
	.owner		= THIS_MODULE,
	.open		= sva_open,
	.release	= sva_release,
	.unlocked_ioctl	= sva_ioctl,
	.compat_ioctl	= compat_ptr_ioctl,
};

/* The IOMMU's per-device features SVA needs before 6.16 (none to ask for since). */
static int sva_features_enable(struct vsvm_sva_dev *d)
{
#ifdef VSVM_SVA_FEATURE_API
	struct device *dev = &d->pdev->dev;
	int ret;

	ret = iommu_dev_enable_feature(dev, IOMMU_DEV_FEAT_IOPF);
	if (ret) {
		dev_warn(dev, "no SVA: the IOMMU cannot take I/O page faults for the device (%d)\n",
			 ret);
		return ret;
	}
	ret = iommu_dev_enable_feature(dev, IOMMU_DEV_FEAT_SVA);
	if (ret) {
		dev_warn(dev, "no SVA: the IOMMU refused SVA for the device (%d)\n", ret);
		iommu_dev_disable_feature(dev, IOMMU_DEV_FEAT_IOPF);
		return ret;
	}
	d->features = true;
#endif
	return 0;
}

static void sva_features_disable(struct vsvm_sva_dev *d)
{
#ifdef VSVM_SVA_FEATURE_API
	if (!d->features)
		return;
	iommu_dev_disable_feature(&d->pdev->dev, IOMMU_DEV_FEAT_SVA);
	iommu_dev_disable_feature(&d->pdev->dev, IOMMU_DEV_FEAT_IOPF);
	d->features = false;
#endif
}

struct vsvm_sva_dev *vsvm_sva_probe(struct pci_dev *pdev, void __iomem *regs, u32 cap,
				    int nvec)
{
	struct device *dev = &pdev->dev;
	struct vsvm_sva_dev *d;
	int ret;

	if (!(cap & VSVM_ACCEL_CAP_SVM)) {
		dev_info(dev, "no SVA: the device reports no SVM (no IOMMU in front of it)\n");
		return NULL;
	}
	if (VSVM_ACCEL_CAP_WQ_COUNT(cap) <= VSVM_SVA_WQ || nvec <= VSVM_SVA_VECTOR ||
	    readl(regs + REG_MAX_WQ_SIZE) < VSVM_SVA_RING) {
		dev_warn(dev, "no SVA: needs work queue %u, MSI-X vector %u and a %u-slot ring\n",
			 VSVM_SVA_WQ, VSVM_SVA_VECTOR, VSVM_SVA_RING);
		return NULL;
	}
	d = kzalloc(sizeof(*d), GFP_KERNEL);
	if (!d)
		return NULL;
	kref_init(&d->ref);
	d->pdev = pdev;
	d->regs = regs;
	d->index = -1;
	mutex_init(&d->lock);
	INIT_LIST_HEAD(&d->ctxs);
	init_waitqueue_head(&d->waitq);
	atomic64_set(&d->irqs, 0);
	d->max_xfer = readl(regs + REG_MAX_XFER);
	d->max_batch = readl(regs + REG_MAX_BATCH);

	if (sva_features_enable(d))
		goto err_free;
	d->ring = dma_alloc_coherent(dev, VSVM_SVA_RING * DESC_SIZE, &d->ring_dma, GFP_KERNEL);
	if (!d->ring)
		goto err_features;
	d->irq = pci_irq_vector(pdev, VSVM_SVA_VECTOR);
	ret = request_irq(d->irq, sva_irq, 0, "vsvm_accel-sva", d);
	if (ret) {
		dev_warn(dev, "no SVA: cannot request irq %d: %d\n", d->irq, ret);
		goto err_ring;
	}
	/* A queue left enabled (by an earlier driver) ignores BASE and SIZE. */
	if (sva_wq_stop(d) || sva_wq_start(d))
		goto err_irq;

	d->index = ida_alloc(&vsvm_sva_ida, GFP_KERNEL);
	if (d->index < 0)
		goto err_wq;
	snprintf(d->name, sizeof(d->name), "vsvm-sva%d", d->index);
	d->misc.minor = MISC_DYNAMIC_MINOR;
	d->misc.name = d->name;
	d->misc.fops = &sva_fops;
	d->misc.parent = dev;
	/* The device only ever touches the memory of the process that opened the file. */
	d->misc.mode = 0666;
	ret = misc_register(&d->misc);
	if (ret) {
		dev_warn(dev, "no SVA: cannot register /dev/%s: %d\n", d->name, ret);
		goto err_ida;
	}
	dev_info(dev, "SVA: /dev/%s, work queue %u (%u descriptors, block-on-fault), completion vector %u\n",
		 d->name, VSVM_SVA_WQ, VSVM_SVA_RING, VSVM_SVA_VECTOR);
	return d;

err_ida:
	ida_free(&vsvm_sva_ida, d->index);
err_wq:
	sva_wq_stop(d);
err_irq:
	free_irq(d->irq, d);
err_ring:
	dma_free_coherent(dev, VSVM_SVA_RING * DESC_SIZE, d->ring, d->ring_dma);
err_features:
	sva_features_disable(d);
err_free:
	kfree(d);
	return NULL;
}

void vsvm_sva_remove(struct vsvm_sva_dev *d)
{
	struct vsvm_sva_ctx *ctx, *tmp;

	if (!d)
		return;
	/* No new open; files still open see gone and get -ENODEV. */
	misc_deregister(&d->misc);
	mutex_lock(&d->lock);
	d->gone = true;
	list_for_each_entry_safe(ctx, tmp, &d->ctxs, node)
		sva_unbind(d, ctx);
	if (sva_wq_stop(d))
		dev_warn(&d->pdev->dev, "SVA work queue still busy after disable\n");
	mutex_unlock(&d->lock);
	free_irq(d->irq, d);
	dma_free_coherent(&d->pdev->dev, VSVM_SVA_RING * DESC_SIZE, d->ring, d->ring_dma);
	sva_features_disable(d);
	ida_free(&vsvm_sva_ida, d->index);
	kref_put(&d->ref, sva_free);
}
