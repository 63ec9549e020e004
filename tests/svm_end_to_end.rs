//! The whole vSVM path in-process, with no fake below the test: the accelerator
//! (`accel::endpoint_svm`) with its ATS and PRI engines, behind the physical VT-d model
//! (`PhysicalIommu`) through the neutral `iommu` API, both reaching the same memfd guest RAM.
//! The test plays the guest: it builds x86 4-level page tables for its processes in that RAM,
//! binds PASIDs to them (`BindTarget::GuestPageTable`, nested translation with the DMA map as
//! second stage), is the fault handler that maps pages and answers page requests (the guest's
//! IOMMU driver), invalidates as Linux does on munmap, and drives the accelerator through its
//! registers (tests/common/accel.rs). Issue 4 part 5; devices/accel/README.md is the device
//! contract, PCIe 6.0 §10 (ATS, PRI) and VT-d 3.6 / 6.5 / 7.5 the IOMMU's.

#[path = "common/accel.rs"]
mod accel_driver;
mod common_vtd;
#[path = "svm_end_to_end/default_domain.rs"]
mod default_domain;

use std::collections::{HashMap, HashSet, VecDeque};
use std::ops::Range;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread;
use std::time::{Duration, Instant};

use zerocopy::IntoBytes;

use accel_driver::{pattern, AccelDriver, TIMEOUT, VECTOR_ERR, VECTOR_WQ};
use common_vtd::process::Process;
use common_vtd::{
    level_shift, GuestRam, FRAME, PAGE, PAGE_ACCESSED, PAGE_DIRTY, PAGE_PRESENT, PAGE_PSE,
    PAGE_USER_RW,
};
use vsvm::ats::AtcStats;
use vsvm::devices::accel;
use vsvm::devices::accel::completion::{CompletionRecord, Status};
use vsvm::devices::accel::descriptor::Descriptor;
use vsvm::iommu::{
    Access, BindTarget, CacheInvalidate, CacheType, DeviceId, FaultHandler, FirstStageFlags,
    Granularity, HostIommu, IommuFault, PageRequest, PageResponse, PageResponseCode, Pasid,
    TranslateFailure, UnrecoverableFault, UnrecoverableReason,
};
use vsvm::mem::Gpa;
use vsvm::vtd::piommu::PhysicalIommu;
use vsvm::vtd::VtdConfig;

const RAM_SIZE: u64 = 32 << 20;
/// Work-queue rings (untagged space: the device's default domain is identity unless a test
/// sets another).
const RINGS: u64 = 0x1000;
/// Page tables and process pages are allocated from here on.
const HEAP: u64 = 1 << 20;
const BIG_PAGE: u64 = 2 << 20;
const DEV: DeviceId = DeviceId(0x0100);
const PASID_A: u32 = 5;
const PASID_B: u32 = 0x9_abcd;
/// Every process has two pages of completion records here.
const RECORDS_VA: u64 = 0x7f00_0000_0000;
const RECORD_PAGES: u64 = 2;
/// Untagged completion records (GPA), for queue checks without any PASID.
const UNTAGGED_RECORDS: u64 = 0x8000;
/// Page-request response timeout of the IOMMU when a test does not ask for another.
const LONG: Duration = Duration::from_secs(60);

fn pasid(raw: u32) -> Pasid {
    Pasid::new(raw).unwrap()
}

// ---------------------------------------------------------------------------------------------
// The guest: processes' page tables in guest RAM, and what its mm knows about them.
// ---------------------------------------------------------------------------------------------

/// One process's memory as its kernel knows it.
struct Mm {
    process: Process,
    /// Pages taken away (swapped out): VA page → (PTE address, PTE to restore).
    swapped: HashMap<u64, (u64, u64)>,
    /// Anonymous ranges not populated yet: a fault there gets a fresh zeroed page.
    lazy: Vec<Range<u64>>,
}

/// The guest's memory: RAM with its page allocator, and the processes.
struct Guest {
    ram: GuestRam,
    mms: HashMap<u32, Mm>,
}

/// The leaf entry mapping `va` under the 4-level table at `root`, as the CPU walks it:
/// (entry address, entry, page size); `None` when not present.
fn leaf(ram: &GuestRam, root: u64, va: u64) -> Option<(u64, u64, u64)> {
    let mut table = root;
    for level in (1..=4u8).rev() {
        let shift = level_shift(level);
        let slot = table + ((va >> shift) & 511) * 8;
        let entry = ram.read(slot);
        if entry & PAGE_PRESENT == 0 {
            return None;
        }
        if level == 1 || entry & PAGE_PSE != 0 {
            return Some((slot, entry, 1 << shift));
        }
        table = entry & FRAME;
    }
    None
}

impl Guest {
    fn mm(&mut self, pasid: u32) -> &mut Mm {
        self.mms.get_mut(&pasid).expect("a process for the PASID")
    }

    /// The leaf of `va` in `pasid`'s tables.
    fn leaf(&self, pasid: u32, va: u64) -> Option<(u64, u64, u64)> {
        let root = self.mms.get(&pasid)?.process.root();
        leaf(&self.ram, root, va)
    }

    /// Guest-physical address of `va` in `pasid`, as the CPU would translate it.
    fn gpa(&self, pasid: u32, va: u64) -> Option<u64> {
        let (_, entry, size) = self.leaf(pasid, va)?;
        Some((entry & FRAME & !(size - 1)) + (va & (size - 1)))
    }

    /// Maps `pages` fresh 4 KiB pages at `va`; with `reversed` the frames run backwards, so
    /// that no two neighbouring pages are physically contiguous.
    fn mmap(&mut self, pasid: u32, va: u64, pages: u64, reversed: bool) {
        let block = self.ram.alloc(pages);
        for i in 0..pages {
            let frame = if reversed { pages - 1 - i } else { i };
            let Guest { ram, mms } = self;
            let process = mms.get(&pasid).unwrap().process;
            process.map_4k(ram, va + i * PAGE, block + frame * PAGE, PAGE_USER_RW);
        }
    }

    /// Maps a fresh 2 MiB page at `va`.
    fn mmap_2m(&mut self, pasid: u32, va: u64) {
        let probe = self.ram.page();
        let frame = (probe + BIG_PAGE) & !(BIG_PAGE - 1);
        self.ram.skip_to(frame);
        self.ram.alloc(BIG_PAGE / PAGE);
        let process = self.mm(pasid).process;
        process.map_2m(&mut self.ram, va, frame, PAGE_USER_RW);
    }

