//! Device jobs with a PASID whose page faults go to the guest: the accelerator's block-on-fault
//! work queue runs a MEMMOVE for a process bound through the guest's PASID entry, the
//! destination page is missing, and the device's page request reaches the guest's page
//! request queue through the front end (VT-d 7.5). The guest then misbehaves: it never
//! answers, answers Invalid Request or Response Failure, answers another PASID or group,
//! rewrites its table into a loop before answering, or tears the PASID down while the
//! request is pending. Each job ends in a defined completion status (devices/accel/README.md),
//! the queue keeps working, and nothing is written outside guest RAM.

use std::time::{Duration, Instant};

use crate::common_vtd::driver::*;
use crate::common_vtd::*;
use crate::device_jobs::accel_driver::{pattern, AccelDriver};
use crate::device_jobs::AccelRig;
use crate::rig::{DMA_DID, LONG, PASID, SVA_DID};
use vsvm::devices::accel::completion::{CompletionRecord, Status};
use vsvm::devices::accel::descriptor::Descriptor;
use vsvm::vtd::regs::{DMAR_PQH_REG, DMAR_PQT_REG};
use vsvm::vtd::FaultReason;

/// The process's pages: source, destination (missing until the guest maps it), records.
const SRC_VA: u64 = 0x7f12_3456_7000;
const DST_VA: u64 = 0x7f12_3460_0000;
const RECORD_VA: u64 = 0x7f12_3470_0000;
const LEN: u32 = 512;
/// Bytes of the one-page page request queue.
const PRQ_BYTES: u64 = 4096;
/// Page response codes as the guest writes them (VT-d 6.5.2.9 Response Code).
const SUCCESS: u8 = 0x0;
const INVALID_REQUEST: u8 = 0x1;
const RESPONSE_FAILURE: u8 = 0xf;

/// The guest's side of one SVA binding on the accelerator.
struct Sva {
    rig: AccelRig,
    /// PASID directory.
    dir: u64,
    /// The process's first-stage table.
    tree: Tree,
    /// Guest-physical pages behind SRC_VA and RECORD_VA, and the one the guest maps at
    /// DST_VA when it resolves the fault.
    src: u64,
    records: u64,
    dst: u64,
    /// Next completion record slot.
    next_record: u64,
}

/// A page request as the guest's PRQ holds it (Linux `page_req_dsc`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Queued {
    pasid: Option<u32>,
    addr: u64,
    write: bool,
    group: u16,
}

impl Sva {
    /// The guest booted in scalable mode with an identity default domain (`iommu=pt`, so the
    /// work-queue rings are guest-physical), a process bound to PASID with SRC_VA and
    /// RECORD_VA mapped, page requests enabled (PRQ, PRE); the driver enabled PASID, ATS,
    /// PRI, the PASID and block-on-fault work queue 0. Host response timer: `timeout`.
    fn new(timeout: Duration) -> Self {
        let mut rig = AccelRig::new(timeout);
        let m = &mut rig.m;
        m.boot_scalable();
        let (_, dir) = m.sm_context(DEV, true, 7);
        m.set_pasid(dir, 0, PasidEntryBuilder::pass_through(DMA_DID, 2));
        m.flush_context_present(DEV, &[DMA_DID]);
        let tree = Tree::new(&mut m.ram, 4, Space::default(), PAGE_TABLE);
        let (src, records, dst) = (m.ram.page(), m.ram.page(), m.ram.page());
        let leaf = PAGE_USER_RW | PAGE_ACCESSED | PAGE_DIRTY;
        tree.map(&mut m.ram, SRC_VA, src, 1, leaf);
        tree.map(&mut m.ram, RECORD_VA, records, 1, leaf);
        // DST_VA's tables exist, its leaf is not present.
        let slot = tree.map(&mut m.ram, DST_VA, dst, 1, leaf);
        m.ram.write(slot, 0);
        let entry = PasidEntryBuilder::first_level(tree.root, SVA_DID, false, 2);
        m.set_pasid(dir, PASID, entry);
        m.flush_pasid_caches(SVA_DID, PASID);
        m.enable_prq(0);
        m.enable_page_requests(DEV, &[DMA_DID, SVA_DID]);
        rig.drv.enable_svm_caps();
        rig.drv.enable_wq(0, true);
        rig.drv.pasid_ctl(PASID, true);
        rig.drv.ram_write(src, &pattern(LEN as usize, 7));
        Sva {
            rig,
            dir,
            tree,
            src,
            records,
            dst,
            next_record: 0,
        }
    }

