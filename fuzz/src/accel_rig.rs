//! The rig of the `accel_svm` target: an accel function behind the physical VT-d model over
//! guarded guest RAM ([`svm_guest`](crate::svm_guest)), driven through its registers and
//! config space as Linux's drivers do (devices/accel/README.md, "A driver's sequence"), the
//! guest's IOMMU driver as a fault handler that only records page requests, and the checks
//! a run ends with.

use std::fs::File;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vsvm::devices::accel::completion::{CompletionRecord, Status, COMPLETION_SIZE};
use vsvm::devices::accel::descriptor::{Descriptor, DESCRIPTOR_SIZE};
use vsvm::devices::accel::regs::{
    offset, wq_offset, DmaState, DmaStatus, PasidCtl, WqCtrl, WqStatus, WQ_COUNT,
};
use vsvm::devices::accel::{self, Accel, REGS_BAR};
use vsvm::endpoint::{Endpoint, CONFIG_REGION};
use vsvm::iommu::{
    BindTarget, DefaultDomain, DeviceId, FaultHandler, FirstStageFlags, HostIommu, IommuFault,
    PageRequest, Pasid,
};
use vsvm::mem::{Gpa, GuestMemory};
use vsvm::pci::caps::ats::{AtsControl, EXT_CAP_ID_ATS};
use vsvm::pci::caps::pasid::{PasidControl, EXT_CAP_ID_PASID};
use vsvm::pci::caps::pri::{PriControl, EXT_CAP_ID_PRI};
use vsvm::vfio_user::Device;
use vsvm::vtd::piommu::PhysicalIommu;
use vsvm::vtd::VtdConfig;
use zerocopy::{FromBytes, IntoBytes};

use crate::svm_guest::{self as guest, Process};
use crate::PAGE;

/// The accelerator's requester ID.
pub const DEV: DeviceId = DeviceId(0x0100);
const BAR0: u32 = REGS_BAR as u32;
/// Descriptors per ring: one page.
pub const RING_SIZE: u32 = (PAGE / DESCRIPTOR_SIZE) as u32;
/// Page requests nobody answers are answered Invalid Request by the IOMMU after this.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_millis(5);
/// Longer than any run's work can take once nobody holds a page response back.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one "let the device work" step waits at most.
const SETTLE: Duration = Duration::from_millis(20);

// Config space: PCI Command (PCI 3.0 §6.2.2) and the control registers of the ATS, PASID and
// PRI capabilities (PCIe 6.0 §10.5.1.3, §7.8.9.3, §10.5.2.2/.5).
const PCI_COMMAND: u64 = 0x04;
const COMMAND_MEMORY_MASTER: u16 = (1 << 1) | (1 << 2);
const ATS_CONTROL: u64 = 0x06;
const PASID_CONTROL: u64 = 0x06;
const PRI_CONTROL: u64 = 0x04;
const PRI_ALLOCATION: u64 = 0x0c;
/// First extended capability (PCIe 6.0 §7.6.3).
const EXT_CAP_START: u64 = 0x100;

/// The guest's IOMMU driver: remembers every page request; the input answers them.
#[derive(Default)]
pub struct Handler(Mutex<Vec<PageRequest>>);

