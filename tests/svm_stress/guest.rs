//! The guest's memory as the stress test keeps it: one x86 process per PASID (records, batch
//! lists, a data arena and a canary page in its address space), the arena's pages as the mm
//! knows them (present, swapped out, zapped), a count per arena page of the mutator's changes
//! to its PTE (a page the fault handler maps is not "touched": the device asked for it), and
//! the guest's free frames, poisoned and kept a while before reuse, so that a device write
//! through a translation the guest already invalidated shows up.

use std::collections::{BTreeMap, VecDeque};

use vsvm::iommu::{FirstStageFlags, PageResponseCode, PageTable};
use vsvm::mem::Gpa;

use crate::common_vtd::process::Process;
use crate::common_vtd::{GuestRam, PAGE, PAGE_PRESENT, PAGE_RW, PAGE_USER_RW};
use crate::rng::Rng;

/// Completion records of the process (never touched by the mutator).
pub const RECORDS_VA: u64 = 0x7f00_0000_0000;
pub const RECORD_PAGES: u64 = 4;
/// BATCH descriptor lists (never touched by the mutator).
pub const LISTS_VA: u64 = 0x7f08_0000_0000;
pub const LIST_PAGES: u64 = 2;
/// Data of the jobs: the pages the mutator plays with.
pub const ARENA_VA: u64 = 0x7f10_0000_0000;
pub const ARENA_PAGES: usize = 32;
/// A page no descriptor names: it must keep its pattern.
pub const CANARY_VA: u64 = 0x7f18_0000_0000;
/// The PASID bound with supervisor requests allowed (SRE, with WPE: supervisor writes honour
/// read-only pages); the others refuse privileged requests.
pub const SUPERVISOR_PASID: u32 = 0xf_ffff;

/// What backs an arena page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backing {
    Present {
        frame: u64,
        writable: bool,
    },
    /// PTE not present, the frame kept for the next fault (swap).
    Swapped {
        frame: u64,
    },
    /// PTE clear, no frame: the next fault gets a fresh zeroed page.
    Zapped,
}

#[derive(Clone, Debug)]
struct ArenaPage {
    /// RAM address of the PTE.
    slot: u64,
    backing: Backing,
    /// Bumped on every change the mutator makes.
    touches: u64,
    /// Swapped out or write-protected, invalidated: what the frame held then. The device may
    /// not write it until the guest maps the page writable again.
    sealed: Option<Vec<u8>>,
}

struct Proc {
    process: Process,
    arena: Vec<ArenaPage>,
    records: u64,
    lists: u64,
    canary: u64,
}

/// Counters of what the guest did.
#[derive(Clone, Copy, Debug, Default)]
pub struct GuestStats {
    pub faults_in: u64,
    pub zaps: u64,
    pub swaps: u64,
    pub protects: u64,
}

/// The guest's memory.
pub struct Guest {
    pub ram: GuestRam,
    procs: BTreeMap<u32, Proc>,
    /// Free frames, poisoned, oldest first.
    free: VecDeque<u64>,
    /// What went wrong on the way (a free frame written before its reuse).
    broken: Vec<String>,
    pub stats: GuestStats,
}

/// Free frames kept poisoned before one is reused.
const QUARANTINE: usize = 12;

/// The 8-byte words a free frame holds: unique per frame, so that even a copy from another
/// free frame is caught.
fn poison(frame: u64) -> Vec<u8> {
    (0..PAGE / 8)
        .flat_map(|i| (0xdead_0000_0000_0000 ^ frame ^ i).to_le_bytes())
        .collect()
}

fn canary(pasid: u32) -> Vec<u8> {
    crate::accel_driver::pattern(PAGE as usize, 0x3c ^ pasid as u8)
}

/// The arena page holding `va`.
pub fn arena_page(va: u64) -> Option<usize> {
    let i = va.checked_sub(ARENA_VA)? / PAGE;
    (i < ARENA_PAGES as u64).then_some(i as usize)
}

/// The VA of arena page `i`.
pub fn arena_va(i: usize) -> u64 {
    ARENA_VA + i as u64 * PAGE
}

