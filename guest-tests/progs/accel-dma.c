// SPDX-License-Identifier: MIT
/*
 * accel-dma: drive the vsvm accelerator's plain DMA copy engine from guest
 * userspace through vfio-pci in no-IOMMU mode.
 *
 *   accel-dma ADDR [--len N] [--irq] [--iters K] [--seed S]
 *
 * The guest has no IOMMU, so DMA addresses are guest-physical: each buffer
 * page is looked up in /proc/self/pagemap (root only) and the copy is issued
 * as one job per page, because consecutive virtual pages are not physically
 * contiguous. All device access goes through pread/pwrite on the vfio device
 * fd (no mmap), so every register access is a plain trapped MMIO.
 *
 * Register map: devices/accel/README.md.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <linux/pci_regs.h>
#include <linux/vfio.h>

/* BAR0 registers (devices/accel/README.md). */
#define REG_ID		0x000
#define REG_VERSION	0x004
#define REG_CAP		0x008
#define REG_DMA_SRC	0x010
#define REG_DMA_DST	0x018
#define REG_DMA_LEN	0x020
#define REG_DMA_CMD	0x024
#define REG_DMA_STATUS	0x028
#define REG_DMA_DONE	0x02c
#define BAR0_MIN_SIZE	0x030

#define ACCEL_ID	0x56535641u
#define ACCEL_MAJOR	1
#define CAP_PLAIN_DMA	(1u << 0)

#define CMD_START	(1u << 0)
#define CMD_IRQ		(1u << 1)

#define ST_STATE(s)	((s) & 0x3u)
#define ST_ERR(s)	(((s) >> 8) & 0xffu)
#define ST_IDLE		0
#define ST_BUSY		1
#define ST_DONE		2
#define ST_ERROR	3

#define ERR_BAD_LEN	1

#define DMA_MAX_LEN	(1u << 20)
#define JOB_TIMEOUT_NS	(5ull * 1000000000ull)

#define PAGEMAP_PRESENT	(1ull << 63)
#define PAGEMAP_PFN	((1ull << 55) - 1)

struct dev {
	int fd;
	uint64_t cfg_off;	/* config space region offset in fd */
	uint64_t bar0_off;	/* BAR0 region offset in fd */
	int irq_fd;		/* eventfd for MSI-X vector 0, or -1 */
};

struct buf {
	uint8_t *va;
	size_t npages;
	uint64_t *pa;		/* guest-physical address of each page */
};

static size_t page_size;

static void __attribute__((noreturn, format(printf, 1, 2)))
fail(const char *fmt, ...)
{
	va_list ap;

	fputs("accel-dma: FAIL: ", stdout);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	fputc('\n', stdout);
	exit(1);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- sysfs binding ---------------------------------------------------- */

static int sysfs_write(const char *path, const char *val)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = write(fd, val, strlen(val));
	n = n < 0 ? -errno : 0;
	close(fd);
	return (int)n;
}

/*
 * Basename of the symlink /sys/bus/pci/devices/ADDR/<link> into out;
 * returns 0 if the link is absent (e.g. no driver bound).
 */
static int sysfs_link_name(const char *addr, const char *link, char *out,
			   size_t outsz)
{
	char path[PATH_MAX], target[PATH_MAX];
	ssize_t n;
	const char *base;
	size_t blen;

	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/%s", addr, link);
	n = readlink(path, target, sizeof(target) - 1);
	if (n < 0)
		return 0;
	target[n] = '\0';
	base = strrchr(target, '/');
	base = base ? base + 1 : target;
	blen = strlen(base);
	if (blen >= outsz)
		fail("%s: link name too long", path);
	memcpy(out, base, blen + 1);
	return 1;
}

