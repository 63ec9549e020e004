//! A driver for the VT-d remapping unit that behaves like Linux's intel-iommu
//! (drivers/iommu/intel/{iommu,dmar,prq}.c): it programs the unit only through its registers and
//! builds queues, descriptors and translation structures in memfd-backed guest RAM, encoding
//! them the way Linux's `QI_*` macros do (independently of the model's own bitfields).

use vsvm::vtd::cap::FRCD_OFFSET;
use vsvm::vtd::regs::*;
use vsvm::vtd::translate::RootTableType;
use vsvm::vtd::{RecordingSink, RemappingUnit, SourceId, VtdConfig};

use super::{GuestRam, Structures};

/// Guest RAM: [0, RAM_SIZE).
pub const RAM_SIZE: u64 = 32 << 20;
/// The root table.
pub const ROOT_TABLE: u64 = 0x10_0000;
/// The invalidation queue.
pub const IQ_BASE: u64 = 0x20_0000;
/// Invalidation wait status slots (Linux `qi->desc_status`, 4-byte ints).
pub const STATUS_BASE: u64 = 0x30_0000;
/// The page request queue.
pub const PRQ_BASE: u64 = 0x40_0000;
/// Where the page allocator starts: translation structures and pages come from there on.
pub const ALLOC_BASE: u64 = 0x80_0000;
/// An address no map covers.
pub const UNMAPPED: u64 = 0x4000_0000;

/// Linux `enum { QI_FREE, QI_IN_USE, QI_DONE, QI_ABORT }`.
pub const QI_IN_USE: u32 = 1;
/// Status data Linux's wait descriptors write.
pub const QI_DONE: u32 = 2;

/// Fault event message Linux programs (dmar_msi_write): vector 0x21 to the local APIC.
pub const FE_DATA: u32 = 0x21;
/// Fault event address.
pub const FE_ADDR: u32 = 0xfee0_0000;
/// Page request event data.
pub const PE_DATA: u32 = 0x22;
/// Invalidation completion event data.
pub const IE_DATA: u32 = 0x23;

/// Linux's QI descriptor encodings (include/linux/intel-iommu.h, drivers/iommu/intel/iommu.h).
pub mod qi {
    pub const CC_TYPE: u64 = 0x1;
    pub const IOTLB_TYPE: u64 = 0x2;
    pub const DIOTLB_TYPE: u64 = 0x3;
    pub const IEC_TYPE: u64 = 0x4;
    pub const IWD_TYPE: u64 = 0x5;
    pub const EIOTLB_TYPE: u64 = 0x6;
    pub const PC_TYPE: u64 = 0x7;
    pub const DEIOTLB_TYPE: u64 = 0x8;
    pub const PGRP_RESP_TYPE: u64 = 0x9;

    /// qi_flush_context: granularity 1 global, 2 domain, 3 device.
    pub fn cc(gran: u64, did: u16, sid: u16, fm: u8) -> [u64; 4] {
        [
            (u64::from(fm) << 48)
                | (u64::from(sid) << 32)
                | (u64::from(did) << 16)
                | (gran << 4)
                | CC_TYPE,
            0,
            0,
            0,
        ]
    }

    /// qi_desc_iotlb: granularity 1 global, 2 domain, 3 page.
    pub fn iotlb(gran: u64, did: u16, addr: u64, ih: bool, am: u8) -> [u64; 4] {
        [
            (u64::from(did) << 16) | (gran << 4) | IOTLB_TYPE,
            (addr & !0xfff) | (u64::from(ih) << 6) | u64::from(am),
            0,
            0,
        ]
    }

    /// qi_desc_dev_iotlb.
    pub fn dev_iotlb(sid: u16, qdep: u8, addr: u64, size: bool) -> [u64; 4] {
        [
            (u64::from(sid) << 32) | (u64::from(qdep & 0x1f) << 16) | DIOTLB_TYPE,
            (addr & !0xfff) | u64::from(size),
            0,
            0,
        ]
    }

