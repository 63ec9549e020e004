//! The guest-facing VT-d front end, driven the way Linux's intel-iommu drives a unit (the
//! shared register driver, tables in memfd guest RAM), over the real physical VT-d model
//! behind the neutral API: what the guest programs must show up as host default domains,
//! PASID binds, forwarded invalidations, page requests in the guest's PRQ, fault records and
//! interrupt messages — and nothing may reach the host model except through the API.

mod common_vtd;

use std::sync::{Arc, Condvar, Mutex};

use common_vtd::driver::*;
use common_vtd::*;
use vsvm::iommu::{
    Access, DeviceEndpoint, DeviceId, Granularity, HostIommu, PageRequest, PageResponse,
    PageResponseCode, Pasid, TranslateFailure,
};
use vsvm::viommu::{FrontEnd, InterruptPort, MAX_BACKLOG};
use vsvm::vtd::piommu::PhysicalIommu;
use vsvm::vtd::regs::{DMAR_IQT_REG, DMAR_PRS_REG};
use vsvm::vtd::{FaultReason, RecordingSink, VtdConfig};

/// The device behind the unit (00:03.0, as common_vtd::DEV).
const ID: DeviceId = DeviceId(DEV.0);
/// Linux's DMA domain ID and the SVA PASID's domain.
const DMA_DID: u16 = 1;
const SVA_DID: u16 = 2;
const PASID: u32 = 0x42;
const IOVA: u64 = 0x10_0000;
const VA: u64 = 0x7f12_3456_7000;
/// Where they map (guest-physical, inside RAM so the physical model can use it).
const PA: u64 = 0x1c0_0000;
const PA2: u64 = 0x1c0_1000;
const READ: Access = Access::READ;
const PRQ_ORDER: u8 = 0;

/// The device side: what the host IOMMU sent to the device.
#[derive(Default)]
struct Device {
    atc: Mutex<Vec<Granularity>>,
    responses: Mutex<Vec<PageResponse>>,
}

impl DeviceEndpoint for Device {
    fn invalidate_atc(&self, granularity: Granularity) {
        self.atc.lock().unwrap().push(granularity);
    }
    fn page_response(&self, resp: PageResponse) {
        self.responses.lock().unwrap().push(resp);
    }
}

/// Interrupt messages the front end sent. While `gate` is closed a send waits, as one waits for
/// a client that is slow to answer its DMA_WRITE: the front end's thread stalls there.
#[derive(Default)]
struct Msi(Mutex<Vec<(u64, u32)>>, Gate);

#[derive(Default)]
struct Gate {
    /// (closed, a sender is waiting)
    state: Mutex<(bool, bool)>,
    changed: Condvar,
}

impl Gate {
    fn close(&self) {
        self.state.lock().unwrap().0 = true;
    }
    fn open(&self) {
        self.state.lock().unwrap().0 = false;
        self.changed.notify_all();
    }
    fn pass(&self) {
        let mut state = self.state.lock().unwrap();
        while state.0 {
            state.1 = true;
            self.changed.notify_all();
            state = self.changed.wait(state).unwrap();
        }
        state.1 = false;
    }
    fn wait_for_a_waiter(&self) {
        let mut state = self.state.lock().unwrap();
        while !state.1 {
            state = self.changed.wait(state).unwrap();
        }
    }
}

impl InterruptPort for Msi {
    fn send(&self, addr: u64, data: u32) -> bool {
        self.1.pass();
        self.0.lock().unwrap().push((addr, data));
        true
    }
}

/// The front end as the driver's register window: every write settles (the guest polls).
struct Front(FrontEnd);

impl Unit for Front {
    fn read(&self, offset: u64, size: usize) -> u64 {
        self.0.read(offset, size)
    }
    fn write(&mut self, offset: u64, size: usize, value: u64, _sink: &mut RecordingSink) {
        self.0.write(offset, size, value);
        self.0.flush();
    }
}

struct World {
    m: Machine<Front>,
    iommu: Arc<PhysicalIommu>,
    device: Arc<Device>,
    msi: Arc<Msi>,
}

fn world() -> World {
    let config = VtdConfig::default();
    let mut ram = GuestRam::new(RAM_SIZE);
    ram.skip_to(ALLOC_BASE);
    // The device names no memory of its own: the physical model walks the RAM it was given.
    let iommu = Arc::new(PhysicalIommu::new(config, ram.mem.clone()));
    let device = Arc::new(Device::default());
    iommu.attach(ID, device.clone()).unwrap();
    let msi = Arc::new(Msi::default());
    let front = FrontEnd::new(config, ram.mem.clone(), iommu.clone(), &[ID], msi.clone())
        .expect("the vIOMMU thread starts");
    World {
        m: Machine::with_unit(ram, Front(front)),
        iommu,
        device,
        msi,
    }
}

