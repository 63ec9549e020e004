//! Translation caches: context cache, PASID cache and IOTLB, and the invalidations that drop
//! their entries. VT-d spec 6.5 (caching) and 6.5.2 (invalidation granularities).
//!
//! Only successful lookups are cached (faults are always re-walked, which caching mode
//! allows). An invalidation may drop more than it names, never less; where the spec leaves a
//! choice the cache drops more (see each `invalidate_*`). Each cache is bounded: when one is
//! full it is emptied, a replacement policy the spec permits and that keeps lookups O(1).
//! The IOTLB, with its index for page-selective invalidation, is in `cache/iotlb.rs`.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::context::{LegacyContext, ScalableContext};
use super::ids::{DomainId, Pasid, SourceId};
use super::pasid::PasidParams;
use super::request::{Access, Perms};

mod iotlb;

use iotlb::Iotlb;
pub use iotlb::{IotlbEntry, IotlbSize, IOTLB_CAPACITY};

/// Context-cache invalidation (CCMD register or context-cache invalidate descriptor).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContextInvalidation {
    /// Every context entry.
    Global,
    /// Entries of one domain.
    Domain(DomainId),
    /// Entries of one device (with the function mask FM: source-id bits to ignore).
    Device {
        /// Domain.
        domain: DomainId,
        /// Source-id.
        source: SourceId,
        /// Function mask (0: exact; 1: ignore bit 2; 2: bits 2:1; 3: bits 2:0).
        function_mask: u8,
    },
}

/// Whether `a` and `b` name the same device once the function mask FM of a device-selective
/// context-cache invalidation is applied (11.4.7 CCMD.FM: 0 none, 1 ignores source-id bit 2,
/// 2 bits 2:1, 3 bits 2:0).
pub fn masked_source_match(a: SourceId, b: SourceId, function_mask: u8) -> bool {
    let ignored = match function_mask {
        0 => 0,
        1 => 0b100,
        2 => 0b110,
        _ => 0b111,
    };
    (a.0 | ignored) == (b.0 | ignored)
}

/// IOTLB invalidation for requests without PASID and PGTT second-stage / pass-through entries
/// (IOTLB register or IOTLB invalidate descriptor).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IotlbInvalidation {
    /// Everything.
    Global,
    /// One domain.
    Domain(DomainId),
    /// Pages of one domain: `addr` aligned to 2^(12 + address_mask) bytes.
    Page {
        /// Domain.
        domain: DomainId,
        /// Base address.
        addr: u64,
        /// AM: the range covers 2^address_mask 4 KiB pages.
        address_mask: u8,
        /// IH: only leaf entries changed (paging-structure caches may be kept).
        ih: bool,
    },
}

/// PASID-based IOTLB invalidation (first-stage and nested entries).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PasidIotlbInvalidation {
    /// Every entry of one PASID in one domain.
    Pasid {
        /// Domain.
        domain: DomainId,
        /// PASID.
        pasid: Pasid,
    },
    /// Pages of one PASID in one domain.
    Page {
        /// Domain.
        domain: DomainId,
        /// PASID.
        pasid: Pasid,
        /// Base address.
        addr: u64,
        /// AM: the range covers 2^address_mask 4 KiB pages.
        address_mask: u8,
        /// IH: only leaf entries changed.
        ih: bool,
    },
}

/// PASID-cache invalidation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PasidCacheInvalidation {
    /// Everything.
    Global,
    /// One domain.
    Domain(DomainId),
    /// One PASID in one domain.
    Pasid {
        /// Domain.
        domain: DomainId,
        /// PASID.
        pasid: Pasid,
    },
}

/// Most PASID-cache entries held at once.
pub const PASID_CACHE_CAPACITY: usize = 4096;

/// Hit and miss counts and size of one cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheCounters {
    /// Lookups that found an entry.
    pub hits: u64,
    /// Lookups that did not.
    pub misses: u64,
    /// Entries held now.
    pub entries: usize,
}

/// Counters of all three caches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Context cache.
    pub context: CacheCounters,
    /// PASID cache.
    pub pasid: CacheCounters,
    /// IOTLB.
    pub iotlb: CacheCounters,
}

