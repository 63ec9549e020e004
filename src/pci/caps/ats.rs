//! The Address Translation Services extended capability (ID 0x0F).
//! Follows PCI Express Base 4.0 §10.5.1 and Linux drivers/pci/ats.c (`PCI_ATS_*`).

use bitfield_struct::bitfield;

use super::ExtCapability;
use crate::pci::config::Registers;

/// ATS extended capability ID.
pub const EXT_CAP_ID_ATS: u16 = 0x000f;

/// ATS Capability Register (+0x04), read-only.
#[bitfield(u16)]
pub struct AtsCap {
    /// Invalidate Queue Depth (0 means 32).
    #[bits(5)]
    pub queue_depth: u8,
    /// Page Aligned Request: untranslated addresses in requests are page aligned.
    /// Intel's IOMMU driver refuses ATS without it.
    pub page_aligned: bool,
    /// Global Invalidate Supported.
    pub global_invalidate: bool,
    /// Relaxed Ordering Supported.
    pub relaxed_ordering: bool,
    #[bits(8)]
    __: u8,
}

/// ATS Control Register (+0x06).
#[bitfield(u16)]
pub struct AtsControl {
    /// Smallest Translation Unit, as log2(size) - 12.
    #[bits(5)]
    pub stu: u8,
    #[bits(10)]
    __: u16,
    /// Enable.
    pub enable: bool,
}

/// The ATS capability.
#[derive(Clone, Copy, Debug, Default)]
pub struct AtsCapability;

impl AtsCapability {
    /// Reads ATS Control of the capability at `base`.
    pub fn control(regs: &Registers, base: usize) -> AtsControl {
        AtsControl::from_bits(regs.u16(base + 6))
    }
}

impl ExtCapability for AtsCapability {
    fn id(&self) -> u16 {
        EXT_CAP_ID_ATS
    }

    fn version(&self) -> u8 {
        1
    }

    fn size(&self) -> usize {
        8
    }

    fn define(&self, regs: &mut Registers, base: usize) {
        let cap = AtsCap::new()
            .with_queue_depth(0)
            .with_page_aligned(true)
            .with_global_invalidate(true);
        regs.define::<2>(base + 4, cap.into_bits().into(), 0, 0);
        let writable = AtsControl::new().with_stu(0x1f).with_enable(true);
        regs.define::<2>(base + 6, 0, writable.into_bits().into(), 0);
    }
}
