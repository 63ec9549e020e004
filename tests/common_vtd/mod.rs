//! Test scaffolding for the VT-d model, shared by every VT-d test and the bench: memfd-backed
//! guest RAM with a page allocator, and builders that lay out root/context/PASID structures and
//! page tables exactly as Linux's intel-iommu driver and x86 mm do ([`Structures`], [`Tree`],
//! [`PasidEntryBuilder`], and [`process::Process`] for an x86 process address space); [`Vtd`]
//! drives the translator directly, [`driver::Machine`] drives a whole remapping unit through its
//! registers. The bit values are Linux's own constants
//! (drivers/iommu/intel/iommu.h, pasid.h; arch/x86 pgtable_types.h), written out here rather
//! than taken from the model, so a wrong bit position in the model cannot hide itself.
#![allow(dead_code)]

pub mod dma_domain;
pub mod driver;
#[path = "../common/guarded.rs"]
pub mod guarded;
pub mod process;
#[path = "../common/ram.rs"]
pub mod ram;

use vsvm::mem::{Gpa, GuestMemory, MemView};
use vsvm::vfio_user::DmaMapRequest;
use vsvm::vtd::translate::{RootTable, RootTableType, Translator};
use vsvm::vtd::{Access, Fault, FaultReason, Pasid, Request, SourceId, Translation, VtdConfig};

pub const PAGE: u64 = 4096;

// Root/context entries (Linux iommu.h).
pub const ROOT_PRESENT: u64 = 1;
pub const CONTEXT_PRESENT: u64 = 1;
pub const CONTEXT_FPD: u64 = 1 << 1;
pub const CONTEXT_TT_MULTI_LEVEL: u64 = 0;
pub const CONTEXT_TT_DEV_IOTLB: u64 = 1;
pub const CONTEXT_TT_PASS_THROUGH: u64 = 2;
pub const CONTEXT_SM_DTE: u64 = 1 << 2;
pub const CONTEXT_SM_PASIDE: u64 = 1 << 3;
pub const CONTEXT_SM_PRE: u64 = 1 << 4;

// PASID structures (Linux pasid.h / pasid.c).
pub const PASID_PTE_PRESENT: u64 = 1;
pub const PASID_PTE_FPD: u64 = 2;
pub const PASID_PDE_SHIFT: u32 = 6;
pub const PGTT_FL_ONLY: u64 = 1;
pub const PGTT_SL_ONLY: u64 = 2;
pub const PGTT_NESTED: u64 = 3;
pub const PGTT_PT: u64 = 4;

// Second-stage PTEs (Linux iommu.h DMA_PTE_*).
pub const DMA_PTE_READ: u64 = 1;
pub const DMA_PTE_WRITE: u64 = 2;
pub const DMA_PTE_EXEC: u64 = 4;
pub const DMA_PTE_LARGE_PAGE: u64 = 1 << 7;
pub const DMA_PTE_ACCESSED: u64 = 1 << 8;
pub const DMA_PTE_DIRTY: u64 = 1 << 9;
pub const DMA_PTE_SNP: u64 = 1 << 11;

// First-stage (x86) PTEs (arch/x86 _PAGE_*).
pub const PAGE_PRESENT: u64 = 1;
pub const PAGE_RW: u64 = 1 << 1;
pub const PAGE_USER: u64 = 1 << 2;
pub const PAGE_ACCESSED: u64 = 1 << 5;
pub const PAGE_DIRTY: u64 = 1 << 6;
pub const PAGE_PSE: u64 = 1 << 7;
pub const PAGE_EA: u64 = 1 << 10;
pub const PAGE_NX: u64 = 1 << 63;
/// x86 `_PAGE_TABLE`: what the kernel puts in user page-table (non-leaf) entries.
pub const PAGE_TABLE: u64 = PAGE_PRESENT | PAGE_RW | PAGE_USER | PAGE_ACCESSED | PAGE_DIRTY;
/// A user data page.
pub const PAGE_USER_RW: u64 = PAGE_PRESENT | PAGE_RW | PAGE_USER;

/// Memfd-backed guest RAM at GPA 0 with a bump page allocator.
pub struct GuestRam {
    pub mem: GuestMemory,
    pub size: u64,
    next: u64,
}

impl GuestRam {
    /// `size` bytes of zeroed RAM; page 0 stays unused so that 0 is never a valid table.
    pub fn new(size: u64) -> Self {
        let mem = ram::guest_memory(size);
        GuestRam {
            mem,
            size,
            next: PAGE,
        }
    }