    /// What the guest's page fault handler does for a page request: bring a swapped page
    /// back, populate an anonymous range, or refuse (the process would get SIGSEGV).
    fn fault_in(&mut self, req: &PageRequest) -> PageResponseCode {
        let Some(pasid) = req.pasid.map(Pasid::raw) else {
            return PageResponseCode::InvalidRequest;
        };
        let page = req.addr & !(PAGE - 1);
        if !self.mms.contains_key(&pasid) {
            return PageResponseCode::InvalidRequest;
        }
        if self.leaf(pasid, page).is_some() {
            return PageResponseCode::Success; // fixed already (another request, or no fault)
        }
        if let Some((slot, pte)) = self.mm(pasid).swapped.remove(&page) {
            self.ram.write(slot, pte);
            return PageResponseCode::Success;
        }
        if self.mm(pasid).lazy.iter().any(|r| r.contains(&page)) {
            self.mmap(pasid, page, 1, false);
            return PageResponseCode::Success;
        }
        PageResponseCode::InvalidRequest
    }
}

// ---------------------------------------------------------------------------------------------
// The guest's IOMMU driver: the fault handler, and a thread that resolves page requests.
// ---------------------------------------------------------------------------------------------

/// What the guest's IOMMU driver does with a page request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Policy {
    /// Resolve it on the driver's own thread (map the page in the process) and respond.
    Resolve,
    /// Leave it, and its response, to the test.
    Hold,
}

#[derive(Default)]
struct FaultLog {
    /// Every fault reported, in order.
    seen: Vec<IommuFault>,
    /// Page requests (stop markers too) held for the test.
    held: VecDeque<PageRequest>,
}

/// The fault handler registered for the accelerator.
struct GuestIommuDriver {
    policy: Mutex<Policy>,
    log: Mutex<FaultLog>,
    arrived: Condvar,
    work: Mutex<Sender<PageRequest>>,
}

impl FaultHandler for GuestIommuDriver {
    fn handle(&self, fault: &IommuFault) {
        let mut log = self.lock();
        log.seen.push(*fault);
        if let IommuFault::PageRequest(req) = fault {
            let policy = *self.policy.lock().unwrap();
            if policy == Policy::Hold {
                log.held.push_back(*req);
            } else if !req.is_stop_marker() {
                self.work.lock().unwrap().send(*req).unwrap();
            }
        }
        self.arrived.notify_all();
    }
}

impl GuestIommuDriver {
    fn lock(&self) -> MutexGuard<'_, FaultLog> {
        self.log.lock().unwrap()
    }

    fn set_policy(&self, policy: Policy) {
        *self.policy.lock().unwrap() = policy;
    }

    /// The next held page request (or stop marker), waiting up to [`TIMEOUT`].
    fn next_request(&self) -> PageRequest {
        let deadline = Instant::now() + TIMEOUT;
        let mut log = self.lock();
        loop {
            if let Some(req) = log.held.pop_front() {
                return req;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no page request reached the fault handler");
            log = self.arrived.wait_timeout(log, left).unwrap().0;
        }
    }

    /// Page requests reported so far (stop markers excluded).
    fn page_requests(&self) -> Vec<PageRequest> {
        let log = self.lock();
        let requests = log.seen.iter().filter_map(|f| match f {
            IommuFault::PageRequest(r) if !r.is_stop_marker() => Some(*r),
            _ => None,
        });
        requests.collect()
    }

    /// Unrecoverable faults reported so far.
    fn unrecoverable(&self) -> Vec<UnrecoverableFault> {
        let log = self.lock();
        let faults = log.seen.iter().filter_map(|f| match f {
            IommuFault::Unrecoverable(u) => Some(*u),
            IommuFault::PageRequest(_) => None,
        });
        faults.collect()
    }
}

/// The driver's page-request thread: resolves each request in the guest, then responds
/// through the IOMMU (the response a vIOMMU would forward from the guest's page group response).
fn resolve_requests(
    requests: Receiver<PageRequest>,
    guest: Arc<Mutex<Guest>>,
    iommu: Weak<PhysicalIommu>,
) {
    // As Linux's iopf: the requests of a group are handled until one fails; one response, on
    // Last, says Success only if all did.
    let mut group = PageResponseCode::Success;
    for req in requests {
        if group == PageResponseCode::Success {
            group = guest.lock().unwrap().fault_in(&req);
        }
        if !req.last {
            continue;
        }
        if let Some(iommu) = iommu.upgrade() {
            iommu.page_response(PageResponse::to(&req, group)).unwrap();
        }
        group = PageResponseCode::Success;
    }
}

// ---------------------------------------------------------------------------------------------
// The rig: RAM, IOMMU, accelerator, guest, driver.
// ---------------------------------------------------------------------------------------------

struct E2e {
    drv: AccelDriver,
    iommu: Arc<PhysicalIommu>,
    guest: Arc<Mutex<Guest>>,
    faults: Arc<GuestIommuDriver>,
    next_record: u64,
}

impl E2e {
    fn new() -> Self {
        Self::with_timeout(LONG)
    }

    /// The accelerator behind a physical IOMMU whose page requests time out after
    /// `timeout`, on one memfd; PASID, ATS and PRI enabled; processes A and B bound and
    /// their PASIDs enabled in the device; the guest resolves page requests.
    fn with_timeout(timeout: Duration) -> Self {
        let (memfd, mem) = common_vtd::ram::shared_guest_memory(RAM_SIZE);
        let config = VtdConfig::default();
        let iommu = Arc::new(PhysicalIommu::with_timeout(config, mem.clone(), timeout));
        let ep =
            accel::endpoint_svm(accel::VENDOR_ID, accel::DEVICE_ID, iommu.clone(), DEV).unwrap();
        let drv = AccelDriver::new(ep, memfd, RAM_SIZE, RINGS);
        let mut ram = GuestRam::with_memory(mem, RAM_SIZE);
        ram.skip_to(HEAP);
        let guest = Arc::new(Mutex::new(Guest {
            ram,
            mms: HashMap::new(),
        }));
        let (work, requests) = mpsc::channel();
        let faults = Arc::new(GuestIommuDriver {
            policy: Mutex::new(Policy::Resolve),
            log: Mutex::default(),
            arrived: Condvar::new(),
            work: Mutex::new(work),
        });
        let (g, weak) = (guest.clone(), Arc::downgrade(&iommu));
        thread::spawn(move || resolve_requests(requests, g, weak));
        iommu.register_fault_handler(DEV, faults.clone()).unwrap();
        let mut e = E2e {
            drv,
            iommu,
            guest,
            faults,
            next_record: 0,
        };
        e.drv.enable_svm_caps();
        e.bind_process(PASID_A);
        e.bind_process(PASID_B);
        e
    }

