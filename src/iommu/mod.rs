//! The neutral host-IOMMU API (the seed's "vendor-agnostic" interface): binding a PASID to a
//! process or guest page table or a guest PASID table, a device's default domain for requests
//! without PASID, cache invalidation in host terms, page
//! responses, and the per-device fault reporting framework. The VT-d physical model
//! (`vtd::piommu`) implements it; devices (through `ats`, `pri`) and front ends use it and
//! nothing vendor-specific. Like Linux's drivers/iommu/iommu.c, this layer knows no vendor:
//! vendors depend on it, not the other way round.

pub mod api;
pub mod bind;
pub mod domain;
#[cfg(test)]
pub(crate) mod fake;
pub mod fault;
pub mod invalidate;
pub mod reporter;
pub mod types;

use thiserror::Error;

pub use api::{DeviceEndpoint, HostIommu, TranslateFailure};
pub use bind::{BindTarget, FirstStageFlags, PageTable, PagingLevels};
pub use domain::{DefaultDomain, SecondStageTable};
pub use fault::{
    FaultHandler, FaultStage, IommuFault, PageRequest, PageResponse, PageResponseCode,
    UnrecoverableFault, UnrecoverableReason,
};
pub use invalidate::{CacheInvalidate, CacheType, Granularity};
pub use reporter::FaultReporter;
pub use types::{Access, DeviceId, IoTranslation, Pasid, Perms};

/// Errors of API calls (architected translation outcomes are [`TranslateFailure`] values).
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum IommuError {
    /// `attach` for a device already attached.
    #[error("device {0} is already attached")]
    AlreadyAttached(DeviceId),
    /// `bind` for a PASID already bound.
    #[error("PASID {pasid} of device {device} is already bound")]
    AlreadyBound {
        /// The device.
        device: DeviceId,
        /// The PASID.
        pasid: Pasid,
    },
    /// A second fault handler for a device.
    #[error("device {0} already has a fault handler")]
    HandlerRegistered(DeviceId),
    /// The bind target cannot be used (e.g. a table address beyond the address width).
    #[error("invalid bind target: {0}")]
    InvalidTarget(&'static str),
    /// No fault handler for the device.
    #[error("device {0} has no fault handler")]
    NoHandler(DeviceId),
    /// The device is not attached.
    #[error("device {0} is not attached")]
    NotAttached(DeviceId),
    /// The PASID is not bound.
    #[error("PASID {pasid} of device {device} is not bound")]
    NotBound {
        /// The device.
        device: DeviceId,
        /// The PASID.
        pasid: Pasid,
    },
    /// A page response for a group that awaits none.
    #[error("no page request group {group} of device {device} awaits a response")]
    NotPending {
        /// The device.
        device: DeviceId,
        /// The group index.
        group: u16,
    },
    /// A page request found the pending list at its bound: not reported.
    #[error("page request queue full ({0} groups pending)")]
    QueueFull(usize),
}

/// Result of API calls.
pub type Result<T> = std::result::Result<T, IommuError>;
