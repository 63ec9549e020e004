//! What a translation is asked and what it answers: a DMA request (source-id, PASID, address,
//! access kind) becomes an output address with permissions, or a fault with the spec's reason.
//! VT-d spec 3.6-3.8 (translation) and 7.1 (fault reporting).

use super::fault::FaultReason;
use super::ids::{DomainId, Pasid, SourceId};

pub use crate::iommu::{Access, Perms};

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
