//! Device-side Address Translation Services: a function's Translation Requests to the host
//! IOMMU, the ATC that caches their answers, and Invalidate Requests with their completion.
//! PCIe 6.0 §10.1-§10.3 (ATS), through the neutral `iommu` API.
//!
//! A device engine translates every page it touches with [`Ats::translate`] while holding an
//! [`AtsFence`]; [`Ats::invalidate`] (the device's `DeviceEndpoint::invalidate_atc`) drops the
//! covered entries and returns — the Invalidate Completion — only once every fence taken
//! before it is gone, so no access using a dropped translation is still in flight.
//!
//! Deadlock rules for users: never hold a fence while waiting for a page response or calling
//! anything that may invalidate this ATC on the same thread, and an IOMMU must not hold a lock
//! that `HostIommu::translate` takes while it waits in `invalidate_atc`.

pub mod atc;
mod fence;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use log::debug;

use crate::iommu::{
    Access, DeviceId, Granularity, HostIommu, IoTranslation, Pasid, TranslateFailure,
};
pub use atc::{Atc, AtcLookup, AtcStats, AtcTicket, ATC_CAPACITY};
pub use fence::AtsFence;
use fence::Fences;

/// How the device reaches memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AtsMode {
    /// Translation Requests, answers cached in the ATC; accesses use translated addresses.
    #[default]
    Translated,
    /// Every access is an untranslated request the IOMMU translates; nothing is cached.
    Untranslated,
}

/// One function's ATS: its ATC, mode and ATS Control.Enable. `Send + Sync`, shared by the
/// device's engine threads and the thread delivering invalidations.
pub struct Ats {
    device: DeviceId,
    iommu: Arc<dyn HostIommu>,
    translated: AtomicBool,
    enabled: AtomicBool,
    atc: Atc,
    fences: Fences,
}

impl std::fmt::Debug for Ats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ats")
            .field("device", &self.device)
            .field("mode", &self.mode())
            .field("enabled", &self.enabled())
            .field("atc", &self.atc.stats())
            .finish()
    }
}

impl Ats {
    /// ATS of `device` behind `iommu`, in `mode`, enabled. (A device behind an endpoint
    /// follows ATS Control.Enable from power-on with [`Ats::set_enabled`], so it starts
    /// disabled there, as the register does.)
    pub fn new(device: DeviceId, iommu: Arc<dyn HostIommu>, mode: AtsMode) -> Self {
        Ats {
            device,
            iommu,
            translated: AtomicBool::new(mode == AtsMode::Translated),
            enabled: AtomicBool::new(true),
            atc: Atc::new(),
            fences: Fences::default(),
        }
    }

    /// The requester.
    pub fn device(&self) -> DeviceId {
        self.device
    }

    /// The current mode.
    pub fn mode(&self) -> AtsMode {
        if self.translated.load(Ordering::Acquire) {
            AtsMode::Translated
        } else {
            AtsMode::Untranslated
        }
    }

    /// Switches mode; leaving Translated drops the ATC.
    pub fn set_mode(&self, mode: AtsMode) {
        let was = self
            .translated
            .swap(mode == AtsMode::Translated, Ordering::AcqRel);
        if was && mode == AtsMode::Untranslated {
            self.atc.flush();
        }
    }