static void bind_vfio(const char *addr)
{
	char path[PATH_MAX], drv[64];
	int err;

	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s", addr);
	if (access(path, F_OK) != 0)
		fail("no PCI device %s", addr);
	if (sysfs_link_name(addr, "driver", drv, sizeof(drv)) &&
	    strcmp(drv, "vfio-pci") == 0)
		return;

	if (access("/sys/bus/pci/drivers/vfio-pci", F_OK) != 0)
		fail("vfio-pci driver not loaded (modprobe vfio-pci)");

	/* driver_override makes the next probe pick vfio-pci regardless of ID. */
	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/driver_override",
		 addr);
	err = sysfs_write(path, "vfio-pci");
	if (err)
		fail("write %s: %s", path, strerror(-err));

	if (sysfs_link_name(addr, "driver", drv, sizeof(drv))) {
		snprintf(path, sizeof(path),
			 "/sys/bus/pci/devices/%s/driver/unbind", addr);
		err = sysfs_write(path, addr);
		if (err)
			fail("unbind %s from %s: %s", addr, drv, strerror(-err));
	}

	/* A failed probe is not reported by drivers_probe; check the link. */
	sysfs_write("/sys/bus/pci/drivers_probe", addr);
	if (!sysfs_link_name(addr, "driver", drv, sizeof(drv)) ||
	    strcmp(drv, "vfio-pci") != 0)
		fail("%s did not bind to vfio-pci (is vfio loaded with "
		     "enable_unsafe_noiommu_mode=1?)", addr);
}

/* ---- VFIO container / group / device ---------------------------------- */

static int open_group(const char *addr)
{
	char grp[32], path[64];
	int fd;

	if (!sysfs_link_name(addr, "iommu_group", grp, sizeof(grp)))
		fail("%s has no iommu_group", addr);

	/* vfio names no-IOMMU groups noiommu-N so they can't be mistaken. */
	snprintf(path, sizeof(path), "/dev/vfio/noiommu-%s", grp);
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		fail("open %s: %s", path, strerror(errno));
	return fd;
}

static int open_container(void)
{
	int fd = open("/dev/vfio/vfio", O_RDWR | O_CLOEXEC);

	if (fd < 0)
		fail("open /dev/vfio/vfio: %s", strerror(errno));
	if (ioctl(fd, VFIO_GET_API_VERSION) != VFIO_API_VERSION)
		fail("unexpected VFIO API version");
	return fd;
}

static void attach_group(int container, int group)
{
	struct vfio_group_status st = { .argsz = sizeof(st) };

	if (ioctl(group, VFIO_GROUP_GET_STATUS, &st) < 0)
		fail("VFIO_GROUP_GET_STATUS: %s", strerror(errno));
	if (!(st.flags & VFIO_GROUP_FLAGS_VIABLE))
		fail("VFIO group not viable");
	if (ioctl(group, VFIO_GROUP_SET_CONTAINER, &container) < 0)
		fail("VFIO_GROUP_SET_CONTAINER: %s", strerror(errno));
	if (ioctl(container, VFIO_CHECK_EXTENSION, VFIO_NOIOMMU_IOMMU) <= 0)
		fail("container lacks VFIO_NOIOMMU_IOMMU");
	if (ioctl(container, VFIO_SET_IOMMU, VFIO_NOIOMMU_IOMMU) < 0)
		fail("VFIO_SET_IOMMU(NOIOMMU): %s", strerror(errno));
}

static struct vfio_region_info region_info(int fd, uint32_t index)
{
	struct vfio_region_info ri = { .argsz = sizeof(ri), .index = index };

	if (ioctl(fd, VFIO_DEVICE_GET_REGION_INFO, &ri) < 0)
		fail("VFIO_DEVICE_GET_REGION_INFO(%u): %s", index,
		     strerror(errno));
	return ri;
}

