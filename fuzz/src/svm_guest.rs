//! The guest of the `accel_svm` target: RAM between guard areas, the x86 4/5-level first-stage
//! tables of two processes, a DMA domain (first- and second-stage identity maps) and a VT-d
//! scalable-mode PASID table (VT-d spec 9.5/9.6), laid out as Linux would before the fuzzer
//! damages them. Intel SDM vol. 3 §4.5 (x86 paging), VT-d spec 9.8 (second-stage entries).

use std::fs::File;
use std::os::unix::fs::FileExt;

use vsvm::iommu::{FirstStageFlags, PageTable, PagingLevels, SecondStageTable};
use vsvm::mem::{Gpa, GuestMemory};
use vsvm::vfio_user::DmaMapRequest;
use vsvm::vtd::pasid::{
    dir_index, table_index, PasidDirEntry, PasidEntry0, PasidEntry1, PasidEntry2, Pgtt,
    PASID_DIR_ENTRY_BYTES, PASID_ENTRY_BYTES,
};

use crate::{sealed_memfd, PAGE};

/// Guest RAM: mapped read-write at GPA 0.
pub const RAM_PAGES: u64 = 64;
/// Pages of each guard: one below RAM in the memfd that is never mapped, one above RAM that
/// the guest sees read-only (a device or IOMMU write there is a bug).
pub const GUARD_PAGES: u64 = 2;
/// What the guards hold; they must hold it after every run.
pub const SENTINEL: u8 = 0xa5;
/// Bytes of guest-physical space that hold anything (RAM, then the read-only guard); above
/// it nothing is mapped.
pub const MAPPED_BYTES: u64 = (RAM_PAGES + GUARD_PAGES) * PAGE;

/// Untagged completion records (the fence at the end of a run).
pub const RECORDS_PAGE: u64 = 0;
/// Ring of queue n: page `RINGS_PAGE + n` (untagged space).
pub const RINGS_PAGE: u64 = 1;
/// Table pages (first-stage, second-stage, PASID): what "damage a table" aims at.
pub const TABLES: std::ops::Range<u64> = 3..22;
/// The processes' tables: PML5, PML4, PDPT, PD, PT (five pages each).
const PROCESS_TABLES: [u64; 2] = [3, 8];
/// The DMA domain's first-stage identity map: PML4, PDPT, PD, PT.
const DMA_FIRST_STAGE: u64 = 13;
/// The DMA domain's second-stage identity map (3 levels): L3, L2, L1.
const DMA_SECOND_STAGE: u64 = 17;
/// The guest's PASID directory and its one PASID table.
pub const PASID_DIR_PAGE: u64 = 20;
const PASID_TABLE_PAGE: u64 = 21;
/// The processes' data: process n's window page i is RAM page `PROCESS_DATA[n] + i`.
const PROCESS_DATA: [u64; 2] = [24, 40];
/// Pages above both windows: what a page fault brings in.
pub const SPARE_PAGES: std::ops::Range<u64> = 56..RAM_PAGES;

/// The two processes' PASIDs (one PASID table, one directory entry).
pub const PASIDS: [u32; 2] = [1, 2];
/// Bits of PASID the guest's PASID directory covers.
pub const PASID_BITS: u8 = 8;
/// Where each process's window starts (PML4 index 254, as a user stack or mmap area).
pub const WINDOW_VA: u64 = 0x7f00_0000_0000;
/// Pages in each window (one page table).
pub const WINDOW_PAGES: u64 = 16;

// x86 paging entry bits (SDM vol. 3 table 4-19).
/// Present.
pub const PTE_PRESENT: u64 = 1 << 0;
/// Writable.
pub const PTE_RW: u64 = 1 << 1;
/// User-accessible.
pub const PTE_USER: u64 = 1 << 2;
/// Page size (a leaf above level 1).
pub const PTE_PSE: u64 = 1 << 7;
/// What Linux's `_PAGE_TABLE` needs here: non-leaf entries.
const PTE_TABLE: u64 = PTE_PRESENT | PTE_RW | PTE_USER;
/// A user page as mmap(PROT_READ | PROT_WRITE) leaves it.
pub const PTE_USER_RW: u64 = PTE_PRESENT | PTE_RW | PTE_USER;
/// Frame address bits of an entry (the unit's 48-bit address width).
pub const PTE_FRAME: u64 = 0x0000_ffff_ffff_f000;

