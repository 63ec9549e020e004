//! The SVM accelerator driven as a guest driver would — registers through BAR0 and config
//! space, descriptors and completion records in memfd guest RAM, MSI-X through eventfds —
//! behind a fake host IOMMU (per-PASID offset mappings with pages the test marks not present,
//! page requests the test answers). devices/accel/README.md is the contract checked here.

mod common;

use std::collections::{HashMap, HashSet, VecDeque};
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use zerocopy::{FromBytes, IntoBytes};

use common::accel::{pattern, AccelDriver, RING_SIZE, TIMEOUT, VECTOR_ERR, VECTOR_WQ};
use vsvm::devices::accel::completion::{CompletionRecord, Status};
use vsvm::devices::accel::descriptor::{DescControl, Descriptor};
use vsvm::devices::accel::regs::{offset, wq_offset, Cap, PasidCtl, WqCtrl, ACCEL_ID, MAX_XFER};
use vsvm::devices::accel::{self, Accel};
use vsvm::endpoint::Endpoint;
use vsvm::iommu::{
    Access, BindTarget, CacheInvalidate, CacheType, DefaultDomain, DeviceEndpoint, DeviceId,
    FaultHandler, Granularity, HostIommu, IoTranslation, IommuError, PageRequest, PageResponse,
    PageResponseCode, Pasid, Perms, TranslateFailure, UnrecoverableReason,
};
use vsvm::pci::caps::pri::EXT_CAP_ID_PRI;
use vsvm::vfio_user::Device;

const PAGE: u64 = 4096;

// ---------------------------------------------------------------------------------------------
// A fake host IOMMU: untagged requests are identity-mapped; PASID p maps VA to VA + offset(p),
// with per-page overrides and pages marked not present.
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct FakeState {
    endpoint: Option<Arc<dyn DeviceEndpoint>>,
    offsets: HashMap<u32, u64>,
    /// (PASID, VA page) → GPA page.
    overrides: HashMap<(u32, u64), u64>,
    absent: HashSet<(u32, u64)>,
    requests: VecDeque<PageRequest>,
}

#[derive(Default)]
struct FakeIommu {
    state: Mutex<FakeState>,
    arrived: Condvar,
}

impl FakeIommu {
    fn lock(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().unwrap()
    }

    /// Binds `pasid`: VA → VA + `offset` (wrapping).
    fn map(&self, pasid: u32, offset: u64) {
        self.lock().offsets.insert(pasid, offset);
    }

    /// Points the VA page `va` of `pasid` at the GPA page `gpa`.
    fn map_page(&self, pasid: u32, va: u64, gpa: u64) {
        self.lock().overrides.insert((pasid, va & !(PAGE - 1)), gpa);
    }

    fn set_absent(&self, pasid: u32, va: u64) {
        self.lock().absent.insert((pasid, va & !(PAGE - 1)));
    }

    /// GPA of `va` in `pasid`.
    fn gpa(&self, pasid: u32, va: u64) -> u64 {
        let s = self.lock();
        let page = va & !(PAGE - 1);
        match s.overrides.get(&(pasid, page)) {
            Some(gpa) => gpa + (va - page),
            None => va.wrapping_add(s.offsets[&pasid]),
        }
    }

    /// The next page request (stop markers included), waiting up to `timeout`.
    fn next_request(&self, timeout: Duration) -> Option<PageRequest> {
        let deadline = Instant::now() + timeout;
        let mut s = self.lock();
        loop {
            if let Some(r) = s.requests.pop_front() {
                return Some(r);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            s = self.arrived.wait_timeout(s, deadline - now).unwrap().0;
        }
    }

    /// Answers `req` as a fault handler would: on Success the page is mapped first.
    fn answer(&self, req: &PageRequest, code: PageResponseCode) {
        if code == PageResponseCode::Success {
            let pasid = req.pasid.map_or(0, Pasid::raw);
            self.lock().absent.remove(&(pasid, req.addr));
        }
        self.page_response(PageResponse::to(req, code)).unwrap();
    }

    /// Unbinds `pasid` as the vIOMMU would on munmap of everything: ATC invalidated.
    fn unmap_pasid(&self, pasid: u32) {
        self.lock().offsets.remove(&pasid);
        let ep = self.lock().endpoint.clone();
        ep.unwrap()
            .invalidate_atc(Granularity::Pasid(Pasid::new(pasid).unwrap()));
    }
}

impl HostIommu for FakeIommu {
    fn attach(
        &self,
        _device: DeviceId,
        endpoint: Arc<dyn DeviceEndpoint>,
    ) -> Result<(), IommuError> {
        self.lock().endpoint = Some(endpoint);
        Ok(())
    }

    fn detach(&self, _device: DeviceId) -> Result<(), IommuError> {
        self.lock().endpoint = None;
        Ok(())
    }

    fn bind(&self, _d: DeviceId, _p: Pasid, _t: BindTarget) -> Result<(), IommuError> {
        Ok(())
    }

    fn unbind(&self, _device: DeviceId, pasid: Pasid) -> Result<(), IommuError> {
        self.unmap_pasid(pasid.raw());
        Ok(())
    }

    fn rebind(&self, _d: DeviceId, _p: Pasid, _t: BindTarget) -> Result<(), IommuError> {
        Ok(())
    }

    fn set_default_domain(&self, _d: DeviceId, _dom: DefaultDomain) -> Result<(), IommuError> {
        Ok(())
    }

    fn cache_invalidate(&self, _device: DeviceId, inv: CacheInvalidate) -> Result<(), IommuError> {
        let ep = self.lock().endpoint.clone();
        if let (CacheType::DeviceTlb, Some(ep)) = (inv.cache, ep) {
            ep.invalidate_atc(inv.granularity);
        }
        Ok(())
    }

    fn page_response(&self, resp: PageResponse) -> Result<(), IommuError> {
        // Never call the device with the lock held.
        let ep = self.lock().endpoint.clone();
        ep.ok_or(IommuError::NotAttached(resp.device))?
            .page_response(resp);
        Ok(())
    }

    fn register_fault_handler(
        &self,
        _d: DeviceId,
        _h: Arc<dyn FaultHandler>,
    ) -> Result<(), IommuError> {
        Ok(())
    }

    fn unregister_fault_handler(&self, _device: DeviceId) -> Result<(), IommuError> {
        Ok(())
    }

