//! The VT-d remapping unit end to end, driven only through its registers and guest RAM the way
//! Linux's intel-iommu driver drives it: scalable-mode root, context and PASID tables built in
//! memfd guest RAM, then SRTP, QIE and TE; DMA requests translated as a device issues them, with
//! the queued invalidations Linux submits after each change (each followed by a wait descriptor
//! whose status write the driver checks); fault records read back as `dmar_fault` reads them;
//! device-TLB invalidations and page group responses leaving through the sink; page requests
//! read back from the page request queue as `prq_event_thread` reads them.

mod common_vtd;

use common_vtd::driver::*;
use common_vtd::*;
use vsvm::vtd::regs::{DMAR_FSTS_REG, DMAR_PQT_REG, DMAR_PRS_REG};
use vsvm::vtd::{
    Access, CacheCounters, CacheStats, DevTlbInvalidation, DomainId, FaultReason, InterruptKind,
    PageGroupResponse, PageRequest, PageRequestOutcome, PageResponseCode, Pasid, SourceId,
    Translation, VtdInterrupt,
};

/// The domain of the SVA PASID.
const DID: u16 = 5;
/// The PASID a process was bound to.
const PASID: u32 = 0x42;
/// A user virtual address in that process.
const VA: u64 = 0x0000_7f12_3456_7000;
/// Physical pages backing it, before and after the guest remaps it.
const PA: u64 = 0x0000_0001_2345_6000;
const PA2: u64 = 0x0000_0001_7654_3000;
/// A PTE as the kernel leaves a user page after first use (A and D set).
const USER_PAGE: u64 = PAGE_USER_RW | PAGE_ACCESSED | PAGE_DIRTY;
/// The PRQ Linux allocates: 2^4 pages (PRQ_ORDER), 2048 descriptors.
const PRQ_ORDER: u8 = 4;
const PRQ_BYTES: u64 = 4096 << PRQ_ORDER;

/// Upper dword of a fault record: F, T, PV, FR.
const FRCD_F: u32 = 1 << 31;
const FRCD_T_READ: u32 = 1 << 30;
/// Its next dword: PP.
const FRCD_PP: u32 = 1 << 31;
const FSTS_PPF: u32 = 1 << 1;
const PRS_PPR: u32 = 1;

/// A booted unit with one device bound to a process: a scalable-mode context entry with a
/// PASID directory, and a first-stage PASID entry (intel_pasid_setup_first_level) for `PASID`
/// whose page table maps `VA` to `PA`.
struct Sva {
    m: Machine,
    context: u64,
    dir: u64,
    tree: Tree,
}

fn sva() -> Sva {
    let mut m = Machine::default_config();
    m.boot_scalable();
    let (context, dir) = m.sm_context(DEV, true, 7);
    m.flush_context_present(DEV, &[]);
    let tree = Tree::new(&mut m.ram, 4, Space::default(), PAGE_TABLE);
    tree.map(&mut m.ram, VA, PA, 1, USER_PAGE);
    m.set_pasid(
        dir,
        PASID,
        PasidEntryBuilder::first_level(tree.root, DID, false, 2),
    );
    m.flush_pasid_caches(DID, PASID);
    m.sink.clear();
    Sva {
        m,
        context,
        dir,
        tree,
    }
}

impl Sva {
    fn translate(&mut self, pasid: Option<u32>, addr: u64, access: Access) -> Translation {
        let r = req(DEV, pasid, addr, access);
        self.m
            .unit
            .translate(&r, &mut self.m.sink)
            .expect("translates")
    }

    /// The output address a read of `VA + 0x123` with `PASID` gets.
    fn output(&mut self) -> u64 {
        self.translate(Some(PASID), VA + 0x123, READ).output
    }

    fn stats(&mut self) -> CacheStats {
        self.m.unit.caches().stats()
    }

    /// A second first-stage table mapping `VA` to `PA2`.
    fn other_tree(&mut self) -> Tree {
        let tree = Tree::new(&mut self.m.ram, 4, Space::default(), PAGE_TABLE);
        tree.map(&mut self.m.ram, VA, PA2, 1, USER_PAGE);
        tree
    }
}

fn counters(hits: u64, misses: u64, entries: usize) -> CacheCounters {
    CacheCounters {
        hits,
        misses,
        entries,
    }
}