// VT-d second-stage entry bits (VT-d spec 9.8).
const SS_READ: u64 = 1 << 0;
const SS_WRITE: u64 = 1 << 1;

/// Table entries per page.
const ENTRIES: u64 = PAGE / 8;

fn index(va: u64, level: u32) -> u64 {
    (va >> (12 + 9 * (level - 1))) & (ENTRIES - 1)
}

fn gpa(page: u64) -> u64 {
    page * PAGE
}

/// Guest RAM's memfd: guard, RAM, guard, with the guards holding [`SENTINEL`].
pub fn guarded_memfd() -> File {
    let memfd = sealed_memfd((GUARD_PAGES + RAM_PAGES + GUARD_PAGES) * PAGE);
    let guard = vec![SENTINEL; (GUARD_PAGES * PAGE) as usize];
    memfd.write_all_at(&guard, 0).expect("lower guard");
    let upper = (GUARD_PAGES + RAM_PAGES) * PAGE;
    memfd.write_all_at(&guard, upper).expect("upper guard");
    memfd
}

/// The client's DMA maps of [`guarded_memfd`]: RAM read-write at GPA 0, the upper guard
/// read-only above it.
pub fn dma_maps() -> [DmaMapRequest; 2] {
    [
        DmaMapRequest {
            address: 0,
            size: RAM_PAGES * PAGE,
            fd_offset: GUARD_PAGES * PAGE,
            readable: true,
            writable: true,
        },
        DmaMapRequest {
            address: RAM_PAGES * PAGE,
            size: GUARD_PAGES * PAGE,
            fd_offset: (GUARD_PAGES + RAM_PAGES) * PAGE,
            readable: true,
            writable: false,
        },
    ]
}

/// Whether both guards still hold nothing but [`SENTINEL`] (read from the memfd itself, not
/// through any map).
pub fn guards_intact(memfd: &File) -> bool {
    let mut guard = vec![0; (GUARD_PAGES * PAGE) as usize];
    [0, (GUARD_PAGES + RAM_PAGES) * PAGE].iter().all(|&at| {
        memfd.read_exact_at(&mut guard, at).is_ok() && guard.iter().all(|&b| b == SENTINEL)
    })
}

/// One process of the guest.
#[derive(Clone, Copy, Debug)]
pub struct Process(usize);

impl Process {
    /// Process `n` (0 or 1).
    pub fn new(n: usize) -> Self {
        Process(n % PASIDS.len())
    }

    /// Its PASID.
    pub fn pasid(self) -> u32 {
        PASIDS[self.0]
    }

    fn table(self, level: u32) -> u64 {
        // PML5 first, PT last.
        PROCESS_TABLES[self.0] + u64::from(5 - level)
    }

    /// Its table for `bind`: CR3 (the PML4) or, with `five`, the PML5 above it.
    pub fn page_table(self, five: bool, flags: FirstStageFlags) -> PageTable {
        let (root, levels) = if five {
            (self.table(5), PagingLevels::Five)
        } else {
            (self.table(4), PagingLevels::Four)
        };
        PageTable {
            root: gpa(root),
            levels,
            flags,
        }
    }

    /// Virtual address of window page `i`.
    pub fn va(self, i: u64) -> u64 {
        WINDOW_VA + (i % WINDOW_PAGES) * PAGE
    }

    /// The RAM page window page `i` maps when the guest lays it out.
    pub fn data_page(self, i: u64) -> u64 {
        PROCESS_DATA[self.0] + i % WINDOW_PAGES
    }

    /// Guest-physical address of the PTE of window page `i`.
    pub fn pte_addr(self, i: u64) -> u64 {
        gpa(self.table(1)) + index(self.va(i), 1) * 8
    }

    /// The window page holding guest-physical `addr`, as laid out, if any.
    pub fn window_page_of(self, addr: u64) -> Option<u64> {
        let page = addr / PAGE;
        let first = PROCESS_DATA[self.0];
        (first..first + WINDOW_PAGES)
            .contains(&page)
            .then(|| page - first)
    }

