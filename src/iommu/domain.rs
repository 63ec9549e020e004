//! A device's default domain: what its requests without PASID are translated with (Linux's
//! DMA-API domain, `iommu_setup_default_domain`; VT-d spec 9.4 / 9.6: the RID_PASID entry in
//! scalable mode, the context entry in legacy mode).

use super::bind::PageTable;
use super::fault::UnrecoverableReason;

/// A VT-d-format second-stage table (the format of Linux's legacy-mode DMA domains): the
/// address of its top level and its depth. The front end decodes it from a context entry
/// (SLPTPTR, AW) or a PASID entry with PGTT second-stage (SSPTPTR, AW).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SecondStageTable {
    /// Guest-physical address of the top-level table (4 KiB aligned).
    pub root: u64,
    /// 3, 4 or 5 levels (AGAW 39, 48 or 57 bits).
    pub levels: u8,
}

/// What a device's requests without PASID are translated with: its default domain.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DefaultDomain {
    /// Untranslated: output = input (guest `iommu=pt`, or translation not enabled). What a
    /// freshly attached device has.
    #[default]
    Identity,
    /// Every request without PASID fails and is reported with this reason (translation on, no
    /// usable entry: the front end says why).
    Blocked(UnrecoverableReason),
    /// A CPU-format first-stage table, walked nested over the device's DMA map (scalable
    /// mode, PGTT first-stage: Linux's DMA domains on first-stage capable units).
    FirstStage(PageTable),
    /// A VT-d second-stage table, walked over the device's DMA map (legacy mode, or PGTT
    /// second-stage).
    SecondStage(SecondStageTable),
}