static void open_device(struct dev *d, const char *addr)
{
	struct vfio_device_info info = { .argsz = sizeof(info) };
	struct vfio_region_info cfg, bar0;
	const uint32_t rw = VFIO_REGION_INFO_FLAG_READ |
			    VFIO_REGION_INFO_FLAG_WRITE;
	int container, group;

	bind_vfio(addr);
	container = open_container();
	group = open_group(addr);
	attach_group(container, group);

	d->fd = ioctl(group, VFIO_GROUP_GET_DEVICE_FD, addr);
	if (d->fd < 0)
		fail("VFIO_GROUP_GET_DEVICE_FD(%s): %s", addr, strerror(errno));
	d->irq_fd = -1;

	if (ioctl(d->fd, VFIO_DEVICE_GET_INFO, &info) < 0)
		fail("VFIO_DEVICE_GET_INFO: %s", strerror(errno));
	if (!(info.flags & VFIO_DEVICE_FLAGS_PCI) ||
	    info.num_regions <= VFIO_PCI_CONFIG_REGION_INDEX)
		fail("not a vfio PCI device");

	cfg = region_info(d->fd, VFIO_PCI_CONFIG_REGION_INDEX);
	bar0 = region_info(d->fd, VFIO_PCI_BAR0_REGION_INDEX);
	if ((cfg.flags & rw) != rw || (bar0.flags & rw) != rw)
		fail("config or BAR0 region not read/write");
	if (bar0.size < BAR0_MIN_SIZE)
		fail("BAR0 too small: %llu bytes", (unsigned long long)bar0.size);
	d->cfg_off = cfg.offset;
	d->bar0_off = bar0.offset;
	/* container and group stay open for the device's lifetime. */
}

/* ---- register access -------------------------------------------------- */

static void dev_pread(const struct dev *d, void *p, size_t n, uint64_t off,
		      const char *what)
{
	if (pread(d->fd, p, n, (off_t)off) != (ssize_t)n)
		fail("read %s: %s", what, strerror(errno));
}

static void dev_pwrite(const struct dev *d, const void *p, size_t n,
		       uint64_t off, const char *what)
{
	if (pwrite(d->fd, p, n, (off_t)off) != (ssize_t)n)
		fail("write %s: %s", what, strerror(errno));
}

static uint32_t reg_read(const struct dev *d, uint32_t reg)
{
	uint32_t v;

	dev_pread(d, &v, sizeof(v), d->bar0_off + reg, "BAR0");
	return v;	/* x86 guest: little endian like the device */
}

static void reg_write(const struct dev *d, uint32_t reg, uint32_t v)
{
	dev_pwrite(d, &v, sizeof(v), d->bar0_off + reg, "BAR0");
}

/* 64-bit registers as two 32-bit writes, the always-valid access size. */
static void reg_write64(const struct dev *d, uint32_t reg, uint64_t v)
{
	reg_write(d, reg, (uint32_t)v);
	reg_write(d, reg + 4, (uint32_t)(v >> 32));
}

static void enable_bus_master(const struct dev *d)
{
	uint16_t cmd;

	dev_pread(d, &cmd, sizeof(cmd), d->cfg_off + PCI_COMMAND, "PCI_COMMAND");
	/* MEMORY too: vfio-pci refuses BAR access while decoding is off. */
	cmd |= PCI_COMMAND_MASTER | PCI_COMMAND_MEMORY;
	dev_pwrite(d, &cmd, sizeof(cmd), d->cfg_off + PCI_COMMAND,
		   "PCI_COMMAND");
	dev_pread(d, &cmd, sizeof(cmd), d->cfg_off + PCI_COMMAND, "PCI_COMMAND");
	if (!(cmd & PCI_COMMAND_MASTER))
		fail("bus master enable did not stick (PCI_COMMAND=%#06x)", cmd);
}

static void check_identity(const struct dev *d)
{
	uint32_t id = reg_read(d, REG_ID);
	uint32_t ver = reg_read(d, REG_VERSION);
	uint32_t cap = reg_read(d, REG_CAP);

	if (id != ACCEL_ID)
		fail("ID = %#010x, expected %#010x", id, ACCEL_ID);
	if (ver >> 16 != ACCEL_MAJOR)
		fail("VERSION = %#010x, expected major %d", ver, ACCEL_MAJOR);
	if (!(cap & CAP_PLAIN_DMA))
		fail("CAP = %#010x lacks PLAIN_DMA", cap);
	printf("accel-dma: ID %#010x VERSION %u.%u CAP %#x\n", id, ver >> 16,
	       ver & 0xffff, cap);
}