impl Guest {
    /// A process for each of `pasids`, records, lists and canary mapped, the arena mapped
    /// except `lazy_percent` of its pages (populated on fault).
    pub fn new(mut ram: GuestRam, pasids: &[u32], lazy_percent: u64, rng: &mut Rng) -> Self {
        let mut procs = BTreeMap::new();
        for &pasid in pasids {
            let process = Process::new(&mut ram, false);
            let map_block = |ram: &mut GuestRam, va: u64, pages: u64| {
                let block = ram.alloc(pages);
                for i in 0..pages {
                    process.map_4k(ram, va + i * PAGE, block + i * PAGE, PAGE_USER_RW);
                }
                block
            };
            let records = map_block(&mut ram, RECORDS_VA, RECORD_PAGES);
            let lists = map_block(&mut ram, LISTS_VA, LIST_PAGES);
            let canary_frame = map_block(&mut ram, CANARY_VA, 1);
            ram.mem.write(Gpa(canary_frame), &canary(pasid)).unwrap();
            let mut arena = Vec::new();
            for i in 0..ARENA_PAGES {
                let frame = ram.page();
                let slot = process.map_4k(&mut ram, arena_va(i), frame, PAGE_USER_RW);
                let mut backing = Backing::Present {
                    frame,
                    writable: true,
                };
                if rng.chance(lazy_percent) {
                    ram.write(slot, 0);
                    backing = Backing::Zapped;
                }
                arena.push(ArenaPage {
                    slot,
                    backing,
                    touches: 0,
                    sealed: None,
                });
            }
            let proc = Proc {
                process,
                arena,
                records,
                lists,
                canary: canary_frame,
            };
            procs.insert(pasid, proc);
        }
        Guest {
            ram,
            procs,
            free: VecDeque::new(),
            broken: Vec::new(),
            stats: GuestStats::default(),
        }
    }

    fn proc(&self, pasid: u32) -> &Proc {
        &self.procs[&pasid]
    }

    /// The table `bind` takes for `pasid`.
    pub fn page_table(&self, pasid: u32) -> PageTable {
        let supervisor = pasid == SUPERVISOR_PASID;
        let flags = FirstStageFlags {
            supervisor,
            write_protect: supervisor,
            ..FirstStageFlags::default()
        };
        self.proc(pasid).process.page_table(flags)
    }

    /// GPA of the record at `va` (in the records pages).
    pub fn record_gpa(&self, pasid: u32, va: u64) -> u64 {
        self.proc(pasid).records + (va - RECORDS_VA)
    }

    /// GPA of the list byte at `va` (in the list pages).
    pub fn list_gpa(&self, pasid: u32, va: u64) -> u64 {
        self.proc(pasid).lists + (va - LISTS_VA)
    }

    /// How often the mutator changed arena page `i` of `pasid`.
    pub fn touches(&self, pasid: u32, i: usize) -> u64 {
        self.proc(pasid).arena[i].touches
    }

    pub fn backing(&self, pasid: u32, i: usize) -> Backing {
        self.proc(pasid).arena[i].backing
    }

    /// GPA of arena byte `va`, when its page is present.
    fn arena_gpa(&self, pasid: u32, va: u64) -> Option<u64> {
        match self.backing(pasid, arena_page(va)?) {
            Backing::Present { frame, .. } => Some(frame + (va & (PAGE - 1))),
            _ => None,
        }
    }

    /// The pieces of `[va, va + len)` in arena pages: (page, offset in it, range of the
    /// buffer).
    fn pieces(va: u64, len: usize) -> Vec<(usize, u64, std::ops::Range<usize>)> {
        let mut out = Vec::new();
        let mut done = 0;
        while done < len {
            let at = va + done as u64;
            let n = ((PAGE - (at & (PAGE - 1))) as usize).min(len - done);
            let page = arena_page(at).expect("an arena address");
            out.push((page, at & (PAGE - 1), done..done + n));
            done += n;
        }
        out
    }

    /// The process writes `data` at `va` of the arena, into the frames of present and
    /// swapped-out pages; returns what the range then holds as the device will see it
    /// (zeros where a page is zapped: it will fault in as a fresh page).
    pub fn write_arena(&mut self, pasid: u32, va: u64, data: &[u8]) -> Vec<u8> {
        let mut content = data.to_vec();
        for (page, offset, range) in Self::pieces(va, data.len()) {
            match self.backing(pasid, page) {
                Backing::Present { frame, .. } | Backing::Swapped { frame } => {
                    let at = Gpa(frame + offset);
                    self.ram.mem.write(at, &data[range.clone()]).unwrap();
                    // The CPU may write what the device may not.
                    let arena = &mut self.procs.get_mut(&pasid).unwrap().arena;
                    if let Some(sealed) = &mut arena[page].sealed {
                        let offset = offset as usize;
                        sealed[offset..offset + range.len()].copy_from_slice(&data[range]);
                    }
                }
                Backing::Zapped => content[range].fill(0),
            }
        }
        content
    }