    fn drv(&mut self) -> &mut AccelDriver {
        &mut self.rig.drv
    }

    /// Submits a descriptor of PASID with a fresh zeroed completion record; returns the
    /// record's guest-physical address.
    fn submit(&mut self, desc: Descriptor) -> u64 {
        let offset = self.next_record;
        self.next_record += 32;
        let gpa = self.records + offset;
        self.rig.drv.ram_write(gpa, &[0; 32]);
        let desc = desc.with_pasid(PASID).with_completion(RECORD_VA + offset);
        self.drv().submit(0, &[desc]);
        gpa
    }

    /// The MEMMOVE from SRC_VA to DST_VA.
    fn copy(&mut self) -> u64 {
        self.submit(Descriptor::memmove(SRC_VA, DST_VA, LEN))
    }

    fn record(&self, gpa: u64) -> CompletionRecord {
        self.rig.drv.read_record_at(gpa)
    }

    /// Waits (bounded) until the guest's PRQ has a request, then drains it as Linux's
    /// prq_event_thread does; returns what it read.
    fn next_request(&mut self) -> Queued {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.rig.m.readq(DMAR_PQT_REG) == self.rig.m.readq(DMAR_PQH_REG) {
            assert!(Instant::now() < deadline, "no page request reached the PRQ");
            std::thread::sleep(Duration::from_millis(1));
        }
        let descs = self.rig.m.drain_prq(PRQ_BYTES);
        assert_eq!(descs.len(), 1, "one request: {descs:x?}");
        let [qw0, qw1, ..] = descs[0];
        Queued {
            pasid: (qw0 & (1 << 8) != 0).then_some(((qw0 >> 32) & 0xf_ffff) as u32),
            addr: qw1 & !0xfff,
            write: qw1 & 2 != 0,
            group: ((qw1 >> 3) & 0x1ff) as u16,
        }
    }

    /// The guest's page group response (intel_iommu_page_response) for `group` of `pasid`.
    fn respond(&mut self, pasid: u32, group: u16, code: u8) {
        let desc = qi::page_response(DEV.0, Some(pasid), code, group, true);
        assert_eq!(self.rig.m.submit(&[desc]), QI_DONE);
    }

    /// The page fault handler's fix: DST_VA mapped.
    fn map_dst(&mut self) {
        let leaf = PAGE_USER_RW | PAGE_ACCESSED | PAGE_DIRTY;
        self.tree
            .map(&mut self.rig.m.ram, DST_VA, self.dst, 1, leaf);
    }

    /// The copy's request in the PRQ: a write of DST_VA with PASID.
    fn expect_dst_request(&mut self) -> Queued {
        let req = self.next_request();
        assert_eq!(
            (req.pasid, req.addr, req.write),
            (Some(PASID), DST_VA, true),
            "{req:x?}"
        );
        req
    }

    /// A job that needs no page request still completes: the queue is alive.
    /// The copy of record `r` succeeded and its destination holds the source's pattern.
    fn assert_copied(&self, r: &CompletionRecord) {
        assert_eq!(r.status(), Some(Status::Success), "{r:?}");
        assert_eq!(
            self.rig.drv.ram_read(self.dst, LEN as usize),
            pattern(LEN as usize, 7)
        );
    }

    fn assert_alive(&mut self) {
        let record = self.submit(Descriptor::nop());
        let r = self.rig.drv.wait_record_at(record);
        assert_eq!(r.status(), Some(Status::Success), "the queue is stuck");
    }

    /// The device has no page request outstanding and no unexpected response seen.
    fn assert_pri_idle(&self) {
        let pri = self.rig.drv.svm().unwrap().pri();
        assert_eq!(pri.outstanding(), 0);
        assert!(!pri.status().unexpected_prg_index());
    }

    /// Takes every fault record: (reason, PASID, address).
    fn take_faults(&mut self) -> Vec<(u8, Option<u32>, u64)> {
        let m = &mut self.rig.m;
        m.unit.0.flush();
        let mut out = Vec::new();
        for index in 0..u64::from(m.unit.0.config().fault_records) {
            let (hi, lo, addr) = m.fault_record(index);
            if hi & (1 << 31) == 0 {
                continue;
            }
            let pasid = (lo & (1 << 31) != 0).then_some((hi >> 8) & 0xf_ffff);
            out.push((hi as u8, pasid, addr & !0xfff));
            m.service_fault(index);
        }
        out
    }
}