/* ---- MSI-X ------------------------------------------------------------ */

static void setup_irq(struct dev *d)
{
	struct vfio_irq_info ii = { .argsz = sizeof(ii),
				    .index = VFIO_PCI_MSIX_IRQ_INDEX };
	/* vfio_irq_set ends in a flexible array: here one int32 eventfd. */
	union {
		struct vfio_irq_set set;
		uint8_t raw[sizeof(struct vfio_irq_set) + sizeof(int32_t)];
	} u;
	int32_t efd;

	if (ioctl(d->fd, VFIO_DEVICE_GET_IRQ_INFO, &ii) < 0)
		fail("VFIO_DEVICE_GET_IRQ_INFO(MSIX): %s", strerror(errno));
	if (ii.count < 1 || !(ii.flags & VFIO_IRQ_INFO_EVENTFD))
		fail("device has no MSI-X vectors usable with eventfd");

	/* Non-blocking so stale signals can be drained before each job. */
	efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (efd < 0)
		fail("eventfd: %s", strerror(errno));

	memset(&u, 0, sizeof(u));
	u.set.argsz = sizeof(u.raw);
	u.set.flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
	u.set.index = VFIO_PCI_MSIX_IRQ_INDEX;
	u.set.start = 0;
	u.set.count = 1;
	memcpy(u.set.data, &efd, sizeof(efd));
	if (ioctl(d->fd, VFIO_DEVICE_SET_IRQS, &u.set) < 0)
		fail("VFIO_DEVICE_SET_IRQS(MSIX vector 0): %s", strerror(errno));
	d->irq_fd = efd;
}

static void drain_irq(const struct dev *d)
{
	uint64_t cnt;

	while (read(d->irq_fd, &cnt, sizeof(cnt)) == sizeof(cnt))
		;
}

static void wait_irq(const struct dev *d, uint64_t deadline)
{
	struct pollfd pfd = { .fd = d->irq_fd, .events = POLLIN };
	uint64_t cnt;

	for (;;) {
		uint64_t now = now_ns();
		int r;

		if (now >= deadline)
			fail("timeout waiting for MSI-X vector 0 (DMA_STATUS=%#x)",
			     reg_read(d, REG_DMA_STATUS));
		r = poll(&pfd, 1, (int)((deadline - now) / 1000000 + 1));
		if (r < 0 && errno != EINTR)
			fail("poll eventfd: %s", strerror(errno));
		if (r > 0 && read(d->irq_fd, &cnt, sizeof(cnt)) == sizeof(cnt))
			return;
	}
}

/* ---- DMA jobs --------------------------------------------------------- */

/* Poll DMA_STATUS until the state leaves busy; returns the final status. */
static uint32_t wait_not_busy(const struct dev *d, uint64_t deadline)
{
	const struct timespec pause = { .tv_nsec = 50000 };

	for (;;) {
		uint32_t st = reg_read(d, REG_DMA_STATUS);

		if (ST_STATE(st) != ST_BUSY)
			return st;
		if (now_ns() >= deadline)
			fail("timeout: DMA_STATUS still busy (%#x)", st);
		nanosleep(&pause, NULL);
	}
}

/* Run one job, completion by MSI-X if irq else by polling; final status. */
static uint32_t run_job(const struct dev *d, uint64_t src, uint64_t dst,
			uint32_t len, int irq)
{
	uint64_t deadline;
	uint32_t st, cmd = CMD_START;

	st = reg_read(d, REG_DMA_STATUS);
	if (ST_STATE(st) == ST_BUSY)
		fail("engine busy before job (DMA_STATUS=%#x)", st);

	reg_write64(d, REG_DMA_SRC, src);
	reg_write64(d, REG_DMA_DST, dst);
	reg_write(d, REG_DMA_LEN, len);
	if (irq) {
		drain_irq(d);
		cmd |= CMD_IRQ;
	}
	deadline = now_ns() + JOB_TIMEOUT_NS;
	reg_write(d, REG_DMA_CMD, cmd);

	if (irq) {
		wait_irq(d, deadline);
		/* The vector is raised on completion, so it must be final now. */
		st = reg_read(d, REG_DMA_STATUS);
		if (ST_STATE(st) == ST_BUSY)
			fail("MSI-X fired but DMA_STATUS still busy (%#x)", st);
		return st;
	}
	return wait_not_busy(d, deadline);
}

