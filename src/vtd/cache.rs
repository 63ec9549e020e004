//! Translation caches: context cache, PASID cache and IOTLB, and the invalidations that drop
//! their entries. VT-d spec 6.5 (caching) and 6.5.2 (invalidation granularities).
//! PLACEHOLDER API: the types below are the contract; the cache itself is being written.

use super::ids::{DomainId, Pasid, SourceId};

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

/// All translation caches of one remapping unit.
#[derive(Debug, Default)]
pub struct Caches {}

impl Caches {
    /// Drops context-cache entries.
    pub fn invalidate_context(&mut self, _inv: ContextInvalidation) {}
    /// Drops IOTLB entries.
    pub fn invalidate_iotlb(&mut self, _inv: IotlbInvalidation) {}
    /// Drops PASID-tagged IOTLB entries.
    pub fn invalidate_pasid_iotlb(&mut self, _inv: PasidIotlbInvalidation) {}
    /// Drops PASID-cache entries.
    pub fn invalidate_pasid_cache(&mut self, _inv: PasidCacheInvalidation) {}
}
