//! The remapping unit's register file: one table of registers with their reset values and
//! read-write / write-1-to-clear / write-only bits, and the MMIO path that applies the masks.
//! VT-d spec 11 (register descriptions, 11.4.x); the fields of each register are in `fields`.
//!
//! Side effects of writes (GCMD, CCMD, IOTLB, IQT, FSTS, ...) are not here: [`RegisterFile::write`]
//! reports which registers a write touched and the unit runs their hooks. Names follow Linux's
//! `DMAR_*_REG` so that a grep works across Linux, QEMU and this crate.

mod fields;

pub use fields::*;

use super::cap::{VtdConfig, FRCD_OFFSET, IOTLB_OFFSET};
use super::sink::{InterruptKind, VtdInterrupt, VtdSink};
use Feature::{PageRequests as Prq, QueuedInvalidation as Qi};
use Width::{W32, W64};

/// Version register (VER_REG).
pub const DMAR_VER_REG: u64 = 0x00;
/// Capability register (CAP_REG).
pub const DMAR_CAP_REG: u64 = 0x08;
/// Extended capability register (ECAP_REG).
pub const DMAR_ECAP_REG: u64 = 0x10;
/// Global command register (GCMD_REG).
pub const DMAR_GCMD_REG: u64 = 0x18;
/// Global status register (GSTS_REG).
pub const DMAR_GSTS_REG: u64 = 0x1c;
/// Root table address register (RTADDR_REG).
pub const DMAR_RTADDR_REG: u64 = 0x20;
/// Context command register (CCMD_REG).
pub const DMAR_CCMD_REG: u64 = 0x28;
/// Fault status register (FSTS_REG).
pub const DMAR_FSTS_REG: u64 = 0x34;
/// Fault event control register (FECTL_REG).
pub const DMAR_FECTL_REG: u64 = 0x38;
/// Fault event data register (FEDATA_REG).
pub const DMAR_FEDATA_REG: u64 = 0x3c;
/// Fault event address register (FEADDR_REG).
pub const DMAR_FEADDR_REG: u64 = 0x40;
/// Fault event upper address register (FEUADDR_REG).
pub const DMAR_FEUADDR_REG: u64 = 0x44;
/// Advanced fault log register (AFLOG_REG).
pub const DMAR_AFLOG_REG: u64 = 0x58;
/// Protected memory enable register (PMEN_REG).
pub const DMAR_PMEN_REG: u64 = 0x64;
/// Invalidation queue head register (IQH_REG).
pub const DMAR_IQH_REG: u64 = 0x80;
/// Invalidation queue tail register (IQT_REG).
pub const DMAR_IQT_REG: u64 = 0x88;
/// Invalidation queue address register (IQA_REG).
pub const DMAR_IQA_REG: u64 = 0x90;
/// Invalidation completion status register (ICS_REG).
pub const DMAR_ICS_REG: u64 = 0x9c;
/// Invalidation event control register (IECTL_REG).
pub const DMAR_IECTL_REG: u64 = 0xa0;
/// Invalidation event data register (IEDATA_REG).
pub const DMAR_IEDATA_REG: u64 = 0xa4;
/// Invalidation event address register (IEADDR_REG).
pub const DMAR_IEADDR_REG: u64 = 0xa8;
/// Invalidation event upper address register (IEUADDR_REG).
pub const DMAR_IEUADDR_REG: u64 = 0xac;
/// Invalidation queue error record register (IQERCD_REG; Linux `DMAR_IQER_REG`).
pub const DMAR_IQER_REG: u64 = 0xb0;
/// Page request queue head register (PQH_REG).
pub const DMAR_PQH_REG: u64 = 0xc0;
/// Page request queue tail register (PQT_REG).
pub const DMAR_PQT_REG: u64 = 0xc8;
/// Page request queue address register (PQA_REG).
pub const DMAR_PQA_REG: u64 = 0xd0;
/// Page request status register (PRS_REG).
pub const DMAR_PRS_REG: u64 = 0xdc;
/// Page request event control register (PECTL_REG).
pub const DMAR_PECTL_REG: u64 = 0xe0;
/// Page request event data register (PEDATA_REG).
pub const DMAR_PEDATA_REG: u64 = 0xe4;
/// Page request event address register (PEADDR_REG).
pub const DMAR_PEADDR_REG: u64 = 0xe8;
/// Page request event upper address register (PEUADDR_REG).
pub const DMAR_PEUADDR_REG: u64 = 0xec;
/// Invalidate address register (IVA_REG), first of the IOTLB registers (ECAP.IRO).
pub const DMAR_IVA_REG: u64 = IOTLB_OFFSET;
/// IOTLB invalidate register (IOTLB_REG), after IVA.
pub const DMAR_IOTLB_REG: u64 = IOTLB_OFFSET + 8;
/// Size of one fault recording register (FRCD_REG): 128 bits.
pub const FRCD_SIZE: u64 = 16;