    /// The allocator over `mem`, guest memory already mapped from GPA 0 to `size` (e.g. the
    /// same memfd a device has as its DMA map); page 0 stays unused.
    pub fn with_memory(mem: GuestMemory, size: u64) -> Self {
        GuestRam {
            mem,
            size,
            next: PAGE,
        }
    }

    /// The allocator over guarded RAM (`guarded`'s RAM mapped in `mem`): pages come from the
    /// start of RAM on, never from a guard.
    pub fn guarded(mem: GuestMemory, guarded: &guarded::GuardedRam) -> Self {
        GuestRam {
            mem,
            size: guarded.end(),
            next: guarded.start(),
        }
    }

    /// Adds a read-only map at `gpa` holding `words` (offset, value): the device can read it
    /// but not write it, so A/D updates there fail.
    pub fn map_read_only(&self, gpa: u64, size: u64, words: &[(u64, u64)]) -> u64 {
        let fd = ram::sealed_memfd(size);
        for (offset, value) in words {
            rustix::io::pwrite(&fd, &value.to_le_bytes(), *offset).unwrap();
        }
        let request = DmaMapRequest {
            address: gpa,
            size,
            fd_offset: 0,
            readable: true,
            writable: false,
        };
        self.mem.map(&request, Some(fd.into())).unwrap();
        gpa
    }

    /// A zeroed, page-aligned block of `pages` pages.
    pub fn alloc(&mut self, pages: u64) -> u64 {
        let at = self.next;
        self.next += pages * PAGE;
        assert!(self.next <= self.size, "guest RAM exhausted");
        at
    }

    /// A zeroed page.
    pub fn page(&mut self) -> u64 {
        self.alloc(1)
    }

    /// Moves the allocator to `addr` (later pages come from there on).
    pub fn skip_to(&mut self, addr: u64) {
        assert!(addr >= self.next);
        self.next = addr;
    }

    pub fn write(&self, addr: u64, value: u64) {
        self.mem.write_u64(Gpa(addr), value).unwrap();
    }

    pub fn read(&self, addr: u64) -> u64 {
        self.mem.read_u64(Gpa(addr)).unwrap()
    }

    pub fn write_u32(&self, addr: u64, value: u32) {
        self.mem.write(Gpa(addr), &value.to_le_bytes()).unwrap();
    }

    pub fn read_u32(&self, addr: u64) -> u32 {
        let mut buf = [0; 4];
        self.mem.read(Gpa(addr), &mut buf).unwrap();
        u32::from_le_bytes(buf)
    }

    pub fn set(&self, addr: u64, bits: u64) {
        self.write(addr, self.read(addr) | bits);
    }

    pub fn clear(&self, addr: u64, bits: u64) {
        self.write(addr, self.read(addr) & !bits);
    }

    pub fn view(&self) -> MemView {
        self.mem.view()
    }

    /// Fills the RAM from `bytes`, repeated.
    pub fn fill(&self, bytes: &[u8]) {
        let mut chunk = vec![0u8; self.size as usize];
        for (i, b) in chunk.iter_mut().enumerate() {
            *b = bytes[i % bytes.len()];
        }
        self.mem.write(Gpa(0), &chunk).unwrap();
    }
}

/// Where page tables live: a table at guest-physical `g` is stored at `g + offset` in RAM
/// (non-zero for first-stage tables of a nested translation whose second stage shifts
/// addresses).
#[derive(Clone, Copy, Debug, Default)]
pub struct Space {
    pub offset: u64,
}

impl Space {
    pub fn ram(self, gpa: u64) -> u64 {
        gpa + self.offset
    }
    pub fn gpa(self, ram: u64) -> u64 {
        ram - self.offset
    }
}

/// Address bits for one table level (1 = page table).
pub fn level_shift(level: u8) -> u32 {
    12 + 9 * (u32::from(level) - 1)
}

/// A page-table tree (either format: both keep the next-table/frame address in bits 51:12).
#[derive(Clone, Copy, Debug)]
pub struct Tree {
    /// Guest address of the top-level table.
    pub root: u64,
    /// Number of levels.
    pub levels: u8,
    /// Where its tables are stored.
    pub space: Space,
    /// Flags of non-leaf entries the builder creates.
    pub table_flags: u64,
}

pub const FRAME: u64 = 0x000f_ffff_ffff_f000;

impl Tree {
    /// A tree with a fresh top-level table.
    pub fn new(ram: &mut GuestRam, levels: u8, space: Space, table_flags: u64) -> Self {
        let root = space.gpa(ram.page());
        Tree {
            root,
            levels,
            space,
            table_flags,
        }
    }

