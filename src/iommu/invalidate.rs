//! Cache invalidation in host terms (the seed's second API): which cache, and at which
//! granularity, in host identities. A guest's global flush arrives here already converted to
//! domain- or PASID-selective flushes of the devices it concerns; its flushes of requests
//! without PASID (VT-d IOTLB and device-TLB invalidations of a default domain) to `NoPasid`
//! and `NoPasidRange`.

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
    /// Everything the device's domain holds: every PASID, and requests without PASID.
    Domain,
    /// Everything cached for requests without PASID (the default domain's translations).
    NoPasid,
    /// Translations for requests without PASID of input addresses `addr..addr + size`.
    NoPasidRange {
        /// First input address (rounded down to its page).
        addr: u64,
        /// Bytes (rounded up to whole pages).
        size: u64,
    },
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

impl Granularity {
    /// Whether an entry for requests with `pasid` (`None`: without PASID) covering
    /// `first..=last` falls under this invalidation.
    pub fn covers(&self, pasid: Option<Pasid>, first: u64, last: u64) -> bool {
        let overlaps = |addr: u64, size: u64| {
            let end = addr.saturating_add(size.max(1) - 1);
            first <= end && addr <= last
        };
        match *self {
            Granularity::Domain => true,
            Granularity::NoPasid => pasid.is_none(),
            Granularity::NoPasidRange { addr, size } => pasid.is_none() && overlaps(addr, size),
            Granularity::Pasid(p) => pasid == Some(p),
            Granularity::Range {
                pasid: p,
                addr,
                size,
            } => pasid == Some(p) && overlaps(addr, size),
        }
    }
}

impl CacheInvalidate {
    /// Whether an entry for requests with `pasid` (`None`: without PASID) covering
    /// `first..=last` falls under this invalidation.
    pub fn covers(&self, pasid: Option<Pasid>, first: u64, last: u64) -> bool {
        self.granularity.covers(pasid, first, last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pasid(raw: u32) -> Option<Pasid> {
        Pasid::new(raw)
    }

    #[test]
    fn test_covers_names_entries_with_and_without_pasid_apart() {
        let page = (0x5000, 0x5fff);
        let range = |addr, size| Granularity::NoPasidRange { addr, size };
        assert!(Granularity::Domain.covers(None, page.0, page.1));
        assert!(Granularity::Domain.covers(pasid(3), page.0, page.1));
        assert!(Granularity::NoPasid.covers(None, page.0, page.1));
        assert!(!Granularity::NoPasid.covers(pasid(0), page.0, page.1));
        assert!(range(0x5fff, 1).covers(None, page.0, page.1));
        assert!(
            !range(0x4000, 0x1000).covers(None, page.0, page.1),
            "ends before"
        );
        assert!(!range(0x5000, 0x1000).covers(pasid(1), page.0, page.1));
        let p1 = Granularity::Pasid(Pasid::new(1).unwrap());
        assert!(p1.covers(pasid(1), page.0, page.1));
        assert!(!p1.covers(None, page.0, page.1));
        let r1 = Granularity::Range {
            pasid: Pasid::new(1).unwrap(),
            addr: 0x5800,
            size: 0,
        };
        assert!(
            r1.covers(pasid(1), page.0, page.1),
            "an empty range is its page"
        );
        assert!(!r1.covers(None, page.0, page.1));
    }
}
