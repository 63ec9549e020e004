//! One guest-memory fd mapped into the server: bounds-checked volatile/atomic access.
//! The only place, with fd handling in `vfio_user::transport`, where raw guest memory is touched.
//!
//! Invariant: no Rust reference (`&`/`&mut`) to mapped memory is ever formed. The guest changes
//! this memory concurrently; every access copies through raw pointers, and structured loads and
//! stores (table entries, descriptors) are single volatile or atomic operations.

#![allow(unsafe_code)]

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::{MmapOptions, MmapRaw};

use super::budget::Lease;

/// Why an fd could not be mapped.
#[derive(Debug, thiserror::Error)]
pub enum MappingError {
    /// The fd is shorter than the range asked for (accessing it would raise SIGBUS).
    #[error("fd holds {file_size} bytes, the map needs 0x{end:x}")]
    BeyondFile {
        /// Size of the file.
        file_size: u64,
        /// End of the requested range in the file.
        end: u64,
    },
    /// The range does not fit this machine's address space.
    #[error("range too large to map")]
    TooLarge,
    /// The fd can still shrink (no F_SEAL_SHRINK seal): the client could truncate it under a
    /// mapping, and the next access would kill the server with SIGBUS.
    #[error("fd is not sealed against shrinking")]
    NotSealed,
    /// fstat or mmap failed.
    #[error("cannot map fd")]
    Io(#[source] std::io::Error),
}

/// A shared mapping of `len` bytes of an fd.
#[derive(Debug)]
pub struct Mapping {
    map: MmapRaw,
    writable: bool,
    /// Counts the mapping against the fd-mapping budgets; dropped after `map` is unmapped.
    _lease: Lease,
}

impl Mapping {
    /// Maps `len` bytes of `fd` at `offset`, read-write or read-only, counted by `lease`.
    pub fn new(
        fd: &OwnedFd,
        offset: u64,
        len: u64,
        writable: bool,
        lease: Lease,
    ) -> Result<Self, MappingError> {
        let end = offset.checked_add(len).ok_or(MappingError::TooLarge)?;
        // QEMU's memfd backend seals its memfds (seal=on by default); anything else is refused
        // here and reached through the client instead.
        let seals = rustix::fs::fcntl_get_seals(fd).map_err(|_| MappingError::NotSealed)?;
        if !seals.contains(rustix::fs::SealFlags::SHRINK) {
            return Err(MappingError::NotSealed);
        }
        let stat = rustix::fs::fstat(fd.as_fd()).map_err(|e| MappingError::Io(e.into()))?;
        let file_size = stat.st_size as u64;
        if end > file_size {
            return Err(MappingError::BeyondFile { file_size, end });
        }
        let len = usize::try_from(len).map_err(|_| MappingError::TooLarge)?;
        let mut options = MmapOptions::new();
        options.offset(offset).len(len);
        let map = if writable {
            options.map_raw(fd)
        } else {
            options.map_raw_read_only(fd)
        };
        Ok(Mapping {
            map: map.map_err(MappingError::Io)?,
            writable,
            _lease: lease,
        })
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the mapping is empty (never, for a valid map).
    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    /// Whether stores are allowed.
    pub fn writable(&self) -> bool {
        self.writable
    }

    fn check(&self, offset: usize, len: usize, align: usize) -> Option<*mut u8> {
        let end = offset.checked_add(len)?;
        (end <= self.map.len() && offset % align == 0).then(|| {
            // SAFETY: offset + len <= map.len() was checked just above, so the pointer stays
            // inside (or one past the end of) the mapping.
            unsafe { self.map.as_mut_ptr().add(offset) }
        })
    }

    /// Copies `buf.len()` bytes at `offset` into `buf`. False when out of bounds.
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> bool {
        let Some(src) = self.check(offset, buf.len(), 1) else {
            return false;
        };
        // SAFETY: 1. `src..src+len` lies inside the live mapping (checked by `check`; the
        // mapping lives as long as `self`). 2. `buf` is ordinary Rust memory, which cannot
        // overlap a mapping of guest memory. 3. Bytes the guest changes meanwhile are just bytes:
        // no reference to the mapping is formed, so no Rust aliasing rule is involved.
        unsafe { std::ptr::copy_nonoverlapping(src, buf.as_mut_ptr(), buf.len()) };
        true
    }

    /// Copies `data` to `offset`. False when out of bounds or read-only.
    pub fn write(&self, offset: usize, data: &[u8]) -> bool {
        let Some(dst) = self.check(offset, data.len(), 1).filter(|_| self.writable) else {
            return false;
        };
        // SAFETY: as in `read`, with the roles swapped; the mapping is writable (checked).
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len()) };
        true
    }