    /// Maps `input` to `output` with a leaf at `leaf_level` (1 = 4 KiB, 2 = 2 MiB with PS,
    /// 3 = 1 GiB with PS), creating tables as needed. Returns the RAM address of the leaf.
    pub fn map(
        &self,
        ram: &mut GuestRam,
        input: u64,
        output: u64,
        leaf_level: u8,
        leaf_flags: u64,
    ) -> u64 {
        let mut table = self.root;
        for level in (leaf_level..=self.levels).rev() {
            let slot = self.space.ram(table) + ((input >> level_shift(level)) & 511) * 8;
            if level == leaf_level {
                // DMA_PTE_LARGE_PAGE and _PAGE_PSE are the same bit.
                let ps = if leaf_level > 1 {
                    DMA_PTE_LARGE_PAGE
                } else {
                    0
                };
                let frame = output & FRAME & !((1 << level_shift(level)) - 1);
                ram.write(slot, frame | leaf_flags | ps);
                return slot;
            }
            table = self.next_table(ram, slot);
        }
        unreachable!("leaf_level must be in 1..=levels")
    }

    /// RAM address of the entry at `level` on the walk of `input` (tables must exist).
    pub fn slot(&self, ram: &GuestRam, input: u64, level: u8) -> u64 {
        let mut table = self.root;
        for l in (level..=self.levels).rev() {
            let slot = self.space.ram(table) + ((input >> level_shift(l)) & 511) * 8;
            if l == level {
                return slot;
            }
            table = ram.read(slot) & FRAME;
        }
        unreachable!()
    }

    fn next_table(&self, ram: &mut GuestRam, slot: u64) -> u64 {
        let entry = ram.read(slot);
        if entry & FRAME != 0 {
            return entry & FRAME;
        }
        let page = self.space.gpa(ram.page());
        ram.write(slot, page | self.table_flags);
        page
    }
}

/// Where nested translation keeps its first-stage tables: [`nested_trees`] maps guest-physical
/// [0, 16 MiB) to RAM [16 MiB, 32 MiB).
pub const NEST_OFFSET: u64 = 16 << 20;

/// The two trees of a nested translation: a second stage of `ss_levels` levels mapping GPA
/// [0, 16 MiB) to RAM from [`NEST_OFFSET`] with 2 MiB leaves of `ss_flags`, and an empty
/// first-stage tree (`table_flags` in its non-leaf entries) whose tables live there, so every
/// table fetch must go through the second stage. Returns (first stage, second stage).
pub fn nested_trees(
    ram: &mut GuestRam,
    five: bool,
    ss_levels: u8,
    table_flags: u64,
    ss_flags: u64,
) -> (Tree, Tree) {
    let ss = Tree::new(
        ram,
        ss_levels,
        Space::default(),
        DMA_PTE_READ | DMA_PTE_WRITE,
    );
    for i in 0..8u64 {
        ss.map(ram, i << 21, NEST_OFFSET + (i << 21), 2, ss_flags);
    }
    ram.skip_to(NEST_OFFSET + (1 << 20));
    let space = Space {
        offset: NEST_OFFSET,
    };
    let fs = Tree::new(ram, if five { 5 } else { 4 }, space, table_flags);
    (fs, ss)
}

/// Linux's scalable-mode PASID table entry builders (intel_pasid_setup_*), as 8 words.
#[derive(Clone, Copy, Debug, Default)]
pub struct PasidEntryBuilder {
    pub val: [u64; 8],
}

