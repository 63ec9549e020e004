// SPDX-License-Identifier: MIT
/*
 * vfio-copy: drive the vsvm accelerator's plain copy engine from guest
 * userspace through the kernel's own vfio-pci and the type1 IOMMU backend.
 * The guest kernel builds the IOMMU tables for our IOVAs; the vsvm VT-d unit
 * translates them when the device copies.
 *
 *   vfio-copy [--len N] [--src-iova A] [--dst-iova B] [--huge] [--timeout-ms T] BDF
 *
 * BDF (e.g. 0000:00:04.0) must be bound to vfio-pci. Steps:
 *   1. container and group: API version, type1 support, group viable,
 *      VFIO_SET_IOMMU (TYPE1v2, else TYPE1), the device fd;
 *   2. PCI COMMAND through the config region: memory decode + bus master;
 *   3. two anonymous buffers mapped with VFIO_IOMMU_MAP_DMA at IOVAs far from
 *      guest RAM (by default 64 KiB at 4 GiB and 5 GiB - 32 KiB: above a small
 *      guest's RAM, so an IOMMU that let an IOVA through untranslated would
 *      make the job fail; the destination straddles a 1 GiB boundary, so two
 *      leaf and two directory tables serve it) — the source read-only, the
 *      destination read/write. With --huge each buffer is one 2 MiB
 *      transparent huge page mapped at a 2 MiB aligned IOVA (4 GiB and
 *      5 GiB - 2 MiB), which the guest's IOMMU driver maps with a large-page
 *      entry, and the job copies 1 MiB from the middle of it;
 *   4. job 1: copy source -> destination by IOVA; every byte must match, and
 *      the destination around the job must be untouched;
 *   5. VFIO_IOMMU_UNMAP_DMA the destination, job 2 on the same IOVAs: must end
 *      in error with TRANSLATION, and neither buffer may change (a stale
 *      IOTLB/ATC entry would let the write through into the old pages);
 *   6. map the destination again, job 3 must copy a new pattern again.
 * One line per step; the last line is "vfio-copy: PASS" (exit 0) or
 * "vfio-copy: FAIL: <why>" (exit 1). Each ioctl failure names the ioctl and
 * strerror(errno). The fault of step 5 is also logged by the guest's IOMMU
 * driver (a DMAR write fault at the destination IOVA): the calling script
 * checks the kernel log.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/pci_regs.h>
#include <linux/vfio.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "../module/vsvm_accel_uapi.h"
#include "pattern.h"

/* BAR0 registers of the plain copy engine (devices/accel/README.md). */
#define REG_ID		0x000
#define REG_VERSION	0x004
#define REG_DMA_SRC	0x010
#define REG_DMA_DST	0x018
#define REG_DMA_LEN	0x020
#define REG_DMA_CMD	0x024
#define REG_DMA_STATUS	0x028
#define REG_DMA_DONE	0x02c
#define DMA_CMD_START	(1u << 0)
#define ACCEL_ID	0x56535641u
#define ACCEL_MAJOR	1u

#define PAGE		4096ul
#define HUGE		(2ul << 20)
#define FILL_BYTE	0xa5	/* what a buffer holds where the device must not write */

static void fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void fail(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fputs("vfio-copy: FAIL: ", stdout);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	exit(1);
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	va_list ap;

	fputs("vfio-copy: ", stdout);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

static void usage(void)
{
	fprintf(stderr, "usage: vfio-copy [--len N] [--src-iova A] [--dst-iova B] [--huge] "
			"[--timeout-ms T] BDF\n");
	exit(2);
}

static unsigned long long parse_num(const char *s, const char *what)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || *end || end == s) {
		fprintf(stderr, "vfio-copy: bad %s '%s'\n", what, s);
		usage();
	}
	return v;
}

/* The device: its fd and where its regions sit in that fd. */
struct dev {
	int fd;
	uint64_t cfg_off, bar0_off, bar0_size;
};

static void xioctl_ptr(int fd, unsigned long req, void *arg, const char *name)
{
	if (ioctl(fd, req, arg) < 0)
		fail("%s: %s", name, strerror(errno));
}