/* ---- buffers ---------------------------------------------------------- */

static uint64_t virt_to_phys(int pagemap, const void *va)
{
	uint64_t ent, vpn = (uintptr_t)va / page_size;

	if (pread(pagemap, &ent, sizeof(ent), (off_t)(vpn * sizeof(ent))) !=
	    sizeof(ent))
		fail("read /proc/self/pagemap: %s", strerror(errno));
	if (!(ent & PAGEMAP_PRESENT))
		fail("page %p not present after mlock", va);
	if (!(ent & PAGEMAP_PFN))
		fail("pagemap hides PFNs (need root / CAP_SYS_ADMIN)");
	return (ent & PAGEMAP_PFN) * page_size;
}

static void buf_alloc(struct buf *b, size_t len, int pagemap)
{
	size_t sz, i;

	b->npages = (len + page_size - 1) / page_size;
	sz = b->npages * page_size;
	b->va = mmap(NULL, sz, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (b->va == MAP_FAILED)
		fail("mmap %zu bytes: %s", sz, strerror(errno));
	/* Keep khugepaged from collapsing (and so moving) pages mid-test. */
	madvise(b->va, sz, MADV_NOHUGEPAGE);
	/* Touch with writes so each page gets its own frame, not the zero page. */
	memset(b->va, 0xa5, sz);
	/* mlock pins against swap-out so the PFNs stay valid during DMA. */
	if (mlock(b->va, sz) < 0)
		fail("mlock %zu bytes: %s", sz, strerror(errno));

	b->pa = calloc(b->npages, sizeof(*b->pa));
	if (!b->pa)
		fail("out of memory");
	for (i = 0; i < b->npages; i++)
		b->pa[i] = virt_to_phys(pagemap, b->va + i * page_size);
}

/* xorshift64: a cheap, seeded pattern so every page differs. */
static void fill_pattern(uint8_t *p, size_t len, uint64_t seed)
{
	uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
	size_t i;

	for (i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		p[i] = (uint8_t)(x >> 32);
	}
}

static void verify(const struct buf *src, const struct buf *dst, size_t len)
{
	size_t i, end = dst->npages * page_size;

	for (i = 0; i < len; i++)
		if (dst->va[i] != src->va[i])
			fail("data mismatch at byte %zu: got %#04x, expected %#04x",
			     i, dst->va[i], src->va[i]);
	/* The engine must not write past DMA_LEN into the rest of the page. */
	for (i = len; i < end; i++)
		if (dst->va[i] != 0)
			fail("byte %zu past the copied length was written (%#04x)",
			     i, dst->va[i]);
}

/* ---- tests ------------------------------------------------------------ */

/* One pass: fresh pattern, one job per page, verify data and DMA_DONE. */
static size_t copy_pass(const struct dev *d, const struct buf *src,
			const struct buf *dst, size_t len, uint64_t seed)
{
	uint32_t done0, done1;
	size_t i;

	fill_pattern(src->va, len, seed);
	memset(dst->va, 0, dst->npages * page_size);

	done0 = reg_read(d, REG_DMA_DONE);
	for (i = 0; i < src->npages; i++) {
		size_t off = i * page_size;
		uint32_t n = (uint32_t)(len - off < page_size ? len - off
							     : page_size);
		uint32_t st = run_job(d, src->pa[i], dst->pa[i], n,
				      d->irq_fd >= 0);

		if (ST_STATE(st) != ST_DONE || ST_ERR(st) != 0)
			fail("job %zu (src %#llx dst %#llx len %u): "
			     "DMA_STATUS=%#x state %u error %u",
			     i, (unsigned long long)src->pa[i],
			     (unsigned long long)dst->pa[i], n, st,
			     ST_STATE(st), ST_ERR(st));
	}
	done1 = reg_read(d, REG_DMA_DONE);
	if (done1 - done0 != src->npages)
		fail("DMA_DONE advanced by %u, expected %zu", done1 - done0,
		     src->npages);

	verify(src, dst, len);
	return src->npages;
}

/* DMA_LEN = 0 must end in error BAD_LEN and still count as completed. */
static void test_bad_len(const struct dev *d, const struct buf *src,
			 const struct buf *dst)
{
	uint32_t done0 = reg_read(d, REG_DMA_DONE);
	/* Polled: the README only promises the vector for completions. */
	uint32_t st = run_job(d, src->pa[0], dst->pa[0], 0, 0);

	if (ST_STATE(st) != ST_ERROR || ST_ERR(st) != ERR_BAD_LEN)
		fail("DMA_LEN=0: DMA_STATUS=%#x, expected error BAD_LEN (%#x)",
		     st, (ERR_BAD_LEN << 8) | ST_ERROR);
	if (reg_read(d, REG_DMA_DONE) - done0 != 1)
		fail("DMA_DONE did not count the BAD_LEN job");
	printf("accel-dma: DMA_LEN=0 -> error BAD_LEN, OK\n");
}

/* ---- main ------------------------------------------------------------- */

struct opts {
	const char *addr;
	size_t len;
	unsigned long iters;
	uint64_t seed;
	int irq;
};

static void usage(void)
{
	fprintf(stderr, "usage: accel-dma ADDR [--len N] [--irq] [--iters K] "
		"[--seed S]\n  ADDR e.g. 0000:00:04.0; 1 <= N <= %u\n",
		DMA_MAX_LEN);
	exit(2);
}

static unsigned long long parse_num(const char *s, const char *what)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || *s == '\0' || *end != '\0')
		fail("bad %s: '%s'", what, s);
	return v;
}

