//! The VT-d remapping hardware model (the "physical IOMMU" behind the neutral API): register
//! file, translation structures and walks, caches, queued invalidation, fault recording and the
//! page request queue. No I/O of its own: it reaches guest memory through `mem` and hands
//! interrupts, device-TLB invalidations and page responses to its caller.
//! Follows the Intel VT-d specification, revision 4.x.

pub mod cache;
pub mod cap;
pub mod context;
pub mod fault;
pub mod ids;
pub mod pasid;
pub mod request;
pub mod root;
pub mod translate;
pub mod walk;

pub use cache::{CacheCounters, CacheStats, Caches};
pub use cap::VtdConfig;
pub use fault::FaultReason;
pub use ids::{DomainId, Pasid, SourceId};
pub use pasid::Pgtt;
pub use request::{Access, Fault, Perms, Request, Translation};
pub use translate::{RootTable, RootTableType, Translator};
pub use walk::PageSize;