    /// Copies `len` bytes at `offset` to `dst_offset` of `dst` (which may be this mapping, or
    /// another mapping of the same memory) as `memmove` does: overlapping ranges are fine.
    /// False when either range is out of bounds or `dst` is read-only.
    pub fn copy_to(&self, offset: usize, dst: &Mapping, dst_offset: usize, len: usize) -> bool {
        let Some(src) = self.check(offset, len, 1) else {
            return false;
        };
        let Some(to) = dst.check(dst_offset, len, 1).filter(|_| dst.writable) else {
            return false;
        };
        // SAFETY: 1. both ranges lie inside live mappings (checked by `check`; the mappings
        // live as long as `self` and `dst`). 2. `ptr::copy` allows the ranges to overlap, which
        // they may when both name the same guest memory. 3. No reference to guest memory is
        // formed; the guest changing bytes meanwhile only changes what is copied.
        unsafe { std::ptr::copy(src, to, len) };
        true
    }

    /// The atomic view of the naturally aligned u64 at `offset`, if in bounds.
    fn atomic_u64(&self, offset: usize) -> Option<&AtomicU64> {
        let ptr = self.check(offset, 8, 8)?;
        // SAFETY: 1. the pointer is 8-byte aligned and 8 bytes of the live mapping follow it
        // (checked). 2. AtomicU64 tolerates concurrent access by the guest. 3. The reference
        // is to an atomic cell, not to plain bytes, and never outlives `self`.
        Some(unsafe { AtomicU64::from_ptr(ptr.cast()) })
    }

    /// One 64-bit load at an 8-byte aligned `offset` (the guest's table entries are naturally
    /// aligned u64s: one load sees either the old or the new entry, never a mix).
    pub fn load_u64(&self, offset: usize) -> Option<u64> {
        Some(self.atomic_u64(offset)?.load(Ordering::Acquire))
    }

    /// One 64-bit store at an 8-byte aligned `offset`. None when out of bounds or read-only.
    pub fn store_u64(&self, offset: usize, value: u64) -> Option<()> {
        self.writable.then_some(())?;
        self.atomic_u64(offset)?.store(value, Ordering::Release);
        Some(())
    }

    /// Atomic compare-and-exchange of the aligned u64 at `offset`; returns the value found.
    /// None when out of bounds or read-only.
    pub fn compare_exchange_u64(&self, offset: usize, current: u64, new: u64) -> Option<u64> {
        self.writable.then_some(())?;
        let cell = self.atomic_u64(offset)?;
        Some(
            cell.compare_exchange(current, new, Ordering::AcqRel, Ordering::Acquire)
                .unwrap_or_else(|v| v),
        )
    }
}

#[cfg(test)]
mod tests {
    //! The accessors over an anonymous private mapping instead of a memfd: Miri cannot create
    //! a memfd (`memfd_create` is an unsupported syscall there) but does model anonymous mmap,
    //! so these tests let it check this file's pointer arithmetic, copies and atomics
    //! (`cargo +nightly miri test --lib mem::mapping`); the bounds are the same in both.
    use std::sync::Arc;

    use super::*;
    use crate::mem::budget::Budget;

    const LEN: usize = 4096;

    fn anonymous(writable: bool) -> Mapping {
        let map = MmapOptions::new()
            .len(LEN)
            .map_anon()
            .expect("anonymous mmap");
        let lease = Lease::take(&Arc::new(Budget::new(1))).expect("a fresh budget");
        Mapping {
            map: MmapRaw::from(map),
            writable,
            _lease: lease,
        }
    }

