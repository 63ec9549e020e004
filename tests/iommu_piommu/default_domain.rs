//! Default domains of the physical model through the neutral API: requests without PASID
//! translated by identity, blocked, first-stage (4-level, 4 KiB / 2 MiB pages) and
//! second-stage (3- and 4-level) tables built in guest RAM as Linux's intel-iommu builds its
//! DMA domains; their faults unrecoverable and reported with the table that failed; their
//! IOTLB entries until each granularity invalidates them; `set_default_domain` and `rebind`
//! invalidating the device's ATC; walks in each device's own DMA map.

use common_vtd::dma_domain::{fl_leaf, sl_leaf, DmaDomain, FL_TABLE};
use vsvm::ats::{Ats, AtsMode};
use vsvm::iommu::{
    DefaultDomain, FaultStage, PageTable, PagingLevels, SecondStageTable, UnrecoverableFault,
};
use vsvm::mem::GuestMemory;
use vsvm::vfio_user::DmaUnmapRequest;

use super::*;

/// IOVAs of Linux's IOVA allocator (top-down below the DMA mask): a 4 KiB page, a 2 MiB page,
/// a read-only page, and a hole.
const IOVA_4K: u64 = 0xffff_f000;
const IOVA_2M: u64 = 0xffc0_0000;
const IOVA_RO: u64 = 0xfffe_e000;
const IOVA_HOLE: u64 = 0xfffe_0000;
const GPA_RO: u64 = 0x0031_0000;

/// A DMA domain's tables (first stage, or second stage of `levels`): `IOVA_4K`, `IOVA_2M`
/// (read-write) and `IOVA_RO` mapped.
fn dma_domain(ram: &mut GuestRam, levels: Option<u8>) -> (DmaDomain, DefaultDomain) {
    let dma = match levels {
        None => DmaDomain::first_stage(ram),
        Some(levels) => DmaDomain::second_stage(ram, levels),
    };
    dma.map_4k(ram, IOVA_4K, GPA_4K, true);
    dma.map_2m(ram, IOVA_2M, GPA_2M, true);
    dma.map_4k(ram, IOVA_RO, GPA_RO, false);
    (dma, dma.domain())
}

fn first_stage_domain(ram: &mut GuestRam) -> (Tree, DefaultDomain) {
    let (dma, domain) = dma_domain(ram, None);
    (dma.tree, domain)
}

fn second_stage_domain(ram: &mut GuestRam, levels: u8) -> (Tree, DefaultDomain) {
    let (dma, domain) = dma_domain(ram, Some(levels));
    (dma.tree, domain)
}

impl Rig {
    fn untagged(&self, iova: u64, access: Access) -> Result<IoTranslation, TranslateFailure> {
        self.iommu.translate(DEV, None, iova, access)
    }

    fn set_default(&self, domain: DefaultDomain) {
        self.iommu.set_default_domain(DEV, domain).unwrap();
    }

    /// Unrecoverable faults reported for requests without PASID.
    fn untagged_faults(&self) -> Vec<UnrecoverableFault> {
        let faults = self.faults.seen().into_iter().filter_map(|f| match f {
            IommuFault::Unrecoverable(u) if u.pasid.is_none() => Some(u),
            _ => None,
        });
        faults.collect()
    }
}

fn fault(
    addr: u64,
    access: Access,
    reason: UnrecoverableReason,
    stage: Option<FaultStage>,
) -> UnrecoverableFault {
    UnrecoverableFault {
        device: DEV,
        pasid: None,
        addr,
        access,
        reason,
        stage,
    }
}

#[test]
fn test_attached_device_default_domain_is_identity() {
    let rig = Rig::new();
    let t = rig.untagged(0x1234_5678, WRITE).unwrap();
    assert_eq!(t.output, 0x1234_5678);
    rig.set_default(DefaultDomain::Blocked(UnrecoverableReason::Other));
    rig.set_default(DefaultDomain::Identity);
    assert_eq!(rig.untagged(0x42_0000, READ).unwrap().output, 0x42_0000);
    assert!(rig.untagged_faults().is_empty());
}