    fn guest(&self) -> MutexGuard<'_, Guest> {
        self.guest.lock().unwrap()
    }

    /// A new process with a page of records, bound to `pasid` (Linux `iommu_sva_bind_device`:
    /// the IOMMU bind), then enabled in the device (the accel driver's part).
    fn bind_process(&mut self, pasid: u32) {
        let table = {
            let mut guest = self.guest();
            let process = Process::new(&mut guest.ram, false);
            let mm = Mm {
                process,
                swapped: HashMap::new(),
                lazy: Vec::new(),
            };
            guest.mms.insert(pasid, mm);
            guest.mmap(pasid, RECORDS_VA, RECORD_PAGES, false);
            process.page_table(FirstStageFlags::default())
        };
        let target = BindTarget::GuestPageTable(table);
        self.iommu.bind(DEV, self::pasid(pasid), target).unwrap();
        self.drv.pasid_ctl(pasid, true);
    }

    fn mmap(&self, pasid: u32, va: u64, pages: u64) {
        self.guest().mmap(pasid, va, pages, false);
    }

    fn mmap_reversed(&self, pasid: u32, va: u64, pages: u64) {
        self.guest().mmap(pasid, va, pages, true);
    }

    fn mmap_2m(&self, pasid: u32, va: u64) {
        self.guest().mmap_2m(pasid, va);
    }

    /// An anonymous range of `pages` pages at `va`, populated on fault only.
    fn reserve(&self, pasid: u32, va: u64, pages: u64) {
        self.guest().mm(pasid).lazy.push(va..va + pages * PAGE);
    }

    /// Invalidates `pasid`'s translations of `[va, va + size)` as Linux's intel-iommu does
    /// when the mm changes (`intel_flush_svm_range`): PASID-based IOTLB, then device TLB.
    fn invalidate(&self, pasid: u32, va: u64, size: u64) {
        let granularity = Granularity::Range {
            pasid: self::pasid(pasid),
            addr: va,
            size,
        };
        for cache in [CacheType::Iotlb, CacheType::DeviceTlb] {
            let inv = CacheInvalidate { cache, granularity };
            self.iommu.cache_invalidate(DEV, inv).unwrap();
        }
    }

    /// Swaps the page at `va` out: its PTE loses Present (kept to bring it back on fault).
    fn swap_out(&self, pasid: u32, va: u64) {
        {
            let mut guest = self.guest();
            let (slot, pte, _) = guest.leaf(pasid, va).expect("a mapped page");
            guest.ram.write(slot, pte & !PAGE_PRESENT);
            guest
                .mm(pasid)
                .swapped
                .insert(va & !(PAGE - 1), (slot, pte));
        }
        self.invalidate(pasid, va & !(PAGE - 1), PAGE);
    }

    /// munmap of 4 KiB pages: the PTEs are cleared, then the IOMMU and device TLBs flushed.
    fn munmap(&self, pasid: u32, va: u64, pages: u64) {
        {
            let guest = self.guest();
            for i in 0..pages {
                let (slot, _, _) = guest.leaf(pasid, va + i * PAGE).expect("a mapped page");
                guest.ram.write(slot, 0);
            }
        }
        self.invalidate(pasid, va, pages * PAGE);
    }

    fn gpa(&self, pasid: u32, va: u64) -> u64 {
        self.guest()
            .gpa(pasid, va)
            .unwrap_or_else(|| panic!("VA 0x{va:x} of PASID {pasid} not mapped"))
    }

    /// The leaf entry (PTE, or PDE of a 2 MiB page) mapping `va`.
    fn pte(&self, pasid: u32, va: u64) -> u64 {
        self.guest().leaf(pasid, va).expect("a mapped page").1
    }

    /// The process writes `data` at `va` (page by page, as the CPU translates).
    fn write_va(&self, pasid: u32, va: u64, data: &[u8]) {
        let guest = self.guest();
        for (addr, range) in pages_of(va, data.len()) {
            let gpa = guest.gpa(pasid, addr).expect("a mapped page");
            guest.ram.mem.write(Gpa(gpa), &data[range]).unwrap();
        }
    }

    /// The process reads `len` bytes at `va`.
    fn read_va(&self, pasid: u32, va: u64, len: usize) -> Vec<u8> {
        let guest = self.guest();
        let mut out = vec![0; len];
        for (addr, range) in pages_of(va, len) {
            let gpa = guest.gpa(pasid, addr).expect("a mapped page");
            guest.ram.mem.read(Gpa(gpa), &mut out[range]).unwrap();
        }
        out
    }

    /// A fresh zeroed completion record in `pasid`'s record pages.
    fn record(&mut self, pasid: u32) -> u64 {
        let addr = RECORDS_VA + self.next_record;
        self.next_record = (self.next_record + 32) % (RECORD_PAGES * PAGE);
        self.write_va(pasid, addr, &[0; 32]);
        addr
    }

    fn read_record(&self, pasid: u32, addr: u64) -> CompletionRecord {
        self.drv.read_record_at(self.gpa(pasid, addr))
    }

    fn wait_record(&self, pasid: u32, addr: u64) -> CompletionRecord {
        self.drv.wait_record_at(self.gpa(pasid, addr))
    }

    /// Runs `desc` for `pasid` on `wq` with a completion record; returns the record.
    fn run(&mut self, wq: usize, pasid: u32, desc: Descriptor) -> CompletionRecord {
        let record = self.record(pasid);
        let desc = desc.with_pasid(pasid).with_completion(record);
        self.drv.submit(wq, &[desc]);
        self.wait_record(pasid, record)
    }

    /// A NOP of `pasid` (untagged with `None`) must still succeed: the queue is alive.
    fn assert_queue_alive(&mut self, wq: usize, pasid: Option<u32>) {
        let r = match pasid {
            Some(p) => self.run(wq, p, Descriptor::nop()),
            None => {
                self.drv.ram_write(UNTAGGED_RECORDS, &[0; 32]);
                let nop = Descriptor::nop().with_completion(UNTAGGED_RECORDS);
                self.drv.submit(wq, &[nop]);
                self.drv.wait_record_at(UNTAGGED_RECORDS)
            }
        };
        assert_eq!(r.status(), Some(Status::Success), "queue {wq} is stuck");
    }

    fn atc(&self) -> AtcStats {
        self.drv.svm().unwrap().ats().stats()
    }

    fn answer(&self, req: &PageRequest, code: PageResponseCode) {
        self.iommu
            .page_response(PageResponse::to(req, code))
            .unwrap();
    }
}