/// Access width of a register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Width {
    /// 32-bit register.
    W32,
    /// 64-bit register (also accessible as two 32-bit halves).
    W64,
}

impl Width {
    /// Size in bytes.
    pub const fn bytes(self) -> u64 {
        match self {
            Width::W32 => 4,
            Width::W64 => 8,
        }
    }
}

/// The capability a register belongs to: when the unit does not report it, the register is
/// treated as RsvdZ (reads 0, writes ignored), as the spec says for each of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feature {
    /// Always implemented.
    Base,
    /// ECAP.QI: queued invalidation registers.
    QueuedInvalidation,
    /// ECAP.PRS: page request queue registers.
    PageRequests,
}

/// One register: where it is and how its bits behave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegDesc {
    /// Linux name.
    pub name: &'static str,
    /// Offset in the register window.
    pub offset: u64,
    /// Width.
    pub width: Width,
    /// Value after reset.
    pub reset: u64,
    /// Bits software can write (RW).
    pub rw: u64,
    /// Bits software clears by writing 1 (RW1C).
    pub w1c: u64,
    /// Bits that read as 0 whatever was written (WO).
    pub wo: u64,
    /// Capability the register depends on.
    pub feature: Feature,
}

const fn reg(name: &'static str, offset: u64, width: Width, reset: u64, rw: u64) -> RegDesc {
    RegDesc {
        name,
        offset,
        width,
        reset,
        rw,
        w1c: 0,
        wo: 0,
        feature: Feature::Base,
    }
}

impl RegDesc {
    const fn w1c(mut self, w1c: u64) -> Self {
        self.w1c = w1c;
        self
    }

    const fn wo(mut self, wo: u64) -> Self {
        self.wo = wo;
        self
    }

    const fn needs(mut self, feature: Feature) -> Self {
        self.feature = feature;
        self
    }
}

