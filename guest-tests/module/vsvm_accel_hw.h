/* SPDX-License-Identifier: GPL-2.0 */
/*
 * vsvm_accel_hw.h - the vsvm accelerator as the guest driver sees it: BAR0
 * registers, their bits and the 64-byte descriptor (devices/accel/README.md).
 * Shared by the driver's files (vsvm_main.c, vsvm_sva.c).
 */
#ifndef VSVM_ACCEL_HW_H
#define VSVM_ACCEL_HW_H

#include <linux/bits.h>
#include <linux/build_bug.h>
#include <linux/types.h>

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

/* Work queue registers (BAR0 from 0x100) */
#define REG_SWERR	0x100
#define REG_SWERR_ADDR	0x108
#define REG_ERRCTL	0x110
#define REG_PASID_SEL	0x118
#define REG_PASID_CTL	0x11c
#define REG_MAX_XFER	0x120
#define REG_MAX_BATCH	0x124
#define REG_MAX_WQ_SIZE	0x128
#define REG_WQ(n)	(0x200 + 0x40 * (n))
#define WQ_BASE		0x00
#define WQ_SIZE		0x08
#define WQ_CTRL		0x0c
#define WQ_HEAD		0x10
#define WQ_TAIL		0x14
#define WQ_STATUS	0x18
#define WQ_DONE		0x1c

#define ACCEL_ID	0x56535641
#define ACCEL_MAJOR	1
#define CAP_PLAIN_DMA	BIT(0)
#define CMD_START	BIT(0)
#define CMD_IRQ		BIT(1)

#define WQ_CTRL_ENABLE		BIT(0)
#define WQ_CTRL_BOF		BIT(1)
#define WQ_CTRL_VECTOR(v)	((v) << 8)
#define WQ_STATUS_ENABLED	BIT(0)
#define WQ_STATUS_BUSY		BIT(1)
#define WQ_STATUS_ERROR(s)	(((s) >> 8) & 0xff)
#define ERRCTL_IRQ_EN		BIT(0)
#define ERRCTL_VECTOR(v)	((v) << 8)
#define PASID_CTL_ENABLE	BIT(0)
#define PASID_CTL_DRAINING	BIT(31)

/* Descriptor CONTROL bits (bits 7:0 are the opcode) */
#define DESC_CRAV	BIT(8)
#define DESC_RCI	BIT(9)
#define DESC_PV		BIT(10)
#define DESC_PRIV	BIT(11)
#define DESC_RESERVED	BIT(31)	/* reserved: set only to provoke BAD_FLAGS */

#define DESC_SIZE	64

/* A descriptor as the device reads it (devices/accel/README.md, "Descriptor"). */
struct vsvm_desc {
	__le32 control;
	__le32 pasid;
	__le64 completion;
	__le64 src;
	__le64 dst;
	__le32 len;
	__le32 rsvd0;
	__le64 pattern;
	__le64 rsvd1[2];
};
static_assert(sizeof(struct vsvm_desc) == DESC_SIZE);

#endif /* VSVM_ACCEL_HW_H */