    fn translate(
        &self,
        _device: DeviceId,
        pasid: Option<Pasid>,
        addr: u64,
        _access: Access,
    ) -> Result<IoTranslation, TranslateFailure> {
        let rw = Perms {
            read: true,
            write: true,
            exec: false,
            privileged: true,
        };
        let translation = |output| IoTranslation {
            output,
            page_size: PAGE,
            perms: rw,
        };
        let Some(pasid) = pasid else {
            return Ok(translation(addr));
        };
        let s = self.lock();
        let page = addr & !(PAGE - 1);
        if s.absent.contains(&(pasid.raw(), page)) {
            return Err(TranslateFailure::NotPresent);
        }
        if let Some(gpa) = s.overrides.get(&(pasid.raw(), page)) {
            return Ok(translation(gpa + (addr - page)));
        }
        match s.offsets.get(&pasid.raw()) {
            Some(offset) => Ok(translation(addr.wrapping_add(*offset))),
            None => Err(TranslateFailure::Unrecoverable(
                UnrecoverableReason::PasidInvalid,
            )),
        }
    }

    fn page_request(&self, req: PageRequest) {
        self.lock().requests.push_back(req);
        self.arrived.notify_all();
    }
}

// ---------------------------------------------------------------------------------------------
// A test rig: the shared register-level driver (tests/common/accel.rs) plus what knows the fake
// IOMMU's address spaces — which GPA a PASID's VA is, and where completion records go.
// ---------------------------------------------------------------------------------------------

const RAM_SIZE: u64 = 16 << 20;
/// Rings (untagged space = GPA here): WQ n at RING + n * RING_BYTES.
const RING: u64 = 0x1000;
/// Process address spaces: PASID_A's VA window maps to GPA 4 MiB, PASID_B's to GPA 10 MiB.
const VA: u64 = 0x7f00_1234_0000;
const PASID_A: u32 = 5;
const PASID_B: u32 = 0x9_abcd;
const GPA_A: u64 = 4 << 20;
const GPA_B: u64 = 10 << 20;
/// Completion records inside each VA window (one per slot, 32 bytes apart).
const RECORDS: u64 = VA + 0x5f_0000;
const DEVICE: DeviceId = DeviceId(0x0100);

struct Rig {
    drv: AccelDriver,
    iommu: Option<Arc<FakeIommu>>,
    next_record: u64,
}

impl Deref for Rig {
    type Target = AccelDriver;

    fn deref(&self) -> &AccelDriver {
        &self.drv
    }
}

impl DerefMut for Rig {
    fn deref_mut(&mut self) -> &mut AccelDriver {
        &mut self.drv
    }
}

impl Rig {
    fn build(ep: Endpoint<Accel>, iommu: Option<Arc<FakeIommu>>) -> Self {
        let ram = common::ram::sealed_memfd(RAM_SIZE);
        Rig {
            drv: AccelDriver::new(ep, ram, RAM_SIZE, RING),
            iommu,
            next_record: 0,
        }
    }

    /// An accelerator behind the fake IOMMU with PASID, ATS and PRI enabled as Linux does,
    /// PASID_A and PASID_B bound and enabled.
    fn svm() -> Self {
        let iommu = Arc::new(FakeIommu::default());
        let ep =
            accel::endpoint_svm(accel::VENDOR_ID, accel::DEVICE_ID, iommu.clone(), DEVICE).unwrap();
        let mut rig = Rig::build(ep, Some(iommu.clone()));
        iommu.map(PASID_A, GPA_A.wrapping_sub(VA));
        iommu.map(PASID_B, GPA_B.wrapping_sub(VA));
        rig.enable_svm_caps();
        rig.pasid_ctl(PASID_A, true);
        rig.pasid_ctl(PASID_B, true);
        rig
    }

    fn plain() -> Self {
        let ep = accel::endpoint(accel::VENDOR_ID, accel::DEVICE_ID).unwrap();
        Rig::build(ep, None)
    }

    fn iommu(&self) -> &FakeIommu {
        self.iommu.as_ref().unwrap()
    }

    /// A fresh zeroed completion record address in `pasid`'s window (VA) — or, for `None`, a
    /// GPA in untagged memory.
    fn record(&mut self, pasid: Option<u32>) -> u64 {
        self.next_record += 32;
        let addr = match pasid {
            Some(_) => RECORDS + self.next_record,
            None => 0x8_0000 + self.next_record,
        };
        self.ram_write(self.gpa(pasid, addr), &[0; 32]);
        addr
    }

    fn gpa(&self, pasid: Option<u32>, addr: u64) -> u64 {
        match pasid {
            Some(p) => self.iommu().gpa(p, addr),
            None => addr,
        }
    }

    fn read_record(&self, pasid: Option<u32>, addr: u64) -> CompletionRecord {
        self.read_record_at(self.gpa(pasid, addr))
    }

    /// Waits for the record at `addr` to get a status.
    fn wait_record(&self, pasid: Option<u32>, addr: u64) -> CompletionRecord {
        self.wait_record_at(self.gpa(pasid, addr))
    }

    /// Runs one descriptor with a completion record on `wq` and returns the record.
    fn run(&mut self, wq: usize, pasid: Option<u32>, desc: Descriptor) -> CompletionRecord {
        let record = self.record(pasid);
        let desc = match pasid {
            Some(p) => desc.with_pasid(p),
            None => desc,
        };
        self.submit(wq, &[desc.with_completion(record)]);
        self.wait_record(pasid, record)
    }

