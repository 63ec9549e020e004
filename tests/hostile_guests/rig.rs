//! The rig every hostile-guest case runs on: the guest-facing front end over the real
//! physical VT-d model, both on guarded guest RAM (tests/common/guarded.rs), driven through its
//! registers like Linux's intel-iommu drives a unit. Dropping the rig checks that the front
//! end's thread is still alive and that nothing wrote outside guest RAM.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common_vtd::driver::*;
use crate::common_vtd::guarded::GuardedRam;
use crate::common_vtd::*;
use vsvm::iommu::{
    Access, DeviceEndpoint, DeviceId, Granularity, HostIommu, PageRequest, PageResponse, Pasid,
    TranslateFailure,
};
use vsvm::viommu::{FrontEnd, InterruptPort};
use vsvm::vtd::piommu::PhysicalIommu;
use vsvm::vtd::{RecordingSink, VtdConfig};

/// The device behind the unit.
pub const ID: DeviceId = DeviceId(DEV.0);
/// Linux's DMA domain ID and the SVA PASID's domain.
pub const DMA_DID: u16 = 1;
pub const SVA_DID: u16 = 2;
pub const PASID: u32 = 0x42;
pub const IOVA: u64 = 0x10_0000;
pub const VA: u64 = 0x7f12_3456_7000;
/// A page inside RAM the guest's tables map.
pub const PA: u64 = 0x1c0_0000;
/// MMIO: the local APIC's window and a device's BAR (never RAM).
pub const MMIO: [u64; 2] = [0xfee0_0000, 0xfeb0_0000];
/// A response timeout no test waits for.
pub const LONG: Duration = Duration::from_secs(60);

/// The device side: what the host IOMMU sent to the device.
#[derive(Default)]
pub struct Device {
    pub atc: Mutex<Vec<Granularity>>,
    pub responses: Mutex<Vec<PageResponse>>,
}

impl DeviceEndpoint for Device {
    fn invalidate_atc(&self, granularity: Granularity) {
        self.atc.lock().unwrap().push(granularity);
    }
    fn page_response(&self, resp: PageResponse) {
        self.responses.lock().unwrap().push(resp);
    }
}

/// Interrupt messages the front end sent.
#[derive(Default)]
pub struct Msi(pub Mutex<Vec<(u64, u32)>>);

impl InterruptPort for Msi {
    fn send(&self, addr: u64, data: u32) -> bool {
        self.0.lock().unwrap().push((addr, data));
        true
    }
}

/// The front end as the driver's register window: every write settles (the guest polls).
pub struct Front(pub FrontEnd);

impl Unit for Front {
    fn read(&self, offset: u64, size: usize) -> u64 {
        self.0.read(offset, size)
    }
    fn write(&mut self, offset: u64, size: usize, value: u64, _sink: &mut RecordingSink) {
        self.0.write(offset, size, value);
        self.0.flush();
    }
}

/// One fault record as Linux's dmar_fault reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    pub reason: u8,
    pub sid: u16,
    pub pasid: Option<u32>,
    pub addr: u64,
}

pub struct Rig {
    pub m: Machine<Front>,
    pub iommu: Arc<PhysicalIommu>,
    pub device: Arc<Device>,
    pub msi: Arc<Msi>,
    pub guarded: GuardedRam,
}

impl Rig {
    pub fn new() -> Self {
        Self::with_timeout(LONG)
    }

    /// The rig with page requests answered by the host after `timeout`.
    pub fn with_timeout(timeout: Duration) -> Self {
        let config = VtdConfig::default();
        let guarded = GuardedRam::new(RAM_SIZE);
        let mem = guarded.memory();
        let mut ram = GuestRam::guarded(mem.clone(), &guarded);
        ram.skip_to(ALLOC_BASE);
        let iommu = Arc::new(PhysicalIommu::with_timeout(config, mem.clone(), timeout));
        let device = Arc::new(Device::default());
        iommu.attach(ID, device.clone()).unwrap();
        let msi = Arc::new(Msi::default());
        let front = FrontEnd::new(config, mem, iommu.clone(), &[ID], msi.clone())
            .expect("the vIOMMU thread starts");
        Rig {
            m: Machine::with_unit(ram, Front(front)),
            iommu,
            device,
            msi,
            guarded,
        }
    }