#[test]
fn test_blocked_default_domain_fails_with_its_reason_and_reports_it() {
    let rig = Rig::new();
    rig.set_default(DefaultDomain::Blocked(UnrecoverableReason::BadPasidEntry));
    assert_eq!(
        rig.untagged(0x1000, READ),
        unrecoverable(UnrecoverableReason::BadPasidEntry)
    );
    assert_eq!(
        rig.untagged_faults(),
        [fault(
            0x1000,
            READ,
            UnrecoverableReason::BadPasidEntry,
            None
        )]
    );
    // Requests with a PASID do not use the default domain.
    rig.bind(1);
    assert_eq!(rig.output(1, VA_4K), GPA_4K);
}

#[test]
fn test_first_stage_default_domain_translates_4k_and_2m_pages() {
    let mut rig = Rig::new();
    let (tree, domain) = first_stage_domain(&mut rig.ram);
    rig.set_default(domain);
    let t = rig.untagged(IOVA_4K + 0x123, WRITE).unwrap();
    assert_eq!((t.output, t.page_size), (GPA_4K + 0x123, PAGE));
    assert!(t.perms.read && t.perms.write && !t.perms.privileged);
    let t = rig.untagged(IOVA_2M + 0x1_2345, READ).unwrap();
    assert_eq!((t.output, t.page_size), (GPA_2M + 0x1_2345, 2 << 20));
    let t = rig.untagged(IOVA_RO + 8, READ).unwrap();
    assert!(t.perms.read && !t.perms.write, "read-only page");
    // Linux sets A and D itself: the walk leaves the entries as Linux wrote them.
    assert_eq!(
        rig.ram.read(tree.slot(&rig.ram, IOVA_RO, 1)),
        GPA_RO | fl_leaf(false)
    );
    assert!(rig.untagged_faults().is_empty());
}

#[test]
fn test_first_stage_default_domain_faults_are_unrecoverable_and_reported() {
    let mut rig = Rig::new();
    let (_, domain) = first_stage_domain(&mut rig.ram);
    rig.set_default(domain);
    let first = Some(FaultStage::First);
    assert_eq!(
        rig.untagged(IOVA_HOLE, READ),
        unrecoverable(UnrecoverableReason::NotPresent)
    );
    assert_eq!(
        rig.untagged(IOVA_RO, WRITE),
        unrecoverable(UnrecoverableReason::Permission)
    );
    assert_eq!(
        rig.untagged(1 << 47, READ),
        unrecoverable(UnrecoverableReason::OutOfRange),
        "not canonical"
    );
    assert_eq!(
        rig.untagged_faults(),
        [
            fault(IOVA_HOLE, READ, UnrecoverableReason::NotPresent, first),
            fault(IOVA_RO, WRITE, UnrecoverableReason::Permission, first),
            fault(1 << 47, READ, UnrecoverableReason::OutOfRange, first),
        ]
    );
    assert!(rig.endpoint.responses().is_empty(), "no page request path");
    assert_eq!(rig.iommu.pending_page_requests(), 0);
}

#[test]
fn test_second_stage_default_domain_translates_with_three_and_four_levels() {
    for levels in [3, 4] {
        let mut rig = Rig::new();
        let (_, domain) = second_stage_domain(&mut rig.ram, levels);
        rig.set_default(domain);
        let t = rig.untagged(IOVA_4K + 0xabc, WRITE).unwrap();
        assert_eq!((t.output, t.page_size), (GPA_4K + 0xabc, PAGE), "{levels}");
        let t = rig.untagged(IOVA_2M + 0x10_0000, READ).unwrap();
        assert_eq!((t.output, t.page_size), (GPA_2M + 0x10_0000, 2 << 20));
        let second = Some(FaultStage::Second);
        assert_eq!(
            rig.untagged(IOVA_RO, WRITE),
            unrecoverable(UnrecoverableReason::Permission)
        );
        assert_eq!(
            rig.untagged(IOVA_HOLE, READ),
            unrecoverable(UnrecoverableReason::NotPresent)
        );
        let beyond = 1 << 39;
        let expected = if levels == 3 {
            UnrecoverableReason::OutOfRange
        } else {
            UnrecoverableReason::NotPresent
        };
        assert_eq!(rig.untagged(beyond, READ), unrecoverable(expected));
        assert_eq!(
            rig.untagged_faults(),
            [
                fault(IOVA_RO, WRITE, UnrecoverableReason::Permission, second),
                fault(IOVA_HOLE, READ, UnrecoverableReason::NotPresent, second),
                fault(beyond, READ, expected, second),
            ]
        );
    }
}