/// The job ended with a page fault at DST_VA (write), having copied nothing.
fn assert_page_fault(r: &CompletionRecord, status: Status) {
    assert_eq!(r.status(), Some(status), "{r:?}");
    assert_eq!((r.fault_addr, r.bytes_completed), (DST_VA, 0), "{r:?}");
    assert!(r.fault_info().write());
}

#[test]
fn test_pasid_job_whose_request_the_guest_never_answers_ends_at_the_timer() {
    let mut sva = Sva::new(Duration::from_millis(200));
    let started = Instant::now();
    let record = sva.copy();
    // The guest leaves its PRQ undrained and never answers.
    let r = sva.rig.drv.wait_record_at(record);
    assert!(started.elapsed() >= Duration::from_millis(200), "the timer");
    assert_page_fault(&r, Status::PageFault);
    assert_eq!(sva.rig.drv.ram_read(sva.dst, 1), [0]);
    sva.assert_pri_idle();
    // The request sat in the PRQ all along; the guest's answer after the timer is dropped.
    let req = sva.expect_dst_request();
    sva.respond(PASID, req.group, SUCCESS);
    let stats = sva.rig.m.unit.0.stats();
    assert_eq!((stats.page_responses, stats.late_page_responses), (0, 1));
    sva.assert_pri_idle();
    sva.assert_alive();
}

#[test]
fn test_pasid_job_answered_invalid_request_ends_with_a_page_fault() {
    let mut sva = Sva::new(LONG);
    let record = sva.copy();
    let req = sva.expect_dst_request();
    assert_eq!(sva.record(record).status, 0, "the job waits");
    sva.respond(PASID, req.group, INVALID_REQUEST);
    let r = sva.rig.drv.wait_record_at(record);
    assert_page_fault(&r, Status::PageFault);
    sva.assert_pri_idle();
    sva.assert_alive();
}

/// Response Failure stops the device's page request interface (PCIe 6.0 §10.4.2.1): this job
/// and the next that needs a page end PRI_UNAVAILABLE, with no page request sent, until the
/// driver re-enables PRI.
#[test]
fn test_pasid_job_answered_response_failure_stops_page_requests_until_pri_is_reset() {
    let mut sva = Sva::new(LONG);
    let record = sva.copy();
    let req = sva.expect_dst_request();
    sva.respond(PASID, req.group, RESPONSE_FAILURE);
    let r = sva.rig.drv.wait_record_at(record);
    assert_page_fault(&r, Status::PriUnavailable);
    let record = sva.copy();
    let r = sva.rig.drv.wait_record_at(record);
    assert_page_fault(&r, Status::PriUnavailable);
    assert_eq!(sva.rig.m.unit.0.stats().page_requests, 1, "no new request");
    sva.assert_alive();
    // The driver resets PRI; the guest maps the page when asked: the copy goes through.
    sva.drv().enable_pri(false);
    sva.drv().enable_pri(true);
    let record = sva.copy();
    let req = sva.expect_dst_request();
    sva.map_dst();
    sva.respond(PASID, req.group, SUCCESS);
    let r = sva.rig.drv.wait_record_at(record);
    sva.assert_copied(&r);
}

/// Answers naming another PASID, no PASID, or another group reach nobody: the job keeps
/// waiting (no unexpected response at the device) until the right answer comes.
#[test]
fn test_pasid_job_answers_for_another_pasid_or_group_are_dropped() {
    let mut sva = Sva::new(LONG);
    let record = sva.copy();
    let req = sva.expect_dst_request();
    let other_group = (req.group + 1) & 0x1ff;
    sva.respond(PASID + 1, req.group, SUCCESS);
    sva.respond(PASID, other_group, SUCCESS);
    let no_pasid = qi::page_response(DEV.0, None, SUCCESS, req.group, true);
    assert_eq!(sva.rig.m.submit(&[no_pasid]), QI_DONE);
    assert_eq!(sva.rig.m.unit.0.stats().late_page_responses, 3);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(sva.record(record).status, 0, "the job still waits");
    assert!(!sva
        .rig
        .drv
        .svm()
        .unwrap()
        .pri()
        .status()
        .unexpected_prg_index());
    sva.map_dst();
    sva.respond(PASID, req.group, SUCCESS);
    let r = sva.rig.drv.wait_record_at(record);
    sva.assert_copied(&r);
    sva.assert_pri_idle();
}

