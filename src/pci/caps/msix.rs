//! The MSI-X Capability (ID 0x11): table and PBA location, enable and function mask.
//! Follows PCI 3.0 §6.8.2. Table entries start masked, as the spec requires.

use bitfield_struct::bitfield;

use super::Capability;
use crate::pci::config::Registers;

/// MSI-X capability ID.
pub const CAP_ID_MSIX: u8 = 0x11;
/// Size of one MSI-X table entry.
pub const TABLE_ENTRY_SIZE: u64 = 16;
/// Vector Control bit 0: the vector is masked.
pub const VECTOR_CTRL_MASKED: u32 = 1;

/// Message Control (+0x02).
#[bitfield(u16)]
pub struct MsixControl {
    /// Table Size, encoded as N - 1.
    #[bits(11)]
    pub table_size: u16,
    #[bits(3)]
    __: u8,
    /// Function Mask: all vectors masked.
    pub function_mask: bool,
    /// MSI-X Enable.
    pub enable: bool,
}

/// Where the table and PBA live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsixCapability {
    /// Number of vectors, 1..=2048.
    pub vectors: u16,
    /// BAR holding the table.
    pub table_bar: u8,
    /// Offset of the table in that BAR (8-byte aligned).
    pub table_offset: u32,
    /// BAR holding the PBA.
    pub pba_bar: u8,
    /// Offset of the PBA in that BAR (8-byte aligned).
    pub pba_offset: u32,
}

impl MsixCapability {
    /// Reads Message Control of the capability at `base`.
    pub fn control(regs: &Registers, base: usize) -> MsixControl {
        MsixControl::from_bits(regs.u16(base + 2))
    }
}

impl Capability for MsixCapability {
    fn id(&self) -> u8 {
        CAP_ID_MSIX
    }

    fn size(&self) -> usize {
        12
    }

    fn define(&self, regs: &mut Registers, base: usize) {
        let control = MsixControl::new().with_table_size(self.vectors - 1);
        let writable = MsixControl::new()
            .with_function_mask(true)
            .with_enable(true);
        regs.define::<2>(
            base + 2,
            control.into_bits().into(),
            writable.into_bits().into(),
            0,
        );
        regs.define::<4>(
            base + 4,
            (self.table_offset | u32::from(self.table_bar)).into(),
            0,
            0,
        );
        regs.define::<4>(
            base + 8,
            (self.pba_offset | u32::from(self.pba_bar)).into(),
            0,
            0,
        );
    }
}