#[test]
fn test_default_domain_targets_the_unit_cannot_walk_are_refused() {
    let rig = Rig::new();
    let five = DefaultDomain::SecondStage(SecondStageTable {
        root: 0x5000,
        levels: 5,
    });
    assert!(matches!(
        rig.iommu.set_default_domain(DEV, five),
        Err(IommuError::InvalidTarget(_))
    ));
    assert_eq!(
        rig.iommu.set_default_domain(OTHER, DefaultDomain::Identity),
        Err(IommuError::NotAttached(OTHER))
    );
    assert!(rig.endpoint.invalidations().is_empty(), "nothing changed");
}

#[test]
fn test_no_pasid_iotlb_entries_stay_until_each_granularity_drops_them() {
    let mut rig = Rig::new();
    let (tree, domain) = first_stage_domain(&mut rig.ram);
    rig.set_default(domain);
    rig.bind(1);
    let leaf = tree.slot(&rig.ram, IOVA_4K, 1);
    let remap = |rig: &Rig, gpa: u64| rig.ram.write(leaf, gpa | fl_leaf(true));
    let out = |rig: &Rig| rig.untagged(IOVA_4K, READ).unwrap().output;
    assert_eq!(out(&rig), GPA_4K);
    assert_eq!(rig.output(1, VA_4K), GPA_4K);
    let pte = rig.process.entry(&rig.ram, VA_4K, 1);
    rig.ram.write(pte, 0x0090_0000 | PAGE_USER_RW);

    // Neither a PASID's invalidations nor a range without PASID elsewhere drop the entry.
    remap(&rig, 0x0080_0000);
    rig.invalidate(CacheType::Iotlb, Granularity::Pasid(pasid(1)));
    let elsewhere = Granularity::NoPasidRange {
        addr: IOVA_4K - PAGE,
        size: PAGE,
    };
    rig.invalidate(CacheType::Iotlb, elsewhere);
    assert_eq!(out(&rig), GPA_4K, "IOTLB hit");
    // A range covering its last byte does.
    let covering = Granularity::NoPasidRange {
        addr: IOVA_4K + PAGE - 1,
        size: 1,
    };
    rig.invalidate(CacheType::Iotlb, covering);
    assert_eq!(out(&rig), 0x0080_0000);
    assert_eq!(rig.output(1, VA_4K), 0x0090_0000, "PASID 1 dropped above");

    // NoPasid drops every entry without PASID and no PASID's.
    remap(&rig, 0x0081_0000);
    rig.ram.write(pte, 0x0091_0000 | PAGE_USER_RW);
    rig.invalidate(CacheType::Iotlb, Granularity::NoPasid);
    assert_eq!(out(&rig), 0x0081_0000);
    assert_eq!(rig.output(1, VA_4K), 0x0090_0000, "PASID entry kept");

    // Domain drops both.
    remap(&rig, 0x0082_0000);
    rig.invalidate(CacheType::Iotlb, Granularity::Domain);
    assert_eq!(out(&rig), 0x0082_0000);
    assert_eq!(rig.output(1, VA_4K), 0x0091_0000);
}

#[test]
fn test_second_stage_iotlb_entries_drop_with_a_no_pasid_range() {
    let mut rig = Rig::new();
    let (tree, domain) = second_stage_domain(&mut rig.ram, 4);
    rig.set_default(domain);
    let pde = tree.slot(&rig.ram, IOVA_2M, 2);
    assert_eq!(rig.untagged(IOVA_2M, READ).unwrap().output, GPA_2M);
    rig.ram
        .write(pde, 0x0120_0000 | sl_leaf(true) | DMA_PTE_LARGE_PAGE);
    assert_eq!(
        rig.untagged(IOVA_2M + PAGE, READ).unwrap().output,
        GPA_2M + PAGE
    );
    rig.invalidate(
        CacheType::Iotlb,
        Granularity::NoPasidRange {
            addr: IOVA_2M + 0x1f_f000,
            size: PAGE,
        },
    );
    assert_eq!(rig.untagged(IOVA_2M, READ).unwrap().output, 0x0120_0000);
}

