//! An x86 process address space as Linux's mm lays it out, for SVA tests: a 4- or 5-level
//! tree in guest RAM whose non-leaf entries are `_PAGE_TABLE` and whose leaves carry the flags
//! the test gives (without A/D, which the IOMMU sets), plus the neutral API's description of it.

use vsvm::iommu::{FirstStageFlags, PageTable, PagingLevels};

use super::{GuestRam, Space, Tree, PAGE_TABLE};

/// One process's page tables.
#[derive(Clone, Copy, Debug)]
pub struct Process {
    pub tree: Tree,
}

impl Process {
    /// An empty address space (a fresh PML4, or PML5 with `five`).
    pub fn new(ram: &mut GuestRam, five: bool) -> Self {
        let levels = if five { 5 } else { 4 };
        Process {
            tree: Tree::new(ram, levels, Space::default(), PAGE_TABLE),
        }
    }

    /// CR3 of the process.
    pub fn root(&self) -> u64 {
        self.tree.root
    }

    /// Maps the 4 KiB page at `va` to `gpa`; returns the PTE's address.
    pub fn map_4k(&self, ram: &mut GuestRam, va: u64, gpa: u64, flags: u64) -> u64 {
        self.tree.map(ram, va, gpa, 1, flags)
    }

    /// Maps the 2 MiB page at `va` to `gpa` (a PDE with PSE); returns the PDE's address.
    pub fn map_2m(&self, ram: &mut GuestRam, va: u64, gpa: u64, flags: u64) -> u64 {
        self.tree.map(ram, va, gpa, 2, flags)
    }

    /// Maps the 1 GiB page at `va` to `gpa` (a PDPE with PSE); returns the PDPE's address.
    pub fn map_1g(&self, ram: &mut GuestRam, va: u64, gpa: u64, flags: u64) -> u64 {
        self.tree.map(ram, va, gpa, 3, flags)
    }

    /// Address of the entry at `level` on the walk of `va`.
    pub fn entry(&self, ram: &GuestRam, va: u64, level: u8) -> u64 {
        self.tree.slot(ram, va, level)
    }

    /// The table as `bind` takes it.
    pub fn page_table(&self, flags: FirstStageFlags) -> PageTable {
        PageTable {
            root: self.tree.root,
            levels: if self.tree.levels == 5 {
                PagingLevels::Five
            } else {
                PagingLevels::Four
            },
            flags,
        }
    }
}