    /// Whether ATS Control.Enable is set.
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }

    /// Follows ATS Control.Enable. While clear the function caches nothing and sends every
    /// access untranslated; clearing it drops the ATC (§10.5.1.3).
    pub fn set_enabled(&self, enabled: bool) {
        let was = self.enabled.swap(enabled, Ordering::AcqRel);
        if was && !enabled {
            debug!("{}: ATS disabled, ATC flushed", self.device);
            self.atc.flush();
        }
    }

    /// Whether translations are cached now.
    fn caching(&self) -> bool {
        self.translated.load(Ordering::Acquire) && self.enabled.load(Ordering::Acquire)
    }

    /// Takes a fence: hold it from before [`Ats::translate`] until the access using the
    /// translation is done. Never hold it while waiting for a page response.
    pub fn fence(&self) -> AtsFence<'_> {
        self.fences.take()
    }

    /// Translates `addr` for `access` by a request with `pasid`: an ATC hit, or (Translated
    /// mode, ATS enabled) a Translation Request whose answer is cached, or an untranslated
    /// request. Call it under a fence so that an invalidation waits for the access.
    pub fn translate(
        &self,
        pasid: Option<Pasid>,
        addr: u64,
        access: Access,
    ) -> Result<IoTranslation, TranslateFailure> {
        if !self.caching() {
            return self.iommu.translate(self.device, pasid, addr, access);
        }
        let ticket = match self.atc.lookup(pasid, addr, access) {
            AtcLookup::Hit(translation) => return Ok(translation),
            AtcLookup::Miss(ticket) => ticket,
        };
        self.ask(ticket, pasid, addr, access)
    }

    /// Translates `addr` as [`Ats::translate`] does and says how many bytes from `addr` on
    /// the ATC maps contiguously for `access` (see [`Atc::lookup_run`]; up to about `max`),
    /// or 0 when only the page of `addr` is known (a miss, or no caching). A copy engine
    /// asks once per physically contiguous run instead of once per page.
    pub fn translate_run(
        &self,
        pasid: Option<Pasid>,
        addr: u64,
        access: Access,
        max: u64,
    ) -> Result<(IoTranslation, u64), TranslateFailure> {
        if !self.caching() {
            let translation = self.iommu.translate(self.device, pasid, addr, access)?;
            return Ok((translation, 0));
        }
        let ticket = match self.atc.lookup_run(pasid, addr, access, max) {
            (AtcLookup::Hit(translation), extent) => return Ok((translation, extent)),
            (AtcLookup::Miss(ticket), _) => ticket,
        };
        Ok((self.ask(ticket, pasid, addr, access)?, 0))
    }

    /// A Translation Request after an ATC miss; the answer is cached under `ticket`. Kept out
    /// of line: the hit path of `translate` is the copy loop's.
    #[cold]
    #[inline(never)]
    fn ask(
        &self,
        ticket: AtcTicket,
        pasid: Option<Pasid>,
        addr: u64,
        access: Access,
    ) -> Result<IoTranslation, TranslateFailure> {
        let translation = self.iommu.translate(self.device, pasid, addr, access)?;
        // A completion granting less than asked is not cached: the access fails anyway.
        if translation.perms.allow(access) {
            self.atc.insert(ticket, pasid, addr, access, &translation);
        }
        Ok(translation)
    }

    /// An Invalidate Request: drops the entries `granularity` covers, then waits until every
    /// fence taken before is dropped. Returning is the Invalidate Completion.
    pub fn invalidate(&self, granularity: Granularity) {
        self.atc.invalidate(granularity);
        self.fences.wait_older();
    }

    /// ATC counters and occupancy (hits and misses count ATC lookups only: untranslated
    /// accesses are neither).
    pub fn stats(&self) -> AtcStats {
        self.atc.stats()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::thread;
    use std::time::Duration;

    use super::*;
    use crate::iommu::fake::FakeIommu;
    use crate::iommu::Perms;

    const DEV: DeviceId = DeviceId(0x0100);
    const RO: Perms = Perms {
        read: true,
        write: false,
        exec: false,
        privileged: false,
    };
    const RW: Perms = Perms {
        read: true,
        write: true,
        exec: false,
        privileged: false,
    };

    fn pasid(raw: u32) -> Option<Pasid> {
        Pasid::new(raw)
    }

    fn ats(mode: AtsMode) -> (Arc<FakeIommu>, Ats) {
        let iommu = Arc::new(FakeIommu::default());
        let ats = Ats::new(DEV, iommu.clone(), mode);
        (iommu, ats)
    }

    #[test]
    fn test_translate_run_spans_contiguous_cached_pages_up_to_a_gap() {
        let (iommu, ats) = ats(AtsMode::Translated);
        // Three contiguous pages, then one elsewhere, then one read-only.
        for (i, out) in [
            (0u64, 0x10_0000u64),
            (1, 0x10_1000),
            (2, 0x10_2000),
            (3, 0x50_0000),
        ] {
            iommu.map(pasid(1), 0x7000 + i * 0x1000, 0x1000, out, RW);
        }
        iommu.map(pasid(1), 0xb000, 0x1000, 0x10_4000, RO);
        for i in 0..5 {
            ats.translate(pasid(1), 0x7000 + i * 0x1000, Access::READ)
                .unwrap();
        }
        let (t, extent) = ats
            .translate_run(pasid(1), 0x7800, Access::WRITE, 1 << 20)
            .unwrap();
        assert_eq!((t.output, extent), (0x10_0800, 0x2800), "stops at the gap");
        let (_, short) = ats
            .translate_run(pasid(1), 0x7800, Access::WRITE, 0x100)
            .unwrap();
        assert_eq!(short, 0x800, "no further than asked, beyond the first page");
        let (_, alone) = ats
            .translate_run(pasid(1), 0xa000, Access::WRITE, 1 << 20)
            .unwrap();
        assert_eq!(
            alone, 0x1000,
            "the read-only page is no part of a write run"
        );
        assert_eq!(iommu.calls(), 5, "all from the ATC");
    }

    #[test]
    fn test_translate_run_on_a_miss_knows_only_the_page() {
        let (iommu, ats) = ats(AtsMode::Translated);
        iommu.map(pasid(1), 0x7000, 0x2000, 0x10_0000, RW);
        let (t, extent) = ats
            .translate_run(pasid(1), 0x7010, Access::READ, 1 << 20)
            .unwrap();
        assert_eq!((t.output, extent), (0x10_0010, 0));
    }

    #[test]
    fn test_translate_same_page_twice_hits_atc() {
        let (iommu, ats) = ats(AtsMode::Translated);
        iommu.map(pasid(1), 0x7000, 0x1000, 0x4_2000, RW);
        let first = ats.translate(pasid(1), 0x7010, Access::READ).unwrap();
        let second = ats.translate(pasid(1), 0x7ff8, Access::WRITE).unwrap();
        assert_eq!((first.output, second.output), (0x4_2010, 0x4_2ff8));
        assert_eq!(second.page_size, 0x1000);
        assert_eq!(iommu.calls(), 1);
        let stats = ats.stats();
        assert_eq!((stats.hits, stats.misses, stats.entries), (1, 1, 1));
    }

    #[test]
    fn test_translate_write_on_read_only_entry_misses_and_asks_again() {
        let (iommu, ats) = ats(AtsMode::Translated);
        iommu.map(pasid(1), 0x7000, 0x1000, 0x4_2000, RO);
        ats.translate(pasid(1), 0x7000, Access::READ).unwrap();
        assert_eq!(
            ats.translate(pasid(1), 0x7000, Access::WRITE),
            Err(TranslateFailure::NotPresent)
        );
        assert_eq!(
            iommu.calls(),
            2,
            "the read-only entry did not satisfy the write"
        );
        iommu.map(pasid(1), 0x7000, 0x1000, 0x4_2000, RW);
        assert!(ats.translate(pasid(1), 0x7000, Access::WRITE).is_ok());
        assert!(ats.translate(pasid(1), 0x7000, Access::WRITE).is_ok());
        assert_eq!(
            iommu.calls(),
            3,
            "the upgraded entry replaced the read-only one"
        );
        assert_eq!(ats.stats().entries, 1);
    }

    #[test]
    fn test_translate_large_pages_cover_every_4k_page() {
        let (iommu, ats) = ats(AtsMode::Translated);
        iommu.map(pasid(2), 0x20_0000, 0x20_0000, 0x8000_0000, RW);
        iommu.map(None, 0x4000_0000, 0x4000_0000, 0x1_0000_0000, RO);
        for off in [0, 0x1000, 0x1f_f000, 0x1f_ffff] {
            let t = ats
                .translate(pasid(2), 0x20_0000 + off, Access::WRITE)
                .unwrap();
            assert_eq!((t.output, t.page_size), (0x8000_0000 + off, 0x20_0000));
        }
        for off in [0, 0x3fff_f000] {
            let t = ats
                .translate(None, 0x4000_0000 + off, Access::READ)
                .unwrap();
            assert_eq!(t.output, 0x1_0000_0000 + off);
        }
        assert_eq!(iommu.calls(), 2);
        assert_eq!(ats.stats().entries, 2);
    }

    #[test]
    fn test_translate_failure_is_not_cached() {
        let (iommu, ats) = ats(AtsMode::Translated);
        assert!(ats.translate(pasid(1), 0x1000, Access::READ).is_err());
        assert!(ats.translate(pasid(1), 0x1000, Access::READ).is_err());
        assert_eq!(iommu.calls(), 2);
        assert_eq!(ats.stats().entries, 0);
    }

    #[test]
    fn test_untranslated_mode_never_caches() {
        let (iommu, ats) = ats(AtsMode::Untranslated);
        iommu.map(pasid(1), 0x7000, 0x1000, 0x4_2000, RW);
        for _ in 0..3 {
            assert_eq!(
                ats.translate(pasid(1), 0x7008, Access::READ)
                    .unwrap()
                    .output,
                0x4_2008
            );
        }
        assert_eq!(iommu.calls(), 3);
        assert_eq!(ats.stats(), AtcStats::default());
    }

    #[test]
    fn test_disabled_ats_never_caches_and_disabling_flushes() {
        let (iommu, ats) = ats(AtsMode::Translated);
        iommu.map(pasid(1), 0x7000, 0x1000, 0x4_2000, RW);
        ats.translate(pasid(1), 0x7000, Access::READ).unwrap();
        assert_eq!(ats.stats().entries, 1);
        ats.set_enabled(false);
        assert_eq!(ats.stats().entries, 0, "clearing Enable flushed the ATC");
        ats.translate(pasid(1), 0x7000, Access::READ).unwrap();
        ats.translate(pasid(1), 0x7000, Access::READ).unwrap();
        assert_eq!(iommu.calls(), 3);
        assert_eq!(ats.stats().entries, 0);
        ats.set_enabled(true);
        ats.translate(pasid(1), 0x7000, Access::READ).unwrap();
        ats.translate(pasid(1), 0x7000, Access::READ).unwrap();
        assert_eq!(iommu.calls(), 4);
    }

    #[test]
    fn test_set_mode_untranslated_flushes_atc() {
        let (iommu, ats) = ats(AtsMode::Translated);
        iommu.map(None, 0x7000, 0x1000, 0x4_2000, RW);
        ats.translate(None, 0x7000, Access::READ).unwrap();
        ats.set_mode(AtsMode::Untranslated);
        assert_eq!(
            (ats.mode(), ats.stats().entries),
            (AtsMode::Untranslated, 0)
        );
        ats.set_mode(AtsMode::Translated);
        ats.translate(None, 0x7000, Access::READ).unwrap();
        assert_eq!(ats.stats().entries, 1);
    }

    /// Fills the ATC with a 4K page of PASIDs 1 and 2 and of no PASID, and a 2M page of PASID 1.
    fn populated() -> (Arc<FakeIommu>, Ats) {
        let (iommu, ats) = ats(AtsMode::Translated);
        for p in [pasid(1), pasid(2), None] {
            iommu.map(p, 0x1000, 0x1000, 0x9000, RW);
            ats.translate(p, 0x1000, Access::READ).unwrap();
        }
        iommu.map(pasid(1), 0x20_0000, 0x20_0000, 0x40_0000, RW);
        ats.translate(pasid(1), 0x20_0000, Access::READ).unwrap();
        assert_eq!(ats.stats().entries, 4);
        (iommu, ats)
    }

    /// Whether `addr` of `p` still hits without asking the IOMMU (which now maps nothing).
    fn cached(ats: &Ats, p: Option<Pasid>, addr: u64) -> bool {
        ats.translate(p, addr, Access::READ).is_ok()
    }

    #[test]
    fn test_invalidate_domain_drops_every_entry() {
        let (iommu, ats) = populated();
        iommu.unmap_all();
        ats.invalidate(Granularity::Domain);
        assert_eq!(ats.stats().entries, 0);
        assert!(!cached(&ats, None, 0x1000));
        assert_eq!(ats.stats().invalidations, 1);
    }

    #[test]
    fn test_invalidate_pasid_drops_only_that_pasid() {
        let (iommu, ats) = populated();
        iommu.unmap_all();
        ats.invalidate(Granularity::Pasid(Pasid::new(1).unwrap()));
        assert_eq!(ats.stats().entries, 2);
        assert!(!cached(&ats, pasid(1), 0x1000));
        assert!(!cached(&ats, pasid(1), 0x20_0000));
        assert!(cached(&ats, pasid(2), 0x1000));
        assert!(cached(&ats, None, 0x1000));
    }

    #[test]
    fn test_invalidate_range_drops_overlapping_pages_of_every_size() {
        let (iommu, ats) = populated();
        iommu.unmap_all();
        let p1 = Pasid::new(1).unwrap();
        // One byte inside the 2M page: the whole large page goes, the 4K page stays.
        ats.invalidate(Granularity::Range {
            pasid: p1,
            addr: 0x3f_ffff,
            size: 1,
        });
        assert!(!cached(&ats, pasid(1), 0x20_0000));
        assert!(cached(&ats, pasid(1), 0x1000));
        // A range ending just before the 4K page leaves it; one reaching its first byte drops it.
        ats.invalidate(Granularity::Range {
            pasid: p1,
            addr: 0,
            size: 0x1000,
        });
        assert!(cached(&ats, pasid(1), 0x1000));
        ats.invalidate(Granularity::Range {
            pasid: p1,
            addr: 0x800,
            size: 0x801,
        });
        assert!(!cached(&ats, pasid(1), 0x1000));
        assert!(cached(&ats, pasid(2), 0x1000), "other PASIDs untouched");
        assert!(
            cached(&ats, None, 0x1000),
            "entries without PASID untouched"
        );
    }

    #[test]
    fn test_invalidate_no_pasid_drops_only_entries_without_pasid() {
        let (iommu, ats) = populated();
        iommu.unmap_all();
        ats.invalidate(Granularity::NoPasid);
        assert_eq!(ats.stats().entries, 3);
        assert!(!cached(&ats, None, 0x1000));
        assert!(cached(&ats, pasid(1), 0x1000));
        assert!(cached(&ats, pasid(2), 0x1000));
        assert!(cached(&ats, pasid(1), 0x20_0000));
    }

    #[test]
    fn test_invalidate_no_pasid_range_drops_overlapping_entries_without_pasid() {
        let (iommu, ats) = populated();
        iommu.map(None, 0x20_0000, 0x20_0000, 0x80_0000, RW);
        ats.translate(None, 0x20_0000, Access::READ).unwrap();
        iommu.unmap_all();
        // Ends just before the 4K page: nothing goes.
        ats.invalidate(Granularity::NoPasidRange {
            addr: 0,
            size: 0x1000,
        });
        assert!(cached(&ats, None, 0x1000));
        // One byte of the 2M page without PASID: it goes, PASID 1's 2M page stays.
        ats.invalidate(Granularity::NoPasidRange {
            addr: 0x3f_ffff,
            size: 1,
        });
        assert!(!cached(&ats, None, 0x20_0000));
        assert!(cached(&ats, pasid(1), 0x20_0000));
        assert!(cached(&ats, None, 0x1000));
        ats.invalidate(Granularity::NoPasidRange {
            addr: 0x1800,
            size: 0x10,
        });
        assert!(!cached(&ats, None, 0x1000));
        assert!(cached(&ats, pasid(1), 0x1000), "PASID entries untouched");
        assert!(cached(&ats, pasid(2), 0x1000));
    }

    #[test]
    fn test_invalidate_range_to_end_of_address_space_scans() {
        let (iommu, ats) = populated();
        iommu.unmap_all();
        ats.invalidate(Granularity::Range {
            pasid: Pasid::new(1).unwrap(),
            addr: 0x1000,
            size: u64::MAX,
        });
        assert_eq!(ats.stats().entries, 2);
    }

    /// A Domain invalidation on another thread; the channel says when it completed.
    fn invalidate_in_thread(ats: &Arc<Ats>) -> (mpsc::Receiver<()>, thread::JoinHandle<()>) {
        let (done_tx, done_rx) = mpsc::channel();
        let ats = ats.clone();
        let inv = thread::spawn(move || {
            ats.invalidate(Granularity::Domain);
            done_tx.send(()).unwrap();
        });
        (done_rx, inv)
    }

    #[test]
    fn test_invalidate_waits_for_an_older_fence() {
        let (_, ats) = ats(AtsMode::Translated);
        let ats = Arc::new(ats);
        let fence = ats.fence();
        let (done_rx, inv) = invalidate_in_thread(&ats);
        assert!(
            done_rx.recv_timeout(Duration::from_millis(50)).is_err(),
            "the invalidation completed while an older fence was held"
        );
        drop(fence);
        done_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        inv.join().unwrap();
    }

    #[test]
    fn test_invalidate_does_not_wait_for_a_younger_fence() {
        let (_, ats) = ats(AtsMode::Translated);
        let ats = Arc::new(ats);
        let older = ats.fence();
        let (done_rx, inv) = invalidate_in_thread(&ats);
        // Wait until the invalidation closed the epoch: a new fence then lands in a newer one.
        while ats.fences.epoch() == 0 {
            thread::yield_now();
        }
        let younger = ats.fence();
        drop(older);
        done_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        inv.join().unwrap();
        drop(younger);
    }

    #[test]
    fn test_invalidate_without_fences_returns_at_once() {
        let (_, ats) = ats(AtsMode::Translated);
        drop(ats.fence());
        ats.invalidate(Granularity::Domain);
        ats.invalidate(Granularity::Domain);
    }

    #[test]
    fn test_translate_privileged_and_user_entries_are_separate() {
        let (iommu, ats) = ats(AtsMode::Translated);
        let sup = Perms {
            privileged: true,
            ..RW
        };
        iommu.map(pasid(1), 0x1000, 0x1000, 0x9000, sup);
        let privileged = Access {
            privileged: true,
            ..Access::READ
        };
        ats.translate(pasid(1), 0x1000, privileged).unwrap();
        ats.translate(pasid(1), 0x1000, Access::READ).unwrap();
        assert_eq!(
            iommu.calls(),
            2,
            "a supervisor entry does not answer a user request"
        );
        assert_eq!(ats.stats().entries, 2);
    }

    #[test]
    fn test_ats_is_shared_between_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<Ats>();
        shared::<AtsFence<'static>>();
    }
}