/// Splits `[va, va + len)` at 4 KiB boundaries: (address, range of the buffer).
fn pages_of(va: u64, len: usize) -> Vec<(u64, Range<usize>)> {
    let mut out = Vec::new();
    let mut done = 0;
    while done < len {
        let addr = va + done as u64;
        let n = ((PAGE - (addr & (PAGE - 1))) as usize).min(len - done);
        out.push((addr, done..done + n));
        done += n;
    }
    out
}

fn accessed_dirty(pte: u64) -> (bool, bool) {
    (pte & PAGE_ACCESSED != 0, pte & PAGE_DIRTY != 0)
}

// ---------------------------------------------------------------------------------------------
// (a) Data through nested translation
// ---------------------------------------------------------------------------------------------

/// A 2 MiB-aligned VA with three 4 KiB pages below it.
const BIG_VA: u64 = 0x7f10_0000_0000;
const DST_VA: u64 = 0x7f20_0000_0000;
const BUF_VA: u64 = 0x7f30_0000_0000;

#[test]
fn test_memmove_with_pasid_vas_moves_data_through_nested_translation() {
    let mut e = E2e::new();
    e.drv.enable_wq(0, true);
    e.mmap(PASID_A, BIG_VA - 3 * PAGE, 3);
    e.mmap_2m(PASID_A, BIG_VA);
    e.mmap_reversed(PASID_A, DST_VA, 6);
    // From inside the first 4 KiB page, across the others, into the 2 MiB page.
    let src = BIG_VA - 3 * PAGE + 0x123;
    let len = (3 * PAGE - 0x123 + 0x1456) as u32;
    let dst = DST_VA + 0x10;
    let data = pattern(len as usize, 1);
    e.write_va(PASID_A, src, &data);
    let record = e.record(PASID_A);
    let desc = Descriptor::memmove(src, dst, len)
        .with_pasid(PASID_A)
        .with_completion(record)
        .with_interrupt();
    e.drv.submit(0, &[desc]);
    let r = e.wait_record(PASID_A, record);
    assert_eq!(r.status(), Some(Status::Success));
    assert_eq!(r.bytes_completed, len);
    assert_eq!(e.read_va(PASID_A, dst, len as usize), data);
    assert_eq!(e.drv.wait_irq(VECTOR_WQ), 1);
    assert_eq!(e.drv.irqs(VECTOR_ERR), 0);
    // The destination pages really are scattered: every page was its own translation.
    for i in 0..5 {
        let (a, b) = (
            e.gpa(PASID_A, DST_VA + i * PAGE),
            e.gpa(PASID_A, DST_VA + (i + 1) * PAGE),
        );
        assert_eq!(a, b + PAGE, "frames run backwards");
    }
    // The IOMMU set Accessed on what the device read, Accessed and Dirty on what it wrote.
    for i in 0..3 {
        let pte = e.pte(PASID_A, BIG_VA - 3 * PAGE + i * PAGE);
        assert_eq!(accessed_dirty(pte), (true, false), "source page {i}");
    }
    let pde = e.pte(PASID_A, BIG_VA);
    assert_ne!(pde & PAGE_PSE, 0);
    assert_eq!(accessed_dirty(pde), (true, false), "2 MiB source page");
    for i in 0..5 {
        let pte = e.pte(PASID_A, DST_VA + i * PAGE);
        assert_eq!(accessed_dirty(pte), (true, true), "destination page {i}");
    }
    assert_eq!(
        e.pte(PASID_A, DST_VA + 5 * PAGE) & PAGE_ACCESSED,
        0,
        "untouched"
    );
    assert_eq!(
        accessed_dirty(e.pte(PASID_A, record)),
        (true, true),
        "record page"
    );
    // Translations went through ATS; the same job again is served by the warm ATC.
    let warm = e.atc();
    assert!(warm.misses > 0 && warm.entries > 0);
    let again = e.run(0, PASID_A, Descriptor::memmove(src, dst, len));
    assert_eq!(again.status(), Some(Status::Success));
    let hot = e.atc();
    assert_eq!(
        hot.misses, warm.misses,
        "no Translation Request for a warm page"
    );
    assert!(hot.hits > warm.hits);
}

#[test]
fn test_ats_disabled_takes_the_untranslated_path_and_caches_nothing() {
    let mut e = E2e::new();
    e.drv.enable_wq(0, true);
    e.mmap(PASID_A, BUF_VA, 4);
    let data = pattern(2 * PAGE as usize, 7);
    e.write_va(PASID_A, BUF_VA, &data);
    // The driver clears ATS Enable: every access is an untranslated request the IOMMU
    // translates itself, and the device's ATC stays empty (PCIe 6.0 §10.5.1.3).
    let ats = e.drv.ext_cap(vsvm::pci::caps::ats::EXT_CAP_ID_ATS);
    e.drv.cfg_write16(ats + 6, 0);
    let before = e.atc();
    let r = e.run(
        0,
        PASID_A,
        Descriptor::memmove(BUF_VA, BUF_VA + 2 * PAGE, 2 * PAGE as u32),
    );
    assert_eq!(r.status(), Some(Status::Success));
    assert_eq!(e.read_va(PASID_A, BUF_VA + 2 * PAGE, data.len()), data);
    let after = e.atc();
    assert_eq!(after.entries, 0, "nothing cached without ATS");
    assert_eq!(after.hits, before.hits, "no ATC hits without ATS");
    // Enabled again, the same job fills the ATC.
    e.drv.enable_ats();
    let r = e.run(
        0,
        PASID_A,
        Descriptor::memmove(BUF_VA, BUF_VA + 2 * PAGE, 2 * PAGE as u32),
    );
    assert_eq!(r.status(), Some(Status::Success));
    assert!(e.atc().entries > 0);
}

