//! The physical VT-d model behind the neutral host-IOMMU API (`vtd::piommu`), driven as the
//! vIOMMU and a device drive it: x86 process page tables and scalable-mode PASID tables built
//! in memfd guest RAM the way Linux builds them, bound through `HostIommu`, translated and
//! invalidated; page requests through the fault reporting framework to a handler, and page
//! responses back to a recording device endpoint.

mod common_vtd;
#[path = "iommu_piommu/default_domain.rs"]
mod default_domain;

use std::sync::mpsc;
use std::sync::{Arc, Mutex, Weak};
use std::thread;
use std::time::{Duration, Instant};

use common_vtd::process::Process;
use common_vtd::*;
use vsvm::iommu::{
    Access, BindTarget, CacheInvalidate, CacheType, DeviceEndpoint, DeviceId, FaultHandler,
    FirstStageFlags, Granularity, HostIommu, IoTranslation, IommuError, IommuFault, PageRequest,
    PageResponse, PageResponseCode, Pasid, TranslateFailure, UnrecoverableReason,
};
use vsvm::vtd::piommu::{PhysicalIommu, PRQ_DEPTH};
use vsvm::vtd::{RootTableType, VtdConfig};

const DEV: DeviceId = DeviceId(0x0018);
const OTHER: DeviceId = DeviceId(0x0020);
const LONG: Duration = Duration::from_secs(60);

/// A 4 KiB user page, a 2 MiB page and a 1 GiB page of the test process, and where they map.
const VA_4K: u64 = 0x0000_7f12_3456_7000;
const GPA_4K: u64 = 0x0030_5000;
const VA_2M: u64 = 0x0000_7f12_4000_0000;
const GPA_2M: u64 = 0x0060_0000;
const VA_1G: u64 = 0x0000_7f00_0000_0000;
const GPA_1G: u64 = 0x4000_0000;
/// Never mapped.
const VA_HOLE: u64 = 0x0000_7f12_3456_8000;

const NOT_PRESENT: Result<IoTranslation, TranslateFailure> = Err(TranslateFailure::NotPresent);

fn unrecoverable(reason: UnrecoverableReason) -> Result<IoTranslation, TranslateFailure> {
    Err(TranslateFailure::Unrecoverable(reason))
}

fn pasid(value: u32) -> Pasid {
    Pasid::new(value).unwrap()
}

/// A device's side of the IOMMU: records ATS invalidations and PRG responses.
#[derive(Default)]
struct Endpoint {
    invalidations: Mutex<Vec<Granularity>>,
    responses: Mutex<Vec<PageResponse>>,
}

impl DeviceEndpoint for Endpoint {
    fn invalidate_atc(&self, granularity: Granularity) {
        self.invalidations.lock().unwrap().push(granularity);
    }

    fn page_response(&self, resp: PageResponse) {
        self.responses.lock().unwrap().push(resp);
    }
}

impl Endpoint {
    fn invalidations(&self) -> Vec<Granularity> {
        self.invalidations.lock().unwrap().clone()
    }

    fn responses(&self) -> Vec<PageResponse> {
        let mut responses = self.responses.lock().unwrap().clone();
        responses.sort_by_key(|r| r.group);
        responses
    }
}

/// A fault handler that records and answers nothing.
#[derive(Default)]
struct Faults(Mutex<Vec<IommuFault>>);

impl FaultHandler for Faults {
    fn handle(&self, fault: &IommuFault) {
        self.0.lock().unwrap().push(*fault);
    }
}

impl Faults {
    fn seen(&self) -> Vec<IommuFault> {
        self.0.lock().unwrap().clone()
    }
}

/// Guest RAM with one process, the IOMMU, and device `DEV` attached with a recording endpoint
/// and a recording fault handler.
struct Rig {
    ram: GuestRam,
    process: Process,
    iommu: Arc<PhysicalIommu>,
    endpoint: Arc<Endpoint>,
    faults: Arc<Faults>,
}

impl Rig {
    fn new() -> Self {
        Self::with_timeout(LONG)
    }

    fn with_timeout(timeout: Duration) -> Self {
        let mut ram = GuestRam::new(32 << 20);
        let process = Process::new(&mut ram, false);
        process.map_4k(&mut ram, VA_4K, GPA_4K, PAGE_USER_RW);
        process.map_2m(&mut ram, VA_2M, GPA_2M, PAGE_USER_RW);
        process.map_1g(&mut ram, VA_1G, GPA_1G, PAGE_USER_RW);
        let config = VtdConfig::default();
        let iommu = Arc::new(PhysicalIommu::with_timeout(
            config,
            ram.mem.clone(),
            timeout,
        ));
        let endpoint = Arc::new(Endpoint::default());
        iommu.attach(DEV, endpoint.clone()).unwrap();
        let faults = Arc::new(Faults::default());
        iommu.register_fault_handler(DEV, faults.clone()).unwrap();
        Rig {
            ram,
            process,
            iommu,
            endpoint,
            faults,
        }
    }

