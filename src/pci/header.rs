//! The type-0 configuration header of an endpoint: identity, command/status, BARs.
//! Follows PCI Local Bus 3.0 §6.2 and PCI Express Base 4.0 §7.5.1.

use super::config::Registers;

/// Header register offsets (Linux `PCI_*` names).
pub mod offset {
    /// Vendor ID.
    pub const VENDOR_ID: usize = 0x00;
    /// Device ID.
    pub const DEVICE_ID: usize = 0x02;
    /// Command.
    pub const COMMAND: usize = 0x04;
    /// Status.
    pub const STATUS: usize = 0x06;
    /// Revision ID, then class code in the upper 24 bits.
    pub const CLASS_REVISION: usize = 0x08;
    /// Cache line size.
    pub const CACHE_LINE_SIZE: usize = 0x0c;
    /// Header type.
    pub const HEADER_TYPE: usize = 0x0e;
    /// BAR 0; BAR n is at `BAR0 + 4 * n`.
    pub const BAR0: usize = 0x10;
    /// Subsystem vendor ID.
    pub const SUBSYSTEM_VENDOR_ID: usize = 0x2c;
    /// Subsystem ID.
    pub const SUBSYSTEM_ID: usize = 0x2e;
    /// Capabilities pointer.
    pub const CAPABILITY_LIST: usize = 0x34;
    /// Interrupt line.
    pub const INTERRUPT_LINE: usize = 0x3c;
}

/// Command register bits.
pub mod command {
    /// Memory Space Enable.
    pub const MEMORY: u16 = 1 << 1;
    /// Bus Master Enable: the function may issue DMA (and MSI writes).
    pub const BUS_MASTER: u16 = 1 << 2;
    /// Parity Error Response.
    pub const PARITY: u16 = 1 << 6;
    /// SERR# Enable.
    pub const SERR: u16 = 1 << 8;
    /// Interrupt Disable (INTx).
    pub const INTX_DISABLE: u16 = 1 << 10;
    /// The bits an endpoint without I/O BARs implements as RW.
    pub const WRITABLE: u16 = MEMORY | BUS_MASTER | PARITY | SERR | INTX_DISABLE;
}

/// Status register bits.
pub mod status {
    /// Capabilities List present.
    pub const CAP_LIST: u16 = 1 << 4;
    /// The error bits, all RW1C: Master Data Parity Error, Signaled Target Abort, Received
    /// Target Abort, Received Master Abort, Signaled System Error, Detected Parity Error.
    pub const ERRORS_W1C: u16 = (1 << 8) | (0x1f << 11);
}

/// Who the function is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    /// Vendor ID.
    pub vendor_id: u16,
    /// Device ID.
    pub device_id: u16,
    /// Subsystem vendor ID.
    pub subsystem_vendor_id: u16,
    /// Subsystem ID.
    pub subsystem_id: u16,
    /// Class code (base class, subclass, programming interface), 24 bits.
    pub class_code: u32,
    /// Revision ID.
    pub revision: u8,
}

#[cfg(test)]
impl Identity {
    /// Any valid identity, for tests that need a function but not a particular one.
    pub(crate) const TEST: Identity = Identity {
        vendor_id: 0x5653,
        device_id: 1,
        subsystem_vendor_id: 0x5653,
        subsystem_id: 1,
        class_code: 0,
        revision: 0,
    };
}

/// Kind of a memory BAR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarKind {
    /// 32-bit memory BAR.
    Memory32,
    /// 64-bit memory BAR (takes two BAR slots).
    Memory64,
}

/// One memory BAR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarSpec {
    /// BAR index 0..=5 (the lower slot of a 64-bit BAR).
    pub index: usize,
    /// Size: a power of two, at least 4 KiB (so that BAR sizing and page mapping agree).
    pub size: u64,
    /// 32 or 64 bit.
    pub kind: BarKind,
    /// Prefetchable.
    pub prefetchable: bool,
}

/// BAR low-bit encodings.
const BAR_MEM_TYPE_64: u32 = 0b10 << 1;
const BAR_PREFETCH: u32 = 1 << 3;

impl BarSpec {
    /// Whether the BAR fits the header.
    pub fn is_valid(&self) -> bool {
        let slots = if self.kind == BarKind::Memory64 { 2 } else { 1 };
        self.size.is_power_of_two()
            && self.size >= 4096
            && self.index + slots <= 6
            && (self.kind == BarKind::Memory64 || self.size <= 1 << 31)
    }
}

/// Writes the header for `id` into `regs`: identity, command/status semantics, no BARs yet.
pub fn define_header(regs: &mut Registers, id: &Identity) {
    use offset::*;
    regs.define::<2>(VENDOR_ID, id.vendor_id.into(), 0, 0);
    regs.define::<2>(DEVICE_ID, id.device_id.into(), 0, 0);
    regs.define::<2>(COMMAND, 0, command::WRITABLE.into(), 0);
    regs.define::<2>(
        STATUS,
        status::CAP_LIST.into(),
        0,
        status::ERRORS_W1C.into(),
    );
    let class_rev = (id.class_code << 8) | u32::from(id.revision);
    regs.define::<4>(CLASS_REVISION, class_rev.into(), 0, 0);
    regs.define::<1>(CACHE_LINE_SIZE, 0, 0xff, 0);
    regs.define::<1>(HEADER_TYPE, 0, 0, 0);
    regs.define::<2>(SUBSYSTEM_VENDOR_ID, id.subsystem_vendor_id.into(), 0, 0);
    regs.define::<2>(SUBSYSTEM_ID, id.subsystem_id.into(), 0, 0);
    regs.define::<1>(INTERRUPT_LINE, 0xff, 0xff, 0);
}

/// Defines a BAR: the address bits above its size are RW, so writing all-ones reads back the
/// size mask (BAR sizing, PCI 3.0 §6.2.5.1).
pub fn define_bar(regs: &mut Registers, bar: &BarSpec) {
    let at = offset::BAR0 + 4 * bar.index;
    let mask = !(bar.size - 1);
    let mut low = if bar.prefetchable { BAR_PREFETCH } else { 0 };
    if bar.kind == BarKind::Memory64 {
        low |= BAR_MEM_TYPE_64;
        regs.define::<4>(at + 4, 0, mask >> 32, 0);
    }
    regs.define::<4>(at, low.into(), mask & 0xffff_fff0, 0);
}

/// The guest-programmed address of a BAR (0 when not assigned).
pub fn bar_address(regs: &Registers, bar: &BarSpec) -> u64 {
    let at = offset::BAR0 + 4 * bar.index;
    let low = u64::from(regs.u32(at) & !0xf);
    match bar.kind {
        BarKind::Memory32 => low,
        BarKind::Memory64 => low | (u64::from(regs.u32(at + 4)) << 32),
    }
}
