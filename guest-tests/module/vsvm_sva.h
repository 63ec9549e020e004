/* SPDX-License-Identifier: GPL-2.0 */
/*
 * vsvm_sva.h - the SVA part of the vsvm_accel driver (vsvm_sva.c) as the PCI
 * part (vsvm_main.c) calls it: set up at probe, torn down at remove.
 */
#ifndef VSVM_SVA_H
#define VSVM_SVA_H

#include <linux/pci.h>

struct vsvm_sva_dev;

/*
 * SVA for @pdev behind an IOMMU (CAP.SVM): the kernel's SVA for the device,
 * the SVA work queue and /dev/vsvm-sva<N>. NULL when the device or the kernel
 * cannot (the reason is logged): the rest of the driver works without it.
 */
struct vsvm_sva_dev *vsvm_sva_probe(struct pci_dev *pdev, void __iomem *regs, u32 cap,
				    int nvec);

/* Undo vsvm_sva_probe (NULL is fine): every bound process is drained and unbound first. */
void vsvm_sva_remove(struct vsvm_sva_dev *d);

#endif /* VSVM_SVA_H */