/// The register table (fault recording registers excepted: there are NFR of them, see
/// [`RegisterFile::new`]). CAP and ECAP reset values come from the [`VtdConfig`].
/// Units without advanced fault logging, protected memory regions or interrupt remapping
/// implement AFLOG and PMEN as RsvdZ and have no IRTA.
pub const REGISTERS: &[RegDesc] = &[
    reg("DMAR_VER_REG", DMAR_VER_REG, W32, VER_RESET, 0),
    reg("DMAR_CAP_REG", DMAR_CAP_REG, W64, 0, 0),
    reg("DMAR_ECAP_REG", DMAR_ECAP_REG, W64, 0, 0),
    reg("DMAR_GCMD_REG", DMAR_GCMD_REG, W32, 0, GCMD_BITS).wo(GCMD_BITS),
    reg("DMAR_GSTS_REG", DMAR_GSTS_REG, W32, 0, 0),
    reg("DMAR_RTADDR_REG", DMAR_RTADDR_REG, W64, 0, RTADDR_RW),
    reg("DMAR_CCMD_REG", DMAR_CCMD_REG, W64, 0, CCMD_RW).wo(CCMD_WO),
    reg("DMAR_FSTS_REG", DMAR_FSTS_REG, W32, 0, 0).w1c(FSTS_W1C),
    reg("DMAR_FECTL_REG", DMAR_FECTL_REG, W32, EVENT_IM, EVENT_IM),
    reg("DMAR_FEDATA_REG", DMAR_FEDATA_REG, W32, 0, EVENT_DATA_RW),
    reg("DMAR_FEADDR_REG", DMAR_FEADDR_REG, W32, 0, EVENT_ADDR_RW),
    reg("DMAR_FEUADDR_REG", DMAR_FEUADDR_REG, W32, 0, ALL32),
    reg("DMAR_AFLOG_REG", DMAR_AFLOG_REG, W64, 0, 0),
    reg("DMAR_PMEN_REG", DMAR_PMEN_REG, W32, 0, 0),
    reg("DMAR_IQH_REG", DMAR_IQH_REG, W64, 0, 0).needs(Qi),
    reg("DMAR_IQT_REG", DMAR_IQT_REG, W64, 0, IQT_RW).needs(Qi),
    reg("DMAR_IQA_REG", DMAR_IQA_REG, W64, 0, IQA_RW).needs(Qi),
    reg("DMAR_ICS_REG", DMAR_ICS_REG, W32, 0, 0)
        .w1c(ICS_W1C)
        .needs(Qi),
    reg("DMAR_IECTL_REG", DMAR_IECTL_REG, W32, EVENT_IM, EVENT_IM).needs(Qi),
    reg("DMAR_IEDATA_REG", DMAR_IEDATA_REG, W32, 0, EVENT_DATA_RW).needs(Qi),
    reg("DMAR_IEADDR_REG", DMAR_IEADDR_REG, W32, 0, EVENT_ADDR_RW).needs(Qi),
    reg("DMAR_IEUADDR_REG", DMAR_IEUADDR_REG, W32, 0, ALL32).needs(Qi),
    reg("DMAR_IQER_REG", DMAR_IQER_REG, W64, 0, 0).needs(Qi),
    reg("DMAR_PQH_REG", DMAR_PQH_REG, W64, 0, PQ_OFFSET_RW).needs(Prq),
    reg("DMAR_PQT_REG", DMAR_PQT_REG, W64, 0, PQ_OFFSET_RW).needs(Prq),
    reg("DMAR_PQA_REG", DMAR_PQA_REG, W64, 0, PQA_RW).needs(Prq),
    reg("DMAR_PRS_REG", DMAR_PRS_REG, W32, 0, 0)
        .w1c(PRS_W1C)
        .needs(Prq),
    reg("DMAR_PECTL_REG", DMAR_PECTL_REG, W32, EVENT_IM, EVENT_IM).needs(Prq),
    reg("DMAR_PEDATA_REG", DMAR_PEDATA_REG, W32, 0, EVENT_DATA_RW).needs(Prq),
    reg("DMAR_PEADDR_REG", DMAR_PEADDR_REG, W32, 0, EVENT_ADDR_RW).needs(Prq),
    reg("DMAR_PEUADDR_REG", DMAR_PEUADDR_REG, W32, 0, ALL32).needs(Prq),
    reg("DMAR_IVA_REG", DMAR_IVA_REG, W64, 0, IVA_RW).wo(IVA_RW),
    reg("DMAR_IOTLB_REG", DMAR_IOTLB_REG, W64, 0, IOTLB_RW),
];

/// Lower half of fault recording register `index`: read-only.
const fn frcd_lo(index: u64) -> RegDesc {
    reg(
        "DMAR_FRCD_REG.lo",
        FRCD_OFFSET + index * FRCD_SIZE,
        W64,
        0,
        0,
    )
}

/// Upper half of fault recording register `index`: F is write-1-to-clear.
const fn frcd_hi(index: u64) -> RegDesc {
    reg(
        "DMAR_FRCD_REG.hi",
        FRCD_OFFSET + index * FRCD_SIZE + 8,
        W64,
        0,
        0,
    )
    .w1c(FRCD_HI_W1C)
}

/// Number of fault recording registers a configuration has (CAP.NFR + 1).
pub fn fault_record_count(config: &VtdConfig) -> u16 {
    u16::from(config.cap().nfr()) + 1
}

/// A typed register: a bitfield at a fixed offset.
pub trait Register: Copy {
    /// Its offset.
    const OFFSET: u64;
    /// From the stored value.
    fn from_raw(raw: u64) -> Self;
    /// To the stored value.
    fn into_raw(self) -> u64;
}

macro_rules! register {
    ($ty:ty, $offset:expr, $bits:ty) => {
        impl Register for $ty {
            const OFFSET: u64 = $offset;
            fn from_raw(raw: u64) -> Self {
                // The register's width is that of the bitfield: the upper half is unused.
                Self::from_bits(raw as $bits)
            }
            fn into_raw(self) -> u64 {
                self.into_bits().into()
            }
        }
    };
}