#[test]
fn test_fill_compare_and_batch_through_translation() {
    let mut e = E2e::new();
    e.drv.enable_wq(0, true);
    e.mmap(PASID_A, BUF_VA, 12);
    // FILL across three pages, in phase.
    let p = 0x0807_0605_0403_0201u64;
    let r = e.run(
        0,
        PASID_A,
        Descriptor::fill(BUF_VA + 0x7fd, 3 * PAGE as u32, p),
    );
    assert_eq!(r.status(), Some(Status::Success));
    let out = e.read_va(PASID_A, BUF_VA + 0x7fd, 3 * PAGE as usize);
    assert!(out.iter().enumerate().all(|(i, b)| *b == (i % 8) as u8 + 1));
    assert_eq!(e.read_va(PASID_A, BUF_VA + 0x7fd + 3 * PAGE, 1), [0]);
    // COMPARE equal, then with one byte different.
    let data = pattern(2 * PAGE as usize, 5);
    let (a, b) = (BUF_VA + 4 * PAGE, BUF_VA + 6 * PAGE + 0x800);
    e.write_va(PASID_A, a, &data);
    e.write_va(PASID_A, b, &data);
    let r = e.run(0, PASID_A, Descriptor::compare(a, b, data.len() as u32));
    assert_eq!((r.status(), r.result), (Some(Status::Success), 0));
    e.write_va(PASID_A, b + 5000, &[data[5000] ^ 0x40]);
    let r = e.run(0, PASID_A, Descriptor::compare(a, b, data.len() as u32));
    assert_eq!(
        (r.status(), r.result, r.bytes_completed),
        (Some(Status::Success), 1, 5000)
    );
    // BATCH: a list in process memory, each descriptor with its own record.
    let list = BUF_VA + 10 * PAGE;
    let records: Vec<u64> = (0..3).map(|_| e.record(PASID_A)).collect();
    let (x, y, z) = (
        BUF_VA + 9 * PAGE,
        BUF_VA + 9 * PAGE + 0x400,
        BUF_VA + 11 * PAGE,
    );
    e.write_va(PASID_A, x, &pattern(100, 2));
    let subs = [
        Descriptor::memmove(x, y, 100).with_completion(records[0]),
        Descriptor::fill(z, 64, 0x1111_1111_1111_1111).with_completion(records[1]),
        Descriptor::compare(x, y, 100).with_completion(records[2]),
    ];
    for (i, d) in subs.iter().enumerate() {
        e.write_va(PASID_A, list + i as u64 * 64, d.as_bytes());
    }
    let r = e.run(0, PASID_A, Descriptor::batch(list, 3));
    assert_eq!((r.status(), r.bytes_completed), (Some(Status::Success), 3));
    for rec in &records {
        assert_eq!(e.read_record(PASID_A, *rec).status(), Some(Status::Success));
    }
    assert_eq!(e.read_record(PASID_A, records[2]).result, 0);
    assert_eq!(e.read_va(PASID_A, y, 100), pattern(100, 2));
    assert_eq!(e.read_va(PASID_A, z, 64), vec![0x11; 64]);
}

// ---------------------------------------------------------------------------------------------
// (b) Page faults
// ---------------------------------------------------------------------------------------------

#[test]
fn test_page_requests_reach_the_guest_which_maps_the_pages_and_the_job_completes() {
    let mut e = E2e::new();
    e.drv.enable_wq(0, true);
    e.mmap(PASID_A, BUF_VA, 4);
    let data = pattern(4 * PAGE as usize, 3);
    e.write_va(PASID_A, BUF_VA, &data);
    e.swap_out(PASID_A, BUF_VA + PAGE);
    e.swap_out(PASID_A, BUF_VA + 3 * PAGE);
    e.reserve(PASID_A, DST_VA, 4); // never touched: no page yet
    let r = e.run(
        0,
        PASID_A,
        Descriptor::memmove(BUF_VA, DST_VA, 4 * PAGE as u32),
    );
    assert_eq!(r.status(), Some(Status::Success));
    assert_eq!(r.bytes_completed, 4 * PAGE as u32);
    assert_eq!(e.read_va(PASID_A, DST_VA, data.len()), data);
    // One request per missing page, read for the source, write for the destination, all in
    // one page request group (one PRG index, Last on the final request only).
    let reqs = e.faults.page_requests();
    assert_eq!(reqs.len(), 6);
    let lasts: Vec<bool> = reqs.iter().map(|r| r.last).collect();
    assert_eq!(lasts, [false, false, false, false, false, true]);
    let seen: HashSet<(u64, bool, bool)> = reqs
        .iter()
        .inspect(|r| {
            assert_eq!(
                (r.device, r.pasid, r.group),
                (DEV, Some(pasid(PASID_A)), reqs[0].group)
            );
            assert!(!r.access.privileged);
        })
        .map(|r| (r.addr, r.access.read, r.access.write))
        .collect();
    let mut expected = HashSet::from([
        (BUF_VA + PAGE, true, false),
        (BUF_VA + 3 * PAGE, true, false),
    ]);
    expected.extend((0..4).map(|i| (DST_VA + i * PAGE, false, true)));
    assert_eq!(seen, expected);
    assert_eq!(e.iommu.pending_page_requests(), 0);
    assert_eq!(e.drv.svm().unwrap().pri().outstanding(), 0);
}

/// Regression: the limit of page requests is per page. A MEMMOVE runs under one fence hold,
/// and counting its misses over the whole job failed it with PAGE_FAULT after eight missing
/// pages, without a page request for the ninth (seen with a 7.3 guest writing a never-touched
/// 1 MiB buffer).
#[test]
fn test_memmove_into_many_missing_pages_sends_a_request_for_each() {
    const PAGES: u64 = 24;
    let mut e = E2e::new();
    e.drv.enable_wq(0, true);
    e.mmap(PASID_A, BUF_VA, PAGES);
    let data = pattern((PAGES * PAGE) as usize, 5);
    e.write_va(PASID_A, BUF_VA, &data);
    e.reserve(PASID_A, DST_VA, PAGES); // never touched: every page faults
    let r = e.run(
        0,
        PASID_A,
        Descriptor::memmove(BUF_VA, DST_VA, (PAGES * PAGE) as u32),
    );
    assert_eq!(r.status(), Some(Status::Success), "{r:?}");
    assert_eq!(e.read_va(PASID_A, DST_VA, data.len()), data);
    let mut writes: Vec<u64> = e
        .faults
        .page_requests()
        .iter()
        .filter(|r| r.access.write)
        .map(|r| r.addr)
        .collect();
    writes.sort_unstable();
    assert_eq!(
        writes,
        (0..PAGES).map(|i| DST_VA + i * PAGE).collect::<Vec<_>>()
    );
}

