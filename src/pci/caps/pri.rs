//! The Page Request Interface extended capability (ID 0x13).
//! Follows PCI Express Base 4.0 §10.5.2 and Linux drivers/pci/ats.c (`PCI_PRI_*`): Stopped
//! reads 1 whenever PRI is disabled with nothing outstanding, and "PRG Response PASID
//! Required" is set, without which Intel's IOMMU driver will not enable PRI with PASID.
//!
//! Two forms: [`PriCapability`] for a function without a page request engine (Stopped follows
//! Enable, Reset is dropped), and [`PriEngineCapability`] for one whose engine owns Stopped,
//! the RW1C bits and Reset through its endpoint hooks (`Function::config_refresh` before
//! every guest access, `Function::config_written` after every write).

use bitfield_struct::bitfield;

use super::ExtCapability;
use crate::pci::config::Registers;

/// PRI extended capability ID.
pub const EXT_CAP_ID_PRI: u16 = 0x0013;

/// Page Request Control Register (+0x04).
#[bitfield(u16)]
pub struct PriControl {
    /// Enable (RW).
    pub enable: bool,
    /// Reset (write-only, reads 0): clears the outstanding-request state.
    pub reset: bool,
    #[bits(14)]
    __: u16,
}

/// Page Request Status Register (+0x06).
#[bitfield(u16)]
#[derive(PartialEq, Eq)]
pub struct PriStatus {
    /// Response Failure (RW1C).
    pub response_failure: bool,
    /// Unexpected Page Request Group Index (RW1C).
    pub unexpected_prg_index: bool,
    #[bits(6)]
    __: u8,
    /// Stopped (RO): disabled and nothing outstanding.
    pub stopped: bool,
    #[bits(6)]
    __: u8,
    /// PRG Response PASID Required (RO).
    pub prg_response_pasid_required: bool,
}

/// Register offsets inside the capability.
mod reg {
    pub const CONTROL: usize = 0x04;
    pub const STATUS: usize = 0x06;
    pub const CAPACITY: usize = 0x08;
    pub const ALLOCATION: usize = 0x0c;
}

/// The PRI capability.
#[derive(Clone, Copy, Debug)]
pub struct PriCapability {
    /// Outstanding Page Request Capacity.
    pub capacity: u32,
}

impl PriCapability {
    /// Reads Control of the capability at `base`.
    pub fn control(regs: &Registers, base: usize) -> PriControl {
        PriControl::from_bits(regs.u16(base + reg::CONTROL))
    }

    /// Reads Status of the capability at `base`.
    pub fn status(regs: &Registers, base: usize) -> PriStatus {
        PriStatus::from_bits(regs.u16(base + reg::STATUS))
    }

    /// Sets Control of the capability at `base`, as the device.
    pub fn set_control(regs: &mut Registers, base: usize, control: PriControl) {
        regs.set_u16(base + reg::CONTROL, control.into_bits());
    }

    /// Sets Status of the capability at `base`, as the device.
    pub fn set_status(regs: &mut Registers, base: usize, status: PriStatus) {
        regs.set_u16(base + reg::STATUS, status.into_bits());
    }

    /// Reads the Outstanding Page Request Allocation of the capability at `base`.
    pub fn allocation(regs: &Registers, base: usize) -> u32 {
        regs.u32(base + reg::ALLOCATION)
    }

    /// After a write: Stopped follows Enable, since nothing can be outstanding while the
    /// device issues no page requests.
    fn after_write(regs: &mut Registers, base: usize) {
        let enabled = Self::control(regs, base).enable();
        let status = Self::status(regs, base).with_stopped(!enabled);
        regs.set_u16(base + reg::STATUS, status.into_bits());
    }
}

impl ExtCapability for PriCapability {
    fn id(&self) -> u16 {
        EXT_CAP_ID_PRI
    }

    fn version(&self) -> u8 {
        1
    }

    fn size(&self) -> usize {
        16
    }

    fn define(&self, regs: &mut Registers, base: usize) {
        define(
            regs,
            base,
            self.capacity,
            PriControl::new().with_enable(true),
        );
    }

    fn after_write(&self) -> Option<fn(&mut Registers, usize)> {
        Some(Self::after_write)
    }
}

/// Defines the registers; `control_rw` are the guest-writable Control bits.
fn define(regs: &mut Registers, base: usize, capacity: u32, control_rw: PriControl) {
    regs.define::<2>(base + reg::CONTROL, 0, control_rw.into_bits().into(), 0);
    let status = PriStatus::new()
        .with_stopped(true)
        .with_prg_response_pasid_required(true);
    let w1c = PriStatus::new()
        .with_response_failure(true)
        .with_unexpected_prg_index(true);
    regs.define::<2>(
        base + reg::STATUS,
        status.into_bits().into(),
        0,
        w1c.into_bits().into(),
    );
    regs.define::<4>(base + reg::CAPACITY, capacity.into(), 0, 0);
    regs.define::<4>(base + reg::ALLOCATION, 0, 0xffff_ffff, 0);
}

/// The PRI capability of a function with a page request engine. Same registers, but no write
/// side effect: Reset is kept as written for the function's `config_written` hook to act on
/// (its `config_refresh` clears it, so it still reads 0), and Stopped and the RW1C bits are
/// whatever the function's `config_refresh` writes.
#[derive(Clone, Copy, Debug)]
pub struct PriEngineCapability {
    /// Outstanding Page Request Capacity.
    pub capacity: u32,
}

impl ExtCapability for PriEngineCapability {
    fn id(&self) -> u16 {
        EXT_CAP_ID_PRI
    }

    fn version(&self) -> u8 {
        1
    }

    fn size(&self) -> usize {
        16
    }

    fn define(&self, regs: &mut Registers, base: usize) {
        let control_rw = PriControl::new().with_enable(true).with_reset(true);
        define(regs, base, self.capacity, control_rw);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::config::ConfigSpace;
    use crate::pci::{ConfigBuilder, Identity};

    fn space(cap: &dyn ExtCapability) -> (ConfigSpace, usize) {
        let id = Identity::TEST;
        let mut b = ConfigBuilder::new(&id);
        let base = b.ext_capability(cap).unwrap();
        (b.build(), base)
    }

    #[test]
    fn test_plain_capability_stopped_follows_enable_and_reset_reads_zero() {
        let (mut c, base) = space(&PriCapability { capacity: 8 });
        c.write((base + 4) as u64, &[0x03, 0]).unwrap();
        assert_eq!(PriCapability::control(c.regs(), base).into_bits(), 0x1);
        assert!(!PriCapability::status(c.regs(), base).stopped());
        c.write((base + 4) as u64, &[0x00, 0]).unwrap();
        assert!(PriCapability::status(c.regs(), base).stopped());
    }

    #[test]
    fn test_engine_capability_keeps_reset_and_leaves_stopped_alone() {
        let (mut c, base) = space(&PriEngineCapability { capacity: 8 });
        let status = PriCapability::status(c.regs(), base);
        assert!(status.stopped() && status.prg_response_pasid_required());
        c.write((base + 4) as u64, &[0x03, 0]).unwrap();
        let control = PriCapability::control(c.regs(), base);
        assert!(control.enable() && control.reset());
        assert!(
            PriCapability::status(c.regs(), base).stopped(),
            "the function owns it"
        );
    }
}