    /// The process reads `len` bytes at `va` of the arena, when every page is present.
    pub fn read_arena(&self, pasid: u32, va: u64, len: usize) -> Option<Vec<u8>> {
        let mut out = vec![0; len];
        for (_, offset, range) in Self::pieces(va, len) {
            let gpa = self.arena_gpa(pasid, va + range.start as u64)?;
            debug_assert_eq!(gpa & (PAGE - 1), offset);
            self.ram.mem.read(Gpa(gpa), &mut out[range]).unwrap();
        }
        Some(out)
    }

    /// A zeroed frame: the oldest free one once enough are free (it must still hold its
    /// poison), else a new one.
    fn take_frame(&mut self) -> u64 {
        if self.free.len() <= QUARANTINE {
            return self.ram.page();
        }
        let frame = self.free.pop_front().unwrap();
        if let Some(wrong) = self.poisoned(frame) {
            self.broken.push(wrong);
        }
        self.ram.mem.write(Gpa(frame), &[0; PAGE as usize]).unwrap();
        frame
    }

    /// What is wrong with free `frame`, if it lost its poison.
    fn poisoned(&self, frame: u64) -> Option<String> {
        let mut buf = vec![0; PAGE as usize];
        self.ram.mem.read(Gpa(frame), &mut buf).unwrap();
        let at = buf.iter().zip(poison(frame)).position(|(a, b)| *a != b)?;
        Some(format!(
            "free frame {frame:#x} was written after its invalidation (byte {at:#x})"
        ))
    }

    /// The guest's page fault handler for a device access at `va`: Success once the page is
    /// mapped with the access allowed (`None`: the address is not one any job names). With
    /// `mutator`, the mutator maps it: that touches the page.
    pub fn fault_in(
        &mut self,
        pasid: u32,
        va: u64,
        write: bool,
        mutator: bool,
    ) -> Option<PageResponseCode> {
        if !self.procs.contains_key(&pasid) {
            return None;
        }
        let Some(i) = arena_page(va) else {
            let fixed = [(RECORDS_VA, RECORD_PAGES), (LISTS_VA, LIST_PAGES)];
            let known = fixed
                .iter()
                .any(|&(base, pages)| (base..base + pages * PAGE).contains(&va));
            // Always present: a request there means the device saw what the guest never did.
            return known.then_some(PageResponseCode::Success);
        };
        let page = self.proc(pasid).arena[i].clone();
        let (frame, pte) = match page.backing {
            Backing::Present { writable: true, .. } => return Some(PageResponseCode::Success),
            Backing::Present {
                writable: false, ..
            } if !write => return Some(PageResponseCode::Success),
            Backing::Present { frame, .. } | Backing::Swapped { frame } => {
                self.unseal(pasid, i, frame);
                (frame, self.ram.read(page.slot) | PAGE_PRESENT | PAGE_RW)
            }
            Backing::Zapped => {
                let frame = self.take_frame();
                (frame, frame | PAGE_USER_RW)
            }
        };
        self.ram.write(page.slot, pte);
        let backing = Backing::Present {
            frame,
            writable: true,
        };
        self.set(pasid, i, backing, mutator);
        self.stats.faults_in += 1;
        Some(PageResponseCode::Success)
    }

    fn set(&mut self, pasid: u32, i: usize, backing: Backing, touch: bool) {
        let page = &mut self.procs.get_mut(&pasid).unwrap().arena[i];
        page.backing = backing;
        page.touches += u64::from(touch);
    }