    fn bind(&self, p: u32) {
        self.bind_table(p, &self.process, FirstStageFlags::default());
    }

    fn bind_table(&self, p: u32, process: &Process, flags: FirstStageFlags) {
        let target = BindTarget::GuestPageTable(process.page_table(flags));
        self.iommu.bind(DEV, pasid(p), target).unwrap();
    }

    fn translate(
        &self,
        p: u32,
        va: u64,
        access: Access,
    ) -> Result<IoTranslation, TranslateFailure> {
        self.iommu.translate(DEV, Some(pasid(p)), va, access)
    }

    fn output(&self, p: u32, va: u64) -> u64 {
        self.translate(p, va, READ).unwrap().output
    }

    fn invalidate(&self, cache: CacheType, granularity: Granularity) {
        let inv = CacheInvalidate { cache, granularity };
        self.iommu.cache_invalidate(DEV, inv).unwrap();
    }

    fn unrecoverable_seen(&self) -> Vec<(Option<Pasid>, u64, UnrecoverableReason)> {
        self.faults
            .seen()
            .into_iter()
            .filter_map(|f| match f {
                IommuFault::Unrecoverable(u) => Some((u.pasid, u.addr, u.reason)),
                IommuFault::PageRequest(_) => None,
            })
            .collect()
    }
}

/// A write page request of group `group`, PASID `p`.
fn request(p: u32, group: u16, last: bool) -> PageRequest {
    PageRequest {
        device: DEV,
        pasid: Pasid::new(p),
        addr: VA_HOLE,
        access: Access::WRITE,
        group,
        last,
    }
}

fn answer(req: &PageRequest, code: PageResponseCode) -> PageResponse {
    PageResponse::to(req, code)
}

/// Waits up to 5 s for `done`.
fn eventually(done: impl Fn() -> bool) -> bool {
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        if done() {
            return true;
        }
        thread::sleep(Duration::from_millis(2));
    }
    done()
}

/// Root, context and PASID structures over the rig's RAM; only the PASID helpers are used
/// (the physical model has no root table of its own).
struct PasidTables<'a>(&'a mut GuestRam);

impl Structures for PasidTables<'_> {
    fn ram(&mut self) -> &mut GuestRam {
        self.0
    }
    fn root_addr(&self) -> u64 {
        0
    }
    fn root_kind(&self) -> RootTableType {
        RootTableType::Scalable
    }
}

/// A PASID directory for 2^20 PASIDs, as Linux allocates it (2^14 entries of 8 bytes).
fn pasid_dir(ram: &mut GuestRam) -> u64 {
    ram.alloc((1 << 14) * 8 / PAGE)
}

// ---- translation through a bound table ----

#[test]
fn test_bound_guest_table_translates_4k_2m_1g_pages() {
    let rig = Rig::new();
    rig.bind(1);
    let cases = [
        (VA_4K + 0x123, GPA_4K + 0x123, 1 << 12),
        (VA_2M + 0x1_2345, GPA_2M + 0x1_2345, 1 << 21),
        (VA_1G + 0x1234_5678, GPA_1G + 0x1234_5678, 1 << 30),
    ];
    for (va, gpa, page_size) in cases {
        let t = rig.translate(1, va, READ).unwrap();
        assert_eq!((t.output, t.page_size), (gpa, page_size), "va {va:#x}");
        assert!(t.perms.read && t.perms.write && !t.perms.privileged);
    }
}

#[test]
fn test_process_binding_walks_like_a_guest_table() {
    let rig = Rig::new();
    let target = BindTarget::Process(rig.process.page_table(FirstStageFlags::default()));
    rig.iommu.bind(DEV, pasid(3), target).unwrap();
    assert_eq!(rig.output(3, VA_4K + 8), GPA_4K + 8);
}

#[test]
fn test_five_level_table_translates_57_bit_addresses() {
    let mut rig = Rig::new();
    let process = Process::new(&mut rig.ram, true);
    let va = 0x00ff_0000_0000_1000;
    process.map_4k(&mut rig.ram, va, GPA_4K, PAGE_USER_RW);
    rig.bind_table(2, &process, FirstStageFlags::default());
    assert_eq!(rig.output(2, va + 0x10), GPA_4K + 0x10);
    rig.bind(1);
    assert_eq!(
        rig.translate(1, va, READ),
        unrecoverable(UnrecoverableReason::OutOfRange),
        "not canonical with 4 levels"
    );
}