    /// A NOP must still succeed: the queue is alive.
    fn assert_queue_alive(&mut self, wq: usize, pasid: Option<u32>) {
        let r = self.run(wq, pasid, Descriptor::nop());
        assert_eq!(r.status(), Some(Status::Success), "queue {wq} is stuck");
    }
}

// ---------------------------------------------------------------------------------------------
// Identity and plain mode
// ---------------------------------------------------------------------------------------------

#[test]
fn test_cap_reports_svm_and_queues_only_with_an_iommu() {
    let mut svm = Rig::svm();
    let cap = Cap::from_bits(svm.read32(offset::CAP));
    assert!(cap.plain_dma() && cap.work_queues() && cap.svm());
    assert_eq!(cap.wq_count(), 2);
    assert_eq!(svm.read32(offset::ID), ACCEL_ID);
    assert_eq!(svm.read32(offset::VERSION) >> 16, 1, "major stays 1");
    assert_eq!(svm.read32(offset::MAX_XFER), MAX_XFER);
    let mut plain = Rig::plain();
    let cap = Cap::from_bits(plain.read32(offset::CAP));
    assert!(cap.plain_dma() && cap.work_queues() && !cap.svm());
}

#[test]
fn test_plain_queue_moves_guest_physical_memory() {
    let mut rig = Rig::plain();
    rig.enable_wq(0, false);
    let data = pattern(10000, 1);
    rig.ram_write(0x10_0000, &data);
    let r = rig.run(0, None, Descriptor::memmove(0x10_0000, 0x20_0123, 10000));
    assert_eq!(r.status(), Some(Status::Success));
    assert_eq!(r.bytes_completed, 10000);
    assert_eq!(rig.ram_read(0x20_0123, 10000), data);
}

/// A descriptor with an opcode the device does not know (refused with BAD_OPCODE in SWERR).
fn bad_opcode() -> Descriptor {
    Descriptor {
        control: DescControl::new().with_opcode(0x7f).into_bits(),
        ..Descriptor::nop()
    }
}

/// A descriptor's interrupts come after HEAD and WQ_DONE moved past it: a driver woken by the
/// completion (or error) interrupt may count the descriptor done and reuse its slot at once.
/// The real guest driver found WQ_DONE one behind right after its fence's interrupt.
#[test]
fn test_interrupts_come_after_the_queue_counted_the_descriptor() {
    let mut rig = Rig::plain();
    rig.enable_wq(0, false);
    let bad = bad_opcode();
    for done in 1..=1000u32 {
        let error = done % 4 == 0;
        let desc = if error { bad } else { Descriptor::nop() };
        rig.submit(0, &[desc.with_interrupt()]);
        rig.wait_irq_now(if error { VECTOR_ERR } else { VECTOR_WQ });
        let head = rig.read32(AccelDriver::wq_reg(0, wq_offset::HEAD));
        let counted = rig.read32(AccelDriver::wq_reg(0, wq_offset::DONE));
        assert_eq!(
            (counted, head),
            (done, done % RING_SIZE),
            "descriptor {done}: WQ_DONE and HEAD when its interrupt came"
        );
        if error {
            rig.wait_irq_now(VECTOR_WQ);
            rig.clear_swerr();
        }
    }
}

#[test]
fn test_plain_pasid_descriptor_is_a_bad_pasid_software_error() {
    let mut rig = Rig::plain();
    rig.enable_wq(0, false);
    let record = rig.record(None);
    rig.submit(
        0,
        &[Descriptor::nop().with_pasid(1).with_completion(record)],
    );
    let (swerr, addr) = rig.wait_swerr();
    assert_eq!(swerr.code(), Status::BadPasid.code());
    assert!(swerr.wq_valid() && swerr.wq() == 0 && swerr.desc_index() == 0);
    assert_eq!(addr, record);
    assert!(rig.wait_irq(VECTOR_ERR) >= 1);
    assert_eq!(rig.read_record(None, record).status, 0, "nothing written");
    rig.assert_queue_alive(0, None);
}

#[test]
fn test_plain_engine_registers_still_copy() {
    let mut rig = Rig::plain();
    rig.ram_write(0x1_0000, &pattern(256, 3));
    rig.write64(offset::DMA_SRC, 0x1_0000);
    rig.write64(offset::DMA_DST, 0x3_0000);
    rig.write32(offset::DMA_LEN, 256);
    rig.write32(offset::DMA_CMD, 1);
    let deadline = Instant::now() + TIMEOUT;
    while rig.read32(offset::DMA_STATUS) & 3 == 1 {
        assert!(Instant::now() < deadline);
    }
    assert_eq!(rig.read32(offset::DMA_STATUS), 2);
    assert_eq!(rig.ram_read(0x3_0000, 256), pattern(256, 3));
}

// ---------------------------------------------------------------------------------------------
// Operations with PASIDs
// ---------------------------------------------------------------------------------------------

#[test]
fn test_memmove_with_pasid_moves_bytes_and_interrupts() {
    let mut rig = Rig::svm();
    rig.enable_wq(0, true);
    let (src, dst, len) = (VA + 0x10_0010, VA + 0x20_0ff0, 3 * PAGE as u32 + 77);
    let data = pattern(len as usize, 7);
    rig.ram_write(rig.gpa(Some(PASID_A), src), &data);
    let record = rig.record(Some(PASID_A));
    let desc = Descriptor::memmove(src, dst, len)
        .with_pasid(PASID_A)
        .with_completion(record)
        .with_interrupt();
    rig.submit(0, &[desc]);
    let r = rig.wait_record(Some(PASID_A), record);
    assert_eq!(r.status(), Some(Status::Success));
    assert_eq!(r.bytes_completed, len);
    assert_eq!(
        rig.ram_read(rig.gpa(Some(PASID_A), dst), len as usize),
        data
    );
    assert_eq!(rig.wait_irq(VECTOR_WQ), 1);
    assert_eq!(rig.irqs(VECTOR_ERR), 0);
    let stats = rig.ep.function().svm().unwrap().ats().stats();
    assert!(stats.misses > 0, "translations went through ATS");
}

#[test]
fn test_two_pasids_see_their_own_memory() {
    let mut rig = Rig::svm();
    rig.enable_wq(0, true);
    rig.ram_write(GPA_A + 0x1000, &[0xaa; 64]);
    rig.ram_write(GPA_B + 0x1000, &[0xbb; 64]);
    let a = rig.run(
        0,
        Some(PASID_A),
        Descriptor::memmove(VA + 0x1000, VA + 0x3000, 64),
    );
    let b = rig.run(
        0,
        Some(PASID_B),
        Descriptor::memmove(VA + 0x1000, VA + 0x3000, 64),
    );
    assert_eq!(
        (a.status(), b.status()),
        (Some(Status::Success), Some(Status::Success))
    );
    assert_eq!(rig.ram_read(GPA_A + 0x3000, 64), vec![0xaa; 64]);
    assert_eq!(rig.ram_read(GPA_B + 0x3000, 64), vec![0xbb; 64]);
}

#[test]
fn test_memmove_overlapping_upward_copies_backward() {
    let mut rig = Rig::svm();
    rig.enable_wq(0, true);
    let len = 5 * PAGE as u32;
    let data = pattern(len as usize, 9);
    rig.ram_write(GPA_A + 0x1_0000, &data);
    let r = rig.run(
        0,
        Some(PASID_A),
        Descriptor::memmove(VA + 0x1_0000, VA + 0x1_0000 + 1000, len),
    );
    assert_eq!(r.status(), Some(Status::Success));
    assert!(r.fault_info().backward());
    assert_eq!(rig.ram_read(GPA_A + 0x1_0000 + 1000, len as usize), data);
    // Downward overlap runs forward.
    let r = rig.run(
        0,
        Some(PASID_A),
        Descriptor::memmove(VA + 0x1_0000 + 1000, VA + 0x1_0000 + 10, len),
    );
    assert!(!r.fault_info().backward());
    assert_eq!(rig.ram_read(GPA_A + 0x1_0000 + 10, len as usize), data);
}

#[test]
fn test_memmove_across_scattered_pages_lands_in_each_page() {
    let mut rig = Rig::svm();
    rig.enable_wq(0, true);
    // Destination pages 0..4 of a VA range map to GPA pages in reverse order.
    let dst = VA + 0x40_0000;
    for i in 0..4 {
        rig.iommu()
            .map_page(PASID_A, dst + i * PAGE, GPA_A + 0x50_0000 - i * PAGE);
    }
    let data = pattern(4 * PAGE as usize, 4);
    rig.ram_write(GPA_A + 0x8000, &data);
    for backward in [false, true] {
        let src = if backward { dst - 100 } else { VA + 0x8000 };
        if backward {
            rig.ram_write(GPA_A + 0x40_0000 - 100, &data[..100]);
            rig.ram_write(GPA_A + 0x50_0000 - 3 * PAGE, &[0; 4096]);
        }
        let r = rig.run(
            0,
            Some(PASID_A),
            Descriptor::memmove(src, dst, 4 * PAGE as u32),
        );
        assert_eq!(r.status(), Some(Status::Success));
        if !backward {
            for i in 0..4u64 {
                let page = rig.ram_read(GPA_A + 0x50_0000 - i * PAGE, PAGE as usize);
                assert_eq!(page, data[(i * PAGE) as usize..((i + 1) * PAGE) as usize]);
            }
        }
    }
}

#[test]
fn test_memmove_one_mib_completes() {
    let mut rig = Rig::svm();
    rig.enable_wq(1, true);
    let data = pattern(MAX_XFER as usize, 11);
    rig.ram_write(GPA_A, &data);
    let r = rig.run(
        1,
        Some(PASID_A),
        Descriptor::memmove(VA, VA + 0x20_0000, MAX_XFER),
    );
    assert_eq!(r.status(), Some(Status::Success));
    assert_eq!(r.bytes_completed, MAX_XFER);
    assert_eq!(rig.ram_read(GPA_A + 0x20_0000, MAX_XFER as usize), data);
}

#[test]
fn test_fill_writes_the_pattern_in_phase() {
    let mut rig = Rig::svm();
    rig.enable_wq(0, true);
    let p = 0x0807_0605_0403_0201u64;
    let r = rig.run(0, Some(PASID_A), Descriptor::fill(VA + 0x7ffd, 10000, p));
    assert_eq!(r.status(), Some(Status::Success));
    let out = rig.ram_read(GPA_A + 0x7ffd, 10000);
    assert!(out.iter().enumerate().all(|(i, b)| *b == (i % 8) as u8 + 1));
    assert_eq!(rig.ram_read(GPA_A + 0x7ffd + 10000, 1), [0]);
}

#[test]
fn test_compare_reports_equal_and_first_difference() {
    let mut rig = Rig::svm();
    rig.enable_wq(0, true);
    let data = pattern(3 * PAGE as usize, 5);
    rig.ram_write(GPA_A + 0x1_0000, &data);
    rig.ram_write(GPA_A + 0x2_0800, &data);
    let (a, b) = (VA + 0x1_0000, VA + 0x2_0800);
    let r = rig.run(
        0,
        Some(PASID_A),
        Descriptor::compare(a, b, data.len() as u32),
    );
    assert_eq!((r.status(), r.result), (Some(Status::Success), 0));
    assert_eq!(r.bytes_completed, data.len() as u32);
    rig.ram_write(GPA_A + 0x2_0800 + 9000, &[data[9000] ^ 1]);
    let r = rig.run(
        0,
        Some(PASID_A),
        Descriptor::compare(a, b, data.len() as u32),
    );
    assert_eq!((r.status(), r.result), (Some(Status::Success), 1));
    assert_eq!(r.bytes_completed, 9000);
}

#[test]
fn test_nop_without_pasid_writes_record_and_interrupts() {
    let mut rig = Rig::svm();
    rig.enable_wq(1, true);
    let record = rig.record(None);
    rig.submit(
        1,
        &[Descriptor::nop().with_completion(record).with_interrupt()],
    );
    assert_eq!(
        rig.wait_record(None, record).status(),
        Some(Status::Success)
    );
    assert_eq!(rig.wait_irq(VECTOR_WQ), 1);
    // A NOP with neither record nor interrupt just advances the queue.
    rig.submit(1, &[Descriptor::nop()]);
    rig.wait_idle(1);
    assert_eq!(rig.read32(AccelDriver::wq_reg(1, wq_offset::DONE)), 2);
}

#[test]
fn test_batch_runs_its_descriptors_with_their_records() {
    let mut rig = Rig::svm();
    rig.enable_wq(0, true);
    let list = VA + 0x30_0000;
    let subs_records: Vec<u64> = (0..3).map(|_| rig.record(Some(PASID_A))).collect();
    rig.ram_write(GPA_A + 0x1000, &pattern(100, 2));
    let subs = [
        Descriptor::memmove(VA + 0x1000, VA + 0x2000, 100).with_completion(subs_records[0]),
        // PASID fields inside a batch are ignored: this runs in PASID_A too.
        Descriptor::fill(VA + 0x3000, 64, 0x1111_1111_1111_1111)
            .with_pasid(PASID_B)
            .with_completion(subs_records[1]),
        Descriptor::compare(VA + 0x1000, VA + 0x2000, 100).with_completion(subs_records[2]),
    ];
    for (i, d) in subs.iter().enumerate() {
        rig.ram_write(GPA_A + 0x30_0000 + i as u64 * 64, d.as_bytes());
    }
    let r = rig.run(0, Some(PASID_A), Descriptor::batch(list, 3));
    assert_eq!(r.status(), Some(Status::Success));
    assert_eq!(r.bytes_completed, 3);
    for rec in &subs_records {
        assert_eq!(
            rig.read_record(Some(PASID_A), *rec).status(),
            Some(Status::Success)
        );
    }
    assert_eq!(rig.read_record(Some(PASID_A), subs_records[2]).result, 0);
    assert_eq!(rig.ram_read(GPA_A + 0x3000, 64), vec![0x11; 64]);
    assert_eq!(rig.ram_read(GPA_B + 0x3000, 64), vec![0; 64]);
}

#[test]
fn test_batch_with_bad_descriptors_fails_but_runs_the_rest() {
    let mut rig = Rig::svm();
    rig.enable_wq(0, true);
    let list = VA + 0x30_0000;
    let recs: Vec<u64> = (0..4).map(|_| rig.record(Some(PASID_A))).collect();
    let mut bad_opcode = Descriptor::nop().with_completion(recs[1]);
    bad_opcode.control = DescControl::from_bits(bad_opcode.control)
        .with_opcode(0x42)
        .into_bits();
    let subs = [
        Descriptor::nop().with_completion(recs[0]),
        bad_opcode,
        Descriptor::batch(list, 1).with_completion(recs[2]),
        Descriptor::fill(VA + 0x9000, 8, 0xff).with_completion(recs[3]),
    ];
    for (i, d) in subs.iter().enumerate() {
        rig.ram_write(GPA_A + 0x30_0000 + i as u64 * 64, d.as_bytes());
    }
    let r = rig.run(0, Some(PASID_A), Descriptor::batch(list, 4));
    assert_eq!(r.status(), Some(Status::BatchFail));
    assert_eq!(r.bytes_completed, 4);
    let status = |rig: &Rig, i: usize| rig.read_record(Some(PASID_A), recs[i]).status();
    assert_eq!(status(&rig, 0), Some(Status::Success));
    assert_eq!(status(&rig, 1), Some(Status::BadOpcode));
    assert_eq!(status(&rig, 2), Some(Status::NestedBatch));
    assert_eq!(status(&rig, 3), Some(Status::Success));
    assert!(
        rig.wait_irq(VECTOR_ERR) >= 1,
        "error statuses raise the error vector"
    );
}

// ---------------------------------------------------------------------------------------------
// Page faults
// ---------------------------------------------------------------------------------------------

#[test]
fn test_block_on_fault_waits_for_the_page_and_completes() {
    let mut rig = Rig::svm();
    rig.enable_wq(0, true);
    let (src, dst) = (VA + 0x1_0000, VA + 0x2_0000);
    let data = pattern(2 * PAGE as usize, 8);
    rig.ram_write(rig.gpa(Some(PASID_A), src), &data);
    rig.iommu().set_absent(PASID_A, dst + PAGE);
    let record = rig.record(Some(PASID_A));
    rig.submit(
        0,
        &[Descriptor::memmove(src, dst, 2 * PAGE as u32)
            .with_pasid(PASID_A)
            .with_completion(record)],
    );
    let req = rig.iommu().next_request(TIMEOUT).expect("a page request");
    assert_eq!(req.device, DEVICE);
    assert_eq!(req.pasid, Pasid::new(PASID_A));
    assert_eq!(req.addr, dst + PAGE);
    assert!(req.access.write && !req.access.read && req.last);
    assert_eq!(
        rig.read_record(Some(PASID_A), record).status,
        0,
        "job waits"
    );
    rig.iommu().answer(&req, PageResponseCode::Success);
    let r = rig.wait_record(Some(PASID_A), record);
    assert_eq!(r.status(), Some(Status::Success));
    assert_eq!(rig.ram_read(rig.gpa(Some(PASID_A), dst), data.len()), data);
}

#[test]
fn test_block_on_fault_invalid_request_is_a_page_fault_status() {
    let mut rig = Rig::svm();
    rig.enable_wq(0, true);
    let src = VA + 0x1_0000;
    rig.iommu().set_absent(PASID_A, src + 2 * PAGE);
    let record = rig.record(Some(PASID_A));
    let desc = Descriptor::memmove(src, VA + 0x10_0000, 3 * PAGE as u32)
        .with_pasid(PASID_A)
        .with_completion(record);
    rig.submit(0, &[desc]);
    let req = rig.iommu().next_request(TIMEOUT).unwrap();
    assert!(req.access.read && !req.access.write);
    rig.iommu().answer(&req, PageResponseCode::InvalidRequest);
    let r = rig.wait_record(Some(PASID_A), record);
    assert_eq!(r.status(), Some(Status::PageFault));
    assert_eq!(r.fault_addr, src + 2 * PAGE);
    assert_eq!(r.bytes_completed, 2 * PAGE as u32);
    assert!(!r.fault_info().write());
    rig.assert_queue_alive(0, Some(PASID_A));
}

/// A fault handler that answers Success without mapping the page: the job asks for the page
/// MAX_PAGE_REQUESTS times, then completes with the fault instead of asking forever.
#[test]
fn test_page_requests_per_page_stop_at_max_page_requests() {
    let mut rig = Rig::svm();
    rig.enable_wq(0, true);
    let src = VA + 0x1_0000;
    rig.iommu().set_absent(PASID_A, src);
    let record = rig.record(Some(PASID_A));
    let desc = Descriptor::memmove(src, VA + 0x10_0000, PAGE as u32)
        .with_pasid(PASID_A)
        .with_completion(record);
    rig.submit(0, &[desc]);
    for i in 0..accel::MAX_PAGE_REQUESTS {
        let req = rig.iommu().next_request(TIMEOUT).expect("a page request");
        assert_eq!(req.addr, src, "request {i}");
        let success = PageResponse::to(&req, PageResponseCode::Success);
        rig.iommu().page_response(success).unwrap();
    }
    let r = rig.wait_record(Some(PASID_A), record);
    assert_eq!(r.status(), Some(Status::PageFault));
    assert_eq!(r.fault_addr, src);
    assert!(
        rig.iommu()
            .next_request(Duration::from_millis(50))
            .is_none(),
        "no request past the limit"
    );
    rig.assert_queue_alive(0, Some(PASID_A));
}

#[test]
fn test_report_fault_mode_completes_with_the_fault_at_once() {
    let mut rig = Rig::svm();
    rig.enable_wq(1, false);
    let dst = VA + 0x6_0000;
    rig.iommu().set_absent(PASID_B, dst + PAGE);
    let r = rig.run(
        1,
        Some(PASID_B),
        Descriptor::fill(dst + 0x800, 2 * PAGE as u32, 1),
    );
    assert_eq!(r.status(), Some(Status::PageFault));
    assert_eq!(r.fault_addr, dst + PAGE);
    assert_eq!(r.bytes_completed, 0x800);
    assert!(r.fault_info().write());
    assert!(rig
        .iommu()
        .next_request(Duration::from_millis(50))
        .is_none());
    assert_eq!(rig.irqs(VECTOR_ERR), 0, "a reported fault is not an error");
}

#[test]
fn test_fault_with_pri_disabled_fails_with_error_interrupt() {
    let mut rig = Rig::svm();
    rig.enable_pri(false);
    rig.enable_wq(0, true);
    rig.iommu().set_absent(PASID_A, VA + 0x4000);
    let r = rig.run(0, Some(PASID_A), Descriptor::fill(VA + 0x4000, 16, 0));
    assert_eq!(r.status(), Some(Status::PriUnavailable));
    assert_eq!(r.fault_addr, VA + 0x4000);
    assert!(rig.wait_irq(VECTOR_ERR) >= 1);
    rig.assert_queue_alive(0, Some(PASID_A));
}

#[test]
fn test_fault_on_the_completion_record_blocks_then_writes_it() {
    let mut rig = Rig::svm();
    rig.enable_wq(0, true);
    let record = rig.record(Some(PASID_A));
    rig.iommu().set_absent(PASID_A, record);
    rig.submit(
        0,
        &[Descriptor::nop()
            .with_pasid(PASID_A)
            .with_completion(record)],
    );
    let req = rig.iommu().next_request(TIMEOUT).unwrap();
    assert_eq!(req.addr, record & !(PAGE - 1));
    rig.iommu().answer(&req, PageResponseCode::Success);
    assert_eq!(
        rig.wait_record(Some(PASID_A), record).status(),
        Some(Status::Success)
    );
}

#[test]
fn test_unbound_pasid_is_a_translation_error_after_atc_invalidation() {
    let mut rig = Rig::svm();
    rig.enable_wq(0, true);
    // Warm the ATC, then unbind: the invalidation must reach it.
    assert_eq!(
        rig.run(0, Some(PASID_B), Descriptor::fill(VA + 0x1000, 8, 0))
            .status(),
        Some(Status::Success)
    );
    let record = rig.record(Some(PASID_B));
    let invalidations = rig.ep.function().svm().unwrap().ats().stats().invalidations;
    rig.iommu().unmap_pasid(PASID_B);
    assert!(rig.ep.function().svm().unwrap().ats().stats().invalidations > invalidations);
    rig.submit(
        0,
        &[Descriptor::fill(VA + 0x1000, 8, 0)
            .with_pasid(PASID_B)
            .with_completion(record)],
    );
    // The record lives in the unbound address space too: only SWERR can tell.
    let (swerr, addr) = rig.wait_swerr();
    assert_eq!(swerr.code(), Status::CompletionFault.code());
    assert_eq!(addr, record);
    // Without a record, the translation error itself goes to SWERR.
    rig.submit(
        0,
        &[Descriptor::fill(VA + 0x1000, 8, 0).with_pasid(PASID_B)],
    );
    let (swerr, addr) = rig.wait_swerr();
    assert_eq!(swerr.code(), Status::TranslationError.code());
    assert_eq!(addr, VA + 0x1000);
    rig.assert_queue_alive(0, Some(PASID_A));
}

// ---------------------------------------------------------------------------------------------
// Bad input: error status or SWERR, error interrupt, queue continues
// ---------------------------------------------------------------------------------------------

#[test]
fn test_bad_descriptors_get_error_records_and_the_queue_continues() {
    let mut rig = Rig::svm();
    rig.enable_wq(0, true);
    let mut bad_opcode = Descriptor::nop();
    bad_opcode.control = DescControl::from_bits(bad_opcode.control)
        .with_opcode(0xee)
        .into_bits();
    let mut reserved = Descriptor::nop();
    reserved.reserved0 = 1;
    let cases = [
        (bad_opcode, Status::BadOpcode),
        (reserved, Status::BadFlags),
        (Descriptor::memmove(VA, VA + 0x1000, 0), Status::BadSize),
        (Descriptor::fill(VA, MAX_XFER + 1, 0), Status::BadSize),
        (Descriptor::batch(VA + 0x30_0000, 0), Status::BadBatch),
        (Descriptor::batch(VA + 0x30_0000, 1000), Status::BadBatch),
        (Descriptor::batch(VA + 0x30_0008, 1), Status::BadBatch),
    ];
    for (desc, status) in cases {
        let r = rig.run(0, Some(PASID_A), desc);
        assert_eq!(r.status(), Some(status), "{desc:?}");
        assert!(
            rig.wait_irq(VECTOR_ERR) >= 1,
            "error interrupt for {status:?}"
        );
        rig.assert_queue_alive(0, Some(PASID_A));
    }
}

#[test]
fn test_descriptors_without_a_usable_record_are_software_errors() {
    let mut rig = Rig::svm();
    rig.enable_wq(0, true);
    let record = rig.record(Some(PASID_A));
    let cases = [
        (
            Descriptor::nop()
                .with_pasid(PASID_A)
                .with_completion(record + 8),
            Status::BadCompletionAddr,
            record + 8,
        ),
        (
            Descriptor::nop()
                .with_pasid(Pasid::MAX + 1)
                .with_completion(record),
            Status::BadPasid,
            record,
        ),
        (
            Descriptor::nop().with_pasid(77).with_completion(record),
            Status::PasidDisabled,
            record,
        ),
        (
            Descriptor::memmove(VA, VA + 0x1000, 0).with_pasid(PASID_A),
            Status::BadSize,
            0,
        ),
    ];
    for (i, (desc, status, addr)) in cases.into_iter().enumerate() {
        rig.submit(0, &[desc]);
        let (swerr, at) = rig.wait_swerr();
        assert_eq!(Status::from_code(swerr.code()), Some(status));
        assert_eq!(
            (swerr.wq(), swerr.desc_index()),
            (0, ((rig.tails[0] + RING_SIZE - 1) % RING_SIZE) as u16),
            "case {i}"
        );
        assert_eq!(at, addr);
        assert!(rig.wait_irq(VECTOR_ERR) >= 1);
        rig.assert_queue_alive(0, Some(PASID_A));
    }
    assert_eq!(
        rig.read_record(Some(PASID_A), record).status(),
        Some(Status::None)
    );
}

#[test]
fn test_privileged_descriptors_need_privileged_mode_enable() {
    let mut rig = Rig::svm();
    rig.enable_wq(0, true);
    rig.enable_pasid_cap(false);
    rig.submit(0, &[Descriptor::nop().with_pasid(PASID_A).privileged()]);
    assert_eq!(rig.wait_swerr().0.code(), Status::BadPrivilege.code());
    rig.enable_pasid_cap(true);
    let r = rig.run(0, Some(PASID_A), Descriptor::nop().privileged());
    assert_eq!(r.status(), Some(Status::Success));
    // PRIV without a PASID is a bad descriptor with a record (it has an address space).
    let r = rig.run(0, None, Descriptor::nop().privileged());
    assert_eq!(r.status(), Some(Status::BadPrivilege));
}

#[test]
fn test_pasid_descriptors_need_pasid_enable() {
    let mut rig = Rig::svm();
    rig.enable_wq(0, true);
    rig.disable_pasid_cap();
    rig.submit(0, &[Descriptor::nop().with_pasid(PASID_A)]);
    assert_eq!(rig.wait_swerr().0.code(), Status::BadPasid.code());
}

#[test]
fn test_bad_doorbells_and_queue_configs_are_refused() {
    let mut rig = Rig::svm();
    // Enabling with a size that is no power of two is refused.
    rig.write64(AccelDriver::wq_reg(0, wq_offset::BASE), RING);
    rig.write32(AccelDriver::wq_reg(0, wq_offset::SIZE), 48);
    rig.write32(
        AccelDriver::wq_reg(0, wq_offset::CTRL),
        WqCtrl::new().with_enable(true).into_bits(),
    );
    let status = rig.wq_status(0);
    assert!(!status.enabled());
    assert_eq!(status.error(), Status::BadWqConfig.code());
    // A doorbell on a disabled queue, and one beyond the ring.
    rig.write32(AccelDriver::wq_reg(0, wq_offset::TAIL), 1);
    assert_eq!(rig.wait_swerr().0.code(), Status::BadTail.code());
    rig.enable_wq(0, true);
    rig.write32(AccelDriver::wq_reg(0, wq_offset::TAIL), RING_SIZE);
    let (swerr, addr) = rig.wait_swerr();
    assert_eq!(
        (swerr.code(), addr),
        (Status::BadTail.code(), u64::from(RING_SIZE))
    );
    rig.assert_queue_alive(0, None);
}

#[test]
fn test_unreadable_ring_is_a_software_error_per_descriptor() {
    let mut rig = Rig::svm();
    rig.write64(AccelDriver::wq_reg(1, wq_offset::BASE), RAM_SIZE + 0x10000);
    rig.write32(AccelDriver::wq_reg(1, wq_offset::SIZE), 4);
    rig.write32(
        AccelDriver::wq_reg(1, wq_offset::CTRL),
        WqCtrl::new().with_enable(true).into_bits(),
    );
    rig.write32(AccelDriver::wq_reg(1, wq_offset::TAIL), 2);
    rig.tails[1] = 2;
    rig.wait_idle(1);
    // Both descriptors failed: the first is recorded, the second only flags OVERFLOW.
    let (swerr, addr) = rig.swerr();
    assert!(swerr.valid() && swerr.overflow());
    assert_eq!(swerr.code(), Status::RingReadFault.code());
    assert_eq!((swerr.wq(), swerr.desc_index()), (1, 0));
    assert_eq!(addr, RAM_SIZE + 0x10000);
}

/// The sequence the stress oracle once missed: a descriptor's error arrives between the
/// driver's SWERR read and its write-back, and WQ_DONE counts the descriptor before the
/// driver looks again. Its error is not in VALID's record: only OVERFLOW, with VALID clear,
/// says it was lost.
#[test]
fn test_error_between_swerr_read_and_clear_leaves_overflow_without_valid() {
    let mut rig = Rig::plain();
    rig.enable_wq(0, false);
    let bad = bad_opcode();
    rig.submit(0, &[bad]);
    rig.wait_idle(0);
    let (seen, _) = rig.swerr();
    assert!(seen.valid() && !seen.overflow());
    assert_eq!(
        (seen.code(), seen.desc_index()),
        (Status::BadOpcode.code(), 0)
    );
    rig.submit(0, &[bad]);
    rig.wait_idle(0);
    assert_eq!(rig.read32(AccelDriver::wq_reg(0, wq_offset::DONE)), 2);
    rig.clear_swerr_seen(seen);
    let (after, addr) = rig.swerr();
    assert!(!after.valid() && after.overflow(), "SWERR {after:?}");
    assert_eq!(addr, 0);
    rig.clear_swerr_seen(after);
    assert_eq!(rig.swerr().0.into_bits(), 0);
}

#[test]
fn test_bus_master_off_stops_descriptors_with_an_error() {
    let mut rig = Rig::svm();
    rig.enable_wq(0, true);
    rig.set_command(false);
    rig.submit(0, &[Descriptor::nop()]);
    assert_eq!(rig.wait_swerr().0.code(), Status::DmaError.code());
    rig.set_command(true);
    rig.assert_queue_alive(0, None);
}

#[test]
fn test_random_descriptors_never_stick_the_queue() {
    let mut rig = Rig::svm();
    rig.enable_wq(0, false);
    let mut x = 0x1234_5678_9abc_def0u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..300 {
        let mut bytes = [0u8; 64];
        for chunk in bytes.chunks_mut(8) {
            chunk.copy_from_slice(&next().to_le_bytes());
        }
        let mut d = Descriptor::read_from_bytes(&bytes).unwrap();
        // Keep lengths small and addresses mostly near the windows so some work runs.
        d.len %= 0x3000;
        if next() % 2 == 0 {
            d.control = DescControl::from_bits(d.control)
                .with_opcode((next() % 6) as u8)
                .with_reserved(0)
                .into_bits();
            d.reserved0 = 0;
            d.reserved1 = [0; 2];
            d.pasid = [PASID_A, PASID_B, 3][(next() % 3) as usize];
            d.src = VA + next() % 0x40_0000;
            d.dst = VA + next() % 0x40_0000;
            d.completion = RECORDS + (next() % 64) * 32;
        }
        rig.submit(0, &[d]);
        if rig.tails[0] % 16 == 0 {
            rig.wait_idle(0);
        }
    }
    rig.wait_idle(0);
    rig.clear_swerr();
    rig.assert_queue_alive(0, Some(PASID_A));
}

// ---------------------------------------------------------------------------------------------
// PASID disable (drain) and reset
// ---------------------------------------------------------------------------------------------

#[test]
fn test_pasid_disable_aborts_a_job_blocked_on_a_page_request() {
    let mut rig = Rig::svm();
    rig.enable_wq(0, true);
    let (src, dst) = (VA + 0x1_0000, VA + 0x8_0000);
    rig.iommu().set_absent(PASID_A, dst + 2 * PAGE);
    let blocked = rig.record(Some(PASID_A));
    let queued = rig.record(Some(PASID_A));
    rig.submit(
        0,
        &[
            Descriptor::memmove(src, dst, 4 * PAGE as u32)
                .with_pasid(PASID_A)
                .with_completion(blocked),
            Descriptor::fill(dst, 64, 0xff)
                .with_pasid(PASID_A)
                .with_completion(queued),
        ],
    );
    let req = rig.iommu().next_request(TIMEOUT).unwrap();
    assert_eq!(req.addr, dst + 2 * PAGE);
    // The page request is never answered: the driver unbinds, disabling the PASID first.
    rig.pasid_ctl(PASID_A, false);
    let r = rig.wait_record(Some(PASID_A), blocked);
    assert_eq!(r.status(), Some(Status::Aborted));
    assert_eq!(r.bytes_completed, 2 * PAGE as u32);
    assert_eq!(
        rig.wait_record(Some(PASID_A), queued).status(),
        Some(Status::Aborted)
    );
    let deadline = Instant::now() + TIMEOUT;
    while rig.read_pasid_ctl(PASID_A).draining() {
        assert!(Instant::now() < deadline, "drain never finished");
    }
    assert_eq!(rig.read_pasid_ctl(PASID_A), PasidCtl::new(), "idle");
    let marker = rig.iommu().next_request(TIMEOUT).expect("a stop marker");
    assert!(marker.is_stop_marker() && marker.pasid == Pasid::new(PASID_A));
    // The drained group keeps its credit until its response arrives, late; then it is freed
    // without an Unexpected PRG Index (the IOMMU answers aborted groups on unbind).
    let pri = rig.ep.function().svm().unwrap().pri();
    assert_eq!(pri.outstanding(), 1);
    rig.iommu().answer(&req, PageResponseCode::InvalidRequest);
    assert_eq!(pri.outstanding(), 0);
    assert!(!pri.status().unexpected_prg_index());
    // Nothing of the aborted fill landed; the queue serves another PASID.
    assert_eq!(rig.ram_read(rig.gpa(Some(PASID_A), dst), 64), vec![0; 64]);
    rig.assert_queue_alive(0, Some(PASID_B));
    // A descriptor for the disabled PASID is now refused without touching its memory.
    let record = rig.record(Some(PASID_A));
    rig.submit(
        0,
        &[Descriptor::nop()
            .with_pasid(PASID_A)
            .with_completion(record)],
    );
    assert_eq!(rig.wait_swerr().0.code(), Status::PasidDisabled.code());
    assert_eq!(rig.read_record(Some(PASID_A), record).status, 0);
    // Re-enabled, it works again.
    rig.pasid_ctl(PASID_A, true);
    rig.assert_queue_alive(0, Some(PASID_A));
}

#[test]
fn test_pasid_disable_with_nothing_in_flight_is_idle_at_once() {
    let mut rig = Rig::svm();
    rig.enable_wq(0, true);
    rig.pasid_ctl(PASID_B, false);
    let deadline = Instant::now() + TIMEOUT;
    while rig.read_pasid_ctl(PASID_B).draining() {
        assert!(Instant::now() < deadline);
    }
    assert!(!rig.read_pasid_ctl(PASID_B).enable());
    assert!(rig.read_pasid_ctl(PASID_A).enable());
    assert_eq!(rig.ep.function().enabled_pasids(), 1);
}

#[test]
fn test_flr_stops_a_blocked_job_and_the_device_works_after() {
    let mut rig = Rig::svm();
    rig.enable_wq(0, true);
    let dst = VA + 0x8_0000;
    rig.iommu().set_absent(PASID_A, dst);
    let record = rig.record(Some(PASID_A));
    rig.submit(
        0,
        &[Descriptor::fill(dst, 64, 0x55)
            .with_pasid(PASID_A)
            .with_completion(record)],
    );
    rig.iommu().next_request(TIMEOUT).unwrap();
    rig.ep.reset().unwrap();
    let deadline = Instant::now() + TIMEOUT;
    while rig.wq_status(0).busy() {
        assert!(Instant::now() < deadline, "job never stopped");
    }
    assert!(!rig.wq_status(0).enabled());
    assert_eq!(rig.read32(AccelDriver::wq_reg(0, wq_offset::HEAD)), 0);
    assert!(!rig.read_pasid_ctl(PASID_A).enable());
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(
        rig.read_record(Some(PASID_A), record).status,
        0,
        "nothing after reset"
    );
    // Set the device up again, as a driver's probe does.
    rig.set_command(true);
    rig.enable_pasid_cap(true);
    rig.enable_pri(true);
    rig.pasid_ctl(PASID_A, true);
    rig.enable_wq(0, true);
    rig.iommu().answer(
        &PageRequest {
            device: DEVICE,
            pasid: Pasid::new(PASID_A),
            addr: dst,
            access: Access::WRITE,
            group: 0,
            last: true,
        },
        PageResponseCode::Success,
    );
    rig.assert_queue_alive(0, Some(PASID_A));
}

#[test]
fn test_queue_disable_aborts_the_job_in_flight() {
    let mut rig = Rig::svm();
    rig.enable_wq(1, true);
    let dst = VA + 0x8_0000;
    rig.iommu().set_absent(PASID_A, dst);
    let record = rig.record(Some(PASID_A));
    rig.submit(
        1,
        &[Descriptor::fill(dst, 64, 1)
            .with_pasid(PASID_A)
            .with_completion(record)],
    );
    let req = rig.iommu().next_request(TIMEOUT).unwrap();
    rig.write32(AccelDriver::wq_reg(1, wq_offset::CTRL), 0);
    assert!(rig.wq_status(1).busy(), "busy until the page response");
    rig.iommu().answer(&req, PageResponseCode::Success);
    assert_eq!(
        rig.wait_record(Some(PASID_A), record).status(),
        Some(Status::Aborted)
    );
    let deadline = Instant::now() + TIMEOUT;
    while rig.wq_status(1).busy() {
        assert!(Instant::now() < deadline);
    }
    rig.enable_wq(1, true);
    rig.assert_queue_alive(1, Some(PASID_A));
}

#[test]
fn test_pri_status_in_config_space_follows_the_engine() {
    let mut rig = Rig::svm();
    let pri = rig.ext_cap(EXT_CAP_ID_PRI);
    let stopped = 1 << 8;
    assert_eq!(rig.cfg_read16(pri + 6) & stopped, 0, "enabled: not stopped");
    rig.enable_pri(false);
    assert_ne!(rig.cfg_read16(pri + 6) & stopped, 0);
    // A response nobody waits for: Unexpected PRG Index, cleared by writing 1.
    rig.enable_pri(true);
    rig.iommu().answer(
        &PageRequest {
            device: DEVICE,
            pasid: Pasid::new(PASID_A),
            addr: 0,
            access: Access::READ,
            group: 7,
            last: true,
        },
        PageResponseCode::InvalidRequest,
    );
    let unexpected = 1 << 1;
    assert_ne!(rig.cfg_read16(pri + 6) & unexpected, 0);
    rig.cfg_write16(pri + 6, unexpected);
    assert_eq!(rig.cfg_read16(pri + 6) & unexpected, 0);
}