static void region_rw(const struct dev *d, int write, uint64_t off, void *buf, size_t n,
		      const char *what)
{
	ssize_t r = write ? pwrite(d->fd, buf, n, (off_t)off) : pread(d->fd, buf, n, (off_t)off);

	if (r < 0)
		fail("%s %s (%zu bytes at fd offset %#" PRIx64 "): %s", write ? "pwrite" : "pread",
		     what, n, off, strerror(errno));
	if ((size_t)r != n)
		fail("%s %s: %zd of %zu bytes", write ? "pwrite" : "pread", what, r, n);
}

static uint32_t rd32(const struct dev *d, uint64_t reg, const char *name)
{
	uint32_t v;

	region_rw(d, 0, d->bar0_off + reg, &v, sizeof(v), name);
	return v;
}

static void wr32(const struct dev *d, uint64_t reg, uint32_t v, const char *name)
{
	region_rw(d, 1, d->bar0_off + reg, &v, sizeof(v), name);
}

static void wr64(const struct dev *d, uint64_t reg, uint64_t v, const char *name)
{
	region_rw(d, 1, d->bar0_off + reg, &v, sizeof(v), name);
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* One job: program the engine, START, poll until it leaves busy; returns DMA_STATUS. */
static uint32_t run_job(const struct dev *d, uint64_t src, uint64_t dst, uint32_t len,
			unsigned timeout_ms)
{
	uint32_t done0 = rd32(d, REG_DMA_DONE, "DMA_DONE");

	wr64(d, REG_DMA_SRC, src, "DMA_SRC");
	wr64(d, REG_DMA_DST, dst, "DMA_DST");
	wr32(d, REG_DMA_LEN, len, "DMA_LEN");
	wr32(d, REG_DMA_CMD, DMA_CMD_START, "DMA_CMD");
	uint64_t t0 = now_ms();
	for (;;) {
		uint32_t st = rd32(d, REG_DMA_STATUS, "DMA_STATUS");
		uint32_t done = rd32(d, REG_DMA_DONE, "DMA_DONE");

		/* DMA_DONE counts ended jobs (done or error): it tells this job from the last. */
		if (VSVM_ACCEL_ST_STATE(st) != VSVM_ACCEL_ST_BUSY && done != done0)
			return st;
		if (now_ms() - t0 > timeout_ms)
			fail("job %#" PRIx64 " -> %#" PRIx64 " len %u did not end within %u ms "
			     "(DMA_STATUS %#x, DMA_DONE %u -> %u)", src, dst, len, timeout_ms, st,
			     done0, done);
		usleep(1000);
	}
}

static void map_dma(int container, void *vaddr, uint64_t iova, uint64_t size, uint32_t flags,
		    const char *what)
{
	struct vfio_iommu_type1_dma_map map = {
		.argsz = sizeof(map),
		.flags = flags,
		.vaddr = (uintptr_t)vaddr,
		.iova = iova,
		.size = size,
	};

	if (ioctl(container, VFIO_IOMMU_MAP_DMA, &map) < 0)
		fail("VFIO_IOMMU_MAP_DMA %s (iova %#" PRIx64 " size %#" PRIx64 "): %s", what, iova,
		     size, strerror(errno));
	say("mapped %s: iova %#" PRIx64 "..%#" PRIx64 " -> vaddr %p (%s)", what, iova,
	    iova + size - 1, vaddr, flags & VFIO_DMA_MAP_FLAG_WRITE ? "read/write" : "read-only");
}

static void unmap_dma(int container, uint64_t iova, uint64_t size, const char *what)
{
	struct vfio_iommu_type1_dma_unmap unmap = {
		.argsz = sizeof(unmap),
		.iova = iova,
		.size = size,
	};

	if (ioctl(container, VFIO_IOMMU_UNMAP_DMA, &unmap) < 0)
		fail("VFIO_IOMMU_UNMAP_DMA %s (iova %#" PRIx64 " size %#" PRIx64 "): %s", what,
		     iova, size, strerror(errno));
	if (unmap.size != size)
		fail("VFIO_IOMMU_UNMAP_DMA %s unmapped %#llx bytes, want %#" PRIx64, what,
		     (unsigned long long)unmap.size, size);
	say("unmapped %s: iova %#" PRIx64 "..%#" PRIx64, what, iova, iova + size - 1);
}

/* Guest-physical address of the page at vaddr (root may read PFNs from pagemap), or 0. */
static uint64_t phys_of(const void *vaddr)
{
	uint64_t ent = 0;
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return 0;
	off_t off = (off_t)((uintptr_t)vaddr / PAGE * sizeof(ent));
	if (pread(fd, &ent, sizeof(ent), off) != (ssize_t)sizeof(ent))
		ent = 0;
	close(fd);
	if (!(ent >> 63))	/* not present */
		return 0;
	return (ent & ((1ull << 55) - 1)) * PAGE;
}

/*
 * The test proves translation only if no IOVA page is the guest-physical
 * address of the page it maps (an identity-mapping unit would pass otherwise).
 */
static void check_not_identity(const uint8_t *buf, uint64_t iova, uint64_t len, const char *what)
{
	uint64_t first = 0;

	for (uint64_t o = 0; o < len; o += PAGE) {
		uint64_t pa = phys_of(buf + o);

		if (o == 0)
			first = pa;
		if (pa && pa == iova + o)
			fail("%s: iova %#" PRIx64 " equals the page's guest-physical address: "
			     "pick another IOVA", what, iova + o);
	}
	if (first)
		say("%s: first page at guest-physical %#" PRIx64 ", iova %#" PRIx64, what, first,
		    iova);
	else
		say("%s: guest-physical address unknown (pagemap hides PFNs)", what);
}

static void check_bytes(const uint8_t *got, const uint8_t *want, size_t len, const char *what)
{
	for (size_t i = 0; i < len; i++)
		if (got[i] != want[i])
			fail("%s: byte %zu of %zu is %#04x, want %#04x", what, i, len, got[i],
			     want[i]);
}

static size_t count_changed(const uint8_t *buf, size_t len)
{
	size_t n = 0;

	for (size_t i = 0; i < len; i++)
		n += buf[i] != FILL_BYTE;
	return n;
}

static void check_fill(const uint8_t *got, size_t len, const char *what)
{
	for (size_t i = 0; i < len; i++)
		if (got[i] != FILL_BYTE)
			fail("%s: byte %zu of %zu is %#04x: the device wrote where it must not",
			     what, i, len, got[i]);
}

static int open_group(const char *bdf, int *group_no)
{
	char path[PATH_MAX], link[PATH_MAX];

	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/iommu_group", bdf);
	ssize_t n = readlink(path, link, sizeof(link) - 1);
	if (n < 0)
		fail("readlink %s: %s (is %s behind an IOMMU?)", path, strerror(errno), bdf);
	link[n] = 0;
	const char *base = strrchr(link, '/');
	base = base ? base + 1 : link;
	*group_no = (int)parse_num(base, "iommu group");
	snprintf(path, sizeof(path), "/dev/vfio/%d", *group_no);
	int fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		fail("open %s: %s (is %s bound to vfio-pci?)", path, strerror(errno), bdf);
	return fd;
}

/* Container with the type1 backend and the device fd, with its region offsets. */
static void open_device(const char *bdf, int *container_out, struct dev *d)
{
	int container = open("/dev/vfio/vfio", O_RDWR | O_CLOEXEC);
	if (container < 0)
		fail("open /dev/vfio/vfio: %s", strerror(errno));
	int api = ioctl(container, VFIO_GET_API_VERSION);
	if (api < 0)
		fail("VFIO_GET_API_VERSION: %s", strerror(errno));
	if (api != VFIO_API_VERSION)
		fail("VFIO API version %d, want %d", api, VFIO_API_VERSION);

	long type = VFIO_TYPE1v2_IOMMU;
	int r = ioctl(container, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU);
	if (r < 0)
		fail("VFIO_CHECK_EXTENSION(TYPE1v2): %s", strerror(errno));
	if (r == 0) {
		type = VFIO_TYPE1_IOMMU;
		r = ioctl(container, VFIO_CHECK_EXTENSION, VFIO_TYPE1_IOMMU);
		if (r < 0)
			fail("VFIO_CHECK_EXTENSION(TYPE1): %s", strerror(errno));
		if (r == 0)
			fail("the container supports neither TYPE1v2 nor TYPE1 (vfio_iommu_type1 loaded?)");
	}
	say("container: API version %d, %s supported", api,
	    type == VFIO_TYPE1v2_IOMMU ? "TYPE1v2" : "TYPE1");

	int group_no;
	int group = open_group(bdf, &group_no);
	struct vfio_group_status gs = { .argsz = sizeof(gs) };
	xioctl_ptr(group, VFIO_GROUP_GET_STATUS, &gs, "VFIO_GROUP_GET_STATUS");
	if (!(gs.flags & VFIO_GROUP_FLAGS_VIABLE))
		fail("group %d is not viable: bind every device of the group to vfio-pci", group_no);
	xioctl_ptr(group, VFIO_GROUP_SET_CONTAINER, &container, "VFIO_GROUP_SET_CONTAINER");
	if (ioctl(container, VFIO_SET_IOMMU, type) < 0)
		fail("VFIO_SET_IOMMU(%s): %s", type == VFIO_TYPE1v2_IOMMU ? "TYPE1v2" : "TYPE1",
		     strerror(errno));
	say("group %d viable, in the container; IOMMU type set", group_no);

	struct vfio_iommu_type1_info ii = { .argsz = sizeof(ii) };
	xioctl_ptr(container, VFIO_IOMMU_GET_INFO, &ii, "VFIO_IOMMU_GET_INFO");
	if (ii.flags & VFIO_IOMMU_INFO_PGSIZES)
		say("IOMMU page sizes %#llx", (unsigned long long)ii.iova_pgsizes);

	d->fd = ioctl(group, VFIO_GROUP_GET_DEVICE_FD, bdf);
	if (d->fd < 0)
		fail("VFIO_GROUP_GET_DEVICE_FD(%s): %s", bdf, strerror(errno));
	struct vfio_device_info di = { .argsz = sizeof(di) };
	xioctl_ptr(d->fd, VFIO_DEVICE_GET_INFO, &di, "VFIO_DEVICE_GET_INFO");
	if (!(di.flags & VFIO_DEVICE_FLAGS_PCI))
		fail("%s is not a vfio PCI device (flags %#x)", bdf, di.flags);
	if (di.num_regions <= VFIO_PCI_CONFIG_REGION_INDEX)
		fail("%s has %u regions, no config region", bdf, di.num_regions);

	struct vfio_region_info cfg = { .argsz = sizeof(cfg), .index = VFIO_PCI_CONFIG_REGION_INDEX };
	xioctl_ptr(d->fd, VFIO_DEVICE_GET_REGION_INFO, &cfg, "VFIO_DEVICE_GET_REGION_INFO(config)");
	struct vfio_region_info bar0 = { .argsz = sizeof(bar0), .index = VFIO_PCI_BAR0_REGION_INDEX };
	xioctl_ptr(d->fd, VFIO_DEVICE_GET_REGION_INFO, &bar0, "VFIO_DEVICE_GET_REGION_INFO(BAR0)");
	if (!(bar0.flags & VFIO_REGION_INFO_FLAG_READ) || !(bar0.flags & VFIO_REGION_INFO_FLAG_WRITE))
		fail("BAR0 region is not read/write (flags %#x)", bar0.flags);
	if (bar0.size < REG_DMA_DONE + 4)
		fail("BAR0 region is %#llx bytes, too small", (unsigned long long)bar0.size);
	d->cfg_off = cfg.offset;
	d->bar0_off = bar0.offset;
	d->bar0_size = bar0.size;
	/* BAR0 is accessed with pread/pwrite: every access is one vfio-user region access. */
	say("device fd for %s: %u regions, %u irqs; BAR0 %#" PRIx64 " bytes at fd offset %#" PRIx64,
	    bdf, di.num_regions, di.num_irqs, d->bar0_size, d->bar0_off);
	*container_out = container;
	/* The group fd must stay open while the device is used: it is never closed here. */
}

static void enable_device(const struct dev *d)
{
	uint16_t cmd;

	region_rw(d, 0, d->cfg_off + PCI_COMMAND, &cmd, sizeof(cmd), "PCI COMMAND");
	cmd |= PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER;
	region_rw(d, 1, d->cfg_off + PCI_COMMAND, &cmd, sizeof(cmd), "PCI COMMAND");
	region_rw(d, 0, d->cfg_off + PCI_COMMAND, &cmd, sizeof(cmd), "PCI COMMAND");
	if ((cmd & (PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER)) !=
	    (PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER))
		fail("PCI COMMAND is %#06x after enabling memory decode and bus master", cmd);
	uint32_t id = rd32(d, REG_ID, "ID"), ver = rd32(d, REG_VERSION, "VERSION");
	if (id != ACCEL_ID || ver >> 16 != ACCEL_MAJOR)
		fail("BAR0 ID %#010x VERSION %#010x: not the vsvm accelerator (want ID %#010x, "
		     "major %u)", id, ver, ACCEL_ID, ACCEL_MAJOR);
	say("PCI COMMAND %#06x (memory + bus master); accelerator ID %#010x version %u.%u", cmd,
	    id, ver >> 16, ver & 0xffff);
}

/*
 * An anonymous buffer of len bytes aligned to align. With huge, it asks for a
 * transparent huge page and fails unless one backs the whole buffer: then
 * type1 finds 2 MiB of contiguous pages and the guest's IOMMU driver maps them
 * with one large-page entry, when the IOVA is 2 MiB aligned too.
 */
static uint8_t *alloc_buf(size_t len, int huge, const char *what)
{
	size_t align = huge ? HUGE : PAGE;
	uint8_t *p = mmap(NULL, len + align, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			  -1, 0);

	if (p == MAP_FAILED)
		fail("mmap %zu bytes for the %s: %s", len + align, what, strerror(errno));
	uint8_t *buf = (uint8_t *)(((uintptr_t)p + align - 1) & ~(uintptr_t)(align - 1));
	if (huge && madvise(buf, len, MADV_HUGEPAGE) < 0)
		fail("madvise(MADV_HUGEPAGE) on the %s: %s", what, strerror(errno));
	memset(buf, FILL_BYTE, len);	/* faults the pages in */
	if (!huge)
		return buf;
	uint64_t pa0 = phys_of(buf);
	int contiguous = pa0 && pa0 % HUGE == 0;
	for (size_t o = PAGE; contiguous && o < len; o += PAGE)
		contiguous = phys_of(buf + o) == pa0 + o;
	if (!contiguous)
		fail("no transparent huge page backs the %s (first page at guest-physical %#" PRIx64
		     "; see /sys/kernel/mm/transparent_hugepage/enabled)", what, pa0);
	say("%s: a 2 MiB transparent huge page at guest-physical %#" PRIx64, what, pa0);
	return buf;
}

static void expect_done(uint32_t st, const char *job)
{
	if (VSVM_ACCEL_ST_STATE(st) != VSVM_ACCEL_ST_DONE)
		fail("%s: DMA_STATUS %#x (state %u, error %u), want done", job, st,
		     VSVM_ACCEL_ST_STATE(st), VSVM_ACCEL_ST_ERR(st));
}

/* The destination outside the job's bytes must keep FILL_BYTE. */
static void check_around(const uint8_t *dst, size_t map_len, size_t off, size_t len,
			 const char *what)
{
	check_fill(dst, off, what);
	check_fill(dst + off + len, map_len - off - len, what);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "len", required_argument, NULL, 'l' },
		{ "src-iova", required_argument, NULL, 's' },
		{ "dst-iova", required_argument, NULL, 'd' },
		{ "huge", no_argument, NULL, 'H' },
		{ "timeout-ms", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	uint64_t len = 0, src_iova = 0x100000000ull, dst_iova = 0;
	unsigned timeout_ms = 10000;
	int c, huge = 0;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'l': len = parse_num(optarg, "length"); break;
		case 's': src_iova = parse_num(optarg, "source IOVA"); break;
		case 'd': dst_iova = parse_num(optarg, "destination IOVA"); break;
		case 'H': huge = 1; break;
		case 't': timeout_ms = (unsigned)parse_num(optarg, "timeout"); break;
		default: usage();
		}
	}
	if (optind + 1 != argc)
		usage();
	const char *bdf = argv[optind];
	/*
	 * Defaults: 64 KiB at 4 GiB and 5 GiB - 32 KiB; with --huge 1 MiB in the middle of
	 * 2 MiB mappings at 4 GiB and 5 GiB - 2 MiB (large pages need 2 MiB aligned IOVAs).
	 */
	if (!len)
		len = huge ? VSVM_ACCEL_MAX_LEN : 64 * 1024;
	if (!dst_iova)
		dst_iova = 0x140000000ull - (huge ? HUGE : 0x8000);
	uint64_t map_len = huge ? HUGE : len, off = huge ? (HUGE - len) / 2 / PAGE * PAGE : 0;
	if (len == 0 || len % PAGE || len > VSVM_ACCEL_MAX_LEN || src_iova % PAGE ||
	    dst_iova % PAGE)
		fail("length and IOVAs must be page multiples, length 1 page .. %u bytes",
		     VSVM_ACCEL_MAX_LEN);
	if (huge && (src_iova % HUGE || dst_iova % HUGE))
		fail("--huge needs 2 MiB aligned IOVAs");
	if (src_iova < dst_iova + map_len && dst_iova < src_iova + map_len)
		fail("source and destination IOVA ranges overlap");
	uint64_t job_src = src_iova + off, job_dst = dst_iova + off;

	int container;
	struct dev d;
	open_device(bdf, &container, &d);
	enable_device(&d);

	uint8_t *src = alloc_buf(map_len, huge, "source");
	uint8_t *dst = alloc_buf(map_len, huge, "destination");
	uint8_t *want = malloc(len);
	if (!want)
		fail("out of memory");
	pattern_bytes(want, len, 1);
	memcpy(src + off, want, len);
	/* MAP_DMA pins the pages: after it they have the physical addresses the device reaches. */
	map_dma(container, src, src_iova, map_len, VFIO_DMA_MAP_FLAG_READ, "source");
	map_dma(container, dst, dst_iova, map_len, VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
		"destination");
	check_not_identity(src, src_iova, map_len, "source");
	check_not_identity(dst, dst_iova, map_len, "destination");

	uint32_t st = run_job(&d, job_src, job_dst, (uint32_t)len, timeout_ms);
	expect_done(st, "job 1 (mapped)");
	check_bytes(dst + off, want, len, "job 1: destination");
	check_around(dst, map_len, off, len, "job 1: destination outside the job");
	say("job 1: copied %" PRIu64 " bytes iova %#" PRIx64 " -> %#" PRIx64 ", every byte right",
	    len, job_src, job_dst);

	unmap_dma(container, dst_iova, map_len, "destination");
	memset(dst, FILL_BYTE, map_len);
	st = run_job(&d, job_src, job_dst, (uint32_t)len, timeout_ms);
	if (VSVM_ACCEL_ST_STATE(st) != VSVM_ACCEL_ST_ERROR ||
	    VSVM_ACCEL_ST_ERR(st) != VSVM_ACCEL_ERR_TRANSLATION)
		fail("job 2 (destination unmapped): DMA_STATUS %#x (state %u, error %u), want error "
		     "TRANSLATION (%u); %zu of %" PRIu64 " bytes of the old destination pages "
		     "changed (nonzero: written through a stale IOTLB/ATC translation)", st,
		     VSVM_ACCEL_ST_STATE(st), VSVM_ACCEL_ST_ERR(st), VSVM_ACCEL_ERR_TRANSLATION,
		     count_changed(dst, map_len), map_len);
	check_bytes(src + off, want, len, "job 2: source");
	check_fill(dst, map_len, "job 2: old destination pages");
	say("job 2: destination iova %#" PRIx64 " unmapped -> DMA_STATUS %#x (error TRANSLATION); "
	    "source and old destination pages untouched", job_dst, st);

	pattern_bytes(want, len, 2);
	memcpy(src + off, want, len);
	map_dma(container, dst, dst_iova, map_len, VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
		"destination again");
	st = run_job(&d, job_src, job_dst, (uint32_t)len, timeout_ms);
	expect_done(st, "job 3 (remapped)");
	check_bytes(dst + off, want, len, "job 3: destination");
	check_around(dst, map_len, off, len, "job 3: destination outside the job");
	say("job 3: destination mapped again, copied %" PRIu64 " bytes of a new pattern, every "
	    "byte right", len);

	unmap_dma(container, dst_iova, map_len, "destination");
	unmap_dma(container, src_iova, map_len, "source");
	close(d.fd);
	close(container);
	say("PASS");
	return 0;
}
