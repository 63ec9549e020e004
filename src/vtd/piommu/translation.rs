//! The translation path of the physical model: IOTLB lookup, then the first-stage walk of the
//! PASID's bound table over the DMA map (nested translation with the map as second stage), and
//! what the neutral API makes of a walk's outcome; plus IOTLB invalidation by host granularity.
//! VT-d spec 3.6 / 3.8 (first-stage and nested translation), 6.5.1 (IOTLB), 6.5.2.4
//! (PASID-based IOTLB invalidation), 7.1.3 (which faults are recoverable).

use crate::iommu::{
    Access, DeviceId, Granularity, IoTranslation, Pasid, Perms, TranslateFailure,
    UnrecoverableReason,
};
use crate::mem::MemView;

use super::super::cache::{
    Caches, IotlbEntry, IotlbInvalidation, IotlbSize, PasidIotlbInvalidation,
};
use super::super::ids::{DomainId, SourceId};
use super::super::walk::{self, FsFault, FsTable, WalkFault, PAGE_SHIFT};
use super::binding::Rules;

/// The domain of a device: one per device, named after its requester ID, so that domain ids
/// never collide. A detached device's entries are invalidated before its id can be reused.
pub(super) const fn domain_of(device: DeviceId) -> DomainId {
    DomainId(device.0)
}

/// The IOTLB's requester tag for a device.
pub(super) const fn source_of(device: DeviceId) -> SourceId {
    SourceId(device.0)
}

/// Serves `access` at `addr` from the IOTLB, if an entry can.
pub(super) fn iotlb_lookup(
    caches: &mut Caches,
    device: DeviceId,
    pasid: Pasid,
    addr: u64,
    access: Access,
) -> Option<IoTranslation> {
    caches
        .iotlb_serve(source_of(device), Some(pasid), addr, access)
        .map(|(output, perms, entry)| IoTranslation {
            output,
            page_size: entry.size.bytes(),
            perms,
        })
}

/// Walks `table` for `access` at `addr` of `pasid` in `domain`. On success returns the
/// translation and the IOTLB entry to cache.
pub(super) fn walk(
    view: &MemView,
    rules: &Rules,
    table: &FsTable,
    domain: DomainId,
    pasid: Pasid,
    addr: u64,
    access: Access,
) -> Result<(IoTranslation, IotlbEntry), TranslateFailure> {
    // The PASID entry refuses these outright (SGN.5, SGN.6): no page request can help.
    if (access.exec && !table.flags.ere) || (access.privileged && !table.flags.sre) {
        return Err(TranslateFailure::Unrecoverable(UnrecoverableReason::Other));
    }
    let walked = walk::first_stage_only(view, table, &rules.fs, addr, access).map_err(failure)?;
    let size = IotlbSize::Page(walked.page);
    let mask = walked.page.bytes() - 1;
    let perms: Perms = if access.privileged {
        walked.supervisor
    } else {
        walked.user
    };
    let entry = IotlbEntry {
        base: addr & !mask,
        output: walked.output & !mask,
        size,
        user: walked.user,
        supervisor: walked.supervisor,
        dirty: walked.dirty,
        domain,
        pasid: Some(pasid),
        first_stage: true,
        rid_priv: false,
    };
    let translation = IoTranslation {
        output: walked.output,
        page_size: walked.page.bytes(),
        perms,
    };
    Ok((translation, entry))
}

/// What a walk fault means to a device: a missing page or missing permission can be fixed by
/// the page's owner (a page request), anything malformed or unreadable cannot.
pub(super) fn failure(fault: WalkFault) -> TranslateFailure {
    use UnrecoverableReason::*;
    let reason = match fault {
        WalkFault::First(FsFault::NotPresent) | WalkFault::FirstDenied(_) => {
            return TranslateFailure::NotPresent
        }
        WalkFault::First(FsFault::NonCanonical | FsFault::Reserved) => Walk,
        WalkFault::First(
            FsFault::RootAccess | FsFault::TableAccess | FsFault::AdUpdate | FsFault::Nested { .. },
        ) => PteFetch,
        // No second-stage tables here: the DMA map is the second stage.
        WalkFault::Second(_) | WalkFault::SecondDenied(_) => Other,
    };
    TranslateFailure::Unrecoverable(reason)
}