impl Handler {
    /// Every page request seen (stop markers excluded).
    pub fn requests(&self) -> Vec<PageRequest> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn count(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl FaultHandler for Handler {
    fn handle(&self, fault: &IommuFault) {
        if let IommuFault::PageRequest(req) = fault {
            if !req.is_stop_marker() {
                self.0.lock().unwrap_or_else(|e| e.into_inner()).push(*req);
            }
        }
    }
}

/// What the driver knows of a queue: the next free slot, and how many descriptors the
/// device accepted since the enable — countable while nothing but doorbells touched it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Queue {
    /// Next free slot (the last doorbell).
    pub tail: u32,
    /// Descriptors accepted since the enable (wraps, as WQ_DONE does).
    pub accepted: u32,
    /// Only doorbells at the tracked tail touched the queue since the enable.
    pub undisturbed: bool,
}

/// The accelerator, its IOMMU and the guest.
pub struct Rig {
    /// The accel function behind the IOMMU.
    pub ep: Endpoint<Accel>,
    /// The physical VT-d model, driven through the neutral API.
    pub iommu: Arc<PhysicalIommu>,
    /// Guest RAM as the device sees it.
    pub mem: GuestMemory,
    memfd: File,
    /// The fault handler (registered when `registered`).
    pub handler: Arc<Handler>,
    /// Whether `handler` is registered.
    pub registered: bool,
    /// What the driver knows of each queue.
    pub queues: [Queue; WQ_COUNT],
    /// BATCH lists written: (PASID of their space, address in it).
    pub lists: Vec<(Option<u32>, u64)>,
    /// Extended capabilities: ATS, PASID, PRI.
    caps: [u64; 3],
}

/// Offset of register `reg` of queue `wq` in BAR0.
pub fn wq_reg(wq: usize, reg: u64) -> u64 {
    offset::WQ_BLOCKS + wq as u64 * offset::WQ_STRIDE + reg
}

/// Guest-physical (and, in the identity domain, untagged) address of queue `wq`'s ring.
pub fn ring(wq: usize) -> u64 {
    (guest::RINGS_PAGE + wq as u64) * PAGE
}

impl Rig {
    /// A fresh accel behind a fresh IOMMU (5-level first stage supported with `five_level`)
    /// over a fresh guest: window page `i` of process `n` present when bit `i` of
    /// `present[n]` is set; memory space and bus mastering on, the fault handler registered.
    pub fn new(five_level: bool, present: [u16; 2]) -> Self {
        let config = VtdConfig {
            fl_5level: five_level,
            ..VtdConfig::default()
        };
        let memfd = guest::guarded_memfd();
        // The IOMMU's own memory: unused (the device brings its map), but the same RAM.
        let iommu_mem = GuestMemory::new();
        for map in guest::dma_maps() {
            let fd = memfd.try_clone().expect("dup of a memfd");
            iommu_mem
                .map(&map, Some(fd.into()))
                .expect("mapping guest RAM");
        }
        let iommu = Arc::new(PhysicalIommu::with_timeout(
            config,
            iommu_mem,
            RESPONSE_TIMEOUT,
        ));
        let mut ep = accel::endpoint_svm(accel::VENDOR_ID, accel::DEVICE_ID, iommu.clone(), DEV)
            .expect("an accel behind the IOMMU");
        for map in guest::dma_maps() {
            let fd = memfd.try_clone().expect("dup of a memfd");
            ep.dma_map(map, Some(fd.into())).expect("mapping guest RAM");
        }
        let mem = ep.bus().mem.clone();
        guest::build(&mem, present);
        let handler = Arc::new(Handler::default());
        iommu
            .register_fault_handler(DEV, handler.clone())
            .expect("a fresh device takes a handler");
        let mut rig = Rig {
            ep,
            iommu,
            mem,
            memfd,
            handler,
            registered: true,
            queues: [Queue::default(); WQ_COUNT],
            lists: Vec::new(),
            caps: [0; 3],
        };
        rig.caps = [EXT_CAP_ID_ATS, EXT_CAP_ID_PASID, EXT_CAP_ID_PRI].map(|id| rig.ext_cap(id));
        rig.cfg_write(PCI_COMMAND, COMMAND_MEMORY_MASTER.into(), 2);
        rig
    }

    /// What Linux leaves an SVA device in: PASID (with privileged mode), ATS and PRI on with
    /// `allocation` credits, both processes bound (nested over the DMA map) and enabled in
    /// the device, queue n enabled with `queues[n]` = (block-on-fault, vector).
    pub fn linux_setup(&mut self, allocation: u32, queues: [(bool, u8); WQ_COUNT]) {
        self.config_caps(true, true, true, allocation);
        for n in 0..guest::PASIDS.len() {
            let process = Process::new(n);
            let flags = FirstStageFlags {
                supervisor: true,
                ..FirstStageFlags::default()
            };
            let target = BindTarget::GuestPageTable(process.page_table(false, flags));
            let pasid = Pasid::new(process.pasid()).expect("a small PASID");
            let _ = self.iommu.bind(DEV, pasid, target);
            self.pasid_ctl(process.pasid(), true);
        }
        for (wq, (block_on_fault, vector)) in queues.into_iter().enumerate() {
            self.enable_queue(wq, block_on_fault, vector);
        }
    }