register!(Gsts, DMAR_GSTS_REG, u32);
register!(RtAddr, DMAR_RTADDR_REG, u64);
register!(Ccmd, DMAR_CCMD_REG, u64);
register!(Fsts, DMAR_FSTS_REG, u32);
register!(Iva, DMAR_IVA_REG, u64);
register!(IotlbReg, DMAR_IOTLB_REG, u64);
register!(Iqa, DMAR_IQA_REG, u64);
register!(Ics, DMAR_ICS_REG, u32);
register!(Iqercd, DMAR_IQER_REG, u64);
register!(Pqa, DMAR_PQA_REG, u64);
register!(Prs, DMAR_PRS_REG, u32);

/// What a guest write did to one register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Written {
    /// The register's offset.
    pub offset: u64,
    /// Its value before.
    pub old: u64,
    /// Its value after the masks were applied.
    pub new: u64,
    /// The data written, in register bit positions, limited to `lanes`.
    pub data: u64,
    /// The register bits the access covered (a 4-byte access covers half a 64-bit register).
    pub lanes: u64,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    desc: RegDesc,
    value: u64,
    /// False for registers of a capability the unit does not report (RsvdZ).
    implemented: bool,
}

/// The register values of one unit.
#[derive(Clone, Debug)]
pub struct RegisterFile {
    /// Sorted by offset, non-overlapping.
    slots: Vec<Slot>,
}

/// Mask of the low `bytes` bytes.
const fn byte_mask(bytes: u64) -> u64 {
    if bytes >= 8 {
        u64::MAX
    } else {
        (1 << (bytes * 8)) - 1
    }
}

impl RegisterFile {
    /// The registers of a unit with `config`, at their reset values.
    pub fn new(config: &VtdConfig) -> Self {
        let supported = |feature: Feature| match feature {
            Feature::Base => true,
            Feature::QueuedInvalidation => config.qi,
            Feature::PageRequests => config.prs,
        };
        let mut descs: Vec<RegDesc> = REGISTERS.to_vec();
        for index in 0..u64::from(fault_record_count(config)) {
            descs.push(frcd_lo(index));
            descs.push(frcd_hi(index));
        }
        let mut slots = Vec::with_capacity(descs.len());
        for mut desc in descs {
            match desc.offset {
                DMAR_CAP_REG => desc.reset = config.cap().into_bits(),
                DMAR_ECAP_REG => desc.reset = config.ecap().into_bits(),
                // 256-bit descriptors exist only with scalable mode (IQA.DW is RsvdZ without).
                DMAR_IQA_REG if !config.smts => desc.rw &= !Iqa::new().with_dw(true).into_bits(),
                _ => {}
            }
            let implemented = supported(desc.feature);
            if !implemented {
                // RsvdZ: reads 0, writes ignored.
                desc.reset = 0;
                desc.rw = 0;
                desc.w1c = 0;
            }
            slots.push(Slot {
                desc,
                value: desc.reset,
                implemented,
            });
        }
        slots.sort_by_key(|s| s.desc.offset);
        RegisterFile { slots }
    }

    /// Every register back to its reset value.
    pub fn reset(&mut self) {
        for slot in &mut self.slots {
            slot.value = slot.desc.reset;
        }
    }

    /// The descriptions of all registers, by offset.
    pub fn descs(&self) -> impl Iterator<Item = &RegDesc> {
        self.slots.iter().map(|s| &s.desc)
    }

    /// Index of the register containing byte `offset`.
    fn find(&self, offset: u64) -> Option<usize> {
        let after = self.slots.partition_point(|s| s.desc.offset <= offset);
        let index = after.checked_sub(1)?;
        let desc = &self.slots[index].desc;
        (offset < desc.offset + desc.width.bytes()).then_some(index)
    }

    /// Whether an access is one the hardware accepts: 4 or 8 bytes, naturally aligned.
    fn valid_access(offset: u64, size: u64) -> bool {
        matches!(size, 4 | 8) && offset % size == 0 && offset.checked_add(size).is_some()
    }

