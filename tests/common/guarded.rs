//! Guest RAM with guard pages on both sides, to prove that nothing the server does for a hostile
//! guest writes outside the guest's mapped RAM.
//!
//! The memfd is laid out `[guard | RAM | guard]` and guest-physical addresses equal memfd
//! offsets, so RAM is GPA `[GUARD, GUARD + size)`. A map of the whole memfd is given to the
//! server and the two guards are unmapped again (DMA_UNMAP of a part of a map keeps the
//! server's one host mapping and slices the region), which leaves:
//! - the guards outside the DMA map: an access there by guest-physical address is refused
//!   by the map table;
//! - the guards still inside the server's host mapping, right before and after RAM, made
//!   `PROT_NONE` by [`GuardedRam::arm`]: a host pointer that runs off either end of RAM faults
//!   (SIGSEGV kills the test);
//! - the guards filled with a sentinel in the memfd itself, checked by
//!   [`GuardedRam::assert_intact`]: catches writes through any other mapping of the memfd.
#![allow(dead_code)] // each test crate takes what it needs
#![allow(unsafe_code)] // mprotect of the guards, below

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU32, Ordering};

use vsvm::mem::{Gpa, GuestMemory};
use vsvm::vfio_user::{DmaMapRequest, DmaUnmapRequest};

/// Bytes of guard on each side of RAM (16 pages).
pub const GUARD: u64 = 16 * 4096;
/// What the guards hold.
pub const SENTINEL: u8 = 0xa5;

/// Makes each memfd's name unique, so that its mappings can be told apart in /proc/self/maps.
static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// A memfd holding guest RAM between two guards.
pub struct GuardedRam {
    /// The memfd: guard, RAM, guard (offset = guest-physical address).
    pub memfd: File,
    /// Bytes of RAM.
    pub size: u64,
    name: String,
}

impl GuardedRam {
    /// `size` bytes of zeroed RAM (a multiple of the page size) between sentinel guards.
    pub fn new(size: u64) -> Self {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let name = format!("guarded-ram-{}-{id}", std::process::id());
        let memfd = super::ram::named_sealed_memfd(&name, GUARD + size + GUARD);
        let guard = vec![SENTINEL; GUARD as usize];
        memfd.write_all_at(&guard, 0).unwrap();
        memfd.write_all_at(&guard, GUARD + size).unwrap();
        GuardedRam { memfd, size, name }
    }

    /// First guest-physical address of RAM.
    pub fn start(&self) -> u64 {
        GUARD
    }

    /// First guest-physical address past RAM.
    pub fn end(&self) -> u64 {
        GUARD + self.size
    }

    /// Bytes of the whole memfd.
    fn total(&self) -> u64 {
        GUARD + self.size + GUARD
    }

    /// The map of the whole memfd at GPA 0 (guards included) a client would send.
    pub fn whole_map(&self) -> DmaMapRequest {
        DmaMapRequest {
            address: 0,
            size: self.total(),
            fd_offset: 0,
            readable: true,
            writable: true,
        }
    }

    /// The two unmaps that leave only RAM mapped.
    pub fn guard_unmaps(&self) -> [DmaUnmapRequest; 2] {
        [
            DmaUnmapRequest::Range {
                address: 0,
                size: GUARD,
            },
            DmaUnmapRequest::Range {
                address: self.end(),
                size: GUARD,
            },
        ]
    }

    /// Guest memory holding exactly RAM (mapped into this process from the memfd), with the
    /// guards armed.
    pub fn memory(&self) -> GuestMemory {
        let mem = GuestMemory::new();
        let fd = self.memfd.try_clone().unwrap();
        mem.map(&self.whole_map(), Some(fd.into())).unwrap();
        for unmap in self.guard_unmaps() {
            mem.unmap(&unmap).unwrap();
        }
        self.arm();
        mem
    }

    /// Makes the guards of every mapping of the whole memfd in this process inaccessible
    /// (call after each new map of it, e.g. a device's). Returns how many mappings it armed.
    pub fn arm(&self) -> usize {
        let mut armed = 0;
        for (start, len) in self.whole_mappings() {
            for at in [start, start + (GUARD + self.size) as usize] {
                // SAFETY: 1. `at..at + GUARD` lies inside a live shared mapping of our own
                // memfd (found in /proc/self/maps just now, covering the whole memfd), in a
                // part no DMA map covers any more, so no code of the server may access it.
                // 2. No Rust reference to mapped guest memory is ever formed (mem/mapping.rs
                // invariant), so none can point into the pages made inaccessible. 3. Changing
                // protection does not unmap anything: the owner's munmap later is unaffected.
                unsafe {
                    rustix::mm::mprotect(
                        at as *mut std::ffi::c_void,
                        GUARD as usize,
                        rustix::mm::MprotectFlags::empty(),
                    )
                }
                .unwrap();
            }
            debug_assert_eq!(len as u64, self.total());
            armed += 1;
        }
        armed
    }

    /// Mappings of the whole memfd in this process: (start address, length).
    fn whole_mappings(&self) -> Vec<(usize, usize)> {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        maps.lines()
            .filter(|line| self.names_this_memfd(line))
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let range = fields.next()?;
                let _perms = fields.next()?;
                let offset = u64::from_str_radix(fields.next()?, 16).ok()?;
                let (lo, hi) = range.split_once('-')?;
                let lo = usize::from_str_radix(lo, 16).ok()?;
                let hi = usize::from_str_radix(hi, 16).ok()?;
                (offset == 0 && (hi - lo) as u64 == self.total()).then_some((lo, hi - lo))
            })
            .collect()
    }

    /// Whether a /proc/self/maps line is a mapping of this memfd (its name is followed by
    /// " (deleted)" or nothing, so "…-1" does not match "…-10").
    fn names_this_memfd(&self, line: &str) -> bool {
        let marker = format!("/memfd:{}", self.name);
        line.ends_with(&marker) || line.contains(&format!("{marker} "))
    }

    /// Host ranges of this memfd's mappings that are inaccessible (`---p`/`---s`), for
    /// checking that the guards are in place.
    pub fn inaccessible_ranges(&self) -> Vec<(usize, usize)> {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        maps.lines()
            .filter(|line| self.names_this_memfd(line))
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let (lo, hi) = fields.next()?.split_once('-')?;
                let perms = fields.next()?;
                perms.starts_with("---").then(|| {
                    let lo = usize::from_str_radix(lo, 16).unwrap();
                    let hi = usize::from_str_radix(hi, 16).unwrap();
                    (lo, hi - lo)
                })
            })
            .collect()
    }

    /// Whether both guards still hold only the sentinel.
    pub fn intact(&self) -> bool {
        let mut buf = vec![0; GUARD as usize];
        [0, self.end()].iter().all(|&at| {
            self.memfd.read_exact_at(&mut buf, at).unwrap();
            buf.iter().all(|&b| b == SENTINEL)
        })
    }

    /// Fails the test when anything wrote into a guard.
    pub fn assert_intact(&self) {
        assert!(self.intact(), "a write landed outside guest RAM");
    }

    /// Whether `gpa` is refused by `mem` (outside every map).
    pub fn refused(mem: &GuestMemory, gpa: u64) -> bool {
        let mut byte = [0];
        mem.read(Gpa(gpa), &mut byte).is_err()
    }
}