    /// A 32-bit BAR0 read.
    pub fn read32(&mut self, at: u64) -> u32 {
        let mut out = [0; 4];
        let _ = self.ep.region_read(BAR0, at, &mut out);
        u32::from_le_bytes(out)
    }

    /// A 32-bit BAR0 write.
    pub fn write32(&mut self, at: u64, value: u32) {
        let _ = self.ep.region_write(BAR0, at, &value.to_le_bytes());
    }

    fn cfg_write(&mut self, at: u64, value: u32, size: usize) {
        let _ = self
            .ep
            .region_write(CONFIG_REGION, at, &value.to_le_bytes()[..size]);
    }

    /// Offset of extended capability `id` (the device has all three).
    fn ext_cap(&mut self, id: u16) -> u64 {
        let mut at = EXT_CAP_START;
        while at != 0 {
            let mut header = [0; 4];
            let _ = self.ep.region_read(CONFIG_REGION, at, &mut header);
            let header = u32::from_le_bytes(header);
            if header as u16 == id {
                return at;
            }
            at = u64::from(header >> 20);
        }
        panic!("accel lost its extended capability 0x{id:x}");
    }

    /// PASID Control (Enable, Execute, Privileged), ATS Enable, PRI allocation and Enable.
    pub fn config_caps(&mut self, pasid: bool, ats: bool, pri: bool, allocation: u32) {
        let [ats_at, pasid_at, pri_at] = self.caps;
        let ctl = PasidControl::new()
            .with_enable(pasid)
            .with_exec(pasid)
            .with_privileged(pasid);
        self.cfg_write(pasid_at + PASID_CONTROL, ctl.into_bits().into(), 2);
        let ctl = AtsControl::new().with_enable(ats);
        self.cfg_write(ats_at + ATS_CONTROL, ctl.into_bits().into(), 2);
        self.cfg_write(pri_at + PRI_ALLOCATION, allocation, 4);
        let ctl = PriControl::new().with_enable(pri);
        self.cfg_write(pri_at + PRI_CONTROL, ctl.into_bits().into(), 2);
    }

    /// PASID_SEL, then PASID_CTL.ENABLE (a disable starts a drain).
    pub fn pasid_ctl(&mut self, pasid: u32, enable: bool) {
        self.write32(offset::PASID_SEL, pasid);
        let ctl = PasidCtl::new().with_enable(enable);
        self.write32(offset::PASID_CTL, ctl.into_bits());
    }

    /// Disables queue `wq`, then enables it on its ring: a countable queue from slot 0.
    pub fn enable_queue(&mut self, wq: usize, block_on_fault: bool, vector: u8) {
        self.write32(wq_reg(wq, wq_offset::CTRL), 0);
        let base = ring(wq);
        self.write32(wq_reg(wq, wq_offset::BASE), base as u32);
        self.write32(wq_reg(wq, wq_offset::BASE + 4), (base >> 32) as u32);
        self.write32(wq_reg(wq, wq_offset::SIZE), RING_SIZE);
        let ctrl = WqCtrl::new()
            .with_enable(true)
            .with_block_on_fault(block_on_fault)
            .with_vector(vector);
        self.write32(wq_reg(wq, wq_offset::CTRL), ctrl.into_bits());
        self.queues[wq] = Queue {
            undisturbed: true,
            ..Queue::default()
        };
    }

    /// WQ_STATUS of queue `wq`.
    pub fn wq_status(&mut self, wq: usize) -> WqStatus {
        WqStatus::from_bits(self.read32(wq_reg(wq, wq_offset::STATUS)))
    }