/// A MEMMOVE into never-touched memory asks for the missing pages ahead in groups of at most
/// MAX_GROUP_PAGES: one PRG index per group, Last only on its final request.
#[test]
fn test_memmove_into_never_touched_pages_asks_in_groups_of_the_bound() {
    const PAGES: u64 = 70;
    let bound = accel::MAX_GROUP_PAGES as u64;
    let mut e = E2e::new();
    e.drv.enable_wq(0, true);
    e.mmap(PASID_A, BUF_VA, PAGES);
    let data = pattern((PAGES * PAGE) as usize, 8);
    e.write_va(PASID_A, BUF_VA, &data);
    e.reserve(PASID_A, DST_VA, PAGES);
    let r = e.run(
        0,
        PASID_A,
        Descriptor::memmove(BUF_VA, DST_VA, (PAGES * PAGE) as u32),
    );
    assert_eq!(r.status(), Some(Status::Success), "{r:?}");
    assert_eq!(e.read_va(PASID_A, DST_VA, data.len()), data);
    let reqs = e.faults.page_requests();
    let groups: Vec<&[PageRequest]> = reqs.split_inclusive(|r| r.last).collect();
    assert_eq!(groups.len() as u64, PAGES.div_ceil(bound));
    for g in &groups {
        assert!(g.len() as u64 <= bound, "credits and bound kept");
        assert!(g.iter().all(|r| r.group == g[0].group && r.access.write));
        assert!(g[..g.len() - 1].iter().all(|r| !r.last));
    }
    let addrs: Vec<u64> = reqs.iter().map(|r| r.addr).collect();
    assert_eq!(
        addrs,
        (0..PAGES).map(|i| DST_VA + i * PAGE).collect::<Vec<_>>()
    );
    assert_eq!(e.drv.svm().unwrap().pri().outstanding(), 0);
}

/// Invalid Request for a group fails the job at the first address the group covers: the
/// page that missed is asked for again alone, so the fault names the page that failed.
#[test]
fn test_invalid_request_for_a_group_fails_the_job_at_its_first_page() {
    let mut e = E2e::new();
    e.faults.set_policy(Policy::Hold);
    e.drv.enable_wq(0, true);
    e.reserve(PASID_A, DST_VA, 3);
    let record = e.record(PASID_A);
    let desc = Descriptor::fill(DST_VA, 3 * PAGE as u32, 7)
        .with_pasid(PASID_A)
        .with_completion(record);
    e.drv.submit(0, &[desc]);
    let group: Vec<PageRequest> = (0..3).map(|_| e.faults.next_request()).collect();
    assert_eq!(
        group.iter().map(|r| (r.addr, r.last)).collect::<Vec<_>>(),
        [
            (DST_VA, false),
            (DST_VA + PAGE, false),
            (DST_VA + 2 * PAGE, true)
        ]
    );
    e.answer(&group[2], PageResponseCode::InvalidRequest);
    let alone = e.faults.next_request();
    assert_eq!((alone.addr, alone.last), (DST_VA, true));
    e.answer(&alone, PageResponseCode::InvalidRequest);
    let r = e.wait_record(PASID_A, record);
    assert_eq!(
        (r.status(), r.fault_addr),
        (Some(Status::PageFault), DST_VA)
    );
    assert_eq!(r.bytes_completed, 0);
    assert_eq!(e.drv.svm().unwrap().pri().outstanding(), 0);
    e.assert_queue_alive(0, Some(PASID_A));
}

/// A drain and unbind with a multi-page group pending: the job is aborted, the stop marker
/// follows the group, and the unbind answers the group (every credit comes back).
#[test]
fn test_drain_and_unbind_with_a_multi_page_group_pending_answer_it() {
    let mut e = E2e::new();
    e.faults.set_policy(Policy::Hold);
    e.drv.enable_wq(0, true);
    e.reserve(PASID_A, DST_VA, 4);
    let record = e.record(PASID_A);
    let desc = Descriptor::fill(DST_VA, 4 * PAGE as u32, 7)
        .with_pasid(PASID_A)
        .with_completion(record);
    e.drv.submit(0, &[desc]);
    let group: Vec<PageRequest> = (0..4).map(|_| e.faults.next_request()).collect();
    assert!(group[3].last && group.iter().all(|r| r.group == group[0].group));
    assert_eq!(e.drv.svm().unwrap().pri().outstanding(), 4);
    assert_eq!(e.iommu.pending_page_requests(), 1, "one group pending");
    e.drv.pasid_ctl(PASID_A, false);
    assert_eq!(
        e.wait_record(PASID_A, record).status(),
        Some(Status::Aborted)
    );
    e.drv.wait_drained(PASID_A);
    assert!(e.faults.next_request().is_stop_marker());
    e.iommu.unbind(DEV, pasid(PASID_A)).unwrap();
    assert_eq!(e.iommu.pending_page_requests(), 0);
    let pri = e.drv.svm().unwrap().pri();
    assert_eq!(pri.outstanding(), 0);
    assert!(!pri.status().unexpected_prg_index());
    e.assert_queue_alive(0, Some(PASID_B));
}

#[test]
fn test_invalid_request_fails_the_job_with_the_faulting_address() {
    let mut e = E2e::new();
    e.faults.set_policy(Policy::Hold);
    e.drv.enable_wq(0, true);
    e.mmap(PASID_A, BUF_VA, 3);
    e.mmap(PASID_A, DST_VA, 3);
    e.swap_out(PASID_A, BUF_VA + 2 * PAGE);
    let record = e.record(PASID_A);
    let desc = Descriptor::memmove(BUF_VA, DST_VA, 3 * PAGE as u32)
        .with_pasid(PASID_A)
        .with_completion(record);
    e.drv.submit(0, &[desc]);
    let req = e.faults.next_request();
    assert_eq!(
        (req.pasid, req.addr),
        (Some(pasid(PASID_A)), BUF_VA + 2 * PAGE)
    );
    assert!(req.access.read && !req.access.write && req.last);
    assert_eq!(e.iommu.pending_page_requests(), 1);
    assert_eq!(e.read_record(PASID_A, record).status, 0, "the job waits");
    e.answer(&req, PageResponseCode::InvalidRequest);
    let r = e.wait_record(PASID_A, record);
    assert_eq!(r.status(), Some(Status::PageFault));
    assert_eq!(r.fault_addr, BUF_VA + 2 * PAGE);
    assert_eq!(r.bytes_completed, 2 * PAGE as u32);
    assert!(!r.fault_info().write());
    assert_eq!(e.iommu.pending_page_requests(), 0);
    e.assert_queue_alive(0, Some(PASID_A));
}

