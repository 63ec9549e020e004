//! The VT-d remapping hardware model (the "physical IOMMU" behind the neutral API): register
//! file, translation structures and walks, caches, queued invalidation, fault recording and the
//! page request queue. No I/O of its own: it reaches guest memory through `mem` and hands
//! interrupts, device-TLB invalidations and page responses to its caller.
//! Follows the Intel VT-d specification, revision 4.x.

pub mod cache;
pub mod cap;
pub mod fault;
pub mod ids;
pub mod request;
pub mod translate;

pub use cap::VtdConfig;
pub use fault::FaultReason;
pub use ids::{DomainId, Pasid, SourceId};
pub use request::{Access, Fault, Perms, Request, Translation};