#[test]
fn test_user_and_write_permissions() {
    let mut rig = Rig::new();
    let (ro, kernel, nx) = (0x1000_0000, 0x1000_1000, 0x1000_2000);
    let p = rig.process;
    p.map_4k(&mut rig.ram, ro, 0x10_0000, PAGE_PRESENT | PAGE_USER);
    p.map_4k(&mut rig.ram, kernel, 0x10_1000, PAGE_PRESENT);
    p.map_4k(&mut rig.ram, nx, 0x10_2000, PAGE_USER_RW | PAGE_NX);
    rig.bind(1);
    let t = rig.translate(1, ro, READ).unwrap();
    assert!(t.perms.read && !t.perms.write, "{:?}", t.perms);
    assert_eq!(rig.translate(1, ro, WRITE), NOT_PRESENT);
    assert_eq!(
        rig.translate(1, kernel, READ),
        NOT_PRESENT,
        "user to supervisor page"
    );
    assert_eq!(rig.translate(1, nx, EXEC), NOT_PRESENT);
    assert!(rig.translate(1, VA_4K, EXEC).unwrap().perms.exec);
    assert!(
        rig.faults.seen().is_empty(),
        "permission faults are recoverable"
    );
}

#[test]
fn test_supervisor_requests_follow_sre_and_wpe() {
    let mut rig = Rig::new();
    let kernel_ro = 0x1000_1000;
    let p = rig.process;
    p.map_4k(&mut rig.ram, kernel_ro, 0x10_1000, PAGE_PRESENT);
    rig.bind(1);
    let sre = FirstStageFlags {
        supervisor: true,
        ..FirstStageFlags::default()
    };
    rig.bind_table(2, &p, sre);
    let wpe = FirstStageFlags {
        write_protect: true,
        ..sre
    };
    rig.bind_table(3, &p, wpe);
    let t = rig.translate(2, kernel_ro, SUP_READ).unwrap();
    assert!(t.perms.privileged && t.perms.read);
    assert_eq!(
        rig.translate(2, kernel_ro, SUP_WRITE).unwrap().output,
        0x10_1000
    );
    assert_eq!(
        rig.translate(3, kernel_ro, SUP_WRITE),
        NOT_PRESENT,
        "WPE: R/W applies"
    );
    assert_eq!(
        rig.translate(1, kernel_ro, SUP_READ),
        unrecoverable(UnrecoverableReason::Other),
        "no SRE: supervisor requests can never succeed"
    );
    assert_eq!(
        rig.unrecoverable_seen(),
        [(Some(pasid(1)), kernel_ro, UnrecoverableReason::Other)]
    );
}

#[test]
fn test_walk_sets_accessed_and_dirty_flags() {
    let rig = Rig::new();
    let pte = rig.process.entry(&rig.ram, VA_4K, 1);
    let pde = rig.process.entry(&rig.ram, VA_4K, 2);
    rig.ram.clear(pde, PAGE_ACCESSED);
    rig.bind(1);
    rig.translate(1, VA_4K, READ).unwrap();
    assert_eq!(
        rig.ram.read(pte) & (PAGE_ACCESSED | PAGE_DIRTY),
        PAGE_ACCESSED
    );
    assert_ne!(rig.ram.read(pde) & PAGE_ACCESSED, 0, "non-leaf A set too");
    rig.translate(1, VA_4K, WRITE).unwrap();
    assert_ne!(
        rig.ram.read(pte) & PAGE_DIRTY,
        0,
        "a write walks again to set D"
    );
}

#[test]
fn test_not_present_is_recoverable_and_not_reported() {
    let rig = Rig::new();
    rig.bind(1);
    assert_eq!(rig.translate(1, VA_HOLE, READ), NOT_PRESENT);
    assert!(rig.faults.seen().is_empty());
}

#[test]
fn test_reserved_bit_is_unrecoverable_and_reported() {
    let rig = Rig::new();
    let pte = rig.process.entry(&rig.ram, VA_4K, 1);
    rig.ram.set(pte, 1 << 50); // above the 48-bit address width
    rig.bind(1);
    assert_eq!(
        rig.translate(1, VA_4K + 4, WRITE),
        unrecoverable(UnrecoverableReason::Walk)
    );
    let seen = rig.faults.seen();
    let [IommuFault::Unrecoverable(fault)] = seen.as_slice() else {
        panic!("expected one unrecoverable fault, saw {seen:?}");
    };
    assert_eq!(fault.device, DEV);
    assert_eq!(fault.pasid, Some(pasid(1)));
    assert_eq!(fault.addr, VA_4K + 4);
    assert_eq!(fault.access, WRITE);
    assert_eq!(fault.reason, UnrecoverableReason::Walk);
}