    /// qi_global_iec / qi_flush_iec.
    pub fn iec(selective: bool, index: u16, mask: u8) -> [u64; 4] {
        [
            (u64::from(index) << 32)
                | (u64::from(mask) << 27)
                | (u64::from(selective) << 4)
                | IEC_TYPE,
            0,
            0,
            0,
        ]
    }

    /// An invalidation wait: IF bit 4, SW bit 5, FN bit 6, PD bit 7, data 63:32.
    pub fn wait(
        status_addr: u64,
        data: u32,
        sw: bool,
        irq: bool,
        fence: bool,
        drain: bool,
    ) -> [u64; 4] {
        [
            (u64::from(data) << 32)
                | (u64::from(drain) << 7)
                | (u64::from(fence) << 6)
                | (u64::from(sw) << 5)
                | (u64::from(irq) << 4)
                | IWD_TYPE,
            status_addr,
            0,
            0,
        ]
    }

    /// qi_desc_piotlb: granularity 2 PASID-selective, 3 page-selective.
    pub fn piotlb(gran: u64, did: u16, pasid: u32, addr: u64, ih: bool, am: u8) -> [u64; 4] {
        [
            (u64::from(pasid) << 32) | (u64::from(did) << 16) | (gran << 4) | EIOTLB_TYPE,
            (addr & !0xfff) | (u64::from(ih) << 6) | u64::from(am),
            0,
            0,
        ]
    }

    /// pasid_cache_invalidation_with_pasid: granularity 0 domain, 1 PASID, 3 global.
    pub fn pc(gran: u64, did: u16, pasid: u32) -> [u64; 4] {
        [
            (u64::from(pasid) << 32) | (u64::from(did) << 16) | (gran << 4) | PC_TYPE,
            0,
            0,
            0,
        ]
    }

    /// qi_desc_dev_iotlb_pasid.
    pub fn dev_iotlb_pasid(
        sid: u16,
        pasid: u32,
        qdep: u8,
        addr: u64,
        size: bool,
        global: bool,
    ) -> [u64; 4] {
        [
            (u64::from(pasid) << 32)
                | (u64::from(sid) << 16)
                | (u64::from(qdep & 0x1f) << 4)
                | DEIOTLB_TYPE,
            (addr & !0xfff) | (u64::from(size) << 11) | u64::from(global),
            0,
            0,
        ]
    }

    /// intel_iommu_page_response (with LPIG as Linux < 6.18 sets it).
    pub fn page_response(
        sid: u16,
        pasid: Option<u32>,
        code: u8,
        prg_index: u16,
        lpig: bool,
    ) -> [u64; 4] {
        [
            (u64::from(pasid.unwrap_or(0)) << 32)
                | (u64::from(sid) << 16)
                | (u64::from(code) << 12)
                | (u64::from(pasid.is_some()) << 4)
                | PGRP_RESP_TYPE,
            (u64::from(prg_index) << 3) | (u64::from(lpig) << 2),
            0,
            0,
        ]
    }
}

/// A unit, its guest RAM, and a driver state like `struct intel_iommu`.
/// What the driver programs: a register window. Writes settle before they return (a
/// unit that works on a thread of its own finishes what a write started), as a guest that
/// polls for completion would observe.
pub trait Unit {
    /// A register read.
    fn read(&self, offset: u64, size: usize) -> u64;
    /// A register write; outputs that are not interrupts of a front end go to `sink`.
    fn write(&mut self, offset: u64, size: usize, value: u64, sink: &mut RecordingSink);
}

impl Unit for RemappingUnit {
    fn read(&self, offset: u64, size: usize) -> u64 {
        self.mmio_read(offset, size)
    }
    fn write(&mut self, offset: u64, size: usize, value: u64, sink: &mut RecordingSink) {
        self.mmio_write(offset, size, value, sink);
    }
}

