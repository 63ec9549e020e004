//! The translation path of the physical model: IOTLB lookup, then the walk of the table a
//! request uses — a bound PASID's first-stage table, or the default domain's first- or
//! second-stage table for a request without PASID — over the DMA map (nested translation
//! with the map as second stage), and what the neutral API makes of a walk's outcome; plus
//! IOTLB invalidation by host granularity. VT-d spec 3.6-3.8 (first-stage, second-stage and
//! nested translation), 6.5.1 (IOTLB), 6.5.2.4 (PASID-based IOTLB invalidation), 7.1.3 (which
//! faults are recoverable: only those of requests with PASID, through page requests).

use crate::iommu::{
    Access, DeviceId, FaultStage, Granularity, IoTranslation, Pasid, Perms, UnrecoverableReason,
};
use crate::mem::MemView;

use super::super::cache::{
    Caches, IotlbEntry, IotlbInvalidation, IotlbSize, PasidIotlbInvalidation,
};
use super::super::ids::{DomainId, SourceId};
use super::super::walk::{self, FsFault, FsTable, SsFault, SsTable, WalkFault, PAGE_SHIFT};
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

/// A table to walk, as a PASID entry or the default domain names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Table {
    /// CPU-format first stage (PGTT first-stage).
    First(FsTable),
    /// VT-d second stage (legacy mode, PGTT second-stage).
    Second(SsTable),
}

/// Why a translation failed, before the IOMMU reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Failure {
    /// Not present, or not allowed, for a request that can page-fault (it has a PASID): the
    /// device may send a page request. Not reported.
    NotPresent,
    /// Fails for good: reported to the device's fault handler.
    Unrecoverable {
        /// Why.
        reason: UnrecoverableReason,
        /// The table whose walk failed, if one did.
        stage: Option<FaultStage>,
    },
}

impl Failure {
    /// An unrecoverable failure found before any table walk.
    pub const fn before_walk(reason: UnrecoverableReason) -> Self {
        Failure::Unrecoverable {
            reason,
            stage: None,
        }
    }
}

/// Serves `access` at `addr` of a request with `pasid` (or without) from the IOTLB, if an
/// entry can.
pub(super) fn iotlb_lookup(
    caches: &mut Caches,
    device: DeviceId,
    pasid: Option<Pasid>,
    addr: u64,
    access: Access,
) -> Option<IoTranslation> {
    caches
        .iotlb_serve(source_of(device), pasid, addr, access)
        .map(|(output, perms, entry)| IoTranslation {
            output,
            page_size: entry.size.bytes(),
            perms,
        })
}

/// Walks `table` for `access` at `addr` of a request with `pasid` (or without) in `domain`.
/// On success returns the translation and the IOTLB entry to cache. Only requests with a
/// PASID can page-fault: without one a missing page or right is unrecoverable.
pub(super) fn walk(
    view: &MemView,
    rules: &Rules,
    table: &Table,
    domain: DomainId,
    pasid: Option<Pasid>,
    addr: u64,
    access: Access,
) -> Result<(IoTranslation, IotlbEntry), Failure> {
    let walked = match table {
        Table::First(fs) => {
            // The PASID entry refuses these outright (SGN.5, SGN.6): no page request can help.
            if (access.exec && !fs.flags.ere) || (access.privileged && !fs.flags.sre) {
                return Err(Failure::before_walk(UnrecoverableReason::Other));
            }
            walk::first_stage_only(view, fs, &rules.fs, addr, access)
        }
        // Execute requests carry a PASID, and second-stage tables are only default domains.
        Table::Second(ss) => walk::second_stage_only(view, ss, &rules.ss, addr, access, false),
    }
    .map_err(|fault| failure(fault, pasid.is_some()))?;
    let mask = walked.page.bytes() - 1;
    let perms: Perms = if access.privileged {
        walked.supervisor
    } else {
        walked.user
    };
    let entry = IotlbEntry {
        base: addr & !mask,
        output: walked.output & !mask,
        size: IotlbSize::Page(walked.page),
        user: walked.user,
        supervisor: walked.supervisor,
        dirty: walked.dirty,
        domain,
        pasid,
        first_stage: matches!(table, Table::First(_)),
        rid_priv: false,
    };
    let translation = IoTranslation {
        output: walked.output,
        page_size: walked.page.bytes(),
        perms,
    };
    Ok((translation, entry))
}

