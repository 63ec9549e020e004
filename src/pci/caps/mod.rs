//! Capability structures and the chains that link them: standard capabilities from 0x40,
//! extended capabilities from 0x100. Follows PCI 3.0 §6.7 and PCI Express Base 4.0 §7.6.

pub mod ats;
pub mod express;
pub mod msix;
pub mod pasid;
pub mod pri;

use super::config::Registers;

/// A capability in the standard (first 256 bytes) list.
pub trait Capability {
    /// Capability ID (byte 0).
    fn id(&self) -> u8;
    /// Length in bytes, header included.
    fn size(&self) -> usize;
    /// Defines every field after the 2-byte header at `base`.
    fn define(&self, regs: &mut Registers, base: usize);
    /// Side effect of a guest write, if any.
    fn after_write(&self) -> Option<fn(&mut Registers, usize)> {
        None
    }
}

/// A PCI Express extended capability (at 0x100 and above).
pub trait ExtCapability {
    /// Extended capability ID (bits 15:0 of the header).
    fn id(&self) -> u16;
    /// Capability version (bits 19:16).
    fn version(&self) -> u8;
    /// Length in bytes, header included.
    fn size(&self) -> usize;
    /// Defines every field after the 4-byte header at `base`.
    fn define(&self, regs: &mut Registers, base: usize);
    /// Side effect of a guest write, if any.
    fn after_write(&self) -> Option<fn(&mut Registers, usize)> {
        None
    }
}

/// Extended capability header: ID 15:0, version 19:16, next offset 31:20.
pub fn ext_header(id: u16, version: u8, next: usize) -> u32 {
    u32::from(id) | (u32::from(version & 0xf) << 16) | ((next as u32 & 0xffc) << 20)
}