    /// Walks the registers an access covers: `f(slot index, byte in register, byte in access,
    /// number of bytes)`. Bytes covered by no register are skipped.
    fn for_each_lane(&self, offset: u64, size: u64, mut f: impl FnMut(usize, u64, u64, u64)) {
        let end = offset + size;
        let mut at = offset;
        while at < end {
            match self.find(at) {
                Some(index) => {
                    let desc = &self.slots[index].desc;
                    let chunk_end = end.min(desc.offset + desc.width.bytes());
                    f(index, at - desc.offset, at - offset, chunk_end - at);
                    at = chunk_end;
                }
                None => at += 1,
            }
        }
    }

    /// A guest read: `size` bytes at `offset`, write-only bits reading as 0. Invalid accesses
    /// and holes read as 0.
    pub fn read(&self, offset: u64, size: u64) -> u64 {
        if !Self::valid_access(offset, size) {
            return 0;
        }
        let mut out = 0;
        self.for_each_lane(offset, size, |index, in_reg, in_access, bytes| {
            let slot = &self.slots[index];
            let visible = slot.value & !slot.desc.wo;
            out |= ((visible >> (in_reg * 8)) & byte_mask(bytes)) << (in_access * 8);
        });
        out
    }

    /// A guest write: applies the RW and RW1C masks of each register covered and reports what
    /// changed. Invalid accesses and holes are ignored.
    pub fn write(&mut self, offset: u64, size: u64, value: u64) -> Vec<Written> {
        let mut written = Vec::new();
        if !Self::valid_access(offset, size) {
            return written;
        }
        let mut lanes_of = Vec::new();
        self.for_each_lane(offset, size, |index, in_reg, in_access, bytes| {
            lanes_of.push((index, in_reg, in_access, bytes));
        });
        for (index, in_reg, in_access, bytes) in lanes_of {
            let slot = &mut self.slots[index];
            let lanes = byte_mask(bytes) << (in_reg * 8);
            let data = ((value >> (in_access * 8)) << (in_reg * 8)) & lanes;
            let old = slot.value;
            let writable = slot.desc.rw & lanes;
            let new = ((old & !writable) | (data & writable)) & !(data & slot.desc.w1c);
            slot.value = new;
            written.push(Written {
                offset: slot.desc.offset,
                old,
                new,
                data,
                lanes,
            });
        }
        written
    }

    /// The stored value of the register at `offset` (0 if there is none).
    pub fn get(&self, offset: u64) -> u64 {
        self.find(offset)
            .filter(|&i| self.slots[i].desc.offset == offset)
            .map_or(0, |i| self.slots[i].value)
    }

    /// Sets the stored value of the register at `offset`, as hardware does (no masks). Ignored
    /// for registers the configuration does not implement.
    pub fn set(&mut self, offset: u64, value: u64) {
        if let Some(i) = self
            .find(offset)
            .filter(|&i| self.slots[i].desc.offset == offset)
        {
            let slot = &mut self.slots[i];
            if slot.implemented {
                slot.value = value & byte_mask(slot.desc.width.bytes());
            }
        }
    }

    /// A typed register.
    pub fn load<R: Register>(&self) -> R {
        R::from_raw(self.get(R::OFFSET))
    }

    /// Stores a typed register (hardware update, no masks).
    pub fn store<R: Register>(&mut self, value: R) {
        self.set(R::OFFSET, value.into_raw());
    }

    /// Read-modify-write of a typed register by hardware.
    pub fn update<R: Register>(&mut self, f: impl FnOnce(R) -> R) {
        let value = f(self.load());
        self.store(value);
    }
}

/// The four registers of one interrupt source: control, data, address, upper address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventRegs {
    /// Which source.
    pub kind: InterruptKind,
    /// Event control register (IM, IP).
    pub control: u64,
    /// Event data register.
    pub data: u64,
    /// Event address register.
    pub addr: u64,
    /// Event upper address register.
    pub upper_addr: u64,
}

/// Fault event registers.
pub const FAULT_EVENT: EventRegs = EventRegs {
    kind: InterruptKind::Fault,
    control: DMAR_FECTL_REG,
    data: DMAR_FEDATA_REG,
    addr: DMAR_FEADDR_REG,
    upper_addr: DMAR_FEUADDR_REG,
};

/// Invalidation completion event registers.
pub const INVALIDATION_EVENT: EventRegs = EventRegs {
    kind: InterruptKind::InvalidationCompletion,
    control: DMAR_IECTL_REG,
    data: DMAR_IEDATA_REG,
    addr: DMAR_IEADDR_REG,
    upper_addr: DMAR_IEUADDR_REG,
};