    /// A device request through the host IOMMU; its fault, if any, has reached the guest's
    /// registers when this returns.
    pub fn translate(
        &self,
        pasid: Option<u32>,
        addr: u64,
        access: Access,
    ) -> Result<u64, TranslateFailure> {
        let pasid = pasid.map(|p| Pasid::new(p).unwrap());
        let out = self.iommu.translate(ID, pasid, addr, access);
        self.m.unit.0.flush();
        out.map(|t| t.output)
    }

    /// The one fault recorded since the last call (cleared as Linux's dmar_fault does);
    /// fails when there is none or more than one.
    pub fn take_fault(&mut self) -> Record {
        let records = self.take_faults();
        assert_eq!(records.len(), 1, "one fault record: {records:x?}");
        records[0]
    }

    /// Every fault recorded since the last call, cleared.
    pub fn take_faults(&mut self) -> Vec<Record> {
        self.m.unit.0.flush();
        let count = u64::from(self.m.unit.0.config().fault_records);
        let mut out = Vec::new();
        for index in 0..count {
            let (hi, lo, addr) = self.m.fault_record(index);
            if hi & (1 << 31) == 0 {
                continue;
            }
            // Linux: PP is bit 31 of the lower dword, the PASID bits 27:8 of the upper one.
            let pasid = (lo & (1 << 31) != 0).then_some((hi >> 8) & 0xf_ffff);
            out.push(Record {
                reason: hi as u8,
                sid: lo as u16,
                pasid,
                addr: addr & !0xfff,
            });
            self.m.service_fault(index);
        }
        out
    }

    /// Scalable-mode boot and a context entry with a PASID directory of `pdts` (2^(pdts+7)
    /// entries); returns (context entry, directory).
    pub fn scalable_context(&mut self, pdts: u64) -> (u64, u64) {
        self.m.boot_scalable();
        self.m.sm_context(DEV, true, pdts)
    }

    /// Scalable-mode boot with a first-stage DMA domain in RID_PASID mapping IOVA to PA
    /// (Linux's default with FLTS); returns (table, PASID directory).
    pub fn dma_domain(&mut self) -> (Tree, u64) {
        let (_, dir) = self.scalable_context(7);
        let tree = Tree::new(&mut self.m.ram, 4, Space::default(), PAGE_TABLE);
        let leaf = PAGE_USER_RW | PAGE_ACCESSED | PAGE_DIRTY;
        tree.map(&mut self.m.ram, IOVA, PA, 1, leaf);
        let entry = PasidEntryBuilder::first_level(tree.root, DMA_DID, false, 2);
        self.m.set_pasid(dir, 0, entry);
        self.m.flush_context_present(DEV, &[DMA_DID]);
        (tree, dir)
    }

    /// A first-stage table for PASID with VA mapped to PA, bound through the PASID entry
    /// and the caching-mode PASID-cache flush (intel_svm_bind).
    pub fn sva(&mut self, dir: u64) -> Tree {
        let tree = Tree::new(&mut self.m.ram, 4, Space::default(), PAGE_TABLE);
        let leaf = PAGE_USER_RW | PAGE_ACCESSED | PAGE_DIRTY;
        tree.map(&mut self.m.ram, VA, PA, 1, leaf);
        let entry = PasidEntryBuilder::first_level(tree.root, SVA_DID, false, 2);
        self.m.set_pasid(dir, PASID, entry);
        self.m.flush_pasid_caches(SVA_DID, PASID);
        tree
    }

    /// A bound process with page requests enabled (PRQ of 2^order pages, PRE set).
    pub fn sva_with_page_requests(&mut self, order: u8) -> u64 {
        let (_, dir) = self.dma_domain();
        self.sva(dir);
        self.m.enable_prq(order);
        self.m.enable_page_requests(DEV, &[DMA_DID, SVA_DID]);
        dir
    }

    /// The device's page request for `addr`, group `group`, last of its group; returns once
    /// the front end has handled it.
    pub fn page_request(&self, addr: u64, group: u16) {
        self.iommu.page_request(PageRequest {
            device: ID,
            pasid: Some(Pasid::new(PASID).unwrap()),
            addr,
            access: Access::WRITE,
            group,
            last: true,
        });
        self.m.unit.0.flush();
    }

    /// Page responses the device got so far.
    pub fn responses(&self) -> Vec<PageResponse> {
        self.device.responses.lock().unwrap().clone()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        assert!(self.m.unit.0.running(), "the front end's thread died");
        self.guarded.assert_intact();
    }
}
