//! What a translation is asked and what it answers: a DMA request (source-id, PASID, address,
//! access kind) becomes an output address with permissions, or a fault with the spec's reason.
//! VT-d spec 3.6-3.8 (translation) and 7.1 (fault reporting).

use super::fault::FaultReason;
use super::ids::{DomainId, Pasid, SourceId};

/// What the request wants to do.
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

/// A DMA request as it reaches the remapping hardware.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// Who asks.
    pub source: SourceId,
    /// With which PASID (`None`: request without PASID, uses RID_PASID in scalable mode).
    pub pasid: Option<Pasid>,
    /// Input address (IOVA, or a process virtual address with a first-stage PASID).
    pub addr: u64,
    /// What for.
    pub access: Access,
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

/// A successful translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// Output (host-physical, here guest-physical) address of the requested byte.
    pub output: u64,
    /// Size of the page that maps it (4 KiB, 2 MiB, 1 GiB; the whole space for pass-through).
    pub page_size: u64,
    /// What the mapping allows (the request was checked against it).
    pub perms: Perms,
    /// Domain the translation belongs to.
    pub domain: DomainId,
}

/// An unsuccessful translation: the architected outcome, not a Rust error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    /// The spec's fault reason.
    pub reason: FaultReason,
    /// The request that faulted.
    pub request: Request,
    /// Fault Processing Disable was set in the entry that decided: do not record it.
    pub fpd: bool,
}