#[test]
fn test_report_fault_mode_completes_with_the_fault_and_sends_no_page_request() {
    let mut e = E2e::new();
    e.drv.enable_wq(1, false);
    e.mmap(PASID_B, DST_VA, 2);
    e.swap_out(PASID_B, DST_VA + PAGE);
    let r = e.run(
        1,
        PASID_B,
        Descriptor::fill(DST_VA + 0x800, 2 * PAGE as u32, u64::from_le_bytes([1; 8])),
    );
    assert_eq!(r.status(), Some(Status::PageFault));
    assert_eq!(r.fault_addr, DST_VA + PAGE);
    assert_eq!(r.bytes_completed, 0x800);
    assert!(r.fault_info().write());
    assert_eq!(e.read_va(PASID_B, DST_VA + 0x800, 0x800), vec![1; 0x800]);
    assert!(
        e.faults.page_requests().is_empty(),
        "report-fault sends none"
    );
    assert_eq!(
        e.drv.irqs(VECTOR_ERR),
        0,
        "a reported fault is not an error"
    );
}

#[test]
fn test_unanswered_page_request_times_out_as_a_page_fault() {
    let mut e = E2e::with_timeout(Duration::from_millis(100));
    e.faults.set_policy(Policy::Hold);
    e.drv.enable_wq(0, true);
    e.mmap(PASID_A, DST_VA, 1);
    e.swap_out(PASID_A, DST_VA);
    let started = Instant::now();
    let r = e.run(0, PASID_A, Descriptor::fill(DST_VA, 64, 0x55));
    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "the timer fired"
    );
    assert_eq!(
        (r.status(), r.fault_addr),
        (Some(Status::PageFault), DST_VA)
    );
    assert!(r.fault_info().write());
    assert_eq!(
        e.faults.page_requests().len(),
        1,
        "asked once, never answered"
    );
    assert_eq!(e.iommu.pending_page_requests(), 0);
    assert_eq!(e.drv.svm().unwrap().pri().outstanding(), 0);
    e.assert_queue_alive(0, Some(PASID_A));
}

// ---------------------------------------------------------------------------------------------
// (c) munmap
// ---------------------------------------------------------------------------------------------

#[test]
fn test_munmap_invalidation_drops_the_atc_entry_and_the_next_job_faults() {
    let mut e = E2e::new();
    e.faults.set_policy(Policy::Hold);
    e.drv.enable_wq(0, true);
    e.mmap(PASID_A, BUF_VA, 1);
    e.mmap(PASID_A, DST_VA, 1);
    e.write_va(PASID_A, BUF_VA, &pattern(64, 4));
    let r = e.run(0, PASID_A, Descriptor::memmove(BUF_VA, DST_VA, 64));
    assert_eq!(r.status(), Some(Status::Success));
    let old_frame = e.gpa(PASID_A, DST_VA);
    let warm = e.atc();
    // munmap(DST): PTE cleared, PASID-based IOTLB and device-TLB range invalidations.
    e.munmap(PASID_A, DST_VA, 1);
    let after = e.atc();
    assert_eq!(after.invalidations, warm.invalidations + 1);
    assert_eq!(
        after.entries,
        warm.entries - 1,
        "the ATC entry of the page is gone"
    );
    let translated = e
        .iommu
        .translate(DEV, Some(pasid(PASID_A)), DST_VA, Access::WRITE);
    assert_eq!(
        translated,
        Err(TranslateFailure::NotPresent),
        "so is the IOTLB's"
    );
    // The next job on that page faults again; the guest maps a new page and says Success.
    e.write_va(PASID_A, BUF_VA, &pattern(64, 5));
    let record = e.record(PASID_A);
    let desc = Descriptor::memmove(BUF_VA, DST_VA, 64)
        .with_pasid(PASID_A)
        .with_completion(record);
    e.drv.submit(0, &[desc]);
    let req = e.faults.next_request();
    assert_eq!((req.addr, req.access.write), (DST_VA, true));
    e.mmap(PASID_A, DST_VA, 1);
    e.answer(&req, PageResponseCode::Success);
    assert_eq!(
        e.wait_record(PASID_A, record).status(),
        Some(Status::Success)
    );
    assert_ne!(e.gpa(PASID_A, DST_VA), old_frame);
    assert_eq!(e.read_va(PASID_A, DST_VA, 64), pattern(64, 5));
    assert_eq!(
        e.drv.ram_read(old_frame, 64),
        pattern(64, 4),
        "the old page untouched"
    );
}

// ---------------------------------------------------------------------------------------------
// (d) Unbind with jobs in flight
// ---------------------------------------------------------------------------------------------