pub struct Machine<U: Unit = RemappingUnit> {
    /// Guest RAM (memfd-backed); the root table, queues and status slots are at fixed
    /// addresses, everything else comes from its allocator.
    pub ram: GuestRam,
    /// The unit under test.
    pub unit: U,
    /// Everything the unit sent out.
    pub sink: RecordingSink,
    /// Linux's `iommu->gcmd`: the persistent command bits software has set.
    pub gcmd: u32,
    /// Invalidation queue: descriptor size in bytes (16 or 32), queue size in bytes, next free
    /// slot (byte offset), next wait status slot.
    pub desc_size: u64,
    pub queue_size: u64,
    pub free_head: u64,
    pub status_slot: u64,
    /// The root table's mode as last set with [`Machine::set_root_entry`].
    pub root_kind: RootTableType,
}

impl<U: Unit> Structures for Machine<U> {
    fn ram(&mut self) -> &mut GuestRam {
        &mut self.ram
    }
    fn root_addr(&self) -> u64 {
        ROOT_TABLE
    }
    fn root_kind(&self) -> RootTableType {
        self.root_kind
    }
}

impl Machine {
    /// A unit with `config` over fresh RAM.
    pub fn new(config: VtdConfig) -> Self {
        let mut ram = GuestRam::new(RAM_SIZE);
        ram.skip_to(ALLOC_BASE);
        let unit = RemappingUnit::new(config, ram.mem.clone());
        Machine::with_unit(ram, unit)
    }

    /// A unit with the default (Linux SVA) configuration.
    pub fn default_config() -> Self {
        Self::new(VtdConfig::default())
    }
}

impl<U: Unit> Machine<U> {
    /// `unit` over `ram` (whose allocator should start at [`ALLOC_BASE`]).
    pub fn with_unit(ram: GuestRam, unit: U) -> Self {
        Machine {
            ram,
            unit,
            sink: RecordingSink::new(),
            gcmd: 0,
            desc_size: 16,
            queue_size: 4096,
            free_head: 0,
            status_slot: 0,
            root_kind: RootTableType::Legacy,
        }
    }

    pub fn readl(&self, offset: u64) -> u32 {
        self.unit.read(offset, 4) as u32
    }

    pub fn readq(&self, offset: u64) -> u64 {
        self.unit.read(offset, 8)
    }

    pub fn writel(&mut self, offset: u64, value: u32) {
        self.unit.write(offset, 4, value.into(), &mut self.sink);
    }

    pub fn writeq(&mut self, offset: u64, value: u64) {
        self.unit.write(offset, 8, value, &mut self.sink);
    }

    /// dmar_msi_write + unmask for the three event sources.
    pub fn program_events(&mut self) {
        for (data, addr, ctl, value) in [
            (DMAR_FEDATA_REG, DMAR_FEADDR_REG, DMAR_FECTL_REG, FE_DATA),
            (DMAR_PEDATA_REG, DMAR_PEADDR_REG, DMAR_PECTL_REG, PE_DATA),
            (DMAR_IEDATA_REG, DMAR_IEADDR_REG, DMAR_IECTL_REG, IE_DATA),
        ] {
            self.writel(data, value);
            self.writel(addr, FE_ADDR);
            self.writel(addr + 4, 0);
            self.writel(ctl, 0);
        }
    }

    /// iommu_set_root_entry: RTADDR (with TTM 01 in scalable mode), then GCMD.SRTP, and wait
    /// for GSTS.RTPS.
    pub fn set_root_entry(&mut self, scalable: bool) {
        self.root_kind = if scalable {
            RootTableType::Scalable
        } else {
            RootTableType::Legacy
        };
        self.writeq(DMAR_RTADDR_REG, ROOT_TABLE | (u64::from(scalable) << 10));
        self.writel(DMAR_GCMD_REG, self.gcmd | (1 << 30));
        assert_ne!(self.readl(DMAR_GSTS_REG) & (1 << 30), 0, "GSTS.RTPS");
    }

