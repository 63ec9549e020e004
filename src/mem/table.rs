//! The DMA map table: which guest-physical ranges the client has mapped, and how to reach each.
//! Semantics follow VFIO type1 as QEMU's vfio-user client expects them (spec DMA_MAP/DMA_UNMAP):
//! a map never overlaps another; an unmap removes everything inside its range, splitting maps.
//!
//! The table is a persistent B-tree (`imbl::OrdMap`): a copy shares every node with the
//! original and a change copies only the path to it, so the copy-on-write update that each
//! DMA_MAP/UNMAP makes costs O(log n) however full the table is, not a copy of the table.

use std::sync::Arc;

use imbl::OrdMap;
use rustix::io::Errno;

use super::address::Gpa;
use super::mapping::{Mapping, MappingError};

/// Granule of every map: QEMU's `pgsizes` is 4 KiB.
pub const PAGE_SIZE: u64 = 4096;

/// How the bytes of a region are reached.
#[derive(Clone, Debug)]
pub enum Backing {
    /// Mapped into the server; the region starts `offset` bytes into the mapping.
    Mapped {
        /// The shared mapping (split regions share one).
        mapping: Arc<Mapping>,
        /// Offset of the region's first byte in `mapping`.
        offset: usize,
    },
    /// No fd: reached with DMA_READ/DMA_WRITE messages through the client.
    Remote,
}

/// One mapped range of guest memory.
#[derive(Clone, Debug)]
pub struct Region {
    /// First guest-physical address.
    pub start: Gpa,
    /// Size in bytes.
    pub size: u64,
    /// The device may read it.
    pub readable: bool,
    /// The device may write it.
    pub writable: bool,
    /// Where the bytes are.
    pub backing: Backing,
}

impl Region {
    /// One past the last address.
    pub fn end(&self) -> u64 {
        self.start.0 + self.size
    }

    /// The part `[start, end)` of this region (which must lie inside it).
    fn slice(&self, start: u64, end: u64) -> Region {
        let backing = match &self.backing {
            Backing::Mapped { mapping, offset } => Backing::Mapped {
                mapping: mapping.clone(),
                offset: offset + (start - self.start.0) as usize,
            },
            Backing::Remote => Backing::Remote,
        };
        Region {
            start: Gpa(start),
            size: end - start,
            backing,
            ..*self
        }
    }
}

/// Why a map or unmap was refused; each maps to the errno the client receives.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    /// Address, size or fd offset is not a multiple of [`PAGE_SIZE`].
    #[error("range 0x{address:x}+0x{size:x} (fd offset 0x{offset:x}) is not page aligned")]
    Unaligned {
        /// Start.
        address: u64,
        /// Size.
        size: u64,
        /// fd offset.
        offset: u64,
    },
    /// The range is empty or wraps around the address space.
    #[error("range 0x{address:x}+0x{size:x} is empty or wraps")]
    BadRange {
        /// Start.
        address: u64,
        /// Size.
        size: u64,
    },
    /// The range overlaps an existing map.
    #[error("range 0x{address:x}+0x{size:x} overlaps the map at {existing}")]
    Overlap {
        /// Start.
        address: u64,
        /// Size.
        size: u64,
        /// Start of the map in the way.
        existing: Gpa,
    },
    /// No map lies in the range to unmap.
    #[error("nothing is mapped in 0x{address:x}+0x{size:x}")]
    NotMapped {
        /// Start.
        address: u64,
        /// Size.
        size: u64,
    },
    /// The table would hold more than `max` regions (a new map, or a cut inside one).
    #[error("more than {max} maps")]
    TooMany {
        /// The limit.
        max: usize,
    },
    /// The fd could not be mapped.
    #[error(transparent)]
    Mapping(#[from] MappingError),
}

impl MapError {
    /// The errno for the error reply.
    pub fn errno(&self) -> Errno {
        match self {
            MapError::Unaligned { .. } | MapError::BadRange { .. } => Errno::INVAL,
            MapError::Overlap { .. } => Errno::EXIST,
            MapError::NotMapped { .. } => Errno::NOENT,
            MapError::TooMany { .. } => Errno::NOSPC,
            MapError::Mapping(MappingError::Io(e)) => e
                .raw_os_error()
                .map_or(Errno::INVAL, Errno::from_raw_os_error),
            MapError::Mapping(_) => Errno::INVAL,
        }
    }
}