#[test]
fn test_pasid_disable_then_unbind_drains_a_blocked_job() {
    let mut e = E2e::new();
    e.faults.set_policy(Policy::Hold);
    e.drv.enable_wq(0, true);
    e.mmap(PASID_A, BUF_VA, 4);
    e.mmap(PASID_A, DST_VA, 4);
    let data = pattern(4 * PAGE as usize, 6);
    e.write_va(PASID_A, BUF_VA, &data);
    e.swap_out(PASID_A, DST_VA + 2 * PAGE);
    let (blocked, queued) = (e.record(PASID_A), e.record(PASID_A));
    e.drv.submit(
        0,
        &[
            Descriptor::memmove(BUF_VA, DST_VA, 4 * PAGE as u32)
                .with_pasid(PASID_A)
                .with_completion(blocked),
            Descriptor::fill(DST_VA, 64, 0xff)
                .with_pasid(PASID_A)
                .with_completion(queued),
        ],
    );
    let req = e.faults.next_request();
    assert_eq!(req.addr, DST_VA + 2 * PAGE);
    assert_eq!(e.iommu.pending_page_requests(), 1);
    // The driver's unbind: disable the PASID in the device and wait for the drain, then unbind
    // in the IOMMU. The page request is never answered by the guest.
    e.drv.pasid_ctl(PASID_A, false);
    let r = e.wait_record(PASID_A, blocked);
    assert_eq!(r.status(), Some(Status::Aborted));
    assert_eq!(r.bytes_completed, 2 * PAGE as u32);
    assert_eq!(
        e.wait_record(PASID_A, queued).status(),
        Some(Status::Aborted)
    );
    e.drv.wait_drained(PASID_A);
    assert!(!e.drv.read_pasid_ctl(PASID_A).enable());
    let marker = e.faults.next_request();
    assert!(marker.is_stop_marker() && marker.pasid == Some(pasid(PASID_A)));
    e.iommu.unbind(DEV, pasid(PASID_A)).unwrap();
    assert_eq!(
        e.iommu.pending_page_requests(),
        0,
        "unbind answered the group"
    );
    let pri = e.drv.svm().unwrap().pri();
    assert_eq!(pri.outstanding(), 0);
    assert!(!pri.status().unexpected_prg_index());
    // Two pages moved before the fault; the aborted FILL wrote nothing.
    assert_eq!(e.read_va(PASID_A, DST_VA, 64), data[..64]);
    e.assert_queue_alive(0, Some(PASID_B));
    // A descriptor for the unbound PASID is refused before it touches memory.
    e.drv.submit(0, &[Descriptor::nop().with_pasid(PASID_A)]);
    let (swerr, _) = e.drv.wait_swerr();
    assert_eq!(swerr.code(), Status::PasidDisabled.code());
}

#[test]
fn test_unbind_first_answers_the_blocked_job_invalid_request() {
    let mut e = E2e::new();
    e.faults.set_policy(Policy::Hold);
    e.drv.enable_wq(0, true);
    // Without a completion record the job's own status goes to SWERR.
    e.mmap(PASID_A, DST_VA, 1);
    e.swap_out(PASID_A, DST_VA);
    e.drv
        .submit(0, &[Descriptor::fill(DST_VA, 64, 1).with_pasid(PASID_A)]);
    let req = e.faults.next_request();
    assert_eq!(req.addr, DST_VA);
    e.iommu.unbind(DEV, pasid(PASID_A)).unwrap();
    let (swerr, addr) = e.drv.wait_swerr();
    assert_eq!(
        (Status::from_code(swerr.code()), addr),
        (Some(Status::PageFault), DST_VA)
    );
    assert_eq!(e.iommu.pending_page_requests(), 0);
    // With a record in the unbound address space: the job fails the same way, and the record
    // it cannot write any more is reported instead.
    e.mmap(PASID_B, DST_VA, 1);
    e.swap_out(PASID_B, DST_VA);
    let record = e.record(PASID_B);
    let desc = Descriptor::fill(DST_VA, 64, 1)
        .with_pasid(PASID_B)
        .with_completion(record);
    e.drv.submit(0, &[desc]);
    e.faults.next_request();
    e.iommu.unbind(DEV, pasid(PASID_B)).unwrap();
    let (swerr, addr) = e.drv.wait_swerr();
    assert_eq!(
        (swerr.code(), addr),
        (Status::CompletionFault.code(), record)
    );
    let pasid_gone = e.faults.unrecoverable().iter().any(|f| {
        (f.pasid, f.addr, f.reason)
            == (
                Some(pasid(PASID_B)),
                record,
                UnrecoverableReason::PasidInvalid,
            )
    });
    assert!(
        pasid_gone,
        "the IOMMU reported the record's translation fault"
    );
    assert_eq!(e.read_record(PASID_B, record).status, 0);
    assert_eq!(e.iommu.pending_page_requests(), 0);
    assert_eq!(e.drv.svm().unwrap().pri().outstanding(), 0);
    e.assert_queue_alive(0, None);
}

// ---------------------------------------------------------------------------------------------
// (e) Isolation between PASIDs
// ---------------------------------------------------------------------------------------------

#[test]
fn test_two_pasids_cannot_see_each_others_memory() {
    const SECRET: u64 = 0x7f40_0000_0000;
    const SHARED_VA: u64 = 0x7f50_0000_0000;
    let mut e = E2e::new();
    e.drv.enable_wq(0, true);
    e.drv.enable_wq(1, false);
    e.mmap(PASID_A, SECRET, 1);
    e.write_va(PASID_A, SECRET, &[0xaa; 64]);
    // The same VA in both processes, different pages.
    e.mmap(PASID_A, SHARED_VA, 1);
    e.mmap(PASID_B, SHARED_VA, 1);
    e.write_va(PASID_A, SHARED_VA, &[0x11; 64]);
    e.write_va(PASID_B, SHARED_VA, &[0x22; 64]);
    e.mmap(PASID_B, DST_VA, 1);
    assert_eq!(
        e.guest().gpa(PASID_B, SECRET),
        None,
        "B's tables do not map A's page"
    );
    // B's job at the shared VA gets B's own data.
    let r = e.run(0, PASID_B, Descriptor::memmove(SHARED_VA, DST_VA, 64));
    assert_eq!(r.status(), Some(Status::Success));
    assert_eq!(e.read_va(PASID_B, DST_VA, 64), vec![0x22; 64]);
    // B naming A's VA faults: reported at once, or refused by B's fault handler.
    let r = e.run(1, PASID_B, Descriptor::memmove(SECRET, DST_VA + 64, 64));
    assert_eq!(
        (r.status(), r.fault_addr),
        (Some(Status::PageFault), SECRET)
    );
    let r = e.run(0, PASID_B, Descriptor::memmove(SECRET, DST_VA + 64, 64));
    assert_eq!(
        (r.status(), r.fault_addr),
        (Some(Status::PageFault), SECRET)
    );
    let asked: Vec<_> = e
        .faults
        .page_requests()
        .iter()
        .map(|r| (r.pasid, r.addr))
        .collect();
    assert_eq!(asked, [(Some(pasid(PASID_B)), SECRET)]);
    assert_eq!(
        e.read_va(PASID_B, DST_VA + 64, 64),
        vec![0; 64],
        "nothing of A's"
    );
    // A still sees its own memory, unchanged.
    let r = e.run(0, PASID_A, Descriptor::memmove(SHARED_VA, SECRET + 64, 64));
    assert_eq!(r.status(), Some(Status::Success));
    assert_eq!(
        e.read_va(PASID_A, SECRET, 128),
        [[0xaa; 64], [0x11; 64]].concat()
    );
    assert_eq!(e.read_va(PASID_B, SHARED_VA, 64), vec![0x22; 64]);
}
