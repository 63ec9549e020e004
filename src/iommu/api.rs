//! The two faces of a host IOMMU: [`HostIommu`], which the guest-facing vIOMMU (and later a
//! vfio-user protocol extension) drives — attach, bind, invalidate, respond, handle faults —
//! and which devices call to translate and to send page requests; and [`DeviceEndpoint`], the
//! device side the IOMMU talks back to (ATS invalidations, PRG responses).

use std::sync::Arc;

use super::bind::BindTarget;
use super::domain::DefaultDomain;
use super::fault::{FaultHandler, PageRequest, PageResponse, UnrecoverableReason};
use super::invalidate::{CacheInvalidate, Granularity};
use super::types::{Access, DeviceId, IoTranslation, Pasid};
use super::Result;
use crate::mem::GuestMemory;

/// Why a translation was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TranslateFailure {
    /// The page is not present or does not allow the access (an ATS completion with R = W = 0).
    /// A device with PRI enabled sends a page request and retries after a Success response.
    /// Only requests with a PASID fail this way: without one there is no page-fault path.
    NotPresent,
    /// The request can never succeed (an ATS Unsupported Request / Completer Abort); the IOMMU
    /// has reported it to the device's fault handler.
    Unrecoverable(UnrecoverableReason),
}

/// What the IOMMU sends to a device.
pub trait DeviceEndpoint: Send + Sync {
    /// An ATS Invalidate Request: drop the ATC entries `granularity` covers (`Domain`: every
    /// entry). Returns once the device sent its Invalidate Completion: no request using a
    /// dropped translation is in flight any more.
    fn invalidate_atc(&self, granularity: Granularity);
    /// A PRG Response Message.
    fn page_response(&self, resp: PageResponse);
    /// The guest memory the device's requests reach, when it has its own: a vfio-user client
    /// maps guest RAM separately on each function's connection, so the IOMMU walks a device's
    /// tables and sets their A/D flags through that function's map (which survives the
    /// client reconnecting: it is the same handle, remapped). `None`: the IOMMU's own memory.
    fn dma_memory(&self) -> Option<GuestMemory> {
        None
    }
}

/// A host IOMMU, vendor-neutral (the seed's API; Linux `iommu_ops`, `iommu_sva_bind_device`,
/// `cache_invalidate_user`, `iommu_page_response`, `iommu_register_device_fault_handler`).
/// Shared between threads: devices translate on their engine threads while the vIOMMU binds.
pub trait HostIommu: Send + Sync {
    /// Puts `device` behind this IOMMU; `endpoint` receives its invalidations and responses.
    fn attach(&self, device: DeviceId, endpoint: Arc<dyn DeviceEndpoint>) -> Result<()>;
    /// Removes `device`: its bindings go, pending page requests are answered Invalid Request.
    fn detach(&self, device: DeviceId) -> Result<()>;

    /// Binds `pasid` of `device` to `target`, enabling nested translation for it.
    fn bind(&self, device: DeviceId, pasid: Pasid, target: BindTarget) -> Result<()>;
    /// Unbinds `pasid`: its IOTLB and ATC entries are invalidated and its pending page
    /// requests answered Invalid Request before this returns.
    fn unbind(&self, device: DeviceId, pasid: Pasid) -> Result<()>;
    /// Replaces the binding of a bound `pasid` (the guest changed its PASID entry): its IOTLB
    /// and ATC entries are invalidated before this returns, but its pending page requests
    /// are kept (unlike [`unbind`](Self::unbind)): the guest answers them against the new
    /// table. `NotBound` if nothing is bound to it.
    fn rebind(&self, device: DeviceId, pasid: Pasid, target: BindTarget) -> Result<()>;
    /// Replaces `device`'s default domain, what its requests without PASID are translated
    /// with. Before it returns, the IOMMU's cached translations without PASID of the device
    /// are dropped and the device's ATC entries without PASID invalidated. A device is
    /// attached with [`DefaultDomain::Identity`].
    fn set_default_domain(&self, device: DeviceId, domain: DefaultDomain) -> Result<()>;
    /// Invalidates a cache of `device` (for `DeviceTlb`: returns once the device completed).
    fn cache_invalidate(&self, device: DeviceId, inv: CacheInvalidate) -> Result<()>;
    /// Answers a pending page request group; delivered to the device.
    fn page_response(&self, resp: PageResponse) -> Result<()>;

    /// Registers the handler of `device`'s faults.
    fn register_fault_handler(
        &self,
        device: DeviceId,
        handler: Arc<dyn FaultHandler>,
    ) -> Result<()>;
    /// Removes it; its pending groups are answered Invalid Request.
    fn unregister_fault_handler(&self, device: DeviceId) -> Result<()>;

    /// Translates a request of `device` (an ATS Translation Request, or an untranslated DMA):
    /// with a PASID through its binding, without one through the default domain.
    fn translate(
        &self,
        device: DeviceId,
        pasid: Option<Pasid>,
        addr: u64,
        access: Access,
    ) -> std::result::Result<IoTranslation, TranslateFailure>;
    /// Receives a Page Request Message (or Stop Marker) from `device`. A request the IOMMU
    /// cannot queue is answered by the IOMMU itself through the device's endpoint.
    fn page_request(&self, req: PageRequest);
}
