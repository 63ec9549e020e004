//! The stress rig: guest RAM on one memfd, the physical VT-d model with a short page-response
//! timer, the accelerator behind it, the guest (processes, fault handler) — and the state the
//! threads share: the driver with what the test knows of each queue and PASID, and the list
//! of failures. Register accesses are serialised by the driver's lock, as the vfio-user socket
//! serialises a guest's MMIO.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use vsvm::devices::accel;
use vsvm::devices::accel::regs::{offset, wq_offset, ErrCtl, WqCtrl};
use vsvm::iommu::{
    BindTarget, CacheInvalidate, CacheType, DeviceId, Granularity, HostIommu, Pasid,
};
use vsvm::pci::caps::ats::EXT_CAP_ID_ATS;
use vsvm::pci::caps::pri::EXT_CAP_ID_PRI;
use vsvm::vfio_user::Device;
use vsvm::vtd::piommu::PhysicalIommu;
use vsvm::vtd::VtdConfig;

use crate::accel_driver::{AccelDriver, VECTOR_ERR};
use crate::common_vtd::{self, GuestRam};
use crate::guest::Guest;
use crate::handler::Handler;
use crate::rng::Rng;

pub const RAM_SIZE: u64 = 32 << 20;
/// Work-queue rings (untagged space).
pub const RINGS: u64 = 0x1000;
/// Untagged completion records.
pub const UNTAGGED_RECORDS: u64 = 0x8000;
pub const UNTAGGED_RECORD_PAGES: u64 = 2;
/// Untagged scratch memory FILLs may write.
pub const UNTAGGED_SCRATCH: u64 = 0x10000;
pub const UNTAGGED_SCRATCH_PAGES: u64 = 16;
/// Page tables and process pages come from here on.
const HEAP: u64 = 1 << 20;
pub const DEV: DeviceId = DeviceId(0x0100);
/// Queue 0 blocks on faults, queue 1 reports them.
pub const BLOCK_ON_FAULT: [bool; 2] = [true, false];
/// How long any wait for the device lasts before it counts as a hang.
pub const HANG: Duration = Duration::from_secs(5);
/// ATS Control (PCIe 6.0 §10.5.1.3): offset in the capability, Enable bit.
const ATS_CONTROL: u64 = 6;
const ATS_ENABLE: u16 = 1 << 15;
/// PRI Control and Outstanding Page Request Allocation (PCIe 6.0 §10.5.2.2, .5).
const PRI_CONTROL: u64 = 4;
const PRI_ENABLE: u16 = 1 << 0;
const PRI_ALLOC: u64 = 0xc;
/// Events kept for a failure report.
const TRACE: usize = 48;
/// Recently used pages the mutator aims at.
const HOT: usize = 32;

pub fn pasid(raw: u32) -> Pasid {
    Pasid::new(raw).unwrap()
}

/// A PASID as the guest has it set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PasidState {
    /// Bound in the IOMMU and enabled in the device.
    Healthy,
    /// Disabled in the device (drained), still bound.
    DeviceOff,
    /// Disabled in the device, then unbound (the driver's unbind).
    Unbound,
    /// Unbound in the IOMMU while the device still has it enabled.
    RudeUnbound,
    /// Disabled in the device, the drain not over yet.
    Draining,
}

/// What the test knows of one work queue.
#[derive(Clone, Copy, Debug, Default)]
pub struct QueueTrack {
    /// Bumped when the queue is disabled or the device reset: what was queued is final.
    pub epoch: u64,
    /// Descriptors submitted since the queue was (re-)enabled.
    pub submitted: u64,
}

/// The driver and what the test knows of the device, under one lock.
pub struct Dev {
    pub drv: AccelDriver,
    pub queues: [QueueTrack; 2],
    pub pasids: BTreeMap<u32, PasidState>,
    /// Per PASID: bumped whenever its state changes (and by FLR).
    pub disturbs: BTreeMap<u32, u64>,
    /// Bumped by FLR and queue disables: untagged jobs are disturbed by nothing else.
    pub resets: u64,
    pub ats: bool,
    pub flrs: u32,
    /// Outstanding page requests the driver allocates.
    pub pri_allocation: u32,
    pub pri: bool,
    /// Bumped when PRI Enable changes (or FLR): jobs then may fail PRI_UNAVAILABLE.
    pub pri_events: u64,
}