impl Drop for World {
    /// A failed assertion with the gate closed must not leave the front end's thread stalled
    /// (dropping the front end joins it).
    fn drop(&mut self) {
        self.msi.1.open();
    }
}

impl World {
    fn translate(&self, pasid: Option<u32>, addr: u64) -> Result<u64, TranslateFailure> {
        let pasid = pasid.map(|p| Pasid::new(p).unwrap());
        self.iommu
            .translate(ID, pasid, addr, READ)
            .map(|t| t.output)
    }

    /// Scalable-mode boot, a context entry with a PASID directory, and a first-stage DMA
    /// domain in the RID_PASID entry mapping IOVA to PA (Linux's default with FLTS).
    fn dma_domain(&mut self) -> (Tree, u64) {
        self.m.boot_scalable();
        let (_, dir) = self.m.sm_context(DEV, true, 7);
        let tree = Tree::new(&mut self.m.ram, 4, Space::default(), PAGE_TABLE);
        // Linux: DMA_FL_PTE_PRESENT | DMA_FL_PTE_US | DMA_FL_PTE_ACCESS (+ DIRTY when writable).
        tree.map(
            &mut self.m.ram,
            IOVA,
            PA,
            1,
            PAGE_USER_RW | PAGE_ACCESSED | PAGE_DIRTY,
        );
        self.m.set_pasid(
            dir,
            0,
            PasidEntryBuilder::first_level(tree.root, DMA_DID, false, 2),
        );
        self.m.flush_context_present(DEV, &[DMA_DID]);
        (tree, dir)
    }

    /// A process bound to PASID with page requests enabled (the PRQ set up, PRE set), as
    /// Linux leaves a device after an SVA bind; returns the PASID directory.
    fn sva_with_page_requests(&mut self) -> u64 {
        let (_, dir) = self.dma_domain();
        self.sva(dir);
        self.m.enable_prq(PRQ_ORDER);
        self.m.enable_page_requests(DEV, &[DMA_DID, SVA_DID]);
        dir
    }

    /// The device's page request for `addr` with `access`, group `group`, last of its group;
    /// returns once the front end has handled it.
    fn page_request(&self, addr: u64, access: Access, group: u16) {
        self.iommu.page_request(PageRequest {
            device: ID,
            pasid: Some(Pasid::new(PASID).unwrap()),
            addr,
            access,
            group,
            last: true,
        });
        self.m.unit.0.flush();
    }

    /// intel_svm_bind: a process table mapping VA to PA in PASID's entry, then the caching-mode
    /// PASID-cache flush.
    fn sva(&mut self, dir: u64) -> Tree {
        self.bind_process(dir, PA)
    }

    /// A fresh process table mapping VA to `page`, written into PASID's entry and flushed
    /// (a first bind, or a rebind when the entry held another table).
    fn bind_process(&mut self, dir: u64, page: u64) -> Tree {
        let tree = Tree::new(&mut self.m.ram, 4, Space::default(), PAGE_TABLE);
        let user_page = PAGE_USER_RW | PAGE_ACCESSED | PAGE_DIRTY;
        tree.map(&mut self.m.ram, VA, page, 1, user_page);
        let entry = PasidEntryBuilder::first_level(tree.root, SVA_DID, false, 2);
        self.m.set_pasid(dir, PASID, entry);
        self.m.flush_pasid_caches(SVA_DID, PASID);
        tree
    }
}

#[test]
fn test_untranslated_until_the_guest_enables_translation() {
    let w = world();
    assert_eq!(w.translate(None, 0x1234_5000), Ok(0x1234_5000));
    assert_eq!(w.m.unit.0.stats().default_domains, 0);
}

#[test]
fn test_first_stage_dma_domain_becomes_the_default_domain() {
    let mut w = world();
    w.dma_domain();
    assert_eq!(w.translate(None, IOVA + 0x10), Ok(PA + 0x10));
    assert!(w.m.unit.0.stats().default_domains >= 1);
    // The context-present flush's device-TLB invalidation reached the device.
    assert!(w.device.atc.lock().unwrap().contains(&Granularity::NoPasid));
}