/// Checks that `[address, address + size)` is a non-empty, page-aligned, non-wrapping range.
fn check_range(address: u64, size: u64, offset: u64) -> Result<u64, MapError> {
    if (address | size | offset) % PAGE_SIZE != 0 {
        return Err(MapError::Unaligned {
            address,
            size,
            offset,
        });
    }
    match address.checked_add(size) {
        Some(end) if size != 0 => Ok(end),
        _ => Err(MapError::BadRange { address, size }),
    }
}

/// Non-overlapping regions keyed by start address; cloning it is O(1).
#[derive(Clone, Debug, Default)]
pub struct MapTable {
    regions: OrdMap<u64, Arc<Region>>,
}

impl MapTable {
    /// Adds a region, refusing bad ranges, overlaps, and a table already holding `max`
    /// regions. The fd offset is checked for alignment.
    pub fn insert(&mut self, region: Region, fd_offset: u64, max: usize) -> Result<(), MapError> {
        let (address, size) = (region.start.0, region.size);
        let end = check_range(address, size, fd_offset)?;
        if let Some(existing) = self.overlapping(address, end).next() {
            return Err(MapError::Overlap {
                address,
                size,
                existing: existing.start,
            });
        }
        if self.regions.len() >= max {
            return Err(MapError::TooMany { max });
        }
        self.regions.insert(address, Arc::new(region));
        Ok(())
    }

    /// Removes everything inside `[address, address + size)`, keeping the parts of regions
    /// that stick out of it. Returns the number of bytes unmapped. A cut strictly inside one
    /// region leaves two: refused, changing nothing, when the table holds `max` already.
    pub fn remove(&mut self, address: u64, size: u64, max: usize) -> Result<u64, MapError> {
        let end = check_range(address, size, 0)?;
        let hit: Vec<Arc<Region>> = self.overlapping(address, end).cloned().collect();
        let [first, ..] = hit.as_slice() else {
            return Err(MapError::NotMapped { address, size });
        };
        // Every other cut leaves at most as many regions as it hits.
        let splits = hit.len() == 1 && first.start.0 < address && end < first.end();
        if splits && self.regions.len() >= max {
            return Err(MapError::TooMany { max });
        }
        let mut removed = 0;
        for region in hit {
            self.regions.remove(&region.start.0);
            let (cut_start, cut_end) = (address.max(region.start.0), end.min(region.end()));
            removed += cut_end - cut_start;
            if region.start.0 < cut_start {
                self.regions.insert(
                    region.start.0,
                    Arc::new(region.slice(region.start.0, cut_start)),
                );
            }
            if cut_end < region.end() {
                self.regions
                    .insert(cut_end, Arc::new(region.slice(cut_end, region.end())));
            }
        }
        Ok(removed)
    }

    /// Removes every region.
    pub fn clear(&mut self) {
        self.regions.clear();
    }

    /// The region containing `gpa`.
    pub fn find(&self, gpa: Gpa) -> Option<&Arc<Region>> {
        let (_, region) = self.regions.get_prev(&gpa.0)?;
        (gpa.0 < region.end()).then_some(region)
    }

    /// Number of regions.
    pub fn len(&self) -> usize {
        self.regions.len()
    }

    /// Whether nothing is mapped.
    pub fn is_empty(&self) -> bool {
        self.regions.is_empty()
    }