#[test]
fn test_unreadable_top_level_table_is_unrecoverable_root_fetch() {
    let rig = Rig::new();
    let mut table = rig.process.page_table(FirstStageFlags::default());
    table.root = 0x8000_0000; // not in the DMA map
    let target = BindTarget::GuestPageTable(table);
    rig.iommu.bind(DEV, pasid(1), target).unwrap();
    assert_eq!(
        rig.translate(1, VA_4K, READ),
        unrecoverable(UnrecoverableReason::RootFetch)
    );
}

#[test]
fn test_unbound_pasid_and_unattached_device_are_pasid_invalid() {
    let rig = Rig::new();
    rig.bind(1);
    assert_eq!(
        rig.translate(2, VA_4K, READ),
        unrecoverable(UnrecoverableReason::PasidInvalid)
    );
    assert_eq!(
        rig.unrecoverable_seen(),
        [(Some(pasid(2)), VA_4K, UnrecoverableReason::PasidInvalid)]
    );
    for p in [None, Some(pasid(1))] {
        assert_eq!(
            rig.iommu.translate(OTHER, p, VA_4K, READ),
            unrecoverable(UnrecoverableReason::PasidInvalid),
            "no handler for OTHER: only logged"
        );
    }
}

#[test]
fn test_two_pasids_do_not_see_each_others_pages() {
    let mut rig = Rig::new();
    let other = Process::new(&mut rig.ram, false);
    other.map_4k(&mut rig.ram, VA_4K, 0x0050_0000, PAGE_USER_RW);
    rig.bind(1);
    rig.bind_table(2, &other, FirstStageFlags::default());
    assert_eq!(rig.output(1, VA_4K), GPA_4K);
    assert_eq!(rig.output(2, VA_4K), 0x0050_0000);
    assert_eq!(rig.translate(2, VA_2M, READ), NOT_PRESENT);
    assert_eq!(rig.output(1, VA_2M), GPA_2M);
}

#[test]
fn test_request_without_pasid_passes_through() {
    let rig = Rig::new();
    let t = rig.iommu.translate(DEV, None, 0x1234_5678, WRITE).unwrap();
    assert_eq!(t.output, 0x1234_5678);
    assert_eq!(t.page_base(), 0, "one aligned page covers everything");
    assert!(t.perms.write);
}

#[test]
fn test_many_bound_pasids() {
    let rig = Rig::new();
    for p in 1..=100_000 {
        rig.bind(p);
    }
    assert_eq!(rig.output(100_000, VA_4K), GPA_4K);
    assert_eq!(rig.output(77_777, VA_2M), GPA_2M);
}

/// The PASID state a device can make the model hold is bounded by the unit's PASID width
/// (ECAP.PSS): every PASID of an 8-bit unit binds, the first one past it is refused.
#[test]
fn test_bound_pasids_are_bounded_by_the_unit_width() {
    const BITS: u8 = 8;
    let mut ram = GuestRam::new(32 << 20);
    let process = Process::new(&mut ram, false);
    process.map_4k(&mut ram, VA_4K, GPA_4K, PAGE_USER_RW);
    let config = VtdConfig {
        pasid_bits: BITS,
        ..VtdConfig::default()
    };
    let iommu = PhysicalIommu::with_timeout(config, ram.mem.clone(), LONG);
    iommu.attach(DEV, Arc::new(Endpoint::default())).unwrap();
    let target = BindTarget::GuestPageTable(process.page_table(FirstStageFlags::default()));
    let last = (1u32 << BITS) - 1;
    for p in 0..=last {
        iommu.bind(DEV, pasid(p), target).unwrap();
    }
    let out = iommu.translate(DEV, Some(pasid(last)), VA_4K, READ);
    assert_eq!(out.unwrap().output, GPA_4K);
    assert!(matches!(
        iommu.bind(DEV, pasid(last + 1), target),
        Err(IommuError::InvalidTarget(_))
    ));
    assert!(iommu
        .translate(DEV, Some(pasid(last + 1)), VA_4K, READ)
        .is_err());
}

// ---- binding errors ----

#[test]
fn test_bind_and_attach_errors() {
    let rig = Rig::new();
    let target = BindTarget::GuestPageTable(rig.process.page_table(FirstStageFlags::default()));
    assert_eq!(
        rig.iommu.bind(OTHER, pasid(1), target),
        Err(IommuError::NotAttached(OTHER))
    );
    rig.bind(1);
    assert_eq!(
        rig.iommu.bind(DEV, pasid(1), target),
        Err(IommuError::AlreadyBound {
            device: DEV,
            pasid: pasid(1)
        })
    );
    let mut misaligned = rig.process.page_table(FirstStageFlags::default());
    misaligned.root |= 0x800;
    assert!(matches!(
        rig.iommu
            .bind(DEV, pasid(2), BindTarget::GuestPageTable(misaligned)),
        Err(IommuError::InvalidTarget(_))
    ));
    assert_eq!(
        rig.iommu.unbind(DEV, pasid(9)),
        Err(IommuError::NotBound {
            device: DEV,
            pasid: pasid(9)
        })
    );
    assert_eq!(
        rig.iommu.attach(DEV, rig.endpoint.clone()),
        Err(IommuError::AlreadyAttached(DEV))
    );
    let guest = BindTarget::GuestPasidTable {
        dir: 0x1000,
        pasid_bits: 20,
    };
    assert!(
        matches!(
            rig.iommu.bind(DEV, pasid(5), guest),
            Err(IommuError::AlreadyBound { .. })
        ),
        "per-PASID tables and a guest PASID table do not mix"
    );
}