#[test]
fn test_first_stage_translation_then_iotlb_hit() {
    let mut s = sva();
    let t = s.translate(Some(PASID), VA + 0x123, WRITE);
    assert_eq!(t.output, PA + 0x123);
    assert_eq!(t.page_size, PAGE);
    assert_eq!(t.domain, DomainId(DID));
    assert!(t.perms.read && t.perms.write && !t.perms.privileged);
    assert_eq!(
        s.stats().iotlb,
        counters(0, 1, 1),
        "a walk filled the IOTLB"
    );
    assert_eq!(s.output(), PA + 0x123);
    assert_eq!(
        s.translate(Some(PASID), VA + 0xff8, WRITE).output,
        PA + 0xff8
    );
    assert_eq!(s.stats().iotlb, counters(2, 1, 1));
    assert!(s.m.sink.events.is_empty());
    assert_eq!(s.m.readl(DMAR_FSTS_REG), 0);
}

#[test]
fn test_pte_change_takes_effect_after_pasid_iotlb_invalidation() {
    let mut s = sva();
    // 64 pages in use, so that the IOTLB holds more than the one page invalidated.
    for page in 1..64 {
        let offset = page * PAGE;
        s.tree
            .map(&mut s.m.ram, VA + offset, PA + offset, 1, USER_PAGE);
        assert_eq!(
            s.translate(Some(PASID), VA + offset, READ).output,
            PA + offset
        );
    }
    assert_eq!(s.output(), PA + 0x123);
    // The guest moves the page (e.g. after migration), then flushes that page of the PASID
    // (qi_flush_piotlb, page-selective) with a wait descriptor.
    let leaf = s.tree.slot(&s.m.ram, VA, 1);
    s.m.ram.write(leaf, PA2 | USER_PAGE);
    assert_eq!(s.output(), PA + 0x123, "stale until invalidated");
    let before = s.stats().iotlb;
    assert_eq!(
        s.m.submit(&[qi::piotlb(3, DID, PASID, VA, false, 0)]),
        QI_DONE
    );
    assert_eq!(
        s.stats().iotlb.entries,
        before.entries - 1,
        "that page only"
    );
    assert_eq!(s.output(), PA2 + 0x123);
    assert_eq!(
        s.stats().iotlb.misses,
        before.misses + 1,
        "the next lookup missed"
    );
    assert_eq!(s.translate(Some(PASID), VA + PAGE, READ).output, PA + PAGE);
    assert_eq!(
        s.stats().iotlb.hits,
        before.hits + 1,
        "the neighbour still hits"
    );
}

#[test]
fn test_context_change_takes_effect_after_context_cache_invalidation() {
    let mut s = sva();
    assert_eq!(s.output(), PA + 0x123);
    // A new PASID directory in which PASID maps VA to PA2, swapped into the context entry.
    let tree = s.other_tree();
    let dir = s.m.ram.alloc(8);
    s.m.set_pasid(
        dir,
        PASID,
        PasidEntryBuilder::first_level(tree.root, DID, false, 2),
    );
    let lo = s.m.ram.read(s.context);
    s.m.ram.write(s.context, (lo & 0xfff) | dir);
    // PASID-cache and IOTLB invalidations alone: the cached context entry still points to
    // the old directory.
    assert_eq!(
        s.m.submit(&[qi::pc(0, DID, 0), qi::iotlb(2, DID, 0, false, 0)]),
        QI_DONE
    );
    let context_misses = s.stats().context.misses;
    assert_eq!(s.output(), PA + 0x123);
    assert_eq!(
        s.stats().context.misses,
        context_misses,
        "context cache hit"
    );
    // intel_context_flush_present: device-selective context-cache invalidation first.
    s.m.flush_context_present(DEV, &[DID]);
    assert_eq!(s.output(), PA2 + 0x123);
    assert_eq!(s.stats().context.misses, context_misses + 1);
}