#[test]
fn test_unmapped_iova_is_recorded_as_the_guests_fault() {
    let mut w = world();
    w.dma_domain();
    let before = w.msi.0.lock().unwrap().len();
    assert!(matches!(
        w.translate(None, IOVA + 0x20_0000),
        Err(TranslateFailure::Unrecoverable(_))
    ));
    w.m.unit.0.flush();
    let (hi, lo, addr) = w.m.fault_record(0);
    assert_ne!(hi & (1 << 31), 0, "F set");
    assert_eq!(
        hi as u8,
        FaultReason::SmFirstStageEntryNotPresent.code(),
        "FR in bits 7:0 of the upper dword"
    );
    assert_eq!(lo as u16, DEV.0, "SID");
    assert_eq!(lo & (1 << 31), 0, "no PASID");
    assert_eq!(addr & !0xfff, IOVA + 0x20_0000);
    let msis = w.msi.0.lock().unwrap();
    assert_eq!(msis.len(), before + 1, "one fault event");
    assert_eq!(msis[before], (u64::from(FE_ADDR), FE_DATA));
}

#[test]
fn test_pasid_bind_rebind_unbind_follow_the_pasid_entry() {
    let mut w = world();
    let (_, dir) = w.dma_domain();
    assert!(w.translate(Some(PASID), VA).is_err(), "nothing bound yet");
    w.sva(dir);
    assert_eq!(w.translate(Some(PASID), VA + 8), Ok(PA + 8));
    // The guest points the entry at another table: a rebind.
    w.bind_process(dir, PA2);
    assert_eq!(w.translate(Some(PASID), VA + 8), Ok(PA2 + 8));
    // Teardown: entry cleared, PASID-selective PASID-cache invalidation.
    let at = w.m.pasid_entry_addr(dir, PASID);
    w.m.ram.write(at, 0);
    w.m.flush_pasid_caches(SVA_DID, PASID);
    assert!(w.translate(Some(PASID), VA).is_err());
    let stats = w.m.unit.0.stats();
    assert_eq!((stats.binds, stats.unbinds), (2, 1), "{stats:?}");
}

#[test]
fn test_pasid_iotlb_invalidation_reaches_the_host_iotlb() {
    let mut w = world();
    let (_, dir) = w.dma_domain();
    let tree = w.sva(dir);
    assert_eq!(w.translate(Some(PASID), VA), Ok(PA));
    let before = w.m.unit.0.stats();
    // The guest remaps the page (first stage: no invalidation on map, but one on change).
    tree.map(
        &mut w.m.ram,
        VA,
        PA2,
        1,
        PAGE_USER_RW | PAGE_ACCESSED | PAGE_DIRTY,
    );
    assert_eq!(
        w.translate(Some(PASID), VA),
        Ok(PA),
        "the host IOTLB still holds it"
    );
    assert_eq!(
        w.m.submit(&[
            qi::piotlb(3, SVA_DID, PASID, VA, false, 0),
            qi::dev_iotlb_pasid(DEV.0, PASID, 0, VA, false, false),
        ]),
        QI_DONE
    );
    assert_eq!(w.translate(Some(PASID), VA), Ok(PA2));
    let pasid = Pasid::new(PASID).unwrap();
    assert!(w.device.atc.lock().unwrap().contains(&Granularity::Range {
        pasid,
        addr: VA,
        size: 0x1000
    }));
    // Counted apart by kind: one PASID-IOTLB and one PASID-device-TLB invalidation.
    let after = w.m.unit.0.stats();
    assert_eq!(
        (
            after.pasid_iotlb_invalidations - before.pasid_iotlb_invalidations,
            after.pasid_devtlb_invalidations - before.pasid_devtlb_invalidations,
            after.invalidations - before.invalidations,
        ),
        (1, 1, 2),
        "{after:?}"
    );
}

#[test]
fn test_page_request_lands_in_the_guest_prq_and_the_response_goes_back() {
    let mut w = world();
    w.sva_with_page_requests();
    w.page_request(VA, Access::WRITE, 7);
    let descs = w.m.drain_prq(4096 << PRQ_ORDER);
    assert_eq!(descs.len(), 1);
    let [qw0, qw1, ..] = descs[0];
    assert_eq!(qw0 & 0xff, 1, "page request descriptor");
    assert_eq!((qw0 >> 16) as u16, DEV.0, "RID");
    assert_eq!((qw0 >> 32) & 0xf_ffff, u64::from(PASID));
    assert_ne!(qw1 & 2, 0, "write");
    assert_ne!(qw1 & 4, 0, "last in group");
    assert_eq!((qw1 >> 3) & 0x1ff, 7, "PRG index");
    assert!(w
        .msi
        .0
        .lock()
        .unwrap()
        .contains(&(u64::from(FE_ADDR), PE_DATA)));
    // The guest answers: the response reaches the device.
    assert_eq!(
        w.m.submit(&[qi::page_response(DEV.0, Some(PASID), 0, 7, true)]),
        QI_DONE
    );
    let responses = w.device.responses.lock().unwrap();
    assert_eq!(responses.len(), 1);
    assert_eq!(responses[0].group, 7);
    assert_eq!(responses[0].code, PageResponseCode::Success);
    let stats = w.m.unit.0.stats();
    assert_eq!((stats.page_requests, stats.page_responses), (1, 1));
}