impl Dev {
    /// Whether descriptors of `pasid` can run and write their records.
    pub fn healthy(&self, pasid: u32) -> bool {
        self.pasids.get(&pasid) == Some(&PasidState::Healthy)
    }

    pub fn disturb(&mut self, pasid: u32) {
        *self.disturbs.entry(pasid).or_default() += 1;
    }

    pub fn disturbance(&self, pasid: u32) -> u64 {
        self.disturbs.get(&pasid).copied().unwrap_or(0)
    }

    fn wait_not_busy(&mut self, wq: usize) -> Result<(), String> {
        let deadline = Instant::now() + HANG;
        while self.drv.wq_status(wq).busy() {
            if Instant::now() > deadline {
                return Err(format!("queue {wq} stayed busy after its disable/reset"));
            }
            thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    /// Disables queue `wq`, waits until its descriptor in flight stopped, enables it again.
    pub fn cycle_queue(&mut self, wq: usize) -> Result<(), String> {
        let ctrl = WqCtrl::new().with_block_on_fault(BLOCK_ON_FAULT[wq]);
        self.drv
            .write32(AccelDriver::wq_reg(wq, wq_offset::CTRL), ctrl.into_bits());
        self.wait_not_busy(wq)?;
        self.queues[wq].epoch += 1;
        self.queues[wq].submitted = 0;
        self.resets += 1;
        self.drv.enable_wq(wq, BLOCK_ON_FAULT[wq]);
        Ok(())
    }

    /// ATS Control.Enable.
    pub fn set_ats(&mut self, on: bool) {
        let ats = self.drv.ext_cap(EXT_CAP_ID_ATS);
        self.drv
            .cfg_write16(ats + ATS_CONTROL, if on { ATS_ENABLE } else { 0 });
        self.ats = on;
    }

    /// PRI: the allocation, then Enable as `on` says (Linux `pci_enable_pri`).
    pub fn set_pri(&mut self, on: bool) {
        let pri = self.drv.ext_cap(EXT_CAP_ID_PRI);
        self.drv.cfg_write32(pri + PRI_ALLOC, self.pri_allocation);
        self.drv
            .cfg_write16(pri + PRI_CONTROL, if on { PRI_ENABLE } else { 0 });
        self.pri = on;
        self.pri_events += 1;
    }

    /// PASID (privileged mode too), ATS and PRI, in the order Linux enables them for SVA.
    fn enable_caps(&mut self) {
        self.drv.enable_pasid_cap(true);
        self.drv.enable_ats();
        self.ats = true;
        self.set_pri(true);
    }

    /// A function-level reset, then the driver's probe again: PASIDs the guest had enabled
    /// are enabled again.
    pub fn flr(&mut self) -> Result<(), String> {
        self.drv
            .ep
            .reset()
            .map_err(|e| format!("FLR refused: {e}"))?;
        for wq in 0..2 {
            self.wait_not_busy(wq)?;
            self.queues[wq].epoch += 1;
            self.queues[wq].submitted = 0;
        }
        self.resets += 1;
        self.flrs += 1;
        self.drv.set_command(true);
        let errctl = ErrCtl::new().with_irq_enable(true).with_vector(VECTOR_ERR);
        self.drv.write32(offset::ERRCTL, errctl.into_bits());
        self.enable_caps();
        for (wq, block) in BLOCK_ON_FAULT.into_iter().enumerate() {
            self.drv.enable_wq(wq, block);
        }
        let pasids: Vec<(u32, PasidState)> = self.pasids.iter().map(|(p, s)| (*p, *s)).collect();
        for (p, state) in pasids {
            self.disturb(p);
            if matches!(state, PasidState::Healthy | PasidState::RudeUnbound) {
                self.drv.pasid_ctl(p, true);
            }
        }
        Ok(())
    }
}

/// Everything the stress threads share.
pub struct World {
    pub iommu: Arc<PhysicalIommu>,
    pub dev: Mutex<Dev>,
    pub guest: Mutex<Guest>,
    pub pasids: Vec<u32>,
    pub handler: Arc<Handler>,
    failures: Mutex<Vec<String>>,
    trace: Mutex<VecDeque<String>>,
    /// Arena pages (PASID, page) of recently submitted jobs: the mutator's favourite targets.
    hot: Mutex<VecDeque<(u32, usize)>>,
    /// Set on the first failure: every thread winds down.
    pub failed: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl World {
    /// The rig for `pasids`, every PASID bound and enabled, both queues enabled, PRI with
    /// `pri_allocation` outstanding requests, page requests timing out after `timeout`.
    pub fn new(pasids: &[u32], pri_allocation: u32, timeout: Duration, rng: &mut Rng) -> Arc<Self> {
        let (memfd, mem) = common_vtd::ram::shared_guest_memory(RAM_SIZE);
        let iommu = Arc::new(PhysicalIommu::with_timeout(
            VtdConfig::default(),
            mem.clone(),
            timeout,
        ));
        let ep =
            accel::endpoint_svm(accel::VENDOR_ID, accel::DEVICE_ID, iommu.clone(), DEV).unwrap();
        let drv = AccelDriver::new(ep, memfd, RAM_SIZE, RINGS);
        let mut ram = GuestRam::with_memory(mem, RAM_SIZE);
        ram.skip_to(HEAP);
        let guest = Guest::new(ram, pasids, 25, rng);
        let handler = Arc::new(Handler::default());
        iommu.register_fault_handler(DEV, handler.clone()).unwrap();
        let mut dev = Dev {
            drv,
            queues: Default::default(),
            pasids: BTreeMap::new(),
            disturbs: BTreeMap::new(),
            resets: 0,
            ats: true,
            flrs: 0,
            pri_allocation,
            pri: false,
            pri_events: 0,
        };
        dev.enable_caps();
        for &p in pasids {
            let target = BindTarget::GuestPageTable(guest.page_table(p));
            iommu.bind(DEV, pasid(p), target).unwrap();
            dev.drv.pasid_ctl(p, true);
            dev.pasids.insert(p, PasidState::Healthy);
        }
        for (wq, block) in BLOCK_ON_FAULT.into_iter().enumerate() {
            dev.drv.enable_wq(wq, block);
        }
        Arc::new(World {
            iommu,
            dev: Mutex::new(dev),
            guest: Mutex::new(guest),
            pasids: pasids.to_vec(),
            handler,
            failures: Mutex::default(),
            trace: Mutex::default(),
            hot: Mutex::default(),
            failed: AtomicBool::new(false),
        })
    }

    pub fn dev(&self) -> MutexGuard<'_, Dev> {
        lock(&self.dev)
    }

    pub fn guest(&self) -> MutexGuard<'_, Guest> {
        lock(&self.guest)
    }

    /// Records a broken invariant; every thread stops soon after.
    pub fn fail(&self, what: String) {
        lock(&self.failures).push(what);
        self.failed.store(true, Ordering::Release);
    }

    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    pub fn failures(&self) -> Vec<String> {
        lock(&self.failures).clone()
    }

    /// Notes an event for the failure report (the last few are kept).
    pub fn trace(&self, event: String) {
        let mut trace = lock(&self.trace);
        if trace.len() == TRACE {
            trace.pop_front();
        }
        trace.push_back(event);
    }

    /// Notes arena pages a job was just submitted on.
    pub fn heat(&self, pages: impl IntoIterator<Item = (u32, usize)>) {
        let mut hot = lock(&self.hot);
        for page in pages {
            if hot.len() == HOT {
                hot.pop_front();
            }
            hot.push_back(page);
        }
    }

    /// One of the pages recently submitted jobs use, if any.
    pub fn hot_page(&self, rng: &mut Rng) -> Option<(u32, usize)> {
        let hot = lock(&self.hot);
        (!hot.is_empty()).then(|| hot[rng.below(hot.len() as u64) as usize])
    }

    pub fn last_events(&self) -> Vec<String> {
        lock(&self.trace).iter().cloned().collect()
    }

    /// Invalidates `pasid`'s translations of `[va, va + size)` as Linux's intel-iommu does
    /// when the mm changes: PASID-based IOTLB, then device TLB.
    pub fn invalidate(&self, granularity: Granularity) {
        for cache in [CacheType::Iotlb, CacheType::DeviceTlb] {
            let inv = CacheInvalidate { cache, granularity };
            if let Err(e) = self.iommu.cache_invalidate(DEV, inv) {
                self.fail(format!("cache_invalidate {inv:?}: {e}"));
            }
        }
    }

    /// Waits until the drain of `pasid` is over (the driver lock is taken for each look).
    pub fn wait_drained(&self, pasid: u32) -> Result<(), String> {
        let deadline = Instant::now() + HANG;
        while self.dev().drv.read_pasid_ctl(pasid).draining() {
            if Instant::now() > deadline {
                return Err(format!("PASID {pasid:#x} never finished draining"));
            }
            thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    fn bind(&self, p: u32) -> Result<(), String> {
        let target = BindTarget::GuestPageTable(self.guest().page_table(p));
        self.iommu
            .bind(DEV, pasid(p), target)
            .map_err(|e| format!("bind of PASID {p:#x}: {e}"))
    }

    fn unbind(&self, p: u32) -> Result<(), String> {
        self.iommu
            .unbind(DEV, pasid(p))
            .map_err(|e| format!("unbind of PASID {p:#x}: {e}"))
    }

    /// Disables `p` in the device and waits for its drain; `Unbound` also unbinds it from
    /// the IOMMU after (the driver's unbind).
    fn take_down(&self, p: u32, to: PasidState) -> Result<(), String> {
        {
            let mut dev = self.dev();
            dev.drv.pasid_ctl(p, false);
            dev.pasids.insert(p, PasidState::Draining);
            dev.disturb(p);
        }
        self.wait_drained(p)?;
        let mut dev = self.dev();
        if to == PasidState::Unbound {
            self.unbind(p)?;
        }
        dev.pasids.insert(p, to);
        dev.disturb(p);
        Ok(())
    }

    /// Moves `p` to `to` from wherever it is (through Healthy).
    pub fn set_pasid(&self, p: u32, to: PasidState) -> Result<(), String> {
        let from = self.dev().pasids[&p];
        self.trace(format!("PASID {p:#x}: {from:?} -> {to:?}"));
        if from != PasidState::Healthy && to != PasidState::Healthy {
            self.set_pasid(p, PasidState::Healthy)?;
            return self.set_pasid(p, to);
        }
        match (from, to) {
            (a, b) if a == b => Ok(()),
            (PasidState::Healthy, PasidState::DeviceOff | PasidState::Unbound) => {
                self.take_down(p, to)
            }
            (PasidState::Healthy, PasidState::RudeUnbound) => {
                let mut dev = self.dev();
                self.unbind(p)?;
                dev.pasids.insert(p, to);
                dev.disturb(p);
                Ok(())
            }
            (_, PasidState::Healthy) => {
                let mut dev = self.dev();
                if matches!(from, PasidState::Unbound | PasidState::RudeUnbound) {
                    self.bind(p)?;
                }
                if from != PasidState::RudeUnbound {
                    dev.drv.pasid_ctl(p, true);
                    if !dev.drv.read_pasid_ctl(p).enable() {
                        return Err(format!("PASID {p:#x} did not enable after its drain"));
                    }
                }
                dev.pasids.insert(p, to);
                dev.disturb(p);
                Ok(())
            }
            _ => Err(format!("no PASID transition {from:?} -> {to:?}")),
        }
    }
}