    /// Zaps arena page `i` (MADV_DONTNEED): the PTE is cleared; the frame it had is returned,
    /// to be released once the TLBs are invalidated.
    pub fn zap(&mut self, pasid: u32, i: usize) -> Option<u64> {
        let page = self.proc(pasid).arena[i].clone();
        let frame = match page.backing {
            Backing::Present { frame, .. } | Backing::Swapped { frame } => frame,
            Backing::Zapped => return None,
        };
        self.unseal(pasid, i, frame);
        self.ram.write(page.slot, 0);
        self.set(pasid, i, Backing::Zapped, true);
        self.stats.zaps += 1;
        Some(frame)
    }

    /// Swaps arena page `i` out: its PTE loses Present, the frame stays for the next fault.
    pub fn swap_out(&mut self, pasid: u32, i: usize) -> bool {
        let page = self.proc(pasid).arena[i].clone();
        let Backing::Present { frame, .. } = page.backing else {
            return false;
        };
        self.ram
            .write(page.slot, self.ram.read(page.slot) & !PAGE_PRESENT);
        self.set(pasid, i, Backing::Swapped { frame }, true);
        self.stats.swaps += 1;
        true
    }

    /// Write-protects arena page `i` (as for copy-on-write).
    pub fn write_protect(&mut self, pasid: u32, i: usize) -> bool {
        let page = self.proc(pasid).arena[i].clone();
        let Backing::Present {
            frame,
            writable: true,
        } = page.backing
        else {
            return false;
        };
        self.ram
            .write(page.slot, self.ram.read(page.slot) & !PAGE_RW);
        let backing = Backing::Present {
            frame,
            writable: false,
        };
        self.set(pasid, i, backing, true);
        self.stats.protects += 1;
        true
    }

    /// After the invalidation of a swap-out or write-protect of page `i`: what the frame
    /// holds now must stay.
    pub fn seal(&mut self, pasid: u32, i: usize) {
        let frame = match self.backing(pasid, i) {
            Backing::Present {
                frame,
                writable: false,
            }
            | Backing::Swapped { frame } => frame,
            _ => return,
        };
        let mut content = vec![0; PAGE as usize];
        self.ram.mem.read(Gpa(frame), &mut content).unwrap();
        self.procs.get_mut(&pasid).unwrap().arena[i].sealed = Some(content);
    }

    /// Page `i` becomes writable again (or goes): it must have kept its sealed content.
    fn unseal(&mut self, pasid: u32, i: usize, frame: u64) {
        let Some(sealed) = self.procs.get_mut(&pasid).unwrap().arena[i].sealed.take() else {
            return;
        };
        if let Some(wrong) = self.sealed_wrong(pasid, i, frame, &sealed) {
            self.broken.push(wrong);
        }
    }

    fn sealed_wrong(&self, pasid: u32, i: usize, frame: u64, sealed: &[u8]) -> Option<String> {
        let mut now = vec![0; PAGE as usize];
        self.ram.mem.read(Gpa(frame), &mut now).unwrap();
        let at = now.iter().zip(sealed).position(|(a, b)| a != b)?;
        Some(format!(
            "arena page {i} of PASID {pasid:#x} (frame {frame:#x}) was written while swapped \
             out or write-protected (byte {at:#x})"
        ))
    }

    /// Gives a zapped page's frame back to the allocator (after the TLB invalidation): it is
    /// poisoned until reused.
    pub fn release(&mut self, frame: u64) {
        self.ram.mem.write(Gpa(frame), &poison(frame)).unwrap();
        self.free.push_back(frame);
    }

    /// Canaries intact, free frames still poisoned: what is wrong, if anything.
    pub fn check(&self) -> Vec<String> {
        let mut wrong = self.broken.clone();
        let mut buf = vec![0; PAGE as usize];
        for (pasid, proc) in &self.procs {
            self.ram.mem.read(Gpa(proc.canary), &mut buf).unwrap();
            if buf != canary(*pasid) {
                wrong.push(format!("canary page of PASID {pasid:#x} was written"));
            }
        }
        wrong.extend(self.free.iter().filter_map(|&f| self.poisoned(f)));
        for (pasid, proc) in &self.procs {
            for (i, page) in proc.arena.iter().enumerate() {
                let frame = match page.backing {
                    Backing::Present { frame, .. } | Backing::Swapped { frame } => frame,
                    Backing::Zapped => continue,
                };
                if let Some(sealed) = &page.sealed {
                    wrong.extend(self.sealed_wrong(*pasid, i, frame, sealed));
                }
            }
        }
        wrong
    }
}