    /// No queue holds work and the plain engine is not busy.
    fn idle(&mut self) -> bool {
        let queues = (0..WQ_COUNT).all(|wq| {
            let status = self.wq_status(wq);
            let head = self.read32(wq_reg(wq, wq_offset::HEAD));
            let tail = self.read32(wq_reg(wq, wq_offset::TAIL));
            !status.busy() && (!status.enabled() || head == tail)
        });
        let engine = DmaStatus::from_bits(self.read32(offset::DMA_STATUS));
        queues && engine.state() != DmaState::Busy
    }

    /// Lets the device work until it is idle, or waits for a page response, or [`SETTLE`]
    /// passed.
    pub fn settle(&mut self) {
        let deadline = Instant::now() + SETTLE;
        let mut seen = self.handler.count();
        while !self.idle() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(100));
            let now = self.handler.count();
            if now == seen && self.iommu.pending_page_requests() > 0 {
                return;
            }
            seen = now;
        }
    }

    /// The end of a run: once nobody holds a page response back, the device goes idle, no
    /// page request stays pending and no credit is lost, every undisturbed queue took every
    /// descriptor it accepted off its ring and completes a fence, and both guards are intact.
    /// Panics otherwise.
    pub fn finish(mut self) {
        if self.registered {
            // The guest's driver goes away: pending groups are answered, later ones at once.
            self.iommu
                .unregister_fault_handler(DEV)
                .expect("unregistering");
        }
        let deadline = Instant::now() + IDLE_TIMEOUT;
        while !self.idle() {
            assert!(Instant::now() < deadline, "accel never went idle");
            std::thread::sleep(Duration::from_micros(200));
        }
        let pending = self.iommu.pending_page_requests();
        assert_eq!(pending, 0, "page requests left pending");
        let pri = self.ep.function().svm().expect("behind an IOMMU").pri();
        assert_eq!(pri.outstanding(), 0, "page request credits leaked");
        for wq in 0..WQ_COUNT {
            let queue = self.queues[wq];
            if !queue.undisturbed || !self.wq_status(wq).enabled() {
                continue;
            }
            let done = self.read32(wq_reg(wq, wq_offset::DONE));
            assert_eq!(
                done, queue.accepted,
                "queue {wq}: descriptors not completed"
            );
            self.fence(wq);
        }
        assert!(
            guest::guards_intact(&self.memfd),
            "a write outside guest RAM"
        );
    }

    /// A NOP with an untagged record, through the identity domain, must succeed on `wq`.
    fn fence(&mut self, wq: usize) {
        let _ = self.iommu.set_default_domain(DEV, DefaultDomain::Identity);
        self.cfg_write(PCI_COMMAND, COMMAND_MEMORY_MASTER.into(), 2);
        let record = guest::RECORDS_PAGE * PAGE + wq as u64 * COMPLETION_SIZE;
        let _ = self.mem.write(Gpa(record), &[0; COMPLETION_SIZE as usize]);
        let tail = self.queues[wq].tail;
        let nop = Descriptor::nop().with_completion(record);
        let slot = ring(wq) + u64::from(tail) * DESCRIPTOR_SIZE;
        let _ = self.mem.write(Gpa(slot), nop.as_bytes());
        self.write32(wq_reg(wq, wq_offset::TAIL), (tail + 1) % RING_SIZE);
        let deadline = Instant::now() + IDLE_TIMEOUT;
        loop {
            let mut bytes = [0; COMPLETION_SIZE as usize];
            let _ = self.mem.read(Gpa(record), &mut bytes);
            let record = CompletionRecord::read_from_bytes(&bytes).unwrap_or_default();
            if record.status != Status::None.code() {
                let status = record.status();
                assert_eq!(status, Some(Status::Success), "queue {wq}: fence failed");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "queue {wq}: fence never completed"
            );
            std::thread::sleep(Duration::from_micros(100));
        }
    }
}