/// What a walk fault means to a device: a missing page or missing right can be fixed by the
/// page's owner when the request `can_fault` (a page request); anything malformed or
/// unreadable cannot, nor anything at all for a request without PASID.
pub(super) fn failure(fault: WalkFault, can_fault: bool) -> Failure {
    use UnrecoverableReason::*;
    let (reason, stage) = match fault {
        WalkFault::First(FsFault::NotPresent) => (NotPresent, FaultStage::First),
        WalkFault::FirstDenied(_) => (Permission, FaultStage::First),
        WalkFault::First(FsFault::NonCanonical) => (OutOfRange, FaultStage::First),
        WalkFault::First(FsFault::Reserved) => (Walk, FaultStage::First),
        WalkFault::First(FsFault::RootAccess) => (RootFetch, FaultStage::First),
        WalkFault::First(FsFault::TableAccess | FsFault::AdUpdate | FsFault::Nested { .. }) => {
            (PteFetch, FaultStage::First)
        }
        WalkFault::Second(SsFault::NotPresent) => (NotPresent, FaultStage::Second),
        WalkFault::SecondDenied(_) => (Permission, FaultStage::Second),
        WalkFault::Second(SsFault::BeyondWidth) => (OutOfRange, FaultStage::Second),
        WalkFault::Second(SsFault::Reserved) => (Walk, FaultStage::Second),
        WalkFault::Second(SsFault::RootAccess) => (RootFetch, FaultStage::Second),
        WalkFault::Second(SsFault::TableAccess | SsFault::AdUpdate) => {
            (PteFetch, FaultStage::Second)
        }
    };
    if can_fault && matches!(reason, NotPresent | Permission) {
        return Failure::NotPresent;
    }
    Failure::Unrecoverable {
        reason,
        stage: Some(stage),
    }
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
        Granularity::NoPasid => caches.invalidate_untagged_iotlb(domain, None),
        Granularity::NoPasidRange { addr, size } => {
            for block in page_blocks(addr, size) {
                caches.invalidate_untagged_iotlb(domain, Some(block));
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
    use crate::vtd::walk::Denied;

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
    fn test_failure_recoverable_only_for_missing_pages_and_rights_with_pasid() {
        use UnrecoverableReason::*;
        let fatal = |reason, stage| Failure::Unrecoverable {
            reason,
            stage: Some(stage),
        };
        let first = |f, can_fault| failure(WalkFault::First(f), can_fault);
        assert_eq!(first(FsFault::NotPresent, true), Failure::NotPresent);
        let denied = |d| failure(WalkFault::FirstDenied(d), true);
        assert_eq!(denied(Denied::User), Failure::NotPresent);
        assert_eq!(denied(Denied::Write), Failure::NotPresent);
        assert_eq!(
            first(FsFault::Reserved, true),
            fatal(Walk, FaultStage::First)
        );
        assert_eq!(
            first(FsFault::NonCanonical, true),
            fatal(OutOfRange, FaultStage::First)
        );
        assert_eq!(
            first(FsFault::TableAccess, true),
            fatal(PteFetch, FaultStage::First)
        );
        assert_eq!(
            first(FsFault::RootAccess, true),
            fatal(RootFetch, FaultStage::First)
        );
        assert_eq!(
            failure(WalkFault::Second(SsFault::RootAccess), false),
            fatal(RootFetch, FaultStage::Second)
        );
    }

    #[test]
    fn test_failure_without_pasid_is_unrecoverable_with_its_stage() {
        use UnrecoverableReason::*;
        let fatal = |reason, stage| Failure::Unrecoverable {
            reason,
            stage: Some(stage),
        };
        assert_eq!(
            failure(WalkFault::First(FsFault::NotPresent), false),
            fatal(NotPresent, FaultStage::First)
        );
        assert_eq!(
            failure(WalkFault::FirstDenied(Denied::Write), false),
            fatal(Permission, FaultStage::First)
        );
        assert_eq!(
            failure(WalkFault::Second(SsFault::NotPresent), false),
            fatal(NotPresent, FaultStage::Second)
        );
        assert_eq!(
            failure(WalkFault::SecondDenied(Denied::Write), false),
            fatal(Permission, FaultStage::Second)
        );
        assert_eq!(
            failure(WalkFault::Second(SsFault::BeyondWidth), false),
            fatal(OutOfRange, FaultStage::Second)
        );
        assert_eq!(
            failure(WalkFault::Second(SsFault::Reserved), false),
            fatal(Walk, FaultStage::Second)
        );
    }
}