#[test]
fn test_pasid_entry_change_takes_effect_after_pasid_cache_invalidation() {
    let mut s = sva();
    assert_eq!(s.output(), PA + 0x123);
    let tree = s.other_tree();
    s.m.set_pasid(
        s.dir,
        PASID,
        PasidEntryBuilder::first_level(tree.root, DID, false, 2),
    );
    // The PASID-based IOTLB invalidation alone: the walk uses the cached PASID entry.
    assert_eq!(
        s.m.submit(&[qi::piotlb(2, DID, PASID, 0, false, 0)]),
        QI_DONE
    );
    let pasid_misses = s.stats().pasid.misses;
    assert_eq!(s.output(), PA + 0x123);
    assert_eq!(s.stats().pasid.misses, pasid_misses, "PASID cache hit");
    // pasid_flush_caches: PASID-selective PASID-cache invalidation, then the IOTLB.
    s.m.flush_pasid_caches(DID, PASID);
    assert_eq!(s.output(), PA2 + 0x123);
    assert_eq!(s.stats().pasid.misses, pasid_misses + 1);
}

#[test]
fn test_not_present_pte_is_recorded_and_fpd_suppresses_the_record() {
    let mut s = sva();
    let addr = VA + 0x5678; // its PTE in the same page table is not present
    let r = req(DEV, Some(PASID), addr, WRITE);
    let fault = s.m.unit.translate(&r, &mut s.m.sink).unwrap_err();
    assert_eq!(fault.reason, FaultReason::SmFirstStageEntryNotPresent);
    let (hi, mid, lo) = s.m.fault_record(0);
    assert_eq!(hi & FRCD_F, FRCD_F);
    assert_eq!(hi & FRCD_T_READ, 0, "a write");
    assert_eq!(hi & 0xff, 0x71, "SFS.2");
    assert_eq!((hi >> 8) & 0xfffff, PASID, "PV");
    assert_eq!(mid & FRCD_PP, FRCD_PP);
    assert_eq!(mid & 0xffff, u32::from(DEV.0), "SID");
    assert_eq!(lo, addr & !0xfff, "FI");
    assert_eq!(s.m.readl(DMAR_FSTS_REG), FSTS_PPF, "FRI 0");
    assert_eq!(
        s.m.sink.interrupts(),
        vec![VtdInterrupt {
            kind: InterruptKind::Fault,
            addr: u64::from(FE_ADDR),
            data: FE_DATA
        }]
    );
    s.m.service_fault(0);
    assert_eq!(s.m.readl(DMAR_FSTS_REG), 0);

    // With FPD in the PASID entry the same fault is not recorded.
    s.m.set_pasid(
        s.dir,
        PASID,
        PasidEntryBuilder::first_level(s.tree.root, DID, false, 2).fault_disable(),
    );
    s.m.flush_pasid_caches(DID, PASID);
    let fault = s.m.unit.translate(&r, &mut s.m.sink).unwrap_err();
    assert_eq!(
        (fault.reason, fault.fpd),
        (FaultReason::SmFirstStageEntryNotPresent, true)
    );
    assert_eq!(s.m.fault_record(0).0 & FRCD_F, 0);
    assert_eq!(s.m.fault_record(1).0 & FRCD_F, 0);
    assert_eq!(s.m.readl(DMAR_FSTS_REG), 0);
    assert_eq!(s.m.sink.interrupts().len(), 1, "no new fault event");
}