/// Page request event registers.
pub const PAGE_REQUEST_EVENT: EventRegs = EventRegs {
    kind: InterruptKind::PageRequest,
    control: DMAR_PECTL_REG,
    data: DMAR_PEDATA_REG,
    addr: DMAR_PEADDR_REG,
    upper_addr: DMAR_PEUADDR_REG,
};

impl RegisterFile {
    fn event_control(&self, event: &EventRegs) -> EventControl {
        EventControl::from_bits(self.get(event.control) as u32)
    }

    fn set_event_control(&mut self, event: &EventRegs, ctl: EventControl) {
        self.set(event.control, ctl.into_bits().into());
    }

    fn send(&self, event: &EventRegs, sink: &mut dyn VtdSink) {
        let addr = (self.get(event.upper_addr) << u32::BITS) | self.get(event.addr);
        sink.interrupt(VtdInterrupt {
            kind: event.kind,
            addr,
            data: self.get(event.data) as u32,
        });
    }

    /// A new interrupt condition (the caller checked it is new): IP is set, and unless IM
    /// masks it the message is sent at once and IP cleared again.
    pub fn raise_event(&mut self, event: &EventRegs, sink: &mut dyn VtdSink) {
        let ctl = self.event_control(event);
        if ctl.im() {
            self.set_event_control(event, ctl.with_ip(true));
        } else {
            self.send(event, sink);
            self.set_event_control(event, ctl.with_ip(false));
        }
    }

    /// After software wrote the control register: a message held pending by IM is sent once
    /// IM is clear.
    pub fn event_control_written(&mut self, event: &EventRegs, sink: &mut dyn VtdSink) {
        let ctl = self.event_control(event);
        if ctl.ip() && !ctl.im() {
            self.send(event, sink);
            self.set_event_control(event, ctl.with_ip(false));
        }
    }