    /// Writes the process's tables: every level down to one page table, with window page `i`
    /// present when bit `i` of `present` is set.
    fn build(self, mem: &GuestMemory, present: u16) {
        for level in 2..=5 {
            let slot = gpa(self.table(level)) + index(WINDOW_VA, level) * 8;
            write(mem, slot, gpa(self.table(level - 1)) | PTE_TABLE);
        }
        for i in 0..WINDOW_PAGES {
            let pte = if present & (1 << i) != 0 {
                gpa(self.data_page(i)) | PTE_USER_RW
            } else {
                0
            };
            write(mem, self.pte_addr(i), pte);
        }
    }
}

fn write(mem: &GuestMemory, at: u64, value: u64) {
    // Only inside RAM, which is mapped: cannot fail.
    let _ = mem.write_u64(Gpa(at), value);
}

/// The DMA domain as a first-stage table (scalable mode, PGTT first-stage): identity over
/// everything mapped, the read-only guard read-only.
pub fn dma_first_stage() -> PageTable {
    PageTable {
        root: gpa(DMA_FIRST_STAGE),
        levels: PagingLevels::Four,
        flags: FirstStageFlags {
            supervisor: true,
            ..FirstStageFlags::default()
        },
    }
}

/// The DMA domain as a 3-level second-stage table (legacy mode): identity over everything
/// mapped, the read-only guard read-only.
pub fn dma_second_stage(levels: u8) -> SecondStageTable {
    SecondStageTable {
        root: gpa(DMA_SECOND_STAGE),
        levels,
    }
}

fn build_dma_domain(mem: &GuestMemory) {
    for level in 2..=4u64 {
        let table = gpa(DMA_FIRST_STAGE + 4 - level);
        write(mem, table, (table + PAGE) | PTE_TABLE);
    }
    for level in 2..=3u64 {
        let table = gpa(DMA_SECOND_STAGE + 3 - level);
        write(mem, table, (table + PAGE) | SS_READ | SS_WRITE);
    }
    let (fs_pt, ss_l1) = (gpa(DMA_FIRST_STAGE + 3), gpa(DMA_SECOND_STAGE + 2));
    for page in 0..MAPPED_BYTES / PAGE {
        let writable = page < RAM_PAGES;
        let fs_rw = if writable { PTE_RW } else { 0 };
        write(
            mem,
            fs_pt + page * 8,
            gpa(page) | PTE_PRESENT | PTE_USER | fs_rw,
        );
        let ss_w = if writable { SS_WRITE } else { 0 };
        write(mem, ss_l1 + page * 8, gpa(page) | SS_READ | ss_w);
    }
}

/// The guest's PASID table: both processes' PASIDs first-stage only, 4-level.
fn build_pasid_table(mem: &GuestMemory) {
    let dir = PasidDirEntry::new()
        .with_present(true)
        .with_smptblptr(PASID_TABLE_PAGE);
    for n in 0..PASIDS.len() {
        let process = Process::new(n);
        let pasid = process.pasid();
        let dir_slot = gpa(PASID_DIR_PAGE) + dir_index(pasid) * PASID_DIR_ENTRY_BYTES;
        write(mem, dir_slot, dir.into_bits());
        let entry = gpa(PASID_TABLE_PAGE) + table_index(pasid) * PASID_ENTRY_BYTES;
        let e0 = PasidEntry0::new()
            .with_present(true)
            .with_pgtt(Pgtt::FirstStage);
        let e1 = PasidEntry1::new().with_did(1 + n as u16);
        let e2 = PasidEntry2::new()
            .with_sre(true)
            .with_fsptptr(process.table(4));
        for (i, word) in [e0.into_bits(), e1.into_bits(), e2.into_bits()]
            .into_iter()
            .enumerate()
        {
            write(mem, entry + i as u64 * 8, word);
        }
    }
}

/// Lays the guest out in `mem` (RAM mapped at GPA 0): zeroes RAM, then writes every table;
/// window page `i` of process `n` is present when bit `i` of `present[n]` is set.
pub fn build(mem: &GuestMemory, present: [u16; 2]) {
    let _ = mem.write(Gpa(0), &vec![0; (RAM_PAGES * PAGE) as usize]);
    for (n, present) in present.into_iter().enumerate() {
        Process::new(n).build(mem, present);
    }
    build_dma_domain(mem);
    build_pasid_table(mem);
}
