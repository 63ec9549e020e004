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
 * Register map: devices/accel/README.md. ioctls: vsvm_accel_uapi.h.
 */
#include <linux/completion.h>
#include <linux/dma-mapping.h>
#include <linux/fs.h>
#include <linux/interrupt.h>
#include <linux/iopoll.h>
#include <linux/ktime.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/pci.h>
#include <linux/slab.h>
#include <linux/sort.h>
#include <linux/uaccess.h>

#include "vsvm_accel_uapi.h"

#define DRV_NAME	"vsvm_accel"

/* BAR0 registers */
#define REG_ID		0x000
#define REG_VERSION	0x004
#define REG_CAP		0x008
#define REG_DMA_SRC	0x010
#define REG_DMA_DST	0x018
#define REG_DMA_LEN	0x020
#define REG_DMA_CMD	0x024
#define REG_DMA_STATUS	0x028
#define REG_DMA_DONE	0x02c
#define REG_IRQ_RAISE	0x030
#define REG_SCRATCH	0x034

#define ACCEL_ID	0x56535641
#define ACCEL_MAJOR	1
#define CAP_PLAIN_DMA	BIT(0)
#define CMD_START	BIT(0)
#define CMD_IRQ		BIT(1)

#define JOB_TIMEOUT_US	(5 * USEC_PER_SEC)

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
	u64 start;
	int ret;

	if (copy_from_user(&c, uarg, sizeof(c)))
		return -EFAULT;
	if (c.len > VSVM_ACCEL_MAX_LEN || (c.flags & ~VSVM_ACCEL_COPY_USE_IRQ))
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
	writel(lower_32_bits(a->dst_dma), a->regs + REG_DMA_DST);
	writel(upper_32_bits(a->dst_dma), a->regs + REG_DMA_DST + 4);
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
		goto err_irq;
	}

	dev_info(dev, "vsvm accelerator v%u.%u, cap %#x, %d MSI-X vector(s), /dev/%s\n",
		 version >> 16, version & 0xffff, cap, nvec, vsvm_misc.name);
	return 0;

err_irq:
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

	/* A timed-out job may still be running: stop DMA before freeing its buffers. */
	pci_clear_master(pdev);
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

MODULE_DESCRIPTION("vsvm test accelerator: DMA copy engine driver");
MODULE_LICENSE("GPL");