// ---- IOTLB ----

#[test]
fn test_iotlb_serves_old_translation_until_range_invalidation() {
    let rig = Rig::new();
    rig.bind(1);
    let pte = rig.process.entry(&rig.ram, VA_4K, 1);
    assert_eq!(rig.output(1, VA_4K), GPA_4K);
    rig.ram.write(pte, 0x0070_0000 | PAGE_USER_RW);
    assert_eq!(rig.output(1, VA_4K), GPA_4K, "cached: no invalidation yet");
    let range = |p: u32, addr: u64| Granularity::Range {
        pasid: pasid(p),
        addr,
        size: PAGE,
    };
    rig.invalidate(CacheType::Iotlb, range(2, VA_4K));
    rig.invalidate(CacheType::Iotlb, range(1, VA_4K + PAGE));
    assert_eq!(rig.output(1, VA_4K), GPA_4K, "other PASID, other page");
    rig.invalidate(CacheType::Iotlb, range(1, VA_4K));
    assert_eq!(rig.output(1, VA_4K), 0x0070_0000);
    assert!(rig.endpoint.invalidations().is_empty(), "IOTLB only");
}

#[test]
fn test_iotlb_pasid_and_domain_invalidations() {
    let rig = Rig::new();
    rig.bind(1);
    let pte = rig.process.entry(&rig.ram, VA_4K, 1);
    rig.output(1, VA_4K);
    rig.ram.write(pte, 0x0070_0000 | PAGE_USER_RW);
    rig.invalidate(CacheType::Iotlb, Granularity::Pasid(pasid(1)));
    assert_eq!(rig.output(1, VA_4K), 0x0070_0000);
    rig.ram.write(pte, 0x0071_0000 | PAGE_USER_RW);
    rig.invalidate(CacheType::Iotlb, Granularity::Domain);
    assert_eq!(rig.output(1, VA_4K), 0x0071_0000);
}

#[test]
fn test_large_range_invalidation_drops_covered_pages_only() {
    let rig = Rig::new();
    rig.bind(1);
    rig.output(1, VA_4K);
    rig.output(1, VA_2M);
    let pte = rig.process.entry(&rig.ram, VA_4K, 1);
    let pde = rig.process.entry(&rig.ram, VA_2M, 2);
    rig.ram.write(pte, 0x0070_0000 | PAGE_USER_RW);
    rig.ram.write(pde, 0x0080_0000 | PAGE_USER_RW | PAGE_PSE);
    // Linux flushes an munmap'ed range of a whole 2 MiB page plus a little: [VA_2M - 4K, +2M+8K).
    let granularity = Granularity::Range {
        pasid: pasid(1),
        addr: VA_2M - PAGE,
        size: (2 << 20) + 2 * PAGE,
    };
    rig.invalidate(CacheType::Iotlb, granularity);
    assert_eq!(rig.output(1, VA_2M), 0x0080_0000);
    assert_eq!(rig.output(1, VA_4K), GPA_4K, "outside the range");
}

// ---- guest PASID table ----

#[test]
fn test_guest_pasid_table_entries_decide() {
    let mut rig = Rig::new();
    let dir = pasid_dir(&mut rig.ram);
    let root = rig.process.root();
    let mut tables = PasidTables(&mut rig.ram);
    tables.set_pasid(dir, 5, PasidEntryBuilder::first_level(root, 1, false, 2));
    tables.set_pasid(dir, 6, PasidEntryBuilder::second_level(root, 1, 2));
    tables.set_pasid(dir, 8, PasidEntryBuilder::nested(root, false, root, 1, 2));
    let reserved = PasidEntryBuilder::first_level(root, 1, false, 2).set_bits(3, 1);
    tables.set_pasid(dir, 9, reserved);
    let target = BindTarget::GuestPasidTable {
        dir,
        pasid_bits: 20,
    };
    rig.iommu.bind(DEV, pasid(0), target).unwrap();
    assert_eq!(rig.output(5, VA_4K + 1), GPA_4K + 1);
    use UnrecoverableReason::*;
    assert_eq!(rig.translate(6, VA_4K, READ), unrecoverable(BadPasidEntry));
    assert_eq!(rig.translate(8, VA_4K, READ), unrecoverable(BadPasidEntry));
    assert_eq!(rig.translate(9, VA_4K, READ), unrecoverable(BadPasidEntry));
    assert_eq!(rig.translate(7, VA_4K, READ), unrecoverable(PasidInvalid));
    assert_eq!(
        rig.translate(64 * 3, VA_4K, READ),
        unrecoverable(PasidInvalid),
        "directory entry not present"
    );
    assert_eq!(rig.unrecoverable_seen().len(), 5);
}