    /// iommu_enable_translation: GCMD.TE, wait for GSTS.TES.
    pub fn enable_translation(&mut self) {
        self.gcmd |= 1 << 31;
        self.writel(DMAR_GCMD_REG, self.gcmd);
        assert_ne!(self.readl(DMAR_GSTS_REG) & (1 << 31), 0, "GSTS.TES");
    }

    /// iommu_disable_translation.
    pub fn disable_translation(&mut self) {
        self.gcmd &= !(1 << 31);
        self.writel(DMAR_GCMD_REG, self.gcmd);
        assert_eq!(self.readl(DMAR_GSTS_REG) & (1 << 31), 0);
    }

    /// __dmar_enable_qi: IQT = 0, IQA = base | DW | QS, GCMD.QIE, wait for GSTS.QIES.
    pub fn enable_qi(&mut self, qs: u8, wide: bool) {
        self.desc_size = if wide { 32 } else { 16 };
        self.queue_size = 4096 << qs;
        self.free_head = 0;
        self.writel(DMAR_IQT_REG, 0);
        self.writeq(
            DMAR_IQA_REG,
            IQ_BASE | (u64::from(wide) << 11) | u64::from(qs),
        );
        self.gcmd |= 1 << 26;
        self.writel(DMAR_GCMD_REG, self.gcmd);
        assert_ne!(self.readl(DMAR_GSTS_REG) & (1 << 26), 0, "GSTS.QIES");
    }

    /// dmar_disable_qi.
    pub fn disable_qi(&mut self) {
        self.gcmd &= !(1 << 26);
        self.writel(DMAR_GCMD_REG, self.gcmd);
        assert_eq!(self.readl(DMAR_GSTS_REG) & (1 << 26), 0);
    }

    /// Writes a descriptor at the next free slot (only the quadwords of the queue's width).
    pub fn push(&mut self, desc: [u64; 4]) -> u64 {
        let at = IQ_BASE + self.free_head;
        for (i, qword) in desc.iter().take((self.desc_size / 8) as usize).enumerate() {
            self.ram.write(at + i as u64 * 8, *qword);
        }
        let offset = self.free_head;
        self.free_head = (self.free_head + self.desc_size) % self.queue_size;
        offset
    }

    /// writel(free_head << shift, IQT) as qi_submit_sync does.
    pub fn ring(&mut self) {
        self.writel(DMAR_IQT_REG, self.free_head as u32);
    }

    /// A fresh wait status slot, set to QI_IN_USE.
    pub fn status_slot(&mut self) -> u64 {
        let addr = STATUS_BASE + self.status_slot * 4;
        self.status_slot += 1;
        self.ram.write_u32(addr, QI_IN_USE);
        addr
    }

    /// qi_submit_sync: the descriptors, then a wait descriptor with a status write; rings IQT.
    /// Returns the status slot's final value (QI_DONE when the unit completed them).
    pub fn submit(&mut self, descs: &[[u64; 4]]) -> u32 {
        for desc in descs {
            self.push(*desc);
        }
        let status = self.status_slot();
        self.push(qi::wait(status, QI_DONE, true, false, false, false));
        self.ring();
        self.ram.read_u32(status)
    }

    /// IQH as a byte offset.
    pub fn iqh(&self) -> u64 {
        self.readq(DMAR_IQH_REG)
    }

    /// intel_iommu_enable_prq: PQH = PQT = 0, PQA = base | order.
    pub fn enable_prq(&mut self, order: u8) {
        self.writeq(DMAR_PQH_REG, 0);
        self.writeq(DMAR_PQT_REG, 0);
        self.writeq(DMAR_PQA_REG, PRQ_BASE | u64::from(order));
    }