    /// Software serviced every status field of the source: a pending message is dropped.
    pub fn event_serviced(&mut self, event: &EventRegs) {
        let ctl = self.event_control(event);
        self.set_event_control(event, ctl.with_ip(false));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vtd::sink::RecordingSink;

    fn regs() -> RegisterFile {
        RegisterFile::new(&VtdConfig::default())
    }

    #[test]
    fn test_bit_positions_match_linux_and_qemu_definitions() {
        // Linux iommu.h / QEMU intel_iommu_internal.h values.
        assert_eq!(Gcmd::new().with_te(true).into_bits(), 1 << 31);
        assert_eq!(Gcmd::new().with_srtp(true).into_bits(), 1 << 30);
        assert_eq!(Gcmd::new().with_qie(true).into_bits(), 1 << 26);
        assert_eq!(GCMD_BITS, 0xff80_0000, "QEMU's GCMD wmask");
        assert_eq!(Gsts::new().with_qies(true).into_bits(), 1 << 26);
        assert_eq!(
            RtAddr::new()
                .with_ttm(TranslationTableMode::Scalable)
                .into_bits(),
            1 << 10
        );
        assert_eq!(Ccmd::new().with_icc(true).into_bits(), 1 << 63);
        assert_eq!(
            Ccmd::new()
                .with_cirg(ContextGranularity::Device)
                .into_bits(),
            3 << 61
        );
        assert_eq!(
            Ccmd::new()
                .with_caig(ContextGranularity::Global)
                .into_bits(),
            1 << 59
        );
        assert_eq!(Ccmd::new().with_fm(3).into_bits(), 3 << 32);
        assert_eq!(Ccmd::new().with_sid(0xffff).into_bits(), 0xffff << 16);
        assert_eq!(IotlbReg::new().with_ivt(true).into_bits(), 1 << 63);
        assert_eq!(
            IotlbReg::new()
                .with_iirg(IotlbGranularity::Page)
                .into_bits(),
            3 << 60
        );
        assert_eq!(
            IotlbReg::new()
                .with_iaig(IotlbGranularity::Domain)
                .into_bits(),
            2 << 57
        );
        assert_eq!(IotlbReg::new().with_dr(true).into_bits(), 1 << 49);
        assert_eq!(IotlbReg::new().with_did(0xffff).into_bits(), 0xffff << 32);
        assert_eq!(Fsts::new().with_iqe(true).into_bits(), 1 << 4);
        assert_eq!(Fsts::new().with_fri(0xff).into_bits(), 0xff00);
        assert_eq!(
            EventControl::new().with_im(true).with_ip(true).into_bits(),
            0xc000_0000
        );
        assert_eq!(Prs::new().with_pro(true).into_bits(), 2);
        assert_eq!(Iqa::new().with_dw(true).into_bits(), 1 << 11);
        assert_eq!(IQT_RW, 0x7fff0, "QEMU's VTD_IQH_QH_MASK");
        assert_eq!(PQ_OFFSET_RW, 0x7ffe0);
        assert_eq!(IVA_RW, 0xffff_ffff_ffff_f07f, "QEMU's IVA wmask");
        assert_eq!(FSTS_W1C, 0x71);
        // FRCD as Linux reads it in 32-bit pieces (dmar_fault).
        let frcd = Frcd::new()
            .with_f(true)
            .with_t(true)
            .with_fr(0x5)
            .with_pv(0xabcde)
            .with_pp(true)
            .with_sid(0x1234);
        let raw = frcd.into_bits();
        let dword3 = (raw >> 96) as u32;
        let dword2 = (raw >> 64) as u32;
        assert_eq!(dword3 >> 31, 1, "DMA_FRCD_F");
        assert_eq!((dword3 >> 30) & 1, 1, "dma_frcd_type");
        assert_eq!(dword3 & 0xff, 0x5, "dma_frcd_fault_reason");
        assert_eq!((dword3 >> 8) & 0xfffff, 0xabcde, "dma_frcd_pasid_value");
        assert_eq!(dword2 & 0xffff, 0x1234, "dma_frcd_source_id");
        assert_eq!(dword2 >> 31, 1, "dma_frcd_pasid_present");
        assert_eq!(FRCD_HI_W1C, 1 << 63);
    }

    #[test]
    fn test_table_is_sorted_and_non_overlapping() {
        let regs = regs();
        let descs: Vec<_> = regs.descs().copied().collect();
        for pair in descs.windows(2) {
            assert!(
                pair[0].offset + pair[0].width.bytes() <= pair[1].offset,
                "{} overlaps {}",
                pair[0].name,
                pair[1].name
            );
        }
        for d in &descs {
            assert_eq!(d.offset % d.width.bytes(), 0, "{} is misaligned", d.name);
            assert_eq!(d.rw & d.w1c, 0, "{} has bits both RW and RW1C", d.name);
        }
    }

    #[test]
    fn test_64_bit_register_by_halves_and_whole() {
        let mut regs = regs();
        regs.write(DMAR_RTADDR_REG, 4, 0x1234_5c00);
        regs.write(DMAR_RTADDR_REG + 4, 4, 0x0000_00ab);
        assert_eq!(regs.read(DMAR_RTADDR_REG, 8), 0xab_1234_5c00);
        assert_eq!(regs.read(DMAR_RTADDR_REG + 4, 4), 0xab);
        regs.write(DMAR_RTADDR_REG, 8, u64::MAX);
        assert_eq!(
            regs.read(DMAR_RTADDR_REG, 8),
            RTADDR_RW,
            "bits 9:0 are reserved"
        );
    }

    #[test]
    fn test_read_only_w1c_and_write_only_bits() {
        let mut regs = regs();
        regs.write(DMAR_CAP_REG, 8, 0);
        assert_eq!(
            regs.read(DMAR_CAP_REG, 8),
            VtdConfig::default().cap().into_bits()
        );
        regs.set(DMAR_FSTS_REG, 0x13);
        regs.write(DMAR_FSTS_REG, 4, 0x2);
        assert_eq!(regs.read(DMAR_FSTS_REG, 4), 0x13, "PPF is read-only");
        regs.write(DMAR_FSTS_REG, 4, 0x11);
        assert_eq!(regs.read(DMAR_FSTS_REG, 4), 0x2, "PFO and IQE clear on 1");
        regs.write(DMAR_GCMD_REG, 4, 1 << 31);
        assert_eq!(regs.read(DMAR_GCMD_REG, 4), 0, "GCMD is write-only");
        regs.write(DMAR_IVA_REG, 8, 0x1000_0045);
        assert_eq!(regs.read(DMAR_IVA_REG, 8), 0, "IVA is write-only");
        assert_eq!(regs.get(DMAR_IVA_REG), 0x1000_0045);
    }

    #[test]
    fn test_invalid_accesses_are_ignored() {
        let mut regs = regs();
        assert!(regs.write(DMAR_RTADDR_REG + 2, 4, u64::MAX).is_empty());
        assert!(regs.write(DMAR_RTADDR_REG, 2, u64::MAX).is_empty());
        assert!(regs.write(u64::MAX - 3, 4, u64::MAX).is_empty());
        assert!(regs.write(0x4000, 8, u64::MAX).is_empty(), "a hole");
        assert_eq!(regs.read(DMAR_RTADDR_REG + 1, 4), 0);
        assert_eq!(regs.read(u64::MAX - 7, 8), 0);
        assert_eq!(regs.read(DMAR_RTADDR_REG, 8), 0);
    }

    #[test]
    fn test_eight_byte_access_spanning_two_32_bit_registers() {
        let mut regs = regs();
        let written = regs.write(DMAR_FEADDR_REG, 8, 0x1_fee0_0003);
        assert_eq!(written.len(), 2);
        assert_eq!(regs.get(DMAR_FEADDR_REG), 0xfee0_0000, "bits 1:0 reserved");
        assert_eq!(regs.get(DMAR_FEUADDR_REG), 1);
        assert_eq!(regs.read(DMAR_FEADDR_REG, 8), 0x1_fee0_0000);
    }

    #[test]
    fn test_unsupported_features_are_rsvdz() {
        let config = VtdConfig {
            qi: false,
            prs: false,
            smts: false,
            ..VtdConfig::default()
        };
        let mut regs = RegisterFile::new(&config);
        regs.write(DMAR_IQT_REG, 8, 0x10);
        regs.write(DMAR_PQA_REG, 8, 0x1000);
        assert_eq!(regs.read(DMAR_IQT_REG, 8), 0);
        assert_eq!(regs.read(DMAR_PQA_REG, 8), 0);
        assert_eq!(regs.read(DMAR_IECTL_REG, 4), 0, "no IM reset value either");
        let config = VtdConfig {
            smts: false,
            ..VtdConfig::default()
        };
        let mut regs = RegisterFile::new(&config);
        regs.write(DMAR_IQA_REG, 8, 0x1801);
        assert_eq!(
            regs.read(DMAR_IQA_REG, 8),
            0x1001,
            "DW is RsvdZ without SMTS"
        );
    }

    #[test]
    fn test_frcd_count_follows_config() {
        let config = VtdConfig {
            fault_records: 3,
            ..VtdConfig::default()
        };
        let regs = RegisterFile::new(&config);
        assert_eq!(regs.descs().filter(|d| d.offset >= FRCD_OFFSET).count(), 6);
        assert_eq!(fault_record_count(&config), 3);
    }

    #[test]
    fn test_event_pending_while_masked_then_sent_on_unmask() {
        let mut regs = regs();
        let mut sink = RecordingSink::new();
        regs.write(DMAR_FEDATA_REG, 4, 0x21);
        regs.write(DMAR_FEADDR_REG, 4, 0xfee0_0000);
        regs.raise_event(&FAULT_EVENT, &mut sink);
        assert!(sink.events.is_empty());
        assert_eq!(regs.read(DMAR_FECTL_REG, 4), 0xc000_0000, "IM and IP");
        regs.write(DMAR_FECTL_REG, 4, 0);
        regs.event_control_written(&FAULT_EVENT, &mut sink);
        assert_eq!(
            sink.interrupts(),
            vec![VtdInterrupt {
                kind: InterruptKind::Fault,
                addr: 0xfee0_0000,
                data: 0x21
            }]
        );
        assert_eq!(regs.read(DMAR_FECTL_REG, 4), 0);
    }

    #[test]
    fn test_event_serviced_drops_pending_message() {
        let mut regs = regs();
        let mut sink = RecordingSink::new();
        regs.raise_event(&PAGE_REQUEST_EVENT, &mut sink);
        regs.event_serviced(&PAGE_REQUEST_EVENT);
        regs.write(DMAR_PECTL_REG, 4, 0);
        regs.event_control_written(&PAGE_REQUEST_EVENT, &mut sink);
        assert!(sink.events.is_empty());
    }
}