impl PasidEntryBuilder {
    fn bits(mut self, word: usize, mask: u64, value: u64) -> Self {
        self.val[word] = (self.val[word] & !mask) | value;
        self
    }
    pub fn domain_id(self, did: u16) -> Self {
        self.bits(1, 0xffff, u64::from(did))
    }
    pub fn slptr(self, addr: u64) -> Self {
        self.bits(0, !0xfff, addr)
    }
    pub fn address_width(self, aw: u64) -> Self {
        self.bits(0, 0x1c, aw << 2)
    }
    pub fn translation_type(self, pgtt: u64) -> Self {
        self.bits(0, 0x1c0, pgtt << 6)
    }
    pub fn ssade(self) -> Self {
        self.bits(0, 1 << 9, 1 << 9)
    }
    pub fn ssee(self) -> Self {
        self.bits(0, 1 << 5, 1 << 5)
    }
    pub fn fault_disable(self) -> Self {
        self.bits(0, PASID_PTE_FPD, PASID_PTE_FPD)
    }
    pub fn page_snoop(self) -> Self {
        self.bits(1, 1 << 23, 1 << 23)
    }
    pub fn sre(self) -> Self {
        self.bits(2, 1, 1)
    }
    pub fn ere(self) -> Self {
        self.bits(2, 2, 2)
    }
    pub fn wpe(self) -> Self {
        self.bits(2, 1 << 4, 1 << 4)
    }
    pub fn smep(self) -> Self {
        self.bits(2, 1 << 6, 1 << 6)
    }
    pub fn flptr(self, addr: u64) -> Self {
        self.bits(2, !0xfff, addr)
    }
    pub fn flpm(self, mode: u64) -> Self {
        self.bits(2, 0xc, mode << 2)
    }
    /// Sets raw bits in word `word` (for entries Linux would never write).
    pub fn set_bits(self, word: usize, bits: u64) -> Self {
        self.bits(word, bits, bits)
    }
    pub fn present(self) -> Self {
        self.bits(0, PASID_PTE_PRESENT, PASID_PTE_PRESENT)
    }

    /// intel_pasid_setup_first_level.
    pub fn first_level(fsptptr: u64, did: u16, five_level: bool, agaw: u64) -> Self {
        let e = Self::default().flptr(fsptptr);
        let e = if five_level { e.flpm(1) } else { e };
        e.domain_id(did)
            .address_width(agaw)
            .page_snoop()
            .translation_type(PGTT_FL_ONLY)
            .present()
    }

    /// intel_pasid_setup_second_level.
    pub fn second_level(ssptptr: u64, did: u16, agaw: u64) -> Self {
        Self::default()
            .domain_id(did)
            .slptr(ssptptr)
            .address_width(agaw)
            .translation_type(PGTT_SL_ONLY)
            .page_snoop()
            .present()
    }

    /// intel_pasid_setup_nested.
    pub fn nested(fsptptr: u64, five_level: bool, ssptptr: u64, did: u16, agaw: u64) -> Self {
        let e = Self::default().flptr(fsptptr);
        let e = if five_level { e.flpm(1) } else { e };
        e.slptr(ssptptr)
            .domain_id(did)
            .address_width(agaw)
            .page_snoop()
            .translation_type(PGTT_NESTED)
            .present()
    }

    /// intel_pasid_setup_pass_through.
    pub fn pass_through(did: u16, agaw: u64) -> Self {
        Self::default()
            .domain_id(did)
            .address_width(agaw)
            .translation_type(PGTT_PT)
            .page_snoop()
            .present()
    }
}

/// Root, context and PASID structures in guest RAM, built the way Linux builds them; implemented
/// by whatever owns the RAM and knows the root table.
pub trait Structures {
    fn ram(&mut self) -> &mut GuestRam;
    /// Guest-physical address of the root table.
    fn root_addr(&self) -> u64;
    fn root_kind(&self) -> RootTableType;

    /// Address of the context entry for `sid`, creating the context table (and root entry
    /// half) as Linux's iommu_context_addr() does.
    fn context_entry(&mut self, sid: SourceId) -> u64 {
        let bus_entry = self.root_addr() + u64::from(sid.bus()) * 16;
        let mut devfn = u64::from(sid.devfn());
        let mut half = bus_entry;
        if self.root_kind() == RootTableType::Scalable {
            if devfn >= 0x80 {
                devfn -= 0x80;
                half += 8;
            }
            devfn *= 2;
        }
        let mut table = self.ram().read(half) & !0xfff;
        if self.ram().read(half) & ROOT_PRESENT == 0 {
            table = self.ram().page();
            self.ram().write(half, table | ROOT_PRESENT);
        }
        table + devfn * 16
    }

    /// domain_context_mapping_one() for a legacy context entry.
    fn legacy_context(&mut self, sid: SourceId, did: u16, pgd: u64, agaw: u64, tt: u64) -> u64 {
        let at = self.context_entry(sid);
        let mut lo = 0u64;
        let mut hi = u64::from(did) << 8;
        if tt != CONTEXT_TT_PASS_THROUGH {
            lo |= pgd & !0xfff;
        }
        hi |= agaw & 7;
        lo |= (tt & 3) << 2;
        lo |= CONTEXT_PRESENT;
        self.ram().write(at, lo);
        self.ram().write(at + 8, hi);
        at
    }

