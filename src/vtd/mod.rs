//! The VT-d remapping hardware model (the "physical IOMMU" behind the neutral API): register
//! file, translation structures and walks, caches, queued invalidation, fault recording and the
//! page request queue. No I/O of its own: it reaches guest memory through `mem` and hands
//! interrupts, device-TLB invalidations and page responses to its caller.
//! Follows the Intel VT-d specification, revision 4.x.

pub mod cache;
pub mod cap;
pub mod context;
pub mod entries;
pub mod fault;
pub mod fault_log;
pub mod ids;
pub mod inv_desc;
pub mod pasid;
pub mod piommu;
pub mod prq;
pub mod qi;
pub mod reg_inv;
pub mod regs;
pub mod request;
pub mod root;
pub mod sink;
pub mod translate;
pub mod unit;
pub mod walk;

pub use cache::{CacheCounters, CacheStats, Caches};
pub use cap::VtdConfig;
pub use fault::FaultReason;
pub use ids::{DomainId, Pasid, SourceId};
pub use pasid::Pgtt;
pub use prq::{PageRequest, PageRequestOutcome};
pub use request::{Access, Fault, Perms, Request, Translation};
pub use sink::{
    DevTlbInvalidation, InterruptKind, PageGroupResponse, PageResponseCode, RecordingSink,
    VtdInterrupt, VtdSink,
};
pub use translate::{RootTable, RootTableType, Translator};
pub use unit::RemappingUnit;
pub use walk::PageSize;