    /// The Linux boot sequence in scalable mode up to PRQ setup: events, root table, QI with
    /// 256-bit descriptors, translation on.
    pub fn boot_scalable(&mut self) {
        self.program_events();
        self.enable_qi(1, true);
        self.set_root_entry(true);
        assert_eq!(
            self.submit(&[
                qi::cc(1, 0, 0, 0),
                qi::pc(3, 0, 0),
                qi::iotlb(1, 0, 0, false, 0)
            ]),
            QI_DONE
        );
        self.enable_translation();
    }

    /// Linux's prq_event_thread: clear PPR, walk head to tail reading each 32-byte descriptor,
    /// write PQH = tail. Returns the descriptors read.
    pub fn drain_prq(&mut self, queue_size: u64) -> Vec<[u64; 4]> {
        const PRQ_PRS_PPR: u32 = 1;
        self.writel(DMAR_PRS_REG, PRQ_PRS_PPR);
        let tail = self.readq(DMAR_PQT_REG) & (queue_size - 0x20);
        let mut head = self.readq(DMAR_PQH_REG) & (queue_size - 0x20);
        let mut out = Vec::new();
        while head != tail {
            out.push([0, 8, 16, 24].map(|o| self.ram.read(PRQ_BASE + head + o)));
            head = (head + 0x20) % queue_size;
        }
        self.writeq(DMAR_PQH_REG, tail);
        out
    }

    /// What Linux's dmar_fault reads from fault recording register `index`: the upper dword
    /// (F, T, PV, FR), the dword below it (PP, EXE, PRIV, SID) and the address quadword.
    pub fn fault_record(&self, index: u64) -> (u32, u32, u64) {
        let base = FRCD_OFFSET + 16 * index;
        (
            self.readl(base + 12),
            self.readl(base + 8),
            self.readq(base),
        )
    }

    /// dmar_fault() after reading fault record `index`: clear its F, then PFO and PPF in FSTS.
    pub fn service_fault(&mut self, index: u64) {
        const DMA_FRCD_F: u32 = 1 << 31;
        const DMA_FSTS_PFO: u32 = 1;
        const DMA_FSTS_PPF: u32 = 1 << 1;
        self.writel(FRCD_OFFSET + 16 * index + 12, DMA_FRCD_F);
        self.writel(DMAR_FSTS_REG, DMA_FSTS_PFO | DMA_FSTS_PPF);
    }

    /// intel_context_flush_present() in scalable mode: device-selective context-cache
    /// invalidation, then for each domain of the device's PASIDs a domain-selective PASID-cache
    /// and IOTLB invalidation, then a global device-TLB invalidation.
    pub fn flush_context_present(&mut self, sid: SourceId, dids: &[u16]) {
        let mut descs = vec![qi::cc(3, 0, sid.0, 0)];
        for &did in dids {
            descs.push(qi::pc(0, did, 0));
            descs.push(qi::iotlb(2, did, 0, false, 0));
        }
        descs.push(qi::dev_iotlb(sid.0, 0, (1 << 63) - 1, true));
        assert_eq!(self.submit(&descs), QI_DONE);
    }

    /// pasid_flush_caches() in caching mode, after a PASID entry changed: PASID-selective
    /// PASID-cache and PASID-based IOTLB invalidations.
    pub fn flush_pasid_caches(&mut self, did: u16, pasid: u32) {
        assert_eq!(
            self.submit(&[
                qi::pc(1, did, pasid),
                qi::piotlb(2, did, pasid, 0, false, 0)
            ]),
            QI_DONE
        );
    }

    /// intel_iommu_enable_iopf() up to the device: context_flip_pri(true) (PRE set, then the
    /// present context entry flushed) for a device whose PASIDs are in domains `dids`.
    pub fn enable_page_requests(&mut self, sid: SourceId, dids: &[u16]) {
        self.set_context_pre(sid, true);
        self.flush_context_present(sid, dids);
    }
}
