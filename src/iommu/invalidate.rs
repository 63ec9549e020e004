//! Cache invalidation in host terms (the seed's second API): which cache, and at which
//! granularity, in host identities. A guest's global flush arrives here already converted to
//! domain- or PASID-selective flushes of the devices it concerns.

use super::types::Pasid;

/// Which cache to invalidate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CacheType {
    /// The IOMMU's translation cache (IOTLB, PASID-based IOTLB).
    Iotlb,
    /// The device's ATC (device-TLB). Returns once the device completed the invalidation.
    DeviceTlb,
    /// The IOMMU's cached PASID entries (bindings).
    PasidCache,
}

/// How much of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Granularity {
    /// Everything the device's domain holds, every PASID.
    Domain,
    /// Everything cached for one PASID.
    Pasid(Pasid),
    /// Translations of `pasid` for input addresses `addr..addr + size`.
    Range {
        /// The PASID.
        pasid: Pasid,
        /// First input address (rounded down to its page).
        addr: u64,
        /// Bytes (rounded up to whole pages).
        size: u64,
    },
}

/// One invalidation request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CacheInvalidate {
    /// Which cache.
    pub cache: CacheType,
    /// How much.
    pub granularity: Granularity,
}

impl CacheInvalidate {
    /// Whether an entry of `pasid` covering `first..=last` falls under this invalidation.
    pub fn covers(&self, pasid: Pasid, first: u64, last: u64) -> bool {
        match self.granularity {
            Granularity::Domain => true,
            Granularity::Pasid(p) => p == pasid,
            Granularity::Range {
                pasid: p,
                addr,
                size,
            } => {
                let end = addr.saturating_add(size.max(1) - 1);
                p == pasid && first <= end && addr <= last
            }
        }
    }
}