#[test]
fn test_guest_pasid_table_width_and_fetch_errors() {
    let mut rig = Rig::new();
    let dir = pasid_dir(&mut rig.ram);
    let root = rig.process.root();
    let mut tables = PasidTables(&mut rig.ram);
    tables.set_pasid(dir, 1024, PasidEntryBuilder::first_level(root, 1, false, 2));
    let narrow = BindTarget::GuestPasidTable {
        dir,
        pasid_bits: 10,
    };
    rig.iommu.bind(DEV, pasid(0), narrow).unwrap();
    assert_eq!(
        rig.translate(1024, VA_4K, READ),
        unrecoverable(UnrecoverableReason::PasidInvalid),
        "beyond the table's 2^10 PASIDs"
    );
    rig.iommu.unbind(DEV, pasid(0)).unwrap();
    let unmapped = BindTarget::GuestPasidTable {
        dir: 0x8000_0000,
        pasid_bits: 20,
    };
    rig.iommu.bind(DEV, pasid(0), unmapped).unwrap();
    assert_eq!(
        rig.translate(1, VA_4K, READ),
        unrecoverable(UnrecoverableReason::PasidFetch)
    );
}

#[test]
fn test_pasid_cache_invalidation_picks_up_changed_entry() {
    let mut rig = Rig::new();
    let other = Process::new(&mut rig.ram, false);
    let only_other = 0x0000_5555_0000_0000;
    other.map_4k(&mut rig.ram, only_other, 0x0090_0000, PAGE_USER_RW);
    other.map_4k(&mut rig.ram, VA_4K, 0x0091_0000, PAGE_USER_RW);
    let dir = pasid_dir(&mut rig.ram);
    let root = rig.process.root();
    let entry = PasidTables(&mut rig.ram).set_pasid(
        dir,
        5,
        PasidEntryBuilder::first_level(root, 1, false, 2),
    );
    let target = BindTarget::GuestPasidTable {
        dir,
        pasid_bits: 20,
    };
    rig.iommu.bind(DEV, pasid(0), target).unwrap();
    assert_eq!(rig.output(5, VA_4K), GPA_4K);
    // The guest points PASID 5 at another process (intel_pasid_setup_first_level again).
    let word2 = PasidEntryBuilder::first_level(other.root(), 1, false, 2).val[2];
    rig.ram.write(entry + 16, word2);
    assert_eq!(
        rig.translate(5, only_other, READ),
        NOT_PRESENT,
        "the cached entry still says the old table"
    );
    rig.invalidate(CacheType::PasidCache, Granularity::Pasid(pasid(5)));
    assert_eq!(rig.output(5, only_other), 0x0090_0000);
    assert_eq!(rig.output(5, VA_4K), GPA_4K, "IOTLB not invalidated yet");
    rig.invalidate(CacheType::Iotlb, Granularity::Pasid(pasid(5)));
    assert_eq!(rig.output(5, VA_4K), 0x0091_0000);
}

// ---- invalidation of the device TLB, unbind, detach ----

#[test]
fn test_device_tlb_invalidation_reaches_endpoint() {
    let rig = Rig::new();
    let granularities = [
        Granularity::Domain,
        Granularity::Pasid(pasid(4)),
        Granularity::Range {
            pasid: pasid(4),
            addr: VA_2M,
            size: 3 * PAGE,
        },
    ];
    for g in granularities {
        rig.invalidate(CacheType::DeviceTlb, g);
    }
    assert_eq!(rig.endpoint.invalidations(), granularities);
    let inv = CacheInvalidate {
        cache: CacheType::DeviceTlb,
        granularity: Granularity::Domain,
    };
    assert_eq!(
        rig.iommu.cache_invalidate(OTHER, inv),
        Err(IommuError::NotAttached(OTHER))
    );
}