#[test]
fn test_set_default_domain_drops_cached_translations_and_flushes_the_atc() {
    let mut rig = Rig::new();
    let (_, first) = first_stage_domain(&mut rig.ram);
    rig.set_default(first);
    assert_eq!(rig.untagged(IOVA_4K, READ).unwrap().output, GPA_4K);
    let (tree, second) = second_stage_domain(&mut rig.ram, 3);
    tree.map(&mut rig.ram, IOVA_4K, 0x0077_0000, 1, sl_leaf(true));
    rig.set_default(second);
    assert_eq!(
        rig.untagged(IOVA_4K, READ).unwrap().output,
        0x0077_0000,
        "the old domain's IOTLB entry is gone"
    );
    assert_eq!(
        rig.endpoint.invalidations(),
        [Granularity::NoPasid, Granularity::NoPasid],
        "a device-TLB flush of requests without PASID per change"
    );
}

/// A device whose endpoint is its ATS: IOMMU invalidations reach a real ATC.
struct AtsPort(Arc<Ats>);

impl DeviceEndpoint for AtsPort {
    fn invalidate_atc(&self, granularity: Granularity) {
        self.0.invalidate(granularity);
    }
    fn page_response(&self, _: PageResponse) {}
}

#[test]
fn test_set_default_domain_drops_atc_entries_without_pasid_and_keeps_the_others() {
    let mut rig = Rig::new();
    let (_, domain) = first_stage_domain(&mut rig.ram);
    let ats = Arc::new(Ats::new(OTHER, rig.iommu.clone(), AtsMode::Translated));
    rig.iommu
        .attach(OTHER, Arc::new(AtsPort(ats.clone())))
        .unwrap();
    let table = BindTarget::GuestPageTable(rig.process.page_table(FirstStageFlags::default()));
    rig.iommu.bind(OTHER, pasid(1), table).unwrap();
    assert_eq!(ats.translate(None, IOVA_4K, READ).unwrap().output, IOVA_4K);
    assert_eq!(
        ats.translate(Some(pasid(1)), VA_4K, READ).unwrap().output,
        GPA_4K
    );
    assert_eq!(ats.stats().entries, 2);
    rig.iommu.set_default_domain(OTHER, domain).unwrap();
    let stats = ats.stats();
    assert_eq!((stats.entries, stats.invalidations), (1, 1));
    assert_eq!(
        ats.translate(Some(pasid(1)), VA_4K, READ).unwrap().output,
        GPA_4K
    );
    assert_eq!(
        ats.stats().hits,
        stats.hits + 1,
        "the PASID entry still hits"
    );
    assert_eq!(ats.translate(None, IOVA_4K, READ).unwrap().output, GPA_4K);
    assert_eq!(ats.stats().misses, stats.misses + 1, "asked the new domain");
}

// ---- rebind ----

#[test]
fn test_rebind_keeps_pending_page_requests_while_unbind_aborts_them() {
    let mut rig = Rig::new();
    rig.bind(1);
    assert_eq!(rig.output(1, VA_4K), GPA_4K);
    let other = Process::new(&mut rig.ram, false);
    other.map_4k(&mut rig.ram, VA_4K, 0x0044_0000, PAGE_USER_RW);
    let req = request(1, 3, true);
    rig.iommu.page_request(req);
    assert_eq!(rig.iommu.pending_page_requests(), 1);
    let target = BindTarget::GuestPageTable(other.page_table(FirstStageFlags::default()));
    rig.iommu.rebind(DEV, pasid(1), target).unwrap();
    assert_eq!(rig.endpoint.invalidations(), [Granularity::Pasid(pasid(1))]);
    assert_eq!(rig.iommu.pending_page_requests(), 1, "still pending");
    assert!(rig.endpoint.responses().is_empty());
    assert_eq!(
        rig.output(1, VA_4K),
        0x0044_0000,
        "the new table, not the IOTLB's"
    );
    rig.iommu.unbind(DEV, pasid(1)).unwrap();
    assert_eq!(
        rig.endpoint.responses(),
        [answer(&req, PageResponseCode::InvalidRequest)]
    );
    assert_eq!(rig.iommu.pending_page_requests(), 0);
}