/// A process killed with a page request pending: the guest tears its PASID entry down before it
/// answers, the unbind answers the group at the host (Invalid Request), and the guest's answer
/// coming after is dropped quietly and counted as late, not as a forwarded response.
#[test]
fn test_response_after_the_unbind_is_dropped_and_counted_late() {
    let mut w = world();
    let dir = w.sva_with_page_requests();
    w.page_request(VA, Access::WRITE, 9);
    assert_eq!(w.m.drain_prq(4096 << PRQ_ORDER).len(), 1);
    let at = w.m.pasid_entry_addr(dir, PASID);
    w.m.ram.write(at, 0);
    w.m.flush_pasid_caches(SVA_DID, PASID);
    {
        let responses = w.device.responses.lock().unwrap();
        assert_eq!(responses.len(), 1, "the unbind answered the group");
        assert_eq!(responses[0].code, PageResponseCode::InvalidRequest);
    }
    assert_eq!(
        w.m.submit(&[qi::page_response(DEV.0, Some(PASID), 1, 9, true)]),
        QI_DONE,
        "a late response is no queue error"
    );
    assert_eq!(w.device.responses.lock().unwrap().len(), 1, "nothing more");
    let stats = w.m.unit.0.stats();
    assert_eq!(
        (
            stats.page_requests,
            stats.page_responses,
            stats.late_page_responses
        ),
        (1, 0, 1),
        "{stats:?}"
    );
}

/// A stop marker (a PASID drained) lands in the guest's PRQ like a page request but wants no
/// response: it is counted apart, so page requests and responses stay comparable.
#[test]
fn test_stop_marker_lands_in_the_prq_and_is_counted_apart() {
    let mut w = world();
    w.sva_with_page_requests();
    w.page_request(0, Access::default(), 0);
    let descs = w.m.drain_prq(4096 << PRQ_ORDER);
    assert_eq!(descs.len(), 1);
    let [qw0, qw1, ..] = descs[0];
    assert_eq!((qw0 >> 32) & 0xf_ffff, u64::from(PASID));
    assert_eq!(
        qw1 & 7,
        4,
        "last in group, neither read nor write: a stop marker"
    );
    let stats = w.m.unit.0.stats();
    assert_eq!((stats.page_requests, stats.stop_markers), (0, 1));
}

#[test]
fn test_page_request_without_pre_is_refused_and_recorded() {
    let mut w = world();
    let (_, dir) = w.dma_domain();
    w.sva(dir);
    w.page_request(VA, Access::READ, 3);
    let responses = w.device.responses.lock().unwrap();
    assert_eq!(responses.len(), 1);
    assert_eq!(responses[0].code, PageResponseCode::InvalidRequest);
    let (hi, ..) = w.m.fault_record(0);
    assert_eq!(hi as u8, FaultReason::SmPageRequestDisabled.code());
}

#[test]
fn test_legacy_mode_second_stage_and_pass_through() {
    let mut w = world();
    w.m.program_events();
    w.m.enable_qi(0, false);
    w.m.set_root_entry(false);
    let tree = Tree::new(
        &mut w.m.ram,
        4,
        Space::default(),
        DMA_PTE_READ | DMA_PTE_WRITE,
    );
    tree.map(&mut w.m.ram, IOVA, PA, 1, DMA_PTE_READ | DMA_PTE_WRITE);
    w.m.legacy_context(DEV, DMA_DID, tree.root, 2, CONTEXT_TT_MULTI_LEVEL);
    assert_eq!(
        w.m.submit(&[qi::cc(1, 0, 0, 0), qi::iotlb(1, 0, 0, false, 0)]),
        QI_DONE
    );
    w.m.enable_translation();
    assert_eq!(w.translate(None, IOVA + 4), Ok(PA + 4));
    assert!(w.translate(None, IOVA + 0x1000).is_err(), "not mapped");
    // iommu=pt: the guest switches the device to pass-through.
    w.m.legacy_context(DEV, DMA_DID, 0, 2, CONTEXT_TT_PASS_THROUGH);
    assert_eq!(w.m.submit(&[qi::cc(3, DMA_DID, DEV.0, 0)]), QI_DONE);
    assert_eq!(w.translate(None, 0x1234_5000), Ok(0x1234_5000));
}