#[test]
fn test_second_stage_and_nested_pgtt() {
    const IOVA: u64 = 0x0000_0000_dead_b000;
    const SS_PASID: u32 = 2;
    const NESTED_PASID: u32 = 3;
    const GPA: u64 = 0x40_0000_0000;
    let mut s = sva();
    let rw = DMA_PTE_READ | DMA_PTE_WRITE;
    // A DMA-API domain: second stage for requests without PASID (RID_PASID 0) and PASID 2.
    let ss = Tree::new(&mut s.m.ram, 4, Space::default(), rw);
    ss.map(&mut s.m.ram, IOVA, PA2, 1, rw);
    for pasid in [0, SS_PASID] {
        s.m.set_pasid(
            s.dir,
            pasid,
            PasidEntryBuilder::second_level(ss.root, DID + 1, 2),
        );
        s.m.flush_pasid_caches(DID + 1, pasid);
    }
    for pasid in [None, Some(SS_PASID)] {
        let t = s.translate(pasid, IOVA + 0x10, WRITE);
        assert_eq!((t.output, t.domain), (PA2 + 0x10, DomainId(DID + 1)));
    }
    // A nested PASID: the first stage (in guest-physical space) behind a second stage.
    let (fs, nest_ss) = nested_trees(&mut s.m.ram, false, 4, PAGE_TABLE, rw);
    fs.map(&mut s.m.ram, VA, GPA, 1, PAGE_USER_RW);
    nest_ss.map(&mut s.m.ram, GPA, PA, 1, rw);
    s.m.set_pasid(
        s.dir,
        NESTED_PASID,
        PasidEntryBuilder::nested(fs.root, false, nest_ss.root, DID + 2, 2),
    );
    s.m.flush_pasid_caches(DID + 2, NESTED_PASID);
    let t = s.translate(Some(NESTED_PASID), VA + 0x80, READ);
    assert_eq!((t.output, t.domain), (PA + 0x80, DomainId(DID + 2)));
    // The first-stage A bit was set through the second stage, in RAM behind it.
    let leaf = fs.slot(&s.m.ram, VA, 1);
    assert!(leaf >= NEST_OFFSET);
    assert_eq!(s.m.ram.read(leaf) & PAGE_ACCESSED, PAGE_ACCESSED);
    // A second-stage change takes effect after a domain-selective IOTLB invalidation, which
    // drops the nested (first-stage tagged) entries of the domain too.
    nest_ss.map(&mut s.m.ram, GPA, PA2, 1, rw);
    assert_eq!(s.translate(Some(NESTED_PASID), VA, READ).output, PA);
    assert_eq!(s.m.submit(&[qi::iotlb(2, DID + 2, 0, false, 0)]), QI_DONE);
    assert_eq!(s.translate(Some(NESTED_PASID), VA, READ).output, PA2);
}

#[test]
fn test_device_tlb_invalidation_and_page_response_leave_through_the_sink() {
    let mut s = sva();
    // An unmap on an ATS device: the IOTLB page, then the device's ATC for that page
    // (qi_flush_dev_iotlb_pasid), then the wait.
    assert_eq!(
        s.m.submit(&[
            qi::piotlb(3, DID, PASID, VA, false, 0),
            qi::dev_iotlb_pasid(DEV.0, PASID, 0, VA, false, false),
        ]),
        QI_DONE
    );
    let inv = DevTlbInvalidation {
        source: DEV,
        pasid: Pasid::new(PASID),
        global: false,
        addr: VA,
        size: false,
        max_pending: 0,
    };
    assert_eq!(s.m.sink.device_tlb_invalidations(), vec![inv]);
    assert_eq!(inv.range(), VA..=VA + 0xfff);
    // intel_iommu_page_response for group 0x17: success.
    assert_eq!(
        s.m.submit(&[qi::page_response(DEV.0, Some(PASID), 0, 0x17, true)]),
        QI_DONE
    );
    assert_eq!(
        s.m.sink.page_group_responses(),
        vec![PageGroupResponse {
            source: DEV,
            pasid: Pasid::new(PASID),
            prg_index: 0x17,
            code: PageResponseCode::Success,
            private_data: None,
        }]
    );
}

/// A device's page request for `addr` with `PASID`.
fn page_request(source: SourceId, addr: u64, last: bool, prg_index: u16) -> PageRequest {
    PageRequest {
        source,
        pasid: Pasid::new(PASID),
        addr,
        read: true,
        write: true,
        exec: false,
        privileged: false,
        last_in_group: last,
        prg_index,
        private_data: None,
    }
}