/// Between the request and its Success the guest turns the process's top-level table into a
/// loop (every entry points at the table itself, with PS, reserved at that level): the retry
/// faults for good (0x72 for DST_VA, TRANSLATION_ERROR), and so does the completion record's
/// translation (0x72, SWERR COMPLETION_FAULT). Once the guest restores its table, jobs run.
#[test]
fn test_pasid_job_table_rewritten_to_a_loop_before_the_response() {
    let mut sva = Sva::new(LONG);
    let record = sva.copy();
    let req = sva.expect_dst_request();
    let top = sva.tree.root;
    let saved: Vec<u64> = (0..512).map(|i| sva.rig.m.ram.read(top + i * 8)).collect();
    for slot in 0..512 {
        sva.rig
            .m
            .ram
            .write(top + slot * 8, top | PAGE_TABLE | PAGE_PSE);
    }
    sva.respond(PASID, req.group, SUCCESS);
    let (swerr, addr) = sva.drv().wait_swerr();
    assert_eq!(
        (swerr.code(), addr),
        (Status::CompletionFault.code(), RECORD_VA)
    );
    assert_eq!(sva.record(record).status, 0, "no record written");
    let reserved = FaultReason::SmFirstStageEntryReserved.code();
    let mut faults = sva.take_faults();
    faults.sort();
    assert_eq!(
        faults,
        [
            (reserved, Some(PASID), DST_VA),
            (reserved, Some(PASID), RECORD_VA)
        ]
    );
    sva.assert_pri_idle();
    // The guest restores its table and maps the page; the next copy succeeds.
    for (slot, entry) in (0..).zip(saved) {
        sva.rig.m.ram.write(top + slot * 8, entry);
    }
    sva.map_dst();
    let record = sva.copy();
    let r = sva.rig.drv.wait_record_at(record);
    assert_eq!(r.status(), Some(Status::Success), "{r:?}");
}

/// The guest tears the PASID down (entry cleared, PASID-cache, PASID-based IOTLB and
/// device-TLB invalidations) with the request pending: the host's unbind answers the group
/// Invalid Request, the job ends PAGE_FAULT, and its record, in the address space just
/// unbound, cannot be written (SWERR COMPLETION_FAULT; fault record 0x59 for it). The
/// guest's answer afterwards is dropped.
#[test]
fn test_pasid_job_unbound_while_its_request_is_pending() {
    let mut sva = Sva::new(LONG);
    let record = sva.copy();
    let req = sva.expect_dst_request();
    let at = sva.rig.m.pasid_entry_addr(sva.dir, PASID);
    for word in 0..8 {
        sva.rig.m.ram.write(at + word * 8, 0);
    }
    sva.rig.m.flush_pasid_caches(SVA_DID, PASID);
    let devtlb = qi::dev_iotlb_pasid(DEV.0, PASID, 0, (1 << 63) - 1, true, false);
    assert_eq!(sva.rig.m.submit(&[devtlb]), QI_DONE);
    let (swerr, addr) = sva.drv().wait_swerr();
    assert_eq!(
        (Status::from_code(swerr.code()), addr),
        (Some(Status::CompletionFault), RECORD_VA)
    );
    assert_eq!(sva.record(record).status, 0);
    let faults = sva.take_faults();
    assert!(
        faults.contains(&(
            FaultReason::SmPasidEntryNotPresent.code(),
            Some(PASID),
            RECORD_VA
        )),
        "{faults:x?}"
    );
    sva.respond(PASID, req.group, SUCCESS);
    let stats = sva.rig.m.unit.0.stats();
    assert_eq!((stats.unbinds, stats.late_page_responses), (1, 1));
    sva.assert_pri_idle();
    assert_eq!(sva.rig.drv.ram_read(sva.dst, 1), [0]);
    // A job without PASID still runs (the identity domain).
    sva.rig.drv.ram_write(sva.src + 0x800, &[0; 32]);
    let nop = Descriptor::nop().with_completion(sva.src + 0x800);
    sva.drv().submit(0, &[nop]);
    let r = sva.rig.drv.wait_record_at(sva.src + 0x800);
    assert_eq!(r.status(), Some(Status::Success));
}