    /// Regions intersecting `[start, end)`, in address order.
    fn overlapping(&self, start: u64, end: u64) -> impl Iterator<Item = &Arc<Region>> {
        let first = self
            .regions
            .get_prev(&start)
            .filter(|(_, r)| r.end() > start);
        let first_key = first.map(|(k, _)| *k);
        first
            .into_iter()
            .chain(
                self.regions
                    .range(start..end)
                    .filter(move |(k, _)| Some(**k) != first_key),
            )
            .map(|(_, r)| r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A limit no test reaches.
    const MAX: usize = 1 << 20;

    fn remote(start: u64, size: u64) -> Region {
        Region {
            start: Gpa(start),
            size,
            readable: true,
            writable: true,
            backing: Backing::Remote,
        }
    }

    #[test]
    fn test_insert_overlap_returns_eexist() {
        let mut t = MapTable::default();
        t.insert(remote(0x1000, 0x2000), 0, MAX).unwrap();
        let err = t.insert(remote(0x2000, 0x1000), 0, MAX).unwrap_err();
        assert_eq!(err.errno(), Errno::EXIST);
        let err = t.insert(remote(0x0, 0x2000), 0, MAX).unwrap_err();
        assert_eq!(err.errno(), Errno::EXIST);
        t.insert(remote(0x3000, 0x1000), 0, MAX).unwrap();
    }

    #[test]
    fn test_insert_bad_ranges_return_einval() {
        let mut t = MapTable::default();
        for (a, s, o) in [
            (0x1000, 0, 0),
            (0x1001, 0x1000, 0),
            (0x1000, 0x800, 0),
            (0, 0x1000, 1),
        ] {
            assert_eq!(
                t.insert(remote(a, s), o, MAX).unwrap_err().errno(),
                Errno::INVAL
            );
        }
        assert_eq!(
            t.insert(remote(u64::MAX - 0xfff, 0x2000), 0, MAX)
                .unwrap_err()
                .errno(),
            Errno::INVAL
        );
    }

    #[test]
    fn test_remove_middle_splits_region() {
        let mut t = MapTable::default();
        t.insert(remote(0x10000, 0x10000), 0, MAX).unwrap();
        assert_eq!(t.remove(0x14000, 0x1000, MAX).unwrap(), 0x1000);
        assert_eq!(t.len(), 2);
        assert!(t.find(Gpa(0x13fff)).is_some());
        assert!(t.find(Gpa(0x14000)).is_none());
        assert!(t.find(Gpa(0x14fff)).is_none());
        assert_eq!(t.find(Gpa(0x15000)).unwrap().end(), 0x20000);
    }

    #[test]
    fn test_remove_spanning_several_regions() {
        let mut t = MapTable::default();
        t.insert(remote(0x0, 0x2000), 0, MAX).unwrap();
        t.insert(remote(0x2000, 0x2000), 0, MAX).unwrap();
        t.insert(remote(0x8000, 0x1000), 0, MAX).unwrap();
        assert_eq!(
            t.remove(0x1000, 0x8000, MAX).unwrap(),
            0x1000 + 0x2000 + 0x1000
        );
        assert_eq!(t.len(), 1);
        assert_eq!(t.find(Gpa(0)).unwrap().size, 0x1000);
    }

    #[test]
    fn test_limit_counts_the_region_a_cut_inside_one_adds() {
        let mut t = MapTable::default();
        for i in 0..4 {
            t.insert(remote(i * 0x10000, 0x5000), 0, 4).unwrap();
        }
        let full = t.insert(remote(0x80000, 0x1000), 0, 4).unwrap_err();
        assert_eq!(full.errno(), Errno::NOSPC);
        let split = t.remove(0x1000, 0x1000, 4).unwrap_err();
        assert_eq!(split.errno(), Errno::NOSPC);
        assert_eq!(
            t.find(Gpa(0x1000)).unwrap().size,
            0x5000,
            "refused: nothing changed"
        );
        assert_eq!(
            t.remove(0x0, 0x1000, 4).unwrap(),
            0x1000,
            "an end: no new region"
        );
        assert_eq!(
            t.remove(0x14000, 0x10000, 4).unwrap(),
            0x5000,
            "across two: none either"
        );
        assert_eq!(t.len(), 4);
        assert_eq!(t.remove(0x30000, 0x5000, 4).unwrap(), 0x5000);
        assert_eq!(
            t.remove(0x2000, 0x1000, 4).unwrap(),
            0x1000,
            "room for the split"
        );
        assert_eq!(t.len(), 4);
        assert!(t.find(Gpa(0x1000)).is_some() && t.find(Gpa(0x3000)).is_some());
    }

    #[test]
    fn test_clone_is_a_snapshot_the_original_does_not_change() {
        let mut t = MapTable::default();
        for i in 0..1000 {
            t.insert(remote(i * 0x2000, 0x1000), 0, MAX).unwrap();
        }
        let snapshot = t.clone();
        t.remove(0, 0x2000 * 500, MAX).unwrap();
        t.insert(remote(0x1000, 0x1000), 0, MAX).unwrap();
        assert_eq!((snapshot.len(), t.len()), (1000, 501));
        assert!(snapshot.find(Gpa(0x2000)).is_some() && t.find(Gpa(0x2000)).is_none());
        assert!(snapshot.find(Gpa(0x1000)).is_none() && t.find(Gpa(0x1000)).is_some());
    }

    #[test]
    fn test_remove_unknown_range_returns_enoent() {
        let mut t = MapTable::default();
        t.insert(remote(0x0, 0x1000), 0, MAX).unwrap();
        assert_eq!(
            t.remove(0x1000, 0x1000, MAX).unwrap_err().errno(),
            Errno::NOENT
        );
        assert_eq!(t.remove(0x1000, 0, MAX).unwrap_err().errno(), Errno::INVAL);
    }
}