#[test]
fn test_no_context_entry_blocks_with_translation_on() {
    let mut w = world();
    w.m.boot_scalable();
    assert!(w.translate(None, IOVA).is_err());
    w.m.unit.0.flush();
    let (hi, ..) = w.m.fault_record(0);
    assert_eq!(hi as u8, FaultReason::SmRootEntryNotPresent.code());
}

#[test]
fn test_translation_off_and_reset_return_to_untranslated() {
    let mut w = world();
    let (_, dir) = w.dma_domain();
    w.sva(dir);
    w.m.disable_translation();
    assert_eq!(w.translate(None, 0x5000), Ok(0x5000));
    assert!(
        w.translate(Some(PASID), VA).is_err(),
        "unbound with translation off"
    );
    w.m.enable_translation();
    assert_eq!(w.translate(None, IOVA), Ok(PA));
    w.m.unit.0.reset();
    w.m.unit.0.flush();
    assert_eq!(w.translate(None, 0x5000), Ok(0x5000));
}

#[test]
fn test_bad_queue_tail_is_a_queue_error_not_a_hang() {
    let mut w = world();
    w.m.program_events();
    w.m.enable_qi(0, true);
    w.m.writel(vsvm::vtd::regs::DMAR_IQT_REG, 0x10); // not on a 256-bit boundary
    let fsts = w.m.readl(vsvm::vtd::regs::DMAR_FSTS_REG);
    assert_ne!(fsts & (1 << 4), 0, "IQE");
}

/// The front end's backlog at and past its bound: with its thread stalled on an interrupt
/// message, MAX_BACKLOG doorbells wait, the next one is merged, and a page request finds no
/// room: it is answered Success at once with PRS.PRO set, as on page request queue overflow.
/// Once the thread runs again the unit works as before.
#[test]
fn test_full_backlog_merges_doorbells_and_overflows_page_requests() {
    let mut w = world();
    w.sva_with_page_requests();
    let front = &w.m.unit.0;
    w.msi.1.close();
    // The page request event of this request stalls the thread.
    w.iommu.page_request(PageRequest {
        device: ID,
        pasid: Some(Pasid::new(PASID).unwrap()),
        addr: VA,
        access: Access::WRITE,
        group: 7,
        last: true,
    });
    w.msi.1.wait_for_a_waiter();
    let tail = front.read(DMAR_IQT_REG, 8);
    for _ in 0..MAX_BACKLOG {
        front.write(DMAR_IQT_REG, 8, tail);
    }
    assert_eq!(front.backlog(), (MAX_BACKLOG, 0), "exactly the bound waits");
    front.write(DMAR_IQT_REG, 8, tail);
    assert_eq!(front.backlog(), (MAX_BACKLOG, 1), "past it: merged");
    w.iommu.page_request(PageRequest {
        device: ID,
        pasid: Some(Pasid::new(PASID).unwrap()),
        addr: VA + 0x1000,
        access: Access::WRITE,
        group: 9,
        last: true,
    });
    assert_eq!(
        *w.device.responses.lock().unwrap(),
        [PageResponse {
            device: ID,
            pasid: Some(Pasid::new(PASID).unwrap()),
            group: 9,
            code: PageResponseCode::Success,
        }],
        "answered at once: the device asks again later"
    );
    const PRO: u64 = 1 << 1;
    assert_ne!(front.read(DMAR_PRS_REG, 4) & PRO, 0, "PRS.PRO");
    assert_eq!(front.stats().page_requests_overflowed, 1);
    w.msi.1.open();
    front.flush();
    assert_eq!(front.backlog().0, 0);
    // The guest drains its queue and clears PRO: the next request is queued as usual.
    let descs = w.m.drain_prq(4096 << PRQ_ORDER);
    assert_eq!(descs.len(), 1, "group 7 only");
    w.m.unit.0.write(DMAR_PRS_REG, 4, PRO);
    w.page_request(VA + 0x1000, Access::WRITE, 9);
    assert_eq!(w.m.drain_prq(4096 << PRQ_ORDER).len(), 1);
    assert_eq!(w.m.unit.0.stats().page_requests, 2);
}