#[test]
fn test_rebind_of_unbound_pasid_or_other_kind_is_refused() {
    let rig = Rig::new();
    let table = BindTarget::GuestPageTable(rig.process.page_table(FirstStageFlags::default()));
    assert_eq!(
        rig.iommu.rebind(DEV, pasid(2), table),
        Err(IommuError::NotBound {
            device: DEV,
            pasid: pasid(2)
        })
    );
    rig.bind(2);
    let guest = BindTarget::GuestPasidTable {
        dir: 0x1000,
        pasid_bits: 20,
    };
    assert!(matches!(
        rig.iommu.rebind(DEV, pasid(2), guest),
        Err(IommuError::InvalidTarget(_))
    ));
    assert_eq!(rig.output(2, VA_4K), GPA_4K, "the binding is unchanged");
    assert!(rig.endpoint.invalidations().is_empty());
}

// ---- per-device memory ----

/// An endpoint with its own DMA map.
struct OwnMemory {
    mem: GuestMemory,
}

impl DeviceEndpoint for OwnMemory {
    fn invalidate_atc(&self, _: Granularity) {}
    fn page_response(&self, _: PageResponse) {}
    fn dma_memory(&self) -> Option<GuestMemory> {
        Some(self.mem.clone())
    }
}

#[test]
fn test_each_device_walks_in_its_own_dma_map() {
    // The IOMMU's own memory is empty: every table below lives only in the devices' maps.
    let iommu = PhysicalIommu::new(VtdConfig::default(), GuestMemory::new());
    let (a, b) = (DeviceId(0x0100), DeviceId(0x0108));
    let (memfd_a, mem_a) = common_vtd::ram::shared_guest_memory(4 << 20);
    let mem_b = common_vtd::ram::guest_memory(4 << 20);
    // The same table layout in both RAMs, different frames at the end.
    let mut domains = Vec::new();
    for (mem, gpa) in [(&mem_a, 0x20_0000), (&mem_b, 0x30_0000)] {
        let mut ram = GuestRam::with_memory(mem.clone(), 4 << 20);
        let tree = Tree::new(&mut ram, 4, Space::default(), FL_TABLE);
        tree.map(&mut ram, IOVA_4K, gpa, 1, fl_leaf(true));
        domains.push(DefaultDomain::FirstStage(PageTable {
            root: tree.root,
            levels: PagingLevels::Four,
            flags: FirstStageFlags::default(),
        }));
    }
    for ((device, mem), domain) in [(a, &mem_a), (b, &mem_b)].into_iter().zip(domains) {
        let port = Arc::new(OwnMemory { mem: mem.clone() });
        iommu.attach(device, port).unwrap();
        iommu.set_default_domain(device, domain).unwrap();
    }
    let out = |device, iova| iommu.translate(device, None, iova, READ).map(|t| t.output);
    assert_eq!(out(a, IOVA_4K), Ok(0x20_0000));
    assert_eq!(out(b, IOVA_4K), Ok(0x30_0000));
    // A's client goes away: its maps are dropped. B keeps working; A's walks fail.
    mem_a.unmap(&DmaUnmapRequest::All).unwrap();
    let inv = CacheInvalidate {
        cache: CacheType::Iotlb,
        granularity: Granularity::NoPasid,
    };
    iommu.cache_invalidate(a, inv).unwrap();
    iommu.cache_invalidate(b, inv).unwrap();
    assert_eq!(
        out(a, IOVA_4K),
        Err(TranslateFailure::Unrecoverable(
            UnrecoverableReason::RootFetch
        ))
    );
    assert_eq!(out(b, IOVA_4K + 8), Ok(0x30_0008));
    // It reconnects and maps the same RAM again, on the same handle: A works again.
    let request = vsvm::vfio_user::DmaMapRequest {
        address: 0,
        size: 4 << 20,
        fd_offset: 0,
        readable: true,
        writable: true,
    };
    mem_a.map(&request, Some(memfd_a.into())).unwrap();
    assert_eq!(out(a, IOVA_4K + 16), Ok(0x20_0010));
}