#[test]
fn test_unbind_invalidates_and_aborts_that_pasid_only() {
    let rig = Rig::new();
    rig.bind(1);
    rig.bind(2);
    rig.output(1, VA_4K);
    let (mine, theirs) = (request(1, 1, true), request(2, 2, true));
    rig.iommu.page_request(mine);
    rig.iommu.page_request(theirs);
    rig.iommu.unbind(DEV, pasid(1)).unwrap();
    assert_eq!(
        rig.endpoint.responses(),
        [answer(&mine, PageResponseCode::InvalidRequest)]
    );
    assert_eq!(rig.endpoint.invalidations(), [Granularity::Pasid(pasid(1))]);
    assert_eq!(rig.iommu.pending_page_requests(), 1);
    assert_eq!(
        rig.translate(1, VA_4K, READ),
        unrecoverable(UnrecoverableReason::PasidInvalid),
        "no IOTLB entry survives the unbind"
    );
    assert_eq!(rig.output(2, VA_4K), GPA_4K);
    rig.iommu
        .page_response(answer(&theirs, PageResponseCode::Success))
        .unwrap();
}

#[test]
fn test_detach_answers_pending_and_keeps_handler() {
    let rig = Rig::new();
    rig.bind(1);
    rig.bind(2);
    let reqs = [request(1, 1, true), request(2, 2, true)];
    for req in reqs {
        rig.iommu.page_request(req);
    }
    rig.iommu.detach(DEV).unwrap();
    let invalid: Vec<_> = reqs
        .iter()
        .map(|r| answer(r, PageResponseCode::InvalidRequest))
        .collect();
    assert_eq!(rig.endpoint.responses(), invalid);
    assert_eq!(rig.endpoint.invalidations(), [Granularity::Domain]);
    assert_eq!(rig.iommu.detach(DEV), Err(IommuError::NotAttached(DEV)));
    assert_eq!(
        rig.translate(1, VA_4K, READ),
        unrecoverable(UnrecoverableReason::PasidInvalid)
    );
    assert_eq!(
        rig.unrecoverable_seen().len(),
        1,
        "the handler is still registered"
    );
    rig.iommu.page_request(request(1, 3, true));
    assert_eq!(rig.endpoint.responses().len(), 2, "dropped: no endpoint");
    rig.iommu.attach(DEV, rig.endpoint.clone()).unwrap();
    assert_eq!(
        rig.translate(1, VA_4K, READ),
        unrecoverable(UnrecoverableReason::PasidInvalid),
        "bindings are gone"
    );
}

// ---- page requests and responses ----

#[test]
fn test_page_request_reaches_handler_and_response_reaches_device() {
    let rig = Rig::new();
    let first = request(1, 4, false);
    let last = request(1, 4, true);
    rig.iommu.page_request(first);
    rig.iommu.page_request(last);
    assert_eq!(
        rig.faults.seen(),
        [
            IommuFault::PageRequest(first),
            IommuFault::PageRequest(last)
        ]
    );
    assert_eq!(rig.iommu.pending_page_requests(), 1);
    let resp = answer(&last, PageResponseCode::Success);
    rig.iommu.page_response(resp).unwrap();
    assert_eq!(rig.endpoint.responses(), [resp]);
    assert_eq!(rig.iommu.pending_page_requests(), 0);
}

#[test]
fn test_response_to_group_not_pending_is_refused() {
    let rig = Rig::new();
    let req = request(1, 4, true);
    let resp = answer(&req, PageResponseCode::Success);
    let not_pending = Err(IommuError::NotPending {
        device: DEV,
        group: 4,
    });
    assert_eq!(rig.iommu.page_response(resp), not_pending);
    rig.iommu.page_request(req);
    rig.iommu.page_response(resp).unwrap();
    assert_eq!(
        rig.iommu.page_response(resp),
        not_pending,
        "answered already"
    );
    assert_eq!(rig.endpoint.responses(), [resp]);
}

#[test]
fn test_unanswered_group_times_out_with_invalid_request() {
    let rig = Rig::with_timeout(Duration::from_millis(50));
    let req = request(1, 7, true);
    let sent = Instant::now();
    rig.iommu.page_request(req);
    assert!(eventually(|| !rig.endpoint.responses().is_empty()));
    assert!(sent.elapsed() >= Duration::from_millis(50));
    assert_eq!(
        rig.endpoint.responses(),
        [answer(&req, PageResponseCode::InvalidRequest)]
    );
    assert_eq!(
        rig.iommu
            .page_response(answer(&req, PageResponseCode::Success)),
        Err(IommuError::NotPending {
            device: DEV,
            group: 7
        })
    );
}

#[test]
fn test_unregister_answers_pending_groups() {
    let rig = Rig::new();
    let req = request(1, 7, true);
    rig.iommu.page_request(req);
    rig.iommu.unregister_fault_handler(DEV).unwrap();
    assert_eq!(
        rig.endpoint.responses(),
        [answer(&req, PageResponseCode::InvalidRequest)]
    );
    assert_eq!(
        rig.iommu.unregister_fault_handler(DEV),
        Err(IommuError::NoHandler(DEV))
    );
}