#[test]
fn test_page_request_round_trip() {
    let mut s = sva();
    s.m.enable_prq(PRQ_ORDER);
    s.m.enable_page_requests(DEV, &[DID]);
    s.m.sink.clear();
    // The device touches an unmapped page: its ATS translation fails, it asks for the page.
    let addr = VA + 0x5000;
    assert!(s
        .m
        .unit
        .translate(&req(DEV, Some(PASID), addr, WRITE), &mut s.m.sink)
        .is_err());
    s.m.sink.clear();
    let outcome =
        s.m.unit
            .page_request(page_request(DEV, addr + 0x42, true, 0x17), &mut s.m.sink);
    assert_eq!(outcome, PageRequestOutcome::Queued { offset: 0 });
    assert_eq!(s.m.readl(DMAR_PRS_REG), PRS_PPR);
    assert_eq!(
        s.m.sink.interrupts(),
        vec![VtdInterrupt {
            kind: InterruptKind::PageRequest,
            addr: u64::from(FE_ADDR),
            data: PE_DATA
        }]
    );
    // prq_event_thread reads the descriptor (struct page_req_dsc) and moves PQH.
    let descs = s.m.drain_prq(PRQ_BYTES);
    assert_eq!(descs.len(), 1);
    let [qw0, qw1, ..] = descs[0];
    assert_eq!(qw0 & 0xff, 1, "type: page request");
    assert_eq!((qw0 >> 8) & 1, 1, "pasid_present");
    assert_eq!((qw0 >> 16) & 0xffff, u64::from(DEV.0), "rid");
    assert_eq!((qw0 >> 32) & 0xfffff, u64::from(PASID), "pasid");
    assert_eq!((qw0 >> 52) & 3, 0, "exe_req, pm_req");
    assert_eq!(qw1 & 7, 0b111, "rd_req, wr_req, lpig");
    assert_eq!((qw1 >> 3) & 0x1ff, 0x17, "prg_index");
    assert_eq!(qw1 & !0xfff, addr, "addr");
    assert_eq!(s.m.readl(DMAR_PRS_REG), 0, "PPR cleared by the driver");
    assert_eq!(s.m.readq(DMAR_PQT_REG), 0x20);
    // The fault handler maps the page and answers the group; the device retries.
    s.tree.map(&mut s.m.ram, addr, PA2, 1, PAGE_USER_RW);
    assert_eq!(
        s.m.submit(&[qi::page_response(DEV.0, Some(PASID), 0, 0x17, false)]),
        QI_DONE
    );
    let response = s.m.sink.page_group_responses();
    assert_eq!(
        (response[0].prg_index, response[0].code),
        (0x17, PageResponseCode::Success)
    );
    assert_eq!(s.translate(Some(PASID), addr, WRITE).output, PA2);
}

#[test]
fn test_page_request_without_pre_is_refused_and_recorded() {
    let mut s = sva();
    s.m.enable_prq(PRQ_ORDER);
    // PRE is clear in the device's context entry: SCT.8, answered with Invalid Request.
    let outcome =
        s.m.unit
            .page_request(page_request(DEV, VA + 0x5000, true, 3), &mut s.m.sink);
    assert_eq!(
        outcome,
        PageRequestOutcome::Rejected {
            auto_response: true
        }
    );
    assert_eq!(
        s.m.sink.page_group_responses(),
        vec![PageGroupResponse {
            source: DEV,
            pasid: Pasid::new(PASID),
            prg_index: 3,
            code: PageResponseCode::InvalidRequest,
            private_data: None,
        }]
    );
    assert_eq!(s.m.readq(DMAR_PQT_REG), 0, "nothing queued");
    assert_eq!(s.m.readl(DMAR_PRS_REG), 0);
    let (hi, mid, lo) = s.m.fault_record(0);
    assert_eq!(hi & FRCD_F, FRCD_F);
    assert_eq!(hi & 0xff, 0x47, "VTD_FR_SM_PRE_ABS");
    assert_eq!((hi >> 8) & 0xfffff, PASID);
    assert_eq!(mid & 0xffff, u32::from(DEV.0));
    assert_eq!(lo, VA + 0x5000);
    assert_eq!(s.m.sink.interrupts().len(), 1, "fault event");

    // A device without a context entry at all: SCT.2.
    let stranger = SourceId::new(0, 9, 0);
    s.m.unit
        .page_request(page_request(stranger, VA, false, 4), &mut s.m.sink);
    assert_eq!(s.m.fault_record(1).0 & 0xff, 0x41);
    assert_eq!(s.m.fault_record(1).1 & 0xffff, u32::from(stranger.0));
    assert_eq!(
        s.m.sink.page_group_responses().len(),
        1,
        "not last in group: no response"
    );

    // FPD in the context entry suppresses the record, not the response.
    s.m.ram.set(s.context, CONTEXT_FPD);
    s.m.flush_context_present(DEV, &[DID]);
    s.m.unit
        .page_request(page_request(DEV, VA, true, 5), &mut s.m.sink);
    assert_eq!(s.m.fault_record(2).0 & FRCD_F, 0);
    assert_eq!(s.m.sink.page_group_responses().len(), 2);

    // Once Linux enables PRI (context_flip_pri), the same device's requests are queued.
    s.m.enable_page_requests(DEV, &[DID]);
    assert_eq!(
        s.m.unit
            .page_request(page_request(DEV, VA, true, 6), &mut s.m.sink),
        PageRequestOutcome::Queued { offset: 0 }
    );
}
