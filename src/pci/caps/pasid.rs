//! The Process Address Space ID extended capability (ID 0x1B).
//! Follows PCI Express Base 4.0 §7.8.9 and Linux drivers/pci/ats.c (`PCI_PASID_*`).

use bitfield_struct::bitfield;

use super::ExtCapability;
use crate::pci::config::Registers;

/// PASID extended capability ID.
pub const EXT_CAP_ID_PASID: u16 = 0x001b;

/// PASID Capability Register (+0x04), read-only.
#[bitfield(u16)]
pub struct PasidCap {
    __: bool,
    /// Execute Permission Supported.
    pub exec: bool,
    /// Privileged Mode Supported.
    pub privileged: bool,
    #[bits(5)]
    __: u8,
    /// Max PASID Width (bits 12:8).
    #[bits(5)]
    pub max_width: u8,
    #[bits(3)]
    __: u8,
}

/// PASID Control Register (+0x06).
#[bitfield(u16)]
pub struct PasidControl {
    /// PASID Enable.
    pub enable: bool,
    /// Execute Permission Enable.
    pub exec: bool,
    /// Privileged Mode Enable.
    pub privileged: bool,
    #[bits(13)]
    __: u16,
}

/// The PASID capability.
#[derive(Clone, Copy, Debug)]
pub struct PasidCapability {
    /// Max PASID width in bits, 1..=20.
    pub width: u8,
}

impl PasidCapability {
    /// Reads PASID Control of the capability at `base`.
    pub fn control(regs: &Registers, base: usize) -> PasidControl {
        PasidControl::from_bits(regs.u16(base + 6))
    }
}

impl ExtCapability for PasidCapability {
    fn id(&self) -> u16 {
        EXT_CAP_ID_PASID
    }

    fn version(&self) -> u8 {
        1
    }

    fn size(&self) -> usize {
        8
    }

    fn define(&self, regs: &mut Registers, base: usize) {
        let cap = PasidCap::new()
            .with_exec(true)
            .with_privileged(true)
            .with_max_width(self.width);
        regs.define::<2>(base + 4, cap.into_bits().into(), 0, 0);
        let writable = PasidControl::new()
            .with_enable(true)
            .with_exec(true)
            .with_privileged(true);
        regs.define::<2>(base + 6, 0, writable.into_bits().into(), 0);
    }
}