#[test]
fn test_no_handler_gets_immediate_invalid_request() {
    let rig = Rig::new();
    rig.iommu.unregister_fault_handler(DEV).unwrap();
    let req = request(1, 9, true);
    rig.iommu.page_request(request(1, 9, false));
    rig.iommu.page_request(req);
    assert_eq!(
        rig.endpoint.responses(),
        [answer(&req, PageResponseCode::InvalidRequest)]
    );
    assert_eq!(rig.iommu.pending_page_requests(), 0);
}

#[test]
fn test_stop_marker_reported_without_response() {
    let rig = Rig::new();
    let stop = PageRequest {
        access: Access::default(),
        ..request(1, 0, true)
    };
    rig.iommu.page_request(stop);
    assert_eq!(rig.faults.seen(), [IommuFault::PageRequest(stop)]);
    assert_eq!(rig.iommu.pending_page_requests(), 0);
    assert!(rig.endpoint.responses().is_empty());
}

#[test]
fn test_page_request_of_unattached_device_dropped() {
    let rig = Rig::new();
    let faults = Arc::new(Faults::default());
    rig.iommu
        .register_fault_handler(OTHER, faults.clone())
        .unwrap();
    rig.iommu.page_request(PageRequest {
        device: OTHER,
        ..request(1, 1, true)
    });
    assert!(faults.seen().is_empty());
    assert_eq!(rig.iommu.pending_page_requests(), 0);
}

#[test]
fn test_full_queue_answers_success_at_once() {
    let rig = Rig::new();
    let depth = u16::try_from(PRQ_DEPTH).unwrap();
    for group in 0..depth {
        rig.iommu.page_request(request(1, group, true));
    }
    assert_eq!(rig.iommu.pending_page_requests(), PRQ_DEPTH);
    let extra = request(2, 3, true);
    rig.iommu.page_request(request(2, 3, false));
    rig.iommu.page_request(extra);
    assert_eq!(rig.faults.seen().len(), PRQ_DEPTH, "not reported");
    assert_eq!(
        rig.endpoint.responses(),
        [answer(&extra, PageResponseCode::Success)],
        "the device retries later"
    );
    rig.iommu
        .page_response(answer(&request(1, 0, true), PageResponseCode::Success))
        .unwrap();
    rig.iommu.page_request(extra);
    assert_eq!(rig.iommu.pending_page_requests(), PRQ_DEPTH, "room again");
}

/// Devices racing for the last places of the queue never take more than PRQ_DEPTH: the bound
/// is checked and the group queued in one step. Every request past it is answered Success.
#[test]
fn test_concurrent_requests_never_overshoot_the_queue() {
    let rig = Rig::new();
    const THREADS: u32 = 4;
    let per_thread = u16::try_from(PRQ_DEPTH).unwrap() / 2;
    std::thread::scope(|scope| {
        for pasid in 1..=THREADS {
            let iommu = &rig.iommu;
            scope.spawn(move || {
                for group in 0..per_thread {
                    iommu.page_request(request(pasid, group, true));
                }
            });
        }
    });
    let total = THREADS as usize * usize::from(per_thread);
    assert_eq!(rig.iommu.pending_page_requests(), PRQ_DEPTH);
    assert_eq!(rig.faults.seen().len(), PRQ_DEPTH);
    assert_eq!(rig.endpoint.responses().len(), total - PRQ_DEPTH);
}

/// A handler that answers every page request from inside `handle`, as a handler that fixes
/// the page at once would.
struct Responding {
    iommu: Weak<PhysicalIommu>,
    results: Mutex<Vec<Result<(), IommuError>>>,
}

impl FaultHandler for Responding {
    fn handle(&self, fault: &IommuFault) {
        if let (IommuFault::PageRequest(req), Some(iommu)) = (fault, self.iommu.upgrade()) {
            let result = iommu.page_response(answer(req, PageResponseCode::Success));
            self.results.lock().unwrap().push(result);
        }
    }
}

#[test]
fn test_handler_responding_inside_handle_does_not_deadlock() {
    let rig = Rig::new();
    rig.iommu.unregister_fault_handler(DEV).unwrap();
    let handler = Arc::new(Responding {
        iommu: Arc::downgrade(&rig.iommu),
        results: Mutex::default(),
    });
    rig.iommu
        .register_fault_handler(DEV, handler.clone())
        .unwrap();
    let (done, finished) = mpsc::channel();
    let iommu = rig.iommu.clone();
    let req = request(1, 5, true);
    thread::spawn(move || {
        iommu.page_request(req);
        done.send(()).unwrap();
    });
    finished
        .recv_timeout(Duration::from_secs(5))
        .expect("page_request returned");
    assert_eq!(*handler.results.lock().unwrap(), [Ok(())]);
    assert_eq!(
        rig.endpoint.responses(),
        [answer(&req, PageResponseCode::Success)]
    );
}