/// A checked context entry, as the context cache holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CachedContext {
    /// Legacy mode (tagged with its DID).
    Legacy(LegacyContext),
    /// Scalable mode (no DID of its own).
    Scalable(ScalableContext),
}

/// A cheap multiplicative hasher: keys are already well-distributed integers, so one multiply
/// and a fold spread them over the table; SipHash would cost more than the whole IOTLB hit.
#[derive(Clone, Copy, Debug, Default)]
pub struct FoldHasher(u64);

const FOLD_MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;

impl Hasher for FoldHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u16(&mut self, value: u16) {
        self.write_u64(u64::from(value));
    }

    fn write_u32(&mut self, value: u32) {
        self.write_u64(u64::from(value));
    }

    #[inline]
    fn write_u64(&mut self, value: u64) {
        self.0 = (self.0 ^ value)
            .wrapping_mul(FOLD_MULTIPLIER)
            .rotate_left(29);
    }

    #[inline]
    fn finish(&self) -> u64 {
        let wide = u128::from(self.0) * u128::from(FOLD_MULTIPLIER);
        (wide as u64) ^ ((wide >> 64) as u64)
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FoldHasher>>;

#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    hits: u64,
    misses: u64,
}

impl Counts {
    fn record<T>(&mut self, found: Option<T>) -> Option<T> {
        if found.is_some() {
            self.hits += 1;
        } else {
            self.misses += 1;
        }
        found
    }

    fn with_entries(self, entries: usize) -> CacheCounters {
        CacheCounters {
            hits: self.hits,
            misses: self.misses,
            entries,
        }
    }
}

/// All translation caches of one remapping unit.
#[derive(Debug, Default)]
pub struct Caches {
    context: FastMap<SourceId, CachedContext>,
    pasid: FastMap<(SourceId, u32), PasidParams>,
    iotlb: Iotlb,
    context_counts: Counts,
    pasid_counts: Counts,
}

impl Caches {
    /// Drops context-cache entries. Scalable-mode entries carry no DID, so a domain-selective
    /// invalidation drops all of them; a device-selective one ignores the domain.
    pub fn invalidate_context(&mut self, inv: ContextInvalidation) {
        match inv {
            ContextInvalidation::Global => self.context.clear(),
            ContextInvalidation::Domain(did) => self.context.retain(|_, entry| match entry {
                CachedContext::Legacy(legacy) => legacy.did != did,
                CachedContext::Scalable(_) => false,
            }),
            ContextInvalidation::Device {
                source,
                function_mask,
                ..
            } => {
                self.context
                    .retain(|key, _| !masked_source_match(*key, source, function_mask));
            }
        }
    }

    /// Drops IOTLB entries. Domain- and page-selective invalidations drop every first-stage
    /// and nested entry of the domain (VT-d spec 6.5.2.4: those are PASID-tagged and only
    /// PASID-based invalidations target their pages).
    pub fn invalidate_iotlb(&mut self, inv: IotlbInvalidation) {
        self.iotlb.invalidate(inv);
    }

    /// Drops PASID-tagged IOTLB entries, whatever their PGTT (Linux tears down pass-through
    /// PASIDs with a PASID-selective flush, so those entries must go too).
    pub fn invalidate_pasid_iotlb(&mut self, inv: PasidIotlbInvalidation) {
        self.iotlb.invalidate_pasid(inv);
    }

    /// Drops the entries of `domain` cached for translations that used no PASID at all (the
    /// physical model's default domains), all or those overlapping the page block `page`
    /// (address, AM). No VT-d descriptor names exactly these: the unit's own scalable-mode
    /// requests without PASID are cached under RID_PASID.
    pub(crate) fn invalidate_untagged_iotlb(&mut self, domain: DomainId, page: Option<(u64, u8)>) {
        self.iotlb.invalidate_tagged(domain, None, page);
    }

    /// Drops PASID-cache entries.
    pub fn invalidate_pasid_cache(&mut self, inv: PasidCacheInvalidation) {
        match inv {
            PasidCacheInvalidation::Global => self.pasid.clear(),
            PasidCacheInvalidation::Domain(did) => self.pasid.retain(|_, p| p.did != did),
            PasidCacheInvalidation::Pasid { domain, pasid } => {
                self.pasid
                    .retain(|key, p| p.did != domain || key.1 != pasid.raw());
            }
        }
    }