/// Drops the IOTLB entries of `domain` that `granularity` covers.
pub(super) fn invalidate_iotlb(caches: &mut Caches, domain: DomainId, granularity: Granularity) {
    match granularity {
        Granularity::Domain => caches.invalidate_iotlb(IotlbInvalidation::Domain(domain)),
        Granularity::Pasid(pasid) => {
            caches.invalidate_pasid_iotlb(PasidIotlbInvalidation::Pasid { domain, pasid })
        }
        Granularity::Range { pasid, addr, size } => {
            for (addr, address_mask) in page_blocks(addr, size) {
                caches.invalidate_pasid_iotlb(PasidIotlbInvalidation::Page {
                    domain,
                    pasid,
                    addr,
                    address_mask,
                    ih: false,
                });
            }
        }
    }
}

/// Covers the pages of `[addr, addr + size)` (at least one page) with naturally aligned blocks
/// of 2^AM pages, largest first, as page-selective invalidations name them: an exact cover, at
/// most two blocks per address bit.
pub(super) fn page_blocks(addr: u64, size: u64) -> Vec<(u64, u8)> {
    let mut page = addr >> PAGE_SHIFT;
    let last = addr.saturating_add(size.max(1) - 1) >> PAGE_SHIFT;
    let mut blocks = Vec::new();
    loop {
        // Page numbers have at most 52 bits, so neither the count nor `page + span` overflow.
        let remaining = last - page + 1;
        let aligned = page.trailing_zeros();
        let fits = u64::BITS - 1 - remaining.leading_zeros();
        let am = aligned.min(fits);
        blocks.push((page << PAGE_SHIFT, am as u8));
        page += 1 << am;
        if page > last {
            return blocks;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vtd::walk::{Denied, SsFault};

    #[test]
    fn test_page_blocks_exact_cover() {
        assert_eq!(page_blocks(0x5123, 1), [(0x5000, 0)]);
        assert_eq!(page_blocks(0x5000, 0), [(0x5000, 0)], "empty: one page");
        assert_eq!(page_blocks(0, 0x4000), [(0, 2)]);
        assert_eq!(
            page_blocks(0x3000, 0x6000),
            [(0x3000, 0), (0x4000, 2), (0x8000, 0)]
        );
        assert_eq!(page_blocks(0, u64::MAX), [(0, 52)]);
        let top = page_blocks(u64::MAX - 0xfff, 0x10_0000);
        assert_eq!(top, [(u64::MAX - 0xfff, 0)], "saturates at the top");
    }

    #[test]
    fn test_page_blocks_cover_every_page_once() {
        for (addr, size) in [
            (0x1000, 0x7f000),
            (0x7000, 0x1_0000_1000),
            (0xabc_d000, 1 << 30),
        ] {
            let blocks = page_blocks(addr, size);
            let mut next = addr;
            for (base, am) in &blocks {
                assert_eq!(*base, next);
                assert_eq!(base % (0x1000 << am), 0, "naturally aligned");
                next = base + (0x1000 << am);
            }
            assert_eq!(next, addr + size);
            assert!(blocks.len() <= 2 * 52);
        }
    }

    #[test]
    fn test_failure_recoverable_only_for_missing_pages_and_rights() {
        use TranslateFailure::*;
        let first = |f| failure(WalkFault::First(f));
        assert_eq!(first(FsFault::NotPresent), NotPresent);
        assert_eq!(failure(WalkFault::FirstDenied(Denied::User)), NotPresent);
        assert_eq!(failure(WalkFault::FirstDenied(Denied::Write)), NotPresent);
        assert_eq!(
            first(FsFault::Reserved),
            Unrecoverable(UnrecoverableReason::Walk)
        );
        assert_eq!(
            first(FsFault::NonCanonical),
            Unrecoverable(UnrecoverableReason::Walk)
        );
        assert_eq!(
            first(FsFault::TableAccess),
            Unrecoverable(UnrecoverableReason::PteFetch)
        );
        assert_eq!(
            failure(WalkFault::Second(SsFault::NotPresent)),
            Unrecoverable(UnrecoverableReason::Other)
        );
    }
}
