//! Identities the remapping hardware keys on: requester (source-id), PASID, domain.
//! VT-d spec 3.4 (requester identification) and 3.4.3 (PASID).

use std::fmt;

/// A requester ID: bus number in bits 15:8, device/function in bits 7:0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceId(pub u16);

impl SourceId {
    /// From bus, device (0..32) and function (0..8).
    pub const fn new(bus: u8, device: u8, function: u8) -> Self {
        SourceId(((bus as u16) << 8) | (((device & 0x1f) as u16) << 3) | (function & 7) as u16)
    }

    /// Bus number: indexes the root table.
    pub const fn bus(self) -> u8 {
        (self.0 >> 8) as u8
    }

    /// Device and function: indexes the context table.
    pub const fn devfn(self) -> u8 {
        self.0 as u8
    }
}

impl fmt::Display for SourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02x}:{:02x}.{}",
            self.bus(),
            self.devfn() >> 3,
            self.devfn() & 7
        )
    }
}

pub use crate::iommu::Pasid;

/// A domain identifier (DID), tagging cached translations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DomainId(pub u16);
