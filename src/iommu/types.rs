//! Identities and access kinds every IOMMU speaks, whatever its vendor: the requester, the PASID
//! (PCIe 6.0 §6.20), what a request wants and what a translation grants.

use std::fmt;

/// A PCIe requester ID (bus 15:8, device 7:3, function 2:0): how the IOMMU tells devices apart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceId(pub u16);

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [bus, devfn] = self.0.to_be_bytes();
        write!(f, "{bus:02x}:{:02x}.{}", devfn >> 3, devfn & 7)
    }
}

/// A process address space ID: 20 bits at most.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pasid(u32);

impl Pasid {
    /// Largest PASID the architecture allows (20 bits).
    pub const MAX: u32 = (1 << 20) - 1;

    /// A PASID, or `None` above 20 bits.
    pub const fn new(value: u32) -> Option<Self> {
        if value <= Self::MAX {
            Some(Pasid(value))
        } else {
            None
        }
    }

    /// The raw value.
    pub const fn raw(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Pasid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// What a request wants to do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Access {
    /// Read.
    pub read: bool,
    /// Write.
    pub write: bool,
    /// Execute (instruction fetch); only with a PASID.
    pub exec: bool,
    /// Privileged (supervisor) request; only with a PASID.
    pub privileged: bool,
}

impl Access {
    /// A user-level read.
    pub const READ: Access = Access {
        read: true,
        write: false,
        exec: false,
        privileged: false,
    };
    /// A user-level write.
    pub const WRITE: Access = Access {
        read: false,
        write: true,
        exec: false,
        privileged: false,
    };
}

/// Permissions a translation grants.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Perms {
    /// Reads allowed.
    pub read: bool,
    /// Writes allowed.
    pub write: bool,
    /// Execute allowed.
    pub exec: bool,
    /// Privileged accesses allowed.
    pub privileged: bool,
}

impl Perms {
    /// Everything allowed: what an untranslated (identity) mapping grants.
    pub const ALL: Perms = Perms {
        read: true,
        write: true,
        exec: true,
        privileged: true,
    };

    /// Whether these permissions allow `access`.
    pub const fn allow(&self, access: Access) -> bool {
        (self.read || !access.read)
            && (self.write || !access.write)
            && (self.exec || !access.exec)
            && (self.privileged || !access.privileged)
    }
}

/// A translation as the IOMMU hands it to a device (the answer to an ATS Translation Request,
/// or what an untranslated request was translated with).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoTranslation {
    /// Output address of the requested byte (guest-physical in our world: the second stage is
    /// the client's DMA map).
    pub output: u64,
    /// Size of the naturally aligned page the translation covers.
    pub page_size: u64,
    /// What the mapping allows; a device caching it must not exceed them.
    pub perms: Perms,
}

impl IoTranslation {
    /// Output address of the first byte of the page.
    pub const fn page_base(&self) -> u64 {
        self.output & !(self.page_size - 1)
    }
}