    /// Hit/miss counters and sizes.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            context: self.context_counts.with_entries(self.context.len()),
            pasid: self.pasid_counts.with_entries(self.pasid.len()),
            iotlb: self.iotlb.counters(),
        }
    }

    /// Empties every cache (the root table changed).
    pub(crate) fn flush_all(&mut self) {
        self.context.clear();
        self.pasid.clear();
        self.iotlb.clear();
    }

    /// The context entry cached for `source`.
    pub(crate) fn context(&mut self, source: SourceId) -> Option<CachedContext> {
        self.context_counts
            .record(self.context.get(&source).copied())
    }

    /// Caches a checked context entry.
    pub(crate) fn insert_context(&mut self, source: SourceId, entry: CachedContext) {
        self.context.insert(source, entry);
    }

    /// The PASID-table entry cached for `source` and `pasid`.
    pub(crate) fn pasid(&mut self, source: SourceId, pasid: u32) -> Option<PasidParams> {
        self.pasid_counts
            .record(self.pasid.get(&(source, pasid)).copied())
    }

    /// Caches a checked PASID-table entry.
    pub(crate) fn insert_pasid(&mut self, source: SourceId, pasid: u32, params: PasidParams) {
        if self.pasid.len() >= PASID_CACHE_CAPACITY {
            self.pasid.clear();
        }
        self.pasid.insert((source, pasid), params);
    }

    /// Serves `access` at `addr` for `source`/`pasid` from the IOTLB, if an entry can (an entry
    /// that cannot, for permissions or a D flag to set, counts as a miss: the walk decides).
    #[inline]
    pub(crate) fn iotlb_serve(
        &mut self,
        source: SourceId,
        pasid: Option<Pasid>,
        addr: u64,
        access: Access,
    ) -> Option<(u64, Perms, IotlbEntry)> {
        self.iotlb.serve(source, pasid, addr, access)
    }

    /// Caches a translation for requests from `source` with `pasid` (as the request carried
    /// it), replacing what the key held.
    pub(crate) fn insert_iotlb(
        &mut self,
        source: SourceId,
        pasid: Option<Pasid>,
        entry: IotlbEntry,
    ) {
        self.iotlb.insert(source, pasid, entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vtd::walk::PageSize;

    pub(super) fn entry(
        base: u64,
        size: IotlbSize,
        domain: u16,
        pasid: Option<u32>,
        first_stage: bool,
    ) -> IotlbEntry {
        let rw = Perms {
            read: true,
            write: true,
            exec: false,
            privileged: false,
        };
        IotlbEntry {
            base,
            output: base + 0x1000_0000,
            size,
            user: rw,
            supervisor: Perms {
                privileged: true,
                ..rw
            },
            dirty: true,
            domain: DomainId(domain),
            pasid: pasid.and_then(Pasid::new),
            first_stage,
            rid_priv: false,
        }
    }

    const SRC: SourceId = SourceId(0x0100);
    const PAGE: IotlbSize = IotlbSize::Page(PageSize::Size4K);

    fn hit(c: &mut Caches, pasid: Option<u32>, addr: u64) -> bool {
        c.iotlb_serve(SRC, pasid.and_then(Pasid::new), addr, Access::READ)
            .is_some()
    }

    #[test]
    fn test_hit_serves_offset_in_every_size_class() {
        let mut c = Caches::default();
        c.insert_iotlb(
            SRC,
            None,
            entry(0x20_0000, IotlbSize::Page(PageSize::Size2M), 1, None, false),
        );
        let (out, _, _) = c.iotlb_serve(SRC, None, 0x21_2345, Access::READ).unwrap();
        assert_eq!(out, 0x1021_2345);
        c.insert_iotlb(
            SRC,
            Some(Pasid::new(3).unwrap()),
            entry(0, IotlbSize::Whole { width: 48 }, 1, Some(3), false),
        );
        assert!(hit(&mut c, Some(3), 0x7fff_ffff_ffff));
        assert!(
            !hit(&mut c, Some(3), 1 << 48),
            "beyond the pass-through width"
        );
        assert_eq!(
            c.stats().iotlb,
            CacheCounters {
                hits: 2,
                misses: 1,
                entries: 2
            }
        );
    }

    #[test]
    fn test_write_without_dirty_is_a_miss() {
        let mut c = Caches::default();
        c.insert_iotlb(
            SRC,
            None,
            IotlbEntry {
                dirty: false,
                ..entry(0x1000, PAGE, 1, None, false)
            },
        );
        assert!(c.iotlb_serve(SRC, None, 0x1000, Access::READ).is_some());
        assert!(c.iotlb_serve(SRC, None, 0x1000, Access::WRITE).is_none());
    }

    #[test]
    fn test_page_invalidation_with_address_mask() {
        let mut c = Caches::default();
        for page in 0..8u64 {
            c.insert_iotlb(SRC, None, entry(page << 12, PAGE, 1, None, false));
        }
        // AM = 2: four pages from 0x4000 (the address is aligned down).
        c.invalidate_iotlb(IotlbInvalidation::Page {
            domain: DomainId(1),
            addr: 0x5000,
            address_mask: 2,
            ih: false,
        });
        let left: Vec<bool> = (0..8u64).map(|p| hit(&mut c, None, p << 12)).collect();
        assert_eq!(left, [true, true, true, true, false, false, false, false]);
        c.invalidate_iotlb(IotlbInvalidation::Page {
            domain: DomainId(2),
            addr: 0,
            address_mask: 63,
            ih: false,
        });
        assert_eq!(c.stats().iotlb.entries, 4, "other domain: nothing dropped");
        c.invalidate_iotlb(IotlbInvalidation::Page {
            domain: DomainId(1),
            addr: 0,
            address_mask: 63,
            ih: false,
        });
        assert_eq!(
            c.stats().iotlb.entries,
            0,
            "AM 63 covers everything without overflow"
        );
    }

    #[test]
    fn test_page_invalidation_drops_overlapping_large_page() {
        let mut c = Caches::default();
        c.insert_iotlb(
            SRC,
            None,
            entry(
                0x4000_0000,
                IotlbSize::Page(PageSize::Size1G),
                1,
                None,
                false,
            ),
        );
        c.invalidate_iotlb(IotlbInvalidation::Page {
            domain: DomainId(1),
            addr: 0x4123_4000,
            address_mask: 0,
            ih: true,
        });
        assert_eq!(c.stats().iotlb.entries, 0);
    }

    #[test]
    fn test_iotlb_invalidation_without_pasid_drops_first_stage_entries_of_domain() {
        let mut c = Caches::default();
        let p5 = Pasid::new(5);
        c.insert_iotlb(SRC, p5, entry(0x9000, PAGE, 1, Some(5), true));
        c.insert_iotlb(SRC, None, entry(0x9000, PAGE, 1, None, false));
        c.invalidate_iotlb(IotlbInvalidation::Page {
            domain: DomainId(1),
            addr: 0x1000,
            address_mask: 0,
            ih: false,
        });
        assert!(!hit(&mut c, Some(5), 0x9000));
        assert!(hit(&mut c, None, 0x9000));
    }

    #[test]
    fn test_pasid_iotlb_invalidation_granularities() {
        let mut c = Caches::default();
        for pasid in [5u32, 6] {
            for page in 0..4u64 {
                c.insert_iotlb(
                    SRC,
                    Pasid::new(pasid),
                    entry(page << 12, PAGE, 1, Some(pasid), true),
                );
            }
        }
        let p5 = Pasid::new(5).unwrap();
        c.invalidate_pasid_iotlb(PasidIotlbInvalidation::Page {
            domain: DomainId(1),
            pasid: p5,
            addr: 0x2000,
            address_mask: 1,
            ih: false,
        });
        let left: Vec<bool> = (0..4u64).map(|p| hit(&mut c, Some(5), p << 12)).collect();
        assert_eq!(left, [true, true, false, false]);
        c.invalidate_pasid_iotlb(PasidIotlbInvalidation::Pasid {
            domain: DomainId(1),
            pasid: p5,
        });
        assert_eq!(c.stats().iotlb.entries, 4, "PASID 6 untouched");
        c.invalidate_iotlb(IotlbInvalidation::Domain(DomainId(1)));
        assert_eq!(c.stats().iotlb.entries, 0);
    }

    #[test]
    fn test_masked_source_match_ignores_the_masked_function_bits() {
        let (a, b) = (SourceId::new(0, 4, 0), SourceId::new(0, 4, 4));
        assert!(!masked_source_match(a, b, 0));
        assert!(masked_source_match(a, b, 1), "FM 1 ignores bit 2");
        assert!(!masked_source_match(a, SourceId::new(0, 4, 2), 1));
        assert!(masked_source_match(a, SourceId::new(0, 4, 6), 2));
        assert!(masked_source_match(a, SourceId::new(0, 4, 7), 3));
        assert!(!masked_source_match(a, SourceId::new(0, 5, 0), 3));
    }

    #[test]
    fn test_context_device_invalidation_function_mask() {
        let mut c = Caches::default();
        let ctx = CachedContext::Legacy(LegacyContext {
            did: DomainId(1),
            fpd: false,
            table: None,
        });
        for devfn in 0..16u16 {
            c.insert_context(SourceId(devfn), ctx);
        }
        c.invalidate_context(ContextInvalidation::Device {
            domain: DomainId(1),
            source: SourceId(2),
            function_mask: 2,
        });
        // FM 2 ignores bits 2:1 of the function: devfn 0-7 with bit 0 clear go.
        let left: Vec<u16> = (0..8)
            .filter(|d| c.context(SourceId(*d)).is_some())
            .collect();
        assert_eq!(left, [1, 3, 5, 7]);
        c.invalidate_context(ContextInvalidation::Domain(DomainId(2)));
        assert_eq!(c.stats().context.entries, 12);
        c.invalidate_context(ContextInvalidation::Domain(DomainId(1)));
        assert_eq!(c.stats().context.entries, 0);
    }

    /// Fills the IOTLB to exactly its capacity with distinct pages.
    fn fill_iotlb(c: &mut Caches) {
        for page in 0..IOTLB_CAPACITY as u64 {
            c.insert_iotlb(SRC, None, entry(page << 12, PAGE, 1, None, false));
        }
    }

    #[test]
    fn test_iotlb_holds_its_capacity_and_starts_over_one_past_it() {
        let mut c = Caches::default();
        fill_iotlb(&mut c);
        assert_eq!(c.stats().iotlb.entries, IOTLB_CAPACITY);
        assert!(hit(&mut c, None, 0), "the first entry is still there");
        let past = (IOTLB_CAPACITY as u64) << 12;
        c.insert_iotlb(SRC, None, entry(past, PAGE, 1, None, false));
        assert_eq!(c.stats().iotlb.entries, 1, "emptied, then the new entry");
        assert!(hit(&mut c, None, past));
        assert!(!hit(&mut c, None, 0));
    }

    #[test]
    fn test_pasid_cache_holds_its_capacity_and_starts_over_one_past_it() {
        let params = PasidParams {
            did: DomainId(1),
            fpd: false,
            pgtt: crate::vtd::pasid::Pgtt::PassThrough,
            first: None,
            second: None,
            flags: crate::vtd::walk::FsFlags::default(),
        };
        let mut c = Caches::default();
        let capacity = PASID_CACHE_CAPACITY as u32;
        for pasid in 0..capacity {
            c.insert_pasid(SRC, pasid, params);
        }
        assert_eq!(c.stats().pasid.entries, PASID_CACHE_CAPACITY);
        assert_eq!(c.pasid(SRC, 0), Some(params));
        c.insert_pasid(SRC, capacity, params);
        assert_eq!(c.stats().pasid.entries, 1);
        assert_eq!(c.pasid(SRC, capacity), Some(params));
        assert_eq!(c.pasid(SRC, 0), None);
    }

    #[test]
    fn test_capacity_is_bounded() {
        let mut c = Caches::default();
        for page in 0..(IOTLB_CAPACITY as u64 + 10) {
            c.insert_iotlb(SRC, None, entry(page << 12, PAGE, 1, None, false));
        }
        assert!(c.stats().iotlb.entries <= IOTLB_CAPACITY);
        c.invalidate_iotlb(IotlbInvalidation::Global);
        assert_eq!(c.iotlb.classes, [0; 4]);
    }
}