static void parse_opts(struct opts *o, int argc, char **argv)
{
	static const struct option lo[] = {
		{ "len",   required_argument, NULL, 'l' },
		{ "irq",   no_argument,       NULL, 'i' },
		{ "iters", required_argument, NULL, 'k' },
		{ "seed",  required_argument, NULL, 's' },
		{ "help",  no_argument,       NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	*o = (struct opts){ .len = 4096, .iters = 1, .seed = 1 };
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (c) {
		case 'l': o->len = parse_num(optarg, "--len"); break;
		case 'i': o->irq = 1; break;
		case 'k': o->iters = parse_num(optarg, "--iters"); break;
		case 's': o->seed = parse_num(optarg, "--seed"); break;
		default: usage();
		}
	}
	if (optind != argc - 1)
		usage();
	o->addr = argv[optind];
	if (o->len < 1 || o->len > DMA_MAX_LEN)
		fail("--len must be 1..%u", DMA_MAX_LEN);
	if (o->iters < 1)
		fail("--iters must be >= 1");
}

int main(int argc, char **argv)
{
	struct opts o;
	struct dev d;
	struct buf src, dst;
	size_t jobs = 0;
	unsigned long it;
	int pagemap;

	setvbuf(stdout, NULL, _IOLBF, 0);
	parse_opts(&o, argc, argv);
	page_size = (size_t)sysconf(_SC_PAGESIZE);

	open_device(&d, o.addr);
	enable_bus_master(&d);
	check_identity(&d);
	if (o.irq)
		setup_irq(&d);

	pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (pagemap < 0)
		fail("open /proc/self/pagemap: %s", strerror(errno));
	buf_alloc(&src, o.len, pagemap);
	buf_alloc(&dst, o.len, pagemap);

	for (it = 0; it < o.iters; it++)
		jobs += copy_pass(&d, &src, &dst, o.len, o.seed + it);

	test_bad_len(&d, &src, &dst);

	printf("accel-dma: copied %zu bytes in %zu jobs, irq=%s, OK\n",
	       o.len * o.iters, jobs, o.irq ? "yes" : "no");
	return 0;
}
