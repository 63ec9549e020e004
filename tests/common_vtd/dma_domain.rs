//! A guest's DMA domain as Linux's intel-iommu builds it, for default-domain tests: a
//! first-stage table (scalable mode, `use_first_level`) or a second-stage one (legacy mode) in
//! guest RAM, and the neutral API's description of it. PTE bits are Linux's
//! (drivers/iommu/intel/iommu.h DMA_PTE_*, DMA_FL_PTE_*; iommu.c `pfn_to_dma_pte`,
//! `__domain_mapping`).

use vsvm::iommu::{DefaultDomain, FirstStageFlags, PageTable, PagingLevels, SecondStageTable};

use super::{GuestRam, Space, Tree, DMA_PTE_READ, DMA_PTE_WRITE};

/// DMA_FL_PTE_PRESENT.
pub const FL_PRESENT: u64 = 1 << 0;
/// DMA_FL_PTE_US.
pub const FL_US: u64 = 1 << 2;
/// DMA_FL_PTE_ACCESS.
pub const FL_ACCESS: u64 = 1 << 5;
/// DMA_FL_PTE_DIRTY.
pub const FL_DIRTY: u64 = 1 << 6;
/// A first-stage non-leaf entry: READ | WRITE | US | ACCESS.
pub const FL_TABLE: u64 = DMA_PTE_READ | DMA_PTE_WRITE | FL_US | FL_ACCESS;
/// A first-stage leaf: its prot with PRESENT | US | ACCESS, and DIRTY when writable.
pub const fn fl_leaf(writable: bool) -> u64 {
    let base = DMA_PTE_READ | FL_PRESENT | FL_US | FL_ACCESS;
    if writable {
        base | DMA_PTE_WRITE | FL_DIRTY
    } else {
        base
    }
}
/// A second-stage non-leaf entry.
pub const SL_TABLE: u64 = DMA_PTE_READ | DMA_PTE_WRITE;
/// A second-stage leaf: its prot.
pub const fn sl_leaf(writable: bool) -> u64 {
    if writable {
        DMA_PTE_READ | DMA_PTE_WRITE
    } else {
        DMA_PTE_READ
    }
}

/// One DMA domain's tables.
#[derive(Clone, Copy, Debug)]
pub struct DmaDomain {
    pub tree: Tree,
    pub first_stage: bool,
}

impl DmaDomain {
    /// An empty 4-level first-stage domain.
    pub fn first_stage(ram: &mut GuestRam) -> Self {
        DmaDomain {
            tree: Tree::new(ram, 4, Space::default(), FL_TABLE),
            first_stage: true,
        }
    }

    /// An empty second-stage domain of `levels` levels.
    pub fn second_stage(ram: &mut GuestRam, levels: u8) -> Self {
        DmaDomain {
            tree: Tree::new(ram, levels, Space::default(), SL_TABLE),
            first_stage: false,
        }
    }

    fn leaf(&self, writable: bool) -> u64 {
        if self.first_stage {
            fl_leaf(writable)
        } else {
            sl_leaf(writable)
        }
    }

    /// Maps the 4 KiB page at `iova` to `gpa` (`dma_map_page`); returns the PTE's address.
    pub fn map_4k(&self, ram: &mut GuestRam, iova: u64, gpa: u64, writable: bool) -> u64 {
        self.tree.map(ram, iova, gpa, 1, self.leaf(writable))
    }

    /// Maps the 2 MiB page at `iova` to `gpa` (a superpage); returns the PDE's address.
    pub fn map_2m(&self, ram: &mut GuestRam, iova: u64, gpa: u64, writable: bool) -> u64 {
        self.tree.map(ram, iova, gpa, 2, self.leaf(writable))
    }

    /// The default domain the front end would set from the guest's entries.
    pub fn domain(&self) -> DefaultDomain {
        if self.first_stage {
            DefaultDomain::FirstStage(PageTable {
                root: self.tree.root,
                levels: PagingLevels::Four,
                flags: FirstStageFlags::default(),
            })
        } else {
            DefaultDomain::SecondStage(SecondStageTable {
                root: self.tree.root,
                levels: self.tree.levels,
            })
        }
    }
}