    /// context_entry_set_pasid_table(): a PASID directory for 2^20 PASIDs (PDTS 7) unless
    /// `pdts` says otherwise. Returns (context entry address, PASID directory address).
    fn sm_context(&mut self, sid: SourceId, pasid_enable: bool, pdts: u64) -> (u64, u64) {
        let at = self.context_entry(sid);
        let dir_pages = ((1u64 << (pdts + 7)) * 8).div_ceil(PAGE);
        let dir = self.ram().alloc(dir_pages);
        let mut lo = dir | (pdts << 9);
        if pasid_enable {
            lo |= CONTEXT_SM_PASIDE;
        }
        lo |= CONTEXT_PRESENT;
        self.ram().write(at, lo);
        self.ram().write(at + 8, 0); // RID_PASID = IOMMU_NO_PASID (0)
        (at, dir)
    }

    /// intel_pasid_get_entry(): the PASID table entry address, allocating the leaf table.
    fn pasid_entry_addr(&mut self, dir: u64, pasid: u32) -> u64 {
        let dir_slot = dir + u64::from(pasid >> PASID_PDE_SHIFT) * 8;
        let mut table = self.ram().read(dir_slot) & !0xfff;
        if self.ram().read(dir_slot) & PASID_PTE_PRESENT == 0 {
            table = self.ram().page();
            self.ram().write(dir_slot, table | PASID_PTE_PRESENT);
        }
        table + u64::from(pasid & 63) * 64
    }

    /// Writes a PASID table entry; returns its address.
    fn set_pasid(&mut self, dir: u64, pasid: u32, entry: PasidEntryBuilder) -> u64 {
        let at = self.pasid_entry_addr(dir, pasid);
        for (i, word) in entry.val.iter().enumerate() {
            self.ram().write(at + 8 * i as u64, *word);
        }
        at
    }

    /// context_flip_pri(): sets or clears PRE (Page Request Enable) in the scalable-mode context
    /// entry of `sid`; returns the entry's address.
    fn set_context_pre(&mut self, sid: SourceId, enable: bool) -> u64 {
        let at = self.context_entry(sid);
        let lo = self.ram().read(at) & !CONTEXT_SM_PRE;
        self.ram()
            .write(at, lo | if enable { CONTEXT_SM_PRE } else { 0 });
        at
    }
}

/// A remapping unit's structures in guest RAM plus a translator for them.
pub struct Vtd {
    pub ram: GuestRam,
    pub root: u64,
    pub kind: RootTableType,
    pub translator: Translator,
    pub config: VtdConfig,
}

pub const DEV: SourceId = SourceId::new(0, 3, 0);

impl Vtd {
    pub fn new(kind: RootTableType, config: VtdConfig) -> Self {
        let mut ram = GuestRam::new(32 << 20);
        let root = ram.page();
        Vtd {
            ram,
            root,
            kind,
            translator: Translator::new(config),
            config,
        }
    }

    pub fn scalable() -> Self {
        Self::new(RootTableType::Scalable, VtdConfig::default())
    }

    pub fn legacy() -> Self {
        Self::new(RootTableType::Legacy, VtdConfig::default())
    }

    pub fn root_table(&self) -> RootTable {
        RootTable {
            addr: self.root,
            kind: self.kind,
        }
    }

    pub fn translate(&mut self, req: &Request) -> Result<Translation, Fault> {
        let view = self.ram.view();
        let root = self.root_table();
        self.translator.translate(&view, root, req)
    }

    pub fn reason(&mut self, req: &Request) -> FaultReason {
        self.translate(req).expect_err("expected a fault").reason
    }
}

impl Structures for Vtd {
    fn ram(&mut self) -> &mut GuestRam {
        &mut self.ram
    }
    fn root_addr(&self) -> u64 {
        self.root
    }
    fn root_kind(&self) -> RootTableType {
        self.kind
    }
}

pub fn req(sid: SourceId, pasid: Option<u32>, addr: u64, access: Access) -> Request {
    Request {
        source: sid,
        pasid: pasid.map(|p| Pasid::new(p).unwrap()),
        addr,
        access,
    }
}

pub const READ: Access = Access::READ;
pub const WRITE: Access = Access::WRITE;
pub const EXEC: Access = Access {
    read: true,
    write: false,
    exec: true,
    privileged: false,
};
pub const SUP_READ: Access = Access {
    read: true,
    write: false,
    exec: false,
    privileged: true,
};
pub const SUP_WRITE: Access = Access {
    read: false,
    write: true,
    exec: false,
    privileged: true,
};
pub const SUP_EXEC: Access = Access {
    read: true,
    write: false,
    exec: true,
    privileged: true,
};