    #[test]
    fn test_read_write_round_trip_up_to_the_last_byte() {
        let m = anonymous(true);
        assert!(m.write(LEN - 3, &[1, 2, 3]));
        let mut out = [0; 3];
        assert!(m.read(LEN - 3, &mut out));
        assert_eq!(out, [1, 2, 3]);
        assert!(
            m.read(LEN, &mut []),
            "an empty access at the end is in bounds"
        );
    }

    #[test]
    fn test_accesses_past_the_end_or_wrapping_are_refused() {
        let m = anonymous(true);
        let mut out = [0; 4];
        assert!(!m.read(LEN - 3, &mut out));
        assert!(!m.write(LEN - 3, &[0; 4]));
        assert!(!m.read(usize::MAX - 1, &mut out), "offset + len wraps");
        assert_eq!(m.load_u64(LEN), None);
        assert_eq!(m.load_u64(usize::MAX - 7), None);
    }

    #[test]
    fn test_read_only_mapping_refuses_every_store() {
        let m = anonymous(false);
        assert!(!m.write(0, &[1]));
        assert_eq!(m.store_u64(0, 1), None);
        assert_eq!(m.compare_exchange_u64(0, 0, 1), None);
        assert!(!anonymous(true).copy_to(0, &m, 8, 8));
        assert_eq!(m.load_u64(0), Some(0), "loads still work");
    }

    #[test]
    fn test_copy_to_moves_overlapping_ranges_like_memmove() {
        let m = anonymous(true);
        assert!(m.write(0, &[1, 2, 3, 4, 5, 6]));
        assert!(m.copy_to(0, &m, 2, 4), "forward overlap");
        let mut out = [0; 6];
        assert!(m.read(0, &mut out));
        assert_eq!(out, [1, 2, 1, 2, 3, 4]);
        assert!(m.copy_to(2, &m, 0, 4), "backward overlap");
        assert!(m.read(0, &mut out));
        assert_eq!(out, [1, 2, 3, 4, 3, 4]);
        let other = anonymous(true);
        assert!(m.copy_to(0, &other, LEN - 6, 6));
        assert!(other.read(LEN - 6, &mut out));
        assert_eq!(out, [1, 2, 3, 4, 3, 4]);
        assert!(!m.copy_to(LEN - 2, &other, 0, 4), "source past the end");
    }

    #[test]
    fn test_u64_accesses_are_aligned_atomic_and_in_bounds() {
        let m = anonymous(true);
        assert_eq!(m.store_u64(LEN - 8, 0x1122_3344_5566_7788), Some(()));
        assert_eq!(m.load_u64(LEN - 8), Some(0x1122_3344_5566_7788));
        assert_eq!(m.load_u64(4), None, "misaligned");
        assert_eq!(m.store_u64(12, 1), None, "misaligned");
        assert_eq!(
            m.compare_exchange_u64(LEN - 8, 1, 2),
            Some(0x1122_3344_5566_7788)
        );
        assert_eq!(
            m.compare_exchange_u64(LEN - 8, 0x1122_3344_5566_7788, 2),
            Some(0x1122_3344_5566_7788)
        );
        assert_eq!(m.load_u64(LEN - 8), Some(2));
        let mut bytes = [0; 8];
        assert!(m.read(LEN - 8, &mut bytes));
        assert_eq!(
            u64::from_le_bytes(bytes),
            2,
            "the same bytes as plain reads see"
        );
    }

    #[test]
    fn test_concurrent_stores_and_loads_see_whole_values() {
        let m = anonymous(true);
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 0..32u64 {
                    m.store_u64(0, if i % 2 == 0 { 0 } else { u64::MAX });
                }
            });
            for _ in 0..32 {
                let v = m.load_u64(0).expect("in bounds");
                assert!(v == 0 || v == u64::MAX, "torn load 0x{v:x}");
            }
        });
    }
}
